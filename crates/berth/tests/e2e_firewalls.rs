#![allow(clippy::unwrap_used)]
//! berth beside the host's other firewalls: dockerd's iptables `FORWARD DROP` policy
//! (iptables-nft and iptables-legacy) and firewalld, each in a network namespace and,
//! for firewalld, on a system bus of the test's own.

mod common;
use common::*;

/// Two web servers answering `hello`: `srv` on the network `n1`, `srv0` on the default
/// bridge with its port 80 published on 8080.
fn serve_hello(d: &Daemon) {
    let serve = "mkdir /w && echo hello > /w/index.html && exec httpd -f -p 80 -h /w";
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "n1",
        "bb",
        "sh",
        "-c",
        serve,
    ]));
    ok(d.berth(&[
        "run", "-d", "--name", "srv0", "-p", "8080:80", "bb", "sh", "-c", serve,
    ]));
}

/// What `url` answers to a container on the network `net`, trimmed.
fn wget(d: &Daemon, net: &str, url: &str) -> String {
    // (busybox's wget -T crashes here: `timeout` bounds it instead)
    let args = [
        "run",
        "--rm",
        "--network",
        net,
        "bb",
        "busybox",
        "timeout",
        "3",
        "busybox",
        "wget",
        "-qO-",
        url,
    ];
    stdout(&d.berth(&args)).trim().to_string()
}

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    d.get_json(&format!("/containers/{name}/json"))
}

#[test]
fn bridges_work_beside_a_forward_drop_policy() {
    if skip_unless_root("bridges_work_beside_a_forward_drop_policy") {
        return;
    }
    for prog in ["iptables-nft", "iptables-legacy"] {
        if !have(prog) {
            eprintln!("skipping {prog}: not installed (apt-get install iptables)");
            continue;
        }
        // dockerd's FORWARD DROP, before berthd starts (nft) or after (legacy: berthd
        // notices the new table and puts its accepts there)
        let ns = Netns::new("fw");
        let before = prog == "iptables-nft";
        let drop_policy = || {
            let o = ns.run(&[prog, "-P", "FORWARD", "DROP"]);
            assert!(o.status.success(), "{}", stderr(&o));
        };
        if before {
            drop_policy();
        }
        // nsenter rather than `ip netns exec`, which gives the command a /sys without
        // the cgroup hierarchies
        let netns = format!("--net=/run/netns/{}", ns.0);
        let mut d = Daemon::start_wrapped_with(&["nsenter", &netns], &["--ip-forward", "true"]);
        d.import(&busybox_tar(), "bb:latest");
        ok(d.berth(&["network", "create", "n1"]));
        serve_hello(&d);
        if !before {
            drop_policy();
        }
        let ip0 = inspect(&d, "srv0")["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string();
        let url0 = format!("http://{ip0}/");
        // berthd's watch runs every 10 s
        let wait = if before { 5 } else { 25 };
        until(
            wait,
            &format!("{prog}: a user network's DNS and traffic"),
            || wget(&d, "n1", "http://srv/") == "hello",
        );
        assert_eq!(
            wget(&d, "bridge", &url0),
            "hello",
            "{prog}: the default bridge"
        );
        let published = ns.run(&[
            "timeout",
            "3",
            "busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/",
        ]);
        assert_eq!(
            stdout(&published).trim(),
            "hello",
            "{prog}: a published port"
        );
        let rules = stdout(&ns.run(&[prog, "-S"]));
        assert!(rules.contains("-A FORWARD -j BERTH-"), "{prog}: {rules}");
        ok(d.berth(&["rm", "-f", "srv", "srv0"]));
        assert!(d.stop().unwrap().success());
        // berthd's chain goes with its rules
        let rules = stdout(&ns.run(&[prog, "-S"]));
        assert!(!rules.contains("BERTH"), "{prog}: left {rules}");
        assert!(
            rules.contains("-P FORWARD DROP"),
            "{prog}: the host's policy stays"
        );
    }
}

/// A system bus of the test's own: a dbus-daemon listening on `dir/bus`, its address.
fn own_bus(dir: &std::path::Path) -> (KillOnDrop, String) {
    let sock = dir.join("bus");
    let conf = dir.join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow send_type="signal"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
            sock.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--nopidfile"])
        .stderr(std::fs::File::create(dir.join("bus.log")).unwrap())
        .spawn()
        .unwrap();
    let bus = KillOnDrop(child);
    until(10, "the test's bus listening", || sock.exists());
    (bus, format!("unix:path={}", sock.display()))
}

/// firewalld (on a bus and in a network namespace of the test's own, with its nftables
/// backend and with its iptables one) rejects what enters from an interface of no zone:
/// berthd binds its bridges to the trusted zone (DNS to berthd, container to container,
/// container to a host past the namespace, published ports all work), binds them again
/// when firewalld reloads or someone unbinds them, and unbinds them when it stops.
#[test]
fn bridges_work_beside_firewalld() {
    if skip_unless_root("bridges_work_beside_firewalld") {
        return;
    }
    for prog in ["firewalld", "firewall-cmd", "dbus-daemon"] {
        if !have(prog) {
            eprintln!("skipping: {prog} is not installed (apt-get install firewalld dbus)");
            return;
        }
    }
    for backend in ["nftables", "iptables"] {
        beside_firewalld(backend);
    }
}

fn beside_firewalld(backend: &str) {
    let dir = tempfile::Builder::new()
        .prefix("berth-fwd-")
        .tempdir_in("/tmp")
        .unwrap();
    let ns = Netns::new("fwd");
    // a host past the namespace: another namespace on a veth, serving a page
    let far = Netns::new("far");
    let sh = |n: &Netns, cmd: &str| {
        let o = n.run(&["sh", "-c", cmd]);
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
    };
    sh(
        &ns,
        &format!(
            "ip link add eth1 type veth peer name eth1p && ip link set eth1p netns {} && ip addr add 198.18.7.1/30 dev eth1 && ip link set eth1 up",
            far.0
        ),
    );
    sh(
        &far,
        "ip addr add 198.18.7.2/30 dev eth1p && ip link set eth1p up",
    );
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "far\n").unwrap();
    let _far_web = KillOnDrop(
        std::process::Command::new("ip")
            .args([
                "netns", "exec", &far.0, "busybox", "httpd", "-f", "-p", "8081",
            ])
            .arg("-h")
            .arg(&www)
            .spawn()
            .unwrap(),
    );

    let (_bus, addr) = own_bus(dir.path());
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(
        etc.join("firewalld.conf"),
        format!("DefaultZone=public\nFirewallBackend={backend}\nCleanupOnExit=yes\n"),
    )
    .unwrap();
    let _firewalld = KillOnDrop(
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.0))
            .args(["firewalld", "--nofork", "--nopid", "--log-target", "file"])
            // its own configuration (the defaults) and log, not the host's
            .arg("--system-config")
            .arg(&etc)
            .arg("--log-file")
            .arg(dir.path().join("firewalld.log"))
            .env("DBUS_SYSTEM_BUS_ADDRESS", &addr)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("firewalld.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let fw = |args: &[&str]| {
        let o = std::process::Command::new("firewall-cmd")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &addr)
            .output()
            .unwrap();
        stdout(&o).trim().to_string()
    };
    until(60, "firewalld running", || fw(&["--state"]) == "running");

    let netns = format!("--net=/run/netns/{}", ns.0);
    let bus_env = format!("DBUS_SYSTEM_BUS_ADDRESS={addr}");
    let mut d = Daemon::start_wrapped_with(
        &["env", &bus_env, "nsenter", &netns],
        &["--ip-forward", "true"],
    );
    d.import(&busybox_tar(), "bb:latest");
    ok(d.berth(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=bfw1",
        "n1",
    ]));
    serve_hello(&d);
    let default_bridge = d.get_json("/networks/bridge")["Options"]
        ["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    let trusted = || fw(&["--zone=trusted", "--list-interfaces"]);
    let both_trusted = || {
        let t = trusted();
        let t: Vec<&str> = t.split_whitespace().collect();
        t.contains(&"bfw1") && t.contains(&default_bridge.as_str())
    };
    assert!(both_trusted(), "trusted zone: {}", trusted());

    let wget = |net: &str, url: &str| wget(&d, net, url);
    let works = || {
        wget("n1", "http://srv/") == "hello"
            && wget("n1", "http://198.18.7.2:8081/") == "far"
            && wget("bridge", "http://198.18.7.2:8081/") == "far"
    };
    assert!(
        works(),
        "{backend}: DNS, container to container and past the host"
    );
    let published = far.run(&[
        "timeout",
        "3",
        "busybox",
        "wget",
        "-qO-",
        "http://198.18.7.1:8080/",
    ]);
    assert_eq!(
        stdout(&published).trim(),
        "hello",
        "{backend}: a published port"
    );

    // the control: unbound, firewalld rejects (tried again when berthd's 10 s check
    // bound it again before the try); that check binds it again
    let mut rejected = false;
    for _ in 0..3 {
        assert_eq!(
            fw(&["--zone=trusted", "--remove-interface=bfw1"]),
            "success"
        );
        // (berth's own accepts in firewalld's iptables FORWARD pass what is forwarded:
        // the name's lookup, to berthd on the bridge, is what firewalld rejects)
        if wget("n1", "http://srv/") != "hello" {
            rejected = true;
            break;
        }
        assert_eq!(
            fw(&["--get-zone-of-interface=bfw1"]),
            "trusted",
            "{backend}: firewalld lets a bridge of no zone through: the test proves nothing"
        );
    }
    assert!(rejected, "{backend}: berthd's check came first three times");
    until(25, "berthd binding its bridge again", || {
        fw(&["--get-zone-of-interface=bfw1"]) == "trusted"
    });
    assert!(works(), "{backend}: after binding again");

    // a reload drops runtime bindings: firewalld's signal has them made again at once
    assert_eq!(fw(&["--reload"]), "success");
    until(5, "berthd binding its bridges after a reload", both_trusted);
    assert!(works(), "{backend}: after a reload");

    // berthd's bindings go with its rules
    ok(d.berth(&["rm", "-f", "srv", "srv0"]));
    ok(d.berth(&["network", "rm", "n1"]));
    until(5, "the removed network's bridge unbound", || {
        !trusted().split_whitespace().any(|i| i == "bfw1")
    });
    assert!(d.stop().unwrap().success());
    assert_eq!(trusted(), "", "{backend}: berthd left its bindings");
    assert_eq!(fw(&["--state"]), "running");
}
