//! `berth registry serve`: a registry speaking the OCI distribution protocol.
//!
//! Storage under `--root`: `blobs/sha256/HEX` (complete blobs, immutable, each written
//! to a temporary file and renamed into place, so a crash never leaves a partial blob
//! visible and concurrent pushes of one blob are safe); `uploads/ID` (uploads in
//! progress); `repos/NAME/layers/HEX` and `repos/NAME/manifests/HEX` (a blob or manifest
//! linked into a repository; a manifest's link holds its media type) and
//! `repos/NAME/tags/TAG` (the manifest digest). Repository names are checked against the
//! distribution grammar before they become paths.

use berth_image::digest::{Digest, Hasher};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

pub type Resp = Response<Full<Bytes>>;

/// Bytes `start..start+len` of a blob file, mapped: the socket takes them straight from
/// the page cache, with no copy through a buffer of ours. Blob files are never written
/// once in place (a new blob is renamed over, a deleted one unlinked), so the mapping
/// stays valid.
fn file_body(path: &Path, start: u64, len: u64) -> std::io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let f = std::fs::File::open(path)?;
    // SAFETY: blobs are immutable once committed (write_atomic renames complete files
    // into place and nothing opens them for writing), so the mapped bytes cannot change
    // under the reader; the map lives as long as the Bytes that own it.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(start)
            .len(len as usize)
            .map(&f)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Bytes::from_owner(map))
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub root: PathBuf,
    /// `user:bcrypt-hash` lines; None: open
    pub htpasswd: Option<Vec<(String, String)>>,
    pub read_only: bool,
}

/// Reads an htpasswd file (bcrypt hashes only).
pub fn read_htpasswd(path: &Path) -> std::io::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (u, h) = l.trim().split_once(':')?;
            Some((u.to_string(), h.to_string()))
        })
        .collect())
}

fn error(status: StatusCode, code: &str, message: &str) -> Resp {
    let body = json!({"errors": [{"code": code, "message": message, "detail": {}}]});
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}

fn empty(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

fn finish(b: http::response::Builder, body: impl Into<Bytes>) -> Resp {
    b.body(Full::new(body.into())).unwrap_or_default()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` components joined by `/`.
pub fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    name.split('/').all(|c| {
        let b = c.as_bytes();
        if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric()
        {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            let ch = b[i];
            if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && matches!(b[i], b'.' | b'_' | b'-') {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok || sep.is_empty() {
                return false;
            }
        }
        true
    })
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The registry's storage.
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> std::io::Result<Self> {
        for d in ["blobs/sha256", "uploads", "repos", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        // leftovers of writes cut short
        for e in std::fs::read_dir(root.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    fn blob(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.root.join("repos").join(name)
    }

    fn link(&self, name: &str, kind: &str, d: &Digest) -> PathBuf {
        self.repo(name).join(kind).join(d.hex())
    }

    /// Writes `bytes` to `path` whole or not at all.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)?;
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{:016x}", rand::random::<u64>()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    /// Moves a complete, verified file into the blob store (a blob already there wins).
    fn commit_blob(&self, file: &Path, d: &Digest) -> std::io::Result<()> {
        let dest = self.blob(d);
        if dest.exists() {
            let _ = std::fs::remove_file(file);
            return Ok(());
        }
        std::fs::File::open(file)?.sync_all()?;
        std::fs::rename(file, dest)
    }

    fn put_small_blob(&self, bytes: &[u8]) -> std::io::Result<Digest> {
        let d = Digest::of(bytes);
        if !self.blob(&d).exists() {
            self.write_atomic(&self.blob(&d), bytes)?;
        }
        Ok(d)
    }

    fn linked(&self, name: &str, kind: &str, d: &Digest) -> bool {
        self.link(name, kind, d).exists() && self.blob(d).exists()
    }
}

/// One registry server: its storage and settings.
pub struct Registry {
    pub store: Store,
    pub cfg: ServerConfig,
}

impl Registry {
    pub fn new(cfg: ServerConfig) -> std::io::Result<Self> {
        Ok(Registry {
            store: Store::open(&cfg.root)?,
            cfg,
        })
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(users) = &self.cfg.htpasswd else {
            return true;
        };
        use base64::Engine;
        let Some(h) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
        else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(h.trim()) else {
            return false;
        };
        let text = String::from_utf8_lossy(&raw);
        let Some((u, p)) = text.split_once(':') else {
            return false;
        };
        users
            .iter()
            .any(|(name, hash)| name == u && bcrypt::verify(p, hash).unwrap_or(false))
    }

    /// Answers one request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Resp {
        if !self.authorized(&req) {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            );
            if let Ok(v) = header::HeaderValue::from_str("Basic realm=\"berth-registry\"") {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return r;
        }
        let path = req.uri().path().to_string();
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let method = req.method().clone();
        let writes = !matches!(method, Method::GET | Method::HEAD);
        if writes && self.cfg.read_only {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the registry is read-only",
            );
        }
        if path == "/v2/" || path == "/v2" {
            return finish(
                empty(StatusCode::OK).header(header::CONTENT_TYPE, "application/json"),
                "{}",
            );
        }
        if path == "/v2/_catalog" {
            return self.catalog(q("n"), q("last"));
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found");
        };
        // NAME/KIND/REF, the name holding slashes
        let split = [
            "/blobs/uploads/",
            "/blobs/uploads",
            "/blobs/",
            "/manifests/",
            "/tags/list",
            "/referrers/",
        ]
        .iter()
        .filter_map(|k| rest.rfind(k).map(|i| (i, *k)))
        .max_by_key(|(i, k)| (*i, k.len()));
        let Some((i, kind)) = split else {
            return error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found");
        };
        let name = &rest[..i];
        let reference = rest[i + kind.len()..].to_string();
        if !valid_name(name) {
            return error(
                StatusCode::BAD_REQUEST,
                "NAME_INVALID",
                "invalid repository name",
            );
        }
        let name = name.to_string();
        match (kind, method) {
            ("/tags/list", Method::GET) => self.tags(&name, q("n"), q("last")),
            ("/manifests/", Method::GET | Method::HEAD) => {
                self.get_manifest(&name, &reference, req.method() == Method::HEAD)
            }
            ("/manifests/", Method::PUT) => self.put_manifest(&name, &reference, req).await,
            ("/manifests/", Method::DELETE) => self.delete_manifest(&name, &reference),
            ("/blobs/", Method::GET | Method::HEAD) => {
                let head = req.method() == Method::HEAD;
                self.get_blob(&name, &reference, head, &req).await
            }
            ("/blobs/", Method::DELETE) => match reference.parse::<Digest>() {
                Ok(d) if self.store.linked(&name, "layers", &d) => {
                    let _ = std::fs::remove_file(self.store.link(&name, "layers", &d));
                    finish(empty(StatusCode::ACCEPTED), Bytes::new())
                }
                _ => error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    "blob unknown to registry",
                ),
            },
            ("/blobs/uploads/" | "/blobs/uploads", Method::POST) if reference.is_empty() => {
                self.start_upload(&name, q("mount"), q("from"), q("digest"), req)
                    .await
            }
            ("/blobs/uploads/", Method::PATCH) => self.patch_upload(&name, &reference, req).await,
            ("/blobs/uploads/", Method::PUT) => {
                self.finish_upload(&name, &reference, q("digest"), req)
                    .await
            }
            ("/blobs/uploads/", Method::GET) => match self.upload_size(&reference) {
                Some(n) => finish(
                    self.upload_headers(&name, &reference, n, StatusCode::NO_CONTENT),
                    Bytes::new(),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    "blob upload unknown to registry",
                ),
            },
            ("/blobs/uploads/", Method::DELETE) => match self.upload_path(&reference) {
                Some(p) if p.exists() => {
                    let _ = std::fs::remove_file(p);
                    finish(empty(StatusCode::NO_CONTENT), Bytes::new())
                }
                _ => error(
                    StatusCode::NOT_FOUND,
                    "BLOB_UPLOAD_UNKNOWN",
                    "blob upload unknown to registry",
                ),
            },
            ("/referrers/", Method::GET) => self.referrers(&name, &reference, q("artifactType")),
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "UNSUPPORTED",
                "the operation is unsupported",
            ),
        }
    }

    fn list_dir(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A page of `items` after `last`, at most `n`; the Link header when more follow.
    fn page(
        items: Vec<String>,
        n: Option<String>,
        last: Option<String>,
        base: &str,
    ) -> (Vec<String>, Option<String>) {
        let mut items: Vec<String> = match &last {
            Some(l) => items.into_iter().filter(|x| x > l).collect(),
            None => items,
        };
        let n: Option<usize> = n.and_then(|n| n.parse().ok());
        let mut link = None;
        if let Some(n) = n {
            if items.len() > n {
                items.truncate(n);
                if let Some(l) = items.last() {
                    link = Some(format!("<{base}?n={n}&last={l}>; rel=\"next\""));
                }
            }
        }
        (items, link)
    }

    fn catalog(&self, n: Option<String>, last: Option<String>) -> Resp {
        let mut repos = Vec::new();
        let mut todo = vec![(self.store.root.join("repos"), String::new())];
        while let Some((dir, prefix)) = todo.pop() {
            for e in Self::list_dir(&dir) {
                let p = dir.join(&e);
                let name = if prefix.is_empty() {
                    e.clone()
                } else {
                    format!("{prefix}/{e}")
                };
                if matches!(e.as_str(), "tags" | "manifests" | "layers") {
                    continue;
                }
                if p.join("manifests").is_dir() || p.join("tags").is_dir() {
                    repos.push(name.clone());
                }
                todo.push((p, name));
            }
        }
        repos.sort();
        let (repos, link) = Self::page(repos, n, last, "/v2/_catalog");
        let mut b = empty(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
        if let Some(l) = link {
            b = b.header(header::LINK, l);
        }
        finish(b, json!({"repositories": repos}).to_string())
    }

    fn tags(&self, name: &str, n: Option<String>, last: Option<String>) -> Resp {
        let dir = self.store.repo(name).join("tags");
        if !dir.is_dir() {
            return error(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                "repository name not known to registry",
            );
        }
        let (tags, link) = Self::page(
            Self::list_dir(&dir),
            n,
            last,
            &format!("/v2/{name}/tags/list"),
        );
        let mut b = empty(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
        if let Some(l) = link {
            b = b.header(header::LINK, l);
        }
        finish(b, json!({"name": name, "tags": tags}).to_string())
    }

    fn resolve(&self, name: &str, reference: &str) -> Option<Digest> {
        if let Ok(d) = reference.parse::<Digest>() {
            return Some(d);
        }
        if !valid_tag(reference) {
            return None;
        }
        std::fs::read_to_string(self.store.repo(name).join("tags").join(reference))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn get_manifest(&self, name: &str, reference: &str, head: bool) -> Resp {
        let Some(d) = self.resolve(name, reference) else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let link = self.store.link(name, "manifests", &d);
        let (Ok(media), Ok(bytes)) = (
            std::fs::read_to_string(&link),
            std::fs::read(self.store.blob(&d)),
        ) else {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        };
        let b = empty(StatusCode::OK)
            .header(header::CONTENT_TYPE, media.trim())
            .header("Docker-Content-Digest", d.to_string())
            .header(header::CONTENT_LENGTH, bytes.len());
        finish(b, if head { Vec::new() } else { bytes })
    }

    async fn put_manifest(&self, name: &str, reference: &str, req: Request<Incoming>) -> Resp {
        let media = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = match read_capped(req.into_body(), crate::manifest::MAX_MANIFEST).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let doc = match crate::manifest::parse(&bytes, &media) {
            Ok(d) => d,
            Err(e) => return error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", &e.to_string()),
        };
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let media = v["mediaType"]
            .as_str()
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or(media);
        // everything it names must be here
        let missing = match &doc {
            crate::manifest::Document::Image(m) => std::iter::once(&m.config)
                .chain(m.layers.iter())
                .find(|x| {
                    !self.store.linked(name, "layers", &x.digest)
                        && !x.media_type.contains("foreign")
                        && !x.media_type.contains("nondistributable")
                })
                .map(|x| ("MANIFEST_BLOB_UNKNOWN", x.digest.to_string())),
            crate::manifest::Document::Index(es) => es
                .iter()
                .find(|e| !self.store.linked(name, "manifests", &e.desc.digest))
                .map(|e| ("MANIFEST_UNKNOWN", e.desc.digest.to_string())),
        };
        if let Some((code, d)) = missing {
            return error(
                StatusCode::BAD_REQUEST,
                code,
                &format!("{d} is not in the repository"),
            );
        }
        let d = Digest::of(&bytes);
        if let Ok(want) = reference.parse::<Digest>() {
            if want != d {
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                );
            }
        } else if !valid_tag(reference) {
            return error(
                StatusCode::BAD_REQUEST,
                "TAG_INVALID",
                "manifest tag did not match URI",
            );
        }
        let stored = self
            .store
            .put_small_blob(&bytes)
            .and_then(|_| {
                self.store
                    .write_atomic(&self.store.link(name, "manifests", &d), media.as_bytes())
            })
            .and_then(|_| {
                if reference.parse::<Digest>().is_err() {
                    self.store.write_atomic(
                        &self.store.repo(name).join("tags").join(reference),
                        d.to_string().as_bytes(),
                    )
                } else {
                    Ok(())
                }
            });
        if let Err(e) = stored {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string());
        }
        let mut b = empty(StatusCode::CREATED)
            .header(header::LOCATION, format!("/v2/{name}/manifests/{d}"))
            .header("Docker-Content-Digest", d.to_string());
        if let Some(s) = v["subject"]["digest"].as_str() {
            b = b.header("OCI-Subject", s);
        }
        finish(b, Bytes::new())
    }

    fn delete_manifest(&self, name: &str, reference: &str) -> Resp {
        let Ok(d) = reference.parse::<Digest>() else {
            return error(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                "delete a manifest by digest",
            );
        };
        let link = self.store.link(name, "manifests", &d);
        if !link.exists() {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
            );
        }
        let _ = std::fs::remove_file(link);
        let tags = self.store.repo(name).join("tags");
        for t in Self::list_dir(&tags) {
            if std::fs::read_to_string(tags.join(&t))
                .map(|s| s.trim() == d.to_string())
                .unwrap_or(false)
            {
                let _ = std::fs::remove_file(tags.join(t));
            }
        }
        finish(empty(StatusCode::ACCEPTED), Bytes::new())
    }

    async fn get_blob(
        &self,
        name: &str,
        reference: &str,
        head: bool,
        req: &Request<Incoming>,
    ) -> Resp {
        let Ok(d) = reference.parse::<Digest>() else {
            return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
        };
        if !self.store.linked(name, "layers", &d) && !self.store.linked(name, "manifests", &d) {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
            );
        }
        let path = self.store.blob(&d);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let range = req
            .headers()
            .get(header::RANGE)
            .and_then(|h| h.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                let a: u64 = a.parse().ok()?;
                let b: u64 = if b.is_empty() {
                    len.checked_sub(1)?
                } else {
                    b.parse().ok()?
                };
                (a <= b && b < len).then_some((a, b))
            });
        let b = empty(if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("Docker-Content-Digest", d.to_string())
        .header(header::ACCEPT_RANGES, "bytes");
        if head {
            return finish(b.header(header::CONTENT_LENGTH, len), Bytes::new());
        }
        let (b, start, n) = match range {
            Some((a, z)) => (
                b.header(header::CONTENT_RANGE, format!("bytes {a}-{z}/{len}")),
                a,
                z - a + 1,
            ),
            None => (b, 0, len),
        };
        match file_body(&path, start, n) {
            Ok(body) => b
                .header(header::CONTENT_LENGTH, n)
                .body(Full::new(body))
                .unwrap_or_default(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string()),
        }
    }

    fn upload_path(&self, id: &str) -> Option<PathBuf> {
        (id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()))
            .then(|| self.store.root.join("uploads").join(id))
    }

    fn upload_size(&self, id: &str) -> Option<u64> {
        std::fs::metadata(self.upload_path(id)?)
            .ok()
            .map(|m| m.len())
    }

    fn upload_headers(
        &self,
        name: &str,
        id: &str,
        size: u64,
        status: StatusCode,
    ) -> http::response::Builder {
        empty(status)
            .header(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
            .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
            .header("Docker-Upload-UUID", id)
            .header(header::CONTENT_LENGTH, 0)
    }

    /// Appends a request body to an upload file.
    async fn append(path: &Path, body: Incoming) -> Result<u64, String> {
        let mut f = tokio::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .await
            .map_err(|e| e.to_string())?;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                f.write_all(&data).await.map_err(|e| e.to_string())?;
            }
        }
        f.flush().await.map_err(|e| e.to_string())?;
        Ok(f.metadata().await.map(|m| m.len()).unwrap_or(0))
    }

    async fn start_upload(
        &self,
        name: &str,
        mount: Option<String>,
        from: Option<String>,
        digest: Option<String>,
        req: Request<Incoming>,
    ) -> Resp {
        if let (Some(m), Some(f)) = (&mount, &from) {
            if let Ok(d) = m.parse::<Digest>() {
                if valid_name(f) && self.store.linked(f, "layers", &d) {
                    if let Err(e) = self
                        .store
                        .write_atomic(&self.store.link(name, "layers", &d), b"")
                    {
                        return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string());
                    }
                    return finish(
                        empty(StatusCode::CREATED)
                            .header(header::LOCATION, format!("/v2/{name}/blobs/{d}"))
                            .header("Docker-Content-Digest", d.to_string()),
                        Bytes::new(),
                    );
                }
            }
        }
        let id = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
        let Some(path) = self.upload_path(&id) else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", "upload id");
        };
        if let Err(e) = Self::append(&path, req.into_body()).await {
            let _ = std::fs::remove_file(&path);
            return error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &e);
        }
        match digest {
            // monolithic: the body is the blob
            Some(d) => self.complete(name, &id, &d),
            None => finish(
                self.upload_headers(name, &id, 0, StatusCode::ACCEPTED),
                Bytes::new(),
            ),
        }
    }

    async fn patch_upload(&self, name: &str, id: &str, req: Request<Incoming>) -> Resp {
        let Some(size) = self.upload_size(id) else {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            );
        };
        // a chunk must start where the upload stands
        if let Some(start) = req
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|h| h.to_str().ok())
            .and_then(|r| {
                r.trim_start_matches("bytes ")
                    .split('-')
                    .next()
                    .map(str::to_string)
            })
            .and_then(|s| s.parse::<u64>().ok())
        {
            if start != size {
                return error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "BLOB_UPLOAD_INVALID",
                    "chunk out of order",
                );
            }
        }
        let Some(path) = self.upload_path(id) else {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            );
        };
        match Self::append(&path, req.into_body()).await {
            Ok(n) => finish(
                self.upload_headers(name, id, n, StatusCode::ACCEPTED),
                Bytes::new(),
            ),
            Err(e) => error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &e),
        }
    }

    async fn finish_upload(
        &self,
        name: &str,
        id: &str,
        digest: Option<String>,
        req: Request<Incoming>,
    ) -> Resp {
        let Some(path) = self.upload_path(id).filter(|p| p.exists()) else {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            );
        };
        if let Err(e) = Self::append(&path, req.into_body()).await {
            return error(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", &e);
        }
        match digest {
            Some(d) => self.complete(name, id, &d),
            None => error(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                "a digest is required",
            ),
        }
    }

    /// Checks an upload against `digest` and moves it into the store.
    fn complete(&self, name: &str, id: &str, digest: &str) -> Resp {
        let Some(path) = self.upload_path(id) else {
            return error(
                StatusCode::NOT_FOUND,
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
            );
        };
        let Ok(want) = digest.parse::<Digest>() else {
            let _ = std::fs::remove_file(&path);
            return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
        };
        let got = (|| -> std::io::Result<Digest> {
            let mut f = std::fs::File::open(&path)?;
            let mut h = Hasher::default();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            Ok(h.finish())
        })();
        match got {
            Ok(g) if g == want => {}
            _ => {
                let _ = std::fs::remove_file(&path);
                return error(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    "provided digest did not match uploaded content",
                );
            }
        }
        let done = self.store.commit_blob(&path, &want).and_then(|_| {
            self.store
                .write_atomic(&self.store.link(name, "layers", &want), b"")
        });
        if let Err(e) = done {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", &e.to_string());
        }
        finish(
            empty(StatusCode::CREATED)
                .header(header::LOCATION, format!("/v2/{name}/blobs/{want}"))
                .header("Docker-Content-Digest", want.to_string())
                .header(header::CONTENT_LENGTH, 0),
            Bytes::new(),
        )
    }

    fn referrers(&self, name: &str, reference: &str, artifact: Option<String>) -> Resp {
        let Ok(subject) = reference.parse::<Digest>() else {
            return error(StatusCode::BAD_REQUEST, "DIGEST_INVALID", "invalid digest");
        };
        let mut manifests = Vec::new();
        let dir = self.store.repo(name).join("manifests");
        for hex in Self::list_dir(&dir) {
            let Ok(d) = Digest::from_hex(&hex) else {
                continue;
            };
            let Ok(bytes) = std::fs::read(self.store.blob(&d)) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if v["subject"]["digest"].as_str() != Some(subject.to_string().as_str()) {
                continue;
            }
            let at = v["artifactType"]
                .as_str()
                .or_else(|| v["config"]["mediaType"].as_str())
                .unwrap_or_default()
                .to_string();
            if artifact.as_deref().is_some_and(|a| a != at) {
                continue;
            }
            let media = std::fs::read_to_string(dir.join(&hex)).unwrap_or_default();
            let mut desc = json!({"mediaType": media.trim(), "digest": d.to_string(), "size": bytes.len(), "artifactType": at});
            if let Some(a) = v.get("annotations") {
                desc["annotations"] = a.clone();
            }
            manifests.push(desc);
        }
        let mut b = empty(StatusCode::OK).header(header::CONTENT_TYPE, crate::manifest::OCI_INDEX);
        if artifact.is_some() {
            b = b.header("OCI-Filters-Applied", "artifactType");
        }
        finish(
            b,
            json!({"schemaVersion": 2, "mediaType": crate::manifest::OCI_INDEX, "manifests": manifests}).to_string(),
        )
    }

    /// Removes blobs no manifest of any repository names (and uploads left behind).
    /// Returns the blobs removed.
    pub fn gc(&self) -> std::io::Result<Vec<Digest>> {
        let mut keep = std::collections::HashSet::new();
        let mut todo = vec![self.store.root.join("repos")];
        while let Some(dir) = todo.pop() {
            for e in Self::list_dir(&dir) {
                let p = dir.join(&e);
                if e == "manifests" {
                    for hex in Self::list_dir(&p) {
                        let Ok(d) = Digest::from_hex(&hex) else {
                            continue;
                        };
                        keep.insert(d.clone());
                        let Ok(bytes) = std::fs::read(self.store.blob(&d)) else {
                            continue;
                        };
                        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        for x in std::iter::once(&v["config"])
                            .chain(v["layers"].as_array().into_iter().flatten())
                            .chain(v["manifests"].as_array().into_iter().flatten())
                        {
                            if let Some(d) = x["digest"].as_str().and_then(|s| s.parse().ok()) {
                                keep.insert(d);
                            }
                        }
                    }
                } else if p.is_dir() && e != "tags" && e != "layers" {
                    todo.push(p);
                }
            }
        }
        let mut removed = Vec::new();
        for hex in Self::list_dir(&self.store.root.join("blobs/sha256")) {
            let Ok(d) = Digest::from_hex(&hex) else {
                continue;
            };
            if !keep.contains(&d) {
                std::fs::remove_file(self.store.blob(&d))?;
                removed.push(d);
            }
        }
        for u in Self::list_dir(&self.store.root.join("uploads")) {
            let _ = std::fs::remove_file(self.store.root.join("uploads").join(u));
        }
        Ok(removed)
    }
}

async fn read_capped(body: Incoming, max: usize) -> Result<Vec<u8>, Resp> {
    let mut out = Vec::new();
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| error(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", &e.to_string()))?;
        if let Ok(d) = frame.into_data() {
            if out.len() + d.len() > max {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "SIZE_INVALID",
                    "manifest too large",
                ));
            }
            out.extend_from_slice(&d);
        }
    }
    Ok(out)
}

/// Serves `registry` on `addr` (plain HTTP; TLS with `tls`) until the process ends.
pub async fn serve(
    registry: Arc<Registry>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let reg = registry.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let reg = reg.clone();
                async move { Ok::<_, std::convert::Infallible>(reg.handle(req).await) }
            });
            let builder = hyper::server::conn::http1::Builder::new();
            match tls {
                Some(acc) => {
                    if let Ok(s) = acc.accept(stream).await {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                            .await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["a", "library/busybox", "a-b/c.d/e__f", "x1/y--2"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "../x", "a/../b", "a//b", "a/", "/a", "-a", "a_", "a..b", "a/.x",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_tag("v1.0_rc-1"));
        assert!(!valid_tag(".x") && !valid_tag("a/b") && !valid_tag(""));
    }
}
