//! Connections to upstream MCP servers, configured and nothing else (no
//! server is ever discovered or added at run time).
//!
//! - [`stdio`]: a child process speaking newline-delimited JSON-RPC, restarted
//!   with backoff when it dies, shut down cleanly with the gateway.
//! - [`http`]: a Streamable HTTP server; the era (2026-07-28 stateless, or the
//!   legacy handshake with a session) is detected once and remembered.
//!
//! Every call runs under the upstream's timeout and concurrency limit, and
//! carries [`CallHooks`]: where the upstream's progress and log notifications
//! for that call go, and who answers its requests (sampling, elicitation,
//! roots) — the client that made the call.

pub mod credentials;
pub mod http;
mod peer;
pub mod stdio;

use std::{collections::BTreeMap, future::Future, path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::mcp::{self, RpcError, code};

/// How to reach an upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Spawn a process and talk over its stdin and stdout.
    Stdio {
        /// The program (looked up in `PATH` unless it contains a `/`).
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment variables (the gateway's own environment is not
        /// passed on, apart from `PATH`, `HOME`, `LANG` and `TMPDIR`; never the
        /// client's credentials).
        env: BTreeMap<String, String>,
        /// Working directory.
        cwd: Option<PathBuf>,
    },
    /// POST to a Streamable HTTP endpoint.
    Http {
        /// The MCP endpoint, `http://host:port/path`.
        url: String,
        /// Which era to speak: detected when `None`.
        era: Option<EraChoice>,
        /// What to authenticate with (never the client's credentials).
        credentials: Option<credentials::Credentials>,
    },
}

/// A forced era for an HTTP upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EraChoice {
    /// The `initialize` handshake.
    Legacy,
    /// Stateless 2026-07-28.
    Modern,
}

/// One configured upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Unique name; also the default namespace prefix.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// Longest a call may take.
    pub timeout: Duration,
    /// Most calls in flight at once; more wait (within the timeout).
    pub max_concurrency: usize,
}

/// Answers requests the upstream makes of the client during a call.
pub trait ClientRequests: Send + Sync {
    /// Send `method` to the client and wait for its answer.
    fn request(&self, method: String, params: Value) -> Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>;
}

/// Decides on a notification before it reaches the client: the same
/// notification, a changed one, or `None` to drop it.
pub trait NotificationScreen: Send + Sync {
    /// Screen one notification (a whole JSON-RPC message).
    fn screen(&self, notification: Value) -> Option<Value>;
}

/// Where a call's side traffic goes.
#[derive(Clone, Default)]
pub struct CallHooks {
    /// Notifications for the client (progress, logs), already in its terms.
    pub notifications: Option<mpsc::UnboundedSender<Value>>,
    /// What every notification passes first, if anything.
    pub screen: Option<Arc<dyn NotificationScreen>>,
    /// Who answers the upstream's requests; `None` refuses them.
    pub requests: Option<Arc<dyn ClientRequests>>,
    /// The client's capabilities (passed to 2026-07-28 upstreams in `_meta`).
    pub client_capabilities: Value,
    /// The log level the client asked for (passed to 2026-07-28 upstreams,
    /// which send log messages only when a request names one).
    pub log_level: Option<String>,
    /// `Mcp-Param-*` headers for a 2026-07-28 upstream, computed from the
    /// arguments as the upstream will receive them.
    pub param_headers: Vec<(String, String)>,
    /// W3C trace context (`traceparent`, `tracestate`) for HTTP upstreams.
    pub trace_headers: Vec<(String, String)>,
}

impl CallHooks {
    fn forward(&self, notification: Value) {
        let Some(sink) = &self.notifications else { return };
        let notification = match &self.screen {
            Some(screen) => match screen.screen(notification) {
                Some(notification) => notification,
                None => return,
            },
            None => notification,
        };
        let _ = sink.send(notification);
    }
}

/// Something an upstream announced that the gateway acts on.
#[derive(Clone, Debug, PartialEq)]
pub enum UpstreamEvent {
    /// The upstream is (again) ready.
    Connected {
        /// Its name.
        upstream: String,
    },
    /// A list changed or a resource was updated.
    Notification {
        /// Its name.
        upstream: String,
        /// `notifications/tools/list_changed` and the like.
        method: String,
        /// The notification's params.
        params: Value,
    },
}

/// What an upstream said about itself when the connection was set up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerInfo {
    /// Its capabilities object.
    pub capabilities: Value,
    /// Its `serverInfo` (name, version).
    pub info: Value,
    /// Its instructions, if any.
    pub instructions: Option<String>,
    /// The revision spoken.
    pub version: String,
}

impl ServerInfo {
    /// Whether it declares `capability` (`tools`, `resources`, …).
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities.get(capability).is_some_and(|c| !c.is_null())
    }
}

/// Why an upstream call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream answered with a JSON-RPC error: passed to the client as is.
    #[error("{0}")]
    Rpc(RpcError),
    /// The upstream is not running or not reachable.
    #[error("upstream {upstream} is unavailable: {reason}")]
    Unavailable {
        /// Its name.
        upstream: String,
        /// Why.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("upstream {upstream} did not answer within {} ms", .timeout.as_millis())]
    Timeout {
        /// Its name.
        upstream: String,
        /// The limit.
        timeout: Duration,
    },
    /// The upstream answered with something that is not MCP.
    #[error("upstream {upstream} sent an invalid response: {reason}")]
    Protocol {
        /// Its name.
        upstream: String,
        /// What was wrong.
        reason: String,
    },
}

impl UpstreamError {
    /// The error as the client sees it.
    pub fn to_rpc(&self) -> RpcError {
        match self {
            UpstreamError::Rpc(e) => e.clone(),
            other => RpcError::new(code::UPSTREAM_ERROR, other.to_string()),
        }
    }
}

/// The capabilities the gateway declares to legacy upstreams: everything it
/// can relay, so a server may ask; a call whose client lacks the capability
/// gets its request refused.
pub fn gateway_client_capabilities() -> Value {
    json!({ "sampling": {}, "elicitation": { "form": {}, "url": {} }, "roots": { "listChanged": true } })
}

/// `clientInfo` the gateway presents upstream.
pub fn gateway_client_info() -> Value {
    json!({ "name": "warden", "version": env!("CARGO_PKG_VERSION") })
}

/// The link behind an upstream.
enum Link {
    Stdio(stdio::StdioLink),
    Http(Arc<http::HttpLink>),
}

/// A running connection to one upstream.
pub struct Upstream {
    spec: UpstreamSpec,
    link: Link,
    permits: Semaphore,
}

impl Upstream {
    /// Start connecting (in the background; calls wait for readiness within
    /// their timeout).
    pub fn start(spec: UpstreamSpec, events: mpsc::UnboundedSender<UpstreamEvent>) -> Arc<Self> {
        let link = match &spec.transport {
            Transport::Stdio { .. } => Link::Stdio(stdio::StdioLink::start(&spec, events)),
            Transport::Http { .. } => Link::Http(http::HttpLink::start(&spec, events)),
        };
        Arc::new(Self { permits: Semaphore::new(spec.max_concurrency), spec, link })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its configuration.
    pub fn spec(&self) -> &UpstreamSpec {
        &self.spec
    }

    /// What it said about itself, once connected.
    pub fn server_info(&self) -> Option<ServerInfo> {
        match &self.link {
            Link::Stdio(link) => link.server_info(),
            Link::Http(link) => link.server_info(),
        }
    }

    /// Whether connecting has failed at least once (so far).
    pub fn has_failed(&self) -> bool {
        match &self.link {
            Link::Stdio(link) => link.has_failed(),
            Link::Http(link) => link.has_failed(),
        }
    }

    /// Make a request, within the upstream's timeout and concurrency limit.
    pub async fn request(&self, method: &str, params: Value, hooks: CallHooks) -> Result<Value, UpstreamError> {
        let timeout = self.spec.timeout;
        let work = async {
            let _permit = self.permits.acquire().await.expect("the semaphore is never closed");
            match &self.link {
                Link::Stdio(link) => link.request(method, params, hooks, timeout).await,
                Link::Http(link) => link.request(method, params, hooks).await,
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout { upstream: self.spec.name.clone(), timeout }),
        }
    }

    /// Stop: close the connection and, for a process, wait for it to exit
    /// (killing it after a grace period).
    pub async fn shutdown(&self) {
        match &self.link {
            Link::Stdio(link) => link.shutdown().await,
            Link::Http(link) => link.shutdown().await,
        }
    }
}

/// Turn an upstream's JSON-RPC error into the gateway's error.
fn rpc_error(upstream: &str, error: RpcError) -> UpstreamError {
    if error.code == code::INTERNAL_ERROR && error.message.starts_with(&format!("upstream {upstream}")) {
        UpstreamError::Unavailable { upstream: upstream.to_owned(), reason: error.message }
    } else {
        UpstreamError::Rpc(error)
    }
}

/// The `initialize` params the gateway sends to legacy upstreams.
fn initialize_params() -> Value {
    json!({
        "protocolVersion": mcp::LEGACY[0],
        "capabilities": gateway_client_capabilities(),
        "clientInfo": gateway_client_info(),
    })
}

/// Read an `initialize` result.
fn parse_initialize(result: &Value) -> Result<ServerInfo, String> {
    let version = result.get("protocolVersion").and_then(Value::as_str).ok_or("no protocolVersion")?;
    if mcp::era_of(version).is_none() && version != "2024-11-05" {
        return Err(format!("it speaks protocol {version}, which the gateway does not"));
    }
    Ok(ServerInfo {
        capabilities: result.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        info: result.get("serverInfo").cloned().unwrap_or_else(|| json!({})),
        instructions: result.get("instructions").and_then(Value::as_str).map(str::to_owned),
        version: version.to_owned(),
    })
}
