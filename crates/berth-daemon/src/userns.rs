//! User-namespace remapping (daemon.json `userns-remap`): containers run in a user
//! namespace where their root is an unprivileged host user's subordinate ID range
//! (`/etc/subuid`, `/etc/subgid`).
//!
//! Image layers stay as they are on disk: berthd mounts the layer store once more,
//! idmapped with the same ranges, and remapped containers' overlays take their lower
//! layers from there, so a file owned by 0 in a layer is owned by the remapped root in
//! the container. A container's own upper layer holds host IDs of the range, as Docker's
//! remapped root does.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The user `default` stands for, made when missing, as Docker's.
pub const DEFAULT_USER: &str = "dockremap";
/// The range size given to the default user.
const DEFAULT_RANGE: u32 = 65536;
/// The kernel's overflow ID ("nobody"), for IDs outside the ranges.
const OVERFLOW_ID: u32 = 65534;
/// Where subordinate ranges handed out by berthd start.
const FIRST_SUBORDINATE: u32 = 100000;

/// One line of a uid_map/gid_map: `size` IDs from `container` in the namespace are
/// `host`.. outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub container: u32,
    pub host: u32,
    pub size: u32,
}

/// Maps container IDs to host IDs and back, through the ranges.
pub fn to_host(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container && id - m.container < m.size)
        .map(|m| m.host + (id - m.container))
}

pub fn to_container(maps: &[IdMap], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.host && id - m.host < m.size)
        .map(|m| m.container + (id - m.host))
}

/// The ranges of `name` (or of its numeric ID) in a subuid/subgid file, as maps of
/// consecutive container IDs from 0.
pub fn parse_subordinate(text: &str, name: &str, id: Option<u32>) -> Vec<IdMap> {
    let mut next = 0u32;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(who), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mine = who == name || id.is_some_and(|i| who == i.to_string());
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u32>()) else {
            continue;
        };
        if mine && count > 0 {
            out.push(IdMap {
                container: next,
                host: start,
                size: count,
            });
            next = next.saturating_add(count);
        }
    }
    out
}

/// The first `size` IDs from [`FIRST_SUBORDINATE`] that no range in `text` uses.
fn free_range(text: &str, size: u32) -> u32 {
    let mut used: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let _ = f.next()?;
            let s: u64 = f.next()?.parse().ok()?;
            let c: u64 = f.next()?.parse().ok()?;
            Some((s, s + c))
        })
        .collect();
    used.sort();
    let mut start = u64::from(FIRST_SUBORDINATE);
    for (s, e) in used {
        if s < start + u64::from(size) && e > start {
            start = e;
        }
    }
    u32::try_from(start).unwrap_or(u32::MAX - size)
}

/// A name or numeric ID looked up in a passwd/group file: (name, id).
fn lookup(file: &str, key: &str) -> Option<(String, u32)> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let id: u32 = f.get(2)?.parse().ok()?;
        (f[0] == key || key.parse::<u32>().ok() == Some(id)).then(|| (f[0].to_string(), id))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RemapError {
    #[error("Can't create ID mappings: {0}")]
    Mappings(String),
    #[error("{0}")]
    Setup(String),
}

/// The user and group a `userns-remap` value names: `default`, `user`, `user:group`,
/// `uid`, `uid:gid`.
fn resolve(spec: &str) -> Result<(String, Option<u32>, String, Option<u32>), RemapError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(RemapError::Mappings(format!(
            "invalid userns-remap value {spec:?}: use default, USER, USER:GROUP, UID or UID:GID"
        )));
    }
    let (uname, uid) = match lookup("/etc/passwd", user) {
        Some((n, i)) => (n, Some(i)),
        None if user.parse::<u32>().is_ok() => (user.to_string(), user.parse().ok()),
        None => {
            return Err(RemapError::Mappings(format!(
                "no such user {user:?} for userns-remap"
            )))
        }
    };
    // without a group, the subgid ranges are the user's, by the same name
    let Some(group) = group else {
        return Ok((uname.clone(), uid, uname, uid));
    };
    let (gname, gid) = match lookup("/etc/group", group) {
        Some((n, i)) => (n, Some(i)),
        None if group.parse::<u32>().is_ok() => (group.to_string(), group.parse().ok()),
        None => {
            return Err(RemapError::Mappings(format!(
                "no such group {group:?} for userns-remap"
            )))
        }
    };
    Ok((uname, uid, gname, gid))
}

/// Makes the default user and its subordinate ranges, where missing.
fn ensure_default_user() -> Result<(), RemapError> {
    if lookup("/etc/passwd", DEFAULT_USER).is_none() {
        let out = std::process::Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/false",
                "--user-group",
                DEFAULT_USER,
            ])
            .output()
            .map_err(|e| RemapError::Setup(format!("couldn't run useradd: {e}")))?;
        if !out.status.success() {
            return Err(RemapError::Setup(format!(
                "couldn't create the {DEFAULT_USER} user: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(file).unwrap_or_default();
        if parse_subordinate(&text, DEFAULT_USER, None).is_empty() {
            let start = free_range(&text, DEFAULT_RANGE);
            let mut new = text.clone();
            if !new.is_empty() && !new.ends_with('\n') {
                new.push('\n');
            }
            new.push_str(&format!("{DEFAULT_USER}:{start}:{DEFAULT_RANGE}\n"));
            fs::write(file, new)
                .map_err(|e| RemapError::Setup(format!("couldn't write {file}: {e}")))?;
        }
    }
    Ok(())
}

/// The ID maps of a remapped container, both ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub uids: Vec<IdMap>,
    pub gids: Vec<IdMap>,
}

impl Shift {
    /// Host IDs as the container sees them (outside the ranges: the overflow ID).
    pub fn to_container(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            to_container(&self.uids, uid).unwrap_or(OVERFLOW_ID),
            to_container(&self.gids, gid).unwrap_or(OVERFLOW_ID),
        )
    }

    /// Container IDs as host IDs (outside the ranges: the overflow ID).
    pub fn to_host(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            to_host(&self.uids, uid).unwrap_or(OVERFLOW_ID),
            to_host(&self.gids, gid).unwrap_or(OVERFLOW_ID),
        )
    }
}

/// Remapping set up for this daemon.
#[derive(Debug)]
pub struct Remap {
    pub user: String,
    pub group: String,
    pub ids: Shift,
    /// the layer store, and its idmapped mount
    layers: PathBuf,
    idmapped: PathBuf,
}

impl Remap {
    /// Resolves `spec`'s ranges and mounts the layer store idmapped at
    /// `data_root/UID.GID/layers`. The data root and the directories above it must let
    /// the remapped root through, as Docker requires.
    pub fn setup(spec: &str, data_root: &Path, layers: &Path) -> Result<Self, RemapError> {
        if spec == "default" {
            ensure_default_user()?;
        }
        let spec = if spec == "default" {
            DEFAULT_USER
        } else {
            spec
        };
        let (user, uid, group, gid) = resolve(spec)?;
        let uids = parse_subordinate(
            &fs::read_to_string("/etc/subuid").unwrap_or_default(),
            &user,
            uid,
        );
        let gids = parse_subordinate(
            &fs::read_to_string("/etc/subgid").unwrap_or_default(),
            &group,
            gid,
        );
        if uids.is_empty() {
            return Err(RemapError::Mappings(format!(
                "no subuid ranges found for user {user:?}"
            )));
        }
        if gids.is_empty() {
            return Err(RemapError::Mappings(format!(
                "no subgid ranges found for group {group:?}"
            )));
        }
        check_traversable(data_root)?;
        let r = Remap {
            idmapped: data_root
                .join(format!("{}.{}", uids[0].host, gids[0].host))
                .join("layers"),
            layers: layers.to_path_buf(),
            user,
            group,
            ids: Shift { uids, gids },
        };
        r.mount()?;
        Ok(r)
    }

    pub fn root_uid(&self) -> u32 {
        self.ids.uids[0].host
    }

    pub fn root_gid(&self) -> u32 {
        self.ids.gids[0].host
    }

    /// A layer directory as remapped containers see it.
    pub fn layer_path(&self, p: &Path) -> PathBuf {
        match p.strip_prefix(&self.layers) {
            Ok(rel) => self.idmapped.join(rel),
            Err(_) => p.to_path_buf(),
        }
    }

    /// `uid_map`-style maps for the OCI spec.
    pub fn spec_maps(maps: &[IdMap]) -> serde_json::Value {
        serde_json::Value::from(
            maps.iter()
                .map(|m| serde_json::json!({"containerID": m.container, "hostID": m.host, "size": m.size}))
                .collect::<Vec<_>>(),
        )
    }

    fn mount(&self) -> Result<(), RemapError> {
        let err = |what: &str, e: std::io::Error| {
            RemapError::Setup(format!(
                "idmapped mount of the layer store at {}: {what}: {e}",
                self.idmapped.display()
            ))
        };
        fs::create_dir_all(&self.idmapped).map_err(|e| err("creating it", e))?;
        // a mount left by a daemon that died
        while rustix::mount::unmount(&self.idmapped, rustix::mount::UnmountFlags::DETACH).is_ok() {}
        let ns = userns_fd(&self.ids.uids, &self.ids.gids).map_err(|e| err("user namespace", e))?;
        use rustix::mount::{MoveMountFlags, OpenTreeFlags};
        let tree = rustix::mount::open_tree(
            rustix::fs::CWD,
            &self.layers,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| err("open_tree", e.into()))?;
        set_idmap(tree.as_fd(), ns.as_fd()).map_err(|e| err("mount_setattr", e))?;
        rustix::mount::move_mount(
            tree.as_fd(),
            "",
            rustix::fs::CWD,
            &self.idmapped,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| err("move_mount", e.into()))?;
        Ok(())
    }

    /// Takes the idmapped mount away (containers' overlays keep what they use).
    pub fn unmount(&self) {
        let _ = rustix::mount::unmount(&self.idmapped, rustix::mount::UnmountFlags::DETACH);
        if let Some(dir) = self.idmapped.parent() {
            let _ = fs::remove_dir(&self.idmapped);
            let _ = fs::remove_dir(dir);
        }
    }

    /// Changes the ownership of a tree copied from the image to the remapped IDs (the
    /// vfs driver's copy of the image for a container).
    pub fn shift_tree(&self, root: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mut todo = vec![root.to_path_buf()];
        while let Some(p) = todo.pop() {
            let md = p.symlink_metadata()?;
            let (uid, gid) = self.ids.to_host(md.uid(), md.gid());
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
            if md.file_type().is_symlink() {
                continue;
            }
            // chown clears set-id bits; put them back
            if md.mode() & 0o6000 != 0 {
                fs::set_permissions(&p, fs::Permissions::from_mode(md.mode() & 0o7777))?;
            }
            if md.is_dir() {
                for e in fs::read_dir(&p)? {
                    todo.push(e?.path());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Remap {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Refuses a data root the remapped root cannot reach, as Docker does.
fn check_traversable(data_root: &Path) -> Result<(), RemapError> {
    use std::os::unix::fs::PermissionsExt;
    let mut p = data_root.to_path_buf();
    loop {
        if let Ok(md) = fs::metadata(&p) {
            if md.permissions().mode() & 0o001 == 0 {
                if p == data_root {
                    // ours: open it up for traversal only
                    let mode = md.permissions().mode() | 0o011;
                    fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                        .map_err(|e| RemapError::Setup(format!("chmod {}: {e}", p.display())))?;
                } else {
                    return Err(RemapError::Setup(format!(
                        "a subdirectory in your graphroot path ({}) restricts access to the remapped root uid/gid; please fix by allowing 'o+x' permissions on existing directories",
                        p.display()
                    )));
                }
            }
        }
        if !p.pop() {
            return Ok(());
        }
    }
}

/// A user namespace with these maps, held by an fd (its process is gone).
fn userns_fd(uids: &[IdMap], gids: &[IdMap]) -> std::io::Result<OwnedFd> {
    let (r, w) = rustix::pipe::pipe()?;
    let (r2, w2) = rustix::pipe::pipe()?;
    // SAFETY: the child only makes raw syscalls (unshare, write, read, _exit) before
    // leaving, which is all a child of a multi-threaded process may do.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: raw syscalls on fds this process owns; _exit never returns.
        unsafe {
            use std::os::fd::AsRawFd;
            // the parent's ends, so its close is seen here
            libc::close(w.as_raw_fd());
            libc::close(r2.as_raw_fd());
            let ok: u8 = (libc::unshare(libc::CLONE_NEWUSER) == 0) as u8;
            libc::write(w2.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            libc::read(r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(w2);
    drop(r);
    let result = (|| {
        let mut ok = [0u8];
        rustix::io::read(&r2, &mut ok)?;
        if ok[0] != 1 {
            return Err(std::io::Error::other("unshare(CLONE_NEWUSER) failed"));
        }
        let lines = |m: &[IdMap]| {
            m.iter()
                .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
                .collect::<String>()
        };
        fs::write(format!("/proc/{pid}/uid_map"), lines(uids))?;
        fs::write(format!("/proc/{pid}/gid_map"), lines(gids))?;
        Ok(OwnedFd::from(fs::File::open(format!(
            "/proc/{pid}/ns/user"
        ))?))
    })();
    drop(w);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
    }
    result
}

/// mount_setattr(MOUNT_ATTR_IDMAP) on a detached mount.
fn set_idmap(tree: std::os::fd::BorrowedFd, ns: std::os::fd::BorrowedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: ns.as_raw_fd() as u64,
    };
    // SAFETY: attr is a valid mount_attr for the size given; the path is a C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id_in_order() {
        let text = "alice:100000:65536\n# c\nbob:200000:1000\n1001:300000:10\nbob:400000:5\n";
        let m = parse_subordinate(text, "bob", Some(1001));
        assert_eq!(
            m,
            vec![
                IdMap {
                    container: 0,
                    host: 200000,
                    size: 1000
                },
                IdMap {
                    container: 1000,
                    host: 300000,
                    size: 10
                },
                IdMap {
                    container: 1010,
                    host: 400000,
                    size: 5
                },
            ]
        );
        assert_eq!(to_host(&m, 0), Some(200000));
        assert_eq!(to_host(&m, 1005), Some(300005));
        assert_eq!(to_host(&m, 1015), None);
        assert_eq!(to_container(&m, 400004), Some(1014));
        assert_eq!(to_container(&m, 0), None);
        assert!(parse_subordinate(text, "carol", None).is_empty());
    }

    #[test]
    fn a_free_range_skips_those_in_use() {
        assert_eq!(free_range("", 65536), 100000);
        assert_eq!(free_range("a:100000:65536\n", 65536), 165536);
        assert_eq!(free_range("a:300000:10\n", 65536), 100000);
        assert_eq!(free_range("a:150000:10\nb:165536:65536\n", 65536), 231072);
    }
}
