//! docs/writing-policies.md, run as written: every `sh` block in order, in
//! an empty folder, with `warden` on PATH. The same policy built in Rust,
//! Python and JavaScript must pass the guide's vectors each time, and the
//! pack must build and be signed.

use std::process::Command;

use e2e::{Scratch, bin, peers, root};

#[test]
fn the_policy_guide_works_as_written() {
    let guide = std::fs::read_to_string(root().join("docs/writing-policies.md")).unwrap();
    let mut script = String::from("set -eu\n");
    let mut rest = guide.as_str();
    while let Some(start) = rest.find("```sh\n") {
        let block = &rest[start + 6..];
        let end = block.find("```").expect("a closed block");
        script.push_str(&block[..end]);
        rest = &block[end..];
    }
    assert!(script.contains("componentize-py") && script.contains("componentize-js"), "{script}");

    let dir = Scratch::new("guide");
    let warden_dir = bin("warden").parent().unwrap().to_owned();
    // Node 22 from the peers, as the rest of the suite uses.
    let node = peers().join("node/node_modules/.bin");
    let path = std::env::join_paths(
        [warden_dir, node].into_iter().chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let mut command = Command::new("bash");
    command.arg("-c").arg(&script).current_dir(dir.path()).env("PATH", path).env("WARDEN_SRC", root());
    // The guide's own cargo build must not inherit this test's build settings.
    for var in ["CARGO_TARGET_DIR", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"] {
        command.env_remove(var);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the guide's commands failed:\n{text}");
    assert_eq!(text.matches("4 passed, 0 failed").count(), 3, "one run of the vectors per language:\n{text}");
    let pack = dir.path().join("no-deletes-0.1.0");
    assert!(pack.join("manifest.toml.minisig").exists(), "the pack was not built and signed:\n{text}");
}
