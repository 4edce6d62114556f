//! Networks: the built-in `bridge` (berth's default bridge device), `host` and `none`,
//! and user-defined bridge networks. A container on a bridge network gets a network
//! namespace made and pinned by berthd before its process exists (so the runtime only
//! joins it), one veth pair per network (the peer made directly inside the namespace),
//! an address from the network's subnet, a default route through the gateway, published
//! ports as DNAT rules in `table inet berth` (the host ports held by a bound socket so no
//! other process or container takes them), and the network's embedded DNS server as its
//! resolver. Everything is undone when the container stops, and anything left by a
//! crash is swept at the next start.

mod attach;
mod create;
mod ports;
mod rules;

pub use attach::{Attachment, Joined};
use ports::{bindings, hold};

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
}
