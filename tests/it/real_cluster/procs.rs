//! Child processes of a scenario: started, signalled by their own process id (never by name),
//! and killed when the guard drops, pass or fail.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The host's monotonic clock in nanoseconds: the clock `consul-ha node --events-log` stamps
/// terms with, so the test's fault times line up with them.
pub(crate) fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A process the test (re)starts and signals.
pub(crate) struct Proc {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl Proc {
    /// A process `name` running `program args`, its output appended to `log`; not started.
    pub(crate) fn new(name: &str, program: &Path, args: Vec<String>, log: PathBuf) -> Proc {
        Proc {
            name: name.into(),
            program: program.into(),
            args,
            env: Vec::new(),
            log,
            child: None,
            paused: false,
        }
    }

    /// Sets an environment variable for the next starts.
    pub(crate) fn env(mut self, k: &str, v: &str) -> Proc {
        self.env.push((k.into(), v.into()));
        self
    }

    /// Starts it (again).
    pub(crate) fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {} ({}): {e}", self.name, self.program.display())
            });
        self.child = Some(child);
        self.paused = false;
    }

    /// Its process id while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (a name `kill -s` knows: KILL, TERM, STOP, CONT) to this process id;
    /// returns [`mono_ns`] just before.
    pub(crate) fn signal(&mut self, signal: &str) -> u64 {
        let pid = self.pid().unwrap_or_else(|| panic!("{} is not running", self.name));
        let at = mono_ns();
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -s {signal} {pid} ({}) failed", self.name);
        match signal {
            "STOP" => self.paused = true,
            "CONT" => self.paused = false,
            _ => {}
        }
        at
    }

    /// SIGKILL, then reaps it; returns when the kill was sent.
    pub(crate) fn kill(&mut self) -> u64 {
        let at = self.signal("KILL");
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        at
    }

    /// SIGTERM and waits (≤ `limit`) for a graceful exit, then SIGKILL; returns when TERM
    /// was sent and whether it exited by itself.
    pub(crate) fn terminate(&mut self, limit: Duration) -> (u64, bool) {
        let at = self.signal("TERM");
        let deadline = Instant::now() + limit;
        let mut child = self.child.take().expect("running");
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return (at, true);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return (at, false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if self.paused {
                let _ = Command::new("kill").args(["-s", "CONT", &c.id().to_string()]).status();
            }
            // `Child::kill` signals this very process id.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free loopback port, chosen now.
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    l.local_addr().expect("its address").port()
}
