//! IPv4 subnets and address allocation.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error("invalid CIDR address: {0}")]
    Invalid(String),
    #[error("invalid subnet {given}: it should be {want}")]
    HostBits { given: String, want: String },
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Subnet {
        let s = Subnet { addr, prefix };
        Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & s.mask()),
            prefix,
        }
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    fn first(&self) -> u32 {
        u32::from(self.addr)
    }

    fn last(&self) -> u32 {
        self.first() | !self.mask()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.first()
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// Whether `other` lies wholly inside this subnet.
    pub fn covers(&self, other: &Subnet) -> bool {
        self.first() <= other.first() && other.last() <= self.last()
    }

    /// The `n`th address of the subnet (0 is the network's own).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let a = self.first().checked_add(n)?;
        (a <= self.last()).then(|| Ipv4Addr::from(a))
    }

    /// Addresses in the subnet, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.last())
    }

    /// The subnets of `len` bits this one divides into, in order.
    pub fn split(&self, len: u8) -> impl Iterator<Item = Subnet> + '_ {
        let count = if len < self.prefix || len > 32 {
            0
        } else {
            1u64 << (len - self.prefix)
        };
        let step = 1u64 << (32 - u32::from(len));
        (0..count).map(move |i| Subnet {
            addr: Ipv4Addr::from((u64::from(self.first()) + i * step) as u32),
            prefix: len,
        })
    }

    /// Parses `A.B.C.D/N` with no host bits set, as Docker asks of `--subnet`.
    pub fn parse_strict(s: &str) -> Result<Subnet, SubnetError> {
        let (ip, prefix) = parse_cidr(s)?;
        let n = Subnet::new(ip, prefix);
        if n.addr != ip {
            return Err(SubnetError::HostBits {
                given: s.to_string(),
                want: n.to_string(),
            });
        }
        Ok(n)
    }
}

/// `A.B.C.D/N` as an address and prefix length (host bits allowed: `bip` has them).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), SubnetError> {
    let bad = || SubnetError::Invalid(s.to_string());
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if prefix > 32 || prefix.to_string() != s.split_once('/').map_or("", |x| x.1) {
        return Err(bad());
    }
    Ok((ip, prefix))
}

impl FromStr for Subnet {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = parse_cidr(s)?;
        Ok(Subnet::new(ip, prefix))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The first free address for a container: inside `range` (the subnet when none),
/// never the network, broadcast or gateway address, nor one in `used`.
pub fn allocate(
    subnet: &Subnet,
    range: Option<&Subnet>,
    gateway: Ipv4Addr,
    used: &HashSet<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let pool = range.unwrap_or(subnet);
    (pool.first()..=pool.last())
        .map(Ipv4Addr::from)
        .filter(|ip| subnet.contains(*ip))
        .find(|ip| {
            *ip != subnet.addr && *ip != subnet.broadcast() && *ip != gateway && !used.contains(ip)
        })
}

/// The first subnet of `size` bits from `pools` that overlaps none of `taken`.
pub fn pick_subnet(pools: &[(Subnet, u8)], taken: &[Subnet]) -> Option<Subnet> {
    pools.iter().find_map(|(pool, size)| {
        pool.split(*size)
            .find(|s| !taken.iter().any(|t| t.overlaps(s)))
    })
}

/// A container's MAC address from its IPv4 address, as Docker makes them (02:42 and the
/// address's four bytes).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `02:42:ac:11:00:0a` → bytes; None unless six hex pairs (a unicast address).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0;
    for part in s.split([':', '-']) {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6 && out[0] & 1 == 0).then_some(out)
}

pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:42:ac:11:00:0a"),
            Some([2, 0x42, 0xac, 0x11, 0, 0x0a])
        );
        assert_eq!(
            parse_mac("02:42:AC:11:00:0A")
                .map(|m| mac_string(&m))
                .unwrap(),
            "02:42:ac:11:00:0a"
        );
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None, "multicast");
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("02:42:ac:11:00:0a:01"), None);
        assert_eq!(parse_mac("zz:42:ac:11:00:0a"), None);
    }

    #[test]
    fn subnets() {
        let s: Subnet = "10.210.0.0/24".parse().unwrap();
        assert!(s.contains("10.210.0.77".parse().unwrap()));
        assert!(!s.contains("10.210.1.0".parse().unwrap()));
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 210, 0, 255));
        assert_eq!(s.nth(1), Some(Ipv4Addr::new(10, 210, 0, 1)));
        assert_eq!(s.nth(256), None);
        assert!(s.overlaps(&"10.210.0.128/25".parse().unwrap()));
        assert!(s.overlaps(&"10.0.0.0/8".parse().unwrap()));
        assert!(!s.overlaps(&"10.210.1.0/24".parse().unwrap()));
        assert!(s.covers(&"10.210.0.128/25".parse().unwrap()));
        assert_eq!(
            Subnet::parse_strict("10.1.0.5/24"),
            Err(SubnetError::HostBits {
                given: "10.1.0.5/24".into(),
                want: "10.1.0.0/24".into()
            })
        );
        for bad in ["10.1.0.0", "10.1.0.0/33", "10.1.0/24", "x/8", "10.1.0.0/+8"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        let pool: Subnet = "10.211.0.0/16".parse().unwrap();
        let parts: Vec<Subnet> = pool.split(24).take(2).collect();
        assert_eq!(parts[1].to_string(), "10.211.1.0/24");
        assert_eq!(pool.split(24).count(), 256);
    }

    #[test]
    fn allocation() {
        let s: Subnet = "10.0.0.0/29".parse().unwrap();
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = allocate(&s, None, gw, &used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(
            got,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        let range: Subnet = "10.0.0.4/30".parse().unwrap();
        assert_eq!(
            allocate(&s, Some(&range), gw, &HashSet::new()),
            Some(Ipv4Addr::new(10, 0, 0, 4))
        );
        let pools = [("10.211.0.0/16".parse().unwrap(), 24)];
        let taken = [
            "10.211.0.0/24".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        assert_eq!(
            pick_subnet(&pools, &taken[..1]).unwrap().to_string(),
            "10.211.1.0/24"
        );
        assert_eq!(pick_subnet(&pools, &taken), None);
        assert_eq!(
            mac_string(&mac_for(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }
}
