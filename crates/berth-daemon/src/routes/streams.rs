//! The raw streams of attach and exec: the 101 answer that hijacks the connection,
//! the splice of a client's connection with a shim's, and the detach keys' scanner.

use crate::error::EngineError;
use crate::http::Resp;
use http::{header, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The 101 answer that turns the connection into the container's streams.
pub fn upgraded(tty: bool) -> Resp {
    let ctype = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .header(header::CONTENT_TYPE, ctype)
        .body(crate::http::Body::empty())
        .unwrap_or_else(|_| Response::new(crate::http::Body::empty()))
}

/// Joins a hijacked client connection and a shim's attach connection: output to the
/// client until the shim closes it, the client's input to the shim (when `stdin`); at
/// the end of the client's input, with `stdin_once` (the shim was attached with
/// `once`), the shim connection is half-closed, which closes the process's stdin after
/// everything before it; `before_close` runs before the client's side is shut.
/// With `detach`, typing the detach keys ends the session (true is returned) and
/// leaves the process running.
pub async fn splice<C, G>(
    client: C,
    shim: tokio::net::UnixStream,
    stdin: bool,
    stdin_once: bool,
    mut detach: Option<berth_proto::detach::Scanner>,
    before_close: G,
) -> bool
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    G: std::future::Future<Output = ()>,
{
    let (mut sr, mut sw) = shim.into_split();
    let (mut cr, mut cw) = tokio::io::split(client);
    let detached = {
        let to_client = async {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
            before_close.await;
            let _ = cw.shutdown().await;
        };
        let from_client = async {
            let mut buf = vec![0u8; 8192];
            loop {
                match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !stdin {
                            continue;
                        }
                        let (data, detached) = match detach.as_mut().map(|d| d.feed(&buf[..n])) {
                            None => (buf[..n].to_vec(), false),
                            Some(berth_proto::detach::Scan::Pass(d)) => (d, false),
                            Some(berth_proto::detach::Scan::Detach(d)) => (d, true),
                        };
                        if sw.write_all(&data).await.is_err() {
                            break;
                        }
                        if detached {
                            return true;
                        }
                    }
                }
            }
            if stdin_once {
                let _ = sw.shutdown().await;
            }
            std::future::pending::<bool>().await
        };
        tokio::select! {
            _ = to_client => false,
            d = from_client => d,
        }
    };
    if !detached {
        // Input the process no longer takes may still be on its way: it is read (up to
        // the client's close, which follows the end of output it has seen) so that
        // closing with unread input does not reset the connection under the client
        // before it has read everything.
        let mut buf = vec![0u8; 8192];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while matches!(cr.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    detached
}

/// The detach-key scanner for a session: only with a tty and stdin, as Docker does.
pub fn detach_scanner(
    keys: Option<&str>,
    tty: bool,
    stdin: bool,
) -> Result<Option<berth_proto::detach::Scanner>, EngineError> {
    if !(tty && stdin) {
        return Ok(None);
    }
    let keys = match keys.filter(|k| !k.is_empty()) {
        Some(k) => berth_proto::detach::parse(k).map_err(EngineError::invalid)?,
        None => berth_proto::detach::DEFAULT.to_vec(),
    };
    Ok(Some(berth_proto::detach::Scanner::new(keys)))
}
