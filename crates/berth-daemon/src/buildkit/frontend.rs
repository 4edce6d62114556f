//! The `dockerfile.v0` frontend: a `Solve` of a Dockerfile, on the same build engine as
//! `POST /build`. The Dockerfile and the context come from the client's session (only
//! what the context's `.dockerignore` lets through, and only what changed since the
//! last build of the same project); the steps run as the classic builder runs them and
//! report as BuildKit vertexes; the result goes to the exporters asked for.

use super::locals::LocalDir;
use super::progress::Progress;
use super::session::Session;
use crate::build::source::{Context, Stamp};
use crate::build::{Options, Out};
use crate::Daemon;
use berth_buildkit::control::{Exporter, SolveRequest};
use berth_buildkit::session::SyncOpts;
use berth_image::digest::Digest;
use berth_image::reference::Reference;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// The attributes of the frontend this build answers, with Docker's names.
struct Attrs<'a>(&'a HashMap<String, String>);

impl Attrs<'_> {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    fn prefixed(&self, prefix: &str) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    }
}

/// The build options a frontend request gives.
fn options(attrs: &Attrs<'_>, filename: &str) -> Result<Options, String> {
    let platform = attrs.get("platform").unwrap_or_default().to_string();
    let host = format!("linux/{}", berth_image::config::host_arch());
    for p in platform.split(',').filter(|p| !p.is_empty()) {
        if p != host && p != "linux" {
            return Err(format!(
                "platform {p} is not supported here; this host builds {host}"
            ));
        }
    }
    let mut resources = Map::new();
    if let Some(s) = attrs.get("shm-size").filter(|s| !s.is_empty() && *s != "0") {
        let n: i64 = s.parse().map_err(|_| format!("invalid shm-size: {s}"))?;
        resources.insert("ShmSize".into(), Value::from(n));
    }
    let network_mode = match attrs.get("force-network-mode").unwrap_or_default() {
        "" | "default" | "sandbox" => "default".to_string(),
        m => m.to_string(),
    };
    // `no-cache` with no value: no cache at all; with stage names, only for those
    let nocache = attrs.0.contains_key("no-cache");
    Ok(Options {
        dockerfile: filename.to_string(),
        build_args: attrs
            .prefixed("build-arg:")
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect(),
        target: attrs.get("target").unwrap_or_default().to_string(),
        nocache,
        pull: attrs.get("image-resolve-mode") == Some("pull"),
        labels: attrs
            .prefixed("label:")
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect(),
        rm: true,
        forcerm: true,
        network_mode,
        extra_hosts: attrs
            .get("add-hosts")
            .unwrap_or_default()
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect(),
        resources,
        platform,
        ..Default::default()
    })
}

/// The patterns of a `.dockerignore` text, as the client's file sync takes them.
fn ignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (neg, p) = match l.strip_prefix('!') {
                Some(p) => ("!", p.trim()),
                None => ("", l),
            };
            let p = p.trim_start_matches('/');
            format!("{neg}{p}")
        })
        .collect()
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Reads a small file the client sent into `dir` (never through a symlink).
fn read_synced(dir: &Path, name: &str) -> Option<String> {
    let fd = rustix::fs::openat2(
        rustix::fs::open(
            dir,
            rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ok()?,
        name,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::BENEATH | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut text).ok()?;
    Some(text)
}

/// The `context` attribute of a build whose context the client uploaded (`POST
/// /build?version=2` with `remote=upload-request`): the prefix, then the build's ID.
pub const UPLOAD_PREFIX: &str = "upload-request:";

/// Where a build's context is while its steps run.
enum Held {
    /// kept between builds, locked
    Local(super::locals::LocalDir),
    /// this build's only
    Temp(tempfile::TempDir),
}

impl Held {
    fn path(&self) -> &Path {
        match self {
            Held::Local(l) => l.path(),
            Held::Temp(t) => t.path(),
        }
    }
}

/// The context a client uploaded for build `id` (a tar, plain or compressed), once it
/// has arrived: unpacked into a directory of this build's, its `.dockerignore` applied;
/// with the Dockerfile's text.
async fn uploaded_context(
    d: &Arc<Daemon>,
    id: &str,
    filename: &str,
    p: &Arc<Progress>,
) -> Result<(String, Context, tempfile::TempDir), String> {
    let v = p.start("[internal] load remote build context");
    let tar = d.buildkit.uploaded(id).await?;
    let dir = d.buildkit.locals.temp().map_err(fail)?;
    let keep = crate::build::source::clean(filename).unwrap_or_default();
    let root = dir.path().to_path_buf();
    let (text, context) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let file = std::fs::File::open(&tar).map_err(fail)?;
        let _ = std::fs::remove_file(&tar);
        let plain = berth_image::decompress(file)
            .map_err(|e| format!("failed to read build context: {e}"))?;
        let fd = rustix::fs::open(
            &root,
            rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(fail)?;
        berth_image::unpack::extract_at(plain, fd, None, None)
            .map_err(|e| format!("failed to read build context: {e}"))?;
        let mut context = Context::from_dir(&root).map_err(fail)?;
        context.exclude_ignored(&keep, &root)?;
        let text = context
            .read_to_string(&keep)
            .ok_or_else(|| format!("Cannot locate specified Dockerfile: {}", keep))?;
        context.drop_build_files(&keep);
        Ok((text, context))
    })
    .await
    .map_err(fail)??;
    p.complete(v, false, None);
    Ok((text, context, dir))
}

/// Builds the Dockerfile of a `dockerfile.v0` request (its frontend attributes); the
/// image.
pub async fn build(
    d: &Arc<Daemon>,
    frontend_attrs: &HashMap<String, String>,
    entitlements: &[String],
    cache_imports: &[berth_buildkit::control::CacheOptionsEntry],
    session: &Session,
    p: &Arc<Progress>,
) -> Result<Built, String> {
    let attrs = Attrs(frontend_attrs);
    if let Some(s) = attrs.get("cmdline").or(attrs.get("source")) {
        if !s.is_empty() && !super::builtin_frontend(s) {
            return Err(format!(
                "the Dockerfile frontend {s} is an image: berthd builds with its own frontend only (remove the `# syntax=` line or name docker/dockerfile)"
            ));
        }
    }
    let filename = attrs.get("filename").unwrap_or("Dockerfile").to_string();
    let dockerfile_key = attrs
        .get("dockerfilekey")
        .unwrap_or("dockerfile")
        .to_string();
    let context_key = attrs.get("contextkey").unwrap_or("context").to_string();
    let opts = options(&attrs, &filename)?;

    // a context the client uploaded (`docker build - < context.tar`), else the
    // client's session: the Dockerfile (and a `Dockerfile.dockerignore` beside it), the
    // .dockerignore, then the context
    let upload = attrs
        .get("context")
        .and_then(|c| c.strip_prefix(UPLOAD_PREFIX))
        .map(str::to_string);
    if let Some(c) = attrs
        .get("context")
        .filter(|c| !c.is_empty() && !c.starts_with(UPLOAD_PREFIX) && !c.starts_with("local://"))
    {
        return Err(format!(
            "build context {c}: berthd builds from the client's directory or an uploaded archive (clone or download it, then build from there)"
        ));
    }
    let (text, ignore, uploaded) = if let Some(id) = &upload {
        let (text, context, dir) = uploaded_context(d, id, &filename, p).await?;
        (text, String::new(), Some((context, dir)))
    } else {
        // the Dockerfile (and a `Dockerfile.dockerignore` beside it)
        let v = p.start(&format!("[internal] load build definition from {filename}"));
        let df_dir = d.buildkit.locals.temp().map_err(fail)?;
        let own_ignore = format!("{filename}.dockerignore");
        let rep = session
            .client
            .sync(
                &SyncOpts {
                    name: dockerfile_key,
                    include: vec![filename.clone(), own_ignore.clone()],
                    follow: vec![filename.clone(), own_ignore.clone()],
                    ..Default::default()
                },
                df_dir.path().to_path_buf(),
            )
            .await
            .map_err(|e| format!("failed to read dockerfile: {e}"))?;
        p.status(v, "transferring dockerfile", rep.bytes as i64, 0, true);
        let text = read_synced(df_dir.path(), &filename).ok_or_else(|| {
            format!("failed to read dockerfile: open {filename}: no such file or directory")
        })?;
        p.complete(v, false, None);

        // the .dockerignore: the Dockerfile's own, else the context's
        let v = p.start("[internal] load .dockerignore");
        let ignore = match read_synced(df_dir.path(), &own_ignore) {
            Some(t) => t,
            None => {
                let tmp = d.buildkit.locals.temp().map_err(fail)?;
                let rep = session
                    .client
                    .sync(
                        &SyncOpts {
                            name: context_key.clone(),
                            include: vec![".dockerignore".into()],
                            follow: vec![".dockerignore".into()],
                            ..Default::default()
                        },
                        tmp.path().to_path_buf(),
                    )
                    .await
                    .map_err(|e| format!("{e}"))?;
                p.status(v, "transferring context", rep.bytes as i64, 0, true);
                read_synced(tmp.path(), ".dockerignore").unwrap_or_default()
            }
        };
        p.complete(v, false, None);
        (text, ignore, None)
    };
    let file =
        berth_build::parser::parse(&text).map_err(|e| format!("dockerfile parse error: {e}"))?;
    if let Some(s) = file
        .syntax
        .as_deref()
        .filter(|s| !super::builtin_frontend(s))
    {
        return Err(format!(
            "the Dockerfile frontend {s} (its `# syntax=` line) is an image: berthd builds with its own frontend only (remove the line or name docker/dockerfile)"
        ));
    }

    let (context, held) = match uploaded {
        Some((context, dir)) => (context, Held::Temp(dir)),
        None => {
            // the context: only what changed since the project's last build crosses
            let v = p.start("[internal] load build context");
            let started = std::time::Instant::now();
            let local: LocalDir = d
                .buildkit
                .locals
                .dir(&session.shared_key, &context_key)
                .await
                .map_err(fail)?;
            // only what the steps read (as the client's include patterns), or all
            let needs =
                crate::build::needs::context_paths(&file, |image| base_may_trigger(d, image));
            let mut rep = match needs {
                // no step reads the context: nothing crosses
                Some(paths) if paths.is_empty() => berth_buildkit::fsutil::Report::default(),
                needs => session
                    .client
                    .sync(
                        &SyncOpts {
                            name: context_key,
                            exclude: ignore_patterns(&ignore),
                            include: needs.clone().unwrap_or_default(),
                            follow: needs.unwrap_or_default(),
                        },
                        local.path().to_path_buf(),
                    )
                    .await
                    .map_err(|e| format!("{e}"))?,
            };
            p.status(v, "transferring context", rep.bytes as i64, 0, true);
            let synced = started.elapsed();
            let root = local.path().to_path_buf();
            let hashes = local.hashes_file();
            let listing = std::mem::take(&mut rep.listing);
            let context = tokio::task::spawn_blocking(move || {
                Context::from_listing(&root, listing.into_iter().filter_map(meta_of), Some(hashes))
            })
            .await
            .map_err(fail)?
            .map_err(|e| format!("reading the build context: {e}"))?;
            tracing::debug!(
                entries = rep.entries,
                files_sent = rep.files_sent,
                bytes = rep.bytes,
                sync_ms = synced.as_millis() as u64,
                read_ms = (started.elapsed() - synced).as_millis() as u64,
                "build context synced"
            );
            p.complete(v, false, None);
            (context, Held::Local(local))
        }
    };

    // --build-context NAME=…: images, and the client's other directories
    let mut named = BTreeMap::new();
    let mut named_dirs = Vec::new();
    for (name, value) in attrs.prefixed("context:") {
        let ctx = if let Some(r) = value.strip_prefix("docker-image://") {
            crate::build::NamedContext::Image(r.to_string())
        } else if let Some(local) = value.strip_prefix("local:") {
            let v = p.start(&format!("[internal] load build context {name}"));
            let dir = d
                .buildkit
                .locals
                .dir(&session.shared_key, local)
                .await
                .map_err(fail)?;
            let rep = session
                .client
                .sync(
                    &SyncOpts {
                        name: local.to_string(),
                        ..Default::default()
                    },
                    dir.path().to_path_buf(),
                )
                .await
                .map_err(|e| e.to_string())?;
            p.status(v, "transferring context", rep.bytes as i64, 0, true);
            p.complete(v, false, None);
            let path = dir.path().to_path_buf();
            named_dirs.push(dir);
            crate::build::NamedContext::Dir(path)
        } else {
            return Err(format!(
                "build context {name}={value}: only docker-image:// and local directories are supported"
            ));
        };
        named.insert(name, ctx);
    }

    // caches named by --cache-from: their steps become cache hits
    let imports = super::cache::imports(cache_imports, frontend_attrs);
    if !imports.is_empty() {
        let from = if imports.iter().all(|e| e.r#type == "local") {
            "client"
        } else {
            "registry"
        };
        let v = p.start(&format!("importing cache manifest from {from}"));
        let (found, warnings) = super::cache::import(d, &imports, &session.client).await;
        for w in warnings {
            p.log(2, format!("WARNING: {w}\n").as_bytes());
        }
        p.status(v, "cached steps found", found as i64, 0, true);
        p.complete(v, false, None);
    }

    // the steps
    let out = Out::vertexes(p.clone());
    for w in &file.warnings {
        p.log(2, format!("[WARNING]: {w}\n").as_bytes());
    }
    let mut opts = opts;
    opts.session = Some(crate::build::SessionAuth(
        session.client.clone(),
        session.methods.clone(),
    ));
    opts.entitlements = entitlements.to_vec();
    opts.context_dir = Some(held.path().to_path_buf());
    opts.named_contexts = named;
    let mut b = crate::build::dispatch_builder(d, opts, context, out, file)?;
    // the context stays locked while steps read it
    let ran = std::time::Instant::now();
    let result = b.run().await;
    b.save_context_hashes();
    tracing::debug!(
        ms = ran.elapsed().as_millis() as u64,
        ok = result.is_ok(),
        "build steps run"
    );
    let id = result.map_err(|f| f.message)?;
    p.complete_current(false, None);
    drop(held);
    drop(named_dirs);
    Ok(Built {
        id,
        records: b.take_records(),
    })
}

/// A build's image and its steps' cache records.
pub struct Built {
    pub id: Digest,
    pub records: Vec<super::cache::Record>,
}

/// The exporters of a request (the old single one when the list is empty).
pub fn exporters(req: &SolveRequest) -> Vec<Exporter> {
    if !req.exporters.is_empty() {
        return req.exporters.clone();
    }
    if req.exporter_deprecated.is_empty() {
        return Vec::new();
    }
    vec![Exporter {
        r#type: req.exporter_deprecated.clone(),
        attrs: req.exporter_attrs_deprecated.clone(),
    }]
}

/// Sends the built image to the exporters of `req` (with its inline cache if asked),
/// then its cache to the request's cache exports; their response.
pub async fn export(
    d: &Arc<Daemon>,
    req: &SolveRequest,
    session: &Session,
    p: &Progress,
    built: &Built,
) -> Result<HashMap<String, String>, String> {
    let cache_to = req
        .cache
        .as_ref()
        .map(|c| c.exports.clone())
        .unwrap_or_default();
    let inline = cache_to.iter().any(|e| e.r#type == "inline");
    let with_cache;
    let id = if inline {
        let (d2, id, recs) = (d.clone(), built.id.clone(), built.records.clone());
        with_cache =
            tokio::task::spawn_blocking(move || super::cache::with_inline(&d2, &id, &recs))
                .await
                .map_err(fail)??;
        &with_cache
    } else {
        &built.id
    };
    let mut resp = export_image(d, req, session, p, id).await?;
    if let Some(kind) = cache_to
        .iter()
        .map(|e| e.r#type.as_str())
        .find(|t| *t != "inline")
    {
        let what = if kind == "local" { "client" } else { kind };
        let v = p.start(&format!("exporting cache to {what}"));
        let more = super::cache::export(d, &cache_to, &built.records, &session.client).await?;
        resp.extend(more);
        p.complete(v, false, None);
    }
    Ok(resp)
}

async fn export_image(
    d: &Arc<Daemon>,
    req: &SolveRequest,
    session: &Session,
    p: &Progress,
    id: &Digest,
) -> Result<HashMap<String, String>, String> {
    let mut resp = HashMap::new();
    resp.insert("containerimage.config.digest".into(), id.to_string());
    resp.insert("containerimage.digest".into(), id.to_string());
    for e in exporters(req) {
        match e.r#type.as_str() {
            "moby" | "image" | "docker" => {
                let v = p.start("exporting to image");
                p.status(v, "exporting layers", 0, 0, true);
                p.status(v, &format!("writing image {id}"), 0, 0, true);
                let names: Vec<String> = e
                    .attrs
                    .get("name")
                    .map(|n| {
                        n.split(',')
                            .map(str::trim)
                            .filter(|n| !n.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let mut refs = Vec::new();
                for n in &names {
                    let r = Reference::parse_tagged_default(n)
                        .map_err(|err| format!("invalid reference format: {n}: {err}"))?;
                    d.images.tag(id, &r).map_err(fail)?;
                    d.events.emit(
                        "image",
                        "tag",
                        &id.to_string(),
                        BTreeMap::from([("name".to_string(), r.familiar())]),
                    );
                    p.status(v, &format!("naming to {r}"), 0, 0, true);
                    refs.push(r);
                }
                if e.attrs.get("push").is_some_and(|v| v == "true") {
                    push(d, session, p, v, &refs).await?;
                }
                p.complete(v, false, None);
                if !names.is_empty() {
                    resp.insert("image.name".into(), names.join(","));
                }
            }
            "local" | "tar" => {
                let v = p.start(&format!(
                    "exporting to client {}",
                    if e.r#type == "tar" {
                        "tarball"
                    } else {
                        "directory"
                    }
                ));
                let view = crate::build::view_of(d, id).map_err(fail)?;
                let r = if e.r#type == "local" {
                    session.client.send_dir(view.tree.root.clone()).await
                } else {
                    let root = view.tree.root.clone();
                    let (w, r) = tokio::io::duplex(256 << 10);
                    let writer = tokio::task::spawn_blocking(move || {
                        let mut b = tar::Builder::new(blocking_writer(w));
                        b.follow_symlinks(false);
                        b.append_dir_all(".", &root)?;
                        b.into_inner().map(|_| ())
                    });
                    let sent = session.client.send_bytes(r).await;
                    let _ = writer.await;
                    sent
                };
                r.map_err(|err| format!("exporting: {err}"))?;
                p.status(v, "copying files", 0, 0, true);
                p.complete(v, false, None);
            }
            other => {
                return Err(format!(
                    "exporter {other:?} is not supported (moby, image, docker, local, tar are)"
                ))
            }
        }
    }
    Ok(resp)
}

/// A blocking writer into the async side of a duplex pipe.
fn blocking_writer(w: tokio::io::DuplexStream) -> impl std::io::Write {
    struct W(tokio::io::DuplexStream, tokio::runtime::Handle);
    impl std::io::Write for W {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            use tokio::io::AsyncWriteExt;
            self.1.block_on(self.0.write(b))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    W(w, tokio::runtime::Handle::current())
}

/// `push=true`: the named images go to their registries, with the client's credentials.
async fn push(
    d: &Arc<Daemon>,
    session: &Session,
    p: &Progress,
    v: usize,
    refs: &[Reference],
) -> Result<(), String> {
    for r in refs {
        let images = crate::push::resolve(d, &r.familiar_name(), r.tag().unwrap_or("latest"))
            .map_err(|e| e.message)?;
        let creds = super::credentials(&session.client, r.domain()).await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        crate::push::run(d.clone(), images, creds, tx)
            .await
            .map_err(|e| format!("pushing {r}: {e}"))?;
        let _ = drain.await;
        p.status(v, &format!("pushing {r}"), 0, 0, true);
    }
    Ok(())
}

/// A received entry as the builder's context holds it (what a walk of the tree finds).
fn meta_of(
    l: berth_buildkit::fsutil::Received,
) -> Option<(String, crate::build::source::Meta, Option<Stamp>)> {
    use crate::build::source::{Kind, Meta};
    use berth_buildkit::fsutil::{kind_of, unix_perm, Kind as Fs};
    let st = l.stat;
    let kind = match kind_of(st.mode) {
        Fs::Dir => Kind::Dir,
        Fs::Symlink => Kind::Symlink(st.linkname),
        Fs::File => Kind::File,
        Fs::Other => return None,
    };
    let meta = Meta {
        size: if kind == Kind::File {
            st.size.max(0) as u64
        } else {
            0
        },
        kind,
        mode: unix_perm(st.mode),
        uid: u64::from(st.uid),
        gid: u64::from(st.gid),
        mtime: st.mod_time.div_euclid(1_000_000_000).max(0) as u64,
    };
    Some((l.path, meta, l.kept))
}

/// Whether base image `image` may carry ONBUILD triggers (which read the context): an
/// image not in the store may.
fn base_may_trigger(d: &Daemon, image: &str) -> bool {
    let Ok(img) = d.images.inspect(image) else {
        return true;
    };
    serde_json::from_slice::<serde_json::Value>(&img.raw_config)
        .ok()
        .and_then(|c| c["config"]["OnBuild"].as_array().map(|a| !a.is_empty()))
        .unwrap_or(false)
}
