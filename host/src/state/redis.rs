//! The Redis backend (`redis` crate, async, with its connection manager:
//! one multiplexed connection that reconnects by itself, so Redis coming
//! back needs no restart of the gateway).
//!
//! An admission is one `EVALSHA` of `admit.lua`: the script reads every
//! bucket and counter, decides, and writes them, atomically on the server
//! and on the server's clock, so N replicas enforce one limit exactly and
//! agree on time. Keys are `<prefix>:<key>` and expire on their own.

use std::time::Duration;

use redis::{AsyncCommands as _, aio::ConnectionManager};

use super::{Admission, Answer, StateError, StateSettings, Usage, UsageTable, Verdict};
use crate::engine::{PastCall, TargetKind};

/// Shared state in Redis.
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: String,
    admit: redis::Script,
    retention: Duration,
}

/// The admission script; see its header for the argument layout.
const ADMIT: &str = include_str!("admit.lua");

/// Separates the parts of a usage field: `<kind>␟<tenant>␟<server>`
/// (upstream names cannot contain it).
const UNIT: char = '\u{1f}';

fn unreachable(error: redis::RedisError) -> StateError {
    StateError(error.to_string())
}

impl RedisStore {
    /// Connect to `url`; fails if Redis does not answer within the timeout.
    pub async fn connect(url: &str, settings: &StateSettings) -> Result<Self, StateError> {
        let client = match &settings.ca_pem {
            None => redis::Client::open(url),
            Some(pem) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
            ),
        }
        .map_err(|e| StateError(format!("{}: {e}", redacted(url))))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StateError(format!("{}: {e}", redacted(url))))?;
        Ok(Self {
            connection,
            prefix: settings.prefix.clone(),
            admit: redis::Script::new(ADMIT),
            retention: settings.usage_retention,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// Decide `admission` in one round trip.
    pub async fn admit(&self, admission: &Admission) -> Result<Verdict, StateError> {
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .arg(admission.rates.len())
            .arg(u8::from(admission.history.is_some()))
            .arg(u8::from(admission.controls));
        for demand in &admission.rates {
            invocation
                .key(self.key(&demand.key))
                .arg(demand.interval_us)
                .arg(demand.burst)
                .arg(u8::from(demand.enforce));
        }
        for demand in &admission.quotas {
            invocation
                .key(self.key(&demand.key))
                .arg(demand.limit)
                .arg(demand.cost)
                .arg(demand.ttl_ms)
                .arg(u8::from(demand.enforce));
        }
        if admission.controls {
            invocation.key(self.key(CONTROLS_GENERATION));
        }
        if let Some(history) = &admission.history {
            invocation.key(self.key(&history_key(history)));
        }
        let mut connection = self.connection.clone();
        let reply: Vec<redis::Value> = invocation.invoke_async(&mut connection).await.map_err(unreachable)?;
        let answers = 1 + 3 * (admission.rates.len() + admission.quotas.len());
        let expected = answers + usize::from(admission.controls);
        let number = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(n)) => Ok(*n),
            other => Err(StateError(format!("the admission script answered {other:?} at {i}, not a number"))),
        };
        let answer = |i: usize| -> Result<Answer, StateError> {
            Ok(Answer {
                conforms: number(1 + 3 * i)? == 1,
                remaining: number(2 + 3 * i)?.max(0) as u64,
                wait_us: number(3 + 3 * i)?.max(0) as u64,
            })
        };
        let n = admission.rates.len();
        let history = admission.history.as_ref().map(|_| {
            reply
                .get(expected..)
                .unwrap_or_default()
                .iter()
                .filter_map(|item| match item {
                    redis::Value::BulkString(bytes) => decode_past(std::str::from_utf8(bytes).ok()?),
                    _ => None,
                })
                .collect()
        });
        let controls = match admission.controls {
            true => Some(number(answers)?.max(0) as u64),
            false => None,
        };
        Ok(Verdict {
            admitted: number(0)? == 1,
            rates: (0..n).map(answer).collect::<Result<_, _>>()?,
            quotas: (n..n + admission.quotas.len()).map(answer).collect::<Result<_, _>>()?,
            history,
            controls,
        })
    }

    /// Add `amount` to a counter.
    pub async fn charge(&self, key: &str, amount: u64, ttl_ms: u64) -> Result<(), StateError> {
        let key = self.key(key);
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .incr(&key, amount)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms)
            .arg("NX")
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unreachable)
    }

    /// Add usage counts: one hash per hour.
    pub async fn add_usage(&self, table: &UsageTable) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        let mut hours = Vec::new();
        for ((hour, tenant, server), usage) in table {
            let key = self.key(&format!("usage:{hour}"));
            for (kind, value) in
                [("calls", usage.calls), ("refused", usage.refused), ("upstream_us", usage.upstream_us)]
            {
                if value > 0 {
                    pipe.hincr(&key, format!("{kind}{UNIT}{tenant}{UNIT}{server}"), value).ignore();
                }
            }
            if !hours.contains(hour) {
                hours.push(*hour);
                pipe.expire(&key, self.retention.as_secs() as i64).ignore();
            }
        }
        let mut connection = self.connection.clone();
        pipe.query_async::<()>(&mut connection).await.map_err(unreachable)
    }

    /// Usage from `since_hour` to `until_hour`, optionally of one tenant.
    pub async fn usage(
        &self,
        since_hour: u64,
        until_hour: u64,
        tenant: Option<&str>,
    ) -> Result<UsageTable, StateError> {
        let hours: Vec<u64> = (since_hour..=until_hour).collect();
        let mut pipe = redis::pipe();
        for hour in &hours {
            pipe.hgetall(self.key(&format!("usage:{hour}")));
        }
        let mut connection = self.connection.clone();
        let replies: Vec<Vec<(String, u64)>> = pipe.query_async(&mut connection).await.map_err(unreachable)?;
        let mut table = UsageTable::new();
        for (hour, fields) in hours.into_iter().zip(replies) {
            for (field, value) in fields {
                let mut parts = field.splitn(2, UNIT);
                let (Some(kind), Some(rest)) = (parts.next(), parts.next()) else { continue };
                let Some((who, server)) = rest.rsplit_once(UNIT) else { continue };
                if tenant.is_some_and(|t| t != who) {
                    continue;
                }
                let usage: &mut Usage = table.entry((hour, who.to_owned(), server.to_owned())).or_default();
                match kind {
                    "calls" => usage.calls += value,
                    "refused" => usage.refused += value,
                    "upstream_us" => usage.upstream_us += value,
                    _ => {}
                }
            }
        }
        Ok(table)
    }

    /// The chain history under `key`, oldest first.
    pub async fn history(&self, key: &str) -> Result<Vec<PastCall>, StateError> {
        let mut connection = self.connection.clone();
        let items: Vec<String> = connection.lrange(self.key(&history_key(key)), 0, -1).await.map_err(unreachable)?;
        Ok(items.iter().filter_map(|item| decode_past(item)).collect())
    }

    /// Append a call to the history under `key`, keeping the last `keep`.
    pub async fn remember(&self, key: &str, call: &PastCall, keep: usize, ttl: Duration) -> Result<(), StateError> {
        let key = self.key(&history_key(key));
        let mut connection = self.connection.clone();
        redis::pipe()
            .atomic()
            .rpush(&key, encode_past(call))
            .ignore()
            .ltrim(&key, -(keep as isize), -1)
            .ignore()
            .pexpire(&key, ttl.as_millis() as i64)
            .ignore()
            .query_async::<()>(&mut connection)
            .await
            .map_err(unreachable)
    }

    /// Forget the history under `key`.
    pub async fn forget(&self, key: &str) -> Result<(), StateError> {
        let mut connection = self.connection.clone();
        connection.del::<_, ()>(self.key(&history_key(key))).await.map_err(unreachable)
    }

    /// Set a control and bump the generation, atomically; the new generation.
    pub async fn put_control(&self, table: &str, id: &str, value: &str) -> Result<u64, StateError> {
        let mut connection = self.connection.clone();
        let (generation,): (u64,) = redis::pipe()
            .atomic()
            .hset(self.key(&controls_key(table)), id, value)
            .ignore()
            .incr(self.key(CONTROLS_GENERATION), 1)
            .query_async(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(generation)
    }

    /// Remove a control and bump the generation, atomically.
    pub async fn remove_control(&self, table: &str, id: &str) -> Result<(bool, u64), StateError> {
        let mut connection = self.connection.clone();
        let (removed, generation): (u64, u64) = redis::pipe()
            .atomic()
            .hdel(self.key(&controls_key(table)), id)
            .incr(self.key(CONTROLS_GENERATION), 1)
            .query_async(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok((removed > 0, generation))
    }

    /// A table of controls and the generation, read together.
    pub async fn controls(&self, table: &str) -> Result<super::Controls, StateError> {
        let mut connection = self.connection.clone();
        let (generation, entries): (Option<u64>, std::collections::BTreeMap<String, String>) = redis::pipe()
            .atomic()
            .get(self.key(CONTROLS_GENERATION))
            .hgetall(self.key(&controls_key(table)))
            .query_async(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(super::Controls { generation: generation.unwrap_or(0), entries })
    }

    /// The controls' generation.
    pub async fn controls_generation(&self) -> Result<u64, StateError> {
        let mut connection = self.connection.clone();
        let generation: Option<u64> = connection.get(self.key(CONTROLS_GENERATION)).await.map_err(unreachable)?;
        Ok(generation.unwrap_or(0))
    }

    /// Claim a key (`SET NX PX`): whether nobody held it.
    pub async fn claim(&self, key: &str, ttl: Duration) -> Result<bool, StateError> {
        let mut connection = self.connection.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(&format!("claim:{key}")))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut connection)
            .await
            .map_err(unreachable)?;
        Ok(set.is_some())
    }

    /// A secret every gateway on this Redis shares: the first to ask sets it.
    pub async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StateError> {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        let key = self.key(&format!("secret:{name}"));
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StateError(e.to_string()))?;
        let mut connection = self.connection.clone();
        let _: bool = connection.set_nx(&key, STANDARD.encode(fresh)).await.map_err(unreachable)?;
        let stored: String = connection.get(&key).await.map_err(unreachable)?;
        let bytes = STANDARD.decode(stored.trim()).map_err(|e| StateError(format!("{key} is not base64: {e}")))?;
        bytes.try_into().map_err(|_| StateError(format!("{key} does not hold 32 bytes")))
    }
}

/// The operator controls' generation (before the namespace): bumped by every
/// change, never expiring.
const CONTROLS_GENERATION: &str = "controls:generation";

/// Where a table of operator controls lives (before the namespace).
fn controls_key(table: &str) -> String {
    format!("controls:{table}")
}

/// Where the chain history under `key` lives (before the namespace).
fn history_key(key: &str) -> String {
    format!("history:{key}")
}

/// A past call as Redis keeps it: `[kind, server, name, timestamp_ms]`.
fn encode_past(call: &PastCall) -> String {
    serde_json::json!([call.kind.as_str(), call.server, call.name, call.timestamp_ms]).to_string()
}

fn decode_past(text: &str) -> Option<PastCall> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let kind = match value.get(0)?.as_str()? {
        "tool" => TargetKind::Tool,
        "resource" => TargetKind::Resource,
        "prompt" => TargetKind::Prompt,
        _ => return None,
    };
    Some(PastCall {
        kind,
        server: value.get(1)?.as_str()?.to_owned(),
        name: value.get(2)?.as_str()?.to_owned(),
        timestamp_ms: value.get(3)?.as_u64()?,
    })
}

/// A Redis URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
