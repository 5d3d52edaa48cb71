//! Rate limits, quotas and chargeback through the real gateway: a looping
//! client is stopped with the documented error and headers while another
//! tenant keeps full service; shadow rules count without refusing; quotas
//! reset at their boundary; `warden usage` counts what was called; limits
//! reload; bad limit config is refused with its path.
//!
//! With a real `redis-server` ([`e2e::peers`]): three gateways behind haproxy
//! share one global limit exactly; Redis stopped fails closed with a clear
//! error (or falls back to local counts, if configured) and service resumes
//! when it is back, without restarting the gateways.

use std::{
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use e2e::{
    HttpClient, Scratch, Warden, bin, demo_key,
    peers::{Balancer, Redis},
};
use serde_json::{Value, json};

const ACME: &str = "demo-acme-analyst";
const GLOBEX: &str = "demo-globex-analyst";
/// Holds the admin role.
const ADMIN: &str = "demo-acme-engineer";

const RATE_LIMITED: i64 = -32017;
const QUOTA_EXCEEDED: i64 = -32018;
const STATE_UNAVAILABLE: i64 = -32019;

/// The demo upstream, no policy chain, an audit log durable per record,
/// the admin role on [`ADMIN`], and `extra` config.
fn config(extra: &str) -> String {
    format!(
        r#"
[admin]
role = "admin"

[audit]
file = "{{dir}}/audit/warden.jsonl"
fsync = "record"

{keys}
[[upstream]]
name = "demo"
command = "{{demo}}"
args = ["--workspace", "{{dir}}/workspace", "--outbox", "{{dir}}/outbox.jsonl"]
{extra}
"#,
        keys = [demo_key(ACME, &["analyst"]), demo_key(ADMIN, &["engineer", "admin"]), demo_key(GLOBEX, &["analyst"])]
            .concat(),
    )
}

/// A stateless tools/call of `query_analytics_db` as the holder of `key`, to `url`.
async fn call_at(client: &HttpClient, url: &str, key: &str, id: u64) -> e2e::Reply {
    let arguments = json!({ "query": "SELECT count(*) AS n FROM sales" });
    tool_at(client, url, key, id, "query_analytics_db", arguments).await
}

/// A stateless tools/call of `tool` with `arguments`.
async fn tool_at(client: &HttpClient, url: &str, key: &str, id: u64, tool: &str, arguments: Value) -> e2e::Reply {
    let params = json!({
        "name": tool,
        "arguments": arguments,
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        },
    });
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string();
    let auth = format!("Bearer {key}");
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", tool),
        ("authorization", auth.as_str()),
    ];
    client.send(url, hyper::Method::POST, &headers, &body).await
}

async fn call(warden: &Warden, key: &str, id: u64) -> e2e::Reply {
    call_at(&HttpClient::default(), &warden.url, key, id).await
}

/// The JSON-RPC error code of a reply, or `None` for a result.
fn error_code(reply: &e2e::Reply) -> Option<i64> {
    let message = reply.json();
    assert!(message.get("result").is_some() || message.get("error").is_some(), "{reply:?}");
    message["error"]["code"].as_i64()
}

/// The decision records of the audit log.
fn decisions(warden: &Warden) -> Vec<Value> {
    let text = std::fs::read_to_string(warden.dir.path().join("audit/warden.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["kind"] == "decision").collect()
}

/// One sample of `/admin/metrics`, 0 if absent.
async fn metric(warden: &Warden, sample: &str) -> u64 {
    let url = warden.admin("/admin/metrics");
    let reply = warden.send_to(&url, hyper::Method::GET, &[("authorization", &format!("Bearer {ADMIN}"))], "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
        .body
        .lines()
        .find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap() as u64)
}

/// `warden usage --json` against `warden`'s control plane.
fn usage(warden: &Warden, tenant: Option<&str>) -> Value {
    let mut command = Command::new(bin("warden"));
    command.args(["usage", "--json", "--url", warden.admin_url.as_deref().unwrap()]).env("WARDEN_API_KEY", ADMIN);
    if let Some(tenant) = tenant {
        command.args(["--tenant", tenant]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "warden usage failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A tenant's totals in a usage report: (calls, refused).
fn totals(report: &Value, tenant: &str) -> (u64, u64) {
    let entry = report["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == tenant);
    entry.map_or((0, 0), |t| (t["usage"]["calls"].as_u64().unwrap(), t["usage"]["refused"].as_u64().unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_client_hits_its_limit_while_another_tenant_keeps_full_service() {
    let warden = Warden::start(&config(
        r#"
[[limit]]
name = "acme-calls"
rate = "5/min"
key = "tenant"
tenants = ["acme"]

[[limit]]
name = "globex-watch"
rate = "2/hour"
tenants = ["globex"]
shadow = true
"#,
    ));
    // The looping client: its burst (5) is admitted, then it is refused.
    let mut refusals = Vec::new();
    for id in 0..12 {
        let reply = call(&warden, ACME, id).await;
        match error_code(&reply) {
            None => {
                assert!(refusals.is_empty(), "admitted after a refusal: the bucket refills at 1 per 12 s");
                // Every answer says what is left of the tightest rule.
                let left = format!("\"acme-calls\";r={};t=", 4 - id);
                assert!(reply.header("ratelimit").is_some_and(|h| h.starts_with(&left)), "{left}: {reply:?}");
                assert_eq!(reply.header("ratelimit-policy"), Some("\"acme-calls\";q=5;w=60"));
                assert_eq!(reply.header("retry-after"), None);
            }
            Some(code) => {
                assert_eq!(code, RATE_LIMITED, "{reply:?}");
                refusals.push(reply);
            }
        }
    }
    assert_eq!(refusals.len(), 7, "5 of 12 admitted");
    let refusal = &refusals[0];
    let error = &refusal.json()["error"];
    assert_eq!(error["data"]["limit"], "acme-calls");
    let retry_ms = error["data"]["retryAfterMs"].as_u64().unwrap();
    assert!((1..=12_000).contains(&retry_ms), "one call is due every 12 s: {retry_ms}");
    assert!(error["message"].as_str().unwrap().contains("acme-calls"), "{error}");
    assert_eq!(refusal.status, 200, "the JSON-RPC error is the answer");
    let retry_s = retry_ms.div_ceil(1000).to_string();
    assert_eq!(refusal.header("retry-after"), Some(retry_s.as_str()));
    assert_eq!(refusal.header("ratelimit-policy"), Some("\"acme-calls\";q=5;w=60"));
    assert_eq!(refusal.header("ratelimit"), Some(format!("\"acme-calls\";r=0;t={retry_s}").as_str()));

    // Meanwhile the other tenant on the same upstream: full service. Its
    // shadow rule would have refused all but 2 of 30, and refuses none.
    for id in 100..130 {
        let reply = call(&warden, GLOBEX, id).await;
        assert_eq!(error_code(&reply), None, "{reply:?}");
        assert_eq!(reply.header("ratelimit"), None, "a shadow rule is not announced");
    }

    // Every refusal is audited with the rule that made it; every shadow
    // refusal is marked on an admitted call.
    let records = decisions(&warden);
    let of = |tenant: &str, outcome: &str| {
        records.iter().filter(|r| r["tenant"] == tenant && r["outcome"] == outcome).collect::<Vec<_>>()
    };
    assert_eq!(of("acme", "allowed").len(), 5);
    let limited = of("acme", "rate-limited");
    assert_eq!(limited.len(), 7);
    assert!(limited.iter().all(|r| r["code"] == RATE_LIMITED && r["reason"].as_str().unwrap().contains("acme-calls")));
    let globex = of("globex", "allowed");
    assert_eq!(globex.len(), 30);
    let shadowed = globex.iter().filter(|r| r["shadow_refused"] == json!(["globex-watch"])).count();
    assert_eq!(shadowed, 28, "2 fit in the shadow rule");

    // The metrics and the chargeback report count the same calls.
    assert_eq!(
        metric(&warden, r#"warden_limit_decisions_total{rule="acme-calls",kind="rate",result="refused"}"#).await,
        7
    );
    assert_eq!(
        metric(&warden, r#"warden_limit_decisions_total{rule="acme-calls",kind="rate",result="admitted"}"#).await,
        5
    );
    assert_eq!(
        metric(&warden, r#"warden_limit_decisions_total{rule="globex-watch",kind="rate",result="shadow-refused"}"#)
            .await,
        28
    );
    let report = usage(&warden, None);
    assert_eq!(totals(&report, "acme"), (12, 7));
    assert_eq!(totals(&report, "globex"), (30, 0));
    let only_globex = usage(&warden, Some("globex"));
    assert_eq!(only_globex["tenants"].as_array().unwrap().len(), 1, "{only_globex}");
    assert_eq!(totals(&only_globex, "globex"), (30, 0));
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_reset_at_their_boundary_and_upstream_time_is_charged() {
    let warden = Warden::start(&config(
        r#"
[[quota]]
name = "acme-window"
calls = 3
per = "3s"
tenants = ["acme"]

[[quota]]
name = "globex-time"
upstream_s = 0.001
per = "hour"
tenants = ["globex"]
"#,
    ));
    // Start just after a window opens (windows align to the epoch), so the
    // first four calls fall in one window.
    while now_ms() % 3000 > 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in 0..3 {
        assert_eq!(error_code(&call(&warden, ACME, id).await), None);
    }
    let spent = call(&warden, ACME, 3).await.json();
    assert_eq!(spent["error"]["code"], QUOTA_EXCEEDED, "{spent}");
    let data = &spent["error"]["data"];
    assert_eq!(data["quota"], "acme-window");
    let retry_ms = data["retryAfterMs"].as_u64().unwrap();
    assert!(retry_ms <= 3000, "{data}");
    let reset_at = data["resetAt"].as_str().unwrap();
    assert!(reset_at.ends_with('Z') && reset_at.len() == 20, "RFC 3339, seconds: {reset_at}");
    assert!(spent["error"]["message"].as_str().unwrap().contains(reset_at));

    // At the boundary the window resets.
    tokio::time::sleep(Duration::from_millis(retry_ms + 100)).await;
    assert_eq!(error_code(&call(&warden, ACME, 4).await), None, "a new window has room");

    // Upstream time: the first call finds the quota unspent and is
    // charged its upstream time once done; the next finds it spent.
    assert_eq!(error_code(&call(&warden, GLOBEX, 10).await), None);
    let mut refused = None;
    for id in 11..40 {
        let reply = call(&warden, GLOBEX, id).await;
        if error_code(&reply).is_some() {
            refused = Some(reply.json());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("upstream time is charged to the quota");
    assert_eq!(refused["error"]["code"], QUOTA_EXCEEDED);
    assert_eq!(refused["error"]["data"]["quota"], "globex-time");
    let records = decisions(&warden);
    assert!(records.iter().any(|r| r["outcome"] == "quota-exceeded" && r["tenant"] == "globex"));
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_reload_from_the_config_file_and_a_bad_edit_keeps_the_old_ones() {
    let warden = Warden::start(&config("[[limit]]\nname = \"acme\"\nrate = \"1/hour\"\ntenants = [\"acme\"]\n"));
    assert_eq!(error_code(&call(&warden, ACME, 1).await), None);
    assert_eq!(error_code(&call(&warden, ACME, 2).await), Some(RATE_LIMITED));
    let file = warden.dir.path().join("warden.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let reload = || async {
        let url = warden.admin("/admin/reload");
        warden.send_to(&url, hyper::Method::POST, &[("authorization", &format!("Bearer {ADMIN}"))], "").await
    };

    // A bad edit is refused with its path; the old limit stays.
    std::fs::write(&file, text.replace("rate = \"1/hour\"", "rate = \"0/hour\"")).unwrap();
    let refused = reload().await;
    assert_eq!(refused.status, 422, "{refused:?}");
    assert!(refused.body.contains("limit[0].rate"), "{}", refused.body);
    assert_eq!(error_code(&call(&warden, ACME, 3).await), Some(RATE_LIMITED));

    // A good one takes effect on the next call.
    std::fs::write(&file, text.replace("tenants = [\"acme\"]", "tenants = [\"globex\"]")).unwrap();
    let reloaded = reload().await;
    assert_eq!(reloaded.status, 200, "{reloaded:?}");
    assert_eq!(serde_json::from_str::<Value>(&reloaded.body).unwrap()["limits"]["rates"], 1);
    assert_eq!(error_code(&call(&warden, ACME, 4).await), None, "acme is no longer limited");
}

#[test]
fn bad_limit_config_is_listed_with_its_path_and_exits_64() {
    let dir = Scratch::new("badlimits");
    let file = dir.path().join("warden.toml");
    let config = config(
        r#"
[state]
on_unavailable = "maybe"
timeout_ms = 0

[[limit]]
name = "zero"
rate = "0/min"

[[limit]]
name = "negative"
rate = "-5/min"
burst = 0

[[limit]]
name = "typo"
rate = "10/min"
tennants = ["acme"]

[[quota]]
name = "empty"
per = "fortnight"
"#,
    )
    .replace("{dir}", &dir.path().display().to_string())
    .replace("{demo}", &bin("warden-demo-upstream").display().to_string());
    std::fs::write(&file, config).unwrap();
    let output = Command::new(bin("warden")).args(["check", "--config"]).arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "state.on_unavailable",
        "state.timeout_ms: must be above zero",
        "limit[0].rate",
        "limit[1].rate",
        "limit[1].burst: must be above zero",
        "limit[2].tennants: unknown field",
        "quota[0].calls: give calls, upstream_s or both",
        "quota[0].per",
    ] {
        assert!(stderr.contains(expected), "{expected} not in:\n{stderr}");
    }
}

#[test]
fn an_unreachable_redis_at_start_up_exits_64_naming_it() {
    let dir = Scratch::new("noredis");
    let file = dir.path().join("warden.toml");
    let port = e2e::free_port();
    let config = config(&format!("[state]\nredis = \"redis://127.0.0.1:{port}\"\ntimeout_ms = 300\n"))
        .replace("{dir}", &dir.path().display().to_string())
        .replace("{demo}", &bin("warden-demo-upstream").display().to_string());
    std::fs::write(&file, config).unwrap();
    let output = e2e::serve_refused(&file);
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("state.redis") && stderr.contains(&port.to_string()), "{stderr}");
}

/// Three gateways sharing `redis`, each with `extra` config.
fn replicas(redis: &Redis, extra: &str) -> Vec<Warden> {
    let shared = format!("[state]\nredis = \"{}\"\ntimeout_ms = 300\n{extra}", redis.url());
    (0..3).map(|_| Warden::start(&config(&shared))).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_gateways_behind_a_balancer_share_one_limit_exactly() {
    const LIMIT: u64 = 1500;
    const CALLS: u64 = 10_000;
    let redis = Redis::start().await;
    let gateways =
        replicas(&redis, &format!("[[limit]]\nname = \"global\"\nrate = \"{LIMIT}/day\"\nkey = \"global\"\n"));
    let ports: Vec<u16> = gateways.iter().map(Warden::port).collect();
    let balancer = Balancer::start(&ports).await;
    let url = balancer.url("/mcp");
    // Eight clients in parallel, every call through the balancer.
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let url = url.clone();
        let client = HttpClient::default();
        tasks.push(tokio::spawn(async move {
            let (mut admitted, mut refused) = (0u64, 0u64);
            for i in 0..CALLS / 8 {
                let reply = call_at(&client, &url, if i % 2 == 0 { ACME } else { GLOBEX }, worker * CALLS + i).await;
                match error_code(&reply) {
                    None => admitted += 1,
                    Some(RATE_LIMITED) => refused += 1,
                    Some(other) => panic!("unexpected error {other}: {reply:?}"),
                }
            }
            (admitted, refused)
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for task in tasks {
        let (a, r) = task.await.unwrap();
        admitted += a;
        refused += r;
    }
    assert_eq!(admitted + refused, CALLS);
    // One script decides each call on the Redis server: exact, not ± 1 %.
    assert_eq!(admitted, LIMIT, "the three replicas admitted {admitted} of a shared limit of {LIMIT}");
    // Every replica took part (round robin).
    for gateway in &gateways {
        let served =
            metric(gateway, r#"warden_limit_decisions_total{rule="global",kind="rate",result="refused"}"#).await;
        assert!(served > 0, "a replica saw no refused calls: the balancer is not spreading load");
    }
    // Chargeback through any replica covers all three (each writes its
    // counts once a second).
    let mut report = Value::Null;
    for _ in 0..30 {
        report = usage(&gateways[2], None);
        let (acme, globex) = (totals(&report, "acme"), totals(&report, "globex"));
        if acme.0 + globex.0 == CALLS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (acme, globex) = (totals(&report, "acme"), totals(&report, "globex"));
    assert_eq!(acme.0 + globex.0, CALLS, "{report}");
    assert_eq!(acme.1 + globex.1, refused, "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_down_fails_closed_or_falls_back_and_service_resumes_when_it_returns() {
    let mut redis = Redis::start().await;
    let limit = "[[limit]]\nname = \"acme\"\nrate = \"1000/min\"\ntenants = [\"acme\"]\n";
    let closed = Warden::start(&config(&format!("[state]\nredis = \"{}\"\ntimeout_ms = 300\n{limit}", redis.url())));
    let local = Warden::start(&config(&format!(
        "[state]\nredis = \"{}\"\ntimeout_ms = 300\non_unavailable = \"local\"\n{limit}",
        redis.url()
    )));
    assert_eq!(error_code(&call(&closed, ACME, 1).await), None);

    redis.stop();
    let refused = call(&closed, ACME, 2).await.json();
    assert_eq!(refused["error"]["code"], STATE_UNAVAILABLE, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("state store is unreachable"), "{refused}");
    // Calls no limit covers need it too: the chain history is shared there.
    assert_eq!(error_code(&call(&closed, GLOBEX, 3).await), Some(STATE_UNAVAILABLE));
    // The fallback replica serves on its own counts, and says so in the record.
    assert_eq!(error_code(&call(&local, ACME, 4).await), None);
    let fallback = decisions(&local).into_iter().find(|r| r["request"].is_string() && r["state_fallback"] == true);
    assert!(fallback.is_some_and(|r| r["outcome"] == "allowed"), "the fallback is audited");
    assert!(decisions(&closed).iter().any(|r| r["outcome"] == "state-unavailable"), "the refusal is audited");
    assert!(metric(&closed, r#"warden_state_checks_total{result="unavailable-refused"}"#).await >= 1);
    assert!(metric(&local, r#"warden_state_checks_total{result="unavailable-local"}"#).await >= 1);

    // Redis back on the same port: service resumes, no restart of Warden.
    redis.resume().await;
    let mut resumed = false;
    for id in 10..60 {
        if error_code(&call(&closed, ACME, id).await).is_none() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(resumed, "the gateway reconnects to Redis by itself");
}

const CHAIN: &str = r#"
[[plugin]]
name = "rbac"
source = "builtin:rbac"
[plugin.config]
default = "deny"
[plugin.config.roles.engineer]
allow = ["demo/*"]

[[plugin]]
name = "chain-detect"
source = "builtin:chain-detect"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_chain_started_on_one_replica_is_blocked_on_another() {
    let redis = Redis::start().await;
    let chains = Scratch::new("chain");
    let chain = chains.path().join("chain.toml");
    std::fs::write(&chain, CHAIN).unwrap();
    let gateways = replicas(&redis, &format!("[policy]\nchain = \"{}\"\n", chain.display()));
    let client = HttpClient::default();
    let read = json!({ "query": "SELECT count(*) AS n FROM sales" });
    let first = tool_at(&client, &gateways[0].url, ADMIN, 1, "query_analytics_db", read).await;
    assert_eq!(error_code(&first), None, "{first:?}");
    // The same principal (stateless: history per principal) on another replica.
    let write = json!({ "path": "leak.txt", "content": "rows" });
    let second = tool_at(&client, &gateways[1].url, ADMIN, 2, "write_workspace_file", write).await.json();
    assert_eq!(second["error"]["code"], -32010, "{second}");
    assert_eq!(second["error"]["data"]["plugin"], "chain-detect", "{second}");
    assert!(!gateways[1].dir.path().join("workspace/leak.txt").exists(), "the write never ran");
}

/// A legacy request in `session` through `url`; the JSON-RPC response.
async fn legacy(
    client: &HttpClient,
    url: &str,
    key: &str,
    session: &str,
    id: u64,
    method: &str,
    params: Value,
) -> e2e::Reply {
    let auth = format!("Bearer {key}");
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", auth.as_str()),
        ("mcp-session-id", session),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
    client.send(url, hyper::Method::POST, &headers, &body).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_session_survives_its_replica_being_killed() {
    let redis = Redis::start().await;
    let mut gateways = replicas(&redis, "");
    let ports: Vec<u16> = gateways.iter().map(Warden::port).collect();
    let balancer = Balancer::start(&ports).await;
    let url = balancer.url("/mcp");
    let client = HttpClient::default();
    let auth = format!("Bearer {ACME}");
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", auth.as_str()),
    ];
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}});
    let opened = client.send(&url, hyper::Method::POST, &headers, &init.to_string()).await;
    assert_eq!(opened.status, 200, "{opened:?}");
    let session = opened.header("mcp-session-id").unwrap().to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let session_headers =
        [&headers[..], &[("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-11-25")]].concat();
    assert_eq!(client.send(&url, hyper::Method::POST, &session_headers, &initialized).await.status, 202);

    let query = || json!({"name": "query_analytics_db", "arguments": {"query": "SELECT count(*) AS n FROM sales"}});
    // Round robin: every replica serves the session.
    for id in 1..=6 {
        let reply = legacy(&client, &url, ACME, &session, id, "tools/call", query()).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["result"]["isError"], false, "{reply:?}");
    }
    // Another identity cannot use it on any replica.
    let stolen = legacy(&client, &gateways[2].url, GLOBEX, &session, 7, "tools/list", json!({})).await;
    assert_eq!(stolen.status, 404, "{stolen:?}");

    // Kill one replica mid-run: the balancer sends the next requests to the
    // others, which serve the same session.
    drop(gateways.remove(0));
    for id in 8..=14 {
        let reply = legacy(&client, &url, ACME, &session, id, "tools/call", query()).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["result"]["isError"], false, "{reply:?}");
    }
    let adopted = gateways.iter().filter(|g| g.log().contains("session adopted from another replica")).count();
    assert!(adopted >= 1, "the surviving replicas adopted the session");

    // Ended on a replica, it stays ended there: not adopted back.
    let survivor = &gateways[0].url;
    let ask = legacy(&client, survivor, ACME, &session, 15, "tools/list", json!({})).await;
    assert_eq!(ask.status, 200, "{ask:?}");
    let ended = client.send(survivor, hyper::Method::DELETE, &session_headers, "").await;
    assert_eq!(ended.status, 204, "{ended:?}");
    let after = legacy(&client, survivor, ACME, &session, 16, "tools/list", json!({})).await;
    assert_eq!(after.status, 404, "a deleted session is not adopted back: {after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_with_a_password_over_tls_is_used_and_a_wrong_password_or_untrusted_ca_exits_64() {
    let certificates = Scratch::new("redis-ca");
    let ca = certificates.path().join("ca.pem");
    let redis = Redis::start_tls("s3cret", &ca).await;
    let state = |password: &str, ca_file: bool| {
        let ca_line = if ca_file { format!("ca_file = \"{}\"\n", ca.display()) } else { String::new() };
        format!(
            "[state]\nredis = \"rediss://:{password}@127.0.0.1:{}\"\ntimeout_ms = 1000\n{ca_line}\n\
             [[limit]]\nname = \"one\"\nrate = \"1/hour\"\n",
            redis.port
        )
    };
    let warden = Warden::start(&config(&state("s3cret", true)));
    assert_eq!(error_code(&call(&warden, ACME, 1).await), None);
    assert_eq!(error_code(&call(&warden, ACME, 2).await), Some(RATE_LIMITED), "counted in that Redis");

    for (password, ca_file, why) in
        [("badpass9", true, "a wrong password"), ("s3cret", false, "an untrusted certificate")]
    {
        let dir = Scratch::new("redis-refused");
        let file = dir.path().join("warden.toml");
        let text = config(&state(password, ca_file))
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{demo}", &bin("warden-demo-upstream").display().to_string());
        std::fs::write(&file, text).unwrap();
        let output = e2e::serve_refused(&file);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{why}: {stderr}");
        assert!(stderr.contains("state.redis"), "{why}: {stderr}");
        assert!(!stderr.contains(password), "the password is never printed: {stderr}");
    }
}
