//! `/v1/agent/metrics`: go-metrics' in-memory sink as Consul 1.8.7 runs it, fed with the
//! metrics the sim can tell truly.
//!
//! Consul aggregates every metric into 10-second intervals (aligned to the wall clock's
//! multiples of 10 s) and keeps the last minute of them. The endpoint shows the last
//! *finished* interval, or the current one while it is the only one; an interval exists
//! only once something was recorded in it (Consul's periodic gauges touch every interval,
//! the sim's requests touch theirs). Counters and samples aggregate count, sum, min, max,
//! mean, stddev and the rate per second; gauges keep their last value; every list is sorted
//! by name and labels, as `name;label=value`.
//!
//! What the sim records, named as Consul names it (each checked against 1.8.7):
//! - a sample `consul.http.<METHOD>.<pattern>` for every request an endpoint answered
//!   (`consul.http.GET.v1.kv._`: the handler's pattern, its trailing slash as `_`);
//! - `consul.kvs.apply` and `consul.fsm.kvs` (label `op`) for each write of the KV endpoint,
//!   `consul.txn.apply` and `consul.fsm.txn` for a transaction with writes (`consul.txn.read`
//!   for one without), `consul.session.apply` and `consul.fsm.session` (label `op`) for each
//!   session created or destroyed through the API;
//! - the counter `consul.raft.apply`, one for each write that moves the raft index (Consul
//!   also counts its own housekeeping writes);
//! - the gauges `consul.raft.applied_index`, `consul.raft.last_index`,
//!   `consul.session_ttl.active`, `consul.autopilot.healthy` and
//!   `consul.autopilot.failure_tolerance`, as they stood when the interval ended.
//!
//! Durations are the sim's own: it answers at once, so every sample is 0 ms. Consul's
//! runtime, memberlist, Serf and raft-internal metrics have nothing behind them here and are
//! left out.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use http::Method;
use serde::Serialize;
use serde_json::{Value, json};

use super::SimTime;

/// Consul's aggregation interval.
const INTERVAL: Duration = Duration::from_secs(10);

/// Intervals kept: Consul's retention of one minute, in intervals.
const RETAINED: usize = 6;

/// The metrics of fixed name and labels the core records: a slot each in every interval, so
/// recording one is an array index and no key is built. `FIXED` names them, in this order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fixed {
    RaftApply,
    KvsApply,
    KvsSet,
    KvsCas,
    KvsDelete,
    KvsDeleteCas,
    KvsDeleteTree,
    KvsLock,
    KvsUnlock,
    TxnApply,
    TxnRead,
    FsmTxn,
    SessionApply,
    SessionCreate,
    SessionDestroy,
}

/// Each [`Fixed`] metric: its name, its `op` label, and whether it is a counter (else a
/// sample).
const FIXED: [(&str, &str, bool); 15] = [
    ("consul.raft.apply", "", true),
    ("consul.kvs.apply", "", false),
    ("consul.fsm.kvs", "set", false),
    ("consul.fsm.kvs", "cas", false),
    ("consul.fsm.kvs", "delete", false),
    ("consul.fsm.kvs", "delete-cas", false),
    ("consul.fsm.kvs", "delete-tree", false),
    ("consul.fsm.kvs", "lock", false),
    ("consul.fsm.kvs", "unlock", false),
    ("consul.txn.apply", "", false),
    ("consul.txn.read", "", false),
    ("consul.fsm.txn", "", false),
    ("consul.session.apply", "", false),
    ("consul.fsm.session", "create", false),
    ("consul.fsm.session", "destroy", false),
];

/// A gauge's last value.
#[derive(Clone, Debug)]
struct Gauge {
    name: &'static str,
    value: f32,
}

/// A counter's or sample's aggregate over one interval (go-metrics' `AggregateSample`).
#[derive(Clone, Debug, Default)]
struct Aggregate {
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
}

impl Aggregate {
    fn ingest(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.sum_sq += v * v;
        if self.count == 1 || v < self.min {
            self.min = v;
        }
        if self.count == 1 || v > self.max {
            self.max = v;
        }
    }

    /// go-metrics' `SampledValue` as the endpoint shows it, under `name` and `labels`.
    fn shown(&self, name: String, labels: BTreeMap<&'static str, &'static str>) -> Sampled {
        let count = self.count as f64;
        let mean = if self.count == 0 { 0.0 } else { self.sum / count };
        let spread = count * self.sum_sq - self.sum * self.sum;
        let pairs = count * (count - 1.0);
        let stddev = if pairs == 0.0 { 0.0 } else { (spread / pairs).sqrt() };
        Sampled {
            name,
            count: self.count,
            rate: go_float(self.sum / INTERVAL.as_secs_f64()),
            sum: go_float(self.sum),
            min: go_float(self.min),
            max: go_float(self.max),
            mean: go_float(mean),
            stddev: go_float(stddev),
            labels,
        }
    }
}

/// The endpoint's answer, its fields in Consul's order (go-metrics' `MetricsSummary`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Summary {
    timestamp: String,
    gauges: Vec<Shown>,
    points: [Value; 0],
    counters: Vec<Sampled>,
    samples: Vec<Sampled>,
}

/// A gauge as shown (`GaugeValue`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Shown {
    name: &'static str,
    value: Value,
    labels: BTreeMap<&'static str, &'static str>,
}

/// A counter or sample as shown (`SampledValue`: the aggregate, its mean and stddev).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Sampled {
    name: String,
    count: u64,
    rate: Value,
    sum: Value,
    min: Value,
    max: Value,
    mean: Value,
    stddev: Value,
    labels: BTreeMap<&'static str, &'static str>,
}

/// A float as Go's encoder writes it: a whole number without a fraction (`0`, not `0.0`).
fn go_float(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 { json!(v as i64) } else { json!(v) }
}

/// One interval's metrics.
#[derive(Clone, Debug, Default)]
struct Interval {
    /// The interval's number: its start in wall-clock seconds, divided by 10.
    number: u64,
    gauges: BTreeMap<&'static str, Gauge>,
    /// The [`Fixed`] metrics, in `FIXED`'s order.
    fixed: [Aggregate; FIXED.len()],
    /// The HTTP samples, by method and handler pattern, in the order first seen: a request
    /// finds its own among a few dozen at most by comparing methods and pattern pointers
    /// (or, for a handler of its own path, the path), and the name is only spelled out
    /// when shown.
    http: Vec<(Method, Cow<'static, str>, Aggregate)>,
}

/// The gauges the sim keeps, as they stand now.
pub(crate) struct Gauges {
    pub(crate) index: u64,
    pub(crate) ttl_sessions: usize,
    pub(crate) healthy: bool,
}

/// The in-memory sink: the interval being recorded and the finished ones kept.
#[derive(Clone, Debug, Default)]
pub(crate) struct Metrics {
    /// The wall-clock time at sim time zero, since the Unix epoch.
    wall_start: Duration,
    /// The interval being recorded; `started` says whether one was yet, `until` is the sim
    /// time at which it ends.
    current: Interval,
    started: bool,
    until: Duration,
    /// The finished intervals kept, oldest first: a minute in all with the current one.
    finished: VecDeque<Interval>,
}

impl Metrics {
    pub(crate) fn new(wall_start: Duration) -> Metrics {
        Metrics { wall_start, ..Default::default() }
    }

    /// The number of the interval `now` falls in.
    fn number(&self, now: SimTime) -> u64 {
        (self.wall_start + now.0).as_secs() / INTERVAL.as_secs()
    }

    /// The interval to record into at `now`: a new one (the oldest dropped) when `now` has
    /// moved past the current one, which ends with `gauges`.
    fn current(&mut self, now: SimTime, gauges: impl FnOnce() -> Gauges) -> &mut Interval {
        if self.started && now.0 < self.until {
            return &mut self.current;
        }
        let number = self.number(now);
        let next = Duration::from_secs((number + 1) * INTERVAL.as_secs());
        self.until = next.saturating_sub(self.wall_start);
        if !self.started || self.current.number != number {
            let fresh = Interval { number, ..Default::default() };
            let mut last = std::mem::replace(&mut self.current, fresh);
            if self.started {
                last.set_gauges(&gauges());
                self.finished.push_back(last);
                while self.finished.len() >= RETAINED {
                    self.finished.pop_front();
                }
            }
            self.started = true;
        }
        &mut self.current
    }

    /// Adds one to a [`Fixed`] counter, or a sample of `ms` milliseconds to a fixed sample.
    pub(crate) fn record(
        &mut self,
        now: SimTime,
        metric: Fixed,
        ms: f32,
        gauges: impl FnOnce() -> Gauges,
    ) {
        let counter = FIXED.get(metric as usize).is_some_and(|&(_, _, counter)| counter);
        let value = if counter { 1.0 } else { f64::from(ms) };
        if let Some(agg) = self.current(now, gauges).fixed.get_mut(metric as usize) {
            agg.ingest(value);
        }
    }

    /// Adds a sample of `ms` milliseconds to the HTTP metric of a request with `method` to
    /// `path` (named as [`http_metric`] names it when shown).
    pub(crate) fn http(
        &mut self,
        now: SimTime,
        method: &Method,
        path: &str,
        ms: f32,
        gauges: impl FnOnce() -> Gauges,
    ) {
        let http = &mut self.current(now, gauges).http;
        let subtree = subtree_pattern(path);
        let found = match subtree {
            // A subtree: its pattern is one of the tables' strings, found by address.
            Some(stat) => http.iter_mut().find(|e| {
                e.0 == *method && matches!(e.1, Cow::Borrowed(p) if std::ptr::eq(p, stat))
            }),
            // A handler of its own: the pattern is the path.
            None => http.iter_mut().find(|e| e.0 == *method && e.1 == path),
        };
        match found {
            Some((_, _, agg)) => agg.ingest(f64::from(ms)),
            None => {
                let mut agg = Aggregate::default();
                agg.ingest(f64::from(ms));
                let pattern = subtree.map_or(Cow::Owned(path.to_string()), Cow::Borrowed);
                http.push((method.clone(), pattern, agg));
            }
        }
    }

    /// The endpoint's answer at `now`: the last finished interval, or the current one when
    /// it is the only one (the request itself makes the current interval, as Consul's does).
    pub(crate) fn display(&mut self, now: SimTime, gauges: impl Fn() -> Gauges) -> Summary {
        self.current(now, &gauges);
        let shown = match self.finished.back() {
            Some(last) => last,
            None => {
                // The current interval, alone: its gauges are today's.
                self.current.set_gauges(&gauges());
                &self.current
            }
        };
        let start = Duration::from_secs(shown.number * INTERVAL.as_secs());
        let gauges = shown.gauges.values().map(|g| Shown {
            name: g.name,
            value: go_float(f64::from(g.value)),
            labels: BTreeMap::new(),
        });
        // go-metrics sorts by key, `name;label=value`.
        let mut counters: Vec<(String, Sampled)> = Vec::new();
        let mut samples: Vec<(String, Sampled)> = Vec::new();
        for ((name, op, counter), agg) in FIXED.iter().zip(&shown.fixed) {
            if agg.count == 0 {
                continue;
            }
            let labels =
                if op.is_empty() { BTreeMap::new() } else { BTreeMap::from([("op", *op)]) };
            let key = if op.is_empty() { name.to_string() } else { format!("{name};op={op}") };
            let entry = (key, agg.shown(name.to_string(), labels));
            if *counter { counters.push(entry) } else { samples.push(entry) }
        }
        for (method, pattern, agg) in &shown.http {
            let name = http_metric(method.as_str(), pattern);
            samples.push((name.clone(), agg.shown(name, BTreeMap::new())));
        }
        counters.sort_by(|a, b| a.0.cmp(&b.0));
        samples.sort_by(|a, b| a.0.cmp(&b.0));
        Summary {
            timestamp: go_utc(start),
            gauges: gauges.collect(),
            points: [],
            counters: counters.into_iter().map(|(_, s)| s).collect(),
            samples: samples.into_iter().map(|(_, s)| s).collect(),
        }
    }
}

impl Interval {
    fn set_gauges(&mut self, g: &Gauges) {
        let mut set = |name: &'static str, value: f32| {
            self.gauges.insert(name, Gauge { name, value });
        };
        set("consul.autopilot.failure_tolerance", 0.0);
        set("consul.autopilot.healthy", if g.healthy { 1.0 } else { 0.0 });
        set("consul.raft.applied_index", g.index as f32);
        set("consul.raft.last_index", g.index as f32);
        set("consul.session_ttl.active", g.ttl_sessions as f32);
    }
}

/// A time as Go's `time.Time.String()` prints one in UTC: `2026-11-25 18:22:00 +0000 UTC`.
fn go_utc(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The pattern of the subtree handler of `path` (one an endpoint answered), or `None` when
/// the path has a handler of its own: `/v1/kv/` for anything under it. The longest
/// registered subtree holding the path wins, unless the path is a handler of its own.
fn subtree_pattern(path: &str) -> Option<&'static str> {
    if path.starts_with("/v1/kv/") {
        // Most requests: found without looking through every subtree.
        return Some("/v1/kv/");
    }
    if !path.ends_with('/') && EXACT.contains(&path) {
        return None;
    }
    let more = MORE_SUBTREES.iter().copied().filter(|s| path.starts_with(s));
    super::request::subtree_of(path).or_else(|| more.max_by_key(|s| s.len()))
}

/// The name of the HTTP metric of `method` on the handler of `pattern`, as Consul names it:
/// `consul.http.GET.v1.kv._` (the pattern's parts, its trailing slash as `_`).
fn http_metric(method: &str, pattern: &str) -> String {
    let mut name = format!("consul.http.{method}");
    for part in pattern.trim_start_matches('/').split('/') {
        name.push('.');
        name.push_str(if part.is_empty() { "_" } else { part });
    }
    name
}

/// Consul 1.8.7's subtree handlers that also have a handler without the slash (so Go's
/// mux does not redirect to them, and `request::SUBTREES` leaves them out).
const MORE_SUBTREES: &[&str] = &[
    "/v1/acl/destroy/",
    "/v1/acl/info/",
    "/v1/acl/clone/",
    "/v1/acl/policy/",
    "/v1/acl/role/",
    "/v1/acl/token/",
    "/v1/acl/rules/translate/",
    "/v1/acl/auth-method/",
    "/v1/acl/binding-rule/",
    "/v1/query/",
    "/v1/config/",
];

/// Handlers of their own inside a subtree (the exact pattern wins over the subtree), and the
/// busiest exact handlers, found without looking through the subtrees.
const EXACT: &[&str] =
    &["/v1/txn", "/v1/agent/service/register", "/v1/acl/token/self", "/v1/agent/self"];

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoint's answer as JSON.
    fn shown(m: &mut Metrics, now: SimTime, gauges: impl Fn() -> Gauges) -> Value {
        serde_json::to_value(m.display(now, gauges)).expect("serializable")
    }

    fn none() -> Gauges {
        Gauges { index: 7, ttl_sessions: 1, healthy: true }
    }

    #[test]
    fn http_metrics_name_the_handler_pattern() {
        for (method, path, want) in [
            ("GET", "/v1/kv/a/b", "consul.http.GET.v1.kv._"),
            ("PUT", "/v1/kv/", "consul.http.PUT.v1.kv._"),
            ("GET", "/v1/agent/self", "consul.http.GET.v1.agent.self"),
            ("GET", "/v1/agent/service/web", "consul.http.GET.v1.agent.service._"),
            ("PUT", "/v1/agent/service/register", "consul.http.PUT.v1.agent.service.register"),
            (
                "PUT",
                "/v1/agent/service/deregister/web",
                "consul.http.PUT.v1.agent.service.deregister._",
            ),
            ("PUT", "/v1/agent/check/pass/c", "consul.http.PUT.v1.agent.check.pass._"),
            ("GET", "/v1/health/state/any", "consul.http.GET.v1.health.state._"),
            (
                "GET",
                "/v1/operator/raft/configuration",
                "consul.http.GET.v1.operator.raft.configuration",
            ),
            ("PUT", "/v1/txn", "consul.http.PUT.v1.txn"),
            ("GET", "/v1/acl/token/self", "consul.http.GET.v1.acl.token.self"),
            ("GET", "/v1/acl/policy/name/p", "consul.http.GET.v1.acl.policy.name._"),
            ("GET", "/v1/acl/policy/x", "consul.http.GET.v1.acl.policy._"),
        ] {
            let pattern = subtree_pattern(path).unwrap_or(path);
            assert_eq!(http_metric(method, pattern), want, "{method} {path}");
        }
    }

    #[test]
    fn go_prints_times_and_floats_its_own_way() {
        assert_eq!(go_utc(Duration::ZERO), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_utc(Duration::from_secs(1_795_630_940)), "2026-11-25 18:22:20 +0000 UTC");
        assert_eq!(go_utc(Duration::from_secs(951_782_400)), "2000-02-29 00:00:00 +0000 UTC");
        assert_eq!(go_float(0.0).to_string(), "0");
        assert_eq!(go_float(3.0).to_string(), "3");
        assert_eq!(go_float(0.3).to_string(), "0.3");
    }

    #[test]
    fn the_last_finished_interval_is_shown_and_a_minute_kept() {
        let mut m = Metrics::new(Duration::from_secs(1_000_000_005));
        let at = |s: u64| SimTime(Duration::from_secs(s));
        // Alone, the current interval is shown, the request itself not yet in it.
        let first = shown(&mut m, at(0), none);
        assert_eq!(first["Timestamp"], "2001-09-09 01:46:40 +0000 UTC");
        assert_eq!(first["Samples"], json!([]));
        assert_eq!(
            first["Gauges"][3],
            json!({"Name": "consul.raft.last_index", "Value": 7, "Labels": {}})
        );
        for ms in [1.0, 2.0, 6.0] {
            m.record(at(1), Fixed::KvsApply, ms, none);
        }
        m.record(at(2), Fixed::KvsSet, 0.0, none);
        m.record(at(3), Fixed::RaftApply, 0.0, none);
        m.http(at(3), &Method::GET, "/v1/kv/a", 0.0, none);
        // Still the same interval (5 s into it, the wall clock at …05): shown as it is.
        assert_eq!(shown(&mut m, at(4), none)["Samples"].as_array().map(Vec::len), Some(3));
        // The next interval: the finished one is shown.
        let shown = shown(&mut m, at(5), || Gauges { index: 9, ttl_sessions: 0, healthy: false });
        assert_eq!(shown["Timestamp"], "2001-09-09 01:46:40 +0000 UTC");
        // Sorted by key: `consul.fsm.kvs;op=set`, `consul.http.GET.v1.kv._`, `consul.kvs.apply`.
        assert_eq!(shown["Samples"][1]["Name"], "consul.http.GET.v1.kv._");
        let kvs = &shown["Samples"][2];
        assert_eq!(kvs["Name"], "consul.kvs.apply");
        assert_eq!(
            (kvs["Count"].clone(), kvs["Sum"].clone(), kvs["Min"].clone()),
            (json!(3), json!(9), json!(1))
        );
        assert_eq!(
            (kvs["Max"].clone(), kvs["Mean"].clone(), kvs["Rate"].clone()),
            (json!(6), json!(3), json!(0.9))
        );
        assert!((kvs["Stddev"].as_f64().unwrap_or_default() - 7f64.sqrt()).abs() < 1e-9);
        assert_eq!(shown["Samples"][0]["Labels"], json!({"op": "set"}));
        assert_eq!(shown["Counters"][0]["Count"], json!(1));
        // The finished interval ends with the gauges as they stood when it ended.
        assert_eq!(
            shown["Gauges"][1],
            json!({"Name": "consul.autopilot.healthy", "Value": 0, "Labels": {}})
        );
        // A minute later, only six intervals are kept, the current one among them.
        for s in (15..200).step_by(10) {
            m.record(at(s), Fixed::RaftApply, 0.0, none);
        }
        assert_eq!(m.finished.len() + 1, RETAINED);
    }
}
