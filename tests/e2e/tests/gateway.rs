//! The built `warden` binary, black box: the quick-start story, the protocol
//! rules of both eras, and every bad input and upstream fault the gateway must
//! survive with a clear error.

use std::time::Duration;

use e2e::{Helper, Warden, bin, free_port, listening, quickstart_config, root, tool_names};
use hyper::Method;
use serde_json::{Value, json};

const ANALYST: &str = "demo-acme-analyst";
const ENGINEER: &str = "demo-acme-engineer";
const GLOBEX: &str = "demo-globex-analyst";

fn call_tool(name: &str, arguments: Value) -> Value {
    json!({ "name": name, "arguments": arguments })
}

fn error_code(response: &Value) -> i64 {
    response["error"]["code"].as_i64().unwrap_or_else(|| panic!("expected an error: {response}"))
}

/// Requests the demo upstream received, from its --record file.
fn recorded(warden: &Warden) -> Vec<Value> {
    let text = std::fs::read_to_string(warden.dir.path().join("record.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn recorded_calls(warden: &Warden) -> Vec<String> {
    recorded(warden).iter().filter(|r| r.to_string().contains("tools/call")).map(|r| r.to_string()).collect()
}

#[tokio::test]
async fn the_quick_start_story_holds_and_denied_calls_never_reach_the_upstream() {
    let warden = Warden::start(&quickstart_config());

    // The analyst sees only the query tool, and cannot call what it cannot see.
    let session = warden.initialize(ANALYST, "2025-11-25").await;
    let tools = warden.call(ANALYST, &session, 1, "tools/list", json!({})).await;
    assert_eq!(tool_names(&tools), ["query_analytics_db"]);
    let write = warden
        .call(
            ANALYST,
            &session,
            2,
            "tools/call",
            call_tool("write_workspace_file", json!({"path": "a", "content": "b"})),
        )
        .await;
    assert_eq!(error_code(&write), -32602);
    assert_eq!(write["error"]["message"], "unknown tool: write_workspace_file");

    // Its query comes back with acme rows only, the injection redacted.
    let query = warden
        .call(
            ANALYST,
            &session,
            3,
            "tools/call",
            call_tool("query_analytics_db", json!({"query": "SELECT * FROM sales"})),
        )
        .await;
    let rows = query["result"]["structuredContent"]["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["tenant"] == "acme"), "{query}");
    let text = query["result"].to_string();
    assert!(!text.contains("globex") && !text.contains("Ignore all previous instructions"), "{text}");
    assert!(text.contains("[redacted by warden]"), "{text}");

    // The engineer may write, but not after querying in the same session.
    let session = warden.initialize(ENGINEER, "2025-11-25").await;
    let tools = warden.call(ENGINEER, &session, 1, "tools/list", json!({})).await;
    assert!(tool_names(&tools).contains(&"write_workspace_file".to_owned()));
    warden
        .call(ENGINEER, &session, 2, "tools/call", call_tool("query_analytics_db", json!({"query": "SELECT 1"})))
        .await;
    let write = warden
        .call(
            ENGINEER,
            &session,
            3,
            "tools/call",
            call_tool("write_workspace_file", json!({"path": "out.csv", "content": "x"})),
        )
        .await;
    assert_eq!(error_code(&write), -32010, "{write}");
    assert_eq!(write["error"]["data"]["plugin"], "chain-detect");
    assert_eq!(write["error"]["data"]["code"], "blocked-chain");

    // A destructive write by the engineer in a fresh session waits for an
    // operator, who denies it here.
    let fresh = warden.initialize(ENGINEER, "2025-11-25").await;
    let ops = [("authorization", "Bearer demo-ops"), ("content-type", "application/json")];
    let (drop, asked) = tokio::join!(
        warden.call(
            ENGINEER,
            &fresh,
            1,
            "tools/call",
            call_tool("write_workspace_file", json!({"path": "n.txt", "content": "DROP TABLE sales"})),
        ),
        async {
            for _ in 0..200 {
                let listed = warden.send_to(&warden.admin("/admin/approvals"), hyper::Method::GET, &ops, "").await;
                let listed: Value = serde_json::from_str(&listed.body).unwrap();
                if let Some(ask) = listed["pending"].get(0) {
                    let id = ask["id"].as_str().unwrap();
                    let deny = json!({ "id": id, "reason": "not now" }).to_string();
                    let denied =
                        warden.send_to(&warden.admin("/admin/approvals/deny"), hyper::Method::POST, &ops, &deny).await;
                    assert_eq!(denied.status, 200, "{denied:?}");
                    return ask.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("the destructive write never waited for approval");
        }
    );
    assert!(asked["prompt"].as_str().unwrap().contains("destructive arguments"), "{asked}");
    assert_eq!(error_code(&drop), -32033, "{drop}");
    assert_eq!(drop["error"]["data"]["by"], "demo-ops", "{drop}");
    assert!(!warden.dir.path().join("workspace/n.txt").exists(), "the denied write never ran");
    // A harmless one goes through and really writes.
    let ok = warden
        .call(
            ENGINEER,
            &fresh,
            2,
            "tools/call",
            call_tool("write_workspace_file", json!({"path": "n.txt", "content": "hello"})),
        )
        .await;
    assert!(ok["result"].is_object(), "{ok}");
    assert_eq!(std::fs::read_to_string(warden.dir.path().join("workspace/n.txt")).unwrap(), "hello");

    // globex sees only globex.
    let session = warden.initialize(GLOBEX, "2025-11-25").await;
    let query = warden
        .call(
            GLOBEX,
            &session,
            1,
            "tools/call",
            call_tool("query_analytics_db", json!({"query": "SELECT * FROM sales"})),
        )
        .await;
    let rows = query["result"]["structuredContent"]["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["tenant"] == "globex"), "{query}");
    assert!(!query["result"].to_string().contains("acme"));

    // The upstream saw the allowed calls, and none of the denied ones.
    let calls = recorded_calls(&warden);
    assert_eq!(calls.iter().filter(|c| c.contains("query_analytics_db")).count(), 3, "{calls:#?}");
    let writes: Vec<&String> = calls.iter().filter(|c| c.contains("write_workspace_file")).collect();
    assert_eq!(writes.len(), 1, "only the allowed write arrives: {writes:#?}");
    assert!(writes[0].contains("hello"));
}

#[tokio::test]
async fn every_request_is_authenticated_and_sessions_belong_to_their_principal() {
    let warden = Warden::start(&quickstart_config());
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});

    let none = warden.post(&[], &list).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = warden.post(&[("authorization", "Bearer not-a-key")], &list).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));
    let malformed = warden.post(&[("authorization", "Basic abc")], &list).await;
    assert_eq!(malformed.status, 401);

    // A session is not a credential: the engineer cannot use the analyst's.
    let session = warden.initialize(ANALYST, "2025-11-25").await;
    let stolen =
        warden.post(&[("authorization", "Bearer demo-acme-engineer"), ("mcp-session-id", &session)], &list).await;
    assert_eq!(stolen.status, 404);
    // The owner still can.
    let own = warden.post(&[("authorization", "Bearer demo-acme-analyst"), ("mcp-session-id", &session)], &list).await;
    assert_eq!(own.status, 200);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_the_gateway_keeps_serving() {
    let config = quickstart_config().replace("path = \"/mcp\"", "path = \"/mcp\"\nmax_body_kib = 1");
    let warden = Warden::start(&config);
    let auth = ("authorization", "Bearer demo-acme-analyst");
    let json_headers = [("content-type", "application/json"), ("accept", "application/json, text/event-stream"), auth];

    let malformed = warden.send(Method::POST, &json_headers, "{not json").await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.json()["error"]["code"], -32700);

    let invalid = warden.send(Method::POST, &json_headers, "{\"jsonrpc\": \"1.0\", \"id\": 1}").await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.json()["error"]["code"], -32600);

    let text = warden
        .send(
            Method::POST,
            &[("content-type", "text/plain"), ("accept", "application/json, text/event-stream"), auth],
            "{}",
        )
        .await;
    assert_eq!(text.status, 415);

    let accept = warden
        .send(Method::POST, &[("content-type", "application/json"), ("accept", "application/json"), auth], "{}")
        .await;
    assert_eq!(accept.status, 406);

    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"pad": "x".repeat(4096)}});
    let too_large = warden.post(&[auth], &big).await;
    assert_eq!(too_large.status, 413);

    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let unknown_session = warden.post(&[auth, ("mcp-session-id", "no-such-session")], &list).await;
    assert_eq!(unknown_session.status, 404);
    let no_session = warden.post(&[auth], &list).await;
    assert_eq!(no_session.status, 400);

    let origin = warden.post(&[auth, ("origin", "https://evil.example.com")], &list).await;
    assert_eq!(origin.status, 403);
    let host = warden.post(&[auth, ("host", "evil.example.com")], &list).await;
    assert_eq!(host.status, 403);
    let loopback_origin = warden.post(&[auth, ("origin", "http://localhost:3000")], &list).await;
    assert_eq!(loopback_origin.status, 400, "a loopback origin passes the check (and then lacks a session)");

    let version = warden.post(&[auth, ("mcp-protocol-version", "2099-01-01")], &list).await;
    assert_eq!(version.status, 400);
    assert!(version.body.contains("unsupported MCP-Protocol-Version"), "{}", version.body);

    let put = warden.send(Method::PUT, &json_headers, "{}").await;
    assert_eq!(put.status, 405);

    // Still serving.
    let session = warden.initialize(ANALYST, "2025-11-25").await;
    let tools = warden.call(ANALYST, &session, 1, "tools/list", json!({})).await;
    assert_eq!(tool_names(&tools), ["query_analytics_db"]);
}

#[tokio::test]
async fn the_legacy_session_lifecycle() {
    let warden = Warden::start(&quickstart_config());
    let auth = ("authorization", "Bearer demo-acme-analyst");

    // Version negotiation: a legacy version is echoed, anything else gets the newest.
    for (asked, answered) in [("2025-03-26", "2025-03-26"), ("2025-06-18", "2025-06-18"), ("1999-01-01", "2025-11-25")]
    {
        let reply = warden
            .post(
                &[auth],
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
            )
            .await;
        assert_eq!(reply.json()["result"]["protocolVersion"], answered);
        let id = reply.header("mcp-session-id").unwrap();
        assert!(id.len() >= 32 && id.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{id}");
    }

    // Batches: only in 2025-03-26.
    let old = warden.initialize(ANALYST, "2025-03-26").await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/initialized"}
    ]);
    let reply = warden.post(&[auth, ("mcp-session-id", &old)], &batch).await;
    assert_eq!(reply.status, 200);
    let answers = reply.json();
    assert_eq!(answers.as_array().unwrap().len(), 2, "{answers}");
    assert_eq!(answers[1]["result"]["tools"][0]["name"], "query_analytics_db");
    let new = warden.initialize(ANALYST, "2025-11-25").await;
    let refused = warden.post(&[auth, ("mcp-session-id", &new)], &batch).await;
    assert_eq!(refused.status, 400);

    // Notifications and responses get 202.
    let note = warden
        .post(
            &[auth, ("mcp-session-id", &new)],
            &json!({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}),
        )
        .await;
    assert_eq!(note.status, 202);
    let answer =
        warden.post(&[auth, ("mcp-session-id", &new)], &json!({"jsonrpc": "2.0", "id": "x", "result": {}})).await;
    assert_eq!(answer.status, 202);

    // DELETE ends the session; it is then unknown.
    let deleted = warden.send(Method::DELETE, &[auth, ("mcp-session-id", &new)], "").await;
    assert_eq!(deleted.status, 204);
    let after =
        warden.post(&[auth, ("mcp-session-id", &new)], &json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})).await;
    assert_eq!(after.status, 404);
}

#[tokio::test]
async fn the_stateless_protocol_is_validated_in_order() {
    let warden = Warden::start(&quickstart_config());
    let auth = ("authorization", "Bearer demo-acme-analyst");

    let discover = warden.modern(&[auth], 1, "server/discover", json!({})).await;
    assert_eq!(discover.status, 200);
    let result = discover.json()["result"].clone();
    assert_eq!(result["supportedVersions"][0], "2026-07-28");
    assert!(result["supportedVersions"].as_array().unwrap().contains(&json!("2025-11-25")));
    assert_eq!(result["resultType"], "complete");

    let tools = warden.modern(&[auth], 2, "tools/list", json!({})).await.json();
    assert_eq!(tool_names(&tools), ["query_analytics_db"]);
    assert_eq!((tools["result"]["ttlMs"].as_i64(), tools["result"]["cacheScope"].as_str()), (Some(0), Some("private")));
    assert_eq!(tools["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "warden");

    // The call's Mcp-Name must match the body.
    let message = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
        "name": "query_analytics_db", "arguments": {"query": "SELECT 1"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let base = [auth, ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/call")];
    let mismatch = warden.post(&[&base[..], &[("mcp-name", "other_tool")]].concat(), &message).await;
    assert_eq!((mismatch.status, error_code(&mismatch.json())), (400, -32020));
    let ok = warden.post(&[&base[..], &[("mcp-name", "query_analytics_db")]].concat(), &message).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.json()["result"]["resultType"], "complete");

    // _meta missing → -32602; version header disagreeing → -32020; unknown version → -32022.
    let no_meta = warden
        .post(
            &[auth, ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")],
            &json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {}}),
        )
        .await;
    assert_eq!((no_meta.status, error_code(&no_meta.json())), (400, -32602));
    let v999 = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {"_meta": {
        "io.modelcontextprotocol/protocolVersion": "v999", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let header_mismatch =
        warden.post(&[auth, ("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")], &v999).await;
    assert_eq!((header_mismatch.status, error_code(&header_mismatch.json())), (400, -32020));
    let unsupported = warden.post(&[auth, ("mcp-protocol-version", "v999"), ("mcp-method", "tools/list")], &v999).await;
    assert_eq!((unsupported.status, error_code(&unsupported.json())), (400, -32022));
    assert_eq!(unsupported.json()["error"]["data"]["requested"], "v999");

    // Legacy methods are gone; GET and DELETE are not part of it.
    let initialize = warden.modern(&[auth], 7, "initialize", json!({})).await;
    assert_eq!((initialize.status, error_code(&initialize.json())), (404, -32601));
    let get = warden
        .send(Method::GET, &[auth, ("mcp-protocol-version", "2026-07-28"), ("accept", "text/event-stream")], "")
        .await;
    assert_eq!(get.status, 405);

    // Policies apply the same: a forbidden tool is unknown to the analyst.
    let denied =
        warden.modern(&[auth], 8, "tools/call", json!({"name": "write_workspace_file", "arguments": {}})).await;
    assert_eq!(error_code(&denied.json()), -32602);
}

#[tokio::test]
async fn upstream_faults_are_contained_and_named() {
    let http_port = free_port();
    let fake = root().join("tests/e2e/fakes/http_server.py");
    let _http_fake = Helper::spawn("python3", &[fake.to_str().unwrap(), &http_port.to_string()]);
    listening(http_port).await;
    let config = format!(
        r#"
[anonymous]
subject = "tester"

[[upstream]]
name = "flaky"
command = "python3"
args = ["{{root}}/tests/e2e/fakes/stdio_server.py"]
timeout_ms = 1500

[[upstream]]
name = "web"
url = "http://127.0.0.1:{http_port}/mcp"
timeout_ms = 1500

[[upstream]]
name = "missing"
command = "/nonexistent/mcp-server"

[[upstream]]
name = "nobody"
url = "http://127.0.0.1:{dead}/mcp"
"#,
        dead = free_port()
    );
    let warden = Warden::start(&config);
    let session = warden.initialize("", "2025-11-25").await;
    let call = |id: u64, name: &str| warden.call("", &session, id, "tools/call", call_tool(name, json!({"n": id})));

    // Upstreams that cannot start do not stop the others. Both fakes offer
    // `hang`, so in bare naming mode those two (only) get prefixes.
    let tools = warden.call("", &session, 1, "tools/list", json!({})).await;
    let names = tool_names(&tools);
    assert_eq!(
        names,
        ["echo", "crash", "flaky__hang", "log", "ask", "env", "ok", "garbage", "web__hang", "progress", "headers"]
    );
    assert!(warden.logged("tool \"hang\" is offered by several upstreams").await, "the collision is reported");

    let echo = call(2, "echo").await;
    assert_eq!(echo["result"]["content"][0]["text"], "{\"n\": 2}");

    // A stdio upstream that dies mid-call: a clear error, then it is restarted.
    let crashed = call(3, "crash").await;
    assert_eq!(error_code(&crashed), -32012, "{crashed}");
    let message = crashed["error"]["message"].as_str().unwrap();
    assert!(message.contains("upstream flaky") && message.contains("exited"), "{message}");
    let mut recovered = Value::Null;
    for attempt in 0..50 {
        recovered = call(100 + attempt, "echo").await;
        if recovered.get("result").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered.get("result").is_some(), "the upstream came back: {recovered}");

    // A stdio upstream that never answers: the call times out.
    let hung = call(4, "flaky__hang").await;
    assert_eq!(error_code(&hung), -32012);
    assert!(hung["error"]["message"].as_str().unwrap().contains("did not answer within 1500 ms"), "{hung}");

    // An HTTP upstream answering garbage, or hanging.
    let garbage = call(5, "garbage").await;
    assert_eq!(error_code(&garbage), -32012);
    assert!(
        garbage["error"]["message"].as_str().unwrap().contains("upstream web sent an invalid response"),
        "{garbage}"
    );
    let hung = call(6, "web__hang").await;
    assert_eq!(error_code(&hung), -32012);
    assert!(
        hung["error"]["message"].as_str().unwrap().contains("upstream web did not answer within 1500 ms"),
        "{hung}"
    );
    let ok = call(7, "ok").await;
    assert_eq!(ok["result"]["content"][0]["text"], "ok");

    // A log line from a stdio upstream reaches the calling client.
    let reply = warden
        .post(
            &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-11-25")],
            &json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": call_tool("log", json!({}))}),
        )
        .await;
    let messages = reply.messages();
    assert_eq!(messages[0]["method"], "notifications/message", "{messages:?}");
    assert_eq!(messages.last().unwrap()["id"], 8);
}

#[tokio::test]
async fn a_broken_stream_resumes_from_its_last_event_id() {
    let http_port = free_port();
    let fake = root().join("tests/e2e/fakes/http_server.py");
    let _http_fake = Helper::spawn("python3", &[fake.to_str().unwrap(), &http_port.to_string()]);
    listening(http_port).await;
    let warden = Warden::start(&format!(
        "[anonymous]\nsubject = \"t\"\n[[upstream]]\nname = \"web\"\nurl = \"http://127.0.0.1:{http_port}/mcp\"\n"
    ));
    let session = warden.initialize("", "2025-11-25").await;

    // Read the call's stream only up to the first progress event, then hang up.
    let stream = tokio::net::TcpStream::connect(warden.url.trim_start_matches("http://").split('/').next().unwrap())
        .await
        .unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "progress", "arguments": {}, "_meta": {"progressToken": "p1"}}}).to_string();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n\
         mcp-session-id: {session}\r\nmcp-protocol-version: 2025-11-25\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let (mut reader, mut writer) = stream.into_split();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    writer.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains("notifications/progress") {
        let n = tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("no progress event within 30 s: {seen}"))
            .unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    drop((reader, writer));
    let last_id = seen.lines().filter_map(|l| l.strip_prefix("id: ")).next_back().expect("events carry ids").to_owned();

    // Resume: the rest of that stream, ending with the response.
    let resumed = warden
        .send(
            Method::GET,
            &[("accept", "text/event-stream"), ("mcp-session-id", &session), ("last-event-id", &last_id)],
            "",
        )
        .await;
    assert_eq!(resumed.status, 200);
    let messages = resumed.messages();
    let response = messages.last().unwrap();
    assert_eq!(response["id"], 1, "{messages:?}");
    assert_eq!(response["result"]["content"][0]["text"], "done");
    assert!(!messages.iter().any(|m| m["params"]["progress"] == 1), "events before the cursor are not replayed");
}

#[tokio::test]
async fn stdio_clients_are_served_with_their_api_key() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let dir = e2e::Scratch::new("stdio");
    let config = quickstart_config()
        .replace("{demo}", &bin("warden-demo-upstream").display().to_string())
        .replace("{dir}", &dir.path().display().to_string())
        .replace("{root}", &root().display().to_string());
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, config).unwrap();
    let mut child = tokio::process::Command::new(bin("warden"))
        .args(["stdio", "--config"])
        .arg(&file)
        .env("WARDEN_API_KEY", ENGINEER)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for message in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "query_analytics_db", "arguments": {"query": "SELECT * FROM sales"}}}),
    ] {
        stdin.write_all(format!("{message}\n").as_bytes()).await.unwrap();
    }
    let mut answers = std::collections::HashMap::new();
    while answers.len() < 4 {
        let line = tokio::time::timeout(Duration::from_secs(60), stdout.next_line()).await.unwrap().unwrap().unwrap();
        let message: Value = serde_json::from_str(&line).unwrap();
        if let Some(id) = message["id"].as_u64() {
            answers.insert(id, message);
        }
        // The write goes out once the query is answered, as a client would send it.
        if answers.len() == 3 && !answers.contains_key(&4) {
            let write = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "write_workspace_file", "arguments": {"path": "x", "content": "y"}}});
            stdin.write_all(format!("{write}\n").as_bytes()).await.unwrap();
        }
    }
    assert_eq!(answers[&1]["result"]["serverInfo"]["name"], "warden");
    assert_eq!(tool_names(&answers[&2]).len(), 4, "the engineer sees all four tools");
    let rows = answers[&3]["result"]["structuredContent"]["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["tenant"] == "acme"), "acme's rows only: {rows:?}");
    assert_eq!(answers[&4]["error"]["data"]["plugin"], "chain-detect");
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "warden stdio exits when its input ends");
}

#[test]
fn invalid_gateway_configs_are_listed_and_exit_64() {
    let dir = e2e::Scratch::new("badconfig");
    let file = dir.path().join("warden.toml");
    std::fs::write(&file, "[server]\nlisten = \"nowhere\"\nfoo = 1\n[[upstream]]\nname = \"x\"\n").unwrap();
    let output = std::process::Command::new(bin("warden")).args(["check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in ["server.listen", "server.foo: unknown field", "upstream[0].command", "api_key: no credentials"] {
        assert!(stderr.contains(expected), "{expected} not in:\n{stderr}");
    }
    let serve = std::process::Command::new(bin("warden")).args(["serve", "--config"]).arg(&file).output().unwrap();
    assert_eq!(serve.status.code(), Some(64), "serve refuses the same config");
}
