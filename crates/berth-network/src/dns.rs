//! The embedded DNS server of a bridge network: listens on the network's gateway
//! address, answers A and AAAA queries for the names of the network's containers
//! (names, aliases) and forwards every other query, bytes unchanged, to the host's
//! resolvers.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_ANY: u16 = 255;
const CLASS_IN: u16 = 1;
/// Seconds a client may keep an answer (Docker's server says 600).
const TTL: u32 = 600;
const MAX_NAME: usize = 255;

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// lowercase, without the final dot
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// where the question ends in the message
    end: usize,
}

/// Reads a standard query with exactly one question; None for anything else (answers,
/// other opcodes, compressed or malformed names).
pub fn parse_query(buf: &[u8]) -> Option<Query> {
    if buf.len() < 12 {
        return None;
    }
    let id = u16::from_be_bytes([buf[0], buf[1]]);
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    let qd = u16::from_be_bytes([buf[4], buf[5]]);
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qd != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let len = *buf.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // a pointer or a reserved length: not in a question we answer
        }
        total += len + 1;
        if total > MAX_NAME {
            return None;
        }
        let label = buf.get(i..i + len)?;
        if !label
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'))
        {
            return None;
        }
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*buf.get(i)?, *buf.get(i + 1)?]);
    let qclass = u16::from_be_bytes([*buf.get(i + 2)?, *buf.get(i + 3)?]);
    Some(Query {
        id,
        name: labels.join("."),
        qtype,
        qclass,
        end: i + 4,
    })
}

/// The reply to `query` (the message `buf` it came from): the IPv4 addresses of `ips`
/// as A records for an A question, the IPv6 ones as AAAA records for an AAAA question,
/// both for ANY, no records (but no error) for other types; `rcode` 3 (NXDOMAIN) or 2
/// (SERVFAIL) when given.
pub fn reply(buf: &[u8], q: &Query, ips: &[IpAddr], rcode: u8) -> Vec<u8> {
    let wanted = |ip: &&IpAddr| match ip {
        IpAddr::V4(_) => matches!(q.qtype, TYPE_A | TYPE_ANY),
        IpAddr::V6(_) => matches!(q.qtype, TYPE_AAAA | TYPE_ANY),
    };
    let answers: Vec<&IpAddr> = if rcode == 0 && q.qclass == CLASS_IN {
        ips.iter().filter(wanted).collect()
    } else {
        Vec::new()
    };
    let rd = buf[2] & 0x01;
    let mut out = Vec::with_capacity(q.end + answers.len() * 16);
    out.extend_from_slice(&q.id.to_be_bytes());
    // QR, AA when we know the name, RD as asked, RA
    let aa = if rcode == 0 { 0x04 } else { 0 };
    out.push(0x80 | aa | rd);
    out.push(0x80 | (rcode & 0x0f));
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&buf[12..q.end]);
    for ip in answers {
        let (ty, data) = match ip {
            IpAddr::V4(a) => (TYPE_A, a.octets().to_vec()),
            IpAddr::V6(a) => (TYPE_AAAA, a.octets().to_vec()),
        };
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out
}

/// What a network's server knows: a name's addresses for a query from an address, or
/// None to forward the query.
pub type Lookup = Arc<dyn Fn(&str, IpAddr) -> Option<Vec<IpAddr>> + Send + Sync>;

/// A running server; stops when dropped.
pub struct Server {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves DNS over UDP on `bind`.
pub async fn serve(
    bind: SocketAddr,
    lookup: Lookup,
    upstreams: Vec<SocketAddr>,
) -> io::Result<Server> {
    let sock = Arc::new(UdpSocket::bind(bind).await?);
    let upstreams = Arc::new(upstreams);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let msg = buf[..n].to_vec();
            let Some(q) = parse_query(&msg) else {
                continue;
            };
            match lookup(&q.name, from.ip()) {
                Some(ips) => {
                    let _ = sock.send_to(&reply(&msg, &q, &ips, 0), from).await;
                }
                None => {
                    let (sock, up) = (sock.clone(), upstreams.clone());
                    tokio::spawn(async move {
                        let answer = match forward(&msg, &up).await {
                            Some(a) => a,
                            None => reply(&msg, &q, &[], 2),
                        };
                        let _ = sock.send_to(&answer, from).await;
                    });
                }
            }
        }
    });
    Ok(Server { task })
}

/// The first answer an upstream resolver gives to `msg` (2 s each).
async fn forward(msg: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let local: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(s) = UdpSocket::bind(local).await else {
            continue;
        };
        if s.send_to(msg, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(2), s.recv_from(&mut buf)).await
        {
            if from == *up && n >= 2 && buf[..2] == msg[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

/// The nameservers of a resolv.conf text, as socket addresses (port 53).
pub fn nameservers(resolv: &str) -> Vec<SocketAddr> {
    resolv
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn queries_and_replies() {
        let m = query("Web.Local", TYPE_A);
        let q = parse_query(&m).unwrap();
        assert_eq!(q.name, "web.local");
        assert_eq!(q.id, 0x1234);
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let v6: IpAddr = "2001:389::f00d".parse().unwrap();
        let r = reply(&m, &q, &[v4, v6], 0);
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2] & 0x80, 0x80, "a response");
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 2]);
        // AAAA: the IPv6 address
        let m6 = query("web", TYPE_AAAA);
        let q6 = parse_query(&m6).unwrap();
        let r6 = reply(&m6, &q6, &[v4, v6], 0);
        assert_eq!(u16::from_be_bytes([r6[6], r6[7]]), 1);
        assert_eq!(&r6[r6.len() - 18..r6.len() - 16], &[0, 16]);
        assert_eq!(r6[r6.len() - 2..], [0xf0, 0x0d]);
        // ... and none, without an error, for a name with only an IPv4 address
        let r6 = reply(&m6, &q6, &[v4], 0);
        assert_eq!(u16::from_be_bytes([r6[6], r6[7]]), 0);
        assert_eq!(r6[3] & 0x0f, 0);
        // SERVFAIL
        let rf = reply(&m, &q, &[], 2);
        assert_eq!(rf[3] & 0x0f, 2);
    }

    #[test]
    fn bad_messages_are_ignored() {
        assert_eq!(parse_query(&[]), None);
        assert_eq!(parse_query(&[0; 11]), None);
        let mut answer = query("a", TYPE_A);
        answer[2] |= 0x80;
        assert_eq!(parse_query(&answer), None);
        let mut two = query("a", TYPE_A);
        two[5] = 2;
        assert_eq!(parse_query(&two), None);
        let mut cut = query("abc", TYPE_A);
        cut.truncate(cut.len() - 3);
        assert_eq!(parse_query(&cut), None);
        let mut ptr = query("a", TYPE_A);
        ptr[12] = 0xc0;
        assert_eq!(parse_query(&ptr), None);
        let long = query(&vec!["a".repeat(63); 5].join("."), TYPE_A);
        assert_eq!(parse_query(&long), None);
        // every prefix of a good query is refused, never a panic
        let good = query("web.example", TYPE_A);
        for n in 0..good.len() {
            assert_eq!(parse_query(&good[..n]), None, "{n}");
        }
    }

    #[test]
    fn resolv_conf_nameservers() {
        let r = "# x\nnameserver 10.255.255.53\nsearch a\nnameserver ::1\nnameserver bad\n";
        assert_eq!(
            nameservers(r),
            vec![
                "10.255.255.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
