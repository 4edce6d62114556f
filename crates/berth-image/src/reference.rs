//! Image references, parsed and normalised the way Docker does.
//!
//! Grammar (from the distribution project's reference package):
//! `name[:tag][@digest]`, where `name` is `[domain/]path`, the domain is recognised by a
//! `.` or `:` in the first component, or by being `localhost`, or by holding an upper
//! case letter. Names without a domain live on `docker.io`, and single-component names
//! there under `library/`. Display uses the familiar form (`busybox:latest`).

use crate::digest::Digest;
use std::fmt;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;

/// Why a reference was refused; the text is what Docker answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// invalid reference format
    #[error("invalid reference format")]
    Format,
    /// invalid reference format: repository name (NAME) must be lowercase
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    /// repository name must not be longer than 255 characters
    #[error("invalid reference format: repository name must not be more than 255 characters")]
    TooLong,
    /// 64-hex-character names are image IDs, not repositories
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
}

/// A normalised reference: `domain/path` plus an optional tag and digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `alpha-numeric (separator alpha-numeric)*` with separators `.`, `_`, `__`, `-+`.
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [ipv6]:port
        let Some(end) = rest.find(']') else {
            return false;
        };
        let ip = &rest[..end];
        if ip.is_empty() || !ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(p) => ("x", Some(p)),
            None if after.is_empty() => ("x", None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Reference {
    /// Parses and normalises a reference as `docker` does (`ParseNormalizedNamed`).
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if is_hex64(s) {
            return Err(ReferenceError::HexName(s.to_string()));
        }
        // Split off the digest, then the tag (a ':' after the last '/').
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(d.parse::<Digest>().map_err(|_| ReferenceError::Format)?),
            ),
            None => (s, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                (&rest[..i], Some(&rest[i + 1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::Format);
            }
        }
        if name.is_empty() {
            return Err(ReferenceError::Format);
        }
        let (mut domain, mut path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.to_lowercase() != first =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if domain == LEGACY_DOMAIN {
            domain = DEFAULT_DOMAIN.to_string();
        }
        if domain == DEFAULT_DOMAIN && !path.contains('/') {
            path = format!("{OFFICIAL_PREFIX}{path}");
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(path));
        }
        if !valid_domain(&domain) || !path.split('/').all(valid_path_component) {
            return Err(ReferenceError::Format);
        }
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(ReferenceError::TooLong);
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Parses a reference and adds `:latest` when it has neither tag nor digest.
    pub fn parse_tagged_default(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::Format);
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The same repository pinned to a digest (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// `docker.io/library/busybox`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `busybox`, `user/app`, `localhost:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_PREFIX) {
                Some(p) if !p.contains('/') => p.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.full_name()
        }
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The familiar form, with tag and digest: `busybox:latest`.
    pub fn familiar(&self) -> String {
        format!("{}{}", self.familiar_name(), self.suffix())
    }
}

impl fmt::Display for Reference {
    /// The full form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.full_name(), self.suffix())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(full("ubuntu"), "docker.io/library/ubuntu");
        assert_eq!(
            Reference::parse_tagged_default("ubuntu")
                .unwrap()
                .to_string(),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(full("user/app:1.0"), "docker.io/user/app:1.0");
        assert_eq!(full("index.docker.io/ubuntu"), "docker.io/library/ubuntu");
        assert_eq!(full("localhost/app"), "localhost/app");
        assert_eq!(full("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(full("127.0.0.1:5000/app"), "127.0.0.1:5000/app");
        assert_eq!(full("[::1]:5000/app:x"), "[::1]:5000/app:x");
        assert_eq!(full("Registry.Example/app"), "Registry.Example/app");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.digest().unwrap().to_string(), d);
        assert_eq!(r.familiar(), format!("busybox@{d}"));
        assert_eq!(
            Reference::parse("docker.io/library/busybox:1")
                .unwrap()
                .familiar(),
            "busybox:1"
        );
        assert_eq!(
            Reference::parse("docker.io/library/a/b")
                .unwrap()
                .familiar(),
            "library/a/b"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            ":",
            "a b",
            "UPPER:tag/x",
            "a/",
            "/a",
            "a//b",
            "a:",
            "a:-x",
            "-a",
            "a-",
            "a..b",
            "a@sha256:12",
            "a:b:c",
            "a/b@",
            "localhost:port/a",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Reference::parse("Busybox").unwrap_err().to_string(),
            "invalid reference format: repository name (library/Busybox) must be lowercase"
        );
        let long = "a".repeat(300);
        assert!(Reference::parse(&long).is_err());
        assert!(matches!(
            Reference::parse(&"a".repeat(64).replace('a', "b")),
            Err(ReferenceError::HexName(_))
        ));
    }

    #[test]
    fn separators() {
        assert!(valid_path_component("a_b"));
        assert!(valid_path_component("a__b"));
        assert!(valid_path_component("a---b"));
        assert!(valid_path_component("a.b"));
        assert!(!valid_path_component("a___b"));
        assert!(!valid_path_component("a._b"));
    }
}
