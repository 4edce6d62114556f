//! Bridges, veth pairs, addresses and routes over rtnetlink (no `ip` processes).

use crate::netns;
use futures_util::TryStreamExt;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
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

    /// The bridge `name` with `gateway/prefix` on it, up; made if missing. Its index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        gateway: Ipv4Addr,
        prefix: u8,
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
        self.handle
            .address()
            .add(index, IpAddr::V4(gateway), prefix)
            .replace()
            .execute()
            .await
            .map_err(err)?;
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

    /// Inside a container's namespace: `lo` up, `ifname` up with `ip/prefix`, and a
    /// default route through `gateway` when there is one.
    pub async fn configure(
        &self,
        ifname: &str,
        ip: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        if let Some(lo) = self.index("lo").await? {
            self.up(lo).await?;
        }
        let index = self
            .index(ifname)
            .await?
            .ok_or_else(|| io::Error::other(format!("{ifname} is missing in the namespace")))?;
        self.handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
            .map_err(err)?;
        self.up(index).await?;
        if let Some(gw) = gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build();
            match self.handle.route().add(route).execute().await.map_err(err) {
                // a second network's default route: the first one stays
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                other => other?,
            }
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

const fn libc_enodev() -> i32 {
    19
}
