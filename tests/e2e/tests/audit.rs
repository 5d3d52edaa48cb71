//! The record of decisions through the real gateway and the real CLI: every
//! refusal path leaves exactly one audit record with its outcome; `warden
//! audit verify` reports every kind of tampering with its position; a
//! gateway killed under load keeps every call it answered, and its log
//! verifies; the metrics count known traffic exactly; and a planted secret
//! reaches neither the log, the audit record nor the metrics.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use e2e::{Scratch, Warden, bin};
use serde_json::{Value, json};

const ANALYST: &str = "demo-acme-analyst";
const ENGINEER: &str = "demo-acme-engineer";

const CHAIN: &str = r#"
[[plugin]]
name = "rbac"
source = "builtin:rbac"
[plugin.config]
default = "deny"
risk = [{ match = "demo/send_email", level = "critical" }]
[plugin.config.roles.analyst]
allow = ["demo/query_*"]
[plugin.config.roles.engineer]
allow = ["demo/*"]

[[plugin]]
name = "chain-detect"
source = "builtin:chain-detect"
"#;

/// The demo upstream behind rbac (critical `send_email` asks) and
/// chain-detect, with an audit log durable per record (a record is on disk
/// when its answer arrives). The chain file lives in `dir`.
fn start(dir: &Scratch) -> Warden {
    start_with(dir, "")
}

/// [`start`], with more config.
fn start_with(dir: &Scratch, extra: &str) -> Warden {
    let chain = dir.path().join("chain.toml");
    std::fs::write(&chain, CHAIN).unwrap();
    let config = format!(
        r#"
[policy]
chain = "{chain}"

[audit]
file = "{{dir}}/audit/warden.jsonl"
fsync = "record"
record_arguments = true

[[api_key]]
subject = "demo-acme-analyst"
tenant = "acme"
roles = ["analyst"]
sha256 = "a2dcf9e7e7fbb532417b1cf437d4d7181ca1b24f4f2365d215c8624ef0189430"

[[api_key]]
subject = "demo-acme-engineer"
tenant = "acme"
roles = ["engineer"]
sha256 = "54c1e7841003db6d41b7cdcd3c675e5af9af86a970cc76f70ddfae2946fbe661"

[[required_scopes]]
tools = ["demo/write_workspace_file"]
scopes = ["files:write"]

[[upstream]]
name = "demo"
command = "{{demo}}"
args = ["--workspace", "{{dir}}/workspace", "--outbox", "{{dir}}/outbox.jsonl"]
timeout_ms = 1500
{extra}
"#,
        chain = chain.display()
    );
    Warden::start(&config)
}

fn log_file(warden: &Warden) -> PathBuf {
    warden.dir.path().join("audit/warden.jsonl")
}

fn public_key(warden: &Warden) -> PathBuf {
    warden.dir.path().join("audit/warden.key.pub")
}

/// Every record of the live log.
fn records(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn decisions(file: &Path) -> Vec<Value> {
    records(file).into_iter().filter(|r| r["kind"] == "decision").collect()
}

fn stop(warden: &Warden) {
    let status = Command::new("kill").args(["-TERM", &warden.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        // Sealed, and the seal kept beside the log (written just after it).
        let kept = std::fs::read_to_string(warden.dir.path().join("audit/warden.checkpoint")).unwrap_or_default();
        let sealed = records(&log_file(warden))
            .last()
            .is_some_and(|r| r["kind"] == "checkpoint" && r["final"] == true && r["note"] == kept.as_str());
        if sealed {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the gateway did not seal its log on SIGTERM:\n{}", warden.log());
}

/// `warden audit verify`: exit code and output.
fn verify(files: &[PathBuf], key: &Path) -> (i32, String) {
    let output = Command::new(bin("warden")).args(["audit", "verify", "--key"]).arg(key).args(files).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

fn tool(name: &str, arguments: Value) -> Value {
    json!({"name": name, "arguments": arguments})
}

/// A query that keeps SQLite busy far past the upstream's 1.5 s timeout.
const SLOW: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM (SELECT i FROM n LIMIT 3000000000)";

#[tokio::test]
async fn every_refusal_path_leaves_exactly_one_record_with_its_outcome() {
    let dir = Scratch::new("audit-paths");
    let warden = start(&dir);
    let analyst = warden.initialize(ANALYST, "2025-11-25").await;
    let engineer = warden.initialize(ENGINEER, "2025-11-25").await;
    let count = json!({"query": "SELECT count(*) AS n FROM sales WHERE tenant = 'acme'"});

    let allowed = warden.call(ANALYST, &analyst, 1, "tools/call", tool("query_analytics_db", count.clone())).await;
    assert!(allowed.get("result").is_some(), "{allowed}");
    let unknown = warden.call(ANALYST, &analyst, 2, "tools/call", tool("no_such_tool", json!({}))).await;
    assert_eq!(unknown["error"]["code"], -32602);
    let hidden = warden.call(ANALYST, &analyst, 3, "tools/call", tool("send_email", json!({}))).await;
    assert_eq!(hidden["error"]["code"], -32602, "a hidden tool looks unknown to the client: {hidden}");
    let bad = warden.call(ANALYST, &analyst, 4, "tools/call", json!({"arguments": {}})).await;
    assert_eq!(bad["error"]["code"], -32602);
    let slow =
        warden.call(ANALYST, &analyst, 5, "tools/call", tool("query_analytics_db", json!({"query": SLOW}))).await;
    assert_eq!(slow["error"]["code"], -32012, "{slow}");
    let asked = warden
        .call(
            ENGINEER,
            &engineer,
            6,
            "tools/call",
            tool("send_email", json!({"to": "a@example.com", "subject": "s", "body": "b"})),
        )
        .await;
    assert_eq!(asked["error"]["code"], -32011, "{asked}");
    // The scope check answers 403 before the session's stream opens.
    let scope = warden
        .send(
            hyper::Method::POST,
            &[
                ("authorization", &format!("Bearer {ENGINEER}")),
                ("mcp-session-id", &engineer),
                ("mcp-protocol-version", "2025-11-25"),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
            &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                "params": tool("write_workspace_file", json!({"path": "x", "content": "y"}))})
            .to_string(),
        )
        .await;
    assert_eq!(scope.status, 403, "{scope:?}");
    // chain-detect: secrets read, then an email in the same session.
    let secrets = warden.call(ENGINEER, &engineer, 8, "tools/call", tool("read_secrets", json!({}))).await;
    assert!(secrets.get("result").is_some(), "{secrets}");
    let exfiltrate = warden
        .call(
            ENGINEER,
            &engineer,
            9,
            "tools/call",
            tool("send_email", json!({"to": "x@example.com", "subject": "s", "body": "b"})),
        )
        .await;
    assert_eq!(exfiltrate["error"]["code"], -32010, "{exfiltrate}");

    let decisions = decisions(&log_file(&warden));
    let calls: Vec<(String, String, String)> = decisions
        .iter()
        .filter(|d| d["method"] == "tools/call")
        .map(|d| {
            let text = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
            (text("subject"), text("target"), text("outcome"))
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        (ANALYST, "query_analytics_db", "allowed"),
        (ANALYST, "no_such_tool", "unknown"),
        (ANALYST, "send_email", "hidden"),
        (ANALYST, "-", "invalid-request"),
        (ANALYST, "query_analytics_db", "upstream-error"),
        (ENGINEER, "send_email", "approval-required"),
        (ENGINEER, "write_workspace_file", "insufficient-scope"),
        (ENGINEER, "read_secrets", "allowed"),
        (ENGINEER, "send_email", "denied"),
    ]
    .iter()
    .map(|(s, t, o)| (s.to_string(), t.to_string(), o.to_string()))
    .collect();
    assert_eq!(calls, expected, "one record per call, in order");

    // The details a compliance officer asks for are there.
    let first = &decisions.iter().find(|d| d["method"] == "tools/call").unwrap();
    assert_eq!(first["tenant"], "acme");
    assert_eq!(first["server"], "demo");
    assert_eq!(first["session"], analyst.as_str());
    assert_eq!(first["arguments"], count);
    assert_eq!(first["arguments_sha256"].as_str().map(str::len), Some(64));
    assert_eq!(first["upstream"]["status"], "ok");
    let plugins: Vec<&str> = first["steps"].as_array().unwrap().iter().map(|s| s["plugin"].as_str().unwrap()).collect();
    assert_eq!(plugins, ["rbac", "chain-detect"]);
    assert!(first["steps"][0]["fuel"].as_u64().unwrap() > 0);
    let denied = decisions.iter().find(|d| d["outcome"] == "denied").unwrap();
    let verdicts: Vec<&str> =
        denied["steps"].as_array().unwrap().iter().map(|s| s["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts, ["ask", "deny"], "rbac asked, chain-detect denied: {denied}");
    assert_eq!(denied["code"], -32010);
    assert_eq!(denied["chain"]["generation"], 1);

    stop(&warden);
    let (code, output) = verify(&[log_file(&warden)], &public_key(&warden));
    assert_eq!(code, 0, "{output}");
    assert!(output.starts_with("intact:"), "{output}");
}

#[tokio::test]
async fn a_cancelled_call_is_recorded_as_cancelled_and_counted() {
    let dir = Scratch::new("audit-cancel");
    let warden = start_with(&dir, "[admin]\nrole = \"engineer\"\n");
    let session = warden.initialize(ANALYST, "2025-11-25").await;
    let slow = warden.call(ANALYST, &session, 1, "tools/call", tool("query_analytics_db", json!({"query": SLOW})));
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let message = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
        let headers = [
            ("authorization", format!("Bearer {ANALYST}")),
            ("mcp-session-id", session.clone()),
            ("mcp-protocol-version", "2025-11-25".to_owned()),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        warden.post(&headers, &message).await
    };
    let (_, cancelled) = tokio::join!(tokio::time::timeout(Duration::from_secs(5), slow), cancel);
    assert_eq!(cancelled.status, 202);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let outcomes: Vec<Value> = decisions(&log_file(&warden)).iter().map(|d| d["outcome"].clone()).collect();
        if outcomes == [json!("cancelled")] {
            break;
        }
        assert!(Instant::now() < deadline, "outcomes: {outcomes:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Chargeback counts it as a call (the upstream may have worked on it),
    // not as a refusal.
    let url = warden.admin("/admin/usage?since=1h&tenant=acme");
    let reply = warden.send_to(&url, hyper::Method::GET, &[("authorization", &format!("Bearer {ENGINEER}"))], "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let report: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(report["tenants"][0]["usage"]["calls"], 1, "{report}");
    assert_eq!(report["tenants"][0]["usage"]["refused"], 0, "{report}");
}

/// A sealed log with some traffic, copied out of its gateway's folder.
async fn sealed_log(label: &str) -> (Scratch, PathBuf, PathBuf) {
    let keep = Scratch::new(label);
    let warden = start(&keep);
    let session = warden.initialize(ANALYST, "2025-11-25").await;
    for id in 1..=6 {
        let query = json!({"query": format!("SELECT {id} AS n")});
        warden.call(ANALYST, &session, id, "tools/call", tool("query_analytics_db", query)).await;
    }
    stop(&warden);
    let file = keep.path().join("warden.jsonl");
    let key = keep.path().join("warden.key.pub");
    std::fs::copy(log_file(&warden), &file).unwrap();
    std::fs::copy(public_key(&warden), &key).unwrap();
    std::fs::copy(warden.dir.path().join("audit/warden.checkpoint"), keep.path().join("warden.checkpoint")).unwrap();
    (keep, file, key)
}

#[tokio::test]
async fn verify_reports_every_tampering_with_its_position() {
    let (keep, file, key) = sealed_log("audit-tamper").await;
    let (code, output) = verify(std::slice::from_ref(&file), &key);
    assert_eq!(code, 0, "the untouched log verifies: {output}");
    assert!(output.contains("last checkpoint at seq"), "{output}");
    let original = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<String> = original.lines().map(str::to_owned).collect();
    // Lines: 1 start, 2 checkpoint, 3–8 decisions, 9 the final checkpoint.
    assert_eq!(lines.len(), 9, "{original}");
    let join = |lines: &[String]| lines.join("\n") + "\n";
    let without = |index: usize| {
        let mut l = lines.clone();
        l.remove(index);
        join(&l)
    };

    let mut edited = lines.clone();
    edited[3] = edited[3].replace("demo-acme-analyst", "demo-acme-engineer");
    let mut inserted = lines.clone();
    inserted.insert(4, lines[3].clone());
    let mut reordered = lines.clone();
    reordered.swap(4, 5);
    let mut forged = lines.clone();
    let other = Scratch::new("audit-other-key");
    let other_key = other.path().join("other.key");
    let made = Command::new(bin("warden")).args(["audit", "keygen", "--out"]).arg(&other_key).output().unwrap();
    assert!(made.status.success());
    forged[8] = forge(&lines[8], &other_key);
    // Into the last decision: records the kept checkpoint vouches for are gone.
    let cut = original.len() - lines[8].len() - 1 - 10;

    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("edit a field", join(&edited), ":4:", "record 3 was altered"),
        ("delete a record", without(5), ":6:", "missing before this one"),
        ("insert a record", join(&inserted), ":5:", "out of order"),
        ("reorder two records", join(&reordered), ":5:", "deleted or reordered"),
        ("truncate the tail", join(&lines[..6]), ":6:", "truncated"),
        ("cut the last records short", original[..cut].to_owned(), ":7:", "truncated"),
        ("drop a checkpoint", without(1), ":2:", "missing before this one"),
        ("forge a checkpoint with another key", join(&forged), ":9:", "not signed by key"),
    ];
    for (what, text, position, message) in cases {
        std::fs::write(&file, &text).unwrap();
        let (code, output) = verify(std::slice::from_ref(&file), &key);
        assert_eq!(code, 1, "{what}: {output}");
        assert!(
            output.contains(position) && output.contains(message),
            "{what}: expected {position} {message:?}, got {output}"
        );
    }

    // Splicing in a file of another log.
    std::fs::write(&file, &original).unwrap();
    let (other_keep, other_file, _) = sealed_log("audit-splice").await;
    let (code, output) = verify(&[file.clone(), other_file.clone()], &key);
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("out of order"), "{output}");
    drop((keep, other_keep, other));
}

/// The checkpoint record `line` with its note signed by another key (a
/// forger's note claiming the same log state), as the signed-note format
/// spells it: `— <name> base64(key id ‖ Ed25519 signature)`.
fn forge(line: &str, key: &Path) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use ed25519_dalek::Signer as _;
    let mut record: Value = serde_json::from_str(line).unwrap();
    let note = record["note"].as_str().unwrap().to_owned();
    let body = format!("{}\n", note.split("\n\n").next().unwrap());
    let text = std::fs::read_to_string(key).unwrap();
    let parts: Vec<&str> = text.trim().splitn(5, '+').collect();
    let (name, id) = (parts[2], parts[3]);
    let seed: [u8; 32] = STANDARD.decode(parts[4]).unwrap()[1..].try_into().unwrap();
    let signature = ed25519_dalek::SigningKey::from_bytes(&seed).sign(body.as_bytes());
    let mut signed: Vec<u8> = (0..4).map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).unwrap()).collect();
    signed.extend_from_slice(&signature.to_bytes());
    record["note"] = json!(format!("{body}\n\u{2014} {name} {}\n", STANDARD.encode(signed)));
    record.to_string()
}

#[tokio::test]
async fn a_gateway_killed_under_load_keeps_every_answered_call_and_its_log_verifies() {
    let dir = Scratch::new("audit-kill");
    let warden = start(&dir);
    let answered = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + Duration::from_millis(1500);
    let mut clients = Vec::new();
    let warden = Arc::new(warden);
    for client in 0..4u64 {
        let (warden, answered) = (Arc::clone(&warden), Arc::clone(&answered));
        clients.push(tokio::spawn(async move {
            let auth = format!("Bearer {ANALYST}");
            for n in 0..2000u64 {
                let marker = format!("SELECT {} AS n", client * 100_000 + n);
                let params = tool("query_analytics_db", json!({"query": marker}));
                let headers = [("authorization", auth.as_str())];
                let reply =
                    tokio::time::timeout(Duration::from_secs(5), warden.modern(&headers, n, "tools/call", params));
                match reply.await {
                    Ok(reply) if reply.status == 200 => answered.lock().unwrap().push(marker),
                    _ => break,
                }
                if Instant::now() > stop_at {
                    break;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let killed = Command::new("kill").args(["-KILL", &warden.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    for client in clients {
        let _ = client.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 20, "the load ran: {} answers", answered.len());

    let file = log_file(&warden);
    let (code, output) = verify(std::slice::from_ref(&file), &public_key(&warden));
    assert_eq!(code, 0, "the log verifies up to its last durable record: {output}");
    let logged: std::collections::HashSet<String> =
        decisions(&file).iter().filter_map(|d| d["arguments"]["query"].as_str().map(str::to_owned)).collect();
    let missing: Vec<&String> = answered.iter().filter(|m| !logged.contains(*m)).collect();
    assert!(missing.is_empty(), "answered but not in the log: {missing:?}");
}

/// `warden hash-key KEY`.
fn hash_key(key: &str) -> String {
    let output = Command::new(bin("warden")).args(["hash-key", key]).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The value of one sample line of OpenMetrics text.
fn sample(text: &str, line: &str) -> u64 {
    let found = text.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("no {line} in:\n{text}"));
    found.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn metrics_count_known_traffic_and_no_secret_reaches_logs_records_or_metrics() {
    // A credential that names nobody: if it leaks, grepping finds it.
    const KEY: &str = "wk_live_7f3a9c1e5b2d4086";
    const PLANTED: &str = "hunter2-planted-secret";
    let extra = format!(
        "\n[admin]\nrole = \"operator\"\n\n[[api_key]]\nsubject = \"ops\"\nroles = [\"operator\"]\nsha256 = \"{}\"\n\n\
         [[api_key]]\nsubject = \"svc\"\ntenant = \"acme\"\nroles = [\"analyst\"]\nsha256 = \"{}\"\n",
        hash_key("ops-scrape-key"),
        hash_key(KEY)
    );
    let dir = Scratch::new("audit-metrics");
    let warden = start_with(&dir, &extra);
    let session = warden.initialize(KEY, "2025-11-25").await;
    for id in 1..=3 {
        let query = json!({"query": "SELECT 1 AS n", "password": PLANTED});
        let answer = warden.call(KEY, &session, id, "tools/call", tool("query_analytics_db", query)).await;
        assert!(answer.get("result").is_some(), "{answer}");
    }
    for id in 4..=5 {
        let hidden = warden.call(KEY, &session, id, "tools/call", tool("read_secrets", json!({}))).await;
        assert_eq!(hidden["error"]["code"], -32602);
    }
    for _ in 0..2 {
        let refused = warden
            .send(
                hyper::Method::POST,
                &[("authorization", "Bearer not-a-key"), ("content-type", "application/json")],
                "{}",
            )
            .await;
        assert_eq!(refused.status, 401);
    }

    let metrics = warden
        .send_to(&warden.admin("/admin/metrics"), hyper::Method::GET, &[("authorization", "Bearer ops-scrape-key")], "")
        .await;
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(metrics.header("content-type").is_some_and(|c| c.starts_with("application/openmetrics-text")));
    let text = &metrics.body;
    let requests = |target: &str, server: &str, outcome: &str| {
        sample(
            text,
            &format!(
                "warden_requests_total{{method=\"tools/call\",tenant=\"acme\",server=\"{server}\",target=\"{target}\",outcome=\"{outcome}\"}}"
            ),
        )
    };
    assert_eq!(requests("demo/query_analytics_db", "demo", "allowed"), 3);
    assert_eq!(requests("", "", "hidden"), 2, "a name that routed nowhere never becomes a label");
    assert_eq!(sample(text, "warden_plugin_verdicts_total{plugin=\"rbac\",hook=\"on-call\",verdict=\"allow\"}"), 3);
    assert_eq!(sample(text, "warden_plugin_duration_seconds_count{plugin=\"rbac\",hook=\"on-call\"}"), 3);
    assert_eq!(sample(text, "warden_plugin_fuel_count{plugin=\"chain-detect\",hook=\"on-call\"}"), 3);
    assert_eq!(sample(text, "warden_upstream_duration_seconds_count{server=\"demo\"}"), 3);
    assert_eq!(sample(text, "warden_upstream_connections_total{server=\"demo\"}"), 1);
    assert_eq!(sample(text, "warden_auth_failures_total{reason=\"invalid_key\"}"), 2);
    assert_eq!(sample(text, "warden_request_duration_seconds_count{method=\"tools/call\"}"), 5);
    let records = records(&log_file(&warden));
    assert_eq!(sample(text, "warden_audit_records_total"), records.len() as u64);
    assert!(sample(text, "warden_audit_checkpoints_total") >= 1);
    assert_eq!(sample(text, "warden_audit_records_lost_total"), 0);

    // The arguments were recorded, but not the planted password.
    let audit = std::fs::read_to_string(log_file(&warden)).unwrap();
    assert!(audit.contains("\"password\":\"[redacted]\""), "{audit}");
    for (what, haystack) in [("the log", warden.log()), ("the audit log", audit), ("the metrics", text.clone())] {
        assert!(!haystack.contains(PLANTED), "the planted secret is in {what}");
        assert!(!haystack.contains(KEY), "the API key is in {what}");
    }
}
