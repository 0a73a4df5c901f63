//! The key/value store: `/v1/kv`.

use bytes::Bytes;
use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Client, decode};
use crate::types::{Index, QueryMeta, QueryOptions, SessionId, base64_serde};
use crate::{Error, Request};

/// One entry of the KV store, as Consul returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvPair {
    /// The full key.
    pub key: String,
    /// Index of the write that created the key.
    #[serde(default)]
    pub create_index: Index,
    /// Index of the last write to the key.
    #[serde(default)]
    pub modify_index: Index,
    /// How many times a new session has acquired the key: the lock's fencing token.
    #[serde(default)]
    pub lock_index: Index,
    /// Opaque 64-bit flags the application attaches.
    #[serde(default)]
    pub flags: u64,
    /// The value; `None` when Consul stored no value (`null`).
    #[serde(default, with = "base64_serde")]
    pub value: Option<Bytes>,
    /// The session holding the key's lock, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
}

/// Conditions and lock operations for a [`Kv::put_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Flags stored with the value.
    pub flags: Option<u64>,
    /// Check-and-set: write only if the key's `ModifyIndex` is this (0: only if absent).
    pub cas: Option<Index>,
    /// Acquire the key's lock for this session (and write the value) if it is free.
    pub acquire: Option<SessionId>,
    /// Release the key's lock held by this session (and write the value).
    pub release: Option<SessionId>,
}

/// The KV endpoints. Obtained from [`Client::kv`].
#[derive(Clone, Debug)]
pub struct Kv<'a> {
    client: &'a Client,
}

impl Client {
    /// The KV store.
    pub fn kv(&self) -> Kv<'_> {
        Kv { client: self }
    }
}

/// Validates a key and builds its path; a leading `/` is dropped, as Go's client does.
fn key_path(key: &str, allow_empty: bool) -> Result<String, Error> {
    let key = key.strip_prefix('/').unwrap_or(key);
    if key.is_empty() && !allow_empty {
        return Err(Error::invalid("a KV key must not be empty"));
    }
    Ok(format!("/v1/kv/{key}"))
}

impl Kv<'_> {
    /// The entry at `key`; `Ok(None)` if there is none. A plain read with the client's
    /// defaults; [`get_with`](Kv::get_with) takes options (blocking, consistency, …) and
    /// returns the [`QueryMeta`] too.
    ///
    /// ```no_run
    /// # async fn run(client: consul_api::Client) -> Result<(), consul_api::Error> {
    /// client.kv().put("app/config", "v1").await?;
    /// let pair = client.kv().get("app/config").await?;
    /// assert_eq!(pair.and_then(|p| p.value).as_deref(), Some(&b"v1"[..]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get(&self, key: &str) -> Result<Option<KvPair>, Error> {
        Ok(self.get_with(key, &QueryOptions::default()).await?.0)
    }

    /// The entry at `key` read with `opts`, and what Consul said about the read (its index,
    /// to block on next); `Ok((None, meta))` if there is none.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use consul_api::QueryOptions;
    /// # async fn run(client: consul_api::Client) -> Result<(), consul_api::Error> {
    /// let (_, meta) = client.kv().get_with("app/config", &QueryOptions::default()).await?;
    /// // Wait up to 30 s for the key to change.
    /// let opts = QueryOptions::blocking(meta.last_index, Duration::from_secs(30));
    /// let (_changed, _meta) = client.kv().get_with("app/config", &opts).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_with(
        &self,
        key: &str,
        opts: &QueryOptions,
    ) -> Result<(Option<KvPair>, QueryMeta), Error> {
        let req = Request::new(Method::GET, key_path(key, false)?);
        let (pairs, meta) = self.client.query::<Vec<KvPair>>(req, opts).await?;
        Ok((pairs.and_then(|p| p.into_iter().next()), meta))
    }

    /// The raw value at `key` (`?raw`), without metadata decoding; `Ok(None)` if absent.
    pub async fn get_raw(
        &self,
        key: &str,
        opts: &QueryOptions,
    ) -> Result<(Option<Bytes>, QueryMeta), Error> {
        let req = Request::new(Method::GET, key_path(key, false)?).flag("raw");
        self.client.query_raw(req, opts).await
    }

    /// Every entry under `prefix` (`?recurse`); an empty prefix lists the whole store.
    pub async fn list(
        &self,
        prefix: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<KvPair>, QueryMeta), Error> {
        let req = Request::new(Method::GET, key_path(prefix, true)?).flag("recurse");
        let (pairs, meta) = self.client.query::<Vec<KvPair>>(req, opts).await?;
        Ok((pairs.unwrap_or_default(), meta))
    }

    /// The keys under `prefix` (`?keys`), folded at `separator` if one is given.
    pub async fn keys(
        &self,
        prefix: &str,
        separator: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<(Vec<String>, QueryMeta), Error> {
        let mut req = Request::new(Method::GET, key_path(prefix, true)?).flag("keys");
        if let Some(sep) = separator {
            req = req.query("separator", sep);
        }
        let (keys, meta) = self.client.query::<Vec<String>>(req, opts).await?;
        Ok((keys.unwrap_or_default(), meta))
    }

    /// Writes `value` at `key`.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<(), Error> {
        let written = self.put_with(key, value, &PutOptions::default()).await?;
        if written {
            Ok(())
        } else {
            Err(Error::aborted(format!("Consul refused the write of key {key:?}")))
        }
    }

    /// Writes `value` at `key` under `opts`; `Ok(false)` when a condition did not hold (a
    /// CAS index that moved, a lock held by another session).
    pub async fn put_with(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        opts: &PutOptions,
    ) -> Result<bool, Error> {
        if opts.acquire.is_some() && opts.release.is_some() {
            return Err(Error::invalid(format!(
                "key {key:?}: acquire and release cannot be combined in one write"
            )));
        }
        let mut req = Request::new(Method::PUT, key_path(key, false)?).body(value.into());
        if let Some(flags) = opts.flags {
            req = req.query("flags", flags.to_string());
        }
        if let Some(cas) = opts.cas {
            req = req.query("cas", cas.0.to_string());
        }
        if let Some(s) = &opts.acquire {
            req = req.query("acquire", s.0.clone());
        }
        if let Some(s) = &opts.release {
            req = req.query("release", s.0.clone());
        }
        let resp =
            self.client.send(req).await.map_err(|e| e.with_context(format!("PUT key {key:?}")))?;
        decode(&resp.body)
    }

    /// Writes `value` only if the key's `ModifyIndex` is `index` (0: only if it is absent).
    pub async fn cas(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        index: Index,
    ) -> Result<bool, Error> {
        self.put_with(key, value, &PutOptions { cas: Some(index), ..Default::default() }).await
    }

    /// Acquires the lock on `key` for `session`, writing `value`; `Ok(false)` if it is held
    /// by another session or in its lock-delay.
    pub async fn acquire(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        session: &SessionId,
        flags: u64,
    ) -> Result<bool, Error> {
        let opts =
            PutOptions { acquire: Some(session.clone()), flags: Some(flags), ..Default::default() };
        self.put_with(key, value, &opts).await
    }

    /// Releases the lock on `key` held by `session`, writing `value`.
    pub async fn release(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        session: &SessionId,
        flags: u64,
    ) -> Result<bool, Error> {
        let opts =
            PutOptions { release: Some(session.clone()), flags: Some(flags), ..Default::default() };
        self.put_with(key, value, &opts).await
    }

    /// Deletes `key` (deleting an absent key succeeds).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let resp = self.client.send(Request::new(Method::DELETE, key_path(key, false)?)).await?;
        decode::<bool>(&resp.body).map(|_| ())
    }

    /// Deletes `key` only if its `ModifyIndex` is `index`.
    pub async fn delete_cas(&self, key: &str, index: Index) -> Result<bool, Error> {
        let req =
            Request::new(Method::DELETE, key_path(key, false)?).query("cas", index.0.to_string());
        decode(&self.client.send(req).await?.body)
    }

    /// Deletes every key under `prefix` (an empty prefix deletes the whole store).
    pub async fn delete_tree(&self, prefix: &str) -> Result<(), Error> {
        let req = Request::new(Method::DELETE, key_path(prefix, true)?).flag("recurse");
        decode::<bool>(&self.client.send(req).await?.body).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_decode_from_the_documented_sample() {
        // From Consul's KV API docs, "Read Key" sample response.
        let body = r#"[{"CreateIndex":100,"ModifyIndex":200,"LockIndex":200,"Key":"zip",
            "Flags":0,"Value":"dGVzdA==","Session":"adf4238a-882b-9ddc-4a9d-5b6758e4159e"}]"#;
        let pairs: Vec<KvPair> = serde_json::from_str(body).unwrap();
        assert_eq!(pairs[0].key, "zip");
        assert_eq!(pairs[0].value.as_deref(), Some(&b"test"[..]));
        assert_eq!(pairs[0].lock_index, Index(200));
        assert_eq!(
            pairs[0].session.as_ref().unwrap().as_str(),
            "adf4238a-882b-9ddc-4a9d-5b6758e4159e"
        );
        let null: Vec<KvPair> = serde_json::from_str(r#"[{"Key":"k","Value":null}]"#).unwrap();
        assert_eq!(null[0].value, None);
        assert!(serde_json::from_str::<Vec<KvPair>>(r#"[{"Key":"k","Value":"%%%"}]"#).is_err());
    }

    #[test]
    fn keys_drop_one_leading_slash_and_must_not_be_empty() {
        assert_eq!(key_path("/a/b", false).unwrap(), "/v1/kv/a/b");
        assert!(key_path("", false).unwrap_err().is_invalid());
        assert!(key_path("/", false).is_err());
        assert_eq!(key_path("", true).unwrap(), "/v1/kv/");
    }
}
