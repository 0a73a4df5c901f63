//! The workspace's own tasks, run as `cargo xtask <task>`:
//!
//! - `ci`: what CI runs after the tests, in order, stopping at the first failure: lint,
//!   conformance, compat, lua, docs, layering, licences;
//! - `test`: the whole test suite (the README's test command);
//! - `lint`: formatting, clippy and the tidy checks only;
//! - `layers`: the layering check alone;
//! - `consul`: installs the reference Consul 1.8.7 into `target/consul/` and prints its path;
//! - `conformance`: the differential conformance suite (sim in-process, sim over HTTP, real
//!   Consul) and the randomized differential test, ending with one summary line;
//! - `compat`: py-consul 1.8.0's own tests against the sim and real Consul (see `compat.rs`);
//! - `loadtest`: the sim's HTTP server and a real Consul under the same wrk load, side by side;
//! - `bench-report`: a table of the last criterion run, each peer as a ratio ours / peer;
//! - `lua`: the C ABI and the LuaJIT module: header up to date, the C test under ASan, the
//!   LuaJIT tests and both Lua examples (see `lua.rs`);
//! - `header`: rewrites `include/consul_ha.h` with cbindgen.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use serde_json::Value;

mod apt;
mod compat;
mod consul;
mod loadtest;
mod lua;
mod real_cluster;

/// Each crate of ours and its layer: a crate may depend only on crates of a lower layer.
const LAYERS: &[(&str, u8)] = &[
    ("hashring", 0),
    ("consul-api", 0),
    ("consul-sim", 1),
    ("ha-cluster", 2),
    ("prod-config", 3),
    ("consul-ha", 4),
    ("consul-ha-ffi", 4),
];

/// Library crates: no `println!` in their non-test code.
const LIBRARIES: &[&str] = &["consul-api", "consul-sim", "hashring", "ha-cluster", "prod-config"];

/// Server paths: no `.unwrap()` in their non-test code, so bad input can never panic them.
const SERVER_PATHS: &[&str] = &["crates/consul-sim/src"];

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let result = match task.as_str() {
        "ci" => ci(),
        "test" => test(),
        "lint" => lint(),
        "layers" => layers(),
        "tidy" => tidy(),
        "bench-report" => bench_report(),
        "consul" => consul::run(&root()),
        "conformance" => conformance(),
        "compat" => compat::run(),
        "loadtest" => loadtest::run(&root()),
        "real-cluster" => real_cluster::run(&root()),
        "lua" => lua::run(&root()),
        "header" => lua::write_header(&root()),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|test|lint|layers|tidy|consul|conformance|compat|real-cluster|loadtest|bench-report|lua|header>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask {task}: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}

type Result = std::result::Result<(), String>;

/// What CI runs after the README's test command (`.ci/run` runs `cargo xtask test` first).
fn ci() -> Result {
    lint()?;
    conformance()?;
    // py-consul's own suite: the sim must pass every test real Consul 1.8.7 passes.
    compat::run()?;
    // The C ABI (header up to date, C test under ASan) and the LuaJIT module.
    lua::run(&root())?;
    step("docs", {
        let mut c = cargo(&["doc", "--workspace", "--no-deps", "--all-features"]);
        c.env("RUSTDOCFLAGS", "-D warnings");
        c
    })?;
    layers()?;
    // `--offline` needs every locked crate, for every platform, in the local cache.
    step("cargo fetch", cargo(&["fetch", "--locked"]))?;
    step(
        "cargo deny (bans, licenses, sources)",
        cargo(&["deny", "--offline", "check", "bans", "licenses", "sources"]),
    )?;
    println!("xtask ci: all steps passed");
    Ok(())
}

fn lint() -> Result {
    step("cargo fmt --check", cargo(&["fmt", "--all", "--check"]))?;
    step(
        "clippy",
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    tidy()
}

/// The README's test command: every test, real Consul included (installed first if missing).
fn test() -> Result {
    let consul = consul::ensure(&root())?;
    let mut nextest = cargo(&["nextest", "run", "--workspace", "--no-fail-fast"]);
    nextest.env("CONSUL_BIN", &consul);
    step("tests (nextest)", nextest)?;
    step("doctests", cargo(&["test", "--workspace", "--doc"]))
}

/// The conformance cases and the randomized differential test against a real Consul, then
/// the one summary line they leave in `target/conformance/`.
fn conformance() -> Result {
    let root = root();
    let consul = consul::ensure(&root)?;
    let results = root.join("target/conformance");
    let _ = std::fs::remove_dir_all(&results);
    let mut nextest = cargo(&[
        "nextest",
        "run",
        "-p",
        "consul-ha-tests",
        "--no-fail-fast",
        "-E",
        "test(/^differential::/)",
    ]);
    nextest.env("CONSUL_BIN", &consul).env("CONFORMANCE_RESULTS", &results);
    let outcome = step("conformance (nextest)", nextest);
    let read = |name: &str| std::fs::read_to_string(results.join(name)).unwrap_or_default();
    let cases = read("cases.txt");
    let sequences = read("differential.txt");
    let line = format!(
        "conformance: {}; {}",
        cases.trim().trim_start_matches("conformance: "),
        sequences.trim()
    );
    if cases.is_empty() || sequences.is_empty() {
        return Err(format!("the suite left no summary in {} ({line})", results.display()));
    }
    println!("{line}");
    outcome
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(args).current_dir(root());
    cmd
}

fn step(name: &str, mut cmd: Command) -> Result {
    println!("xtask: == {name}");
    let status = cmd.status().map_err(|e| format!("{name}: cannot start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{name} failed ({status})")) }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the root")
        .to_path_buf()
}

/// No crate depends on a crate above it; hashring depends on no crate of ours at all.
fn layers() -> Result {
    println!("xtask: == layering");
    let out = cargo(&["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let meta: Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let layer = |name: &str| LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l);
    let mut problems = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let name = pkg["name"].as_str().unwrap_or_default();
        let Some(own) = layer(name) else { continue };
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let Some(theirs) = layer(dep_name) else { continue };
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if name == "hashring" {
                problems
                    .push(format!("hashring must depend on no crate of ours, but uses {dep_name}"));
            } else if theirs >= own {
                problems.push(format!(
                    "{name} (layer {own}) has a {kind} dependency on {dep_name} (layer {theirs}): dependencies point down only"
                ));
            }
        }
    }
    if problems.is_empty() {
        println!("layering: ok");
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Every crate's root starts with a `//!` doc; libraries print nothing; server paths never
/// `unwrap()` outside tests.
fn tidy() -> Result {
    println!("xtask: == tidy");
    let root = root();
    let mut problems = Vec::new();
    for (name, _) in LAYERS {
        let dir = root.join("crates").join(name).join("src");
        let lib =
            if dir.join("lib.rs").exists() { dir.join("lib.rs") } else { dir.join("main.rs") };
        let text = std::fs::read_to_string(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        if !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{} must start with a `//!` doc saying the crate's one job",
                lib.display()
            ));
        }
    }
    for name in LIBRARIES {
        for file in rust_files(&root.join("crates").join(name).join("src")) {
            for (n, line) in non_test_lines(&file) {
                if line.contains("println!(") || line.contains("print!(") {
                    problems.push(format!(
                        "{}:{n}: libraries must not print; use tracing",
                        file.display()
                    ));
                }
            }
        }
    }
    for dir in SERVER_PATHS {
        for file in rust_files(&root.join(dir)) {
            for (n, line) in non_test_lines(&file) {
                if line.contains(".unwrap()") {
                    problems.push(format!(
                        "{}:{n}: no unwrap() on a server path; return an error",
                        file.display()
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        println!("tidy: ok");
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// The lines of a file before its `#[cfg(test)]` module, skipping comments, numbered from 1.
fn non_test_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

/// Reads criterion's results under `target/criterion` (or `$CARGO_TARGET_DIR/criterion`)
/// and prints, per group and parameter, each implementation's median time and the ratio of
/// ours (the function named `ours`) to it; then the tables benches wrote beside the results
/// (`*.md`: the ring's memory, build time and balance).
fn bench_report() -> Result {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("criterion");
    let mut rows: Vec<(String, String, String, f64)> = Vec::new();
    collect_estimates(&dir, &mut rows);
    if rows.is_empty() {
        return Err(format!(
            "no criterion results under {}; run `cargo bench` first",
            dir.display()
        ));
    }
    rows.sort_by(|a, b| (&a.0, &a.2, &a.1).cmp(&(&b.0, &b.2, &b.1)));
    println!("| group | parameter | implementation | median | ours / this |");
    println!("|---|---|---|---|---|");
    for (group, function, param, ns) in &rows {
        let ours = rows
            .iter()
            .find(|r| &r.0 == group && &r.2 == param && r.1.starts_with("ours"))
            .map(|r| r.3);
        let ratio = match ours {
            Some(o) if !function.starts_with("ours") => format!("{:.3}", o / ns),
            _ => "".to_string(),
        };
        println!("| {group} | {param} | {function} | {} | {ratio} |", human(*ns));
    }
    let mut tables: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    tables.sort();
    for table in tables {
        let text = std::fs::read_to_string(&table)
            .map_err(|e| format!("reading {}: {e}", table.display()))?;
        println!("\n{}", text.trim_end());
    }
    Ok(())
}

fn human(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn collect_estimates(dir: &Path, rows: &mut Vec<(String, String, String, f64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            let read = |f: &str| -> Option<Value> {
                serde_json::from_slice(&std::fs::read(path.join(f)).ok()?).ok()
            };
            if let (Some(b), Some(e)) = (read("benchmark.json"), read("estimates.json")) {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                // The median: on a shared machine, bursts of other work skew the mean.
                if let Some(ns) = e["median"]["point_estimate"].as_f64() {
                    rows.push((
                        text(&b["group_id"]),
                        text(&b["function_id"]),
                        text(&b["value_str"]),
                        ns,
                    ));
                }
            }
        } else {
            collect_estimates(&path, rows);
        }
    }
}
