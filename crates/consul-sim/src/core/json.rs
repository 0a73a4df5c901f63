//! JSON helpers shared by the endpoints: Consul decodes request keys case-insensitively.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::ApiError;
use super::gojson::quote;

/// Decodes a JSON body as Consul's Go decoder does (first value; Go's error texts). `what`
/// names the body in the log, not in the answer: Consul's answer names only the decoder error.
pub(crate) fn json_body(body: &[u8], what: &str) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    super::gojson::decode(body).map_err(|e| {
        tracing::debug!(body = what, error = %e, "request body does not decode");
        ApiError::bad_request(format!("Request decode failed: {e}"))
    })
}

/// A field of a JSON object, matched case-insensitively as Consul's decoder does.
pub(crate) fn field<'v>(obj: &'v Value, name: &str) -> Option<&'v Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
}

pub(crate) fn str_field(obj: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!("{name} must be a string, got {other}"))),
    }
}

/// A duration field: a Go string (`"10s"`) or integer nanoseconds.
pub(crate) fn duration_field(obj: &Value, name: &str) -> Result<Option<Duration>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => consul_api::types::parse_duration(s).map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("{name}: invalid duration {q_s}", q_s = quote(s)))
        }),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some(Duration::from_nanos(n)))
            .ok_or_else(|| ApiError::bad_request(format!("{name}: invalid duration {n}"))),
        Some(other) => Err(ApiError::bad_request(format!("{name}: invalid duration {other}"))),
    }
}

/// Maps of string to string, as JSON (`Meta`).
pub(crate) fn map_field(obj: &Value, name: &str) -> Result<BTreeMap<String, String>, ApiError> {
    match field(obj, name) {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ApiError::bad_request(format!("{name}.{k} must be a string"))),
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be an object"))),
    }
}

/// A list of strings (`Tags`).
pub(crate) fn strings_field(obj: &Value, name: &str) -> Result<Vec<String>, ApiError> {
    match field(obj, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must hold strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("{name} must be a list"))),
    }
}

pub(crate) fn to_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
}

/// JSON kinds as Go's decoder names them in its errors (`cannot unmarshal number into …`).
pub(crate) fn go_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The snake_case names Consul's agent accepts for fields of a service definition (its
/// `TranslateKeys` step), and their canonical names.
pub(crate) const SERVICE_ALIASES: &[(&str, &str)] =
    &[("enable_tag_override", "EnableTagOverride"), ("tagged_addresses", "TaggedAddresses")];

/// The other names Consul's agent accepts for fields of a check definition. The sim reads
/// a script check's arguments from `Args`.
pub(crate) const CHECK_ALIASES: &[(&str, &str)] = &[
    ("script_args", "Args"),
    ("ScriptArgs", "Args"),
    ("deregister_critical_service_after", "DeregisterCriticalServiceAfter"),
    ("docker_container_id", "DockerContainerID"),
    ("tls_skip_verify", "TLSSkipVerify"),
    ("service_id", "ServiceID"),
];

/// Renames the alias keys of a JSON object (matched case-insensitively, as Consul does) to
/// their canonical names, unless the canonical name is given too.
pub(crate) fn translate_keys(v: &mut Value, aliases: &[(&str, &str)]) {
    let Some(obj) = v.as_object_mut() else { return };
    for (alias, canonical) in aliases {
        let Some(key) = obj.keys().find(|k| k.eq_ignore_ascii_case(alias)).cloned() else {
            continue;
        };
        if obj.keys().any(|k| k.eq_ignore_ascii_case(canonical)) {
            continue;
        }
        if let Some(val) = obj.remove(&key) {
            obj.insert((*canonical).to_string(), val);
        }
    }
}
