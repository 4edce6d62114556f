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

pub(crate) fn strings(v: &Value) -> Vec<String> {
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
}
