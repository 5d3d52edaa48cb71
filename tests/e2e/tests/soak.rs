//! The soak harness (`warden-bench soak`) keeps working: a short run of its
//! mixed traffic (both eras, listings, denials, a crashing upstream, chain
//! reloads) against the built gateway gets only the answers each request
//! must get. The ten-minute run and its numbers are in bench/README.md.

use e2e::bin;

#[test]
fn a_short_soak_gets_only_expected_answers() {
    let output = std::process::Command::new(bin("warden-bench"))
        .args(["soak", "--seconds", "15", "--warden"])
        .arg(bin("warden"))
        .output()
        .expect("run warden-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "the soak failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains(" 0 unexpected"), "{stdout}");
}
