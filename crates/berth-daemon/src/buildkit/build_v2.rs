//! `POST /build?version=2`: BuildKit through the classic build endpoint, as the docker
//! CLI's own BuildKit client asks for it (docker 20.10 with `DOCKER_BUILDKIT=1`; buildx
//! speaks `/grpc` instead). The client opens its session on `/session` first; the build
//! request names it (`session=`), with its context there (`remote=client-session`) and
//! the classic build's query parameters. berthd turns them into the frontend attributes
//! and exporter a `Solve` would carry (as dockerd does) and runs the same solve; the
//! response is the classic JSON stream whose `aux` messages carry BuildKit's progress
//! (`moby.buildkit.trace`: a `StatusResponse`, protobuf, base64) and the image
//! (`moby.image.id`). `POST /build/cancel?id=BUILDID` cancels it.

use super::progress::Progress;
use crate::build::Options;
use crate::error::EngineError;
use crate::http::{json_line, stream_when_started, Resp};
use crate::routes::Ctx;
use crate::Daemon;
use base64::Engine;
use berth_buildkit::control::{CacheOptions, CacheOptionsEntry, Exporter, SolveRequest};
use berth_buildkit::prost::Message;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// An output the client asked for (`--output`), as the API carries it.
#[derive(serde::Deserialize, Default)]
struct Output {
    #[serde(rename = "Type", alias = "type", default)]
    kind: String,
    #[serde(rename = "Attrs", alias = "attrs", default)]
    attrs: HashMap<String, String>,
}

/// The solve a `version=2` build stands for.
fn solve_request(q: &crate::http::Query, opts: &Options) -> Result<SolveRequest, EngineError> {
    let session = q.get("session").filter(|s| !s.is_empty()).ok_or_else(|| {
        EngineError::invalid("a BuildKit build (version=2) needs the client's session")
    })?;
    let mut attrs = HashMap::new();
    match q.get("remote").unwrap_or_default() {
        "client-session" => {}
        // the context comes in a request of its own (`docker build - < context.tar`)
        "upload-request" => {
            let id = q.get("buildid").filter(|s| !s.is_empty()).ok_or_else(|| {
                EngineError::invalid("an uploaded context needs the build's ID (buildid)")
            })?;
            attrs.insert(
                "context".to_string(),
                format!("{}{id}", super::frontend::UPLOAD_PREFIX),
            );
        }
        "" => {
            return Err(EngineError::invalid(
                "a BuildKit build (version=2) takes its context from the client's session (remote=client-session); send a context in the body with version=1",
            ))
        }
        other => {
            return Err(EngineError::invalid(format!(
                "remote context {other}: BuildKit builds here take their context from the client's session"
            )))
        }
    }
    if !opts.target.is_empty() {
        attrs.insert("target".to_string(), opts.target.clone());
    }
    if !opts.dockerfile.is_empty() && opts.dockerfile != "." {
        attrs.insert("filename".to_string(), opts.dockerfile.clone());
    }
    if !opts.cache_from.is_empty() {
        attrs.insert("cache-from".to_string(), opts.cache_from.join(","));
    }
    for (k, v) in &opts.build_args {
        if let Some(v) = v {
            attrs.insert(format!("build-arg:{k}"), v.clone());
        }
    }
    for (k, v) in &opts.labels {
        let v = v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string());
        attrs.insert(format!("label:{k}"), v);
    }
    if opts.nocache {
        attrs.insert("no-cache".to_string(), String::new());
    }
    attrs.insert(
        "image-resolve-mode".to_string(),
        if opts.pull { "pull" } else { "default" }.to_string(),
    );
    if !opts.platform.is_empty() {
        attrs.insert("platform".to_string(), opts.platform.clone());
    }
    let mut entitlements = Vec::new();
    match opts.network_mode.as_str() {
        "host" => {
            attrs.insert("force-network-mode".into(), "host".into());
            entitlements.push("network.host".to_string());
        }
        "none" => {
            attrs.insert("force-network-mode".into(), "none".into());
        }
        "" | "default" => {}
        other => {
            return Err(EngineError::invalid(format!(
                "network mode {other:?} not supported by buildkit"
            )))
        }
    }
    if !opts.extra_hosts.is_empty() {
        let hosts: Vec<String> = opts
            .extra_hosts
            .iter()
            .map(|h| h.replacen(':', "=", 1))
            .collect();
        attrs.insert("add-hosts".to_string(), hosts.join(","));
    }
    if let Some(n) = opts.resources.get("ShmSize").and_then(Value::as_i64) {
        attrs.insert("shm-size".to_string(), n.to_string());
    }
    let outputs: Vec<Output> = match q.get("outputs").filter(|v| !v.is_empty()) {
        Some(v) => serde_json::from_str(v)
            .map_err(|e| EngineError::invalid(format!("invalid outputs parameter: {e}")))?,
        None => Vec::new(),
    };
    if outputs.len() > 1 {
        return Err(EngineError::invalid("only one output is supported"));
    }
    let (kind, mut exporter_attrs) = match outputs.into_iter().next() {
        None => ("moby".to_string(), HashMap::new()),
        Some(o) => (o.kind, o.attrs),
    };
    let exporters = match kind.as_str() {
        // no exporter at all: the build only fills the cache
        "cacheonly" => Vec::new(),
        k => {
            if (k == "moby" || k == "image") && !opts.tags.is_empty() {
                let names: Vec<String> = opts.tags.iter().map(|t| t.to_string()).collect();
                exporter_attrs.insert("name".to_string(), names.join(","));
            }
            vec![Exporter {
                r#type: kind.clone(),
                attrs: exporter_attrs,
            }]
        }
    };
    let mut cache = CacheOptions::default();
    if let Some(Some(v)) = opts.build_args.get("BUILDKIT_INLINE_CACHE") {
        if matches!(v.as_str(), "1" | "true" | "TRUE" | "True" | "t" | "T") {
            cache.exports.push(CacheOptionsEntry {
                r#type: "inline".to_string(),
                attrs: HashMap::new(),
            });
        }
    }
    Ok(SolveRequest {
        r#ref: hex::encode(rand::random::<[u8; 16]>()),
        exporters,
        frontend: "dockerfile.v0".to_string(),
        frontend_attrs: attrs,
        session: session.to_string(),
        cache: Some(cache),
        entitlements,
        ..Default::default()
    })
}

/// `POST /build?version=2`.
pub async fn build(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    if let Some(id) = ctx
        .query
        .get("buildid")
        .and_then(|b| b.strip_prefix(super::frontend::UPLOAD_PREFIX))
    {
        return upload(d, id.to_string(), ctx).await;
    }
    // the context comes through the session: the body is empty
    tokio::spawn(crate::http::discard(ctx.body));
    let opts = Options::parse(&ctx.query, &ctx.headers)?;
    let req = solve_request(&ctx.query, &opts)?;
    let build_id = ctx.query.get("buildid").unwrap_or_default().to_string();
    let quiet = opts.quiet;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (early_tx, early) = tokio::sync::oneshot::channel::<EngineError>();
    let d = d.clone();
    tokio::spawn(async move {
        let reference = req.r#ref.clone();
        let p = Arc::new(Progress::new(&reference));
        if !build_id.is_empty() {
            d.buildkit.name_build(&build_id, p.clone());
        }
        // the progress, as it happens, in the stream
        let trace = {
            let (p, tx) = (p.clone(), tx.clone());
            tokio::spawn(async move {
                let mut seen = 0;
                while let Some(batch) = p.next(seen).await {
                    seen += batch.len();
                    for r in batch {
                        let aux =
                            base64::engine::general_purpose::STANDARD.encode(r.encode_to_vec());
                        let line = json_line(&json!({"id": "moby.buildkit.trace", "aux": aux}));
                        if tx.send(line).await.is_err() {
                            // the client went away: the build is canceled
                            p.cancel();
                            return;
                        }
                    }
                }
            })
        };
        let result = super::control::run_solve(&d, &req, &reference, p).await;
        let _ = trace.await;
        if !build_id.is_empty() {
            d.buildkit.forget_build_name(&build_id);
        }
        drop(early_tx);
        match result {
            Ok(resp) => {
                let Some(id) = resp.get("containerimage.digest") else {
                    return;
                };
                let _ = tx
                    .send(json_line(
                        &json!({"id": "moby.image.id", "aux": {"ID": id}}),
                    ))
                    .await;
                // `-q`: the output is the image ID alone (what the CLI prints)
                if quiet {
                    let _ = tx
                        .send(json_line(&json!({"stream": format!("{id}\n")})))
                        .await;
                }
            }
            Err(e) => {
                let _ = tx.send(crate::http::error_line(&e)).await;
            }
        }
    });
    stream_when_started("application/json", rx, early).await
}

/// `POST /build?version=2&buildid=upload-request:ID`: the context of build ID (a tar,
/// plain or compressed), kept in a file until that build takes it.
async fn upload(d: &Arc<Daemon>, id: String, ctx: Ctx) -> Result<Resp, EngineError> {
    let reader = crate::http::body_reader(ctx.body);
    let tmp = d.images.tmp_dir().to_path_buf();
    let stored = tokio::task::spawn_blocking(move || -> std::io::Result<std::path::PathBuf> {
        let mut reader = reader;
        let (mut file, path) = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&tmp)?
            .keep()
            .map_err(|e| e.error)?;
        if let Err(e) = std::io::copy(&mut reader, &mut file) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?;
    match stored {
        Ok(path) => {
            d.buildkit.upload_arrived(&id, Ok(path));
            Ok(crate::http::status_only(hyper::StatusCode::OK))
        }
        Err(e) => {
            let msg = format!("reading the uploaded build context: {e}");
            d.buildkit.upload_arrived(&id, Err(msg.clone()));
            Err(EngineError::invalid(msg))
        }
    }
}

/// `POST /build/cancel?id=BUILDID`.
pub async fn cancel(d: &Arc<Daemon>, ctx: Ctx) -> Result<Resp, EngineError> {
    let id = ctx.query.get("id").unwrap_or_default();
    if let Some(p) = d.buildkit.named_build(id) {
        p.cancel();
    }
    Ok(crate::http::status_only(hyper::StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(s: &str) -> crate::http::Query {
        crate::http::Query::parse(Some(s))
    }

    #[test]
    fn classic_parameters_become_frontend_attributes() {
        let q = query(
            "version=2&session=abc&remote=client-session&buildid=b1&t=app:1&t=app:latest&dockerfile=sub/Dockerfile&target=final&nocache=1&pull=1&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&labels=%7B%22l%22%3A%22v%22%7D&networkmode=none&cachefrom=%5B%22c%3A1%22%5D",
        );
        let opts = Options::parse(&q, &Default::default()).unwrap();
        let r = solve_request(&q, &opts).unwrap();
        let a = &r.frontend_attrs;
        assert_eq!(r.frontend, "dockerfile.v0");
        assert_eq!(r.session, "abc");
        assert_eq!(a["filename"], "sub/Dockerfile");
        assert_eq!(a["target"], "final");
        assert_eq!(a["build-arg:A"], "1");
        assert!(!a.contains_key("build-arg:B"));
        assert_eq!(a["label:l"], "v");
        assert!(a.contains_key("no-cache"));
        assert_eq!(a["image-resolve-mode"], "pull");
        assert_eq!(a["force-network-mode"], "none");
        assert_eq!(a["cache-from"], "c:1");
        assert_eq!(r.exporters[0].r#type, "moby");
        assert_eq!(
            r.exporters[0].attrs["name"],
            "docker.io/library/app:1,docker.io/library/app:latest"
        );
    }

    #[test]
    fn outputs_and_refusals() {
        let q = query(
            "version=2&session=s&remote=client-session&outputs=%5B%7B%22Type%22%3A%22local%22%2C%22Attrs%22%3A%7B%22dest%22%3A%22out%22%7D%7D%5D",
        );
        let opts = Options::parse(&q, &Default::default()).unwrap();
        let r = solve_request(&q, &opts).unwrap();
        assert_eq!(r.exporters[0].r#type, "local");
        assert_eq!(r.exporters[0].attrs["dest"], "out");
        let q = query("version=2&session=s&remote=upload-request&buildid=b7");
        let opts = Options::parse(&q, &Default::default()).unwrap();
        let r = solve_request(&q, &opts).unwrap();
        assert_eq!(r.frontend_attrs["context"], "upload-request:b7");
        for bad in [
            "version=2&session=s&remote=upload-request",
            "version=2&remote=client-session",
            "version=2&session=s",
            "version=2&session=s&remote=https://example.com/x.git",
            "version=2&session=s&remote=client-session&networkmode=bridge2",
        ] {
            let q = query(bad);
            let opts = Options::parse(&q, &Default::default()).unwrap();
            assert!(solve_request(&q, &opts).is_err(), "{bad}");
        }
    }
}
