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
