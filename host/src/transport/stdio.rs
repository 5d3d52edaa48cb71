//! One client over stdin/stdout, for IDEs that launch MCP servers as local
//! processes: `warden stdio --config warden.toml`.
//!
//! The client is identified by an API key from the `WARDEN_API_KEY`
//! environment variable (IDE configs can set one), authenticated as a
//! loopback client. Newline-delimited JSON-RPC, both eras: `initialize` for
//! the legacy revisions, `_meta` on each request for 2026-07-28. Logs go to
//! stderr; stdout carries only protocol messages.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::{
    StreamExt,
    future::{AbortHandle, Abortable},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot},
};
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::{
    auth::{Authenticator, Principal},
    gateway::{Caller, Change, Gateway},
    mcp::{self, Message, RpcError, code, jsonrpc, meta},
    upstream::{CallHooks, ClientRequests},
};

/// Longest accepted line.
const MAX_LINE: usize = 16 << 20;

/// The one connection's state.
struct Connection {
    principal: Arc<Principal>,
    out: mpsc::UnboundedSender<Value>,
    client_capabilities: Mutex<Value>,
    pending: Mutex<HashMap<String, oneshot::Sender<Result<Value, RpcError>>>>,
    next_request: AtomicU64,
    in_flight: Mutex<HashMap<String, AbortHandle>>,
    initialized: std::sync::atomic::AtomicBool,
    log_level: Mutex<Option<String>>,
}

/// Relays upstream requests to the stdio client.
struct Relay(Arc<Connection>);

impl ClientRequests for Relay {
    fn request(
        &self,
        method: String,
        params: Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>> + Send>> {
        let connection = Arc::clone(&self.0);
        Box::pin(async move {
            let id = format!("warden-{}", connection.next_request.fetch_add(1, Ordering::Relaxed));
            let (reply, answer) = oneshot::channel();
            connection.pending.lock().unwrap().insert(id.clone(), reply);
            let _ = connection.out.send(jsonrpc::request(json!(id), &method, params));
            answer.await.unwrap_or_else(|_| Err(RpcError::internal("the client went away")))
        })
    }
}

/// Authenticate the stdio client from `WARDEN_API_KEY` (an API key or a JWT).
pub async fn principal_from_env(auth: &Authenticator) -> Result<Arc<Principal>, String> {
    let key = std::env::var("WARDEN_API_KEY").map_err(|_| "set WARDEN_API_KEY to the client's API key".to_owned())?;
    auth.authenticate(Some(&format!("Bearer {key}")), IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .map_err(|e| format!("WARDEN_API_KEY: {e}"))
}

/// Serve one client until its input ends.
pub async fn serve(
    gateway: Arc<Gateway>,
    principal: Arc<Principal>,
    input: impl AsyncRead + Unpin,
    output: impl AsyncWrite + Unpin + Send + 'static,
) {
    let (out, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        let mut output = output;
        while let Some(message) = outgoing.recv().await {
            let mut line = message.to_string().into_bytes();
            line.push(b'\n');
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let connection = Arc::new(Connection {
        principal,
        out: out.clone(),
        client_capabilities: Mutex::new(json!({})),
        pending: Mutex::default(),
        next_request: AtomicU64::new(1),
        in_flight: Mutex::default(),
        initialized: Default::default(),
        log_level: Mutex::default(),
    });

    let mut changes = gateway.changes();
    let change_connection = Arc::clone(&connection);
    let change_task = tokio::spawn(async move {
        while let Ok(change) = changes.recv().await {
            if !change_connection.initialized.load(Ordering::Relaxed) {
                continue;
            }
            if let Change::ListChanged(method) = change {
                let _ = change_connection.out.send(jsonrpc::notification(method, json!({})));
            }
        }
    });

    let mut lines = FramedRead::new(input, LinesCodec::new_with_max_length(MAX_LINE));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read stdin; stopping");
                break;
            }
        };
        let value: Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(e) => {
                let _ = out.send(jsonrpc::error_response(
                    Value::Null,
                    &RpcError::new(code::PARSE_ERROR, format!("Parse error: {e}")),
                ));
                continue;
            }
        };
        let messages = match value {
            Value::Array(batch) => batch,
            single => vec![single],
        };
        for message in messages {
            on_message(&gateway, &connection, message);
        }
    }
    change_task.abort();
    for (_, handle) in connection.in_flight.lock().unwrap().drain() {
        handle.abort();
    }
    drop(out);
    drop(connection);
    let _ = writer.await;
}

fn on_message(gateway: &Arc<Gateway>, connection: &Arc<Connection>, value: Value) {
    let message = match Message::parse(value) {
        Ok(message) => message,
        Err(error) => {
            let _ = connection.out.send(jsonrpc::error_response(Value::Null, &error));
            return;
        }
    };
    match message {
        Message::Result { id, result } => resolve(connection, &id, Ok(result)),
        Message::Error { id, error } => resolve(connection, &id, Err(error)),
        Message::Notification { method, params } => match method.as_str() {
            "notifications/initialized" => connection.initialized.store(true, Ordering::Relaxed),
            "notifications/cancelled" => {
                let id = params.get("requestId").map(key);
                if let Some(handle) = id.and_then(|id| connection.in_flight.lock().unwrap().remove(&id)) {
                    handle.abort();
                }
            }
            _ => {}
        },
        Message::Request { id, method, params } => {
            let modern = mcp::request_meta(&params)
                .and_then(|m| m.get(meta::PROTOCOL_VERSION))
                .and_then(Value::as_str)
                .is_some_and(|v| v == mcp::MODERN);
            if let Some(answer) = handshake(gateway, connection, &method, &params, modern) {
                let _ = connection.out.send(match answer {
                    Ok(result) => jsonrpc::response(id, result),
                    Err(error) => jsonrpc::error_response(id, &error),
                });
                return;
            }
            if method == "logging/setLevel" {
                *connection.log_level.lock().unwrap() = params.get("level").and_then(Value::as_str).map(str::to_owned);
            }
            let caller = Caller {
                principal: Arc::clone(&connection.principal),
                session: Some("stdio".into()),
                hooks: CallHooks {
                    notifications: Some(connection.out.clone()),
                    requests: Some(Arc::new(Relay(Arc::clone(connection)))),
                    client_capabilities: connection.client_capabilities.lock().unwrap().clone(),
                    log_level: connection.log_level.lock().unwrap().clone(),
                    param_headers: Vec::new(),
                    trace_headers: Vec::new(),
                    screen: None,
                },
                modern,
                transport: "stdio",
                traceparent: None,
                tracestate: None,
                limit_note: None,
            };
            let (abort, registration) = AbortHandle::new_pair();
            let request_key = key(&id);
            connection.in_flight.lock().unwrap().insert(request_key.clone(), abort);
            let (gateway, connection) = (Arc::clone(gateway), Arc::clone(connection));
            tokio::spawn(async move {
                let result = Abortable::new(gateway.handle(&caller, &method, params), registration).await;
                connection.in_flight.lock().unwrap().remove(&request_key);
                let Ok(result) = result else { return };
                let _ = connection.out.send(match result {
                    Ok(result) => jsonrpc::response(id, result),
                    Err(error) => jsonrpc::error_response(id, &error),
                });
            });
        }
    }
}

/// Methods the transport answers itself: the handshakes.
fn handshake(
    gateway: &Gateway,
    connection: &Connection,
    method: &str,
    params: &Value,
    modern: bool,
) -> Option<Result<Value, RpcError>> {
    let server_info = json!({ "name": "warden", "version": env!("CARGO_PKG_VERSION") });
    match method {
        "initialize" => {
            let requested = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(mcp::DEFAULT_LEGACY);
            let version = mcp::LEGACY.iter().copied().find(|v| *v == requested).unwrap_or(mcp::LEGACY[0]);
            *connection.client_capabilities.lock().unwrap() =
                params.get("capabilities").cloned().unwrap_or_else(|| json!({}));
            let mut result = json!({ "protocolVersion": version, "capabilities": gateway.capabilities(), "serverInfo": server_info });
            if let Some(instructions) = gateway.instructions() {
                result["instructions"] = json!(instructions);
            }
            Some(Ok(result))
        }
        "server/discover" if modern => Some(Ok(json!({
            "supportedVersions": mcp::supported_versions(),
            "capabilities": gateway.capabilities(),
            "serverInfo": server_info,
            "resultType": "complete",
            "ttlMs": 0,
            "cacheScope": "public",
        }))),
        _ => None,
    }
}

fn resolve(connection: &Connection, id: &Value, answer: Result<Value, RpcError>) {
    if let Some(reply) = connection.pending.lock().unwrap().remove(&key(id)) {
        let _ = reply.send(answer);
    }
}

fn key(id: &Value) -> String {
    id.as_str().map(str::to_owned).unwrap_or_else(|| id.to_string())
}
