//! Turning a transcript into something two Consuls must agree on to the letter.
//!
//! What differs between two correct Consuls is replaced, and nothing else:
//! - raft indexes (`X-Consul-Index`, `CreateIndex`, `ModifyIndex`, …) by their rank among all
//!   indexes the transcript shows: indexes are compared by their order, not their values;
//! - UUIDs (session and node ids, event ids) by `uuid-N`, in order of first appearance;
//! - fields a case masks (they vary between two runs of the same Consul), by `"<masked>"`,
//!   and the number after each text a case masks (`mask-text current modify index`);
//! - the port of an `ip:port` string (the agent's ports are the environment's);
//! - `X-Consul-LastContact` by whether it is there.
//!
//! Headers compared are the ones Consul sends with meaning; transport headers (`Date`,
//! `Content-Length`, `Vary`, `Transfer-Encoding`) are not part of the API.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::backend::Answer;

/// Headers whose values are compared.
const HEADERS: &[&str] = &[
    "content-type",
    "x-consul-index",
    "x-consul-knownleader",
    "x-consul-lastcontact",
    "x-consul-effective-consistency",
    "x-content-type-options",
    "x-consul-translate-addresses",
    "x-cache",
    "location",
    "allow",
];

/// JSON fields that hold raft indexes.
const INDEX_FIELDS: &[&str] = &["CreateIndex", "ModifyIndex", "LastIndex", "Index"];

/// One exchange of a transcript, before normalization.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    /// The step's text as written in the case.
    pub(crate) step: String,
    pub(crate) answer: Answer,
    pub(crate) unordered: bool,
}

/// The transcript as JSON, normalized: one value per exchange.
///
/// Indexes at or below `baseline` (the backend's raft index before the script ran) all
/// become `idx#0`: they belong to what came before (an agent's bootstrap, whose order of
/// writes varies from one start of Consul to the next, or earlier scripts).
pub(crate) fn normalize(transcript: &[Exchange], masks: &[String], baseline: u64) -> Vec<Value> {
    let mut raw: Vec<(String, Value)> =
        transcript.iter().map(|e| (e.step.clone(), as_json(e))).collect();
    let mut indexes = BTreeSet::new();
    for (_, v) in &raw {
        collect_indexes(v, &mut indexes);
    }
    let ranks: BTreeMap<u64, usize> = indexes
        .iter()
        .filter(|v| **v > baseline)
        .enumerate()
        .map(|(i, v)| (*v, i + 1))
        .chain(indexes.iter().filter(|v| **v <= baseline).map(|v| (*v, 0)))
        .collect();
    let mut uuids = Vec::new();
    for (_, v) in &mut raw {
        rewrite(v, &ranks, &mut uuids, masks);
    }
    raw.into_iter()
        .zip(transcript)
        .map(|((step, mut v), e)| {
            if e.unordered
                && let Some(items) = v.get_mut("body").and_then(Value::as_array_mut)
            {
                items.sort_by_key(|i| i.to_string());
            }
            v["step"] = Value::String(step);
            v
        })
        .collect()
}

fn as_json(e: &Exchange) -> Value {
    let a = &e.answer;
    let mut headers = Map::new();
    for name in HEADERS {
        if let Some(v) = a.headers.get(*name) {
            let v = match *name {
                "x-consul-lastcontact" => "<present>".to_string(),
                // Go writes `application/json`; charset parameters are not part of the API.
                _ => v.clone(),
            };
            headers.insert((*name).to_string(), Value::String(v));
        }
    }
    let body = if a.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice::<Value>(&a.body).unwrap_or_else(|_| {
            Value::String(format!("text: {}", String::from_utf8_lossy(&a.body)))
        })
    };
    serde_json::json!({ "status": a.status, "headers": headers, "body": body })
}

fn collect_indexes(v: &Value, out: &mut BTreeSet<u64>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if is_index_field(k)
                    && let Some(n) = index_value(v)
                {
                    out.insert(n);
                }
                collect_indexes(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_indexes(v, out)),
        _ => {}
    }
}

fn is_index_field(k: &str) -> bool {
    k == "x-consul-index" || INDEX_FIELDS.contains(&k)
}

fn index_value(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn rewrite(v: &mut Value, ranks: &BTreeMap<u64, usize>, uuids: &mut Vec<String>, masks: &[String]) {
    match v {
        Value::Object(m) => {
            let entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
            for (k, mut val) in entries {
                if masks.iter().any(|mk| mk == &k) {
                    val = Value::String("<masked>".into());
                } else if is_index_field(&k)
                    && let Some(n) = index_value(&val)
                {
                    val = Value::String(format!("idx#{}", ranks.get(&n).copied().unwrap_or(0)));
                } else {
                    rewrite(&mut val, ranks, uuids, masks);
                }
                m.insert(replace_uuids(&k, uuids), val);
            }
        }
        Value::Array(a) => {
            a.iter_mut().for_each(|v| rewrite(v, ranks, uuids, masks));
            // `sort-strings`: lists of strings whose order Consul takes from a Go map.
            if masks.iter().any(|m| m == "sort:strings") && a.iter().all(Value::is_string) {
                a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
            }
        }
        Value::String(s) => *s = mask_texts(&mask_port(&replace_uuids(s, uuids)), masks),
        _ => {}
    }
}

/// `127.0.0.1:8300` and `127.0.0.1:46223` alike: the agent's ports are the environment's.
fn mask_port(s: &str) -> String {
    match s.rsplit_once(':') {
        Some((host, port))
            if port.parse::<u16>().is_ok()
                && host.split('.').count() == 4
                && host.split('.').all(|o| o.parse::<u8>().is_ok()) =>
        {
            format!("{host}:<port>")
        }
        _ => s.to_string(),
    }
}

/// Replaces the number after each `mask-text PREFIX` of the case by `<n>`.
fn mask_texts(s: &str, masks: &[String]) -> String {
    let mut out = s.to_string();
    for prefix in masks.iter().filter_map(|m| m.strip_prefix("text:")) {
        let mut from = 0;
        while let Some(at) = out[from..].find(prefix) {
            let after = from + at + prefix.len();
            let start = after + out[after..].chars().take_while(|c| *c == ' ').count();
            let digits = out[start..].chars().take_while(char::is_ascii_digit).count();
            out.replace_range(start..start + digits, "<n>");
            from = start + 3;
        }
    }
    out
}

/// Replaces every UUID in `s` by `uuid-N`, numbering them by first appearance.
pub(crate) fn replace_uuids(s: &str, seen: &mut Vec<String>) -> String {
    let b = s.as_bytes();
    if b.len() < 36 {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if i + 36 <= b.len() && is_uuid(&b[i..i + 36]) {
            let u = &s[i..i + 36];
            let n = match seen.iter().position(|x| x == u) {
                Some(n) => n,
                None => {
                    seen.push(u.to_string());
                    seen.len() - 1
                }
            };
            out.push_str(&format!("uuid-{}", n + 1));
            i += 36;
        } else {
            let c = s[i..].chars().next().unwrap_or('\u{fffd}');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn is_uuid(b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

/// The first difference between two normalized transcripts, as a readable report.
pub(crate) fn first_difference(
    want: &[Value],
    got: &[Value],
    skip: &dyn Fn(&str) -> bool,
) -> Option<String> {
    for (i, (w, g)) in want.iter().zip(got).enumerate() {
        let step = w["step"].as_str().unwrap_or_default();
        if skip(step) {
            continue;
        }
        if w != g {
            return Some(format!(
                "step {} `{step}`:\n      consul: {}\n      sim:    {}",
                i + 1,
                compact(w),
                compact(g)
            ));
        }
    }
    (want.len() != got.len())
        .then(|| format!("consul gave {} answers, the sim {}", want.len(), got.len()))
}

fn compact(v: &Value) -> String {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("step");
    }
    let s = v.to_string();
    if s.chars().count() > 1500 {
        format!("{}…", s.chars().take(1500).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_numbered_by_first_appearance() {
        let mut seen = Vec::new();
        let a = "adf4238a-882b-9ddc-4a9d-5b6758e4159e";
        let b = "0d1b6ef4-2ba5-4d4f-9b7b-2a4d3b5c6e7f";
        assert_eq!(replace_uuids(&format!("{b} x {a} {b}"), &mut seen), "uuid-1 x uuid-2 uuid-1");
    }
}
