//! `POST /build` (the classic builder's JSON stream; `version=2` is BuildKit's) and
//! `POST /build/prune`.

use super::Ctx;
use crate::build;
use crate::error::EngineError;
use crate::http::{body_reader, ok_json, stream_when_started, Resp};
use crate::Daemon;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

/// `POST /build`.
pub async fn build(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    if ctx.query.get("version") == Some("2") {
        return crate::buildkit::build_v2::build(d, ctx).await;
    }
    let opts = build::options::Options::parse(&ctx.query, &ctx.headers)?;
    let (tx, rx) = mpsc::channel(16);
    let (early_tx, early) = tokio::sync::oneshot::channel();
    let out = build::Out::json(tx, opts.quiet);
    let reader = body_reader(ctx.body);
    let d = d.clone();
    tokio::spawn(async move {
        let r = build::run(&d, opts, reader, &out).await;
        if let Err(f) = r {
            if !out.started() {
                // nothing written yet: the response itself is the error, as dockerd's
                let _ = early_tx.send(EngineError::invalid(f.message));
            } else {
                let mut detail = json!({"message": f.message});
                if let Some(c) = f.code {
                    detail["code"] = Value::from(c);
                }
                out.raw(&json!({"errorDetail": detail, "error": f.message}))
                    .await;
            }
        }
        crate::release_memory();
    });
    stream_when_started("application/json", rx, early).await
}

/// `POST /build/prune`: forgets cached steps and removes the images only the cache held
/// (untagged, unused by containers and by other images); reports the space reclaimed.
/// Every record goes, with or without `all`: a record is only a key to an image, and the
/// images the rest of the store needs stay either way.
pub async fn prune(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    ctx.query.bool("all")?;
    let d2 = d.clone();
    let (ids, reclaimed) = tokio::task::spawn_blocking(move || build::prune_cache(&d2))
        .await
        .map_err(|e| EngineError::internal(e.to_string()))??;
    Ok(ok_json(
        &json!({"CachesDeleted": ids, "SpaceReclaimed": reclaimed}),
    ))
}
