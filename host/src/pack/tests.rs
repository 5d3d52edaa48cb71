//! Packs end to end within the library: build, sign, open under a trust
//! policy, and every way a pack can be refused.

use std::{fs, os::unix::fs::PermissionsExt};

use super::*;
use crate::{config, engine::tests::engine};

/// A scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("warden-pack-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const READ_ONLY: &str = concat!(env!("WARDEN_PLUGIN_DIR"), "/read_only_mode.wasm");

/// A pack source for the read-only-mode example plugin.
fn source(dir: &Path, config: &str) -> PathBuf {
    let source = dir.join("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(
        source.join(build::SOURCE),
        format!(
            r#"
name = "acme-baseline"
version = "1.2.0"
publisher = "Acme Security"

[[plugin]]
name = "read-only"
component = "{READ_ONLY}"
limits = {{ fuel = 10_000_000 }}
[plugin.config]
{config}
"#
        ),
    )
    .unwrap();
    source
}

/// A key pair, a pack built from [`source`] and signed with it.
struct Fixture {
    _scratch: Scratch,
    dir: PathBuf,
    pack: PathBuf,
    key: PathBuf,
    trust: Trust,
}

fn fixture(name: &str) -> Fixture {
    let scratch = Scratch::new(name);
    let dir = scratch.0.clone();
    let keys = keygen(&dir.join("acme"), None).unwrap();
    let built = build(engine(), &source(&dir, r#"except = ["*/get_*"]"#), Some(&dir.join("pack"))).unwrap();
    sign(&built.dir, &keys.secret, None).unwrap();
    let trust =
        Trust { require_signed: true, keys: vec![TrustedKey::from_file(&keys.public).unwrap()], ..Trust::default() };
    Fixture { _scratch: scratch, pack: built.dir, key: keys.secret, trust, dir }
}

fn refusal(result: Result<Pack, ConfigError>) -> String {
    result.expect_err("the pack should be refused").to_string()
}

/// Rewrite the manifest with `edit` and sign it again with `key`, as the
/// `minisign` tool would: `warden pack sign` refuses a manifest it cannot load.
fn resign(f: &Fixture, key: &Path, edit: impl Fn(&str) -> String) {
    let manifest = f.pack.join(MANIFEST);
    let text = edit(&fs::read_to_string(&manifest).unwrap());
    fs::write(&manifest, &text).unwrap();
    let boxed = minisign::SecretKeyBox::from_string(&fs::read_to_string(key).unwrap()).unwrap();
    let secret = minisign::SecretKey::from_unencrypted_box(boxed).unwrap();
    let signature = minisign::sign(None, &secret, text.as_bytes(), None, None).unwrap();
    fs::write(f.pack.join(SIGNATURE), signature.into_string()).unwrap();
}

#[test]
fn the_wit_package_is_the_one_wit_declares() {
    assert_eq!(wit_package(), "warden:policy@0.1.1");
    assert_eq!(check_wit("warden:policy@0.1.1"), Ok(()));
    assert_eq!(check_wit("warden:policy@0.1.0"), Ok(()), "packs built for 0.1.0 keep loading");
    for refused in ["warden:policy@0.2.0", "warden:policy@0.1.2", "warden:policy@1.0.0", "acme:policy@0.1.0", "0.1"] {
        let error = check_wit(refused).unwrap_err();
        assert!(error.contains(&format!("built for WIT package {refused}")), "{error}");
    }
}

#[test]
fn a_signed_pack_opens_with_its_signer_and_loads_in_a_chain() {
    let f = fixture("signed");
    let pack = Pack::open(&f.pack, &f.trust).unwrap();
    assert_eq!((pack.manifest.name.as_str(), pack.manifest.version.as_str()), ("acme-baseline", "1.2.0"));
    assert_eq!(pack.manifest.wit, wit_package());
    let Signer::Trusted { key_id, comment, .. } = &pack.signer else { panic!("{:?}", pack.signer) };
    assert_eq!(key_id, &f.trust.keys[0].id);
    assert_eq!(comment, &format!("pack acme-baseline@1.2.0 sha256:{}", pack.digest));
    assert_eq!(pack.digest, sha256_hex(&fs::read(f.pack.join(MANIFEST)).unwrap()));
    assert_eq!(pack.component("read-only").unwrap(), fs::read(READ_ONLY).unwrap());

    // In a chain: the pack's limits and default config apply unless overridden.
    let chain_file = f.dir.join("chain.toml");
    fs::write(&chain_file, "[[plugin]]\nname = \"read-only\"\npack = \"pack\"\n").unwrap();
    let spec = config::chain::parse_file(&chain_file, &f.trust).unwrap();
    assert_eq!(spec.plugins[0].limits.fuel, 10_000_000);
    assert_eq!(spec.plugins[0].config_json, r#"{"except":["*/get_*"]}"#);
    assert!(spec.watched_files().contains(&f.pack.join(SIGNATURE)));
    let chain = config::chain::build(engine(), &spec).unwrap();
    let link = &chain.links()[0];
    assert_eq!(link.source, "pack:acme-baseline@1.2.0/read-only");
    assert_eq!(link.pack.as_ref().unwrap().digest, pack.digest);

    fs::write(
        &chain_file,
        "[[plugin]]\nname = \"ro\"\npack = \"pack\"\npack_plugin = \"read-only\"\nlimits = { fuel = 5_000_000 }\n[plugin.config]\nexcept = []\n",
    )
    .unwrap();
    let spec = config::chain::parse_file(&chain_file, &f.trust).unwrap();
    assert_eq!(spec.plugins[0].limits.fuel, 5_000_000);
    assert_eq!(spec.plugins[0].config_json, r#"{"except":[]}"#);
}

#[test]
fn with_require_signed_every_tampering_is_refused() {
    let f = fixture("tamper");
    let other = keygen(&f.dir.join("other"), None).unwrap();

    // A signature made by a key that is not trusted.
    resign(&f, &other.secret, str::to_owned);
    assert!(
        refusal(Pack::open(&f.pack, &f.trust))
            .contains(&format!("signed by key {}, which is not trusted", other.key_id))
    );

    // A revoked key, even though it is trusted.
    resign(&f, &f.key, str::to_owned);
    let revoked = Trust { revoked_keys: [f.trust.keys[0].id.clone()].into(), ..f.trust.clone() };
    assert!(refusal(Pack::open(&f.pack, &revoked)).contains("which is revoked (revoked_keys)"));

    // A revoked pack, whoever signed it.
    let digest = Pack::open(&f.pack, &f.trust).unwrap().digest;
    let revoked = Trust { revoked_packs: [digest.clone()].into(), ..f.trust.clone() };
    assert!(refusal(Pack::open(&f.pack, &revoked)).contains(&format!("pack sha256:{digest} is revoked")));

    // The manifest edited after signing.
    let manifest = f.pack.join(MANIFEST);
    let signed = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, signed.replace("Acme Security", "Acme Securlty")).unwrap();
    assert!(refusal(Pack::open(&f.pack, &f.trust)).contains("the manifest was changed after it was signed"));
    fs::write(&manifest, &signed).unwrap();

    // A component changed after the pack was built.
    let component = f.pack.join("components/read-only.wasm");
    let original = fs::read(&component).unwrap();
    let mut tampered = original.clone();
    *tampered.last_mut().unwrap() ^= 1;
    fs::write(&component, &tampered).unwrap();
    let pack = Pack::open(&f.pack, &f.trust).unwrap();
    assert!(pack.component("read-only").unwrap_err().contains("the component was changed after the pack was built"));
    fs::write(&component, &original).unwrap();

    // A pack built for another WIT version (properly signed).
    resign(&f, &f.key, |m| m.replace(wit_package(), "warden:policy@0.2.0"));
    assert!(refusal(Pack::open(&f.pack, &f.trust)).contains("wit: built for WIT package warden:policy@0.2.0"));

    // A component path that leaves the pack.
    resign(&f, &f.key, |m| m.replace("components/read-only.wasm", "../acme.key"));
    assert!(refusal(Pack::open(&f.pack, &f.trust)).contains("must be a relative path inside the pack"));

    // A malformed signature file.
    fs::write(f.pack.join(SIGNATURE), "untrusted comment: x\nnot base64\n").unwrap();
    assert!(refusal(Pack::open(&f.pack, &f.trust)).contains("is not a minisign signature"));

    // No signature at all.
    fs::remove_file(f.pack.join(SIGNATURE)).unwrap();
    assert!(refusal(Pack::open(&f.pack, &f.trust)).contains("the pack is not signed"));
}

#[test]
fn without_require_signed_unsigned_packs_load_but_tampering_never_does() {
    let f = fixture("optional");
    let loose = Trust { require_signed: false, ..f.trust.clone() };
    let other = keygen(&f.dir.join("other"), None).unwrap();

    resign(&f, &other.secret, str::to_owned);
    assert_eq!(Pack::open(&f.pack, &loose).unwrap().signer, Signer::Untrusted { key_id: other.key_id.clone() });

    resign(&f, &f.key, str::to_owned);
    let manifest = f.pack.join(MANIFEST);
    let signed = fs::read_to_string(&manifest).unwrap();
    fs::write(&manifest, signed.replace("1.2.0", "1.2.1")).unwrap();
    assert!(refusal(Pack::open(&f.pack, &loose)).contains("changed after it was signed"));

    fs::remove_file(f.pack.join(SIGNATURE)).unwrap();
    assert_eq!(Pack::open(&f.pack, &loose).unwrap().signer, Signer::Unsigned);
    let revoked = Trust { revoked_packs: [sha256_hex(signed.replace("1.2.0", "1.2.1").as_bytes())].into(), ..loose };
    assert!(refusal(Pack::open(&f.pack, &revoked)).contains("is revoked"));
}

#[test]
fn a_chain_with_require_signed_refuses_loose_components_but_not_builtins() {
    let f = fixture("loose");
    fs::copy(READ_ONLY, f.dir.join("loose.wasm")).unwrap();
    let chain = "[[plugin]]\nname = \"rbac\"\nsource = \"builtin:rbac\"\n\
                 [[plugin]]\nname = \"loose\"\nsource = \"loose.wasm\"\n\
                 [[plugin]]\nname = \"read-only\"\npack = \"pack\"\n\
                 [[plugin]]\nname = \"missing\"\npack = \"pack\"\n";
    let error = config::chain::parse(chain, &f.dir.join("chain.toml"), &f.trust).unwrap_err();
    let found: Vec<String> = error.problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("plugin[1].source: require_signed is on, so a loose component cannot load"));
    assert!(
        found[1].starts_with(
            "plugin[3].pack_plugin: pack acme-baseline@1.2.0 has no plugin \"missing\" (it has: read-only)"
        )
    );

    // A pack refused: the chain names the entry, then the pack's own problem.
    fs::remove_file(f.pack.join(SIGNATURE)).unwrap();
    let error = config::chain::parse(
        "[[plugin]]\nname = \"read-only\"\npack = \"pack\"\n",
        &f.dir.join("chain.toml"),
        &f.trust,
    )
    .unwrap_err();
    assert_eq!(error.problems[0].path, "plugin[0].pack");
    assert_eq!(error.problems[1].file, f.pack.join(MANIFEST));
    assert!(error.problems[1].message.contains("not signed"));
}

#[test]
fn build_reports_every_problem_with_its_path() {
    let scratch = Scratch::new("build-problems");
    let source = source(&scratch.0, "nonsense = 1");
    fs::write(
        source.join(build::SOURCE),
        fs::read_to_string(source.join(build::SOURCE)).unwrap().replace("\"acme-baseline\"", "\"acme baseline\"")
            + "\n[[plugin]]\nname = \"junk\"\ncomponent = \"junk.wasm\"\n",
    )
    .unwrap();
    fs::write(source.join("junk.wasm"), b"\0asm not really").unwrap();
    let error = build(engine(), &source, Some(&scratch.0.join("out"))).unwrap_err();
    let error = error.downcast::<ConfigError>().unwrap();
    let found: Vec<String> = error.problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect();
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].starts_with("name: \"acme baseline\" must be"), "{found:?}");
    assert!(found[1].starts_with("plugin[0].component: ") && found[1].contains("nonsense"), "{found:?}");
    assert!(found[2].starts_with("plugin[1].component: ") && found[2].contains("junk.wasm"), "{found:?}");
    assert!(!scratch.0.join("out").exists());
}

#[test]
fn keys_are_minisign_keys_and_never_overwritten() {
    let scratch = Scratch::new("keys");
    let prefix = scratch.0.join("vendor");
    let files = keygen(&prefix, Some("correct horse".into())).unwrap();
    let public = fs::read_to_string(&files.public).unwrap();
    assert!(public.starts_with(&format!("untrusted comment: minisign public key: {}\n", files.key_id)), "{public}");
    assert_eq!(TrustedKey::from_file(&files.public).unwrap().id, files.key_id);
    assert_eq!(fs::metadata(&files.secret).unwrap().permissions().mode() & 0o777, 0o600);
    let again = keygen(&prefix, None).unwrap_err().to_string();
    assert!(again.contains("already exists"), "{again}");

    // An encrypted key signs only with its password.
    let built = build(engine(), &source(&scratch.0, ""), Some(&scratch.0.join("pack"))).unwrap();
    let error = sign(&built.dir, &files.secret, None).unwrap_err().to_string();
    assert!(error.contains("--password-env"), "{error}");
    assert!(sign(&built.dir, &files.secret, Some("wrong".into())).is_err());
    let signed = sign(&built.dir, &files.secret, Some("correct horse".into())).unwrap();
    assert_eq!(signed.key_id, files.key_id);
}

#[test]
fn a_tampered_pack_is_never_signed() {
    let f = fixture("sign-tampered");
    fs::write(f.pack.join("components/read-only.wasm"), b"\0asm").unwrap();
    let error = sign(&f.pack, &f.key, None).unwrap_err().to_string();
    assert!(error.contains("the component was changed after the pack was built"), "{error}");
}
