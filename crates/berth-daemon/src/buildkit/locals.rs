//! The client directories BuildKit builds sync, kept between builds
//! (`DATA_ROOT/buildkit/locals/<key>/`, the key a digest of the session's shared key and
//! the directory's name): a second build of the same project asks the client only for
//! what changed. A kept directory is locked (flock) for the time of a build; the least
//! recently used ones go when there are more than [`KEEP`]; `builder prune` removes them
//! all. Directories for one build only (the Dockerfile, the `.dockerignore`) are
//! temporary.

use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Kept directories at most.
const KEEP: usize = 16;

pub struct Locals {
    root: PathBuf,
}

/// A kept directory, locked until dropped.
pub struct LocalDir {
    path: PathBuf,
    _lock: File,
}

impl LocalDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the digests of its files are kept (beside the tree).
    pub fn hashes_file(&self) -> PathBuf {
        self.path.with_file_name("hashes")
    }
}

impl Locals {
    /// Opens `DATA_ROOT/buildkit/locals`, clearing what a build left half done.
    pub fn open(data_root: &Path) -> std::io::Result<Locals> {
        let root = data_root.join("buildkit").join("locals");
        std::fs::create_dir_all(&root)?;
        // private: files keep the client's owners and modes (setuid ones too)
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        // a context synced right after `builder prune` removed one would otherwise land
        // among the inodes just freed, which ext4 checks one by one (as for snapshots)
        berth_image::snapshot::spread_subdirs(&root);
        for e in std::fs::read_dir(&root)?.flatten() {
            if e.file_name().to_string_lossy().starts_with("tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(Locals { root })
    }

    /// The kept directory of `name` for sessions sharing `shared_key`, locked (waiting
    /// while another build holds it).
    pub async fn dir(&self, shared_key: &str, name: &str) -> std::io::Result<LocalDir> {
        let key = hex::encode(Sha256::digest(format!("{shared_key}\0{name}").as_bytes()));
        let base = self.root.join(&key[..32]);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let fresh = !base.exists();
            std::fs::create_dir_all(base.join("tree"))?;
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(base.join("lock"))?;
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)?;
            // its use is its lock file's time: the eviction's order
            lock.set_modified(std::time::SystemTime::now())?;
            if fresh {
                evict(&root, &base);
            }
            Ok(LocalDir {
                path: base.join("tree"),
                _lock: lock,
            })
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// A directory for one build.
    pub fn temp(&self) -> std::io::Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("tmp-")
            .tempdir_in(&self.root)
    }

    /// Removes every kept directory no build holds; their count and size.
    pub fn prune(&self) -> (Vec<String>, u64) {
        let mut gone = Vec::new();
        let mut bytes = 0;
        for e in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("tmp-") {
                continue;
            }
            if let Some(size) = remove_unlocked(&e.path()) {
                gone.push(name);
                bytes += size;
            }
        }
        (gone, bytes)
    }

    /// Each kept directory: its key, size and last use.
    pub fn usage(&self) -> Vec<(String, u64, std::time::SystemTime)> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with("tmp-"))
            .map(|e| {
                let used = std::fs::metadata(e.path().join("lock"))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (
                    e.file_name().to_string_lossy().into_owned(),
                    du(&e.path()),
                    used,
                )
            })
            .collect()
    }
}

/// Removes kept directories beyond [`KEEP`], the least recently used first (never
/// `keep`, never a locked one).
fn evict(root: &Path, keep: &Path) {
    let mut all: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("tmp-") && e.path() != keep)
        .map(|e| {
            let used = std::fs::metadata(e.path().join("lock"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (used, e.path())
        })
        .collect();
    if all.len() < KEEP {
        return;
    }
    all.sort();
    let extra = all.len() + 1 - KEEP;
    for (_, p) in all.into_iter().take(extra) {
        remove_unlocked(&p);
    }
}

/// Removes a kept directory unless a build holds its lock; its size if removed.
fn remove_unlocked(dir: &Path) -> Option<u64> {
    let lock = File::options().write(true).open(dir.join("lock")).ok()?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    let size = du(dir);
    std::fs::remove_dir_all(dir).ok()?;
    Some(size)
}

/// Bytes of the regular files under `p`.
pub fn du(p: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![p.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}
