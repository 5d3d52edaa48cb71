//! Kill switches: turn a tool, a resource or prompt pattern, a whole
//! upstream or a plugin off, now, without a restart.
//!
//! A switched-off tool, resource or prompt (or everything of a switched-off
//! upstream) disappears from listings and a call to it is refused with
//! -32030, naming the switch and its reason. A switched-off plugin is not
//! run and counts as failed: it denies what it would have seen, unless its
//! link is `fail_open` (then it is skipped) — the chain's usual rule, so
//! switching off a guard never opens a way around it by accident.

use std::{collections::BTreeMap, sync::Arc};

use arc_swap::ArcSwap;
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::{
    engine::TargetKind,
    state::{StateError, StateStore},
};

/// The state store table switches live in.
const TABLE: &str = "switches";

/// What a kill switch turns off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwitchKind {
    /// Tools, by `server/name` pattern.
    Tool,
    /// Resources, by `server/uri` pattern.
    Resource,
    /// Prompts, by `server/name` pattern.
    Prompt,
    /// Whole upstreams, by name pattern: their tools, resources, templates
    /// and prompts.
    Server,
    /// Plugins of the chain, by name pattern.
    Plugin,
}

impl SwitchKind {
    /// Every kind's name, as the admin API and the CLI spell it.
    pub const NAMES: [&'static str; 5] = ["tool", "resource", "prompt", "server", "plugin"];

    /// The kind named `word`.
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "tool" => Self::Tool,
            "resource" => Self::Resource,
            "prompt" => Self::Prompt,
            "server" => Self::Server,
            "plugin" => Self::Plugin,
            _ => return None,
        })
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Whether its pattern is `server/name` (or `server/uri`).
    fn qualified(self) -> bool {
        matches!(self, Self::Tool | Self::Resource | Self::Prompt)
    }
}

/// One kill switch: everything of `kind` that `pattern` matches is off
/// until the switch is removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    /// What it turns off.
    pub kind: SwitchKind,
    /// A glob (`*`, `?`, `[…]`, `{a,b}`): `server/name` for tools and
    /// prompts, `server/uri` for resources, a name for servers and plugins.
    pub pattern: String,
    /// Why, in the operator's words (clients see it in the refusal).
    pub reason: String,
    /// Who set it: the admin principal's subject.
    pub by: String,
    /// When it was set, RFC 3339.
    pub at: String,
}

impl Switch {
    /// `<kind>:<pattern>`: a switch is known by what it turns off, so
    /// setting the same one again only updates its reason.
    pub fn id(&self) -> String {
        id(self.kind, &self.pattern)
    }
}

/// The id of the switch of `kind` over `pattern`.
pub fn id(kind: SwitchKind, pattern: &str) -> String {
    format!("{}:{pattern}", kind.as_str())
}

/// Why `pattern` cannot be a switch of `kind`, if it cannot.
pub fn pattern_problem(kind: SwitchKind, pattern: &str) -> Option<String> {
    if pattern.trim().is_empty() {
        return Some("the pattern is empty".into());
    }
    if kind.qualified() && !pattern.contains('/') {
        return Some(format!("a {} pattern is server/name, e.g. \"demo/{pattern}\" or \"*/{pattern}\"", kind.as_str()));
    }
    Glob::new(pattern).err().map(|e| format!("{pattern:?} is not a pattern: {e}"))
}

/// The switches in force, with their patterns compiled, and the generation
/// of the controls they were read at.
#[derive(Debug, Default)]
pub struct SwitchSet {
    generation: u64,
    switches: Vec<(Switch, GlobMatcher)>,
}

impl SwitchSet {
    /// A set of these switches (patterns that do not compile are left out).
    pub fn of(switches: Vec<Switch>) -> Self {
        let compiled =
            switches.into_iter().filter_map(|s| Glob::new(&s.pattern).ok().map(|g| (s.clone(), g.compile_matcher())));
        Self { generation: 0, switches: compiled.collect() }
    }

    /// The controls' generation this set was read at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every switch, by id.
    pub fn list(&self) -> impl Iterator<Item = &Switch> {
        self.switches.iter().map(|(s, _)| s)
    }

    /// The switch with this id.
    pub fn get(&self, id: &str) -> Option<&Switch> {
        self.list().find(|s| s.id() == id)
    }

    /// The switch that turns off the `kind` item `name` of `server` (a URI
    /// for a resource), if any: its server's, or one of its kind matching
    /// `server/name`.
    pub fn covering(&self, kind: TargetKind, server: &str, name: &str) -> Option<&Switch> {
        let path = format!("{server}/{name}");
        self.switches
            .iter()
            .find(|(switch, matcher)| match switch.kind {
                SwitchKind::Server => matcher.is_match(server),
                SwitchKind::Tool => kind == TargetKind::Tool && matcher.is_match(&path),
                SwitchKind::Resource => kind == TargetKind::Resource && matcher.is_match(&path),
                SwitchKind::Prompt => kind == TargetKind::Prompt && matcher.is_match(&path),
                SwitchKind::Plugin => false,
            })
            .map(|(switch, _)| switch)
    }

    /// Whether a whole upstream is switched off (its resource templates go
    /// with it; single resources are matched by URI).
    pub fn server_off(&self, server: &str) -> bool {
        self.switches.iter().any(|(s, m)| s.kind == SwitchKind::Server && m.is_match(server))
    }

    /// The plugins among `names` that are switched off: name → (switch id,
    /// reason), as [`crate::chain::Chain::switched_off`] takes them.
    pub fn plugins<'a>(&self, names: impl Iterator<Item = &'a str>) -> BTreeMap<String, (String, String)> {
        let mut off = BTreeMap::new();
        for name in names {
            let switch =
                self.switches.iter().find(|(s, m)| s.kind == SwitchKind::Plugin && m.is_match(name)).map(|(s, _)| s);
            if let Some(switch) = switch {
                off.insert(name.to_owned(), (switch.id(), switch.reason.clone()));
            }
        }
        off
    }

    fn read(controls: crate::state::Controls) -> Self {
        let mut switches = Vec::new();
        for (id, text) in controls.entries {
            let parsed = serde_json::from_str::<Switch>(&text)
                .map_err(|e| e.to_string())
                .and_then(|s| Glob::new(&s.pattern).map(|g| (g.compile_matcher(), s)).map_err(|e| e.to_string()));
            match parsed {
                Ok((matcher, switch)) => switches.push((switch, matcher)),
                // Only Warden writes this table; an entry it cannot read is
                // reported, not guessed at.
                Err(error) => tracing::error!(id, %error, "a stored kill switch cannot be read; it is ignored"),
            }
        }
        Self { generation: controls.generation, switches }
    }
}

/// The live switches of a gateway: read from the state store, and read
/// again whenever the store's generation moves past the one they were read at.
pub struct Switches {
    store: Arc<StateStore>,
    live: ArcSwap<SwitchSet>,
    reading: tokio::sync::Mutex<()>,
}

impl Switches {
    /// The switches `store` holds now.
    pub async fn load(store: Arc<StateStore>) -> Result<Self, StateError> {
        let set = SwitchSet::read(store.controls(TABLE).await?);
        Ok(Self { store, live: ArcSwap::from_pointee(set), reading: tokio::sync::Mutex::new(()) })
    }

    /// The switches in force.
    pub fn current(&self) -> Arc<SwitchSet> {
        self.live.load_full()
    }

    /// Store `switch` (replacing one with its id), then read the set again.
    pub async fn set(&self, switch: &Switch) -> Result<Arc<SwitchSet>, StateError> {
        let text = serde_json::to_string(switch).expect("a switch serialises");
        self.store.put_control(TABLE, &switch.id(), &text).await?;
        self.read().await
    }

    /// Remove the switch `id`, then read the set again; the switch removed,
    /// if there was one.
    pub async fn remove(&self, id: &str) -> Result<Option<Switch>, StateError> {
        let removed = self.current().get(id).cloned();
        let (existed, _) = self.store.remove_control(TABLE, id).await?;
        self.read().await?;
        Ok(removed.filter(|_| existed))
    }

    /// Catch up with `generation` (as the store reported it): read the set
    /// again if it is older. True if a newer set went live.
    pub async fn catch_up(&self, generation: u64) -> Result<bool, StateError> {
        let before = self.live.load().generation;
        if generation <= before {
            return Ok(false);
        }
        Ok(self.read().await?.generation > before)
    }

    /// Read the set from the store and put it live, unless a newer one
    /// already is (two reads may finish out of order).
    async fn read(&self) -> Result<Arc<SwitchSet>, StateError> {
        let _one_at_a_time = self.reading.lock().await;
        let set = SwitchSet::read(self.store.controls(TABLE).await?);
        if set.generation >= self.live.load().generation {
            self.live.store(Arc::new(set));
        }
        Ok(self.live.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(kind: SwitchKind, pattern: &str) -> Switch {
        Switch { kind, pattern: pattern.into(), reason: "test".into(), by: "ops".into(), at: "now".into() }
    }

    async fn with(switches: &[Switch]) -> (tempfile::TempDir, Switches) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            StateStore::Memory(crate::state::memory::MemoryStore::open(Some(dir.path().join("s.json"))).unwrap());
        let live = Switches::load(Arc::new(store)).await.unwrap();
        for s in switches {
            live.set(s).await.unwrap();
        }
        (dir, live)
    }

    #[tokio::test]
    async fn a_switch_covers_what_its_kind_and_pattern_name() {
        let (_dir, live) =
            with(&[switch(SwitchKind::Tool, "demo/write_*"), switch(SwitchKind::Resource, "*/file:///secret/*")]).await;
        let set = live.current();
        let covering = |kind, server, name| set.covering(kind, server, name).map(Switch::id);
        assert_eq!(covering(TargetKind::Tool, "demo", "write_file"), Some("tool:demo/write_*".into()));
        assert_eq!(covering(TargetKind::Tool, "other", "write_file"), None);
        assert_eq!(covering(TargetKind::Prompt, "demo", "write_file"), None, "a tool switch is not a prompt switch");
        assert_eq!(
            covering(TargetKind::Resource, "fs", "file:///secret/k"),
            Some("resource:*/file:///secret/*".into())
        );
        assert_eq!(covering(TargetKind::Resource, "fs", "file:///public/k"), None);
    }

    #[tokio::test]
    async fn a_server_switch_covers_everything_of_that_server_and_plugins_are_apart() {
        let (_dir, live) = with(&[switch(SwitchKind::Server, "demo"), switch(SwitchKind::Plugin, "chain-*")]).await;
        let set = live.current();
        for kind in [TargetKind::Tool, TargetKind::Resource, TargetKind::Prompt] {
            assert_eq!(set.covering(kind, "demo", "x").map(Switch::id), Some("server:demo".into()));
            assert!(set.covering(kind, "demos", "x").is_none());
        }
        assert!(set.server_off("demo") && !set.server_off("files"));
        let off = set.plugins(["rbac", "chain-detect"].into_iter());
        assert_eq!(off.keys().collect::<Vec<_>>(), ["chain-detect"]);
        assert_eq!(off["chain-detect"], ("plugin:chain-*".to_owned(), "test".to_owned()));
    }

    #[tokio::test]
    async fn switches_survive_a_restart_and_removal_is_for_good() {
        let (dir, live) = with(&[switch(SwitchKind::Tool, "demo/a"), switch(SwitchKind::Tool, "demo/b")]).await;
        assert_eq!(live.remove("tool:demo/a").await.unwrap().map(|s| s.id()), Some("tool:demo/a".into()));
        assert_eq!(live.remove("tool:demo/a").await.unwrap(), None, "removing twice removes nothing");
        let generation = live.current().generation();
        drop(live);
        let store = crate::state::memory::MemoryStore::open(Some(dir.path().join("s.json"))).unwrap();
        let again = Switches::load(Arc::new(StateStore::Memory(store))).await.unwrap();
        let ids: Vec<String> = again.current().list().map(Switch::id).collect();
        assert_eq!(ids, ["tool:demo/b"]);
        assert_eq!(again.current().generation(), generation, "the generation goes on from where it was");
    }

    #[tokio::test]
    async fn setting_a_switch_again_updates_its_reason() {
        let mut second = switch(SwitchKind::Tool, "demo/a");
        second.reason = "still broken".into();
        let (_dir, live) = with(&[switch(SwitchKind::Tool, "demo/a"), second]).await;
        let set = live.current();
        assert_eq!(set.list().count(), 1);
        assert_eq!(set.get("tool:demo/a").unwrap().reason, "still broken");
    }

    #[tokio::test]
    async fn a_state_file_that_cannot_be_read_stops_the_store_from_opening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "{ not json").unwrap();
        let error = crate::state::memory::MemoryStore::open(Some(path.clone())).err().expect("refused");
        assert!(
            error.0.contains(&path.display().to_string()) && error.0.contains("not a Warden state file"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the new state file would be written (even root
        // cannot write a file there).
        let path = dir.path().join("s.json");
        std::fs::create_dir(dir.path().join("s.json.tmp")).unwrap();
        let store = StateStore::Memory(crate::state::memory::MemoryStore::open(Some(path)).unwrap());
        let live = Switches::load(Arc::new(store)).await.unwrap();
        let error = live.set(&switch(SwitchKind::Tool, "demo/a")).await.expect_err("refused");
        assert!(error.0.contains("cannot write"), "{error}");
        assert_eq!(live.current().list().count(), 0);
        assert_eq!(live.store.controls_generation().await.unwrap(), 0, "the generation did not move either");
    }

    #[test]
    fn patterns_are_checked() {
        assert!(pattern_problem(SwitchKind::Tool, "write_file").unwrap().contains("server/name"));
        assert!(pattern_problem(SwitchKind::Server, " ").unwrap().contains("empty"));
        assert!(pattern_problem(SwitchKind::Tool, "demo/[").unwrap().contains("not a pattern"));
        assert_eq!(pattern_problem(SwitchKind::Server, "demo"), None);
        assert_eq!(pattern_problem(SwitchKind::Tool, "*/delete_*"), None);
    }
}
