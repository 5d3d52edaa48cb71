//! The built `warden` binary under callers that try to hold what is not
//! theirs: stalled and slow connections, too many connections, too many
//! sessions, oversized batches and over-deep JSON. Each bound refuses with a
//! clear answer, is counted in `/admin/metrics`, and leaves everyone else
//! served.

use std::{net::SocketAddr, time::Duration};

use e2e::{Warden, quickstart_config};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    time::{Instant, timeout},
};

const ANALYST: &str = "demo-acme-analyst";
/// Holds the admin role in these configs, to read `/admin/metrics`.
const ENGINEER: &str = "demo-acme-engineer";
const GLOBEX: &str = "demo-globex-analyst";
/// `warden hash-key demo-acme-engineer`.
const ENGINEER_SHA256: &str = "54c1e7841003db6d41b7cdcd3c675e5af9af86a970cc76f70ddfae2946fbe661";

/// The quick-start gateway with `server` added to `[server]`, `sessions` as
/// `[sessions]`, and the engineer as admin.
fn config(server: &str, sessions: &str) -> String {
    let config = quickstart_config()
        .replace("path = \"/mcp\"\n", &format!("path = \"/mcp\"\n{server}"))
        .replace("role = \"warden-admin\"", "role = \"engineer\"");
    format!("{config}\n[sessions]\n{sessions}\n")
}

fn addr(warden: &Warden) -> SocketAddr {
    warden.url.trim_start_matches("http://").trim_end_matches("/mcp").parse().unwrap()
}

/// The control plane's address: its own listener, so it answers while the
/// MCP listener refuses connections.
fn admin_addr(warden: &Warden) -> SocketAddr {
    warden.admin("").trim_start_matches("http://").parse().unwrap()
}

/// A connection to the gateway from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Read until the gateway closes the connection; what it sent, or `None`
/// if it was still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()?;
    Some(String::from_utf8_lossy(&text).into_owned())
}

/// `GET /healthz` on an open connection, kept alive; whether it answered 200.
async fn healthz(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.is_err() {
        return false;
    }
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    let answered = timeout(Duration::from_secs(10), async {
        while !text.ends_with(b"ok\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await
    .unwrap_or(false);
    answered && text.starts_with(b"HTTP/1.1 200")
}

/// `/admin/metrics`, read as the engineer (admin role); `None` if refused.
async fn metrics(warden: &Warden) -> Option<String> {
    let url = warden.admin("/admin/metrics");
    let reply = warden.send_to(&url, hyper::Method::GET, &[("authorization", "Bearer demo-acme-engineer")], "").await;
    (reply.status == 200).then_some(reply.body)
}

/// One sample of `/admin/metrics`.
async fn metric(warden: &Warden, sample: &str) -> u64 {
    sample_of(&metrics(warden).await.expect("the metrics are served"), sample)
}

/// A sample's value in Prometheus text.
fn sample_of(text: &str, sample: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(sample)).unwrap_or_else(|| panic!("no {sample}:\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// `GET path` as the engineer on a fresh connection that closes after the
/// answer: the whole response, or a refusal, never an error.
async fn get_once(to: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(to).await else { return String::new() };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ENGINEER}\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(request.as_bytes()).await;
    read_until_closed(&mut stream, Duration::from_secs(10)).await.unwrap_or_default()
}

fn auth(key: &str) -> String {
    format!("Bearer {key}")
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_busy_ones_are_not() {
    let warden = Warden::start(&config("header_timeout_s = 1\nbody_timeout_s = 1\nkeep_alive_s = 2\n", ""));
    let gateway = addr(&warden);

    // Forty connections send half a request line and stall.
    let mut stalled = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(gateway).await.unwrap();
        stream.write_all(b"POST /mcp HTT").await.unwrap();
        stalled.push(stream);
    }
    for stream in &mut stalled {
        assert!(read_until_closed(stream, Duration::from_secs(10)).await.is_some(), "a stalled head was not cut off");
    }

    // A body announced as 4096 bytes, of which 10 arrive.
    let mut slow = TcpStream::connect(gateway).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 4096\r\n\r\n{{\"jsonrpc\"",
        auth(ANALYST)
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10)).await.expect("a slow body was not given up");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("server.body_timeout_s"), "{answer}");

    // An idle kept-alive connection closes after keep_alive_s, not before.
    let mut idle = TcpStream::connect(gateway).await.unwrap();
    assert!(healthz(&mut idle).await);
    let since = Instant::now();
    assert!(read_until_closed(&mut idle, Duration::from_secs(10)).await.is_some(), "an idle connection stayed open");
    assert!(since.elapsed() >= Duration::from_millis(1900), "closed after {:?}", since.elapsed());

    // A connection in use stays open past keep_alive_s: requests 0.8 s apart…
    let mut active = TcpStream::connect(gateway).await.unwrap();
    for _ in 0..5 {
        assert!(healthz(&mut active).await, "an active connection was closed");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    // …and so does one streaming a response (a session's GET stream), though
    // nothing arrives from the client while it lasts.
    let session = warden.initialize(ANALYST, "2025-11-25").await;
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n\
         Mcp-Session-Id: {session}\r\nMCP-Protocol-Version: 2025-11-25\r\n\r\n",
        auth(ANALYST)
    );
    stream.write_all(get.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(4)).await.is_none(),
        "a streaming response was cut by the keep-alive bound"
    );

    assert!(metric(&warden, "warden_connections_timed_out_total{limit=\"server.header_timeout_s\"}").await >= 40);
    assert_eq!(metric(&warden, "warden_connections_timed_out_total{limit=\"server.body_timeout_s\"}").await, 1);
    assert!(metric(&warden, "warden_connections_timed_out_total{limit=\"server.keep_alive_s\"}").await >= 1);
}

#[tokio::test]
async fn connections_are_bounded_in_all_and_per_client_address() {
    let warden = Warden::start(&config("max_connections = 6\nmax_connections_per_ip = 3\n", ""));
    let gateway = addr(&warden);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from("127.0.0.1", gateway).await;
        assert!(healthz(&mut stream).await);
        held.push(stream);
    }
    let mut fourth = connect_from("127.0.0.1", gateway).await;
    let refused = read_until_closed(&mut fourth, Duration::from_secs(10)).await.expect("the refusal closes");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("server.max_connections_per_ip") && refused.contains("-32015"), "{refused}");

    // Another address still gets in, up to the total.
    for _ in 0..3 {
        let mut stream = connect_from("127.0.0.2", gateway).await;
        assert!(healthz(&mut stream).await, "another client address was refused");
        held.push(stream);
    }
    let mut seventh = connect_from("127.0.0.3", gateway).await;
    let refused = read_until_closed(&mut seventh, Duration::from_secs(10)).await.expect("the refusal closes");
    assert!(refused.starts_with("HTTP/1.1 503") && refused.contains("server.max_connections\""), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: 1"), "{refused}");

    // A closed connection frees its place.
    drop(held.remove(0));
    let mut served = false;
    for _ in 0..50 {
        let mut stream = connect_from("127.0.0.1", gateway).await;
        if healthz(&mut stream).await {
            served = true;
            held.push(stream);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the freed place was not given to a new connection");

    // The control plane has its own listener: it answers while every MCP
    // connection is taken.
    let text = get_once(admin_addr(&warden), "/admin/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "the metrics were not served: {text}");
    drop(held);
    assert!(sample_of(&text, "warden_connections_refused_total{limit=\"server.max_connections_per_ip\"}") >= 1);
    assert!(sample_of(&text, "warden_connections_refused_total{limit=\"server.max_connections\"}") >= 1);
}

#[tokio::test]
async fn one_caller_opening_many_sessions_ends_only_its_own() {
    let warden = Warden::start(&config("", "max = 6\nmax_per_principal = 5\n"));
    let victim = warden.initialize(ANALYST, "2025-11-25").await;
    let mut attacker = Vec::new();
    for _ in 0..60 {
        attacker.push(warden.initialize(ENGINEER, "2025-11-25").await);
    }
    let listed = warden.call(ANALYST, &victim, 1, "tools/list", json!({})).await;
    assert!(listed["result"]["tools"].is_array(), "the victim's session ended: {listed}");
    let first = warden
        .post(
            &[
                ("authorization", &auth(ENGINEER)),
                ("mcp-session-id", &attacker[0]),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        )
        .await;
    assert_eq!(first.status, 404, "the caller's own oldest session ends");
    let last = warden.call(ENGINEER, attacker.last().unwrap(), 3, "tools/list", json!({})).await;
    assert!(last["result"]["tools"].is_array(), "{last}");

    // Full: a newcomer is refused, and nobody's session is taken for it.
    let refused = warden
        .post(
            &[("authorization", &auth(GLOBEX))],
            &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}}),
        )
        .await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("5"));
    let error = &refused.json()["error"];
    assert_eq!(error["code"], -32015, "{error}");
    assert_eq!(error["data"]["limit"], "sessions.max");
    let listed = warden.call(ANALYST, &victim, 4, "tools/list", json!({})).await;
    assert!(listed["result"]["tools"].is_array(), "{listed}");

    assert_eq!(metric(&warden, "warden_sessions_open").await, 6);
    assert_eq!(
        metric(
            &warden,
            "warden_sessions_limited_total{limit=\"sessions.max_per_principal\",action=\"ended_own_oldest\"}"
        )
        .await,
        55
    );
    assert_eq!(metric(&warden, "warden_sessions_limited_total{limit=\"sessions.max\",action=\"refused\"}").await, 1);
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("bottom"), |inner, _| json!([inner]))
}

#[tokio::test]
async fn oversized_batches_and_over_deep_json_are_refused() {
    let warden = Warden::start(&config("max_batch = 4\nmax_json_depth = 16\n", ""));
    let session = warden.initialize(ANALYST, "2025-03-26").await;
    let headers = [
        ("authorization", auth(ANALYST)),
        ("mcp-session-id", session.clone()),
        ("mcp-protocol-version", "2025-03-26".to_owned()),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let batch =
        |n: u64| Value::Array((0..n).map(|id| json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"})).collect());

    let refused = warden.post(&headers, &batch(5)).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("server.max_batch"), "{}", refused.body);
    let answered = warden.post(&headers, &batch(4)).await;
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.json().as_array().map(Vec::len), Some(4));

    let call = |depth| {
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {
            "name": "query_analytics_db", "arguments": {"sql": "select 1", "extra": nested(depth)}}})
    };
    // The envelope itself is three levels deep.
    let refused = warden.post(&headers, &call(20)).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    assert!(refused.body.contains("server.max_json_depth"), "{}", refused.body);
    let deep_enough = warden.post(&headers, &call(10)).await;
    assert_eq!(deep_enough.status, 200, "{deep_enough:?}");
    assert!(deep_enough.json().get("result").is_some() || deep_enough.json().get("error").is_some());

    assert_eq!(metric(&warden, "warden_requests_refused_total{limit=\"server.max_batch\"}").await, 1);
    assert_eq!(metric(&warden, "warden_requests_refused_total{limit=\"server.max_json_depth\"}").await, 1);
}

#[tokio::test]
async fn a_resume_past_what_the_replay_buffer_kept_is_refused() {
    let port = e2e::free_port();
    let fake = e2e::root().join("tests/e2e/fakes/http_server.py");
    let _fake = e2e::Helper::spawn("python3", &[fake.to_str().unwrap(), &port.to_string()]);
    e2e::listening(port).await;
    let warden = Warden::start(&format!(
        "[anonymous]\nsubject = \"t\"\n[admin]\nrole = \"engineer\"\n\
         [[api_key]]\nsubject = \"ops\"\nroles = [\"engineer\"]\nsha256 = \"{ENGINEER_SHA256}\"\n\
         [sessions]\nreplay_kib = 1\n[[upstream]]\nname = \"web\"\nurl = \"http://127.0.0.1:{port}/mcp\"\n"
    ));
    let session = warden.initialize("", "2025-11-25").await;

    // Two progress events of ~700 bytes each: the second pushes the first out
    // of a 1 KiB replay buffer. Read both, then hang up.
    let mut stream = TcpStream::connect(addr(&warden)).await.unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "progress", "arguments": {"pad": 600}, "_meta": {"progressToken": "p"}}})
    .to_string();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n\
         mcp-session-id: {session}\r\nmcp-protocol-version: 2025-11-25\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("\"progress\":2") {
        let n = timeout(Duration::from_secs(30), stream.read(&mut buf)).await.expect("progress events").unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(stream);
    // Resuming after the priming event would need the first progress event.
    let first = seen.lines().find_map(|l| l.strip_prefix("id: ")).expect("events carry ids").to_owned();
    let resumed = warden
        .send(
            hyper::Method::GET,
            &[("accept", "text/event-stream"), ("mcp-session-id", &session), ("last-event-id", &first)],
            "",
        )
        .await;
    assert_eq!(resumed.status, 400, "{resumed:?}");
    assert!(resumed.body.contains("sessions.replay_kib"), "{}", resumed.body);
    assert_eq!(metric(&warden, "warden_stream_resumes_refused_total").await, 1);
}
