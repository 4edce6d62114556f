#![allow(clippy::unwrap_used)]
//! The engine under faults and beside other daemons: a container whose shim is killed
//! takes its processes along, half-sent requests are dropped, a zombie's pid file does
//! not block a start, kills of berthd amid concurrent work leave nothing wedged, removals
//! leave no state behind, 500 containers come and go, and the small things an operator
//! trips over (`-it` from a file, `ps --filter name=^/x$`, the socket's group).

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    d.get_json(&format!("/containers/{name}/json"))
}

/// The pid of a container's shim, from its lock file in the exec root.
fn shim_pid(d: &Daemon, id: &str) -> i32 {
    let lock = d
        .dir
        .path()
        .join("exec/c")
        .join(&id[..16])
        .join("shim.lock");
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

/// Adds the arguments of a berthd of its own (fresh data root, exec root and socket
/// under `dir`, no daemon.json, the host's forwarding left alone).
fn own_roots(c: &mut std::process::Command, dir: &std::path::Path) {
    c.arg("--data-root")
        .arg(dir.join("root"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--config-file")
        .arg("/dev/null")
        .arg("-H")
        .arg(format!("unix://{}", dir.join("b.sock").display()))
        .arg("--ip-forward=false");
}

/// A berthd command of its own under `dir`, without a bridge.
fn bare_berthd(dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(berthd_bin());
    own_roots(&mut c, dir);
    c.args(["--bridge", "none"]);
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

/// Nothing of the removed containers `ids` is left: no shim, cgroup, container or
/// state folder, network namespace or mount under the data root.
fn assert_nothing_left(d: &Daemon, ids: &[String]) {
    d.assert_no_shims();
    for id in ids {
        assert!(!has_cgroup(id), "{id}'s cgroup is left");
    }
    // (the seccomp cache, `.seccomp`, stays)
    let count = |p: std::path::PathBuf| {
        std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    let root = d.data_root();
    assert_eq!(count(root.join("containers")), 0, "container folders left");
    assert_eq!(count(d.dir.path().join("exec/c")), 0, "state folders left");
    assert_eq!(
        count(d.dir.path().join("exec/netns")),
        0,
        "network namespaces left"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&format!("{}/containers", root.display())),
        "mounts left"
    );
}

/// berthd killed (-9) in the middle of concurrent work, four rounds at different
/// moments: ten `run -d`, and from the second round on two stops, two execs, a commit,
/// a pull (from a registry of the test's own on loopback) and a build. After each restart every container is running or starts (none held by
/// a shim of a start nobody finished); at the end `rm -f` leaves no process, shim,
/// cgroup, mount, network namespace or state folder, and the database is intact.
#[test]
fn kills_during_concurrent_work_leave_nothing_wedged() {
    let Some(mut d) = daemon_with_busybox("kills_during_concurrent_work_leave_nothing_wedged")
    else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM bb\nRUN echo built > /b && sleep 0.3\nRUN echo again >> /b\n",
    )
    .unwrap();
    // an image of 24 MiB in a registry of the test's own, pulled in every round
    let store = tempfile::tempdir().unwrap();
    let (registry, port) = berth_registry(store.path(), &[]);
    let _registry = KillOnDrop(registry);
    let remote = format!("127.0.0.1:{port}/big:latest");
    ok(d.berth(&[
        "run",
        "--name",
        "mkbig",
        "--network",
        "none",
        "bb",
        "busybox",
        "dd",
        "if=/dev/urandom",
        "of=/big",
        "bs=1M",
        "count=24",
    ]));
    ok(d.berth(&["commit", "mkbig", "big:latest"]));
    ok(d.berth(&["rm", "mkbig"]));
    ok(d.berth(&["tag", "big:latest", &remote]));
    ok(d.berth(&["push", "-q", &remote]));
    ok(d.berth(&["rmi", "big:latest", &remote]));
    let mut figures = Vec::new();
    for (round, wait_ms) in [150u64, 300, 450, 600].into_iter().enumerate() {
        let berth = |args: Vec<String>| {
            cli_command(berth_bin(), &d.host())
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let mut work: Vec<std::process::Child> = (0..10)
            .map(|i| {
                berth(words(&format!(
                    "run -d --network none --name cut{round}-{i} bb sleep 600"
                )))
            })
            .collect();
        if round > 0 {
            let p = round - 1;
            for cmd in [
                format!("stop -t 1 cut{p}-0"),
                format!("stop -t 1 cut{p}-1"),
                format!("exec cut{p}-2 touch /e"),
                format!("exec cut{p}-3 sleep 1"),
                format!("commit cut{p}-4 snap{round}"),
            ] {
                work.push(berth(words(&cmd)));
            }
            work.push(berth(words(&format!("pull -q {remote}"))));
            let mut b = words(&format!("build -q --network none -t built{round}"));
            b.push(ctx.path().display().to_string());
            work.push(berth(b));
        }
        std::thread::sleep(Duration::from_millis(wait_ms));
        kill9(d.pid());
        let _ = d.child.take().unwrap().wait();
        for mut w in work {
            let _ = w.wait();
        }
        d.spawn();
        let undone = d.log().matches("undoing a start").count();
        let list = d.get_json("/containers/json?all=1");
        let mut not_running = 0;
        for c in list.as_array().unwrap() {
            let name = c["Names"][0].as_str().unwrap().trim_start_matches('/');
            if c["State"] != "running" {
                not_running += 1;
                let o = d.berth(&["start", name]);
                assert!(
                    o.status.success(),
                    "round {round}: start of {name} ({}): {}\n{}",
                    c["State"],
                    stderr(&o),
                    d.log()
                );
            }
            let st = inspect(&d, name)["State"].clone();
            assert_eq!(st["Status"], "running", "round {round}: {name}: {st}");
            assert!(running(st["Pid"].as_i64().unwrap() as i32), "{name}: {st}");
        }
        // a pull cut short is done again, whole
        ok(d.berth(&["pull", "-q", &remote]));
        let o = ok(d.berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--pull",
            "never",
            &remote,
            "busybox",
            "true",
        ]));
        assert_eq!(o, "");
        ok(d.berth(&["rmi", &remote]));
        figures.push(format!(
            "kill at {wait_ms} ms: {} containers, {not_running} not running after the restart, {undone} cut starts undone",
            list.as_array().unwrap().len()
        ));
    }
    let ids: Vec<String> = d
        .get_json("/containers/json?all=1")
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Id"].as_str().unwrap().to_string())
        .collect();
    let pids: Vec<i32> = ids.iter().flat_map(|id| pids_of(&d, id)).collect();
    d.remove_containers();
    until(10, "the containers' processes' end", || {
        !pids.iter().any(|p| running(*p))
    });
    assert_nothing_left(&d, &ids);
    let root = d.data_root();
    assert!(d.stop().unwrap().success());
    if have("sqlite3") {
        let o = std::process::Command::new("sqlite3")
            .arg("-readonly")
            .arg(root.join("berth.db"))
            .arg("PRAGMA integrity_check")
            .output()
            .unwrap();
        assert_eq!(stdout(&o).trim(), "ok", "{}", stderr(&o));
    }
    eprintln!("{}", figures.join("\n"));
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

/// A berthd in the network namespace `ns` with a data root, exec root and socket of its
/// own under `dir`, and `args`; started, not waited for.
fn berthd_in(ns: &Netns, dir: &std::path::Path, args: &[&str]) -> KillOnDrop {
    std::fs::create_dir_all(dir).unwrap();
    let mut cmd = std::process::Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", ns.0))
        .arg(berthd_bin());
    own_roots(&mut cmd, dir);
    let child = cmd
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("log")).unwrap())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

fn host_of(dir: &std::path::Path) -> String {
    format!("unix://{}", dir.join("b.sock").display())
}

fn serving(dir: &std::path::Path) -> bool {
    run_cli(berth_bin(), &host_of(dir), &["version"], None)
        .status
        .success()
}

fn sigterm(c: &mut KillOnDrop) -> std::process::ExitStatus {
    // SAFETY: kill(2) of the test's own child
    unsafe {
        libc::kill(c.0.id() as i32, libc::SIGTERM);
    }
    c.0.wait().unwrap()
}

/// Two daemons without `--bridge` in one network namespace: the second refuses, naming
/// the first's data root and the flag to give; daemons with a bridge of their own, or
/// none, run side by side, each with its own table, and one stopping leaves the others'
/// rules alone.
#[test]
fn several_daemons_share_a_host() {
    if skip_unless_root("several_daemons_share_a_host") {
        return;
    }
    let ns = Netns::new("two");
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c, e) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
        tmp.path().join("e"),
    );
    let mut da = berthd_in(&ns, &a, &[]);
    until(20, "the first daemon", || serving(&a));
    let mut db = berthd_in(&ns, &b, &[]);
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = db.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the second daemon did not refuse");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(b.join("log")).unwrap();
    let want = format!(
        "another berthd (data root {}) is running with the bridge berth0 and the rules table inet berth: give this daemon a bridge of its own (--bridge NAME",
        a.join("root").display()
    );
    assert!(log.contains(&want), "{log}");
    let mut dc = berthd_in(&ns, &c, &["--bridge", "bt1"]);
    let mut de = berthd_in(&ns, &e, &["--bridge", "none"]);
    until(20, "the other daemons", || serving(&c) && serving(&e));
    for d in [&a, &c, &e] {
        ok(run_cli(
            berth_bin(),
            &host_of(d),
            &["network", "create", "mine"],
            None,
        ));
    }
    let subnet = |d: &std::path::Path, net: &str| {
        ok(run_cli(
            berth_bin(),
            &host_of(d),
            &[
                "network",
                "inspect",
                "-f",
                "{{(index .IPAM.Config 0).Subnet}}",
                net,
            ],
            None,
        ))
        .trim()
        .to_string()
    };
    let subnets = [
        subnet(&a, "bridge"),
        subnet(&c, "bridge"),
        subnet(&a, "mine"),
        subnet(&c, "mine"),
        subnet(&e, "mine"),
    ];
    let mut uniq = subnets.to_vec();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), subnets.len(), "{subnets:?}");
    let tables = || stdout(&ns.run(&["nft", "list", "tables"]));
    let t = tables();
    assert!(t.contains("table inet berth\n"), "{t}");
    assert!(t.contains("table inet berth-bt1\n"), "{t}");
    assert_eq!(t.matches("table inet berth-none-").count(), 1, "{t}");
    // one stopping takes only its own table away
    assert!(sigterm(&mut de).success());
    let t = tables();
    assert!(!t.contains("berth-none-"), "{t}");
    assert!(
        t.contains("table inet berth\n") && t.contains("table inet berth-bt1\n"),
        "{t}"
    );
    assert!(sigterm(&mut dc).success());
    assert!(tables().contains("table inet berth\n"));
    // the bridge is free again once its daemon is gone
    assert!(sigterm(&mut da).success());
    let mut db = berthd_in(&ns, &b, &[]);
    until(20, "the second daemon, alone", || serving(&b));
    assert!(sigterm(&mut db).success());
    assert_eq!(tables().trim(), "");
}

/// A tmpfs of `mib` MiB mounted on a directory of its own, unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn new(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        unmount_below(self.0.path());
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// A data root that fills up: an import too big for it fails saying the disk is full
/// (not that the archive is damaged) and leaves nothing behind, a container writing
/// until the disk is full gets ENOSPC and is removed cleanly, and berthd keeps serving.
#[test]
fn a_full_data_root() {
    if skip_unless_root("a_full_data_root") {
        return;
    }
    let disk = SmallDisk::new(48);
    let dir = disk.0.path();
    let mut d = KillOnDrop(
        bare_berthd(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap(),
    );
    until(20, "berthd", || serving(dir));
    let host = host_of(dir);
    let berth = |args: &[&str], input: Option<&[u8]>| run_cli(berth_bin(), &host, args, input);
    ok(berth(&["import", "-", "bb"], Some(&busybox_tar())));
    // 64 MiB of a file that does not compress
    let mut big = tar::Builder::new(Vec::new());
    let mut data = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    add_file(&mut big, "big.bin", 0o644, &data);
    drop(data);
    let big = big.into_inner().unwrap();
    let out = berth(&["import", "-", "big"], Some(&big));
    assert!(!out.status.success());
    let err = stderr(&out).to_lowercase();
    assert!(err.contains("no space left on device"), "{err}");
    assert!(!err.contains("invalid tar stream"), "{err}");
    let images = ok(berth(&["images", "-q"], None));
    assert_eq!(images.lines().count(), 1, "{images}");
    // a container fills the disk
    let out = berth(
        &[
            "run",
            "--name",
            "filler",
            "--network",
            "none",
            "bb",
            "busybox",
            "dd",
            "if=/dev/zero",
            "of=/fill",
            "bs=1M",
            "count=200",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // (attached: the output comes from the shim, whether or not the log could take it)
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    ok(berth(&["rm", "-f", "filler"], None));
    // the space is back: the same image again, and a container that runs
    ok(berth(&["import", "-", "bb2"], Some(&busybox_tar())));
    let out = ok(berth(
        &["run", "--rm", "--network", "none", "bb2", "echo", "fine"],
        None,
    ));
    assert_eq!(out, "fine\n");
    assert!(sigterm(&mut d).success());
}

/// Errors a user can act on, and what Docker does instead of failing: a working
/// directory the container cannot enter says so in runc's words, a create body with a
/// field of the wrong type is refused in Go's, and an image VOLUME on a symlink is
/// mounted where the link leads.
#[test]
fn errors_say_what_to_fix() {
    let Some(d) = daemon_with_busybox("errors_say_what_to_fix") else {
        return;
    };
    for cli in clis() {
        let out = d.cli(
            &cli,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-w",
                "/proc/self/fd/5",
                "bb",
                "true",
            ],
        );
        let err = stderr(&out);
        assert!(
            err.contains("chdir to cwd (\"/proc/self/fd/5\") set in config.json failed: "),
            "{cli}: {err}"
        );
        // the CLIs' exit code follows the cause
        let code = if err.contains("no such file or directory") {
            127
        } else {
            125
        };
        assert_eq!(out.status.code(), Some(code), "{cli}: {err}");
    }
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "wx",
        "--network",
        "none",
        "bb",
        "sleep",
        "60",
    ]));
    for cli in clis() {
        let out = d.cli(&cli, &["exec", "-w", "/nowhere", "wx", "true"]);
        // (dockerd writes an exec's failure into its output stream)
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(126), "{cli}: {said}");
        assert!(
            said.contains(
                "chdir to cwd (\"/nowhere\") set in config.json failed: no such file or directory"
            ),
            "{cli}: {said}"
        );
    }
    for (body, want) in [
        (
            r#"{"Image": 5}"#,
            "invalid JSON: json: cannot unmarshal number into Go struct field CreateRequest.Image of type string",
        ),
        (
            r#"{"Image": "bb", "HostConfig": {"Memory": "1g"}}"#,
            "invalid JSON: json: cannot unmarshal string into Go struct field CreateRequest.HostConfig.Memory of type int64",
        ),
        (
            r#"{"Image": "bb", "Env": "A=1"}"#,
            "invalid JSON: json: cannot unmarshal string into Go struct field CreateRequest.Env of type []string",
        ),
    ] {
        let r = d.request("POST", "/containers/create", Some(body.as_bytes()));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["message"], want, "{body}");
    }
    // VOLUME /data, /data a link to /srv/data
    ok(d.berth(&[
        "run",
        "--name",
        "mk",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "mkdir -p /srv/data && echo seed > /srv/data/seed && ln -s /srv/data /data",
    ]));
    ok(d.berth(&["commit", "--change", "VOLUME /data", "mk", "vimg"]));
    let images = ok(d.berth(&["images", "--format", "{{.Repository}}"]));
    assert!(images.lines().any(|l| l == "vimg"), "{images}");
    ok(d.berth(&[
        "run",
        "--name",
        "vv",
        "--network",
        "none",
        "--pull",
        "never",
        "vimg",
        "sh",
        "-c",
        "echo hi > /data/f && test -L /data && cat /srv/data/seed",
    ]));
    let m = inspect(&d, "vv")["Mounts"][0].clone();
    assert_eq!(m["Destination"], "/data", "{m}");
    let src = std::path::PathBuf::from(m["Source"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(src.join("f")).unwrap(), "hi\n");
    assert_eq!(std::fs::read_to_string(src.join("seed")).unwrap(), "seed\n");
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// 500 containers started (eight clients at a time) and removed: each one runs, berthd's
/// memory stays bounded, and nothing of them is left afterwards (shims, cgroups, mounts,
/// state folders).
#[test]
fn five_hundred_containers_come_and_go() {
    let Some(d) = daemon_with_busybox("five_hundred_containers_come_and_go") else {
        return;
    };
    const N: usize = 500;
    let idle = rss_kib(d.pid());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let started = Instant::now();
    let body =
        br#"{"Image": "bb", "Cmd": ["sleep", "600"], "HostConfig": {"NetworkMode": "none"}}"#;
    let ids = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= N {
                    return;
                }
                let r = d.request(
                    "POST",
                    &format!("/containers/create?name=many{i}"),
                    Some(body),
                );
                assert_eq!(r.status, 201, "{}", r.text());
                let id = r.json()["Id"].as_str().unwrap().to_string();
                let r = d.request("POST", &format!("/containers/{id}/start"), None);
                assert_eq!(r.status, 204, "{}", r.text());
                ids.lock().unwrap().push(id);
            });
        }
    });
    let start_time = started.elapsed();
    let ids = ids.into_inner().unwrap();
    let running = d.get_json("/containers/json");
    assert_eq!(running.as_array().unwrap().len(), N);
    if have("docker") {
        let ps = ok(d.docker(&["ps", "-q"]));
        assert_eq!(ps.lines().count(), N);
    }
    let busy = rss_kib(d.pid());
    let shims = d.shims().len();
    assert_eq!(shims, N);
    // berthd's own memory for 500 running containers (its per-container state and the
    // connections that wait for their exits)
    assert!(
        busy < idle + 100 * 1024,
        "berthd RSS {busy} KiB with {N} running (idle {idle})"
    );
    let removing = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(id) = ids.get(i) else { return };
                let r = d.request("DELETE", &format!("/containers/{id}?force=1"), None);
                assert_eq!(r.status, 204, "{}", r.text());
            });
        }
    });
    let remove_time = removing.elapsed();
    assert_eq!(d.get_json("/containers/json?all=1"), serde_json::json!([]));
    assert_nothing_left(&d, &ids);
    let after = rss_kib(d.pid());
    eprintln!(
        "{N} containers: started in {:.1} s, removed in {:.1} s; berthd RSS {} MiB idle, {} MiB with {N} running, {} MiB after",
        start_time.as_secs_f64(),
        remove_time.as_secs_f64(),
        idle / 1024,
        busy / 1024,
        after / 1024
    );
}
