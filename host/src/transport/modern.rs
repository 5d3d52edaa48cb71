//! The 2026-07-28 revision over HTTP: every POST stands alone, carrying the
//! protocol version and client capabilities in `params._meta` and mirroring
//! the method (and tool, prompt or resource name) in `Mcp-*` headers, which
//! must agree with the body. No sessions; `server/discover` instead of
//! `initialize`; `subscriptions/listen` instead of the GET stream.
//!
//! Validation order follows the conformance suite: `_meta` present (-32602),
//! header matches `_meta` (-32020), version supported (-32022), method known
//! (404 + -32601), headers match the body (-32020).

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::{
    Body, Exchange, Stream, StreamPolicy, empty, json_response,
    parked::{self, Parked},
    respond, rpc_error,
};
use crate::{
    auth::Principal,
    gateway::{Caller, Change, Gateway, LimitNote},
    mcp::{self, Message, RpcError, code, header as h, jsonrpc, meta},
    upstream::CallHooks,
};

/// Methods of the legacy revisions that 2026-07-28 removed.
const REMOVED: [&str; 5] = ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];
/// Methods the gateway answers in this revision.
const KNOWN: [&str; 10] = [
    "server/discover",
    "subscriptions/listen",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
];
/// Methods whose upstream may need input from the client mid-call.
const ASKING: [&str; 3] = ["tools/call", "prompts/get", "resources/read"];
/// List and read results carry caching hints; these are per credential
/// (listings depend on the caller's roles) and may change at any time
/// (policies hot-reload), so: private, and stale at once.
const CACHEABLE: [&str; 5] =
    ["tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"];

/// What the modern handler needs from the HTTP layer.
pub(crate) struct Context<'a> {
    pub gateway: &'a Arc<Gateway>,
    pub parked: &'a Arc<Parked>,
    pub principal: Arc<Principal>,
    pub headers: &'a HeaderMap,
    pub server_info: &'a Value,
}

fn bad(id: &Value, error: RpcError) -> Response<Body> {
    rpc_error(StatusCode::BAD_REQUEST, id.clone(), &error)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A 2026-07-28 POST.
pub(crate) async fn post(cx: Context<'_>, body: Value) -> Response<Body> {
    if body.is_array() {
        return bad(
            &Value::Null,
            RpcError::new(code::INVALID_REQUEST, "JSON-RPC batches are not part of protocol 2026-07-28"),
        );
    }
    let (id, method, params) = match Message::parse(body) {
        Ok(Message::Request { id, method, params }) => (Some(id), method, params),
        Ok(Message::Notification { method, params }) => (None, method, params),
        Ok(_) => {
            return bad(
                &Value::Null,
                RpcError::new(code::INVALID_REQUEST, "clients send requests and notifications only"),
            );
        }
        Err(error) => return bad(&Value::Null, error),
    };
    let reply_id = id.clone().unwrap_or(Value::Null);

    // 1. `_meta` carries the version and the client's capabilities.
    let meta = mcp::request_meta(&params);
    let version = meta.and_then(|m| m.get(meta::PROTOCOL_VERSION)).and_then(Value::as_str);
    let capabilities = meta.and_then(|m| m.get(meta::CLIENT_CAPABILITIES)).filter(|c| c.is_object());
    let (Some(version), Some(capabilities)) = (version, capabilities) else {
        return bad(
            &reply_id,
            RpcError::invalid_params(format!(
                "params._meta must carry {} and {} (an object)",
                meta::PROTOCOL_VERSION,
                meta::CLIENT_CAPABILITIES
            )),
        );
    };
    // 2. The version header mirrors it.
    let header_version = header(cx.headers, h::PROTOCOL_VERSION).unwrap_or_default();
    if header_version != version {
        return bad(
            &reply_id,
            RpcError::new(
                code::HEADER_MISMATCH,
                format!(
                    "Header mismatch: MCP-Protocol-Version header value '{header_version}' does not match body value '{version}'"
                ),
            ),
        );
    }
    // 3. A version the gateway speaks.
    if mcp::era_of(version) != Some(mcp::Era::Modern) {
        return bad(
            &reply_id,
            RpcError::new(code::UNSUPPORTED_VERSION, "Unsupported protocol version")
                .with_data(json!({ "supported": mcp::supported_versions(), "requested": version })),
        );
    }
    // 4. A method it knows.
    let Some(id) = id else {
        // No client-to-server notifications are defined over HTTP in this revision.
        return empty(StatusCode::ACCEPTED);
    };
    if REMOVED.contains(&method.as_str()) || !KNOWN.contains(&method.as_str()) {
        return rpc_error(StatusCode::NOT_FOUND, id, &RpcError::method_not_found(&method));
    }
    // 5. The other headers agree with the body.
    if let Err(error) = check_headers(cx.headers, &method, &params) {
        return bad(&id, error);
    }
    let forwarded_params = match check_param_headers(&cx, &method, &params) {
        Ok(forwarded) => forwarded,
        Err(error) => return bad(&id, error),
    };

    let capabilities = capabilities.clone();
    match method.as_str() {
        "server/discover" => json_response(StatusCode::OK, &jsonrpc::response(id, discover(&cx))),
        "subscriptions/listen" => listen(&cx, id, &params),
        _ => {
            let (events, receiver) = mpsc::unbounded_channel();
            let limit_note = LimitNote::default();
            let mut caller = Caller {
                principal: Arc::clone(&cx.principal),
                session: None,
                hooks: CallHooks {
                    notifications: Some(events),
                    requests: None,
                    client_capabilities: capabilities.clone(),
                    log_level: None,
                    param_headers: forwarded_params,
                    trace_headers: Vec::new(),
                    screen: None,
                },
                modern: true,
                transport: "http",
                traceparent: super::http::traceparent(cx.headers),
                tracestate: super::http::tracestate(cx.headers),
                limit_note: Some(Arc::clone(&limit_note)),
            };
            let gateway = Arc::clone(cx.gateway);
            let server_info = cx.server_info.clone();
            let cacheable = CACHEABLE.contains(&method.as_str());
            let work: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>> + Send>> =
                if ASKING.contains(&method.as_str()) {
                    // Calls that may need the client's input: an upstream that asks
                    // mid-call (legacy) is answered through input_required rounds.
                    let subject = cx.principal.view_key();
                    let parked = Arc::clone(cx.parked);
                    let request = parked::request_fingerprint(&method, &params);
                    let call = match params.get("requestState").filter(|s| Parked::is_ours(s)) {
                        Some(state) => {
                            let responses = params.get("inputResponses").and_then(Value::as_object);
                            match parked.resume(state.as_str().unwrap_or_default(), &subject, &request, responses) {
                                Ok(call) => call,
                                Err(error) => return bad(&id, error),
                            }
                        }
                        None => parked::start(&subject, request, capabilities, move |relay| {
                            caller.hooks.requests = Some(relay);
                            async move { gateway.handle(&caller, &method, params).await }
                        }),
                    };
                    Box::pin(async move { parked.drive(call).await })
                } else {
                    Box::pin(async move { gateway.handle(&caller, &method, params).await })
                };
            let finish = move |result: Result<Value, RpcError>| result.map(|r| decorate(r, &server_info, cacheable));
            let exchange = Exchange { id, events: receiver, work: Box::pin(work), limit_note: Some(limit_note) };
            respond(
                exchange,
                true,
                || StreamPolicy { stream: Stream::new(1), prime: false, cancel_on_disconnect: true },
                finish,
            )
            .await
        }
    }
}

/// `Mcp-Method` must equal the method; `Mcp-Name` the tool or prompt name or
/// resource URI, where the method has one.
fn check_headers(headers: &HeaderMap, method: &str, params: &Value) -> Result<(), RpcError> {
    let mismatch = |what: &str, header_value: &str, body_value: &str| {
        RpcError::new(
            code::HEADER_MISMATCH,
            format!("Header mismatch: {what} header value '{header_value}' does not match body value '{body_value}'"),
        )
    };
    match header(headers, h::METHOD) {
        Some(value) if value == method => {}
        Some(value) => return Err(mismatch("Mcp-Method", value, method)),
        None => return Err(RpcError::new(code::HEADER_MISMATCH, "the Mcp-Method header is required")),
    }
    if let Some(name) = mcp::name_param(method, params) {
        let raw = header(headers, h::NAME)
            .ok_or_else(|| RpcError::new(code::HEADER_MISMATCH, "the Mcp-Name header is required"))?;
        let decoded = mcp::decode_header_value(raw).ok_or_else(|| mismatch("Mcp-Name", raw, &name))?;
        if decoded != name {
            return Err(mismatch("Mcp-Name", &decoded, &name));
        }
    }
    Ok(())
}

/// For `tools/call`: each `Mcp-Param-*` header the tool's schema declares
/// must be present when its argument is, and decode to the same value.
/// Headers the schema does not declare are passed on untouched (an
/// intermediary must forward what it does not know); declared ones are
/// recomputed for the upstream from the arguments it will actually receive.
fn check_param_headers(cx: &Context<'_>, method: &str, params: &Value) -> Result<Vec<(String, String)>, RpcError> {
    let client_params: Vec<(String, &str)> = cx
        .headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with(h::PARAM_PREFIX))
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or("\u{fffd}")))
        .collect();
    if method != "tools/call" {
        return Ok(client_params.into_iter().map(|(n, v)| (n, v.to_owned())).collect());
    }
    let name = params.get("name").and_then(Value::as_str).unwrap_or_default();
    let specs = cx.gateway.tool_input_schema(name).map(|s| mcp::param_header_specs(&s)).unwrap_or_default();
    let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
    for (suffix, path) in &specs {
        let header = format!("{}{}", h::PARAM_PREFIX, suffix.to_ascii_lowercase());
        let Some(expected) = mcp::param_header_value(&arguments, path) else { continue };
        let expected = mcp::decode_header_value(&expected).unwrap_or(expected);
        let sent = client_params.iter().find(|(n, _)| *n == header).map(|(_, v)| *v);
        let Some(sent) = sent else {
            return Err(RpcError::new(
                code::HEADER_MISMATCH,
                format!(
                    "Mcp-Param-{suffix} header is missing but the request body's '{}' argument is present",
                    path.join(".")
                ),
            ));
        };
        let decoded = mcp::decode_header_value(sent).ok_or_else(|| {
            RpcError::new(code::HEADER_MISMATCH, format!("Mcp-Param-{suffix} header value is not valid"))
        })?;
        let same = decoded == expected
            || matches!((decoded.parse::<f64>(), expected.parse::<f64>()), (Ok(a), Ok(b)) if a == b);
        if !same {
            return Err(RpcError::new(
                code::HEADER_MISMATCH,
                format!(
                    "Header mismatch: Mcp-Param-{suffix} header value '{decoded}' does not match body value '{expected}'"
                ),
            ));
        }
    }
    let declared: Vec<String> =
        specs.iter().map(|(s, _)| format!("{}{}", h::PARAM_PREFIX, s.to_ascii_lowercase())).collect();
    Ok(client_params.into_iter().filter(|(n, _)| !declared.contains(n)).map(|(n, v)| (n, v.to_owned())).collect())
}

/// Every result says it is complete (unless it is `input_required`) and who
/// answered; lists and reads carry caching hints.
fn decorate(mut result: Value, server_info: &Value, cacheable: bool) -> Value {
    if !result.is_object() {
        return result;
    }
    if result.get("resultType").is_none() {
        result["resultType"] = json!("complete");
    }
    mcp::set_meta(&mut result, meta::SERVER_INFO, server_info.clone());
    if cacheable {
        result["ttlMs"] = json!(0);
        result["cacheScope"] = json!("private");
    }
    result
}

fn discover(cx: &Context<'_>) -> Value {
    let mut result = json!({
        "supportedVersions": mcp::supported_versions(),
        "capabilities": cx.gateway.capabilities(),
        "serverInfo": cx.server_info,
    });
    if let Some(instructions) = cx.gateway.instructions() {
        result["instructions"] = json!(instructions);
    }
    let mut result = decorate(result, cx.server_info, true);
    result["cacheScope"] = json!("public");
    result
}

/// `subscriptions/listen`: an acknowledgement, then the requested change
/// notifications tagged with the listen request's id, until the client closes.
fn listen(cx: &Context<'_>, id: Value, params: &Value) -> Response<Body> {
    let filter = params.get("notifications").cloned().unwrap_or_else(|| json!({}));
    let flags = ["toolsListChanged", "promptsListChanged", "resourcesListChanged"]
        .map(|key| (key, filter.get(key).and_then(Value::as_bool).unwrap_or(false)));
    let wants = move |key: &str| flags.iter().any(|(k, on)| *k == key && *on);
    let honoured = json!({
        "toolsListChanged": wants("toolsListChanged"),
        "promptsListChanged": wants("promptsListChanged"),
        "resourcesListChanged": wants("resourcesListChanged"),
    });
    let resources: Vec<String> = filter
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut honoured = honoured;
    if !resources.is_empty() {
        honoured["resourceSubscriptions"] = json!(resources);
    }
    let stream = Stream::new(1);
    let mut ack = json!({ "notifications": honoured });
    mcp::set_meta(&mut ack, meta::SUBSCRIPTION_ID, id.clone());
    stream.push(&jsonrpc::notification("notifications/subscriptions/acknowledged", ack).to_string());

    let mut changes = cx.gateway.changes();
    let producer = Arc::clone(&stream);
    let task = tokio::spawn(async move {
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let (method, params) = match &change {
                Change::ListChanged(method) => {
                    let wanted = match *method {
                        "notifications/tools/list_changed" => wants("toolsListChanged"),
                        "notifications/prompts/list_changed" => wants("promptsListChanged"),
                        "notifications/resources/list_changed" => wants("resourcesListChanged"),
                        _ => false,
                    };
                    if !wanted {
                        continue;
                    }
                    (*method, json!({}))
                }
                Change::ResourceUpdated { uri } if resources.contains(uri) => {
                    ("notifications/resources/updated", json!({ "uri": uri }))
                }
                Change::ResourceUpdated { .. } => continue,
            };
            let mut params = params;
            mcp::set_meta(&mut params, meta::SUBSCRIPTION_ID, id.clone());
            producer.push(&jsonrpc::notification(method, params).to_string());
        }
        producer.finish();
    });
    let abort = task.abort_handle();
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "text/event-stream")
        .header(hyper::header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(stream.body(0).on_drop(move || abort.abort()).boxed())
        .expect("valid response")
}
