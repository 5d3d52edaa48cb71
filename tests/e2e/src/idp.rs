//! A real, small OAuth identity provider on 127.0.0.1 for the identity tests:
//! RSA signing keys that can rotate, a JWKS endpoint (`/jwks`) that can be
//! taken down, and a client-credentials token endpoint (`/token`, HTTP Basic
//! client authentication), over http or https (a test CA). It counts what it
//! serves.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use rsa::{RsaPrivateKey, pkcs1::EncodeRsaPrivateKey, pkcs8::EncodePublicKey};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One signing key.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Jwk,
    public_pem: String,
}

fn new_key(kid: &str) -> SigningKey {
    let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key");
    let der = private.to_pkcs1_der().expect("PKCS#1");
    let encoding = EncodingKey::from_rsa_der(der.as_bytes());
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).expect("JWK");
    jwk.common.key_id = Some(kid.to_owned());
    let public_pem = private.to_public_key().to_public_key_pem(rsa::pkcs8::LineEnding::LF).expect("public key PEM");
    SigningKey { kid: kid.to_owned(), encoding, jwk, public_pem }
}

/// What the provider serves; shared with its HTTP task.
struct State {
    keys: Mutex<Vec<SigningKey>>,
    down: AtomicBool,
    jwks_requests: AtomicU64,
    token_requests: AtomicU64,
    issuer: String,
    /// (client id, secret, audience of the tokens it gets).
    client: (String, String, String),
}

/// The running provider.
pub struct Idp {
    state: Arc<State>,
    /// Its base URL, which is also its `iss`.
    pub issuer: String,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

impl Idp {
    /// Start with one key (`key-1`) and a client `(id, secret)` whose tokens
    /// are for `audience`.
    pub async fn start(client: (&str, &str), audience: &str) -> Self {
        Self::serve(client, audience, None).await
    }

    /// [`Idp::start`], over https with a certificate for 127.0.0.1 from a
    /// fresh test CA, whose certificate (PEM) is written to `ca_file`.
    pub async fn start_tls(client: (&str, &str), audience: &str, ca_file: &std::path::Path) -> Self {
        let (leaf, leaf_key) = crate::loopback_certificate(ca_file);
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        Self::serve(client, audience, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(client: (&str, &str), audience: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
        let state = Arc::new(State {
            keys: Mutex::new(vec![new_key("key-1")]),
            down: AtomicBool::new(false),
            jwks_requests: AtomicU64::new(0),
            token_requests: AtomicU64::new(0),
            issuer: issuer.clone(),
            client: (client.0.to_owned(), client.1.to_owned(), audience.to_owned()),
        });
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let state = Arc::clone(&shared);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, request).await) }
                    });
                    let http = http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Self { state, issuer }
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// The token URL.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Add a key (and, if `retire`, drop the older ones); returns its kid.
    pub fn rotate(&self, kid: &str, retire: bool) {
        let key = new_key(kid);
        let mut keys = self.state.keys.lock().unwrap();
        if retire {
            keys.clear();
        }
        keys.push(key);
    }

    /// Make `/jwks` and `/token` answer 503 (or serve again).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// How many times `/jwks` was asked for.
    pub fn jwks_requests(&self) -> u64 {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }

    /// How many tokens `/token` handed out.
    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// The newest key's public key, PEM (for the HMAC-confusion attack).
    pub fn public_pem(&self) -> String {
        self.state.keys.lock().unwrap().last().unwrap().public_pem.clone()
    }

    /// Sign `claims` (RS256) with the key `kid`.
    pub fn sign_with(&self, kid: &str, claims: &Value) -> String {
        let keys = self.state.keys.lock().unwrap();
        let key = keys.iter().find(|k| k.kid == kid).expect("no such key");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    /// Sign with a fresh key this provider never publishes (kid `unpublished`).
    pub fn sign_unpublished(&self, claims: &Value) -> String {
        let key = new_key("unpublished");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid);
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    /// The HMAC-confusion attack: HS256 with the provider's public key (PEM)
    /// as the shared secret, naming the real key's kid.
    pub fn sign_hs256_with_public_key(&self, claims: &Value) -> String {
        let pem = self.public_pem();
        let kid = self.state.keys.lock().unwrap().last().unwrap().kid.clone();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(pem.as_bytes())).expect("sign")
    }

    /// An unsigned token (`alg: none`).
    pub fn unsigned(&self, claims: &Value) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"key-1"}"#);
        format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
    }

    /// Standard claims from this issuer for `audience`, valid for 5 minutes,
    /// merged with `extra`.
    pub fn claims(&self, audience: &str, extra: Value) -> Value {
        let mut claims = json!({
            "iss": self.issuer, "aud": audience, "sub": "alice",
            "iat": now(), "nbf": now(), "exp": now() + 300,
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            claims[k] = v;
        }
        claims
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn answer(state: &State, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if state.down.load(Ordering::SeqCst) {
        return reply(StatusCode::SERVICE_UNAVAILABLE, json!({"error": "down"}));
    }
    match request.uri().path() {
        "/jwks" => {
            state.jwks_requests.fetch_add(1, Ordering::SeqCst);
            let keys: Vec<Jwk> = state.keys.lock().unwrap().iter().map(|k| k.jwk.clone()).collect();
            reply(StatusCode::OK, json!({ "keys": keys }))
        }
        "/token" => {
            let basic = request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|b| STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok());
            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let form = String::from_utf8_lossy(&body).into_owned();
            let (id, secret, audience) = &state.client;
            if basic.as_deref() != Some(&format!("{id}:{secret}")) {
                return reply(StatusCode::UNAUTHORIZED, json!({"error": "invalid_client"}));
            }
            if !form.split('&').any(|p| p == "grant_type=client_credentials") {
                return reply(StatusCode::BAD_REQUEST, json!({"error": "unsupported_grant_type"}));
            }
            state.token_requests.fetch_add(1, Ordering::SeqCst);
            let keys = state.keys.lock().unwrap();
            let key = keys.last().unwrap();
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(key.kid.clone());
            let claims = json!({
                "iss": state.issuer, "aud": audience, "sub": id, "exp": now() + 300, "iat": now(),
                "n": state.token_requests.load(Ordering::SeqCst),
            });
            let token = jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap();
            reply(StatusCode::OK, json!({"access_token": token, "token_type": "Bearer", "expires_in": 300}))
        }
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}
