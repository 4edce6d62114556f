//! The default seccomp profile, as Docker's: the syscalls every container may make,
//! those its capabilities and the host's architecture add, and a profile given with
//! `--security-opt seccomp=PROFILE` resolved for a container's capabilities.

use crate::security::strings;
use serde_json::{json, Value};

/// Syscalls the default profile allows to every container.
const ALLOWED: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only to a container holding the capability.
const BY_CAP: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "init_module", "finit_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Syscalls allowed on one architecture family only (Go's names: amd64, arm64, ...).
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "x86"], &["modify_ldt"]),
    (
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache"]),
];

/// The namespace flags of clone(2) (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET):
/// without CAP_SYS_ADMIN, clone is allowed only without them.
const CLONE_NS_FLAGS: u64 = 0x7E02_0000;
const ENOSYS: u32 = 38;

/// This machine's architecture in Go's naming, and the seccomp architectures a
/// profile covers on it.
fn arches() -> (&'static str, Vec<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => (
            "amd64",
            vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        ),
        "aarch64" => ("arm64", vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        "riscv64" => ("riscv64", vec!["SCMP_ARCH_RISCV64"]),
        "s390x" => ("s390x", vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"]),
        "powerpc64" => ("ppc64le", vec!["SCMP_ARCH_PPC64LE"]),
        other => (other, vec![]),
    }
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let rel = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

fn rule(names: &[&str], action: &str, args: Value) -> Value {
    let mut r = json!({"names": names, "action": action});
    if !args.is_null() {
        r["args"] = args;
    }
    r
}

/// berth's default profile for a container holding `caps`, as an OCI `linux.seccomp`:
/// everything not listed fails with EPERM; what Docker's default profile allows is
/// allowed (per capability, architecture and argument as it does).
pub fn default_profile(caps: &[String]) -> Value {
    let has = |c: &str| caps.iter().any(|x| x == c);
    let (arch, archs) = arches();
    let mut rules = vec![rule(ALLOWED, "SCMP_ACT_ALLOW", Value::Null)];
    if kernel_at_least(4, 8) {
        rules.push(rule(
            &["process_vm_readv", "process_vm_writev", "ptrace"],
            "SCMP_ACT_ALLOW",
            Value::Null,
        ));
    }
    // every socket family but AF_VSOCK (40)
    for (op, v) in [
        ("SCMP_CMP_LT", 38),
        ("SCMP_CMP_EQ", 39),
        ("SCMP_CMP_GT", 40),
    ] {
        rules.push(rule(
            &["socket"],
            "SCMP_ACT_ALLOW",
            json!([{"index": 0, "value": v, "valueTwo": 0, "op": op}]),
        ));
    }
    // personality: PER_LINUX, PER_LINUX32, UNAME26 (and with PER_LINUX32), and the query
    for v in [0u64, 8, 0x20000, 0x20008, 0xffff_ffff] {
        rules.push(rule(
            &["personality"],
            "SCMP_ACT_ALLOW",
            json!([{"index": 0, "value": v, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]),
        ));
    }
    for (on, names) in BY_ARCH {
        if on.contains(&arch) {
            rules.push(rule(names, "SCMP_ACT_ALLOW", Value::Null));
        }
    }
    for (cap, names) in BY_CAP {
        if has(cap) {
            rules.push(rule(names, "SCMP_ACT_ALLOW", Value::Null));
        }
    }
    if !has("CAP_SYS_ADMIN") {
        // clone's flags are its first argument except on s390
        let index = if arch.starts_with("s390") { 1 } else { 0 };
        rules.push(rule(&["clone"], "SCMP_ACT_ALLOW", json!([{"index": index, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])));
        // clone3's flags are in memory seccomp cannot read: ENOSYS sends libc to clone
        let mut r = rule(&["clone3"], "SCMP_ACT_ERRNO", Value::Null);
        r["errnoRet"] = json!(ENOSYS);
        rules.push(r);
    }
    // caps-conditional rules sort after the arch ones in the same order as above
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": archs,
        "syscalls": rules,
    })
}

/// A custom profile in moby's format (`includes`/`excludes` by caps, arches,
/// minKernel) for a container holding `caps`, as an OCI `linux.seccomp`.
pub fn from_profile(p: &Value, caps: &[String]) -> Value {
    let has = |c: &Value| c.as_str().is_some_and(|c| caps.iter().any(|x| x == c));
    let (arch, archs) = arches();
    let arch_match = |v: &Value| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(arch)))
    };
    let mut rules = Vec::new();
    for r in p["syscalls"].as_array().into_iter().flatten() {
        let inc = &r["includes"];
        let exc = &r["excludes"];
        if let Some(c) = inc["caps"].as_array() {
            if !c.iter().all(has) {
                continue;
            }
        }
        if inc["arches"].is_array() && !arch_match(&inc["arches"]) {
            continue;
        }
        if let Some(k) = inc["minKernel"].as_str() {
            let mut it = k.split('.').filter_map(|x| x.parse::<u32>().ok());
            if !kernel_at_least(it.next().unwrap_or(0), it.next().unwrap_or(0)) {
                continue;
            }
        }
        if exc["caps"].as_array().is_some_and(|c| c.iter().any(has)) {
            continue;
        }
        if exc["arches"].is_array() && arch_match(&exc["arches"]) {
            continue;
        }
        let mut names = strings(&r["names"]);
        if let Some(n) = r["name"].as_str() {
            names.push(n.to_string());
        }
        let mut out = json!({"names": names, "action": r["action"]});
        if let Some(args) = r["args"].as_array().filter(|a| !a.is_empty()) {
            out["args"] = Value::from(
                args.iter()
                    .map(|a| json!({"index": a["index"], "value": a["value"], "valueTwo": a["valueTwo"].as_u64().unwrap_or(0), "op": a["op"]}))
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(e) = r["errnoRet"].as_u64() {
            out["errnoRet"] = json!(e);
        }
        rules.push(out);
    }
    let mut out = json!({
        "defaultAction": p["defaultAction"],
        "architectures": if p["archMap"].is_array() || p["architectures"].is_array() { json!(archs) } else { json!([]) },
        "syscalls": rules,
    });
    if let Some(e) = p["defaultErrnoRet"].as_u64() {
        out["defaultErrnoRet"] = json!(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::ALL_CAPS;

    #[test]
    fn default_profile_follows_caps() {
        let names = |p: &Value, action: &str| -> Vec<String> {
            p["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["action"] == action && r["args"].is_null())
                .flat_map(|r| strings(&r["names"]))
                .collect()
        };
        let def: Vec<String> = berth_runtime::spec::DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .collect();
        let p = default_profile(&def);
        let allowed = names(&p, "SCMP_ACT_ALLOW");
        assert!(allowed.contains(&"read".to_string()) && allowed.contains(&"chroot".to_string()));
        assert!(
            !allowed.contains(&"mount".to_string()) && !allowed.contains(&"unshare".to_string())
        );
        let mut admin = def.clone();
        admin.push("CAP_SYS_ADMIN".into());
        let allowed = names(&default_profile(&admin), "SCMP_ACT_ALLOW");
        assert!(allowed.contains(&"mount".to_string()) && allowed.contains(&"unshare".to_string()));
        // it parses as an OCI seccomp section
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(p).unwrap();
    }

    /// The reference profile (Docker's, kept beside the project) and ours give the same
    /// rules for the same capabilities, when the reference is there to compare with.
    #[test]
    fn same_rules_as_dockers_default_profile() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/reference/seccomp-default.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("no reference profile at {}: skipped", path.display());
            return;
        };
        let reference: Value = serde_json::from_str(&text).unwrap();
        let norm = |p: &Value| {
            let mut v: Vec<String> = Vec::new();
            for r in p["syscalls"].as_array().unwrap() {
                for n in strings(&r["names"]) {
                    v.push(format!(
                        "{n} {} {} {}",
                        r["action"], r["args"], r["errnoRet"]
                    ));
                }
            }
            v.sort();
            v.dedup();
            v
        };
        let def: Vec<String> = berth_runtime::spec::DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .collect();
        let all: Vec<String> = ALL_CAPS.iter().map(|c| c.to_string()).collect();
        for caps in [def, all, vec![]] {
            let ours = default_profile(&caps);
            let theirs = from_profile(&reference, &caps);
            assert_eq!(norm(&ours), norm(&theirs), "caps {caps:?}");
            assert_eq!(ours["defaultAction"], theirs["defaultAction"]);
            assert_eq!(ours["defaultErrnoRet"], theirs["defaultErrnoRet"]);
            assert_eq!(ours["architectures"], theirs["architectures"]);
        }
    }
}
