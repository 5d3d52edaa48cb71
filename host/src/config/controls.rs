//! `[pinning]` in `warden.toml`, and each upstream's `pinning`.
//!
//! ```toml
//! [pinning]
//! lock = "warden-tools.lock"   # written by `warden tools lock`; must exist to serve
//! on_change = "block"          # a tool whose definition changed: "block" (hidden, refused) or "flag"
//! unpinned = "hold"            # a tool with no pin: "hold" (like block) or "allow" (flagged)
//!
//! [[upstream]]
//! name = "files"
//! pinning = "flag"             # this upstream's own on_change: "block", "flag" or "off"
//! ```

use std::{collections::BTreeMap, path::Path};

use super::{Problems, read::Table};
use crate::controls::{OnChange, PinSettings};

/// `[pinning]`, with the upstreams' own modes (name → mode).
pub(super) fn pinning(
    mut t: Table<'_>,
    base: &Path,
    per_upstream: BTreeMap<String, OnChange>,
    problems: &mut Problems,
) -> Option<PinSettings> {
    let lock: Option<String> = t.require("lock", problems);
    let on_change = choice(&mut t, "on_change", &[("block", OnChange::Block), ("flag", OnChange::Flag)], problems);
    let unpinned = choice(&mut t, "unpinned", &[("hold", OnChange::Block), ("allow", OnChange::Flag)], problems);
    t.finish(problems);
    Some(PinSettings { lock: base.join(lock?), on_change, unpinned, per_upstream })
}

/// The mode `key` names among `choices` (the first is the default).
fn choice(t: &mut Table<'_>, key: &'static str, choices: &[(&str, OnChange)], problems: &mut Problems) -> OnChange {
    let Some(word) = t.get::<String>(key, problems) else { return choices[0].1 };
    match choices.iter().find(|(name, _)| *name == word) {
        Some((_, mode)) => *mode,
        None => {
            let names: Vec<String> = choices.iter().map(|(name, _)| format!("{name:?}")).collect();
            problems.push(t.path_of(key), format!("{word:?} is not {}", names.join(" or ")));
            choices[0].1
        }
    }
}

/// An upstream's `pinning`.
pub(super) fn upstream_pinning(t: &mut Table<'_>, problems: &mut Problems) -> Option<OnChange> {
    let word: String = t.get("pinning", problems)?;
    let mode = OnChange::parse(&word);
    if mode.is_none() {
        problems.push(t.path_of("pinning"), format!("{word:?} is not \"block\", \"flag\" or \"off\""));
    }
    mode
}
