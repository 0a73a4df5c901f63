//! `cargo xtask consul`: installs the reference Consul (1.8.7, Debian bullseye's package
//! `consul=1.8.7+dfsg1-2+b3`, MPL-2.0) into `target/consul/` once, and prints the binary's path.
//!
//! It asks the machine's configured Debian mirror for bullseye through a temporary apt
//! configuration of its own (nothing under /etc changes), downloads the package with
//! `apt-get download` and unpacks it with `dpkg -x`. Where that fails, it unpacks the copy of
//! the same `.deb` in `../shared/vendor/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The package the whole project measures against.
const PACKAGE: &str = "consul=1.8.7+dfsg1-2+b3";
const DEB_NAME: &str = "consul_1.8.7+dfsg1-2+b3_amd64.deb";
const VERSION_LINE: &str = "Consul v1.8.7";

/// Where the binary lands, relative to the repository root.
pub(crate) fn binary(root: &Path) -> PathBuf {
    root.join("target/consul/usr/bin/consul")
}

/// `cargo xtask consul`.
pub(crate) fn run(root: &Path) -> Result<(), String> {
    let bin = ensure(root)?;
    println!("{}", bin.display());
    Ok(())
}

/// Installs Consul 1.8.7 unless it is there already; returns the binary's path.
pub(crate) fn ensure(root: &Path) -> Result<PathBuf, String> {
    let bin = binary(root);
    if version_ok(&bin) {
        return Ok(bin);
    }
    let work = root.join("target/consul-download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let deb = match download(&work) {
        Ok(deb) => deb,
        Err(why) => {
            let vendored = root.join("..").join("shared").join("vendor").join(DEB_NAME);
            eprintln!("xtask consul: apt download failed ({why}); using {}", vendored.display());
            if !vendored.exists() {
                return Err(format!(
                    "cannot download {PACKAGE} ({why}) and {} does not exist",
                    vendored.display()
                ));
            }
            vendored
        }
    };
    let dest = root.join("target/consul");
    let _ = std::fs::remove_dir_all(&dest);
    run_cmd(Command::new("dpkg").arg("-x").arg(&deb).arg(&dest), "dpkg -x")?;
    if !version_ok(&bin) {
        return Err(format!("{} does not report {VERSION_LINE}", bin.display()));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(bin)
}

fn version_ok(bin: &Path) -> bool {
    Command::new(bin).arg("version").output().is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(VERSION_LINE)
    })
}

/// The machine's Debian mirror, from its apt sources; Debian's own as the fallback.
fn mirror() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822
        .lines()
        .filter_map(|l| l.strip_prefix("URIs:"))
        .flat_map(str::split_whitespace)
        .find(|u| u.ends_with("/debian") || u.ends_with("/debian/"));
    let classic = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_classic = classic
        .lines()
        .filter(|l| l.starts_with("deb "))
        .flat_map(str::split_whitespace)
        .find(|u| u.starts_with("http") && (u.ends_with("/debian") || u.ends_with("/debian/")));
    from_deb822.or(from_classic).unwrap_or("http://deb.debian.org/debian").to_string()
}

/// `apt-get download` through a throwaway apt configuration that knows only bullseye.
fn download(work: &Path) -> Result<PathBuf, String> {
    let lists = work.join("lists");
    let cache = work.join("cache");
    std::fs::create_dir_all(lists.join("partial")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(cache.join("archives/partial")).map_err(|e| e.to_string())?;
    let sources = work.join("sources.list");
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    std::fs::write(&sources, format!("deb [signed-by={keyring}] {} bullseye main\n", mirror()))
        .map_err(|e| e.to_string())?;
    let apt = |verb: &[&str]| {
        let mut c = Command::new("apt-get");
        c.current_dir(work)
            .arg("-q")
            .arg("-o")
            .arg(format!("Dir::Etc::SourceList={}", sources.display()))
            .args(["-o", "Dir::Etc::SourceParts=/dev/null"])
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", lists.display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", cache.display()))
            .args(["-o", "APT::Sandbox::User=root"])
            .args(verb);
        c
    };
    run_cmd(&mut apt(&["update"]), "apt-get update (bullseye)")?;
    run_cmd(&mut apt(&["download", PACKAGE]), "apt-get download")?;
    let deb = work.join(DEB_NAME);
    if deb.exists() { Ok(deb) } else { Err(format!("{} did not appear", deb.display())) }
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
