//! User events: `/v1/event` — fire an event through the gossip pool, list the recent ones.

use bytes::Bytes;
use http::Method;
use serde::Deserialize;

use crate::client::{Client, decode, segment};
use crate::types::{QueryMeta, QueryOptions, base64_serde};
use crate::{Error, Request};

/// An event as Consul reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserEvent {
    /// The event's id (a UUID chosen by the agent).
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its payload, if any.
    #[serde(default, with = "base64_serde")]
    pub payload: Option<Bytes>,
    /// The node name filter (a regular expression), empty for all.
    #[serde(default)]
    pub node_filter: String,
    /// The service filter, empty for all.
    #[serde(default)]
    pub service_filter: String,
    /// The tag filter, empty for all.
    #[serde(default)]
    pub tag_filter: String,
    /// The event format's version.
    #[serde(default)]
    pub version: u32,
    /// The gossip pool's Lamport time when it was fired.
    #[serde(rename = "LTime", default)]
    pub ltime: u64,
}

/// Which agents an event is meant for (`?node=`, `?service=`, `?tag=`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// A regular expression on node names.
    pub node: Option<String>,
    /// A service name.
    pub service: Option<String>,
    /// A tag of that service.
    pub tag: Option<String>,
}

/// The event endpoints. Obtained from [`Client::event`].
#[derive(Clone, Debug)]
pub struct Event<'a> {
    client: &'a Client,
}

impl Client {
    /// User events.
    pub fn event(&self) -> Event<'_> {
        Event { client: self }
    }
}

impl Event<'_> {
    /// Fires the event `name` with `payload` (`PUT /v1/event/fire/:name`).
    pub async fn fire(
        &self,
        name: &str,
        payload: impl Into<Bytes>,
        filter: &EventFilter,
    ) -> Result<UserEvent, Error> {
        let path = format!("/v1/event/fire/{}", segment("event name", name)?);
        let mut req = Request::new(Method::PUT, path).body(payload.into());
        for (param, value) in
            [("node", &filter.node), ("service", &filter.service), ("tag", &filter.tag)]
        {
            if let Some(v) = value {
                req = req.query(param, v.clone());
            }
        }
        decode(&self.client.send(req).await?.body)
    }

    /// The most recent events this agent has seen, only those named `name` if given.
    pub async fn list(
        &self,
        name: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<(Vec<UserEvent>, QueryMeta), Error> {
        let mut req = Request::new(Method::GET, "/v1/event/list");
        if let Some(name) = name {
            req = req.query("name", name);
        }
        let (events, meta) = self.client.query::<Option<Vec<UserEvent>>>(req, opts).await?;
        Ok((events.flatten().unwrap_or_default(), meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_from_a_consul_1_8_7_answer() {
        // `PUT /v1/event/fire/deploy?service=web` with body "hello" on Consul 1.8.7.
        let body = r#"{"ID":"f17e15a1-d04a-635b-caed-43a5c312176d","Name":"deploy",
            "Payload":"aGVsbG8=","NodeFilter":"","ServiceFilter":"web","TagFilter":"",
            "Version":1,"LTime":0}"#;
        let e: UserEvent = serde_json::from_str(body).unwrap();
        assert_eq!(e.payload.as_deref(), Some(&b"hello"[..]));
        assert_eq!(e.service_filter, "web");
        assert_eq!(e.version, 1);
    }
}
