//! `warden policy test`: run a plugin (or a whole chain) against a call file,
//! an optional result file, or a listing file, offline, and report the verdict,
//! the reason, and what each plugin cost.
//!
//! A call file (JSON; every field but `target` may be left out):
//!
//! ```json
//! {
//!   "principal": { "subject": "alice", "tenant": "acme", "roles": ["analyst"], "scopes": [], "claims": {} },
//!   "target": { "kind": "tool", "server": "analytics", "name": "query_analytics_db",
//!               "annotations": { "readOnlyHint": true } },
//!   "arguments": { "query": "SELECT 1" },
//!   "history": [ { "server": "analytics", "name": "query_analytics_db", "seconds_ago": 30 } ],
//!   "session_id": "s-1"
//! }
//! ```
//!
//! A result file is the MCP result object the upstream would return. A listing
//! file is `{ "principal": {…}, "server": "analytics", "tools": [ MCP Tool, … ] }`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub mod eval;
pub mod vectors;

use crate::{
    chain::{CallOutcome, Chain, ResultOutcome, Step, StepOutcome, Visibility},
    engine::{Call, ListRequest, ListedTool, PastCall, Principal, Target, TargetKind, ToolAnnotations},
};

/// Who calls, as a test file spells it.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct PrincipalFile {
    #[serde(default = "anonymous")]
    subject: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
}

fn anonymous() -> String {
    "anonymous".into()
}

impl PrincipalFile {
    fn into_principal(self) -> Principal {
        Principal {
            subject: self.subject,
            tenant: self.tenant,
            roles: self.roles,
            scopes: self.scopes,
            claims: Value::Object(self.claims).to_string(),
        }
    }
}

/// MCP `ToolAnnotations`, spelled as MCP spells them.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "camelCase")]
pub struct AnnotationsFile {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    read_only_hint: Option<bool>,
    #[serde(default)]
    destructive_hint: Option<bool>,
    #[serde(default)]
    idempotent_hint: Option<bool>,
    #[serde(default)]
    open_world_hint: Option<bool>,
}

impl From<AnnotationsFile> for ToolAnnotations {
    fn from(a: AnnotationsFile) -> Self {
        ToolAnnotations {
            title: a.title,
            read_only_hint: a.read_only_hint,
            destructive_hint: a.destructive_hint,
            idempotent_hint: a.idempotent_hint,
            open_world_hint: a.open_world_hint,
        }
    }
}

#[derive(Deserialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum KindFile {
    #[default]
    Tool,
    Resource,
    Prompt,
}

impl From<KindFile> for TargetKind {
    fn from(kind: KindFile) -> Self {
        match kind {
            KindFile::Tool => TargetKind::Tool,
            KindFile::Resource => TargetKind::Resource,
            KindFile::Prompt => TargetKind::Prompt,
        }
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TargetFile {
    #[serde(default)]
    kind: KindFile,
    server: String,
    name: String,
    #[serde(default)]
    annotations: AnnotationsFile,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct PastFile {
    #[serde(default)]
    kind: KindFile,
    server: String,
    name: String,
    #[serde(default)]
    seconds_ago: u64,
}

/// A call as a test file spells it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CallFile {
    #[serde(default)]
    principal: PrincipalFile,
    target: TargetFile,
    #[serde(default)]
    arguments: Map<String, Value>,
    #[serde(default)]
    history: Vec<PastFile>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    timestamp_ms: Option<u64>,
}

impl CallFile {
    /// The call record plugins receive.
    pub fn into_call(self) -> Call {
        let now = self.timestamp_ms.unwrap_or_else(now_ms);
        Call {
            request_id: "policy-test".into(),
            session_id: self.session_id,
            principal: self.principal.into_principal(),
            target: Target {
                kind: self.target.kind.into(),
                server: self.target.server,
                name: self.target.name,
                annotations: self.target.annotations.into(),
            },
            arguments: Value::Object(self.arguments).to_string(),
            history: self
                .history
                .into_iter()
                .map(|p| PastCall {
                    kind: p.kind.into(),
                    server: p.server,
                    name: p.name,
                    timestamp_ms: now.saturating_sub(p.seconds_ago.saturating_mul(1000)),
                })
                .collect(),
            timestamp_ms: now,
        }
    }
}

/// An MCP `Tool` as `tools/list` returns it (unknown fields are ignored, as
/// MCP clients must).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ToolFile {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    input_schema: Option<Value>,
    #[serde(default)]
    annotations: Option<AnnotationsFile>,
}

/// A listing as a test file spells it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ListFile {
    #[serde(default)]
    principal: PrincipalFile,
    server: String,
    tools: Vec<ToolFile>,
}

/// The files in `dir` whose extension is `extension`, sorted by name.
fn files(dir: &std::path::Path, extension: &str) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    Ok(files)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The overall verdict of a test run.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Allowed (possibly rewritten).
    Allow,
    /// Needs approval.
    Ask,
    /// Refused.
    Deny,
}

impl Verdict {
    /// The documented exit code: 0 allow, 1 deny or ask.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Allow => 0,
            Verdict::Ask | Verdict::Deny => 1,
        }
    }
}

/// What a test run found, printable for people or as JSON.
#[derive(Serialize, Debug)]
pub struct Report {
    /// allow, ask or deny.
    pub verdict: Verdict,
    /// The plugin that denied or asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Its code (denials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Its reason or approval question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The arguments after the chain's rewrites (calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// The result after the chain's rewrites (when a result was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Each tool's fate (listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    /// Every plugin invocation.
    pub steps: Vec<StepReport>,
}

/// One plugin invocation in a report.
#[derive(Serialize, Debug)]
pub struct StepReport {
    /// The plugin.
    pub plugin: String,
    /// The hook.
    pub hook: String,
    /// allowed, denied, rewrote, asked, listed, failed.
    pub outcome: &'static str,
    /// The reason, note, prompt or error.
    pub detail: String,
    /// Fuel consumed.
    pub fuel: u64,
    /// Wall-clock microseconds.
    pub micros: u64,
}

impl From<&Step> for StepReport {
    fn from(step: &Step) -> Self {
        let (outcome, detail) = match &step.outcome {
            StepOutcome::Allowed => ("allowed", String::new()),
            StepOutcome::Denied { code, reason } => ("denied", format!("{code}: {reason}")),
            StepOutcome::Rewrote { note } => ("rewrote", note.clone()),
            StepOutcome::Asked { prompt } => ("asked", prompt.clone()),
            StepOutcome::Listed { hidden, flagged } => ("listed", format!("{hidden} hidden, {flagged} flagged")),
            StepOutcome::Failed { error, fail_open } => {
                ("failed", format!("{error}{}", if *fail_open { " (fail-open: allowed)" } else { "" }))
            }
        };
        StepReport {
            plugin: step.plugin.clone(),
            hook: step.hook.to_string(),
            outcome,
            detail,
            fuel: step.fuel_used,
            micros: step.elapsed.as_micros() as u64,
        }
    }
}

/// Run `on-call`, then, if the call is allowed and a result is given, `on-result`.
pub fn run_call(chain: &Chain, call: CallFile, result: Option<Value>) -> Report {
    let mut call = call.into_call();
    let decision = chain.on_call(&mut call);
    let mut steps: Vec<StepReport> = decision.steps.iter().map(StepReport::from).collect();
    let arguments = serde_json::from_str(&call.arguments).ok();
    let mut report = Report {
        verdict: Verdict::Allow,
        plugin: None,
        code: None,
        reason: None,
        arguments,
        result: None,
        tools: None,
        steps: Vec::new(),
    };
    match decision.outcome {
        CallOutcome::Deny(r) => {
            report.verdict = Verdict::Deny;
            (report.plugin, report.code, report.reason) = (Some(r.plugin), Some(r.code), Some(r.reason));
        }
        CallOutcome::Ask(a) => {
            report.verdict = Verdict::Ask;
            (report.plugin, report.reason) = (Some(a.plugin), Some(a.prompt));
        }
        CallOutcome::Allow => {
            if let Some(result) = result {
                let decision = chain.on_result(&call, result.to_string());
                steps.extend(decision.steps.iter().map(StepReport::from));
                match decision.outcome {
                    ResultOutcome::Allow(output) => report.result = serde_json::from_str(&output).ok(),
                    ResultOutcome::Deny(r) => {
                        report.verdict = Verdict::Deny;
                        (report.plugin, report.code, report.reason) = (Some(r.plugin), Some(r.code), Some(r.reason));
                    }
                }
            }
        }
    }
    report.steps = steps;
    report
}

/// Run `on-list`. The verdict is allow unless every tool was hidden.
pub fn run_list(chain: &Chain, list: ListFile) -> Report {
    let request =
        ListRequest { request_id: "policy-test".into(), session_id: None, principal: list.principal.into_principal() };
    let tools: Vec<ListedTool> = list
        .tools
        .into_iter()
        .map(|t| ListedTool {
            server: list.server.clone(),
            name: t.name,
            description: t.description,
            annotations: t.annotations.unwrap_or_default().into(),
            input_schema: t.input_schema.unwrap_or_else(|| json!({"type": "object"})).to_string(),
        })
        .collect();
    let decision = chain.on_list(&request, &tools, now_ms());
    let fates: Vec<Value> = tools
        .iter()
        .zip(&decision.items)
        .map(|(tool, fate)| match fate {
            Visibility::Shown(flags) if flags.is_empty() => json!({"name": tool.name, "visibility": "shown"}),
            Visibility::Shown(flags) => json!({
                "name": tool.name, "visibility": "flagged",
                "flags": flags.iter().map(|(p, r)| json!({"plugin": p, "reason": r})).collect::<Vec<_>>(),
            }),
            Visibility::Hidden(r) => {
                json!({"name": tool.name, "visibility": "hidden", "plugin": r.plugin, "reason": r.reason})
            }
        })
        .collect();
    let all_hidden = !tools.is_empty() && decision.items.iter().all(|v| matches!(v, Visibility::Hidden(_)));
    Report {
        verdict: if all_hidden { Verdict::Deny } else { Verdict::Allow },
        plugin: None,
        code: None,
        reason: None,
        arguments: None,
        result: None,
        tools: Some(fates),
        steps: decision.steps.iter().map(StepReport::from).collect(),
    }
}

impl Report {
    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let detail = if step.detail.is_empty() { String::new() } else { format!("  {}", step.detail) };
            out.push_str(&format!(
                "{:<20} {:<10} {:<8} fuel {:>10}  {:>8.3} ms{detail}\n",
                step.plugin,
                step.hook,
                step.outcome,
                step.fuel,
                step.micros as f64 / 1000.0
            ));
        }
        if let Some(tools) = &self.tools {
            for tool in tools {
                let name = tool["name"].as_str().unwrap_or_default();
                let visibility = tool["visibility"].as_str().unwrap_or_default();
                let why = tool.get("reason").and_then(Value::as_str).map(|r| format!(": {r}")).unwrap_or_default();
                out.push_str(&format!("tool {name}: {visibility}{why}\n"));
            }
        }
        let verdict = match self.verdict {
            Verdict::Allow => "ALLOW".to_owned(),
            Verdict::Ask => format!("ASK by {}", self.plugin.as_deref().unwrap_or("?")),
            Verdict::Deny => match (&self.plugin, &self.code) {
                (Some(plugin), Some(code)) => format!("DENY by {plugin} ({code})"),
                _ => "DENY".to_owned(),
            },
        };
        out.push_str(&verdict);
        if let Some(reason) = &self.reason {
            out.push_str(&format!(": {reason}"));
        }
        out.push('\n');
        if self.verdict == Verdict::Allow && self.steps.iter().any(|s| s.outcome == "rewrote") {
            if let Some(arguments) = &self.arguments {
                out.push_str(&format!("arguments: {arguments}\n"));
            }
            if let Some(result) = &self.result {
                out.push_str(&format!("result: {result}\n"));
            }
        }
        out
    }
}
