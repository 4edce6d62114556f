//! From a create request and its image to what the container runs: the merged Config
//! Docker stores (image defaults under the request's values), and the runtime spec.

use crate::error::EngineError;
use crate::model::Ctr;
use berth_runtime::spec::{Mount, Network, RunSpec};
use serde_json::{Map, Value};
use std::path::Path;

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        Value::String(s) => Some(vec![s.clone()]),
        _ => None,
    }
}

/// The request's Config over the image's: Env merged by key, Labels merged, Cmd and
/// Entrypoint as Docker resolves them (a request Entrypoint drops the image's Cmd).
pub fn merge_config(req: &Value, image: &Map<String, Value>) -> Value {
    let mut out = match req {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    // the create request's other parts are not the container's config
    out.remove("HostConfig");
    out.remove("NetworkingConfig");
    let req_entry = strings(&req["Entrypoint"]);
    let req_cmd = strings(&req["Cmd"]).filter(|c| !c.is_empty());
    let (entry, cmd) = match req_entry {
        Some(e) if !e.is_empty() || req["Entrypoint"].is_array() => (Some(e), req_cmd),
        _ => (
            strings(image.get("Entrypoint").unwrap_or(&Value::Null)),
            req_cmd.or_else(|| strings(image.get("Cmd").unwrap_or(&Value::Null))),
        ),
    };
    out.insert(
        "Entrypoint".into(),
        entry.map(Value::from).unwrap_or(Value::Null),
    );
    out.insert("Cmd".into(), cmd.map(Value::from).unwrap_or(Value::Null));
    let mut env: Vec<String> =
        strings(image.get("Env").unwrap_or(&Value::Null)).unwrap_or_default();
    for e in strings(&req["Env"]).unwrap_or_default() {
        let key = e.split('=').next().unwrap_or_default().to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        // as dockerd: `NAME` without `=` (`-e NAME` with NAME unset in the client's
        // environment) stays in the config, hides the image's value, and leaves the
        // process without the variable (see `run_spec`)
        env.push(e);
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    out.insert("Env".into(), Value::from(env));
    for key in ["WorkingDir", "User", "StopSignal"] {
        let empty = out
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty);
        if empty {
            if let Some(v) = image
                .get(key)
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                out.insert(key.into(), v.clone());
            }
        }
    }
    let mut labels = image
        .get("Labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(l) = req["Labels"].as_object() {
        labels.extend(l.clone());
    }
    out.insert("Labels".into(), Value::Object(labels));
    // a request's Healthcheck takes the image's test and timings where it has none
    if let (Some(img), Some(req_hc)) = (
        image.get("Healthcheck").and_then(Value::as_object),
        out.get_mut("Healthcheck").and_then(Value::as_object_mut),
    ) {
        let test_empty = req_hc
            .get("Test")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if test_empty {
            if let Some(t) = img.get("Test") {
                req_hc.insert("Test".into(), t.clone());
            }
        }
        for k in [
            "Interval",
            "Timeout",
            "StartPeriod",
            "StartInterval",
            "Retries",
        ] {
            if req_hc.get(k).and_then(Value::as_i64).unwrap_or(0) == 0 {
                if let Some(v) = img.get(k) {
                    req_hc.insert(k.into(), v.clone());
                }
            }
        }
    }
    // the request's volumes add to the image's
    if let (Some(img), Some(req_v)) = (
        image.get("Volumes").and_then(Value::as_object),
        out.get_mut("Volumes").and_then(Value::as_object_mut),
    ) {
        for (k, v) in img {
            req_v.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for key in ["ExposedPorts", "Volumes", "Healthcheck", "OnBuild", "Shell"] {
        if out.get(key).is_none_or(Value::is_null) {
            if let Some(v) = image.get(key) {
                out.insert(key.into(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Reads a file of the container's rootfs without following links out of it.
fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let fd = openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut s).ok()?;
    Some(s)
}

/// Creates `path` (and its parents) inside the container's rootfs, as Docker does for
/// the working directory; symlinks resolve inside the rootfs.
pub fn mkdir_in_root(root: &Path, path: &str) -> Result<(), EngineError> {
    use rustix::fs::{mkdirat, openat2, Mode, OFlags, ResolveFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let err = |e: rustix::io::Errno| {
        EngineError::invalid(format!("creating the working directory {path}: {e}"))
    };
    let rootfd = rustix::fs::open(root, flags, Mode::empty()).map_err(err)?;
    let mut prefix = std::path::PathBuf::from(".");
    for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let parent = openat2(
            &rootfd,
            &prefix,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
        .map_err(err)?;
        match mkdirat(&parent, comp, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(err(e)),
        }
        prefix.push(comp);
    }
    Ok(())
}

/// Where the container path `dest` leads inside `root`, symlinks followed as the
/// container would follow them (an absolute link is taken from the container's root,
/// `..` stops there), as Docker resolves a mount's destination: an image's `VOLUME
/// /data` where `/data` links to `/srv/data` is mounted on `/srv/data`. The part that
/// does not exist yet is kept as written (the runtime makes it).
pub fn resolve_in_root(root: &Path, dest: &str) -> Result<String, EngineError> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let err = |e: rustix::io::Errno| {
        EngineError::invalid(format!(
            "resolving the mount point {dest} in the container: {e}"
        ))
    };
    let rootfd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let link = |fd: &rustix::fd::OwnedFd| {
        std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(fd)
        ))
        .map_err(|e| EngineError::internal(e.to_string()))
    };
    let base = link(&rootfd)?;
    let comps: Vec<&str> = dest
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    // the deepest part that exists, resolved; the rest as written
    for n in (1..=comps.len()).rev() {
        match openat2(
            &rootfd,
            comps[..n].join("/"),
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => {
                let full = link(&fd)?;
                let inside = full.strip_prefix(&base).map_err(|_| {
                    EngineError::internal(format!("{dest} resolved outside the container"))
                })?;
                let mut out = format!("/{}", inside.display());
                for c in &comps[n..] {
                    if !out.ends_with('/') {
                        out.push('/');
                    }
                    out.push_str(c);
                }
                return Ok(out);
            }
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(err(e)),
        }
    }
    Ok(format!("/{}", comps.join("/")))
}

/// Finds the command in the rootfs the way the runtime's exec will, so a missing or
/// non-executable command fails before the container is created, with Docker's words
/// (the CLI turns them into exit codes 127 and 126).
pub fn check_command(root: &Path, args: &[String], env: &[String]) -> Result<(), EngineError> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let Some(cmd) = args.first() else {
        return Err(EngineError::invalid("no command specified"));
    };
    let fail = |m: String| {
        Err(EngineError::invalid(format!("failed to create task for container: unable to start container process: exec: \"{cmd}\": {m}")))
    };
    let rootfd = match rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(f) => f,
        Err(_) => return Ok(()),
    };
    let probe = |p: &str| -> Result<bool, rustix::io::Errno> {
        let fd = openat2(
            &rootfd,
            p.trim_start_matches('/'),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )?;
        let st = rustix::fs::fstat(&fd)?;
        let is_file =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
        Ok(is_file && st.st_mode & 0o111 != 0)
    };
    if cmd.contains('/') {
        return match probe(cmd) {
            Ok(true) => Ok(()),
            Ok(false) => fail("permission denied".into()),
            Err(_) => fail(format!("stat {cmd}: no such file or directory")),
        };
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut denied = false;
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        match probe(&format!("{dir}/{cmd}")) {
            Ok(true) => return Ok(()),
            Ok(false) => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        return fail("permission denied".into());
    }
    fail("executable file not found in $PATH".into())
}

/// `user`, `uid`, `user:group`, `uid:gid` → (uid, gid, supplementary gids).
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), EngineError> {
    if user.is_empty() {
        return Ok((0, 0, vec![]));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(root, "etc/passwd").unwrap_or_default();
    let group = read_in_root(root, "etc/group").unwrap_or_default();
    let (uid, mut gid, name) = match u.parse::<u32>() {
        Ok(n) => {
            let entry = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[2] == u);
            (
                n,
                entry.as_ref().and_then(|f| f[3].parse().ok()).unwrap_or(0),
                entry.map(|f| f[0].to_string()),
            )
        }
        Err(_) => {
            let f = passwd
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 3 && f[0] == u)
                .ok_or_else(|| {
                    EngineError::invalid(format!(
                        "unable to find user {u}: no matching entries in passwd file"
                    ))
                })?;
            (
                f[2].parse().unwrap_or(0),
                f[3].parse().unwrap_or(0),
                Some(u.to_string()),
            )
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    EngineError::invalid(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let extra = match name {
        Some(n) => group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .filter(|f| f.len() > 3 && f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => vec![],
    };
    Ok((uid, gid, extra))
}

/// A group's id by name in the rootfs' /etc/group.
fn group_id(root: &Path, name: &str) -> Option<u32> {
    read_in_root(root, "etc/group")?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// The runtime's view of a container about to start.
pub fn run_spec(
    c: &Ctr,
    rootfs: &Path,
    dir: &Path,
    hostname: &str,
    default_ulimits: &Map<String, Value>,
    network: Network,
) -> Result<RunSpec, EngineError> {
    let cfg = c.config();
    let hc = c.host_config();
    let mut args = strings(&cfg["Entrypoint"]).unwrap_or_default();
    args.extend(strings(&cfg["Cmd"]).unwrap_or_default());
    if args.is_empty() {
        return Err(EngineError::invalid("no command specified"));
    }
    let mut env = strings(&cfg["Env"]).unwrap_or_default();
    // a name without `=` is unset, not set empty
    env.retain(|e| !e.starts_with("HOSTNAME=") && e.contains('='));
    env.push(format!("HOSTNAME={hostname}"));
    if c.tty() && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = cfg["WorkingDir"]
        .as_str()
        .filter(|w| !w.is_empty())
        .unwrap_or("/")
        .to_string();
    if !cwd.starts_with('/') {
        return Err(EngineError::invalid(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let (uid, gid, additional_gids) =
        resolve_user(rootfs, cfg["User"].as_str().unwrap_or_default())?;
    let bind = |dest: &str, src: &Path, ro: bool| Mount {
        destination: dest.into(),
        kind: "bind".into(),
        source: src.display().to_string(),
        options: if ro {
            vec!["rbind".into(), "rprivate".into(), "ro".into()]
        } else {
            vec!["rbind".into(), "rprivate".into()]
        },
    };
    let mounts = vec![
        bind("/etc/resolv.conf", &dir.join("resolv.conf"), false),
        bind("/etc/hostname", &dir.join("hostname"), false),
        bind("/etc/hosts", &dir.join("hosts"), false),
    ];
    let short = crate::model::short(&c.id);
    let caps = crate::security::capabilities(&hc)?;
    let privileged = hc["Privileged"].as_bool().unwrap_or(false);
    let opts = crate::security::options(&hc, false)?;
    let seccomp = if privileged || opts.seccomp_off {
        None
    } else if let Some(p) = &opts.seccomp_profile {
        Some(crate::seccomp::from_profile(p, &caps))
    } else {
        Some(crate::seccomp::default_profile(&caps))
    };
    let (devices, device_rules) = crate::security::devices(&hc, privileged)?;
    let mut additional_gids = additional_gids;
    for g in strings(&hc["GroupAdd"]).unwrap_or_default() {
        let gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_id(rootfs, &g).ok_or_else(|| {
                EngineError::invalid(format!(
                    "Unable to find group {g}: no matching entries in group file"
                ))
            })?,
        };
        if !additional_gids.contains(&gid) {
            additional_gids.push(gid);
        }
    }
    let sysctl = crate::security::check_sysctls(&hc, network == Network::Host)?;
    crate::security::device_requests(&hc)?;
    Ok(RunSpec {
        caps,
        no_new_privileges: opts.no_new_privileges,
        seccomp,
        privileged,
        devices,
        device_rules,
        sysctl,
        userns: None,
        cgroups: Default::default(),
        cgroupns: false,
        pid: Default::default(),
        ipc: Default::default(),
        uts: Default::default(),
        oom_score_adj: hc["OomScoreAdj"].as_i64().filter(|v| *v != 0),
        annotations: hc["Annotations"].as_object().cloned().unwrap_or_default(),
        domainname: cfg["Domainname"].as_str().unwrap_or_default().to_string(),
        masked_paths: if opts.system_paths_off {
            Some(Vec::new())
        } else {
            strings(&hc["MaskedPaths"])
        },
        readonly_paths: if opts.system_paths_off {
            Some(Vec::new())
        } else {
            strings(&hc["ReadonlyPaths"])
        },
        resources: crate::resources::linux_resources(&hc),
        rlimits: crate::resources::rlimits(&hc, default_ulimits)?,
        shm_size: hc["ShmSize"]
            .as_i64()
            .filter(|s| *s > 0)
            .unwrap_or(crate::resources::DEFAULT_SHM),
        cgroups_path: crate::resources::cgroup_path(&hc, short),
        id: short.to_string(),
        args,
        env,
        cwd,
        uid,
        gid,
        additional_gids,
        hostname: hostname.to_string(),
        tty: c.tty(),
        rootfs: rootfs.to_path_buf(),
        readonly_rootfs: hc["ReadonlyRootfs"].as_bool().unwrap_or(false),
        network,
        mounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_like_docker() {
        let image = json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin", "A=1"], "WorkingDir": "/w", "Labels": {"a": "1"}});
        let image = image.as_object().unwrap();
        let m = merge_config(
            &json!({"Cmd": ["echo", "hi"], "Env": ["A=2"], "Labels": {"b": "2"}}),
            image,
        );
        assert_eq!(m["Cmd"], json!(["echo", "hi"]));
        assert_eq!(m["Env"], json!(["PATH=/bin", "A=2"]));
        let base = json!({"Env": ["PATH=/bin", "A=1", "B=2"]});
        let unset = merge_config(&json!({"Env": ["A", "C"]}), base.as_object().unwrap());
        assert_eq!(unset["Env"], json!(["PATH=/bin", "B=2", "A", "C"]));
        assert_eq!(m["WorkingDir"], "/w");
        assert_eq!(m["Labels"], json!({"a": "1", "b": "2"}));
        let m = merge_config(&json!({"Entrypoint": ["/bin/echo"]}), image);
        assert_eq!(m["Entrypoint"], json!(["/bin/echo"]));
        assert_eq!(m["Cmd"], Value::Null);
    }
}
