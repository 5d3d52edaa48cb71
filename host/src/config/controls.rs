//! `[approvals]`, `[pinning]` and `[[deprecation]]` in `warden.toml`, and
//! each upstream's `pinning`.
//!
//! ```toml
//! [approvals]                  # a person answers what policies ask (absent: asks answer -32011)
//! via = "auto"                 # the caller's client if it can be asked, else the operator queue; or "operator"
//! timeout_s = 120              # how long a call waits for an operator, then it is denied
//! separate_approver = false    # true: nobody approves their own call (always the operator queue)
//! plugins = { rbac = "operator" }   # plugins with their own via
//!
//! [[deprecation]]
//! tools = ["demo/send_email"]  # server/name patterns
//! message = "use notify_team instead"
//! sunset = 2027-01-31          # a date (that day's start, UTC) or an RFC 3339 time; optional
//! after_sunset = "refuse"      # or "warn": keep serving it, with the warning
//!
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

use globset::{Glob, GlobSetBuilder};

use super::{Problems, read::Table};
use crate::controls::{ApprovalSettings, Deprecation, OnChange, PinSettings, Via, deprecation::parse_sunset};

/// `[approvals]`.
pub(super) fn approvals(mut t: Table<'_>, problems: &mut Problems) -> ApprovalSettings {
    const VIA: &[(&str, Via)] = &[("auto", Via::Auto), ("operator", Via::Operator)];
    let via = choice(&mut t, "via", VIA, problems);
    let mut per_plugin = BTreeMap::new();
    for (plugin, word) in t.get::<BTreeMap<String, String>>("plugins", problems).unwrap_or_default() {
        match pick(&word, VIA) {
            Ok(v) => {
                per_plugin.insert(plugin, v);
            }
            Err(problem) => problems.push(t.path_of("plugins"), format!("{plugin}: {problem}")),
        }
    }
    let timeout_s: u64 = t.get("timeout_s", problems).unwrap_or(120);
    if timeout_s == 0 {
        problems.push(t.path_of("timeout_s"), "must be above zero");
    }
    let separate_approver = t.get("separate_approver", problems).unwrap_or(false);
    t.finish(problems);
    ApprovalSettings { via, per_plugin, timeout: std::time::Duration::from_secs(timeout_s), separate_approver }
}

/// `[[deprecation]]`.
pub(super) fn deprecations(root: &mut Table<'_>, problems: &mut Problems) -> Vec<Deprecation> {
    let mut out = Vec::new();
    for mut t in root.tables("deprecation", problems) {
        let tools: Option<Vec<String>> = t.require("tools", problems);
        let message: Option<String> = t.require("message", problems);
        let sunset = match t.raw("sunset") {
            None => None,
            Some(toml::Value::String(text)) => Some(parse_sunset(text)),
            Some(toml::Value::Datetime(at)) => Some(parse_sunset(&at.to_string())),
            Some(other) => Some(Err(format!("expected a date or a string, found {}", other.type_str()))),
        };
        let sunset = match sunset {
            Some(Err(problem)) => {
                problems.push(t.path_of("sunset"), problem);
                None
            }
            Some(Ok(sunset)) => Some(sunset),
            None => None,
        };
        let refuse_after_sunset = choice(&mut t, "after_sunset", &[("refuse", true), ("warn", false)], problems);
        let mut set = GlobSetBuilder::new();
        for pattern in tools.iter().flatten() {
            match Glob::new(pattern) {
                Ok(glob) if pattern.contains('/') => {
                    set.add(glob);
                }
                Ok(_) => problems.push(t.path_of("tools"), format!("{pattern:?}: a pattern is server/name")),
                Err(e) => problems.push(t.path_of("tools"), format!("{pattern:?} is not a pattern: {e}")),
            }
        }
        if tools.as_ref().is_some_and(Vec::is_empty) {
            problems.push(t.path_of("tools"), "name at least one tool");
        }
        t.finish(problems);
        if let (Some(written), Some(message), Ok(compiled)) = (tools, message, set.build()) {
            out.push(Deprecation { written, tools: compiled, message, sunset, refuse_after_sunset });
        }
    }
    out
}

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

/// What `key` names among `choices` (the first is the default; a word not
/// among them is a problem, and the default stands).
fn choice<T: Copy>(t: &mut Table<'_>, key: &'static str, choices: &[(&str, T)], problems: &mut Problems) -> T {
    let Some(word) = t.get::<String>(key, problems) else { return choices[0].1 };
    pick(&word, choices).unwrap_or_else(|problem| {
        problems.push(t.path_of(key), problem);
        choices[0].1
    })
}

/// The value `word` names among `choices`, or the problem.
fn pick<T: Copy>(word: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices.iter().find(|(name, _)| *name == word).map(|(_, value)| *value).ok_or_else(|| {
        let names: Vec<String> = choices.iter().map(|(name, _)| format!("{name:?}")).collect();
        let (last, rest) = names.split_last().expect("choices are given");
        format!("{word:?} is not {} or {last}", rest.join(", "))
    })
}

/// An upstream's `pinning`.
pub(super) fn upstream_pinning(t: &mut Table<'_>, problems: &mut Problems) -> Option<OnChange> {
    let word: String = t.get("pinning", problems)?;
    let modes = [("block", OnChange::Block), ("flag", OnChange::Flag), ("off", OnChange::Off)];
    pick(&word, &modes).map_err(|problem| problems.push(t.path_of("pinning"), problem)).ok()
}
