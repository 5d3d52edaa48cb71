//! Sealed tokens: state the gateway hands a client and must get back
//! unchanged, sealed with ChaCha20-Poly1305 under a key every replica
//! shares ([`Seal`]). Two uses: legacy session ids ([`SessionSeal`]), so a
//! session created on one replica keeps working on another, and the
//! `requestState` of an approval round (`controls::approvals`).
//!
//! With `[state] redis`, every replica shares one key (created in Redis by
//! the first replica that starts) and a session id is the session's
//! handshake — who opened it (issuer, subject, tenant), the protocol
//! revision, the client's capabilities, when — sealed with
//! ChaCha20-Poly1305 (ring, already the gateway's TLS crypto). A replica
//! that has never seen the id opens it and adopts the session; nothing is
//! stored per session and no request waits on Redis for it.
//!
//! Sealing was chosen over keeping sessions in Redis because a session's
//! live parts (its SSE streams, requests waiting for the client) cannot move
//! between processes anyway, while what must move — the handshake — never
//! changes after `initialize`. A session id is not a credential: a replica
//! adopts one only for the identity sealed in it, so a stolen or forged id
//! gives nobody anything.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// Seals values into text tokens and opens them, for one purpose: its
/// prefix marks the tokens and its associated data keeps a token of one
/// purpose from opening as another's.
pub struct Seal {
    key: LessSafeKey,
    prefix: &'static str,
    aad: &'static [u8],
}

impl Seal {
    /// A seal with this 32-byte key, for tokens starting with `prefix`.
    pub fn new(key: &[u8; 32], prefix: &'static str, aad: &'static [u8]) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"));
        Self { key, prefix, aad }
    }

    /// Whether `token` looks like one of this seal's (it may still not open).
    pub fn marks(&self, token: &str) -> bool {
        token.starts_with(self.prefix)
    }

    /// `value`, sealed: the prefix, then base64url of a fresh nonce and the
    /// ciphertext with its tag.
    pub fn seal(&self, value: &impl Serialize) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the OS provides randomness");
        let mut bytes = serde_json::to_vec(value).expect("serialisable");
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(self.aad), &mut bytes)
            .expect("sealing cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&bytes);
        format!("{}{}", self.prefix, URL_SAFE_NO_PAD.encode(out))
    }

    /// What a token holds, if this seal sealed it and it was not altered.
    pub fn open<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(token.strip_prefix(self.prefix)?).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let mut sealed = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let plain = self.key.open_in_place(nonce, Aad::from(self.aad), &mut sealed).ok()?;
        serde_json::from_slice(plain).ok()
    }
}

/// What a sealed session id holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sealed {
    /// The opener's identity (`Principal::identity_key`).
    #[serde(rename = "i")]
    pub identity: String,
    /// The protocol revision.
    #[serde(rename = "v")]
    pub version: String,
    /// The client's capabilities.
    #[serde(rename = "c")]
    pub capabilities: Value,
    /// When it was opened, ms since the epoch.
    #[serde(rename = "t")]
    pub created_ms: u64,
}

/// Seals and opens session ids with a key every replica shares.
pub struct SessionSeal(Seal);

impl SessionSeal {
    /// A seal with this 32-byte key.
    pub fn new(key: &[u8; 32]) -> Self {
        Self(Seal::new(key, "w1.", b"warden-session-v1"))
    }

    /// The id for a session.
    pub(crate) fn seal(&self, session: &Sealed) -> String {
        self.0.seal(session)
    }

    /// What a sealed id holds, if it is one this key sealed.
    pub(crate) fn open(&self, id: &str) -> Option<Sealed> {
        self.0.open(id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn session() -> Sealed {
        Sealed {
            identity: r#"[null,"ann","acme"]"#.into(),
            version: "2025-11-25".into(),
            capabilities: json!({"sampling": {}}),
            created_ms: 1,
        }
    }

    #[test]
    fn an_id_opens_with_its_key_only_and_not_once_altered() {
        let seal = SessionSeal::new(&[7; 32]);
        let id = seal.seal(&session());
        assert_eq!(seal.open(&id), Some(session()));
        assert_ne!(seal.seal(&session()), id, "a fresh nonce per id");
        assert_eq!(SessionSeal::new(&[8; 32]).open(&id), None, "another fleet's key");
        let mut altered = id.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(seal.open(&String::from_utf8(altered).unwrap()), None);
        assert_eq!(seal.open("w1."), None);
        assert_eq!(seal.open("random-session-id"), None);
    }

    #[test]
    fn a_token_of_one_purpose_does_not_open_as_another() {
        let key = [7; 32];
        let approval = Seal::new(&key, "w1.", b"another-purpose");
        let token = approval.seal(&session());
        assert_eq!(SessionSeal::new(&key).open(&token), None, "same key and prefix, other purpose");
        assert_eq!(approval.open::<Sealed>(&token), Some(session()));
    }
}
