//! The injection sanitizer's scorer, on the fixed corpora: the one in the
//! repository and the one `cargo xtask peers` builds from AgentDojo. The
//! measured rates must not fall below the ones the plugin's README states,
//! and a bad corpus is refused with the line at fault.

use std::process::Command;

use e2e::{Scratch, bin, peers, root};
use serde_json::Value;

/// (detection %, payload kept %, false positives %) as the README's table
/// states them for the corpus whose row starts with `row`.
fn stated(row: &str) -> (f64, f64, f64) {
    let readme = std::fs::read_to_string(root().join("plugins/injection-sanitizer/README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with(row)).unwrap_or_else(|| panic!("no README row {row:?}"));
    let cells: Vec<f64> =
        line.split('|').filter_map(|c| c.trim().strip_suffix('%')).map(|c| c.parse().unwrap()).collect();
    assert_eq!(cells.len(), 3, "{line}");
    (cells[0], cells[1], cells[2])
}

/// Run `warden policy eval` on the quick-start chain over `corpus`.
fn eval_command(corpus: &std::path::Path, json: bool) -> std::process::Output {
    let mut command = Command::new(bin("warden"));
    command.args(["policy", "eval", "--chain"]).arg(root().join("policies/quickstart.toml"));
    command.arg("--corpus").arg(corpus).args(json.then_some("--json"));
    command.output().unwrap()
}

fn eval(corpus: &std::path::Path) -> Value {
    let output = eval_command(corpus, true);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn percent(tally: &Value, field: &str) -> f64 {
    100.0 * tally[field].as_f64().unwrap() / tally["cases"].as_f64().unwrap()
}

#[test]
fn the_sanitizer_holds_its_stated_rates() {
    let agentdojo = peers().join("corpus/agentdojo");
    assert!(agentdojo.join("agentdojo-injected.jsonl").exists(), "run `cargo xtask peers`");
    for (row, corpus) in
        [("| `corpus/`", root().join("plugins/injection-sanitizer/corpus")), ("| AgentDojo", agentdojo)]
    {
        let (detection, kept, false_positives) = stated(row);
        let report = eval(&corpus);
        let measured = (
            percent(&report["injected"], "detected"),
            percent(&report["injected"], "payload_kept_out"),
            percent(&report["benign"], "detected"),
        );
        assert!(report["injected"]["cases"].as_u64().unwrap() >= 40, "{row}: {report}");
        assert!(report["benign"]["cases"].as_u64().unwrap() >= 39, "{row}: {report}");
        // The README rounds to one decimal.
        assert!(
            measured.0 >= detection - 0.05 && measured.1 >= kept - 0.05 && measured.2 <= false_positives + 0.05,
            "{row}: measured {measured:?}, README states ({detection}, {kept}, {false_positives}); misses: {}",
            report["misses"]
        );
    }
}

#[test]
fn a_bad_corpus_is_refused_with_its_line() {
    let dir = Scratch::new("corpus");
    for (cases, problem) in [
        (
            "{\"id\": \"a\", \"technique\": \"t\", \"text\": \"hello\"}\n{\"id\": \"b\"}\n",
            "cases.jsonl:2: not a corpus case",
        ),
        (
            "{\"id\": \"a\", \"technique\": \"t\", \"text\": \"hello\", \"payload\": \"not in the text\"}\n",
            "cases.jsonl:1: the payload must be a non-empty part of the text",
        ),
    ] {
        std::fs::write(dir.path().join("cases.jsonl"), cases).unwrap();
        let output = eval_command(dir.path(), false);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(problem), "{stderr}");
    }
}
