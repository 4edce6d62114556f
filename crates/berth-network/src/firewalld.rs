//! Living beside firewalld. firewalld's table (`inet firewalld`) rejects, in its forward
//! and input chains, what enters from an interface whose zone does not allow it, and an
//! interface of no zone is in the default zone (`public`): with firewalld running,
//! containers reach neither berthd's DNS on their bridge nor anything past the host,
//! whatever berth's own table accepts. berth binds each of its bridges to firewalld's
//! `trusted` zone (target ACCEPT) over D-Bus, as Docker binds its own to a zone of its
//! own and netavark trusts its subnets. Bindings made at runtime go with a reload or a
//! restart of firewalld: its `Reloaded` signal and its name's owner changing wake the
//! daemon to bind them again (and a periodic check catches any signal missed). A
//! bridge the administrator bound to a zone of their own is left there. Bindings go
//! with the networks, and with berth's rules at a stop.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use tokio::sync::Mutex;
use zbus::{message::Type, Connection, MatchRule, MessageStream};

const NAME: &str = "org.fedoraproject.FirewallD1";
const PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_IFACE: &str = "org.fedoraproject.FirewallD1.zone";
/// The zone berth's bridges are bound to.
pub const ZONE: &str = "trusted";

/// berth's bindings in firewalld, and the system bus it reaches firewalld on.
#[derive(Default)]
pub struct Trust {
    bus: Mutex<Option<Connection>>,
    bound: Mutex<Bindings>,
}

#[derive(Default)]
struct Bindings {
    /// bridges berth bound (or found bound) to `ZONE`
    trusted: BTreeSet<String>,
    /// bridges found in another zone (said once)
    elsewhere: BTreeSet<String>,
}

/// What binding a bridge came to.
#[derive(Debug, PartialEq, Eq)]
enum Bound {
    /// it is in `ZONE` (berth bound it now, or before)
    Trusted,
    /// the administrator put it in another zone
    Elsewhere(String),
}

impl Trust {
    /// The system bus (opened at first use, and again after it went away); none where
    /// there is no system bus.
    pub async fn bus(&self) -> Option<Connection> {
        let mut bus = self.bus.lock().await;
        if bus.is_none() && system_bus_may_exist() {
            *bus = Connection::system().await.ok();
        }
        bus.clone()
    }

    /// Forgets a bus that went away.
    pub async fn forget_bus(&self) {
        *self.bus.lock().await = None;
    }

    /// Binds each of `bridges` to `ZONE` (those in no zone), and unbinds those berth
    /// bound that are no longer among them. Nothing happens where firewalld does not
    /// run. Answers the bridges newly found in a zone of the administrator's, with the
    /// zone.
    pub async fn sync(&self, bridges: &[String]) -> Vec<(String, String)> {
        let mut guard = self.bound.lock().await;
        let Bindings {
            trusted,
            elsewhere: noted,
        } = &mut *guard;
        if bridges.is_empty() && trusted.is_empty() {
            return Vec::new();
        }
        let Some(conn) = self.bus().await else {
            return Vec::new();
        };
        if !running(&conn).await {
            return Vec::new();
        }
        let mut elsewhere = Vec::new();
        for br in bridges {
            match bind(&conn, br).await {
                Ok(Bound::Trusted) => {
                    trusted.insert(br.clone());
                    noted.remove(br);
                }
                Ok(Bound::Elsewhere(z)) => {
                    trusted.remove(br);
                    if noted.insert(br.clone()) {
                        elsewhere.push((br.clone(), z));
                    }
                }
                Err(e) => tracing::warn!(
                    bridge = %br,
                    error = %e,
                    "binding a bridge to firewalld's trusted zone"
                ),
            }
        }
        noted.retain(|x| bridges.contains(x));
        let gone: Vec<String> = trusted
            .iter()
            .filter(|x| !bridges.contains(x))
            .cloned()
            .collect();
        for br in gone {
            if let Err(e) = call(&conn, "removeInterface", &(ZONE, br.as_str())).await {
                tracing::debug!(bridge = %br, error = %e, "unbinding a bridge from firewalld");
            }
            trusted.remove(&br);
        }
        elsewhere
    }
}

/// Whether a system bus may be there to connect to: its address is given, or its
/// socket is at the usual place (so a host without one costs a stat every 10 s).
fn system_bus_may_exist() -> bool {
    std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_some()
        || [
            "/run/dbus/system_bus_socket",
            "/var/run/dbus/system_bus_socket",
        ]
        .iter()
        .any(|p| std::path::Path::new(p).exists())
}

/// firewalld's `Reloaded` signals and its bus name's owner changes, on one bus.
pub struct Changes {
    reloaded: MessageStream,
    owner: MessageStream,
}

impl Changes {
    pub async fn subscribe(conn: &Connection) -> zbus::Result<Changes> {
        let reloaded = MatchRule::builder()
            .msg_type(Type::Signal)
            .interface(NAME)?
            .member("Reloaded")?
            .build();
        let owner = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender("org.freedesktop.DBus")?
            .interface("org.freedesktop.DBus")?
            .member("NameOwnerChanged")?
            .add_arg(NAME)?
            .build();
        Ok(Changes {
            reloaded: MessageStream::for_match_rule(reloaded, conn, Some(16)).await?,
            owner: MessageStream::for_match_rule(owner, conn, Some(16)).await?,
        })
    }

    /// Waits for firewalld to reload, start or stop; false when the bus went away.
    pub async fn next(&mut self) -> bool {
        let m = tokio::select! {
            m = self.reloaded.next() => m,
            m = self.owner.next() => m,
        };
        m.is_some()
    }
}

async fn running(conn: &Connection) -> bool {
    let Ok(dbus) = zbus::fdo::DBusProxy::new(conn).await else {
        return false;
    };
    let Ok(name) = zbus::names::BusName::try_from(NAME) else {
        return false;
    };
    dbus.name_has_owner(name).await.unwrap_or(false)
}

async fn call<A>(conn: &Connection, method: &str, args: &A) -> zbus::Result<String>
where
    A: serde::Serialize + zbus::zvariant::DynamicType,
{
    let m = conn
        .call_method(Some(NAME), PATH, Some(ZONE_IFACE), method, args)
        .await?;
    m.body().deserialize::<String>()
}

/// Puts `br` in `ZONE` unless it is in a zone already.
async fn bind(conn: &Connection, br: &str) -> zbus::Result<Bound> {
    let zone = call(conn, "getZoneOfInterface", &(br,)).await?;
    if zone == ZONE {
        return Ok(Bound::Trusted);
    }
    if !zone.is_empty() {
        return Ok(Bound::Elsewhere(zone));
    }
    call(conn, "addInterface", &(ZONE, br)).await?;
    Ok(Bound::Trusted)
}
