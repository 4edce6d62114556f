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
        .connect_with_connector(connector)
        .await
}
