//! An issuer's signing keys: a JWKS read from a file, or fetched from a URL,
//! cached, refreshed in the background and again when a token names a key
//! the cache does not have (at most once per `min_refresh`). When the URL
//! cannot be reached the last good keys stay in use; with none, tokens are
//! refused (401), never an error of the gateway's.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{Jwk, JwkSet},
};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable key.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// Where keys come from.
#[derive(Debug)]
pub enum KeySource {
    /// Fixed keys (read from a file at start-up).
    Fixed,
    /// A JWKS endpoint.
    Url {
        /// The endpoint.
        url: hyper::Uri,
        /// Background refresh period.
        refresh: Duration,
        /// Least time between two fetches.
        min_refresh: Duration,
    },
}

/// The keys of one issuer.
pub struct Jwks {
    source: KeySource,
    keys: ArcSwap<Vec<Key>>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("source", &self.source).field("keys", &self.keys.load().len()).finish()
    }
}

/// The usable keys of a JWKS document, and a note for each key skipped.
pub fn parse_set(text: &[u8]) -> Result<(Vec<Jwk>, Vec<String>), String> {
    let set: JwkSet = serde_json::from_slice(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for jwk in set.keys {
        let kid = jwk.common.key_id.clone().unwrap_or_else(|| "(no kid)".into());
        match DecodingKey::from_jwk(&jwk) {
            Ok(_) if matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) => {
                skipped.push(format!("{kid}: symmetric keys are never accepted"));
            }
            Ok(_) => usable.push(jwk),
            Err(e) => skipped.push(format!("{kid}: {e}")),
        }
    }
    Ok((usable, skipped))
}

fn keys_of(set: &[Jwk]) -> Vec<Key> {
    set.iter()
        .filter_map(|jwk| {
            let key = DecodingKey::from_jwk(jwk).ok()?;
            let algorithm = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
            Some(Key { kid: jwk.common.key_id.clone(), algorithm, key })
        })
        .collect()
}

impl Jwks {
    /// Fixed keys.
    pub fn fixed(set: &[Jwk]) -> Arc<Self> {
        Arc::new(Self::new(KeySource::Fixed, keys_of(set)))
    }

    /// Keys fetched from `url`; none until [`Jwks::start`] or a token asks.
    pub fn remote(url: hyper::Uri, refresh: Duration, min_refresh: Duration) -> Arc<Self> {
        Arc::new(Self::new(KeySource::Url { url, refresh, min_refresh }, Vec::new()))
    }

    fn new(source: KeySource, keys: Vec<Key>) -> Self {
        Self {
            source,
            keys: ArcSwap::from_pointee(keys),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many fetches were attempted (for logs and tests).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetch now, then every refresh period, for as long as the keys are in use.
    pub fn start(self: &Arc<Self>) {
        let KeySource::Url { refresh, .. } = self.source else { return };
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(jwks) = weak.upgrade() else { return };
                jwks.refresh(true).await;
                drop(jwks);
                tokio::time::sleep(refresh).await;
            }
        });
    }

    /// The key for a token's `kid` and algorithm; fetches once more (if
    /// allowed by the rate limit) when none fits.
    pub async fn key_for(&self, kid: Option<&str>, algorithm: Algorithm) -> Result<DecodingKey, String> {
        if let Some(key) = self.find(kid, algorithm) {
            return Ok(key);
        }
        if matches!(self.source, KeySource::Url { .. }) {
            self.refresh(false).await;
            if let Some(key) = self.find(kid, algorithm) {
                return Ok(key);
            }
        }
        Err(if self.keys.load().is_empty() {
            "no signing keys are available for the token's issuer".to_owned()
        } else {
            "the token's signing key is unknown".to_owned()
        })
    }

    fn find(&self, kid: Option<&str>, algorithm: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.load();
        let fits = |k: &&Key| k.algorithm.is_none_or(|a| a == algorithm);
        match kid {
            Some(kid) => keys.iter().filter(fits).find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
            // No kid: only unambiguous.
            None => {
                let mut candidates = keys.iter().filter(fits);
                match (candidates.next(), candidates.next()) {
                    (Some(only), None) => Some(only.key.clone()),
                    _ => None,
                }
            }
        }
    }

    /// Fetch the set; `scheduled` refreshes ignore the rate limit.
    async fn refresh(&self, scheduled: bool) {
        let KeySource::Url { url, min_refresh, .. } = &self.source else { return };
        let _one_at_a_time = self.fetching.lock().await;
        let due = self.last_fetch.lock().unwrap().is_none_or(|at| at.elapsed() >= *min_refresh);
        if !scheduled && !due {
            return;
        }
        *self.last_fetch.lock().unwrap() = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(FETCH_TIMEOUT, fetch(url)).await {
            Ok(Ok((set, skipped))) => {
                for note in skipped {
                    tracing::warn!(%url, key = %note, "JWKS key skipped");
                }
                tracing::debug!(%url, keys = set.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys_of(&set)));
            }
            Ok(Err(error)) => tracing::warn!(%url, %error, "cannot fetch the JWKS; keeping the last good keys"),
            Err(_) => tracing::warn!(%url, "the JWKS fetch timed out; keeping the last good keys"),
        }
    }
}

async fn fetch(url: &hyper::Uri) -> Result<(Vec<Jwk>, Vec<String>), String> {
    let request = hyper::Request::get(url.clone())
        .header(hyper::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = crate::upstream::http::http_client().request(request).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    parse_set(&body)
}
