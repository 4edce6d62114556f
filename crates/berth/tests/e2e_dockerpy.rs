#![allow(clippy::unwrap_used)]
//! docker-py (the Python SDK docker-compose is built on) against berthd, unchanged.

mod common;
use common::*;
use std::process::Command;

const SCRIPT: &str = r#"
import docker, sys, time
c = docker.DockerClient(base_url=sys.argv[1])
assert c.version()["ApiVersion"] == "1.50"
assert c.info()["OSType"] == "linux"
t0 = int(time.time())
with open(sys.argv[2], "rb") as f:
    c.api.import_image_from_data(f.read(), repository="pybox", tag="1", changes=['CMD ["/bin/sh"]'])
img = c.images.get("pybox:1")
assert img.tags == ["pybox:1"], img.tags
assert img.attrs["Config"]["Cmd"] == ["/bin/sh"]
img.tag("pybox", "2")
assert sorted(c.images.get("pybox:2").tags) == ["pybox:1", "pybox:2"]
assert len(c.images.list(name="pybox")) == 1
data = b"".join(c.api.get_image("pybox:1"))
assert len(data) > 1000
c.images.remove("pybox:2")
assert img.history()[0]["Comment"] == "Imported from -"
c.images.remove("pybox:1")
try:
    c.images.get("pybox:1")
    raise SystemExit("image still there")
except docker.errors.ImageNotFound:
    pass
loaded = c.images.load(data)
assert loaded[0].tags == ["pybox:1"], loaded
assert c.df()["LayersSize"] > 0
actions = [e["Action"] for e in c.events(since=t0, until=int(time.time()) + 1, decode=True)]
assert actions[:3] == ["import", "tag", "tag"], actions
assert "load" in actions
# a build, as docker-compose's `build:` runs it
import os, tempfile
ctx = tempfile.mkdtemp()
with open(os.path.join(ctx, "Dockerfile"), "w") as f:
    f.write("FROM pybox:1\nARG MSG=none\nENV MSG=$MSG\nCOPY hello /hello\nRUN cat /hello\n")
with open(os.path.join(ctx, "hello"), "w") as f:
    f.write("hi from py\n")
built, logs = c.images.build(path=ctx, tag="pybuilt:1", buildargs={"MSG": "py"}, rm=True)
text = "".join(l.get("stream", "") for l in logs)
assert "hi from py" in text, text
assert "MSG=py" in built.attrs["Config"]["Env"], built.attrs["Config"]["Env"]
assert "pybuilt:1" in built.tags, built.tags
try:
    c.images.build(path=ctx, dockerfile="Missing")
    raise SystemExit("built without a Dockerfile")
except docker.errors.APIError as e:
    # as dockerd: an error before any output is the response's own status
    assert "Cannot locate specified Dockerfile" in str(e), e
print("ok")
"#;

#[test]
fn docker_py_works_unchanged() {
    if skip_unless_root("docker_py_works_unchanged") {
        return;
    }
    let has_sdk = Command::new("python3")
        .args(["-c", "import docker"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_sdk {
        eprintln!("skipping: docker-py not installed (pip install docker)");
        return;
    }
    let d = Daemon::start();
    let tar = d.dir.path().join("bb.tar");
    std::fs::write(&tar, busybox_tar()).unwrap();
    let script = d.dir.path().join("t.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .arg(d.host())
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker-py failed:\n{}\n{}\n{}",
        stdout(&out),
        stderr(&out),
        d.log()
    );
    assert_eq!(stdout(&out), "ok\n");
}

/// docker-py's own integration suite (`../shared/compat/docker-py`, unchanged) against a
/// berthd of its own: every test that passes against dockerd 20.10 there
/// (`expected-pass.txt`) must pass here, except those listed in
/// `dockerpy-known-failures.txt` beside this file (a list that only shrinks).
#[test]
fn docker_py_integration_suite() {
    if skip_unless_root("docker_py_integration_suite") {
        return;
    }
    let harness = shared_dir().join("compat/docker-py");
    if !harness.join("run.sh").exists() {
        eprintln!("skipping: no docker-py harness at {}", harness.display());
        return;
    }
    // Docker Hub pulls (which these tests make and cannot pass offline) go to a proxy
    // address nothing listens on, so no request leaves the machine; before it, a
    // registry of the test's own is berthd's registry mirror, and holds the one plugin
    // the suite installs from Docker Hub (`vieux/sshfs`, as a plugin of that shape)
    let reg = tempfile::tempdir().unwrap();
    let (mut registry, port) = berth_registry(reg.path(), &[]);
    push_plugin(
        port,
        "vieux/sshfs",
        "latest",
        sshfs_like_plugin_config(),
        &[("docker-volume-sshfs", b"#!/bin/sh\n")],
    );
    let conf = reg.path().join("daemon.json");
    std::fs::write(
        &conf,
        format!(r#"{{"registry-mirrors": ["http://127.0.0.1:{port}"]}}"#),
    )
    .unwrap();
    let d = Daemon::start_wrapped_with(
        &[
            "env",
            "HTTPS_PROXY=http://127.0.0.1:9",
            "HTTP_PROXY=http://127.0.0.1:9",
            "NO_PROXY=localhost,127.0.0.1,::1",
        ],
        &["--config-file", conf.to_str().unwrap()],
    );
    // one docker-py test rebinds os.environ for the rest of the run, so later tests
    // reach the default socket: point it at this daemon for the run
    let default_sock = std::path::Path::new("/var/run/docker.sock");
    let linked = std::fs::symlink_metadata(default_sock).is_err()
        && std::os::unix::fs::symlink(&d.socket, default_sock).is_ok();
    struct Unlink(bool);
    impl Drop for Unlink {
        fn drop(&mut self) {
            if self.0 {
                let _ = std::fs::remove_file("/var/run/docker.sock");
            }
        }
    }
    let _unlink = Unlink(linked);
    if !linked {
        eprintln!("note: /var/run/docker.sock exists; tests after credentials/ talk to it");
    }
    let out_dir = d.dir.path().join("dpy");
    let out = Command::new("bash")
        .arg(harness.join("run.sh"))
        .env("DOCKER_HOST", d.host())
        .env("DPY_SKIP_SWARM", "1")
        .env("DOCKER_TEST_API_VERSION", "1.41")
        .env("DPY_OUT", &out_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let summary = stdout(&out);
    eprintln!("{}", summary.trim());
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let passed: std::collections::HashSet<String> = read(out_dir.join("passed.txt"))
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        !passed.is_empty(),
        "the docker-py run passed nothing:\n{summary}\n{}",
        stderr(&out)
    );
    let expected = read(harness.join("expected-pass.txt"));
    let expected: String = expected
        .lines()
        .filter(|l| l.starts_with("tests/"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (lost, fixed) = against_known(
        &expected,
        &passed,
        include_str!("dockerpy-known-failures.txt"),
    );
    if !fixed.is_empty() {
        eprintln!(
            "these known failures pass now (take them off dockerpy-known-failures.txt):\n{}",
            fixed.join("\n")
        );
    }
    let _ = registry.kill();
    let _ = registry.wait();
    let log = read(out_dir.join("pytest.log"));
    assert!(
        lost.is_empty(),
        "docker-py tests that pass on dockerd fail against berthd:\n{}\n\n{summary}\n{}",
        lost.join("\n"),
        lost.iter()
            .map(|t| failure_report(&log, t))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// pytest's report of one test's failure (`tests/x.py::Class::test` is reported under
/// a `____ Class.test ____` header), or a note that the log has none.
fn failure_report(log: &str, test: &str) -> String {
    let name = test.split("::").skip(1).collect::<Vec<_>>().join(".");
    let mut out = Vec::new();
    let mut inside = false;
    for line in log.lines() {
        let header = line.starts_with("____") || line.starts_with("====");
        if header {
            inside = line
                .trim_matches(|c| c == '_' || c == '=' || c == ' ')
                .split_whitespace()
                .any(|w| w == name);
        }
        if inside {
            out.push(line);
        }
    }
    if out.is_empty() {
        format!("--- {test}: no report in the pytest log ---")
    } else {
        format!("--- {test} ---\n{}", out.join("\n"))
    }
}
