//! A hostile plugin in a running gateway under load: every offending call
//! gets -32010 naming the plugin and the limit it hit, every concurrent
//! well-behaved call succeeds, memory stays flat, and no state survives from
//! one call to the next.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use e2e::{Scratch, Warden, bin, echo_gateway};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn hostile() -> PathBuf {
    let target = bin("warden").parent().and_then(Path::parent).unwrap().to_owned();
    target.join("wasm-plugins/wasm32-wasip2/plugin/hostile.wasm")
}

/// The gateway, with the echo fault server upstream and one hostile plugin
/// that takes its behaviour from each call's `behavior` argument.
fn start(dir: &Scratch) -> Warden {
    let chain = format!(
        r#"
[limits]
fuel = 100_000_000_000
deadline_ms = 50
memory_mib = 16
max_output_kib = 64

[[plugin]]
name = "hostile"
source = "{}"
[plugin.config]
by_argument = true
huge_bytes = 1048576
"#,
        hostile().display()
    );
    echo_gateway(dir, "load", &chain, "max_concurrency = 16\n")
}

/// A stateless `tools/call echo` with these arguments: the result, or the error.
async fn echo(warden: &Warden, id: u64, arguments: Value) -> Result<Value, Value> {
    warden.call_tool(id, "echo", arguments).await
}

fn echoed(result: &Value) -> Value {
    serde_json::from_str(result["content"][0]["text"].as_str().expect("echoed text")).unwrap()
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_fail_alone_and_name_their_limit_while_others_are_served() {
    let dir = Scratch::new("faults");
    let warden = Arc::new(start(&dir));
    let offences = [
        ("spin", "passed its deadline (50 ms)"),
        ("memory-bomb", "exceeded its memory limit (16777216 bytes)"),
        ("panic", "trapped: wasm trap: wasm `unreachable` instruction executed (thread '<unnamed>' (1) panicked"),
        ("huge-output", "a rewrite of 1048576 bytes (limit 65536)"),
        ("deep-recursion", "overflowed its stack"),
    ];
    // Warm up (instances, pool slots, caches, one of each offence), then
    // take the baseline.
    for id in 0..20 {
        echo(&warden, id, json!({"text": "warm"})).await.unwrap();
    }
    for (n, (behavior, _)) in offences.iter().enumerate() {
        echo(&warden, 50 + n as u64, json!({"behavior": behavior})).await.expect_err("refused");
    }
    let before = rss_kib(warden.pid());

    // Seven clients send well-behaved calls while one sends hostile ones.
    let mut normal = Vec::new();
    for client in 0..7u64 {
        let warden = Arc::clone(&warden);
        normal.push(tokio::spawn(async move {
            for n in 0..40u64 {
                let id = 1_000 * (client + 1) + n;
                let text = format!("client {client} call {n}");
                let result = echo(&warden, id, json!({"text": text})).await.unwrap_or_else(|e| panic!("{id}: {e}"));
                assert_eq!(echoed(&result)["text"], text, "{id}");
            }
        }));
    }
    let mut id = 100_000;
    for round in 0..8 {
        for (behavior, says) in offences {
            id += 1;
            let error = echo(&warden, id, json!({"behavior": behavior})).await.expect_err("refused");
            assert_eq!(error["code"], -32010, "{behavior}: {error}");
            assert_eq!(error["data"]["plugin"], "hostile", "{behavior}: {error}");
            let message = error["message"].as_str().unwrap();
            assert!(
                message.contains("policy \"hostile\" on-call") && message.contains(says),
                "{behavior} ({round}): {message}"
            );
        }
    }
    for task in normal {
        task.await.unwrap();
    }

    // Eight memory bombs of 16 MiB each (and the rest) did not stay behind.
    let after = rss_kib(warden.pid());
    assert!(after < before + 32 * 1024, "resident memory grew from {before} KiB to {after} KiB");

    // Nothing survives between calls: each one meets a fresh instance.
    for n in 0..10 {
        let result = echo(&warden, 200_000 + n, json!({"behavior": "count"})).await.unwrap();
        assert_eq!(echoed(&result)["instance_calls"], 1, "call {n} met a used instance");
    }
}

/// A listing plugin that spins to its deadline, for more principals at once
/// than the gateway has runtime workers (one per core): a request that needs
/// no listing (`server/discover`) is answered while they spin, not after them. Each principal's
/// view is built once, in synchronous code, so the gateway runs the listing
/// hooks with `block_in_place` rather than on its plugin threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_plugin_that_spins_holds_up_no_one_else() {
    let dir = Scratch::new("list-spin");
    let chain = dir.path().join("chain.toml");
    let plugin = format!(
        "[limits]\nfuel = 100_000_000_000\ndeadline_ms = 1000\n\n[[plugin]]\nname = \"hostile\"\nsource = \"{}\"\n[plugin.config]\nbehavior = \"spin\"\n",
        hostile().display()
    );
    std::fs::write(&chain, plugin).unwrap();
    let spinners = std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
    let key = |n: usize| format!("list-spin-key-{n}");
    let api_keys: String = (0..=spinners)
        .map(|n| format!("[[api_key]]\nsubject = \"s{n}\"\nsha256 = \"{:x}\"\n\n", Sha256::digest(key(n).as_bytes())))
        .collect();
    let warden = Arc::new(Warden::start(&format!(
        "{api_keys}[policy]\nchain = \"{}\"\n\n[[upstream]]\nname = \"echo\"\ncommand = \"python3\"\n\
         args = [\"{{root}}/tests/e2e/fakes/stdio_server.py\"]\n",
        chain.display()
    )));
    let bearer = |n: usize| format!("Bearer {}", key(n));

    let started = Instant::now();
    let lists: Vec<_> = (1..=spinners)
        .map(|n| {
            let (warden, auth) = (Arc::clone(&warden), bearer(n));
            tokio::spawn(
                async move { warden.modern(&[("authorization", &auth)], n as u64, "tools/list", json!({})).await },
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    for id in 0..5 {
        let sent = Instant::now();
        let reply = warden.modern(&[("authorization", &bearer(0))], 100 + id, "server/discover", json!({})).await;
        assert!(reply.json().get("result").is_some(), "{reply:?}");
        let took = sent.elapsed();
        assert!(took < Duration::from_millis(500), "discover {id} took {took:?} while listings spun\n{}", warden.log());
    }
    for list in lists {
        let reply = list.await.unwrap();
        // The plugin failed (its deadline), so the listing fails closed.
        assert_eq!(reply.json()["result"]["tools"], json!([]), "{reply:?}");
    }
    assert!(started.elapsed() >= Duration::from_millis(1000), "the listings did not spin");
}
