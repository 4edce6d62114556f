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
    /// the instruction's arguments do not parse (quotes, substitutions)
    #[error("{instr}: {msg}")]
    Syntax { instr: String, msg: String },
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

/// The variables of a config's `Env`, as instructions expand them.
fn env_vars(cfg: &Map<String, Value>) -> std::collections::HashMap<String, String> {
    cfg.get("Env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Applies Dockerfile instructions (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD,
/// STOPSIGNAL, USER, VOLUME, WORKDIR) to a runtime config, their arguments quoted and
/// expanded (`$PATH`) as a Dockerfile's are, from the config's `Env` before each.
pub fn apply_changes(cfg: &mut Map<String, Value>, changes: &[String]) -> Result<(), ChangeError> {
    use berth_build::shell;
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
        let syntax = |msg: String| ChangeError::Syntax {
            instr: upper.clone(),
            msg,
        };
        let vars = env_vars(cfg);
        let lookup = |n: &str| vars.get(n).cloned();
        let words =
            |text: &str| shell::split(text, &lookup, '\\').map_err(|e| syntax(e.to_string()));
        let pairs = |text: &str| -> Result<Vec<(String, String)>, ChangeError> {
            if text.is_empty() {
                return Err(need("at least one argument"));
            }
            Ok(shell::pairs(text, &lookup, '\\', true)
                .map_err(syntax)?
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect())
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
                    for (k, v) in pairs(rest)? {
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
                    for (k, v) in pairs(rest)? {
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
                    for p in words(rest)? {
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
                    words(rest)?
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
                let value = words(rest)?.join(" ");
                cfg.insert(key.into(), Value::from(value));
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
    fn changes_expand_the_configs_variables() {
        let mut m = Map::new();
        m.insert("Env".into(), serde_json::json!(["PATH=/bin", "HOME=/root"]));
        apply_changes(
            &mut m,
            &[
                "ENV PATH=/usr/bin:$PATH".into(),
                "ENV LIT='$HOME' Q=\"${HOME}/q\"".into(),
                "WORKDIR $HOME/w".into(),
                "LABEL at=${HOME:-none}".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            m["Env"],
            serde_json::json!(["HOME=/root", "PATH=/usr/bin:/bin", "LIT=$HOME", "Q=/root/q"])
        );
        assert_eq!(m["WorkingDir"], "/root/w");
        assert_eq!(m["Labels"]["at"], "/root");
        assert!(apply_changes(&mut m, &["ENV A=\"open".into()]).is_err());
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
