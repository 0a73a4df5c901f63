//! The sans-IO core: Consul's state and rules as a pure state machine.
//!
//! [`Consul::handle`] takes the time and one request and returns either a response or
//! [`Outcome::Blocked`] (a blocking query whose result has not moved past the caller's
//! index). Timers come out as [`Consul::next_deadline`] and are fed back through
//! [`Consul::advance`]. Nothing here reads a clock, touches a socket or knows of tokio, so
//! the same inputs always give the same outputs.

mod acl;
mod agent;
mod blocking;
mod catalog;
mod checks;
mod coordinate;
mod dc;
mod event;
mod filter;
mod gojson;
mod health;
mod json;
mod kv;
mod metrics;
mod operator;
mod pretty;
mod request;
mod session;
mod tables;
mod txn;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use blocking::{Changes, Watch};
pub use request::{BadTarget, SimRequest, Target};

use blocking::blocking_params;
pub(crate) use json::{
    CHECK_ALIASES, SERVICE_ALIASES, duration_field, field, go_kind, json_body, map_field,
    str_field, strings_field, to_map, translate_keys,
};

pub(crate) use catalog::ServiceState;
pub(crate) use checks::{CheckKind, CheckState};
pub(crate) use kv::KvTable;
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
    fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> SimResponse {
        // Written straight to bytes: nothing the core answers fails to serialize (string
        // keys only), and an empty body would be the answer if it ever did. An answer to
        // be indented is written indented at once (serde_json's four-space layout is Go's,
        // see `pretty`), with the newline that marks it done.
        let mut body = Vec::with_capacity(256);
        match pretty::write_nested(&mut body, value, 0) {
            Ok(()) if pretty::wanted() => body.push(b'\n'),
            Ok(()) => {}
            Err(_) => body.clear(),
        }
        SimResponse::json_bytes(status, body)
    }

    /// A JSON answer already written out.
    fn json_bytes(status: StatusCode, body: Vec<u8>) -> SimResponse {
        SimResponse {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: Bytes::from(body),
        }
    }

    /// A status with no body and no headers (Consul's answer to an unknown path).
    fn empty(status: StatusCode) -> SimResponse {
        SimResponse { status, headers: Vec::new(), body: Bytes::new() }
    }

    /// Go's ServeMux redirect to the cleaned path: 301 with `Location`, and for GET and
    /// HEAD the small HTML body `http.Redirect` writes.
    fn moved(method: &Method, location: String) -> SimResponse {
        let mut resp = SimResponse::empty(StatusCode::MOVED_PERMANENTLY);
        if method == Method::GET || method == Method::HEAD {
            resp.headers.push(("Content-Type", "text/html; charset=utf-8".into()));
            resp.body = Bytes::from(format!("<a href=\"{location}\">Moved Permanently</a>.\n\n"));
        }
        resp.headers.push(("Location", location));
        resp
    }

    fn text(status: StatusCode, text: impl Into<String>) -> SimResponse {
        SimResponse {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Bytes::from(text.into()),
        }
    }

    /// The answer as Consul's handler wrapper sends it: every endpoint's answer carries
    /// `Vary: Accept-Encoding` (its gzip handler adds it, whether or not the client asked
    /// for gzip); the mux's own answers (an unknown path, a redirect) do not.
    fn handled(mut self) -> SimResponse {
        if !self.headers.iter().any(|(name, _)| *name == VARY.0) {
            self.headers.push((VARY.0, VARY.1.into()));
        }
        self
    }

    /// A JSON answer indented as Consul indents it for `?pretty`; any other answer, or one
    /// written indented already (it ends with the newline), as it is.
    fn indented(mut self) -> SimResponse {
        let json = self
            .headers
            .iter()
            .any(|(name, value)| *name == "Content-Type" && value == "application/json");
        if json && !self.body.is_empty() && !self.body.ends_with(b"\n") {
            self.body = Bytes::from(pretty::indent(&self.body));
        }
        self
    }

    fn with_index(mut self, index: u64, known_leader: bool) -> SimResponse {
        self.headers.push(("X-Consul-Index", index.max(1).to_string()));
        self.headers.push(("X-Consul-KnownLeader", known_leader.to_string()));
        self.headers.push(("X-Consul-LastContact", "0".into()));
        self
    }
}

/// The header every answer of a Consul endpoint carries.
pub(crate) const VARY: (&str, &str) = ("Vary", "Accept-Encoding");

/// What the core did with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The answer.
    Done(SimResponse),
    /// A blocking query whose result index is still ≤ the caller's: ask again when a
    /// write concerns `watch` (see [`Consul::take_changes`]), or with `block = false` once
    /// `deadline` is reached.
    Blocked {
        /// The store index when the query parked.
        index: u64,
        /// When the wait ends (wait plus up to wait/16 of jitter).
        deadline: SimTime,
        /// What the query's answer depends on.
        watch: Watch,
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
    /// Sessions are invalidated `ttl × ttl_grace` after their last renewal. Consul 1.8.7
    /// reaps at 2×TTL (its `SessionTTLMultiplier`; measured: a TTL-10s session's lock was
    /// released 20.0 s after the last renew), so 2.0 is the default; tests that want the
    /// fast path set 1.0. Clamped to [1, 2].
    pub ttl_grace: f64,
    /// Largest KV value (Consul's default: 512 KiB).
    pub max_value_size: usize,
    /// Most operations in one transaction.
    pub max_txn_ops: usize,
    /// Seed of the random numbers (session ids, blocking jitter): same seed, same run. A
    /// long-lived agent should seed from OS randomness so ids differ between runs.
    pub seed: u64,
    /// Shortest session TTL accepted (Consul's agent option `session_ttl_min`, default 10 s).
    /// Lower it for real-time tests that must fail over in a few seconds.
    pub session_ttl_min: Duration,
    /// Run script checks (`Args`), like Consul's `enable_script_checks`; off by default, as
    /// in Consul, and registering one is then refused.
    pub enable_script_checks: bool,
    /// Indent every JSON answer, as Consul does in dev mode (`consul agent -dev`); without
    /// it, only answers to requests with `?pretty` are indented, as on any other agent.
    pub pretty: bool,
    /// The wall-clock time at sim time zero, since the Unix epoch. It only dates the
    /// intervals of `/v1/agent/metrics`, which Consul aligns to the clock's multiples of
    /// 10 s. `None`: [`Sim`](crate::Sim) reads the system clock when it starts; a bare
    /// [`Consul`] core counts from the epoch.
    pub wall_clock_start: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            node_name: "sim-node".into(),
            node_address: "127.0.0.1".into(),
            datacenter: "dc1".into(),
            ttl_grace: 2.0,
            max_value_size: 512 * 1024,
            max_txn_ops: 128,
            seed: 0x5eed,
            session_ttl_min: Duration::from_secs(10),
            enable_script_checks: false,
            pretty: false,
            wall_clock_start: None,
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
    pub(crate) kv: KvTable,
    /// Deleted keys and the index of their deletion, so blocking reads wake on deletes.
    pub(crate) tombstones: BTreeMap<Box<str>, u64>,
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
    /// The largest index of any catalog table.
    pub(crate) catalog_index: u64,
    /// The catalog's table indexes: what each catalog and health read reports.
    #[serde(default)]
    pub(crate) tables: tables::CatalogIndexes,
    pub(crate) rng: u64,
    /// Autopilot's configuration (`/v1/operator/autopilot/configuration`).
    #[serde(default)]
    pub(crate) autopilot: operator::AutopilotConfig,
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
    /// The undo log of the transaction being applied, if any.
    pub(crate) txn: Option<txn::UndoLog>,
    /// User events the agent received (agent memory, not raft: not in snapshots).
    pub(crate) events: event::Events,
    /// What changed since the adapter last took the changes.
    pub(crate) changes: Changes,
    /// The agent was asked to leave (`PUT /v1/agent/leave`): Consul stops serving and
    /// exits once it has answered.
    pub(crate) left: bool,
    /// The earliest timer deadline, as of the last full scan, and what the timers looked
    /// like then. See [`advance`](Self::advance).
    timers: Option<(TimerGeneration, Option<SimTime>)>,
    /// What `/v1/agent/metrics` shows.
    pub(crate) metrics: metrics::Metrics,
    /// The latest time the core was given: when the metrics of a write are recorded.
    clock: SimTime,
}

/// What changes whenever a timer may start earlier than the ones already known: a session
/// or lock-delay created (the session table's index, the number of delays), a check
/// registered or changing status (the catalog's index), the leader lost or back. Renewals
/// and check updates only move deadlines later, which a cached earliest deadline survives
/// (it just wakes early once).
type TimerGeneration = (u64, u64, usize, bool);

impl Consul {
    /// A fresh store: the agent's node registered as a Consul server registers itself.
    pub fn new(config: SimConfig) -> Consul {
        let metrics = metrics::Metrics::new(config.wall_clock_start.unwrap_or_default());
        let mut c = Consul {
            state: State { rng: config.seed | 1, ..Default::default() },
            config,
            leader_lost: false,
            txn: None,
            events: event::Events::default(),
            changes: Changes::default(),
            left: false,
            timers: None,
            metrics,
            clock: SimTime::default(),
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

    /// True once the agent was asked to leave (`PUT /v1/agent/leave`): a server adapter
    /// stops serving after that answer, as Consul's agent shuts down and exits.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// The next index, for a write.
    pub(crate) fn bump(&mut self) -> u64 {
        self.changes.other = true;
        self.bump_kv()
    }

    /// The next index, for a write to KV keys only (each key is noted by `touched_key`).
    pub(crate) fn bump_kv(&mut self) -> u64 {
        self.state.index += 1;
        self.measure(metrics::Fixed::RaftApply);
        self.state.index
    }

    /// Records one of the core's metrics (a sample of the sim's own duration: none).
    pub(crate) fn measure(&mut self, metric: metrics::Fixed) {
        let (state, healthy) = (&self.state, !self.leader_lost);
        self.metrics.record(self.clock, metric, 0.0, || gauges(state, healthy));
    }

    /// Starts the metrics afresh, at sim time zero: a process that replayed an old run's
    /// log (whose times were that run's) begins with no metrics, as a restarted Consul does.
    pub(crate) fn forget_metrics(&mut self) {
        let wall_start = self.config.wall_clock_start.unwrap_or_default();
        self.metrics = metrics::Metrics::new(wall_start);
        self.clock = SimTime::default();
    }

    /// `/v1/agent/metrics` at `now`.
    pub(crate) fn metrics_json(&mut self, now: SimTime) -> metrics::Summary {
        let (state, healthy) = (&self.state, !self.leader_lost);
        self.metrics.display(now, || gauges(state, healthy))
    }

    /// Mixes `seed` into the random generator (session ids, jitter). An agent seeded from
    /// OS randomness calls it after restoring a snapshot, so ids never repeat across runs.
    pub fn reseed(&mut self, seed: u64) {
        self.state.rng = (self.state.rng ^ seed.rotate_left(17)) | 1;
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

    /// A session id from the seeded generator: 128 random bits written as a UUID, as
    /// Consul's `go-uuid` does (no version or variant bits: real ids look like
    /// `78898041-3fe5-6ea5-d217-b43f4fe01ba6`).
    pub(crate) fn uuid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xffff,
            b >> 48,
            b & 0xffff_ffff_ffff
        )
    }

    /// Handles one request at `now`. With `block`, a blocking query whose result has not
    /// moved past its `?index` parks ([`Outcome::Blocked`]); without, it answers anyway.
    pub fn handle(&mut self, now: SimTime, req: &SimRequest, block: bool) -> Outcome {
        self.advance(now);
        // What Go's net/http and ServeMux answer before Consul's handlers see the request.
        match BadTarget::check(&req.target) {
            Err(BadTarget::Path(_)) => {
                return Outcome::Done(SimResponse::text(
                    StatusCode::BAD_REQUEST,
                    "400 Bad Request",
                ));
            }
            Err(BadTarget::Query(_)) => {
                return Outcome::Done(SimResponse::empty(StatusCode::INTERNAL_SERVER_ERROR));
            }
            Ok(()) => {}
        }
        if !request::printable_path(&req.target) {
            return Outcome::Done(SimResponse::empty(StatusCode::BAD_REQUEST));
        }
        if let Some(location) =
            request::clean_redirect(&req.target).or_else(|| request::subtree_redirect(&req.target))
        {
            return Outcome::Done(SimResponse::moved(&req.method, location));
        }
        if req.target == "/" || req.target.starts_with("/?") {
            // The agent's index page with the UI off: the same words for every method.
            return Outcome::Done(SimResponse::text(StatusCode::OK, "Consul Agent"));
        }
        match self.endpoint(now, req, block) {
            Ok(Outcome::Done(resp)) => Outcome::Done(resp.handled()),
            Ok(blocked) => blocked,
            Err(mux) => Outcome::Done(mux),
        }
    }

    /// The request as the endpoint its path names handles it, or `Err` with the mux's own
    /// answer when no endpoint serves the path.
    pub(crate) fn endpoint(
        &mut self,
        now: SimTime,
        req: &SimRequest,
        block: bool,
    ) -> Result<Outcome, SimResponse> {
        let target = match Target::parse_checked(&req.target) {
            Ok(t) => t,
            Err(msg) => return Ok(Outcome::Done(SimResponse::text(StatusCode::BAD_REQUEST, msg))),
        };
        let pretty = self.config.pretty || target.flag("pretty");
        let outcome = pretty::scope(pretty, || self.dispatch(now, req, &target, block))?;
        if let Outcome::Done(_) = outcome {
            // Consul times every request its handlers answer, under the handler's pattern.
            let (state, healthy) = (&self.state, !self.leader_lost);
            let (method, path) = (&req.method, target.path.as_str());
            self.metrics.http(now, method, path, 0.0, || gauges(state, healthy));
        }
        Ok(match outcome {
            Outcome::Done(resp) if pretty => Outcome::Done(resp.indented()),
            other => other,
        })
    }

    /// [`endpoint`](Self::endpoint) once the target is parsed.
    fn dispatch(
        &mut self,
        now: SimTime,
        req: &SimRequest,
        target: &Target,
        block: bool,
    ) -> Result<Outcome, SimResponse> {
        match self.wrong_datacenter(now, req, target) {
            Some(Ok(resp)) => return Ok(Outcome::Done(resp)),
            Some(Err(mux)) => return Err(mux),
            None => {}
        }
        let path = target.path.as_str();
        if self.leader_lost && !path.starts_with("/v1/status/") && !path.starts_with("/v1/agent/") {
            return Ok(Outcome::Done(SimResponse::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "No cluster leader",
            )));
        }
        if req.method == Method::GET && target.flag("stale") && target.flag("consistent") {
            return Ok(Outcome::Done(SimResponse::text(
                StatusCode::BAD_REQUEST,
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            )));
        }
        let wait = match blocking_params(target) {
            Ok(w) => w,
            Err(msg) => return Ok(Outcome::Done(SimResponse::text(StatusCode::BAD_REQUEST, msg))),
        };
        let reply = self.route(now, req, target);
        let reply = match reply {
            Ok(r) => r,
            // A read that found nothing (404 with an index) blocks like any other read:
            // Consul wakes it when the key appears.
            Err(e) => match (e.index, wait) {
                (Some(index), Some((min_index, wait)))
                    if block && e.status == StatusCode::NOT_FOUND && index <= min_index =>
                {
                    return Ok(self.park(now, wait, target));
                }
                _ if e.mux => return Err(e.into_response()),
                _ => return Ok(Outcome::Done(e.into_response())),
            },
        };
        Ok(match (reply, wait) {
            (Reply::Read { index, response }, Some((min_index, wait)))
                if block && index <= min_index =>
            {
                let _ = response;
                self.park(now, wait, target)
            }
            (Reply::Read { index, response }, _) => {
                Outcome::Done(response.with_index(index, !self.leader_lost))
            }
            (Reply::Watch { moved: false, .. }, Some((_, wait))) if block => {
                self.park(now, wait, target)
            }
            (Reply::Watch { response, .. }, _) => Outcome::Done(response),
            // An answer that never comes (the agent's log stream, with nothing to log):
            // parked until the caller gives up; unparked, a bare 200.
            (Reply::Endless, _) if block => Outcome::Blocked {
                index: self.index(),
                deadline: now.after(ENDLESS),
                watch: Watch::Never,
            },
            (Reply::Endless, _) => Outcome::Done(SimResponse::empty(StatusCode::OK)),
            (Reply::Write(response), _) => Outcome::Done(response),
        })
    }

    fn route(&mut self, now: SimTime, req: &SimRequest, t: &Target) -> Result<Reply, ApiError> {
        let path = t.path.as_str();
        let m = &req.method;
        if let Some(key) = path.strip_prefix("/v1/kv/") {
            return self.kv_endpoint(now, m, key, t, req);
        }
        if let Some(rest) = path.strip_prefix("/v1/acl/") {
            return self.acl_endpoint(m, rest);
        }
        if path == "/v1/txn" {
            expect(m, &Method::PUT, path)?;
            return self.txn_endpoint(now, &req.body);
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
        if let Some(rest) = path.strip_prefix("/v1/operator/") {
            return self.operator_endpoint(now, m, rest, t, &req.body);
        }
        if let Some(rest) = path.strip_prefix("/v1/event/") {
            return self.event_endpoint(m, rest, t, &req.body);
        }
        if let Some(rest) = path.strip_prefix("/v1/coordinate/") {
            return self.coordinate_endpoint(m, rest, t, &req.body);
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
            _ => Err(ApiError::no_endpoint()),
        }
    }

    fn leader_addr(&self) -> String {
        format!("{}:8300", self.config.node_address)
    }

    /// Runs every timer due by `now`: session TTLs, check TTLs, lock-delays, reaping.
    ///
    /// Every request runs this first, so it must not cost O(sessions + checks) each time:
    /// the earliest deadline is kept from the last full pass and the pass is skipped while
    /// `now` is before it and no timer could have started earlier since.
    pub fn advance(&mut self, now: SimTime) {
        self.clock = self.clock.max(now);
        if let Some((generation, due)) = self.timers
            && generation == self.timer_generation()
            && due.is_none_or(|d| now < d)
        {
            return;
        }
        self.expire_sessions(now);
        self.expire_checks(now);
        self.reap_critical_services(now);
        self.state.lock_delays.retain(|_, until| *until > now);
        self.timers = Some((self.timer_generation(), self.scan_deadlines()));
    }

    fn timer_generation(&self) -> TimerGeneration {
        (
            self.state.session_index,
            self.state.catalog_index,
            self.state.lock_delays.len(),
            self.leader_lost,
        )
    }

    /// The earliest time at which [`advance`](Self::advance) has something to do (possibly
    /// a little early: a renewed session's old deadline).
    pub fn next_deadline(&self) -> Option<SimTime> {
        match self.timers {
            Some((generation, due)) if generation == self.timer_generation() => due,
            _ => self.scan_deadlines(),
        }
    }

    /// A change since the last time the timers were looked at that may bring a deadline
    /// earlier: the driver must look again.
    pub(crate) fn timers_may_be_earlier(&self) -> bool {
        self.timers.is_none_or(|(generation, _)| generation != self.timer_generation())
    }

    fn scan_deadlines(&self) -> Option<SimTime> {
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
        // A snapshot from before the sim kept table indexes: every table at the catalog's.
        if state.tables == tables::CatalogIndexes::default() {
            let i = state.catalog_index;
            (state.tables.nodes, state.tables.services, state.tables.checks) = (i, i, i);
        }
        self.state = state;
        self.index_held_keys();
        self.timers = None;
        Ok(())
    }
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
    /// A stream that sends nothing (`agent/monitor`): Consul writes no status line until
    /// its first log line.
    Endless,
}

/// How long an [`Reply::Endless`] answer stays parked: a century, for ever in practice.
const ENDLESS: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Reply {
    pub(crate) fn read(index: u64, response: SimResponse) -> Reply {
        Reply::Read { index, response }
    }

    pub(crate) fn write(response: SimResponse) -> Reply {
        Reply::Write(response)
    }

    pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
        Reply::Write(SimResponse::json(StatusCode::OK, value))
    }

    pub(crate) fn read_json<T: Serialize + ?Sized>(index: u64, value: &T) -> Reply {
        Reply::Read { index, response: SimResponse::json(StatusCode::OK, value) }
    }
}

/// An error answer: a status and Consul's message.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    index: Option<u64>,
    /// `X-Consul-KnownLeader` for errors that carry query metadata.
    known_leader: bool,
    /// The `Allow` header of a 405.
    allow: Option<String>,
    /// The answer is the mux's (no endpoint serves the path), not an endpoint's.
    mux: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            index: None,
            known_leader: true,
            allow: None,
            mux: false,
        }
    }

    /// A path no endpoint serves: Consul's mux answers a bare 404, no body, no type.
    pub(crate) fn no_endpoint() -> ApiError {
        ApiError { mux: true, ..ApiError::new(StatusCode::NOT_FOUND, "") }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found_at(index: u64) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: String::new(),
            index: Some(index),
            known_leader: true,
            allow: None,
            mux: false,
        }
    }

    /// The same error with the query metadata Consul sends when a read's RPC failed before
    /// it ran: `X-Consul-Index: 1`, `X-Consul-KnownLeader: false`.
    pub(crate) fn with_failed_read_meta(mut self) -> ApiError {
        self.index = Some(1);
        self.known_leader = false;
        self
    }

    fn into_response(self) -> SimResponse {
        // Go's net/http sets no Content-Type on an empty body (a 404 for a missing key).
        let mut resp = if self.message.is_empty() {
            SimResponse { status: self.status, headers: Vec::new(), body: Bytes::new() }
        } else {
            SimResponse::text(self.status, self.message)
        };
        if let Some(allow) = self.allow {
            resp.headers.push(("Allow", allow));
        }
        match self.index {
            Some(i) => resp.with_index(i, self.known_leader),
            None => resp,
        }
    }
}

/// The gauges of `/v1/agent/metrics` as the store stands.
fn gauges(state: &State, healthy: bool) -> metrics::Gauges {
    let ttl_sessions = state.sessions.values().filter(|s| s.ttl.is_some()).count();
    metrics::Gauges { index: state.index, ttl_sessions, healthy }
}

pub(crate) fn expect(actual: &Method, want: &Method, _path: &str) -> Result<(), ApiError> {
    if actual == want {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(actual, &format!("OPTIONS,{want}")))
    }
}

impl ApiError {
    /// 405 with Consul's text and its `Allow` header (`OPTIONS,GET`…); to `OPTIONS`, which
    /// every endpoint takes, an empty 200 with that header, as Consul answers it.
    pub(crate) fn method_not_allowed(actual: &Method, allow: &str) -> ApiError {
        let mut e = if actual == Method::OPTIONS {
            ApiError::new(StatusCode::OK, "")
        } else {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("method {actual} not allowed"))
        };
        e.allow = Some(allow.to_string());
        e
    }
}
