//! The data dir: checksummed snapshots plus a write-ahead log, so that every acknowledged
//! write survives a crash of the process (SIGKILL) and a damaged file is refused with an
//! error naming it, never read as an empty or different store.
//!
//! # Files
//!
//! - `consul-sim.snapshot`: one header line of JSON
//!   (`{"Format":"consul-sim snapshot","Version":1,"Seq":S,"Node":"…","Config":{…},"Len":N,
//!   "Xxh3":"…"}`), then the store as JSON: `Len` bytes whose XXH3-64 is `Xxh3`. It holds
//!   the effect of every log record up to `Seq`; the log after it was written under `Node`
//!   and `Config`, and is replayed under them even if the agent restarts with others. Written to a temp file, fsynced, renamed over the old
//!   one, and the directory fsynced.
//! - `wal-<first seq>.log`: log segments. A record is framed as
//!   `[payload length: u32 LE][XXH3-64 of the payload: u64 LE][payload]`; the payload is
//!   JSON: sequence number, time, the core's random-generator state, and the input.
//!
//! # What is logged, and why replaying it gives the same store
//!
//! The core is a deterministic state machine of (time, input); its only other input is its
//! random generator (session ids, blocking jitter), whose state lives in the store. So the
//! log records *inputs*, each with the time it was applied at and the generator state just
//! before it:
//!
//! - every request that is not a `GET`/`HEAD`, before it is applied (whether it turns out
//!   to change anything or not), with method, target, headers, body and the `block` flag;
//! - a read that moved the store's index anyway (its timers fired: a session TTL ran out),
//!   right after it, still under the store's lock;
//! - time-driven changes the driver applies (session and check TTLs, reaping), as an
//!   `Advance` to the time they ran at;
//! - fault injection and HTTP/TCP check results that change the store.
//!
//! Replay sets the generator to each record's state (and the leader-lost fault, under
//! which writes fail) and feeds the input to the core at the recorded time, so ids,
//! indexes and expiries come out the same. Reads are not logged:
//! they change nothing but the generator, and every record restores it.
//!
//! # Fsync policy
//!
//! One `fdatasync` per record, while the store is locked, before the request is applied.
//! Nothing — no response, no blocking query woken by the change — can observe a write
//! before it is on disk. Measured on the development machine (ext4 on a virtual disk, debug
//! build, one client sending PUTs back to back): 1.2 ms per PUT with a data dir, 0.3 ms
//! without; a bare append + fdatasync costs about 0.15 ms. Writes are serialised by the
//! store's lock anyway, so group commit would buy little. If an append fails, the request
//! is answered 500 and not applied.
//!
//! # Recovery
//!
//! On start: read and verify the snapshot, replay the records after its `Seq` in order, then
//! restart session and check timers from now (as after a Consul leader election), write a
//! fresh snapshot and delete the segments. A torn final record (a crash in the middle of
//! an append) is dropped with a warning. A checksum mismatch anywhere else, a gap in the
//! sequence, a damaged or edited snapshot, a snapshot without a checksum (the format before
//! this log) or segments without a snapshot are refused with an error naming the file.
//!
//! # Snapshot cadence
//!
//! A snapshot is written at start-up, whenever the log has grown by
//! [`SNAPSHOT_EVERY_RECORDS`] records or [`SNAPSHOT_EVERY_BYTES`] bytes since the last one
//! (checked after every change), and on shutdown (`Sim::save_snapshot`). Each snapshot
//! starts a new segment and deletes the ones it covers once it is on disk.
//!
//! # Another node name
//!
//! The snapshot remembers the agent's node. Consul keeps a node's ID in its data dir, so a
//! server restarted on it under another `-node` renames its catalog entry in place: same
//! ID and `CreateIndex`, the agent's services and checks move to the new name, a fresh
//! `serfHealth`, and the sessions of the old name are gone (measured on Consul 1.8.7: a
//! `-server -bootstrap-expect=1 -data-dir` agent restarted with another `-node`). The sim
//! does the same; sessions are invalidated as on any node loss (their locks released or
//! deleted, lock-delay applied).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::core::{Consul, Outcome, SimConfig, SimRequest, SimResponse, SimTime, State};

/// The snapshot's file name inside the data dir.
pub(crate) const SNAPSHOT_FILE: &str = "consul-sim.snapshot";
/// The unchecksummed snapshot of earlier versions: refused, it cannot be verified.
const LEGACY_SNAPSHOT_FILE: &str = "consul-sim.snapshot.json";
const FORMAT: &str = "consul-sim snapshot";
const VERSION: u32 = 1;
/// A snapshot is due once the log holds this many records since the last one.
pub const SNAPSHOT_EVERY_RECORDS: u64 = 4096;
/// … or this many bytes.
pub const SNAPSHOT_EVERY_BYTES: u64 = 16 * 1024 * 1024;
/// Length and checksum in front of each record.
const FRAME_HEADER: usize = 12;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SnapshotHeader {
    format: String,
    version: u32,
    seq: u64,
    node: String,
    /// The configuration the log after this snapshot was written under: replay uses it, so
    /// a restart with other options (a lower `session_ttl_min`…) replays the same way.
    config: LoggedConfig,
    len: usize,
    xxh3: String,
}

/// The parts of [`SimConfig`] that decide how a request is answered.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LoggedConfig {
    node_address: String,
    datacenter: String,
    ttl_grace: f64,
    max_value_size: usize,
    max_txn_ops: usize,
    session_ttl_min_ns: u64,
}

impl LoggedConfig {
    fn of(c: &SimConfig) -> LoggedConfig {
        LoggedConfig {
            node_address: c.node_address.clone(),
            datacenter: c.datacenter.clone(),
            ttl_grace: c.ttl_grace,
            max_value_size: c.max_value_size,
            max_txn_ops: c.max_txn_ops,
            session_ttl_min_ns: u64::try_from(c.session_ttl_min.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// `base` with these settings and `node`.
    fn apply(&self, node: &str, base: &SimConfig) -> SimConfig {
        SimConfig {
            node_name: node.to_string(),
            node_address: self.node_address.clone(),
            datacenter: self.datacenter.clone(),
            ttl_grace: self.ttl_grace,
            max_value_size: self.max_value_size,
            max_txn_ops: self.max_txn_ops,
            session_ttl_min: Duration::from_nanos(self.session_ttl_min_ns),
            ..base.clone()
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Record {
    seq: u64,
    /// The simulator's time, in nanoseconds since it started.
    now_ns: u64,
    /// The core's random-generator state before the input.
    rng: u64,
    /// The leader-lost fault was on (writes then fail with 500 and must fail on replay too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    leader_lost: bool,
    op: Op,
}

/// One logged input to the core.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Op {
    /// A request; header values and the body in base64.
    Request {
        method: String,
        target: String,
        headers: Vec<(String, String)>,
        body: String,
        block: bool,
    },
    /// Timers ran (`Consul::advance`).
    Advance,
    /// Fault injection: a session invalidated now.
    ExpireSession { id: String },
    /// Fault injection: a check forced to a status.
    ForceCheck { node: String, check: String, status: String },
    /// The outcome of an HTTP or TCP check.
    RecordCheck { node: String, check: String, status: String, output: String },
}

impl Op {
    fn request(req: &SimRequest, block: bool) -> Op {
        Op::Request {
            method: req.method.as_str().to_string(),
            target: req.target.clone(),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), B64.encode(v.as_bytes())))
                .collect(),
            body: B64.encode(&req.body),
            block,
        }
    }

    /// Feeds the input to the core; the core's answer for faults (false: no such session
    /// or check), true otherwise.
    fn apply(&self, core: &mut Consul, now: SimTime) -> Result<bool, String> {
        Ok(match self {
            Op::Request { method, target, headers, body, block } => {
                let method = Method::from_bytes(method.as_bytes())
                    .map_err(|_| format!("bad method {method:?}"))?;
                let mut map = HeaderMap::new();
                for (k, v) in headers {
                    let value = B64.decode(v).map_err(|e| format!("header {k:?}: {e}"))?;
                    let (Ok(name), Ok(value)) =
                        (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(&value))
                    else {
                        return Err(format!("bad header {k:?}"));
                    };
                    map.append(name, value);
                }
                let body = B64.decode(body).map_err(|e| format!("body: {e}"))?;
                let req = SimRequest {
                    method,
                    target: target.clone(),
                    headers: map,
                    body: Bytes::from(body),
                };
                let _ = core.handle(now, &req, *block);
                true
            }
            Op::Advance => {
                core.advance(now);
                true
            }
            Op::ExpireSession { id } => core.expire_session(now, id),
            Op::ForceCheck { node, check, status } => {
                core.force_check_status(now, node, check, status)
            }
            Op::RecordCheck { node, check, status, output } => {
                core.record_check(now, node, check, status, output);
                true
            }
        })
    }
}

/// An open data dir: the current log segment and the snapshot writer.
#[derive(Debug)]
pub(crate) struct DataDir {
    dir: PathBuf,
    /// The configuration this run's records are written under.
    config: SimConfig,
    log: Mutex<Log>,
    /// Held while a snapshot is written, so writers take turns on the temp file.
    turn: Mutex<()>,
}

#[derive(Debug)]
struct Log {
    file: File,
    path: PathBuf,
    /// The last sequence number written.
    seq: u64,
    /// Records and bytes since the last snapshot.
    records: u64,
    bytes: u64,
    /// The segment's length up to its last whole record.
    len: u64,
    /// Set when a failed append could not be cut off: no further writes are accepted.
    broken: Option<String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

impl DataDir {
    /// Opens (or creates) `dir` and recovers the store: the snapshot, then the log.
    pub(crate) fn open(config: SimConfig, dir: &Path) -> Result<(DataDir, Consul), String> {
        fs::create_dir_all(dir).map_err(|e| format!("data dir {}: {e}", dir.display()))?;
        let file = dir.join(SNAPSHOT_FILE);
        let legacy = dir.join(LEGACY_SNAPSHOT_FILE);
        if legacy.exists() && !file.exists() {
            return Err(format!(
                "{}: a snapshot without a checksum (written by an older consul-sim); it cannot \
                 be verified, so it is not loaded (move it away to start empty)",
                legacy.display()
            ));
        }
        let segments = segments(dir)?;
        let mut core = Consul::new(config.clone());
        let (mut seq, old_node) = if file.exists() {
            let bytes = fs::read(&file).map_err(io_err(&file))?;
            let (header, state) =
                parse_snapshot(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
            // Replay under the configuration the log was written with.
            core.config = header.config.apply(&header.node, &config);
            core.state = state;
            core.index_held_keys();
            (header.seq, Some(header.node))
        } else if let Some((_, path)) = segments.first() {
            return Err(format!(
                "{}: a log without the snapshot it continues ({SNAPSHOT_FILE} is missing); \
                 refusing to guess the store",
                path.display()
            ));
        } else {
            (0, None)
        };
        for (i, (_, path)) in segments.iter().enumerate() {
            let bytes = fs::read(path).map_err(io_err(path))?;
            let is_last = i + 1 == segments.len();
            let (records, torn) =
                read_records(&bytes, is_last).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(at) = torn {
                tracing::warn!(file = %path.display(), at, "dropping a torn final log record");
            }
            for r in records {
                if r.seq <= seq {
                    continue; // in the snapshot already
                }
                if r.seq != seq + 1 {
                    return Err(format!(
                        "{}: record {} follows record {seq}: records are missing",
                        path.display(),
                        r.seq
                    ));
                }
                core.state.rng = r.rng;
                core.set_leader_lost(r.leader_lost);
                r.op.apply(&mut core, SimTime(Duration::from_nanos(r.now_ns)))
                    .map_err(|e| format!("{}: record {}: {e}", path.display(), r.seq))?;
                seq = r.seq;
            }
        }
        core.set_leader_lost(false);
        core.config = config.clone();
        core.forget_metrics();
        if old_node.is_some() {
            // The old run's times mean nothing now: restart every timer from zero.
            let bytes = core.snapshot()?;
            core.restore(SimTime::default(), &bytes)?;
        }
        let node = config.node_name.clone();
        if let Some(old) = old_node.filter(|o| *o != node) {
            tracing::info!(old = %old, new = %node, "the data dir belonged to another node name");
            rename_node(&mut core, &old, &node);
        }
        if !core.state.nodes.contains_key(&node) {
            core.register_agent_node();
        }
        write_snapshot(dir, &core.snapshot()?, seq, &node, &config)?;
        for (_, path) in &segments {
            fs::remove_file(path).map_err(io_err(path))?;
        }
        let log = Log::create(dir, seq)?;
        let data =
            DataDir { dir: dir.to_path_buf(), config, log: Mutex::new(log), turn: Mutex::new(()) };
        Ok((data, core))
    }

    /// Appends one record and waits for it to be on disk.
    fn append(&self, core: &Consul, now: SimTime, rng: u64, op: Op) -> Result<(), String> {
        let mut log = lock(&self.log);
        if let Some(e) = &log.broken {
            return Err(e.clone());
        }
        let seq = log.seq + 1;
        let now_ns = u64::try_from(now.0.as_nanos()).unwrap_or(u64::MAX);
        let leader_lost = core.leader_lost();
        let payload = serde_json::to_vec(&Record { seq, now_ns, rng, leader_lost, op })
            .map_err(|e| format!("cannot encode a log record: {e}"))?;
        let frame = frame(&payload);
        let written = log.file.write_all(&frame).and_then(|()| log.file.sync_data());
        match written {
            Ok(()) => {
                let n = frame.len() as u64;
                log.seq = seq;
                log.records += 1;
                log.bytes += n;
                log.len += n;
                Ok(())
            }
            Err(e) => {
                let msg = format!("cannot write the log {}: {e}", log.path.display());
                // Cut a partial record off, so later records never follow garbage.
                let len = log.len;
                if let Err(e2) = log.file.set_len(len).and_then(|()| log.file.sync_data()) {
                    log.broken = Some(format!("{msg}; then cutting it back failed: {e2}"));
                }
                Err(msg)
            }
        }
    }

    /// Appends a record for a change already applied under the store's lock; a failure is
    /// logged (the change is in memory and will be in the next snapshot).
    fn append_applied(&self, core: &Consul, now: SimTime, rng: u64, op: Op) {
        if let Err(e) = self.append(core, now, rng, op) {
            tracing::error!(error = %e, "a change was applied but not logged");
        }
    }

    /// True once the log has grown enough since the last snapshot.
    pub(crate) fn wants_snapshot(&self) -> bool {
        let log = lock(&self.log);
        log.records >= SNAPSHOT_EVERY_RECORDS || log.bytes >= SNAPSHOT_EVERY_BYTES
    }

    /// Writes a snapshot of `core` and deletes the log segments it covers.
    pub(crate) fn save(&self, core: &Mutex<Consul>) -> Result<(), String> {
        let _turn = lock(&self.turn);
        let (bytes, seq, current) = {
            let core = lock(core);
            let bytes = core.snapshot()?;
            let mut log = lock(&self.log);
            let seq = log.seq;
            if log.records > 0 {
                // A new segment for what comes after this snapshot. If that fails the old
                // segment goes on: recovery skips what the snapshot covers.
                match Log::create(&self.dir, seq) {
                    Ok(new) => *log = new,
                    Err(e) => tracing::warn!(error = %e, "cannot start a new log segment"),
                }
            }
            log.records = 0;
            log.bytes = 0;
            (bytes, seq, log.path.clone())
        };
        write_snapshot(&self.dir, &bytes, seq, &self.config.node_name, &self.config)?;
        for (_, path) in segments(&self.dir)? {
            if path != current {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }
}

impl Log {
    /// A new, empty segment for the records after `seq`.
    fn create(dir: &Path, seq: u64) -> Result<Log, String> {
        let path = dir.join(format!("wal-{:020}.log", seq + 1));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // Appends go to the end even after a failed one was cut off.
        drop(file);
        let file = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
        sync_dir(dir);
        Ok(Log { file, path, seq, records: 0, bytes: 0, len: 0, broken: None })
    }
}

/// Renames the agent's node in the catalog, as Consul does when its data dir (and so its
/// node ID) comes back under another name. See the [module docs](self).
fn rename_node(core: &mut Consul, old: &str, new: &str) {
    if !core.state.nodes.contains_key(old) || core.state.nodes.contains_key(new) {
        return;
    }
    let now = SimTime::default();
    let sessions: Vec<String> =
        core.state.sessions.values().filter(|s| s.node == old).map(|s| s.id.clone()).collect();
    for id in sessions {
        core.expire_session(now, &id);
    }
    let index = core.bump();
    if let Some(mut n) = core.state.nodes.remove(old) {
        n.modify_index = index;
        core.state.nodes.insert(new.to_string(), n);
    }
    let services: Vec<_> = core.state.services.keys().filter(|(n, _)| n == old).cloned().collect();
    for key in services {
        if let Some(s) = core.state.services.remove(&key) {
            core.state.services.insert((new.to_string(), key.1), s);
        }
    }
    let checks: Vec<_> = core.state.checks.keys().filter(|(n, _)| n == old).cloned().collect();
    for key in checks {
        if let Some(mut c) = core.state.checks.remove(&key) {
            if c.id == "serfHealth" {
                c.status = "passing".into();
                c.output = "Agent alive and reachable".into();
                c.critical_since = None;
                c.create_index = index;
                c.modify_index = index;
            }
            core.state.checks.insert((new.to_string(), key.1), c);
        }
    }
    core.touch_node(new, index);
    core.state.tables.checks = index;
}

/// The log segments in `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("wal-").and_then(|s| s.strip_suffix(".log")) {
            let first = n
                .parse::<u64>()
                .map_err(|_| format!("{}: not a log segment name", entry.path().display()))?;
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The records of one segment, and where a torn final record starts (only allowed in the
/// last segment: a crash can tear only the record being appended).
fn read_records(bytes: &[u8], is_last: bool) -> Result<(Vec<Record>, Option<usize>), String> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(rest) = bytes.get(off..).filter(|r| !r.is_empty()) {
        // A whole frame: 4 bytes of length, 8 of checksum, then that many bytes of payload.
        let frame = rest.get(..4).and_then(|l| <[u8; 4]>::try_from(l).ok()).and_then(|l| {
            let len = u32::from_le_bytes(l) as usize;
            let sum = rest.get(4..FRAME_HEADER).and_then(|s| <[u8; 8]>::try_from(s).ok())?;
            let payload = rest.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
            Some((len, u64::from_le_bytes(sum), payload))
        });
        let whole = frame.is_some();
        let (len, payload) = match frame {
            Some((len, sum, payload)) if xxh3_64(payload) == sum => (len, payload),
            _ => {
                // Torn: cut short, the final frame, or zeros a crash left behind.
                let last_frame = frame.is_some_and(|(len, _, _)| FRAME_HEADER + len == rest.len());
                let torn = !whole || last_frame || rest.iter().all(|b| *b == 0);
                if torn && is_last {
                    return Ok((out, Some(off)));
                }
                let what = if whole { "checksum mismatch" } else { "cut short" };
                return Err(format!(
                    "damaged log record at byte {off} ({what}): the file was damaged or edited"
                ));
            }
        };
        let rec: Record = serde_json::from_slice(payload)
            .map_err(|e| format!("unreadable log record at byte {off}: {e}"))?;
        out.push(rec);
        off += FRAME_HEADER + len;
    }
    Ok((out, None))
}

/// Verifies a snapshot file and decodes its store.
fn parse_snapshot(bytes: &[u8]) -> Result<(SnapshotHeader, State), String> {
    let not_ours = || format!("not a {FORMAT} (no header line with a checksum)");
    let nl = bytes.iter().position(|b| *b == b'\n').ok_or_else(not_ours)?;
    let head = bytes.get(..nl).unwrap_or_default();
    let header: SnapshotHeader = serde_json::from_slice(head).map_err(|_| not_ours())?;
    if header.format != FORMAT || header.version != VERSION {
        return Err(format!(
            "unknown snapshot format {:?} version {} (expected {FORMAT:?} {VERSION})",
            header.format, header.version
        ));
    }
    let body = bytes.get(nl + 1..).unwrap_or_default();
    if body.len() != header.len {
        return Err(format!(
            "the snapshot holds {} bytes, its header says {}: it was cut short or edited",
            body.len(),
            header.len
        ));
    }
    let sum = format!("{:016x}", xxh3_64(body));
    if sum != header.xxh3 {
        return Err(format!(
            "checksum mismatch ({sum}, header says {}): the file was damaged or edited",
            header.xxh3
        ));
    }
    let state: State = serde_json::from_slice(body)
        .map_err(|e| format!("the snapshot's store is not readable: {e}"))?;
    Ok((header, state))
}

fn write_snapshot(
    dir: &Path,
    state: &[u8],
    seq: u64,
    node: &str,
    config: &SimConfig,
) -> Result<(), String> {
    let header = SnapshotHeader {
        format: FORMAT.into(),
        version: VERSION,
        seq,
        node: node.into(),
        config: LoggedConfig::of(config),
        len: state.len(),
        xxh3: format!("{:016x}", xxh3_64(state)),
    };
    let mut bytes = serde_json::to_vec(&header).map_err(|e| format!("snapshot header: {e}"))?;
    bytes.push(b'\n');
    bytes.extend_from_slice(state);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let dst = dir.join(SNAPSHOT_FILE);
    let err = |e: std::io::Error| format!("snapshot {}: {e}", tmp.display());
    let mut f = File::create(&tmp).map_err(err)?;
    f.write_all(&bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, &dst).map_err(err)?;
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn is_read(m: &Method) -> bool {
    *m == Method::GET || *m == Method::HEAD
}

/// Handles a request, logging it when it may change the store: writes before they are
/// applied, reads only if they moved the index (their timers fired).
pub(crate) fn handle(
    data: Option<&DataDir>,
    core: &mut Consul,
    now: SimTime,
    req: &SimRequest,
    block: bool,
) -> Outcome {
    let Some(data) = data else { return core.handle(now, req, block) };
    let rng = core.state.rng;
    if is_read(&req.method) {
        let before = core.index();
        let out = core.handle(now, req, block);
        if core.index() != before {
            data.append_applied(core, now, rng, Op::request(req, block));
        }
        return out;
    }
    if let Err(e) = data.append(core, now, rng, Op::request(req, block)) {
        tracing::error!(error = %e, "refusing a write that cannot be logged");
        return Outcome::Done(SimResponse {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: Bytes::from(e),
        });
    }
    core.handle(now, req, block)
}

/// Runs the core's timers, logging them if they changed the store.
pub(crate) fn advance(data: Option<&DataDir>, core: &mut Consul, now: SimTime) {
    let (rng, before) = (core.state.rng, core.index());
    core.advance(now);
    if let Some(data) = data
        && core.index() != before
    {
        data.append_applied(core, now, rng, Op::Advance);
    }
}

/// Applies a fault or a check result, logged first. False if it could not be logged.
pub(crate) fn apply(data: Option<&DataDir>, core: &mut Consul, now: SimTime, op: Op) -> bool {
    if let Some(data) = data
        && let Err(e) = data.append(core, now, core.state.rng, op.clone())
    {
        tracing::error!(error = %e, "refusing a change that cannot be logged");
        return false;
    }
    op.apply(core, now).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use http::Method;

    use super::*;
    use crate::Sim;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("consul-sim-persist-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn config(node: &str) -> SimConfig {
        SimConfig { node_name: node.into(), ..SimConfig::default() }
    }

    async fn call(sim: &Sim, method: Method, target: &str, body: &str) -> (u16, String) {
        let req = SimRequest {
            method,
            target: target.into(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        };
        let resp = sim.execute("test", req).await.expect("no faults injected");
        (resp.status.as_u16(), String::from_utf8_lossy(&resp.body).into_owned())
    }

    async fn get(sim: &Sim, key: &str) -> Option<String> {
        let (status, body) = call(sim, Method::GET, &format!("/v1/kv/{key}?raw"), "").await;
        (status == 200).then_some(body)
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    /// "Crash": the simulator is dropped without a final snapshot.
    #[tokio::test(start_paused = true)]
    async fn acknowledged_writes_survive_a_crash_without_a_snapshot() {
        let dir = temp_dir("crash");
        let session = {
            let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
            for i in 0..20 {
                assert_eq!(call(&sim, Method::PUT, &format!("/v1/kv/k{i}"), "v").await.0, 200);
            }
            let (status, body) = call(&sim, Method::PUT, "/v1/session/create", "{}").await;
            assert_eq!(status, 200, "{body}");
            let id: serde_json::Value = serde_json::from_str(&body).unwrap();
            let id = id["ID"].as_str().unwrap().to_string();
            let target = format!("/v1/kv/lock?acquire={id}");
            assert_eq!(call(&sim, Method::PUT, &target, "held").await, (200, "true".into()));
            id
        };
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        for i in 0..20 {
            assert_eq!(get(&sim, &format!("k{i}")).await.as_deref(), Some("v"), "k{i}");
        }
        // The replayed session has the same id and still holds its lock.
        let (status, body) = call(&sim, Method::GET, "/v1/kv/lock", "").await;
        assert_eq!(status, 200);
        assert!(body.contains(&session), "{body}");
        // A new session gets a new id: the generator did not restart.
        let (_, body) = call(&sim, Method::PUT, "/v1/session/create", "{}").await;
        assert!(!body.contains(&session), "{body}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A reopened data dir starts its metrics afresh, as a restarted Consul does: the
    /// replayed writes of the last run (at that run's times) are not counted again.
    #[tokio::test(start_paused = true)]
    async fn a_reopened_data_dir_starts_with_no_metrics() {
        let dir = temp_dir("metrics");
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        for i in 0..5 {
            assert_eq!(call(&sim, Method::PUT, &format!("/v1/kv/m{i}"), "x").await.0, 200);
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(sim);
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        let (status, body) = call(&sim, Method::GET, "/v1/agent/metrics", "").await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        // Alone, the current interval is shown: nothing recorded in it yet.
        assert_eq!(v["Samples"], serde_json::json!([]), "{body}");
        assert_eq!(v["Counters"], serde_json::json!([]), "{body}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// Writes, blocking reads (they draw jitter from the generator), session TTLs running
    /// out between writes: after a crash the log rebuilds the very same store.
    #[tokio::test(start_paused = true)]
    async fn replaying_the_log_rebuilds_the_same_store() {
        let dir = temp_dir("replay");
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        for round in 0..26u32 {
            let key = format!("/v1/kv/k{}", round % 7);
            assert_eq!(call(&sim, Method::PUT, &key, &round.to_string()).await.0, 200);
            if round % 5 == 0 {
                let (_, body) =
                    call(&sim, Method::PUT, "/v1/session/create", r#"{"TTL":"10s"}"#).await;
                let id: serde_json::Value = serde_json::from_str(&body).unwrap();
                let id = id["ID"].as_str().unwrap();
                let lock = format!("/v1/kv/lock/{round}?acquire={id}");
                assert_eq!(call(&sim, Method::PUT, &lock, "held").await.0, 200);
            }
            if round % 3 == 0 {
                let index = sim.core().index();
                let read = format!("/v1/kv/k0?index={index}&wait=2s");
                let status = call(&sim, Method::GET, &read, "").await.0;
                assert!(status == 200 || status == 404, "{status}");
            }
            if round % 4 == 0 {
                let del = format!("/v1/kv/k{}", (round + 3) % 7);
                assert_eq!(call(&sim, Method::DELETE, &del, "").await.0, 200);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let kv = call(&sim, Method::GET, "/v1/kv/?recurse", "").await;
        let sessions = call(&sim, Method::GET, "/v1/session/list", "").await;
        let index = sim.core().index();
        // Some sessions ran out (their locks released), the latest still hold theirs.
        let held = kv.1.matches("\"Session\"").count();
        assert!(held >= 1 && held < kv.1.matches("lock/").count(), "{kv:?}");
        drop(sim);
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        assert_eq!(sim.core().index(), index);
        assert_eq!(call(&sim, Method::GET, "/v1/kv/?recurse", "").await, kv);
        let ids = |body: &str| {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let mut ids: Vec<String> =
                v.as_array().unwrap().iter().map(|s| s["ID"].to_string()).collect();
            ids.sort();
            ids
        };
        let after = call(&sim, Method::GET, "/v1/session/list", "").await;
        assert_eq!(ids(&after.1), ids(&sessions.1));
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_refused_while_the_leader_was_lost_stays_refused_after_replay() {
        let dir = temp_dir("leader");
        {
            let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
            sim.set_leader_lost(true);
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/a", "1").await.0, 500);
            sim.set_leader_lost(false);
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/b", "2").await.0, 200);
        }
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        assert_eq!(get(&sim, "a").await, None);
        assert_eq!(get(&sim, "b").await.as_deref(), Some("2"));
        assert!(!sim.core().leader_lost());
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn the_log_is_replayed_under_the_options_it_was_written_with() {
        let dir = temp_dir("options");
        let short = SimConfig { session_ttl_min: Duration::from_secs(1), ..config("n1") };
        {
            let sim = Sim::with_data_dir(short, &dir).unwrap();
            let (status, body) =
                call(&sim, Method::PUT, "/v1/session/create", r#"{"TTL":"2s"}"#).await;
            assert_eq!(status, 200, "{body}");
        }
        // Restarted with the default minimum (10 s), which would refuse that TTL.
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        let (_, list) = call(&sim, Method::GET, "/v1/session/list", "").await;
        assert!(list.contains("\"TTL\":\"2s\""), "{list}");
        let (status, _) = call(&sim, Method::PUT, "/v1/session/create", r#"{"TTL":"2s"}"#).await;
        assert_ne!(status, 200, "the new run has the new options");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_torn_final_record_is_dropped_and_the_rest_replayed() {
        let dir = temp_dir("torn");
        {
            let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/a", "1").await.0, 200);
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/b", "2").await.0, 200);
        }
        let seg = segment_files(&dir).pop().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        // A crash in the middle of appending a third record.
        let third = frame(br#"{"Seq":3,"NowNs":0,"Rng":1,"Op":"Advance"}"#);
        bytes.extend_from_slice(&third[..third.len() - 5]);
        fs::write(&seg, &bytes).unwrap();
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        assert_eq!(get(&sim, "a").await.as_deref(), Some("1"));
        assert_eq!(get(&sim, "b").await.as_deref(), Some("2"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_damaged_record_in_the_middle_of_the_log_is_refused_naming_the_file() {
        let dir = temp_dir("mid");
        {
            let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/a", "first").await.0, 200);
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/b", "second").await.0, 200);
        }
        let seg = segment_files(&dir).pop().unwrap();
        let mut bytes = fs::read(&seg).unwrap();
        let at = bytes.windows(6).position(|w| w == b"Zmlyc3").unwrap(); // "first", base64
        bytes[at] = b'X';
        fs::write(&seg, &bytes).unwrap();
        let err = Sim::with_data_dir(config("n1"), &dir).unwrap_err();
        assert!(err.contains(&seg.display().to_string()) && err.contains("checksum"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tampered_snapshot_is_refused_naming_the_file() {
        let dir = temp_dir("tamper");
        {
            let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/a", "1").await.0, 200);
            sim.save_snapshot().unwrap();
        }
        let file = dir.join(SNAPSHOT_FILE);
        let text = fs::read_to_string(&file).unwrap();
        // Same length, one key renamed: only the checksum can tell.
        fs::write(&file, text.replace("\"a\"", "\"b\"")).unwrap();
        let err = Sim::with_data_dir(config("n1"), &dir).unwrap_err();
        assert!(err.contains(&file.display().to_string()) && err.contains("checksum"), "{err}");
        // Cut short.
        fs::write(&file, &text[..text.len() - 10]).unwrap();
        let err = Sim::with_data_dir(config("n1"), &dir).unwrap_err();
        assert!(err.contains(&file.display().to_string()) && err.contains("cut short"), "{err}");
        // Not a snapshot at all.
        fs::write(&file, "not json").unwrap();
        let err = Sim::with_data_dir(config("n1"), &dir).unwrap_err();
        assert!(err.contains(&file.display().to_string()), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_log_without_its_snapshot_is_refused() {
        let dir = temp_dir("nosnap");
        {
            let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/a", "1").await.0, 200);
        }
        fs::remove_file(dir.join(SNAPSHOT_FILE)).unwrap();
        let err = Sim::with_data_dir(config("n1"), &dir).unwrap_err();
        assert!(err.contains("wal-") && err.contains("missing"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_is_taken_once_the_log_holds_its_record_budget() {
        let dir = temp_dir("cadence");
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        let first = segment_files(&dir);
        for i in 0..SNAPSHOT_EVERY_RECORDS {
            assert_eq!(call(&sim, Method::PUT, &format!("/v1/kv/k{i}"), "v").await.0, 200);
        }
        // The driver notices after the write that filled the budget.
        let mut snapshot_seq = 0;
        for _ in 0..100 {
            tokio::task::yield_now().await;
            let bytes = fs::read(dir.join(SNAPSHOT_FILE)).unwrap();
            snapshot_seq = parse_snapshot(&bytes).unwrap().0.seq;
            if snapshot_seq >= SNAPSHOT_EVERY_RECORDS {
                break;
            }
        }
        assert_eq!(snapshot_seq, SNAPSHOT_EVERY_RECORDS);
        let now = segment_files(&dir);
        assert!(first.iter().all(|f| !now.contains(f)), "covered segments are deleted");
        assert_eq!(now.len(), 1);
        drop(sim);
        let sim = Sim::with_data_dir(config("n1"), &dir).unwrap();
        assert_eq!(get(&sim, "k4095").await.as_deref(), Some("v"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_data_dir_restarted_under_another_node_name_serves_the_new_node() {
        let dir = temp_dir("rename");
        let (session, node_id) = {
            let sim = Sim::with_data_dir(config("old"), &dir).unwrap();
            assert_eq!(call(&sim, Method::PUT, "/v1/kv/a", "1").await.0, 200);
            let (status, _) =
                call(&sim, Method::PUT, "/v1/agent/service/register", r#"{"Name":"web"}"#).await;
            assert_eq!(status, 200);
            let (_, body) = call(&sim, Method::PUT, "/v1/session/create", "{}").await;
            let id: serde_json::Value = serde_json::from_str(&body).unwrap();
            let id = id["ID"].as_str().unwrap().to_string();
            let target = format!("/v1/kv/lock?acquire={id}");
            assert_eq!(call(&sim, Method::PUT, &target, "held").await, (200, "true".into()));
            let node_id = sim.core().state.nodes["old"].id.clone();
            (id, node_id)
        };
        let sim = Sim::with_data_dir(config("new"), &dir).unwrap();
        assert_eq!(get(&sim, "a").await.as_deref(), Some("1"));
        // The old session is gone and its lock released; the service moved with the node.
        assert_eq!(call(&sim, Method::GET, "/v1/session/list", "").await.1, "[]");
        let (_, lock) = call(&sim, Method::GET, "/v1/kv/lock", "").await;
        assert!(lock.contains("\"LockIndex\":1") && !lock.contains(&session), "{lock}");
        let (_, services) = call(&sim, Method::GET, "/v1/agent/services", "").await;
        assert!(services.contains("\"web\""), "{services}");
        let (_, nodes) = call(&sim, Method::GET, "/v1/catalog/nodes", "").await;
        assert!(nodes.contains(&node_id) && !nodes.contains("\"old\""), "{nodes}");
        let (status, body) = call(&sim, Method::GET, "/v1/agent/self", "").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"new\""), "{body}");
        let (status, body) =
            call(&sim, Method::PUT, "/v1/agent/service/register", r#"{"Name":"api"}"#).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = call(&sim, Method::PUT, "/v1/session/create", "{}").await;
        assert_eq!(status, 200, "{body}");
        let (_, body) = call(&sim, Method::GET, "/v1/health/node/old", "").await;
        assert_eq!(body, "[]");
        let (_, body) = call(&sim, Method::GET, "/v1/health/node/new", "").await;
        assert!(body.contains("passing") && !body.contains("critical"), "{body}");
        let _ = fs::remove_dir_all(&dir);
    }
}
