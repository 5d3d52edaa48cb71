//! Signed checkpoints: the audit log's head, signed with Ed25519 in the
//! signed-note format of C2SP (`c2sp.org/signed-note`, the format of Go's
//! checksum database and of transparency-log witnesses), with a body in the
//! shape of `c2sp.org/tlog-checkpoint`:
//!
//! ```text
//! warden-audit            ← origin (the log's name, from `[audit] origin`)
//! 1042                    ← records before the checkpoint
//! q2f8…=                  ← base64 of the SHA-256 of the last of them
//!
//! — warden-audit Ab3x…    ← key name, base64 of key id (4 bytes) + signature
//! ```
//!
//! Keys are text, as in the Go `note` package: a verifier key
//! `<name>+<key id hex>+<base64 of 0x01 ‖ public key>`, a signer key
//! `PRIVATE+KEY+<name>+<key id hex>+<base64 of 0x01 ‖ seed>`, where the key
//! id is the first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).

use std::{fs, io::Write as _, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

/// The algorithm byte of an Ed25519 note key.
const ED25519: u8 = 0x01;
/// What opens a signature line.
const DASH: &str = "\u{2014} ";

/// A key that signs checkpoints.
pub struct NoteSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

/// A key that verifies checkpoints.
#[derive(Clone, Debug)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

/// A checkpoint read back from its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name.
    pub origin: String,
    /// How many records precede it.
    pub size: u64,
    /// The SHA-256 of the last of them, lower-case hex.
    pub head: String,
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut hash = Sha256::new();
    hash.update(name.as_bytes());
    hash.update(b"\n");
    hash.update([ED25519]);
    hash.update(public.as_bytes());
    let digest = hash.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', ' ', '\n', '\t'])
}

impl NoteSigner {
    /// A new random key named `name`.
    pub fn generate(name: &str) -> Result<Self, String> {
        if !valid_name(name) {
            return Err(format!("{name:?} cannot name a key (no '+', spaces or newlines)"));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
        let key = SigningKey::from_bytes(&seed);
        Ok(Self { id: key_id(name, &key.verifying_key()), name: name.to_owned(), key })
    }

    /// Parse a signer key's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || "not a signer key (PRIVATE+KEY+<name>+<id>+<key>)".to_owned();
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        let (name, id, key) = split_key(rest).ok_or_else(bad)?;
        let seed: [u8; 32] = key.try_into().map_err(|_| bad())?;
        let key = SigningKey::from_bytes(&seed);
        if key_id(&name, &key.verifying_key()) != id {
            return Err("the key id does not match the key".into());
        }
        Ok(Self { name, id, key })
    }

    /// Read a signer key from `path`, or create one there (mode 0600, with its
    /// verifier key beside it as `<path>.pub`) when the file does not exist.
    /// Returns the key and whether it was created.
    pub fn load_or_create(path: &Path, name: &str) -> Result<(Self, bool), String> {
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map(|k| (k, false)).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let signer = Self::generate(name)?;
                signer.write(path)?;
                Ok((signer, true))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Write the key to `path` (mode 0600) and its verifier key to `<path>.pub`.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        writeln!(file, "{}", self.text()).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let public = public_path(path);
        fs::write(&public, format!("{}\n", self.verifier().text()))
            .map_err(|e| format!("cannot write {}: {e}", public.display()))
    }

    fn text(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!("PRIVATE+KEY+{}+{}+{}", self.name, hex(&self.id), STANDARD.encode(key))
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier { name: self.name.clone(), id: self.id, key: self.key.verifying_key() }
    }

    /// The signed checkpoint text.
    pub fn checkpoint(&self, checkpoint: &Checkpoint) -> String {
        let head = decode_hex(&checkpoint.head).unwrap_or_default();
        let body = format!("{}\n{}\n{}\n", checkpoint.origin, checkpoint.size, STANDARD.encode(head));
        let signature = self.key.sign(body.as_bytes());
        let mut signed = self.id.to_vec();
        signed.extend_from_slice(&signature.to_bytes());
        format!("{body}\n{DASH}{} {}\n", self.name, STANDARD.encode(signed))
    }
}

/// Where a signer key's verifier key is written.
pub fn public_path(key: &Path) -> std::path::PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    name.into()
}

impl NoteVerifier {
    /// Parse a verifier key's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || "not a verifier key (<name>+<id>+<key>)".to_owned();
        let (name, id, key) = split_key(text.trim()).ok_or_else(bad)?;
        let bytes: [u8; 32] = key.try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad())?;
        if key_id(&name, &key) != id {
            return Err("the key id does not match the key".into());
        }
        Ok(Self { name, id, key })
    }

    /// The key's text.
    pub fn text(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{}+{}", self.name, hex(&self.id), STANDARD.encode(key))
    }

    /// Read a signed checkpoint, checking its signature by this key.
    pub fn open(&self, note: &str) -> Result<Checkpoint, String> {
        let (body, signatures) = note.split_once("\n\n").ok_or("no signature block")?;
        let body = format!("{body}\n");
        let mut signed_by_key = false;
        for line in signatures.lines() {
            let Some((name, signature)) = line.strip_prefix(DASH).and_then(|l| l.split_once(' ')) else {
                return Err(format!("malformed signature line {line:?}"));
            };
            let Ok(bytes) = STANDARD.decode(signature) else { return Err("a signature is not base64".into()) };
            if name != self.name || bytes.len() != 68 || bytes[..4] != self.id {
                continue;
            }
            let signature = Signature::from_slice(&bytes[4..]).map_err(|_| "malformed signature")?;
            self.key
                .verify(body.as_bytes(), &signature)
                .map_err(|_| format!("the signature by {} does not verify: the checkpoint is forged", self.name))?;
            signed_by_key = true;
        }
        if !signed_by_key {
            return Err(format!("not signed by key {} (id {}): forged, or another key", self.name, hex(&self.id)));
        }
        let mut lines = body.lines();
        let origin = lines.next().unwrap_or_default().to_owned();
        let size = lines.next().and_then(|s| s.parse().ok()).ok_or("the size line is not a number")?;
        let head = lines.next().and_then(|h| STANDARD.decode(h).ok()).ok_or("the head line is not base64")?;
        Ok(Checkpoint { origin, size, head: hex(&head) })
    }
}

fn split_key(text: &str) -> Option<(String, [u8; 4], Vec<u8>)> {
    let mut parts = text.splitn(3, '+');
    let name = parts.next().filter(|n| valid_name(n))?.to_owned();
    let id: [u8; 4] = decode_hex(parts.next()?)?.try_into().ok()?;
    let key = STANDARD.decode(parts.next()?).ok()?;
    let (&algorithm, key) = key.split_first()?;
    (algorithm == ED25519).then(|| (name, id, key.to_vec()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}
