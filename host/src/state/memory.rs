//! The in-process backend: the same decisions as the Redis script, on a map
//! behind one lock (a decision touches a handful of keys and takes well
//! under a microsecond, so the lock is never held long).

use std::{collections::HashMap, sync::Mutex};

use super::{Admission, UsageTable, Verdict, gcra, quota_fits};

/// A value and when it expires (microseconds since the epoch).
#[derive(Clone, Copy)]
struct Slot {
    value: u64,
    expires_us: u64,
}

/// Add `amount` to a counter; one that has expired starts again from zero
/// and lives `ttl_ms` (a live one keeps its expiry, like `PEXPIRE … NX`).
fn bump(slots: &mut HashMap<String, Slot>, key: &str, amount: u64, ttl_ms: u64, now: u64) {
    let slot = slots.entry(key.to_owned()).or_insert(Slot { value: 0, expires_us: 0 });
    if slot.expires_us <= now {
        *slot = Slot { value: 0, expires_us: now + ttl_ms * 1000 };
    }
    slot.value += amount;
}

/// Past this many keys, expired ones are swept on the next write.
const SWEEP_AT: usize = 65_536;

/// Shared state in this process.
#[derive(Default)]
pub struct MemoryStore {
    slots: Mutex<HashMap<String, Slot>>,
    usage: Mutex<UsageTable>,
}

impl MemoryStore {
    /// Decide `admission` at `now` (microseconds since the epoch).
    pub fn admit(&self, admission: &Admission, now: u64) -> Verdict {
        let mut slots = self.slots.lock().unwrap();
        let live = |slots: &HashMap<String, Slot>, key: &str| {
            slots.get(key).filter(|s| s.expires_us > now).map_or(0, |s| s.value)
        };
        let mut admitted = true;
        let mut tats = Vec::with_capacity(admission.rates.len());
        let mut rates = Vec::with_capacity(admission.rates.len());
        for demand in &admission.rates {
            let (tat, answer) = gcra(live(&slots, &demand.key), now, demand);
            admitted &= answer.conforms || !demand.enforce;
            tats.push(tat);
            rates.push(answer);
        }
        let mut quotas = Vec::with_capacity(admission.quotas.len());
        for demand in &admission.quotas {
            let answer = quota_fits(live(&slots, &demand.key), demand);
            admitted &= answer.conforms || !demand.enforce;
            quotas.push(answer);
        }
        if admitted {
            if slots.len() > SWEEP_AT {
                slots.retain(|_, s| s.expires_us > now);
            }
            for (demand, tat) in admission.rates.iter().zip(&tats) {
                if let Some(tat) = *tat {
                    // A bucket is forgotten once it would be full anyway.
                    slots.insert(demand.key.clone(), Slot { value: tat, expires_us: tat });
                }
            }
            for (demand, answer) in admission.quotas.iter().zip(&quotas) {
                if answer.conforms && demand.cost > 0 {
                    bump(&mut slots, &demand.key, demand.cost, demand.ttl_ms, now);
                }
            }
        }
        Verdict { admitted, rates, quotas, history: None }
    }

    /// Add `amount` to a counter.
    pub fn charge(&self, key: &str, amount: u64, ttl_ms: u64, now: u64) {
        bump(&mut self.slots.lock().unwrap(), key, amount, ttl_ms, now);
    }

    /// Add usage counts.
    pub fn add_usage(&self, table: &UsageTable) {
        let mut usage = self.usage.lock().unwrap();
        for (key, counts) in table {
            usage.entry(key.clone()).or_default().add(counts);
        }
    }

    /// Usage from hour `since_hour` on.
    pub fn usage(&self, since_hour: u64, tenant: Option<&str>) -> UsageTable {
        let usage = self.usage.lock().unwrap();
        usage
            .range((since_hour, String::new(), String::new())..)
            .filter(|((_, t, _), _)| tenant.is_none_or(|wanted| t == wanted))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Forget usage before hour `before_hour`.
    pub fn prune_usage(&self, before_hour: u64) {
        let mut usage = self.usage.lock().unwrap();
        *usage = usage.split_off(&(before_hour, String::new(), String::new()));
    }
}
