//! gRPC over one connection that is already open. A BuildKit client reaches the daemon
//! with two HTTP/1.1 requests it upgrades to `h2c`: on `/grpc` the daemon then serves
//! HTTP/2 (it is the gRPC server of the control API), on `/session` it speaks HTTP/2 as
//! the client (the session's services run in the client). Neither connection is ever
//! dialled again: when it closes, its server or channel is done.

use std::sync::{Arc, Mutex};

/// Serves `routes` (the gRPC services) over HTTP/2 on `io` until the peer closes it.
pub async fn serve<I>(io: I, routes: tonic::service::Routes) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let svc = hyper_util::service::TowerToHyperService::new(routes);
    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await
}

/// What the session may send on one stream before we read it.
const STREAM_WINDOW: u32 = 1 << 20;

/// What it may send on all streams. h2 ends a connection when the small DATA frames
/// waiting unread cost more than half of this in framing overhead (`ENHANCE_YOUR_CALM`),
/// and fsutil sends a frame per entry: a stream window of frames of 11 bytes (a file's
/// last packet) costs 23 MiB, so half of this window covers that on a stream or two.
/// What can wait unread stays bounded by the stream window.
const CONNECTION_WINDOW: u32 = 64 << 20;

/// A gRPC channel whose one HTTP/2 connection is `io`. A second connection attempt
/// (after `io` closed) fails.
pub async fn channel<I>(io: I) -> Result<tonic::transport::Channel, tonic::transport::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let slot = Arc::new(Mutex::new(Some(io)));
    let connector = tower::service_fn(move |_: http::Uri| {
        let io = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        async move {
            io.map(hyper_util::rt::TokioIo::new).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "the session's connection is closed",
                )
            })
        }
    });
    tonic::transport::Endpoint::from_static("http://buildkit.session")
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .connect_with_connector(connector)
        .await
}
