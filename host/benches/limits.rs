//! What the limit stage costs per call in memory: one rate limit and one
//! quota that every call passes, decided together by `Limiter::check`
//! (matching, key building and the store's admission). The same check on
//! Redis is one round trip; `warden-bench` measures it end to end.
//!
//! Run: `cargo bench -p warden --bench limits`. Results are in `bench/README.md`.

use std::sync::{Arc, OnceLock};

use serde_json::json;
use warden::{
    auth::Principal,
    engine::{Target, TargetKind, ToolAnnotations},
    limits::Limiter,
    state::{StateStore, Unavailable, memory::MemoryStore},
};

fn main() {
    divan::main();
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().build().unwrap())
}

fn limiter(rules: &str) -> Limiter {
    let text = format!("[anonymous]\nsubject = \"dev\"\n{rules}");
    let config = warden::config::gateway::parse(&text, std::path::Path::new("warden.toml")).unwrap();
    let store = Arc::new(StateStore::Memory(MemoryStore::default()));
    Limiter::new(config.limits, store, Unavailable::Refuse, Arc::default(), "warden.toml".into())
}

const RULES: &str = r#"
[[limit]]
name = "per-tenant"
rate = "1000000/s"
tools = ["demo/*"]

[[quota]]
name = "daily"
calls = 1000000000000
per = "day"
"#;

#[divan::bench]
fn rate_limit_and_quota(bencher: divan::Bencher) {
    let limiter = limiter(RULES);
    let principal = Principal {
        subject: "ann".into(),
        tenant: Some("acme".into()),
        roles: vec!["analyst".into()],
        scopes: vec![],
        claims: json!({}),
    };
    let target = Target {
        kind: TargetKind::Tool,
        server: "demo".into(),
        name: "query_analytics_db".into(),
        annotations: ToolAnnotations::default(),
    };
    bencher.bench_local(|| runtime().block_on(limiter.check(&principal, &target, None)).unwrap());
}

#[divan::bench]
fn no_rule_matches(bencher: divan::Bencher) {
    let limiter = limiter("[[limit]]\nname = \"other\"\nrate = \"10/s\"\ntenants = [\"globex\"]\n");
    let principal = Principal {
        subject: "ann".into(),
        tenant: Some("acme".into()),
        roles: vec![],
        scopes: vec![],
        claims: json!({}),
    };
    let target = Target {
        kind: TargetKind::Tool,
        server: "demo".into(),
        name: "q".into(),
        annotations: ToolAnnotations::default(),
    };
    bencher.bench_local(|| runtime().block_on(limiter.check(&principal, &target, None)).unwrap());
}
