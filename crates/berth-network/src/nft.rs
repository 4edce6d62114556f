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

/// Where the rules go: nftables, or (hosts without `nft`) iptables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    Iptables,
}

impl Backend {
    /// `nftables` when the `nft` program is there, else `iptables` when
    /// `iptables-restore` is; None when neither is.
    pub fn detect() -> Option<Backend> {
        let found = |p: &str| {
            std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
        };
        if found("nft") {
            Some(Backend::Nftables)
        } else if found("iptables-restore") {
            Some(Backend::Iptables)
        } else {
            None
        }
    }
}

/// The iptables chains of a table name (`berth` → `BERTH-…`).
fn chain_prefix(table: &str) -> String {
    table.to_uppercase()
}

/// (table, built-in chain, berth's chain suffix) of the jumps into berth's chains.
const JUMPS: &[(&str, &str, &str)] = &[
    ("nat", "PREROUTING", "PRE"),
    ("nat", "OUTPUT", "OUT"),
    ("nat", "POSTROUTING", "POST"),
    ("filter", "FORWARD", "FWD"),
];

impl Ruleset {
    /// The same rules as [`Ruleset::script`], for `iptables-restore --noflush`: berth's own
    /// chains, each declared (so emptied) and refilled in one commit per table.
    pub fn iptables_script(&self) -> String {
        let p = chain_prefix(&self.table);
        let mut s = String::new();
        let _ = writeln!(s, "*nat");
        for c in ["PORTS", "PRE", "OUT", "POST"] {
            let _ = writeln!(s, ":{p}-{c} - [0:0]");
        }
        let _ = writeln!(s, "-A {p}-PRE -m addrtype --dst-type LOCAL -j {p}-PORTS");
        let _ = writeln!(s, "-A {p}-OUT -m addrtype --dst-type LOCAL -j {p}-PORTS");
        for r in &self.ports {
            let dst = r
                .host_ip
                .map(|ip| format!("-d {ip}/32 "))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "-A {p}-PORTS {dst}-p {0} -m {0} --dport {1} -j DNAT --to-destination {2}:{3}",
                r.proto, r.host_port, r.ip, r.port
            );
        }
        for b in &self.bridges {
            let br = &b.bridge;
            let _ = writeln!(s, "-A {p}-POST -s 127.0.0.0/8 -o {br} -j MASQUERADE");
            let _ = writeln!(
                s,
                "-A {p}-POST -s {0} -d {0} -o {br} -m conntrack --ctstate DNAT -j MASQUERADE",
                b.subnet
            );
            if b.masquerade && !b.internal {
                let _ = writeln!(s, "-A {p}-POST -s {} ! -o {br} -j MASQUERADE", b.subnet);
            }
        }
        let _ = writeln!(s, "COMMIT\n*filter\n:{p}-FWD - [0:0]");
        for b in self.bridges.iter().filter(|b| b.internal) {
            let br = &b.bridge;
            let _ = writeln!(s, "-A {p}-FWD -i {br} ! -o {br} -j DROP");
            let _ = writeln!(s, "-A {p}-FWD -o {br} ! -i {br} -j DROP");
        }
        if !self.bridges.is_empty() {
            let _ = writeln!(s, "-A {p}-FWD -m conntrack --ctstate DNAT -j ACCEPT");
            for a in &self.bridges {
                for b in self.bridges.iter().filter(|b| b.bridge != a.bridge) {
                    let _ = writeln!(s, "-A {p}-FWD -i {} -o {} -j DROP", a.bridge, b.bridge);
                }
            }
        }
        let _ = writeln!(s, "COMMIT");
        s
    }

    /// Replaces berth's rules through `backend`, and lets its bridges' traffic through
    /// the host's iptables filter tables where they exist (`hostfw`).
    pub fn apply_with(&self, backend: Backend) -> io::Result<()> {
        self.apply_own(backend)?;
        let bridges: Vec<String> = self.bridges.iter().map(|b| b.bridge.clone()).collect();
        crate::hostfw::allow(&self.table, &bridges)
    }

    fn apply_own(&self, backend: Backend) -> io::Result<()> {
        match backend {
            Backend::Nftables => self.apply(),
            Backend::Iptables => {
                run_stdin("iptables-restore", &["--noflush"], &self.iptables_script())?;
                let p = chain_prefix(&self.table);
                for (t, builtin, c) in JUMPS {
                    let chain = format!("{p}-{c}");
                    let has = Command::new("iptables")
                        .args(["-w", "-t", t, "-C", builtin, "-j", &chain])
                        .stderr(Stdio::null())
                        .status()?
                        .success();
                    if !has {
                        run_stdin(
                            "iptables",
                            &["-w", "-t", t, "-I", builtin, "-j", &chain],
                            "",
                        )?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Removes berth's rules of `table` from `backend` (and its chain in the host's filter
/// tables).
pub fn remove_with(table: &str, backend: Backend) -> io::Result<()> {
    crate::hostfw::revoke(table);
    match backend {
        Backend::Nftables => remove(table),
        Backend::Iptables => {
            let p = chain_prefix(table);
            for (t, builtin, c) in JUMPS {
                let chain = format!("{p}-{c}");
                while Command::new("iptables")
                    .args(["-w", "-t", t, "-D", builtin, "-j", &chain])
                    .stderr(Stdio::null())
                    .status()?
                    .success()
                {}
            }
            for (t, chains) in [
                ("nat", &["PRE", "OUT", "POST", "PORTS"][..]),
                ("filter", &["FWD"][..]),
            ] {
                for c in chains {
                    let chain = format!("{p}-{c}");
                    for op in ["-F", "-X"] {
                        let _ = Command::new("iptables")
                            .args(["-w", "-t", t, op, &chain])
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
            Ok(())
        }
    }
}

pub(crate) fn run_stdin(prog: &str, args: &[&str], input: &str) -> io::Result<()> {
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running {prog}: {e}")))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{prog}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

fn nft(script: &str) -> io::Result<()> {
    run_stdin("nft", &["-f", "-"], script)
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
        let ipt = r.iptables_script();
        assert!(ipt.starts_with("*nat\n:BERTH-PORTS - [0:0]\n"), "{ipt}");
        assert!(ipt.contains("-A BERTH-PORTS -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.210.0.2:80"), "{ipt}");
        assert!(
            ipt.contains("-A BERTH-FWD -i br-inner ! -o br-inner -j DROP"),
            "{ipt}"
        );
        assert!(
            ipt.contains("-A BERTH-FWD -i berth0 -o br-inner -j DROP"),
            "{ipt}"
        );
        assert_eq!(ipt.matches("COMMIT").count(), 2);
    }
}
