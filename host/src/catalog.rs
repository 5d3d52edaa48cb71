//! Federation: the tools, resources, resource templates and prompts of every
//! upstream in one catalog, under the names clients see.
//!
//! Naming (`[naming]` in the gateway config):
//! - `prefix`: every tool and prompt is `<prefix><separator><name>`;
//! - `bare`: names stay as the upstream gives them unless two upstreams use
//!   the same one; those are prefixed, and the collision is reported.
//!
//! Resources keep their URIs (a URI names the thing, not the server); reads
//! are routed to the upstream that listed the URI, or whose template matches
//! it. Two upstreams listing one URI is a collision: the first in config
//! order serves it.
//!
//! The catalog is an immutable snapshot, rebuilt whenever an upstream's lists
//! change; its generation number lets per-principal views be cached.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use serde_json::{Value, json};

use crate::{
    engine::ToolAnnotations,
    upstream::{CallHooks, Upstream, UpstreamError},
};

/// How exposed names are formed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Naming {
    /// Always prefix, or only on collision.
    pub mode: NamingMode,
    /// Between prefix and name.
    pub separator: String,
}

impl Default for Naming {
    fn default() -> Self {
        Self { mode: NamingMode::Bare, separator: "__".into() }
    }
}

/// See [`Naming`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamingMode {
    /// `<prefix><separator><name>` always.
    Prefix,
    /// Bare names unless they collide.
    Bare,
}

/// What one upstream offers, as it listed it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Offer {
    /// `Tool` objects.
    pub tools: Vec<Value>,
    /// `Resource` objects.
    pub resources: Vec<Value>,
    /// `ResourceTemplate` objects.
    pub templates: Vec<Value>,
    /// `Prompt` objects.
    pub prompts: Vec<Value>,
}

impl Offer {
    /// Whether it offers nothing at all.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty() && self.resources.is_empty() && self.templates.is_empty() && self.prompts.is_empty()
    }
}

/// A tool or prompt as the catalog holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The upstream that offers it.
    pub upstream: String,
    /// Its name there.
    pub name: String,
    /// Its name here.
    pub exposed: String,
    /// The definition, renamed to `exposed`.
    pub definition: Value,
}

/// The whole catalog at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Increases with every rebuild.
    pub generation: u64,
    /// Tools, in upstream config order.
    pub tools: Vec<Entry>,
    /// Prompts, in upstream config order.
    pub prompts: Vec<Entry>,
    /// Resources: (upstream, definition).
    pub resources: Vec<(String, Value)>,
    /// Resource templates: (upstream, definition).
    pub templates: Vec<(String, Value)>,
    tool_index: HashMap<String, usize>,
    prompt_index: HashMap<String, usize>,
    resource_index: HashMap<String, usize>,
    /// Name collisions found while building, for the log.
    pub collisions: Vec<String>,
}

impl Snapshot {
    /// Build from each upstream's offer, in config order, with each upstream's prefix.
    pub fn build(generation: u64, naming: &Naming, offers: &[(String, String, Offer)]) -> Self {
        let mut snapshot = Snapshot { generation, ..Snapshot::default() };
        let tools: Vec<(&str, &str, &Value)> = offers
            .iter()
            .flat_map(|(up, prefix, o)| o.tools.iter().map(move |t| (up.as_str(), prefix.as_str(), t)))
            .collect();
        let prompts: Vec<(&str, &str, &Value)> = offers
            .iter()
            .flat_map(|(up, prefix, o)| o.prompts.iter().map(move |p| (up.as_str(), prefix.as_str(), p)))
            .collect();
        snapshot.tools = name_entries("tool", &tools, naming, &mut snapshot.collisions);
        snapshot.prompts = name_entries("prompt", &prompts, naming, &mut snapshot.collisions);
        snapshot.tool_index = snapshot.tools.iter().enumerate().map(|(i, e)| (e.exposed.clone(), i)).collect();
        snapshot.prompt_index = snapshot.prompts.iter().enumerate().map(|(i, e)| (e.exposed.clone(), i)).collect();
        for (upstream, _, offer) in offers {
            for resource in &offer.resources {
                let Some(uri) = resource.get("uri").and_then(Value::as_str) else { continue };
                if let Some(&first) = snapshot.resource_index.get(uri) {
                    snapshot.collisions.push(format!(
                        "resource {uri} is offered by {} and {upstream}; {} serves it",
                        snapshot.resources[first].0, snapshot.resources[first].0
                    ));
                    continue;
                }
                snapshot.resource_index.insert(uri.to_owned(), snapshot.resources.len());
                snapshot.resources.push((upstream.clone(), resource.clone()));
            }
            snapshot.templates.extend(offer.templates.iter().map(|t| (upstream.clone(), t.clone())));
        }
        snapshot
    }

    /// A tool by exposed name.
    pub fn tool(&self, exposed: &str) -> Option<&Entry> {
        self.tool_index.get(exposed).map(|&i| &self.tools[i])
    }

    /// A prompt by exposed name.
    pub fn prompt(&self, exposed: &str) -> Option<&Entry> {
        self.prompt_index.get(exposed).map(|&i| &self.prompts[i])
    }

    /// The upstream serving a resource URI: the one that listed it, else the
    /// first whose template matches.
    pub fn resource_upstream(&self, uri: &str) -> Option<&str> {
        if let Some(&i) = self.resource_index.get(uri) {
            return Some(&self.resources[i].0);
        }
        self.templates
            .iter()
            .find(|(_, t)| t.get("uriTemplate").and_then(Value::as_str).is_some_and(|tpl| template_matches(tpl, uri)))
            .map(|(upstream, _)| upstream.as_str())
    }
}

/// Give each entry its exposed name; collisions are prefixed (bare mode) and reported.
fn name_entries(
    kind: &str,
    items: &[(&str, &str, &Value)],
    naming: &Naming,
    collisions: &mut Vec<String>,
) -> Vec<Entry> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, _, item) in items {
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            *count.entry(name).or_default() += 1;
        }
    }
    let mut reported = HashSet::new();
    let mut taken = HashSet::new();
    let mut entries = Vec::with_capacity(items.len());
    for (upstream, prefix, item) in items {
        let Some(name) = item.get("name").and_then(Value::as_str) else { continue };
        let colliding = count[name] > 1;
        let prefixed = format!("{prefix}{}{name}", naming.separator);
        let exposed = match naming.mode {
            NamingMode::Prefix => prefixed,
            NamingMode::Bare if colliding => {
                if reported.insert(name.to_owned()) {
                    collisions.push(format!("{kind} {name:?} is offered by several upstreams; exposed with prefixes"));
                }
                prefixed
            }
            NamingMode::Bare => name.to_owned(),
        };
        if !taken.insert(exposed.clone()) {
            collisions
                .push(format!("{kind} {exposed:?} would be exposed twice; keeping the one from the first upstream"));
            continue;
        }
        let mut definition = (*item).clone();
        definition["name"] = json!(exposed);
        entries.push(Entry { upstream: (*upstream).to_owned(), name: name.to_owned(), exposed, definition });
    }
    entries
}

/// Whether `uri` fits an RFC 6570 template's simple forms: `{var}` matches one
/// path segment, `{+var}`/`{/var*}`-style expansions match anything.
pub fn template_matches(template: &str, uri: &str) -> bool {
    fn go(t: &str, u: &str) -> bool {
        let Some(open) = t.find('{') else { return t == u };
        let Some(close) = t[open..].find('}').map(|c| open + c) else { return t == u };
        let (literal, expr, rest) = (&t[..open], &t[open + 1..close], &t[close + 1..]);
        let Some(u) = u.strip_prefix(literal) else { return false };
        let greedy = expr.starts_with('+') || expr.starts_with('#') || expr.ends_with('*');
        // Try every split of the remaining URI (templates are short).
        (0..=u.len()).filter(|&i| u.is_char_boundary(i)).any(|i| {
            let value = &u[..i];
            (greedy || !value.contains('/')) && !value.is_empty() && go(rest, &u[i..])
        })
    }
    go(template, uri)
}

/// Convert an MCP `ToolAnnotations` object into the contract's record.
pub fn annotations(tool: &Value) -> ToolAnnotations {
    let a = tool.get("annotations");
    let flag = |key: &str| a.and_then(|a| a.get(key)).and_then(Value::as_bool);
    ToolAnnotations {
        title: a.and_then(|a| a.get("title")).and_then(Value::as_str).map(str::to_owned),
        read_only_hint: flag("readOnlyHint"),
        destructive_hint: flag("destructiveHint"),
        idempotent_hint: flag("idempotentHint"),
        open_world_hint: flag("openWorldHint"),
    }
}

/// The live catalog: per-upstream offers and the snapshot built from them.
pub struct Catalog {
    naming: Naming,
    /// (upstream name, prefix), in config order.
    order: Vec<(String, String)>,
    offers: RwLock<HashMap<String, Offer>>,
    snapshot: RwLock<Arc<Snapshot>>,
}

/// Most pages fetched from one upstream for one list.
const MAX_PAGES: usize = 100;

impl Catalog {
    /// An empty catalog for these upstreams (name, prefix), in config order.
    pub fn new(naming: Naming, order: Vec<(String, String)>) -> Self {
        Self { naming, order, offers: RwLock::default(), snapshot: RwLock::new(Arc::new(Snapshot::default())) }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap())
    }

    /// Whether an upstream has been listed yet.
    pub fn has_offer(&self, upstream: &str) -> bool {
        self.offers.read().unwrap().contains_key(upstream)
    }

    /// Replace one upstream's offer and rebuild. Returns whether anything
    /// clients see changed.
    pub fn set_offer(&self, upstream: &str, offer: Offer) -> bool {
        let mut offers = self.offers.write().unwrap();
        if offers.get(upstream) == Some(&offer) {
            return false;
        }
        let first = !offers.contains_key(upstream);
        offers.insert(upstream.to_owned(), offer);
        let ordered: Vec<(String, String, Offer)> = self
            .order
            .iter()
            .filter_map(|(name, prefix)| offers.get(name).map(|o| (name.clone(), prefix.clone(), o.clone())))
            .collect();
        let generation = self.snapshot.read().unwrap().generation + 1;
        let snapshot = Snapshot::build(generation, &self.naming, &ordered);
        for collision in &snapshot.collisions {
            tracing::warn!(%collision, "catalog name collision");
        }
        *self.snapshot.write().unwrap() = Arc::new(snapshot);
        // The first listing of an upstream is news only if it offers something.
        !first || !offers[upstream].is_empty()
    }

    /// Fetch everything an upstream offers (following pagination) and store it.
    pub async fn refresh(&self, upstream: &Upstream) -> Result<bool, UpstreamError> {
        let info = upstream.server_info().unwrap_or_default();
        let mut offer = Offer::default();
        if info.has("tools") {
            offer.tools = fetch_all(upstream, "tools/list", "tools").await?;
        }
        if info.has("resources") {
            offer.resources = fetch_all(upstream, "resources/list", "resources").await?;
            // Templates are optional even for servers with resources.
            offer.templates =
                fetch_all(upstream, "resources/templates/list", "resourceTemplates").await.unwrap_or_default();
        }
        if info.has("prompts") {
            offer.prompts = fetch_all(upstream, "prompts/list", "prompts").await?;
        }
        tracing::info!(
            upstream = upstream.name(),
            tools = offer.tools.len(),
            resources = offer.resources.len(),
            templates = offer.templates.len(),
            prompts = offer.prompts.len(),
            "catalog refreshed"
        );
        Ok(self.set_offer(upstream.name(), offer))
    }
}

/// Every page of a list.
async fn fetch_all(upstream: &Upstream, method: &str, key: &str) -> Result<Vec<Value>, UpstreamError> {
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let page = upstream.request(method, params, CallHooks::default()).await?;
        if let Some(list) = page.get(key).and_then(Value::as_array) {
            items.extend(list.iter().cloned());
        }
        cursor = page.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            return Ok(items);
        }
    }
    tracing::warn!(upstream = upstream.name(), method, "stopped after {MAX_PAGES} pages");
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(tools: &[&str]) -> Offer {
        Offer {
            tools: tools.iter().map(|t| json!({"name": t, "inputSchema": {"type": "object"}})).collect(),
            ..Offer::default()
        }
    }

    fn exposed(snapshot: &Snapshot) -> Vec<&str> {
        snapshot.tools.iter().map(|e| e.exposed.as_str()).collect()
    }

    #[test]
    fn bare_names_stay_bare_unless_they_collide() {
        let offers = vec![
            ("a".to_owned(), "a".to_owned(), offer(&["search", "read"])),
            ("b".to_owned(), "b".to_owned(), offer(&["search", "write"])),
        ];
        let s = Snapshot::build(1, &Naming::default(), &offers);
        assert_eq!(exposed(&s), ["a__search", "read", "b__search", "write"]);
        assert_eq!(s.collisions.len(), 1);
        let entry = s.tool("b__search").unwrap();
        assert_eq!((entry.upstream.as_str(), entry.name.as_str()), ("b", "search"));
        assert_eq!(entry.definition["name"], "b__search");
    }

    #[test]
    fn prefix_mode_prefixes_everything() {
        let naming = Naming { mode: NamingMode::Prefix, separator: ".".into() };
        let s = Snapshot::build(1, &naming, &[("files".into(), "fs".into(), offer(&["read"]))]);
        assert_eq!(exposed(&s), ["fs.read"]);
        assert!(s.collisions.is_empty());
    }

    #[test]
    fn resources_route_by_uri_then_template() {
        let a = Offer {
            resources: vec![json!({"uri": "test://static-text", "name": "t"})],
            templates: vec![json!({"uriTemplate": "test://template/{id}/data", "name": "tpl"})],
            ..Offer::default()
        };
        let b = Offer {
            resources: vec![json!({"uri": "test://static-text", "name": "dup"})],
            templates: vec![json!({"uriTemplate": "file:///{+path}", "name": "files"})],
            ..Offer::default()
        };
        let s = Snapshot::build(1, &Naming::default(), &[("a".into(), "a".into(), a), ("b".into(), "b".into(), b)]);
        assert_eq!(s.resource_upstream("test://static-text"), Some("a"));
        assert_eq!(s.resource_upstream("test://template/123/data"), Some("a"));
        assert_eq!(s.resource_upstream("test://template/1/2/data"), None);
        assert_eq!(s.resource_upstream("file:///etc/hosts"), Some("b"));
        assert_eq!(s.resource_upstream("other://x"), None);
        assert_eq!(s.collisions.len(), 1);
    }

    #[test]
    fn templates() {
        assert!(template_matches("a://{x}", "a://y"));
        assert!(!template_matches("a://{x}", "a://"));
        assert!(!template_matches("a://{x}", "a://y/z"));
        assert!(template_matches("a://{+x}", "a://y/z"));
        assert!(template_matches("a://{x}/b/{y}", "a://1/b/2"));
        assert!(template_matches("a://fixed", "a://fixed"));
    }

    #[test]
    fn annotations_are_read() {
        let tool = json!({"name": "t", "annotations": {"readOnlyHint": true, "title": "T"}});
        let a = annotations(&tool);
        assert_eq!((a.read_only_hint, a.destructive_hint, a.title.as_deref()), (Some(true), None, Some("T")));
    }
}
