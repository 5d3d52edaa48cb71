//! The control plane's operator controls: kill switches, tool pins and
//! the approval queue. Every action is refused unless the audit log can
//! record it, and is recorded with who took it.

use http_body_util::BodyExt as _;
use hyper::{Request, Response, StatusCode, body::Incoming};
use serde_json::json;

use super::Admin;
use crate::{
    audit::ControlRecord,
    auth::Principal,
    controls::{Switch, SwitchKind, approvals::AnswerError, switches},
    transport::{
        Body,
        http::{forbidden, plain},
        json_response,
    },
};

/// The largest body a control request may have.
const MAX_CONTROL_BODY: usize = 16 << 10;

/// What `POST /admin/kill` and `/admin/revive` take:
/// `{"kind": "tool", "pattern": "demo/write_*", "reason": "…"}`.
pub(super) struct SwitchRequest {
    kind: SwitchKind,
    pattern: String,
    reason: Option<String>,
}

/// A control request's body: a JSON object of at most
/// [`MAX_CONTROL_BODY`] bytes, and a problem for each field not in `fields`
/// (for the caller to report with its own).
pub(super) async fn json_body(
    request: Request<Incoming>,
    fields: &[&str],
) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<String>), String> {
    let body = http_body_util::Limited::new(request.into_body(), MAX_CONTROL_BODY)
        .collect()
        .await
        .map_err(|e| format!("cannot read the body (at most {MAX_CONTROL_BODY} bytes): {e}"))?
        .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let serde_json::Value::Object(object) = value else { return Err("the body must be a JSON object".into()) };
    let unknown: Vec<String> = object
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .map(|key| format!("{key}: unknown field ({})", fields.join(", ")))
        .collect();
    Ok((object, unknown))
}

/// Read and check a kill or revive request's body; every problem at once.
pub(super) async fn switch_request(request: Request<Incoming>) -> Result<SwitchRequest, String> {
    let (object, mut problems) = json_body(request, &["kind", "pattern", "reason"]).await?;
    let text = |key: &str, problems: &mut Vec<String>| match object.get(key) {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(format!("{key}: must be a string"));
            None
        }
    };
    let kind = text("kind", &mut problems);
    let pattern = text("pattern", &mut problems);
    let reason = text("reason", &mut problems);
    let kind = match kind.as_deref().map(|k| (k, SwitchKind::parse(k))) {
        None => {
            problems.push(format!("kind: required ({})", SwitchKind::NAMES.join(", ")));
            None
        }
        Some((k, None)) => {
            problems.push(format!("kind: {k:?} is not one of {}", SwitchKind::NAMES.join(", ")));
            None
        }
        Some((_, kind)) => kind,
    };
    match (&kind, &pattern) {
        (_, None) => problems.push("pattern: required".into()),
        (Some(kind), Some(pattern)) => {
            if let Some(problem) = switches::pattern_problem(*kind, pattern) {
                problems.push(format!("pattern: {problem}"));
            }
        }
        (None, Some(_)) => {}
    }
    match (kind, pattern) {
        (Some(kind), Some(pattern)) if problems.is_empty() => Ok(SwitchRequest { kind, pattern, reason }),
        _ => Err(problems.join("\n")),
    }
}

/// `GET /admin/tools`: the tools that differ from their pins.
pub(super) fn pending_tools(admin: &Admin) -> Response<Body> {
    let Some(review) = admin.gateway.pin_review() else {
        return plain(StatusCode::NOT_FOUND, "tool pinning is off (no [pinning] table)");
    };
    let versions: Vec<_> =
        review.versions.iter().map(|(s, was, now)| json!({ "server": s, "locked": was, "now": now })).collect();
    json_response(StatusCode::OK, &json!({ "findings": review.findings(), "versions": versions }))
}

/// `POST /admin/tools/approve` `{"tools": ["server/tool", …]}` or
/// `{"all": true}`, with an optional `reason`: pin what those tools are now.
pub(super) async fn approve(
    admin: &Admin,
    principal: &Principal,
    body: serde_json::Map<String, serde_json::Value>,
) -> Response<Body> {
    let gateway = &admin.gateway;
    if gateway.pin_review().is_none() {
        return plain(StatusCode::NOT_FOUND, "tool pinning is off (no [pinning] table)");
    }
    let tools: Option<Vec<String>> = match body.get("tools") {
        None => None,
        Some(value) => match serde_json::from_value(value.clone()) {
            Ok(tools) => Some(tools),
            Err(_) => return plain(StatusCode::BAD_REQUEST, "tools: must be a list of \"server/tool\" names"),
        },
    };
    let all = body.get("all") == Some(&json!(true));
    let reason = body.get("reason").and_then(serde_json::Value::as_str).map(str::to_owned);
    if tools.is_some() == all {
        return plain(StatusCode::BAD_REQUEST, "give tools: [\"server/tool\", …] or all: true");
    }
    if gateway.auditor().refusing() {
        return unrecorded();
    }
    let (approved, lock_error) = match gateway.approve_tools(tools.as_deref()).await {
        Ok(done) => done,
        Err(error) => return plain(StatusCode::SERVICE_UNAVAILABLE, &format!("nothing was approved: {error}")),
    };
    let missing: Vec<&String> =
        tools.iter().flatten().filter(|name| !approved.iter().any(|f| &f.id() == *name)).collect();
    let mut recorded = true;
    for finding in &approved {
        let mut record = ControlRecord::new("approve", format!("pin:{}", finding.id()), principal);
        record.reason = reason.clone();
        record.detail = Some(json!({ "sha256": finding.sha256, "change": finding.change }));
        recorded &= gateway.auditor().record(&record).await;
    }
    if !recorded {
        return unrecorded();
    }
    for finding in &approved {
        tracing::warn!(tool = %finding.id(), change = finding.change, by = %principal.subject, "tool definition approved");
    }
    let status = if approved.is_empty() { StatusCode::NOT_FOUND } else { StatusCode::OK };
    json_response(status, &json!({ "approved": approved, "not_pending": missing, "lock_error": lock_error }))
}

/// `GET /admin/approvals`: the calls waiting for a person.
pub(super) async fn pending_calls(admin: &Admin) -> Response<Body> {
    let Some(approvals) = admin.gateway.approvals() else {
        return plain(StatusCode::NOT_FOUND, "approvals are off (no [approvals] table)");
    };
    match approvals.pending().await {
        Ok(pending) => json_response(StatusCode::OK, &json!({ "pending": pending })),
        Err(error) => plain(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

/// `POST /admin/approvals/approve|deny` `{"id", "reason"}`: answer a call
/// waiting for a person.
pub(super) async fn answer(
    admin: &Admin,
    principal: &Principal,
    action: &'static str,
    body: serde_json::Map<String, serde_json::Value>,
) -> Response<Body> {
    let Some(approvals) = admin.gateway.approvals() else {
        return plain(StatusCode::NOT_FOUND, "approvals are off (no [approvals] table)");
    };
    let Some(id) = body.get("id").and_then(serde_json::Value::as_str) else {
        return plain(StatusCode::BAD_REQUEST, "id: required (warden approvals list shows them)");
    };
    let reason = body.get("reason").and_then(serde_json::Value::as_str).map(str::to_owned);
    if admin.gateway.auditor().refusing() {
        return unrecorded();
    }
    let mut record = ControlRecord::new(action, format!("approval:{id}"), principal);
    record.reason = reason.clone();
    let answered = approvals.answer(id, principal, action == "approve-call", reason).await;
    match &answered {
        Ok(ask) => {
            record.detail = Some(json!({
                "subject": ask.subject, "server": ask.server, "target": ask.target,
                "arguments_sha256": ask.arguments_sha256,
            }))
        }
        Err(error) => (record.outcome, record.error) = ("failed", Some(error.to_string())),
    }
    if !admin.gateway.auditor().record(&record).await {
        return unrecorded();
    }
    match answered {
        Ok(ask) => {
            tracing::warn!(id, by = %principal.subject, action, "an approval request was answered");
            json_response(StatusCode::OK, &json!({ "answered": ask }))
        }
        Err(error @ AnswerError::Unknown(_)) => plain(StatusCode::NOT_FOUND, &error.to_string()),
        Err(error @ AnswerError::OwnCall) => forbidden(&error.to_string()),
        Err(error) => plain(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

/// The switches in force, for `GET /admin/switches` and the status.
pub(super) fn switch_list(admin: &Admin) -> serde_json::Value {
    let set = admin.gateway.switches();
    json!({ "generation": set.generation(), "switches": set.list().collect::<Vec<_>>() })
}

/// The answer when an action cannot be recorded: nothing is done that the
/// audit log would not show.
fn unrecorded() -> Response<Body> {
    plain(StatusCode::SERVICE_UNAVAILABLE, "the audit log cannot be written, so operator actions are refused")
}

/// `POST /admin/kill`: store the switch (every replica sees it by its next
/// call), tell connected clients their lists changed, record who did it.
pub(super) async fn kill(admin: &Admin, principal: &Principal, asked: SwitchRequest) -> Response<Body> {
    let Some(reason) = asked.reason.filter(|r| !r.trim().is_empty()) else {
        return plain(StatusCode::BAD_REQUEST, "reason: required (clients see it when they are refused)");
    };
    let gateway = &admin.gateway;
    if gateway.auditor().refusing() {
        return unrecorded();
    }
    let mut record = ControlRecord::new("kill", switches::id(asked.kind, &asked.pattern), principal);
    record.reason = Some(reason.clone());
    let switch = Switch {
        kind: asked.kind,
        pattern: asked.pattern,
        reason,
        by: principal.subject.clone(),
        at: record.time.clone(),
    };
    let done = gateway.kill(&switch).await;
    if let Err(error) = &done {
        (record.outcome, record.error) = ("failed", Some(error.to_string()));
    }
    let recorded = gateway.auditor().record(&record).await;
    match done {
        Err(error) => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("the switch is not set: {error}")),
        Ok(()) if !recorded => unrecorded(),
        Ok(()) => {
            tracing::warn!(switch = %switch.id(), by = %switch.by, reason = %switch.reason, "kill switch set");
            json_response(StatusCode::OK, &json!({ "switch": switch, "now_off": gateway.switched_by(&switch) }))
        }
    }
}

/// `POST /admin/revive`: remove a switch; 404 if there is none.
pub(super) async fn revive(admin: &Admin, principal: &Principal, asked: SwitchRequest) -> Response<Body> {
    let gateway = &admin.gateway;
    if gateway.auditor().refusing() {
        return unrecorded();
    }
    let id = switches::id(asked.kind, &asked.pattern);
    let mut record = ControlRecord::new("revive", id.clone(), principal);
    record.reason = asked.reason;
    let done = gateway.revive(&id).await;
    match &done {
        Ok(None) => record.outcome = "absent",
        Ok(Some(_)) => {}
        Err(error) => (record.outcome, record.error) = ("failed", Some(error.to_string())),
    }
    let recorded = gateway.auditor().record(&record).await;
    match done {
        Err(error) => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("the switch is not removed: {error}")),
        Ok(None) => plain(StatusCode::NOT_FOUND, &format!("no kill switch {id}")),
        Ok(Some(_)) if !recorded => unrecorded(),
        Ok(Some(switch)) => {
            tracing::warn!(switch = %id, by = %principal.subject, "kill switch removed");
            json_response(StatusCode::OK, &json!({ "revived": switch }))
        }
    }
}
