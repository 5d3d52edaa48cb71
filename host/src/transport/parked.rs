//! Bridging a 2026-07-28 client to an upstream that asks questions the legacy
//! way: mid-call requests (sampling, elicitation, roots) instead of
//! `input_required` results.
//!
//! The call runs in a task of its own. When the upstream asks, the client's
//! request is answered with an `input_required` result carrying the question
//! and a `requestState` naming the paused call; the call waits. When the
//! client retries with `inputResponses` and that `requestState`, the answers
//! go to the waiting upstream and the call carries on — still inside the
//! gateway's request path, so its result passes the policy chain like any
//! other. Paused calls are bound to the principal that started them and to
//! the request itself (a retry with other arguments is refused), and
//! expire.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use tokio::{
    sync::{mpsc, oneshot},
    task::AbortHandle,
};

use crate::{
    mcp::{RpcError, code},
    upstream::ClientRequests,
};

/// How long a paused call waits for the client to come back.
const EXPIRY: Duration = Duration::from_secs(600);
/// How long to wait for further questions asked together with the first.
const GATHER: Duration = Duration::from_millis(20);
/// Prefix of the `requestState` values the gateway issues.
const STATE_PREFIX: &str = "warden-parked-";

/// What the call's task reports.
enum Outcome {
    Done(Result<Value, RpcError>),
    Input { method: String, params: Value, reply: oneshot::Sender<Result<Value, RpcError>> },
}

/// A running (or paused) call.
pub(crate) struct Call {
    subject: String,
    /// The request that started it ([`request_fingerprint`]).
    request: String,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    /// Questions asked and not yet answered: key → (request, where the answer goes).
    pending: HashMap<String, (Value, oneshot::Sender<Result<Value, RpcError>>)>,
    next_key: u32,
    /// Aborts the call's task when the call is dropped without being paused.
    task: Option<AbortHandle>,
    expires: Instant,
}

impl Drop for Call {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Asks the client on the upstream's behalf.
struct Relay {
    outcomes: mpsc::UnboundedSender<Outcome>,
    capabilities: Value,
}

impl ClientRequests for Relay {
    fn request(&self, method: String, params: Value) -> Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>> {
        let outcomes = self.outcomes.clone();
        let capability = match method.as_str() {
            "sampling/createMessage" => Some("sampling"),
            "elicitation/create" => Some("elicitation"),
            "roots/list" => Some("roots"),
            _ => None,
        };
        let missing = capability.filter(|c| self.capabilities.get(*c).is_none());
        Box::pin(async move {
            if let Some(capability) = missing {
                let error = RpcError::new(
                    code::MISSING_CLIENT_CAPABILITY,
                    format!(
                        "the upstream needs the client's {capability} capability, which this request did not declare"
                    ),
                )
                .with_data(json!({ "requiredCapabilities": { capability: {} } }));
                // The client gets this error for its call; the upstream gets it for its question.
                let _ = outcomes.send(Outcome::Done(Err(error.clone())));
                return Err(error);
            }
            let (reply, answer) = oneshot::channel();
            outcomes
                .send(Outcome::Input { method, params, reply })
                .map_err(|_| RpcError::internal("the call is gone"))?;
            answer.await.unwrap_or_else(|_| Err(RpcError::internal("the client did not come back to answer")))
        })
    }
}

/// What binds a retry to the request that asked: the method and its
/// parameters, without what a retry adds (`requestState`,
/// `inputResponses`) or may change (`_meta`).
pub(crate) fn request_fingerprint(method: &str, params: &Value) -> String {
    let mut params = params.clone();
    if let Some(map) = params.as_object_mut() {
        for key in ["requestState", "inputResponses", "_meta"] {
            map.remove(key);
        }
    }
    crate::audit::fingerprint(&json!({ "method": method, "params": params }))
}

/// Start a call for the request `request` (its fingerprint): `run` gets the
/// relay to hand the upstream, and its result ends the call.
pub(crate) fn start<F>(
    subject: &str,
    request: String,
    capabilities: Value,
    run: impl FnOnce(Arc<dyn ClientRequests>) -> F,
) -> Call
where
    F: Future<Output = Result<Value, RpcError>> + Send + 'static,
{
    let (tx, outcomes) = mpsc::unbounded_channel();
    let relay: Arc<dyn ClientRequests> = Arc::new(Relay { outcomes: tx.clone(), capabilities });
    let work = run(relay);
    let task = tokio::spawn(async move {
        let result = work.await;
        let _ = tx.send(Outcome::Done(result));
    });
    Call {
        subject: subject.to_owned(),
        request,
        outcomes,
        pending: HashMap::new(),
        next_key: 1,
        task: Some(task.abort_handle()),
        expires: Instant::now() + EXPIRY,
    }
}

/// Paused calls, by `requestState`.
#[derive(Default)]
pub(crate) struct Parked {
    calls: Mutex<HashMap<String, Call>>,
}

impl Parked {
    /// Whether a `requestState` is one the gateway issued (as opposed to one
    /// an upstream issued, which is passed through).
    pub(crate) fn is_ours(state: &Value) -> bool {
        state.as_str().is_some_and(|s| s.starts_with(STATE_PREFIX))
    }

    /// Resume a paused call with the client's answers to the retry of
    /// `request` (its fingerprint). An unknown, expired or another
    /// principal's state is refused, and so is a retry that is not the
    /// request that asked (the call stays paused for the real one).
    pub(crate) fn resume(
        &self,
        state: &str,
        subject: &str,
        request: &str,
        responses: Option<&Map<String, Value>>,
    ) -> Result<Call, RpcError> {
        let call = self.calls.lock().unwrap().remove(state);
        let mut call = match call {
            Some(call) if call.subject != subject => {
                // Not theirs: put it back untouched and answer as if it did not exist.
                self.calls.lock().unwrap().insert(state.to_owned(), call);
                return Err(unknown_state());
            }
            Some(call) if call.request != request => {
                self.calls.lock().unwrap().insert(state.to_owned(), call);
                return Err(RpcError::invalid_params(
                    "this retry is not the request that asked for input: its method, name or arguments differ",
                ));
            }
            Some(call) if call.expires > Instant::now() => call,
            _ => return Err(unknown_state()),
        };
        for (key, response) in responses.into_iter().flatten() {
            if let Some((_, reply)) = call.pending.remove(key) {
                let _ = reply.send(Ok(response.clone()));
            }
        }
        Ok(call)
    }

    /// Drive a call until it finishes or asks something; a question pauses it
    /// and becomes the `input_required` result.
    pub(crate) async fn drive(self: &Arc<Self>, mut call: Call) -> Result<Value, RpcError> {
        loop {
            // Questions still unanswered (the client left some out): ask again.
            if !call.pending.is_empty() {
                return Ok(self.park(call));
            }
            let outcome =
                call.outcomes.recv().await.ok_or_else(|| RpcError::internal("the call ended without a result"))?;
            match outcome {
                Outcome::Done(result) => return result,
                Outcome::Input { method, params, reply } => {
                    call.ask(method, params, reply);
                    // Questions asked together go out together.
                    while let Ok(Some(Outcome::Input { method, params, reply })) =
                        tokio::time::timeout(GATHER, call.outcomes.recv()).await
                    {
                        call.ask(method, params, reply);
                    }
                }
            }
        }
    }

    fn park(&self, call: Call) -> Value {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).expect("the OS provides randomness");
        let state = format!("{STATE_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let requests: Map<String, Value> = call.pending.iter().map(|(k, (r, _))| (k.clone(), r.clone())).collect();
        self.calls.lock().unwrap().insert(state.clone(), call);
        json!({ "resultType": "input_required", "inputRequests": requests, "requestState": state })
    }

    /// Drop paused calls whose client never came back.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        self.calls.lock().unwrap().retain(|_, call| call.expires > now);
    }
}

impl Call {
    fn ask(&mut self, method: String, params: Value, reply: oneshot::Sender<Result<Value, RpcError>>) {
        let key = format!("q{}", self.next_key);
        self.next_key += 1;
        self.pending.insert(key, (json!({ "method": method, "params": params }), reply));
        self.expires = Instant::now() + EXPIRY;
    }
}

fn unknown_state() -> RpcError {
    RpcError::invalid_params("requestState is unknown, expired or not yours: start the request again")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_question_pauses_the_call_and_the_answer_resumes_it() {
        let parked = Arc::new(Parked::default());
        let call = start("alice", "r1".into(), json!({"elicitation": {}}), |relay| async move {
            let answer = relay.request("elicitation/create".into(), json!({"message": "name?"})).await?;
            Ok(json!({ "content": [{ "type": "text", "text": format!("hello {}", answer["content"]["name"]) }] }))
        });
        let first = parked.drive(call).await.unwrap();
        assert_eq!(first["resultType"], "input_required");
        assert_eq!(first["inputRequests"]["q1"]["method"], "elicitation/create");
        let state = first["requestState"].as_str().unwrap();
        assert!(Parked::is_ours(&json!(state)));

        // Someone else cannot resume it, nor can another request.
        assert!(parked.resume(state, "mallory", "r1", None).is_err());
        let other = parked.resume(state, "alice", "r2", None).err().expect("another request is refused");
        assert!(other.message.contains("not the request that asked"), "{}", other.message);

        let responses = json!({ "q1": { "action": "accept", "content": { "name": "bob" } } });
        let call = parked.resume(state, "alice", "r1", responses.as_object()).unwrap();
        let done = parked.drive(call).await.unwrap();
        assert_eq!(done["content"][0]["text"], "hello \"bob\"");
        assert!(parked.resume(state, "alice", "r1", None).is_err(), "a state is good for one resumption");
    }

    #[tokio::test]
    async fn a_missing_capability_ends_the_call_with_32021() {
        let parked = Arc::new(Parked::default());
        let call = start("alice", "r1".into(), json!({}), |relay| async move {
            relay.request("sampling/createMessage".into(), json!({})).await?;
            Ok(json!({}))
        });
        let error = parked.drive(call).await.unwrap_err();
        assert_eq!(error.code, code::MISSING_CLIENT_CAPABILITY);
        assert_eq!(error.data.unwrap()["requiredCapabilities"], json!({"sampling": {}}));
    }

    #[tokio::test]
    async fn unanswered_questions_are_asked_again() {
        let parked = Arc::new(Parked::default());
        let call = start("alice", "r1".into(), json!({"roots": {}}), |relay| async move {
            relay.request("roots/list".into(), json!({})).await?;
            Ok(json!({"ok": true}))
        });
        let first = parked.drive(call).await.unwrap();
        let state = first["requestState"].as_str().unwrap().to_owned();
        let call = parked.resume(&state, "alice", "r1", json!({"wrong_key": {}}).as_object()).unwrap();
        let again = parked.drive(call).await.unwrap();
        assert_eq!(again["resultType"], "input_required");
        assert_eq!(again["inputRequests"]["q1"]["method"], "roots/list");
    }
}
