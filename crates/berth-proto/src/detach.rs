//! Detach keys: the key sequence (default ctrl-p ctrl-q) that leaves an attached
//! terminal session without stopping the container. Docker's syntax: a comma-separated
//! list of single letters or `ctrl-<value>` with value `a`–`z`, `@`, `[`, `\`, `]`, `^`,
//! `_`.

/// Docker's default: ctrl-p, ctrl-q.
pub const DEFAULT: &[u8] = &[0x10, 0x11];

/// Parses `ctrl-p,ctrl-q` into bytes.
pub fn parse(keys: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("Invalid detach keys ({keys}) provided");
    let mut out = Vec::new();
    for k in keys.split(',') {
        let k = k.trim();
        if let Some(rest) = k.strip_prefix("ctrl-") {
            let b = match rest.as_bytes() {
                [c @ b'a'..=b'z'] => c - b'a' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => return Err(bad()),
            };
            out.push(b);
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            return Err(bad());
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// Watches input for the sequence. Bytes that start a possible match are held back and
/// released when the match fails, so the container never sees a complete sequence.
#[derive(Debug, Clone)]
pub struct Scanner {
    keys: Vec<u8>,
    held: usize,
}

/// What to do with a chunk of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// pass these bytes on
    Pass(Vec<u8>),
    /// the sequence was typed: pass these bytes (those before it), then detach
    Detach(Vec<u8>),
}

impl Scanner {
    pub fn new(keys: Vec<u8>) -> Self {
        Scanner { keys, held: 0 }
    }

    pub fn feed(&mut self, data: &[u8]) -> Scan {
        let mut out = Vec::with_capacity(data.len());
        for &b in data {
            if b == self.keys[self.held] {
                self.held += 1;
                if self.held == self.keys.len() {
                    self.held = 0;
                    return Scan::Detach(out);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.held]);
                self.held = 0;
                if b == self.keys[0] {
                    self.held = 1;
                    if self.keys.len() == 1 {
                        self.held = 0;
                        return Scan::Detach(out);
                    }
                } else {
                    out.push(b);
                }
            }
        }
        Scan::Pass(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        assert_eq!(parse("ctrl-p,ctrl-q").unwrap(), DEFAULT);
        assert_eq!(parse("a,ctrl-@,ctrl-_").unwrap(), vec![b'a', 0, 31]);
        assert!(parse("ctrl-1").is_err());
        assert!(parse("ab").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn scans_across_chunks_and_releases_false_starts() {
        let mut s = Scanner::new(DEFAULT.to_vec());
        assert_eq!(s.feed(b"ab\x10"), Scan::Pass(b"ab".to_vec()));
        assert_eq!(s.feed(b"c"), Scan::Pass(b"\x10c".to_vec()));
        assert_eq!(s.feed(b"x\x10\x10"), Scan::Pass(b"x\x10".to_vec()));
        assert_eq!(s.feed(b"\x11rest"), Scan::Detach(Vec::new()));
        let mut one = Scanner::new(vec![b'q']);
        assert_eq!(one.feed(b"abq"), Scan::Detach(b"ab".to_vec()));
    }
}
