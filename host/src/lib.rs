//! Warden: an MCP gateway whose policies are sandboxed WebAssembly components.
//!
//! Reading order (see also ARCHITECTURE.md):
//! 1. [`engine`]: how one policy plugin runs, sandboxed and metered.
//! 2. [`chain`]: how plugins combine into a decision.
//! 3. [`mcp`]: the protocol, both eras, without I/O.
//! 4. [`gateway`]: the request path — route, policy, upstream, policy, audit.
//! 5. [`catalog`] and [`upstream`]: federation, and the connections behind it.
//! 6. [`transport`]: how clients reach the gateway (HTTP, stdio).
//! 7. [`auth`]: API keys, JWTs from trusted issuers, the resource-server side
//!    of OAuth; [`token`]: a local issuer for trying it.
//! 8. [`reload`]: hot reload of the policy chain; [`pack`]: signed policy packs
//!    and the trust policy that admits them.
//! 9. [`config`], [`server`], [`cli`]: assembly.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod builtin;
pub mod catalog;
pub mod chain;
pub mod cli;
pub mod config;
pub mod controls;
pub mod engine;
pub mod gateway;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod pack;
pub mod policy_test;
pub mod reload;
pub mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod transport;
pub mod upstream;
pub mod usage;
