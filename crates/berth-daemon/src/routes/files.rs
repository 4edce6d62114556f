//! `/containers/{id}/archive` (GET, HEAD, PUT), `/export` and `/changes`.

use super::Ctx;
use crate::error::EngineError;
use crate::files::{self, Root};
use crate::http::{ok_json, status_only, stream, ChannelWriter, Resp};
use crate::model::Ctr;
use crate::Daemon;
use base64::Engine;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;

/// Runs `f` on the container's root in a blocking task; a stopped container's rootfs is
/// mounted (under its lock) for the time of `f`.
async fn with_root<T: Send + 'static>(
    d: Arc<Daemon>,
    c: Arc<Ctr>,
    mounts: bool,
    f: impl FnOnce(&Ctr, &Root) -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(move || {
        let _lock = (c.state().status != "running").then(|| c.fs_lock.lock());
        let root = d.containers.open_root(&c, mounts)?;
        f(&c, &root)
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?
}

fn path_param(ctx: &Ctx) -> Result<String, EngineError> {
    match ctx.query.get("path") {
        Some(p) if !p.is_empty() => Ok(p.to_string()),
        _ => Err(EngineError::invalid("bad parameter: path cannot be empty")),
    }
}

fn stat_header(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

pub async fn archive(d: &Arc<Daemon>, ctx: Ctx, c: Arc<Ctr>) -> Result<Resp, EngineError> {
    let path = path_param(&ctx)?;
    match ctx.method {
        Method::HEAD => {
            let p = path.clone();
            let st = with_root(d.clone(), c.clone(), true, move |c, r| {
                files::stat_path(c, r, &p)
            })
            .await?;
            let mut resp = status_only(StatusCode::OK);
            if let Ok(v) = http::HeaderValue::from_str(&stat_header(&st)) {
                resp.headers_mut().insert("X-Docker-Container-Path-Stat", v);
            }
            Ok(resp)
        }
        Method::GET => {
            let (tx, mut resp) = stream("application/x-tar");
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            let p = path.clone();
            let work = with_root(d.clone(), c.clone(), true, move |c, r| {
                let st = files::stat_path(c, r, &p);
                let ok = st.is_ok();
                let _ = ready_tx.send(st);
                if ok {
                    files::tar_path(c, r, &p, ChannelWriter::new(tx))?;
                }
                Ok(())
            });
            let task = tokio::spawn(work);
            let st = match ready_rx.await {
                Ok(st) => st?,
                Err(_) => {
                    // the work failed before the stat: its error
                    return match task.await {
                        Ok(Err(e)) => Err(e),
                        _ => Err(EngineError::internal("archive failed")),
                    };
                }
            };
            if let Ok(v) = http::HeaderValue::from_str(&stat_header(&st)) {
                resp.headers_mut().insert("X-Docker-Container-Path-Stat", v);
            }
            Ok(resp)
        }
        Method::PUT => {
            let copy_ids = ctx.query.bool("copyUIDGID")?;
            ctx.query.bool("noOverwriteDirNonDir")?;
            if c.host_config()["ReadonlyRootfs"].as_bool().unwrap_or(false) {
                return Err(EngineError::forbidden(
                    "container rootfs is marked read-only",
                ));
            }
            let mut reader = crate::http::body_reader(ctx.body);
            with_root(d.clone(), c.clone(), true, move |c, r| {
                let done = files::extract(c, r, &path, &mut reader, copy_ids);
                reader.drain();
                done
            })
            .await?;
            Ok(status_only(StatusCode::OK))
        }
        _ => Err(EngineError::not_found("page not found")),
    }
}

/// `POST /containers/{id}/copy` (`{"Resource": PATH}`): the path as a tar, before API
/// 1.24; dockerd answers later versions with an empty 404, as if there were no route.
pub async fn legacy_copy(d: &Arc<Daemon>, mut ctx: Ctx, name: &str) -> Result<Resp, EngineError> {
    if ctx.version >= crate::apiversion::ApiVersion(1, 24) {
        return Ok(status_only(StatusCode::NOT_FOUND));
    }
    let body = ctx.json_required().await?;
    let path = body["Resource"].as_str().unwrap_or_default().to_string();
    if path.is_empty() {
        return Err(EngineError::invalid("Path cannot be empty"));
    }
    let c = d.containers.get(name)?;
    let (tx, resp) = stream("application/x-tar");
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let work = with_root(d.clone(), c, true, move |c, r| {
        let st = files::stat_path(c, r, &path).map(|_| ());
        let ok = st.is_ok();
        let _ = ready_tx.send(st);
        if ok {
            files::tar_path(c, r, &path, ChannelWriter::new(tx))?;
        }
        Ok(())
    });
    let task = tokio::spawn(work);
    match ready_rx.await {
        Ok(st) => st.map(|()| resp),
        Err(_) => match task.await {
            Ok(Err(e)) => Err(e),
            _ => Err(EngineError::internal("copy failed")),
        },
    }
}

pub async fn export(d: &Arc<Daemon>, c: Arc<Ctr>) -> Result<Resp, EngineError> {
    let (tx, resp) = stream("application/x-tar");
    let work = with_root(d.clone(), c.clone(), false, move |_, r| {
        files::tar_root(r, ChannelWriter::new(tx))
    });
    tokio::spawn(async move {
        if let Err(e) = work.await {
            tracing::warn!(error = %e.message, "export failed");
        }
    });
    Ok(resp)
}

pub async fn changes(d: &Arc<Daemon>, c: Arc<Ctr>) -> Result<Resp, EngineError> {
    let image = c
        .image_id
        .parse()
        .map_err(|_| EngineError::internal("corrupt image id"))?;
    let layers = d.images.layer_dirs(&image)?;
    let dir = d.containers.dir(&c);
    let driver = d.images.driver();
    let ids = d.containers.remap_of(&c).map(|r| r.ids.clone());
    let list = tokio::task::spawn_blocking(move || match driver {
        berth_image::snapshot::Driver::Overlay => {
            let upper = dir.join("upper");
            if !upper.exists() {
                return Ok(Vec::new());
            }
            crate::changes::overlay_changes(&upper, &layers)
        }
        berth_image::snapshot::Driver::Copy => {
            let rootfs = dir.join("rootfs");
            match layers.last() {
                Some(top) if rootfs.join("bin").exists() || rootfs.read_dir()?.next().is_some() => {
                    crate::changes::copy_changes(&rootfs, top, ids.as_ref())
                }
                _ => Ok(Vec::new()),
            }
        }
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?
    .map_err(|e| EngineError::internal(e.to_string()))?;
    if list.is_empty() {
        return Ok(ok_json(&Value::Null));
    }
    let v: Vec<Value> = list
        .into_iter()
        .map(|(p, k)| json!({"Path": p, "Kind": k}))
        .collect();
    Ok(ok_json(&v))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`: a new image from a
/// container's filesystem changes, its config (the body's fields over the container's).
pub async fn commit(d: &Arc<Daemon>, mut ctx: Ctx) -> Result<Resp, EngineError> {
    let name = ctx.query.get("container").unwrap_or_default().to_string();
    let c = d.containers.get(&name)?;
    ctx.query.bool("pause")?;
    let repo = ctx.query.get("repo").unwrap_or_default().to_string();
    let tag = ctx.query.get("tag").unwrap_or_default().to_string();
    let reference = if repo.is_empty() {
        if !tag.is_empty() {
            return Err(EngineError::invalid("tag requires a repository"));
        }
        None
    } else {
        let full = if tag.is_empty() {
            repo.clone()
        } else {
            format!("{repo}:{tag}")
        };
        // a repository alone is tagged `latest`, as dockerd tags it
        Some(
            berth_image::reference::Reference::parse_tagged_default(&full)
                .map_err(|e| EngineError::invalid(format!("invalid reference format: {e}")))?,
        )
    };
    let body = ctx.json_body().await?;
    let mut config = c.config().as_object().cloned().unwrap_or_default();
    if let Some(over) = body.as_object() {
        for (k, v) in over {
            let empty = v.is_null()
                || v.as_str().is_some_and(str::is_empty)
                || v.as_array().is_some_and(Vec::is_empty)
                || v.as_object().is_some_and(|m| m.is_empty());
            if !empty {
                config.insert(k.clone(), v.clone());
            }
        }
    }
    config.remove("Image");
    let opts = berth_image::CommitOptions {
        config,
        changes: ctx.query.all("changes"),
        comment: ctx.query.get("comment").unwrap_or_default().to_string(),
        author: ctx.query.get("author").unwrap_or_default().to_string(),
        created_by: c.command_line(),
        reference,
    };
    let parent: berth_image::digest::Digest = c
        .image_id
        .parse()
        .map_err(|_| EngineError::internal("corrupt image id"))?;
    let id = crate::commit::commit_changes(d, &c, Some(parent), opts).await?;
    let mut a = crate::model::attrs(&c);
    a.insert(
        "comment".into(),
        ctx.query.get("comment").unwrap_or_default().to_string(),
    );
    a.insert("imageID".into(), id.to_string());
    d.events.emit("container", "commit", &c.id, a);
    Ok(crate::http::json(
        StatusCode::CREATED,
        &json!({"Id": id.to_string()}),
    ))
}
