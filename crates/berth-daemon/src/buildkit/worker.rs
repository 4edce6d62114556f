//! The one BuildKit worker this daemon is, as clients are told of it (`buildx ls`,
//! `ListWorkers`), and the BuildKit version it answers as.

use crate::Daemon;
use berth_buildkit::control::*;
use std::collections::HashMap;

/// The BuildKit version berthd's builder answers for: the API level of its Dockerfile
/// frontend and control API.
pub const BUILDKIT_VERSION: &str = "v0.23.0";

/// The one worker: this daemon, building for its own platform.
pub fn worker(d: &Daemon) -> WorkerRecord {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let labels = HashMap::from([
        (
            "org.mobyproject.buildkit.worker.executor".to_string(),
            "oci".to_string(),
        ),
        ("org.mobyproject.buildkit.worker.hostname".to_string(), host),
        (
            "org.mobyproject.buildkit.worker.snapshotter".to_string(),
            d.images.driver().name().to_string(),
        ),
    ]);
    WorkerRecord {
        id: d.engine_id.clone(),
        labels,
        platforms: vec![Platform {
            architecture: berth_image::config::host_arch().to_string(),
            os: "linux".into(),
            ..Default::default()
        }],
        gc_policy: Vec::new(),
        buildkit_version: Some(version()),
    }
}

pub fn version() -> BuildkitVersion {
    BuildkitVersion {
        package: "github.com/moby/buildkit".into(),
        version: BUILDKIT_VERSION.into(),
        revision: format!("berth-{}", env!("CARGO_PKG_VERSION")),
    }
}
