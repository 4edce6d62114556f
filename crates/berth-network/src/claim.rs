//! One daemon per bridge and rules table in a network namespace. Two berthd's that both
//! use `berth0` and `table inet berth` would each replace the other's rules, and the
//! first to stop would delete them. A daemon claims its table by binding an abstract
//! unix socket named after it: abstract names belong to the network namespace, and the
//! kernel frees one when its holder dies (kill -9 included), so a claim never outlives
//! its daemon and never needs cleaning up.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

/// The claim on a table, held as long as this lives.
#[derive(Debug)]
pub struct Claim(#[allow(dead_code)] UnixListener);

/// Claims `table` for this daemon. When another daemon holds it, the error says which
/// bridge they share and, from the bridge's alias, whose data root it is.
pub fn claim(table: &str, bridge: Option<&str>) -> Result<Claim, String> {
    let name = format!("berth-network/{table}");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).map_err(|e| e.to_string())?;
    match UnixListener::bind_addr(&addr) {
        Ok(l) => Ok(Claim(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let owner = bridge
                .and_then(owner_of)
                .map(|root| format!(" (data root {root})"))
                .unwrap_or_default();
            let what = match bridge {
                Some(b) => format!("the bridge {b} and the rules table inet {table}"),
                None => format!("the rules table inet {table}"),
            };
            Err(format!(
                "another berthd{owner} is running with {what}: give this daemon a bridge of \
                 its own (--bridge NAME, with --bip ADDRESS/PREFIX if you want one) or \
                 --bridge none"
            ))
        }
        Err(e) => Err(format!("claiming the rules table {table}: {e}")),
    }
}

/// The data root of the daemon that marked `bridge` (its alias `berth ROOT/network`),
/// asked over netlink through `ip` (sysfs shows the namespace it was mounted in, which
/// need not be ours).
fn owner_of(bridge: &str) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "dev", bridge])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, alias) = text.split_once(" alias berth ")?;
    let root = alias.split("/network").next()?;
    Some(root.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_holder_at_a_time() {
        let t = format!("test-{}", std::process::id());
        let a = super::claim(&t, Some("nonexistent0")).unwrap();
        let e = super::claim(&t, Some("nonexistent0")).unwrap_err();
        assert_eq!(
            e,
            format!("another berthd is running with the bridge nonexistent0 and the rules table inet {t}: give this daemon a bridge of its own (--bridge NAME, with --bip ADDRESS/PREFIX if you want one) or --bridge none")
        );
        drop(a);
        super::claim(&t, None).unwrap();
    }
}
