//! Living beside the host's own iptables filter rules. A packet crosses every base chain
//! of the forward hook, and a drop in any of them wins: dockerd sets the iptables
//! `FORWARD` policy to DROP (with `bridge-nf-call-iptables`, which sends bridged traffic
//! there too), so accepting in berth's table alone lets nothing through. Where an
//! iptables `filter` table with a `FORWARD` chain exists (iptables-nft's `ip filter`, or
//! the legacy one), berth puts a chain of its own there that accepts what enters or
//! leaves its bridges, and jumps to it first (as Docker's `FORWARD -i docker0` accepts
//! and netavark's chains do); its own table still drops what berth's networks forbid.
//! Nothing is made where no such table exists, and both go when berth's rules go.

use std::io;
use std::process::{Command, Stdio};

/// The iptables programs whose filter table has a FORWARD chain on this host (the
/// nf_tables one and the legacy one are separate tables, and both may drop).
fn tables() -> Vec<&'static str> {
    let runs = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut out = Vec::new();
    // iptables-nft's table, looked at without making it (iptables -L would)
    if runs("nft", &["list", "chain", "ip", "filter", "FORWARD"]) && runs("iptables-nft", &["-V"]) {
        out.push("iptables-nft");
    }
    let legacy = std::fs::read_to_string("/proc/net/ip_tables_names")
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "filter"));
    if legacy && runs("iptables-legacy", &["-V"]) {
        out.push("iptables-legacy");
    }
    out
}

/// berth's chain in the host's filter table, for berth's table `table`
/// (`berth` → `BERTH-ALLOW`).
pub fn chain(table: &str) -> String {
    format!("{}-ALLOW", table.to_uppercase())
}

/// The rules of the chain: accept what enters or leaves each bridge.
pub fn script(chain: &str, bridges: &[String]) -> String {
    let mut s = format!("*filter\n:{chain} - [0:0]\n");
    for b in bridges {
        s.push_str(&format!(
            "-A {chain} -i {b} -j ACCEPT\n-A {chain} -o {b} -j ACCEPT\n"
        ));
    }
    s.push_str("COMMIT\n");
    s
}

/// Puts berth's accepts for `bridges` into every host filter table that has a FORWARD
/// chain (refilled whole), jumped to first from FORWARD.
pub fn allow(table: &str, bridges: &[String]) -> io::Result<()> {
    let chain = chain(table);
    for prog in tables() {
        crate::nft::run_stdin(
            &format!("{prog}-restore"),
            &["-w", "--noflush"],
            &script(&chain, bridges),
        )?;
        let has = Command::new(prog)
            .args(["-w", "-C", "FORWARD", "-j", &chain])
            .stderr(Stdio::null())
            .status()?
            .success();
        if !has {
            crate::nft::run_stdin(prog, &["-w", "-I", "FORWARD", "-j", &chain], "")?;
        }
    }
    Ok(())
}

/// Whether a host filter table lacks the jump to berth's chain (one made, or flushed,
/// after berth's rules were applied: dockerd starting later, say).
pub fn missing(table: &str) -> bool {
    let chain = chain(table);
    tables().into_iter().any(|prog| {
        !Command::new(prog)
            .args(["-w", "-C", "FORWARD", "-j", &chain])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Takes berth's chain and its jumps away from the host's filter tables.
pub fn revoke(table: &str) {
    let chain = chain(table);
    for prog in tables() {
        while Command::new(prog)
            .args(["-w", "-D", "FORWARD", "-j", &chain])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {}
        for op in ["-F", "-X"] {
            let _ = Command::new(prog)
                .args(["-w", op, &chain])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_and_rules() {
        assert_eq!(super::chain("berth"), "BERTH-ALLOW");
        let s = super::script("BERTH-ALLOW", &["berth0".into(), "bbr-1".into()]);
        assert_eq!(
            s,
            "*filter\n:BERTH-ALLOW - [0:0]\n-A BERTH-ALLOW -i berth0 -j ACCEPT\n-A BERTH-ALLOW -o berth0 -j ACCEPT\n-A BERTH-ALLOW -i bbr-1 -j ACCEPT\n-A BERTH-ALLOW -o bbr-1 -j ACCEPT\nCOMMIT\n"
        );
    }
}
