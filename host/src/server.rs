//! Putting it together: config → engine → policy chain → gateway → listener.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    admin::Admin,
    audit::Auditor,
    auth::Authenticator,
    chain::Chain,
    config::{ConfigError, chain as chain_config, gateway::GatewayConfig},
    controls::{Approvals, LockFile, Pins, Switches},
    engine::Engine,
    gateway::{Gateway, Governance, Settings},
    limits::Limiter,
    metrics::Metrics,
    reload::Reloader,
    state::StateStore,
    transport::{
        http::{self, HttpState},
        seal::SessionSeal,
    },
    usage::UsageMeter,
};

/// How long start-up waits for upstreams before serving anyway.
const READY_WAIT: Duration = Duration::from_secs(30);

/// A gateway and what reloads its chain (if it has one).
pub struct Built {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Reloads the chain; `None` without a `[policy] chain`.
    pub reloader: Option<Arc<Reloader>>,
    /// Keeps the chain's files watched while alive.
    _watcher: Option<crate::reload::Watch>,
}

/// Build the gateway a config describes (upstreams start connecting), with
/// chain reloading (and file watching if the config asks). Call within a
/// Tokio runtime.
pub async fn build(config: &GatewayConfig) -> Result<Built, anyhow::Error> {
    let engine = Engine::new(&config.engine)?;
    let governance = governance(config).await?;
    let (gateway, named) = gateway(config, &engine, governance)?;
    let reloader = config
        .chain
        .as_ref()
        .map(|file| Reloader::new(Arc::clone(&gateway), engine, file.clone(), config.trust.clone(), &named));
    let watcher = match (&reloader, config.watch) {
        (Some(reloader), true) => Some(reloader.watch().map_err(anyhow::Error::msg)?),
        _ => None,
    };
    Ok(Built { gateway, reloader, _watcher: watcher })
}

/// The gateway a config describes, its chain compiled by `engine`
/// (upstreams start connecting), and the files the chain names.
fn gateway(
    config: &GatewayConfig,
    engine: &Engine,
    governance: Governance,
) -> Result<(Arc<Gateway>, Vec<PathBuf>), anyhow::Error> {
    crate::tls::trust(&config.tls_roots);
    let (chain, named) = match &config.chain {
        Some(file) => {
            let spec = chain_config::parse_file(file, &config.trust)?;
            (chain_config::build(engine, &spec)?, spec.watched_files())
        }
        None => {
            tracing::warn!("no [policy] chain configured: every call is allowed");
            (Chain::default(), Vec::new())
        }
    };
    let settings = Settings {
        naming: config.naming.clone(),
        history: config.sessions.history,
        max_histories: config.sessions.max,
        history_ttl: config.sessions.idle_timeout,
        page_size: 500,
        required_scopes: config.required_scopes.clone(),
        deprecations: config.deprecations.clone(),
    };
    let upstreams = config.upstreams.iter().map(|u| (u.spec.clone(), u.prefix.clone())).collect();
    Ok((Gateway::start(settings, upstreams, chain, governance), named))
}

/// The audit log, metrics, limits and usage meter a config asks for. A
/// Redis that does not answer at start-up is a config problem (exit 64):
/// serving without the shared state would enforce nothing the limits promise.
async fn governance(config: &GatewayConfig) -> Result<Governance, anyhow::Error> {
    let store = match StateStore::open(&config.state).await {
        Ok(store) => Arc::new(store),
        Err(error) => {
            let mut problems = crate::config::Problems::new(&config.file);
            problems.push(if config.state.redis.is_some() { "state.redis" } else { "state.file" }, error);
            return Err(problems.into_error().into());
        }
    };
    let auditor = match &config.audit {
        Some(audit) => Auditor::open(audit.clone()).map_err(anyhow::Error::msg)?,
        None => Auditor::off(),
    };
    let metrics = Arc::new(Metrics::default());
    let limiter = Limiter::new(
        config.limits.clone(),
        Arc::clone(&store),
        config.state.on_unavailable,
        Arc::clone(&metrics),
        config.file.clone(),
    );
    // Replicas sharing a Redis share the key that seals session ids, so a
    // legacy session opened on one keeps working on every other.
    let session_seal = match &*store {
        StateStore::Redis(_) => {
            let key = store.shared_secret("session-seal").await.map_err(|e| {
                let mut problems = crate::config::Problems::new(&config.file);
                problems.push("state.redis", e);
                problems.into_error()
            })?;
            Some(Arc::new(SessionSeal::new(&key)))
        }
        StateStore::Memory(_) => None,
    };
    let switches = Switches::load(Arc::clone(&store)).await.map_err(|e| {
        let mut problems = crate::config::Problems::new(&config.file);
        problems.push(if config.state.redis.is_some() { "state.redis" } else { "state.file" }, e);
        problems.into_error()
    })?;
    let pins = match &config.pinning {
        Some(settings) => Some(Arc::new(Pins::load(settings.clone(), Arc::clone(&store)).await.map_err(|e| {
            let mut problems = crate::config::Problems::new(&config.file);
            problems.push("pinning.lock", e);
            problems.into_error()
        })?)),
        None => None,
    };
    // Replicas sharing a Redis share the key that seals approval rounds,
    // so a 2026-07-28 client's retry may land on any of them.
    let approvals = match config.approvals.clone() {
        Some(settings) => {
            let key = store.shared_secret("approval-seal").await.map_err(|e| {
                let mut problems = crate::config::Problems::new(&config.file);
                problems.push("state.redis", e);
                problems.into_error()
            })?;
            Some(Arc::new(Approvals::new(settings, Arc::clone(&store), &key)))
        }
        None => None,
    };
    let usage = UsageMeter::start(store, config.state.usage_retention);
    Ok(Governance {
        auditor,
        metrics,
        limiter: Arc::new(limiter),
        usage,
        session_seal,
        switches: Arc::new(switches),
        pins,
        approvals,
    })
}

/// Start the upstreams of `config`, list their tools and lock them: what
/// `warden tools lock` writes. Every upstream must answer.
pub async fn lock_tools(config: &GatewayConfig) -> Result<LockFile, anyhow::Error> {
    crate::tls::trust(&config.tls_roots);
    let (events, _ignored) = tokio::sync::mpsc::unbounded_channel();
    let order = config.upstreams.iter().map(|u| (u.spec.name.clone(), u.prefix.clone())).collect();
    let catalog = crate::catalog::Catalog::new(config.naming.clone(), order);
    let upstreams: Vec<_> =
        config.upstreams.iter().map(|u| crate::upstream::Upstream::start(u.spec.clone(), events.clone())).collect();
    let mut versions = std::collections::BTreeMap::new();
    let listed = async {
        for upstream in &upstreams {
            let deadline = tokio::time::Instant::now() + READY_WAIT;
            let info = loop {
                if let Some(info) = upstream.server_info() {
                    break info;
                }
                if upstream.has_failed() || tokio::time::Instant::now() >= deadline {
                    anyhow::bail!("upstream {} did not answer, so its tools cannot be locked", upstream.name());
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            };
            catalog.refresh(upstream).await.with_context(|| format!("cannot list upstream {}", upstream.name()))?;
            if let Some(version) = info.info.get("version").and_then(serde_json::Value::as_str) {
                versions.insert(upstream.name().to_owned(), version.to_owned());
            }
        }
        Ok(())
    }
    .await;
    futures_util::future::join_all(upstreams.iter().map(|u| u.shutdown())).await;
    listed?;
    Ok(LockFile::of(&catalog.snapshot(), &versions))
}

/// The authenticators a config asks for (starts JWKS fetching: call within
/// a Tokio runtime).
pub fn authenticator(config: &GatewayConfig) -> Authenticator {
    crate::tls::trust(&config.tls_roots);
    Authenticator::new(config.api_keys.clone(), config.anonymous.clone())
        .with_oauth(config.oauth.as_ref().map(|o| o.build()))
}

/// A gateway serving HTTP.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The control plane's address, if `[admin]` is on.
    pub admin_addr: Option<SocketAddr>,
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// Reloads the chain (SIGHUP, the admin endpoint, file changes).
    pub reloader: Option<Arc<Reloader>>,
    /// Holds the file watcher.
    _built: Built,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// Stop accepting, let requests in progress finish, stop the upstreams.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.gateway.shutdown().await;
    }
}

/// Load `config`, start the gateway, wait (bounded) for upstreams, and listen.
pub async fn start(config: &GatewayConfig) -> Result<Running, anyhow::Error> {
    let built = build(config).await?;
    let gateway = Arc::clone(&built.gateway);
    let reloader = built.reloader.clone();
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "listening beyond loopback: make sure TLS and authentication sit in front");
    }
    let missing = gateway.wait_ready(READY_WAIT).await;
    if !missing.is_empty() {
        tracing::warn!(?missing, "serving without these upstreams for now; they keep being retried");
    }
    let auth = authenticator(config);
    let state = HttpState::new(Arc::clone(&gateway), auth.clone(), config.server.clone(), config.sessions.clone());
    let shutdown = CancellationToken::new();
    let admin_addr = match &config.admin {
        Some(settings) => {
            let listener = TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {} ([admin] listen)", settings.listen))?;
            let addr = listener.local_addr()?;
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "the admin listener is beyond loopback: keep it off public networks");
            }
            let admin = Arc::new(Admin {
                gateway: Arc::clone(&gateway),
                auth,
                role: settings.role.clone(),
                reloader: reloader.clone(),
                http: Arc::clone(&state),
            });
            tokio::spawn(crate::admin::serve(listener, admin, shutdown.clone()));
            tracing::info!(url = %format!("http://{addr}"), "serving admin");
            Some(addr)
        }
        None => None,
    };
    let task = tokio::spawn(http::serve(listener, state, shutdown.clone()));
    tracing::info!(url = %format!("http://{addr}{}", config.server.path), "serving MCP");
    Ok(Running { addr, admin_addr, gateway, reloader, _built: built, shutdown, task })
}

/// Read a gateway config, with its chain file checked too.
pub fn load_config(path: &Path) -> Result<GatewayConfig, ConfigError> {
    let config = crate::config::gateway::parse_file(path)?;
    if let Some(chain) = &config.chain {
        chain_config::parse_file(chain, &config.trust)?;
    }
    Ok(config)
}
