//! `moby.buildkit.v1.Control`, served on `/grpc`.

use super::progress::Progress;
use super::worker::{version, worker};
use crate::Daemon;
use berth_buildkit::control::control_server::{Control, ControlServer};
use berth_buildkit::control::*;
use prost_types::Timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// How long `Solve` waits for its session to open, and `Status` for its build to start.
const WAIT: Duration = Duration::from_secs(30);

/// The gRPC services of `/grpc`: the control API and the LLB bridge.
pub fn routes(d: Arc<Daemon>) -> tonic::service::Routes {
    tonic::service::Routes::new(ControlServer::new(Service { d: d.clone() }))
        .add_service(super::gateway::server(d))
}

struct Service {
    d: Arc<Daemon>,
}

fn ts(t: std::time::SystemTime) -> Timestamp {
    Timestamp::from(t)
}

/// Cancels a build whose `Solve` call went away (the client was interrupted).
struct CancelOnDrop(Arc<Progress>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn record_of(
    reference: &str,
    req: &SolveRequest,
    created: std::time::SystemTime,
) -> BuildHistoryRecord {
    BuildHistoryRecord {
        r#ref: reference.to_string(),
        frontend: req.frontend.clone(),
        frontend_attrs: req.frontend_attrs.clone(),
        exporters: req.exporters.clone(),
        created_at: Some(ts(created)),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Control for Service {
    async fn disk_usage(
        &self,
        _req: Request<DiskUsageRequest>,
    ) -> Result<Response<DiskUsageResponse>, Status> {
        let d = self.d.clone();
        let record = tokio::task::spawn_blocking(move || usage(&d))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(DiskUsageResponse { record }))
    }

    type PruneStream = ReceiverStream<Result<UsageRecord, Status>>;

    async fn prune(
        &self,
        _req: Request<PruneRequest>,
    ) -> Result<Response<Self::PruneStream>, Status> {
        let d = self.d.clone();
        let before = {
            let d = d.clone();
            tokio::task::spawn_blocking(move || usage(&d))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
        };
        let d2 = d.clone();
        let gone: Vec<String> = tokio::task::spawn_blocking(move || {
            let mut gone = crate::build::prune_cache(&d2)
                .map(|(ids, _)| ids)
                .unwrap_or_default();
            gone.extend(d2.buildkit.locals.prune().0);
            gone
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            for r in before
                .into_iter()
                .filter(|r| gone.iter().any(|g| r.id.starts_with(&g[..g.len().min(25)])))
            {
                if tx.send(Ok(r)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn solve(
        &self,
        request: Request<SolveRequest>,
    ) -> Result<Response<SolveResponse>, Status> {
        let req = request.into_inner();
        tracing::debug!(
            r#ref = %req.r#ref,
            frontend = %req.frontend,
            attrs = ?req.frontend_attrs,
            exporters = ?req.exporters,
            session = %req.session,
            llb = req.definition.is_some(),
            "buildkit solve"
        );
        let reference = if req.r#ref.is_empty() {
            hex::encode(rand::random::<[u8; 16]>())
        } else {
            req.r#ref.clone()
        };
        if req.frontend.is_empty() && req.definition.is_some() {
            return Err(Status::unimplemented(
                "berthd builds Dockerfiles (frontend dockerfile.v0); raw LLB definitions are not supported",
            ));
        }
        if !super::builtin_frontend(&req.frontend) {
            return Err(Status::unimplemented(format!(
                "frontend {:?} is not supported: berthd builds with its own Dockerfile frontend (dockerfile.v0)",
                req.frontend
            )));
        }
        let p = Arc::new(Progress::new(&reference));
        match run_solve(&self.d, &req, &reference, p).await {
            Ok(exporter_response) => Ok(Response::new(SolveResponse { exporter_response })),
            Err(e) => Err(Status::unknown(e)),
        }
    }

    type StatusStream = ReceiverStream<Result<StatusResponse, Status>>;

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<Self::StatusStream>, Status> {
        let reference = req.into_inner().r#ref;
        let p = self
            .d
            .buildkit
            .build(&reference, WAIT)
            .await
            .ok_or_else(|| Status::not_found(format!("no build {reference}")))?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(batch) = p.next(seen).await {
                seen += batch.len();
                for r in batch {
                    if tx.send(Ok(r)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SessionStream = ReceiverStream<Result<BytesMessage, Status>>;

    async fn session(
        &self,
        _req: Request<tonic::Streaming<BytesMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        Err(Status::unimplemented(
            "berthd takes BuildKit sessions on its /session endpoint",
        ))
    }

    async fn list_workers(
        &self,
        _req: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Ok(Response::new(ListWorkersResponse {
            record: vec![worker(&self.d)],
        }))
    }

    async fn info(&self, _req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        Ok(Response::new(InfoResponse {
            buildkit_version: Some(version()),
        }))
    }

    type ListenBuildHistoryStream = ReceiverStream<Result<BuildHistoryEvent, Status>>;

    async fn listen_build_history(
        &self,
        req: Request<BuildHistoryRequest>,
    ) -> Result<Response<Self::ListenBuildHistoryStream>, Status> {
        let req = req.into_inner();
        let h = &self.d.buildkit.history;
        let mut events = h.subscribe();
        let mut now = h.list(&req.r#ref, req.active_only);
        if req.limit > 0 {
            let keep = req.limit as usize;
            if now.len() > keep {
                now.drain(..now.len() - keep);
            }
        }
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for r in now {
                let done = r.completed_at.is_some();
                let t = if done {
                    BuildHistoryEventType::Complete
                } else {
                    BuildHistoryEventType::Started
                };
                if tx
                    .send(Ok(BuildHistoryEvent {
                        r#type: t as i32,
                        record: Some(r),
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if req.early_exit {
                return;
            }
            while let Ok(e) = events.recv().await {
                let mine =
                    req.r#ref.is_empty() || e.record.as_ref().is_some_and(|r| r.r#ref == req.r#ref);
                if mine && tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update_build_history(
        &self,
        req: Request<UpdateBuildHistoryRequest>,
    ) -> Result<Response<UpdateBuildHistoryResponse>, Status> {
        let r = req.into_inner();
        if !self.d.buildkit.history.update(&r.r#ref, r.pinned, r.delete) {
            return Err(Status::not_found(format!("no build record {}", r.r#ref)));
        }
        Ok(Response::new(UpdateBuildHistoryResponse {}))
    }
}

/// A solve: the Dockerfile frontend here, or (no frontend named) a build whose function
/// runs in the client and hands its result back through the bridge; then the exporters.
async fn solve(
    d: &Arc<Daemon>,
    req: &SolveRequest,
    reference: &str,
    session: Arc<super::session::Session>,
    p: Arc<Progress>,
) -> Result<HashMap<String, String>, String> {
    let built = if req.frontend.is_empty() {
        let (g, returned) =
            super::gateway::Gateway::new(session.clone(), p.clone(), req.entitlements.clone());
        d.buildkit.set_gateway(reference, Some(g.clone()));
        let r = tokio::select! {
            r = returned => r.unwrap_or_else(|_| Err("the build's client returned nothing".into())),
            _ = p.cancelled() => Err("the build was canceled".into()),
        };
        d.buildkit.set_gateway(reference, None);
        match r? {
            Some(id) => super::frontend::Built {
                records: g.take_records(&id),
                id,
            },
            // a build without a result (a check, a lint): nothing to export
            None => return Ok(HashMap::new()),
        }
    } else {
        let imports = req
            .cache
            .as_ref()
            .map(|c| c.imports.clone())
            .unwrap_or_default();
        super::frontend::build(
            d,
            &req.frontend_attrs,
            &req.entitlements,
            &imports,
            &session,
            &p,
        )
        .await?
    };
    super::frontend::export(d, req, &session, &p, &built).await
}

/// The build cache (each cached step) and the kept client directories, as records.
fn usage(d: &Daemon) -> Vec<UsageRecord> {
    let mut out: Vec<UsageRecord> = crate::build::cache_usage(d)
        .iter()
        .map(|v| {
            let time = |k: &str| {
                chrono::DateTime::parse_from_rfc3339(v[k].as_str().unwrap_or_default())
                    .ok()
                    .map(|t| Timestamp {
                        seconds: t.timestamp(),
                        nanos: 0,
                    })
            };
            UsageRecord {
                id: v["ID"].as_str().unwrap_or_default().to_string(),
                size: v["Size"].as_i64().unwrap_or(0),
                created_at: time("CreatedAt"),
                last_used_at: time("LastUsedAt"),
                usage_count: v["UsageCount"].as_i64().unwrap_or(0),
                description: v["Description"].as_str().unwrap_or_default().to_string(),
                record_type: "regular".into(),
                ..Default::default()
            }
        })
        .collect();
    for (id, size, used) in d.buildkit.locals.usage() {
        out.push(UsageRecord {
            id,
            mutable: true,
            size: size as i64,
            created_at: Some(ts(used)),
            last_used_at: Some(ts(used)),
            description: "local source for context".into(),
            record_type: "source.local".into(),
            ..Default::default()
        });
    }
    out
}

/// Runs a solve whose progress goes to `p` (registered under `reference`, where `Status`
/// calls find it) and records it in the build history: the exporters' response. Both
/// front doors use it: `Control.Solve` and `POST /build?version=2`.
pub async fn run_solve(
    d: &Arc<Daemon>,
    req: &SolveRequest,
    reference: &str,
    p: Arc<Progress>,
) -> Result<HashMap<String, String>, String> {
    d.buildkit.register(reference, p.clone());
    let _cancel = CancelOnDrop(p.clone());
    let created = std::time::SystemTime::now();
    d.buildkit
        .history
        .record(record_of(reference, req, created), false);
    let result = match d.buildkit.sessions.get(&req.session, WAIT).await {
        None => Err(format!(
            "no active session for {}: the client's session did not open",
            req.session
        )),
        Some(session) => {
            let task = {
                let (d, req, s, p) = (d.clone(), req.clone(), session.clone(), p.clone());
                let reference = reference.to_string();
                tokio::spawn(async move { solve(&d, &req, &reference, s, p).await })
            };
            tokio::select! {
                r = task => r.unwrap_or_else(|e| Err(e.to_string())),
                _ = session.gone() => {
                    p.cancel();
                    Err("the build was canceled: its client's session closed".to_string())
                }
                // `/build/cancel`, or the client left: what runs is killed, the answer
                // goes now
                _ = p.cancelled() => Err("the build was canceled".to_string()),
            }
        }
    };
    let result = result.map_err(super::buildkit_words);
    p.finish(result.as_ref().err().map(String::as_str));
    let (steps, cached) = p.counts();
    let mut rec = record_of(reference, req, created);
    rec.completed_at = Some(ts(std::time::SystemTime::now()));
    rec.num_total_steps = steps as i32;
    rec.num_completed_steps = steps as i32;
    rec.num_cached_steps = cached as i32;
    match &result {
        Ok(resp) => rec.exporter_response = resp.clone(),
        Err(e) => {
            rec.error = Some(RpcStatus {
                code: tonic::Code::Unknown as i32,
                message: e.clone(),
            })
        }
    }
    d.buildkit.history.record(rec, true);
    d.buildkit.forget_later(reference.to_string());
    crate::release_memory();
    result
}
