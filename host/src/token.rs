//! `warden token`: a local issuer for trying JWT authentication without an
//! identity provider.
//!
//! - `warden token keygen --dir D` writes an Ed25519 signing key
//!   (`D/signing-key.pem`, PKCS#8, mode 0600) and its public JWKS
//!   (`D/jwks.json`) for `[[oauth.issuer]] jwks_file`.
//! - `warden token sign --key D/signing-key.pem --iss I --aud A …` prints a
//!   signed token (EdDSA) with `iat`, `nbf` and `exp` set.
//!
//! For testing only: a real deployment trusts its identity provider's keys.

use std::{
    fs,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{
    SigningKey,
    pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// What `keygen` wrote.
pub struct Generated {
    /// The private key file.
    pub key: PathBuf,
    /// The JWKS file.
    pub jwks: PathBuf,
}

/// Write a new signing key and its JWKS into `dir`.
pub fn keygen(dir: &Path, kid: &str) -> anyhow::Result<Generated> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key_file = dir.join("signing-key.pem");
    if key_file.exists() {
        bail!("{} exists; refusing to overwrite a key", key_file.display());
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    let pem = key.to_pkcs8_pem(LineEnding::LF).context("cannot encode the key")?;
    write_private(&key_file, pem.as_bytes())?;
    let jwks = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    }]});
    let jwks_file = dir.join("jwks.json");
    fs::write(&jwks_file, serde_json::to_string_pretty(&jwks)? + "\n")
        .with_context(|| format!("cannot write {}", jwks_file.display()))?;
    Ok(Generated { key: key_file, jwks: jwks_file })
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// What to put in a token.
pub struct Claims<'a> {
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `sub`.
    pub subject: &'a str,
    /// Lifetime in seconds.
    pub ttl_s: u64,
    /// More claims (an object), merged over the standard ones.
    pub extra: Value,
}

/// Sign a token with the PKCS#8 Ed25519 key in `key_file`.
pub fn sign(key_file: &Path, kid: &str, claims: &Claims<'_>) -> anyhow::Result<String> {
    let pem = fs::read(key_file).with_context(|| format!("cannot read {}", key_file.display()))?;
    let key =
        EncodingKey::from_ed_pem(&pem).with_context(|| format!("{} is not an Ed25519 key", key_file.display()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut body = json!({
        "iss": claims.issuer, "aud": claims.audience, "sub": claims.subject,
        "iat": now, "nbf": now, "exp": now + claims.ttl_s,
    });
    match &claims.extra {
        Value::Object(extra) => {
            for (k, v) in extra {
                body[k] = v.clone();
            }
        }
        Value::Null => {}
        _ => bail!("--claims must be a JSON object"),
    }
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(&header, &body, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{
        jwks::{Jwks, parse_set},
        jwt::{self, ClaimPaths, Issuer},
    };

    #[tokio::test]
    async fn a_generated_key_signs_tokens_the_gateway_accepts() {
        let dir = std::env::temp_dir().join(format!("warden-token-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let generated = keygen(&dir, "local").unwrap();
        assert!(keygen(&dir, "local").is_err(), "an existing key is never overwritten");
        let (set, skipped) = parse_set(&fs::read(&generated.jwks).unwrap()).unwrap();
        assert!(skipped.is_empty() && set.len() == 1);
        let issuer = Issuer {
            issuer: "local".into(),
            algorithms: vec![Algorithm::EdDSA],
            audiences: vec![],
            claims: ClaimPaths { roles: vec!["roles".into()], ..ClaimPaths::default() },
            keys: Jwks::fixed(&set),
        };
        let claims = Claims {
            issuer: "local",
            audience: "http://127.0.0.1:8080/mcp",
            subject: "dev",
            ttl_s: 60,
            extra: json!({"roles": ["analyst"]}),
        };
        let token = sign(&generated.key, "local", &claims).unwrap();
        let principal = jwt::verify(&token, &[issuer], "http://127.0.0.1:8080/mcp", 0).await.unwrap();
        assert_eq!((principal.subject.as_str(), principal.roles), ("dev", vec!["analyst".to_owned()]));
        fs::remove_dir_all(&dir).unwrap();
    }
}
