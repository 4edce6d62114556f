//! Starting a container: its rootfs and bundle made, its shim launched and told to
//! start, and a task that records the exit (and restarts it as its policy says).

use super::*;

impl Containers {
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
    pub(super) async fn start_inner(
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
    pub(super) async fn start_locked(
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
            return Err(EngineError::not_modified("container already started"));
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
    pub(super) async fn start_failed(
        &self,
        c: &Ctr,
        e: EngineError,
        failed: &mut bool,
    ) -> EngineError {
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
    pub(super) async fn release_run(&self, c: &Ctr) {
        let taken = std::mem::take(&mut *c.vols_taken.lock().unwrap_or_else(|p| p.into_inner()));
        crate::mounts::release(&self.vols, &taken);
        let mut net = None;
        c.state.send_modify(|s| net = s.net.take());
        if let Some(st) = net {
            self.persist(c);
            self.net.detach(&c.id, &st).await;
        }
    }
    pub(super) async fn spawn_shim(&self, c: &Ctr) -> Result<(), EngineError> {
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
    pub(super) fn watch_exit_boxed(
        self: Arc<Self>,
        c: Arc<Ctr>,
        events: Arc<Events>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(self.watch_exit(c, events))
    }
    pub(super) async fn watch_exit(self: Arc<Self>, c: Arc<Ctr>, events: Arc<Events>) {
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
    pub(super) async fn restart_later(self: Arc<Self>, c: Arc<Ctr>, events: Arc<Events>) {
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
}
