//! `cargo xtask consul`: installs the reference Consul (1.8.7, Debian bullseye's package
//! `consul=1.8.7+dfsg1-2+b3`, MPL-2.0) into `target/consul/` once, and prints the binary's path.
//!
//! It downloads the package from bullseye with `apt::download` (a temporary apt
//! configuration of its own; nothing under /etc changes) and unpacks it with `dpkg -x`. Where that fails, it unpacks the copy of
//! the same `.deb` in `../shared/vendor/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::apt;

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
    apt::unpack(&deb, &dest)?;
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

/// `apt-get download` through a throwaway apt configuration that knows only bullseye.
fn download(work: &Path) -> Result<PathBuf, String> {
    let mut debs = apt::download(work, "bullseye", &[PACKAGE])?;
    let deb = debs.pop().ok_or("no .deb")?;
    if deb.file_name().is_some_and(|f| f == DEB_NAME) {
        Ok(deb)
    } else {
        Err(format!("{} is not {DEB_NAME}", deb.display()))
    }
}
