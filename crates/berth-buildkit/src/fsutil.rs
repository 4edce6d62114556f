//! fsutil's file transfer ("diffcopy"), both ways.
//!
//! The sender walks its tree in lexical order (a directory, then what it holds) and
//! sends one STAT packet per entry, then an empty STAT. Entries are numbered in that
//! order; the receiver sends a REQ with the number of each regular file whose contents
//! it wants, and the sender answers with DATA packets for it ending with an empty one.
//! When the receiver has what it asked for it sends FIN, and the sender answers FIN.
//! Either side may send ERR with a message instead. Modes are Go's `os.FileMode` bits
//! (permissions, and the file type as high bits); times are nanoseconds.
//!
//! [`receive`] keeps a directory in step with the sender's tree: an entry whose type,
//! size, time, mode and owner are those on disk already is not asked for again (so a
//! second build of the same context moves only what changed), what the sender no longer
//! has is removed. Every path is checked (relative, clean) and every file is made with
//! `*at` calls under a parent directory opened without following symlinks, so a sender
//! cannot write outside the directory through `..` or a symlink it sent.

use crate::{Packet, PacketType, Stat};
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

const GO_DIR: u32 = 1 << 31;
const GO_SYMLINK: u32 = 1 << 27;
const GO_DEVICE: u32 = 1 << 26;
const GO_NAMED_PIPE: u32 = 1 << 25;
const GO_SOCKET: u32 = 1 << 24;
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_CHAR_DEVICE: u32 = 1 << 21;
const GO_STICKY: u32 = 1 << 20;
const GO_IRREGULAR: u32 = 1 << 19;
const GO_TYPE: u32 =
    GO_DIR | GO_SYMLINK | GO_NAMED_PIPE | GO_SOCKET | GO_DEVICE | GO_CHAR_DEVICE | GO_IRREGULAR;

/// Bytes per DATA packet the sender writes (fsutil's own chunk size).
const CHUNK: usize = 32 << 10;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("error from sender: {0}")]
    Sender(String),
    #[error("error from receiver: {0}")]
    Receiver(String),
    #[error("invalid path {0:?} in the file transfer")]
    Path(String),
    #[error("the file transfer broke off: {0}")]
    Protocol(String),
    #[error("{what}: {err}")]
    Io {
        what: String,
        #[source]
        err: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(rustix::io::Errno) -> FsError {
    let what = what.into();
    move |e| FsError::Io {
        what,
        err: e.into(),
    }
}

fn std_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FsError {
    let what = what.into();
    move |err| FsError::Io { what, err }
}

/// The Unix permission bits (with setuid, setgid, sticky) of a Go mode.
pub fn unix_perm(go: u32) -> u32 {
    let mut m = go & 0o777;
    if go & GO_SETUID != 0 {
        m |= 0o4000;
    }
    if go & GO_SETGID != 0 {
        m |= 0o2000;
    }
    if go & GO_STICKY != 0 {
        m |= 0o1000;
    }
    m
}

/// The Go mode of a Unix `st_mode`.
pub fn go_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    if st_mode & 0o4000 != 0 {
        m |= GO_SETUID;
    }
    if st_mode & 0o2000 != 0 {
        m |= GO_SETGID;
    }
    if st_mode & 0o1000 != 0 {
        m |= GO_STICKY;
    }
    m | match st_mode & 0o170000 {
        0o040000 => GO_DIR,
        0o120000 => GO_SYMLINK,
        0o010000 => GO_NAMED_PIPE,
        0o140000 => GO_SOCKET,
        0o060000 => GO_DEVICE,
        0o020000 => GO_DEVICE | GO_CHAR_DEVICE,
        _ => 0,
    }
}

/// What an entry of the transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// devices, fifos, sockets: not kept
    Other,
}

pub fn kind_of(go: u32) -> Kind {
    if go & GO_DIR != 0 {
        Kind::Dir
    } else if go & GO_SYMLINK != 0 {
        Kind::Symlink
    } else if go & GO_TYPE == 0 {
        Kind::File
    } else {
        Kind::Other
    }
}

/// `path` if it is a clean relative path (no empty, `.` or `..` element, no NUL).
pub fn clean_relative(path: &str) -> Option<&str> {
    let ok = !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then_some(path)
}

fn split_parent(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", path),
    }
}

/// What a receive did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// entries the sender listed
    pub entries: u64,
    /// files whose contents were sent (the rest were up to date)
    pub files_sent: u64,
    /// bytes of file contents received
    pub bytes: u64,
    /// the tree as it stands now, in the listing's order (what a reader would find by
    /// walking it, without the walk)
    pub listing: Vec<Received>,
}

/// An entry of the received tree: its clean path, the sender's stat (which the entry now
/// has), and for a regular file that was already there, its inode, size and change time.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub path: String,
    pub stat: Stat,
    pub kept: Option<(u64, u64, i64)>,
}

/// A packet from the other side, or the reason the stream ended.
pub type Incoming = Result<Packet, String>;

/// Bytes of file data asked for and not yet received, at most (one file at least): what
/// the sender may have in flight, and so what can wait in memory. The receiver asks for
/// more files as these arrive.
const MAX_ASKED_BYTES: u64 = 32 << 20;

/// Reads a gRPC stream of packets as they arrive, whatever the pace of the side that
/// handles them (its end, or its error, last). HTTP/2 stacks end a connection that
/// buffers many small DATA frames unread, and fsutil sends a frame per entry: the
/// backlog is kept here instead: file data only as much as the receiver asked for
/// ([`MAX_ASKED_BYTES`]), the listing whole (as BuildKit keeps it). A client that
/// floods packets holds the daemon's socket, which is root's power anyway.
pub fn pump<S>(
    inbound: S,
) -> (
    mpsc::UnboundedReceiver<Incoming>,
    tokio::task::JoinHandle<()>,
)
where
    S: tokio_stream::Stream<Item = Result<Packet, tonic::Status>> + Send + Unpin + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(pump_into(inbound, tx));
    (rx, task)
}

/// What [`pump`] does, into a channel made before the stream was there.
pub async fn pump_into<S>(mut inbound: S, tx: mpsc::UnboundedSender<Incoming>)
where
    S: tokio_stream::Stream<Item = Result<Packet, tonic::Status>> + Send + Unpin + 'static,
{
    use tokio_stream::StreamExt;
    loop {
        match inbound.next().await {
            Some(Ok(p)) => {
                if tx.send(Ok(p)).is_err() {
                    return;
                }
            }
            None => return,
            Some(Err(s)) => {
                let _ = tx.send(Err(s.message().to_string()));
                return;
            }
        }
    }
}

/// Keeps `dest` (a directory that exists) in step with the sender's tree: `incoming`
/// carries the sender's packets, `outgoing` takes ours. Runs the file work on a blocking
/// thread; returns once both sides said FIN.
pub async fn receive(
    incoming: mpsc::UnboundedReceiver<Incoming>,
    outgoing: mpsc::UnboundedSender<Packet>,
    dest: PathBuf,
) -> Result<Report, FsError> {
    tokio::task::spawn_blocking(move || {
        let mut r = Receiver::open(&dest, outgoing.clone())?;
        let res = r.run(incoming);
        if let Err(e) = &res {
            // the sender gets our reason
            let _ = outgoing.send(Packet {
                r#type: PacketType::PacketErr as i32,
                data: e.to_string().into_bytes(),
                ..Default::default()
            });
        }
        res
    })
    .await
    .map_err(|e| FsError::Protocol(e.to_string()))?
}

/// A file asked for. Its temporary file is made when its data starts (the sender sends
/// a few files at a time: only those hold a descriptor, however many were asked for).
struct Pending {
    /// asked for (else waiting in `to_ask`)
    asked: bool,
    file: Option<std::fs::File>,
    /// its clean path, and its temporary file's name beside it
    path: String,
    tmp: String,
    stat: Stat,
}

struct Receiver {
    root: OwnedFd,
    dest: PathBuf,
    out: mpsc::UnboundedSender<Packet>,
    pending: HashMap<u32, Pending>,
    seen: HashSet<String>,
    dirs: Vec<(String, Stat)>,
    hardlinks: Vec<(String, String)>,
    report: Report,
    last_parent: Option<(String, std::rc::Rc<OwnedFd>)>,
    /// files to ask for, in the listing's order, and the bytes asked for and not received
    to_ask: std::collections::VecDeque<u32>,
    asked_bytes: u64,
}

/// The sender's packets as they come, taken from the channel many at a time (one wake-up
/// of the task that feeds it per batch, not per packet).
struct Inbox {
    rx: mpsc::UnboundedReceiver<Incoming>,
    buf: std::collections::VecDeque<Incoming>,
}

impl Inbox {
    fn next(&mut self) -> Option<Incoming> {
        if self.buf.is_empty() {
            let mut v = Vec::with_capacity(256);
            if self.rx.blocking_recv_many(&mut v, 256) == 0 {
                return None;
            }
            self.buf.extend(v);
        }
        self.buf.pop_front()
    }
}

impl Drop for Receiver {
    /// A transfer that broke off leaves no temporary file.
    fn drop(&mut self) {
        let made: Vec<(String, String)> = self
            .pending
            .values()
            .filter(|p| p.file.is_some())
            .map(|p| (p.path.clone(), p.tmp.clone()))
            .collect();
        for (path, tmp) in made {
            if let Ok(parent) = self.parent(&path) {
                let _ = rustix::fs::unlinkat(&parent, tmp.as_str(), AtFlags::empty());
            }
        }
    }
}

impl Receiver {
    fn open(dest: &Path, out: mpsc::UnboundedSender<Packet>) -> Result<Self, FsError> {
        let root = rustix::fs::open(
            dest,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(dest.display().to_string()))?;
        Ok(Receiver {
            root,
            dest: dest.to_path_buf(),
            out,
            pending: HashMap::new(),
            seen: HashSet::new(),
            dirs: Vec::new(),
            hardlinks: Vec::new(),
            report: Report::default(),
            last_parent: None,
            to_ask: Default::default(),
            asked_bytes: 0,
        })
    }

    fn send(&self, p: Packet) -> Result<(), FsError> {
        self.out
            .send(p)
            .map_err(|_| FsError::Protocol("the connection to the sender closed".into()))
    }

    fn run(&mut self, incoming: mpsc::UnboundedReceiver<Incoming>) -> Result<Report, FsError> {
        let mut incoming = Inbox {
            rx: incoming,
            buf: std::collections::VecDeque::new(),
        };
        let mut next_id: u32 = 0;
        let mut listed = false;
        while !(listed && self.pending.is_empty()) {
            let p = match incoming.next() {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(FsError::Protocol(e)),
                None => {
                    return Err(FsError::Protocol(
                        "the sender closed the stream before the transfer ended".into(),
                    ))
                }
            };
            match PacketType::try_from(p.r#type) {
                Ok(PacketType::PacketErr) => {
                    return Err(FsError::Sender(
                        String::from_utf8_lossy(&p.data).into_owned(),
                    ))
                }
                Ok(PacketType::PacketStat) => match p.stat {
                    Some(st) if !st.path.is_empty() => {
                        if listed {
                            return Err(FsError::Protocol(
                                "a stat after the end of the listing".into(),
                            ));
                        }
                        self.stat(next_id, st)?;
                        next_id = next_id.wrapping_add(1);
                    }
                    _ => listed = true,
                },
                Ok(PacketType::PacketData) => self.data(p.id, &p.data)?,
                _ => {
                    return Err(FsError::Protocol(format!(
                        "unexpected packet of type {} from the sender",
                        p.r#type
                    )))
                }
            }
        }
        self.finish()?;
        self.send(Packet {
            r#type: PacketType::PacketFin as i32,
            ..Default::default()
        })?;
        // the sender's FIN, or the end of its stream
        loop {
            match incoming.next() {
                Some(Ok(p)) if p.r#type == PacketType::PacketFin as i32 => break,
                Some(Ok(p)) if p.r#type == PacketType::PacketErr as i32 => {
                    return Err(FsError::Sender(
                        String::from_utf8_lossy(&p.data).into_owned(),
                    ))
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        Ok(std::mem::take(&mut self.report))
    }

    /// The parent directory of `path`, opened without following any symlink (the one
    /// opened last is kept: a listing names a directory's entries one after another).
    fn parent(&mut self, path: &str) -> Result<std::rc::Rc<OwnedFd>, FsError> {
        let (parent, _) = split_parent(path);
        if let Some((name, fd)) = &self.last_parent {
            if name == parent {
                return Ok(fd.clone());
            }
        }
        let fd = std::rc::Rc::new(self.open_parent(path)?);
        self.last_parent = Some((parent.to_string(), fd.clone()));
        Ok(fd)
    }

    fn open_parent(&self, path: &str) -> Result<OwnedFd, FsError> {
        let (parent, _) = split_parent(path);
        let p = if parent.is_empty() { "." } else { parent };
        rustix::fs::openat2(
            &self.root,
            p,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|_| FsError::Path(path.to_string()))
    }

    fn stat(&mut self, id: u32, st: Stat) -> Result<(), FsError> {
        let path = clean_relative(&st.path)
            .ok_or_else(|| FsError::Path(st.path.clone()))?
            .to_string();
        self.report.entries += 1;
        let kind = kind_of(st.mode);
        if kind == Kind::Other {
            return Ok(());
        }
        let parent = self.parent(&path)?;
        let (_, name) = split_parent(&path);
        let name = name.to_string();
        let have = rustix::fs::statat(&parent, name.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok();
        let have_kind = have.as_ref().map(|h| kind_of(go_mode(h.st_mode)));
        self.seen.insert(path.clone());
        match kind {
            Kind::Dir => {
                if have_kind != Some(Kind::Dir) {
                    if have.is_some() {
                        remove_at(&parent, &name)?;
                        self.last_parent = None;
                    }
                    rustix::fs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o700))
                        .map_err(io_err(format!("making {path}")))?;
                }
                self.report.listing.push(Received {
                    path: path.clone(),
                    stat: st.clone(),
                    kept: None,
                });
                self.dirs.push((path, st));
            }
            Kind::Symlink => {
                let same = have_kind == Some(Kind::Symlink)
                    && rustix::fs::readlinkat(&parent, name.as_str(), Vec::new())
                        .is_ok_and(|t| t.to_bytes() == st.linkname.as_bytes());
                if !same {
                    if have.is_some() {
                        remove_at(&parent, &name)?;
                        self.last_parent = None;
                    }
                    rustix::fs::symlinkat(st.linkname.as_str(), &parent, name.as_str())
                        .map_err(io_err(format!("making the symlink {path}")))?;
                }
                set_owner_and_time(&parent, &name, &st, true)?;
                self.report.listing.push(Received {
                    path,
                    stat: st,
                    kept: None,
                });
            }
            Kind::File if !st.linkname.is_empty() => {
                let target = clean_relative(&st.linkname)
                    .ok_or_else(|| FsError::Path(st.linkname.clone()))?;
                self.hardlinks.push((path.clone(), target.to_string()));
                self.report.listing.push(Received {
                    path,
                    stat: st,
                    kept: None,
                });
            }
            Kind::File => {
                let current = have.as_ref().is_some_and(|h| {
                    have_kind == Some(Kind::File)
                        && h.st_size == st.size
                        && h.st_mtime * 1_000_000_000 + h.st_mtime_nsec as i64 == st.mod_time
                        && h.st_mode & 0o7777 == unix_perm(st.mode)
                        && h.st_uid == st.uid
                        && h.st_gid == st.gid
                });
                if current {
                    let kept = have.as_ref().map(|h| {
                        (
                            h.st_ino,
                            h.st_size as u64,
                            h.st_ctime * 1_000_000_000 + h.st_ctime_nsec as i64,
                        )
                    });
                    self.report.listing.push(Received {
                        path,
                        stat: st,
                        kept,
                    });
                    return Ok(());
                }
                self.report.listing.push(Received {
                    path: path.clone(),
                    stat: st.clone(),
                    kept: None,
                });
                self.pending.insert(
                    id,
                    Pending {
                        asked: false,
                        file: None,
                        path: path.clone(),
                        tmp: format!(".berth-receiving-{id}"),
                        stat: st,
                    },
                );
                self.to_ask.push_back(id);
                self.ask()?;
            }
            Kind::Other => {}
        }
        Ok(())
    }

    /// Asks for the next files while what was asked for and has not come stays under
    /// [`MAX_ASKED_BYTES`].
    fn ask(&mut self) -> Result<(), FsError> {
        while let Some(&id) = self.to_ask.front() {
            let Some(p) = self.pending.get_mut(&id) else {
                self.to_ask.pop_front();
                continue;
            };
            let size = p.stat.size.max(0) as u64;
            if self.asked_bytes > 0 && self.asked_bytes + size > MAX_ASKED_BYTES {
                break;
            }
            p.asked = true;
            self.asked_bytes += size;
            self.to_ask.pop_front();
            self.send(Packet {
                r#type: PacketType::PacketReq as i32,
                id,
                ..Default::default()
            })?;
        }
        Ok(())
    }

    /// The temporary file of a pending entry, made on first use.
    fn open_pending(&mut self, id: u32) -> Result<&mut Pending, FsError> {
        let (path, tmp, has) = {
            let p = self.pending.get(&id).filter(|p| p.asked).ok_or_else(|| {
                FsError::Protocol(format!("data for a file not asked for ({id})"))
            })?;
            (p.path.clone(), p.tmp.clone(), p.file.is_some())
        };
        if !has {
            let parent = self.parent(&path)?;
            let _ = rustix::fs::unlinkat(&parent, tmp.as_str(), AtFlags::empty());
            let fd = rustix::fs::openat(
                &parent,
                tmp.as_str(),
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(io_err(format!("writing {path}")))?;
            if let Some(p) = self.pending.get_mut(&id) {
                p.file = Some(std::fs::File::from(fd));
            }
        }
        self.pending
            .get_mut(&id)
            .ok_or_else(|| FsError::Protocol(format!("data for a file not asked for ({id})")))
    }

    fn data(&mut self, id: u32, data: &[u8]) -> Result<(), FsError> {
        let p = self.open_pending(id)?;
        if !data.is_empty() {
            let what = p.stat.path.clone();
            if let Some(f) = p.file.as_mut() {
                f.write_all(data)
                    .map_err(std_err(format!("writing {what}")))?;
            }
            self.report.bytes += data.len() as u64;
            return Ok(());
        }
        let p = self
            .pending
            .remove(&id)
            .ok_or_else(|| FsError::Protocol(format!("data for a file not asked for ({id})")))?;
        self.report.files_sent += 1;
        self.asked_bytes = self.asked_bytes.saturating_sub(p.stat.size.max(0) as u64);
        self.ask()?;
        let what = p.stat.path.clone();
        let file = p
            .file
            .ok_or_else(|| FsError::Protocol(format!("no file for {what}")))?;
        rustix::fs::fchown(
            &file,
            Some(rustix::process::Uid::from_raw(p.stat.uid)),
            Some(rustix::process::Gid::from_raw(p.stat.gid)),
        )
        .map_err(io_err(format!("owning {what}")))?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(unix_perm(p.stat.mode)))
            .map_err(io_err(format!("mode of {what}")))?;
        let t = nanos(p.stat.mod_time);
        rustix::fs::futimens(
            &file,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )
        .map_err(io_err(format!("times of {what}")))?;
        drop(file);
        let parent = self.parent(&p.path)?;
        let (_, name) = split_parent(&p.path);
        if let Ok(h) = rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            if kind_of(go_mode(h.st_mode)) == Kind::Dir {
                remove_at(&parent, name)?;
                self.last_parent = None;
            }
        }
        rustix::fs::renameat(&parent, p.tmp.as_str(), &parent, name)
            .map_err(io_err(format!("placing {what}")))
    }

    /// Hardlinks, directories' own metadata (last, as their contents changed their
    /// times), and the removal of what the sender no longer has.
    fn finish(&mut self) -> Result<(), FsError> {
        for (path, target) in std::mem::take(&mut self.hardlinks) {
            let parent = self.parent(&path)?;
            let (_, name) = split_parent(&path);
            let tparent = self.parent(&target)?;
            let (_, tname) = split_parent(&target);
            if rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                remove_at(&parent, name)?;
                self.last_parent = None;
            }
            rustix::fs::linkat(&tparent, tname, &parent, name, AtFlags::empty())
                .map_err(io_err(format!("linking {path} to {target}")))?;
        }
        for (path, st) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let dir = rustix::fs::openat2(
                &self.root,
                path.as_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
            )
            .map_err(|_| FsError::Path(path.clone()))?;
            rustix::fs::fchown(
                &dir,
                Some(rustix::process::Uid::from_raw(st.uid)),
                Some(rustix::process::Gid::from_raw(st.gid)),
            )
            .map_err(io_err(format!("owning {path}")))?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(unix_perm(st.mode)))
                .map_err(io_err(format!("mode of {path}")))?;
            let t = nanos(st.mod_time);
            rustix::fs::futimens(
                &dir,
                &Timestamps {
                    last_access: t,
                    last_modification: t,
                },
            )
            .map_err(io_err(format!("times of {path}")))?;
        }
        self.prune(&self.dest.clone(), "")
    }

    fn prune(&self, dir: &Path, rel: &str) -> Result<(), FsError> {
        let rd = std::fs::read_dir(dir).map_err(std_err(format!("reading {}", dir.display())))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type().map_err(std_err(path.clone()))?;
            if !self.seen.contains(&path) {
                let r = if ft.is_dir() {
                    std::fs::remove_dir_all(e.path())
                } else {
                    std::fs::remove_file(e.path())
                };
                r.map_err(std_err(format!("removing {path}")))?;
            } else if ft.is_dir() {
                self.prune(&e.path(), &path)?;
            }
        }
        Ok(())
    }
}

fn nanos(ns: i64) -> Timespec {
    Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    }
}

fn set_owner_and_time(
    parent: &OwnedFd,
    name: &str,
    st: &Stat,
    nofollow: bool,
) -> Result<(), FsError> {
    let flags = if nofollow {
        AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::empty()
    };
    rustix::fs::chownat(
        parent,
        name,
        Some(rustix::process::Uid::from_raw(st.uid)),
        Some(rustix::process::Gid::from_raw(st.gid)),
        flags,
    )
    .map_err(io_err(format!("owning {}", st.path)))?;
    let t = nanos(st.mod_time);
    rustix::fs::utimensat(
        parent,
        name,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        flags,
    )
    .map_err(io_err(format!("times of {}", st.path)))
}

/// Removes `name` under `parent`, a whole directory tree if it is one (never following
/// symlinks).
fn remove_at(parent: &OwnedFd, name: &str) -> Result<(), FsError> {
    let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io_err(format!("removing {name}")))?;
    if kind_of(go_mode(st.st_mode)) == Kind::Dir {
        let dir = rustix::fs::openat(
            parent,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(io_err(format!("removing {name}")))?;
        let mut names = Vec::new();
        let it = rustix::fs::Dir::read_from(&dir).map_err(io_err(format!("removing {name}")))?;
        for e in it {
            let e = e.map_err(io_err(format!("removing {name}")))?;
            let n = e.file_name().to_string_lossy().into_owned();
            if n != "." && n != ".." {
                names.push(n);
            }
        }
        for n in names {
            remove_at(&dir, &n)?;
        }
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
            .map_err(io_err(format!("removing {name}")))
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .map_err(io_err(format!("removing {name}")))
    }
}

/// One entry the sender lists.
#[derive(Debug, Clone)]
struct Listed {
    rel: String,
    stat: Stat,
}

/// Sends the tree under `root` (what `keep` says yes to: a relative path and whether it
/// is a directory) with fsutil's protocol: `incoming` carries the receiver's packets,
/// `outgoing` takes ours. Returns once the receiver said FIN.
pub async fn send(
    root: PathBuf,
    keep: impl Fn(&str, bool) -> bool + Send + 'static,
    mut incoming: mpsc::UnboundedReceiver<Incoming>,
    outgoing: mpsc::Sender<Packet>,
) -> Result<(), FsError> {
    let listing = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, "", &keep, &mut out)?;
            Ok::<_, FsError>(out)
        })
        .await
        .map_err(|e| FsError::Protocol(e.to_string()))??
    };
    let files: HashMap<u32, String> = listing
        .iter()
        .enumerate()
        .filter(|(_, l)| kind_of(l.stat.mode) == Kind::File && l.stat.linkname.is_empty())
        .map(|(i, l)| (i as u32, l.rel.clone()))
        .collect();
    // the listing goes while requests are answered: a receiver may ask before the end
    let stats_out = outgoing.clone();
    let stats = tokio::spawn(async move {
        for l in listing {
            if stats_out
                .send(Packet {
                    r#type: PacketType::PacketStat as i32,
                    stat: Some(l.stat),
                    ..Default::default()
                })
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = stats_out
            .send(Packet {
                r#type: PacketType::PacketStat as i32,
                ..Default::default()
            })
            .await;
    });
    let result = loop {
        let p = match incoming.recv().await {
            Some(Ok(p)) => p,
            Some(Err(e)) => break Err(FsError::Protocol(e)),
            None => break Err(FsError::Protocol("the receiver closed the stream".into())),
        };
        match PacketType::try_from(p.r#type) {
            Ok(PacketType::PacketReq) => {
                let Some(rel) = files.get(&p.id) else {
                    break Err(FsError::Protocol(format!("invalid file id {}", p.id)));
                };
                if let Err(e) = send_file(&root.join(rel), p.id, &outgoing).await {
                    break Err(e);
                }
            }
            Ok(PacketType::PacketFin) => {
                let _ = outgoing
                    .send(Packet {
                        r#type: PacketType::PacketFin as i32,
                        ..Default::default()
                    })
                    .await;
                break Ok(());
            }
            Ok(PacketType::PacketErr) => {
                break Err(FsError::Receiver(
                    String::from_utf8_lossy(&p.data).into_owned(),
                ))
            }
            _ => {}
        }
    };
    stats.abort();
    result
}

async fn send_file(path: &Path, id: u32, out: &mpsc::Sender<Packet>) -> Result<(), FsError> {
    let path = path.to_path_buf();
    let out = out.clone();
    tokio::task::spawn_blocking(move || {
        // a file that went away meanwhile is sent empty, as fsutil does
        if let Ok(mut f) = std::fs::File::open(&path) {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(std_err(path.display().to_string()))?;
                if n == 0 {
                    break;
                }
                let p = Packet {
                    r#type: PacketType::PacketData as i32,
                    id,
                    data: buf[..n].to_vec(),
                    ..Default::default()
                };
                out.blocking_send(p)
                    .map_err(|_| FsError::Protocol("the receiver went away".into()))?;
            }
        }
        out.blocking_send(Packet {
            r#type: PacketType::PacketData as i32,
            id,
            ..Default::default()
        })
        .map_err(|_| FsError::Protocol("the receiver went away".into()))
    })
    .await
    .map_err(|e| FsError::Protocol(e.to_string()))?
}

/// The entries under `dir` (relative `rel`) in fsutil's order, with hardlinks named as
/// links to their first path.
fn walk(
    dir: &Path,
    rel: &str,
    keep: &dyn Fn(&str, bool) -> bool,
    out: &mut Vec<Listed>,
) -> Result<(), FsError> {
    walk_inner(dir, rel, keep, out, &mut HashMap::new())
}

fn walk_inner(
    dir: &Path,
    rel: &str,
    keep: &dyn Fn(&str, bool) -> bool,
    out: &mut Vec<Listed>,
    inodes: &mut HashMap<(u64, u64), String>,
) -> Result<(), FsError> {
    use std::os::unix::fs::MetadataExt;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(std_err(format!("reading {}", dir.display())))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let p = dir.join(&name);
        let relp = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let md = std::fs::symlink_metadata(&p).map_err(std_err(relp.clone()))?;
        let is_dir = md.is_dir();
        if !keep(&relp, is_dir) {
            continue;
        }
        let mut stat = Stat {
            path: relp.clone(),
            mode: go_mode(md.mode()),
            uid: md.uid(),
            gid: md.gid(),
            size: if md.is_file() { md.size() as i64 } else { 0 },
            mod_time: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ..Default::default()
        };
        if md.file_type().is_symlink() {
            stat.linkname = std::fs::read_link(&p)
                .map_err(std_err(relp.clone()))?
                .to_string_lossy()
                .into_owned();
        } else if md.is_file() && md.nlink() > 1 {
            match inodes.get(&(md.dev(), md.ino())) {
                Some(first) => stat.linkname = first.clone(),
                None => {
                    inodes.insert((md.dev(), md.ino()), relp.clone());
                }
            }
        }
        out.push(Listed {
            rel: relp.clone(),
            stat,
        });
        if is_dir {
            walk_inner(&p, &relp, keep, out, inodes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn modes_both_ways() {
        for m in [0o100644, 0o040755, 0o120777, 0o104755, 0o041777, 0o020666] {
            let g = go_mode(m);
            assert_eq!(unix_perm(g), m & 0o7777, "{m:o}");
        }
        assert_eq!(kind_of(go_mode(0o040755)), Kind::Dir);
        assert_eq!(kind_of(go_mode(0o120777)), Kind::Symlink);
        assert_eq!(kind_of(go_mode(0o100644)), Kind::File);
        assert_eq!(kind_of(go_mode(0o020666)), Kind::Other);
    }

    #[test]
    fn paths_must_be_clean_and_relative() {
        for bad in ["", "/etc", "a/../b", "..", "a//b", "./a", "a/", "a\0b"] {
            assert_eq!(clean_relative(bad), None, "{bad:?}");
        }
        assert_eq!(clean_relative("a/b.c"), Some("a/b.c"));
    }

    /// Sends `src` to `dst` through in-memory channels.
    async fn sync(src: &Path, dst: &Path) -> Result<Report, FsError> {
        sync_counting(src, dst, Default::default()).await
    }

    /// [`sync`], keeping in `most` the largest number of files asked for at once.
    async fn sync_counting(
        src: &Path,
        dst: &Path,
        most: std::sync::Arc<std::sync::Mutex<(i64, i64)>>,
    ) -> Result<Report, FsError> {
        let (asked, done) = (most.clone(), most);
        let (to_recv_tx, to_recv_rx) = mpsc::unbounded_channel::<Incoming>();
        let (from_recv_tx, mut from_recv_rx) = mpsc::unbounded_channel::<Packet>();
        let (to_send_tx, to_send_rx) = mpsc::unbounded_channel::<Incoming>();
        let (from_send_tx, mut from_send_rx) = mpsc::channel::<Packet>(16);
        tokio::spawn(async move {
            while let Some(p) = from_recv_rx.recv().await {
                if p.r#type == PacketType::PacketReq as i32 {
                    let mut m = asked.lock().unwrap();
                    m.0 += 1;
                    m.1 = m.1.max(m.0);
                }
                if to_send_tx.send(Ok(p)).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(p) = from_send_rx.recv().await {
                if p.r#type == PacketType::PacketData as i32 && p.data.is_empty() {
                    done.lock().unwrap().0 -= 1;
                }
                if to_recv_tx.send(Ok(p)).is_err() {
                    break;
                }
            }
        });
        let sender = tokio::spawn(send(
            src.to_path_buf(),
            |_, _| true,
            to_send_rx,
            from_send_tx,
        ));
        let r = receive(to_recv_rx, from_recv_tx, dst.to_path_buf()).await;
        let _ = sender.await;
        r
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trees_sync_and_only_changes_cross_again() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let s = src.path();
        std::fs::create_dir_all(s.join("a/b")).unwrap();
        std::fs::write(s.join("a/b/f"), "one").unwrap();
        std::fs::write(s.join("big"), vec![7u8; 100_000]).unwrap();
        std::fs::write(s.join("gone"), "x").unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", s.join("a/out")).unwrap();
        std::fs::hard_link(s.join("big"), s.join("big2")).unwrap();
        let r = sync(s, dst.path()).await.unwrap();
        assert_eq!(r.files_sent, 3);
        assert_eq!(r.bytes, 100_004);
        let d = dst.path();
        assert_eq!(std::fs::read_to_string(d.join("a/b/f")).unwrap(), "one");
        assert_eq!(std::fs::read(d.join("big2")).unwrap().len(), 100_000);
        assert_eq!(
            std::fs::metadata(d.join("big")).unwrap().ino(),
            std::fs::metadata(d.join("big2")).unwrap().ino()
        );
        assert_eq!(
            std::fs::read_link(d.join("a/out")).unwrap(),
            Path::new("../../etc/passwd")
        );
        assert_eq!(
            std::fs::metadata(s.join("a/b/f")).unwrap().mtime_nsec(),
            std::fs::metadata(d.join("a/b/f")).unwrap().mtime_nsec()
        );
        // a second sync after changing one file moves only that file
        std::fs::write(s.join("a/b/f"), "two!").unwrap();
        std::fs::remove_file(s.join("gone")).unwrap();
        let r = sync(s, dst.path()).await.unwrap();
        assert_eq!((r.files_sent, r.bytes), (1, 4));
        assert_eq!(std::fs::read_to_string(d.join("a/b/f")).unwrap(), "two!");
        assert!(!d.join("gone").exists());
        assert_listing_is_the_tree(&r, d);
    }

    /// A report's listing is what a walk of the received tree finds: every entry, with
    /// the stat it has, and the stamp of each file that was already there.
    fn assert_listing_is_the_tree(r: &Report, d: &Path) {
        let mut walked = Vec::new();
        let mut todo = vec![d.to_path_buf()];
        while let Some(dir) = todo.pop() {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                    todo.push(p.clone());
                }
                walked.push(p.strip_prefix(d).unwrap().display().to_string());
            }
        }
        walked.sort();
        let mut listed: Vec<String> = r.listing.iter().map(|l| l.path.clone()).collect();
        listed.sort();
        assert_eq!(listed, walked);
        for l in &r.listing {
            let md = std::fs::symlink_metadata(d.join(&l.path)).unwrap();
            assert_eq!(go_mode(md.mode()), l.stat.mode, "{}", l.path);
            assert_eq!(
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                l.stat.mod_time
            );
            if md.is_file() {
                assert_eq!(md.size() as i64, l.stat.size, "{}", l.path);
            }
            // (a hardlink made after the stat moves its inode's change time: such a
            // stamp only fails to match, and the file is read)
            if let Some(kept) = l.kept.filter(|_| md.nlink() == 1) {
                let now = (
                    md.ino(),
                    md.size(),
                    md.ctime() * 1_000_000_000 + md.ctime_nsec(),
                );
                assert_eq!(kept, now, "{}", l.path);
            }
        }
        assert!(r.listing.iter().any(|l| l.kept.is_some()));
        assert!(r.listing.iter().any(|l| l.kept.is_none()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn big_files_are_asked_for_a_few_at_a_time() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        for i in 0..3u8 {
            std::fs::write(src.path().join(format!("big{i}")), vec![i; 20 << 20]).unwrap();
        }
        for i in 0..50 {
            std::fs::write(src.path().join(format!("small{i}")), "s").unwrap();
        }
        let most = std::sync::Arc::new(std::sync::Mutex::new((0, 0)));
        let r = sync_counting(src.path(), dst.path(), most.clone())
            .await
            .unwrap();
        assert_eq!(r.files_sent, 53);
        for i in 0..3u8 {
            let got = std::fs::read(dst.path().join(format!("big{i}"))).unwrap();
            assert!(got.len() == 20 << 20 && got.iter().all(|b| *b == i));
        }
        // 20 MiB files under a 32 MiB bound: one of them in flight at a time (with the
        // small ones, listed first)
        let (_, at_once) = *most.lock().unwrap();
        assert_eq!(at_once, 51);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sender_cannot_write_outside() {
        let dst = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for listing in [
            vec![stat("../x", 0o644)],
            vec![stat("/x", 0o644)],
            // a symlink to outside, then a file through it
            vec![
                Stat {
                    linkname: outside.path().display().to_string(),
                    ..stat("l", GO_SYMLINK | 0o777)
                },
                stat("l/x", 0o644),
            ],
        ] {
            let (tx, rx) = mpsc::unbounded_channel::<Incoming>();
            let (out, _keep) = mpsc::unbounded_channel();
            for st in listing {
                tx.send(Ok(Packet {
                    r#type: PacketType::PacketStat as i32,
                    stat: Some(st),
                    ..Default::default()
                }))
                .unwrap();
            }
            drop(tx);
            let r = receive(rx, out, dst.path().to_path_buf()).await;
            assert!(matches!(r, Err(FsError::Path(_))), "{r:?}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    fn stat(path: &str, mode: u32) -> Stat {
        Stat {
            path: path.into(),
            mode,
            ..Default::default()
        }
    }
}
