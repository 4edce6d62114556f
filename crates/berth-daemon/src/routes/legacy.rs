//! What older API versions see and send differently, in one place: requests are brought
//! to today's meaning before the engine sees them, answers are shaped for the version
//! the client asked for (as dockerd does for each).

use super::ApiVersion;
use serde_json::{json, Map, Value};

fn before(v: ApiVersion, minor: u32) -> bool {
    v < ApiVersion(1, minor)
}

/// A create request from a client of `v`.
pub fn create_request(v: ApiVersion, req: &mut Value) {
    if !req.is_object() {
        return;
    }
    if !req["HostConfig"].is_object() {
        req["HostConfig"] = json!({});
    }
    let hc = &mut req["HostConfig"];
    // the default IPC mode was `shareable` for these clients
    if before(v, 40) && hc["IpcMode"].as_str().unwrap_or_default().is_empty() {
        hc["IpcMode"] = Value::from("shareable");
    }
    if before(v, 40) {
        // fields these clients cannot have meant
        if let Some(o) = hc.as_object_mut() {
            o.remove("KernelMemoryTCP");
        }
        for m in hc["Mounts"].as_array_mut().into_iter().flatten() {
            if let Some(bo) = m["BindOptions"].as_object_mut() {
                bo.remove("NonRecursive");
            }
        }
    }
    // before 1.25 the client removed the container itself
    if before(v, 25) {
        hc["AutoRemove"] = Value::from(false);
    }
}

/// An update request from a client of `v`: PidsLimit came with 1.40.
pub fn update_request(v: ApiVersion, body: &mut Value) {
    if before(v, 40) {
        if let Some(o) = body.as_object_mut() {
            o.remove("PidsLimit");
        }
    }
}

/// Before 1.20 killing a container that is not running was not an error.
pub fn kill_of_stopped_is_ok(v: ApiVersion) -> bool {
    before(v, 20)
}

/// Removing a running container without force, refused in the words of the Docker a
/// client of `v` was written against (Docker 25, API 1.44, changed them; this one
/// answers newer clients in the engine's words).
pub fn remove_refusal(
    v: ApiVersion,
    id: &str,
    status: &str,
    paused: bool,
) -> Result<(), crate::error::EngineError> {
    if !before(v, 44) || status != "running" {
        return Ok(());
    }
    let (state, procedure) = if paused {
        (
            "paused",
            "Unpause and then stop the container before attempting removal or force remove",
        )
    } else {
        (
            "running",
            "Stop the container before attempting removal or force remove",
        )
    };
    Err(crate::error::EngineError::conflict(format!(
        "You cannot remove a {state} container {id}. {procedure}"
    )))
}

/// A container's inspect for a client of `v`: before 1.20 volumes as `Volumes` and
/// `VolumesRW` and the resources in `Config` too (1.20: the volume driver there), and
/// before 1.21 no per-network settings.
pub fn inspect(v: ApiVersion, out: &mut Value) {
    if !before(v, 21) {
        return;
    }
    if let Some(ns) = out["NetworkSettings"].as_object_mut() {
        ns.remove("Networks");
    }
    let hc = out["HostConfig"].clone();
    let cfg = &mut out["Config"];
    cfg["VolumeDriver"] = hc["VolumeDriver"].clone();
    if v == ApiVersion(1, 20) {
        return;
    }
    cfg["Memory"] = json!(hc["Memory"].as_i64().unwrap_or(0));
    cfg["MemorySwap"] = json!(hc["MemorySwap"].as_i64().unwrap_or(0));
    cfg["CpuShares"] = json!(hc["CpuShares"].as_i64().unwrap_or(0));
    cfg["Cpuset"] = json!(hc["CpusetCpus"].as_str().unwrap_or_default());
    let mut volumes = Map::new();
    let mut rw = Map::new();
    for m in out["Mounts"].as_array().into_iter().flatten() {
        let Some(dest) = m["Destination"].as_str() else {
            continue;
        };
        volumes.insert(dest.to_string(), m["Source"].clone());
        rw.insert(dest.to_string(), m["RW"].clone());
    }
    if let Some(o) = out.as_object_mut() {
        o.remove("Mounts");
        o.insert("Volumes".into(), Value::Object(volumes));
        o.insert("VolumesRW".into(), Value::Object(rw));
    }
}

/// `info` for a client of `v`: before 1.25 an ExecutionDriver and security options by
/// name only; before 1.39 placeholders for an unknown kernel or system.
pub fn info(v: ApiVersion, out: &mut Value) {
    if before(v, 25) {
        out["ExecutionDriver"] = Value::from("<not supported>");
        let names: Vec<Value> = out["SecurityOptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|o| {
                // `name=seccomp,profile=default` → `seccomp`
                let first = o.split(',').next().unwrap_or(o);
                Value::from(first.strip_prefix("name=").unwrap_or(first))
            })
            .collect();
        out["SecurityOptions"] = Value::Array(names);
    }
    if before(v, 39) {
        for k in ["KernelVersion", "OperatingSystem"] {
            if out[k].as_str().unwrap_or_default().is_empty() {
                out[k] = Value::from("<unknown>");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_inspect_and_requests() {
        let mut out = json!({
            "HostConfig": {"CpusetCpus": "0", "Memory": 5, "VolumeDriver": ""},
            "Config": {"Image": "x"},
            "Mounts": [{"Destination": "/d", "Source": "/s", "RW": true}],
            "NetworkSettings": {"Networks": {}, "IPAddress": ""},
        });
        let mut v120 = out.clone();
        inspect(ApiVersion(1, 19), &mut out);
        assert_eq!(out["Config"]["Cpuset"], "0");
        assert_eq!(out["Config"]["Memory"], 5);
        assert_eq!(out["Volumes"]["/d"], "/s");
        assert_eq!(out["VolumesRW"]["/d"], true);
        assert!(out.get("Mounts").is_none());
        assert!(out["NetworkSettings"].get("Networks").is_none());
        inspect(ApiVersion(1, 20), &mut v120);
        assert!(v120["Config"].get("Cpuset").is_none());
        assert!(v120.get("Mounts").is_some());

        let mut req = json!({"Image": "x"});
        create_request(ApiVersion(1, 39), &mut req);
        assert_eq!(req["HostConfig"]["IpcMode"], "shareable");
        let mut req = json!({"Image": "x", "HostConfig": {"AutoRemove": true}});
        create_request(ApiVersion(1, 41), &mut req);
        assert!(req["HostConfig"]["IpcMode"].is_null());
        assert_eq!(req["HostConfig"]["AutoRemove"], true);
        let mut up = json!({"PidsLimit": 5});
        update_request(ApiVersion(1, 39), &mut up);
        assert!(up.get("PidsLimit").is_none());
        assert!(kill_of_stopped_is_ok(ApiVersion(1, 19)));
        assert!(!kill_of_stopped_is_ok(ApiVersion(1, 20)));

        let mut i = json!({"SecurityOptions": ["name=seccomp,profile=default", "name=userns"], "KernelVersion": ""});
        info(ApiVersion(1, 20), &mut i);
        assert_eq!(i["ExecutionDriver"], "<not supported>");
        assert_eq!(i["SecurityOptions"], json!(["seccomp", "userns"]));
        assert_eq!(i["KernelVersion"], "<unknown>");
    }
}
