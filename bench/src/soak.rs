//! A bounded soak: one gateway (quick-start chain, watched) in front of the
//! echo upstream and a stdio server that crashes on request, under mixed
//! traffic for a set time:
//!
//! - stateless (2026-07-28) `tools/call`s and `tools/list`s;
//! - legacy sessions, each initialized, listed, called and deleted;
//! - calls the policy chain denies;
//! - a call every few seconds that kills the stdio upstream (the gateway
//!   restarts it);
//! - a chain reload every ten seconds.
//!
//! Every answer is checked against what that kind of request must get; the
//! run fails on any unexpected one. Resident memory and open file
//! descriptors of the gateway are sampled over time, so a leak shows as a
//! rising column.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use super::{repo_root, serve_echo, start_gateway_with};

/// Counts of answers, by whether they were what the request had to get.
#[derive(Default)]
struct Tally {
    expected: AtomicU64,
    unexpected: AtomicU64,
}

impl Tally {
    fn check(&self, what: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.expected.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                if self.unexpected.fetch_add(1, Ordering::Relaxed) < 10 {
                    eprintln!("unexpected answer to {what}: {error}");
                }
            }
        }
    }
}

/// One keep-alive connection that reconnects after an error.
struct Client {
    addr: SocketAddr,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, sender: None }
    }

    /// Send a request with the analyst's key; the status, the session id
    /// (if the answer names one) and the body.
    async fn send(
        &mut self,
        method: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<(u16, Option<String>, String), String> {
        self.send_to(method, "/mcp", headers, body).await
    }

    /// [`Client::send`] to another path of the gateway.
    async fn send_to(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Result<(u16, Option<String>, String), String> {
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .header("authorization", "Bearer demo-acme-analyst")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = if body.is_null() { Bytes::new() } else { Bytes::from(body.to_string()) };
        let result = async {
            sender.ready().await.map_err(|e| e.to_string())?;
            let response =
                sender.send_request(request.body(Full::new(body)).unwrap()).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let session = response.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok((status, session, String::from_utf8_lossy(&bytes).into_owned()))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    /// A 2026-07-28 request; the JSON-RPC response.
    async fn modern(&mut self, id: u64, method: &str, mut params: Value) -> Result<Value, String> {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let name = params["name"].as_str().unwrap_or_default().to_owned();
        let mut headers = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", method)];
        if !name.is_empty() {
            headers.push(("mcp-name", &name));
        }
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, _, text) = self.send("POST", &headers, &body).await?;
        last_message(&text).ok_or_else(|| format!("HTTP {status}: {text}"))
    }
}

/// The JSON-RPC message of a JSON body, or the last one of an event stream.
fn last_message(text: &str) -> Option<Value> {
    serde_json::from_str(text).ok().or_else(|| {
        text.split("\n\n")
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim))
            .filter(|d| !d.is_empty())
            .filter_map(|d| serde_json::from_str(d).ok())
            .last()
    })
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn expect(condition: bool, reply: &Value) -> Result<(), String> {
    if condition { Ok(()) } else { Err(reply.to_string()) }
}

/// One legacy session's whole life.
async fn session(client: &mut Client) -> Result<(), String> {
    let init = json!({"jsonrpc": "2.0", "id": id(), "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}});
    let (status, session, text) = client.send("POST", &[], &init).await?;
    let session = session.filter(|_| status == 200).ok_or_else(|| format!("initialize: HTTP {status}: {text}"))?;
    let headers = [("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-11-25")];
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, text) = client.send("POST", &headers, &initialized).await?;
    if status != 202 {
        return Err(format!("initialized: HTTP {status}: {text}"));
    }
    let (_, _, text) =
        client.send("POST", &headers, &json!({"jsonrpc": "2.0", "id": id(), "method": "tools/list"})).await?;
    let listed = last_message(&text).ok_or_else(|| format!("tools/list: {text}"))?;
    expect(listed["result"]["tools"].is_array(), &listed)?;
    let call = json!({"jsonrpc": "2.0", "id": id(), "method": "tools/call",
        "params": {"name": "query_analytics_db", "arguments": {"q": "session"}}});
    let (_, _, text) = client.send("POST", &headers, &call).await?;
    let called = last_message(&text).ok_or_else(|| format!("tools/call: {text}"))?;
    expect(called["result"]["isError"] == false, &called)?;
    let (status, _, text) = client.send("DELETE", &headers, &Value::Null).await?;
    if status != 204 {
        return Err(format!("DELETE: HTTP {status}: {text}"));
    }
    Ok(())
}

/// `GET /admin/status`, as the analyst (the soak's admin role).
async fn admin_status(addr: SocketAddr) -> Value {
    let reply = Client::new(addr).send_to("GET", "/admin/status", &[], &Value::Null).await;
    reply.ok().and_then(|(_, _, text)| serde_json::from_str(&text).ok()).unwrap_or(Value::Null)
}

/// Resident memory (KiB) and open file descriptors of a process.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss, fds)
}

/// Run the soak for `seconds`; whether every answer was as expected.
pub async fn run(warden: &Path, seconds: u64) -> bool {
    let dir = std::env::temp_dir().join(format!("warden-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(serve_echo(listener));

    // The quick-start chain, letting analysts crash the fault server too.
    let root = repo_root();
    let chain_text = std::fs::read_to_string(root.join("policies/quickstart.toml"))
        .unwrap()
        .replace("allow = [\"demo/query_*\"]", "allow = [\"demo/query_*\", \"faults/crash\"]");
    assert!(chain_text.contains("faults/crash"), "policies/quickstart.toml changed shape");
    let chain = dir.join("chain.toml");
    std::fs::write(&chain, &chain_text).unwrap();
    let faults = format!(
        "\n[admin]\nrole = \"analyst\"\n\n[[upstream]]\nname = \"faults\"\ncommand = \"python3\"\nargs = [\"{}\"]\ntimeout_ms = 5000\n",
        root.join("tests/e2e/fakes/stdio_server.py").display()
    );
    let gateway = start_gateway_with(warden, upstream, Some(&chain), &dir, "soak", &faults).await;
    let pid = gateway.child.id().expect("the gateway runs");
    let addr = gateway.addr;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    let spawn_loop = |tasks: &mut Vec<tokio::task::JoinHandle<()>>, pause: Duration, work: Work| {
        let (tally, stop) = (Arc::clone(&tally), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(addr);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (what, outcome) = work.once(&mut client).await;
                tally.check(what, outcome);
                tokio::time::sleep(pause).await;
            }
        }));
    };
    for _ in 0..3 {
        spawn_loop(&mut tasks, Duration::from_millis(2), Work::Call);
    }
    spawn_loop(&mut tasks, Duration::from_millis(20), Work::List);
    spawn_loop(&mut tasks, Duration::from_millis(20), Work::Deny);
    spawn_loop(&mut tasks, Duration::from_millis(50), Work::Session);
    spawn_loop(&mut tasks, Duration::from_secs(3), Work::Crash);

    // A reload every ten seconds: the watcher sees the file change.
    let reloader = {
        let chain = chain.clone();
        tokio::spawn(async move {
            let mut reloads = 0;
            while Instant::now() + Duration::from_secs(10) < deadline {
                tokio::time::sleep(Duration::from_secs(10)).await;
                reloads += 1;
                std::fs::write(&chain, format!("{chain_text}\n# soak reload {reloads}\n")).unwrap();
            }
            reloads
        })
    };

    let every = Duration::from_secs((seconds / 20).clamp(1, 30));
    let started = Instant::now();
    let mut samples = vec![(Duration::ZERO, footprint(pid), 0u64)];
    while Instant::now() < deadline {
        tokio::time::sleep(every.min(deadline.saturating_duration_since(Instant::now()))).await;
        samples.push((started.elapsed(), footprint(pid), tally.expected.load(Ordering::Relaxed)));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let reloads = reloader.await.unwrap_or(0);
    // Give the last reload time to go live before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every reload went live (the file watcher picked each one up).
    let live = admin_status(gateway.admin.expect("the soak config has [admin]")).await;
    let swapped = live["reloads"]["succeeded"].as_u64().unwrap_or(0);
    let refused = live["reloads"]["failed"].as_u64().unwrap_or(u64::MAX);
    if swapped < reloads || refused != 0 {
        eprintln!("reloads: {reloads} written, {swapped} went live, {refused} refused: {live}");
        tally.unexpected.fetch_add(1, Ordering::Relaxed);
    }
    let (expected, unexpected) = (tally.expected.load(Ordering::Relaxed), tally.unexpected.load(Ordering::Relaxed));

    println!(
        "\nsoak: {seconds} s, {expected} answers as expected, {unexpected} unexpected, {reloads} chain reloads ({swapped} live)\n"
    );
    println!("| time s | gateway RSS MiB | open fds | answers so far |");
    println!("|---|---|---|---|");
    for (at, (rss, fds), answers) in &samples {
        println!("| {} | {:.1} | {fds} | {answers} |", at.as_secs(), *rss as f64 / 1024.0);
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(dir);
    unexpected == 0 && expected > 0
}

/// One kind of request the soak sends.
#[derive(Clone, Copy)]
enum Work {
    Call,
    List,
    Deny,
    Session,
    Crash,
}

impl Work {
    async fn once(self, client: &mut Client) -> (&'static str, Result<(), String>) {
        match self {
            Work::Call => {
                let reply = client
                    .modern(id(), "tools/call", json!({"name": "query_analytics_db", "arguments": {"q": "soak"}}))
                    .await;
                ("a call", reply.and_then(|r| expect(r["result"]["isError"] == false, &r)))
            }
            Work::List => {
                let reply = client.modern(id(), "tools/list", json!({})).await;
                ("a listing", reply.and_then(|r| expect(r["result"]["tools"].is_array(), &r)))
            }
            Work::Deny => {
                // rbac hides what it forbids, so the tool is unknown to this caller.
                let reply = client.modern(id(), "tools/call", json!({"name": "env", "arguments": {}})).await;
                ("a denied call", reply.and_then(|r| expect(r["error"]["message"] == "unknown tool: env", &r)))
            }
            Work::Crash => {
                // The process dies mid-call, or is still restarting: either way
                // an upstream error, never a hang or a gateway failure.
                let reply = client.modern(id(), "tools/call", json!({"name": "crash", "arguments": {}})).await;
                ("a crashing call", reply.and_then(|r| expect(r["error"]["code"] == -32012, &r)))
            }
            Work::Session => ("a legacy session", session(client).await),
        }
    }
}
