//! The harness for the end-to-end tests: start the built `warden` binary on
//! `127.0.0.1:0` with a config, learn its port from its log, talk to it over
//! real HTTP, and print its log if a test fails.
//!
//! The binaries are those `cargo build --workspace --bins` made (`cargo xtask
//! test` builds them first). Tests that need peers from npm or PyPI find them
//! under `WARDEN_PEERS` (default `target/peers`, installed by `cargo xtask peers`).

pub mod idp;
pub mod peers;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A binary built by the workspace (in the same profile as this test).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (cargo xtask test does)",
        path.display()
    );
    path
}

/// The installed test peers (Python venv, Node 22, npm packages).
pub fn peers() -> PathBuf {
    let dir = std::env::var_os("WARDEN_PEERS").map(PathBuf::from).unwrap_or_else(|| root().join("target/peers"));
    assert!(
        dir.join("venv/bin/python").exists(),
        "test peers are missing in {}: run `cargo xtask peers`",
        dir.display()
    );
    dir
}

/// A scratch folder, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new, empty folder.
    pub fn new(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("warden-e2e-{}-{label}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate for 127.0.0.1 from a fresh test CA, whose certificate
/// (PEM) is written to `ca_file`: the leaf and its key pair.
pub fn loopback_certificate(ca_file: &Path) -> (rcgen::Certificate, rcgen::KeyPair) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    std::fs::write(ca_file, ca.pem()).unwrap();
    (leaf, leaf_key)
}

/// Free a port on loopback (for an upstream that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Wait until something accepts connections on `port` (a helper's listener).
pub async fn listening(port: u16) {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listens on {port} after 30 s");
}

/// A helper process (a fake upstream), killed when dropped — also when the
/// test panics, so it never outlives the test holding its output open.
pub struct Helper(Child);

impl Helper {
    /// Spawn `program args…` with its output discarded.
    pub fn spawn(program: &str, args: &[&str]) -> Self {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        Self(child)
    }

    /// Spawn a prepared command.
    pub fn from_command(mut command: Command) -> Self {
        Self(command.spawn().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}")))
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `Authorization` for a key; none for the empty key (anonymous access).
fn authorization(key: &str) -> Vec<(&'static str, String)> {
    if key.is_empty() { Vec::new() } else { vec![("authorization", format!("Bearer {key}"))] }
}

/// A running `warden serve`.
pub struct Warden {
    child: Child,
    /// `http://127.0.0.1:<port>/mcp`.
    pub url: String,
    /// `http://127.0.0.1:<port>` of the control plane, if the config has `[admin]`.
    pub admin_url: Option<String>,
    /// The folder holding its config.
    pub dir: Scratch,
    log: Arc<Mutex<String>>,
    client: HttpClient,
}

/// An HTTP/1.1 client with keep-alive, for talking to gateways (or a
/// balancer in front of them) from several tasks; cheap to clone.
#[derive(Clone)]
pub struct HttpClient(Client<HttpConnector, Full<Bytes>>);

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self(Client::builder(TokioExecutor::new()).build(connector))
    }
}

impl HttpClient {
    /// One exchange with `url`; answers must come within 60 s.
    pub async fn send(&self, url: &str, method: Method, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut request = Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(60), self.0.request(request))
            .await
            .expect("warden answered within 60 s")
            .expect("HTTP exchange");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = tokio::time::timeout(Duration::from_secs(60), response.into_body().collect())
            .await
            .expect("the body ended within 60 s")
            .expect("body")
            .to_bytes();
        Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    }
}

/// What came back from one HTTP exchange.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Response headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: String,
}

impl Reply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC messages in the body: one JSON document, or SSE `data:` lines.
    pub fn messages(&self) -> Vec<Value> {
        if self.header("content-type").is_some_and(|c| c.starts_with("text/event-stream")) {
            self.body
                .split("\n\n")
                .filter_map(|event| {
                    let data: Vec<&str> =
                        event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
                    (!data.is_empty() && !data.concat().is_empty())
                        .then(|| serde_json::from_str(&data.join("\n")).unwrap())
                })
                .collect()
        } else if self.body.is_empty() {
            Vec::new()
        } else {
            vec![serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))]
        }
    }

    /// The last message: the response.
    pub fn json(&self) -> Value {
        self.messages().pop().unwrap_or_else(|| panic!("no message in HTTP {}: {:?}", self.status, self.body))
    }
}

impl Warden {
    /// Start `warden serve` with `config`. In the config, `{demo}` is the demo
    /// upstream's binary, `{dir}` the config's folder and `{root}` the repository.
    pub fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`Warden::start`], with these variables in the gateway's environment.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        let dir = Scratch::new("warden");
        let config = config
            .replace("{demo}", &bin("warden-demo-upstream").display().to_string())
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{root}", &root().display().to_string());
        let file = dir.path().join("warden.toml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new(bin("warden"))
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .env("WARDEN_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warden");
        let log = Arc::new(Mutex::new(String::new()));
        let (url_tx, url_rx) = mpsc::channel();
        let (admin_tx, admin_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                if let Some(url) = line.split("url=").nth(1).filter(|_| line.contains("serving admin")) {
                    let _ = admin_tx.send(url.trim().to_owned());
                }
                if let Some(url) = line.split("url=").nth(1).filter(|_| line.contains("serving MCP")) {
                    let _ = url_tx.send(url.trim().to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let url = match url_rx.recv_timeout(Duration::from_secs(90)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("warden did not start; its log:\n{}", log.lock().unwrap());
            }
        };
        let client = HttpClient::default();
        // The control plane is up before the MCP listener is announced.
        let admin_url = admin_rx.try_recv().ok();
        Self { child, url, admin_url, dir, log, client }
    }

    /// The port of its MCP listener.
    pub fn port(&self) -> u16 {
        self.url.split(':').nth(2).and_then(|rest| rest.split('/').next()).and_then(|p| p.parse().ok()).unwrap()
    }

    /// Its process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log comes to contain `text` within a few seconds (its
    /// lines arrive through a pipe, a moment after the event).
    pub async fn logged(&self, text: &str) -> bool {
        for _ in 0..100 {
            if self.log().contains(text) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Send an HTTP request to the MCP endpoint and read the whole answer.
    pub async fn send(&self, method: Method, headers: &[(&str, &str)], body: &str) -> Reply {
        self.send_to(&self.url, method, headers, body).await
    }

    /// GET another path of the gateway (`/.well-known/…`, `/mcp?query`).
    pub async fn get(&self, path_and_query: &str) -> Reply {
        let base = self.url.trim_end_matches("/mcp");
        self.send_to(&format!("{base}{path_and_query}"), Method::GET, &[], "").await
    }

    /// The URL of a control-plane path (the config must have `[admin]`).
    pub fn admin(&self, path: &str) -> String {
        let base = self.admin_url.as_deref().expect("the config has no [admin] table");
        format!("{base}{path}")
    }

    /// `warden ARGS --url <its control plane>` with `WARDEN_API_KEY` set to
    /// `key`, as an operator runs it: the exit code and all it printed.
    pub fn control(&self, key: &str, args: &[&str]) -> (Option<i32>, String) {
        let output = Command::new(bin("warden"))
            .args(args)
            .args(["--url", self.admin_url.as_deref().expect("the config has no [admin] table")])
            .env("WARDEN_API_KEY", key)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.code(), text)
    }

    /// `GET /admin/status` (the config must give its caller the `[admin] role`).
    pub async fn admin_status(&self) -> Value {
        let reply = self.send_to(&self.admin("/admin/status"), Method::GET, &[], "").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        serde_json::from_str(&reply.body).unwrap()
    }

    /// Send an HTTP request to `url` on the gateway and read the whole answer.
    pub async fn send_to(&self, url: &str, method: Method, headers: &[(&str, &str)], body: &str) -> Reply {
        self.client.send(url, method, headers, body).await
    }

    /// POST a JSON-RPC message with the usual headers plus `extra`.
    pub async fn post(&self, extra: &[(&str, &str)], message: &Value) -> Reply {
        let mut headers = vec![("content-type", "application/json"), ("accept", "application/json, text/event-stream")];
        headers.extend_from_slice(extra);
        self.send(Method::POST, &headers, &message.to_string()).await
    }

    /// Open a legacy session as the holder of `key` (empty: anonymous); returns its id.
    pub async fn initialize(&self, key: &str, version: &str) -> String {
        let auth = authorization(key);
        let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = self
            .post(
                &auth,
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let session = reply.header("mcp-session-id").expect("a session id").to_owned();
        let notified = self
            .post(
                &[&auth[..], &[("mcp-session-id", &session), ("mcp-protocol-version", version)]].concat(),
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(notified.status, 202);
        session
    }

    /// A request in a legacy session; returns the JSON-RPC response.
    pub async fn call(&self, key: &str, session: &str, id: u64, method: &str, params: Value) -> Value {
        let auth = authorization(key);
        let auth: Vec<(&str, &str)> = auth.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let reply = self
            .post(
                &[&auth[..], &[("mcp-session-id", session), ("mcp-protocol-version", "2025-11-25")]].concat(),
                &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
            )
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        reply.json()
    }

    /// A stateless (2026-07-28) request with the right headers and `_meta`.
    pub async fn modern(&self, extra: &[(&str, &str)], id: u64, method: &str, mut params: Value) -> Reply {
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        });
        let name = params.get("name").or_else(|| params.get("uri")).and_then(Value::as_str).map(str::to_owned);
        let mut headers = vec![("mcp-protocol-version", "2026-07-28"), ("mcp-method", method)];
        if let Some(name) = &name {
            headers.push(("mcp-name", name));
        }
        headers.extend_from_slice(extra);
        self.post(&headers, &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await
    }

    /// A stateless `tools/call` of `tool` with `arguments`: the result, or
    /// the JSON-RPC error.
    pub async fn call_tool(&self, id: u64, tool: &str, arguments: Value) -> Result<Value, Value> {
        let reply = self.modern(&[], id, "tools/call", json!({"name": tool, "arguments": arguments})).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let message = reply.json();
        match message.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(message["result"].clone()),
        }
    }
}

/// A gateway whose policy chain is `chain` (a chain file's text, written to
/// `dir`), in front of the stdio fault server (`tests/e2e/fakes`) as the
/// upstream `echo`; anonymous callers are `subject`. `upstream` is added to
/// the upstream's table.
pub fn echo_gateway(dir: &Scratch, subject: &str, chain: &str, upstream: &str) -> Warden {
    let file = dir.path().join("chain.toml");
    std::fs::write(&file, chain).unwrap();
    Warden::start(&format!(
        "[anonymous]\nsubject = \"{subject}\"\n\n[policy]\nchain = \"{}\"\n\n[[upstream]]\nname = \"echo\"\n\
         command = \"python3\"\nargs = [\"{{root}}/tests/e2e/fakes/stdio_server.py\"]\n{upstream}",
        file.display()
    ))
}

impl Drop for Warden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- warden's log ----\n{}", self.log());
        }
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Run `warden serve` on `config` (a file) when it is expected not to
/// start: its exit status and output.
pub fn serve_refused(config: &Path) -> std::process::Output {
    let output = Command::new(bin("warden"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "warden served on {}", config.display());
    output
}

/// An `[[api_key]]` table for one of the quick start's demo keys (the key is
/// its subject), with these roles; its tenant is the subject's second word.
pub fn demo_key(subject: &str, roles: &[&str]) -> String {
    let sha256 = match subject {
        "demo-acme-analyst" => "a2dcf9e7e7fbb532417b1cf437d4d7181ca1b24f4f2365d215c8624ef0189430",
        "demo-acme-engineer" => "54c1e7841003db6d41b7cdcd3c675e5af9af86a970cc76f70ddfae2946fbe661",
        "demo-globex-analyst" => "82214eba94ece514e1e0e50a4120bef972b42ae2c7605bf9df33e11313d8eebb",
        other => panic!("{other} is not a demo key"),
    };
    let tenant = subject.split('-').nth(1).unwrap();
    format!("\n[[api_key]]\nsubject = \"{subject}\"\ntenant = \"{tenant}\"\nroles = {roles:?}\nsha256 = \"{sha256}\"\n")
}

/// Tool names in a `tools/list` response.
pub fn tool_names(response: &Value) -> Vec<String> {
    response["result"]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The quick-start config, with the demo upstream's workspace, outbox and
/// request record in the config's folder.
pub fn quickstart_config() -> String {
    let quickstart = std::fs::read_to_string(root().join("examples/quickstart/warden.toml")).unwrap();
    let config = quickstart
        .replace("chain = \"../../policies/quickstart.toml\"", "chain = \"{root}/policies/quickstart.toml\"")
        .replace("command = \"warden-demo-upstream\"", "command = \"{demo}\"")
        .replace("file = \"../../target/quickstart/audit/warden.jsonl\"", "file = \"{dir}/audit/warden.jsonl\"")
        .replace("file = \"../../target/quickstart/state.json\"", "file = \"{dir}/state.json\"")
        .replace(
            "args = [\"--workspace\", \"../../target/quickstart/workspace\", \"--outbox\", \"../../target/quickstart/outbox.jsonl\"]",
            "args = [\"--workspace\", \"{dir}/workspace\", \"--outbox\", \"{dir}/outbox.jsonl\", \"--record\", \"{dir}/record.jsonl\"]",
        );
    for placeholder in
        ["{root}/policies", "{demo}", "{dir}/record.jsonl", "{dir}/audit/warden.jsonl", "{dir}/state.json"]
    {
        assert!(
            config.contains(placeholder),
            "examples/quickstart/warden.toml changed shape; update quickstart_config()"
        );
    }
    config
}
