//! Containers on networks: endpoints made (veth pairs, addresses, DNS names) when a
//! container starts or connects, and taken away when it stops, disconnects or was
//! left behind by a crash.

use super::*;

/// Another container's namespace, for `--network container:NAME`: its path, and the
/// hosts and resolv.conf texts it shares.
pub struct Joined {
    pub netns: String,
    pub hosts: String,
    pub resolv: String,
}

/// What a container's start takes from its networking.
pub struct Attachment {
    pub network: berth_runtime::spec::Network,
    pub state: Option<NetState>,
    /// lines for its /etc/hosts after the standard ones
    pub hosts: Vec<String>,
    /// its /etc/resolv.conf
    pub resolv: String,
}

pub(super) fn veth_name(cid: &str, slot: usize) -> String {
    let c = b"0123456789abcdefghijklmnopqrstuvwxyz"[slot % 36] as char;
    format!("{VETH_PREFIX}{}{c}", &cid[..cid.len().min(10)])
}

pub(super) fn host_resolv() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// resolv.conf's `search` and `options` lines of a text.
pub(super) fn resolv_lines(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(key)).then(|| w.map(str::to_string).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

impl Networks {
    /// Connects a container about to start: its namespace, endpoints, ports and the
    /// files its resolver reads. `joined` finds another container's namespace for
    /// `container:NAME` (its path, its hosts and resolv.conf texts).
    pub async fn attach(
        &self,
        cid: &str,
        name: &str,
        hostname: &str,
        spec: &Value,
        joined: &(dyn Fn(&str) -> Result<Joined, EngineError> + Sync),
    ) -> Result<Attachment, EngineError> {
        let hc = &spec["HostConfig"];
        match Mode::of(hc) {
            Mode::Host => {
                return Ok(Attachment {
                    network: berth_runtime::spec::Network::Host,
                    state: None,
                    hosts: Vec::new(),
                    resolv: host_resolv(),
                })
            }
            Mode::None => {
                return Ok(Attachment {
                    network: berth_runtime::spec::Network::Private,
                    state: None,
                    hosts: Vec::new(),
                    resolv: host_resolv(),
                })
            }
            Mode::Container(other) => {
                let j = joined(&other)?;
                return Ok(Attachment {
                    network: berth_runtime::spec::Network::Joined(j.netns),
                    state: None,
                    hosts: j.hosts.lines().map(str::to_string).collect(),
                    resolv: j.resolv,
                });
            }
            Mode::Bridge(_) => {}
        }
        let mut wanted = Vec::new();
        for (key, ep) in requested(spec) {
            wanted.push((self.find(&key)?, ep));
        }
        let path = self.netns_dir.join(cid);
        let p2 = path.clone();
        tokio::task::spawn_blocking(move || netns::create(&p2))
            .await
            .map_err(internal)?
            .map_err(|e| internal(format!("making the network namespace: {e}")))?;
        let mut st = NetState {
            netns: path.display().to_string(),
            ..Default::default()
        };
        if wanted.is_empty() {
            // disconnected from every network: loopback only, until a connect
            return Ok(Attachment {
                network: berth_runtime::spec::Network::Joined(st.netns.clone()),
                state: Some(st),
                hosts: Vec::new(),
                resolv: host_resolv(),
            });
        }
        match self.wire(cid, name, hostname, spec, &wanted, &mut st).await {
            Ok(()) => {}
            Err(e) => {
                self.detach(cid, &st).await;
                return Err(e);
            }
        }
        let primary = &wanted[0].0;
        let mut hosts = Vec::new();
        for e in &st.endpoints {
            hosts.push(format!("{}\t{hostname}", e.ip));
        }
        let dns_servers = crate::spec::strings(&hc["Dns"]).unwrap_or_default();
        let search = crate::spec::strings(&hc["DnsSearch"])
            .filter(|s| !s.is_empty())
            .or_else(|| (!self.dns_search.is_empty()).then(|| self.dns_search.clone()))
            .unwrap_or_else(|| resolv_lines(&host_resolv(), "search"));
        let mut options = crate::spec::strings(&hc["DnsOptions"])
            .filter(|s| !s.is_empty())
            .or_else(|| (!self.dns_opts.is_empty()).then(|| self.dns_opts.clone()))
            .unwrap_or_default();
        let mut resolv = String::new();
        if primary.default && !dns_servers.is_empty() {
            // the default bridge with --dns: those servers, as Docker writes them
            for d in &dns_servers {
                resolv.push_str(&format!("nameserver {d}\n"));
            }
        } else {
            resolv.push_str(&format!("nameserver {}\n", primary.gateway));
            if !options.iter().any(|o| o.starts_with("ndots:")) {
                options.push("ndots:0".into());
            }
        }
        if !search.is_empty() {
            resolv.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !options.is_empty() {
            resolv.push_str(&format!("options {}\n", options.join(" ")));
        }
        st.dns = dns_servers;
        Ok(Attachment {
            network: berth_runtime::spec::Network::Joined(st.netns.clone()),
            state: Some(st),
            hosts,
            resolv,
        })
    }
    pub(super) async fn wire(
        &self,
        cid: &str,
        name: &str,
        hostname: &str,
        spec: &Value,
        wanted: &[(Arc<Net>, Value)],
        st: &mut NetState,
    ) -> Result<(), EngineError> {
        let nl = self.nl().await?;
        let ns_file = std::fs::File::open(&st.netns).map_err(internal)?;
        let mut routed = false;
        for (slot, (net, ep)) in wanted.iter().enumerate() {
            self.add_endpoint(
                cid,
                name,
                hostname,
                slot,
                net,
                ep,
                st,
                nl,
                &ns_file,
                &mut routed,
            )
            .await?;
        }
        // published ports, on the first network (none on an internal one)
        let (net, _) = &wanted[0];
        let ip: Ipv4Addr = st.endpoints[0].ip.parse().map_err(internal)?;
        let mut held = Vec::new();
        for (port, proto, host_ip, host_port) in bindings(spec)? {
            if net.cfg.internal {
                continue;
            }
            let hip: Ipv4Addr = if host_ip.is_empty() {
                Ipv4Addr::UNSPECIFIED
            } else {
                host_ip
                    .parse()
                    .map_err(|_| EngineError::invalid(format!("invalid IP address: {host_ip}")))?
            };
            let (lo, hi) = match host_port.split_once('-') {
                Some((a, b)) => (a.parse::<u16>().ok(), b.parse::<u16>().ok()),
                None if host_port.is_empty() => (Some(0), Some(0)),
                None => {
                    let p = host_port.parse::<u16>().ok();
                    (p, p)
                }
            };
            let (Some(lo), Some(hi)) = (lo, hi) else {
                return Err(EngineError::invalid(format!(
                    "invalid hostPort: {host_port}"
                )));
            };
            let mut last_err = None;
            let mut got = None;
            for candidate in lo..=hi {
                if candidate != 0 && self.port_taken(&proto, hip, candidate, &held) {
                    last_err = Some(EngineError::internal(format!(
                        "Bind for {hip}:{candidate} failed: port is already allocated"
                    )));
                    continue;
                }
                match hold(&proto, hip, candidate) {
                    Ok(h) => {
                        got = Some(h);
                        break;
                    }
                    Err(e) => {
                        last_err = Some(EngineError::internal(format!(
                            "driver failed programming external connectivity on endpoint {name} ({}): failed to bind host port for {hip}:{candidate}:{ip}:{port}/{proto}: {}",
                            st.endpoints[0].endpoint_id,
                            std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))
                                .to_string()
                                .split(" (os error")
                                .next()
                                .unwrap_or_default()
                                .to_lowercase()
                        )));
                    }
                }
            }
            let Some((sock, hp)) = got else {
                // record what is held so far, so detach gives it back
                self.ports
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(cid.to_string(), held);
                return Err(last_err.unwrap_or_else(|| internal("no host port")));
            };
            st.ports.push(Published {
                proto: proto.clone(),
                host_ip: if host_ip.is_empty() {
                    "0.0.0.0".into()
                } else {
                    host_ip.clone()
                },
                host_port: hp,
                port,
            });
            held.push(Held {
                _sock: sock,
                rule: nft::PortRule {
                    proto,
                    host_ip: (!hip.is_unspecified()).then_some(hip),
                    host_port: hp,
                    ip,
                    port,
                    bridge: net.cfg.bridge.clone(),
                },
            });
        }
        let any_ports = !held.is_empty();
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cid.to_string(), held);
        if any_ports {
            self.apply_rules().await?;
        }
        Ok(())
    }
    /// One network's endpoint in a container's namespace: an address (fixed or
    /// allocated), a veth pair on the network's bridge, the address and (for the first
    /// network that may have one) the default route inside.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn add_endpoint(
        &self,
        cid: &str,
        name: &str,
        hostname: &str,
        slot: usize,
        net: &Arc<Net>,
        ep: &Value,
        st: &mut NetState,
        nl: &Netlink,
        ns_file: &std::fs::File,
        routed: &mut bool,
    ) -> Result<(), EngineError> {
        let short = &cid[..cid.len().min(12)];
        let aliases = crate::spec::strings(&ep["Aliases"]).unwrap_or_default();
        let asked_mac = match ep["MacAddress"].as_str().filter(|m| !m.is_empty()) {
            Some(m) => Some(
                ipam::parse_mac(m)
                    .ok_or_else(|| EngineError::invalid(format!("invalid MAC address: {m}")))?,
            ),
            None => None,
        };
        let fixed = ep["IPAMConfig"]["IPv4Address"]
            .as_str()
            .filter(|s| !s.is_empty());
        let fixed6 = ep["IPAMConfig"]["IPv6Address"]
            .as_str()
            .filter(|s| !s.is_empty());
        if net.default && (fixed.is_some() || fixed6.is_some() || !aliases.is_empty()) {
            return Err(EngineError::invalid(
                if fixed.is_some() || fixed6.is_some() {
                    "user specified IP address is supported on user defined networks only"
                } else {
                    "network-scoped alias is supported only for containers in user defined networks"
                },
            ));
        }
        // the address, taken under the lock that the next container's allocation reads
        let endpoint = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            let mut used: HashSet<Ipv4Addr> = live
                .values()
                .flatten()
                .filter(|e| e.network_id == net.cfg.id)
                .filter_map(|e| e.ip.parse().ok())
                .collect();
            // auxiliary addresses are reserved
            used.extend(
                net.cfg
                    .aux_addresses
                    .values()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok()),
            );
            let ip = match fixed {
                Some(f) => {
                    let ip: Ipv4Addr = f
                        .parse()
                        .map_err(|_| EngineError::invalid(format!("invalid IPv4 address: {f}")))?;
                    if !net.subnet.contains(ip) || ip == net.gateway {
                        return Err(EngineError::invalid(format!(
                            "no configured subnet or ip-range contain the IP address {ip}"
                        )));
                    }
                    if used.contains(&ip) {
                        return Err(EngineError::conflict(format!(
                            "Address already in use: {ip} on network {}",
                            net.cfg.name
                        )));
                    }
                    ip
                }
                None => ipam::allocate(&net.subnet, net.range.as_ref(), net.gateway, &used)
                    .ok_or_else(|| {
                        EngineError::conflict(format!(
                            "no available IPv4 addresses on this network's address pools: {} ({})",
                            net.cfg.name, net.cfg.id
                        ))
                    })?,
            };
            let ip6 = match &net.v6 {
                Some(v6) => Some(self.address6(&live, net, v6, fixed6)?),
                None if fixed6.is_some() => {
                    return Err(EngineError::invalid(format!(
                        "no configured subnet or ip-range contain the IP address {}: network {} has no IPv6",
                        fixed6.unwrap_or_default(),
                        net.cfg.name
                    )))
                }
                None => None,
            };
            let mut dns_names = vec![name.to_string(), short.to_string()];
            for a in aliases.iter().chain(std::iter::once(&hostname.to_string())) {
                if !dns_names.contains(a) {
                    dns_names.push(a.clone());
                }
            }
            let e = Endpoint {
                network_id: net.cfg.id.clone(),
                network: net.cfg.name.clone(),
                endpoint_id: hex::encode(rand::random::<[u8; 32]>()),
                ip: ip.to_string(),
                prefix: net.subnet.prefix,
                gateway: net.gateway.to_string(),
                mac: ipam::mac_string(&asked_mac.unwrap_or_else(|| ipam::mac_for(ip))),
                aliases,
                dns_names: dns_names
                    .into_iter()
                    .map(|d| d.to_ascii_lowercase())
                    .collect(),
                veth: veth_name(cid, slot),
                ifname: format!("eth{slot}"),
                ip6: ip6.map(|a| a.to_string()).unwrap_or_default(),
                prefix6: net.v6.as_ref().map_or(0, |v| v.subnet.prefix),
                gateway6: net
                    .v6
                    .as_ref()
                    .map(|v| v.gateway.to_string())
                    .unwrap_or_default(),
                container_name: name.to_string(),
                links: crate::spec::strings(&ep["Links"])
                    .unwrap_or_default()
                    .iter()
                    .map(|l| {
                        let (t, a) = l.split_once(':').unwrap_or((l, l));
                        (t.trim_start_matches('/').to_string(), a.to_string())
                    })
                    .collect(),
            };
            live.entry(cid.to_string()).or_default().push(e.clone());
            e
        };
        st.endpoints.push(endpoint.clone());
        let bridge = match nl.index(&net.cfg.bridge).await.map_err(internal)? {
            Some(i) => i,
            None => {
                self.bring_up(net).await?;
                nl.index(&net.cfg.bridge)
                    .await
                    .map_err(internal)?
                    .ok_or_else(|| internal(format!("bridge {} is missing", net.cfg.bridge)))?
            }
        };
        let ip: Ipv4Addr = endpoint.ip.parse().map_err(internal)?;
        nl.add_veth(&berth_network::link::Veth {
            host: &endpoint.veth,
            bridge,
            peer: &endpoint.ifname,
            mac: asked_mac.unwrap_or_else(|| ipam::mac_for(ip)),
            netns_fd: ns_file.as_raw_fd(),
            mtu: net.mtu(),
            alias: &self.owner(),
        })
        .await
        .map_err(|e| internal(format!("making the container's interface: {e}")))?;
        let inside = Netlink::in_netns(Path::new(&st.netns)).map_err(internal)?;
        let gw = (!*routed && !net.cfg.internal).then_some(net.gateway);
        *routed |= gw.is_some();
        // the first IPv6 network that may route gives the IPv6 default route (a later
        // one finds it there)
        let v6 = match (endpoint.ip6.parse::<Ipv6Addr>(), &net.v6) {
            (Ok(ip6), Some(n6)) => Some(berth_network::link::V6 {
                ip: ip6,
                prefix: n6.subnet.prefix,
                gateway: (!net.cfg.internal).then_some(n6.gateway),
            }),
            _ => None,
        };
        inside
            .configure(&endpoint.ifname, ip, endpoint.prefix, gw, v6)
            .await
            .map_err(|err| internal(format!("configuring {}: {err}", endpoint.ifname)))?;
        Ok(())
    }
    /// A container's IPv6 address on `net`: `fixed`, or the first free one.
    pub(super) fn address6(
        &self,
        live: &HashMap<String, Vec<Endpoint>>,
        net: &Net,
        v6: &V6Net,
        fixed: Option<&str>,
    ) -> Result<Ipv6Addr, EngineError> {
        let used: HashSet<Ipv6Addr> = live
            .values()
            .flatten()
            .filter(|e| e.network_id == net.cfg.id)
            .filter_map(|e| e.ip6.parse().ok())
            .collect();
        match fixed {
            Some(f) => {
                let ip: Ipv6Addr = f
                    .parse()
                    .map_err(|_| EngineError::invalid(format!("invalid IPv6 address: {f}")))?;
                if !v6.subnet.contains(ip) || ip == v6.gateway {
                    return Err(EngineError::invalid(format!(
                        "no configured subnet or ip-range contain the IP address {ip}"
                    )));
                }
                if used.contains(&ip) {
                    return Err(EngineError::conflict(format!(
                        "Address already in use: {ip} on network {}",
                        net.cfg.name
                    )));
                }
                Ok(ip)
            }
            None => {
                ipam::allocate6(&v6.subnet, v6.range.as_ref(), v6.gateway, &used).ok_or_else(|| {
                    EngineError::conflict(format!(
                        "no available IPv6 addresses on this network's address pools: {} ({})",
                        net.cfg.name, net.cfg.id
                    ))
                })
            }
        }
    }
    /// `network connect` for a running container: one more endpoint in its namespace.
    pub async fn connect_running(
        &self,
        cid: &str,
        name: &str,
        hostname: &str,
        st: &mut NetState,
        net: &Arc<Net>,
        ep: &Value,
    ) -> Result<(), EngineError> {
        if st.netns.is_empty() {
            return Err(EngineError::invalid(
                "container cannot be connected to a network: it does not use bridge networking",
            ));
        }
        if st.endpoints.iter().any(|e| e.network_id == net.cfg.id) {
            return Err(EngineError::forbidden(format!(
                "endpoint with name {name} already exists in network {}",
                net.cfg.name
            )));
        }
        let nl = self.nl().await?;
        let ns_file = std::fs::File::open(&st.netns).map_err(internal)?;
        let slot = (0..36)
            .find(|i| !st.endpoints.iter().any(|e| e.ifname == format!("eth{i}")))
            .unwrap_or(35);
        let mut routed = st.endpoints.iter().any(|e| {
            self.find(&e.network_id)
                .map(|n| !n.cfg.internal)
                .unwrap_or(false)
        });
        let before = st.endpoints.len();
        let r = self
            .add_endpoint(
                cid,
                name,
                hostname,
                slot,
                net,
                ep,
                st,
                nl,
                &ns_file,
                &mut routed,
            )
            .await;
        if r.is_err() && st.endpoints.len() > before {
            // undo the half-made endpoint
            if let Some(e) = st.endpoints.pop() {
                self.forget_endpoint(cid, &e.network_id);
                let _ = nl.delete(&e.veth).await;
            }
        }
        r
    }
    /// `network disconnect` for a running container.
    pub async fn disconnect_running(
        &self,
        cid: &str,
        st: &mut NetState,
        net: &Net,
    ) -> Result<(), EngineError> {
        let Some(i) = st.endpoints.iter().position(|e| e.network_id == net.cfg.id) else {
            return Err(EngineError::forbidden(format!(
                "container {cid} is not connected to network {}",
                net.cfg.name
            )));
        };
        let e = st.endpoints.remove(i);
        self.forget_endpoint(cid, &e.network_id);
        self.nl().await?.delete(&e.veth).await.map_err(internal)?;
        Ok(())
    }
    pub(super) fn forget_endpoint(&self, cid: &str, net_id: &str) {
        if let Some(v) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(cid)
        {
            v.retain(|e| e.network_id != net_id);
        }
    }
    /// Undoes [`Networks::attach`]: ports, endpoints, veths and the namespace.
    pub async fn detach(&self, cid: &str, st: &NetState) {
        let had_ports = self
            .ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cid)
            .is_some_and(|h| !h.is_empty());
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cid);
        if had_ports {
            if let Err(e) = self.apply_rules().await {
                tracing::warn!(error = %e.message, "applying network rules");
            }
        }
        if let Ok(nl) = self.nl().await {
            for e in &st.endpoints {
                let _ = nl.delete(&e.veth).await;
            }
        }
        if !st.netns.is_empty() {
            let p = PathBuf::from(&st.netns);
            let _ = tokio::task::spawn_blocking(move || netns::remove(&p)).await;
        }
    }
    /// A running container's endpoints and ports after a daemon restart.
    pub(super) fn readopt(&self, cid: &str, _name: &str, st: &NetState) {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cid.to_string(), st.endpoints.clone());
        let mut held = Vec::new();
        for p in &st.ports {
            let ip: Ipv4Addr = p.host_ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
            let Some(e) = st.endpoints.first() else {
                continue;
            };
            let Some(net) = self.find(&e.network_id).ok() else {
                continue;
            };
            match hold(&p.proto, ip, p.host_port) {
                Ok((sock, _)) => held.push(Held {
                    _sock: sock,
                    rule: nft::PortRule {
                        proto: p.proto.clone(),
                        host_ip: (!ip.is_unspecified()).then_some(ip),
                        host_port: p.host_port,
                        ip: e.ip.parse().unwrap_or(Ipv4Addr::UNSPECIFIED),
                        port: p.port,
                        bridge: net.cfg.bridge.clone(),
                    },
                }),
                Err(err) => {
                    tracing::warn!(container = %cid, port = p.host_port, error = %err, "re-holding a published port")
                }
            }
        }
        self.ports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cid.to_string(), held);
    }
    /// Removes namespaces and veths no running container owns, and bridges of networks
    /// that are gone.
    pub(super) async fn sweep(&self, keep: &HashSet<String>) {
        if let Ok(rd) = std::fs::read_dir(&self.netns_dir) {
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                if !keep.contains(&id) {
                    tracing::info!(container = %id, "removing a stale network namespace");
                    netns::remove(&e.path());
                }
            }
        }
        let Ok(nl) = self.nl().await else { return };
        let Ok(links) = nl.links().await else { return };
        let bridges: HashSet<String> = self.all().iter().map(|n| n.cfg.bridge.clone()).collect();
        let owner = self.owner();
        for l in links
            .iter()
            .filter(|l| l.alias.as_deref() == Some(owner.as_str()))
        {
            let name = &l.name;
            let stale_veth = name.starts_with(VETH_PREFIX)
                && name.len() > VETH_PREFIX.len() + 1
                && !keep.iter().any(|k| {
                    let short = &name[VETH_PREFIX.len()..name.len() - 1];
                    k.starts_with(short)
                });
            let stale_bridge = name.starts_with("bbr-") && !bridges.contains(name);
            if stale_veth || stale_bridge {
                tracing::info!(link = %name, "removing a stale link");
                let _ = nl.delete(name).await;
            }
        }
    }
}
