#![allow(clippy::unwrap_used)]
//! Resource limits end to end: what `run` asks reaches the cgroup and the process,
//! `stats`, `pause`/`unpause`, `update`, OOM kills, `info`, and Docker's refusals —
//! through berth's CLI and the docker CLI where it is installed.

mod common;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

fn full_id(d: &Daemon, name: &str) -> String {
    d.get_json(&format!("/containers/{name}/json"))["Id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A v1 controller's file of the container's cgroup (this machine is v1 or hybrid; on
/// a v2-only machine the same file names are checked under the unified tree).
fn cg_file(d: &Daemon, name: &str, controller: &str, file: &str) -> PathBuf {
    let id = full_id(d, name);
    let v1 = PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join("berth")
        .join(&id[..16]);
    v1.join(file)
}

fn v1() -> bool {
    std::path::Path::new("/sys/fs/cgroup/memory").is_dir()
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn limits_reach_the_cgroup_and_the_process() {
    let Some(d) = daemon_with_busybox("limits_reach_the_cgroup_and_the_process") else {
        return;
    };
    for bin in clis() {
        let name = format!("lim-{}", bin.rsplit('/').next().unwrap());
        ok(d.cli(
            &bin,
            &[
                "run",
                "-d",
                "--network",
                "none",
                "--name",
                &name,
                "-m",
                "64m",
                "--cpus",
                "0.5",
                "--cpu-shares",
                "512",
                "--cpuset-cpus",
                "0",
                "--pids-limit",
                "10",
                "--ulimit",
                "nofile=100:200",
                "--shm-size",
                "8m",
                "--memory-reservation",
                "32m",
                "bb",
                "sleep",
                "100",
            ],
        ));
        let hc = d.get_json(&format!("/containers/{name}/json"))["HostConfig"].clone();
        assert_eq!(hc["Memory"], 64 << 20, "{bin}");
        assert_eq!(hc["MemorySwap"], 128 << 20, "{bin}: Docker's default swap");
        assert_eq!(hc["NanoCpus"], 500_000_000i64);
        assert_eq!(hc["ShmSize"], 8 << 20);
        if v1() {
            assert_eq!(
                read(&cg_file(&d, &name, "memory", "memory.limit_in_bytes")),
                (64u64 << 20).to_string()
            );
            assert_eq!(
                read(&cg_file(&d, &name, "memory", "memory.soft_limit_in_bytes")),
                (32u64 << 20).to_string()
            );
            assert_eq!(
                read(&cg_file(&d, &name, "cpu", "cpu.cfs_quota_us")),
                "50000"
            );
            assert_eq!(
                read(&cg_file(&d, &name, "cpu", "cpu.cfs_period_us")),
                "100000"
            );
            assert_eq!(read(&cg_file(&d, &name, "cpu", "cpu.shares")), "512");
            assert_eq!(read(&cg_file(&d, &name, "cpuset", "cpuset.cpus")), "0");
            assert_eq!(read(&cg_file(&d, &name, "pids", "pids.max")), "10");
        }
        // from inside: rlimits, /dev/shm, and the pids limit stopping forks
        let out = ok(d.cli(
            &bin,
            &[
                "exec",
                &name,
                "sh",
                "-c",
                "ulimit -n; ulimit -Hn; df -k /dev/shm | tail -1",
            ],
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..2], ["100", "200"], "{bin}: {out}");
        assert!(lines[2].contains("8192"), "{bin}: {out}");
        if v1() {
            // its own cgroups at /sys/fs/cgroup, where programs read their limits,
            // read-only
            let out = ok(d.cli(
                &bin,
                &[
                    "exec",
                    &name,
                    "cat",
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "/sys/fs/cgroup/pids/pids.max",
                    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
                    "/sys/fs/cgroup/cpuset/cpuset.cpus",
                ],
            ));
            assert_eq!(out, "67108864\n10\n50000\n0\n", "{bin}");
            for write in [
                "echo max > /sys/fs/cgroup/pids/pids.max",
                "mkdir /sys/fs/cgroup/pids/sub",
                "mkdir /sys/fs/cgroup/other",
            ] {
                let out = d.cli(&bin, &["exec", &name, "sh", "-c", write]);
                assert!(!out.status.success(), "{bin}: {write}");
                assert!(
                    stderr(&out).contains("Read-only file system"),
                    "{bin}: {write}: {}",
                    stderr(&out)
                );
            }
            assert_eq!(read(&cg_file(&d, &name, "pids", "pids.max")), "10");
        }
        // 20 background sleeps under a limit of 10 processes: some cannot be forked
        let out = d.cli(
            &bin,
            &[
                "exec",
                &name,
                "sh",
                "-c",
                "for i in $(seq 20); do sleep 5 & done",
            ],
        );
        assert!(
            stderr(&out).contains("can't fork"),
            "{bin}: the pids limit held: {}",
            stderr(&out)
        );
        ok(d.cli(&bin, &["rm", "-f", &name]));
    }
}

/// Reads `n` JSON messages from a streaming stats response.
fn stream_stats(d: &Daemon, name: &str, n: usize) -> Vec<serde_json::Value> {
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /containers/{name}/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    for line in BufReader::new(s).lines() {
        let line = line.unwrap();
        if line.starts_with('{') {
            out.push(serde_json::from_str(&line).unwrap());
            if out.len() == n {
                break;
            }
        }
    }
    out
}

#[test]
fn stats_pause_unpause_and_update() {
    let Some(d) = daemon_with_busybox("stats_pause_unpause_and_update") else {
        return;
    };
    ok(d.berth(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "st",
        "-m",
        "64m",
        "bb",
        "sh",
        "-c",
        "while true; do :; done",
    ]));
    // one-shot: at once, no previous sample
    let v = d.get_json("/containers/st/stats?stream=false&one-shot=true");
    assert_eq!(v["name"], "/st");
    assert!(v["memory_stats"]["usage"].as_u64().unwrap() > 0);
    assert_eq!(v["memory_stats"]["limit"], 64 << 20);
    assert_eq!(v["pids_stats"]["current"], 1);
    assert_eq!(v["precpu_stats"]["cpu_usage"]["total_usage"], 0);
    // streamed: one a second, each with the previous one's CPU
    let msgs = stream_stats(&d, "st", 2);
    let (a, b) = (&msgs[0], &msgs[1]);
    assert_eq!(
        b["precpu_stats"]["cpu_usage"]["total_usage"],
        a["cpu_stats"]["cpu_usage"]["total_usage"]
    );
    assert!(
        b["cpu_stats"]["cpu_usage"]["total_usage"].as_u64()
            > a["cpu_stats"]["cpu_usage"]["total_usage"].as_u64(),
        "the busy loop used CPU"
    );
    for bin in clis() {
        let out = ok(d.cli(&bin, &["stats", "--no-stream", "st"]));
        let row = out.lines().nth(1).unwrap();
        assert!(out.starts_with("CONTAINER ID"), "{bin}: {out}");
        assert!(
            row.contains(" st ") && row.contains("/ 64MiB"),
            "{bin}: {out}"
        );
        let cpu: f64 = row
            .split_whitespace()
            .nth(2)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap();
        assert!(cpu > 20.0, "{bin}: a busy loop shows CPU: {out}");
        // pause: frozen, shown, exec refused; unpause
        ok(d.cli(&bin, &["pause", "st"]));
        let st = d.get_json("/containers/st/json")["State"].clone();
        assert_eq!(
            (
                st["Status"].as_str(),
                st["Paused"].as_bool(),
                st["Running"].as_bool()
            ),
            (Some("paused"), Some(true), Some(true))
        );
        assert!(ok(d.cli(&bin, &["ps"])).contains("(Paused)"));
        let e = d.cli(&bin, &["exec", "st", "true"]);
        assert!(
            !e.status.success()
                && stderr(&e).contains("is paused, unpause the container before exec"),
            "{bin}: {}",
            stderr(&e)
        );
        let again = d.cli(&bin, &["pause", "st"]);
        assert!(
            stderr(&again).contains("is already paused"),
            "{bin}: {}",
            stderr(&again)
        );
        if v1() {
            let f = PathBuf::from("/sys/fs/cgroup/freezer/berth")
                .join(&full_id(&d, "st")[..16])
                .join("freezer.state");
            assert_eq!(read(&f), "FROZEN");
        }
        ok(d.cli(&bin, &["unpause", "st"]));
        assert_eq!(
            d.get_json("/containers/st/json")["State"]["Status"],
            "running"
        );
        ok(d.cli(&bin, &["exec", "st", "true"]));
        let again = d.cli(&bin, &["unpause", "st"]);
        assert!(
            stderr(&again).contains("is not paused"),
            "{bin}: {}",
            stderr(&again)
        );
    }
    let ev = d.request("GET", &format!("/events?since=0&until={}&filters=%7B%22event%22%3A%5B%22pause%22%2C%22unpause%22%5D%7D", now_secs()), None).text();
    assert!(
        ev.matches("\"pause\"").count() >= 1 && ev.matches("\"unpause\"").count() >= 1,
        "{ev}"
    );
    // update a running container: at once in the cgroup, and stored
    for bin in clis() {
        ok(d.cli(
            &bin,
            &[
                "update",
                "--cpus",
                "0.25",
                "--pids-limit",
                "20",
                "-m",
                "100m",
                "--memory-swap",
                "200m",
                "st",
            ],
        ));
        if v1() {
            assert_eq!(read(&cg_file(&d, "st", "cpu", "cpu.cfs_quota_us")), "25000");
            assert_eq!(read(&cg_file(&d, "st", "pids", "pids.max")), "20");
            assert_eq!(
                read(&cg_file(&d, "st", "memory", "memory.limit_in_bytes")),
                (100u64 << 20).to_string()
            );
        }
        let hc = d.get_json("/containers/st/json")["HostConfig"].clone();
        assert_eq!(
            (
                hc["NanoCpus"].as_i64(),
                hc["PidsLimit"].as_i64(),
                hc["Memory"].as_i64()
            ),
            (Some(250_000_000), Some(20), Some(100 << 20))
        );
        // Docker's refusal: a memory limit above the swap limit already set
        let e = d.cli(&bin, &["update", "-m", "300m", "st"]);
        assert!(
            !e.status.success()
                && stderr(&e)
                    .contains("Memory limit should be smaller than already set memoryswap limit"),
            "{bin}: {}",
            stderr(&e)
        );
        let e = d.cli(&bin, &["update", "--cpu-period", "100000", "st"]);
        assert!(
            stderr(&e).contains("CPU Period cannot be updated as NanoCPUs has already been set"),
            "{bin}: {}",
            stderr(&e)
        );
    }
    // a paused container still stops and is removed
    ok(d.berth(&["pause", "st"]));
    ok(d.berth(&["rm", "-f", "st"]));
    // a stopped container: stored, applied at its next start; no restart policy with --rm
    ok(d.berth(&[
        "create",
        "--network",
        "none",
        "--name",
        "later",
        "bb",
        "sleep",
        "100",
    ]));
    ok(d.berth(&[
        "update",
        "-m",
        "48m",
        "--memory-swap",
        "96m",
        "--restart",
        "always",
        "later",
    ]));
    ok(d.berth(&["start", "later"]));
    if v1() {
        assert_eq!(
            read(&cg_file(&d, "later", "memory", "memory.limit_in_bytes")),
            (48u64 << 20).to_string()
        );
    }
    assert_eq!(
        d.get_json("/containers/later/json")["HostConfig"]["RestartPolicy"]["Name"],
        "always"
    );
    ok(d.berth(&["rm", "-f", "later"]));
    ok(d.berth(&[
        "create",
        "--rm",
        "--network",
        "none",
        "--name",
        "rmme",
        "bb",
        "true",
    ]));
    let e = d.berth(&["update", "--restart", "always", "rmme"]);
    assert!(
        stderr(&e).contains("Restart policy cannot be updated because AutoRemove is enabled"),
        "{}",
        stderr(&e)
    );
    ok(d.berth(&["rm", "rmme"]));
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1
}

#[test]
fn oom_kills_are_reported() {
    let Some(d) = daemon_with_busybox("oom_kills_are_reported") else {
        return;
    };
    let out = d.berth(&[
        "run",
        "--name",
        "hog",
        "--network",
        "none",
        "-m",
        "8m",
        "--memory-swap",
        "8m",
        "bb",
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ]);
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let st = d.get_json("/containers/hog/json")["State"].clone();
    assert_eq!(st["OOMKilled"], true, "{st}");
    assert_eq!(st["ExitCode"], 137);
    let ev = d
        .request(
            "GET",
            &format!("/events?since=0&until={}", now_secs()),
            None,
        )
        .text();
    assert!(ev.contains("\"oom\""), "{ev}");
    // the next start clears it
    ok(d.berth(&["update", "-m", "64m", "--memory-swap", "128m", "hog"]));
    let _ = d.berth(&["start", "-a", "hog"]);
    ok(d.berth(&["rm", "-f", "hog"]));
}

#[test]
fn bad_limits_are_refused_with_dockers_words() {
    let Some(d) = daemon_with_busybox("bad_limits_are_refused_with_dockers_words") else {
        return;
    };
    let before = d
        .get_json("/containers/json?all=1")
        .as_array()
        .unwrap()
        .len();
    for bin in clis() {
        for (args, msg) in [
            (vec!["-m", "4m"], "Minimum memory limit allowed is 6MB"),
            (
                vec!["--cpuset-cpus", "0-99"],
                "Requested CPUs are not available",
            ),
            (
                vec!["--cpuset-cpus", "x"],
                "Invalid value x for cpuset cpus",
            ),
            (vec!["--cpus", "64"], "Range of CPUs is from 0.01 to"),
            (
                vec!["-m", "64m", "--memory-swap", "32m"],
                "Minimum memoryswap limit should be larger than memory limit",
            ),
            (
                vec!["--cpu-period", "10"],
                "CPU cfs period can not be less than 1ms",
            ),
            (
                vec!["--memory-reservation", "1m"],
                "Minimum memory reservation allowed is 6MB",
            ),
        ] {
            assert_refused(&d, &bin, &["create"], &args, 1, msg);
        }
    }
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"Memory":1048576}}"#),
    );
    assert_eq!(r.status, 400);
    // nothing half made
    assert_eq!(
        d.get_json("/containers/json?all=1")
            .as_array()
            .unwrap()
            .len(),
        before
    );
    // a hard rlimit above ours, which berthd may not raise, is refused naming it
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills the struct
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) };
    let has_cap = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|c| c & (1 << 24) != 0);
    if !has_cap && hard.rlim_max != libc::RLIM_INFINITY {
        let want = format!("nofile={0}:{0}", hard.rlim_max + 1);
        let out = d.berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--ulimit",
            &want,
            "bb",
            "true",
        ]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("cannot set ulimit nofile")
                && stderr(&out).contains("CAP_SYS_RESOURCE"),
            "{}",
            stderr(&out)
        );
    }
    // info says what the cgroups can do
    let info = d.get_json("/info");
    assert_eq!(info["CgroupDriver"], "cgroupfs");
    let v2_only = !v1();
    assert_eq!(info["CgroupVersion"], if v2_only { "2" } else { "1" });
    assert_eq!(info["MemoryLimit"], true);
    assert_eq!(info["PidsLimit"], true);
    if v1() && !std::path::Path::new("/sys/fs/cgroup/blkio/blkio.weight").exists() {
        let w = info["Warnings"].to_string();
        assert!(w.contains("WARNING: No blkio weight support"), "{w}");
        // and a weight asked for is dropped with Docker's warning
        let r = d.request(
            "POST",
            "/containers/create",
            Some(br#"{"Image":"bb","HostConfig":{"BlkioWeight":300}}"#),
        );
        assert_eq!(r.status, 201);
        assert!(r.text().contains("Block I/O weight"), "{}", r.text());
        let id = r.json()["Id"].as_str().unwrap().to_string();
        ok(d.berth(&["rm", &id]));
    }
}

/// Where the host has its cgroup v2 hierarchy mounted (`/sys/fs/cgroup/unified` on a
/// hybrid machine, `/sys/fs/cgroup` on a v2 one).
fn host_v2_mount() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()?
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == "cgroup2")
        .map(|f| PathBuf::from(f[1]))
}

/// cgroup v2 for real on a hybrid machine: berthd runs in a mount namespace of its own
/// where /sys/fs/cgroup is the cgroup2 hierarchy, which holds the controllers v1 does
/// not (here only hugetlb) and v2's own features (freezing, cpu.stat, cgroup.kill).
/// So containers get v2 cgroups, pause freezes them through `cgroup.freeze`, stats read
/// v2 files, and limits for controllers v2 lacks here are refused or dropped with
/// Docker's words — or, where v2 has them, reach the v2 files.
#[test]
fn cgroup_v2_for_real_in_a_private_mount_namespace() {
    if skip_unless_root("cgroup_v2_for_real_in_a_private_mount_namespace") {
        return;
    }
    let Some(v2) = host_v2_mount() else {
        eprintln!("skipping: no cgroup2 hierarchy on this machine");
        return;
    };
    let controllers = read(&v2.join("cgroup.controllers"));
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut d = Daemon {
        socket: dir.path().join("b.sock"),
        dir,
        child: None,
        extra_args: Vec::new(),
        wrapper: [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$@\"",
            "sh",
        ]
        .map(String::from)
        .to_vec(),
        counted: false,
        slot: next_slot(),
    };
    d.spawn();
    d.import(&busybox_tar(), "bb:latest");
    for bin in clis() {
        let info = d.cli(&bin, &["info"]);
        let text = stdout(&info) + &stderr(&info);
        assert!(text.contains("Cgroup Version: 2"), "{bin}: {text}");
        assert_eq!(
            text.contains("WARNING: No memory limit support"),
            !has("memory"),
            "{bin}: {text}"
        );
        assert_eq!(
            text.contains("WARNING: No pids limit support"),
            !has("pids"),
            "{bin}: {text}"
        );
    }
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "v2",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "while :; do :; done",
    ]));
    let id = full_id(&d, "v2");
    let pid = d.get_json("/containers/v2/json")["State"]["Pid"]
        .as_i64()
        .unwrap();
    let cg = read(std::path::Path::new(&format!("/proc/{pid}/cgroup")));
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    assert_eq!(rel, format!("berth/{}", &id[..16]), "{cg}");
    let cgdir = v2.join(&rel);
    assert!(read(&cgdir.join("cgroup.procs")).contains(&pid.to_string()));
    // stats from cpu.stat: the busy loop shows
    std::thread::sleep(Duration::from_millis(300));
    let s = d.get_json("/containers/v2/stats?stream=false");
    assert!(
        s["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{s}"
    );
    for bin in clis() {
        ok(d.cli(&bin, &["pause", "v2"]));
        assert!(read(&cgdir.join("cgroup.events")).contains("frozen 1"));
        let st = ok(d.cli(&bin, &["ps", "--format", "{{.Status}}"]));
        assert!(st.contains("(Paused)"), "{bin}: {st}");
        ok(d.cli(&bin, &["unpause", "v2"]));
        assert!(read(&cgdir.join("cgroup.events")).contains("frozen 0"));
    }
    // limits: to the v2 files where the controller is here, else Docker's refusal or
    // warning
    for bin in clis() {
        let out = d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "-m",
                "64m",
                "bb",
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory.max 2>/dev/null || echo none",
            ],
        );
        if has("memory") {
            assert_eq!(ok(out).trim(), "67108864", "{bin}");
        } else {
            assert!(out.status.success(), "{bin}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("Your kernel does not support memory limit capabilities or the cgroup is not mounted. Limitation discarded."),
                "{bin}: {}",
                stderr(&out)
            );
        }
        if !has("cpu") {
            assert_refused(
                &d,
                &bin,
                &["run", "--rm"],
                &["--cpus", "1"],
                125,
                "NanoCPUs can not be set, as your kernel does not support CPU CFS scheduler or the cgroup is not mounted",
            );
        }
    }
    // the container's own cgroup is the root of what it sees (its cgroup namespace,
    // Docker's default on v2), read-only
    for bin in clis() {
        let out = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--pids-limit",
                "20",
                "bb",
                "sh",
                "-c",
                "cat /proc/self/cgroup; ls /sys/fs/cgroup; cat /sys/fs/cgroup/pids.max 2>/dev/null; mkdir /sys/fs/cgroup/x 2>&1; true",
            ],
        ));
        // (the kernel lists the v1 hierarchies it also has on this hybrid machine)
        assert!(out.lines().any(|l| l == "0::/"), "{bin}: {out}");
        assert!(out.contains("cgroup.procs"), "{bin}: {out}");
        assert!(
            !out.contains("\nberth\n"),
            "{bin}: the host's tree shows: {out}"
        );
        if has("pids") {
            assert!(out.contains("\n20\n"), "{bin}: {out}");
        }
        assert!(out.contains("Read-only file system"), "{bin}: {out}");
        let hc = d.get_json("/containers/v2/json")["HostConfig"].clone();
        assert_eq!(hc["CgroupnsMode"], "private");
    }
    ok(d.berth(&["rm", "-f", "v2"]));
    for _ in 0..100 {
        if !cgdir.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!cgdir.exists(), "the container's v2 cgroup is removed");
    d.stop();
}
