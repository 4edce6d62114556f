#![allow(clippy::unwrap_used)]
//! Several daemons from one client: contexts (stored as the docker CLI stores them, so
//! both CLIs share them) and `ssh://` hosts (a real sshd on loopback; the remote end
//! runs `berth system dial-stdio`, or the docker CLI's own for `docker -H ssh://`).

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `bin` with a client config of its own and no daemon chosen by the environment.
fn cli(bin: &str, config: &Path, args: &[&str]) -> Output {
    cli_env(bin, config, &[], args)
}

fn cli_env(bin: &str, config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(bin);
    c.args(args)
        .env("DOCKER_CONFIG", config)
        .env("DOCKER_CLI_HINTS", "false")
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_HOST")
        .env_remove("BERTH_HOST")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn names(o: Output) -> Vec<String> {
    let mut v: Vec<String> = ok(o).lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn contexts_choose_the_daemon_and_are_shared_with_the_docker_cli() {
    if skip_unless_root("contexts_choose_the_daemon_and_are_shared_with_the_docker_cli") {
        return;
    }
    let a = Daemon::start();
    a.import(&busybox_tar(), "bb:latest");
    let b = Daemon::start();
    b.import(&busybox_tar(), "bb:latest");
    let conf = tempfile::tempdir().unwrap();
    let cfg = conf.path();
    let berth = berth_bin();

    // contexts made by berth
    let out = cli(
        berth,
        cfg,
        &[
            "context",
            "create",
            "left",
            "--description",
            "the first",
            "--docker",
            &format!("host={}", a.host()),
        ],
    );
    assert_eq!(ok_text(&out), "left\n");
    assert!(stderr(&out).contains("Successfully created context \"left\""));
    ok(cli(
        berth,
        cfg,
        &[
            "context",
            "create",
            "right",
            "--docker",
            &format!("host={}", b.host()),
        ],
    ));
    // stored where and as the docker CLI stores them: under the name's sha256
    let key = stdout(
        &Command::new("sh")
            .args(["-c", "printf left | sha256sum"])
            .output()
            .unwrap(),
    );
    let key = key.split_whitespace().next().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cfg.join("contexts/meta").join(key).join("meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["Metadata"]["Description"], "the first");
    assert_eq!(meta["Endpoints"]["docker"]["Host"], a.host().as_str());

    // errors as the docker CLI words them
    let dup = cli(berth, cfg, &["context", "create", "left"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains("context \"left\" already exists"));
    let bad = cli(berth, cfg, &["context", "create", "x"]);
    assert!(stderr(&bad).contains("is invalid, names are validated against regexp"));
    let bad = cli(
        berth,
        cfg,
        &["context", "create", "odd", "--docker", "foo=1"],
    );
    assert!(stderr(&bad).contains("unrecognized config key: foo"));
    let both = cli(berth, cfg, &["-H", &a.host(), "--context", "left", "ps"]);
    assert_eq!(both.status.code(), Some(1));
    assert!(stderr(&both).contains("conflicting options: cannot specify both --host and --context"));
    let none = cli(berth, cfg, &["--context", "nowhere", "ps"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("context \"nowhere\": context not found"));

    // a container on each daemon; --context, DOCKER_CONTEXT and `context use` pick one
    ok(cli(
        berth,
        cfg,
        &[
            "--context",
            "left",
            "create",
            "--name",
            "on-left",
            "--network",
            "none",
            "bb",
            "true",
        ],
    ));
    ok(cli_env(
        berth,
        cfg,
        &[("DOCKER_CONTEXT", "right")],
        &[
            "create",
            "--name",
            "on-right",
            "--network",
            "none",
            "bb",
            "true",
        ],
    ));
    let ps = ["ps", "-a", "--format", "{{.Names}}"];
    let with_ctx = |bin: &str, ctx: &str| {
        let mut args = vec!["--context", ctx];
        args.extend(ps);
        names(cli(bin, cfg, &args))
    };
    assert_eq!(with_ctx(berth, "left"), ["on-left"]);
    assert_eq!(with_ctx(berth, "right"), ["on-right"]);
    let v = cli(
        berth,
        cfg,
        &[
            "--context",
            "left",
            "version",
            "--format",
            "{{.Client.Context}}",
        ],
    );
    assert_eq!(ok_text(&v), "left\n");
    let out = cli(berth, cfg, &["context", "use", "right"]);
    assert_eq!(ok_text(&out), "right\n");
    assert!(stderr(&out).contains("Current context is now \"right\""));
    assert_eq!(names(cli(berth, cfg, &ps)), ["on-right"]);
    assert_eq!(ok_text(&cli(berth, cfg, &["context", "show"])), "right\n");
    // DOCKER_HOST overrides the current context (the `default` one is then in use)
    assert_eq!(
        names(cli_env(berth, cfg, &[("DOCKER_HOST", &a.host())], &ps)),
        ["on-left"]
    );
    let ls = cli_env(
        berth,
        cfg,
        &[("DOCKER_HOST", &a.host())],
        &["context", "ls", "--format", "{{.Name}} {{.Current}}"],
    );
    assert_eq!(ok_text(&ls), "default true\nleft false\nright false\n");
    assert!(stderr(&ls).contains("DOCKER_HOST environment variable overrides the active context"));

    let table = ok(cli(berth, cfg, &["context", "ls"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME  "), "{table}");
    assert!(lines[0].contains("DESCRIPTION") && lines[0].contains("DOCKER ENDPOINT"));
    assert!(lines.iter().any(|l| l.starts_with("right *")), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("left ") && l.contains("the first") && l.contains(&a.host())),
        "{table}"
    );

    if have("docker") {
        // the docker CLI sees berth's contexts and current context, and berth sees its
        let out = cli(
            "docker",
            cfg,
            &[
                "context",
                "ls",
                "--format",
                "{{.Name}} {{.Current}} {{.DockerEndpoint}}",
            ],
        );
        let text = ok(out);
        assert!(text.contains(&format!("left false {}", a.host())), "{text}");
        assert!(text.contains(&format!("right true {}", b.host())), "{text}");
        assert_eq!(names(cli("docker", cfg, &ps)), ["on-right"]);
        assert_eq!(with_ctx("docker", "left"), ["on-left"]);
        ok(cli(
            "docker",
            cfg,
            &[
                "context",
                "create",
                "from-docker",
                "--docker",
                &format!("host={}", a.host()),
            ],
        ));
        assert_eq!(with_ctx(berth, "from-docker"), ["on-left"]);
        // inspect says the same in both
        let ours: serde_json::Value = serde_json::from_str(&ok(cli(
            berth,
            cfg,
            &["context", "inspect", "left", "from-docker"],
        )))
        .unwrap();
        let theirs: serde_json::Value = serde_json::from_str(&ok(cli(
            "docker",
            cfg,
            &["context", "inspect", "left", "from-docker"],
        )))
        .unwrap();
        assert_eq!(ours, theirs);
        ok(cli(berth, cfg, &["context", "rm", "from-docker"]));
        // archives go both ways (the docker CLI's ends without the end-of-archive blocks)
        let piped = |from: &str, to: &str, name: &str| {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "{from} context export left - | {to} context import {name} -"
                ))
                .env("DOCKER_CONFIG", cfg)
                .env_remove("DOCKER_HOST")
                .env_remove("BERTH_HOST")
                .env_remove("DOCKER_CONTEXT")
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            assert!(stderr(&out).contains(&format!("Successfully imported context \"{name}\"")));
        };
        piped("docker", berth, "docker-made");
        piped(berth, "docker", "berth-made");
        assert_eq!(with_ctx(berth, "docker-made"), ["on-left"]);
        assert_eq!(with_ctx("docker", "berth-made"), ["on-left"]);
        ok(cli(
            berth,
            cfg,
            &["context", "rm", "docker-made", "berth-made"],
        ));
        let gone = cli("docker", cfg, &["context", "inspect", "from-docker"]);
        assert!(!gone.status.success());
    }

    // removal: the current context only with -f, which makes `default` current
    let busy = cli(berth, cfg, &["context", "rm", "right"]);
    assert_eq!(busy.status.code(), Some(1));
    assert!(stderr(&busy).contains("context \"right\" is in use, set -f flag to force remove"));
    assert_eq!(
        ok_text(&cli(berth, cfg, &["context", "rm", "-f", "right", "left"])),
        "right\nleft\n"
    );
    assert_eq!(ok_text(&cli(berth, cfg, &["context", "show"])), "default\n");
    assert_eq!(
        ok_text(&cli(berth, cfg, &["context", "ls", "-q"])),
        "default\n"
    );
}

fn ok_text(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", stderr(o));
    stdout(o)
}

/// An sshd of the test's own on a loopback port: root logs in with a key made for it,
/// and its commands find `berth` (the build's) first in their PATH.
struct Sshd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    made_privsep_dir: bool,
}

impl Sshd {
    fn start() -> Option<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        if !sshd.exists() || !have("ssh") || !have("ssh-keygen") {
            eprintln!("skipping the ssh part: no sshd here (CI installs openssh-server)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for key in ["hostkey", "id"] {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", ""])
                .arg("-f")
                .arg(p.join(key))
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
        }
        let bin_dir = Path::new(berth_bin())
            .parent()
            .unwrap()
            .display()
            .to_string();
        let pubkey = std::fs::read_to_string(p.join("id.pub")).unwrap();
        std::fs::write(
            p.join("authorized_keys"),
            format!("environment=\"PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin\" {pubkey}"),
        )
        .unwrap();
        // the privilege separation directory sshd insists on
        let privsep = Path::new("/run/sshd");
        let made_privsep_dir = !privsep.exists();
        if made_privsep_dir {
            std::fs::create_dir_all(privsep).unwrap();
        }
        // `ssh` as the CLIs run it: our key, our known-hosts file, never a prompt
        std::fs::create_dir(p.join("bin")).unwrap();
        std::fs::write(
            p.join("ssh_config"),
            format!(
                "Host *\n  IdentityFile {0}/id\n  UserKnownHostsFile {0}/known_hosts\n  StrictHostKeyChecking no\n  BatchMode yes\n  LogLevel ERROR\n",
                p.display()
            ),
        )
        .unwrap();
        let wrapper = p.join("bin/ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F {}/ssh_config \"$@\"\n",
                p.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                p.join("sshd_config"),
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/hostkey\nAuthorizedKeysFile {0}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\nPidFile {0}/sshd.pid\nPermitUserEnvironment PATH\nLogLevel ERROR\n",
                    p.display()
                ),
            )
            .unwrap();
            let mut cmd = Command::new(sshd);
            cmd.args(["-D", "-e", "-f"]).arg(p.join("sshd_config"));
            if let Some(child) = try_spawn_listening(cmd, port, "sshd") {
                return Some(Sshd {
                    child,
                    port,
                    dir,
                    made_privsep_dir,
                });
            }
        }
        panic!("sshd found no free port");
    }

    /// PATH with the `ssh` wrapper first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.made_privsep_dir {
            let _ = std::fs::remove_dir("/run/sshd");
        }
    }
}

#[test]
fn ssh_hosts_reach_the_daemon() {
    let Some(d) = daemon_with_busybox("ssh_hosts_reach_the_daemon") else {
        return;
    };
    let Some(sshd) = Sshd::start() else {
        return;
    };
    let conf = tempfile::tempdir().unwrap();
    let cfg = conf.path();
    let path = sshd.path();
    let host = format!("ssh://root@127.0.0.1:{}{}", sshd.port, d.socket.display());
    let run = |bin: &str, args: &[&str], input: Option<&[u8]>| -> Output {
        let mut c = Command::new(bin);
        c.args(args)
            .env("PATH", &path)
            .env("DOCKER_CONFIG", cfg)
            .env("DOCKER_CLI_HINTS", "false")
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_HOST")
            .env_remove("BERTH_HOST")
            .env_remove("DOCKER_CONTEXT")
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(data) = input {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(data).unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let berth = berth_bin();

    // requests, an attached run (a connection taken over), its stdin and exit code
    let v = ok(run(
        berth,
        &["-H", &host, "version", "--format", "{{.Server.Os}}"],
        None,
    ));
    assert_eq!(v.trim(), "linux");
    let out = run(
        berth,
        &[
            "-H",
            &host,
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "bb",
            "sh",
            "-c",
            "cat; exit 3",
        ],
        Some(b"over ssh\n"),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "over ssh\n");
    ok(run(
        berth,
        &[
            "-H",
            &host,
            "run",
            "-d",
            "--name",
            "far",
            "--network",
            "none",
            "bb",
            "sh",
            "-c",
            "echo far-log; sleep 60",
        ],
        None,
    ));
    // the daemon over the plain socket sees what was done over ssh
    let local = ok(d.berth(&["ps", "--format", "{{.Names}}"]));
    assert_eq!(local.trim(), "far");
    assert_eq!(
        ok(run(
            berth,
            &["-H", &host, "exec", "far", "echo", "in-far"],
            None
        )),
        "in-far\n"
    );

    // an ssh context
    ok(run(
        berth,
        &[
            "context",
            "create",
            "remote",
            "--docker",
            &format!("host={host}"),
        ],
        None,
    ));
    let logs = run(berth, &["--context", "remote", "logs", "far"], None);
    assert_eq!(ok(logs), "far-log\n");

    // the docker CLI over ssh runs its own dial-stdio at the remote end
    if have("docker") {
        let ps = ok(run(
            "docker",
            &["-H", &host, "ps", "--format", "{{.Names}}"],
            None,
        ));
        assert_eq!(ps.trim(), "far");
        let out = ok(run(
            "docker",
            &[
                "--context",
                "remote",
                "run",
                "--rm",
                "--network",
                "none",
                "bb",
                "echo",
                "docker-over-ssh",
            ],
            None,
        ));
        assert_eq!(out, "docker-over-ssh\n");
    }

    // a host that does not answer: ssh's own words, then ours, exit 1
    let down = run(berth, &["-H", "ssh://root@127.0.0.1:1", "ps"], None);
    assert_eq!(down.status.code(), Some(1));
    assert!(stderr(&down).contains("Cannot connect to the berth daemon at ssh://root@127.0.0.1:1"));
    let bad = run(berth, &["-H", "ssh://root@127.0.0.1:notaport", "ps"], None);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("ssh host connection is not valid"));

    ok(d.berth(&["rm", "-f", "far"]));
}
