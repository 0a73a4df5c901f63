//! The case language: a case is a short script of HTTP requests, written as Consul's HTTP API
//! documents them. Files live in `tests/conformance/*.cases`:
//!
//! ```text
//! case kv-cas-create: cas=0 creates a key only if it is absent
//! PUT /v1/kv/${P}/a?cas=0 first                 -> 200
//! PUT /v1/kv/${P}/a?cas=0 second                -> 200
//! GET /v1/kv/${P}/a                             -> 200 => i=/0/ModifyIndex
//! & GET /v1/kv/${P}/a?index=${i}&wait=2s        -> 200 in 0.1s..1.5s
//! sleep 300ms
//! PUT /v1/kv/${P}/a third
//! wait
//! ```
//!
//! A request line is `METHOD TARGET [BODY] [-> STATUS [in LO..HI]] [=> NAME=SELECTOR …]
//! [unordered]`: the body is the rest of the line after the target; `-> STATUS` is asserted on
//! every backend, as is `in LO..HI`, the time the answer took; `=> name=/json/pointer`
//! (or `header:Name`, or `body`) captures a value for `${name}` in later lines. `${P}` is the
//! case's own key prefix, `${NODE}` the agent's node name and `${x*N}` N copies of `x`,
//! `${txn:N}` a transaction of N `set` operations. `& ` sends a request in the
//! background; `wait` collects every background answer, in the order they were sent;
//! `sleep D` pauses; `mask NAME` hides the value of every JSON field named NAME (it varies
//! from run to run on Consul too); `mask-text PREFIX` hides the number after PREFIX in any text
//! (an index inside an error message); `sort-strings` compares lists of strings as sets (Consul
//! builds some from Go maps, in no fixed order). `unordered` compares a JSON array's items as a multiset.
//! `fresh` marks a case that reads a fresh agent's state: Consul's table indexes keep the
//! history of every earlier case (a node deregistered while cleaning up moves the nodes
//! index), so the harness runs fresh cases first, before any case has written; a fresh case
//! must not write.

use std::time::Duration;

/// One case: a name, what it shows, and its steps.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) about: String,
    /// `file:line` of the `case` line.
    pub(crate) origin: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) masks: Vec<String>,
    /// Reads a fresh agent's state: runs before every case that is not fresh.
    pub(crate) fresh: bool,
}

/// One step of a case.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    Send(Send),
    Sleep(Duration),
    Wait,
}

/// A request to send, with what to check and capture.
#[derive(Clone, Debug)]
pub(crate) struct Send {
    /// The line as written (before substitution): names the step in a transcript.
    pub(crate) text: String,
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) body: String,
    pub(crate) background: bool,
    pub(crate) status: Option<u16>,
    pub(crate) took: Option<(Duration, Duration)>,
    pub(crate) captures: Vec<(String, Selector)>,
    pub(crate) unordered: bool,
}

impl Send {
    /// A request with no checks, for generated sequences.
    pub(crate) fn new(method: &str, target: impl Into<String>, body: impl Into<String>) -> Send {
        let (target, body) = (target.into(), body.into());
        Send {
            text: format!("{method} {target} {body}").trim_end().to_string(),
            method: method.to_string(),
            target,
            body,
            background: false,
            status: None,
            took: None,
            captures: Vec::new(),
            unordered: false,
        }
    }
}

/// Where a captured value comes from.
#[derive(Clone, Debug)]
pub(crate) enum Selector {
    Json(String),
    Header(String),
    Body,
}

/// Parses every case of a file; errors name the file and line.
pub(crate) fn parse(file: &str, text: &str) -> Result<Vec<Case>, String> {
    let mut cases: Vec<Case> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let at = format!("{file}:{}", n + 1);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("case ") {
            let (name, about) = rest.split_once(':').unwrap_or((rest, ""));
            let name = name.trim().to_string();
            if cases.iter().any(|c| c.name == name) {
                return Err(format!("{at}: case {name:?} is defined twice"));
            }
            cases.push(Case {
                name,
                about: about.trim().to_string(),
                origin: at,
                steps: Vec::new(),
                masks: Vec::new(),
                fresh: false,
            });
            continue;
        }
        let Some(case) = cases.last_mut() else {
            return Err(format!("{at}: a step before the first `case` line"));
        };
        let step = if line == "wait" {
            Step::Wait
        } else if let Some(d) = line.strip_prefix("sleep ") {
            Step::Sleep(duration(d).ok_or_else(|| format!("{at}: bad duration {d:?}"))?)
        } else if line == "fresh" {
            case.fresh = true;
            continue;
        } else if line == "sort-strings" {
            case.masks.push("sort:strings".into());
            continue;
        } else if let Some(prefix) = line.strip_prefix("mask-text ") {
            case.masks.push(format!("text:{}", prefix.trim()));
            continue;
        } else if let Some(name) = line.strip_prefix("mask ") {
            case.masks.push(name.trim().to_string());
            continue;
        } else if let Some(req) = line.strip_prefix("& ") {
            let mut send = request(req).map_err(|e| format!("{at}: {e}"))?;
            send.background = true;
            Step::Send(send)
        } else {
            Step::Send(request(line).map_err(|e| format!("{at}: {e}"))?)
        };
        case.steps.push(step);
    }
    for c in &cases {
        if !c.steps.iter().any(|s| matches!(s, Step::Send(_))) {
            return Err(format!("{}: case {:?} sends nothing", c.origin, c.name));
        }
    }
    Ok(cases)
}

fn request(line: &str) -> Result<Send, String> {
    let mut rest = line;
    let mut unordered = false;
    if let Some(r) = rest.strip_suffix(" unordered") {
        rest = r.trim_end();
        unordered = true;
    }
    let mut captures = Vec::new();
    if let Some((head, caps)) = rest.split_once(" => ") {
        for cap in caps.split_whitespace() {
            let (name, sel) = cap
                .split_once('=')
                .ok_or_else(|| format!("capture {cap:?} is not NAME=SELECTOR"))?;
            let sel = if sel == "body" {
                Selector::Body
            } else if let Some(h) = sel.strip_prefix("header:") {
                Selector::Header(h.to_ascii_lowercase())
            } else if sel.starts_with('/') {
                Selector::Json(sel.to_string())
            } else {
                return Err(format!("selector {sel:?}: use /json/pointer, header:Name or body"));
            };
            captures.push((name.to_string(), sel));
        }
        rest = head.trim_end();
    }
    let (mut status, mut took) = (None, None);
    if let Some((head, expect)) = rest.rsplit_once(" -> ") {
        let mut words = expect.split_whitespace();
        let code = words.next().unwrap_or_default();
        status = Some(code.parse().map_err(|_| format!("status {code:?} is not a number"))?);
        match (words.next(), words.next()) {
            (None, _) => {}
            (Some("in"), Some(range)) => {
                let (lo, hi) = range.split_once("..").ok_or("`in` wants LO..HI")?;
                took = Some((
                    duration(lo).ok_or_else(|| format!("bad duration {lo:?}"))?,
                    duration(hi).ok_or_else(|| format!("bad duration {hi:?}"))?,
                ));
            }
            _ => return Err(format!("after the status: `in LO..HI` or nothing, not {expect:?}")),
        }
        rest = head.trim_end();
    }
    let (method, rest) = rest.split_once(' ').ok_or("a request line is METHOD TARGET [BODY]")?;
    if !["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"].contains(&method) {
        return Err(format!("unknown method {method:?}"));
    }
    let (target, body) = rest.split_once(' ').unwrap_or((rest, ""));
    if !target.starts_with('/') {
        return Err(format!("target {target:?} must start with /"));
    }
    Ok(Send {
        text: line.to_string(),
        method: method.to_string(),
        target: target.to_string(),
        body: body.to_string(),
        background: false,
        status,
        took,
        captures,
        unordered,
    })
}

/// `250ms`, `1.5s`, `2s`.
pub(crate) fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| Duration::from_secs_f64(v / 1000.0));
    }
    s.strip_suffix('s')?.parse::<f64>().ok().filter(|v| *v >= 0.0).map(Duration::from_secs_f64)
}

/// Replaces `${name}` with captured values; an unknown name is an error naming it.
pub(crate) fn substitute(text: &str, vars: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
        let name = &after[..end];
        // `${x*N}`: N copies of a character, for bodies too long to write out.
        if let Some((c, n)) = name.split_once('*')
            && let (Some(c), Ok(n)) = (c.chars().next(), n.parse::<usize>())
        {
            out.extend(std::iter::repeat_n(c, n));
            rest = &after[end + 1..];
            continue;
        }
        // `${txn:N}`: a transaction body of N `set` operations under the case's prefix.
        if let Some(n) = name.strip_prefix("txn:").and_then(|n| n.parse::<usize>().ok()) {
            let prefix = vars.iter().find(|(n, _)| n == "P").map_or("", |(_, v)| v.as_str());
            let ops: Vec<String> = (0..n)
                .map(|i| {
                    format!(r#"{{"KV":{{"Verb":"set","Key":"{prefix}/n/{i}","Value":"eA=="}}}}"#)
                })
                .collect();
            out.push_str(&format!("[{}]", ops.join(",")));
            rest = &after[end + 1..];
            continue;
        }
        let value = vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("${{{name}}} is not captured yet"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_with_expectations_and_captures() {
        let cases = parse(
            "t",
            "case a: about\nPUT /v1/kv/${P}/x hello world -> 200 in 0s..1s => v=/0/Key h=header:X-Consul-Index\n& GET /x\nwait\nsleep 20ms\nmask Output\n",
        )
        .unwrap();
        let Step::Send(s) = &cases[0].steps[0] else { panic!() };
        assert_eq!(
            (s.method.as_str(), s.body.as_str(), s.status),
            ("PUT", "hello world", Some(200))
        );
        assert_eq!(s.took, Some((Duration::ZERO, Duration::from_secs(1))));
        assert_eq!(s.captures.len(), 2);
        assert!(matches!(&cases[0].steps[1], Step::Send(b) if b.background));
        assert!(matches!(cases[0].steps[3], Step::Sleep(d) if d == Duration::from_millis(20)));
        assert_eq!(cases[0].masks, ["Output"]);
        assert!(parse("t", "GET /x").unwrap_err().contains("t:1"));
        assert!(parse("t", "case a\nFETCH /x").unwrap_err().contains("unknown method"));
    }

    #[test]
    fn substitution_names_what_is_missing() {
        let vars = vec![("P".to_string(), "t/a".to_string())];
        assert_eq!(substitute("/v1/kv/${P}/k", &vars).unwrap(), "/v1/kv/t/a/k");
        assert!(substitute("${nope}", &vars).unwrap_err().contains("nope"));
    }
}
