//! `/v1/kv`: the key/value store and its locks.

use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::gojson::quote;
use super::metrics::Fixed;
use super::session::check_uuid;
use super::{ApiError, Consul, Reply, SimRequest, SimResponse, SimTime, Target};

/// One stored key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvEntry {
    #[serde(with = "b64")]
    pub(crate) value: Box<[u8]>,
    pub(crate) flags: u64,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) lock_index: u64,
    pub(crate) session: Option<Box<str>>,
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<[u8]>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map(Vec::into_boxed_slice).map_err(D::Error::custom)
    }
}

/// The KV table. Keys are boxed to their exact length and values own exactly their bytes
/// (no capacity word, no shared buffer): at 200k keys each word a key saves is 1.6 MB.
pub(crate) type KvTable = BTreeMap<Box<str>, KvEntry>;

/// The entries of a map keyed like the KV table whose keys start with `prefix`, in order.
pub(crate) fn under<'a, V>(
    map: &'a BTreeMap<Box<str>, V>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a Box<str>, &'a V)> {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// One entry as Consul writes it (`structs.DirEntry`: LockIndex, Key, Flags, Value, Session,
/// CreateIndex, ModifyIndex), serialized straight from the store. `with_value: false` gives
/// `"Value": null`, as transaction results of writes do, and so does an empty value (Go's nil
/// `[]byte`).
pub(crate) struct EntryJson<'a> {
    pub(crate) key: &'a str,
    pub(crate) entry: &'a KvEntry,
    pub(crate) with_value: bool,
}

impl Serialize for EntryJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let e = self.entry;
        let mut out = s.serialize_struct("DirEntry", 7)?;
        out.serialize_field("LockIndex", &e.lock_index)?;
        out.serialize_field("Key", self.key)?;
        out.serialize_field("Flags", &e.flags)?;
        if self.with_value && !e.value.is_empty() {
            out.serialize_field("Value", &Base64(&e.value))?;
        } else {
            out.serialize_field("Value", &())?;
        }
        if let Some(session) = &e.session {
            out.serialize_field("Session", session)?;
        }
        out.serialize_field("CreateIndex", &e.create_index)?;
        out.serialize_field("ModifyIndex", &e.modify_index)?;
        out.end()
    }
}

/// Bytes as a base64 JSON string, encoded as they are written (no intermediate `String`).
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(self.0, &STANDARD))
    }
}

/// Parameters of a KV write.
pub(crate) struct Write<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a [u8],
    /// Flags to store: a write without `?flags` stores 0, whatever the key had.
    pub(crate) flags: u64,
    pub(crate) cas: Option<u64>,
    pub(crate) acquire: Option<&'a str>,
    pub(crate) release: Option<&'a str>,
}

/// The query as Go's `url.Values.Encode` writes it (keys sorted, `QueryEscape`d): Consul
/// quotes it in its "Conflicting flags" answer.
fn go_query_encode(query: &[(String, String)]) -> String {
    let escape = |s: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    let mut pairs: Vec<&(String, String)> = query.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<String> =
        pairs.iter().map(|(k, v)| format!("{}={}", escape(k), escape(v))).collect();
    parts.join("&")
}

/// A query number as Go's `strconv.ParseUint` reads it; Consul answers its error with 500.
fn parse_uint(t: &Target, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(v) = t.param(name) else { return Ok(None) };
    v.parse::<u64>().map(Some).map_err(|_| {
        let why = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("strconv.ParseUint: parsing {q_v}: {why}", q_v = quote(v)),
        )
    })
}

impl Consul {
    pub(crate) fn kv_endpoint(
        &mut self,
        now: SimTime,
        method: &Method,
        key: &str,
        t: &Target,
        req: &SimRequest,
    ) -> Result<Reply, ApiError> {
        match *method {
            Method::GET => self.kv_read(key, t),
            Method::PUT => {
                if key.is_empty() {
                    return Err(ApiError::bad_request("Missing key name"));
                }
                let body = &req.body;
                if body.len() > self.config.max_value_size {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "Request body({} bytes) too large, max size: {} bytes. See \
                             https://www.consul.io/docs/agent/options.html#kv_max_value_size.",
                            body.len(),
                            self.config.max_value_size
                        ),
                    ));
                }
                let (acquire, release) = (t.param("acquire"), t.param("release"));
                let cas = t.param("cas");
                let given = [cas.is_some(), acquire.is_some(), release.is_some()];
                if given.iter().filter(|c| **c).count() > 1 {
                    return Err(ApiError::bad_request(format!(
                        "Conflicting flags: {}",
                        go_query_encode(&t.query)
                    )));
                }
                if acquire.or(release) == Some("") {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "missing session",
                    ));
                }
                self.measure(Fixed::KvsApply);
                self.measure(match (cas, acquire, release) {
                    (Some(_), _, _) => Fixed::KvsCas,
                    (_, Some(_), _) => Fixed::KvsLock,
                    (_, _, Some(_)) => Fixed::KvsUnlock,
                    _ => Fixed::KvsSet,
                });
                let w = Write {
                    key,
                    // A fresh allocation: a stored value never pins the request's buffer.
                    value: body,
                    flags: parse_uint(t, "flags")?.unwrap_or(0),
                    cas: parse_uint(t, "cas")?,
                    acquire,
                    release,
                };
                let ok = self.kv_write(now, &w)?;
                Ok(Reply::json(&json!(ok)))
            }
            Method::DELETE => {
                if t.flag("recurse") && t.flag("cas") {
                    return Err(ApiError::bad_request(format!(
                        "Conflicting flags: {}",
                        go_query_encode(&t.query)
                    )));
                }
                if t.flag("recurse") {
                    self.measure(Fixed::KvsApply);
                    self.measure(Fixed::KvsDeleteTree);
                    self.kv_delete_tree(key);
                    return Ok(Reply::json(&json!(true)));
                }
                if key.is_empty() {
                    return Err(ApiError::bad_request("Missing key name"));
                }
                let cas = parse_uint(t, "cas")?;
                self.measure(Fixed::KvsApply);
                self.measure(if cas.is_some() { Fixed::KvsDeleteCas } else { Fixed::KvsDelete });
                let ok = match cas {
                    Some(cas) => self.kv_delete_cas(key, cas),
                    None => {
                        self.kv_delete(key);
                        true
                    }
                };
                Ok(Reply::json(&json!(ok)))
            }
            _ => Err(ApiError::method_not_allowed(method, "OPTIONS,GET,PUT,DELETE")),
        }
    }

    /// The blocking index of a prefix: its newest write or delete.
    fn prefix_index(&self, prefix: &str) -> u64 {
        let writes = under(&self.state.kv, prefix);
        let deletes = under(&self.state.tombstones, prefix);
        let newest = writes.map(|(_, e)| e.modify_index).chain(deletes.map(|(_, i)| *i)).max();
        newest.unwrap_or(self.state.kv_index).max(1)
    }

    fn kv_read(&self, key: &str, t: &Target) -> Result<Reply, ApiError> {
        if t.flag("keys") {
            let sep = t.param("separator").filter(|s| !s.is_empty());
            let mut keys: Vec<String> = Vec::new();
            for (k, _) in under(&self.state.kv, key) {
                let name = match sep.and_then(|s| k[key.len()..].find(s).map(|i| (i, s.len()))) {
                    Some((i, n)) => k[..key.len() + i + n].to_string(),
                    None => k.to_string(),
                };
                if keys.last() != Some(&name) {
                    keys.push(name);
                }
            }
            let index = self.prefix_index(key);
            if keys.is_empty() {
                return Err(ApiError::not_found_at(index));
            }
            return Ok(Reply::read_json(index, &json!(keys)));
        }
        if t.flag("recurse") {
            let entries: Vec<EntryJson<'_>> = under(&self.state.kv, key)
                .map(|(k, e)| EntryJson { key: k, entry: e, with_value: true })
                .collect();
            let index = self.prefix_index(key);
            if entries.is_empty() {
                return Err(ApiError::not_found_at(index));
            }
            return Ok(Reply::read_json(index, &entries));
        }
        if key.is_empty() {
            return Err(ApiError::bad_request("Missing key name"));
        }
        match self.state.kv.get(key) {
            Some(e) => {
                let index = e.modify_index;
                if t.flag("raw") {
                    // Consul 1.8.7 answers raw values as text/plain, never sniffed or run.
                    let resp = SimResponse {
                        status: StatusCode::OK,
                        // Consul sets the length itself, so even a long value is not chunked.
                        headers: vec![
                            ("Content-Type", "text/plain".into()),
                            ("X-Content-Type-Options", "nosniff".into()),
                            ("Content-Security-Policy", "sandbox".into()),
                            ("Content-Length", e.value.len().to_string()),
                        ],
                        body: Bytes::copy_from_slice(&e.value),
                    };
                    Ok(Reply::read(index, resp))
                } else {
                    let entry = EntryJson { key, entry: e, with_value: true };
                    Ok(Reply::read_json(index, &[entry]))
                }
            }
            // Consul answers a missing key with the KV table's index (writes and deletes of
            // any key), not the key's own tombstone.
            None => Err(ApiError::not_found_at(self.state.kv_index)),
        }
    }

    /// Fails like Consul when `id` names no session: 500 `invalid session "…"` (or the
    /// UUID lookup error for an id that is not 36 characters long).
    pub(crate) fn session_exists(&self, id: &str) -> Result<(), ApiError> {
        check_uuid(id)?;
        if self.state.sessions.contains_key(id) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("invalid session {q_id}", q_id = quote(id)),
            ))
        }
    }

    /// True while `key` is in a lock-delay at `now`.
    pub(crate) fn in_lock_delay(&self, key: &str, now: SimTime) -> bool {
        self.state.lock_delays.get(key).is_some_and(|until| *until > now)
    }

    /// Applies a KV write; `Ok(false)` when a condition (cas, lock) did not hold.
    pub(crate) fn kv_write(&mut self, now: SimTime, w: &Write<'_>) -> Result<bool, ApiError> {
        let existing = self.state.kv.get(w.key);
        if let Some(cas) = w.cas {
            // cas=0: only if absent; otherwise the current ModifyIndex must match.
            let current = existing.map_or(0, |e| e.modify_index);
            if current != cas {
                return Ok(false);
            }
        }
        // The entry as written: the old value is not copied only to be replaced.
        let mut entry = match existing {
            Some(e) => KvEntry { value: Box::default(), session: e.session.clone(), ..*e },
            None => KvEntry::default(),
        };
        let created = existing.is_none();
        if w.acquire.is_none() && w.release.is_none() {
            // A plain set or cas writes the request's own LockIndex, which is 0; the holding
            // session stays (seen on Consul 1.8.7: LockIndex 0 with Session still set).
            entry.lock_index = 0;
        }
        if let Some(session) = w.acquire {
            // Consul checks the lock-delay before it looks the session up: an acquire during
            // a lock-delay is `false` even with a session that is gone (seen on 1.8.7).
            if self.in_lock_delay(w.key, now) {
                return Ok(false);
            }
            self.session_exists(session)?;
            match &entry.session {
                Some(holder) if **holder != *session => return Ok(false),
                Some(_) => {}
                None => {
                    entry.lock_index += 1;
                    entry.session = Some(session.into());
                }
            }
        }
        if let Some(session) = w.release {
            // Releasing with a session that is not the holder (or does not exist at all)
            // is a plain `false`, as Go's api.Lock relies on after its session is gone.
            if entry.session.as_deref() != Some(session) {
                return Ok(false);
            }
            entry.session = None;
        }
        entry.value = Box::from(w.value);
        entry.flags = w.flags;
        // Consul skips a write that changes nothing (same value, flags, holder): the key
        // keeps its ModifyIndex and blocking readers are not woken.
        if existing.is_some_and(|e| *e == entry) {
            return Ok(true);
        }
        let index = self.write_index();
        self.remember(w.key);
        if created {
            entry.create_index = index;
        }
        entry.modify_index = index;
        self.state.kv_index = index;
        self.state.tombstones.remove(w.key);
        let holder = entry.session.clone();
        let before = self.state.kv.insert(w.key.into(), entry);
        self.note_holder(w.key, before.and_then(|e| e.session), holder);
        Ok(true)
    }

    pub(crate) fn kv_delete(&mut self, key: &str) {
        if self.state.kv.contains_key(key) {
            let index = self.write_index();
            self.remember(key);
            let gone = self.state.kv.remove(key).and_then(|e| e.session);
            self.note_holder(key, gone, None);
            self.state.kv_index = index;
            self.state.tombstones.insert(key.into(), index);
        }
    }

    pub(crate) fn kv_delete_cas(&mut self, key: &str, cas: u64) -> bool {
        match self.state.kv.get(key) {
            Some(e) if e.modify_index == cas => {
                self.kv_delete(key);
                true
            }
            Some(_) => false,
            // Consul: a missing key "matches" any cas index (measured: DELETE ?cas=5 of a
            // missing key answers true).
            None => true,
        }
    }

    pub(crate) fn kv_delete_tree(&mut self, prefix: &str) {
        let doomed: Vec<Box<str>> = under(&self.state.kv, prefix).map(|(k, _)| k.clone()).collect();
        if doomed.is_empty() {
            return;
        }
        let index = self.write_index();
        self.state.kv_index = index;
        for k in doomed {
            self.remember(&k);
            let gone = self.state.kv.remove(&k).and_then(|e| e.session);
            self.note_holder(&k, gone, None);
            self.state.tombstones.insert(k, index);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderMap, Method};

    use crate::core::{Consul, SimConfig, SimRequest, SimTime};

    #[test]
    fn a_stored_value_does_not_pin_the_request_buffer() {
        let mut c = Consul::new(SimConfig::default());
        let buffer = Bytes::from(vec![7u8; 64 * 1024]);
        let body = buffer.slice(100..110);
        let req = SimRequest {
            method: Method::PUT,
            target: "/v1/kv/k".into(),
            headers: HeaderMap::new(),
            body: body.clone(),
        };
        c.handle(SimTime::default(), &req, false);
        let stored = &c.state.kv["k"].value;
        assert_eq!(&stored[..], &body[..]);
        let range = buffer.as_ptr_range();
        assert!(!range.contains(&stored.as_ptr()), "the value is a slice of the request");
    }

    #[test]
    fn changes_nobody_takes_stay_bounded() {
        let mut c = Consul::new(SimConfig::default());
        for i in 0..5_000 {
            let req = SimRequest {
                method: Method::PUT,
                target: format!("/v1/kv/k{i}"),
                headers: HeaderMap::new(),
                body: Bytes::from_static(b"v"),
            };
            c.handle(SimTime::default(), &req, false);
        }
        let changes = c.take_changes();
        assert!(changes.all_kv && changes.keys.is_empty(), "{} keys listed", changes.keys.len());
        assert_eq!(c.take_changes(), Default::default());
    }
}
