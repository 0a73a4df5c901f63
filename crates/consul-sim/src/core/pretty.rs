//! `?pretty`, and every answer of a dev agent: JSON indented as Go's `json.MarshalIndent`
//! with four spaces, then a newline, as Consul 1.8.7 writes it (checked byte for byte with
//! curl): each member and element on its own line, `": "` after a name, and `{}` and `[]`
//! kept whole.

/// `json` (compact, as the core writes it) indented the way Consul indents it. Bytes
/// inside strings are copied as they are; whitespace outside strings is dropped and
/// written anew.
pub(crate) fn indent(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() * 2 + 16);
    let mut depth = 0usize;
    // An object or array just opened: its first member starts a new line, unless it
    // closes at once.
    let mut opened = false;
    let mut in_string = false;
    let mut escaped = false;
    for &c in json {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        if opened && c != b'}' && c != b']' {
            newline(&mut out, depth);
        }
        match c {
            b'{' | b'[' => {
                out.push(c);
                depth += 1;
                opened = true;
                continue;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if !opened {
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b'"' => {
                out.push(c);
                in_string = true;
            }
            _ => out.push(c),
        }
        opened = false;
    }
    out.push(b'\n');
    out
}

fn newline(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    for _ in 0..depth {
        out.extend_from_slice(b"    ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    #[test]
    fn indents_as_consul_does() {
        // Consul 1.8.7's `?pretty` answer to a one-operation read transaction, byte for byte.
        let compact = br#"{"Results":[{"KV":{"LockIndex":0,"Key":"a","Flags":0,"Value":"dg==","CreateIndex":7,"ModifyIndex":7}}],"Errors":null,"Index":0,"LastContact":0,"KnownLeader":true,"ConsistencyLevel":""}"#;
        let consul = "{\n    \"Results\": [\n        {\n            \"KV\": {\n                \"LockIndex\": 0,\n                \"Key\": \"a\",\n                \"Flags\": 0,\n                \"Value\": \"dg==\",\n                \"CreateIndex\": 7,\n                \"ModifyIndex\": 7\n            }\n        }\n    ],\n    \"Errors\": null,\n    \"Index\": 0,\n    \"LastContact\": 0,\n    \"KnownLeader\": true,\n    \"ConsistencyLevel\": \"\"\n}\n";
        assert_eq!(String::from_utf8_lossy(&indent(compact)), consul);
        assert_eq!(
            indent(br#"{"consul":[],"web":[]}"#),
            b"{\n    \"consul\": [],\n    \"web\": []\n}\n"
        );
        assert_eq!(indent(b"[]"), b"[]\n");
        assert_eq!(indent(b"true"), b"true\n");
        assert_eq!(indent(br#""a, b: {c} \"[d]\" \\""#), b"\"a, b: {c} \\\"[d]\\\" \\\\\"\n");
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Indenting keeps the value and matches serde_json's own four-space pretty printer
        /// (the same layout as Go's), plus the newline Consul adds.
        #[test]
        fn indenting_keeps_the_value_and_the_layout(v in value()) {
            let compact = serde_json::to_vec(&v).expect("serializes");
            let pretty = indent(&compact);
            let back: Value = serde_json::from_slice(&pretty).expect("still JSON");
            prop_assert_eq!(&back, &v);
            let mut want = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut want, formatter);
            serde::Serialize::serialize(&v, &mut ser).expect("serializes");
            want.push(b'\n');
            prop_assert_eq!(String::from_utf8_lossy(&pretty), String::from_utf8_lossy(&want));
        }
    }
}
