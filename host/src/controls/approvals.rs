//! Human approval for calls a policy asks about (`ask`): one model, three
//! ways to reach a person.
//!
//! - **A legacy client** that declared elicitation: Warden asks through
//!   `elicitation/create` (form mode) on the call's own session, naming
//!   tool, server, the policy's question and a redacted summary of the
//!   arguments.
//! - **A 2026-07-28 client** that declared elicitation: the call answers an
//!   `input_required` round with the same question and a `requestState`
//!   sealed by the gateway ([`Round`]: who, which request, which chain,
//!   until when), treated as attacker-controlled: the retry must open under
//!   the replicas' shared key, come from the same identity, be the same
//!   request on the same chain generation, in time, and be the first use.
//! - **The operator queue** otherwise, or when configured (`via =
//!   "operator"`, per plugin, or `separate_approver`): the call waits, up to
//!   `timeout_s`, for someone with the admin role to approve or deny it on
//!   the admin API (`warden approvals list|approve|deny`); then it is
//!   denied. Requests live in the state store, so an operator may answer on
//!   any replica.
//!
//! An approval answers one waiting call — the very request that asked, with
//! its caller, server, tool, argument fingerprint and chain generation — so
//! it cannot be replayed onto another. With `separate_approver`, nobody
//! approves their own call.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{
    auth::Principal,
    state::{StateError, StateStore},
    transport::seal::Seal,
};

/// The key of the question in an approval round's `inputRequests`.
pub const ROUND_KEY: &str = "warden-approval";

/// What an approval round's `requestState` holds, sealed.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Round {
    /// The approval's id (claimed once when redeemed).
    id: String,
    /// The caller's identity.
    who: String,
    /// The request's fingerprint (`transport::parked::request_fingerprint`).
    req: String,
    /// The chain generation that asked.
    chain: u64,
    /// Until when, ms since the epoch.
    exp: u64,
}

/// The state store table pending approvals live in.
const TABLE: &str = "approvals";
/// How often a waiting call looks for an operator's answer given on
/// another replica (one given here wakes it at once).
const POLL: Duration = Duration::from_millis(200);
/// Most characters of the argument summary a person is shown.
const SUMMARY_CHARS: usize = 500;

/// Who is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The caller's client if it can be asked, else the operator queue.
    Auto,
    /// Always the operator queue.
    Operator,
}

/// `[approvals]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalSettings {
    /// Who is asked, unless the plugin that asked has its own.
    pub via: Via,
    /// Plugins with their own `via`.
    pub per_plugin: BTreeMap<String, Via>,
    /// How long a call waits for an operator.
    pub timeout: Duration,
    /// Nobody approves their own call (so the caller's client is never
    /// asked, and an operator must be someone else).
    pub separate_approver: bool,
}

/// A call waiting for a person's answer, as operators see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    /// Its id (random): what `warden approvals approve` takes.
    pub id: String,
    /// When it was asked (RFC 3339).
    pub time: String,
    /// When it is denied if nobody answers (RFC 3339), and in ms.
    pub expires: String,
    /// [`Ask::expires`] in milliseconds since the epoch.
    pub expires_ms: u64,
    /// The caller.
    pub subject: String,
    /// The caller's tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The caller's identity (issuer, subject, tenant), to keep callers
    /// from approving themselves.
    pub identity: String,
    /// The upstream.
    pub server: String,
    /// The tool (or prompt, resource) and its kind.
    pub target: String,
    /// `tool`, `resource` or `prompt`.
    pub kind: String,
    /// SHA-256 of the arguments (RFC 8785), as the call will be sent.
    pub arguments_sha256: String,
    /// The arguments, redacted and cut to a few hundred characters.
    pub arguments: String,
    /// The plugin that asked, and its question.
    pub plugin: String,
    /// The plugin's question.
    pub prompt: String,
    /// The chain generation that asked.
    pub chain: u64,
    /// The answer, once given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

/// A person's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// Approved (true) or denied.
    pub approved: bool,
    /// Who answered (`subject`), or `timeout`.
    pub by: String,
    /// How: `operator`, `elicitation` or `timeout`.
    pub via: String,
    /// Their reason, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Ask {
    /// The `elicitation/create` parameters that ask a person (form mode:
    /// one boolean, `approve`).
    pub fn question(&self) -> Value {
        json!({
            "message": self.message(),
            "requestedSchema": {
                "type": "object",
                "properties": { "approve": { "type": "boolean", "title": "Approve", "description": "Run this call once" } },
                "required": ["approve"],
            },
        })
    }

    /// The answer a client's elicitation reply (`None`: no reply) gives:
    /// approved only if it accepted with `approve = true`.
    pub fn answer_of(&self, reply: Option<&Value>) -> Answer {
        let reason = match reply.and_then(|r| r.get("action")).and_then(Value::as_str) {
            Some("accept") if reply.and_then(|r| r.pointer("/content/approve")) == Some(&Value::Bool(true)) => None,
            Some("accept") => Some("not approved".to_owned()),
            Some("decline") => Some("declined".to_owned()),
            Some("cancel") => Some("cancelled".to_owned()),
            Some(action) => Some(format!("answered {action:?}")),
            None => Some("no answer to the approval question".to_owned()),
        };
        Answer { approved: reason.is_none(), by: self.subject.clone(), via: "elicitation".into(), reason }
    }

    /// The question a person is shown.
    pub fn message(&self) -> String {
        format!(
            "Approve this call? {} wants to call the {} {} on {}. Policy {} asks: {} Arguments: {}",
            self.subject, self.kind, self.target, self.server, self.plugin, self.prompt, self.arguments
        )
    }
}

/// The redacted, shortened arguments a person is shown: never a value
/// whose key is in `redact`.
pub fn summary(arguments: &Value, redact: &[String]) -> String {
    let text = crate::audit::redacted(arguments, redact).to_string();
    match text.char_indices().nth(SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Why a retry's approval round was refused.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// Not sealed by this fleet, altered, or another identity's.
    #[error("requestState was not issued to you by this gateway, or was altered")]
    Forged,
    /// Sealed for a request with another name or other arguments.
    #[error("this retry is not the request that asked for approval: its name or arguments differ")]
    OtherRequest,
    /// The chain was reloaded since the question was asked.
    #[error("the policy chain changed since approval was asked: call again")]
    ChainChanged,
    /// Past the round's expiry.
    #[error("the approval round expired: call again")]
    Expired,
    /// Already redeemed.
    #[error("this approval round was already used: call again")]
    Used,
    /// The store could not record the use.
    #[error(transparent)]
    Store(#[from] StateError),
}

/// Why an operator's answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No call waits under that id (never, answered, or expired).
    #[error("no call waits for approval under {0}")]
    Unknown(String),
    /// `separate_approver`: the caller answered its own call.
    #[error("the caller may not approve its own call (approvals.separate_approver)")]
    OwnCall,
    /// The store did not take it.
    #[error(transparent)]
    Store(#[from] StateError),
}

/// The approval queue of a gateway.
pub struct Approvals {
    settings: ApprovalSettings,
    store: Arc<StateStore>,
    /// Calls waiting on this replica, woken by an answer given here.
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    /// Seals approval rounds' `requestState`.
    seal: Seal,
}

impl Approvals {
    /// A queue in `store`, sealing rounds with `key` (shared by the
    /// replicas on one store).
    pub fn new(settings: ApprovalSettings, store: Arc<StateStore>, key: &[u8; 32]) -> Self {
        let seal = Seal::new(key, "warden-approval.", b"warden-approval-v1");
        Self { settings, store, waiting: Mutex::default(), seal }
    }

    /// Whether `state` is an approval round's `requestState` (it may still
    /// not open).
    pub fn is_round(&self, state: &str) -> bool {
        self.seal.marks(state)
    }

    /// The `input_required` result asking a 2026-07-28 client about `ask`,
    /// for the request with fingerprint `request`.
    pub fn round(&self, ask: &Ask, request: String) -> Value {
        let round = Round {
            id: ask.id.clone(),
            who: ask.identity.clone(),
            req: request,
            chain: ask.chain,
            exp: ask.expires_ms,
        };
        json!({
            "resultType": "input_required",
            "inputRequests": { ROUND_KEY: { "method": "elicitation/create", "params": ask.question() } },
            "requestState": self.seal.seal(&round),
        })
    }

    /// Check a retry's `requestState` against the retry itself: sealed
    /// here (or on a replica sharing the key) and unaltered, the same
    /// identity, the same request (`request`, its fingerprint), the same
    /// chain generation, in time, and its first use. The round's id.
    pub async fn redeem(&self, state: &str, identity: &str, request: &str, chain: u64) -> Result<String, RoundError> {
        let round: Round = self.seal.open(state).ok_or(RoundError::Forged)?;
        if round.who != identity {
            return Err(RoundError::Forged);
        }
        if round.req != request {
            return Err(RoundError::OtherRequest);
        }
        if round.chain != chain {
            return Err(RoundError::ChainChanged);
        }
        let now = crate::gateway::now_ms();
        if round.exp <= now {
            return Err(RoundError::Expired);
        }
        let ttl = Duration::from_millis(round.exp - now);
        match self.store.claim(&format!("approval:{}", round.id), ttl).await? {
            true => Ok(round.id),
            false => Err(RoundError::Used),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ApprovalSettings {
        &self.settings
    }

    /// Who is asked about what `plugin` asked.
    pub fn via(&self, plugin: &str) -> Via {
        match self.settings.separate_approver {
            true => Via::Operator,
            false => self.settings.per_plugin.get(plugin).copied().unwrap_or(self.settings.via),
        }
    }

    /// When a call asking now expires: (RFC 3339, ms since the epoch).
    pub fn expiry(&self) -> (String, u64) {
        let at = SystemTime::now() + self.settings.timeout;
        let ms = at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        (crate::audit::timestamp(at), ms)
    }

    /// Put `ask` in the queue and wait for an operator's answer, or its
    /// expiry (then a denial `by = "timeout"`). The request leaves the
    /// queue either way: an answer is used once.
    pub async fn wait(&self, ask: &Ask) -> Result<Answer, StateError> {
        let (wake, woken) = oneshot::channel();
        self.waiting.lock().unwrap().insert(ask.id.clone(), wake);
        let text = serde_json::to_string(ask).expect("an ask serialises");
        let queued = self.store.put_control(TABLE, &ask.id, &text).await;
        let answer = match queued {
            Ok(_) => self.await_answer(ask, woken).await,
            Err(error) => Err(error),
        };
        self.waiting.lock().unwrap().remove(&ask.id);
        if let Err(error) = self.store.remove_control(TABLE, &ask.id).await {
            tracing::warn!(id = %ask.id, %error, "an answered approval request could not be removed; it expires");
        }
        answer
    }

    /// The operator's answer to `ask`: given here (`woken`), seen in the
    /// store (given on another replica), or the timeout's denial.
    async fn await_answer(&self, ask: &Ask, mut woken: oneshot::Receiver<Answer>) -> Result<Answer, StateError> {
        let deadline = tokio::time::Instant::now() + self.settings.timeout;
        loop {
            tokio::select! {
                answer = &mut woken => if let Ok(answer) = answer { return Ok(answer) },
                _ = tokio::time::sleep_until(deadline) => {
                    return Ok(Answer { approved: false, by: "timeout".into(), via: "timeout".into(), reason: None });
                }
                _ = tokio::time::sleep(POLL) => {
                    let stored = self.store.controls(TABLE).await?;
                    let answered = stored.entries.get(&ask.id).and_then(|t| serde_json::from_str::<Ask>(t).ok());
                    if let Some(answer) = answered.and_then(|a| a.answer) {
                        return Ok(answer);
                    }
                }
            }
        }
    }

    /// The calls waiting now, oldest first (expired ones are dropped).
    pub async fn pending(&self) -> Result<Vec<Ask>, StateError> {
        let now = crate::gateway::now_ms();
        let stored = self.store.controls(TABLE).await?;
        let mut asks: Vec<Ask> = Vec::new();
        for (id, text) in stored.entries {
            match serde_json::from_str::<Ask>(&text) {
                // A replica that stopped while its call waited leaves it behind.
                Ok(ask) if ask.expires_ms <= now => {
                    self.store.remove_control(TABLE, &id).await?;
                }
                Ok(ask) if ask.answer.is_none() => asks.push(ask),
                // Answered: the replica holding the call takes it out.
                Ok(_) => {}
                Err(error) => tracing::error!(id, %error, "a stored approval request cannot be read"),
            }
        }
        asks.sort_by(|a, b| a.time.cmp(&b.time));
        Ok(asks)
    }

    /// An operator's answer to the call waiting under `id`: stored (the
    /// replica holding the call sees it), and the call woken if it waits
    /// here. The request answered.
    pub async fn answer(
        &self,
        id: &str,
        operator: &Principal,
        approved: bool,
        reason: Option<String>,
    ) -> Result<Ask, AnswerError> {
        let mut ask =
            self.pending().await?.into_iter().find(|a| a.id == id).ok_or_else(|| AnswerError::Unknown(id.into()))?;
        if self.settings.separate_approver && operator.identity_key() == ask.identity {
            return Err(AnswerError::OwnCall);
        }
        let answer = Answer { approved, by: operator.subject.clone(), via: "operator".into(), reason };
        ask.answer = Some(answer.clone());
        let text = serde_json::to_string(&ask).expect("an ask serialises");
        self.store.put_control(TABLE, id, &text).await?;
        if let Some(wake) = self.waiting.lock().unwrap().remove(id) {
            let _ = wake.send(answer);
        }
        Ok(ask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryStore;

    fn principal(subject: &str) -> Principal {
        Principal {
            subject: subject.into(),
            tenant: None,
            roles: vec![],
            scopes: vec![],
            claims: serde_json::json!({}),
        }
    }

    fn queue(timeout_ms: u64, separate_approver: bool) -> Arc<Approvals> {
        let settings = ApprovalSettings {
            via: Via::Operator,
            per_plugin: BTreeMap::new(),
            timeout: Duration::from_millis(timeout_ms),
            separate_approver,
        };
        Arc::new(Approvals::new(settings, Arc::new(StateStore::Memory(MemoryStore::default())), &[3; 32]))
    }

    fn ask(queue: &Approvals, id: &str, caller: &Principal) -> Ask {
        let (expires, expires_ms) = queue.expiry();
        Ask {
            id: id.into(),
            time: crate::audit::timestamp(SystemTime::now()),
            expires,
            expires_ms,
            subject: caller.subject.clone(),
            tenant: None,
            identity: caller.identity_key(),
            server: "demo".into(),
            target: "write_workspace_file".into(),
            kind: "tool".into(),
            arguments_sha256: "00".into(),
            arguments: "{}".into(),
            plugin: "rbac".into(),
            prompt: "Approve?".into(),
            chain: 1,
            answer: None,
        }
    }

    async fn until_pending(queue: &Approvals) -> Vec<Ask> {
        for _ in 0..100 {
            let pending = queue.pending().await.unwrap();
            if !pending.is_empty() {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nothing was queued");
    }

    #[tokio::test]
    async fn an_operator_answer_wakes_the_waiting_call_once() {
        let queue = queue(10_000, false);
        let caller = principal("ann");
        let waiting = {
            let (queue, ask) = (Arc::clone(&queue), ask(&queue, "a1", &caller));
            tokio::spawn(async move { queue.wait(&ask).await })
        };
        let pending = until_pending(&queue).await;
        assert_eq!(pending.len(), 1);
        let answered = queue.answer("a1", &principal("ops"), true, Some("fine".into())).await.unwrap();
        assert_eq!(answered.answer.unwrap().by, "ops");
        let answer = waiting.await.unwrap().unwrap();
        assert!(answer.approved && answer.via == "operator");
        assert!(queue.pending().await.unwrap().is_empty(), "the request left the queue");
        assert!(matches!(queue.answer("a1", &principal("ops"), true, None).await, Err(AnswerError::Unknown(_))));
    }

    #[tokio::test]
    async fn nobody_answering_is_a_denial_by_timeout() {
        let queue = queue(100, false);
        let answer = queue.wait(&ask(&queue, "a2", &principal("ann"))).await.unwrap();
        assert!(!answer.approved);
        assert_eq!(answer.by, "timeout");
        assert!(queue.pending().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn with_separate_approvers_a_caller_cannot_approve_itself() {
        let queue = queue(10_000, true);
        let caller = principal("ann");
        assert_eq!(queue.via("rbac"), Via::Operator, "the caller's client is never asked");
        let waiting = {
            let (queue, ask) = (Arc::clone(&queue), ask(&queue, "a3", &caller));
            tokio::spawn(async move { queue.wait(&ask).await })
        };
        until_pending(&queue).await;
        assert!(matches!(queue.answer("a3", &caller, true, None).await, Err(AnswerError::OwnCall)));
        queue.answer("a3", &principal("bob"), false, Some("no".into())).await.unwrap();
        let answer = waiting.await.unwrap().unwrap();
        assert!(!answer.approved && answer.by == "bob");
    }

    #[tokio::test]
    async fn a_round_redeems_once_for_its_caller_request_and_chain_only() {
        let queue = queue(10_000, false);
        let ann = principal("ann");
        let ask = ask(&queue, "r1", &ann);
        let round = queue.round(&ask, "request-1".into());
        assert_eq!(round["inputRequests"][ROUND_KEY]["params"]["requestedSchema"]["required"], json!(["approve"]));
        let state = round["requestState"].as_str().unwrap();
        assert!(queue.is_round(state));
        let identity = ann.identity_key();
        let redeem = |who: &str, request: &str, chain| {
            let (queue, state, who, request) =
                (Arc::clone(&queue), state.to_owned(), who.to_owned(), request.to_owned());
            async move { queue.redeem(&state, &who, &request, chain).await }
        };
        assert!(matches!(redeem(&principal("bob").identity_key(), "request-1", 1).await, Err(RoundError::Forged)));
        assert!(matches!(redeem(&identity, "request-2", 1).await, Err(RoundError::OtherRequest)));
        assert!(matches!(redeem(&identity, "request-1", 2).await, Err(RoundError::ChainChanged)));
        assert_eq!(redeem(&identity, "request-1", 1).await.unwrap(), "r1");
        assert!(matches!(redeem(&identity, "request-1", 1).await, Err(RoundError::Used)), "once only");
        let mut altered = state.to_owned().into_bytes();
        let at = altered.len() - 2;
        altered[at] = if altered[at] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(matches!(queue.redeem(&altered, &identity, "request-1", 1).await, Err(RoundError::Forged)));
        // Another fleet's key opens nothing.
        let other =
            Approvals::new(queue.settings.clone(), Arc::new(StateStore::Memory(MemoryStore::default())), &[4; 32]);
        assert!(matches!(other.redeem(state, &identity, "request-1", 1).await, Err(RoundError::Forged)));
    }

    #[test]
    fn only_an_accepted_approve_approves() {
        let queue = queue(1000, false);
        let ask = ask(&queue, "q", &principal("ann"));
        let yes = json!({ "action": "accept", "content": { "approve": true } });
        assert!(ask.answer_of(Some(&yes)).approved);
        for reply in
            [json!({ "action": "accept", "content": { "approve": false } }), json!({ "action": "decline" }), json!({})]
        {
            assert!(!ask.answer_of(Some(&reply)).approved, "{reply}");
        }
        assert_eq!(ask.answer_of(Some(&json!({ "action": "cancel" }))).reason.as_deref(), Some("cancelled"));
        assert!(!ask.answer_of(None).approved);
    }

    #[test]
    fn a_summary_never_shows_a_secret_and_stays_short() {
        let redact = vec!["password".to_owned()];
        let text = summary(&serde_json::json!({ "password": "hunter2", "note": "hi" }), &redact);
        assert!(!text.contains("hunter2") && text.contains("[redacted]"), "{text}");
        let long = summary(&serde_json::json!({ "note": "x".repeat(2000) }), &redact);
        assert_eq!(long.chars().count(), SUMMARY_CHARS + 1, "cut, with an ellipsis: {long}");
        assert!(long.ends_with('…'));
    }
}
