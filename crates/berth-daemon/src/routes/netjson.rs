//! Networks and a container's networking as the Docker API shows them: `GET
//! /networks/{id}`, and the `NetworkSettings` and port list of a container's inspect.

use crate::model::{Endpoint, NetState};
use crate::networks::{requested, Mode, Net, Networks};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};

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
