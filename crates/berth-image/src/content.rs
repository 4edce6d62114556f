//! The content store: immutable blobs addressed by digest.
//!
//! A blob is written to `ingest/<random>`, fsynced, its digest checked, and only then
//! renamed to `blobs/sha256/<hex>` (and the directory fsynced), so a crash never leaves
//! a half-written blob visible under a digest.

use crate::digest::{Digest, Hasher};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// content digest mismatch
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    /// I/O failure on the content store
    #[error("content store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Opens (creating) a store under `root`; stale ingests from a crash are removed.
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        let s = ContentStore {
            root: root.to_path_buf(),
        };
        let ingest = s.root.join("ingest");
        let _ = fs::remove_dir_all(&ingest);
        fs::create_dir_all(&ingest).map_err(io_err(&ingest))?;
        let blobs = s.root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        Ok(s)
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn exists(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn size(&self, d: &Digest) -> Option<u64> {
        fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        let p = self.path(d);
        fs::read(&p).map_err(io_err(&p))
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File, ContentError> {
        let p = self.path(d);
        File::open(&p).map_err(io_err(&p))
    }

    /// Stores `bytes`, returning their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, ContentError> {
        let mut w = self.writer()?;
        w.write_all(bytes).map_err(io_err(&self.root))?;
        w.commit(None)
    }

    /// Starts a new blob.
    pub fn writer(&self) -> Result<BlobWriter, ContentError> {
        let name: u64 = rand::random();
        let path = self.root.join("ingest").join(format!("{name:016x}"));
        let file = File::create(&path).map_err(io_err(&path))?;
        Ok(BlobWriter {
            store: self.clone(),
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            path,
            hasher: Hasher::default(),
            committed: false,
        })
    }

    pub fn delete(&self, d: &Digest) {
        let _ = fs::remove_file(self.path(d));
    }
}

/// A blob being written; dropped without `commit`, it leaves nothing behind.
pub struct BlobWriter {
    store: ContentStore,
    file: Option<io::BufWriter<File>>,
    path: PathBuf,
    hasher: Hasher,
    committed: bool,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// Syncs, checks the digest against `expected` when given, and makes the blob visible.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<Digest, ContentError> {
        let Some(buf) = self.file.take() else {
            return Err(ContentError::Io {
                path: self.path.clone(),
                source: io::Error::other("blob writer already finished"),
            });
        };
        let file = buf
            .into_inner()
            .map_err(|e| io_err(&self.path)(e.into_error()))?;
        file.sync_all().map_err(io_err(&self.path))?;
        drop(file);
        let actual = std::mem::take(&mut self.hasher).finish();
        if let Some(e) = expected {
            if *e != actual {
                return Err(ContentError::DigestMismatch {
                    expected: e.clone(),
                    actual,
                });
            }
        }
        let dest = self.store.path(&actual);
        fs::rename(&self.path, &dest).map_err(io_err(&dest))?;
        self.committed = true;
        if let Some(dir) = dest.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(actual)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer finished"))?;
        let n = f.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.put(b"abc").unwrap();
        assert_eq!(cs.read(&d).unwrap(), b"abc");
        let mut w = cs.writer().unwrap();
        w.write_all(b"xyz").unwrap();
        let err = w.commit(Some(&d)).unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }));
        // nothing left in ingest
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        let w = cs.writer().unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }
}
