//! A container as the engine knows it: its identity, its spec, and its state (what is
//! stored of it, and the channel that announces changes).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// What is stored of a container's state, as the API shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub status: String,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
    /// restarts made by the restart policy since the last start by a user
    #[serde(default)]
    pub restart_count: i64,
    /// stopped or killed by a user: an `unless-stopped` container stays down when berthd
    /// starts (dockerd's HasBeenManuallyStopped)
    #[serde(default)]
    pub manually_stopped: bool,
    /// the next exit is not restarted (dockerd's ExitOnNext): set by `stop`, and by a
    /// `kill` with SIGKILL, with the container's stop signal, or of one without a stop
    /// signal of its own
    #[serde(default)]
    pub exit_on_next: bool,
    /// with a healthcheck: its status and last probes
    #[serde(default)]
    pub health: Option<crate::model::health::Health>,
    /// frozen (`pause`); the status stays "running"
    #[serde(default)]
    pub paused: bool,
    /// the last run ended with the kernel's OOM killer killing in it
    #[serde(default)]
    pub oom_killed: bool,
    /// while it runs on bridge networks: its namespace, endpoints and ports
    #[serde(default)]
    pub net: Option<crate::model::net::NetState>,
}

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl State {
    /// The status the API shows: "paused" for a paused running container.
    pub fn api_status(&self) -> &str {
        if self.paused && self.status == "running" {
            "paused"
        } else {
            &self.status
        }
    }

    pub fn created() -> Self {
        State {
            status: "created".into(),
            started_at: ZERO_TIME.into(),
            finished_at: ZERO_TIME.into(),
            ..Default::default()
        }
    }
}

/// A container the daemon knows, with a channel that announces state changes.
pub struct Ctr {
    pub id: String,
    pub name: Mutex<String>,
    pub image_id: String,
    pub created: String,
    /// the create request: {Config, HostConfig, Image, ...}; `update` changes HostConfig
    pub spec: std::sync::RwLock<Value>,
    pub state: watch::Sender<State>,
    /// attach requests waiting for the shim before `start` is sent
    pub pending_attach: watch::Sender<usize>,
    /// a removal is under way
    pub(crate) removing: std::sync::atomic::AtomicBool,
    /// held for the time of a start
    pub(crate) starting: tokio::sync::Mutex<()>,
    /// the next restart delay's step
    pub(crate) backoff: std::sync::atomic::AtomicU32,
    /// held while the rootfs is mounted for a start, or for file work on a stopped
    /// container
    pub fs_lock: Mutex<()>,
    /// the removal is complete
    pub removed: watch::Sender<bool>,
    /// volumes its current run mounted (given back when it stops)
    pub vols_taken: Mutex<Vec<String>>,
}

impl Ctr {
    /// Its command line as one string (entrypoint and command), as `ps` shows it.
    pub fn command_line(&self) -> String {
        let mut args: Vec<String> = Vec::new();
        for k in ["Entrypoint", "Cmd"] {
            if let Some(a) = self.config()[k].as_array() {
                args.extend(a.iter().filter_map(|x| x.as_str().map(str::to_string)));
            }
        }
        args.join(" ")
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }
    pub fn health(&self) -> Option<crate::model::health::Health> {
        self.state.borrow().health.clone()
    }
    pub fn name(&self) -> String {
        self.name.lock().map(|n| n.clone()).unwrap_or_default()
    }
    pub fn spec(&self) -> Value {
        self.spec.read().map(|s| s.clone()).unwrap_or_default()
    }
    pub fn config(&self) -> Value {
        self.spec
            .read()
            .map(|s| s["Config"].clone())
            .unwrap_or_default()
    }
    pub fn host_config(&self) -> Value {
        self.spec
            .read()
            .map(|s| s["HostConfig"].clone())
            .unwrap_or_default()
    }
    pub fn tty(&self) -> bool {
        self.config()["Tty"].as_bool().unwrap_or(false)
    }
}

pub fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}

pub fn attrs(c: &Ctr) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    a.insert("name".into(), c.name());
    a.insert(
        "image".into(),
        c.spec()["Image"].as_str().unwrap_or_default().to_string(),
    );
    if let Some(l) = c.config()["Labels"].as_object() {
        for (k, v) in l {
            a.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    a
}
