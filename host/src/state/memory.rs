//! The in-process backend: the same decisions as the Redis script, on a map
//! behind one lock (a decision touches a handful of keys and takes well
//! under a microsecond, so the lock is never held long).
//!
//! Operator controls are the one thing kept past the process: every change
//! rewrites `[state] file` (a temporary file, synced, renamed over the old
//! one), and the store reads it back when it opens.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    path::{Path, PathBuf},
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

use super::{Admission, Controls, StateError, UsageTable, Verdict, gcra, quota_fits};

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
    controls: Mutex<Saved>,
    file: Option<PathBuf>,
}

/// What `[state] file` holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    /// Bumped on every change.
    generation: u64,
    /// Tables of controls: id → JSON text.
    controls: BTreeMap<String, BTreeMap<String, String>>,
}

impl MemoryStore {
    /// A store that keeps its controls in `file` (if given), reading back
    /// what an earlier run saved there.
    pub fn open(file: Option<PathBuf>) -> Result<Self, StateError> {
        let saved = match &file {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|e| StateError(format!("{} is not a Warden state file: {e}", path.display())))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Saved::default(),
                Err(e) => return Err(StateError(format!("cannot read {}: {e}", path.display()))),
            },
            None => Saved::default(),
        };
        Ok(Self { controls: Mutex::new(saved), file, ..Self::default() })
    }

    /// Set (`Some`) or remove (`None`) a control; whether it was there
    /// before, and the new generation. With a file, the change is on disk
    /// before it takes effect: a failed write changes nothing.
    pub fn put_control(&self, table: &str, id: &str, value: Option<&str>) -> Result<(bool, u64), StateError> {
        let mut saved = self.controls.lock().unwrap();
        let mut next = saved.clone();
        let entries = next.controls.entry(table.to_owned()).or_default();
        let existed = match value {
            Some(value) => entries.insert(id.to_owned(), value.to_owned()).is_some(),
            None => entries.remove(id).is_some(),
        };
        if entries.is_empty() {
            next.controls.remove(table);
        }
        next.generation += 1;
        if let Some(path) = &self.file {
            save(path, &next).map_err(|e| StateError(format!("cannot write {}: {e}", path.display())))?;
        }
        *saved = next;
        Ok((existed, saved.generation))
    }

    /// The controls of `table`.
    pub fn controls(&self, table: &str) -> Controls {
        let saved = self.controls.lock().unwrap();
        Controls { generation: saved.generation, entries: saved.controls.get(table).cloned().unwrap_or_default() }
    }

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
        Verdict { admitted, rates, quotas, history: None, controls: None }
    }

    /// Claim `key` for `ttl_ms` at `now`: whether nobody held it.
    pub fn claim(&self, key: &str, ttl_ms: u64, now: u64) -> bool {
        let mut slots = self.slots.lock().unwrap();
        let key = format!("claim:{key}");
        if slots.get(&key).is_some_and(|s| s.expires_us > now) {
            return false;
        }
        slots.insert(key, Slot { value: 1, expires_us: now + ttl_ms * 1000 });
        true
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

/// Write `saved` to `path` whole or not at all: a temporary file beside it,
/// synced, then renamed over it.
fn save(path: &Path, saved: &Saved) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&serde_json::to_vec_pretty(saved).expect("controls serialise"))?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
