//! The audit trail: one JSON Lines record per decision, hash-chained, with
//! signed checkpoints, so an edit, a deletion, an insertion, a reordering, a
//! truncation or a wholesale replacement of the log is detectable.
//!
//! - Every line carries `seq` (its position, from 0) and `prev` (the SHA-256,
//!   hex, of the previous line's bytes; 64 zeros for the first).
//! - Now and then (`checkpoint_interval_s`), at rotation and at a clean stop,
//!   the writer appends a `checkpoint` record: a C2SP-style signed note over
//!   the count of records before it and the hash of the last one
//!   ([`note`]). The newest checkpoint is also kept beside the log as
//!   `<stem>.checkpoint`, for copying off the machine: a log cut short after
//!   its last checkpoint is detectable only against a copy held elsewhere.
//! - Rotation renames the live file to `<stem>.<first seq>.<ext>`; the chain
//!   goes on in the new file.
//! - A write that fails (full disk, unwritable file) is counted and logged;
//!   with `on_error = "refuse"` (the default) the gateway refuses requests
//!   until writing works again, with `"continue"` it serves them and the
//!   records lost are marked by a `gap` record when writing resumes.
//!
//! Records are written by one thread ([`writer`]); requests hand it their
//! serialised record and, with `fsync = "record"`, wait until it is on disk.

pub mod note;
pub mod query;
pub mod verify;
mod writer;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime},
};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;

/// The sequence number in a rotated file's name (`<stem>.<seq>.<ext>`,
/// `seq` as 12 digits), if `part` is one.
pub(crate) fn rotation_seq(part: &str) -> Option<u64> {
    (part.len() == ROTATION_DIGITS && part.bytes().all(|b| b.is_ascii_digit())).then(|| part.parse().ok()).flatten()
}

/// Digits of the sequence number in a rotated file's name.
pub(crate) const ROTATION_DIGITS: usize = 12;

/// When a record is flushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// `fsync` before the request is answered: every answered request is on
    /// disk, at the cost of a disk flush per batch of requests.
    Record,
    /// `fsync` at most this often; a crash of the machine (not of the
    /// process) can lose the records since the last one.
    Interval(Duration),
}

/// What happens while records cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    /// Refuse requests (fail closed).
    Refuse,
    /// Serve them; the lost records are marked by a `gap` record.
    Continue,
}

/// `[audit]`: where and how records are written.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditSettings {
    /// The live log file; rotated files sit beside it.
    pub file: PathBuf,
    /// The Ed25519 key that signs checkpoints (created, with `<key>.pub`,
    /// when absent).
    pub signing_key: PathBuf,
    /// The log's name in its checkpoints.
    pub origin: String,
    /// When records reach the disk.
    pub durability: Durability,
    /// A checkpoint is written this often while records arrive.
    pub checkpoint_interval: Duration,
    /// Rotate when the live file would grow past this many bytes.
    pub rotate_bytes: u64,
    /// Rotate when the live file is older than this (`None`: never by age).
    pub rotate_age: Option<Duration>,
    /// What happens while records cannot be written.
    pub on_error: OnError,
    /// Keep the call's arguments (redacted) in the record, not only their fingerprint.
    pub record_arguments: bool,
    /// Keep up to this many bytes of the result (redacted) in the record.
    pub result_preview_bytes: usize,
    /// Object keys whose values are replaced by `"[redacted]"` wherever they
    /// occur in recorded arguments and previews (compared case-insensitively).
    pub redact: Vec<String>,
}

impl AuditSettings {
    /// Defaults for a log at `file`.
    pub fn new(file: PathBuf) -> Self {
        let signing_key = file.with_extension("key");
        Self {
            file,
            signing_key,
            origin: "warden-audit".into(),
            durability: Durability::Interval(Duration::from_secs(1)),
            checkpoint_interval: Duration::from_secs(60),
            rotate_bytes: 64 << 20,
            rotate_age: Some(Duration::from_secs(24 * 3600)),
            on_error: OnError::Refuse,
            record_arguments: false,
            result_preview_bytes: 0,
            redact: default_redact(),
        }
    }
}

/// The keys whose values are never recorded (nor shown to an approver)
/// unless `redact` says otherwise.
pub fn default_redact() -> Vec<String> {
    ["password", "secret", "token", "api_key", "apikey", "authorization", "cookie"].map(String::from).to_vec()
}

/// Counters of the audit writer, for `/admin/metrics`.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    /// Records written.
    pub records: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Failed writes (each may cover several records).
    pub write_errors: AtomicU64,
    /// Records that could not be written.
    pub lost: AtomicU64,
    /// `fsync` calls, and their total time in microseconds.
    pub fsyncs: AtomicU64,
    /// Total `fsync` time, microseconds.
    pub fsync_micros: AtomicU64,
    /// Checkpoints written.
    pub checkpoints: AtomicU64,
}

impl AuditMetrics {
    /// The counters, for `/admin/metrics`.
    pub fn snapshot(&self) -> crate::metrics::Snapshot {
        use crate::metrics::one;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = crate::metrics::Snapshot::default();
        out.counter("warden_audit_records", "Audit records written", one(get(&self.records)));
        out.counter("warden_audit_bytes", "Bytes written to the audit log", one(get(&self.bytes)));
        out.counter("warden_audit_write_errors", "Failed audit log writes and flushes", one(get(&self.write_errors)));
        out.counter("warden_audit_records_lost", "Audit records that could not be written", one(get(&self.lost)));
        out.counter("warden_audit_fsyncs", "Audit log flushes to disk (fsync)", one(get(&self.fsyncs)));
        out.counter(
            "warden_audit_fsync_microseconds",
            "Total time of audit log flushes to disk, microseconds",
            one(get(&self.fsync_micros)),
        );
        out.counter("warden_audit_checkpoints", "Signed audit checkpoints written", one(get(&self.checkpoints)));
        out
    }
}

/// A job for the writer thread.
enum Job {
    /// A record's JSON (an object, without `seq` and `prev`), and who waits
    /// for it to be durable.
    Record(String, Option<oneshot::Sender<bool>>),
    /// Write a final checkpoint, then report and stop.
    Stop(mpsc::Sender<()>),
}

/// Records decisions; cheap to clone. Off when built with [`Auditor::off`].
#[derive(Clone, Default)]
pub struct Auditor {
    inner: Option<Arc<Shared>>,
}

struct Shared {
    jobs: mpsc::SyncSender<Job>,
    healthy: Arc<AtomicBool>,
    settings: AuditSettings,
    metrics: Arc<AuditMetrics>,
}

/// Records waiting for the writer before new ones are refused (and counted lost).
const QUEUE: usize = 65_536;

impl Auditor {
    /// No audit log.
    pub fn off() -> Self {
        Self::default()
    }

    /// Open (or continue) the log `settings` describe and start its writer.
    pub fn open(settings: AuditSettings) -> Result<Self, String> {
        let (jobs, receiver) = mpsc::sync_channel(QUEUE);
        let healthy = Arc::new(AtomicBool::new(true));
        let metrics = Arc::new(AuditMetrics::default());
        let writer = writer::Writer::open(&settings, Arc::clone(&healthy), Arc::clone(&metrics))?;
        std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| format!("cannot start the audit writer: {e}"))?;
        Ok(Self { inner: Some(Arc::new(Shared { jobs, healthy, settings, metrics })) })
    }

    /// Whether records are kept at all.
    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// The settings, when on.
    pub fn settings(&self) -> Option<&AuditSettings> {
        self.inner.as_ref().map(|s| &s.settings)
    }

    /// The writer's counters, when on.
    pub fn metrics(&self) -> Option<&AuditMetrics> {
        self.inner.as_ref().map(|s| s.metrics.as_ref())
    }

    /// Whether requests must be refused now: records cannot be written and
    /// the log is configured to fail closed.
    pub fn refusing(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|s| s.settings.on_error == OnError::Refuse && !s.healthy.load(Ordering::Relaxed))
    }

    /// Hand a record to the writer. Returns, for durable-per-record logs, what
    /// to wait on (true once it is on disk); `None` when nothing waits.
    fn submit(&self, record: String, wait: bool) -> Option<oneshot::Receiver<bool>> {
        let shared = self.inner.as_ref()?;
        let wait = wait && shared.settings.durability == Durability::Record;
        let (ack, done) = match wait {
            true => {
                let (ack, done) = oneshot::channel();
                (Some(ack), Some(done))
            }
            false => (None, None),
        };
        if shared.jobs.try_send(Job::Record(record, ack)).is_err() {
            shared.metrics.lost.fetch_add(1, Ordering::Relaxed);
            shared.healthy.store(false, Ordering::Relaxed);
            tracing::error!("the audit writer is not keeping up: a record was lost");
            return None;
        }
        done
    }

    /// Write a final checkpoint and stop the writer (at a clean shutdown).
    pub fn close(&self) {
        let Some(shared) = &self.inner else { return };
        let (done, wait) = mpsc::channel();
        if shared.jobs.send(Job::Stop(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(10));
        }
    }
}

/// One decision, as it is recorded. Field by field in README.md ("Audit
/// records").
#[derive(Clone, Debug, Default, Serialize)]
pub struct Decision {
    /// Always `"decision"`.
    pub kind: &'static str,
    /// When the request arrived (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// The gateway's id for the request (also what plugins see).
    pub request: String,
    /// The W3C trace id the client sent, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// `http` or `stdio`.
    pub transport: &'static str,
    /// `legacy` (sessions) or `modern` (2026-07-28).
    pub era: &'static str,
    /// The legacy session, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The token's issuer (`iss`), if the caller used a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The caller.
    pub subject: String,
    /// The caller's tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The JSON-RPC method.
    pub method: String,
    /// The upstream that serves the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `tool`, `resource` or `prompt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_kind: Option<&'static str>,
    /// The tool or prompt (upstream's name) or resource URI; for a request
    /// refused before routing, the name the client asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// SHA-256 of the arguments as received, RFC 8785 canonical JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments_sha256: Option<String>,
    /// SHA-256 of the arguments as forwarded, when a policy rewrote them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forwarded_sha256: Option<String>,
    /// The arguments as received, redacted (only with `record_arguments`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Every plugin invocation, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// Shadow limits and quotas that would have refused the call.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow_refused: Vec<String>,
    /// True when the shared state store was unreachable and limits were
    /// decided on this replica's own counts (`[state] on_unavailable = "local"`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub state_fallback: bool,
    /// A person's answer to the call's approval request: `id`, `via`
    /// (`elicitation`, `operator`, `timeout`), `approved`, `by`, `reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval: Option<Value>,
    /// That the tool is deprecated: its message and sunset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprecation: Option<String>,
    /// What happened, in one word (README.md lists them).
    pub outcome: &'static str,
    /// The JSON-RPC error code the client got, if refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// Why, if refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The upstream call, if one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamRecord>,
    /// The start of the result the client got, redacted (only with
    /// `result_preview_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_preview: Option<String>,
    /// The chain that decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainRecord>,
    /// Time in the gateway, microseconds.
    pub micros: u64,
}

/// An operator's action on the running gateway (a kill switch set or
/// removed, a tool's definition approved, a waiting call answered), as it
/// is recorded: who did it, to what, and whether it took.
#[derive(Clone, Debug, Serialize)]
pub struct ControlRecord {
    /// Always `"control"`.
    pub kind: &'static str,
    /// When (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// `kill`, `revive`, `approve` (a pin), `approve-call` or `deny-call`.
    pub action: &'static str,
    /// The control acted on: a switch id (`tool:demo/write_*`), a pin
    /// (`pin:demo/fetch_weather`) or a waiting call (`approval:<id>`).
    pub control: String,
    /// The operator's reason, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who: the admin principal.
    pub subject: String,
    /// Their token's issuer (`iss`), if they used a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Their tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `done`, `absent` (nothing to revive) or `failed` (the store did not
    /// take it, or the caller answered its own call under `separate_approver`).
    pub outcome: &'static str,
    /// What failed, for `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was accepted: for a pin, its digest and change; for a call, its
    /// caller, server, target and argument fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl ControlRecord {
    /// A record of `action` on `control` by `principal`, now, outcome `done`.
    pub fn new(action: &'static str, control: String, principal: &crate::auth::Principal) -> Self {
        Self {
            kind: "control",
            time: timestamp(SystemTime::now()),
            action,
            control,
            reason: None,
            subject: principal.subject.clone(),
            issuer: principal.issuer().map(str::to_owned),
            tenant: principal.tenant.clone(),
            outcome: "done",
            error: None,
            detail: None,
        }
    }
}

impl Auditor {
    /// Write a record that is not a request's decision (an operator's
    /// action, a pin finding), waiting until it is durable if the log is
    /// durable per record; false if it could not be written. Without a log
    /// it goes to the `warden::audit` log target only.
    pub async fn record(&self, record: &impl Serialize) -> bool {
        let line = serde_json::to_string(record).expect("a record serialises");
        tracing::info!(target: "warden::audit", record = %line, "recorded");
        match self.submit(line, true) {
            Some(done) => done.await.unwrap_or(false),
            None => !self.refusing(),
        }
    }
}

/// One plugin invocation.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    /// The plugin.
    pub plugin: String,
    /// `on-call`, `on-result`, `on-list` or `on-catalog`.
    pub hook: &'static str,
    /// `allow`, `deny`, `rewrite`, `ask`, `list` or `failed`.
    pub verdict: &'static str,
    /// The plugin's code, for a deny.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The reason, note, question or error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether a failure was let through (`fail_open`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
    /// Fuel consumed.
    pub fuel: u64,
    /// Wall-clock time, microseconds.
    pub micros: u64,
}

/// The upstream call of a decision.
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamRecord {
    /// `ok`, `tool-error` (a result with `isError`) or `error`.
    pub status: &'static str,
    /// The error, for `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Time waiting for it, microseconds.
    pub micros: u64,
}

/// Which chain decided.
#[derive(Clone, Debug, Serialize)]
pub struct ChainRecord {
    /// The chain's generation (bumped on every reload).
    pub generation: u64,
    /// Digests of the policy packs its plugins came from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packs: Vec<String>,
}

impl Decision {
    /// Serialise for the writer.
    fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a decision serialises")
    }
}

/// A decision being filled in as its request moves through the gateway;
/// written when it is [finished](PendingDecision::finish), or, if the request
/// is dropped first (the client went away), written as `cancelled`.
pub struct PendingDecision {
    /// The record so far.
    pub record: Decision,
    auditor: Auditor,
    written: bool,
    /// Told about the record if the request is dropped unanswered.
    on_cancel: Option<OnCancel>,
}

/// What [`PendingDecision::on_cancel`] registers.
type OnCancel = Box<dyn FnOnce(&Decision) + Send>;

impl PendingDecision {
    /// Start a record for `auditor`.
    pub fn new(auditor: Auditor, record: Decision) -> Self {
        Self { record, auditor, written: false, on_cancel: None }
    }

    /// Call `f` with the record if the request is dropped before it is
    /// written (it is then `cancelled`), whether or not the log is on.
    pub fn on_cancel(&mut self, f: impl FnOnce(&Decision) + Send + 'static) {
        self.on_cancel = Some(Box::new(f));
    }

    /// Where the record goes.
    pub fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// Write the record. Resolves once it is durable if the log is durable per
    /// record; `false` if it could not be written.
    pub async fn finish(mut self) -> bool {
        self.written = true;
        match self.auditor.submit(self.record.to_line(), true) {
            Some(done) => done.await.unwrap_or(false),
            None => !self.auditor.refusing(),
        }
    }
}

impl Drop for PendingDecision {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        self.record.outcome = "cancelled";
        if let Some(cancelled) = self.on_cancel.take() {
            cancelled(&self.record);
        }
        if self.auditor.is_on() {
            let _ = self.auditor.submit(self.record.to_line(), false);
        }
    }
}

/// SHA-256 (hex) of `value` as RFC 8785 canonical JSON.
pub fn fingerprint(value: &Value) -> String {
    let canonical = serde_json_canonicalizer::to_vec(value).expect("JSON values canonicalise");
    note::hex(&Sha256::digest(canonical))
}

/// `value` with every member whose key is in `keys` (case-insensitive)
/// replaced by `"[redacted]"`, at any depth.
pub fn redacted(value: &Value, keys: &[String]) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let hidden = keys.iter().any(|r| r.eq_ignore_ascii_case(k));
                    (k.clone(), if hidden { Value::String("[redacted]".into()) } else { redacted(v, keys) })
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| redacted(v, keys)).collect()),
        other => other.clone(),
    }
}

/// `time` as RFC 3339 in UTC with milliseconds.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests;
