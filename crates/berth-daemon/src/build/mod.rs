//! `POST /build`: Docker's classic builder. The context arrives as a tar (plain, gzip or
//! zstd) and is kept as an index over one spill file; the Dockerfile is parsed by
//! `berth-build`; each instruction after a `FROM` makes an image whose parent is the one
//! before (config-only steps add a history entry marked `empty_layer`, COPY and ADD a
//! layer written straight from their sources, RUN a layer committed from a container run
//! through the same runtime as `docker run`). A step's cache key is its parent image, its
//! instruction, the resulting config and, for COPY and ADD, a digest of what it copies.
//! Progress is Docker's JSON stream (`Step N/M : …`, ` ---> Using cache`, ` ---> ID`,
//! `aux` with the image ID, `errorDetail`), which the docker CLI's legacy builder renders.

mod dispatch;
mod layer;
pub mod needs;
pub(crate) mod options;
mod runmount;
pub mod source;
mod view;

use crate::error::EngineError;
use crate::http::json_line;
use crate::Daemon;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

pub use options::{NamedContext, Options, SessionAuth};

/// Where the build's messages go: Docker's JSON stream of the classic builder
/// (`stream` lines unless quiet, `aux`, errors), or a BuildKit build's progress
/// (vertexes, their logs).
#[derive(Clone)]
pub struct Out {
    sink: Sink,
    quiet: bool,
    /// something was written (an error after that goes into the stream)
    started: Arc<std::sync::atomic::AtomicBool>,
    /// a stage built beside others: its own vertexes
    lane: Option<Lane>,
}

/// The vertexes of one stage of a BuildKit build whose stages build at once.
#[derive(Clone)]
struct Lane {
    /// its step under way (or last)
    current: Arc<std::sync::Mutex<Option<usize>>>,
    /// set when a stage failed: the others stop
    abort: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Lane {
    fn current(&self) -> Option<usize> {
        *self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
enum Sink {
    Json(mpsc::Sender<Bytes>),
    Vertexes(Arc<crate::buildkit::progress::Progress>),
}

impl Out {
    pub fn json(tx: mpsc::Sender<Bytes>, quiet: bool) -> Out {
        Out {
            sink: Sink::Json(tx),
            quiet,
            started: Arc::default(),
            lane: None,
        }
    }

    pub fn vertexes(p: Arc<crate::buildkit::progress::Progress>) -> Out {
        Out {
            sink: Sink::Vertexes(p),
            quiet: false,
            started: Arc::default(),
            lane: None,
        }
    }

    /// Whether stages can build at once, each with its own vertexes (a BuildKit build;
    /// the classic builder's stream is one step after the other).
    pub fn lanes(&self) -> bool {
        matches!(self.sink, Sink::Vertexes(_))
    }

    /// The output of one stage built beside others; `abort` stops them all.
    pub fn lane(&self, abort: Arc<tokio::sync::watch::Sender<bool>>) -> Out {
        Out {
            lane: Some(Lane {
                current: Arc::default(),
                abort,
            }),
            ..self.clone()
        }
    }

    fn log(&self, p: &crate::buildkit::progress::Progress, stream: i64, msg: &[u8]) {
        match &self.lane {
            Some(l) => {
                if let Some(i) = l.current() {
                    p.log_to(i, stream, msg);
                }
            }
            None => p.log(stream, msg),
        }
    }

    /// Ends the step under way (this lane's, or the build's current vertex).
    fn complete(&self, p: &crate::buildkit::progress::Progress, cached: bool) {
        match &self.lane {
            Some(l) => {
                if let Some(i) = l.current() {
                    p.complete(i, cached, None);
                }
            }
            None => p.complete_current(cached, None),
        }
    }

    /// A message of the build: a `stream` line, or the current vertex's output.
    pub async fn say(&self, text: impl AsRef<str>) {
        match &self.sink {
            Sink::Json(_) if !self.quiet => {
                self.raw(&json!({"stream": text.as_ref()})).await;
            }
            Sink::Json(_) => {}
            Sink::Vertexes(p) => self.log(p, 1, text.as_ref().as_bytes()),
        }
    }

    /// A message only the classic builder shows (` ---> Running in …`).
    pub async fn note(&self, text: impl AsRef<str>) {
        if let Sink::Json(_) = self.sink {
            self.say(text).await;
        }
    }

    /// A step begins: `Step N/M : INSTRUCTION`, or a new vertex (`stage` names the
    /// build stage when there are several).
    pub async fn step(&self, n: usize, total: usize, stage: Option<&str>, text: &str) {
        match &self.sink {
            Sink::Json(_) => self.say(format!("Step {n}/{total} : {text}\n")).await,
            Sink::Vertexes(p) => {
                self.complete(p, false);
                let prefix = match stage {
                    Some(s) => format!("{s} {n}/{total}"),
                    None => format!("{n}/{total}"),
                };
                let name = format!("[{prefix}] {text}");
                match &self.lane {
                    Some(l) => {
                        let i = p.start_step_after(&name, l.current());
                        *l.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(i);
                    }
                    None => {
                        p.start_step(&name);
                    }
                }
            }
        }
    }

    /// The step was a cache hit, giving `image`.
    pub async fn cache_hit(&self, image: &str) {
        match &self.sink {
            Sink::Json(_) => {
                self.say(format!(" ---> Using cache\n ---> {image}\n"))
                    .await
            }
            Sink::Vertexes(p) => self.complete(p, true),
        }
    }

    /// The step is done, giving `image`.
    pub async fn step_done(&self, image: &str) {
        match &self.sink {
            Sink::Json(_) => self.say(format!(" ---> {image}\n")).await,
            Sink::Vertexes(p) => self.complete(p, false),
        }
    }

    /// Output of a RUN step (stderr shown in red by the classic builder, as dockerd).
    pub async fn run_output(&self, stderr: bool, text: &str) {
        match &self.sink {
            Sink::Json(_) if stderr => self.say(format!("\x1b[91m{text}\x1b[0m")).await,
            Sink::Json(_) => self.say(text).await,
            Sink::Vertexes(p) => self.log(p, if stderr { 2 } else { 1 }, text.as_bytes()),
        }
    }

    pub(crate) fn started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The client went away (the response was dropped, or the build was canceled).
    pub fn gone(&self) -> bool {
        let aborted = self.lane.as_ref().is_some_and(|l| *l.abort.borrow());
        aborted
            || match &self.sink {
                Sink::Json(tx) => tx.is_closed(),
                Sink::Vertexes(p) => p.is_cancelled(),
            }
    }

    /// Resolves when the client went away (or, for a lane, another stage failed).
    pub async fn closed(&self) {
        let aborted = async {
            match &self.lane {
                Some(l) => {
                    let mut rx = l.abort.subscribe();
                    let _ = rx.wait_for(|a| *a).await;
                }
                None => std::future::pending().await,
            }
        };
        let client = async {
            match &self.sink {
                Sink::Json(tx) => tx.closed().await,
                Sink::Vertexes(p) => p.cancelled().await,
            }
        };
        tokio::select! {
            _ = aborted => {}
            _ = client => {}
        }
    }

    /// A JSON message (classic builder only).
    pub async fn raw(&self, v: &Value) {
        self.started
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Sink::Json(tx) = &self.sink {
            let _ = tx.send(json_line(v)).await;
        }
    }

    /// Where a pull's JSON progress goes: the classic stream, or nowhere (a BuildKit
    /// build shows the FROM step instead).
    pub fn pull_sink(&self) -> mpsc::Sender<Bytes> {
        match &self.sink {
            Sink::Json(tx) => tx.clone(),
            Sink::Vertexes(_) => {
                let (tx, mut rx) = mpsc::channel(16);
                tokio::spawn(async move { while rx.recv().await.is_some() {} });
                tx
            }
        }
    }
}

/// A build failure: its message, and the exit code a failed RUN returned.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: Option<i64>,
}

impl<T: std::fmt::Display> From<T> for Failure {
    fn from(e: T) -> Self {
        Failure {
            message: e.to_string(),
            code: None,
        }
    }
}

pub(crate) async fn run(
    d: &Arc<Daemon>,
    opts: Options,
    reader: crate::http::BodyReader,
    out: &Out,
) -> Result<(), Failure> {
    let tmp = d.images.tmp_dir().to_path_buf();
    let keep = source::clean(&opts.dockerfile).unwrap_or_default();
    let keep2 = keep.clone();
    let mut context = tokio::task::spawn_blocking(move || -> Result<source::Context, String> {
        let spill = source::spill_file(&tmp).map_err(|e| e.to_string())?;
        let r = berth_image::decompress(reader)
            .map_err(|e| format!("failed to read build context: {e}"))?;
        source::Context::receive(r, spill, &keep2)
    })
    .await
    .map_err(|e| e.to_string())??;
    let text = context.read_to_string(&keep).ok_or_else(|| {
        format!(
            "Cannot locate specified Dockerfile: {}",
            opts.dockerfile.trim_start_matches("./")
        )
    })?;
    context.drop_build_files(&keep);
    if text.is_empty() {
        return Err(format!(
            "the Dockerfile ({}) cannot be empty",
            opts.dockerfile.trim_start_matches("./")
        )
        .into());
    }
    let file = berth_build::parser::parse(&text)?;
    // parser notes, the ignored syntax directive among them
    for w in &file.warnings {
        out.say(format!("[WARNING]: {w}\n")).await;
    }
    let mut b = dispatch::Builder::new(d.clone(), opts, Arc::new(context), out.clone(), file)?;
    let id = b.run().await?;
    let full = id.to_string();
    let short = &full["sha256:".len()..][..12];
    out.raw(&json!({"aux": {"ID": full}})).await;
    if b.opts.quiet {
        out.raw(&json!({"stream": format!("{full}\n")})).await;
    } else {
        out.say(format!("Successfully built {short}\n")).await;
    }
    for r in &b.opts.tags {
        let old = d.images.tag(&id, r).map_err(|e| e.to_string())?;
        let _ = old;
        d.events.emit(
            "image",
            "tag",
            &full,
            std::collections::BTreeMap::from([("name".to_string(), r.familiar())]),
        );
        out.say(format!("Successfully tagged {}\n", r.familiar()))
            .await;
    }
    Ok(())
}

/// A builder of `file` over `context` (the BuildKit frontend's way in).
pub(crate) fn dispatch_builder(
    d: &Arc<Daemon>,
    opts: Options,
    context: source::Context,
    out: Out,
    file: berth_build::parser::Dockerfile,
) -> Result<dispatch::Builder, String> {
    dispatch::Builder::new(d.clone(), opts, Arc::new(context), out, file).map_err(|f| f.message)
}

/// A read-only view of image `id`'s filesystem (gone when dropped).
pub(crate) fn view_of(d: &Daemon, id: &berth_image::digest::Digest) -> std::io::Result<view::View> {
    view::View::open(d, Some(id))
}

/// The label on a RUN step's container that the build removes when the step ends.
pub const STEP_LABEL: &str = "com.berth.build.step";

/// At start: the containers of RUN steps a build was running when berthd stopped (the
/// build is gone with the connection that asked for it).
pub async fn remove_leftover_steps(d: &Arc<Daemon>) {
    for c in d.containers.all() {
        if c.config()["Labels"][STEP_LABEL].is_string() {
            tracing::info!(container = %c.id, "removing the container of an interrupted build step");
            let _ = d.containers.remove_with(&c, true, true, &d.events).await;
        }
    }
}

/// Forgets every cached step (and the client directories BuildKit builds kept) and
/// removes the images only the cache held.
pub(crate) fn prune_cache(d: &Daemon) -> Result<(Vec<String>, i64), EngineError> {
    let rows =
        d.db.cache_rows()
            .map_err(|e| EngineError::internal(e.to_string()))?;
    let mut deleted = Vec::new();
    let before = d.images.layers_size()?;
    for r in &rows {
        let _ = d.db.cache_forget(&r.key);
        deleted.push(r.key.clone());
    }
    // the cache's images, newest first, so children go before their parents
    let mut ids: Vec<String> = rows.iter().map(|r| r.image_id.clone()).collect();
    ids.reverse();
    ids.dedup();
    for id in ids {
        let Ok(dg) = id.parse::<berth_image::digest::Digest>() else {
            continue;
        };
        let Ok(img) = d.images.get(&dg) else { continue };
        if !img.repo_tags.is_empty() || d.image_in_use(&dg).is_some() {
            continue;
        }
        if d.db.children_of(&id).map(|c| !c.is_empty()).unwrap_or(true) {
            continue;
        }
        if d.images.remove(&id, false, &|i| d.image_in_use(i)).is_ok() {
            d.events
                .emit("image", "delete", &id, std::collections::BTreeMap::new());
        }
    }
    let after = d.images.layers_size()?;
    let (locals, local_bytes) = d.buildkit.locals.prune();
    deleted.extend(locals);
    let mount_bytes = runmount::prune_cache_mounts(&d.config.data_root);
    Ok((
        deleted,
        (before - after).max(0) + (local_bytes + mount_bytes) as i64,
    ))
}

/// The build cache as `system df` lists it: one record per cached step.
pub fn cache_usage(d: &Daemon) -> Vec<Value> {
    let rows = d.db.cache_rows().unwrap_or_default();
    rows.iter()
        .map(|r| {
            let size = r
                .image_id
                .parse::<berth_image::digest::Digest>()
                .ok()
                .and_then(|id| d.images.get(&id).ok())
                // the step's own layer: the last, unless the step made none
                .map(|img| match img.config.history.last() {
                    Some(h) if h.empty_layer => 0,
                    _ => img.layers.last().map(|l| l.size).unwrap_or(0),
                })
                .unwrap_or(0);
            let time = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            };
            json!({
                "ID": &r.key[..r.key.len().min(25)],
                "Parents": [],
                "Type": "regular",
                "Description": r.description,
                "InUse": false,
                "Shared": false,
                "Size": size,
                "CreatedAt": time(r.created),
                "LastUsedAt": time(r.last_used),
                "UsageCount": r.uses,
            })
        })
        .collect()
}
