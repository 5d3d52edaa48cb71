//! Role-based access control: which roles may call which tools, read which
//! resources and fetch which prompts, and which risky calls need a human's
//! approval first. Closes OWASP MCP02 (privilege escalation via scope creep)
//! and the authorization half of MCP07 at the gateway.
//!
//! # Config
//!
//! ```json
//! {
//!   "roles": {
//!     "analyst":  { "allow": ["analytics/query_*"], "allow_resources": ["analytics/*"] },
//!     "engineer": { "allow": ["*"], "deny": ["*/drop_*"] },
//!     "*":        { "deny": ["secrets/*"] }
//!   },
//!   "default": "deny",
//!   "risk": [ { "match": "*/delete_*", "level": "critical" } ],
//!   "unannotated_risk": "medium",
//!   "actions": { "critical": "ask", "high": "ask-if-destructive", "medium": "allow", "low": "allow" },
//!   "destructive_words": ["delete", "drop", "truncate"]
//! }
//! ```
//!
//! - `roles`: role name → rules. `allow`/`deny` hold `server/tool` patterns
//!   (see `warden_policy_sdk::Pattern`), `allow_resources`/`deny_resources`
//!   match `server/uri`, `allow_prompts`/`deny_prompts` match `server/prompt`.
//!   The role `*` applies to every caller. A deny in any of the caller's roles
//!   wins over an allow in another.
//! - `default`: what happens when no rule matches (`deny`, the default, or `allow`).
//! - `risk`: ordered `{match, level}` entries; the first match sets a tool's
//!   risk level (`low`, `medium`, `high`, `critical`). Tools no entry matches
//!   take their level from annotations: `readOnlyHint` → low, `destructiveHint`
//!   true → high, false → medium; with neither, `unannotated_risk` (medium).
//! - `actions`: risk level → `allow`, `ask`, `deny`, `ask-if-destructive` or
//!   `deny-if-destructive`. The defaults ask for every critical call and for
//!   high-risk calls whose arguments carry a destructive word.
//! - `destructive_words`: whole words (case-insensitive) that make arguments
//!   destructive; defaults to delete, drop, truncate, destroy, purge, wipe,
//!   erase, shred, rm, rmdir.
//!
//! `on-list` hides every tool the caller's roles may not call.

use std::collections::BTreeMap;

use serde::Deserialize;
use warden_policy_sdk::{
    Call, CallPolicy, CallVerdict, CatalogPolicy, ItemKind, ListPolicy, ListRequest, ListVerdict, ListedItem,
    ListedTool, Pattern, Policy, Principal, TargetKind, ToolAnnotations, Value,
};

/// The policy's configuration; see the crate docs.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Role name → rules; `*` applies to everyone.
    #[serde(default)]
    pub roles: BTreeMap<String, Role>,
    /// Decision when no rule matches.
    #[serde(default)]
    pub default: Fallback,
    /// Ordered risk overrides.
    #[serde(default)]
    pub risk: Vec<RiskRule>,
    /// Risk of a tool without annotations or overrides.
    #[serde(default)]
    pub unannotated_risk: Risk,
    /// What each risk level triggers.
    #[serde(default)]
    pub actions: Actions,
    /// Words that make a call's arguments destructive.
    #[serde(default = "default_destructive_words")]
    pub destructive_words: Vec<String>,
}

/// What one role may and may not do.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Tools the role may call.
    #[serde(default)]
    pub allow: Vec<Pattern>,
    /// Tools the role may never call.
    #[serde(default)]
    pub deny: Vec<Pattern>,
    /// Resources the role may read.
    #[serde(default)]
    pub allow_resources: Vec<Pattern>,
    /// Resources the role may never read.
    #[serde(default)]
    pub deny_resources: Vec<Pattern>,
    /// Prompts the role may fetch.
    #[serde(default)]
    pub allow_prompts: Vec<Pattern>,
    /// Prompts the role may never fetch.
    #[serde(default)]
    pub deny_prompts: Vec<Pattern>,
}

/// The decision when no rule matches.
#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Refuse (fail closed).
    #[default]
    Deny,
    /// Permit.
    Allow,
}

/// How dangerous a tool is.
#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// Reads only.
    Low,
    /// Changes things, not destructively.
    #[default]
    Medium,
    /// May destroy data.
    High,
    /// Must not run unattended.
    Critical,
}

/// A risk override for the tools a pattern matches.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RiskRule {
    /// Which tools.
    #[serde(rename = "match")]
    pub pattern: Pattern,
    /// Their risk level.
    pub level: Risk,
}

/// What a risk level triggers.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Let the call through.
    Allow,
    /// Require approval.
    Ask,
    /// Refuse.
    Deny,
    /// Require approval when the arguments carry a destructive word.
    AskIfDestructive,
    /// Refuse when the arguments carry a destructive word.
    DenyIfDestructive,
}

/// Action per risk level.
#[derive(Deserialize, Debug, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct Actions {
    /// For low-risk tools.
    #[serde(default = "allow")]
    pub low: Action,
    /// For medium-risk tools.
    #[serde(default = "allow")]
    pub medium: Action,
    /// For high-risk tools.
    #[serde(default = "ask_if_destructive")]
    pub high: Action,
    /// For critical tools.
    #[serde(default = "ask")]
    pub critical: Action,
}

impl Default for Actions {
    fn default() -> Self {
        Self { low: Action::Allow, medium: Action::Allow, high: Action::AskIfDestructive, critical: Action::Ask }
    }
}

fn allow() -> Action {
    Action::Allow
}
fn ask() -> Action {
    Action::Ask
}
fn ask_if_destructive() -> Action {
    Action::AskIfDestructive
}

fn default_destructive_words() -> Vec<String> {
    ["delete", "drop", "truncate", "destroy", "purge", "wipe", "erase", "shred", "rm", "rmdir"]
        .map(String::from)
        .to_vec()
}

/// The policy.
pub struct Rbac;

impl Policy for Rbac {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for (name, role) in &config.roles {
            if name.trim().is_empty() {
                problems.push("roles: a role name is empty".to_owned());
            }
            let rules = role.allow.len()
                + role.deny.len()
                + role.allow_resources.len()
                + role.deny_resources.len()
                + role.allow_prompts.len()
                + role.deny_prompts.len();
            if rules == 0 {
                problems.push(format!("roles.{name}: has no rules (an empty role grants nothing; remove it)"));
            }
        }
        for (i, word) in config.destructive_words.iter().enumerate() {
            if word.is_empty() || !word.chars().all(char::is_alphanumeric) {
                problems.push(format!("destructive_words[{i}]: {word:?} is not a single word"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// Whether the principal's roles let it reach `name` on `server`.
pub fn permitted(
    config: &Config,
    principal: &Principal,
    kind: TargetKind,
    server: &str,
    name: &str,
) -> Result<(), String> {
    let roles = || {
        principal
            .roles
            .iter()
            .filter_map(|r| config.roles.get(r).map(|role| (r.as_str(), role)))
            .chain(config.roles.get("*").map(|role| ("*", role)))
    };
    fn rules(role: &Role, kind: TargetKind) -> (&[Pattern], &[Pattern]) {
        match kind {
            TargetKind::Tool => (&role.allow, &role.deny),
            TargetKind::Resource => (&role.allow_resources, &role.deny_resources),
            TargetKind::Prompt => (&role.allow_prompts, &role.deny_prompts),
        }
    }
    let what = kind_name(kind);
    for (role_name, role) in roles() {
        let (_, deny) = rules(role, kind);
        if let Some(p) = deny.iter().find(|p| p.matches(server, name)) {
            return Err(format!("role {role_name} may not use {what} {server}/{name} (denied by {p})"));
        }
    }
    for (_, role) in roles() {
        let (allow, _) = rules(role, kind);
        if allow.iter().any(|p| p.matches(server, name)) {
            return Ok(());
        }
    }
    match config.default {
        Fallback::Allow => Ok(()),
        Fallback::Deny => {
            let roles = if principal.roles.is_empty() { "no roles".to_owned() } else { principal.roles.join(", ") };
            Err(format!("{} ({roles}) is not allowed to use {what} {server}/{name}", principal.subject))
        }
    }
}

fn kind_name(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Tool => "tool",
        TargetKind::Resource => "resource",
        TargetKind::Prompt => "prompt",
    }
}

/// A tool's risk level: config overrides first, then annotations.
pub fn risk_of(config: &Config, server: &str, name: &str, annotations: &ToolAnnotations) -> Risk {
    if let Some(rule) = config.risk.iter().find(|r| r.pattern.matches(server, name)) {
        return rule.level;
    }
    match (annotations.read_only_hint, annotations.destructive_hint) {
        (Some(true), _) => Risk::Low,
        (_, Some(true)) => Risk::High,
        (_, Some(false)) => Risk::Medium,
        _ => config.unannotated_risk,
    }
}

/// The first destructive word found among the words of the arguments' strings
/// (keys and values, at any depth).
pub fn destructive_word<'a>(config: &'a Config, arguments: &Value) -> Option<&'a str> {
    let words = &config.destructive_words;
    let in_text = |text: &str| -> Option<&'a str> {
        text.split(|c: char| !c.is_alphanumeric())
            .find_map(|token| words.iter().find(|w| w.eq_ignore_ascii_case(token)))
            .map(String::as_str)
    };
    match arguments {
        Value::String(s) => in_text(s),
        Value::Array(items) => items.iter().find_map(|v| destructive_word(config, v)),
        Value::Object(map) => map.iter().find_map(|(k, v)| in_text(k).or_else(|| destructive_word(config, v))),
        _ => None,
    }
}

impl CallPolicy for Rbac {
    fn on_call(config: &Config, call: &Call) -> CallVerdict {
        let target = &call.target;
        if let Err(reason) = permitted(config, &call.principal, target.kind, &target.server, &target.name) {
            return CallVerdict::deny("forbidden", reason);
        }
        if target.kind != TargetKind::Tool {
            return CallVerdict::Allow;
        }
        let risk = risk_of(config, &target.server, &target.name, &target.annotations);
        let action = match risk {
            Risk::Low => config.actions.low,
            Risk::Medium => config.actions.medium,
            Risk::High => config.actions.high,
            Risk::Critical => config.actions.critical,
        };
        let level = format!("{risk:?}").to_lowercase();
        let tool = format!("{}/{}", target.server, target.name);
        let destructive = || destructive_word(config, &call.arguments_json());
        match action {
            Action::Allow => CallVerdict::Allow,
            Action::Ask => CallVerdict::ask(format!(
                "{} wants to call {tool}, a {level}-risk tool, with arguments {}. Approve?",
                call.principal.subject, call.arguments
            )),
            Action::Deny => CallVerdict::deny("risk", format!("{tool} is a {level}-risk tool")),
            Action::AskIfDestructive => match destructive() {
                Some(word) => CallVerdict::ask(format!(
                    "{} wants to call {tool}, a {level}-risk tool, with destructive arguments (\"{word}\"): {}. Approve?",
                    call.principal.subject, call.arguments
                )),
                None => CallVerdict::Allow,
            },
            Action::DenyIfDestructive => match destructive() {
                Some(word) => CallVerdict::deny(
                    "destructive",
                    format!("{tool} is a {level}-risk tool and the arguments are destructive (\"{word}\")"),
                ),
                None => CallVerdict::Allow,
            },
        }
    }
}

impl ListPolicy for Rbac {
    fn on_list(config: &Config, request: &ListRequest, tools: &[ListedTool]) -> Vec<ListVerdict> {
        tools
            .iter()
            .map(|tool| match permitted(config, &request.principal, TargetKind::Tool, &tool.server, &tool.name) {
                Ok(()) => ListVerdict::Show,
                Err(reason) => ListVerdict::Hide(reason),
            })
            .collect()
    }
}

/// Resources, templates and prompts a role may not use are hidden from its
/// listings; templates follow the resource rules, matched on the URI template.
impl CatalogPolicy for Rbac {
    fn on_catalog(config: &Config, request: &ListRequest, items: &[ListedItem]) -> Vec<ListVerdict> {
        items
            .iter()
            .map(|item| {
                let kind = match item.kind {
                    ItemKind::Resource | ItemKind::ResourceTemplate => TargetKind::Resource,
                    ItemKind::Prompt => TargetKind::Prompt,
                };
                match permitted(config, &request.principal, kind, &item.server, &item.name) {
                    Ok(()) => ListVerdict::Show,
                    Err(reason) => ListVerdict::Hide(reason),
                }
            })
            .collect()
    }
}

warden_policy_sdk::export!(Rbac: call, list, catalog);

/// Each hook call gets a fresh instance: allocate by bumping a pointer.
#[global_allocator]
static ALLOCATOR: warden_policy_sdk::PerCall = warden_policy_sdk::PerCall;

#[cfg(test)]
mod tests {
    use super::*;
    use warden_policy_sdk::{parse_config, serde_json::json, testing};

    fn config(value: Value) -> Config {
        let config: Config = parse_config(&value.to_string()).unwrap();
        Rbac::validate(&config).unwrap();
        config
    }

    fn quickstart() -> Config {
        config(json!({
            "roles": {
                "analyst": { "allow": ["analytics/query_analytics_db"], "allow_resources": ["analytics/*"] },
                "engineer": { "allow": ["*"], "deny": ["*/drop_*"] },
                "*": { "deny": ["secrets/rotate_*"] }
            },
            "risk": [{ "match": "*/purge_*", "level": "critical" }]
        }))
    }

    fn annotations(read_only: Option<bool>, destructive: Option<bool>) -> ToolAnnotations {
        ToolAnnotations { read_only_hint: read_only, destructive_hint: destructive, ..Default::default() }
    }

    fn principal(roles: &[&str]) -> Principal {
        Principal { roles: roles.iter().map(|r| r.to_string()).collect(), ..testing::principal("alice") }
    }

    fn call(roles: &[&str], server: &str, name: &str, ann: ToolAnnotations, args: Value) -> Call {
        let mut call = testing::call(server, name);
        call.principal = principal(roles);
        call.target.annotations = ann;
        call.arguments = args.to_string();
        call
    }

    fn verdict(config: &Config, roles: &[&str], tool: &str, ann: &ToolAnnotations, args: Value) -> CallVerdict {
        let (server, name) = tool.split_once('/').unwrap();
        Rbac::on_call(config, &call(roles, server, name, ann.clone(), args))
    }

    #[test]
    fn roles_allow_and_the_default_denies() {
        let c = quickstart();
        let none = annotations(None, None);
        assert_eq!(verdict(&c, &["analyst"], "analytics/query_analytics_db", &none, json!({})), CallVerdict::Allow);
        let CallVerdict::Deny(d) = verdict(&c, &["analyst"], "workspace/write_workspace_file", &none, json!({})) else {
            panic!("analyst must not write")
        };
        assert_eq!(d.code, "forbidden");
        assert_eq!(d.reason, "alice (analyst) is not allowed to use tool workspace/write_workspace_file");
        assert!(matches!(verdict(&c, &[], "analytics/query_analytics_db", &none, json!({})), CallVerdict::Deny(_)));
    }

    #[test]
    fn a_deny_in_any_role_wins() {
        let c = quickstart();
        let none = annotations(None, None);
        let CallVerdict::Deny(d) = verdict(&c, &["analyst", "engineer"], "db/drop_table", &none, json!({})) else {
            panic!("engineer's deny must win")
        };
        assert!(d.reason.contains("denied by */drop_*"), "{}", d.reason);
        // The `*` role applies to everyone.
        assert!(matches!(verdict(&c, &["engineer"], "secrets/rotate_keys", &none, json!({})), CallVerdict::Deny(_)));
    }

    #[test]
    fn listings_hide_the_resources_templates_and_prompts_a_role_may_not_use() {
        let config = quickstart();
        let request = testing::list_request(principal(&["analyst"]));
        let items = [
            testing::listed_item(ItemKind::Resource, "analytics", "db://schema", ""),
            testing::listed_item(ItemKind::ResourceTemplate, "analytics", "db://rows/{id}", ""),
            testing::listed_item(ItemKind::Resource, "secrets", "vault://keys", ""),
            testing::listed_item(ItemKind::Prompt, "analytics", "summary", ""),
        ];
        let verdicts = Rbac::on_catalog(&config, &request, &items);
        assert_eq!(verdicts[..2], [ListVerdict::Show, ListVerdict::Show]);
        assert!(matches!(&verdicts[2], ListVerdict::Hide(why) if why.contains("resource secrets/vault://keys")));
        assert!(matches!(&verdicts[3], ListVerdict::Hide(why) if why.contains("prompt analytics/summary")));
    }

    #[test]
    fn resources_have_their_own_rules() {
        let c = quickstart();
        assert_eq!(permitted(&c, &principal(&["analyst"]), TargetKind::Resource, "analytics", "db://rows"), Ok(()));
        assert!(permitted(&c, &principal(&["analyst"]), TargetKind::Prompt, "analytics", "summary").is_err());
    }

    #[test]
    fn critical_tools_ask() {
        let c = quickstart();
        let v = verdict(&c, &["engineer"], "db/purge_cache", &annotations(None, None), json!({}));
        let CallVerdict::Ask(prompt) = v else { panic!("critical must ask, got {v:?}") };
        assert!(prompt.contains("db/purge_cache, a critical-risk tool"), "{prompt}");
    }

    #[test]
    fn high_risk_asks_only_with_destructive_arguments() {
        let c = quickstart();
        let destructive = annotations(Some(false), Some(true));
        let v = verdict(&c, &["engineer"], "db/run_sql", &destructive, json!({"sql": "DELETE FROM users"}));
        assert!(matches!(&v, CallVerdict::Ask(p) if p.contains("(\"delete\")")), "{v:?}");
        // Whole words only: "deleted" is not "delete".
        let v = verdict(&c, &["engineer"], "db/run_sql", &destructive, json!({"sql": "SELECT * WHERE deleted = 0"}));
        assert_eq!(v, CallVerdict::Allow);
        // Read-only tools are low risk even with scary words.
        let v = verdict(&c, &["engineer"], "db/run_sql", &annotations(Some(true), None), json!({"q": "drop"}));
        assert_eq!(v, CallVerdict::Allow);
    }

    #[test]
    fn risk_comes_from_overrides_then_annotations() {
        let c = quickstart();
        assert_eq!(risk_of(&c, "db", "purge_all", &annotations(Some(true), None)), Risk::Critical);
        assert_eq!(risk_of(&c, "db", "x", &annotations(Some(true), Some(true))), Risk::Low);
        assert_eq!(risk_of(&c, "db", "x", &annotations(None, Some(true))), Risk::High);
        assert_eq!(risk_of(&c, "db", "x", &annotations(None, Some(false))), Risk::Medium);
        assert_eq!(risk_of(&c, "db", "x", &annotations(None, None)), Risk::Medium);
    }

    #[test]
    fn configurable_actions() {
        let c = config(json!({
            "default": "allow",
            "actions": { "high": "deny-if-destructive", "medium": "ask" },
            "destructive_words": ["nuke"]
        }));
        let v = verdict(&c, &[], "s/t", &annotations(None, Some(true)), json!({"what": ["NUKE it"]}));
        assert!(matches!(&v, CallVerdict::Deny(d) if d.code == "destructive"), "{v:?}");
        let v = verdict(&c, &[], "s/t", &annotations(None, Some(false)), json!({}));
        assert!(matches!(v, CallVerdict::Ask(_)));
    }

    #[test]
    fn listing_hides_what_the_roles_cannot_call() {
        let c = quickstart();
        let tools = [
            testing::listed_tool("analytics", "query_analytics_db", "Run SQL"),
            testing::listed_tool("workspace", "write_workspace_file", "Write a file"),
        ];
        let request = testing::list_request(principal(&["analyst"]));
        let verdicts = Rbac::on_list(&c, &request, &tools);
        assert_eq!(verdicts[0], ListVerdict::Show);
        assert!(matches!(&verdicts[1], ListVerdict::Hide(_)));
    }

    #[test]
    fn bad_configs_are_reported_in_full() {
        let err = parse_config::<Config>(r#"{"roles": {"a": {"allow": [""]}}}"#).unwrap_err();
        assert!(err.contains("pattern \"\": is empty"), "{err}");
        let err = parse_config::<Config>(r#"{"rolez": {}}"#).unwrap_err();
        assert!(err.contains("unknown field `rolez`"), "{err}");
        let c: Config = parse_config(r#"{"roles": {"empty": {}}, "destructive_words": ["two words", ""]}"#).unwrap();
        let problems = Rbac::validate(&c).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }
}
