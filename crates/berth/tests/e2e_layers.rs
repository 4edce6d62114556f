#![allow(clippy::unwrap_used)]
//! Layers on disk, with both snapshot drivers: whiteouts become overlayfs whiteouts
//! (overlay2) or deletions (vfs), and ownership, modes, setuid bits, xattrs, hardlinks
//! and device nodes survive unpacking.

mod common;
use common::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// Layer 1: files of every kind. Layer 2: deletes some, makes a directory opaque.
fn layers() -> (Vec<u8>, Vec<u8>) {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0, 0, 0),
        "d/",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0, 0, 1),
        "d/x",
        &b"x"[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0, 0, 1),
        "a",
        &b"a"[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o4755, 1000, 1001, 4),
        "suid",
        &b"suid"[..],
    )
    .unwrap();
    let mut hl = header(tar::EntryType::Link, 0o644, 0, 0, 0);
    b.append_link(&mut hl, "hard", "suid").unwrap();
    let mut dev = header(tar::EntryType::Char, 0o666, 0, 0, 0);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    b.append_data(&mut dev, "null", &[][..]).unwrap();
    b.append_data(
        &mut header(tar::EntryType::Fifo, 0o600, 0, 0, 0),
        "fifo",
        &[][..],
    )
    .unwrap();
    let mut sl = header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
    b.append_link(&mut sl, "link", "d/x").unwrap();
    // a file with an xattr, as a PAX record
    b.append_pax_extensions([("SCHILY.xattr.user.berth", &b"yes"[..])])
        .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o600, 0, 0, 2),
        "xattr",
        &b"xa"[..],
    )
    .unwrap();
    let l1 = b.into_inner().unwrap();

    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0, 0, 0),
        ".wh.a",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Directory, 0o755, 0, 0, 0),
        "d/",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0, 0, 0),
        "d/.wh..wh..opq",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0, 0, 1),
        "d/y",
        &b"y"[..],
    )
    .unwrap();
    let l2 = b.into_inner().unwrap();
    (l1, l2)
}

fn sha(b: &[u8]) -> String {
    use std::io::Write;
    let mut c = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b).unwrap();
    String::from_utf8(c.wait_with_output().unwrap().stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A docker-archive of a two-layer image.
fn two_layer_archive() -> Vec<u8> {
    let (l1, l2) = layers();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["sha256:{}","sha256:{}"]}},"history":[{{"created_by":"one"}},{{"created_by":"two"}}]}}"#,
        sha(&l1),
        sha(&l2)
    );
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        b.append_data(
            &mut header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64),
            name,
            data,
        )
        .unwrap();
    };
    add("l1/layer.tar", &l1);
    add("l2/layer.tar", &l2);
    add("config.json", config.as_bytes());
    add("manifest.json", br#"[{"Config":"config.json","RepoTags":["layers:2"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#);
    b.into_inner().unwrap()
}

fn snapshot_dirs(d: &Daemon) -> Vec<PathBuf> {
    let img = d.get_json("/images/layers:2/json");
    let diffs: Vec<String> = img["RootFS"]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let chain1 = diffs[0].clone();
    let chain2 = format!(
        "sha256:{}",
        sha(format!("{} {}", chain1, diffs[1]).as_bytes())
    );
    [chain1, chain2]
        .iter()
        .map(|c| {
            d.data_root()
                .join("snapshots")
                .join(c.trim_start_matches("sha256:"))
                .join("fs")
        })
        .collect()
}

fn check_first_layer(fs: &Path) {
    let m = std::fs::metadata(fs.join("suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!((m.uid(), m.gid()), (1000, 1001), "ownership kept");
    assert_eq!(m.nlink(), 2, "hardlink kept");
    assert_eq!(std::fs::metadata(fs.join("hard")).unwrap().ino(), m.ino());
    let n = std::fs::metadata(fs.join("null")).unwrap();
    assert!(n.file_type().is_char_device());
    assert_eq!(n.rdev(), rustix::fs::makedev(1, 3));
    assert!(std::fs::metadata(fs.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::read_link(fs.join("link")).unwrap(),
        Path::new("d/x")
    );
    assert_eq!(m.mtime(), 1_700_000_000);
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(fs.join("xattr"), "user.berth", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"yes");
}

#[test]
fn overlay_layers_hold_overlay_whiteouts() {
    if skip_unless_root("overlay_layers_hold_overlay_whiteouts") {
        return;
    }
    let d = Daemon::start_with(&["--storage-driver", "overlay2"]);
    assert_eq!(d.get_json("/info")["Driver"], "overlay2");
    let r = d.request("POST", "/images/load", Some(&two_layer_archive()));
    assert!(r.text().contains("Loaded image: layers:2"), "{}", r.text());
    let dirs = snapshot_dirs(&d);
    check_first_layer(&dirs[0]);
    let top = &dirs[1];
    let wh = std::fs::symlink_metadata(top.join("a")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a is an overlay whiteout"
    );
    let mut buf = [0u8; 4];
    let n = rustix::fs::getxattr(top.join("d"), "trusted.overlay.opaque", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert_eq!(std::fs::read(top.join("d/y")).unwrap(), b"y");
    assert!(!top.join("d/.wh..wh..opq").exists());
    // mounted, the whiteouts hide the lower layer's files
    let mnt = d.dir.path().join("mnt");
    let work = d.dir.path().join("work");
    let upper = d.dir.path().join("upper");
    for p in [&mnt, &work, &upper] {
        std::fs::create_dir_all(p).unwrap();
    }
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        top.display(),
        dirs[0].display(),
        upper.display(),
        work.display()
    );
    let data = std::ffi::CString::new(opts).unwrap();
    rustix::mount::mount(
        "overlay",
        &mnt,
        "overlay",
        rustix::mount::MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .unwrap();
    let names = |p: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let top_names = names(&mnt);
    let d_names = names(&mnt.join("d"));
    rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
    assert!(!top_names.contains(&"a".to_string()), "{top_names:?}");
    assert_eq!(d_names, vec!["y".to_string()]);
    // saving gives back the same layers
    let saved = d.request("GET", "/images/get?names=layers:2", None);
    let ours = d.get_json("/images/layers:2/json");
    ok(d.berth(&["rmi", "layers:2"]));
    let r = d.request("POST", "/images/load", Some(&saved.body));
    assert!(r.text().contains("Loaded image: layers:2"));
    assert_eq!(d.get_json("/images/layers:2/json")["Id"], ours["Id"]);
}

#[test]
fn vfs_layers_apply_whiteouts_as_deletions() {
    if skip_unless_root("vfs_layers_apply_whiteouts_as_deletions") {
        return;
    }
    let d = Daemon::start_with(&["--storage-driver", "vfs"]);
    assert_eq!(d.get_json("/info")["Driver"], "vfs");
    let r = d.request("POST", "/images/load", Some(&two_layer_archive()));
    assert!(r.text().contains("Loaded image: layers:2"), "{}", r.text());
    let dirs = snapshot_dirs(&d);
    check_first_layer(&dirs[0]);
    // the second snapshot is the whole tree with the deletions applied
    let top = &dirs[1];
    check_first_layer(top);
    assert!(!top.join("a").exists());
    assert!(!top.join("d/x").exists());
    assert_eq!(std::fs::read(top.join("d/y")).unwrap(), b"y");
    let hist = ok(d.berth(&["history", "--format", "{{.CreatedBy}}", "layers:2"]));
    assert_eq!(hist, "two\none\n");
    ok(d.berth(&["rmi", "layers:2"]));
    assert_eq!(d.store_entries(), (0, 0));
}
