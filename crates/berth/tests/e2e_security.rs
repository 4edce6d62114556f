#![allow(clippy::unwrap_used)]
//! Docker's security defaults, each seen from inside a container: capabilities,
//! seccomp (also for execs), masked and read-only paths, no-new-privileges, devices,
//! groups, sysctls, `--privileged`; refusals of bad options; and CVE-2019-5736 (the
//! runtime's binary cannot be reached through /proc/PID/exe). Through berth's CLI and
//! the docker CLI where it is installed, on the built-in runtime and on runc.

mod common;
use common::*;

/// Docker's 14 default capabilities as /proc/PID/status shows them.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// `Name:\tvalue` lines of /proc/self/status.
fn field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

const PROBE: &str = "cat /proc/self/status; \
    unshare -U true 2>/dev/null && echo UNSHARE=ok || echo UNSHARE=refused; \
    mount -t tmpfs t /dev/shm 2>/dev/null && echo MOUNT=ok || echo MOUNT=refused; \
    touch /proc/sys/kernel/domainname 2>/dev/null && echo PROCSYS=rw || echo PROCSYS=ro; \
    echo TIMER_LIST=$(cat /proc/timer_list 2>/dev/null | wc -c)";

#[test]
fn defaults_confine_and_options_loosen() {
    let Some(d) = daemon_with_busybox("defaults_confine_and_options_loosen") else {
        return;
    };
    let runtimes: Vec<&str> = if have("runc") {
        vec!["berth", "runc"]
    } else {
        vec!["berth"]
    };
    for bin in clis() {
        for rt in &runtimes {
            let out = ok(d.cli(
                &bin,
                &[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--runtime",
                    rt,
                    "bb",
                    "sh",
                    "-c",
                    PROBE,
                ],
            ));
            let what = format!("{bin} on {rt}");
            for set in ["CapBnd", "CapEff", "CapPrm"] {
                assert_eq!(field(&out, set), DEFAULT_CAPS, "{what}: {set}");
            }
            assert_eq!(
                field(&out, "CapInh"),
                "0000000000000000",
                "{what}: CVE-2022-24769"
            );
            assert_eq!(field(&out, "Seccomp"), "2", "{what}: the default profile");
            assert_eq!(field(&out, "NoNewPrivs"), "0", "{what}");
            assert!(out.contains("UNSHARE=refused"), "{what}: {out}");
            assert!(out.contains("MOUNT=refused"), "{what}: {out}");
            assert!(out.contains("PROCSYS=ro"), "{what}: {out}");
            assert!(out.contains("TIMER_LIST=0"), "{what}: masked: {out}");
        }
        // --privileged: every capability berthd has, no seccomp, nothing masked
        let out = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--privileged",
                "bb",
                "sh",
                "-c",
                PROBE,
            ],
        ));
        let mine = field(
            &std::fs::read_to_string("/proc/self/status").unwrap(),
            "CapBnd",
        );
        assert_eq!(field(&out, "CapEff"), mine, "{bin}: privileged");
        assert_eq!(field(&out, "Seccomp"), "0");
        assert!(
            out.contains("MOUNT=ok") && out.contains("PROCSYS=rw"),
            "{bin}: {out}"
        );
        assert!(
            !out.contains("TIMER_LIST=0"),
            "{bin}: nothing masked: {out}"
        );
        // cap-drop ALL + cap-add, cap-add SYS_ADMIN (which the profile follows)
        let out = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--cap-drop",
                "ALL",
                "--cap-add",
                "kill",
                "bb",
                "cat",
                "/proc/self/status",
            ],
        ));
        assert_eq!(field(&out, "CapEff"), "0000000000000020", "{bin}");
        let out = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--cap-add",
                "SYS_ADMIN",
                "bb",
                "sh",
                "-c",
                PROBE,
            ],
        ));
        assert!(
            out.contains("MOUNT=ok"),
            "{bin}: with CAP_SYS_ADMIN mount is allowed: {out}"
        );
        assert_eq!(field(&out, "Seccomp"), "2");
        // seccomp=unconfined, no-new-privileges
        let out = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--security-opt",
                "seccomp=unconfined",
                "--security-opt",
                "no-new-privileges",
                "bb",
                "cat",
                "/proc/self/status",
            ],
        ));
        assert_eq!(field(&out, "Seccomp"), "0", "{bin}");
        assert_eq!(field(&out, "NoNewPrivs"), "1", "{bin}");
    }
    // a profile of one's own (moby's format): here one that refuses mkdir
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.json");
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
    let spec = format!("seccomp={}", profile.display());
    for bin in clis() {
        let out = d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "--security-opt",
                &spec,
                "bb",
                "sh",
                "-c",
                "mkdir /x && echo made || echo refused",
            ],
        );
        assert_eq!(stdout(&out).trim(), "refused", "{bin}: {}", stderr(&out));
    }
    // execs are confined like their container
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "ex",
        "--network",
        "none",
        "bb",
        "sleep",
        "100",
    ]));
    for bin in clis() {
        let out = ok(d.cli(&bin, &["exec", "ex", "sh", "-c", PROBE]));
        assert_eq!(field(&out, "Seccomp"), "2", "{bin}: exec");
        assert_eq!(field(&out, "CapEff"), DEFAULT_CAPS, "{bin}: exec");
        assert!(
            out.contains("UNSHARE=refused") && out.contains("MOUNT=refused"),
            "{bin}: {out}"
        );
        let out = ok(d.cli(
            &bin,
            &["exec", "-u", "1000", "ex", "cat", "/proc/self/status"],
        ));
        assert_eq!(
            field(&out, "CapEff"),
            "0000000000000000",
            "{bin}: a non-root exec"
        );
        assert_eq!(field(&out, "Seccomp"), "2");
    }
    ok(d.berth(&["rm", "-f", "ex"]));
}

#[test]
fn devices_groups_sysctls_and_refusals() {
    let Some(d) = daemon_with_busybox("devices_groups_sysctls_and_refusals") else {
        return;
    };
    for bin in clis() {
        let out = ok(d.cli(&bin,
            &[
                "run", "--rm", "--network", "none", "--device", "/dev/null:/dev/mynull",
                "--group-add", "1234", "--sysctl", "net.ipv4.ip_forward=1", "--sysctl",
                "kernel.shmmax=123456789", "bb", "sh", "-c",
                "ls -l /dev/mynull; echo hi > /dev/mynull && echo WROTE; id -G; cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax",
            ],
        ));
        assert!(
            out.starts_with('c') && out.contains("1,   3") || out.contains("1, 3"),
            "{bin}: {out}"
        );
        assert!(out.contains("WROTE"), "{bin}: {out}");
        assert!(out.contains("1234"), "{bin}: {out}");
        assert!(out.contains("\n1\n123456789"), "{bin}: {out}");
        for (args, msg) in [
            (
                vec!["--cap-add", "CAP_NOPE"],
                "unknown capability: \"CAP_NOPE\"",
            ),
            (vec!["--sysctl", "vm.swappiness=10"], "is not allowed"),
            (
                vec!["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
                "not allowed in host network namespace",
            ),
            (vec!["--security-opt", "bogus=1"], "invalid --security-opt"),
            (
                vec!["--device", "/dev/nonexistent-dev"],
                "error gathering device information",
            ),
        ] {
            assert_refused(&d, &bin, &["run", "--rm"], &args, 125, msg);
        }
    }
    // a malformed profile is refused by the daemon
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"SecurityOpt":["seccomp={\"syscalls\": 3"]}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("Decoding seccomp profile failed"),
        "{}",
        r.text()
    );
    let r = d.request(
        "POST",
        "/containers/create",
        Some(br#"{"Image":"bb","HostConfig":{"CapAdd":["CAP_FOO"]}}"#),
    );
    assert_eq!(r.status, 400);
    assert!(
        d.get_json("/containers/json?all=1")
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing half made"
    );
}

fn sha256(path: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// CVE-2019-5736: a container replaces a command with `#!/proc/self/exe`, so that an
/// exec makes the runtime run itself inside the container, and tries to write to
/// every runtime binary it can see through /proc/PID/exe. The host's binary is
/// unchanged, and what enters a container is a sealed in-memory copy.
#[test]
fn the_runtime_binary_cannot_be_overwritten() {
    let Some(d) = daemon_with_busybox("the_runtime_binary_cannot_be_overwritten") else {
        return;
    };
    let runtime = std::path::Path::new(berthd_bin()).with_file_name("berth-runtime");
    let runtime = runtime.to_str().unwrap().to_string();
    let before = sha256(&runtime);
    // shims run the runtime from berthd's sealed copy, which cannot be written
    let id = ok(d.berth(&["run", "-d", "--network", "none", "bb", "sleep", "100"]))
        .trim()
        .to_string();
    let (shim, cmd) = d.shims().into_iter().next().expect("a shim");
    let fd_path = cmd
        .split(' ')
        .skip_while(|w| *w != "--runtime")
        .nth(1)
        .unwrap()
        .to_string();
    let fd = fd_path.strip_prefix("/proc/self/fd/").expect(&cmd);
    let copy = format!("/proc/{shim}/fd/{fd}");
    let target = std::fs::read_link(&copy).unwrap();
    assert!(
        target.to_string_lossy().starts_with("/memfd:berth-runtime"),
        "{}",
        target.display()
    );
    let written = std::fs::OpenOptions::new()
        .append(true)
        .open(&copy)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"PWNED"));
    assert!(written.is_err(), "the sealed copy refuses writes");
    // the attack
    let attacker = "printf '#!/proc/self/exe\\n' > /evil; chmod +x /evil; \
        while :; do for e in /proc/[0-9]*/exe; do \
          case \"$(readlink $e)\" in *berth-runtime*) exec 3<$e; (sleep 0.05; printf PWNED >> /proc/self/fd/3) 2>/dev/null & ;; esac; \
        done; done";
    ok(d.berth(&["exec", "-d", &id, "sh", "-c", attacker]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..15 {
        let _ = d.berth(&["exec", &id, "/evil"]);
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(d.berth(&["rm", "-f", &id]));
    assert_eq!(
        sha256(&runtime),
        before,
        "the host's berth-runtime was not written to"
    );
}

/// `--security-opt systempaths=unconfined` unmasks /proc, `--device-cgroup-rule` and
/// `--annotation` reach the runtime's spec, block IO limits name the device by number.
#[test]
fn system_paths_device_rules_annotations_and_block_io() {
    let Some(d) = daemon_with_busybox("system_paths_device_rules_annotations_and_block_io") else {
        return;
    };
    // a block device of this machine, by its numbers
    let (disk, major, minor) = block_device();
    for cli in clis() {
        let lines = |extra: &[&str]| -> String {
            let mut args = vec!["run", "--rm", "--network", "none"];
            args.extend(extra);
            args.extend(["bb", "sh", "-c", "grep -c . /proc/timer_list || true"]);
            ok(d.cli(&cli, &args)).trim().to_string()
        };
        assert_eq!(lines(&[]), "0", "{cli}: masked by default");
        assert_ne!(
            lines(&["--security-opt", "systempaths=unconfined"]),
            "0",
            "{cli}"
        );
        let id = ok(d.cli(
            &cli,
            &[
                "create",
                "--network",
                "none",
                "--device-cgroup-rule",
                "c 1:4 r",
                "--device-cgroup-rule",
                "b *:* m",
                "--annotation",
                "org.example/a=b",
                "--device-read-bps",
                &format!("{disk}:2mb"),
                "bb",
                "true",
            ],
        ));
        let id = id.trim();
        ok(d.cli(&cli, &["start", id]));
        assert_eq!(ok(d.cli(&cli, &["wait", id])), "0\n");
        let spec: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                d.data_root()
                    .join("containers")
                    .join(id)
                    .join("bundle/config.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let rules = spec["linux"]["resources"]["devices"].as_array().unwrap();
        assert!(
            rules.contains(&serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 4, "access": "r"})),
            "{cli}: {rules:?}"
        );
        assert!(
            rules.contains(&serde_json::json!({"allow": true, "type": "b", "access": "m"})),
            "{cli}: {rules:?}"
        );
        assert_eq!(spec["annotations"]["org.example/a"], "b", "{cli}");
        assert_eq!(
            spec["linux"]["resources"]["blockIO"]["throttleReadBpsDevice"],
            serde_json::json!([{"major": major, "minor": minor, "rate": 2 << 20}]),
            "{cli}"
        );
        ok(d.cli(&cli, &["rm", id]));
        let bad = d.cli(
            &cli,
            &["create", "--device-cgroup-rule", "x 1:2 q", "bb", "true"],
        );
        assert!(!bad.status.success(), "{cli}");
        assert!(
            stderr(&bad).contains("invalid device cgroup format"),
            "{cli}: {}",
            stderr(&bad)
        );
    }
}

/// A block device node of this machine (a disk, else a loop device): path, major, minor.
fn block_device() -> (String, u64, u64) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| (n.starts_with("loop") || n.starts_with("ram"), n.clone()));
    for n in names {
        let path = format!("/dev/{n}");
        if let Ok(md) = std::fs::metadata(&path) {
            if md.file_type().is_block_device() {
                let rdev = md.rdev();
                return (path, libc_major(rdev), libc_minor(rdev));
            }
        }
    }
    panic!("no block device node in /dev");
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)
}
