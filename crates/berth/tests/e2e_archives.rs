#![allow(clippy::unwrap_used)]
//! Archives: interop with tools no one here wrote (skopeo, umoci), hostile and corrupt
//! archives to load and import, and the layer breakout cases containerd tests
//! (`TestBreakouts` in its archive package), ported as crafted tarballs.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[test]
fn skopeo_reads_and_writes_our_archives() {
    if skip_unless_root("skopeo_reads_and_writes_our_archives") {
        return;
    }
    if !have("skopeo") {
        eprintln!("skipping: skopeo not installed (apt-get install skopeo)");
        return;
    }
    let d = Daemon::start();
    let id = d.import(&busybox_tar(), "bb:latest");
    let dir = d.dir.path();
    let saved = dir.join("saved.tar");
    ok(d.berth(&["save", "-o", saved.to_str().unwrap(), "bb:latest"]));

    // skopeo reads our archive as a docker-archive and as an OCI archive
    let as_oci = dir.join("from-docker.oci.tar");
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("docker-archive:{}", saved.display()),
        &format!("oci-archive:{}:bb:latest", as_oci.display()),
    ]));
    let plain_dir = dir.join("dir");
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci-archive:{}", saved.display()),
        &format!("dir:{}", plain_dir.display()),
    ]));
    assert!(plain_dir.join("manifest.json").exists());
    let gz = dir.join("gz.oci.tar");
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--dest-compress",
        &format!("docker-archive:{}", saved.display()),
        &format!("oci-archive:{}", gz.display()),
    ]));
    let legacy = dir.join("skopeo.docker.tar");
    sh(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("docker-archive:{}", saved.display()),
        &format!("docker-archive:{}:skopeo/bb:v1", legacy.display()),
    ]));

    ok(d.berth(&["rmi", "bb:latest"]));
    assert_eq!(d.store_entries(), (0, 0));
    // and we read what skopeo wrote: a docker-archive, a plain and a gzip OCI archive
    let out = ok(d.berth(&["load", "-i", legacy.to_str().unwrap()]));
    assert_eq!(out, "Loaded image: skopeo/bb:v1\n");
    assert_eq!(d.get_json("/images/skopeo/bb:v1/json")["Id"], id.as_str());
    // skopeo wrote the ref name "bb:latest", itself a reference
    let out = ok(d.berth(&["load", "-i", as_oci.to_str().unwrap()]));
    assert_eq!(out, "Loaded image: bb:latest\n");
    // skopeo rewrites the config when it converts to OCI; the layers are the same
    let loaded = d.get_json("/images/bb:latest/json");
    assert_eq!(
        loaded["RootFS"],
        d.get_json(&format!("/images/{id}/json"))["RootFS"]
    );
    ok(d.berth(&["rmi", "-f", loaded["Id"].as_str().unwrap()]));
    ok(d.berth(&["rmi", "-f", &id]));
    assert_eq!(d.store_entries(), (0, 0));
    let out = ok(d.berth(&["load", "-i", gz.to_str().unwrap()]));
    let gz_id = out
        .trim()
        .strip_prefix("Loaded image ID: ")
        .unwrap_or_else(|| panic!("{out}"));
    let img = d.get_json(&format!("/images/{gz_id}/json"));
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 1);
}

#[test]
fn umoci_reads_our_layout_and_we_read_umocis() {
    if skip_unless_root("umoci_reads_our_layout_and_we_read_umocis") {
        return;
    }
    if !have("umoci") {
        eprintln!("skipping: umoci not installed (apt-get install umoci)");
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let dir = d.dir.path();
    let saved = dir.join("saved.tar");
    ok(d.berth(&["save", "-o", saved.to_str().unwrap(), "bb"]));
    let layout = dir.join("layout");
    std::fs::create_dir(&layout).unwrap();
    sh(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-xf")
        .arg(&saved));
    let tags = sh(Command::new("umoci").args(["ls", "--layout"]).arg(&layout));
    assert_eq!(tags.trim(), "latest");
    let bundle = dir.join("bundle");
    sh(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    assert!(bundle.join("rootfs/bin/busybox").exists());

    // umoci adds a layer; we load the result
    std::fs::write(bundle.join("rootfs/etc/added-by-umoci"), b"hello").unwrap();
    sh(Command::new("umoci")
        .args(["repack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    sh(Command::new("umoci")
        .args(["config", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .args(["--config.cmd", "/bin/sh"]));
    let out_tar = dir.join("umoci.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&out_tar)
        .args(["oci-layout", "index.json", "blobs"]));
    // umoci kept our index annotations, so the new image takes the name over
    let old = d.get_json("/images/bb:latest/json")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ok(d.berth(&["load", "-i", out_tar.to_str().unwrap()]));
    assert_eq!(
        out,
        format!("The image bb:latest already exists, renaming the old one with ID {old} to empty string\nLoaded image: bb:latest\n")
    );
    let img = d.get_json("/images/bb:latest/json");
    assert_ne!(img["Id"], old.as_str());
    // the old image is now dangling, still there
    assert_eq!(
        d.get_json(&format!("/images/{old}/json"))["RepoTags"],
        serde_json::json!([])
    );
    assert_eq!(img["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_eq!(img["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    // the new layer's snapshot holds the file umoci added
    let top = img["GraphDriver"]["Data"]["UpperDir"]
        .as_str()
        .map(str::to_string);
    if let Some(top) = top {
        assert_eq!(
            std::fs::read(Path::new(&top).join("etc/added-by-umoci")).unwrap(),
            b"hello"
        );
    }
}

/// A tar built entry by entry, names written raw (the tar crate refuses `..`).
struct RawTar(Vec<u8>);
impl RawTar {
    fn new() -> Self {
        RawTar(Vec::new())
    }
    fn entry(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        data: &[u8],
        mode: u32,
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.linkname = [0; 100];
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(name, tar::EntryType::Regular, "", data, 0o644)
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Directory, "", b"", 0o755)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Symlink, target, b"", 0o777)
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Link, target, b"", 0o644)
    }
    fn done(&mut self) -> Vec<u8> {
        let mut v = self.0.clone();
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

fn snapshot_of_victim(victim: &Path) -> Vec<(String, Vec<u8>, u32, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(victim)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let data = if m.is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (
                e.file_name().to_string_lossy().into_owned(),
                data,
                m.mode(),
                m.nlink(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn layer_breakouts_never_touch_the_host() {
    if skip_unless_root("layer_breakouts_never_touch_the_host") {
        return;
    }
    let d = Daemon::start();
    let victim = d.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("hello"), b"original").unwrap();
    let v = victim.to_str().unwrap().trim_start_matches('/').to_string();
    let abs = format!("/{v}");
    let up = format!("{}{v}", "../".repeat(12));
    let before = snapshot_of_victim(&victim);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "symlink to an absolute dir, write through it",
            RawTar::new()
                .symlink("link", &abs)
                .file("link/evil", b"x")
                .done(),
        ),
        (
            "symlink with .. to the victim, write through it",
            RawTar::new()
                .symlink("link", &up)
                .file("link/evil", b"x")
                .done(),
        ),
        (
            "symlink to the parent, repeated",
            RawTar::new()
                .symlink("p", "..")
                .file("p/p/p/p/p/p/p/p/p/p/p/p/evil", b"x")
                .done(),
        ),
        (
            "symlink chain out",
            RawTar::new()
                .symlink("a", "b")
                .symlink("b", &abs)
                .file("a/evil", b"x")
                .done(),
        ),
        (
            "name climbing out",
            RawTar::new().file(&format!("{up}/evil"), b"x").done(),
        ),
        (
            "absolute name",
            RawTar::new().file(&format!("{abs}/evil"), b"x").done(),
        ),
        (
            "hardlink to an absolute host file",
            RawTar::new().hardlink("hl", &format!("{abs}/hello")).done(),
        ),
        (
            "hardlink climbing out",
            RawTar::new().hardlink("hl", &format!("{up}/hello")).done(),
        ),
        (
            "hardlink through a symlink out",
            RawTar::new()
                .symlink("link", &abs)
                .hardlink("hl", "link/hello")
                .file("hl", b"overwrite")
                .done(),
        ),
        (
            "hardlink to a symlink out, then written",
            RawTar::new()
                .symlink("s", &format!("{abs}/hello"))
                .hardlink("h", "s")
                .file("h", b"overwrite")
                .done(),
        ),
        (
            "whiteout through a symlink",
            RawTar::new()
                .symlink("link", &abs)
                .file("link/.wh.hello", b"")
                .done(),
        ),
        (
            "opaque whiteout through a symlink",
            RawTar::new()
                .symlink("link", &abs)
                .file("link/.wh..wh..opq", b"")
                .done(),
        ),
        (
            "directory over a symlink out",
            RawTar::new()
                .symlink("link", &abs)
                .dir("link/")
                .file("link/evil", b"x")
                .done(),
        ),
        (
            "chmod through a symlink",
            RawTar::new()
                .symlink("s", &format!("{abs}/hello"))
                .entry("s", tar::EntryType::Regular, "", b"", 0o4777)
                .done(),
        ),
        (
            "whiteout of the parent",
            RawTar::new().file(".wh...", b"").done(),
        ),
        (
            "symlink then file of the same name",
            RawTar::new()
                .symlink("f", &format!("{abs}/hello"))
                .file("f", b"overwrite")
                .done(),
        ),
    ];
    let (snaps0, blobs0) = d.store_entries();
    for (name, t) in &cases {
        let r = d.request("POST", "/images/create?fromSrc=-&repo=breakout", Some(t));
        assert!(
            r.status == 200 || r.status == 400,
            "{name}: {} {}",
            r.status,
            r.text()
        );
        assert_eq!(
            snapshot_of_victim(&victim),
            before,
            "{name} touched the victim"
        );
        if r.status == 400 {
            // refused: nothing of it was kept
            assert_eq!(
                d.store_entries().0,
                snaps0 + d.get_json("/images/json").as_array().unwrap().len(),
                "{name} left a snapshot"
            );
        }
        let _ = blobs0;
    }
    assert!(!d.data_root().join("evil").exists());
    assert!(!Path::new("/evil").exists());
}

#[test]
fn corrupt_and_hostile_archives_add_nothing() {
    if skip_unless_root("corrupt_and_hostile_archives_add_nothing") {
        return;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    let good = d.request("GET", "/images/get?names=bb:latest", None);
    assert_eq!(good.status, 200);
    let good = good.body;
    let before = d.store_entries();
    let images_before = d.get_json("/images/json").as_array().unwrap().len();

    let manifest = |m: &str| RawTar::new().file("manifest.json", m.as_bytes()).done();
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;
    let cfg_digest = sha256_hex(config);
    let layer = one_file_tar("f", b"data");
    let wrong_diff = RawTar::new()
        .file("config.json", config)
        .file("layer.tar", &layer)
        .file(
            "manifest.json",
            br#"[{"Config":"config.json","RepoTags":["evil:1"],"Layers":["layer.tar"]}]"#,
        )
        .done();
    let bad_blob_index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":10}}]}}"#,
        "1".repeat(64)
    );
    let oci_bad_digest = RawTar::new()
        .file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
        .file("index.json", bad_blob_index.as_bytes())
        .file(
            &format!("blobs/sha256/{}", "1".repeat(64)),
            b"not what the digest says",
        )
        .done();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated archive", good[..good.len() / 2].to_vec()),
        (
            "random bytes",
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ),
        ("empty body", Vec::new()),
        ("no manifest", RawTar::new().file("hello", b"x").done()),
        ("manifest is not JSON", manifest("{{{")),
        (
            "manifest names a path outside",
            manifest(r#"[{"Config":"../../../etc/passwd","Layers":[]}]"#),
        ),
        (
            "entry climbing out",
            RawTar::new()
                .file("../../../../tmp/berth-evil", b"x")
                .done(),
        ),
        ("layer does not match its diff id", wrong_diff),
        ("OCI blob digest mismatch", oci_bad_digest),
        (
            "config missing",
            manifest(&format!(
                r#"[{{"Config":"blobs/sha256/{cfg_digest}","Layers":[]}}]"#
            )),
        ),
        (
            "layer count mismatch",
            RawTar::new()
                .file("c.json", config)
                .file("manifest.json", br#"[{"Config":"c.json","Layers":[]}]"#)
                .done(),
        ),
    ];
    for (name, body) in &cases {
        let r = d.request("POST", "/images/load?quiet=1", Some(body));
        assert!(
            r.status == 400 || r.status == 404,
            "{name}: {} {}",
            r.status,
            r.text()
        );
        assert!(
            r.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
        assert_eq!(d.store_entries(), before, "{name} left files");
        assert_eq!(
            d.get_json("/images/json").as_array().unwrap().len(),
            images_before,
            "{name} added an image"
        );
        // and the same through the CLI: an error, exit 1
        let o = d.berth_stdin(&["load"], Some(body));
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stdout(&o));
    }
    assert!(!Path::new("/tmp/berth-evil").exists());
    // imports too
    for (name, body) in [
        ("truncated tar", good[..700].to_vec()),
        ("gzip garbage", vec![0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5]),
    ] {
        let r = d.request("POST", "/images/create?fromSrc=-&repo=x", Some(&body));
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert_eq!(d.store_entries(), before, "{name} left files");
    }
    // compressed archives are fine
    let mut gz = flate2_gzip(&good);
    let r = d.request("POST", "/images/load", Some(&gz));
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Loaded image: bb:latest"), "{}", r.text());
    gz.clear();
}

fn sha256_hex(b: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        });
    String::from_utf8_lossy(&out.unwrap().stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn flate2_gzip(b: &[u8]) -> Vec<u8> {
    let mut c = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = b.to_vec();
    let t = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&data).unwrap();
    });
    let out = c.wait_with_output().unwrap();
    t.join().unwrap();
    out.stdout
}
