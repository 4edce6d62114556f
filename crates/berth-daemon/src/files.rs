//! Files of a container, done by berthd itself (nothing from the image is executed):
//! `archive` (stat, copy out, copy in: `docker cp`), `export`, `changes`.
//!
//! Paths are resolved inside the container's root with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`, so `..` and symlinks (absolute ones included) stay in the
//! container whatever they point at, also if they change while we work
//! (CVE-2018-15664); below the resolved path, the walk goes fd by fd without following
//! any symlink. A running container is seen through `/proc/PID/root` (its mounts
//! included); a stopped one through its rootfs, mounted for the time of the work.

use crate::containers::Containers;
use crate::error::EngineError;
use crate::model::Ctr;
use rustix::fd::OwnedFd;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A container's root directory, open; unmounts what it mounted when dropped.
pub struct Root {
    pub fd: OwnedFd,
    mounted: Option<PathBuf>,
    /// a stopped container's volumes and binds, mounted into its rootfs (innermost last)
    binds: Vec<PathBuf>,
    /// the volumes those took, given back when done
    taken: Option<(Arc<crate::volumes::Volumes>, Vec<String>)>,
    /// a remapped container's IDs: archives carry the container's view of owners
    pub ids: Option<crate::userns::Shift>,
}

impl Drop for Root {
    fn drop(&mut self) {
        for b in self.binds.iter().rev() {
            crate::sys::unmount(b);
        }
        if let Some(p) = &self.mounted {
            crate::sys::unmount(p);
        }
        if let Some((vols, taken)) = &self.taken {
            crate::mounts::release(vols, taken);
        }
    }
}

fn io_api(e: impl std::fmt::Display) -> EngineError {
    EngineError::internal(e.to_string())
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

impl Containers {
    /// The container's root: `/proc/PID/root` of a running one (with `mounts`), else its
    /// rootfs (mounted now if need be; the caller holds `c.fs_lock` for a stopped one).
    pub fn open_root(&self, c: &Ctr, mounts: bool) -> Result<Root, EngineError> {
        let ids = self.remap_of(c).map(|r| r.ids.clone());
        let st = c.state();
        if st.status == "running" && st.pid > 0 {
            let path = if mounts {
                PathBuf::from(format!("/proc/{}/root", st.pid))
            } else {
                self.dir(c).join("rootfs")
            };
            let fd = rfs::open(&path, DIR, Mode::empty()).map_err(io_api)?;
            return Ok(Root {
                fd,
                mounted: None,
                binds: Vec::new(),
                taken: None,
                ids,
            });
        }
        let image = c
            .image_id
            .parse()
            .map_err(|_| EngineError::internal("corrupt image id"))?;
        let layers = self.images().layer_dirs(&image)?;
        let driver = self.images().driver();
        self.mount_rootfs(c, &layers, driver)?;
        let rootfs = self.dir(c).join("rootfs");
        let mounted = (driver == berth_image::snapshot::Driver::Overlay).then(|| rootfs.clone());
        let fd = match rfs::open(&rootfs, DIR, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                if let Some(m) = &mounted {
                    crate::sys::unmount(m);
                }
                return Err(io_api(e));
            }
        };
        let mut root = Root {
            fd,
            mounted,
            binds: Vec::new(),
            taken: None,
            ids,
        };
        if mounts {
            // as dockerd: `cp` to and from a stopped container reaches its volumes and
            // bind mounts too (tmpfs mounts hold nothing while it is stopped)
            let mut mps = crate::mounts::of(&c.spec());
            mps.retain(|m| m.kind != "tmpfs");
            mps.sort_by_key(|m| m.destination.split('/').filter(|x| !x.is_empty()).count());
            let (spec_mounts, taken) = crate::mounts::for_start(&self.vols, &mps, &rootfs)?;
            root.taken = Some((self.vols.clone(), taken));
            for m in &spec_mounts {
                let target = bind_into(
                    &root,
                    &m.source,
                    &m.destination,
                    m.options.iter().any(|o| o == "ro"),
                )
                .map_err(|e| {
                    EngineError::internal(format!("mounting {} for the copy: {e}", m.destination))
                })?;
                root.binds.push(target);
            }
        }
        Ok(root)
    }
}

/// Bind-mounts `source` (a host directory or file) on `dest` inside `root`, making the
/// mount point (resolved inside the root, so a symlink in the image cannot send it
/// elsewhere) if missing. Returns the host path mounted on.
fn bind_into(root: &Root, source: &str, dest: &str, ro: bool) -> std::io::Result<PathBuf> {
    use rustix::mount::{mount_bind_recursive, mount_remount, MountFlags};
    let is_dir = Path::new(source).is_dir();
    let parts: Vec<&str> = dest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let path_flags = OFlags::PATH | OFlags::CLOEXEC;
    let open = |n: usize| {
        let p = if n == 0 {
            ".".to_string()
        } else {
            parts[..n].join("/")
        };
        rfs::openat2(&root.fd, p, path_flags, Mode::empty(), in_root())
    };
    for i in 1..=parts.len() {
        match open(i) {
            Ok(_) => {}
            Err(rustix::io::Errno::NOENT) => {
                let parent = open(i - 1)?;
                let parent = rfs::openat(&parent, ".", DIR, Mode::empty())?;
                if i == parts.len() && !is_dir {
                    drop(rfs::openat(
                        &parent,
                        parts[i - 1],
                        OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::from_raw_mode(0o644),
                    )?);
                } else {
                    rfs::mkdirat(&parent, parts[i - 1], Mode::from_raw_mode(0o755))?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let cur = open(parts.len())?;
    let at = format!("/proc/self/fd/{}", fd_num(&cur));
    mount_bind_recursive(source, at.as_str())?;
    let host = std::fs::read_link(&at)?;
    if ro {
        mount_remount(&host, MountFlags::BIND | MountFlags::RDONLY, "")?;
    }
    Ok(host)
}

/// `path` as components inside the container ("/" joined, `.` dropped); `..` is left
/// for the kernel to clamp at the root.
fn rel(path: &str) -> PathBuf {
    let mut p = PathBuf::from(".");
    for c in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        p.push(c);
    }
    p
}

/// Splits a container path into its parent (resolved in the root) and its last name.
/// A path ending in `/` or `/.` names a directory: it is resolved whole (a final
/// symlink followed), as Docker does; otherwise its last component is not followed.
fn split(path: &str) -> (PathBuf, Option<String>) {
    let r = rel(path);
    if path.ends_with('/') || path.ends_with("/.") {
        return (r, None);
    }
    match r.file_name() {
        Some(n) if r != Path::new(".") => {
            let name = n.to_string_lossy().into_owned();
            (
                r.parent().map(Path::to_path_buf).unwrap_or_default(),
                Some(name),
            )
        }
        _ => (r, None),
    }
}

/// A path that could not be opened: missing (404), or running through a file that is
/// not a directory (as dockerd, whose lstat fails so, a 500 naming the cause).
fn path_error(e: rustix::io::Errno, path: &str, c: &Ctr) -> EngineError {
    if e == rustix::io::Errno::NOTDIR {
        EngineError::internal(format!("lstat {path}: not a directory"))
    } else {
        not_found(path, c)
    }
}

fn not_found(path: &str, c: &Ctr) -> EngineError {
    EngineError::not_found(format!(
        "Could not find the file {path} in container {}",
        c.name()
    ))
}

/// Go's `os.FileMode` bits for a stat, as Docker's path stat carries them.
fn go_mode(st: &rfs::Stat) -> u32 {
    let perm = st.st_mode & 0o777;
    let mut m = perm;
    if st.st_mode & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if st.st_mode & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if st.st_mode & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m | match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => 1 << 31,
        FileType::Symlink => 1 << 27,
        FileType::BlockDevice => 1 << 26,
        FileType::CharacterDevice => (1 << 26) | (1 << 21),
        FileType::Fifo => 1 << 25,
        FileType::Socket => 1 << 24,
        _ => 0,
    }
}

/// The name Docker gives `path` in a stat and as the top of its archive: its last
/// component (`.` for `dir/.`, `/` for the root).
fn base_name(path: &str) -> String {
    if path.ends_with("/.") {
        return ".".into();
    }
    path.split('/')
        .rfind(|c| !c.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// The parent directory of `path`, opened inside the root, and the last name.
fn open_parent(root: &Root, path: &str) -> Result<(OwnedFd, Option<String>), rustix::io::Errno> {
    let (parent, name) = split(path);
    let fd = rfs::openat2(&root.fd, &parent, DIR, Mode::empty(), in_root())?;
    Ok((fd, name))
}

/// `X-Docker-Container-Path-Stat`: name, size, mode, mtime, linkTarget (a symlink's
/// target resolved in the container).
pub fn stat_path(c: &Ctr, root: &Root, path: &str) -> Result<serde_json::Value, EngineError> {
    let (dir, name) = open_parent(root, path).map_err(|e| path_error(e, path, c))?;
    let name_s = base_name(path);
    let st = rfs::statat(
        &dir,
        name.as_deref().unwrap_or("."),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| path_error(e, path, c))?;
    let mut link_target = String::new();
    if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
        // where it leads inside the container: resolve it there and name the result
        if let Ok(fd) = rfs::openat2(
            &root.fd,
            rel(path),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            in_root(),
        ) {
            link_target = resolved_name(root, &fd).unwrap_or_default();
        }
        if link_target.is_empty() {
            // a dangling link: where it would lead, as dockerd names it (so `cp -L`
            // of it fails there rather than copying something else)
            link_target = dangling_target(root, &dir, name.as_deref().unwrap_or("."), path)
                .unwrap_or_default();
        }
    }
    let mtime = chrono::DateTime::from_timestamp(st.st_mtime, st.st_mtime_nsec as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    Ok(json!({
        "name": name_s,
        "size": st.st_size,
        "mode": go_mode(&st),
        "mtime": mtime,
        "linkTarget": link_target,
    }))
}

/// Where the symlink `name` in `dir` (the container path `path`) leads though nothing is
/// there: its target taken from the link's directory, `..` kept inside the root, and
/// the part of it that exists resolved in the root.
fn dangling_target(root: &Root, dir: &OwnedFd, name: &str, path: &str) -> Option<String> {
    let target = rfs::readlinkat(dir, name, Vec::new()).ok()?;
    let target = target.to_string_lossy();
    let joined = if target.starts_with('/') {
        target.to_string()
    } else {
        let parent = path
            .trim_end_matches('/')
            .rsplit_once('/')
            .map(|(p, _)| p)
            .unwrap_or("");
        format!("{parent}/{target}")
    };
    let clamped = crate::build::source::clamp(&joined);
    let mut parts: Vec<&str> = clamped.split('/').filter(|p| !p.is_empty()).collect();
    let last = parts.pop()?;
    let parent = format!("/{}", parts.join("/"));
    let base = rfs::openat2(
        &root.fd,
        rel(&parent),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        in_root(),
    )
    .ok()
    .and_then(|fd| resolved_name(root, &fd))
    .unwrap_or(parent);
    Some(format!("{}/{last}", base.trim_end_matches('/')))
}

/// The container path of an fd opened inside the root, from the two /proc links.
fn resolved_name(root: &Root, fd: &OwnedFd) -> Option<String> {
    let base = std::fs::read_link(format!("/proc/self/fd/{}", fd_num(&root.fd))).ok()?;
    let full = std::fs::read_link(format!("/proc/self/fd/{}", fd_num(fd))).ok()?;
    let r = full.strip_prefix(&base).ok()?;
    Some(format!("/{}", r.display()))
}

fn fd_num(fd: &OwnedFd) -> i32 {
    std::os::fd::AsRawFd::as_raw_fd(fd)
}

/// Writes `path` as a tar to `out`: the file itself (a symlink as a symlink) or the
/// directory with everything in it, named by its last component (`.` for `dir/.`).
pub fn tar_path<W: Write>(c: &Ctr, root: &Root, path: &str, out: W) -> Result<(), EngineError> {
    let (dir, name) = open_parent(root, path).map_err(|e| path_error(e, path, c))?;
    let name = name.unwrap_or_else(|| ".".into());
    rfs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| path_error(e, path, c))?;
    // the root's entries are named `/`, `/NAME`…, as dockerd names them
    let rebase = match base_name(path) {
        r if r == "/" => String::new(),
        r => r,
    };
    let mut b = tar::Builder::new(out);
    add_tree(&mut b, &dir, &name, &rebase, root.ids.as_ref()).map_err(io_api)?;
    b.into_inner().map_err(io_api)?.flush().map_err(io_api)?;
    Ok(())
}

/// Writes the whole root (export): every entry below it, named relative to it.
pub fn tar_root<W: Write>(root: &Root, out: W) -> Result<(), EngineError> {
    let mut b = tar::Builder::new(out);
    let mut names = list_dir(&root.fd).map_err(io_api)?;
    names.sort();
    for n in names {
        add_tree(&mut b, &root.fd, &n, &n, root.ids.as_ref()).map_err(io_api)?;
    }
    b.into_inner().map_err(io_api)?.flush().map_err(io_api)?;
    Ok(())
}

fn list_dir(fd: &OwnedFd) -> std::io::Result<Vec<String>> {
    let dup = rfs::openat(fd, ".", DIR, Mode::empty())?;
    let mut out = Vec::new();
    for e in rfs::Dir::read_from(&dup)? {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            out.push(n);
        }
    }
    Ok(out)
}

/// Appends an entry named exactly `name`: the tar crate drops `./` from the names it
/// sets, but Docker's archive of `dir/.` names its entries `./…` and the docker CLI
/// renames them by that prefix. Names too long for the header go the usual way.
fn put<W: Write, R: std::io::Read>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    name: &str,
    data: R,
) -> std::io::Result<()> {
    let raw = name.as_bytes();
    let field = &mut h.as_old_mut().name;
    if raw.len() < field.len() {
        field.fill(0);
        field[..raw.len()].copy_from_slice(raw);
        h.set_cksum();
        b.append(h, data)
    } else {
        b.append_data(h, name, data)
    }
}

/// Adds `name` (in `dir`) as `as_name`, and what is below it, never following a symlink.
fn add_tree<W: Write>(
    b: &mut tar::Builder<W>,
    dir: &OwnedFd,
    name: &str,
    as_name: &str,
    ids: Option<&crate::userns::Shift>,
) -> std::io::Result<()> {
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    let (uid, gid) = match ids {
        Some(ids) => ids.to_container(st.st_uid, st.st_gid),
        None => (st.st_uid, st.st_gid),
    };
    h.set_uid(uid as u64);
    h.set_gid(gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            h.set_entry_type(tar::EntryType::Directory);
            put(b, &mut h, &format!("{as_name}/"), std::io::empty())?;
            let sub = rfs::openat(dir, name, DIR | OFlags::NOFOLLOW, Mode::empty())?;
            let mut names = list_dir(&sub)?;
            names.sort();
            for n in names {
                add_tree(b, &sub, &n, &format!("{as_name}/{n}"), ids)?;
            }
        }
        FileType::RegularFile => {
            let f = rfs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let f = std::fs::File::from(f);
            let len = f.metadata()?.len();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(len);
            put(b, &mut h, as_name, std::io::Read::take(f, len))?;
        }
        FileType::Symlink => {
            let target = rfs::readlinkat(dir, name, Vec::new())?;
            h.set_entry_type(tar::EntryType::Symlink);
            let target = target.to_string_lossy();
            if h.set_link_name(target.as_ref()).is_ok() {
                put(b, &mut h, as_name, std::io::empty())?;
            } else {
                b.append_link(&mut h, as_name, target.as_ref())?;
            }
        }
        t @ (FileType::CharacterDevice | FileType::BlockDevice) => {
            h.set_entry_type(if t == FileType::CharacterDevice {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            });
            h.set_device_major(rfs::major(st.st_rdev))?;
            h.set_device_minor(rfs::minor(st.st_rdev))?;
            put(b, &mut h, as_name, std::io::empty())?;
        }
        FileType::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            put(b, &mut h, as_name, std::io::empty())?;
        }
        // sockets have no place in an archive
        _ => {}
    }
    Ok(())
}

/// Extracts a tar into the directory `path` (which must exist); with `copy_uid_gid`
/// the archive's owners are kept, else everything belongs to root, as Docker does.
pub fn extract<R: std::io::Read>(
    c: &Ctr,
    root: &Root,
    path: &str,
    reader: R,
    copy_uid_gid: bool,
) -> Result<(), EngineError> {
    let fd = match rfs::openat2(
        &root.fd,
        rel(path),
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        in_root(),
    ) {
        Ok(fd) => fd,
        Err(_) => return Err(not_found(path, c)),
    };
    let st = rfs::fstat(&fd).map_err(io_api)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(EngineError::invalid("extraction point is not a directory"));
    }
    let dir = rfs::openat2(&root.fd, rel(path), DIR, Mode::empty(), in_root())
        .map_err(|_| not_found(path, c))?;
    let owner = (!copy_uid_gid).then_some((0, 0));
    let shift = root
        .ids
        .clone()
        .map(|ids| Box::new(move |u, g| ids.to_host(u, g)) as Box<berth_image::unpack::IdFn>);
    berth_image::unpack::extract_at(reader, dir, owner, shift.as_deref())
        .map_err(|e| EngineError::invalid(format!("extracting the archive: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_inside_the_root() {
        assert_eq!(
            split("/etc/passwd"),
            (PathBuf::from("./etc"), Some("passwd".into()))
        );
        assert_eq!(split("/"), (PathBuf::from("."), None));
        assert_eq!(split("/a/./b/."), (PathBuf::from("./a/b"), None));
        assert_eq!(split("/a/link/"), (PathBuf::from("./a/link"), None));
        assert_eq!(base_name("/a/b/"), "b");
        assert_eq!(base_name("/a/b/."), ".");
        assert_eq!(base_name("/"), "/");
        assert_eq!(rel("../../etc"), PathBuf::from("./../../etc"));
    }

    #[test]
    fn go_modes() {
        let d = tempfile::tempdir().unwrap();
        let st = rfs::stat(d.path()).unwrap();
        assert_eq!(go_mode(&st) & (1 << 31), 1 << 31);
    }
}
