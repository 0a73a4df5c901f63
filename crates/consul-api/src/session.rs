//! Sessions: `/v1/session`, the leases behind locks.

use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Client, segment};
use crate::types::{Index, QueryMeta, QueryOptions, SessionId, duration_serde};
use crate::{Error, Request};

/// What happens to the keys a session holds when it is invalidated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    /// Release the locks (the default).
    #[default]
    Release,
    /// Delete the held keys.
    Delete,
}

/// A session to create. `Default` gives Consul's defaults (no TTL, lock-delay 15 s,
/// behavior release, bound to the agent's node and its `serfHealth` check).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionRequest {
    /// A human-readable name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The node to bind to; the agent's own node if empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node: String,
    /// Time after an invalidation during which the held keys cannot be acquired (0–60 s).
    #[serde(with = "duration_serde", skip_serializing_if = "Option::is_none")]
    pub lock_delay: Option<Duration>,
    /// What happens to held keys on invalidation.
    pub behavior: Behavior,
    /// Invalidate unless renewed within this time (10 s to 24 h).
    #[serde(rename = "TTL", with = "duration_serde", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Node checks the session is bound to (default: `serfHealth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_checks: Option<Vec<String>>,
    /// Service checks the session is bound to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_checks: Vec<ServiceCheckRef>,
}

/// A service check a session is bound to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCheckRef {
    /// The check's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its namespace (Consul Enterprise); empty otherwise.
    #[serde(rename = "Namespace", default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A session as Consul reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionEntry {
    /// The session's id.
    #[serde(rename = "ID")]
    pub id: SessionId,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// The node it is bound to.
    #[serde(default)]
    pub node: String,
    /// Its lock-delay.
    #[serde(default, with = "duration_serde")]
    pub lock_delay: Option<Duration>,
    /// Its behavior.
    #[serde(default)]
    pub behavior: Behavior,
    /// Its TTL, if it has one.
    #[serde(rename = "TTL", default, with = "duration_serde")]
    pub ttl: Option<Duration>,
    /// The node checks it is bound to.
    #[serde(default)]
    pub node_checks: Option<Vec<String>>,
    /// The service checks it is bound to.
    #[serde(default)]
    pub service_checks: Option<Vec<ServiceCheckRef>>,
    /// Index of its creation.
    #[serde(default)]
    pub create_index: Index,
    /// Index of its last change.
    #[serde(default)]
    pub modify_index: Index,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "ID")]
    id: SessionId,
}

/// The session endpoints. Obtained from [`Client::session`].
#[derive(Clone, Debug)]
pub struct Session<'a> {
    client: &'a Client,
}

impl Client {
    /// Sessions.
    pub fn session(&self) -> Session<'_> {
        Session { client: self }
    }
}

impl Session<'_> {
    /// Creates a session; checks the TTL (≤ 24 h) and lock-delay (≤ 60 s) first. The
    /// lower bound of the TTL is the agent's `session_ttl_min` (10 s unless configured), so
    /// the server checks that one.
    pub async fn create(&self, req: &SessionRequest) -> Result<SessionId, Error> {
        if let Some(ttl) = req.ttl
            && ttl > Duration::from_secs(86_400)
        {
            return Err(Error::invalid(format!("session TTL must be at most 24h, got {ttl:?}")));
        }
        if req.lock_delay.is_some_and(|d| d > Duration::from_secs(60)) {
            return Err(Error::invalid("session lock-delay must be at most 60s"));
        }
        let created: Created =
            self.client.write_json(Method::PUT, "/v1/session/create".into(), req).await?;
        Ok(created.id)
    }

    /// Destroys a session, releasing (or deleting) what it holds.
    pub async fn destroy(&self, id: &SessionId) -> Result<(), Error> {
        let path = format!("/v1/session/destroy/{}", segment("session id", id.as_str())?);
        self.client.write_unit::<()>(Method::PUT, path, None).await
    }

    /// Renews a TTL session; `Ok(None)` if the session no longer exists (it expired or
    /// was destroyed: whatever it held is gone).
    pub async fn renew(&self, id: &SessionId) -> Result<Option<SessionEntry>, Error> {
        let path = format!("/v1/session/renew/{}", segment("session id", id.as_str())?);
        match self.client.send(Request::new(Method::PUT, path)).await {
            Ok(resp) => {
                let entries: Vec<SessionEntry> = crate::client::decode(&resp.body)?;
                Ok(entries.into_iter().next())
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The session `id`; `Ok(None)` if it does not exist.
    pub async fn info(
        &self,
        id: &SessionId,
        opts: &QueryOptions,
    ) -> Result<(Option<SessionEntry>, QueryMeta), Error> {
        let path = format!("/v1/session/info/{}", segment("session id", id.as_str())?);
        let (entries, meta) = self
            .client
            .query::<Option<Vec<SessionEntry>>>(Request::new(Method::GET, path), opts)
            .await?;
        Ok((entries.flatten().and_then(|e| e.into_iter().next()), meta))
    }

    /// Every session.
    pub async fn list(&self, opts: &QueryOptions) -> Result<(Vec<SessionEntry>, QueryMeta), Error> {
        let req = Request::new(Method::GET, "/v1/session/list");
        let (entries, meta) = self.client.query::<Option<Vec<SessionEntry>>>(req, opts).await?;
        Ok((entries.flatten().unwrap_or_default(), meta))
    }

    /// The sessions bound to `node`.
    pub async fn node(
        &self,
        node: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<SessionEntry>, QueryMeta), Error> {
        let req = Request::new(Method::GET, format!("/v1/session/node/{}", segment("node", node)?));
        let (entries, meta) = self.client.query::<Option<Vec<SessionEntry>>>(req, opts).await?;
        Ok((entries.flatten().unwrap_or_default(), meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_encodes_durations_as_go_strings() {
        let req = SessionRequest {
            name: "leader".into(),
            ttl: Some(Duration::from_secs(10)),
            lock_delay: Some(Duration::from_secs(5)),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"Name":"leader","LockDelay":"5s","Behavior":"release","TTL":"10s"}"#
        );
    }

    #[test]
    fn entries_decode_from_the_documented_sample() {
        // From Consul's session API docs, "Read Session" sample (LockDelay in nanoseconds).
        let body = r#"[{"ID":"adf4238a-882b-9ddc-4a9d-5b6758e4159e","Name":"test-session",
            "Node":"raja-laptop-02","LockDelay":1.5e+10,"Behavior":"release","TTL":"30s",
            "NodeChecks":["serfHealth"],"ServiceChecks":null,"CreateIndex":1086449,"ModifyIndex":1086449}]"#;
        let entries: Vec<SessionEntry> = serde_json::from_str(body).unwrap();
        assert_eq!(entries[0].lock_delay, Some(Duration::from_secs(15)));
        assert_eq!(entries[0].ttl, Some(Duration::from_secs(30)));
        assert_eq!(entries[0].node_checks.as_deref(), Some(&["serfHealth".to_string()][..]));
    }
}
