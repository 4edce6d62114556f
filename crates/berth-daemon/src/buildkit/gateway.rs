//! The LLB bridge (`moby.buildkit.v1.frontend.LLBBridge`): buildx, and Compose v2
//! through it, run their build function themselves. Their `Control.Solve` names no
//! frontend; on the same connection they then call the bridge (each call naming the
//! build in its `buildkit-controlapi-buildid` metadata): `Solve` with the Dockerfile
//! frontend builds the image here, and `Return` hands its reference back to the waiting
//! `Control.Solve`, which exports it.

use super::progress::Progress;
use super::session::Session;
use crate::Daemon;
use berth_buildkit::gateway::llb_bridge_server::{LlbBridge, LlbBridgeServer};
use berth_buildkit::gateway::{
    self as gw, result, ApiCap, EvaluateRequest, EvaluateResponse, InputsRequest, InputsResponse,
    PingRequest, PongResponse, ReadDirRequest, ReadDirResponse, ReadFileRequest, ReadFileResponse,
    Ref, ResolveImageConfigRequest, ResolveImageConfigResponse, ReturnRequest, ReturnResponse,
    SolveRequest, SolveResponse, StatFileRequest, StatFileResponse, WarnRequest, WarnResponse,
};
use berth_buildkit::Stat;
use berth_image::digest::Digest;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// The metadata key naming the build of a bridge call.
const BUILD_ID: &str = "buildkit-controlapi-buildid";

/// What `Return` gave: the result's image, or the client's error.
pub type Returned = Result<Option<Digest>, String>;

/// A build whose function runs in the client.
pub struct Gateway {
    pub session: Arc<Session>,
    pub progress: Arc<Progress>,
    /// what the client allowed (`Control.Solve`'s entitlements)
    pub entitlements: Vec<String>,
    returned: Mutex<Option<oneshot::Sender<Returned>>>,
    /// the cache records of the images its solves built
    records: Mutex<HashMap<Digest, Vec<super::cache::Record>>>,
}

impl Gateway {
    /// The cache records of the build that made `id`.
    pub fn take_records(&self, id: &Digest) -> Vec<super::cache::Record> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
            .unwrap_or_default()
    }

    pub fn new(
        session: Arc<Session>,
        progress: Arc<Progress>,
        entitlements: Vec<String>,
    ) -> (Arc<Gateway>, oneshot::Receiver<Returned>) {
        let (tx, rx) = oneshot::channel();
        (
            Arc::new(Gateway {
                session,
                progress,
                entitlements,
                returned: Mutex::new(Some(tx)),
                records: Mutex::default(),
            }),
            rx,
        )
    }
}

pub fn server(d: Arc<Daemon>) -> LlbBridgeServer<Bridge> {
    LlbBridgeServer::new(Bridge { d })
}

pub struct Bridge {
    d: Arc<Daemon>,
}

/// A result's reference: an image of the store.
fn ref_of(id: &Digest) -> String {
    id.to_string()
}

fn image_of(reference: &str) -> Result<Digest, Status> {
    reference
        .parse()
        .map_err(|_| Status::not_found(format!("no result {reference:?}")))
}

fn cap(id: &str) -> ApiCap {
    ApiCap {
        id: id.to_string(),
        enabled: true,
        ..Default::default()
    }
}

/// The gateway capabilities berthd's bridge has.
const FRONTEND_CAPS: &[&str] = &[
    "solve.base",
    "resolveimage",
    "resolveimage.resolvemode",
    "readfile",
    "return",
    "returnmap",
    "readdir",
    "statfile",
    "importcaches",
    "proto.refarray",
    "reference.output",
    "frontend.inputs",
    "gateway.solve.metadata",
    "frontend.caps",
    "gateway.solve.evaluate",
    "gateway.evaluate",
    "gateway.warnings",
];

/// The LLB capabilities of what berthd's Dockerfile frontend does itself.
const LLB_CAPS: &[&str] = &[
    "source.image",
    "source.image.resolvemode",
    "source.local",
    "source.local.unique",
    "source.local.sessionid",
    "source.local.includepatterns",
    "source.local.followpaths",
    "source.local.excludepatterns",
    "source.local.sharedkeyhint",
    "exec.meta.base",
    "exec.meta.network",
    "exec.mount.bind",
    "exec.mount.cache",
    "exec.mount.cache.sharing",
    "exec.mount.selector",
    "exec.mount.tmpfs",
    "exec.mount.secret",
    "exec.mount.ssh",
    "file.base",
    "constraints",
    "platform",
    "meta.ignorecache",
    "meta.description",
    "exporter.multiple",
];

impl Bridge {
    async fn gateway<T>(&self, req: &Request<T>) -> Result<Arc<Gateway>, Status> {
        let id = req
            .metadata()
            .get(BUILD_ID)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::invalid_argument("no buildid found in context"))?;
        self.d
            .buildkit
            .gateway(id, std::time::Duration::from_secs(30))
            .await
            .ok_or_else(|| Status::not_found(format!("no such job {id}")))
    }

    fn config_of(&self, id: &Digest) -> Result<Vec<u8>, Status> {
        self.d
            .images
            .get(id)
            .map(|img| img.raw_config)
            .map_err(|e| super::status_of(e.into()))
    }

    /// Runs `f` on the filesystem of result `reference`.
    async fn in_view<T: Send + 'static>(
        &self,
        reference: &str,
        f: impl FnOnce(&std::path::Path) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let id = image_of(reference)?;
        let d = self.d.clone();
        tokio::task::spawn_blocking(move || {
            let view =
                crate::build::view_of(&d, &id).map_err(|e| Status::internal(e.to_string()))?;
            f(&view.tree.root)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

/// A path inside a result, cleaned (never above its root).
fn inside(root: &std::path::Path, p: &str) -> std::path::PathBuf {
    root.join(crate::build::source::clamp(p))
}

fn stat_of(path: &str, md: &std::fs::Metadata, target: Option<String>) -> Stat {
    use std::os::unix::fs::MetadataExt;
    Stat {
        path: path.to_string(),
        mode: berth_buildkit::fsutil::go_mode(md.mode()),
        uid: md.uid(),
        gid: md.gid(),
        size: md.size() as i64,
        mod_time: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
        linkname: target.unwrap_or_default(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl LlbBridge for Bridge {
    async fn resolve_image_config(
        &self,
        req: Request<ResolveImageConfigRequest>,
    ) -> Result<Response<ResolveImageConfigResponse>, Status> {
        let r = req.into_inner();
        let name = r.r#ref.clone();
        if r.resolve_mode != "pull" {
            if let Ok(img) = self.d.images.inspect(&name) {
                return Ok(Response::new(ResolveImageConfigResponse {
                    digest: img.id.to_string(),
                    config: img.raw_config,
                    r#ref: name,
                }));
            }
        }
        let reference =
            berth_image::reference::Reference::parse_tagged_default(&name).map_err(|e| {
                Status::invalid_argument(format!("invalid reference format: {name}: {e}"))
            })?;
        let plan = crate::pull::plan(
            &self.d,
            reference,
            &berth_registry::manifest::Platform::host(),
            None,
        )
        .await
        .map_err(super::status_of)?;
        Ok(Response::new(ResolveImageConfigResponse {
            digest: plan.manifest_digest().to_string(),
            config: plan.config().to_vec(),
            r#ref: name,
        }))
    }

    async fn solve(&self, req: Request<SolveRequest>) -> Result<Response<SolveResponse>, Status> {
        let g = self.gateway(&req).await?;
        let r = req.into_inner();
        if let Some(id) = r.frontend_opt.get("requestid").filter(|i| !i.is_empty()) {
            return Err(Status::unimplemented(format!(
                "the build request {id:?} is not supported by berthd's Dockerfile frontend"
            )));
        }
        if r.frontend.is_empty() {
            if r.definition.as_ref().is_none_or(|d| d.def.is_empty()) {
                // nothing to build
                return Ok(Response::new(SolveResponse {
                    result: Some(gw::Result {
                        metadata: HashMap::new(),
                        result: None,
                    }),
                    ..Default::default()
                }));
            }
            return Err(Status::unimplemented(
                "berthd builds Dockerfiles (frontend dockerfile.v0); raw LLB definitions are not supported",
            ));
        }
        if !super::builtin_frontend(&r.frontend) {
            return Err(Status::unimplemented(format!(
                "frontend {:?} is not supported: berthd builds with its own Dockerfile frontend (dockerfile.v0)",
                r.frontend
            )));
        }
        if r.frontend_inputs.values().any(|d| !d.def.is_empty()) {
            return Err(Status::unimplemented(
                "build contexts given as LLB (frontend inputs) are not supported by berthd yet",
            ));
        }
        let built = super::frontend::build(
            &self.d,
            &r.frontend_opt,
            &g.entitlements,
            &r.cache_imports,
            &g.session,
            &g.progress,
        )
        .await
        .map_err(|e| Status::unknown(super::buildkit_words(e)))?;
        let id = built.id.clone();
        g.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), built.records);
        let mut metadata = HashMap::new();
        metadata.insert("containerimage.config".to_string(), self.config_of(&id)?);
        Ok(Response::new(SolveResponse {
            r#ref: ref_of(&id),
            result: Some(gw::Result {
                metadata,
                result: Some(result::Result::Ref(Ref {
                    id: ref_of(&id),
                    def: None,
                })),
            }),
        }))
    }

    async fn read_file(
        &self,
        req: Request<ReadFileRequest>,
    ) -> Result<Response<ReadFileResponse>, Status> {
        let r = req.into_inner();
        let data = self
            .in_view(&r.r#ref, move |root| {
                use std::io::{Read, Seek};
                let mut f = std::fs::File::open(inside(root, &r.file_path))
                    .map_err(|e| Status::not_found(format!("{}: {e}", r.file_path)))?;
                let mut out = Vec::new();
                match r.range {
                    Some(rg) => {
                        f.seek(std::io::SeekFrom::Start(rg.offset.max(0) as u64))
                            .map_err(|e| Status::internal(e.to_string()))?;
                        f.take(rg.length.max(0) as u64).read_to_end(&mut out)
                    }
                    None => f.take(16 << 20).read_to_end(&mut out),
                }
                .map_err(|e| Status::internal(e.to_string()))?;
                Ok(out)
            })
            .await?;
        Ok(Response::new(ReadFileResponse { data }))
    }

    async fn read_dir(
        &self,
        req: Request<ReadDirRequest>,
    ) -> Result<Response<ReadDirResponse>, Status> {
        let r = req.into_inner();
        let entries = self
            .in_view(&r.r#ref, move |root| {
                let dir = inside(root, &r.dir_path);
                let mut out = Vec::new();
                let rd = std::fs::read_dir(&dir)
                    .map_err(|e| Status::not_found(format!("{}: {e}", r.dir_path)))?;
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !r.include_pattern.is_empty()
                        && !berth_build::ignore::glob(&r.include_pattern, &name)
                    {
                        continue;
                    }
                    if let Ok(md) = std::fs::symlink_metadata(e.path()) {
                        let target = std::fs::read_link(e.path())
                            .ok()
                            .map(|t| t.to_string_lossy().into_owned());
                        out.push(stat_of(&name, &md, target));
                    }
                }
                out.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(out)
            })
            .await?;
        Ok(Response::new(ReadDirResponse { entries }))
    }

    async fn stat_file(
        &self,
        req: Request<StatFileRequest>,
    ) -> Result<Response<StatFileResponse>, Status> {
        let r = req.into_inner();
        let stat = self
            .in_view(&r.r#ref, move |root| {
                let p = inside(root, &r.path);
                let md = std::fs::symlink_metadata(&p)
                    .map_err(|e| Status::not_found(format!("{}: {e}", r.path)))?;
                let target = std::fs::read_link(&p)
                    .ok()
                    .map(|t| t.to_string_lossy().into_owned());
                Ok(stat_of(&r.path, &md, target))
            })
            .await?;
        Ok(Response::new(StatFileResponse { stat: Some(stat) }))
    }

    async fn evaluate(
        &self,
        req: Request<EvaluateRequest>,
    ) -> Result<Response<EvaluateResponse>, Status> {
        // results are images already: evaluated when they exist
        image_of(&req.into_inner().r#ref)?;
        Ok(Response::new(EvaluateResponse {}))
    }

    async fn ping(&self, _req: Request<PingRequest>) -> Result<Response<PongResponse>, Status> {
        Ok(Response::new(PongResponse {
            frontend_api_caps: FRONTEND_CAPS.iter().map(|c| cap(c)).collect(),
            llb_caps: LLB_CAPS.iter().map(|c| cap(c)).collect(),
            workers: vec![super::worker::worker(&self.d)],
        }))
    }

    async fn r#return(
        &self,
        req: Request<ReturnRequest>,
    ) -> Result<Response<ReturnResponse>, Status> {
        let g = self.gateway(&req).await?;
        let r = req.into_inner();
        let returned: Returned = match (r.error, r.result) {
            (Some(e), _) if e.code != 0 || !e.message.is_empty() => Err(e.message),
            (_, Some(res)) => match res.result {
                Some(result::Result::Ref(rf)) if !rf.id.is_empty() => image_of(&rf.id)
                    .map(Some)
                    .map_err(|s| s.message().to_string()),
                Some(result::Result::RefDeprecated(id)) if !id.is_empty() => {
                    image_of(&id).map(Some).map_err(|s| s.message().to_string())
                }
                Some(result::Result::Refs(m)) => match m.refs.values().next() {
                    Some(rf) => image_of(&rf.id)
                        .map(Some)
                        .map_err(|s| s.message().to_string()),
                    None => Ok(None),
                },
                _ => Ok(None),
            },
            _ => Ok(None),
        };
        if let Some(tx) = g.returned.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(returned);
        }
        Ok(Response::new(ReturnResponse {}))
    }

    async fn inputs(
        &self,
        _req: Request<InputsRequest>,
    ) -> Result<Response<InputsResponse>, Status> {
        Ok(Response::new(InputsResponse::default()))
    }

    async fn warn(&self, req: Request<WarnRequest>) -> Result<Response<WarnResponse>, Status> {
        let g = self.gateway(&req).await?;
        let w = req.into_inner();
        g.progress
            .log(2, &[b"WARNING: ".as_slice(), &w.short, b"\n"].concat());
        Ok(Response::new(WarnResponse {}))
    }
}
