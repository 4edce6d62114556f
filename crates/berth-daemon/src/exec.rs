//! Exec: another process in a running container, through an exec shim (the same
//! `berth-shim` program in `--exec` mode) that joins the container with the container's
//! own runtime, owns the process's stdio and records its exit.
//!
//! An exec is created (`POST /containers/{id}/exec`), then started once: berthd writes
//! its `process.json`, launches the exec shim (which waits), connects the attached
//! client, and tells the shim `start`. A task holds a `wait` connection and records the
//! exit code, which `GET /exec/{id}/json` shows; the CLI reads it there.

use crate::containers::Containers;
use crate::error::EngineError;
use crate::events::Events;
use crate::model::{attrs, Ctr, Exec, ExecSpec};
use crate::shimctl::{call, launch_shim, wait_exit_code};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Containers {
    /// Makes an exec in running container `c`; it waits for its start.
    pub fn create_exec(
        &self,
        c: &Arc<Ctr>,
        spec: ExecSpec,
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
        spec.validate()?;
        let e = Exec::new(c, spec);
        let id = e.id.clone();
        self.execs.insert(e.clone());
        let mut a = attrs(c);
        a.insert("execID".into(), id.clone());
        events.emit(
            "container",
            &format!("exec_create: {}", e.spec.cmd.join(" ")),
            &c.id,
            a,
        );
        Ok(id)
    }

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
            let cmd = e.spec.cmd.first().cloned().unwrap_or_default();
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
        for kv in e.spec.env.iter().cloned() {
            let key = kv.split('=').next().unwrap_or_default().to_string();
            env.retain(|x| x.split('=').next() != Some(key.as_str()));
            if kv.contains('=') {
                env.push(kv);
            }
        }
        if e.spec.tty && !env.iter().any(|x| x.starts_with("TERM=")) {
            env.push("TERM=xterm".into());
        }
        let cwd = Some(e.spec.working_dir.as_str())
            .filter(|w| !w.is_empty())
            .or(bundle["process"]["cwd"].as_str())
            .unwrap_or("/")
            .to_string();
        if !cwd.starts_with('/') {
            return Err(EngineError::invalid(format!(
                "the working directory '{cwd}' is invalid, it needs to be an absolute path"
            )));
        }
        let user = Some(e.spec.user.as_str())
            .filter(|u| !u.is_empty())
            .or(c.config()["User"].as_str())
            .unwrap_or_default()
            .to_string();
        let args = e.spec.cmd.clone();
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
            tty: e.spec.tty,
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
        if e.spec.privileged {
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
            .arg(crate::model::short(&c.id))
            .arg("--state")
            .arg(&dir)
            .arg("--ready-fd")
            .arg(std::os::fd::AsRawFd::as_raw_fd(&w).to_string());
        if e.spec.tty {
            cmd.arg("--tty");
        }
        if e.spec.attach_stdin {
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
                let cmd = e.spec.cmd.first().cloned().unwrap_or_default();
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
            &format!("exec_start: {}", e.spec.cmd.join(" ")),
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
