//! A network namespace joined to the host by a veth pair, created by the test (as root) and
//! removed when the guard drops, pass or fail. The host end carries the address every
//! other agent binds to; whatever runs inside reaches it through the pair, so taking the
//! pair's inner end down partitions the inside from everyone, and bringing it up heals it.

use std::process::Command;

/// The namespace and its veth pair.
pub(crate) struct Netns {
    /// The namespace's name (for `ip netns exec`).
    pub(crate) name: String,
    host_if: String,
    inner_if: String,
    /// The host end's address: the other agents bind here.
    pub(crate) host_ip: String,
    /// The inner end's address.
    pub(crate) inner_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// Creates namespace `rc<pid>` with the pair `rc<pid>h` (host, 10.213.N.1/30) and
    /// `rc<pid>n` (inside, 10.213.N.2/30), N from the process id.
    pub(crate) fn create() -> Result<Netns, String> {
        let pid = std::process::id();
        let n = 20 + pid % 200;
        let ns = Netns {
            name: format!("rc{pid}"),
            host_if: format!("rc{pid}h"),
            inner_if: format!("rc{pid}n"),
            host_ip: format!("10.213.{n}.1"),
            inner_ip: format!("10.213.{n}.2"),
        };
        ip(&["netns", "add", &ns.name])?;
        // From here on, Drop cleans up whatever was made.
        ip(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns.inner_if])?;
        ip(&["link", "set", &ns.inner_if, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &ns.host_if])?;
        ip(&["link", "set", &ns.host_if, "up"])?;
        ns.exec_ip(&["addr", "add", &format!("{}/30", ns.inner_ip), "dev", &ns.inner_if])?;
        ns.exec_ip(&["link", "set", "lo", "up"])?;
        ns.set_connected(true)?;
        Ok(ns)
    }

    fn exec_ip(&self, args: &[&str]) -> Result<(), String> {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Brings the inner end up (healed) or down (partitioned).
    pub(crate) fn set_connected(&self, up: bool) -> Result<(), String> {
        self.exec_ip(&["link", "set", &self.inner_if, if up { "up" } else { "down" }])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the pair with it; the host end once more in case.
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.host_if]);
    }
}
