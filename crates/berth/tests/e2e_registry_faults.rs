#![allow(clippy::unwrap_used)]
//! Pulls from a registry made by the test to misbehave: it redirects blobs to another
//! port (credentials must not follow), answers 401/403/404/429/500, serves a blob that
//! does not match its digest, a truncated blob, a manifest too large, indexes nested
//! too deep and an unknown media type. Each pull fails with a clear error and stores
//! nothing; the daemon keeps serving.

mod common;
use common::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the fake registry answers for a path: status, headers, body (and, for a
/// truncated body, the length it claims).
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    claimed_len: Option<usize>,
}

fn answer(status: u16, ctype: &str, body: Vec<u8>) -> Answer {
    Answer {
        status,
        headers: vec![("Content-Type".into(), ctype.into())],
        body,
        claimed_len: None,
    }
}

/// Requests seen: path and headers.
type Seen = Mutex<Vec<(String, Vec<(String, String)>)>>;

/// A tiny HTTP/1.1 server: a map of paths to answers; basic auth required on the paths
/// under `/v2/` when `auth` is set; every request's headers recorded.
struct Fake {
    port: u16,
    seen: Arc<Seen>,
}

impl Fake {
    fn start(routes: HashMap<String, Answer>, auth: Option<String>) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let routes = Arc::new(routes);
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (routes, seen, auth) = (routes.clone(), seen2.clone(), auth.clone());
                std::thread::spawn(move || serve(s, &routes, &seen, auth.as_deref()));
            }
        });
        Fake { port, seen }
    }
}

fn serve(s: TcpStream, routes: &HashMap<String, Answer>, seen: &Seen, auth: Option<&str>) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.to_lowercase(), v.trim().to_string()));
            }
        }
        let mut body = vec![0u8; len];
        let _ = r.read_exact(&mut body);
        seen.lock().unwrap().push((path.clone(), headers.clone()));
        let authorized = match auth {
            None => true,
            Some(want) => headers
                .iter()
                .any(|(k, v)| k == "authorization" && v == &format!("Basic {want}")),
        };
        let p = path.split('?').next().unwrap_or_default().to_string();
        let a = if path.starts_with("/v2/") && !authorized {
            Answer {
                status: 401,
                headers: vec![
                    ("WWW-Authenticate".into(), "Basic realm=\"fake\"".into()),
                    ("Content-Type".into(), "application/json".into()),
                ],
                body:
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_vec(),
                claimed_len: None,
            }
        } else if p == "/v2/" {
            answer(200, "application/json", b"{}".to_vec())
        } else {
            routes.get(&p).cloned().unwrap_or_else(|| {
                answer(
                    404,
                    "application/json",
                    br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                        .to_vec(),
                )
            })
        };
        let mut head = format!("HTTP/1.1 {} X\r\n", a.status);
        for (k, v) in &a.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!(
            "Content-Length: {}\r\n\r\n",
            a.claimed_len.unwrap_or(a.body.len())
        ));
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        if method != "HEAD" {
            let _ = w.write_all(&a.body);
        }
        if a.claimed_len.is_some() {
            return; // cut short: close the connection
        }
    }
}

/// An image: (manifest, config, gzipped layers), with digests; `layer` is the first.
struct Img {
    manifest: Vec<u8>,
    config: Vec<u8>,
    config_digest: String,
    layer: Vec<u8>,
    layer_digest: String,
    layers: Vec<(Vec<u8>, String)>,
}

/// A one-layer busybox image.
fn image() -> Img {
    image_of(&[busybox_tar()])
}

fn image_of(tars: &[Vec<u8>]) -> Img {
    let layers: Vec<(Vec<u8>, String)> = tars
        .iter()
        .map(|tar| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            let layer = gz.finish().unwrap();
            let digest = format!("sha256:{}", sha256_hex(&layer));
            (layer, digest)
        })
        .collect();
    let diff_ids: Vec<String> = tars
        .iter()
        .map(|t| format!("sha256:{}", sha256_hex(t)))
        .collect();
    let config = serde_json::json!({
        "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "fake"}]
    })
    .to_string()
    .into_bytes();
    let config_digest = format!("sha256:{}", sha256_hex(&config));
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(l, d)| serde_json::json!({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": l.len(), "digest": d}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": config.len(), "digest": config_digest},
        "layers": descs
    })
    .to_string()
    .into_bytes();
    Img {
        manifest,
        config,
        config_digest,
        layer: layers[0].0.clone(),
        layer_digest: layers[0].1.clone(),
        layers,
    }
}

const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Pulls `name` with `config` as the client's config directory; the output.
fn pull(d: &Daemon, bin: &str, config: &std::path::Path, name: &str) -> std::process::Output {
    std::process::Command::new(bin)
        .args(["pull", name])
        .env("DOCKER_HOST", d.host())
        .env("BERTH_HOST", d.host())
        .env("DOCKER_CONFIG", config)
        .env("DOCKER_CLI_HINTS", "false")
        .output()
        .unwrap()
}

#[test]
fn credentials_do_not_follow_a_redirect_to_another_host() {
    // no image of its own: the pulled layer is new to it
    if skip_unless_root("credentials_do_not_follow_a_redirect_to_another_host") {
        return;
    }
    let d = Daemon::start();
    let img = image();
    // the blob store, on its own port
    let mut blobs = HashMap::new();
    blobs.insert(
        "/blob".to_string(),
        answer(200, "application/octet-stream", img.layer.clone()),
    );
    let storage = Fake::start(blobs, None);
    let mut routes = HashMap::new();
    routes.insert(
        "/v2/fake/bb/manifests/v1".to_string(),
        answer(200, MANIFEST, img.manifest.clone()),
    );
    routes.insert(
        format!("/v2/fake/bb/blobs/{}", img.config_digest),
        answer(200, "application/octet-stream", img.config.clone()),
    );
    routes.insert(
        format!("/v2/fake/bb/blobs/{}", img.layer_digest),
        Answer {
            status: 307,
            headers: vec![(
                "Location".into(),
                format!("http://127.0.0.1:{}/blob", storage.port),
            )],
            body: Vec::new(),
            claimed_len: None,
        },
    );
    let secret = base64_std("alice:pw");
    let reg = Fake::start(routes, Some(secret.clone()));
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("config.json"),
        format!(
            r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{secret}"}}}}}}"#,
            reg.port
        ),
    )
    .unwrap();
    for bin in clis() {
        let name = format!("127.0.0.1:{}/fake/bb:v1", reg.port);
        let out = pull(&d, &bin, cfg.path(), &name);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        ok(d.cli(&bin, &["run", "--rm", "--network", "none", &name, "true"]));
        ok(d.cli(&bin, &["rmi", &name]));
    }
    // the registry got the credentials; the blob store never did
    assert!(reg
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|(_, h)| h.iter().any(|(k, _)| k == "authorization")));
    let seen = storage.seen.lock().unwrap();
    assert!(!seen.is_empty(), "the blob came from the redirect");
    for (p, h) in seen.iter() {
        assert!(
            !h.iter().any(|(k, _)| k == "authorization"),
            "credentials sent to another host for {p}: {h:?}"
        );
    }
}

fn base64_std(s: &str) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn misbehaving_registries_store_nothing() {
    if skip_unless_root("misbehaving_registries_store_nothing") {
        return;
    }
    let d = Daemon::start();
    let img = image();
    let mut routes = HashMap::new();
    let manifest_for = |repo: &str, routes: &mut HashMap<String, Answer>| {
        routes.insert(
            format!("/v2/{repo}/manifests/v1"),
            answer(200, MANIFEST, img.manifest.clone()),
        );
        routes.insert(
            format!("/v2/{repo}/blobs/{}", img.config_digest),
            answer(200, "application/octet-stream", img.config.clone()),
        );
    };
    // a layer whose bytes are not its digest's
    manifest_for("bad/digest", &mut routes);
    let mut wrong = img.layer.clone();
    let n = wrong.len() / 2;
    wrong[n] ^= 0x55;
    routes.insert(
        format!("/v2/bad/digest/blobs/{}", img.layer_digest),
        answer(200, "application/octet-stream", wrong),
    );
    // a truncated layer: the connection closes early
    manifest_for("bad/truncated", &mut routes);
    routes.insert(
        format!("/v2/bad/truncated/blobs/{}", img.layer_digest),
        Answer {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: img.layer[..img.layer.len() / 2].to_vec(),
            claimed_len: Some(img.layer.len()),
        },
    );
    // status answers
    let status = |code: u16, err: &str| {
        answer(
            code,
            "application/json",
            format!(
                r#"{{"errors":[{{"code":"{err}","message":"{}"}}]}}"#,
                err.to_lowercase().replace('_', " ")
            )
            .into_bytes(),
        )
    };
    routes.insert("/v2/bad/denied/manifests/v1".into(), status(403, "DENIED"));
    routes.insert(
        "/v2/bad/limited/manifests/v1".into(),
        status(429, "TOOMANYREQUESTS"),
    );
    routes.insert("/v2/bad/broken/manifests/v1".into(), status(500, "UNKNOWN"));
    // a manifest bomb: larger than any manifest may be
    let mut bomb = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"x":""#.to_vec();
    bomb.extend(std::iter::repeat_n(b'a', 5 << 20));
    bomb.extend(b"\"}");
    routes.insert(
        "/v2/bad/bomb/manifests/v1".into(),
        answer(200, "application/vnd.oci.image.index.v1+json", bomb),
    );
    // indexes nested too deep: each names the next
    let mut inner = img.manifest.clone();
    let mut inner_type = MANIFEST.to_string();
    for level in 0..6 {
        let digest = format!("sha256:{}", sha256_hex(&inner));
        routes.insert(
            format!("/v2/bad/deep/manifests/{digest}"),
            answer(200, &inner_type, inner.clone()),
        );
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        inner = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": inner_type, "digest": digest, "size": inner.len(),
                "platform": {"os": "linux", "architecture": arch}}],
            "annotations": {"level": level.to_string()}
        })
        .to_string()
        .into_bytes();
        inner_type = "application/vnd.oci.image.index.v1+json".into();
    }
    routes.insert(
        "/v2/bad/deep/manifests/v1".into(),
        answer(200, &inner_type, inner),
    );
    // an unknown media type
    routes.insert(
        "/v2/bad/weird/manifests/v1".into(),
        answer(
            200,
            "application/x-weird",
            br#"{"schemaVersion":2,"mediaType":"application/x-weird"}"#.to_vec(),
        ),
    );
    let reg = Fake::start(routes, None);
    let cfg = tempfile::tempdir().unwrap();
    let before = (
        d.get_json("/images/json?all=1").as_array().unwrap().len(),
        d.store_entries(),
    );
    for bin in clis() {
        for (repo, says) in [
            ("bad/digest", "verification failed"),
            ("bad/truncated", "unexpected EOF"),
            ("bad/denied", "denied"),
            ("bad/missing", "manifest unknown"),
            ("bad/limited", "toomanyrequests"),
            ("bad/broken", "500"),
            ("bad/bomb", "too large"),
            ("bad/deep", "nested"),
            ("bad/weird", "unsupported manifest media type"),
        ] {
            let name = format!("127.0.0.1:{}/{repo}:v1", reg.port);
            let out = pull(&d, &bin, cfg.path(), &name);
            assert!(!out.status.success(), "{bin} {repo}");
            let err = stderr(&out);
            assert!(err.contains(says), "{bin} {repo}: {err}");
            assert_eq!(
                (
                    d.get_json("/images/json?all=1").as_array().unwrap().len(),
                    d.store_entries()
                ),
                before,
                "{bin} {repo}: nothing is kept"
            );
        }
    }
    ok(d.berth(&["version"]));
}

#[test]
fn an_interrupted_pull_resumes_without_fetching_finished_layers_again() {
    if skip_unless_root("an_interrupted_pull_resumes_without_fetching_finished_layers_again") {
        return;
    }
    let d = Daemon::start();
    let img = image_of(&[busybox_tar(), one_file_tar("etc/resumed", b"yes\n")]);
    let (top, top_digest) = img.layers[1].clone();
    let routes = |cut: bool| {
        let mut r = HashMap::new();
        r.insert(
            "/v2/re/sume/manifests/v1".to_string(),
            answer(200, MANIFEST, img.manifest.clone()),
        );
        r.insert(
            format!("/v2/re/sume/blobs/{}", img.config_digest),
            answer(200, "application/octet-stream", img.config.clone()),
        );
        r.insert(
            format!("/v2/re/sume/blobs/{}", img.layer_digest),
            answer(200, "application/octet-stream", img.layer.clone()),
        );
        r.insert(
            format!("/v2/re/sume/blobs/{top_digest}"),
            Answer {
                status: 200,
                headers: vec![("Content-Type".into(), "application/octet-stream".into())],
                body: if cut {
                    top[..top.len() / 2].to_vec()
                } else {
                    top.clone()
                },
                claimed_len: cut.then_some(top.len()),
            },
        );
        r
    };
    let blob_gets = |f: &Fake, digest: &str| {
        f.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p.ends_with(digest))
            .count()
    };
    let cfg = tempfile::tempdir().unwrap();
    for bin in clis() {
        // the connection drops in the middle of the second layer
        let broken = Fake::start(routes(true), None);
        let name = format!("127.0.0.1:{}/re/sume:v1", broken.port);
        let out = pull(&d, &bin, cfg.path(), &name);
        assert!(!out.status.success(), "{bin}: the pull fails");
        assert!(
            stderr(&out).contains("unexpected EOF"),
            "{bin}: {}",
            stderr(&out)
        );
        assert_eq!(blob_gets(&broken, &img.layer_digest), 1);
        // nothing visible
        assert!(d
            .get_json("/images/json?all=1")
            .as_array()
            .unwrap()
            .is_empty());
        // the same layers from a registry that answers: the first is not fetched again
        let good = Fake::start(routes(false), None);
        let name = format!("127.0.0.1:{}/re/sume:v1", good.port);
        let out = pull(&d, &bin, cfg.path(), &name);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        assert_eq!(
            blob_gets(&good, &img.layer_digest),
            0,
            "{bin}: first layer fetched again"
        );
        assert_eq!(blob_gets(&good, &top_digest), 1);
        let first = &img.layer_digest[7..19];
        assert!(
            stdout(&out).contains(&format!("{first}: Already exists")),
            "{bin}: {}",
            stdout(&out)
        );
        let got = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &name,
                "cat",
                "/etc/resumed",
            ],
        ));
        assert_eq!(got.trim(), "yes");
        ok(d.cli(&bin, &["rmi", &name]));
        // every layer went with the image
        assert_eq!(
            d.store_entries(),
            (0, 0),
            "{bin}: {:?} {}",
            std::fs::read_dir(d.data_root().join("snapshots"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>(),
            d.log()
        );
    }
    // a failed pull's layers that no later pull claims are removed by `image prune -a`
    let broken = Fake::start(routes(true), None);
    let name = format!("127.0.0.1:{}/re/sume:v1", broken.port);
    assert!(!pull(&d, berth_bin(), cfg.path(), &name).status.success());
    assert_ne!(d.store_entries(), (0, 0));
    let out = ok(d.berth(&["image", "prune", "-a", "-f"]));
    assert!(out.contains("Total reclaimed space"), "{out}");
    assert_eq!(d.store_entries(), (0, 0));
}
