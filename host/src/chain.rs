//! How plugins combine: an ordered chain, run hook by hook.
//!
//! - **on-call**: plugins run in order; the first deny ends the chain (later
//!   plugins do not run); a rewrite replaces the arguments the next plugin
//!   sees; an ask is remembered and the chain goes on, so a later deny still
//!   wins. The outcome is allow, ask (the first one), or deny.
//! - **on-result**: in order; the first deny ends the chain; rewrites feed the
//!   next plugin.
//! - **on-list** (tools) and **on-catalog** (resources, templates, prompts):
//!   in order; each plugin sees only the items earlier plugins left visible;
//!   hides remove, flags accumulate.
//!
//! A plugin that fails (trap, fuel, deadline, memory, bad output) denies with
//! code `policy-failed`, unless its link is `fail_open`, in which case the
//! failure is recorded and the plugin counts as having allowed. A plugin an
//! operator switched off (a kill switch) is not run and counts as failed.
//!
//! The gateway runs chains on [`Workers`], threads apart from the async
//! runtime; the methods here are synchronous and run where they are called.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

mod workers;

pub use workers::Workers;

use crate::engine::{
    Call, CallVerdict, Failure, Hook, Invocation, ListRequest, ListVerdict, ListedItem, ListedTool, Plugin,
    PluginError, ResultVerdict,
};

/// The denial code of a plugin that failed closed.
pub const POLICY_FAILED: &str = "policy-failed";

/// One plugin in a chain, with the settings the chain config gave it.
#[derive(Clone, Debug)]
pub struct Link {
    /// The compiled plugin.
    pub plugin: Plugin,
    /// Its configuration as JSON text, validated by the plugin at load time.
    pub config_json: String,
    /// Treat the plugin's failures as allow instead of deny.
    pub fail_open: bool,
    /// Where it came from (`builtin:rbac`, a file path, `pack:acme@1.2.0/rbac`),
    /// for status displays.
    pub source: String,
    /// The policy pack it came from, if any.
    pub pack: Option<Arc<crate::pack::Pack>>,
}

/// An ordered list of plugins. Immutable: a new config (or a plugin kill
/// switch) makes a new chain.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    links: Arc<[Link]>,
    /// Plugins switched off by an operator: name → (switch id, reason).
    off: Arc<BTreeMap<String, (String, String)>>,
}

/// Who refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's machine-readable code (`policy-failed` for a failure).
    pub code: String,
    /// The human-readable reason.
    pub reason: String,
}

/// A call that needs a human's approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    /// The plugin that asked.
    pub plugin: String,
    /// The question for the approver.
    pub prompt: String,
}

/// What the chain decided about a call. The call's arguments, rewritten as
/// the chain decided, are left in the `Call` passed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// Dispatch the call.
    Allow,
    /// Hold the call for approval.
    Ask(Approval),
    /// Refuse the call.
    Deny(Rejection),
}

/// What the chain decided about a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResultOutcome {
    /// Return this result (possibly rewritten) to the client.
    Allow(String),
    /// Withhold the result.
    Deny(Rejection),
}

/// What one item of a listing became.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Shown; the flags (plugin, reason) may be empty.
    Shown(Vec<(String, String)>),
    /// Hidden by a plugin, for a reason.
    Hidden(Rejection),
}

/// What one plugin did in one hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// Allowed (or showed everything).
    Allowed,
    /// Denied with this code and reason.
    Denied {
        /// The plugin's code.
        code: String,
        /// The plugin's reason.
        reason: String,
    },
    /// Rewrote the arguments or the result.
    Rewrote {
        /// The plugin's note on what changed.
        note: String,
    },
    /// Asked for approval.
    Asked {
        /// The question.
        prompt: String,
    },
    /// Filtered a listing.
    Listed {
        /// Tools hidden.
        hidden: usize,
        /// Tools flagged.
        flagged: usize,
    },
    /// Failed; with `fail_open` the chain went on as if it had allowed.
    Failed {
        /// The error, naming plugin, hook and limit.
        error: PluginError,
        /// Whether the failure was let through.
        fail_open: bool,
    },
}

/// One plugin invocation in a chain run: the trace for audit and for
/// `warden policy test`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The plugin's name.
    pub plugin: String,
    /// The hook that ran.
    pub hook: Hook,
    /// What it did.
    pub outcome: StepOutcome,
    /// Fuel it consumed (0 if it failed before reporting).
    pub fuel_used: u64,
    /// Wall-clock time it took.
    pub elapsed: Duration,
}

/// The chain's decision on a call, with the trace of how it got there.
#[must_use]
#[derive(Clone, Debug)]
pub struct CallDecision {
    /// Allow, ask or deny.
    pub outcome: CallOutcome,
    /// Every plugin invocation, in order.
    pub steps: Vec<Step>,
}

impl CallDecision {
    /// Whether a plugin rewrote the arguments.
    pub fn rewrote(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.outcome, StepOutcome::Rewrote { .. }))
    }
}

impl ResultDecision {
    /// Whether a plugin rewrote the result.
    pub fn rewrote(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.outcome, StepOutcome::Rewrote { .. }))
    }
}

/// The chain's decision on a result.
#[must_use]
#[derive(Clone, Debug)]
pub struct ResultDecision {
    /// The result to return, or the denial.
    pub outcome: ResultOutcome,
    /// Every plugin invocation, in order.
    pub steps: Vec<Step>,
}

/// The chain's decision on a listing: one visibility per item, in order.
#[must_use]
#[derive(Clone, Debug)]
pub struct ListDecision {
    /// What became of each item.
    pub items: Vec<Visibility>,
    /// Every plugin invocation, in order.
    pub steps: Vec<Step>,
}

impl Chain {
    /// A chain of these links, in this order.
    pub fn new(links: Vec<Link>) -> Self {
        Self { links: links.into(), off: Arc::default() }
    }

    /// The same chain with these plugins switched off (name → (switch id,
    /// reason)); any switched off before are on again unless named.
    pub fn switched_off(&self, off: BTreeMap<String, (String, String)>) -> Self {
        Self { links: Arc::clone(&self.links), off: Arc::new(off) }
    }

    /// The plugins switched off, by name: (switch id, reason).
    pub fn off(&self) -> &BTreeMap<String, (String, String)> {
        &self.off
    }

    /// Invoke `link` through `invoke`, unless it is switched off: then it
    /// fails, without running.
    fn invoke<T>(
        &self,
        link: &Link,
        hook: Hook,
        invoke: impl FnOnce() -> Result<Invocation<T>, PluginError>,
    ) -> Result<Invocation<T>, PluginError> {
        match self.off.get(link.plugin.name()) {
            None => invoke(),
            Some((id, reason)) => Err(PluginError {
                plugin: link.plugin.name().into(),
                hook,
                failure: Failure::SwitchedOff { id: id.clone(), reason: reason.clone() },
            }),
        }
    }

    /// The links, in order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The plugins' names, in order.
    pub fn plugin_names(&self) -> impl Iterator<Item = &str> {
        self.links.iter().map(|link| link.plugin.name())
    }

    /// Whether any plugin exports `hook`: without one, the gateway need not
    /// serialise what that hook would see.
    pub fn runs(&self, hook: Hook) -> bool {
        self.with_hook(hook).next().is_some()
    }

    fn with_hook(&self, hook: Hook) -> impl Iterator<Item = &Link> {
        self.links.iter().filter(move |link| link.plugin.hooks().has(hook))
    }

    /// Run `on-call` over the chain. Rewrites are applied to `call.arguments`.
    pub fn on_call(&self, call: &mut Call) -> CallDecision {
        let mut steps = Vec::new();
        let outcome = match self.run_call(call, &mut steps) {
            Ok(None) => CallOutcome::Allow,
            Ok(Some(approval)) => CallOutcome::Ask(approval),
            Err(rejection) => CallOutcome::Deny(rejection),
        };
        CallDecision { outcome, steps }
    }

    fn run_call(&self, call: &mut Call, steps: &mut Vec<Step>) -> Result<Option<Approval>, Rejection> {
        let mut approval = None;
        for link in self.with_hook(Hook::OnCall) {
            let _span = link.span(Hook::OnCall).entered();
            let invocation = self.invoke(link, Hook::OnCall, || link.plugin.on_call(&link.config_json, call));
            let Some((verdict, step)) = link.settle(Hook::OnCall, invocation, steps)? else { continue };
            match verdict {
                CallVerdict::Allow => step.record(StepOutcome::Allowed, steps),
                CallVerdict::Deny(d) => {
                    step.record(StepOutcome::Denied { code: d.code.clone(), reason: d.reason.clone() }, steps);
                    return Err(link.rejection(d.code, d.reason));
                }
                CallVerdict::Rewrite(r) => {
                    call.arguments = r.json;
                    step.record(StepOutcome::Rewrote { note: r.note }, steps);
                }
                CallVerdict::Ask(prompt) => {
                    step.record(StepOutcome::Asked { prompt: prompt.clone() }, steps);
                    approval.get_or_insert(Approval { plugin: link.plugin.name().to_owned(), prompt });
                }
            }
        }
        Ok(approval)
    }

    /// Run `on-result` over the chain for the result of `call`.
    pub fn on_result(&self, call: &Call, output: String) -> ResultDecision {
        let mut steps = Vec::new();
        let outcome = match self.run_result(call, output, &mut steps) {
            Ok(output) => ResultOutcome::Allow(output),
            Err(rejection) => ResultOutcome::Deny(rejection),
        };
        ResultDecision { outcome, steps }
    }

    fn run_result(&self, call: &Call, mut output: String, steps: &mut Vec<Step>) -> Result<String, Rejection> {
        for link in self.with_hook(Hook::OnResult) {
            let _span = link.span(Hook::OnResult).entered();
            let invocation =
                self.invoke(link, Hook::OnResult, || link.plugin.on_result(&link.config_json, call, &output));
            let Some((verdict, step)) = link.settle(Hook::OnResult, invocation, steps)? else { continue };
            match verdict {
                ResultVerdict::Allow => step.record(StepOutcome::Allowed, steps),
                ResultVerdict::Deny(d) => {
                    step.record(StepOutcome::Denied { code: d.code.clone(), reason: d.reason.clone() }, steps);
                    return Err(link.rejection(d.code, d.reason));
                }
                ResultVerdict::Rewrite(r) => {
                    output = r.json;
                    step.record(StepOutcome::Rewrote { note: r.note }, steps);
                }
            }
        }
        Ok(output)
    }

    /// Run `on-list` over the chain. `now_ms` is the request's timestamp.
    pub fn on_list(&self, request: &ListRequest, tools: &[ListedTool], now_ms: u64) -> ListDecision {
        self.listing(Hook::OnList, tools, |link, visible| {
            link.plugin.on_list(&link.config_json, request, visible, now_ms)
        })
    }

    /// Run on-catalog over a listing of resources, templates or prompts;
    /// the same rules as [`Chain::on_list`].
    pub fn on_catalog(&self, request: &ListRequest, items: &[ListedItem], now_ms: u64) -> ListDecision {
        self.listing(Hook::OnCatalog, items, |link, visible| {
            link.plugin.on_catalog(&link.config_json, request, visible, now_ms)
        })
    }

    fn listing<T: Clone>(
        &self,
        hook: Hook,
        items: &[T],
        invoke: impl Fn(&Link, &[T]) -> Result<Invocation<Vec<ListVerdict>>, PluginError>,
    ) -> ListDecision {
        let mut steps = Vec::new();
        let mut visibility: Vec<Visibility> = vec![Visibility::Shown(Vec::new()); items.len()];
        for link in self.with_hook(hook) {
            // Each plugin sees only what is still visible.
            let (indices, visible): (Vec<usize>, Vec<T>) = items
                .iter()
                .enumerate()
                .filter(|(i, _)| matches!(visibility[*i], Visibility::Shown(_)))
                .map(|(i, t)| (i, t.clone()))
                .unzip();
            if visible.is_empty() {
                break;
            }
            let _span = link.span(hook).entered();
            let invocation = self.invoke(link, hook, || invoke(link, &visible));
            let verdicts = match link.settle(hook, invocation, &mut steps) {
                Ok(Some((verdicts, step))) => {
                    let hidden = verdicts.iter().filter(|v| matches!(v, ListVerdict::Hide(_))).count();
                    let flagged = verdicts.iter().filter(|v| matches!(v, ListVerdict::Flag(_))).count();
                    step.record(StepOutcome::Listed { hidden, flagged }, &mut steps);
                    verdicts
                }
                Ok(None) => continue,
                // Failing closed on a listing hides everything still visible.
                Err(rejection) => {
                    for i in indices {
                        visibility[i] = Visibility::Hidden(rejection.clone());
                    }
                    continue;
                }
            };
            for (i, verdict) in indices.into_iter().zip(verdicts) {
                match verdict {
                    ListVerdict::Show => {}
                    ListVerdict::Hide(reason) => {
                        visibility[i] = Visibility::Hidden(link.rejection("hidden".into(), reason));
                    }
                    ListVerdict::Flag(reason) => {
                        if let Visibility::Shown(flags) = &mut visibility[i] {
                            flags.push((link.plugin.name().to_owned(), reason));
                        }
                    }
                }
            }
        }
        ListDecision { items: visibility, steps }
    }
}

/// A successful invocation's cost, waiting for its outcome to be recorded.
struct PendingStep {
    plugin: String,
    hook: Hook,
    fuel_used: u64,
    elapsed: Duration,
}

impl StepOutcome {
    /// One word: `allow`, `deny`, `rewrite`, `ask`, `list` or `failed`.
    pub fn verdict(&self) -> &'static str {
        match self {
            Self::Allowed => "allow",
            Self::Denied { .. } => "deny",
            Self::Rewrote { .. } => "rewrite",
            Self::Asked { .. } => "ask",
            Self::Listed { .. } => "list",
            Self::Failed { .. } => "failed",
        }
    }
}

/// Note a finished invocation on the plugin's span (the current one).
fn trace_step(step: &Step) {
    let span = tracing::Span::current();
    span.record("warden.plugin.verdict", step.outcome.verdict());
    // As i64: the OpenTelemetry bridge writes u64 values as strings.
    span.record("warden.plugin.fuel", step.fuel_used.min(i64::MAX as u64) as i64);
}

impl PendingStep {
    fn record(self, outcome: StepOutcome, steps: &mut Vec<Step>) {
        steps.push(Step {
            plugin: self.plugin,
            hook: self.hook,
            outcome,
            fuel_used: self.fuel_used,
            elapsed: self.elapsed,
        });
        trace_step(steps.last().expect("just pushed"));
    }
}

impl Link {
    /// The span of one invocation: `policy <plugin> <hook>`, with the
    /// verdict and fuel noted when it ends.
    fn span(&self, hook: Hook) -> tracing::Span {
        let name = self.plugin.name();
        tracing::info_span!(
            "plugin",
            otel.name = %format!("policy {name} {hook}"),
            warden.plugin.name = name,
            warden.plugin.hook = hook.as_str(),
            warden.plugin.verdict = tracing::field::Empty,
            warden.plugin.fuel = tracing::field::Empty,
        )
    }

    fn rejection(&self, code: String, reason: String) -> Rejection {
        Rejection { plugin: self.plugin.name().to_owned(), code, reason }
    }

    /// Turn an invocation into its verdict, or apply the fail mode: a failure
    /// is recorded, then either skipped (`Ok(None)`, fail open) or turned into
    /// a rejection (fail closed).
    fn settle<T>(
        &self,
        hook: Hook,
        invocation: Result<Invocation<T>, PluginError>,
        steps: &mut Vec<Step>,
    ) -> Result<Option<(T, PendingStep)>, Rejection> {
        match invocation {
            Ok(done) => Ok(Some((
                done.value,
                PendingStep {
                    plugin: self.plugin.name().to_owned(),
                    hook,
                    fuel_used: done.fuel_used,
                    elapsed: done.elapsed,
                },
            ))),
            Err(error) => {
                tracing::warn!(%error, fail_open = self.fail_open, "policy plugin failed");
                let reason = error.to_string();
                steps.push(Step {
                    plugin: self.plugin.name().to_owned(),
                    hook,
                    outcome: StepOutcome::Failed { error, fail_open: self.fail_open },
                    fuel_used: 0,
                    elapsed: Duration::ZERO,
                });
                trace_step(steps.last().expect("just pushed"));
                if self.fail_open { Ok(None) } else { Err(self.rejection(POLICY_FAILED.into(), reason)) }
            }
        }
    }
}

#[cfg(test)]
mod tests;
