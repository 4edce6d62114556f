//! IPv4 and IPv6 subnets and address allocation.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
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

/// An IPv6 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet6 {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl Subnet6 {
    fn mask(prefix: u8) -> u128 {
        if prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(prefix))
        }
    }

    fn first(&self) -> u128 {
        u128::from(self.addr)
    }

    fn last(&self) -> u128 {
        self.first() | !Self::mask(self.prefix)
    }

    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & Self::mask(self.prefix) == self.first()
    }

    pub fn overlaps(&self, other: &Subnet6) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// Whether `other` lies wholly inside this subnet.
    pub fn covers(&self, other: &Subnet6) -> bool {
        self.first() <= other.first() && other.last() <= self.last()
    }

    /// The `n`th address of the subnet (0 is the subnet-router anycast address).
    pub fn nth(&self, n: u128) -> Option<Ipv6Addr> {
        let a = self.first().checked_add(n)?;
        (a <= self.last()).then(|| Ipv6Addr::from(a))
    }

    /// Parses `ADDR/N` with no host bits set, as Docker asks of an IPv6 `--subnet`.
    pub fn parse_strict(s: &str) -> Result<Subnet6, SubnetError> {
        let bad = || SubnetError::Invalid(s.to_string());
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 128 {
            return Err(bad());
        }
        let n = Subnet6 {
            addr: Ipv6Addr::from(u128::from(ip) & Self::mask(prefix)),
            prefix,
        };
        if n.addr != ip {
            return Err(SubnetError::HostBits {
                given: s.to_string(),
                want: n.to_string(),
            });
        }
        Ok(n)
    }

    /// A unique local /64 (`fd` and 40 random bits, RFC 4193) from `random`.
    pub fn unique_local(random: [u8; 5]) -> Subnet6 {
        let mut b = [0u8; 16];
        b[0] = 0xfd;
        b[1..6].copy_from_slice(&random);
        Subnet6 {
            addr: Ipv6Addr::from(b),
            prefix: 64,
        }
    }
}

impl fmt::Display for Subnet6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet6 {
    type Err = SubnetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Subnet6::parse_strict(s)
    }
}

/// The first free IPv6 address for a container: inside `range` (the subnet when none),
/// never the subnet's first address, the gateway, nor one in `used`.
pub fn allocate6(
    subnet: &Subnet6,
    range: Option<&Subnet6>,
    gateway: Ipv6Addr,
    used: &HashSet<Ipv6Addr>,
) -> Option<Ipv6Addr> {
    let pool = range.unwrap_or(subnet);
    // a /64 has more addresses than any network has containers: the search ends
    // after `used.len() + 2` steps at most
    (1..=used.len() as u128 + 2)
        .filter_map(|n| pool.first().checked_add(n))
        .take_while(|a| *a <= pool.last())
        .map(Ipv6Addr::from)
        .find(|ip| subnet.contains(*ip) && *ip != gateway && !used.contains(ip))
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
    fn ipv6_subnets_and_allocation() {
        let s: Subnet6 = "2001:389::/64".parse().unwrap();
        assert!(s.contains("2001:389::f00d".parse().unwrap()));
        assert!(!s.contains("2001:389:0:1::1".parse().unwrap()));
        assert_eq!(s.nth(1), Some("2001:389::1".parse().unwrap()));
        let r: Subnet6 = "2001:389::/96".parse().unwrap();
        assert!(s.covers(&r) && !r.covers(&s) && s.overlaps(&r));
        assert!(!s.overlaps(&"2001:389:0:1::/64".parse().unwrap()));
        assert!(matches!(
            Subnet6::parse_strict("2001:389::1/64"),
            Err(SubnetError::HostBits { .. })
        ));
        for bad in ["2001:389::", "2001:389::/129", "10.0.0.0/8", "x/64"] {
            assert!(bad.parse::<Subnet6>().is_err(), "{bad}");
        }
        let gw: Ipv6Addr = "2001:389::1".parse().unwrap();
        let mut used = HashSet::new();
        let a = allocate6(&s, None, gw, &used).unwrap();
        assert_eq!(a, "2001:389::2".parse::<Ipv6Addr>().unwrap());
        used.insert(a);
        used.insert("2001:389::3".parse().unwrap());
        assert_eq!(
            allocate6(&s, None, gw, &used),
            Some("2001:389::4".parse().unwrap())
        );
        let tiny: Subnet6 = "2001:389::/127".parse().unwrap();
        assert_eq!(
            allocate6(&tiny, None, "2001:389::1".parse().unwrap(), &HashSet::new()),
            None
        );
        let ula = Subnet6::unique_local([1, 2, 3, 4, 5]);
        assert_eq!(ula.to_string(), "fd01:203:405::/64");
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
