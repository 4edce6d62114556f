//! A running container's networking as the engine records it: its endpoints (one per
//! network), its published ports and its namespace.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A container's place on one network while it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub network_id: String,
    pub network: String,
    pub endpoint_id: String,
    pub ip: String,
    pub prefix: u8,
    pub gateway: String,
    pub mac: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    pub veth: String,
    pub ifname: String,
    /// the IPv6 address, prefix length and gateway (empty without IPv6)
    #[serde(default)]
    pub ip6: String,
    #[serde(default)]
    pub prefix6: u8,
    #[serde(default)]
    pub gateway6: String,
    #[serde(default)]
    pub container_name: String,
    /// network-scoped links (`EndpointSettings.Links`): (container, alias); the alias
    /// resolves to that container for this endpoint only
    #[serde(default)]
    pub links: Vec<(String, String)>,
}

impl Endpoint {
    /// Its IPv4 address, and its IPv6 one if it has one.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self.ip.parse().ok().into_iter().collect();
        out.extend(self.ip6.parse::<IpAddr>().ok());
        out
    }
}

/// A published port: `host_ip:host_port` → the container's `port/proto`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Published {
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    pub port: u16,
}

/// What a running container's networking is, kept in its state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetState {
    /// the pinned namespace (empty: none of berthd's)
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub ports: Vec<Published>,
    /// resolver settings for its queries that are not for a container
    #[serde(default)]
    pub dns: Vec<String>,
}
