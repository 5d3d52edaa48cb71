//! The sandbox policy plugins run in.
//!
//! One [`Engine`] per process holds the wasmtime engine (pooling allocator, fuel
//! metering, epoch interruption driven by a ticker thread) and the linker. It
//! compiles components into [`Plugin`]s off the request path; a `Plugin` then
//! runs each hook in a fresh instance under that plugin's [`Limits`].
//!
//! The safe defaults for all of this live here and nowhere else.

mod bindings;
mod cache;
mod error;
mod plugin;
mod store;
mod ticker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use wasmtime::{
    Config, InstanceAllocationStrategy, PoolingAllocationConfig,
    component::{Component, Linker},
};

pub use bindings::types::{
    Call, CallVerdict, Denial, ItemKind, ListRequest, ListVerdict, ListedItem, ListedTool, PastCall, Principal,
    ResultVerdict, Rewrite, Target, TargetKind, ToolAnnotations,
};
pub use cache::CompileCache;

impl TargetKind {
    /// `tool`, `resource` or `prompt`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tool => "tool",
            Self::Resource => "resource",
            Self::Prompt => "prompt",
        }
    }
}
pub use error::{Failure, Hook, LoadError, PluginError};
pub use plugin::{Hooks, Invocation, Plugin};
use store::StoreState;

use ticker::{EPOCH_TICK, Ticker};
/// Bytes of each linear memory kept mapped between instances.
const KEEP_RESIDENT: usize = 2 << 20;
/// Compiled components kept in memory, by digest, so reloading a chain whose
/// plugins did not change (or only their config did) compiles nothing.
const COMPILED_CACHE_ENTRIES: usize = 64;

/// Resource limits for one plugin, applied to every hook invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, WebAssembly instructions) per invocation, instantiation included.
    pub fuel: u64,
    /// Wall-clock time per invocation, instantiation included.
    pub deadline: Duration,
    /// Linear memory the instance may hold, in bytes.
    pub memory_bytes: usize,
    /// The largest JSON a plugin may return in a rewrite, in bytes.
    pub max_output_bytes: usize,
}

impl Default for Limits {
    /// Generous for Rust plugins: a reference policy spends 20-100 thousand
    /// fuel on a call and about 40 million on a 64 KiB result; a runaway
    /// plugin still costs a request at most the 100 ms deadline.
    fn default() -> Self {
        Self {
            fuel: 200_000_000,
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            max_output_bytes: 16 << 20,
        }
    }
}

/// Process-wide engine settings (the `[engine]` table of the gateway config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineSettings {
    /// How many plugin instances may be alive at once across all requests.
    pub max_instances: u32,
    /// The largest linear memory any plugin may be given, in MiB; per-plugin
    /// memory limits must fit under it.
    pub max_memory_mib: u32,
    /// Where compiled code is kept between runs.
    pub cache: CompileCache,
    /// Meter fuel: every hook call gets its plugin's fuel budget, so the
    /// same input always stops at the same instruction, whatever the
    /// machine's load. Off, plugins are bounded by their deadline and
    /// memory only (fuel limits are then not enforced, and steps report
    /// 0 fuel), and run ~10-20% faster: the cost of the metering checks
    /// compiled into their code (bench/README.md).
    pub fuel: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { max_instances: 256, max_memory_mib: 1024, cache: CompileCache::default(), fuel: true }
    }
}

/// The compiled-code cache and runtime shared by every plugin.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

struct EngineInner {
    wasmtime: wasmtime::Engine,
    linker: Linker<StoreState>,
    settings: EngineSettings,
    compiled: Mutex<CompiledCache>,
    disk_cache: Option<wasmtime::Cache>,
    /// Advances the epoch while hooks run (deadlines are counted in its ticks).
    ticker: Arc<Ticker>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// Least-recently-inserted eviction is enough: entries are few and cheap to rebuild.
#[derive(Default)]
struct CompiledCache {
    by_digest: HashMap<String, Component>,
    order: VecDeque<String>,
}

impl Engine {
    /// Build the engine and start its epoch ticker (a thread that lives as long
    /// as the engine).
    pub fn new(settings: &EngineSettings) -> Result<Self, LoadError> {
        let engine_error = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let max_memory = (settings.max_memory_mib as usize) << 20;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(settings.max_instances)
            // Components from Python or JavaScript toolchains carry several core
            // modules, memories and large tables; Rust ones need one of each.
            .total_core_instances(settings.max_instances.saturating_mul(4))
            .total_memories(settings.max_instances.saturating_mul(2))
            .total_tables(settings.max_instances.saturating_mul(4))
            .max_core_instances_per_component(64)
            .max_memories_per_component(16)
            .max_tables_per_component(32)
            .max_memories_per_module(2)
            .max_tables_per_module(8)
            .table_elements(100_000)
            .max_core_instance_size(8 << 20)
            .max_component_instance_size(8 << 20)
            .max_memory_size(max_memory)
            .total_stacks(0);
        // A plugin's working set is small and touched on every call. Where the
        // kernel can report which pages an instance dirtied (PAGEMAP_SCAN,
        // Linux 6.7+), reset just those with memset and keep them mapped: no
        // madvise, no page faults on the next call. Measured in benches/chain.rs:
        // 60 µs → 26 µs per no-op plugin call. Without it, a blind memset of the
        // kept region costs more than the faults it saves, so keep nothing.
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT)
                .table_keep_resident(64 << 10);
        }

        let mut config = Config::new();
        config
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .consume_fuel(settings.fuel)
            .epoch_interruption(true)
            // Hooks are synchronous calls; the async machinery only costs time.
            .concurrency_support(false)
            .wasm_component_model(true)
            .max_wasm_stack(1 << 20)
            .parallel_compilation(true);
        // For profiling plugins with `perf` (bench/README.md, "Profiling
        // plugins"): wasmtime writes /tmp/perf-<pid>.map naming the compiled
        // code. A diagnostic, so an environment variable, not config.
        if std::env::var_os("WARDEN_PERF_MAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let disk_cache = cache::open(&settings.cache).map_err(LoadError::Engine)?;
        config.cache(disk_cache.clone());
        let wasmtime = wasmtime::Engine::new(&config).map_err(engine_error)?;

        let mut linker = Linker::new(&wasmtime);
        store::link(&mut linker).map_err(engine_error)?;

        let ticker = Ticker::start(wasmtime.weak())
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        Ok(Self {
            inner: Arc::new(EngineInner {
                wasmtime,
                linker,
                settings: settings.clone(),
                compiled: Mutex::default(),
                disk_cache,
                ticker,
            }),
        })
    }

    /// The settings the engine was built with.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    /// Components found compiled in the on-disk cache, and those compiled
    /// (and stored there) since the engine started; `None` without a cache.
    pub fn disk_cache_stats(&self) -> Option<(usize, usize)> {
        self.inner.disk_cache.as_ref().map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// Compile a component and prepare it for per-call instantiation. This is
    /// the slow step (tens to hundreds of milliseconds): keep it off the
    /// request path.
    pub fn load(&self, name: &str, bytes: &[u8], limits: Limits) -> Result<Plugin, LoadError> {
        Plugin::load(self, name, bytes, limits)
    }

    /// Compile `bytes`, or reuse the component compiled from the same digest.
    fn compile(&self, digest: &str, bytes: &[u8]) -> wasmtime::Result<Component> {
        if let Some(component) = self.inner.compiled.lock().unwrap().by_digest.get(digest) {
            return Ok(component.clone());
        }
        // Compile without holding the lock: it takes a while.
        let component = Component::new(&self.inner.wasmtime, bytes)?;
        let mut cache = self.inner.compiled.lock().unwrap();
        if cache.by_digest.insert(digest.to_owned(), component.clone()).is_none() {
            cache.order.push_back(digest.to_owned());
        }
        while cache.order.len() > COMPILED_CACHE_ENTRIES {
            if let Some(old) = cache.order.pop_front() {
                cache.by_digest.remove(&old);
            }
        }
        Ok(component)
    }

    /// Reject limits the engine cannot honour, before anything is compiled.
    fn check_limits(&self, name: &str, limits: &Limits) -> Result<(), LoadError> {
        let max = (self.inner.settings.max_memory_mib as usize) << 20;
        if limits.memory_bytes > max {
            return Err(LoadError::Limits {
                plugin: name.to_owned(),
                reason: format!(
                    "memory limit {} MiB is above the engine's max_memory_mib ({})",
                    limits.memory_bytes >> 20,
                    self.inner.settings.max_memory_mib
                ),
            });
        }
        if limits.fuel == 0 || limits.deadline.is_zero() || limits.memory_bytes == 0 {
            return Err(LoadError::Limits {
                plugin: name.to_owned(),
                reason: "fuel, deadline and memory must all be above zero".into(),
            });
        }
        Ok(())
    }
}

/// Epoch ticks that cover `deadline`, rounded up, plus one because the next
/// tick may land right after the deadline is set.
fn deadline_ticks(deadline: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (deadline.as_nanos().div_ceil(tick) as u64).saturating_add(1)
}

#[cfg(test)]
pub(crate) mod tests;
