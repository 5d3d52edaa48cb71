//! What each session (or, for stateless clients, each principal) called
//! recently: the `history` that chain-detection policies read.
//!
//! Only calls the chain allowed are recorded, at dispatch. Lengths are bounded
//! per key, and so is the number of keys (the least recently used goes).
//!
//! With `[state] redis`, the history lives in Redis ([`History::Shared`]), so
//! a chain a policy blocks cannot be split across replicas: the call is
//! recorded before it is answered, so a client's next call sees it on any
//! replica. While Redis is unreachable, `state.on_unavailable` decides: the
//! call is refused, or this replica's own history is used.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{
    engine::{Call, PastCall},
    state::{StateError, StateStore, Unavailable},
};

/// Recent calls per session: in this process, or shared in Redis.
pub enum History {
    /// In this process.
    Local(LocalHistory),
    /// In the state store, with a local fallback.
    Shared {
        /// The store.
        store: Arc<StateStore>,
        /// Calls kept per key.
        per_key: usize,
        /// How long a key's history outlives its last call.
        ttl: Duration,
        /// What happens while the store is unreachable.
        on_unavailable: Unavailable,
        /// Used while the store is unreachable, if `on_unavailable` allows.
        fallback: LocalHistory,
    },
}

impl History {
    /// The calls recorded under `key`, oldest first.
    pub async fn recent(&self, key: &str) -> Result<Vec<PastCall>, StateError> {
        match self {
            Self::Local(local) => Ok(local.recent(key)),
            Self::Shared { store, on_unavailable, fallback, .. } => match store.history(key).await {
                Ok(calls) => Ok(calls),
                Err(error) if *on_unavailable == Unavailable::Local => {
                    tracing::warn!(%error, "the state store is unreachable: chain history is this replica's own");
                    Ok(fallback.recent(key))
                }
                Err(error) => Err(error),
            },
        }
    }

    /// The calls this replica itself recorded under `key` (all of them in
    /// memory; with Redis, what it would fall back on); `None` if it keeps
    /// no history.
    pub fn local(&self, key: &str) -> Option<Vec<PastCall>> {
        match self {
            Self::Local(local) => Some(local.recent(key)),
            Self::Shared { on_unavailable: Unavailable::Local, fallback, .. } => Some(fallback.recent(key)),
            Self::Shared { .. } => None,
        }
    }

    /// Record a dispatched call.
    pub async fn record(&self, key: &str, call: &Call) -> Result<(), StateError> {
        match self {
            Self::Local(local) => {
                local.record(key, call);
                Ok(())
            }
            Self::Shared { store, per_key, ttl, on_unavailable, fallback } => {
                if *per_key == 0 {
                    return Ok(());
                }
                fallback.record(key, call);
                match store.remember(key, &past(call), *per_key, *ttl).await {
                    Err(_) if *on_unavailable == Unavailable::Local => Ok(()),
                    other => other,
                }
            }
        }
    }

    /// Forget a session (it ended); in Redis, in the background (call within
    /// a Tokio runtime).
    pub fn forget(&self, key: &str) {
        match self {
            Self::Local(local) => local.forget(key),
            Self::Shared { store, fallback, .. } => {
                fallback.forget(key);
                let (store, key) = (Arc::clone(store), key.to_owned());
                tokio::spawn(async move {
                    if let Err(error) = store.forget(&key).await {
                        tracing::debug!(%error, "cannot forget a session's history; it expires by itself");
                    }
                });
            }
        }
    }
}

fn past(call: &Call) -> PastCall {
    PastCall {
        kind: call.target.kind,
        server: call.target.server.clone(),
        name: call.target.name.clone(),
        timestamp_ms: call.timestamp_ms,
    }
}

struct Entry {
    calls: VecDeque<PastCall>,
    used: u64,
}

/// Recent calls per session, in this process.
pub struct LocalHistory {
    per_key: usize,
    max_keys: usize,
    entries: Mutex<(HashMap<String, Entry>, u64)>,
}

impl LocalHistory {
    /// Keep `per_key` calls for at most `max_keys` sessions.
    pub fn new(per_key: usize, max_keys: usize) -> Self {
        Self { per_key, max_keys: max_keys.max(1), entries: Mutex::default() }
    }

    /// The calls recorded under `key`, oldest first.
    pub fn recent(&self, key: &str) -> Vec<PastCall> {
        let entries = self.entries.lock().unwrap();
        entries.0.get(key).map(|e| e.calls.iter().cloned().collect()).unwrap_or_default()
    }

    /// Record a dispatched call.
    pub fn record(&self, key: &str, call: &Call) {
        if self.per_key == 0 {
            return;
        }
        let mut guard = self.entries.lock().unwrap();
        let (entries, clock) = &mut *guard;
        *clock += 1;
        if !entries.contains_key(key)
            && entries.len() >= self.max_keys
            && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        let entry = entries.entry(key.to_owned()).or_insert_with(|| Entry { calls: VecDeque::new(), used: 0 });
        entry.used = *clock;
        if entry.calls.len() == self.per_key {
            entry.calls.pop_front();
        }
        entry.calls.push_back(past(call));
    }

    /// Forget a session (it ended).
    pub fn forget(&self, key: &str) {
        self.entries.lock().unwrap().0.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::call;

    fn named(name: &str) -> Call {
        let mut c = call(serde_json::json!({}));
        c.target.name = name.into();
        c
    }

    #[test]
    fn keeps_the_most_recent_calls_per_key() {
        let history = LocalHistory::new(2, 10);
        for name in ["a", "b", "c"] {
            history.record("s1", &named(name));
        }
        history.record("s2", &named("x"));
        let names = |key| history.recent(key).into_iter().map(|p| p.name).collect::<Vec<_>>();
        assert_eq!(names("s1"), ["b", "c"]);
        assert_eq!(names("s2"), ["x"]);
        history.forget("s1");
        assert!(names("s1").is_empty());
    }

    #[test]
    fn evicts_the_least_recently_used_key() {
        let history = LocalHistory::new(4, 2);
        history.record("a", &named("1"));
        history.record("b", &named("1"));
        history.record("a", &named("2"));
        history.record("c", &named("1"));
        assert_eq!(history.recent("a").len(), 2);
        assert!(history.recent("b").is_empty(), "b was used least recently");
        assert_eq!(history.recent("c").len(), 1);
    }
}
