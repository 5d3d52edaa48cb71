//! Read-only mode: refuse every tool call except to tools that declare
//! themselves read-only (or that the config lists). A whole policy in the
//! Rust SDK; see README.md for building and testing it.

use warden_policy_sdk::{Call, CallPolicy, CallVerdict, Pattern, Policy};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Tools to let through anyway, as `server/tool` patterns.
    #[serde(default)]
    except: Vec<Pattern>,
}

struct ReadOnlyMode;

impl Policy for ReadOnlyMode {
    type Config = Config;
}

impl CallPolicy for ReadOnlyMode {
    fn on_call(config: &Config, call: &Call) -> CallVerdict {
        let tool = &call.target;
        let excepted = config.except.iter().any(|p| p.matches(&tool.server, &tool.name));
        if tool.annotations.read_only_hint == Some(true) || excepted {
            return CallVerdict::Allow;
        }
        CallVerdict::deny("read-only-mode", format!("{}/{} may change data", tool.server, tool.name))
    }
}

warden_policy_sdk::export!(ReadOnlyMode: call);
