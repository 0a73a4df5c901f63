//! `cargo xtask compat`: py-consul 1.8.0's own test suite against the sim and real Consul.
//!
//! Downloads py-consul's source distribution from PyPI (hash-checked), puts our
//! `compat/py-consul/conftest.py` in place of its Docker fixture (a fresh single-node dev
//! agent per test, stopped by PID), and runs its tests with pytest twice: against
//! `consul-ha agent -dev` and against real Consul. Tests in `compat/py-consul/skips.tsv` are
//! skipped, each with its reason. Prints both scores side by side and fails if the sim fails
//! a test that Consul passes, or one listed in `compat/py-consul/newer.tsv` (tests written for
//! newer Consul whose behaviour the docs describe).
//!
//! Everything downloaded or built lives under `target/compat/`; each test's agent log and its
//! HTTP exchanges are in `target/compat/logs/<backend>/<test>.{log,http}`. Extra arguments are handed to
//! pytest in place of the whole suite, e.g. `cargo xtask compat tests/api/test_kv.py`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use crate::{Result, root};

const PY_CONSUL: &str = "py_consul-1.8.0";

/// One backend's run: its label, the outcome of each test (node id → outcome, reason).
struct Run {
    label: String,
    results: BTreeMap<String, (String, String)>,
}

impl Run {
    fn count(&self, outcome: &str) -> usize {
        self.results.values().filter(|(o, _)| o == outcome).count()
    }
    fn passed(&self, id: &str) -> bool {
        self.results.get(id).is_some_and(|(o, _)| o == "passed")
    }
}

pub(crate) fn run() -> Result {
    let root = root();
    let work = root.join("target").join("compat");
    let ours = root.join("compat").join("py-consul");
    let pytest_args: Vec<String> = std::env::args().skip(2).collect();
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;

    let consul = consul_bin(&root)?;
    let python = venv(&work, &ours)?;
    let src = unpack_sdist(&work, &ours, &python)?;
    let sim = build_sim(&work)?;
    let netns = netns_works();
    if !netns {
        println!(
            "compat: no private network namespace (`unshare --net` failed): running on the host's loopback, without the :8500 stand-in some HTTP-check tests expect"
        );
    }

    let mut runs = Vec::new();
    for (backend, bin, port_base) in [("sim", &sim, 19100), ("consul", &consul, 19200)] {
        let label = if backend == "sim" { "sim".to_string() } else { consul_label(&consul) };
        let started = Instant::now();
        let results =
            pytest(&work, &ours, &src, &python, backend, bin, port_base, netns, &pytest_args)?;
        let run = Run { label, results };
        println!(
            "compat: {:<13} {} passed, {} failed, {} skipped in {:.0} s (log: {})",
            run.label,
            run.count("passed"),
            run.count("failed"),
            run.count("skipped"),
            started.elapsed().as_secs_f64(),
            work.join(format!("{backend}.log")).display()
        );
        runs.push(run);
    }
    report(&runs[0], &runs[1], &newer_list(&ours)?)
}

/// Prints the side-by-side score; fails when the sim misses a test that it must pass.
fn report(sim: &Run, consul: &Run, newer: &[String]) -> Result {
    let ran = |r: &Run| r.results.len() - r.count("skipped");
    let mut must: Vec<&String> = consul.results.keys().filter(|id| consul.passed(id)).collect();
    must.extend(newer.iter().filter(|id| sim.results.contains_key(*id)));
    must.sort();
    must.dedup();
    let missed: Vec<&String> = must.into_iter().filter(|id| !sim.passed(id)).collect();
    for id in &missed {
        let (outcome, reason) = sim.results.get(*id).cloned().unwrap_or_default();
        let why = if consul.passed(id) { "passes on Consul" } else { "listed in newer.tsv" };
        println!("compat: sim {outcome}, {why}: {id}\n    {}", first_line(&reason));
    }
    let total = ran(sim).max(ran(consul));
    println!(
        "compat: py-consul 1.8.0: sim {}/{total} passed, {} {}/{total} passed ({} skipped)",
        sim.count("passed"),
        consul.label,
        consul.count("passed"),
        consul.count("skipped"),
    );
    if missed.is_empty() {
        Ok(())
    } else {
        Err(format!("the sim fails {} test(s) it must pass (listed above)", missed.len()))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Real Consul: `$CONSUL_BIN`, else the one `cargo xtask consul` installs (installed now if
/// missing).
fn consul_bin(root: &Path) -> std::result::Result<PathBuf, String> {
    match std::env::var_os("CONSUL_BIN").map(PathBuf::from) {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(format!("CONSUL_BIN={} is not a file", path.display())),
        None => crate::consul::ensure(root),
    }
}

/// "consul-1.8.7" from `consul version`'s first line ("Consul v1.8.7").
fn consul_label(bin: &Path) -> String {
    let out = Command::new(bin).arg("version").output().ok();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    match first_line(&text).strip_prefix("Consul v") {
        Some(v) => format!("consul-{}", v.trim()),
        None => "consul".to_string(),
    }
}

/// A virtualenv under target/compat with what the tests import; returns its python.
fn venv(work: &Path, ours: &Path) -> std::result::Result<PathBuf, String> {
    let dir = work.join("venv");
    let python = dir.join("bin").join("python");
    if !python.exists() {
        let make = || quiet(Command::new("python3").args(["-m", "venv"]).arg(&dir));
        if make().is_err() {
            // Debian's python3 ships venv's pip bootstrap separately.
            println!("compat: python3 -m venv failed; installing python3-venv with apt-get");
            let _ = std::fs::remove_dir_all(&dir);
            let apt = |args: &[&str]| {
                quiet(Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
            };
            if apt(&["install", "-y", "python3-venv"]).is_err() {
                apt(&["update"])?;
                apt(&["install", "-y", "python3-venv"])?;
            }
            make()?;
        }
    }
    let reqs = ours.join("requirements.txt");
    let wanted = std::fs::read_to_string(&reqs).map_err(|e| format!("{}: {e}", reqs.display()))?;
    let stamp = dir.join("compat-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        println!("compat: installing the test requirements into {}", dir.display());
        quiet(Command::new(&python).args(["-m", "pip", "install", "-q", "-r"]).arg(&reqs))?;
        std::fs::write(&stamp, wanted).map_err(|e| format!("{}: {e}", stamp.display()))?;
    }
    Ok(python)
}

/// Downloads (once) and unpacks (each run, afresh) py-consul's sdist; puts our conftest in.
fn unpack_sdist(work: &Path, ours: &Path, python: &Path) -> std::result::Result<PathBuf, String> {
    let dl = work.join("dl");
    let tarball = dl.join(format!("{PY_CONSUL}.tar.gz"));
    if !tarball.exists() {
        println!("compat: downloading {PY_CONSUL} from PyPI");
        quiet(
            Command::new(python)
                .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:"])
                .args(["--require-hashes", "-r"])
                .arg(ours.join("sdist.txt"))
                .arg("-d")
                .arg(&dl),
        )?;
    }
    let src_root = work.join("src");
    let _ = std::fs::remove_dir_all(&src_root);
    std::fs::create_dir_all(&src_root).map_err(|e| format!("{}: {e}", src_root.display()))?;
    quiet(Command::new("tar").arg("xzf").arg(&tarball).arg("-C").arg(&src_root))?;
    let src = src_root.join(PY_CONSUL);
    let conftest = src.join("conftest.py");
    std::fs::copy(ours.join("conftest.py"), &conftest)
        .map_err(|e| format!("{}: {e}", conftest.display()))?;
    Ok(src)
}

/// Builds consul-ha and copies it under target/compat, so a rebuild elsewhere during the run
/// (a shared target dir) cannot swap the binary under the tests.
fn build_sim(work: &Path) -> std::result::Result<PathBuf, String> {
    let out = crate::cargo(&[
        "build",
        "--quiet",
        "-p",
        "consul-ha",
        "--bin",
        "consul-ha",
        "--message-format=json-render-diagnostics",
    ])
    .stderr(Stdio::inherit())
    .output()
    .map_err(|e| format!("cargo build -p consul-ha: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build -p consul-ha failed ({})", out.status));
    }
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["target"]["name"] == "consul-ha")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or("cargo build -p consul-ha named no executable")?;
    let copy = work.join("bin").join("consul-ha");
    std::fs::create_dir_all(work.join("bin")).map_err(|e| format!("{e}"))?;
    std::fs::copy(&exe, &copy)
        .map_err(|e| format!("{} → {}: {e}", exe.display(), copy.display()))?;
    Ok(copy)
}

/// Whether we can run the suite in a private network namespace (root and `unshare`); our
/// conftest.py brings its loopback up.
fn netns_works() -> bool {
    Command::new("unshare")
        .args(["--net", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs pytest against one backend; returns each test's outcome.
#[allow(clippy::too_many_arguments)]
fn pytest(
    work: &Path,
    ours: &Path,
    src: &Path,
    python: &Path,
    backend: &str,
    bin: &Path,
    port_base: u16,
    netns: bool,
    args: &[String],
) -> std::result::Result<BTreeMap<String, (String, String)>, String> {
    let results = work.join(format!("{backend}.json"));
    let log_path = work.join(format!("{backend}.log"));
    let _ = std::fs::remove_file(&results);
    let _ = std::fs::remove_dir_all(work.join("logs").join(backend));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log2 = log.try_clone().map_err(|e| format!("{e}"))?;
    let mut cmd = if netns {
        let mut c = Command::new("unshare");
        c.arg("--net").arg(python);
        c
    } else {
        Command::new(python)
    };
    cmd.args(["-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-o", "addopts="]);
    if args.is_empty() {
        cmd.arg("tests").env("COMPAT_STRICT_SKIPS", "1");
    } else {
        cmd.args(args);
    }
    cmd.current_dir(src)
        .env("PYTHONPATH", src)
        .env("COMPAT_BACKEND", backend)
        .env("COMPAT_AGENT_BIN", bin)
        .env("COMPAT_PORT_BASE", port_base.to_string())
        .env("COMPAT_LOG_DIR", work.join("logs").join(backend))
        .env("COMPAT_SKIPS", ours.join("skips.tsv"))
        .env("COMPAT_RESULTS", &results)
        .env("COMPAT_NETNS", if netns { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let status = cmd.status().map_err(|e| format!("pytest ({backend}): {e}"))?;
    let text = std::fs::read_to_string(&results).map_err(|_| {
        format!("pytest ({backend}) wrote no results ({status}); see {}", log_path.display())
    })?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", results.display()))?;
    let map = json
        .as_object()
        .ok_or_else(|| format!("{}: not a JSON object", results.display()))?
        .iter()
        .map(|(id, v)| {
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (id.clone(), (field("outcome"), field("reason")))
        })
        .collect();
    Ok(map)
}

/// Tests written for newer Consul (1.8.7 fails them) that the sim must pass all the same.
fn newer_list(ours: &Path) -> std::result::Result<Vec<String>, String> {
    let path = ours.join("newer.tsv");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split('\t').next())
        .map(|id| id.trim().to_string())
        .collect())
}

/// Runs a setup command with its output kept back unless it fails.
fn quiet(cmd: &mut Command) -> Result {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, outcomes: &[(&str, &str)]) -> Run {
        let results = outcomes
            .iter()
            .map(|(id, o)| (id.to_string(), (o.to_string(), String::new())))
            .collect();
        Run { label: label.to_string(), results }
    }

    #[test]
    fn the_sim_must_pass_what_consul_passes() {
        let consul = run("consul-1.8.7", &[("a", "passed"), ("b", "passed"), ("c", "failed")]);
        let sim = run("sim", &[("a", "passed"), ("b", "failed"), ("c", "failed")]);
        let err = report(&sim, &consul, &[]).unwrap_err();
        assert!(err.contains("1 test(s)"), "{err}");
    }

    #[test]
    fn tests_consul_fails_count_only_when_listed_as_newer() {
        let consul = run("consul-1.8.7", &[("a", "passed"), ("c", "failed"), ("s", "skipped")]);
        let sim = run("sim", &[("a", "passed"), ("c", "failed"), ("s", "skipped")]);
        assert!(report(&sim, &consul, &[]).is_ok());
        assert!(report(&sim, &consul, &["c".to_string()]).is_err());
    }
}
