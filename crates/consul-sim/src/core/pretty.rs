//! How the core writes JSON, as Go's encoder writes it: strings with `<`, `>`, `&`, U+2028
//! and U+2029 escaped (`\u003c`, …: Go's HTML-safe default, which Consul keeps); and for
//! `?pretty`, and every answer of a dev agent, indented as `json.MarshalIndent` with four
//! spaces, then a newline, as Consul 1.8.7 writes it (checked byte for byte with curl): each
//! member and element on its own line, `": "` after a name, and `{}` and `[]` kept whole.

use std::cell::Cell;

use serde_json::ser::PrettyFormatter;

thread_local! {
    /// Whether the answer being made on this thread is to be indented: set by
    /// [`scope`] around one request's handling, read where answers are serialized.
    static WANTED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (one request's handling) with answers indented or not; the previous setting
/// comes back afterwards, whatever `f` returns.
pub(crate) fn scope<R>(pretty: bool, f: impl FnOnce() -> R) -> R {
    let before = WANTED.replace(pretty);
    let out = f();
    WANTED.set(before);
    out
}

/// Whether the answer being made is to be indented.
pub(crate) fn wanted() -> bool {
    WANTED.get()
}

/// Writes `value` into `out` as JSON: compact, or, when answers are indented, indented as a
/// value nested `depth` levels deep (each line after its first shifted by `depth` levels).
/// The one place the core's answers are serialized.
pub(crate) fn write_nested<T: serde::Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    depth: usize,
) -> serde_json::Result<()> {
    let from = out.len();
    let formatter = PrettyFormatter::with_indent(b"    ");
    if !wanted() {
        serde_json::to_writer(&mut *out, value)?;
    } else if depth == 0 {
        value.serialize(&mut serde_json::Serializer::with_formatter(&mut *out, formatter))?;
    } else {
        let mut own = Vec::with_capacity(256);
        value.serialize(&mut serde_json::Serializer::with_formatter(&mut own, formatter))?;
        let mut rest = own.as_slice();
        while let Some(at) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(at + 1);
            out.extend_from_slice(line);
            newline_indent(out, depth);
            rest = after;
        }
        out.extend_from_slice(rest);
    }
    go_escape(out, from);
    Ok(())
}

/// Escapes, in `out[from..]` (JSON just written there), what Go's encoder escapes in
/// strings and serde_json does not: `<`, `>`, `&`, U+2028 and U+2029, as `\u003c`,
/// `\u003e`, `\u0026`, `\u2028`, `\u2029`. Those characters only ever stand inside
/// strings in JSON, so the written bytes are searched whole: two vectorized passes, and
/// nothing else when (as nearly always) neither finds anything.
fn go_escape(out: &mut Vec<u8>, from: usize) {
    let written = out.get(from..).unwrap_or_default();
    let first = match (memchr::memchr3(b'<', b'>', b'&', written), memchr::memchr(0xe2, written)) {
        (None, None) => return,
        (a, b) => from + a.unwrap_or(usize::MAX).min(b.unwrap_or(usize::MAX)),
    };
    let tail = out.split_off(first);
    let mut i = 0;
    while let Some(&b) = tail.get(i) {
        let escape: Option<&[u8]> = match b {
            b'<' => Some(b"\\u003c"),
            b'>' => Some(b"\\u003e"),
            b'&' => Some(b"\\u0026"),
            0xe2 => match tail.get(i + 1..i + 3) {
                Some([0x80, 0xa8]) => Some(b"\\u2028"),
                Some([0x80, 0xa9]) => Some(b"\\u2029"),
                _ => None,
            },
            _ => None,
        };
        match escape {
            Some(e) => {
                out.extend_from_slice(e);
                i += if b == 0xe2 { 3 } else { 1 };
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// `json` (compact, as the core writes it) indented the way Consul indents it. Strings
/// and scalars are copied as they are, a run at a time; whitespace outside strings is
/// dropped and written anew.
pub(crate) fn indent(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() * 2 + 16);
    let mut depth = 0usize;
    // An object or array just opened: its first member starts a new line, unless it
    // closes at once.
    let mut opened = false;
    let mut i = 0;
    while let Some(&c) = json.get(i) {
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        }
        let just_opened = std::mem::take(&mut opened);
        if just_opened && c != b'}' && c != b']' {
            newline(&mut out, depth);
        }
        match c {
            b'{' | b'[' => {
                out.push(c);
                depth += 1;
                opened = true;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if !just_opened {
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
                let end = string_end(json, i);
                out.extend_from_slice(json.get(i..end).unwrap_or_default());
                i = end;
                continue;
            }
            _ => {
                // A number or a literal: up to the next structural byte.
                let len = json
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .position(|&b| matches!(b, b',' | b'}' | b']' | b':' | b' ' | b'\n'))
                    .unwrap_or(json.len() - i);
                out.extend_from_slice(json.get(i..i + len).unwrap_or_default());
                i += len;
                continue;
            }
        }
        i += 1;
    }
    out.push(b'\n');
    out
}

/// The index just past the string that opens at `start` (its closing quote included), or
/// the end of `json` if it never closes.
fn string_end(json: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    // Straight to the next quote or backslash (memchr: a string is most of an answer).
    while let Some(at) = json.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
        i += at;
        if json.get(i) == Some(&b'"') {
            return i + 1;
        }
        i += 2;
    }
    json.len()
}

/// A newline, then four spaces per level.
fn newline(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    newline_indent(out, depth);
}

/// Four spaces per level, written a slice at a time.
fn newline_indent(out: &mut Vec<u8>, depth: usize) {
    const SPACES: &[u8; 64] = &[b' '; 64];
    let mut width = depth * 4;
    while width > 0 {
        let n = width.min(SPACES.len());
        out.extend_from_slice(SPACES.get(..n).unwrap_or_default());
        width -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    #[test]
    fn strings_escape_what_gos_encoder_escapes() {
        // Consul 1.8.7's answers for a service named `w<1>` tagged `a&b`, and a key
        // `h<b>&c`, with U+2028 and U+2029 as Go writes them (and nothing else escaped).
        let v = json!({"w<1>": ["a&b", "h<b>&c", "x\u{2028}y\u{2029}", "é\u{e2}<"]});
        let mut out = Vec::new();
        write_nested(&mut out, &v, 0).expect("serializes");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"{"w\u003c1\u003e":["a\u0026b","h\u003cb\u003e\u0026c","x\u2028y\u2029","éâ\u003c"]}"#
        );
        let pretty = scope(true, || {
            let mut out = Vec::new();
            write_nested(&mut out, &json!({"k": "<>"}), 0).map(|()| out)
        });
        assert_eq!(pretty.expect("serializes"), b"{\n    \"k\": \"\\u003c\\u003e\"\n}");
    }

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
        #[test]
        fn go_escapes_keep_every_value(
            key in "[a-z<>&\u{2028}\u{2029}é€\u{2027}]{0,10}",
            value in "[a-z<>&\u{2028}\u{2029}é€\u{2027}\"\\\\]{0,16}",
            pretty in any::<bool>(),
        ) {
            let v = json!({ key: [value] });
            let mut out = Vec::new();
            scope(pretty, || write_nested(&mut out, &v, 0)).expect("serializes");
            prop_assert_eq!(serde_json::from_slice::<Value>(&out).expect("JSON"), v);
            let text = String::from_utf8(out).expect("UTF-8");
            prop_assert!(!text.contains(['<', '>', '&', '\u{2028}', '\u{2029}']), "{}", text);
        }

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
