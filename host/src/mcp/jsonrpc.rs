//! JSON-RPC 2.0 messages as MCP uses them: parsing, classification, builders.
//!
//! Payloads stay `serde_json::Value`: a gateway forwards what it does not
//! understand, so only the envelope is typed.

use serde_json::{Map, Value, json};

/// Standard and MCP error codes.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid parameters (unknown tool, missing `_meta`, …).
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// 2026-07-28: an `Mcp-*` header disagrees with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// 2026-07-28: the server needs a client capability the request did not declare.
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    /// 2026-07-28: unsupported protocol version.
    pub const UNSUPPORTED_VERSION: i64 = -32022;
    /// Warden: a policy plugin denied the request.
    pub const POLICY_DENIED: i64 = -32010;
    /// Warden: a policy plugin requires human approval first.
    pub const APPROVAL_REQUIRED: i64 = -32011;
    /// Warden: the upstream server failed, timed out or is unavailable.
    pub const UPSTREAM_ERROR: i64 = -32012;
    /// Warden: the session is not initialized yet.
    pub const NOT_INITIALIZED: i64 = -32013;
    /// The call needs OAuth scopes the caller's token lacks (HTTP: 403 with an
    /// `insufficient_scope` challenge); `data.scopes` names them.
    pub const INSUFFICIENT_SCOPE: i64 = -32014;
    /// Warden: a bound of the gateway was reached (connections, sessions,
    /// requests waiting for a client); `data.limit` names the setting and
    /// `data.value` its value. Trying again later may succeed.
    pub const OVERLOADED: i64 = -32015;
    /// Warden: the audit log cannot be written and is configured to fail
    /// closed, so nothing is served until it can.
    pub const AUDIT_UNAVAILABLE: i64 = -32016;
    /// Warden: a `[[limit]]` has no room for the call now; `data.limit`
    /// names it and `data.retryAfterMs` says when to try again.
    pub const RATE_LIMITED: i64 = -32017;
    /// Warden: a `[[quota]]` is spent for its window; `data.quota` names it,
    /// `data.resetAt` (RFC 3339) and `data.retryAfterMs` say when it resets.
    pub const QUOTA_EXCEEDED: i64 = -32018;
    /// Warden: limits cannot be checked because the shared state store
    /// (Redis) is unreachable and `[state] on_unavailable = "refuse"`.
    pub const STATE_UNAVAILABLE: i64 = -32019;
    /// Warden: an operator switched the tool, resource, prompt or its whole
    /// upstream off (a kill switch); `data.switch` names the switch and
    /// `data.reason` says why. (Apart from -32020…-32022, which the
    /// protocol itself uses.)
    pub const SWITCHED_OFF: i64 = -32030;
    /// Warden: the tool's definition does not match its pin (changed,
    /// renamed, or never pinned) and it is held until an operator approves
    /// it; `data.change` and `data.fields` say what differs.
    pub const TOOL_HELD: i64 = -32031;
    /// Warden: the tool is deprecated and past its sunset
    /// (`after_sunset = "refuse"`); `data` has its `message` and `sunset`.
    pub const RETIRED: i64 = -32032;
    /// Warden: a person denied the call a policy asked about, or nobody
    /// approved it within `approvals.timeout_s`; `data` has the approval's
    /// id, who answered (`by`: a subject or `timeout`), how and why.
    pub const APPROVAL_DENIED: i64 = -32033;
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    /// The error code.
    pub code: i64,
    /// A short description.
    pub message: String,
    /// Structured detail.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error without data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// Attach structured detail.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// `-32602` with a message.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message)
    }

    /// `-32601` for `method`.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(code::METHOD_NOT_FOUND, format!("method not found: {method}"))
    }

    /// `-32603` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(code::INTERNAL_ERROR, message)
    }

    /// The error as a JSON object.
    pub fn to_value(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            error["data"] = data.clone();
        }
        error
    }

    /// Read an error object (from an upstream response).
    pub fn from_value(value: &Value) -> Self {
        Self {
            code: value.get("code").and_then(Value::as_i64).unwrap_or(code::INTERNAL_ERROR),
            message: value.get("message").and_then(Value::as_str).unwrap_or("error").to_owned(),
            data: value.get("data").cloned(),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for RpcError {}

/// One JSON-RPC message, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// A request: has `method` and `id`.
    Request {
        /// The request id (string or number, never null).
        id: Value,
        /// The method.
        method: String,
        /// The params (`{}` if absent).
        params: Value,
    },
    /// A notification: `method`, no `id`.
    Notification {
        /// The method.
        method: String,
        /// The params (`{}` if absent).
        params: Value,
    },
    /// A response with a result.
    Result {
        /// The id of the request answered.
        id: Value,
        /// The result.
        result: Value,
    },
    /// A response with an error.
    Error {
        /// The id of the request answered (null if it could not be read).
        id: Value,
        /// The error.
        error: RpcError,
    },
}

impl Message {
    /// Classify a JSON value. The error says what is wrong, for an
    /// `-32600 Invalid Request` reply.
    pub fn parse(value: Value) -> Result<Self, RpcError> {
        let invalid = |why: &str| RpcError::new(code::INVALID_REQUEST, format!("invalid JSON-RPC message: {why}"));
        let Value::Object(mut object) = value else { return Err(invalid("not an object")) };
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(invalid("\"jsonrpc\" must be \"2.0\""));
        }
        let id = object.remove("id");
        if let Some(method) = object.remove("method") {
            let Value::String(method) = method else { return Err(invalid("\"method\" must be a string")) };
            let params = match object.remove("params") {
                None => Value::Object(Map::new()),
                Some(p @ (Value::Object(_) | Value::Array(_))) => p,
                Some(_) => return Err(invalid("\"params\" must be an object or an array")),
            };
            return match id {
                None => Ok(Message::Notification { method, params }),
                Some(id @ (Value::String(_) | Value::Number(_))) => Ok(Message::Request { id, method, params }),
                Some(_) => Err(invalid("\"id\" must be a string or a number")),
            };
        }
        let id = id.ok_or_else(|| invalid("neither \"method\" nor \"id\""))?;
        match (object.remove("result"), object.remove("error")) {
            (Some(result), None) => Ok(Message::Result { id, result }),
            (None, Some(error)) => Ok(Message::Error { id, error: RpcError::from_value(&error) }),
            _ => Err(invalid("a response needs exactly one of \"result\" and \"error\"")),
        }
    }

    /// The message as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Message::Request { id, method, params } => request(id.clone(), method, params.clone()),
            Message::Notification { method, params } => notification(method, params.clone()),
            Message::Result { id, result } => response(id.clone(), result.clone()),
            Message::Error { id, error } => error_response(id.clone(), error),
        }
    }
}

/// A request object.
pub fn request(id: Value, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// A notification object.
pub fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

/// A success response.
pub fn response(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// An error response; `id` is null when the request's id could not be read.
pub fn error_response(id: Value, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error.to_value() })
}

/// Whether JSON text nests arrays and objects deeper than `max`. A linear
/// scan that needs no parse, so an over-deep body is refused before
/// anything is built from it; brackets inside strings do not count. Text
/// that is not JSON is left for the parser to report.
pub fn nests_deeper_than(text: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        assert!(!nests_deeper_than(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(nests_deeper_than(br#"{"a":[1,{"b":[2]}]}"#, 3));
        assert!(!nests_deeper_than(br#"{"a":"[[[[[[{{{{"}"#, 1), "brackets in a string are text");
        assert!(!nests_deeper_than(br#"{"a":"\"[[[["}"#, 1), "an escaped quote does not end the string");
        assert!(nests_deeper_than(br#"{"a":"\\",[["}"#, 2), "an escaped backslash does");
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(nests_deeper_than(deep.as_bytes(), 64));
        assert!(!nests_deeper_than(deep.as_bytes(), 10_000));
    }

    #[test]
    fn classifies_messages() {
        let m = Message::parse(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})).unwrap();
        assert_eq!(m, Message::Request { id: json!(1), method: "tools/list".into(), params: json!({}) });
        let m = Message::parse(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).unwrap();
        assert!(matches!(m, Message::Notification { .. }));
        let m = Message::parse(json!({"jsonrpc": "2.0", "id": "a", "result": {}})).unwrap();
        assert!(matches!(m, Message::Result { .. }));
        let m = Message::parse(json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": "x"}})).unwrap();
        assert_eq!(m, Message::Error { id: json!(2), error: RpcError::new(-1, "x") });
    }

    #[test]
    fn rejects_malformed_messages_with_a_reason() {
        for (value, why) in [
            (json!([1]), "not an object"),
            (json!({"id": 1, "method": "x"}), "\"jsonrpc\" must be \"2.0\""),
            (json!({"jsonrpc": "2.0", "id": null, "method": "x"}), "\"id\" must be a string or a number"),
            (json!({"jsonrpc": "2.0", "id": 1, "method": 7}), "\"method\" must be a string"),
            (json!({"jsonrpc": "2.0", "id": 1, "method": "x", "params": 3}), "\"params\" must be"),
            (json!({"jsonrpc": "2.0"}), "neither"),
            (json!({"jsonrpc": "2.0", "id": 1, "result": 1, "error": {}}), "exactly one"),
        ] {
            let error = Message::parse(value.clone()).unwrap_err();
            assert_eq!(error.code, code::INVALID_REQUEST);
            assert!(error.message.contains(why), "{value}: {}", error.message);
        }
    }

    #[test]
    fn round_trips() {
        let error = RpcError::invalid_params("nope").with_data(json!({"x": 1}));
        let value = error_response(json!(5), &error);
        assert_eq!(Message::parse(value.clone()).unwrap().to_value(), value);
    }
}
