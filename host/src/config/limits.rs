//! `[state]`, `[[limit]]` and `[[quota]]` in `warden.toml`.
//!
//! ```toml
//! [state]
//! redis = "redis://127.0.0.1:6379"   # absent: in this process; rediss:// for TLS
//! # redis_env = "WARDEN_REDIS_URL"   # or the URL (with its password) from the environment
//! ca_file = "certs/redis-ca.pem"     # rediss:// only: trust this CA instead of the system's
//! prefix = "warden"                  # namespace of every key
//! on_unavailable = "refuse"          # or "local": decide on this replica's own counts
//! timeout_ms = 500                   # a Redis command slower than this counts as unreachable
//! usage_retention_days = 90
//! file = "warden-state.json"         # without redis: where kill switches are kept across restarts
//!
//! [[limit]]
//! name = "per-tenant"
//! rate = "100/min"                   # N per s, min, hour, day, or a duration ("30s")
//! burst = 20                         # calls at once (default: N)
//! key = "tenant"                     # global, tenant, subject, tenant-tool
//! tenants = ["acme*"]                # which calls: each given field must match
//! subjects = ["ci-*"]
//! roles = ["analyst"]                # holds any of these
//! servers = ["files"]
//! tools = ["files/write_*"]          # server/name patterns; resources, prompts likewise
//! shadow = false                     # true: count and audit, never refuse
//!
//! [[quota]]
//! name = "acme-daily"
//! calls = 10000                      # per window
//! upstream_s = 3600                  # upstream time per window, seconds
//! per = "day"                        # minute, hour, day, month, or a duration ("15m")
//! key = "tenant"
//! ```

use std::{collections::HashSet, path::Path, time::Duration};

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{Problems, read::Table};
use crate::{
    limits::{KeyBy, Limits, QuotaRule, RateRule, Scope, Window},
    state::{StateSettings, Unavailable},
};

/// Where the in-memory store keeps kill switches, beside the config file.
pub const DEFAULT_STATE_FILE: &str = "warden-state.json";

/// `[state]`.
pub(super) fn state(mut t: Table<'_>, base: &Path, problems: &mut Problems) -> StateSettings {
    let mut settings = StateSettings::default();
    let url: Option<String> = t.get("redis", problems);
    let from_env: Option<String> = t.get("redis_env", problems);
    settings.redis = match (url, from_env) {
        (Some(url), None) => Some(url),
        (None, Some(var)) => match std::env::var(&var) {
            Ok(url) => Some(url),
            Err(_) => {
                problems.push(t.path_of("redis_env"), format!("the environment variable {var} is not set"));
                None
            }
        },
        (Some(_), Some(_)) => {
            problems.push(t.path_of("redis"), "give redis or redis_env, not both");
            None
        }
        (None, None) => None,
    };
    if let Some(url) = &settings.redis
        && let Err(e) = redis::Client::open(url.as_str())
    {
        problems.push(t.path_of("redis"), format!("{}: {e}", crate::state::redis::redacted(url)));
    }
    if let Some(file) = t.get::<String>("ca_file", problems) {
        if !settings.redis.as_deref().is_some_and(|u| u.starts_with("rediss://")) {
            problems.push(t.path_of("ca_file"), "applies to a rediss:// (TLS) URL only");
        }
        let path = base.join(file);
        match std::fs::read(&path) {
            Ok(pem) => settings.ca_pem = Some(pem),
            Err(e) => problems.push(t.path_of("ca_file"), format!("cannot read {}: {e}", path.display())),
        }
    }
    if let Some(prefix) = t.get::<String>("prefix", problems) {
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            problems.push(t.path_of("prefix"), "must be non-empty, without spaces");
        }
        settings.prefix = prefix;
    }
    settings.on_unavailable = match t.get::<String>("on_unavailable", problems).as_deref() {
        None | Some("refuse") => Unavailable::Refuse,
        Some("local") => Unavailable::Local,
        Some(other) => {
            problems.push(t.path_of("on_unavailable"), format!("{other:?} is not \"refuse\" or \"local\""));
            Unavailable::Refuse
        }
    };
    if let Some(ms) = t.get::<u64>("timeout_ms", problems) {
        if ms == 0 {
            problems.push(t.path_of("timeout_ms"), "must be above zero");
        }
        settings.timeout = Duration::from_millis(ms);
    }
    let file: Option<String> = t.get("file", problems);
    if file.is_some() && settings.redis.is_some() {
        problems.push(t.path_of("file"), "applies without redis only (Redis keeps the controls itself)");
    }
    settings.file = settings.redis.is_none().then(|| base.join(file.as_deref().unwrap_or(DEFAULT_STATE_FILE)));
    if let Some(days) = t.get::<u64>("usage_retention_days", problems) {
        if days == 0 {
            problems.push(t.path_of("usage_retention_days"), "must be above zero");
        }
        settings.usage_retention = Duration::from_secs(days * 86_400);
    }
    t.finish(problems);
    settings
}

/// `[[limit]]` and `[[quota]]`.
pub(super) fn limits(root: &mut Table<'_>, problems: &mut Problems) -> Limits {
    let mut names = HashSet::new();
    let mut limits = Limits::default();
    for mut t in root.tables("limit", problems) {
        let name = rule_name(&mut t, &mut names, problems);
        let rate = t.require::<String>("rate", problems).and_then(|text| match parse_rate(&text) {
            Ok(rate) => Some(rate),
            Err(e) => {
                problems.push(t.path_of("rate"), e);
                None
            }
        });
        let burst = t.get::<u64>("burst", problems);
        if burst == Some(0) {
            problems.push(t.path_of("burst"), "must be above zero");
        }
        let key = key_by(&mut t, problems);
        let scope = scope(&mut t, problems);
        let shadow = t.get("shadow", problems).unwrap_or(false);
        t.finish(problems);
        if let (Some(name), Some((count, period))) = (name, rate) {
            let interval_us = (period.as_micros() as u64 / count).max(1);
            let burst = burst.unwrap_or(count).max(1);
            limits.rates.push(RateRule { name, count, period, interval_us, burst, key, scope, shadow });
        }
    }
    for mut t in root.tables("quota", problems) {
        let name = rule_name(&mut t, &mut names, problems);
        let calls = t.get::<u64>("calls", problems);
        let upstream_s = t.get::<f64>("upstream_s", problems);
        match (calls, upstream_s) {
            (None, None) => problems.push(t.path_of("calls"), "give calls, upstream_s or both"),
            (Some(0), _) => problems.push(t.path_of("calls"), "must be above zero"),
            (_, Some(s)) if !(s > 0.0 && s.is_finite()) => problems.push(t.path_of("upstream_s"), "must be above zero"),
            _ => {}
        }
        let window = t.require::<String>("per", problems).and_then(|text| match parse_window(&text) {
            Ok(window) => Some(window),
            Err(e) => {
                problems.push(t.path_of("per"), e);
                None
            }
        });
        let key = key_by(&mut t, problems);
        let scope = scope(&mut t, problems);
        let shadow = t.get("shadow", problems).unwrap_or(false);
        t.finish(problems);
        if let (Some(name), Some(window)) = (name, window) {
            let upstream_ms = upstream_s.map(|s| (s * 1000.0).round() as u64);
            limits.quotas.push(QuotaRule { name, calls, upstream_ms, window, key, scope, shadow });
        }
    }
    limits
}

fn rule_name(t: &mut Table<'_>, names: &mut HashSet<String>, problems: &mut Problems) -> Option<String> {
    let name: String = t.require("name", problems)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        problems.push(t.path_of("name"), format!("{name:?} must be letters, digits, '-', '_' or '.'"));
        return None;
    }
    if !names.insert(name.clone()) {
        problems.push(t.path_of("name"), format!("{name:?} names an earlier limit or quota"));
        return None;
    }
    Some(name)
}

fn key_by(t: &mut Table<'_>, problems: &mut Problems) -> KeyBy {
    match t.get::<String>("key", problems) {
        None => KeyBy::Tenant,
        Some(word) => KeyBy::parse(&word).unwrap_or_else(|| {
            problems.push(t.path_of("key"), format!("{word:?} is not one of {}", KeyBy::NAMES.join(", ")));
            KeyBy::Tenant
        }),
    }
}

fn scope(t: &mut Table<'_>, problems: &mut Problems) -> Scope {
    let mut scope = Scope::default();
    let mut set = |t: &mut Table<'_>, key: &'static str, scope: &mut Scope| -> Option<GlobSet> {
        let patterns: Vec<String> = t.get(key, problems)?;
        if patterns.is_empty() {
            problems.push(t.path_of(key), "name at least one pattern, or leave it out to match any");
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in &patterns {
            match Glob::new(pattern) {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => problems.push(t.path_of(key), format!("{pattern:?} is not a pattern: {e}")),
            }
        }
        scope.written.push((key, patterns));
        builder.build().ok()
    };
    scope.tenants = set(t, "tenants", &mut scope);
    scope.subjects = set(t, "subjects", &mut scope);
    scope.servers = set(t, "servers", &mut scope);
    scope.tools = set(t, "tools", &mut scope);
    scope.resources = set(t, "resources", &mut scope);
    scope.prompts = set(t, "prompts", &mut scope);
    if let Some(roles) = t.get::<Vec<String>>("roles", problems) {
        scope.written.push(("roles", roles.clone()));
        scope.roles = roles;
    }
    scope
}

/// `N/unit`: a count above zero per second, minute, hour, day or duration.
fn parse_rate(text: &str) -> Result<(u64, Duration), String> {
    let bad = || format!("{text:?} is not a rate like \"100/min\" (N per s, min, hour, day, or a duration like 30s)");
    let (count, per) = text.split_once('/').ok_or_else(bad)?;
    let count: i64 = count.trim().parse().map_err(|_| bad())?;
    if count <= 0 {
        return Err(format!("{text:?}: the count must be above zero"));
    }
    let period = match per.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => humantime::parse_duration(other).map_err(|_| bad())?,
    };
    if period.is_zero() {
        return Err(format!("{text:?}: the period must be above zero"));
    }
    Ok((count as u64, period))
}

/// A quota window: minute, hour, day, month, or a fixed duration.
fn parse_window(text: &str) -> Result<Window, String> {
    Ok(match text {
        "minute" => Window::Fixed(Duration::from_secs(60)),
        "hour" => Window::Fixed(Duration::from_secs(3600)),
        "day" => Window::Fixed(Duration::from_secs(86_400)),
        "month" => Window::Month,
        other => match humantime::parse_duration(other) {
            Ok(d) if d >= Duration::from_secs(1) => Window::Fixed(d),
            _ => return Err(format!("{other:?} is not minute, hour, day, month or a duration of 1s or more")),
        },
    })
}
