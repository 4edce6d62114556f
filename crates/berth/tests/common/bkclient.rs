//! A small BuildKit client for the tests, as buildx is one: it opens `/grpc` (the control
//! API) and `/session` (its own directories, secrets, ssh agent and output directory,
//! served to the daemon) on a berthd's socket, and solves a Dockerfile with the
//! `dockerfile.v0` frontend.

use berth_buildkit::control::control_client::ControlClient;
use berth_buildkit::control::{Exporter, SolveRequest, StatusRequest, StatusResponse};
use berth_buildkit::fsutil;
use berth_buildkit::pb::grpc::health::v1::health_server::{Health, HealthServer};
use berth_buildkit::pb::grpc::health::v1::{
    health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse,
};
use berth_buildkit::pb::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use berth_buildkit::pb::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use berth_buildkit::pb::moby::filesync::v1::auth_server::{Auth, AuthServer};
use berth_buildkit::pb::moby::filesync::v1::file_send_server::{FileSend, FileSendServer};
use berth_buildkit::pb::moby::filesync::v1::file_sync_server::{FileSync, FileSyncServer};
use berth_buildkit::pb::moby::filesync::v1::{CredentialsRequest, CredentialsResponse};
use berth_buildkit::pb::moby::sshforward::v1::ssh_server::{Ssh, SshServer};
use berth_buildkit::pb::moby::sshforward::v1::{
    BytesMessage, CheckAgentRequest, CheckAgentResponse,
};
use berth_buildkit::Packet;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Opens `path` on the daemon's socket and upgrades the connection to h2c.
pub async fn hijack(
    sock: &Path,
    path: &str,
    headers: &[(String, String)],
) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(sock).await?;
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: berth\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    // the answer's head, byte by byte: HTTP/2 follows it at once
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(std::io::Error::other("closed before the upgrade"));
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    if !text.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("no upgrade: {text}")));
    }
    Ok(s)
}

pub async fn control(sock: &Path) -> ControlClient<tonic::transport::Channel> {
    let io = hijack(sock, "/grpc", &[]).await.expect("/grpc");
    ControlClient::new(berth_buildkit::conn::channel(io).await.expect("channel"))
}

/// What the session serves.
#[derive(Clone, Default)]
pub struct SessionSpec {
    /// local directories by name (`context`, `dockerfile`, named contexts)
    pub dirs: HashMap<String, PathBuf>,
    pub secrets: HashMap<String, Vec<u8>>,
    /// an ssh agent's socket, served as the agent `default`
    pub ssh_agent: Option<PathBuf>,
    /// where `--output type=local` lands
    pub output: Option<PathBuf>,
    /// the file `--output type=tar` is written to
    pub output_tar: Option<PathBuf>,
}

#[derive(Clone)]
struct Files(SessionSpec);

type PacketStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Packet, Status>> + Send>>;

fn meta_list(req: &Request<Streaming<Packet>>, key: &str) -> Vec<String> {
    req.metadata()
        .get_all(key)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

#[tonic::async_trait]
impl FileSync for Files {
    type DiffCopyStream = PacketStream;
    async fn diff_copy(
        &self,
        req: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let name = req
            .metadata()
            .get("dir-name")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let root = self
            .0
            .dirs
            .get(&name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no local directory {name}")))?;
        let include = meta_list(&req, "include-patterns");
        let exclude =
            berth_build::ignore::Ignore::parse(&meta_list(&req, "exclude-patterns").join("\n"));
        let (in_rx, _pump) = fsutil::pump(req.into_inner());
        let (out_tx, out_rx) = mpsc::channel::<Packet>(64);
        let keep = move |p: &str, dir: bool| {
            // as fsutil: a pattern takes what it matches and all below it, and the
            // directories on the way to it
            let parents = || {
                p.char_indices()
                    .filter(|(_, c)| *c == '/')
                    .map(|(n, _)| &p[..n])
                    .chain([p])
            };
            let included = include.is_empty()
                || include.iter().any(|i| {
                    parents().any(|q| berth_build::ignore::glob(i, q))
                        || (dir && i.starts_with(&format!("{p}/")))
                });
            included && !exclude.excluded(p)
        };
        tokio::spawn(async move {
            let _ = fsutil::send(root, keep, in_rx, out_tx).await;
        });
        let out = tokio_stream::StreamExt::map(ReceiverStream::new(out_rx), Ok);
        Ok(Response::new(Box::pin(out)))
    }
}

#[tonic::async_trait]
impl FileSend for Files {
    type DiffCopyStream = PacketStream;
    async fn diff_copy(
        &self,
        req: Request<Streaming<Packet>>,
    ) -> Result<Response<PacketStream>, Status> {
        let dest = self
            .0
            .output
            .clone()
            .ok_or_else(|| Status::failed_precondition("no output directory"))?;
        std::fs::create_dir_all(&dest).map_err(|e| Status::internal(e.to_string()))?;
        let (in_rx, _pump) = fsutil::pump(req.into_inner());
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Packet>();
        let (tx, rx) = mpsc::channel::<Result<Packet, Status>>(64);
        tokio::spawn(async move {
            while let Some(p) = out_rx.recv().await {
                if tx.send(Ok(p)).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let _ = fsutil::receive(in_rx, out_tx, dest).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl berth_buildkit::pb::filesend_bytes::file_send_server::FileSend for Files {
    type DiffCopyStream = Pin<
        Box<
            dyn tokio_stream::Stream<Item = Result<berth_buildkit::filesync::BytesMessage, Status>>
                + Send,
        >,
    >;
    async fn diff_copy(
        &self,
        req: Request<Streaming<berth_buildkit::filesync::BytesMessage>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        let dest = self
            .0
            .output_tar
            .clone()
            .ok_or_else(|| Status::failed_precondition("no output file"))?;
        let mut inbound = req.into_inner();
        let mut data = Vec::new();
        while let Some(m) = inbound.message().await? {
            data.extend_from_slice(&m.data);
        }
        std::fs::write(dest, data).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(Box::pin(tokio_stream::empty())))
    }
}

#[tonic::async_trait]
impl Secrets for Files {
    async fn get_secret(
        &self,
        req: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = req.into_inner().id;
        match self.0.secrets.get(&id) {
            Some(data) => Ok(Response::new(GetSecretResponse { data: data.clone() })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

#[tonic::async_trait]
impl Auth for Files {
    async fn credentials(
        &self,
        _req: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        Ok(Response::new(CredentialsResponse::default()))
    }
}

type BytesStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<BytesMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Ssh for Files {
    async fn check_agent(
        &self,
        _req: Request<CheckAgentRequest>,
    ) -> Result<Response<CheckAgentResponse>, Status> {
        match &self.0.ssh_agent {
            Some(_) => Ok(Response::new(CheckAgentResponse {})),
            None => Err(Status::not_found("no ssh agent")),
        }
    }

    type ForwardAgentStream = BytesStream;
    async fn forward_agent(
        &self,
        req: Request<Streaming<BytesMessage>>,
    ) -> Result<Response<BytesStream>, Status> {
        let agent = self
            .0
            .ssh_agent
            .clone()
            .ok_or_else(|| Status::not_found("no ssh agent"))?;
        let conn = UnixStream::connect(agent)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (mut rd, mut wr) = conn.into_split();
        let mut inbound = req.into_inner();
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                if wr.write_all(&m.data).await.is_err() {
                    return;
                }
            }
        });
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx
                            .send(Ok(BytesMessage {
                                data: buf[..n].to_vec(),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl Health for Files {
    async fn check(
        &self,
        _req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }
}

/// An open session: it lasts until dropped.
pub struct Session {
    pub id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Session {
    /// A handle naming a session another handle keeps open.
    pub fn adopt(id: String) -> Session {
        Session {
            id,
            task: tokio::spawn(async {}),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a session serving `spec` under `shared_key`.
pub async fn session(sock: &Path, shared_key: &str, spec: SessionSpec) -> Session {
    let id = format!("test{}", rand_id());
    let mut methods = vec![
        "/grpc.health.v1.Health/Check",
        "/moby.filesync.v1.FileSync/DiffCopy",
        "/moby.filesync.v1.Auth/Credentials",
        "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    ];
    if spec.ssh_agent.is_some() {
        methods.push("/moby.sshforward.v1.SSH/ForwardAgent");
    }
    if spec.output.is_some() || spec.output_tar.is_some() {
        methods.push("/moby.filesync.v1.FileSend/DiffCopy");
    }
    let mut headers = vec![
        ("X-Docker-Expose-Session-Uuid".to_string(), id.clone()),
        (
            "X-Docker-Expose-Session-Name".to_string(),
            "test".to_string(),
        ),
        (
            "X-Docker-Expose-Session-Sharedkey".to_string(),
            shared_key.to_string(),
        ),
    ];
    for m in methods {
        headers.push((
            "X-Docker-Expose-Session-Grpc-Method".to_string(),
            m.to_string(),
        ));
    }
    let io = hijack(sock, "/session", &headers).await.expect("/session");
    let tar = spec.output_tar.is_some();
    let files = Files(spec);
    let routes = tonic::service::Routes::new(FileSyncServer::new(files.clone()));
    let routes = if tar {
        routes.add_service(
            berth_buildkit::pb::filesend_bytes::file_send_server::FileSendServer::new(
                files.clone(),
            ),
        )
    } else {
        routes.add_service(FileSendServer::new(files.clone()))
    };
    let routes = routes
        .add_service(SecretsServer::new(files.clone()))
        .add_service(AuthServer::new(files.clone()))
        .add_service(SshServer::new(files.clone()))
        .add_service(HealthServer::new(files));
    let task = tokio::spawn(async move {
        let _ = berth_buildkit::conn::serve(io, routes).await;
    });
    Session { id, task }
}

fn rand_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{t:x}{:x}", std::process::id())
}

/// What a solve gave: its response (or error) and every status update.
pub struct Solved {
    pub result: Result<HashMap<String, String>, Status>,
    pub status: Vec<StatusResponse>,
}

impl Solved {
    pub fn vertex_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .status
            .iter()
            .flat_map(|s| s.vertexes.iter().map(|v| v.name.clone()))
            .collect();
        v.dedup();
        v
    }

    pub fn logs(&self) -> String {
        self.status
            .iter()
            .flat_map(|s| {
                s.logs
                    .iter()
                    .map(|l| String::from_utf8_lossy(&l.msg).into_owned())
            })
            .collect()
    }

    /// The byte counts of a status (`transferring context`).
    pub fn counted(&self, id: &str) -> Vec<i64> {
        self.status
            .iter()
            .flat_map(|s| s.statuses.iter().filter(|x| x.id == id).map(|x| x.current))
            .collect()
    }
}

/// Solves with the Dockerfile frontend in `session`, with `attrs` and `exporters`.
pub async fn solve(
    sock: &Path,
    session: &Session,
    attrs: &[(&str, &str)],
    exporters: Vec<Exporter>,
    entitlements: &[&str],
) -> Solved {
    solve_cached(sock, session, attrs, exporters, entitlements, None).await
}

/// [`solve`] with cache imports and exports.
pub async fn solve_cached(
    sock: &Path,
    session: &Session,
    attrs: &[(&str, &str)],
    exporters: Vec<Exporter>,
    entitlements: &[&str],
    cache: Option<berth_buildkit::control::CacheOptions>,
) -> Solved {
    let mut c = control(sock).await;
    let reference = format!("ref{}", rand_id());
    let mut st = control(sock).await;
    let r2 = reference.clone();
    let status = tokio::spawn(async move {
        let mut out = Vec::new();
        if let Ok(resp) = st.status(StatusRequest { r#ref: r2 }).await {
            let mut s = resp.into_inner();
            while let Ok(Some(m)) = s.message().await {
                out.push(m);
            }
        }
        out
    });
    let req = SolveRequest {
        r#ref: reference,
        session: session.id.clone(),
        frontend: "dockerfile.v0".into(),
        frontend_attrs: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        exporters,
        entitlements: entitlements.iter().map(|e| e.to_string()).collect(),
        cache,
        ..Default::default()
    };
    let result = c.solve(req).await.map(|r| r.into_inner().exporter_response);
    let status = status.await.unwrap_or_default();
    Solved { result, status }
}

pub fn moby(name: &str) -> Exporter {
    Exporter {
        r#type: "moby".into(),
        attrs: HashMap::from([("name".to_string(), name.to_string())]),
    }
}

/// A cache option (`type=registry,ref=…`).
pub fn cache_entry(
    kind: &str,
    reference: Option<&str>,
) -> berth_buildkit::control::CacheOptionsEntry {
    berth_buildkit::control::CacheOptionsEntry {
        r#type: kind.into(),
        attrs: reference
            .map(|r| HashMap::from([("ref".to_string(), r.to_string())]))
            .unwrap_or_default(),
    }
}

impl Solved {
    /// The last state of the vertex whose name contains `name`.
    pub fn vertex(&self, name: &str) -> Option<berth_buildkit::control::Vertex> {
        self.status
            .iter()
            .flat_map(|s| s.vertexes.iter())
            .rfind(|v| v.name.contains(name))
            .cloned()
    }

    /// The names of the step vertexes that were cache hits.
    pub fn cached_steps(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .status
            .iter()
            .flat_map(|s| {
                s.vertexes
                    .iter()
                    .filter(|v| v.cached)
                    .map(|v| v.name.clone())
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
