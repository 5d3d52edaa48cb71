//! Operator controls through the real gateway: kill switches pulled while
//! the official Python MCP client is connected (it hears `list_changed` in
//! both eras, the tool is gone from its list and its call is refused with
//! the switch's reason), switches that survive a restart and hold on a
//! second replica sharing a real `redis-server`, a switched-off plugin that
//! fails closed, and the admin surface: the admin role required, bad
//! requests listed, every action audited with who took it.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use e2e::{Scratch, Warden, bin, peers, peers::Redis, quickstart_config, root, tool_names};
use hyper::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const ENGINEER: &str = "demo-acme-engineer";
const ANALYST: &str = "demo-acme-analyst";
/// Holds the admin role (and nothing the chain knows).
const OPS: &str = "demo-ops";

const SWITCHED_OFF: i64 = -32030;

/// The quick start (demo upstream, the four reference policies, its
/// operator key), with `state` as its `[state]` table if given.
fn config(state: &str) -> String {
    let quickstart = quickstart_config();
    assert!(quickstart.contains("[state]\nfile = \"{dir}/state.json\"\n"), "the quick start's [state] changed shape");
    match state {
        "" => quickstart,
        state => quickstart.replace("[state]\nfile = \"{dir}/state.json\"\n", state),
    }
}

/// POST a control request as the holder of `key`.
async fn control(warden: &Warden, key: &str, action: &str, body: Value) -> e2e::Reply {
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    warden.send_to(&warden.admin(&format!("/admin/{action}")), Method::POST, &headers, &body.to_string()).await
}

/// A stateless tools/call as the holder of `key`; the JSON-RPC response.
async fn call(warden: &Warden, key: &str, tool: &str, arguments: Value) -> Value {
    let auth = format!("Bearer {key}");
    warden
        .modern(&[("authorization", &auth)], 1, "tools/call", json!({ "name": tool, "arguments": arguments }))
        .await
        .json()
}

async fn tools(warden: &Warden, key: &str) -> Vec<String> {
    let auth = format!("Bearer {key}");
    tool_names(&warden.modern(&[("authorization", &auth)], 1, "tools/list", json!({})).await.json())
}

/// The audit records of `kind` that `keep` keeps, once there are at least
/// `count` (the quick start's log is written in batches), or after 5 s.
async fn audit_records(warden: &Warden, kind: &str, count: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let read = || {
        let text = std::fs::read_to_string(warden.dir.path().join("audit/warden.jsonl")).unwrap_or_default();
        let records = text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok());
        records.filter(|r| r["kind"] == kind && keep(r)).collect::<Vec<_>>()
    };
    for _ in 0..100 {
        let records = read();
        if records.len() >= count {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read()
}

/// Run the Python client (`tests/e2e/kill_switch_client.py`) against `url`
/// in `mode`; once it listens for changes, run `pull`; its output lines.
async fn while_connected<F: std::future::Future<Output = ()>>(
    url: &str,
    mode: &str,
    tool: &str,
    arguments: Value,
    pull: impl FnOnce() -> F,
) -> Vec<String> {
    let mut child = tokio::process::Command::new(peers().join("venv/bin/python"))
        .arg(root().join("tests/e2e/kill_switch_client.py"))
        .args([url, ENGINEER, mode, tool, &arguments.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the Python client starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let ready = line == "ready";
            seen.push(line);
            if ready {
                return true;
            }
        }
        false
    };
    let ready = tokio::time::timeout(Duration::from_secs(60), read).await.unwrap_or(false);
    if !ready {
        let output = child.wait_with_output().await.unwrap();
        panic!("the client never listened: {seen:?}\n{}", String::from_utf8_lossy(&output.stderr));
    }
    pull().await;
    let rest = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), rest).await.expect("the client finished");
    let output = child.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{seen:?}\n{}", String::from_utf8_lossy(&output.stderr));
    seen
}

/// The tool names on a `tools …` line.
fn listed(line: &str) -> Vec<String> {
    serde_json::from_str(line.strip_prefix("tools ").unwrap_or_else(|| panic!("not a tools line: {line}"))).unwrap()
}

#[tokio::test]
async fn a_kill_switch_reaches_a_connected_client_in_both_eras() {
    let warden = Warden::start(&config(""));
    for mode in ["legacy", "2026-07-28"] {
        let arguments = json!({ "path": "report.txt", "content": "q3" });
        let lines = while_connected(&warden.url, mode, "write_workspace_file", arguments, || async {
            let set = control(
                &warden,
                OPS,
                "kill",
                json!({ "kind": "tool", "pattern": "demo/write_*", "reason": "writes corrupt the workspace" }),
            )
            .await;
            assert_eq!(set.status, 200, "{set:?}");
            let answer: Value = serde_json::from_str(&set.body).unwrap();
            assert_eq!(answer["now_off"], json!(["demo/write_workspace_file"]), "{answer}");
        })
        .await;
        assert_eq!(lines.len(), 5, "{mode}: {lines:?}");
        assert!(listed(&lines[0]).contains(&"write_workspace_file".to_owned()), "{mode}: {lines:?}");
        assert_eq!(lines[2], "changed", "{mode}: {lines:?}");
        let after = listed(&lines[3]);
        assert!(!after.contains(&"write_workspace_file".to_owned()), "{mode}: {lines:?}");
        assert!(after.contains(&"query_analytics_db".to_owned()), "only what the switch names is gone: {lines:?}");
        let refusal = &lines[4];
        assert!(refusal.starts_with(&format!("refused {SWITCHED_OFF} ")), "{mode}: {refusal}");
        assert!(refusal.contains("writes corrupt the workspace") && refusal.contains("tool:demo/write_*"), "{refusal}");
        assert!(!warden.dir.path().join("workspace/report.txt").exists(), "the write never ran");

        let revived = control(&warden, OPS, "revive", json!({ "kind": "tool", "pattern": "demo/write_*" })).await;
        assert_eq!(revived.status, 200, "{revived:?}");
    }
    // Revived: the tool is back, and the call reaches the upstream.
    assert!(tools(&warden, ENGINEER).await.contains(&"write_workspace_file".to_owned()));
    let written =
        call(&warden, ENGINEER, "write_workspace_file", json!({ "path": "after.txt", "content": "ok" })).await;
    assert!(written.get("error").is_none(), "{written}");

    // The refusals are decisions of their own in the audit log.
    let refused = audit_records(&warden, "decision", 2, |d| d["outcome"] == "switched-off").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0]["target"], "write_workspace_file");
    assert_eq!(refused[0]["code"], SWITCHED_OFF);
    assert!(refused[0]["reason"].as_str().unwrap().contains("set by demo-ops"), "{}", refused[0]);
    assert!(refused[0].get("steps").is_none(), "no plugin ran: {}", refused[0]);
}

#[tokio::test]
async fn switches_survive_a_restart_and_the_cli_sets_lists_and_removes_them() {
    let state = Scratch::new("state");
    let file = state.path().join("state.json");
    let extra = format!("[state]\nfile = \"{}\"\n", file.display());
    let warden = Warden::start(&config(&extra));
    let (code, text) = warden.control(OPS, &["kill", "server", "demo", "--reason", "upstream compromised"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("server:demo") && text.contains("demo/query_analytics_db"), "{text}");
    assert!(tools(&warden, ENGINEER).await.is_empty(), "a switched-off server lists nothing");
    drop(warden);

    // A new process on the same state file: still off.
    let warden = Warden::start(&config(&extra));
    assert!(tools(&warden, ENGINEER).await.is_empty(), "the switch outlived the restart");
    let refused = call(&warden, ANALYST, "query_analytics_db", json!({ "query": "SELECT 1" })).await;
    assert_eq!(refused["error"]["code"], SWITCHED_OFF, "{refused}");
    assert_eq!(refused["error"]["data"]["switch"], "server:demo", "{refused}");
    assert_eq!(refused["error"]["data"]["reason"], "upstream compromised", "{refused}");
    let prompts =
        warden.modern(&[("authorization", &format!("Bearer {ENGINEER}"))], 2, "prompts/list", json!({})).await.json();
    assert_eq!(prompts["result"]["prompts"], json!([]), "its prompts are gone too: {prompts}");

    let (code, text) = warden.control(OPS, &["switches"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("server:demo") && text.contains("demo-ops") && text.contains("upstream compromised"),
        "{text}"
    );
    let (code, text) = warden.control(OPS, &["revive", "server", "demo", "--reason", "patched"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = warden.control(OPS, &["revive", "server", "demo"]);
    assert_eq!(code, Some(2), "nothing left to revive: {text}");
    assert!(text.contains("404") && text.contains("no kill switch server:demo"), "{text}");
    let served = call(&warden, ANALYST, "query_analytics_db", json!({ "query": "SELECT 1 AS one" })).await;
    assert!(served.get("error").is_none(), "{served}");
}

#[tokio::test]
async fn a_switched_off_plugin_fails_closed_and_records_why() {
    let warden = Warden::start(&config(""));
    let set =
        control(&warden, OPS, "kill", json!({ "kind": "plugin", "pattern": "tenant-filter", "reason": "leaks rows" }))
            .await;
    assert_eq!(set.status, 200, "{set:?}");
    assert_eq!(serde_json::from_str::<Value>(&set.body).unwrap()["now_off"], json!(["tenant-filter"]));
    // tenant-filter reads results; off, it denies them (it is not fail_open).
    let refused = call(&warden, ANALYST, "query_analytics_db", json!({ "query": "SELECT * FROM sales" })).await;
    assert_eq!(refused["error"]["code"], -32010, "{refused}");
    assert_eq!(refused["error"]["data"]["plugin"], "tenant-filter", "{refused}");
    assert_eq!(refused["error"]["data"]["code"], "policy-failed", "{refused}");
    let reason = refused["error"]["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("switched off by kill switch plugin:tenant-filter: leaks rows"), "{reason}");
    let decision = audit_records(&warden, "decision", 1, |d| d["outcome"] == "result-denied").await.pop().unwrap();
    let step = decision["steps"].as_array().unwrap().iter().find(|s| s["plugin"] == "tenant-filter").unwrap();
    assert_eq!(step["verdict"], "failed", "{decision}");

    let revived = control(&warden, OPS, "revive", json!({ "kind": "plugin", "pattern": "tenant-filter" })).await;
    assert_eq!(revived.status, 200, "{revived:?}");
    let served = call(&warden, ANALYST, "query_analytics_db", json!({ "query": "SELECT * FROM sales" })).await;
    assert!(served.get("error").is_none(), "{served}");
    assert!(!served.to_string().contains("globex"), "tenant-filter runs again: {served}");
}

#[tokio::test]
async fn the_control_plane_wants_the_admin_role_checks_requests_and_audits_each_action() {
    let warden = Warden::start(&config(""));
    let body = json!({ "kind": "tool", "pattern": "demo/*", "reason": "x" });
    for action in ["kill", "revive"] {
        let refused = control(&warden, ENGINEER, action, body.clone()).await;
        assert_eq!(refused.status, 403, "{action}: {refused:?}");
    }
    let listed = warden
        .send_to(&warden.admin("/admin/switches"), Method::GET, &[("authorization", &format!("Bearer {ANALYST}"))], "")
        .await;
    assert_eq!(listed.status, 403, "{listed:?}");
    assert!(tools(&warden, ENGINEER).await.contains(&"query_analytics_db".to_owned()), "nothing was switched off");

    // Every problem of a bad request at once.
    let bad = control(&warden, OPS, "kill", json!({ "kind": "gadget", "colour": "red" })).await;
    assert_eq!(bad.status, 400, "{bad:?}");
    let message = serde_json::from_str::<Value>(&bad.body).unwrap()["error"]["message"].as_str().unwrap().to_owned();
    for problem in ["colour: unknown field", "kind: \"gadget\" is not one of tool, resource", "pattern: required"] {
        assert!(message.contains(problem), "{problem}: {message}");
    }
    let bad = control(&warden, OPS, "kill", json!({ "kind": "tool", "pattern": "write_file", "reason": "x" })).await;
    assert!(bad.status == 400 && bad.body.contains("server/name"), "{bad:?}");
    let bad = control(&warden, OPS, "kill", json!({ "kind": "tool", "pattern": "demo/x" })).await;
    assert!(bad.status == 400 && bad.body.contains("reason: required"), "{bad:?}");
    let bad = warden
        .send_to(&warden.admin("/admin/kill"), Method::POST, &[("authorization", &format!("Bearer {OPS}"))], "{")
        .await;
    assert!(bad.status == 400 && bad.body.contains("not JSON"), "{bad:?}");

    // A resource switch hides the resource and refuses its read.
    let uri = "demo://schema";
    let set = control(
        &warden,
        OPS,
        "kill",
        json!({ "kind": "resource", "pattern": format!("demo/{uri}"), "reason": "stale" }),
    )
    .await;
    assert_eq!(set.status, 200, "{set:?}");
    let auth = format!("Bearer {ENGINEER}");
    let resources = warden.modern(&[("authorization", &auth)], 1, "resources/list", json!({})).await.json();
    assert_eq!(resources["result"]["resources"], json!([]), "{resources}");
    let read = warden.modern(&[("authorization", &auth)], 2, "resources/read", json!({ "uri": uri })).await.json();
    assert_eq!(read["error"]["code"], SWITCHED_OFF, "{read}");
    let revived =
        control(&warden, OPS, "revive", json!({ "kind": "resource", "pattern": format!("demo/{uri}") })).await;
    assert_eq!(revived.status, 200, "{revived:?}");
    let missing =
        control(&warden, OPS, "revive", json!({ "kind": "resource", "pattern": format!("demo/{uri}") })).await;
    assert_eq!(missing.status, 404, "{missing:?}");

    // Each action is on the record with its actor, including the refused
    // revive; the refused requests above changed nothing and left none.
    let records = audit_records(&warden, "control", 3, |_| true).await;
    let actions: Vec<(String, String, String, String)> = records
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (text("action"), text("control"), text("subject"), text("outcome"))
        })
        .collect();
    let control = format!("resource:demo/{uri}");
    let expected = [("kill", "done"), ("revive", "done"), ("revive", "absent")]
        .map(|(a, o)| (a.to_owned(), control.clone(), OPS.to_owned(), o.to_owned()));
    assert_eq!(actions, expected);
    let output = Command::new(bin("warden"))
        .args(["audit", "verify"])
        .arg(warden.dir.path().join("audit/warden.jsonl"))
        .arg("--key")
        .arg(warden.dir.path().join("audit/warden.key.pub"))
        .output()
        .unwrap();
    assert!(output.status.success(), "the control records are links of the chain: {output:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_switch_set_on_one_replica_holds_on_another_by_its_next_call() {
    let redis = Redis::start().await;
    let shared = format!("[state]\nredis = \"{}\"\ntimeout_ms = 300\n", redis.url());
    let first = Warden::start(&config(&shared));
    let second = Warden::start(&config(&shared));
    let query = json!({ "query": "SELECT count(*) AS n FROM sales" });
    assert!(call(&second, ANALYST, "query_analytics_db", query.clone()).await.get("error").is_none());

    // Pulled on the first, while a client listens on the second.
    let arguments = json!({ "query": "SELECT 1" });
    let lines = while_connected(&second.url, "legacy", "query_analytics_db", arguments, || async {
        let set =
            control(&first, OPS, "kill", json!({ "kind": "tool", "pattern": "*/query_*", "reason": "runaway cost" }))
                .await;
        assert_eq!(set.status, 200, "{set:?}");
        // The very next call on the other replica is refused.
        let refused = call(&second, ANALYST, "query_analytics_db", json!({ "query": "SELECT 2" })).await;
        assert_eq!(refused["error"]["code"], SWITCHED_OFF, "{refused}");
    })
    .await;
    assert_eq!(lines[2], "changed", "the second replica's client heard of it: {lines:?}");
    assert!(!listed(&lines[3]).contains(&"query_analytics_db".to_owned()), "{lines:?}");
    assert!(lines[4].starts_with(&format!("refused {SWITCHED_OFF} ")), "{lines:?}");

    // Revived on the second: the first serves again at once.
    let revived = control(&second, OPS, "revive", json!({ "kind": "tool", "pattern": "*/query_*" })).await;
    assert_eq!(revived.status, 200, "{revived:?}");
    let served = call(&first, ANALYST, "query_analytics_db", query).await;
    assert!(served.get("error").is_none(), "{served}");
    // And a third replica started now finds the state the others left.
    let set =
        control(&first, OPS, "kill", json!({ "kind": "server", "pattern": "demo", "reason": "maintenance" })).await;
    assert_eq!(set.status, 200, "{set:?}");
    let third = Warden::start(&config(&shared));
    assert!(tools(&third, ENGINEER).await.is_empty());
}

#[test]
fn a_state_file_that_cannot_be_read_stops_the_start_with_exit_64() {
    let dir = Scratch::new("badstate");
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{\"generation\": 1, \"controls\": {\"switches\": ").unwrap();
    let config = config(&format!("[state]\nfile = \"{}\"\n", state.display()))
        .replace("{dir}", &dir.path().display().to_string())
        .replace("{demo}", &bin("warden-demo-upstream").display().to_string())
        .replace("{root}", &root().display().to_string());
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, config).unwrap();
    let output = e2e::serve_refused(&file);
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("state.file") && stderr.contains("not a Warden state file"), "{stderr}");
}

/// `[[deprecation]]` tables: send_email deprecated until a day far off,
/// read_secrets past its sunset (`after` for it: refuse or warn).
fn deprecations(after: &str) -> String {
    format!(
        "[[deprecation]]\ntools = [\"demo/send_email\"]\nmessage = \"use notify_team\"\nsunset = 2999-01-31\n\n\
         [[deprecation]]\ntools = [\"demo/read_*\"]\nmessage = \"secrets moved to the vault\"\nsunset = \"2020-06-30T12:00:00Z\"\n\
         after_sunset = \"{after}\"\n"
    )
}

#[tokio::test]
async fn deprecated_tools_carry_a_warning_and_retire_at_their_sunset() {
    let warden = Warden::start(&format!("{}\n{}", config(""), deprecations("refuse")));
    let listed = {
        let auth = format!("Bearer {ENGINEER}");
        warden.modern(&[("authorization", &auth)], 1, "tools/list", json!({})).await.json()
    };
    let tools = listed["result"]["tools"].as_array().unwrap();
    let send = tools.iter().find(|t| t["name"] == "send_email").expect("still listed");
    let warning = json!({ "message": "use notify_team", "sunset": "2999-01-31T00:00:00Z" });
    assert_eq!(send["_meta"]["dev.warden/deprecation"], warning, "{send}");
    assert!(tools.iter().all(|t| t["name"] != "read_secrets"), "a retired tool is not listed: {listed}");

    let sent = call(&warden, ENGINEER, "send_email", json!({ "to": "a@acme.test", "subject": "s", "body": "b" })).await;
    assert!(sent.get("error").is_none(), "{sent}");
    assert_eq!(sent["result"]["_meta"]["dev.warden/deprecation"], warning, "{sent}");
    let retired = call(&warden, ENGINEER, "read_secrets", json!({ "name": "db" })).await;
    assert_eq!(retired["error"]["code"], -32032, "{retired}");
    assert_eq!(retired["error"]["data"]["message"], "secrets moved to the vault", "{retired}");
    assert_eq!(retired["error"]["data"]["sunset"], "2020-06-30T12:00:00Z", "{retired}");
    let records =
        audit_records(&warden, "decision", 2, |d| d["target"] == "send_email" || d["outcome"] == "retired").await;
    let sent = records.iter().find(|d| d["target"] == "send_email").unwrap();
    assert_eq!(sent["deprecation"], "deprecated, sunset 2999-01-31T00:00:00Z: use notify_team");
    assert!(records.iter().any(|d| d["outcome"] == "retired" && d["code"] == -32032), "{records:?}");

    // Reloaded to only warn after the sunset: served again, with the warning.
    let file = warden.dir.path().join("warden.toml");
    let text = std::fs::read_to_string(&file).unwrap().replace("after_sunset = \"refuse\"", "after_sunset = \"warn\"");
    std::fs::write(&file, text).unwrap();
    let auth = format!("Bearer {OPS}");
    let reloaded = warden.send_to(&warden.admin("/admin/reload"), Method::POST, &[("authorization", &auth)], "").await;
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    assert_eq!(serde_json::from_str::<Value>(&reloaded.body).unwrap()["limits"]["deprecations"], 2);
    let served = call(&warden, ENGINEER, "read_secrets", json!({ "name": "db" })).await;
    assert!(served.get("error").is_none(), "{served}");
    assert_eq!(served["result"]["_meta"]["dev.warden/deprecation"]["sunset"], "2020-06-30T12:00:00Z");
}

#[test]
fn bad_deprecations_are_listed_with_their_paths() {
    let dir = Scratch::new("baddeprecation");
    let bad = "[[deprecation]]\ntools = [\"send_email\"]\nsunset = \"soon\"\nafter_sunset = \"maybe\"\n";
    let config = format!("{}\n{bad}", config(""))
        .replace("{dir}", &dir.path().display().to_string())
        .replace("{demo}", &bin("warden-demo-upstream").display().to_string())
        .replace("{root}", &root().display().to_string());
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, config).unwrap();
    let output = Command::new(bin("warden")).args(["check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(64), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in [
        "deprecation[0].message: is required",
        "deprecation[0].sunset: \"soon\" is not a date",
        "deprecation[0].after_sunset: \"maybe\"",
        "deprecation[0].tools: \"send_email\": a pattern is server/name",
    ] {
        assert!(stderr.contains(problem), "{problem}: {stderr}");
    }
}
