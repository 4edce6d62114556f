//! The image configuration (OCI image spec `config.json`, with Docker's extra fields)
//! and the Dockerfile-style `changes` that import and commit apply to it.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct History {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// An image config. Unknown fields are kept, so a loaded config re-serialises as it came.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfigFile {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// the runtime defaults (Cmd, Env, ...), in Docker's capitalised field names
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageConfigFile {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The `created` time as unix seconds (0 if absent or unparsable).
    pub fn created_unix(&self) -> i64 {
        self.created
            .as_deref()
            .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .map(|t| t.timestamp())
            .unwrap_or(0)
    }

    pub fn labels(&self) -> Map<String, Value> {
        self.config
            .as_ref()
            .and_then(|c| c.get("Labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }
}

/// The machine's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChangeError {
    /// a change names an instruction import/commit cannot apply
    #[error("{0} is not a valid change command")]
    Unknown(String),
    /// the instruction's arguments are malformed
    #[error("{instr} requires {what}")]
    Args { instr: String, what: &'static str },
}

/// JSON array form (`["a","b"]`) or shell form (`a b` → `/bin/sh -c "a b"`).
fn command_value(rest: &str) -> Value {
    let t = rest.trim();
    if t.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(t) {
            return Value::from(v);
        }
    }
    Value::from(vec!["/bin/sh".to_string(), "-c".to_string(), t.to_string()])
}

/// `k=v k2="v 2"` or the legacy `k v` form.
fn key_values(instr: &str, rest: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let rest = rest.trim();
    let args = |what| ChangeError::Args {
        instr: instr.to_string(),
        what,
    };
    if rest.is_empty() {
        return Err(args("at least one argument"));
    }
    let first = rest.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or_else(|| args("two arguments"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            chars.next();
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    if let Some(n) = chars.next() {
                        word.push(n);
                    }
                }
                (_, c) => word.push(c),
            }
        }
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| args("arguments of the form key=value"))?;
        if k.is_empty() {
            return Err(args("a non-empty key"));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Applies Dockerfile instructions (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD,
/// STOPSIGNAL, USER, VOLUME, WORKDIR) to a runtime config.
pub fn apply_changes(cfg: &mut Map<String, Value>, changes: &[String]) -> Result<(), ChangeError> {
    for change in changes {
        let change = change.trim();
        if change.is_empty() {
            continue;
        }
        let (instr, rest) = change
            .split_once(char::is_whitespace)
            .unwrap_or((change, ""));
        let upper = instr.to_ascii_uppercase();
        let rest = rest.trim();
        let need = |what| ChangeError::Args {
            instr: upper.clone(),
            what,
        };
        match upper.as_str() {
            "CMD" => {
                cfg.insert("Cmd".into(), command_value(rest));
            }
            "ENTRYPOINT" => {
                cfg.insert("Entrypoint".into(), command_value(rest));
            }
            "ENV" => {
                let env = cfg.entry("Env").or_insert_with(|| Value::Array(vec![]));
                if !env.is_array() {
                    *env = Value::Array(vec![]);
                }
                if let Value::Array(list) = env {
                    for (k, v) in key_values("ENV", rest)? {
                        let prefix = format!("{k}=");
                        list.retain(|e| !e.as_str().is_some_and(|s| s.starts_with(&prefix)));
                        list.push(Value::from(format!("{k}={v}")));
                    }
                }
            }
            "LABEL" => {
                let labels = cfg
                    .entry("Labels")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !labels.is_object() {
                    *labels = Value::Object(Map::new());
                }
                if let Value::Object(m) = labels {
                    for (k, v) in key_values("LABEL", rest)? {
                        m.insert(k, Value::from(v));
                    }
                }
            }
            "EXPOSE" => {
                if rest.is_empty() {
                    return Err(need("at least one argument"));
                }
                let ports = cfg
                    .entry("ExposedPorts")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = ports {
                    for p in rest.split_whitespace() {
                        let p = if p.contains('/') {
                            p.to_string()
                        } else {
                            format!("{p}/tcp")
                        };
                        m.insert(p, Value::Object(Map::new()));
                    }
                }
            }
            "VOLUME" => {
                let list: Vec<String> = if rest.starts_with('[') {
                    serde_json::from_str(rest).map_err(|_| need("a JSON array of paths"))?
                } else {
                    rest.split_whitespace().map(str::to_string).collect()
                };
                if list.is_empty() {
                    return Err(need("at least one argument"));
                }
                let vols = cfg
                    .entry("Volumes")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(m) = vols {
                    for v in list {
                        m.insert(v, Value::Object(Map::new()));
                    }
                }
            }
            "USER" | "WORKDIR" | "STOPSIGNAL" => {
                if rest.is_empty() {
                    return Err(need("exactly one argument"));
                }
                let key = match upper.as_str() {
                    "USER" => "User",
                    "WORKDIR" => "WorkingDir",
                    _ => "StopSignal",
                };
                cfg.insert(key.into(), Value::from(rest));
            }
            "ONBUILD" => {
                if rest.is_empty() {
                    return Err(need("at least one argument"));
                }
                let ob = cfg.entry("OnBuild").or_insert_with(|| Value::Array(vec![]));
                if let Value::Array(list) = ob {
                    list.push(Value::from(rest));
                }
            }
            _ => return Err(ChangeError::Unknown(upper)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply() {
        let mut m = Map::new();
        apply_changes(
            &mut m,
            &[
                "CMD [\"/bin/sh\"]".into(),
                "ENV A=1 B=\"two words\"".into(),
                "ENV A 3".into(),
                "LABEL x=y".into(),
                "EXPOSE 80 53/udp".into(),
                "WORKDIR /w".into(),
                "ENTRYPOINT echo hi".into(),
            ],
        )
        .unwrap();
        assert_eq!(m["Cmd"], serde_json::json!(["/bin/sh"]));
        assert_eq!(m["Env"], serde_json::json!(["B=two words", "A=3"]));
        assert_eq!(m["Labels"], serde_json::json!({"x": "y"}));
        assert_eq!(
            m["ExposedPorts"],
            serde_json::json!({"80/tcp": {}, "53/udp": {}})
        );
        assert_eq!(m["WorkingDir"], "/w");
        assert_eq!(
            m["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c", "echo hi"])
        );
        assert_eq!(
            apply_changes(&mut m, &["RUN true".into()]).unwrap_err(),
            ChangeError::Unknown("RUN".into())
        );
    }

    #[test]
    fn config_round_trips_unknown_fields() {
        let raw = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"custom":{"a":1}}"#;
        let c = ImageConfigFile::parse(raw).unwrap();
        assert_eq!(c.extra["custom"]["a"], 1);
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["custom"]["a"], 1);
    }
}
