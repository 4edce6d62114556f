//! Bridges, veth pairs, addresses and routes over rtnetlink (no `ip` processes).

use crate::netns;
use futures_util::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::path::Path;

fn err(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.raw_code() != 0 => {
            io::Error::from_raw_os_error(-m.raw_code())
        }
        other => io::Error::other(other.to_string()),
    }
}

/// A link as `links` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `ip link set DEV alias …`: berthd marks its bridges and veths with its owner
    pub alias: Option<String>,
}

/// A veth pair to make: see [`Netlink::add_veth`].
#[derive(Debug, Clone, Copy)]
pub struct Veth<'a> {
    pub host: &'a str,
    pub bridge: u32,
    pub peer: &'a str,
    pub mac: [u8; 6],
    pub netns_fd: RawFd,
    pub mtu: Option<u32>,
    pub alias: &'a str,
}

/// An interface's IPv6 address, and the gateway of its default route if it takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V6 {
    pub ip: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv6Addr>,
}

/// A route netlink connection, in the namespace it was opened in.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the daemon's own namespace (needs a tokio runtime).
    pub fn new() -> io::Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection inside the namespace pinned at `path`: its socket is opened there
    /// and stays there, whichever thread uses it.
    pub fn in_netns(path: &Path) -> io::Result<Netlink> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle) = netns::run_in(path, move || {
            let _entered = rt.enter();
            rtnetlink::new_connection().map(|(c, h, _)| (c, h))
        })??;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A link's index by name; None when there is no such link.
    pub async fn index(&self, name: &str) -> io::Result<Option<u32>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(m)) => Ok(Some(m.header.index)),
            Ok(None) => Ok(None),
            Err(e) => {
                let e = err(e);
                if e.raw_os_error() == Some(libc_enodev()) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Every link's index, name and alias.
    pub async fn links(&self) -> io::Result<Vec<LinkInfo>> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(m) = links.try_next().await.map_err(err)? {
            let mut name = None;
            let mut alias = None;
            for a in &m.attributes {
                match a {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::IfAlias(n) => alias = Some(n.clone()),
                    _ => {}
                }
            }
            if let Some(name) = name {
                out.push(LinkInfo {
                    index: m.header.index,
                    name,
                    alias,
                });
            }
        }
        Ok(out)
    }

    /// Adds `ip/prefix` to a link (replacing it if there). An IPv6 address is usable at
    /// once: no duplicate address detection on links that are all ours.
    async fn add_address(
        &self,
        index: u32,
        ip: IpAddr,
        prefix: u8,
        replace: bool,
    ) -> io::Result<()> {
        let mut req = self.handle.address().add(index, ip, prefix);
        if ip.is_ipv6() {
            req.message_mut().header.flags =
                netlink_packet_route::address::AddressHeaderFlags::Nodad;
        }
        let req = if replace { req.replace() } else { req };
        req.execute().await.map_err(err)
    }

    /// The bridge `name` with `gateway/prefix` (and the IPv6 gateway `v6`) on it, up;
    /// made if missing. Its index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
        v6: Option<(Ipv6Addr, u8)>,
        mtu: Option<u32>,
        alias: &str,
    ) -> io::Result<u32> {
        let index = match self.index(name).await? {
            Some(i) => i,
            None => {
                let mut b = LinkBridge::new(name);
                if let Some(m) = mtu {
                    b = b.mtu(m);
                }
                match self
                    .handle
                    .link()
                    .add(b.build())
                    .execute()
                    .await
                    .map_err(err)
                {
                    Ok(()) => {}
                    // made meanwhile by someone else: use it
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                self.index(name)
                    .await?
                    .ok_or_else(|| io::Error::other(format!("bridge {name} vanished")))?
            }
        };
        self.add_address(index, IpAddr::V4(gateway), prefix, true)
            .await?;
        if let Some((gw6, prefix6)) = v6 {
            self.add_address(index, IpAddr::V6(gw6), prefix6, true)
                .await?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).alias(alias).up().build())
            .execute()
            .await
            .map_err(err)?;
        Ok(index)
    }

    pub async fn up(&self, index: u32) -> io::Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(err)
    }

    /// Deletes a link by name (its veth peer goes with it); no link is no error.
    pub async fn delete(&self, name: &str) -> io::Result<()> {
        if let Some(i) = self.index(name).await? {
            match self.handle.link().del(i).execute().await.map_err(err) {
                Err(e) if e.raw_os_error() == Some(libc_enodev()) => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// A veth pair: `host` on `bridge`, up and marked with `alias`; its peer `peer` (with
    /// `mac`) made directly in the namespace `netns_fd`.
    pub async fn add_veth(&self, v: &Veth<'_>) -> io::Result<()> {
        let Veth {
            host,
            bridge,
            peer,
            mac,
            netns_fd,
            mtu,
            alias,
        } = *v;
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(mac.to_vec())
            .setns_by_fd(netns_fd);
        if let Some(m) = mtu {
            peer_msg = peer_msg.mtu(m);
        }
        let mut msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(m) = mtu {
            msg = msg.mtu(m);
        }
        self.handle
            .link()
            .add(msg.build())
            .execute()
            .await
            .map_err(err)?;
        let index = self
            .index(host)
            .await?
            .ok_or_else(|| io::Error::other(format!("veth {host} vanished")))?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .controller(bridge)
                    .alias(alias)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(err)
    }

    /// Inside a container's namespace: `lo` up, `ifname` up with `ip/prefix` (and `v6`),
    /// and a default route through `gateway` when there is one.
    pub async fn configure(
        &self,
        ifname: &str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        v6: Option<V6>,
    ) -> io::Result<()> {
        if let Some(lo) = self.index("lo").await? {
            self.up(lo).await?;
        }
        let index = self
            .index(ifname)
            .await?
            .ok_or_else(|| io::Error::other(format!("{ifname} is missing in the namespace")))?;
        self.add_address(index, IpAddr::V4(ip), prefix, false)
            .await?;
        if let Some(v6) = v6 {
            self.add_address(index, IpAddr::V6(v6.ip), v6.prefix, false)
                .await?;
        }
        self.up(index).await?;
        if let Some(gw) = gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build();
            ignore_existing(self.handle.route().add(route).execute().await)?;
        }
        if let Some(gw6) = v6.and_then(|v| v.gateway) {
            let route = RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gw6)
                .output_interface(index)
                .build();
            ignore_existing(self.handle.route().add(route).execute().await)?;
        }
        Ok(())
    }

    /// `lo` up (a namespace with no other interface).
    pub async fn loopback_up(&self) -> io::Result<()> {
        if let Some(lo) = self.index("lo").await? {
            self.up(lo).await?;
        }
        Ok(())
    }
}

/// A second network's default route: the first one stays.
fn ignore_existing(r: Result<(), rtnetlink::Error>) -> io::Result<()> {
    match r.map_err(err) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

const fn libc_enodev() -> i32 {
    19
}
