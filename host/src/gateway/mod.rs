//! The gateway's request path, independent of transport: a client request in,
//! a result (or error) out, with the policy chain around every upstream call.
//!
//! A tool call flows through one flat function, [`Gateway::call_tool`]:
//! route → scopes → pins → limits → kill switches → deprecation → policy
//! (on-call, and a person's approval if it asks) → upstream → policy
//! (on-result) → audit. Resource reads and prompt fetches take the same
//! path. Listings pass the chain's on-list hook once per principal and
//! catalog version, and the result is cached; a tool hidden from a
//! principal cannot be called by it either.

mod context;
mod error;
mod history;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument as _;

use crate::{
    audit::Auditor,
    auth::{Principal, ScopeRule},
    catalog::{self, Catalog, Entry, Naming, Snapshot},
    chain::{Approval, CallOutcome, Chain, Rejection, ResultOutcome, Visibility},
    controls::{
        Approvals, Ask, Deprecation, Finding, Pins, Switch, SwitchSet, Switches, Via, approvals, deprecation,
        pins::Review,
    },
    engine::{Call, Hook, ItemKind, ListRequest, ListedItem, ListedTool, Target, TargetKind},
    limits::Limiter,
    mcp::RpcError,
    metrics::Metrics,
    upstream::{CallHooks, ClientRequests, NotificationScreen, Upstream, UpstreamEvent, UpstreamSpec},
    usage::UsageMeter,
};
pub use context::RequestContext;
pub use error::GatewayError;
pub use history::{History, LocalHistory};

/// A policy chain and its generation (bumped on every swap).
pub struct LiveChain {
    /// The chain.
    pub chain: Chain,
    /// Which swap this is.
    pub generation: u64,
}

/// Something clients may want to hear about, fanned out by the transports.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A list changed: the notification method, e.g. `notifications/tools/list_changed`.
    ListChanged(&'static str),
    /// A resource changed.
    ResourceUpdated {
        /// Its URI.
        uri: String,
    },
}

/// Gateway-wide settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How exposed names are formed.
    pub naming: Naming,
    /// Past calls kept per session for chain policies.
    pub history: usize,
    /// Most sessions (or principals) whose history is kept (in memory).
    pub max_histories: usize,
    /// How long a history outlives its last call (in Redis).
    pub history_ttl: Duration,
    /// Items per page of a list.
    pub page_size: usize,
    /// Scopes that tools require.
    pub required_scopes: Vec<ScopeRule>,
    /// Deprecated tools at start (a reload replaces the live ones).
    pub deprecations: Vec<Deprecation>,
}

/// What records and bounds every request: the audit log, metrics, the
/// limit stage and the usage meter.
#[derive(Clone)]
pub struct Governance {
    /// Where decisions are recorded.
    pub auditor: Auditor,
    /// The request path's metrics.
    pub metrics: Arc<Metrics>,
    /// Rate limits and quotas.
    pub limiter: Arc<Limiter>,
    /// Chargeback counts.
    pub usage: Arc<UsageMeter>,
    /// Seals legacy session ids so every replica can adopt them (with
    /// `[state] redis`; `None`: sessions live on the replica that made them).
    pub session_seal: Option<Arc<crate::transport::seal::SessionSeal>>,
    /// The kill switches in force.
    pub switches: Arc<Switches>,
    /// Tool pins, if `[pinning]` is on.
    pub pins: Option<Arc<Pins>>,
    /// The approval queue, if `[approvals]` is on.
    pub approvals: Option<Arc<Approvals>>,
}

/// Who is asking, and how to reach them during the request.
#[derive(Clone)]
pub struct Caller {
    /// The authenticated principal.
    pub principal: Arc<Principal>,
    /// The legacy session, if any; chain history is kept per session, or per
    /// principal for stateless (2026-07-28) clients.
    pub session: Option<String>,
    /// Where notifications and upstream requests for this request go.
    pub hooks: CallHooks,
    /// Whether the client speaks 2026-07-28 (it then gets `input_required`
    /// results as they are, instead of having them asked on its behalf).
    pub modern: bool,
    /// `http` or `stdio`, for the audit record.
    pub transport: &'static str,
    /// The W3C `traceparent` the client sent with the request (HTTP header), if any.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with it.
    pub tracestate: Option<String>,
    /// Where the limit stage leaves the state of the tightest rule, for the
    /// transport's `RateLimit` headers (HTTP only).
    pub limit_note: Option<LimitNote>,
}

/// The limit state an answer reports, filled in by the limit stage.
pub type LimitNote = Arc<Mutex<Option<crate::limits::Headline>>>;

impl Caller {
    /// A caller with no session and nothing to relay to: what a transport
    /// knows before it reaches its era's handling.
    pub fn bare(principal: Arc<Principal>, transport: &'static str, modern: bool) -> Self {
        Self {
            principal,
            session: None,
            hooks: CallHooks::default(),
            modern,
            transport,
            traceparent: None,
            tracestate: None,
            limit_note: None,
        }
    }

    fn history_key(&self) -> String {
        match &self.session {
            Some(session) => format!("session:{session}"),
            None => format!("principal:{}", self.principal.identity_key()),
        }
    }
}

/// What a principal may see of the catalog: computed by the chain's on-list
/// hook, cached per principal, catalog and chain generation.
struct View {
    catalog: u64,
    chain: u64,
    /// Indices of visible items in the snapshot, with any flags: tools (by
    /// on-list), resources, templates and prompts (by on-catalog).
    tools: Vec<Shown>,
    resources: Vec<Shown>,
    templates: Vec<Shown>,
    prompts: Vec<Shown>,
}

/// An item's index in its snapshot list, and the flags plugins gave it.
type Shown = (usize, Vec<(String, String)>);

impl View {
    fn shows_prompt(&self, index: usize) -> bool {
        self.prompts.iter().any(|(i, _)| *i == index)
    }
}

/// The running gateway.
pub struct Gateway {
    settings: Settings,
    upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, Arc<Upstream>>,
    catalog: Catalog,
    chain: ArcSwap<LiveChain>,
    deprecations: ArcSwap<Vec<Deprecation>>,
    history: History,
    views: Mutex<HashMap<String, Arc<View>>>,
    changes: broadcast::Sender<Change>,
    next_request: AtomicU64,
    request_prefix: String,
    governance: Governance,
    /// The threads chain runs go to, so plugins never run on the runtime's.
    plugin_threads: crate::chain::Workers,
}

/// Most `input_required` rounds the gateway answers on a legacy client's behalf.
const MAX_INPUT_ROUNDS: usize = 8;
/// Most views cached.
const MAX_VIEWS: usize = 4096;
/// How often a call waiting for an operator tells the client so (with a
/// progress token).
const APPROVAL_PROGRESS: Duration = Duration::from_secs(5);
/// Who flags a listed tool that differs from its pin (in `_meta`
/// `dev.warden/flags`, beside the plugins' flags).
const PINNING_FLAG: &str = "warden.pinning";
/// How often a replica sharing Redis asks whether the operator controls
/// changed, so its clients hear of a switch set elsewhere even while nobody
/// calls it (a call learns of it at once, in the limit check's round trip).
const CONTROLS_POLL: Duration = Duration::from_millis(500);

impl Gateway {
    /// Start the upstreams and the task that keeps the catalog current.
    pub fn start(
        settings: Settings,
        upstreams: Vec<(UpstreamSpec, String)>,
        chain: Chain,
        governance: Governance,
    ) -> Arc<Self> {
        let (events, mut receiver) = mpsc::unbounded_channel();
        let order = upstreams.iter().map(|(spec, prefix)| (spec.name.clone(), prefix.clone())).collect();
        let started: Vec<Arc<Upstream>> =
            upstreams.into_iter().map(|(spec, _)| Upstream::start(spec, events.clone())).collect();
        let mut prefix = [0u8; 6];
        getrandom::fill(&mut prefix).expect("the OS provides randomness");
        let plugin_threads = crate::chain::Workers::for_this_machine().expect("the OS starts the plugin threads");
        let gateway = Arc::new(Self {
            catalog: Catalog::new(settings.naming.clone(), order),
            history: history(&settings, &governance),
            deprecations: ArcSwap::from_pointee(settings.deprecations.clone()),
            settings,
            by_name: started.iter().map(|u| (u.name().to_owned(), Arc::clone(u))).collect(),
            upstreams: started,
            chain: ArcSwap::from_pointee(LiveChain { chain, generation: 1 }),
            views: Mutex::default(),
            changes: broadcast::channel(256).0,
            next_request: AtomicU64::new(1),
            request_prefix: URL_SAFE_NO_PAD.encode(prefix),
            governance,
            plugin_threads,
        });
        let weak = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            while let Some(event) = receiver.recv().await {
                let Some(gateway) = weak.upgrade() else { break };
                gateway.on_upstream_event(event).await;
            }
        });
        gateway.controls_changed();
        if matches!(&**gateway.governance.limiter.store(), crate::state::StateStore::Redis(_)) {
            let weak = Arc::downgrade(&gateway);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(CONTROLS_POLL);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    let Some(gateway) = weak.upgrade() else { break };
                    let polled = gateway.governance.limiter.store().controls_generation().await;
                    if let Err(error) = match polled {
                        Ok(generation) => gateway.catch_up_controls(generation).await,
                        Err(error) => Err(error),
                    } {
                        tracing::debug!(%error, "cannot poll the operator controls");
                    }
                }
            });
        }
        gateway
    }

    /// Re-read the config file and swap in what can change without a
    /// restart: `[[limit]]`, `[[quota]]` and `[[deprecation]]`. The whole
    /// file must be valid, or nothing changes. Counts of what was loaded.
    pub fn reload_config(&self, trigger: &str) -> Result<Value, String> {
        let parsed = crate::config::gateway::parse_file(self.governance.limiter.source())
            .map_err(|e| e.to_string().trim_end().to_owned());
        let mut counts =
            self.governance.limiter.reload(trigger, parsed.as_ref().map(|c| &c.limits).map_err(|e| e.as_str()))?;
        if let Ok(config) = parsed {
            counts["deprecations"] = json!(config.deprecations.len());
            self.deprecations.store(Arc::new(config.deprecations));
            let _ = self.changes.send(Change::ListChanged("notifications/tools/list_changed"));
        }
        Ok(counts)
    }

    /// The kill switches in force.
    pub fn switches(&self) -> Arc<SwitchSet> {
        self.governance.switches.current()
    }

    /// Turn `switch` on (or update its reason), here and, through the state
    /// store, on every replica. The store must take it first: a switch that
    /// would not survive a restart is refused, not half set.
    pub async fn kill(&self, switch: &Switch) -> Result<(), crate::state::StateError> {
        self.governance.switches.set(switch).await?;
        self.controls_changed();
        Ok(())
    }

    /// Remove the switch `id`; the switch, if there was one.
    pub async fn revive(&self, id: &str) -> Result<Option<Switch>, crate::state::StateError> {
        let removed = self.governance.switches.remove(id).await?;
        self.controls_changed();
        Ok(removed)
    }

    /// What `switch` turns off now, by kind: `server/name` of each tool,
    /// resource and prompt (and resource template, for a server), the
    /// upstreams, the plugins of the live chain.
    pub fn switched_by(&self, switch: &Switch) -> Vec<String> {
        let one = SwitchSet::of(vec![switch.clone()]);
        let snapshot = self.catalog.snapshot();
        let uri = |r: &Value, key: &str| r.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let mut names = Vec::new();
        let mut add = |kind, server: &str, name: String| {
            if one.covering(kind, server, &name).is_some() {
                names.push(format!("{server}/{name}"));
            }
        };
        for tool in &snapshot.tools {
            add(TargetKind::Tool, &tool.upstream, tool.name.clone());
        }
        for (server, resource) in &snapshot.resources {
            add(TargetKind::Resource, server, uri(resource, "uri"));
        }
        for prompt in &snapshot.prompts {
            add(TargetKind::Prompt, &prompt.upstream, prompt.name.clone());
        }
        for (server, template) in snapshot.templates.iter().filter(|(server, _)| one.server_off(server)) {
            names.push(format!("{server}/{}", uri(template, "uriTemplate")));
        }
        names.extend(self.upstreams.iter().map(|u| u.name()).filter(|n| one.server_off(n)).map(str::to_owned));
        let chain = self.chain.load();
        names.extend(one.plugins(chain.chain.plugin_names()).into_keys());
        names
    }

    /// Catch up with the controls' `generation` as the store reported it:
    /// read switches and approvals again if they are older, and apply them.
    async fn catch_up_controls(&self, generation: u64) -> Result<(), crate::state::StateError> {
        let switched = self.governance.switches.catch_up(generation).await?;
        let approved = match &self.governance.pins {
            Some(pins) => pins.catch_up(generation).await?,
            None => false,
        };
        if switched || approved {
            self.controls_changed();
        }
        Ok(())
    }

    /// Apply the controls in force: mark switched-off plugins in the live
    /// chain (a new generation, so listings are decided again) and tell
    /// clients every list may have changed.
    fn controls_changed(&self) {
        let set = self.governance.switches.current();
        self.chain.rcu(|live| {
            let off = set.plugins(live.chain.plugin_names());
            match &off == live.chain.off() {
                true => Arc::clone(live),
                false => Arc::new(LiveChain { chain: live.chain.switched_off(off), generation: live.generation + 1 }),
            }
        });
        for notification in [
            "notifications/tools/list_changed",
            "notifications/resources/list_changed",
            "notifications/prompts/list_changed",
        ] {
            let _ = self.changes.send(Change::ListChanged(notification));
        }
    }

    /// Refuse a call to `target` if a kill switch covers it.
    fn check_switches(&self, target: &Target) -> Result<(), GatewayError> {
        match self.governance.switches.current().covering(target.kind, &target.server, &target.name) {
            Some(switch) => Err(GatewayError::SwitchedOff {
                target: format!("{} {}/{}", target.kind.as_str(), target.server, target.name),
                switch: Box::new(switch.clone()),
            }),
            None => Ok(()),
        }
    }

    async fn on_upstream_event(&self, event: UpstreamEvent) {
        let (upstream, method) = match &event {
            UpstreamEvent::Connected { upstream } => (upstream, None),
            UpstreamEvent::Notification { upstream, method, params } => {
                if method == "notifications/resources/updated" {
                    if let Some(uri) = params.get("uri").and_then(Value::as_str) {
                        let _ = self.changes.send(Change::ResourceUpdated { uri: uri.to_owned() });
                    }
                    return;
                }
                (upstream, Some(method.as_str()))
            }
        };
        let Some(up) = self.by_name.get(upstream) else { return };
        if method.is_none() {
            self.governance.metrics.upstream_connected(upstream);
        }
        // An upstream's own announcement is relayed even when the refreshed
        // listing looks the same to the gateway: the client asked to hear what
        // the server says. A reconnect is news only if the listing changed.
        match self.catalog.refresh(up).await {
            Ok(changed) if changed || method.is_some() => {
                for notification in [
                    "notifications/tools/list_changed",
                    "notifications/resources/list_changed",
                    "notifications/prompts/list_changed",
                ] {
                    if method.is_none() || method == Some(notification) {
                        let _ = self.changes.send(Change::ListChanged(notification));
                    }
                }
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(upstream, %error, "cannot refresh the catalog"),
        }
        self.report_pins().await;
    }

    /// Each upstream's `serverInfo.version`.
    fn server_versions(&self) -> std::collections::BTreeMap<String, String> {
        let version = |u: &Upstream| u.server_info()?.info.get("version")?.as_str().map(str::to_owned);
        self.upstreams.iter().filter_map(|u| Some((u.name().to_owned(), version(u)?))).collect()
    }

    /// The approval queue, if `[approvals]` is on.
    pub fn approvals(&self) -> Option<&Approvals> {
        self.governance.approvals.as_deref()
    }

    /// The tool pins, if pinning is on.
    pub fn pins(&self) -> Option<&Pins> {
        self.governance.pins.as_deref()
    }

    /// The live catalog reviewed against the pins (`None`: pinning is off).
    pub fn pin_review(&self) -> Option<Arc<Review>> {
        self.review_pins(&self.catalog.snapshot())
    }

    /// `snapshot` reviewed against the pins: a request that already holds
    /// a snapshot decides on that one, not on a newer catalog.
    fn review_pins(&self, snapshot: &Snapshot) -> Option<Arc<Review>> {
        let pins = self.governance.pins.as_ref()?;
        Some(pins.review(snapshot, || self.server_versions()))
    }

    /// Log, count and audit what the review finds that was not reported
    /// before: a tool changed, renamed or unpinned, a new server version.
    async fn report_pins(&self) {
        let (Some(pins), Some(review)) = (&self.governance.pins, self.pin_review()) else { return };
        let (findings, versions) = pins.unreported(&review);
        for (server, was, now) in versions {
            tracing::warn!(
                server,
                was,
                now,
                "an upstream's version differs from the locked one; its tools are checked one by one"
            );
        }
        for finding in findings {
            let fields: Vec<&str> = finding.diff.iter().map(|d| d.field).collect();
            let diff = serde_json::to_string(&finding.diff).unwrap_or_default();
            tracing::warn!(
                server = %finding.server,
                tool = %finding.tool,
                change = finding.change,
                fields = ?fields,
                held = finding.held,
                %diff,
                "a tool does not match its pin: {}",
                finding.reason(),
            );
            let mut record = serde_json::to_value(&finding).expect("a finding serialises");
            record["kind"] = json!("pin");
            record["time"] = json!(crate::audit::timestamp(SystemTime::now()));
            record["action"] = json!(if finding.held { "held" } else { "flagged" });
            if !self.governance.auditor.record(&record).await {
                tracing::error!(tool = %finding.id(), "the pin finding could not be audited");
            }
        }
    }

    /// Accept the findings on `tools` (`server/tool`; `None`: every one):
    /// their definitions become their pins, on every replica. The findings
    /// approved, and the error rewriting the lock file if that failed.
    pub async fn approve_tools(
        &self,
        tools: Option<&[String]>,
    ) -> Result<(Vec<Finding>, Option<String>), crate::state::StateError> {
        let (Some(pins), Some(review)) = (&self.governance.pins, self.pin_review()) else { return Ok((vec![], None)) };
        let chosen: Vec<Finding> =
            review.findings().iter().filter(|f| tools.is_none_or(|names| names.contains(&f.id()))).cloned().collect();
        if chosen.is_empty() {
            return Ok((chosen, None));
        }
        let lock_error = pins.approve(&chosen).await?;
        if let Some(error) = &lock_error {
            tracing::warn!(%error, "the approvals hold, but the lock file was not rewritten");
        }
        self.controls_changed();
        Ok((chosen, lock_error))
    }

    /// Wait until every upstream has been listed, or has failed its first
    /// attempt (it keeps being retried), or `timeout`. Returns the names of
    /// those not listed.
    pub async fn wait_ready(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing = self.not_ready();
            let waiting = self.upstreams.iter().any(|u| missing.iter().any(|m| m == u.name()) && !u.has_failed());
            if !waiting || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The upstreams not listed yet (not connected, or their catalog not read).
    pub fn not_ready(&self) -> Vec<String> {
        let listed = |u: &Upstream| u.server_info().is_some() && self.catalog.has_offer(u.name());
        self.upstreams.iter().filter(|u| !listed(u)).map(|u| u.name().to_owned()).collect()
    }

    /// Subscribe to list and resource changes.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The live chain.
    pub fn chain(&self) -> Arc<LiveChain> {
        self.chain.load_full()
    }

    /// Swap in a new chain (with the plugins kill switches name switched
    /// off); calls in flight finish on the one they started with.
    pub fn swap_chain(&self, chain: Chain) {
        let set = self.governance.switches.current();
        let chain = chain.switched_off(set.plugins(chain.plugin_names()));
        self.chain.rcu(|live| Arc::new(LiveChain { chain: chain.clone(), generation: live.generation + 1 }));
    }

    /// Forget what a legacy session called (it ended).
    pub fn forget_session(&self, session: &str) {
        self.history.forget(&format!("session:{session}"));
    }

    /// The upstreams, in config order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Stop every upstream, then seal the audit log with a final checkpoint.
    pub async fn shutdown(&self) {
        futures_util::future::join_all(self.upstreams.iter().map(|u| u.shutdown())).await;
        self.governance.usage.flush().await;
        let auditor = self.governance.auditor.clone();
        let _ = tokio::task::spawn_blocking(move || auditor.close()).await;
    }

    /// Where decisions are recorded.
    pub fn auditor(&self) -> &Auditor {
        &self.governance.auditor
    }

    /// The request path's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.governance.metrics
    }

    /// Rate limits and quotas.
    pub fn limiter(&self) -> &Limiter {
        &self.governance.limiter
    }

    /// Chargeback counts.
    pub fn usage(&self) -> &UsageMeter {
        &self.governance.usage
    }

    /// The seal for legacy session ids, when sessions are shared by replicas.
    pub fn session_seal(&self) -> Option<Arc<crate::transport::seal::SessionSeal>> {
        self.governance.session_seal.clone()
    }

    /// The capabilities the gateway declares to clients.
    pub fn capabilities(&self) -> Value {
        json!({
            "tools": { "listChanged": true },
            "resources": { "subscribe": true, "listChanged": true },
            "prompts": { "listChanged": true },
            "completions": {},
            "logging": {},
        })
    }

    /// Instructions for clients: the upstreams' own, labelled.
    pub fn instructions(&self) -> Option<String> {
        let parts: Vec<String> = self
            .upstreams
            .iter()
            .filter_map(|u| u.server_info().and_then(|i| i.instructions).map(|text| format!("[{}] {text}", u.name())))
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    fn request_id(&self) -> String {
        format!("{}-{}", self.request_prefix, self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    /// Answer one client request (everything but the era-specific handshake
    /// methods, which the transports answer). This is where a request's
    /// context opens: every request but `ping` leaves one audit record.
    pub async fn handle(&self, caller: &Caller, method: &str, params: Value) -> Result<Value, RpcError> {
        if method == "ping" {
            return Ok(json!({}));
        }
        let mut cx = RequestContext::open(&self.governance, self.request_id(), caller, method, &params);
        let span = cx.span.clone();
        async move {
            // Failing closed on the audit log comes first: nothing is served
            // that could not be recorded.
            let answer = match self.governance.auditor.refusing() {
                true => Err(GatewayError::AuditUnavailable),
                false => self.route(&mut cx, caller, method, params).await,
            };
            cx.close(answer).await
        }
        .instrument(span)
        .await
    }

    /// Record a refusal a transport made before the request reached
    /// [`Gateway::handle`] (HTTP answers missing scopes with 403 there), and
    /// return the error for it.
    pub async fn refuse(&self, caller: &Caller, method: &str, params: &Value, refusal: GatewayError) -> RpcError {
        let cx = RequestContext::open(&self.governance, self.request_id(), caller, method, params);
        cx.close(Err(refusal)).await.err().unwrap_or_else(|| RpcError::internal("refusal lost"))
    }

    /// The request path by method.
    async fn route(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        method: &str,
        params: Value,
    ) -> Result<Value, GatewayError> {
        match method {
            "tools/list" => self.list_tools(caller, &params),
            "tools/call" => self.call_tool(cx, caller, params).await,
            "resources/list" => {
                let snapshot = self.catalog.snapshot();
                let view = self.view(&caller.principal, &snapshot);
                let off = self.switches();
                let on = switched_on(&view.resources, |i| {
                    let (server, resource) = &snapshot.resources[i];
                    let uri = resource.get("uri").and_then(Value::as_str).unwrap_or_default();
                    off.covering(TargetKind::Resource, server, uri).is_none()
                });
                self.page(&params, "resources", flagged(&on, |i| &snapshot.resources[i].1))
            }
            "resources/templates/list" => {
                let snapshot = self.catalog.snapshot();
                let view = self.view(&caller.principal, &snapshot);
                let off = self.switches();
                let on = switched_on(&view.templates, |i| !off.server_off(&snapshot.templates[i].0));
                self.page(&params, "resourceTemplates", flagged(&on, |i| &snapshot.templates[i].1))
            }
            "resources/read" => self.read_resource(cx, caller, params).await,
            "prompts/list" => {
                let snapshot = self.catalog.snapshot();
                let view = self.view(&caller.principal, &snapshot);
                let off = self.switches();
                let on = switched_on(&view.prompts, |i| {
                    let prompt = &snapshot.prompts[i];
                    off.covering(TargetKind::Prompt, &prompt.upstream, &prompt.name).is_none()
                });
                self.page(&params, "prompts", flagged(&on, |i| &snapshot.prompts[i].definition))
            }
            "prompts/get" => self.get_prompt(cx, caller, params).await,
            "completion/complete" => self.complete(cx, caller, params).await,
            "resources/subscribe" | "resources/unsubscribe" => {
                let uri = required(&params, "uri")?;
                let upstream = self.visible_resource_upstream(&caller.principal, uri)?;
                let target = resource_target(upstream.name(), uri);
                // Updates carry the resource's name and prompt a read: a
                // principal that may not read it may not watch it either.
                // Unsubscribing is always allowed.
                if method == "resources/subscribe" {
                    self.screen(cx, caller, target, json!({ "uri": uri })).await?;
                } else {
                    cx.target(&target);
                }
                // The gateway tracks subscriptions itself; it forwards them only
                // to legacy upstreams that take them (2026-07-28 has none).
                let forward = upstream.server_info().is_some_and(|i| {
                    i.version != crate::mcp::MODERN && i.capabilities["resources"]["subscribe"] == json!(true)
                });
                if !forward {
                    return Ok(json!({}));
                }
                upstream.request(method, params, CallHooks::default()).await.map_err(upstream_error)
            }
            "logging/setLevel" => {
                // Upstream sessions are shared, so the most recent level wins
                // there; each client still only gets logs of its own calls.
                for upstream in self.upstreams.iter().filter(|u| u.server_info().is_some_and(|i| i.has("logging"))) {
                    let (upstream, params) = (Arc::clone(upstream), params.clone());
                    tokio::spawn(async move {
                        if let Err(error) = upstream.request("logging/setLevel", params, CallHooks::default()).await {
                            tracing::debug!(upstream = upstream.name(), %error, "logging/setLevel not accepted");
                        }
                    });
                }
                Ok(json!({}))
            }
            _ => Err(GatewayError::MethodNotFound(method.to_owned())),
        }
    }

    /// One page of a list, by an opaque cursor.
    fn page(&self, params: &Value, key: &str, items: Vec<Value>) -> Result<Value, GatewayError> {
        let start = match params.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(Value::String(cursor)) => {
                decode_cursor(cursor).ok_or_else(|| GatewayError::InvalidParams("invalid cursor".into()))?
            }
            Some(_) => return Err(GatewayError::InvalidParams("cursor must be a string".into())),
        };
        let end = (start + self.settings.page_size).min(items.len());
        let mut result = Map::new();
        result.insert(key.to_owned(), Value::Array(items.get(start..end).unwrap_or_default().to_vec()));
        if end < items.len() {
            result.insert("nextCursor".into(), json!(URL_SAFE_NO_PAD.encode(format!("o:{end}"))));
        }
        Ok(Value::Object(result))
    }

    /// A tool's input schema, by exposed name.
    pub fn tool_input_schema(&self, exposed: &str) -> Option<Value> {
        self.catalog.snapshot().tool(exposed).and_then(|e| e.definition.get("inputSchema").cloned())
    }

    /// The tools `principal` may see, by running the chain's on-list hook
    /// (cached until the catalog or the chain changes).
    fn view(&self, principal: &Principal, snapshot: &Snapshot) -> Arc<View> {
        let live = self.chain.load();
        let key = principal.view_key();
        if let Some(view) = self.views.lock().unwrap().get(&key)
            && view.catalog == snapshot.generation
            && view.chain == live.generation
        {
            return Arc::clone(view);
        }
        let listed: Vec<ListedTool> = snapshot
            .tools
            .iter()
            .map(|entry| ListedTool {
                server: entry.upstream.clone(),
                name: entry.name.clone(),
                description: entry.definition.get("description").and_then(Value::as_str).map(str::to_owned),
                annotations: catalog::annotations(&entry.definition),
                input_schema: entry.definition.get("inputSchema").map(Value::to_string).unwrap_or_else(|| "{}".into()),
            })
            .collect();
        let request = ListRequest { request_id: self.request_id(), session_id: None, principal: principal.to_policy() };
        let name_of = |i: usize| snapshot.tools[i].exposed.clone();

        // Resources, templates and prompts go to on-catalog in one listing.
        let item = |kind, server: &str, name: &str, definition: &Value| ListedItem {
            kind,
            server: server.to_owned(),
            name: name.to_owned(),
            title: definition.get("title").and_then(Value::as_str).map(str::to_owned),
            description: definition.get("description").and_then(Value::as_str).map(str::to_owned),
            definition: definition.to_string(),
        };
        let text = |definition: &Value, key: &str| definition.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let items: Vec<ListedItem> = (snapshot
            .resources
            .iter()
            .map(|(up, r)| item(ItemKind::Resource, up, &text(r, "uri"), r)))
        .chain(
            snapshot.templates.iter().map(|(up, t)| item(ItemKind::ResourceTemplate, up, &text(t, "uriTemplate"), t)),
        )
        .chain(snapshot.prompts.iter().map(|p| item(ItemKind::Prompt, &p.upstream, &p.name, &p.definition)))
        .collect();
        let (listing, catalog) = off_the_runtime(|| {
            (live.chain.on_list(&request, &listed, now_ms()), live.chain.on_catalog(&request, &items, now_ms()))
        });
        let tools = shown(listing.items, principal, name_of);
        let mut visible = catalog.items;
        let prompts = visible.split_off(snapshot.resources.len() + snapshot.templates.len());
        let templates = visible.split_off(snapshot.resources.len());
        let view = Arc::new(View {
            catalog: snapshot.generation,
            chain: live.generation,
            tools,
            resources: shown(visible, principal, |i| text(&snapshot.resources[i].1, "uri")),
            templates: shown(templates, principal, |i| text(&snapshot.templates[i].1, "uriTemplate")),
            prompts: shown(prompts, principal, |i| snapshot.prompts[i].exposed.clone()),
        });
        let mut views = self.views.lock().unwrap();
        if views.len() >= MAX_VIEWS {
            views.clear();
        }
        views.insert(key, Arc::clone(&view));
        view
    }

    fn list_tools(&self, caller: &Caller, params: &Value) -> Result<Value, GatewayError> {
        let snapshot = self.catalog.snapshot();
        let view = self.view(&caller.principal, &snapshot);
        let off = self.switches();
        let review = self.review_pins(&snapshot);
        let pinned =
            |i: usize| review.as_ref().and_then(|r| r.get(&snapshot.tools[i].upstream, &snapshot.tools[i].name));
        let deprecations = self.deprecations.load();
        let deprecated =
            |i: usize| deprecation::covering(&deprecations, &snapshot.tools[i].upstream, &snapshot.tools[i].name);
        let now = now_ms();
        let on = switched_on(&view.tools, |i| {
            let tool = &snapshot.tools[i];
            off.covering(TargetKind::Tool, &tool.upstream, &tool.name).is_none()
                && !pinned(i).is_some_and(|f| f.held)
                && !deprecated(i).is_some_and(|d| d.retired(now))
        });
        // A tool that differs from its pin but is only flagged says so.
        let on: Vec<Shown> = on
            .into_iter()
            .map(|(i, mut flags)| {
                if let Some(finding) = pinned(i) {
                    flags.push((PINNING_FLAG.to_owned(), finding.reason()));
                }
                (i, flags)
            })
            .collect();
        let mut tools = flagged(&on, |i| &snapshot.tools[i].definition);
        for ((i, _), tool) in on.iter().zip(&mut tools) {
            if let Some(deprecated) = deprecated(*i) {
                crate::mcp::set_meta(tool, deprecation::META, deprecated.note());
            }
        }
        self.page(params, "tools", tools)
    }

    /// The upstream serving `uri` for `principal`, unless its listing hid
    /// it from them (the resource itself, or every template it matches).
    fn visible_resource_upstream(&self, principal: &Principal, uri: &str) -> Result<&Upstream, GatewayError> {
        let snapshot = self.catalog.snapshot();
        let view = self.view(principal, &snapshot);
        let listed = snapshot.resources.iter().position(|(_, r)| r.get("uri").and_then(Value::as_str) == Some(uri));
        let visible = match listed {
            Some(index) => view.resources.iter().any(|(i, _)| *i == index),
            None => view.templates.iter().any(|(i, _)| {
                let template = snapshot.templates[*i].1.get("uriTemplate").and_then(Value::as_str);
                template.is_some_and(|t| catalog::template_matches(t, uri))
            }),
        };
        let unknown = |hidden| GatewayError::Unknown { kind: "resource", name: uri.to_owned(), hidden };
        match snapshot.resource_upstream(uri) {
            None => Err(unknown(false)),
            Some(_) if !visible => Err(unknown(true)),
            Some(name) => self.upstream(name),
        }
    }

    /// A prompt by exposed name, unless its listing hid it from `principal`.
    fn visible_prompt(&self, principal: &Principal, exposed: &str) -> Result<Entry, GatewayError> {
        let snapshot = self.catalog.snapshot();
        let view = self.view(principal, &snapshot);
        let unknown = |hidden| GatewayError::Unknown { kind: "prompt", name: exposed.to_owned(), hidden };
        match snapshot.prompts.iter().position(|p| p.exposed == exposed) {
            None => Err(unknown(false)),
            Some(i) if !view.shows_prompt(i) => Err(unknown(true)),
            Some(i) => Ok(snapshot.prompts[i].clone()),
        }
    }

    /// The path of a tool call. Order matters: nothing reaches the upstream
    /// unless the chain allowed it, and nothing reaches the client unless the
    /// chain saw it.
    async fn call_tool(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        mut params: Value,
    ) -> Result<Value, GatewayError> {
        let exposed = required(&params, "name")?;
        let arguments = match params.get("arguments") {
            None | Some(Value::Null) => json!({}),
            Some(a @ Value::Object(_)) => a.clone(),
            Some(_) => return Err(GatewayError::InvalidParams("arguments must be an object".into())),
        };
        // Route: only tools this principal may see exist for it.
        let snapshot = self.catalog.snapshot();
        let routed = tracing::info_span!("route", otel.name = "route").in_scope(|| {
            self.visible_tool(&caller.principal, &snapshot, exposed).ok_or_else(|| GatewayError::Unknown {
                kind: "tool",
                name: exposed.to_owned(),
                hidden: snapshot.tool(exposed).is_some(),
            })
        });
        let entry = routed?;
        let missing = self.missing_scopes(&caller.principal, &entry.upstream, &entry.name);
        if !missing.is_empty() {
            return Err(GatewayError::InsufficientScope(missing));
        }
        let target = Target {
            kind: TargetKind::Tool,
            server: entry.upstream.clone(),
            name: entry.name.clone(),
            annotations: catalog::annotations(&entry.definition),
        };
        // A tool whose definition is not the one pinned is held: what the
        // agent read may not be what the operator approved.
        if let Some(finding) =
            self.review_pins(&snapshot).and_then(|r| r.get(&entry.upstream, &entry.name).filter(|f| f.held).cloned())
        {
            cx.target(&target);
            return Err(GatewayError::ToolHeld(Box::new(finding)));
        }
        params["name"] = json!(entry.name);
        let schema = entry.definition.get("inputSchema").cloned().unwrap_or(Value::Null);
        self.through_chain(cx, caller, target, arguments, params, "tools/call", "arguments", &schema).await
    }

    /// The tool `exposed`, if it exists for `principal` (tools its listing
    /// hides do not).
    fn visible_tool<'a>(&self, principal: &Principal, snapshot: &'a Snapshot, exposed: &str) -> Option<&'a Entry> {
        let view = self.view(principal, snapshot);
        snapshot.tool(exposed).filter(|entry| view.tools.iter().any(|(i, _)| std::ptr::eq(&snapshot.tools[*i], *entry)))
    }

    /// Scopes a `tools/call` needs that `principal` lacks (empty for tools
    /// that do not exist for it: routing reports those, without revealing
    /// a hidden tool's scopes).
    pub fn missing_scopes_for_call(&self, principal: &Principal, params: &Value) -> Vec<String> {
        let Some(exposed) = params.get("name").and_then(Value::as_str) else { return vec![] };
        let snapshot = self.catalog.snapshot();
        match self.visible_tool(principal, &snapshot, exposed) {
            Some(entry) => self.missing_scopes(principal, &entry.upstream, &entry.name),
            None => vec![],
        }
    }

    fn missing_scopes(&self, principal: &Principal, upstream: &str, tool: &str) -> Vec<String> {
        let mut missing = Vec::new();
        for rule in self.settings.required_scopes.iter().filter(|r| r.covers(upstream, tool)) {
            for scope in &rule.scopes {
                if !principal.scopes.contains(scope) && !missing.contains(scope) {
                    missing.push(scope.clone());
                }
            }
        }
        missing
    }

    async fn read_resource(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        params: Value,
    ) -> Result<Value, GatewayError> {
        let uri = required(&params, "uri")?;
        let upstream = self.visible_resource_upstream(&caller.principal, uri)?;
        let target = resource_target(upstream.name(), uri);
        let arguments = json!({ "uri": uri });
        self.through_chain(cx, caller, target, arguments, params, "resources/read", "", &Value::Null).await
    }

    async fn get_prompt(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        mut params: Value,
    ) -> Result<Value, GatewayError> {
        let exposed = required(&params, "name")?;
        let entry = self.visible_prompt(&caller.principal, exposed)?;
        let target = prompt_target(&entry.upstream, &entry.name);
        params["name"] = json!(entry.name);
        let arguments = params.get("arguments").filter(|a| a.is_object()).cloned().unwrap_or_else(|| json!({}));
        self.through_chain(cx, caller, target, arguments, params, "prompts/get", "arguments", &Value::Null).await
    }

    /// on-call → upstream → on-result, for a routed request. `arguments_key`
    /// is where rewritten arguments go back into `params` (empty: nowhere);
    /// `input_schema` declares which arguments 2026-07-28 upstreams expect
    /// mirrored in `Mcp-Param-*` headers.
    #[allow(clippy::too_many_arguments)]
    async fn through_chain(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        target: Target,
        arguments: Value,
        mut params: Value,
        method: &str,
        arguments_key: &str,
        input_schema: &Value,
    ) -> Result<Value, GatewayError> {
        // Limits first: a looping client is stopped before it costs a plugin
        // run or an upstream call. A shared chain history is read by the
        // same store call (on Redis: one round trip for both).
        cx.target(&target);
        let key = caller.history_key();
        let shared = matches!(self.history, History::Shared { .. }).then_some(key.as_str());
        let checked = self.governance.limiter.check(&caller.principal, &target, shared).await;
        // The tightest rule's state (or the refusing one's) goes to the
        // transport for the answer's RateLimit headers.
        let headline = match &checked {
            Ok(admitted) => admitted.headline.clone(),
            Err(refusal) => refusal.headline(),
        };
        if let (Some(note), Some(headline)) = (&caller.limit_note, headline) {
            *note.lock().unwrap() = Some(headline);
        }
        let mut admitted = checked?;
        cx.limits(&admitted);
        // Kill switches next. A switch set on another replica is known by
        // the generation the limit check read along; only then are the
        // switches read again.
        if let Some(generation) = admitted.controls {
            self.catch_up_controls(generation).await.map_err(|e| GatewayError::StateUnavailable(e.0))?;
        }
        self.check_switches(&target)?;
        // A retired tool is refused; a deprecated one is served with a warning.
        let deprecations = self.deprecations.load();
        let deprecated = match target.kind {
            TargetKind::Tool => deprecation::covering(&deprecations, &target.server, &target.name),
            _ => None,
        };
        if let Some(deprecated) = deprecated {
            if deprecated.retired(now_ms()) {
                return Err(GatewayError::Retired(Box::new(deprecated.clone())));
            }
            cx.deprecation(deprecated.describe());
        }
        let history = match admitted.history.take() {
            Some(history) => history,
            // Kept here, or (the store unreachable, on_unavailable = "local")
            // this replica's own.
            None => self
                .history
                .local(&key)
                .ok_or_else(|| GatewayError::StateUnavailable("the chain history was not read".into()))?,
        };
        // One snapshot of the chain for on-call and on-result: a reload never
        // splits a call across chain versions.
        let (live, call, rewrote, asked) = self.decide_call(cx, caller, target, &arguments, history).await?;
        if let Some(asked) = asked
            && let Some(round) = self.seek_approval(cx, caller, &call, &live, asked, method, &mut params).await?
        {
            return Ok(round);
        }
        if rewrote {
            cx.forwarded(&call.arguments);
            if !arguments_key.is_empty() {
                params[arguments_key] = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
            }
        }

        let upstream = self.upstream(&call.target.server)?;
        let mut caller = caller.clone();
        // What the upstream asks the client mid-call (sampling, elicitation,
        // roots) and what it tells it (log messages, progress) reaches a
        // person or the client's model: it passes on-result too.
        if live.chain.runs(Hook::OnResult) {
            let screen = Arc::new(ResultScreen { live: Arc::clone(&live), call: call.clone() });
            if let Some(inner) = caller.hooks.requests.take() {
                caller.hooks.requests = Some(Arc::new(Screened { inner, screen: Arc::clone(&screen) }));
            }
            caller.hooks.screen = Some(screen);
        }
        let final_arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
        for (suffix, path) in crate::mcp::param_header_specs(input_schema) {
            if let Some(value) = crate::mcp::param_header_value(&final_arguments, &path) {
                caller.hooks.param_headers.push((format!("{}{}", crate::mcp::header::PARAM_PREFIX, suffix), value));
            }
        }
        // The upstream call is a client span; its context goes on to the
        // upstream, in `_meta` (every upstream) and as headers (HTTP ones).
        let span = tracing::info_span!(
            "upstream",
            otel.name = %format!("{method} {}", call.target.name),
            otel.kind = "client",
            mcp.method.name = method,
            warden.upstream = %call.target.server,
        );
        caller.hooks.trace_headers = crate::telemetry::propagation(&span);
        for (key, value) in &caller.hooks.trace_headers {
            crate::mcp::set_meta(&mut params, key, json!(value));
        }
        let sent = Instant::now();
        // The call goes into the chain history while the upstream works on
        // it, and is answered only once both are done: the client's next
        // call sees it on whichever replica it lands, at no added latency.
        // If the history cannot be written (Redis down), the next call is
        // refused anyway unless `on_unavailable = "local"`.
        let (recorded, answer) = tokio::join!(
            self.history.record(&key, &call),
            self.dispatch(upstream, method, params, &caller).instrument(span)
        );
        if let Err(error) = recorded {
            tracing::warn!(%error, request = %cx.id, "the call is not in the shared chain history");
        }
        cx.upstream(&answer, sent);
        if !admitted.charges.is_empty() {
            let (limiter, spent) = (Arc::clone(&self.governance.limiter), sent.elapsed());
            tokio::spawn(async move { limiter.charge(&admitted, spent).await });
        }
        let result = answer.map_err(GatewayError::Upstream)?;

        // An input_required result (a 2026-07-28 client's question round)
        // passes on-result like any result: its questions reach a person or
        // the client's model.
        let mut result = match live.chain.runs(Hook::OnResult) {
            false => result,
            true => {
                let (chain, output) = (Arc::clone(&live), result.to_string());
                let decision = self.plugin_threads.run(move || chain.chain.on_result(&call, output)).await;
                cx.steps(&decision.steps);
                let rewrote = decision.rewrote();
                match decision.outcome {
                    // Unchanged: the parsed result stands; no need to parse it again.
                    ResultOutcome::Allow(_) if !rewrote => result,
                    ResultOutcome::Allow(output) => serde_json::from_str(&output)
                        .map_err(|e| GatewayError::Internal(format!("rewritten result is not JSON: {e}")))?,
                    ResultOutcome::Deny(rejection) => return Err(GatewayError::Denied { rejection, on_result: true }),
                }
            }
        };
        // Told after the chain, so no policy can take the warning out.
        if let Some(deprecated) = deprecated {
            crate::mcp::set_meta(&mut result, deprecation::META, deprecated.note());
        }
        Ok(result)
    }

    /// on-call alone, for requests that use a resource or prompt without
    /// fetching it (completions, subscriptions): a deny or an ask refuses,
    /// and a rewrite cannot apply, so it is ignored (and recorded so).
    /// Nothing is recorded in the history chain policies see: nothing was called.
    async fn screen(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        target: Target,
        arguments: Value,
    ) -> Result<(), GatewayError> {
        cx.target(&target);
        self.check_switches(&target)?;
        let history =
            self.history.recent(&caller.history_key()).await.map_err(|e| GatewayError::StateUnavailable(e.0))?;
        let (_, _, rewrote, asked) = self.decide_call(cx, caller, target, &arguments, history).await?;
        if let Some(asked) = asked {
            return Err(GatewayError::ApprovalRequired(asked));
        }
        if rewrote {
            cx.outcome("rewrite-ignored");
        }
        Ok(())
    }

    /// Run on-call over a routed request on the live chain, noting target,
    /// arguments, chain and steps on the context. Returns the chain snapshot,
    /// the call as the chain left it, whether a plugin rewrote the
    /// arguments, and the question if a plugin asked for approval; or the
    /// refusal.
    async fn decide_call(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        target: Target,
        arguments: &Value,
        history: Vec<crate::engine::PastCall>,
    ) -> Result<(Arc<LiveChain>, Call, bool, Option<Approval>), GatewayError> {
        let live = self.chain.load_full();
        cx.target(&target);
        cx.arguments(arguments);
        cx.chain(&live);
        let mut call = call_record(caller, cx.id.clone(), target, arguments, history);
        // A chain without on-call plugins decides nothing: no hand-off.
        let (call, decision) = match live.chain.runs(Hook::OnCall) {
            false => {
                let decision = live.chain.on_call(&mut call);
                (call, decision)
            }
            true => {
                let chain = Arc::clone(&live);
                self.plugin_threads
                    .run(move || {
                        let decision = chain.chain.on_call(&mut call);
                        (call, decision)
                    })
                    .await
            }
        };
        cx.steps(&decision.steps);
        let rewrote = decision.rewrote();
        let asked = match decision.outcome {
            CallOutcome::Allow => None,
            CallOutcome::Ask(approval) => Some(approval),
            CallOutcome::Deny(rejection) => return Err(GatewayError::Denied { rejection, on_result: false }),
        };
        Ok((live, call, rewrote, asked))
    }

    /// Ask a person about `call`, as `asked` wants: the caller's client
    /// (legacy elicitation, or a sealed `input_required` round for a
    /// 2026-07-28 client) or the operator queue. `Ok(None)` once approved
    /// (a redeemed round is taken out of `params`); `Ok(Some(round))`: the
    /// round to answer the call with; the refusal otherwise (or -32011,
    /// with no `[approvals]`).
    #[allow(clippy::too_many_arguments)]
    async fn seek_approval(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        call: &Call,
        live: &LiveChain,
        asked: Approval,
        method: &str,
        params: &mut Value,
    ) -> Result<Option<Value>, GatewayError> {
        let Some(approvals) = &self.governance.approvals else { return Err(GatewayError::ApprovalRequired(asked)) };
        let mut ask = self.ask_of(approvals, caller, call, live, asked);
        // The caller's client is asked if it declared elicitation: a legacy
        // one on its session, a 2026-07-28 one in a sealed round.
        let client_asks =
            approvals.via(&ask.plugin) == Via::Auto && caller.hooks.client_capabilities.get("elicitation").is_some();
        let answer = match (&caller.hooks.requests, client_asks) {
            (_, true) if caller.modern => {
                let request = crate::transport::parked::request_fingerprint(method, params);
                let state = params.get("requestState").and_then(Value::as_str).filter(|s| approvals.is_round(s));
                let Some(state) = state else {
                    cx.outcome("approval-asked");
                    return Ok(Some(approvals.round(&ask, request)));
                };
                ask.id = approvals
                    .redeem(state, &ask.identity, &request, live.generation)
                    .await
                    .map_err(|e| GatewayError::InvalidParams(e.to_string()))?;
                let answer = ask.answer_of(params.pointer(&format!("/inputResponses/{}", approvals::ROUND_KEY)));
                // The round was the gateway's: the upstream never sees it.
                if let Some(map) = params.as_object_mut() {
                    map.remove("requestState");
                    map.remove("inputResponses");
                }
                answer
            }
            (Some(client), true) => {
                let reply = client.request("elicitation/create".into(), ask.question()).await;
                match reply {
                    Ok(reply) => ask.answer_of(Some(&reply)),
                    Err(error) => approvals::Answer {
                        approved: false,
                        by: ask.subject.clone(),
                        via: "elicitation".into(),
                        reason: Some(format!("the client could not be asked: {}", error.message)),
                    },
                }
            }
            _ => wait_for_operator(approvals, &ask, caller, params).await?,
        };
        cx.approval(json!({ "id": ask.id, "via": answer.via, "approved": answer.approved, "by": answer.by, "reason": answer.reason }));
        match answer.approved {
            true => Ok(None),
            false => Err(GatewayError::ApprovalDenied { ask: Box::new(ask), answer }),
        }
    }

    /// What a person is asked about `call`: who, what, the arguments as the
    /// chain left them (redacted, summarised), the policy's question.
    fn ask_of(&self, approvals: &Approvals, caller: &Caller, call: &Call, live: &LiveChain, asked: Approval) -> Ask {
        let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
        let redact = match self.governance.auditor.settings() {
            Some(settings) => settings.redact.clone(),
            None => crate::audit::default_redact(),
        };
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).expect("the OS provides randomness");
        let (expires, expires_ms) = approvals.expiry();
        let principal = &caller.principal;
        Ask {
            id: URL_SAFE_NO_PAD.encode(id),
            time: crate::audit::timestamp(SystemTime::now()),
            expires,
            expires_ms,
            subject: principal.subject.clone(),
            tenant: principal.tenant.clone(),
            identity: principal.identity_key(),
            server: call.target.server.clone(),
            target: call.target.name.clone(),
            kind: call.target.kind.as_str().to_owned(),
            arguments_sha256: crate::audit::fingerprint(&arguments),
            arguments: approvals::summary(&arguments, &redact),
            plugin: asked.plugin,
            prompt: asked.prompt,
            chain: live.generation,
            answer: None,
        }
    }

    /// Send a request upstream. For a legacy client, `input_required` rounds
    /// from a 2026-07-28 upstream are answered by asking the client (its
    /// session carries server-to-client requests); a modern client gets them
    /// as they are.
    async fn dispatch(
        &self,
        upstream: &Upstream,
        method: &str,
        params: Value,
        caller: &Caller,
    ) -> Result<Value, RpcError> {
        let mut params = params;
        for _ in 0..MAX_INPUT_ROUNDS {
            let result =
                upstream.request(method, params.clone(), caller.hooks.clone()).await.map_err(|e| e.to_rpc())?;
            if caller.modern || result.get("resultType").and_then(Value::as_str) != Some("input_required") {
                return Ok(result);
            }
            let Some(relay) = &caller.hooks.requests else {
                return Err(RpcError::internal("the upstream needs input the client cannot be asked for"));
            };
            let mut responses = Map::new();
            if let Some(requests) = result.get("inputRequests").and_then(Value::as_object) {
                for (key, request) in requests {
                    let method = request.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
                    let inner = request.get("params").cloned().unwrap_or_else(|| json!({}));
                    responses.insert(key.clone(), relay.request(method, inner).await?);
                }
            }
            params["inputResponses"] = Value::Object(responses);
            match result.get("requestState") {
                Some(state) => params["requestState"] = state.clone(),
                None => {
                    if let Some(p) = params.as_object_mut() {
                        p.remove("requestState");
                    }
                }
            }
        }
        Err(RpcError::internal(format!("the upstream asked for input more than {MAX_INPUT_ROUNDS} times")))
    }

    /// `completion/complete`: suggestions for a prompt's or resource
    /// template's argument. The chain's on-call sees it as a use of that
    /// prompt or resource (arguments: `{"completion": <the params>}`), so a
    /// principal who may not use a prompt cannot probe its arguments either.
    async fn complete(
        &self,
        cx: &mut RequestContext,
        caller: &Caller,
        mut params: Value,
    ) -> Result<Value, GatewayError> {
        let reference = params.get("ref").cloned().unwrap_or(Value::Null);
        let (upstream, target) = match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let exposed = reference.get("name").and_then(Value::as_str).unwrap_or_default();
                let entry = self.visible_prompt(&caller.principal, exposed)?;
                params["ref"]["name"] = json!(entry.name);
                (self.upstream(&entry.upstream)?, prompt_target(&entry.upstream, &entry.name))
            }
            Some("ref/resource") => {
                let uri = reference.get("uri").and_then(Value::as_str).unwrap_or_default();
                let upstream = self.visible_resource_upstream(&caller.principal, uri)?;
                (upstream, resource_target(upstream.name(), uri))
            }
            _ => return Err(GatewayError::InvalidParams("ref must be a ref/prompt or ref/resource".into())),
        };
        self.screen(cx, caller, target, json!({ "completion": params })).await?;
        if !upstream.server_info().is_some_and(|i| i.has("completions")) {
            return Ok(json!({ "completion": { "values": [], "hasMore": false } }));
        }
        upstream.request("completion/complete", params, caller.hooks.clone()).await.map_err(upstream_error)
    }

    fn upstream(&self, name: &str) -> Result<&Upstream, GatewayError> {
        self.by_name.get(name).map(|u| u.as_ref()).ok_or_else(|| GatewayError::Internal(format!("no upstream {name}")))
    }
}

/// What the chain's on-call and on-result see of a request.
fn call_record(
    caller: &Caller,
    request_id: String,
    target: Target,
    arguments: &Value,
    history: Vec<crate::engine::PastCall>,
) -> Call {
    Call {
        request_id,
        session_id: caller.session.clone(),
        principal: caller.principal.to_policy(),
        target,
        arguments: arguments.to_string(),
        history,
        timestamp_ms: now_ms(),
    }
}

/// The chain history the settings and the state store call for: shared in
/// Redis, or kept here.
fn history(settings: &Settings, governance: &Governance) -> History {
    let local = LocalHistory::new(settings.history, settings.max_histories);
    let store = governance.limiter.store();
    match &**store {
        crate::state::StateStore::Memory(_) => History::Local(local),
        crate::state::StateStore::Redis(_) => History::Shared {
            store: Arc::clone(store),
            per_key: settings.history,
            ttl: settings.history_ttl,
            on_unavailable: governance.limiter.on_unavailable(),
            fallback: local,
        },
    }
}

/// A string parameter the request must carry.
fn required<'a>(params: &'a Value, key: &str) -> Result<&'a str, GatewayError> {
    params.get(key).and_then(Value::as_str).ok_or_else(|| GatewayError::InvalidParams(format!("{key} is required")))
}

fn upstream_error(error: crate::upstream::UpstreamError) -> GatewayError {
    GatewayError::Upstream(error.to_rpc())
}

/// The chain's on-result for what an upstream sends the client during a
/// call besides its result.
struct ResultScreen {
    live: Arc<LiveChain>,
    call: Call,
}

impl ResultScreen {
    /// Run on-result over `output`; the output as the chain left it, or the
    /// denial. `what` names it in the decision log.
    fn decide(&self, output: Value, what: &str) -> Result<Value, RpcError> {
        let decision = self.live.chain.on_result(&self.call, output.to_string());
        let rewrote = decision.rewrote();
        match decision.outcome {
            ResultOutcome::Deny(rejection) => {
                tracing::info!(
                    target: "warden::audit",
                    request = %self.call.request_id,
                    name = %self.call.target.name,
                    what,
                    outcome = "side-traffic-denied",
                    detail = %rejection.reason,
                );
                Err(denied(&rejection))
            }
            ResultOutcome::Allow(text) if rewrote => serde_json::from_str(&text)
                .map_err(|e| RpcError::internal(format!("rewritten {what} is not JSON: {e}"))),
            ResultOutcome::Allow(_) => Ok(output),
        }
    }
}

/// Log messages and progress (the text they carry reaches the client) pass
/// on-result as `{"notification": {"method", "params"}}`; a deny drops the
/// notification, a rewrite changes it. Other notifications pass as they are.
impl NotificationScreen for ResultScreen {
    fn screen(&self, notification: Value) -> Option<Value> {
        let method = notification.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
        if !matches!(method.as_str(), "notifications/message" | "notifications/progress") {
            return Some(notification);
        }
        let params = notification.get("params").cloned().unwrap_or(Value::Null);
        let wrapped = json!({ "notification": { "method": method, "params": params } });
        let mut screened = self.decide(wrapped, &method).ok()?;
        let params = screened.pointer_mut("/notification/params").map(Value::take)?;
        Some(crate::mcp::jsonrpc::notification(&method, params))
    }
}

/// Relays an upstream's requests to the client only after the chain's
/// on-result saw them, in the shape a 2026-07-28 upstream would have sent
/// them: `{"resultType": "input_required", "inputRequests": {"0": {method,
/// params}}}`, so a result policy treats both eras' questions alike. A deny
/// answers the upstream with the denial; a rewrite changes what the client
/// is asked.
struct Screened {
    inner: Arc<dyn ClientRequests>,
    screen: Arc<ResultScreen>,
}

impl ClientRequests for Screened {
    fn request(
        &self,
        method: String,
        params: Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, RpcError>> + Send>> {
        let question = json!({
            "resultType": "input_required",
            "inputRequests": { "0": { "method": method, "params": params } },
        });
        let screened = self.screen.decide(question, &method).and_then(|mut q| {
            q.pointer_mut("/inputRequests/0/params")
                .map(Value::take)
                .ok_or_else(|| RpcError::internal("a policy rewrote the client request into something else"))
        });
        match screened {
            Ok(params) => self.inner.request(method, params),
            Err(error) => Box::pin(std::future::ready(Err(error))),
        }
    }
}

/// Queue `ask` for an operator and wait for the answer (or the timeout);
/// a client that sent a progress token hears every few seconds that the
/// call still waits.
async fn wait_for_operator(
    approvals: &Approvals,
    ask: &Ask,
    caller: &Caller,
    params: &Value,
) -> Result<approvals::Answer, GatewayError> {
    tracing::warn!(id = %ask.id, subject = %ask.subject, server = %ask.server, target = %ask.target,
        "a call waits for an operator's approval (warden approvals approve|deny <id>)");
    let progress = params.pointer("/_meta/progressToken").cloned();
    let waited = approvals.wait(ask);
    tokio::pin!(waited);
    let mut every = tokio::time::interval(APPROVAL_PROGRESS);
    let mut told = 0u64;
    loop {
        tokio::select! {
            answer = &mut waited => return answer.map_err(|e| GatewayError::StateUnavailable(e.0)),
            _ = every.tick() => if let (Some(token), Some(sink)) = (&progress, &caller.hooks.notifications) {
                told += 1;
                let _ = sink.send(crate::mcp::jsonrpc::notification("notifications/progress", json!({
                    "progressToken": token,
                    "progress": told,
                    "message": format!("waiting for an operator to approve this call (approval {})", ask.id),
                })));
            }
        }
    }
}

/// The shown items of a listing that `on` keeps.
fn switched_on(shown: &[Shown], on: impl Fn(usize) -> bool) -> Vec<Shown> {
    shown.iter().filter(|(i, _)| on(*i)).cloned().collect()
}

/// The visible items of a listing, each with its plugins' flags in `_meta`.
fn flagged<'a>(shown: &[Shown], definition: impl Fn(usize) -> &'a Value) -> Vec<Value> {
    shown
        .iter()
        .map(|(i, flags)| {
            let mut item = definition(*i).clone();
            if !flags.is_empty() {
                let flags: Vec<Value> = flags.iter().map(|(p, r)| json!({"plugin": p, "reason": r})).collect();
                crate::mcp::set_meta(&mut item, "dev.warden/flags", Value::Array(flags));
            }
            item
        })
        .collect()
}

/// The shown items of a listing decision, logging each hidden one.
fn shown(items: Vec<Visibility>, principal: &Principal, name: impl Fn(usize) -> String) -> Vec<Shown> {
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, visibility)| match visibility {
            Visibility::Shown(flags) => Some((i, flags)),
            Visibility::Hidden(why) => {
                tracing::debug!(subject = %principal.subject, item = %name(i), plugin = %why.plugin, reason = %why.reason, "hidden from a listing");
                None
            }
        })
        .collect()
}

fn resource_target(server: &str, uri: &str) -> Target {
    Target {
        kind: TargetKind::Resource,
        server: server.to_owned(),
        name: uri.to_owned(),
        annotations: Default::default(),
    }
}

fn prompt_target(server: &str, name: &str) -> Target {
    Target {
        kind: TargetKind::Prompt,
        server: server.to_owned(),
        name: name.to_owned(),
        annotations: Default::default(),
    }
}

fn denied(rejection: &Rejection) -> RpcError {
    GatewayError::Denied { rejection: rejection.clone(), on_result: true }.to_rpc()
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix("o:")?.parse().ok()
}

/// Run the listing hooks without holding up the runtime. A view is built in
/// synchronous code that many handlers share, once per principal and
/// catalog and chain generation, so it cannot await the plugin threads;
/// `block_in_place` hands this worker's other tasks to another thread while
/// the hooks run (up to their deadline, for a plugin that spins). On a
/// current-thread runtime (unit tests) or off the runtime, they run here.
fn off_the_runtime<R>(run: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(run),
        _ => run(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
