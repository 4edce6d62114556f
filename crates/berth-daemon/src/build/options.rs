//! `POST /build`'s query parameters, checked before the context is read.

use crate::error::EngineError;
use crate::http::Query;
use berth_image::reference::Reference;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub dockerfile: String,
    pub tags: Vec<Reference>,
    /// `--build-arg`s: a name with no value takes it from the client's environment,
    /// which the CLI has already done; None here means "declared without value"
    pub build_args: BTreeMap<String, Option<String>>,
    pub target: String,
    pub nocache: bool,
    pub pull: bool,
    pub labels: Map<String, Value>,
    pub quiet: bool,
    /// remove intermediate containers after a successful step (default true)
    pub rm: bool,
    /// remove them after a failed one too
    pub forcerm: bool,
    pub cache_from: Vec<String>,
    pub network_mode: String,
    pub extra_hosts: Vec<String>,
    /// resources for RUN containers, as HostConfig fields
    pub resources: Map<String, Value>,
    pub platform: String,
    /// `X-Registry-Config`: credentials for pulling base images, by registry
    pub registry_config: String,
    /// a BuildKit build: the client's session (registry credentials, secrets, ssh)
    pub session: Option<SessionAuth>,
    /// a BuildKit build: what the client allowed (`network.host`, `security.insecure`)
    pub entitlements: Vec<String>,
    /// a BuildKit build: its synced context directory (for `RUN --mount=type=bind`)
    pub context_dir: Option<std::path::PathBuf>,
    /// a BuildKit build: `--build-context NAME=…`, which FROM, COPY --from and
    /// RUN --mount from= take before stages and images of that name
    pub named_contexts: BTreeMap<String, NamedContext>,
}

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// `docker-image://REF`: that image
    Image(String),
    /// `local:NAME`: the client's directory, synced here
    Dir(std::path::PathBuf),
}

/// The session of a BuildKit client (and the gRPC methods it serves).
#[derive(Clone)]
pub struct SessionAuth(pub berth_buildkit::session::SessionClient, pub Vec<String>);

impl std::fmt::Debug for SessionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionAuth")
    }
}

/// A parameter holding JSON; absent, empty or `null` (Docker's Go client sends `null`
/// for a map or list it was not given) mean "not given".
fn json_param<T: serde::de::DeserializeOwned + Default>(
    q: &Query,
    k: &str,
) -> Result<T, EngineError> {
    match q.get(k).filter(|v| !v.is_empty()) {
        Some(v) => serde_json::from_str::<Option<T>>(v)
            .map(Option::unwrap_or_default)
            .map_err(|e| EngineError::invalid(format!("invalid {k} parameter: {e}"))),
        None => Ok(T::default()),
    }
}

impl Options {
    pub fn parse(q: &Query, headers: &http::HeaderMap) -> Result<Options, EngineError> {
        let dockerfile = q
            .get("dockerfile")
            .filter(|f| !f.is_empty())
            .unwrap_or("Dockerfile")
            .to_string();
        if dockerfile.contains("://") {
            return Err(EngineError::invalid(
                "a Dockerfile from a URL is not supported: send it in the context",
            ));
        }
        let mut tags = Vec::new();
        for t in q.all("t") {
            let r = Reference::parse_tagged_default(&t)
                .map_err(|e| EngineError::invalid(format!("invalid reference format: {t}: {e}")))?;
            if r.digest().is_some() {
                return Err(EngineError::invalid(format!(
                    "invalid reference format: {t}: a build's tag cannot be a digest"
                )));
            }
            tags.push(r);
        }
        let rm = match q.get("rm") {
            None | Some("") => true,
            Some(_) => q.bool("rm")?,
        };
        let platform = q.get("platform").unwrap_or_default().to_string();
        if !platform.is_empty() {
            let host = berth_image::platform::Platform::host();
            let want =
                berth_image::platform::Platform::parse(&platform).map_err(EngineError::invalid)?;
            if !host.matches(&want.os, &want.architecture, &want.variant) {
                return Err(EngineError::invalid(format!(
                    "platform {platform} is not supported here; this host builds {host}"
                )));
            }
        }
        let mut resources = Map::new();
        for (k, field) in [
            ("memory", "Memory"),
            ("memswap", "MemorySwap"),
            ("cpushares", "CpuShares"),
            ("cpuperiod", "CpuPeriod"),
            ("cpuquota", "CpuQuota"),
            ("shmsize", "ShmSize"),
        ] {
            if let Some(v) = q.get(k).filter(|v| !v.is_empty() && *v != "0") {
                let n: i64 = v
                    .parse()
                    .map_err(|_| EngineError::invalid(format!("invalid {k}: {v}")))?;
                resources.insert(field.into(), Value::from(n));
            }
        }
        for (k, field) in [("cpusetcpus", "CpusetCpus"), ("cpusetmems", "CpusetMems")] {
            if let Some(v) = q.get(k).filter(|v| !v.is_empty()) {
                resources.insert(field.into(), Value::from(v));
            }
        }
        let ulimits: Vec<Value> = json_param(q, "ulimits")?;
        if !ulimits.is_empty() {
            resources.insert("Ulimits".into(), Value::from(ulimits));
        }
        let extra_hosts = q
            .all("extrahosts")
            .iter()
            .flat_map(|v| v.split(','))
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        let network_mode = match q.get("networkmode").unwrap_or_default() {
            "" => "default".to_string(),
            m => m.to_string(),
        };
        Ok(Options {
            dockerfile,
            tags,
            build_args: json_param(q, "buildargs")?,
            target: q.get("target").unwrap_or_default().to_string(),
            nocache: q.bool("nocache")?,
            pull: q.bool("pull")?,
            labels: json_param(q, "labels")?,
            quiet: q.bool("q")?,
            rm,
            forcerm: q.bool("forcerm")?,
            cache_from: json_param(q, "cachefrom")?,
            network_mode,
            extra_hosts,
            resources,
            platform,
            registry_config: headers
                .get("x-registry-config")
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            session: None,
            entitlements: Vec::new(),
            context_dir: None,
            named_contexts: BTreeMap::new(),
        })
    }
}
