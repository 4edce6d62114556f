//! Signals, stops, pauses and removals, and ending a shim that is lost or stuck.

use super::*;

impl Containers {
    /// SIGKILL for the container's process; a shim that does not answer is killed with
    /// it (the exit recorded as 137, the cgroups removed), so a stop or removal never
    /// waits on a stuck shim.
    /// `ask`: false when the shim has just failed to answer.
    pub(super) async fn sigkill(&self, c: &Ctr, ask: bool) -> Result<(), EngineError> {
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
    pub(super) async fn end_orphaned(&self, c: &Ctr) -> i64 {
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
    pub(super) async fn end_shim(&self, c: &Ctr) {
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
    pub(super) async fn thaw_if_paused(&self, c: &Ctr) {
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
