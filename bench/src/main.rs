//! Measure what the gateway adds to a `tools/call`.
//!
//! `warden-bench run` starts a fast echo MCP upstream and two gateways in
//! front of it — one with the quick-start chain (all four reference policies),
//! one with no policies — then drives each target, and the upstream directly,
//! with `tools/call` requests carrying ~1 KiB of arguments:
//!
//! - **unloaded**: one connection, one request at a time (latency);
//! - **fixed rate**: a steady request rate over several connections;
//! - **saturation**: several connections, each sending as fast as it is answered.
//!
//! Every response is checked (status, JSON-RPC result, echoed payload); every
//! loop is bounded in time and count; everything listens on 127.0.0.1.
//!
//! `warden-bench echo --port N` runs the echo upstream alone.
//!
//! `warden-bench neighbour [--seconds S]` measures what a caller whose calls
//! make a plugin spin to its deadline costs the others (see [`neighbour`]).
//!
//! `warden-bench soak [--seconds S]` runs mixed traffic against one gateway
//! for S seconds (default 600) and reports errors, resident memory and open
//! file descriptors over time (see [`soak`]).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("echo") => {
            let port: u16 = flag("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
            let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
            println!("echo upstream on http://{}/mcp", listener.local_addr().unwrap());
            serve_echo(listener).await;
        }
        Some("load") => {
            let addr: SocketAddr = flag("--addr").and_then(|a| a.parse().ok()).expect("--addr 127.0.0.1:PORT");
            let seconds = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
            let connections = flag("--connections").and_then(|s| s.parse().ok()).unwrap_or(1);
            let sample = drive(addr, args.iter().any(|a| a == "--key"), connections, seconds, None, 200_000).await;
            println!(
                "{} requests, {} wrong, {:.0} req/s, p50 {} ms, p99 {} ms",
                sample.latencies.len(),
                sample.errors,
                sample.throughput(),
                ms(sample.percentile(0.5)),
                ms(sample.percentile(0.99))
            );
        }
        Some("run") => {
            let settings = Settings {
                seconds: flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10),
                connections: flag("--connections").and_then(|s| s.parse().ok()).unwrap_or(8),
                rate: flag("--rate").and_then(|s| s.parse().ok()).unwrap_or(500),
                warden: flag("--warden").map(PathBuf::from).unwrap_or_else(default_warden),
            };
            run(settings).await;
        }
        Some("neighbour") => {
            let seconds = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(10);
            let rate = flag("--rate").and_then(|s| s.parse().ok()).unwrap_or(500);
            let warden = flag("--warden").map(PathBuf::from).unwrap_or_else(default_warden);
            neighbour::run(&warden, seconds, rate).await;
        }
        Some("soak") => {
            let seconds = flag("--seconds").and_then(|s| s.parse().ok()).unwrap_or(600);
            let warden = flag("--warden").map(PathBuf::from).unwrap_or_else(default_warden);
            if !soak::run(&warden, seconds).await {
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!(
                "usage: warden-bench run [--seconds S] [--connections C] [--rate R] [--warden PATH] | echo [--port N] \
                 | neighbour [--seconds S] [--rate R] [--warden PATH] | soak [--seconds S] [--warden PATH]"
            );
            std::process::exit(2);
        }
    }
}

mod neighbour;
mod soak;

// ---------------------------------------------------------------- upstream

/// A 2026-07-28 MCP server with one tool, `query_analytics_db`, that echoes
/// its arguments as text and as one acme row: the reference policies have
/// real work to do on it, but it costs next to nothing itself.
/// An OTLP/HTTP receiver that answers every export with 200 and keeps nothing.
async fn serve_sink(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let _ = request.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn serve_echo(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let id = message["id"].clone();
                let result = match message["method"].as_str() {
                    Some("server/discover") => json!({
                        "supportedVersions": ["2026-07-28"],
                        "capabilities": { "tools": {} },
                        "serverInfo": { "name": "echo", "version": "1" },
                        "resultType": "complete", "ttlMs": 0, "cacheScope": "public",
                    }),
                    Some("tools/list") => json!({
                        "tools": [{
                            "name": "query_analytics_db",
                            "description": "Echo the arguments.",
                            "inputSchema": { "type": "object" },
                            "annotations": { "readOnlyHint": true },
                        }],
                        "resultType": "complete", "ttlMs": 0, "cacheScope": "public",
                    }),
                    Some("tools/call") => {
                        let arguments = message["params"]["arguments"].clone();
                        json!({
                            "content": [{ "type": "text", "text": arguments.to_string() }],
                            "structuredContent": { "rows": [{ "tenant": "acme", "echo": arguments }] },
                            "isError": false,
                            "resultType": "complete",
                        })
                    }
                    _ => json!({}),
                };
                let reply = json!({ "jsonrpc": "2.0", "id": id, "result": result });
                Ok::<_, Infallible>(
                    Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(reply.to_string())))
                        .unwrap(),
                )
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

// ---------------------------------------------------------------- targets

struct Settings {
    seconds: u64,
    connections: usize,
    rate: u64,
    warden: PathBuf,
}

fn default_warden() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().expect("target/<profile>").join("warden")
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench lives in the workspace").to_owned()
}

/// A gateway process in front of the echo upstream.
/// Wait until `what` accepts connections on `addr` (5 s at most).
async fn listening(addr: SocketAddr, what: &str) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not start on {addr}");
}

/// haproxy on a free loopback port, balancing round robin over `backends`
/// (from the Debian package; `cargo xtask bench` installs it).
struct Balancer {
    _child: Child,
    addr: SocketAddr,
}

impl Balancer {
    async fn start(dir: &Path, name: &str, backends: &[SocketAddr]) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let servers: String =
            backends.iter().enumerate().map(|(i, b)| format!("    server gateway{i} {b}\n")).collect();
        let config = format!(
            "global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
             timeout server 30s\n\nfrontend mcp\n    bind {addr}\n    default_backend gateways\n\n\
             backend gateways\n    balance roundrobin\n{servers}"
        );
        let file = dir.join(format!("haproxy-{name}.cfg"));
        std::fs::write(&file, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&file)
            .arg("-db")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run haproxy: {e} (install it: apt-get install haproxy)"));
        listening(addr, "haproxy").await;
        Self { _child: child, addr }
    }
}

/// A `redis-server` on a free loopback port (from the Debian package;
/// `cargo xtask bench` installs it), nothing persisted.
struct Redis {
    _child: Child,
    addr: SocketAddr,
}

impl Redis {
    async fn start() -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run redis-server: {e} (install it: apt-get install redis-server)"));
        listening(addr, "redis-server").await;
        Self { _child: child, addr }
    }
}

struct Gateway {
    child: Child,
    addr: SocketAddr,
    /// The control plane, if the config has `[admin]`.
    admin: Option<SocketAddr>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// SHA-256 of `demo-acme-analyst`, the quick start's analyst key.
const ANALYST_SHA256: &str = "a2dcf9e7e7fbb532417b1cf437d4d7181ca1b24f4f2365d215c8624ef0189430";

async fn start_gateway(warden: &Path, upstream: SocketAddr, chain: Option<&Path>, dir: &Path, name: &str) -> Gateway {
    start_gateway_with(warden, upstream, chain, dir, name, "").await
}

/// [`start_gateway`], with `extra` appended to the config.
async fn start_gateway_with(
    warden: &Path,
    upstream: SocketAddr,
    chain: Option<&Path>,
    dir: &Path,
    name: &str,
    extra: &str,
) -> Gateway {
    let policy = chain.map(|c| format!("[policy]\nchain = \"{}\"\n", c.display())).unwrap_or_default();
    let config = format!(
        "{policy}\n[[api_key]]\nsubject = \"demo-acme-analyst\"\ntenant = \"acme\"\nroles = [\"analyst\"]\nsha256 = \"{ANALYST_SHA256}\"\n\n\
         [[upstream]]\nname = \"demo\"\nurl = \"http://{upstream}/mcp\"\nmax_concurrency = 256\n{extra}"
    );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config).expect("write config");
    let mut child = Command::new(warden)
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .env("WARDEN_LOG", "warn,warden::server=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (build it: cargo build --release -p warden)", warden.display()));
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut admin = None;
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the gateway starts within 60 s")
            .expect("stderr")
            .expect("the gateway exited early");
        let url = |what: &str| line.split("url=").nth(1).filter(|_| line.contains(what));
        if let Some(url) = url("serving admin") {
            admin = url.trim().trim_start_matches("http://").parse().ok();
        }
        if let Some(url) = url("serving MCP") {
            let url = url.trim().trim_start_matches("http://");
            break url.split('/').next().unwrap().parse().expect("address");
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Gateway { child, addr, admin }
}

// ---------------------------------------------------------------- load

/// One keep-alive HTTP/1.1 connection sending 2026-07-28 `tools/call`s.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
    authorize: bool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// ~1 KiB of arguments (`benches/chain.rs` runs the chain on the same call
/// and echoed result: `quickstart_as_in_the_gateway_bench`).
fn arguments() -> Value {
    json!({ "query": "SELECT region, revenue FROM sales WHERE quarter = '2025-Q3'", "comment": "x".repeat(940) })
}

impl Connection {
    async fn open(addr: SocketAddr, authorize: bool) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        Self { sender, authority: addr.to_string(), authorize }
    }

    /// One call; `Err` describes a wrong answer.
    async fn call(&mut self, arguments: &Value) -> Result<(), String> {
        let reply = self.send(arguments).await?;
        if reply["result"]["isError"] != json!(false) {
            return Err(format!("not a result: {reply}"));
        }
        Ok(())
    }

    /// One call; its JSON-RPC answer, or why there was none with its id.
    async fn send(&mut self, arguments: &Value) -> Result<Value, String> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {
                "name": "query_analytics_db", "arguments": arguments,
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                    "io.modelcontextprotocol/clientCapabilities": {},
                },
            },
        });
        let mut request = Request::post("/mcp")
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "query_analytics_db");
        if self.authorize {
            request = request.header("authorization", "Bearer demo-acme-analyst");
        }
        let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let response = self.sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let reply: Value = serde_json::from_slice(&bytes).map_err(|e| format!("HTTP {status}: not JSON: {e}"))?;
        if reply["id"] != json!(id) {
            return Err(format!("HTTP {status}: {reply}"));
        }
        Ok(reply)
    }
}

/// Latencies of one run, and its wall time.
struct Sample {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Sample {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Drive `addr` with `connections` connections for `seconds` (and at most
/// `max` requests); with `rate`, requests start on a fixed schedule.
async fn drive(
    addr: SocketAddr,
    authorize: bool,
    connections: usize,
    seconds: u64,
    rate: Option<u64>,
    max: u64,
) -> Sample {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let arguments = Arc::new(arguments());
    let per_connection = max / connections as u64;
    let mut tasks = Vec::new();
    for n in 0..connections {
        let arguments = Arc::clone(&arguments);
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr, authorize).await;
            let mut latencies = Vec::new();
            let mut errors = 0;
            let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r as f64));
            // Stagger connections so a fixed rate is spread evenly.
            let mut next =
                Instant::now() + interval.map(|i| i.mul_f64(n as f64 / connections as f64)).unwrap_or_default();
            while Instant::now() < deadline && (latencies.len() as u64) < per_connection {
                if let Some(interval) = interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let start = Instant::now();
                match connection.call(&arguments).await {
                    Ok(()) => latencies.push(start.elapsed()),
                    Err(error) => {
                        errors += 1;
                        if errors <= 3 {
                            eprintln!("wrong answer: {error}");
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut sample = Sample { latencies: Vec::new(), errors: 0, elapsed: Duration::ZERO };
    for task in tasks {
        let (latencies, errors) = task.await.expect("load task");
        sample.latencies.extend(latencies);
        sample.errors += errors;
    }
    sample.elapsed = started.elapsed();
    sample
}

/// CPU time (user and system, every thread) of process `pid` so far, in
/// microseconds; from /proc, whose ticks are USER_HZ (100 per second on Linux).
fn cpu_micros(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line (the 12th and 13th after the name).
    (ticks(11) + ticks(12)) * 10_000
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

async fn run(settings: Settings) {
    let dir = std::env::temp_dir().join(format!("warden-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(serve_echo(listener));

    let chain = repo_root().join("policies/quickstart.toml");
    let full = start_gateway(&settings.warden, upstream, Some(&chain), &dir, "full-chain").await;
    let unmetered = start_gateway_with(
        &settings.warden,
        upstream,
        Some(&chain),
        &dir,
        "full-chain-no-fuel",
        "\n[engine]\nfuel = false\n",
    )
    .await;
    let empty = start_gateway(&settings.warden, upstream, None, &dir, "no-policies").await;
    let audit = |name: &str, fsync: &str| {
        format!("\n[audit]\nfile = \"{}\"\nfsync = \"{fsync}\"\n", dir.join(name).join("warden.jsonl").display())
    };
    let (warden, interval_config, record_config) =
        (&settings.warden, audit("audit-interval", "interval"), audit("audit-record", "record"));
    let interval = start_gateway_with(warden, upstream, None, &dir, "audit-interval", &interval_config).await;
    let record = start_gateway_with(warden, upstream, None, &dir, "audit-record", &record_config).await;
    // Traces to a receiver that takes every export and drops it.
    let collector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("\n[telemetry]\nendpoint = \"http://{}\"\n", collector.local_addr().unwrap());
    tokio::spawn(serve_sink(collector));
    let traced = start_gateway_with(warden, upstream, None, &dir, "otlp", &otlp).await;
    // A rate limit and a quota that every call passes (so every call pays
    // for the check and none is refused), counted in memory and in Redis.
    let limits = "\n[[limit]]\nname = \"bench\"\nrate = \"1000000/s\"\n\n\
                  [[quota]]\nname = \"bench-daily\"\ncalls = 1000000000\nper = \"day\"\n";
    let limited = start_gateway_with(warden, upstream, None, &dir, "limits-memory", limits).await;
    let redis = Redis::start().await;
    let shared = format!("\n[state]\nredis = \"redis://{}\"\n{limits}", redis.addr);
    let limited_redis = start_gateway_with(warden, upstream, None, &dir, "limits-redis", &shared).await;
    // The same gateway behind haproxy (round robin): alone, and three of
    // them sharing the Redis, for the replicas' throughput beside one's.
    let replicas = [
        start_gateway_with(warden, upstream, None, &dir, "replica-1", &shared).await,
        start_gateway_with(warden, upstream, None, &dir, "replica-2", &shared).await,
        start_gateway_with(warden, upstream, None, &dir, "replica-3", &shared).await,
    ];
    let one = Balancer::start(&dir, "one", &[limited_redis.addr]).await;
    let three = Balancer::start(&dir, "three", &replicas.iter().map(|g| g.addr).collect::<Vec<_>>()).await;
    let pid = |g: &Gateway| g.child.id();
    let targets: [(&str, SocketAddr, bool, Option<u32>); 11] = [
        ("upstream directly", upstream, false, None),
        ("warden, no policies", empty.addr, true, pid(&empty)),
        ("warden, no policies, audit (fsync every 1 s)", interval.addr, true, pid(&interval)),
        ("warden, no policies, audit (fsync per record)", record.addr, true, pid(&record)),
        ("warden, no policies, OTLP traces on", traced.addr, true, pid(&traced)),
        ("warden, no policies, limit + quota in memory", limited.addr, true, pid(&limited)),
        ("warden, no policies, limit + quota on Redis", limited_redis.addr, true, pid(&limited_redis)),
        ("haproxy → 1 warden, limit + quota on Redis", one.addr, true, None),
        ("haproxy → 3 wardens, limit + quota on Redis", three.addr, true, None),
        ("warden, quick-start chain (4 policies)", full.addr, true, pid(&full)),
        ("warden, quick-start chain, fuel not metered", unmetered.addr, true, pid(&unmetered)),
    ];

    // Warm up every target (connections, caches, plugin slots).
    for (_, addr, authorize, _) in &targets {
        let sample = drive(*addr, *authorize, 2, 2, None, 2_000).await;
        assert_eq!(sample.errors, 0, "warm-up failed");
    }

    let (seconds, connections, rate) = (settings.seconds, settings.connections, settings.rate);
    let mut rows: HashMap<&str, Vec<String>> = HashMap::new();
    let mut saturation: HashMap<&str, f64> = HashMap::new();
    for (name, addr, authorize, pid) in &targets {
        let cpu_before = pid.map(cpu_micros);
        let unloaded = drive(*addr, *authorize, 1, seconds, None, 5_000).await;
        let fixed = drive(*addr, *authorize, connections, seconds, Some(rate), rate * seconds).await;
        let saturated = drive(*addr, *authorize, connections, seconds, None, 200_000).await;
        let requests = unloaded.latencies.len() + fixed.latencies.len() + saturated.latencies.len();
        let cpu = match (pid, cpu_before) {
            (Some(pid), Some(before)) => format!("{:.1}", (cpu_micros(*pid) - before) as f64 / requests as f64),
            _ => "–".to_owned(),
        };
        let errors = unloaded.errors + fixed.errors + saturated.errors;
        assert_eq!(errors, 0, "{name}: {errors} wrong answers");
        saturation.insert(name, saturated.throughput());
        rows.insert(
            name,
            vec![
                ms(unloaded.percentile(0.5)),
                ms(unloaded.percentile(0.99)),
                ms(fixed.percentile(0.5)),
                ms(fixed.percentile(0.99)),
                format!("{:.0}", saturated.throughput()),
                ms(saturated.percentile(0.5)),
                ms(saturated.percentile(0.99)),
                format!("{requests}"),
                cpu,
            ],
        );
    }
    let direct = saturation["upstream directly"];
    println!(
        "\n{seconds} s per phase, {connections} connections, fixed rate {rate}/s, ~1 KiB tools/call arguments; every answer checked.\n"
    );
    println!(
        "| target | unloaded p50 ms | unloaded p99 ms | {rate}/s p50 ms | {rate}/s p99 ms | saturation req/s | × direct | saturation p50 ms | saturation p99 ms | requests | gateway CPU µs/request |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, _, _, _) in &targets {
        let r = &rows[name];
        println!(
            "| {name} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} | {} |",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            saturation[name] / direct,
            r[5],
            r[6],
            r[7],
            r[8]
        );
    }
    drop((full, unmetered, empty, interval, record, traced));
    let _ = std::fs::remove_dir_all(dir);
}
