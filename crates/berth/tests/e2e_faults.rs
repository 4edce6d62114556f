#![allow(clippy::unwrap_used)]
//! The engine under faults and beside other daemons: a container whose shim is killed
//! takes its processes along, half-sent requests are dropped, a zombie's pid file does
//! not block a start, removals leave no state behind, and the small things an operator
//! trips over (`-it` from a file, `ps --filter name=^/x$`, the socket's group).

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    d.get_json(&format!("/containers/{name}/json"))
}

/// Polls `f` every 50 ms until it holds, or panics after `secs` saying `what`.
fn until(secs: u64, what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "{what} did not happen in {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of a container's shim, from its lock file in the exec root.
fn shim_pid(d: &Daemon, id: &str) -> i32 {
    let lock = d.dir.path().join("exec/c").join(&id[..16]).join("shim.lock");
    std::fs::read_to_string(&lock)
        .unwrap_or_else(|e| panic!("{}: {e}", lock.display()))
        .trim()
        .parse()
        .unwrap()
}

/// The host pids of a container's processes.
fn pids_of(d: &Daemon, name: &str) -> Vec<i32> {
    let top = d.get_json(&format!("/containers/{name}/top?ps_args=-eo%20pid"));
    top["Processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[0].as_str()?.trim().parse().ok())
        .collect()
}

/// Whether `pid` still runs (a zombie does not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(") ").map(|(_, r)| r.chars().next());
            !matches!(state, Some(Some('Z' | 'X')))
        })
        .unwrap_or(false)
}

/// Whether the container's cgroup is still there in any hierarchy.
fn has_cgroup(id: &str) -> bool {
    let rel = format!("berth/{}", &id[..16]);
    std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .any(|h| h.path().join(&rel).exists())
}

/// A berthd command of its own (fresh data root, exec root and socket under `dir`).
fn bare_berthd(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(berthd_bin());
    c.arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--config-file")
        .arg("/dev/null")
        .arg("-H")
        .arg(format!("unix://{}", dir.join("b.sock").display()))
        .args(["--bridge", "none", "--ip-forward=false"]);
    c
}

fn kill9(pid: i32) {
    // SAFETY: kill(2) of a shim of the test's own daemon
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

#[test]
fn a_lost_shim_takes_its_container_along() {
    let Some(mut d) = daemon_with_busybox("a_lost_shim_takes_its_container_along") else {
        return;
    };
    let id = ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "ks",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "sleep 1000 & exec sleep 1001",
    ]))
    .trim()
    .to_string();
    until(5, "both processes", || pids_of(&d, "ks").len() == 2);
    let pids = pids_of(&d, "ks");
    // the shim dies while berthd watches
    kill9(shim_pid(&d, &id));
    until(10, "the exit", || {
        inspect(&d, "ks")["State"]["Status"] == "exited"
    });
    assert_eq!(inspect(&d, "ks")["State"]["ExitCode"], 137);
    until(5, "the processes' end", || {
        !pids.iter().any(|p| running(*p))
    });
    assert!(!has_cgroup(&id), "the container's cgroup is left");
    // it starts again, and the same while berthd is down
    ok(d.berth(&["start", "ks"]));
    until(5, "both processes", || pids_of(&d, "ks").len() == 2);
    let pids = pids_of(&d, "ks");
    let shim = shim_pid(&d, &id);
    assert!(d.stop().unwrap().success());
    kill9(shim);
    d.spawn();
    let st = inspect(&d, "ks")["State"].clone();
    assert_eq!(st["Status"], "exited", "{st}");
    assert_eq!(st["ExitCode"], 137, "{st}");
    until(5, "the processes' end", || {
        !pids.iter().any(|p| running(*p))
    });
    assert!(!has_cgroup(&id));
    ok(d.berth(&["rm", "-f", "ks"]));
    assert!(!d.dir.path().join("exec/c").join(&id[..16]).exists());
}

#[test]
fn removals_leave_no_state_behind() {
    let Some(d) = daemon_with_busybox("removals_leave_no_state_behind") else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..20 {
        let name = format!("r{i}");
        ids.push(
            ok(d.berth(&[
                "run",
                "-d",
                "--name",
                &name,
                "--network",
                "none",
                "bb",
                "true",
            ]))
            .trim()
            .to_string(),
        );
    }
    for i in 0..20 {
        let name = format!("r{i}");
        ok(d.berth(&["rm", "-f", &name]));
    }
    let exec = d.dir.path().join("exec/c");
    let left: Vec<String> = ids
        .iter()
        .filter(|id| exec.join(&id[..16]).exists())
        .cloned()
        .collect();
    assert!(left.is_empty(), "state folders left: {left:?}");
}

#[test]
fn half_sent_requests_are_dropped() {
    if skip_unless_root("half_sent_requests_are_dropped") {
        return;
    }
    let d = Daemon::start();
    let probe = |first: &'static [u8]| {
        let sock = d.socket.clone();
        std::thread::spawn(move || {
            let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
            let t0 = Instant::now();
            s.write_all(first).unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            (t0.elapsed(), out)
        })
    };
    let nothing = probe(b"");
    let half = probe(b"GET /_ping HTTP/1.1\r\nHost: x\r\n");
    let idle = probe(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n");
    for (what, p) in [("nothing", nothing), ("half", half), ("idle", idle)] {
        let (took, out) = p.join().unwrap();
        assert!(
            took < Duration::from_secs(45),
            "{what}: the connection stayed {took:?}"
        );
        if what == "idle" {
            assert!(out.starts_with(b"HTTP/1.1 200"), "{what}");
        }
    }
    // the daemon still answers
    assert_eq!(d.request("GET", "/_ping", None).status, 200);
}

#[test]
fn a_zombies_pid_file_does_not_block_a_start() {
    if skip_unless_root("a_zombies_pid_file_does_not_block_a_start") {
        return;
    }
    // a berthd that exited and was not reaped yet: a zombie named berthd
    let mut zombie = std::process::Command::new(berthd_bin())
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until(5, "the zombie", || !running(zombie.id() as i32));
    let mut d = Daemon::start();
    let pidfile = d.dir.path().join("berthd.pid");
    assert!(d.stop().unwrap().success());
    std::fs::write(&pidfile, format!("{}\n", zombie.id())).unwrap();
    d.spawn();
    assert_eq!(d.request("GET", "/_ping", None).status, 200);
    zombie.wait().unwrap();
    // a live berthd's pid file is respected (another data root, the same pid file)
    let dir = tempfile::tempdir().unwrap();
    let out = bare_berthd(dir.path())
        .arg("--pidfile")
        .arg(&pidfile)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("pid file found"), "{}", stderr(&out));
}

#[test]
fn a_tty_needs_a_terminal_and_names_filter_by_regex() {
    let Some(d) = daemon_with_busybox("a_tty_needs_a_terminal_and_names_filter_by_regex") else {
        return;
    };
    for name in ["web", "web2", "myweb"] {
        ok(d.berth(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "bb",
            "sleep",
            "60",
        ]));
    }
    let file = d.dir.path().join("input");
    std::fs::write(&file, "echo hi\n").unwrap();
    for cli in clis() {
        for args in [
            vec!["run", "-it", "--rm", "bb", "sh"],
            vec!["exec", "-it", "web", "sh"],
        ] {
            let out = cli_command(&cli, &d.host())
                .args(&args)
                .stdin(std::fs::File::open(&file).unwrap())
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{cli} {args:?}");
            assert!(
                stderr(&out).contains("the input device is not a TTY"),
                "{cli} {args:?}: {}",
                stderr(&out)
            );
        }
        let names = |f: &str| {
            let mut v: Vec<String> =
                ok(d.cli(&cli, &["ps", "--filter", f, "--format", "{{.Names}}"]))
                    .lines()
                    .map(str::to_string)
                    .collect();
            v.sort();
            v
        };
        assert_eq!(names("name=^/web$"), ["web"], "{cli}");
        assert_eq!(names("name=web"), ["myweb", "web", "web2"], "{cli}");
        assert_eq!(names("name=^/web[0-9]"), ["web2"], "{cli}");
    }
    // nothing was made by the refused runs
    assert_eq!(ok(d.berth(&["ps", "-aq"])).lines().count(), 3);
}

#[test]
fn the_sockets_group() {
    if skip_unless_root("the_sockets_group") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::start_with(&["-G", "4242"]);
    let md = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (0, 4242, 0o660));
    // by default the group `docker` when it exists, as dockerd
    let d2 = Daemon::start();
    let docker = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0] == "docker").then(|| f[2].parse::<u32>().unwrap())
        });
    assert_eq!(
        std::fs::metadata(&d2.socket).unwrap().gid(),
        docker.unwrap_or(0)
    );
    // a group that does not exist stops the start, saying so
    let dir = tempfile::tempdir().unwrap();
    let out = bare_berthd(dir.path())
        .arg("--pidfile")
        .arg(dir.path().join("pid"))
        .args(["-G", "no-such-group-berth"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("group no-such-group-berth not found"),
        "{}",
        stderr(&out)
    );
}
