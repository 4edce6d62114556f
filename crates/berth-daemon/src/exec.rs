//! Exec: another process in a running container, through an exec shim (the same
//! `berth-shim` program in `--exec` mode) that joins the container with the container's
//! own runtime, owns the process's stdio and records its exit.
//!
//! An exec is created (`POST /containers/{id}/exec`), then started once: berthd writes
//! its `process.json`, launches the exec shim (which waits), connects the attached
//! client, and tells the shim `start`. A task holds a `wait` connection and records the
//! exit code, which `GET /exec/{id}/json` shows; the CLI reads it there.

use crate::containers::{attrs, launch_shim, Containers, Ctr};
use crate::error::EngineError;
use crate::events::Events;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

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
    /// the create request: Cmd, Env, User, WorkingDir, Tty, AttachStd*, Privileged, ...
    pub config: Value,
    pub state: watch::Sender<ExecState>,
    started: AtomicBool,
}

impl Exec {
    /// An exec of berthd's own (a health probe), not listed in the API.
    pub fn internal(c: &Arc<Ctr>, cmd: &[String]) -> Arc<Exec> {
        Arc::new(Exec {
            id: hex::encode(rand::random::<[u8; 32]>()),
            container: c.clone(),
            config: json!({"Cmd": cmd, "AttachStdout": true, "AttachStderr": true}),
            state: watch::Sender::new(ExecState::default()),
            started: AtomicBool::new(false),
        })
    }

    pub fn tty(&self) -> bool {
        self.config["Tty"].as_bool().unwrap_or(false)
    }

    pub fn cmd(&self) -> Vec<String> {
        crate::spec::strings(&self.config["Cmd"]).unwrap_or_default()
    }

    fn flag(&self, k: &str) -> bool {
        self.config[k].as_bool().unwrap_or(false)
    }

    /// `GET /exec/{id}/json`.
    pub fn inspect(&self) -> Value {
        let st = self.state.borrow().clone();
        let cmd = self.cmd();
        json!({
            "CanRemove": false,
            "ContainerID": self.container.id,
            "DetachKeys": self.config["DetachKeys"].as_str().unwrap_or_default(),
            "ExitCode": st.exit_code,
            "ID": self.id,
            "OpenStderr": self.flag("AttachStderr"),
            "OpenStdin": self.flag("AttachStdin"),
            "OpenStdout": self.flag("AttachStdout"),
            "ProcessConfig": {
                "arguments": cmd.iter().skip(1).collect::<Vec<_>>(),
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "privileged": self.flag("Privileged"),
                "tty": self.tty(),
                "user": self.config["User"].as_str().unwrap_or_default(),
            },
            "Running": st.running,
            "Pid": st.pid,
        })
    }
}

/// Execs that ended are forgotten after this long, as Docker does.
const KEEP_EXITED: std::time::Duration = std::time::Duration::from_secs(300);

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

    /// IDs of a container's execs, for its inspect.
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

    /// `POST /containers/{id}/exec`.
    pub fn create(
        &self,
        c: &Arc<Ctr>,
        config: Value,
        events: &Events,
    ) -> Result<String, EngineError> {
        if c.state().status != "running" {
            return Err(EngineError::conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        if c.state().paused {
            return Err(EngineError::conflict(format!(
                "Container {} is paused, unpause the container before exec",
                c.id
            )));
        }
        let cmd_ok = config["Cmd"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|v| v.is_string()));
        if !cmd_ok {
            return Err(EngineError::invalid("No exec command specified"));
        }
        if let Some(env) = config["Env"].as_array() {
            if env.iter().any(|e| e.as_str().is_none_or(str::is_empty)) {
                return Err(EngineError::invalid("invalid environment variable in exec"));
            }
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let e = Arc::new(Exec {
            id: id.clone(),
            container: c.clone(),
            config,
            state: watch::Sender::new(ExecState::default()),
            started: AtomicBool::new(false),
        });
        if let Ok(mut m) = self.by_id.lock() {
            m.retain(|_, e| {
                e.state
                    .borrow()
                    .finished
                    .is_none_or(|f| f.elapsed() <= KEEP_EXITED)
            });
            m.insert(id.clone(), e.clone());
        }
        let mut a = attrs(c);
        a.insert("execID".into(), id.clone());
        events.emit(
            "container",
            &format!("exec_create: {}", e.cmd().join(" ")),
            &c.id,
            a,
        );
        Ok(id)
    }
}

impl Containers {
    fn exec_dir(&self, e: &Exec) -> PathBuf {
        self.state_dir(&e.container)
            .join(format!("x{}", &e.id[..12]))
    }

    pub fn exec_socket(&self, e: &Exec) -> PathBuf {
        self.exec_dir(e).join("shim.sock")
    }

    /// Writes the process and launches the exec shim, which waits for `start`. An
    /// error here is the exec's failure to start (the exec then has exit code 126/127).
    pub async fn prepare_exec(&self, e: &Arc<Exec>) -> Result<(), EngineError> {
        if e.started.swap(true, Ordering::SeqCst) {
            return Err(EngineError::conflict(format!(
                "Error: Exec command {} is already running",
                e.id
            )));
        }
        let r = self.prepare_exec_inner(e).await;
        if let Err(err) = &r {
            let cmd = e.cmd().first().cloned().unwrap_or_default();
            let code = berth_runtime::shim::exit_code_for_start_error(&cmd, &err.message) as i64;
            e.state.send_modify(|s| {
                s.exit_code = Some(code);
                s.finished = Some(std::time::Instant::now());
            });
        }
        r
    }

    async fn prepare_exec_inner(&self, e: &Arc<Exec>) -> Result<(), EngineError> {
        let c = &e.container;
        if c.state().status != "running" {
            return Err(EngineError::conflict(format!(
                "container {} is not running",
                c.id
            )));
        }
        if c.state().paused {
            return Err(EngineError::conflict(format!(
                "Container {} is paused, unpause the container before exec",
                c.id
            )));
        }
        let pid = c.state().pid;
        // the container's own view of its files, mounts included
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let bundle: Value = std::fs::read(self.dir(c).join("bundle").join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let strings = |v: &Value| crate::spec::strings(v).unwrap_or_default();
        let mut env = strings(&bundle["process"]["env"]);
        for kv in strings(&e.config["Env"]) {
            let key = kv.split('=').next().unwrap_or_default().to_string();
            env.retain(|x| x.split('=').next() != Some(key.as_str()));
            if kv.contains('=') {
                env.push(kv);
            }
        }
        if e.tty() && !env.iter().any(|x| x.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let cwd = e.config["WorkingDir"]
            .as_str()
            .filter(|w| !w.is_empty())
            .or(bundle["process"]["cwd"].as_str())
            .unwrap_or("/")
            .to_string();
        if !cwd.starts_with('/') {
            return Err(EngineError::invalid(format!(
                "the working directory '{cwd}' is invalid, it needs to be an absolute path"
            )));
        }
        let user = e.config["User"]
            .as_str()
            .filter(|u| !u.is_empty())
            .or(c.config()["User"].as_str())
            .unwrap_or_default()
            .to_string();
        let args = e.cmd();
        let (uid, gid, gids) = {
            let (root, args, env) = (root.clone(), args.clone(), env.clone());
            tokio::task::spawn_blocking(move || {
                crate::spec::check_command(&root, &args, &env).map_err(|e| {
                    EngineError::invalid(e.message.replace(
                        "failed to create task for container: ",
                        "OCI runtime exec failed: exec failed: ",
                    ))
                })?;
                crate::spec::resolve_user(&root, &user)
            })
            .await
            .map_err(|e| EngineError::internal(e.to_string()))??
        };
        let own = berth_runtime::spec::Process {
            args: &args,
            env: &env,
            cwd: &cwd,
            uid,
            gid,
            additional_gids: &gids,
            tty: e.tty(),
        }
        .to_json();
        // the container's process settings (capabilities, rlimits, no-new-privileges)
        // hold for its execs too, as Docker's; only what the exec says is its own
        let bundle = self.dir(c).join("bundle").join("config.json");
        let mut process = std::fs::read(&bundle)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|spec| spec["process"].clone())
            .filter(Value::is_object)
            .unwrap_or_else(|| own.clone());
        for key in ["terminal", "user", "args", "env", "cwd"] {
            process[key] = own[key].clone();
        }
        // `exec --privileged`: every capability berthd may give, as Docker's
        if e.flag("Privileged") {
            let all = crate::security::all_caps();
            process["capabilities"] =
                serde_json::json!({"bounding": all, "effective": all, "permitted": all});
        }
        let dir = self.exec_dir(e);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| EngineError::internal(e.to_string()))?;
        let process_path = dir.join("process.json");
        std::fs::write(&process_path, process.to_string())
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| EngineError::internal(e.to_string()))?;
        let mut cmd = self.shim_command();
        cmd.arg("--exec")
            .arg(&process_path)
            .arg("--runtime-root")
            .arg(self.state_dir(c).join("rt"))
            .arg("--id")
            .arg(crate::containers::short(&c.id))
            .arg("--state")
            .arg(&dir)
            .arg("--ready-fd")
            .arg(std::os::fd::AsRawFd::as_raw_fd(&w).to_string());
        if e.tty() {
            cmd.arg("--tty");
        }
        if e.flag("AttachStdin") {
            cmd.arg("--stdin");
        }
        let (runtime, keep) = self.shim_runtime(c);
        cmd.arg("--runtime").arg(runtime);
        launch_shim(cmd, r, w, keep).await
    }

    /// Tells the exec shim to run the process and watches for its exit.
    pub async fn run_exec(
        self: &Arc<Self>,
        e: &Arc<Exec>,
        events: &Arc<Events>,
    ) -> Result<(), EngineError> {
        let answer = call(&self.exec_socket(e), "start").await;
        let pid: i64 = match answer {
            Ok(a) => a.trim_start_matches("ok ").parse().unwrap_or(0),
            Err(err) => {
                let cmd = e.cmd().first().cloned().unwrap_or_default();
                let code =
                    berth_runtime::shim::exit_code_for_start_error(&cmd, &err.message) as i64;
                e.state.send_modify(|s| {
                    s.exit_code = Some(code);
                    s.finished = Some(std::time::Instant::now());
                });
                return Err(EngineError::internal(format!(
                    "OCI runtime exec failed: {}",
                    err.message
                )));
            }
        };
        e.state.send_modify(|s| {
            s.running = true;
            s.pid = pid;
        });
        let c = &e.container;
        let mut a = attrs(c);
        a.insert("execID".into(), e.id.clone());
        events.emit(
            "container",
            &format!("exec_start: {}", e.cmd().join(" ")),
            &c.id,
            a.clone(),
        );
        let sock = self.exec_socket(e);
        let dir = self.exec_dir(e);
        let e = e.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let code = wait_exit_code(&sock)
                .await
                .or_else(|| berth_runtime::shim::read_exit_file(&dir).map(|(c, _)| c as i64))
                .unwrap_or(126);
            e.state.send_modify(|s| {
                s.running = false;
                s.pid = 0;
                s.exit_code = Some(code);
                s.finished = Some(std::time::Instant::now());
            });
            a.insert("exitCode".into(), code.to_string());
            events.emit("container", "exec_die", &e.container.id, a);
            let _ = tokio::fs::remove_dir_all(&dir).await;
        });
        Ok(())
    }
}

/// Waits on a shim's `wait` for the process's exit code; None if the shim is gone.
pub async fn wait_exit_code(sock: &Path) -> Option<i64> {
    let mut s = UnixStream::connect(sock).await.ok()?;
    s.write_all(b"wait\n").await.ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.ok()?;
    line.trim().strip_prefix("exit ")?.parse::<i64>().ok()
}

/// Attaches to a shim's streams (`flags`: stdin, stdout, stderr); the connection then
/// carries them. None if the shim does not answer.
pub async fn attach(sock: &Path, flags: &[&str]) -> Option<UnixStream> {
    let mut s = UnixStream::connect(sock).await.ok()?;
    s.write_all(format!("attach {}\n", flags.join(" ")).as_bytes())
        .await
        .ok()?;
    // the answer line byte by byte: what follows it is the stream, and must not be
    // left in a buffer
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        if b[0] == b'\n' {
            return Some(s);
        }
    }
}

/// One command to a shim socket, one line back.
pub async fn call(sock: &Path, cmd: &str) -> Result<String, EngineError> {
    let mut s = UnixStream::connect(sock)
        .await
        .map_err(|e| EngineError::internal(format!("no shim: {e}")))?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?;
    match line.trim().strip_prefix("error ") {
        Some(e) => Err(EngineError::internal(e.to_string())),
        None => Ok(line.trim().to_string()),
    }
}
