//! Platforms (`os/arch[/variant]`), read as containerd's `platforms.Parse` reads them
//! (which is what dockerd answers with), and matched against images.

/// A platform in Go's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "windows",
    "zos",
];

const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "ppc64",
    "ppc64le",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

fn invalid(msg: String) -> String {
    format!("{msg}: invalid argument")
}

fn normalize_os(os: &str) -> String {
    match os.to_lowercase().as_str() {
        "macos" => "darwin".into(),
        o => o.into(),
    }
}

/// An architecture and variant in their canonical names (`x86_64` is `amd64`, `aarch64`
/// `arm64`, `armhf` `arm/v7`, ...).
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    let (a, v) = match arch.as_str() {
        "i386" => ("386", ""),
        "x86_64" | "x86-64" | "amd64" => ("amd64", if variant == "v1" { "" } else { &variant }),
        "aarch64" | "arm64" => (
            "arm64",
            match variant.as_str() {
                "8" | "v8" => "",
                v => v,
            },
        ),
        "armhf" => ("arm", "v7"),
        "armel" => ("arm", "v6"),
        "arm" => (
            "arm",
            match variant.as_str() {
                "" | "7" => "v7",
                "5" => "v5",
                "6" => "v6",
                "8" => "v8",
                v => v,
            },
        ),
        a => (a, variant.as_str()),
    };
    (a.to_string(), v.to_string())
}

impl Platform {
    /// This machine's platform.
    pub fn host() -> Self {
        let architecture = crate::config::host_arch().to_string();
        let variant = match architecture.as_str() {
            "arm64" => "v8",
            "arm" => "v7",
            _ => "",
        };
        Platform {
            os: "linux".into(),
            architecture,
            variant: variant.into(),
        }
    }

    /// `os`, `arch`, `os/arch` or `os/arch/variant`, with containerd's rules and words:
    /// a single word must be a known OS (the host's architecture) or architecture (the
    /// host's OS); two or three words are taken as given, normalized.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.contains('*') {
            return Err(invalid(format!("{s:?}: wildcards not yet supported")));
        }
        let parts: Vec<&str> = s.split('/').collect();
        for p in &parts {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(invalid(format!(
                    "{p:?} is an invalid component of {s:?}: platform specifier component must match \"^[A-Za-z0-9_-]+$\""
                )));
            }
        }
        let host = Self::host();
        match parts[..] {
            [one] => {
                let os = normalize_os(one);
                if KNOWN_OS.contains(&os.as_str()) {
                    return Ok(Platform {
                        os,
                        architecture: host.architecture,
                        variant: if host.variant == "v7" || host.variant == "v8" {
                            String::new()
                        } else {
                            host.variant
                        },
                    });
                }
                let (architecture, mut variant) = normalize_arch(one, "");
                if architecture == "arm" && variant == "v7" {
                    variant.clear();
                }
                if KNOWN_ARCH.contains(&architecture.as_str()) {
                    return Ok(Platform {
                        os: host.os,
                        architecture,
                        variant,
                    });
                }
                Err(invalid(format!(
                    "{s:?}: unknown operating system or architecture"
                )))
            }
            [os, arch] => {
                let (architecture, mut variant) = normalize_arch(arch, "");
                if architecture == "arm" && variant == "v7" {
                    variant.clear();
                }
                Ok(Platform {
                    os: normalize_os(os),
                    architecture,
                    variant,
                })
            }
            [os, arch, variant] => {
                let (architecture, mut variant) = normalize_arch(arch, variant);
                if architecture == "arm64" && variant.is_empty() {
                    variant = "v8".into();
                }
                Ok(Platform {
                    os: normalize_os(os),
                    architecture,
                    variant,
                })
            }
            _ => Err(invalid(format!("{s:?}: cannot parse platform specifier"))),
        }
    }

    /// Whether an image or index entry of `os/architecture/variant` is for this platform
    /// (a variant missing on either side matches any).
    pub fn matches(&self, os: &str, architecture: &str, variant: &str) -> bool {
        let (a, v) = normalize_arch(architecture, variant);
        let (mine, my_variant) = normalize_arch(&self.architecture, &self.variant);
        normalize_os(os) == normalize_os(&self.os)
            && a == mine
            && (my_variant.is_empty() || variant.is_empty() || v == my_variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_rules_and_words() {
        let host = Platform::host();
        assert_eq!(Platform::parse("linux").unwrap().os, "linux");
        assert_eq!(
            Platform::parse("linux").unwrap().architecture,
            host.architecture
        );
        let p = Platform::parse("s390x").unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "s390x"));
        assert_eq!(
            Platform::parse("foobar").unwrap_err(),
            "\"foobar\": unknown operating system or architecture: invalid argument"
        );
        assert!(Platform::parse("linux//x")
            .unwrap_err()
            .contains("is an invalid component of"));
        assert!(Platform::parse("a/b/c/d")
            .unwrap_err()
            .contains("cannot parse platform specifier"));
        assert!(Platform::parse("linux/*")
            .unwrap_err()
            .contains("wildcards"));
        // two words are taken as given
        let p = Platform::parse("linuxDifferentOS/amd64").unwrap();
        assert_eq!(p.os, "linuxdifferentos");
        assert_eq!(
            Platform::parse("linux/x86_64").unwrap().architecture,
            "amd64"
        );
        let p = Platform::parse("linux/armhf").unwrap();
        assert_eq!((p.architecture.as_str(), p.variant.as_str()), ("arm", ""));
        // three words: arm64's variant is always named
        assert_eq!(Platform::parse("linux/arm64/8").unwrap().variant, "v8");
        assert_eq!(Platform::parse("linux/aarch64/v8").unwrap().variant, "v8");
        assert_eq!(Platform::parse("linux/arm64").unwrap().variant, "");
        assert_eq!(
            Platform::parse("MacOS/AMD64").unwrap().to_string(),
            "darwin/amd64"
        );
    }

    #[test]
    fn matching() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert!(p.matches("linux", "amd64", ""));
        assert!(p.matches("linux", "x86_64", ""));
        assert!(!p.matches("windows", "amd64", ""));
        assert!(!p.matches("linux", "arm64", ""));
        let arm = Platform::parse("linux/arm/v6").unwrap();
        assert!(arm.matches("linux", "arm", "v6"));
        assert!(!arm.matches("linux", "arm", "v7"));
        assert!(arm.matches("linux", "arm", ""));
    }
}
