//! Policies written in Python and JavaScript, built from source by
//! `cargo xtask peers` (componentize-py, componentize-js), pass their test
//! vectors and guard a running gateway like the Rust ones.

use std::{path::PathBuf, process::Command};

use e2e::{Scratch, bin, echo_gateway, peers, root};
use serde_json::{Value, json};

/// (component, its vectors) for each policy not written in Rust.
fn policies() -> [(PathBuf, PathBuf); 2] {
    let built = peers().join("plugins");
    [
        (built.join("pii_redactor.wasm"), root().join("plugins/python/pii-redactor/vectors")),
        (built.join("argument_allowlist.wasm"), root().join("plugins/javascript/argument-allowlist/vectors")),
    ]
}

#[test]
fn python_and_javascript_policies_pass_their_vectors() {
    for (component, vectors) in policies() {
        assert!(component.exists(), "{} is missing: run `cargo xtask peers`", component.display());
        let count = std::fs::read_dir(&vectors).unwrap().count();
        let output = Command::new(bin("warden"))
            .args(["policy", "test", "--plugin"])
            .arg(&component)
            .arg("--vectors")
            .arg(&vectors)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{}:\n{text}", component.display());
        assert!(text.ends_with(&format!("{count} passed, 0 failed\n")), "{}:\n{text}", component.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_javascript_policies_guard_a_running_gateway() {
    let dir = Scratch::new("polyglot");
    let [(redactor, _), (allowlist, _)] = policies();
    let chain = format!(
        r#"
[[plugin]]
name = "argument-allowlist"
source = "{}"
[plugin.config]
default = "deny"
[plugin.config.tools."echo/echo".text]
maxLength = 200

[[plugin]]
name = "pii-redactor"
source = "{}"
"#,
        allowlist.display(),
        redactor.display()
    );
    let warden = echo_gateway(&dir, "polyglot", &chain, "");

    // The JavaScript policy lets the call through; the Python one redacts
    // what the upstream echoed before the client sees it.
    let result =
        warden.call_tool(1, "echo", json!({"text": "write to ada@example.com or +1 555-123-4567"})).await.unwrap();
    let echoed: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, json!({"text": "write to [email redacted] or [phone redacted]"}), "{result}");

    // An argument the allow-list does not name never reaches the upstream.
    let error = warden.call_tool(2, "echo", json!({"text": "hi", "behavior": "spin"})).await.unwrap_err();
    assert_eq!(error["code"], -32010, "{error}");
    assert_eq!(error["data"]["plugin"], "argument-allowlist", "{error}");
    assert_eq!(error["data"]["code"], "argument-not-allowed", "{error}");
    assert_eq!(error["data"]["reason"], r#"argument "behavior" is not allowed for echo/echo"#, "{error}");
    // A tool the allow-list does not name is refused (default = "deny").
    let error = warden.call_tool(3, "env", json!({})).await.unwrap_err();
    assert_eq!(error["data"]["code"], "argument-not-allowed", "{error}");
}
