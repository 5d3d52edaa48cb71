//! Outgoing TLS, for `https://` upstreams, JWKS endpoints and token
//! endpoints: rustls with the Mozilla root set (`webpki-roots`, so the result
//! does not depend on the machine's trust store), plus the CA certificates a
//! config names in `[tls] ca_files` for private PKI. Certificates are always
//! verified; there is no switch to turn that off.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore, pki_types::CertificateDer};

/// Extra trusted CA certificates (DER), set once at start-up.
static EXTRA_ROOTS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();

/// Trust these CA certificates (DER) besides the Mozilla roots, for every
/// outgoing connection of this process. Only the first call has an effect.
pub fn trust(extra: &[Vec<u8>]) {
    let _ = EXTRA_ROOTS.set(extra.to_vec());
}

/// The client TLS settings (built once).
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in EXTRA_ROOTS.get().map(Vec::as_slice).unwrap_or_default() {
            if let Err(error) = roots.add(CertificateDer::from(der.clone())) {
                tracing::warn!(%error, "a configured CA certificate was not added");
            }
        }
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }))
}

/// The DER certificates in a PEM file, or why there are none.
pub fn read_pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certificates: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()).map_err(|e| format!("not PEM certificates: {e}")))
        .collect::<Result<_, _>>()?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certificates)
}
