//! Containers: records in the metadata database, a rootfs per container (an overlay
//! mount of the image's layers under a private upper directory, or a copy with the vfs
//! driver), and a `berth-shim` per running container.
//!
//! Start: mount the rootfs, write the bundle (`config.json`, hosts, hostname,
//! resolv.conf), spawn the shim (it creates the container and reports `ok PID` on a
//! pipe), let attached clients connect to it, then tell it `start`. A task per running
//! container holds a `wait` connection to its shim; when the exit comes, it records it,
//! unmounts the rootfs and removes the container if it was created with AutoRemove.

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

    /// Live restore: containers that were running when berthd stopped are reconnected to
    /// their shims; one whose shim is gone gets the exit its shim recorded (or 255 when
    /// it died with the machine, as Docker reports).
    pub async fn restore(self: &Arc<Self>, events: &Arc<Events>) {
        self.undo_cut_starts().await;
        let mut to_start = Vec::new();
        for c in self.all() {
            let st = c.state();
            // a restart was pending when berthd stopped
            if st.status == "restarting" {
                self.set_state(&c, |s| s.status = "exited".into());
                to_start.push(c);
                continue;
            }
            if st.status != "running" && Restart::of(&c).on_daemon_start(st.manually_stopped) {
                to_start.push(c);
            }
        }
        for c in self
            .all()
            .into_iter()
            .filter(|c| c.state().status == "running")
        {
            let alive = UnixStream::connect(self.shim_socket(&c)).await.is_ok();
            if alive {
                let names: Vec<String> = crate::mounts::of(&c.spec())
                    .into_iter()
                    .filter(|m| m.kind == "volume")
                    .map(|m| m.name)
                    .collect();
                for n in &names {
                    self.vols.adopt(n);
                }
                *c.vols_taken.lock().unwrap_or_else(|p| p.into_inner()) = names;
                tracing::info!(container = %c.id, "reconnected to running container");
                let this = self.clone();
                let ev = events.clone();
                tokio::spawn(this.watch_exit_boxed(c, ev));
                continue;
            }
            let (code, at) = match berth_runtime::shim::read_exit_file(&self.state_dir(&c)) {
                Some(e) => e,
                None => (self.end_orphaned(&c).await as i32, 0),
            };
            crate::sys::unmount(&self.dir(&c).join("rootfs"));
            // no shim deleted it: its cgroups are left, empty once its processes died
            berth_runtime::cgroups::remove(&crate::resources::cgroup_path(
                &c.host_config(),
                short(&c.id),
            ));
            let oom = berth_runtime::shim::exit_was_oom(&self.state_dir(&c));
            self.set_state(&c, |s| {
                s.status = "exited".into();
                s.exit_code = code as i64;
                s.pid = 0;
                s.paused = false;
                s.oom_killed = oom;
                s.finished_at = if at > 0 {
                    chrono::DateTime::from_timestamp_nanos(at)
                        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                } else {
                    now()
                };
            });
            tracing::info!(container = %c.id, code, "container exited while berthd was down");
            let this = self.clone();
            if c.host_config()["AutoRemove"].as_bool().unwrap_or(false) {
                let _ = this.remove_with(&c, true, true, events).await;
                continue;
            }
            let st = c.state();
            let policy = Restart::of(&c);
            if policy.on_daemon_start(st.manually_stopped)
                || (!st.exit_on_next && policy.after_exit(code as i64, st.restart_count))
            {
                to_start.push(c);
            }
        }
        // networking: the running containers' endpoints back, the rest swept away
        let running: Vec<(String, String, crate::model::NetState)> = self
            .all()
            .into_iter()
            .filter(|c| c.state().status == "running")
            .map(|c| (c.id.clone(), c.name(), c.state().net.unwrap_or_default()))
            .collect();
        for c in self
            .all()
            .into_iter()
            .filter(|c| c.state().status != "running")
        {
            if c.state().net.is_some() {
                self.set_state(&c, |s| s.net = None);
            }
        }
        self.net.setup(&running).await;
        for c in to_start {
            // as Docker: a fresh start, the count and a user's stop forgotten
            match self.start(&c, events).await {
                Ok(()) => {
                    tracing::info!(container = %c.id, "started by its restart policy at daemon start");
                }
                Err(e) => {
                    tracing::warn!(container = %c.id, error = %e.message, "restart at daemon start failed")
                }
            }
        }
    }

    /// Starts that a stop of berthd cut short: a shim holds the lock of a container not
    /// recorded as running (its runtime `create` done or under way, the init waiting for
    /// `start`). Nobody got an answer for that start, so it is undone as a failed start
    /// is: the shim, its runtime and every process of the container's cgroups are
    /// killed and the rootfs unmounted; its network goes with the sweep. The container
    /// keeps the state it had, and starts again (by hand or by its restart policy).
    async fn undo_cut_starts(&self) {
        for c in self.all() {
            // execs are not kept across a restart: one still waiting for its start
            // never gets it
            let state = self.state_dir(&c);
            abort_waiting_execs(&state).await;
            if c.state().status == "running" {
                continue;
            }
            if berth_runtime::shim::lock_holder(&state).is_none() {
                continue;
            }
            tracing::warn!(container = %c.id, "undoing a start that berthd's stop cut short");
            let bundle = self.dir(&c).join("bundle");
            let id = short(&c.id).to_string();
            let _ = tokio::task::spawn_blocking(move || {
                berth_runtime::shim::force_end(&state, &bundle, &id, std::time::Duration::ZERO)
            })
            .await;
            crate::sys::unmount(&self.dir(&c).join("rootfs"));
        }
    }

    fn insert_mem(&self, row: ContainerRow, spec: Value, state: State) -> Arc<Ctr> {
        let ctr = Arc::new(Ctr {
            id: row.id.clone(),
            name: Mutex::new(row.name),
            image_id: row.image_id,
            created: row.created,
            spec: spec.into(),
            state: watch::Sender::new(state),
            pending_attach: watch::Sender::new(0),
            removing: std::sync::atomic::AtomicBool::new(false),
            starting: tokio::sync::Mutex::new(()),
            backoff: std::sync::atomic::AtomicU32::new(0),
            fs_lock: Mutex::new(()),
            removed: watch::Sender::new(false),
            vols_taken: Mutex::new(Vec::new()),
        });
        if let Ok(mut m) = self.by_id.lock() {
            m.insert(row.id, ctr.clone());
        }
        ctr
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

    /// Mounts the rootfs, writes the bundle, starts the shim and the container.
    /// A user's start: the restart count and a user's stop are forgotten.
    pub async fn start(
        self: &Arc<Self>,
        c: &Arc<Ctr>,
        events: &Arc<Events>,
    ) -> Result<(), EngineError> {
        if c.state().status != "running" {
            self.set_state(c, |s| {
                s.restart_count = 0;
                s.manually_stopped = false;
                s.exit_on_next = false;
            });
        }
        self.start_inner(c, events).await
    }

    async fn start_inner(
        self: &Arc<Self>,
        c: &Arc<Ctr>,
        events: &Arc<Events>,
    ) -> Result<(), EngineError> {
        let (result, failed) = {
            let _starting = c.starting.lock().await;
            let mut failed = false;
            let r = self.start_locked(c, events, &mut failed).await;
            (r, failed)
        };
        // a removal takes the start lock: AutoRemove after it is released
        if failed && c.host_config()["AutoRemove"].as_bool().unwrap_or(false) {
            let _ = self.remove_with(c, true, true, events).await;
        }
        result
    }

    /// [`Self::start_inner`] under the start lock; `failed` says a failure was recorded.
    async fn start_locked(
        self: &Arc<Self>,
        c: &Arc<Ctr>,
        events: &Arc<Events>,
        failed: &mut bool,
    ) -> Result<(), EngineError> {
        if c.removing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(EngineError::conflict(format!(
                "container {} is marked for removal and cannot be started",
                &c.id[..12]
            )));
        }
        let st = c.state();
        if st.status == "running" {
            return Err(EngineError::new(
                crate::error::Kind::NotModified,
                "container already started",
            ));
        }
        let image: Digest = c
            .image_id
            .parse()
            .map_err(|_| EngineError::internal("corrupt image id"))?;
        let layers = self.images.layer_dirs(&image)?;
        let driver = self.images.driver();
        let hostname = c.config()["Hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| c.id[..12].to_string());
        let joined = |other: &str| self.joined_netns(other);
        let attached = match self
            .net
            .attach(&c.id, &c.name(), &hostname, &c.spec(), &joined)
            .await
        {
            Ok(a) => a,
            Err(e) => return Err(self.start_failed(c, e, failed).await),
        };
        let net_state = attached.state.clone();
        self.set_state(c, |s| s.net = net_state);
        let this = self.clone();
        let c2 = c.clone();
        let prepared =
            tokio::task::spawn_blocking(move || this.prepare(&c2, &layers, driver, attached))
                .await
                .map_err(|e| EngineError::internal(e.to_string()))?;
        if let Err(e) = prepared {
            return Err(self.start_failed(c, e, failed).await);
        }
        if let Err(e) = self.spawn_shim(c).await {
            return Err(self.start_failed(c, e, failed).await);
        }
        // attached clients first, so they see everything
        let mut pending = c.pending_attach.subscribe();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            pending.wait_for(|n| *n == 0),
        )
        .await;
        let answer = self.shim_call(c, "start").await;
        let pid: i64 = match answer {
            Ok(a) => a.trim_start_matches("ok ").parse().unwrap_or(0),
            Err(e) => {
                let _ = self.shim_call(c, "kill 9").await;
                return Err(self.start_failed(c, e, failed).await);
            }
        };
        self.set_state(c, |s| {
            s.status = "running".into();
            s.pid = pid;
            s.exit_code = 0;
            s.error.clear();
            s.paused = false;
            s.oom_killed = false;
            s.started_at = now();
            s.finished_at = ZERO_TIME.into();
        });
        events.emit("container", "start", &c.id, attrs(c));
        self.watch_health(c, events);
        let this = self.clone();
        let c2 = c.clone();
        let ev = events.clone();
        tokio::spawn(this.watch_exit_boxed(c2, ev));
        Ok(())
    }

    /// Records a start that failed, as Docker does: exited with 126/127/128 and the
    /// error (the caller removes it if it was created with AutoRemove).
    async fn start_failed(&self, c: &Ctr, e: EngineError, failed: &mut bool) -> EngineError {
        *failed = true;
        crate::sys::unmount(&self.dir(c).join("rootfs"));
        self.release_run(c).await;
        let msg = e.message.clone();
        self.set_state(c, |s| {
            s.status = "exited".into();
            s.exit_code = exit_code_for(&msg);
            s.error = msg.clone();
            s.pid = 0;
            s.finished_at = now();
        });
        EngineError::invalid(msg)
    }

    /// Takes a stopped container off its networks and gives back its volumes (once,
    /// whoever calls first).
    async fn release_run(&self, c: &Ctr) {
        let taken = std::mem::take(&mut *c.vols_taken.lock().unwrap_or_else(|p| p.into_inner()));
        crate::mounts::release(&self.vols, &taken);
        let mut net = None;
        c.state.send_modify(|s| net = s.net.take());
        if let Some(st) = net {
            self.persist(c);
            self.net.detach(&c.id, &st).await;
        }
    }

    /// SIGKILL for the container's process; a shim that does not answer is killed with
    /// it (the exit recorded as 137, the cgroups removed), so a stop or removal never
    /// waits on a stuck shim.
    /// `ask`: false when the shim has just failed to answer.
    async fn sigkill(&self, c: &Ctr, ask: bool) -> Result<(), EngineError> {
        let asked = match ask {
            true => self.shim_call_within(c, "kill 9", SHIM_KILL_ANSWER).await,
            false => Err(EngineError::internal("the shim did not answer")),
        };
        match asked {
            Ok(_) => Ok(()),
            Err(e) if !self.state_dir(c).join("shim.sock").exists() => Err(e),
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e.message, "killing the container and its shim");
                let state = self.state_dir(c);
                let bundle = self.dir(c).join("bundle");
                let id = short(&c.id).to_string();
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = berth_runtime::shim::write_exit_file(&state, 128 + 9, false);
                    berth_runtime::shim::force_end(&state, &bundle, &id, std::time::Duration::ZERO)
                })
                .await;
                Ok(())
            }
        }
    }

    /// A container whose shim died without recording an exit (killed, or the machine
    /// went down): what is left of its processes is killed and its cgroups removed, as
    /// containerd does for a lost shim. Its exit code: 137 when something had to be
    /// killed, 255 when nothing was left.
    async fn end_orphaned(&self, c: &Ctr) -> i64 {
        let bundle = self.dir(c).join("bundle");
        let id = short(&c.id).to_string();
        let killed =
            tokio::task::spawn_blocking(move || berth_runtime::shim::end_orphaned(&bundle, &id))
                .await
                .unwrap_or(0);
        if killed > 0 {
            tracing::warn!(container = %c.id, killed, "the container's shim was lost: its processes were killed");
            128 + 9
        } else {
            255
        }
    }

    /// Ends a container's shim that is still there when the container is removed
    /// without running: a start under way (the process made, not yet started), or a
    /// shim that does not answer. The shim is asked to kill the process; if it has not
    /// exited a moment later, it and the process are killed and their cgroups removed.
    /// A shim that has already taken its socket away is finishing on its own.
    async fn end_shim(&self, c: &Ctr) {
        let state = self.state_dir(c);
        if !state.join("shim.sock").exists() {
            return;
        }
        let _ = self.shim_call_within(c, "kill 9", SHIM_KILL_ANSWER).await;
        let bundle = self.dir(c).join("bundle");
        let id = short(&c.id).to_string();
        let _ = tokio::task::spawn_blocking(move || {
            berth_runtime::shim::force_end(&state, &bundle, &id, std::time::Duration::from_secs(2))
        })
        .await;
    }

    /// A pid, ipc or uts namespace as `--pid`/`--ipc`/`--uts` ask for it: the host's, a
    /// running container's (`container:NAME`), else the container's own.
    fn ns_mode(
        &self,
        what: &str,
        kind: &str,
        mode: &str,
    ) -> Result<berth_runtime::spec::NsMode, EngineError> {
        use berth_runtime::spec::NsMode;
        if mode == "host" {
            return Ok(NsMode::Host);
        }
        let Some(other) = mode.strip_prefix("container:") else {
            return Ok(NsMode::Private);
        };
        let o = self.get(other)?;
        let st = o.state();
        if st.status != "running" || st.pid <= 0 {
            return Err(EngineError::conflict(format!(
                "cannot join {what} of a non running container: {}",
                o.id
            )));
        }
        // only a container made `shareable` lends its IPC namespace, as with dockerd
        // (one made before modes were written down has none, and lends it)
        if kind == "ipc"
            && !matches!(
                o.host_config()["IpcMode"].as_str(),
                None | Some("" | "shareable")
            )
        {
            return Err(EngineError::internal(
                "non-shareable IPC (hint: use IpcMode:shareable for the donor container)",
            ));
        }
        Ok(NsMode::Joined(format!("/proc/{}/ns/{kind}", st.pid)))
    }

    /// `--network container:NAME`: the other container's namespace (it must run), and
    /// its hosts and resolv.conf texts.
    fn joined_netns(&self, other: &str) -> Result<crate::networks::Joined, EngineError> {
        let o = self.get(other)?;
        let st = o.state();
        if st.status != "running" {
            return Err(EngineError::conflict(format!(
                "cannot join network namespace of a non running container: container {} is {}",
                o.id, st.status
            )));
        }
        let path = match st.net.as_ref().filter(|n| !n.netns.is_empty()) {
            Some(n) => n.netns.clone(),
            None => format!("/proc/{}/ns/net", st.pid),
        };
        let dir = self.dir(&o);
        Ok(crate::networks::Joined {
            netns: path,
            hosts: std::fs::read_to_string(dir.join("hosts")).unwrap_or_default(),
            resolv: std::fs::read_to_string(dir.join("resolv.conf")).unwrap_or_default(),
        })
    }

    /// The remapping a container runs with: the daemon's, unless it asked for the host's
    /// user namespace (`--userns=host`).
    pub fn remap_of(&self, c: &Ctr) -> Option<&crate::userns::Remap> {
        let host = c.host_config()["UsernsMode"].as_str() == Some("host");
        self.remap.as_deref().filter(|_| !host)
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

    /// Legacy links (`HostConfig.Links`, `NAME:ALIAS`) of a container about to start on
    /// the default bridge: each target must be running; gives the `/etc/hosts` lines and
    /// the environment Docker derives from them (`ALIAS_NAME`, `ALIAS_PORT_…`,
    /// `ALIAS_ENV_…`).
    fn link_info(&self, c: &Ctr) -> Result<(Vec<String>, Vec<String>), EngineError> {
        let mut hosts = Vec::new();
        let mut env = Vec::new();
        for (target, alias) in links_of(&c.host_config()) {
            let t = self.get(&target).map_err(|_| {
                EngineError::invalid(format!("could not get container for {target}"))
            })?;
            let st = t.state();
            if st.status != "running" {
                return Err(EngineError::invalid(format!(
                    "Cannot link to a non running container: /{} AS /{}/{alias}",
                    t.name(),
                    c.name()
                )));
            }
            let ip = st
                .net
                .as_ref()
                .and_then(|n| n.endpoints.iter().find(|e| e.network == "bridge"))
                .map(|e| e.ip.clone())
                .unwrap_or_default();
            let tname = t.name();
            if !ip.is_empty() {
                let names = if alias == tname {
                    alias.clone()
                } else {
                    format!("{alias} {tname}")
                };
                hosts.push(format!("{ip}\t{names} {}", &t.id[..12]));
            }
            let prefix = alias.to_ascii_uppercase().replace('-', "_");
            let mut ports: Vec<(u16, String)> = t.config()["ExposedPorts"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| {
                    let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                    Some((p.parse().ok()?, proto.to_string()))
                })
                .collect();
            ports.sort();
            if let Some((p, proto)) = ports.first() {
                env.push(format!("{prefix}_PORT={proto}://{ip}:{p}"));
            }
            for (p, proto) in &ports {
                let up = proto.to_ascii_uppercase();
                env.push(format!("{prefix}_PORT_{p}_{up}={proto}://{ip}:{p}"));
                env.push(format!("{prefix}_PORT_{p}_{up}_ADDR={ip}"));
                env.push(format!("{prefix}_PORT_{p}_{up}_PORT={p}"));
                env.push(format!("{prefix}_PORT_{p}_{up}_PROTO={proto}"));
            }
            env.push(format!("{prefix}_NAME=/{}/{alias}", c.name()));
            for kv in crate::spec::strings(&t.config()["Env"]).unwrap_or_default() {
                if let Some((k, v)) = kv.split_once('=') {
                    if k != "HOME" && k != "PATH" {
                        env.push(format!("{prefix}_ENV_{k}={v}"));
                    }
                }
            }
        }
        Ok((hosts, env))
    }

    fn prepare(
        &self,
        c: &Ctr,
        layers: &[PathBuf],
        driver: berth_image::snapshot::Driver,
        attached: crate::networks::Attachment,
    ) -> Result<(), EngineError> {
        let io = |e: std::io::Error| EngineError::internal(e.to_string());
        let (link_hosts, link_env) = self.link_info(c)?;
        let _fs = c.fs_lock.lock();
        self.mount_rootfs(c, layers, driver)?;
        let dir = self.dir(c);
        let rootfs = dir.join("rootfs");
        let cfg = c.config();
        let hostname = cfg["Hostname"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| c.id[..12].to_string());
        std::fs::write(dir.join("hostname"), format!("{hostname}\n")).map_err(io)?;
        let hosts = if matches!(
            crate::networks::Mode::of(&c.host_config()),
            crate::networks::Mode::Container(_)
        ) {
            // the other container's file, as Docker shares it
            attached.hosts.join("\n") + "\n"
        } else {
            let mut h = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n");
            for extra in crate::spec::strings(&c.host_config()["ExtraHosts"]).unwrap_or_default() {
                // NAME:IP (or NAME=IP)
                let (name, ip) = extra
                    .split_once('=')
                    .or_else(|| extra.split_once(':'))
                    .ok_or_else(|| EngineError::invalid(format!("invalid extra host: {extra}")))?;
                h.push_str(&format!("{ip}\t{name}\n"));
            }
            for l in &link_hosts {
                h.push_str(l);
                h.push('\n');
            }
            if attached.hosts.is_empty() {
                h.push_str(&format!("127.0.1.1\t{hostname}\n"));
            }
            for l in &attached.hosts {
                h.push_str(l);
                h.push('\n');
            }
            h
        };
        std::fs::write(dir.join("hosts"), hosts).map_err(io)?;
        std::fs::write(dir.join("resolv.conf"), &attached.resolv).map_err(io)?;
        let mut run = crate::spec::run_spec(
            c,
            &rootfs,
            &dir,
            &hostname,
            &self.default_ulimits,
            attached.network,
        )?;
        run.cgroups = self.cgroup_view.clone();
        run.cgroupns = c.host_config()["CgroupnsMode"].as_str() == Some("private");
        let hc = c.host_config();
        run.pid = self.ns_mode("PID", "pid", hc["PidMode"].as_str().unwrap_or_default())?;
        run.ipc = self.ns_mode("IPC", "ipc", hc["IpcMode"].as_str().unwrap_or_default())?;
        run.uts = self.ns_mode("UTS", "uts", hc["UTSMode"].as_str().unwrap_or_default())?;
        // link variables come first: the container's own win, as in Docker
        let own: Vec<String> = std::mem::take(&mut run.env);
        let mut env: Vec<String> = link_env
            .into_iter()
            .filter(|l| {
                let k = l.split('=').next().unwrap_or_default();
                !own.iter().any(|o| o.split('=').next() == Some(k))
            })
            .collect();
        env.extend(own);
        run.env = env;
        if let Some(r) = self.remap_of(c) {
            for f in ["hostname", "hosts", "resolv.conf"] {
                std::os::unix::fs::chown(dir.join(f), Some(r.root_uid()), Some(r.root_gid()))
                    .map_err(io)?;
            }
            run.userns = Some((
                crate::userns::Remap::spec_maps(&r.ids.uids),
                crate::userns::Remap::spec_maps(&r.ids.gids),
            ));
        }
        crate::security::default_net_sysctls(
            &c.host_config(),
            &mut run.sysctl,
            run.userns.is_some(),
        );
        let (mounts, taken) =
            crate::mounts::for_start(&self.vols, &crate::mounts::of(&c.spec()), &rootfs)?;
        *c.vols_taken.lock().unwrap_or_else(|p| p.into_inner()) = taken;
        run.mounts.extend(mounts);
        // parents before what is mounted inside them
        run.mounts
            .sort_by_key(|m| m.destination.split('/').filter(|x| !x.is_empty()).count());
        crate::spec::mkdir_in_root(&rootfs, &run.cwd)?;
        // a command a mount brings (a bind of a host directory) is the runtime's to find
        let under_mount = |p: &str| {
            run.mounts.iter().any(|m| {
                let d = m.destination.trim_end_matches('/');
                p == d || p.starts_with(&format!("{d}/"))
            })
        };
        let path_var = run
            .env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or_default()
            .to_string();
        let cmd = run.args.first().cloned().unwrap_or_default();
        let brought = if cmd.contains('/') {
            under_mount(&cmd)
        } else {
            path_var.split(':').any(under_mount)
        };
        if !brought {
            crate::spec::check_command(&rootfs, &run.args, &run.env)?;
        }
        if c.host_config()["Init"].as_bool().unwrap_or(false) {
            // our init as PID 1, at the path Docker's init has
            run.args
                .splice(0..0, [INIT_PATH.to_string(), "--".to_string()]);
            run.mounts.push(berth_runtime::spec::Mount {
                destination: INIT_PATH.into(),
                kind: "bind".into(),
                source: self.init.display().to_string(),
                options: vec!["bind".into(), "ro".into(), "rprivate".into()],
            });
        }
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(io)?;
        let spec = berth_runtime::spec::build(&run);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec(&spec).unwrap_or_default(),
        )
        .map_err(io)?;
        Ok(())
    }

    async fn spawn_shim(&self, c: &Ctr) -> Result<(), EngineError> {
        let state = self.state_dir(c);
        if state.join(berth_runtime::shim::LOCK_FILE).exists() {
            // the previous run's shim may still be having the runtime delete it
            let dir = state.clone();
            tokio::task::spawn_blocking(move || berth_runtime::shim::lock_state(&dir))
                .await
                .map_err(|e| EngineError::internal(e.to_string()))?
                .map_err(|e| EngineError::internal(e.to_string()))?;
        }
        abort_waiting_execs(&state).await;
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).map_err(|e| EngineError::internal(e.to_string()))?;
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let mut cmd = self.shim_command();
        cmd.arg("--id")
            .arg(short(&c.id))
            .arg("--bundle")
            .arg(self.dir(c).join("bundle"))
            .arg("--state")
            .arg(&state)
            .arg("--ready-fd")
            .arg(std::os::fd::AsRawFd::as_raw_fd(&w).to_string());
        if c.tty() {
            cmd.arg("--tty");
        }
        let log = crate::logconfig::LogConfig::of(&c.host_config());
        if log.readable() {
            cmd.arg("--log").arg(self.log_path(c));
            cmd.arg("--log-max-file").arg(log.max_file.to_string());
            if let Some(n) = log.max_size {
                cmd.arg("--log-max-size").arg(n.to_string());
            }
        }
        let (runtime, keep) = self.shim_runtime(c);
        cmd.arg("--runtime").arg(runtime);
        if c.config()["OpenStdin"].as_bool().unwrap_or(false) {
            cmd.arg("--stdin");
        }
        crate::shimctl::launch_shim(cmd, r, w, keep).await
    }

    /// [`Self::watch_exit`] behind a named Send type: a restart starts the container
    /// again, which spawns this again.
    fn watch_exit_boxed(
        self: Arc<Self>,
        c: Arc<Ctr>,
        events: Arc<Events>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.watch_exit(c, events))
    }

    async fn watch_exit(self: Arc<Self>, c: Arc<Ctr>, events: Arc<Events>) {
        let code = crate::shimctl::wait_exit_code(&self.shim_socket(&c)).await;
        let code = match code.or_else(|| {
            berth_runtime::shim::read_exit_file(&self.state_dir(&c)).map(|(c, _)| c as i64)
        }) {
            Some(code) => code,
            None => self.end_orphaned(&c).await,
        };
        crate::sys::unmount(&self.dir(&c).join("rootfs"));
        self.release_run(&c).await;
        let oom = berth_runtime::shim::exit_was_oom(&self.state_dir(&c));
        self.set_state(&c, |s| {
            s.status = "exited".into();
            s.exit_code = code;
            s.pid = 0;
            s.finished_at = now();
            s.paused = false;
            s.oom_killed = oom;
        });
        if oom {
            events.emit("container", "oom", &c.id, attrs(&c));
        }
        let mut a = attrs(&c);
        a.insert("exitCode".into(), code.to_string());
        events.emit("container", "die", &c.id, a);
        if c.host_config()["AutoRemove"].as_bool().unwrap_or(false) {
            let _ = self.remove_with(&c, true, true, &events).await;
            return;
        }
        let st = c.state();
        if !st.exit_on_next && Restart::of(&c).after_exit(code, st.restart_count) {
            self.restart_later(c, events).await;
        }
    }

    /// The restart policy's restart: `restarting` for the back-off delay, then start
    /// (unless a user stopped, started or removed it meanwhile).
    async fn restart_later(self: Arc<Self>, c: Arc<Ctr>, events: Arc<Events>) {
        let st = c.state();
        let ran = match (
            chrono::DateTime::parse_from_rfc3339(&st.started_at),
            chrono::DateTime::parse_from_rfc3339(&st.finished_at),
        ) {
            (Ok(a), Ok(b)) => (b - a).num_seconds(),
            _ => 0,
        };
        if ran >= 10 {
            c.backoff.store(0, std::sync::atomic::Ordering::SeqCst);
        }
        let n = c.backoff.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.set_state(&c, |s| s.status = "restarting".into());
        tokio::time::sleep(restart_delay(n)).await;
        if c.state().status != "restarting" || c.removing.load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.set_state(&c, |s| s.restart_count += 1);
        match self.start_inner(&c, &events).await {
            Ok(()) => {
                tracing::info!(container = %c.id, count = c.state().restart_count, "restarted by its restart policy");
            }
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e.message, "restart failed");
            }
        }
    }

    /// Sends a signal to the container's init. A paused container is thawed after a
    /// SIGKILL so that it dies (other signals wait for `unpause`), as Docker does.
    pub async fn kill(&self, c: &Ctr, sig: i32) -> Result<(), EngineError> {
        if c.state().status != "running" {
            return Err(EngineError::conflict(format!(
                "Cannot kill container: {}: container {} is not running",
                c.name(),
                c.id
            )));
        }
        // as dockerd: a kill is a user's stop for `unless-stopped` at the next daemon
        // start, and ends the restarts when it is SIGKILL or the stop signal (any signal,
        // when the container names none)
        let stop_signal = c.config()["StopSignal"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(berth_proto::signal::parse)
            .transpose()
            .map_err(EngineError::invalid)?;
        let exit = match stop_signal {
            Some(ss) if sig != 9 => ss == sig,
            _ => true,
        };
        self.set_state(c, |s| {
            s.manually_stopped = true;
            s.exit_on_next |= exit;
        });
        let mut rx = c.state.subscribe();
        if sig == 9 {
            self.sigkill(c, true).await?;
        } else {
            self.shim_call(c, &format!("kill {sig}")).await?;
        }
        if sig == 9 {
            self.thaw_if_paused(c).await;
            // as dockerd: a SIGKILL returns once the exit is recorded, so an inspect
            // right after sees the container exited with 137
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                rx.wait_for(|s| s.status != "running"),
            )
            .await;
        }
        Ok(())
    }

    async fn thaw_if_paused(&self, c: &Ctr) {
        if c.state().paused {
            match self.runtime_op(c, &["resume"]).await {
                Ok(()) => self.set_state(c, |s| s.paused = false),
                Err(e) => {
                    tracing::warn!(container = %c.id, error = %e.message, "thawing failed")
                }
            }
        }
    }

    /// Runs the container's runtime command (`--root STATE/rt OP... ID`).
    pub async fn runtime_op(&self, c: &Ctr, op: &[&str]) -> Result<(), EngineError> {
        let mut cmd = std::process::Command::new(self.runtime_binary(c));
        cmd.arg("--root")
            .arg(self.state_dir(c).join("rt"))
            .args(op)
            .arg(short(&c.id))
            .stdin(std::process::Stdio::null());
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .map_err(|e| EngineError::internal(e.to_string()))?
            .map_err(|e| EngineError::internal(format!("running the runtime: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(EngineError::internal(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    /// `POST /containers/{id}/update`: new limits and restart policy, checked as Docker
    /// checks them against what is set, stored, and applied at once to a running
    /// container (through its runtime's `update`). Returns Docker's warnings.
    pub async fn update(&self, c: &Ctr, body: &Value) -> Result<Vec<String>, EngineError> {
        let cannot =
            |msg: &str| EngineError::invalid(format!("Cannot update container {}: {msg}", c.id));
        if c.removing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(EngineError::conflict(format!(
                "Cannot update container {}: container is marked for removal and cannot be \"update\"",
                c.id
            )));
        }
        let cur = c.host_config();
        let get = |v: &Value, k: &str| v[k].as_i64().unwrap_or(0);
        for (new_key, old_key, msg) in [
            ("NanoCpus", "CpuPeriod", "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set"),
            ("NanoCpus", "CpuQuota", "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set"),
            ("CpuPeriod", "NanoCpus", "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set"),
            ("CpuQuota", "NanoCpus", "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set"),
        ] {
            if get(body, new_key) > 0 && get(&cur, old_key) > 0 {
                return Err(cannot(msg));
            }
        }
        let mut new = cur.clone();
        // a memory limit above the swap limit already set needs a new swap limit too
        if get(body, "Memory") != 0
            && get(body, "Memory") > get(&cur, "MemorySwap")
            && get(body, "MemorySwap") == 0
        {
            return Err(cannot("Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time"));
        }
        // Docker's update: a zero (or empty) field leaves the setting as it is
        for key in [
            "Memory",
            "MemorySwap",
            "MemoryReservation",
            "NanoCpus",
            "CpuShares",
            "CpuPeriod",
            "CpuQuota",
            "BlkioWeight",
        ] {
            if get(body, key) != 0 {
                new[key] = body[key].clone();
            }
        }
        for key in ["CpusetCpus", "CpusetMems"] {
            if body[key].as_str().is_some_and(|s| !s.is_empty()) {
                new[key] = body[key].clone();
            }
        }
        if !body["PidsLimit"].is_null() {
            // 0 and any negative value mean unlimited, recorded as 0 (as dockerd)
            new["PidsLimit"] = serde_json::json!(get(body, "PidsLimit").max(0));
        }
        let rp = &body["RestartPolicy"];
        if rp["Name"].as_str().is_some_and(|n| !n.is_empty()) {
            let name = rp["Name"].as_str().unwrap_or_default();
            if cur["AutoRemove"].as_bool().unwrap_or(false) && name != "no" {
                return Err(cannot(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                ));
            }
            Restart::validate(rp).map_err(|e| cannot(&e.message))?;
            new["RestartPolicy"] = rp.clone();
        }
        let warnings =
            crate::resources::verify(&mut new, &self.sys, true).map_err(|e| cannot(&e.message))?;
        if c.state().status == "running" {
            let mut resources = crate::resources::linux_resources(&new);
            if !body["PidsLimit"].is_null() && get(body, "PidsLimit") <= 0 {
                // back to unlimited
                resources["pids"] = serde_json::json!({"limit": -1});
            }
            if get(body, "CpuQuota") == -1 {
                // a quota taken away
                resources["cpu"]["quota"] = serde_json::json!(-1);
            }
            let file = self.state_dir(c).join("resources.json");
            std::fs::write(&file, resources.to_string())
                .map_err(|e| EngineError::internal(e.to_string()))?;
            let path = file.display().to_string();
            let r = self.runtime_op(c, &["update", "--resources", &path]).await;
            let _ = std::fs::remove_file(&file);
            r.map_err(|e| cannot(&e.message))?;
        }
        let mut spec = c.spec();
        spec["HostConfig"] = new;
        self.db
            .set_container_spec(&c.id, &spec.to_string())
            .map_err(|e| EngineError::internal(e.to_string()))?;
        if let Ok(mut s) = c.spec.write() {
            *s = spec;
        }
        Ok(warnings)
    }

    /// Changes a container's stored create request.
    pub fn edit_spec(&self, c: &Ctr, f: impl FnOnce(&mut Value)) -> Result<(), EngineError> {
        let mut spec = c.spec();
        f(&mut spec);
        self.db
            .set_container_spec(&c.id, &spec.to_string())
            .map_err(|e| EngineError::internal(e.to_string()))?;
        if let Ok(mut s) = c.spec.write() {
            *s = spec;
        }
        Ok(())
    }

    /// `network connect`: a stopped container joins at its next start; a running one
    /// gets the endpoint now.
    pub async fn connect(
        &self,
        c: &Ctr,
        net: &Arc<crate::networks::Net>,
        ep: &Value,
    ) -> Result<(), EngineError> {
        use crate::networks::Mode;
        match Mode::of(&c.host_config()) {
            Mode::Bridge(_) => {}
            Mode::None => {
                return Err(EngineError::invalid(
                    "container cannot be connected to multiple networks with one of the networks in private (none) mode",
                ))
            }
            _ => {
                return Err(EngineError::invalid(
                    "container sharing network namespace with another container or host cannot be connected to any other network",
                ))
            }
        }
        let already = crate::networks::requested(&c.spec())
            .iter()
            .any(|(k, _)| self.net.find(k).is_ok_and(|n| n.cfg.id == net.cfg.id));
        let st = c.state();
        if st.status == "running" {
            let mut ns = st.net.clone().unwrap_or_default();
            let hostname = c.config()["Hostname"]
                .as_str()
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| c.id[..12].to_string());
            self.net
                .connect_running(&c.id, &c.name(), &hostname, &mut ns, net, ep)
                .await?;
            self.set_state(c, |s| s.net = Some(ns));
        } else if already {
            // as dockerd: a stopped container already on the network keeps its settings
            return Ok(());
        }
        if !already {
            let (name, id) = (net.cfg.name.clone(), net.cfg.id.clone());
            let ep = ep.clone();
            self.edit_spec(c, |s| {
                let mode = s["HostConfig"]["NetworkMode"].as_str().unwrap_or_default();
                let is_mode = mode == name
                    || mode == id
                    || (name == "bridge" && (mode == "default" || mode.is_empty()));
                if is_mode && s[crate::networks::LEFT_MODE].as_bool() == Some(true) {
                    // back on the network its mode names
                    if let Some(m) = s.as_object_mut() {
                        m.remove(crate::networks::LEFT_MODE);
                    }
                }
                if !s["NetworkingConfig"]["EndpointsConfig"].is_object() {
                    s["NetworkingConfig"] = serde_json::json!({"EndpointsConfig": {}});
                }
                s["NetworkingConfig"]["EndpointsConfig"][name] = ep;
            })?;
        }
        Ok(())
    }

    /// `network disconnect`.
    pub async fn disconnect_from(
        &self,
        c: &Ctr,
        net: &Arc<crate::networks::Net>,
    ) -> Result<(), EngineError> {
        let st = c.state();
        if st.status == "running" {
            let mut ns = st.net.clone().unwrap_or_default();
            self.net.disconnect_running(&c.id, &mut ns, net).await?;
            self.set_state(c, |s| s.net = Some(ns));
        } else if !crate::networks::requested(&c.spec())
            .iter()
            .any(|(k, _)| self.net.find(k).is_ok_and(|n| n.cfg.id == net.cfg.id))
        {
            return Err(EngineError::new(
                crate::error::Kind::Forbidden,
                format!(
                    "container {} is not connected to network {}",
                    c.id, net.cfg.name
                ),
            ));
        }
        let (id, name) = (net.cfg.id.clone(), net.cfg.name.clone());
        let is_mode = |m: &str| {
            m == name || m == id || (name == "bridge" && (m == "default" || m.is_empty()))
        };
        self.edit_spec(c, |s| {
            if let Some(m) = s["NetworkingConfig"]["EndpointsConfig"].as_object_mut() {
                m.retain(|k, _| !is_mode(k));
            }
            if is_mode(s["HostConfig"]["NetworkMode"].as_str().unwrap_or_default()) {
                // as dockerd, the mode stays; the container no longer joins its network
                s[crate::networks::LEFT_MODE] = Value::Bool(true);
            }
        })
    }

    /// Freezes every process of a running container (the cgroup freezer).
    pub async fn pause(&self, c: &Ctr) -> Result<(), EngineError> {
        let st = c.state();
        if st.status != "running" {
            return Err(EngineError::conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        if st.paused {
            return Err(EngineError::conflict(format!(
                "Container {} is already paused",
                c.id
            )));
        }
        self.runtime_op(c, &["pause"]).await?;
        self.set_state(c, |s| s.paused = true);
        Ok(())
    }

    pub async fn unpause(&self, c: &Ctr) -> Result<(), EngineError> {
        let st = c.state();
        if st.status != "running" || !st.paused {
            return Err(EngineError::conflict(format!(
                "Container {} is not paused",
                c.id
            )));
        }
        self.runtime_op(c, &["resume"]).await?;
        self.set_state(c, |s| s.paused = false);
        Ok(())
    }

    /// Signal, then SIGKILL after `timeout` seconds.
    pub async fn stop(&self, c: &Ctr, sig: i32, timeout: i64) -> Result<bool, EngineError> {
        self.set_state(c, |s| {
            s.manually_stopped = true;
            s.exit_on_next = true;
        });
        if c.state().status == "restarting" {
            // the pending restart is called off
            self.set_state(c, |s| s.status = "exited".into());
            return Ok(true);
        }
        if c.state().status != "running" {
            return Ok(false);
        }
        let mut rx = c.state.subscribe();
        let answered = if sig == 9 {
            let _ = self.sigkill(c, true).await;
            true
        } else {
            self.shim_call_within(c, &format!("kill {sig}"), SHIM_KILL_ANSWER)
                .await
                .is_ok()
        };
        // a negative timeout waits as long as the process takes (dockerd's -1)
        if timeout < 0 {
            let _ = rx.wait_for(|s| s.status != "running").await;
            return Ok(true);
        }
        let dur = std::time::Duration::from_secs(timeout as u64);
        if tokio::time::timeout(dur, rx.wait_for(|s| s.status != "running"))
            .await
            .is_err()
        {
            let _ = self.sigkill(c, answered).await;
            self.thaw_if_paused(c).await;
            let _ = rx.wait_for(|s| s.status != "running").await;
        }
        Ok(true)
    }

    /// Removes a container; with `volumes`, its anonymous volumes too (`rm -v`, `--rm`)
    /// unless another container uses them.
    pub async fn remove_with(
        &self,
        c: &Ctr,
        force: bool,
        volumes: bool,
        events: &Events,
    ) -> Result<(), EngineError> {
        self.remove(c, force, events).await?;
        if volumes {
            for m in crate::mounts::of(&c.spec()) {
                if m.kind == "volume" && m.anonymous && self.volume_users(&m.name).is_empty() {
                    if let Err(e) = self.vols.remove(&m.name, &[]) {
                        tracing::warn!(volume = %m.name, error = %e.message, "removing an anonymous volume");
                    } else {
                        events.emit(
                            "volume",
                            "destroy",
                            &m.name,
                            BTreeMap::from([("driver".to_string(), "local".to_string())]),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Containers (IDs) whose mounts name volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|c| {
                crate::mounts::of(&c.spec())
                    .iter()
                    .any(|m| m.kind == "volume" && m.name == name)
            })
            .map(|c| c.id.clone())
            .collect()
    }

    pub async fn remove(&self, c: &Ctr, force: bool, events: &Events) -> Result<(), EngineError> {
        if c.state().status == "restarting" {
            if !force {
                return Err(EngineError::conflict(format!(
                    "cannot remove container \"/{}\": container is restarting: stop the container before removing or force remove",
                    c.name()
                )));
            }
            self.stop(c, 9, 0).await?;
        }
        if c.state().status == "running" {
            if !force {
                return Err(EngineError::conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    c.name()
                )));
            }
            self.stop(c, 9, 0).await?;
        }
        if c.removing.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(()); // already being removed
        }
        if c.state().status != "running" {
            // a start under way fails once its shim is gone; then nothing else starts it
            self.end_shim(c).await;
            let _started = c.starting.lock().await;
            if c.state().status == "running" {
                // it had started after all
                if let Err(e) = self.stop(c, 9, 0).await {
                    c.removing.store(false, std::sync::atomic::Ordering::SeqCst);
                    return Err(e);
                }
            }
            self.release_run(c).await;
        }
        let dir = self.dir(c);
        crate::sys::unmount(&dir.join("rootfs"));
        let state = self.state_dir(c);
        abort_waiting_execs(&state).await;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(&dir);
            // a shim that has reported the exit may still be having the runtime delete
            // the container (under its lock), which would leave the runtime's state
            // folder behind a removal made meanwhile
            let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while berth_runtime::shim::lock_holder(&state).is_some()
                && std::time::Instant::now() < end
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let _ = std::fs::remove_dir_all(&state);
        })
        .await;
        self.db.delete_container(&c.id)?;
        if let Ok(mut m) = self.by_id.lock() {
            m.remove(&c.id);
        }
        self.execs.forget(&c.id);
        events.emit("container", "destroy", &c.id, attrs(c));
        c.removed.send_replace(true);
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
