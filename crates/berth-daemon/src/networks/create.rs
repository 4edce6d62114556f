//! Making and removing user-defined networks: their options checked, their subnets
//! chosen, their bridges brought up.

use super::*;

impl Networks {
    /// `POST /networks/create`.
    pub async fn create(&self, body: &Value) -> Result<(Arc<Net>, String), EngineError> {
        let name = body["Name"].as_str().unwrap_or_default().to_string();
        if name.is_empty() {
            return Err(EngineError::invalid("network name is required"));
        }
        // dockerd takes any name (docker-py's tests make "test 01"); one that cannot
        // be named in a path or holds control characters is refused
        if name.trim().is_empty() || name.contains('/') || name.chars().any(char::is_control) {
            return Err(EngineError::invalid(format!(
                "invalid network name \"{}\": a name needs a printable character and no '/'",
                name.escape_debug()
            )));
        }
        if ["bridge", "host", "none", "default"].contains(&name.as_str()) {
            return Err(EngineError::forbidden(format!(
                "{name} is a pre-defined network and cannot be created"
            )));
        }
        let driver = body["Driver"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("bridge");
        if driver != "bridge" {
            return Err(EngineError::invalid(format!(
                "plugin \"{driver}\" not found: only the bridge driver is supported"
            )));
        }
        if self.find(&name).is_ok_and(|n| n.cfg.name == name) {
            return Err(EngineError::conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let enable_ipv6 = body["EnableIPv6"].as_bool() == Some(true);
        let mut options = BTreeMap::new();
        if let Some(o) = body["Options"].as_object() {
            for (k, v) in o {
                options.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        // bridge options berth does not carry out are refused, not dropped
        if options
            .get("com.docker.network.bridge.enable_icc")
            .is_some_and(|v| matches!(v.as_str(), "false" | "0"))
        {
            return Err(EngineError::invalid(
                "com.docker.network.bridge.enable_icc=false is not supported: containers on a berth network can always reach each other",
            ));
        }
        if let Some(ip) = options
            .get("com.docker.network.bridge.host_binding_ipv4")
            .filter(|ip| !matches!(ip.as_str(), "" | "0.0.0.0"))
        {
            return Err(EngineError::invalid(format!(
                "com.docker.network.bridge.host_binding_ipv4={ip} is not supported: publish ports with their host address (-p {ip}:PORT:PORT)"
            )));
        }
        let configs = body["IPAM"]["Config"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let is_v6 = |c: &Value| c["Subnet"].as_str().is_some_and(|s| s.contains(':'));
        let (v6s, v4s): (Vec<Value>, Vec<Value>) = configs.into_iter().partition(is_v6);
        if v4s.len() > 1 || v6s.len() > 1 {
            return Err(EngineError::invalid(
                "only one IPv4 and one IPv6 subnet per network are supported",
            ));
        }
        if let (false, Some(c)) = (enable_ipv6, v6s.first()) {
            return Err(EngineError::invalid(format!(
                "the IPv6 subnet {} needs IPv6 enabled on the network (EnableIPv6, --ipv6)",
                c["Subnet"].as_str().unwrap_or_default()
            )));
        }
        let v6 = if enable_ipv6 {
            Some(self.v6_config(v6s.first().unwrap_or(&Value::Null))?)
        } else {
            None
        };
        let conf = v4s.first().cloned().unwrap_or(Value::Null);
        let others: Vec<Subnet> = self.all().iter().map(|n| n.subnet).collect();
        let subnet = match conf["Subnet"].as_str().filter(|s| !s.is_empty()) {
            Some(s) => {
                let s = Subnet::parse_strict(s).map_err(|e| EngineError::invalid(e.to_string()))?;
                if others.iter().any(|o| o.overlaps(&s)) {
                    return Err(EngineError::conflict(
                        "invalid pool request: Pool overlaps with other one on this address space",
                    ));
                }
                s
            }
            None => {
                let mut avoid = host_routes();
                avoid.extend(others.iter().copied());
                ipam::pick_subnet(&self.pools, &avoid).ok_or_else(|| {
                    EngineError::invalid("all predefined address pools have been fully subnetted")
                })?
            }
        };
        let range = match conf["IPRange"].as_str().filter(|s| !s.is_empty()) {
            Some(r) => {
                let r: Subnet =
                    Subnet::parse_strict(r).map_err(|e| EngineError::invalid(e.to_string()))?;
                if !subnet.covers(&r) {
                    return Err(EngineError::invalid(format!(
                        "invalid pool request: the IP range {r} is not within the subnet {subnet}"
                    )));
                }
                Some(r)
            }
            None => None,
        };
        let gateway = match conf["Gateway"].as_str().filter(|s| !s.is_empty()) {
            Some(g) => {
                let g: Ipv4Addr = g
                    .parse()
                    .map_err(|_| EngineError::invalid(format!("invalid gateway address {g}")))?;
                if !subnet.contains(g) {
                    return Err(EngineError::invalid(format!(
                        "no matching subnet for gateway {g}"
                    )));
                }
                g
            }
            None => subnet
                .nth(1)
                .ok_or_else(|| EngineError::invalid("subnet too small"))?,
        };
        let mut aux_addresses = BTreeMap::new();
        for (k, v) in conf["AuxiliaryAddresses"].as_object().into_iter().flatten() {
            let a = v.as_str().unwrap_or_default();
            match a.parse::<Ipv4Addr>() {
                Ok(ip) if subnet.contains(ip) => {
                    aux_addresses.insert(k.clone(), ip.to_string());
                }
                _ => {
                    return Err(EngineError::invalid(format!(
                        "no matching subnet for aux-address {a}"
                    )))
                }
            }
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let bridge = match options.get("com.docker.network.bridge.name") {
            Some(b) if !b.is_empty() => {
                if b.len() > 15
                    || !b
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(EngineError::invalid(format!("invalid bridge name {b}")));
                }
                if self.all().iter().any(|n| &n.cfg.bridge == b) {
                    return Err(EngineError::conflict(format!("bridge name {b} is in use")));
                }
                b.clone()
            }
            _ => format!("bbr-{}", &id[..11]),
        };
        let cfg = NetConfig {
            id: id.clone(),
            name: name.clone(),
            driver: "bridge".into(),
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
            ip_range: range.map(|r| r.to_string()),
            aux_addresses,
            internal: body["Internal"].as_bool().unwrap_or(false),
            attachable: body["Attachable"].as_bool().unwrap_or(false),
            labels: body["Labels"].as_object().cloned().unwrap_or_default(),
            options,
            created: now(),
            bridge,
            enable_ipv6,
            subnet6: v6.as_ref().map(|v| v.subnet.to_string()),
            gateway6: v6.as_ref().map(|v| v.gateway.to_string()),
            ip_range6: v6.as_ref().and_then(|v| v.range.map(|r| r.to_string())),
        };
        let net = Arc::new(Self::net_of(cfg.clone(), false).map_err(internal)?);
        let row = NetworkRow {
            id: id.clone(),
            name: name.clone(),
            body: serde_json::to_string(&cfg).map_err(internal)?,
        };
        if !self.db.insert_network(&row)? {
            return Err(EngineError::conflict(format!(
                "network with name {name} already exists"
            )));
        }
        if let Err(e) = self.bring_up(&net).await {
            self.db.delete_network(&id)?;
            let _ = self.nl().await?.delete(&net.cfg.bridge).await;
            return Err(e);
        }
        self.nets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(net.clone());
        if let Err(e) = self.apply_rules().await {
            tracing::warn!(error = %e.message, "applying network rules");
        }
        Ok((net, String::new()))
    }
    /// A new network's IPv6 side from its IPAM config (`Subnet`, `IPRange`, `Gateway`):
    /// without a subnet, a unique local /64 of its own.
    pub(super) fn v6_config(&self, conf: &Value) -> Result<V6Net, EngineError> {
        let bad = |e: ipam::SubnetError| EngineError::invalid(e.to_string());
        let others: Vec<Subnet6> = self
            .all()
            .iter()
            .filter_map(|n| n.v6.as_ref().map(|v| v.subnet))
            .collect();
        let subnet = match conf["Subnet"].as_str().filter(|s| !s.is_empty()) {
            Some(s) => {
                let s = Subnet6::parse_strict(s).map_err(bad)?;
                if others.iter().any(|o| o.overlaps(&s)) {
                    return Err(EngineError::conflict(
                        "invalid pool request: Pool overlaps with other one on this address space",
                    ));
                }
                s
            }
            None => loop {
                let s = Subnet6::unique_local(rand::random());
                if !others.iter().any(|o| o.overlaps(&s)) {
                    break s;
                }
            },
        };
        let range = match conf["IPRange"].as_str().filter(|s| !s.is_empty()) {
            Some(r) => {
                let r = Subnet6::parse_strict(r).map_err(bad)?;
                if !subnet.covers(&r) {
                    return Err(EngineError::invalid(format!(
                        "invalid pool request: the IP range {r} is not within the subnet {subnet}"
                    )));
                }
                Some(r)
            }
            None => None,
        };
        let gateway = match conf["Gateway"].as_str().filter(|s| !s.is_empty()) {
            Some(g) => {
                let g: Ipv6Addr = g
                    .parse()
                    .map_err(|_| EngineError::invalid(format!("invalid gateway address {g}")))?;
                if !subnet.contains(g) {
                    return Err(EngineError::invalid(format!(
                        "no matching subnet for gateway {g}"
                    )));
                }
                g
            }
            None => subnet
                .nth(1)
                .ok_or_else(|| EngineError::invalid("subnet too small"))?,
        };
        Ok(V6Net {
            subnet,
            gateway,
            range,
        })
    }
    /// `DELETE /networks/{id}`.
    pub async fn remove(&self, key: &str) -> Result<Arc<Net>, EngineError> {
        let n = self.find(key)?;
        if n.default {
            return Err(EngineError::forbidden(
                "bridge is a pre-defined network and cannot be removed",
            ));
        }
        if !self.attached(&n.cfg.id).is_empty() {
            return Err(EngineError::conflict(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.cfg.name, n.cfg.id
            )));
        }
        self.db.delete_network(&n.cfg.id)?;
        self.nets
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|x| x.cfg.id != n.cfg.id);
        n.dns.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.nl()
            .await?
            .delete(&n.cfg.bridge)
            .await
            .map_err(|e| internal(format!("removing bridge {}: {e}", n.cfg.bridge)))?;
        if let Err(e) = self.apply_rules().await {
            tracing::warn!(error = %e.message, "applying network rules");
        }
        Ok(n)
    }
}
