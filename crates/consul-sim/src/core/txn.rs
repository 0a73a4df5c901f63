//! `/v1/txn`: all-or-nothing transactions of KV operations.
//!
//! As in Consul 1.8.7: a transaction whose operations are all reads (`get`, `get-tree`,
//! `check-*`, or unknown verbs) takes the read path and answers with the query metadata
//! (`Index`, `LastContact`, `KnownLeader`, `ConsistencyLevel`); any write makes it a write
//! transaction, applied as one raft entry, so every key it writes gets the same index.
//! Checks done before applying (an empty key, a lock in lock-delay) fail the transaction
//! alone; otherwise every operation runs and every failure is reported, then the whole
//! transaction is rolled back from an undo log: the cost is that of its operations, never
//! that of the store.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::gojson::quote;
use super::kv::{EntryJson, KvEntry, Write, under};
use super::metrics::Fixed;
use super::{ApiError, Consul, Reply, SimResponse, SimTime, go_kind, pretty};

/// Consul's `txn_max_req_len` default: the largest transaction body.
const MAX_TXN_BODY: usize = 512 * 1024;

/// The verbs that make a transaction a write (Consul's `isWrite`).
const WRITE_VERBS: [&str; 7] =
    ["set", "cas", "lock", "unlock", "delete", "delete-cas", "delete-tree"];

/// What a write transaction changed, to undo it: each key's entry and tombstone as they
/// were before the transaction first touched it, and the indexes.
#[derive(Clone, Debug)]
pub(crate) struct UndoLog {
    /// The index every write of the transaction gets, once the first write takes it.
    index: Option<u64>,
    saved_index: u64,
    saved_kv_index: u64,
    /// How many changes were noted before the transaction, to forget its own on rollback.
    saved_changes: usize,
    touched: HashSet<String>,
    before: Vec<(Box<str>, Option<KvEntry>, Option<u64>)>,
}

impl Consul {
    /// The index for a KV write: a fresh one, or the transaction's single index.
    pub(crate) fn write_index(&mut self) -> u64 {
        if let Some(index) = self.txn.as_ref().and_then(|t| t.index) {
            return index;
        }
        let index = self.bump_kv();
        if let Some(t) = self.txn.as_mut() {
            t.index = Some(index);
        }
        index
    }

    /// Records `key` as it is now, before a write inside a transaction changes it.
    pub(crate) fn remember(&mut self, key: &str) {
        self.touched_key(key);
        let Some(t) = self.txn.as_mut() else { return };
        if t.touched.insert(key.to_string()) {
            let entry = self.state.kv.get(key).cloned();
            let tomb = self.state.tombstones.get(key).copied();
            t.before.push((key.into(), entry, tomb));
        }
    }

    fn begin_txn(&mut self) {
        self.txn = Some(UndoLog {
            index: None,
            saved_index: self.state.index,
            saved_kv_index: self.state.kv_index,
            saved_changes: self.changes.keys.len(),
            touched: HashSet::new(),
            before: Vec::new(),
        });
    }

    /// Ends the transaction; with `rollback`, puts back every key it touched.
    fn end_txn(&mut self, rollback: bool) {
        let Some(log) = self.txn.take() else { return };
        if !rollback {
            return;
        }
        for (key, entry, tomb) in log.before.into_iter().rev() {
            let restored = entry.as_ref().and_then(|e| e.session.clone());
            let undone = match entry {
                Some(e) => self.state.kv.insert(key.clone(), e),
                None => self.state.kv.remove(&key),
            };
            self.note_holder(&key, undone.and_then(|e| e.session), restored);
            match tomb {
                Some(i) => self.state.tombstones.insert(key, i),
                None => self.state.tombstones.remove(&key),
            };
        }
        self.state.index = log.saved_index;
        self.state.kv_index = log.saved_kv_index;
        if !self.changes.all_kv {
            self.changes.keys.truncate(log.saved_changes);
        }
    }

    pub(crate) fn txn_endpoint(&mut self, now: SimTime, body: &Bytes) -> Result<Reply, ApiError> {
        if body.len() > MAX_TXN_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Request body({} bytes) too large, max size: {MAX_TXN_BODY} bytes. See \
                     https://www.consul.io/docs/agent/options.html#txn_max_req_len.",
                    body.len()
                ),
            ));
        }
        let ops = parse_ops(body)
            .map_err(|e| ApiError::bad_request(format!("Failed to parse body: {e}")))?;
        if ops.len() > self.config.max_txn_ops {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Transaction contains too many operations ({} > {})",
                    ops.len(),
                    self.config.max_txn_ops
                ),
            ));
        }
        let ops: Vec<(usize, TxnOp)> =
            ops.into_iter().enumerate().filter_map(|(i, op)| op.map(|op| (i, op))).collect();
        let write = ops.iter().any(|(_, op)| WRITE_VERBS.contains(&op.verb.as_str()));

        let mut errors = Vec::new();
        for (i, op) in &ops {
            if op.key.is_empty() && op.verb != "delete-tree" {
                errors.push(txn_error(*i, "Must provide key"));
            } else if op.verb == "lock" && self.in_lock_delay(&op.key, now) {
                errors.push(txn_error(
                    *i,
                    &format!("failed to lock key {} due to lock delay", quote(&op.key)),
                ));
            }
        }
        let mut results = TxnResults::default();
        self.measure(if write { Fixed::TxnApply } else { Fixed::TxnRead });
        if errors.is_empty() {
            if write {
                self.measure(Fixed::FsmTxn);
                self.begin_txn();
            }
            for (i, op) in &ops {
                if let Err(what) = self.apply_txn_op(now, op, &mut results) {
                    errors.push(txn_error(*i, &what));
                }
            }
            self.end_txn(!errors.is_empty());
        }
        // Consul's TxnResponse (TxnReadResponse for a read-only transaction), written out
        // directly: results were serialized as each operation ran. Indented answers are
        // written indented here, in Go's layout (a field per line, four spaces a level).
        let pretty = pretty::wanted();
        let mut body = Vec::with_capacity(results.json.len() + 160);
        body.push(b'{');
        let status = if errors.is_empty() {
            field(&mut body, pretty, "Results");
            if results.json.is_empty() {
                body.extend_from_slice(b"[]");
            } else {
                body.push(b'[');
                body.extend_from_slice(if pretty { b"\n        " } else { b"" });
                body.extend_from_slice(&results.json);
                body.extend_from_slice(if pretty { b"\n    ]" } else { b"]" });
            }
            body.push(b',');
            field(&mut body, pretty, "Errors");
            body.extend_from_slice(b"null");
            StatusCode::OK
        } else {
            field(&mut body, pretty, "Results");
            body.extend_from_slice(b"null,");
            field(&mut body, pretty, "Errors");
            // Writing to a Vec cannot fail, and the errors always serialize.
            let _ = pretty::write_nested(&mut body, &errors, 1);
            StatusCode::CONFLICT
        };
        if !write {
            let known_leader = if self.leader_lost { "false" } else { "true" };
            for (name, value) in [
                ("Index", "0"),
                ("LastContact", "0"),
                ("KnownLeader", known_leader),
                ("ConsistencyLevel", "\"\""),
            ] {
                body.push(b',');
                field(&mut body, pretty, name);
                body.extend_from_slice(value.as_bytes());
            }
        }
        body.extend_from_slice(if pretty { b"\n}\n" } else { b"}" });
        if write {
            return Ok(Reply::write(SimResponse::json_bytes(status, body)));
        }
        let known_leader = !self.leader_lost;
        let mut resp = SimResponse::json_bytes(status, body);
        resp.headers.push(("X-Consul-KnownLeader", known_leader.to_string()));
        resp.headers.push(("X-Consul-LastContact", "0".into()));
        Ok(Reply::write(resp))
    }

    fn apply_txn_op(
        &mut self,
        now: SimTime,
        op: &TxnOp,
        results: &mut TxnResults,
    ) -> Result<(), String> {
        let key = op.key.as_str();
        let push = |c: &Consul, results: &mut TxnResults, with_value: bool| {
            if let Some(e) = c.state.kv.get(key) {
                results.push(EntryJson { key, entry: e, with_value });
            }
        };
        match op.verb.as_str() {
            "set" | "cas" | "lock" | "unlock" => {
                if matches!(op.verb.as_str(), "lock" | "unlock") && op.session.is_empty() {
                    return Err("missing session".into());
                }
                if op.value.len() > self.config.max_value_size {
                    return Err(format!(
                        "Value for key {q_key} is too large ({} > {} bytes)",
                        op.value.len(),
                        self.config.max_value_size,
                        q_key = quote(key)
                    ));
                }
                let w = Write {
                    key,
                    value: &op.value,
                    flags: op.flags,
                    cas: (op.verb == "cas").then_some(op.index),
                    acquire: (op.verb == "lock").then_some(op.session.as_str()),
                    release: (op.verb == "unlock").then_some(op.session.as_str()),
                };
                match self.kv_write(now, &w) {
                    Ok(true) => {
                        push(self, results, false);
                        Ok(())
                    }
                    Ok(false) => Err(match op.verb.as_str() {
                        "cas" => {
                            format!("failed to set key {q_key}, index is stale", q_key = quote(key))
                        }
                        "lock" => format!(
                            "failed to lock key {q_key}, lock is already held",
                            q_key = quote(key)
                        ),
                        _ => format!(
                            "failed to unlock key {q_key}, lock isn't held, or is held by another session",
                            q_key = quote(key)
                        ),
                    }),
                    Err(e) => Err(e.message),
                }
            }
            "get" => match self.state.kv.get(key) {
                Some(_) => {
                    push(self, results, true);
                    Ok(())
                }
                None => Err(format!("key {q_key} doesn't exist", q_key = quote(key))),
            },
            "get-tree" => {
                for (k, e) in under(&self.state.kv, key) {
                    results.push(EntryJson { key: k, entry: e, with_value: true });
                }
                Ok(())
            }
            "check-index" => match self.state.kv.get(key) {
                Some(e) if e.modify_index == op.index => {
                    push(self, results, false);
                    Ok(())
                }
                Some(e) => Err(format!(
                    "failed index check for key {q_key}, current modify index {} != {}",
                    e.modify_index,
                    op.index,
                    q_key = quote(key)
                )),
                None => Err(format!(
                    "failed to check index, key {q_key} doesn't exist",
                    q_key = quote(key)
                )),
            },
            "check-session" => match self.state.kv.get(key) {
                Some(e) if e.session.as_deref() == Some(op.session.as_str()) => {
                    push(self, results, false);
                    Ok(())
                }
                Some(e) => Err(format!(
                    "failed session check for key {q_key}, current session {} != {}",
                    quote(e.session.as_deref().unwrap_or("")),
                    quote(&op.session),
                    q_key = quote(key)
                )),
                None => Err(format!(
                    "failed to check session, key {q_key} doesn't exist",
                    q_key = quote(key)
                )),
            },
            "check-not-exists" => match self.state.kv.get(key) {
                Some(_) => Err(format!("key {q_key} exists", q_key = quote(key))),
                None => Ok(()),
            },
            "delete" => {
                self.kv_delete(key);
                Ok(())
            }
            "delete-tree" => {
                self.kv_delete_tree(key);
                Ok(())
            }
            "delete-cas" => {
                if self.kv_delete_cas(key, op.index) {
                    Ok(())
                } else {
                    Err(format!("failed to delete key {q_key}, index is stale", q_key = quote(key)))
                }
            }
            other => Err(format!("unknown KV verb {q_other}", q_other = quote(other))),
        }
    }
}

/// Starts a field of the answer's top-level object: its name and colon, on a line of its
/// own when the answer is indented.
fn field(body: &mut Vec<u8>, pretty: bool, name: &str) {
    body.extend_from_slice(if pretty { b"\n    \"" } else { b"\"" });
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(if pretty { b"\": " } else { b"\":" });
}

fn txn_error(i: usize, what: &str) -> Value {
    json!({"OpIndex": i, "What": what})
}

/// The results of a transaction's operations, each `{"KV": entry}` serialized as the
/// operation runs (the entry as it was then), joined by commas.
#[derive(Default)]
struct TxnResults {
    json: Vec<u8>,
}

impl TxnResults {
    fn push(&mut self, entry: EntryJson<'_>) {
        #[derive(serde::Serialize)]
        struct Kv<'a> {
            #[serde(rename = "KV")]
            kv: EntryJson<'a>,
        }
        if self.json.is_empty() {
            self.json.reserve(256);
        } else if pretty::wanted() {
            self.json.extend_from_slice(b",\n        ");
        } else {
            self.json.push(b',');
        }
        // Two levels in: the answer's object, then its `Results` array.
        // Writing to a Vec cannot fail, and an entry always serializes.
        let _ = pretty::write_nested(&mut self.json, &Kv { kv: entry }, 2);
    }
}

/// One parsed transaction operation.
struct TxnOp {
    verb: String,
    key: String,
    value: Vec<u8>,
    flags: u64,
    index: u64,
    session: String,
}

/// Decodes the body as Consul's `api.TxnOps`, with Go's wording for what is wrong. An
/// operation without `KV` (`{}`) is `None`: Consul skips it.
fn parse_ops(body: &[u8]) -> Result<Vec<Option<TxnOp>>, String> {
    // Go's decoder: the first value counts, with its own error texts ("EOF", "unexpected EOF").
    let ops: Value = super::gojson::decode(body)?;
    let ops = match ops {
        Value::Array(ops) => ops,
        Value::Null => Vec::new(),
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type api.TxnOps",
                go_kind(&other)
            ));
        }
    };
    ops.iter().map(parse_op).collect()
}

fn parse_op(op: &Value) -> Result<Option<TxnOp>, String> {
    let obj = match op {
        Value::Object(o) => o,
        Value::Null => return Ok(None),
        other => {
            return Err(format!(
                "json: cannot unmarshal {} into Go value of type api.TxnOp",
                go_kind(other)
            ));
        }
    };
    let mut kv = None;
    for (name, v) in obj {
        match name.to_ascii_lowercase().as_str() {
            "kv" => kv = Some(v),
            "node" | "service" | "check" | "intention" => {
                return Err(format!("{name} operations are not supported by consul-sim"));
            }
            _ => return Err(format!("json: unknown field {q_name}", q_name = quote(name))),
        }
    }
    let kv = match kv {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(kv)) => kv,
        Some(other) => {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field TxnOp.KV of type api.KVTxnOp",
                go_kind(other)
            ));
        }
    };
    let get = |name: &str| {
        kv.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    };
    let string = |name: &str| -> Result<String, String> {
        match get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "json: cannot unmarshal {} into Go struct field KVTxnOp.KV.{name} of type string",
                go_kind(other)
            )),
        }
    };
    let number = |name: &str| -> Result<u64, String> {
        match get(name) {
            None => Ok(0),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                format!("json: cannot unmarshal number {n} into Go struct field KVTxnOp.KV.{name} of type uint64")
            }),
            Some(other) => Err(format!(
                "json: cannot unmarshal {} into Go struct field KVTxnOp.KV.{name} of type uint64",
                go_kind(other)
            )),
        }
    };
    let value = match get("Value") {
        None => Vec::new(),
        Some(Value::String(v)) => STANDARD.decode(v.as_bytes()).map_err(|e| match e {
            base64::DecodeError::InvalidByte(at, _)
            | base64::DecodeError::InvalidLastSymbol(at, _) => {
                format!("illegal base64 data at input byte {at}")
            }
            _ => format!("illegal base64 data at input byte {}", v.len()),
        })?,
        Some(other) => {
            return Err(format!(
                "json: cannot unmarshal {} into Go struct field KVTxnOp.KV.Value of type []uint8",
                go_kind(other)
            ));
        }
    };
    Ok(Some(TxnOp {
        verb: string("Verb")?,
        key: string("Key")?,
        value,
        flags: number("Flags")?,
        index: number("Index")?,
        session: string("Session")?,
    }))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, Method};
    use serde_json::{Value, json};

    use crate::core::{Consul, Outcome, SimConfig, SimRequest, SimResponse, SimTime};

    fn call(c: &mut Consul, method: Method, target: &str, body: &str) -> SimResponse {
        let req = SimRequest {
            method,
            target: target.into(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        };
        match c.handle(SimTime::default(), &req, false) {
            Outcome::Done(r) => r,
            Outcome::Blocked { .. } => panic!("a non-blocking call parked"),
        }
    }

    fn session(c: &mut Consul) -> String {
        let r = call(c, Method::PUT, "/v1/session/create", r#"{"LockDelay":"0s"}"#);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["ID"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_rolled_back_txn_leaves_the_store_byte_identical() {
        let mut c = Consul::new(SimConfig::default());
        let s = session(&mut c);
        for k in ["a", "b", "tree/1", "tree/2", "gone"] {
            call(&mut c, Method::PUT, &format!("/v1/kv/{k}?flags=3"), k);
        }
        call(&mut c, Method::DELETE, "/v1/kv/gone", "");
        call(&mut c, Method::PUT, &format!("/v1/kv/held?acquire={s}"), "h");
        let before = c.snapshot().unwrap();
        let index = c.index();
        // Every kind of write, then a failing check: nothing may stay.
        let ops = json!([
            {"KV": {"Verb": "set", "Key": "a", "Value": "eA==", "Flags": 9}},
            {"KV": {"Verb": "set", "Key": "new", "Value": "eA=="}},
            {"KV": {"Verb": "set", "Key": "gone"}},
            {"KV": {"Verb": "delete", "Key": "b"}},
            {"KV": {"Verb": "delete-tree", "Key": "tree/"}},
            {"KV": {"Verb": "unlock", "Key": "held", "Session": s}},
            {"KV": {"Verb": "lock", "Key": "a", "Session": s}},
            {"KV": {"Verb": "set", "Key": "a", "Value": "eQ=="}},
            {"KV": {"Verb": "check-not-exists", "Key": "held"}},
        ]);
        let r = call(&mut c, Method::PUT, "/v1/txn", &ops.to_string());
        assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(c.index(), index);
        assert!(c.txn.is_none(), "the undo log is dropped");
        assert_eq!(String::from_utf8(c.snapshot().unwrap()), String::from_utf8(before));
    }

    #[test]
    fn a_committed_txn_writes_every_key_at_one_index() {
        let mut c = Consul::new(SimConfig::default());
        call(&mut c, Method::PUT, "/v1/kv/old", "o");
        let ops = json!([
            {"KV": {"Verb": "set", "Key": "x"}},
            {"KV": {"Verb": "set", "Key": "y"}},
            {"KV": {"Verb": "delete", "Key": "old"}},
        ]);
        let r = call(&mut c, Method::PUT, "/v1/txn", &ops.to_string());
        assert_eq!(r.status, 200);
        let index = c.index();
        assert_eq!(c.state.kv["x"].modify_index, index);
        assert_eq!(c.state.kv["y"].create_index, index);
        assert_eq!(c.state.tombstones["old"], index);
        assert!(c.txn.is_none());
    }
    /// Ending a session releases exactly the keys it still holds, whether it acquired them
    /// by a KV write or a transaction, after releases, deletes and a rolled-back lock, and
    /// after the store was saved and loaded (the held-key sets are rebuilt, not saved).
    #[test]
    fn ending_a_session_releases_the_keys_it_holds_and_no_others() {
        for reload in [false, true] {
            let mut c = Consul::new(SimConfig::default());
            let (s, other) = (session(&mut c), session(&mut c));
            for k in ["kept", "released", "deleted", "by-txn"] {
                call(&mut c, Method::PUT, &format!("/v1/kv/{k}?acquire={s}"), k);
            }
            call(&mut c, Method::PUT, &format!("/v1/kv/released?release={s}"), "r");
            call(&mut c, Method::DELETE, "/v1/kv/deleted", "");
            call(&mut c, Method::PUT, &format!("/v1/kv/deleted?acquire={other}"), "d");
            let lock =
                |k: &str| json!({"KV": {"Verb": "lock", "Key": k, "Value": "dg==", "Session": s}});
            let ops = json!([lock("by-txn"), lock("txn-only")]);
            call(&mut c, Method::PUT, "/v1/txn", &ops.to_string());
            let failing = json!([lock("rolled-back"), {"KV": {"Verb": "check-index", "Key": "kept", "Index": 1}}]);
            call(&mut c, Method::PUT, "/v1/txn", &failing.to_string());
            // Each session's keys are exactly the keys it holds.
            for session in c.state.sessions.values() {
                let held: Vec<&str> = c
                    .state
                    .kv
                    .iter()
                    .filter(|(_, e)| e.session.as_deref() == Some(session.id.as_str()))
                    .map(|(k, _)| &**k)
                    .collect();
                let known: Vec<&str> = session.acquired.iter().map(|k| &**k).collect();
                assert_eq!(known, held, "the keys {} holds", session.id);
            }
            if reload {
                let snapshot = c.snapshot().unwrap();
                c = Consul::new(SimConfig::default());
                c.restore(SimTime::default(), &snapshot).unwrap();
            }
            call(&mut c, Method::PUT, &format!("/v1/session/destroy/{s}"), "");
            let holder = |c: &Consul, k: &str| c.state.kv.get(k).and_then(|e| e.session.clone());
            for k in ["kept", "by-txn", "txn-only", "released"] {
                assert_eq!(holder(&c, k), None, "{k} (reloaded: {reload})");
            }
            assert_eq!(
                holder(&c, "deleted").as_deref(),
                Some(other.as_str()),
                "reloaded: {reload}"
            );
            assert!(!c.state.kv.contains_key("rolled-back"), "reloaded: {reload}");
        }
    }
}
