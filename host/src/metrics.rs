//! Prometheus metrics, encoded by `prometheus-client` (OpenMetrics text) for
//! `GET /admin/metrics` on the admin listener.
//!
//! The request path's metrics live in [`Metrics`]: requests by tenant,
//! server, target and outcome; request, plugin and upstream latency; plugin
//! fuel and verdicts; upstream errors and connections; authentication
//! failures. Counters kept beside what they count (the transport's bounds,
//! the reloader, the audit writer) are read at scrape time into a
//! [`Snapshot`].
//!
//! Label values are bounded: no subjects, arguments or request ids ever
//! become labels; targets and tenants beyond the first `max_targets` /
//! `max_tenants` seen are counted as `other`; unknown methods as `other`.

use std::{
    collections::HashSet,
    fmt,
    sync::{Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, text::encode},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::chain::Step;

/// The content type of the text [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    tenant: String,
    server: String,
    target: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    plugin: String,
    hook: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabels {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantServerLabels {
    tenant: String,
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    rule: String,
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, from 50 µs to ~26 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Fuel, from 1 000 to ~1 billion.
fn fuel() -> Histogram {
    Histogram::new(exponential_buckets(1_000.0, 4.0, 16))
}

/// Values of one label, bounded: past `max` distinct values, new ones are `other`.
#[derive(Debug)]
struct Bounded {
    seen: Mutex<HashSet<String>>,
    max: usize,
}

impl Bounded {
    fn new(max: usize) -> Self {
        Self { seen: Mutex::default(), max }
    }

    fn label(&self, value: &str) -> String {
        let mut seen = self.seen.lock().unwrap();
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        "other".to_owned()
    }
}

/// The methods a label may name; anything else is `other`.
const METHODS: [&str; 12] = [
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "ping",
];

/// What one request was, for [`Metrics::request`].
pub struct RequestSample<'a> {
    /// The JSON-RPC method.
    pub method: &'a str,
    /// The caller's tenant.
    pub tenant: Option<&'a str>,
    /// The upstream, once routed.
    pub server: Option<&'a str>,
    /// The tool, prompt or resource.
    pub target: Option<&'a str>,
    /// The audit outcome.
    pub outcome: &'a str,
    /// Time in the gateway.
    pub elapsed: Duration,
}

/// The request path's metrics. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<MethodLabels>,
    plugin_seconds: Histograms<PluginLabels>,
    plugin_fuel: Histograms<PluginLabels>,
    plugin_verdicts: Family<VerdictLabels, Counter>,
    upstream_seconds: Histograms<ServerLabels>,
    upstream_errors: Family<ServerLabels, Counter>,
    upstream_connections: Family<ServerLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    tenant_upstream_seconds: Family<TenantServerLabels, Counter<f64, AtomicU64>>,
    limit_decisions: Family<LimitLabels, Counter>,
    state_checks: Family<ResultLabels, Counter>,
    targets: Bounded,
    tenants: Bounded,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(200, 100)
    }
}

impl Metrics {
    /// Metrics that name at most `max_targets` targets and `max_tenants` tenants.
    pub fn new(max_targets: usize, max_tenants: usize) -> Self {
        Self {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(seconds),
            plugin_seconds: Family::new_with_constructor(seconds),
            plugin_fuel: Family::new_with_constructor(fuel),
            plugin_verdicts: Family::default(),
            upstream_seconds: Family::new_with_constructor(seconds),
            upstream_errors: Family::default(),
            upstream_connections: Family::default(),
            auth_failures: Family::default(),
            tenant_upstream_seconds: Family::default(),
            limit_decisions: Family::default(),
            state_checks: Family::default(),
            targets: Bounded::new(max_targets),
            tenants: Bounded::new(max_tenants),
        }
    }

    /// Count a finished request.
    pub fn request(&self, sample: &RequestSample<'_>) {
        let method = if METHODS.contains(&sample.method) { sample.method } else { "other" };
        let labels = RequestLabels {
            method: method.to_owned(),
            tenant: sample.tenant.map(|t| self.tenants.label(t)).unwrap_or_default(),
            server: sample.server.unwrap_or_default().to_owned(),
            target: match (sample.server, sample.target) {
                // Only routed targets exist upstream; a name asked for that
                // routed nowhere is the client's text, never a label.
                (Some(server), Some(target)) => self.targets.label(&format!("{server}/{target}")),
                _ => String::new(),
            },
            outcome: sample.outcome.to_owned(),
        };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds
            .get_or_create(&MethodLabels { method: method.to_owned() })
            .observe(sample.elapsed.as_secs_f64());
    }

    /// Count plugin invocations.
    pub fn steps(&self, steps: &[Step]) {
        for step in steps {
            let labels = PluginLabels { plugin: step.plugin.clone(), hook: step.hook.as_str().to_owned() };
            self.plugin_seconds.get_or_create(&labels).observe(step.elapsed.as_secs_f64());
            self.plugin_fuel.get_or_create(&labels).observe(step.fuel_used as f64);
            let verdict = step.outcome.verdict();
            let PluginLabels { plugin, hook } = labels;
            self.plugin_verdicts.get_or_create(&VerdictLabels { plugin, hook, verdict: verdict.to_owned() }).inc();
        }
    }

    /// Count an upstream call (`tenant`: whose call, for chargeback).
    pub fn upstream(&self, tenant: Option<&str>, server: &str, elapsed: Duration, failed: bool) {
        let tenant = tenant.map(|t| self.tenants.label(t)).unwrap_or_default();
        self.tenant_upstream_seconds
            .get_or_create(&TenantServerLabels { tenant, server: server.to_owned() })
            .inc_by(elapsed.as_secs_f64());
        let labels = ServerLabels { server: server.to_owned() };
        self.upstream_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        if failed {
            self.upstream_errors.get_or_create(&labels).inc();
        }
    }

    /// Count an upstream (re)connecting.
    pub fn upstream_connected(&self, server: &str) {
        self.upstream_connections.get_or_create(&ServerLabels { server: server.to_owned() }).inc();
    }

    /// Count a rate limit or quota decision: `kind` rate or quota, `result`
    /// admitted, refused or shadow-refused. Rule names come from config, so
    /// they are bounded.
    pub fn limit_decision(&self, rule: &str, kind: &str, result: &str) {
        let labels = LimitLabels { rule: rule.to_owned(), kind: kind.to_owned(), result: result.to_owned() };
        self.limit_decisions.get_or_create(&labels).inc();
    }

    /// Count a limit check against the state store by result (ok,
    /// unavailable-refused, unavailable-local).
    pub fn state_check(&self, result: &'static str) {
        self.state_checks.get_or_create(&ResultLabels { result: result.to_owned() }).inc();
    }

    /// Count a refused credential; `reason` is one of a few fixed words.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: reason.to_owned() }).inc();
    }

    /// Everything, with `snapshot`s of counters kept elsewhere, as OpenMetrics text.
    pub fn render(&self, snapshots: Vec<Snapshot>) -> String {
        let mut registry = Registry::default();
        registry.register(
            "warden_requests",
            "Requests the gateway decided on, by method, tenant, upstream, target and audit outcome",
            self.requests.clone(),
        );
        registry.register(
            "warden_request_duration_seconds",
            "Time requests spent in the gateway, by method",
            self.request_seconds.clone(),
        );
        registry.register(
            "warden_plugin_duration_seconds",
            "Time of each policy plugin invocation, by plugin and hook",
            self.plugin_seconds.clone(),
        );
        registry.register("warden_plugin_fuel", "Fuel each plugin invocation consumed", self.plugin_fuel.clone());
        registry.register(
            "warden_plugin_verdicts",
            "Policy plugin invocations by plugin, hook and verdict",
            self.plugin_verdicts.clone(),
        );
        registry.register(
            "warden_upstream_duration_seconds",
            "Time waiting for upstream answers, by upstream",
            self.upstream_seconds.clone(),
        );
        registry.register(
            "warden_upstream_errors",
            "Upstream calls that failed, timed out or were refused, by upstream",
            self.upstream_errors.clone(),
        );
        registry.register(
            "warden_upstream_connections",
            "Times each upstream connected (process started, session opened); more than one means restarts",
            self.upstream_connections.clone(),
        );
        registry.register(
            "warden_auth_failures",
            "Requests refused for their credentials, by reason",
            self.auth_failures.clone(),
        );
        registry.register(
            "warden_tenant_upstream_seconds",
            "Time upstreams spent on each tenant's calls, by tenant and upstream (for chargeback)",
            self.tenant_upstream_seconds.clone(),
        );
        registry.register(
            "warden_limit_decisions",
            "Rate limit and quota decisions by rule, kind (rate, quota) and result (admitted, refused, shadow-refused)",
            self.limit_decisions.clone(),
        );
        registry.register(
            "warden_state_checks",
            "Limit checks against the state store, by result: ok, unavailable-refused, unavailable-local",
            self.state_checks.clone(),
        );
        for snapshot in snapshots {
            registry.register_collector(Box::new(snapshot));
        }
        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String cannot fail");
        text
    }
}

/// Counters and gauges read at scrape time from where they are kept.
#[derive(Debug, Default)]
pub struct Snapshot {
    families: Vec<Sampled>,
}

#[derive(Debug)]
struct Sampled {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, u64)>,
}

impl Snapshot {
    /// Add a counter family (its name without `_total`): label sets and values.
    pub fn counter(
        &mut self,
        name: &'static str,
        help: &'static str,
        samples: Vec<(Vec<(&'static str, String)>, u64)>,
    ) {
        self.families.push(Sampled { name, help, kind: MetricType::Counter, samples });
    }

    /// Add a gauge without labels.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.families.push(Sampled { name, help, kind: MetricType::Gauge, samples: vec![(vec![], value)] });
    }
}

/// One sample without labels.
pub fn one(value: u64) -> Vec<(Vec<(&'static str, String)>, u64)> {
    vec![(vec![], value)]
}

/// Samples that differ by one label.
pub fn by(label: &'static str, samples: &[(&str, u64)]) -> Vec<(Vec<(&'static str, String)>, u64)> {
    samples.iter().map(|(value, n)| (vec![(label, (*value).to_owned())], *n)).collect()
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        fn sample(kind: MetricType, value: u64, encoder: MetricEncoder<'_>) -> fmt::Result {
            match kind {
                MetricType::Gauge => ConstGauge::new(value as i64).encode(encoder),
                _ => ConstCounter::new(value).encode(encoder),
            }
        }
        for family in &self.families {
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            match family.samples.as_slice() {
                // One sample without labels: no `{}` after the name.
                [(labels, value)] if labels.is_empty() => sample(family.kind, *value, metric)?,
                samples => {
                    for (labels, value) in samples {
                        sample(family.kind, *value, metric.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}
