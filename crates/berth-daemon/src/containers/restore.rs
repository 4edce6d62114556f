//! At start: containers read back from the database, their shims found again or their
//! ends recorded, and starts a crash cut short undone.

use super::*;

impl Containers {
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
    pub(super) async fn undo_cut_starts(&self) {
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
    pub(super) fn insert_mem(&self, row: ContainerRow, spec: Value, state: State) -> Arc<Ctr> {
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
}
