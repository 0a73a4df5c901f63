//! `/v1/session`: leases, their TTLs, their checks, and what invalidation does to locks.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::metrics::Fixed;
use super::{ApiError, Consul, Reply, SimTime, Target, expect, field, go_kind, str_field};

const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(86_400);

/// One session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionState {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) node: String,
    pub(crate) lock_delay: Duration,
    pub(crate) delete: bool,
    pub(crate) ttl: Option<Duration>,
    /// The TTL exactly as the client sent it (`"10000ms"`, `"0s"`): Consul shows it as given.
    #[serde(default)]
    pub(crate) ttl_text: Option<String>,
    pub(crate) node_checks: Vec<String>,
    pub(crate) service_checks: Vec<String>,
    /// The deprecated `Checks` list, kept apart as Consul keeps it (and bound like
    /// `NodeChecks`).
    #[serde(default)]
    pub(crate) checks: Vec<String>,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
    pub(crate) renewed_at: SimTime,
    /// The keys this session holds, kept with every change of a key's holder
    /// ([`Consul::note_holder`]), so that ending the session looks at those keys and not at
    /// the whole store. Not saved: rebuilt from the keys' holders when a store is loaded
    /// ([`Consul::index_held_keys`]).
    #[serde(skip)]
    pub(crate) acquired: BTreeSet<Box<str>>,
}

impl SessionState {
    /// When the TTL runs out, `grace` × TTL after the last renewal.
    pub(crate) fn expires_at(&self, grace: f64) -> Option<SimTime> {
        self.ttl.map(|ttl| self.renewed_at.after(ttl.mul_f64(grace)))
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": self.lock_delay.as_nanos() as u64,
            "Behavior": if self.delete { "delete" } else { "release" },
            "TTL": match (&self.ttl_text, self.ttl) {
                (Some(text), _) => text.clone(),
                (None, Some(ttl)) => consul_api::types::format_duration(ttl),
                (None, None) => String::new(),
            },
            "NodeChecks": self.node_checks,
            "ServiceChecks": if self.service_checks.is_empty() { Value::Null } else {
                Value::Array(self.service_checks.iter().map(|c| json!({"ID": c, "Namespace": ""})).collect())
            },
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        });
        if let (false, Some(obj)) = (self.checks.is_empty(), v.as_object_mut()) {
            obj.insert("Checks".into(), json!(self.checks));
        }
        v
    }
}

impl Consul {
    pub(crate) fn session_endpoint(
        &mut self,
        now: SimTime,
        method: &Method,
        rest: &str,
        t: &Target,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let _ = t;
        let (verb, arg) = rest.split_once('/').unwrap_or((rest, ""));
        let path = format!("/v1/session/{rest}");
        // `create` and `list` are exact paths; the others take everything after their slash
        // (`session/node/a/b` is node `a/b`).
        if matches!(verb, "create" | "list") && rest.contains('/') {
            return Err(ApiError::no_endpoint());
        }
        match verb {
            "create" => {
                expect(method, &Method::PUT, &path)?;
                let id = self.create_session(now, body)?;
                self.measure(Fixed::SessionApply);
                self.measure(Fixed::SessionCreate);
                Ok(Reply::json(&json!({"ID": id})))
            }
            "destroy" => {
                expect(method, &Method::PUT, &path)?;
                require_id(arg)?;
                check_uuid(arg)?;
                self.measure(Fixed::SessionApply);
                self.measure(Fixed::SessionDestroy);
                self.invalidate_session(now, arg);
                Ok(Reply::json(&json!(true)))
            }
            "renew" => {
                expect(method, &Method::PUT, &path)?;
                require_id(arg)?;
                check_uuid(arg)?;
                match self.state.sessions.get_mut(arg) {
                    Some(s) => {
                        s.renewed_at = now;
                        Ok(Reply::json(&json!([s.json()])))
                    }
                    None => Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("Session id '{arg}' not found"),
                    )),
                }
            }
            "info" => {
                expect(method, &Method::GET, &path)?;
                require_id(arg)?;
                check_uuid(arg).map_err(ApiError::with_failed_read_meta)?;
                let found: Vec<Value> =
                    self.state.sessions.get(arg).map(|s| s.json()).into_iter().collect();
                Ok(Reply::read_json(self.state.session_index, &Value::Array(found)))
            }
            "list" => {
                expect(method, &Method::GET, &path)?;
                let all: Vec<Value> = self.state.sessions.values().map(|s| s.json()).collect();
                Ok(Reply::read_json(self.state.session_index, &Value::Array(all)))
            }
            "node" => {
                expect(method, &Method::GET, &path)?;
                if arg.is_empty() {
                    return Err(ApiError::bad_request("Missing node name"));
                }
                let on: Vec<Value> = self
                    .state
                    .sessions
                    .values()
                    .filter(|s| s.node == arg)
                    .map(|s| s.json())
                    .collect();
                Ok(Reply::read_json(self.state.session_index, &Value::Array(on)))
            }
            _ => Err(ApiError::no_endpoint()),
        }
    }

    fn create_session(&mut self, now: SimTime, body: &Bytes) -> Result<String, ApiError> {
        let req: Value = if body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            super::gojson::decode(body)
                .map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?
        };
        if !req.is_null() && !req.is_object() {
            return Err(ApiError::bad_request(format!(
                "Request decode failed: json: cannot unmarshal {} into Go value of type struct \
                 {{ LockDelay interface {{}}; *structs.Alias }}",
                go_kind(&req)
            )));
        }
        let node = go_string(&req, "Node", "string")?
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.config.node_name.clone());
        if !self.state.nodes.contains_key(&node) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Missing node registration",
            ));
        }
        let lock_delay = lock_delay_field(&req)?.unwrap_or(DEFAULT_LOCK_DELAY);
        let delete = match go_string(&req, "Behavior", "structs.SessionBehavior")?.as_deref() {
            None | Some("") | Some("release") => false,
            Some("delete") => true,
            Some(other) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Invalid Behavior setting '{other}'"),
                ));
            }
        };
        let ttl_text = go_string(&req, "TTL", "string")?;
        let ttl = match ttl_text.as_deref() {
            None | Some("") => None,
            Some(text) => {
                let ttl = consul_api::types::parse_duration(text).ok_or_else(|| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Session TTL '{text}' invalid: {}", go_duration_error(text)),
                    )
                })?;
                if !ttl.is_zero() && !(self.config.session_ttl_min..=MAX_TTL).contains(&ttl) {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "Invalid Session TTL '{}', must be between [{}=24h0m0s]",
                            ttl.as_nanos(),
                            go_duration(self.config.session_ttl_min)
                        ),
                    ));
                }
                Some(ttl).filter(|d| !d.is_zero())
            }
        };
        let list = |name: &str| -> Result<Option<Vec<String>>, ApiError> {
            match field(&req, name) {
                None => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            decode_error(
                                v,
                                &format!("Go struct field .{name} of type types.CheckID"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(other) => {
                    Err(decode_error(other, &format!("Go struct field .{name} of type []string")))
                }
            }
        };
        // NodeChecks defaults to serfHealth whatever the deprecated Checks says; Checks is kept
        // apart, except ["serfHealth"] alone (the old default), which Consul drops.
        let node_checks = list("NodeChecks")?.unwrap_or_else(|| vec!["serfHealth".to_string()]);
        let checks = list("Checks")?.unwrap_or_default();
        let checks = if checks == ["serfHealth"] { Vec::new() } else { checks };
        let name = go_string(&req, "Name", "string")?;
        let service_checks: Vec<String> = match field(&req, "ServiceChecks") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|c| {
                    str_field(c, "ID")?
                        .ok_or_else(|| ApiError::bad_request("ServiceChecks entries need an ID"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ApiError::bad_request("ServiceChecks must be a list")),
        };
        for id in node_checks.iter().chain(&checks).chain(&service_checks) {
            match self.state.checks.get(&(node.clone(), id.clone())) {
                None => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Missing check '{id}' registration"),
                    ));
                }
                Some(c) if c.status == "critical" => {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("Check '{id}' is in critical state"),
                    ));
                }
                Some(_) => {}
            }
        }
        let id = self.uuid();
        let index = self.bump();
        self.state.session_index = index;
        self.state.sessions.insert(
            id.clone(),
            SessionState {
                id: id.clone(),
                name: name.unwrap_or_default(),
                node,
                lock_delay,
                delete,
                ttl,
                ttl_text,
                node_checks,
                service_checks,
                checks,
                create_index: index,
                modify_index: index,
                renewed_at: now,
                acquired: BTreeSet::new(),
            },
        );
        Ok(id)
    }

    /// Ends a session: its locks are released (or its keys deleted) and each held key enters
    /// the session's lock-delay, starting at `at`.
    pub(crate) fn invalidate_session(&mut self, at: SimTime, id: &str) {
        let Some(session) = self.state.sessions.remove(id) else { return };
        // The keys it holds, in key order: O(its keys), not O(store). (The check is
        // belt and braces: the set is exact.)
        let held: Vec<&Box<str>> = session
            .acquired
            .iter()
            .filter(|k| self.state.kv.get(&***k).is_some_and(|e| e.session.as_deref() == Some(id)))
            .collect();
        let index = self.bump();
        self.state.session_index = index;
        for key in held {
            self.touched_key(key);
            if session.delete {
                self.state.kv.remove(key);
                self.state.tombstones.insert(key.clone(), index);
            } else if let Some(e) = self.state.kv.get_mut(key) {
                e.session = None;
                e.modify_index = index;
            }
            self.state.kv_index = index;
            // Consul stores any LockDelay but never enforces more than 60 s.
            let delay = session.lock_delay.min(MAX_LOCK_DELAY);
            if !delay.is_zero() {
                self.state.lock_delays.insert(key.to_string(), at.after(delay));
            }
        }
    }

    /// Moves `key` from the keys `before` holds to those `after` holds (either may be
    /// none): called wherever a key's holder changes.
    pub(crate) fn note_holder(
        &mut self,
        key: &str,
        before: Option<Box<str>>,
        after: Option<Box<str>>,
    ) {
        if before == after {
            return;
        }
        if let Some(s) = before.and_then(|s| self.state.sessions.get_mut(&*s)) {
            s.acquired.remove(key);
        }
        if let Some(s) = after.and_then(|s| self.state.sessions.get_mut(&*s)) {
            s.acquired.insert(key.into());
        }
    }

    /// Rebuilds every session's [`acquired`](SessionState::acquired) keys from the keys'
    /// holders: once, when a store is loaded (snapshots do not save them).
    pub(crate) fn index_held_keys(&mut self) {
        for session in self.state.sessions.values_mut() {
            session.acquired.clear();
        }
        for (key, entry) in &self.state.kv {
            if let Some(s) = entry.session.as_deref().and_then(|s| self.state.sessions.get_mut(s)) {
                s.acquired.insert(key.clone());
            }
        }
    }

    pub(crate) fn expire_sessions(&mut self, now: SimTime) {
        let grace = self.grace();
        let mut due: Vec<(SimTime, String)> = self
            .state
            .sessions
            .values()
            .filter_map(|s| s.expires_at(grace).filter(|t| *t <= now).map(|t| (t, s.id.clone())))
            .collect();
        due.sort();
        for (at, id) in due {
            tracing::debug!(session = %id, "session TTL expired");
            self.invalidate_session(at, &id);
        }
    }

    /// Sessions bound to the check `id` on `node`.
    pub(crate) fn sessions_bound_to(&self, node: &str, id: &str) -> Vec<String> {
        self.state
            .sessions
            .values()
            .filter(|s| {
                s.node == node
                    && (s.node_checks.iter().any(|c| c == id)
                        || s.checks.iter().any(|c| c == id)
                        || s.service_checks.iter().any(|c| c == id))
            })
            .map(|s| s.id.clone())
            .collect()
    }

    /// Fault injection: invalidate a session now, as if its TTL ran out.
    pub fn expire_session(&mut self, now: SimTime, id: &str) -> bool {
        let known = self.state.sessions.contains_key(id);
        self.invalidate_session(now, id);
        known
    }
}

/// Consul's session table is indexed by UUID: any other id fails the lookup with a 500.
pub(crate) fn check_uuid(id: &str) -> Result<(), ApiError> {
    if id.len() == 36 {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed session lookup: index error: UUID must be 36 characters",
        ))
    }
}

/// `LockDelay`: a Go duration string, or a number read as whole seconds below 1000 and as
/// nanoseconds from 1000 on (Consul's `FixupLockDelay`). Negative delays count as none.
fn lock_delay_field(req: &Value) -> Result<Option<Duration>, ApiError> {
    match field(req, "LockDelay") {
        Some(Value::Number(n)) => {
            let n = n.as_f64().unwrap_or_default();
            Ok(Some(if n <= 0.0 {
                Duration::ZERO
            } else if n < 1000.0 {
                Duration::from_secs(n as u64)
            } else {
                Duration::from_nanos(n as u64)
            }))
        }
        Some(Value::String(s)) if s.starts_with('-') => Ok(Some(Duration::ZERO)),
        Some(Value::String(s)) if !s.is_empty() => {
            consul_api::types::parse_duration(s).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!("Request decode failed: {}", go_duration_error(s)))
            })
        }
        _ => Ok(None),
    }
}

/// A string field of the session request, with Go's decode error for any other JSON type.
fn go_string(req: &Value, name: &str, go_type: &str) -> Result<Option<String>, ApiError> {
    match field(req, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => {
            Err(decode_error(other, &format!("Go struct field .{name} of type {go_type}")))
        }
    }
}

fn decode_error(v: &Value, into: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Request decode failed: json: cannot unmarshal {} into {into}",
        go_kind(v)
    ))
}

/// Go's `time.ParseDuration` error for a string it rejects.
pub(crate) fn go_duration_error(text: &str) -> String {
    let digits = !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.');
    if digits {
        format!("time: missing unit in duration \"{text}\"")
    } else {
        format!("time: invalid duration \"{text}\"")
    }
}

/// A duration as Go's `Duration.String` writes it: `10s`, `1m0s`, `24h0m0s`, `500ms`.
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1f64)
        } else if nanos < 1_000_000 {
            ("µs", 1e3)
        } else {
            ("ms", 1e6)
        };
        return format!("{}{unit}", nanos as f64 / div);
    }
    let secs = d.as_secs();
    let frac = d.subsec_nanos();
    let s = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        let f = format!("{:09}", frac);
        format!("{}.{}s", secs % 60, f.trim_end_matches('0'))
    };
    match (secs / 3600, (secs / 60) % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

fn require_id(arg: &str) -> Result<(), ApiError> {
    if arg.is_empty() { Err(ApiError::bad_request("Missing session")) } else { Ok(()) }
}
