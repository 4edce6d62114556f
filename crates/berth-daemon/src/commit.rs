//! Committing a container: a new image of its image plus its filesystem changes.

use crate::error::EngineError;
use crate::model::Ctr;
use crate::Daemon;
use std::sync::Arc;

/// A new image of `parent` plus the container's filesystem changes as one layer.
pub async fn commit_changes(
    d: &Arc<Daemon>,
    c: &Ctr,
    parent: Option<berth_image::digest::Digest>,
    opts: berth_image::CommitOptions,
) -> Result<berth_image::digest::Digest, EngineError> {
    let layers = match &parent {
        Some(p) => d.images.layer_dirs(p)?,
        None => Vec::new(),
    };
    let dir = d.containers.dir(c);
    let driver = d.images.driver();
    let ids = d.containers.remap_of(c).map(|r| r.ids.clone());
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || -> Result<_, EngineError> {
        let (r, w) = std::io::pipe().map_err(|e| EngineError::internal(e.to_string()))?;
        let writer = std::thread::spawn(move || match driver {
            berth_image::snapshot::Driver::Overlay => {
                crate::changes::layer_tar(&dir.join("upper"), None, ids.as_ref(), w)
            }
            berth_image::snapshot::Driver::Copy => {
                let rootfs = dir.join("rootfs");
                // no layers below (`FROM scratch`): an empty path, which has nothing
                let base = layers.last().cloned().unwrap_or_default();
                let list = crate::changes::copy_changes(&rootfs, &base, ids.as_ref())?;
                crate::changes::layer_tar(&rootfs, Some(&list), ids.as_ref(), w)
            }
        });
        let mut r = r;
        let id = d2.images.child(parent.as_ref(), Some(&mut r), opts);
        drop(r);
        let written = writer.join();
        let id = id?;
        match written {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => Err(EngineError::internal(format!(
                "reading the container's changes: {e}"
            ))),
            Err(_) => Err(EngineError::internal(
                "reading the container's changes failed",
            )),
        }
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?
}
