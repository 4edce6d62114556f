//! Published ports: the host ports held for a container, and the bindings asked for.

use super::*;

/// A bound socket holding `ip:port` (0: a free one); the port it got.
pub(super) fn hold(proto: &str, ip: Ipv4Addr, port: u16) -> std::io::Result<(OwnedFd, u16)> {
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
pub(super) fn bindings(spec: &Value) -> Result<Vec<(u16, String, String, String)>, EngineError> {
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
    /// Whether one of berth's containers (or this one's earlier bindings) holds a port.
    pub(super) fn port_taken(&self, proto: &str, ip: Ipv4Addr, port: u16, mine: &[Held]) -> bool {
        let g = self.ports.lock().unwrap_or_else(|p| p.into_inner());
        g.values().flatten().chain(mine).any(|h| {
            h.rule.proto == proto
                && h.rule.host_port == port
                && (h.rule.host_ip.is_none() || ip.is_unspecified() || h.rule.host_ip == Some(ip))
        })
    }
}
