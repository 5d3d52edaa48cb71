//! A plugin that does, on every hook, what its config says — including every
//! kind of misbehaviour the engine must contain. Used only by tests.

// The exports exist only in Wasm builds; natively nothing uses the policy.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

use serde::Deserialize;
use warden_policy_sdk::{
    Call, CallPolicy, CallVerdict, ListPolicy, ListRequest, ListVerdict, ListedTool, LogLevel, Policy, ResultPolicy,
    ResultVerdict, TargetKind, Value, log, serde_json::json,
};

/// What to do when a hook runs.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "kebab-case")]
enum Behavior {
    /// Return allow (show, for listings).
    #[default]
    Allow,
    /// Deny (hide, for listings).
    Deny,
    /// Ask for approval (allow on results and listings).
    Ask,
    /// Rewrite: add `"touched_by": [..., name]` to the arguments or result;
    /// flag tools in listings.
    Tag,
    /// Rewrite arguments or result to a JSON dump of the call record it received.
    Echo,
    /// Loop forever.
    Spin,
    /// Allocate memory until the limit stops it.
    MemoryBomb,
    /// Recurse without end.
    DeepRecursion,
    /// Panic (a trap).
    Panic,
    /// Return a rewrite far larger than any sane limit.
    HugeOutput,
    /// Return a rewrite that is not JSON.
    InvalidJson,
    /// Return a rewrite that is JSON but not an object.
    NotAnObject,
    /// Return the wrong number of listing verdicts.
    WrongLength,
    /// Try to reach outside the sandbox (files, environment, network, clock)
    /// and deny with a JSON report of what it found.
    ProbeSandbox,
    /// Count calls in a static and add `"instance_calls": n` to the
    /// arguments: 1 every time, if no state survives between calls.
    Count,
}

/// Calls this instance has served (see [`Behavior::Count`]).
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    behavior: Behavior,
    /// Name used by `tag` and in log lines.
    #[serde(default)]
    name: String,
    /// Problems `validate-config` reports; non-empty makes the config invalid.
    #[serde(default)]
    reject: Vec<String>,
    /// Bytes of output for `huge-output` (default 64 MiB).
    #[serde(default)]
    huge_bytes: Option<usize>,
    /// Take the behaviour from the call's `behavior` argument when it has
    /// one, so one chain can serve well-behaved and hostile calls at once.
    #[serde(default)]
    by_argument: bool,
}

impl Config {
    /// What to do for `call`.
    fn behavior(&self, call: &Call) -> Behavior {
        let chosen = || serde_json::from_value(call.arguments_json().get("behavior")?.clone()).ok();
        if self.by_argument { chosen().unwrap_or(self.behavior) } else { self.behavior }
    }
}

struct Hostile;

impl Policy for Hostile {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), Vec<String>> {
        if config.reject.is_empty() { Ok(()) } else { Err(config.reject.clone()) }
    }
}

/// Misbehaviours shared by every hook. Returns only for the well-behaved ones.
fn misbehave(config: &Config, behavior: Behavior) {
    if behavior != Behavior::Allow {
        log(LogLevel::Info, &format!("{} running {behavior:?}", config.name));
    }
    match behavior {
        Behavior::Spin => {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        Behavior::MemoryBomb => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Behavior::DeepRecursion => {
            std::hint::black_box(recurse(1));
        }
        Behavior::Panic => panic!("hostile plugin panicked on purpose"),
        _ => {}
    }
}

/// Recursion that keeps nothing in linear memory, so it exhausts the Wasm
/// call stack itself.
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    std::hint::black_box(recurse(std::hint::black_box(n).wrapping_add(1))).wrapping_add(1)
}

fn huge(config: &Config) -> String {
    "x".repeat(config.huge_bytes.unwrap_or(64 << 20))
}

fn tagged(mut value: Value, name: &str) -> Value {
    if let Some(object) = value.as_object_mut() {
        let tags = object.entry("touched_by").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!(name));
        }
    }
    value
}

fn echo(call: &Call) -> Value {
    json!({
        "request_id": call.request_id,
        "session_id": call.session_id,
        "subject": call.principal.subject,
        "tenant": call.principal.tenant,
        "roles": call.principal.roles,
        "scopes": call.principal.scopes,
        "claims": call.claims_json(),
        "kind": match call.target.kind {
            TargetKind::Tool => "tool",
            TargetKind::Resource => "resource",
            TargetKind::Prompt => "prompt",
        },
        "server": call.target.server,
        "name": call.target.name,
        "destructive": call.target.annotations.destructive_hint,
        "arguments": call.arguments_json(),
        "history": call.history.iter().map(|h| format!("{}/{}", h.server, h.name)).collect::<Vec<_>>(),
        "timestamp_ms": call.timestamp_ms,
    })
}

/// What a plugin can see of the world it runs in.
fn probe() -> Value {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    json!({
        "read_file": std::fs::read("/etc/hostname").map(|b| b.len()).map_err(|e| e.to_string()),
        "list_root": std::fs::read_dir("/").map(|d| d.count()).map_err(|e| e.to_string()),
        "env_vars": std::env::vars().count(),
        "args": std::env::args().count(),
        "connect": std::net::TcpStream::connect("127.0.0.1:80").map(|_| ()).map_err(|e| e.to_string()),
        "now_ms": now_ms,
    })
}

impl CallPolicy for Hostile {
    fn on_call(config: &Config, call: &Call) -> CallVerdict {
        let behavior = config.behavior(call);
        misbehave(config, behavior);
        match behavior {
            Behavior::Deny => CallVerdict::deny("hostile", format!("{} denies", config.name)),
            Behavior::Ask => CallVerdict::ask(format!("{} asks", config.name)),
            Behavior::Tag => CallVerdict::rewrite(&tagged(call.arguments_json(), &config.name), "tagged"),
            Behavior::Echo => CallVerdict::rewrite(&echo(call), "echoed"),
            Behavior::HugeOutput => {
                CallVerdict::Rewrite(warden_policy_sdk::Rewrite { json: huge(config), note: String::new() })
            }
            Behavior::InvalidJson => {
                CallVerdict::Rewrite(warden_policy_sdk::Rewrite { json: "{not json".into(), note: String::new() })
            }
            Behavior::NotAnObject => {
                CallVerdict::Rewrite(warden_policy_sdk::Rewrite { json: " [1, 2]".into(), note: String::new() })
            }
            Behavior::ProbeSandbox => CallVerdict::deny("probe", probe().to_string()),
            Behavior::Count => {
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let mut arguments = call.arguments_json();
                arguments["instance_calls"] = json!(n);
                CallVerdict::rewrite(&arguments, "counted")
            }
            _ => CallVerdict::Allow,
        }
    }
}

impl ResultPolicy for Hostile {
    fn on_result(config: &Config, call: &Call, output: Value) -> ResultVerdict {
        let behavior = config.behavior(call);
        misbehave(config, behavior);
        match behavior {
            Behavior::Deny => ResultVerdict::deny("hostile", format!("{} denies", config.name)),
            Behavior::Tag => ResultVerdict::rewrite(&tagged(output, &config.name), "tagged"),
            Behavior::Echo => ResultVerdict::rewrite(&echo(call), "echoed"),
            Behavior::HugeOutput => {
                ResultVerdict::Rewrite(warden_policy_sdk::Rewrite { json: huge(config), note: String::new() })
            }
            Behavior::InvalidJson => {
                ResultVerdict::Rewrite(warden_policy_sdk::Rewrite { json: "[1, 2".into(), note: String::new() })
            }
            Behavior::NotAnObject => {
                ResultVerdict::Rewrite(warden_policy_sdk::Rewrite { json: "\"text\"".into(), note: String::new() })
            }
            _ => ResultVerdict::Allow,
        }
    }
}

impl ListPolicy for Hostile {
    fn on_list(config: &Config, _request: &ListRequest, tools: &[ListedTool]) -> Vec<ListVerdict> {
        misbehave(config, config.behavior);
        let verdict = match config.behavior {
            Behavior::Deny => ListVerdict::Hide(format!("{} hides", config.name)),
            Behavior::Tag => ListVerdict::Flag(format!("{} flags", config.name)),
            Behavior::WrongLength => return vec![ListVerdict::Show; tools.len() + 1],
            _ => ListVerdict::Show,
        };
        vec![verdict; tools.len()]
    }
}

warden_policy_sdk::export!(Hostile: call, result, list);
