#![allow(clippy::unwrap_used)]
//! Bridge networking end to end, through berth's CLI and the docker CLI: the default
//! bridge, user networks with DNS by name and alias, isolation between networks,
//! `--internal`, published ports (from 127.0.0.1 and from the host's bridge address),
//! connect/disconnect, `container:NAME`, the bad inputs, and the cleanup of links,
//! namespaces and rules, also after a crash. Test traffic stays on loopback and the
//! bridges the daemons made; queries for names no container has go to a resolver the
//! test runs on 127.0.0.1 (never off this machine).

mod common;
use common::*;
use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::Mutex;

/// One test at a time: each compares the host's links before and after.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The host's links (names).
fn links() -> BTreeSet<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or_default().to_string())
        .collect()
}

/// The daemon's nftables table, as text ("" when there is none).
fn table(d: &Daemon) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "inet", &format!("berth-{}", d.bridge())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(d: &Daemon, bin: &str, args: &[&str]) -> String {
    ok(d.cli(bin, args))
}

/// A busybox httpd serving `body` at / in a detached container.
fn web(d: &Daemon, bin: &str, extra: &[&str], name: &str, body: &str) {
    let script =
        format!("mkdir -p /w && echo {body} > /w/index.html && exec busybox httpd -f -p 80 -h /w");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["bb", "sh", "-c", &script]);
    sh(d, bin, &args);
    // `run -d` returns once the process runs: wait until httpd listens
    for _ in 0..100 {
        let probe = d.berth(&["exec", name, "busybox", "wget", "-qO-", "http://127.0.0.1/"]);
        if probe.status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{name}: httpd did not answer");
}

/// HTTP GET through TCP from the host: the body, or None.
fn get(addr: &str) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "3", &format!("http://{addr}/")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn no_stale_links(d: &Daemon, before: &BTreeSet<String>) {
    for _ in 0..50 {
        let now = links();
        let extra: Vec<&String> = now
            .difference(before)
            .filter(|l| *l != &d.bridge())
            .collect();
        if extra.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let now = links();
    panic!(
        "links left: {:?}",
        now.difference(before).collect::<Vec<_>>()
    );
}

#[test]
fn default_bridge_user_networks_dns_and_isolation() {
    let _serial = serial();
    let Some(d) = daemon_with_busybox("default_bridge_user_networks_dns_and_isolation") else {
        return;
    };
    let before = links();
    let prefix = d.bridge_prefix();
    for bin in clis() {
        // the default bridge: eth0 with an address of the daemon's subnet, a route out
        let out = sh(&d, &bin, &["run", "--rm", "bb", "busybox", "ip", "addr"]);
        assert!(out.contains(&format!("inet {prefix}.")), "{bin}: {out}");
        assert!(out.contains("eth0"), "{bin}: {out}");
        let route = sh(&d, &bin, &["run", "--rm", "bb", "busybox", "ip", "route"]);
        assert!(
            route.contains(&format!("default via {prefix}.1")),
            "{bin}: {route}"
        );
        let resolv = sh(
            &d,
            &bin,
            &[
                "run",
                "--rm",
                "--dns-search",
                "example.test",
                "bb",
                "cat",
                "/etc/resolv.conf",
            ],
        );
        assert!(
            resolv.contains(&format!("nameserver {prefix}.1")),
            "{bin}: {resolv}"
        );
        assert!(resolv.contains("search example.test"), "{bin}: {resolv}");
        let hosts = sh(
            &d,
            &bin,
            &[
                "run",
                "--rm",
                "--hostname",
                "h1",
                "--add-host",
                "db.test:10.9.9.9",
                "bb",
                "cat",
                "/etc/hosts",
            ],
        );
        assert!(hosts.contains("10.9.9.9\tdb.test"), "{bin}: {hosts}");
        assert!(
            hosts.contains(&format!("{prefix}.")) && hosts.contains("\th1"),
            "{bin}: {hosts}"
        );
        // none: only lo
        let out = sh(
            &d,
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "bb",
                "busybox",
                "ip",
                "-o",
                "link",
            ],
        );
        assert_eq!(out.lines().count(), 1, "{bin}: {out}");
        assert!(out.contains("lo:"), "{bin}: {out}");
    }
    // --gateway and --ip-range; --dns on the default bridge goes into resolv.conf
    let sub = format!("10.216.{}", d.slot % 250);
    for bin in clis() {
        sh(
            &d,
            &bin,
            &[
                "network",
                "create",
                "--subnet",
                &format!("{sub}.0/24"),
                "--gateway",
                &format!("{sub}.254"),
                "--ip-range",
                &format!("{sub}.128/25"),
                "ranged",
            ],
        );
        let out = sh(
            &d,
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "ranged",
                "bb",
                "sh",
                "-c",
                "busybox ip -o -4 addr show eth0; busybox ip route",
            ],
        );
        assert!(out.contains(&format!("inet {sub}.128/24")), "{bin}: {out}");
        assert!(
            out.contains(&format!("default via {sub}.254")),
            "{bin}: {out}"
        );
        let n = d.get_json("/networks/ranged");
        assert_eq!(n["IPAM"]["Config"][0]["IPRange"], format!("{sub}.128/25"));
        sh(&d, &bin, &["network", "rm", "ranged"]);
        let resolv = sh(
            &d,
            &bin,
            &[
                "run",
                "--rm",
                "--dns",
                "10.9.8.7",
                "bb",
                "cat",
                "/etc/resolv.conf",
            ],
        );
        assert!(resolv.contains("nameserver 10.9.8.7"), "{bin}: {resolv}");
    }
    // user networks: names and aliases resolve; other networks are apart
    for (i, bin) in clis().iter().enumerate() {
        let (front, back) = (format!("front{i}"), format!("back{i}"));
        sh(&d, bin, &["network", "create", &front]);
        sh(&d, bin, &["network", "create", "--internal", &back]);
        web(
            &d,
            bin,
            &["--network", &front, "--network-alias", "www"],
            &format!("web{i}"),
            "hello",
        );
        let got = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &front,
                "bb",
                "busybox",
                "wget",
                "-qO-",
                &format!("http://web{i}/"),
            ],
        );
        assert_eq!(got.trim(), "hello", "{bin}");
        let got = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &front,
                "bb",
                "busybox",
                "wget",
                "-qO-",
                "http://www/",
            ],
        );
        assert_eq!(got.trim(), "hello", "{bin}");
        let ip = sh(
            &d,
            bin,
            &[
                "inspect",
                "-f",
                &format!("{{{{.NetworkSettings.Networks.{front}.IPAddress}}}}"),
                &format!("web{i}"),
            ],
        );
        let ip = ip.trim().to_string();
        assert!(!ip.is_empty(), "{bin}");
        // another network reaches neither the name nor the address
        let out = d.cli(
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &back,
                "bb",
                "busybox",
                "wget",
                "-T",
                "2",
                "-qO-",
                &format!("http://{ip}/"),
            ],
        );
        assert!(!out.status.success(), "{bin}: another network reached {ip}");
        let out = d.cli(
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &back,
                "bb",
                "busybox",
                "wget",
                "-T",
                "2",
                "-qO-",
                &format!("http://web{i}/"),
            ],
        );
        assert!(
            !out.status.success(),
            "{bin}: another network resolved web{i}"
        );
        // the internal network has no way out
        let route = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &back,
                "bb",
                "busybox",
                "ip",
                "route",
            ],
        );
        assert!(!route.contains("default"), "{bin}: {route}");
        // network connect: the container on `back` joins `front` and reaches web by name
        sh(
            &d,
            bin,
            &[
                "run",
                "-d",
                "--name",
                &format!("roam{i}"),
                "--network",
                &back,
                "bb",
                "sleep",
                "60",
            ],
        );
        sh(
            &d,
            bin,
            &[
                "network",
                "connect",
                "--alias",
                "roamer",
                &front,
                &format!("roam{i}"),
            ],
        );
        let got = sh(
            &d,
            bin,
            &[
                "exec",
                &format!("roam{i}"),
                "busybox",
                "wget",
                "-qO-",
                &format!("http://web{i}/"),
            ],
        );
        assert_eq!(got.trim(), "hello", "{bin}");
        let insp = d.get_json(&format!("/containers/roam{i}/json"));
        assert!(
            insp["NetworkSettings"]["Networks"][&front]["IPAddress"]
                .as_str()
                .unwrap()
                .len()
                > 6,
            "{insp}"
        );
        sh(
            &d,
            bin,
            &["network", "disconnect", &front, &format!("roam{i}")],
        );
        let out = sh(
            &d,
            bin,
            &["exec", &format!("roam{i}"), "busybox", "ip", "-o", "link"],
        );
        assert!(!out.contains("eth1"), "{bin}: {out}");
        // container:NAME shares web's namespace
        let got = sh(
            &d,
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &format!("container:web{i}"),
                "bb",
                "busybox",
                "wget",
                "-qO-",
                "http://127.0.0.1/",
            ],
        );
        assert_eq!(got.trim(), "hello", "{bin}");
        // stats count the traffic on its interface
        let st = d.get_json(&format!(
            "/containers/web{i}/stats?stream=false&one-shot=true"
        ));
        assert!(
            st["networks"]["eth0"]["tx_bytes"].as_u64().unwrap_or(0) > 0,
            "{bin}: {}",
            st["networks"]
        );
        // network inspect lists the running containers
        let n = d.get_json(&format!("/networks/{front}"));
        assert_eq!(n["Containers"].as_object().unwrap().len(), 1, "{n}");
        assert_eq!(n["Internal"], false);
        assert_eq!(d.get_json(&format!("/networks/{back}"))["Internal"], true);
        let ls = sh(&d, bin, &["network", "ls", "--format", "{{.Name}}"]);
        for want in ["bridge", "host", "none", front.as_str(), back.as_str()] {
            assert!(ls.lines().any(|l| l == want), "{bin}: {ls}");
        }
        sh(
            &d,
            bin,
            &["rm", "-f", &format!("web{i}"), &format!("roam{i}")],
        );
        sh(&d, bin, &["network", "rm", &front, &back]);
    }
    no_stale_links(&d, &before);
    let ns = std::fs::read_dir(d.dir.path().join("exec/netns"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(ns, 0, "no namespace pinned after the containers are gone");
}

#[test]
fn published_ports() {
    let _serial = serial();
    let Some(d) = daemon_with_busybox("published_ports") else {
        return;
    };
    let before = links();
    let gateway = format!("{}.1", d.bridge_prefix());
    for bin in clis() {
        let (p1, p2) = (free_port(), free_port());
        web(
            &d,
            &bin,
            &[
                "-p",
                &format!("{p1}:80"),
                "-p",
                &format!("127.0.0.1:{p2}:80"),
                "-p",
                "80",
                "--expose",
                "81",
                "-P",
            ],
            "pub",
            "published",
        );
        // from 127.0.0.1, from the host's own bridge address, on the loopback-only one
        assert_eq!(
            get(&format!("127.0.0.1:{p1}")).as_deref(),
            Some("published"),
            "{bin}"
        );
        assert_eq!(
            get(&format!("{gateway}:{p1}")).as_deref(),
            Some("published"),
            "{bin}"
        );
        assert_eq!(
            get(&format!("127.0.0.1:{p2}")).as_deref(),
            Some("published"),
            "{bin}"
        );
        assert_eq!(
            get(&format!("{gateway}:{p2}")),
            None,
            "{bin}: bound to 127.0.0.1 only"
        );
        // `port` lists them, the ephemeral one included
        let ports = sh(&d, &bin, &["port", "pub"]);
        assert!(
            ports.contains(&format!("80/tcp -> 0.0.0.0:{p1}")),
            "{bin}: {ports}"
        );
        assert!(
            ports.contains(&format!("80/tcp -> 127.0.0.1:{p2}")),
            "{bin}: {ports}"
        );
        assert!(
            ports.contains("81/tcp -> 0.0.0.0:"),
            "{bin}: -P publishes EXPOSE: {ports}"
        );
        let eph: u16 = ports
            .lines()
            .filter(|l| l.starts_with("80/tcp -> 0.0.0.0:") && !l.ends_with(&format!(":{p1}")))
            .map(|l| l.rsplit(':').next().unwrap().parse().unwrap())
            .next()
            .unwrap_or_else(|| panic!("{bin}: no ephemeral port in {ports}"));
        assert_eq!(
            get(&format!("127.0.0.1:{eph}")).as_deref(),
            Some("published"),
            "{bin}"
        );
        let one = sh(&d, &bin, &["port", "pub", "80/tcp"]);
        assert!(
            one.lines().any(|l| l == format!("127.0.0.1:{p2}")),
            "{bin}: {one}"
        );
        let ps = sh(&d, &bin, &["ps", "--format", "{{.Ports}}"]);
        assert!(ps.contains(&format!("0.0.0.0:{p1}->80/tcp")), "{bin}: {ps}");
        assert!(
            table(&d).contains(&format!("dport {p1} dnat ip to")),
            "{bin}"
        );
        // the port is taken: by the container for another container, by us for others
        let out = d.cli(
            &bin,
            &[
                "run",
                "-d",
                "--name",
                "again",
                "-p",
                &format!("{p1}:80"),
                "bb",
                "sleep",
                "60",
            ],
        );
        assert!(!out.status.success(), "{bin}");
        assert!(
            stderr(&out).contains(&format!(
                "Bind for 0.0.0.0:{p1} failed: port is already allocated"
            )),
            "{bin}: {}",
            stderr(&out)
        );
        assert_eq!(
            d.get_json("/containers/again/json")["State"]["Running"],
            false
        );
        assert!(
            std::net::TcpListener::bind(("0.0.0.0", p1)).is_err(),
            "{bin}: the host port is held"
        );
        sh(&d, &bin, &["rm", "-f", "pub", "again"]);
        // gone with the container: the rules and the held port
        assert!(!table(&d).contains("dnat ip to"), "{bin}: {}", table(&d));
        assert!(
            std::net::TcpListener::bind(("0.0.0.0", p1)).is_ok(),
            "{bin}: the host port is free again"
        );
        // a port some other program holds: a clear error, nothing left half-started
        let busy = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let bp = busy.local_addr().unwrap().port();
        let out = d.cli(
            &bin,
            &[
                "run",
                "-d",
                "--name",
                "busy",
                "-p",
                &format!("{bp}:80"),
                "bb",
                "sleep",
                "60",
            ],
        );
        assert!(!out.status.success(), "{bin}");
        assert!(
            stderr(&out).contains("address already in use"),
            "{bin}: {}",
            stderr(&out)
        );
        let st = d.get_json("/containers/busy/json");
        assert_eq!(st["State"]["Running"], false, "{bin}");
        assert_eq!(st["NetworkSettings"]["IPAddress"], "", "{bin}");
        sh(&d, &bin, &["rm", "-f", "busy"]);
    }
    // UDP: an echo server (a static program the test builds) behind -p .../udp
    if have("gcc") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("udpecho.c"), UDP_ECHO).unwrap();
        let built = std::process::Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(dir.path().join("udpecho"))
            .arg(dir.path().join("udpecho.c"))
            .status()
            .unwrap();
        assert!(built.success());
        let p = free_port();
        for bin in clis() {
            sh(
                &d,
                &bin,
                &[
                    "run",
                    "-d",
                    "--name",
                    "udp",
                    "-v",
                    &format!("{}:/t:ro", dir.path().display()),
                    "-p",
                    &format!("127.0.0.1:{p}:9999/udp"),
                    "bb",
                    "/t/udpecho",
                    "9999",
                ],
            );
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .unwrap();
            let mut got = None;
            for _ in 0..10 {
                s.send_to(b"hello-udp", ("127.0.0.1", p)).unwrap();
                let mut buf = [0u8; 64];
                if let Ok((n, _)) = s.recv_from(&mut buf) {
                    got = Some(buf[..n].to_vec());
                    break;
                }
            }
            assert_eq!(got.as_deref(), Some(&b"hello-udp"[..]), "{bin}");
            let ports = sh(&d, &bin, &["port", "udp"]);
            assert!(
                ports.contains(&format!("9999/udp -> 127.0.0.1:{p}")),
                "{bin}: {ports}"
            );
            sh(&d, &bin, &["rm", "-f", "udp"]);
        }
    }
    no_stale_links(&d, &before);
}

/// A UDP echo server, built static by the test (busybox has none).
const UDP_ECHO: &str = r#"
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(atoi(argv[1]));
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    char buf[512];
    for (;;) {
        struct sockaddr_in p;
        socklen_t l = sizeof p;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&p, &l);
        if (n > 0) sendto(s, buf, n, 0, (struct sockaddr *)&p, l);
    }
}
"#;

#[test]
fn bad_network_input() {
    let _serial = serial();
    let Some(d) = daemon_with_busybox("bad_network_input") else {
        return;
    };
    ok(d.berth(&["network", "create", "--subnet", "10.215.1.0/24", "taken"]));
    let body = br#"{"Name": "overlap", "IPAM": {"Config": [{"Subnet": "10.215.1.128/25"}]}}"#;
    let r = d.request("POST", "/networks/create", Some(body));
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("Pool overlaps"), "{}", r.text());
    let r = d.request("POST", "/networks/create", Some(br#"{"Name": "taken"}"#));
    assert_eq!(r.status, 409, "{}", r.text());
    let r = d.request(
        "POST",
        "/networks/create",
        Some(br#"{"Name": "x", "IPAM": {"Config": [{"Subnet": "10.215.2.5/24"}]}}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(d.request("GET", "/networks/nope", None).status, 404);
    assert_eq!(d.request("DELETE", "/networks/bridge", None).status, 403);
    for bin in clis() {
        // (--pull never: the docker CLI pulls on any 404 from create, as with Docker)
        let out = d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--pull",
                "never",
                "--network",
                "nope",
                "bb",
                "true",
            ],
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("network nope not found"),
            "{bin}: {}",
            stderr(&out)
        );
        let out = d.cli(&bin, &["run", "--rm", "--ip", "10.1.1.1", "bb", "true"]);
        assert!(
            stderr(&out)
                .contains("user specified IP address is supported on user defined networks only"),
            "{bin}: {}",
            stderr(&out)
        );
        let out = d.cli(
            &bin,
            &["network", "create", "--subnet", "10.215.1.0/26", "dup"],
        );
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("Pool overlaps with other one on this address space"),
            "{bin}: {}",
            stderr(&out)
        );
        // in use: 409 with Docker's words
        sh(
            &d,
            &bin,
            &[
                "run",
                "-d",
                "--name",
                "user",
                "--network",
                "taken",
                "--ip",
                "10.215.1.50",
                "bb",
                "sleep",
                "60",
            ],
        );
        let ip = d.get_json("/containers/user/json")["NetworkSettings"]["Networks"]["taken"]
            ["IPAddress"]
            .clone();
        assert_eq!(ip, "10.215.1.50");
        let out = d.cli(&bin, &["network", "rm", "taken"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("has active endpoints"),
            "{bin}: {}",
            stderr(&out)
        );
        sh(&d, &bin, &["rm", "-f", "user"]);
        // bridge options berth does not carry out are refused, nothing is made
        for opt in [
            "com.docker.network.bridge.enable_icc=false",
            "com.docker.network.bridge.host_binding_ipv4=127.0.0.1",
        ] {
            let out = d.cli(&bin, &["network", "create", "-o", opt, "unsupported"]);
            assert!(!out.status.success(), "{bin} {opt}");
            assert!(
                stderr(&out).contains("is not supported"),
                "{bin}: {}",
                stderr(&out)
            );
        }
        assert_eq!(d.request("GET", "/networks/unsupported", None).status, 404);
    }
    assert_eq!(d.request("DELETE", "/networks/taken", None).status, 204);
    assert_eq!(d.request("DELETE", "/networks/taken", None).status, 404);
}

/// A resolver on 127.0.0.1:53 for the test: every A question gets 127.0.0.1.
fn fake_upstream() -> Option<std::thread::JoinHandle<()>> {
    let s = UdpSocket::bind("127.0.0.77:53").ok()?;
    Some(std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            let mut end = 12;
            while end < n && q[end] != 0 {
                end += q[end] as usize + 1;
            }
            end += 5;
            if end > n {
                continue;
            }
            let mut r = q[..end].to_vec();
            r[2] = 0x81;
            r[3] = 0x80;
            r[6] = 0;
            r[7] = 1;
            r[10] = 0;
            r[11] = 0;
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
            if s.send_to(&r, from).is_err() || q.ends_with(b"\x04stop\x00\x00\x01\x00\x01") {
                return;
            }
        }
    }))
}

#[test]
fn other_names_go_to_the_daemons_resolvers_and_a_crash_is_swept() {
    let _serial = serial();
    if skip_unless_root("other_names_go_to_the_daemons_resolvers_and_a_crash_is_swept") {
        return;
    }
    let Some(_upstream) = fake_upstream() else {
        eprintln!("skipping: 127.0.0.77:53 is taken");
        return;
    };
    let mut d = Daemon::start_with(&["--dns", "127.0.0.77"]);
    d.import(&busybox_tar(), "bb:latest");
    let before = links();
    ok(d.berth(&["network", "create", "fwd"]));
    // busybox nslookup shows the answer (its exit afterwards is not ours to check)
    let out = d.berth(&[
        "run",
        "--rm",
        "--network",
        "fwd",
        "bb",
        "busybox",
        "nslookup",
        "anything.example",
    ]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("Address: 127.0.0.1"),
        "forwarded to the daemon's resolver: {text}"
    );
    // a crash: berthd and the container killed; the next start sweeps what they left
    let p = free_port();
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "left",
        "--network",
        "fwd",
        "-p",
        &format!("{p}:80"),
        "bb",
        "sleep",
        "600",
    ]));
    // another daemon starting on this host sweeps only its own links
    let veths = |l: &BTreeSet<String>| l.iter().filter(|x| x.starts_with("bv")).count();
    let before_other = veths(&links());
    assert!(before_other >= 1);
    let other = Daemon::start();
    assert_eq!(
        veths(&links()),
        before_other,
        "another daemon removed our veth"
    );
    drop(other);
    let pid = d.get_json("/containers/left/json")["State"]["Pid"]
        .as_i64()
        .unwrap() as i32;
    let shims = d.shims();
    // SAFETY: kill(2) on this test's daemon, its shims and its container
    unsafe {
        libc::kill(d.pid(), libc::SIGKILL);
        for (s, _) in &shims {
            libc::kill(*s, libc::SIGKILL);
        }
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = d.child.take().map(|mut c| c.wait());
    assert!(
        links().iter().any(|l| l.starts_with("bv")),
        "the veth is there before the sweep"
    );
    d.spawn();
    assert_eq!(
        d.get_json("/containers/left/json")["State"]["Running"],
        false
    );
    assert!(!table(&d).contains(&format!("dport {p} ")), "{}", table(&d));
    let ns = std::fs::read_dir(d.dir.path().join("exec/netns"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(ns, 0, "stale namespaces swept");
    let id = d.get_json("/containers/left/json")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .flat_map(|e| {
            std::fs::read_dir(e.path().join("berth"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| id.starts_with(&*e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    assert!(
        cgroups.is_empty(),
        "the dead container's cgroups are removed: {cgroups:?}"
    );
    ok(d.berth(&["rm", "-f", "left"]));
    ok(d.berth(&["network", "rm", "fwd"]));
    no_stale_links(&d, &before);
    // stop the fake resolver
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = s.send_to(
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04stop\x00\x00\x01\x00\x01",
        "127.0.0.77:53",
    );
}

#[test]
fn published_ports_through_iptables() {
    let _serial = serial();
    if skip_unless_root("published_ports_through_iptables") {
        return;
    }
    if !have("iptables-restore") {
        eprintln!("skipping: iptables is needed");
        return;
    }
    let tables_before = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // the iptables tables iptables-nft makes for berthd's chains go at the end, also when
    // the test fails, if there were none before
    struct Tables(String);
    impl Drop for Tables {
        fn drop(&mut self) {
            for t in ["nat", "filter"] {
                if !self.0.contains(&format!("table ip {t}\n")) {
                    let _ = std::process::Command::new("nft")
                        .args(["delete", "table", "ip", t])
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
    }
    let _tables = Tables(tables_before);
    let mut d = Daemon::start_with(&["--firewall-backend", "iptables"]);
    d.import(&busybox_tar(), "bb:latest");
    let chains = format!("BERTH-{}", d.bridge().to_uppercase());
    let p = free_port();
    web(
        &d,
        berth_bin(),
        &["-p", &format!("{p}:80")],
        "ipt",
        "via-iptables",
    );
    assert_eq!(
        get(&format!("127.0.0.1:{p}")).as_deref(),
        Some("via-iptables")
    );
    let nat = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout).into_owned();
    assert!(
        nat.contains(&format!(
            "-A {chains}-PORTS -p tcp -m tcp --dport {p} -j DNAT"
        )),
        "{nat}"
    );
    assert!(
        nat.contains(&format!("-A PREROUTING -j {chains}-PRE")),
        "{nat}"
    );
    ok(d.berth(&["rm", "-f", "ipt"]));
    assert_eq!(get(&format!("127.0.0.1:{p}")), None);
    d.stop();
    // berthd's chains and jumps are gone with it
    let all = std::process::Command::new("iptables-save")
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&all.stdout).into_owned();
    assert!(!all.contains(&chains), "{all}");
}

/// IPv6 on user networks, through both CLIs: a subnet with a range and gateway (or a
/// unique local one of its own), fixed and allocated addresses, IPv6 between containers
/// by address and by name (AAAA), connect with `--ip6` to a running container, what
/// inspect says, and the refusals.
#[test]
fn ipv6_networks() {
    let _serial = serial();
    let Some(d) = daemon_with_busybox("ipv6_networks") else {
        return;
    };
    let before = links();
    for (k, bin) in clis().iter().enumerate() {
        // (a group of 0 would be written shorter)
        let i = k + 1;
        let (n6, subnet) = (format!("six{i}"), format!("2001:db8:{i}::/64"));
        let range = format!("2001:db8:{i}::/96");
        let gw = format!("2001:db8:{i}::ffff");
        sh(
            &d,
            bin,
            &[
                "network",
                "create",
                "--ipv6",
                "--subnet",
                &subnet,
                "--ip-range",
                &range,
                "--gateway",
                &gw,
                &n6,
            ],
        );
        let net = d.get_json(&format!("/networks/{n6}"));
        assert_eq!(net["EnableIPv6"], true, "{bin}: {net}");
        let configs = net["IPAM"]["Config"].as_array().unwrap().clone();
        assert!(
            configs.iter().any(|c| c["Subnet"] == subnet.as_str()
                && c["Gateway"] == gw.as_str()
                && c["IPRange"] == range.as_str()),
            "{bin}: {net}"
        );
        // an IPv4 subnet comes from the pools beside it
        assert!(configs
            .iter()
            .any(|c| c["Subnet"].as_str().unwrap().contains('.')));
        let fixed = format!("2001:db8:{i}::f00d");
        sh(
            &d,
            bin,
            &[
                "run",
                "-d",
                "--name",
                "six-a",
                "--network",
                &n6,
                "--ip6",
                &fixed,
                "bb",
                "sleep",
                "300",
            ],
        );
        let c = d.get_json("/containers/six-a/json");
        let ep = &c["NetworkSettings"]["Networks"][&n6];
        assert_eq!(ep["GlobalIPv6Address"], fixed.as_str(), "{bin}: {ep}");
        assert_eq!(ep["GlobalIPv6PrefixLen"], 64);
        assert_eq!(ep["IPv6Gateway"], gw.as_str());
        assert_eq!(ep["IPAMConfig"]["IPv6Address"], fixed.as_str());
        // inside: the address, the default route through the gateway, no waiting for
        // duplicate address detection
        let inside = sh(
            &d,
            bin,
            &[
                "exec",
                "six-a",
                "sh",
                "-c",
                "ip -6 addr show eth0; ip -6 route",
            ],
        );
        assert!(
            inside.contains(&format!("inet6 {fixed}/64")),
            "{bin}: {inside}"
        );
        assert!(
            !inside.contains(&format!("{fixed}/64 scope global tentative")),
            "{bin}: {inside}"
        );
        assert!(
            inside.contains(&format!("default via {gw} dev eth0")),
            "{bin}: {inside}"
        );
        // another container: an address from the range; reaches the first by address
        // and by name (the network's DNS answers AAAA)
        let out = sh(
            &d,
            bin,
            &[
                "run", "--rm", "--network", &n6, "bb", "sh", "-c",
                &format!("ip -6 addr show eth0 | grep global; ping -6 -c1 -W3 {fixed} >/dev/null && echo by-address; ping -6 -c1 -W3 six-a >/dev/null && echo by-name; nslookup -type=aaaa six-a"),
            ],
        );
        assert!(
            out.contains(&format!("inet6 2001:db8:{i}::1/64")),
            "{bin}: {out}"
        );
        assert!(out.contains("by-address\nby-name\n"), "{bin}: {out}");
        assert!(out.contains(&format!("Address: {fixed}")), "{bin}: {out}");
        // the network lists it with its IPv6 address
        let net = d.get_json(&format!("/networks/{n6}"));
        let listed = net["Containers"][c["Id"].as_str().unwrap()]["IPv6Address"].clone();
        assert_eq!(listed, format!("{fixed}/64").as_str(), "{bin}: {net}");
        // a running container connected with --ip6 (a second interface), then
        // disconnected
        let plain = format!("plain{i}");
        sh(&d, bin, &["network", "create", &plain]);
        sh(
            &d,
            bin,
            &[
                "run",
                "-d",
                "--name",
                "six-b",
                "--network",
                &plain,
                "bb",
                "sleep",
                "300",
            ],
        );
        let other = format!("2001:db8:{i}::beef");
        sh(
            &d,
            bin,
            &["network", "connect", "--ip6", &other, &n6, "six-b"],
        );
        let got = sh(
            &d,
            bin,
            &[
                "exec", "six-b", "busybox", "ip", "-6", "addr", "show", "eth1",
            ],
        );
        assert!(got.contains(&format!("inet6 {other}/64")), "{bin}: {got}");
        let ping = sh(
            &d,
            bin,
            &[
                "exec", "six-a", "busybox", "ping", "-6", "-c1", "-W3", &other,
            ],
        );
        assert!(ping.contains("1 packets received"), "{bin}: {ping}");
        // taken addresses and addresses outside the subnet are refused
        let taken = d.cli(
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &n6,
                "--ip6",
                &fixed,
                "bb",
                "true",
            ],
        );
        assert!(!taken.status.success());
        assert!(
            stderr(&taken).contains("Address already in use"),
            "{bin}: {}",
            stderr(&taken)
        );
        let outside = d.cli(
            bin,
            &[
                "run",
                "--rm",
                "--network",
                &n6,
                "--ip6",
                "2001:db9::1",
                "bb",
                "true",
            ],
        );
        assert!(!outside.status.success());
        sh(&d, bin, &["network", "disconnect", &n6, "six-b"]);
        let got = sh(&d, bin, &["exec", "six-b", "busybox", "ip", "-6", "addr"]);
        assert!(!got.contains(&other), "{bin}: {got}");
        sh(&d, bin, &["rm", "-f", "six-a", "six-b"]);
        sh(&d, bin, &["network", "rm", &n6, &plain]);
    }
    // --ipv6 without a subnet: a unique local /64 of its own
    sh(&d, berth_bin(), &["network", "create", "--ipv6", "ula"]);
    let net = d.get_json("/networks/ula");
    let v6: Vec<String> = net["IPAM"]["Config"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["Subnet"].as_str())
        .filter(|s| s.contains(':'))
        .map(str::to_string)
        .collect();
    assert_eq!(v6.len(), 1, "{net}");
    assert!(v6[0].starts_with("fd") && v6[0].ends_with("::/64"), "{net}");
    let out = sh(
        &d,
        berth_bin(),
        &[
            "run",
            "--rm",
            "--network",
            "ula",
            "bb",
            "busybox",
            "ip",
            "-6",
            "addr",
            "show",
            "eth0",
        ],
    );
    assert!(
        out.contains(&format!("inet6 {}", v6[0].trim_end_matches(":/64"))),
        "{out}"
    );
    sh(&d, berth_bin(), &["network", "rm", "ula"]);
    // refusals: an IPv6 subnet without --ipv6, an overlapping one, --ip6 on the
    // default bridge or on a network without IPv6
    for bin in clis() {
        let r = d.cli(
            &bin,
            &[
                "network",
                "create",
                "--subnet",
                "2001:db8:99::/64",
                "noipv6",
            ],
        );
        assert!(!r.status.success(), "{bin}");
        assert!(
            stderr(&r).contains("needs IPv6 enabled"),
            "{bin}: {}",
            stderr(&r)
        );
        sh(
            &d,
            &bin,
            &[
                "network",
                "create",
                "--ipv6",
                "--subnet",
                "2001:db8:98::/64",
                "first",
            ],
        );
        let r = d.cli(
            &bin,
            &[
                "network",
                "create",
                "--ipv6",
                "--subnet",
                "2001:db8:98::/80",
                "second",
            ],
        );
        assert!(
            stderr(&r).contains("Pool overlaps"),
            "{bin}: {}",
            stderr(&r)
        );
        sh(&d, &bin, &["network", "create", "v4only"]);
        let r = d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "v4only",
                "--ip6",
                "2001:db8:98::5",
                "bb",
                "true",
            ],
        );
        assert!(!r.status.success(), "{bin}");
        assert!(stderr(&r).contains("has no IPv6"), "{bin}: {}", stderr(&r));
        let r = d.cli(
            &bin,
            &["run", "--rm", "--ip6", "2001:db8:98::5", "bb", "true"],
        );
        assert!(
            stderr(&r)
                .contains("user specified IP address is supported on user defined networks only"),
            "{bin}: {}",
            stderr(&r)
        );
        sh(&d, &bin, &["network", "rm", "first", "v4only"]);
    }
    no_stale_links(&d, &before);
}
