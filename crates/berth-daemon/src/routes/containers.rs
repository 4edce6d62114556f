//! `/containers/...`. Containers arrive with the runtime; until then the engine holds
//! none, and these answer as Docker does for an engine without containers, so that
//! `docker inspect NAME` and `docker system df` fall through to images correctly.

use super::Ctx;
use crate::error::ApiError;
use crate::http::{ok_json, Resp};
use crate::Daemon;

pub fn list(_d: &Daemon, ctx: &Ctx) -> Result<Resp, ApiError> {
    ctx.query.filters()?.only(&[
        "ancestor",
        "before",
        "expose",
        "exited",
        "health",
        "id",
        "isolation",
        "is-task",
        "label",
        "name",
        "network",
        "publish",
        "since",
        "status",
        "volume",
    ])?;
    Ok(ok_json(&Vec::<()>::new()))
}

pub fn by_name(_d: &Daemon, _ctx: &Ctx, rest: &str) -> Result<Resp, ApiError> {
    let name = rest.split('/').next().unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::not_found("page not found"));
    }
    Err(ApiError::not_found(format!("No such container: {name}")))
}
