//! Debian packages for the tools a fresh machine lacks (Consul, LuaJIT): `apt-get download`
//! through a throwaway apt configuration of its own (nothing under /etc changes), then
//! `dpkg -x` into `target/`.

use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Downloads `packages` (`name` or `name=version`) of Debian `suite` into `work` through
/// an apt configuration that knows only that suite; returns the `.deb` files, in the order
/// of `packages`.
pub(crate) fn download(
    work: &Path,
    suite: &str,
    packages: &[&str],
) -> Result<Vec<PathBuf>, String> {
    let lists = work.join("lists");
    let cache = work.join("cache");
    std::fs::create_dir_all(lists.join("partial")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(cache.join("archives/partial")).map_err(|e| e.to_string())?;
    let sources = work.join("sources.list");
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    std::fs::write(&sources, format!("deb [signed-by={keyring}] {} {suite} main\n", mirror()))
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
    run_cmd(&mut apt(&["update"]), &format!("apt-get update ({suite})"))?;
    let mut verb = vec!["download"];
    verb.extend_from_slice(packages);
    run_cmd(&mut apt(&verb), "apt-get download")?;
    let debs: Vec<PathBuf> = std::fs::read_dir(work)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    packages
        .iter()
        .map(|p| {
            let name = p.split('=').next().unwrap_or(p);
            let prefix = format!("{name}_");
            debs.iter()
                .find(|d| d.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&prefix)))
                .cloned()
                .ok_or_else(|| format!("{name}: no .deb appeared in {}", work.display()))
        })
        .collect()
}

/// Unpacks `deb` into `dest` (`dpkg -x`).
pub(crate) fn unpack(deb: &Path, dest: &Path) -> Result<(), String> {
    run_cmd(Command::new("dpkg").arg("-x").arg(deb).arg(dest), "dpkg -x")
}

/// Runs `cmd`; its stderr is the error when it fails.
pub(crate) fn run_cmd(cmd: &mut Command, what: &str) -> Result<(), String> {
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
