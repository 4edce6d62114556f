//! Listeners: unix sockets (mode 0660), TCP with TLS (client certificates required with
//! --tlsverify), or plain TCP when explicitly allowed. Every connection is served by
//! hyper's HTTP/1.1 server with upgrades enabled (attach and exec hijack the stream).

use crate::config::Config;
use crate::routes;
use crate::Daemon;
use anyhow::{bail, Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener, Option<tokio_rustls::TlsAcceptor>),
}

fn load_certs(p: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(f))
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("reading certificates from {}", p.display()))?;
    if certs.is_empty() {
        bail!("no certificate found in {}", p.display());
    }
    Ok(certs)
}

fn tls_acceptor(cfg: &Config) -> Result<tokio_rustls::TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (Some(cert), Some(key)) = (&cfg.tlscert, &cfg.tlskey) else {
        bail!("TLS needs --tlscert and --tlskey");
    };
    let certs = load_certs(cert)?;
    let kf = std::fs::File::open(key).with_context(|| format!("opening {}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(kf))
        .context("reading the TLS key")?
        .context("no private key found in --tlskey")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let server = if cfg.tlsverify {
        let ca = cfg
            .tlscacert
            .as_ref()
            .context("--tlsverify needs --tlscacert")?;
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(ca)? {
            roots.add(c).context("adding CA certificate")?;
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("building the client certificate verifier")?;
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?
    } else {
        builder.with_no_client_auth().with_single_cert(certs, key)?
    };
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// Binds every `-H` address.
pub async fn bind(cfg: &Config) -> Result<Vec<Listener>> {
    let mut out = Vec::new();
    for h in &cfg.hosts {
        if let Some(p) = h.strip_prefix("unix://") {
            let path = PathBuf::from(if p.is_empty() {
                "/run/berth/berth.sock"
            } else {
                p
            });
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("removing stale socket {}", path.display()))
                }
            }
            let l = UnixListener::bind(&path)
                .with_context(|| format!("listening on {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
            if let Some(gid) = cfg.socket_gid {
                std::os::unix::fs::chown(&path, Some(0), Some(gid))
                    .with_context(|| format!("giving {} to group {gid}", path.display()))?;
            }
            tracing::info!(socket = %path.display(), "API listening");
            out.push(Listener::Unix(l, path));
        } else if let Some(addr) = h.strip_prefix("tcp://") {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on {addr}"))?;
            let tls = if cfg.tls {
                Some(tls_acceptor(cfg)?)
            } else {
                tracing::warn!(address = %addr, "API listening on TCP without TLS: anyone who can connect has root on this host");
                None
            };
            tracing::info!(address = %addr, tls = cfg.tls, verify = cfg.tlsverify, "API listening");
            out.push(Listener::Tcp(l, tls));
        } else {
            bail!("unsupported host {h}");
        }
    }
    Ok(out)
}

/// How long a connection may take to send a request's header (dockerd allows 5
/// minutes for the header; hyper's default is 30 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves once the daemon is stopping.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

async fn serve_conn<IO>(d: Arc<Daemon>, io: IO, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let d = d.clone();
        async move { Ok::<_, std::convert::Infallible>(routes::handle(d, req).await) }
    });
    // a client has HEADER_TIMEOUT to send a request's header, whether the connection is
    // new or idle after an answer: half-sent requests and idle connections do not stay
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

/// Accepts on `l` until `stop` turns true.
pub async fn accept_loop(d: Arc<Daemon>, l: Listener, mut stop: watch::Receiver<bool>) {
    loop {
        match &l {
            Listener::Unix(ul, _) => {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    r = ul.accept() => match r {
                        Ok((s, _)) => { tokio::spawn(serve_conn(d.clone(), s, stop.clone())); }
                        Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; }
                    }
                }
            }
            Listener::Tcp(tl, tls) => {
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    r = tl.accept() => match r {
                        Ok((s, peer)) => {
                            let _ = s.set_nodelay(true);
                            match tls.clone() {
                                None => { tokio::spawn(serve_conn(d.clone(), s, stop.clone())); }
                                Some(acc) => {
                                    let d = d.clone();
                                    let stop = stop.clone();
                                    tokio::spawn(async move {
                                        match tokio::time::timeout(Duration::from_secs(10), acc.accept(s)).await {
                                            Ok(Ok(t)) => serve_conn(d, t, stop).await,
                                            Ok(Err(e)) => tracing::info!(peer = %peer, error = %e, "TLS handshake refused"),
                                            Err(_) => tracing::info!(peer = %peer, "TLS handshake timed out"),
                                        }
                                    });
                                }
                            }
                        }
                        Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; }
                    }
                }
            }
        }
    }
    if let Listener::Unix(_, p) = &l {
        let _ = std::fs::remove_file(p);
    }
}
