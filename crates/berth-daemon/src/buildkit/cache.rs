//! Build cache export and import (`--cache-to`, `--cache-from`) for BuildKit builds.
//!
//! berth's build cache is a map from a step's key (its parent image, instruction and
//! inputs) to the image the step made. Exporting it means exporting those step images
//! with their keys; importing means storing the images and the keys, after which the
//! steps are cache hits:
//!
//! - `type=registry,ref=R`: every step image is pushed by digest to R's repository, and
//!   an OCI index naming them (each entry annotated with its key) is pushed as R;
//! - `type=inline`: the exported image's config carries the step images' configs and
//!   keys (`berth.buildcache.v0`); importing it takes the layers from the image itself.
//!
//! `--cache-from type=registry,ref=R` reads either form (an index of ours, or an image
//! with inline cache). The format is berth's own: BuildKit's cache manifests are not read.

use crate::Daemon;
use base64::Engine;
use berth_buildkit::control::CacheOptionsEntry;
use berth_buildkit::session::SessionClient;
use berth_image::digest::Digest;
use berth_image::reference::Reference;
use berth_registry::auth::AuthConfig;
use berth_registry::manifest;
use serde_json::{json, Value};
use std::sync::Arc;

const INDEX_MARK: &str = "org.berth.buildcache.v0";
const KEY: &str = "org.berth.buildcache.key";
const DESCRIPTION: &str = "org.berth.buildcache.description";
/// The config field of an image with inline cache.
pub const INLINE: &str = "berth.buildcache.v0";

/// One cached step: its key, the image it made, what it was.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub image: Digest,
    pub description: String,
}

fn reference_of(e: &CacheOptionsEntry) -> Result<Reference, String> {
    let r = e
        .attrs
        .get("ref")
        .filter(|r| !r.is_empty())
        .ok_or_else(|| format!("cache {} needs ref=", e.r#type))?;
    Reference::parse_tagged_default(r).map_err(|err| format!("invalid cache reference {r}: {err}"))
}

/// The cache imports a build names: the request's and its frontend's `cache-imports`.
pub fn imports(
    req: &[CacheOptionsEntry],
    attrs: &std::collections::HashMap<String, String>,
) -> Vec<CacheOptionsEntry> {
    let mut out = req.to_vec();
    if let Some(v) = attrs
        .get("cache-imports")
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
    {
        for e in v.as_array().into_iter().flatten() {
            let kind = e["Type"]
                .as_str()
                .or(e["type"].as_str())
                .unwrap_or_default();
            let attrs = e["Attrs"]
                .as_object()
                .or(e["attrs"].as_object())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let entry = CacheOptionsEntry {
                r#type: kind.to_string(),
                attrs,
            };
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    out
}

/// Imports each cache; what it found (a cache that cannot be read is a warning: the
/// build goes on without it, as BuildKit's does).
pub async fn import(
    d: &Arc<Daemon>,
    entries: &[CacheOptionsEntry],
    session: &SessionClient,
) -> (usize, Vec<String>) {
    let mut found = 0;
    let mut warnings = Vec::new();
    for e in entries {
        let r = match e.r#type.as_str() {
            "registry" => match reference_of(e) {
                Ok(r) => {
                    let creds = super::credentials(session, r.domain()).await;
                    import_registry(d, &r, creds).await
                }
                Err(err) => Err(err),
            },
            other => Err(format!(
                "cache type {other:?} is not supported here (registry and inline are)"
            )),
        };
        match r {
            Ok(n) => found += n,
            Err(err) => warnings.push(format!("importing cache: {err}")),
        }
    }
    (found, warnings)
}

async fn import_registry(
    d: &Arc<Daemon>,
    r: &Reference,
    creds: Option<AuthConfig>,
) -> Result<usize, String> {
    let session = d
        .registry()
        .map_err(|e| e.message)?
        .session(r.domain(), r.path(), creds.clone(), false)
        .await
        .map_err(|e| e.to_string())?;
    let tag = r.tag().unwrap_or("latest");
    let (bytes, _, _) = session.manifest(tag).await.map_err(|e| e.to_string())?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if doc["annotations"][INDEX_MARK].is_string() {
        let mut n = 0;
        for m in doc["manifests"].as_array().into_iter().flatten() {
            let (Some(key), Some(digest)) = (m["annotations"][KEY].as_str(), m["digest"].as_str())
            else {
                continue;
            };
            let desc = m["annotations"][DESCRIPTION].as_str().unwrap_or_default();
            let by_digest = Reference::parse(&format!("{}@{digest}", r.full_name()))
                .map_err(|e| e.to_string())?;
            let plan = crate::pull::plan(d, by_digest, &manifest::Platform::host(), creds.clone())
                .await
                .map_err(|e| e.message)?;
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let config = plan.config().to_vec();
            crate::pull::run(d.clone(), plan, tx).await?;
            let _ = drain.await;
            d.images
                .cache_put(key, &Digest::of(&config), desc)
                .map_err(|e| e.to_string())?;
            n += 1;
        }
        return Ok(n);
    }
    // an image, with inline cache
    let plan = crate::pull::plan(d, r.clone(), &manifest::Platform::host(), creds)
        .await
        .map_err(|e| e.message)?;
    let config = plan.config().to_vec();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    crate::pull::run(d.clone(), plan, tx).await?;
    let _ = drain.await;
    import_inline(d, &Digest::of(&config))
}

/// The step images an image's inline cache describes, stored with their keys.
fn import_inline(d: &Daemon, id: &Digest) -> Result<usize, String> {
    let img = d.images.get(id).map_err(|e| e.to_string())?;
    let cfg: Value = serde_json::from_slice(&img.raw_config).map_err(|e| e.to_string())?;
    let mut n = 0;
    for entry in cfg[INLINE].as_array().into_iter().flatten() {
        let (Some(key), Some(raw)) = (entry["key"].as_str(), entry["config"].as_str()) else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .map_err(|e| e.to_string())?;
        let step: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
        let diffs: Vec<&str> = step["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        // its layers are the image's first ones
        if diffs.len() > img.layers.len()
            || diffs
                .iter()
                .zip(&img.layers)
                .any(|(want, l)| *want != l.diff_id)
        {
            continue;
        }
        let rows = img.layers[..diffs.len()].to_vec();
        let (step_id, _) = d
            .images
            .commit_pulled(raw, rows, &[])
            .map_err(|e| e.to_string())?;
        d.images
            .cache_put(
                key,
                &step_id,
                entry["description"].as_str().unwrap_or_default(),
            )
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// The inline cache of `records`, added to image `id`'s config: the new image.
pub fn with_inline(d: &Daemon, id: &Digest, records: &[Record]) -> Result<Digest, String> {
    let img = d.images.get(id).map_err(|e| e.to_string())?;
    let mut cfg: Value = serde_json::from_slice(&img.raw_config).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for r in records {
        let step = d.images.get(&r.image).map_err(|e| e.to_string())?;
        entries.push(json!({
            "key": r.key,
            "description": r.description,
            "config": base64::engine::general_purpose::STANDARD.encode(&step.raw_config),
        }));
    }
    cfg[INLINE] = Value::Array(entries);
    let raw = serde_json::to_vec(&cfg).map_err(|e| e.to_string())?;
    let (new, _) = d
        .images
        .commit_pulled(raw, img.layers.clone(), &[])
        .map_err(|e| e.to_string())?;
    Ok(new)
}

/// Exports `records` to each `type=registry` cache of `entries` (inline ones are the
/// image exporter's).
pub async fn export(
    d: &Arc<Daemon>,
    entries: &[CacheOptionsEntry],
    records: &[Record],
    session: &SessionClient,
) -> Result<(), String> {
    for e in entries {
        match e.r#type.as_str() {
            "inline" => {}
            "registry" => {
                let r = reference_of(e)?;
                let creds = super::credentials(session, r.domain()).await;
                export_registry(d, &r, records, creds).await?;
            }
            other => {
                return Err(format!(
                    "cache type {other:?} is not supported here (registry and inline are)"
                ))
            }
        }
    }
    Ok(())
}

async fn export_registry(
    d: &Arc<Daemon>,
    r: &Reference,
    records: &[Record],
    creds: Option<AuthConfig>,
) -> Result<(), String> {
    let session = d
        .registry()
        .map_err(|e| e.message)?
        .session(r.domain(), r.path(), creds, true)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let mut manifests = Vec::new();
    for rec in records {
        let (digest, size) =
            crate::push::push_image(d, &session, r.domain(), &rec.image, None, &tx).await?;
        manifests.push(json!({
            "mediaType": manifest::DOCKER_MANIFEST,
            "digest": digest.to_string(),
            "size": size,
            "annotations": {KEY: rec.key, DESCRIPTION: rec.description},
        }));
    }
    drop(tx);
    let _ = drain.await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": manifests,
        "annotations": {INDEX_MARK: "1"},
    });
    let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    session
        .put_manifest(r.tag().unwrap_or("latest"), manifest::OCI_INDEX, bytes)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
