#![allow(clippy::unwrap_used)]
//! cp (both ways, running and stopped), diff, export, commit; and Docker's CVE cases for
//! them: a symlink swapped under `cp` (CVE-2018-15664), `cp` never running code from the
//! image (CVE-2019-14271), and no descriptor of berthd reaching a container
//! (CVE-2024-21626).

mod common;
use common::*;
use std::path::Path;

fn run_cli(d: &Daemon, cli: &str, args: &[&str]) -> std::process::Output {
    if cli == "docker" {
        d.docker(args)
    } else {
        d.berth(args)
    }
}

#[test]
fn cp_both_ways_running_and_stopped() {
    if skip_unless_root("cp_both_ways_running_and_stopped") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "fc",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "mkdir -p /data/sub; echo hello > /data/sub/f; ln -s /data/sub/f /data/link; sleep 300",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for cli in clis() {
        let host = tempfile::tempdir().unwrap();
        let h = |p: &str| host.path().join(p);
        let hs = |p: &str| h(p).display().to_string();
        // out: a file, as a new name and into a directory
        ok(run_cli(&d, &cli, &["cp", "fc:/data/sub/f", &hs("f1")]));
        assert_eq!(
            std::fs::read_to_string(h("f1")).unwrap(),
            "hello\n",
            "{cli}"
        );
        ok(run_cli(&d, &cli, &["cp", "fc:/data/sub/f", &hs("")]));
        assert_eq!(std::fs::read_to_string(h("f")).unwrap(), "hello\n", "{cli}");
        // out: a directory, a symlink as a symlink, and followed with -L
        ok(run_cli(&d, &cli, &["cp", "fc:/data", &hs("copy")]));
        assert_eq!(std::fs::read_to_string(h("copy/sub/f")).unwrap(), "hello\n");
        assert_eq!(
            std::fs::read_link(h("copy/link")).unwrap(),
            Path::new("/data/sub/f")
        );
        ok(run_cli(
            &d,
            &cli,
            &["cp", "-L", "fc:/data/link", &hs("followed")],
        ));
        assert_eq!(std::fs::read_to_string(h("followed")).unwrap(), "hello\n");
        // out: the contents of a directory into an existing one
        std::fs::create_dir(h("contents")).unwrap();
        ok(run_cli(
            &d,
            &cli,
            &["cp", "fc:/data/sub/.", &hs("contents")],
        ));
        assert!(h("contents/f").exists(), "{cli}");
        // ... and into a new one
        ok(run_cli(&d, &cli, &["cp", "fc:/data/sub/.", &hs("fresh")]));
        assert_eq!(
            std::fs::read_to_string(h("fresh/f")).unwrap(),
            "hello\n",
            "{cli}"
        );
        // in: a file into a directory and as a new name; a directory
        std::fs::write(h("in.txt"), format!("from {cli}\n")).unwrap();
        std::fs::create_dir_all(h("tree/a")).unwrap();
        std::fs::write(h("tree/a/b"), "deep\n").unwrap();
        ok(run_cli(&d, &cli, &["cp", &hs("in.txt"), "fc:/data/"]));
        ok(run_cli(
            &d,
            &cli,
            &["cp", &hs("in.txt"), "fc:/data/renamed.txt"],
        ));
        ok(run_cli(&d, &cli, &["cp", &hs("tree"), "fc:/data/tree"]));
        let seen = ok(d.berth(&[
            "exec",
            "fc",
            "sh",
            "-c",
            "cat /data/in.txt /data/renamed.txt /data/tree/a/b; ls -ln /data/in.txt",
        ]));
        assert!(
            seen.starts_with(&format!("from {cli}\nfrom {cli}\ndeep\n")),
            "{cli}: {seen}"
        );
        // copied in files belong to root unless -a
        assert!(
            seen.contains(" 0        0 ") || seen.contains(" 0 0 "),
            "{seen}"
        );
        // stdout as a tar
        let o = run_cli(&d, &cli, &["cp", "fc:/data/sub/f", "-"]);
        assert!(o.status.success());
        let mut ar = tar::Archive::new(&o.stdout[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec!["f"]);
        // a missing path
        let o = run_cli(&d, &cli, &["cp", "fc:/nope", &hs("x")]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("Could not find the file /nope in container fc"),
            "{cli}: {}",
            stderr(&o)
        );
    }
    // a stopped container: both ways
    ok(d.berth(&["stop", "-t", "0", "fc"]));
    let host = tempfile::tempdir().unwrap();
    let f = host.path().join("s.txt");
    std::fs::write(&f, "while stopped\n").unwrap();
    for cli in clis() {
        ok(run_cli(
            &d,
            &cli,
            &["cp", &f.display().to_string(), "fc:/stopped.txt"],
        ));
        let out = host.path().join(format!("back-{}", cli.len()));
        ok(run_cli(
            &d,
            &cli,
            &["cp", "fc:/stopped.txt", &out.display().to_string()],
        ));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "while stopped\n");
    }
    // nothing stays mounted for a stopped container (a moment is allowed for the last
    // request's unmount)
    let root = d.data_root().display().to_string();
    let mut mounts = String::new();
    for _ in 0..60 {
        mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        if !mounts.contains(&root) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !mounts.contains(&root),
        "a stopped container's rootfs stays mounted: {mounts}"
    );
    ok(d.berth(&["start", "fc"]));
    assert_eq!(
        ok(d.berth(&["exec", "fc", "cat", "/stopped.txt"])),
        "while stopped\n"
    );
    ok(d.berth(&["rm", "-f", "fc"]));
}

#[test]
fn diff_export_and_commit() {
    if skip_unless_root("diff_export_and_commit") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    ok(d.berth(&[
        "run", "-d", "--name", "dc", "--network", "none", "bb", "sh", "-c",
        "mkdir -p /opt/app; echo v1 > /opt/app/file; rm /bin/ls; echo changed > /etc/passwd; sleep 300",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(400));
    let want = "C /bin\nD /bin/ls\nC /etc\nC /etc/passwd\nA /opt\nA /opt/app\nA /opt/app/file\n";
    assert_eq!(ok(d.berth(&["diff", "dc"])), want);
    if have("docker") {
        assert_eq!(ok(d.docker(&["diff", "dc"])), want);
    }
    // sizes: the container's own bytes (the new file, the changed passwd), with the image's
    let list = d.get_json("/containers/json?size=1");
    let rw = list[0]["SizeRw"].as_i64().unwrap();
    assert_eq!(rw, 3 + 8, "{list:#}");
    assert!(list[0]["SizeRootFs"].as_i64().unwrap() > rw);
    assert_eq!(d.get_json("/containers/dc/json?size=1")["SizeRw"], rw);
    let ps = ok(d.berth(&["ps", "-s", "--format", "{{.Size}}"]));
    assert!(ps.starts_with("11B (virtual "), "{ps}");
    if have("docker") {
        assert_eq!(ok(d.docker(&["ps", "-s", "--format", "{{.Size}}"])), ps);
        // the same columns (their widths follow the rows, whose ages move with time)
        let words = |s: String| -> Vec<String> {
            s.lines()
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            words(ok(d.berth(&["ps", "-s"]))),
            words(ok(d.docker(&["ps", "-s"])))
        );
    }
    let changes = d.get_json("/containers/dc/changes");
    assert_eq!(
        changes[1],
        serde_json::json!({"Path": "/bin/ls", "Kind": 2})
    );
    // export: the whole filesystem, with the container's changes
    for cli in clis() {
        let o = run_cli(&d, &cli, &["export", "dc"]);
        assert!(o.status.success(), "{cli}");
        let mut ar = tar::Archive::new(&o.stdout[..]);
        let mut names = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            if p == "opt/app/file" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                assert_eq!(s, "v1\n");
            }
            names.push(p);
        }
        assert!(
            names.contains(&"bin/busybox".to_string()),
            "{cli}: {names:?}"
        );
        assert!(names.contains(&"opt/app/file".to_string()));
        assert!(!names.contains(&"bin/ls".to_string()));
    }
    // commit: a new image with the changes, the config change and the message
    let id = ok(d.berth(&[
        "commit",
        "-c",
        "ENV COMMITTED=yes",
        "-m",
        "first commit",
        "dc",
        "snap:one",
    ]));
    assert!(id.starts_with("sha256:"), "{id}");
    let out = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "snap:one",
        "sh",
        "-c",
        "echo $COMMITTED; cat /opt/app/file /etc/passwd; ls /bin/ls || true",
    ]));
    assert!(out.starts_with("yes\nv1\nchanged\n"), "{out}");
    let img = d.get_json("/images/snap:one/json");
    assert_eq!(img["Comment"], "first commit");
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    if have("docker") {
        ok(d.docker(&["commit", "-a", "someone", "dc", "snap:two"]));
        let h = ok(d.docker(&[
            "history",
            "--format",
            "{{.Comment}}|{{.CreatedBy}}",
            "snap:one",
        ]));
        assert!(h.starts_with("first commit|sh -c mkdir"), "{h}");
        let img = d.get_json("/images/snap:two/json");
        assert_eq!(img["Author"], "someone");
    }
    ok(d.berth(&["rm", "-f", "dc"]));
}

/// CVE-2018-15664: while `cp` works, the container swaps a directory for a symlink to
/// `/`. Paths must still resolve inside the container: nothing written to, or read
/// from, the host's root.
#[test]
fn cp_under_a_symlink_swap_stays_in_the_container() {
    if skip_unless_root("cp_under_a_symlink_swap_stays_in_the_container") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let tag = format!("berth-cve-15664-{}", std::process::id());
    let secret = Path::new("/").join(format!("{tag}-secret"));
    std::fs::write(&secret, "host secret\n").unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(secret.clone());
    let _rm_in = Rm(Path::new("/").join(format!("{tag}-in")));
    ok(d.berth(&[
        "run", "-d", "--name", "swap", "--network", "none", "bb", "sh", "-c",
        "mkdir -p /w; while true; do rm -rf /w/link; mkdir /w/link; rm -rf /w/link; ln -s / /w/link; done",
    ]));
    let host = tempfile::tempdir().unwrap();
    let payload = host.path().join(format!("{tag}-in"));
    std::fs::write(&payload, "payload\n").unwrap();
    for i in 0..40 {
        let _ = d.berth(&["cp", &payload.display().to_string(), "swap:/w/link/"]);
        let out = host.path().join(format!("out{i}"));
        let _ = d.berth(&[
            "cp",
            &format!("swap:/w/link/{tag}-secret"),
            &out.display().to_string(),
        ]);
        if let Ok(s) = std::fs::read_to_string(&out) {
            assert_ne!(s, "host secret\n", "read the host's file through the swap");
        }
        let r = d.request(
            "GET",
            &format!("/containers/swap/archive?path=/w/link/{tag}-secret"),
            None,
        );
        assert!(!r.body.windows(11).any(|w| w == b"host secret"));
    }
    assert!(
        !Path::new("/").join(format!("{tag}-in")).exists(),
        "cp wrote into the host's root"
    );
    // a link to `/` that stays: the copy lands in the container's own root
    ok(d.berth(&["exec", "swap", "ln", "-s", "/", "/static"]));
    ok(d.berth(&["cp", &payload.display().to_string(), "swap:/static/"]));
    let inside = ok(d.berth(&["exec", "swap", "cat", &format!("/{tag}-in")]));
    assert_eq!(inside, "payload\n");
    assert!(!Path::new("/").join(format!("{tag}-in")).exists());
    let out = host.path().join("static-out");
    let o = d.berth(&[
        "cp",
        &format!("swap:/static/{tag}-secret"),
        &out.display().to_string(),
    ]);
    assert!(
        !o.status.success(),
        "the host's file is not in the container"
    );
    ok(d.berth(&["rm", "-f", "swap"]));
}

/// CVE-2019-14271: `docker cp` ran a helper inside the container that loaded the
/// image's libraries. berth copies in berthd without running anything from the image:
/// a booby-trapped image's tar and libraries are never touched.
#[test]
fn cp_never_runs_code_from_the_image() {
    if skip_unless_root("cp_never_runs_code_from_the_image") {
        return;
    }
    let d = Daemon::start();
    let marks = tempfile::tempdir().unwrap();
    // an image whose tar, sh-less helpers and NSS library would leave a mark if run
    let mut b = tar::Builder::new(Vec::new());
    {
        let base = busybox_tar();
        let mut ar = tar::Archive::new(&base[..]);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut h = e.header().clone();
            let p = e.path().unwrap().into_owned();
            if h.entry_type() == tar::EntryType::Symlink {
                let target = e.link_name().unwrap().unwrap().into_owned();
                b.append_link(&mut h, &p, &target).unwrap();
            } else {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                b.append_data(&mut h, &p, &data[..]).unwrap();
            }
        }
        let trap = b"#!/bin/sh\necho ran > /marks/ran\n";
        for p in ["usr/bin/tar", "bin/tar", "usr/local/bin/tar"] {
            add_file(&mut b, p, 0o755, trap);
        }
        for p in [
            "lib/x86_64-linux-gnu/libnss_files.so.2",
            "lib/libnss_files.so.2",
            "lib64/libnss_files.so.2",
        ] {
            add_file(&mut b, p, 0o755, b"not a library");
        }
    }
    d.import(&b.into_inner().unwrap(), "trap:latest");
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "trap",
        "--network",
        "none",
        "-v",
        &format!("{}:/marks", marks.path().display()),
        "trap",
        "sleep",
        "300",
    ]));
    let host = tempfile::tempdir().unwrap();
    let f = host.path().join("x");
    std::fs::write(&f, "x\n").unwrap();
    for cli in clis() {
        ok(run_cli(
            &d,
            &cli,
            &["cp", &f.display().to_string(), "trap:/tmp/"],
        ));
        ok(run_cli(
            &d,
            &cli,
            &[
                "cp",
                "trap:/etc/passwd",
                &host.path().join("p").display().to_string(),
            ],
        ));
    }
    assert!(
        !marks.path().join("ran").exists(),
        "cp ran the image's code"
    );
    ok(d.berth(&["rm", "-f", "trap"]));
}

/// CVE-2024-21626: a descriptor berthd inherited (here the host's `/` at 7, a pipe at
/// 8) must reach neither the shim nor the container, so `-w /proc/self/fd/7` cannot
/// put a process in the host's filesystem.
#[test]
fn no_descriptor_of_berthd_reaches_a_container() {
    if skip_unless_root("no_descriptor_of_berthd_reaches_a_container") {
        return;
    }
    let mut d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let root = std::fs::File::open("/").unwrap();
    let (pr, _pw) = rustix::pipe::pipe().unwrap();
    use std::os::fd::AsRawFd;
    d.stop();
    d.spawn_with_fds(&[(root.as_raw_fd(), 7), (pr.as_raw_fd(), 8)]);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
        .unwrap()
        .count();
    assert!(fds > 0);
    // inside: only stdio (and ls's own directory)
    let o = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "ls",
        "/proc/self/fd",
    ]));
    let mut seen: Vec<&str> = o.split_whitespace().collect();
    seen.sort();
    assert_eq!(seen, vec!["0", "1", "2", "3"], "{o}");
    for cwd in ["/proc/self/fd/7", "/proc/self/fd/8"] {
        let o = d.berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-w",
            cwd,
            "bb",
            "sh",
            "-c",
            "ls /proc/self/cwd/ | head -50",
        ]);
        let out = stdout(&o);
        // the host's root has this test's data root under /tmp and a boot directory
        assert!(
            !out.contains("boot") && !out.contains("berth-e2e"),
            "{cwd} reached the host: {out}"
        );
    }
    // and an exec
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "fdx",
        "--network",
        "none",
        "bb",
        "sleep",
        "300",
    ]));
    let o = ok(d.berth(&["exec", "fdx", "ls", "/proc/self/fd"]));
    let mut seen: Vec<&str> = o.split_whitespace().collect();
    seen.sort();
    assert_eq!(seen, vec!["0", "1", "2", "3"], "{o}");
    let o = d.berth(&["exec", "-w", "/proc/self/fd/7", "fdx", "ls"]);
    assert!(!stdout(&o).contains("boot"), "{}", stdout(&o));
    // this daemon's shims hold none of the inherited ones (other tests' shims may be
    // creating containers, which opens `/` for a moment)
    for (pid, _) in d.shims() {
        if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for e in rd.flatten() {
                let target = std::fs::read_link(e.path()).unwrap_or_default();
                assert_ne!(target, Path::new("/"), "shim {pid} holds the host's /");
            }
        }
    }
    ok(d.berth(&["rm", "-f", "fdx"]));
}
