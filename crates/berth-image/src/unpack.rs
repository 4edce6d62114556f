//! Applying a layer tarball to a directory, safely.
//!
//! Every entry is written relative to a directory fd of the layer root: parents are
//! resolved with `openat2(RESOLVE_IN_ROOT)`, so a symlink in the layer (absolute or with
//! `..`) resolves as if the root were `/` and never leaves it; the final component is
//! created with `*at` calls that do not follow symlinks. Entry names and hardlink targets
//! that climb above the root (`../x`) are refused; absolute names are taken relative to
//! the root, as Docker does.
//!
//! Whiteouts (OCI image spec, "Representing Changes"): `.wh.NAME` deletes NAME from the
//! layers below, `.wh..wh..opq` hides everything below in its directory. With
//! [`WhiteoutMode::Overlay`] they become overlayfs whiteouts (a 0:0 character device, and
//! the `trusted.overlay.opaque=y` xattr); with [`WhiteoutMode::Delete`] (the copy
//! snapshotter, where the root already holds the layers below) the paths are removed.

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};
use rustix::io::Errno;
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    Overlay,
    Delete,
    /// not a layer (`docker cp`): `.wh.` names are ordinary files
    Literal,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// the tar stream is damaged or truncated
    #[error("invalid tar stream: {0}")]
    Tar(#[source] io::Error),
    /// an entry tries to leave the layer root
    #[error("refusing tar entry {0:?}: path escapes the layer root")]
    Breakout(String),
    /// a filesystem call failed
    #[error("unpacking {path:?}: {source}")]
    Fs {
        path: String,
        #[source]
        source: io::Error,
    },
    /// an entry type layers may not hold
    #[error("unsupported tar entry {path:?} of type {kind}")]
    Unsupported { path: String, kind: String },
}

fn fs_err(path: &str) -> impl FnOnce(Errno) -> UnpackError + '_ {
    move |e| UnpackError::Fs {
        path: path.to_string(),
        source: e.into(),
    }
}

/// Copies an entry's content into its file: a read that fails is the stream's fault, a
/// write that fails (a full disk) is the filesystem's, and the error says which.
fn copy_entry(
    from: &mut impl Read,
    to: &mut impl io::Write,
    path: &str,
) -> Result<u64, UnpackError> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UnpackError::Tar(e)),
        };
        to.write_all(&buf[..n]).map_err(|source| UnpackError::Fs {
            path: path.to_string(),
            source,
        })?;
        total += n as u64;
    }
}

/// Lexically cleans a tar name into components below the root; `None` if it climbs out.
pub fn clean_components(name: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// What the unpacker tells a [`crate::split`] writer: where each regular file's content
/// sits in the stream, and where on disk it ends up (moved aside to `extra/` when a later
/// entry of the same layer replaces or deletes it).
pub struct ContentLog<'a> {
    mark: Box<dyn FnMut(u64, u64) + 'a>,
    extra_dir: PathBuf,
    extra: Option<OwnedFd>,
    table: Vec<String>,
    tracked: std::collections::HashMap<Vec<String>, u32>,
}

impl<'a> ContentLog<'a> {
    /// `extra_dir` is created when a file has to be moved aside.
    pub fn new(mark: impl FnMut(u64, u64) + 'a, extra_dir: PathBuf) -> Self {
        ContentLog {
            mark: Box::new(mark),
            extra_dir,
            extra: None,
            table: Vec::new(),
            tracked: Default::default(),
        }
    }

    /// Content paths by index, relative to the snapshot directory (`fs/...`, `extra/N`).
    pub fn into_table(self) -> Vec<String> {
        self.table
    }
}

struct Applier<'a> {
    log: Option<ContentLog<'a>>,
    root: OwnedFd,
    mode: WhiteoutMode,
    euid_root: bool,
    /// every entry's owner, instead of the archive's
    owner: Option<(u32, u32)>,
    /// owners (the archive's or `owner`) mapped, e.g. into a user namespace's range
    shift: Option<&'a IdFn>,
    /// paths this layer wrote, for opaque whiteouts in delete mode
    written: HashSet<Vec<String>>,
    /// directory mtimes, applied after all entries (children would change them)
    dir_times: Vec<(Vec<String>, i64)>,
    cache: Option<(Vec<String>, OwnedFd)>,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// For resolution inside the root, where symlinks are followed but clamped to it.
const RESOLVE_DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

impl Applier<'_> {
    /// Opens (creating as needed) the directory `comps` inside the root.
    fn open_dir(&mut self, comps: &[String]) -> Result<OwnedFd, UnpackError> {
        if let Some((p, fd)) = &self.cache {
            if p.as_slice() == comps {
                return rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(fs_err(&comps.join("/")));
            }
        }
        let mut fd = rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(fs_err("/"))?;
        let mut prefix = PathBuf::from(".");
        for c in comps {
            prefix.push(c);
            let shown = prefix.display().to_string();
            match rfs::openat2(
                &self.root,
                &prefix,
                RESOLVE_DIR_FLAGS,
                Mode::empty(),
                in_root(),
            ) {
                Ok(f) => fd = f,
                Err(Errno::NOENT) => {
                    rfs::mkdirat(&fd, c.as_str(), Mode::from_raw_mode(0o755))
                        .map_err(fs_err(&shown))?;
                    fd = rfs::openat(&fd, c.as_str(), DIR_FLAGS, Mode::empty())
                        .map_err(fs_err(&shown))?;
                }
                Err(e) => return Err(fs_err(&shown)(e)),
            }
        }
        let dup = rustix::io::fcntl_dupfd_cloexec(&fd, 0).map_err(fs_err("/"))?;
        self.cache = Some((comps.to_vec(), dup));
        Ok(fd)
    }

    /// Removes `name` in `dir` (whose path is `parent`) whatever it is, without following
    /// symlinks. Files of this layer whose content the split still needs move aside first.
    fn remove_all(
        &mut self,
        dir: &OwnedFd,
        parent: &[String],
        name: &str,
    ) -> Result<(), UnpackError> {
        self.save_tracked(parent, name)?;
        self.cache = None;
        remove_all_at(dir, name).map_err(fs_err(name))
    }

    fn save_tracked(&mut self, parent: &[String], name: &str) -> Result<(), UnpackError> {
        let Some(log) = self.log.as_mut() else {
            return Ok(());
        };
        let mut prefix = parent.to_vec();
        prefix.push(name.to_string());
        let mut hits: Vec<(Vec<String>, u32)> = log
            .tracked
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if hits.is_empty() {
            return Ok(());
        }
        hits.sort();
        if log.extra.is_none() {
            let shown = log.extra_dir.display().to_string();
            match rfs::mkdir(&log.extra_dir, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(fs_err(&shown)(e)),
            }
            log.extra =
                Some(rfs::open(&log.extra_dir, DIR_FLAGS, Mode::empty()).map_err(fs_err(&shown))?);
        }
        for (comps, idx) in hits {
            let Some((base, p)) = comps.split_last() else {
                continue;
            };
            let pdir = self.open_dir(p)?;
            let log = self
                .log
                .as_mut()
                .ok_or_else(|| UnpackError::Breakout(String::new()))?;
            let extra = log
                .extra
                .as_ref()
                .ok_or_else(|| UnpackError::Breakout(String::new()))?;
            rfs::renameat(&pdir, base.as_str(), extra, idx.to_string().as_str())
                .map_err(fs_err(&comps.join("/")))?;
            log.table[idx as usize] = format!("extra/{idx}");
            log.tracked.remove(&comps);
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<u64, UnpackError> {
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let comps =
            clean_components(&raw_name).ok_or_else(|| UnpackError::Breakout(raw_name.clone()))?;
        let Some((base, parent)) = comps.split_last() else {
            // the root itself: nothing to create
            return Ok(0);
        };
        let header = entry.header().clone();
        let kind = header.entry_type();
        let dir = self.open_dir(parent)?;

        if base == OPAQUE_WHITEOUT && self.mode != WhiteoutMode::Literal {
            match self.mode {
                WhiteoutMode::Overlay => {
                    rfs::fsetxattr(&dir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                        .map_err(fs_err(&raw_name))?;
                }
                WhiteoutMode::Delete | WhiteoutMode::Literal => {
                    self.clear_unwritten(&dir, parent)?
                }
            }
            return Ok(0);
        }
        if let Some(hidden) = base
            .strip_prefix(WHITEOUT_PREFIX)
            .filter(|_| self.mode != WhiteoutMode::Literal)
        {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::Breakout(raw_name));
            }
            self.remove_all(&dir, parent, hidden)?;
            if self.mode == WhiteoutMode::Overlay {
                rfs::mknodat(
                    &dir,
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
                .map_err(fs_err(&raw_name))?;
            }
            return Ok(0);
        }

        // Empty numeric fields read as zero, as Go's archive/tar (and so Docker) reads them.
        let mode = Mode::from_raw_mode(header.mode().unwrap_or(0) & 0o7777);
        let uid = match self.owner {
            Some((u, _)) => u,
            None => header.uid().unwrap_or(0) as u32,
        };
        let gid = match self.owner {
            Some((_, g)) => g,
            None => header.gid().unwrap_or(0) as u32,
        };
        let (uid, gid) = match self.shift {
            Some(f) => f(uid, gid),
            None => (uid, gid),
        };
        let mtime = header.mtime().unwrap_or(0) as i64;
        let xattrs = pax_xattrs(&mut entry);
        let existing = rfs::statat(&dir, base.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing
            .as_ref()
            .is_some_and(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);
        if existing.is_some() && !(kind.is_dir() && existing_is_dir) {
            self.remove_all(&dir, parent, base)?;
        }
        let mut size = 0;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = rfs::openat(
                    &dir,
                    base.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(fs_err(&raw_name))?;
                let mut file = std::fs::File::from(fd);
                // sparse entries store their data in another shape: those bytes stay raw
                let logged = kind != tar::EntryType::GNUSparse;
                if let Some(log) = self.log.as_mut().filter(|_| logged) {
                    let idx = log.table.len() as u32;
                    (log.mark)(entry.raw_file_position(), entry.size());
                    log.table.push(format!("fs/{}", comps.join("/")));
                    log.tracked.insert(comps.clone(), idx);
                }
                size = copy_entry(&mut entry, &mut file, &raw_name)?;
                self.finish_fd(file.as_fd(), &raw_name, uid, gid, mode, &xattrs)?;
                set_times_fd(file.as_fd(), mtime);
            }
            tar::EntryType::Directory => {
                if !existing_is_dir {
                    rfs::mkdirat(&dir, base.as_str(), Mode::from_raw_mode(0o755))
                        .map_err(fs_err(&raw_name))?;
                }
                let fd = rfs::openat(&dir, base.as_str(), DIR_FLAGS, Mode::empty())
                    .map_err(fs_err(&raw_name))?;
                self.finish_fd(fd.as_fd(), &raw_name, uid, gid, mode, &xattrs)?;
                self.dir_times.push((comps.clone(), mtime));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                rfs::symlinkat(target.as_str(), &dir, base.as_str()).map_err(fs_err(&raw_name))?;
                self.chown_at(&dir, base, &raw_name, uid, gid)?;
                let ts = times(mtime);
                let _ = rfs::utimensat(&dir, base.as_str(), &ts, AtFlags::SYMLINK_NOFOLLOW);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let tcomps = clean_components(&target)
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| UnpackError::Breakout(format!("{raw_name} -> {target}")))?;
                let (tbase, tparent) = tcomps
                    .split_last()
                    .ok_or_else(|| UnpackError::Breakout(target.clone()))?;
                let tdir = rfs::openat2(
                    &self.root,
                    tparent.iter().fold(PathBuf::from("."), |p, c| p.join(c)),
                    RESOLVE_DIR_FLAGS,
                    Mode::empty(),
                    in_root(),
                )
                .map_err(fs_err(&target))?;
                rfs::linkat(&tdir, tbase.as_str(), &dir, base.as_str(), AtFlags::empty())
                    .map_err(fs_err(&raw_name))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                rfs::mknodat(&dir, base.as_str(), ft, mode, rfs::makedev(major, minor))
                    .map_err(fs_err(&raw_name))?;
                self.chown_at(&dir, base, &raw_name, uid, gid)?;
                let _ = rfs::chmodat(&dir, base.as_str(), mode, AtFlags::empty());
                let _ = rfs::utimensat(
                    &dir,
                    base.as_str(),
                    &times(mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                );
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => return Ok(0),
            other => {
                return Err(UnpackError::Unsupported {
                    path: raw_name,
                    kind: format!("{other:?}"),
                })
            }
        }
        if self.mode == WhiteoutMode::Delete {
            self.written.insert(comps);
        }
        Ok(size)
    }

    fn finish_fd(
        &self,
        fd: rustix::fd::BorrowedFd<'_>,
        name: &str,
        uid: u32,
        gid: u32,
        mode: Mode,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<(), UnpackError> {
        if let Err(e) = rfs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid))) {
            if self.euid_root {
                return Err(fs_err(name)(e));
            }
        }
        // after chown: chown clears setuid/setgid bits
        rfs::fchmod(fd, mode).map_err(fs_err(name))?;
        for (k, v) in xattrs {
            if k.starts_with("trusted.overlay.") {
                continue; // only whiteouts may produce overlay metadata
            }
            if let Err(e) = rfs::fsetxattr(fd, k.as_str(), v, XattrFlags::empty()) {
                if self.euid_root && e != Errno::OPNOTSUPP {
                    return Err(fs_err(name)(e));
                }
            }
        }
        Ok(())
    }

    fn chown_at(
        &self,
        dir: &OwnedFd,
        base: &str,
        name: &str,
        uid: u32,
        gid: u32,
    ) -> Result<(), UnpackError> {
        match rfs::chownat(
            dir,
            base,
            Some(uid_of(uid)),
            Some(gid_of(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Err(e) if self.euid_root => Err(fs_err(name)(e)),
            _ => Ok(()),
        }
    }

    /// Delete mode's opaque whiteout: drop every child the lower layers left here.
    fn clear_unwritten(&mut self, dir: &OwnedFd, parent: &[String]) -> Result<(), UnpackError> {
        let mut names = Vec::new();
        let d = rfs::Dir::read_from(dir).map_err(fs_err("opaque directory"))?;
        for e in d {
            let e = e.map_err(fs_err("opaque directory"))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if n == "." || n == ".." {
                continue;
            }
            let mut p = parent.to_vec();
            p.push(n.clone());
            if !self.written.contains(&p) {
                names.push(n);
            }
        }
        for n in names {
            self.remove_all(dir, parent, &n)?;
        }
        Ok(())
    }

    fn finish_dir_times(&mut self) {
        for (comps, mtime) in std::mem::take(&mut self.dir_times) {
            let p = comps.iter().fold(PathBuf::from("."), |p, c| p.join(c));
            if let Ok(fd) = rfs::openat2(&self.root, &p, DIR_FLAGS, Mode::empty(), in_root()) {
                set_times_fd(fd.as_fd(), mtime);
            }
        }
    }
}

fn uid_of(u: u32) -> rfs::Uid {
    rfs::Uid::from_raw(u)
}
fn gid_of(g: u32) -> rfs::Gid {
    rfs::Gid::from_raw(g)
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_times_fd(fd: rustix::fd::BorrowedFd<'_>, mtime: i64) {
    let _ = rfs::futimens(fd, &times(mtime));
}

fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Ok(k) = ext.key() {
                if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                    out.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// Removes `name` below `dir` recursively, never following a symlink.
pub fn remove_all_at(dir: &OwnedFd, name: &str) -> Result<(), Errno> {
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e),
    }
    let sub = rfs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    let mut children = Vec::new();
    let d = rfs::Dir::read_from(&sub)?;
    for e in d {
        let e = e?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n != "." && n != ".." {
            children.push(n);
        }
    }
    for c in children {
        remove_all_at(&sub, &c)?;
    }
    match rfs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies the layer tar read from `reader` onto `root`; returns the bytes of file data
/// written (the layer's size as Docker reports it).
pub fn apply_layer<R: Read>(
    reader: R,
    root: &Path,
    mode: WhiteoutMode,
) -> Result<u64, UnpackError> {
    apply_layer_logged(reader, root, mode, None).map(|(size, _)| size)
}

/// [`apply_layer`], reporting file contents to `log` for a split of the layer.
pub fn apply_layer_logged<'a, R: Read>(
    reader: R,
    root: &Path,
    mode: WhiteoutMode,
    log: Option<ContentLog<'a>>,
) -> Result<(u64, Option<ContentLog<'a>>), UnpackError> {
    let root_fd =
        rfs::open(root, DIR_FLAGS, Mode::empty()).map_err(fs_err(&root.display().to_string()))?;
    apply_at(reader, root_fd, mode, None, None, log)
}

/// Maps an entry's (uid, gid) to the owner it gets on disk.
pub type IdFn = dyn Fn(u32, u32) -> (u32, u32) + Send + Sync;

/// Extracts a tar (not a layer: `.wh.` names are ordinary files) into the directory
/// `root`, an fd the caller resolved safely; nothing is created outside it. With
/// `owner`, every entry gets that owner instead of the archive's; with `shift`, owners
/// are mapped through it.
pub fn extract_at<R: Read>(
    reader: R,
    root: OwnedFd,
    owner: Option<(u32, u32)>,
    shift: Option<&IdFn>,
) -> Result<u64, UnpackError> {
    apply_at(reader, root, WhiteoutMode::Literal, owner, shift, None).map(|(n, _)| n)
}

fn apply_at<'a, R: Read>(
    reader: R,
    root_fd: OwnedFd,
    mode: WhiteoutMode,
    owner: Option<(u32, u32)>,
    shift: Option<&'a IdFn>,
    log: Option<ContentLog<'a>>,
) -> Result<(u64, Option<ContentLog<'a>>), UnpackError> {
    let mut a = Applier {
        log,
        root: root_fd,
        mode,
        owner,
        shift,
        euid_root: rustix::process::geteuid().is_root(),
        written: HashSet::new(),
        dir_times: Vec::new(),
        cache: None,
    };
    let mut archive = tar::Archive::new(reader);
    let mut total = 0u64;
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let entry = entry.map_err(UnpackError::Tar)?;
        total += a.apply(entry)?;
    }
    a.finish_dir_times();
    Ok((total, a.log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        assert_eq!(
            clean_components("/a/./b/"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(clean_components("a/../b"), Some(vec!["b".into()]));
        assert_eq!(clean_components("../x"), None);
        assert_eq!(clean_components("a/../../x"), None);
        assert_eq!(clean_components("./"), Some(vec![]));
    }

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(rustix::process::geteuid().as_raw() as u64);
        h.set_gid(rustix::process::getegid().as_raw() as u64);
        b.append_data(&mut h, name, data).unwrap();
    }

    fn add_link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_entry_type(kind);
        h.set_uid(rustix::process::geteuid().as_raw() as u64);
        h.set_gid(rustix::process::getegid().as_raw() as u64);
        b.append_link(&mut h, name, target).unwrap();
    }

    #[test]
    fn symlink_parent_stays_inside() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let t = tar_of(|b| {
            add_link(b, tar::EntryType::Symlink, "up", "../victim");
            add_link(b, tar::EntryType::Symlink, "abs", victim.to_str().unwrap());
            add_file(b, "up/hello", b"x");
            add_file(b, "abs/hello", b"y");
        });
        // the links dangle inside the root: refusing is as good as containing
        let _ = apply_layer(&t[..], &dest, WhiteoutMode::Delete);
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        // with the target present inside the root, writes land there
        std::fs::remove_dir_all(&dest).unwrap();
        std::fs::create_dir_all(dest.join("victim")).unwrap();
        std::fs::create_dir_all(dest.join(victim.strip_prefix("/").unwrap())).unwrap();
        apply_layer(&t[..], &dest, WhiteoutMode::Delete).unwrap();
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        assert!(dest.join("victim/hello").exists());
        assert!(dest
            .join(victim.strip_prefix("/").unwrap())
            .join("hello")
            .exists());
    }

    #[test]
    fn dotdot_names_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let mut raw = tar_of(|b| add_file(b, "placeholder", b"x"));
        // rewrite the name in the header to one the builder would refuse
        raw[..100].fill(0);
        raw[..11].copy_from_slice(b"../escaped\0");
        let mut h = tar::Header::from_byte_slice(&raw[..512]).clone();
        h.set_cksum();
        raw[..512].copy_from_slice(h.as_bytes());
        let err = apply_layer(&raw[..], &dest, WhiteoutMode::Delete).unwrap_err();
        assert!(matches!(err, UnpackError::Breakout(_)), "{err}");
        assert!(!tmp.path().join("escaped").exists());
    }

    #[test]
    fn delete_mode_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/old"), b"o").unwrap();
        std::fs::write(root.join("gone"), b"g").unwrap();
        let t = tar_of(|b| {
            add_file(b, "d/new", b"n");
            add_file(b, "d/.wh..wh..opq", b"");
            add_file(b, ".wh.gone", b"");
        });
        apply_layer(&t[..], root, WhiteoutMode::Delete).unwrap();
        assert!(!root.join("gone").exists());
        assert!(!root.join("d/old").exists());
        assert!(!root.join("d/sub").exists());
        assert!(root.join("d/new").exists());
    }

    #[test]
    fn truncated_tar_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tar_of(|b| add_file(b, "f", &[7u8; 4000]));
        let err = apply_layer(&t[..1500], tmp.path(), WhiteoutMode::Delete).unwrap_err();
        assert!(matches!(err, UnpackError::Tar(_)), "{err}");
    }
}
