//! Where COPY and ADD read files: the build context (received as a tar, its file data
//! kept in one spill file) or an image's filesystem (a stage's or another image's, seen
//! through a read-only overlay mount). Both answer the same three questions — what is at
//! a path, what a directory holds, what a file contains — so globbing, walking and layer
//! writing are written once.

use berth_build::ignore::{glob, Ignore};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink(String),
}

/// What a path is, with the metadata a layer keeps.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
}

pub trait Source: Send + Sync {
    /// The entry at a clean relative path ("" is the root); symlinks are not followed.
    fn meta(&self, path: &str) -> Option<Meta>;
    /// A directory's entry names, sorted.
    fn children(&self, path: &str) -> Vec<String>;
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>>;
}

/// Cleans a path to a relative one without `.` and `..`; None when `..` would leave the
/// root.
pub fn clean(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Like [`clean`], but `..` stops at the root (paths inside an image, as Docker treats
/// them).
pub fn clamp(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths a COPY source names: itself, or what its glob matches (sorted).
pub fn matches(src: &dyn Source, pattern: &str) -> Vec<String> {
    if !has_glob(pattern) {
        return src
            .meta(pattern)
            .map(|_| vec![pattern.to_string()])
            .unwrap_or_default();
    }
    let mut found = vec![String::new()];
    for part in pattern.split('/') {
        let mut next = Vec::new();
        for dir in &found {
            if !has_glob(part) {
                let p = join(dir, part);
                if src.meta(&p).is_some() {
                    next.push(p);
                }
                continue;
            }
            if !matches!(src.meta(dir).map(|m| m.kind), Some(Kind::Dir)) {
                continue;
            }
            for n in src.children(dir) {
                if glob(part, &n) {
                    next.push(join(dir, &n));
                }
            }
        }
        found = next;
    }
    found.sort();
    found
}

/// The build context: entries by clean relative path, their data in a spill file (a
/// context received as a tar) or in a directory (one a BuildKit client synced).
pub struct Context {
    entries: BTreeMap<String, (Meta, u64)>,
    data: Data,
}

enum Data {
    /// file contents at the entries' offsets
    Spill(File),
    /// the directory the entries are in, its files' content digests, and the stamps
    /// (inode, size, change time) its walk saw, which find a file's recorded digest
    /// without opening it (the directory is locked during the build)
    Dir(rustix::fd::OwnedFd, Option<Hashes>, HashMap<String, Stamp>),
}

/// Content digests of a kept directory's files, by path, valid while the file's inode,
/// size and change time are those recorded (the kernel sets the change time on every
/// write): a build of an unchanged context reads no file to compute its cache keys.
pub struct Hashes {
    file: PathBuf,
    map: std::sync::Mutex<BTreeMap<String, (u64, u64, i64, String)>>,
    changed: std::sync::atomic::AtomicBool,
}

impl Hashes {
    fn load(file: PathBuf) -> Hashes {
        let map = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Hashes {
            file,
            map: std::sync::Mutex::new(map),
            changed: Default::default(),
        }
    }

    /// The recorded digest of the file at `path`, when its stamp is the recorded one.
    fn recorded(&self, path: &str, stamp: Stamp) -> Option<String> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (ino, size, ctime, d) = map.get(path)?;
        ((*ino, *size, *ctime) == stamp).then(|| d.clone())
    }

    /// The digest of the file at `path` (opened as `f`), from the record or computed.
    fn digest(&self, path: &str, f: &mut File) -> io::Result<String> {
        let stamp = stamp_of(&f.metadata()?);
        if let Some(d) = self.recorded(path, stamp) {
            return Ok(d);
        }
        let mut h = Sha256::new();
        io::copy(f, &mut HashWriter(&mut h))?;
        let d = hex::encode(h.finalize());
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path.to_string(), (stamp.0, stamp.1, stamp.2, d.clone()));
        self.changed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(d)
    }

    /// Writes the records back (those of files still there), when something changed.
    fn save(&self, keep: &BTreeMap<String, (Meta, u64)>) {
        if !self.changed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|k, _| keep.contains_key(k));
        if let Ok(b) = serde_json::to_vec(&*map) {
            let tmp = self.file.with_extension("tmp");
            if std::fs::write(&tmp, b).is_ok() {
                let _ = std::fs::rename(&tmp, &self.file);
            }
        }
    }
}

/// What identifies a file's contents while it is not rewritten in place: inode, size,
/// change time (ns).
pub type Stamp = (u64, u64, i64);

fn stamp_of(md: &std::fs::Metadata) -> Stamp {
    (
        md.ino(),
        md.size(),
        md.ctime() * 1_000_000_000 + md.ctime_nsec(),
    )
}

/// The first tar block's checksum holds, or the block is the zero end-of-archive block.
pub fn looks_like_tar(block: &[u8]) -> bool {
    if block.len() < 512 {
        return block.iter().all(|b| *b == 0);
    }
    if block[..512].iter().all(|b| *b == 0) {
        return true;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

impl Context {
    /// Reads a context tar (already decompressed). `spill` holds file data; paths the
    /// context's `.dockerignore` excludes are left out, except `keep` (the Dockerfile).
    pub fn receive(mut r: impl Read, spill: File, keep: &str) -> Result<Context, String> {
        let mut head = Vec::with_capacity(512);
        (&mut r)
            .take(512)
            .read_to_end(&mut head)
            .map_err(|e| format!("failed to read build context: {e}"))?;
        if !looks_like_tar(&head) {
            return Err(
                "failed to read build context: the context is not a tar archive (plain, gzip or zstd)"
                    .into(),
            );
        }
        let mut ar = tar::Archive::new(io::Cursor::new(head).chain(r));
        let mut data = spill;
        let mut offset = 0u64;
        let mut entries = BTreeMap::new();
        let bad = |e: io::Error| format!("failed to read build context: {e}");
        for e in ar.entries().map_err(bad)? {
            let mut e = match e {
                Ok(e) => e,
                // the docker CLI ends a context whose Dockerfile it added without the
                // last entry's padding or the end blocks; what came before is whole
                Err(err)
                    if err.kind() == io::ErrorKind::UnexpectedEof
                        || err.to_string().contains("unexpected EOF during skip") =>
                {
                    break
                }
                Err(err) => return Err(bad(err)),
            };
            let path = e.path().map_err(bad)?.to_string_lossy().into_owned();
            let Some(path) = clean(&path) else { continue };
            if path.is_empty() {
                continue;
            }
            let h = e.header();
            let mode = h.mode().unwrap_or(0o644) & 0o7777;
            let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
            let mtime = h.mtime().unwrap_or(0);
            let kind = match h.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(
                    e.link_name()
                        .map_err(bad)?
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Link => {
                    // a hard link: the file it names, copied
                    let target = e
                        .link_name()
                        .map_err(bad)?
                        .and_then(|l| clean(&l.to_string_lossy()));
                    if let Some(t) = target.and_then(|t| entries.get(&t).cloned()) {
                        entries.insert(path, t);
                    }
                    continue;
                }
                _ => continue,
            };
            let size = if kind == Kind::File {
                let n = io::copy(&mut e, &mut data).map_err(bad)?;
                offset += n;
                n
            } else {
                0
            };
            let meta = Meta {
                kind,
                mode,
                uid,
                gid,
                mtime,
                size,
            };
            entries.insert(path, (meta, offset - size));
        }
        data.flush().map_err(bad)?;
        let mut ctx = Context {
            entries,
            data: Data::Spill(data),
        };
        ctx.apply_ignore(keep)?;
        Ok(ctx)
    }

    /// [`Context::from_dir`] with file digests kept in `hashes` between builds (a
    /// transferred context goes through [`Context::from_listing`] instead).
    #[cfg(test)]
    fn from_dir_hashed(root: &Path, hashes: Option<PathBuf>) -> io::Result<Context> {
        let mut c = Self::from_dir(root)?;
        if let (Data::Dir(_, h, _), Some(file)) = (&mut c.data, hashes) {
            *h = Some(Hashes::load(file));
        }
        Ok(c)
    }

    /// Saves the file digests computed by this build (a kept directory's).
    pub fn save_hashes(&self) {
        if let Data::Dir(_, Some(h), _) = &self.data {
            h.save(&self.entries);
        }
    }

    /// A kept directory's context from what its transfer listed (the tree as it now
    /// stands, so nothing is walked), with its recorded digests: `stamp`s (inode, size,
    /// change time) of files that were already there find their digests unread.
    pub fn from_listing(
        root: &Path,
        listing: impl IntoIterator<Item = (String, Meta, Option<Stamp>)>,
        hashes: Option<PathBuf>,
    ) -> io::Result<Context> {
        let fd = rustix::fs::open(
            root,
            rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let mut entries = BTreeMap::new();
        let mut stamps = HashMap::new();
        for (path, meta, stamp) in listing {
            if let Some(s) = stamp {
                stamps.insert(path.clone(), s);
            }
            entries.insert(path, (meta, 0));
        }
        Ok(Context {
            entries,
            data: Data::Dir(fd, hashes.map(Hashes::load), stamps),
        })
    }

    /// The tree under `root` as a context, walked (what the client sent is what there
    /// is: its `.dockerignore` was applied on its side). Symlinks are entries, never
    /// followed.
    pub fn from_dir(root: &Path) -> io::Result<Context> {
        let mut listing = Vec::new();
        let mut todo = vec![String::new()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(root.join(&dir))? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let path = join(&dir, &name);
                let md = e.metadata()?;
                let ft = md.file_type();
                let kind = if ft.is_dir() {
                    todo.push(path.clone());
                    Kind::Dir
                } else if ft.is_symlink() {
                    Kind::Symlink(std::fs::read_link(e.path())?.to_string_lossy().into_owned())
                } else if ft.is_file() {
                    Kind::File
                } else {
                    continue;
                };
                let stamp = (kind == Kind::File).then(|| stamp_of(&md));
                let meta = Meta {
                    size: if kind == Kind::File { md.size() } else { 0 },
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: u64::from(md.uid()),
                    gid: u64::from(md.gid()),
                    mtime: md.mtime().max(0) as u64,
                };
                listing.push((path, meta, stamp));
            }
        }
        Self::from_listing(root, listing, None)
    }

    fn apply_ignore(&mut self, keep: &str) -> Result<(), String> {
        let text = match self.read_to_string(".dockerignore") {
            Some(t) => t,
            None => return Ok(()),
        };
        let ig = Ignore::parse(&text);
        self.entries
            .retain(|p, _| p == keep || p == ".dockerignore" || !ig.excluded(p));
        Ok(())
    }

    /// [`Context::apply_ignore`] for a context unpacked into `root` (this build's own
    /// directory): what `.dockerignore` excludes also leaves the disk, so that a bind
    /// mount of the context does not show it either.
    pub fn exclude_ignored(&mut self, keep: &str, root: &Path) -> Result<(), String> {
        let before: Vec<String> = self.entries.keys().cloned().collect();
        self.apply_ignore(keep)?;
        // children before their directories; a directory that keeps an entry stays
        for gone in before
            .iter()
            .rev()
            .filter(|p| !self.entries.contains_key(*p))
        {
            let path = root.join(gone);
            match std::fs::symlink_metadata(&path) {
                Ok(md) if md.is_dir() => {
                    let _ = std::fs::remove_dir(&path);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Once the Dockerfile (`dockerfile`) is read: `.dockerignore` and the Dockerfile
    /// leave the context when its `.dockerignore` excludes them, as dockerd's builder
    /// does (docker-py and the docker CLI send a Dockerfile from outside the context under
    /// a `.dockerfile.<random>` name listed in the ignore file, so nothing of it lands in
    /// the image).
    pub fn drop_build_files(&mut self, dockerfile: &str) {
        let Some(text) = self.read_to_string(".dockerignore") else {
            return;
        };
        let ig = Ignore::parse(&text);
        for p in [".dockerignore", dockerfile] {
            if ig.excluded(p) {
                self.entries.remove(p);
            }
        }
    }

    pub fn read_to_string(&self, path: &str) -> Option<String> {
        let (m, _) = self.entries.get(path)?;
        if m.kind != Kind::File {
            return None;
        }
        let mut buf = Vec::with_capacity(m.size as usize);
        self.open(path).ok()?.read_to_end(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    }

    /// A digest of what copying `paths` would copy: names, kinds, modes, owners, contents.
    pub fn checksum(&self, paths: &[String]) -> io::Result<String> {
        let mut h = Sha256::new();
        for p in paths {
            let mut all = vec![p.clone()];
            if matches!(self.meta(p).map(|m| m.kind), Some(Kind::Dir)) {
                let below = format!("{p}/");
                let inside = self
                    .entries
                    .keys()
                    .filter(|k| p.is_empty() || k.starts_with(&below));
                all.extend(inside.cloned());
            }
            for q in all {
                let Some(m) = self.meta(&q) else { continue };
                h.update(format!(
                    "{q}\0{:?}\0{:o}\0{}:{}\0",
                    m.kind, m.mode, m.uid, m.gid
                ));
                if m.kind == Kind::File {
                    match &self.data {
                        Data::Dir(dir, Some(hashes), stamps) => {
                            if let Some(d) = stamps.get(&q).and_then(|s| hashes.recorded(&q, *s)) {
                                h.update(d.as_bytes());
                                continue;
                            }
                            let fd = rustix::fs::openat2(
                                dir,
                                q.as_str(),
                                rustix::fs::OFlags::RDONLY
                                    | rustix::fs::OFlags::NOFOLLOW
                                    | rustix::fs::OFlags::CLOEXEC,
                                rustix::fs::Mode::empty(),
                                rustix::fs::ResolveFlags::BENEATH
                                    | rustix::fs::ResolveFlags::NO_SYMLINKS,
                            )?;
                            let d = hashes.digest(&q, &mut File::from(fd))?;
                            h.update(d.as_bytes());
                        }
                        // the same key as with kept digests: the digest of the digest
                        _ => {
                            let mut fh = Sha256::new();
                            io::copy(&mut self.open(&q)?, &mut HashWriter(&mut fh))?;
                            h.update(hex::encode(fh.finalize()).as_bytes());
                        }
                    }
                }
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn implied_dir() -> Meta {
    Meta {
        kind: Kind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: 0,
        size: 0,
    }
}

impl Source for Context {
    fn meta(&self, path: &str) -> Option<Meta> {
        if path.is_empty() {
            return Some(implied_dir());
        }
        if let Some((m, _)) = self.entries.get(path) {
            return Some(m.clone());
        }
        // a directory the tar names only through its contents
        let below = format!("{path}/");
        self.entries
            .range(below.clone()..)
            .next()
            .filter(|(k, _)| k.starts_with(&below))
            .map(|_| implied_dir())
    }

    fn children(&self, path: &str) -> Vec<String> {
        let below = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut out: Vec<String> = self
            .entries
            .range(below.clone()..)
            .take_while(|(k, _)| k.starts_with(&below))
            .filter_map(|(k, _)| k[below.len()..].split('/').next().map(str::to_string))
            .collect();
        out.dedup();
        out
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let (m, off) = self
            .entries
            .get(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        match &self.data {
            Data::Spill(file) => Ok(Box::new(SpillReader {
                file,
                pos: *off,
                end: off + m.size,
            })),
            // never through a symlink, never out of the directory
            Data::Dir(dir, _, _) => {
                let fd = rustix::fs::openat2(
                    dir,
                    path,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::NOFOLLOW
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                    rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_SYMLINKS,
                )?;
                Ok(Box::new(File::from(fd)))
            }
        }
    }
}

/// Reads `file` from `pos` to `end` without moving a shared cursor.
pub struct SpillReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> SpillReader<'a> {
    pub fn new(file: &'a File, pos: u64, end: u64) -> Self {
        SpillReader { file, pos, end }
    }
}

impl Read for SpillReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A filesystem tree (an image's root): symlinks inside it resolve within it.
pub struct Tree {
    pub root: PathBuf,
}

impl Tree {
    /// The host path of `path` with its directories' symlinks followed inside the root
    /// (the last element itself is not followed).
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.walk(path, false)
    }

    /// [`Tree::host_path`], following the last element too when `follow_last`.
    fn walk(&self, path: &str, follow_last: bool) -> PathBuf {
        let mut parts: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut hops = 0;
        while let Some(p) = todo.pop() {
            match p.as_str() {
                "" | "." => continue,
                ".." => {
                    parts.pop();
                    continue;
                }
                _ => {}
            }
            let last = !follow_last && todo.iter().all(|t| t.is_empty() || t == ".");
            let here = self.root.join(parts.join("/")).join(&p);
            if !last && hops < 40 {
                if let Ok(target) = std::fs::read_link(&here) {
                    hops += 1;
                    let t = target.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        parts.clear();
                    }
                    todo.extend(t.split('/').rev().map(str::to_string));
                    continue;
                }
            }
            parts.push(p);
        }
        self.root.join(parts.join("/"))
    }
}

impl Tree {
    /// `path` with the image's symlinks in its directories followed (and in its last
    /// element too when `dir`): where a write to it really lands, as a clean relative
    /// path — so a COPY to `/bin/` in an image whose `/bin` links to `usr/bin` writes
    /// `usr/bin/…` instead of hiding the link under a new directory.
    pub fn resolve(&self, path: &str, dir: bool) -> String {
        let p = self.walk(path, dir);
        p.strip_prefix(&self.root)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_else(|_| clamp(path))
    }
}

impl Source for Tree {
    fn meta(&self, path: &str) -> Option<Meta> {
        let p = self.host_path(path);
        let md = std::fs::symlink_metadata(&p).ok()?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink(std::fs::read_link(&p).ok()?.to_string_lossy().into_owned())
        } else if ft.is_file() {
            Kind::File
        } else {
            return None; // devices, fifos, sockets and whiteouts are not copied
        };
        Some(Meta {
            kind,
            mode: md.mode() & 0o7777,
            uid: u64::from(md.uid()),
            gid: u64::from(md.gid()),
            mtime: md.mtime().max(0) as u64,
            size: md.size(),
        })
    }

    fn children(&self, path: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.host_path(path))
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        Ok(Box::new(File::open(self.host_path(path))?))
    }
}

/// A fresh spill file for a context's data, unlinked at once.
pub fn spill_file(dir: &Path) -> io::Result<File> {
    let mut f = tempfile::tempfile_in(dir)?;
    f.rewind()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(files: &[(&str, &str)]) -> Context {
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, d.as_bytes()).unwrap();
        }
        let t = b.into_inner().unwrap();
        Context::receive(&t[..], tempfile::tempfile().unwrap(), "Dockerfile").unwrap()
    }

    #[test]
    fn context_dirs_globs_and_ignore() {
        let c = ctx(&[
            ("Dockerfile", "FROM x"),
            ("a/b.txt", "b"),
            ("a/c.md", "c"),
            ("d.txt", "d"),
            ("secret/key", "k"),
            (".dockerignore", "secret\n**/*.md\n"),
        ]);
        assert_eq!(c.meta("a").unwrap().kind, Kind::Dir);
        assert_eq!(
            c.children(""),
            vec![".dockerignore", "Dockerfile", "a", "d.txt"]
        );
        assert_eq!(matches(&c, "*.txt"), vec!["d.txt"]);
        assert_eq!(matches(&c, "a/*"), vec!["a/b.txt"]);
        assert!(matches(&c, "secret/key").is_empty());
        assert_eq!(c.read_to_string("a/b.txt").unwrap(), "b");
        let one = c.checksum(&["a".into()]).unwrap();
        let two = ctx(&[("a/b.txt", "B")]).checksum(&["a".into()]).unwrap();
        assert_ne!(one, two);
    }

    #[test]
    fn build_files_leave_when_ignored() {
        let mut c = ctx(&[
            ("Dockerfile", "FROM x"),
            (".dockerfile.abc", "FROM x"),
            ("a", "1"),
            (".dockerignore", ".dockerignore\n.dockerfile.abc\n"),
        ]);
        c.drop_build_files(".dockerfile.abc");
        assert_eq!(c.children(""), vec!["Dockerfile", "a"]);
        let mut c = ctx(&[("Dockerfile", "FROM x"), (".dockerignore", "a\n")]);
        c.drop_build_files("Dockerfile");
        assert_eq!(c.children(""), vec![".dockerignore", "Dockerfile"]);
    }

    #[test]
    fn context_without_end_blocks() {
        // as the docker CLI sends it with a Dockerfile from outside the context
        let mut b = tar::Builder::new(Vec::new());
        for (p, d) in [("a", "1"), (".dockerignore", "x\n")] {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, d.as_bytes()).unwrap();
        }
        let t = b.into_inner().unwrap();
        let cut = 512 * 3 + 2; // the second entry's data, no padding, no end blocks
        let c = Context::receive(&t[..cut], tempfile::tempfile().unwrap(), "").unwrap();
        assert_eq!(c.read_to_string(".dockerignore").unwrap(), "x\n");
        assert_eq!(c.read_to_string("a").unwrap(), "1");
    }

    #[test]
    fn not_a_tar() {
        let e = Context::receive(
            &b"hello, this is not a tar archive at all"[..],
            tempfile::tempfile().unwrap(),
            "",
        )
        .err()
        .unwrap();
        assert!(e.contains("not a tar"), "{e}");
        let mut junk = vec![b'x'; 1024];
        junk[0] = b'a';
        assert!(Context::receive(&junk[..], tempfile::tempfile().unwrap(), "").is_err());
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./a/../b/").unwrap(), "b");
        assert_eq!(clean("../x"), None);
        assert_eq!(clamp("../../etc/x"), "etc/x");
    }

    #[test]
    fn tree_follows_symlinks_inside_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("real")).unwrap();
        std::fs::write(d.path().join("real/f"), "x").unwrap();
        std::os::unix::fs::symlink("/real", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("../../../..", d.path().join("up")).unwrap();
        let t = Tree {
            root: d.path().to_path_buf(),
        };
        assert_eq!(t.host_path("link/f"), d.path().join("real/f"));
        assert!(t.host_path("up/etc/passwd").starts_with(d.path()));
        assert!(matches!(t.meta("link").unwrap().kind, Kind::Symlink(_)));
        assert_eq!(t.resolve("link/new", false), "real/new");
        assert_eq!(t.resolve("link", true), "real");
        assert_eq!(t.resolve("link", false), "link");
        assert_eq!(t.resolve("nothere/x", true), "nothere/x");
    }

    #[test]
    fn kept_digests_give_the_same_keys_and_see_changes() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("a")).unwrap();
        std::fs::write(tree.join("a/x"), "one").unwrap();
        std::fs::write(tree.join("y"), "two").unwrap();
        let hashes = d.path().join("hashes");
        let all = ["".to_string()];
        let plain = Context::from_dir(&tree).unwrap().checksum(&all).unwrap();
        let c = Context::from_dir_hashed(&tree, Some(hashes.clone())).unwrap();
        assert_eq!(c.checksum(&all).unwrap(), plain);
        c.save_hashes();
        assert!(hashes.exists());
        // from the record, the same key
        let c = Context::from_dir_hashed(&tree, Some(hashes.clone())).unwrap();
        assert_eq!(c.checksum(&all).unwrap(), plain);
        // a file replaced with the same size: a new inode, a new key
        std::fs::write(tree.join("new"), "ONE").unwrap();
        std::fs::rename(tree.join("new"), tree.join("a/x")).unwrap();
        let c = Context::from_dir_hashed(&tree, Some(hashes.clone())).unwrap();
        let changed = c.checksum(&all).unwrap();
        assert_ne!(changed, plain);
        assert_eq!(
            Context::from_dir(&tree).unwrap().checksum(&all).unwrap(),
            changed
        );
        // rewritten in place: its change time moves
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(tree.join("y"), "TWO").unwrap();
        let c = Context::from_dir_hashed(&tree, Some(hashes)).unwrap();
        assert_ne!(c.checksum(&all).unwrap(), changed);
    }
}
