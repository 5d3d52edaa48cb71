//! One compiled plugin: the three-step lifecycle (compile and link once,
//! validate config at load, instantiate per call) and the mapping of every
//! failure to a [`PluginError`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};
use wasmtime::{
    Store, Trap,
    component::{Instance, InstancePre},
};

use super::{
    Engine, Failure, Hook, Limits, LoadError, PluginError,
    bindings::{call_hook, catalog_hook, config, list_hook, result_hook, types},
    deadline_ticks,
    store::{self, StoreState},
};

/// Export names of the contract's interfaces, as components carry them.
/// Lookups are semver-compatible, so a component built for 0.1.0 is found by
/// its 0.1.0 names.
const CALL_HOOK: &str = "warden:policy/call-hook@0.1.1";
const RESULT_HOOK: &str = "warden:policy/result-hook@0.1.1";
const LIST_HOOK: &str = "warden:policy/list-hook@0.1.1";
const CATALOG_HOOK: &str = "warden:policy/catalog-hook@0.1.1";
const CONFIG: &str = "warden:policy/config@0.1.1";

/// Human-readable strings a plugin returns (reasons, prompts, notes) are cut to this.
const MAX_TEXT: usize = 1024;

/// A compiled, linked plugin, ready to run hooks. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

struct Inner {
    name: Arc<str>,
    digest: String,
    engine: Engine,
    pre: InstancePre<StoreState>,
    hooks: Hooks,
    limits: Limits,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("digest", &self.inner.digest)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// The hooks a component exports. Absent hooks are never called.
#[derive(Clone, Default)]
pub struct Hooks {
    call: Option<call_hook::GuestIndices>,
    result: Option<result_hook::GuestIndices>,
    list: Option<list_hook::GuestIndices>,
    catalog: Option<catalog_hook::GuestIndices>,
    config: Option<config::GuestIndices>,
}

impl Hooks {
    /// Whether the component exports `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        match hook {
            Hook::OnCall => self.call.is_some(),
            Hook::OnResult => self.result.is_some(),
            Hook::OnList => self.list.is_some(),
            Hook::OnCatalog => self.catalog.is_some(),
            Hook::ValidateConfig => self.config.is_some(),
        }
    }
}

/// A hook's verdict with what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation<T> {
    /// What the hook returned (already checked for shape and size).
    pub value: T,
    /// Fuel consumed, instantiation included (0 when the engine does not
    /// meter fuel).
    pub fuel_used: u64,
    /// Wall-clock time, instantiation included.
    pub elapsed: Duration,
}

impl Plugin {
    pub(super) fn load(engine: &Engine, name: &str, bytes: &[u8], limits: Limits) -> Result<Self, LoadError> {
        engine.check_limits(name, &limits)?;
        let contract = |reason: String| LoadError::Contract { plugin: name.to_owned(), reason };

        let digest = format!("{:x}", Sha256::digest(bytes));
        let component = engine
            .compile(&digest, bytes)
            .map_err(|e| LoadError::Compile { plugin: name.to_owned(), reason: format!("{e:#}") })?;
        let mut linker = engine.inner.linker.clone();
        store::stub_unknown_imports(&mut linker, &engine.inner.wasmtime, &component)
            .map_err(|e| contract(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| contract(format!("imports do not fit: {e:#}")))?;

        // An interface that is absent means "hook not implemented"; one that is
        // present but malformed is an error, never silently skipped.
        fn indices<I>(
            pre: &InstancePre<StoreState>,
            export: &str,
            new: fn(&InstancePre<StoreState>) -> wasmtime::Result<I>,
        ) -> Result<Option<I>, String> {
            if pre.component().get_export_index(None, export).is_none() {
                return Ok(None);
            }
            new(pre).map(Some).map_err(|e| format!("export {export} does not match the contract: {e:#}"))
        }
        let hooks = Hooks {
            call: indices(&pre, CALL_HOOK, call_hook::GuestIndices::new).map_err(contract)?,
            result: indices(&pre, RESULT_HOOK, result_hook::GuestIndices::new).map_err(contract)?,
            list: indices(&pre, LIST_HOOK, list_hook::GuestIndices::new).map_err(contract)?,
            catalog: indices(&pre, CATALOG_HOOK, catalog_hook::GuestIndices::new).map_err(contract)?,
            config: indices(&pre, CONFIG, config::GuestIndices::new).map_err(contract)?,
        };
        if ![Hook::OnCall, Hook::OnResult, Hook::OnList, Hook::OnCatalog].into_iter().any(|h| hooks.has(h)) {
            return Err(contract(format!(
                "exports none of {CALL_HOOK}, {RESULT_HOOK}, {LIST_HOOK}, {CATALOG_HOOK}; \
                 is it built for a warden:policy world?"
            )));
        }

        let plugin =
            Self { inner: Arc::new(Inner { name: name.into(), digest, engine: engine.clone(), pre, hooks, limits }) };
        plugin.smoke_test().map_err(contract)?;
        Ok(plugin)
    }

    /// Instantiate once and type-check every export the plugin has, so a
    /// mismatch shows at load time rather than on the first request.
    fn smoke_test(&self) -> Result<(), String> {
        let hooks = &self.inner.hooks;
        self.invoke(Hook::ValidateConfig, "load", 0, |store, instance| {
            if let Some(i) = &hooks.call {
                i.load(&mut *store, instance)?;
            }
            if let Some(i) = &hooks.result {
                i.load(&mut *store, instance)?;
            }
            if let Some(i) = &hooks.list {
                i.load(&mut *store, instance)?;
            }
            if let Some(i) = &hooks.catalog {
                i.load(&mut *store, instance)?;
            }
            if let Some(i) = &hooks.config {
                i.load(&mut *store, instance)?;
            }
            Ok(())
        })
        .map(|_| ())
        .map_err(|e| format!("instantiating it failed: {}", e.failure))
    }

    /// The plugin's name in the chain config.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// SHA-256 of the component bytes, hex-encoded.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// The hooks the component exports.
    pub fn hooks(&self) -> &Hooks {
        &self.inner.hooks
    }

    /// The limits every invocation runs under.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Run `validate-config`. A plugin without it accepts any config.
    pub fn validate_config(&self, config_json: &str) -> Result<(), LoadError> {
        let Some(indices) = &self.inner.hooks.config else {
            return Ok(());
        };
        let outcome = self.invoke(Hook::ValidateConfig, "validate-config", 0, |store, instance| {
            indices.load(&mut *store, instance)?.call_validate_config(&mut *store, config_json)
        })?;
        outcome.value.map_err(|problems| LoadError::Config {
            plugin: self.name().to_owned(),
            problems: problems.into_iter().map(|p| truncate(p, MAX_TEXT)).collect(),
        })
    }

    /// Run `on-call`. Panics if the plugin does not export it: check
    /// [`Hooks::has`] first.
    pub fn on_call(
        &self,
        config_json: &str,
        call: &types::Call,
    ) -> Result<Invocation<types::CallVerdict>, PluginError> {
        let indices = self.inner.hooks.call.as_ref().expect("plugin exports on-call");
        let mut outcome = self.invoke(Hook::OnCall, &call.request_id, call.timestamp_ms, |store, instance| {
            indices.load(&mut *store, instance)?.call_on_call(&mut *store, config_json, call)
        })?;
        outcome.value = match outcome.value {
            types::CallVerdict::Allow => types::CallVerdict::Allow,
            types::CallVerdict::Deny(d) => types::CallVerdict::Deny(tidy_denial(d)),
            types::CallVerdict::Ask(prompt) => types::CallVerdict::Ask(truncate(prompt, MAX_TEXT)),
            types::CallVerdict::Rewrite(r) => {
                types::CallVerdict::Rewrite(self.checked_rewrite(Hook::OnCall, r, "arguments")?)
            }
        };
        Ok(outcome)
    }

    /// Run `on-result`. Panics if the plugin does not export it.
    pub fn on_result(
        &self,
        config_json: &str,
        call: &types::Call,
        output: &str,
    ) -> Result<Invocation<types::ResultVerdict>, PluginError> {
        let indices = self.inner.hooks.result.as_ref().expect("plugin exports on-result");
        let mut outcome = self.invoke(Hook::OnResult, &call.request_id, call.timestamp_ms, |store, instance| {
            indices.load(&mut *store, instance)?.call_on_result(&mut *store, config_json, call, output)
        })?;
        outcome.value = match outcome.value {
            types::ResultVerdict::Allow => types::ResultVerdict::Allow,
            types::ResultVerdict::Deny(d) => types::ResultVerdict::Deny(tidy_denial(d)),
            types::ResultVerdict::Rewrite(r) => {
                types::ResultVerdict::Rewrite(self.checked_rewrite(Hook::OnResult, r, "result")?)
            }
        };
        Ok(outcome)
    }

    /// Run `on-list`. Panics if the plugin does not export it.
    pub fn on_list(
        &self,
        config_json: &str,
        request: &types::ListRequest,
        tools: &[types::ListedTool],
        now_ms: u64,
    ) -> Result<Invocation<Vec<types::ListVerdict>>, PluginError> {
        let indices = self.inner.hooks.list.as_ref().expect("plugin exports on-list");
        let outcome = self.invoke(Hook::OnList, &request.request_id, now_ms, |store, instance| {
            indices.load(&mut *store, instance)?.call_on_list(&mut *store, config_json, request, tools)
        })?;
        self.checked_verdicts(Hook::OnList, outcome, tools.len(), "tools")
    }

    /// Run `on-catalog`. Panics if the plugin does not export it.
    pub fn on_catalog(
        &self,
        config_json: &str,
        request: &types::ListRequest,
        items: &[types::ListedItem],
        now_ms: u64,
    ) -> Result<Invocation<Vec<types::ListVerdict>>, PluginError> {
        let indices = self.inner.hooks.catalog.as_ref().expect("plugin exports on-catalog");
        let outcome = self.invoke(Hook::OnCatalog, &request.request_id, now_ms, |store, instance| {
            indices.load(&mut *store, instance)?.call_on_catalog(&mut *store, config_json, request, items)
        })?;
        self.checked_verdicts(Hook::OnCatalog, outcome, items.len(), "items")
    }

    /// A listing hook must return one verdict per item; reasons are cut to size.
    fn checked_verdicts(
        &self,
        hook: Hook,
        mut outcome: Invocation<Vec<types::ListVerdict>>,
        items: usize,
        what: &str,
    ) -> Result<Invocation<Vec<types::ListVerdict>>, PluginError> {
        if outcome.value.len() != items {
            let failure = Failure::BadOutput(format!("{} verdicts for {items} {what}", outcome.value.len()));
            return Err(self.error(hook, failure));
        }
        for verdict in &mut outcome.value {
            if let types::ListVerdict::Hide(text) | types::ListVerdict::Flag(text) = verdict {
                *text = truncate(std::mem::take(text), MAX_TEXT);
            }
        }
        Ok(outcome)
    }

    /// A rewrite must be a JSON object within the output limit.
    fn checked_rewrite(
        &self,
        hook: Hook,
        mut rewrite: types::Rewrite,
        what: &str,
    ) -> Result<types::Rewrite, PluginError> {
        let max = self.inner.limits.max_output_bytes;
        if rewrite.json.len() > max {
            return Err(self
                .error(hook, Failure::BadOutput(format!("a rewrite of {} bytes (limit {max})", rewrite.json.len()))));
        }
        // Validated without building it: the rewrite is parsed again where it
        // is used, and a tree of a 64 KiB result costs more than the check.
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&rewrite.json) {
            return Err(self.error(hook, Failure::BadOutput(format!("{what} that are not valid JSON: {e}"))));
        }
        if !rewrite.json.trim_start().starts_with('{') {
            return Err(self.error(hook, Failure::BadOutput(format!("{what} that are not a JSON object"))));
        }
        rewrite.note = truncate(rewrite.note, MAX_TEXT);
        Ok(rewrite)
    }

    fn error(&self, hook: Hook, failure: Failure) -> PluginError {
        PluginError { plugin: self.inner.name.clone(), hook, failure }
    }

    /// Instantiate in a fresh store under the plugin's limits, run `body`,
    /// drop the store (a trapped store is never reused), and say what happened.
    fn invoke<R>(
        &self,
        hook: Hook,
        request_id: &str,
        now_ms: u64,
        body: impl FnOnce(&mut Store<StoreState>, &Instance) -> wasmtime::Result<R>,
    ) -> Result<Invocation<R>, PluginError> {
        let limits = self.inner.limits;
        let started = Instant::now();
        let state = StoreState::new(self.inner.name.clone(), request_id.to_owned(), limits.memory_bytes, now_ms);
        let mut store = Store::new(&self.inner.engine.inner.wasmtime, state);
        store.limiter(|state| state.limiter());
        let metered = self.inner.engine.settings().fuel;
        if metered {
            store.set_fuel(limits.fuel).expect("fuel metering is enabled on the engine");
        }
        // The ticker must run while this store does, or the deadline never comes.
        let _ticking = self.inner.engine.inner.ticker.busy();
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        store.epoch_deadline_trap();

        let result = match self.inner.pre.instantiate(&mut store) {
            Ok(instance) => body(&mut store, &instance).map_err(|e| self.classify(&store, e, false)),
            Err(e) => Err(self.classify(&store, e, true)),
        };
        let fuel_used = if metered { limits.fuel - store.get_fuel().unwrap_or(0) } else { 0 };
        let elapsed = started.elapsed();
        match result {
            Ok(value) => Ok(Invocation { value, fuel_used, elapsed }),
            Err(failure) => Err(self.error(hook, failure)),
        }
    }

    fn classify(&self, store: &Store<StoreState>, error: wasmtime::Error, instantiating: bool) -> Failure {
        let limits = &self.inner.limits;
        if store.data().memory_exceeded() {
            return Failure::Memory { limit: limits.memory_bytes };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Failure::OutOfFuel { limit: limits.fuel },
            Some(Trap::Interrupt) => Failure::Deadline { limit: limits.deadline },
            Some(Trap::StackOverflow) => Failure::StackOverflow,
            Some(trap) => Failure::Trap(match store.data().stderr_text() {
                Some(stderr) => format!("{trap} ({stderr})"),
                None => trap.to_string(),
            }),
            // Every pooled instance is in use by calls in flight: say which
            // setting bounds them, not the allocator's internals.
            None if error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() => {
                Failure::Busy { limit: self.inner.engine.settings().max_instances }
            }
            None if instantiating => Failure::Instantiate(format!("{error:#}")),
            None => Failure::Trap(format!("{error:#}")),
        }
    }
}

fn tidy_denial(denial: types::Denial) -> types::Denial {
    let code = if denial.code.trim().is_empty() { "denied".to_owned() } else { denial.code };
    types::Denial { code: truncate(code, 64), reason: truncate(denial.reason, MAX_TEXT) }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
