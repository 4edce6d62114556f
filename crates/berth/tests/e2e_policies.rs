#![allow(clippy::unwrap_used)]
//! Restart policies (also across a berthd restart), healthchecks, `--init`, and log
//! rotation: through the docker CLI where it is installed, else the berth CLI.

mod common;
use common::*;
use std::time::Duration;

fn cli(d: &Daemon, args: &[&str]) -> std::process::Output {
    if have("docker") {
        d.docker(args)
    } else {
        d.berth(args)
    }
}

fn state(d: &Daemon, name: &str) -> serde_json::Value {
    d.get_json(&format!("/containers/{name}/json"))
}

/// Polls until `f` holds for the container's inspect, or panics after `secs`.
fn until(d: &Daemon, name: &str, secs: u64, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = state(d, name);
        if f(&s) {
            return;
        }
        if std::time::Instant::now() > end {
            panic!("{name}: {what} did not happen: {:#}", s["State"]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restart_policies_and_restart_count() {
    if skip_unless_root("restart_policies_and_restart_count") {
        return;
    }
    let mut d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let run = |args: &[&str]| {
        let mut all = vec!["run", "-d", "--network", "none"];
        all.extend_from_slice(args);
        ok(cli(&d, &all))
    };
    // on-failure:2 — two restarts, then it stays down with its code
    run(&[
        "--name",
        "of",
        "--restart",
        "on-failure:2",
        "bb",
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    until(&d, "of", 10, "two restarts", |s| {
        s["RestartCount"] == 2 && s["State"]["Status"] == "exited"
    });
    std::thread::sleep(Duration::from_millis(500));
    let s = state(&d, "of");
    assert_eq!(s["RestartCount"], 2);
    assert_eq!(s["State"]["ExitCode"], 3);
    assert_eq!(ok(cli(&d, &["logs", "of"])), "run\nrun\nrun\n");
    // on-failure does not restart a success
    run(&["--name", "ok0", "--restart", "on-failure", "bb", "true"]);
    until(&d, "ok0", 5, "exit", |s| s["State"]["Status"] == "exited");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(state(&d, "ok0")["RestartCount"], 0);
    // always — restarts after every exit; shown as Restarting in ps; stop ends it
    run(&[
        "--name",
        "al",
        "--restart",
        "always",
        "bb",
        "sh",
        "-c",
        "sleep 0.2; exit 1",
    ]);
    until(&d, "al", 10, "a restart", |s| {
        s["RestartCount"].as_i64().unwrap() >= 2
    });
    let mut saw_restarting = false;
    for _ in 0..100 {
        let ps = ok(cli(
            &d,
            &["ps", "-a", "--filter", "name=al", "--format", "{{.Status}}"],
        ));
        if ps.starts_with("Restarting (1)") {
            saw_restarting = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(saw_restarting, "ps shows Restarting (1) ...");
    ok(cli(&d, &["stop", "-t", "1", "al"]));
    until(&d, "al", 5, "stop", |s| s["State"]["Status"] == "exited");
    let count = state(&d, "al")["RestartCount"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        state(&d, "al")["State"]["Status"],
        "exited",
        "stop ends an always policy"
    );
    assert_eq!(state(&d, "al")["RestartCount"].as_i64().unwrap(), count);
    // as dockerd 20.10 (checked side by side): a kill with SIGKILL, with the
    // container's stop signal, or of one that names no stop signal ends the restarts;
    // another signal that ends the process does not
    run(&[
        "--name",
        "us",
        "--restart",
        "unless-stopped",
        "bb",
        "sleep",
        "300",
    ]);
    ok(cli(&d, &["kill", "us"]));
    until(&d, "us", 5, "the exit after kill", |s| {
        s["State"]["Status"] == "exited"
    });
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        state(&d, "us")["State"]["Status"],
        "exited",
        "a killed container came back"
    );
    assert_eq!(state(&d, "us")["RestartCount"], 0);
    let trap = "trap 'exit 3' TERM; trap 'exit 4' USR1; while true; do sleep 0.1; done";
    run(&[
        "--name",
        "ks",
        "--restart",
        "always",
        "--stop-signal",
        "USR1",
        "bb",
        "sh",
        "-c",
        trap,
    ]);
    std::thread::sleep(Duration::from_millis(300));
    ok(cli(&d, &["kill", "-s", "TERM", "ks"]));
    until(
        &d,
        "ks",
        5,
        "a restart after a kill with another signal",
        |s| s["RestartCount"] == 1 && s["State"]["Status"] == "running",
    );
    ok(cli(&d, &["kill", "-s", "USR1", "ks"]));
    until(&d, "ks", 5, "the exit after the stop signal", |s| {
        s["State"]["Status"] == "exited"
    });
    ok(cli(&d, &["start", "us"]));
    until(&d, "us", 5, "a user's start", |s| {
        s["State"]["Status"] == "running"
    });
    // a stopped unless-stopped container stays down across a daemon restart; an
    // always one comes up (as Docker), and so does a running one
    run(&[
        "--name",
        "us2",
        "--restart",
        "unless-stopped",
        "bb",
        "sleep",
        "300",
    ]);
    ok(cli(&d, &["stop", "-t", "0", "us2"]));
    run(&["--name", "al2", "--restart", "always", "bb", "sleep", "300"]);
    ok(cli(&d, &["stop", "-t", "0", "al2"]));
    assert!(d.stop().unwrap().success());
    d.spawn();
    until(&d, "al2", 5, "start at daemon start", |s| {
        s["State"]["Status"] == "running"
    });
    assert_eq!(state(&d, "us")["State"]["Status"], "running");
    assert_eq!(state(&d, "us2")["State"]["Status"], "exited");
    // a restart policy with --rm, and a bad policy, are refused
    let o = cli(&d, &["run", "--rm", "--restart", "always", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125));
    let o = cli(&d, &["run", "-d", "--restart", "sometimes", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("sometimes"), "{}", stderr(&o));
    // a restarting container is not removed without force
    ok(cli(
        &d,
        &["rm", "-f", "of", "ok0", "al", "us", "us2", "al2", "ks"],
    ));
}

#[test]
fn logs_are_capped_rotated_and_still_readable() {
    if skip_unless_root("logs_are_capped_rotated_and_still_readable") {
        return;
    }
    let mut d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    // inspect shows what the user gave (nothing: `{}`), as dockerd; berth's cap
    // applies behind it
    ok(cli(&d, &["create", "--name", "dflt", "bb", "true"]));
    let lc = &state(&d, "dflt")["HostConfig"]["LogConfig"];
    assert_eq!(lc["Type"], "json-file");
    assert_eq!(lc["Config"], serde_json::json!({}));
    // max-file alone is accepted, as dockerd does
    ok(cli(
        &d,
        &[
            "create",
            "--name",
            "mf",
            "--log-opt",
            "max-file=5",
            "bb",
            "true",
        ],
    ));
    let lc = &state(&d, "mf")["HostConfig"]["LogConfig"];
    assert_eq!(lc["Config"], serde_json::json!({"max-file": "5"}));
    // small files: the newest lines survive, whole and in order, in at most 2 files
    let script = "for i in $(seq 1 400); do echo line $i; done";
    ok(cli(
        &d,
        &[
            "run",
            "--name",
            "rot",
            "--network",
            "none",
            "--log-opt",
            "max-size=2k",
            "--log-opt",
            "max-file=2",
            "bb",
            "sh",
            "-c",
            script,
        ],
    ));
    let logs = ok(cli(&d, &["logs", "rot"]));
    let nums: Vec<u32> = logs
        .lines()
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert_eq!(*nums.last().unwrap(), 400);
    assert!(nums.len() < 400, "older lines were rotated away");
    assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
    let log_path = state(&d, "rot")["LogPath"].as_str().unwrap().to_string();
    let dir = std::path::Path::new(&log_path).parent().unwrap();
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("-json.log"))
        .collect();
    assert_eq!(files.len(), 2);
    for f in &files {
        assert!(f.metadata().unwrap().len() <= 2048);
    }
    // following across rotations loses nothing
    let id = ok(cli(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "fol",
            "--network",
            "none",
            "--log-opt",
            "max-size=1k",
            "--log-opt",
            "max-file=5",
            "bb",
            "sh",
            "-c",
            "sleep 0.5; for i in $(seq 1 150); do echo line $i; sleep 0.01; done",
        ],
    ));
    let followed = ok(cli(&d, &["logs", "-f", id.trim()]));
    let want: String = (1..=150).map(|i| format!("line {i}\n")).collect();
    assert_eq!(followed, want);
    // still readable after a daemon restart
    assert!(d.stop().unwrap().success());
    d.spawn();
    assert_eq!(ok(cli(&d, &["logs", "--tail", "1", "rot"])), "line 400\n");
    // the none driver, and drivers and options berth does not have
    ok(cli(
        &d,
        &[
            "run",
            "--name",
            "quiet",
            "--log-driver",
            "none",
            "bb",
            "echo",
            "x",
        ],
    ));
    let o = cli(&d, &["logs", "quiet"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("does not support reading"),
        "{}",
        stderr(&o)
    );
    let o = cli(&d, &["run", "--log-driver", "syslogx", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("no log driver named 'syslogx'"),
        "{}",
        stderr(&o)
    );
    let o = cli(
        &d,
        &[
            "run",
            "--log-opt",
            "max-file=0",
            "--log-opt",
            "max-size=1k",
            "bb",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(125));
    let o = cli(&d, &["run", "--log-opt", "colour=blue", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unknown log opt 'colour'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn healthchecks_report_status_streak_log_and_events() {
    if skip_unless_root("healthchecks_report_status_streak_log_and_events") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // healthy once /tmp/ok exists; unhealthy after 2 failures once it is gone
    ok(cli(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "hc",
            "--network",
            "none",
            "--health-cmd",
            "echo probing; test -e /tmp/ok",
            "--health-interval",
            "200ms",
            "--health-retries",
            "2",
            "bb",
            "sleep",
            "300",
        ],
    ));
    let s = state(&d, "hc");
    assert_eq!(s["State"]["Health"]["Status"], "starting");
    assert_eq!(s["Config"]["Healthcheck"]["Test"][0], "CMD-SHELL");
    assert_eq!(s["Config"]["Healthcheck"]["Interval"], 200_000_000);
    until(&d, "hc", 5, "a failing streak", |s| {
        s["State"]["Health"]["FailingStreak"].as_i64().unwrap_or(0) >= 2
    });
    assert_eq!(state(&d, "hc")["State"]["Health"]["Status"], "unhealthy");
    ok(cli(&d, &["exec", "hc", "sh", "-c", "echo > /tmp/ok"]));
    until(&d, "hc", 5, "healthy", |s| {
        s["State"]["Health"]["Status"] == "healthy"
    });
    let h = state(&d, "hc")["State"]["Health"].clone();
    assert_eq!(h["FailingStreak"], 0);
    let log = h["Log"].as_array().unwrap();
    assert!(log.len() <= 5 && !log.is_empty());
    let last = log.last().unwrap();
    assert_eq!(last["ExitCode"], 0);
    assert_eq!(last["Output"], "probing\n");
    let ps = ok(cli(
        &d,
        &[
            "ps",
            "--filter",
            "health=healthy",
            "--format",
            "{{.Names}} {{.Status}}",
        ],
    ));
    assert!(
        ps.starts_with("hc Up ") && ps.trim_end().ends_with("(healthy)"),
        "{ps}"
    );
    let o = cli(
        &d,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 1)
            .to_string(),
            "--filter",
            "container=hc",
            "--format",
            "{{.Action}}",
        ],
    );
    let actions = ok(o);
    assert!(actions.contains("health_status: unhealthy"), "{actions}");
    assert!(actions.contains("health_status: healthy"), "{actions}");
    assert!(
        actions.contains("exec_start: /bin/sh -c echo probing; test -e /tmp/ok"),
        "{actions}"
    );
    // a probe that hangs is killed at the timeout and counts as a failure
    ok(cli(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "slow",
            "--network",
            "none",
            "--health-cmd",
            "sleep 5",
            "--health-interval",
            "100ms",
            "--health-timeout",
            "300ms",
            "--health-retries",
            "1",
            "bb",
            "sleep",
            "300",
        ],
    ));
    until(&d, "slow", 5, "unhealthy by timeout", |s| {
        s["State"]["Health"]["Status"] == "unhealthy"
    });
    let h = state(&d, "slow")["State"]["Health"].clone();
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], -1);
    assert!(
        last["Output"]
            .as_str()
            .unwrap()
            .contains("exceeded timeout"),
        "{last}"
    );
    // --no-healthcheck, and bad values
    ok(cli(
        &d,
        &["create", "--name", "nohc", "--no-healthcheck", "bb", "true"],
    ));
    assert_eq!(
        state(&d, "nohc")["Config"]["Healthcheck"]["Test"][0],
        "NONE"
    );
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","Healthcheck":{"Test":["CMD","true"],"Interval":5}}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("cannot be less than 1ms"), "{}", r.text());
    ok(cli(&d, &["rm", "-f", "hc", "slow", "nohc"]));
}

#[test]
fn init_reaps_orphans_and_forwards_signals() {
    if skip_unless_root("init_reaps_orphans_and_forwards_signals") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let ps = ok(cli(
        &d,
        &[
            "run",
            "--rm",
            "--init",
            "--network",
            "none",
            "bb",
            "ps",
            "-o",
            "pid,args",
        ],
    ));
    let first = ps.lines().nth(1).unwrap_or_default().trim().to_string();
    assert_eq!(first, "1 /sbin/docker-init -- ps -o pid,args", "{ps}");
    // an orphan is reaped by the init: no zombie is left
    let zombies = ok(cli(
        &d,
        &[
            "run",
            "--rm",
            "--init",
            "--network",
            "none",
            "bb",
            "sh",
            "-c",
            "sh -c 'sleep 0.2 &'; sleep 1; ps -o stat | grep -c Z; true",
        ],
    ));
    assert_eq!(zombies.trim(), "0");
    // the exit status passes through; a missing command is still 127
    let o = cli(&d, &["run", "--rm", "--init", "bb", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    let o = cli(&d, &["run", "--rm", "--init", "bb", "nosuchcmd"]);
    assert_eq!(o.status.code(), Some(127));
    // a signal reaches the command: sleep as PID 1 would ignore SIGTERM, under the
    // init it dies of it at once
    ok(cli(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "ini",
            "--init",
            "--network",
            "none",
            "bb",
            "sleep",
            "300",
        ],
    ));
    let t = std::time::Instant::now();
    ok(cli(&d, &["stop", "-t", "20", "ini"]));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let s = state(&d, "ini");
    assert_eq!(s["State"]["ExitCode"], 143);
    assert_eq!(s["HostConfig"]["Init"], true);
    ok(cli(&d, &["rm", "ini"]));
}
