//! `/v1/txn`: all-or-nothing transactions of KV operations.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use super::kv::{Write, entry_json};
use super::{ApiError, Consul, Reply, SimResponse, SimTime, Target, field, json_body, str_field};

impl Consul {
    pub(crate) fn txn_endpoint(
        &mut self,
        now: SimTime,
        t: &Target,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let _ = t;
        let ops = json_body(body, "transaction")?;
        let Some(ops) = ops.as_array() else {
            return Err(ApiError::bad_request(
                "Failed to parse body: a transaction is a JSON list of operations",
            ));
        };
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
        let mut parsed = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            parsed.push(
                TxnOp::parse(op)
                    .map_err(|m| ApiError::bad_request(format!("Operation {i}: {m}")))?,
            );
        }
        // All or nothing: apply to the live store, roll back from a copy on failure.
        let saved = (
            self.state.kv.clone(),
            self.state.tombstones.clone(),
            self.state.kv_index,
            self.state.index,
        );
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in parsed.iter().enumerate() {
            match self.apply_txn_op(now, op, &mut results) {
                Ok(()) => {}
                Err(what) => errors.push(json!({"OpIndex": i, "What": what})),
            }
        }
        if errors.is_empty() {
            Ok(Reply::json(&json!({"Results": results, "Errors": Value::Null})))
        } else {
            (self.state.kv, self.state.tombstones, self.state.kv_index, self.state.index) = saved;
            Ok(Reply::write(SimResponse::json(
                StatusCode::CONFLICT,
                &json!({"Results": Value::Null, "Errors": errors}),
            )))
        }
    }

    fn apply_txn_op(
        &mut self,
        now: SimTime,
        op: &TxnOp,
        results: &mut Vec<Value>,
    ) -> Result<(), String> {
        let key = op.key.as_str();
        let push = |c: &Consul, results: &mut Vec<Value>, with_value: bool| {
            if let Some(e) = c.state.kv.get(key) {
                results.push(json!({"KV": entry_json(key, e, with_value)}));
            }
        };
        let current = self.state.kv.get(key).cloned();
        match op.verb.as_str() {
            "set" | "cas" | "lock" | "unlock" => {
                if key.is_empty() {
                    return Err("Missing key name".into());
                }
                if op.value.len() > self.config.max_value_size {
                    return Err(format!(
                        "value for key {key:?} exceeds {} bytes",
                        self.config.max_value_size
                    ));
                }
                let w = Write {
                    key,
                    value: op.value.clone(),
                    flags: Some(op.flags),
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
                        "cas" => format!(
                            "failed to set key {key:?}, index is stale (current {} != {})",
                            current.map_or(0, |e| e.modify_index),
                            op.index
                        ),
                        "lock" => format!("failed to lock key {key:?}: lock is already held"),
                        _ => format!(
                            "failed to unlock key {key:?}: lock isn't held, or is held by another session"
                        ),
                    }),
                    Err(e) => Err(e.message),
                }
            }
            "get" => match current {
                Some(_) => {
                    push(self, results, true);
                    Ok(())
                }
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "get-tree" => {
                for (k, e) in
                    self.state.kv.range(key.to_string()..).take_while(|(k, _)| k.starts_with(key))
                {
                    results.push(json!({"KV": entry_json(k, e, true)}));
                }
                Ok(())
            }
            "check-index" => match current {
                Some(e) if e.modify_index == op.index => {
                    push(self, results, false);
                    Ok(())
                }
                Some(e) => Err(format!("current modify index {} != {}", e.modify_index, op.index)),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "check-session" => match current {
                Some(e) if e.session.as_deref() == Some(op.session.as_str()) => {
                    push(self, results, false);
                    Ok(())
                }
                Some(_) => Err(format!("key {key:?} is not locked by session {:?}", op.session)),
                None => Err(format!("key {key:?} doesn't exist")),
            },
            "check-not-exists" => match current {
                Some(_) => Err(format!("key {key:?} exists")),
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
                    Err(format!(
                        "failed to delete key {key:?}, index is stale (current {} != {})",
                        current.map_or(0, |e| e.modify_index),
                        op.index
                    ))
                }
            }
            other => Err(format!("unknown KV verb {other:?}")),
        }
    }
}

/// One parsed transaction operation.
struct TxnOp {
    verb: String,
    key: String,
    value: Bytes,
    flags: u64,
    index: u64,
    session: String,
}

impl TxnOp {
    fn parse(op: &Value) -> Result<TxnOp, String> {
        let Some(kv) = field(op, "KV") else {
            let kinds: Vec<&String> =
                op.as_object().map(|o| o.keys().collect()).unwrap_or_default();
            return Err(format!("only KV operations are supported by consul-sim, got {kinds:?}"));
        };
        let verb = str_field(kv, "Verb").map_err(|e| e.message)?.ok_or("missing Verb")?;
        let known = [
            "set",
            "cas",
            "lock",
            "unlock",
            "get",
            "get-tree",
            "check-index",
            "check-session",
            "check-not-exists",
            "delete",
            "delete-tree",
            "delete-cas",
        ];
        if !known.contains(&verb.as_str()) {
            return Err(format!("unknown KV verb {verb:?}"));
        }
        let key = str_field(kv, "Key").map_err(|e| e.message)?.unwrap_or_default();
        let value = match str_field(kv, "Value").map_err(|e| e.message)? {
            Some(v) => STANDARD
                .decode(v.as_bytes())
                .map(Bytes::from)
                .map_err(|e| format!("Value of key {key:?} is not valid base64: {e}"))?,
            None => Bytes::new(),
        };
        let number = |name: &str| -> Result<u64, String> {
            match field(kv, name) {
                None => Ok(0),
                Some(v) => v.as_u64().ok_or(format!("{name} must be a non-negative integer")),
            }
        };
        Ok(TxnOp {
            flags: number("Flags")?,
            index: number("Index")?,
            session: str_field(kv, "Session").map_err(|e| e.message)?.unwrap_or_default(),
            verb,
            key,
            value,
        })
    }
}
