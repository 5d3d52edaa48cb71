//! Dangerous-chain detection: refuses a call when the same session recently
//! made a call that, followed by this one, forms a known exfiltration or
//! damage path — reading secrets and then sending email, querying a warehouse
//! and then writing files. Each call alone may be allowed; the sequence is not.
//! Closes part of OWASP MCP06 (intent flow subversion): an injected instruction
//! cannot walk the agent from a data source to an exit.
//!
//! # Config
//!
//! ```json
//! {
//!   "rules": [
//!     { "first": "query_analytics_db", "then": "write_workspace_file",
//!       "within_calls": 10, "within_seconds": 3600,
//!       "reason": "warehouse data must not be written to the workspace" }
//!   ]
//! }
//! ```
//!
//! - `rules`: when absent, the defaults below apply; when present, they
//!   replace the defaults (list them again to keep them).
//! - `first`, `then`: `server/name` patterns (see `warden_policy_sdk::Pattern`)
//!   over tool names, resource URIs or prompt names.
//! - `within_calls`: only the last N entries of the session's history count.
//! - `within_seconds`: only entries at most this old count.
//!   Both windows apply when both are set; with neither, the whole history the
//!   gateway keeps counts.
//! - `reason`: shown to the client; a default names the two calls.
//!
//! Default rules: `query_analytics_db → write_workspace_file` and
//! `read_secrets → send_email`, each within 10 calls.

use serde::Deserialize;
use warden_policy_sdk::{Call, CallPolicy, CallVerdict, PastCall, Pattern, Policy};

/// The policy's configuration; see the crate docs.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Blocked sequences; `None` means the defaults.
    #[serde(default)]
    pub rules: Option<Vec<Rule>>,
}

/// One blocked sequence: `first`, then (later in the same session) `then`.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The earlier call.
    pub first: Pattern,
    /// The call to refuse.
    pub then: Pattern,
    /// How many of the most recent history entries to search.
    #[serde(default)]
    pub within_calls: Option<u32>,
    /// How far back in time to search.
    #[serde(default)]
    pub within_seconds: Option<u64>,
    /// What the client is told.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The sequences the gateway blocks when a config lists none.
pub fn default_rules() -> Vec<Rule> {
    let rule = |first: &str, then: &str| Rule {
        first: Pattern::parse(first).expect("valid default pattern"),
        then: Pattern::parse(then).expect("valid default pattern"),
        within_calls: Some(10),
        within_seconds: None,
        reason: None,
    };
    vec![rule("query_analytics_db", "write_workspace_file"), rule("read_secrets", "send_email")]
}

/// The policy.
pub struct ChainDetect;

impl Policy for ChainDetect {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for (i, rule) in config.rules.iter().flatten().enumerate() {
            if rule.within_calls == Some(0) {
                problems.push(format!("rules[{i}].within_calls: must be at least 1"));
            }
            if rule.within_seconds == Some(0) {
                problems.push(format!("rules[{i}].within_seconds: must be at least 1"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// The earlier call that, with `call`, completes `rule`, if any.
pub fn completes<'a>(rule: &Rule, call: &'a Call) -> Option<&'a PastCall> {
    if !rule.then.matches(&call.target.server, &call.target.name) {
        return None;
    }
    let skip = match rule.within_calls {
        Some(n) => call.history.len().saturating_sub(n as usize),
        None => 0,
    };
    let oldest_ms = rule.within_seconds.map(|s| call.timestamp_ms.saturating_sub(s.saturating_mul(1000)));
    call.history[skip..]
        .iter()
        .rev()
        .filter(|past| oldest_ms.is_none_or(|oldest| past.timestamp_ms >= oldest))
        .find(|past| rule.first.matches(&past.server, &past.name))
}

impl CallPolicy for ChainDetect {
    fn on_call(config: &Config, call: &Call) -> CallVerdict {
        let defaults;
        let rules = match &config.rules {
            Some(rules) => rules,
            None => {
                defaults = default_rules();
                &defaults
            }
        };
        for rule in rules {
            if let Some(earlier) = completes(rule, call) {
                let reason = rule.reason.clone().unwrap_or_else(|| {
                    format!(
                        "{}/{} after {}/{} in the same session is a blocked chain ({} → {})",
                        call.target.server, call.target.name, earlier.server, earlier.name, rule.first, rule.then
                    )
                });
                return CallVerdict::deny("blocked-chain", reason);
            }
        }
        CallVerdict::Allow
    }
}

warden_policy_sdk::export!(ChainDetect: call);

/// Each hook call gets a fresh instance: allocate by bumping a pointer.
#[global_allocator]
static ALLOCATOR: warden_policy_sdk::PerCall = warden_policy_sdk::PerCall;

#[cfg(test)]
mod tests {
    use super::*;
    use warden_policy_sdk::{TargetKind, parse_config, testing};

    const NOW: u64 = 1_700_000_000_000;

    fn past(name: &str, seconds_ago: u64) -> PastCall {
        let (server, name) = name.split_once('/').unwrap();
        PastCall {
            kind: TargetKind::Tool,
            server: server.into(),
            name: name.into(),
            timestamp_ms: NOW - seconds_ago * 1000,
        }
    }

    fn call(tool: &str, history: Vec<PastCall>) -> Call {
        let (server, name) = tool.split_once('/').unwrap();
        Call { history, timestamp_ms: NOW, ..testing::call(server, name) }
    }

    fn run(config: &str, call: &Call) -> CallVerdict {
        let config: Config = parse_config(config).unwrap();
        ChainDetect::validate(&config).unwrap();
        ChainDetect::on_call(&config, call)
    }

    #[test]
    fn the_default_chains_are_blocked() {
        let v = run("", &call("workspace/write_workspace_file", vec![past("analytics/query_analytics_db", 5)]));
        let CallVerdict::Deny(d) = v else { panic!("query then write must be blocked") };
        assert_eq!(d.code, "blocked-chain");
        assert_eq!(
            d.reason,
            "workspace/write_workspace_file after analytics/query_analytics_db in the same session is a blocked \
             chain (query_analytics_db → write_workspace_file)"
        );
        let v = run("{}", &call("mail/send_email", vec![past("vault/read_secrets", 1), past("x/other", 1)]));
        assert!(matches!(v, CallVerdict::Deny(_)));
    }

    #[test]
    fn each_call_alone_is_allowed() {
        assert_eq!(run("", &call("workspace/write_workspace_file", vec![])), CallVerdict::Allow);
        assert_eq!(
            run("", &call("mail/send_email", vec![past("analytics/query_analytics_db", 1)])),
            CallVerdict::Allow
        );
        // The order matters: write first, then query, is fine.
        assert_eq!(
            run("", &call("analytics/query_analytics_db", vec![past("workspace/write_workspace_file", 1)])),
            CallVerdict::Allow
        );
    }

    #[test]
    fn windows_limit_how_far_back_a_rule_looks() {
        let config = r#"{"rules": [{"first": "a", "then": "b", "within_calls": 2, "within_seconds": 60}]}"#;
        let fresh = vec![past("s/a", 10), past("s/x", 5)];
        assert!(matches!(run(config, &call("s/b", fresh)), CallVerdict::Deny(_)));
        let too_many_calls_ago = vec![past("s/a", 10), past("s/x", 5), past("s/y", 4)];
        assert_eq!(run(config, &call("s/b", too_many_calls_ago)), CallVerdict::Allow);
        let too_long_ago = vec![past("s/a", 61)];
        assert_eq!(run(config, &call("s/b", too_long_ago)), CallVerdict::Allow);
    }

    #[test]
    fn wildcards_and_custom_reasons() {
        let config = r#"{"rules": [{"first": "vault/*", "then": "*/send_*", "reason": "no exfiltration"}]}"#;
        let v = run(config, &call("mail/send_sms", vec![past("vault/list_keys", 100)]));
        assert_eq!(v, CallVerdict::deny("blocked-chain", "no exfiltration"));
        // Configured rules replace the defaults.
        assert_eq!(
            run(config, &call("ws/write_workspace_file", vec![past("a/query_analytics_db", 1)])),
            CallVerdict::Allow
        );
    }

    #[test]
    fn zero_windows_are_rejected() {
        let config: Config =
            parse_config(r#"{"rules": [{"first": "a", "then": "b", "within_calls": 0, "within_seconds": 0}]}"#)
                .unwrap();
        assert_eq!(ChainDetect::validate(&config).unwrap_err().len(), 2);
    }
}
