//! berthd's configuration: command-line flags named as dockerd's, merged with a
//! daemon.json file. dockerd's keys are accepted where they apply; a key neither knows
//! is an error, as is a setting given both as a flag and in the file.

use clap::Parser;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The default bridge's device.
pub const DEFAULT_BRIDGE: &str = "berth0";

pub const DEFAULT_SOCKET: &str = "unix:///run/berth/berth.sock";
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";

#[derive(Debug, Clone, Parser)]
#[command(name = "berthd", version, about = "The berth container engine daemon")]
pub struct Flags {
    /// Daemon socket(s) to listen on: unix:///path, tcp://addr:port (repeatable)
    #[arg(short = 'H', long = "host")]
    pub hosts: Vec<String>,
    /// Root directory of persistent state
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Root directory of execution state
    #[arg(long)]
    pub exec_root: Option<PathBuf>,
    /// Path of the daemon's PID file
    #[arg(short = 'p', long)]
    pub pidfile: Option<PathBuf>,
    /// Daemon configuration file (daemon.json)
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// Logging level: debug, info, warn, error, fatal
    #[arg(short = 'l', long)]
    pub log_level: Option<String>,
    /// Enable debug logging
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Use TLS on TCP sockets; implied by --tlsverify
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and require clients to present a certificate signed by --tlscacert
    #[arg(long)]
    pub tlsverify: bool,
    /// CA certificate that client certificates must chain to
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    /// The daemon's TLS certificate
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    /// The daemon's TLS key
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
    /// Allow TCP sockets without TLS (anyone who can connect gets root on this machine)
    #[arg(long)]
    pub insecure_tcp: bool,
    /// Group of the unix sockets (default "docker", when that group exists)
    #[arg(short = 'G', long)]
    pub group: Option<String>,
    /// Storage driver: overlay2 or vfs (a copy per layer)
    #[arg(short = 's', long)]
    pub storage_driver: Option<String>,
    /// Run containers in a user namespace: default, USER[:GROUP] or UID[:GID]
    #[arg(long)]
    pub userns_remap: Option<String>,
    /// Device of the default bridge network ("none": no default bridge)
    #[arg(short = 'b', long)]
    pub bridge: Option<String>,
    /// The default bridge's address and prefix (e.g. 10.210.0.1/24)
    #[arg(long)]
    pub bip: Option<String>,
    /// Where networks' subnets come from: base=CIDR,size=N (repeatable)
    #[arg(long = "default-address-pool")]
    pub default_address_pool: Vec<String>,
    /// DNS server containers' queries go to (repeatable)
    #[arg(long)]
    pub dns: Vec<String>,
    /// Where berth's firewall rules go: nftables (default when `nft` is there) or iptables
    #[arg(long)]
    pub firewall_backend: Option<String>,
    /// Turn on the host's IPv4 forwarding, so containers reach other networks (default true)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub ip_forward: Option<bool>,
}

/// The merged configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub hosts: Vec<String>,
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    pub pidfile: PathBuf,
    pub config_file: Option<PathBuf>,
    pub log_level: String,
    pub tls: bool,
    pub tlsverify: bool,
    pub tlscacert: Option<PathBuf>,
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
    pub insecure_tcp: bool,
    pub storage_driver: Option<String>,
    pub labels: Vec<String>,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub debug: bool,
    pub live_restore: bool,
    /// OCI runtime binaries by name, besides the built-in `berth` (and `runc` from PATH)
    pub runtimes: std::collections::BTreeMap<String, PathBuf>,
    pub default_runtime: String,
    /// the default log driver and its options for new containers
    pub log_driver: String,
    pub log_opts: std::collections::BTreeMap<String, String>,
    /// daemon.json `default-ulimits`: `{"nofile": {"Name", "Soft", "Hard"}}`
    pub default_ulimits: serde_json::Map<String, serde_json::Value>,
    /// `userns-remap`: the user whose subordinate IDs containers run as
    pub userns_remap: Option<String>,
    /// layers downloaded at once by a pull, and uploaded at once by a push
    pub max_concurrent_downloads: usize,
    pub max_concurrent_uploads: usize,
    /// `bip`: the default bridge's gateway address and prefix
    pub bip: Option<(std::net::Ipv4Addr, u8)>,
    /// `bridge`: the default bridge's device (None: "none", no default bridge)
    pub bridge: Option<String>,
    /// `firewall-backend`: "nftables" or "iptables" (None: whichever is installed)
    pub firewall_backend: Option<String>,
    /// `ip-forward`: berthd turns on net.ipv4.ip_forward (as dockerd)
    pub ip_forward: bool,
    /// `default-address-pools`: where networks' subnets come from (base, size)
    pub address_pools: Vec<(berth_network::ipam::Subnet, u8)>,
    /// `dns`, `dns-search`, `dns-opts`: containers' resolver settings
    pub dns: Vec<std::net::IpAddr>,
    pub dns_search: Vec<String>,
    pub dns_opts: Vec<String>,
    /// the oldest API version clients may ask for (`DOCKER_MIN_API_VERSION`)
    pub min_api_version: crate::apiversion::ApiVersion,
    /// `-G`/`group`: the unix sockets' group (None: root's)
    pub socket_gid: Option<u32>,
}

/// The group the unix sockets are given, as dockerd chooses it: the one named (a name
/// from /etc/group or a number; one that does not exist stops the start), else `docker`
/// when that group exists, else root's.
fn socket_group(named: Option<&str>) -> Result<Option<u32>, ConfigError> {
    let lookup = |name: &str| -> Option<u32> {
        std::fs::read_to_string("/etc/group")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut f = l.split(':');
                (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
            })
    };
    match named {
        Some(g) => match g.parse::<u32>().ok().or_else(|| lookup(g)) {
            Some(gid) => Ok(Some(gid)),
            None => Err(ConfigError::Invalid(format!(
                "group {g} not found: create it or give another with -G/--group"
            ))),
        },
        None => Ok(lookup("docker")),
    }
}

/// The built-in runtime's name.
pub const BUILTIN_RUNTIME: &str = "berth";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// the configuration file could not be read
    #[error("unable to read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// the configuration file is not a JSON object
    #[error("unable to parse configuration file {path}: {msg}")]
    Parse { path: PathBuf, msg: String },
    /// keys neither berth nor dockerd knows
    #[error("the following directives don't match any configuration option: {0}")]
    Unknown(String),
    /// a setting given twice
    #[error(
        "the following directives are specified both as a flag and in the configuration file: {0}"
    )]
    Conflict(String),
    /// a value of the wrong kind or out of range
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Keys berth reads from daemon.json.
const APPLIED: &[&str] = &[
    "hosts",
    "group",
    "data-root",
    "exec-root",
    "pidfile",
    "log-level",
    "debug",
    "tls",
    "tlsverify",
    "tlscacert",
    "tlscert",
    "tlskey",
    "storage-driver",
    "labels",
    "registry-mirrors",
    "insecure-registries",
    "live-restore",
    "runtimes",
    "default-runtime",
    "log-driver",
    "log-opts",
    "default-ulimits",
    "userns-remap",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "bip",
    "bridge",
    "default-address-pools",
    "firewall-backend",
    "ip-forward",
    "dns",
    "dns-opts",
    "dns-search",
];

/// dockerd keys berth accepts but does not act on yet (logged at start).
const ACCEPTED: &[&str] = &[
    "allow-nondistributable-artifacts",
    "api-cors-header",
    "authorization-plugins",
    "builder",
    "cgroup-parent",
    "containerd",
    "containerd-namespace",
    "containerd-plugin-namespace",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "default-cgroupns-mode",
    "default-gateway",
    "default-gateway-v6",
    "default-ipc-mode",
    "default-network-opts",
    "default-shm-size",
    "exec-opts",
    "experimental",
    "features",
    "fixed-cidr",
    "fixed-cidr-v6",
    "icc",
    "init",
    "init-path",
    "ip",
    "ip-masq",
    "ip6tables",
    "iptables",
    "ipv6",
    "log-format",
    "max-download-attempts",
    "metrics-addr",
    "mtu",
    "no-new-privileges",
    "node-generic-resources",
    "oom-score-adjust",
    "proxies",
    "raw-logs",
    "seccomp-profile",
    "selinux-enabled",
    "shutdown-timeout",
    "storage-opts",
    "userland-proxy",
    "userland-proxy-path",
];

fn str_list(v: &Value, key: &str) -> Result<Vec<String>, ConfigError> {
    v.as_array()
        .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
        .ok_or_else(|| ConfigError::Invalid(format!("{key} must be a list of strings")))
}

fn string(v: &Value, key: &str) -> Result<String, ConfigError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ConfigError::Invalid(format!("{key} must be a string")))
}

fn boolean(v: &Value, key: &str) -> Result<bool, ConfigError> {
    v.as_bool()
        .ok_or_else(|| ConfigError::Invalid(format!("{key} must be true or false")))
}

/// Reads daemon.json; checks every key.
pub fn read_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let Value::Object(m) = v else {
        return Err(ConfigError::Parse {
            path: path.to_path_buf(),
            msg: "the file must hold a JSON object".into(),
        });
    };
    let unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !APPLIED.contains(k) && !ACCEPTED.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(ConfigError::Unknown(unknown.join(", ")));
    }
    Ok(m)
}

pub fn valid_log_level(l: &str) -> bool {
    matches!(l, "debug" | "info" | "warn" | "error" | "fatal" | "trace")
}

impl Config {
    /// Flags, then daemon.json for what the flags left unset.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let explicit_file = flags.config_file.clone();
        let file_path = explicit_file
            .clone()
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()));
        let file = match &file_path {
            Some(p) => read_file(p)?,
            None => Map::new(),
        };
        let mut conflicts = Vec::new();
        let mut check = |key: &str, flag_set: bool| {
            if flag_set && file.contains_key(key) {
                conflicts.push(key.to_string());
            }
        };
        check("hosts", !flags.hosts.is_empty());
        check("data-root", flags.data_root.is_some());
        check("exec-root", flags.exec_root.is_some());
        check("pidfile", flags.pidfile.is_some());
        check("log-level", flags.log_level.is_some());
        check("tlscacert", flags.tlscacert.is_some());
        check("tlscert", flags.tlscert.is_some());
        check("tlskey", flags.tlskey.is_some());
        check("storage-driver", flags.storage_driver.is_some());
        check("group", flags.group.is_some());
        check("userns-remap", flags.userns_remap.is_some());
        if !conflicts.is_empty() {
            return Err(ConfigError::Conflict(conflicts.join(", ")));
        }
        let get = |k: &str| file.get(k);
        let path_of = |k: &str| -> Result<Option<PathBuf>, ConfigError> {
            get(k).map(|v| string(v, k).map(PathBuf::from)).transpose()
        };
        let hosts = if !flags.hosts.is_empty() {
            flags.hosts
        } else if let Some(v) = get("hosts") {
            str_list(v, "hosts")?
        } else {
            vec![DEFAULT_SOCKET.to_string()]
        };
        let data_root = flags
            .data_root
            .or(path_of("data-root")?)
            .unwrap_or_else(|| PathBuf::from("/var/lib/berth"));
        let exec_root = flags
            .exec_root
            .or(path_of("exec-root")?)
            .unwrap_or_else(|| PathBuf::from("/run/berth"));
        let pidfile = flags
            .pidfile
            .or(path_of("pidfile")?)
            .unwrap_or_else(|| exec_root.join("berthd.pid"));
        let debug = flags.debug
            || get("debug")
                .map(|v| boolean(v, "debug"))
                .transpose()?
                .unwrap_or(false);
        let log_level = match flags.log_level {
            Some(l) => l,
            None => match get("log-level") {
                Some(v) => string(v, "log-level")?,
                None if debug => "debug".into(),
                None => "info".into(),
            },
        };
        if !valid_log_level(&log_level) {
            return Err(ConfigError::Invalid(format!(
                "unable to parse logging level: {log_level}"
            )));
        }
        let flag_bool = |flag: bool, k: &str| -> Result<bool, ConfigError> {
            Ok(flag || get(k).map(|v| boolean(v, k)).transpose()?.unwrap_or(false))
        };
        let tlsverify = flag_bool(flags.tlsverify, "tlsverify")?;
        let tls = tlsverify || flag_bool(flags.tls, "tls")?;
        let storage_driver = match flags.storage_driver {
            Some(d) => Some(d),
            None => get("storage-driver")
                .map(|v| string(v, "storage-driver"))
                .transpose()?,
        };
        let list = |k: &str| -> Result<Vec<String>, ConfigError> {
            get(k)
                .map(|v| str_list(v, k))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let mut runtimes = std::collections::BTreeMap::new();
        runtimes.insert("runc".to_string(), PathBuf::from("runc"));
        if let Some(v) = get("runtimes") {
            let m = v
                .as_object()
                .ok_or_else(|| ConfigError::Invalid("runtimes must be an object".into()))?;
            for (name, r) in m {
                let path = r["path"]
                    .as_str()
                    .ok_or_else(|| ConfigError::Invalid(format!("runtime {name} needs a path")))?;
                if name == BUILTIN_RUNTIME {
                    return Err(ConfigError::Invalid(format!(
                        "runtime name {name} is reserved for the built-in runtime"
                    )));
                }
                runtimes.insert(name.clone(), PathBuf::from(path));
            }
        }
        let default_runtime = get("default-runtime")
            .map(|v| string(v, "default-runtime"))
            .transpose()?
            .unwrap_or_else(|| BUILTIN_RUNTIME.to_string());
        if default_runtime != BUILTIN_RUNTIME && !runtimes.contains_key(&default_runtime) {
            return Err(ConfigError::Invalid(format!(
                "default-runtime {default_runtime} is not a configured runtime"
            )));
        }
        let log_driver = get("log-driver")
            .map(|v| string(v, "log-driver"))
            .transpose()?
            .unwrap_or_else(|| "json-file".to_string());
        let mut log_opts = std::collections::BTreeMap::new();
        if let Some(v) = get("log-opts") {
            let m = v
                .as_object()
                .ok_or_else(|| ConfigError::Invalid("log-opts must be an object".into()))?;
            for (k, v) in m {
                log_opts.insert(k.clone(), string(v, "log-opts")?);
            }
        }
        crate::logconfig::LogConfig::resolve(&log_driver, &log_opts, None)
            .map_err(ConfigError::Invalid)?;
        let mut default_ulimits = serde_json::Map::new();
        if let Some(v) = get("default-ulimits") {
            let m = v
                .as_object()
                .ok_or_else(|| ConfigError::Invalid("default-ulimits must be an object".into()))?;
            for (name, u) in m {
                if !(u["Soft"].is_i64() && u["Hard"].is_i64()) {
                    return Err(ConfigError::Invalid(format!(
                        "default-ulimits {name}: Soft and Hard must be numbers"
                    )));
                }
                default_ulimits.insert(name.clone(), u.clone());
            }
        }
        let userns_remap = match flags.userns_remap {
            Some(u) => Some(u),
            None => get("userns-remap")
                .map(|v| string(v, "userns-remap"))
                .transpose()?,
        }
        .filter(|u| !u.is_empty());
        let count = |k: &str, default: usize| -> Result<usize, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n >= 1)
                    .map(|n| n as usize)
                    .ok_or_else(|| ConfigError::Invalid(format!("{k} must be a positive number"))),
            }
        };
        let bridge = match flags.bridge {
            Some(b) => b,
            None => get("bridge")
                .map(|v| string(v, "bridge"))
                .transpose()?
                .unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
        };
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ConfigError::Invalid(format!(
                "invalid bridge name {bridge:?}"
            )));
        }
        let bridge = (bridge != "none").then_some(bridge);
        let bip = match flags.bip {
            Some(b) => Some(b),
            None => get("bip").map(|v| string(v, "bip")).transpose()?,
        }
        .map(|b| {
            berth_network::ipam::parse_cidr(&b)
                .map_err(|e| ConfigError::Invalid(format!("bip: {e}")))
        })
        .transpose()?;
        let mut address_pools = Vec::new();
        let flag_pools: Vec<Value> = flags
            .default_address_pool
            .iter()
            .map(|p| {
                let mut o = serde_json::Map::new();
                for kv in p.split(',') {
                    if let Some((k, v)) = kv.split_once('=') {
                        let v = match v.parse::<u64>() {
                            Ok(n) => Value::from(n),
                            Err(_) => Value::from(v),
                        };
                        o.insert(k.trim().to_string(), v);
                    }
                }
                Value::Object(o)
            })
            .collect();
        let pools_value = if flag_pools.is_empty() {
            get("default-address-pools").cloned()
        } else {
            Some(Value::Array(flag_pools))
        };
        if let Some(v) = pools_value.as_ref() {
            let a = v.as_array().ok_or_else(|| {
                ConfigError::Invalid("default-address-pools must be a list".into())
            })?;
            for p in a {
                let base = p["base"]
                    .as_str()
                    .and_then(|b| b.parse::<berth_network::ipam::Subnet>().ok())
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!("default-address-pools: invalid base in {p}"))
                    })?;
                let size = p["size"]
                    .as_u64()
                    .filter(|s| (u64::from(base.prefix)..=30).contains(s))
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!("default-address-pools: invalid size in {p}"))
                    })? as u8;
                address_pools.push((base, size));
            }
        }
        let mut dns = Vec::new();
        let dns_list = if flags.dns.is_empty() {
            list("dns")?
        } else {
            flags.dns.clone()
        };
        for a in dns_list {
            dns.push(
                a.parse()
                    .map_err(|_| ConfigError::Invalid(format!("{a} is not an ip address")))?,
            );
        }
        let firewall_backend = match flags.firewall_backend {
            Some(b) => Some(b),
            None => get("firewall-backend")
                .map(|v| string(v, "firewall-backend"))
                .transpose()?,
        };
        if let Some(b) = &firewall_backend {
            if !matches!(b.as_str(), "nftables" | "iptables") {
                return Err(ConfigError::Invalid(format!(
                    "invalid firewall-backend {b:?}: use nftables or iptables"
                )));
            }
        }
        let ip_forward = match flags.ip_forward {
            Some(b) => b,
            None => get("ip-forward")
                .map(|v| boolean(v, "ip-forward"))
                .transpose()?
                .unwrap_or(true),
        };
        let min_api_version = crate::apiversion::ApiVersion::min_from_env(
            std::env::var("DOCKER_MIN_API_VERSION").ok().as_deref(),
        )
        .map_err(ConfigError::Invalid)?;
        let group = match flags.group.clone() {
            Some(g) => Some(g),
            None => get("group").map(|v| string(v, "group")).transpose()?,
        };
        let socket_gid = socket_group(group.as_deref())?;
        let cfg = Config {
            socket_gid,
            min_api_version,
            ip_forward,
            firewall_backend,
            bridge,
            bip,
            address_pools,
            dns,
            dns_search: list("dns-search")?,
            dns_opts: list("dns-opts")?,
            max_concurrent_downloads: count("max-concurrent-downloads", 3)?,
            max_concurrent_uploads: count("max-concurrent-uploads", 5)?,
            userns_remap,
            default_ulimits,
            log_driver,
            log_opts,
            runtimes,
            default_runtime,
            hosts,
            data_root,
            exec_root,
            pidfile,
            config_file: file_path,
            log_level,
            tls,
            tlsverify,
            tlscacert: flags.tlscacert.or(path_of("tlscacert")?),
            tlscert: flags.tlscert.or(path_of("tlscert")?),
            tlskey: flags.tlskey.or(path_of("tlskey")?),
            insecure_tcp: flags.insecure_tcp,
            storage_driver,
            labels: list("labels")?,
            registry_mirrors: list("registry-mirrors")?,
            insecure_registries: list("insecure-registries")?,
            debug,
            live_restore: get("live-restore")
                .map(|v| boolean(v, "live-restore"))
                .transpose()?
                .unwrap_or(true),
        };
        for k in file.keys().filter(|k| ACCEPTED.contains(&k.as_str())) {
            tracing::warn!(key = %k, "daemon.json setting accepted but not used by this berth");
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for h in &self.hosts {
            let is_tcp = h.starts_with("tcp://");
            if !is_tcp && !h.starts_with("unix://") && !h.starts_with("fd://") {
                return Err(ConfigError::Invalid(format!(
                    "invalid host {h:?}: use unix:///path or tcp://addr:port"
                )));
            }
            if is_tcp && !self.tls && !self.insecure_tcp {
                return Err(ConfigError::Invalid(format!(
                    "refusing to listen on {h} without TLS: use --tlsverify with --tlscacert, --tlscert and --tlskey, or --insecure-tcp to accept that anyone who can connect gets root"
                )));
            }
        }
        if self.tls && (self.tlscert.is_none() || self.tlskey.is_none()) {
            return Err(ConfigError::Invalid(
                "--tls needs --tlscert and --tlskey".into(),
            ));
        }
        if self.tlsverify && self.tlscacert.is_none() {
            return Err(ConfigError::Invalid("--tlsverify needs --tlscacert".into()));
        }
        if let Some(d) = &self.storage_driver {
            if berth_image::snapshot::Driver::parse(d).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "unknown storage driver {d:?}: use overlay2 or vfs"
                )));
            }
        }
        Ok(())
    }
}

/// What SIGHUP may change while running.
#[derive(Debug, Clone)]
pub struct Reloadable {
    pub log_level: Option<String>,
    pub labels: Option<Vec<String>>,
    pub debug: Option<bool>,
}

/// Re-reads daemon.json for the settings that apply without a restart.
pub fn reload(path: &Path) -> Result<Reloadable, ConfigError> {
    let file = read_file(path)?;
    let log_level = file
        .get("log-level")
        .map(|v| string(v, "log-level"))
        .transpose()?;
    if let Some(l) = &log_level {
        if !valid_log_level(l) {
            return Err(ConfigError::Invalid(format!(
                "unable to parse logging level: {l}"
            )));
        }
    }
    Ok(Reloadable {
        log_level,
        labels: file
            .get("labels")
            .map(|v| str_list(v, "labels"))
            .transpose()?,
        debug: file.get("debug").map(|v| boolean(v, "debug")).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut v = vec!["berthd"];
        v.extend_from_slice(args);
        Flags::parse_from(v)
    }

    #[test]
    fn networking_settings() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        std::fs::write(
            &p,
            r#"{"ip-forward": false, "bip": "10.9.0.1/24", "dns": ["10.1.1.1"], "default-address-pools": [{"base": "10.220.0.0/16", "size": 24}]}"#,
        )
        .unwrap();
        let c = Config::load(flags(&["--config-file", p.to_str().unwrap()])).unwrap();
        assert!(!c.ip_forward);
        assert_eq!(c.bip, Some(("10.9.0.1".parse().unwrap(), 24)));
        assert_eq!(c.dns, vec!["10.1.1.1".parse::<std::net::IpAddr>().unwrap()]);
        assert_eq!(c.address_pools[0].1, 24);
        assert_eq!(c.bridge.as_deref(), Some("berth0"));
        let c = Config::load(flags(&[
            "--config-file",
            "/dev/null",
            "--ip-forward=false",
            "-b",
            "none",
        ]))
        .unwrap();
        assert!(!c.ip_forward);
        assert_eq!(c.bridge, None);
        let c = Config::load(flags(&["--config-file", "/dev/null"])).unwrap();
        assert!(c.ip_forward);
        std::fs::write(&p, r#"{"firewall-backend": "ipchains"}"#).unwrap();
        assert!(Config::load(flags(&["--config-file", p.to_str().unwrap()])).is_err());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        std::fs::write(&p, r#"{"log-level":"debug","bogus":1}"#).unwrap();
        let err = Config::load(flags(&["--config-file", p.to_str().unwrap()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the following directives don't match any configuration option: bogus"
        );
    }

    #[test]
    fn file_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daemon.json");
        std::fs::write(&p, r#"{"log-level":"warn","data-root":"/x","mtu":1400}"#).unwrap();
        let c = Config::load(flags(&["--config-file", p.to_str().unwrap()])).unwrap();
        assert_eq!(c.log_level, "warn");
        assert_eq!(c.data_root, PathBuf::from("/x"));
        let err = Config::load(flags(&[
            "--config-file",
            p.to_str().unwrap(),
            "--data-root",
            "/y",
        ]))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Conflict(_)));
    }

    #[test]
    fn tcp_needs_tls_or_insecure() {
        let c = Config::load(flags(&[
            "-H",
            "tcp://127.0.0.1:2375",
            "--config-file",
            "/dev/null",
        ]));
        assert!(c.is_err());
        let c = Config::load(flags(&[
            "-H",
            "tcp://127.0.0.1:2375",
            "--insecure-tcp",
            "--config-file",
            "/dev/null",
        ]));
        assert!(c.is_ok());
    }
}
