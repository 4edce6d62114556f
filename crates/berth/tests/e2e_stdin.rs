#![allow(clippy::unwrap_used)]
//! A container's input through the docker CLI and berth's: more input than a pipe holds
//! sent before the container runs, input the process stops reading, a client that goes
//! away; and `rm -f` of a container whose shim no longer answers. Each ends, and leaves
//! no shim, network namespace or cgroup behind.

mod common;
use common::*;
use std::io::Write;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cli ARGS` against `d` with `input` on its stdin; fails the test (killing the
/// client) if it has not ended within `limit`.
fn run_timed(d: &Daemon, cli: &str, args: &[&str], input: &[u8], limit: Duration) -> Output {
    let mut child = d
        .command_cli(cli)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let data = input.to_vec();
    // a writer that cannot finish (the client stopped reading) ends with the client
    std::thread::spawn(move || {
        let _ = w.write_all(&data);
    });
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) on the client this test started
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            panic!("{cli} {args:?} did not end within {limit:?}");
        }
    }
}

/// The container's `State` (null while it does not exist yet).
fn status(d: &Daemon, name: &str) -> serde_json::Value {
    let r = d.request("GET", &format!("/containers/{name}/json"), None);
    match r.status {
        200 => r.json()["State"].clone(),
        _ => serde_json::Value::Null,
    }
}

/// The container's cgroup directories still on the machine.
fn cgroups_of(id: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("berth").join(&id[..16]))
        .chain([std::path::Path::new("/sys/fs/cgroup/berth").join(&id[..16])])
        .filter(|p| p.is_dir())
        .collect()
}

/// Mounts left under the daemon's directory (pinned network namespaces, rootfs).
fn mounts_of(d: &Daemon) -> Vec<String> {
    let dir = d.data_root().parent().unwrap().display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Removes every container with `rm -f` and checks nothing of them is left.
fn remove_all_and_check(d: &Daemon, cli: &str) {
    let list = d.get_json("/containers/json?all=1");
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Id"].as_str().unwrap().to_string())
        .collect();
    for id in &ids {
        ok(d.cli(cli, &["rm", "-f", id]));
    }
    d.assert_no_shims();
    for id in &ids {
        for _ in 0..100 {
            if cgroups_of(id).is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(cgroups_of(id), Vec::<std::path::PathBuf>::new(), "{cli}");
    }
    assert_eq!(mounts_of(d), Vec::<String>::new(), "{cli}");
}

#[test]
fn large_input_early_close_and_a_client_that_goes() {
    let Some(d) = daemon_with_busybox("large_input_early_close_and_a_client_that_goes") else {
        return;
    };
    let limit = Duration::from_secs(60);
    let data: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let big: Vec<u8> = data.iter().cycle().take(4_000_000).copied().collect();
    for cli in clis() {
        // 400 kB, sent as soon as the client is attached, before the container runs
        // (on the default bridge network, which takes longer to set up)
        let out = run_timed(
            &d,
            &cli,
            &["run", "-i", "bb", "sh", "-c", "wc -c"],
            &data,
            limit,
        );
        assert_eq!(ok(out).trim(), "400000", "{cli}");
        // and back, unchanged
        let out = run_timed(
            &d,
            &cli,
            &["run", "--rm", "-i", "--network", "none", "bb", "cat"],
            &big,
            limit,
        );
        assert!(out.status.success(), "{cli}: {}", stderr(&out));
        assert_eq!(out.stdout.len(), big.len(), "{cli}");
        assert!(
            out.stdout == big,
            "{cli}: the output differs from the input"
        );
        // a process that stops reading: it ends, and so does the client, with its code
        let out = run_timed(
            &d,
            &cli,
            &[
                "run",
                "-i",
                "bb",
                "sh",
                "-c",
                "head -c 10 >/dev/null; echo early; exit 3",
            ],
            &big,
            limit,
        );
        assert_eq!(stdout(&out), "early\n", "{cli}: {}", stderr(&out));
        assert_eq!(out.status.code(), Some(3), "{cli}: {}", stderr(&out));
        // exec takes large input the same way
        ok(d.cli(
            &cli,
            &[
                "run",
                "-d",
                "--name",
                "ex",
                "--network",
                "none",
                "bb",
                "sleep",
                "300",
            ],
        ));
        let out = run_timed(&d, &cli, &["exec", "-i", "ex", "wc", "-c"], &data, limit);
        assert_eq!(ok(out).trim(), "400000", "{cli}");
        ok(d.cli(&cli, &["rm", "-f", "ex"]));

        // a client that goes away: the container's input ends with it, so it exits
        let mut child = d
            .command_cli(&cli)
            .args([
                "run",
                "-i",
                "--name",
                "gone",
                "bb",
                "sh",
                "-c",
                "cat >/dev/null; echo done",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut w = child.stdin.take().unwrap();
        w.write_all(&data[..1000]).unwrap();
        let start = Instant::now();
        while status(&d, "gone")["Running"] != true {
            assert!(
                start.elapsed() < limit,
                "{cli}: the container did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let start = Instant::now();
        while status(&d, "gone")["Status"] != "exited" {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{cli}: the container's input did not end with its client"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(status(&d, "gone")["ExitCode"], 0, "{cli}");
        drop(w);
        remove_all_and_check(&d, &cli);
    }
}

#[test]
fn rm_force_ends_a_shim_that_does_not_answer() {
    let Some(d) = daemon_with_busybox("rm_force_ends_a_shim_that_does_not_answer") else {
        return;
    };
    for cli in clis() {
        ok(d.cli(
            &cli,
            &["run", "-d", "--name", "stuck", "bb", "sleep", "300"],
        ));
        let id = d.get_json("/containers/stuck/json")["Id"]
            .as_str()
            .unwrap()
            .to_string();
        let shims = d.shims();
        let (pid, _) = shims
            .iter()
            .find(|(_, cmd)| cmd.contains(&id[..16]))
            .expect("the container's shim");
        // SAFETY: kill(2) on this test's own shim process
        unsafe {
            libc::kill(*pid, libc::SIGSTOP);
        }
        let out = run_timed(
            &d,
            &cli,
            &["rm", "-f", "stuck"],
            b"",
            Duration::from_secs(30),
        );
        ok(out);
        assert_eq!(d.request("GET", "/containers/stuck/json", None).status, 404);
        remove_all_and_check(&d, &cli);
    }
}
