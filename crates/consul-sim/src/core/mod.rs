//! The sans-IO core: Consul's state and rules as a pure state machine.
//!
//! [`Consul::handle`] takes the time and one request and returns either a response or
//! [`Outcome::Blocked`] (a blocking query whose result has not moved past the caller's
//! index). Timers come out as [`Consul::next_deadline`] and are fed back through
//! [`Consul::advance`]. Nothing here reads a clock, touches a socket or knows of tokio, so
//! the same inputs always give the same outputs.

mod agent;
mod catalog;
mod checks;
mod coordinate;
mod dc;
mod event;
mod filter;
mod health;
mod kv;
mod request;
mod session;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use request::{SimRequest, Target};

pub(crate) use catalog::ServiceState;
pub(crate) use checks::{CheckKind, CheckState};
pub(crate) use kv::KvEntry;
pub(crate) use session::SessionState;

/// Time as the simulator sees it: how long since it started. Injected by the caller.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SimTime(pub Duration);

impl SimTime {
    /// The time `d` later.
    pub fn after(self, d: Duration) -> SimTime {
        SimTime(self.0.saturating_add(d))
    }
}

/// A response from the core: status, headers and body, exactly as Consul would send them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers (`X-Consul-Index`, `Content-Type`, …).
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

impl SimResponse {
    fn json(status: StatusCode, value: &Value) -> SimResponse {
        SimResponse {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: Bytes::from(value.to_string()),
        }
    }

    fn text(status: StatusCode, text: impl Into<String>) -> SimResponse {
        SimResponse {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Bytes::from(text.into()),
        }
    }

    fn with_index(mut self, index: u64, known_leader: bool) -> SimResponse {
        self.headers.push(("X-Consul-Index", index.max(1).to_string()));
        self.headers.push(("X-Consul-KnownLeader", known_leader.to_string()));
        self.headers.push(("X-Consul-LastContact", "0".into()));
        self
    }
}

/// What the core did with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer.
    Done(SimResponse),
    /// A blocking query whose result index is still ≤ the caller's: ask again when the
    /// store's index passes `index`, or with `block = false` once `deadline` is reached.
    Blocked {
        /// The store index when the query parked.
        index: u64,
        /// When the wait ends (wait plus up to wait/16 of jitter).
        deadline: SimTime,
    },
}

/// How the simulated agent is set up.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// The agent's node name.
    pub node_name: String,
    /// The agent's address.
    pub node_address: String,
    /// The datacenter.
    pub datacenter: String,
    /// Sessions are invalidated `ttl × ttl_grace` after their last renewal. Consul promises
    /// only "up to 2×TTL"; 1.0 is the fastest, 2.0 the worst case. Clamped to [1, 2].
    pub ttl_grace: f64,
    /// Largest KV value (Consul's default: 512 KiB).
    pub max_value_size: usize,
    /// Most operations in one transaction.
    pub max_txn_ops: usize,
    /// Seed of the random numbers (session ids, blocking jitter): same seed, same run.
    pub seed: u64,
    /// Shortest session TTL accepted (Consul's agent option `session_ttl_min`, default 10 s).
    /// Lower it for real-time tests that must fail over in a few seconds.
    pub session_ttl_min: Duration,
    /// Run script checks (`Args`), like Consul's `enable_script_checks`; off by default, as
    /// in Consul, and registering one is then refused.
    pub enable_script_checks: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            node_name: "sim-node".into(),
            node_address: "127.0.0.1".into(),
            datacenter: "dc1".into(),
            ttl_grace: 1.0,
            max_value_size: 512 * 1024,
            max_txn_ops: 128,
            seed: 0x5eed,
            session_ttl_min: Duration::from_secs(10),
            enable_script_checks: false,
        }
    }
}

/// A catalog node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeState {
    pub(crate) id: String,
    pub(crate) address: String,
    pub(crate) meta: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) tagged_addresses: BTreeMap<String, String>,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

/// The whole store: what a snapshot saves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) index: u64,
    pub(crate) kv: BTreeMap<String, KvEntry>,
    /// Deleted keys and the index of their deletion, so blocking reads wake on deletes.
    pub(crate) tombstones: BTreeMap<String, u64>,
    pub(crate) kv_index: u64,
    pub(crate) sessions: BTreeMap<String, SessionState>,
    pub(crate) session_index: u64,
    /// Keys in lock-delay, and until when.
    pub(crate) lock_delays: BTreeMap<String, SimTime>,
    pub(crate) nodes: BTreeMap<String, NodeState>,
    /// Services by (node, service id).
    #[serde(with = "pair_keyed")]
    pub(crate) services: BTreeMap<(String, String), ServiceState>,
    /// Checks by (node, check id).
    #[serde(with = "pair_keyed")]
    pub(crate) checks: BTreeMap<(String, String), CheckState>,
    pub(crate) catalog_index: u64,
    pub(crate) rng: u64,
}

/// Maps keyed by (node, id), stored in snapshots as lists of entries: JSON object keys must
/// be strings.
mod pair_keyed {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<V: Serialize, S: Serializer>(
        map: &BTreeMap<(String, String), V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(String, String), V>, D::Error> {
        Ok(Vec::<((String, String), V)>::deserialize(d)?.into_iter().collect())
    }
}

/// An in-memory Consul agent and server. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Consul {
    pub(crate) config: SimConfig,
    pub(crate) state: State,
    /// Fault: no raft leader; every request but `/v1/status/*` fails with 500.
    pub(crate) leader_lost: bool,
    /// User events the agent received (agent memory, not raft: not in snapshots).
    pub(crate) events: event::Events,
}

impl Consul {
    /// A fresh store: the agent's node registered as a Consul server registers itself.
    pub fn new(config: SimConfig) -> Consul {
        let mut c = Consul {
            state: State { rng: config.seed | 1, ..Default::default() },
            config,
            leader_lost: false,
            events: event::Events::default(),
        };
        c.register_agent_node();
        c
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The store's raft index: grows with every write, never 0.
    pub fn index(&self) -> u64 {
        self.state.index.max(1)
    }

    /// Fault injection: lose (or regain) the raft leader.
    pub fn set_leader_lost(&mut self, lost: bool) {
        self.leader_lost = lost;
    }

    /// True while the leader is lost.
    pub fn leader_lost(&self) -> bool {
        self.leader_lost
    }

    /// The next index, for a write.
    pub(crate) fn bump(&mut self) -> u64 {
        self.state.index += 1;
        self.state.index
    }

    /// A pseudo-random number (xorshift64*), seeded by the config.
    pub(crate) fn random(&mut self) -> u64 {
        let mut x = self.state.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A UUID-shaped id from the seeded generator.
    pub(crate) fn uuid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Handles one request at `now`. With `block`, a blocking query whose result has not
    /// moved past its `?index` parks ([`Outcome::Blocked`]); without, it answers anyway.
    pub fn handle(&mut self, now: SimTime, req: &SimRequest, block: bool) -> Outcome {
        self.advance(now);
        let target = match Target::parse(&req.target) {
            Ok(t) => t,
            Err(msg) => return Outcome::Done(SimResponse::text(StatusCode::BAD_REQUEST, msg)),
        };
        if let Some(resp) = self.wrong_datacenter(&req.method, &target) {
            return Outcome::Done(resp);
        }
        let path = target.path.as_str();
        if self.leader_lost && !path.starts_with("/v1/status/") && !path.starts_with("/v1/agent/") {
            return Outcome::Done(SimResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No cluster leader",
            ));
        }
        let wait = match blocking_params(&target) {
            Ok(w) => w,
            Err(msg) => return Outcome::Done(SimResponse::text(StatusCode::BAD_REQUEST, msg)),
        };
        let reply = self.route(now, req, &target);
        let reply = match reply {
            Ok(r) => r,
            // A read that found nothing (404 with an index) blocks like any other read:
            // Consul wakes it when the key appears.
            Err(e) => match (e.index, wait) {
                (Some(index), Some((min_index, wait))) if block && index <= min_index => {
                    return self.park(now, wait);
                }
                _ => return Outcome::Done(e.into_response()),
            },
        };
        match (reply, wait) {
            (Reply::Read { index, response }, Some((min_index, wait)))
                if block && index <= min_index =>
            {
                let _ = response;
                self.park(now, wait)
            }
            (Reply::Read { index, response }, _) => {
                Outcome::Done(response.with_index(index, !self.leader_lost))
            }
            (Reply::Watch { moved: false, .. }, Some((_, wait))) if block => self.park(now, wait),
            (Reply::Watch { response, .. }, _) => Outcome::Done(response),
            (Reply::Write(response), _) => Outcome::Done(response),
        }
    }

    fn route(&mut self, now: SimTime, req: &SimRequest, t: &Target) -> Result<Reply, ApiError> {
        let path = t.path.as_str();
        let m = &req.method;
        if let Some(key) = path.strip_prefix("/v1/kv/") {
            return self.kv_endpoint(now, m, key, t, &req.body);
        }
        if path == "/v1/kv" {
            return Err(ApiError::bad_request("Missing key name"));
        }
        if path == "/v1/txn" {
            expect(m, &Method::PUT, path)?;
            return self.txn_endpoint(now, t, &req.body);
        }
        if let Some(rest) = path.strip_prefix("/v1/session/") {
            return self.session_endpoint(now, m, rest, t, &req.body);
        }
        if let Some(rest) = path.strip_prefix("/v1/agent/") {
            return self.agent_endpoint(now, m, rest, t, &req.body);
        }
        if let Some(rest) = path.strip_prefix("/v1/catalog/") {
            return self.catalog_endpoint(now, m, rest, t, &req.body);
        }
        if let Some(rest) = path.strip_prefix("/v1/event/") {
            return self.event_endpoint(m, rest, t, &req.body);
        }
        if let Some(rest) = path.strip_prefix("/v1/coordinate/") {
            return self.coordinate_endpoint(m, rest, t);
        }
        if let Some(rest) = path.strip_prefix("/v1/health/") {
            expect(m, &Method::GET, path)?;
            return self.health_endpoint(rest, t);
        }
        match path {
            "/v1/status/leader" => {
                expect(m, &Method::GET, path)?;
                let leader = if self.leader_lost { String::new() } else { self.leader_addr() };
                Ok(Reply::write(SimResponse::json(StatusCode::OK, &json!(leader))))
            }
            "/v1/status/peers" => {
                expect(m, &Method::GET, path)?;
                Ok(Reply::write(SimResponse::json(StatusCode::OK, &json!([self.leader_addr()]))))
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "404 page not found")),
        }
    }

    fn leader_addr(&self) -> String {
        format!("{}:8300", self.config.node_address)
    }

    /// Parks a blocking read until the index moves or `wait` (plus up to wait/16 of
    /// jitter, as Consul adds) passes.
    fn park(&mut self, now: SimTime, wait: Duration) -> Outcome {
        let jitter = if wait.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.random() % (wait.as_nanos() as u64 / 16 + 1))
        };
        Outcome::Blocked { index: self.index(), deadline: now.after(wait + jitter) }
    }

    /// Runs every timer due by `now`: session TTLs, check TTLs, lock-delays, reaping.
    pub fn advance(&mut self, now: SimTime) {
        self.expire_sessions(now);
        self.expire_checks(now);
        self.reap_critical_services(now);
        self.state.lock_delays.retain(|_, until| *until > now);
    }

    /// The earliest time at which [`advance`](Self::advance) has something to do.
    pub fn next_deadline(&self) -> Option<SimTime> {
        let sessions = self.state.sessions.values().filter_map(|s| s.expires_at(self.grace()));
        let checks = self.state.checks.values().filter_map(|c| c.ttl_deadline());
        let reaps = self.state.checks.values().filter_map(|c| c.reap_deadline());
        let delays = self.state.lock_delays.values().copied();
        sessions.chain(checks).chain(reaps).chain(delays).min()
    }

    pub(crate) fn grace(&self) -> f64 {
        self.config.ttl_grace.clamp(1.0, 2.0)
    }

    /// HTTP and TCP checks due by `now`: (node, check id, kind), to be run by the adapter
    /// and reported back with [`record_check`](Self::record_check).
    pub fn due_checks(&mut self, now: SimTime) -> Vec<(String, String, CheckKind)> {
        let mut due = Vec::new();
        for ((node, id), c) in self.state.checks.iter_mut() {
            if let Some(interval) = c.kind.interval()
                && c.next_run.is_none_or(|t| t <= now)
            {
                c.next_run = Some(now.after(interval));
                due.push((node.clone(), id.clone(), c.kind.clone()));
            }
        }
        due
    }

    /// The earliest next run of an HTTP or TCP check.
    pub fn next_check_run(&self) -> Option<SimTime> {
        self.state
            .checks
            .values()
            .filter(|c| c.kind.interval().is_some())
            .map(|c| c.next_run.unwrap_or_default())
            .min()
    }

    /// Records the result of a check run by the adapter.
    pub fn record_check(&mut self, now: SimTime, node: &str, id: &str, status: &str, output: &str) {
        let key = (node.to_string(), id.to_string());
        if self.state.checks.contains_key(&key) {
            self.set_check_status(now, node, id, status, output);
        }
    }

    /// Writes a snapshot of the whole store as JSON.
    pub fn snapshot(&self) -> Result<Vec<u8>, String> {
        serde_json::to_vec(&self.state).map_err(|e| format!("cannot encode a snapshot: {e}"))
    }

    /// Restores a snapshot. Session TTLs and check TTLs restart from `now`, as after a
    /// Consul leader election.
    pub fn restore(&mut self, now: SimTime, snapshot: &[u8]) -> Result<(), String> {
        let mut state: State = serde_json::from_slice(snapshot)
            .map_err(|e| format!("the snapshot is not readable: {e}"))?;
        for s in state.sessions.values_mut() {
            s.renewed_at = now;
        }
        for c in state.checks.values_mut() {
            c.restart(now);
        }
        state.lock_delays.clear();
        self.state = state;
        Ok(())
    }
}

/// `?index` and `?wait` of a blocking read: `None` when the query does not block.
fn blocking_params(t: &Target) -> Result<Option<(u64, Duration)>, String> {
    let Some(index) = t.param("index") else { return Ok(None) };
    let index: u64 =
        index.parse().map_err(|_| format!("Invalid index {index:?}: not a whole number"))?;
    let wait = match t.param("wait") {
        None | Some("") => Duration::from_secs(300),
        Some(w) => consul_api::types::parse_duration(w)
            .ok_or_else(|| format!("Invalid wait time {w:?}"))?,
    };
    if index == 0 {
        return Ok(None);
    }
    Ok(Some((index, wait.min(Duration::from_secs(600)))))
}

/// What an endpoint produced: a read (blockable, carries an index) or a write.
pub(crate) enum Reply {
    Read {
        index: u64,
        response: SimResponse,
    },
    Write(SimResponse),
    /// A blockable read whose index is not ordered (the event list's hash): it blocks
    /// while `moved` is false, and carries its own headers.
    Watch {
        moved: bool,
        response: SimResponse,
    },
}

impl Reply {
    pub(crate) fn read(index: u64, response: SimResponse) -> Reply {
        Reply::Read { index, response }
    }

    pub(crate) fn write(response: SimResponse) -> Reply {
        Reply::Write(response)
    }

    pub(crate) fn json(value: &Value) -> Reply {
        Reply::Write(SimResponse::json(StatusCode::OK, value))
    }

    pub(crate) fn read_json(index: u64, value: &Value) -> Reply {
        Reply::Read { index, response: SimResponse::json(StatusCode::OK, value) }
    }
}

/// An error answer: a status and Consul's message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    index: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), index: None }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found_at(index: u64) -> ApiError {
        ApiError { status: StatusCode::NOT_FOUND, message: String::new(), index: Some(index) }
    }

    fn into_response(self) -> SimResponse {
        let resp = SimResponse::text(self.status, self.message);
        match self.index {
            Some(i) => resp.with_index(i, true),
            None => resp,
        }
    }
}

pub(crate) fn expect(actual: &Method, want: &Method, _path: &str) -> Result<(), ApiError> {
    if actual == want {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("method {actual} not allowed")))
    }
}

/// Decodes a JSON body, naming what is wrong.
pub(crate) fn json_body(body: &[u8], what: &str) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Request decode failed for {what}: {e}")))
}

/// A field of a JSON object, matched case-insensitively as Consul's decoder does.
pub(crate) fn field<'v>(obj: &'v Value, name: &str) -> Option<&'v Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

pub(crate) fn str_field(obj: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!("{name} must be a string, got {other}"))),
    }
}

/// A duration field: a Go string (`"10s"`) or integer nanoseconds.
pub(crate) fn duration_field(obj: &Value, name: &str) -> Result<Option<Duration>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => consul_api::types::parse_duration(s)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name}: invalid duration {s:?}"))),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some(Duration::from_nanos(n)))
            .ok_or_else(|| ApiError::bad_request(format!("{name}: invalid duration {n}"))),
        Some(other) => Err(ApiError::bad_request(format!("{name}: invalid duration {other}"))),
    }
}

/// Maps of string to string, as JSON (`Meta`).
pub(crate) fn map_field(obj: &Value, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match field(obj, name) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::bad_request(format!("{name}.{k} must be a string"))),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be an object"))),
    }
}

/// A list of strings (`Tags`).
pub(crate) fn strings_field(obj: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    match field(obj, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must hold strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a list"))),
    }
}

pub(crate) fn to_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}
