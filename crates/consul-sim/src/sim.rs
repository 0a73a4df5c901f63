//! The tokio adapter around the core: one shared simulator, its timers, its faults, and the
//! in-process [`SimTransport`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use consul_api::{Client, Error, Request, Response, Transport};
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use crate::core::{
    Changes, CheckKind, Consul, Outcome, SimConfig, SimRequest, SimResponse, SimTime, Watch,
};
use crate::persist::{self, DataDir, Op};

/// Why a request got no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The client is partitioned from the simulator: nothing was sent.
    Partitioned,
    /// The request was applied but its response was dropped: the outcome is unknown to
    /// the client.
    ResponseDropped,
}

#[derive(Debug, Default)]
struct Faults {
    partitioned: HashSet<String>,
    latency: Duration,
    drop_responses: HashMap<String, u32>,
}

type Wakers = HashMap<u64, oneshot::Sender<()>>;

/// Parked blocking reads, indexed by what they watch: a write wakes only the reads whose
/// answer it may change, so its cost does not grow with reads parked elsewhere.
#[derive(Debug, Default)]
struct Parked {
    next_id: u64,
    keys: HashMap<String, Wakers>,
    prefixes: BTreeMap<String, Wakers>,
    any_kv: Wakers,
    non_kv: Wakers,
    /// Reads that no write wakes (an endless stream), kept so they can leave.
    never: Wakers,
}

impl Parked {
    fn slot(&mut self, watch: &Watch) -> &mut Wakers {
        match watch {
            Watch::Key(k) => self.keys.entry(k.clone()).or_default(),
            Watch::Prefix(p) => self.prefixes.entry(p.clone()).or_default(),
            Watch::AnyKv => &mut self.any_kv,
            Watch::NonKv => &mut self.non_kv,
            Watch::Never => &mut self.never,
        }
    }

    fn park(&mut self, watch: &Watch) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        let id = self.next_id;
        self.slot(watch).insert(id, tx);
        (id, rx)
    }

    fn leave(&mut self, watch: &Watch, id: u64) {
        match watch {
            Watch::Key(k) => {
                if let Some(w) = self.keys.get_mut(k) {
                    w.remove(&id);
                    if w.is_empty() {
                        self.keys.remove(k);
                    }
                }
            }
            Watch::Prefix(p) => {
                if let Some(w) = self.prefixes.get_mut(p) {
                    w.remove(&id);
                    if w.is_empty() {
                        self.prefixes.remove(p);
                    }
                }
            }
            Watch::AnyKv | Watch::NonKv | Watch::Never => {
                self.slot(watch).remove(&id);
            }
        }
    }

    /// Wakes every read that `changes` concern: O(changed keys × key length + woken).
    fn wake(&mut self, changes: &Changes) {
        let fire = |w: Wakers| {
            for tx in w.into_values() {
                let _ = tx.send(());
            }
        };
        if changes.other {
            fire(std::mem::take(&mut self.non_kv));
        }
        if changes.all_kv {
            fire(std::mem::take(&mut self.any_kv));
            std::mem::take(&mut self.keys).into_values().for_each(fire);
            std::mem::take(&mut self.prefixes).into_values().for_each(fire);
            return;
        }
        if changes.keys.is_empty() {
            return;
        }
        fire(std::mem::take(&mut self.any_kv));
        for key in &changes.keys {
            if let Some(w) = self.keys.remove(key) {
                fire(w);
            }
            if self.prefixes.is_empty() {
                continue;
            }
            for (i, _) in key.char_indices().chain([(key.len(), ' ')]) {
                if let Some(w) = self.prefixes.remove(&key[..i]) {
                    fire(w);
                }
            }
        }
    }
}

/// Takes a parked read out of [`Parked`] when its wait ends in any way (woken, timed out,
/// or the caller gave up).
struct Parking<'s> {
    shared: &'s Shared,
    watch: Watch,
    id: u64,
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        let mut parked = self.shared.parked.lock().unwrap_or_else(|p| p.into_inner());
        parked.leave(&self.watch, self.id);
    }
}

#[derive(Debug)]
struct Shared {
    core: Mutex<Consul>,
    parked: Mutex<Parked>,
    start: Instant,
    index: watch::Sender<u64>,
    /// Turns true once the agent was asked to leave.
    left: watch::Sender<bool>,
    timers_changed: Arc<Notify>,
    faults: Mutex<Faults>,
    /// The write-ahead log and snapshots, with `--data-dir`.
    data: Option<DataDir>,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Ok(mut d) = self.driver.lock()
            && let Some(h) = d.take()
        {
            h.abort();
        }
    }
}

/// A running simulator. Cheap to clone: clones share one store.
///
/// Time is tokio's: under `#[tokio::test(start_paused = true)]` TTLs and blocking waits run
/// in microseconds, deterministically.
#[derive(Clone, Debug)]
pub struct Sim {
    shared: Arc<Shared>,
}

impl Sim {
    /// Starts a simulator with `config`. Must be called inside a tokio runtime.
    pub fn new(config: SimConfig) -> Sim {
        Sim::build(Consul::new(dated(config)), None)
    }

    /// Starts a simulator that keeps its store in `dir`: every write is logged and fsynced
    /// before it is applied, and snapshots are taken as the log grows. Restores the store
    /// found there (snapshot plus log); a damaged file is an error naming it. See
    /// [`persist`](crate::persist) for the files, the fsync policy and the snapshot cadence.
    pub fn with_data_dir(config: SimConfig, dir: impl Into<PathBuf>) -> Result<Sim, String> {
        let (data, core) = DataDir::open(dated(config), &dir.into())?;
        Ok(Sim::build(core, Some(data)))
    }

    fn build(core: Consul, data: Option<DataDir>) -> Sim {
        let (index, _) = watch::channel(core.index());
        let (left, _) = watch::channel(core.has_left());
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            parked: Mutex::default(),
            start: Instant::now(),
            index,
            left,
            timers_changed: Arc::new(Notify::new()),
            faults: Mutex::default(),
            data,
            driver: Mutex::new(None),
        });
        let driver = tokio::spawn(drive(
            Arc::downgrade(&shared),
            shared.timers_changed.clone(),
            shared.start,
        ));
        if let Ok(mut d) = shared.driver.lock() {
            *d = Some(driver);
        }
        Sim { shared }
    }

    /// The simulator's clock: time since it started, on tokio's clock.
    pub fn now(&self) -> SimTime {
        SimTime(self.shared.start.elapsed())
    }

    /// Locks the core for direct inspection or changes (tests, fault injection).
    pub fn core(&self) -> MutexGuard<'_, Consul> {
        self.shared.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the core at the current time, then wakes watchers and timers.
    pub fn with_core<T>(&self, f: impl FnOnce(&mut Consul, SimTime) -> T) -> T {
        let now = self.now();
        let (out, timers_changed) = {
            let mut core = self.core();
            let out = f(&mut core, now);
            self.publish(&mut core);
            (out, core.timers_may_be_earlier())
        };
        // Most requests start no timer: the driver sleeps on, instead of waking after each.
        if timers_changed {
            self.shared.timers_changed.notify_one();
        }
        out
    }

    /// Wakes the blocking queries whose answer the latest writes may have changed.
    fn publish(&self, core: &mut Consul) {
        let changes = core.take_changes();
        if changes.other || changes.all_kv || !changes.keys.is_empty() {
            self.parked().wake(&changes);
        }
        self.shared.index.send_if_modified(|i| {
            let changed = *i != core.index();
            *i = core.index();
            changed
        });
        if core.has_left() {
            self.shared.left.send_if_modified(|l| !std::mem::replace(l, true));
        }
    }

    /// Resolves once the agent was asked to leave (`PUT /v1/agent/leave`): Consul answers
    /// that request, stops serving and exits, so a server or process built on the sim
    /// should do the same.
    pub async fn left(&self) {
        let mut rx = self.shared.left.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }

    /// An in-process transport for the client named `client` (its name is what fault
    /// injection partitions).
    pub fn transport(&self, client: impl Into<String>) -> SimTransport {
        SimTransport { sim: self.clone(), client: client.into() }
    }

    /// A `consul_api::Client` over [`transport`](Self::transport).
    pub fn client(&self, client: impl Into<String>) -> Client {
        Client::new(self.transport(client))
    }

    /// Handles one request from `client`, waiting out blocking queries.
    pub async fn execute(&self, client: &str, req: SimRequest) -> Result<SimResponse, Failure> {
        let latency = {
            let faults = self.faults();
            if faults.partitioned.contains(client) {
                return Err(Failure::Partitioned);
            }
            faults.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut block = true;
        // Fixed when the query first parks and never re-armed: a write that wakes the query
        // without changing its answer must not extend its wait.
        let mut first_deadline = None;
        let resp = loop {
            // Parked under the core's lock, so no write can slip between the read and the
            // parking.
            let (outcome, parking) = self.with_core(|core, now| {
                match persist::handle(self.shared.data.as_ref(), core, now, &req, block) {
                    Outcome::Blocked { index, deadline, watch } => {
                        let (id, woken) = self.parked().park(&watch);
                        let parking = Parking { shared: &self.shared, watch: watch.clone(), id };
                        (Outcome::Blocked { index, deadline, watch }, Some((parking, woken)))
                    }
                    done => (done, None),
                }
            });
            match (outcome, parking) {
                (Outcome::Blocked { deadline, .. }, Some((_parking, woken))) => {
                    let deadline = *first_deadline.get_or_insert(deadline);
                    let until = self.shared.start + deadline.0;
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep_until(until) => block = false,
                    }
                }
                (Outcome::Done(resp), _) => break resp,
                (Outcome::Blocked { .. }, None) => block = false,
            }
        };
        let mut faults = self.faults();
        if let Some(n) = faults.drop_responses.get_mut(client)
            && *n > 0
        {
            *n -= 1;
            return Err(Failure::ResponseDropped);
        }
        Ok(resp)
    }

    fn parked(&self) -> MutexGuard<'_, Parked> {
        self.shared.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.shared.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fault: the client's requests fail without reaching the store (or heals it).
    pub fn partition(&self, client: &str, partitioned: bool) {
        let mut f = self.faults();
        if partitioned {
            f.partitioned.insert(client.to_string());
        } else {
            f.partitioned.remove(client);
        }
    }

    /// Fault: every request waits `latency` before it is handled.
    pub fn set_latency(&self, latency: Duration) {
        self.faults().latency = latency;
    }

    /// Fault: the next `count` requests of `client` are applied but their responses lost.
    pub fn drop_responses(&self, client: &str, count: u32) {
        self.faults().drop_responses.insert(client.to_string(), count);
    }

    /// Fault: lose (or regain) the raft leader; requests fail with 500 "No cluster leader".
    pub fn set_leader_lost(&self, lost: bool) {
        self.with_core(|c, _| c.set_leader_lost(lost));
    }

    /// Fault: invalidate a session now, as if its TTL ran out. False if it did not exist.
    pub fn expire_session(&self, id: &str) -> bool {
        let op = Op::ExpireSession { id: id.to_string() };
        self.with_core(|c, now| persist::apply(self.shared.data.as_ref(), c, now, op))
    }

    /// Fault: force a check of `node` to `status` (`passing`, `warning`, `critical`).
    pub fn set_check_status(&self, node: &str, check: &str, status: &str) -> bool {
        let op = Op::ForceCheck {
            node: node.to_string(),
            check: check.to_string(),
            status: status.to_string(),
        };
        self.with_core(|c, now| persist::apply(self.shared.data.as_ref(), c, now, op))
    }

    /// Writes a snapshot into the data dir (atomically: temp file, fsync, rename) and
    /// drops the log it covers. Without a data dir, does nothing.
    pub fn save_snapshot(&self) -> Result<(), String> {
        match &self.shared.data {
            Some(data) => data.save(&self.shared.core),
            None => Ok(()),
        }
    }
}

/// Runs the core's timers and its HTTP/TCP checks; snapshots the data dir when its log has
/// grown enough.
async fn drive(shared: Weak<Shared>, timers_changed: Arc<Notify>, start: Instant) {
    loop {
        // Registered before the timers are read, so a change in between is not missed.
        let notified = timers_changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = {
            let Some(s) = shared.upgrade() else { return };
            let sim = Sim { shared: s };
            let now = sim.now();
            let due = {
                // Not `with_core`: that would wake this very loop again.
                let mut core = sim.core();
                persist::advance(sim.shared.data.as_ref(), &mut core, now);
                let due = core.due_checks(now);
                sim.publish(&mut core);
                due
            };
            for (node, id, kind) in due {
                tokio::spawn(run_check(Arc::downgrade(&sim.shared), node, id, kind));
            }
            if sim.shared.data.as_ref().is_some_and(DataDir::wants_snapshot)
                && let Err(e) = sim.save_snapshot()
            {
                tracing::warn!(error = %e, "saving a snapshot failed");
            }
            let core = sim.core();
            [core.next_deadline(), core.next_check_run()].into_iter().flatten().min()
        };
        match next {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(start + t.0) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

async fn run_check(shared: Weak<Shared>, node: String, id: String, kind: CheckKind) {
    let (status, output) = match &kind {
        CheckKind::Http { url, timeout, .. } => http_check(url, *timeout).await,
        CheckKind::Tcp { addr, timeout, .. } => {
            match tokio::time::timeout(*timeout, tokio::net::TcpStream::connect(addr.as_str()))
                .await
            {
                Ok(Ok(_)) => ("passing", format!("TCP connect {addr}: Success")),
                Ok(Err(e)) => ("critical", format!("dial tcp {addr}: {e}")),
                Err(_) => ("critical", format!("dial tcp {addr}: i/o timeout")),
            }
        }
        CheckKind::Script { args, timeout, .. } => script_check(args, *timeout).await,
        CheckKind::Ttl(_) | CheckKind::Manual => return,
    };
    if let Some(s) = shared.upgrade() {
        let sim = Sim { shared: s };
        let op = Op::RecordCheck { node, check: id, status: status.into(), output };
        sim.with_core(|c, now| persist::apply(sim.shared.data.as_ref(), c, now, op));
    }
}

/// Runs a script check as Consul does: exit 0 passing, 1 warning, anything else critical;
/// the output is stdout and stderr.
async fn script_check(args: &[String], timeout: Duration) -> (&'static str, String) {
    let Some((program, rest)) = args.split_first() else {
        return ("critical", "no command given".to_string());
    };
    let run = tokio::process::Command::new(program).args(rest).kill_on_drop(true).output();
    match tokio::time::timeout(timeout, run).await {
        Err(_) => ("critical", format!("Timed out ({timeout:?}) running check")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            ("critical", format!("fork/exec {program}: no such file or directory"))
        }
        Ok(Err(e)) => ("critical", format!("fork/exec {program}: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            // The core cuts it at Consul's 4 KiB, as for every check's output.
            let status = match out.status.code() {
                Some(0) => "passing",
                Some(1) => "warning",
                _ => "critical",
            };
            (status, text)
        }
    }
}

async fn http_check(url: &str, timeout: Duration) -> (&'static str, String) {
    let rest = url.strip_prefix("http://");
    let Some(rest) = rest else {
        return (
            "critical",
            format!("Get {url:?}: only http:// checks are supported by consul-sim"),
        );
    };
    let (authority, path) =
        rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let transport = match consul_api::HttpTransport::new(authority) {
        Ok(t) => t,
        Err(e) => return ("critical", format!("Get {url:?}: {e}")),
    };
    let (path, query) = path
        .split_once('?')
        .map_or((path.clone(), String::new()), |(p, q)| (p.to_string(), q.to_string()));
    let mut req = Request::new(http::Method::GET, path);
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        req = req.query(k, v);
    }
    req.timeout = Some(timeout);
    match transport.send(req).await {
        Ok(resp) if resp.status.is_success() => {
            ("passing", format!("HTTP GET {url}: {} Output: ok", resp.status))
        }
        Ok(resp) if resp.status == http::StatusCode::TOO_MANY_REQUESTS => {
            ("warning", format!("HTTP GET {url}: {}", resp.status))
        }
        Ok(resp) => ("critical", format!("HTTP GET {url}: {}", resp.status)),
        Err(e) => ("critical", format!("Get {url:?}: {e}")),
    }
}

/// The core's headers as an `http::HeaderMap` (names are lower-cased on the way). Consul's
/// own header names are static and the values move into the map without a copy: this runs
/// for every answer.
pub(crate) fn header_map(headers: Vec<(&'static str, String)>) -> HeaderMap {
    // Names and common values made at compile time: `from_static` at run time checks its
    // text on every call, and this runs for every answer.
    const INDEX: HeaderName = HeaderName::from_static("x-consul-index");
    const KNOWN_LEADER: HeaderName = HeaderName::from_static("x-consul-knownleader");
    const LAST_CONTACT: HeaderName = HeaderName::from_static("x-consul-lastcontact");
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    const ACCEPT_ENCODING: HeaderValue = HeaderValue::from_static("Accept-Encoding");
    const TRUE: HeaderValue = HeaderValue::from_static("true");
    const ZERO: HeaderValue = HeaderValue::from_static("0");
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = match name {
            "Content-Type" => http::header::CONTENT_TYPE,
            "X-Consul-Index" => INDEX,
            "X-Consul-KnownLeader" => KNOWN_LEADER,
            "X-Consul-LastContact" => LAST_CONTACT,
            "Vary" => http::header::VARY,
            "Content-Encoding" => http::header::CONTENT_ENCODING,
            other => match HeaderName::from_bytes(other.as_bytes()) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        let value = match value.as_str() {
            "application/json" => JSON,
            "Accept-Encoding" => ACCEPT_ENCODING,
            "true" => TRUE,
            "0" => ZERO,
            _ => match HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        map.insert(name, value);
    }
    map
}

/// A `consul_api::Transport` that talks to a [`Sim`] in-process, as one named client.
///
/// It renders each request exactly as the HTTP client would (`Request::path_and_query`)
/// and the core parses it the way the HTTP server does, so both paths agree.
#[derive(Clone, Debug)]
pub struct SimTransport {
    sim: Sim,
    client: String,
}

impl SimTransport {
    /// The client name used for fault injection.
    pub fn client_name(&self) -> &str {
        &self.client
    }

    /// The simulator behind this transport.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }
}

#[async_trait]
impl Transport for SimTransport {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        let timeout = req.timeout.unwrap_or(consul_api::http::DEFAULT_REQUEST_TIMEOUT);
        let sim_req = SimRequest {
            method: req.method.clone(),
            target: req.path_and_query(),
            headers: req.headers.clone(),
            body: req.body.clone(),
        };
        match tokio::time::timeout(timeout, self.sim.execute(&self.client, sim_req)).await {
            Err(_) => Err(Error::timeout(timeout)),
            Ok(Err(Failure::Partitioned)) => Err(Error::connect(format!(
                "client {:?} is partitioned from consul-sim",
                self.client
            ))),
            Ok(Err(Failure::ResponseDropped)) => {
                Err(Error::ambiguous("consul-sim applied the request and dropped its response"))
            }
            Ok(Ok(resp)) => Ok(Response {
                status: resp.status,
                headers: header_map(resp.headers),
                body: resp.body,
            }),
        }
    }
}

/// `config` with the wall clock of now at sim time zero, unless it names one.
fn dated(mut config: SimConfig) -> SimConfig {
    if config.wall_clock_start.is_none() {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        config.wall_clock_start = Some(now.unwrap_or_default());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(keys: &[&str], other: bool) -> Changes {
        Changes { keys: keys.iter().map(|k| k.to_string()).collect(), other, all_kv: false }
    }

    #[test]
    fn a_write_wakes_only_the_parked_reads_it_concerns() {
        let watches = [
            Watch::Key("a".into()),
            Watch::Key("b".into()),
            Watch::Prefix("t/".into()),
            Watch::Prefix("".into()),
            Watch::AnyKv,
            Watch::NonKv,
        ];
        let cases: [(Changes, [bool; 6]); 5] = [
            (changes(&["b"], false), [false, true, false, true, true, false]),
            (changes(&["t/x/y"], false), [false, false, true, true, true, false]),
            (changes(&["t"], false), [false, false, false, true, true, false]),
            (changes(&[], true), [false, false, false, false, false, true]),
            (
                Changes { all_kv: true, ..changes(&[], false) },
                [true, true, true, true, true, false],
            ),
        ];
        for (c, expected) in cases {
            let mut parked = Parked::default();
            let mut rxs: Vec<_> = watches.iter().map(|w| parked.park(w).1).collect();
            parked.wake(&c);
            let woken: Vec<bool> = rxs.iter_mut().map(|rx| rx.try_recv().is_ok()).collect();
            assert_eq!(woken, expected, "{c:?}");
            // Woken reads leave the index; the others stay until they leave themselves.
            let left = parked.keys.len() + parked.prefixes.len();
            let left = left + parked.any_kv.len() + parked.non_kv.len();
            assert_eq!(left, expected.iter().filter(|w| !**w).count(), "{c:?}");
        }
    }

    #[test]
    fn a_read_that_leaves_is_forgotten() {
        let mut parked = Parked::default();
        let (id, _rx) = parked.park(&Watch::Key("a".into()));
        let (id2, _rx2) = parked.park(&Watch::Prefix("p/".into()));
        parked.leave(&Watch::Key("a".into()), id);
        parked.leave(&Watch::Prefix("p/".into()), id2);
        assert!(parked.keys.is_empty() && parked.prefixes.is_empty());
    }
}
