//! fsutil sends one small HTTP/2 DATA frame per entry; h2 ends a connection on which
//! many small frames wait unread. A listing of many entries must cross whatever the pace
//! of the side that handles it: `fsutil::pump` reads it as it comes.

#![allow(clippy::unwrap_used)]

use berth_buildkit::filesync::file_sync_client::FileSyncClient;
use berth_buildkit::filesync::file_sync_server::{FileSync, FileSyncServer};
use berth_buildkit::{conn, fsutil, Packet, PacketType, Stat};
use std::pin::Pin;
use std::time::Duration;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

const ENTRIES: usize = 50_000;

struct Lister;

#[tonic::async_trait]
impl FileSync for Lister {
    type DiffCopyStream = Pin<Box<dyn Stream<Item = Result<Packet, Status>> + Send>>;
    async fn diff_copy(
        &self,
        _req: Request<Streaming<Packet>>,
    ) -> Result<Response<Self::DiffCopyStream>, Status> {
        // one message, and so one DATA frame, at a time, as Go's gRPC writes them
        let packets = futures_util::stream::unfold(0usize, |i| async move {
            if i == ENTRIES {
                return None;
            }
            tokio::task::yield_now().await;
            Some((entry(i), i + 1))
        });
        Ok(Response::new(Box::pin(packets)))
    }
}

fn entry(i: usize) -> Result<Packet, Status> {
    Ok(Packet {
        r#type: PacketType::PacketStat as i32,
        stat: Some(Stat {
            path: format!("many/f{i:05}"),
            mode: 0o644,
            size: 10,
            ..Default::default()
        }),
        ..Default::default()
    })
}

async fn connected() -> tonic::transport::Channel {
    let (a, b) = tokio::io::duplex(1 << 16);
    let routes = tonic::service::Routes::new(FileSyncServer::new(Lister));
    tokio::spawn(conn::serve(a, routes));
    conn::channel(b).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_listing_crosses_to_a_slow_receiver() {
    let channel = connected().await;
    // our side of the call stays open while we read
    let (_keep, out) = tokio::sync::mpsc::unbounded_channel::<Packet>();
    let resp = FileSyncClient::new(channel)
        .diff_copy(tokio_stream::wrappers::UnboundedReceiverStream::new(out))
        .await
        .unwrap();
    let (mut rx, _pump) = fsutil::pump(resp.into_inner());
    // the handling side is busy while the whole listing arrives
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut n = 0;
    while let Some(p) = rx.recv().await {
        let p = p.unwrap_or_else(|e| panic!("after {n} packets: {e}"));
        assert_eq!(p.stat.unwrap().path, format!("many/f{n:05}"));
        n += 1;
    }
    assert_eq!(n, ENTRIES);
}
