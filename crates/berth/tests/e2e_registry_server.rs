#![allow(clippy::unwrap_used)]
//! `berth registry serve` with tools no one here wrote: skopeo copies to and from it,
//! berthd pushes and pulls through both CLIs, `docker login` against its htpasswd;
//! the distribution protocol's uploads (chunked, out of order, wrong digest), ranges,
//! pagination, referrers, deletes, read-only mode and `registry gc` over raw HTTP.

mod common;
use common::*;
use std::io::Write;
use std::process::{Child, Command, Stdio};

struct Served {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(extra: &[&str]) -> Served {
    let root = tempfile::tempdir().unwrap();
    let (child, port) = berth_registry(&root.path().join("data"), extra);
    Served { child, port, root }
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    tcp_request(port, method, path, headers, body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    http_header(head, name)
}

#[test]
fn serves_skopeo_berthd_and_both_clis() {
    let Some(d) = daemon_with_busybox("serves_skopeo_berthd_and_both_clis") else {
        return;
    };
    if !have("skopeo") {
        eprintln!("skipping: skopeo is needed (scripts/deps.sh)");
        return;
    }
    let reg = serve(&[]);
    let host = format!("127.0.0.1:{}", reg.port);
    // skopeo in and out
    let archive = d.dir.path().join("bb.tar");
    ok(d.berth(&["save", "-o", archive.to_str().unwrap(), "bb"]));
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("docker://{host}/sk/bb:v1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let oci = d.dir.path().join("oci");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/sk/bb:v1"))
        .arg(format!("oci:{}:x", oci.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(oci.join("index.json").exists());
    // berthd through both CLIs: pull what skopeo put, push and pull back
    for (i, bin) in clis().iter().enumerate() {
        let name = format!("{host}/sk/bb:v1");
        ok(d.cli(bin, &["pull", &name]));
        ok(d.cli(bin, &["run", "--rm", "--network", "none", &name, "true"]));
        let mine = format!("{host}/mine{i}/bb:v2");
        ok(d.cli(bin, &["tag", "bb", &mine]));
        let out = ok(d.cli(bin, &["push", &mine]));
        assert!(out.contains("v2: digest: sha256:"), "{bin}: {out}");
        ok(d.cli(bin, &["rmi", &mine]));
        ok(d.cli(bin, &["pull", &mine]));
        ok(d.cli(bin, &["rmi", &mine, &name]));
    }
    // catalog and tags, paginated
    let (st, head, body) = http(reg.port, "GET", "/v2/_catalog?n=1", &[], b"");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["repositories"].as_array().unwrap().len(), 1, "{v}");
    assert!(header(&head, "Link").unwrap().contains("last="), "{head}");
    let (_, _, body) = http(reg.port, "GET", "/v2/_catalog", &[], b"");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["repositories"].as_array().unwrap().len() >= 2, "{v}");
}

#[test]
fn the_protocol_over_raw_http() {
    if skip_unless_root("the_protocol_over_raw_http") {
        return;
    }
    let reg = serve(&[]);
    let p = reg.port;
    let blob = vec![7u8; 300_000];
    let digest = format!("sha256:{}", sha256_hex(&blob));
    // chunked: two PATCHes, then PUT with the digest
    let (st, head, _) = http(p, "POST", "/v2/t/x/blobs/uploads/", &[], b"");
    assert_eq!(st, 202, "{head}");
    let loc = header(&head, "Location").unwrap().to_string();
    let cr = "0-99999".to_string();
    let (st, head, _) = http(
        p,
        "PATCH",
        &loc,
        &[("Content-Range", &cr)],
        &blob[..100_000],
    );
    assert_eq!(st, 202, "{head}");
    assert_eq!(header(&head, "Range"), Some("0-99999"));
    // a chunk out of order
    let (st, _, _) = http(p, "PATCH", &loc, &[("Content-Range", "5-10")], &blob[..6]);
    assert_eq!(st, 416);
    let (st, _, _) = http(
        p,
        "PATCH",
        &loc,
        &[("Content-Range", "100000-299999")],
        &blob[100_000..],
    );
    assert_eq!(st, 202);
    let (st, head, _) = http(p, "PUT", &format!("{loc}?digest={digest}"), &[], b"");
    assert_eq!(st, 201, "{head}");
    assert_eq!(
        header(&head, "Docker-Content-Digest"),
        Some(digest.as_str())
    );
    // ranges
    let (st, head, body) = http(
        p,
        "GET",
        &format!("/v2/t/x/blobs/{digest}"),
        &[("Range", "bytes=10-19")],
        b"",
    );
    assert_eq!(st, 206, "{head}");
    assert_eq!(body, blob[10..20].to_vec());
    // a wrong digest stores nothing
    let (_, head, _) = http(p, "POST", "/v2/t/x/blobs/uploads/", &[], b"");
    let loc = header(&head, "Location").unwrap().to_string();
    let wrong = format!("sha256:{}", sha256_hex(b"other"));
    let (st, _, body) = http(p, "PUT", &format!("{loc}?digest={wrong}"), &[], b"data");
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
    let (st, _, _) = http(p, "HEAD", &format!("/v2/t/x/blobs/{wrong}"), &[], b"");
    assert_eq!(st, 404);
    // monolithic upload of a config, mount into another repository
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = format!("sha256:{}", sha256_hex(config));
    let (st, _, _) = http(
        p,
        "POST",
        &format!("/v2/t/x/blobs/uploads/?digest={cd}"),
        &[],
        config,
    );
    assert_eq!(st, 201);
    let (st, _, _) = http(
        p,
        "POST",
        &format!("/v2/t/y/blobs/uploads/?mount={digest}&from=t/x"),
        &[],
        b"",
    );
    assert_eq!(st, 201);
    // a manifest naming a blob the repository lacks is refused; a good one is kept
    let manifest = |layer: &str| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":300000}}]}}"#,
            config.len()
        )
    };
    let ct = [("Content-Type", "application/vnd.oci.image.manifest.v1+json")];
    let (st, _, body) = http(
        p,
        "PUT",
        "/v2/t/x/manifests/bad",
        &ct,
        manifest(&wrong).as_bytes(),
    );
    assert_eq!(st, 400);
    assert!(String::from_utf8_lossy(&body).contains("MANIFEST_BLOB_UNKNOWN"));
    let m = manifest(&digest);
    let (st, head, _) = http(p, "PUT", "/v2/t/x/manifests/v1", &ct, m.as_bytes());
    assert_eq!(st, 201, "{head}");
    let md = header(&head, "Docker-Content-Digest").unwrap().to_string();
    // referrers: an artifact with this manifest as its subject
    let artifact = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x-sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{cd}","size":{}}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{}}}}}"#,
        config.len(),
        m.len()
    );
    let ad = format!("sha256:{}", sha256_hex(artifact.as_bytes()));
    let (st, head, _) = http(
        p,
        "PUT",
        &format!("/v2/t/x/manifests/{ad}"),
        &ct,
        artifact.as_bytes(),
    );
    assert_eq!(st, 201, "{head}");
    assert_eq!(header(&head, "OCI-Subject"), Some(md.as_str()));
    let (st, _, body) = http(p, "GET", &format!("/v2/t/x/referrers/{md}"), &[], b"");
    assert_eq!(st, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"][0]["digest"], ad.as_str(), "{v}");
    assert_eq!(v["manifests"][0]["artifactType"], "application/x-sig");
    // bad names never become paths
    let (st, _, _) = http(p, "GET", "/v2/../etc/manifests/v1", &[], b"");
    assert!(st == 400 || st == 404);
    // delete, then gc takes what nothing names
    let (st, _, _) = http(p, "DELETE", &format!("/v2/t/x/manifests/{ad}"), &[], b"");
    assert_eq!(st, 202);
    let (st, _, _) = http(p, "DELETE", &format!("/v2/t/x/manifests/{md}"), &[], b"");
    assert_eq!(st, 202);
    let (st, _, _) = http(p, "GET", "/v2/t/x/manifests/v1", &[], b"");
    assert_eq!(st, 404);
    let out = Command::new(berth_bin())
        .args(["registry", "gc", "--root"])
        .arg(reg.root.path().join("data"))
        .output()
        .unwrap();
    assert!(stdout(&out).contains("blobs removed"), "{}", stderr(&out));
    let left = std::fs::read_dir(reg.root.path().join("data/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
    // read-only
    let ro = serve(&["--read-only"]);
    let (st, _, _) = http(ro.port, "POST", "/v2/t/x/blobs/uploads/", &[], b"");
    assert_eq!(st, 405);
}

#[test]
fn htpasswd_and_docker_login() {
    let Some(d) = daemon_with_busybox("htpasswd_and_docker_login") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("htpasswd");
    std::fs::write(
        &pw,
        format!("bob:{}\n", bcrypt::hash("hunter2", 4).unwrap()),
    )
    .unwrap();
    let reg = serve(&["--htpasswd", pw.to_str().unwrap()]);
    let host = format!("127.0.0.1:{}", reg.port);
    let (st, head, _) = http(reg.port, "GET", "/v2/", &[], b"");
    assert_eq!(st, 401);
    assert!(header(&head, "WWW-Authenticate")
        .unwrap()
        .starts_with("Basic"));
    for bin in clis() {
        let cfg = tempfile::tempdir().unwrap();
        let run = |args: &[&str], stdin: Option<&[u8]>| {
            let mut c = Command::new(&bin);
            c.args(args)
                .env("DOCKER_HOST", d.host())
                .env("BERTH_HOST", d.host())
                .env("DOCKER_CONFIG", cfg.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut ch = c.spawn().unwrap();
            {
                let mut w = ch.stdin.take().unwrap();
                if let Some(s) = stdin {
                    w.write_all(s).unwrap();
                }
            }
            ch.wait_with_output().unwrap()
        };
        let out = run(
            &["login", "-u", "bob", "--password-stdin", &host],
            Some(b"nope\n"),
        );
        assert!(!out.status.success(), "{bin}");
        let out = run(
            &["login", "-u", "bob", "--password-stdin", &host],
            Some(b"hunter2\n"),
        );
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        let name = format!("{host}/priv/bb:v1");
        ok(d.cli(&bin, &["tag", "bb", &name]));
        let out = run(&["push", &name], None);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        ok(d.cli(&bin, &["rmi", &name]));
        let out = run(&["pull", &name], None);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        ok(d.cli(&bin, &["rmi", &name]));
    }
}
