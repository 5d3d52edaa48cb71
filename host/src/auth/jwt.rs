//! JWT bearer tokens from trusted issuers (OAuth 2.1 resource server).
//!
//! A token is accepted only if all of these hold, checked in this order:
//! it is at most [`MAX_TOKEN_BYTES`]; its header parses and names an
//! algorithm in the issuer's allow-list (the list never holds `none` or an
//! HMAC algorithm, so a token signed with an RSA *public* key as an HMAC
//! secret is refused before any key is touched); its (unverified) `iss`
//! names a configured issuer; a key of that issuer with the token's `kid`
//! (fetched again, rate-limited, if unknown) verifies the signature; `iss`,
//! `aud` (must name this gateway's resource URI, or another configured
//! audience), `exp` (required) and `nbf` hold, with the configured leeway.
//! Then configured claim paths give the principal.

use std::{str::FromStr, sync::Arc};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::Value;

use super::{Principal, jwks::Jwks};

/// Tokens longer than this are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// Where in the verified claims the principal's parts are.
///
/// A path is a claim name, or a dotted path into nested objects
/// (`realm_access.roles`); a claim whose whole name contains dots (Auth0's
/// `https://example.com/roles`) is found by its full name first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimPaths {
    /// The subject (default `sub`).
    pub subject: String,
    /// The tenant, if tokens carry one (e.g. `tid`, `org_id`).
    pub tenant: Option<String>,
    /// Role claims, merged (strings or arrays of strings).
    pub roles: Vec<String>,
    /// Scope claims, merged (space-separated strings or arrays).
    pub scopes: Vec<String>,
}

impl Default for ClaimPaths {
    fn default() -> Self {
        Self { subject: "sub".into(), tenant: None, roles: vec![], scopes: vec!["scope".into(), "scp".into()] }
    }
}

/// One trusted token issuer.
#[derive(Debug)]
pub struct Issuer {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted signature algorithms (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Accepted `aud` values besides the gateway's resource URI.
    pub audiences: Vec<String>,
    /// Where the principal comes from.
    pub claims: ClaimPaths,
    /// The issuer's signing keys.
    pub keys: Arc<Jwks>,
}

/// The algorithms an issuer may allow: asymmetric signatures only.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let algorithm = Algorithm::from_str(name).map_err(|_| format!("{name:?} is not a JWS algorithm"))?;
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Err(format!(
            "{name} is an HMAC algorithm: a resource server would need the issuer's secret; use an asymmetric one"
        )),
        other => Ok(other),
    }
}

/// Part `n` of a token (0 header, 1 claims) as JSON, unverified.
fn unverified_part(token: &str, n: usize) -> Option<Value> {
    let part = token.split('.').nth(n)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?).ok()
}

/// The `iss` claim of a token, unverified: only to pick whose keys to try.
fn unverified_issuer(token: &str) -> Option<String> {
    unverified_part(token, 1)?.get("iss")?.as_str().map(str::to_owned)
}

/// Verify `token` against `issuers`; `Err` is a reason safe to show the caller.
pub async fn verify(token: &str, issuers: &[Issuer], resource: &str, leeway_s: u64) -> Result<Principal, String> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(format!("the token is larger than {MAX_TOKEN_BYTES} bytes"));
    }
    if unverified_part(token, 0)
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|a| a.eq_ignore_ascii_case("none"))
    {
        return Err("algorithm none (an unsigned token) is never accepted".to_owned());
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is not a well-formed JWT".to_owned())?;
    let iss = unverified_issuer(token).ok_or("the token has no issuer")?;
    let issuer = issuers.iter().find(|i| i.issuer == iss).ok_or("the token's issuer is not trusted")?;
    if !issuer.algorithms.contains(&header.alg) {
        return Err(format!("algorithm {:?} is not accepted for this issuer", header.alg));
    }
    let key = issuer.keys.key_for(header.kid.as_deref(), header.alg).await?;

    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&issuer.issuer]);
    let mut audiences = vec![resource.to_owned()];
    audiences.extend(issuer.audiences.iter().cloned());
    validation.set_audience(&audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = leeway_s;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
        ErrorKind::InvalidAudience => "the token is not meant for this resource (aud)".to_owned(),
        ErrorKind::InvalidIssuer => "the token's issuer is not trusted".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm does not fit its key".to_owned(),
        _ => "the token is invalid".to_owned(),
    })?;
    principal(&data.claims, &issuer.claims)
}

/// The claim at `path` (see [`ClaimPaths`]).
pub fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    path.split('.').try_fold(claims, |value, key| value.get(key))
}

fn strings(value: Option<&Value>, split_spaces: bool) -> Vec<String> {
    match value {
        Some(Value::String(s)) if split_spaces => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => vec![],
    }
}

/// Map verified claims to a principal.
pub fn principal(claims: &Value, paths: &ClaimPaths) -> Result<Principal, String> {
    let subject = claim(claims, &paths.subject)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("the token has no {} claim", paths.subject))?
        .to_owned();
    let tenant = paths.tenant.as_deref().and_then(|p| claim(claims, p)).and_then(Value::as_str).map(str::to_owned);
    let mut roles = Vec::new();
    for path in &paths.roles {
        for role in strings(claim(claims, path), false) {
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
    }
    let mut scopes = Vec::new();
    for path in &paths.scopes {
        for scope in strings(claim(claims, path), true) {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    Ok(Principal { subject, tenant, roles, scopes, claims: claims.clone() })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claim_paths_cover_the_common_identity_providers() {
        // Keycloak: realm roles nested, scopes as a string.
        let keycloak =
            json!({"sub": "u1", "realm_access": {"roles": ["analyst", "offline_access"]}, "scope": "openid mcp"});
        let paths = ClaimPaths { roles: vec!["realm_access.roles".into()], ..ClaimPaths::default() };
        let p = principal(&keycloak, &paths).unwrap();
        assert_eq!(
            (p.roles, p.scopes),
            (vec!["analyst".into(), "offline_access".into()], vec!["openid".into(), "mcp".into()])
        );
        // Entra ID: tenant in tid, app roles in roles, delegated scopes in scp.
        let entra = json!({"sub": "u2", "tid": "t-42", "roles": ["Engineer"], "scp": "Tools.Call Tools.List"});
        let paths = ClaimPaths { tenant: Some("tid".into()), roles: vec!["roles".into()], ..ClaimPaths::default() };
        let p = principal(&entra, &paths).unwrap();
        assert_eq!(p.tenant.as_deref(), Some("t-42"));
        assert_eq!(p.scopes, ["Tools.Call", "Tools.List"]);
        // Auth0: namespaced claims whose names contain dots.
        let auth0 = json!({"sub": "u3", "https://warden.example/roles": ["analyst"], "permissions": ["read"]});
        let paths = ClaimPaths {
            roles: vec!["https://warden.example/roles".into()],
            scopes: vec!["scope".into(), "permissions".into()],
            ..ClaimPaths::default()
        };
        let p = principal(&auth0, &paths).unwrap();
        assert_eq!((p.roles, p.scopes), (vec!["analyst".into()], vec!["read".into()]));
    }

    #[test]
    fn a_token_without_a_subject_is_refused() {
        assert!(principal(&json!({"sub": ""}), &ClaimPaths::default()).is_err());
        assert!(principal(&json!({}), &ClaimPaths::default()).is_err());
    }

    #[test]
    fn only_asymmetric_algorithms_may_be_allowed() {
        assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
        assert!(parse_algorithm("HS256").unwrap_err().contains("HMAC"));
        assert!(parse_algorithm("none").is_err());
    }
}
