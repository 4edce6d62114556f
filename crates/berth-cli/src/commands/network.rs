//! `berth network ...`, `berth port`, and the networking flags of `run`/`create`.

use super::{filters_json, q, FormatArg};
use crate::client::{read_json, Client, ReqBody};
use crate::format::Format;
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Map, Value};

/// The networking flags of `run` and `create`.
#[derive(Debug, Args, Clone, Default)]
pub struct NetFlags {
    /// Connect a container to a network
    #[arg(long = "network", alias = "net")]
    pub network: Vec<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias", alias = "net-alias")]
    pub network_alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long)]
    pub ip6: Option<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address")]
    pub mac_address: Option<String>,
    /// Add link to another container (NAME[:ALIAS])
    #[arg(long)]
    pub link: Vec<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", alias = "dns-opt")]
    pub dns_option: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
}

/// An endpoint's `IPAMConfig`: the addresses asked for.
fn ipam_config(ip: Option<&str>, ip6: Option<&str>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(ip) = ip {
        m.insert("IPv4Address".into(), json!(ip));
    }
    if let Some(ip6) = ip6 {
        m.insert("IPv6Address".into(), json!(ip6));
    }
    m
}

/// `[IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]` (ports may be ranges) into
/// (container port/proto, host ip, host port) triples.
pub fn parse_publish(spec: &str) -> Result<Vec<(String, String, String)>> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_string()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        bail!("invalid proto: {proto}");
    }
    let parts: Vec<&str> = if rest.starts_with('[') {
        bail!("IPv6 host addresses are not supported: {spec}");
    } else {
        rest.split(':').collect()
    };
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => bail!("invalid port format for --publish: {spec}"),
    };
    if ctr.is_empty() {
        bail!("no port specified: {spec}<empty>");
    }
    if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
        bail!("invalid IP address: {ip}");
    }
    let range = |r: &str| -> Result<(u16, u16)> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let a: u16 = a
            .parse()
            .map_err(|_| anyhow!("invalid containerPort: {r}"))?;
        let b: u16 = b
            .parse()
            .map_err(|_| anyhow!("invalid containerPort: {r}"))?;
        if a == 0 || b < a {
            bail!("invalid port range: {r}");
        }
        Ok((a, b))
    };
    let (c0, c1) = range(ctr)?;
    let count = c1 - c0;
    let mut out = Vec::new();
    if host.is_empty() {
        for p in c0..=c1 {
            out.push((format!("{p}/{proto}"), ip.to_string(), String::new()));
        }
        return Ok(out);
    }
    let (h0, h1) = range(host).map_err(|_| anyhow!("invalid hostPort: {host}"))?;
    if h1 - h0 == count {
        for i in 0..=count {
            out.push((
                format!("{}/{proto}", c0 + i),
                ip.to_string(),
                (h0 + i).to_string(),
            ));
        }
    } else if count == 0 {
        // one container port on the first free port of a host range
        out.push((
            format!("{c0}/{proto}"),
            ip.to_string(),
            format!("{h0}-{h1}"),
        ));
    } else {
        bail!("invalid ranges specified for container and host Ports: {ctr} and {host}");
    }
    Ok(out)
}

impl NetFlags {
    /// Puts the flags into a create request.
    pub fn apply(&self, cfg: &mut Value) -> Result<()> {
        let mode = self
            .network
            .first()
            .cloned()
            .unwrap_or_else(|| "default".into());
        cfg["HostConfig"]["NetworkMode"] = json!(mode);
        if !self.link.is_empty() {
            // NAME[:ALIAS], the alias defaulting to the name, as the docker CLI sends it
            let links: Vec<String> = self
                .link
                .iter()
                .map(|l| match l.split_once(':') {
                    Some(_) => l.clone(),
                    None => format!("{l}:{l}"),
                })
                .collect();
            cfg["HostConfig"]["Links"] = json!(links);
        }
        let first_ep = || {
            let mut ep = json!({});
            if !self.network_alias.is_empty() {
                ep["Aliases"] = json!(self.network_alias);
            }
            let ipam = ipam_config(self.ip.as_deref(), self.ip6.as_deref());
            if !ipam.is_empty() {
                ep["IPAMConfig"] = Value::Object(ipam);
            }
            if let Some(m) = &self.mac_address {
                ep["MacAddress"] = json!(m);
            }
            ep
        };
        let mut endpoints = Map::new();
        for (i, n) in self.network.iter().enumerate() {
            let ep = if i == 0 { first_ep() } else { json!({}) };
            endpoints.insert(n.clone(), ep);
        }
        if self.network.is_empty()
            && (!self.network_alias.is_empty()
                || self.ip.is_some()
                || self.ip6.is_some()
                || self.mac_address.is_some())
        {
            endpoints.insert("default".into(), first_ep());
        }
        if !endpoints.is_empty() {
            cfg["NetworkingConfig"] = json!({"EndpointsConfig": endpoints});
        }
        let mut bindings = Map::new();
        let mut exposed = cfg["ExposedPorts"].as_object().cloned().unwrap_or_default();
        for p in &self.publish {
            for (port, ip, host) in parse_publish(p)? {
                exposed.insert(port.clone(), json!({}));
                let list = bindings.entry(port).or_insert_with(|| json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(json!({"HostIp": ip, "HostPort": host}));
                }
            }
        }
        for e in &self.expose {
            let (ports, proto) = e.split_once('/').unwrap_or((e, "tcp"));
            let (a, b) = ports.split_once('-').unwrap_or((ports, ports));
            let a: u16 = a
                .parse()
                .map_err(|_| anyhow!("invalid range format for --expose: {e}"))?;
            let b: u16 = b
                .parse()
                .map_err(|_| anyhow!("invalid range format for --expose: {e}"))?;
            for p in a..=b {
                exposed.insert(format!("{p}/{proto}"), json!({}));
            }
        }
        if !exposed.is_empty() {
            cfg["ExposedPorts"] = Value::Object(exposed);
        }
        if !bindings.is_empty() {
            cfg["HostConfig"]["PortBindings"] = Value::Object(bindings);
        }
        if self.publish_all {
            cfg["HostConfig"]["PublishAllPorts"] = json!(true);
        }
        if !self.dns.is_empty() {
            cfg["HostConfig"]["Dns"] = json!(self.dns);
        }
        if !self.dns_search.is_empty() {
            cfg["HostConfig"]["DnsSearch"] = json!(self.dns_search);
        }
        if !self.dns_option.is_empty() {
            cfg["HostConfig"]["DnsOptions"] = json!(self.dns_option);
        }
        if !self.add_host.is_empty() {
            for h in &self.add_host {
                let (name, ip) = h
                    .split_once(':')
                    .or_else(|| h.split_once('='))
                    .ok_or_else(|| anyhow!("bad format for add-host: \"{h}\""))?;
                if name.is_empty()
                    || (ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err())
                {
                    bail!("invalid IP address in add-host: \"{ip}\"");
                }
            }
            cfg["HostConfig"]["ExtraHosts"] = json!(self.add_host);
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(DisconnectArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    pub subnet: Vec<String>,
    /// IPv4 Gateway for the master subnet
    #[arg(long)]
    pub gateway: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    pub ip_range: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    pub internal: bool,
    /// Enable manual container attachment
    #[arg(long)]
    pub attachable: bool,
    /// Set metadata on a network
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
    /// Enable or disable IPv6 networking
    #[arg(long)]
    pub ipv6: bool,
    pub name: String,
}

fn kv_map(items: &[String]) -> Map<String, Value> {
    items
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), json!(v)),
            None => (l.clone(), json!("")),
        })
        .collect()
}

async fn post(c: &Client, path: &str, body: &Value) -> Result<Value> {
    let resp = c
        .request(
            Method::POST,
            path,
            ReqBody::Full(Some(serde_json::to_vec(body)?.into())),
            &[("Content-Type", "application/json".to_string())],
        )
        .await?;
    read_json(resp).await
}

pub async fn create(c: &Client, a: CreateArgs) -> Result<()> {
    if a.gateway.len() > a.subnet.len() || a.ip_range.len() > a.subnet.len() {
        bail!("every ip-range or gateway must have a corresponding subnet");
    }
    // each gateway and range goes with the subnet of its address family, in order (as
    // the docker CLI pairs them)
    let v6 = |s: &String| s.contains(':');
    let mut configs: Vec<Value> = a.subnet.iter().map(|s| json!({"Subnet": s})).collect();
    for (key, list) in [("Gateway", &a.gateway), ("IPRange", &a.ip_range)] {
        for family in [false, true] {
            let subnets = a.subnet.iter().enumerate().filter(|(_, s)| v6(s) == family);
            let items = list.iter().filter(|x| v6(x) == family);
            for ((i, _), item) in subnets.zip(items) {
                configs[i][key] = json!(item);
            }
        }
    }
    let body = json!({
        "Name": a.name,
        "Driver": a.driver,
        "Internal": a.internal,
        "Attachable": a.attachable,
        "EnableIPv6": a.ipv6,
        "IPAM": {"Driver": "default", "Config": configs, "Options": {}},
        "Options": kv_map(&a.opt),
        "Labels": kv_map(&a.label),
    });
    let v = post(c, "/networks/create", &body).await?;
    if let Some(w) = v["Warning"].as_str().filter(|w| !w.is_empty()) {
        eprintln!("WARNING: {w}");
    }
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(())
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Do not truncate the output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only display network IDs
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

pub async fn ls(c: &Client, a: LsArgs) -> Result<()> {
    let mut path = "/networks".to_string();
    if let Some(f) = filters_json(&a.filter)? {
        path.push_str(&format!("?filters={}", q(&f)));
    }
    let v = c.get_json(&path).await?;
    let mut nets: Vec<Value> = v.as_array().cloned().unwrap_or_default();
    nets.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
    let rows: Vec<Value> = nets
        .iter()
        .map(|n| {
            let id = n["Id"].as_str().unwrap_or_default();
            let labels = crate::format::labels_text(&n["Labels"]);
            json!({
                "ID": if a.no_trunc { id.to_string() } else { id.chars().take(12).collect() },
                "Name": n["Name"],
                "Driver": n["Driver"],
                "Scope": n["Scope"],
                "IPv4": "true",
                "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
                "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
                "Labels": labels,
                "CreatedAt": n["Created"],
            })
        })
        .collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let f = Format::new(
        a.format.format.as_deref(),
        "{{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
    );
    let headers = json!({"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv4": "IPV4", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"});
    print!("{}", f.render(&rows, &headers)?);
    Ok(())
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Verbose output for diagnostics
    #[arg(short, long)]
    pub verbose: bool,
    #[arg(required = true)]
    pub networks: Vec<String>,
}

pub async fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let paths: Vec<String> = a
        .networks
        .iter()
        .map(|n| format!("/networks/{}", q(n)))
        .collect();
    super::images::inspect_paths(c, &paths, a.format.as_deref()).await
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub networks: Vec<String>,
}

pub async fn rm(c: &Client, a: RmArgs) -> Result<()> {
    let paths: Vec<(String, String)> = a
        .networks
        .iter()
        .map(|n| (n.clone(), format!("/networks/{}", q(n))))
        .collect();
    super::remove_each(c, &paths, a.force).await
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long)]
    pub filter: Vec<String>,
}

pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    if !a.force
        && !super::confirm(
            "WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue?",
        )
    {
        return Ok(());
    }
    let out = run_prune(c, &a.filter).await?;
    super::print_pruned(&out, None);
    Ok(())
}

/// Removes unused custom networks: what docker prints of it.
pub async fn run_prune(c: &Client, filter: &[String]) -> Result<String> {
    let mut path = "/networks/prune".to_string();
    if let Some(f) = filters_json(filter)? {
        path.push_str(&format!("?filters={}", q(&f)));
    }
    let v = c.send_json(Method::POST, &path).await?;
    Ok(super::deleted_list(
        "Deleted Networks:",
        &v["NetworksDeleted"],
    ))
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Add network-scoped alias for the container
    #[arg(long)]
    pub alias: Vec<String>,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long)]
    pub ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long)]
    pub ip6: Option<String>,
    /// Add a link to another container (NAME[:ALIAS])
    #[arg(long)]
    pub link: Vec<String>,
    pub network: String,
    pub container: String,
}

pub async fn connect(c: &Client, a: ConnectArgs) -> Result<()> {
    let mut ep = json!({});
    if !a.alias.is_empty() {
        ep["Aliases"] = json!(a.alias);
    }
    let ipam = ipam_config(a.ip.as_deref(), a.ip6.as_deref());
    if !ipam.is_empty() {
        ep["IPAMConfig"] = Value::Object(ipam);
    }
    if !a.link.is_empty() {
        ep["Links"] = json!(a.link);
    }
    let body = json!({"Container": a.container, "EndpointConfig": ep});
    c.request(
        Method::POST,
        &format!("/networks/{}/connect", q(&a.network)),
        ReqBody::Full(Some(serde_json::to_vec(&body)?.into())),
        &[("Content-Type", "application/json".to_string())],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct DisconnectArgs {
    /// Force the container to disconnect from a network
    #[arg(short, long)]
    pub force: bool,
    pub network: String,
    pub container: String,
}

pub async fn disconnect(c: &Client, a: DisconnectArgs) -> Result<()> {
    let body = json!({"Container": a.container, "Force": a.force});
    c.request(
        Method::POST,
        &format!("/networks/{}/disconnect", q(&a.network)),
        ReqBody::Full(Some(serde_json::to_vec(&body)?.into())),
        &[("Content-Type", "application/json".to_string())],
    )
    .await?;
    Ok(())
}

/// `ps`'s PORTS column from the list's `Ports`: `IP:PUBLIC->PRIVATE/PROTO` for published
/// ones, `PRIVATE/PROTO` for exposed ones, sorted as docker sorts them.
pub fn ports_text(ports: &Value) -> String {
    let mut items: Vec<(u64, String, String)> = ports
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let private = p["PrivatePort"].as_u64().unwrap_or(0);
            let proto = p["Type"].as_str().unwrap_or("tcp");
            let text = match (p["IP"].as_str(), p["PublicPort"].as_u64()) {
                (Some(ip), Some(public)) => format!("{ip}:{public}->{private}/{proto}"),
                _ => format!("{private}/{proto}"),
            };
            (private, proto.to_string(), text)
        })
        .collect();
    items.sort();
    items
        .into_iter()
        .map(|(_, _, t)| t)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Args)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

/// `berth port`: the container's published ports, as docker prints them.
pub async fn port(c: &Client, a: PortArgs) -> Result<()> {
    let v = c
        .get_json(&format!("/containers/{}/json", q(&a.container)))
        .await?;
    let ports = v["NetworkSettings"]["Ports"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let want = a.port.as_ref().map(|p| {
        if p.contains('/') {
            p.clone()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut lines = Vec::new();
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| {
        let (n, p) = k.split_once('/').unwrap_or((k, ""));
        (n.parse::<u32>().unwrap_or(0), p.to_string())
    });
    for k in keys {
        if want.as_ref().is_some_and(|w| w != k) {
            continue;
        }
        for b in ports[k].as_array().into_iter().flatten() {
            let addr = format!(
                "{}:{}",
                b["HostIp"].as_str().unwrap_or_default(),
                b["HostPort"].as_str().unwrap_or_default()
            );
            if want.is_some() {
                lines.push(addr);
            } else {
                lines.push(format!("{k} -> {addr}"));
            }
        }
    }
    if lines.is_empty() {
        if let Some(w) = &want {
            bail!("No public port '{w}' published for {}", a.container);
        }
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs() {
        assert_eq!(
            parse_publish("8080:80").unwrap(),
            vec![("80/tcp".into(), "".into(), "8080".into())]
        );
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/udp").unwrap(),
            vec![("80/udp".into(), "127.0.0.1".into(), "8080".into())]
        );
        assert_eq!(
            parse_publish("80").unwrap(),
            vec![("80/tcp".into(), "".into(), "".into())]
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            vec![("80/tcp".into(), "127.0.0.1".into(), "".into())]
        );
        assert_eq!(parse_publish("8000-8001:80-81").unwrap().len(), 2);
        for bad in [
            "x:80",
            "80/icmp",
            "1:2:3:4",
            "8000-8002:80-81",
            "999.1.1.1:80:80",
            "0",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
