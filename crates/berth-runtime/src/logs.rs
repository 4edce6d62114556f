//! Docker's json-file log format: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2006-01-02T15:04:05.999999999Z"}`.
//! Output is split into lines; a line longer than 16 KiB is written in pieces, the last
//! piece of a line ending in `\n`, as Docker does.

use serde::{Deserialize, Serialize};
use std::io::{self, Write};

const MAX_PIECE: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

/// Buffers one stream's partial line and writes whole lines as log entries.
#[derive(Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn write_entry(out: &mut dyn Write, stream: &str, bytes: &[u8]) -> io::Result<()> {
    let e = Entry {
        log: String::from_utf8_lossy(bytes).into_owned(),
        stream: stream.to_string(),
        time: now(),
    };
    let mut line = serde_json::to_vec(&e).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)
}

impl LineSplitter {
    /// Feeds output; writes an entry per complete line (or full piece).
    pub fn feed(&mut self, out: &mut dyn Write, stream: &str, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.partial.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    let line = std::mem::take(&mut self.partial);
                    write_entry(out, stream, &line)?;
                }
                None => {
                    self.partial.extend_from_slice(data);
                    data = &[];
                }
            }
            while self.partial.len() >= MAX_PIECE {
                let rest = self.partial.split_off(MAX_PIECE);
                let piece = std::mem::replace(&mut self.partial, rest);
                write_entry(out, stream, &piece)?;
            }
        }
        Ok(())
    }

    /// Writes what is left of an unterminated last line.
    pub fn flush(&mut self, out: &mut dyn Write, stream: &str) -> io::Result<()> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            write_entry(out, stream, &line)?;
        }
        Ok(())
    }
}

/// The json-file log on disk, rotated by size as Docker's: when a line would take the
/// file past `max_size`, `log` becomes `log.1` (`log.1` becomes `log.2`, ...; files
/// past `max_file` are deleted) and a new `log` starts. With `max_file` 1 the file is
/// truncated instead.
pub struct RotatingLog {
    path: std::path::PathBuf,
    file: std::fs::File,
    size: u64,
    max_size: Option<u64>,
    max_file: u32,
}

impl RotatingLog {
    pub fn open(path: &std::path::Path, max_size: Option<u64>, max_file: u32) -> io::Result<Self> {
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_file: max_file.max(1),
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.max_file <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            std::path::PathBuf::from(p)
        };
        let _ = std::fs::remove_file(name(self.max_file - 1));
        for n in (1..self.max_file - 1).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        std::fs::rename(&self.path, name(1))?;
        self.file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(max) = self.max_size {
            if self.size > 0 && self.size + buf.len() as u64 > max {
                self.rotate()?;
            }
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The files of a rotated log, oldest first: `log.N`, ..., `log.1`, `log`.
pub fn log_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for n in 1.. {
        let mut p = path.to_path_buf().into_os_string();
        p.push(format!(".{n}"));
        let p = std::path::PathBuf::from(p);
        if !p.exists() {
            break;
        }
        files.push(p);
    }
    files.reverse();
    files.push(path.to_path_buf());
    files
}

/// Follows a rotated json-file log: the first read returns everything in all its files,
/// each later read what was added since, also across rotations.
pub struct LogReader {
    path: std::path::PathBuf,
    /// (inode, offset of the first byte not yet returned) of the file being read
    at: Option<(u64, u64)>,
}

impl LogReader {
    pub fn new(path: &std::path::Path) -> Self {
        LogReader {
            path: path.to_path_buf(),
            at: None,
        }
    }

    /// Whole lines of `path` from `offset`; returns the entries and the new offset.
    fn read_from(path: &std::path::Path, offset: u64) -> (Vec<Entry>, u64) {
        use std::io::{Read, Seek};
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(path) {
            if f.seek(io::SeekFrom::Start(offset)).is_ok() {
                let _ = f.read_to_end(&mut buf);
            }
        }
        let complete = buf
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let entries = String::from_utf8_lossy(&buf[..complete])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        (entries, offset + complete as u64)
    }

    fn inode(path: &std::path::Path) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| m.ino())
    }

    pub fn read(&mut self) -> Vec<Entry> {
        let mut out = Vec::new();
        match self.at {
            None => {
                let files = log_files(&self.path);
                for f in &files[..files.len() - 1] {
                    out.extend(Self::read_from(f, 0).0);
                }
            }
            Some((ino, offset)) => {
                if Self::inode(&self.path) != Some(ino) {
                    // rotated (maybe more than once): finish the file we were reading,
                    // now `log.K`, then the newer rotated ones whole
                    let files = log_files(&self.path);
                    let rotated = &files[..files.len() - 1];
                    match rotated.iter().position(|f| Self::inode(f) == Some(ino)) {
                        Some(k) => {
                            out.extend(Self::read_from(&rotated[k], offset).0);
                            for f in &rotated[k + 1..] {
                                out.extend(Self::read_from(f, 0).0);
                            }
                        }
                        // rotated away entirely: what is still there
                        None => {
                            for f in rotated {
                                out.extend(Self::read_from(f, 0).0);
                            }
                        }
                    }
                    self.at = Some((Self::inode(&self.path).unwrap_or(0), 0));
                } else if std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) < offset {
                    // truncated (a single-file log)
                    self.at = Some((ino, 0));
                }
            }
        }
        let offset = self.at.map(|(_, o)| o).unwrap_or(0);
        let (entries, next) = Self::read_from(&self.path, offset);
        out.extend(entries);
        self.at = Some((Self::inode(&self.path).unwrap_or(0), next));
        out
    }
}

/// Reads a log file back.
pub fn read_entries(path: &std::path::Path) -> io::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_max_file_files_of_whole_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c-json.log");
        let mut log = RotatingLog::open(&p, Some(200), 3).unwrap();
        let mut s = LineSplitter::default();
        for i in 0..40 {
            s.feed(&mut log, "stdout", format!("line {i}\n").as_bytes())
                .unwrap();
        }
        let files = log_files(&p);
        assert_eq!(files.len(), 3, "{files:?}");
        let mut all = Vec::new();
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 200);
            all.extend(read_entries(f).unwrap());
        }
        // the newest lines survive, in order
        assert_eq!(all.last().unwrap().log, "line 39\n");
        let nums: Vec<usize> = all
            .iter()
            .map(|e| e.log.trim().trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert!(nums[0] > 0, "the oldest were dropped");
        let mut one = RotatingLog::open(&d.path().join("one"), Some(100), 1).unwrap();
        for _ in 0..10 {
            s.feed(&mut one, "stdout", b"0123456789\n").unwrap();
        }
        assert!(std::fs::metadata(d.path().join("one")).unwrap().len() <= 100);
        assert_eq!(log_files(&d.path().join("one")).len(), 1);
    }

    #[test]
    fn reader_follows_across_rotations() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c-json.log");
        let mut log = RotatingLog::open(&p, Some(120), 5).unwrap();
        let mut s = LineSplitter::default();
        let mut r = LogReader::new(&p);
        let mut seen = Vec::new();
        for i in 0..30 {
            s.feed(&mut log, "stdout", format!("l{i}\n").as_bytes())
                .unwrap();
            // sometimes after one rotation, sometimes after several
            if i % 4 == 0 || i == 13 {
                seen.extend(r.read().into_iter().map(|e| e.log));
            }
        }
        seen.extend(r.read().into_iter().map(|e| e.log));
        let want: Vec<String> = (0..30).map(|i| format!("l{i}\n")).collect();
        assert_eq!(seen, want, "nothing lost or repeated while following");
    }

    #[test]
    fn lines_and_pieces() {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        s.feed(&mut out, "stdout", b"hel").unwrap();
        s.feed(&mut out, "stdout", b"lo\nwor").unwrap();
        s.flush(&mut out, "stdout").unwrap();
        let text = String::from_utf8(out).unwrap();
        let e: Vec<Entry> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].log, "hello\n");
        assert_eq!(e[1].log, "wor");
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        s.feed(&mut out, "stderr", &vec![b'x'; 40_000]).unwrap();
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 2);
    }
}
