//! Warden: an MCP gateway whose policies are sandboxed WebAssembly components.
//!
//! Reading order: [`engine`] (how one plugin runs), [`chain`] (how plugins
//! combine), [`policy_config`] (how a chain is described and loaded).

pub mod builtin;
pub mod chain;
pub mod engine;
