//! The gateway config (`warden.toml`): where to listen, who may call, which
//! upstreams to serve, which policy chain to run. Relative paths resolve
//! against the config file's folder.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"     # loopback by default
//! path = "/mcp"
//! max_body_kib = 4096           # larger requests get 413
//! allowed_origins = []          # browser origins allowed besides loopback ones
//! allowed_hosts = []            # Host values allowed besides loopback ones
//! header_timeout_s = 10         # a request head must arrive within this (else the connection closes)
//! body_timeout_s = 30           # a request body must arrive within this (else 408)
//! keep_alive_s = 60             # an idle connection closes after this
//! max_connections = 1024        # open connections at once (past it: 503)
//! max_connections_per_ip = 256  # from one client address (past it: 503)
//! max_batch = 32                # messages in a 2025-03-26 batch (past it: 400)
//! max_json_depth = 64           # nesting of a request body (past it: 400)
//!
//! [sessions]
//! idle_timeout_s = 1800         # legacy sessions end after this long unused
//! max = 10000                   # in all (past it: 503, nobody's session is ended)
//! max_per_principal = 100       # per identity (past it: that identity's oldest ends)
//! history = 32                  # calls per session that chain policies see
//! max_client_requests = 16      # server-to-client requests waiting per session
//! replay_kib = 1024             # SSE events kept per stream for Last-Event-ID
//!
//! [policy]
//! chain = "policies/default.toml"
//! watch = true                  # reload when the chain file or a component changes
//! require_signed = false        # true: only signed packs (and builtins) load
//! trusted_keys = ["keys/acme.pub"]       # minisign public keys of pack publishers
//! revoked_keys = ["8A2B4C6D8E0F1A2B"]     # key ids refused even if trusted
//! revoked_packs = ["sha256:…"]           # pack digests refused whoever signed them
//!
//! [admin]                       # the control plane, on its own listener
//! listen = "127.0.0.1:9464"     # /healthz, /readyz, /admin/status, /admin/metrics, POST /admin/reload
//! role = "warden-admin"         # callers with this role may use /admin/* (absent table: no control plane)
//!
//! [naming]
//! mode = "bare"                 # or "prefix"
//! separator = "__"
//!
//! [tls]                         # outgoing https (upstreams, JWKS, token endpoints)
//! ca_files = ["certs/internal-ca.pem"]   # trusted besides the Mozilla roots
//!
//! [engine]
//! max_instances = 256
//! max_memory_mib = 1024
//! cache = true                  # keep compiled plugins between runs (wasmtime's cache)
//! cache_dir = "/var/cache/warden"   # default: $XDG_CACHE_HOME/warden/compiled or ~/.cache/…
//! fuel = true                   # meter fuel (false: deadline and memory only, ~10-20% faster)
//!
//! [anonymous]                   # requests without credentials (loopback only)
//! subject = "local-dev"
//! roles = ["analyst"]
//!
//! [[api_key]]
//! subject = "ci-bot"
//! tenant = "acme"
//! roles = ["analyst"]
//! scopes = []
//! sha256 = "…"                  # `warden hash-key <key>`
//! loopback_only = false
//!
//! [oauth]                       # accept JWTs: see config::identity
//! resource = "https://mcp.example.com/mcp"
//! [[oauth.issuer]]
//! issuer = "https://idp.example.com"
//! jwks_url = "http://idp.internal/jwks"
//!
//! [[required_scopes]]           # see config::identity
//! tools = ["files/write_*"]
//! scopes = ["files:write"]
//!
//! [state]                      # shared state; see config::limits
//! redis = "redis://127.0.0.1:6379"
//!
//! [[limit]]                     # rate limits; see config::limits
//! name = "per-tenant"
//! rate = "100/min"
//!
//! [[quota]]                     # quotas; see config::limits
//! name = "daily"
//! calls = 10000
//! per = "day"
//!
//! [approvals]                   # a person answers what policies ask; see config::controls
//! via = "auto"
//!
//! [[deprecation]]               # deprecated tools; see config::controls
//! tools = ["demo/old_report"]
//! message = "use run_report"
//!
//! [pinning]                     # tool definitions pinned; see config::controls
//! lock = "warden-tools.lock"
//!
//! [[upstream]]
//! name = "files"
//! command = "npx"               # or url = "http://127.0.0.1:3001/mcp"
//! args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/share"]
//! env = { NODE_ENV = "production" }
//! env_from = { GITHUB_TOKEN = "FILES_GITHUB_TOKEN" }   # copied from the gateway's environment
//! cwd = "."                   # default: this file's folder
//! prefix = "files"              # namespace prefix (default: name)
//! timeout_ms = 30000
//! max_concurrency = 32
//! era = "auto"                  # HTTP only: "auto", "legacy" or "modern"
//! pinning = "block"             # with [pinning]: this upstream's on_change ("block", "flag", "off")
//!
//! [upstream.auth]               # HTTP only: the upstream's own credentials, one of
//! bearer_env = "DEMO_TOKEN"     #   Authorization: Bearer <$DEMO_TOKEN>  (or bearer_file)
//! # header = "X-Api-Key"  value_env = "…" (or value_file)
//! # token_url = "http://idp/token"  client_id = "warden"  client_secret_env = "…"
//! #   (or client_secret_file)  scope = "…"  audience = "…"   (OAuth client credentials)
//! ```
//!
//! The client's own credentials never reach an upstream.

use std::{
    collections::{BTreeMap, HashSet},
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_json::json;

use super::{
    ConfigError, Problems,
    chain::one_line,
    identity::{self, OAuthConfig},
    read::Table,
};
use crate::{
    admin::AdminSettings,
    audit::{AuditSettings, Durability, OnError},
    auth::{ApiKey, Principal, ScopeRule},
    catalog::{Naming, NamingMode},
    controls::{ApprovalSettings, Deprecation, OnChange, PinSettings},
    engine::{CompileCache, EngineSettings},
    limits::Limits,
    pack::{Trust, TrustedKey, normalise_digest, normalise_key_id},
    state::StateSettings,
    telemetry::TelemetrySettings,
    transport::{ConnectionLimits, ServerSettings, SessionSettings},
    upstream::{
        EraChoice, Transport, UpstreamSpec,
        credentials::{Credentials, Secret},
    },
};

/// An upstream with its namespace prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Connection settings.
    pub spec: UpstreamSpec,
    /// Namespace prefix.
    pub prefix: String,
    /// What a tool of it that no longer matches its pin gets, if not
    /// `[pinning] on_change`.
    pub pinning: Option<OnChange>,
}

/// A validated gateway config.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// Listener.
    pub server: ServerSettings,
    /// Sessions.
    pub sessions: SessionSettings,
    /// The policy chain file, if any (no chain: every call is allowed).
    pub chain: Option<PathBuf>,
    /// Reload the chain when its files change.
    pub watch: bool,
    /// Which policy packs may load. Fixed at start-up: reloads cannot change it.
    pub trust: Trust,
    /// The control plane's listener and role, if it is on.
    pub admin: Option<AdminSettings>,
    /// Name formation.
    pub naming: Naming,
    /// Wasm engine.
    pub engine: EngineSettings,
    /// API keys.
    pub api_keys: Vec<ApiKey>,
    /// Who requests without credentials are (loopback only), if anyone.
    pub anonymous: Option<Arc<Principal>>,
    /// Trusted JWT issuers, if tokens are accepted.
    pub oauth: Option<OAuthConfig>,
    /// Scopes that tools require.
    pub required_scopes: Vec<ScopeRule>,
    /// Upstreams, in order.
    pub upstreams: Vec<UpstreamConfig>,
    /// CA certificates (DER) trusted for outgoing https besides the Mozilla roots.
    pub tls_roots: Vec<Vec<u8>>,
    /// The audit log, if decisions are recorded.
    pub audit: Option<AuditSettings>,
    /// Trace export, if on.
    pub telemetry: Option<TelemetrySettings>,
    /// Where shared state (limit counts, usage) lives.
    pub state: StateSettings,
    /// Rate limits and quotas (reloadable).
    pub limits: Limits,
    /// Tool pinning, if on.
    pub pinning: Option<PinSettings>,
    /// Deprecated tools (reloadable).
    pub deprecations: Vec<Deprecation>,
    /// How calls a policy asks about reach a person (`None`: they are
    /// refused with -32011).
    pub approvals: Option<ApprovalSettings>,
}

/// The trust policy for policy packs, from the `[policy]` table.
fn trust_policy(t: &mut Table<'_>, base: &Path, problems: &mut Problems) -> Trust {
    let require_signed = t.get("require_signed", problems).unwrap_or(false);
    let mut keys: Vec<TrustedKey> = Vec::new();
    for file in t.get::<Vec<String>>("trusted_keys", problems).unwrap_or_default() {
        match TrustedKey::from_file(&base.join(&file)) {
            Ok(key) if keys.iter().any(|k| k.id == key.id) => {
                problems.push(t.path_of("trusted_keys"), format!("key {} ({file}) is listed twice", key.id));
            }
            Ok(key) => keys.push(key),
            Err(e) => problems.push(t.path_of("trusted_keys"), e),
        }
    }
    let mut revoked = |key: &'static str, normalise: fn(&str) -> Option<String>, what: &str| {
        let mut set = std::collections::BTreeSet::new();
        for value in t.get::<Vec<String>>(key, problems).unwrap_or_default() {
            match normalise(&value) {
                Some(v) => {
                    set.insert(v);
                }
                None => problems.push(t.path_of(key), format!("{value:?} is not {what}")),
            }
        }
        set
    };
    let revoked_keys = revoked("revoked_keys", normalise_key_id, "a key id (16 hex digits)");
    let revoked_packs = revoked("revoked_packs", normalise_digest, "a pack digest (sha256: and 64 hex digits)");
    if require_signed && keys.iter().all(|k| revoked_keys.contains(&k.id)) {
        problems.push(
            t.path_of("trusted_keys"),
            "require_signed is on but no key is trusted (and not revoked): no pack could load",
        );
    }
    Trust { require_signed, keys, revoked_keys, revoked_packs }
}

/// Read and validate a gateway config file.
pub fn parse_file(path: &Path) -> Result<GatewayConfig, ConfigError> {
    match fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => {
            let mut problems = Problems::new(path);
            problems.push("", format!("cannot read the file: {e}"));
            Err(problems.into_error())
        }
    }
}

/// Validate gateway config text read from `path`.
pub fn parse(text: &str, path: &Path) -> Result<GatewayConfig, ConfigError> {
    let mut problems = Problems::new(path);
    let table: toml::Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            problems.push("", format!("not valid TOML: {}", one_line(&e)));
            return Err(problems.into_error());
        }
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let mut root = Table::root(&table);

    let server = match root.table("server", &mut problems) {
        Some(t) => server(t, &mut problems),
        None => server_defaults(),
    };
    let sessions = match root.table("sessions", &mut problems) {
        Some(t) => sessions(t, &mut problems),
        None => SessionSettings::default(),
    };
    let mut watch = true;
    let mut trust = Trust::default();
    let chain = root.table("policy", &mut problems).and_then(|mut t| {
        let chain = t.require::<String>("chain", &mut problems).map(|c| base.join(c));
        watch = t.get("watch", &mut problems).unwrap_or(true);
        trust = trust_policy(&mut t, base, &mut problems);
        if let Some(file) = &chain
            && !file.is_file()
        {
            problems.push(t.path_of("chain"), format!("{} is not a readable file", file.display()));
        }
        t.finish(&mut problems);
        chain
    });
    let naming = match root.table("naming", &mut problems) {
        Some(mut t) => {
            let mode = match t.get::<String>("mode", &mut problems).as_deref() {
                None | Some("bare") => NamingMode::Bare,
                Some("prefix") => NamingMode::Prefix,
                Some(other) => {
                    problems.push(t.path_of("mode"), format!("{other:?} is not \"bare\" or \"prefix\""));
                    NamingMode::Bare
                }
            };
            let separator = t.get::<String>("separator", &mut problems).unwrap_or_else(|| "__".into());
            if separator.is_empty() || !separator.chars().all(tool_name_char) {
                problems.push(t.path_of("separator"), "must be characters allowed in tool names (A-Z a-z 0-9 _ - .)");
            }
            t.finish(&mut problems);
            Naming { mode, separator }
        }
        None => Naming::default(),
    };
    let engine = match root.table("engine", &mut problems) {
        Some(mut t) => {
            let defaults = EngineSettings::default();
            let enabled = t.get::<bool>("cache", &mut problems).unwrap_or(true);
            let cache = match (enabled, t.get::<String>("cache_dir", &mut problems)) {
                (true, None) => CompileCache::User,
                (true, Some(dir)) => CompileCache::Dir(base.join(dir)),
                (false, None) => CompileCache::Off,
                (false, Some(_)) => {
                    problems.push(t.path_of("cache_dir"), "is set but cache = false");
                    CompileCache::Off
                }
            };
            let settings = EngineSettings {
                max_instances: t.get("max_instances", &mut problems).unwrap_or(defaults.max_instances),
                max_memory_mib: t.get("max_memory_mib", &mut problems).unwrap_or(defaults.max_memory_mib),
                cache,
                fuel: t.get("fuel", &mut problems).unwrap_or(defaults.fuel),
            };
            t.finish(&mut problems);
            settings
        }
        None => EngineSettings::default(),
    };

    let admin = root.table("admin", &mut problems).and_then(|mut t| {
        let role: Option<String> = t.require("role", &mut problems);
        if role.as_deref() == Some("") {
            problems.push(t.path_of("role"), "must not be empty");
        }
        let listen = match t.get::<String>("listen", &mut problems) {
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(listen) => Some(listen),
                Err(e) => {
                    problems.push(t.path_of("listen"), format!("{text:?} is not an address like 127.0.0.1:9464: {e}"));
                    None
                }
            },
        };
        t.finish(&mut problems);
        Some(AdminSettings { listen: listen?, role: role.filter(|r| !r.is_empty())? })
    });
    let audit = root.table("audit", &mut problems).and_then(|t| audit(t, base, &mut problems));
    let telemetry = root.table("telemetry", &mut problems).and_then(|t| telemetry(t, &mut problems));
    let state = match root.table("state", &mut problems) {
        Some(t) => super::limits::state(t, base, &mut problems),
        None => StateSettings { file: Some(base.join(super::limits::DEFAULT_STATE_FILE)), ..StateSettings::default() },
    };
    let limits = super::limits::limits(&mut root, &mut problems);
    let deprecations = super::controls::deprecations(&mut root, &mut problems);
    let approvals = root.table("approvals", &mut problems).map(|t| super::controls::approvals(t, &mut problems));
    let tls_roots = match root.table("tls", &mut problems) {
        Some(mut t) => {
            let files: Vec<String> = t.get("ca_files", &mut problems).unwrap_or_default();
            let mut roots = Vec::new();
            for file in files {
                let path = base.join(&file);
                match fs::read(&path).map_err(|e| e.to_string()).and_then(|pem| crate::tls::read_pem_certificates(&pem))
                {
                    Ok(certificates) => roots.extend(certificates),
                    Err(e) => problems.push(t.path_of("ca_files"), format!("{}: {e}", path.display())),
                }
            }
            t.finish(&mut problems);
            roots
        }
        None => Vec::new(),
    };

    let anonymous = root.table("anonymous", &mut problems).and_then(|mut t| {
        let subject: Option<String> = t.require("subject", &mut problems);
        let tenant: Option<String> = t.get("tenant", &mut problems);
        let roles: Vec<String> = t.get("roles", &mut problems).unwrap_or_default();
        let scopes: Vec<String> = t.get("scopes", &mut problems).unwrap_or_default();
        if !server.listen.ip().is_loopback() {
            problems.push("anonymous", "anonymous access is allowed only on a loopback listener");
        }
        t.finish(&mut problems);
        subject.map(|subject| Arc::new(Principal { subject, tenant, roles, scopes, claims: json!({}) }))
    });

    let oauth = identity::oauth(&mut root, base, &mut problems);
    let required_scopes = identity::required_scopes(&mut root, &mut problems);
    let mut digests = HashSet::new();
    let mut api_keys = Vec::new();
    let key_tables = root.tables("api_key", &mut problems);
    if key_tables.is_empty() && anonymous.is_none() && oauth.is_none() {
        problems.push("api_key", "no credentials are configured, so every request would be refused");
    }
    for mut t in key_tables {
        let subject: Option<String> = t.require("subject", &mut problems);
        let tenant: Option<String> = t.get("tenant", &mut problems);
        let roles: Vec<String> = t.get("roles", &mut problems).unwrap_or_default();
        let scopes: Vec<String> = t.get("scopes", &mut problems).unwrap_or_default();
        let loopback_only = t.get("loopback_only", &mut problems).unwrap_or(false);
        let digest = t.require::<String>("sha256", &mut problems).and_then(|hex| match decode_hex(&hex) {
            Some(digest) if !digests.insert(digest) => {
                problems.push(t.path_of("sha256"), "the same key is configured twice");
                None
            }
            Some(digest) => Some(digest),
            None => {
                problems.push(t.path_of("sha256"), "must be 64 hex digits (warden hash-key <key> prints them)");
                None
            }
        });
        if subject.as_deref() == Some("") {
            problems.push(t.path_of("subject"), "must not be empty");
        }
        t.finish(&mut problems);
        if let (Some(subject), Some(digest)) = (subject, digest) {
            let principal = Principal { subject, tenant, roles, scopes, claims: json!({}) };
            api_keys.push(ApiKey { digest, principal: Arc::new(principal), loopback_only });
        }
    }

    let mut names = HashSet::new();
    let mut upstreams = Vec::new();
    for t in root.tables("upstream", &mut problems) {
        if let Some(upstream) = upstream(t, base, &mut names, &mut problems) {
            upstreams.push(upstream);
        }
    }
    let modes: BTreeMap<String, OnChange> =
        upstreams.iter().filter_map(|u| u.pinning.map(|m| (u.spec.name.clone(), m))).collect();
    let pinning = match root.table("pinning", &mut problems) {
        Some(t) => super::controls::pinning(t, base, modes, &mut problems),
        None if !modes.is_empty() => {
            problems.push("upstream.pinning", "needs a [pinning] table naming the lock file");
            None
        }
        None => None,
    };
    root.finish(&mut problems);
    problems.finish(GatewayConfig {
        file: path.to_owned(),
        server,
        sessions,
        chain,
        watch,
        trust,
        admin,
        naming,
        engine,
        api_keys,
        anonymous,
        oauth,
        required_scopes,
        upstreams,
        tls_roots,
        audit,
        telemetry,
        state,
        limits,
        pinning,
        deprecations,
        approvals,
    })
}

/// `[telemetry]`: OTLP/HTTP trace export.
fn telemetry(mut t: Table<'_>, problems: &mut Problems) -> Option<TelemetrySettings> {
    let mut settings = TelemetrySettings::default();
    let endpoint: Option<String> = t.require("endpoint", problems);
    if let Some(endpoint) = &endpoint {
        if endpoint.starts_with("https://") {
            problems.push(
                t.path_of("endpoint"),
                "https is not supported: export to a collector on this machine or network over http://",
            );
        } else if !endpoint.starts_with("http://") {
            problems.push(t.path_of("endpoint"), format!("{endpoint:?} is not an http:// URL"));
        }
        settings.endpoint = endpoint.clone();
    }
    match t.get::<String>("protocol", problems).as_deref() {
        None | Some("http/protobuf") => {}
        Some(other) => problems.push(t.path_of("protocol"), format!("{other:?}: only \"http/protobuf\" is supported")),
    }
    if let Some(ratio) = t.get::<f64>("sampling_ratio", problems) {
        if !(0.0..=1.0).contains(&ratio) {
            problems.push(t.path_of("sampling_ratio"), "must be between 0 and 1");
        }
        settings.sampling_ratio = ratio;
    }
    if let Some(name) = t.get::<String>("service_name", problems) {
        settings.service_name = name;
    }
    let resource: BTreeMap<String, String> = t.get("resource", problems).unwrap_or_default();
    settings.resource = resource.into_iter().collect();
    let interval = positive(&mut t, "export_interval_ms", settings.export_interval.as_millis() as u64, problems);
    settings.export_interval = Duration::from_millis(interval);
    t.finish(problems);
    endpoint.map(|_| settings)
}

/// `[audit]`; paths are relative to the config file's folder.
fn audit(mut t: Table<'_>, base: &Path, problems: &mut Problems) -> Option<AuditSettings> {
    let file = t.require::<String>("file", problems).map(|f| base.join(f));
    let mut settings = AuditSettings::new(file.clone().unwrap_or_default());
    if let Some(key) = t.get::<String>("signing_key", problems) {
        settings.signing_key = base.join(key);
    }
    if let Some(origin) = t.get::<String>("origin", problems) {
        if origin.is_empty() || origin.contains('\n') {
            problems.push(t.path_of("origin"), "must be one line of text, not empty");
        }
        settings.origin = origin;
    }
    let interval = positive(&mut t, "fsync_interval_ms", 1000u64, problems);
    settings.durability = match t.get::<String>("fsync", problems).as_deref() {
        None | Some("interval") => Durability::Interval(Duration::from_millis(interval)),
        Some("record") => Durability::Record,
        Some(other) => {
            problems.push(t.path_of("fsync"), format!("{other:?} is not \"record\" or \"interval\""));
            settings.durability
        }
    };
    let checkpoint = positive(&mut t, "checkpoint_interval_s", settings.checkpoint_interval.as_secs(), problems);
    settings.checkpoint_interval = Duration::from_secs(checkpoint);
    settings.rotate_bytes = positive(&mut t, "rotate_mib", settings.rotate_bytes >> 20, problems) << 20;
    settings.rotate_age = match t.get::<u64>("rotate_hours", problems) {
        None => settings.rotate_age,
        Some(0) => None,
        Some(hours) => Some(Duration::from_secs(hours * 3600)),
    };
    settings.on_error = match t.get::<String>("on_error", problems).as_deref() {
        None | Some("refuse") => OnError::Refuse,
        Some("continue") => OnError::Continue,
        Some(other) => {
            problems.push(t.path_of("on_error"), format!("{other:?} is not \"refuse\" or \"continue\""));
            OnError::Refuse
        }
    };
    settings.record_arguments = t.get("record_arguments", problems).unwrap_or(false);
    settings.result_preview_bytes = t.get("result_preview_bytes", problems).unwrap_or(0);
    if let Some(redact) = t.get::<Vec<String>>("redact", problems) {
        settings.redact = redact;
    }
    t.finish(problems);
    file.map(|_| settings)
}

fn tool_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn server_defaults() -> ServerSettings {
    ServerSettings {
        listen: "127.0.0.1:8080".parse().expect("valid"),
        path: "/mcp".into(),
        max_body_bytes: 4 << 20,
        allowed_origins: Vec::new(),
        allowed_hosts: Vec::new(),
        limits: ConnectionLimits::default(),
    }
}

/// A count or duration that must be above zero; `default` when absent.
fn positive<T: serde::de::DeserializeOwned + Copy + PartialEq + Default>(
    t: &mut Table<'_>,
    key: &'static str,
    default: T,
    problems: &mut Problems,
) -> T {
    let value = t.get::<T>(key, problems).unwrap_or(default);
    if value == T::default() {
        problems.push(t.path_of(key), "must be above zero");
    }
    value
}

fn sessions(mut t: Table<'_>, problems: &mut Problems) -> SessionSettings {
    let d = SessionSettings::default();
    let max = positive(&mut t, "max", d.max, problems);
    let settings = SessionSettings {
        idle_timeout: Duration::from_secs(positive(&mut t, "idle_timeout_s", d.idle_timeout.as_secs(), problems)),
        max,
        // Unset, it follows a lowered total rather than contradicting it.
        max_per_principal: positive(&mut t, "max_per_principal", d.max_per_principal.min(max), problems),
        history: t.get("history", problems).unwrap_or(d.history),
        max_client_requests: positive(&mut t, "max_client_requests", d.max_client_requests, problems),
        replay_bytes: positive(&mut t, "replay_kib", d.replay_bytes >> 10, problems) << 10,
    };
    if settings.max_per_principal > settings.max {
        problems.push(t.path_of("max_per_principal"), format!("must not exceed max ({})", settings.max));
    }
    t.finish(problems);
    settings
}

fn connection_limits(t: &mut Table<'_>, problems: &mut Problems) -> ConnectionLimits {
    let d = ConnectionLimits::default();
    let secs = |t: &mut Table<'_>, key, default: Duration, problems: &mut Problems| {
        Duration::from_secs(positive(t, key, default.as_secs(), problems))
    };
    let max_connections = positive(t, "max_connections", d.max_connections, problems);
    let limits = ConnectionLimits {
        header_timeout: secs(t, "header_timeout_s", d.header_timeout, problems),
        body_timeout: secs(t, "body_timeout_s", d.body_timeout, problems),
        keep_alive: secs(t, "keep_alive_s", d.keep_alive, problems),
        max_connections,
        max_connections_per_ip: positive(
            t,
            "max_connections_per_ip",
            d.max_connections_per_ip.min(max_connections),
            problems,
        ),
        max_batch: positive(t, "max_batch", d.max_batch, problems),
        max_json_depth: positive(t, "max_json_depth", d.max_json_depth, problems),
    };
    if limits.max_connections_per_ip > limits.max_connections {
        problems.push(
            t.path_of("max_connections_per_ip"),
            format!("must not exceed max_connections ({})", limits.max_connections),
        );
    }
    limits
}

fn server(mut t: Table<'_>, problems: &mut Problems) -> ServerSettings {
    let defaults = server_defaults();
    let listen = t.get::<String>("listen", problems).and_then(|s| match s.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(e) => {
            problems.push(t.path_of("listen"), format!("{s:?} is not an address like 127.0.0.1:8080: {e}"));
            None
        }
    });
    let path = t.get::<String>("path", problems).unwrap_or(defaults.path);
    if !path.starts_with('/') {
        problems.push(t.path_of("path"), "must start with '/'");
    }
    let max_body_kib = t.get::<usize>("max_body_kib", problems).unwrap_or(defaults.max_body_bytes >> 10);
    if max_body_kib == 0 {
        problems.push(t.path_of("max_body_kib"), "must be above zero");
    }
    let allowed_origins = t.get("allowed_origins", problems).unwrap_or_default();
    let allowed_hosts = t.get("allowed_hosts", problems).unwrap_or_default();
    let limits = connection_limits(&mut t, problems);
    t.finish(problems);
    ServerSettings {
        listen: listen.unwrap_or(defaults.listen),
        path,
        max_body_bytes: max_body_kib << 10,
        allowed_origins,
        allowed_hosts,
        limits,
    }
}

fn upstream(
    mut t: Table<'_>,
    base: &Path,
    names: &mut HashSet<String>,
    problems: &mut Problems,
) -> Option<UpstreamConfig> {
    let name: Option<String> = t.require("name", problems);
    if let Some(name) = &name {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            problems.push(t.path_of("name"), format!("{name:?} must be letters, digits, '-' or '_'"));
        } else if !names.insert(name.clone()) {
            problems.push(t.path_of("name"), format!("{name:?} is used by an earlier upstream"));
        }
    }
    let command: Option<String> = t.get("command", problems);
    let url: Option<String> = t.get("url", problems);
    let args: Vec<String> = t.get("args", problems).unwrap_or_default();
    let mut env: BTreeMap<String, String> = t.get("env", problems).unwrap_or_default();
    let env_from: BTreeMap<String, String> = t.get("env_from", problems).unwrap_or_default();
    for (name, from) in &env_from {
        match std::env::var(from) {
            Ok(value) => {
                env.insert(name.clone(), value);
            }
            Err(_) => {
                problems.push(t.path_of("env_from"), format!("{name}: the environment variable {from} is not set"))
            }
        }
    }
    let auth = t.table("auth", problems);
    let has_auth = auth.is_some();
    let credentials = auth.and_then(|a| credentials(a, base, problems));
    let cwd: Option<String> = t.get("cwd", problems);
    let era: Option<String> = t.get("era", problems);
    let prefix: Option<String> = t.get("prefix", problems);
    let timeout_ms: u64 = t.get("timeout_ms", problems).unwrap_or(30_000);
    let max_concurrency: usize = t.get("max_concurrency", problems).unwrap_or(32);
    let pinning = super::controls::upstream_pinning(&mut t, problems);
    if timeout_ms == 0 {
        problems.push(t.path_of("timeout_ms"), "must be above zero");
    }
    if max_concurrency == 0 {
        problems.push(t.path_of("max_concurrency"), "must be above zero");
    }
    if let Some(prefix) = &prefix
        && (prefix.is_empty() || !prefix.chars().all(tool_name_char))
    {
        problems.push(t.path_of("prefix"), "must be characters allowed in tool names (A-Z a-z 0-9 _ - .)");
    }
    let transport = match (command, url) {
        (Some(command), None) => {
            if era.is_some() {
                problems.push(t.path_of("era"), "applies to HTTP upstreams only");
            }
            if has_auth {
                problems.push(t.path_of("auth"), "applies to HTTP upstreams only (give a process env or env_from)");
            }
            let command = if command.contains('/') { base.join(&command).display().to_string() } else { command };
            // Processes start in the config's folder unless told otherwise, so
            // relative arguments mean the same wherever the gateway was started.
            // A bare config file name has an empty parent, and a process
            // cannot be started in an empty working folder.
            let cwd = base.join(cwd.unwrap_or_default());
            let cwd = if cwd.as_os_str().is_empty() { PathBuf::from(".") } else { cwd };
            Some(Transport::Stdio { command, args, env, cwd: Some(cwd) })
        }
        (None, Some(url)) => {
            let era = match era.as_deref() {
                None | Some("auto") => None,
                Some("legacy") => Some(EraChoice::Legacy),
                Some("modern") => Some(EraChoice::Modern),
                Some(other) => {
                    problems.push(t.path_of("era"), format!("{other:?} is not \"auto\", \"legacy\" or \"modern\""));
                    None
                }
            };
            for (key, set) in [
                ("args", !args.is_empty()),
                ("env", !env.is_empty()),
                ("env_from", !env_from.is_empty()),
                ("cwd", cwd.is_some()),
            ] {
                if set {
                    problems.push(t.path_of(key), "applies to command upstreams only");
                }
            }
            match url.parse::<hyper::Uri>() {
                Ok(uri) if web_url(&uri) => Some(Transport::Http { url, era, credentials }),
                Ok(_) => {
                    problems.push(t.path_of("url"), format!("{url:?} must be an http:// or https:// URL"));
                    None
                }
                Err(e) => {
                    problems.push(t.path_of("url"), format!("{url:?} is not a URL: {e}"));
                    None
                }
            }
        }
        (Some(_), Some(_)) => {
            problems.push(t.path_of("command"), "give either command or url, not both");
            None
        }
        (None, None) => {
            problems.push(t.path_of("command"), "give command (a process to spawn) or url (an HTTP endpoint)");
            None
        }
    };
    t.finish(problems);
    let (name, transport) = (name?, transport?);
    let prefix = prefix.unwrap_or_else(|| name.clone());
    Some(UpstreamConfig {
        spec: UpstreamSpec { name, transport, timeout: Duration::from_millis(timeout_ms), max_concurrency },
        prefix,
        pinning,
    })
}

/// A secret named by `<key>_env` (an environment variable) or `<key>_file`:
/// `None` if neither is given, `Some(None)` if given but unusable (the
/// problem is recorded).
fn secret(t: &mut Table<'_>, key: &'static str, base: &Path, problems: &mut Problems) -> Option<Option<Secret>> {
    let (env_key, file_key): (&'static str, &'static str) = match key {
        "bearer" => ("bearer_env", "bearer_file"),
        "value" => ("value_env", "value_file"),
        _ => ("client_secret_env", "client_secret_file"),
    };
    let from_env: Option<String> = t.get(env_key, problems);
    let from_file: Option<String> = t.get(file_key, problems);
    let value = match (from_env, from_file) {
        (Some(var), None) => match std::env::var(&var) {
            Ok(value) => Some(value),
            Err(_) => {
                problems.push(t.path_of(env_key), format!("the environment variable {var} is not set"));
                None
            }
        },
        (None, Some(file)) => match fs::read_to_string(base.join(&file)) {
            Ok(text) => Some(text.trim_end_matches(['\r', '\n']).to_owned()),
            Err(e) => {
                problems.push(t.path_of(file_key), format!("cannot read {file}: {e}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            problems.push(t.path_of(env_key), format!("give {env_key} or {file_key}, not both"));
            None
        }
        (None, None) => return None,
    };
    Some(match value {
        Some(v) if v.is_empty() => {
            problems.push(t.path_of(env_key), "the secret is empty");
            None
        }
        other => other.map(Secret::new),
    })
}

/// `[upstream.auth]`: exactly one way to authenticate.
fn credentials(mut t: Table<'_>, base: &Path, problems: &mut Problems) -> Option<Credentials> {
    let bearer = secret(&mut t, "bearer", base, problems);
    let header: Option<String> = t.get("header", problems);
    let value = secret(&mut t, "value", base, problems);
    let token_url: Option<String> = t.get("token_url", problems);
    let client_id: Option<String> = t.get("client_id", problems);
    let client_secret = secret(&mut t, "client_secret", base, problems);
    let scope: Option<String> = t.get("scope", problems);
    let audience: Option<String> = t.get("audience", problems);
    let credentials = match (bearer, header, token_url) {
        (Some(bearer), None, None) => bearer.map(|bearer| Credentials::Header {
            name: "authorization".into(),
            value: Secret::new(format!("Bearer {}", bearer.expose())),
        }),
        (None, Some(header), None) => {
            if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.push(t.path_of("header"), format!("{header:?} is not a header name"));
            }
            match value {
                Some(value) => value.map(|value| Credentials::Header { name: header.to_ascii_lowercase(), value }),
                None => {
                    problems.push(t.path_of("value_env"), "a header needs value_env or value_file");
                    None
                }
            }
        }
        (None, None, Some(token_url)) => {
            if !token_url.parse::<hyper::Uri>().is_ok_and(|u| web_url(&u)) {
                problems.push(t.path_of("token_url"), format!("{token_url:?} must be an http:// or https:// URL"));
            }
            if client_secret.is_none() {
                problems.push(
                    t.path_of("client_secret_env"),
                    "client credentials need client_secret_env or client_secret_file",
                );
            }
            match (client_id, client_secret.flatten()) {
                (Some(client_id), Some(client_secret)) => {
                    Some(Credentials::ClientCredentials { token_url, client_id, client_secret, scope, audience })
                }
                (None, _) => {
                    problems.push(t.path_of("client_id"), "is required with token_url");
                    None
                }
                _ => None,
            }
        }
        (None, None, None) => {
            problems.push(
                t.path_of("bearer_env"),
                "give bearer_env/bearer_file, header with value_env/value_file, or token_url with client credentials",
            );
            None
        }
        _ => {
            problems.push(t.path_of("bearer_env"), "give one of bearer_*, header or token_url");
            None
        }
    };
    t.finish(problems);
    credentials
}

/// An `http://` or `https://` URL with a host.
pub(super) fn web_url(uri: &hyper::Uri) -> bool {
    matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests;
