//! `/networks`: list, inspect, create, remove, prune, connect and disconnect.

use super::netjson::{network_json, pseudo_json};
use crate::error::EngineError;
use crate::http::{ok_json, Resp};
use crate::routes::Ctx;
use crate::Daemon;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every network's JSON: the built-in ones and user networks.
fn all_json(d: &Daemon) -> Vec<Value> {
    let mut out = Vec::new();
    for n in d.containers.net.all() {
        let attached = d.containers.net.attached(&n.cfg.id);
        out.push(network_json(&n, &attached));
    }
    for p in ["host", "none"] {
        out.push(pseudo_json(p, &d.containers.net.stable_id(p)));
    }
    out
}

/// A network by name, ID or ID prefix, built-in pseudo networks included.
fn find_json(d: &Daemon, key: &str) -> Result<Value, EngineError> {
    let all = all_json(d);
    let found = crate::networks::pick(
        &all,
        key,
        |v| v["Name"].as_str().unwrap_or_default(),
        |v| v["Id"].as_str().unwrap_or_default(),
    )?;
    Ok(found.clone())
}

pub async fn route(d: &Arc<Daemon>, mut ctx: Ctx, rest: &str) -> Result<Resp, EngineError> {
    let m = ctx.method.clone();
    let (key, action) = match rest.split_once('/') {
        Some((k, a)) => (k.to_string(), a.to_string()),
        None => (rest.to_string(), String::new()),
    };
    match (&m, action.as_str()) {
        (&Method::GET, "") => {
            let v = find_json(d, &key)?;
            Ok(ok_json(&v))
        }
        (&Method::DELETE, "") => {
            if key == "host" || key == "none" {
                return Err(EngineError::forbidden(format!(
                    "{key} is a pre-defined network and cannot be removed"
                )));
            }
            let n = d.containers.net.remove(&key).await?;
            d.events.emit(
                "network",
                "destroy",
                &n.cfg.id,
                BTreeMap::from([
                    ("name".into(), n.cfg.name.clone()),
                    ("type".into(), "bridge".into()),
                ]),
            );
            Ok(crate::http::status_only(StatusCode::NO_CONTENT))
        }
        (&Method::POST, "connect") | (&Method::POST, "disconnect") => {
            let body = ctx.json_required().await?;
            let cname = body["Container"].as_str().unwrap_or_default().to_string();
            if cname.is_empty() {
                return Err(EngineError::invalid("container is required"));
            }
            let net = match d.containers.net.find(&key) {
                Ok(n) => n,
                Err(e) if key == "host" || key == "none" => {
                    return Err(EngineError::forbidden(format!(
                        "container cannot be disconnected from or connected to {key}: {}",
                        e.message
                    )))
                }
                Err(e) => return Err(e),
            };
            let c = d.containers.get(&cname)?;
            if action == "connect" {
                let ep = body["EndpointConfig"].clone();
                d.containers.connect(&c, &net, &ep).await?;
            } else {
                d.containers.disconnect_from(&c, &net).await?;
            }
            d.events.emit(
                "network",
                &action,
                &net.cfg.id,
                BTreeMap::from([
                    ("container".into(), c.id.clone()),
                    ("name".into(), net.cfg.name.clone()),
                    ("type".into(), "bridge".into()),
                ]),
            );
            Ok(crate::http::status_only(StatusCode::OK))
        }
        _ => Err(EngineError::not_found("page not found")),
    }
}

/// `GET /networks`, with Docker's filters.
pub fn list(d: &Daemon, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["dangling", "driver", "id", "label", "name", "scope", "type"])?;
    let mut out = Vec::new();
    for v in all_json(d) {
        let name = v["Name"].as_str().unwrap_or_default();
        let id = v["Id"].as_str().unwrap_or_default();
        let builtin = matches!(name, "bridge" | "host" | "none");
        let labels = v["Labels"].as_object().cloned().unwrap_or_default();
        let keep = f.get("name").iter().all(|n| name.contains(n.as_str()))
            && f.get("id").iter().all(|i| id.starts_with(i.as_str()))
            && f.get("driver").iter().all(|x| v["Driver"] == x.as_str())
            && f.get("scope").iter().all(|x| x == "local")
            && f.get("type").iter().all(|t| match t.as_str() {
                "builtin" => builtin,
                "custom" => !builtin,
                _ => false,
            })
            && f.labels_match("label", &labels)
            && f.get("dangling").iter().all(|x| {
                let unused = !builtin && v["Containers"].as_object().is_none_or(|m| m.is_empty());
                (x == "true" || x == "1") == unused
            });
        if keep {
            out.push(v);
        }
    }
    Ok(ok_json(&Value::Array(out)))
}

/// `POST /networks/create`.
pub async fn create(d: &Arc<Daemon>, mut ctx: Ctx) -> Result<Resp, EngineError> {
    let body = ctx.json_required().await?;
    let (n, warning) = d.containers.net.create(&body).await?;
    d.events.emit(
        "network",
        "create",
        &n.cfg.id,
        BTreeMap::from([
            ("name".into(), n.cfg.name.clone()),
            ("type".into(), "bridge".into()),
        ]),
    );
    Ok(crate::http::json(
        StatusCode::CREATED,
        &json!({"Id": n.cfg.id, "Warning": warning}),
    ))
}

/// `POST /networks/prune`: user networks no container uses (stopped ones included).
pub async fn prune(d: &Arc<Daemon>, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["label", "label!", "until"])?;
    let mut deleted = Vec::new();
    for n in d.containers.net.all() {
        if n.default || !f.labels_match("label", &n.cfg.labels) {
            continue;
        }
        let used = d.containers.all().iter().any(|c| {
            crate::networks::requested(&c.spec())
                .iter()
                .any(|(k, _)| d.containers.net.find(k).is_ok_and(|x| x.cfg.id == n.cfg.id))
        });
        if used {
            continue;
        }
        if d.containers.net.remove(&n.cfg.id).await.is_ok() {
            d.events.emit(
                "network",
                "destroy",
                &n.cfg.id,
                BTreeMap::from([("name".into(), n.cfg.name.clone())]),
            );
            deleted.push(n.cfg.name.clone());
        }
    }
    d.events.emit("network", "prune", "", BTreeMap::new());
    Ok(ok_json(&json!({"NetworksDeleted": deleted})))
}
