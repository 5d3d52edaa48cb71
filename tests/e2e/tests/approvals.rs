//! Human approval for what a policy asks about, through the real gateway:
//! the quick start's rbac asks before an engineer's destructive write. The
//! operator queue (`warden approvals list|approve|deny`) lets the waiting
//! call run once, refuses it, or lets it expire; `separate_approver` keeps a
//! caller from approving itself; a legacy client (the official Python SDK)
//! that declared elicitation is asked itself and its answer decides.

use std::{process::Command, sync::Arc, time::Duration};

use e2e::{Warden, peers, peers::Redis, quickstart_config, root};
use serde_json::{Value, json};

const ENGINEER: &str = "demo-acme-engineer";
const OPS: &str = "demo-ops";
const APPROVAL_DENIED: i64 = -32033;

/// The quick start with its `[approvals]` table's body replaced by `approvals`.
fn config(approvals: &str) -> String {
    let quickstart = quickstart_config();
    let table = "[approvals]\nvia = \"operator\"\ntimeout_s = 120\n";
    assert!(quickstart.contains(table), "the quick start's [approvals] changed shape");
    quickstart.replace(table, &format!("[approvals]\n{approvals}\n"))
}

/// The destructive write rbac asks about.
fn destructive(path: &str) -> Value {
    json!({ "name": "write_workspace_file", "arguments": { "path": path, "content": "DROP TABLE sales" } })
}

/// Make the call as the engineer in the background; its JSON-RPC response.
fn call_in_background(warden: &Arc<Warden>, path: &str) -> tokio::task::JoinHandle<Value> {
    let (warden, params) = (Arc::clone(warden), destructive(path));
    tokio::spawn(async move {
        let auth = format!("Bearer {ENGINEER}");
        warden.modern(&[("authorization", &auth)], 1, "tools/call", params).await.json()
    })
}

/// `warden approvals ARGS` against the gateway, as `key`: exit code, output.
fn approvals(warden: &Warden, key: &str, args: &[&str]) -> (Option<i32>, String) {
    warden.control(key, &[&["approvals"][..], args].concat())
}

/// The id of the one call waiting, once `warden approvals list` shows it.
async fn waiting_id(warden: &Warden) -> String {
    for _ in 0..100 {
        let (code, text) = approvals(warden, OPS, &["list", "--json"]);
        assert_eq!(code, Some(0), "{text}");
        let listed: Value = serde_json::from_str(&text).unwrap();
        if let Some(ask) = listed["pending"].as_array().and_then(|p| p.first()) {
            assert_eq!(ask["subject"], ENGINEER, "{ask}");
            assert_eq!((ask["server"].as_str(), ask["target"].as_str()), (Some("demo"), Some("write_workspace_file")));
            assert!(ask["prompt"].as_str().unwrap().contains("destructive"), "{ask}");
            return ask["id"].as_str().unwrap().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no call came to wait for approval; log:\n{}", warden.log());
}

fn decisions(warden: &Warden) -> Vec<Value> {
    let text = std::fs::read_to_string(warden.dir.path().join("audit/warden.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

/// The audit records of `kind` satisfying `keep`, once there is one (the
/// quick start's log is written in batches).
async fn recorded(warden: &Warden, keep: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        if let Some(found) = decisions(warden).into_iter().find(|r| keep(r)) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such record: {:?}", decisions(warden));
}

#[tokio::test]
async fn an_operator_approves_a_waiting_call_and_it_runs_once() {
    let warden = Arc::new(Warden::start(&config("via = \"operator\"\ntimeout_s = 60")));
    let call = call_in_background(&warden, "approved.txt");
    let id = waiting_id(&warden).await;
    // Only the admin role sees or answers the queue.
    for args in [&["list"][..], &["approve", &id], &["deny", &id]] {
        let (code, text) = approvals(&warden, ENGINEER, args);
        assert!(code == Some(2) && text.contains("403"), "{args:?}: {text}");
    }
    let (code, text) = approvals(&warden, OPS, &["list"]);
    assert!(code == Some(0) && text.contains(&id) && text.contains("DROP TABLE sales"), "{text}");
    let (code, text) = approvals(&warden, OPS, &["approve", &id, "--reason", "planned migration"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("approved: demo-acme-engineer wants demo/write_workspace_file"), "{text}");
    let answer = call.await.unwrap();
    assert!(answer.get("error").is_none(), "{answer}");
    assert_eq!(std::fs::read_to_string(warden.dir.path().join("workspace/approved.txt")).unwrap(), "DROP TABLE sales");
    // Used once: the id answers nothing now.
    let (code, text) = approvals(&warden, OPS, &["approve", &id]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("no call waits for approval"), "{text}");

    let decision = recorded(&warden, |r| r["kind"] == "decision" && r["approval"].is_object()).await;
    assert_eq!(decision["outcome"], "allowed", "{decision}");
    assert_eq!(
        decision["approval"],
        json!({ "id": id, "via": "operator", "approved": true, "by": OPS, "reason": "planned migration" })
    );
    let action = recorded(&warden, |r| r["kind"] == "control" && r["action"] == "approve-call").await;
    assert_eq!(action["control"], format!("approval:{id}"));
    assert_eq!(action["subject"], OPS);
    assert_eq!(action["detail"]["subject"], ENGINEER);
}

#[tokio::test]
async fn a_denied_or_unanswered_call_is_refused_and_never_runs() {
    let warden = Arc::new(Warden::start(&config("via = \"operator\"\ntimeout_s = 2")));
    let call = call_in_background(&warden, "denied.txt");
    let id = waiting_id(&warden).await;
    let (code, text) = approvals(&warden, OPS, &["deny", &id, "--reason", "not during the freeze"]);
    assert_eq!(code, Some(0), "{text}");
    let refused = call.await.unwrap();
    assert_eq!(refused["error"]["code"], APPROVAL_DENIED, "{refused}");
    assert_eq!(refused["error"]["data"]["by"], OPS, "{refused}");
    assert_eq!(refused["error"]["data"]["reason"], "not during the freeze", "{refused}");
    assert!(!warden.dir.path().join("workspace/denied.txt").exists());

    // A client that sent a progress token hears that the call waits.
    let with_token = {
        let warden = Arc::clone(&warden);
        tokio::spawn(async move {
            let mut params = destructive("progress.txt");
            params["_meta"] = json!({
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "progressToken": "p-1",
            });
            let headers = [
                ("authorization", "Bearer demo-acme-engineer"),
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "write_workspace_file"),
            ];
            let message = json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params });
            warden.post(&headers, &message).await.messages()
        })
    };
    let id = waiting_id(&warden).await;
    approvals(&warden, OPS, &["deny", &id]);
    let messages = with_token.await.unwrap();
    let progress = messages.iter().find(|m| m["method"] == "notifications/progress").expect("a progress notification");
    assert_eq!(progress["params"]["progressToken"], "p-1", "{messages:?}");
    assert!(progress["params"]["message"].as_str().unwrap().contains(&id), "{messages:?}");
    assert_eq!(messages.last().unwrap()["error"]["code"], APPROVAL_DENIED, "{messages:?}");

    // Nobody answers: denied when timeout_s passes.
    let refused = call_in_background(&warden, "expired.txt").await.unwrap();
    assert_eq!(refused["error"]["code"], APPROVAL_DENIED, "{refused}");
    assert_eq!(refused["error"]["data"]["by"], "timeout", "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("nobody approved it in time"), "{refused}");
    assert!(!warden.dir.path().join("workspace/expired.txt").exists());
    let expired = recorded(&warden, |r| r["outcome"] == "approval-expired").await;
    assert_eq!(expired["code"], APPROVAL_DENIED);
    let denied = recorded(&warden, |r| r["outcome"] == "approval-denied").await;
    assert_eq!(denied["approval"]["by"], OPS);
}

#[tokio::test]
async fn with_separate_approvers_nobody_approves_their_own_call() {
    // The engineer holds the admin role too here.
    let text = config("separate_approver = true\ntimeout_s = 60")
        .replace("roles = [\"engineer\"]", "roles = [\"engineer\", \"warden-admin\"]");
    let warden = Arc::new(Warden::start(&text));
    let call = call_in_background(&warden, "separate.txt");
    let id = waiting_id(&warden).await;
    let (code, text) = approvals(&warden, ENGINEER, &["approve", &id]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("403") && text.contains("may not approve its own call"), "{text}");
    let (code, text) = approvals(&warden, OPS, &["approve", &id]);
    assert_eq!(code, Some(0), "{text}");
    assert!(call.await.unwrap().get("error").is_none());
    let refused = recorded(&warden, |r| r["kind"] == "control" && r["outcome"] == "failed").await;
    assert_eq!((refused["subject"].as_str(), refused["action"].as_str()), (Some(ENGINEER), Some("approve-call")));
}

#[tokio::test]
async fn a_client_that_can_elicit_is_asked_itself_in_both_eras() {
    for mode in ["legacy", "2026-07-28"] {
        client_asked(mode).await;
    }
}

async fn client_asked(mode: &str) {
    let warden = Warden::start(&config("via = \"auto\""));
    let client = |path: &str, answer: &str| {
        let arguments = json!({ "path": path, "content": "DROP TABLE sales" }).to_string();
        let output = Command::new(peers().join("venv/bin/python"))
            .arg(root().join("tests/e2e/approval_client.py"))
            .args([&warden.url, ENGINEER, "write_workspace_file", &arguments, answer, mode])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{mode}: {text}{}", String::from_utf8_lossy(&output.stderr));
        text
    };
    let approved = client("elicited.txt", "approve");
    let asked = approved.lines().find(|l| l.starts_with("asked ")).expect("the client was asked");
    for part in ["demo-acme-engineer", "write_workspace_file", "demo", "rbac", "destructive", "DROP TABLE sales"] {
        assert!(asked.contains(part), "{mode}: {part}: {asked}");
    }
    assert!(approved.lines().last().unwrap().starts_with("result "), "{mode}: {approved}");
    assert!(warden.dir.path().join("workspace/elicited.txt").exists());

    for (path, answer) in [("declined.txt", "decline"), ("refused.txt", "refuse"), ("cancelled.txt", "cancel")] {
        let refused = client(path, answer);
        let last = refused.lines().last().unwrap();
        assert!(last.starts_with(&format!("refused {APPROVAL_DENIED} ")), "{mode} {answer}: {refused}");
        assert!(!warden.dir.path().join("workspace").join(path).exists(), "{answer}: the write never ran");
    }
    let decision =
        recorded(&warden, |r| r["approval"]["via"] == "elicitation" && r["approval"]["approved"] == true).await;
    assert_eq!(decision["approval"]["by"], ENGINEER);
}

/// A 2026-07-28 tools/call of the destructive write that declares
/// elicitation, with `extra` params (`requestState`, `inputResponses`).
async fn modern_write(warden: &Warden, content: &str, extra: Value) -> Value {
    let mut params = json!({
        "name": "write_workspace_file",
        "arguments": { "path": "state.txt", "content": content },
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": { "elicitation": {} },
        },
    });
    for (key, value) in extra.as_object().into_iter().flatten() {
        params[key] = value.clone();
    }
    let headers = [
        ("authorization", "Bearer demo-acme-engineer"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "write_workspace_file"),
    ];
    warden.post(&headers, &json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params })).await.json()
}

#[tokio::test]
async fn an_input_required_round_is_bound_to_its_request_and_used_once() {
    let warden = Warden::start(&config("via = \"auto\""));
    let asked = modern_write(&warden, "DROP TABLE sales", json!({})).await;
    assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    let (key, question) = asked["result"]["inputRequests"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(question["method"], "elicitation/create", "{asked}");
    assert!(question["params"]["message"].as_str().unwrap().contains("write_workspace_file"), "{asked}");
    let state = asked["result"]["requestState"].clone();
    let yes = json!({ key.clone(): { "action": "accept", "content": { "approve": true } } });

    // Approved with other arguments: refused, and nothing is written.
    let changed =
        modern_write(&warden, "DROP TABLE customers", json!({ "requestState": state, "inputResponses": yes })).await;
    assert_eq!(changed["error"]["code"], -32602, "{changed}");
    assert!(changed["error"]["message"].as_str().unwrap().contains("not the request that asked"), "{changed}");
    // An altered state does not open.
    let mut altered = state.as_str().unwrap().to_owned().into_bytes();
    let at = altered.len() - 3;
    altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
    let altered = String::from_utf8(altered).unwrap();
    let forged =
        modern_write(&warden, "DROP TABLE sales", json!({ "requestState": altered, "inputResponses": yes })).await;
    assert_eq!(forged["error"]["code"], -32602, "{forged}");
    assert!(forged["error"]["message"].as_str().unwrap().contains("was not issued to you"), "{forged}");
    assert!(!warden.dir.path().join("workspace/state.txt").exists());

    // The real retry runs the call, once; replaying it runs nothing.
    let done = modern_write(&warden, "DROP TABLE sales", json!({ "requestState": state, "inputResponses": yes })).await;
    assert!(done["result"]["content"].is_array(), "{done}");
    assert_eq!(std::fs::read_to_string(warden.dir.path().join("workspace/state.txt")).unwrap(), "DROP TABLE sales");
    std::fs::remove_file(warden.dir.path().join("workspace/state.txt")).unwrap();
    let replayed =
        modern_write(&warden, "DROP TABLE sales", json!({ "requestState": state, "inputResponses": yes })).await;
    assert_eq!(replayed["error"]["code"], -32602, "{replayed}");
    assert!(replayed["error"]["message"].as_str().unwrap().contains("already used"), "{replayed}");
    assert!(!warden.dir.path().join("workspace/state.txt").exists(), "a replay ran nothing");
    // Declined: refused.
    let asked = modern_write(&warden, "DROP TABLE sales", json!({})).await;
    let no = json!({ key.clone(): { "action": "decline" } });
    let state = asked["result"]["requestState"].clone();
    let declined =
        modern_write(&warden, "DROP TABLE sales", json!({ "requestState": state, "inputResponses": no })).await;
    assert_eq!(declined["error"]["code"], APPROVAL_DENIED, "{declined}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_round_asked_on_one_replica_is_redeemed_on_another() {
    let redis = Redis::start().await;
    let state = format!("[state]\nredis = \"{}\"\ntimeout_ms = 300\n", redis.url());
    let replicas: Vec<Warden> = (0..2)
        .map(|_| Warden::start(&config("via = \"auto\"").replace("[state]\nfile = \"{dir}/state.json\"\n", &state)))
        .collect();
    let asked = modern_write(&replicas[0], "DROP TABLE sales", json!({})).await;
    assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    let state = asked["result"]["requestState"].clone();
    let yes = json!({ "warden-approval": { "action": "accept", "content": { "approve": true } } });
    let done =
        modern_write(&replicas[1], "DROP TABLE sales", json!({ "requestState": state, "inputResponses": yes })).await;
    assert!(done["result"]["content"].is_array(), "{done}");
    // Used on the second, so not again on the first.
    let again =
        modern_write(&replicas[0], "DROP TABLE sales", json!({ "requestState": state, "inputResponses": yes })).await;
    assert!(again["error"]["message"].as_str().unwrap().contains("already used"), "{again}");
}
