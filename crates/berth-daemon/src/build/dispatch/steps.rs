//! Steps that make a layer or a config change, and the build cache around each: keys,
//! hits, commits; RUN in a container of its own.

use super::*;

impl Builder {
    pub(super) fn view(&self, image: Option<&Digest>) -> Result<View, Failure> {
        View::open(&self.d, image).map_err(|e| fail(format!("opening the image's filesystem: {e}")))
    }
    pub(super) fn commit_opts(&self, st: &Stage, created_by: String) -> berth_image::CommitOptions {
        berth_image::CommitOptions {
            config: st.config.clone(),
            changes: Vec::new(),
            comment: String::new(),
            author: st.author.clone(),
            created_by,
            reference: None,
        }
    }
    pub(super) fn key(&self, st: &Stage, created_by: &str, extra: &str) -> String {
        let mut h = Sha256::new();
        h.update(
            st.image
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "scratch".into()),
        );
        for part in [
            created_by,
            extra,
            &Value::Object(st.config.clone()).to_string(),
            &st.author,
        ] {
            h.update([0]);
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
    pub(super) async fn cached(
        &mut self,
        st: &mut Stage,
        key: &str,
        created_by: &str,
    ) -> Result<bool, Failure> {
        if self.opts.nocache {
            return Ok(false);
        }
        let mut hit = self.d.images.cache_hit(key).map_err(Failure::from)?;
        if !self.opts.cache_from.is_empty() {
            // as dockerd: with --cache-from, a local hit counts only when it is one of
            // those images or an image they were built on
            hit = hit.filter(|id| self.in_sources(id));
        }
        if hit.is_none() && !self.sources.is_empty() {
            let d = self.d.clone();
            let sources = self.sources.clone();
            let parent = st.image.clone();
            let opts = self.commit_opts(st, created_by.to_string());
            hit = tokio::task::spawn_blocking(move || from_sources(&d, &sources, parent, opts))
                .await
                .map_err(Failure::from)??;
            if let Some(id) = &hit {
                self.d
                    .images
                    .cache_put(key, id, created_by)
                    .map_err(Failure::from)?;
            }
        }
        match hit {
            Some(id) => {
                locked(&self.records).push(crate::buildkit::cache::Record {
                    key: key.to_string(),
                    image: id.clone(),
                    description: created_by.to_string(),
                });
                self.out.cache_hit(&short(&id)).await;
                st.image = Some(id);
                Ok(true)
            }
            None => Ok(false),
        }
    }
    /// Whether `id` is a `--cache-from` image or one of its parents.
    pub(super) fn in_sources(&self, id: &Digest) -> bool {
        let want = id.to_string();
        self.sources.iter().any(|src| {
            let mut cur = src.id.to_string();
            for _ in 0..10_000 {
                if cur == want {
                    return true;
                }
                match self.d.images.inspect(&cur) {
                    Ok(img) if !img.parent.is_empty() => cur = img.parent,
                    _ => return false,
                }
            }
            false
        })
    }
    pub(super) async fn done(
        &mut self,
        st: &mut Stage,
        id: Digest,
        key: &str,
        desc: &str,
    ) -> Result<(), Failure> {
        self.d
            .images
            .cache_put(key, &id, desc)
            .map_err(Failure::from)?;
        locked(&self.records).push(crate::buildkit::cache::Record {
            key: key.to_string(),
            image: id.clone(),
            description: desc.to_string(),
        });
        self.out.step_done(&short(&id)).await;
        st.image = Some(id);
        Ok(())
    }
    pub(super) async fn config_step(
        &mut self,
        st: &mut Stage,
        created_by: String,
    ) -> Result<(), Failure> {
        let key = self.key(st, &created_by, "");
        if self.cached(st, &key, &created_by).await? {
            return Ok(());
        }
        let opts = self.commit_opts(st, created_by.clone());
        let d = self.d.clone();
        let parent = st.image.clone();
        let id = tokio::task::spawn_blocking(move || d.images.child(parent.as_ref(), None, opts))
            .await
            .map_err(Failure::from)?
            .map_err(Failure::from)?;
        self.done(st, id, &key, &created_by).await
    }
    /// A step that adds a layer written from `plan` (sources: the context, `image`'s
    /// view, `mem`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn layer_step(
        &mut self,
        st: &mut Stage,
        created_by: String,
        extra: String,
        plan: Vec<Planned>,
        image: Option<View>,
        attrs: Option<Attrs>,
        mem: Mem,
    ) -> Result<(), Failure> {
        let key = self.key(st, &created_by, &extra);
        if self.cached(st, &key, &created_by).await? {
            return Ok(());
        }
        let opts = self.commit_opts(st, created_by.clone());
        let d = self.d.clone();
        let parent = st.image.clone();
        let ctx = self.ctx.clone();
        let attrs = attrs.unwrap_or_default();
        let id = tokio::task::spawn_blocking(move || -> Result<Digest, Failure> {
            let (r, w) = io::pipe().map_err(Failure::from)?;
            let writer = std::thread::spawn(move || -> io::Result<()> {
                let mut lw = LayerWriter::new(w);
                for p in &plan {
                    match p {
                        Planned::Dir(path, meta) => lw.dir(path, meta)?,
                        Planned::Copy(from, src, to) => {
                            let source: &dyn Source = match from {
                                From::Context => &*ctx,
                                From::Image => match &image {
                                    Some(v) => &v.tree,
                                    None => continue,
                                },
                                From::Mem => &mem,
                            };
                            let it = Item {
                                src: source,
                                from: src.clone(),
                                to: to.clone(),
                            };
                            lw.item(&it, &attrs)?;
                        }
                        Planned::Extract(src, to) => extract(&mut lw, &ctx, src, to)?,
                    }
                }
                lw.finish().map(drop)
            });
            let mut r = r;
            let id = d.images.child(parent.as_ref(), Some(&mut r), opts);
            drop(r);
            let written = writer.join();
            let id = id.map_err(Failure::from)?;
            match written {
                Ok(Ok(())) => Ok(id),
                Ok(Err(e)) => Err(fail(format!("writing the layer: {e}"))),
                Err(_) => Err(fail("writing the layer failed")),
            }
        })
        .await
        .map_err(Failure::from)??;
        self.done(st, id, &key, &created_by).await
    }
    pub(super) async fn run_step(
        &mut self,
        st: &mut Stage,
        ins: &Instruction,
    ) -> Result<(), Failure> {
        let cmd: Vec<String> = match &ins.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => {
                let mut script = s.clone();
                let only_heredoc = ins.heredocs.len() == 1
                    && matches!(
                        s.trim().trim_start_matches("<<").trim_start_matches('-').trim_matches(|c| c == '"' || c == '\''),
                        n if n == ins.heredocs[0].name
                    );
                if only_heredoc {
                    script = ins.heredocs[0].content.clone();
                } else {
                    for h in &ins.heredocs {
                        script.push('\n');
                        script.push_str(&h.content);
                        if !h.content.ends_with('\n') {
                            script.push('\n');
                        }
                        script.push_str(&h.name);
                    }
                }
                let mut sh = st.shell();
                sh.push(script);
                sh
            }
        };
        let env_keys: BTreeSet<String> = st
            .env()
            .iter()
            .filter_map(|e| e.split('=').next().map(str::to_string))
            .collect();
        let mut arg_env: Vec<String> = Vec::new();
        for (k, v) in &st.args {
            if let (Some(v), false) = (v, env_keys.contains(k)) {
                arg_env.retain(|e| e.split('=').next() != Some(k.as_str()));
                arg_env.push(format!("{k}={v}"));
            }
        }
        let created_by = if arg_env.is_empty() {
            cmd.join(" ")
        } else {
            format!("|{} {} {}", arg_env.len(), arg_env.join(" "), cmd.join(" "))
        };
        // BuildKit's RUN flags: in the cache key (not the secrets' values)
        let specs: Vec<crate::build::runmount::Spec> = ins
            .flags
            .iter()
            .filter(|(n, _)| n == "mount")
            .map(|(_, v)| crate::build::runmount::parse(v.as_deref().unwrap_or_default()))
            .collect::<Result<_, _>>()?;
        let network = match ins.flag("network") {
            None | Some("default") => self.opts.network_mode.clone(),
            Some("none") => "none".to_string(),
            Some("host") => {
                if !self.opts.entitlements.iter().any(|e| e == "network.host") {
                    return Err(fail(
                        "network.host is not allowed: the build must be started with --allow network.host",
                    ));
                }
                "host".to_string()
            }
            Some(other) => return Err(fail(format!("unsupported network mode {other:?}"))),
        };
        let privileged = match ins.flag("security") {
            None | Some("sandbox") => false,
            Some("insecure") => {
                if !self
                    .opts
                    .entitlements
                    .iter()
                    .any(|e| e == "security.insecure")
                {
                    return Err(fail(
                        "security.insecure is not allowed: the build must be started with --allow security.insecure",
                    ));
                }
                true
            }
            Some(other) => return Err(fail(format!("unsupported security mode {other:?}"))),
        };
        let flags_text: Vec<String> = ins
            .flags
            .iter()
            .filter(|(n, _)| matches!(n.as_str(), "mount" | "network" | "security"))
            .map(|(n, v)| format!("--{n}={}", v.as_deref().unwrap_or_default()))
            .collect();
        // what a bind mount shows the step counts as its input
        let mut mount_inputs = String::new();
        for sp in specs.iter().filter(|sp| sp.kind == "bind") {
            let path = source::clamp(&sp.source);
            let sum = if sp.from.is_empty() {
                let ctx = self.ctx.clone();
                tokio::task::spawn_blocking(move || ctx.checksum(&[path]))
                    .await
                    .map_err(Failure::from)?
                    .map_err(Failure::from)?
            } else if let Some(crate::build::NamedContext::Dir(dir)) =
                self.opts.named_contexts.get(&sp.from)
            {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    source::Context::from_dir(&dir).and_then(|c| c.checksum(&[path]))
                })
                .await
                .map_err(Failure::from)?
                .map_err(Failure::from)?
            } else {
                match self
                    .stage_index(&sp.from, self.current)
                    .filter(|_| !self.opts.named_contexts.contains_key(&sp.from))
                    .and_then(|j| self.built_image(j))
                {
                    Some(img) => img.map(|i| i.to_string()).unwrap_or_default(),
                    None => self.base_image(&sp.from).await?.to_string(),
                }
            };
            mount_inputs.push_str(&sum);
        }
        let key = self.key(
            st,
            &created_by,
            &format!("{network}{}{mount_inputs}", flags_text.join(" ")),
        );
        if self.cached(st, &key, &created_by).await? {
            return Ok(());
        }
        let Some(parent) = st.image.clone() else {
            return Err(fail(format!(
                "The command '{}' cannot run: the image is empty (FROM scratch), it has no shell or programs",
                cmd.join(" ")
            )));
        };
        let mut env = st.env();
        env.extend(arg_env);
        for p in PROXY_ARGS {
            if let Some(Some(v)) = self.opts.build_args.get(*p) {
                env.push(format!("{p}={v}"));
            }
        }
        // --mount: what the step sees beside its image, for its time only
        let mut from_views = Vec::new();
        let mut froms = Vec::new();
        for sp in &specs {
            if sp.from.is_empty() {
                froms.push(None);
                continue;
            }
            let v = if let Some(crate::build::NamedContext::Dir(p)) =
                self.opts.named_contexts.get(&sp.from)
            {
                View::of_dir(p.clone())
            } else {
                let id = match self
                    .stage_index(&sp.from, self.current)
                    .filter(|_| !self.opts.named_contexts.contains_key(&sp.from))
                    .and_then(|j| self.built_image(j))
                {
                    Some(img) => img,
                    None => Some(self.base_image(&sp.from).await?),
                };
                self.view(id.as_ref())?
            };
            froms.push(Some(v.tree.root.clone()));
            from_views.push(v);
        }
        let prepared = if specs.is_empty() {
            crate::build::runmount::Prepared::default()
        } else {
            let parent_view = self.view(Some(&parent))?;
            let tmp = self.d.images.tmp_dir().to_path_buf();
            let env = crate::build::runmount::Env {
                data_root: &self.d.config.data_root,
                tmp: &tmp,
                session: self.opts.session.as_ref(),
                parent: &parent_view.tree,
                context_dir: self.opts.context_dir.as_deref(),
            };
            crate::build::runmount::prepare(&env, &specs, &froms).await?
        };
        env.extend(prepared.env.iter().cloned());
        let mut hc = json!({
            "NetworkMode": network,
            "LogConfig": {"Type": "json-file", "Config": {}},
            "ExtraHosts": self.opts.extra_hosts,
            "Mounts": prepared.mounts,
            "Privileged": privileged,
        });
        for (k, v) in &self.opts.resources {
            hc[k] = v.clone();
        }
        let req = json!({
            "Image": parent.to_string(),
            "Cmd": cmd,
            "Entrypoint": [],
            "Env": env,
            "User": st.str("User"),
            "WorkingDir": st.str("WorkingDir"),
            "Healthcheck": {"Test": ["NONE"]},
            "Labels": if self.opts.rm || self.opts.forcerm {
                json!({crate::build::STEP_LABEL: "1"})
            } else {
                json!({})
            },
            "AttachStdout": true,
            "AttachStderr": true,
            "HostConfig": hc,
        });
        let (c, _) =
            crate::create::create_from(&self.d, None, &req).map_err(|e| fail(e.message))?;
        let c_short = c.id[..12].to_string();
        self.out.note(format!(" ---> Running in {c_short}\n")).await;
        let result = self.run_container(&c).await;
        // mount points the runtime made are not the step's changes
        crate::build::runmount::remove_stubs(
            &self.d.containers.dir(&c).join("upper"),
            &prepared.stubs,
        );
        drop(from_views);
        // failed steps too: a build leaves no container behind unless asked (--rm=false)
        let remove_now = self.opts.rm || self.opts.forcerm;
        let outcome = match result {
            Ok(0) => {
                let opts = self.commit_opts(st, created_by.clone());
                crate::commit::commit_changes(&self.d, &c, Some(parent), opts)
                    .await
                    .map_err(|e| fail(e.message))
            }
            Ok(code) => Err(Failure {
                message: format!(
                    "The command '{}' returned a non-zero code: {code}",
                    cmd.join(" ")
                ),
                code: Some(code),
            }),
            Err(e) => Err(e),
        };
        if remove_now {
            let _ = self
                .d
                .containers
                .remove_with(&c, true, true, &self.d.events)
                .await;
            if outcome.is_ok() {
                self.out
                    .note(format!("Removing intermediate container {c_short}\n"))
                    .await;
            }
        }
        drop(prepared);
        let id = outcome?;
        self.done(st, id, &key, &created_by).await
    }
    /// Starts a RUN container, streams its output, returns its exit code.
    pub(super) async fn run_container(&self, c: &Arc<crate::model::Ctr>) -> Result<i64, Failure> {
        let mut rx = c.state.subscribe();
        self.d
            .containers
            .start(c, &self.d.events)
            .await
            .map_err(|e| fail(e.message))?;
        let path = self.d.containers.log_path(c);
        let mut reader = berth_runtime::logs::LogReader::new(&path);
        loop {
            let running = c.state().status == "running";
            for e in reader.read() {
                self.out.run_output(e.stream == "stderr", &e.log).await;
            }
            if !running {
                break;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = self.out.closed() => {
                    // canceled: the step's container goes (the caller removes it)
                    let _ = self.d.containers.kill(c, 9).await;
                    return Err(fail("the build was canceled: its client went away"));
                }
            }
        }
        let s = c.state();
        if !s.error.is_empty() {
            return Err(fail(s.error));
        }
        Ok(s.exit_code)
    }
}
