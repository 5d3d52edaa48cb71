//! The control plane: health, readiness, status, metrics and reload, on a
//! listener of their own (`[admin] listen`, loopback by default), apart
//! from the MCP endpoint — so a scraper or an operator never competes with
//! clients for connections, and the admin surface is never exposed where the
//! MCP endpoint is.
//!
//! - `GET /healthz`: the process serves (no credentials).
//! - `GET /readyz`: every upstream has been listed (no credentials); 503
//!   naming those that have not.
//! - `GET /admin/status`, `GET /admin/metrics`, `GET /admin/usage`,
//!   `POST /admin/reload` (limits and chain): for callers holding the admin
//!   role.
//! - `GET /admin/switches`, `POST /admin/kill`, `POST /admin/revive`: kill
//!   switches; `GET /admin/tools`, `POST /admin/tools/approve`: tools that
//!   differ from their pins; `GET /admin/approvals`, `POST
//!   /admin/approvals/approve` and `/deny`: calls waiting for a person (admin
//!   role; each action is audited with who took it).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::BodyExt as _;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    audit::ControlRecord,
    auth::{Authenticator, Principal},
    controls::{Switch, SwitchKind, approvals::AnswerError, switches},
    gateway::Gateway,
    metrics::CONTENT_TYPE,
    reload::Reloader,
    transport::{
        Body, ServerSettings, full,
        http::{HttpState, check_origin_and_host, forbidden, plain, unauthorized},
        json_response,
    },
};

/// `[admin]`: where the control plane listens and who may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Address to bind (default `127.0.0.1:9464`).
    pub listen: SocketAddr,
    /// The role a caller needs for `/admin/*`.
    pub role: String,
}

/// What the control plane reads and acts on.
pub struct Admin {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Who callers are.
    pub auth: Authenticator,
    /// The admin role.
    pub role: String,
    /// The chain reloader, if there is a chain.
    pub reloader: Option<Arc<Reloader>>,
    /// The client listener (its counters; its Host and Origin rules).
    pub http: Arc<HttpState>,
}

/// Serve the control plane until `shutdown`.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: CancellationToken) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let admin = Arc::clone(&admin);
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(handle(&admin, peer, request).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(admin: &Admin, peer: SocketAddr, request: Request<Incoming>) -> Response<Body> {
    // Probes first: they reveal nothing and change nothing, and a
    // kubelet's Host is the pod's address, which no allowed_hosts names.
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => return plain(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            let missing = admin.gateway.not_ready();
            return match missing.is_empty() {
                true => plain(StatusCode::OK, "ready"),
                false => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("not listed yet: {}", missing.join(", "))),
            };
        }
        _ => {}
    }
    let settings: &ServerSettings = admin.http.settings();
    if let Err(response) = check_origin_and_host(settings, &request) {
        return response;
    }
    let action = match (request.method(), request.uri().path()) {
        (&Method::GET, "/admin/status") => "status",
        (&Method::GET, "/admin/metrics") => "metrics",
        (&Method::POST, "/admin/reload") => "reload",
        (&Method::GET, "/admin/usage") => "usage",
        (&Method::GET, "/admin/switches") => "switches",
        (&Method::POST, "/admin/kill") => "kill",
        (&Method::POST, "/admin/revive") => "revive",
        (&Method::GET, "/admin/tools") => "tools",
        (&Method::POST, "/admin/tools/approve") => "approve",
        (&Method::GET, "/admin/approvals") => "approvals",
        (&Method::POST, "/admin/approvals/approve") => "approve-call",
        (&Method::POST, "/admin/approvals/deny") => "deny-call",
        (_, path) => return plain(StatusCode::NOT_FOUND, &format!("no admin endpoint at {path}")),
    };
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = match admin.auth.authenticate(authorization, peer.ip()).await {
        Ok(principal) => principal,
        Err(error) => {
            admin.gateway.metrics().auth_failure(error.kind());
            return unauthorized(&admin.auth, &error);
        }
    };
    if !principal.roles.contains(&admin.role) {
        tracing::warn!(subject = %principal.subject, action, "admin request without the admin role");
        return forbidden(&format!("the admin endpoints need the {:?} role", admin.role));
    }
    if action == "metrics" {
        let mut snapshots = vec![admin.http.metrics_snapshot()];
        if let Some(reloader) = &admin.reloader {
            snapshots.push(reloader.status().snapshot());
        }
        if let Some(audit) = admin.gateway.auditor().metrics() {
            snapshots.push(audit.snapshot());
        }
        let mut controls = crate::metrics::Snapshot::default();
        let in_force = admin.gateway.switches().list().count() as u64;
        controls.gauge("warden_kill_switches", "Kill switches in force", in_force);
        snapshots.push(controls);
        if let Some(pins) = admin.gateway.pins() {
            snapshots.push(pins.snapshot());
        }
        let text = admin.gateway.metrics().render(snapshots);
        return Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(full(text))
            .expect("a valid response");
    }
    match action {
        "status" => {
            let mut status = admin.reloader.as_ref().map(|r| r.status().to_json()).unwrap_or_else(|| json!({}));
            status["limits"] = admin.gateway.limiter().describe();
            status["switches"] = switch_list(admin);
            json_response(StatusCode::OK, &status)
        }
        "usage" => usage(admin, request.uri().query().unwrap_or_default()).await,
        "switches" => json_response(StatusCode::OK, &switch_list(admin)),
        "tools" => pending_tools(admin),
        "approvals" => match admin.gateway.approvals() {
            None => plain(StatusCode::NOT_FOUND, "approvals are off (no [approvals] table)"),
            Some(approvals) => match approvals.pending().await {
                Ok(pending) => json_response(StatusCode::OK, &json!({ "pending": pending })),
                Err(error) => plain(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
            },
        },
        "approve-call" | "deny-call" => match json_body(request, &["id", "reason"]).await {
            Ok((body, unknown)) if unknown.is_empty() => answer(admin, &principal, action, body).await,
            Ok((_, unknown)) => plain(StatusCode::BAD_REQUEST, &unknown.join("\n")),
            Err(problem) => plain(StatusCode::BAD_REQUEST, &problem),
        },
        "approve" => match json_body(request, &["tools", "all", "reason"]).await {
            Ok((body, unknown)) if unknown.is_empty() => approve(admin, &principal, body).await,
            Ok((_, unknown)) => plain(StatusCode::BAD_REQUEST, &unknown.join("\n")),
            Err(problem) => plain(StatusCode::BAD_REQUEST, &problem),
        },
        "kill" | "revive" => match switch_request(request).await {
            Ok(asked) if action == "kill" => kill(admin, &principal, asked).await,
            Ok(asked) => revive(admin, &principal, asked).await,
            Err(problem) => plain(StatusCode::BAD_REQUEST, &problem),
        },
        _ => reload(admin, &format!("admin request by {}", principal.subject)).await,
    }
}

/// The largest body a control request may have.
const MAX_CONTROL_BODY: usize = 16 << 10;

/// What `POST /admin/kill` and `/admin/revive` take:
/// `{"kind": "tool", "pattern": "demo/write_*", "reason": "…"}`.
struct SwitchRequest {
    kind: SwitchKind,
    pattern: String,
    reason: Option<String>,
}

/// A control request's body: a JSON object of at most
/// [`MAX_CONTROL_BODY`] bytes, and a problem for each field not in `fields`
/// (for the caller to report with its own).
async fn json_body(
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
async fn switch_request(request: Request<Incoming>) -> Result<SwitchRequest, String> {
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
fn pending_tools(admin: &Admin) -> Response<Body> {
    let Some(review) = admin.gateway.pin_review() else {
        return plain(StatusCode::NOT_FOUND, "tool pinning is off (no [pinning] table)");
    };
    let versions: Vec<_> =
        review.versions.iter().map(|(s, was, now)| json!({ "server": s, "locked": was, "now": now })).collect();
    json_response(StatusCode::OK, &json!({ "findings": review.findings(), "versions": versions }))
}

/// `POST /admin/tools/approve` `{"tools": ["server/tool", …]}` or
/// `{"all": true}`, with an optional `reason`: pin what those tools are now.
async fn approve(
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

/// `POST /admin/approvals/approve|deny` `{"id", "reason"}`: answer a call
/// waiting for a person.
async fn answer(
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
fn switch_list(admin: &Admin) -> serde_json::Value {
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
async fn kill(admin: &Admin, principal: &Principal, asked: SwitchRequest) -> Response<Body> {
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
async fn revive(admin: &Admin, principal: &Principal, asked: SwitchRequest) -> Response<Body> {
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

/// `POST /admin/reload`: the limits from the config file, then the chain.
/// Each is kept as it was if its new version is refused; 422 if either was.
async fn reload(admin: &Admin, trigger: &str) -> Response<Body> {
    let mut answer = json!({ "reloaded": true });
    match admin.gateway.reload_config(trigger) {
        Ok(counts) => answer["limits"] = counts,
        Err(error) => {
            answer["reloaded"] = json!(false);
            answer["limits_error"] = json!(error);
        }
    }
    if let Some(reloader) = &admin.reloader {
        match reloader.reload(trigger).await {
            Ok(generation) => answer["generation"] = json!(generation),
            Err(error) => {
                answer["reloaded"] = json!(false);
                answer["error"] = json!(error);
            }
        }
    }
    let status = if answer["reloaded"] == json!(true) { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    json_response(status, &answer)
}

/// `GET /admin/usage?since=24h&tenant=acme`: chargeback counts from the
/// state store (with Redis, every replica's), by tenant and upstream.
async fn usage(admin: &Admin, query: &str) -> Response<Body> {
    let mut since = std::time::Duration::from_secs(24 * 3600);
    let mut tenant = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "since" => match humantime::parse_duration(&value) {
                Ok(d) => since = d,
                Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("since={value}: {e} (give an age like 24h)")),
            },
            "tenant" => tenant = Some(value),
            _ => return plain(StatusCode::BAD_REQUEST, &format!("unknown parameter {key:?} (since, tenant)")),
        }
    }
    let since_hour = (crate::state::now_us() / 1_000_000).saturating_sub(since.as_secs()) / 3600;
    match admin.gateway.usage().report(since_hour, tenant.as_deref()).await {
        Ok(report) => json_response(StatusCode::OK, &report),
        Err(error) => plain(StatusCode::SERVICE_UNAVAILABLE, &error),
    }
}
