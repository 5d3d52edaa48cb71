//! Project tasks, so that set-up is one command on a fresh machine:
//!
//! - `cargo xtask quickstart` — build Warden, the reference policies and the
//!   demo upstream (dev profile, dependencies optimised), then serve
//!   `examples/quickstart/warden.toml` on <http://127.0.0.1:8080/mcp>.
//! - `cargo xtask test` — the whole suite: formatting, lints, every crate's
//!   tests, and the end-to-end tests against real peers (the Python MCP SDK,
//!   the MCP Inspector CLI, npm and PyPI servers, the official conformance
//!   suite, `redis-server` and `haproxy`), which it installs first: the npm
//!   and PyPI ones under `target/peers`, the Debian ones with apt-get.
//! - `cargo xtask peers` — only install the test peers, and build the
//!   policies written in Python and JavaScript with them.
//! - `cargo xtask bench` — the benchmarks (see bench/README.md).
//! - `cargo xtask eval` — the injection sanitizer's full evaluation: the
//!   quick-start chain against its own corpus and the one built from AgentDojo
//!   (see plugins/injection-sanitizer/README.md).
//!
//! Each step installs what it needs (the `wasm32-wasip2` target, the peers)
//! and says what it runs.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

/// The conformance suite version the results in tests/conformance are for.
const CONFORMANCE: &str = "@modelcontextprotocol/conformance@0.2.0-alpha.12";
/// npm packages the end-to-end tests run, pinned.
const NPM_PEERS: [&str; 2] =
    ["@modelcontextprotocol/inspector@2.12.0", "@modelcontextprotocol/server-everything@2026.8.31"];
/// The JavaScript policies' componentizer, pinned. Installed in a folder of
/// its own: beside the Inspector, npm resolves its dependencies wrongly.
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";
/// Debian packages the end-to-end tests run (a real Redis for shared limits,
/// a real load balancer in front of several gateways): (binary, package).
const DEBIAN_PACKAGES: [(&str, &str); 2] = [("redis-server", "redis-server"), ("haproxy", "haproxy")];
/// PyPI packages the end-to-end tests run, pinned.
/// (kubernetes-validate checks deploy/kubernetes offline against the API's
/// schemas; componentize-py builds the Python policies.)
const PYPI_PEERS: [&str; 4] =
    ["mcp==2.3.0", "mcp-server-time==2026.10.19", "kubernetes-validate==1.37.0", "componentize-py==0.25.1"];
/// The prompt-injection benchmark whose environments, attack templates and
/// attacker goals make part of the injection sanitizer's corpus. Only its
/// wheel is downloaded (not installed: its dependencies are large and unused).
const AGENTDOJO: &str = "agentdojo==0.1.35";

/// A policy written in a language other than Rust, built from source into
/// `<peers>/plugins/<name>.wasm` by that language's componentizer.
struct ForeignPlugin {
    /// The component's file name, without `.wasm`.
    name: &'static str,
    /// Its source folder under `plugins/`.
    dir: &'static str,
    /// The world of wit/ it is built for.
    world: &'static str,
    language: Language,
}

enum Language {
    /// componentize-py; the module to wrap.
    Python { module: &'static str },
    /// componentize-js; the source file.
    JavaScript { source: &'static str },
}

const FOREIGN_PLUGINS: [ForeignPlugin; 2] = [
    ForeignPlugin {
        name: "pii_redactor",
        dir: "plugins/python/pii-redactor",
        world: "result-policy",
        language: Language::Python { module: "pii_redactor" },
    },
    ForeignPlugin {
        name: "argument_allowlist",
        dir: "plugins/javascript/argument-allowlist",
        world: "call-policy",
        language: Language::JavaScript { source: "policy.js" },
    },
];

fn main() -> ExitCode {
    let task = env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "quickstart" => quickstart(),
        "test" => test(),
        "peers" => peers().map(|_| ()),
        "bench" => bench(),
        "eval" => eval(),
        _ => {
            eprintln!("usage: cargo xtask <quickstart|test|peers|bench|eval>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {task}: {message}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_owned()
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// Run a command from the repository root, echoing it; fail on a non-zero exit.
fn run(command: &mut Command) -> Result<(), String> {
    command.current_dir(root());
    eprintln!("+ {}", describe(command));
    let status = command.status().map_err(|e| format!("cannot run {}: {e}", describe(command)))?;
    if status.success() { Ok(()) } else { Err(format!("{} failed ({status})", describe(command))) }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program().to_string_lossy().into_owned())
        .chain(command.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The policy plugins are WebAssembly components: the target must be there.
/// `rustup target add` installs only the target, never a newer toolchain.
fn wasm_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup is needed to add the wasm32-wasip2 target: {e}"))?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") {
        return Ok(());
    }
    run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
}

fn quickstart() -> Result<(), String> {
    wasm_target()?;
    // The dev profile (dependencies optimised, see Cargo.toml): on a fresh
    // machine it builds in about half the time of --release, and `cargo
    // xtask test` reuses what it built. `cargo xtask bench` builds release.
    run(cargo().args(["build", "-p", "warden", "-p", "demo-upstream"]))?;
    let bin = target_dir().join("debug");
    std::fs::create_dir_all(target_dir().join("quickstart")).map_err(|e| e.to_string())?;
    // The quick-start config names the demo upstream by command; put it on PATH.
    let path =
        env::join_paths(std::iter::once(bin.clone()).chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())))
            .map_err(|e| e.to_string())?;
    eprintln!(
        "\nServing the quick start on http://127.0.0.1:8080/mcp (Ctrl-C stops it).\n\
         Demo API keys: demo-acme-analyst, demo-acme-engineer, demo-globex-analyst.\n"
    );
    run(Command::new(bin.join("warden"))
        .args(["serve", "--config", "examples/quickstart/warden.toml"])
        .env("PATH", path))
}

/// Whether `name` is an executable on PATH or in the system folders
/// (haproxy lives in /usr/sbin, which a user's PATH may lack).
fn installed(name: &str) -> bool {
    env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .any(|dir: PathBuf| dir.join(name).is_file())
}

/// Install the Debian packages the tests need, if missing (with sudo
/// unless already root).
fn system_packages() -> Result<(), String> {
    let missing: Vec<&str> = DEBIAN_PACKAGES.iter().filter(|(bin, _)| !installed(bin)).map(|(_, p)| *p).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let apt = |args: &[&str]| {
        let mut command = if root { Command::new("apt-get") } else { Command::new("sudo") };
        if !root {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(&mut apt(&["update", "-qq"]))?;
    run(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(&missing))
}

/// Install the test peers under target/peers (skipping what is there).
fn peers() -> Result<PathBuf, String> {
    system_packages()?;
    let peers = target_dir().join("peers");
    std::fs::create_dir_all(&peers).map_err(|e| e.to_string())?;
    let venv = peers.join("venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let stamp = peers.join("pypi.done");
    if std::fs::read_to_string(&stamp).unwrap_or_default() != PYPI_PEERS.join(" ") {
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet"]).args(PYPI_PEERS))?;
        std::fs::write(&stamp, PYPI_PEERS.join(" ")).map_err(|e| e.to_string())?;
    }
    // The conformance CLI needs Node 22; the system's may be older.
    let node = peers.join("node/node_modules/.bin/node");
    if !node.exists() {
        run(Command::new("npm").args(["install", "--silent", "--prefix"]).arg(peers.join("node")).arg("node@22"))?;
    }
    let node_bin = peers.join("node/node_modules/.bin");
    let path =
        env::join_paths(std::iter::once(node_bin).chain(env::split_paths(&env::var_os("PATH").unwrap_or_default())))
            .map_err(|e| e.to_string())?;
    for (dir, packages) in
        [("conformance", vec![CONFORMANCE]), ("npm", NPM_PEERS.to_vec()), ("componentize-js", vec![COMPONENTIZE_JS])]
    {
        let stamp = peers.join(format!("{dir}.done"));
        if std::fs::read_to_string(&stamp).unwrap_or_default() != packages.join(" ") {
            run(Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(peers.join(dir))
                .args(&packages)
                .env("PATH", &path))?;
            std::fs::write(&stamp, packages.join(" ")).map_err(|e| e.to_string())?;
        }
    }
    foreign_plugins(&peers)?;
    agentdojo_corpus(&peers)?;
    Ok(peers)
}

/// Download AgentDojo's wheel and build the corpus cases from it into
/// `<peers>/corpus/agentdojo`, unless a stamp says it was built from the same
/// version and the same corpus folder (the builder script lives there).
fn agentdojo_corpus(peers: &Path) -> Result<(), String> {
    let out = peers.join("corpus/agentdojo");
    let script = root().join("plugins/injection-sanitizer/corpus/agentdojo.py");
    let stamp = out.join("built-from");
    let source = format!("{AGENTDOJO} {}", source_digest("plugins/injection-sanitizer/corpus")?);
    if std::fs::read_to_string(&stamp).unwrap_or_default() == source {
        return Ok(());
    }
    let wheels = peers.join("wheels");
    run(Command::new(peers.join("venv/bin/python"))
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
        .arg(&wheels)
        .arg(AGENTDOJO))?;
    let version = AGENTDOJO.trim_start_matches("agentdojo==");
    let wheel = wheels.join(format!("agentdojo-{version}-py3-none-any.whl"));
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    run(Command::new(peers.join("venv/bin/python")).arg(&script).arg(&wheel).arg(&out))?;
    std::fs::write(&stamp, source).map_err(|e| e.to_string())
}

/// Build the Python and JavaScript policies with the componentizers just
/// installed. Each takes 10-20 s, so a build is skipped when a stamp beside
/// the component says it was made from the same sources, contract and tools.
fn foreign_plugins(peers: &Path) -> Result<(), String> {
    let out = peers.join("plugins");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    for plugin in FOREIGN_PLUGINS {
        let component = out.join(format!("{}.wasm", plugin.name));
        let stamp = out.join(format!("{}.sources", plugin.name));
        let sources = source_digest(plugin.dir)?;
        if component.exists() && std::fs::read_to_string(&stamp).unwrap_or_default() == sources {
            continue;
        }
        let mut command = match plugin.language {
            Language::Python { module } => {
                let mut command = Command::new(peers.join("venv/bin/componentize-py"));
                command
                    .args(["--quiet", "-d", "wit", "-w", plugin.world, "componentize", module, "-p", plugin.dir, "-o"])
                    .arg(&component);
                command
            }
            Language::JavaScript { source } => {
                let mut command = Command::new(peers.join("componentize-js/node_modules/.bin/componentize-js"));
                // Every WASI feature off: the component imports only the contract.
                command
                    .arg(Path::new(plugin.dir).join(source))
                    .args(["--wit", "wit", "-n", plugin.world, "-d", "stdio", "random", "clocks", "http"])
                    .args(["fetch-event", "-o"])
                    .arg(&component);
                command
            }
        };
        run(&mut command)?;
        std::fs::write(&stamp, sources).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A digest of what a foreign plugin is built from: its folder's files (the
/// vectors aside), the contract and the pinned toolchains. Not
/// cryptographic: it only decides whether to rebuild.
fn source_digest(dir: &str) -> Result<String, String> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut files = vec![root().join("wit/policy.wit")];
    let entries = std::fs::read_dir(root().join(dir)).map_err(|e| format!("cannot read {dir}: {e}"))?;
    files.extend(entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()));
    files.sort();
    let mut hasher = DefaultHasher::new();
    (PYPI_PEERS, COMPONENTIZE_JS).hash(&mut hasher);
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?.hash(&mut hasher);
    }
    Ok(format!("{:016x}", hasher.finish()))
}

fn test() -> Result<(), String> {
    wasm_target()?;
    let peers = peers()?;
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // The end-to-end tests spawn the binaries; build them all first.
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    run(cargo().args(["test", "--workspace"]).env("WARDEN_PEERS", &peers))?;
    // The benchmarks must keep building and running: each runs once, in the
    // test profile (their speed is measured by `cargo xtask bench`, not here).
    // `--workspace`, not `-p warden`: the same feature set as the builds above,
    // so no dependency is compiled a second time.
    run(cargo().args(["test", "--workspace", "--benches"]).env("WARDEN_PEERS", &peers))
}

/// The injection sanitizer's full evaluation, with the quick-start chain.
fn eval() -> Result<(), String> {
    wasm_target()?;
    let peers = peers()?;
    run(cargo().args(["build", "-p", "warden", "--bin", "warden"]))?;
    let corpus = root().join("plugins/injection-sanitizer/corpus");
    run(Command::new(target_dir().join("debug/warden"))
        .args(["policy", "eval", "--chain"])
        .arg(root().join("policies/quickstart.toml"))
        .arg("--corpus")
        .arg(corpus)
        .arg("--corpus")
        .arg(peers.join("corpus/agentdojo")))
}

/// The chain microbenchmark (divan), then the gateway overhead load test;
/// both write their tables to stdout (bench/README.md records them).
fn bench() -> Result<(), String> {
    wasm_target()?;
    // The chain bench measures the Python and JavaScript policies too.
    let peers = peers()?;
    run(cargo().args(["bench", "-p", "warden", "--bench", "chain", "--bench", "limits"]).env("WARDEN_PEERS", &peers))?;
    run(cargo().args(["build", "--release", "-p", "warden", "-p", "warden-bench"]))?;
    let extra: Vec<String> = env::args().skip(2).collect();
    run(Command::new(target_dir().join("release/warden-bench")).arg("run").args(&extra))?;
    run(Command::new(target_dir().join("release/warden-bench")).arg("neighbour").args(&extra))
}
