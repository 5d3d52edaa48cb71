//! Tenant data filter: drops every record that belongs to another tenant from
//! what an upstream returns, so a shared upstream (one database, one search
//! index) cannot leak one customer's rows to another's agent. Closes part of
//! OWASP MCP10 (context over-sharing) for upstreams that tag their records.
//!
//! # Config
//!
//! ```json
//! { "fields": ["tenant", "org.id"], "strict": false }
//! ```
//!
//! - `fields`: where a record names its tenant: keys, or dotted paths into
//!   nested objects. The first one present on a record decides. Default:
//!   `["tenant", "tenant_id"]`.
//! - `strict`: withhold a result that has text content this policy cannot
//!   parse as JSON (and so cannot check). Off by default: plain prose passes.
//!
//! A record is any JSON object carrying one of the fields. Records of another
//! tenant (or, for a caller without a tenant, of any tenant) are removed from
//! the arrays that hold them, in `structuredContent` and in text content that
//! holds JSON (tool results, resource contents, prompt messages alike). A
//! foreign record that is not in an array cannot be removed without changing
//! the result's shape, so the whole result is withheld.

use serde::Deserialize;
use warden_policy_sdk::{Call, Policy, ResultPolicy, ResultVerdict, Value};

/// The policy's configuration; see the crate docs.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where records name their tenant.
    pub fields: Vec<String>,
    /// Withhold results whose text cannot be checked.
    pub strict: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { fields: vec!["tenant".into(), "tenant_id".into()], strict: false }
    }
}

/// The policy.
pub struct TenantFilter;

impl Policy for TenantFilter {
    type Config = Config;

    fn validate(config: &Config) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if config.fields.is_empty() {
            problems.push("fields: must name at least one field".to_owned());
        }
        for (i, field) in config.fields.iter().enumerate() {
            if field.split('.').any(str::is_empty) {
                problems.push(format!("fields[{i}]: {field:?} is not a key or a dotted path"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// What filtering found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// Foreign records removed.
    pub dropped: usize,
    /// A foreign record sat where it could not be removed.
    pub unremovable: bool,
    /// Text that strict mode could not check.
    pub unparsed: usize,
}

struct Filter<'a> {
    fields: Vec<Vec<&'a str>>,
    tenant: Option<&'a str>,
}

impl Filter<'_> {
    /// The tenant a record names, if it is a record.
    fn owner(&self, object: &serde_json::Map<String, Value>) -> Option<String> {
        self.fields.iter().find_map(|path| {
            let (last, parents) = path.split_last()?;
            let mut map = object;
            for key in parents {
                map = map.get(*key)?.as_object()?;
            }
            match map.get(*last)? {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        })
    }

    fn foreign(&self, value: &Value) -> bool {
        let Some(object) = value.as_object() else { return false };
        match self.owner(object) {
            Some(owner) => self.tenant != Some(owner.as_str()),
            None => false,
        }
    }

    /// Filter `value` in place. `in_text` marks a value parsed from text content.
    fn filter(&self, value: &mut Value, found: &mut Filtered) {
        match value {
            Value::Array(items) => {
                let before = items.len();
                items.retain(|item| !self.foreign(item));
                found.dropped += before - items.len();
                items.iter_mut().for_each(|item| self.filter(item, found));
            }
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    if self.foreign(child) {
                        found.unremovable = true;
                    } else if key == "text" && child.is_string() {
                        self.filter_text(child, found);
                    } else {
                        self.filter(child, found);
                    }
                }
            }
            _ => {}
        }
    }

    /// Text content that holds JSON is parsed, filtered and written back.
    fn filter_text(&self, text: &mut Value, found: &mut Filtered) {
        let Value::String(s) = text else { return };
        let Ok(mut parsed) = serde_json::from_str::<Value>(s) else {
            found.unparsed += 1;
            return;
        };
        if self.foreign(&parsed) {
            found.unremovable = true;
            return;
        }
        let before = found.dropped;
        self.filter(&mut parsed, found);
        if found.dropped > before {
            let pretty = s.contains('\n');
            *s = if pretty { serde_json::to_string_pretty(&parsed) } else { serde_json::to_string(&parsed) }
                .unwrap_or_default();
        }
    }
}

/// Remove records of tenants other than `tenant` from `output`.
pub fn filter(config: &Config, tenant: Option<&str>, output: &mut Value) -> Filtered {
    let filter = Filter { fields: config.fields.iter().map(|f| f.split('.').collect()).collect(), tenant };
    let mut found = Filtered::default();
    if filter.foreign(output) {
        found.unremovable = true;
    } else {
        filter.filter(output, &mut found);
    }
    found
}

impl ResultPolicy for TenantFilter {
    fn on_result(config: &Config, call: &Call, mut output: Value) -> ResultVerdict {
        let tenant = call.principal.tenant.as_deref();
        let found = filter(config, tenant, &mut output);
        let whose = tenant.map_or_else(|| "a caller without a tenant".to_owned(), |t| format!("tenant {t}"));
        if found.unremovable {
            return ResultVerdict::deny(
                "tenant-isolation",
                format!("the result holds another tenant's data ({whose})"),
            );
        }
        if config.strict && found.unparsed > 0 {
            return ResultVerdict::deny(
                "tenant-unverifiable",
                format!(
                    "{} text item(s) are not JSON, so their tenant cannot be checked (strict mode)",
                    found.unparsed
                ),
            );
        }
        match found.dropped {
            0 => ResultVerdict::Allow,
            n => ResultVerdict::rewrite(&output, format!("dropped {n} record(s) of other tenants for {whose}")),
        }
    }
}

warden_policy_sdk::export!(TenantFilter: result);

#[cfg(test)]
mod tests {
    use super::*;
    use warden_policy_sdk::{parse_config, serde_json::json};

    fn rows() -> Value {
        json!([
            {"id": 1, "tenant": "acme", "revenue": 10},
            {"id": 2, "tenant": "globex", "revenue": 20},
            {"id": 3, "tenant": "acme", "revenue": 30}
        ])
    }

    #[test]
    fn drops_foreign_rows_from_structured_content() {
        let mut output = json!({"content": [], "structuredContent": {"rows": rows()}});
        let found = filter(&Config::default(), Some("acme"), &mut output);
        assert_eq!(found, Filtered { dropped: 1, unremovable: false, unparsed: 0 });
        assert_eq!(output["structuredContent"]["rows"].as_array().unwrap().len(), 2);
        assert!(output.to_string().contains("\"acme\"") && !output.to_string().contains("globex"));
    }

    #[test]
    fn drops_foreign_rows_from_json_text_content() {
        let text = serde_json::to_string_pretty(&json!({"rows": rows()})).unwrap();
        let mut output = json!({"content": [{"type": "text", "text": text}, {"type": "text", "text": "3 rows"}]});
        let found = filter(&Config::default(), Some("globex"), &mut output);
        assert_eq!(found, Filtered { dropped: 2, unremovable: false, unparsed: 1 });
        let kept: Value = serde_json::from_str(output["content"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(kept, json!({"rows": [{"id": 2, "tenant": "globex", "revenue": 20}]}));
    }

    #[test]
    fn resource_contents_and_nested_paths() {
        let config: Config = parse_config(r#"{"fields": ["owner.org"]}"#).unwrap();
        TenantFilter::validate(&config).unwrap();
        let mut output = json!({"contents": [{"uri": "db://x", "text": "[{\"owner\": {\"org\": \"a\"}}, {\"owner\": {\"org\": \"b\"}}]"}]});
        assert_eq!(filter(&config, Some("a"), &mut output).dropped, 1);
        assert_eq!(output["contents"][0]["text"], "[{\"owner\":{\"org\":\"a\"}}]");
    }

    #[test]
    fn a_caller_without_a_tenant_sees_no_tenant_records() {
        let mut output = json!({"structuredContent": {"rows": rows(), "total": 3}});
        assert_eq!(filter(&Config::default(), None, &mut output).dropped, 3);
    }

    #[test]
    fn a_foreign_record_that_cannot_be_removed_withholds_the_result() {
        let call = call_for("acme");
        let v = TenantFilter::on_result(
            &Config::default(),
            &call,
            json!({"structuredContent": {"tenant": "globex", "x": 1}}),
        );
        assert!(matches!(v, ResultVerdict::Deny(d) if d.code == "tenant-isolation"));
        let v = TenantFilter::on_result(
            &Config::default(),
            &call,
            json!({"content": [{"type": "text", "text": "{\"tenant\": \"globex\"}"}]}),
        );
        assert!(matches!(v, ResultVerdict::Deny(_)));
    }

    #[test]
    fn verdicts_say_what_was_dropped() {
        let call = call_for("acme");
        let v = TenantFilter::on_result(&Config::default(), &call, json!({"structuredContent": {"rows": rows()}}));
        let ResultVerdict::Rewrite(r) = v else { panic!("expected a rewrite") };
        assert_eq!(r.note, "dropped 1 record(s) of other tenants for tenant acme");
        let own = json!({"structuredContent": {"rows": [{"tenant": "acme"}]}});
        assert_eq!(TenantFilter::on_result(&Config::default(), &call, own), ResultVerdict::Allow);
    }

    #[test]
    fn strict_mode_withholds_unparseable_text() {
        let strict: Config = parse_config(r#"{"strict": true}"#).unwrap();
        let call = call_for("acme");
        let v = TenantFilter::on_result(&strict, &call, json!({"content": [{"type": "text", "text": "trust me"}]}));
        assert!(matches!(v, ResultVerdict::Deny(d) if d.code == "tenant-unverifiable"));
        let lax = TenantFilter::on_result(
            &Config::default(),
            &call,
            json!({"content": [{"type": "text", "text": "trust me"}]}),
        );
        assert_eq!(lax, ResultVerdict::Allow);
    }

    #[test]
    fn bad_configs() {
        let c: Config = parse_config(r#"{"fields": ["a..b", ""]}"#).unwrap();
        assert_eq!(TenantFilter::validate(&c).unwrap_err().len(), 2);
        let c: Config = parse_config(r#"{"fields": []}"#).unwrap();
        assert!(TenantFilter::validate(&c).is_err());
    }

    fn call_for(tenant: &str) -> Call {
        let mut call = warden_policy_sdk::testing::call("analytics", "query_analytics_db");
        call.principal.tenant = Some(tenant.into());
        call
    }
}
