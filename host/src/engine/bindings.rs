//! Host bindings for the WIT contract in `wit/policy.wit`, generated once.
//!
//! The host binds the `policy` world, which includes every hook. A plugin built
//! for a narrower world simply lacks some exports; [`super::plugin`] asks each
//! hook interface for its export indices and records which ones exist.

#![allow(missing_docs, unsafe_code, clippy::all)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "warden:policy/policy",
    additional_derives: [PartialEq, Eq],
});

pub use self::warden::policy::types;
pub use exports::warden::policy::{call_hook, catalog_hook, config, list_hook, result_hook};

impl Default for types::ToolAnnotations {
    /// No hints, as for resources, prompts and tools without annotations.
    fn default() -> Self {
        Self { title: None, read_only_hint: None, destructive_hint: None, idempotent_hint: None, open_world_hint: None }
    }
}
