//! Identity, end to end: Warden as an OAuth resource server in front of real
//! upstreams, against a real identity provider on 127.0.0.1 (`e2e::idp`).
//!
//! - the attack matrix: every forged, stale, misdirected or misplaced token
//!   gets the documented status and challenge, and nothing reaches the upstream;
//! - key rotation, a provider outage (cached keys keep working; without keys,
//!   401, never 500) and the rate limit on refetching keys;
//! - required scopes: 403 `insufficient_scope` naming what is missing;
//! - no token passthrough: HTTP upstreams see only their own credentials
//!   (a static bearer, or a client-credentials token Warden fetched), stdio
//!   upstreams only their configured environment.

use e2e::{Helper, Warden, free_port, idp::Idp, listening, peers, root, tool_names};
use serde_json::{Value, json};

/// The resource URI tokens must be issued for.
const RESOURCE: &str = "https://mcp.test.example/mcp";
const METADATA: &str = "https://mcp.test.example/.well-known/oauth-protected-resource/mcp";

fn config(idp: &Idp, min_refresh_s: u64) -> String {
    format!(
        r#"
[policy]
chain = "{{root}}/policies/quickstart.toml"

[oauth]
resource = "{RESOURCE}"
scopes_supported = ["demo:read", "demo:write"]

[[oauth.issuer]]
issuer = "{issuer}"
jwks_url = "{jwks}"
min_refresh_s = {min_refresh_s}
tenant_claim = "tenant"
roles_claims = ["roles"]

[[required_scopes]]
tools = ["demo/write_*"]
scopes = ["demo:write"]

[[upstream]]
name = "demo"
command = "{{demo}}"
args = ["--workspace", "{{dir}}/workspace", "--outbox", "{{dir}}/outbox.jsonl", "--record", "{{dir}}/record.jsonl"]
"#,
        issuer = idp.issuer,
        jwks = idp.jwks_url(),
    )
}

/// An analyst of acme, with the read scope.
fn analyst(idp: &Idp) -> Value {
    idp.claims(RESOURCE, json!({"tenant": "acme", "roles": ["analyst"], "scope": "demo:read"}))
}

async fn list(warden: &Warden, token: &str) -> e2e::Reply {
    let authorization = format!("Bearer {token}");
    warden.modern(&[("authorization", &authorization)], 1, "tools/list", json!({})).await
}

async fn call(warden: &Warden, token: &str, name: &str, arguments: Value) -> e2e::Reply {
    let authorization = format!("Bearer {token}");
    warden
        .modern(&[("authorization", &authorization)], 2, "tools/call", json!({"name": name, "arguments": arguments}))
        .await
}

fn recorded_calls(warden: &Warden) -> usize {
    let text = std::fs::read_to_string(warden.dir.path().join("record.jsonl")).unwrap_or_default();
    text.lines().filter(|l| l.contains("tools/call")).count()
}

/// A refusal: status, a challenge of this `error` pointing at the metadata.
fn assert_refused(reply: &e2e::Reply, status: u16, error: Option<&str>, what: &str) {
    assert_eq!(reply.status, status, "{what}: {reply:?}");
    let challenge = reply.header("www-authenticate").unwrap_or_else(|| panic!("{what}: no challenge: {reply:?}"));
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    assert!(challenge.contains(&format!("resource_metadata=\"{METADATA}\"")), "{what}: {challenge}");
    match error {
        Some(error) => assert!(challenge.contains(&format!("error=\"{error}\"")), "{what}: {challenge}"),
        None => assert!(!challenge.contains("error="), "{what}: {challenge}"),
    }
}

// The identity provider serves on this runtime while Warden::start blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_stale_and_misdirected_tokens_are_refused_and_reach_nothing() {
    let idp = Idp::start(("unused", "unused"), "unused").await;
    let warden = Warden::start(&config(&idp, 0));

    // The metadata is public, at the path-suffixed and the plain well-known URL.
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"] {
        let metadata = warden.get(path).await;
        assert_eq!(metadata.status, 200, "{metadata:?}");
        let document: Value = serde_json::from_str(&metadata.body).unwrap();
        assert_eq!(document["resource"], RESOURCE);
        assert_eq!(document["authorization_servers"], json!([idp.issuer]));
        assert_eq!(document["scopes_supported"], json!(["demo:read", "demo:write"]));
    }

    // A valid token: the analyst's listing, as its roles allow.
    let valid = idp.sign_with("key-1", &analyst(&idp));
    let listing = list(&warden, &valid).await;
    assert_eq!(listing.status, 200, "{listing:?}");
    let tools = tool_names(&listing.json());
    assert!(tools.contains(&"query_analytics_db".to_owned()) && !tools.contains(&"write_workspace_file".to_owned()));

    // No credentials at all: a bare challenge.
    let none = warden.modern(&[], 1, "tools/call", json!({"name": "query_analytics_db", "arguments": {}})).await;
    assert_refused(&none, 401, None, "no token");

    let claims = analyst(&idp);
    let with = |change: Value| {
        let mut c = claims.clone();
        for (k, v) in change.as_object().unwrap() {
            match v {
                Value::Null => drop(c.as_object_mut().unwrap().remove(k)),
                v => c[k] = v.clone(),
            }
        }
        c
    };
    let now = e2e::idp::now();
    let attacks: Vec<(&str, String, &str)> = vec![
        ("alg none", idp.unsigned(&claims), "algorithm"),
        ("HS256 signed with the RSA public key", idp.sign_hs256_with_public_key(&claims), "algorithm"),
        ("expired", idp.sign_with("key-1", &with(json!({"exp": now - 600}))), "expired"),
        ("not yet valid", idp.sign_with("key-1", &with(json!({"nbf": now + 600}))), "not valid yet"),
        ("wrong audience", idp.sign_with("key-1", &with(json!({"aud": "https://other.example/mcp"}))), "aud"),
        ("wrong issuer", idp.sign_with("key-1", &with(json!({"iss": "https://evil.example"}))), "issuer"),
        ("unknown key", idp.sign_unpublished(&claims), "signing key is unknown"),
        ("no expiry", idp.sign_with("key-1", &with(json!({"exp": null}))), "exp"),
        ("malformed", "abc.def.ghi".to_owned(), "well-formed"),
        ("oversized", format!("{}.{}.{}", "a".repeat(10_000), "b".repeat(10_000), "c"), "larger than"),
        (
            "tampered payload",
            {
                let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
                parts[1] = base64_url(&with(json!({"roles": ["engineer"]})).to_string());
                parts.join(".")
            },
            "signature",
        ),
    ];
    for (what, token, reason) in &attacks {
        let reply = call(&warden, token, "query_analytics_db", json!({"query": "SELECT 1"})).await;
        assert_refused(&reply, 401, Some("invalid_token"), what);
        let description = reply.header("www-authenticate").unwrap();
        assert!(description.contains(reason), "{what}: expected {reason:?} in {description}");
        assert!(!description.contains(token.as_str()), "{what}: the challenge repeats the token");
    }

    // A token in the query string is refused even beside a valid header.
    let authorization = format!("Bearer {valid}");
    let in_query = warden
        .send_to(
            &format!("{}?access_token={valid}", warden.url),
            hyper::Method::POST,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
                ("authorization", &authorization),
            ],
            "{}",
        )
        .await;
    assert_refused(&in_query, 400, Some("invalid_request"), "token in the query string");

    assert_eq!(recorded_calls(&warden), 0, "no refused call reached the upstream");
    for (what, token, _) in &attacks {
        assert!(!warden.log().contains(token.as_str()), "{what}: the log holds the token");
    }
    assert!(!warden.log().contains(&valid), "the log holds a valid token");
}

// The identity provider serves on this runtime while Warden::start blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_needing_scopes_the_token_lacks_get_insufficient_scope() {
    let idp = Idp::start(("unused", "unused"), "unused").await;
    let warden = Warden::start(&config(&idp, 0));
    let engineer = |scope: &str| {
        idp.sign_with("key-1", &idp.claims(RESOURCE, json!({"tenant": "acme", "roles": ["engineer"], "scope": scope})))
    };
    let arguments = json!({"path": "note.txt", "content": "hello"});

    let without = call(&warden, &engineer("demo:read"), "write_workspace_file", arguments.clone()).await;
    assert_refused(&without, 403, Some("insufficient_scope"), "write without demo:write");
    assert!(without.header("www-authenticate").unwrap().contains("scope=\"demo:write\""), "{without:?}");
    assert_eq!(without.json()["error"]["code"], -32014);
    assert_eq!(recorded_calls(&warden), 0, "the refused call did not reach the upstream");

    // A tool hidden from the caller does not exist for it: no scope
    // challenge that would reveal it.
    let analyst = idp.sign_with("key-1", &analyst(&idp));
    let hidden = call(&warden, &analyst, "write_workspace_file", arguments.clone()).await;
    assert_ne!(hidden.status, 403, "{hidden:?}");
    assert!(hidden.json()["error"]["message"].as_str().unwrap().contains("unknown tool"), "{hidden:?}");

    let with = call(&warden, &engineer("demo:read demo:write"), "write_workspace_file", arguments).await;
    assert_eq!(with.status, 200, "{with:?}");
    assert_eq!(with.json()["result"]["isError"], false, "{with:?}");
    assert_eq!(recorded_calls(&warden), 1);
}

// The identity provider serves on this runtime while Warden::start blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_survive_an_outage_and_are_refetched_at_a_limited_rate() {
    let idp = Idp::start(("unused", "unused"), "unused").await;
    let warden = Warden::start(&config(&idp, 0));
    let claims = analyst(&idp);
    let old = idp.sign_with("key-1", &claims);
    assert_eq!(list(&warden, &old).await.status, 200);

    // Rotation: a token signed with a new key is accepted at once (the unknown
    // kid triggers a refetch); once the old key is retired, its tokens are not.
    idp.rotate("key-2", true);
    let new = idp.sign_with("key-2", &claims);
    assert_eq!(list(&warden, &new).await.status, 200, "a token with the new key");
    assert_refused(&list(&warden, &old).await, 401, Some("invalid_token"), "a token with the retired key");

    // Outage: cached keys keep working; an unknown key is refused, not an error.
    idp.set_down(true);
    assert_eq!(list(&warden, &new).await.status, 200, "cached keys during an outage");
    assert_refused(
        &list(&warden, &idp.sign_unpublished(&claims)).await,
        401,
        Some("invalid_token"),
        "outage, unknown key",
    );

    // A gateway that never got keys refuses with 401, never 500.
    let cold = Warden::start(&config(&idp, 0));
    let reply = list(&cold, &new).await;
    assert_refused(&reply, 401, Some("invalid_token"), "no keys at all");
    assert!(reply.header("www-authenticate").unwrap().contains("no signing keys"), "{reply:?}");
    // The count below is the identity provider's, across gateways: stop the
    // others first, so a refetch of theirs (the cold one retries once the
    // provider is back) is not taken for the limited gateway's.
    drop(cold);
    drop(warden);
    idp.set_down(false);

    // Rate limit: with a long minimum interval, unknown kids do not refetch.
    let limited = Warden::start(&config(&idp, 3600));
    assert_eq!(list(&limited, &new).await.status, 200, "keys fetched at start");
    let fetches = idp.jwks_requests();
    idp.rotate("key-3", false);
    let newest = idp.sign_with("key-3", &claims);
    for _ in 0..5 {
        assert_refused(&list(&limited, &newest).await, 401, Some("invalid_token"), "rate-limited refetch");
    }
    assert_eq!(idp.jwks_requests(), fetches, "no refetch within min_refresh_s");
}

// The identity provider serves on this runtime while Warden::start blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_get_their_own_credentials_never_the_clients_token() {
    const CLIENT_SECRET: &str = "client-secret-for-warden";
    const STATIC_TOKEN: &str = "static-upstream-secret";
    let idp = Idp::start(("warden-gateway", CLIENT_SECRET), "https://fault-http.example").await;
    let python = peers().join("venv/bin/python");
    let fake = root().join("tests/e2e/fakes/http_server.py");
    let (fetched_port, static_port) = (free_port(), free_port());
    let _fetched = Helper::spawn(python.to_str().unwrap(), &[fake.to_str().unwrap(), &fetched_port.to_string()]);
    let _static = Helper::spawn(python.to_str().unwrap(), &[fake.to_str().unwrap(), &static_port.to_string()]);
    listening(fetched_port).await;
    listening(static_port).await;
    let config = format!(
        r#"
[naming]
mode = "prefix"

[oauth]
resource = "{RESOURCE}"

[[oauth.issuer]]
issuer = "{issuer}"
jwks_url = "{jwks}"

[[upstream]]
name = "fetched"
url = "http://127.0.0.1:{fetched_port}/mcp"
[upstream.auth]
token_url = "{token_url}"
client_id = "warden-gateway"
client_secret_env = "E2E_CLIENT_SECRET"
scope = "mcp:call"

[[upstream]]
name = "static"
url = "http://127.0.0.1:{static_port}/mcp"
[upstream.auth]
bearer_env = "E2E_STATIC_TOKEN"

[[upstream]]
name = "process"
command = "{python}"
args = ["{{root}}/tests/e2e/fakes/stdio_server.py"]
env = {{ FIXED = "from-config" }}
env_from = {{ FROM_GATEWAY = "E2E_FOR_PROCESS" }}
"#,
        issuer = idp.issuer,
        jwks = idp.jwks_url(),
        token_url = idp.token_url(),
        python = python.display(),
    );
    let warden = Warden::start_with_env(
        &config,
        &[("E2E_CLIENT_SECRET", CLIENT_SECRET), ("E2E_STATIC_TOKEN", STATIC_TOKEN), ("E2E_FOR_PROCESS", "copied")],
    );
    let token = idp.sign_with("key-1", &idp.claims(RESOURCE, json!({"roles": ["any"]})));
    let text = |reply: e2e::Reply| -> Value {
        let message = reply.json();
        serde_json::from_str(message["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("{message}")))
            .unwrap()
    };

    // HTTP, client credentials: every request carried a token Warden fetched.
    let seen = text(call(&warden, &token, "fetched__headers", json!({})).await);
    let seen = seen.as_array().unwrap();
    assert!(!seen.is_empty());
    for headers in seen {
        let headers = headers.to_string();
        assert!(!headers.contains(&token), "the client's token reached an HTTP upstream: {headers}");
        assert!(!headers.contains(CLIENT_SECRET), "the client secret reached the upstream");
    }
    let authorization = |h: &Value| {
        h.as_object().unwrap().iter().find(|(k, _)| k.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.clone())
    };
    let first = authorization(&seen[0]).expect("an Authorization header");
    assert!(first.as_str().unwrap().starts_with("Bearer ey"), "{first}");
    assert!(seen.iter().all(|h| authorization(h) == Some(first.clone())), "one cached token for all requests");
    assert_eq!(idp.token_requests(), 1, "the token was fetched once and cached");

    // HTTP, static bearer from the environment.
    let seen = text(call(&warden, &token, "static__headers", json!({})).await);
    for headers in seen.as_array().unwrap() {
        assert_eq!(authorization(headers), Some(json!(format!("Bearer {STATIC_TOKEN}"))), "{headers}");
        assert!(!headers.to_string().contains(&token));
    }

    // stdio: the configured environment, nothing of the client's or the gateway's secrets.
    let env = text(call(&warden, &token, "process__env", json!({})).await);
    let env = env.as_object().unwrap();
    assert_eq!(env["FIXED"], "from-config");
    assert_eq!(env["FROM_GATEWAY"], "copied");
    for (name, value) in env {
        let value = value.as_str().unwrap_or_default();
        assert!(!value.contains(&token), "the client's token is in the process's {name}");
        assert!(value != CLIENT_SECRET && value != STATIC_TOKEN, "a gateway secret is in the process's {name}");
    }
    assert!(!env.contains_key("E2E_STATIC_TOKEN") && !env.contains_key("WARDEN_LOG"), "{env:?}");

    // And no secret in the gateway's log.
    let log = warden.log();
    for secret in [token.as_str(), CLIENT_SECRET, STATIC_TOKEN] {
        assert!(!log.contains(secret), "the log holds a secret");
    }
}

fn base64_url(text: &str) -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(text)
}

// The identity provider serves on this runtime while Warden::start blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_follows_its_identity_not_a_token() {
    let idp = Idp::start(("unused", "unused"), "unused").await;
    let warden = Warden::start(&config(&idp, 0));
    let alice = idp.sign_with("key-1", &analyst(&idp));
    let session = warden.initialize(&alice, "2025-11-25").await;

    // The same identity with a refreshed token, now also an engineer: same
    // session, and the new token's roles apply.
    let refreshed = idp.sign_with(
        "key-1",
        &idp.claims(RESOURCE, json!({"tenant": "acme", "roles": ["analyst", "engineer"], "jti": "refreshed"})),
    );
    let tools = tool_names(&warden.call(&refreshed, &session, 1, "tools/list", json!({})).await);
    assert!(tools.contains(&"write_workspace_file".to_owned()), "the refreshed token's roles apply: {tools:?}");

    // Another subject, or the same subject of another tenant, cannot use it.
    for (what, claims) in [
        ("another subject", json!({"sub": "mallory", "tenant": "acme", "roles": ["analyst"]})),
        ("another tenant", json!({"tenant": "globex", "roles": ["analyst"]})),
    ] {
        let token = idp.sign_with("key-1", &idp.claims(RESOURCE, claims));
        let authorization = format!("Bearer {token}");
        let reply = warden
            .post(
                &[
                    ("authorization", &authorization),
                    ("mcp-session-id", &session),
                    ("mcp-protocol-version", "2025-11-25"),
                ],
                &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}),
            )
            .await;
        assert_eq!(reply.status, 404, "{what}: {reply:?}");
    }
}

// The identity provider serves on this runtime while Warden::start blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_gets_through_with_a_token_and_sees_what_its_roles_allow() {
    let idp = Idp::start(("unused", "unused"), "unused").await;
    let warden = Warden::start(&config(&idp, 0));
    let run = |token: String| {
        let url = warden.url.clone();
        async move {
            let output = tokio::process::Command::new(peers().join("venv/bin/python"))
                .arg(root().join("tests/e2e/token_client.py"))
                .args([&url, &token])
                .output()
                .await
                .expect("run the Python client");
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            (
                output.status.success(),
                serde_json::from_str::<Value>(stdout.trim()).unwrap_or_else(|_| json!({"raw": stdout})),
            )
        }
    };
    let (ok, answer) = run(idp.sign_with("key-1", &analyst(&idp))).await;
    assert!(ok, "{answer}");
    let tools: Vec<&str> = answer["tools"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(tools.contains(&"query_analytics_db") && !tools.contains(&"write_workspace_file"), "{tools:?}");

    let (ok, answer) = run(idp.sign_with("key-1", &analyst(&idp)).replace('.', ".x")).await;
    assert!(!ok, "a broken token gets through: {answer}");
    // The SDK surfaces the 401's JSON-RPC error.
    assert!(answer["error"].as_str().unwrap_or_default().contains("invalid token"), "{answer}");
}

// The identity provider serves on this runtime while Warden::start blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_tokens_come_over_verified_https() {
    let scratch = e2e::Scratch::new("tls");
    let ca = scratch.path().join("test-ca.pem");
    let idp = Idp::start_tls(("warden-gateway", "tls-secret"), "https://fault-http.example", &ca).await;
    assert!(idp.issuer.starts_with("https://"));
    let python = peers().join("venv/bin/python");
    let fake = root().join("tests/e2e/fakes/http_server.py");
    let port = free_port();
    let _upstream = Helper::spawn(python.to_str().unwrap(), &[fake.to_str().unwrap(), &port.to_string()]);
    listening(port).await;
    let config = |trust: bool| {
        let tls = if trust { format!("[tls]\nca_files = [\"{}\"]\n", ca.display()) } else { String::new() };
        format!(
            r#"{tls}
[oauth]
resource = "{RESOURCE}"
[[oauth.issuer]]
issuer = "{issuer}"
jwks_url = "{issuer}/jwks"

[[upstream]]
name = "web"
url = "http://127.0.0.1:{port}/mcp"
[upstream.auth]
token_url = "{issuer}/token"
client_id = "warden-gateway"
client_secret_env = "E2E_CLIENT_SECRET"
"#,
            issuer = idp.issuer,
        )
    };
    let token = idp.sign_with("key-1", &idp.claims(RESOURCE, json!({})));

    // Trusting the test CA: keys and the upstream's token arrive over https.
    let warden = Warden::start_with_env(&config(true), &[("E2E_CLIENT_SECRET", "tls-secret")]);
    let reply = call(&warden, &token, "ok", json!({})).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["result"]["content"][0]["text"], "ok", "{reply:?}");
    assert_eq!(idp.token_requests(), 1, "the client-credentials token came over https");
    drop(warden);

    // Not trusting it: the certificate is refused, so there are no keys.
    let fetches = idp.jwks_requests();
    let untrusting = Warden::start_with_env(&config(false), &[("E2E_CLIENT_SECRET", "tls-secret")]);
    let reply = list(&untrusting, &token).await;
    assert_refused(&reply, 401, Some("invalid_token"), "JWKS from an untrusted certificate");
    assert!(reply.header("www-authenticate").unwrap().contains("no signing keys"), "{reply:?}");
    assert_eq!(idp.jwks_requests(), fetches, "no JWKS was served over the refused connection");
    assert!(untrusting.logged("cannot fetch the JWKS").await, "the refusal is logged");
}
