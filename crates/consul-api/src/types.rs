//! Identifiers, indexes, query options and metadata shared by every endpoint.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A Consul raft index (`X-Consul-Index`, `CreateIndex`, `ModifyIndex`, `LockIndex`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Index(pub u64);

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A session's id (a UUID chosen by Consul).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub String);

impl SessionId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for SessionId {
    fn from(s: &str) -> Self {
        SessionId(s.to_string())
    }
}

/// Read consistency (`?consistent`, `?stale`, or Consul's default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Consul's default: read from the leader, which may briefly serve a stale value after
    /// losing leadership.
    #[default]
    Default,
    /// Linearizable: the leader confirms it still leads before answering.
    Consistent,
    /// Any server may answer, possibly out of date (see `QueryMeta::last_contact`).
    Stale,
}

/// Options common to every read: blocking, consistency, token, datacenter, filter. What is
/// left unset falls back to the client's [`RequestDefaults`]. `Debug` never shows the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct QueryOptions {
    /// Block until the result's index is above this one (a blocking query). 0 never blocks.
    pub index: Index,
    /// How long a blocking query may wait; Consul's default is 5 minutes, its cap 10.
    pub wait: Option<Duration>,
    /// Read consistency.
    pub consistency: Consistency,
    /// ACL token for this request, overriding the client's.
    pub token: Option<String>,
    /// Datacenter, overriding the agent's.
    pub datacenter: Option<String>,
    /// A filter expression (`?filter=`), on the endpoints that support it.
    pub filter: Option<String>,
}

impl QueryOptions {
    /// Options for a blocking query: wait up to `wait` for an index above `index`. With index
    /// 0 it is a plain read (Consul never blocks on 0, and the client sends no `index`), so a
    /// watch loop can use it from its first read on.
    pub fn blocking(index: Index, wait: Duration) -> Self {
        QueryOptions { index, wait: Some(wait), ..Default::default() }
    }

    /// The same options, with consistent reads.
    pub fn consistent(mut self) -> Self {
        self.consistency = Consistency::Consistent;
        self
    }

    /// The same options, with stale reads allowed.
    pub fn stale(mut self) -> Self {
        self.consistency = Consistency::Stale;
        self
    }
}

impl fmt::Debug for QueryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryOptions")
            .field("index", &self.index)
            .field("wait", &self.wait)
            .field("consistency", &self.consistency)
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .field("datacenter", &self.datacenter)
            .field("filter", &self.filter)
            .finish()
    }
}

/// What a [`Client`](crate::Client) applies to every request that does not say otherwise:
/// reads, writes, transactions and blocking reads alike (see
/// [`Client::with_defaults`](crate::Client::with_defaults)).
///
/// ```
/// use consul_api::{Consistency, RequestDefaults};
/// # fn main() -> Result<(), consul_api::Error> {
/// let client = consul_api::Client::builder().build()?.with_defaults(RequestDefaults {
///     datacenter: Some("dc1".into()),
///     consistency: Consistency::Stale,
///     ..Default::default()
/// });
/// assert_eq!(client.defaults().datacenter.as_deref(), Some("dc1"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RequestDefaults {
    /// `?dc=` for every request (Go's `Config.Datacenter`); `None`: the agent's own.
    pub datacenter: Option<String>,
    /// The consistency mode of reads that ask for [`Consistency::Default`].
    pub consistency: Consistency,
    /// The wait of blocking reads that set none; `None`: Consul's default (5 minutes).
    pub wait: Option<Duration>,
    /// The ACL token sent as `X-Consul-Token` by requests that carry none of their own.
    pub token: Option<String>,
}

impl fmt::Debug for RequestDefaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestDefaults")
            .field("datacenter", &self.datacenter)
            .field("consistency", &self.consistency)
            .field("wait", &self.wait)
            .field("token", &self.token.as_ref().map(|_| Redacted))
            .finish()
    }
}

/// Shown instead of a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Consul's default blocking wait.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);

/// The longest blocking wait Consul honours.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// What Consul said about a read: its index and how fresh it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryMeta {
    /// `X-Consul-Index`: pass it back as [`QueryOptions::index`] to block for a change.
    pub last_index: Index,
    /// `X-Consul-KnownLeader`: false when the answering server knew of no leader.
    pub known_leader: bool,
    /// `X-Consul-LastContact`: time since the answering server last heard from the leader.
    pub last_contact: Duration,
}

/// Formats a duration the way Consul's JSON expects (`"15s"`, `"1500ms"`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Parses a Go duration string (`"10s"`, `"1m30s"`, `"250ms"`, `"1h"`, `"1.5s"`, `"0"`).
///
/// Returns `None` for anything else, including negative durations.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * scale;
    }
    if !total.is_finite() || total > 1e12 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// Serde for a duration that Consul sends either as a Go string (`"15s"`) or as integer
/// nanoseconds (`15000000000`), and that we send as a string.
pub(crate) mod duration_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Nanos(u64),
            // Consul's docs show `"LockDelay": 1.5e+10`: nanoseconds written as a float.
            Float(f64),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Nanos(n)) => Ok(Some(Duration::from_nanos(n))),
            Some(Raw::Float(f)) if f.is_finite() && (0.0..1e19).contains(&f) => {
                Ok(Some(Duration::from_nanos(f as u64)))
            }
            Some(Raw::Float(f)) => Err(D::Error::custom(format!("invalid duration {f}"))),
            Some(Raw::Text(t)) if t.is_empty() => Ok(None),
            Some(Raw::Text(t)) => super::parse_duration(&t)
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("invalid duration {t:?}"))),
        }
    }
}

/// Serde for a KV value: base64 text in JSON, raw bytes in memory, `null` when absent.
pub(crate) mod base64_serde {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(t) => STANDARD
                .decode(t.as_bytes())
                .map(|v| Some(Bytes::from(v)))
                .map_err(|e| D::Error::custom(format!("Value is not valid base64: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_and_format() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "abc", "10", "-5s", "5x", "s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(15)), "15s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
