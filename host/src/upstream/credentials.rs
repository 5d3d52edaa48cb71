//! What an HTTP upstream is shown as credentials: never the client's token
//! (the gateway would become a confused deputy), only what the config gives
//! that upstream — a fixed header read from an environment variable or a
//! file, or an OAuth 2.0 client-credentials token the gateway fetches and
//! caches itself.

use std::{
    fmt,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::Mutex;

/// A secret: compared, used, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// An upstream's own credentials, from config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A fixed header (`Authorization: Bearer …` or e.g. `X-Api-Key: …`).
    Header {
        /// Header name, lower case.
        name: String,
        /// The whole value.
        value: Secret,
    },
    /// OAuth 2.0 client credentials (RFC 6749 section 4.4), client
    /// authenticated with HTTP Basic.
    ClientCredentials {
        /// The token endpoint (http://).
        token_url: String,
        /// The client id.
        client_id: String,
        /// The client secret.
        client_secret: Secret,
        /// Scopes to ask for, space-separated.
        scope: Option<String>,
        /// An `audience` parameter, for providers that want one (Auth0).
        audience: Option<String>,
    },
}

/// Most of a token's lifetime is used; this much before expiry it is renewed.
const RENEW_BEFORE: Duration = Duration::from_secs(30);
/// Largest token response read.
const MAX_TOKEN_RESPONSE: usize = 64 << 10;

/// Credentials plus the cached token, per upstream.
pub(crate) struct CredentialSource {
    credentials: Credentials,
    cached: Mutex<Option<(HeaderValue, Instant)>>,
}

impl CredentialSource {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Self { credentials, cached: Mutex::new(None) }
    }

    /// The header to send; fetches a token when needed. Errors never carry
    /// the secret.
    pub(crate) async fn header(&self) -> Result<(HeaderName, HeaderValue), String> {
        match &self.credentials {
            Credentials::Header { name, value } => {
                let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
                let mut value =
                    HeaderValue::from_str(value.expose()).map_err(|_| "the credential is not a valid header value")?;
                value.set_sensitive(true);
                Ok((name, value))
            }
            Credentials::ClientCredentials { .. } => {
                let mut cached = self.cached.lock().await;
                if let Some((value, until)) = &*cached
                    && Instant::now() < *until
                {
                    return Ok((AUTHORIZATION, value.clone()));
                }
                let (token, lifetime) = self.fetch().await?;
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| "the token endpoint returned a token that is not a valid header value")?;
                value.set_sensitive(true);
                *cached = Some((value.clone(), Instant::now() + lifetime.saturating_sub(RENEW_BEFORE)));
                Ok((AUTHORIZATION, value))
            }
        }
    }

    /// Forget a cached token (the upstream refused it).
    pub(crate) async fn invalidate(&self) {
        self.cached.lock().await.take();
    }

    /// Whether a refused request is worth one retry with a fresh token.
    pub(crate) fn renewable(&self) -> bool {
        matches!(self.credentials, Credentials::ClientCredentials { .. })
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let Credentials::ClientCredentials { token_url, client_id, client_secret, scope, audience } = &self.credentials
        else {
            unreachable!("only client credentials are fetched")
        };
        let mut form = vec![("grant_type", "client_credentials")];
        form.extend(scope.as_deref().map(|s| ("scope", s)));
        form.extend(audience.as_deref().map(|a| ("audience", a)));
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect();
        let basic = STANDARD.encode(format!("{}:{}", form_encode(client_id), form_encode(client_secret.expose())));
        let request = hyper::Request::post(token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(Bytes::from(body.join("&"))))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(10), super::http::http_client().request(request))
            .await
            .map_err(|_| format!("the token endpoint {token_url} did not answer in 10 s"))?
            .map_err(|e| format!("the token endpoint {token_url}: {e}"))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_TOKEN_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("the token endpoint {token_url}: {e}"))?
            .to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            let error = answer.get("error").and_then(Value::as_str).unwrap_or("no error code");
            return Err(format!("the token endpoint {token_url} refused the client: HTTP {status} ({error})"));
        }
        let token = answer
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the token endpoint {token_url} returned no access_token"))?;
        let lifetime = answer.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
        Ok((token.to_owned(), Duration::from_secs(lifetime)))
    }
}

/// `application/x-www-form-urlencoded` for one value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let credentials = Credentials::Header { name: "authorization".into(), value: Secret::new("Bearer s3cret") };
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(form_encode("read write:all"), "read+write%3Aall");
    }
}
