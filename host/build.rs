//! Builds the policy plugins under `plugins/` as WebAssembly components.
//!
//! The gateway embeds the four reference policies (`builtin:<name>` in a chain
//! config), and the tests load the hostile test plugin, so both need the
//! components before the host compiles. They are built with a nested
//! `cargo build --target wasm32-wasip2 --profile plugin` into a target folder
//! of their own (sharing the host's would deadlock on its lock), and the folder
//! is handed to the crate as `WARDEN_PLUGIN_DIR`.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// Plugin packages to build: the reference policies, the test plugins (one
/// built against the frozen 0.1.0 contract), and the SDK example (which the
/// tests load, so the example cannot rot).
const PLUGINS: [&str; 7] =
    ["rbac", "chain-detect", "injection-sanitizer", "tenant-filter", "hostile", "contract-0-1-0", "read-only-mode"];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().to_path_buf();
    for watched in ["plugins", "wit", "examples/custom-policy", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // Profiling keeps the plugins' function names (bench/README.md).
    println!("cargo:rerun-if-env-changed=CARGO_PROFILE_PLUGIN_STRIP");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    require_wasm_target();

    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = out_dir.ancestors().nth(4).unwrap().join("wasm-plugins");

    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "--quiet", "--target", TARGET, "--profile", "plugin", "--target-dir"])
        .arg(&target_dir);
    for plugin in PLUGINS {
        build.args(["--package", plugin]);
    }
    // Settings meant for the host build must not leak into the Wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        build.env_remove(var);
    }
    let status = build.status().expect("failed to run cargo for the policy plugins");
    if !status.success() {
        panic!("building the policy plugins for {TARGET} failed (see the errors above)");
    }

    let plugin_dir = target_dir.join(TARGET).join("plugin");
    for plugin in PLUGINS {
        let file = plugin_dir.join(format!("{}.wasm", plugin.replace('-', "_")));
        assert!(file.exists(), "{} was not built", file.display());
    }
    println!("cargo:rustc-env=WARDEN_PLUGIN_DIR={}", plugin_dir.display());
}

/// Fail early, with the fix, when the Wasm target is missing.
fn require_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let installed = sysroot.is_some_and(|root| Path::new(&root).join("lib/rustlib").join(TARGET).exists());
    if !installed {
        panic!(
            "the {TARGET} target is not installed; run `rustup target add {TARGET}` \
             (`cargo xtask quickstart` and `cargo xtask test` do this for you)"
        );
    }
}
