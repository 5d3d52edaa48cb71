//! Who is calling: credentials in, a [`Principal`] out.
//!
//! API keys (`Authorization: Bearer <key>`) are configured by their SHA-256
//! digest, never in clear, each mapped to a principal. A key may be limited to
//! loopback clients (the quick start's demo keys are). Every request is
//! authenticated; a missing or unknown key is a 401. Requests without
//! credentials are served as a configured anonymous principal only if the
//! config asks for one, and only from loopback clients to a loopback listener.

use std::{net::IpAddr, sync::Arc};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::engine;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// Stable identifier.
    pub subject: String,
    /// The tenant the caller acts for.
    pub tenant: Option<String>,
    /// Granted roles.
    pub roles: Vec<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// The credential's verified claims (`{}` for API keys).
    pub claims: Value,
}

impl Principal {
    /// The record policy plugins receive.
    pub fn to_policy(&self) -> engine::Principal {
        engine::Principal {
            subject: self.subject.clone(),
            tenant: self.tenant.clone(),
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
            claims: self.claims.to_string(),
        }
    }

    /// A key identifying what this principal may see: principals with equal
    /// keys get the same tool listings.
    pub fn view_key(&self) -> String {
        json!([self.subject, self.tenant, self.roles, self.scopes]).to_string()
    }
}

/// One configured API key.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    /// SHA-256 of the key.
    pub digest: [u8; 32],
    /// Who presenting it is.
    pub principal: Arc<Principal>,
    /// Accepted only from 127.0.0.1 or ::1.
    pub loopback_only: bool,
}

/// Why a request could not be authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("authentication required: send Authorization: Bearer <api key>")]
    Missing,
    /// Not a bearer credential.
    #[error("the Authorization header must be \"Bearer <api key>\"")]
    Malformed,
    /// No such key (or not from here).
    #[error("invalid credentials")]
    Invalid,
}

/// The configured authenticators.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    keys: Vec<ApiKey>,
    anonymous: Option<Arc<Principal>>,
}

impl Authenticator {
    /// Authenticate with these API keys, and serve requests without
    /// credentials from loopback as `anonymous` if given.
    pub fn new(keys: Vec<ApiKey>, anonymous: Option<Arc<Principal>>) -> Self {
        Self { keys, anonymous }
    }

    /// Resolve an `Authorization` header value from a client at `peer`.
    pub fn authenticate(&self, authorization: Option<&str>, peer: IpAddr) -> Result<Arc<Principal>, AuthError> {
        let value = match (authorization, &self.anonymous) {
            (Some(value), _) => value,
            (None, Some(anonymous)) if peer.is_loopback() => return Ok(Arc::clone(anonymous)),
            (None, _) => return Err(AuthError::Missing),
        };
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        // Compare every key in full, so timing does not reveal which matched.
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(&key.digest, &digest) && found.is_none() {
                found = Some(key);
            }
        }
        match found {
            Some(key) if key.loopback_only && !peer.is_loopback() => Err(AuthError::Invalid),
            Some(key) => Ok(Arc::clone(&key.principal)),
            None => Err(AuthError::Invalid),
        }
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The hex SHA-256 digest of a key, as configs store it (`warden hash-key`).
pub fn hash_key(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.trim().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        let principal = |subject: &str| {
            Arc::new(Principal {
                subject: subject.into(),
                tenant: Some("acme".into()),
                roles: vec!["analyst".into()],
                scopes: vec![],
                claims: json!({}),
            })
        };
        let digest = |key: &str| Sha256::digest(key.as_bytes()).into();
        Authenticator::new(
            vec![
                ApiKey { digest: digest("local-key"), principal: principal("local"), loopback_only: true },
                ApiKey { digest: digest("remote-key"), principal: principal("remote"), loopback_only: false },
            ],
            None,
        )
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));

    #[test]
    fn keys_map_to_principals() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(Some("Bearer local-key"), LOOPBACK).unwrap().subject, "local");
        assert_eq!(auth.authenticate(Some("bearer remote-key"), REMOTE).unwrap().subject, "remote");
    }

    #[test]
    fn refusals() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(None, LOOPBACK), Err(AuthError::Missing));
        assert_eq!(auth.authenticate(Some("Basic abc"), LOOPBACK), Err(AuthError::Malformed));
        assert_eq!(auth.authenticate(Some("Bearer"), LOOPBACK), Err(AuthError::Malformed));
        assert_eq!(auth.authenticate(Some("Bearer nope"), LOOPBACK), Err(AuthError::Invalid));
        // Loopback-only keys are refused from elsewhere, exactly like unknown keys.
        assert_eq!(auth.authenticate(Some("Bearer local-key"), REMOTE), Err(AuthError::Invalid));
    }

    #[test]
    fn anonymous_access_is_loopback_only_and_opt_in() {
        let anonymous = Arc::new(Principal {
            subject: "anonymous".into(),
            tenant: None,
            roles: vec![],
            scopes: vec![],
            claims: json!({}),
        });
        let auth = Authenticator::new(vec![], Some(anonymous));
        assert_eq!(auth.authenticate(None, LOOPBACK).unwrap().subject, "anonymous");
        assert_eq!(auth.authenticate(None, REMOTE), Err(AuthError::Missing));
        // Credentials, when sent, are checked, never ignored.
        assert_eq!(auth.authenticate(Some("Bearer wrong"), LOOPBACK), Err(AuthError::Invalid));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
