//! The API router: strips the optional `/v1.NN` prefix (checking the version against
//! what we serve), then dispatches on method and path. Image names may hold `/`, so
//! `/images/{name}/...` routes match on prefix and suffix rather than path segments.

mod build;
pub mod buildkit;
mod container_io;
pub mod containers;
mod create_types;
pub mod exec;
pub mod files;
pub mod images;
pub mod legacy;
pub mod netjson;
pub mod networks;
pub mod plugins;
pub mod stats;
pub mod streams;
pub mod system;
pub mod volumes;

use crate::error::EngineError;
use crate::http::{error_response, Query, Resp};
use crate::Daemon;
use http::{Method, Request};
use hyper::body::Incoming;
use std::sync::Arc;

pub const API_VERSION: &str = "1.50";

pub use crate::apiversion::ApiVersion;

/// What a handler gets: the request parts it needs.
pub struct Ctx {
    pub method: Method,
    pub path: String,
    pub query: Query,
    pub version: ApiVersion,
    pub headers: http::HeaderMap,
    pub body: crate::http::ReqBody,
    /// for attach, which takes over the connection
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Ctx {
    /// The request body as JSON; an empty body is `null`.
    pub async fn json_body(&mut self) -> Result<serde_json::Value, EngineError> {
        let body = self.json_bytes().await?;
        parse_json_body(&body, false)
    }

    /// The request body as JSON, which must be there: an empty body is refused as
    /// dockerd refuses it.
    pub async fn json_required(&mut self) -> Result<serde_json::Value, EngineError> {
        let body = self.json_bytes().await?;
        parse_json_body(&body, true)
    }

    async fn json_bytes(&mut self) -> Result<bytes::Bytes, EngineError> {
        if let Some(ct) = self
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            let mime = ct.split(';').next().unwrap_or_default().trim();
            if !mime.eq_ignore_ascii_case("application/json") {
                return Err(EngineError::invalid(format!(
                    "Content-Type specified ({ct}) must be 'application/json'"
                )));
            }
        }
        Ok(http_body_util::BodyExt::collect(&mut self.body)
            .await
            .map_err(|e| EngineError::invalid(e.to_string()))?
            .to_bytes())
    }
}

/// A JSON request body read as dockerd reads one (Go's decoder, and its words for what is
/// wrong with it); `required`: an empty body is an error, else `null`.
pub fn parse_json_body(body: &[u8], required: bool) -> Result<serde_json::Value, EngineError> {
    use berth_proto::gojson::{scan, Scan};
    let end = match scan(body) {
        Scan::Empty if required => {
            return Err(EngineError::invalid(
                "invalid JSON: got EOF while reading request body",
            ))
        }
        Scan::Empty => return Ok(serde_json::Value::Null),
        Scan::Error(e) => return Err(EngineError::invalid(format!("invalid JSON: {e}"))),
        Scan::Value(end) => end,
    };
    if !body[end..].iter().all(u8::is_ascii_whitespace) {
        return Err(EngineError::invalid("unexpected content after JSON"));
    }
    serde_json::from_slice(&body[..end])
        .map_err(|e| EngineError::invalid(format!("invalid JSON: {e}")))
}

/// Splits `/v1.45/images/json` into the version and the rest.
fn split_version(path: &str, min: ApiVersion) -> Result<(ApiVersion, &str), EngineError> {
    if let Some(rest) = path.strip_prefix("/v") {
        let (ver, tail) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if let Some(v) = ApiVersion::parse(ver) {
            if v > ApiVersion::CURRENT {
                return Err(EngineError::invalid(format!(
                    "client version {v} is too new. Maximum supported API version is {API_VERSION}"
                )));
            }
            if v < min {
                return Err(EngineError::invalid(format!(
                    "client version {v} is too old. Minimum supported API version is {min}, please upgrade your client to a newer version"
                )));
            }
            return Ok((v, tail));
        }
    }
    Ok((ApiVersion::CURRENT, path))
}

pub async fn handle(d: Arc<Daemon>, req: Request<Incoming>) -> Resp {
    let (mut parts, body) = req.into_parts();
    let upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let raw_path = parts.uri.path().to_string();
    let decoded = percent_decode(&raw_path);
    let (version, path) = match split_version(&decoded, d.config.min_api_version) {
        Ok(v) => v,
        Err(e) => return error_response(&e),
    };
    let ctx = Ctx {
        method: parts.method.clone(),
        path: path.to_string(),
        query: Query::parse(parts.uri.query()),
        version,
        headers: parts.headers,
        body: crate::http::ReqBody::new(body),
        upgrade,
    };
    tracing::debug!(method = %ctx.method, path = %raw_path, "request");
    let mut resp = match route(d, ctx).await {
        Ok(r) => r,
        Err(e) => {
            let status = crate::http::status_of(e.kind);
            if status.is_server_error() {
                tracing::warn!(method = %parts.method, path = %raw_path, %status, error = %e.message, "request failed");
            }
            error_response(&e)
        }
    };
    if let Ok(v) = http::HeaderValue::from_str(&system::server_header()) {
        resp.headers_mut().insert(http::header::SERVER, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(API_VERSION) {
        resp.headers_mut().insert("API-Version", v);
    }
    resp
}

fn percent_decode(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && p.is_char_boundary(i + 3) {
            if let Ok(v) = u8::from_str_radix(&p[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(d: Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    let m = ctx.method.clone();
    let path = ctx.path.trim_end_matches('/').to_string();
    let path = path.as_str();
    match (&m, path) {
        (&Method::GET | &Method::HEAD, "/_ping") => Ok(system::ping(&ctx)),
        (&Method::GET, "/version") => Ok(system::version(&d)),
        (&Method::GET, "/info") => system::info(&d, ctx.version),
        (&Method::GET, "/events") => system::events(&d, &ctx),
        (&Method::GET, "/system/df") => system::df(&d, &ctx),
        (&Method::POST, "/auth") => images::auth(&d, ctx).await,

        (&Method::GET, "/images/json") => images::list(&d, &ctx),
        (&Method::POST, "/images/create") => images::create(&d, ctx).await,
        (&Method::POST, "/images/load") => images::load(&d, ctx).await,
        (&Method::GET, "/images/get") => images::save(&d, &ctx, ctx.query.all("names")).await,
        (&Method::POST, "/images/prune") => images::prune(&d, &ctx).await,
        (&Method::GET, "/images/search") => Err(EngineError::not_implemented(
            "searching registries is not supported by this berth yet",
        )),

        (&Method::GET, "/containers/json") => containers::list(&d, &ctx),
        (&Method::POST, "/containers/create") => containers::create(&d, ctx).await,
        (&Method::POST, "/containers/prune") => containers::prune(&d, &ctx).await,
        (&Method::POST, "/commit") => files::commit(&d, ctx).await,
        (&Method::POST, "/build") => build::build(&d, ctx).await,
        (&Method::POST, "/build/prune") => build::prune(&d, ctx).await,
        (&Method::POST, "/build/cancel") => crate::buildkit::build_v2::cancel(&d, ctx).await,
        (&Method::POST, "/grpc") => buildkit::grpc(&d, ctx),
        (&Method::POST, "/session") => buildkit::session(&d, ctx),
        (&Method::GET, "/networks") => networks::list(&d, &ctx),
        (&Method::POST, "/networks/create") => networks::create(&d, ctx).await,
        (&Method::POST, "/networks/prune") => networks::prune(&d, &ctx).await,
        (&Method::GET, "/plugins") => plugins::list(&d, &ctx),
        (&Method::GET, "/plugins/privileges") => plugins::privileges(&d, &ctx).await,
        (&Method::POST, "/plugins/pull") => plugins::pull(&d, ctx).await,
        (&Method::POST, "/plugins/create") => plugins::create(&d, ctx).await,
        (&Method::GET, "/volumes") => volumes::list(&d, &ctx),
        (&Method::POST, "/volumes/create") => volumes::create(&d, ctx).await,
        (&Method::POST, "/volumes/prune") => volumes::prune(&d, &ctx).await,

        _ => {
            if let Some(rest) = path.strip_prefix("/images/") {
                return image_route(&d, ctx, rest.to_string()).await;
            }
            if let Some(rest) = path.strip_prefix("/volumes/") {
                let rest = rest.to_string();
                return volumes::route(&d, ctx, &rest).await;
            }
            if let Some(rest) = path.strip_prefix("/networks/") {
                let rest = rest.to_string();
                return networks::route(&d, ctx, &rest).await;
            }
            if let Some(rest) = path.strip_prefix("/plugins/") {
                let rest = rest.to_string();
                return plugins::route(&d, ctx, &rest).await;
            }
            if let Some(rest) = path.strip_prefix("/exec/") {
                let rest = rest.to_string();
                return exec::route(&d, ctx, &rest).await;
            }
            if let Some(rest) = path.strip_prefix("/containers/") {
                let rest = rest.to_string();
                return containers::by_name(&d, ctx, &rest).await;
            }
            if let Some(e) = swarm_error(path) {
                return Err(e);
            }
            Err(EngineError::not_found("page not found"))
        }
    }
}

/// berthd is never part of a swarm: the swarm API answers as dockerd does on a node
/// that has not joined one (503), so clients such as docker-py's `leave_swarm(force)`
/// take it as "nothing to leave".
fn swarm_error(path: &str) -> Option<EngineError> {
    let first = path.trim_start_matches('/').split('/').next()?;
    match (first, path) {
        (_, "/swarm/leave") => Some(EngineError::unavailable("This node is not part of a swarm",
        )),
        ("swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs", _) => {
            Some(EngineError::unavailable("This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.",
            ))
        }
        _ => None,
    }
}

async fn image_route(d: &Arc<Daemon>, ctx: Ctx, rest: String) -> Result<Resp, EngineError> {
    let m = ctx.method.clone();
    let split = |suffix: &str| {
        rest.strip_suffix(suffix)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    if m == Method::GET {
        if let Some(name) = split("/json") {
            return images::inspect(d, &ctx, &name);
        }
        if let Some(name) = split("/history") {
            return images::history(d, &name);
        }
        if let Some(name) = split("/get") {
            return images::save(d, &ctx, vec![name]).await;
        }
    }
    if m == Method::POST {
        if let Some(name) = split("/tag") {
            return images::tag(d, &ctx, &name);
        }
        if let Some(name) = split("/push") {
            return images::push(d, &ctx, &name).await;
        }
    }
    if m == Method::DELETE {
        return images::remove(d, &ctx, &rest).await;
    }
    Err(EngineError::not_found("page not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            split_version("/v1.45/info", ApiVersion::MIN).unwrap(),
            (ApiVersion(1, 45), "/info")
        );
        assert_eq!(
            split_version("/info", ApiVersion::MIN).unwrap(),
            (ApiVersion::CURRENT, "/info")
        );
        assert!(split_version("/v1.99/info", ApiVersion::MIN).is_err());
        assert!(split_version("/v1.12/info", ApiVersion::MIN).is_err());
        assert_eq!(percent_decode("/images/a%2Fb:c/json"), "/images/a/b:c/json");
    }
}
