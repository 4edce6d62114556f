#![allow(clippy::unwrap_used)]
//! The shim on its own: a busybox image from the store, its layer mounted with overlayfs,
//! run by berth-shim on the built-in runtime; output framed to an attached client and
//! in the json-file log, the exit code to waiters and to the exit file, and nothing left
//! behind (mounts, cgroups, runtime state).

mod common;
use berth_runtime::spec::{self, RunSpec};
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn shim_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth-shim")
}

struct Mounted(PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
        // the parent cgroups, once no container is left in them
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir(e.path().join("berth"));
            }
        }
        let _ = std::fs::remove_dir("/sys/fs/cgroup/berth");
    }
}

/// Mounts the image's layers as a rootfs with a fresh upper dir.
fn rootfs(d: &Daemon, image: &str, at: &Path) -> Mounted {
    let img = d.get_json(&format!("/images/{image}/json"));
    let lower = img["GraphDriver"]["Data"]["UpperDir"]
        .as_str()
        .unwrap()
        .to_string();
    let (upper, work, merged) = (at.join("upper"), at.join("work"), at.join("rootfs"));
    for p in [&upper, &work, &merged] {
        std::fs::create_dir_all(p).unwrap();
    }
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let data = std::ffi::CString::new(opts).unwrap();
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .unwrap();
    Mounted(merged)
}

/// Writes `bundle/config.json` for a container running `args` on `rootfs`.
fn write_bundle(
    dir: &Path,
    id: &str,
    rootfs: &Path,
    args: Vec<String>,
    env: Vec<String>,
    tty: bool,
) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let r = RunSpec {
        id: id.to_string(),
        args,
        env,
        cwd: "/".into(),
        hostname: if tty { "tty".into() } else { "boxhost".into() },
        tty,
        rootfs: rootfs.to_path_buf(),
        resources: serde_json::json!({}),
        shm_size: 64 << 20,
        cgroups_path: format!("/berth/{id}"),
        caps: spec::DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    };
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec::build(&r)).unwrap(),
    )
    .unwrap();
    bundle
}

struct Shim {
    state: PathBuf,
}

impl Shim {
    fn spawn(id: &str, bundle: &Path, state: &Path, log: &Path, tty: bool) -> (Shim, String) {
        let (r, w) = rustix::pipe::pipe().unwrap();
        let mut c = Command::new(shim_bin());
        c.args(["--id", id, "--bundle"])
            .arg(bundle)
            .arg("--state")
            .arg(state)
            .arg("--log")
            .arg(log)
            .arg("--runtime")
            .arg(env!("CARGO_BIN_EXE_berth-runtime"));
        c.args(["--ready-fd", &w.as_raw_fd().to_string()]);
        if tty {
            c.arg("--tty");
        }
        let st = c.status().unwrap();
        assert!(
            st.success(),
            "the shim's first process exits at once with success"
        );
        drop(w);
        let mut line = String::new();
        BufReader::new(std::fs::File::from(r))
            .read_line(&mut line)
            .unwrap();
        (
            Shim {
                state: state.to_path_buf(),
            },
            line,
        )
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(self.state.join("shim.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    fn call(&self, cmd: &str) -> (UnixStream, String) {
        let mut s = self.connect();
        writeln!(s, "{cmd}").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        (s, line)
    }
}

fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            let p = e.path().join("berth").join(id);
            if p.exists() {
                found.push(p);
            }
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/berth").join(id);
    if v2.exists() {
        found.push(v2);
    }
    found
}

/// Reads Docker frames until EOF: (stdout, stderr).
fn read_frames(mut s: UnixStream) -> (Vec<u8>, Vec<u8>) {
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut p = &all[..];
    while p.len() >= 8 {
        let n = u32::from_be_bytes([p[4], p[5], p[6], p[7]]) as usize;
        let data = &p[8..8 + n];
        if p[0] == 2 {
            err.extend_from_slice(data)
        } else {
            out.extend_from_slice(data)
        }
        p = &p[8 + n..];
    }
    (out, err)
}

#[test]
fn shim_runs_a_container_on_the_builtin_runtime() {
    if skip_unless_root("shim_runs_a_container_on_the_builtin_runtime") {
        return;
    }
    let d = Daemon::start_with(&["--storage-driver", "overlay2"]);
    d.import(&busybox_tar(), "bb:latest");
    let dir = tempfile::Builder::new()
        .prefix("berth-shim-")
        .tempdir_in("/tmp")
        .unwrap();
    let id = format!("shimtest{}", std::process::id());
    let root = rootfs(&d, "bb:latest", dir.path());
    let bundle = write_bundle(
        dir.path(),
        &id,
        &root.0,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo hello; echo oops >&2; hostname; exit 3".into(),
        ],
        vec!["PATH=/bin".into()],
        false,
    );
    let state = dir.path().join("state");
    let log = dir.path().join("ctr-json.log");
    let (shim, ready) = Shim::spawn(&id, &bundle, &state, &log, false);
    assert!(ready.starts_with("ok "), "shim: {ready}");
    assert!(!cgroup_dirs(&id).is_empty(), "the container has a cgroup");

    let (attach, ok_line) = shim.call("attach stdout stderr");
    assert_eq!(ok_line, "ok\n");
    let mut waiter = shim.connect();
    writeln!(waiter, "wait").unwrap();
    let (_s, started) = shim.call("start");
    assert!(started.starts_with("ok "), "{started}");
    let mut exit = String::new();
    BufReader::new(waiter.try_clone().unwrap())
        .read_line(&mut exit)
        .unwrap();
    assert_eq!(exit, "exit 3\n");
    let (out, err) = read_frames(attach);
    assert_eq!(String::from_utf8_lossy(&out), "hello\nboxhost\n");
    assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    let entries = berth_runtime::logs::read_entries(&log).unwrap();
    let lines: Vec<(String, String)> = entries
        .iter()
        .map(|e| (e.stream.clone(), e.log.clone()))
        .collect();
    assert!(
        lines.contains(&("stdout".into(), "hello\n".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "oops\n".into())),
        "{lines:?}"
    );
    assert_eq!(berth_runtime::shim::read_exit_file(&state).unwrap().0, 3);
    // the shim cleaned up after itself, and then let go of its lock
    assert!(!state.join("shim.sock").exists());
    drop(berth_runtime::shim::lock_state(&state).expect("the shim ends"));
    assert!(
        !state.join("rt").join(&id).exists(),
        "runtime state deleted"
    );
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroups removed: {:?}",
        cgroup_dirs(&id)
    );
    drop(waiter.flush());
    drop(root);
}

#[test]
fn shim_gives_a_tty_and_takes_signals() {
    if skip_unless_root("shim_gives_a_tty_and_takes_signals") {
        return;
    }
    let d = Daemon::start_with(&["--storage-driver", "overlay2"]);
    d.import(&busybox_tar(), "bb:latest");
    let dir = tempfile::Builder::new()
        .prefix("berth-shim-")
        .tempdir_in("/tmp")
        .unwrap();
    let id = format!("shimtty{}", std::process::id());
    let root = rootfs(&d, "bb:latest", dir.path());
    let bundle = write_bundle(
        dir.path(),
        &id,
        &root.0,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "[ -t 1 ] && echo tty; stty size 2>/dev/null || true; sleep 60".into(),
        ],
        vec!["PATH=/bin".into(), "TERM=xterm".into()],
        true,
    );
    let state = dir.path().join("state");
    let log = dir.path().join("ctr-json.log");
    let (shim, ready) = Shim::spawn(&id, &bundle, &state, &log, true);
    assert!(ready.starts_with("ok "), "shim: {ready}");
    let (mut attach, _) = shim.call("attach stdout stderr");
    let (_r, resized) = shim.call("resize 30 100");
    assert_eq!(resized, "ok\n");
    let (_s, started) = shim.call("start");
    assert!(started.starts_with("ok "), "{started}");
    // raw output, with the pty's \r\n
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains("30 100") {
        let n = attach.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "output ended early: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        String::from_utf8_lossy(&got).starts_with("tty\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let mut waiter = shim.connect();
    writeln!(waiter, "wait").unwrap();
    let (_k, killed) = shim.call("kill 9");
    assert_eq!(killed, "ok\n");
    let mut exit = String::new();
    BufReader::new(waiter).read_line(&mut exit).unwrap();
    assert_eq!(exit, "exit 137\n");
    for _ in 0..100 {
        if cgroup_dirs(&id).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(cgroup_dirs(&id).is_empty());
    drop(root);
}
