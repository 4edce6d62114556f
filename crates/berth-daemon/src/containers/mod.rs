//! Containers: records in the metadata database, a rootfs per container (an overlay
//! mount of the image's layers under a private upper directory, or a copy with the vfs
//! driver), and a `berth-shim` per running container.
//!
//! Start: mount the rootfs, write the bundle (`config.json`, hosts, hostname,
//! resolv.conf), spawn the shim (it creates the container and reports `ok PID` on a
//! pipe), let attached clients connect to it, then tell it `start`. A task per running
//! container holds a `wait` connection to its shim; when the exit comes, it records it,
//! unmounts the rootfs and removes the container if it was created with AutoRemove.

mod prepare;
mod restore;
mod start;
mod stop;
mod update;

use crate::error::EngineError;
use crate::events::Events;
use crate::model::{attrs, short, Ctr, State, ZERO_TIME};
use berth_image::digest::Digest;
use berth_image::ImageStore;
use berth_store::{ContainerRow, Db};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::UnixStream;
use tokio::sync::watch;

pub struct Containers {
    db: Arc<Db>,
    pub root: PathBuf,
    pub exec_root: PathBuf,
    shim: PathBuf,
    builtin_runtime: PathBuf,
    /// a sealed copy of `builtin_runtime`, which shims run (CVE-2019-5736)
    sealed_runtime: Option<std::os::fd::OwnedFd>,
    /// what this machine's cgroups can do
    pub sys: crate::resources::SysInfo,
    /// what containers see at `/sys/fs/cgroup`
    cgroup_view: berth_runtime::spec::CgroupView,
    default_ulimits: serde_json::Map<String, Value>,
    runtimes: std::collections::BTreeMap<String, PathBuf>,
    by_id: Mutex<HashMap<String, Arc<Ctr>>>,
    pub execs: crate::model::Execs,
    images: Arc<ImageStore>,
    /// berth-init, written out at start, for `--init`
    init: PathBuf,
    /// daemon.json `userns-remap`, when set
    pub remap: Option<Arc<crate::userns::Remap>>,
    pub net: Arc<crate::networks::Networks>,
    pub vols: Arc<crate::volumes::Volumes>,
}

/// berth-init, built by build.rs.
const INIT_BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth-init"));
/// Where `--init` puts it in the container.
pub const INIT_PATH: &str = "/sbin/docker-init";

/// Writes berth-init to `dir` (whole or not at all) and returns its path.
fn write_init(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("berth-init");
    let tmp = dir.join("berth-init.tmp");
    std::fs::write(&tmp, INIT_BINARY)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

const ADJECTIVES: &[&str] = &[
    "brave", "calm", "eager", "fond", "gentle", "happy", "jolly", "keen", "lucid", "merry",
    "nimble", "proud", "quiet", "sharp", "tender", "vivid", "witty", "zealous",
];
const NOUNS: &[&str] = &[
    "albatross",
    "beacon",
    "cutter",
    "dinghy",
    "ferry",
    "galleon",
    "harbor",
    "island",
    "jetty",
    "keel",
    "lighthouse",
    "mooring",
    "narwhal",
    "oar",
    "pier",
    "quay",
    "rudder",
    "schooner",
    "tide",
    "wharf",
];

/// Container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, as Docker requires.
pub fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Containers {
    pub fn open(
        db: Arc<Db>,
        cfg: &crate::config::Config,
        images: Arc<ImageStore>,
        remap: Option<Arc<crate::userns::Remap>>,
        net: Arc<crate::networks::Networks>,
        vols: Arc<crate::volumes::Volumes>,
    ) -> anyhow::Result<Self> {
        let (data_root, exec_root) = (&cfg.data_root, &cfg.exec_root);
        let runtimes = cfg.runtimes.clone();
        let default_ulimits = cfg.default_ulimits.clone();
        let root = data_root.join("containers");
        std::fs::create_dir_all(&root)?;
        // containers' upper directories fill with files as they run and RUN steps
        berth_image::snapshot::spread_subdirs(&root);
        // short: unix socket paths below it must stay under 108 bytes
        let init = write_init(exec_root)?;
        let exec_root = exec_root.join("c");
        std::fs::create_dir_all(&exec_root)?;
        // both beside berthd
        let shim = std::env::current_exe()?.with_file_name("berth-shim");
        let builtin_runtime = std::env::current_exe()?.with_file_name("berth-runtime");
        let sys = crate::resources::SysInfo::detect();
        tracing::info!(
            version = sys.version(),
            hybrid = sys.hybrid,
            "cgroups found"
        );
        let c = Containers {
            db,
            root,
            exec_root,
            shim,
            sealed_runtime: match berth_runtime::builtin::sealed_copy(&builtin_runtime) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!(error = %e, "no sealed copy of berth-runtime: it will make its own each time");
                    None
                }
            },
            builtin_runtime,
            cgroup_view: crate::resources::cgroup_view(
                &sys,
                &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
            ),
            sys,
            default_ulimits,
            runtimes,
            by_id: Mutex::new(HashMap::new()),
            execs: Default::default(),
            images,
            init,
            remap,
            net,
            vols,
        };
        for row in c.db.containers()? {
            let spec: Value = serde_json::from_str(&row.spec).unwrap_or(Value::Null);
            let state: State =
                serde_json::from_str(&row.state).unwrap_or_else(|_| State::created());
            c.insert_mem(row, spec, state);
        }
        Ok(c)
    }

    pub fn all(&self) -> Vec<Arc<Ctr>> {
        let mut v: Vec<Arc<Ctr>> = self
            .by_id
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| b.created.cmp(&a.created));
        v
    }

    /// By full ID, name (with or without `/`), or unique ID prefix.
    pub fn get(&self, name: &str) -> Result<Arc<Ctr>, EngineError> {
        let name = name.trim_start_matches('/');
        let all = self.all();
        if let Some(c) = all.iter().find(|c| c.id == name || c.name() == name) {
            return Ok(c.clone());
        }
        let hits: Vec<&Arc<Ctr>> = all
            .iter()
            .filter(|c| !name.is_empty() && c.id.starts_with(name))
            .collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(EngineError::not_found(format!("No such container: {name}"))),
            _ => Err(EngineError::invalid(format!(
                "multiple IDs found with provided prefix: {name}"
            ))),
        }
    }

    pub fn uses_image(&self, id: &Digest) -> Option<String> {
        let id = id.to_string();
        self.all().into_iter().find(|c| c.image_id == id).map(|c| {
            let st = c.state();
            if st.status == "running" {
                format!("image is being used by running container {}", &c.id[..12])
            } else {
                format!("image is being used by stopped container {}", &c.id[..12])
            }
        })
    }

    fn persist(&self, c: &Ctr) {
        let s = c.state();
        if let Err(e) = self
            .db
            .set_container_state(&c.id, &serde_json::to_string(&s).unwrap_or_default())
        {
            tracing::error!(container = %c.id, error = %e, "saving container state failed");
        }
    }

    pub(crate) fn set_state(&self, c: &Ctr, f: impl FnOnce(&mut State)) {
        c.state.send_modify(f);
        self.persist(c);
    }

    fn random_name(&self) -> String {
        loop {
            let a = ADJECTIVES[rand::random::<u32>() as usize % ADJECTIVES.len()];
            let n = NOUNS[rand::random::<u32>() as usize % NOUNS.len()];
            let name = format!("{a}_{n}");
            if self.get(&name).is_err() {
                return name;
            }
            let name = format!("{a}_{n}{}", rand::random::<u16>() % 100);
            if self.get(&name).is_err() {
                return name;
            }
        }
    }

    /// Records a new container from a create request already merged with its image.
    pub fn create(
        &self,
        name: Option<&str>,
        image_id: &Digest,
        spec: Value,
    ) -> Result<Arc<Ctr>, EngineError> {
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                let n = n.trim_start_matches('/');
                if !valid_name(n) {
                    return Err(EngineError::invalid(format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                n.to_string()
            }
            None => self.random_name(),
        };
        let id = hex::encode(rand::random::<[u8; 32]>());
        let row = ContainerRow {
            id: id.clone(),
            name: name.clone(),
            image_id: image_id.to_string(),
            created: now(),
            spec: spec.to_string(),
            state: serde_json::to_string(&State::created()).unwrap_or_default(),
        };
        if let Ok(existing) = self.get(&name) {
            return Err(EngineError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                existing.id
            )));
        }
        if !self.db.insert_container(&row)? {
            return Err(EngineError::conflict(format!(
                "Conflict. The container name \"/{name}\" is already in use"
            )));
        }
        std::fs::create_dir_all(self.root.join(&id))
            .map_err(|e| EngineError::internal(e.to_string()))?;
        Ok(self.insert_mem(row, spec, State::created()))
    }

    pub fn dir(&self, c: &Ctr) -> PathBuf {
        self.root.join(&c.id)
    }

    pub fn state_dir(&self, c: &Ctr) -> PathBuf {
        self.exec_root.join(short(&c.id))
    }

    pub fn log_path(&self, c: &Ctr) -> PathBuf {
        self.dir(c).join(format!("{}-json.log", c.id))
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    pub fn shim_command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.shim);
        // where the built-in runtime keeps compiled seccomp filters
        cmd.env("BERTH_SECCOMP_CACHE", self.exec_root.join(".seccomp"));
        cmd
    }

    /// The OCI runtime command a container runs on: `berth-runtime` for the built-in
    /// runtime, or one configured (runc, crun).
    pub fn runtime_binary(&self, c: &Ctr) -> &PathBuf {
        c.host_config()["Runtime"]
            .as_str()
            .and_then(|r| self.runtimes.get(r))
            .unwrap_or(&self.builtin_runtime)
    }

    /// The runtime as the shim is to run it, and the descriptor the shim must inherit
    /// for it: the sealed copy of the built-in runtime (`/proc/self/fd/N`), or the
    /// configured binary.
    pub fn shim_runtime(&self, c: &Ctr) -> (PathBuf, Option<i32>) {
        let path = self.runtime_binary(c);
        match &self.sealed_runtime {
            Some(fd) if *path == self.builtin_runtime => {
                let n = std::os::fd::AsRawFd::as_raw_fd(fd);
                (PathBuf::from(format!("/proc/self/fd/{n}")), Some(n))
            }
            _ => (path.clone(), None),
        }
    }

    pub fn shim_socket(&self, c: &Ctr) -> PathBuf {
        self.state_dir(c).join("shim.sock")
    }

    /// Sends one command to the shim and reads its one-line answer.
    pub async fn shim_call(&self, c: &Ctr, cmd: &str) -> Result<String, EngineError> {
        self.shim_call_within(c, cmd, SHIM_ANSWER).await
    }

    /// A shim command that gets `limit` for its answer (a shim that does not answer is
    /// an error, never a request that hangs).
    pub async fn shim_call_within(
        &self,
        c: &Ctr,
        cmd: &str,
        limit: std::time::Duration,
    ) -> Result<String, EngineError> {
        let sock = self.shim_socket(c);
        tokio::time::timeout(limit, crate::shimctl::call(&sock, cmd))
            .await
            .map_err(|_| {
                EngineError::internal(format!(
                    "the shim of container {} does not answer",
                    &c.id[..12]
                ))
            })?
            .map_err(|e| match e.message.strip_prefix("no shim: ") {
                Some(m) => {
                    EngineError::internal(format!("container {} has no shim: {m}", &c.id[..12]))
                }
                None => e,
            })
    }

    /// The container's rootfs at `rootfs`: an overlay of the image's layers under its
    /// private upper directory, or (vfs) a copy of the image made once.
    pub(crate) fn mount_rootfs(
        &self,
        c: &Ctr,
        layers: &[PathBuf],
        driver: berth_image::snapshot::Driver,
    ) -> Result<(), EngineError> {
        let io = |e: std::io::Error| EngineError::internal(e.to_string());
        let dir = self.dir(c);
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io)?;
        let remap = self.remap_of(c);
        match driver {
            berth_image::snapshot::Driver::Overlay => {
                let (upper, work) = (dir.join("upper"), dir.join("work"));
                std::fs::create_dir_all(&upper).map_err(io)?;
                std::fs::create_dir_all(&work).map_err(io)?;
                if let Some(r) = remap {
                    // the container's root owns its root directory
                    std::os::unix::fs::chown(&upper, Some(r.root_uid()), Some(r.root_gid()))
                        .map_err(io)?;
                }
                let lower: Vec<String> = layers
                    .iter()
                    .rev()
                    .map(|p| match remap {
                        Some(r) => r.layer_path(p).display().to_string(),
                        None => p.display().to_string(),
                    })
                    .collect();
                let opts = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.join(":"),
                    upper.display(),
                    work.display()
                );
                let data = std::ffi::CString::new(opts)
                    .map_err(|e| EngineError::internal(e.to_string()))?;
                rustix::mount::mount(
                    "overlay",
                    &rootfs,
                    "overlay",
                    rustix::mount::MountFlags::empty(),
                    Some(data.as_c_str()),
                )
                .map_err(|e| {
                    EngineError::internal(format!("mounting the container's rootfs: {e}"))
                })?;
            }
            berth_image::snapshot::Driver::Copy => {
                let empty = std::fs::read_dir(&rootfs)
                    .map(|mut r| r.next().is_none())
                    .unwrap_or(true);
                if empty {
                    if let Some(top) = layers.last() {
                        let st = std::process::Command::new("cp")
                            .arg("-a")
                            .arg("--reflink=auto")
                            .arg(format!("{}/.", top.display()))
                            .arg(&rootfs)
                            .status()
                            .map_err(io)?;
                        if !st.success() {
                            return Err(EngineError::internal(
                                "copying the image into the container failed",
                            ));
                        }
                        if let Some(r) = remap {
                            r.shift_tree(&rootfs).map_err(io)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Ends the exec shims in a container's state folder that still wait for their start
/// (before that folder goes, or when nobody will start them), rather than leaving them
/// to give up after their minute.
async fn abort_waiting_execs(state: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(state) else {
        return;
    };
    for e in rd.flatten() {
        let sock = e.path().join("shim.sock");
        if e.file_name().to_string_lossy().starts_with('x') && sock.exists() {
            let ask = crate::shimctl::call(&sock, "abort");
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), ask).await;
        }
    }
}

/// A container's restart policy, from its HostConfig.
#[derive(Debug, Clone, PartialEq)]
pub enum Restart {
    No,
    Always,
    UnlessStopped,
    OnFailure(i64),
}

impl Restart {
    /// Docker's checks of a `RestartPolicy`.
    pub fn validate(rp: &Value) -> Result<(), EngineError> {
        let name = rp["Name"].as_str().unwrap_or_default();
        if !matches!(name, "" | "no" | "always" | "unless-stopped" | "on-failure") {
            return Err(EngineError::invalid(format!(
                "invalid restart policy '{name}'"
            )));
        }
        if name != "on-failure" && rp["MaximumRetryCount"].as_i64().unwrap_or(0) != 0 {
            return Err(EngineError::invalid(format!(
                "maximum retry count cannot be used with restart policy '{name}'"
            )));
        }
        Ok(())
    }

    pub fn of(c: &Ctr) -> Restart {
        let rp = &c.host_config()["RestartPolicy"];
        match rp["Name"].as_str().unwrap_or_default() {
            "always" => Restart::Always,
            "unless-stopped" => Restart::UnlessStopped,
            "on-failure" => Restart::OnFailure(rp["MaximumRetryCount"].as_i64().unwrap_or(0)),
            _ => Restart::No,
        }
    }

    /// Docker's rule after an exit that nobody asked for (a user's `stop` cancels any
    /// restart; `kill` does not).
    pub fn after_exit(&self, code: i64, restarts: i64) -> bool {
        match self {
            Restart::No => false,
            Restart::Always | Restart::UnlessStopped => true,
            Restart::OnFailure(max) => code != 0 && (*max == 0 || restarts < *max),
        }
    }

    /// Docker's rule when the daemon starts.
    pub fn on_daemon_start(&self, manually_stopped: bool) -> bool {
        match self {
            Restart::Always => true,
            Restart::UnlessStopped => !manually_stopped,
            _ => false,
        }
    }
}

/// The wait before restart number `n` (0-based): 100 ms doubling up to a minute, as
/// Docker's; back to the start once a run lasted 10 s.
pub fn restart_delay(n: u32) -> std::time::Duration {
    let ms = 100u64.saturating_mul(1u64 << n.min(20));
    std::time::Duration::from_millis(ms.min(60_000))
}

/// The ID the shim and the runtime know a container by: short enough for socket paths.
/// How long berthd waits for a shim's answer before it takes the shim for stuck.
const SHIM_ANSWER: std::time::Duration = std::time::Duration::from_secs(60);
/// ... to a kill, which the shim answers at once.
const SHIM_KILL_ANSWER: std::time::Duration = std::time::Duration::from_secs(3);

/// Docker's codes for a process that could not be started.
fn exit_code_for(msg: &str) -> i64 {
    if msg.contains("no such file") || msg.contains("not found") {
        127
    } else if msg.contains("ermission denied") || msg.contains("EACCES") {
        126
    } else {
        128
    }
}

/// A container's legacy links, `HostConfig.Links` entries `NAME:ALIAS` (also dockerd's
/// stored `/NAME:/PARENT/ALIAS`), as (target, alias).
pub fn links_of(hc: &Value) -> Vec<(String, String)> {
    crate::spec::strings(&hc["Links"])
        .unwrap_or_default()
        .iter()
        .map(|l| {
            let (t, a) = l.split_once(':').unwrap_or((l, l));
            let t = t.trim_start_matches('/').to_string();
            let a = a.rsplit('/').next().unwrap_or(a).to_string();
            (t, a)
        })
        .collect()
}
