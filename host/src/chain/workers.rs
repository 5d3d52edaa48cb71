//! The threads plugins run on, apart from the async runtime.
//!
//! A hook is synchronous and may run up to its deadline (100 ms by default,
//! and a chain has several). On a Tokio worker that time is taken from every
//! request queued behind it, so the gateway hands a chain run to these
//! threads and awaits its answer: a plugin that spins holds up its own
//! request and one of these threads, nothing else.
//!
//! The pool is fixed: one thread per core (at least two, so one plugin
//! spinning to its deadline leaves a thread for the rest). Plugins are pure
//! computation, so more threads would not run them faster, and every thread
//! that ever runs a plugin keeps the stack a deep guest touched and its
//! allocator caches: `tokio::task::block_in_place`, tried first, moved the
//! runtime's worker role to a new thread on every chain run and grew the
//! process by ~5 MiB per thread under load.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, mpsc},
    thread,
};

/// A job for a plugin thread.
type Job = Box<dyn FnOnce() + Send>;

/// Each plugin thread's stack: a guest may use up to the engine's
/// `max_wasm_stack` (1 MiB) on top of the host frames below it.
const STACK_BYTES: usize = 4 << 20;

/// A fixed set of threads that run chain runs for async callers. Cheap to
/// clone; the threads end when the last clone is dropped.
#[derive(Clone)]
pub struct Workers {
    jobs: mpsc::Sender<Job>,
    threads: usize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers").field("threads", &self.threads).finish_non_exhaustive()
    }
}

impl Workers {
    /// One thread per core, and at least two.
    pub fn for_this_machine() -> std::io::Result<Self> {
        Self::new(thread::available_parallelism().map_or(2, |n| n.get()).max(2))
    }

    /// `threads` threads, named `warden-plugin-<n>`.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            thread::Builder::new().name(format!("warden-plugin-{n}")).stack_size(STACK_BYTES).spawn(move || {
                loop {
                    // The lock is held only to take one job, not to run it.
                    let job = match queue.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return, // every sender is gone
                    };
                    // A panicking job drops its answer channel, so its caller
                    // learns of it; the thread goes on serving others.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { jobs, threads })
    }

    /// Run `job` on a plugin thread, inside the caller's tracing span (so a
    /// plugin's span stays a child of its request's), and wait for it
    /// without holding up the runtime. Jobs start in the order they come.
    ///
    /// If the caller is dropped while waiting, the job still runs to its
    /// end (plugins are bounded by their deadline) and its answer is dropped.
    pub async fn run<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) -> R {
        let span = tracing::Span::current();
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _entered = span.enter();
            let _ = answer.send(job());
        });
        self.jobs.send(job).expect("plugin threads live as long as their pool");
        match answered.await {
            Ok(value) => value,
            Err(_) => panic!("a chain run panicked on its plugin thread"),
        }
    }
}
