//! `POST /images/{name}/push`: sends an image's layers, config and manifest to its
//! registry with Docker's progress messages.
//!
//! Layers are stored uncompressed, so a push gzips each one on the way, unless the
//! registry already has a compressed blob of it: blobs known from pulls and pushes
//! (`blob_sources`) are checked with HEAD in the target repository ("Layer already
//! exists") or mounted from another repository of the same registry ("Mounted from").
//! Uploads run in parallel (`max-concurrent-uploads`). The manifest (Docker schema 2)
//! goes last, so the registry never names an incomplete image.

use crate::error::EngineError;
use crate::http::json_line;
use crate::progress::{line, Reporter};
use crate::Daemon;
use berth_image::digest::{Digest, Hasher};
use berth_image::reference::Reference;
use berth_registry::auth::AuthConfig;
use berth_registry::client::Session;
use berth_registry::manifest;
use berth_store::{BlobSource, LayerRow};
use bytes::Bytes;
use serde_json::json;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The local images a push sends: `name:tag`, or every tag of `name` without one.
pub fn resolve(d: &Daemon, name: &str, tag: &str) -> Result<Vec<(Reference, Digest)>, EngineError> {
    let base = Reference::parse(name)?;
    if !tag.is_empty() {
        let r = base.with_tag(tag)?;
        let id = d.images.resolve(&r.to_string()).map_err(|_| {
            EngineError::not_found(format!(
                "An image does not exist locally with the tag: {}",
                r.familiar_name()
            ))
        })?;
        return Ok(vec![(r, id)]);
    }
    if base.tag().is_some() {
        let id = d.images.resolve(&base.to_string()).map_err(|_| {
            EngineError::not_found(format!(
                "An image does not exist locally with the tag: {}",
                base.familiar()
            ))
        })?;
        return Ok(vec![(base, id)]);
    }
    let mut out = Vec::new();
    for img in d.images.list()? {
        for r in &img.repo_tags {
            if r.domain() == base.domain() && r.path() == base.path() {
                out.push((r.clone(), img.id.clone()));
            }
        }
    }
    if out.is_empty() {
        return Err(EngineError::not_found(format!(
            "An image does not exist locally with the tag: {}",
            base.familiar_name()
        )));
    }
    out.sort_by_key(|(r, _)| r.to_string());
    Ok(out)
}

/// A layer gzipped into a temporary file: its digest and size.
fn compress(d: &Daemon, l: &LayerRow) -> Result<(tempfile::NamedTempFile, Digest, u64), String> {
    let mut src = d.images.layer_tar(l).map_err(|e| e.to_string())?;
    let file = tempfile::NamedTempFile::new_in(d.images.tmp_dir()).map_err(|e| e.to_string())?;
    struct HashWrite<W> {
        inner: W,
        hasher: Hasher,
    }
    impl<W: Write> Write for HashWrite<W> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.inner.write(buf)?;
            self.hasher.update(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }
    let out = HashWrite {
        inner: std::io::BufWriter::new(file.reopen().map_err(|e| e.to_string())?),
        hasher: Hasher::default(),
    };
    let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        gz.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    let mut out = gz.finish().map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let size = out.hasher.len();
    Ok((file, out.hasher.finish(), size))
}

/// A file as a request body, counting what is sent.
fn file_body(path: std::path::PathBuf, counter: Arc<AtomicU64>) -> reqwest::Body {
    let stream = async_stream(path, counter);
    reqwest::Body::wrap_stream(stream)
}

fn async_stream(
    path: std::path::PathBuf,
    counter: Arc<AtomicU64>,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(None, move |state: Option<tokio::fs::File>| {
        let path = path.clone();
        let counter = counter.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut f = match state {
                Some(f) => f,
                None => match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) => return Some((Err(e), None)),
                },
            };
            let mut buf = vec![0u8; 256 << 10];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    Some((Ok(Bytes::from(buf)), Some(f)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    })
}

/// One layer to the registry: skipped, mounted or uploaded. Returns its descriptor.
async fn push_layer(
    d: Arc<Daemon>,
    session: Session,
    registry: String,
    layer: LayerRow,
    id: String,
    tx: mpsc::Sender<Bytes>,
) -> Result<manifest::Descriptor, String> {
    let sources =
        d.db.blob_sources(&layer.diff_id, &registry)
            .map_err(|e| e.to_string())?;
    let desc_of = |s: &BlobSource| -> Option<manifest::Descriptor> {
        Some(manifest::Descriptor {
            media_type: s.media_type.clone(),
            digest: s.digest.parse().ok()?,
            size: s.size as u64,
        })
    };
    for s in &sources {
        let Some(desc) = desc_of(s) else { continue };
        if session
            .blob_exists(&desc.digest)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {
            let _ = tx.send(line("Layer already exists", &id)).await;
            return Ok(desc);
        }
    }
    for s in sources.iter().filter(|s| s.repository != session.path()) {
        let Some(desc) = desc_of(s) else { continue };
        if session
            .mount_blob(&desc.digest, &s.repository)
            .await
            .map_err(|e| e.to_string())?
        {
            let _ = tx
                .send(line(&format!("Mounted from {}", s.repository), &id))
                .await;
            return Ok(desc);
        }
    }
    let d2 = d.clone();
    let l2 = layer.clone();
    let (file, digest, size) = tokio::task::spawn_blocking(move || compress(&d2, &l2))
        .await
        .map_err(|e| e.to_string())??;
    let desc = manifest::Descriptor {
        media_type: manifest::DOCKER_LAYER_GZIP.to_string(),
        digest: digest.clone(),
        size,
    };
    if session
        .blob_exists(&digest)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let counter = Arc::new(AtomicU64::new(0));
        let reporter = Reporter::start(
            "Pushing",
            vec![(id.clone(), size, counter.clone())],
            tx.clone(),
        );
        let path = file.path().to_path_buf();
        let r = session
            .upload_blob(&digest, size, || file_body(path.clone(), counter.clone()))
            .await;
        reporter.stop().await;
        r.map_err(|e| e.to_string())?;
        let _ = tx.send(line("Pushed", &id)).await;
    } else {
        let _ = tx.send(line("Layer already exists", &id)).await;
    }
    drop(file);
    let _ = d.db.add_blob_source(&BlobSource {
        diff_id: layer.diff_id.clone(),
        digest: digest.to_string(),
        media_type: desc.media_type.clone(),
        size: size as i64,
        registry,
        repository: session.path().to_string(),
    });
    Ok(desc)
}

/// Pushes image `id` (layers, config, manifest) through `session`: the manifest under
/// `tag`, or by its digest when there is none. The manifest's digest and size.
pub async fn push_image(
    d: &Arc<Daemon>,
    session: &Session,
    registry: &str,
    id: &Digest,
    tag: Option<&str>,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(Digest, usize), String> {
    let img = d.images.get(id).map_err(|e| e.to_string())?;
    let short = |l: &LayerRow| {
        l.diff_id
            .parse::<Digest>()
            .map(|g| g.hex()[..12].to_string())
            .unwrap_or_default()
    };
    for l in img.layers.iter().rev() {
        let _ = tx.send(line("Preparing", &short(l))).await;
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(
        d.config.max_concurrent_uploads.max(1),
    ));
    let mut tasks = Vec::new();
    for l in img.layers.iter().rev() {
        let (d2, s2, reg, l2, id2, tx2, sem) = (
            d.clone(),
            session.clone(),
            registry.to_string(),
            l.clone(),
            short(l),
            tx.clone(),
            sem.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            push_layer(d2, s2, reg, l2, id2, tx2).await
        }));
    }
    let mut descs = Vec::new();
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(desc)) => descs.push(desc),
            Ok(Err(e)) => {
                failure.get_or_insert(e);
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    descs.reverse();
    // the config, then the manifest naming it all
    let config_digest = Digest::of(&img.raw_config);
    if session
        .blob_exists(&config_digest)
        .await
        .map_err(|e| e.to_string())?
        .is_none()
    {
        let raw = Bytes::from(img.raw_config.clone());
        session
            .upload_blob(&config_digest, raw.len() as u64, || {
                reqwest::Body::from(raw.clone())
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": manifest::DOCKER_MANIFEST,
        "config": {
            "mediaType": manifest::DOCKER_CONFIG,
            "size": img.raw_config.len(),
            "digest": config_digest.to_string(),
        },
        "layers": descs.iter().map(manifest::Descriptor::to_json).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    let size = bytes.len();
    let digest = Digest::of(&bytes);
    let reference = tag
        .map(str::to_string)
        .unwrap_or_else(|| digest.to_string());
    session
        .put_manifest(&reference, manifest::DOCKER_MANIFEST, bytes)
        .await
        .map_err(|e| e.to_string())?;
    Ok((digest, size))
}

/// Pushes each of `images` (resolved by [`resolve`]) to its repository.
pub async fn run(
    d: Arc<Daemon>,
    images: Vec<(Reference, Digest)>,
    creds: Option<AuthConfig>,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), String> {
    let Some((first, _)) = images.first() else {
        return Ok(());
    };
    let repo_name = format!("{}/{}", first.domain(), first.path());
    let _ = tx
        .send(json_line(&json!({
            "status": format!("The push refers to repository [{repo_name}]")
        })))
        .await;
    let session = d
        .registry()
        .map_err(|e| e.message)?
        .session(first.domain(), first.path(), creds, true)
        .await
        .map_err(|e| e.to_string())?;
    let registry = first.domain().to_string();
    for (r, id) in &images {
        let tag = r.tag().unwrap_or("latest").to_string();
        let (digest, size) = push_image(&d, &session, &registry, id, Some(&tag), &tx).await?;
        if let Ok(dr) = Reference::parse(&format!("{}@{digest}", r.full_name())) {
            let _ = d.images.add_digest_ref(id, &dr);
        }
        let _ = tx
            .send(json_line(&json!({
                "status": format!("{tag}: digest: {digest} size: {size}")
            })))
            .await;
        let _ = tx
            .send(json_line(&json!({
                "progressDetail": {},
                "aux": {"Tag": tag, "Digest": digest.to_string(), "Size": size}
            })))
            .await;
        let mut attrs = std::collections::BTreeMap::new();
        attrs.insert("name".to_string(), r.familiar());
        d.events.emit("image", "push", &r.familiar(), attrs);
    }
    Ok(())
}
