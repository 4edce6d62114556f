//! A container's filesystem changes against its image (an overlay's upper directory, or
//! a copy compared with the image's layers), written as a layer tar (whiteouts for what
//! went) for `commit` and `docker diff`, and the size of its writable layer.

use rustix::fs::{self as rfs};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One change of the container's filesystem against its image: kind 0 changed, 1
/// added, 2 deleted.
pub type Change = (String, u8);

/// Paths every container has that Docker leaves out of `changes` (its init layer).
const INIT_PATHS: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev",
    "/proc",
    "/sys",
    "/.dockerenv",
    crate::containers::INIT_PATH,
];

/// Is `p` one of the container's own mount points, or below one?
fn is_init_path(p: &str) -> bool {
    INIT_PATHS
        .iter()
        .any(|h| p == *h || p.starts_with(&format!("{h}/")))
}

/// The changes of an overlay upper directory, `lower` being the image's layers
/// (topmost last).
pub fn overlay_changes(upper: &Path, lower: &[PathBuf]) -> std::io::Result<Vec<Change>> {
    let mut out = Vec::new();
    walk_upper(upper, "", lower, &mut out)?;
    finish_changes(out)
}

fn in_lower(lower: &[PathBuf], rel: &str) -> bool {
    lower
        .iter()
        .any(|l| std::fs::symlink_metadata(l.join(rel.trim_start_matches('/'))).is_ok())
}

fn walk_upper(
    dir: &Path,
    prefix: &str,
    lower: &[PathBuf],
    out: &mut Vec<Change>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}/{name}");
        let md = e.metadata()?;
        if md.file_type().is_char_device() && md.rdev() == 0 {
            out.push((path, 2));
            continue;
        }
        let existed = in_lower(lower, &path);
        out.push((path.clone(), if existed { 0 } else { 1 }));
        if md.is_dir() {
            walk_upper(&e.path(), &path, lower, out)?;
        }
    }
    Ok(())
}

/// The changes of a copied rootfs against the image's top layer (vfs driver).
pub fn copy_changes(
    rootfs: &Path,
    image: &Path,
    ids: Option<&crate::userns::Shift>,
) -> std::io::Result<Vec<Change>> {
    let mut out = Vec::new();
    compare(rootfs, image, "", &mut out, ids)?;
    finish_changes(out)
}

fn compare(
    now: &Path,
    was: &Path,
    prefix: &str,
    out: &mut Vec<Change>,
    ids: Option<&crate::userns::Shift>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let names = |d: &Path| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(d)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (names(now), names(was));
    for n in a.union(&b) {
        let path = format!("{prefix}/{n}");
        let (pn, pw) = (now.join(n), was.join(n));
        match (
            std::fs::symlink_metadata(&pn),
            std::fs::symlink_metadata(&pw),
        ) {
            (Ok(m), Err(_)) => {
                out.push((path.clone(), 1));
                if m.is_dir() {
                    compare(&pn, &pw, &path, out, ids)?;
                }
            }
            (Err(_), Ok(_)) => out.push((path, 2)),
            (Ok(m), Ok(o)) => {
                let owner = match ids {
                    Some(ids) => ids.to_container(m.uid(), m.gid()),
                    None => (m.uid(), m.gid()),
                };
                let differs = m.file_type() != o.file_type()
                    || m.mode() != o.mode()
                    || owner != (o.uid(), o.gid())
                    || (!m.is_dir() && (m.size() != o.size() || m.mtime() != o.mtime()));
                let before = out.len();
                if m.is_dir() && o.is_dir() {
                    compare(&pn, &pw, &path, out, ids)?;
                }
                if differs || (m.is_dir() && out.len() > before) {
                    out.insert(before, (path, 0));
                }
            }
            (Err(_), Err(_)) => {}
        }
    }
    Ok(())
}

/// Leaves out the container's own mount points, and directories changed only for them.
fn finish_changes(all: Vec<Change>) -> std::io::Result<Vec<Change>> {
    let kept: Vec<Change> = all.into_iter().filter(|(p, _)| !is_init_path(p)).collect();
    let mut out = Vec::new();
    for (i, (p, k)) in kept.iter().enumerate() {
        if *k == 0 {
            let below = format!("{p}/");
            let is_parent_only = INIT_PATHS.iter().any(|h| h.starts_with(&below));
            if is_parent_only && !kept[i + 1..].iter().any(|(q, _)| q.starts_with(&below)) {
                continue;
            }
        }
        out.push((p.clone(), *k));
    }
    out.sort();
    Ok(out)
}

/// The container's own layer as a tar with OCI whiteouts, for `commit`: from the
/// overlay upper directory (whiteouts and opaque directories translated), or from the
/// changes of a copied rootfs.
pub fn layer_tar<W: Write>(
    dir: &Path,
    changes: Option<&[Change]>,
    ids: Option<&crate::userns::Shift>,
    out: W,
) -> std::io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    match changes {
        // a container never started has no upper directory yet: no changes
        None if !dir.exists() => {}
        None => walk_layer(&mut b, dir, "", ids)?,
        Some(list) => {
            for (p, kind) in list {
                let rel = p.trim_start_matches('/');
                if *kind == 2 {
                    add_whiteout(&mut b, rel)?;
                    continue;
                }
                let full = dir.join(rel);
                let md = std::fs::symlink_metadata(&full)?;
                if md.is_dir() {
                    add_dir(&mut b, rel, &md, ids)?;
                } else {
                    add_file(&mut b, &full, rel, &md, ids)?;
                }
            }
        }
    }
    b.finish()
}

fn add_whiteout<W: Write>(b: &mut tar::Builder<W>, rel: &str) -> std::io::Result<()> {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (format!("{p}/"), n),
        None => (String::new(), rel),
    };
    add_marker(b, &format!("{parent}.wh.{name}"))
}

/// An empty file entry: a whiteout or an opaque-directory marker.
fn add_marker<W: Write>(b: &mut tar::Builder<W>, name: &str) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(0);
    b.append_data(&mut h, name, std::io::empty())
}

/// A directory entry with the directory's metadata.
fn add_dir<W: Write>(
    b: &mut tar::Builder<W>,
    rel: &str,
    md: &std::fs::Metadata,
    ids: Option<&crate::userns::Shift>,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_metadata(md);
    shift_header(&mut h, md, ids);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    b.append_data(&mut h, format!("{rel}/"), std::io::empty())
}

/// A header's owner as the container sees it.
fn shift_header(h: &mut tar::Header, md: &std::fs::Metadata, ids: Option<&crate::userns::Shift>) {
    use std::os::unix::fs::MetadataExt;
    if let Some(ids) = ids {
        let (u, g) = ids.to_container(md.uid(), md.gid());
        h.set_uid(u as u64);
        h.set_gid(g as u64);
    }
}

/// A non-directory entry of a layer (file, symlink, device, fifo).
fn add_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    rel: &str,
    md: &std::fs::Metadata,
    ids: Option<&crate::userns::Shift>,
) -> std::io::Result<()> {
    if ids.is_none() {
        return b.append_path_with_name(path, rel);
    }
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(md, tar::HeaderMode::Complete);
    shift_header(&mut h, md, ids);
    if md.file_type().is_symlink() {
        let target = std::fs::read_link(path)?;
        h.set_size(0);
        b.append_link(&mut h, rel, target)
    } else if md.is_file() {
        b.append_data(&mut h, rel, std::fs::File::open(path)?)
    } else {
        h.set_size(0);
        b.append_data(&mut h, rel, std::io::empty())
    }
}

fn walk_layer<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &Path,
    prefix: &str,
    ids: Option<&crate::userns::Shift>,
) -> std::io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if is_init_path(&format!("/{rel}")) {
            continue;
        }
        let md = e.metadata()?;
        if md.file_type().is_char_device() && md.rdev() == 0 {
            add_whiteout(b, &rel)?;
            continue;
        }
        if md.is_dir() {
            add_dir(b, &rel, &md, ids)?;
            let opaque = rfs::getxattr(e.path(), "trusted.overlay.opaque", &mut [0u8; 4])
                .map(|n| n == 1)
                .unwrap_or(false);
            if opaque {
                add_marker(b, &format!("{rel}/.wh..wh..opq"))?;
            }
            walk_layer(b, &e.path(), &rel, ids)?;
        } else {
            add_file(b, &e.path(), &rel, &md, ids)?;
        }
    }
    Ok(())
}

/// Bytes in the container's own layer (`SizeRw`): the files of the overlay upper
/// directory, or the added and changed files of a copied rootfs; hard links once.
pub fn rw_size(
    dir: &Path,
    driver: berth_image::snapshot::Driver,
    layers: &[PathBuf],
    ids: Option<&crate::userns::Shift>,
) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let mut total = 0;
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                total += walk(&e.path(), seen);
            } else if md.is_file() && seen.insert((md.dev(), md.ino())) {
                total += md.len();
            }
        }
        total
    }
    match driver {
        berth_image::snapshot::Driver::Overlay => {
            walk(&dir.join("upper"), &mut std::collections::HashSet::new())
        }
        berth_image::snapshot::Driver::Copy => {
            let rootfs = dir.join("rootfs");
            let Some(top) = layers.last() else { return 0 };
            copy_changes(&rootfs, top, ids)
                .unwrap_or_default()
                .iter()
                .filter(|(_, k)| *k != 2)
                .filter_map(|(p, _)| {
                    std::fs::symlink_metadata(rootfs.join(p.trim_start_matches('/'))).ok()
                })
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_leave_out_mount_points() {
        let c = finish_changes(vec![
            ("/etc".into(), 0),
            ("/etc/hosts".into(), 1),
            ("/tmp".into(), 0),
            ("/tmp/x".into(), 1),
        ])
        .unwrap();
        assert_eq!(c, vec![("/tmp".into(), 0), ("/tmp/x".into(), 1)]);
    }
}
