//! The request context: everything the gateway knows about one client
//! request while it moves along the request path — its id, who asked, the
//! `tracing` span it runs in, and the audit record being filled in.
//!
//! It is opened when a transport hands the gateway a request
//! ([`super::Gateway::handle`]) and closed when the answer is ready; the
//! record is written then. If the request is dropped before (the client
//! cancelled or went away), the record is written as `cancelled` on drop, so
//! no path can leave a request unrecorded.
//!
//! A request-path concern (the limit stage; a kill switch) is one ordered
//! stage of `Gateway::through_chain` that returns a [`super::GatewayError`]
//! on refusal and notes what it decided here.

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use serde_json::Value;

use super::{Caller, GatewayError, Governance, LiveChain};
use crate::{
    audit::{self, ChainRecord, Decision, PendingDecision, StepRecord, UpstreamRecord},
    chain::{Step, StepOutcome},
    engine::Target,
    limits::Admitted,
    mcp::RpcError,
    metrics::{Metrics, RequestSample},
    usage::UsageMeter,
};

/// One request on its way through the gateway.
pub struct RequestContext {
    /// The gateway's id for the request (what plugins see as `request-id`).
    pub id: String,
    /// When it arrived.
    pub started: Instant,
    /// The span it runs in.
    pub span: tracing::Span,
    decision: PendingDecision,
    metrics: Arc<Metrics>,
    usage: Arc<UsageMeter>,
}

impl RequestContext {
    /// Open the context of `caller`'s request for `method`.
    pub(super) fn open(governance: &Governance, id: String, caller: &Caller, method: &str, params: &Value) -> Self {
        let principal = &caller.principal;
        let (traceparent, tracestate) = match &caller.traceparent {
            Some(traceparent) => (Some(traceparent.clone()), caller.tracestate.clone()),
            None => meta_trace(params),
        };
        let trace = traceparent.as_deref().and_then(trace_id);
        let named = params.get("name").or_else(|| params.get("uri")).and_then(Value::as_str);
        // Named and attributed by the OpenTelemetry semantic conventions for MCP.
        let span = tracing::info_span!(
            "request",
            otel.name = %named.map_or_else(|| method.to_owned(), |n| format!("{method} {n}")),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            mcp.method.name = method,
            mcp.session.id = tracing::field::Empty,
            gen_ai.operation.name = tracing::field::Empty,
            gen_ai.tool.name = tracing::field::Empty,
            gen_ai.prompt.name = tracing::field::Empty,
            mcp.resource.uri = tracing::field::Empty,
            enduser.id = %principal.subject,
            warden.request = %id,
            warden.outcome = tracing::field::Empty,
        );
        if let Some(session) = &caller.session {
            span.record("mcp.session.id", session.as_str());
        }
        match (method, named) {
            ("tools/call", Some(tool)) => {
                span.record("gen_ai.operation.name", "execute_tool");
                span.record("gen_ai.tool.name", tool);
            }
            ("prompts/get", Some(prompt)) => {
                span.record("gen_ai.prompt.name", prompt);
            }
            ("resources/read" | "resources/subscribe", Some(uri)) => {
                span.record("mcp.resource.uri", uri);
            }
            _ => {}
        }
        crate::telemetry::adopt(&span, traceparent.as_deref(), tracestate.as_deref());
        let record = Decision {
            kind: "decision",
            time: audit::timestamp(SystemTime::now()),
            request: id.clone(),
            trace,
            transport: caller.transport,
            era: if caller.modern { "modern" } else { "legacy" },
            session: caller.session.clone(),
            issuer: principal.issuer().map(str::to_owned),
            subject: principal.subject.clone(),
            tenant: principal.tenant.clone(),
            method: method.to_owned(),
            // A name asked for is recorded even if routing refuses it.
            target: params.get("name").or_else(|| params.get("uri")).and_then(Value::as_str).map(str::to_owned),
            outcome: "allowed",
            ..Decision::default()
        };
        let mut decision = PendingDecision::new(governance.auditor.clone(), record);
        // A cancelled call still counts for chargeback: it was routed, and
        // the upstream may have worked on it.
        let usage = Arc::clone(&governance.usage);
        decision.on_cancel(move |record| meter(&usage, record));
        Self {
            id,
            started: Instant::now(),
            span,
            decision,
            metrics: Arc::clone(&governance.metrics),
            usage: Arc::clone(&governance.usage),
        }
    }

    fn settings(&self) -> Option<&audit::AuditSettings> {
        self.decision.auditor().settings()
    }

    /// Set the outcome a success is recorded with (a refusal sets its own).
    pub(super) fn outcome(&mut self, outcome: &'static str) {
        self.decision.record.outcome = outcome;
    }

    /// The routed target.
    pub(super) fn target(&mut self, target: &Target) {
        let record = &mut self.decision.record;
        record.server = Some(target.server.clone());
        record.target_kind = Some(target.kind.as_str());
        record.target = Some(target.name.clone());
    }

    /// The arguments as received: their fingerprint, and themselves
    /// (redacted) if configured.
    pub(super) fn arguments(&mut self, arguments: &Value) {
        let Some(settings) = self.settings() else { return };
        let kept = settings.record_arguments.then(|| audit::redacted(arguments, &settings.redact));
        self.decision.record.arguments = kept;
        self.decision.record.arguments_sha256 = Some(audit::fingerprint(arguments));
    }

    /// The arguments as a policy rewrote them.
    pub(super) fn forwarded(&mut self, arguments_json: &str) {
        if !self.decision.auditor().is_on() {
            return;
        }
        if let Ok(arguments) = serde_json::from_str::<Value>(arguments_json) {
            self.decision.record.forwarded_sha256 = Some(audit::fingerprint(&arguments));
        }
    }

    /// The chain that decides.
    pub(super) fn chain(&mut self, live: &LiveChain) {
        let mut packs: Vec<String> =
            live.chain.links().iter().filter_map(|l| l.pack.as_ref().map(|p| p.digest.clone())).collect();
        packs.dedup();
        self.decision.record.chain = Some(ChainRecord { generation: live.generation, packs });
    }

    /// Plugin invocations, in order; a rewrite marks the outcome.
    pub(super) fn steps(&mut self, steps: &[Step]) {
        self.metrics.steps(steps);
        for step in steps {
            let (code, reason, fail_open) = match &step.outcome {
                StepOutcome::Allowed | StepOutcome::Listed { .. } => (None, None, false),
                StepOutcome::Denied { code, reason } => (Some(code.clone()), Some(reason.clone()), false),
                StepOutcome::Rewrote { note } => {
                    self.decision.record.outcome = "rewritten";
                    (None, Some(note.clone()), false)
                }
                StepOutcome::Asked { prompt } => (None, Some(prompt.clone()), false),
                StepOutcome::Failed { error, fail_open } => (None, Some(error.to_string()), *fail_open),
            };
            self.decision.record.steps.push(StepRecord {
                plugin: step.plugin.clone(),
                hook: step.hook.as_str(),
                verdict: step.outcome.verdict(),
                code,
                reason,
                fail_open,
                fuel: step.fuel_used,
                micros: step.elapsed.as_micros() as u64,
            });
        }
    }

    /// What the limit stage noted about an admitted call: shadow rules that
    /// would have refused it, and whether local counts decided because the
    /// shared store was unreachable.
    pub(super) fn limits(&mut self, admitted: &Admitted) {
        self.decision.record.shadow_refused.clone_from(&admitted.shadow_refusals);
        self.decision.record.state_fallback = admitted.local_fallback;
    }

    /// How a person answered the call's approval request.
    pub(super) fn approval(&mut self, answer: Value) {
        self.decision.record.approval = Some(answer);
    }

    /// That the target is deprecated, and how.
    pub(super) fn deprecation(&mut self, note: String) {
        self.decision.record.deprecation = Some(note);
    }

    /// The upstream's answer and how long it took.
    pub(super) fn upstream(&mut self, answer: &Result<Value, RpcError>, since: Instant) {
        let (status, error) = match answer {
            Ok(result) if result.get("isError") == Some(&Value::Bool(true)) => ("tool-error", None),
            Ok(_) => ("ok", None),
            Err(error) => ("error", Some(error.message.clone())),
        };
        let elapsed = since.elapsed();
        let micros = elapsed.as_micros() as u64;
        if let Some(server) = &self.decision.record.server {
            self.metrics.upstream(self.decision.record.tenant.as_deref(), server, elapsed, answer.is_err());
        }
        self.decision.record.upstream = Some(UpstreamRecord { status, error, micros });
    }

    /// Close the context: record the answer and write the record. With
    /// per-record durability this waits until it is on disk; if it could not
    /// be written and the log fails closed, the client gets that error
    /// instead of the result.
    pub(super) async fn close(mut self, answer: Result<Value, GatewayError>) -> Result<Value, RpcError> {
        let auditor = self.decision.auditor().clone();
        let span = self.span.clone();
        let record = &mut self.decision.record;
        record.micros = self.started.elapsed().as_micros() as u64;
        let answer = answer.map_err(|refusal| {
            let error = refusal.to_rpc();
            record.outcome = refusal.outcome();
            record.code = Some(error.code);
            record.reason = Some(refusal.reason());
            error
        });
        if let (Ok(result), Some(settings)) = (&answer, auditor.settings())
            && settings.result_preview_bytes > 0
        {
            let shown = audit::redacted(result, &settings.redact).to_string();
            let mut end = settings.result_preview_bytes.min(shown.len());
            while !shown.is_char_boundary(end) {
                end -= 1;
            }
            record.result_preview = Some(shown[..end].to_owned());
        }
        self.metrics.request(&RequestSample {
            method: &record.method,
            tenant: record.tenant.as_deref(),
            server: record.server.as_deref(),
            target: record.target.as_deref().filter(|_| record.server.is_some()),
            outcome: record.outcome,
            elapsed: self.started.elapsed(),
        });
        meter(&self.usage, record);
        span.record("warden.outcome", record.outcome);
        if matches!(record.outcome, "upstream-error" | "error" | "audit-unavailable") {
            span.record("otel.status_code", "ERROR");
        }
        tracing::info!(
            target: "warden::audit",
            parent: &span,
            request = %record.request,
            subject = %record.subject,
            upstream = record.server.as_deref().unwrap_or_default(),
            name = record.target.as_deref().unwrap_or_default(),
            method = %record.method,
            outcome = record.outcome,
            detail = record.reason.as_deref().unwrap_or_default(),
            micros = record.micros,
        );
        let written = self.decision.finish().await;
        match answer {
            Ok(_) if !written && auditor.refusing() => Err(GatewayError::AuditUnavailable.to_rpc()),
            answer => answer,
        }
    }
}

/// Count a routed request for chargeback; refused means the gateway refused
/// it (an upstream error, or a client's cancel, was still a call).
fn meter(usage: &UsageMeter, record: &Decision) {
    if let Some(server) = &record.server {
        let refused =
            !matches!(record.outcome, "allowed" | "rewritten" | "rewrite-ignored" | "upstream-error" | "cancelled");
        let upstream = record.upstream.as_ref().map(|u| std::time::Duration::from_micros(u.micros));
        usage.note(record.tenant.as_deref(), server, refused, upstream);
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`).
fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.trim().split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    let valid = trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) && trace != "0".repeat(32);
    valid.then(|| trace.to_ascii_lowercase())
}

/// The `traceparent` and `tracestate` a client put in the request's `_meta`.
fn meta_trace(params: &Value) -> (Option<String>, Option<String>) {
    let meta = crate::mcp::request_meta(params);
    let field = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str).map(str::to_owned);
    (field("traceparent"), field("tracestate"))
}
