#![allow(clippy::unwrap_used)]
//! User-namespace remapping (`userns-remap`): containers' root is the remap user's
//! first subordinate ID; image layers reach them through an idmapped mount; execs join
//! the namespace; `--userns=host` opts out; the options Docker refuses with remapping
//! are refused; copies, diffs, commits and exports carry the container's own IDs.
//! Through berth's CLI and the docker CLI, on the built-in runtime and on runc.

mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The account files `userns-remap default` may add to, put back as they were when
/// the test ends (whatever happens); one test at a time holds them.
struct EtcGuard(
    Vec<(&'static str, Option<Vec<u8>>)>,
    #[allow(dead_code)] std::sync::MutexGuard<'static, ()>,
);

static ETC: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl EtcGuard {
    fn new() -> Self {
        let lock = ETC.lock().unwrap_or_else(|e| e.into_inner());
        EtcGuard(
            [
                "/etc/passwd",
                "/etc/group",
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/subuid",
                "/etc/subgid",
            ]
            .into_iter()
            .map(|f| (f, std::fs::read(f).ok()))
            .collect(),
            lock,
        )
    }
}

impl Drop for EtcGuard {
    fn drop(&mut self) {
        for (f, was) in &self.0 {
            match was {
                Some(b) => {
                    let _ = std::fs::write(f, b);
                }
                None => {
                    let _ = std::fs::remove_file(f);
                }
            }
        }
    }
}

/// A daemon with `args`, its temporary directory opened for traversal (as the data
/// root's parents must be for a remapped root), busybox imported as `bb`.
fn remapped_daemon(args: &[&str]) -> Daemon {
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let mut d = Daemon {
        socket: dir.path().join("b.sock"),
        dir,
        child: None,
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        wrapper: Vec::new(),
        counted: false,
        slot: next_slot(),
    };
    d.spawn();
    d.import(&busybox_tar(), "bb:latest");
    d
}

/// The first subordinate range of `user` in `file`: (start, count).
fn range_of(file: &str, user: &str) -> (u32, u32) {
    let text = std::fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .unwrap_or_else(|| panic!("{user} in {file}: {text}"));
    let f: Vec<&str> = line.split(':').collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

fn uid_map(out: &str) -> Vec<u64> {
    out.lines()
        .find_map(|l| {
            let n: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (n.len() == 3).then_some(n)
        })
        .unwrap_or_default()
}

fn mounted_below(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn remapped_containers_run_as_subordinate_ids() {
    if skip_unless_root("remapped_containers_run_as_subordinate_ids") {
        return;
    }
    let _etc = EtcGuard::new();
    let mut d = remapped_daemon(&["--userns-remap", "default"]);
    // `default` made the user and gave it ranges
    assert!(std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains("dockremap:"));
    let (uid0, count) = range_of("/etc/subuid", "dockremap");
    let (gid0, _) = range_of("/etc/subgid", "dockremap");
    assert!(uid0 >= 100000 && count >= 65536, "{uid0}:{count}");
    let layers = d.data_root().join(format!("{uid0}.{gid0}")).join("layers");
    assert!(
        mounted_below(&d.data_root()).contains(&layers.display().to_string()),
        "the layer store is mounted idmapped"
    );
    let runtimes: Vec<&str> = if have("runc") {
        vec!["berth", "runc"]
    } else {
        vec!["berth"]
    };
    for bin in clis() {
        let opts = ok(d.cli(&bin, &["info", "-f", "{{json .SecurityOptions}}"]));
        assert!(opts.contains("name=userns"), "{bin}: {opts}");
        for rt in &runtimes {
            let what = format!("{bin} on {rt}");
            let out = ok(d.cli(
                &bin,
                &[
                    "run", "--rm", "--network", "none", "--runtime", rt, "bb", "sh", "-c",
                    "id -u; cat /proc/self/uid_map; ls -ln /bin/busybox; touch /etc/new && echo WRITE=ok",
                ],
            ));
            assert_eq!(out.lines().next(), Some("0"), "{what}: {out}");
            assert_eq!(
                uid_map(&out),
                vec![0, u64::from(uid0), u64::from(count)],
                "{what}: {out}"
            );
            // the image's root-owned files are root's in the container
            assert!(
                out.contains(" 0        0 ") || out.contains(" 0 0 "),
                "{what}: {out}"
            );
            assert!(out.contains("WRITE=ok"), "{what}: {out}");
            // opting out: the host's user namespace
            let out = ok(d.cli(
                &bin,
                &[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--runtime",
                    rt,
                    "--userns",
                    "host",
                    "bb",
                    "cat",
                    "/proc/self/uid_map",
                ],
            ));
            assert_eq!(uid_map(&out), vec![0, 0, 4294967295], "{what}: {out}");
        }
        // what Docker refuses with remapping on, and a mode it does not know
        assert_refused(
            &d,
            &bin,
            &["run", "--rm"],
            &["--privileged"],
            125,
            "privileged mode is incompatible with user namespaces",
        );
        assert_refused(
            &d,
            &bin,
            &["run", "--rm"],
            &["--network", "host"],
            125,
            "cannot share the host's network namespace when user namespaces are enabled",
        );
        assert_refused(
            &d,
            &bin,
            &["create"],
            &["--userns", "bogus"],
            if bin == "docker" { 125 } else { 1 },
            "",
        );
        // both allowed with the host's namespace
        ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--privileged",
                "--network",
                "host",
                "--userns=host",
                "bb",
                "true",
            ],
        ));
    }

    // a running one: its processes are the remapped root on the host; execs join it
    let id = ok(d.berth(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "u1",
        "bb",
        "sh",
        "-c",
        "echo a > /a.txt; busybox chown 5:7 /a.txt; touch /ready; sleep 60",
    ]))
    .trim()
    .to_string();
    let pid: i32 = ok(d.berth(&["inspect", "-f", "{{.State.Pid}}", "u1"]))
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let host_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(host_uid, uid0.to_string(), "{status}");
    for _ in 0..100 {
        if d.berth(&["exec", "u1", "ls", "/ready"]).status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for bin in clis() {
        let out = ok(d.cli(
            &bin,
            &[
                "exec",
                "u1",
                "sh",
                "-c",
                "id -u; cat /proc/self/uid_map; echo x > /by-exec; ls -ln /by-exec",
            ],
        ));
        assert_eq!(
            uid_map(&out),
            vec![0, u64::from(uid0), u64::from(count)],
            "{bin} exec: {out}"
        );
        // an exec as another user is that user of the namespace
        let out = ok(d.cli(&bin, &["exec", "-u", "5:7", "u1", "id"]));
        assert!(out.contains("uid=5 gid=7"), "{bin}: {out}");
    }
    // on disk, the container's files belong to the range
    let upper = d.data_root().join("containers").join(&id).join("upper");
    let md = std::fs::metadata(upper.join("by-exec")).unwrap();
    assert_eq!((md.uid(), md.gid()), (uid0, gid0));
    let md = std::fs::metadata(upper.join("a.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (uid0 + 5, gid0 + 7));

    // copies out and in, diff, commit and export speak the container's IDs
    let src = d.dir.path().join("in.txt");
    std::fs::write(&src, "in\n").unwrap();
    std::os::unix::fs::chown(&src, Some(9), Some(9)).unwrap();
    for bin in clis() {
        let out = d.cli(&bin, &["cp", "u1:/a.txt", "-"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let mut ar = tar::Archive::new(&out.stdout[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(
            (e.header().uid().unwrap(), e.header().gid().unwrap()),
            (5, 7),
            "{bin} cp out"
        );
        let s = src.display().to_string();
        ok(d.cli(&bin, &["cp", &s, "u1:/plain.txt"]));
        ok(d.cli(&bin, &["cp", "-a", &s, "u1:/kept.txt"]));
        let out = ok(d.cli(
            &bin,
            &["exec", "u1", "sh", "-c", "ls -n /plain.txt /kept.txt"],
        ));
        let owners: Vec<String> = out
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{}:{}", f[2], f[3])
            })
            .collect();
        // ls sorts: /kept.txt first
        assert_eq!(owners, vec!["9:9", "0:0"], "{bin}: {out}");
    }
    let diff = ok(d.berth(&["diff", "u1"]));
    assert!(
        diff.contains("A /a.txt") && !diff.contains("/bin"),
        "{diff}"
    );
    ok(d.berth(&["commit", "u1", "bb:committed"]));
    let out = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--userns=host",
        "bb:committed",
        "ls",
        "-n",
        "/a.txt",
        "/kept.txt",
    ]));
    assert!(
        out.lines().all(|l| l.contains(" 5 ") || l.contains(" 9 ")),
        "{out}"
    );
    let out = d.berth(&["export", "u1"]);
    let mut ar = tar::Archive::new(&out.stdout[..]);
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        if p == "bin/busybox" {
            assert_eq!(e.header().uid().unwrap(), 0, "export {p}");
        }
        if p == "a.txt" {
            assert_eq!(e.header().uid().unwrap(), 5, "export {p}");
        }
    }
    ok(d.berth(&["rm", "-f", "u1"]));

    // a stop takes the idmapped mount away; nothing is left mounted
    d.stop();
    assert_eq!(mounted_below(d.dir.path()), Vec::<String>::new());

    // the vfs driver: the container's copy of the image is shifted into the range
    let d = remapped_daemon(&["--userns-remap", "default", "-s", "vfs"]);
    let out = ok(d.berth(&[
        "run",
        "--name",
        "v1",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        "id -u; ls -ln /bin/busybox; touch /new",
    ]));
    assert!(
        out.starts_with("0\n") && out.contains(" 0        0 "),
        "{out}"
    );
    let diff = ok(d.berth(&["diff", "v1"]));
    assert_eq!(diff.trim(), "A /new", "{diff}");
    ok(d.berth(&["rm", "v1"]));
}

#[test]
fn remapping_needs_ranges_and_a_reachable_data_root() {
    if skip_unless_root("remapping_needs_ranges_and_a_reachable_data_root") {
        return;
    }
    let run = |dir: &Path, args: &[&str]| {
        std::process::Command::new(berthd_bin())
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .arg("--config-file")
            .arg("/dev/null")
            .arg("-H")
            .arg(format!("unix://{}", dir.join("s.sock").display()))
            .args(args)
            .output()
            .unwrap()
    };
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-")
        .tempdir_in("/tmp")
        .unwrap();
    // a user without subordinate ranges
    let out = run(dir.path(), &["--userns-remap", "nobody"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no subuid ranges found for user \"nobody\""),
        "{}",
        stderr(&out)
    );
    let out = run(dir.path(), &["--userns-remap", "no-such-user-here"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such user"), "{}", stderr(&out));
    // a data root below a directory the remapped root cannot pass
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let _etc = EtcGuard::new();
    let out = run(dir.path(), &["--userns-remap", "default"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("restricts access to the remapped root"),
        "{}",
        stderr(&out)
    );
    assert_eq!(mounted_below(dir.path()), Vec::<String>::new());
}
