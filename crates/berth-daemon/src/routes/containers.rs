//! `/containers/...`: create, start, wait, attach, logs, kill, stop, restart, rename,
//! resize, remove, prune, list, inspect.

use super::container_io::{attach, logs, top, wait};
use super::Ctx;
use crate::error::EngineError;
use crate::http::{json, ok_json, status_only, Resp};
use crate::model::{attrs, Ctr, State, ZERO_TIME};
use crate::Daemon;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// `9`, `KILL`, `SIGKILL` → 9.
pub fn parse_signal(s: &str) -> Result<i32, EngineError> {
    berth_proto::signal::parse(s).map_err(EngineError::invalid)
}

fn status_text(s: &State) -> String {
    let since = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| (chrono::Utc::now().timestamp() - t.timestamp()).max(0))
            .unwrap_or(0)
    };
    let human = |secs: i64| {
        if secs < 1 {
            "Less than a second".to_string()
        } else if secs == 1 {
            "1 second".to_string()
        } else if secs < 60 {
            format!("{secs} seconds")
        } else if secs < 3600 {
            let m = secs / 60;
            if m == 1 {
                "About a minute".into()
            } else {
                format!("{m} minutes")
            }
        } else {
            let h = (secs as f64 / 3600.0 + 0.5) as i64;
            if h == 1 {
                "About an hour".into()
            } else {
                format!("{h} hours")
            }
        }
    };
    let health = match s.health.as_ref().map(|h| h.status.as_str()) {
        Some("starting") => " (health: starting)".to_string(),
        Some(h) if !h.is_empty() => format!(" ({h})"),
        _ => String::new(),
    };
    match s.status.as_str() {
        "running" if s.paused => format!("Up {} (Paused)", human(since(&s.started_at))),
        "running" => format!("Up {}{health}", human(since(&s.started_at))),
        "exited" if s.finished_at != ZERO_TIME => format!(
            "Exited ({}) {} ago",
            s.exit_code,
            human(since(&s.finished_at))
        ),
        "exited" => format!("Exited ({})", s.exit_code),
        "restarting" => format!(
            "Restarting ({}) {} ago",
            s.exit_code,
            human(since(&s.finished_at))
        ),
        "created" => "Created".into(),
        other => other.to_string(),
    }
}

/// (SizeRw, SizeRootFs) of a container.
fn sizes(d: &Daemon, c: &Ctr) -> (i64, i64) {
    let Ok(image) = c.image_id.parse::<berth_image::digest::Digest>() else {
        return (0, 0);
    };
    let layers = d.images.layer_dirs(&image).unwrap_or_default();
    let ids = d.containers.remap_of(c).map(|r| r.ids.clone());
    let rw = crate::changes::rw_size(
        &d.containers.dir(c),
        d.images.driver(),
        &layers,
        ids.as_ref(),
    ) as i64;
    let image_size = d.images.get(&image).map(|i| i.size).unwrap_or(0);
    (rw, image_size + rw)
}

/// inspect's `HostConfig`: as created, with legacy links as dockerd shows them
/// (`/TARGET:/SELF/ALIAS`, by the target's name now; a link to a removed container is
/// gone).
fn host_config_json(d: &Daemon, c: &Ctr) -> Value {
    let mut hc = c.host_config();
    let links = crate::containers::links_of(&hc);
    if !links.is_empty() {
        let shown: Vec<String> = links
            .iter()
            .filter_map(|(target, alias)| {
                let t = d.containers.get(target).ok()?;
                Some(format!("/{}:/{}/{alias}", t.name(), c.name()))
            })
            .collect();
        hc["Links"] = json!(shown);
    }
    hc
}

/// A container's names in lists: its own, and `/PARENT/ALIAS` for each container that
/// links to it, as dockerd lists them.
fn names_of(d: &Daemon, c: &Ctr) -> Vec<String> {
    let mut out = vec![format!("/{}", c.name())];
    for p in d.containers.all() {
        for (target, alias) in crate::containers::links_of(&p.host_config()) {
            if d.containers.get(&target).is_ok_and(|t| t.id == c.id) {
                out.push(format!("/{}/{alias}", p.name()));
            }
        }
    }
    out
}

/// `DELETE /containers/PARENT/ALIAS?link=1`: the parent's legacy link goes (both
/// containers stay).
fn remove_link(d: &Daemon, rest: &str) -> Result<Resp, EngineError> {
    let full = rest.trim_matches('/');
    let Some((parent, alias)) = full.rsplit_once('/') else {
        return Err(EngineError::invalid(
            "Conflict, cannot remove the default link name of the container",
        ));
    };
    let p = d.containers.get(parent).map_err(|_| {
        EngineError::not_found(format!("Cannot get parent /{parent} for link name /{full}"))
    })?;
    let links = crate::containers::links_of(&p.host_config());
    if !links.iter().any(|(_, a)| a == alias) {
        return Err(EngineError::not_found(format!(
            "Could not find entity for /{full}"
        )));
    }
    let alias = alias.to_string();
    d.containers.edit_spec(&p, |s| {
        if let Some(a) = s["HostConfig"]["Links"].as_array_mut() {
            a.retain(|l| {
                let l = l.as_str().unwrap_or_default();
                let a = l.split_once(':').map(|(_, a)| a).unwrap_or(l);
                a.rsplit('/').next() != Some(alias.as_str())
            });
        }
    })?;
    Ok(status_only(StatusCode::NO_CONTENT))
}

fn summary(d: &Daemon, c: &Ctr) -> Value {
    let s = c.state();
    let spec = c.spec();
    let running = s.status == "running";
    let net = s.net.as_ref().filter(|_| running);
    let settings = super::netjson::settings_json(&d.containers.net, &c.id, &spec, net);
    json!({
        "Id": c.id,
        "Names": names_of(d, c),
        "Image": c.spec()["Image"],
        "ImageID": c.image_id,
        "Command": c.command_line(),
        "Created": chrono::DateTime::parse_from_rfc3339(&c.created).map(|t| t.timestamp()).unwrap_or(0),
        "Ports": super::netjson::ports_list(&spec, net),
        "Labels": c.config()["Labels"].as_object().cloned().unwrap_or_default(),
        "State": s.api_status(),
        "Status": status_text(&s),
        "HostConfig": {"NetworkMode": c.host_config()["NetworkMode"].as_str().filter(|m| !m.is_empty()).unwrap_or("default")},
        "NetworkSettings": {"Networks": settings["Networks"]},
        "Mounts": crate::mounts::inspect_json(&d.containers.vols, &crate::mounts::of(&spec)),
    })
}

fn inspect_json(d: &Daemon, c: &Ctr) -> Value {
    let s = c.state();
    let dir = d.containers.dir(c);
    let mut args: Vec<Value> = Vec::new();
    for k in ["Entrypoint", "Cmd"] {
        if let Some(a) = c.config()[k].as_array() {
            args.extend(a.iter().cloned());
        }
    }
    let path = if args.is_empty() {
        Value::from("")
    } else {
        args.remove(0)
    };
    let mut state = json!({
        "Status": s.api_status(),
        "Running": s.status == "running" || s.status == "restarting",
        "Paused": s.paused,
        "Restarting": s.status == "restarting",
        "OOMKilled": s.oom_killed,
        "Dead": false,
        "Pid": s.pid,
        "ExitCode": s.exit_code,
        "Error": s.error,
        "StartedAt": s.started_at,
        "FinishedAt": s.finished_at,
    });
    if let Some(h) = &s.health {
        state["Health"] = health_json(h);
    }
    let exec_ids = d.containers.execs.of(&c.id);
    let exec_ids = if exec_ids.is_empty() {
        Value::Null
    } else {
        json!(exec_ids)
    };
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": path,
        "Args": args,
        "State": state,
        "Image": c.image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        "LogPath": d.containers.log_path(c),
        "Name": format!("/{}", c.name()),
        "RestartCount": s.restart_count,
        "Driver": d.images.driver().name(),
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": exec_ids,
        "HostConfig": host_config_json(d, c),
        "GraphDriver": {"Name": d.images.driver().name(), "Data": {"MergedDir": dir.join("rootfs"), "UpperDir": dir.join("upper"), "WorkDir": dir.join("work")}},
        "Mounts": crate::mounts::inspect_json(&d.containers.vols, &crate::mounts::of(&c.spec())),
        "Config": c.config(),
        "NetworkSettings": super::netjson::settings_json(
            &d.containers.net,
            &c.id,
            &c.spec(),
            s.net.as_ref().filter(|_| s.status == "running"),
        ),
    })
}

pub fn list(d: &Daemon, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&[
        "ancestor",
        "before",
        "expose",
        "exited",
        "health",
        "id",
        "isolation",
        "is-task",
        "label",
        "name",
        "network",
        "publish",
        "since",
        "status",
        "volume",
    ])?;
    let all = ctx.query.bool("all")?;
    let size = ctx.query.bool("size")?;
    let limit = ctx.query.int("limit")?.unwrap_or(-1);
    // `id` and `name` are regular expressions (Go's, which the regex crate's syntax
    // follows) searched in the ID and in `/NAME`, as dockerd matches them; one that does
    // not compile matches nothing
    let regexes = |k: &str| -> Vec<regex::Regex> {
        f.get(k)
            .iter()
            .filter_map(|v| regex::Regex::new(v).ok())
            .collect()
    };
    let (id_res, name_res) = (regexes("id"), regexes("name"));
    let mut out = Vec::new();
    for c in d.containers.all() {
        let s = c.state();
        if !all && s.status != "running" && !f.contains("status") {
            continue;
        }
        let any = |k: &str, pred: &dyn Fn(&str) -> bool| {
            f.get(k).is_empty() || f.get(k).iter().any(|v| pred(v))
        };
        let ok = any("status", &|v| v == s.api_status())
            && (f.get("id").is_empty() || id_res.iter().any(|r| r.is_match(&c.id)))
            && (f.get("name").is_empty()
                || name_res
                    .iter()
                    .any(|r| r.is_match(&format!("/{}", c.name()))))
            && any("health", &|v| {
                let h = s
                    .health
                    .as_ref()
                    .map(|h| h.status.as_str())
                    .unwrap_or("none");
                v == h
            })
            && any("exited", &|v| {
                s.status == "exited" && v.parse::<i64>().ok() == Some(s.exit_code)
            })
            && any("ancestor", &|v| {
                c.spec()["Image"].as_str() == Some(v)
                    || d.images
                        .resolve(v)
                        .map(|i| i.to_string() == c.image_id)
                        .unwrap_or(false)
            })
            && f.labels_match(
                "label",
                c.config()["Labels"]
                    .as_object()
                    .unwrap_or(&Default::default()),
            );
        if ok {
            let mut v = summary(d, &c);
            if size {
                let (rw, rootfs) = sizes(d, &c);
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(rootfs);
            }
            out.push(v);
        }
    }
    if limit > 0 {
        out.truncate(limit as usize);
    }
    Ok(ok_json(&out))
}

pub async fn create(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    let name = ctx.query.get("name").map(str::to_string);
    let mut ctx = ctx;
    let mut req = ctx.json_required().await?;
    // a field of the wrong type is refused as Go's decoder refuses it
    berth_proto::gotypes::check_body(
        &req,
        super::create_types::REQUEST,
        super::create_types::CONFIG,
    )
    .map_err(|e| EngineError::invalid(format!("invalid JSON: {e}")))?;
    canonical_request(&mut req);
    if let Some(p) = ctx.query.get("platform").filter(|p| !p.is_empty()) {
        let want = berth_image::platform::Platform::parse(p).map_err(EngineError::invalid)?;
        image_for_platform(d, req["Image"].as_str().unwrap_or_default(), &want)?;
    }
    super::legacy::create_request(ctx.version, &mut req);
    let (c, warnings) = crate::create::create_from(d, name.as_deref(), &req)?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": c.id, "Warnings": warnings}),
    ))
}

/// An image asked for with a platform must be of it (a 404 otherwise, so clients pull
/// the right one, as dockerd answers).
fn image_for_platform(
    d: &Daemon,
    name: &str,
    want: &berth_image::platform::Platform,
) -> Result<(), EngineError> {
    let Ok(img) = d.images.inspect(name) else {
        return Ok(()); // the create says what is missing
    };
    let c = &img.config;
    let variant = c.variant.clone().unwrap_or_default();
    if want.matches(&c.os, &c.architecture, &variant) {
        return Ok(());
    }
    let actual = berth_image::platform::Platform {
        os: c.os.clone(),
        architecture: c.architecture.clone(),
        variant,
    };
    Err(EngineError::not_found(format!(
        "image with reference {name} was found but does not match the specified platform: wanted {want}, actual: {actual}"
    )))
}

/// Field names as Docker spells them: dockerd matches them without case, and docker-py
/// sends e.g. `CPURealtimeRuntime`.
fn canonical_request(req: &mut Value) {
    use super::create_types::{names, CONFIG, HOST_CONFIG};
    static KEYS: std::sync::LazyLock<(Vec<&str>, Vec<&str>)> =
        std::sync::LazyLock::new(|| (names(CONFIG), names(HOST_CONFIG)));
    crate::http::canonical_keys(req, &KEYS.0);
    if let Some(hc) = req.get_mut("HostConfig") {
        crate::http::canonical_keys(hc, &KEYS.1);
    }
}

pub async fn by_name(d: &Arc<Daemon>, mut ctx: Ctx, rest: &str) -> Result<Resp, EngineError> {
    let (name, action) = match rest.split_once('/') {
        Some((n, a)) => (n.to_string(), a.to_string()),
        None => (rest.to_string(), String::new()),
    };
    if name.is_empty() {
        return Err(EngineError::not_found("page not found"));
    }
    if ctx.method == Method::DELETE && ctx.query.bool("link")? {
        return remove_link(d, rest);
    }
    // a body these routes need is read (and refused if it is not JSON) before the
    // container is looked up, as dockerd does
    let body = match (&ctx.method, action.as_str()) {
        (&Method::POST, "exec") => ctx.json_required().await?,
        (&Method::POST, "update") => {
            let mut b = ctx.json_required().await?;
            super::legacy::update_request(ctx.version, &mut b);
            b
        }
        (&Method::POST, "copy") => return super::files::legacy_copy(d, ctx, &name).await,
        _ => Value::Null,
    };
    let c = d.containers.get(&name)?;
    let m = ctx.method.clone();
    match (m, action.as_str()) {
        (Method::GET, "json") => {
            let mut v = inspect_json(d, &c);
            if ctx.query.bool("size")? {
                let (rw, rootfs) = sizes(d, &c);
                v["SizeRw"] = json!(rw);
                v["SizeRootFs"] = json!(rootfs);
            }
            super::legacy::inspect(ctx.version, &mut v);
            Ok(ok_json(&v))
        }
        (Method::POST, "start") => {
            if c.state().status == "running" {
                return Ok(status_only(StatusCode::NOT_MODIFIED));
            }
            d.containers.start(&c, &d.events).await?;
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (Method::POST, "wait") => wait(&ctx, c),
        (Method::POST, "kill") => {
            let sig = parse_signal(
                ctx.query
                    .get("signal")
                    .filter(|s| !s.is_empty())
                    .unwrap_or("KILL"),
            )?;
            match d.containers.kill(&c, sig).await {
                Err(e)
                    if e.kind == crate::error::Kind::Conflict
                        && super::legacy::kill_of_stopped_is_ok(ctx.version) =>
                {
                    return Ok(status_only(StatusCode::NO_CONTENT));
                }
                r => r?,
            }
            let mut a = attrs(&c);
            a.insert("signal".into(), sig.to_string());
            d.events.emit("container", "kill", &c.id, a);
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (Method::POST, "stop") | (Method::POST, "restart") => {
            let t = ctx
                .query
                .int("t")?
                .or(ctx.query.int("timeout")?)
                .or_else(|| c.config()["StopTimeout"].as_i64())
                .unwrap_or(10);
            let sig = parse_signal(
                ctx.query
                    .get("signal")
                    .filter(|s| !s.is_empty())
                    .or(c.config()["StopSignal"].as_str())
                    .unwrap_or("TERM"),
            )?;
            let stopped = d.containers.stop(&c, sig, t).await?;
            if action == "stop" {
                if !stopped {
                    return Ok(status_only(StatusCode::NOT_MODIFIED));
                }
                d.events.emit("container", "stop", &c.id, attrs(&c));
                return Ok(status_only(StatusCode::NO_CONTENT));
            }
            d.containers.start(&c, &d.events).await?;
            d.events.emit("container", "restart", &c.id, attrs(&c));
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (Method::DELETE, "") => {
            let force = ctx.query.bool("force")?;
            let volumes = ctx.query.bool("v")?;
            if !force {
                let st = c.state();
                super::legacy::remove_refusal(ctx.version, &c.id, &st.status, st.paused)?;
            }
            d.containers
                .remove_with(&c, force, volumes, &d.events)
                .await?;
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (Method::POST, "pause") => {
            d.containers.pause(&c).await?;
            d.events.emit("container", "pause", &c.id, attrs(&c));
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (Method::POST, "unpause") => {
            d.containers.unpause(&c).await?;
            d.events.emit("container", "unpause", &c.id, attrs(&c));
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        (Method::POST, "update") => {
            let warnings = d.containers.update(&c, &body).await?;
            d.events.emit("container", "update", &c.id, attrs(&c));
            Ok(ok_json(&json!({"Warnings": warnings})))
        }
        (Method::GET, "stats") => super::stats::stats(d, &ctx, c),
        (Method::GET, "logs") => logs(d, &ctx, c),
        (Method::POST, "attach") => attach(d, &mut ctx, c),
        (Method::POST, "exec") => super::exec::create(d, body, &c),
        (Method::GET | Method::HEAD | Method::PUT, "archive") => {
            super::files::archive(d, ctx, c).await
        }
        (Method::GET, "export") => super::files::export(d, c).await,
        (Method::GET, "changes") => super::files::changes(d, c).await,
        (Method::GET, "top") => {
            let args = ctx.query.get("ps_args").unwrap_or("-ef").to_string();
            let pid = c.state().pid;
            if c.state().status != "running" || pid <= 0 {
                return Err(EngineError::conflict(format!(
                    "container {} is not running",
                    c.id
                )));
            }
            let v = tokio::task::spawn_blocking(move || top(pid, &args))
                .await
                .map_err(|e| EngineError::internal(e.to_string()))??;
            Ok(ok_json(&v))
        }
        (Method::POST, "resize") => {
            let h = ctx.query.int("h")?.unwrap_or(0);
            let w = ctx.query.int("w")?.unwrap_or(0);
            if c.state().status != "running" {
                return Err(EngineError::conflict(format!(
                    "Container {} is not running",
                    c.id
                )));
            }
            d.containers
                .shim_call(&c, &format!("resize {h} {w}"))
                .await?;
            Ok(status_only(StatusCode::OK))
        }
        (Method::POST, "rename") => {
            let new = ctx
                .query
                .get("name")
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string();
            if !crate::containers::valid_name(&new) {
                return Err(EngineError::invalid(format!(
                    "Invalid container name ({new}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                )));
            }
            if new == c.name() {
                return Err(EngineError::invalid(
                    "Renaming a container with the same name as its current name",
                ));
            }
            if d.containers.get(&new).is_ok() {
                return Err(EngineError::conflict(format!(
                    "Conflict. The container name \"/{new}\" is already in use"
                )));
            }
            if !d.db.rename_container(&c.id, &new)? {
                return Err(EngineError::conflict(format!(
                    "Conflict. The container name \"/{new}\" is already in use"
                )));
            }
            if let Ok(mut n) = c.name.lock() {
                *n = new;
            }
            d.events.emit("container", "rename", &c.id, attrs(&c));
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        _ => Err(EngineError::not_found("page not found")),
    }
}

pub async fn prune(d: &Arc<Daemon>, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["label", "label!", "until"])?;
    let mut deleted = Vec::new();
    for c in d.containers.all() {
        if c.state().status == "running"
            || !f.labels_match(
                "label",
                c.config()["Labels"]
                    .as_object()
                    .unwrap_or(&Default::default()),
            )
        {
            continue;
        }
        d.containers.remove(&c, false, &d.events).await?;
        deleted.push(c.id.clone());
    }
    d.events.emit("container", "prune", "", Default::default());
    Ok(ok_json(
        &json!({"ContainersDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) }, "SpaceReclaimed": 0}),
    ))
}

/// `State.Health` as the API shows it.
fn health_json(h: &crate::model::Health) -> Value {
    json!({
        "Status": h.status,
        "FailingStreak": h.failing_streak,
        "Log": h.log.iter().map(|p| json!({
            "Start": p.start, "End": p.end, "ExitCode": p.exit_code, "Output": p.output,
        })).collect::<Vec<_>>(),
    })
}
