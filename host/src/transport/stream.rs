//! Server-sent event streams that outlive a connection.
//!
//! A [`Stream`] is a sequence of JSON-RPC messages with ids `<stream>-<seq>`.
//! Producers append; an HTTP response body reads from a cursor. If the client
//! disconnects, the stream keeps what it had not delivered (bounded in events
//! and bytes), so a `GET` with `Last-Event-ID` can pick it up where it left
//! off — only on that stream, as the legacy revisions require.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures_util::FutureExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use crate::mcp::sse;

/// Events kept for replay per stream.
const REPLAY: usize = 1024;
/// Bytes of events kept for replay per stream, unless configured otherwise.
const REPLAY_BYTES: usize = 1 << 20;
/// A comment line sent on idle streams so proxies keep them open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct State {
    /// (seq, encoded event), oldest first; seqs are consecutive.
    events: VecDeque<(u64, Bytes)>,
    /// Bytes in `events`, and most kept.
    bytes: usize,
    max_bytes: usize,
    next_seq: u64,
    finished: bool,
}

/// A replayable event stream.
pub struct Stream {
    id: u64,
    state: Mutex<State>,
    changed: Notify,
}

impl Stream {
    /// A new, empty stream.
    pub fn new(id: u64) -> Arc<Self> {
        Self::bounded(id, REPLAY_BYTES)
    }

    /// A new, empty stream that keeps at most `max_bytes` of events (and
    /// always the newest one).
    pub fn bounded(id: u64, max_bytes: usize) -> Arc<Self> {
        let state = State { events: VecDeque::new(), bytes: 0, max_bytes, next_seq: 1, finished: false };
        Arc::new(Self { id, state: Mutex::new(state), changed: Notify::new() })
    }

    /// Whether every event after `seq` is still kept, so a reader resuming
    /// there misses nothing.
    pub fn keeps_after(&self, seq: u64) -> bool {
        let state = self.state.lock().unwrap();
        state.events.front().map_or(state.next_seq, |(first, _)| *first) <= seq + 1
    }

    /// Its id (the prefix of its event ids).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Append an event with `data` (a JSON-RPC message, or empty for a priming
    /// event); returns its event id.
    pub fn push(&self, data: &str) -> String {
        let mut state = self.state.lock().unwrap();
        let seq = state.next_seq;
        state.next_seq += 1;
        let event_id = format!("{}-{seq}", self.id);
        let encoded =
            if data.is_empty() { format!("id: {event_id}\ndata:\n\n") } else { sse::encode(Some(&event_id), data) };
        state.bytes += encoded.len();
        state.events.push_back((seq, Bytes::from(encoded)));
        while state.events.len() > REPLAY || (state.bytes > state.max_bytes && state.events.len() > 1) {
            if let Some((_, dropped)) = state.events.pop_front() {
                state.bytes -= dropped.len();
            }
        }
        drop(state);
        self.changed.notify_waiters();
        event_id
    }

    /// No more events will come; readers end after the last one.
    pub fn finish(&self) {
        self.state.lock().unwrap().finished = true;
        self.changed.notify_waiters();
    }

    /// Whether it is finished.
    pub fn is_finished(&self) -> bool {
        self.state.lock().unwrap().finished
    }

    /// A response body reading events after `after` (0: from the start).
    pub fn body(self: &Arc<Self>, after: u64) -> EventBody {
        EventBody { stream: Arc::clone(self), cursor: after, waiting: None, on_drop: None }
    }

    /// Parse `<stream>-<seq>` into (stream, seq).
    pub fn parse_event_id(event_id: &str) -> Option<(u64, u64)> {
        let (stream, seq) = event_id.split_once('-')?;
        Some((stream.parse().ok()?, seq.parse().ok()?))
    }
}

/// An HTTP body that streams a [`Stream`]'s events from a cursor, with
/// keep-alive comments while idle. Dropping it (client gone) runs `on_drop`.
pub struct EventBody {
    stream: Arc<Stream>,
    cursor: u64,
    waiting: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl EventBody {
    /// Run `f` when the body is dropped (the client went away, or the stream ended).
    pub fn on_drop(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.on_drop = Some(Box::new(f));
        self
    }
}

impl Drop for EventBody {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            {
                let state = self.stream.state.lock().unwrap();
                let next = state.events.iter().find(|(seq, _)| *seq > self.cursor).cloned();
                let finished = state.finished;
                drop(state);
                if let Some((seq, bytes)) = next {
                    self.cursor = seq;
                    self.waiting = None;
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                if finished {
                    return Poll::Ready(None);
                }
            }
            if self.waiting.is_none() {
                let stream = Arc::clone(&self.stream);
                self.waiting = Some(Box::pin(async move {
                    // A keep-alive comment is due if nothing happens for a while.
                    let _ = tokio::time::timeout(KEEP_ALIVE, stream.changed.notified()).await;
                }));
            }
            let waiting = self.waiting.as_mut().expect("set above");
            match waiting.poll_unpin(cx) {
                Poll::Pending => {
                    // Re-check after registering, in case an event landed in between.
                    let ready = {
                        let state = self.stream.state.lock().unwrap();
                        state.finished || state.events.back().is_some_and(|(seq, _)| *seq > self.cursor)
                    };
                    if ready {
                        self.waiting = None;
                        continue;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(()) => {
                    self.waiting = None;
                    let idle = {
                        let state = self.stream.state.lock().unwrap();
                        !state.finished && state.events.back().is_none_or(|(seq, _)| *seq <= self.cursor)
                    };
                    if idle {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": keep-alive\n\n")))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    async fn read_all(body: EventBody) -> String {
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn delivers_events_then_ends() {
        let stream = Stream::new(7);
        assert_eq!(stream.push(""), "7-1");
        assert_eq!(stream.push("{\"a\":1}"), "7-2");
        let reader = tokio::spawn(read_all(stream.body(0)));
        tokio::time::sleep(Duration::from_millis(10)).await;
        stream.push("{\"b\":2}");
        stream.finish();
        let text = reader.await.unwrap();
        assert_eq!(
            text,
            "id: 7-1\ndata:\n\nid: 7-2\nevent: message\ndata: {\"a\":1}\n\nid: 7-3\nevent: message\ndata: {\"b\":2}\n\n"
        );
    }

    #[tokio::test]
    async fn a_reader_can_resume_after_an_event_id() {
        let stream = Stream::new(3);
        for n in 0..3 {
            stream.push(&format!("{{\"n\":{n}}}"));
        }
        stream.finish();
        let (id, seq) = Stream::parse_event_id("3-2").unwrap();
        assert_eq!(id, 3);
        let text = read_all(stream.body(seq)).await;
        assert_eq!(text, "id: 3-3\nevent: message\ndata: {\"n\":2}\n\n");
    }

    #[test]
    fn replay_is_bounded_in_bytes_and_a_gap_is_known() {
        let stream = Stream::bounded(2, 250);
        let event = format!("{{\"pad\":\"{}\"}}", "x".repeat(60));
        for _ in 0..10 {
            stream.push(&event);
        }
        let state = stream.state.lock().unwrap();
        assert!(
            state.bytes <= 250 && state.events.len() == 2,
            "{} bytes in {} events",
            state.bytes,
            state.events.len()
        );
        drop(state);
        assert!(stream.keeps_after(8) && stream.keeps_after(10), "the newest are kept");
        assert!(!stream.keeps_after(7), "event 8 was dropped");
        assert!(Stream::new(1).keeps_after(0), "nothing pushed, nothing missed");
    }

    #[tokio::test]
    async fn dropping_a_body_runs_its_hook() {
        let stream = Stream::new(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        drop(stream.body(0).on_drop(move || {
            let _ = tx.send(());
        }));
        rx.await.unwrap();
    }
}
