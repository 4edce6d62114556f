//! Docker's security defaults and their options: capabilities (`--cap-add`,
//! `--cap-drop`, `--privileged`), the default seccomp profile (and `--security-opt
//! seccomp=unconfined|PROFILE`), `no-new-privileges`, devices, sysctls — checked when a
//! container is created and turned into the runtime spec when it starts.

use crate::error::EngineError;
use serde_json::{json, Map, Value};

/// Every capability the kernel knows, in number order.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// "All capabilities" as Docker means it for `--privileged` and `--cap-add ALL`: those
/// berthd itself may pass on (its bounding set; a machine may withhold some, as this
/// kind of VM withholds CAP_SYS_RESOURCE).
pub fn all_caps() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(i, _)| bounding & (1u64 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// `net_admin`, `NET_ADMIN`, `CAP_NET_ADMIN` → `CAP_NET_ADMIN` (or `ALL`).
fn normalize_cap(name: &str) -> String {
    let up = name.trim().to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

/// The container's capability set, as Docker computes it from the defaults, `CapAdd`,
/// `CapDrop` (`ALL` in either) and `Privileged`.
pub fn capabilities(hc: &Value) -> Result<Vec<String>, EngineError> {
    let add: Vec<String> = strings(&hc["CapAdd"])
        .iter()
        .map(|c| normalize_cap(c))
        .collect();
    let drop: Vec<String> = strings(&hc["CapDrop"])
        .iter()
        .map(|c| normalize_cap(c))
        .collect();
    for (what, list) in [("CapAdd", &add), ("CapDrop", &drop)] {
        for c in list {
            if c != "ALL" && !ALL_CAPS.contains(&c.as_str()) {
                return Err(EngineError::invalid(format!(
                    "invalid {what}: unknown capability: \"{c}\""
                )));
            }
        }
    }
    if hc["Privileged"].as_bool().unwrap_or(false) {
        return Ok(all_caps());
    }
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") {
        all_caps()
    } else if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        berth_runtime::spec::DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .collect()
    };
    if !add.iter().any(|c| c == "ALL") {
        for c in &add {
            if !caps.contains(c) {
                caps.push(c.clone());
            }
        }
    }
    // a capability both added and dropped is dropped (unless the drop is ALL)
    if !drop.iter().any(|c| c == "ALL") {
        caps.retain(|c| !drop.contains(c));
    }
    Ok(caps)
}

/// What `--security-opt` asked for.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Options {
    pub no_new_privileges: bool,
    /// `unconfined`
    pub seccomp_off: bool,
    /// a custom profile (moby's format)
    pub seccomp_profile: Option<Value>,
    /// `systempaths=unconfined`: nothing masked or made read-only in /proc and /sys
    pub system_paths_off: bool,
}

/// Parses `SecurityOpt` (`key=value`, or the old `key:value`).
pub fn options(hc: &Value, daemon_nnp: bool) -> Result<Options, EngineError> {
    let mut o = Options {
        no_new_privileges: daemon_nnp,
        ..Default::default()
    };
    for opt in strings(&hc["SecurityOpt"]) {
        let (k, v) = match opt.split_once('=') {
            Some(kv) => kv,
            None => opt.split_once(':').unwrap_or((opt.as_str(), "")),
        };
        match k {
            "no-new-privileges" => {
                o.no_new_privileges = match v {
                    "" | "true" => true,
                    "false" => false,
                    _ => {
                        return Err(EngineError::invalid(format!(
                            "invalid --security-opt 2: {opt:?}"
                        )))
                    }
                }
            }
            "seccomp" if v == "unconfined" => o.seccomp_off = true,
            "seccomp" if v == "builtin" || v.is_empty() => {}
            "seccomp" => {
                let p: Value = serde_json::from_str(v).map_err(|e| {
                    EngineError::invalid(format!("Decoding seccomp profile failed: {e}"))
                })?;
                check_profile(&p).map_err(|e| {
                    EngineError::invalid(format!("Decoding seccomp profile failed: {e}"))
                })?;
                o.seccomp_profile = Some(p);
            }
            "systempaths" if v == "unconfined" => o.system_paths_off = true,
            "systempaths" => {
                return Err(EngineError::invalid(format!(
                    "invalid --security-opt 2: {opt:?}"
                )))
            }
            // accepted as Docker does where there is no such LSM here
            "apparmor" | "label" => {}
            _ => {
                return Err(EngineError::invalid(format!(
                    "invalid --security-opt 1: {opt:?}"
                )))
            }
        }
    }
    Ok(o)
}

/// The shape of a moby-format profile.
fn check_profile(p: &Value) -> Result<(), String> {
    let obj = p.as_object().ok_or("the profile is not a JSON object")?;
    let action = obj
        .get("defaultAction")
        .and_then(Value::as_str)
        .ok_or("defaultAction is missing")?;
    if !action.starts_with("SCMP_ACT_") {
        return Err(format!("unknown action {action:?}"));
    }
    for rule in obj
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let a = rule["action"].as_str().unwrap_or_default();
        if !a.starts_with("SCMP_ACT_") {
            return Err(format!("unknown action {a:?}"));
        }
        if rule["names"].as_array().is_none() && rule["name"].as_str().is_none() {
            return Err("a syscall rule names no syscall".into());
        }
    }
    Ok(())
}

/// Sysctls a container may set: the namespaced ones (Docker's list), `net.*` only
/// with its own network namespace.
pub fn check_sysctls(hc: &Value, host_network: bool) -> Result<Map<String, Value>, EngineError> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let mut out = Map::new();
    for (k, v) in hc["Sysctls"].as_object().into_iter().flatten() {
        let ok = IPC.contains(&k.as_str()) || k.starts_with("fs.mqueue.");
        let net = k.starts_with("net.");
        if net && host_network {
            return Err(EngineError::invalid(format!(
                "sysctl '{k}' not allowed in host network namespace"
            )));
        }
        if !ok && !net {
            return Err(EngineError::invalid(format!("sysctl '{k}' is not allowed")));
        }
        out.insert(
            k.clone(),
            json!(v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())),
        );
    }
    Ok(out)
}

/// The sysctls dockerd gives every container with a network namespace of its own
/// (generally safe, and granted by its capabilities anyway): ICMP echo sockets for any
/// group (not in a user namespace, where it cannot be set) and ports below 1024 for any
/// user. The container's own `--sysctl`s win.
pub fn default_net_sysctls(hc: &Value, sysctl: &mut Map<String, Value>, userns: bool) {
    let mode = hc["NetworkMode"].as_str().unwrap_or_default();
    if mode == "host" || mode.starts_with("container:") {
        return;
    }
    let mut add = |k: &str, v: &str| {
        let file = format!("/proc/sys/{}", k.replace('.', "/"));
        if std::path::Path::new(&file).exists() && !sysctl.contains_key(k) {
            sysctl.insert(k.into(), json!(v));
        }
    };
    if !userns {
        add("net.ipv4.ping_group_range", "0 2147483647");
    }
    add("net.ipv4.ip_unprivileged_port_start", "0");
}

/// One device node as the runtime creates it, and its cgroup rule.
fn device_of(host: &str, ctr: &str, perms: &str) -> Result<(Value, Value), EngineError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(host).map_err(|e| {
        EngineError::invalid(format!(
            "error gathering device information while adding custom device \"{host}\": {e}"
        ))
    })?;
    let kind = if md.file_type().is_char_device() {
        "c"
    } else if md.file_type().is_block_device() {
        "b"
    } else {
        return Err(EngineError::invalid(format!(
            "error gathering device information while adding custom device \"{host}\": not a device node"
        )));
    };
    let rdev = md.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    Ok((
        json!({"path": ctr, "type": kind, "major": major, "minor": minor, "fileMode": md.mode() & 0o7777, "uid": 0, "gid": 0}),
        json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": perms}),
    ))
}

/// `Devices` (and, privileged, every device node of the host's /dev): the nodes to
/// create and the cgroup rules allowing them.
/// A `--device-cgroup-rule` (`TYPE MAJOR:MINOR ACCESS`, `*` for any number) as an OCI
/// device rule.
pub fn device_cgroup_rule(rule: &str) -> Result<Value, EngineError> {
    let bad = || EngineError::invalid(format!("invalid device cgroup format '{rule}'"));
    let parts: Vec<&str> = rule.split_whitespace().collect();
    let [kind, numbers, access] = parts[..] else {
        return Err(bad());
    };
    if !matches!(kind, "a" | "b" | "c") {
        return Err(bad());
    }
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    let number = |n: &str| -> Result<Value, EngineError> {
        if n == "*" {
            Ok(Value::Null)
        } else {
            n.parse::<i64>().map(|v| json!(v)).map_err(|_| bad())
        }
    };
    if access.is_empty() || access.len() > 3 || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(bad());
    }
    let mut r = json!({"allow": true, "type": kind, "access": access});
    for (k, n) in [("major", major), ("minor", minor)] {
        let v = number(n)?;
        if !v.is_null() {
            r[k] = v;
        }
    }
    Ok(r)
}

pub fn devices(hc: &Value, privileged: bool) -> Result<(Vec<Value>, Vec<Value>), EngineError> {
    let (mut nodes, mut rules) = (Vec::new(), Vec::new());
    for r in hc["DeviceCgroupRules"].as_array().into_iter().flatten() {
        rules.push(device_cgroup_rule(r.as_str().unwrap_or_default())?);
    }
    if privileged {
        let mut stack = vec![std::path::PathBuf::from("/dev")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    if !matches!(
                        name.as_str(),
                        "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".udev"
                    ) {
                        stack.push(p);
                    }
                    continue;
                }
                if p.as_os_str() == "/dev/console" || ft.is_symlink() {
                    continue;
                }
                let s = p.display().to_string();
                if let Ok((n, _)) = device_of(&s, &s, "rwm") {
                    nodes.push(n);
                }
            }
        }
    }
    for d in hc["Devices"].as_array().into_iter().flatten() {
        let host = d["PathOnHost"].as_str().unwrap_or_default();
        let ctr = d["PathInContainer"]
            .as_str()
            .filter(|c| !c.is_empty())
            .unwrap_or(host);
        let perms = d["CgroupPermissions"]
            .as_str()
            .filter(|p| !p.is_empty())
            .unwrap_or("rwm");
        let (n, r) = device_of(host, ctr, perms)?;
        nodes.retain(|x| x["path"] != n["path"]);
        nodes.push(n);
        rules.push(r);
    }
    Ok((nodes, rules))
}

/// Device requests (`--gpus`): berth has no device driver (NVIDIA's or another), so a
/// container that asks for one does not start, with dockerd's words when it has none.
pub fn device_requests(hc: &Value) -> Result<(), EngineError> {
    if let Some(r) = hc["DeviceRequests"].as_array().and_then(|a| a.first()) {
        let caps: Vec<String> = r["Capabilities"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|set| {
                let words: Vec<&str> = set
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                format!("[{}]", words.join(" "))
            })
            .collect();
        return Err(EngineError::internal(format!(
            "could not select device driver {:?} with capabilities: [{}]",
            r["Driver"].as_str().unwrap_or_default(),
            caps.join(" ")
        )));
    }
    Ok(())
}

/// `PidMode`, `IpcMode` and `UTSMode` as dockerd accepts them.
fn namespace_modes(hc: &Value) -> Result<(), EngineError> {
    let joined = |m: &str| m.strip_prefix("container:").is_some_and(|n| !n.is_empty());
    let pid = hc["PidMode"].as_str().unwrap_or_default();
    if !(pid.is_empty() || pid == "host" || joined(pid)) {
        return Err(EngineError::invalid(format!("invalid PID mode: {pid}")));
    }
    let ipc = hc["IpcMode"].as_str().unwrap_or_default();
    if !(matches!(ipc, "" | "host" | "private" | "shareable" | "none") || joined(ipc)) {
        return Err(EngineError::invalid(format!("invalid IPC mode: {ipc}")));
    }
    let uts = hc["UTSMode"].as_str().unwrap_or_default();
    if !matches!(uts, "" | "host") {
        return Err(EngineError::invalid(format!("invalid UTS mode: {uts}")));
    }
    Ok(())
}

/// Create-time checks of everything here, so that a bad option fails the create.
pub fn validate(hc: &Value, host_network: bool) -> Result<(), EngineError> {
    // a size limit on the writable layer: overlay on this storage cannot keep one
    if hc["StorageOpt"].as_object().is_some_and(|m| !m.is_empty()) {
        return Err(EngineError::internal(
            "--storage-opt is not supported: berth's overlay storage cannot limit the size of a container's writable layer",
        ));
    }
    namespace_modes(hc)?;
    for r in hc["DeviceCgroupRules"].as_array().into_iter().flatten() {
        device_cgroup_rule(r.as_str().unwrap_or_default())?;
    }
    capabilities(hc)?;
    options(hc, false)?;
    check_sysctls(hc, host_network)?;
    for d in hc["Devices"].as_array().into_iter().flatten() {
        let perms = d["CgroupPermissions"].as_str().unwrap_or("rwm");
        if perms.is_empty() || !perms.chars().all(|c| "rwm".contains(c)) {
            return Err(EngineError::invalid(format!(
                "invalid device mode: {perms}"
            )));
        }
        let host = d["PathOnHost"].as_str().unwrap_or_default();
        if !host.starts_with('/') {
            return Err(EngineError::invalid(format!(
                "invalid device path: {host:?}"
            )));
        }
    }
    Ok(())
}

// ---- seccomp ----------------------------------------------------------------------

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

    fn caps(hc: Value) -> Vec<String> {
        capabilities(&hc).unwrap()
    }

    #[test]
    fn capability_sets_as_docker_makes_them() {
        assert_eq!(caps(json!({})).len(), 14);
        let c = caps(json!({"CapAdd": ["net_admin"], "CapDrop": ["CHOWN"]}));
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()) && !c.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(caps(json!({"CapDrop": ["ALL"]})), Vec::<String>::new());
        assert_eq!(
            caps(json!({"CapDrop": ["ALL"], "CapAdd": ["KILL"]})),
            vec!["CAP_KILL"]
        );
        assert_eq!(caps(json!({"CapAdd": ["ALL"]})), all_caps());
        assert_eq!(caps(json!({"Privileged": true})), all_caps());
        assert!(all_caps().contains(&"CAP_SYS_ADMIN".to_string()));
        let e = capabilities(&json!({"CapAdd": ["CAP_FOO"]})).unwrap_err();
        assert_eq!(e.message, "invalid CapAdd: unknown capability: \"CAP_FOO\"");
    }

    #[test]
    fn security_options() {
        let o = options(&json!({"SecurityOpt": ["no-new-privileges"]}), false).unwrap();
        assert!(o.no_new_privileges);
        let o = options(&json!({"SecurityOpt": ["seccomp=unconfined"]}), true).unwrap();
        assert!(o.seccomp_off && o.no_new_privileges);
        let e = options(&json!({"SecurityOpt": ["seccomp={not json"]}), false).unwrap_err();
        assert!(
            e.message.starts_with("Decoding seccomp profile failed"),
            "{}",
            e.message
        );
        let e = options(
            &json!({"SecurityOpt": ["seccomp={\"syscalls\":[]}"]}),
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("defaultAction"), "{}", e.message);
        assert!(options(&json!({"SecurityOpt": ["bogus=1"]}), false).is_err());
    }

    #[test]
    fn sysctls() {
        let ok = check_sysctls(
            &json!({"Sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1"}}),
            false,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(check_sysctls(&json!({"Sysctls": {"vm.swappiness": "1"}}), false).is_err());
        assert!(check_sysctls(&json!({"Sysctls": {"net.ipv4.ip_forward": "1"}}), true).is_err());
    }

    #[test]
    fn device_cgroup_rules() {
        assert_eq!(
            device_cgroup_rule("c 1:3 rwm").unwrap(),
            json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        );
        assert_eq!(
            device_cgroup_rule("b *:* m").unwrap(),
            json!({"allow": true, "type": "b", "access": "m"})
        );
        for bad in ["x 1:2 r", "c 1 r", "c 1:2 rx", "c 1:2", "c a:2 r"] {
            assert!(device_cgroup_rule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_requests_and_storage_options_are_refused() {
        let gpus =
            json!({"DeviceRequests": [{"Driver": "", "Count": -1, "Capabilities": [["gpu"]]}]});
        assert_eq!(
            device_requests(&gpus).unwrap_err().message,
            "could not select device driver \"\" with capabilities: [[gpu]]"
        );
        let two = json!({"DeviceRequests": [{"Driver": "nvidia", "Capabilities": [["gpu", "utility"], ["compute"]]}]});
        assert_eq!(
            device_requests(&two).unwrap_err().message,
            "could not select device driver \"nvidia\" with capabilities: [[gpu utility] [compute]]"
        );
        assert!(device_requests(&json!({"DeviceRequests": []})).is_ok());
        assert!(device_requests(&json!({})).is_ok());
        assert!(validate(&json!({"StorageOpt": {"size": "1G"}}), false).is_err());
        assert!(validate(&json!({"StorageOpt": {}}), false).is_ok());
    }

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
