//! The client half of a JSON-RPC conversation with one upstream server:
//! request ids, pending calls, progress-token mapping, and routing of what the
//! server sends back (responses, notifications, its own requests).
//!
//! The peer does no I/O. A link drains its outgoing messages and feeds what
//! arrives into [`Peer::incoming`].

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::{CallHooks, UpstreamEvent};
use crate::mcp::{Message, RpcError, jsonrpc, progress_token, set_meta};

struct Pending {
    reply: oneshot::Sender<Result<Value, RpcError>>,
    hooks: CallHooks,
    /// The gateway's progress token for this call, if the client asked for progress.
    progress: Option<String>,
}

/// One upstream conversation.
pub(crate) struct Peer {
    name: Arc<str>,
    out: mpsc::UnboundedSender<Value>,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    /// Gateway progress token → (the client's own token, where to send).
    progress: Mutex<HashMap<String, (Value, CallHooks)>>,
    events: mpsc::UnboundedSender<UpstreamEvent>,
}

/// Removes a call's bookkeeping when its future ends or is dropped; if it was
/// dropped before the reply (the client went away), tells the upstream to stop.
struct PendingGuard<'a> {
    peer: &'a Peer,
    id: u64,
    done: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let removed = self.peer.pending.lock().unwrap().remove(&self.id);
        if let Some(Pending { progress: Some(token), .. }) = &removed {
            self.peer.progress.lock().unwrap().remove(token);
        }
        if !self.done && removed.is_some() {
            let cancel = jsonrpc::notification(
                "notifications/cancelled",
                json!({"requestId": self.id, "reason": "the client cancelled the request"}),
            );
            let _ = self.peer.out.send(cancel);
        }
    }
}

impl Peer {
    pub(crate) fn new(
        name: Arc<str>,
        out: mpsc::UnboundedSender<Value>,
        events: mpsc::UnboundedSender<UpstreamEvent>,
    ) -> Self {
        Self { name, out, next_id: AtomicU64::new(1), pending: Mutex::default(), progress: Mutex::default(), events }
    }

    /// Send a request and wait for its response. A client `progressToken` is
    /// swapped for one unique to this upstream, so progress from concurrent
    /// calls of different clients cannot be confused.
    pub(crate) async fn request(&self, method: &str, mut params: Value, hooks: CallHooks) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let progress = progress_token(&params).cloned().map(|client_token| {
            let token = format!("warden-{id}");
            set_meta(&mut params, "progressToken", json!(token));
            self.progress.lock().unwrap().insert(token.clone(), (client_token, hooks.clone()));
            token
        });
        let (reply, response) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, Pending { reply, hooks, progress });
        let mut guard = PendingGuard { peer: self, id, done: false };
        let message = jsonrpc::request(json!(id), method, params);
        if self.out.send(message).is_err() {
            guard.done = true;
            return Err(RpcError::internal(format!("upstream {} is not connected", self.name)));
        }
        let result = response.await.unwrap_or_else(|_| {
            Err(RpcError::internal(format!("upstream {} closed the connection during the call", self.name)))
        });
        guard.done = true;
        result
    }

    /// Send a notification.
    pub(crate) fn notify(&self, method: &str, params: Value) {
        let _ = self.out.send(jsonrpc::notification(method, params));
    }

    /// Fail every pending request (the connection is gone).
    pub(crate) fn fail_all(&self, reason: &str) {
        let drained: Vec<Pending> = self.pending.lock().unwrap().drain().map(|(_, p)| p).collect();
        for pending in drained {
            let _ = pending.reply.send(Err(RpcError::internal(reason.to_owned())));
        }
        self.progress.lock().unwrap().clear();
    }

    /// Handle one message from the upstream.
    pub(crate) fn incoming(self: &Arc<Self>, value: Value) {
        let message = match Message::parse(value) {
            Ok(message) => message,
            Err(e) => {
                tracing::warn!(upstream = %self.name, error = %e, "ignoring a malformed message from the upstream");
                return;
            }
        };
        match message {
            Message::Result { id, result } => self.resolve(&id, Ok(result)),
            Message::Error { id, error } => self.resolve(&id, Err(error)),
            Message::Notification { method, params } => self.on_notification(&method, params),
            Message::Request { id, method, params } => self.on_request(id, method, params),
        }
    }

    fn resolve(&self, id: &Value, result: Result<Value, RpcError>) {
        let Some(id) = id.as_u64() else {
            tracing::warn!(upstream = %self.name, %id, "response to an id the gateway never used");
            return;
        };
        match self.pending.lock().unwrap().remove(&id) {
            Some(pending) => {
                if let Some(token) = &pending.progress {
                    self.progress.lock().unwrap().remove(token);
                }
                let _ = pending.reply.send(result);
            }
            None => tracing::debug!(upstream = %self.name, id, "late response to a finished request"),
        }
    }

    /// The hooks of the call an unmarked message (a log line, a server
    /// request) belongs to. A stdio stream does not say which call a message
    /// relates to, so it is attributed only when one call is in flight.
    fn owner(&self) -> Option<CallHooks> {
        let pending = self.pending.lock().unwrap();
        if pending.len() == 1 { pending.values().next().map(|p| p.hooks.clone()) } else { None }
    }

    fn on_notification(&self, method: &str, mut params: Value) {
        match method {
            "notifications/progress" => {
                let token = params.get("progressToken").and_then(Value::as_str).map(str::to_owned);
                let route = token.and_then(|t| self.progress.lock().unwrap().get(&t).cloned());
                if let Some((client_token, hooks)) = route {
                    params["progressToken"] = client_token;
                    hooks.forward(jsonrpc::notification(method, params));
                }
            }
            "notifications/message" => match self.owner() {
                Some(hooks) if hooks.notifications.is_some() => hooks.forward(jsonrpc::notification(method, params)),
                _ => tracing::info!(upstream = %self.name, message = %params, "upstream log"),
            },
            "notifications/tools/list_changed"
            | "notifications/resources/list_changed"
            | "notifications/prompts/list_changed"
            | "notifications/resources/updated" => {
                let _ = self.events.send(UpstreamEvent::Notification {
                    upstream: self.name.to_string(),
                    method: method.to_owned(),
                    params,
                });
            }
            _ => tracing::debug!(upstream = %self.name, method, "ignoring an upstream notification"),
        }
    }

    /// A request from the upstream to the client (sampling, elicitation,
    /// roots): relayed to the client whose call it belongs to.
    fn on_request(self: &Arc<Self>, id: Value, method: String, params: Value) {
        if method == "ping" {
            let _ = self.out.send(jsonrpc::response(id, json!({})));
            return;
        }
        let relay = self.owner().and_then(|hooks| hooks.requests);
        let peer = Arc::clone(self);
        tokio::spawn(async move {
            let answer = match relay {
                Some(relay) => relay.request(method, params).await,
                None => Err(RpcError::internal(format!(
                    "the gateway cannot relate this {method} request to a client call (it relays server requests \
                     only during a call, and only when it can tell which call)"
                ))),
            };
            let message = match answer {
                Ok(result) => jsonrpc::response(id, result),
                Err(error) => jsonrpc::error_response(id, &error),
            };
            let _ = peer.out.send(message);
        });
    }
}
