//! Making packs: `warden pack build`, `warden pack sign` and `warden keygen`.
//!
//! A pack's source is a folder with a `pack.toml`:
//!
//! ```toml
//! name = "acme-baseline"        # letters, digits, '-' and '_'
//! version = "1.2.0"
//! publisher = "Acme Security"
//! description = "Read-only mode for every upstream"   # optional
//!
//! [[plugin]]
//! name = "read-only"
//! component = "../target/wasm32-wasip2/plugin/read_only_mode.wasm"  # relative to pack.toml
//! limits = { fuel = 10_000_000 }    # recommended limits (optional)
//! [plugin.config]                   # default config (optional)
//! allow = ["*/get_*"]
//! ```
//!
//! Building compiles every component and has it validate its default config,
//! so a pack that builds will load.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use super::{FORMAT, MANIFEST, Manifest, Pack, PackPlugin, SIGNATURE, Trust, sha256_hex, trust::key_id, valid_name};
use crate::{
    config::{Problems, chain, read::Table},
    engine::{Engine, Limits},
};

/// The pack source file `warden pack build` reads.
pub const SOURCE: &str = "pack.toml";

/// A pack written by [`build`].
#[derive(Debug)]
pub struct Built {
    /// Its folder.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// SHA-256 of its manifest.
    pub digest: String,
}

/// Build the pack described by `source/pack.toml` into `out` (default: a
/// `<name>-<version>` folder in the current one), which must not exist.
pub fn build(engine: &Engine, source: &Path, out: Option<&Path>) -> anyhow::Result<Built> {
    let file = source.join(SOURCE);
    let mut problems = Problems::new(&file);
    let table = fs::read_to_string(&file).map_err(|e| format!("cannot read the pack source: {e}")).and_then(|text| {
        toml::from_str::<toml::Table>(&text).map_err(|e| format!("not valid TOML: {}", chain::one_line(&e)))
    });
    let table = match table {
        Ok(table) => table,
        Err(message) => {
            problems.push("", message);
            return Err(problems.into_error().into());
        }
    };
    let mut root = Table::root(&table);
    let name: String = root.require("name", &mut problems).unwrap_or_default();
    if !valid_name(&name) {
        problems.push("name", format!("{name:?} must be letters, digits, '-' or '_'"));
    }
    let version: String = root.require("version", &mut problems).unwrap_or_default();
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_alphanumeric() || ".-+_".contains(c)) {
        problems.push("version", format!("{version:?} must be a version like 1.2.0"));
    }
    let publisher: String = root.require("publisher", &mut problems).unwrap_or_default();
    if publisher.trim().is_empty() {
        problems.push("publisher", "must name who publishes the pack");
    }
    let description = root.get("description", &mut problems);

    // Each plugin: (manifest entry, component bytes).
    let mut plugins: Vec<(PackPlugin, Vec<u8>)> = Vec::new();
    let entries = root.tables("plugin", &mut problems);
    if entries.is_empty() {
        problems.push("plugin", "a pack needs at least one [[plugin]]");
    }
    for mut entry in entries {
        let plugin: String = entry.require("name", &mut problems).unwrap_or_default();
        if !valid_name(&plugin) {
            problems.push(entry.path_of("name"), format!("{plugin:?} must be letters, digits, '-' or '_'"));
        } else if plugins.iter().any(|(p, _)| p.name == plugin) {
            problems.push(entry.path_of("name"), format!("{plugin:?} is used by an earlier plugin"));
        }
        let component: Option<String> = entry.require("component", &mut problems);
        let (limits, limits_table) = match entry.table("limits", &mut problems) {
            Some(t) => {
                let table = t.inner().clone();
                (chain::limits(t, Limits::default(), &mut problems), Some(table))
            }
            None => (Limits::default(), None),
        };
        let config: Option<toml::Table> = entry.get("config", &mut problems);
        let at = entry.path_of("component");
        entry.finish(&mut problems);
        let Some(component) = component else { continue };
        let path = source.join(&component);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                problems.push(at, format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        let entry = PackPlugin {
            component: format!("components/{plugin}.wasm"),
            sha256: sha256_hex(&bytes),
            name: plugin,
            limits: limits_table,
            config,
        };
        if let Err(e) = engine.load(&entry.name, &bytes, limits).and_then(|p| p.validate_config(&entry.config_json())) {
            problems.push(at, format!("{}: {e}", path.display()));
        }
        plugins.push((entry, bytes));
    }
    root.finish(&mut problems);
    problems.finish(())?;

    let manifest = Manifest {
        format: FORMAT,
        name,
        version,
        publisher,
        description,
        wit: super::wit_package().to_owned(),
        plugins: plugins.iter().map(|(p, _)| p.clone()).collect(),
    };
    let dir =
        out.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(format!("{}-{}", manifest.name, manifest.version)));
    if dir.exists() {
        bail!("{} already exists; remove it or give another --out", dir.display());
    }
    fs::create_dir_all(dir.join("components")).with_context(|| format!("cannot create {}", dir.display()))?;
    for (plugin, bytes) in &plugins {
        let path = dir.join(&plugin.component);
        fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let text = manifest.to_toml();
    fs::write(dir.join(MANIFEST), &text).with_context(|| format!("cannot write {}", dir.join(MANIFEST).display()))?;
    Ok(Built { dir, manifest, digest: sha256_hex(text.as_bytes()) })
}

/// A signature written by [`sign`].
#[derive(Debug)]
pub struct Signed {
    /// The signature file.
    pub file: PathBuf,
    /// The signing key's id.
    pub key_id: String,
    /// The pack.
    pub pack: Pack,
}

/// Sign the pack in `dir` with the minisign secret key in `key_file`
/// (decrypted with `password` if it is encrypted). The pack is checked first
/// — a well-formed manifest, every component matching its digest — so a
/// tampered pack is never signed.
pub fn sign(dir: &Path, key_file: &Path, password: Option<String>) -> anyhow::Result<Signed> {
    let pack = Pack::open(dir, &Trust::default())?;
    for plugin in &pack.manifest.plugins {
        pack.component(&plugin.name).map_err(anyhow::Error::msg)?;
    }
    let text = fs::read_to_string(key_file).with_context(|| format!("cannot read {}", key_file.display()))?;
    let secret = minisign::SecretKeyBox::from_string(&text)
        .and_then(|boxed| match password {
            Some(password) => minisign::SecretKey::from_box(boxed, Some(password)),
            None => minisign::SecretKey::from_unencrypted_box(boxed),
        })
        .map_err(|e| anyhow::anyhow!("{}: {e} (an encrypted key needs --password-env)", key_file.display()))?;
    let manifest =
        fs::read(dir.join(MANIFEST)).with_context(|| format!("cannot read {}", dir.join(MANIFEST).display()))?;
    let trusted_comment = format!("pack {pack} sha256:{}", pack.digest);
    let signature = minisign::sign(
        None,
        &secret,
        manifest.as_slice(),
        Some(&trusted_comment),
        Some("signature of a Warden policy pack manifest"),
    )
    .map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
    let text = signature.into_string();
    let key_id = text.lines().nth(1).and_then(key_id).context("the signature names no key")?;
    let file = dir.join(SIGNATURE);
    fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(Signed { file, key_id, pack })
}

/// A key pair written by [`keygen`].
#[derive(Debug)]
pub struct KeyPairFiles {
    /// The secret key (mode 0600).
    pub secret: PathBuf,
    /// The public key, for the gateway's `trusted_keys`.
    pub public: PathBuf,
    /// The key id.
    pub key_id: String,
}

/// Write a new minisign key pair: `<prefix>.key` (secret, owner-only,
/// encrypted with `password` if given) and `<prefix>.pub`. Existing files are
/// never overwritten.
pub fn keygen(prefix: &Path, password: Option<String>) -> anyhow::Result<KeyPairFiles> {
    let (secret, public) = (prefix.with_extension("key"), prefix.with_extension("pub"));
    for file in [&secret, &public] {
        if file.exists() {
            bail!("{} already exists; not overwriting a key", file.display());
        }
    }
    let pair = match password {
        Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| anyhow::anyhow!("cannot generate a key: {e}"))?;
    let public_text = pair.pk.to_box().map_err(|e| anyhow::anyhow!("{e}"))?.into_string();
    let secret_text = pair.sk.to_box(None).map_err(|e| anyhow::anyhow!("{e}"))?.into_string();
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&secret)
    }
    .with_context(|| format!("cannot create {}", secret.display()))?;
    file.write_all(secret_text.as_bytes())?;
    fs::write(&public, &public_text).with_context(|| format!("cannot write {}", public.display()))?;
    let key_id = public_text.lines().nth(1).and_then(key_id).context("the new key has no id")?;
    Ok(KeyPairFiles { secret, public, key_id })
}
