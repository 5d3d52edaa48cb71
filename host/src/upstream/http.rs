//! A Streamable HTTP upstream, in either era.
//!
//! On first use the link asks `server/discover` (2026-07-28); a server that
//! answers it is spoken to statelessly, with the version and the calling
//! client's capabilities in every request's `_meta`. Any other answer falls
//! back to the legacy `initialize` handshake and a session, renewed when the
//! server forgets it (404). The era is remembered for the life of the link.
//!
//! Each call is its own POST; whatever the server streams on that POST's SSE
//! response (progress, log messages, its own requests) belongs to that call,
//! so it goes to that call's hooks. A background stream (legacy `GET`, modern
//! `subscriptions/listen`) carries list-change notifications.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, body::Incoming, header};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use super::credentials::CredentialSource;
use super::{
    CallHooks, EraChoice, ServerInfo, Transport, UpstreamError, UpstreamEvent, UpstreamSpec, gateway_client_info,
    initialize_params, parse_initialize,
};
use crate::mcp::{self, Message, RpcError, code, header as h, jsonrpc, meta, sse};

/// Largest response body accepted from an upstream.
const MAX_RESPONSE: usize = 64 << 20;

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

#[derive(Clone, Debug)]
enum Conn {
    Legacy { session: Option<String>, info: ServerInfo },
    Modern { info: ServerInfo },
}

/// The HTTP link behind an upstream.
pub(crate) struct HttpLink {
    name: Arc<str>,
    url: hyper::Uri,
    era: Option<EraChoice>,
    client: HttpClient,
    conn: Mutex<Option<Conn>>,
    /// A copy of the last known server info, readable without awaiting.
    info: std::sync::Mutex<Option<ServerInfo>>,
    next_id: AtomicU64,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    stop: CancellationToken,
    failed: std::sync::atomic::AtomicBool,
    credentials: Option<CredentialSource>,
}

/// A new HTTP client with the gateway's settings: pooled keep-alive
/// connections, TCP_NODELAY (without it a request can stall 40 ms on Nagle
/// and delayed ACK), and verified TLS for https URLs ([`crate::tls`]).
pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*crate::tls::client_config()).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https)
}

impl HttpLink {
    /// Create the link and start connecting in the background (retrying with
    /// backoff), so the catalog fills before the first client asks.
    pub(crate) fn start(spec: &UpstreamSpec, events: mpsc::UnboundedSender<UpstreamEvent>) -> Arc<Self> {
        let link = Arc::new(Self::new(spec, events));
        let connecting = Arc::clone(&link);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let attempt = tokio::select! {
                    attempt = connecting.connection() => attempt,
                    _ = connecting.stop.cancelled() => return,
                };
                match attempt {
                    Ok(_) => break,
                    Err(error) => {
                        connecting.failed.store(true, Ordering::Relaxed);
                        tracing::warn!(upstream = %connecting.name, %error, "cannot connect; retrying");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = connecting.stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            connecting.watch().await;
        });
        link
    }

    /// Hold the upstream's change stream open (2026-07-28 `subscriptions/listen`,
    /// or the legacy `GET` stream) and turn what arrives into events, until
    /// the link stops. A server without one (405, -32601) is not asked again.
    async fn watch(&self) {
        let mut backoff = Duration::from_millis(500);
        while !self.stop.is_cancelled() {
            let Ok(conn) = self.connection().await else {
                tokio::time::sleep(backoff).await;
                continue;
            };
            let opened = tokio::select! {
                opened = self.open_watch(&conn) => opened,
                _ = self.stop.cancelled() => return,
            };
            match opened {
                Ok(None) => return,
                Ok(Some(response)) => {
                    backoff = Duration::from_millis(500);
                    tokio::select! {
                        _ = self.read_watch(response) => {}
                        _ = self.stop.cancelled() => return,
                    }
                }
                Err(error) => tracing::debug!(upstream = %self.name, %error, "change stream unavailable"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Open the change stream; `None` if the server has none to offer.
    async fn open_watch(&self, conn: &Conn) -> Result<Option<hyper::Response<Incoming>>, UpstreamError> {
        match conn {
            Conn::Modern { info } => {
                let caps = &info.capabilities;
                let filter = json!({
                    "toolsListChanged": caps["tools"]["listChanged"] == json!(true),
                    "promptsListChanged": caps["prompts"]["listChanged"] == json!(true),
                    "resourcesListChanged": caps["resources"]["listChanged"] == json!(true),
                });
                if filter.as_object().is_some_and(|f| f.values().all(|v| v == &json!(false))) {
                    return Ok(None);
                }
                let mut params = json!({ "notifications": filter, "_meta": modern_meta(&json!({})) });
                mcp::set_meta(&mut params, meta::PROTOCOL_VERSION, json!(mcp::MODERN));
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let body = jsonrpc::request(json!(id), "subscriptions/listen", params);
                match self.post(body, &[(h::METHOD, "subscriptions/listen".to_owned())], Some(conn)).await {
                    Ok(response) => Ok(Some(response)),
                    Err(UpstreamError::Rpc(e)) if e.code == code::METHOD_NOT_FOUND => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Conn::Legacy { session, info } => {
                let mut request = Request::builder()
                    .method(Method::GET)
                    .uri(self.url.clone())
                    .header(header::ACCEPT, "text/event-stream")
                    .header(h::PROTOCOL_VERSION, &info.version);
                if let Some(session) = session {
                    request = request.header(h::SESSION_ID, session);
                }
                if let Some((name, value)) = self.credential().await? {
                    request = request.header(name, value);
                }
                let request = request.body(Full::new(Bytes::new())).map_err(|e| self.protocol(e.to_string()))?;
                let response = self.client.request(request).await.map_err(|e| self.unavailable(source_chain(&e)))?;
                match response.status() {
                    s if s.is_success() => Ok(Some(response)),
                    StatusCode::METHOD_NOT_ALLOWED => Ok(None),
                    StatusCode::NOT_FOUND => {
                        self.conn.lock().await.take();
                        Err(self.unavailable(SESSION_GONE))
                    }
                    status => Err(self.unavailable(format!("HTTP {status}"))),
                }
            }
        }
    }

    /// Read change notifications until the stream ends.
    async fn read_watch(&self, response: hyper::Response<Incoming>) {
        let mut body = response.into_body();
        let mut parser = sse::Parser::default();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else { continue };
            for event in parser.push(&data) {
                let Ok(Message::Notification { method, params }) =
                    serde_json::from_str(&event.data).map_err(|_| ()).and_then(|v| Message::parse(v).map_err(|_| ()))
                else {
                    continue;
                };
                if method.ends_with("/list_changed") || method == "notifications/resources/updated" {
                    let _ = self.events.send(UpstreamEvent::Notification {
                        upstream: self.name.to_string(),
                        method,
                        params,
                    });
                }
            }
        }
    }

    fn new(spec: &UpstreamSpec, events: mpsc::UnboundedSender<UpstreamEvent>) -> Self {
        let Transport::Http { url, era, credentials } = &spec.transport else {
            unreachable!("an HTTP link for a non-HTTP upstream")
        };
        Self {
            name: spec.name.as_str().into(),
            url: url.parse().expect("validated in config"),
            era: *era,
            client: http_client(),
            conn: Mutex::new(None),
            info: std::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            events,
            stop: CancellationToken::new(),
            failed: std::sync::atomic::AtomicBool::new(false),
            credentials: credentials.clone().map(CredentialSource::new),
        }
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    pub(crate) fn server_info(&self) -> Option<ServerInfo> {
        self.info.lock().unwrap().clone()
    }

    fn unavailable(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable { upstream: self.name.to_string(), reason: reason.into() }
    }

    fn protocol(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Protocol { upstream: self.name.to_string(), reason: reason.into() }
    }

    /// The current connection, set up if needed.
    async fn connection(&self) -> Result<Conn, UpstreamError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = &*conn {
            return Ok(c.clone());
        }
        let fresh = match self.era {
            Some(EraChoice::Legacy) => self.initialize().await?,
            Some(EraChoice::Modern) => self.discover().await?.ok_or_else(|| self.protocol("server/discover failed"))?,
            None => match self.discover().await? {
                Some(modern) => modern,
                None => self.initialize().await?,
            },
        };
        let info = match &fresh {
            Conn::Legacy { info, .. } | Conn::Modern { info } => info.clone(),
        };
        tracing::info!(upstream = %self.name, version = %info.version, "connected to HTTP upstream");
        *self.info.lock().unwrap() = Some(info);
        *conn = Some(fresh.clone());
        let _ = self.events.send(UpstreamEvent::Connected { upstream: self.name.to_string() });
        Ok(fresh)
    }

    /// Try the 2026-07-28 way. `None` means "not a modern server".
    async fn discover(&self) -> Result<Option<Conn>, UpstreamError> {
        let params = json!({ "_meta": modern_meta(&json!({})) });
        let reply = self.exchange(&Conn::Modern { info: ServerInfo::default() }, "server/discover", params, None).await;
        let result = match reply {
            Ok(result) => result,
            Err(UpstreamError::Unavailable { reason, .. }) if reason.starts_with("connect") => {
                return Err(self.unavailable(reason));
            }
            Err(_) => return Ok(None),
        };
        let speaks_modern = result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(mcp::MODERN)));
        if !speaks_modern {
            return Ok(None);
        }
        let info = result
            .get("serverInfo")
            .or_else(|| result.get("_meta").and_then(|m| m.get(meta::SERVER_INFO)))
            .cloned()
            .unwrap_or_else(|| json!({}));
        Ok(Some(Conn::Modern {
            info: ServerInfo {
                capabilities: result.get("capabilities").cloned().unwrap_or_else(|| json!({})),
                info,
                instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
                version: mcp::MODERN.to_owned(),
            },
        }))
    }

    /// The legacy handshake.
    async fn initialize(&self) -> Result<Conn, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = jsonrpc::request(json!(id), "initialize", initialize_params());
        let response = self.post(body, &[], None).await?;
        let session = response.headers().get(h::SESSION_ID).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let hooks = CallHooks::default();
        let result = self
            .read_reply(response, id, &hooks, &Conn::Legacy { session: session.clone(), info: ServerInfo::default() })
            .await?;
        let info = parse_initialize(&result).map_err(|e| self.protocol(format!("initialize: {e}")))?;
        let conn = Conn::Legacy { session, info };
        self.send_notification(&conn, "notifications/initialized", json!({})).await;
        Ok(conn)
    }

    pub(crate) async fn request(&self, method: &str, params: Value, hooks: CallHooks) -> Result<Value, UpstreamError> {
        let conn = self.connection().await?;
        match self.exchange(&conn, method, params.clone(), Some(&hooks)).await {
            // The server forgot the session: start a new one, once.
            Err(UpstreamError::Unavailable { reason, .. }) if reason == SESSION_GONE => {
                self.conn.lock().await.take();
                let conn = self.connection().await?;
                self.exchange(&conn, method, params, Some(&hooks)).await
            }
            other => other,
        }
    }

    /// One request, one POST, one answer (JSON or SSE).
    async fn exchange(
        &self,
        conn: &Conn,
        method: &str,
        mut params: Value,
        hooks: Option<&CallHooks>,
    ) -> Result<Value, UpstreamError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut headers: Vec<(&str, String)> = Vec::new();
        let mut param_headers: Vec<(String, String)> = Vec::new();
        match conn {
            Conn::Modern { .. } => {
                let capabilities =
                    hooks.map(|h| h.client_capabilities.clone()).filter(Value::is_object).unwrap_or_else(|| json!({}));
                let meta_object = modern_meta(&capabilities);
                for (key, value) in meta_object.as_object().expect("object") {
                    mcp::set_meta(&mut params, key, value.clone());
                }
                let level = hooks.and_then(|h| h.log_level.clone());
                if let Some(level) =
                    level.filter(|_| mcp::request_meta(&params).is_none_or(|m| !m.contains_key(meta::LOG_LEVEL)))
                {
                    mcp::set_meta(&mut params, meta::LOG_LEVEL, json!(level));
                }
                headers.push((h::METHOD, method.to_owned()));
                if let Some(name) = mcp::name_param(method, &params) {
                    headers.push((h::NAME, mcp::encode_header_value(&name)));
                }
                if let Some(hooks) = hooks {
                    param_headers.extend(hooks.param_headers.iter().cloned());
                }
            }
            Conn::Legacy { .. } => mcp::strip_modern_meta(&mut params),
        }
        if let Some(hooks) = hooks {
            param_headers.extend(hooks.trace_headers.iter().cloned());
        }
        let body = jsonrpc::request(json!(id), method, params);
        headers.extend(param_headers.iter().map(|(name, value)| (name.as_str(), value.clone())));
        let response = self.post(body, &headers, Some(conn)).await?;
        let default_hooks = CallHooks::default();
        self.read_reply(response, id, hooks.unwrap_or(&default_hooks), conn).await
    }

    /// The upstream's own credential header, if it has one configured.
    async fn credential(&self) -> Result<Option<(header::HeaderName, header::HeaderValue)>, UpstreamError> {
        match &self.credentials {
            Some(source) => source.header().await.map(Some).map_err(|reason| self.unavailable(reason)),
            None => Ok(None),
        }
    }

    /// POST one message with the connection's headers and the upstream's
    /// credentials; a fetched token the upstream refuses (401) is renewed once.
    async fn post(
        &self,
        body: Value,
        extra: &[(&str, String)],
        conn: Option<&Conn>,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        let mut response = self.post_once(&body, extra, conn).await?;
        if let Some(source) = &self.credentials
            && response.status() == StatusCode::UNAUTHORIZED
            && source.renewable()
        {
            source.invalidate().await;
            response = self.post_once(&body, extra, conn).await?;
        }
        self.check_status(response, conn).await
    }

    async fn post_once(
        &self,
        body: &Value,
        extra: &[(&str, String)],
        conn: Option<&Conn>,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream");
        match conn {
            Some(Conn::Legacy { session, info }) => {
                if let Some(session) = session {
                    request = request.header(h::SESSION_ID, session);
                }
                if !info.version.is_empty() {
                    request = request.header(h::PROTOCOL_VERSION, &info.version);
                }
            }
            Some(Conn::Modern { .. }) => request = request.header(h::PROTOCOL_VERSION, mcp::MODERN),
            None => {}
        }
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        if let Some((name, value)) = self.credential().await? {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| self.protocol(format!("cannot build the request: {e}")))?;
        let response = self.client.request(request).await.map_err(|e| {
            let reason = if e.is_connect() { format!("connect: {}", source_chain(&e)) } else { source_chain(&e) };
            self.unavailable(reason)
        })?;
        Ok(response)
    }

    /// Pass a successful answer on; turn the others into errors.
    async fn check_status(
        &self,
        response: hyper::Response<Incoming>,
        conn: Option<&Conn>,
    ) -> Result<hyper::Response<Incoming>, UpstreamError> {
        match response.status() {
            s if s.is_success() => Ok(response),
            StatusCode::NOT_FOUND if matches!(conn, Some(Conn::Legacy { session: Some(_), .. })) => {
                Err(self.unavailable(SESSION_GONE))
            }
            status => {
                // A JSON-RPC error in the body is the server's answer; pass it on.
                let body = read_body(response.into_body()).await.unwrap_or_default();
                match serde_json::from_slice::<Value>(&body).ok().and_then(|v| v.get("error").cloned()) {
                    Some(error) => Err(UpstreamError::Rpc(RpcError::from_value(&error))),
                    None if status.is_server_error() => Err(self.unavailable(format!("HTTP {status}"))),
                    None => Err(self.protocol(format!("HTTP {status}"))),
                }
            }
        }
    }

    /// Read the answer to request `id`: a JSON body, or an SSE stream whose
    /// other messages belong to the same call.
    async fn read_reply(
        &self,
        response: hyper::Response<Incoming>,
        id: u64,
        hooks: &CallHooks,
        conn: &Conn,
    ) -> Result<Value, UpstreamError> {
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let mut body = response.into_body();
        if content_type.starts_with("text/event-stream") {
            let mut parser = sse::Parser::default();
            let mut read = 0usize;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| self.unavailable(format!("the stream broke: {e}")))?;
                let Ok(data) = frame.into_data() else { continue };
                read += data.len();
                if read > MAX_RESPONSE {
                    return Err(self.protocol("the response stream exceeded 64 MiB"));
                }
                for event in parser.push(&data) {
                    if event.data.is_empty() {
                        continue;
                    }
                    let value: Value = serde_json::from_str(&event.data)
                        .map_err(|e| self.protocol(format!("an SSE event is not JSON: {e}")))?;
                    if let Some(answer) = self.on_stream_message(value, id, hooks, conn).await {
                        return answer;
                    }
                }
            }
            Err(self.unavailable("the stream ended before the response"))
        } else {
            let bytes = read_body(body).await.map_err(|e| self.unavailable(e))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| self.protocol(format!("not JSON: {e}")))?;
            match self.on_stream_message(value, id, hooks, conn).await {
                Some(answer) => answer,
                None => Err(self.protocol("the body is not the response to the request")),
            }
        }
    }

    /// One message on a call's stream. `Some` once it is the call's answer.
    async fn on_stream_message(
        &self,
        value: Value,
        id: u64,
        hooks: &CallHooks,
        conn: &Conn,
    ) -> Option<Result<Value, UpstreamError>> {
        let message = match Message::parse(value) {
            Ok(m) => m,
            Err(e) => return Some(Err(self.protocol(e.message))),
        };
        match message {
            Message::Result { id: rid, result } if rid.as_u64() == Some(id) => Some(Ok(result)),
            Message::Error { id: rid, error } if rid.as_u64() == Some(id) => Some(Err(UpstreamError::Rpc(error))),
            Message::Result { .. } | Message::Error { .. } => None,
            Message::Notification { method, params } => {
                hooks.forward(jsonrpc::notification(&method, params));
                None
            }
            Message::Request { id: rid, method, params } => {
                let answer = match (&hooks.requests, conn) {
                    (Some(relay), Conn::Legacy { .. }) => relay.request(method, params).await,
                    (None, _) => Err(RpcError::internal(format!("the calling client cannot answer {method}"))),
                    (_, Conn::Modern { .. }) => {
                        Err(RpcError::internal("2026-07-28 servers must not send requests on a response stream"))
                    }
                };
                let reply = match answer {
                    Ok(result) => jsonrpc::response(rid, result),
                    Err(error) => jsonrpc::error_response(rid, &error),
                };
                if let Err(e) = self.post(reply, &[], Some(conn)).await {
                    tracing::warn!(upstream = %self.name, error = %e, "could not deliver the client's answer upstream");
                }
                None
            }
        }
    }

    async fn send_notification(&self, conn: &Conn, method: &str, params: Value) {
        if let Err(e) = self.post(jsonrpc::notification(method, params), &[], Some(conn)).await {
            tracing::warn!(upstream = %self.name, method, error = %e, "notification not accepted");
        }
    }

    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        let conn = self.conn.lock().await.take();
        // End the session politely; the server may not allow it (405).
        if let Some(Conn::Legacy { session: Some(session), info }) = conn {
            let request = Request::builder()
                .method(Method::DELETE)
                .uri(self.url.clone())
                .header(h::SESSION_ID, session)
                .header(h::PROTOCOL_VERSION, info.version)
                .body(Full::new(Bytes::new()));
            if let Ok(request) = request {
                let _ = tokio::time::timeout(Duration::from_secs(2), self.client.request(request)).await;
            }
        }
    }
}

/// The reason a request fails when a legacy server no longer knows the session.
const SESSION_GONE: &str = "the upstream ended the session";

/// `_meta` for a 2026-07-28 request from the gateway.
fn modern_meta(client_capabilities: &Value) -> Value {
    json!({
        meta::PROTOCOL_VERSION: mcp::MODERN,
        meta::CLIENT_CAPABILITIES: client_capabilities,
        meta::CLIENT_INFO: gateway_client_info(),
    })
}

async fn read_body(body: Incoming) -> Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, MAX_RESPONSE);
    limited.collect().await.map(|c| c.to_bytes()).map_err(|e| format!("cannot read the response: {e}"))
}

fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
