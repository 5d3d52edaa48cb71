//! Which packs may load: the publisher keys trusted, whether a signature is
//! required, and which keys and packs are revoked.

use std::{
    collections::BTreeSet,
    fmt, fs,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use minisign_verify::{Error as VerifyError, PublicKey, Signature};

use super::MANIFEST;

/// The trust policy (the `[policy]` signing keys of the gateway config). It is
/// fixed at start-up: a chain reload cannot loosen it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trust {
    /// Refuse loose components and unsigned packs, or packs signed by a key
    /// that is not trusted. Built-in policies, part of the binary, still load.
    pub require_signed: bool,
    /// Publisher keys whose signatures are accepted (several, for rotation).
    pub keys: Vec<TrustedKey>,
    /// Key ids (16 hex digits, as minisign prints them) refused even if trusted.
    pub revoked_keys: BTreeSet<String>,
    /// Pack digests (SHA-256 of the manifest, hex) refused whoever signed them.
    pub revoked_packs: BTreeSet<String>,
}

/// A publisher's public key, from a minisign `.pub` file.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustedKey {
    /// Its key id, 16 uppercase hex digits.
    pub id: String,
    /// The file it came from.
    pub file: PathBuf,
    key: PublicKey,
}

impl TrustedKey {
    /// Read a minisign public key file (as `warden keygen` or `minisign -G` writes).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let invalid = || format!("{} is not a minisign public key", path.display());
        let key = PublicKey::decode(&text).map_err(|_| invalid())?;
        let id = text.lines().nth(1).and_then(key_id).ok_or_else(invalid)?;
        Ok(Self { id, file: path.to_owned(), key })
    }
}

/// Who signed a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A trusted key, and the signature verified.
    Trusted {
        /// The key id.
        key_id: String,
        /// The trusted key's file.
        key_file: PathBuf,
        /// The signature's trusted comment (signed along with the manifest).
        comment: String,
    },
    /// A key that is not trusted; nothing was verified. Only without
    /// `require_signed`.
    Untrusted {
        /// The key id the signature names.
        key_id: String,
    },
    /// No signature. Only without `require_signed`.
    Unsigned,
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Trusted { key_id, key_file, .. } => write!(f, "key {key_id} ({})", key_file.display()),
            Signer::Untrusted { key_id } => write!(f, "untrusted key {key_id} (not verified)"),
            Signer::Unsigned => f.write_str("unsigned"),
        }
    }
}

impl Trust {
    /// Decide whether a manifest (its bytes, its signature file, its digest)
    /// may load, and who signed it.
    pub(super) fn check(&self, manifest: &[u8], signature_file: &Path, digest: &str) -> Result<Signer, String> {
        if self.revoked_packs.contains(digest) {
            return Err(format!("pack sha256:{digest} is revoked (revoked_packs)"));
        }
        let text = match fs::read_to_string(signature_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.require_signed {
                    return Err(format!(
                        "the pack is not signed ({} is missing) and require_signed is on",
                        signature_file.display()
                    ));
                }
                return Ok(Signer::Unsigned);
            }
            Err(e) => return Err(format!("cannot read {}: {e}", signature_file.display())),
        };
        let malformed = || format!("{} is not a minisign signature", signature_file.display());
        let signature = Signature::decode(&text).map_err(|_| malformed())?;
        let key_id = text.lines().nth(1).and_then(key_id).ok_or_else(malformed)?;
        if self.revoked_keys.contains(&key_id) {
            return Err(format!("signed by key {key_id}, which is revoked (revoked_keys)"));
        }
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            if self.require_signed {
                let trusted: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
                return Err(format!(
                    "signed by key {key_id}, which is not trusted (trusted_keys: {})",
                    if trusted.is_empty() { "none".to_owned() } else { trusted.join(", ") }
                ));
            }
            return Ok(Signer::Untrusted { key_id });
        };
        key.key.verify(manifest, &signature, false).map_err(|e| match e {
            VerifyError::InvalidSignature => format!(
                "the signature by key {key_id} does not match {MANIFEST}: the manifest was changed after it was signed"
            ),
            VerifyError::UnexpectedAlgorithm => format!(
                "{} is a legacy minisign signature; sign with `warden pack sign` or `minisign -S`",
                signature_file.display()
            ),
            other => format!("the signature by key {key_id} does not verify: {other}"),
        })?;
        Ok(Signer::Trusted { key_id, key_file: key.file.clone(), comment: signature.trusted_comment().to_owned() })
    }
}

/// The key id in a minisign key or signature line (base64 of algorithm, key
/// id, payload), as minisign prints it: the 8 id bytes as a little-endian
/// number in 16 uppercase hex digits.
pub(super) fn key_id(base64_line: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(base64_line.trim()).ok()?;
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

/// A revoked key id as configured, normalised: 16 hex digits, uppercase.
pub(crate) fn normalise_key_id(id: &str) -> Option<String> {
    (id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_ascii_uppercase())
}

/// A revoked pack digest as configured (`sha256:…` or bare hex), normalised.
pub(crate) fn normalise_digest(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit())).then(|| hex.to_ascii_lowercase())
}
