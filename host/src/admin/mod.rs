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

use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod controls;

use controls::{answer, approve, json_body, kill, pending_calls, pending_tools, revive, switch_list, switch_request};

use crate::{
    auth::Authenticator,
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
        "approvals" => pending_calls(admin).await,
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
