//! BuildKit's API in berthd, so that the docker CLI's buildx, Compose v2 and other
//! BuildKit clients build with the daemon itself (their `docker` driver) instead of
//! starting a BuildKit container.
//!
//! A client opens two upgraded connections: `/session` (berthd becomes the gRPC client
//! of the services the client exposes: its directories, credentials, secrets, ssh
//! agent) and `/grpc` (berthd serves `moby.buildkit.v1.Control`). `Solve` with the
//! `dockerfile.v0` frontend runs the Dockerfile on the same engine as `POST /build`
//! (`frontend`), reporting vertexes to `Status` (`progress`); the synced context is kept
//! between builds (`locals`). See ARCHITECTURE.md.

pub mod build_v2;
pub mod cache;
mod control;
mod frontend;
mod gateway;
mod history;
pub mod locals;
pub mod progress;
pub mod session;
mod worker;

use berth_registry::auth::AuthConfig;
use progress::Progress;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub use control::routes;

/// How long a finished build's progress stays for a `Status` call that comes late.
const KEEP_FINISHED: Duration = Duration::from_secs(60);

/// The BuildKit side of the daemon.
pub struct BuildKit {
    pub sessions: Arc<session::Sessions>,
    builds: Mutex<HashMap<String, Arc<Progress>>>,
    changed: watch::Sender<u64>,
    /// builds whose function runs in the client, by reference
    gateways: Mutex<HashMap<String, Arc<gateway::Gateway>>>,
    pub locals: locals::Locals,
    pub history: history::History,
    /// `POST /build?version=2` builds by the client's build id (what
    /// `/build/cancel?id=` names)
    named: Mutex<HashMap<String, Arc<Progress>>>,
    /// contexts uploaded for `remote=upload-request` builds, by build ID: the file,
    /// once it has arrived (or why it did not)
    uploads: Mutex<HashMap<String, UploadSlot>>,
}

/// The entry `key` of `map`, waiting up to `wait` for it to appear (`changed` ticks
/// whenever an entry is added).
pub(crate) async fn wait_for_entry<T: Clone>(
    changed: &watch::Sender<u64>,
    map: &Mutex<HashMap<String, T>>,
    key: &str,
    wait: Duration,
) -> Option<T> {
    let mut rx = changed.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(v) = map.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Some(v.clone());
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return None;
        }
    }
}

/// Where an uploaded context (its file, or why it could not be read) meets its build.
type UploadSlot = tokio::sync::watch::Sender<Option<Result<PathBuf, String>>>;

/// How long an uploaded context waits for its build, and a build for its context.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl BuildKit {
    pub fn open(data_root: &std::path::Path) -> std::io::Result<BuildKit> {
        Ok(BuildKit {
            sessions: Arc::default(),
            builds: Mutex::default(),
            changed: watch::Sender::new(0),
            gateways: Mutex::default(),
            locals: locals::Locals::open(data_root)?,
            history: history::History::default(),
            named: Mutex::default(),
            uploads: Mutex::default(),
        })
    }

    fn register(&self, reference: &str, p: Arc<Progress>) {
        self.builds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(reference.to_string(), p);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The client-run build `reference`, waiting up to `wait` for its `Solve` to start
    /// (the client calls the bridge beside it).
    async fn gateway(&self, reference: &str, wait: Duration) -> Option<Arc<gateway::Gateway>> {
        wait_for_entry(&self.changed, &self.gateways, reference, wait).await
    }

    fn set_gateway(&self, reference: &str, g: Option<Arc<gateway::Gateway>>) {
        let mut m = self.gateways.lock().unwrap_or_else(|p| p.into_inner());
        match g {
            Some(g) => {
                m.insert(reference.to_string(), g);
                drop(m);
                self.changed.send_modify(|n| *n += 1);
            }
            None => {
                m.remove(reference);
            }
        }
    }

    fn upload_slot(&self, id: &str) -> tokio::sync::watch::Sender<Option<Result<PathBuf, String>>> {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| tokio::sync::watch::Sender::new(None))
            .clone()
    }

    /// Hands the context uploaded for build `id` (a file, or why it could not be read)
    /// to the build; removed unless a build takes it within [`UPLOAD_WAIT`].
    pub fn upload_arrived(self: &Arc<Self>, id: &str, file: Result<PathBuf, String>) {
        let path = file.as_ref().ok().cloned();
        self.upload_slot(id).send_replace(Some(file));
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(UPLOAD_WAIT).await;
            me.uploads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            if let Some(p) = path {
                let _ = std::fs::remove_file(p);
            }
        });
    }

    /// The context uploaded for build `id`, waiting for it; the caller owns the file.
    pub async fn uploaded(&self, id: &str) -> Result<PathBuf, String> {
        let mut rx = self.upload_slot(id).subscribe();
        let got = tokio::time::timeout(UPLOAD_WAIT, rx.wait_for(Option::is_some)).await;
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        match got {
            Ok(Ok(v)) => v.clone().unwrap_or_else(|| Err("no context".into())),
            _ => Err(format!(
                "the build context for {id} was not uploaded within {} s",
                UPLOAD_WAIT.as_secs()
            )),
        }
    }

    fn name_build(&self, id: &str, p: Arc<Progress>) {
        self.named
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), p);
    }

    fn forget_build_name(&self, id: &str) {
        self.named
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn named_build(&self, id: &str) -> Option<Arc<Progress>> {
        self.named
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Forgets a finished build after a while.
    fn forget_later(self: &Arc<Self>, reference: String) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(KEEP_FINISHED).await;
            me.builds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&reference);
        });
    }

    /// The build `reference`, waiting up to `wait` for it to start.
    async fn build(&self, reference: &str, wait: Duration) -> Option<Arc<Progress>> {
        wait_for_entry(&self.changed, &self.builds, reference, wait).await
    }
}

/// The gRPC status for an engine error: the one place the engine's errors become
/// BuildKit's codes.
pub fn status_of(e: crate::error::EngineError) -> tonic::Status {
    use crate::error::Kind;
    let code = match e.kind {
        Kind::Invalid => tonic::Code::InvalidArgument,
        Kind::NotFound => tonic::Code::NotFound,
        Kind::Conflict | Kind::NotModified => tonic::Code::FailedPrecondition,
        Kind::Forbidden => tonic::Code::PermissionDenied,
        Kind::Unauthorized => tonic::Code::Unauthenticated,
        Kind::NotImplemented => tonic::Code::Unimplemented,
        Kind::Unavailable => tonic::Code::Unavailable,
        Kind::Internal => tonic::Code::Internal,
    };
    tonic::Status::new(code, e.message)
}

/// A failed RUN as BuildKit words it (`process "…" did not complete successfully: exit
/// code: N`), so clients show what they show with BuildKit.
/// (Clients add `failed to solve: ` themselves.)
pub fn buildkit_words(msg: String) -> String {
    let mut inner = msg.as_str();
    while let Some(rest) = inner.strip_prefix("failed to solve: ") {
        inner = rest;
    }
    if let Some(rest) = inner.strip_prefix("The command '") {
        if let Some((cmd, code)) = rest.rsplit_once("' returned a non-zero code: ") {
            return format!("process \"{cmd}\" did not complete successfully: exit code: {code}");
        }
    }
    inner.to_string()
}

/// Whether a `# syntax=` frontend is the built-in Dockerfile frontend (any version of
/// `docker/dockerfile`, which berthd's frontend stands for).
pub fn builtin_frontend(name: &str) -> bool {
    let n = name.trim();
    let n = n.strip_prefix("docker.io/").unwrap_or(n);
    let repo = n.split(['@', ':']).next().unwrap_or_default();
    matches!(
        repo,
        "" | "dockerfile.v0" | "docker/dockerfile" | "docker/dockerfile-upstream"
    )
}

/// The client's credentials for a registry (`docker.io`'s under Docker Hub's endpoint,
/// as BuildKit asks for them); none when it has none or does not answer.
pub async fn credentials(
    client: &berth_buildkit::session::SessionClient,
    domain: &str,
) -> Option<AuthConfig> {
    let host = if domain == berth_image::reference::DEFAULT_DOMAIN {
        berth_registry::client::HUB_ENDPOINT
    } else {
        domain
    };
    let (user, secret) = tokio::time::timeout(Duration::from_secs(30), client.credentials(host))
        .await
        .ok()?
        .ok()?;
    if secret.is_empty() {
        return None;
    }
    Some(if user.is_empty() {
        // a token, not a password
        AuthConfig {
            identity_token: secret,
            server_address: host.to_string(),
            ..Default::default()
        }
    } else {
        AuthConfig {
            username: user,
            password: secret,
            server_address: host.to_string(),
            ..Default::default()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_frontend_by_its_names() {
        for ok in [
            "docker/dockerfile:1",
            "docker/dockerfile:1.7-labs",
            "docker.io/docker/dockerfile@sha256:ab",
            "dockerfile.v0",
            "",
        ] {
            assert!(builtin_frontend(ok), "{ok}");
        }
        for no in [
            "example.com/my/frontend:1",
            "tonistiigi/dockerfile",
            "gateway.v0",
        ] {
            assert!(!builtin_frontend(no), "{no}");
        }
    }
}
