#![allow(clippy::unwrap_used)]
//! The daemon's life: one per data root, pidfile, daemon.json checks, SIGHUP reload,
//! graceful SIGTERM, state kept across restarts, TCP only with TLS (mutual) or an
//! explicit insecure flag.

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn one_daemon_per_data_root_and_clean_shutdown() {
    if skip_unless_root("one_daemon_per_data_root_and_clean_shutdown") {
        return;
    }
    let mut d = Daemon::start();
    let pidfile = d.dir.path().join("berthd.pid");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        d.pid().to_string()
    );
    // a second daemon on the same data root refuses to start
    let out = d
        .command()
        .arg("-H")
        .arg(format!("unix://{}/other.sock", d.dir.path().display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("another berthd is already running on data root"),
        "{err}"
    );
    // images survive a restart
    let id = d.import(&one_file_tar("f", b"keep"), "keep:1");
    let st = d.stop().unwrap();
    assert!(st.success(), "berthd exited with {st}");
    assert!(!d.socket.exists(), "socket removed at shutdown");
    assert!(!pidfile.exists(), "pidfile removed at shutdown");
    d.spawn();
    assert_eq!(d.get_json("/images/keep:1/json")["Id"], id.as_str());
}

#[test]
fn daemon_json_is_checked_and_reloaded() {
    if skip_unless_root("daemon_json_is_checked_and_reloaded") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"log-level": "info", "no-such-option": true}"#).unwrap();
    let out = Command::new(berthd_bin())
        .args(["--config-file", bad.to_str().unwrap(), "--data-root"])
        .arg(dir.path().join("root"))
        .arg("-H")
        .arg(format!("unix://{}/x.sock", dir.path().display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "the following directives don't match any configuration option: no-such-option"
        ),
        "{}",
        stderr(&out)
    );
    std::fs::write(&bad, "{not json").unwrap();
    let out = Command::new(berthd_bin())
        .args(["--config-file", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("unable to parse configuration file"),
        "{}",
        stderr(&out)
    );
    // a flag and the file may not both set a value
    std::fs::write(&bad, r#"{"data-root": "/tmp/x"}"#).unwrap();
    let out = Command::new(berthd_bin())
        .args([
            "--config-file",
            bad.to_str().unwrap(),
            "--data-root",
            "/tmp/y",
        ])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("specified both as a flag and in the configuration file: data-root"),
        "{}",
        stderr(&out)
    );

    // dockerd keys that apply are accepted; labels show in info and reload with SIGHUP
    let cfg = dir.path().join("daemon.json");
    std::fs::write(&cfg, r#"{"labels": ["a=1"], "log-level": "info", "max-concurrent-downloads": 3, "live-restore": true}"#).unwrap();
    let d = Daemon::start_with(&["--config-file", cfg.to_str().unwrap()]);
    assert_eq!(d.get_json("/info")["Labels"], serde_json::json!(["a=1"]));
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(&cfg, r#"{"labels": ["b=2"], "log-level": "debug"}"#).unwrap();
    // SAFETY: signalling our own child
    unsafe {
        libc::kill(d.pid(), libc::SIGHUP);
    }
    let mut ok_reload = false;
    for _ in 0..100 {
        if d.get_json("/info")["Labels"] == serde_json::json!(["b=2"]) {
            ok_reload = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(ok_reload, "labels not reloaded:\n{}", d.log());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let r = d.request(
        "GET",
        &format!("/events?since={since}&until={now}&filters=%7B%22type%22%3A%5B%22daemon%22%5D%7D"),
        None,
    );
    assert!(r.text().contains("\"Action\":\"reload\""), "{}", r.text());
    // debug logging is on now: requests are logged
    d.get_json("/version");
    assert!(d.log().contains("request"), "{}", d.log());
}

#[test]
fn tcp_needs_tls_unless_told_otherwise() {
    if skip_unless_root("tcp_needs_tls_unless_told_otherwise") {
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(berthd_bin())
        .args([
            "--config-file",
            "/dev/null",
            "-H",
            &format!("tcp://127.0.0.1:{port}"),
            "--data-root",
        ])
        .arg(dir.path().join("root"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("without TLS"), "{}", stderr(&out));

    let d = Daemon::start_with(&["-H", &format!("tcp://127.0.0.1:{port}"), "--insecure-tcp"]);
    let host = format!("tcp://127.0.0.1:{port}");
    let o = run_cli(
        berth_bin(),
        &host,
        &["version", "--format", "{{.Server.APIVersion}}"],
        None,
    );
    assert_eq!(ok(o), "1.50\n");
    if have("docker") {
        let o = run_cli("docker", &host, &["info", "--format", "{{.OSType}}"], None);
        assert_eq!(ok(o), "linux\n");
    }
    let info = run_cli(berth_bin(), &host, &["info"], None);
    assert!(
        stderr(&info).contains("without encryption"),
        "{}",
        stderr(&info)
    );
    drop(d);
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as the docker docs make them.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=berth-test-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            "server-cert.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "client.csr",
            "-subj",
            "/CN=client",
        ],
    );
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-extfile",
            "client.ext",
        ],
    );
    // a client from another CA
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rogue-key.pem",
            "-out",
            "rogue.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rogue",
        ],
    );
}

#[test]
fn mutual_tls_on_tcp() {
    if skip_unless_root("mutual_tls_on_tcp") {
        return;
    }
    if !have("openssl") {
        eprintln!("skipping: openssl not installed");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let c = |f: &str| certs.path().join(f).display().to_string();
    let port = free_port();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let d = Daemon::start_with(&[
        "-H",
        &tcp,
        "--tlsverify",
        "--tlscacert",
        &c("ca.pem"),
        "--tlscert",
        &c("server-cert.pem"),
        "--tlskey",
        &c("server-key.pem"),
    ]);
    let _ = &d;
    let tls = [
        "--tlsverify",
        "--tlscacert",
        &c("ca.pem"),
        "--tlscert",
        &c("cert.pem"),
        "--tlskey",
        &c("key.pem"),
    ];
    let mut args: Vec<&str> = tls.to_vec();
    args.extend(["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(ok(run_cli(berth_bin(), &tcp, &args, None)), "1.50\n");
    if have("docker") {
        let mut args: Vec<&str> = tls.to_vec();
        args.extend(["info", "--format", "{{.OSType}}"]);
        assert_eq!(ok(run_cli("docker", &tcp, &args, None)), "linux\n");
    }
    // no client certificate, or one from another CA: refused
    let o = run_cli(
        berth_bin(),
        &tcp,
        &["--tlsverify", "--tlscacert", &c("ca.pem"), "version"],
        None,
    );
    assert!(!o.status.success());
    let o = run_cli(
        berth_bin(),
        &tcp,
        &[
            "--tlsverify",
            "--tlscacert",
            &c("ca.pem"),
            "--tlscert",
            &c("rogue.pem"),
            "--tlskey",
            &c("rogue-key.pem"),
            "version",
        ],
        None,
    );
    assert!(!o.status.success());
    // plain HTTP on the TLS port gets nothing
    let o = run_cli(berth_bin(), &tcp, &["version"], None);
    assert!(!o.status.success());

    // a context keeps copies of the TLS files, and travels as an archive
    let conf = tempfile::tempdir().unwrap();
    let ctx_cli = |bin: &str, args: &[&str]| {
        Command::new(bin)
            .args(args)
            .env("DOCKER_CONFIG", conf.path())
            .env_remove("DOCKER_HOST")
            .env_remove("BERTH_HOST")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_TLS_VERIFY")
            .output()
            .unwrap()
    };
    let endpoint = format!(
        "host={tcp},ca={},cert={},key={}",
        c("ca.pem"),
        c("cert.pem"),
        c("key.pem")
    );
    ok(ctx_cli(
        berth_bin(),
        &["context", "create", "secure", "--docker", &endpoint],
    ));
    let archive = conf.path().join("secure.ctx");
    let out = ctx_cli(
        berth_bin(),
        &["context", "export", "secure", archive.to_str().unwrap()],
    );
    assert!(stderr(&out).contains("Written file"), "{}", stderr(&out));
    ok(ctx_cli(
        berth_bin(),
        &["context", "import", "moved", archive.to_str().unwrap()],
    ));
    drop(certs);
    for ctx in ["secure", "moved"] {
        let v = ctx_cli(
            berth_bin(),
            &[
                "--context",
                ctx,
                "version",
                "--format",
                "{{.Server.APIVersion}}",
            ],
        );
        assert_eq!(ok(v), "1.50\n");
        if have("docker") {
            let i = ctx_cli(
                "docker",
                &["--context", ctx, "info", "--format", "{{.OSType}}"],
            );
            assert_eq!(ok(i), "linux\n");
        }
    }
    let listed = ok(ctx_cli(
        berth_bin(),
        &[
            "context",
            "inspect",
            "moved",
            "--format",
            "{{json .TLSMaterial}}",
        ],
    ));
    assert_eq!(
        listed.trim(),
        r#"{"docker":["ca.pem","cert.pem","key.pem"]}"#
    );
}
