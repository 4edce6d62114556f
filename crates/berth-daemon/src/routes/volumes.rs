//! `/volumes`: list, create, inspect, remove, prune.

use crate::error::EngineError;
use crate::http::{json, ok_json, status_only, Resp};
use crate::routes::Ctx;
use crate::volumes::{volume_json, Volume};
use crate::Daemon;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

fn attrs(v: &Volume) -> BTreeMap<String, String> {
    BTreeMap::from([("driver".to_string(), v.driver.clone())])
}

/// Volumes some container (in any state) names.
fn used(d: &Daemon) -> HashSet<String> {
    d.containers
        .all()
        .iter()
        .flat_map(|c| crate::mounts::of(&c.spec()))
        .filter(|m| m.kind == "volume")
        .map(|m| m.name)
        .collect()
}

/// `GET /volumes` with Docker's filters (`dangling`, `driver`, `label`, `name`).
pub fn list(d: &Daemon, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["dangling", "driver", "label", "name"])?;
    let in_use = used(d);
    let mut out = Vec::new();
    for v in d.containers.vols.list() {
        let dangling = !in_use.contains(&v.name);
        let keep = f.get("name").iter().all(|n| v.name.contains(n.as_str()))
            && f.get("driver").iter().all(|x| *x == v.driver)
            && f.labels_match("label", &v.labels)
            && f.get("dangling").iter().all(|x| match x.as_str() {
                "true" | "1" => dangling,
                "false" | "0" => !dangling,
                _ => true,
            });
        if keep {
            out.push(volume_json(&d.containers.vols, &v, None));
        }
    }
    for x in f.get("dangling") {
        if !matches!(x.as_str(), "true" | "1" | "false" | "0") {
            return Err(EngineError::invalid(format!(
                "invalid filter 'dangling={x}'"
            )));
        }
    }
    Ok(ok_json(&json!({"Volumes": out, "Warnings": []})))
}

/// `POST /volumes/create`.
pub async fn create(d: &Arc<Daemon>, mut ctx: Ctx) -> Result<Resp, EngineError> {
    let body = ctx.json_required().await?;
    let opts: BTreeMap<String, String> = body["DriverOpts"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let v = d.containers.vols.create(
        body["Name"].as_str(),
        body["Driver"].as_str().unwrap_or("local"),
        opts,
        body["Labels"].as_object().cloned().unwrap_or_default(),
        false,
    )?;
    d.events.emit("volume", "create", &v.name, attrs(&v));
    Ok(json(
        StatusCode::CREATED,
        &volume_json(&d.containers.vols, &v, None),
    ))
}

pub async fn route(d: &Arc<Daemon>, ctx: Ctx, name: &str) -> Result<Resp, EngineError> {
    match ctx.method {
        Method::GET => {
            let v = d.containers.vols.get(name)?;
            Ok(ok_json(&volume_json(&d.containers.vols, &v, None)))
        }
        Method::DELETE => {
            let force = ctx.query.bool("force")?;
            let v = match d.containers.vols.get(name) {
                Ok(v) => v,
                Err(_) if force => return Ok(status_only(StatusCode::NO_CONTENT)),
                Err(e) => return Err(e),
            };
            let users = d.containers.volume_users(name);
            d.containers.vols.remove(name, &users)?;
            d.events.emit("volume", "destroy", name, attrs(&v));
            Ok(status_only(StatusCode::NO_CONTENT))
        }
        _ => Err(EngineError::not_found("page not found")),
    }
}

/// `POST /volumes/prune`: unused anonymous volumes; named ones too with `all=true`.
pub async fn prune(d: &Arc<Daemon>, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["label", "label!", "all"])?;
    let all = f
        .get("all")
        .iter()
        .any(|x| matches!(x.as_str(), "true" | "1"));
    let in_use = used(d);
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for v in d.containers.vols.list() {
        if in_use.contains(&v.name) || (!all && !v.anonymous) {
            continue;
        }
        if !f.labels_match("label", &v.labels) {
            continue;
        }
        let excluded = f.get("label!").iter().any(|l| match l.split_once('=') {
            Some((k, val)) => v.labels.get(k).and_then(Value::as_str) == Some(val),
            None => v.labels.contains_key(l.as_str()),
        });
        if excluded {
            continue;
        }
        let size = d.containers.vols.size(&v.name);
        if d.containers.vols.remove(&v.name, &[]).is_ok() {
            reclaimed += size;
            d.events.emit("volume", "destroy", &v.name, attrs(&v));
            deleted.push(v.name.clone());
        }
    }
    d.events.emit(
        "volume",
        "prune",
        "",
        BTreeMap::from([("reclaimed".into(), reclaimed.to_string())]),
    );
    Ok(ok_json(
        &json!({"VolumesDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

/// `system df`'s volumes, with their sizes and how many containers use them.
pub fn df(d: &Daemon) -> Value {
    let mut refs: BTreeMap<String, i64> = BTreeMap::new();
    for c in d.containers.all() {
        for m in crate::mounts::of(&c.spec()) {
            if m.kind == "volume" {
                *refs.entry(m.name).or_default() += 1;
            }
        }
    }
    Value::Array(
        d.containers
            .vols
            .list()
            .iter()
            .map(|v| {
                let size = d.containers.vols.size(&v.name) as i64;
                volume_json(
                    &d.containers.vols,
                    v,
                    Some((size, refs.get(&v.name).copied().unwrap_or(0))),
                )
            })
            .collect(),
    )
}
