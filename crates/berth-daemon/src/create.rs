//! Creating a container: its create request checked (names, restart policy, links,
//! volumes, resources, security options, log settings, networks), merged with its
//! image's config, and recorded.

use crate::error::EngineError;
use crate::model::{attrs, Ctr};
use crate::Daemon;
use serde_json::{json, Value};
use std::sync::Arc;

/// Creates a container from a create request (the API's body): checks it, merges it
/// with its image, resolves networks and mounts, records it; returns it with warnings.
pub fn create_from(
    d: &Arc<Daemon>,
    name: Option<&str>,
    req: &Value,
) -> Result<(Arc<Ctr>, Vec<String>), EngineError> {
    let image_name = req["Image"].as_str().unwrap_or_default().to_string();
    if image_name.is_empty() {
        return Err(EngineError::invalid(
            "config cannot be empty in order to create a container",
        ));
    }
    let img = d.images.inspect(&image_name)?;
    let hc = req
        .get("HostConfig")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    crate::containers::Restart::validate(&hc["RestartPolicy"])?;
    // a variable needs a name (`=x` and `` are refused; `NAME` alone is kept as given)
    for e in crate::spec::strings(&req["Env"]).unwrap_or_default() {
        if e.split('=').next().unwrap_or_default().is_empty() {
            return Err(EngineError::invalid(format!(
                "invalid environment variable: {e}"
            )));
        }
    }
    let links = crate::containers::links_of(&hc);
    if !links.is_empty() && hc["NetworkMode"].as_str() == Some("host") {
        return Err(EngineError::invalid(
            "conflicting options: host type networking can't be used with links. This would result in undefined behavior",
        ));
    }
    // links are kept by the target's ID (`ID:ALIAS`), so a rename of either side or a
    // new container taking the target's old name leaves them as they were made
    let mut link_ids = Vec::with_capacity(links.len());
    for (target, alias) in &links {
        match d.containers.get(target) {
            Ok(t) => link_ids.push(Value::from(format!("{}:{alias}", t.id))),
            Err(e) => {
                return Err(EngineError::invalid(format!(
                    "could not get container for {target}: {}",
                    e.message
                )))
            }
        }
    }
    let rp = hc["RestartPolicy"]["Name"].as_str().unwrap_or_default();
    if hc["AutoRemove"].as_bool().unwrap_or(false) && !matches!(rp, "" | "no") {
        return Err(EngineError::invalid(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    if let Some(t) = req["StopTimeout"].as_i64() {
        if t < -1 {
            return Err(EngineError::invalid("invalid stop timeout"));
        }
    }
    // docker-py's `create_container(runtime=…)` puts `Runtime` beside the config
    // rather than in HostConfig; either names the runtime asked for
    let runtime = hc["Runtime"]
        .as_str()
        .filter(|r| !r.is_empty())
        .or_else(|| req["Runtime"].as_str().filter(|r| !r.is_empty()))
        .unwrap_or(&d.config.default_runtime)
        .to_string();
    if runtime != crate::config::BUILTIN_RUNTIME && !d.config.runtimes.contains_key(&runtime) {
        return Err(EngineError::invalid(format!(
            "unknown or invalid runtime name: {runtime}"
        )));
    }
    let log = crate::logconfig::LogConfig::resolve(
        hc["LogConfig"]["Type"].as_str().unwrap_or_default(),
        &crate::logconfig::opts_of(&hc["LogConfig"]["Config"]),
        Some((&d.config.log_driver, &d.config.log_opts)),
    )
    .map_err(EngineError::invalid)?;
    let mut hc = hc;
    hc["Runtime"] = Value::from(runtime);
    if !link_ids.is_empty() {
        hc["Links"] = Value::Array(link_ids);
    }
    // as dockerd: a cgroup namespace of its own by default on cgroup v2 only
    match hc["CgroupnsMode"].as_str().unwrap_or_default() {
        "" => {
            let mode = if d.containers.sys.v2 {
                "private"
            } else {
                "host"
            };
            hc["CgroupnsMode"] = Value::from(mode);
        }
        "private" | "host" => {}
        other => {
            return Err(EngineError::invalid(format!(
                "invalid cgroup namespace mode: {other}"
            )))
        }
    }
    hc["LogConfig"] = log.to_json();
    // masked and read-only paths not given are Docker's, written down at create as
    // dockerd does (none for a privileged container, which has neither)
    // the IPC namespace is the container's own, not lent to others unless it is made
    // `shareable` (dockerd's default-ipc-mode)
    if hc["IpcMode"].as_str().unwrap_or_default().is_empty() {
        hc["IpcMode"] = Value::from("private");
    }
    // (`--security-opt systempaths=unconfined`, which berthd takes too: none)
    let unconfined = crate::spec::strings(&hc["SecurityOpt"])
        .unwrap_or_default()
        .iter()
        .any(|o| o.replace(':', "=") == "systempaths=unconfined");
    if !hc["Privileged"].as_bool().unwrap_or(false) {
        for (key, default) in [
            ("MaskedPaths", berth_runtime::spec::MASKED),
            ("ReadonlyPaths", berth_runtime::spec::READONLY),
        ] {
            if hc[key].is_null() {
                hc[key] = if unconfined {
                    json!([])
                } else {
                    json!(default)
                };
            }
        }
    }
    // NetworkDisabled: no network but the loopback, as `none` gives
    if req["NetworkDisabled"].as_bool() == Some(true)
        && matches!(
            hc["NetworkMode"].as_str().unwrap_or_default(),
            "" | "default" | "bridge"
        )
    {
        hc["NetworkMode"] = Value::from("none");
    }
    // volumes of a driver other than the built-in one: berthd runs no volume plugin
    // (a container without volumes never needs the driver, and may name one)
    let binds_volumes = hc["Binds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|b| !b.contains(':') || !b.starts_with('/'));
    let mounts_volumes = hc["Mounts"].as_array().into_iter().flatten().any(|m| {
        m["Type"].as_str() == Some("volume")
            && m["VolumeOptions"]["DriverConfig"]["Name"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
    });
    let declared = |v: &Value| v.as_object().is_some_and(|m| !m.is_empty());
    let image_volumes = img
        .config
        .config
        .as_ref()
        .and_then(|c| serde_json::to_value(c).ok())
        .is_some_and(|c| declared(&c["Volumes"]));
    let needs_driver =
        binds_volumes || mounts_volumes || declared(&req["Volumes"]) || image_volumes;
    if let Some(driver) = hc["VolumeDriver"]
        .as_str()
        .filter(|v| needs_driver && !v.is_empty() && *v != "local")
    {
        // (not a 404: a client takes that for a missing image and pulls)
        return Err(EngineError::internal(format!(
            "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
        )));
    }
    let mut warnings = crate::resources::verify(&mut hc, &d.containers.sys, false)?;
    let mode = hc["NetworkMode"].as_str().unwrap_or_default();
    crate::security::validate(&hc, mode == "host")?;
    let userns = hc["UsernsMode"].as_str().unwrap_or_default();
    if !matches!(userns, "" | "host") {
        return Err(EngineError::invalid(format!("invalid USER mode: {userns}")));
    }
    if d.containers.remap.is_some() && userns != "host" {
        if hc["Privileged"].as_bool().unwrap_or(false) {
            return Err(EngineError::invalid("privileged mode is incompatible with user namespaces.  You must run the container in the host namespace when running privileged mode"));
        }
        if mode == "host" {
            return Err(EngineError::invalid(
                "cannot share the host's network namespace when user namespaces are enabled",
            ));
        }
    }
    crate::health::validate(req)?;
    let merged = crate::spec::merge_config(req, &img.config.config.clone().unwrap_or_default());
    let mut spec = json!({"Image": image_name, "Config": merged, "HostConfig": hc});
    if spec["HostConfig"]["NetworkMode"].as_str() == Some("host")
        && spec["Config"]["Hostname"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    {
        // as dockerd: a container on the host's network has the host's name
        if let Ok(h) = rustix::system::uname().nodename().to_str() {
            spec["Config"]["Hostname"] = Value::from(h);
        }
    }
    if req["NetworkingConfig"].is_object() {
        spec["NetworkingConfig"] = req["NetworkingConfig"].clone();
    }
    warnings.extend(crate::networks::validate(&d.containers.net, &spec, &|n| {
        d.containers.get(n).map(|_| ())
    })?);
    // a missing --volumes-from container is bad input (400), as dockerd says
    let mps = crate::mounts::resolve(&spec, &d.containers.vols, &|n| {
        d.containers
            .get(n)
            .map(|c| crate::mounts::of(&c.spec()))
            .map_err(|e| EngineError::invalid(e.message))
    })?;
    spec["MountPoints"] = serde_json::to_value(&mps).unwrap_or_default();
    spec["Config"]["Image"] = Value::from(image_name.clone());
    let c = d.containers.create(name, &img.id, spec)?;
    d.events.emit("container", "create", &c.id, attrs(&c));
    Ok((c, warnings))
}
