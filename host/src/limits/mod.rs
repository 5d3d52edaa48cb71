//! Rate limits and quotas: one ordered stage of the request path, after
//! routing and scopes and before the policy chain, so a looping client is
//! stopped before it costs a plugin run or an upstream call.
//!
//! - A `[[limit]]` is a GCRA bucket (the generic cell rate algorithm): one
//!   timestamp per key, exact, no burst at window edges, and one `SET` per
//!   call in Redis; a token bucket would need two values per key and a
//!   fixed window lets twice the rate through across a boundary.
//! - A `[[quota]]` counts calls (or upstream time) in calendar windows
//!   (UTC minutes, hours, days, months, or any fixed length aligned to the
//!   epoch) and says when the window resets.
//!
//! Every rule that matches a call is decided together, in one store
//! round trip: the call consumes all of them or none. A `shadow` rule is
//! decided and audited but never refuses.

mod rules;
#[cfg(test)]
mod tests;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
pub use rules::{KeyBy, Limits, QuotaRule, RateRule, Scope, Window};

use crate::{
    auth::Principal,
    engine::Target,
    metrics::Metrics,
    state::{Admission, QuotaDemand, RateDemand, StateError, StateStore, Unavailable, memory::MemoryStore, now_us},
};

/// Why a limit stage refused a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A rate limit has no room now.
    Rate(Exceeded),
    /// A quota is spent for its window.
    Quota(Exceeded),
    /// The shared store cannot be reached and limits fail closed.
    Unavailable(String),
}

impl Refusal {
    /// The refusing rule's state, for the answer's `RateLimit` headers.
    pub fn headline(&self) -> Option<Headline> {
        let (Self::Rate(e) | Self::Quota(e)) = self else { return None };
        let retry_s = e.retry_after_ms.div_ceil(1000);
        Some(Headline {
            name: e.name.clone(),
            quota: e.quota,
            window_s: e.window_s,
            remaining: 0,
            reset_s: retry_s,
            retry_after_s: Some(retry_s),
        })
    }
}

/// Which rule refused, and when to come back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// The rule's name.
    pub name: String,
    /// Milliseconds until a call would be admitted.
    pub retry_after_ms: u64,
    /// The rule's quota (calls per window) and window in seconds, for the
    /// `RateLimit-Policy` header.
    pub quota: u64,
    /// The window, seconds.
    pub window_s: u64,
    /// When a quota's window resets (ms since the epoch); `None` for a rate.
    pub resets_at_ms: Option<u64>,
}

/// The enforced rule with the least room left after a call, for the
/// `RateLimit-Policy` and `RateLimit` headers of its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headline {
    /// The rule's name.
    pub name: String,
    /// Calls (or quota units) per window.
    pub quota: u64,
    /// The window, seconds.
    pub window_s: u64,
    /// What is left.
    pub remaining: u64,
    /// Seconds until the rule is full again (a rate) or its window resets
    /// (a quota); for a refusal, until a call would be admitted.
    pub reset_s: u64,
    /// For a refusal, seconds until the client should try again (`Retry-After`).
    pub retry_after_s: Option<u64>,
}

impl Headline {
    /// The refusal this rule's state makes.
    fn exceeded(&self, retry_after_ms: u64, resets_at_ms: Option<u64>) -> Exceeded {
        Exceeded { name: self.name.clone(), retry_after_ms, quota: self.quota, window_s: self.window_s, resets_at_ms }
    }
}

/// What the limit stage noted about an admitted call.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The enforced rule with the least room left, if any rule matched.
    pub headline: Option<Headline>,
    /// Shadow rules that would have refused it.
    pub shadow_refusals: Vec<String>,
    /// Whether the shared store was unreachable and local counts decided.
    pub local_fallback: bool,
    /// Upstream-time quota counters to charge once the call is done:
    /// (key, ttl in ms).
    pub charges: Vec<(String, u64)>,
    /// The chain history asked for, as the store answered it (`None`: not
    /// asked for, or decided on local counts).
    pub history: Option<Vec<crate::engine::PastCall>>,
    /// The operator controls' generation, read along with the history.
    pub controls: Option<u64>,
}

/// The limit stage: the live rules and the store they count in.
pub struct Limiter {
    rules: ArcSwap<Limits>,
    store: Arc<StateStore>,
    on_unavailable: Unavailable,
    /// This replica's own counts, used while the shared store is unreachable
    /// (`on_unavailable = "local"`).
    local: MemoryStore,
    metrics: Arc<Metrics>,
    /// The config file the rules come from (re-read on reload).
    source: PathBuf,
    reloads: Mutex<(u64, u64, Option<String>)>,
}

impl Limiter {
    /// A limiter over `rules`, counting in `store`.
    pub fn new(
        rules: Limits,
        store: Arc<StateStore>,
        on_unavailable: Unavailable,
        metrics: Arc<Metrics>,
        source: PathBuf,
    ) -> Self {
        Self {
            rules: ArcSwap::from_pointee(rules),
            store,
            on_unavailable,
            local: MemoryStore::default(),
            metrics,
            source,
            reloads: Mutex::default(),
        }
    }

    /// Swap in the rules of a re-read config file (`Err`: the file was
    /// refused, and the old rules stay). Only `[[limit]]` and `[[quota]]`
    /// take effect here. Counts live in the store under the rules' names,
    /// so an unchanged rule keeps its counts across the swap.
    pub fn reload(&self, trigger: &str, parsed: Result<&Limits, &str>) -> Result<serde_json::Value, String> {
        let mut reloads = self.reloads.lock().unwrap();
        match parsed {
            Ok(limits) => {
                let counts = serde_json::json!({ "rates": limits.rates.len(), "quotas": limits.quotas.len() });
                self.rules.store(Arc::new(limits.clone()));
                reloads.0 += 1;
                tracing::info!(trigger, file = %self.source.display(), %counts, "limits reloaded");
                Ok(counts)
            }
            Err(error) => {
                reloads.1 += 1;
                reloads.2 = Some(error.to_owned());
                tracing::warn!(trigger, file = %self.source.display(), %error, "limits reload refused; the old limits stay");
                Err(error.to_owned())
            }
        }
    }

    /// The config file the rules come from.
    pub fn source(&self) -> &std::path::Path {
        &self.source
    }

    /// The live rules and the store, for `GET /admin/status`.
    pub fn describe(&self) -> serde_json::Value {
        let rules = self.rules.load();
        let (succeeded, failed, last_error) = self.reloads.lock().unwrap().clone();
        let rates: Vec<_> = rules
            .rates
            .iter()
            .map(|r| serde_json::json!({ "name": r.name, "rate": r.count, "period_s": r.period.as_secs_f64(), "burst": r.burst, "shadow": r.shadow }))
            .collect();
        let quotas: Vec<_> = rules
            .quotas
            .iter()
            .map(|q| serde_json::json!({ "name": q.name, "calls": q.calls, "upstream_ms": q.upstream_ms, "shadow": q.shadow }))
            .collect();
        serde_json::json!({
            "store": self.store.kind(),
            "rates": rates,
            "quotas": quotas,
            "reloads": { "succeeded": succeeded, "failed": failed, "last_error": last_error },
        })
    }

    /// What a check does while the store is unreachable.
    pub fn on_unavailable(&self) -> Unavailable {
        self.on_unavailable
    }

    /// The store the limits count in.
    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }

    /// Decide a call of `principal` to `target`.
    /// With `history`, the chain history under that key and the operator
    /// controls' generation are read in the same round trip (on Redis) and
    /// returned in [`Admitted::history`] and [`Admitted::controls`].
    pub async fn check(
        &self,
        principal: &Principal,
        target: &Target,
        history: Option<&str>,
    ) -> Result<Admitted, Refusal> {
        let rules = self.rules.load();
        let now_ms = now_us() / 1000;
        let rates: Vec<&RateRule> = rules.rates.iter().filter(|r| r.scope.covers(principal, target)).collect();
        let quotas: Vec<&QuotaRule> = rules.quotas.iter().filter(|q| q.scope.covers(principal, target)).collect();
        if rates.is_empty() && quotas.is_empty() && history.is_none() {
            return Ok(Admitted::default());
        }
        let mut admission =
            Admission { history: history.map(str::to_owned), controls: history.is_some(), ..Admission::default() };
        for rule in &rates {
            admission.rates.push(RateDemand {
                key: format!("rate:{}:{}", rule.name, rule.key.of(principal, target)),
                interval_us: rule.interval_us,
                burst: rule.burst,
                enforce: !rule.shadow,
            });
        }
        // A quota on calls and upstream time is two counters.
        let mut quota_of = Vec::new();
        let mut charges = Vec::new();
        for rule in &quotas {
            let (start, end) = rule.window.bounds(now_ms);
            let key = format!("quota:{}:{}:{start}", rule.name, rule.key.of(principal, target));
            let ttl_ms = end - now_ms + 60_000;
            if let Some(calls) = rule.calls {
                admission.quotas.push(QuotaDemand {
                    key: format!("{key}:calls"),
                    limit: calls,
                    cost: 1,
                    ttl_ms,
                    enforce: !rule.shadow,
                });
                quota_of.push((*rule, end, calls));
            }
            if let Some(upstream_ms) = rule.upstream_ms {
                let key = format!("{key}:upstream_ms");
                admission.quotas.push(QuotaDemand {
                    key: key.clone(),
                    limit: upstream_ms,
                    cost: 0,
                    ttl_ms,
                    enforce: !rule.shadow,
                });
                quota_of.push((*rule, end, upstream_ms));
                charges.push((key, ttl_ms));
            }
        }
        let (verdict, local_fallback) = match self.store.admit(&admission).await {
            Ok(verdict) => {
                self.metrics.state_check("ok");
                (verdict, false)
            }
            Err(StateError(error)) => match self.on_unavailable {
                Unavailable::Refuse => {
                    self.metrics.state_check("unavailable-refused");
                    tracing::warn!(%error, "the state store is unreachable: the call is refused (state.on_unavailable = \"refuse\")");
                    return Err(Refusal::Unavailable(error));
                }
                Unavailable::Local => {
                    self.metrics.state_check("unavailable-local");
                    tracing::warn!(%error, "the state store is unreachable: limits are decided on this replica's own counts");
                    (self.local.admit(&admission, now_us()), true)
                }
            },
        };
        let mut shadow_refusals = Vec::new();
        let mut refusal = None;
        let mut headline: Option<Headline> = None;
        // Each demand: its rule's state after the call, how it was decided,
        // and when to come back if it refused.
        let rates = rates.iter().zip(&verdict.rates).map(|(rule, answer)| {
            let state = Headline {
                name: rule.name.clone(),
                quota: rule.count,
                window_s: rule.period.as_secs().max(1),
                remaining: answer.remaining,
                reset_s: answer.wait_us.div_ceil(1_000_000),
                retry_after_s: None,
            };
            ("rate", rule.shadow, answer.conforms, answer.wait_us.div_ceil(1000), None, state)
        });
        let quotas = quota_of.iter().zip(&verdict.quotas).map(|((rule, end, limit), answer)| {
            let state = Headline {
                name: rule.name.clone(),
                quota: *limit,
                window_s: rule.window.length_s(now_ms),
                remaining: answer.remaining,
                reset_s: (end - now_ms).div_ceil(1000),
                retry_after_s: None,
            };
            ("quota", rule.shadow, answer.conforms, end - now_ms, Some(*end), state)
        });
        for (kind, shadow, conforms, retry_after_ms, resets_at_ms, state) in rates.chain(quotas) {
            match self.tally(&state.name, kind, shadow, conforms, verdict.admitted) {
                "shadow-refused" if !shadow_refusals.contains(&state.name) => shadow_refusals.push(state.name.clone()),
                "refused" if refusal.is_none() => {
                    let exceeded = state.exceeded(retry_after_ms, resets_at_ms);
                    refusal = Some(if kind == "rate" { Refusal::Rate(exceeded) } else { Refusal::Quota(exceeded) });
                }
                _ => {}
            }
            if !shadow && headline.as_ref().is_none_or(|h| state.remaining < h.remaining) {
                headline = Some(state);
            }
        }
        match refusal {
            Some(refusal) => Err(refusal),
            None if !verdict.admitted => Err(Refusal::Unavailable("the store refused without a reason".into())),
            None => Ok(Admitted {
                headline,
                shadow_refusals,
                local_fallback,
                charges,
                history: verdict.history,
                controls: verdict.controls,
            }),
        }
    }

    /// Add a finished call's upstream time to its upstream-time quotas.
    pub async fn charge(&self, admitted: &Admitted, upstream: Duration) {
        let ms = upstream.as_millis() as u64;
        for (key, ttl_ms) in &admitted.charges {
            if admitted.local_fallback {
                self.local.charge(key, ms, *ttl_ms, now_us());
            } else if let Err(error) = self.store.charge(key, ms, *ttl_ms).await {
                tracing::warn!(%error, key, "cannot charge upstream time to a quota");
            }
        }
    }

    /// Count one rule's decision; returns what it was.
    fn tally(&self, rule: &str, kind: &str, shadow: bool, conforms: bool, admitted: bool) -> &'static str {
        let result = match (conforms, shadow) {
            (true, _) => "admitted",
            (false, true) => "shadow-refused",
            (false, false) => "refused",
        };
        // A conforming rule of a refused call took nothing: it did not admit.
        if result != "admitted" || admitted {
            self.metrics.limit_decision(rule, kind, result);
        }
        result
    }
}
