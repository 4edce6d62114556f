//! The HTTP client for the Docker Engine API: unix socket or TCP (TLS with client
//! certificates when asked), API version negotiated with `/_ping` once per run.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, OnceCell};

pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
pub const CLIENT_API_VERSION: (u32, u32) = (1, 50);

/// A request body: nothing, a buffer, or chunks from a channel (an uploaded file).
pub enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl HttpBody for ReqBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

/// An error the daemon answered with.
#[derive(Debug)]
pub struct DaemonError {
    pub status: StatusCode,
    pub message: String,
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.message)
    }
}
impl std::error::Error for DaemonError {}

#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub tls: bool,
    pub verify: bool,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp {
        addr: String,
        host: String,
    },
    /// `ssh` with these arguments runs `berth system dial-stdio` on the remote host
    Ssh(Vec<String>),
}

/// A connection to the daemon, whatever carries it.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
pub struct Client {
    pub host: String,
    /// the context the host came from (`default` when none did)
    pub context: String,
    target: Target,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    version: OnceCell<String>,
    /// an idle connection kept for the next request (ssh: each connection is a login)
    idle: Arc<std::sync::Mutex<Option<hyper::client::conn::http1::SendRequest<ReqBody>>>>,
}

/// The arguments of `ssh` for `ssh://[user@]host[:port][/socket]`: the remote end runs
/// `berth system dial-stdio` (or `docker`'s, on a host without berth) against the
/// socket in the path, else its default.
pub fn ssh_args(url: &str) -> Result<Vec<String>> {
    let rest = url
        .strip_prefix("ssh://")
        .ok_or_else(|| anyhow!("not an ssh URL: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| anyhow!("ssh host connection is not valid: {url}"))?;
            (h, after.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    if host.is_empty() || host.starts_with('-') {
        bail!("ssh host connection is not valid: no host specified in {url:?}");
    }
    if let Some(p) = port {
        p.parse::<u16>()
            .map_err(|_| anyhow!("ssh host connection is not valid: bad port in {url:?}"))?;
    }
    let mut args = vec![
        "-o".to_string(),
        "ConnectTimeout=30".to_string(),
        "-T".to_string(),
    ];
    if let Some(u) = user {
        args.extend(["-l".to_string(), u.to_string()]);
    }
    if let Some(p) = port {
        args.extend(["-p".to_string(), p.to_string()]);
    }
    args.extend(["--".to_string(), host.to_string()]);
    let host_flag = if path.trim_matches('/').is_empty() {
        String::new()
    } else {
        format!(" {}", shell_quote(&format!("--host=unix://{path}")))
    };
    // one line for the remote user's shell
    args.push(format!(
        "if command -v berth >/dev/null 2>&1; then exec berth{host_flag} system dial-stdio; \
         else exec docker{host_flag} system dial-stdio; fi"
    ));
    Ok(args)
}

/// `s` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `ssh` running the remote end of a connection: its stdout is what the daemon sends,
/// its stdin what it receives. Shutting the write side closes its stdin.
struct SshIo {
    child: tokio::process::Child,
    out: tokio::process::ChildStdout,
    inp: Option<tokio::process::ChildStdin>,
}

impl SshIo {
    fn spawn(args: &[String]) -> std::io::Result<SshIo> {
        let mut child = tokio::process::Command::new("ssh")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let out = child.stdout.take().expect("piped");
        let inp = child.stdin.take();
        Ok(SshIo { child, out, inp })
    }
}

impl tokio::io::AsyncRead for SshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().out).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for SshIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskCx<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().inp {
            Some(w) => Pin::new(w).poll_write(cx, buf),
            None => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().inp {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskCx<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().inp = None;
        Poll::Ready(Ok(()))
    }
}

impl Drop for SshIo {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn certs(p: &PathBuf) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    Ok(rustls_pemfile::certs(&mut std::io::BufReader::new(f)).collect::<Result<Vec<_>, _>>()?)
}

impl Client {
    pub fn new(host: &str, tls: &TlsOptions) -> Result<Self> {
        let target = if let Some(p) = host.strip_prefix("unix://") {
            Target::Unix(PathBuf::from(p))
        } else if let Some(a) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("https://"))
            .or_else(|| host.strip_prefix("http://"))
        {
            let a = a.trim_end_matches('/');
            let addr = if a.contains(':') {
                a.to_string()
            } else {
                format!("{a}:{}", if tls.tls || tls.verify { 2376 } else { 2375 })
            };
            let hostname = addr
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .unwrap_or_default();
            Target::Tcp {
                addr,
                host: hostname,
            }
        } else if host.starts_with("ssh://") {
            Target::Ssh(ssh_args(host)?)
        } else {
            bail!(
                "unable to parse host {host:?}: use unix:///path, tcp://host:port or ssh://[user@]host[:port][/path]"
            );
        };
        let tls_conf = match (&target, tls.tls || tls.verify) {
            (Target::Tcp { host: h, .. }, true) => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let b = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?;
                let mut roots = rustls::RootCertStore::empty();
                if let Some(ca) = &tls.ca {
                    for c in certs(ca)? {
                        roots.add(c)?;
                    }
                }
                let b = b.with_root_certificates(roots);
                let cfg = match (&tls.cert, &tls.key) {
                    (Some(c), Some(k)) => {
                        let kf = std::fs::File::open(k)
                            .with_context(|| format!("opening {}", k.display()))?;
                        let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(kf))?
                            .ok_or_else(|| anyhow!("no private key in {}", k.display()))?;
                        b.with_client_auth_cert(certs(c)?, key)?
                    }
                    _ => b.with_no_client_auth(),
                };
                let name = rustls::pki_types::ServerName::try_from(h.clone())?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
            }
            _ => None,
        };
        Ok(Client {
            host: host.to_string(),
            context: "default".to_string(),
            target,
            tls: tls_conf,
            version: OnceCell::new(),
            idle: Default::default(),
        })
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "Cannot connect to the berth daemon at {}. Is the berth daemon running? ({e})",
            self.host
        )
    }

    /// A new connection to the daemon.
    pub async fn connect(&self) -> Result<Box<dyn Io>> {
        let io: Box<dyn Io> = match &self.target {
            Target::Unix(p) => Box::new(
                UnixStream::connect(p)
                    .await
                    .map_err(|e| self.unreachable(e))?,
            ),
            Target::Tcp { addr, .. } => {
                let s = TcpStream::connect(addr)
                    .await
                    .map_err(|e| self.unreachable(e))?;
                let _ = s.set_nodelay(true);
                match &self.tls {
                    None => Box::new(s),
                    Some((conn, name)) => Box::new(
                        conn.connect(name.clone(), s)
                            .await
                            .map_err(|e| self.unreachable(e))?,
                    ),
                }
            }
            Target::Ssh(args) => Box::new(SshIo::spawn(args).map_err(|e| {
                anyhow!(
                    "Cannot connect to the berth daemon at {}: ssh: {e}",
                    self.host
                )
            })?),
        };
        Ok(io)
    }

    async fn send(&self, req: Request<ReqBody>) -> Result<Response<Incoming>> {
        // over ssh an idle connection is used again, unless the request takes the
        // connection over (attach, exec, session)
        let reuse =
            matches!(self.target, Target::Ssh(_)) && !req.headers().contains_key(header::UPGRADE);
        if reuse {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(mut sender) = idle {
                let ready = std::future::poll_fn(|cx| Poll::Ready(sender.poll_ready(cx))).await;
                if let Poll::Ready(Ok(())) = ready {
                    let resp = sender
                        .send_request(req)
                        .await
                        .map_err(|e| self.unreachable(e));
                    *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
                    return resp;
                }
            }
        }
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.unreachable(e));
        if reuse {
            *self.idle.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        }
        resp
    }

    /// The API version to speak: ours, or the daemon's if older.
    async fn version(&self) -> Result<String> {
        let v = self
            .version
            .get_or_try_init(|| async {
                let req = Request::builder()
                    .method(Method::GET)
                    .uri("/_ping")
                    .header(header::HOST, "api")
                    .body(ReqBody::Empty)?;
                let resp = self.send(req).await?;
                let (parts, body) = resp.into_parts();
                // read to its end, so that the connection can carry the next request
                let _ = body.collect().await;
                let server = parts
                    .headers
                    .get("API-Version")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (a, b) = v.split_once('.')?;
                        Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
                    });
                let v = match server {
                    Some(s) if s < CLIENT_API_VERSION => s,
                    _ => CLIENT_API_VERSION,
                };
                Ok::<_, anyhow::Error>(format!("{}.{}", v.0, v.1))
            })
            .await?;
        Ok(v.clone())
    }

    /// Sends a request to `/vX.Y{path}`; a non-2xx answer becomes a [`DaemonError`].
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        headers: &[(&str, String)],
    ) -> Result<Response<Incoming>> {
        let v = self.version().await?;
        let mut b = Request::builder()
            .method(method)
            .uri(format!("/v{v}{path}"))
            .header(header::HOST, "api");
        for (k, val) in headers {
            b = b.header(*k, val);
        }
        let resp = self.send(b.body(body)?).await?;
        let status = resp.status();
        if status.is_success()
            || status == StatusCode::NOT_MODIFIED
            || status == StatusCode::SWITCHING_PROTOCOLS
        {
            return Ok(resp);
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(DaemonError { status, message }.into())
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self.request(Method::GET, path, ReqBody::Empty, &[]).await?;
        read_json(resp).await
    }

    pub async fn send_json(&self, method: Method, path: &str) -> Result<Value> {
        let resp = self.request(method, path, ReqBody::Empty, &[]).await?;
        read_json(resp).await
    }

    pub async fn ping(&self) -> Result<Response<Incoming>> {
        let req = Request::builder()
            .method(Method::GET)
            .uri("/_ping")
            .header(header::HOST, "api")
            .body(ReqBody::Empty)?;
        self.send(req).await
    }
}

pub async fn read_json(resp: Response<Incoming>) -> Result<Value> {
    let bytes = resp.into_body().collect().await?.to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).context("decoding the daemon's answer")
}

/// Reads a JSON-lines progress stream, calling `f` for each message.
pub async fn each_json_line(
    resp: Response<Incoming>,
    mut f: impl FnMut(&Value) -> Result<()>,
) -> Result<()> {
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(d) = frame.into_data() {
            buf.extend_from_slice(&d);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let t = String::from_utf8_lossy(&line);
                let t = t.trim();
                if !t.is_empty() {
                    let v: Value = serde_json::from_str(t)
                        .with_context(|| format!("decoding stream line {t:?}"))?;
                    f(&v)?;
                }
            }
        }
    }
    let t = String::from_utf8_lossy(&buf);
    if !t.trim().is_empty() {
        let v: Value = serde_json::from_str(t.trim())?;
        f(&v)?;
    }
    Ok(())
}

/// Streams a file (or stdin for `-`) as a request body.
pub fn file_body(path: Option<&str>) -> Result<ReqBody> {
    use std::io::Read;
    let mut src: Box<dyn Read + Send> = match path {
        None | Some("-") => Box::new(std::io::stdin()),
        Some(p) => Box::new(std::fs::File::open(p).with_context(|| format!("open {p}"))?),
    };
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(ReqBody::Channel(rx))
}

/// A request body written by `produce` on a thread of its own (a tar being built).
pub fn writer_body(
    produce: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send + 'static,
) -> ReqBody {
    struct Sink(mpsc::Sender<Bytes>, Vec<u8>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.extend_from_slice(b);
            if self.1.len() >= 256 << 10 {
                self.flush()?;
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if !self.1.is_empty() {
                let chunk = Bytes::from(std::mem::take(&mut self.1));
                self.0
                    .blocking_send(chunk)
                    .map_err(|_| std::io::Error::other("the request was dropped"))?;
            }
            Ok(())
        }
    }
    let (tx, rx) = mpsc::channel(8);
    std::thread::spawn(move || {
        let mut sink = Sink(tx, Vec::new());
        if let Err(e) = produce(&mut sink).and_then(|()| std::io::Write::flush(&mut sink)) {
            eprintln!("berth: {e}");
        }
    });
    ReqBody::Channel(rx)
}

/// A response body as a blocking reader, for code that reads (tar extraction) on a
/// blocking thread.
pub fn blocking_reader(resp: Response<Incoming>) -> impl std::io::Read + Send + 'static {
    struct ChanRead(mpsc::Receiver<Bytes>, Bytes);
    impl std::io::Read for ChanRead {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            while self.1.is_empty() {
                match self.0.blocking_recv() {
                    Some(b) => self.1 = b,
                    None => return Ok(0),
                }
            }
            let n = buf.len().min(self.1.len());
            buf[..n].copy_from_slice(&self.1[..n]);
            self.1 = self.1.slice(n..);
            Ok(n)
        }
    }
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut body = resp.into_body();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if tx.send(data).await.is_err() {
                    return;
                }
            }
        }
    });
    ChanRead(rx, Bytes::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_become_ssh_arguments() {
        let a = ssh_args("ssh://me@example.test:2222/run/berth/berth.sock").unwrap();
        assert_eq!(
            a[..9],
            [
                "-o",
                "ConnectTimeout=30",
                "-T",
                "-l",
                "me",
                "-p",
                "2222",
                "--",
                "example.test"
            ]
        );
        assert!(a[9].contains("exec berth '--host=unix:///run/berth/berth.sock' system dial-stdio"));
        assert!(
            a[9].contains("exec docker '--host=unix:///run/berth/berth.sock' system dial-stdio")
        );
        let a = ssh_args("ssh://host").unwrap();
        assert_eq!(a[3..5], ["--", "host"]);
        assert!(a[5].contains("exec berth system dial-stdio"));
        let a = ssh_args("ssh://[::1]:22").unwrap();
        assert_eq!(a[3..7], ["-p", "22", "--", "::1"]);
        assert!(ssh_args("ssh://").is_err());
        assert!(ssh_args("ssh://-oProxyCommand=x").is_err());
        assert!(ssh_args("ssh://h:port").is_err());
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
