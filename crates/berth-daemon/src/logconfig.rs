//! Log drivers and their options: `json-file` (rotated by size, capped by default) and
//! `none`. A container's `HostConfig.LogConfig` is merged with daemon.json's
//! `log-driver`/`log-opts` at create time, as dockerd does, so inspect shows what the
//! user and daemon.json gave; berth's own cap (10 MiB × 3) applies behind them when
//! neither set `max-size`, and is not shown.

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// berth's cap when nobody set one: 10 MiB per file, 3 files.
pub const DEFAULT_MAX_SIZE: &str = "10m";
pub const DEFAULT_MAX_FILE: &str = "3";

const JSON_FILE_OPTS: &[&str] = &[
    "max-size",
    "max-file",
    "compress",
    "labels",
    "labels-regex",
    "env",
    "env-regex",
    "tag",
];

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub driver: String,
    pub opts: BTreeMap<String, String>,
    /// bytes per file before rotation (json-file); None: unlimited
    pub max_size: Option<u64>,
    pub max_file: u32,
}

/// Docker's size syntax for `max-size`: `1024`, `10k`, `10m`, `1g` (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        't' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    if n < 0.0 {
        return None;
    }
    Some((n * mult as f64) as u64)
}

impl LogConfig {
    /// The configuration for a container asking for `driver` with `opts` (empty driver:
    /// the daemon's), given the daemon's defaults (`None` when checking daemon.json
    /// itself). Errors are Docker's messages.
    pub fn resolve(
        driver: &str,
        opts: &BTreeMap<String, String>,
        daemon: Option<(&str, &BTreeMap<String, String>)>,
    ) -> Result<LogConfig, String> {
        let mut merged = BTreeMap::new();
        let driver = match daemon {
            Some((d, dopts)) if driver.is_empty() || driver == d => {
                merged.extend(dopts.clone());
                d.to_string()
            }
            _ if driver.is_empty() => "json-file".to_string(),
            _ => driver.to_string(),
        };
        merged.extend(opts.clone());
        match driver.as_str() {
            "none" => {
                if let Some(k) = merged.keys().next() {
                    return Err(format!("unknown log opt '{k}' for none log driver"));
                }
                Ok(LogConfig {
                    driver,
                    opts: merged,
                    max_size: None,
                    max_file: 1,
                })
            }
            "json-file" => {
                if let Some(k) = merged
                    .keys()
                    .find(|k| !JSON_FILE_OPTS.contains(&k.as_str()))
                {
                    return Err(format!("unknown log opt '{k}' for json-file log driver"));
                }
                // what nobody set, berth's cap fills in behind the options shown
                let capped = !merged.contains_key("max-size");
                let max_size = match merged.get("max-size").map(String::as_str) {
                    None => parse_size(DEFAULT_MAX_SIZE),
                    Some("-1") => None,
                    Some(v) => Some(
                        parse_size(v)
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("invalid value for max-size: {v}"))?,
                    ),
                };
                let max_file = match merged.get("max-file") {
                    None if capped => DEFAULT_MAX_FILE.parse().unwrap_or(3),
                    None => 1,
                    Some(v) => {
                        let n: i64 = v
                            .parse()
                            .map_err(|_| format!("invalid value for max-file: {v}"))?;
                        if n < 1 {
                            return Err("max-file cannot be less than 1".into());
                        }
                        n.min(1000) as u32
                    }
                };
                Ok(LogConfig {
                    driver,
                    opts: merged,
                    max_size,
                    max_file,
                })
            }
            other => Err(format!(
                "logger: no log driver named '{other}' is registered"
            )),
        }
    }

    /// From a stored `HostConfig.LogConfig` (already merged at create).
    pub fn of(host_config: &Value) -> LogConfig {
        let lc = &host_config["LogConfig"];
        let opts = opts_of(&lc["Config"]);
        Self::resolve(lc["Type"].as_str().unwrap_or_default(), &opts, None).unwrap_or(LogConfig {
            driver: "json-file".into(),
            opts,
            max_size: None,
            max_file: 1,
        })
    }

    pub fn to_json(&self) -> Value {
        json!({"Type": self.driver, "Config": self.opts})
    }

    pub fn readable(&self) -> bool {
        self.driver == "json-file"
    }
}

/// `{"k": "v"}` → map; non-string values are left out.
pub fn opts_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("2GB"), Some(2 << 30));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn capped_by_default_and_merged_with_the_daemon() {
        let none = BTreeMap::new();
        let c = LogConfig::resolve("", &none, Some(("json-file", &none))).unwrap();
        assert_eq!((c.max_size, c.max_file), (Some(10 << 20), 3));
        let daemon = m(&[("max-size", "1m"), ("max-file", "2")]);
        let c = LogConfig::resolve("", &m(&[("max-size", "5k")]), Some(("json-file", &daemon)))
            .unwrap();
        assert_eq!((c.max_size, c.max_file), (Some(5 << 10), 2));
        let c = LogConfig::resolve("none", &none, Some(("json-file", &daemon))).unwrap();
        assert_eq!(c.driver, "none");
        assert!(LogConfig::resolve("syslog", &none, None)
            .unwrap_err()
            .contains("no log driver named 'syslog'"));
        assert!(LogConfig::resolve("json-file", &m(&[("bogus", "1")]), None).is_err());
        assert!(LogConfig::resolve(
            "json-file",
            &m(&[("max-file", "0"), ("max-size", "1k")]),
            None
        )
        .is_err());
        // max-file alone is accepted: the cap's size applies behind it
        let c = LogConfig::resolve("json-file", &m(&[("max-file", "100")]), None).unwrap();
        assert_eq!((c.max_size, c.max_file), (Some(10 << 20), 100));
        assert_eq!(c.to_json()["Config"], json!({"max-file": "100"}));
        let c = LogConfig::resolve("json-file", &none, None).unwrap();
        assert_eq!(c.to_json()["Config"], json!({}));
        let c = LogConfig::resolve(
            "json-file",
            &m(&[("max-file", "3"), ("max-size", "-1")]),
            None,
        )
        .unwrap();
        assert_eq!((c.max_size, c.max_file), (None, 3));
        assert!(LogConfig::resolve("json-file", &m(&[("max-size", "lots")]), None).is_err());
    }
}
