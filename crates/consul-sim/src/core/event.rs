//! `/v1/event`: user events fired through the agent and the agent's list of the ones it
//! received.
//!
//! Consul keeps events in the agent's memory only (the last 256), not in raft, so they are
//! not part of a snapshot. The list's `X-Consul-Index` is not a raft index but a hash of
//! the newest listed event's id: a blocking list returns as soon as it differs.

use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use regex::Regex;
use serde_json::{Value, json};

use super::gojson::quote;
use super::{ApiError, Consul, Reply, SimResponse, Target, expect};

/// How many events the agent remembers (Consul's `maxUserEvents`).
const MAX_EVENTS: usize = 256;

/// Serf's limit on a user event, counted before encoding.
const EVENT_SIZE_LIMIT: usize = 512;

/// One user event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    id: String,
    name: String,
    payload: Option<Vec<u8>>,
    node_filter: String,
    service_filter: String,
    tag_filter: String,
    ltime: u64,
}

impl Event {
    fn json(&self, ltime: u64) -> Value {
        let payload = self
            .payload
            .as_ref()
            .map(|p| Value::String(base64::engine::general_purpose::STANDARD.encode(p)));
        json!({
            "ID": self.id,
            "Name": self.name,
            "Payload": payload,
            "NodeFilter": self.node_filter,
            "ServiceFilter": self.service_filter,
            "TagFilter": self.tag_filter,
            "Version": 1,
            "LTime": ltime,
        })
    }
}

/// The events of one agent and its Lamport clock.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Events {
    list: Vec<Event>,
    ltime: u64,
}

/// Consul's index of an event list: the two halves of the newest id, XORed.
fn uuid_to_index(id: &str) -> u64 {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let half = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
    if hex.len() != 32 {
        return 1;
    }
    half(&hex[..16]) ^ half(&hex[16..])
}

/// A filter regex as Consul applies it: anywhere in the name (Go's `MatchString`).
fn filter_regex(field: &str, pattern: &str) -> Result<Option<Regex>, ApiError> {
    if pattern.is_empty() {
        return Ok(None);
    }
    Regex::new(pattern).map(Some).map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid {field} filter {q_pattern}: {e}",
            q_pattern = quote(pattern)
        ))
    })
}

impl Consul {
    pub(crate) fn event_endpoint(
        &mut self,
        method: &Method,
        rest: &str,
        t: &Target,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let path = format!("/v1/event/{rest}");
        match rest.split_once('/') {
            Some(("fire", name)) => {
                expect(method, &Method::PUT, &path)?;
                self.fire_event(name, t, body)
            }
            None if rest == "list" => {
                expect(method, &Method::GET, &path)?;
                Ok(self.list_events(t))
            }
            _ => Err(ApiError::no_endpoint()),
        }
    }

    fn fire_event(&mut self, name: &str, t: &Target, body: &Bytes) -> Result<Reply, ApiError> {
        if name.is_empty() {
            return Err(ApiError::bad_request("Missing name"));
        }
        let node_filter = t.param("node").unwrap_or_default().to_string();
        let service_filter = t.param("service").unwrap_or_default().to_string();
        let tag_filter = t.param("tag").unwrap_or_default().to_string();
        if !tag_filter.is_empty() && service_filter.is_empty() {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Cannot provide tag filter without service filter",
            ));
        }
        // Serf counts the name twice (event name and encoded message), the filters and
        // about 96 bytes of framing.
        let size = 2 * name.len()
            + body.len()
            + node_filter.len()
            + service_filter.len()
            + tag_filter.len()
            + if body.len() > 255 { 96 } else { 95 };
        if size > EVENT_SIZE_LIMIT {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "1 error occurred:\n\t* error broadcasting event to segment \"\": user event \
                 exceeds configured limit of 512 bytes before encoding\n\n",
            ));
        }
        let node_re = filter_regex("node", &node_filter)?;
        let service_re = filter_regex("service", &service_filter)?;
        let tag_re = filter_regex("tag", &tag_filter)?;
        let event = Event {
            id: self.uuid(),
            name: name.to_string(),
            payload: (!body.is_empty()).then(|| body.to_vec()),
            node_filter,
            service_filter,
            tag_filter,
            ltime: 0,
        };
        // The answer is the event as sent, before the agent's clock stamps it.
        let answer = event.json(0);
        if self.receives(node_re.as_ref(), service_re.as_ref(), tag_re.as_ref()) {
            let events = &mut self.events;
            events.ltime += 1;
            let ltime = events.ltime + 1;
            events.list.push(Event { ltime, ..event });
            if events.list.len() > MAX_EVENTS {
                events.list.remove(0);
            }
        }
        // Events are not raft writes, but the store's index wakes blocked event lists.
        self.bump();
        Ok(Reply::write(SimResponse::json(StatusCode::OK, &answer)))
    }

    /// Whether this agent takes an event with these filters: its node name matches the
    /// node filter and, with a service filter, one of its services (and tags) matches.
    fn receives(&self, node: Option<&Regex>, service: Option<&Regex>, tag: Option<&Regex>) -> bool {
        if node.is_some_and(|re| !re.is_match(&self.config.node_name)) {
            return false;
        }
        let Some(service) = service else { return true };
        let me = &self.config.node_name;
        self.state.services.iter().any(|((n, _), s)| {
            n == me
                && service.is_match(&s.name)
                && tag.is_none_or(|re| s.tags.iter().any(|t| re.is_match(t)))
        })
    }

    fn list_events(&self, t: &Target) -> Reply {
        let name = t.param("name").filter(|n| !n.is_empty());
        let listed: Vec<&Event> =
            self.events.list.iter().filter(|e| name.is_none_or(|n| e.name == n)).collect();
        let index = listed.last().map_or(1, |e| uuid_to_index(&e.id));
        let body: Vec<Value> = listed.iter().map(|e| e.json(e.ltime)).collect();
        let mut resp = SimResponse::json(StatusCode::OK, &Value::Array(body));
        resp.headers.push(("X-Consul-Index", index.to_string()));
        let moved = t.param("index").and_then(|i| i.parse::<u64>().ok()) != Some(index);
        Reply::Watch { moved, response: resp }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_of_an_event_list_is_consuls_uuid_hash() {
        // Observed on Consul 1.8.7: this id gave X-Consul-Index 17413487348346883297.
        assert_eq!(
            uuid_to_index("6eec0ead-0ee2-3c0c-9f45-2cd69c1bb0ed"),
            17_413_487_348_346_883_297
        );
    }
}
