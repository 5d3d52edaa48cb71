//! Policy packs: components shipped with a signed manifest, so Warden can tell
//! who made them and that nothing changed before a single instruction runs.
//!
//! A pack is a folder, made by `warden pack build` and signed by
//! `warden pack sign`:
//!
//! ```text
//! acme-baseline-1.2.0/
//!   manifest.toml           name, version, publisher, WIT package version, and
//!                           per plugin: component path, SHA-256, limits, config
//!   manifest.toml.minisig   minisign signature of manifest.toml
//!   components/rbac.wasm    the components (WebAssembly, never precompiled code)
//! ```
//!
//! The signature covers the manifest, and the manifest pins every component by
//! SHA-256, so one signature covers the pack. The pack's digest (for
//! revocation) is the SHA-256 of `manifest.toml`.
//!
//! Signatures are [minisign](https://jedisct1.github.io/minisign/)'s format:
//! Ed25519 over a BLAKE2b prehash, with a signed "trusted comment". Keys and
//! signatures interoperate with the `minisign` tool, so a vendor can sign with
//! it instead of `warden pack sign`. Verification uses `minisign-verify`, a
//! small dependency-free verifier; signing and key generation (CLI only) use
//! the `minisign` crate.
//!
//! [`Pack::open`] decides trust before it parses anything the signature
//! covers: digest not revoked → signature present (when required) → signer
//! trusted and not revoked → signature valid → manifest well-formed and built
//! for a compatible WIT package. [`Pack::component`] then checks each
//! component's SHA-256 on the very bytes that get compiled.

mod build;
mod trust;

use std::{
    fmt, fs,
    path::{Component, Path, PathBuf},
};

use serde::Serialize;
use sha2::{Digest, Sha256};

pub use build::{Built, KeyPairFiles, SOURCE, Signed, build, keygen, sign};
pub use trust::{Signer, Trust, TrustedKey};
pub(crate) use trust::{normalise_digest, normalise_key_id};

use crate::config::{ConfigError, Problems, read::Table};

/// The manifest's file name inside a pack.
pub const MANIFEST: &str = "manifest.toml";
/// The signature's file name inside a pack.
pub const SIGNATURE: &str = "manifest.toml.minisig";
/// The manifest format this Warden writes and reads.
pub const FORMAT: u32 = 1;

/// The WIT package policy plugins are built against, as `wit/policy.wit`
/// declares it (`warden:policy@0.1.1`).
pub fn wit_package() -> &'static str {
    static PACKAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PACKAGE.get_or_init(|| {
        include_str!("../../../wit/policy.wit")
            .lines()
            .find_map(|line| line.trim().strip_prefix("package ")?.strip_suffix(';').map(str::to_owned))
            .expect("wit/policy.wit declares its package")
    })
}

/// Whether a component built against WIT package `wanted` runs on this Warden:
/// the same package, and a semver-compatible version (same major; for 0.x,
/// the same minor), no newer than ours.
pub fn check_wit(wanted: &str) -> Result<(), String> {
    let ours = wit_package();
    let split = |p: &str| -> Option<(String, Vec<u64>)> {
        let (name, version) = p.split_once('@')?;
        let numbers = version.split('.').map(|n| n.parse().ok()).collect::<Option<Vec<u64>>>()?;
        (numbers.len() == 3).then(|| (name.to_owned(), numbers))
    };
    let refuse = || format!("built for WIT package {wanted}; this Warden runs {ours} plugins");
    let ((name, v), (our_name, o)) = (split(wanted).ok_or_else(refuse)?, split(ours).expect("our WIT package"));
    let compatible = name == our_name
        && v[0] == o[0]
        && if o[0] == 0 { v[1] == o[1] && v[2] <= o[2] } else { (v[1], v[2]) <= (o[1], o[2]) };
    if compatible { Ok(()) } else { Err(refuse()) }
}

/// SHA-256, hex-encoded.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A pack's manifest.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manifest {
    /// The manifest format ([`FORMAT`]).
    pub format: u32,
    /// The pack's name.
    pub name: String,
    /// The pack's version.
    pub version: String,
    /// Who publishes it (informational; trust comes from the signing key).
    pub publisher: String,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The WIT package its components were built against.
    pub wit: String,
    /// Its plugins.
    #[serde(rename = "plugin")]
    pub plugins: Vec<PackPlugin>,
}

/// One plugin of a pack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PackPlugin {
    /// Its name within the pack.
    pub name: String,
    /// The component's path, relative to the pack folder.
    pub component: String,
    /// The component's SHA-256, hex.
    pub sha256: String,
    /// Limits the publisher recommends (a chain `limits` table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<toml::Table>,
    /// The default config (a chain `config` table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<toml::Table>,
}

impl PackPlugin {
    /// The default config as the JSON text a plugin is handed (`{}` if none).
    pub fn config_json(&self) -> String {
        self.config.as_ref().map(crate::config::chain::to_json).unwrap_or_else(|| serde_json::json!({})).to_string()
    }
}

impl Manifest {
    /// The plugin named `name`.
    pub fn plugin(&self, name: &str) -> Option<&PackPlugin> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// The manifest as TOML, as `warden pack build` writes it.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("a manifest serializes");
        format!("# Written by `warden pack build`. Any edit invalidates the signature.\n{body}")
    }
}

/// An opened pack: trusted (as far as the [`Trust`] asks) and well-formed.
#[derive(Clone, Debug, PartialEq)]
pub struct Pack {
    /// Its folder.
    pub dir: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// SHA-256 of `manifest.toml`, hex: the pack's identity.
    pub digest: String,
    /// Who signed it.
    pub signer: Signer,
}

impl fmt::Display for Pack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.manifest.name, self.manifest.version)
    }
}

impl Manifest {
    /// Read a manifest's bytes (as read from `file`, for the messages). Only
    /// call this on bytes whose signature the trust policy accepted: the
    /// parser then reads what the publisher signed.
    pub fn parse(bytes: &[u8], file: &Path) -> Result<Manifest, ConfigError> {
        let mut problems = Problems::new(file);
        let manifest = std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(|text| toml::from_str::<toml::Table>(text).map_err(|e| crate::config::chain::one_line(&e)));
        let table = match manifest {
            Ok(table) => table,
            Err(e) => {
                problems.push("", format!("not a valid manifest: {e}"));
                return Err(problems.into_error());
            }
        };
        let manifest = parse_manifest(&table, &mut problems);
        problems.finish(manifest)
    }
}

impl Pack {
    /// Open the pack in `dir` under `trust`. Every reason to refuse comes back
    /// as a problem in the manifest's file.
    pub fn open(dir: &Path, trust: &Trust) -> Result<Pack, ConfigError> {
        let file = dir.join(MANIFEST);
        let mut problems = Problems::new(&file);
        let bytes = match fs::read(&file) {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push("", format!("cannot read the pack manifest: {e} (is {} a pack?)", dir.display()));
                return Err(problems.into_error());
            }
        };
        let digest = sha256_hex(&bytes);
        let signer = match trust.check(&bytes, &dir.join(SIGNATURE), &digest) {
            Ok(signer) => signer,
            Err(refusal) => {
                problems.push("", refusal);
                return Err(problems.into_error());
            }
        };
        let manifest = Manifest::parse(&bytes, &file)?;
        Ok(Pack { dir: dir.to_owned(), manifest, digest, signer })
    }

    /// The component of plugin `name`, read and checked against the
    /// manifest's SHA-256. Check and compile the same bytes: read once.
    pub fn component(&self, name: &str) -> Result<Vec<u8>, String> {
        let plugin = self.manifest.plugin(name).ok_or_else(|| format!("pack {self} has no plugin {name:?}"))?;
        let path = self.dir.join(&plugin.component);
        let bytes = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let actual = sha256_hex(&bytes);
        if actual != plugin.sha256 {
            return Err(format!(
                "{} does not match the pack manifest (SHA-256 {actual}, manifest says {}): the component was changed after the pack was built",
                path.display(),
                plugin.sha256
            ));
        }
        Ok(bytes)
    }

    /// Paths whose change should reload a chain that uses this pack: its
    /// files, and its folder itself (replaced whole by some deploy tools).
    pub fn files(&self) -> Vec<PathBuf> {
        let components = self.manifest.plugins.iter().map(|p| self.dir.join(&p.component));
        [self.dir.clone(), self.dir.join(MANIFEST), self.dir.join(SIGNATURE)].into_iter().chain(components).collect()
    }
}

/// Whether `name` is a valid plugin or pack name.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn parse_manifest(table: &toml::Table, problems: &mut Problems) -> Manifest {
    let mut root = Table::root(table);
    let format = root.require::<u32>("format", problems).unwrap_or(FORMAT);
    if format != FORMAT {
        problems.push("format", format!("format {format} is not one this Warden reads ({FORMAT})"));
    }
    let name: String = root.require("name", problems).unwrap_or_default();
    let version: String = root.require("version", problems).unwrap_or_default();
    let publisher: String = root.require("publisher", problems).unwrap_or_default();
    let description = root.get("description", problems);
    let wit: String = root.require("wit", problems).unwrap_or_default();
    if !wit.is_empty()
        && let Err(e) = check_wit(&wit)
    {
        problems.push("wit", e);
    }
    let mut plugins: Vec<PackPlugin> = Vec::new();
    for mut entry in root.tables("plugin", problems) {
        let name: String = entry.require("name", problems).unwrap_or_default();
        if !valid_name(&name) {
            problems.push(entry.path_of("name"), format!("{name:?} must be letters, digits, '-' or '_'"));
        } else if plugins.iter().any(|p| p.name == name) {
            problems.push(entry.path_of("name"), format!("{name:?} is used by an earlier plugin"));
        }
        let component: String = entry.require("component", problems).unwrap_or_default();
        if !inside_pack(&component) {
            problems.push(entry.path_of("component"), format!("{component:?} must be a relative path inside the pack"));
        }
        let sha256: String = entry.require("sha256", problems).unwrap_or_default();
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            problems.push(entry.path_of("sha256"), "must be 64 lowercase hex digits");
        }
        let limits = entry.table("limits", problems).map(|t| {
            let table = t.inner().clone();
            crate::config::chain::limits(t, crate::engine::Limits::default(), problems);
            table
        });
        let config = entry.get("config", problems);
        entry.finish(problems);
        plugins.push(PackPlugin { name, component, sha256, limits, config });
    }
    if plugins.is_empty() {
        problems.push("plugin", "a pack needs at least one [[plugin]]");
    }
    root.finish(problems);
    Manifest { format, name, version, publisher, description, wit, plugins }
}

/// A relative path with no `..`, so a manifest cannot point outside its pack.
fn inside_pack(path: &str) -> bool {
    let path = Path::new(path);
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests;
