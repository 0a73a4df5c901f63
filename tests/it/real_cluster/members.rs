//! consul-ha members: `consul-ha node` processes, each talking to its own Consul client
//! agent, each writing its leadership terms to an events log the checker reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::procs::{Proc, free_port, mono_ns};

/// How every member runs (the figures are stated for these settings).
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Session and check TTL.
    pub(crate) ttl: Duration,
    /// Lock-delay of the sessions.
    pub(crate) lock_delay: Duration,
    /// Simulated copy time of a new shard copy.
    pub(crate) copy_time: Duration,
    /// The shard config every member starts with.
    pub(crate) shards: serde_json::Value,
}

impl Settings {
    /// TTL 2 s, lock-delay 1 s, copies take 1 s; 16 shards × 3 copies, `min_live` 2.
    pub(crate) fn fast(rebalance_delay: &str) -> Settings {
        Settings {
            ttl: Duration::from_secs(2),
            lock_delay: Duration::from_secs(1),
            copy_time: Duration::from_secs(1),
            shards: serde_json::json!({
                "version": 1, "shards": 16, "replication_factor": 3, "min_live": 2,
                "rebalance_delay": rebalance_delay, "max_moving_fraction": 1.0, "drain": [],
            }),
        }
    }

    /// The heartbeat and lease margin `consul-ha node` derives from the TTL.
    pub(crate) fn heartbeat(&self) -> Duration {
        (self.ttl / 5).min(Duration::from_secs(1))
    }

    /// The crash failover the design promises, from Consul's rules, in seconds. After the
    /// leader's last check pass (at most one heartbeat before the crash) its TTL check goes
    /// critical one TTL later, which invalidates the session bound to it (the session's own
    /// timer, 2 × TTL, would fire later still); Consul then keeps the leader key free for the
    /// lock-delay; a follower, woken by its watch when the key is released, was refused
    /// once and retries after the lock-delay plus at most `retry_min / 8` (25 ms) of jitter.
    /// So: min(check TTL, 2 × session TTL) + lock-delay + 25 ms.
    pub(crate) fn failover_bound(&self) -> f64 {
        self.ttl.min(self.ttl * 2).as_secs_f64() + self.lock_delay.as_secs_f64() + 0.025
    }

    /// See [`heartbeat`](Self::heartbeat).
    pub(crate) fn lease_margin(&self) -> Duration {
        (self.ttl / 10).min(Duration::from_millis(500))
    }
}

/// The service name every scenario's members register under.
pub(crate) const SERVICE: &str = "rc";

/// One member.
pub(crate) struct Member {
    /// Its id.
    pub(crate) id: String,
    /// The process.
    pub(crate) proc: Proc,
    /// Its events log.
    pub(crate) events: PathBuf,
    /// Where it serves `/metrics`.
    pub(crate) metrics: u16,
}

impl Member {
    /// A member `id` talking to the agent at `http_port`; not started.
    pub(crate) fn new(
        dir: &Path,
        id: &str,
        http_port: u16,
        s: &Settings,
        ns: Option<&str>,
    ) -> Member {
        let config = dir.join("shards.json");
        std::fs::write(&config, serde_json::to_vec(&s.shards).expect("json")).expect("config");
        let events = dir.join(format!("{id}.events"));
        let metrics = free_port();
        let secs = |d: Duration| format!("{}ms", d.as_millis());
        let args = [
            "node",
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--service",
            SERVICE,
            "--id",
            id,
            "--address",
            &format!("127.0.0.1:{}", free_port()),
            "--ttl",
            &secs(s.ttl),
            "--lock-delay",
            &secs(s.lock_delay),
            "--copy-time",
            &secs(s.copy_time),
            "--config",
            &config.display().to_string(),
            "--events-log",
            &events.display().to_string(),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ]
        .map(String::from)
        .to_vec();
        let log = dir.join(format!("{id}.log"));
        let bin = crate::cli::binary();
        let proc = match ns {
            Some(ns) => {
                let mut all: Vec<String> = vec!["netns".into(), "exec".into(), ns.into()];
                all.push(bin.display().to_string());
                all.extend(args);
                Proc::new(id, Path::new("ip"), all, log)
            }
            None => Proc::new(id, &bin, args, log),
        }
        .env("RUST_LOG", "info,consul_api=warn");
        Member { id: id.into(), proc, events, metrics }
    }

    /// Scrapes its `/metrics`: (series with labels, value) pairs; empty if it does not answer.
    pub(crate) fn scrape(&self) -> Vec<(String, f64)> {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics)) else {
            return Vec::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect()
    }

    /// The value of series `name` (exactly, labels included) in its metrics.
    pub(crate) fn metric(&self, name: &str) -> Option<f64> {
        self.scrape().into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Appends a line the process cannot write itself (it was killed): the checker ends its
    /// open term there.
    pub(crate) fn note(&self, ev: &str, at: u64) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.events)
            .expect("events log");
        writeln!(f, "{}", serde_json::json!({"ev": ev, "mono_ns": at})).expect("write");
    }

    /// SIGKILL; notes the death in the events log; returns when.
    pub(crate) fn crash(&mut self) -> u64 {
        let at = self.proc.kill();
        self.note("killed", at);
        at
    }

    /// SIGTERM and wait for the graceful exit; returns when TERM was sent.
    pub(crate) fn stop(&mut self) -> u64 {
        let (at, clean) = self.proc.terminate(Duration::from_secs(15));
        self.note(if clean { "exited" } else { "killed" }, mono_ns());
        assert!(
            clean,
            "{} did not leave within 15 s:\n{}",
            self.id,
            super::consul::tail(&self.proc.log(), 30)
        );
        at
    }
}

/// One leadership term as its member reported it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Term {
    /// The member.
    pub(crate) member: String,
    /// Its fencing token.
    pub(crate) token: u64,
    /// When it began to act as leader ([`mono_ns`]).
    pub(crate) start: u64,
    /// When it stopped (its own report, or its death).
    pub(crate) end: u64,
}

/// The terms in `member`'s events log; a term still open at `now` ends at `now`.
pub(crate) fn terms(member: &str, path: &Path, now: u64) -> Vec<Term> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut open: Option<(u64, u64)> = None;
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let at = v["mono_ns"].as_u64().unwrap_or(0);
        let token = v["token"].as_u64().unwrap_or(0);
        match v["ev"].as_str().unwrap_or("") {
            "elected" => {
                if open.is_some_and(|(t, _)| t == token) {
                    continue; // seen twice (state and event)
                }
                if let Some((t, s)) = open.take() {
                    out.push(Term { member: member.into(), token: t, start: s, end: at });
                }
                open = Some((token, at));
            }
            "lost" | "killed" | "exited" | "start" => {
                if let Some((t, s)) = open.take() {
                    out.push(Term { member: member.into(), token: t, start: s, end: at.max(s) });
                }
            }
            _ => {}
        }
    }
    if let Some((t, s)) = open {
        out.push(Term { member: member.into(), token: t, start: s, end: now });
    }
    out
}
