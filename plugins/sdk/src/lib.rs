//! Write Warden policy plugins in Rust.
//!
//! A policy is a type that implements [`Policy`] (its configuration) and one or
//! more of the hook traits [`CallPolicy`], [`ResultPolicy`], [`ListPolicy`]
//! (tool listings) and [`CatalogPolicy`] (resource, template and prompt
//! listings).
//! The [`export!`] macro turns it into a WebAssembly component that exports
//! exactly those hooks, built with `cargo build --target wasm32-wasip2`:
//!
//! ```
//! use warden_policy_sdk::{CallPolicy, CallVerdict, Call, Policy};
//!
//! #[derive(serde::Deserialize, Default)]
//! #[serde(deny_unknown_fields)]
//! struct Config { blocked: Vec<String> }
//!
//! struct Blocklist;
//!
//! impl Policy for Blocklist {
//!     type Config = Config;
//! }
//!
//! impl CallPolicy for Blocklist {
//!     fn on_call(config: &Config, call: &Call) -> CallVerdict {
//!         if config.blocked.contains(&call.target.name) {
//!             return CallVerdict::deny("blocked", format!("{} is blocked", call.target.name));
//!         }
//!         CallVerdict::Allow
//!     }
//! }
//!
//! warden_policy_sdk::export!(Blocklist: call);
//! ```
//!
//! Each hook call runs in a fresh instance; [`PerCall`] is an allocator made
//! for that (opt-in, one `#[global_allocator]` line).
//!
//! The types mirror the WIT contract in `wit/policy.wit` (package
//! `warden:policy@0.1.1`); read it for what each field means. Everything here
//! also compiles for the host target, so policy logic can be unit-tested with a
//! plain `cargo test`.

use serde::de::DeserializeOwned;
pub use serde_json::{self, Value};

mod alloc;
pub use alloc::PerCall;
mod patterns;
pub use patterns::{Pattern, PatternError};

#[allow(missing_docs, unsafe_code, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "package warden:sdk; world imports { import warden:policy/host@0.1.1; }",
        world: "warden:sdk/imports",
        additional_derives: [PartialEq, Eq],
        generate_all,
    });
}

/// The records and variants of the WIT contract (`warden:policy/types`).
pub mod types {
    pub use crate::bindings::warden::policy::types::*;
}
pub use types::{
    Call, CallVerdict, Denial, ItemKind, ListRequest, ListVerdict, ListedItem, ListedTool, LogLevel, PastCall,
    Principal, ResultVerdict, Rewrite, Target, TargetKind, ToolAnnotations,
};

/// A policy's configuration: parsed from the plugin's section of the chain config.
pub trait Policy {
    /// The configuration type. Use `#[serde(deny_unknown_fields)]` so typos are
    /// caught when the gateway loads the chain, and `Default` for an absent config.
    type Config: DeserializeOwned;

    /// Semantic checks that deserialization cannot express. Return every
    /// problem, each naming its field.
    fn validate(config: &Self::Config) -> Result<(), Vec<String>> {
        let _ = config;
        Ok(())
    }
}

/// A policy that decides on calls before they reach their upstream.
pub trait CallPolicy: Policy {
    /// Decide on one call. See `call-hook.on-call` in the WIT contract.
    fn on_call(config: &Self::Config, call: &Call) -> CallVerdict;
}

/// A policy that inspects or rewrites results before the client sees them.
pub trait ResultPolicy: Policy {
    /// Decide on one result; `output` is the parsed MCP result object.
    fn on_result(config: &Self::Config, call: &Call, output: Value) -> ResultVerdict;

    /// Decide on one result as the JSON text the gateway sent. The default
    /// parses it and calls [`ResultPolicy::on_result`], and withholds a result
    /// that is not JSON.
    ///
    /// Override it to read the text without building a tree: inside a plugin,
    /// parsing a 64 KiB result into a [`Value`] and writing it back costs
    /// milliseconds, most of it allocation. An override must fail closed on
    /// text it cannot read, as the default does.
    fn on_result_json(config: &Self::Config, call: &Call, output: &str) -> ResultVerdict {
        match serde_json::from_str(output) {
            Ok(output) => Self::on_result(config, call, output),
            Err(e) => ResultVerdict::not_json(e),
        }
    }
}

/// A policy that filters or flags tool listings.
pub trait ListPolicy: Policy {
    /// Return one verdict per tool, in order.
    fn on_list(config: &Self::Config, request: &ListRequest, tools: &[ListedTool]) -> Vec<ListVerdict>;
}

/// A policy that filters or flags listings of resources, resource templates
/// and prompts (WIT 0.1.1).
pub trait CatalogPolicy: Policy {
    /// Return one verdict per item, in order.
    fn on_catalog(config: &Self::Config, request: &ListRequest, items: &[ListedItem]) -> Vec<ListVerdict>;
}

impl ListedItem {
    /// The item's whole definition, parsed.
    pub fn definition_json(&self) -> Value {
        serde_json::from_str(&self.definition).unwrap_or(Value::Null)
    }
}

impl CallVerdict {
    /// Refuse the call with a machine-readable code and a human-readable reason.
    pub fn deny(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Deny(Denial { code: code.into(), reason: reason.into() })
    }

    /// Replace the call's arguments.
    pub fn rewrite(arguments: &Value, note: impl Into<String>) -> Self {
        Self::Rewrite(Rewrite { json: to_json(arguments), note: note.into() })
    }

    /// Ask for a human's approval with the given question.
    pub fn ask(prompt: impl Into<String>) -> Self {
        Self::Ask(prompt.into())
    }
}

/// `value` as JSON text. Not `Value::to_string`: that goes through
/// `fmt::Display`, a formatter call per fragment, where `perf` found ~8% of
/// the sanitizer's time on a 64 KiB result in the chain bench.
fn to_json(value: &Value) -> String {
    serde_json::to_string(value).expect("a JSON value always serialises")
}

impl ResultVerdict {
    /// Withhold the result with a machine-readable code and a human-readable reason.
    pub fn deny(code: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Deny(Denial { code: code.into(), reason: reason.into() })
    }

    /// Withhold a result that is not JSON (`invalid-output`), saying why.
    pub fn not_json(why: impl std::fmt::Display) -> Self {
        Self::deny("invalid-output", format!("result is not JSON: {why}"))
    }

    /// Replace the result.
    pub fn rewrite(output: &Value, note: impl Into<String>) -> Self {
        Self::Rewrite(Rewrite { json: to_json(output), note: note.into() })
    }
}

impl Call {
    /// The call's arguments, parsed. The gateway guarantees a JSON object.
    pub fn arguments_json(&self) -> Value {
        serde_json::from_str(&self.arguments).unwrap_or(Value::Null)
    }

    /// The principal's verified claims, parsed.
    pub fn claims_json(&self) -> Value {
        serde_json::from_str(&self.principal.claims).unwrap_or(Value::Null)
    }
}

impl Principal {
    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

impl Default for ToolAnnotations {
    /// No hints at all, as for a tool whose server declared none.
    fn default() -> Self {
        Self { title: None, read_only_hint: None, destructive_hint: None, idempotent_hint: None, open_world_hint: None }
    }
}

/// Builders for the records hooks receive, for policies' unit tests.
pub mod testing {
    use super::*;

    /// A principal with no tenant, roles or scopes.
    pub fn principal(subject: &str) -> Principal {
        Principal { subject: subject.into(), tenant: None, roles: vec![], scopes: vec![], claims: "{}".into() }
    }

    /// A tool call to `server/name` with empty arguments and history, by `alice`.
    pub fn call(server: &str, name: &str) -> Call {
        Call {
            request_id: "test-request".into(),
            session_id: Some("test-session".into()),
            principal: principal("alice"),
            target: Target {
                kind: TargetKind::Tool,
                server: server.into(),
                name: name.into(),
                annotations: ToolAnnotations::default(),
            },
            arguments: "{}".into(),
            history: vec![],
            timestamp_ms: 1_700_000_000_000,
        }
    }

    /// A listed tool with an empty input schema.
    pub fn listed_tool(server: &str, name: &str, description: &str) -> ListedTool {
        ListedTool {
            server: server.into(),
            name: name.into(),
            description: Some(description.into()),
            annotations: ToolAnnotations::default(),
            input_schema: "{}".into(),
        }
    }

    /// A listed item of `kind` named `name` (URI, URI template or prompt name).
    pub fn listed_item(kind: ItemKind, server: &str, name: &str, description: &str) -> ListedItem {
        ListedItem {
            kind,
            server: server.into(),
            name: name.into(),
            title: None,
            description: Some(description.into()),
            definition: "{}".into(),
        }
    }

    /// A listing request by `principal`.
    pub fn list_request(principal: Principal) -> ListRequest {
        ListRequest { request_id: "test-request".into(), session_id: Some("test-session".into()), principal }
    }
}

/// Write a line to the gateway's log (to standard error when not running in Warden).
pub fn log(level: LogLevel, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::warden::policy::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Parse a plugin configuration the way the gateway hands it over: JSON text,
/// where an empty string means "no configuration" (`{}`). An error names the
/// field it is about: `roles.analyst.allow[0]: pattern "": is empty`.
pub fn parse_config<C: DeserializeOwned>(config: &str) -> Result<C, String> {
    let text = if config.trim().is_empty() { "{}" } else { config };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        // serde_json appends a position in the JSON text, which the operator
        // never saw (they wrote TOML): drop it.
        let inner = e.inner();
        let message = inner.to_string();
        let suffix = format!(" at line {} column {}", inner.line(), inner.column());
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        match e.path().to_string().as_str() {
            "." => message.to_owned(),
            path => format!("{path}: {message}"),
        }
    })
}

/// What the `export!` macro expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use crate::bindings::warden::policy::host;
    pub use wit_bindgen;

    pub fn validate_config<P: Policy>(config: &str) -> Result<(), Vec<String>> {
        let config: P::Config = parse_config(config).map_err(|e| vec![e])?;
        P::validate(&config)
    }

    fn config_or<P: Policy, V>(config: &str, fail: impl FnOnce(Denial) -> V) -> Result<P::Config, V> {
        // The gateway validated this config at load time; failing here means the
        // plugin changed under it. Fail closed.
        parse_config(config).map_err(|reason| fail(Denial { code: "invalid-config".into(), reason }))
    }

    pub fn on_call<P: CallPolicy>(config: &str, call: Call) -> CallVerdict {
        match config_or::<P, _>(config, CallVerdict::Deny) {
            Ok(config) => P::on_call(&config, &call),
            Err(verdict) => verdict,
        }
    }

    pub fn on_result<P: ResultPolicy>(config: &str, call: Call, output: String) -> ResultVerdict {
        let config = match config_or::<P, _>(config, ResultVerdict::Deny) {
            Ok(config) => config,
            Err(verdict) => return verdict,
        };
        P::on_result_json(&config, &call, &output)
    }

    pub fn on_list<P: ListPolicy>(config: &str, request: ListRequest, tools: Vec<ListedTool>) -> Vec<ListVerdict> {
        match config_or::<P, _>(config, |d| d) {
            Ok(config) => P::on_list(&config, &request, &tools),
            // One hide per tool: a plugin that cannot read its config shows nothing.
            Err(denial) => tools.iter().map(|_| ListVerdict::Hide(denial.reason.clone())).collect(),
        }
    }

    pub fn on_catalog<P: CatalogPolicy>(
        config: &str,
        request: ListRequest,
        items: Vec<ListedItem>,
    ) -> Vec<ListVerdict> {
        match config_or::<P, _>(config, |d| d) {
            Ok(config) => P::on_catalog(&config, &request, &items),
            Err(denial) => items.iter().map(|_| ListVerdict::Hide(denial.reason.clone())).collect(),
        }
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __impl_hook {
    (call, $ty:ty) => {
        impl exports::warden::policy::call_hook::Guest for Export {
            fn on_call(config: String, call: ::warden_policy_sdk::Call) -> ::warden_policy_sdk::CallVerdict {
                ::warden_policy_sdk::__private::on_call::<$ty>(&config, call)
            }
        }
    };
    (result, $ty:ty) => {
        impl exports::warden::policy::result_hook::Guest for Export {
            fn on_result(
                config: String,
                call: ::warden_policy_sdk::Call,
                output: String,
            ) -> ::warden_policy_sdk::ResultVerdict {
                ::warden_policy_sdk::__private::on_result::<$ty>(&config, call, output)
            }
        }
    };
    (list, $ty:ty) => {
        impl exports::warden::policy::list_hook::Guest for Export {
            fn on_list(
                config: String,
                request: ::warden_policy_sdk::ListRequest,
                tools: Vec<::warden_policy_sdk::ListedTool>,
            ) -> Vec<::warden_policy_sdk::ListVerdict> {
                ::warden_policy_sdk::__private::on_list::<$ty>(&config, request, tools)
            }
        }
    };
    (catalog, $ty:ty) => {
        impl exports::warden::policy::catalog_hook::Guest for Export {
            fn on_catalog(
                config: String,
                request: ::warden_policy_sdk::ListRequest,
                items: Vec<::warden_policy_sdk::ListedItem>,
            ) -> Vec<::warden_policy_sdk::ListVerdict> {
                ::warden_policy_sdk::__private::on_catalog::<$ty>(&config, request, items)
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __native_hook {
    (call, $ty:ty) => {
        ($crate::__private::on_call::<$ty> as fn(&str, $crate::Call) -> $crate::CallVerdict)
    };
    (result, $ty:ty) => {
        ($crate::__private::on_result::<$ty> as fn(&str, $crate::Call, String) -> $crate::ResultVerdict)
    };
    (list, $ty:ty) => {
        ($crate::__private::on_list::<$ty>
            as fn(&str, $crate::ListRequest, Vec<$crate::ListedTool>) -> Vec<$crate::ListVerdict>)
    };
    (catalog, $ty:ty) => {
        ($crate::__private::on_catalog::<$ty>
            as fn(&str, $crate::ListRequest, Vec<$crate::ListedItem>) -> Vec<$crate::ListVerdict>)
    };
}

include!(concat!(env!("OUT_DIR"), "/export_macro.rs"));
