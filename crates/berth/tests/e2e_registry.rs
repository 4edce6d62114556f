#![allow(clippy::unwrap_used)]
//! Pulls from Debian's `docker-registry` (distribution 2.8), started by the test on
//! 127.0.0.1 and filled with skopeo: `berth pull`, `docker pull` through berthd, `run`
//! pulling a missing image, pulls by digest and through an index, and the failures
//! (unknown tag, unreachable registry, a corrupted blob, no matching platform) that
//! must store nothing and leave the daemon serving.

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `docker-registry` on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Registry {
    fn start() -> Option<Registry> {
        if !have("skopeo") {
            eprintln!("skipping: skopeo is needed (scripts/deps.sh)");
            return None;
        }
        Self::start_with(None)
    }

    /// A registry on a free port; with `auth`, asking for those basic credentials
    /// (htpasswd, bcrypt).
    fn start_with(auth: Option<(&str, &str)>) -> Option<Registry> {
        if !have("docker-registry") {
            eprintln!("skipping: docker-registry is needed (scripts/deps.sh)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg_text = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let pw = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(&pw, format!("{user}:{hash}\n")).unwrap();
            cfg_text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: basic-realm\n    path: {}\n",
                pw.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, cfg_text).unwrap();
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&cfg);
        let child = spawn_listening(cmd, port, "docker-registry");
        Some(Registry { child, dir, port })
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies a docker-archive into the registry as `repo:tag`.
    fn push_archive(&self, archive: &Path, repo: &str, tag: &str) {
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", "--quiet"])
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo: {}", stderr(&out));
    }

    /// One HTTP/1.1 request to the registry: (status, headers, body).
    fn http(&self, method: &str, path: &str, ctype: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let accept = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json";
        tcp_request(
            self.port,
            method,
            path,
            &[("Accept", accept), ("Content-Type", ctype)],
            body,
        )
    }

    /// Every blob file of the registry's storage.
    fn blob_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![self.dir.path().join("data/docker/registry/v2/blobs")];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    todo.push(e.path());
                } else if e.file_name() == "data" {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn image_count(d: &Daemon) -> usize {
    d.get_json("/images/json?all=1").as_array().unwrap().len()
}

/// `two:1`: busybox and a commit of a container that ran `script` on it.
fn two_layer_image(d: &Daemon, script: &str) {
    ok(d.berth(&[
        "run",
        "--name",
        "mk",
        "--network",
        "none",
        "bb",
        "sh",
        "-c",
        script,
    ]));
    ok(d.berth(&["commit", "mk", "two:1"]));
    ok(d.berth(&["rm", "mk"]));
}

#[test]
fn pulls_from_a_distribution_registry() {
    let Some(d) = daemon_with_busybox("pulls_from_a_distribution_registry") else {
        return;
    };
    let Some(reg) = Registry::start() else {
        return;
    };
    two_layer_image(&d, "echo layered > /hello.txt");
    let archive = d.dir.path().join("two.tar");
    let out = d.berth(&["save", "-o", archive.to_str().unwrap(), "two:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    reg.push_archive(&archive, "test/two", "v1");
    let name = format!("{}/test/two:v1", reg.host());
    let (st, head, _) = reg.http("HEAD", "/v2/test/two/manifests/v1", "", b"");
    assert_eq!(st, 200);
    let digest = http_header(&head, "Docker-Content-Digest")
        .unwrap()
        .to_string();

    for bin in clis() {
        ok(d.cli(&bin, &["rmi", "-f", "two:1"]));
        let _ = d.cli(&bin, &["rmi", "-f", &name]);
        let out = ok(d.cli(&bin, &["pull", &name]));
        assert!(out.contains("v1: Pulling from test/two"), "{bin}: {out}");
        assert!(out.contains(&format!("Digest: {digest}")), "{bin}: {out}");
        assert!(
            out.contains(&format!("Status: Downloaded newer image for {name}")),
            "{bin}: {out}"
        );
        let out = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &name,
                "cat",
                "/hello.txt",
            ],
        ));
        assert_eq!(out.trim(), "layered", "{bin}");
        let rd = ok(d.cli(
            &bin,
            &["image", "inspect", "-f", "{{json .RepoDigests}}", &name],
        ));
        assert!(
            rd.contains(&format!("{}/test/two@{digest}", reg.host())),
            "{bin}: {rd}"
        );
        // again: nothing to fetch
        let out = ok(d.cli(&bin, &["pull", &name]));
        assert!(
            out.contains(&format!("Status: Image is up to date for {name}")),
            "{bin}: {out}"
        );
        // quiet, and by digest
        let out = ok(d.cli(&bin, &["pull", "-q", &name]));
        assert_eq!(out.trim(), name, "{bin}");
        let by_digest = format!("{}/test/two@{digest}", reg.host());
        ok(d.cli(&bin, &["pull", &by_digest]));
        // `run` pulls what is missing, saying so on stderr
        ok(d.cli(&bin, &["rmi", "-f", &name]));
        let _ = d.cli(&bin, &["rmi", "-f", &by_digest]);
        let out = d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &name,
                "cat",
                "/hello.txt",
            ],
        );
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "layered");
        assert!(
            stderr(&out).contains(&format!("Unable to find image '{name}' locally")),
            "{bin}: {}",
            stderr(&out)
        );
    }
    // berth's --pull never refuses to fetch
    ok(d.berth(&["rmi", "-f", &name]));
    let out = d.berth(&["run", "--rm", "--pull", "never", &name, "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));

    // through an OCI index: the host's platform is picked; another is not there
    let (_, _, manifest) = reg.http("GET", "/v2/test/two/manifests/v1", "", b"");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "digest": digest, "size": manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "digest": digest, "size": manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64"}}
        ]
    });
    let (st, _, body) = reg.http(
        "PUT",
        "/v2/test/two/manifests/multi",
        "application/vnd.oci.image.index.v1+json",
        index.to_string().as_bytes(),
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let multi = format!("{}/test/two:multi", reg.host());
    if berth_arch() == "amd64" || berth_arch() == "arm64" {
        for bin in clis() {
            ok(d.cli(&bin, &["pull", &multi]));
            let out = d.cli(&bin, &["pull", "--platform", "linux/s390x", &multi]);
            assert!(!out.status.success());
            assert!(
                stderr(&out).contains("no matching manifest for linux/s390x"),
                "{bin}: {}",
                stderr(&out)
            );
        }
    }

    // failures store nothing, and the daemon goes on
    for bin in clis() {
        let out = d.cli(&bin, &["pull", &format!("{}/test/two:nope", reg.host())]);
        assert_eq!(out.status.code(), Some(1), "{bin}");
        assert!(
            stderr(&out).contains(&format!(
                "manifest for {}/test/two:nope not found: manifest unknown",
                reg.host()
            )),
            "{bin}: {}",
            stderr(&out)
        );
        let out = d.cli(&bin, &["pull", "127.0.0.1:1/test/two:v1"]);
        assert_eq!(out.status.code(), Some(1), "{bin}");
        assert!(
            stderr(&out).contains("127.0.0.1:1"),
            "{bin}: {}",
            stderr(&out)
        );
    }
    // the top layer's blob changed in the registry's storage: the pull fails and
    // stores nothing
    let id = ok(d.berth(&["image", "inspect", "-f", "{{.Id}}", &multi]));
    ok(d.berth(&["rmi", "-f", id.trim()]));
    let images_before = image_count(&d);
    let entries_before = d.store_entries();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let top = m["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let f = reg
        .blob_files()
        .into_iter()
        .find(|f| f.parent().unwrap().file_name().unwrap().to_str() == Some(top.as_str()))
        .unwrap();
    let mut b = std::fs::read(&f).unwrap();
    let n = b.len() / 2;
    b[n] ^= 0xff;
    std::fs::write(&f, &b).unwrap();
    for bin in clis() {
        let out = d.cli(&bin, &["pull", &name]);
        assert!(!out.status.success(), "{bin}");
        assert!(
            stderr(&out).contains("verification failed")
                || stderr(&out).contains("invalid")
                || stderr(&out).contains("corrupt"),
            "{bin}: {}",
            stderr(&out)
        );
        assert_eq!(image_count(&d), images_before, "{bin}");
        assert_eq!(
            d.store_entries(),
            entries_before,
            "{bin}: nothing partial is kept"
        );
    }
    ok(d.berth(&["version"]));
}

fn berth_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn pushes_to_a_distribution_registry() {
    let Some(d) = daemon_with_busybox("pushes_to_a_distribution_registry") else {
        return;
    };
    let Some(reg) = Registry::start() else {
        return;
    };
    two_layer_image(&d, "echo pushed > /pushed.txt");
    for (i, bin) in clis().iter().enumerate() {
        let name = format!("{}/push{i}/two:v1", reg.host());
        ok(d.cli(bin, &["tag", "two:1", &name]));
        let out = ok(d.cli(bin, &["push", &name]));
        assert!(
            out.contains(&format!(
                "The push refers to repository [{}/push{i}/two]",
                reg.host()
            )),
            "{bin}: {out}"
        );
        assert!(out.contains("v1: digest: sha256:"), "{bin}: {out}");
        // the registry has it, as skopeo sees it
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{name}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Layers"].as_array().unwrap().len(), 2, "{v}");
        let digest = v["Digest"].as_str().unwrap().to_string();
        // the push recorded the digest
        let rd = ok(d.cli(
            bin,
            &["image", "inspect", "-f", "{{json .RepoDigests}}", &name],
        ));
        assert!(rd.contains(&digest), "{bin}: {rd} / {digest}");
        // again: every blob is there already
        let out = ok(d.cli(bin, &["push", &name]));
        assert!(out.contains("Layer already exists"), "{bin}: {out}");
        assert!(out.contains(&digest), "{bin}: {out}");
        // another repository of the same registry: mounted, not uploaded
        let other = format!("{}/other{i}/two:v1", reg.host());
        ok(d.cli(bin, &["tag", "two:1", &other]));
        let out = ok(d.cli(bin, &["push", &other]));
        assert!(out.contains("Mounted from push"), "{bin}: {out}");
        // pulled back from nothing, it runs
        let id = ok(d.cli(bin, &["image", "inspect", "-f", "{{.Id}}", &name]));
        ok(d.cli(bin, &["rmi", "-f", id.trim()]));
        ok(d.cli(bin, &["pull", &name]));
        let out = ok(d.cli(
            bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                &name,
                "cat",
                "/pushed.txt",
            ],
        ));
        assert_eq!(out.trim(), "pushed");
        ok(d.cli(bin, &["tag", &name, "two:1"]));
        // what is not there locally
        let out = d.cli(bin, &["push", &format!("{}/push{i}/two:nope", reg.host())]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("An image does not exist locally with the tag"),
            "{bin}: {}",
            stderr(&out)
        );
    }
    // an unreachable registry fails the push, the daemon goes on
    ok(d.berth(&["tag", "bb", "127.0.0.1:1/x/bb:v1"]));
    let out = d.berth(&["push", "127.0.0.1:1/x/bb:v1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    ok(d.berth(&["version"]));
}

/// Runs a CLI with its own client config directory (and PATH, for a credential helper).
fn cli_with_config(
    d: &Daemon,
    bin: &str,
    config: &Path,
    path_dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    let mut c = Command::new(bin);
    c.args(args)
        .env("DOCKER_HOST", d.host())
        .env("BERTH_HOST", d.host())
        .env("DOCKER_CONFIG", config)
        .env("DOCKER_CLI_HINTS", "false")
        .env(
            "PATH",
            format!(
                "{}:{}",
                path_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        let mut w = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            w.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

#[test]
fn login_logout_and_credential_helpers() {
    let Some(d) = daemon_with_busybox("login_logout_and_credential_helpers") else {
        return;
    };
    let Some(reg) = Registry::start_with(Some(("alice", "s3cret"))) else {
        return;
    };
    let tools = tempfile::tempdir().unwrap();
    // a credential helper speaking the docker-credential-* protocol, keeping its
    // secrets in a file beside it
    let store = tools.path().join("store.json");
    let helper = tools.path().join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!(
            r#"#!/usr/bin/python3
import json, sys
path = "{}"
try:
    data = json.load(open(path))
except Exception:
    data = {{}}
action = sys.argv[1]
text = sys.stdin.read().strip()
if action == "store":
    v = json.loads(text)
    data[v["ServerURL"]] = {{"Username": v["Username"], "Secret": v["Secret"]}}
    json.dump(data, open(path, "w"))
elif action == "get":
    if text not in data:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": text, **data[text]}}))
elif action == "erase":
    data.pop(text, None)
    json.dump(data, open(path, "w"))
"#,
            store.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let host = reg.host();
    let name = format!("{host}/priv/bb:v1");
    ok(d.berth(&["tag", "bb", &name]));
    for bin in clis().iter() {
        let cfg = tempfile::tempdir().unwrap();
        let run = |args: &[&str], stdin: Option<&str>| {
            cli_with_config(&d, bin, cfg.path(), tools.path(), args, stdin)
        };
        // without credentials: refused
        let out = run(&["push", &name], None);
        assert!(!out.status.success(), "{bin}");
        assert!(
            stderr(&out).contains("unauthorized"),
            "{bin}: {}",
            stderr(&out)
        );
        // a wrong password: Docker's words, nothing stored
        let out = run(
            &["login", "-u", "alice", "--password-stdin", &host],
            Some("wrong\n"),
        );
        assert!(!out.status.success(), "{bin}");
        assert!(
            stderr(&out).contains(&format!(
                "login attempt to http://{host}/v2/ failed with status: 401 Unauthorized"
            )),
            "{bin}: {}",
            stderr(&out)
        );
        assert!(
            !cfg.path().join("config.json").exists() || {
                let t = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
                !t.contains(&host)
            }
        );
        // the right one: stored in config.json, and push and pull work
        let out = run(
            &["login", "-u", "alice", "--password-stdin", &host],
            Some("s3cret\n"),
        );
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        assert!(stdout(&out).contains("Login Succeeded"), "{bin}");
        let text = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
        assert!(
            text.contains(&host) && text.contains("YWxpY2U6czNjcmV0"),
            "{bin}: {text}"
        );
        let out = run(&["push", &name], None);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        // untagged only: bb keeps the layers for the next CLI
        ok(d.cli(bin, &["rmi", &name]));
        let out = run(&["pull", &name], None);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        let out = run(&["logout", &host], None);
        assert!(
            stdout(&out).contains(&format!("Removing login credentials for {host}")),
            "{bin}"
        );
        let text = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
        assert!(!text.contains("YWxpY2U6czNjcmV0"), "{bin}: {text}");
        // with a credential helper: the secret goes to it, not to config.json
        std::fs::write(
            cfg.path().join("config.json"),
            r#"{"credsStore": "berthtest"}"#,
        )
        .unwrap();
        let out = run(
            &["login", "-u", "alice", "--password-stdin", &host],
            Some("s3cret\n"),
        );
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        let text = std::fs::read_to_string(cfg.path().join("config.json")).unwrap();
        assert!(
            !text.contains("s3cret") && !text.contains("YWxpY2U6czNjcmV0"),
            "{bin}: {text}"
        );
        let kept = std::fs::read_to_string(&store).unwrap();
        assert!(kept.contains("s3cret"), "{bin}: {kept}");
        ok(d.cli(bin, &["rmi", &name]));
        let out = run(&["pull", &name], None);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        let out = run(&["logout", &host], None);
        assert!(out.status.success(), "{bin}: {}", stderr(&out));
        let kept = std::fs::read_to_string(&store).unwrap();
        assert!(!kept.contains("s3cret"), "{bin}: {kept}");
        ok(d.cli(bin, &["tag", "bb", &name]));
    }
}

#[test]
fn docker_hub_names_come_from_a_mirror() {
    let Some(src) = daemon_with_busybox("docker_hub_names_come_from_a_mirror") else {
        return;
    };
    let Some(reg) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("bb.tar");
    ok(src.berth(&["save", "-o", archive.to_str().unwrap(), "bb"]));
    reg.push_archive(&archive, "library/busybox", "latest");
    // a mirror that has the image, and one (first) that does not answer at all
    let cfg = work.path().join("daemon.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"registry-mirrors": ["http://127.0.0.1:{}", "http://{}"]}}"#,
            free_port(),
            reg.host()
        ),
    )
    .unwrap();
    let d = Daemon::start_with(&["--config-file", cfg.to_str().unwrap()]);
    let info = d.get_json("/info");
    assert_eq!(
        info["RegistryConfig"]["Mirrors"].as_array().map(Vec::len),
        Some(2),
        "{info}"
    );
    for bin in clis() {
        let out = ok(d.cli(&bin, &["pull", "busybox"]));
        assert!(
            out.contains("docker.io/library/busybox:latest"),
            "{bin}: {out}"
        );
        let img = d.get_json("/images/busybox/json");
        assert_eq!(img["RepoTags"][0], "busybox:latest", "{bin}: {img}");
        assert!(
            img["RepoDigests"][0]
                .as_str()
                .unwrap()
                .starts_with("busybox@sha256:"),
            "{bin}: {img}"
        );
        let got = ok(d.cli(
            &bin,
            &[
                "run",
                "--rm",
                "--network",
                "none",
                "busybox",
                "echo",
                "mirrored",
            ],
        ));
        assert_eq!(got.trim(), "mirrored");
        ok(d.cli(&bin, &["rmi", "busybox"]));
    }
    // (a name no mirror has goes to Docker Hub itself: not tried, traffic stays here)
}

#[test]
fn pull_all_tags() {
    let Some(d) = daemon_with_busybox("pull_all_tags") else {
        return;
    };
    let Some(reg) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("bb.tar");
    ok(d.berth(&["save", "-o", archive.to_str().unwrap(), "bb"]));
    for t in ["one", "two", "three"] {
        reg.push_archive(&archive, "test/all", t);
    }
    let repo = format!("{}/test/all", reg.host());
    for bin in clis() {
        let out = ok(d.cli(&bin, &["pull", "-a", &repo]));
        assert!(out.contains("one: Pulling from test/all"), "{bin}: {out}");
        assert_eq!(
            out.trim().lines().last(),
            Some(repo.as_str()),
            "{bin}: {out}"
        );
        let tags = ok(d.cli(&bin, &["images", "--format", "{{.Tag}}", &repo]));
        let mut tags: Vec<&str> = tags.lines().collect();
        tags.sort();
        assert_eq!(tags, ["one", "three", "two"], "{bin}");
        // a tag and -a do not go together
        let out = d.cli(&bin, &["pull", "-a", &format!("{repo}:one")]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("tag can't be used with --all-tags/-a"),
            "{bin}: {}",
            stderr(&out)
        );
        for t in ["one", "two", "three"] {
            ok(d.cli(&bin, &["rmi", &format!("{repo}:{t}")]));
        }
    }
    // a repository with no tags: 404
    let out = d.berth(&["pull", "-a", &format!("{}/test/none", reg.host())]);
    assert!(!out.status.success());
}
