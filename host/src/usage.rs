//! Chargeback: calls, refusals and upstream time per tenant and upstream,
//! by hour, kept in the state store (so with Redis, every replica's counts
//! add up to one answer) and read by `GET /admin/usage` and `warden usage`.
//!
//! Requests count here as they close; the counts reach the store once a
//! second in one pipelined write, so the request path never waits on it.
//! Counts that cannot be written stay pending and are written with the next
//! flush (up to a bound; past it the oldest are dropped and logged).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};

use crate::state::{StateStore, Usage, UsageTable, now_us};

/// How often pending counts are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Most pending (hour, tenant, upstream) rows kept while the store is unreachable.
const MAX_PENDING: usize = 100_000;

/// Counts requests and writes them to the store.
pub struct UsageMeter {
    pending: Mutex<UsageTable>,
    store: Arc<StateStore>,
    retention_hours: u64,
}

impl UsageMeter {
    /// A meter writing to `store`; starts its flush task (call within a
    /// Tokio runtime).
    pub fn start(store: Arc<StateStore>, retention: Duration) -> Arc<Self> {
        let retention_hours = (retention.as_secs() / 3600).max(1);
        let meter = Arc::new(Self { pending: Mutex::default(), store, retention_hours });
        let weak = Arc::downgrade(&meter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(meter) = weak.upgrade() else { break };
                meter.flush().await;
            }
        });
        meter
    }

    /// Count one routed request of `tenant` to `server`.
    pub fn note(&self, tenant: Option<&str>, server: &str, refused: bool, upstream: Option<Duration>) {
        let hour = now_us() / 3_600_000_000;
        let mut pending = self.pending.lock().unwrap();
        let usage = pending.entry((hour, tenant.unwrap_or_default().to_owned(), server.to_owned())).or_default();
        usage.calls += 1;
        usage.refused += u64::from(refused);
        usage.upstream_us += upstream.map_or(0, |d| d.as_micros() as u64);
    }

    /// Write pending counts to the store.
    pub async fn flush(&self) {
        // Redis expires old hours by itself; the memory store is pruned here.
        if let StateStore::Memory(memory) = &*self.store {
            memory.prune_usage((now_us() / 3_600_000_000).saturating_sub(self.retention_hours));
        }
        let batch = std::mem::take(&mut *self.pending.lock().unwrap());
        if batch.is_empty() {
            return;
        }
        if let Err(error) = self.store.add_usage(&batch).await {
            tracing::warn!(%error, "cannot write usage counts; they are kept for the next try");
            let mut pending = self.pending.lock().unwrap();
            for (key, usage) in batch {
                pending.entry(key).or_default().add(&usage);
            }
            while pending.len() > MAX_PENDING {
                let dropped = pending.pop_first();
                tracing::warn!(?dropped, "usage counts dropped: the state store has been unreachable too long");
            }
        }
    }

    /// Usage since `since_hour` (hours since the epoch), by tenant and
    /// upstream, with totals: the answer of `GET /admin/usage`. Counts not
    /// yet written are included, so a replica's own latest calls show.
    pub async fn report(&self, since_hour: u64, tenant: Option<&str>) -> Result<Value, String> {
        self.flush().await;
        let table = self.store.usage(since_hour, tenant).await.map_err(|e| e.to_string())?;
        let mut by_tenant: BTreeMap<&str, (Usage, BTreeMap<&str, Usage>)> = BTreeMap::new();
        for ((_, tenant, server), usage) in &table {
            let (total, servers) = by_tenant.entry(tenant).or_default();
            total.add(usage);
            servers.entry(server).or_default().add(usage);
        }
        let tenants: Vec<Value> = by_tenant
            .iter()
            .map(|(tenant, (total, servers))| {
                let servers: Vec<Value> =
                    servers.iter().map(|(server, usage)| json!({ "server": server, "usage": usage })).collect();
                json!({ "tenant": tenant, "usage": total, "servers": servers })
            })
            .collect();
        Ok(json!({ "since_hour": since_hour, "store": self.store.kind(), "tenants": tenants }))
    }
}
