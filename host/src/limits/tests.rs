use std::{sync::Arc, time::Duration};

use serde_json::json;

use super::{rules::*, *};
use crate::engine::{TargetKind, ToolAnnotations};

fn principal(tenant: &str, subject: &str, roles: &[&str]) -> Principal {
    Principal {
        subject: subject.into(),
        tenant: Some(tenant.into()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        scopes: vec![],
        claims: json!({}),
    }
}

fn tool(server: &str, name: &str) -> Target {
    Target { kind: TargetKind::Tool, server: server.into(), name: name.into(), annotations: ToolAnnotations::default() }
}

fn rules(toml: &str) -> Limits {
    let text = format!("[anonymous]\nsubject = \"dev\"\n{toml}");
    crate::config::gateway::parse(&text, std::path::Path::new("warden.toml")).expect("valid config").limits
}

fn limiter(toml: &str) -> Limiter {
    let store = Arc::new(crate::state::StateStore::Memory(MemoryStore::default()));
    Limiter::new(rules(toml), store, Unavailable::Refuse, Arc::default(), "warden.toml".into())
}

#[tokio::test]
async fn a_refusal_names_the_rule_and_when_to_come_back() {
    let limiter = limiter("[[limit]]\nname = \"slow\"\nrate = \"2/min\"\nburst = 1\n");
    let acme = principal("acme", "ann", &[]);
    assert!(limiter.check(&acme, &tool("files", "read"), None).await.is_ok());
    let Err(Refusal::Rate(refusal)) = limiter.check(&acme, &tool("files", "read"), None).await else { panic!() };
    assert_eq!(refusal.name, "slow");
    assert!((29_000..=30_000).contains(&refusal.retry_after_ms), "{}", refusal.retry_after_ms);
    assert_eq!((refusal.quota, refusal.window_s), (2, 60));
    // Keyed by tenant (the default): another tenant has its own bucket.
    assert!(limiter.check(&principal("globex", "gus", &[]), &tool("files", "read"), None).await.is_ok());
}

#[tokio::test]
async fn scopes_match_tenants_subjects_roles_servers_and_targets() {
    let limiter = limiter(
        r#"
[[limit]]
name = "writes"
rate = "1/hour"
key = "tenant-tool"
tenants = ["ac*"]
roles = ["analyst"]
tools = ["files/write_*"]
"#,
    );
    let analyst = principal("acme", "ann", &["analyst"]);
    let write = tool("files", "write_file");
    assert!(limiter.check(&analyst, &write, None).await.is_ok());
    assert!(limiter.check(&analyst, &write, None).await.is_err());
    // Per tool: another write tool has its own bucket.
    assert!(limiter.check(&analyst, &tool("files", "write_note"), None).await.is_ok());
    // Not covered: another role, tenant, tool, or a resource.
    assert!(limiter.check(&principal("acme", "eve", &["engineer"]), &write, None).await.is_ok());
    assert!(limiter.check(&principal("globex", "gus", &["analyst"]), &write, None).await.is_ok());
    assert!(limiter.check(&analyst, &tool("files", "read_file"), None).await.is_ok());
    let resource = Target { kind: TargetKind::Resource, ..tool("files", "write_file") };
    assert!(limiter.check(&analyst, &resource, None).await.is_ok());
}

#[tokio::test]
async fn several_rules_are_decided_together_and_the_first_refusing_one_is_named() {
    let limiter = limiter(
        r#"
[[limit]]
name = "roomy"
rate = "100/min"

[[quota]]
name = "tiny"
calls = 1
per = "hour"

[[limit]]
name = "watch"
rate = "1/day"
shadow = true
"#,
    );
    let acme = principal("acme", "ann", &[]);
    let first = limiter.check(&acme, &tool("files", "read"), None).await.unwrap();
    assert!(first.shadow_refusals.is_empty());
    let Err(Refusal::Quota(refusal)) = limiter.check(&acme, &tool("files", "read"), None).await else { panic!() };
    assert_eq!(refusal.name, "tiny");
    assert_eq!(refusal.window_s, 3600);
    assert!(refusal.resets_at_ms.unwrap() % 3_600_000 == 0, "an hour window ends on the hour");
}

#[tokio::test]
async fn an_unreachable_redis_is_refused_at_start_up() {
    // A closed port: real, and needs no server. (Redis going away while the
    // gateway runs is tested end to end, against a real redis-server.)
    let settings = crate::state::StateSettings {
        redis: Some(format!("redis://127.0.0.1:{}", closed_port())),
        timeout: Duration::from_millis(200),
        ..Default::default()
    };
    assert!(crate::state::StateStore::open(&settings).await.is_err(), "start-up refuses an unreachable Redis");
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn windows_align_to_utc_calendar_boundaries() {
    // 2026-12-02T13:00:00Z
    let now = days(2026, 12, 2) * 86_400_000 + 13 * 3_600_000;
    assert_eq!(Window::Fixed(Duration::from_secs(86_400)).bounds(now).0, days(2026, 12, 2) * 86_400_000);
    assert_eq!(Window::Month.bounds(now), (days(2026, 12, 1) * 86_400_000, days(2027, 1, 1) * 86_400_000));
    let february = days(2028, 2, 10) * 86_400_000;
    let (start, end) = Window::Month.bounds(february);
    assert_eq!((end - start) / 86_400_000, 29, "2028 is a leap year");
    for day in [0, 59, 365, 10_957, 20_424, 47_482] {
        let (year, month) = civil(day);
        let first = days(year, month, 1);
        assert!(first <= day && day < first + 31, "day {day} is in {year}-{month}");
    }
    assert_eq!(days(1970, 1, 1), 0);
    assert_eq!(days(2000, 3, 1), 11_017);
}

#[test]
fn keys_cannot_collide_across_tenants_and_tools() {
    let a = KeyBy::TenantTool.of(&principal("a:1", "s", &[]), &tool("x", "y"));
    let b = KeyBy::TenantTool.of(&principal("a", "s", &[]), &tool("1:x", "y"));
    assert_ne!(a, b);
}
