#![allow(clippy::unwrap_used)]
//! docker-compose 1.29 (Debian's, on docker-py) and Compose v2 (the Go tool) against
//! berthd, unchanged: an app of two services with a named volume, service-name DNS, a
//! healthcheck that gates `depends_on`, a published port, `exec`, scaling and
//! `down -v`, which must leave nothing of the project behind.

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

const APP: &str = r#"services:
  db:
    image: bb:latest
    command: sh -c 'echo stored > /data/f; exec busybox httpd -f -p 80 -h /data'
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "busybox", "wget", "-qO-", "http://127.0.0.1/f"]
      interval: 1s
      retries: 30
  web:
    image: bb:latest
    command: sh -c 'mkdir -p /www && echo front > /www/index.html && exec busybox httpd -f -p 8080 -h /www'
    ports: ["127.0.0.1::8080"]
    depends_on:
      db:
        condition: service_healthy
volumes:
  data: {}
"#;

/// The compose programs on PATH: (path, major version).
fn composes() -> Vec<(String, u32)> {
    let out = Command::new("sh")
        .args(["-c", "which -a docker-compose"])
        .output()
        .unwrap();
    let mut seen = Vec::new();
    for p in stdout(&out).lines() {
        let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
        if seen
            .iter()
            .any(|(_, r, _): &(String, std::path::PathBuf, u32)| *r == real)
        {
            continue;
        }
        let v = Command::new(p).arg("version").output();
        let Ok(v) = v else { continue };
        let text = stdout(&v) + &stderr(&v);
        let major = if text.contains("version v2") || text.contains("version 2.") {
            2
        } else if text.contains("version 1.") {
            1
        } else {
            continue;
        };
        seen.push((p.to_string(), real, major));
    }
    seen.into_iter()
        .map(|(p, _, m)| {
            // the Go program rather than pip's script around it (which always exits 0)
            match (m, compose_v2()) {
                (2, Some(go)) => (go, 2),
                _ => (p, m),
            }
        })
        .collect()
}

fn compose(d: &Daemon, bin: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", d.host())
        .env("COMPOSE_PROJECT_NAME", "bapp")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn run_app(major: u32) {
    let Some((bin, _)) = composes().into_iter().find(|(_, m)| *m == major) else {
        eprintln!("skipping: no docker-compose {major}.x installed");
        return;
    };
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let dir = d.dir.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), APP).unwrap();
    let c = |args: &[&str]| compose(&d, &bin, &dir, args);
    let up = c(&["up", "-d"]);
    assert!(up.status.success(), "up: {}\n{}", stderr(&up), d.log());
    // web started only once db was healthy
    // compose 1.x names containers bapp_db_1, v2 bapp-db-1
    let sep = if major == 1 { "_" } else { "-" };
    let db = d.get_json(&format!("/containers/bapp{sep}db{sep}1/json"));
    assert_eq!(db["State"]["Health"]["Status"], "healthy", "{db}");
    // service DNS and the named volume
    let ex = c(&[
        "exec",
        "-T",
        "web",
        "busybox",
        "wget",
        "-qO-",
        "http://db/f",
    ]);
    assert_eq!(stdout(&ex), "stored\n", "{}", stderr(&ex));
    // the published port, from the host
    let port = c(&["port", "web", "8080"]);
    let addr = stdout(&port).trim().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr} {}", stderr(&port));
    let body = Command::new("curl")
        .args(["-s", "--max-time", "5", &format!("http://{addr}/")])
        .output()
        .unwrap();
    assert_eq!(stdout(&body), "front\n");
    // scale out, then in
    let sc = c(&["up", "-d", "--scale", "web=2"]);
    assert!(sc.status.success(), "{}", stderr(&sc));
    assert_eq!(stdout(&c(&["ps", "-q"])).lines().count(), 3);
    if major == 2 {
        let ps = c(&["ps", "--format", "json"]);
        let text = stdout(&ps);
        assert!(text.contains("\"Health\":\"healthy\""), "{text}");
        let run = c(&["run", "--rm", "web", "echo", "one-off"]);
        assert_eq!(stdout(&run).trim(), "one-off", "{}", stderr(&run));
        let rs = c(&["restart", "db"]);
        assert!(rs.status.success(), "{}", stderr(&rs));
    }
    let down = c(&["down", "-v"]);
    assert!(down.status.success(), "down: {}", stderr(&down));
    // nothing of the project is left
    assert_eq!(d.get_json("/containers/json?all=1"), serde_json::json!([]));
    assert_eq!(d.get_json("/volumes")["Volumes"], serde_json::json!([]));
    let nets = d.get_json("/networks");
    let names: Vec<&str> = nets
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["Name"].as_str())
        .collect();
    assert!(
        names.iter().all(|n| ["bridge", "host", "none"].contains(n)),
        "{names:?}"
    );
    d.assert_no_shims();
}

#[test]
fn compose_v1_runs_an_app() {
    if skip_unless_root("compose_v1_runs_an_app") {
        return;
    }
    run_app(1);
}

#[test]
fn compose_v2_runs_an_app() {
    if skip_unless_root("compose_v2_runs_an_app") {
        return;
    }
    run_app(2);
}

/// `berth compose`: Compose v2 found as a docker CLI plugin and run with berth's
/// command line; it reaches the daemon berth would (a flag, BERTH_HOST, a context).
#[test]
fn berth_compose_runs_the_compose_plugin() {
    if skip_unless_root("berth_compose_runs_the_compose_plugin") {
        return;
    }
    let Some(go) = compose_v2() else {
        eprintln!("skipping: no Compose v2 installed");
        return;
    };
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let conf = tempfile::tempdir().unwrap();
    let plugins = conf.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(&go, plugins.join("docker-compose")).unwrap();
    std::fs::write(
        conf.path().join("config.json"),
        serde_json::json!({"cliPluginsExtraDirs": [plugins]}).to_string(),
    )
    .unwrap();
    let app = conf.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("compose.yaml"),
        "services:\n  one:\n    image: bb\n    command: sleep 60\n    network_mode: none\n",
    )
    .unwrap();
    let berth = |env: &[(&str, &str)], args: &[&str]| -> Output {
        let mut c = Command::new(berth_bin());
        c.args(args)
            .current_dir(&app)
            .env("DOCKER_CONFIG", conf.path())
            .env_remove("DOCKER_HOST")
            .env_remove("BERTH_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let host = d.host();
    // listed in the help, as the docker CLI lists its plugins
    let help = stdout(&berth(&[], &["--help"]));
    assert!(help.contains("Plugins:\n  compose*"), "{help}");
    let v = berth(&[], &["compose", "version"]);
    assert!(
        stdout(&v).contains("Docker Compose version v2"),
        "{}",
        stderr(&v)
    );
    // the daemon named by -H (passed on in the plugin's command line)
    let up = berth(&[], &["-H", &host, "compose", "-p", "plug", "up", "-d"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let running = d.get_json("/containers/json");
    assert_eq!(running[0]["Names"][0], "/plug-one-1", "{running}");
    // by BERTH_HOST (told to the plugin as DOCKER_HOST)
    let ps = berth(
        &[("BERTH_HOST", &host)],
        &["compose", "-p", "plug", "ps", "-q"],
    );
    assert_eq!(stdout(&ps).lines().count(), 1, "{}", stderr(&ps));
    // by a context (the plugin reads the same context store)
    let ctx = berth(
        &[],
        &[
            "context",
            "create",
            "here",
            "--docker",
            &format!("host={host}"),
        ],
    );
    assert!(ctx.status.success(), "{}", stderr(&ctx));
    let down = berth(&[], &["--context", "here", "compose", "-p", "plug", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(d.get_json("/containers/json?all=1"), serde_json::json!([]));
    // the plugin's exit code is berth's
    let bad = berth(
        &[("BERTH_HOST", &host)],
        &["compose", "-p", "plug", "restart", "nosuch"],
    );
    assert_ne!(bad.status.code(), Some(0));
    // a command that is neither berth's nor a plugin
    let none = berth(&[], &["nosuch"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(
        stderr(&none).contains("unknown command: berth nosuch"),
        "{}",
        stderr(&none)
    );
}
