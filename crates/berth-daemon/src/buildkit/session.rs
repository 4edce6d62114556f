//! The sessions BuildKit clients open on `/session`: each is a gRPC channel over the
//! client's upgraded connection, found by its ID when a `Solve` names it. A session
//! stays until its client stops answering its health checks (it closed the connection).

use berth_buildkit::session::SessionClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often a session's health is checked.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

pub struct Session {
    pub id: String,
    pub name: String,
    /// what the client's local directories are cached under (`--build-context`s and the
    /// context of the same project share it between builds)
    pub shared_key: String,
    /// the gRPC methods the client serves
    pub methods: Vec<String>,
    pub client: SessionClient,
    gone: watch::Sender<bool>,
}

impl Session {
    pub fn serves(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }

    /// Waits until the client has gone away.
    pub async fn gone(&self) {
        let mut rx = self.gone.subscribe();
        let _ = rx.wait_for(|g| *g).await;
    }
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    changed: watch::Sender<u64>,
}

impl Sessions {
    /// Keeps a client's session until it stops answering.
    pub async fn serve(
        self: &Arc<Self>,
        id: String,
        name: String,
        shared_key: String,
        methods: Vec<String>,
        channel: tonic::transport::Channel,
    ) {
        let s = Arc::new(Session {
            id: id.clone(),
            name,
            shared_key,
            methods,
            client: SessionClient::new(channel),
            gone: watch::Sender::new(false),
        });
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), s.clone());
        self.changed.send_modify(|n| *n += 1);
        tracing::debug!(session = %id, methods = ?s.methods, "buildkit session opened");
        loop {
            tokio::time::sleep(HEALTH_EVERY).await;
            let ok = tokio::time::timeout(HEALTH_EVERY * 5, s.client.health())
                .await
                .is_ok_and(|r| r.is_ok());
            if !ok {
                break;
            }
        }
        s.gone.send_replace(true);
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&id).is_some_and(|x| Arc::ptr_eq(x, &s)) {
            map.remove(&id);
        }
        tracing::debug!(session = %id, "buildkit session closed");
    }

    /// The session `id`, waiting up to `wait` for its client to open it (clients open it
    /// beside the call that names it).
    pub async fn get(&self, id: &str, wait: Duration) -> Option<Arc<Session>> {
        super::wait_for_entry(&self.changed, &self.map, id, wait).await
    }
}
