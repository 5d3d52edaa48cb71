//! Hot reload of the policy chain, without dropping a request.
//!
//! A reload reads the chain file, compiles every component (off the request
//! path, on a blocking thread; unchanged components come from the engine's
//! compiled cache), has each plugin validate its config, then runs every
//! plugin once on a synthetic call, result and listing under its limits (the
//! smoke test). Only if all of that succeeds is the live chain swapped, in
//! one atomic store: a call in flight finishes on the chain it started with,
//! and no call ever sees two versions. A failed reload keeps the old chain,
//! is logged with the file and step that failed, and is counted.
//!
//! Triggers: a change to the chain file or any component it names (the
//! parent folders are watched, because editors and deploy tools replace
//! files rather than write them; events are debounced), SIGHUP, and
//! `POST /admin/reload`.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    chain::{Chain, StepOutcome},
    config,
    engine::{Call, Engine, ListRequest, ListedTool, Principal, Target, TargetKind, ToolAnnotations},
    gateway::{Gateway, now_ms},
    metrics::{Snapshot, by},
    pack::{Pack, Trust},
};

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// What is live, and how reloads went.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Which chain version is live (1 = the one loaded at start-up).
    pub generation: u64,
    /// When it went live (ms since the epoch).
    pub loaded_at_ms: u64,
    /// Its plugins, in order.
    pub plugins: Vec<Value>,
    /// Reloads that went live.
    pub reloads: u64,
    /// Reloads refused (the old chain stayed).
    pub failures: u64,
    /// Why the last refused reload was refused.
    pub last_error: Option<String>,
    /// Components found in the on-disk compile cache and compiled anew, since
    /// start-up; `None` without a cache.
    pub compile_cache: Option<(usize, usize)>,
}

impl Status {
    /// As JSON, for `GET /admin/status` and `warden status`.
    pub fn to_json(&self) -> Value {
        json!({
            "chain": {
                "generation": self.generation,
                "loaded_at_ms": self.loaded_at_ms,
                "plugins": self.plugins,
            },
            "reloads": { "succeeded": self.reloads, "failed": self.failures, "last_error": self.last_error },
            "compile_cache": self.compile_cache.map(|(hits, misses)| json!({ "hits": hits, "misses": misses })),
        })
    }

    /// The counts, for `GET /admin/metrics`.
    pub fn snapshot(&self) -> Snapshot {
        let mut out = Snapshot::default();
        out.gauge(
            "warden_policy_chain_generation",
            "The live policy chain's version (1 is the one loaded at start-up)",
            self.generation,
        );
        out.gauge(
            "warden_policy_chain_loaded_timestamp_seconds",
            "When the live policy chain went live, in seconds since the epoch",
            self.loaded_at_ms / 1000,
        );
        out.gauge("warden_policy_chain_plugins", "Plugins in the live policy chain", self.plugins.len() as u64);
        out.counter(
            "warden_policy_reloads",
            "Policy chain reloads since start-up, by outcome (a failed one kept the old chain)",
            by("outcome", &[("succeeded", self.reloads), ("failed", self.failures)]),
        );
        if let Some((hits, misses)) = self.compile_cache {
            out.counter(
                "warden_compile_cache_lookups",
                "Components looked up in the on-disk compile cache since start-up: found, or compiled and stored",
                by("result", &[("hit", hits as u64), ("miss", misses as u64)]),
            );
        }
        out
    }
}

/// Reloads one gateway's chain from one file.
pub struct Reloader {
    gateway: Arc<Gateway>,
    engine: Engine,
    file: PathBuf,
    trust: Trust,
    /// The files the chain named when it last parsed (absolute), for the
    /// watcher.
    named: Mutex<HashSet<PathBuf>>,
    status: Mutex<Status>,
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// Each plugin: name, source, component digest, and for a pack plugin the
/// pack's name, version, publisher, digest and signer.
fn describe(chain: &Chain) -> Vec<Value> {
    let pack = |pack: &Pack| {
        json!({
            "name": pack.manifest.name,
            "version": pack.manifest.version,
            "publisher": pack.manifest.publisher,
            "sha256": pack.digest,
            "signer": pack.signer.to_string(),
        })
    };
    let plugin = |link: &crate::chain::Link| {
        json!({
            "name": link.plugin.name(),
            "source": link.source,
            "sha256": link.plugin.digest(),
            "pack": link.pack.as_deref().map(pack),
        })
    };
    chain.links().iter().map(plugin).collect()
}

impl Reloader {
    /// A reloader for `gateway`, whose live chain came from `file` and
    /// names the files `named`; every reload admits packs under the same
    /// `trust` as start-up did.
    pub fn new(gateway: Arc<Gateway>, engine: Engine, file: PathBuf, trust: Trust, named: &[PathBuf]) -> Arc<Self> {
        let live = gateway.chain();
        let status = Status {
            generation: live.generation,
            loaded_at_ms: now_ms(),
            plugins: describe(&live.chain),
            ..Status::default()
        };
        let named = named.iter().map(|f| absolute(f)).collect();
        Arc::new(Self {
            gateway,
            engine,
            file,
            trust,
            named: Mutex::new(named),
            status: Mutex::new(status),
            one_at_a_time: Default::default(),
        })
    }

    /// What is live now.
    pub fn status(&self) -> Status {
        Status { compile_cache: self.engine.disk_cache_stats(), ..self.status.lock().unwrap().clone() }
    }

    /// Reload now; returns the new generation, or why the old chain stays.
    pub async fn reload(&self, trigger: &str) -> Result<u64, String> {
        let _one = self.one_at_a_time.lock().await;
        let (engine, file, trust) = (self.engine.clone(), self.file.clone(), self.trust.clone());
        let (named, built) = tokio::task::spawn_blocking(move || {
            let text = |e: config::ConfigError| e.to_string().trim_end().to_owned();
            let spec = match config::chain::parse_file(&file, &trust) {
                Ok(spec) => spec,
                Err(e) => return (None, Err(text(e))),
            };
            let named = spec.watched_files().iter().map(|f| absolute(f)).collect();
            let built = config::chain::build(&engine, &spec).map_err(text).and_then(|chain| {
                smoke_test(&chain)?;
                Ok(chain)
            });
            (Some(named), built)
        })
        .await
        .unwrap_or_else(|e| (None, Err(format!("the reload task failed: {e}"))));
        if let Some(named) = named {
            *self.named.lock().unwrap() = named;
        }
        let mut status = self.status.lock().unwrap();
        match built {
            Ok(chain) => {
                let plugins = describe(&chain);
                self.gateway.swap_chain(chain);
                status.generation = self.gateway.chain().generation;
                status.loaded_at_ms = now_ms();
                status.plugins = plugins;
                status.reloads += 1;
                tracing::info!(trigger, generation = status.generation, file = %self.file.display(), "policy chain reloaded");
                Ok(status.generation)
            }
            Err(error) => {
                status.failures += 1;
                status.last_error = Some(error.clone());
                tracing::warn!(trigger, file = %self.file.display(), %error, "policy chain reload refused; the old chain stays");
                Err(error)
            }
        }
    }

    /// Watch the chain file, its components and its packs; reload on
    /// change. Watching lasts as long as the returned [`Watch`].
    ///
    /// Folders are watched, not files, because editors and deploy tools
    /// replace files rather than write them; and before every reload they
    /// are watched again, because a replaced folder is a new one to the
    /// kernel.
    pub fn watch(self: &Arc<Self>) -> Result<Watch, String> {
        let (events, mut changed) = mpsc::unbounded_channel::<()>();
        let watched = Arc::new(Mutex::new(self.named.lock().unwrap().clone()));
        let relevant = Arc::clone(&watched);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Only changes: a reload reads these files, and reacting to
            // those reads would reload forever.
            if !(event.kind.is_create() || event.kind.is_modify() || event.kind.is_remove()) {
                return;
            }
            let files = relevant.lock().unwrap();
            if event.paths.iter().any(|p| files.contains(p)) {
                let _ = events.send(());
            }
        })
        .map_err(|e| format!("cannot watch files: {e}"))?;
        let watch = Watch { watcher: Arc::new(Mutex::new(watcher)) };
        watch.folders_of(&watched.lock().unwrap());
        let reloader = Arc::clone(self);
        let watcher = Arc::downgrade(&watch.watcher);
        tokio::spawn(async move {
            while changed.recv().await.is_some() {
                // Debounce: wait until the files have been quiet for a moment.
                while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, changed.recv()).await {}
                let Some(watcher) = watcher.upgrade() else { break };
                let watch = Watch { watcher };
                // Watch again before reading: a folder replaced since (a
                // redeployed pack) is a new one to the kernel, and a change
                // after this read must still be seen.
                let before = watched.lock().unwrap().clone();
                watch.folders_of(&before);
                let _ = reloader.reload("file change").await;
                // The chain may name other files now. If it did not parse (a
                // refused pack, say), what was watched stays watched: fixing
                // it must reload.
                let now = reloader.named.lock().unwrap().clone();
                if now != before {
                    watch.folders_of(&now);
                    *watched.lock().unwrap() = now;
                }
            }
        });
        Ok(watch)
    }
}

/// `path` made absolute (not resolving symlinks), as watch events name files.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// File watching for one reloader; stops when dropped.
pub struct Watch {
    watcher: Arc<Mutex<notify::RecommendedWatcher>>,
}

impl Watch {
    /// Watch (again) the folder of each of `files`. One that cannot be
    /// watched (gone mid-deploy, say) is logged; the next reload tries again.
    fn folders_of(&self, files: &HashSet<PathBuf>) {
        let folders: HashSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
        let mut watcher = self.watcher.lock().unwrap();
        for folder in folders {
            if let Err(error) = watcher.watch(folder, RecursiveMode::NonRecursive) {
                tracing::warn!(folder = %folder.display(), %error, "cannot watch a folder: changes there will not reload the chain");
            }
        }
    }
}

/// Run every plugin alone on a synthetic call, result and listing. A deny is
/// fine (that is policy); a failure — trap, fuel, deadline, memory, bad
/// output — refuses the reload, even for a `fail_open` plugin.
fn smoke_test(chain: &Chain) -> Result<(), String> {
    let call = Call {
        request_id: "reload-smoke-test".into(),
        session_id: None,
        principal: Principal {
            subject: "reload-smoke-test".into(),
            tenant: Some("smoke".into()),
            roles: vec![],
            scopes: vec![],
            claims: "{}".into(),
        },
        target: Target {
            kind: TargetKind::Tool,
            server: "smoke".into(),
            name: "smoke_test".into(),
            annotations: ToolAnnotations::default(),
        },
        arguments: "{}".into(),
        history: vec![],
        timestamp_ms: now_ms(),
    };
    let result = json!({ "content": [{ "type": "text", "text": "ok" }], "isError": false }).to_string();
    let listing =
        ListRequest { request_id: "reload-smoke-test".into(), session_id: None, principal: call.principal.clone() };
    let tools = vec![ListedTool {
        server: "smoke".into(),
        name: "smoke_test".into(),
        description: Some("A tool for the reload smoke test.".into()),
        input_schema: r#"{"type":"object"}"#.into(),
        annotations: ToolAnnotations::default(),
    }];
    for link in chain.links() {
        let alone = Chain::new(vec![link.clone()]);
        let steps = [
            alone.on_call(&mut call.clone()).steps,
            alone.on_result(&call, result.clone()).steps,
            alone.on_list(&listing, &tools, now_ms()).steps,
        ];
        for step in steps.iter().flatten() {
            if let StepOutcome::Failed { error, .. } = &step.outcome {
                return Err(format!("smoke test: {error}"));
            }
        }
    }
    Ok(())
}
