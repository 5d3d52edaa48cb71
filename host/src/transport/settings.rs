//! The client listener's settings, owned by the transport (the config
//! reads `[server]` and `[sessions]` into them).

use std::{net::SocketAddr, time::Duration};

/// HTTP listener settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerSettings {
    /// Address to bind.
    pub listen: SocketAddr,
    /// The MCP endpoint's path.
    pub path: String,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Origins allowed besides loopback ones.
    pub allowed_origins: Vec<String>,
    /// Host header values allowed besides loopback ones.
    pub allowed_hosts: Vec<String>,
    /// Bounds on connections and request bodies.
    pub limits: ConnectionLimits,
}

/// What one connection, and all of them together, may hold (`[server]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time for a request head, from when the connection opened or went idle
    /// with bytes of a new request arriving.
    pub header_timeout: Duration,
    /// Time for a request body, from when its head arrived.
    pub body_timeout: Duration,
    /// An idle connection (nothing in flight, nothing arriving) closes after this.
    pub keep_alive: Duration,
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections from one client IP address.
    pub max_connections_per_ip: usize,
    /// Messages in one JSON-RPC batch.
    pub max_batch: usize,
    /// Nesting depth of a request body's JSON.
    pub max_json_depth: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_batch: 32,
            max_json_depth: 64,
        }
    }
}

/// Legacy session settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSettings {
    /// Sessions unused this long end.
    pub idle_timeout: Duration,
    /// Most sessions at once; past it a new session is refused (503).
    pub max: usize,
    /// Most sessions of one identity; past it that identity's least recently
    /// used session ends, never another caller's.
    pub max_per_principal: usize,
    /// Past calls per session kept for chain policies.
    pub history: usize,
    /// Requests an upstream sent the client that may wait for its answer at once.
    pub max_client_requests: usize,
    /// Bytes of SSE events kept per stream for resumption (`Last-Event-ID`).
    pub replay_bytes: usize,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(1800),
            max: 10_000,
            max_per_principal: 100,
            history: 32,
            max_client_requests: 16,
            replay_bytes: 1 << 20,
        }
    }
}
