//! The daemon's side of a BuildKit session: calls to the services the client exposes
//! (its directories, registry credentials, secrets, ssh agent, health).

use crate::fsutil::{self, FsError, Report};
use crate::pb::grpc::health::v1::{health_client::HealthClient, HealthCheckRequest};
use crate::pb::moby::buildkit::secrets::v1::{secrets_client::SecretsClient, GetSecretRequest};
use crate::pb::moby::filesync::v1::{
    auth_client::AuthClient, file_send_client::FileSendClient, file_sync_client::FileSyncClient,
    CredentialsRequest,
};
use crate::pb::moby::sshforward::v1::{ssh_client::SshClient, BytesMessage};
use crate::Packet;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

/// gRPC method paths a session may expose (its `X-Docker-Expose-Session-Grpc-Method`
/// headers).
pub mod methods {
    pub const DIFF_COPY: &str = "/moby.filesync.v1.FileSync/DiffCopy";
    pub const FILE_SEND: &str = "/moby.filesync.v1.FileSend/DiffCopy";
    pub const CREDENTIALS: &str = "/moby.filesync.v1.Auth/Credentials";
    pub const GET_SECRET: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";
    pub const FORWARD_AGENT: &str = "/moby.sshforward.v1.SSH/ForwardAgent";
    pub const CONTENT_WRITE: &str = "/containerd.services.content.v1.Content/Write";
    pub const CONTENT_READ: &str = "/containerd.services.content.v1.Content/Read";
}

/// The header that picks one of the content stores a session exposes (BuildKit's
/// `session/content`): `local:DIR` for a `type=local` cache in the client's DIR.
pub const STORE_ID_HEADER: &str = "buildkit-attachable-store-id";

/// Data a write sends, one chunk at a time.
pub type Chunks = mpsc::Receiver<std::io::Result<Vec<u8>>>;

fn store_request<T>(store: &str, msg: T) -> Result<tonic::Request<T>, tonic::Status> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        STORE_ID_HEADER,
        store
            .parse()
            .map_err(|_| tonic::Status::invalid_argument("a store id that is not ASCII"))?,
    );
    Ok(req)
}

/// What to take of a client's directory.
#[derive(Debug, Clone, Default)]
pub struct SyncOpts {
    /// the directory's name in the session (`context`, `dockerfile`, a named context)
    pub name: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub follow: Vec<String>,
}

/// A client's session, over the one connection it opened.
#[derive(Clone)]
pub struct SessionClient {
    channel: tonic::transport::Channel,
}

fn meta(v: &str) -> Result<tonic::metadata::MetadataValue<tonic::metadata::Ascii>, FsError> {
    v.parse()
        .map_err(|_| FsError::Protocol(format!("a pattern that is not ASCII: {v:?}")))
}

impl SessionClient {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        SessionClient { channel }
    }

    /// Brings `dest` in step with the client's directory `o.name` (only what changed
    /// crosses).
    pub async fn sync(&self, o: &SyncOpts, dest: PathBuf) -> Result<Report, FsError> {
        let (out_tx, out_rx) = mpsc::unbounded_channel::<Packet>();
        let mut req = tonic::Request::new(UnboundedReceiverStream::new(out_rx));
        let md = req.metadata_mut();
        md.insert("dir-name", meta(&o.name)?);
        for p in &o.include {
            md.append("include-patterns", meta(p)?);
        }
        for p in &o.exclude {
            md.append("exclude-patterns", meta(p)?);
        }
        for p in &o.follow {
            md.append("followpaths", meta(p)?);
        }
        let resp = FileSyncClient::new(self.channel.clone())
            .diff_copy(req)
            .await
            .map_err(|s| FsError::Sender(s.message().to_string()))?;
        let (in_rx, pump) = fsutil::pump(resp.into_inner());
        let r = fsutil::receive(in_rx, out_tx, dest).await;
        pump.abort();
        r
    }

    /// Sends the tree under `src` to the client (`--output type=local`).
    pub async fn send_dir(&self, src: PathBuf) -> Result<(), FsError> {
        let (out_tx, out_rx) = mpsc::channel::<Packet>(64);
        let out_stream = tokio_stream::wrappers::ReceiverStream::new(out_rx);
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        // a gRPC server (the client's receiver) answers a stream's headers with its
        // first message, and fsutil's receiver says nothing before the listing: the
        // listing goes while the call waits for its answer
        let channel = self.channel.clone();
        let call = tokio::spawn(async move {
            match FileSendClient::new(channel)
                .diff_copy(tonic::Request::new(out_stream))
                .await
            {
                Ok(resp) => fsutil::pump_into(resp.into_inner(), in_tx).await,
                Err(s) => {
                    let _ = in_tx.send(Err(format!("the client's receiver: {}", s.message())));
                }
            }
        });
        let r = fsutil::send(src, |_, _| true, in_rx, out_tx).await;
        call.abort();
        r
    }

    /// Sends `data` (read to its end) to the client as a stream of bytes on
    /// `FileSend/DiffCopy` (`--output type=tar`).
    pub async fn send_bytes(
        &self,
        mut data: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> Result<(), FsError> {
        let (tx, rx) = mpsc::channel::<crate::filesync::BytesMessage>(16);
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                let n = data.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                if tx
                    .send(crate::filesync::BytesMessage {
                        data: buf[..n].to_vec(),
                    })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
        });
        let resp =
            crate::pb::filesend_bytes::file_send_client::FileSendClient::new(self.channel.clone())
                .diff_copy(tonic::Request::new(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                ))
                .await
                .map_err(|s| FsError::Receiver(s.message().to_string()))?;
        let mut inbound = resp.into_inner();
        // the client reads to the end of our stream, then ends its own
        while let Ok(Some(_)) = inbound.message().await {}
        reader
            .await
            .map_err(|e| FsError::Protocol(e.to_string()))?
            .map_err(|err| FsError::Io {
                what: "reading the output".into(),
                err,
            })
    }

    /// The client's credentials for a registry host (empty when it has none).
    pub async fn credentials(&self, host: &str) -> Result<(String, String), tonic::Status> {
        let r = AuthClient::new(self.channel.clone())
            .credentials(CredentialsRequest {
                host: host.to_string(),
            })
            .await?
            .into_inner();
        Ok((r.username, r.secret))
    }

    /// A secret's value (`--secret id=…`).
    pub async fn secret(&self, id: &str) -> Result<Vec<u8>, tonic::Status> {
        Ok(SecretsClient::new(self.channel.clone())
            .get_secret(GetSecretRequest {
                id: id.to_string(),
                annotations: Default::default(),
            })
            .await?
            .into_inner()
            .data)
    }

    /// Writes a blob of `size` bytes with digest `digest` (`sha256:…`) into the client's
    /// content store `store`, from `chunks`; a blob the store has is not sent again.
    /// containerd's content protocol: a STAT opens the write, WRITEs carry the data at
    /// their offsets (each answered), a COMMIT checks the size and digest.
    pub async fn write_content(
        &self,
        store: &str,
        digest: &str,
        size: u64,
        mut chunks: Chunks,
    ) -> Result<(), tonic::Status> {
        use crate::content::{content_client::ContentClient, WriteAction, WriteContentRequest};
        let (tx, rx) = mpsc::channel::<WriteContentRequest>(2);
        let refname = format!("berth-{}", digest.replace(':', "-"));
        // the store answers once it has the first request
        let _ = tx
            .send(WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: refname.clone(),
                total: size as i64,
                expected: digest.to_string(),
                ..Default::default()
            })
            .await;
        let req = store_request(store, tokio_stream::wrappers::ReceiverStream::new(rx))?;
        let exists = |s: &tonic::Status| s.code() == tonic::Code::AlreadyExists;
        let mut inbound = match ContentClient::new(self.channel.clone()).write(req).await {
            Ok(r) => r.into_inner(),
            Err(s) if exists(&s) => return Ok(()),
            Err(s) => return Err(s),
        };
        let answer = |r: Result<Option<crate::content::WriteContentResponse>, tonic::Status>| {
            r.and_then(|m| {
                m.ok_or_else(|| tonic::Status::aborted("the content store ended the write"))
            })
        };
        match inbound.message().await {
            Err(s) if exists(&s) => return Ok(()),
            r => answer(r)?,
        };
        let gone = || tonic::Status::aborted("the content store ended the write");
        // from the start (a write left half done by an earlier try is truncated)
        let mut offset: i64 = 0;
        while let Some(chunk) = chunks.recv().await {
            let data =
                chunk.map_err(|e| tonic::Status::internal(format!("reading {digest}: {e}")))?;
            let n = data.len() as i64;
            tx.send(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset,
                data,
                ..Default::default()
            })
            .await
            .map_err(|_| gone())?;
            let r = answer(inbound.message().await)?;
            offset += n;
            if r.offset != offset {
                return Err(tonic::Status::data_loss(format!(
                    "the content store is at {} of {digest}, not {offset}",
                    r.offset
                )));
            }
        }
        if offset as u64 != size {
            return Err(tonic::Status::internal(format!(
                "{digest}: {offset} bytes read, {size} expected"
            )));
        }
        tx.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset,
            total: size as i64,
            expected: digest.to_string(),
            ..Default::default()
        })
        .await
        .map_err(|_| gone())?;
        let r = match inbound.message().await {
            Err(s) if exists(&s) => return Ok(()),
            r => answer(r)?,
        };
        if !r.digest.is_empty() && r.digest != digest {
            return Err(tonic::Status::data_loss(format!(
                "the content store committed {} for {digest}",
                r.digest
            )));
        }
        drop(tx);
        while let Ok(Some(_)) = inbound.message().await {}
        Ok(())
    }

    /// Reads the blob `digest` of the client's content store `store`, at most `limit`
    /// bytes (more is an error).
    pub async fn read_content(
        &self,
        store: &str,
        digest: &str,
        limit: u64,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, tonic::Status> {
        use crate::content::{content_client::ContentClient, ReadContentRequest};
        let req = store_request(
            store,
            ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            },
        )?;
        let mut inbound = ContentClient::new(self.channel.clone())
            .read(req)
            .await?
            .into_inner();
        let mut got: u64 = 0;
        while let Some(m) = inbound.message().await? {
            if m.offset as u64 != got {
                return Err(tonic::Status::data_loss(format!(
                    "{digest}: data at {} where {got} was next",
                    m.offset
                )));
            }
            got += m.data.len() as u64;
            if got > limit {
                return Err(tonic::Status::out_of_range(format!(
                    "{digest} is larger than {limit} bytes"
                )));
            }
            sink(&m.data).map_err(|e| tonic::Status::internal(format!("{digest}: {e}")))?;
        }
        Ok(got)
    }

    /// Whether the client answers (its health service).
    pub async fn health(&self) -> Result<(), tonic::Status> {
        HealthClient::new(self.channel.clone())
            .check(HealthCheckRequest::default())
            .await
            .map(|_| ())
    }

    /// Joins one connection to an ssh agent socket with the client's agent `id`.
    pub async fn forward_ssh(
        &self,
        id: &str,
        conn: tokio::net::UnixStream,
    ) -> Result<(), tonic::Status> {
        let (mut rd, mut wr) = conn.into_split();
        let (tx, rx) = mpsc::channel::<BytesMessage>(16);
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert(
            "buildkit.ssh.id",
            id.parse()
                .map_err(|_| tonic::Status::invalid_argument("an ssh id that is not ASCII"))?,
        );
        let up = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx
                            .send(BytesMessage {
                                data: buf[..n].to_vec(),
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut inbound = SshClient::new(self.channel.clone())
            .forward_agent(req)
            .await?
            .into_inner();
        while let Ok(Some(m)) = inbound.message().await {
            if wr.write_all(&m.data).await.is_err() {
                break;
            }
        }
        up.abort();
        Ok(())
    }
}
