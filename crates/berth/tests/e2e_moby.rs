#![allow(clippy::unwrap_used)]
//! Docker Engine's own Go integration tests (moby v20.10.24, `../shared/compat/moby`,
//! unchanged) against a berthd of their own: every test that passes against dockerd
//! 20.10 there (`expected-pass.txt`, subtests included) must pass here, except those
//! listed in `moby-known-failures.txt` beside this file (a list that only shrinks).

mod common;
use common::*;
use std::collections::HashSet;
use std::process::Command;

#[test]
fn moby_integration_suite() {
    if skip_unless_root("moby_integration_suite") {
        return;
    }
    let harness = shared_dir().join("compat/moby");
    if !harness.join("run.sh").exists() {
        eprintln!("skipping: no moby harness at {}", harness.display());
        return;
    }
    // the suite's tests of old API versions (1.19, 1.20) need the floor lowered, as a
    // dockerd 25 or later needs DOCKER_MIN_API_VERSION for them
    let d = Daemon::start_wrapped_with(&["env", "DOCKER_MIN_API_VERSION=1.12"], &[]);
    let out_dir = d.dir.path().join("moby");
    let out = Command::new("bash")
        .arg(harness.join("run.sh"))
        .env("DOCKER_HOST", d.host())
        .env("OUT", &out_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let summary = stdout(&out);
    eprintln!("{}", summary.trim());
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let outcomes = read(out_dir.join("outcomes.tsv"));
    let passed: HashSet<String> = outcomes
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 3 && f[2] == "PASS").then(|| format!("{}/{}", f[0], f[1]))
        })
        .collect();
    assert!(
        !passed.is_empty(),
        "the moby run passed nothing:\n{summary}\n{}",
        stderr(&out)
    );
    let (lost, fixed) = against_known(
        &read(harness.join("expected-pass.txt")),
        &passed,
        include_str!("moby-known-failures.txt"),
    );
    if !fixed.is_empty() {
        eprintln!(
            "these known failures pass now (take them off moby-known-failures.txt):\n{}",
            fixed.join("\n")
        );
    }
    let reports: Vec<String> = lost.iter().map(|t| failure_report(&out_dir, t)).collect();
    assert!(
        lost.is_empty(),
        "moby tests that pass on dockerd fail against berthd:\n{}\n\n{summary}\n{}\n{}",
        lost.join("\n"),
        reports.join("\n"),
        d.log()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// What `go test -v` printed for one test (`integration/PKG/TestName[/sub]`): the lines
/// under each `=== RUN|CONT|PAUSE` header naming it, and its `--- FAIL` line.
fn failure_report(out_dir: &std::path::Path, test: &str) -> String {
    let rest = test.strip_prefix("integration/").unwrap_or(test);
    let (pkg, name) = match rest.find("/Test") {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => return format!("--- {test}: not a moby test name ---"),
    };
    let log = std::fs::read_to_string(
        out_dir
            .join("logs")
            .join(format!("{}.log", pkg.replace('/', "-"))),
    )
    .unwrap_or_default();
    let mut out = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        let t = line.trim_start();
        if t.starts_with("=== ") || t.starts_with("--- ") {
            let named = t.split_whitespace().nth(2).unwrap_or_default();
            inside = named == name;
            if inside && t.starts_with("--- ") {
                out.push(line);
            }
            continue;
        }
        if inside {
            out.push(line);
        }
    }
    if out.is_empty() {
        format!("--- {test}: nothing in the log ---")
    } else {
        format!("--- {test} ---\n{}", out.join("\n"))
    }
}
