//! `warden-bench neighbour`: what one caller whose every call makes a plugin
//! spin to its deadline costs everyone else.
//!
//! One gateway runs the quick-start chain plus the hostile test plugin, which
//! spins when a call's arguments say `"behavior": "spin"` (deadline 50 ms)
//! and otherwise allows. Seven connections send ordinary calls, at a fixed
//! rate and then at saturation, first alone and then beside an eighth
//! connection that sends nothing but spinning calls (each must come back
//! -32010, naming the deadline). The table gives the ordinary calls'
//! latency both ways; the goal is a p99 within 2x.

use std::sync::atomic::AtomicBool;

use super::*;

/// Ordinary connections.
const NORMAL: usize = 7;

pub async fn run(warden: &Path, seconds: u64, rate: u64) {
    let dir = std::env::temp_dir().join(format!("warden-bench-neighbour-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(serve_echo(listener));

    // The hostile plugin is built beside the reference policies
    // (<target>/wasm-plugins), whichever profile built the gateway.
    let target = warden.parent().and_then(Path::parent).expect("<target>/<profile>/warden");
    let hostile = target.join("wasm-plugins/wasm32-wasip2/plugin/hostile.wasm");
    assert!(hostile.exists(), "{} is missing: build the gateway first", hostile.display());
    let quickstart = std::fs::read_to_string(repo_root().join("policies/quickstart.toml")).unwrap();
    let chain = dir.join("chain.toml");
    let text = quickstart
        + &format!(
            "\n[[plugin]]\nname = \"hostile\"\nsource = \"{}\"\n\n[plugin.limits]\ndeadline_ms = 50\n\
             fuel = 100_000_000_000\n\n[plugin.config]\nby_argument = true\n",
            hostile.display()
        );
    std::fs::write(&chain, text).unwrap();
    let gateway = start_gateway(warden, upstream, Some(&chain), &dir, "neighbour").await;
    let warm = drive(gateway.addr, true, 2, 2, None, 2_000).await;
    assert_eq!(warm.errors, 0, "warm-up failed");

    println!(
        "\n{seconds} s per phase, {NORMAL} connections of ordinary calls (~1 KiB), quick-start chain + the hostile plugin; \
         the neighbour's calls spin to a 50 ms deadline.\n"
    );
    println!("| phase | neighbour | requests | req/s | p50 ms | p99 ms | neighbour's calls refused |");
    println!("|---|---|---|---|---|---|---|");
    for (phase, fixed) in [(format!("{rate}/s"), Some(rate)), ("saturation".to_owned(), None)] {
        let mut p99 = Vec::new();
        for spinning in [false, true] {
            let stop = Arc::new(AtomicBool::new(false));
            let neighbour = spinning.then(|| tokio::spawn(spin(gateway.addr, Arc::clone(&stop))));
            let max = fixed.map_or(200_000, |r| r * seconds);
            let sample = drive(gateway.addr, true, NORMAL, seconds, fixed, max).await;
            stop.store(true, Ordering::Relaxed);
            let refused = match neighbour {
                Some(task) => task.await.expect("neighbour").to_string(),
                None => "–".to_owned(),
            };
            assert_eq!(sample.errors, 0, "{phase}: {} wrong answers", sample.errors);
            p99.push(sample.percentile(0.99));
            println!(
                "| {phase} | {} | {} | {:.0} | {} | {} | {refused} |",
                if spinning { "spinning" } else { "none" },
                sample.latencies.len(),
                sample.throughput(),
                ms(sample.percentile(0.5)),
                ms(sample.percentile(0.99)),
            );
        }
        println!(
            "| {phase}: p99 with the neighbour ÷ without | | | | | {:.2}× | |",
            p99[1].as_secs_f64() / p99[0].as_secs_f64()
        );
    }
    drop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}

/// Send spinning calls one after another until `stop`; each must be refused
/// for passing the hostile plugin's deadline. Returns how many were.
async fn spin(addr: SocketAddr, stop: Arc<AtomicBool>) -> u64 {
    let mut connection = Connection::open(addr, true).await;
    let arguments = json!({ "query": "SELECT 1", "behavior": "spin" });
    let mut refused = 0;
    while !stop.load(Ordering::Relaxed) {
        let reply = connection.send(&arguments).await.expect("an answer");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("passed its deadline"), "the spin was not refused for its deadline: {reply}");
        refused += 1;
    }
    refused
}
