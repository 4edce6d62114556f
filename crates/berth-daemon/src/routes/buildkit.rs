//! `/grpc` and `/session`: the two connections a BuildKit client upgrades to HTTP/2
//! (`Upgrade: h2c`). On `/grpc` berthd serves the control API; on `/session` it is the
//! gRPC client of the services the client exposes.

use super::Ctx;
use crate::error::EngineError;
use crate::http::{Body, Resp};
use crate::Daemon;
use berth_buildkit::headers;
use http::{header, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

fn switching() -> Resp {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "h2c")
        .body(Body::empty())
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn upgrade_of(ctx: &mut Ctx) -> Result<hyper::upgrade::OnUpgrade, EngineError> {
    let proto = ctx
        .headers
        .get(header::UPGRADE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    // BuildKit's words (dockerd answers with them)
    if proto.is_empty() {
        return Err(EngineError::invalid(
            "no upgrade proto in request (this endpoint needs Upgrade: h2c)",
        ));
    }
    if !proto.eq_ignore_ascii_case("h2c") {
        return Err(EngineError::invalid(format!(
            "protocol {proto} not supported (this endpoint needs Upgrade: h2c)"
        )));
    }
    ctx.upgrade
        .take()
        .ok_or_else(|| EngineError::invalid("this endpoint needs an upgradable connection"))
}

/// `POST /grpc`: BuildKit's control API on the upgraded connection.
pub fn grpc(d: &Arc<Daemon>, mut ctx: Ctx) -> Result<Resp, EngineError> {
    let up = upgrade_of(&mut ctx)?;
    let d = d.clone();
    tokio::spawn(async move {
        let Ok(io) = up.await else { return };
        let routes = crate::buildkit::routes(d);
        if let Err(e) = berth_buildkit::conn::serve(TokioIo::new(io), routes).await {
            tracing::debug!(error = %e, "buildkit control connection ended");
        }
    });
    Ok(switching())
}

/// `POST /session`: a client's session (its ID, name, shared key and the gRPC methods it
/// serves come as headers).
pub fn session(d: &Arc<Daemon>, mut ctx: Ctx) -> Result<Resp, EngineError> {
    let up = upgrade_of(&mut ctx)?;
    let one = |k: &str| {
        ctx.headers
            .get(k)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let id = one(headers::SESSION_UUID);
    if id.is_empty() {
        return Err(EngineError::invalid(format!(
            "a session needs its ID ({})",
            headers::SESSION_UUID
        )));
    }
    let name = one(headers::SESSION_NAME);
    let shared_key = one(headers::SESSION_SHARED_KEY);
    let methods: Vec<String> = ctx
        .headers
        .get_all(headers::SESSION_METHOD)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    let sessions = d.buildkit.sessions.clone();
    tokio::spawn(async move {
        let Ok(io) = up.await else { return };
        match berth_buildkit::conn::channel(TokioIo::new(io)).await {
            Ok(ch) => sessions.serve(id, name, shared_key, methods, ch).await,
            Err(e) => tracing::warn!(session = %id, error = %e, "opening a buildkit session"),
        }
    });
    Ok(switching())
}
