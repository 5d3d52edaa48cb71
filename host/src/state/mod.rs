//! Shared state: the one seam behind which everything that must hold across
//! gateway replicas lives — rate limits, quotas, usage counts, chain
//! history and operator controls (kill switches).
//!
//! Two backends answer the same questions with the same semantics:
//! - [`memory`]: in this process (the embedded default; nothing to run);
//! - [`redis`]: in a Redis server shared by every replica. Each admission is
//!   one server-side script (`admit.lua`), so a limit is exact across
//!   replicas: nothing is read, decided here and written back.
//!
//! Keys are namespaced by `[state] prefix` and expire on their own, except
//! operator controls, which last until an operator removes them (in memory
//! they are kept in `[state] file`, so they survive a restart too).
//!
//! The unit of work is an [`Admission`] request: a call's rate buckets and
//! quota counters, decided together — the call takes from all of them or
//! from none. Shadow demands are answered but never refuse.

pub mod memory;
pub mod redis;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

use crate::engine::PastCall;

/// `[state]`: where shared state lives.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSettings {
    /// A Redis URL (`redis://`, `rediss://` for TLS, with user and password
    /// if the server wants them); `None`: in this process.
    pub redis: Option<String>,
    /// A CA certificate (PEM) to trust for `rediss://` instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// The namespace of every key.
    pub prefix: String,
    /// What a limit check does while Redis cannot be reached.
    pub on_unavailable: Unavailable,
    /// How long a Redis command may take before it counts as unreachable.
    pub timeout: Duration,
    /// How long usage counts are kept.
    pub usage_retention: Duration,
    /// Where the in-memory store keeps what must survive a restart
    /// (operator controls); unused with Redis, which keeps them itself.
    pub file: Option<PathBuf>,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self {
            redis: None,
            ca_pem: None,
            prefix: "warden".into(),
            on_unavailable: Unavailable::Refuse,
            timeout: Duration::from_millis(500),
            usage_retention: Duration::from_secs(90 * 86_400),
            file: None,
        }
    }
}

/// What a limit check does while the shared store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Refuse the call (fail closed).
    Refuse,
    /// Decide on this replica's own counts (limits then hold per replica).
    Local,
}

/// One rate bucket a call draws from (GCRA: a call is due every
/// `interval_us`, and up to `burst` may come at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateDemand {
    /// The bucket's key, without the namespace.
    pub key: String,
    /// Microseconds between calls at the sustained rate.
    pub interval_us: u64,
    /// Calls that may come at once.
    pub burst: u64,
    /// Whether a refusal counts (false: shadow, only reported).
    pub enforce: bool,
}

/// One quota counter a call draws from, in the current window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaDemand {
    /// The counter's key (including its window), without the namespace.
    pub key: String,
    /// The most the counter may reach in the window.
    pub limit: u64,
    /// What this call adds (0: only check that some is left, e.g. for
    /// upstream time, which is added after the call by [`StateStore::charge`]).
    pub cost: u64,
    /// How long the counter must live (until its window ends, and a little).
    pub ttl_ms: u64,
    /// Whether a refusal counts (false: shadow, only reported).
    pub enforce: bool,
}

/// What one call asks of the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Admission {
    /// Rate buckets.
    pub rates: Vec<RateDemand>,
    /// Quota counters.
    pub quotas: Vec<QuotaDemand>,
    /// A chain history to read in the same round trip (its key, see
    /// [`StateStore::history`]); Redis only: in memory, the gateway keeps
    /// history itself.
    pub history: Option<String>,
    /// Read the operator controls' generation in the same round trip, so a
    /// replica learns of a kill switch set elsewhere by the next call
    /// (Redis only: in memory, this process set it).
    pub controls: bool,
}

/// How one demand stood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Whether it had room for the call.
    pub conforms: bool,
    /// Calls (or quota units) left after this one.
    pub remaining: u64,
    /// For a rate: microseconds until it has room (refused) or until it is
    /// full again (admitted). For a quota: unused (the window says when).
    pub wait_us: u64,
}

/// The store's verdict on an [`Admission`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether every enforced demand conformed, so the call was taken from
    /// them (and from each conforming shadow demand).
    pub admitted: bool,
    /// Answers to `rates`, in order.
    pub rates: Vec<Answer>,
    /// Answers to `quotas`, in order.
    pub quotas: Vec<Answer>,
    /// The history asked for, oldest first (`None` if none was asked for).
    pub history: Option<Vec<PastCall>>,
    /// The operator controls' generation, if asked for.
    pub controls: Option<u64>,
}

/// One table of operator controls (say, the kill switches): entries by id,
/// as JSON text, and the generation of all controls, bumped on every change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// Bumped on every change to any table.
    pub generation: u64,
    /// Entries by id.
    pub entries: BTreeMap<String, String>,
}

/// Usage of one tenant on one upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Requests routed to the upstream (admitted or refused).
    pub calls: u64,
    /// Of those, refused by the gateway or failed upstream.
    pub refused: u64,
    /// Time spent in the upstream, microseconds.
    pub upstream_us: u64,
}

impl Usage {
    /// Add `other` to this.
    pub fn add(&mut self, other: &Usage) {
        self.calls += other.calls;
        self.refused += other.refused;
        self.upstream_us += other.upstream_us;
    }
}

/// Usage by (hour since the epoch, tenant, upstream).
pub type UsageTable = BTreeMap<(u64, String, String), Usage>;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the state store is unreachable: {0}")]
pub struct StateError(pub String);

/// The store: in this process or in Redis.
pub enum StateStore {
    /// In this process.
    Memory(memory::MemoryStore),
    /// In Redis.
    Redis(redis::RedisStore),
}

impl StateStore {
    /// Open the store `settings` name. Redis must answer now: a gateway that
    /// starts without its shared state would enforce nothing it promised.
    /// In memory, the controls saved in `settings.file` are read back; a file
    /// that cannot be read is an error (the switches in it would be lost).
    pub async fn open(settings: &StateSettings) -> Result<Self, StateError> {
        match &settings.redis {
            None => Ok(Self::Memory(memory::MemoryStore::open(settings.file.clone())?)),
            Some(url) => Ok(Self::Redis(redis::RedisStore::connect(url, settings).await?)),
        }
    }

    /// `redis` or `memory`, for status and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Decide `admission` atomically.
    pub async fn admit(&self, admission: &Admission) -> Result<Verdict, StateError> {
        match self {
            Self::Memory(store) => Ok(store.admit(admission, now_us())),
            Self::Redis(store) => store.admit(admission).await,
        }
    }

    /// Add `amount` to a quota counter (upstream time, after the call).
    pub async fn charge(&self, key: &str, amount: u64, ttl_ms: u64) -> Result<(), StateError> {
        match self {
            Self::Memory(store) => {
                store.charge(key, amount, ttl_ms, now_us());
                Ok(())
            }
            Self::Redis(store) => store.charge(key, amount, ttl_ms).await,
        }
    }

    /// Add usage counts.
    pub async fn add_usage(&self, table: &UsageTable) -> Result<(), StateError> {
        match self {
            Self::Memory(store) => {
                store.add_usage(table);
                Ok(())
            }
            Self::Redis(store) => store.add_usage(table).await,
        }
    }

    /// The chain history under `key`, oldest first (Redis only: in memory,
    /// the gateway keeps history itself, bounded by `[sessions]`).
    pub async fn history(&self, key: &str) -> Result<Vec<PastCall>, StateError> {
        match self {
            Self::Memory(_) => Err(not_shared()),
            Self::Redis(store) => store.history(key).await,
        }
    }

    /// Append a call to the history under `key`, keeping the last `keep`,
    /// for `ttl` after the last call.
    pub async fn remember(&self, key: &str, call: &PastCall, keep: usize, ttl: Duration) -> Result<(), StateError> {
        match self {
            Self::Memory(_) => Err(not_shared()),
            Self::Redis(store) => store.remember(key, call, keep, ttl).await,
        }
    }

    /// Forget the history under `key`.
    pub async fn forget(&self, key: &str) -> Result<(), StateError> {
        match self {
            Self::Memory(_) => Err(not_shared()),
            Self::Redis(store) => store.forget(key).await,
        }
    }

    /// Claim `key` for `ttl`: true for the first to claim it (on any
    /// replica), false while it stays claimed. What makes a token single-use.
    pub async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        match self {
            Self::Memory(store) => Ok(store.claim(key, ttl.as_millis() as u64, now_us())),
            Self::Redis(store) => store.claim(key, ttl).await,
        }
    }

    /// A 32-byte secret shared by every gateway on this store, created by
    /// the first that asks (in memory: this process's own).
    pub async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StateError> {
        match self {
            Self::Memory(_) => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret).map_err(|e| StateError(e.to_string()))?;
                Ok(secret)
            }
            Self::Redis(store) => store.shared_secret(name).await,
        }
    }

    /// Set the control `id` of `table` to `value` (JSON text); the new
    /// generation. Persisted before it returns (in memory: to `[state] file`).
    pub async fn put_control(&self, table: &str, id: &str, value: &str) -> Result<u64, StateError> {
        match self {
            Self::Memory(store) => store.put_control(table, id, Some(value)).map(|(_, generation)| generation),
            Self::Redis(store) => store.put_control(table, id, value).await,
        }
    }

    /// Remove the control `id` of `table`: whether it was there, and the new
    /// generation.
    pub async fn remove_control(&self, table: &str, id: &str) -> Result<(bool, u64), StateError> {
        match self {
            Self::Memory(store) => store.put_control(table, id, None),
            Self::Redis(store) => store.remove_control(table, id).await,
        }
    }

    /// Every control of `table`, with the generation they belong to.
    pub async fn controls(&self, table: &str) -> Result<Controls, StateError> {
        match self {
            Self::Memory(store) => Ok(store.controls(table)),
            Self::Redis(store) => store.controls(table).await,
        }
    }

    /// The controls' generation alone (cheap: a replica's poll).
    pub async fn controls_generation(&self) -> Result<u64, StateError> {
        match self {
            Self::Memory(store) => Ok(store.controls(CONTROLS_NONE).generation),
            Self::Redis(store) => store.controls_generation().await,
        }
    }

    /// Usage from hour `since_hour` on (hours since the epoch), optionally of
    /// one tenant.
    pub async fn usage(&self, since_hour: u64, tenant: Option<&str>) -> Result<UsageTable, StateError> {
        match self {
            Self::Memory(store) => Ok(store.usage(since_hour, tenant)),
            Self::Redis(store) => store.usage(since_hour, now_us() / 3_600_000_000, tenant).await,
        }
    }
}

/// A table no control lives in, to read the generation alone.
const CONTROLS_NONE: &str = "";

fn not_shared() -> StateError {
    StateError("chain history is kept by the gateway itself when state is in memory".into())
}

/// Microseconds since the Unix epoch (this machine's clock; the Redis
/// backend uses the server's, so replicas agree).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// GCRA for one bucket, shared by the memory backend and the tests that
/// check the Redis script against it: the new theoretical arrival time if
/// the call conforms, and the answer. `tat` is the stored one (0: none).
pub fn gcra(tat: u64, now: u64, demand: &RateDemand) -> (Option<u64>, Answer) {
    let interval = demand.interval_us;
    let new_tat = tat.max(now) + interval;
    let allow_at = new_tat.saturating_sub(demand.burst * interval);
    if now >= allow_at {
        (Some(new_tat), Answer { conforms: true, remaining: (now - allow_at) / interval, wait_us: new_tat - now })
    } else {
        (None, Answer { conforms: false, remaining: 0, wait_us: allow_at - now })
    }
}

/// Whether a quota counter at `used` has room for `demand`.
pub fn quota_fits(used: u64, demand: &QuotaDemand) -> Answer {
    let conforms = if demand.cost == 0 { used < demand.limit } else { used + demand.cost <= demand.limit };
    let after = if conforms { used + demand.cost } else { used };
    Answer { conforms, remaining: demand.limit.saturating_sub(after), wait_us: 0 }
}

#[cfg(test)]
mod tests;
