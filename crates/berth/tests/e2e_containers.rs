#![allow(clippy::unwrap_used)]
//! Containers through the real docker CLI and the API: run (attached, detached, with
//! stdin), logs, ps, stop, wait, inspect, rm; Docker's exit codes; errors for bad input;
//! and nothing left behind.

mod common;
use common::*;
use std::path::Path;

fn docker_ready(d: &Daemon) -> bool {
    if !have("docker") {
        eprintln!("skipping: the docker CLI is not installed");
        return false;
    }
    d.import(&busybox_tar(), "bb:latest");
    true
}

fn leftovers(d: &Daemon, id: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let root = d.data_root().display().to_string();
    for m in mounts
        .lines()
        .filter(|l| l.contains(&root) && l.contains(id))
    {
        found.push(format!("mount {m}"));
    }
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            if e.path().join("berth").join(&id[..16]).exists() {
                found.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    let procs = std::process::Command::new("pgrep")
        .args(["-f", &format!("berth-shim --id {id}")])
        .output()
        .unwrap();
    if !procs.stdout.is_empty() {
        found.push(format!("shim {}", stdout(&procs)));
    }
    if d.data_root().join("containers").join(id).exists() {
        found.push("container directory".into());
    }
    found
}

fn wait_gone(d: &Daemon, id: &str) -> Vec<String> {
    for _ in 0..100 {
        if leftovers(d, id).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    leftovers(d, id)
}

/// `docker run` with `rt` (runtime flags) before the image: attached output, exit codes,
/// env/workdir/user/hostname, stdin, entrypoint, --rm, and a detached stop/wait/rm.
fn attached_runs(d: &Daemon, rt: &[&str]) {
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut all = vec!["run"];
        all.extend_from_slice(rt);
        all.extend_from_slice(args);
        d.docker_stdin(&all, stdin)
    };
    let o = run(&["--rm", "bb", "echo", "hello"], None);
    assert_eq!(stdout(&o), "hello\n", "{rt:?}: {}", stderr(&o));
    assert!(o.status.success());
    let o = run(
        &["--rm", "bb", "sh", "-c", "echo out; echo err >&2; exit 3"],
        None,
    );
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err\n"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(3));
    let o = run(&["--rm", "bb", "nosuchcmd"], None);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(stderr(&o).contains("executable file not found in $PATH"));
    let o = run(&["--rm", "bb", "/etc/passwd"], None);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    let o = run(
        &[
            "--rm",
            "-e",
            "FOO=bar",
            "-w",
            "/work/dir",
            "-u",
            "0:0",
            "--hostname",
            "boxy",
            "bb",
            "sh",
            "-c",
            "echo $FOO $(pwd) $(hostname) $(id -u)",
        ],
        None,
    );
    assert_eq!(stdout(&o), "bar /work/dir boxy 0\n");
    let o = run(&["--rm", "-i", "bb", "cat"], Some(b"from stdin\n"));
    assert_eq!(stdout(&o), "from stdin\n");
    let o = run(
        &[
            "--rm",
            "--entrypoint",
            "/bin/echo",
            "bb",
            "via",
            "entrypoint",
        ],
        None,
    );
    assert_eq!(stdout(&o), "via entrypoint\n");
    let id = stdout(&run(&["-d", "bb", "sleep", "300"], None))
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    ok(d.docker(&["stop", "-t", "0", &id]));
    assert_eq!(ok(d.docker(&["wait", &id])), "137\n");
    ok(d.docker(&["rm", &id]));
    assert_eq!(wait_gone(d, &id), Vec::<String>::new());
    // --rm removed them all
    let left = d.get_json("/containers/json?all=1");
    assert_eq!(left.as_array().unwrap().len(), 0, "{left:#}");
}

#[test]
fn docker_run_attached_and_exit_codes() {
    if skip_unless_root("docker_run_attached_and_exit_codes") {
        return;
    }
    let d = Daemon::start();
    if !docker_ready(&d) {
        return;
    }
    attached_runs(&d, &[]);
}

#[test]
fn the_same_lifecycle_on_runc() {
    if skip_unless_root("the_same_lifecycle_on_runc") {
        return;
    }
    if !have("runc") {
        eprintln!("skipping: runc not installed (apt-get install runc)");
        return;
    }
    let d = Daemon::start();
    if !docker_ready(&d) {
        return;
    }
    assert_eq!(d.get_json("/info")["Runtimes"]["runc"]["path"], "runc");
    attached_runs(&d, &["--runtime", "runc"]);
    let o = d.docker(&["run", "--rm", "--runtime", "bogus", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unknown or invalid runtime name: bogus"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn detached_lifecycle_logs_ps_stop_rm() {
    if skip_unless_root("detached_lifecycle_logs_ps_stop_rm") {
        return;
    }
    let d = Daemon::start();
    if !docker_ready(&d) {
        return;
    }
    let id = ok(d.docker(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "bb",
        "sh",
        "-c",
        "echo ready; echo warn >&2; exec sleep 300",
    ]))
    .trim()
    .to_string();
    assert_eq!(id.len(), 64);
    let st = d.get_json(&format!("/containers/{id}/json"));
    assert_eq!(st["State"]["Running"], true);
    assert!(st["State"]["Pid"].as_i64().unwrap() > 0);
    assert_eq!(st["Name"], "/web");
    // logs, split by stream
    let mut logs = String::new();
    for _ in 0..50 {
        logs = stdout(&d.docker(&["logs", "web"]));
        if logs.contains("ready") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(logs, "ready\n");
    let o = d.docker(&["logs", "web"]);
    assert_eq!(stderr(&o), "warn\n");
    let ps = ok(d.docker(&["ps", "--format", "{{.Names}} {{.Status}} {{.Labels}}"]));
    assert!(ps.starts_with("web Up "), "{ps}");
    assert!(ps.contains("tier=front"), "{ps}");
    assert_eq!(
        ok(d.docker(&["ps", "-q", "--filter", "label=tier=front"])).trim(),
        &id[..12]
    );
    // conflicts, as Docker answers them
    let o = d.docker(&["run", "-d", "--name", "web", "bb", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("is already in use"), "{}", stderr(&o));
    let r = d.request("DELETE", &format!("/containers/{id}"), None);
    assert_eq!(r.status, 409);
    let r = d.request("POST", &format!("/containers/{id}/kill?signal=NOPE"), None);
    assert_eq!(r.status, 400);
    let r = d.request("DELETE", "/images/bb:latest", None);
    assert_eq!(r.status, 409, "an image in use stays: {}", r.text());
    // stop: SIGTERM reaches sleep (exec'd as PID 1 has no handler: killed after the timeout)
    ok(d.docker(&["stop", "-t", "1", "web"]));
    assert_eq!(ok(d.docker(&["wait", "web"])), "137\n");
    assert_eq!(
        ok(d.docker(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{.State.ExitCode}}",
            "web"
        ])),
        "exited 137\n"
    );
    let r = d.request("POST", &format!("/containers/{id}/stop"), None);
    assert_eq!(r.status, 304);
    let ps = ok(d.docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]));
    assert!(ps.starts_with("web Exited (137)"), "{ps}");
    // restart, then rm -f of a running container
    ok(d.docker(&["start", "web"]));
    assert_eq!(d.get_json("/containers/web/json")["State"]["Running"], true);
    ok(d.docker(&["rm", "-f", "web"]));
    assert_eq!(d.request("GET", "/containers/web/json", None).status, 404);
    assert_eq!(wait_gone(&d, &id), Vec::<String>::new());
}

#[test]
fn create_validates() {
    if skip_unless_root("create_validates") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","Cmd":["true"]}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["Warnings"], serde_json::json!([]), "{v}");
    let id = v["Id"].as_str().unwrap().to_string();
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"NetworkMode":"nope"}}"#),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "network nope not found");
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"nope","Cmd":["true"]}"#),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "No such image: nope:latest");
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"RestartPolicy":{"Name":"sometimes"}}}"#),
    );
    assert_eq!(r.status, 400);
    let r = d.request("POST", "/containers/create", Some(b"{not json"));
    assert_eq!(r.status, 400);
    let r = d.request(
        "POST",
        "/containers/create?name=bad%20name",
        Some(br#"{"Image":"bb"}"#),
    );
    assert_eq!(r.status, 400);
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"NetworkMode":"none"}}"#),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["Warnings"], serde_json::json!([]));
    // a created container starts and its wait returns its code
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), None)
            .status,
        204
    );
    let w = d.request("POST", &format!("/containers/{id}/wait"), None);
    assert_eq!(w.json()["StatusCode"], 0);
    assert_eq!(
        d.request("POST", &format!("/containers/{id}/start"), None)
            .status,
        204
    );
    assert_eq!(
        d.request("DELETE", &format!("/containers/{id}?force=1"), None)
            .status,
        204
    );
    assert!(!Path::new(&d.data_root().join("containers").join(&id)).exists());
}

#[test]
fn berth_cli_runs_containers_like_docker() {
    if skip_unless_root("berth_cli_runs_containers_like_docker") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let o = d.berth(&["run", "--rm", "--network", "none", "bb", "echo", "hello"]);
    assert_eq!(stdout(&o), "hello\n");
    assert!(o.status.success());
    let o = d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        (stdout(&o).as_str(), stderr(&o).as_str(), o.status.code()),
        ("out\n", "err\n", Some(3))
    );
    assert_eq!(
        d.berth(&["run", "--rm", "bb", "nosuchcmd"]).status.code(),
        Some(127)
    );
    assert_eq!(
        d.berth(&["run", "--rm", "bb", "/etc/passwd"]).status.code(),
        Some(126)
    );
    assert_eq!(
        d.berth(&["run", "--rm", "nosuchimage"]).status.code(),
        Some(125)
    );
    let o = d.berth_stdin(
        &["run", "--rm", "-i", "--network", "none", "bb", "cat"],
        Some(b"piped\n"),
    );
    assert_eq!(stdout(&o), "piped\n");
    let id = ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "echo up; exec sleep 300",
    ]))
    .trim()
    .to_string();
    assert_eq!(id.len(), 64);
    let ps = ok(d.berth(&["ps", "--format", "{{.Names}} {{.State}}"]));
    assert_eq!(ps, "bg running\n");
    if have("docker") {
        // the same table through both clients
        let cols = "{{.ID}} {{.Image}} {{.Command}} {{.Names}}";
        assert_eq!(
            ok(d.berth(&["ps", "-a", "--format", cols])),
            ok(d.docker(&["ps", "-a", "--format", cols]))
        );
        assert_eq!(ok(d.berth(&["ps", "-q"])), ok(d.docker(&["ps", "-q"])));
    }
    for _ in 0..50 {
        if ok(d.berth(&["logs", "bg"])) == "up\n" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(ok(d.berth(&["logs", "bg"])), "up\n");
    // sleep as PID 1 ignores SIGTERM (no handler), as under Docker; SIGKILL ends it
    assert_eq!(ok(d.berth(&["kill", "bg"])), "bg\n");
    assert_eq!(ok(d.berth(&["wait", "bg"])), "137\n");
    assert_eq!(ok(d.berth(&["rename", "bg", "bg2"])), "");
    assert_eq!(ok(d.berth(&["rm", "bg2"])), "bg2\n");
    let o = d.berth(&["rm", "bg2"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "Error response from daemon: No such container: bg2\n"
    );
    assert_eq!(wait_gone(&d, &id), Vec::<String>::new());
}

#[test]
fn run_it_gives_an_interactive_terminal() {
    if skip_unless_root("run_it_gives_an_interactive_terminal") {
        return;
    }
    if !have("tmux") {
        eprintln!("skipping: tmux not installed");
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    for cli in clis() {
        let s = Terminal::open(&d, &cli, "run -it --rm --network none bb sh").finish("exit 7");
        assert!(s.contains("42 30 100"), "{cli}: {s}");
        assert!(s.contains("EXITED=7"), "{cli}: {s}");
    }
}

#[test]
fn live_restore_keeps_containers_across_a_daemon_restart() {
    if skip_unless_root("live_restore_keeps_containers_across_a_daemon_restart") {
        return;
    }
    let mut d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let keep = ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "echo before; exec sleep 300",
    ]))
    .trim()
    .to_string();
    let gone = ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "gone",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "sleep 2; exit 9",
    ]))
    .trim()
    .to_string();
    let pid = d.get_json("/containers/keep/json")["State"]["Pid"]
        .as_i64()
        .unwrap();
    // the daemon stops; the containers do not
    assert!(d.stop().unwrap().success());
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container outlived berthd"
    );
    // while berthd is down, `gone` exits
    std::thread::sleep(std::time::Duration::from_millis(2500));
    d.spawn();
    let k = d.get_json("/containers/keep/json");
    assert_eq!(k["State"]["Status"], "running");
    assert_eq!(k["State"]["Pid"].as_i64().unwrap(), pid);
    assert_eq!(ok(d.berth(&["logs", "keep"])), "before\n");
    let g = d.get_json("/containers/gone/json");
    assert_eq!(g["State"]["Status"], "exited");
    assert_eq!(
        g["State"]["ExitCode"], 9,
        "the real exit code, recorded by the shim"
    );
    // exec and top work on the restored container
    assert_eq!(
        ok(d.berth(&["exec", "keep", "echo", "still here"])),
        "still here\n"
    );
    assert!(ok(d.berth(&["top", "keep"])).contains("sleep 300"));
    // stop and wait work on the restored container
    ok(d.berth(&["stop", "-t", "0", "keep"]));
    assert_eq!(ok(d.berth(&["wait", "keep"])), "137\n");
    ok(d.berth(&["rm", "keep", "gone"]));
    assert_eq!(wait_gone(&d, &keep), Vec::<String>::new());
    assert_eq!(wait_gone(&d, &gone), Vec::<String>::new());
}

/// `system prune` (with and without `--volumes`, `-a`) removes what docker's does and
/// says so in its words; both CLIs print the same report.
#[test]
fn system_prune_removes_what_is_unused() {
    if skip_unless_root("system_prune_removes_what_is_unused") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    // HEX digests and sizes aside, what a report says
    let shape = |s: &str| -> String {
        s.lines()
            .map(|l| {
                let l = l.trim_end();
                if l.len() >= 64 && l.chars().rev().take(64).all(|c| c.is_ascii_hexdigit()) {
                    format!("{}HEX", &l[..l.len() - 64])
                } else if let Some(rest) = l.strip_prefix("Total reclaimed space: ") {
                    assert!(rest.ends_with('B'), "{l}");
                    "Total reclaimed space: SIZE".into()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut reports = Vec::new();
    for cli in clis() {
        // unused: a stopped container (with an anonymous volume), a network, a dangling
        // image; in use: a running container, its network, a tagged image
        ok(d.cli(&cli, &["network", "create", "idle-net"]));
        ok(d.cli(&cli, &["network", "create", "busy-net"]));
        ok(d.cli(
            &cli,
            &[
                "create",
                "--name",
                "stopped",
                "-v",
                "/anon",
                "--network",
                "none",
                "bb",
                "true",
            ],
        ));
        ok(d.cli(
            &cli,
            &[
                "run",
                "-d",
                "--name",
                "running",
                "--network",
                "busy-net",
                "bb",
                "sleep",
                "60",
            ],
        ));
        // the first of two builds under one tag is left dangling
        let ctx = d.dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        for n in 1..=2 {
            std::fs::write(
                ctx.join("Dockerfile"),
                format!("FROM bb\nRUN echo {cli:?} {n} > /made\n"),
            )
            .unwrap();
            ok(d.cli(
                &cli,
                &["build", "-q", "-t", "made:last", ctx.to_str().unwrap()],
            ));
        }
        let named = ok(d.cli(&cli, &["volume", "create", "named"]));
        assert_eq!(named.trim(), "named");

        // without --volumes the anonymous volume stays
        let out = d.cli(&cli, &["system", "prune", "-f"]);
        let text = ok(out);
        assert!(text.starts_with("Deleted Containers:\n"), "{cli}: {text}");
        assert!(
            text.contains("\nDeleted Networks:\nidle-net\n\n"),
            "{cli}: {text}"
        );
        assert!(
            text.contains("\nDeleted Images:\ndeleted: sha256:"),
            "{cli}: {text}"
        );
        assert!(
            text.ends_with('\n') && text.contains("\nTotal reclaimed space: "),
            "{cli}: {text}"
        );
        reports.push(shape(&text));
        let vols = d.get_json("/volumes")["Volumes"].as_array().unwrap().len();
        assert_eq!(vols, 2, "{cli}");
        let ps = ok(d.cli(&cli, &["ps", "-a", "--format", "{{.Names}}"]));
        assert_eq!(ps.trim(), "running");
        let nets = ok(d.cli(&cli, &["network", "ls", "--format", "{{.Name}}"]));
        assert!(
            nets.contains("busy-net") && !nets.contains("idle-net"),
            "{nets}"
        );
        assert!(ok(d.cli(&cli, &["images", "-q", "bb"])).lines().count() == 1);

        // a second prune finds nothing
        let again = ok(d.cli(&cli, &["system", "prune", "-f"]));
        assert_eq!(again, "Total reclaimed space: 0B\n", "{cli}");

        // --volumes takes the anonymous volume of a removed container, never a named one
        ok(d.cli(&cli, &["rm", "-f", "running"]));
        ok(d.cli(
            &cli,
            &[
                "create",
                "--name",
                "stopped2",
                "-v",
                "/anon",
                "--network",
                "none",
                "bb",
                "true",
            ],
        ));
        let text = ok(d.cli(&cli, &["system", "prune", "-f", "--volumes"]));
        assert!(text.contains("Deleted Volumes:\n"), "{cli}: {text}");
        assert!(
            text.contains("\nDeleted Networks:\nbusy-net\n"),
            "{cli}: {text}"
        );
        let names: Vec<String> = d.get_json("/volumes")["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["Name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["named"], "{cli}");
        ok(d.cli(&cli, &["volume", "rm", "named"]));

        // the question, and "until" refused with --volumes
        let until = d.cli(
            &cli,
            &["system", "prune", "-f", "--volumes", "--filter", "until=1h"],
        );
        assert_eq!(until.status.code(), Some(1), "{cli}");
        assert!(
            stderr(&until)
                .contains("ERROR: The \"until\" filter is not supported with \"--volumes\""),
            "{cli}: {}",
            stderr(&until)
        );
        let asked = if cli == "docker" {
            d.docker_stdin(&["system", "prune", "-a"], Some(b"n\n"))
        } else {
            d.berth_stdin(&["system", "prune", "-a"], Some(b"n\n"))
        };
        assert!(asked.status.success(), "{cli}");
        let q = format!("{}{}", stdout(&asked), stderr(&asked));
        assert!(
            q.contains("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all images without at least one container associated to them\n  - all build cache\n\nAre you sure you want to continue? [y/N]"),
            "{cli}: {q}"
        );
        // answered no: the image is still there
        assert!(ok(d.cli(&cli, &["images", "-q", "bb"])).lines().count() == 1);
        ok(d.cli(&cli, &["rmi", "made:last"]));
    }
    if reports.len() == 2 {
        assert_eq!(
            reports[0], reports[1],
            "berth and docker report differently"
        );
    }
}

/// `container SUBCOMMAND` for every container command, as docker has them.
#[test]
fn container_subcommands() {
    let Some(d) = daemon_with_busybox("container_subcommands") else {
        return;
    };
    let b = |args: &[&str]| d.berth(args);
    assert_eq!(
        ok(b(&[
            "container",
            "run",
            "--rm",
            "--network",
            "none",
            "bb",
            "echo",
            "hi"
        ])),
        "hi\n"
    );
    ok(b(&[
        "container",
        "create",
        "--name",
        "sub",
        "-p",
        "127.0.0.1::80",
        "bb",
        "sh",
        "-c",
        "echo out; sleep 60",
    ]));
    ok(b(&["container", "start", "sub"]));
    assert_eq!(ok(b(&["container", "logs", "sub"])), "out\n");
    assert!(ok(b(&["container", "port", "sub"])).starts_with("80/tcp -> 127.0.0.1:"));
    assert_eq!(
        ok(b(&[
            "container",
            "inspect",
            "-f",
            "{{.State.Running}}",
            "sub"
        ])),
        "true\n"
    );
    ok(b(&["container", "rename", "sub", "sub2"]));
    ok(b(&["container", "restart", "-t", "0", "sub2"]));
    ok(b(&["container", "kill", "sub2"]));
    assert_eq!(ok(b(&["container", "wait", "sub2"])), "137\n");
    ok(b(&["container", "start", "sub2"]));
    ok(b(&["container", "stop", "-t", "0", "sub2"]));
    assert_eq!(
        ok(b(&["container", "ps", "-a", "--format", "{{.Names}}"])),
        "sub2\n"
    );
    let missing = b(&["container", "inspect", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("No such container: nosuch"),
        "{}",
        stderr(&missing)
    );
    ok(b(&["container", "rm", "sub2"]));
}

/// What berth cannot give is refused rather than dropped: GPUs (no device driver) fail
/// the start with dockerd's words, a writable-layer size limit fails the create.
#[test]
fn gpus_and_storage_limits_are_refused() {
    let Some(d) = daemon_with_busybox("gpus_and_storage_limits_are_refused") else {
        return;
    };
    for cli in clis() {
        let out = d.cli(
            &cli,
            &[
                "run",
                "--name",
                "gpu",
                "--network",
                "none",
                "--gpus",
                "all",
                "bb",
                "true",
            ],
        );
        assert_eq!(out.status.code(), Some(125), "{cli}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("could not select device driver \"\" with capabilities: [[gpu]]"),
            "{cli}: {}",
            stderr(&out)
        );
        let state = d.get_json("/containers/gpu/json");
        assert_eq!(state["State"]["Running"], false);
        assert_eq!(state["HostConfig"]["DeviceRequests"][0]["Count"], -1);
        ok(d.cli(&cli, &["rm", "gpu"]));
        let out = d.cli(
            &cli,
            &[
                "create",
                "--network",
                "none",
                "--storage-opt",
                "size=1G",
                "bb",
                "true",
            ],
        );
        assert!(!out.status.success(), "{cli}");
        assert!(
            stderr(&out).contains("--storage-opt is not supported"),
            "{cli}: {}",
            stderr(&out)
        );
    }
    assert_eq!(d.get_json("/containers/json?all=1"), serde_json::json!([]));
    d.assert_no_shims();
}

/// `run` flags as docker has them, through both CLIs: attaching some streams only,
/// labels from a file, namespaces, an ID file, annotations, OOM score,
/// boolean flags given a value; an unknown flag is refused with docker's words.
#[test]
fn run_flags_as_docker_has_them() {
    let Some(d) = daemon_with_busybox("run_flags_as_docker_has_them") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels");
    std::fs::write(&labels, "# team labels\nteam=core\n\nflag\n").unwrap();
    for cli in clis() {
        let n = ["--network", "none"];
        let run = |extra: &[&str], cmd: &[&str]| {
            let mut args = vec!["run", "--rm"];
            args.extend(n);
            args.extend(extra);
            args.push("bb");
            args.extend(cmd);
            d.cli(&cli, &args)
        };
        // -a: only the streams asked for
        let out = run(&["-a", "stderr"], &["sh", "-c", "echo out; echo err >&2"]);
        assert_eq!(
            (stdout(&out).as_str(), stderr(&out).as_str()),
            ("", "err\n"),
            "{cli}"
        );
        let out = d.cli(&cli, &["run", "-d", "-a", "stdout", "bb", "true"]);
        assert_eq!(out.status.code(), Some(1), "{cli}");
        assert!(
            stderr(&out).contains("conflicting options: cannot specify both --attach and --detach"),
            "{cli}: {}",
            stderr(&out)
        );
        // the domain name, in the container's own UTS namespace
        assert_eq!(
            ok(run(
                &["--domainname", "example.test"],
                &["cat", "/proc/sys/kernel/domainname"]
            )),
            "example.test\n",
            "{cli}"
        );
        // a volume driver berthd does not have
        let out = run(
            &["--volume-driver", "nfs-plugin", "-v", "data:/data"],
            &["true"],
        );
        assert_eq!(out.status.code(), Some(125), "{cli}");
        assert!(
            stderr(&out).contains("plugin \"nfs-plugin\" not found"),
            "{cli}: {}",
            stderr(&out)
        );
        // --tty=false, --interactive=true
        assert_eq!(
            ok(run(&["--tty=false", "--interactive=true"], &["echo", "b"])),
            "b\n"
        );
        // namespaces, labels, annotations, OOM score, block IO
        let cid = dir.path().join(format!("cid-{}", cli.len()));
        let id = ok(d.cli(
            &cli,
            &[
                "create",
                "--network",
                "none",
                "--label-file",
                labels.to_str().unwrap(),
                "--label",
                "extra=1",
                "--domainname",
                "example.test",
                "--pid",
                "host",
                "--ipc",
                "private",
                "--uts",
                "host",
                "--cgroupns",
                "private",
                "--annotation",
                "org.example/key=v",
                "--oom-score-adj",
                "300",
                "--cidfile",
                cid.to_str().unwrap(),
                "bb",
                "sh",
                "-c",
                "cat /proc/self/oom_score_adj; ls /proc | grep -c '^[0-9]' ",
            ],
        ));
        let id = id.trim();
        assert_eq!(std::fs::read_to_string(&cid).unwrap(), id, "{cli}");
        let c = d.get_json(&format!("/containers/{id}/json"));
        let hc = &c["HostConfig"];
        assert_eq!(c["Config"]["Labels"]["team"], "core", "{cli}");
        assert_eq!(
            c["Config"]["Labels"]["flag"],
            serde_json::Value::Null,
            "{cli}"
        );
        assert_eq!(c["Config"]["Labels"]["extra"], "1", "{cli}");
        assert_eq!(c["Config"]["Domainname"], "example.test", "{cli}");
        assert_eq!(hc["PidMode"], "host", "{cli}");
        assert_eq!(hc["IpcMode"], "private", "{cli}");
        assert_eq!(hc["UTSMode"], "host", "{cli}");
        assert_eq!(hc["CgroupnsMode"], "private", "{cli}");
        assert_eq!(hc["Annotations"]["org.example/key"], "v", "{cli}");
        assert_eq!(hc["OomScoreAdj"], 300, "{cli}");
        // an ID file is never overwritten
        let again = d.cli(
            &cli,
            &["create", "--cidfile", cid.to_str().unwrap(), "bb", "true"],
        );
        assert!(!again.status.success(), "{cli}");
        assert!(
            stderr(&again).contains("container ID file found"),
            "{cli}: {}",
            stderr(&again)
        );
        // it runs: its OOM score is the one asked for, and it sees the host's processes
        ok(d.cli(&cli, &["start", id]));
        assert_eq!(ok(d.cli(&cli, &["wait", id])), "0\n");
        let logs = ok(d.cli(&cli, &["logs", id]));
        let mut lines = logs.lines();
        assert_eq!(lines.next(), Some("300"), "{cli}: {logs}");
        let procs: u32 = lines.next().unwrap().trim().parse().unwrap();
        assert!(procs > 5, "{cli}: the host's processes are seen: {logs}");
        ok(d.cli(&cli, &["rm", id]));
        // a flag neither knows
        let out = d.cli(&cli, &["run", "--bogus", "bb", "true"]);
        assert_eq!(out.status.code(), Some(125), "{cli}");
        assert!(
            stderr(&out).contains("unknown flag: --bogus"),
            "{cli}: {}",
            stderr(&out)
        );
    }
    // NetworkDisabled (docker-py's network_disabled): the loopback only
    let r = d.request(
        "POST",
        "/containers/create?name=nonet",
        Some(
            br#"{"Image":"bb","Cmd":["sh","-c","grep -c : /proc/net/dev"],"NetworkDisabled":true}"#,
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    ok(d.berth(&["start", "-a", "nonet"]));
    assert_eq!(ok(d.berth(&["logs", "nonet"])), "1\n");
    ok(d.berth(&["rm", "nonet"]));
    assert_eq!(d.get_json("/containers/json?all=1"), serde_json::json!([]));
}

/// `--pid`, `--ipc` and `--uts`: another container's namespaces, or the host's.
#[test]
fn namespaces_shared_with_a_container_or_the_host() {
    let Some(d) = daemon_with_busybox("namespaces_shared_with_a_container_or_the_host") else {
        return;
    };
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--network",
        "none",
        "--ipc",
        "shareable",
        "bb",
        "sleep",
        "300",
    ]));
    let ns = |c: &str, kind: &str| {
        ok(d.berth(&[
            "exec",
            c,
            "busybox",
            "readlink",
            &format!("/proc/self/ns/{kind}"),
        ]))
    };
    for cli in clis() {
        let out = ok(d.cli(
            &cli,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--pid",
                "container:holder",
                "--ipc",
                "container:holder",
                "bb",
                "sh",
                "-c",
                "ps -o comm | grep -c '^sleep'; busybox readlink /proc/self/ns/pid; busybox readlink /proc/self/ns/ipc",
            ],
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "1", "{cli}: the holder's sleep is seen: {out}");
        assert_eq!(lines[1], ns("holder", "pid").trim(), "{cli}");
        assert_eq!(lines[2], ns("holder", "ipc").trim(), "{cli}");
        // the host's UTS namespace: its hostname
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let out = ok(d.cli(
            &cli,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--uts",
                "host",
                "bb",
                "hostname",
            ],
        ));
        assert_eq!(out.trim(), host.trim(), "{cli}");
        // a stopped container has no namespaces to join
        ok(d.cli(&cli, &["create", "--name", "idle", "bb", "true"]));
        let out = d.cli(
            &cli,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--pid",
                "container:idle",
                "bb",
                "true",
            ],
        );
        assert_eq!(out.status.code(), Some(125), "{cli}");
        assert!(
            stderr(&out).contains("cannot join PID of a non running container"),
            "{cli}: {}",
            stderr(&out)
        );
        ok(d.cli(&cli, &["rm", "idle"]));
        let out = d.cli(&cli, &["run", "--rm", "--ipc", "bogus", "bb", "true"]);
        assert_eq!(out.status.code(), Some(125), "{cli}");
    }
    ok(d.berth(&["rm", "-f", "holder"]));
    d.assert_no_shims();
}
