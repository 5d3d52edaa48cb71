//! The legacy revisions (2025-03-26, 2025-06-18, 2025-11-25) over HTTP:
//! `initialize` opens a session bound to the principal that created it;
//! requests carry `Mcp-Session-Id`; answers come as JSON or on an SSE stream
//! that can be resumed with `Last-Event-ID`; `GET` opens the session's own
//! stream for list changes and resource updates; `DELETE` ends the session.
//! Batches are accepted only in 2025-03-26 sessions.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::future::{AbortHandle, Abortable};
use http_body_util::BodyExt;
use hyper::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::seal::{Sealed, SessionSeal};
use super::{
    Body, Exchange, SessionSettings, Stream, StreamPolicy, empty, json_response,
    limits::{self, Metrics, count},
    respond, rpc_error,
};
use crate::{
    auth::Principal,
    gateway::{Caller, Change, Gateway, LimitNote},
    mcp::{self, Message, RpcError, code, header as h, jsonrpc},
    upstream::{CallHooks, ClientRequests},
};

/// How long the gateway waits for a client to answer a relayed request.
const CLIENT_ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// One client session.
pub(crate) struct Session {
    id: String,
    principal: Arc<Principal>,
    version: &'static str,
    client_capabilities: Value,
    initialized: AtomicBool,
    last_used: Mutex<Instant>,
    streams: Mutex<HashMap<u64, Arc<Stream>>>,
    next_stream: AtomicU64,
    /// The stream a `GET` reads (stream 0), once opened, and whether a reader is on it.
    standalone: Mutex<Option<Arc<Stream>>>,
    standalone_reader: Arc<AtomicBool>,
    /// Requests the gateway sent the client, waiting for its answer.
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Value, RpcError>>>>,
    next_request: AtomicU64,
    /// The client's requests in progress, for `notifications/cancelled`.
    in_flight: Mutex<HashMap<String, AbortHandle>>,
    subscriptions: Mutex<HashSet<String>>,
    log_level: Mutex<Option<String>>,
    /// Bounds from `[sessions]`, and where refusals are counted.
    settings: SessionSettings,
    metrics: Arc<Metrics>,
}

impl Session {
    fn touch(&self) {
        *self.last_used.lock().unwrap() = Instant::now();
    }

    fn new_stream(&self) -> Arc<Stream> {
        let stream = Stream::bounded(self.next_stream.fetch_add(1, Ordering::Relaxed), self.settings.replay_bytes);
        let mut streams = self.streams.lock().unwrap();
        // Keep finished streams for resumption a while; drop the oldest beyond a bound.
        if streams.len() >= 64 {
            let finished: Vec<u64> = streams.iter().filter(|(_, s)| s.is_finished()).map(|(id, _)| *id).collect();
            for id in finished.into_iter().take(streams.len() - 32) {
                streams.remove(&id);
            }
        }
        streams.insert(stream.id(), Arc::clone(&stream));
        stream
    }

    fn end(&self) {
        for stream in self.streams.lock().unwrap().values() {
            stream.finish();
        }
        if let Some(stream) = self.standalone.lock().unwrap().as_ref() {
            stream.finish();
        }
        for (_, handle) in self.in_flight.lock().unwrap().drain() {
            handle.abort();
        }
        self.pending.lock().unwrap().clear();
    }

    fn notify(&self, notification: &Value) {
        if let Some(stream) = self.standalone.lock().unwrap().as_ref() {
            stream.push(&notification.to_string());
        }
    }
}

/// Relays an upstream's requests to this session's client, on the stream of
/// the call they belong to; the answer arrives as a separate POST.
struct Relay {
    session: Arc<Session>,
    events: mpsc::UnboundedSender<Value>,
}

impl ClientRequests for Relay {
    fn request(
        &self,
        method: String,
        params: Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>> + Send>> {
        let session = Arc::clone(&self.session);
        let events = self.events.clone();
        Box::pin(async move {
            let capability = match method.as_str() {
                "sampling/createMessage" => "sampling",
                "elicitation/create" => "elicitation",
                "roots/list" => "roots",
                _ => "",
            };
            if !capability.is_empty() && session.client_capabilities.get(capability).is_none() {
                return Err(RpcError::new(
                    code::METHOD_NOT_FOUND,
                    format!("the client did not declare the {capability} capability"),
                ));
            }
            let id = format!("warden-{}", session.next_request.fetch_add(1, Ordering::Relaxed));
            let (reply, answer) = oneshot::channel();
            {
                let mut pending = session.pending.lock().unwrap();
                let max = session.settings.max_client_requests;
                if pending.len() >= max {
                    count(&session.metrics.client_requests_refused);
                    return Err(limits::overloaded(
                        format!("{max} requests already wait for this client's answers; {method} was not sent"),
                        "sessions.max_client_requests",
                        max,
                    ));
                }
                pending.insert(id.clone(), reply);
            }
            // However this ends (answer, timeout, the call cancelled), the
            // place is freed.
            let _place = Waiting { session: Arc::clone(&session), id: id.clone() };
            if events.send(jsonrpc::request(json!(id), &method, params)).is_err() {
                return Err(RpcError::internal("the client's stream is gone"));
            }
            match tokio::time::timeout(CLIENT_ANSWER_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(RpcError::internal("the session ended before the client answered")),
                Err(_) => Err(RpcError::internal(format!("the client did not answer {method} in time"))),
            }
        })
    }
}

/// A relayed request's place among those waiting for the client.
struct Waiting {
    session: Arc<Session>,
    id: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.session.pending.lock().unwrap().remove(&self.id);
    }
}

/// All sessions.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    settings: SessionSettings,
    metrics: Arc<Metrics>,
    /// Seals session ids so other replicas can adopt them (with `[state] redis`).
    seal: Option<Arc<SessionSeal>>,
    /// Sealed sessions that ended here (deleted, expired, evicted), so this
    /// replica never adopts them back; bounded, oldest forgotten first.
    ended: Mutex<(HashSet<String>, std::collections::VecDeque<String>)>,
}

/// Most ended sealed sessions remembered.
const MAX_ENDED: usize = 65_536;

/// How old a sealed session may be when another replica adopts it.
const MAX_ADOPTED_AGE: Duration = Duration::from_secs(24 * 3600);

impl Sessions {
    pub(crate) fn new(settings: SessionSettings, metrics: Arc<Metrics>, seal: Option<Arc<SessionSeal>>) -> Self {
        Self { map: Mutex::default(), settings, metrics, seal, ended: Mutex::default() }
    }

    /// A new session for `principal` (see [`Sessions::insert`] for the bounds).
    fn create(
        &self,
        principal: Arc<Principal>,
        version: &'static str,
        client_capabilities: Value,
    ) -> Result<(Arc<Session>, Option<Arc<Session>>), RpcError> {
        let id = match &self.seal {
            Some(seal) => seal.seal(&Sealed {
                identity: principal.identity_key(),
                version: version.to_owned(),
                capabilities: client_capabilities.clone(),
                created_ms: crate::gateway::now_ms(),
            }),
            None => {
                let mut bytes = [0u8; 32];
                getrandom::fill(&mut bytes).expect("the OS provides randomness");
                URL_SAFE_NO_PAD.encode(bytes)
            }
        };
        self.insert(self.session(id, principal, version, client_capabilities, false))
    }

    /// A session opened on another replica, from its sealed id, for the
    /// identity sealed in it only; it counts toward this replica's bounds.
    fn adopt(&self, id: &str, principal: &Arc<Principal>) -> Option<Arc<Session>> {
        let sealed = self.seal.as_ref()?.open(id)?;
        if self.ended.lock().unwrap().0.contains(id) {
            return None;
        }
        if sealed.identity != principal.identity_key() {
            tracing::warn!(session = %id, subject = %principal.subject, "sealed session presented by another principal");
            return None;
        }
        let age = crate::gateway::now_ms().saturating_sub(sealed.created_ms);
        let version = mcp::LEGACY.iter().copied().find(|v| *v == sealed.version)?;
        if age > MAX_ADOPTED_AGE.as_millis() as u64 {
            return None;
        }
        let session = self.session(id.to_owned(), Arc::clone(principal), version, sealed.capabilities, true);
        let (session, _) = self.insert(session).ok()?;
        tracing::info!(session = %id, subject = %principal.subject, "session adopted from another replica");
        Some(session)
    }

    /// Remember that a session ended here (only sealed ones could come back).
    fn ended(&self, id: &str) {
        if self.seal.is_none() {
            return;
        }
        let mut guard = self.ended.lock().unwrap();
        let (set, order) = &mut *guard;
        if order.len() >= MAX_ENDED
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        if set.insert(id.to_owned()) {
            order.push_back(id.to_owned());
        }
    }

    fn session(
        &self,
        id: String,
        principal: Arc<Principal>,
        version: &'static str,
        client_capabilities: Value,
        initialized: bool,
    ) -> Arc<Session> {
        Arc::new(Session {
            id,
            principal,
            version,
            client_capabilities,
            initialized: AtomicBool::new(initialized),
            last_used: Mutex::new(Instant::now()),
            streams: Mutex::default(),
            next_stream: AtomicU64::new(1),
            standalone: Mutex::new(None),
            standalone_reader: Arc::new(AtomicBool::new(false)),
            pending: Mutex::default(),
            next_request: AtomicU64::new(1),
            in_flight: Mutex::default(),
            subscriptions: Mutex::default(),
            log_level: Mutex::default(),
            settings: self.settings.clone(),
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Add a session within the bounds. An identity at its own limit loses
    /// its least recently used session (returned, to be forgotten); a
    /// gateway at its total limit refuses, so no caller's sessions end for
    /// another's.
    fn insert(&self, session: Arc<Session>) -> Result<(Arc<Session>, Option<Arc<Session>>), RpcError> {
        let principal = Arc::clone(&session.principal);
        let mut map = self.map.lock().unwrap();
        // A scan, not an index: sessions start rarely next to the requests in them.
        let mine: Vec<&Arc<Session>> = map.values().filter(|s| s.principal.same_identity(&principal)).collect();
        let (held, oldest) =
            (mine.len(), mine.iter().min_by_key(|s| *s.last_used.lock().unwrap()).map(|s| s.id.clone()));
        let evicted = if held >= self.settings.max_per_principal {
            let oldest = oldest.and_then(|id| map.remove(&id));
            if let Some(oldest) = &oldest {
                self.ended(&oldest.id);
                count(&self.metrics.sessions_evicted);
                tracing::info!(
                    session = %oldest.id,
                    subject = %principal.subject,
                    limit = self.settings.max_per_principal,
                    "this identity's session limit reached; ending its least recently used session"
                );
                oldest.end();
            }
            oldest
        } else if map.len() >= self.settings.max {
            count(&self.metrics.sessions_refused);
            let max = self.settings.max;
            tracing::warn!(subject = %principal.subject, limit = max, "session refused: the gateway holds its maximum");
            return Err(limits::overloaded(
                format!("the gateway holds its maximum of {max} sessions; try again later"),
                "sessions.max",
                max,
            ));
        } else {
            None
        };
        map.insert(session.id.clone(), Arc::clone(&session));
        self.metrics.sessions_open.store(map.len() as u64, Ordering::Relaxed);
        Ok((session, evicted))
    }

    /// The session `id`, if it exists and belongs to `principal`. Another
    /// principal's session is reported as unknown: sessions are not credentials.
    /// A refreshed token of the same identity (issuer, subject, tenant) keeps
    /// the session; its roles and scopes are the new token's.
    fn get(&self, id: &str, principal: &Arc<Principal>) -> Option<Arc<Session>> {
        let known = self.map.lock().unwrap().get(id).cloned();
        let Some(session) = known else { return self.adopt(id, principal) };
        if !session.principal.same_identity(principal) {
            tracing::warn!(session = %id, subject = %principal.subject, "session presented by another principal");
            return None;
        }
        session.touch();
        Some(session)
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = self.map.lock().unwrap();
        let removed = map.remove(id);
        if removed.is_some() {
            self.ended(id);
        }
        self.metrics.sessions_open.store(map.len() as u64, Ordering::Relaxed);
        removed
    }

    /// End sessions idle longer than the timeout; returns their ids.
    pub(crate) fn sweep(&self) -> Vec<String> {
        let timeout = self.settings.idle_timeout;
        let mut map = self.map.lock().unwrap();
        let expired: Vec<String> = map
            .iter()
            .filter(|(_, s)| s.last_used.lock().unwrap().elapsed() > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        for id in &expired {
            if let Some(session) = map.remove(id) {
                self.ended(id);
                session.end();
            }
        }
        self.metrics.sessions_open.store(map.len() as u64, Ordering::Relaxed);
        expired
    }

    /// Tell sessions about a change, on their `GET` streams.
    pub(crate) fn fan_out(&self, change: &Change) {
        let sessions: Vec<Arc<Session>> = self.map.lock().unwrap().values().cloned().collect();
        for session in sessions {
            match change {
                Change::ListChanged(method) => session.notify(&jsonrpc::notification(method, json!({}))),
                Change::ResourceUpdated { uri } => {
                    if session.subscriptions.lock().unwrap().contains(uri) {
                        session.notify(&jsonrpc::notification("notifications/resources/updated", json!({"uri": uri})));
                    }
                }
            }
        }
    }

    /// End every session (shutdown).
    pub(crate) fn end_all(&self) {
        for (_, session) in self.map.lock().unwrap().drain() {
            session.end();
        }
        self.metrics.sessions_open.store(0, Ordering::Relaxed);
    }
}

/// What the legacy handler needs from the HTTP layer.
pub(crate) struct Context<'a> {
    pub gateway: &'a Arc<Gateway>,
    pub sessions: &'a Sessions,
    pub principal: Arc<Principal>,
    pub headers: &'a HeaderMap,
    pub server_info: &'a Value,
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(h::SESSION_ID).and_then(|v| v.to_str().ok())
}

/// The session a request names, or the response refusing it.
fn require_session(cx: &Context<'_>) -> Result<Arc<Session>, Response<Body>> {
    let Some(id) = session_id(cx.headers) else {
        return Err(rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            &RpcError::new(
                code::INVALID_REQUEST,
                "Bad Request: the Mcp-Session-Id header is required after initialize",
            ),
        ));
    };
    cx.sessions.get(id, &cx.principal).ok_or_else(|| {
        rpc_error(
            StatusCode::NOT_FOUND,
            Value::Null,
            &RpcError::new(code::INVALID_REQUEST, "session not found: it ended, or never existed; initialize again"),
        )
    })
}

/// A legacy POST.
pub(crate) async fn post(cx: Context<'_>, body: Value) -> Response<Body> {
    if let Value::Array(batch) = body {
        return post_batch(&cx, batch).await;
    }
    let message = match Message::parse(body) {
        Ok(message) => message,
        Err(error) => return rpc_error(StatusCode::BAD_REQUEST, Value::Null, &error),
    };
    match message {
        Message::Request { id, method, params } if method == "initialize" => initialize(&cx, id, params),
        Message::Request { id, method, params } => match require_session(&cx) {
            Ok(session) => request(&cx, session, id, method, params).await,
            Err(response) => response,
        },
        Message::Notification { method, params } => match require_session(&cx) {
            Ok(session) => {
                on_notification(&session, &method, &params);
                empty(StatusCode::ACCEPTED)
            }
            Err(response) => response,
        },
        Message::Result { id, result } => answer_pending(&cx, &id, Ok(result)),
        Message::Error { id, error } => answer_pending(&cx, &id, Err(error)),
    }
}

fn answer_pending(cx: &Context<'_>, id: &Value, answer: Result<Value, RpcError>) -> Response<Body> {
    let session = match require_session(cx) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let key = id.as_str().map(str::to_owned).unwrap_or_else(|| id.to_string());
    match session.pending.lock().unwrap().remove(&key) {
        Some(reply) => {
            let _ = reply.send(answer);
        }
        None => tracing::debug!(session = %session.id, %id, "answer to no pending request"),
    }
    empty(StatusCode::ACCEPTED)
}

fn on_notification(session: &Session, method: &str, params: &Value) {
    match method {
        "notifications/initialized" => session.initialized.store(true, Ordering::Relaxed),
        "notifications/cancelled" => {
            let id = params.get("requestId").map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()));
            if let Some(handle) = id.and_then(|id| session.in_flight.lock().unwrap().remove(&id)) {
                handle.abort();
            }
        }
        _ => {}
    }
}

fn initialize(cx: &Context<'_>, id: Value, params: Value) -> Response<Body> {
    if session_id(cx.headers).is_some() {
        return rpc_error(
            StatusCode::BAD_REQUEST,
            id,
            &RpcError::new(code::INVALID_REQUEST, "initialize must not carry an Mcp-Session-Id"),
        );
    }
    let requested = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(mcp::DEFAULT_LEGACY);
    // Answer with the requested revision if it is a legacy one we speak, else our newest.
    let version = mcp::LEGACY.iter().copied().find(|v| *v == requested).unwrap_or(mcp::LEGACY[0]);
    let capabilities = params.get("capabilities").cloned().unwrap_or_else(|| json!({}));
    let session = match cx.sessions.create(Arc::clone(&cx.principal), version, capabilities) {
        Ok((session, evicted)) => {
            if let Some(evicted) = evicted {
                cx.gateway.forget_session(&evicted.id);
            }
            session
        }
        Err(error) => {
            let mut response = rpc_error(StatusCode::SERVICE_UNAVAILABLE, id, &error);
            response.headers_mut().insert(hyper::header::RETRY_AFTER, hyper::header::HeaderValue::from_static("5"));
            return response;
        }
    };
    tracing::info!(session = %session.id, subject = %cx.principal.subject, version, "session started");
    let mut result = json!({
        "protocolVersion": version,
        "capabilities": cx.gateway.capabilities(),
        "serverInfo": cx.server_info,
    });
    if let Some(instructions) = cx.gateway.instructions() {
        result["instructions"] = json!(instructions);
    }
    let mut response = json_response(StatusCode::OK, &jsonrpc::response(id, result));
    response.headers_mut().insert(h::SESSION_ID, session.id.parse().expect("URL-safe base64 is a valid header"));
    response
}

async fn request(cx: &Context<'_>, session: Arc<Session>, id: Value, method: String, params: Value) -> Response<Body> {
    if method == "logging/setLevel" {
        *session.log_level.lock().unwrap() = params.get("level").and_then(Value::as_str).map(str::to_owned);
    }
    let (events, receiver) = mpsc::unbounded_channel();
    let limit_note = LimitNote::default();
    let caller = Caller {
        principal: Arc::clone(&cx.principal),
        session: Some(session.id.clone()),
        hooks: CallHooks {
            notifications: Some(events.clone()),
            requests: Some(Arc::new(Relay { session: Arc::clone(&session), events })),
            client_capabilities: session.client_capabilities.clone(),
            log_level: session.log_level.lock().unwrap().clone(),
            param_headers: Vec::new(),
            trace_headers: Vec::new(),
            screen: None,
        },
        modern: false,
        transport: "http",
        traceparent: super::http::traceparent(cx.headers),
        tracestate: super::http::tracestate(cx.headers),
        limit_note: Some(Arc::clone(&limit_note)),
    };
    match method.as_str() {
        "resources/subscribe" | "resources/unsubscribe" => {
            if let Some(uri) = params.get("uri").and_then(Value::as_str) {
                let mut subscriptions = session.subscriptions.lock().unwrap();
                if method == "resources/subscribe" {
                    subscriptions.insert(uri.to_owned());
                } else {
                    subscriptions.remove(uri);
                }
            }
        }
        "initialize" => unreachable!("handled before"),
        _ => {}
    }
    let key = id.as_str().map(str::to_owned).unwrap_or_else(|| id.to_string());
    let (abort, registration) = AbortHandle::new_pair();
    session.in_flight.lock().unwrap().insert(key.clone(), abort);
    let gateway = Arc::clone(cx.gateway);
    let in_flight_session = Arc::clone(&session);
    let work = async move {
        let result = Abortable::new(gateway.handle(&caller, &method, params), registration)
            .await
            .unwrap_or_else(|_| Err(RpcError::new(code::INTERNAL_ERROR, "request cancelled")));
        in_flight_session.in_flight.lock().unwrap().remove(&key);
        result
    };
    let exchange = Exchange { id, events: receiver, work: Box::pin(work), limit_note: Some(limit_note) };
    let prime = session.version == "2025-11-25";
    respond(
        exchange,
        false,
        || StreamPolicy { stream: session.new_stream(), prime, cancel_on_disconnect: false },
        |result| result,
    )
    .await
}

/// 2025-03-26 batches: every request answered in one JSON array. Side traffic
/// (progress, server requests) is not available within a batch.
async fn post_batch(cx: &Context<'_>, batch: Vec<Value>) -> Response<Body> {
    let invalid =
        |message: &str| rpc_error(StatusCode::BAD_REQUEST, Value::Null, &RpcError::new(code::INVALID_REQUEST, message));
    if batch.is_empty() {
        return invalid("an empty batch");
    }
    let session = match require_session(cx) {
        Ok(session) => session,
        Err(_) if batch.iter().any(|m| m.get("method").and_then(Value::as_str) == Some("initialize")) => {
            return invalid("initialize cannot be batched");
        }
        Err(response) => return response,
    };
    if session.version != "2025-03-26" {
        return invalid(&format!("JSON-RPC batches are not part of protocol {}", session.version));
    }
    let caller = Caller {
        principal: Arc::clone(&cx.principal),
        session: Some(session.id.clone()),
        hooks: CallHooks {
            client_capabilities: session.client_capabilities.clone(),
            log_level: session.log_level.lock().unwrap().clone(),
            ..CallHooks::default()
        },
        modern: false,
        transport: "http",
        traceparent: super::http::traceparent(cx.headers),
        tracestate: super::http::tracestate(cx.headers),
        limit_note: None,
    };
    let mut answers = Vec::new();
    for value in batch {
        match Message::parse(value) {
            Ok(Message::Request { id, method, params }) => {
                let answer = match cx.gateway.handle(&caller, &method, params).await {
                    Ok(result) => jsonrpc::response(id, result),
                    Err(error) => jsonrpc::error_response(id, &error),
                };
                answers.push(answer);
            }
            Ok(Message::Notification { method, params }) => on_notification(&session, &method, &params),
            Ok(Message::Result { id, result }) => {
                let _ = answer_pending(cx, &id, Ok(result));
            }
            Ok(Message::Error { id, error }) => {
                let _ = answer_pending(cx, &id, Err(error));
            }
            Err(error) => answers.push(jsonrpc::error_response(Value::Null, &error)),
        }
    }
    if answers.is_empty() { empty(StatusCode::ACCEPTED) } else { json_response(StatusCode::OK, &Value::Array(answers)) }
}

/// A legacy GET: the session's own stream, or the rest of an earlier stream
/// after `Last-Event-ID`.
pub(crate) fn get(cx: Context<'_>) -> Response<Body> {
    let session = match require_session(&cx) {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Some(last) = cx.headers.get(h::LAST_EVENT_ID).and_then(|v| v.to_str().ok()) {
        let stream = Stream::parse_event_id(last).and_then(|(stream, seq)| {
            let found = if stream == 0 {
                session.standalone.lock().unwrap().clone()
            } else {
                session.streams.lock().unwrap().get(&stream).cloned()
            };
            found.map(|s| (s, seq))
        });
        return match stream {
            Some((stream, seq)) if !stream.keeps_after(seq) => {
                count(&session.metrics.resumes_refused);
                rpc_error(
                    StatusCode::BAD_REQUEST,
                    Value::Null,
                    &RpcError::new(
                        code::INVALID_REQUEST,
                        format!(
                            "cannot resume after {last:?}: later events were dropped to keep the stream within {} KiB \
                             (sessions.replay_kib)",
                            session.settings.replay_bytes >> 10
                        ),
                    ),
                )
            }
            Some((stream, seq)) => sse(stream.body(seq).boxed()),
            None => rpc_error(
                StatusCode::BAD_REQUEST,
                Value::Null,
                &RpcError::new(code::INVALID_REQUEST, format!("cannot resume: no stream has event {last:?}")),
            ),
        };
    }
    if session.standalone_reader.swap(true, Ordering::AcqRel) {
        return rpc_error(
            StatusCode::CONFLICT,
            Value::Null,
            &RpcError::new(code::INVALID_REQUEST, "this session already has a GET stream open"),
        );
    }
    let stream = Arc::clone(
        session.standalone.lock().unwrap().get_or_insert_with(|| Stream::bounded(0, session.settings.replay_bytes)),
    );
    // A new reader starts at the present, not with old events.
    let from = stream.push("");
    let seq = Stream::parse_event_id(&from).map(|(_, seq)| seq - 1).unwrap_or(0);
    let reader = Arc::clone(&session.standalone_reader);
    sse(stream.body(seq).on_drop(move || reader.store(false, Ordering::Release)).boxed())
}

fn sse(body: Body) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(hyper::header::CONTENT_TYPE, "text/event-stream")
        .header(hyper::header::CACHE_CONTROL, "no-cache")
        .header("x-accel-buffering", "no")
        .body(body)
        .expect("valid response")
}

/// A legacy DELETE: end the session.
pub(crate) fn delete(cx: Context<'_>) -> Response<Body> {
    let session = match require_session(&cx) {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Some(session) = cx.sessions.remove(&session.id) {
        session.end();
        cx.gateway.forget_session(&session.id);
        tracing::info!(session = %session.id, "session ended by the client");
    }
    empty(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str) -> Arc<Principal> {
        Arc::new(Principal { subject: subject.into(), tenant: None, roles: vec![], scopes: vec![], claims: json!({}) })
    }

    fn open(sessions: &Sessions, subject: &str) -> Result<(Arc<Session>, Option<Arc<Session>>), RpcError> {
        sessions.create(principal(subject), "2025-11-25", json!({ "sampling": {} }))
    }

    #[test]
    fn one_caller_cannot_end_another_callers_sessions() {
        let metrics = Arc::new(Metrics::default());
        let settings = SessionSettings { max: 6, max_per_principal: 5, ..SessionSettings::default() };
        let sessions = Sessions::new(settings, Arc::clone(&metrics), None);
        let (victim, _) = open(&sessions, "victim").unwrap();
        let mut attackers = Vec::new();
        for _ in 0..60 {
            let (session, evicted) = open(&sessions, "attacker").unwrap();
            if let Some(evicted) = evicted {
                assert_eq!(evicted.principal.subject, "attacker", "only the caller's own sessions end");
            }
            attackers.push(session.id.clone());
        }
        assert!(sessions.get(&victim.id, &principal("victim")).is_some(), "the victim's session lives");
        let live = attackers.iter().filter(|id| sessions.get(id, &principal("attacker")).is_some()).count();
        assert_eq!(live, 5, "the attacker keeps sessions.max_per_principal sessions");
        assert!(sessions.get(&attackers[0], &principal("attacker")).is_none(), "its oldest ended");

        let refused = open(&sessions, "newcomer").err().expect("the gateway is full");
        assert_eq!(refused.code, code::OVERLOADED);
        assert_eq!(refused.data.unwrap()["limit"], "sessions.max");
        assert_eq!(metrics.sessions_evicted.load(Ordering::Relaxed), 55);
        assert_eq!(metrics.sessions_refused.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.sessions_open.load(Ordering::Relaxed), 6);
    }

    #[tokio::test]
    async fn requests_waiting_for_a_client_are_bounded() {
        let metrics = Arc::new(Metrics::default());
        let settings = SessionSettings { max_client_requests: 2, ..SessionSettings::default() };
        let sessions = Sessions::new(settings, Arc::clone(&metrics), None);
        let (session, _) = open(&sessions, "p").unwrap();
        let (events, mut sent) = mpsc::unbounded_channel();
        let relay = Relay { session: Arc::clone(&session), events };
        let waiting: Vec<_> =
            (0..2).map(|_| tokio::spawn(relay.request("sampling/createMessage".into(), json!({})))).collect();
        for _ in 0..2 {
            sent.recv().await.expect("relayed to the client");
        }
        let refused = relay.request("sampling/createMessage".into(), json!({})).await.unwrap_err();
        assert_eq!(refused.code, code::OVERLOADED);
        assert_eq!(refused.data.unwrap()["limit"], "sessions.max_client_requests");
        assert!(sent.try_recv().is_err(), "the refused request never reached the client");
        assert_eq!(metrics.client_requests_refused.load(Ordering::Relaxed), 1);

        // An answer frees a place for the next request.
        let id = session.pending.lock().unwrap().keys().next().cloned().unwrap();
        let _ = session.pending.lock().unwrap().remove(&id).unwrap().send(Ok(json!({ "answered": true })));
        let next = tokio::spawn(relay.request("sampling/createMessage".into(), json!({})));
        sent.recv().await.expect("relayed once a place was free");
        // A relayed call that is cancelled frees its place too.
        for task in waiting.into_iter().chain([next]) {
            task.abort();
            let _ = task.await;
        }
        assert!(session.pending.lock().unwrap().is_empty());
    }
}
