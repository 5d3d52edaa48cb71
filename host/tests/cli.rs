//! Black-box tests of the `warden` binary: the documented `policy test`
//! examples (examples/policy-test/README.md) and the golden error output for
//! invalid configuration (tests/invalid-configs/*.err).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn warden(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_warden")).current_dir(dir).args(args).output().unwrap();
    if output.status.code() == Some(2) {
        panic!("warden {args:?} could not run:\n{}", String::from_utf8_lossy(&output.stderr));
    }
    output
}

/// Run `policy test` on the quick-start chain; return exit code and the JSON report.
fn policy_test(args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["policy", "test", "--json"];
    all.extend_from_slice(args);
    let output = warden(&root(), &all);
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    (output.status.code().unwrap(), report)
}

const CHAIN: &str = "policies/quickstart.toml";

fn call(file: &str) -> String {
    format!("examples/policy-test/{file}")
}

#[test]
fn an_analyst_may_query() {
    let (code, report) = policy_test(&["--chain", CHAIN, "--call", &call("analyst-query.call.json")]);
    assert_eq!((code, report["verdict"].as_str()), (0, Some("allow")));
    assert_eq!(report["steps"].as_array().unwrap().len(), 2, "rbac and chain-detect have on-call");
}

#[test]
fn an_analyst_may_not_write() {
    let (code, report) = policy_test(&["--chain", CHAIN, "--call", &call("analyst-write.call.json")]);
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], "deny");
    assert_eq!(report["plugin"], "rbac");
    assert_eq!(report["code"], "forbidden");
    assert_eq!(report["steps"].as_array().unwrap().len(), 1, "the chain stops at the first deny");
}

#[test]
fn query_then_write_is_a_blocked_chain() {
    let (code, report) = policy_test(&["--chain", CHAIN, "--call", &call("engineer-query-then-write.call.json")]);
    assert_eq!(code, 1);
    assert_eq!((report["plugin"].as_str(), report["code"].as_str()), (Some("chain-detect"), Some("blocked-chain")));
}

#[test]
fn destructive_arguments_to_a_high_risk_tool_need_approval() {
    let (code, report) = policy_test(&["--chain", CHAIN, "--call", &call("engineer-delete.call.json")]);
    assert_eq!(code, 1);
    assert_eq!(report["verdict"], "ask");
    assert!(report["reason"].as_str().unwrap().contains("destructive arguments (\"drop\")"), "{report}");
}

#[test]
fn results_lose_other_tenants_rows_and_injections() {
    let args =
        ["--chain", CHAIN, "--call", &call("analyst-query.call.json"), "--result", &call("sales-rows.result.json")];
    let (code, report) = policy_test(&args);
    assert_eq!(code, 0);
    let result = report["result"].to_string();
    assert!(!result.contains("globex") && !result.contains("confidential"), "{result}");
    assert!(!result.contains("Ignore all previous instructions"), "{result}");
    assert!(result.contains("[redacted by warden]"), "{result}");
    let rows = report["result"]["structuredContent"]["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["id"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
}

#[test]
fn listings_hide_forbidden_and_poisoned_tools() {
    let (code, report) = policy_test(&["--chain", CHAIN, "--list", &call("demo-tools.list.json")]);
    assert_eq!(code, 0);
    let fates: Vec<(String, String)> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_owned(), t["visibility"].as_str().unwrap().to_owned()))
        .collect();
    let expected =
        [("query_analytics_db", "shown"), ("write_workspace_file", "hidden"), ("query_analytics_db_fast", "hidden")];
    assert_eq!(fates, expected.map(|(n, v)| (n.to_owned(), v.to_owned())));
    assert_eq!(report["tools"][2]["plugin"], "injection-sanitizer");
}

#[test]
fn a_single_plugin_can_be_tested_alone() {
    let (code, report) =
        policy_test(&["--plugin", "builtin:chain-detect", "--call", &call("engineer-query-then-write.call.json")]);
    assert_eq!(code, 1);
    assert_eq!(report["plugin"], "chain-detect");
}

#[test]
fn text_output_names_each_plugin_and_the_verdict() {
    let output = warden(&root(), &["policy", "test", "--chain", CHAIN, "--call", &call("analyst-write.call.json")]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with("rbac "), "{text}");
    assert!(text.contains("DENY by rbac (forbidden): demo-acme-analyst (analyst) is not allowed"), "{text}");
}

#[test]
fn unreadable_inputs_exit_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .current_dir(root())
        .args(["policy", "test", "--plugin", "builtin:rbac", "--call", "no-such-file.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read no-such-file.json"));
}

#[test]
fn every_chain_in_the_repository_checks() {
    let mut checked = 0;
    for dir in ["policies", "examples"] {
        for file in walk(&root().join(dir)).into_iter().filter(|f| is_chain_file(f)) {
            let output = warden(&root(), &["check", "--chain", file.to_str().unwrap()]);
            assert!(output.status.success(), "{}:\n{}", file.display(), String::from_utf8_lossy(&output.stderr));
            checked += 1;
        }
    }
    assert!(checked >= 1);
}

/// Chain files are the TOML files with `[[plugin]]` tables, except policy
/// pack sources (`pack.toml`, which the packs end-to-end test builds).
fn is_chain_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml")
        && path.file_name().is_some_and(|n| n != "pack.toml")
        && fs::read_to_string(path).unwrap().contains("[[plugin]]")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn invalid_configs_list_every_problem_and_exit_64() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid-configs");
    let mut seen = 0;
    for file in walk(&dir).into_iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let output = warden(&dir, &["check", "--chain", name]);
        assert_eq!(output.status.code(), Some(64), "{name}");
        let expected = fs::read_to_string(file.with_extension("err")).unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stderr), expected, "{name}: stderr differs from its .err file");
        seen += 1;
    }
    assert!(seen >= 3);
}

#[test]
fn the_sdk_example_policy_works_as_documented() {
    let plugin = concat!(env!("WARDEN_PLUGIN_DIR"), "/read_only_mode.wasm");
    let dir = "examples/custom-policy";
    let args = [
        "--plugin",
        plugin,
        "--plugin-config",
        &format!("{dir}/config.json"),
        "--call",
        &format!("{dir}/write.call.json"),
    ];
    let (code, report) = policy_test(&args);
    assert_eq!(code, 1);
    assert_eq!(report["code"], "read-only-mode");
    assert_eq!(report["reason"], "demo/write_workspace_file may change data");
    // Read-only tools pass.
    let (code, _) = policy_test(&["--plugin", plugin, "--call", &call("analyst-query.call.json")]);
    assert_eq!(code, 0);
}

#[test]
fn pack_commands_refuse_what_is_not_a_pack_or_a_key() {
    let dir = std::env::temp_dir().join(format!("warden-cli-pack-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_warden")).current_dir(&dir).args(args).output().unwrap();

    let built = run(&["pack", "build", "no-such-source"]);
    assert_eq!(built.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&built.stderr).contains("no-such-source/pack.toml: cannot read the pack source"));

    let keys = run(&["keygen", "--out", "vendor"]);
    assert!(keys.status.success(), "{}", String::from_utf8_lossy(&keys.stderr));
    let verified = run(&["pack", "verify", ".", "--key", "vendor.pub"]);
    assert_eq!(verified.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&verified.stderr).contains("cannot read the pack manifest"));

    let again = run(&["keygen", "--out", "vendor"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("vendor.key already exists; not overwriting a key"));
    let signed = run(&["pack", "sign", ".", "--key", "vendor.pub"]);
    assert_eq!(signed.status.code(), Some(64), "not a pack, before the key is even read");
    let not_a_key = run(&["pack", "verify", ".", "--key", "vendor.key"]);
    assert_eq!(not_a_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&not_a_key.stderr).contains("vendor.key is not a minisign public key"));
    fs::remove_dir_all(&dir).unwrap();
}

/// `policy test --vectors` on one plugin: exit code and the text it printed.
fn vectors(plugin: &str, dir: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_warden"))
        .current_dir(root())
        .args(["policy", "test", "--plugin", plugin, "--vectors", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

#[test]
fn every_reference_policy_passes_its_vectors() {
    for plugin in ["rbac", "chain-detect", "tenant-filter", "injection-sanitizer"] {
        let dir = root().join("plugins").join(plugin).join("vectors");
        let count = fs::read_dir(&dir).unwrap().count();
        let (code, text) = vectors(&format!("builtin:{plugin}"), &dir);
        assert_eq!(code, 0, "{plugin}:\n{text}");
        assert!(text.ends_with(&format!("{count} passed, 0 failed\n")), "{plugin}:\n{text}");
    }
}

#[test]
fn a_vector_the_plugin_disagrees_with_fails_the_run_and_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let write = fs::read_to_string(root().join("examples/policy-test/analyst-write.call.json")).unwrap();
    let vector = format!(
        r#"{{ "about": "wrongly expects the write to pass",
             "config": {{ "default": "deny", "roles": {{ "analyst": {{ "allow": ["demo/query_*"] }} }} }},
             "call": {write}, "expect": {{ "verdict": "allow" }} }}"#
    );
    fs::write(dir.path().join("wrong.json"), vector).unwrap();
    let (code, text) = vectors("builtin:rbac", dir.path());
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL wrong.json"), "{text}");
    assert!(text.contains(r#"verdict: expected "allow", got "deny""#), "{text}");
    assert!(text.ends_with("0 passed, 1 failed\n"), "{text}");

    // A file that is not a vector cannot be judged: the run stops (exit 2).
    fs::write(dir.path().join("wrong.json"), r#"{ "about": "no expectation", "call": {} }"#).unwrap();
    let (code, text) = vectors("builtin:rbac", dir.path());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("wrong.json is not a test vector"), "{text}");
}
