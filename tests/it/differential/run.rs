//! Running a script on one backend: substitute captures, send, check each step's own
//! expectations, and keep the transcript for the comparison.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinHandle;

use super::backend::{Answer, Backend};
use super::normalize::Exchange;
use super::script::{Selector, Send, Step, substitute};
use crate::real_consul::NODE;

/// What one run of a script produced.
pub(crate) struct Run {
    pub(crate) transcript: Vec<Exchange>,
    /// Expectations of the case that did not hold, each naming its step.
    pub(crate) failures: Vec<String>,
}

type Pending = JoinHandle<(Send, Result<(Answer, Duration), String>)>;

/// Runs `steps` with `${P}` = `prefix`. A transport failure or an unusable capture ends the
/// run (it is a failure); a wrong status or timing is recorded and the run goes on.
pub(crate) async fn run(backend: &std::sync::Arc<Backend>, prefix: &str, steps: &[Step]) -> Run {
    let mut vars =
        vec![("P".to_string(), prefix.to_string()), ("NODE".to_string(), NODE.to_string())];
    let mut out = Run { transcript: Vec::new(), failures: Vec::new() };
    let mut pending: Vec<Pending> = Vec::new();
    for step in steps {
        match step {
            Step::Sleep(d) => tokio::time::sleep(*d).await,
            Step::Wait => {
                for task in pending.drain(..) {
                    let (send, result) = match task.await {
                        Ok(r) => r,
                        Err(e) => {
                            out.failures.push(format!("a background request panicked: {e}"));
                            return out;
                        }
                    };
                    if !record(&mut out, &mut vars, &send, result) {
                        return out;
                    }
                }
            }
            Step::Send(send) => {
                let (target, body) =
                    match (substitute(&send.target, &vars), substitute(&send.body, &vars)) {
                        (Ok(t), Ok(b)) => (t, b),
                        (Err(e), _) | (_, Err(e)) => {
                            out.failures.push(format!("`{}`: {e}", send.text));
                            return out;
                        }
                    };
                let b = backend.clone();
                let method = send.method.clone();
                let go = async move {
                    let started = Instant::now();
                    b.send(&method, &target, &body).await.map(|a| (a, started.elapsed()))
                };
                if send.background {
                    let send = send.clone();
                    pending.push(tokio::spawn(async move { (send, go.await) }));
                } else if !record(&mut out, &mut vars, send, go.await) {
                    return out;
                }
            }
        }
    }
    if !pending.is_empty() {
        out.failures.push("background requests without a `wait`".into());
    }
    out
}

fn record(
    out: &mut Run,
    vars: &mut Vec<(String, String)>,
    send: &Send,
    result: Result<(Answer, Duration), String>,
) -> bool {
    let (answer, took) = match result {
        Ok(r) => r,
        Err(e) => {
            out.failures.push(format!("`{}`: no answer: {e}", send.text));
            return false;
        }
    };
    if let Some(want) = send.status
        && want != answer.status
    {
        out.failures.push(format!(
            "`{}`: status {} (want {want}): {}",
            send.text,
            answer.status,
            String::from_utf8_lossy(&answer.body).chars().take(300).collect::<String>()
        ));
    }
    if let Some((lo, hi)) = send.took
        && !(lo..=hi).contains(&took)
    {
        out.failures.push(format!("`{}`: answered after {took:?}, want {lo:?}..{hi:?}", send.text));
    }
    for (name, sel) in &send.captures {
        let value = match sel {
            Selector::Body => Some(String::from_utf8_lossy(&answer.body).into_owned()),
            Selector::Header(h) => answer.headers.get(h).cloned(),
            Selector::Json(p) => serde_json::from_slice::<Value>(&answer.body).ok().and_then(|v| {
                v.pointer(p).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            }),
        };
        match value {
            Some(v) => vars.push((name.clone(), v)),
            None => {
                out.failures.push(format!("`{}`: nothing to capture for {name}", send.text));
                out.transcript.push(Exchange {
                    step: send.text.clone(),
                    answer,
                    unordered: send.unordered,
                });
                return false;
            }
        }
    }
    out.transcript.push(Exchange { step: send.text.clone(), answer, unordered: send.unordered });
    true
}
