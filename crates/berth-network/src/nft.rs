//! berth's rules, all in nftables' `table inet berth`, replaced whole in one
//! transaction (`nft -f`), so no half-applied state is ever visible and nothing outside
//! the table is touched: NAT for bridges that reach out, published ports (DNAT from
//! other hosts, from this host, and from 127.0.0.1), isolation between networks and for
//! `--internal` ones.

use crate::ipam::Subnet;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The table of a daemon whose default bridge is the standard one; another daemon on the
/// same host (its own `--bridge`) keeps its rules in `berth-BRIDGE`.
pub const TABLE: &str = "berth";

/// A bridge network's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Subnet,
    /// no traffic in or out of the network, except between its containers
    pub internal: bool,
    /// masquerade what leaves for other networks (`com.docker.network.bridge.enable_ip_masquerade`)
    pub masquerade: bool,
}

/// A published port: traffic to `host_ip:host_port` (any local address when None) goes
/// to `ip:port` on `bridge`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub proto: String,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub bridge: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// the table's name (in family inet)
    pub table: String,
    pub bridges: Vec<BridgeRules>,
    pub ports: Vec<PortRule>,
}

fn quoted(s: &str) -> String {
    // interface names are checked before they get here; quotes keep nft's parser from
    // reading them as keywords
    format!("\"{}\"", s.replace(['"', '\\'], ""))
}

impl Ruleset {
    /// The table, as an `nft -f` script that replaces the previous one atomically.
    pub fn script(&self) -> String {
        let mut s = String::new();
        let t = &self.table;
        let _ = writeln!(s, "table inet {t}\ndelete table inet {t}");
        let _ = writeln!(s, "table inet {t} {{");
        let names: Vec<String> = self.bridges.iter().map(|b| quoted(&b.bridge)).collect();
        if !names.is_empty() {
            let _ = writeln!(
                s,
                "  set bridges {{ type ifname; elements = {{ {} }} }}",
                names.join(", ")
            );
        }
        let _ = writeln!(s, "  chain ports {{");
        for p in &self.ports {
            let dst = p
                .host_ip
                .map(|ip| format!("ip daddr {ip} "))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "    {dst}{} dport {} dnat ip to {}:{}",
                p.proto, p.host_port, p.ip, p.port
            );
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(
            s,
            "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump ports\n  }}"
        );
        let _ = writeln!(
            s,
            "  chain output {{\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump ports\n  }}"
        );
        let _ = writeln!(
            s,
            "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
        );
        for b in &self.bridges {
            let br = quoted(&b.bridge);
            // 127.0.0.1 reaching a published port: the answer must come back to the host
            let _ = writeln!(s, "    ip saddr 127.0.0.0/8 oifname {br} masquerade");
            // a container reaching its own network's published port through the host
            let _ = writeln!(
                s,
                "    ip saddr {0} ip daddr {0} oifname {br} ct status dnat masquerade",
                b.subnet
            );
            if b.masquerade && !b.internal {
                let _ = writeln!(s, "    ip saddr {} oifname != {br} masquerade", b.subnet);
            }
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(
            s,
            "  chain forward {{\n    type filter hook forward priority filter; policy accept;"
        );
        for b in self.bridges.iter().filter(|b| b.internal) {
            let br = quoted(&b.bridge);
            let _ = writeln!(s, "    iifname {br} oifname != {br} drop");
            let _ = writeln!(s, "    oifname {br} iifname != {br} drop");
        }
        if !names.is_empty() {
            // published ports are reachable from every network; nothing else crosses
            let _ = writeln!(s, "    ct status dnat accept");
            for br in &names {
                let _ = writeln!(s, "    iifname {br} oifname @bridges oifname != {br} drop");
            }
        }
        let _ = writeln!(s, "  }}\n}}");
        s
    }

    /// Replaces berth's table with this ruleset.
    pub fn apply(&self) -> io::Result<()> {
        nft(&self.script())
    }
}

/// Removes a table of berth's (nothing when it is not there).
pub fn remove(table: &str) -> io::Result<()> {
    nft(&format!("table inet {table}\ndelete table inet {table}\n"))
}

fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running nft: {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_shape() {
        let r = Ruleset {
            table: TABLE.into(),
            bridges: vec![
                BridgeRules {
                    bridge: "berth0".into(),
                    subnet: "10.210.0.0/24".parse().unwrap(),
                    internal: false,
                    masquerade: true,
                },
                BridgeRules {
                    bridge: "br-inner".into(),
                    subnet: "10.210.1.0/24".parse().unwrap(),
                    internal: true,
                    masquerade: true,
                },
            ],
            ports: vec![PortRule {
                proto: "tcp".into(),
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 8080,
                ip: "10.210.0.2".parse().unwrap(),
                port: 80,
                bridge: "berth0".into(),
            }],
        };
        let s = r.script();
        assert!(s.starts_with("table inet berth\ndelete table inet berth\n"));
        assert!(s.contains("ip daddr 127.0.0.1 tcp dport 8080 dnat ip to 10.210.0.2:80"));
        assert!(s.contains("ip saddr 10.210.0.0/24 oifname != \"berth0\" masquerade"));
        assert!(!s.contains("ip saddr 10.210.1.0/24 oifname != \"br-inner\" masquerade"));
        assert!(s.contains("iifname \"br-inner\" oifname != \"br-inner\" drop"));
        assert!(s.contains("iifname \"berth0\" oifname @bridges oifname != \"berth0\" drop"));
        assert_eq!(s.matches('{').count(), s.matches('}').count());
    }
}
