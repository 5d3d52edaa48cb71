//! The Model Context Protocol as the gateway needs it: JSON-RPC envelopes,
//! protocol revisions and their eras, header and `_meta` names. No I/O.
//!
//! Two eras share the wire:
//! - **legacy** (2025-03-26, 2025-06-18, 2025-11-25): an `initialize`
//!   handshake, `Mcp-Session-Id`, the `MCP-Protocol-Version` header after
//!   initialization, server-to-client requests on SSE streams;
//! - **modern** (2026-07-28): stateless requests that each carry the version
//!   and client capabilities in `params._meta`, `server/discover`,
//!   `Mcp-Method`/`Mcp-Name` headers, and `input_required` results instead of
//!   server-to-client requests.

pub mod jsonrpc;
pub mod sse;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};

pub use jsonrpc::{Message, RpcError, code};

/// The modern, stateless revision.
pub const MODERN: &str = "2026-07-28";
/// Legacy (handshake) revisions, newest first.
pub const LEGACY: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// The revision assumed when a legacy request carries no version header.
pub const DEFAULT_LEGACY: &str = "2025-03-26";

/// Every revision the gateway speaks, newest first.
pub fn supported_versions() -> Vec<&'static str> {
    std::iter::once(MODERN).chain(LEGACY).collect()
}

/// Which era a revision belongs to, if the gateway speaks it.
pub fn era_of(version: &str) -> Option<Era> {
    if version == MODERN { Some(Era::Modern) } else { LEGACY.iter().find(|v| **v == version).map(|v| Era::Legacy(v)) }
}

/// How a client or upstream talks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// Handshake and sessions, at this revision.
    Legacy(&'static str),
    /// Stateless, 2026-07-28.
    Modern,
}

impl Era {
    /// The revision string.
    pub fn version(self) -> &'static str {
        match self {
            Era::Legacy(v) => v,
            Era::Modern => MODERN,
        }
    }
}

/// Header names (HTTP header names are case-insensitive; these are how the
/// gateway writes them).
pub mod header {
    /// Legacy session id.
    pub const SESSION_ID: &str = "mcp-session-id";
    /// Protocol revision of a request.
    pub const PROTOCOL_VERSION: &str = "mcp-protocol-version";
    /// 2026-07-28: the JSON-RPC method.
    pub const METHOD: &str = "mcp-method";
    /// 2026-07-28: the tool or prompt name, or resource URI.
    pub const NAME: &str = "mcp-name";
    /// 2026-07-28: prefix of headers mirroring tool arguments.
    pub const PARAM_PREFIX: &str = "mcp-param-";
    /// SSE resumption.
    pub const LAST_EVENT_ID: &str = "last-event-id";
}

/// `_meta` keys of the 2026-07-28 revision.
pub mod meta {
    /// The request's protocol revision.
    pub const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
    /// The client's capabilities.
    pub const CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
    /// The client's name and version.
    pub const CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
    /// The server's name and version, on results.
    pub const SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
    /// Requested log level (deprecated, still honoured).
    pub const LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
    /// On `subscriptions/listen` notifications: the listen request's id.
    pub const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
}

/// The `params._meta` object of a request, if any.
pub fn request_meta(params: &Value) -> Option<&Map<String, Value>> {
    params.get("_meta").and_then(Value::as_object)
}

/// The `progressToken` a request asks progress notifications to carry.
pub fn progress_token(params: &Value) -> Option<&Value> {
    request_meta(params).and_then(|m| m.get("progressToken"))
}

/// Add or replace `_meta` entries on a params (or result) object.
pub fn set_meta(target: &mut Value, key: &str, value: Value) {
    if !target.is_object() {
        *target = json!({});
    }
    let meta = target.as_object_mut().expect("object").entry("_meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut().expect("object").insert(key.to_owned(), value);
}

/// Remove the 2026-07-28 envelope (`io.modelcontextprotocol/*` keys) from a
/// request's `_meta`, for an upstream that speaks a legacy revision; other
/// `_meta` entries (`progressToken`, trace context) stay.
pub fn strip_modern_meta(params: &mut Value) {
    if let Some(meta) = params.get_mut("_meta").and_then(Value::as_object_mut) {
        meta.retain(|key, _| !key.starts_with("io.modelcontextprotocol/"));
        if meta.is_empty() {
            params.as_object_mut().expect("params with _meta is an object").remove("_meta");
        }
    }
}

/// What the `Mcp-Name` header must equal for a method, if anything:
/// the tool or prompt name, or the resource URI.
pub fn name_param(method: &str, params: &Value) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The `Mcp-Param-*` headers a tool's input schema declares: each
/// `x-mcp-header` on a property reachable through `properties` alone, as
/// (header name suffix, path of argument keys).
pub fn param_header_specs(input_schema: &Value) -> Vec<(String, Vec<String>)> {
    fn walk(schema: &Value, path: &mut Vec<String>, out: &mut Vec<(String, Vec<String>)>) {
        let Some(properties) = schema.get("properties").and_then(Value::as_object) else { return };
        for (name, property) in properties {
            path.push(name.clone());
            if let Some(header) = property.get("x-mcp-header").and_then(Value::as_str) {
                out.push((header.to_owned(), path.clone()));
            }
            walk(property, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(input_schema, &mut Vec::new(), &mut out);
    out
}

/// The header value for an argument: strings (encoded if needed), integers
/// and booleans; `None` for anything else, and for null or absent values.
pub fn param_header_value(arguments: &Value, path: &[String]) -> Option<String> {
    let value = path.iter().try_fold(arguments, |v, key| v.get(key))?;
    match value {
        Value::String(s) => Some(encode_header_value(s)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        Value::Number(n) => n.as_f64().filter(|f| f.fract() == 0.0).map(|f| (f as i64).to_string()),
        _ => None,
    }
}

/// Decode an `Mcp-Name`/`Mcp-Param-*` header value: plain ASCII as is, or
/// `=?base64?…?=` for anything else.
pub fn decode_header_value(raw: &str) -> Option<String> {
    match raw.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(encoded) => STANDARD.decode(encoded).ok().and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(raw.to_owned()),
    }
}

/// Encode a value for an `Mcp-Name`/`Mcp-Param-*` header.
pub fn encode_header_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value.trim() == value
        && !value.starts_with("=?base64?");
    if plain { value.to_owned() } else { format!("=?base64?{}?=", STANDARD.encode(value)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eras() {
        assert_eq!(era_of("2026-07-28"), Some(Era::Modern));
        assert_eq!(era_of("2025-06-18"), Some(Era::Legacy("2025-06-18")));
        assert_eq!(era_of("2099-01-01"), None);
        assert_eq!(supported_versions()[0], MODERN);
    }

    #[test]
    fn header_values_round_trip() {
        for value in ["get_weather", "Hello, 世界", " padded ", "=?base64?x?=", ""] {
            let encoded = encode_header_value(value);
            assert!(encoded.is_ascii());
            assert_eq!(decode_header_value(&encoded).as_deref(), Some(value), "{encoded}");
        }
        assert_eq!(encode_header_value("get_weather"), "get_weather");
        assert_eq!(decode_header_value("=?base64?SGVsbG8sIOS4lueVjA==?=").unwrap(), "Hello, 世界");
    }

    #[test]
    fn meta_helpers() {
        let mut params = json!({"name": "t"});
        set_meta(&mut params, "progressToken", json!(7));
        assert_eq!(progress_token(&params), Some(&json!(7)));
        assert_eq!(name_param("tools/call", &params).as_deref(), Some("t"));
        assert_eq!(name_param("resources/read", &json!({"uri": "a://b"})).as_deref(), Some("a://b"));
        assert_eq!(name_param("tools/list", &params), None);
    }
}
