use super::{memory::MemoryStore, *};

fn rate(key: &str, per_s: u64, burst: u64, enforce: bool) -> RateDemand {
    RateDemand { key: key.into(), interval_us: 1_000_000 / per_s, burst, enforce }
}

fn quota(key: &str, limit: u64, cost: u64, enforce: bool) -> QuotaDemand {
    QuotaDemand { key: key.into(), limit, cost, ttl_ms: 60_000, enforce }
}

const T0: u64 = 1_000_000_000_000_000;

#[test]
fn gcra_admits_the_burst_then_the_sustained_rate() {
    let store = MemoryStore::default();
    let ask = Admission { rates: vec![rate("r", 10, 3, true)], quotas: vec![], history: None, controls: false };
    let remaining: Vec<u64> = (0..3).map(|_| store.admit(&ask, T0).rates[0].remaining).collect();
    assert_eq!(remaining, [2, 1, 0]);
    let refused = store.admit(&ask, T0);
    assert!(!refused.admitted);
    assert_eq!(refused.rates[0].wait_us, 100_000, "the next call is due one interval later");
    assert!(!store.admit(&ask, T0 + 99_999).admitted);
    assert!(store.admit(&ask, T0 + 100_000).admitted, "due after one interval");
    // Idle for long, the bucket is full again, never fuller.
    let later = T0 + 10_000_000;
    let admitted: usize = (0..5).filter(|_| store.admit(&ask, later).admitted).count();
    assert_eq!(admitted, 3);
}

#[test]
fn a_call_takes_from_all_its_demands_or_from_none() {
    let store = MemoryStore::default();
    let wide = rate("wide", 1000, 100, true);
    let narrow = rate("narrow", 1, 1, true);
    let both = Admission {
        rates: vec![wide.clone(), narrow],
        quotas: vec![quota("q", 10, 1, true)],
        history: None,
        controls: false,
    };
    assert!(store.admit(&both, T0).admitted);
    let refused = store.admit(&both, T0);
    assert!(!refused.admitted);
    assert!(refused.rates[0].conforms && !refused.rates[1].conforms && refused.quotas[0].conforms);
    // Nothing was taken from the wide bucket or the quota by the refused call.
    let alone = Admission { rates: vec![wide], quotas: vec![quota("q", 10, 1, true)], history: None, controls: false };
    let after = store.admit(&alone, T0);
    assert_eq!(after.rates[0].remaining, 98, "two calls taken: the first and this one");
    assert_eq!(after.quotas[0].remaining, 8);
}

#[test]
fn shadow_demands_never_refuse_and_take_only_when_they_have_room() {
    let store = MemoryStore::default();
    let ask = Admission {
        rates: vec![rate("s", 1, 1, false)],
        quotas: vec![quota("sq", 1, 1, false)],
        history: None,
        controls: false,
    };
    assert!(store.admit(&ask, T0).admitted);
    let second = store.admit(&ask, T0);
    assert!(second.admitted, "shadow demands do not refuse");
    assert!(!second.rates[0].conforms && !second.quotas[0].conforms, "but they report it");
}

#[test]
fn quota_counters_expire_with_their_window_and_check_only_demands_take_nothing() {
    let store = MemoryStore::default();
    let ask = Admission { rates: vec![], quotas: vec![quota("w", 2, 1, true)], history: None, controls: false };
    assert!(store.admit(&ask, T0).admitted);
    assert!(store.admit(&ask, T0).admitted);
    assert!(!store.admit(&ask, T0).admitted);
    assert!(store.admit(&ask, T0 + 60_000_000).admitted, "the counter expired with its window");
    // Upstream time: checked before the call (cost 0), charged after.
    let time = Admission { rates: vec![], quotas: vec![quota("t", 100, 0, true)], history: None, controls: false };
    assert!(store.admit(&time, T0).admitted);
    store.charge("t", 60, 60_000, T0);
    assert!(store.admit(&time, T0).admitted, "60 of 100 used");
    store.charge("t", 60, 60_000, T0);
    assert!(!store.admit(&time, T0).admitted, "120 of 100 used");
}

#[test]
fn usage_adds_up_by_hour_tenant_and_server_and_is_pruned() {
    let store = MemoryStore::default();
    let mut table = UsageTable::new();
    table.insert((10, "acme".into(), "files".into()), Usage { calls: 2, refused: 1, upstream_us: 5 });
    table.insert((11, "globex".into(), "files".into()), Usage { calls: 1, refused: 0, upstream_us: 7 });
    store.add_usage(&table);
    store.add_usage(&table);
    let all = store.usage(0, None);
    assert_eq!(all[&(10, "acme".into(), "files".into())], Usage { calls: 4, refused: 2, upstream_us: 10 });
    assert_eq!(store.usage(11, None).len(), 1);
    assert_eq!(store.usage(0, Some("globex")).len(), 1);
    store.prune_usage(11);
    assert_eq!(store.usage(0, None).len(), 1);
}
