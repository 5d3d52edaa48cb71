//! A policy chain file: the ordered plugins, their sources, limits, fail mode
//! and configuration.
//!
//! ```toml
//! # Defaults for every plugin below (each field optional).
//! [limits]
//! fuel = 200_000_000      # instructions per hook call, instantiation included ([engine] fuel = true)
//! deadline_ms = 100       # wall-clock time per hook call
//! memory_mib = 64         # linear memory per instance
//! max_output_kib = 16384  # largest rewrite a plugin may return
//!
//! [[plugin]]
//! name = "rbac"                 # unique; letters, digits, '-' and '_'
//! source = "builtin:rbac"       # or a .wasm component, relative to this file
//! fail_open = false             # a failing plugin allows instead of denying
//! limits = { fuel = 5_000_000 } # overrides [limits] for this plugin
//! [plugin.config]               # handed to the plugin as JSON
//! default = "deny"
//!
//! [[plugin]]                    # a plugin from a policy pack (see `pack`)
//! name = "read-only"
//! pack = "packs/acme-1.2.0"     # the pack's folder, relative to this file
//! pack_plugin = "read-only"     # which of its plugins (default: this name)
//! # limits: the pack's recommended ones over [limits], then these over both;
//! # config: the pack's default unless this entry has its own.
//! ```
//!
//! Loading parses the file (every structural problem at once), checks names,
//! sources and limits, opens each pack under the gateway's trust policy, then
//! compiles each plugin and has it validate its own config; problems from all
//! plugins are reported together.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use super::{ConfigError, Problems, read::Table};
use crate::{
    builtin,
    chain::{Chain, Link},
    engine::{Engine, Limits, LoadError},
    pack::{Pack, Trust},
};

/// Where a plugin's component comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A reference policy compiled into the gateway.
    Builtin(String),
    /// A component file.
    File(PathBuf),
    /// A plugin of a policy pack, opened (and its signature checked).
    Pack {
        /// The pack.
        pack: Arc<Pack>,
        /// The plugin's name in the pack.
        plugin: String,
    },
}

impl Source {
    /// The component's bytes; a pack's are checked against its manifest.
    pub fn read(&self) -> Result<Vec<u8>, String> {
        match self {
            Source::Builtin(name) => {
                builtin::bytes(name).map(<[u8]>::to_vec).ok_or_else(|| format!("no builtin {name}"))
            }
            Source::File(path) => fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display())),
            Source::Pack { pack, plugin } => pack.component(plugin),
        }
    }

    /// The pack the component comes from, if any.
    pub fn pack(&self) -> Option<&Arc<Pack>> {
        match self {
            Source::Pack { pack, .. } => Some(pack),
            _ => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Builtin(name) => write!(f, "builtin:{name}"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Pack { pack, plugin } => write!(f, "pack:{pack}/{plugin}"),
        }
    }
}

/// One plugin of a chain, validated but not yet compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginSpec {
    /// Unique name within the chain.
    pub name: String,
    /// Where the component comes from.
    pub source: Source,
    /// Whether failures allow instead of deny.
    pub fail_open: bool,
    /// The limits every invocation runs under.
    pub limits: Limits,
    /// The plugin's config as JSON text.
    pub config_json: String,
}

/// A chain file, validated but not yet compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainSpec {
    /// The file it was read from.
    pub file: PathBuf,
    /// The plugins, in order.
    pub plugins: Vec<PluginSpec>,
}

impl ChainSpec {
    /// Files whose change should reload the chain: the chain file, every
    /// component file it names, and the manifests, signatures and components
    /// of the packs it uses.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let components = self.plugins.iter().flat_map(|p| match &p.source {
            Source::File(path) => vec![path.clone()],
            Source::Pack { pack, .. } => pack.files(),
            Source::Builtin(_) => Vec::new(),
        });
        std::iter::once(self.file.clone()).chain(components).collect()
    }
}

/// Read and validate a chain file (without compiling anything), opening the
/// packs it uses under `trust`.
pub fn parse_file(path: &Path, trust: &Trust) -> Result<ChainSpec, ConfigError> {
    match fs::read_to_string(path) {
        Ok(text) => parse(&text, path, trust),
        Err(e) => {
            let mut problems = Problems::new(path);
            problems.push("", format!("cannot read the file: {e}"));
            Err(problems.into_error())
        }
    }
}

/// Validate chain file text; relative sources resolve against `path`'s folder.
pub fn parse(text: &str, path: &Path, trust: &Trust) -> Result<ChainSpec, ConfigError> {
    let mut problems = Problems::new(path);
    let table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            problems.push("", format!("not valid TOML: {}", one_line(&e)));
            return Err(problems.into_error());
        }
    };
    let mut root = Table::root(&table);
    let base = path.parent().unwrap_or(Path::new("."));
    let defaults = match root.table("limits", &mut problems) {
        Some(table) => limits(table, Limits::default(), &mut problems),
        None => Limits::default(),
    };

    let mut names = HashSet::new();
    let mut plugins = Vec::new();
    let mut packs: HashMap<PathBuf, Option<Arc<Pack>>> = HashMap::new();
    for mut entry in root.tables("plugin", &mut problems) {
        let name: Option<String> = entry.require("name", &mut problems);
        if let Some(name) = &name {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                problems.push(entry.path_of("name"), format!("{name:?} must be letters, digits, '-' or '_'"));
            } else if !names.insert(name.clone()) {
                problems.push(entry.path_of("name"), format!("{name:?} is used by an earlier plugin"));
            }
        }
        let (source, pack) = (entry.get::<String>("source", &mut problems), entry.get::<String>("pack", &mut problems));
        let pack_plugin = entry.get::<String>("pack_plugin", &mut problems);
        let source = match (source, pack) {
            (Some(_), Some(_)) => {
                problems.push(entry.path_of("pack"), "give `source` or `pack`, not both");
                None
            }
            (None, None) => {
                problems.push(entry.path_of("source"), "is required (or `pack`)");
                None
            }
            (Some(source), None) => {
                let at = entry.path_of("source");
                match resolve_source(&source, base) {
                    Ok(Source::File(_)) if trust.require_signed => {
                        problems.push(
                            at,
                            "require_signed is on, so a loose component cannot load: ship it in a signed pack (`warden pack build` and `warden pack sign`)",
                        );
                        None
                    }
                    Ok(source) => Some(source),
                    Err(message) => {
                        problems.push(at, message);
                        None
                    }
                }
            }
            (None, Some(dir)) => {
                let dir = base.join(dir);
                let pack = packs
                    .entry(dir.clone())
                    .or_insert_with(|| match Pack::open(&dir, trust) {
                        Ok(pack) => Some(Arc::new(pack)),
                        Err(refused) => {
                            problems.push(entry.path_of("pack"), format!("{} refused:", dir.display()));
                            problems.extend(refused);
                            None
                        }
                    })
                    .clone();
                match (pack, pack_plugin.or_else(|| name.clone())) {
                    (Some(pack), Some(plugin)) if pack.manifest.plugin(&plugin).is_some() => {
                        Some(Source::Pack { pack, plugin })
                    }
                    (Some(pack), Some(plugin)) => {
                        let known: Vec<&str> = pack.manifest.plugins.iter().map(|p| p.name.as_str()).collect();
                        problems.push(
                            entry.path_of("pack_plugin"),
                            format!("pack {pack} has no plugin {plugin:?} (it has: {})", known.join(", ")),
                        );
                        None
                    }
                    _ => None,
                }
            }
        };
        let packed = source.as_ref().and_then(|s| match s {
            Source::Pack { pack, plugin } => pack.manifest.plugin(plugin),
            _ => None,
        });
        let fail_open = entry.get("fail_open", &mut problems).unwrap_or(false);
        // Limits: [limits], then the pack's recommendation, then this entry's.
        let base_limits = match packed.and_then(|p| p.limits.as_ref()) {
            // Pack::open has already checked them.
            Some(recommended) => limits(Table::root(recommended), defaults, &mut Problems::new(path)),
            None => defaults,
        };
        let limits = match entry.table("limits", &mut problems) {
            Some(table) => limits(table, base_limits, &mut problems),
            None => base_limits,
        };
        let config_json = match entry.raw("config") {
            None => packed.map(|p| p.config_json()).unwrap_or_else(|| "{}".to_owned()),
            Some(toml::Value::Table(table)) => to_json(table).to_string(),
            Some(other) => {
                problems.push(entry.path_of("config"), format!("expected a table, found {}", other.type_str()));
                "{}".to_owned()
            }
        };
        entry.finish(&mut problems);
        if let (Some(name), Some(source)) = (name, source) {
            plugins.push(PluginSpec { name, source, fail_open, limits, config_json });
        }
    }
    root.finish(&mut problems);
    problems.finish(ChainSpec { file: path.to_owned(), plugins })
}

/// The first line of a TOML parse error, which carries the position.
pub(crate) fn one_line(error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', "; ");
    let position = error.span().map(|_| error.to_string().lines().next().unwrap_or_default().to_owned());
    match position {
        Some(first) => format!("{message} ({})", first.trim_start_matches("TOML parse error at ")),
        None => message,
    }
}

fn resolve_source(source: &str, base: &Path) -> Result<Source, String> {
    if let Some(name) = source.strip_prefix("builtin:") {
        if builtin::bytes(name).is_some() {
            return Ok(Source::Builtin(name.to_owned()));
        }
        let known: Vec<&str> = builtin::names().collect();
        return Err(format!("no builtin {name:?} (known: {})", known.join(", ")));
    }
    let file = base.join(source);
    match fs::metadata(&file) {
        Ok(meta) if meta.is_file() => Ok(Source::File(file)),
        Ok(_) => Err(format!("{} is not a file", file.display())),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// Overlay a `limits` table on `base`, recording zero or absurd values.
pub(crate) fn limits(mut table: Table<'_>, base: Limits, problems: &mut Problems) -> Limits {
    let mut read = |key: &'static str, max: u64| -> Option<u64> {
        let value: u64 = table.get(key, problems)?;
        let message = match value {
            0 => "must be above zero".to_owned(),
            v if v > max => format!("{v} is above the maximum of {max}"),
            v => return Some(v),
        };
        problems.push(table.path_of(key), message);
        None
    };
    let fuel = read("fuel", u64::MAX / 2);
    let deadline = read("deadline_ms", 60_000);
    let memory = read("memory_mib", 4096);
    let output = read("max_output_kib", 1 << 20);
    table.finish(problems);
    Limits {
        fuel: fuel.unwrap_or(base.fuel),
        deadline: deadline.map(Duration::from_millis).unwrap_or(base.deadline),
        memory_bytes: memory.map(|m| (m as usize) << 20).unwrap_or(base.memory_bytes),
        max_output_bytes: output.map(|k| (k as usize) << 10).unwrap_or(base.max_output_bytes),
    }
}

/// TOML becomes JSON; datetimes, which JSON lacks, become strings.
pub(crate) fn to_json(table: &toml::Table) -> serde_json::Value {
    fn convert(value: &toml::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match value {
            toml::Value::String(s) => J::String(s.clone()),
            toml::Value::Integer(i) => J::from(*i),
            toml::Value::Float(f) => J::from(*f),
            toml::Value::Boolean(b) => J::Bool(*b),
            toml::Value::Datetime(dt) => J::String(dt.to_string()),
            toml::Value::Array(items) => J::Array(items.iter().map(convert).collect()),
            toml::Value::Table(t) => J::Object(t.iter().map(|(k, v)| (k.clone(), convert(v))).collect()),
        }
    }
    serde_json::Value::Object(table.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
}

/// Compile every plugin of `spec` and have each validate its config.
/// Problems from all plugins are reported together.
pub fn build(engine: &Engine, spec: &ChainSpec) -> Result<Chain, ConfigError> {
    let mut problems = Problems::new(&spec.file);
    let mut links = Vec::new();
    for (i, plugin) in spec.plugins.iter().enumerate() {
        let at = format!("plugin[{i}]");
        let bytes = match plugin.source.read() {
            Ok(bytes) => bytes,
            Err(e) => {
                let field = if plugin.source.pack().is_some() { "pack" } else { "source" };
                problems.push(format!("{at}.{field}"), e);
                continue;
            }
        };
        let loaded = engine.load(&plugin.name, &bytes, plugin.limits).and_then(|p| {
            p.validate_config(&plugin.config_json)?;
            Ok(p)
        });
        match loaded {
            Ok(loaded) => links.push(Link {
                plugin: loaded,
                config_json: plugin.config_json.clone(),
                fail_open: plugin.fail_open,
                source: plugin.source.to_string(),
                pack: plugin.source.pack().cloned(),
            }),
            Err(LoadError::Config { problems: list, .. }) => {
                for problem in list {
                    problems.push(format!("{at}.config"), problem);
                }
            }
            Err(e) => problems.push(at, e),
        }
    }
    problems.finish(Chain::new(links))
}

/// Parse, validate and compile a chain file, admitting packs under `trust`.
pub fn load(engine: &Engine, path: &Path, trust: &Trust) -> Result<Chain, ConfigError> {
    build(engine, &parse_file(path, trust)?)
}

#[cfg(test)]
mod tests;
