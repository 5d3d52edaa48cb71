//! How clients reach the gateway: Streamable HTTP in both protocol eras
//! ([`http`], with [`legacy`] sessions and [`modern`] stateless requests),
//! and stdio for a single local client ([`stdio`]).
//!
//! Every request ends in [`crate::gateway::Gateway::handle`]; what differs is
//! how the answer travels: a JSON body when the upstream answered without
//! anything in between, an SSE stream as soon as it sent progress, a log
//! message or a request of its own.

// A refusal is a complete HTTP response; handlers return it as their error.
#![allow(clippy::result_large_err)]

pub mod http;
mod legacy;
mod limits;
mod modern;
pub(crate) mod parked;
pub mod seal;
mod settings;
pub mod stdio;
mod stream;

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Response, StatusCode, header};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::mcp::{RpcError, jsonrpc};
pub use settings::{ConnectionLimits, ServerSettings, SessionSettings};
pub use stream::Stream;

/// Response bodies: a whole JSON document, or an event stream.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(value.to_string()))
        .expect("valid response")
}

/// An HTTP error with a JSON-RPC error body (`id` null when unknown).
pub(crate) fn rpc_error(status: StatusCode, id: Value, error: &RpcError) -> Response<Body> {
    json_response(status, &jsonrpc::error_response(id, error))
}

/// An empty response (202 Accepted, 204, 405 …).
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    Response::builder().status(status).body(full(Bytes::new())).expect("valid response")
}

/// The work behind one client request, and the side traffic it produces.
pub(crate) struct Exchange {
    /// The client's request id.
    pub id: Value,
    /// Notifications and requests for the client, in order, before the answer.
    pub events: mpsc::UnboundedReceiver<Value>,
    /// The answer.
    pub work: Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>,
    /// Where the limit stage leaves the tightest rule's state, for the
    /// answer's `RateLimit` headers.
    pub limit_note: Option<crate::gateway::LimitNote>,
}

/// How an exchange's SSE stream behaves, and how errors map to HTTP statuses.
pub(crate) struct StreamPolicy {
    /// Where events go (and where a resuming client finds them).
    pub stream: Arc<Stream>,
    /// Send an id-only event first, so the client can resume even before the
    /// first real event (2025-11-25).
    pub prime: bool,
    /// Stop the work when the client disconnects (2026-07-28 treats a closed
    /// stream as cancellation; the legacy revisions do not).
    pub cancel_on_disconnect: bool,
}

/// The HTTP status for an error answered as JSON: 2026-07-28 ties its own
/// error codes to statuses (400, or 404 for an unknown method); the legacy
/// revisions answer every JSON-RPC error with 200.
pub(crate) fn error_status(modern: bool, error: &RpcError) -> StatusCode {
    use crate::mcp::code;
    match error.code {
        code::HEADER_MISMATCH | code::MISSING_CLIENT_CAPABILITY | code::UNSUPPORTED_VERSION if modern => {
            StatusCode::BAD_REQUEST
        }
        code::METHOD_NOT_FOUND if modern => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// Answer an exchange: JSON if the answer comes before any side traffic,
/// otherwise an SSE stream of the side traffic and then the answer. `finish`
/// shapes the result (era-specific decoration) before it is sent.
pub(crate) async fn respond(
    exchange: Exchange,
    modern: bool,
    open_stream: impl FnOnce() -> StreamPolicy,
    finish: impl Fn(Result<Value, RpcError>) -> Result<Value, RpcError> + Send + 'static,
) -> Response<Body> {
    let Exchange { id, mut events, mut work, limit_note } = exchange;
    let first = tokio::select! {
        biased;
        result = &mut work => match events.try_recv() {
            Ok(event) => Err((Some(event), Some(result))),
            Err(_) => Ok(result),
        },
        Some(event) = events.recv() => Err((Some(event), None)),
    };
    let (first_event, done) = match first {
        Ok(result) => {
            let result = finish(result);
            let status = result.as_ref().err().map_or(StatusCode::OK, |e| error_status(modern, e));
            let headers = limit_note.and_then(|note| note.lock().unwrap().take()).map(|h| rate_limit_headers(&h));
            let mut response = json_response(status, &answer(&id, result));
            for (name, value) in headers.unwrap_or_default() {
                if let Ok(value) = header::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            return response;
        }
        Err(pending) => pending,
    };

    let policy = open_stream();
    let stream = Arc::clone(&policy.stream);
    if policy.prime {
        stream.push("");
    }
    if let Some(event) = first_event {
        stream.push(&event.to_string());
    }
    let producer = Arc::clone(&stream);
    let task = tokio::spawn(async move {
        let result = match done {
            Some(result) => result,
            None => loop {
                tokio::select! {
                    biased;
                    Some(event) = events.recv() => { producer.push(&event.to_string()); }
                    result = &mut work => break result,
                }
            },
        };
        while let Ok(event) = events.try_recv() {
            producer.push(&event.to_string());
        }
        producer.push(&answer(&id, finish(result)).to_string());
        producer.finish();
    });
    let mut body = stream.body(0);
    if policy.cancel_on_disconnect {
        let abort = task.abort_handle();
        body = body.on_drop(move || abort.abort());
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body.boxed())
        .expect("valid response")
}

/// The IETF httpapi draft's fields (draft-ietf-httpapi-ratelimit-headers-10)
/// for a call's tightest (or refusing) rule:
/// `RateLimit-Policy: "<name>";q=<quota>;w=<window s>`,
/// `RateLimit: "<name>";r=<remaining>;t=<seconds until reset>`, and for a
/// refusal `Retry-After`. A refusal stays HTTP 200 with the JSON-RPC error:
/// MCP clients treat other statuses as a broken transport and would lose
/// the error's data.
fn rate_limit_headers(rule: &crate::limits::Headline) -> Vec<(header::HeaderName, String)> {
    let name: String = rule.name.chars().filter(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\')).collect();
    let mut headers = vec![
        (
            header::HeaderName::from_static("ratelimit-policy"),
            format!("\"{name}\";q={};w={}", rule.quota, rule.window_s),
        ),
        (header::HeaderName::from_static("ratelimit"), format!("\"{name}\";r={};t={}", rule.remaining, rule.reset_s)),
    ];
    if let Some(retry) = rule.retry_after_s {
        headers.push((header::RETRY_AFTER, retry.to_string()));
    }
    headers
}

/// The JSON-RPC response for a result.
fn answer(id: &Value, result: Result<Value, RpcError>) -> Value {
    match result {
        Ok(result) => jsonrpc::response(id.clone(), result),
        Err(error) => jsonrpc::error_response(id.clone(), &error),
    }
}
