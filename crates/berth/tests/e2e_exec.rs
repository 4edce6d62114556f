#![allow(clippy::unwrap_used)]
//! exec, top and attach: through the real docker CLI, the berth CLI and the API, on the
//! built-in runtime and runc; in a real terminal for `-it` and the detach keys.

mod common;
use common::*;

fn start_box(d: &Daemon, name: &str, rt: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name, "--network", "none"];
    args.extend_from_slice(rt);
    args.extend_from_slice(&["bb", "sleep", "300"]);
    ok(d.berth(&args)).trim().to_string()
}

fn exec_checks(d: &Daemon, cli: &str, name: &str) {
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        if cli == "docker" {
            d.docker_stdin(&all, stdin)
        } else {
            d.berth_stdin(&all, stdin)
        }
    };
    let o = run(&[name, "echo", "hello"], None);
    assert_eq!(stdout(&o), "hello\n", "{cli}: {}", stderr(&o));
    assert!(o.status.success());
    let o = run(&[name, "sh", "-c", "echo out; echo err >&2; exit 3"], None);
    assert_eq!(stdout(&o), "out\n", "{cli}");
    assert!(stderr(&o).contains("err\n"), "{cli}: {}", stderr(&o));
    assert_eq!(o.status.code(), Some(3), "{cli}");
    let o = run(
        &[
            "-u",
            "65534",
            "-w",
            "/tmp/wd",
            "-e",
            "FOO=bar",
            name,
            "sh",
            "-c",
            "echo $(id -u) $(pwd) $FOO",
        ],
        None,
    );
    // the working directory must exist in the container for exec, as with Docker
    assert!(!o.status.success(), "{cli}: {}", stdout(&o));
    let o = run(
        &[
            "-u",
            "65534:65534",
            "-w",
            "/tmp",
            "-e",
            "FOO=bar",
            name,
            "sh",
            "-c",
            "echo $(id -u) $(pwd) $FOO",
        ],
        None,
    );
    assert_eq!(stdout(&o), "65534 /tmp bar\n", "{cli}: {}", stderr(&o));
    let o = run(&["-i", name, "cat"], Some(b"from stdin\n"));
    assert_eq!(stdout(&o), "from stdin\n", "{cli}");
    let o = run(&[name, "nosuchcmd"], None);
    assert_eq!(o.status.code(), Some(127), "{cli}: {}", stdout(&o));
    assert!(
        format!("{}{}", stdout(&o), stderr(&o)).contains("executable file not found in $PATH"),
        "{cli}"
    );
    let o = run(
        &[
            "-d",
            name,
            "sh",
            "-c",
            &format!("echo {cli} > /tmp/detached"),
        ],
        None,
    );
    assert!(o.status.success(), "{cli}: {}", stderr(&o));
    let mut seen = String::new();
    for _ in 0..50 {
        seen = stdout(&run(&[name, "cat", "/tmp/detached"], None));
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(seen, format!("{cli}\n"));
}

#[test]
fn exec_and_top_through_both_clis_and_both_runtimes() {
    if skip_unless_root("exec_and_top_through_both_clis_and_both_runtimes") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let mut runtimes: Vec<&[&str]> = vec![&[]];
    if have("runc") {
        runtimes.push(&["--runtime", "runc"]);
    }
    for (i, rt) in runtimes.iter().enumerate() {
        let name = format!("box{i}");
        start_box(&d, &name, rt);
        exec_checks(&d, "berth", &name);
        if have("docker") {
            exec_checks(&d, "docker", &name);
        }
        // top: the container's processes only, with the client's ps arguments
        let top = ok(d.berth(&["top", &name]));
        assert!(top.starts_with("UID "), "{top}");
        assert!(top.contains("sleep 300"), "{top}");
        assert_eq!(
            top.lines().count(),
            2,
            "only the container's process: {top}"
        );
        if have("docker") {
            // the same table but for the C column (CPU use, which moves between two runs)
            let without_c = |t: &str| -> Vec<Vec<String>> {
                t.lines()
                    .map(|l| {
                        l.split_whitespace()
                            .enumerate()
                            .filter(|(i, _)| *i != 3)
                            .map(|(_, w)| w.to_string())
                            .collect()
                    })
                    .collect()
            };
            assert_eq!(without_c(&ok(d.docker(&["top", &name]))), without_c(&top));
            let o = ok(d.docker(&["top", &name, "-o", "pid,comm"]));
            assert_eq!(o, ok(d.berth(&["top", &name, "-o", "pid,comm"])));
            assert!(o.starts_with("PID "), "{o}");
        }
        ok(d.berth(&["rm", "-f", &name]));
    }
    d.assert_no_shims();
}

#[test]
fn exec_api_inspect_events_and_bad_input() {
    if skip_unless_root("exec_api_inspect_events_and_bad_input") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let id = start_box(&d, "api", &[]);
    let since = chrono_now();
    let r = d.request(
        "POST",
        "/containers/api/exec",
        Some(br#"{"Cmd":["sh","-c","exit 4"],"AttachStdout":true}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let exec_id = r.json()["Id"].as_str().unwrap().to_string();
    let info = d.get_json(&format!("/exec/{exec_id}/json"));
    assert_eq!(info["Running"], false);
    assert_eq!(info["ExitCode"], serde_json::Value::Null);
    assert_eq!(info["ContainerID"], id.as_str());
    assert_eq!(info["ProcessConfig"]["entrypoint"], "sh");
    let r = d.request(
        "POST",
        &format!("/exec/{exec_id}/start"),
        Some(br#"{"Detach":true}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut info = serde_json::Value::Null;
    for _ in 0..100 {
        info = d.get_json(&format!("/exec/{exec_id}/json"));
        if info["ExitCode"].is_i64() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert_eq!(info["ExitCode"], 4);
    assert_eq!(info["Running"], false);
    // started twice → 409; unknown exec → 404; no command → 400
    let r = d.request(
        "POST",
        &format!("/exec/{exec_id}/start"),
        Some(br#"{"Detach":true}"#),
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(d.request("GET", "/exec/nope/json", None).status, 404);
    let r = d.request("POST", "/containers/api/exec", Some(br#"{"Cmd":[]}"#));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("No exec command specified"));
    let r = d.request("POST", "/containers/api/exec", Some(b"{not json"));
    assert_eq!(r.status, 400);
    // the events
    let ev = d.request(
        "GET",
        &format!(
            "/events?since={since}&until={}&filters=%7B%22container%22%3A%5B%22api%22%5D%7D",
            chrono_now() + 1
        ),
        None,
    );
    let text = ev.text();
    assert!(text.contains("\"exec_create: sh -c exit 4\""), "{text}");
    assert!(text.contains("\"exec_start: sh -c exit 4\""), "{text}");
    assert!(text.contains("\"exec_die\""), "{text}");
    assert!(text.contains("\"exitCode\":\"4\""), "{text}");
    // a stopped container refuses exec
    ok(d.berth(&["stop", "-t", "0", "api"]));
    let r = d.request("POST", "/containers/api/exec", Some(br#"{"Cmd":["true"]}"#));
    assert_eq!(r.status, 409);
    assert!(r.text().contains("is not running"), "{}", r.text());
    if have("docker") {
        let o = d.docker(&["exec", "api", "true"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("is not running"), "{}", stderr(&o));
        let o = d.docker(&["top", "api"]);
        assert!(!o.status.success());
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn exec_it_detach_keys_and_attach_in_a_terminal() {
    if skip_unless_root("exec_it_detach_keys_and_attach_in_a_terminal") {
        return;
    }
    if !have("tmux") {
        eprintln!("skipping: tmux not installed");
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    start_box(&d, "term", &[]);
    for (i, cli) in clis().iter().enumerate() {
        // exec -it: a prompt, the window size, the exit code
        let s = Terminal::open(&d, cli, "exec -it term sh").finish("exit 3");
        assert!(s.contains("42 30 100"), "{cli}: {s}");
        assert!(s.contains("EXITED=3"), "{cli}: {s}");
        // run -it, then ctrl-p ctrl-q: the CLI leaves, the container runs on
        let name = format!("detach{i}");
        let t = Terminal::open(
            &d,
            cli,
            &format!("run -it --name {name} --network none bb sh"),
        );
        t.line("echo typed-before-detach");
        t.keys(&["C-p", "C-q"]);
        let s = t.wait_exit(String::new());
        assert!(s.contains("EXITED=0"), "{cli}: {s}");
        let st = d.get_json(&format!("/containers/{name}/json"));
        assert_eq!(st["State"]["Status"], "running", "{cli}");
        // attach to it again and end it from inside
        let t = Terminal::open(&d, cli, &format!("attach {name}"));
        t.line("echo back $((40+2))");
        let screen = t.screen();
        t.line("exit 5");
        let s = t.wait_exit(screen);
        assert!(s.contains("back 42"), "{cli}: {s}");
        assert!(s.contains("EXITED=5"), "{cli}: {s}");
        // custom detach keys
        let t = Terminal::open(&d, cli, "exec -it --detach-keys ctrl-x,x term sh");
        t.keys(&["C-x", "x"]);
        let s = t.wait_exit(String::new());
        // docker's exec reports leaving as an error
        assert!(s.contains("read escape sequence"), "{cli}: {s}");
        assert!(s.contains("EXITED=1"), "{cli}: {s}");
        assert!(d.get_json("/containers/term/json")["State"]["Running"] == true);
    }
    let o = d.berth(&["attach", "--detach-keys", "ctrl-1", "term"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Invalid detach keys"), "{}", stderr(&o));
    let _ = d.berth(&["rm", "-f", "term", "detach0", "detach1"]);
    d.assert_no_shims();
}

/// `--sig-proxy` (the default without a tty): a signal to the CLI reaches the
/// container's process.
#[test]
fn the_cli_proxies_signals_to_the_container() {
    if skip_unless_root("the_cli_proxies_signals_to_the_container") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    for cli in clis() {
        let mut child = std::process::Command::new(&cli)
            .args([
                "-H",
                &d.host(),
                "run",
                "--rm",
                "--network",
                "none",
                "bb",
                "sh",
                "-c",
                "trap 'echo got-term; exit 5' TERM; echo ready; sleep 100 & wait",
            ])
            .env("DOCKER_CONFIG", "/tmp/berth-e2e-docker-config")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).unwrap();
        assert_eq!(&buf, b"ready\n");
        std::thread::sleep(std::time::Duration::from_millis(300));
        // SAFETY: kill(2) on our own child
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(rest, "got-term\n", "{cli}");
        assert_eq!(status.code(), Some(5), "{cli}");
    }
}

/// `exec --privileged` gets every capability, even in a container that dropped them all.
#[test]
fn privileged_exec_gets_every_capability() {
    let Some(d) = daemon_with_busybox("privileged_exec_gets_every_capability") else {
        return;
    };
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "capless",
        "--network",
        "none",
        "--cap-drop",
        "ALL",
        "bb",
        "sleep",
        "300",
    ]));
    let eff = |out: String| -> u64 {
        let hex = out
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        u64::from_str_radix(&hex, 16).unwrap()
    };
    for cli in clis() {
        let plain = ok(d.cli(
            &cli,
            &["exec", "capless", "grep", "CapEff", "/proc/self/status"],
        ));
        assert_eq!(eff(plain), 0, "{cli}");
        let privileged = ok(d.cli(
            &cli,
            &[
                "exec",
                "--privileged",
                "capless",
                "grep",
                "CapEff",
                "/proc/self/status",
            ],
        ));
        // CAP_SYS_ADMIN (21) and CAP_NET_ADMIN (12) among them
        let caps = eff(privileged);
        assert!(
            caps & (1 << 21) != 0 && caps & (1 << 12) != 0,
            "{cli}: {caps:x}"
        );
    }
    ok(d.berth(&["rm", "-f", "capless"]));
    d.assert_no_shims();
}
