//! Execs: another process in a running container. What it runs and how it is
//! attached (`ExecSpec`), its state, and the daemon's table of them.

use super::Ctr;
use crate::error::EngineError;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What an exec runs, and how.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecSpec {
    /// the command and its arguments
    pub cmd: Vec<String>,
    /// `KEY=VALUE` over the container's environment (a bare `KEY` removes it)
    pub env: Vec<String>,
    /// empty: the container's user
    pub user: String,
    /// empty: the container's working directory
    pub working_dir: String,
    pub tty: bool,
    /// every capability berthd may give
    pub privileged: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// the keys that detach an attached client (None: the default)
    pub detach_keys: Option<String>,
}

impl ExecSpec {
    /// An exec of the engine's own (a healthcheck's probe): output attached.
    pub fn internal(cmd: &[String]) -> ExecSpec {
        ExecSpec {
            cmd: cmd.to_vec(),
            attach_stdout: true,
            attach_stderr: true,
            ..ExecSpec::default()
        }
    }

    /// Its invariants: a command, and environment entries that are not empty.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.cmd.is_empty() {
            return Err(EngineError::invalid("No exec command specified"));
        }
        if self.env.iter().any(String::is_empty) {
            return Err(EngineError::invalid("invalid environment variable in exec"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecState {
    pub running: bool,
    pub pid: i64,
    /// None until the process has exited (or failed to start)
    pub exit_code: Option<i64>,
    pub finished: Option<std::time::Instant>,
}

pub struct Exec {
    pub id: String,
    pub container: Arc<Ctr>,
    pub spec: ExecSpec,
    pub state: watch::Sender<ExecState>,
    /// set by the first start
    pub(crate) started: AtomicBool,
}

impl Exec {
    pub fn new(c: &Arc<Ctr>, spec: ExecSpec) -> Arc<Exec> {
        Arc::new(Exec {
            id: hex::encode(rand::random::<[u8; 32]>()),
            container: c.clone(),
            spec,
            state: watch::Sender::new(ExecState::default()),
            started: AtomicBool::new(false),
        })
    }
}

/// How long an exited exec stays to be inspected.
const KEEP_EXITED: std::time::Duration = std::time::Duration::from_secs(300);

/// The daemon's execs, by ID.
#[derive(Default)]
pub struct Execs {
    by_id: Mutex<HashMap<String, Arc<Exec>>>,
}

impl Execs {
    pub fn get(&self, id: &str) -> Result<Arc<Exec>, EngineError> {
        self.by_id
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
            .ok_or_else(|| EngineError::not_found(format!("No such exec instance: {id}")))
    }

    /// IDs of a container's running execs, for its inspect.
    pub fn of(&self, container: &str) -> Vec<String> {
        self.by_id
            .lock()
            .map(|m| {
                m.values()
                    .filter(|e| e.container.id == container && e.state.borrow().running)
                    .map(|e| e.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets a removed container's execs.
    pub fn forget(&self, container: &str) {
        if let Ok(mut m) = self.by_id.lock() {
            m.retain(|_, e| e.container.id != container);
        }
    }

    /// Adds an exec, dropping those exited longer ago than `KEEP_EXITED`.
    pub fn insert(&self, e: Arc<Exec>) {
        if let Ok(mut m) = self.by_id.lock() {
            m.retain(|_, e| {
                e.state
                    .borrow()
                    .finished
                    .is_none_or(|f| f.elapsed() <= KEEP_EXITED)
            });
            m.insert(e.id.clone(), e);
        }
    }
}
