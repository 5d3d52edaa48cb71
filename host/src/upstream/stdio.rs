//! A stdio upstream: a child process, supervised.
//!
//! The process is spawned with only the configured environment (plus `PATH`,
//! `HOME`, `LANG` and `TMPDIR`), so the gateway's own secrets and the
//! client's credentials never reach it. Its stderr goes to the gateway's log.
//! When it exits, calls in flight fail with a clear error and it is restarted
//! with exponential backoff (100 ms, doubling to 30 s; reset after 30 s up).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::{
    codec::{FramedRead, LinesCodec},
    sync::CancellationToken,
};

use crate::mcp;

use super::{
    CallHooks, ServerInfo, Transport, UpstreamError, UpstreamEvent, UpstreamSpec, initialize_params, parse_initialize,
    peer::Peer, rpc_error,
};

/// Longest line (one JSON-RPC message) accepted from a process.
const MAX_LINE: usize = 64 << 20;
/// Environment variables passed through from the gateway.
const PASSED_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TMPDIR"];
/// How long `initialize` may take.
const INIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping process gets after its stdin closes.
const GRACE: Duration = Duration::from_secs(2);
/// How long a call waits for a restarting upstream before giving up.
const RESTART_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
enum State {
    Starting { attempt: u32, last_error: Option<String> },
    Ready { peer: Arc<Peer>, info: ServerInfo },
    Stopped,
}

/// The supervised process behind a stdio upstream.
pub(crate) struct StdioLink {
    name: Arc<str>,
    state: watch::Receiver<State>,
    stop: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl StdioLink {
    pub(crate) fn start(spec: &UpstreamSpec, events: mpsc::UnboundedSender<UpstreamEvent>) -> Self {
        let (tx, state) = watch::channel(State::Starting { attempt: 0, last_error: None });
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(spec.clone(), tx, events, stop.clone()));
        Self { name: spec.name.as_str().into(), state, stop, supervisor: Mutex::new(Some(supervisor)) }
    }

    pub(crate) fn has_failed(&self) -> bool {
        matches!(&*self.state.borrow(), State::Starting { attempt, .. } if *attempt > 0)
    }

    pub(crate) fn server_info(&self) -> Option<ServerInfo> {
        match &*self.state.borrow() {
            State::Ready { info, .. } => Some(info.clone()),
            _ => None,
        }
    }

    /// The peer, once ready. A first start is waited for (within `timeout`);
    /// a restart after a crash only briefly, so callers learn fast.
    async fn peer(&self, timeout: Duration) -> Result<Arc<Peer>, UpstreamError> {
        let mut state = self.state.clone();
        let wait = match &*state.borrow() {
            State::Starting { attempt: 0, .. } => timeout,
            _ => RESTART_WAIT.min(timeout),
        };
        let ready = tokio::time::timeout(wait, state.wait_for(|s| !matches!(s, State::Starting { .. }))).await;
        let unavailable = |reason: String| UpstreamError::Unavailable { upstream: self.name.to_string(), reason };
        let current = match ready {
            Ok(Ok(state)) => state.clone(),
            _ => self.state.borrow().clone(),
        };
        match current {
            State::Ready { peer, .. } => Ok(peer),
            State::Stopped => Err(unavailable("the gateway is shutting down".into())),
            State::Starting { last_error, .. } => {
                Err(unavailable(last_error.unwrap_or_else(|| "the process has not started yet".into())))
            }
        }
    }

    pub(crate) async fn request(
        &self,
        method: &str,
        params: Value,
        hooks: CallHooks,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let peer = self.peer(timeout).await?;
        let mut params = params;
        mcp::strip_modern_meta(&mut params);
        peer.request(method, params, hooks).await.map_err(|e| rpc_error(&self.name, e))
    }

    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        let supervisor = self.supervisor.lock().unwrap().take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }
}

async fn supervise(
    spec: UpstreamSpec,
    state: watch::Sender<State>,
    events: mpsc::UnboundedSender<UpstreamEvent>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0;
    while !stop.is_cancelled() {
        let last_error = match launch(&spec, &events).await {
            Ok(mut running) => {
                let started = Instant::now();
                tracing::info!(upstream = %spec.name, pid = running.child.id(), "upstream process ready");
                state.send_replace(State::Ready { peer: Arc::clone(&running.peer), info: running.info.clone() });
                let _ = events.send(UpstreamEvent::Connected { upstream: spec.name.clone() });
                let reason = tokio::select! {
                    status = running.child.wait() => {
                        let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                        format!("the process exited ({status})")
                    }
                    _ = stop.cancelled() => {
                        running.stop().await;
                        break;
                    }
                };
                tracing::warn!(upstream = %spec.name, %reason, "upstream process died; restarting");
                running.peer.fail_all(&format!("upstream {} failed during the call: {reason}", spec.name));
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
                reason
            }
            Err(error) => {
                tracing::error!(upstream = %spec.name, %error, "cannot start upstream process");
                error
            }
        };
        attempt += 1;
        state.send_replace(State::Starting { attempt, last_error: Some(last_error) });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    state.send_replace(State::Stopped);
}

/// A started, initialized process and the tasks serving it.
struct Running {
    child: Child,
    peer: Arc<Peer>,
    info: ServerInfo,
    writer: JoinHandle<()>,
}

impl Running {
    /// Close stdin, give the process a moment to exit, then kill it.
    async fn stop(mut self) {
        self.writer.abort();
        let _ = self.writer.await;
        if tokio::time::timeout(GRACE, self.child.wait()).await.is_err() {
            tracing::warn!(pid = self.child.id(), "upstream did not exit after stdin closed; killing it");
            let _ = self.child.kill().await;
        }
    }
}

async fn launch(spec: &UpstreamSpec, events: &mpsc::UnboundedSender<UpstreamEvent>) -> Result<Running, String> {
    let Transport::Stdio { command, args, env, cwd } = &spec.transport else {
        unreachable!("a stdio link for a non-stdio upstream")
    };
    let mut cmd = Command::new(command);
    cmd.args(args)
        .env_clear()
        .envs(PASSED_ENV.iter().filter_map(|k| std::env::var(k).ok().map(|v| (*k, v))))
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    let (stdin, stdout, stderr) =
        (child.stdin.take().expect("piped"), child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let name: Arc<str> = spec.name.as_str().into();

    let (out, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let peer = Arc::new(Peer::new(Arc::clone(&name), out, events.clone()));

    let writer = tokio::spawn(async move {
        let mut stdin = stdin;
        while let Some(message) = outgoing.recv().await {
            let mut line = message.to_string().into_bytes();
            line.push(b'\n');
            if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                break;
            }
        }
    });
    let reader_peer = Arc::clone(&peer);
    let reader_name = Arc::clone(&name);
    tokio::spawn(async move {
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE));
        while let Some(line) = lines.next().await {
            match line {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => match serde_json::from_str::<Value>(&line) {
                    Ok(value) => reader_peer.incoming(value),
                    Err(e) => {
                        tracing::warn!(upstream = %reader_name, error = %e, "upstream wrote a line that is not JSON")
                    }
                },
                Err(e) => {
                    tracing::warn!(upstream = %reader_name, error = %e, "cannot read from upstream; closing");
                    break;
                }
            }
        }
    });
    let stderr_name = Arc::clone(&name);
    tokio::spawn(async move {
        let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(64 << 10));
        while let Some(Ok(line)) = lines.next().await {
            tracing::info!(upstream = %stderr_name, "{line}");
        }
    });

    let init =
        tokio::time::timeout(INIT_TIMEOUT, peer.request("initialize", initialize_params(), CallHooks::default()));
    let info = match init.await {
        Ok(Ok(result)) => parse_initialize(&result).map_err(|e| format!("initialize failed: {e}"))?,
        Ok(Err(e)) => return Err(format!("initialize failed: {e}")),
        Err(_) => return Err(format!("no answer to initialize within {} s", INIT_TIMEOUT.as_secs())),
    };
    peer.notify("notifications/initialized", serde_json::json!({}));
    Ok(Running { child, peer, info, writer })
}
