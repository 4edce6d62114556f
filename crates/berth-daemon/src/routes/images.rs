//! `/images/...`: list, inspect, history, tag, remove, prune, import, save, load.

use super::{ApiVersion, Ctx};
use crate::error::EngineError;
use crate::http::{body_reader, error_line, json_line, ok_json, stream, ChannelWriter, Resp};
use crate::Daemon;
use berth_image::reference::Reference;
use berth_image::{DeleteItem, Image, ImportOptions};
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn summary(i: &Image, v: ApiVersion) -> Value {
    let mut s = json!({
        "Id": i.id.to_string(),
        "ParentId": i.parent,
        "RepoTags": i.repo_tags.iter().map(|r| r.familiar()).collect::<Vec<_>>(),
        "RepoDigests": i.repo_digests.iter().map(|r| r.familiar()).collect::<Vec<_>>(),
        "Created": i.created,
        "Size": i.size,
        "SharedSize": -1,
        "Labels": i.config.labels(),
        "Containers": -1,
    });
    if v < ApiVersion(1, 44) {
        s["VirtualSize"] = json!(i.size);
    }
    s
}

/// Bytes of `i`'s layers that other images share.
pub fn shared_size(i: &Image, all: &[Image]) -> i64 {
    i.layers
        .iter()
        .filter(|l| {
            all.iter()
                .any(|o| o.id != i.id && o.layers.iter().any(|x| x.chain_id == l.chain_id))
        })
        .map(|l| l.size)
        .sum()
}

/// Go's `path.Match` for the `reference` filter: `*` and `?` stop at `/`.
fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && go(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

fn reference_matches(pattern: &str, r: &Reference) -> bool {
    let name = r.familiar_name();
    let full = r.familiar();
    glob(pattern, &name) || glob(pattern, &full) || glob(pattern, &r.to_string())
}

pub fn list(d: &Daemon, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["dangling", "label", "reference", "before", "since", "until"])?;
    let mut imgs = d.images.list()?;
    let dangling = match f.get("dangling") {
        [] => None,
        [v] if v == "true" || v == "1" => Some(true),
        [v] if v == "false" || v == "0" => Some(false),
        other => {
            return Err(EngineError::invalid(format!(
                "invalid filter 'dangling={}'",
                other.join(",")
            )))
        }
    };
    let created_of =
        |name: &str| -> Result<i64, EngineError> { Ok(d.images.inspect(name)?.created) };
    let before = f
        .get("before")
        .iter()
        .map(|n| created_of(n))
        .collect::<Result<Vec<_>, _>>()?;
    let since = f
        .get("since")
        .iter()
        .map(|n| created_of(n))
        .collect::<Result<Vec<_>, _>>()?;
    let refs = f.get("reference");
    // without `all`, untagged images other images were built on (a build's
    // intermediate steps) stay hidden, as Docker hides them
    let show_all = ctx.query.bool("all")?;
    let parents: std::collections::HashSet<String> =
        imgs.iter().map(|i| i.parent.clone()).collect();
    imgs.retain(|i| {
        let untagged = i.repo_tags.is_empty() && i.repo_digests.is_empty();
        show_all || !untagged || !parents.contains(&i.id.to_string())
    });
    imgs.retain(|i| {
        let is_dangling = i.repo_tags.is_empty() && i.repo_digests.is_empty();
        dangling.is_none_or(|want| want == is_dangling)
            && f.labels_match("label", &i.config.labels())
            && before.iter().all(|b| i.created < *b)
            && since.iter().all(|s| i.created > *s)
    });
    let mut out = Vec::new();
    let all = if ctx.query.bool("shared-size")? {
        Some(d.images.list()?)
    } else {
        None
    };
    for mut i in imgs {
        if !refs.is_empty() {
            i.repo_tags
                .retain(|r| refs.iter().any(|p| reference_matches(p, r)));
            i.repo_digests
                .retain(|r| refs.iter().any(|p| reference_matches(p, r)));
            if i.repo_tags.is_empty() && i.repo_digests.is_empty() {
                continue;
            }
        }
        let mut s = summary(&i, ctx.version);
        if let Some(all) = &all {
            s["SharedSize"] = json!(shared_size(&i, all));
        }
        out.push(s);
    }
    Ok(ok_json(&out))
}

pub fn inspect_json(d: &Daemon, i: &Image, v: ApiVersion) -> Value {
    let cfg = &i.config;
    let graph = match d.images.driver() {
        berth_image::snapshot::Driver::Overlay => {
            let dirs: Vec<String> = d
                .images
                .layer_dirs(&i.id)
                .unwrap_or_default()
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let mut data = Map::new();
            if let Some((top, lower)) = dirs.split_last() {
                if !lower.is_empty() {
                    let mut l = lower.to_vec();
                    l.reverse();
                    data.insert("LowerDir".into(), json!(l.join(":")));
                }
                data.insert("UpperDir".into(), json!(top));
                let base = std::path::Path::new(top)
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                data.insert("MergedDir".into(), json!(format!("{base}/merged")));
                data.insert("WorkDir".into(), json!(format!("{base}/work")));
            }
            json!({"Name": "overlay2", "Data": data})
        }
        berth_image::snapshot::Driver::Copy => json!({"Name": "vfs", "Data": null}),
    };
    let mut o = json!({
        "Id": i.id.to_string(),
        "RepoTags": i.repo_tags.iter().map(|r| r.familiar()).collect::<Vec<_>>(),
        "RepoDigests": i.repo_digests.iter().map(|r| r.familiar()).collect::<Vec<_>>(),
        "Parent": i.parent,
        "Comment": cfg.comment.clone().unwrap_or_default(),
        "Created": cfg.created.clone().unwrap_or_else(|| rfc3339(0)),
        "DockerVersion": cfg.docker_version.clone().unwrap_or_default(),
        "Author": cfg.author.clone().unwrap_or_default(),
        "Config": cfg.config.clone().unwrap_or_default(),
        "Architecture": cfg.architecture,
        "Os": cfg.os,
        "Size": i.size,
        "GraphDriver": graph,
        "RootFS": {"Type": if cfg.rootfs.kind.is_empty() { "layers".to_string() } else { cfg.rootfs.kind.clone() },
                   "Layers": cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": if i.last_tag_time.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { i.last_tag_time.clone() }},
    });
    if let Some(var) = &cfg.variant {
        o["Variant"] = json!(var);
    }
    if let Some(osv) = &cfg.os_version {
        o["OsVersion"] = json!(osv);
    }
    if v < ApiVersion(1, 44) {
        o["VirtualSize"] = json!(i.size);
        o["Container"] = json!("");
        o["ContainerConfig"] = cfg
            .extra
            .get("container_config")
            .cloned()
            .unwrap_or_else(|| json!({}));
    }
    o
}

pub fn inspect(d: &Daemon, ctx: &Ctx, name: &str) -> Result<Resp, EngineError> {
    let i = d.images.inspect(name)?;
    Ok(ok_json(&inspect_json(d, &i, ctx.version)))
}

pub fn history(d: &Daemon, name: &str) -> Result<Resp, EngineError> {
    let id = d.images.resolve(name)?;
    let rows: Vec<Value> = d
        .images
        .history(&id)?
        .into_iter()
        .map(|h| {
            json!({
                "Id": h.id,
                "Created": h.created,
                "CreatedBy": h.created_by,
                "Tags": if h.tags.is_empty() { Value::Null } else { json!(h.tags) },
                "Size": h.size,
                "Comment": h.comment,
            })
        })
        .collect();
    Ok(ok_json(&rows))
}

fn attrs(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("name".to_string(), name.to_string())])
}

/// Repo and tag query values into one reference (`repo` may carry its own tag).
fn repo_tag(repo: &str, tag: &str) -> Result<Reference, EngineError> {
    let r = Reference::parse(repo)?;
    if !tag.is_empty() {
        if r.digest().is_some() {
            return Err(EngineError::invalid(
                "cannot specify both a digest and a tag",
            ));
        }
        return Ok(r.with_tag(tag)?);
    }
    if r.tag().is_none() && r.digest().is_none() {
        return Ok(r.with_tag(berth_image::reference::DEFAULT_TAG)?);
    }
    Ok(r)
}

pub fn tag(d: &Daemon, ctx: &Ctx, name: &str) -> Result<Resp, EngineError> {
    let repo = ctx.query.get("repo").unwrap_or_default();
    if repo.is_empty() {
        return Err(EngineError::invalid(
            "repository name must have at least one component",
        ));
    }
    if repo == "sha256" {
        // `sha256:TAG` would read as a digest
        return Err(EngineError::invalid(
            "refusing to create an ambiguous tag using digest algorithm as name",
        ));
    }
    let r = repo_tag(repo, ctx.query.get("tag").unwrap_or_default())?;
    let id = d.images.resolve(name)?;
    d.images.tag(&id, &r)?;
    d.events
        .emit("image", "tag", &id.to_string(), attrs(&r.familiar()));
    Ok(crate::http::status_only(StatusCode::CREATED))
}

fn delete_items(items: &[DeleteItem]) -> Vec<Value> {
    items
        .iter()
        .map(|i| match i {
            DeleteItem::Untagged(r) => json!({"Untagged": r}),
            DeleteItem::Deleted(id) | DeleteItem::DeletedLayer(id) => json!({"Deleted": id}),
        })
        .collect()
}

fn emit_deletes(d: &Daemon, items: &[DeleteItem]) {
    for i in items {
        match i {
            DeleteItem::Untagged(r) => d.events.emit("image", "untag", r, attrs(r)),
            DeleteItem::Deleted(id) => d.events.emit("image", "delete", id, attrs(id)),
            DeleteItem::DeletedLayer(_) => {}
        }
    }
}

pub async fn remove(d: &Arc<Daemon>, ctx: &Ctx, name: &str) -> Result<Resp, EngineError> {
    let force = ctx.query.bool("force")?;
    // checked for shape; untagged parents are always kept (images here have none)
    ctx.query.bool("noprune")?;
    let d2 = d.clone();
    let name = name.to_string();
    let items = tokio::task::spawn_blocking(move || {
        d2.images.remove(&name, force, &|id| d2.image_in_use(id))
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))??;
    emit_deletes(d, &items);
    Ok(ok_json(&delete_items(&items)))
}

pub async fn prune(d: &Arc<Daemon>, ctx: &Ctx) -> Result<Resp, EngineError> {
    let f = ctx.query.filters()?;
    f.only(&["dangling", "label", "label!", "until"])?;
    let all = match f.get("dangling") {
        [] => false,
        [v] if v == "false" || v == "0" => true,
        [v] if v == "true" || v == "1" => false,
        other => {
            return Err(EngineError::invalid(format!(
                "invalid filter 'dangling={}'",
                other.join(",")
            )))
        }
    };
    let until = match f.get("until") {
        [] => None,
        [u] => Some(parse_until(u)?),
        _ => return Err(EngineError::invalid("only one until filter is allowed")),
    };
    let d2 = d.clone();
    let (items, reclaimed) = tokio::task::spawn_blocking(move || {
        let keep = |i: &Image| {
            f.labels_match("label", &i.config.labels())
                && f.get("label!").iter().all(|l| {
                    let labels = i.config.labels();
                    match l.split_once('=') {
                        Some((k, v)) => labels.get(k).and_then(|x| x.as_str()) != Some(v),
                        None => !labels.contains_key(l.as_str()),
                    }
                })
                && until.is_none_or(|u| i.created < u)
        };
        let (items, reclaimed) = d2.images.prune(all, &keep, &|id| d2.image_in_use(id))?;
        // `prune -a` also drops what failed pulls kept for their next try
        let partial = if all {
            d2.images.expire_partial(std::time::Duration::ZERO)?
        } else {
            0
        };
        Ok::<_, berth_image::ImageError>((items, reclaimed + partial))
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))??;
    let shown = items;
    emit_deletes(d, &shown);
    d.events.emit(
        "image",
        "prune",
        "",
        BTreeMap::from([("reclaimed".into(), reclaimed.to_string())]),
    );
    Ok(ok_json(&json!({
        "ImagesDeleted": if shown.is_empty() { Value::Null } else { json!(delete_items(&shown)) },
        "SpaceReclaimed": reclaimed,
    })))
}

/// `until` as a timestamp or a Go duration before now (`10m`, `24h`).
fn parse_until(s: &str) -> Result<i64, EngineError> {
    if let Some(ns) = crate::events::parse_time(s) {
        return Ok(ns / 1_000_000_000);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| EngineError::invalid(format!("invalid until filter {s:?}")))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(EngineError::invalid(format!("invalid until filter {s:?}"))),
    };
    Ok(chrono::Utc::now().timestamp() - secs)
}

/// `POST /images/create`: `fromSrc=-` imports the body; `fromImage` pulls.
pub async fn create(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    let from_src = ctx.query.get("fromSrc").unwrap_or_default().to_string();
    if from_src.is_empty() {
        let what = ctx.query.get("fromImage").unwrap_or_default();
        if what.is_empty() {
            return Err(EngineError::invalid("fromImage or fromSrc is required"));
        }
        let tag = ctx.query.get("tag").unwrap_or_default();
        let mut reference = Reference::parse(what)?;
        // no tag anywhere: every tag of the repository (`pull -a`), as Docker's API says
        let all_tags = tag.is_empty() && reference.tag().is_none() && reference.digest().is_none();
        if !tag.is_empty() {
            reference = match tag.parse::<berth_image::digest::Digest>() {
                Ok(dg) => reference.with_digest(dg),
                Err(_) => reference.with_tag(tag)?,
            };
        } else if reference.tag().is_none() && reference.digest().is_none() {
            reference = reference.with_tag(berth_image::reference::DEFAULT_TAG)?;
        }
        let platform = match ctx.query.get("platform").filter(|p| !p.is_empty()) {
            Some(p) => {
                berth_registry::manifest::Platform::parse(p).map_err(EngineError::invalid)?
            }
            None => berth_registry::manifest::Platform::host(),
        };
        let creds = registry_auth(&ctx)?;
        if all_tags {
            return crate::pull::all_tags(d, reference, platform, creds).await;
        }
        let plan = crate::pull::plan(d, reference, &platform, creds).await?;
        let (tx, resp) = stream("application/json");
        let d2 = d.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::pull::run(d2, plan, tx.clone()).await {
                let _ = tx.send(crate::http::error_line(&e)).await;
            }
        });
        return Ok(resp);
    }
    if from_src != "-" {
        return Err(EngineError::invalid(
            "importing from a URL is not supported: send the tarball as the request body (fromSrc=-)",
        ));
    }
    let repo = ctx.query.get("repo").unwrap_or_default();
    let reference = if repo.is_empty() {
        None
    } else {
        Some(repo_tag(repo, ctx.query.get("tag").unwrap_or_default())?)
    };
    if let Some(p) = ctx.query.get("platform").filter(|p| !p.is_empty()) {
        let host = berth_image::platform::Platform::host();
        let asked = berth_image::platform::Platform::parse(p).map_err(EngineError::invalid)?;
        let want = format!("linux/{}", host.architecture);
        if !host.matches(&asked.os, &asked.architecture, &asked.variant) {
            return Err(EngineError::invalid(format!(
                "platform {p} is not supported here; this host runs {want}"
            )));
        }
    }
    let opts = ImportOptions {
        changes: ctx.query.all("changes"),
        message: ctx.query.get("message").unwrap_or_default().to_string(),
        reference: reference.clone(),
        source: "-".into(),
    };
    // Bad `changes` fail before the body is read, with a proper status.
    berth_image::config::apply_changes(&mut Map::new(), &opts.changes)
        .map_err(berth_image::ImageError::from)?;
    let mut reader = body_reader(ctx.body);
    let d2 = d.clone();
    let result = tokio::task::spawn_blocking(move || {
        let r = d2.images.import(&mut reader, opts);
        reader.drain();
        crate::release_memory();
        r
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?;
    match result {
        Ok(id) => {
            d.events
                .emit("image", "import", &id.to_string(), attrs(&id.to_string()));
            if let Some(r) = &reference {
                d.events
                    .emit("image", "tag", &id.to_string(), attrs(&r.familiar()));
            }
            let (tx, resp) = stream("application/json");
            let _ = tx.send(json_line(&json!({"status": id.to_string()}))).await;
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

/// The credentials a pull or push got in `X-Registry-Auth`, if any.
pub(crate) fn registry_auth(
    ctx: &Ctx,
) -> Result<Option<berth_registry::auth::AuthConfig>, EngineError> {
    match ctx
        .headers
        .get("x-registry-auth")
        .and_then(|h| h.to_str().ok())
    {
        Some(h) => berth_registry::auth::AuthConfig::from_header(h).map_err(EngineError::invalid),
        None => Ok(None),
    }
}

/// `POST /auth`: checks credentials against a registry (`docker login`); the client
/// stores them.
pub async fn auth(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    let body = ctx
        .body
        .collect()
        .await
        .map_err(|e| EngineError::invalid(e.to_string()))?
        .to_bytes();
    let mut creds: berth_registry::auth::AuthConfig = serde_json::from_slice(&body)
        .map_err(|e| EngineError::invalid(format!("invalid JSON: {e}")))?;
    creds.fill_from_auth();
    let server = creds.server_address.clone();
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let domain = match host.as_str() {
        "" | "index.docker.io" | "registry-1.docker.io" | "docker.io" => {
            berth_image::reference::DEFAULT_DOMAIN.to_string()
        }
        h => h.to_string(),
    };
    let session = d
        .registry()?
        .session(&domain, "", Some(creds), true)
        .await?;
    session.check_login().await.map_err(|e| match e {
        berth_registry::client::RegistryError::Denied(m) => EngineError::unauthorized(m),
        other => other.into(),
    })?;
    Ok(crate::http::ok_json(
        &json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

/// `POST /images/{name}/push?tag=`: the image (every tag of the repository without a
/// tag) to its registry, with Docker's progress messages.
pub async fn push(d: &Arc<Daemon>, ctx: &Ctx, name: &str) -> Result<Resp, EngineError> {
    let tag = ctx.query.get("tag").unwrap_or_default().to_string();
    let images = crate::push::resolve(d, name, &tag)?;
    let creds = registry_auth(ctx)?;
    let (tx, resp) = stream("application/json");
    let d2 = d.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::push::run(d2, images, creds, tx.clone()).await {
            let _ = tx.send(crate::http::error_line(&e)).await;
        }
    });
    Ok(resp)
}

pub async fn save(d: &Arc<Daemon>, _ctx: &Ctx, names: Vec<String>) -> Result<Resp, EngineError> {
    if names.is_empty() {
        return Err(EngineError::invalid("no image names given to save"));
    }
    d.images.check_save(&names)?;
    let (tx, resp) = stream("application/x-tar");
    let d2 = d.clone();
    for n in &names {
        if let Ok(id) = d.images.resolve(n) {
            d.events.emit("image", "save", &id.to_string(), attrs(n));
        }
    }
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter::new(tx);
        if let Err(e) = d2.images.save(&names, &mut w) {
            // the status line is gone; cutting the stream short is all a client can see
            tracing::warn!(error = %crate::error::chain(&e), "save failed mid-stream");
        }
        drop(w);
        crate::release_memory();
    });
    Ok(resp)
}

pub async fn load(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    let quiet = ctx.query.bool("quiet")?;
    let mut reader = body_reader(ctx.body);
    let d2 = d.clone();
    let result = tokio::task::spawn_blocking(move || {
        let r = d2.images.load(&mut reader);
        reader.drain();
        crate::release_memory();
        r
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?;
    let events = match result {
        Ok(ev) => ev,
        Err(e) => {
            let api: EngineError = e.into();
            if quiet {
                return Err(api);
            }
            // docker reports load failures inside the JSON stream
            let (tx, resp) = stream("application/json");
            let _ = tx.send(error_line(&api.message)).await;
            return Ok(resp);
        }
    };
    let (tx, resp) = stream("application/json");
    for e in events {
        let line = match &e {
            berth_image::archive::LoadEvent::Tagged { reference, id } => {
                d.events
                    .emit("image", "load", &id.to_string(), attrs(reference));
                format!("Loaded image: {reference}\n")
            }
            berth_image::archive::LoadEvent::Untagged(id) => {
                d.events
                    .emit("image", "load", &id.to_string(), attrs(&id.to_string()));
                format!("Loaded image ID: {id}\n")
            }
            berth_image::archive::LoadEvent::Renamed { reference, old } => {
                format!("The image {reference} already exists, renaming the old one with ID {old} to empty string\n")
            }
        };
        let _ = tx.send(json_line(&json!({"stream": line}))).await;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("*:latest", "busybox:latest"));
        assert!(!glob("*", "a/b"));
        assert!(glob("a/*", "a/b"));
        assert!(glob("b?sybox", "busybox"));
    }
}
