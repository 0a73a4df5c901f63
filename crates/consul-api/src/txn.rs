//! Transactions: `/v1/txn`, all KV operations applied atomically or not at all.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::client::{Client, decode, status_error};
use crate::kv::KvPair;
use crate::types::{Index, SessionId, base64_serde};
use crate::{Error, Request};

/// The most operations one transaction may hold (Consul answers 413 beyond it).
pub const MAX_TXN_OPS: usize = 128;

/// A KV verb inside a transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvVerb {
    /// Write the value.
    Set,
    /// Write the value if the key's `ModifyIndex` matches `Index`.
    Cas,
    /// Acquire the lock for `Session` and write the value.
    Lock,
    /// Release the lock held by `Session` and write the value.
    Unlock,
    /// Read the key (fails the transaction if absent).
    Get,
    /// Read every key under the prefix.
    GetTree,
    /// Fail unless the key's `ModifyIndex` matches `Index`.
    CheckIndex,
    /// Fail unless the key's lock is held by `Session`.
    CheckSession,
    /// Fail if the key exists.
    CheckNotExists,
    /// Delete the key.
    Delete,
    /// Delete every key under the prefix.
    DeleteTree,
    /// Delete the key if its `ModifyIndex` matches `Index`.
    DeleteCas,
}

/// One KV operation of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KvOp {
    /// What to do.
    pub verb: KvVerb,
    /// The key (or prefix for the tree verbs).
    pub key: String,
    /// The value, for the writing verbs.
    #[serde(with = "base64_serde", skip_serializing_if = "Option::is_none")]
    pub value: Option<Bytes>,
    /// Flags stored with a written value.
    #[serde(skip_serializing_if = "is_zero")]
    pub flags: u64,
    /// The index to compare, for cas, check-index and delete-cas.
    #[serde(skip_serializing_if = "is_zero_index")]
    pub index: Index,
    /// The session, for lock, unlock and check-session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionId>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_index(v: &Index) -> bool {
    v.0 == 0
}

impl KvOp {
    fn new(verb: KvVerb, key: impl Into<String>) -> Self {
        KvOp { verb, key: key.into(), value: None, flags: 0, index: Index(0), session: None }
    }

    /// `set`: write `value` at `key`.
    pub fn set(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        KvOp { value: Some(value.into()), ..KvOp::new(KvVerb::Set, key) }
    }

    /// `cas`: write `value` if the key's `ModifyIndex` is `index` (0: only if absent).
    pub fn cas(key: impl Into<String>, value: impl Into<Bytes>, index: Index) -> Self {
        KvOp { value: Some(value.into()), index, ..KvOp::new(KvVerb::Cas, key) }
    }

    /// `lock`: acquire `key` for `session`, writing `value`.
    pub fn lock(key: impl Into<String>, value: impl Into<Bytes>, session: SessionId) -> Self {
        KvOp { value: Some(value.into()), session: Some(session), ..KvOp::new(KvVerb::Lock, key) }
    }

    /// `unlock`: release `key` held by `session`, writing `value`.
    pub fn unlock(key: impl Into<String>, value: impl Into<Bytes>, session: SessionId) -> Self {
        KvOp { value: Some(value.into()), session: Some(session), ..KvOp::new(KvVerb::Unlock, key) }
    }

    /// `get`: read `key`.
    pub fn get(key: impl Into<String>) -> Self {
        KvOp::new(KvVerb::Get, key)
    }

    /// `get-tree`: read every key under `prefix`.
    pub fn get_tree(prefix: impl Into<String>) -> Self {
        KvOp::new(KvVerb::GetTree, prefix)
    }

    /// `check-index`: fail unless the key's `ModifyIndex` is `index`.
    pub fn check_index(key: impl Into<String>, index: Index) -> Self {
        KvOp { index, ..KvOp::new(KvVerb::CheckIndex, key) }
    }

    /// `check-session`: fail unless `session` holds the key's lock.
    pub fn check_session(key: impl Into<String>, session: SessionId) -> Self {
        KvOp { session: Some(session), ..KvOp::new(KvVerb::CheckSession, key) }
    }

    /// `check-not-exists`: fail if the key exists.
    pub fn check_not_exists(key: impl Into<String>) -> Self {
        KvOp::new(KvVerb::CheckNotExists, key)
    }

    /// `delete`: delete `key`.
    pub fn delete(key: impl Into<String>) -> Self {
        KvOp::new(KvVerb::Delete, key)
    }

    /// `delete-tree`: delete every key under `prefix`.
    pub fn delete_tree(prefix: impl Into<String>) -> Self {
        KvOp::new(KvVerb::DeleteTree, prefix)
    }

    /// `delete-cas`: delete `key` if its `ModifyIndex` is `index`.
    pub fn delete_cas(key: impl Into<String>, index: Index) -> Self {
        KvOp { index, ..KvOp::new(KvVerb::DeleteCas, key) }
    }

    /// The same operation with `flags` stored with the value.
    pub fn with_flags(mut self, flags: u64) -> Self {
        self.flags = flags;
        self
    }
}

/// Why one operation failed and rolled the transaction back.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TxnError {
    /// Position of the failing operation in the request.
    pub op_index: usize,
    /// Consul's explanation.
    pub what: String,
}

/// The outcome of a transaction that Consul processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every operation applied; the entries read or written, in order (deletes and checks
    /// return none).
    Committed(Vec<KvPair>),
    /// Nothing applied (409): the operations that failed and why.
    RolledBack(Vec<TxnError>),
}

impl TxnOutcome {
    /// True if the transaction committed.
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed(_))
    }
}

#[derive(Serialize)]
struct OpEnvelope<'a> {
    #[serde(rename = "KV")]
    kv: &'a KvOp,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResponse {
    #[serde(default)]
    results: Option<Vec<ResultEnvelope>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Deserialize)]
struct ResultEnvelope {
    #[serde(rename = "KV")]
    kv: Option<KvPair>,
}

/// The transaction endpoint. Obtained from [`Client::txn`].
#[derive(Clone, Debug)]
pub struct Txn<'a> {
    client: &'a Client,
}

impl Client {
    /// Transactions.
    pub fn txn(&self) -> Txn<'_> {
        Txn { client: self }
    }
}

impl Txn<'_> {
    /// Applies `ops` atomically. A rollback is `Ok(TxnOutcome::RolledBack)`, not an error;
    /// more than [`MAX_TXN_OPS`] operations, or an empty key, fail before anything is sent.
    pub async fn execute(&self, ops: &[KvOp]) -> Result<TxnOutcome, Error> {
        if ops.is_empty() {
            return Err(Error::invalid("a transaction needs at least one operation"));
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(Error::invalid(format!(
                "a transaction holds at most {MAX_TXN_OPS} operations, this one has {}",
                ops.len()
            )));
        }
        for (i, op) in ops.iter().enumerate() {
            let tree = matches!(op.verb, KvVerb::GetTree | KvVerb::DeleteTree);
            if op.key.is_empty() && !tree {
                return Err(Error::invalid(format!("transaction operation {i}: empty key")));
            }
        }
        let body: Vec<OpEnvelope<'_>> = ops.iter().map(|kv| OpEnvelope { kv }).collect();
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::invalid(format!("cannot encode the transaction: {e}")))?;
        let resp = self
            .client
            .raw(Request::new(Method::PUT, "/v1/txn").body(body))
            .await
            .map_err(|e| e.with_context("PUT /v1/txn"))?;
        match resp.status {
            StatusCode::OK => {
                let parsed: TxnResponse = decode(&resp.body)?;
                Ok(TxnOutcome::Committed(
                    parsed.results.unwrap_or_default().into_iter().filter_map(|r| r.kv).collect(),
                ))
            }
            StatusCode::CONFLICT => {
                let parsed: TxnResponse = decode(&resp.body)?;
                Ok(TxnOutcome::RolledBack(parsed.errors.unwrap_or_default()))
            }
            _ => Err(status_error(&resp).with_context("PUT /v1/txn")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_encode_as_consul_expects() {
        let ops = [
            KvOp::set("a", "x").with_flags(7),
            KvOp::check_session("leader", SessionId("s1".into())),
            KvOp::delete_cas("b", Index(42)),
            KvOp::check_not_exists("c"),
        ];
        let body: Vec<OpEnvelope<'_>> = ops.iter().map(|kv| OpEnvelope { kv }).collect();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"[{"KV":{"Verb":"set","Key":"a","Value":"eA==","Flags":7}},{"KV":{"Verb":"check-session","Key":"leader","Session":"s1"}},{"KV":{"Verb":"delete-cas","Key":"b","Index":42}},{"KV":{"Verb":"check-not-exists","Key":"c"}}]"#
        );
    }

    #[test]
    fn rollback_decodes_from_the_documented_sample() {
        let body = r#"{"Results":null,"Errors":[{"OpIndex":0,"What":"failed to lock key \"a\": lock is already held"}]}"#;
        let parsed: TxnResponse = serde_json::from_str(body).unwrap();
        let errors = parsed.errors.unwrap();
        assert_eq!(errors[0].op_index, 0);
        assert!(errors[0].what.contains("already held"));
    }
}
