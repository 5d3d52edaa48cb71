//! Per-invocation state: what a plugin instance can reach, which is nearly nothing.
//!
//! Toolchains import WASI even for plugins that never do I/O (Rust's standard
//! library seeds its hash maps from `wasi:random`, and writes panic messages to
//! stderr), so WASI is linked, but with a context that grants nothing: no
//! files, sockets, environment or arguments, an empty stdin, a frozen clock and
//! deterministic random numbers. Standard error is captured (bounded) so a
//! panic message can be quoted in the error. Any other import is linked as a
//! trap.

use std::sync::Arc;

use rand::{SeedableRng, rngs::StdRng};
use wasmtime::{
    ResourceLimiter,
    component::{
        Component, HasSelf, Linker, LinkerInstance, Resource, ResourceTable, ResourceType, types::ComponentItem,
    },
};
use wasmtime_wasi::{
    WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
    clocks::{HostMonotonicClock, HostWallClock},
    p2::pipe::MemoryOutputPipe,
};

use super::bindings::{types::LogLevel, warden::policy::host};

/// How much of a plugin's stderr is kept.
const STDERR_CAPACITY: usize = 4096;
/// Log lines one invocation may write; the rest are counted and dropped.
const MAX_LOG_LINES: u32 = 32;
/// Characters kept of one log line.
const MAX_LOG_LINE: usize = 1024;

/// Everything a store holds for one hook invocation.
pub(super) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    stderr: MemoryOutputPipe,
    memory: MemoryLimiter,
    plugin: Arc<str>,
    request_id: String,
    log_lines: u32,
}

impl StoreState {
    /// `now_ms` is what the plugin's wall clock will say for the whole invocation.
    pub(super) fn new(plugin: Arc<str>, request_id: String, memory_bytes: usize, now_ms: u64) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenClock(now_ms))
            .monotonic_clock(FrozenClock(now_ms))
            .secure_random(StdRng::seed_from_u64(0))
            .insecure_random(StdRng::seed_from_u64(0))
            .insecure_random_seed(0)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            stderr,
            memory: MemoryLimiter { limit: memory_bytes, exceeded: false },
            plugin,
            request_id,
            log_lines: 0,
        }
    }

    pub(super) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.memory
    }

    /// Whether the instance tried to grow past its memory limit.
    pub(super) fn memory_exceeded(&self) -> bool {
        self.memory.exceeded
    }

    /// What the plugin wrote to stderr (a Rust panic message, say) on one
    /// line, without the standard library's hint about backtraces.
    pub(super) fn stderr_text(&self) -> Option<String> {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        (!lines.is_empty()).then(|| truncate(&lines.join(" "), 512).to_owned())
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: LogLevel, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            if self.log_lines == MAX_LOG_LINES + 1 {
                tracing::warn!(plugin = %self.plugin, request = %self.request_id, "plugin log limit reached; dropping further lines");
            }
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE);
        let (plugin, request) = (&*self.plugin, &self.request_id);
        match level {
            LogLevel::Debug => tracing::debug!(plugin, request, message),
            LogLevel::Info => tracing::info!(plugin, request, message),
            LogLevel::Warn => tracing::warn!(plugin, request, message),
            LogLevel::Error => tracing::error!(plugin, request, message),
        }
    }
}

/// Link what plugins may import: `warden:policy/host`, WASI with the empty
/// context above. Imports beyond those are linked per component as traps
/// ([`stub_unknown_imports`]).
pub(super) fn link(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    host::add_to_linker::<StoreState, HasSelf<StoreState>>(linker, |state| state)?;
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    // Replace WASI's synchronous streams and polls with ones that never wait.
    linker.allow_shadowing(true);
    streams::add_to_linker::<StoreState, Unblocked>(linker, |state| Never(&mut state.table))?;
    poll::add_to_linker::<StoreState, Unblocked>(linker, |state| Never(&mut state.table))?;
    linker.allow_shadowing(false);
    Ok(())
}

/// `wasi:io/streams` and `wasi:io/poll` without waiting.
///
/// wasmtime-wasi's synchronous bindings run their blocking operations (a
/// stream's `blocking-write-and-flush` and resource drop, `poll`) by blocking
/// on the Tokio runtime, which panics on a runtime thread: a plugin that
/// wrote to stderr (every Rust panic does) took its request down with it.
/// Nothing a plugin can reach ever has to wait — stdout and stderr are
/// bounded memory pipes, stdin is empty, the clocks are frozen — so these
/// answer at once instead, and every pollable is ready.
struct Unblocked;

impl wasmtime::component::HasData for Unblocked {
    type Data<'a> = Never<'a>;
}

/// The store's resource table, seen through [`Unblocked`].
struct Never<'a>(&'a mut ResourceTable);

use wasmtime_wasi::p2::{
    DynPollable, StreamError, StreamResult,
    bindings::sync::io::{
        poll,
        streams::{self, InputStream, OutputStream},
    },
};

impl Never<'_> {
    /// Write all of `bytes` (as much as the pipe takes: a full pipe is
    /// closed), then flush.
    fn write_all(&mut self, stream: &Resource<OutputStream>, bytes: &[u8]) -> StreamResult<()> {
        let stream = self.0.get_mut(stream).map_err(|e| StreamError::Trap(e.into()))?;
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = stream.check_write()?;
            if room == 0 {
                return Err(StreamError::Closed);
            }
            let (now, later) = rest.split_at(room.min(rest.len()));
            stream.write(bytes::Bytes::copy_from_slice(now))?;
            rest = later;
        }
        stream.flush()
    }
}

impl streams::Host for Never<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(self.0, err)
    }
}

impl streams::HostOutputStream for Never<'_> {
    fn drop(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<()> {
        self.0.delete(stream)?;
        Ok(())
    }
    fn check_write(&mut self, stream: Resource<OutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(self.0, stream)
    }
    fn write(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(self.0, stream, bytes)
    }
    fn blocking_write_and_flush(&mut self, stream: Resource<OutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        self.write_all(&stream, &bytes)
    }
    fn blocking_write_zeroes_and_flush(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        let zeroes = vec![0; usize::try_from(len).unwrap_or(usize::MAX).min(STDERR_CAPACITY)];
        self.write_all(&stream, &zeroes)
    }
    fn subscribe(&mut self, stream: Resource<OutputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(self.0, stream)
    }
    fn write_zeroes(&mut self, stream: Resource<OutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(self.0, stream, len)
    }
    fn flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }
    fn blocking_flush(&mut self, stream: Resource<OutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(self.0, stream)
    }
    fn splice(&mut self, dst: Resource<OutputStream>, src: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }
    fn blocking_splice(
        &mut self,
        dst: Resource<OutputStream>,
        src: Resource<InputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(self.0, dst, src, len)
    }
}

impl streams::HostInputStream for Never<'_> {
    fn drop(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<()> {
        self.0.delete(stream)?;
        Ok(())
    }
    fn read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }
    fn blocking_read(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(self.0, stream, len)
    }
    fn skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }
    fn blocking_skip(&mut self, stream: Resource<InputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(self.0, stream, len)
    }
    fn subscribe(&mut self, stream: Resource<InputStream>) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(self.0, stream)
    }
}

impl poll::Host for Never<'_> {
    /// Everything is ready at once: with frozen clocks a timer never fires
    /// otherwise, and nothing else a plugin holds ever waits.
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        Ok((0..pollables.len() as u32).collect())
    }
}

impl poll::HostPollable for Never<'_> {
    fn ready(&mut self, _pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        Ok(true)
    }
    fn block(&mut self, _pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        Ok(())
    }
    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(self.0, pollable)
    }
}

/// Interfaces [`link`] provides, as import-name prefixes (any 0.2 / 0.1 patch
/// version resolves to the linked one by semver).
const LINKED: [&str; 7] = [
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "warden:policy/host@0.1.",
];

/// Link every import of `component` that [`link`] does not provide as a
/// function that traps when called, so toolchains that import more than they
/// use (`wasi:http` from JavaScript, say) still load.
///
/// `Linker::define_unknown_imports_as_traps` would do this, but in wasmtime 48
/// it stubs by exact name and so shadows the semver-compatible WASI the linker
/// already has (a component importing `wasi:clocks/wall-clock@0.2.6` gets a
/// trap instead of the linked 0.2.12).
pub(super) fn stub_unknown_imports(
    linker: &mut Linker<StoreState>,
    engine: &wasmtime::Engine,
    component: &Component,
) -> wasmtime::Result<()> {
    let ty = component.component_type();
    for (name, import) in ty.imports(engine) {
        let linked = LINKED
            .iter()
            .any(|prefix| name.starts_with(prefix) && (prefix.starts_with("warden:") || name.contains("@0.2.")));
        if linked {
            continue;
        }
        match import.ty {
            ComponentItem::ComponentInstance(instance) => {
                let mut stubs = linker.instance(name)?;
                for (item, export) in instance.exports(engine) {
                    stub(&mut stubs, name, item, export.ty)?;
                }
            }
            other => stub(&mut linker.root(), "", name, other)?,
        }
    }
    Ok(())
}

fn stub(
    linker: &mut LinkerInstance<'_, StoreState>,
    parent: &str,
    name: &str,
    item: ComponentItem,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            let qualified = if parent.is_empty() { name.to_owned() } else { format!("{parent}#{name}") };
            linker.func_new(name, move |_, _, _, _| {
                wasmtime::bail!("called `{qualified}`, which policy plugins are not granted")
            })
        }
        ComponentItem::Resource(_) => linker.resource(name, ResourceType::host::<()>(), |_, _| Ok(())),
        ComponentItem::Type(_) => Ok(()),
        _ => wasmtime::bail!("cannot link import `{name}`: only functions and resources can be stubbed"),
    }
}

/// Enforces a plugin's memory limit and remembers that it did, so the error can
/// say "memory limit" rather than a generic trap.
struct MemoryLimiter {
    limit: usize,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            // An error (not `Ok(false)`) traps the instance at once instead of
            // letting `memory.grow` return -1 for the plugin to mishandle.
            wasmtime::bail!("memory limit of {} bytes reached (asked for {desired})", self.limit);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// A clock that always reads the same time.
struct FrozenClock(u64);

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> std::time::Duration {
        std::time::Duration::from_millis(1)
    }

    fn now(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        self.0.saturating_mul(1_000_000)
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
