//! Hot reload, end to end: the chain file and its components are replaced
//! while calls flow; every call is decided by exactly one chain version (its
//! on-call and on-result both stamp theirs), none fails; a reload that fails at any step keeps the old chain; SIGHUP and the
//! admin endpoint reload too.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use e2e::{Scratch, Warden, bin};
use serde_json::json;

/// A built policy component.
fn component(name: &str) -> PathBuf {
    let target = bin("warden").parent().and_then(Path::parent).unwrap().to_owned();
    target.join("wasm-plugins/wasm32-wasip2/plugin").join(format!("{name}.wasm"))
}

/// Chain version `v`: two sanitizer components (files), each redacting one
/// phrase (and its line) with a marker naming the version, and a plugin that stamps the
/// version on the arguments (on-call) and on the result (on-result). A
/// response marked by all four shows which version decided it, whole.
fn chain(v: &str) -> String {
    format!(
        r#"
[[plugin]]
name = "stamp"
source = "hostile.wasm"
[plugin.config]
behavior = "tag"
name = "{v}"

[[plugin]]
name = "first"
source = "first.wasm"
[plugin.config]
default_patterns = false
strip_invisible = false
phrases = ["alpha"]
replacement = "[{v}1]"

[[plugin]]
name = "second"
source = "second.wasm"
[plugin.config]
default_patterns = false
strip_invisible = false
phrases = ["beta"]
replacement = "[{v}2]"
"#
    )
}

/// Replace a file the way deploy tools do: write aside, rename over.
fn replace(path: &Path, contents: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn start(dir: &Path, watch: bool) -> Warden {
    std::fs::copy(component("injection_sanitizer"), dir.join("first.wasm")).unwrap();
    std::fs::copy(component("injection_sanitizer"), dir.join("second.wasm")).unwrap();
    std::fs::copy(component("hostile"), dir.join("hostile.wasm")).unwrap();
    std::fs::write(dir.join("chain.toml"), chain("A")).unwrap();
    Warden::start(&format!(
        r#"
[anonymous]
subject = "operator"
roles = ["ops"]

[admin]
role = "ops"

[policy]
chain = "{chain}"
watch = {watch}

[[upstream]]
name = "echo"
command = "python3"
args = ["{{root}}/tests/e2e/fakes/stdio_server.py"]
"#,
        chain = dir.join("chain.toml").display()
    ))
}

/// Which version decided an echo of "alpha" and "beta" (on two lines: the
/// sanitizer redacts a phrase with the rest of its line, and each of the two
/// must find its own): `Ok("A")`, or what was wrong.
async fn version(warden: &Warden, id: u64) -> Result<String, String> {
    let reply =
        warden.modern(&[], id, "tools/call", json!({"name": "echo", "arguments": {"text": "alpha\nbeta"}})).await;
    if reply.status != 200 {
        return Err(format!("HTTP {}: {}", reply.status, reply.body));
    }
    let message = reply.json();
    let result = &message["result"];
    let text = result["content"][0]["text"].as_str().ok_or_else(|| message.to_string())?.to_owned();
    // What the upstream received: the arguments as on-call left them.
    let arguments: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    for v in ["A", "B"] {
        if text.contains(&format!("[{v}1]")) && text.contains(&format!("[{v}2]")) {
            let other = if v == "A" { "B" } else { "A" };
            let stamps = (&arguments["touched_by"], &result["touched_by"]);
            if text.contains(&format!("[{other}"))
                || text.contains("alpha")
                || text.contains("beta")
                || stamps != (&json!([v]), &json!([v]))
            {
                return Err(format!("mixed versions: {message}"));
            }
            return Ok(v.to_owned());
        }
    }
    Err(format!("not decided by one version: {message}"))
}

/// Poll until `want` serves (bounded); how long it took.
async fn until_serving(warden: &Warden, want: &str) -> Duration {
    let started = Instant::now();
    let mut id = 1_000_000;
    loop {
        id += 1;
        if version(warden, id).await.as_deref() == Ok(want) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(20), "version {want} never served");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_swaps_under_load_fail_no_call_and_never_mix_versions() {
    let dir = Scratch::new("reload");
    let warden = Arc::new(start(dir.path(), true));
    assert_eq!(version(&warden, 1).await, Ok("A".to_owned()));

    // Four clients call without pause until the swaps are done (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for n in 0..4u64 {
        let (warden, stop, calls) = (Arc::clone(&warden), Arc::clone(&stop), Arc::clone(&calls));
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut id = n * 1_000_000;
            while !stop.load(Ordering::Relaxed) && id < (n + 1) * 1_000_000 - 1 {
                id += 1;
                if let Err(e) = version(&warden, id).await {
                    errors.push(e);
                }
                calls.fetch_add(1, Ordering::Relaxed);
            }
            errors
        }));
    }

    // Fifty swaps, alternating versions; each waits until the new one serves.
    let mut latencies = Vec::new();
    for swap in 0..50 {
        let next = if swap % 2 == 0 { "B" } else { "A" };
        replace(&dir.path().join("chain.toml"), chain(next).as_bytes());
        latencies.push(until_serving(&warden, next).await);
    }
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in load {
        errors.extend(task.await.unwrap());
    }
    assert!(errors.is_empty(), "{} failed or mixed calls, e.g. {:?}", errors.len(), &errors[..errors.len().min(3)]);
    // Calls kept flowing across the swaps, so the calls nearest each were checked too.
    let during = calls.load(Ordering::Relaxed);
    assert!(during >= 100, "only {during} calls during 50 swaps");
    let status = warden.admin_status().await;
    assert_eq!(status["reloads"]["failed"], 0, "{status}");
    assert!(status["reloads"]["succeeded"].as_u64().unwrap() >= 50, "{status}");
    latencies.sort();
    eprintln!(
        "{} calls during 50 swaps; file replaced -> new version serving: p50 {:?}, p99 {:?}",
        calls.load(Ordering::Relaxed),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_fails_at_any_step_keeps_the_old_chain() {
    let dir = Scratch::new("reload-faults");
    // No file watching: only the admin endpoint and SIGHUP reload here.
    let warden = start(dir.path(), false);
    let chain_file = dir.path().join("chain.toml");
    let reload = || async { warden.send_to(&warden.admin("/admin/reload"), hyper::Method::POST, &[], "").await };

    /// A way to break the chain: what, how, and what the refusal must say.
    type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let broken: Vec<Breakage> = vec![
        ("unreadable TOML", Box::new(|| replace(&chain_file, b"[[plugin]\nname = ")), "not valid TOML"),
        (
            "invalid plugin config",
            Box::new(|| replace(&chain_file, chain("B").replace("phrases = [\"beta\"]", "phrases = 7").as_bytes())),
            "phrases",
        ),
        (
            "a component that is not Wasm",
            Box::new(|| replace(&dir.path().join("second.wasm"), b"not a component")),
            "second",
        ),
        (
            "a plugin that traps on the smoke call",
            Box::new(|| {
                let mut text = chain("B");
                text.push_str("\n[[plugin]]\nname = \"trap\"\nsource = \"hostile.wasm\"\nfail_open = true\n[plugin.config]\nbehavior = \"panic\"\n");
                replace(&chain_file, text.as_bytes());
            }),
            "smoke test",
        ),
    ];
    for (n, (what, break_it, reason)) in broken.iter().enumerate() {
        break_it();
        let refused = reload().await;
        assert_eq!(refused.status, 422, "{what}: {refused:?}");
        assert!(refused.body.contains(reason), "{what}: expected {reason:?} in {}", refused.body);
        assert_eq!(version(&warden, 10 + n as u64).await, Ok("A".to_owned()), "{what}: the old chain serves");
        // Put the good files back for the next case.
        std::fs::copy(component("injection_sanitizer"), dir.path().join("second.wasm")).unwrap();
        replace(&chain_file, chain("A").as_bytes());
        assert_eq!(reload().await.status, 200);
    }
    let counted = warden.admin_status().await;
    assert!(counted["reloads"]["failed"].as_u64().unwrap() >= 4, "{counted}");
    assert!(warden.logged("policy chain reload refused").await, "refusals are logged");

    // Without watching, a changed file waits for a trigger; SIGHUP is one.
    replace(&chain_file, chain("B").as_bytes());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(version(&warden, 20).await, Ok("A".to_owned()), "no reload without a trigger");
    let pid = warden.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    until_serving(&warden, "B").await;
    let live = warden.admin_status().await;
    let names: Vec<&str> =
        live["chain"]["plugins"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(names, ["stamp", "first", "second"], "{live}");
    assert_eq!(live["chain"]["plugins"][1]["sha256"].as_str().map(str::len), Some(64), "{live}");

    // `warden status` shows the same, and `--reload` reloads first.
    let base = warden.admin("");
    let output = tokio::process::Command::new(bin("warden"))
        .args(["status", "--reload", "--url", &base])
        .env_remove("WARDEN_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("\"reloaded\": true") && printed.contains("\"name\": \"first\""), "{printed}");
}
