//! The `warden` command line: parse arguments, set up logging, call the library.
//!
//! Exit codes: 0 success (or, for `policy test`, allow); 1 `policy test`
//! denied or asked; 2 the command could not run (unreadable input, a plugin
//! that does not load); 64 invalid configuration, with every problem listed.

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    chain::{Chain, Link},
    config::{self, ConfigError},
    engine::{Engine, EngineSettings, Limits},
    pack::Trust,
    policy_test, server,
    telemetry::{Telemetry, TelemetrySettings},
};

/// Exit code for invalid configuration (sysexits' EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a command that could not run.
pub const EXIT_ERROR: u8 = 2;

/// An MCP gateway whose policies are sandboxed WebAssembly components.
#[derive(Parser, Debug)]
#[command(name = "warden", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve MCP over HTTP (Streamable HTTP, both protocol eras).
    Serve {
        /// The gateway config.
        #[arg(long, value_name = "FILE", default_value = "warden.toml")]
        config: PathBuf,
        /// Listen here instead of the config's server.listen (e.g. 127.0.0.1:0).
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Serve the control plane here instead of the config's admin.listen
        /// (when the config has an [admin] table).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Serve one client over stdin/stdout; its API key comes from WARDEN_API_KEY.
    Stdio {
        /// The gateway config.
        #[arg(long, value_name = "FILE", default_value = "warden.toml")]
        config: PathBuf,
    },
    /// Validate configuration without serving; exits 64 listing every problem.
    Check(CheckArgs),
    /// Print the SHA-256 digest of an API key, for the config's api_key.sha256.
    HashKey {
        /// The key; read from standard input when absent.
        key: Option<String>,
    },
    /// Work with policy plugins.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Show a running gateway's live policy chain and reload counts (GET
    /// /admin/status; the credential, if any, comes from WARDEN_API_KEY and
    /// needs the config's [admin] role).
    Status {
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// Ask it to reload its chain first (POST /admin/reload).
        #[arg(long)]
        reload: bool,
    },
    /// Chargeback: calls, refusals and upstream time per tenant and upstream
    /// (GET /admin/usage; with [state] redis, every replica's together). The
    /// credential, if any, comes from WARDEN_API_KEY.
    Usage {
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// How far back, as an age (counts are kept by hour).
        #[arg(long, default_value = "24h")]
        since: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Print the JSON the gateway answered instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Switch a tool, resource or prompt pattern, a whole upstream or a
    /// plugin off, now, on every replica (POST /admin/kill). It stays off,
    /// across restarts, until `warden revive`. The credential, if any, comes
    /// from WARDEN_API_KEY.
    Kill {
        /// tool, resource, prompt, server or plugin.
        kind: String,
        /// A glob: server/name for tools and prompts, server/uri for
        /// resources, a name for servers and plugins.
        pattern: String,
        /// Why (clients see it when they are refused).
        #[arg(long)]
        reason: String,
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
    },
    /// Remove a kill switch (POST /admin/revive).
    Revive {
        /// The switch's kind, as it was set.
        kind: String,
        /// The switch's pattern, as it was set.
        pattern: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
    },
    /// List the kill switches in force (GET /admin/switches).
    Switches {
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// Print the JSON the gateway answered instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Pin tool definitions against rug pulls: lock them, see what changed,
    /// approve changes.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Calls waiting for a person's approval (with [approvals]): list them,
    /// approve or deny one (credential from WARDEN_API_KEY).
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Build, sign and verify policy packs.
    Pack {
        #[command(subcommand)]
        command: PackCommand,
    },
    /// Write a minisign key pair for signing policy packs: PREFIX.key (the
    /// secret, mode 0600) and PREFIX.pub (for the gateway's trusted_keys).
    Keygen {
        /// Where to write them (the file name without extension).
        #[arg(long, value_name = "PREFIX", default_value = "warden-pack")]
        out: PathBuf,
        /// Encrypt the secret key with the password in this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// A local token issuer, for trying JWT authentication without an
    /// identity provider (testing only).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Verify and search the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ApprovalsCommand {
    /// The calls waiting now (GET /admin/approvals).
    List {
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// Print the JSON the gateway answered.
        #[arg(long)]
        json: bool,
    },
    /// Let the waiting call ID run, once (POST /admin/approvals/approve).
    Approve {
        /// The approval's id, from `warden approvals list`.
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
    },
    /// Refuse the waiting call ID (POST /admin/approvals/deny).
    Deny {
        /// The approval's id, from `warden approvals list`.
        id: String,
        /// Why (the caller sees it).
        #[arg(long)]
        reason: Option<String>,
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
    },
}

#[derive(Subcommand, Debug)]
enum ToolsCommand {
    /// Start the config's upstreams, list their tools and write the lock
    /// file: per tool, the SHA-256 of its definition (RFC 8785), and each
    /// upstream's serverInfo version. What they serve now is trusted: review
    /// it first.
    Lock {
        /// The gateway config.
        #[arg(long, value_name = "FILE", default_value = "warden.toml")]
        config: PathBuf,
        /// Write here instead of the config's [pinning] lock.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Show the tools of a running gateway that differ from their pins,
    /// field by field (GET /admin/tools; credential from WARDEN_API_KEY).
    Diff {
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
        /// Print the JSON the gateway answered.
        #[arg(long)]
        json: bool,
    },
    /// Accept what these tools are now (server/tool names, or --all): their
    /// definitions become their pins, on every replica, and the lock file is
    /// rewritten (POST /admin/tools/approve).
    Approve {
        /// Tools to approve, as server/tool.
        tools: Vec<String>,
        /// Approve every pending tool.
        #[arg(long, conflicts_with = "tools")]
        all: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
        /// The gateway's control plane ([admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:9464")]
        url: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the hash chain and the signed checkpoints of audit log files
    /// (in any order): exit 0 with the count and the last checkpoint when
    /// intact, 1 with the first broken link and its position when not.
    Verify {
        /// The log files: the live one and any rotated ones.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The checkpoint signer's public key (the signing key's .pub).
        #[arg(long, value_name = "PUB")]
        key: PathBuf,
        /// A copy of the newest checkpoint to hold the log to (default: the
        /// <stem>.checkpoint beside the live file, if there).
        #[arg(long, value_name = "FILE")]
        checkpoint: Option<PathBuf>,
        /// Accept a log whose oldest files were removed (it must start at a
        /// record and still reach a checkpoint).
        #[arg(long)]
        partial: bool,
    },
    /// Print the decisions that match, oldest first.
    Query {
        /// The log files, oldest first.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// From this time (RFC 3339) or age (15m, 2h, 7d).
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Before this time or age.
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// Of this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Of this subject.
        #[arg(long)]
        subject: Option<String>,
        /// For tools, prompts or resource URIs matching this glob.
        #[arg(long, value_name = "GLOB")]
        tool: Option<String>,
        /// With this outcome (repeat or comma-separate: denied,result-denied).
        #[arg(long, value_delimiter = ',')]
        outcome: Vec<String>,
        /// In which this plugin ran.
        #[arg(long)]
        plugin: Option<String>,
        /// Print the records as JSON Lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep reading the last file as it grows.
        #[arg(long)]
        follow: bool,
    },
    /// Write a checkpoint signing key (mode 0600) and its public key (.pub).
    /// The gateway also creates one when [audit] signing_key names no file.
    Keygen {
        /// Where to write the signing key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The key's name (the log's origin).
        #[arg(long, default_value = "warden-audit")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Write an Ed25519 signing key (DIR/signing-key.pem) and its JWKS
    /// (DIR/jwks.json, for [[oauth.issuer]] jwks_file).
    Keygen {
        /// Where to write them.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The key id.
        #[arg(long, default_value = "local")]
        kid: String,
    },
    /// Print a token signed with a key from `keygen`.
    Sign {
        /// The signing key.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The key id (as in the JWKS).
        #[arg(long, default_value = "local")]
        kid: String,
        /// The issuer (the config's oauth.issuer.issuer).
        #[arg(long)]
        iss: String,
        /// The audience (the config's oauth.resource).
        #[arg(long)]
        aud: String,
        /// The subject.
        #[arg(long, default_value = "local-user")]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// More claims, a JSON object, e.g. '{"roles":["analyst"],"tenant":"acme"}'.
        #[arg(long, value_name = "JSON")]
        claims: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PackCommand {
    /// Make a pack from DIR/pack.toml: every component compiled, its default
    /// config validated, its SHA-256 pinned in the manifest.
    Build {
        /// The folder holding pack.toml.
        dir: PathBuf,
        /// The pack folder to write (must not exist; default: NAME-VERSION).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Sign a pack's manifest (writes manifest.toml.minisig). The pack is
    /// checked first, so a tampered pack is never signed.
    Sign {
        /// The pack folder.
        pack: PathBuf,
        /// The secret key (from `warden keygen`, or `minisign -G`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The secret key's password is in this environment variable.
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
    /// Check a pack as a gateway with require_signed would: signature by one
    /// of the keys, components matching their digests, compatible WIT
    /// version, every plugin loading with its default config.
    Verify {
        /// The pack folder.
        pack: PathBuf,
        /// A trusted public key (repeatable).
        #[arg(long = "key", value_name = "FILE", required_unless_present = "config")]
        keys: Vec<PathBuf>,
        /// Use this gateway config's trust policy instead of --key.
        #[arg(long, value_name = "FILE", conflicts_with = "keys")]
        config: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct CheckArgs {
    /// A gateway config (warden.toml), and the chain it names.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A policy chain file (policies/*.toml): parsed, compiled, and each
    /// plugin's config validated by the plugin.
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Run a plugin or a chain against a call (and result) or a listing, offline.
    ///
    /// Prints each plugin's verdict, fuel and time, then the overall verdict.
    /// Exits 0 on allow, 1 on deny or ask, 2 on error, 64 on invalid config.
    Test(PolicyTestArgs),
    /// Measure a chain against a corpus of tool results with and without
    /// prompt injections: detection, payload kept from the model, and false
    /// positives, per technique.
    ///
    /// A corpus is a folder of `*.jsonl` files, one case per line:
    /// `{"id", "technique", "text", "payload"}` (no payload: benign).
    /// Exits 0 when it ran, 2 on error, 64 on invalid config.
    Eval(PolicyEvalArgs),
}

#[derive(Args, Debug)]
struct PolicyEvalArgs {
    /// The chain file whose result hooks run.
    #[arg(long, value_name = "FILE")]
    chain: PathBuf,
    /// A corpus folder; give it more than once to join corpora.
    #[arg(long, value_name = "DIR", required = true)]
    corpus: Vec<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct PolicyTestArgs {
    /// The plugin to test: a .wasm component, or builtin:<name>.
    #[arg(long, value_name = "SOURCE", required_unless_present = "chain", conflicts_with = "chain")]
    plugin: Option<String>,
    /// The plugin's config, a JSON file (default: `{}`).
    #[arg(long, value_name = "FILE", requires = "plugin")]
    plugin_config: Option<PathBuf>,
    /// A chain file to test instead of a single plugin.
    #[arg(long, value_name = "FILE")]
    chain: Option<PathBuf>,
    /// A call file (JSON): who calls what, with which arguments and history.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["list", "vectors"], conflicts_with = "list")]
    call: Option<PathBuf>,
    /// An MCP result file (JSON) to run through on-result after the call is allowed.
    #[arg(long, value_name = "FILE", requires = "call")]
    result: Option<PathBuf>,
    /// A listing file (JSON) to run through on-list.
    #[arg(long, value_name = "FILE")]
    list: Option<PathBuf>,
    /// A folder of test vectors (`*.json`: config, call or listing, expected
    /// verdict) to run against --plugin; exits 0 only if every one passes.
    #[arg(long, value_name = "DIR", requires = "plugin", conflicts_with_all = ["call", "list", "plugin_config"])]
    vectors: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Fuel per hook call for --plugin.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Deadline per hook call for --plugin, in milliseconds.
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,
    /// Memory limit for --plugin, in MiB.
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<usize>,
}

/// Run the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Serving commands set up logging once their config (and its
    // [telemetry]) is read.
    if !matches!(cli.command, Command::Serve { .. } | Command::Stdio { .. }) {
        let _ = init_tracing(false, None);
    }
    let outcome = match cli.command {
        Command::Serve { config, listen, admin_listen } => serve(&config, listen, admin_listen),
        Command::Stdio { config } => stdio(&config),
        Command::Check(args) => check(&args),
        Command::HashKey { key } => hash_key(key),
        Command::Policy { command: PolicyCommand::Test(args) } => policy_test(&args),
        Command::Policy { command: PolicyCommand::Eval(args) } => policy_eval(&args),
        Command::Token { command } => token(command),
        Command::Status { url, reload } => status(&url, reload),
        Command::Usage { url, since, tenant, json } => usage(&url, &since, tenant.as_deref(), json),
        Command::Kill { kind, pattern, reason, url } => {
            control(&url, "kill", serde_json::json!({ "kind": kind, "pattern": pattern, "reason": reason }))
        }
        Command::Revive { kind, pattern, reason, url } => {
            control(&url, "revive", serde_json::json!({ "kind": kind, "pattern": pattern, "reason": reason }))
        }
        Command::Switches { url, json } => switches(&url, json),
        Command::Pack { command } => pack(command),
        Command::Keygen { out, password_env } => keygen(&out, password_env.as_deref()),
        Command::Audit { command } => audit(command),
        Command::Tools { command } => tools(command),
        Command::Approvals { command } => approvals(command),
    };
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            if let Some(config) = error.downcast_ref::<ConfigError>() {
                eprint!("{config}");
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Logs go to stderr; `WARDEN_LOG` (or `RUST_LOG`) sets the filter, e.g.
/// `WARDEN_LOG=warden=debug`, and `WARDEN_LOG_FORMAT` the format: `text`
/// (the default), `json` (one object per line) or `pretty` (multi-line).
/// Serving logs at info by default. With `telemetry`, spans are exported
/// too (Warden's own, at info, whatever the log filter says); the returned
/// handle flushes them at exit.
fn init_tracing(serving: bool, telemetry: Option<&TelemetrySettings>) -> anyhow::Result<Option<Telemetry>> {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let default = if serving { "info" } else { "warn" };
    let filter =
        std::env::var("WARDEN_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| default.to_owned());
    let (exporter, spans) = match telemetry {
        Some(settings) => {
            let (exporter, layer) = Telemetry::start(settings).map_err(anyhow::Error::msg)?;
            let warden = tracing_subscriber::filter::Targets::new().with_target("warden", tracing::Level::INFO);
            (Some(exporter), Some(layer.with_filter(warden)))
        }
        None => (None, None),
    };
    let format = std::env::var("WARDEN_LOG_FORMAT").unwrap_or_default();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let logs = match format.as_str() {
        "json" => logs.json().flatten_event(true).with_current_span(true).boxed(),
        "pretty" => logs.pretty().boxed(),
        _ => logs.boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(spans)
        .with(logs.with_filter(tracing_subscriber::EnvFilter::new(filter)))
        .try_init();
    if !matches!(format.as_str(), "" | "text" | "json" | "pretty") {
        tracing::warn!(format, "WARDEN_LOG_FORMAT is not text, json or pretty: using text");
    }
    Ok(exporter)
}

fn audit(command: AuditCommand) -> anyhow::Result<u8> {
    use crate::audit::{note, query, verify};
    match command {
        AuditCommand::Verify { files, key, checkpoint, partial } => {
            let text = fs::read_to_string(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let key = note::NoteVerifier::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
            match verify::verify(&files, &verify::Options { key, checkpoint, partial }) {
                Ok(report) => {
                    println!("{report}");
                    Ok(0)
                }
                Err(broken) => {
                    println!("broken: {broken}");
                    Ok(1)
                }
            }
        }
        AuditCommand::Query { files, since, until, tenant, subject, tool, outcome, plugin, json, follow } => {
            let time = |t: Option<String>| t.map(|t| query::Filter::time(&t)).transpose().map_err(anyhow::Error::msg);
            let filter = query::Filter {
                since: time(since)?,
                until: time(until)?,
                tenant,
                subject,
                target: tool.map(|t| query::Filter::target(&t)).transpose().map_err(anyhow::Error::msg)?,
                outcomes: outcome,
                plugin,
            };
            let format = if json { query::Format::Json } else { query::Format::Table };
            let mut out = std::io::stdout().lock();
            match query::query(&files, &filter, format, follow, &mut out) {
                Ok(_) => Ok(0),
                // A closed pipe (`| head`) is how following ends.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                Err(e) => Err(e.into()),
            }
        }
        AuditCommand::Keygen { out, name } => {
            let signer = note::NoteSigner::generate(&name).map_err(anyhow::Error::msg)?;
            signer.write(&out).map_err(anyhow::Error::msg)?;
            println!("wrote {} and {}", out.display(), note::public_path(&out).display());
            Ok(0)
        }
    }
}

fn engine() -> anyhow::Result<Engine> {
    Ok(Engine::new(&EngineSettings::default())?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn serve(
    config: &Path,
    listen: Option<std::net::SocketAddr>,
    admin_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<u8> {
    let mut config = server::load_config(config)?;
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    if let (Some(admin), Some(listen)) = (config.admin.as_mut(), admin_listen) {
        admin.listen = listen;
    }
    let telemetry = init_tracing(true, config.telemetry.as_ref())?;
    let served = runtime()?.block_on(async {
        let running = server::start(&config).await?;
        tokio::spawn(reload_on_sighup(Arc::clone(&running.gateway), running.reloader.clone()));
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        Ok(0)
    });
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    served
}

/// SIGHUP reloads the limits (from the config file) and the policy chain.
async fn reload_on_sighup(gateway: Arc<crate::gateway::Gateway>, reloader: Option<Arc<crate::reload::Reloader>>) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    while hangup.recv().await.is_some() {
        let _ = gateway.reload_config("SIGHUP");
        if let Some(reloader) = &reloader {
            let _ = reloader.reload("SIGHUP").await;
        }
    }
}

fn stdio(config: &Path) -> anyhow::Result<u8> {
    let config = server::load_config(config)?;
    let telemetry = init_tracing(true, config.telemetry.as_ref())?;
    let served = runtime()?.block_on(async {
        let auth = server::authenticator(&config);
        let principal = crate::transport::stdio::principal_from_env(&auth).await.map_err(anyhow::Error::msg)?;
        let built = server::build(&config).await?;
        tokio::spawn(reload_on_sighup(Arc::clone(&built.gateway), built.reloader.clone()));
        let gateway = Arc::clone(&built.gateway);
        let missing = gateway.wait_ready(Duration::from_secs(30)).await;
        if !missing.is_empty() {
            tracing::warn!(?missing, "serving without these upstreams for now");
        }
        crate::transport::stdio::serve(Arc::clone(&gateway), principal, tokio::io::stdin(), tokio::io::stdout()).await;
        gateway.shutdown().await;
        Ok(0)
    });
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    served
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn status(url: &str, reload: bool) -> anyhow::Result<u8> {
    let base = url.trim_end_matches('/');
    runtime()?.block_on(async {
        let mut ok = true;
        let mut requests = Vec::new();
        if reload {
            requests.push((hyper::Method::POST, format!("{base}/admin/reload")));
        }
        requests.push((hyper::Method::GET, format!("{base}/admin/status")));
        for (method, target) in requests {
            let (status, body) = admin_request(method, &target, None).await?;
            let text = match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(json) => serde_json::to_string_pretty(&json)?,
                Err(_) => String::from_utf8_lossy(&body).into_owned(),
            };
            println!("{text}");
            if !status.is_success() {
                eprintln!("{target}: HTTP {status}");
                ok = false;
            }
        }
        Ok(if ok { 0 } else { EXIT_ERROR })
    })
}

/// One request to the control plane, with WARDEN_API_KEY as the credential
/// if set (without one the gateway may still serve a loopback anonymous
/// principal).
async fn admin_request(
    method: hyper::Method,
    target: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(hyper::StatusCode, bytes::Bytes)> {
    let mut request = hyper::Request::builder().method(method).uri(target);
    if let Ok(key) = std::env::var("WARDEN_API_KEY") {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let bytes = match body {
        Some(body) => {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
            bytes::Bytes::from(body.to_string())
        }
        None => bytes::Bytes::new(),
    };
    let request = request.body(http_body_util::Full::new(bytes))?;
    let response = crate::upstream::http::http_client()
        .request(request)
        .await
        .with_context(|| format!("cannot reach {target}"))?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
    Ok((status, body))
}

/// One control-plane request whose answer is JSON: the answer, or `None`
/// (after printing the status and body) if the gateway refused it.
fn admin_json(
    method: hyper::Method,
    target: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<Option<serde_json::Value>> {
    let (status, answer) = runtime()?.block_on(admin_request(method, target, body))?;
    if !status.is_success() {
        eprintln!("{target}: HTTP {status}: {}", String::from_utf8_lossy(&answer).trim());
        return Ok(None);
    }
    serde_json::from_slice(&answer).context("the gateway's answer is not JSON").map(Some)
}

fn usage(url: &str, since: &str, tenant: Option<&str>, as_json: bool) -> anyhow::Result<u8> {
    humantime::parse_duration(since).with_context(|| format!("--since {since:?} is not an age like 24h or 30d"))?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("since", since);
    if let Some(tenant) = tenant {
        query.append_pair("tenant", tenant);
    }
    let target = format!("{}/admin/usage?{}", url.trim_end_matches('/'), query.finish());
    let Some(report) = admin_json(hyper::Method::GET, &target, None)? else { return Ok(EXIT_ERROR) };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    println!("{:<24} {:<20} {:>10} {:>10} {:>14}", "TENANT", "UPSTREAM", "CALLS", "REFUSED", "UPSTREAM S");
    let row = |tenant: &str, server: &str, usage: &serde_json::Value| {
        let n = |key: &str| usage[key].as_u64().unwrap_or_default();
        let tenant = if tenant.is_empty() { "(none)" } else { tenant };
        let seconds = n("upstream_us") as f64 / 1e6;
        println!("{tenant:<24} {server:<20} {:>10} {:>10} {seconds:>14.3}", n("calls"), n("refused"));
    };
    for entry in report["tenants"].as_array().into_iter().flatten() {
        let name = entry["tenant"].as_str().unwrap_or_default();
        for server in entry["servers"].as_array().into_iter().flatten() {
            row(name, server["server"].as_str().unwrap_or_default(), &server["usage"]);
        }
        row(name, "(all)", &entry["usage"]);
    }
    Ok(0)
}

/// `warden kill` / `warden revive`: one control request, its answer printed.
fn control(url: &str, action: &str, body: serde_json::Value) -> anyhow::Result<u8> {
    let target = format!("{}/admin/{action}", url.trim_end_matches('/'));
    let Some(answer) = admin_json(hyper::Method::POST, &target, Some(&body))? else { return Ok(EXIT_ERROR) };
    match action {
        "kill" => {
            let off: Vec<&str> =
                answer["now_off"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            let switch = &answer["switch"];
            let id = format!(
                "{}:{}",
                switch["kind"].as_str().unwrap_or_default(),
                switch["pattern"].as_str().unwrap_or_default()
            );
            println!("kill switch {id} set; now off:");
            match off.is_empty() {
                true => println!("(nothing it names is served now; it applies to what appears later)"),
                false => off.iter().for_each(|name| println!("  {name}")),
            }
        }
        _ => println!(
            "revived: {}:{}",
            answer["revived"]["kind"].as_str().unwrap_or_default(),
            answer["revived"]["pattern"].as_str().unwrap_or_default()
        ),
    }
    Ok(0)
}

fn tools(command: ToolsCommand) -> anyhow::Result<u8> {
    match command {
        ToolsCommand::Lock { config, out } => {
            let config = server::load_config(&config)?;
            let Some(out) = out.or_else(|| config.pinning.as_ref().map(|p| p.lock.clone())) else {
                bail!("{}: no [pinning] lock to write; give --out", config.file.display());
            };
            let lock = runtime()?.block_on(server::lock_tools(&config))?;
            lock.write(&out).with_context(|| format!("cannot write {}", out.display()))?;
            let tools: usize = lock.upstreams.values().map(|u| u.tools.len()).sum();
            println!("locked {tools} tools of {} upstreams in {}", lock.upstreams.len(), out.display());
            Ok(0)
        }
        ToolsCommand::Diff { url, json } => {
            let target = format!("{}/admin/tools", url.trim_end_matches('/'));
            let Some(answer) = admin_json(hyper::Method::GET, &target, None)? else { return Ok(EXIT_ERROR) };
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(0);
            }
            for version in answer["versions"].as_array().into_iter().flatten() {
                println!("{}: server version {} (locked {})", version["server"], version["now"], version["locked"]);
            }
            let findings = answer["findings"].as_array().cloned().unwrap_or_default();
            if findings.is_empty() {
                println!("every tool matches its pin");
            }
            for finding in &findings {
                print_finding(finding);
            }
            Ok(0)
        }
        ToolsCommand::Approve { tools, all, reason, url } => {
            let target = format!("{}/admin/tools/approve", url.trim_end_matches('/'));
            let body = match all {
                true => serde_json::json!({ "all": true, "reason": reason }),
                false if tools.is_empty() => bail!("name the tools to approve (server/tool), or give --all"),
                false => serde_json::json!({ "tools": tools, "reason": reason }),
            };
            let Some(answer) = admin_json(hyper::Method::POST, &target, Some(&body))? else { return Ok(EXIT_ERROR) };
            for finding in answer["approved"].as_array().into_iter().flatten() {
                println!(
                    "approved {}/{} ({})",
                    text(&finding["server"]),
                    text(&finding["tool"]),
                    text(&finding["change"])
                );
            }
            if let Some(error) = answer["lock_error"].as_str() {
                eprintln!("warning: {error}; the approvals hold in the gateway's state store");
            }
            Ok(0)
        }
    }
}

fn approvals(command: ApprovalsCommand) -> anyhow::Result<u8> {
    let (url, action, id, reason) = match command {
        ApprovalsCommand::List { url, json } => {
            let target = format!("{}/admin/approvals", url.trim_end_matches('/'));
            let Some(answer) = admin_json(hyper::Method::GET, &target, None)? else { return Ok(EXIT_ERROR) };
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
                return Ok(0);
            }
            let pending = answer["pending"].as_array().cloned().unwrap_or_default();
            if pending.is_empty() {
                println!("no call is waiting for approval");
            }
            for ask in &pending {
                println!(
                    "{}  {} wants {}/{} (until {})\n    {} asks: {}\n    arguments: {}",
                    text(&ask["id"]),
                    text(&ask["subject"]),
                    text(&ask["server"]),
                    text(&ask["target"]),
                    text(&ask["expires"]),
                    text(&ask["plugin"]),
                    text(&ask["prompt"]),
                    text(&ask["arguments"]),
                );
            }
            return Ok(0);
        }
        ApprovalsCommand::Approve { id, reason, url } => (url, "approve", id, reason),
        ApprovalsCommand::Deny { id, reason, url } => (url, "deny", id, reason),
    };
    let target = format!("{}/admin/approvals/{action}", url.trim_end_matches('/'));
    let body = serde_json::json!({ "id": id, "reason": reason });
    let Some(answer) = admin_json(hyper::Method::POST, &target, Some(&body))? else { return Ok(EXIT_ERROR) };
    let ask = &answer["answered"];
    let verb = if action == "approve" { "approved" } else { "denied" };
    println!("{verb}: {} wants {}/{}", text(&ask["subject"]), text(&ask["server"]), text(&ask["target"]));
    Ok(0)
}

/// A JSON string's text ("" if it is not one).
fn text(value: &serde_json::Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// One pin finding, as `warden tools diff` shows it: a heading, then each
/// changed field as it was (-) and is (+).
fn print_finding(finding: &serde_json::Value) {
    let what = match text(&finding["change"]) {
        "renamed" => format!("renamed from {}", text(&finding["renamed_from"])),
        "unpinned" => "not in the lock file".to_owned(),
        change => change.to_owned(),
    };
    let held = if finding["held"] == serde_json::json!(true) { "held" } else { "flagged" };
    println!("{}/{}: {what} ({held})", text(&finding["server"]), text(&finding["tool"]));
    for change in finding["diff"].as_array().into_iter().flatten() {
        println!("  {}:", text(&change["field"]));
        for (sign, key) in [("-", "was"), ("+", "now")] {
            let value = &change[key];
            let shown = match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Null => "(none)".to_owned(),
                other => other.to_string(),
            };
            for line in shown.lines() {
                println!("    {sign} {line}");
            }
        }
    }
}

/// `warden switches`: the kill switches in force.
fn switches(url: &str, as_json: bool) -> anyhow::Result<u8> {
    let target = format!("{}/admin/switches", url.trim_end_matches('/'));
    let Some(answer) = admin_json(hyper::Method::GET, &target, None)? else { return Ok(EXIT_ERROR) };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(0);
    }
    println!("{:<36} {:<20} {:<26} REASON", "SWITCH", "BY", "SINCE");
    for switch in answer["switches"].as_array().into_iter().flatten() {
        let text = |key: &str| switch[key].as_str().unwrap_or_default().to_owned();
        let id = format!("{}:{}", text("kind"), text("pattern"));
        println!("{id:<36} {:<20} {:<26} {}", text("by"), text("at"), text("reason"));
    }
    Ok(0)
}

fn token(command: TokenCommand) -> anyhow::Result<u8> {
    match command {
        TokenCommand::Keygen { dir, kid } => {
            let generated = crate::token::keygen(&dir, &kid)?;
            println!("wrote {} and {}", generated.key.display(), generated.jwks.display());
            println!(
                "\n[[oauth.issuer]]\nissuer = \"local\"\njwks_file = \"{}\"\nalgorithms = [\"EdDSA\"]",
                generated.jwks.display()
            );
        }
        TokenCommand::Sign { key, kid, iss, aud, sub, ttl, claims } => {
            let extra = match claims {
                Some(text) => serde_json::from_str(&text).context("--claims is not JSON")?,
                None => serde_json::Value::Null,
            };
            let claims = crate::token::Claims { issuer: &iss, audience: &aud, subject: &sub, ttl_s: ttl, extra };
            println!("{}", crate::token::sign(&key, &kid, &claims)?);
        }
    }
    Ok(0)
}

/// The value of the environment variable named `var`, if a name is given.
fn password(var: Option<&str>) -> anyhow::Result<Option<String>> {
    var.map(|var| std::env::var(var).with_context(|| format!("environment variable {var} is not set"))).transpose()
}

fn keygen(out: &Path, password_env: Option<&str>) -> anyhow::Result<u8> {
    let files = crate::pack::keygen(out, password(password_env)?)?;
    println!("wrote {} (secret) and {} (public)", files.secret.display(), files.public.display());
    println!("key id {}", files.key_id);
    println!("\n[policy]\nrequire_signed = true\ntrusted_keys = [\"{}\"]", files.public.display());
    Ok(0)
}

fn pack(command: PackCommand) -> anyhow::Result<u8> {
    match command {
        PackCommand::Build { dir, out } => {
            let built = crate::pack::build(&engine()?, &dir, out.as_deref())?;
            let manifest = &built.manifest;
            println!("built {}@{} in {}", manifest.name, manifest.version, built.dir.display());
            for plugin in &manifest.plugins {
                println!("  {:<20} sha256:{}", plugin.name, plugin.sha256);
            }
            println!("pack sha256:{}  (WIT {}; unsigned: run `warden pack sign`)", built.digest, manifest.wit);
        }
        PackCommand::Sign { pack, key, password_env } => {
            let signed = crate::pack::sign(&pack, &key, password(password_env.as_deref())?)?;
            println!("signed {} with key {}: {}", signed.pack, signed.key_id, signed.file.display());
            println!("pack sha256:{}", signed.pack.digest);
        }
        PackCommand::Verify { pack, keys, config } => {
            let trust = match config {
                Some(config) => crate::config::gateway::parse_file(&config)?.trust,
                None => Trust {
                    require_signed: true,
                    keys: keys
                        .iter()
                        .map(|k| crate::pack::TrustedKey::from_file(k))
                        .collect::<Result<_, _>>()
                        .map_err(anyhow::Error::msg)?,
                    ..Trust::default()
                },
            };
            let opened = crate::pack::Pack::open(&pack, &trust)?;
            let engine = engine()?;
            for plugin in &opened.manifest.plugins {
                let bytes = opened.component(&plugin.name).map_err(anyhow::Error::msg)?;
                engine
                    .load(&plugin.name, &bytes, Limits::default())
                    .and_then(|p| p.validate_config(&plugin.config_json()))
                    .with_context(|| format!("plugin {} does not load", plugin.name))?;
            }
            let manifest = &opened.manifest;
            println!("{}: ok", pack.display());
            println!("  pack       {}@{} by {}", manifest.name, manifest.version, manifest.publisher);
            println!("  sha256     {}", opened.digest);
            println!("  signed by  {}", opened.signer);
            println!("  WIT        {}", manifest.wit);
            for plugin in &manifest.plugins {
                println!("  plugin     {:<20} sha256:{}", plugin.name, plugin.sha256);
            }
        }
    }
    Ok(0)
}

fn hash_key(key: Option<String>) -> anyhow::Result<u8> {
    let key = match key {
        Some(key) => key,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    if key.trim().is_empty() {
        bail!("the key is empty");
    }
    println!("{}", crate::auth::hash_key(&key));
    Ok(0)
}

fn check(args: &CheckArgs) -> anyhow::Result<u8> {
    if let Some(path) = &args.config {
        let config = server::load_config(path)?;
        if let Some(chain) = &config.chain {
            config::chain::load(&Engine::new(&config.engine)?, chain, &config.trust)?;
        }
        println!(
            "{}: ok ({} upstreams, {} API keys, chain {})",
            path.display(),
            config.upstreams.len(),
            config.api_keys.len(),
            config.chain.as_ref().map(|c| c.display().to_string()).unwrap_or_else(|| "none".into())
        );
        return Ok(0);
    }
    let path = args.chain.as_ref().expect("clap requires one of --config and --chain");
    let chain = config::chain::load(&engine()?, path, &Trust::default())?;
    println!("{}: ok ({} plugins)", path.display(), chain.links().len());
    for link in chain.links() {
        let hooks: Vec<&str> = [
            crate::engine::Hook::OnCall,
            crate::engine::Hook::OnResult,
            crate::engine::Hook::OnList,
            crate::engine::Hook::OnCatalog,
        ]
        .into_iter()
        .filter(|h| link.plugin.hooks().has(*h))
        .map(|h| h.as_str())
        .collect();
        println!("  {:<20} {:<30} {}", link.plugin.name(), link.source, hooks.join(", "));
    }
    Ok(0)
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn parse_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    serde_json::from_value(read_json(path)?).with_context(|| format!("{} is not a valid test file", path.display()))
}

fn policy_test(args: &PolicyTestArgs) -> anyhow::Result<u8> {
    let engine = engine()?;
    let chain = match (&args.chain, &args.plugin) {
        (Some(file), _) => config::chain::load(&engine, file, &Trust::default())?,
        (None, Some(source)) if args.vectors.is_some() => return run_vectors(&engine, source, args),
        (None, Some(source)) => single_plugin(&engine, source, args)?,
        (None, None) => bail!("give --plugin or --chain"),
    };
    let report = match (&args.call, &args.list) {
        (Some(call), _) => {
            let result = args.result.as_deref().map(read_json).transpose()?;
            policy_test::run_call(&chain, parse_json(call)?, result)
        }
        (None, Some(list)) => policy_test::run_list(&chain, parse_json(list)?),
        (None, None) => bail!("give --call or --list"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(report.verdict.exit_code())
}

fn policy_eval(args: &PolicyEvalArgs) -> anyhow::Result<u8> {
    let engine = engine()?;
    let chain = config::chain::load(&engine, &args.chain, &Trust::default())?;
    let mut cases = Vec::new();
    for dir in &args.corpus {
        cases.extend(policy_test::eval::load(dir).map_err(anyhow::Error::msg)?);
    }
    let report = policy_test::eval::run(&chain, &cases);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(0)
}

/// `policy test --vectors`: every vector in the folder against one plugin.
fn run_vectors(engine: &Engine, source: &str, args: &PolicyTestArgs) -> anyhow::Result<u8> {
    let dir = args.vectors.as_deref().expect("called with --vectors");
    let files = policy_test::vectors::files(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if files.is_empty() {
        bail!("{} holds no test vectors (*.json)", dir.display());
    }
    let plugin = load_plugin(engine, source, args)?;
    let mut outcomes = Vec::new();
    for file in &files {
        outcomes.push(policy_test::vectors::run(&plugin, file).map_err(anyhow::Error::msg)?);
    }
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    if args.json {
        let report: Vec<_> = outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "vector": o.name, "about": o.about, "passed": o.passed(),
                    "mismatches": o.mismatches, "fuel": o.fuel, "micros": o.micros,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for o in &outcomes {
            let status = if o.passed() { "ok  " } else { "FAIL" };
            println!("{status} {:<40} fuel {:>10}  {:>8.3} ms  {}", o.name, o.fuel, o.micros as f64 / 1000.0, o.about);
            for mismatch in &o.mismatches {
                println!("       {mismatch}");
            }
        }
        println!("{} passed, {failed} failed", outcomes.len() - failed);
    }
    Ok(u8::from(failed > 0))
}

/// Compile the plugin `source` names (a file or `builtin:<name>`) under the
/// limits the command line gives, or the defaults.
fn load_plugin(engine: &Engine, source: &str, args: &PolicyTestArgs) -> anyhow::Result<crate::engine::Plugin> {
    let (name, bytes) = match source.strip_prefix("builtin:") {
        Some(name) => {
            let bytes = crate::builtin::bytes(name).with_context(|| format!("no builtin plugin {name:?}"))?;
            (name.to_owned(), bytes.to_vec())
        }
        None => {
            let path = PathBuf::from(source);
            let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_owned();
            (name, bytes)
        }
    };
    let defaults = Limits::default();
    let limits = Limits {
        fuel: args.fuel.unwrap_or(defaults.fuel),
        deadline: args.deadline_ms.map(Duration::from_millis).unwrap_or(defaults.deadline),
        memory_bytes: args.memory_mib.map(|m| m << 20).unwrap_or(defaults.memory_bytes),
        ..defaults
    };
    Ok(engine.load(&name, &bytes, limits)?)
}

fn single_plugin(engine: &Engine, source: &str, args: &PolicyTestArgs) -> anyhow::Result<Chain> {
    let config_json = match &args.plugin_config {
        Some(path) => read_json(path)?.to_string(),
        None => "{}".to_owned(),
    };
    let plugin = load_plugin(engine, source, args)?;
    if let Err(e) = plugin.validate_config(&config_json) {
        let mut problems = config::Problems::new(args.plugin_config.clone().unwrap_or_else(|| "<empty config>".into()));
        problems.push("", e);
        return Err(problems.into_error().into());
    }
    Ok(Chain::new(vec![Link { plugin, config_json, fail_open: false, source: source.to_owned(), pack: None }]))
}
