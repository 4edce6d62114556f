//! Networks: the built-in `bridge` (berth's default bridge device), `host` and `none`,
//! and user-defined bridge networks. A container on a bridge network gets a network
//! namespace made and pinned by berthd before its process exists (so the runtime only
//! joins it), one veth pair per network (the peer made directly inside the namespace),
//! an address from the network's subnet, a default route through the gateway, published
//! ports as DNAT rules in `table inet berth` (the host ports held by a bound socket so no
//! other process or container takes them), and the network's embedded DNS server as its
//! resolver. Everything is undone when the container stops, and anything left by a
//! crash is swept at the next start.

use crate::config::Config;
use crate::error::EngineError;
use crate::model::{Endpoint, NetState, Published};
use berth_network::ipam::{self, Subnet, Subnet6};
use berth_network::link::Netlink;
use berth_network::{dns, netns, nft};
use berth_store::{Db, NetworkRow};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// Where subnets come from unless daemon.json says otherwise: clear of Docker's
/// 172.17.0.0/16 (and its 172.18-31 and 192.168 pools) and Podman's 10.88.0.0/16.
const DEFAULT_POOL: &str = "10.210.0.0/16";
const DEFAULT_POOL_SIZE: u8 = 24;
/// Host-side veth names: this prefix, the container's ID start and the network's slot
/// (and the daemon's mark as alias, see `Networks::owner`).
const VETH_PREFIX: &str = "bv";

/// A network's settings, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetConfig {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    #[serde(default)]
    pub ip_range: Option<String>,
    /// `AuxiliaryAddresses`: names for addresses of the subnet no container gets
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub labels: Map<String, Value>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub created: String,
    pub bridge: String,
    #[serde(default)]
    pub enable_ipv6: bool,
    /// the IPv6 subnet, gateway and range (with `enable_ipv6`)
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub gateway6: Option<String>,
    #[serde(default)]
    pub ip_range6: Option<String>,
}

/// A network's IPv6 side.
pub struct V6Net {
    pub subnet: Subnet6,
    pub gateway: Ipv6Addr,
    pub range: Option<Subnet6>,
}

pub struct Net {
    pub cfg: NetConfig,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub range: Option<Subnet>,
    pub v6: Option<V6Net>,
    /// the built-in default bridge (no names in its DNS, as Docker's)
    pub default: bool,
    dns: Mutex<Option<dns::Server>>,
}

impl Net {
    fn masquerade(&self) -> bool {
        self.cfg
            .options
            .get("com.docker.network.bridge.enable_ip_masquerade")
            .is_none_or(|v| v != "false")
    }

    fn mtu(&self) -> Option<u32> {
        self.cfg
            .options
            .get("com.docker.network.driver.mtu")
            .and_then(|m| m.parse().ok())
    }
}

/// How a container asks to be connected (HostConfig.NetworkMode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Bridge(String),
    Host,
    None,
    Container(String),
}

impl Mode {
    pub fn of(hc: &Value) -> Mode {
        match hc["NetworkMode"].as_str().unwrap_or_default() {
            "" | "default" | "bridge" => Mode::Bridge("bridge".into()),
            "host" => Mode::Host,
            "none" => Mode::None,
            m => match m.strip_prefix("container:") {
                Some(c) => Mode::Container(c.to_string()),
                None => Mode::Bridge(m.to_string()),
            },
        }
    }
}

/// The networks a bridge-mode container joins, in order: name and endpoint settings
/// (EndpointsConfig), the NetworkMode's first.
/// In a stored create request: the container was disconnected from the network its
/// `NetworkMode` names.
pub const LEFT_MODE: &str = "LeftNetworkMode";

pub fn requested(spec: &Value) -> Vec<(String, Value)> {
    let hc = &spec["HostConfig"];
    let Mode::Bridge(primary) = Mode::of(hc) else {
        return Vec::new();
    };
    let eps = spec["NetworkingConfig"]["EndpointsConfig"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let same = |k: &str| k == primary || (primary == "bridge" && k == "default");
    let mut first = eps
        .iter()
        .find(|(k, _)| same(k))
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null);
    // the legacy `Config.MacAddress` (API < 1.44) is the first network's
    if let Some(mac) = spec["Config"]["MacAddress"]
        .as_str()
        .filter(|m| !m.is_empty())
    {
        if first["MacAddress"].as_str().unwrap_or_default().is_empty() {
            if !first.is_object() {
                first = json!({});
            }
            first["MacAddress"] = Value::from(mac);
        }
    }
    // a container disconnected from its NetworkMode's network keeps the mode (as dockerd)
    // but joins it no more
    let mut out = if spec[LEFT_MODE].as_bool() == Some(true) {
        Vec::new()
    } else {
        vec![(primary.clone(), first)]
    };
    for (k, v) in eps {
        if !same(&k) {
            out.push((k, v));
        }
    }
    out
}

/// Checks a create request's networking: the networks exist (404 otherwise), fixed
/// addresses and aliases only on user networks, ports well formed. Warnings as Docker
/// gives them.
pub fn validate(
    nets: &Networks,
    spec: &Value,
    container_exists: &dyn Fn(&str) -> Result<(), EngineError>,
) -> Result<Vec<String>, EngineError> {
    let hc = &spec["HostConfig"];
    let mut warnings = Vec::new();
    let mode = Mode::of(hc);
    let publishes = hc["PortBindings"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
        || hc["PublishAllPorts"].as_bool() == Some(true);
    match &mode {
        Mode::Host if publishes => {
            warnings.push("Published ports are discarded when using host network mode".into());
        }
        Mode::Container(other) => {
            container_exists(other)?;
            if publishes {
                return Err(EngineError::invalid(
                    "conflicting options: port publishing and the container type network mode",
                ));
            }
        }
        Mode::Bridge(_) => {
            for (key, ep) in requested(spec) {
                let n = nets.find(&key)?;
                let fixed = ["IPv4Address", "IPv6Address"]
                    .iter()
                    .any(|k| ep["IPAMConfig"][*k].as_str().is_some_and(|s| !s.is_empty()));
                if n.default && fixed {
                    return Err(EngineError::invalid(
                        "user specified IP address is supported on user defined networks only",
                    ));
                }
                if n.default && ep["Aliases"].as_array().is_some_and(|a| !a.is_empty()) {
                    return Err(EngineError::invalid(
                        "network-scoped alias is supported only for containers in user defined networks",
                    ));
                }
            }
            bindings(spec)?;
        }
        _ => {}
    }
    Ok(warnings)
}

/// Docker's lookup of a network: its full name or ID, else a unique ID prefix.
pub fn pick<'a, T>(
    all: &'a [T],
    key: &str,
    name: impl Fn(&T) -> &str,
    id: impl Fn(&T) -> &str,
) -> Result<&'a T, EngineError> {
    if let Some(n) = all.iter().find(|n| name(n) == key || id(n) == key) {
        return Ok(n);
    }
    let hits: Vec<&T> = all
        .iter()
        .filter(|n| !key.is_empty() && id(n).starts_with(key))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(EngineError::not_found(format!("network {key} not found"))),
        _ => Err(EngineError::invalid(format!(
            "network {key} is ambiguous ({} matches found based on ID prefix)",
            hits.len()
        ))),
    }
}

/// A held host port: a bound socket, so nothing else binds it.
struct Held {
    _sock: OwnedFd,
    rule: nft::PortRule,
}

pub struct Networks {
    db: Arc<Db>,
    netns_dir: PathBuf,
    /// the default bridge's and the built-in networks' IDs, kept across restarts
    state_dir: PathBuf,
    pools: Vec<(Subnet, u8)>,
    bip: Option<(Ipv4Addr, u8)>,
    /// the resolvers containers' other queries go to
    upstreams: Vec<SocketAddr>,
    pub dns_search: Vec<String>,
    pub dns_opts: Vec<String>,
    pub daemon_dns: Vec<IpAddr>,
    nets: RwLock<Vec<Arc<Net>>>,
    /// the endpoints of running containers, by container ID (addresses in use, names
    /// the DNS servers answer)
    live: Arc<Mutex<HashMap<String, Vec<Endpoint>>>>,
    ports: Mutex<HashMap<String, Vec<Held>>>,
    nl: tokio::sync::OnceCell<Netlink>,
    /// serialises rule changes (whole-table replacements)
    rules: tokio::sync::Mutex<()>,
    /// the nftables table this daemon owns (or, with iptables, its chains' prefix)
    table: String,
    /// None: neither nft nor iptables-restore is installed (no NAT, no published ports)
    backend: Option<nft::Backend>,
    /// set at shutdown: no rules are put back after that
    closed: std::sync::atomic::AtomicBool,
    /// this daemon's bridges in firewalld's trusted zone, where firewalld runs
    firewalld: berth_network::firewalld::Trust,
    ip_forward: bool,
    /// this daemon's hold on its table (and bridge) in the network namespace
    _claim: berth_network::claim::Claim,
}

/// The rules table of a daemon: `berth` for the default bridge, `berth-BRIDGE` for
/// another, and for a daemon without one (`--bridge none`) a name from its data root,
/// so daemons of several data roots never share one.
fn table_of(bridge: Option<&str>, data_root: &std::path::Path) -> String {
    match bridge {
        Some(crate::config::DEFAULT_BRIDGE) => nft::TABLE.to_string(),
        Some(b) => format!("{}-{b}", nft::TABLE),
        None => {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(data_root.as_os_str().as_encoded_bytes());
            format!("{}-none-{}", nft::TABLE, &hex::encode(h)[..8])
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn internal(e: impl std::fmt::Display) -> EngineError {
    EngineError::internal(e.to_string())
}

/// Subnets of the host's routes (so a new network never shadows one).
fn host_routes() -> Vec<Subnet> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if dest == 0 {
                return None; // the default route
            }
            Some(Subnet::new(
                Ipv4Addr::from(u32::from_be(dest)),
                u32::from_be(mask).count_ones() as u8,
            ))
        })
        .collect()
}

fn set_sysctl(path: &str, value: &str) {
    if !std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        if let Err(e) = std::fs::write(path, value) {
            tracing::warn!(path, error = %e, "setting a sysctl");
        }
    }
}

impl Networks {
    /// Loads the networks, makes the default bridge's settings (its device comes with
    /// [`Networks::setup`]).
    pub fn open(db: Arc<Db>, cfg: &Config) -> anyhow::Result<Networks> {
        let pools = if cfg.address_pools.is_empty() {
            vec![(DEFAULT_POOL.parse()?, DEFAULT_POOL_SIZE)]
        } else {
            cfg.address_pools.clone()
        };
        let upstreams: Vec<SocketAddr> = if cfg.dns.is_empty() {
            dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        } else {
            cfg.dns.iter().map(|ip| SocketAddr::new(*ip, 53)).collect()
        };
        let table = table_of(cfg.bridge.as_deref(), &cfg.data_root);
        let n = Networks {
            db,
            netns_dir: cfg.exec_root.join("netns"),
            state_dir: cfg.data_root.join("network"),
            pools,
            bip: cfg.bip,
            upstreams,
            dns_search: cfg.dns_search.clone(),
            dns_opts: cfg.dns_opts.clone(),
            daemon_dns: cfg.dns.clone(),
            nets: RwLock::new(Vec::new()),
            live: Arc::new(Mutex::new(HashMap::new())),
            ports: Mutex::new(HashMap::new()),
            nl: tokio::sync::OnceCell::new(),
            rules: tokio::sync::Mutex::new(()),
            ip_forward: cfg.ip_forward,
            backend: match cfg.firewall_backend.as_deref() {
                Some("iptables") => Some(nft::Backend::Iptables),
                Some(_) => Some(nft::Backend::Nftables),
                None => nft::Backend::detect(),
            },
            closed: std::sync::atomic::AtomicBool::new(false),
            firewalld: Default::default(),
            _claim: berth_network::claim::claim(&table, cfg.bridge.as_deref())
                .map_err(anyhow::Error::msg)?,
            table,
        };
        let mut nets = Vec::new();
        for row in n.db.networks()? {
            match serde_json::from_str::<NetConfig>(&row.body) {
                Ok(c) => nets.push(Arc::new(Self::net_of(c, false)?)),
                Err(e) => tracing::warn!(network = %row.name, error = %e, "unreadable network"),
            }
        }
        let taken: Vec<Subnet> = nets.iter().map(|x| x.subnet).collect();
        if let Some(bridge) = &cfg.bridge {
            let default = n.default_bridge(&taken, bridge)?;
            nets.insert(0, Arc::new(default));
        }
        *n.nets.write().unwrap_or_else(|p| p.into_inner()) = nets;
        Ok(n)
    }

    fn net_of(c: NetConfig, default: bool) -> anyhow::Result<Net> {
        let v6 = match (&c.subnet6, &c.gateway6) {
            (Some(s), Some(g)) if c.enable_ipv6 => Some(V6Net {
                subnet: s.parse()?,
                gateway: g.parse()?,
                range: c.ip_range6.as_deref().map(str::parse).transpose()?,
            }),
            _ => None,
        };
        Ok(Net {
            subnet: c.subnet.parse()?,
            gateway: c.gateway.parse()?,
            range: c.ip_range.as_deref().map(str::parse).transpose()?,
            v6,
            default,
            dns: Mutex::new(None),
            cfg: c,
        })
    }

    /// The built-in bridge: `bip`, else the first pool subnet clear of the host's routes
    /// and of user networks; an ID stable across restarts (from the data root's record).
    fn default_bridge(&self, taken: &[Subnet], bridge: &str) -> anyhow::Result<Net> {
        let (subnet, gateway) = match self.bip {
            Some((gw, prefix)) => (Subnet::new(gw, prefix), gw),
            None => {
                let mut avoid = host_routes();
                // our own bridge's route is not a collision
                let mine = self.state_dir.join("bridge-subnet");
                if let Ok(s) = std::fs::read_to_string(&mine) {
                    if let Ok(s) = s.trim().parse::<Subnet>() {
                        avoid.retain(|r| *r != s);
                    }
                }
                avoid.extend_from_slice(taken);
                let s = ipam::pick_subnet(&self.pools, &avoid)
                    .ok_or_else(|| anyhow::anyhow!("no free subnet for the default bridge"))?;
                let _ = std::fs::create_dir_all(&self.state_dir);
                let _ = std::fs::write(&mine, s.to_string());
                (s, s.nth(1).unwrap_or(s.addr))
            }
        };
        let id = self.stable_id("bridge");
        let mut options = BTreeMap::new();
        for (k, v) in [
            ("com.docker.network.bridge.default_bridge", "true"),
            ("com.docker.network.bridge.enable_icc", "true"),
            ("com.docker.network.bridge.enable_ip_masquerade", "true"),
            ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
            ("com.docker.network.bridge.name", bridge),
            ("com.docker.network.driver.mtu", "1500"),
        ] {
            options.insert(k.to_string(), v.to_string());
        }
        Self::net_of(
            NetConfig {
                id,
                name: "bridge".into(),
                driver: "bridge".into(),
                subnet: subnet.to_string(),
                gateway: gateway.to_string(),
                ip_range: None,
                aux_addresses: BTreeMap::new(),
                internal: false,
                attachable: false,
                labels: Map::new(),
                options,
                created: now(),
                bridge: bridge.into(),
                enable_ipv6: false,
                subnet6: None,
                gateway6: None,
                ip_range6: None,
            },
            true,
        )
    }

    /// The alias berthd gives its bridges and veths: several daemons may share a host, and
    /// each sweeps only its own links.
    fn owner(&self) -> String {
        format!("berth {}", self.state_dir.display())
    }

    /// A built-in network's ID: made once, kept in the data root.
    pub fn stable_id(&self, name: &str) -> String {
        let file = self.state_dir.join(format!("{name}-id"));
        match std::fs::read_to_string(&file) {
            Ok(s) if s.trim().len() == 64 => s.trim().to_string(),
            _ => {
                let id = hex::encode(rand::random::<[u8; 32]>());
                let _ = std::fs::create_dir_all(&self.state_dir);
                let _ = std::fs::write(&file, &id);
                id
            }
        }
    }

    async fn nl(&self) -> Result<&Netlink, EngineError> {
        self.nl
            .get_or_try_init(|| async { Netlink::new() })
            .await
            .map_err(|e| EngineError::internal(format!("netlink: {e}")))
    }

    /// At daemon start: every network's bridge and DNS server, the sweep of what a
    /// crash left (namespaces and veths of containers not in `running`), and the rules.
    pub async fn setup(&self, running: &[(String, String, NetState)]) {
        if self.ip_forward {
            set_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
        }
        for n in self.all() {
            if let Err(e) = self.bring_up(&n).await {
                tracing::warn!(network = %n.cfg.name, error = %e.message, "bringing up a network");
            }
        }
        let keep: HashSet<String> = running.iter().map(|(id, _, _)| id.clone()).collect();
        for (id, name, st) in running {
            self.readopt(id, name, st);
        }
        self.sweep(&keep).await;
        if let Err(e) = self.apply_rules().await {
            tracing::warn!(error = %e.message, "applying network rules");
        }
    }

    /// A network's bridge device (made if missing, with the gateway address) and, for
    /// bridge networks, its DNS server on the gateway.
    async fn bring_up(&self, n: &Arc<Net>) -> Result<(), EngineError> {
        let nl = self.nl().await?;
        nl.ensure_bridge(
            &n.cfg.bridge,
            n.gateway,
            n.subnet.prefix,
            n.v6.as_ref().map(|v| (v.gateway, v.subnet.prefix)),
            n.mtu(),
            &self.owner(),
        )
        .await
        .map_err(|e| internal(format!("bridge {}: {e}", n.cfg.bridge)))?;
        // DNAT from 127.0.0.1 needs the bridge to take loopback-sourced packets
        set_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", n.cfg.bridge),
            "1",
        );
        let missing = n.dns.lock().unwrap_or_else(|p| p.into_inner()).is_none();
        if missing {
            let live = self.live.clone();
            let net_id = n.cfg.id.clone();
            let lookup: dns::Lookup = Arc::new(move |name: &str, from: IpAddr| {
                let g = live.lock().unwrap_or_else(|p| p.into_inner());
                // the asking container's networks (Docker's rule: names of every network
                // it is on), this one's when the address is no container's
                let from = from.to_string();
                let asking = g
                    .values()
                    .flatten()
                    .find(|e| e.network_id == net_id && e.ip == from);
                if let Some((target, _)) = asking.and_then(|a| {
                    a.links
                        .iter()
                        .find(|(_, alias)| alias.eq_ignore_ascii_case(name))
                }) {
                    let target = target.to_ascii_lowercase();
                    let ips: Vec<IpAddr> = g
                        .values()
                        .flatten()
                        .filter(|e| e.network_id == net_id && e.dns_names.contains(&target))
                        .flat_map(Endpoint::addresses)
                        .collect();
                    if !ips.is_empty() {
                        return Some(ips);
                    }
                }
                let nets: HashSet<&str> = g
                    .values()
                    .find(|eps| eps.iter().any(|e| e.network_id == net_id && e.ip == from))
                    .map(|eps| eps.iter().map(|e| e.network_id.as_str()).collect())
                    .unwrap_or_else(|| HashSet::from([net_id.as_str()]));
                let ips: Vec<IpAddr> = g
                    .values()
                    .flatten()
                    .filter(|e| {
                        nets.contains(e.network_id.as_str())
                            && e.network != "bridge"
                            && e.dns_names.iter().any(|d| d == name)
                    })
                    .flat_map(Endpoint::addresses)
                    .collect();
                (!ips.is_empty()).then_some(ips)
            });
            let bind = SocketAddr::new(IpAddr::V4(n.gateway), 53);
            match dns::serve(bind, lookup, self.upstreams.clone()).await {
                Ok(s) => {
                    n.dns
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(s);
                }
                Err(e) => {
                    tracing::warn!(network = %n.cfg.name, error = %e, "starting the network's DNS server")
                }
            }
        }
        Ok(())
    }

    pub fn all(&self) -> Vec<Arc<Net>> {
        self.nets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// By full name, full ID or ID prefix, as Docker finds them.
    pub fn find(&self, key: &str) -> Result<Arc<Net>, EngineError> {
        let all = self.all();
        pick(&all, key, |n| &n.cfg.name, |n| &n.cfg.id).cloned()
    }

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
            return Err(EngineError::new(
                crate::error::Kind::Forbidden,
                format!("{name} is a pre-defined network and cannot be created"),
            ));
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
    fn v6_config(&self, conf: &Value) -> Result<V6Net, EngineError> {
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

    /// Containers running on a network (ID → name).
    pub fn attached(&self, net_id: &str) -> BTreeMap<String, Endpoint> {
        let g = self.endpoints_by_container();
        g.into_iter()
            .filter_map(|(cid, eps)| {
                eps.into_iter()
                    .find(|e| e.network_id == net_id)
                    .map(|e| (cid, e))
            })
            .collect()
    }

    fn endpoints_by_container(&self) -> HashMap<String, Vec<Endpoint>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `DELETE /networks/{id}`.
    pub async fn remove(&self, key: &str) -> Result<Arc<Net>, EngineError> {
        let n = self.find(key)?;
        if n.default {
            return Err(EngineError::new(
                crate::error::Kind::Forbidden,
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

fn veth_name(cid: &str, slot: usize) -> String {
    let c = b"0123456789abcdefghijklmnopqrstuvwxyz"[slot % 36] as char;
    format!("{VETH_PREFIX}{}{c}", &cid[..cid.len().min(10)])
}

fn host_resolv() -> String {
    std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default()
}

/// resolv.conf's `search` and `options` lines of a text.
fn resolv_lines(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(key)).then(|| w.map(str::to_string).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// A bound socket holding `ip:port` (0: a free one); the port it got.
fn hold(proto: &str, ip: Ipv4Addr, port: u16) -> std::io::Result<(OwnedFd, u16)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let ty = if proto == "udp" {
        SocketType::DGRAM
    } else {
        SocketType::STREAM
    };
    let fd = rustix::net::socket_with(AddressFamily::INET, ty, SocketFlags::CLOEXEC, None)?;
    rustix::net::bind(&fd, &std::net::SocketAddrV4::new(ip, port))?;
    let got = rustix::net::getsockname(&fd)?;
    let got = std::net::SocketAddrV4::try_from(got)
        .map_err(|_| std::io::Error::other("not an IPv4 socket"))?;
    Ok((fd, got.port()))
}

/// The bindings a container asks for: (container port, proto, host ip, host port text).
fn bindings(spec: &Value) -> Result<Vec<(u16, String, String, String)>, EngineError> {
    let hc = &spec["HostConfig"];
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let parse_key = |k: &str| -> Result<(u16, String), EngineError> {
        let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let port: u16 =
            p.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                EngineError::invalid(format!("invalid port specification: \"{k}\""))
            })?;
        if !matches!(proto, "tcp" | "udp") {
            return Err(EngineError::invalid(format!(
                "invalid proto: {proto} (only tcp and udp are supported)"
            )));
        }
        Ok((port, proto.to_string()))
    };
    if let Some(m) = hc["PortBindings"].as_object() {
        for (k, v) in m {
            let (port, proto) = parse_key(k)?;
            seen.insert((port, proto.clone()));
            let list = v.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                out.push((port, proto.clone(), String::new(), String::new()));
            }
            for b in list {
                out.push((
                    port,
                    proto.clone(),
                    b["HostIp"].as_str().unwrap_or_default().to_string(),
                    b["HostPort"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    if hc["PublishAllPorts"].as_bool() == Some(true) {
        if let Some(m) = spec["Config"]["ExposedPorts"].as_object() {
            for k in m.keys() {
                let (port, proto) = parse_key(k)?;
                if seen.insert((port, proto.clone())) {
                    out.push((port, proto, String::new(), String::new()));
                }
            }
        }
    }
    Ok(out)
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

    async fn wire(
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
    async fn add_endpoint(
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
    fn address6(
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
            return Err(EngineError::new(
                crate::error::Kind::Forbidden,
                format!(
                    "endpoint with name {name} already exists in network {}",
                    net.cfg.name
                ),
            ));
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
            return Err(EngineError::new(
                crate::error::Kind::Forbidden,
                format!(
                    "container {cid} is not connected to network {}",
                    net.cfg.name
                ),
            ));
        };
        let e = st.endpoints.remove(i);
        self.forget_endpoint(cid, &e.network_id);
        self.nl().await?.delete(&e.veth).await.map_err(internal)?;
        Ok(())
    }

    fn forget_endpoint(&self, cid: &str, net_id: &str) {
        if let Some(v) = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(cid)
        {
            v.retain(|e| e.network_id != net_id);
        }
    }

    /// Whether one of berth's containers (or this one's earlier bindings) holds a port.
    fn port_taken(&self, proto: &str, ip: Ipv4Addr, port: u16, mine: &[Held]) -> bool {
        let g = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        g.values().flatten().chain(mine).any(|h| {
            h.rule.proto == proto
                && h.rule.host_port == port
                && (h.rule.host_ip.is_none() || ip.is_unspecified() || h.rule.host_ip == Some(ip))
        })
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
    fn readopt(&self, cid: &str, _name: &str, st: &NetState) {
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
    async fn sweep(&self, keep: &HashSet<String>) {
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

    /// Replaces `table inet berth` with the rules for every network and held port.
    pub async fn apply_rules(&self) -> Result<(), EngineError> {
        let _g = self.rules.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        let set = nft::Ruleset {
            table: self.table.clone(),
            bridges: self
                .all()
                .iter()
                .map(|n| nft::BridgeRules {
                    bridge: n.cfg.bridge.clone(),
                    subnet: n.subnet,
                    internal: n.cfg.internal,
                    masquerade: n.masquerade(),
                })
                .collect(),
            ports: self
                .ports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .flatten()
                .map(|h| h.rule.clone())
                .collect(),
        };
        let Some(backend) = self.backend else {
            return Err(internal(
                "neither nft (nftables) nor iptables-restore is installed: no NAT or published ports",
            ));
        };
        let bridges: Vec<String> = set.bridges.iter().map(|b| b.bridge.clone()).collect();
        tokio::task::spawn_blocking(move || set.apply_with(backend))
            .await
            .map_err(internal)?
            .map_err(|e| internal(format!("applying network rules: {e}")))?;
        self.trust_bridges(&bridges).await;
        Ok(())
    }

    /// Binds this daemon's bridges to firewalld's trusted zone where firewalld runs
    /// (and unbinds those of networks gone).
    async fn trust_bridges(&self, bridges: &[String]) {
        for (br, zone) in self.firewalld.sync(bridges).await {
            tracing::warn!(
                bridge = %br,
                %zone,
                "firewalld has this bridge in a zone of its administrator's: its traffic passes only as that zone allows"
            );
        }
    }

    /// Another program may make an iptables filter table (dockerd, with its FORWARD DROP
    /// policy) after berth applied its rules: every 10 s, when a host filter table lacks
    /// berth's jump, the rules are applied again. firewalld drops its runtime bindings
    /// when it reloads or restarts: its signals (and the same 10 s check) bind berth's
    /// bridges again.
    pub async fn watch_host_firewall(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut changes: Option<berth_network::firewalld::Changes> = None;
        loop {
            match changes.as_mut() {
                Some(c) => {
                    tokio::select! {
                        _ = tick.tick() => {}
                        alive = c.next() => if !alive {
                            changes = None;
                            self.firewalld.forget_bus().await;
                        } else {
                            tracing::info!("firewalld reloaded or restarted: binding berth's bridges again");
                        },
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            if self.backend.is_none() || self.all().is_empty() {
                continue;
            }
            let t = self.table.clone();
            let missing = tokio::task::spawn_blocking(move || berth_network::hostfw::missing(&t))
                .await
                .unwrap_or(false);
            if missing {
                tracing::info!(
                    "a host iptables filter table lacks berth's accepts: putting them back"
                );
                if let Err(e) = self.apply_rules().await {
                    tracing::warn!(error = %e.message, "applying network rules");
                }
            } else {
                let _g = self.rules.lock().await;
                if !self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                    let bridges: Vec<String> =
                        self.all().iter().map(|n| n.cfg.bridge.clone()).collect();
                    self.trust_bridges(&bridges).await;
                }
            }
            if changes.is_none() {
                if let Some(bus) = self.firewalld.bus().await {
                    changes = berth_network::firewalld::Changes::subscribe(&bus)
                        .await
                        .ok();
                }
            }
        }
    }

    /// At daemon exit: berth's rules go with it; bridges and namespaces of running
    /// containers stay (they keep running).
    pub async fn shutdown(&self, any_running: bool) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let _g = self.rules.lock().await;
        if !any_running {
            if let Some(b) = self.backend {
                let t = self.table.clone();
                let _ = tokio::task::spawn_blocking(move || nft::remove_with(&t, b)).await;
            }
            self.firewalld.sync(&[]).await;
        }
    }
}

/// `GET /networks/{id}`'s shape.
pub fn network_json(n: &Net, attached: &BTreeMap<String, Endpoint>) -> Value {
    let mut containers = Map::new();
    for (cid, e) in attached {
        containers.insert(
            cid.clone(),
            json!({
                "Name": e.container_name,
                "EndpointID": e.endpoint_id,
                "MacAddress": e.mac,
                "IPv4Address": format!("{}/{}", e.ip, e.prefix),
                "IPv6Address": if e.ip6.is_empty() { String::new() } else { format!("{}/{}", e.ip6, e.prefix6) },
            }),
        );
    }
    let mut ipam = json!({"Subnet": n.cfg.subnet, "Gateway": n.cfg.gateway});
    if let Some(r) = &n.cfg.ip_range {
        ipam["IPRange"] = json!(r);
    }
    if !n.cfg.aux_addresses.is_empty() {
        ipam["AuxiliaryAddresses"] = json!(n.cfg.aux_addresses);
    }
    let mut configs = vec![ipam];
    if let Some(v6) = &n.v6 {
        let mut c = json!({"Subnet": v6.subnet.to_string(), "Gateway": v6.gateway.to_string()});
        if let Some(r) = &v6.range {
            c["IPRange"] = json!(r.to_string());
        }
        configs.push(c);
    }
    json!({
        "Name": n.cfg.name,
        "Id": n.cfg.id,
        "Created": n.cfg.created,
        "Scope": "local",
        "Driver": n.cfg.driver,
        "EnableIPv4": true,
        "EnableIPv6": n.v6.is_some(),
        "IPAM": {"Driver": "default", "Options": null, "Config": configs},
        "Internal": n.cfg.internal,
        "Attachable": n.cfg.attachable,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": n.cfg.options,
        "Labels": n.cfg.labels,
    })
}

/// The built-in `host` and `none` networks' shapes (no settings of their own).
pub fn pseudo_json(name: &str, id: &str) -> Value {
    json!({
        "Name": name,
        "Id": id,
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": if name == "host" { "host" } else { "null" },
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": []},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

/// A container's `NetworkSettings` (inspect), from what it asked and, while it runs,
/// what it got.
pub fn settings_json(nets: &Networks, cid: &str, spec: &Value, st: Option<&NetState>) -> Value {
    let hc = &spec["HostConfig"];
    let mode = Mode::of(hc);
    let mut networks = Map::new();
    let ep_json = |key: &str, cfg: &Value, e: Option<&Endpoint>, nid: &str| {
        json!({
            "IPAMConfig": cfg.get("IPAMConfig").cloned().unwrap_or(Value::Null),
            "Links": cfg.get("Links").cloned().filter(|l| l.as_array().is_some_and(|a| !a.is_empty())).unwrap_or(Value::Null),
            "Aliases": cfg.get("Aliases").cloned().unwrap_or(Value::Null),
            "MacAddress": e.map(|e| e.mac.clone()).or_else(|| cfg.get("MacAddress").and_then(Value::as_str).map(str::to_string)).unwrap_or_default(),
            "DriverOpts": cfg.get("DriverOpts").cloned().filter(|o| o.as_object().is_some_and(|m| !m.is_empty())).unwrap_or(Value::Null),
            "GwPriority": 0,
            "NetworkID": nid,
            "EndpointID": e.map(|e| e.endpoint_id.clone()).unwrap_or_default(),
            "Gateway": e.map(|e| e.gateway.clone()).unwrap_or_default(),
            "IPAddress": e.map(|e| e.ip.clone()).unwrap_or_default(),
            "IPPrefixLen": e.map(|e| e.prefix).unwrap_or(0),
            "IPv6Gateway": e.map(|e| e.gateway6.clone()).unwrap_or_default(),
            "GlobalIPv6Address": e.map(|e| e.ip6.clone()).unwrap_or_default(),
            "GlobalIPv6PrefixLen": e.filter(|e| !e.ip6.is_empty()).map(|e| e.prefix6).unwrap_or(0),
            "DNSNames": e.filter(|_| key != "bridge").map(|e| json!(e.dns_names)).unwrap_or(Value::Null),
        })
    };
    match &mode {
        Mode::Host | Mode::None => {
            let key = if mode == Mode::Host { "host" } else { "none" };
            networks.insert(key.into(), ep_json(key, &Value::Null, None, ""));
        }
        Mode::Container(_) => {}
        Mode::Bridge(_) => {
            for (key, cfg) in requested(spec) {
                let key = if key == "default" {
                    "bridge".to_string()
                } else {
                    key
                };
                let net = nets.find(&key).ok();
                let nid = net.as_ref().map(|n| n.cfg.id.clone()).unwrap_or_default();
                let e = st.and_then(|s| s.endpoints.iter().find(|e| e.network_id == nid));
                let name = net.as_ref().map(|n| n.cfg.name.clone()).unwrap_or(key);
                networks.insert(name.clone(), ep_json(&name, &cfg, e, &nid));
            }
        }
    }
    let mut ports = Map::new();
    if let Some(m) = spec["Config"]["ExposedPorts"].as_object() {
        for k in m.keys() {
            let k = if k.contains('/') {
                k.clone()
            } else {
                format!("{k}/tcp")
            };
            ports.insert(k, Value::Null);
        }
    }
    if let Some(m) = hc["PortBindings"].as_object() {
        for k in m.keys() {
            let k = if k.contains('/') {
                k.clone()
            } else {
                format!("{k}/tcp")
            };
            ports.entry(k).or_insert(Value::Null);
        }
    }
    let running = st.is_some();
    if let Some(s) = st {
        for p in &s.ports {
            let k = format!("{}/{}", p.port, p.proto);
            let entry = ports.entry(k).or_insert(Value::Null);
            if !entry.is_array() {
                *entry = json!([]);
            }
            if let Some(a) = entry.as_array_mut() {
                a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
            }
        }
    }
    // the legacy top-level fields describe the default bridge's endpoint
    let legacy = st
        .and_then(|s| s.endpoints.first())
        .filter(|e| e.network == "bridge");
    json!({
        "Bridge": "",
        "SandboxID": if running { hex::encode(&cid.as_bytes()[..cid.len().min(32)]) } else { String::new() },
        "SandboxKey": st.map(|s| s.netns.clone()).unwrap_or_default(),
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": if running || !ports.is_empty() { Value::Object(ports) } else { json!({}) },
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "EndpointID": legacy.map(|e| e.endpoint_id.clone()).unwrap_or_default(),
        "Gateway": legacy.map(|e| e.gateway.clone()).unwrap_or_default(),
        "GlobalIPv6Address": legacy.map(|e| e.ip6.clone()).unwrap_or_default(),
        "GlobalIPv6PrefixLen": legacy.filter(|e| !e.ip6.is_empty()).map(|e| e.prefix6).unwrap_or(0),
        "IPAddress": legacy.map(|e| e.ip.clone()).unwrap_or_default(),
        "IPPrefixLen": legacy.map(|e| e.prefix).unwrap_or(0),
        "IPv6Gateway": legacy.map(|e| e.gateway6.clone()).unwrap_or_default(),
        "MacAddress": legacy.map(|e| e.mac.clone()).unwrap_or_default(),
        "Networks": networks,
    })
}

/// `GET /containers/json`'s `Ports`: published ones, then exposed ones with no binding.
pub fn ports_list(spec: &Value, st: Option<&NetState>) -> Value {
    let mut out = Vec::new();
    let mut published = HashSet::new();
    if let Some(s) = st {
        for p in &s.ports {
            published.insert((p.port, p.proto.clone()));
            out.push(json!({"IP": p.host_ip, "PrivatePort": p.port, "PublicPort": p.host_port, "Type": p.proto}));
        }
    }
    if let Some(m) = spec["Config"]["ExposedPorts"].as_object() {
        for k in m.keys() {
            let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            if let Ok(p) = p.parse::<u16>() {
                if !published.contains(&(p, proto.to_string())) {
                    out.push(json!({"PrivatePort": p, "Type": proto}));
                }
            }
        }
    }
    Value::Array(out)
}
