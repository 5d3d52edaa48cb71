//! Test vectors: language-neutral files that say what a plugin must decide,
//! so one folder checks a policy whatever language it is written in.
//!
//! A vector is a JSON file:
//!
//! ```json
//! {
//!   "about": "a card number that passes the Luhn check is redacted",
//!   "config": { "redact": ["card"] },
//!   "call": { "target": { "server": "crm", "name": "lookup" } },
//!   "result": { "content": [{ "type": "text", "text": "card 4111 1111 1111 1111" }] },
//!   "expect": { "verdict": "allow", "result": { "content": [{ "type": "text", "text": "card [card redacted]" }] } }
//! }
//! ```
//!
//! `config` is the plugin's config (`{}` if absent); then either `call` (with
//! an optional `result`, run through on-result if the call is allowed) or
//! `list`, in the formats of `warden policy test --call/--result/--list`.
//! `expect` holds fields the report (`warden policy test --json`) must have,
//! each compared whole (`verdict`, `plugin`, `code`, `reason`, `arguments`,
//! `result`, `tools`), plus two that compare loosely: `reason_contains` (a
//! substring of the reason) and `config_problems` (substrings, one per
//! problem `validate-config` must report, in order: the config must be
//! refused, and nothing else runs).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{CallFile, ListFile, Report, run_call, run_list};
use crate::{
    chain::{Chain, Link},
    engine::{LoadError, Plugin},
};

/// One vector file, as written.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    /// What the vector checks, in a sentence.
    about: String,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    call: Option<CallFile>,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    list: Option<ListFile>,
    expect: Map<String, Value>,
}

/// How one vector went.
#[derive(Debug)]
pub struct VectorOutcome {
    /// The vector's file name.
    pub name: String,
    /// Its `about`.
    pub about: String,
    /// Every way the plugin's report differed from `expect`; empty if it passed.
    pub mismatches: Vec<String>,
    /// Fuel the plugin used across the vector's hook calls.
    pub fuel: u64,
    /// Wall-clock microseconds of those hook calls.
    pub micros: u64,
}

impl VectorOutcome {
    /// Whether the plugin decided as the vector expects.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// The vector files in `dir` (`*.json`), sorted by name.
pub fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    super::files(dir, "json")
}

/// Run one vector file against `plugin`. `Err` means the file itself is
/// unusable (unreadable, not a vector); a plugin that decides otherwise than
/// expected is an `Ok` with mismatches.
pub fn run(plugin: &Plugin, path: &Path) -> Result<VectorOutcome, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let vector: VectorFile =
        serde_json::from_str(&text).map_err(|e| format!("{} is not a test vector: {e}", path.display()))?;
    if vector.call.is_some() == vector.list.is_some() {
        return Err(format!("{}: give exactly one of \"call\" and \"list\"", path.display()));
    }
    if vector.result.is_some() && vector.call.is_none() {
        return Err(format!("{}: \"result\" needs a \"call\"", path.display()));
    }
    let mut outcome = VectorOutcome { name, about: vector.about, mismatches: Vec::new(), fuel: 0, micros: 0 };
    let config_json = vector.config.unwrap_or_else(|| Value::Object(Map::new())).to_string();
    let mut expect = vector.expect;
    let expected_problems = expect.remove("config_problems");

    match (plugin.validate_config(&config_json), expected_problems) {
        (Ok(()), Some(problems)) => {
            outcome.mismatches.push(format!("config_problems: expected {problems}, but the config was accepted"));
            return Ok(outcome);
        }
        (Err(LoadError::Config { problems, .. }), Some(expected)) => {
            outcome.mismatches.extend(problems_mismatch(&problems, &expected));
            return Ok(outcome);
        }
        (Err(e), _) => {
            outcome.mismatches.push(format!("the config was refused: {e}"));
            return Ok(outcome);
        }
        (Ok(()), None) => {}
    }

    let chain = Chain::new(vec![Link {
        plugin: plugin.clone(),
        config_json,
        fail_open: false,
        source: "vector".into(),
        pack: None,
    }]);
    let report = match (vector.call, vector.list) {
        (Some(call), _) => run_call(&chain, call, vector.result),
        (None, Some(list)) => run_list(&chain, list),
        (None, None) => unreachable!("checked above"),
    };
    outcome.fuel = report.steps.iter().map(|s| s.fuel).sum();
    outcome.micros = report.steps.iter().map(|s| s.micros).sum();
    outcome.mismatches = report_mismatches(&report, &expect);
    Ok(outcome)
}

/// Where `report` differs from what `expect` asks of it.
fn report_mismatches(report: &Report, expect: &Map<String, Value>) -> Vec<String> {
    let actual = serde_json::to_value(report).expect("a report serialises");
    let mut mismatches = Vec::new();
    for (key, want) in expect {
        if key == "reason_contains" {
            let reason = actual.get("reason").and_then(Value::as_str).unwrap_or_default();
            match want.as_str() {
                Some(part) if reason.contains(part) => {}
                _ => mismatches.push(format!("reason: expected it to contain {want}, got {reason:?}")),
            }
            continue;
        }
        let got = actual.get(key).unwrap_or(&Value::Null);
        if got != want {
            mismatches.push(format!("{key}: expected {want}, got {got}"));
        }
    }
    // A failed plugin is never what a vector means by deny: say so.
    for step in report.steps.iter().filter(|s| s.outcome == "failed") {
        mismatches.push(format!("the plugin failed: {}", step.detail));
    }
    mismatches
}

/// Where the problems `validate-config` reported differ from the expected
/// substrings.
fn problems_mismatch(problems: &[String], expected: &Value) -> Vec<String> {
    let Some(expected) = expected.as_array() else {
        return vec![format!("config_problems: must be a list of strings, got {expected}")];
    };
    if problems.len() != expected.len() {
        return vec![format!("config_problems: expected {} problems, got {problems:?}", expected.len())];
    }
    problems
        .iter()
        .zip(expected)
        .filter(|(got, want)| !want.as_str().is_some_and(|part| got.contains(part)))
        .map(|(got, want)| format!("config_problems: expected one containing {want}, got {got:?}"))
        .collect()
}
