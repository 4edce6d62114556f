//! `/_ping`, `/version`, `/info`, `/events`, `/system/df`.

use super::{Ctx, API_VERSION};
use crate::error::EngineError;
use crate::events::{parse_time, Event};
use crate::http::{ok_json, stream, Body, Filters, Resp};
use crate::Daemon;
use bytes::Bytes;
use http::{header, Method, Response, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn server_header() -> String {
    format!("berth/{} (linux)", env!("CARGO_PKG_VERSION"))
}

pub fn ping(ctx: &Ctx) -> Resp {
    let body = if ctx.method == Method::HEAD {
        Body::empty()
    } else {
        Body::Full(Some(Bytes::from_static(b"OK")))
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("API-Version", API_VERSION)
        .header("Builder-Version", "2")
        .header("OSType", "linux")
        .header("Docker-Experimental", "false")
        .header(header::CACHE_CONTROL, "no-cache, no-store, must-revalidate")
        .header(header::PRAGMA, "no-cache")
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn kernel_version() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "Linux".into())
}

pub fn version(d: &Daemon) -> Resp {
    let v = env!("CARGO_PKG_VERSION");
    let arch = berth_image::config::host_arch();
    ok_json(&json!({
        "Platform": {"Name": "berth Engine"},
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": d.config.min_api_version.to_string(),
                "GitCommit": option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown"),
                "GoVersion": "rust",
                "Os": "linux",
                "Arch": arch,
                "KernelVersion": kernel_version(),
                "Experimental": "false",
                "BuildTime": "",
                "StorageDriver": d.images.driver().name(),
            }
        }],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": d.config.min_api_version.to_string(),
        "GitCommit": option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown"),
        "GoVersion": "rust",
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    }))
}

pub(crate) fn mem_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn runtimes(d: &Daemon) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(
        crate::config::BUILTIN_RUNTIME.into(),
        json!({"path": std::env::current_exe()
            .map(|p| p.with_file_name("berth-runtime"))
            .unwrap_or_default()}),
    );
    for (name, path) in &d.config.runtimes {
        m.insert(name.clone(), json!({"path": path}));
    }
    Value::Object(m)
}

pub fn info(d: &Daemon, version: super::ApiVersion) -> Result<Resp, EngineError> {
    let images = d.images.count()?;
    let driver = d.images.driver();
    let labels = d.labels();
    let sys = &d.containers.sys;
    let mut warnings = d.warnings();
    warnings.extend(sys.warnings());
    // as dockerd counts them: paused, running, and everything else stopped
    let (mut running, mut paused, mut stopped) = (0, 0, 0);
    let all = d.containers.all();
    for c in &all {
        let st = c.state();
        match (st.status.as_str(), st.paused) {
            ("running", true) => paused += 1,
            ("running", false) => running += 1,
            _ => stopped += 1,
        }
    }
    let mut out = json!({
        "ID": d.engine_id,
        "Containers": all.len(),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": driver.name(),
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "none"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": sys.memory,
        "SwapLimit": sys.swap,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": sys.cpu_cfs,
        "CpuCfsQuota": sys.cpu_cfs,
        "CPUShares": sys.cpu_shares,
        "CPUSet": sys.cpuset,
        "PidsLimit": sys.pids,
        "IPv4Forwarding": true,
        "Debug": d.config.debug,
        "NFd": std::fs::read_dir("/proc/self/fd").map(|r| r.count()).unwrap_or(0),
        "OomKillDisable": sys.oom_kill_disable,
        "NGoroutines": 0,
        "SystemTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": sys.version(),
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": os_name(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8"],
            "IndexConfigs": {"docker.io": {"Name": "docker.io", "Mirrors": d.config.registry_mirrors, "Secure": true, "Official": true}},
            "Mirrors": d.config.registry_mirrors,
        },
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": mem_total(),
        "GenericResources": null,
        "DockerRootDir": d.config.data_root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": rustix::system::uname().nodename().to_string_lossy(),
        "Labels": labels,
        "ExperimentalBuild": false,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Runtimes": runtimes(d),
        "DefaultRuntime": d.config.default_runtime,
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": d.config.live_restore,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": if d.containers.remap.is_some() {
            json!(["name=seccomp,profile=builtin", "name=userns"])
        } else {
            json!(["name=seccomp,profile=builtin"])
        },
        "CDISpecDirs": [],
        "Warnings": warnings,
    });
    super::legacy::info(version, &mut out);
    Ok(ok_json(&out))
}

fn event_matches(e: &Event, f: &Filters) -> bool {
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
        let vals = f.get(key);
        vals.is_empty() || vals.iter().any(|v| pred(v))
    };
    any("type", &|v| v == e.kind)
        && any("event", &|v| {
            v == e.action || e.action.starts_with(&format!("{v}:"))
        })
        && any("scope", &|v| v == e.scope)
        && any("image", &|v| {
            e.kind == "image"
                && (e.actor.id == v
                    || e.actor.attributes.get("name").map(String::as_str) == Some(v))
                || e.actor.attributes.get("image").map(String::as_str) == Some(v)
        })
        && any("container", &|v| {
            e.kind == "container"
                && (e.actor.id.starts_with(v)
                    || e.actor.attributes.get("name").map(String::as_str) == Some(v))
        })
        && f.get("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => e.actor.attributes.get(k).map(String::as_str) == Some(v),
            None => e.actor.attributes.contains_key(l.as_str()),
        })
}

pub fn events(d: &Arc<Daemon>, ctx: &Ctx) -> Result<Resp, EngineError> {
    let bad_time = |k: &str, v: &str| {
        EngineError::invalid(format!("invalid value for {k}: {v:?} is not a timestamp"))
    };
    let since = match ctx.query.get("since").filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_time(s).ok_or_else(|| bad_time("since", s))?),
        None => None,
    };
    let until = match ctx.query.get("until").filter(|s| !s.is_empty()) {
        Some(s) => Some(parse_time(s).ok_or_else(|| bad_time("until", s))?),
        None => None,
    };
    let filters = ctx.query.filters()?;
    filters.only(&[
        "type",
        "event",
        "image",
        "container",
        "label",
        "scope",
        "daemon",
        "network",
        "volume",
        "plugin",
        "node",
        "service",
        "secret",
        "config",
    ])?;
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let (past, mut rx) = d.events.subscribe(since.unwrap_or(i64::MAX));
    let (tx, resp) = stream("application/json");
    tokio::spawn(async move {
        let mut last = 0;
        let send = |e: &Event| {
            let mut b = serde_json::to_vec(e).unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        };
        for e in past {
            if until.is_some_and(|u| e.time_nano > u) {
                continue;
            }
            last = e.time_nano;
            if event_matches(&e, &filters) && tx.send(send(&e)).await.is_err() {
                return;
            }
        }
        if until.is_some_and(|u| u <= now) {
            return;
        }
        let deadline = until.map(|u| {
            tokio::time::Instant::now() + std::time::Duration::from_nanos((u - now).max(0) as u64)
        });
        loop {
            let next = async {
                match deadline {
                    Some(dl) => tokio::time::timeout_at(dl, rx.recv()).await.ok(),
                    None => Some(rx.recv().await),
                }
            };
            tokio::select! {
                _ = tx.closed() => return,
                got = next => match got {
                    None => return, // until reached
                    Some(Ok(e)) => {
                        if e.time_nano <= last && last != 0 { continue; }
                        if event_matches(&e, &filters) && tx.send(send(&e)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                    Some(Err(_)) => return,
                }
            }
        }
    });
    Ok(resp)
}

pub fn df(d: &Daemon, ctx: &Ctx) -> Result<Resp, EngineError> {
    let types = ctx.query.all("type");
    let want = |t: &str| types.is_empty() || types.iter().any(|x| x == t);
    let mut body = serde_json::Map::new();
    if want("image") {
        let imgs = d.images.list()?;
        let layers_size = d.images.layers_size()?;
        let list: Vec<Value> = imgs
            .iter()
            .map(|i| {
                let mut s = super::images::summary(i, ctx.version);
                s["Containers"] = json!(0);
                s["SharedSize"] = json!(super::images::shared_size(i, &imgs));
                s
            })
            .collect();
        body.insert("LayersSize".into(), json!(layers_size));
        body.insert("Images".into(), json!(list));
    }
    if want("container") {
        body.insert("Containers".into(), json!([]));
    }
    if want("volume") {
        body.insert("Volumes".into(), super::volumes::df(d));
    }
    if want("build-cache") {
        body.insert("BuildCache".into(), json!(crate::build::cache_usage(d)));
    }
    Ok(ok_json(&Value::Object(body)))
}
