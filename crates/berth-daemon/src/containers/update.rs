//! Changing a created or running container: its resources and restart policy
//! (`update`), and its networks (connect, disconnect).

use super::*;

impl Containers {
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
            return Err(EngineError::forbidden(format!(
                "container {} is not connected to network {}",
                c.id, net.cfg.name
            )));
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
}
