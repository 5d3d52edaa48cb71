//! The Streamable HTTP endpoint: one path, both protocol eras.
//!
//! Every request passes, in order: the path; the `Host` and `Origin` checks
//! (DNS rebinding: 403 for a foreign origin or host); authentication (401);
//! content type, `Accept`, body size and time (415, 406, 413, 408), JSON
//! nesting depth and batch size (400); then the era, chosen per request by
//! `MCP-Protocol-Version` (2026-07-28 → [`super::modern`]; a legacy version
//! or none → [`super::legacy`]; anything else → 400). Before any of that a
//! connection must find a place ([`super::limits`]: 503 past the connection
//! limits) and send its request head in time.
//! `GET /healthz` answers 200 without authentication, for load balancers.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use http_body_util::{BodyExt, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    Body, ServerSettings, SessionSettings, full, json_response, legacy,
    limits::{self, Activity, Admission, Expired, Metrics, Tracked, Watched, count},
    modern,
    parked::Parked,
    rpc_error,
};
use crate::{
    auth::{AuthError, Authenticator},
    gateway::{Caller, Gateway, GatewayError},
    mcp::{self, RpcError, code, header as h},
};

/// Everything a request handler needs.
pub struct HttpState {
    gateway: Arc<Gateway>,
    auth: Authenticator,
    settings: ServerSettings,
    sessions: legacy::Sessions,
    parked: Arc<Parked>,
    server_info: Value,
    admission: Arc<Admission>,
    metrics: Arc<Metrics>,
}

impl HttpState {
    /// State for serving `gateway`.
    pub fn new(
        gateway: Arc<Gateway>,
        auth: Authenticator,
        settings: ServerSettings,
        sessions: SessionSettings,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::default());
        let seal = gateway.session_seal();
        Arc::new(Self {
            gateway,
            auth,
            admission: Admission::new(settings.limits.clone(), Arc::clone(&metrics)),
            settings,
            sessions: legacy::Sessions::new(sessions, Arc::clone(&metrics), seal),
            metrics,
            parked: Arc::default(),
            server_info: json!({ "name": "warden", "title": "Warden MCP gateway", "version": env!("CARGO_PKG_VERSION") }),
        })
    }
}

impl HttpState {
    /// The listener's settings.
    pub(crate) fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// The bounds' counters, for the control plane's metrics.
    pub(crate) fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        self.metrics.snapshot()
    }
}

/// Serve until `shutdown` is cancelled; connections in progress get to finish
/// their current request.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>, shutdown: CancellationToken) {
    let housekeeping = tokio::spawn(housekeeping(Arc::clone(&state), shutdown.clone()));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = match state.admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(error) => {
                // Counted in /admin/metrics; a flood must not flood the log too.
                tracing::debug!(%peer, reason = %error.message, "connection refused");
                connections.spawn(limits::refuse(stream, error));
                continue;
            }
        };
        connections.spawn(connection(Arc::clone(&state), stream, peer, slot, shutdown.clone()));
        while connections.try_join_next().is_some() {}
    }
    state.sessions.end_all();
    housekeeping.abort();
    while tokio::time::timeout(Duration::from_secs(6), connections.join_next()).await.ok().flatten().is_some() {}
}

/// Serve one admitted connection until it closes, passes a time bound, or
/// the gateway shuts down.
async fn connection(
    state: Arc<HttpState>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    _slot: limits::Slot,
    shutdown: CancellationToken,
) {
    let limits = state.settings.limits.clone();
    let metrics = Arc::clone(&state.metrics);
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
    let busy = Arc::clone(&activity);
    let service = service_fn(move |request| {
        let state = Arc::clone(&state);
        let busy = busy.begin();
        async move { Ok::<_, Infallible>(handle(&state, peer, request).await.map(|body| Tracked::new(body, busy))) }
    });
    // hyper's own header timer is off: it also runs while a kept-alive
    // connection is idle, and `Activity` tells the two apart.
    let connection = http1::Builder::new().keep_alive(true).header_read_timeout(None).serve_connection(io, service);
    tokio::pin!(connection);
    let mut check = tokio::time::interval(Activity::check_every(&limits));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = check.tick() => match activity.expired(&limits) {
                // Dropping the connection closes it: nothing is in flight.
                Some(Expired::Header) => {
                    count(&metrics.header_timeouts);
                    tracing::info!(
                        %peer,
                        limit_s = limits.header_timeout.as_secs(),
                        "closed: the request head did not arrive in time"
                    );
                    return;
                }
                Some(Expired::Idle) => {
                    count(&metrics.idle_closed);
                    tracing::debug!(%peer, "closed: idle past server.keep_alive_s");
                    return;
                }
                None => {}
            },
            _ = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
                return;
            }
        }
    }
}

/// Expire idle sessions; fan gateway changes out to sessions' streams.
async fn housekeeping(state: Arc<HttpState>, shutdown: CancellationToken) {
    let mut changes = state.gateway.changes();
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = sweep.tick() => {
                state.parked.sweep();
                for id in state.sessions.sweep() {
                    state.gateway.forget_session(&id);
                    tracing::info!(session = %id, "session expired");
                }
            }
            change = changes.recv() => match change {
                Ok(change) => state.sessions.fan_out(&change),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = shutdown.cancelled() => break,
        }
    }
}

pub(crate) fn forbidden(message: &str) -> Response<Body> {
    rpc_error(StatusCode::FORBIDDEN, Value::Null, &RpcError::new(code::INVALID_REQUEST, message))
}

pub(crate) fn plain(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = rpc_error(status, Value::Null, &RpcError::new(code::INVALID_REQUEST, message));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
    }
    response
}

/// Whether a host name (without port) is loopback.
fn loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host[:port]` → host.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// DNS-rebinding defence: a browser page on a foreign origin, or a request
/// addressed to a foreign host name, never reaches a loopback gateway.
pub(crate) fn check_origin_and_host(
    settings: &ServerSettings,
    request: &Request<Incoming>,
) -> Result<(), Response<Body>> {
    let headers = request.headers();
    if let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        let name = strip_port(host);
        let allowed = loopback_host(name)
            || settings.allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
            || (!settings.listen.ip().is_loopback() && settings.allowed_hosts.is_empty());
        if !allowed {
            return Err(forbidden(&format!("host {host:?} is not allowed (see server.allowed_hosts)")));
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = origin.split_once("://").map(|(_, rest)| strip_port(rest.trim_end_matches('/'))).unwrap_or("");
        let allowed = origin != "null"
            && (loopback_host(host) || settings.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(origin)));
        if !allowed {
            return Err(forbidden(&format!("origin {origin:?} is not allowed (see server.allowed_origins)")));
        }
    }
    Ok(())
}

/// The W3C `traceparent` header of a request, if any.
pub(crate) fn traceparent(headers: &hyper::HeaderMap) -> Option<String> {
    headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// The W3C `tracestate` header of a request, if any.
pub(crate) fn tracestate(headers: &hyper::HeaderMap) -> Option<String> {
    headers.get("tracestate").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn accepts(request: &Request<Incoming>, wanted: &[&str]) -> bool {
    let accept =
        request.headers().get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
    let types: Vec<&str> = accept.split(',').map(|t| t.split(';').next().unwrap_or("").trim()).collect();
    types.contains(&"*/*") || wanted.iter().all(|w| types.iter().any(|t| t.eq_ignore_ascii_case(w)))
}

/// Handle one HTTP request.
pub(crate) async fn handle(state: &HttpState, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path();
    if path == "/healthz" && request.method() == Method::GET {
        return Response::builder().status(StatusCode::OK).body(full("ok\n")).expect("valid response");
    }
    if let Some(response) = protected_resource_metadata(state, &request) {
        return response;
    }
    if path != state.settings.path {
        return plain(StatusCode::NOT_FOUND, &format!("no MCP endpoint at {path}; it is at {}", state.settings.path));
    }
    if let Err(response) = check_origin_and_host(&state.settings, &request) {
        return response;
    }
    // A token in the URL ends up in logs and proxies: refuse it outright.
    let in_url = request.uri().query().is_some_and(|q| {
        q.split('&').any(|pair| pair.split('=').next().is_some_and(|k| k.eq_ignore_ascii_case("access_token")))
    });
    if in_url {
        state.gateway.metrics().auth_failure(AuthError::InUrl.kind());
        return unauthorized(&state.auth, &AuthError::InUrl);
    }
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = match state.auth.authenticate(authorization, peer.ip()).await {
        Ok(principal) => principal,
        Err(error) => {
            tracing::info!(%peer, %error, "request refused");
            state.gateway.metrics().auth_failure(error.kind());
            return unauthorized(&state.auth, &error);
        }
    };

    let version = request.headers().get(h::PROTOCOL_VERSION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let era = version.as_deref().map(mcp::era_of);
    match *request.method() {
        Method::POST => {}
        Method::GET | Method::DELETE if era == Some(Some(mcp::Era::Modern)) => {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "protocol 2026-07-28 uses POST only");
        }
        Method::GET | Method::DELETE if era == Some(None) => {
            return unsupported_version(version.as_deref().unwrap_or_default());
        }
        Method::GET => {
            if !accepts(&request, &["text/event-stream"]) {
                return plain(
                    StatusCode::NOT_ACCEPTABLE,
                    "GET opens an event stream: Accept must include text/event-stream",
                );
            }
            let headers = request.headers().clone();
            return legacy::get(legacy::Context {
                gateway: &state.gateway,
                sessions: &state.sessions,
                principal,
                headers: &headers,
                server_info: &state.server_info,
            });
        }
        Method::DELETE => {
            let headers = request.headers().clone();
            return legacy::delete(legacy::Context {
                gateway: &state.gateway,
                sessions: &state.sessions,
                principal,
                headers: &headers,
                server_info: &state.server_info,
            });
        }
        _ => return plain(StatusCode::METHOD_NOT_ALLOWED, "the MCP endpoint takes POST, GET and DELETE"),
    }

    let content_type = request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
        return plain(StatusCode::UNSUPPORTED_MEDIA_TYPE, "the body must be JSON (Content-Type: application/json)");
    }
    if !accepts(&request, &["application/json", "text/event-stream"]) {
        return plain(StatusCode::NOT_ACCEPTABLE, "Accept must include both application/json and text/event-stream");
    }
    let headers = request.headers().clone();
    let limit = state.settings.max_body_bytes;
    let bounds = &state.settings.limits;
    let body = tokio::time::timeout(bounds.body_timeout, Limited::new(request.into_body(), limit).collect());
    let bytes = match body.await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the body exceeds {limit} bytes (server.max_body_kib)"),
            );
        }
        Ok(Err(error)) => return plain(StatusCode::BAD_REQUEST, &format!("cannot read the body: {error}")),
        Err(_) => {
            count(&state.metrics.body_timeouts);
            tracing::info!(%peer, limit_s = bounds.body_timeout.as_secs(), "request refused: the body did not arrive in time");
            let mut response = plain(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the body did not arrive within {} s (server.body_timeout_s)", bounds.body_timeout.as_secs()),
            );
            // The rest of the body may still be on its way: do not read it as a request.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
    };
    if mcp::jsonrpc::nests_deeper_than(&bytes, bounds.max_json_depth) {
        count(&state.metrics.too_deep);
        return plain(
            StatusCode::BAD_REQUEST,
            &format!("the body nests deeper than {} levels (server.max_json_depth)", bounds.max_json_depth),
        );
    }
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(body) => body,
        Err(error) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                &RpcError::new(code::PARSE_ERROR, format!("Parse error: {error}")),
            );
        }
    };
    if let Value::Array(batch) = &body
        && batch.len() > bounds.max_batch
    {
        count(&state.metrics.batches_refused);
        return plain(
            StatusCode::BAD_REQUEST,
            &format!("a batch of {} messages; at most {} are taken (server.max_batch)", batch.len(), bounds.max_batch),
        );
    }
    // A call that needs scopes the token lacks: 403 with a challenge naming
    // them, so the client can ask its authorization server for more.
    let messages = match &body {
        Value::Array(batch) => batch.iter().collect(),
        one => vec![one],
    };
    for message in messages {
        if message.get("method").and_then(Value::as_str) == Some("tools/call") {
            let params = message.get("params").unwrap_or(&Value::Null);
            let missing = state.gateway.missing_scopes_for_call(&principal, params);
            if !missing.is_empty() {
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                let modern = era == Some(Some(mcp::Era::Modern));
                let mut caller = Caller::bare(Arc::clone(&principal), "http", modern);
                caller.traceparent = traceparent(&headers);
                caller.tracestate = tracestate(&headers);
                let challenge = state.auth.scope_challenge(&missing);
                let refusal = GatewayError::InsufficientScope(missing);
                let error = state.gateway.refuse(&caller, "tools/call", params, refusal).await;
                return insufficient_scope(challenge, id, &error);
            }
        }
    }
    let modern = match era {
        Some(Some(mcp::Era::Modern)) => true,
        Some(Some(mcp::Era::Legacy(_))) | None => false,
        // An unknown version: a modern request (with `_meta`) gets the
        // modern errors (-32020/-32022); anything else a plain 400.
        Some(None) => {
            if body
                .get("params")
                .and_then(|p| mcp::request_meta(p))
                .is_some_and(|m| m.contains_key(mcp::meta::PROTOCOL_VERSION))
            {
                true
            } else {
                return unsupported_version(version.as_deref().unwrap_or_default());
            }
        }
    };
    if modern {
        let cx = modern::Context {
            gateway: &state.gateway,
            parked: &state.parked,
            principal,
            headers: &headers,
            server_info: &state.server_info,
        };
        modern::post(cx, body).await
    } else {
        legacy::post(
            legacy::Context {
                gateway: &state.gateway,
                sessions: &state.sessions,
                principal,
                headers: &headers,
                server_info: &state.server_info,
            },
            body,
        )
        .await
    }
}

fn unsupported_version(version: &str) -> Response<Body> {
    rpc_error(
        StatusCode::BAD_REQUEST,
        Value::Null,
        &RpcError::new(code::INVALID_REQUEST, format!("Bad Request: unsupported MCP-Protocol-Version {version:?}"))
            .with_data(json!({ "supported": mcp::supported_versions() })),
    )
}

/// 401 (400 for a malformed request, per RFC 6750) with the challenge.
pub(crate) fn unauthorized(auth: &Authenticator, error: &AuthError) -> Response<Body> {
    let status = match error {
        AuthError::InUrl => StatusCode::BAD_REQUEST,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut response = rpc_error(status, Value::Null, &RpcError::new(code::INVALID_REQUEST, error.to_string()));
    if let Ok(challenge) = HeaderValue::from_str(&auth.challenge(error)) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// 403 for a call that needs more scopes, with the challenge naming them.
fn insufficient_scope(challenge: String, id: Value, error: &RpcError) -> Response<Body> {
    let mut response = rpc_error(StatusCode::FORBIDDEN, id, error);
    if let Ok(challenge) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// RFC 9728 metadata, at `/.well-known/oauth-protected-resource` and at that
/// path followed by the MCP endpoint's path. Public: clients read it before
/// they have a token. Absent (404) unless JWTs are accepted.
fn protected_resource_metadata(state: &HttpState, request: &Request<Incoming>) -> Option<Response<Body>> {
    const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";
    let rest = request.uri().path().strip_prefix(WELL_KNOWN)?;
    if !(rest.is_empty() || rest == state.settings.path) || request.method() != Method::GET {
        return None;
    }
    let oauth = state.auth.oauth()?;
    Some(json_response(StatusCode::OK, &oauth.metadata()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(strip_port("127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("localhost"), "localhost");
        assert!(
            loopback_host("localhost") && loopback_host("127.0.0.1") && loopback_host("::1") && loopback_host("[::1]")
        );
        assert!(!loopback_host("evil.example.com"));
    }
}
