//! Layer tars kept as a "split": the tar's own bytes (headers, PAX records, padding,
//! the end marker) stored zstd-compressed, with each regular file's content left where
//! the unpacked snapshot already holds it. Reassembled, the stream is byte for byte the
//! tar that came in, so its digest is still the layer's diff id, at the cost of writing
//! the layer once instead of twice.
//!
//! Format of the stored blob (one zstd stream):
//!
//! ```text
//! "BSPLIT1\n"
//! 0x01 u32le len, bytes         raw tar bytes
//! 0x02 u64le size, u32le index  `size` bytes of content file number `index`
//! 0x00                          end of records
//! u32le count, then count × (u16le len, path)   where each content file lives,
//!                                               relative to the snapshot directory
//! ```
//!
//! While a layer is applied, the unpacker reports each regular file's content range in
//! the stream ([`SplitWriter::marker`]); everything else is raw. Hashing (the diff id)
//! and compressing run on a thread of their own, beside the unpacking.

use crate::content::BlobWriter;
use crate::digest::{Digest, Hasher};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

const MAGIC: &[u8] = b"BSPLIT1\n";
const RAW: u8 = 1;
const CONTENT: u8 = 2;
const END: u8 = 0;
const CHUNK: usize = 256 << 10;

enum Msg {
    Data(Vec<u8>),
    Range { start: u64, end: u64 },
}

/// The result of a split: the blob writer (ready to commit), the tar's digest and length.
pub struct SplitDone {
    pub blob: BlobWriter,
    pub diff_id: Digest,
    pub tar_len: u64,
}

type Worker = std::thread::JoinHandle<io::Result<(zstd::Encoder<'static, BlobWriter>, Hasher)>>;

/// Receives the whole tar stream (as the sink of a tee) and content ranges.
pub struct SplitWriter {
    tx: Option<SyncSender<Msg>>,
    buf: Vec<u8>,
    thread: Option<Worker>,
}

fn background(
    rx: Receiver<Msg>,
    blob: BlobWriter,
) -> io::Result<(zstd::Encoder<'static, BlobWriter>, Hasher)> {
    let mut enc = zstd::Encoder::new(blob, 3)?;
    enc.write_all(MAGIC)?;
    let mut hasher = Hasher::default();
    let mut offset = 0u64;
    let mut ranges: VecDeque<(u64, u64, u32)> = VecDeque::new();
    let mut next_index = 0u32;
    let mut raw: Vec<u8> = Vec::with_capacity(64 << 10);
    let flush_raw =
        |enc: &mut zstd::Encoder<'static, BlobWriter>, raw: &mut Vec<u8>| -> io::Result<()> {
            if !raw.is_empty() {
                enc.write_all(&[RAW])?;
                enc.write_all(&(raw.len() as u32).to_le_bytes())?;
                enc.write_all(raw)?;
                raw.clear();
            }
            Ok(())
        };
    for msg in rx {
        match msg {
            Msg::Range { start, end } => {
                ranges.push_back((start, end, next_index));
                next_index += 1;
            }
            Msg::Data(chunk) => {
                hasher.update(&chunk);
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    // empty ranges (size 0 files) are recorded as soon as we reach them
                    while let Some(&(s, e, idx)) = ranges.front() {
                        if s == e && s <= offset {
                            flush_raw(&mut enc, &mut raw)?;
                            enc.write_all(&[CONTENT])?;
                            enc.write_all(&0u64.to_le_bytes())?;
                            enc.write_all(&idx.to_le_bytes())?;
                            ranges.pop_front();
                        } else {
                            break;
                        }
                    }
                    match ranges.front().copied() {
                        Some((s, e, idx)) if offset >= s => {
                            let take = ((e - offset) as usize).min(rest.len());
                            offset += take as u64;
                            rest = &rest[take..];
                            if offset == e {
                                flush_raw(&mut enc, &mut raw)?;
                                enc.write_all(&[CONTENT])?;
                                enc.write_all(&(e - s).to_le_bytes())?;
                                enc.write_all(&idx.to_le_bytes())?;
                                ranges.pop_front();
                            }
                        }
                        Some((s, _, _)) => {
                            let take = ((s - offset) as usize).min(rest.len());
                            raw.extend_from_slice(&rest[..take]);
                            offset += take as u64;
                            rest = &rest[take..];
                        }
                        None => {
                            raw.extend_from_slice(rest);
                            offset += rest.len() as u64;
                            rest = &[];
                        }
                    }
                    if raw.len() >= 1 << 20 {
                        flush_raw(&mut enc, &mut raw)?;
                    }
                }
            }
        }
    }
    flush_raw(&mut enc, &mut raw)?;
    if !ranges.is_empty() {
        return Err(io::Error::other(
            "layer stream ended inside a file's content",
        ));
    }
    enc.write_all(&[END])?;
    Ok((enc, hasher))
}

impl SplitWriter {
    pub fn new(blob: BlobWriter) -> io::Result<Self> {
        let (tx, rx) = sync_channel::<Msg>(16);
        let thread = std::thread::Builder::new()
            .name("layer-split".into())
            .spawn(move || background(rx, blob))?;
        Ok(SplitWriter {
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            thread: Some(thread),
        })
    }

    /// A callback for the unpacker: content of `len` bytes starts at stream `offset`.
    pub fn marker(&self) -> impl FnMut(u64, u64) + use<> {
        let tx = self.tx.clone();
        move |offset, len| {
            if let Some(tx) = &tx {
                let _ = tx.send(Msg::Range {
                    start: offset,
                    end: offset + len,
                });
            }
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let dead = || io::Error::other("layer split thread stopped");
        self.tx
            .as_ref()
            .ok_or_else(dead)?
            .send(Msg::Data(chunk))
            .map_err(|_| dead())
    }

    /// Ends the stream: writes where each content file lives and returns the blob.
    pub fn finish(mut self, table: &[String]) -> io::Result<SplitDone> {
        self.send()?;
        self.tx = None;
        let (mut enc, hasher) = match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r?,
            _ => return Err(io::Error::other("layer split thread panicked")),
        };
        enc.write_all(&(table.len() as u32).to_le_bytes())?;
        for p in table {
            enc.write_all(&(p.len() as u16).to_le_bytes())?;
            enc.write_all(p.as_bytes())?;
        }
        let blob = enc.finish()?;
        let tar_len = hasher.len();
        Ok(SplitDone {
            blob,
            diff_id: hasher.finish(),
            tar_len,
        })
    }
}

impl Write for SplitWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for SplitWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}
fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}
fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn corrupt(m: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("layer split: {m}"))
}

/// Skips the records, returning the table of content paths.
fn read_table(blob: File) -> io::Result<Vec<String>> {
    let mut r = zstd::Decoder::new(blob)?;
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if magic != MAGIC {
        return Err(corrupt("bad magic"));
    }
    loop {
        match read_u8(&mut r)? {
            RAW => {
                let n = read_u32(&mut r)? as u64;
                io::copy(&mut (&mut r).take(n), &mut io::sink())?;
            }
            CONTENT => {
                read_u64(&mut r)?;
                read_u32(&mut r)?;
            }
            END => break,
            _ => return Err(corrupt("bad record")),
        }
    }
    let count = read_u32(&mut r)?;
    let mut table = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let mut l = [0u8; 2];
        r.read_exact(&mut l)?;
        let mut p = vec![0u8; u16::from_le_bytes(l) as usize];
        r.read_exact(&mut p)?;
        table.push(String::from_utf8(p).map_err(|_| corrupt("bad path"))?);
    }
    Ok(table)
}

/// Streams the original layer tar back, checking it against the diff id at the end.
pub struct SplitReader {
    r: zstd::Decoder<'static, BufReader<File>>,
    table: Vec<String>,
    snapshot: PathBuf,
    state: State,
    hasher: Hasher,
    want: Digest,
}

enum State {
    Next,
    Raw(u64),
    Content(Box<io::Take<File>>),
    Done,
}

impl SplitReader {
    /// `blob` opened twice: once to read the table, once to stream.
    pub fn open(blob_path: &Path, snapshot: &Path, diff_id: Digest) -> io::Result<Self> {
        let table = read_table(File::open(blob_path)?)?;
        let mut r = zstd::Decoder::new(File::open(blob_path)?)?;
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        Ok(SplitReader {
            r,
            table,
            snapshot: snapshot.to_path_buf(),
            state: State::Next,
            hasher: Hasher::default(),
            want: diff_id,
        })
    }

    fn open_content(&self, index: u32, size: u64) -> io::Result<io::Take<File>> {
        let rel = self
            .table
            .get(index as usize)
            .ok_or_else(|| corrupt("content index out of range"))?;
        // paths were written by the unpacker: no symlinks on the way
        let fd = rustix::fs::openat2(
            rustix::fs::CWD,
            self.snapshot.join(rel),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NOFOLLOW,
            rustix::fs::Mode::empty(),
            rustix::fs::ResolveFlags::NO_SYMLINKS,
        )?;
        let f = File::from(fd);
        if f.metadata()?.len() != size {
            return Err(corrupt(&format!(
                "{rel} changed size since the layer was stored"
            )));
        }
        Ok(f.take(size))
    }
}

impl Read for SplitReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.state {
                State::Done => return Ok(0),
                State::Next => {
                    self.state = match read_u8(&mut self.r)? {
                        RAW => State::Raw(read_u32(&mut self.r)? as u64),
                        CONTENT => {
                            let size = read_u64(&mut self.r)?;
                            let index = read_u32(&mut self.r)?;
                            State::Content(Box::new(self.open_content(index, size)?))
                        }
                        END => {
                            let got = std::mem::take(&mut self.hasher).finish();
                            if got != self.want {
                                return Err(corrupt(&format!(
                                    "reassembled layer has digest {got}, expected {}",
                                    self.want
                                )));
                            }
                            State::Done
                        }
                        _ => return Err(corrupt("bad record")),
                    };
                }
                State::Raw(left) => {
                    if *left == 0 {
                        self.state = State::Next;
                        continue;
                    }
                    let n = (*left as usize).min(buf.len());
                    self.r.read_exact(&mut buf[..n])?;
                    *left -= n as u64;
                    self.hasher.update(&buf[..n]);
                    return Ok(n);
                }
                State::Content(f) => {
                    let n = f.read(buf)?;
                    if n == 0 {
                        if f.limit() != 0 {
                            return Err(corrupt("content file shorter than recorded"));
                        }
                        self.state = State::Next;
                        continue;
                    }
                    self.hasher.update(&buf[..n]);
                    return Ok(n);
                }
            }
        }
    }
}
