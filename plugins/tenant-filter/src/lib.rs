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
//!   nested objects. The first one present (and not null) on a record
//!   decides. At most 64. Default: `["tenant", "tenant_id"]`.
//! - `strict`: withhold a result that has text content this policy cannot
//!   parse as JSON (and so cannot check). Off by default: plain prose passes.
//!
//! A record is any JSON object carrying one of the fields. Records of another
//! tenant (or, for a caller without a tenant, of any tenant) are removed from
//! the arrays that hold them, in `structuredContent` and in text content that
//! holds JSON (tool results, resource contents, prompt messages alike). A
//! foreign record that is not in an array cannot be removed without changing
//! the result's shape, so the whole result is withheld.
//!
//! The result is read as text with a pull parser, never built into a tree:
//! records are cut out where they stand and everything else is copied as it
//! was written, layout and key order included. On a 64 KiB result that is
//! 2.5x faster than parsing and writing back a tree (`bench/README.md`).

use jiter::{Jiter, Peek};
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
        if config.fields.len() > MAX_FIELDS {
            problems.push(format!("fields: at most {MAX_FIELDS}"));
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

impl Filtered {
    fn add(&mut self, other: Filtered) {
        self.dropped += other.dropped;
        self.unremovable |= other.unremovable;
        self.unparsed += other.unparsed;
    }
}

/// JSON this policy cannot read, and why.
#[derive(Debug)]
pub struct Unreadable(String);

impl From<jiter::JiterError> for Unreadable {
    fn from(e: jiter::JiterError) -> Self {
        Self(e.to_string())
    }
}

/// Deeper than this is refused, as `serde_json` refuses it.
const MAX_DEPTH: usize = 128;

/// Fields are bits of a `u64`.
const MAX_FIELDS: usize = 64;

/// A value's text after filtering.
enum Out {
    /// As it was: the source text stands.
    Same,
    /// Rewritten.
    Changed(String),
}

/// What a record's scalar tenant fields said, field by field (bit `i` is
/// `fields[i]`).
#[derive(Default)]
struct Owners {
    /// The object has a member named by the field's first key.
    seen: u64,
    /// The field held a scalar (null included), read in passing.
    read: u64,
    /// ... and it was not null.
    present: u64,
    /// ... and it named another tenant.
    foreign: u64,
}

/// The filter reads JSON text with `jiter`, a pull parser, and writes back
/// only what changed: no tree is built, and untouched text (its formatting
/// too) is copied as it stands.
struct Filter<'a> {
    fields: Vec<Vec<&'a str>>,
    /// Fields that are a single key, as bits.
    flat: u64,
    tenant: Option<&'a str>,
}

impl<'a> Filter<'a> {
    fn new(config: &'a Config, tenant: Option<&'a str>) -> Self {
        let fields: Vec<Vec<&str>> = config.fields.iter().take(MAX_FIELDS).map(|f| f.split('.').collect()).collect();
        let flat = fields.iter().enumerate().filter(|(_, f)| f.len() == 1).fold(0, |bits, (i, _)| bits | 1 << i);
        Self { fields, flat, tenant }
    }

    /// Whether a tenant field's value, as text, names another tenant.
    fn names_other(&self, owner: &str) -> bool {
        self.tenant != Some(owner)
    }

    /// The fields whose first key is `key`, as bits.
    fn fields_at(&self, key: &str) -> u64 {
        self.fields.iter().enumerate().filter(|(_, f)| f[0] == key).fold(0, |bits, (i, _)| bits | 1 << i)
    }

    /// Filter the JSON text `json`. A foreign record at its top cannot be
    /// removed.
    fn text(&self, json: &str, found: &mut Filtered) -> Result<Out, Unreadable> {
        let mut parser = Jiter::new(json.as_bytes());
        let peek = parser.peek()?;
        let (out, foreign) = self.value(&mut parser, json, peek, 0, found)?;
        parser.finish()?;
        found.unremovable |= foreign;
        Ok(out)
    }

    /// Filter the value that starts at the parser (`peek` is its first
    /// byte). Also says whether it is a record of another tenant, which the
    /// caller removes (from an array) or cannot (anywhere else).
    fn value(
        &self,
        parser: &mut Jiter,
        src: &str,
        peek: Peek,
        depth: usize,
        found: &mut Filtered,
    ) -> Result<(Out, bool), Unreadable> {
        if depth > MAX_DEPTH {
            return Err(Unreadable(format!("nested more than {MAX_DEPTH} levels deep")));
        }
        match peek {
            Peek::Array => Ok((self.array(parser, src, depth, found)?, false)),
            Peek::Object => self.object(parser, src, depth, found),
            _ => {
                parser.known_skip(peek)?;
                Ok((Out::Same, false))
            }
        }
    }

    /// An array loses its foreign records. Rewritten, it keeps the source's
    /// spacing: what led its first element, separated its first two, and
    /// trailed its last.
    fn array(&self, parser: &mut Jiter, src: &str, depth: usize, found: &mut Filtered) -> Result<Out, Unreadable> {
        let open = parser.current_index();
        let mut kept: Vec<(usize, usize, Out)> = Vec::new();
        let (mut first, mut last, mut separator) = (None, 0, None);
        let mut changed = false;
        let mut next = parser.known_array()?;
        while let Some(peek) = next {
            let start = parser.current_index();
            if separator.is_none() && first.is_some() {
                separator = Some(&src[last..start]);
            }
            first.get_or_insert(start);
            // What a removed record holds does not count.
            let mut inside = Filtered::default();
            let (out, foreign) = self.value(parser, src, peek, depth + 1, &mut inside)?;
            last = parser.current_index();
            if foreign {
                found.dropped += 1;
                changed = true;
            } else {
                found.add(inside);
                changed |= matches!(out, Out::Changed(_));
                kept.push((start, last, out));
            }
            next = parser.array_step()?;
        }
        let (Some(first), true) = (first, changed) else { return Ok(Out::Same) };
        let close = parser.current_index() - 1;
        if kept.is_empty() {
            return Ok(Out::Changed("[]".into()));
        }
        let mut text = String::with_capacity(close - open);
        text.push('[');
        text.push_str(&src[open + 1..first]);
        for (n, (start, end, out)) in kept.iter().enumerate() {
            if n > 0 {
                text.push_str(separator.unwrap_or(","));
            }
            match out {
                Out::Same => text.push_str(&src[*start..*end]),
                Out::Changed(new) => text.push_str(new),
            }
        }
        text.push_str(&src[last..close]);
        text.push(']');
        Ok(Out::Changed(text))
    }

    /// An object: its members filtered, its text content that holds JSON
    /// filtered too, and whether it is a foreign record.
    fn object(
        &self,
        parser: &mut Jiter,
        src: &str,
        depth: usize,
        found: &mut Filtered,
    ) -> Result<(Out, bool), Unreadable> {
        let open = parser.current_index();
        let mut edits: Vec<(usize, usize, String)> = Vec::new();
        let mut owners = Owners::default();
        let mut member = parser.known_object()?.map(|key| (self.fields_at(key), key == "text"));
        while let Some((fields, text)) = member {
            let peek = parser.peek()?;
            let start = parser.current_index();
            owners.seen |= fields;
            let scalar = !matches!(peek, Peek::Array | Peek::Object);
            if fields & self.flat != 0 && scalar && !(text && peek == Peek::String) {
                let bits = fields & self.flat;
                owners.read |= bits;
                let other = match peek {
                    Peek::Null => {
                        parser.known_null()?;
                        None
                    }
                    Peek::String => Some(self.names_other(parser.known_str()?)),
                    Peek::True | Peek::False => Some(self.names_other(&parser.known_bool(peek)?.to_string())),
                    _ => Some(self.names_other(&String::from_utf8_lossy(parser.known_number_bytes(peek)?))),
                };
                if let Some(other) = other {
                    owners.present |= bits;
                    owners.foreign |= if other { bits } else { 0 };
                }
            } else if text && peek == Peek::String {
                let json = parser.known_str()?;
                let mut inside = Filtered::default();
                let filtered = self.text(json, &mut inside);
                if filtered.is_ok() {
                    found.add(inside);
                }
                match filtered {
                    Err(_) => found.unparsed += 1,
                    Ok(Out::Same) => {}
                    Ok(Out::Changed(new)) => {
                        let quoted = serde_json::to_string(&new).expect("a string always serialises");
                        edits.push((start, parser.current_index(), quoted));
                    }
                }
            } else {
                let (out, foreign) = self.value(parser, src, peek, depth + 1, found)?;
                found.unremovable |= foreign;
                if let Out::Changed(new) = out {
                    edits.push((start, parser.current_index(), new));
                }
            }
            member = parser.next_key()?.map(|key| (self.fields_at(key), key == "text"));
        }
        let close = parser.current_index();
        let foreign = self.owner(&src[open..close], &owners)?;
        if edits.is_empty() {
            return Ok((Out::Same, foreign));
        }
        let mut text = String::with_capacity(close - open);
        let mut at = open;
        for (start, end, new) in &edits {
            text.push_str(&src[at..*start]);
            text.push_str(new);
            at = *end;
        }
        text.push_str(&src[at..close]);
        Ok((Out::Changed(text), foreign))
    }

    /// Whether the object `src` is a record of another tenant: the first of
    /// the fields present and not null decides. Scalars under a single key
    /// were read in passing; dotted paths (and odd values) are looked up in
    /// the object's text, and only when their first key is there.
    fn owner(&self, src: &str, owners: &Owners) -> Result<bool, Unreadable> {
        for (i, path) in self.fields.iter().enumerate() {
            let bit = 1 << i;
            if owners.seen & bit == 0 {
                continue;
            }
            if owners.read & bit != 0 {
                if owners.present & bit != 0 {
                    return Ok(owners.foreign & bit != 0);
                }
                continue;
            }
            if let Some(owner) = lookup(src, path)? {
                return Ok(self.names_other(&owner));
            }
        }
        Ok(false)
    }
}

/// The value at `path` in the object `src`, as text (a string decoded, any
/// other value as it stands), unless it is missing or null.
fn lookup(src: &str, path: &[&str]) -> Result<Option<String>, Unreadable> {
    let mut parser = Jiter::new(src.as_bytes());
    for (depth, key) in path.iter().enumerate() {
        if parser.peek()? != Peek::Object {
            return Ok(None);
        }
        let mut member = parser.known_object()?.map(|k| k == *key);
        loop {
            match member {
                None => return Ok(None),
                Some(true) => break,
                Some(false) => {
                    parser.next_skip()?;
                    member = parser.next_key()?.map(|k| k == *key);
                }
            }
        }
        if depth + 1 == path.len() {
            let peek = parser.peek()?;
            let start = parser.current_index();
            return Ok(match peek {
                Peek::Null => None,
                Peek::String => Some(parser.known_str()?.to_owned()),
                _ => {
                    parser.known_skip(peek)?;
                    Some(String::from_utf8_lossy(parser.slice_to_current(start)).into_owned())
                }
            });
        }
    }
    Ok(None)
}

/// Remove records of tenants other than `tenant` from the JSON text
/// `output`; the rewritten text, if anything was removed.
pub fn filter(config: &Config, tenant: Option<&str>, output: &str) -> Result<(Option<String>, Filtered), Unreadable> {
    let mut found = Filtered::default();
    let out = Filter::new(config, tenant).text(output, &mut found)?;
    Ok((
        match out {
            Out::Same => None,
            Out::Changed(text) => Some(text),
        },
        found,
    ))
}

impl ResultPolicy for TenantFilter {
    fn on_result(config: &Config, call: &Call, output: Value) -> ResultVerdict {
        let text = serde_json::to_string(&output).expect("a JSON value always serialises");
        Self::on_result_json(config, call, &text)
    }

    fn on_result_json(config: &Config, call: &Call, output: &str) -> ResultVerdict {
        let tenant = call.principal.tenant.as_deref();
        let (rewritten, found) = match filter(config, tenant, output) {
            Ok(filtered) => filtered,
            Err(Unreadable(e)) => return ResultVerdict::not_json(e),
        };
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
        match rewritten {
            None => ResultVerdict::Allow,
            Some(json) => ResultVerdict::Rewrite(warden_policy_sdk::Rewrite {
                json,
                note: format!("dropped {} record(s) of other tenants for {whose}", found.dropped),
            }),
        }
    }
}

warden_policy_sdk::export!(TenantFilter: result);

/// Each hook call gets a fresh instance: allocate by bumping a pointer.
#[global_allocator]
static ALLOCATOR: warden_policy_sdk::PerCall = warden_policy_sdk::PerCall;

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

    /// Filter `output` as the gateway sends it: the result as it comes
    /// out, and what was found.
    fn run(config: &Config, tenant: Option<&str>, output: &Value) -> (Value, Filtered) {
        let text = output.to_string();
        let (rewritten, found) = filter(config, tenant, &text).unwrap();
        (serde_json::from_str(&rewritten.unwrap_or(text)).unwrap(), found)
    }

    #[test]
    fn drops_foreign_rows_from_structured_content() {
        let output = json!({"content": [], "structuredContent": {"rows": rows()}});
        let (output, found) = run(&Config::default(), Some("acme"), &output);
        assert_eq!(found, Filtered { dropped: 1, unremovable: false, unparsed: 0 });
        assert_eq!(output["structuredContent"]["rows"].as_array().unwrap().len(), 2);
        assert!(output.to_string().contains("\"acme\"") && !output.to_string().contains("globex"));
    }

    #[test]
    fn drops_foreign_rows_from_json_text_content() {
        let text = serde_json::to_string_pretty(&json!({"rows": rows()})).unwrap();
        let output = json!({"content": [{"type": "text", "text": text}, {"type": "text", "text": "3 rows"}]});
        let (output, found) = run(&Config::default(), Some("globex"), &output);
        assert_eq!(found, Filtered { dropped: 2, unremovable: false, unparsed: 1 });
        let kept = output["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(kept).unwrap(),
            json!({"rows": [{"id": 2, "tenant": "globex", "revenue": 20}]})
        );
        // The text keeps its layout.
        assert_eq!(
            kept,
            serde_json::to_string_pretty(&json!({"rows": [{"id": 2, "tenant": "globex", "revenue": 20}]})).unwrap()
        );
    }

    #[test]
    fn what_is_not_removed_stays_as_it_was_written() {
        let text = "{ \"rows\" : [ {\"tenant\":\"acme\", \"n\": 1.50} ,\n {\"tenant\": \"globex\"},{\"tenant\":\"acme\",\"n\":2e3} ] , \"x\":\"\\u00e9\" }";
        let (rewritten, found) = filter(&Config::default(), Some("acme"), text).unwrap();
        assert_eq!(found.dropped, 1);
        assert_eq!(
            rewritten.unwrap(),
            "{ \"rows\" : [ {\"tenant\":\"acme\", \"n\": 1.50} ,\n {\"tenant\":\"acme\",\"n\":2e3} ] , \"x\":\"\\u00e9\" }"
        );
        // Nothing removed: no rewrite at all.
        assert_eq!(filter(&Config::default(), Some("acme"), "{\"rows\": [{\"tenant\": \"acme\"}]}").unwrap().0, None);
        // Everything removed.
        let (rewritten, _) = filter(&Config::default(), Some("acme"), "{\"rows\": [ {\"tenant\": \"b\"} ]}").unwrap();
        assert_eq!(rewritten.unwrap(), "{\"rows\": []}");
    }

    #[test]
    fn what_a_removed_record_holds_does_not_count() {
        // A foreign order holds its own lines (foreign too) and a foreign
        // record under a key, which alone could not be removed.
        let output = json!({"orders": [
            {"tenant": "globex", "lines": [{"tenant": "globex"}], "buyer": {"tenant": "globex"}, "text": "not json"},
            {"tenant": "acme", "lines": [{"tenant": "acme"}]}
        ]});
        let (output, found) = run(&Config::default(), Some("acme"), &output);
        assert_eq!(found, Filtered { dropped: 1, unremovable: false, unparsed: 0 });
        assert_eq!(output["orders"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_first_field_present_and_not_null_decides() {
        let config: Config = parse_config(r#"{"fields": ["org.id", "tenant"]}"#).unwrap();
        let rows = json!({"rows": [
            {"org": {"id": "acme"}, "tenant": "globex"},
            {"org": {"id": null}, "tenant": "globex"},
            {"org": {"name": "x"}, "tenant": "acme"},
            {"org": "acme", "tenant": 7},
            {"tenant": 7},
            {"tenant": null},
            {"tenant": true}
        ]});
        let (output, found) = run(&config, Some("7"), &rows);
        assert_eq!(found.dropped, 4);
        assert_eq!(output["rows"], json!([{"org": "acme", "tenant": 7}, {"tenant": 7}, {"tenant": null}]));
        let (output, _) = run(&config, Some("acme"), &rows);
        assert_eq!(
            output["rows"],
            json!([{"org": {"id": "acme"}, "tenant": "globex"}, {"org": {"name": "x"}, "tenant": "acme"}, {"tenant": null}])
        );
    }

    #[test]
    fn resource_contents_and_nested_paths() {
        let config: Config = parse_config(r#"{"fields": ["owner.org"]}"#).unwrap();
        TenantFilter::validate(&config).unwrap();
        let output = json!({"contents": [{"uri": "db://x", "text": "[{\"owner\": {\"org\": \"a\"}}, {\"owner\": {\"org\": \"b\"}}]"}]});
        let (output, found) = run(&config, Some("a"), &output);
        assert_eq!(found.dropped, 1);
        assert_eq!(output["contents"][0]["text"], "[{\"owner\": {\"org\": \"a\"}}]");
    }

    #[test]
    fn a_caller_without_a_tenant_sees_no_tenant_records() {
        let output = json!({"structuredContent": {"rows": rows(), "total": 3}});
        assert_eq!(run(&Config::default(), None, &output).1.dropped, 3);
    }

    #[test]
    fn text_that_is_not_json_is_counted_and_left_alone() {
        // Truncated JSON: what was read before the break is not counted.
        let output = json!({"content": [{"type": "text", "text": "[{\"tenant\": \"b\"}, {\"tenant\": "}, {"type": "text", "text": "42 rows"}]});
        let text = output.to_string();
        let (rewritten, found) = filter(&Config::default(), Some("a"), &text).unwrap();
        assert_eq!((rewritten, found), (None, Filtered { dropped: 0, unremovable: false, unparsed: 2 }));
    }

    #[test]
    fn a_result_it_cannot_read_is_withheld() {
        let call = call_for("acme");
        for bad in ["{\"rows\": [", "{} {}", &format!("{}{}", "[".repeat(200), "]".repeat(200))] {
            let v = TenantFilter::on_result_json(&Config::default(), &call, bad);
            assert!(matches!(&v, ResultVerdict::Deny(d) if d.code == "invalid-output"), "{bad}: {v:?}");
        }
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
        let c = Config { fields: (0..65).map(|i| format!("f{i}")).collect(), strict: false };
        assert_eq!(TenantFilter::validate(&c).unwrap_err(), ["fields: at most 64"]);
    }

    fn call_for(tenant: &str) -> Call {
        let mut call = warden_policy_sdk::testing::call("analytics", "query_analytics_db");
        call.principal.tenant = Some(tenant.into());
        call
    }
}
