//! `/plugins`: list, privileges, pull (`plugin install`), create, inspect, set,
//! remove; enable is refused (berthd does not run plugins).

use super::Ctx;
use crate::error::EngineError;
use crate::http::{json_line, ok_json, status_only, stream, Resp};
use crate::plugins::{self, Plugin};
use crate::Daemon;
use berth_image::digest::{Digest, HashingReader};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// Largest `config.json` a plugin made here may have.
const MAX_CONFIG: u64 = 1 << 20;

fn emit(d: &Daemon, action: &str, p: &Plugin) {
    d.events.emit(
        "plugin",
        action,
        &p.id,
        BTreeMap::from([("name".to_string(), p.name.clone())]),
    );
}

/// `GET /plugins`, with Docker's filters (`capability`, `enable`).
pub fn list(d: &Daemon, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["capability", "enable"])?;
    let out: Vec<Value> = d
        .plugins
        .all()
        .iter()
        .filter(|p| {
            f.get("enable").iter().all(|e| e == "false" || e == "0")
                && f.get("capability").iter().all(|c| {
                    p.config["Interface"]["Types"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        // `docker.volumedriver/1.0` has the capability `volumedriver`
                        .any(|t| t.split('/').next().and_then(|t| t.rsplit('.').next()) == Some(c))
                })
        })
        .map(|p| p.to_json())
        .collect();
    Ok(ok_json(&Value::Array(out)))
}

fn remote_of(ctx: &Ctx) -> Result<berth_image::reference::Reference, EngineError> {
    let remote = ctx.query.get("remote").unwrap_or_default();
    if remote.is_empty() {
        return Err(EngineError::invalid("remote is required"));
    }
    plugins::normalize_name(remote)
}

/// `GET /plugins/privileges?remote=`: what the plugin in the registry asks for.
pub async fn privileges(d: &Arc<Daemon>, ctx: &Ctx) -> Result<Resp, EngineError> {
    let remote = remote_of(ctx)?;
    let creds = super::images::registry_auth(ctx)?;
    let plan = crate::pull::plan_plugin(d, remote, creds).await?;
    let config = plugin_config(&plan)?;
    Ok(ok_json(&plugins::privileges(&config)))
}

/// The plugin's config from a pull plan, in the API's spelling.
fn plugin_config(plan: &crate::pull::Plan) -> Result<Value, EngineError> {
    let raw: Value = serde_json::from_slice(plan.config())
        .map_err(|e| EngineError::internal(format!("invalid plugin config: {e}")))?;
    let ids: Vec<String> = plan.diff_ids().iter().map(ToString::to_string).collect();
    plugins::normalize_config(&raw, &ids)
}

/// `POST /plugins/pull?remote=&name=`: installs a plugin from its registry, once the
/// client has granted (in the body) exactly the privileges it asks for.
pub async fn pull(d: &Arc<Daemon>, mut ctx: Ctx) -> Result<Resp, EngineError> {
    let remote = remote_of(&ctx)?;
    let name = match ctx.query.get("name").filter(|n| !n.is_empty()) {
        Some(n) => plugins::normalize_name(n)?,
        None => remote.clone(),
    }
    .familiar();
    let creds = super::images::registry_auth(&ctx)?;
    let given = ctx.json_body().await?;
    let plan = crate::pull::plan_plugin(d, remote.clone(), creds).await?;
    let config = plugin_config(&plan)?;
    let asked = plugins::privileges(&config);
    if !plugins::granted(&asked, &given) {
        return Err(EngineError::invalid(format!(
            "the privileges granted are not the ones the plugin asks for: {asked}"
        )));
    }
    let (dir, id) = d.plugins.reserve(&name)?;
    if let Err(e) = fetch_layers(&plan, &dir.join("rootfs")).await {
        d.plugins.abandon(&dir);
        return Err(e);
    }
    let p = Plugin {
        id,
        name: name.clone(),
        reference: remote.to_string(),
        settings: plugins::initial_settings(&config),
        config,
    };
    let p = d.plugins.commit(p)?;
    emit(d, "pull", &p);
    let tag = remote.tag().unwrap_or("latest").to_string();
    let (tx, mut resp) = stream("application/json");
    // the docker CLI enables the plugin by this name after the pull
    if let Ok(v) = http::HeaderValue::from_str(&name) {
        resp.headers_mut().insert("Docker-Plugin-Name", v);
    }
    let lines = [
        json!({"status": format!("Pulling from {}", remote.familiar_name()), "id": tag}),
        json!({"status": format!("Digest: {}", plan.manifest_digest())}),
        json!({"status": format!("Status: Downloaded newer image for {name}")}),
    ];
    for l in lines {
        let _ = tx.send(json_line(&l)).await;
    }
    Ok(resp)
}

/// Downloads a plugin's layers into `rootfs`, each checked against its digest and its
/// diff id.
async fn fetch_layers(plan: &crate::pull::Plan, rootfs: &Path) -> Result<(), EngineError> {
    for (desc, diff) in plan.layers().iter().zip(plan.diff_ids()) {
        let resp = plan.session().blob(&desc.digest, 0).await?;
        let reader = crate::http::body_reader(reqwest::Body::from(resp));
        let (rootfs, want, diff) = (rootfs.to_path_buf(), desc.digest.clone(), diff.clone());
        tokio::task::spawn_blocking(move || -> Result<(), EngineError> {
            let mut blob = HashingReader::new(reader);
            let got_diff = {
                let plain = berth_image::decompress(&mut blob)
                    .map_err(|e| EngineError::internal(e.to_string()))?;
                let mut layer = HashingReader::new(plain);
                let root = open_dir(&rootfs)?;
                berth_image::unpack::extract_at(&mut layer, root, None, None)
                    .map_err(|e| EngineError::internal(format!("unpacking the plugin: {e}")))?;
                layer.finish().map_err(io)?.0
            };
            let (got, _) = blob.finish().map_err(io)?;
            if got != want {
                return Err(EngineError::internal(format!(
                    "filesystem layer verification failed for digest {want}"
                )));
            }
            if got_diff != diff {
                return Err(EngineError::internal(format!(
                    "the layer {want} does not match its diff id {diff}"
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| EngineError::internal(e.to_string()))??;
    }
    Ok(())
}

fn io(e: std::io::Error) -> EngineError {
    EngineError::internal(e.to_string())
}

fn open_dir(p: &Path) -> Result<rustix::fd::OwnedFd, EngineError> {
    rustix::fs::open(
        p,
        rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| EngineError::internal(format!("{}: {e}", p.display())))
}

/// `POST /plugins/create?name=`: a plugin from a tar of its directory (`config.json`
/// and `rootfs/`).
pub async fn create(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    let reserved = match ctx.query.get("name").filter(|n| !n.is_empty()) {
        Some(n) => plugins::normalize_name(n)
            .map(|r| r.familiar())
            .and_then(|name| Ok((d.plugins.reserve(&name)?, name))),
        None => Err(EngineError::invalid("name is required")),
    };
    let ((dir, id), name) = match reserved {
        Ok(r) => r,
        Err(e) => {
            crate::http::discard(ctx.body).await;
            return Err(e);
        }
    };
    let mut reader = crate::http::body_reader(ctx.body);
    let dir2 = dir.clone();
    let made = tokio::task::spawn_blocking(move || {
        let r = unpack_context(&mut reader, &dir2);
        reader.drain();
        r
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))
    .and_then(|r| r);
    let (raw, diff) = match made {
        Ok(x) => x,
        Err(e) => {
            d.plugins.abandon(&dir);
            return Err(e);
        }
    };
    let config = match plugins::normalize_config(&raw, &[diff.to_string()]) {
        Ok(c) => c,
        Err(e) => {
            d.plugins.abandon(&dir);
            return Err(e);
        }
    };
    let p = d.plugins.commit(Plugin {
        id,
        name,
        reference: String::new(),
        settings: plugins::initial_settings(&config),
        config,
    })?;
    emit(d, "create", &p);
    Ok(status_only(StatusCode::NO_CONTENT))
}

/// Unpacks a plugin's directory tar beside `dir/rootfs` and moves its `rootfs/` there;
/// its `config.json` (parsed) and the diff id of the rootfs as one layer.
fn unpack_context(reader: &mut impl Read, dir: &Path) -> Result<(Value, Digest), EngineError> {
    let ctx = dir.join("context");
    std::fs::create_dir_all(&ctx).map_err(io)?;
    let r = (|| {
        berth_image::unpack::extract_at(&mut *reader, open_dir(&ctx)?, None, None)
            .map_err(|e| EngineError::invalid(format!("reading the plugin's directory: {e}")))?;
        // the config, not through a symlink, and small
        let f = rustix::fs::openat(
            open_dir(&ctx)?,
            "config.json",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|_| EngineError::invalid("the plugin's directory has no config.json"))?;
        let mut text = Vec::new();
        std::fs::File::from(f)
            .take(MAX_CONFIG + 1)
            .read_to_end(&mut text)
            .map_err(io)?;
        if text.len() as u64 > MAX_CONFIG {
            return Err(EngineError::invalid(
                "the plugin's config.json is too large",
            ));
        }
        let raw: Value = serde_json::from_slice(&text)
            .map_err(|e| EngineError::invalid(format!("the plugin's config.json: {e}")))?;
        let src = ctx.join("rootfs");
        let st = std::fs::symlink_metadata(&src)
            .map_err(|_| EngineError::invalid("the plugin's directory has no rootfs/"))?;
        if !st.is_dir() {
            return Err(EngineError::invalid(
                "the plugin's rootfs is not a directory",
            ));
        }
        let rootfs = dir.join("rootfs");
        std::fs::remove_dir(&rootfs).map_err(io)?;
        std::fs::rename(&src, &rootfs).map_err(io)?;
        let diff = layer_digest(&rootfs)?;
        Ok((raw, diff))
    })();
    let _ = std::fs::remove_dir_all(&ctx);
    r
}

/// The digest of `rootfs` written as one layer tar (the plugin's `rootfs.diff_ids`).
fn layer_digest(rootfs: &Path) -> Result<Digest, EngineError> {
    struct Hash(berth_image::digest::Hasher);
    impl std::io::Write for Hash {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut b = tar::Builder::new(Hash(Default::default()));
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    b.append_dir_all(".", rootfs).map_err(io)?;
    let h = b.into_inner().map_err(io)?;
    Ok(h.0.finish())
}

/// `/plugins/{name}/…` and `DELETE /plugins/{name}`.
pub async fn route(d: &Arc<Daemon>, mut ctx: Ctx, rest: &str) -> Result<Resp, EngineError> {
    let m = ctx.method.clone();
    let split = |suffix: &str| {
        rest.strip_suffix(suffix)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    if m == Method::GET {
        if let Some(name) = split("/json") {
            return Ok(ok_json(&d.plugins.find(&name)?.to_json()));
        }
    }
    if m == Method::POST {
        if let Some(name) = split("/enable") {
            let p = d.plugins.find(&name)?;
            ctx.query.get("timeout");
            return Err(EngineError::not_implemented(format!(
                "plugin {} cannot be enabled: berthd does not run managed plugins yet",
                p.name
            )));
        }
        if let Some(name) = split("/disable") {
            let p = d.plugins.find(&name)?;
            return Err(EngineError::conflict(format!(
                "plugin {} is already disabled",
                p.name
            )));
        }
        if let Some(name) = split("/set") {
            let body = ctx.json_required().await?;
            let args: Vec<String> = match body.as_array() {
                Some(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| EngineError::invalid("settings must be strings"))?,
                None => return Err(EngineError::invalid("settings must be a list of strings")),
            };
            d.plugins.set(&name, &args)?;
            return Ok(status_only(StatusCode::NO_CONTENT));
        }
        if split("/push").is_some() || split("/upgrade").is_some() {
            return Err(EngineError::not_implemented(
                "pushing and upgrading plugins is not supported by this berth yet",
            ));
        }
    }
    if m == Method::DELETE {
        ctx.query.bool("force")?;
        let p = d.plugins.remove(rest)?;
        emit(d, "remove", &p);
        return Ok(status_only(StatusCode::OK));
    }
    Err(EngineError::not_found("page not found"))
}
