//! The OCI runtime spec (`config.json`) berth gives a container: Docker's defaults
//! (capabilities, mounts, masked and read-only paths, device rules) around the process
//! the image and the create request describe.

use serde_json::{json, Value};
use std::path::PathBuf;

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Network {
    /// a network namespace of its own, made by the runtime (only `lo`: `--network none`)
    #[default]
    Private,
    /// no network namespace of its own
    Host,
    /// the namespace at this path (made and wired by berthd, or another container's)
    Joined(String),
}

/// A bind or tmpfs mount into the container.
#[derive(Debug, Clone)]
pub struct Mount {
    pub destination: String,
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// A namespace (pid, ipc, uts) of the container's own, the host's, or another
/// container's (`/proc/PID/ns/KIND` of its init).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NsMode {
    #[default]
    Private,
    Host,
    Joined(String),
}

/// What a container runs, resolved from the image config and the create request.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub tty: bool,
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    pub network: Network,
    pub mounts: Vec<Mount>,
    /// OCI `linux.resources` without devices (limits), `{}` for none
    pub resources: Value,
    /// OCI `process.rlimits`; empty: the runtime's own are inherited
    pub rlimits: Vec<Value>,
    /// bytes of `/dev/shm`
    pub shm_size: i64,
    /// `linux.cgroupsPath`
    pub cgroups_path: String,
    /// the process's capabilities (bounding = effective = permitted; none inheritable)
    pub caps: Vec<String>,
    pub no_new_privileges: bool,
    /// `linux.seccomp`; None: unconfined
    pub seccomp: Option<Value>,
    /// `--privileged`: no masked or read-only paths, /sys writable, every device
    pub privileged: bool,
    /// `linux.devices` to create, and device cgroup rules to add
    pub devices: Vec<Value>,
    pub device_rules: Vec<Value>,
    /// `linux.sysctl`
    pub sysctl: serde_json::Map<String, Value>,
    /// a user namespace of its own: `linux.uidMappings` and `linux.gidMappings`
    pub userns: Option<(Value, Value)>,
    /// what the container sees at `/sys/fs/cgroup`
    pub cgroups: CgroupView,
    /// a cgroup namespace of its own (`--cgroupns private`)
    pub cgroupns: bool,
    /// the pid, ipc and uts namespaces (`--pid`, `--ipc`, `--uts`)
    pub pid: NsMode,
    pub ipc: NsMode,
    pub uts: NsMode,
    /// `process.oomScoreAdj` (`--oom-score-adj`)
    pub oom_score_adj: Option<i64>,
    /// `domainname` (`--domainname`), set in a UTS namespace of the container's own
    pub domainname: String,
    /// `annotations` (`--annotation`)
    pub annotations: serde_json::Map<String, Value>,
    /// masked and read-only paths other than Docker's (`--security-opt
    /// systempaths=unconfined`: none; the API's `MaskedPaths`/`ReadonlyPaths`)
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
}

/// The container's own cgroups at `/sys/fs/cgroup`, read-only (writable with
/// `--privileged`), as Docker shows them: programs (the JVM, Go, Node, glibc) size
/// themselves from the limits they find there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CgroupView {
    /// nothing is mounted there
    #[default]
    None,
    /// cgroup v2: the cgroup2 filesystem, whose root in the container's cgroup
    /// namespace is its own cgroup
    Unified,
    /// cgroup v1 or hybrid: a tmpfs with each controller hierarchy's subtree of the
    /// container bound into it
    V1(Vec<V1Hierarchy>),
}

/// A v1 hierarchy of the host: where it is mounted, and the names it has under
/// `/sys/fs/cgroup` in the container (the mount point's, and each of its controllers'
/// when they are mounted together, where the host has symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount_point: PathBuf,
    pub names: Vec<String>,
}

/// The mounts (and read-only paths) that make the view.
fn cgroup_mounts(r: &RunSpec, mounts: &mut Vec<Value>, readonly: &mut Vec<String>) {
    let access = if r.privileged { "rw" } else { "ro" };
    match &r.cgroups {
        CgroupView::None => {}
        CgroupView::Unified => mounts.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", access],
        )),
        CgroupView::V1(hierarchies) => {
            mounts.push(mount(
                "/sys/fs/cgroup",
                "tmpfs",
                "tmpfs",
                &["nosuid", "noexec", "nodev", "mode=755"],
            ));
            let rel = r.cgroups_path.trim_start_matches('/');
            for h in hierarchies {
                let source = h.mount_point.join(rel).display().to_string();
                for name in &h.names {
                    mounts.push(mount(
                        &format!("/sys/fs/cgroup/{name}"),
                        "bind",
                        &source,
                        &["bind", "nosuid", "noexec", "nodev", access, "rprivate"],
                    ));
                }
            }
            // the tmpfs itself, once the binds are in it
            if !r.privileged {
                readonly.push("/sys/fs/cgroup".into());
            }
        }
    }
}

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": kind, "source": source, "options": options})
}

/// Devices a container may use, as Docker allows them by default.
fn device_rules() -> Value {
    let allow = |kind: &str, major: i64, minor: i64| {
        // a wildcard minor is left out, as the OCI spec says
        if minor < 0 {
            json!({"allow": true, "type": kind, "major": major, "access": "rwm"})
        } else {
            json!({"allow": true, "type": kind, "major": major, "minor": minor, "access": "rwm"})
        }
    };
    json!([
        {"allow": false, "access": "rwm"},
        allow("c", 1, 3),  // null
        allow("c", 1, 5),  // zero
        allow("c", 1, 7),  // full
        allow("c", 1, 8),  // random
        allow("c", 1, 9),  // urandom
        allow("c", 5, 0),  // tty
        allow("c", 5, 1),  // console
        allow("c", 5, 2),  // ptmx
        allow("c", 136, -1), // pts
        allow("c", 10, 200), // tun
    ])
}

/// An OCI process (a `config.json`'s `process`, or an exec's `process.json`).
pub struct Process<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: &'a [u32],
    pub tty: bool,
}

impl Process<'_> {
    pub fn to_json(&self) -> Value {
        let caps: Vec<&str> = DEFAULT_CAPS.to_vec();
        json!({
            "terminal": self.tty,
            "user": {"uid": self.uid, "gid": self.gid, "additionalGids": self.additional_gids},
            "args": self.args,
            "env": self.env,
            "cwd": self.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        })
    }
}

/// The `config.json` for `r`.
pub fn build(r: &RunSpec) -> Value {
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &[
                "nosuid",
                "noexec",
                "nodev",
                "mode=1777",
                &format!("size={}", r.shm_size),
            ],
        ),
    ];
    let mut readonly: Vec<String> = match &r.readonly_paths {
        Some(p) => p.clone(),
        None => READONLY.iter().map(|p| p.to_string()).collect(),
    };
    cgroup_mounts(r, &mut mounts, &mut readonly);
    for m in &r.mounts {
        mounts.push(json!({"destination": m.destination, "type": m.kind, "source": m.source, "options": m.options}));
    }
    let mut namespaces = Vec::new();
    for (kind, mode) in [("pid", &r.pid), ("ipc", &r.ipc), ("uts", &r.uts)] {
        match mode {
            NsMode::Private => namespaces.push(json!({ "type": kind })),
            NsMode::Joined(p) => namespaces.push(json!({"type": kind, "path": p})),
            NsMode::Host => {}
        }
    }
    namespaces.push(json!({"type": "mount"}));
    match &r.network {
        Network::Private => namespaces.push(json!({"type": "network"})),
        Network::Joined(p) => namespaces.push(json!({"type": "network", "path": p})),
        Network::Host => {}
    }
    if r.userns.is_some() {
        namespaces.push(json!({"type": "user"}));
    }
    if r.cgroupns {
        namespaces.push(json!({"type": "cgroup"}));
    }
    let mut resources = match &r.resources {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let mut rules = if r.privileged {
        json!([{"allow": true, "access": "rwm"}])
    } else {
        device_rules()
    };
    if let Some(a) = rules.as_array_mut() {
        a.extend(r.device_rules.iter().cloned());
    }
    resources.insert("devices".into(), rules);
    let mut process = Process {
        args: &r.args,
        env: &r.env,
        cwd: &r.cwd,
        uid: r.uid,
        gid: r.gid,
        additional_gids: &r.additional_gids,
        tty: r.tty,
    }
    .to_json();
    if !r.rlimits.is_empty() {
        process["rlimits"] = Value::from(r.rlimits.clone());
    }
    if let Some(o) = r.oom_score_adj {
        process["oomScoreAdj"] = json!(o);
    }
    process["capabilities"] = json!({"bounding": r.caps, "effective": r.caps, "permitted": r.caps});
    // set only when asked: libcontainer loads seccomp before dropping capabilities
    // (as a privileged operation) only when this is absent
    match process.as_object_mut() {
        Some(p) if !r.no_new_privileges => {
            p.remove("noNewPrivileges");
        }
        _ => process["noNewPrivileges"] = json!(true),
    }
    if r.privileged {
        // /sys as the host has it, writable
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" {
                m["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
            }
        }
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": r.cgroups_path,
        "resources": resources,
    });
    if !r.privileged {
        linux["maskedPaths"] = match &r.masked_paths {
            Some(p) => json!(p),
            None => json!(MASKED),
        };
        linux["readonlyPaths"] = json!(readonly);
    }
    if let Some(sc) = &r.seccomp {
        linux["seccomp"] = sc.clone();
    }
    if !r.devices.is_empty() {
        linux["devices"] = Value::from(r.devices.clone());
    }
    if !r.sysctl.is_empty() {
        linux["sysctl"] = Value::Object(r.sysctl.clone());
    }
    if let Some((uids, gids)) = &r.userns {
        linux["uidMappings"] = uids.clone();
        linux["gidMappings"] = gids.clone();
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": r.rootfs, "readonly": r.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    });
    if !r.annotations.is_empty() {
        spec["annotations"] = Value::Object(r.annotations.clone());
    }
    // a hostname is set in a UTS namespace of the container's own only
    if r.uts == NsMode::Private {
        spec["hostname"] = json!(r.hostname);
        if !r.domainname.is_empty() {
            spec["domainname"] = json!(r.domainname);
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_as_oci() {
        let r = RunSpec {
            id: "abc".into(),
            args: vec!["/bin/sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "abc".into(),
            tty: true,
            rootfs: "/tmp/rootfs".into(),
            mounts: vec![Mount {
                destination: "/etc/hosts".into(),
                kind: "bind".into(),
                source: "/tmp/hosts".into(),
                options: vec!["rbind".into(), "rprivate".into()],
            }],
            resources: json!({"memory": {"limit": 67108864}, "pids": {"limit": 10}}),
            rlimits: vec![json!({"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200})],
            shm_size: 1 << 20,
            cgroups_path: "/berth/abc".into(),
            caps: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            no_new_privileges: true,
            ..Default::default()
        };
        let v = build(&r);
        let spec: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("abc"));
        let ns = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap();
        assert_eq!(ns.len(), 5);
        let res = spec.linux().as_ref().unwrap().resources().as_ref().unwrap();
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(67108864));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 10);
        assert!(res.devices().as_ref().is_some_and(|d| !d.is_empty()));
        let rl = spec.process().as_ref().unwrap().rlimits().as_ref().unwrap();
        assert_eq!(rl[0].hard(), 200);
        let shm = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination().as_os_str() == "/dev/shm")
            .unwrap();
        assert!(shm
            .options()
            .as_ref()
            .unwrap()
            .contains(&"size=1048576".to_string()));
    }
}
