//! `POST /images/create?fromImage=`: pulls an image from its registry with Docker's
//! progress messages.
//!
//! The manifest (through an index, for the requested platform) and the config are
//! fetched and checked before the response starts, so a missing image or a refused
//! login is an error status. Then the layers not stored yet are downloaded in parallel
//! (`max-concurrent-downloads`), each body streamed through its digest check and
//! decompression straight into its own snapshot; a layer whose digest or diff id does
//! not match fails the pull, and nothing of it is kept. The image and its references
//! are written last, in one transaction.

use crate::error::EngineError;
use crate::http::json_line;
use crate::progress::{line, Reporter};
use crate::Daemon;
use berth_image::digest::{Digest, HashingReader};
use berth_image::reference::Reference;
use berth_image::snapshot::Driver;
use berth_image::NewLayer;
use berth_registry::auth::AuthConfig;
use berth_registry::client::{RegistryError, Session};
use berth_registry::manifest::{self, Document, ImageManifest, Platform};
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

impl From<RegistryError> for EngineError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::NotFound(_) => EngineError::not_found(msg),
            RegistryError::Denied(_) => EngineError::forbidden(msg),
            RegistryError::Unreachable(_) => EngineError::internal(msg),
            RegistryError::Status(..) | RegistryError::Invalid(_) => EngineError::internal(msg),
        }
    }
}

/// What a pull will fetch, resolved before the response starts.
pub struct Plan {
    reference: Reference,
    session: Session,
    manifest: ImageManifest,
    manifest_digest: Digest,
    config: Vec<u8>,
    diff_ids: Vec<Digest>,
}

impl Plan {
    pub fn reference(&self) -> &Reference {
        &self.reference
    }
    pub fn session(&self) -> &Session {
        &self.session
    }
    pub fn layers(&self) -> &[manifest::Descriptor] {
        &self.manifest.layers
    }
    pub fn diff_ids(&self) -> &[Digest] {
        &self.diff_ids
    }
    pub fn manifest_digest(&self) -> &Digest {
        &self.manifest_digest
    }
    pub fn config(&self) -> &[u8] {
        &self.config
    }
    fn is_plugin(&self) -> bool {
        self.manifest.config.media_type == crate::plugins::CONFIG_MEDIA_TYPE
    }
}

/// Resolves `reference` to one image manifest and its config (a plugin is refused, as
/// Docker refuses it).
pub async fn plan(
    d: &Daemon,
    reference: Reference,
    platform: &Platform,
    creds: Option<AuthConfig>,
) -> Result<Plan, EngineError> {
    let p = plan_any(d, reference, platform, creds).await?;
    if p.is_plugin() {
        return Err(EngineError::invalid(format!(
            "Encountered remote \"{}\"(plugin) when fetching",
            crate::plugins::CONFIG_MEDIA_TYPE
        )));
    }
    Ok(p)
}

/// Resolves `reference` to a plugin's manifest and config (an image is refused).
pub async fn plan_plugin(
    d: &Daemon,
    reference: Reference,
    creds: Option<AuthConfig>,
) -> Result<Plan, EngineError> {
    let p = plan_any(d, reference, &Platform::host(), creds).await?;
    if !p.is_plugin() {
        return Err(EngineError::invalid(format!(
            "Encountered remote \"{}\"(image) when fetching: {} is not a plugin",
            p.manifest.config.media_type,
            p.reference.familiar()
        )));
    }
    Ok(p)
}

async fn plan_any(
    d: &Daemon,
    reference: Reference,
    platform: &Platform,
    creds: Option<AuthConfig>,
) -> Result<Plan, EngineError> {
    let client = d.registry()?;
    if client.mirrored(reference.domain()) {
        let via_mirror = match client
            .session_via(
                reference.domain(),
                reference.path(),
                creds.clone(),
                false,
                true,
            )
            .await
        {
            Ok(s) => plan_with(s, reference.clone(), platform).await,
            Err(e) => Err(name_error(&reference, e)),
        };
        match via_mirror {
            Ok(p) => return Ok(p),
            Err(e) => {
                tracing::info!(error = %e.message, "mirror failed: pulling from the registry")
            }
        }
    }
    let session = client
        .session_via(reference.domain(), reference.path(), creds, false, false)
        .await
        .map_err(|e| name_error(&reference, e))?;
    plan_with(session, reference, platform).await
}

async fn plan_with(
    session: Session,
    reference: Reference,
    platform: &Platform,
) -> Result<Plan, EngineError> {
    let want = match (reference.digest(), reference.tag()) {
        (Some(dg), _) => dg.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => berth_image::reference::DEFAULT_TAG.to_string(),
    };
    let (mut bytes, mut ct, digest) = session
        .manifest(&want)
        .await
        .map_err(|e| name_error(&reference, e))?;
    // the digest recorded is the one the reference resolves to (an index's, if any)
    let manifest_digest = digest;
    let mut depth = 0;
    let manifest = loop {
        match manifest::parse(&bytes, &ct).map_err(|e| EngineError::internal(e.to_string()))? {
            Document::Image(m) => break m,
            Document::Index(entries) => {
                depth += 1;
                if depth > manifest::MAX_INDEX_DEPTH {
                    return Err(EngineError::internal(format!(
                        "invalid manifest: indexes nested more than {} deep",
                        manifest::MAX_INDEX_DEPTH
                    )));
                }
                let e = manifest::select(&entries, platform)
                    .map_err(|e| EngineError::not_found(e.to_string()))?;
                (bytes, ct, _) = session
                    .manifest(&e.desc.digest.to_string())
                    .await
                    .map_err(|e| name_error(&reference, e))?;
            }
        }
    };
    if manifest.config.size > manifest::MAX_CONFIG {
        return Err(EngineError::internal(format!(
            "image config too large: {} bytes",
            manifest.config.size
        )));
    }
    let config = session
        .small_blob(&manifest.config.digest, manifest::MAX_CONFIG)
        .await?;
    let cfg: Value = serde_json::from_slice(&config)
        .map_err(|e| EngineError::internal(format!("invalid image config: {e}")))?;
    let diff_ids: Vec<Digest> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != manifest.layers.len() {
        return Err(EngineError::internal(format!(
            "invalid image: the manifest has {} layers and the config {} diff ids",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    if let Some(os) = cfg["os"].as_str() {
        if os != "linux" {
            return Err(EngineError::invalid(format!(
                "image operating system \"{os}\" cannot be used on this platform"
            )));
        }
    }
    Ok(Plan {
        reference,
        session,
        manifest,
        manifest_digest,
        config,
        diff_ids,
    })
}

/// `pull -a`: every tag of `reference`'s repository, one after another in one stream.
pub async fn all_tags(
    d: &Arc<Daemon>,
    reference: Reference,
    platform: Platform,
    creds: Option<AuthConfig>,
) -> Result<crate::http::Resp, EngineError> {
    let session = d
        .registry()?
        .session(reference.domain(), reference.path(), creds.clone(), false)
        .await
        .map_err(|e| name_error(&reference, e))?;
    let mut tags = session
        .tags()
        .await
        .map_err(|e| name_error(&reference, e))?;
    tags.sort();
    tags.dedup();
    if tags.is_empty() {
        return Err(EngineError::not_found(format!(
            "no tags found for {}",
            reference.familiar_name()
        )));
    }
    let (tx, resp) = crate::http::stream("application/json");
    let d = d.clone();
    tokio::spawn(async move {
        for t in tags {
            let r = match reference.with_tag(&t) {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(crate::http::error_line(&e.to_string())).await;
                    return;
                }
            };
            let outcome = match plan(&d, r, &platform, creds.clone()).await {
                Ok(p) => run(d.clone(), p, tx.clone()).await,
                Err(e) => Err(e.message),
            };
            if let Err(e) = outcome {
                let _ = tx.send(crate::http::error_line(&e)).await;
                return;
            }
        }
    });
    Ok(resp)
}

/// Docker's words for a pull that cannot find or may not read the repository.
fn name_error(r: &Reference, e: RegistryError) -> EngineError {
    match e {
        RegistryError::NotFound(m) if m.starts_with("manifest") => EngineError::not_found(format!(
            "manifest for {} not found: {}",
            r.familiar(),
            m.trim_start_matches("manifest: ")
        )),
        RegistryError::NotFound(m) | RegistryError::Denied(m) => EngineError::not_found(format!(
                "pull access denied for {}, repository does not exist or may require 'docker login': {m}",
                r.familiar_name()
            ),
        ),
        other => other.into(),
    }
}

/// A layer's download and unpack, running in its own task.
async fn fetch_layer(
    d: Arc<Daemon>,
    session: Session,
    desc: manifest::Descriptor,
    diff: Digest,
    parent: Option<Digest>,
    counter: Arc<AtomicU64>,
) -> Result<NewLayer, String> {
    let resp = session
        .blob(&desc.digest, 0)
        .await
        .map_err(|e| e.to_string())?;
    let body = reqwest::Body::from(resp);
    let reader = crate::http::body_reader(body);
    let counting = CountingReader {
        inner: reader,
        counter,
    };
    let images = d.images.clone();
    let want = desc.digest.clone();
    let size = desc.size;
    tokio::task::spawn_blocking(move || {
        let mut hashing = HashingReader::new(counting);
        let new = match images.ingest_layer(&mut hashing, parent.as_ref(), Some(&diff)) {
            Ok(n) => n,
            Err(e) => {
                // bytes that are not the blob's say so first, as Docker does
                return Err(match hashing.finish() {
                    Ok((_, len)) if len < size => format!(
                        "failed to download layer {want}: unexpected EOF ({len} of {size} bytes)"
                    ),
                    Ok((got, _)) if got != want => {
                        format!("filesystem layer verification failed for digest {want}")
                    }
                    _ => e.to_string(),
                });
            }
        };
        let check = hashing
            .finish()
            .map_err(|e| e.to_string())
            .and_then(|(got, len)| {
                if got != want {
                    Err(format!(
                        "filesystem layer verification failed for digest {want}"
                    ))
                } else if len != size {
                    Err(format!(
                        "blob {want}: {len} bytes where the manifest says {size}"
                    ))
                } else {
                    Ok(())
                }
            });
        match check {
            Ok(()) => Ok(new),
            Err(e) => {
                images.discard(std::slice::from_ref(&new));
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Runs a planned pull, sending Docker's progress lines to `tx`; the image and its
/// references are stored only when every layer is.
pub async fn run(d: Arc<Daemon>, plan: Plan, tx: mpsc::Sender<Bytes>) -> Result<(), String> {
    let r = &plan.reference;
    let what = r
        .digest()
        .map(|g| g.to_string())
        .or_else(|| r.tag().map(str::to_string))
        .unwrap_or_else(|| "latest".into());
    let _ = tx
        .send(json_line(
            &json!({"status": format!("Pulling from {}", r.path()), "id": what}),
        ))
        .await;
    // chain ids from the config's diff ids: what is stored already is not fetched
    let mut chains = Vec::new();
    let mut parent: Option<Digest> = None;
    for diff in &plan.diff_ids {
        let chain = match &parent {
            None => diff.clone(),
            Some(p) => Digest::of(format!("{p} {diff}").as_bytes()),
        };
        chains.push(chain.clone());
        parent = Some(chain);
    }
    let mut rows: Vec<Option<berth_store::LayerRow>> = Vec::new();
    for c in &chains {
        rows.push(d.images.known_layer(c).map_err(|e| e.to_string())?);
    }
    let short = |dg: &Digest| dg.hex()[..12].to_string();
    for (i, l) in plan.manifest.layers.iter().enumerate() {
        let msg = if rows[i].is_some() {
            "Already exists"
        } else {
            "Pulling fs layer"
        };
        let _ = tx.send(line(msg, &short(&l.digest))).await;
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(
        d.config.max_concurrent_downloads.max(1),
    ));
    let sequential = d.images.driver() == Driver::Copy;
    let mut tasks = Vec::new();
    let mut counters = Vec::new();
    // the copy driver builds each snapshot on its parent's: one layer after another
    let mut previous: Option<tokio::sync::watch::Receiver<bool>> = None;
    for (i, l) in plan.manifest.layers.iter().enumerate() {
        if rows[i].is_some() {
            continue;
        }
        let counter = Arc::new(AtomicU64::new(0));
        counters.push((short(&l.digest), l.size, counter.clone()));
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let wait = if sequential { previous.take() } else { None };
        previous = Some(done_rx);
        let (d2, s2, desc, diff) = (
            d.clone(),
            plan.session.clone(),
            l.clone(),
            plan.diff_ids[i].clone(),
        );
        let parent = if i == 0 {
            None
        } else {
            Some(chains[i - 1].clone())
        };
        let sem = sem.clone();
        let tx2 = tx.clone();
        let id = short(&l.digest);
        tasks.push((
            i,
            tokio::spawn(async move {
                if let Some(mut w) = wait {
                    let _ = w.wait_for(|v| *v).await;
                }
                let _permit = sem.acquire().await;
                let r = fetch_layer(d2, s2, desc, diff, parent, counter).await;
                if r.is_ok() {
                    let _ = tx2.send(line("Verifying Checksum", &id)).await;
                    let _ = tx2.send(line("Download complete", &id)).await;
                    let _ = tx2.send(line("Pull complete", &id)).await;
                }
                let _ = done_tx.send(true);
                r
            }),
        ));
    }
    // progress of the downloads, a few times a second
    let reporter = Reporter::start("Downloading", counters, tx.clone());
    let mut fresh = Vec::new();
    let mut failure = None;
    for (i, t) in tasks {
        match t.await {
            Ok(Ok(new)) => {
                rows[i] = Some(new.row.clone());
                fresh.push(new);
            }
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
            }
        }
    }
    reporter.stop().await;
    if let Some(e) = failure {
        // what verified stays for the next try, invisible until an image names it
        if let Err(k) = d.images.keep_partial(&fresh) {
            tracing::warn!(error = %k, "keeping the verified layers of a failed pull");
            d.images.discard(&fresh);
        }
        return Err(e);
    }
    let rows: Vec<berth_store::LayerRow> = rows.into_iter().flatten().collect();
    let mut refs = vec![(
        Reference::parse(&format!("{}@{}", r.full_name(), plan.manifest_digest))
            .map_err(|e| e.to_string())?,
        true,
    )];
    if r.digest().is_none() {
        refs.push((r.clone(), false));
    }
    let images = d.images.clone();
    let config = plan.config.clone();
    let committed = tokio::task::spawn_blocking(move || images.commit_pulled(config, rows, &refs))
        .await
        .map_err(|e| e.to_string())?;
    let (id, changed) = match committed {
        Ok(v) => v,
        Err(e) => {
            d.images.discard(&fresh);
            return Err(e.to_string());
        }
    };
    // where these layers' blobs are, for pushes to skip or mount them
    for (l, diff) in plan.manifest.layers.iter().zip(&plan.diff_ids) {
        let _ = d.db.add_blob_source(&berth_store::BlobSource {
            diff_id: diff.to_string(),
            digest: l.digest.to_string(),
            media_type: l.media_type.clone(),
            size: l.size as i64,
            registry: r.domain().to_string(),
            repository: r.path().to_string(),
        });
    }
    crate::release_memory();
    let _ = tx
        .send(json_line(
            &json!({"status": format!("Digest: {}", plan.manifest_digest)}),
        ))
        .await;
    let status = if changed || !fresh.is_empty() {
        format!("Status: Downloaded newer image for {}", r.familiar())
    } else {
        format!("Status: Image is up to date for {}", r.familiar())
    };
    let _ = tx.send(json_line(&json!({ "status": status }))).await;
    let mut attrs = std::collections::BTreeMap::new();
    attrs.insert("name".to_string(), r.familiar());
    d.events.emit("image", "pull", &r.familiar(), attrs);
    tracing::info!(image = %r.familiar(), id = %id, layers = fresh.len(), "pulled");
    Ok(())
}
