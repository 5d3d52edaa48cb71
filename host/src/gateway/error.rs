//! Every way the request path refuses or fails, in one type: the audit
//! record takes its outcome from it, and [`GatewayError::to_rpc`] is the one
//! place it becomes a JSON-RPC error (the HTTP transport maps the few that
//! change the status, such as insufficient scope, in `transport::http`).

use serde_json::json;

use crate::{
    chain::{Approval, Rejection},
    limits::{Exceeded, Refusal},
    mcp::{RpcError, code},
};

/// Why a request got no result.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request is malformed (missing or mistyped parameters).
    #[error("{0}")]
    InvalidParams(String),
    /// No such tool, resource or prompt; or one the principal's listing
    /// hides, which looks the same to the client (`hidden`) but not in the audit.
    #[error("unknown {kind}: {name}")]
    Unknown {
        /// `tool`, `resource` or `prompt`.
        kind: &'static str,
        /// The name or URI asked for.
        name: String,
        /// Whether it exists but is hidden from this principal.
        hidden: bool,
    },
    /// The call needs OAuth scopes the token lacks.
    #[error("insufficient scope: this call needs {}", .0.join(" "))]
    InsufficientScope(Vec<String>),
    /// A policy refused the call (`on_result`: or its result).
    #[error("denied by policy {}: {}", .rejection.plugin, .rejection.reason)]
    Denied {
        /// Who refused and why.
        rejection: Rejection,
        /// Whether it was the result that was refused.
        on_result: bool,
    },
    /// A policy wants a person to approve the call first.
    #[error("approval required: {}", .0.prompt)]
    ApprovalRequired(Approval),
    /// The upstream failed, refused or is unreachable (or the client could
    /// not answer what the upstream asked it).
    #[error("{}", .0.message)]
    Upstream(RpcError),
    /// The method is not one the gateway serves.
    #[error("method not found: {0}")]
    MethodNotFound(String),
    /// A rate limit has no room for the call now.
    #[error("rate limit {} exceeded: try again in {} ms", .0.name, .0.retry_after_ms)]
    RateLimited(Exceeded),
    /// A quota is spent for its window.
    #[error("quota {} is spent until {}", .0.name, reset_at(.0))]
    QuotaExceeded(Exceeded),
    /// The shared state store (limit counts, chain history) cannot be
    /// reached and `[state] on_unavailable = "refuse"`; the store's error.
    #[error(
        "the shared state store is unreachable, so calls that need it are refused (state.on_unavailable = \"refuse\")"
    )]
    StateUnavailable(String),
    /// A kill switch covers the target.
    #[error("{target} is switched off by kill switch {}: {}", .switch.id(), .switch.reason)]
    SwitchedOff {
        /// What was asked for: `tool demo/write_file`.
        target: String,
        /// The switch.
        switch: Box<crate::controls::Switch>,
    },
    /// The tool does not match its pin and is held until approved.
    #[error("tool {}/{} is held until an operator approves it: {}", .0.server, .0.tool, .0.reason())]
    ToolHeld(Box<crate::controls::Finding>),
    /// A person denied the call, or nobody approved it in time.
    #[error("the call was not approved: {}", denial(.answer))]
    ApprovalDenied {
        /// What was asked.
        ask: Box<crate::controls::Ask>,
        /// The answer.
        answer: crate::controls::approvals::Answer,
    },
    /// The tool is past its sunset and refused.
    #[error("the tool is retired: {}", .0.describe())]
    Retired(Box<crate::controls::Deprecation>),
    /// The audit log cannot be written and the gateway fails closed.
    #[error("the audit log cannot be written, so requests are refused (audit.on_error = \"refuse\")")]
    AuditUnavailable,
    /// Something the gateway itself got wrong.
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    /// The audit outcome: one word, listed in README.md.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidParams(_) => "invalid-request",
            Self::Unknown { hidden: false, .. } => "unknown",
            Self::Unknown { hidden: true, .. } => "hidden",
            Self::InsufficientScope(_) => "insufficient-scope",
            Self::Denied { on_result: false, .. } => "denied",
            Self::Denied { on_result: true, .. } => "result-denied",
            Self::ApprovalRequired(_) => "approval-required",
            Self::Upstream(_) => "upstream-error",
            Self::MethodNotFound(_) => "method-not-found",
            Self::RateLimited(_) => "rate-limited",
            Self::QuotaExceeded(_) => "quota-exceeded",
            Self::StateUnavailable(_) => "state-unavailable",
            Self::SwitchedOff { .. } => "switched-off",
            Self::ToolHeld(_) => "tool-held",
            Self::Retired(_) => "retired",
            Self::ApprovalDenied { answer, .. } if answer.via == "timeout" => "approval-expired",
            Self::ApprovalDenied { .. } => "approval-denied",
            Self::AuditUnavailable => "audit-unavailable",
            Self::Internal(_) => "error",
        }
    }

    /// The JSON-RPC error the client gets. A hidden item is reported
    /// exactly as a missing one, so an error never confirms it exists.
    pub fn to_rpc(&self) -> RpcError {
        let message = self.to_string();
        match self {
            Self::InvalidParams(_) => RpcError::invalid_params(message),
            Self::Unknown { kind: "resource", name, .. } => {
                RpcError::invalid_params("Resource not found").with_data(json!({ "uri": name }))
            }
            Self::Unknown { .. } => RpcError::invalid_params(message),
            Self::InsufficientScope(scopes) => {
                RpcError::new(code::INSUFFICIENT_SCOPE, message).with_data(json!({ "scopes": scopes }))
            }
            Self::Denied { rejection, .. } => RpcError::new(code::POLICY_DENIED, message)
                .with_data(json!({ "plugin": rejection.plugin, "code": rejection.code, "reason": rejection.reason })),
            Self::ApprovalRequired(approval) => RpcError::new(code::APPROVAL_REQUIRED, message)
                .with_data(json!({ "plugin": approval.plugin, "prompt": approval.prompt })),
            Self::Upstream(error) => error.clone(),
            Self::MethodNotFound(_) => RpcError::new(code::METHOD_NOT_FOUND, message),
            Self::RateLimited(e) => RpcError::new(code::RATE_LIMITED, message).with_data(json!({
                "limit": e.name,
                "retryAfterMs": e.retry_after_ms,
                "policy": { "quota": e.quota, "window": e.window_s },
            })),
            Self::QuotaExceeded(e) => RpcError::new(code::QUOTA_EXCEEDED, message).with_data(json!({
                "quota": e.name,
                "retryAfterMs": e.retry_after_ms,
                "resetAt": reset_at(e),
                "policy": { "quota": e.quota, "window": e.window_s },
            })),
            Self::StateUnavailable(_) => RpcError::new(code::STATE_UNAVAILABLE, message),
            // Who set the switch stays in the audit log.
            Self::SwitchedOff { switch, .. } => RpcError::new(code::SWITCHED_OFF, message).with_data(json!({
                "switch": switch.id(),
                "kind": switch.kind.as_str(),
                "pattern": switch.pattern,
                "reason": switch.reason,
                "since": switch.at,
            })),
            Self::ToolHeld(finding) => RpcError::new(code::TOOL_HELD, message).with_data(json!({
                "server": finding.server,
                "tool": finding.tool,
                "change": finding.change,
                "fields": finding.diff.iter().map(|d| d.field).collect::<Vec<_>>(),
                "renamedFrom": finding.renamed_from,
            })),
            Self::ApprovalDenied { ask, answer } => RpcError::new(code::APPROVAL_DENIED, message).with_data(json!({
                "approval": ask.id,
                "plugin": ask.plugin,
                "by": answer.by,
                "via": answer.via,
                "reason": answer.reason,
            })),
            Self::Retired(deprecated) => RpcError::new(code::RETIRED, message).with_data(deprecated.note()),
            Self::AuditUnavailable => RpcError::new(code::AUDIT_UNAVAILABLE, message),
            Self::Internal(_) => RpcError::internal(message),
        }
    }

    /// The reason recorded in the audit log.
    pub fn reason(&self) -> String {
        match self {
            Self::Denied { rejection, .. } => rejection.reason.clone(),
            Self::ApprovalRequired(approval) => approval.prompt.clone(),
            // The store's own error stays in the log, not with the client.
            Self::StateUnavailable(error) => format!("{self} ({error})"),
            Self::SwitchedOff { switch, .. } => format!("{self} (set by {} at {})", switch.by, switch.at),
            other => other.to_string(),
        }
    }
}

/// Who denied a call and why, in words.
fn denial(answer: &crate::controls::approvals::Answer) -> String {
    match (answer.via.as_str(), &answer.reason) {
        ("timeout", _) => "nobody approved it in time (approvals.timeout_s)".to_owned(),
        (_, Some(reason)) => format!("denied by {} ({reason})", answer.by),
        (_, None) => format!("denied by {}", answer.by),
    }
}

/// When a quota resets, RFC 3339.
fn reset_at(exceeded: &Exceeded) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(exceeded.resets_at_ms.unwrap_or_default());
    humantime::format_rfc3339_seconds(at).to_string()
}

impl From<Refusal> for GatewayError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Rate(exceeded) => Self::RateLimited(exceeded),
            Refusal::Quota(exceeded) => Self::QuotaExceeded(exceeded),
            Refusal::Unavailable(error) => Self::StateUnavailable(error),
        }
    }
}
