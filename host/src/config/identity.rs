//! The identity parts of the gateway config: trusted JWT issuers (`[oauth]`)
//! and the scopes tools require (`[[required_scopes]]`).
//!
//! ```toml
//! [oauth]
//! resource = "https://mcp.example.com/mcp"   # this endpoint's public URL; tokens' aud must name it
//! leeway_s = 30                               # clock skew allowed for exp and nbf
//! scopes_supported = ["mcp:tools"]            # advertised in the RFC 9728 metadata
//!
//! [[oauth.issuer]]
//! issuer = "https://idp.example.com/realms/acme"           # the exact iss value
//! jwks_url = "https://idp.example.com/realms/acme/protocol/openid-connect/certs"  # or jwks_file = "…"
//! algorithms = ["RS256"]                                  # asymmetric only; default RS256
//! audiences = []                                          # accepted aud values besides `resource`
//! refresh_s = 300                                         # background JWKS refresh
//! min_refresh_s = 10                                      # least time between fetches for unknown kids
//! subject_claim = "sub"
//! tenant_claim = "tid"                                    # optional
//! roles_claims = ["realm_access.roles"]                   # merged
//! scopes_claims = ["scope", "scp"]                        # merged; strings split on spaces
//!
//! [[required_scopes]]
//! tools = ["demo/write_*"]        # upstream/tool globs
//! scopes = ["demo:write"]         # all needed; a token without them gets 403 insufficient_scope
//! ```

use std::{path::Path, sync::Arc, time::Duration};

use globset::Glob;
use jsonwebtoken::{Algorithm, jwk::Jwk};

use super::{Problems, read::Table};
use crate::auth::{
    ResourceServer, ScopeRule,
    jwks::{self, Jwks},
    jwt::{self, ClaimPaths, Issuer},
};

/// Where an issuer's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuerKeys {
    /// Keys read from a JWKS file.
    File(Vec<Jwk>),
    /// A JWKS endpoint.
    Url {
        /// The endpoint.
        url: String,
        /// Background refresh period.
        refresh: Duration,
        /// Least time between fetches.
        min_refresh: Duration,
    },
}

/// One `[[oauth.issuer]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted algorithms.
    pub algorithms: Vec<Algorithm>,
    /// Accepted audiences besides the resource URI.
    pub audiences: Vec<String>,
    /// Claim paths for the principal.
    pub claims: ClaimPaths,
    /// Keys.
    pub keys: IssuerKeys,
}

/// `[oauth]`: the gateway as an OAuth 2.1 resource server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The resource URI.
    pub resource: String,
    /// Scopes advertised in the metadata.
    pub scopes_supported: Vec<String>,
    /// Clock leeway, seconds.
    pub leeway_s: u64,
    /// Trusted issuers.
    pub issuers: Vec<IssuerConfig>,
}

impl OAuthConfig {
    /// The live resource server (key caches included).
    pub fn build(&self) -> Arc<ResourceServer> {
        let issuers = self
            .issuers
            .iter()
            .map(|i| Issuer {
                issuer: i.issuer.clone(),
                algorithms: i.algorithms.clone(),
                audiences: i.audiences.clone(),
                claims: i.claims.clone(),
                keys: match &i.keys {
                    IssuerKeys::File(set) => Jwks::fixed(set),
                    IssuerKeys::Url { url, refresh, min_refresh } => {
                        Jwks::remote(url.parse().expect("validated"), *refresh, *min_refresh)
                    }
                },
            })
            .collect();
        Arc::new(ResourceServer {
            resource: self.resource.clone(),
            scopes_supported: self.scopes_supported.clone(),
            leeway_s: self.leeway_s,
            issuers,
        })
    }
}

/// Parse `[oauth]`.
pub(super) fn oauth(root: &mut Table<'_>, base: &Path, problems: &mut Problems) -> Option<OAuthConfig> {
    let mut t = root.table("oauth", problems)?;
    let resource: Option<String> = t.require("resource", problems);
    if let Some(resource) = &resource {
        let ok = resource.parse::<hyper::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.query().is_none()
        });
        if !ok {
            problems
                .push(t.path_of("resource"), format!("{resource:?} must be an absolute http(s) URL without a query"));
        }
    }
    let scopes_supported = t.get("scopes_supported", problems).unwrap_or_default();
    let leeway_s = t.get("leeway_s", problems).unwrap_or(30);
    let mut issuers = Vec::new();
    let tables = t.tables("issuer", problems);
    if tables.is_empty() {
        problems.push(t.path_of("issuer"), "at least one [[oauth.issuer]] is needed to accept tokens");
    }
    for it in tables {
        if let Some(issuer) = issuer(it, base, problems) {
            if issuers.iter().any(|i: &IssuerConfig| i.issuer == issuer.issuer) {
                problems.push(t.path_of("issuer"), format!("issuer {:?} is configured twice", issuer.issuer));
            }
            issuers.push(issuer);
        }
    }
    t.finish(problems);
    Some(OAuthConfig { resource: resource?, scopes_supported, leeway_s, issuers })
}

fn issuer(mut t: Table<'_>, base: &Path, problems: &mut Problems) -> Option<IssuerConfig> {
    let issuer: Option<String> = t.require("issuer", problems);
    let algorithms: Vec<String> = t.get("algorithms", problems).unwrap_or_else(|| vec!["RS256".into()]);
    let algorithms: Vec<Algorithm> = algorithms
        .iter()
        .filter_map(|name| jwt::parse_algorithm(name).map_err(|e| problems.push(t.path_of("algorithms"), e)).ok())
        .collect();
    if algorithms.is_empty() {
        problems.push(t.path_of("algorithms"), "name at least one algorithm");
    }
    let audiences = t.get("audiences", problems).unwrap_or_default();
    let defaults = ClaimPaths::default();
    let claims = ClaimPaths {
        subject: t.get("subject_claim", problems).unwrap_or(defaults.subject),
        tenant: t.get("tenant_claim", problems),
        roles: t.get("roles_claims", problems).unwrap_or(defaults.roles),
        scopes: t.get("scopes_claims", problems).unwrap_or(defaults.scopes),
    };
    let refresh = Duration::from_secs(t.get("refresh_s", problems).unwrap_or(300));
    let min_refresh = Duration::from_secs(t.get("min_refresh_s", problems).unwrap_or(10));
    let url: Option<String> = t.get("jwks_url", problems);
    let file: Option<String> = t.get("jwks_file", problems);
    let keys = match (url, file) {
        (Some(url), None) => match url.parse::<hyper::Uri>() {
            Ok(uri) if super::gateway::web_url(&uri) => Some(IssuerKeys::Url { url, refresh, min_refresh }),
            Ok(_) => {
                problems.push(t.path_of("jwks_url"), format!("{url:?} must be an http:// or https:// URL"));
                None
            }
            Err(e) => {
                problems.push(t.path_of("jwks_url"), format!("{url:?} is not a URL: {e}"));
                None
            }
        },
        (None, Some(file)) => {
            let path = base.join(&file);
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|bytes| jwks::parse_set(&bytes)) {
                Ok((set, _)) if set.is_empty() => {
                    problems.push(t.path_of("jwks_file"), format!("{} holds no usable signing key", path.display()));
                    None
                }
                Ok((set, _)) => Some(IssuerKeys::File(set)),
                Err(e) => {
                    problems.push(t.path_of("jwks_file"), format!("{}: {e}", path.display()));
                    None
                }
            }
        }
        (Some(_), Some(_)) => {
            problems.push(t.path_of("jwks_url"), "give jwks_url or jwks_file, not both");
            None
        }
        (None, None) => {
            problems.push(t.path_of("jwks_url"), "give jwks_url (a JWKS endpoint) or jwks_file");
            None
        }
    };
    t.finish(problems);
    Some(IssuerConfig { issuer: issuer?, algorithms, audiences, claims, keys: keys? })
}

/// Parse `[[required_scopes]]`.
pub(super) fn required_scopes(root: &mut Table<'_>, problems: &mut Problems) -> Vec<ScopeRule> {
    let mut rules = Vec::new();
    for mut t in root.tables("required_scopes", problems) {
        let tools: Vec<String> = match t.raw("tools") {
            Some(toml::Value::String(s)) => vec![s.clone()],
            _ => t.require("tools", problems).unwrap_or_default(),
        };
        let scopes: Vec<String> = t.require("scopes", problems).unwrap_or_default();
        if scopes.is_empty() {
            problems.push(t.path_of("scopes"), "name at least one scope");
        }
        let mut matchers = Vec::new();
        for pattern in &tools {
            match Glob::new(pattern) {
                Ok(glob) => matchers.push(glob.compile_matcher()),
                Err(e) => problems.push(t.path_of("tools"), format!("{pattern:?} is not a pattern: {e}")),
            }
        }
        t.finish(problems);
        rules.push(ScopeRule::new(tools, matchers, scopes));
    }
    rules
}
