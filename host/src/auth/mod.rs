//! Who is calling: credentials in, a [`Principal`] out.
//!
//! Two kinds of bearer credentials, side by side:
//!
//! - **API keys**, configured by their SHA-256 digest, never in clear, each
//!   mapped to a principal. A key may be limited to loopback clients (the
//!   quick start's demo keys are).
//! - **JWTs** from trusted OAuth issuers ([`jwt`]), verified against the
//!   issuers' keys ([`jwks`]); claims map to the principal. The gateway is an
//!   OAuth 2.1 resource server: it publishes RFC 9728 metadata and answers
//!   401/403 with `WWW-Authenticate` challenges that point to it.
//!
//! Every request is authenticated; a session is never a credential. Requests
//! without credentials are served as a configured anonymous principal only if
//! the config asks for one, and only from loopback clients to a loopback
//! listener. Credentials are never forwarded upstream.

pub mod jwks;
pub mod jwt;

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

    /// Whether `other` is the same caller: same issuer (`iss`, none for API
    /// keys), subject and tenant. Roles, scopes and other claims may differ
    /// (a refreshed or stepped-up token).
    pub fn same_identity(&self, other: &Principal) -> bool {
        self.identity_key() == other.identity_key()
    }

    /// Who this is, as a key: issuer (`iss`, none for API keys), subject and
    /// tenant. Two issuers' equal subjects are different callers.
    pub fn identity_key(&self) -> String {
        json!([self.issuer(), self.subject, self.tenant]).to_string()
    }

    /// The token's issuer (`iss`); `None` for API keys and anonymous callers.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// A key identifying what this principal may see: principals with equal
    /// keys get the same tool listings.
    pub fn view_key(&self) -> String {
        json!([self.identity_key(), self.roles, self.scopes]).to_string()
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
    #[error("authentication required: send Authorization: Bearer <token>")]
    Missing,
    /// Not a bearer credential.
    #[error("the Authorization header must be \"Bearer <token>\"")]
    Malformed,
    /// No such key (or not from here).
    #[error("invalid credentials")]
    Invalid,
    /// A JWT was refused; the reason never repeats the token.
    #[error("invalid token: {0}")]
    Token(String),
    /// A credential in the URL, where logs and proxies keep it.
    #[error("credentials in the URL are refused: send Authorization: Bearer <token>")]
    InUrl,
}

impl AuthError {
    /// One word for the kind of refusal (a metrics label: never the token).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Invalid => "invalid_key",
            Self::Token(_) => "invalid_token",
            Self::InUrl => "in_url",
        }
    }
}

/// One `[[required_scopes]]` rule.
#[derive(Clone, Debug)]
pub struct ScopeRule {
    /// The patterns as written.
    pub tools: Vec<String>,
    matchers: Vec<globset::GlobMatcher>,
    /// Scopes a caller must hold.
    pub scopes: Vec<String>,
}

impl PartialEq for ScopeRule {
    fn eq(&self, other: &Self) -> bool {
        (&self.tools, &self.scopes) == (&other.tools, &other.scopes)
    }
}

impl ScopeRule {
    /// A rule for the tools `matchers` match (written as `tools`).
    pub fn new(tools: Vec<String>, matchers: Vec<globset::GlobMatcher>, scopes: Vec<String>) -> Self {
        Self { tools, matchers, scopes }
    }

    /// Whether the rule covers `upstream/tool`.
    pub fn covers(&self, upstream: &str, tool: &str) -> bool {
        let name = format!("{upstream}/{tool}");
        self.matchers.iter().any(|m| m.is_match(&name))
    }
}

/// This gateway as an OAuth 2.1 resource server.
#[derive(Debug)]
pub struct ResourceServer {
    /// The resource URI tokens must name in `aud` (the MCP endpoint's public URL).
    pub resource: String,
    /// Scopes to advertise in the metadata.
    pub scopes_supported: Vec<String>,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub leeway_s: u64,
    /// Trusted issuers.
    pub issuers: Vec<jwt::Issuer>,
}

impl ResourceServer {
    /// Where the RFC 9728 metadata is published: the resource's origin,
    /// `/.well-known/oauth-protected-resource`, then the resource's path.
    pub fn metadata_url(&self) -> String {
        let (origin, path) = split_url(&self.resource);
        format!("{origin}/.well-known/oauth-protected-resource{}", path.trim_end_matches('/'))
    }

    /// The metadata document (RFC 9728 section 2).
    pub fn metadata(&self) -> Value {
        let mut document = json!({
            "resource": self.resource,
            "authorization_servers": self.issuers.iter().map(|i| i.issuer.clone()).collect::<Vec<_>>(),
            "bearer_methods_supported": ["header"],
            "resource_name": "Warden MCP gateway",
        });
        if !self.scopes_supported.is_empty() {
            document["scopes_supported"] = json!(self.scopes_supported);
        }
        document
    }
}

/// `scheme://authority` and the path of a URL.
fn split_url(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

/// The configured authenticators.
#[derive(Clone, Debug, Default)]
pub struct Authenticator {
    keys: Vec<ApiKey>,
    anonymous: Option<Arc<Principal>>,
    oauth: Option<Arc<ResourceServer>>,
}

impl Authenticator {
    /// Authenticate with these API keys, and serve requests without
    /// credentials from loopback as `anonymous` if given.
    pub fn new(keys: Vec<ApiKey>, anonymous: Option<Arc<Principal>>) -> Self {
        Self { keys, anonymous, oauth: None }
    }

    /// Also accept JWTs from `oauth`'s issuers (and start fetching their keys:
    /// call within a Tokio runtime).
    pub fn with_oauth(mut self, oauth: Option<Arc<ResourceServer>>) -> Self {
        if let Some(oauth) = &oauth {
            for issuer in &oauth.issuers {
                issuer.keys.start();
            }
        }
        self.oauth = oauth;
        self
    }

    /// The resource server settings, if JWTs are accepted.
    pub fn oauth(&self) -> Option<&ResourceServer> {
        self.oauth.as_deref()
    }

    /// The `WWW-Authenticate` value for a refusal.
    pub fn challenge(&self, error: &AuthError) -> String {
        let mut parts = vec![];
        match error {
            AuthError::Missing => {}
            AuthError::Malformed | AuthError::InUrl => parts.push("error=\"invalid_request\"".to_owned()),
            AuthError::Invalid => parts.push("error=\"invalid_token\"".to_owned()),
            AuthError::Token(reason) => {
                parts.push("error=\"invalid_token\"".to_owned());
                parts.push(format!("error_description=\"{}\"", reason.replace(['"', '\\'], "'")));
            }
        }
        if let Some(oauth) = &self.oauth {
            parts.push(format!("resource_metadata=\"{}\"", oauth.metadata_url()));
        }
        if parts.is_empty() { "Bearer".to_owned() } else { format!("Bearer {}", parts.join(", ")) }
    }

    /// The `WWW-Authenticate` value for a call that needs more scopes.
    pub fn scope_challenge(&self, scopes: &[String]) -> String {
        let mut challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", scopes.join(" "));
        if let Some(oauth) = &self.oauth {
            challenge.push_str(&format!(", resource_metadata=\"{}\"", oauth.metadata_url()));
        }
        challenge
    }

    /// Resolve an `Authorization` header value from a client at `peer`.
    pub async fn authenticate(&self, authorization: Option<&str>, peer: IpAddr) -> Result<Arc<Principal>, AuthError> {
        let value = match (authorization, &self.anonymous) {
            (Some(value), _) => value,
            (None, Some(anonymous)) if peer.is_loopback() => return Ok(Arc::clone(anonymous)),
            (None, _) => return Err(AuthError::Missing),
        };
        let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::Malformed);
        }
        // A JWT has three dot-separated parts; API keys have none.
        if let Some(oauth) = &self.oauth
            && token.matches('.').count() == 2
        {
            return jwt::verify(token, &oauth.issuers, &oauth.resource, oauth.leeway_s)
                .await
                .map(Arc::new)
                .map_err(AuthError::Token);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
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

    #[test]
    fn equal_subjects_from_two_issuers_are_two_callers() {
        let from = |iss: &str, roles: &[&str]| Principal {
            subject: "alice".into(),
            tenant: Some("acme".into()),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: vec![],
            claims: json!({ "iss": iss }),
        };
        let (a, b) = (from("https://idp-a", &["analyst"]), from("https://idp-b", &["analyst"]));
        assert!(!a.same_identity(&b));
        assert_ne!(a.identity_key(), b.identity_key(), "their chain histories are apart");
        assert_ne!(a.view_key(), b.view_key(), "so are their listings");
        let stepped_up = from("https://idp-a", &["analyst", "engineer"]);
        assert!(a.same_identity(&stepped_up), "new roles, same caller");
        assert_ne!(a.view_key(), stepped_up.view_key(), "but another view");
    }

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

    #[tokio::test]
    async fn keys_map_to_principals() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(Some("Bearer local-key"), LOOPBACK).await.unwrap().subject, "local");
        assert_eq!(auth.authenticate(Some("bearer remote-key"), REMOTE).await.unwrap().subject, "remote");
    }

    #[tokio::test]
    async fn refusals() {
        let auth = authenticator();
        assert_eq!(auth.authenticate(None, LOOPBACK).await, Err(AuthError::Missing));
        assert_eq!(auth.authenticate(Some("Basic abc"), LOOPBACK).await, Err(AuthError::Malformed));
        assert_eq!(auth.authenticate(Some("Bearer"), LOOPBACK).await, Err(AuthError::Malformed));
        assert_eq!(auth.authenticate(Some("Bearer nope"), LOOPBACK).await, Err(AuthError::Invalid));
        // Loopback-only keys are refused from elsewhere, exactly like unknown keys.
        assert_eq!(auth.authenticate(Some("Bearer local-key"), REMOTE).await, Err(AuthError::Invalid));
    }

    #[test]
    fn metadata_lives_at_the_path_suffixed_well_known_url() {
        let oauth = ResourceServer {
            resource: "https://mcp.example.com/mcp".into(),
            scopes_supported: vec![],
            leeway_s: 30,
            issuers: vec![],
        };
        assert_eq!(oauth.metadata_url(), "https://mcp.example.com/.well-known/oauth-protected-resource/mcp");
        assert_eq!(oauth.metadata()["resource"], "https://mcp.example.com/mcp");
    }

    #[tokio::test]
    async fn anonymous_access_is_loopback_only_and_opt_in() {
        let anonymous = Arc::new(Principal {
            subject: "anonymous".into(),
            tenant: None,
            roles: vec![],
            scopes: vec![],
            claims: json!({}),
        });
        let auth = Authenticator::new(vec![], Some(anonymous));
        assert_eq!(auth.authenticate(None, LOOPBACK).await.unwrap().subject, "anonymous");
        assert_eq!(auth.authenticate(None, REMOTE).await, Err(AuthError::Missing));
        // Credentials, when sent, are checked, never ignored.
        assert_eq!(auth.authenticate(Some("Bearer wrong"), LOOPBACK).await, Err(AuthError::Invalid));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(hash_key("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
