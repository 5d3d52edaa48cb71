//! Warden: an MCP gateway whose policies are sandboxed WebAssembly components.
//!
//! Reading order: [`engine`] (how one plugin runs, sandboxed and metered),
//! [`chain`] (how plugins combine), [`config`] (how a chain is described and
//! loaded), [`policy_test`] (running policies offline), [`cli`].

pub mod builtin;
pub mod chain;
pub mod cli;
pub mod config;
pub mod engine;
pub mod policy_test;
