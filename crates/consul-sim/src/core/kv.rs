//! `/v1/kv` and `/v1/txn`: the key/value store, locks and transactions.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiError, Consul, Reply, SimResponse, SimTime, Target};

/// One stored key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvEntry {
    #[serde(with = "b64")]
    pub(crate) value: Bytes,
    pub(crate) flags: u64,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) lock_index: u64,
    pub(crate) session: Option<String>,
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s.as_bytes()).map(Bytes::from).map_err(D::Error::custom)
    }
}

/// The JSON Consul returns for one entry; `with_value: false` gives `"Value": null`, as
/// transaction results of writes do.
pub(crate) fn entry_json(key: &str, e: &KvEntry, with_value: bool) -> Value {
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": key,
        "Flags": e.flags,
        "Value": if with_value { Value::String(STANDARD.encode(&e.value)) } else { Value::Null },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if let (Some(s), Some(obj)) = (&e.session, v.as_object_mut()) {
        obj.insert("Session".into(), Value::String(s.clone()));
    }
    v
}

/// Parameters of a KV write.
pub(crate) struct Write<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: Bytes,
    pub(crate) flags: Option<u64>,
    pub(crate) cas: Option<u64>,
    pub(crate) acquire: Option<&'a str>,
    pub(crate) release: Option<&'a str>,
}

impl Consul {
    pub(crate) fn kv_endpoint(
        &mut self,
        now: SimTime,
        method: &Method,
        key: &str,
        t: &Target,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        match *method {
            Method::GET => self.kv_read(key, t),
            Method::PUT => {
                if key.is_empty() {
                    return Err(ApiError::bad_request("Missing key name"));
                }
                if body.len() > self.config.max_value_size {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "Request body({} bytes) too large, max size: {} bytes",
                            body.len(),
                            self.config.max_value_size
                        ),
                    ));
                }
                let number = |name: &str| -> Result<Option<u64>, ApiError> {
                    t.param(name)
                        .map(|v| {
                            v.parse::<u64>().map_err(|_| {
                                ApiError::bad_request(format!("Invalid {name} value {v:?}"))
                            })
                        })
                        .transpose()
                };
                let w = Write {
                    key,
                    value: body.clone(),
                    flags: number("flags")?,
                    cas: number("cas")?,
                    acquire: t.param("acquire"),
                    release: t.param("release"),
                };
                let conflicting = [w.cas.is_some(), w.acquire.is_some(), w.release.is_some()];
                if conflicting.iter().filter(|c| **c).count() > 1 {
                    return Err(ApiError::bad_request(
                        "Conflicting flags: only one of cas, acquire and release may be given",
                    ));
                }
                let ok = self.kv_write(now, &w)?;
                Ok(Reply::json(&json!(ok)))
            }
            Method::DELETE => {
                if t.flag("recurse") {
                    self.kv_delete_tree(key);
                    return Ok(Reply::json(&json!(true)));
                }
                if key.is_empty() {
                    return Err(ApiError::bad_request("Missing key name"));
                }
                let ok = match t.param("cas") {
                    Some(c) => {
                        let cas: u64 = c.parse().map_err(|_| {
                            ApiError::bad_request(format!("Invalid cas value {c:?}"))
                        })?;
                        self.kv_delete_cas(key, cas)
                    }
                    None => {
                        self.kv_delete(key);
                        true
                    }
                };
                Ok(Reply::json(&json!(ok)))
            }
            _ => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed"),
            )),
        }
    }

    /// The blocking index of a prefix: its newest write or delete.
    fn prefix_index(&self, prefix: &str) -> u64 {
        let writes =
            self.state.kv.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix));
        let deletes = self
            .state
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        let newest = writes.map(|(_, e)| e.modify_index).chain(deletes.map(|(_, i)| *i)).max();
        newest.unwrap_or(self.state.kv_index).max(1)
    }

    fn kv_read(&self, key: &str, t: &Target) -> Result<Reply, ApiError> {
        if t.flag("keys") {
            let sep = t.param("separator").filter(|s| !s.is_empty());
            let mut keys: Vec<String> = Vec::new();
            for k in self.state.kv.range(key.to_string()..).map(|(k, _)| k) {
                if !k.starts_with(key) {
                    break;
                }
                let name = match sep.and_then(|s| k[key.len()..].find(s).map(|i| (i, s.len()))) {
                    Some((i, n)) => k[..key.len() + i + n].to_string(),
                    None => k.clone(),
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
            let entries: Vec<Value> = self
                .state
                .kv
                .range(key.to_string()..)
                .take_while(|(k, _)| k.starts_with(key))
                .map(|(k, e)| entry_json(k, e, true))
                .collect();
            let index = self.prefix_index(key);
            if entries.is_empty() {
                return Err(ApiError::not_found_at(index));
            }
            return Ok(Reply::read_json(index, &Value::Array(entries)));
        }
        if key.is_empty() {
            return Err(ApiError::bad_request("Missing key name"));
        }
        let tomb = self.state.tombstones.get(key).copied().unwrap_or(0);
        match self.state.kv.get(key) {
            Some(e) => {
                let index = e.modify_index.max(tomb);
                if t.flag("raw") {
                    let resp = SimResponse {
                        status: StatusCode::OK,
                        headers: vec![("Content-Type", "application/octet-stream".into())],
                        body: e.value.clone(),
                    };
                    Ok(Reply::read(index, resp))
                } else {
                    Ok(Reply::read_json(index, &json!([entry_json(key, e, true)])))
                }
            }
            None => {
                let index = if tomb > 0 { tomb } else { self.state.kv_index };
                Err(ApiError::not_found_at(index))
            }
        }
    }

    pub(crate) fn session_exists(&self, id: &str) -> Result<(), ApiError> {
        if self.state.sessions.contains_key(id) {
            Ok(())
        } else {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("invalid session {id:?}")))
        }
    }

    /// Applies a KV write; `Ok(false)` when a condition (cas, lock) did not hold.
    pub(crate) fn kv_write(&mut self, now: SimTime, w: &Write<'_>) -> Result<bool, ApiError> {
        let existing = self.state.kv.get(w.key).cloned();
        if let Some(cas) = w.cas {
            let current = existing.as_ref().map_or(0, |e| e.modify_index);
            if current != cas {
                return Ok(false);
            }
        }
        let mut entry = existing.clone().unwrap_or_default();
        if let Some(session) = w.acquire {
            self.session_exists(session)?;
            if self.state.lock_delays.get(w.key).is_some_and(|until| *until > now) {
                return Ok(false);
            }
            match &entry.session {
                Some(holder) if holder != session => return Ok(false),
                Some(_) => {}
                None => {
                    entry.lock_index += 1;
                    entry.session = Some(session.to_string());
                }
            }
        }
        if let Some(session) = w.release {
            self.session_exists(session)?;
            if entry.session.as_deref() != Some(session) {
                return Ok(false);
            }
            entry.session = None;
        }
        let index = self.bump();
        entry.value = w.value.clone();
        if let Some(flags) = w.flags {
            entry.flags = flags;
        }
        if existing.is_none() {
            entry.create_index = index;
        }
        entry.modify_index = index;
        self.state.kv_index = index;
        self.state.tombstones.remove(w.key);
        self.state.kv.insert(w.key.to_string(), entry);
        Ok(true)
    }

    pub(crate) fn kv_delete(&mut self, key: &str) {
        if self.state.kv.remove(key).is_some() {
            let index = self.bump();
            self.state.kv_index = index;
            self.state.tombstones.insert(key.to_string(), index);
        }
    }

    pub(crate) fn kv_delete_cas(&mut self, key: &str, cas: u64) -> bool {
        match self.state.kv.get(key) {
            Some(e) if e.modify_index == cas => {
                self.kv_delete(key);
                true
            }
            Some(_) => false,
            None => cas == 0,
        }
    }

    pub(crate) fn kv_delete_tree(&mut self, prefix: &str) {
        let doomed: Vec<String> = self
            .state
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if doomed.is_empty() {
            return;
        }
        let index = self.bump();
        self.state.kv_index = index;
        for k in doomed {
            self.state.kv.remove(&k);
            self.state.tombstones.insert(k, index);
        }
    }
}
