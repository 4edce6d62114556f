#![allow(clippy::unwrap_used)]
//! What real clients rely on and our other tests never took, each through both CLIs
//! (the docker CLI's where it is installed): kill's exit code, `-e NAME` unset, `info`
//! counts, `--network host`'s hostname, log options as given, `--runtime`, `cp` into a
//! stopped container's volume, legacy links, network connect/disconnect of created and
//! running containers, exec's framing, attach with logs.

mod common;
use common::*;

fn inspect(d: &Daemon, name: &str) -> serde_json::Value {
    d.get_json(&format!("/containers/{name}/json"))
}

#[test]
fn kill_exit_code_env_counts_and_hostname() {
    let Some(d) = daemon_with_busybox("kill_exit_code_env_counts_and_hostname") else {
        return;
    };
    for (i, cli) in clis().iter().enumerate() {
        let k = format!("k{i}");
        ok(d.cli(
            cli,
            &[
                "run",
                "-d",
                "--name",
                &k,
                "--network",
                "none",
                "bb",
                "sleep",
                "300",
            ],
        ));
        ok(d.cli(cli, &["kill", &k]));
        // the exit is recorded before kill returns: 137, and wait agrees
        let st = inspect(&d, &k)["State"].clone();
        assert_eq!(
            (st["Status"].as_str(), st["ExitCode"].as_i64()),
            (Some("exited"), Some(137)),
            "{cli}"
        );
        assert_eq!(ok(d.cli(cli, &["wait", &k])).trim(), "137", "{cli}");
        // `-e NAME` with NAME unset in the client's environment: unset in the container
        let out = d
            .command_cli(cli)
            .env_remove("BERTH_UNSET_VAR")
            .env("BERTH_SET_VAR", "yes")
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "-e",
                "BERTH_UNSET_VAR",
                "-e",
                "BERTH_SET_VAR",
                "bb",
                "env",
            ])
            .output()
            .unwrap();
        let env = ok(out);
        assert!(env.contains("BERTH_SET_VAR=yes\n"), "{cli}: {env}");
        assert!(!env.contains("BERTH_UNSET_VAR"), "{cli}: {env}");
        // --network host: the host's name
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let out = ok(d.cli(cli, &["run", "--rm", "--network", "host", "bb", "hostname"]));
        assert_eq!(out.trim(), host, "{cli}");
    }
    // info counts what exited
    let info = d.get_json("/info");
    assert_eq!(info["ContainersStopped"], clis().len(), "{info}");
    assert_eq!(info["ContainersRunning"], 0);
    assert_eq!(info["Containers"], clis().len());
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "up",
        "--network",
        "none",
        "bb",
        "sleep",
        "300",
    ]));
    assert_eq!(d.get_json("/info")["ContainersRunning"], 1);
    ok(d.berth(&["pause", "up"]));
    assert_eq!(d.get_json("/info")["ContainersPaused"], 1);
    ok(d.berth(&["rm", "-f", "up"]));
}

#[test]
fn log_options_and_runtime_as_asked() {
    let Some(d) = daemon_with_busybox("log_options_and_runtime_as_asked") else {
        return;
    };
    for (i, cli) in clis().iter().enumerate() {
        let a = format!("lg{i}");
        ok(d.cli(cli, &["create", "--name", &a, "bb", "true"]));
        assert_eq!(
            inspect(&d, &a)["HostConfig"]["LogConfig"],
            serde_json::json!({"Type": "json-file", "Config": {}}),
            "{cli}"
        );
        // max-file alone is accepted, and shown as given
        let b = format!("mf{i}");
        ok(d.cli(
            cli,
            &[
                "run",
                "--name",
                &b,
                "--network",
                "none",
                "--log-opt",
                "max-file=5",
                "bb",
                "echo",
                "kept",
            ],
        ));
        assert_eq!(
            inspect(&d, &b)["HostConfig"]["LogConfig"]["Config"],
            serde_json::json!({"max-file": "5"})
        );
        assert_eq!(ok(d.cli(cli, &["logs", &b])), "kept\n");
        if have("runc") {
            let r = format!("rc{i}");
            let out = ok(d.cli(
                cli,
                &[
                    "run",
                    "--name",
                    &r,
                    "--runtime",
                    "runc",
                    "--network",
                    "none",
                    "bb",
                    "echo",
                    "by runc",
                ],
            ));
            assert_eq!(out, "by runc\n", "{cli}");
            assert_eq!(inspect(&d, &r)["HostConfig"]["Runtime"], "runc");
        }
    }
}

#[test]
fn cp_reaches_volumes_of_stopped_containers() {
    let Some(d) = daemon_with_busybox("cp_reaches_volumes_of_stopped_containers") else {
        return;
    };
    let src = d.dir.path().join("in.txt");
    std::fs::write(&src, "into the volume\n").unwrap();
    let bind = d.dir.path().join("bound");
    std::fs::create_dir(&bind).unwrap();
    for (i, cli) in clis().iter().enumerate() {
        let c = format!("cp{i}");
        let bind_arg = format!("{}:/b", bind.display());
        ok(d.cli(
            cli,
            &[
                "create",
                "--name",
                &c,
                "--network",
                "none",
                "-v",
                "/vol",
                "-v",
                &bind_arg,
                "bb",
                "cat",
                "/vol/in.txt",
            ],
        ));
        // into a created container's anonymous volume and its bind mount
        ok(d.cli(cli, &["cp", src.to_str().unwrap(), &format!("{c}:/vol/")]));
        ok(d.cli(
            cli,
            &["cp", src.to_str().unwrap(), &format!("{c}:/b/from{i}.txt")],
        ));
        assert_eq!(
            std::fs::read_to_string(bind.join(format!("from{i}.txt"))).unwrap(),
            "into the volume\n"
        );
        assert_eq!(
            ok(d.cli(cli, &["start", "-a", &c])),
            "into the volume\n",
            "{cli}"
        );
        // and out of the stopped one's volume
        let out = d.dir.path().join(format!("out{i}.txt"));
        ok(d.cli(
            cli,
            &["cp", &format!("{c}:/vol/in.txt"), out.to_str().unwrap()],
        ));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "into the volume\n");
    }
    // nothing stays mounted below the data root
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = d.data_root().display().to_string();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains(&root) && l.contains("/vol"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn legacy_links_and_network_links() {
    let Some(d) = daemon_with_busybox("legacy_links_and_network_links") else {
        return;
    };
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "target",
        "-e",
        "SECRET=42",
        "--expose",
        "80",
        "bb",
        "sleep",
        "300",
    ]));
    let ip = inspect(&d, "target")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    for (i, cli) in clis().iter().enumerate() {
        let c = format!("linker{i}");
        ok(d.cli(
            cli,
            &[
                "run",
                "-d",
                "--name",
                &c,
                "--link",
                "target:db",
                "bb",
                "sleep",
                "300",
            ],
        ));
        let env = ok(d.cli(cli, &["exec", &c, "env"]));
        assert!(env.contains(&format!("DB_NAME=/{c}/db\n")), "{cli}: {env}");
        assert!(env.contains("DB_ENV_SECRET=42\n"), "{env}");
        assert!(env.contains(&format!("DB_PORT=tcp://{ip}:80\n")), "{env}");
        let hosts = ok(d.cli(cli, &["exec", &c, "cat", "/etc/hosts"]));
        assert!(hosts.contains(&format!("{ip}\tdb target")), "{hosts}");
        let ps = d.get_json("/containers/json");
        let names = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["Names"][0] == "/target")
            .unwrap()["Names"]
            .clone();
        assert!(
            names
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == &format!("/{c}/db")),
            "{names}"
        );
        ok(d.cli(cli, &["rm", "--link", &format!("{c}/db")]));
        let ps = d.get_json("/containers/json");
        let names = ps
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["Names"][0] == "/target")
            .unwrap()["Names"]
            .clone();
        assert_eq!(names, serde_json::json!(["/target"]), "{cli}");
        assert_eq!(ps.as_array().unwrap().len(), 2 + i, "both containers stay");
    }
    // a link to a container that is not there is refused at create
    for cli in clis() {
        let out = d.cli(&cli, &["create", "--link", "nosuch:x", "bb", "true"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("could not get container for nosuch"),
            "{cli}: {}",
            stderr(&out)
        );
    }
    // network-scoped: the alias resolves for the linking container only
    ok(d.berth(&["network", "create", "ln"]));
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "up",
        "--network",
        "ln",
        "bb",
        "sleep",
        "300",
    ]));
    ok(d.berth(&[
        "create",
        "--name",
        "down",
        "--network",
        "ln",
        "bb",
        "sleep",
        "300",
    ]));
    for cli in clis() {
        let _ = d.cli(&cli, &["network", "disconnect", "ln", "down"]);
        ok(d.cli(
            &cli,
            &["network", "connect", "--link", "up:upstream", "ln", "down"],
        ));
    }
    assert_eq!(
        inspect(&d, "down")["NetworkSettings"]["Networks"]["ln"]["Links"],
        serde_json::json!(["up:upstream"])
    );
    ok(d.berth(&["start", "down"]));
    let out = ok(d.berth(&["exec", "down", "busybox", "nslookup", "upstream"]));
    assert!(out.contains("Address"), "{out}");
    d.remove_containers();
}

#[test]
fn connect_and_disconnect_created_and_running() {
    let Some(d) = daemon_with_busybox("connect_and_disconnect_created_and_running") else {
        return;
    };
    ok(d.berth(&["network", "create", "--subnet", "10.219.7.0/24", "n1"]));
    ok(d.berth(&["network", "create", "n2"]));
    for (i, cli) in clis().iter().enumerate() {
        let c = format!("cc{i}");
        // created on n1, disconnected from it (its mode stays), connected with settings
        ok(d.cli(
            cli,
            &[
                "create",
                "--name",
                &c,
                "--network",
                "n1",
                "bb",
                "sleep",
                "300",
            ],
        ));
        ok(d.cli(cli, &["network", "disconnect", "n1", &c]));
        assert_eq!(inspect(&d, &c)["HostConfig"]["NetworkMode"], "n1", "{cli}");
        let ip = format!("10.219.7.{}", 50 + i);
        ok(d.cli(
            cli,
            &[
                "network", "connect", "--alias", "svc", "--ip", &ip, "n1", &c,
            ],
        ));
        ok(d.cli(cli, &["start", &c]));
        let net = inspect(&d, &c)["NetworkSettings"]["Networks"]["n1"].clone();
        assert_eq!(net["IPAddress"], ip, "{cli}: {net}");
        assert_eq!(net["Aliases"], serde_json::json!(["svc"]));
        // running: a second network, then off the first
        ok(d.cli(cli, &["network", "connect", "n2", &c]));
        ok(d.cli(cli, &["network", "disconnect", "n1", &c]));
        let nets = inspect(&d, &c)["NetworkSettings"]["Networks"].clone();
        assert!(
            nets.get("n2").is_some() && nets.get("n1").is_none(),
            "{nets}"
        );
        let addrs = ok(d.cli(cli, &["exec", &c, "busybox", "ip", "-4", "addr"]));
        assert!(!addrs.contains(&ip), "{addrs}");
    }
    // a MAC address, as asked
    let mut mac_clis = vec![berth_bin().to_string()];
    if have("docker") {
        mac_clis.push("docker".into());
    }
    for (i, cli) in mac_clis.iter().enumerate() {
        let c = format!("mac{i}");
        let mac = format!("02:42:ac:11:00:1{i}");
        ok(d.cli(
            cli,
            &[
                "run",
                "-d",
                "--name",
                &c,
                "--network",
                "n2",
                "--mac-address",
                &mac,
                "bb",
                "sleep",
                "300",
            ],
        ));
        assert_eq!(
            inspect(&d, &c)["NetworkSettings"]["Networks"]["n2"]["MacAddress"],
            mac,
            "{cli}"
        );
        let link = ok(d.cli(cli, &["exec", &c, "cat", "/sys/class/net/eth0/address"]));
        assert_eq!(link.trim(), mac);
    }
    d.remove_containers();
}

#[test]
fn exec_framing_and_attach_logs() {
    let Some(d) = daemon_with_busybox("exec_framing_and_attach_logs") else {
        return;
    };
    ok(d.berth(&[
        "run",
        "-d",
        "--name",
        "ex",
        "--network",
        "none",
        "bb",
        "sleep",
        "300",
    ]));
    // the docker CLI's exec -t: a raw stream (a tty's \r\n, no frame headers)
    if have("docker") {
        let out = d.docker(&["exec", "-t", "ex", "echo", "hi"]);
        assert_eq!(out.stdout, b"hi\r\n");
    }
    // a tty exec started with Tty false (docker-py) reads frames
    let body = serde_json::json!({"Cmd": ["echo", "-n", "yay"], "Tty": true, "AttachStdout": true})
        .to_string();
    let r = d.request("POST", "/containers/ex/exec", Some(body.as_bytes()));
    let id = r.json()["Id"].as_str().unwrap().to_string();
    let start = br#"{"Tty": false, "Detach": false}"#;
    let req = format!(
        "POST /exec/{id}/start HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: {}\r\n\r\n{}",
        start.len(),
        String::from_utf8_lossy(start)
    );
    let raw = raw_exchange(&d.socket, req.as_bytes());
    let text = String::from_utf8_lossy(&raw);
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(text.contains("multiplexed-stream"), "{text}");
    assert_eq!(&raw[at..at + 8], &[1, 0, 0, 0, 0, 0, 0, 3], "{text}");
    assert_eq!(&raw[at + 8..at + 11], b"yay");
    // attach with logs=1&stream=0 to an exited container returns its logs
    ok(d.berth(&[
        "run",
        "--name",
        "done",
        "--network",
        "none",
        "bb",
        "echo",
        "logged",
    ]));
    let raw = raw_exchange(
        &d.socket,
        b"POST /containers/done/attach?logs=1&stream=0&stdout=1&stderr=1 HTTP/1.1\r\nHost: api\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
    );
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(&raw[at..], b"\x01\0\0\0\0\0\0\x07logged\n");
    ok(d.berth(&["rm", "-f", "ex", "done"]));
}
