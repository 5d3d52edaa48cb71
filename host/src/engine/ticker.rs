//! The epoch ticker: advances the engine's epoch while plugins run.
//!
//! Deadlines are counted in epoch ticks, so a plugin can only be stopped while
//! something advances the epoch. Ticking every millisecond for the life of the
//! process woke an idle gateway 1000 times a second; the ticker now parks once
//! no plugin has run for [`LINGER`], and the next hook call wakes it. Under
//! load it never parks, so a call pays nothing; after an idle spell the first
//! call pays one wake-up.

use std::{
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

/// How often the ticker advances the epoch; deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How long the ticker keeps ticking after the last hook call ended.
pub const LINGER: Duration = Duration::from_secs(1);

/// What the engine and its ticker thread share.
#[derive(Default)]
pub struct Ticker {
    /// Hook calls running now.
    running: AtomicUsize,
    /// Whether the ticker is parked (or about to be).
    parked: AtomicBool,
    /// The engine is gone: the thread ends.
    stopped: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
    /// Ticks so far, for tests and diagnostics.
    ticks: AtomicU64,
}

impl Ticker {
    /// Start the ticker thread for `engine`; it ends when the engine is dropped.
    pub fn start(engine: wasmtime::EngineWeak) -> std::io::Result<Arc<Self>> {
        let ticker = Arc::new(Self::default());
        let shared = Arc::clone(&ticker);
        thread::Builder::new().name("warden-epoch".into()).spawn(move || shared.run(&engine))?;
        Ok(ticker)
    }

    fn run(&self, engine: &wasmtime::EngineWeak) {
        let mut idle_since: Option<Instant> = None;
        loop {
            let Some(strong) = engine.upgrade().filter(|_| !self.stopped.load(Ordering::SeqCst)) else { return };
            strong.increment_epoch();
            drop(strong);
            self.ticks.fetch_add(1, Ordering::Relaxed);
            thread::sleep(EPOCH_TICK);
            if self.running.load(Ordering::SeqCst) > 0 {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < LINGER {
                continue;
            }
            // Park until a hook call starts. The flag goes up before the
            // check, and a caller counts itself before reading the flag, so
            // one of the two always sees the other.
            self.parked.store(true, Ordering::SeqCst);
            let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            while self.running.load(Ordering::SeqCst) == 0 {
                if self.stopped.load(Ordering::SeqCst) {
                    return;
                }
                guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            drop(guard);
            self.parked.store(false, Ordering::SeqCst);
            idle_since = None;
        }
    }

    /// A hook call is running until the guard is dropped: keep ticking.
    pub fn busy(&self) -> Busy<'_> {
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_one();
        }
        Busy(self)
    }

    /// End the thread (the engine is being dropped).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_one();
    }

    /// Ticks so far.
    #[cfg(test)]
    pub fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }
}

/// See [`Ticker::busy`].
pub struct Busy<'a>(&'a Ticker);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}
