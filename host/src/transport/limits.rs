//! Bounds on what clients can hold, so that no caller can starve the rest:
//! open connections (in all and per client address), the time a connection
//! may take to send a request head or sit idle, and the counters that
//! `/admin/metrics` reports for every refusal.
//!
//! The time bounds are kept here rather than left to hyper: hyper's header
//! timer also starts when a kept-alive connection goes idle, so it cannot
//! tell a slow request head (short bound) from a quiet client between
//! requests (longer bound). A connection is *busy* from the moment hyper
//! hands it a request until the response body has been sent or dropped;
//! only a connection that is not busy can time out.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
};

use super::{Body, ConnectionLimits};
use crate::{
    mcp::{RpcError, code, jsonrpc},
    metrics::{Snapshot, by, one},
};

/// Counters of what the bounds refused or ended, for `/admin/metrics`.
#[derive(Default)]
pub(crate) struct Metrics {
    pub connections_open: AtomicU64,
    pub refused_total: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub header_timeouts: AtomicU64,
    pub idle_closed: AtomicU64,
    pub body_timeouts: AtomicU64,
    pub batches_refused: AtomicU64,
    pub too_deep: AtomicU64,
    pub sessions_open: AtomicU64,
    pub sessions_refused: AtomicU64,
    pub sessions_evicted: AtomicU64,
    pub client_requests_refused: AtomicU64,
    pub resumes_refused: AtomicU64,
}

/// Add one to a counter.
pub(crate) fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// The counters, for `/admin/metrics`.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = Snapshot::default();
        out.gauge("warden_connections_open", "Client connections open now", get(&self.connections_open));
        out.counter(
            "warden_connections_refused",
            "Client connections answered 503 and closed, by the limit they hit",
            by(
                "limit",
                &[
                    ("server.max_connections", get(&self.refused_total)),
                    ("server.max_connections_per_ip", get(&self.refused_per_ip)),
                ],
            ),
        );
        out.counter(
            "warden_connections_timed_out",
            "Client connections closed by a time bound: a slow request head or body, or idleness",
            by(
                "limit",
                &[
                    ("server.header_timeout_s", get(&self.header_timeouts)),
                    ("server.body_timeout_s", get(&self.body_timeouts)),
                    ("server.keep_alive_s", get(&self.idle_closed)),
                ],
            ),
        );
        out.counter(
            "warden_requests_refused",
            "Requests refused for their shape, by the limit they hit",
            by(
                "limit",
                &[("server.max_batch", get(&self.batches_refused)), ("server.max_json_depth", get(&self.too_deep))],
            ),
        );
        out.gauge("warden_sessions_open", "Legacy-era sessions open now", get(&self.sessions_open));
        out.counter(
            "warden_sessions_limited",
            "New sessions refused because the gateway holds sessions.max, and sessions ended because their \
             identity opened more than sessions.max_per_principal",
            vec![
                (vec![("limit", "sessions.max".into()), ("action", "refused".into())], get(&self.sessions_refused)),
                (
                    vec![("limit", "sessions.max_per_principal".into()), ("action", "ended_own_oldest".into())],
                    get(&self.sessions_evicted),
                ),
            ],
        );
        out.counter(
            "warden_client_requests_refused",
            "Upstream requests to a client (sampling, elicitation, roots) refused because \
             sessions.max_client_requests were already waiting for it",
            one(get(&self.client_requests_refused)),
        );
        out.counter(
            "warden_stream_resumes_refused",
            "Last-Event-ID resumptions refused because the events after it were no longer kept (sessions.replay_kib)",
            one(get(&self.resumes_refused)),
        );
        out
    }
}

/// The JSON-RPC error for a bound that was reached: code -32015, with the
/// setting that bounds it in `data.limit`.
pub(crate) fn overloaded(message: impl Into<String>, limit: &str, value: usize) -> RpcError {
    RpcError::new(code::OVERLOADED, message).with_data(json!({ "limit": limit, "value": value }))
}

/// Open connections, in all and per client address.
pub(crate) struct Admission {
    limits: ConnectionLimits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    metrics: Arc<Metrics>,
}

/// A connection's place among the open ones; dropping it frees the place.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self { limits, open: AtomicUsize::new(0), per_ip: Mutex::default(), metrics })
    }

    /// A place for a connection from `ip`, or the error to answer it with.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, RpcError> {
        let mut per_ip = self.per_ip.lock().unwrap();
        if self.open.load(Ordering::Relaxed) >= self.limits.max_connections {
            count(&self.metrics.refused_total);
            let max = self.limits.max_connections;
            return Err(overloaded(
                format!("the gateway has its maximum of {max} connections open; try again shortly"),
                "server.max_connections",
                max,
            ));
        }
        let mine = per_ip.entry(ip).or_default();
        if *mine >= self.limits.max_connections_per_ip {
            count(&self.metrics.refused_per_ip);
            let max = self.limits.max_connections_per_ip;
            return Err(overloaded(
                format!("{ip} has its maximum of {max} connections open; reuse one, or try again shortly"),
                "server.max_connections_per_ip",
                max,
            ));
        }
        *mine += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot { admission: Arc::clone(self), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.admission.per_ip.lock().unwrap();
        if let Some(mine) = per_ip.get_mut(&self.ip) {
            *mine -= 1;
            if *mine == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        self.admission.metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answer a refused connection with a 503 and close it. Bounded in time, so
/// a flood of refused connections holds nothing for long.
pub(crate) async fn refuse(mut stream: TcpStream, error: RpcError) {
    let body = jsonrpc::error_response(Value::Null, &error).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent, so closing does not reset the
        // connection before it has read the answer.
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// What a connection is doing, for its time bounds. Times are milliseconds
/// since the connection opened.
pub(crate) struct Activity {
    opened: Instant,
    /// Requests in flight (handler running or response body being sent).
    busy: AtomicUsize,
    /// When the connection last became idle.
    idle_since: AtomicU64,
    /// When the first byte arrived since then (`u64::MAX`: none yet).
    first_byte: AtomicU64,
}

/// Why a connection was closed by its time bounds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// Part of a request head arrived, the rest did not in time.
    Header,
    /// Nothing arrived for the keep-alive time.
    Idle,
}

impl Activity {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(u64::MAX),
        })
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A request arrived: busy until the returned guard is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    fn read(&self) {
        if self.busy.load(Ordering::Acquire) == 0 && self.first_byte.load(Ordering::Relaxed) == u64::MAX {
            let _ = self.first_byte.compare_exchange(u64::MAX, self.now(), Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// Whether an idle connection has passed a time bound.
    pub(crate) fn expired(&self, limits: &ConnectionLimits) -> Option<Expired> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = self.now();
        match self.first_byte.load(Ordering::Acquire) {
            u64::MAX => (now.saturating_sub(self.idle_since.load(Ordering::Acquire))
                >= limits.keep_alive.as_millis() as u64)
                .then_some(Expired::Idle),
            first => (now.saturating_sub(first) >= limits.header_timeout.as_millis() as u64).then_some(Expired::Header),
        }
    }

    /// How often to check [`Activity::expired`].
    pub(crate) fn check_every(limits: &ConnectionLimits) -> Duration {
        (limits.header_timeout.min(limits.keep_alive) / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// A request in flight on a connection.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.first_byte.store(u64::MAX, Ordering::Release);
        activity.idle_since.store(activity.now(), Ordering::Release);
        activity.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy until it is sent or dropped.
pub(crate) struct Tracked {
    body: Body,
    _busy: Busy,
}

impl Tracked {
    pub(crate) fn new(body: Body, busy: Busy) -> Self {
        Self { body, _busy: busy }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client connection that notes when bytes arrive.
pub(crate) struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub(crate) fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        Self { stream, activity }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(40),
            keep_alive: Duration::from_millis(120),
            max_connections: 3,
            max_connections_per_ip: 2,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn connections_are_bounded_in_all_and_per_address() {
        let metrics = Arc::new(Metrics::default());
        let admission = Admission::new(limits(), Arc::clone(&metrics));
        let (a, b) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        let refused = admission.admit(a).err().unwrap();
        assert_eq!(refused.code, code::OVERLOADED);
        assert_eq!(refused.data.unwrap()["limit"], "server.max_connections_per_ip");
        let _third = admission.admit(b).unwrap();
        let refused = admission.admit(b).err().unwrap();
        assert_eq!(refused.data.unwrap()["limit"], "server.max_connections");
        drop(first);
        let _again = admission.admit(a).expect("a closed connection frees its place");
        assert_eq!(metrics.refused_per_ip.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.refused_total.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.connections_open.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_busy_connection_never_times_out_and_an_idle_one_does() {
        let limits = limits();
        let activity = Activity::new();
        let busy = activity.begin();
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(activity.expired(&limits), None, "busy: a response is being produced or sent");
        drop(busy);
        assert_eq!(activity.expired(&limits), None, "idle only just now");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(activity.expired(&limits), None, "past the header time, but nothing arrived");
        activity.read();
        assert_eq!(activity.expired(&limits), None);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(activity.expired(&limits), Some(Expired::Header), "a head started and did not finish");
        let busy = activity.begin();
        drop(busy);
        std::thread::sleep(Duration::from_millis(130));
        assert_eq!(activity.expired(&limits), Some(Expired::Idle));
    }
}
