//! What a start prepares before the shim: namespaces shared with other containers or
//! the host, user namespace remapping, legacy links, the bundle's config.json.

use super::*;

impl Containers {
    /// A pid, ipc or uts namespace as `--pid`/`--ipc`/`--uts` ask for it: the host's, a
    /// running container's (`container:NAME`), else the container's own.
    pub(super) fn ns_mode(
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
    pub(super) fn joined_netns(&self, other: &str) -> Result<crate::networks::Joined, EngineError> {
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
    /// Legacy links (`HostConfig.Links`, `NAME:ALIAS`) of a container about to start on
    /// the default bridge: each target must be running; gives the `/etc/hosts` lines and
    /// the environment Docker derives from them (`ALIAS_NAME`, `ALIAS_PORT_…`,
    /// `ALIAS_ENV_…`).
    pub(super) fn link_info(&self, c: &Ctr) -> Result<(Vec<String>, Vec<String>), EngineError> {
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
    pub(super) fn prepare(
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
}
