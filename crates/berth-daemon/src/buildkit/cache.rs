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
//! - `type=local,dest=DIR`: the same index and step images, their layers uncompressed,
//!   written into the client's directory DIR (an OCI layout) through the content store
//!   its session exposes (`local:DIR`); the client names the index `latest` in DIR's
//!   `index.json` from the build's `cache.manifest` response.
//!
//! `--cache-from type=registry,ref=R` reads either form (an index of ours, or an image
//! with inline cache), `type=local,src=DIR` the index the client found in DIR. The format
//! is berth's own: BuildKit's cache manifests are not read.

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
    // `cache-from`: images named the classic way (`POST /build?version=2`), registry
    // caches
    for r in attrs
        .get("cache-from")
        .map(|v| v.split(',').map(str::trim).filter(|r| !r.is_empty()))
        .into_iter()
        .flatten()
    {
        let entry = CacheOptionsEntry {
            r#type: "registry".to_string(),
            attrs: std::collections::HashMap::from([("ref".to_string(), r.to_string())]),
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
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
            "local" => import_local(d, e, session).await,
            other => Err(format!(
                "cache type {other:?} is not supported here (registry, local and inline are)"
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
        for (key, digest, desc) in index_entries(&doc) {
            let by_digest = Reference::parse(&format!("{}@{digest}", r.full_name()))
                .map_err(|e| e.to_string())?;
            let id = pull_quietly(d, by_digest, creds.clone()).await?;
            d.images
                .cache_put(key, &id, desc)
                .map_err(|e| e.to_string())?;
            n += 1;
        }
        return Ok(n);
    }
    // an image, with inline cache
    let id = pull_quietly(d, r.clone(), creds).await?;
    import_inline(d, &id)
}

/// The steps a cache index lists: (key, manifest digest, description).
fn index_entries(doc: &Value) -> impl Iterator<Item = (&str, &str, &str)> {
    doc["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let key = m["annotations"][KEY].as_str()?;
            let digest = m["digest"].as_str()?;
            Some((
                key,
                digest,
                m["annotations"][DESCRIPTION].as_str().unwrap_or_default(),
            ))
        })
}

/// Pulls `r` for this host without showing progress; the image's ID.
async fn pull_quietly(
    d: &Arc<Daemon>,
    r: Reference,
    creds: Option<AuthConfig>,
) -> Result<Digest, String> {
    let plan = crate::pull::plan(d, r, &manifest::Platform::host(), creds)
        .await
        .map_err(|e| e.message)?;
    let config = plan.config().to_vec();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    crate::pull::run(d.clone(), plan, tx).await?;
    let _ = drain.await;
    Ok(Digest::of(&config))
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

/// Exports `records` to each `type=registry` and `type=local` cache of `entries`
/// (inline ones are the image exporter's); what the build's response adds (a local
/// cache's `cache.manifest`).
pub async fn export(
    d: &Arc<Daemon>,
    entries: &[CacheOptionsEntry],
    records: &[Record],
    session: &SessionClient,
) -> Result<Vec<(String, String)>, String> {
    let mut resp = Vec::new();
    for e in entries {
        match e.r#type.as_str() {
            "inline" => {}
            "registry" => {
                let r = reference_of(e)?;
                let creds = super::credentials(session, r.domain()).await;
                export_registry(d, &r, records, creds).await?;
            }
            "local" => {
                let desc = export_local(d, e, records, session).await?;
                resp.push(("cache.manifest".to_string(), desc.to_string()));
            }
            other => {
                return Err(format!(
                    "cache type {other:?} is not supported here (registry, local and inline are)"
                ))
            }
        }
    }
    Ok(resp)
}

/// The client's content store a `type=local` cache names (`dest=` to export, `src=` to
/// import).
fn local_store(e: &CacheOptionsEntry, attr: &str) -> Result<String, String> {
    e.attrs
        .get(attr)
        .filter(|v| !v.is_empty())
        .map(|dir| format!("local:{dir}"))
        .ok_or_else(|| format!("cache type=local needs {attr}="))
}

/// Blobs of a local cache: layers as plain tars (their digest is their diff id).
const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Writes bytes as a blob of the client's store; its descriptor.
async fn put_bytes(
    session: &SessionClient,
    store: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> Result<Value, String> {
    let digest = Digest::of(&bytes).to_string();
    let size = bytes.len() as u64;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let _ = tx.send(Ok(bytes)).await;
    drop(tx);
    session
        .write_content(store, &digest, size, rx)
        .await
        .map_err(|s| format!("writing {digest} to the cache: {}", s.message()))?;
    Ok(json!({"mediaType": media_type, "digest": digest, "size": size}))
}

async fn export_local(
    d: &Arc<Daemon>,
    e: &CacheOptionsEntry,
    records: &[Record],
    session: &SessionClient,
) -> Result<Value, String> {
    let store = local_store(e, "dest")?;
    let mut written = std::collections::HashSet::new();
    let mut manifests = Vec::new();
    for rec in records {
        let img = d.images.get(&rec.image).map_err(|e| e.to_string())?;
        let mut layers = Vec::new();
        for l in &img.layers {
            let size = l.blob_size.max(0) as u64;
            layers.push(json!({"mediaType": OCI_LAYER_TAR, "digest": l.diff_id, "size": size}));
            if !written.insert(l.diff_id.clone()) {
                continue;
            }
            // the layer's tar, read on a blocking thread a chunk at a time
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let (d2, l2) = (d.clone(), l.clone());
            let reader = tokio::task::spawn_blocking(move || {
                use std::io::Read;
                let mut src = match d2.images.layer_tar(&l2) {
                    Ok(r) => r,
                    Err(err) => {
                        let _ = tx.blocking_send(Err(std::io::Error::other(err.to_string())));
                        return;
                    }
                };
                loop {
                    let mut buf = vec![0u8; 1 << 20];
                    match src.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            buf.truncate(n);
                            if tx.blocking_send(Ok(buf)).is_err() {
                                return;
                            }
                        }
                        Err(err) => {
                            let _ = tx.blocking_send(Err(err));
                            return;
                        }
                    }
                }
            });
            let r = session.write_content(&store, &l.diff_id, size, rx).await;
            reader.abort();
            r.map_err(|s| format!("writing layer {} to the cache: {}", l.diff_id, s.message()))?;
        }
        let config = put_bytes(session, &store, OCI_CONFIG, img.raw_config.clone()).await?;
        let doc = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": layers,
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        let mut desc = put_bytes(session, &store, OCI_MANIFEST, bytes).await?;
        desc["annotations"] = json!({KEY: rec.key, DESCRIPTION: rec.description});
        manifests.push(desc);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": manifest::OCI_INDEX,
        "manifests": manifests,
        "annotations": {INDEX_MARK: "1"},
    });
    let bytes = serde_json::to_vec(&index).map_err(|e| e.to_string())?;
    put_bytes(session, &store, manifest::OCI_INDEX, bytes).await
}

/// A small blob of the client's store (a manifest, a config, an index).
async fn get_bytes(session: &SessionClient, store: &str, digest: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    session
        .read_content(store, digest, 16 << 20, |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .await
        .map_err(|s| format!("reading {digest} from the cache: {}", s.message()))?;
    if Digest::of(&out).to_string() != digest {
        return Err(format!("{digest} in the cache does not match its digest"));
    }
    Ok(out)
}

async fn import_local(
    d: &Arc<Daemon>,
    e: &CacheOptionsEntry,
    session: &SessionClient,
) -> Result<usize, String> {
    let store = local_store(e, "src")?;
    let index = e
        .attrs
        .get("digest")
        .filter(|v| !v.is_empty())
        .ok_or("cache type=local: the client found no index (digest=) in its directory")?;
    let doc: Value = serde_json::from_slice(&get_bytes(session, &store, index).await?)
        .map_err(|e| e.to_string())?;
    if !doc["annotations"][INDEX_MARK].is_string() {
        return Err(format!("{index} is not a build cache of berth's"));
    }
    let mut n = 0;
    for (key, digest, desc) in index_entries(&doc) {
        let man: Value = serde_json::from_slice(&get_bytes(session, &store, digest).await?)
            .map_err(|e| e.to_string())?;
        let config_digest = man["config"]["digest"].as_str().unwrap_or_default();
        let raw = get_bytes(session, &store, config_digest).await?;
        let id = import_step(d, session, &store, raw, &man).await?;
        d.images
            .cache_put(key, &id, desc)
            .map_err(|e| e.to_string())?;
        n += 1;
    }
    Ok(n)
}

/// One step image of a local cache: the layers the store has and we lack, then the
/// image.
async fn import_step(
    d: &Arc<Daemon>,
    session: &SessionClient,
    store: &str,
    raw: Vec<u8>,
    man: &Value,
) -> Result<Digest, String> {
    let cfg: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
    let diffs: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let blobs: Vec<(String, u64)> = man["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["digest"].as_str().unwrap_or_default().to_string(),
                l["size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    if blobs.len() != diffs.len() {
        return Err("a cached step's manifest and config disagree".into());
    }
    let mut rows = Vec::new();
    let mut fresh = Vec::new();
    let mut parent: Option<Digest> = None;
    for (diff, (blob, size)) in diffs.iter().zip(&blobs) {
        let diff_id: Digest = diff.parse().map_err(|_| format!("bad diff id {diff}"))?;
        let chain = match &parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        };
        if let Some(row) = d.images.known_layer(&chain).map_err(|e| e.to_string())? {
            rows.push(row);
            parent = Some(chain);
            continue;
        }
        // into a temporary file, then unpacked (and checked against its diff id)
        let tmp = tempfile::tempfile_in(d.images.tmp_dir()).map_err(|e| e.to_string())?;
        let mut w = std::io::BufWriter::new(tmp.try_clone().map_err(|e| e.to_string())?);
        let got = session
            .read_content(store, blob, (*size).max(1) << 1, |b| {
                std::io::Write::write_all(&mut w, b)
            })
            .await
            .map_err(|s| format!("reading layer {blob} from the cache: {}", s.message()))?;
        std::io::Write::flush(&mut w).map_err(|e| e.to_string())?;
        drop(w);
        if got != *size {
            return Err(format!("layer {blob}: {got} bytes, {size} expected"));
        }
        let (d2, p2, want) = (d.clone(), parent.clone(), diff_id.clone());
        let layer = tokio::task::spawn_blocking(move || {
            use std::io::Seek;
            let mut f = tmp;
            f.rewind()?;
            d2.images
                .ingest_layer(&mut f, p2.as_ref(), Some(&want))
                .map_err(|e| std::io::Error::other(e.to_string()))
        })
        .await
        .map_err(|e| e.to_string())?;
        let layer = match layer {
            Ok(l) => l,
            Err(err) => {
                d.images.discard(&fresh);
                return Err(format!("layer {blob}: {err}"));
            }
        };
        rows.push(layer.row.clone());
        fresh.push(layer);
        parent = Some(chain);
    }
    match d.images.commit_pulled(raw, rows, &[]) {
        Ok((id, _)) => Ok(id),
        Err(err) => {
            d.images.discard(&fresh);
            Err(err.to_string())
        }
    }
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
