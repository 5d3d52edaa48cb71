//! Tool pinning against rug pulls (OWASP MCP03): a server that quietly
//! changes a tool's description or schema changes what the agent does, so
//! each tool's definition is pinned by its SHA-256 and a tool that no longer
//! matches is held (or flagged) until an operator approves it.
//!
//! - `warden tools lock` writes the lock file: per upstream, its
//!   `serverInfo` version and, per tool, the SHA-256 of the RFC 8785
//!   canonical JSON of the fields an agent's behaviour depends on
//!   ([`PINNED`]), with those fields themselves, so a change can be shown
//!   field by field.
//! - Whenever an upstream's tools are listed (start, every refresh, every
//!   `list_changed`), each tool is reviewed against its pin: a changed one is
//!   blocked (hidden, calls refused with -32031) or flagged (listed with a
//!   flag), per `[pinning] on_change` or the upstream's own `pinning`; a tool
//!   with no pin is held or allowed (`unpinned`); a new tool whose
//!   definition is that of a pinned tool gone missing is reported as a
//!   rename of it. Each finding is logged, counted and audited once.
//! - Approving a finding stores its new pin in the state store (every
//!   replica sees it, and it survives restarts) and rewrites the lock file.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{
    catalog::Snapshot,
    state::{StateError, StateStore},
};

/// The fields of a tool definition that are pinned.
pub const PINNED: [&str; 6] = ["name", "title", "description", "inputSchema", "outputSchema", "annotations"];

/// The state store table approvals live in.
const TABLE: &str = "pins";

/// The pinned part of a tool definition: the [`PINNED`] fields it has.
pub fn pinned_part(tool: &Value) -> Value {
    let mut part = Map::new();
    for field in PINNED {
        if let Some(value) = tool.get(field).filter(|v| !v.is_null()) {
            part.insert(field.to_owned(), value.clone());
        }
    }
    Value::Object(part)
}

/// The SHA-256 (hex) of a pinned part, RFC 8785 canonical JSON.
fn digest(part: &Value) -> String {
    crate::audit::fingerprint(part)
}

/// The digest of a pinned part without its name: equal for a renamed tool.
fn shape(part: &Value) -> String {
    let mut part = part.clone();
    if let Some(map) = part.as_object_mut() {
        map.remove("name");
    }
    digest(&part)
}

/// One tool's pin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// SHA-256 of the pinned part, RFC 8785 canonical JSON.
    pub sha256: String,
    /// The pinned part itself, to show what changed.
    pub definition: Value,
}

impl Pin {
    /// The pin of a pinned part.
    pub fn of(part: Value) -> Self {
        Self { sha256: digest(&part), definition: part }
    }
}

/// One upstream in the lock file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedUpstream {
    /// Its `serverInfo.version` when locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Its tools, by the upstream's own name.
    pub tools: BTreeMap<String, Pin>,
}

/// The lock file (`warden tools lock`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// The format's version: 1.
    pub version: u32,
    /// By upstream name.
    pub upstreams: BTreeMap<String, LockedUpstream>,
}

impl LockFile {
    /// The lock of everything `snapshot` lists now, with each upstream's
    /// `serverInfo.version` from `versions`.
    pub fn of(snapshot: &Snapshot, versions: &BTreeMap<String, String>) -> Self {
        let mut lock = Self { version: 1, upstreams: BTreeMap::new() };
        for (name, version) in versions {
            lock.upstreams.entry(name.clone()).or_default().server_version = Some(version.clone());
        }
        for entry in &snapshot.tools {
            let upstream = lock.upstreams.entry(entry.upstream.clone()).or_default();
            upstream.tools.insert(entry.name.clone(), Pin::of(upstream_part(entry)));
        }
        lock
    }

    /// Read a lock file.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let lock: Self =
            serde_json::from_str(&text).map_err(|e| format!("{} is not a tool lock file: {e}", path.display()))?;
        if lock.version != 1 {
            return Err(format!("{}: lock file version {} is not 1", path.display(), lock.version));
        }
        Ok(lock)
    }

    /// Write it whole or not at all (a temporary file, then a rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_string_pretty(self).expect("a lock serialises");
        text.push('\n');
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        std::fs::write(&temporary, text)?;
        std::fs::rename(&temporary, path)
    }
}

/// A catalog entry's pinned part, under the upstream's own name (the
/// catalog renames definitions to the names clients see).
fn upstream_part(entry: &crate::catalog::Entry) -> Value {
    let mut part = pinned_part(&entry.definition);
    part["name"] = json!(entry.name);
    part
}

/// What happens to a tool whose definition no longer matches its pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnChange {
    /// Hidden from listings, calls refused, until approved.
    Block,
    /// Listed with a flag and callable; still reported and approvable.
    Flag,
    /// Not checked.
    Off,
}

/// `[pinning]`.
#[derive(Clone, Debug, PartialEq)]
pub struct PinSettings {
    /// The lock file.
    pub lock: PathBuf,
    /// What a changed (or renamed) tool gets.
    pub on_change: OnChange,
    /// Whether a tool with no pin is held (`Block`) or only flagged (`Flag`).
    pub unpinned: OnChange,
    /// Upstreams with their own `on_change` (`[[upstream]] pinning`).
    pub per_upstream: BTreeMap<String, OnChange>,
}

/// One field that differs from its pin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldChange {
    /// The field (`description`, `inputSchema`, …).
    pub field: &'static str,
    /// Its pinned value (`null`: it had none).
    pub was: Value,
    /// Its value now (`null`: it has none).
    pub now: Value,
}

/// A tool that does not match its pin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// The upstream.
    pub server: String,
    /// The tool, by the upstream's name.
    pub tool: String,
    /// `changed`, `renamed` or `unpinned`.
    pub change: &'static str,
    /// For `renamed`: the pinned tool it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
    /// The fields that differ from the pin (for `renamed`, from the old one's).
    pub diff: Vec<FieldChange>,
    /// Hidden and refused (true), or only flagged.
    pub held: bool,
    /// The digest of its definition now: what approving it pins.
    pub sha256: String,
    /// Its pinned part now.
    #[serde(skip)]
    pub definition: Value,
}

impl Finding {
    /// One line: what is wrong and which fields.
    pub fn reason(&self) -> String {
        let fields: Vec<&str> = self.diff.iter().map(|d| d.field).collect();
        match self.change {
            "renamed" => format!(
                "it is pinned tool {} under a new name (same definition otherwise)",
                self.renamed_from.as_deref().unwrap_or_default()
            ),
            "unpinned" => "it has no pin in the lock file".to_owned(),
            _ => format!("its definition changed since it was pinned ({})", fields.join(", ")),
        }
    }

    /// `server/tool`: what an approval names.
    pub fn id(&self) -> String {
        format!("{}/{}", self.server, self.tool)
    }
}

/// The fields of `now` that differ from `was`.
fn diff(was: &Value, now: &Value) -> Vec<FieldChange> {
    PINNED
        .into_iter()
        .filter(|field| was.get(*field) != now.get(*field))
        .map(|field| FieldChange {
            field,
            was: was.get(field).cloned().unwrap_or(Value::Null),
            now: now.get(field).cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// Every tool of a catalog snapshot that does not match its pin.
#[derive(Debug, Default)]
pub struct Review {
    catalog: u64,
    pins: u64,
    findings: Vec<Finding>,
    index: HashMap<(String, String), usize>,
    /// Upstreams whose `serverInfo.version` differs from the locked one:
    /// (server, locked, now).
    pub versions: Vec<(String, String, String)>,
}

impl Review {
    /// The finding on a tool, if any.
    pub fn get(&self, server: &str, tool: &str) -> Option<&Finding> {
        self.index.get(&(server.to_owned(), tool.to_owned())).map(|&i| &self.findings[i])
    }

    /// Every finding, in catalog order.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }
}

/// The pins of a gateway: the lock file, with the approvals in the state
/// store over it, and the review of the live catalog against them.
pub struct Pins {
    settings: PinSettings,
    store: Arc<StateStore>,
    file: ArcSwap<LockFile>,
    /// Approved pins by `server/tool`, and the controls' generation they
    /// were read at.
    approved: ArcSwap<(u64, BTreeMap<String, Pin>)>,
    /// The last review, for the catalog and pins it was made of.
    review: Mutex<Option<Arc<Review>>>,
    /// Findings already reported (`server/tool sha256`), so each is logged
    /// and audited once.
    reported: Mutex<HashSet<String>>,
    /// Findings reported, by (server, change), for `/admin/metrics`.
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
    reading: tokio::sync::Mutex<()>,
}

impl Pins {
    /// The pins `settings` name: its lock file (which must exist) and the
    /// approvals in `store`.
    pub async fn load(settings: PinSettings, store: Arc<StateStore>) -> Result<Self, String> {
        let file = LockFile::read(&settings.lock)
            .map_err(|e| format!("{e} (write it with `warden tools lock --config <this file>`)"))?;
        let approved = read_approved(&store).await.map_err(|e| e.to_string())?;
        Ok(Self {
            settings,
            store,
            file: ArcSwap::from_pointee(file),
            approved: ArcSwap::from_pointee(approved),
            review: Mutex::default(),
            reported: Mutex::default(),
            counts: Mutex::default(),
            reading: tokio::sync::Mutex::new(()),
        })
    }

    /// The effective pins of an upstream's tools, by name: the lock file's,
    /// with approvals over them.
    fn effective(&self, server: &str) -> BTreeMap<String, Pin> {
        let mut pins = self.file.load().upstreams.get(server).map(|u| u.tools.clone()).unwrap_or_default();
        let prefix = format!("{server}/");
        for (id, pin) in &self.approved.load().1 {
            if let Some(tool) = id.strip_prefix(&prefix) {
                pins.insert(tool.to_owned(), pin.clone());
            }
        }
        pins
    }

    /// The review of `snapshot` (cached until the catalog or the pins
    /// change); `versions` gives each upstream's `serverInfo.version`.
    pub fn review(&self, snapshot: &Snapshot, versions: impl FnOnce() -> BTreeMap<String, String>) -> Arc<Review> {
        let pins = self.approved.load().0;
        if let Some(last) = &*self.review.lock().unwrap()
            && last.catalog == snapshot.generation
            && last.pins == pins
        {
            return Arc::clone(last);
        }
        let review = Arc::new(self.make_review(snapshot, &versions(), pins));
        *self.review.lock().unwrap() = Some(Arc::clone(&review));
        review
    }

    fn make_review(&self, snapshot: &Snapshot, versions: &BTreeMap<String, String>, pins: u64) -> Review {
        let mut review = Review { catalog: snapshot.generation, pins, ..Review::default() };
        let file = self.file.load();
        for (server, locked) in &file.upstreams {
            if let (Some(was), Some(now)) = (&locked.server_version, versions.get(server))
                && was != now
            {
                review.versions.push((server.clone(), was.clone(), now.clone()));
            }
        }
        let listed: HashSet<(&str, &str)> =
            snapshot.tools.iter().map(|e| (e.upstream.as_str(), e.name.as_str())).collect();
        let mut effective: HashMap<&str, BTreeMap<String, Pin>> = HashMap::new();
        for entry in &snapshot.tools {
            let mode = self.settings.per_upstream.get(&entry.upstream).copied().unwrap_or(self.settings.on_change);
            if mode == OnChange::Off {
                continue;
            }
            let now = upstream_part(entry);
            let sha256 = digest(&now);
            let finding = |change, renamed_from, diff, held| Finding {
                server: entry.upstream.clone(),
                tool: entry.name.clone(),
                change,
                renamed_from,
                diff,
                held,
                sha256: sha256.clone(),
                definition: now.clone(),
            };
            let pins = effective.entry(&entry.upstream).or_insert_with(|| self.effective(&entry.upstream));
            let found = match pins.get(&entry.name) {
                Some(pin) if pin.sha256 == sha256 => continue,
                Some(pin) => finding("changed", None, diff(&pin.definition, &now), mode == OnChange::Block),
                None => {
                    // A pinned tool of this upstream that is gone, with this
                    // tool's definition but for the name: a rename.
                    let gone = pins.iter().find(|(name, pin)| {
                        !listed.contains(&(entry.upstream.as_str(), name.as_str()))
                            && shape(&pin.definition) == shape(&now)
                    });
                    match gone {
                        Some((old, pin)) => {
                            finding("renamed", Some(old.clone()), diff(&pin.definition, &now), mode == OnChange::Block)
                        }
                        None => finding("unpinned", None, Vec::new(), self.settings.unpinned == OnChange::Block),
                    }
                }
            };
            review.index.insert((found.server.clone(), found.tool.clone()), review.findings.len());
            review.findings.push(found);
        }
        review
    }

    /// The findings and version changes of `review` not reported before
    /// (each once per definition or version), counted.
    pub fn unreported(&self, review: &Review) -> (Vec<Finding>, Vec<(String, String, String)>) {
        let mut reported = self.reported.lock().unwrap();
        let fresh: Vec<Finding> =
            review.findings.iter().filter(|f| reported.insert(format!("{} {}", f.id(), f.sha256))).cloned().collect();
        let versions = review
            .versions
            .iter()
            .filter(|(s, _, now)| reported.insert(format!("{s} version {now}")))
            .cloned()
            .collect();
        let mut counts = self.counts.lock().unwrap();
        for finding in &fresh {
            *counts.entry((finding.server.clone(), finding.change)).or_default() += 1;
        }
        (fresh, versions)
    }

    /// Accept `findings`: their definitions become their pins, in the state
    /// store (every replica, across restarts) and in the lock file. Returns
    /// the error writing the lock file, if that failed (the approvals hold
    /// anyway).
    pub async fn approve(&self, findings: &[Finding]) -> Result<Option<String>, StateError> {
        for finding in findings {
            let pin = Pin { sha256: finding.sha256.clone(), definition: finding.definition.clone() };
            let text = serde_json::to_string(&pin).expect("a pin serialises");
            self.store.put_control(TABLE, &finding.id(), &text).await?;
        }
        self.read().await?;
        let mut lock = (**self.file.load()).clone();
        for finding in findings {
            let upstream = lock.upstreams.entry(finding.server.clone()).or_default();
            if let Some(old) = &finding.renamed_from {
                upstream.tools.remove(old);
            }
            upstream.tools.insert(finding.tool.clone(), Pin::of(finding.definition.clone()));
        }
        let written = lock.write(&self.settings.lock);
        self.file.store(Arc::new(lock));
        Ok(written.err().map(|e| format!("cannot rewrite {}: {e}", self.settings.lock.display())))
    }

    /// Catch up with the controls' `generation`: read the approvals again
    /// if they are older. True if newer ones went live.
    pub async fn catch_up(&self, generation: u64) -> Result<bool, StateError> {
        let before = self.approved.load().0;
        if generation <= before {
            return Ok(false);
        }
        self.read().await?;
        Ok(self.approved.load().0 > before)
    }

    async fn read(&self) -> Result<(), StateError> {
        let _one_at_a_time = self.reading.lock().await;
        let approved = read_approved(&self.store).await?;
        if approved.0 >= self.approved.load().0 {
            self.approved.store(Arc::new(approved));
        }
        Ok(())
    }

    /// Counters and gauges for `/admin/metrics`.
    pub fn snapshot(&self) -> crate::metrics::Snapshot {
        let mut out = crate::metrics::Snapshot::default();
        let counts = self.counts.lock().unwrap();
        let samples = counts
            .iter()
            .map(|((server, change), n)| (vec![("server", server.clone()), ("change", (*change).to_owned())], *n));
        out.counter(
            "warden_tool_pin_findings",
            "Tools found not matching their pin (changed, renamed, unpinned), each definition once",
            samples.collect(),
        );
        let held = self.review.lock().unwrap().as_ref().map_or(0, |r| r.findings.iter().filter(|f| f.held).count());
        out.gauge("warden_tools_held", "Tools held until an operator approves their definition", held as u64);
        out
    }
}

async fn read_approved(store: &StateStore) -> Result<(u64, BTreeMap<String, Pin>), StateError> {
    let controls = store.controls(TABLE).await?;
    let mut pins = BTreeMap::new();
    for (id, text) in controls.entries {
        match serde_json::from_str::<Pin>(&text) {
            Ok(pin) => {
                pins.insert(id, pin);
            }
            Err(error) => tracing::error!(id, %error, "a stored tool approval cannot be read; it is ignored"),
        }
    }
    Ok((controls.generation, pins))
}

#[cfg(test)]
mod tests;
