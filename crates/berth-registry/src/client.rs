//! The distribution protocol's client: endpoints (Docker Hub, mirrors, insecure and
//! loopback registries over plain HTTP), `/v2/` challenges, tokens, manifests, blobs.
//!
//! Credentials go only to the registry they are for and to the token realm it names;
//! on a redirect to another host (blob storage) the HTTP client drops the
//! `Authorization` header.

use crate::auth::{parse_challenge, AuthConfig, Challenge};
use crate::manifest;
use berth_image::digest::Digest;
use futures_util::StreamExt;
use reqwest::{header, Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Docker Hub's API endpoint for `docker.io`.
pub const HUB_ENDPOINT: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// the registry could not be reached (connection, TLS, timeout)
    #[error("{0}")]
    Unreachable(String),
    /// 404s: manifest or blob unknown
    #[error("{0}")]
    NotFound(String),
    /// 401/403 after authenticating
    #[error("{0}")]
    Denied(String),
    /// any other error status
    #[error("{1}")]
    Status(StatusCode, String),
    /// a document or blob that is not what it should be
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, RegistryError>;

/// Registry settings from daemon.json.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `registry-mirrors`: tried first for Docker Hub pulls
    pub mirrors: Vec<String>,
    /// `insecure-registries`: `host[:port]` or CIDR; plain HTTP allowed for them
    pub insecure: Vec<String>,
}

impl Settings {
    /// Whether plain HTTP (and unverified TLS) is allowed for `host` (`name[:port]`):
    /// listed, or on a loopback address, as Docker allows.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = split_host(host).0;
        if name == "localhost" {
            return true;
        }
        let ip: Option<std::net::IpAddr> = name.trim_matches(['[', ']']).parse().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.insecure.iter().any(|entry| {
            let e = entry
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            if e == host || e == name {
                return true;
            }
            match (e.split_once('/'), ip) {
                (Some((net, bits)), Some(ip)) => cidr_contains(net, bits, ip),
                _ => false,
            }
        })
    }
}

fn split_host(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':'));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

fn cidr_contains(net: &str, bits: &str, ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// Registry error codes as Docker words them: `MANIFEST_UNKNOWN` → "manifest unknown".
fn describe_errors(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let errs = v["errors"].as_array()?;
    let parts: Vec<String> = errs
        .iter()
        .map(|e| {
            let code = e["code"]
                .as_str()
                .unwrap_or("unknown")
                .to_lowercase()
                .replace('_', " ");
            match e["message"].as_str().filter(|m| !m.is_empty()) {
                Some(m) => format!("{code}: {m}"),
                None => code,
            }
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The client: one per daemon (its connection pool is shared).
#[derive(Clone)]
pub struct Client {
    secure: reqwest::Client,
    /// for insecure registries: TLS without verification
    lax: reqwest::Client,
    pub settings: Settings,
}

impl Client {
    pub fn new(settings: Settings) -> Result<Self> {
        let build = |lax: bool| {
            reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(300))
                .redirect(reqwest::redirect::Policy::limited(10))
                .danger_accept_invalid_certs(lax)
                .build()
                .map_err(|e| RegistryError::Invalid(format!("HTTP client: {e}")))
        };
        Ok(Client {
            secure: build(false)?,
            lax: build(true)?,
            settings,
        })
    }

    /// A session with repository `path` of registry `domain` (as references name it:
    /// `docker.io`, `localhost:5000`, …), for pulling or also pushing.
    pub async fn session(
        &self,
        domain: &str,
        path: &str,
        creds: Option<AuthConfig>,
        push: bool,
    ) -> Result<Session> {
        self.session_via(domain, path, creds, push, !push).await
    }

    /// Whether pulls from `domain` try `registry-mirrors` first.
    pub fn mirrored(&self, domain: &str) -> bool {
        domain == berth_image::reference::DEFAULT_DOMAIN && !self.settings.mirrors.is_empty()
    }

    /// [`Client::session`], with or without the mirrors: a pull whose mirror fails
    /// goes to the registry itself, as Docker's does.
    pub async fn session_via(
        &self,
        domain: &str,
        path: &str,
        creds: Option<AuthConfig>,
        push: bool,
        mirrors: bool,
    ) -> Result<Session> {
        let mut candidates: Vec<(String, bool)> = Vec::new();
        if domain == berth_image::reference::DEFAULT_DOMAIN && mirrors {
            for m in &self.settings.mirrors {
                let m = m.trim_end_matches('/');
                if let Some(h) = m.strip_prefix("http://") {
                    candidates.push((format!("http://{h}"), true));
                } else {
                    let h = m.trim_start_matches("https://");
                    candidates.push((format!("https://{h}"), self.settings.is_insecure(h)));
                }
            }
        }
        let host = if domain == berth_image::reference::DEFAULT_DOMAIN {
            HUB_ENDPOINT.to_string()
        } else {
            domain.to_string()
        };
        let insecure = self.settings.is_insecure(&host);
        candidates.push((format!("https://{host}"), insecure));
        if insecure {
            candidates.push((format!("http://{host}"), true));
        }
        let mut last = None;
        for (base, lax) in candidates {
            let http = if lax { &self.lax } else { &self.secure };
            let url = format!("{base}/v2/");
            match http.get(&url).send().await {
                Ok(r) => {
                    let challenge = r
                        .headers()
                        .get(header::WWW_AUTHENTICATE)
                        .and_then(|h| h.to_str().ok())
                        .and_then(parse_challenge);
                    if r.status().is_success() || r.status() == StatusCode::UNAUTHORIZED {
                        return Ok(Session {
                            http: http.clone(),
                            base,
                            path: path.to_string(),
                            actions: if push { "pull,push" } else { "pull" },
                            creds,
                            auth: Arc::new(Mutex::new(AuthState::from_ping(challenge))),
                        });
                    }
                    last = Some(RegistryError::Status(
                        r.status(),
                        format!("{url}: unexpected status {}", r.status()),
                    ));
                }
                Err(e) => last = Some(unreachable(&url, &e)),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Unreachable(format!("no endpoint for {domain}"))))
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> RegistryError {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    RegistryError::Unreachable(format!("Get \"{url}\": {msg}"))
}

#[derive(Debug, Clone)]
enum AuthState {
    None,
    Basic,
    Bearer {
        challenge: (String, String),
        token: Option<String>,
    },
}

impl AuthState {
    fn from_ping(c: Option<Challenge>) -> Self {
        match c {
            Some(Challenge::Basic) => AuthState::Basic,
            Some(Challenge::Bearer { realm, service, .. }) => AuthState::Bearer {
                challenge: (realm, service),
                token: None,
            },
            None => AuthState::None,
        }
    }
}

/// Talks to one repository of one registry.
#[derive(Clone)]
pub struct Session {
    http: reqwest::Client,
    base: String,
    path: String,
    actions: &'static str,
    creds: Option<AuthConfig>,
    auth: Arc<Mutex<AuthState>>,
}

impl Session {
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base, self.path)
    }

    async fn fetch_token(&self, realm: &str, service: &str) -> Result<String> {
        if let Some(t) = self
            .creds
            .as_ref()
            .map(|c| c.registry_token.clone())
            .filter(|t| !t.is_empty())
        {
            return Ok(t);
        }
        // a login asks for a token without a repository
        let scope = if self.path.is_empty() {
            String::new()
        } else {
            format!("repository:{}:{}", self.path, self.actions)
        };
        let mut url = url::Url::parse(realm)
            .map_err(|e| RegistryError::Invalid(format!("token realm {realm:?}: {e}")))?;
        let req = match self.creds.as_ref().filter(|c| !c.identity_token.is_empty()) {
            Some(c) => self.http.post(url.clone()).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", c.identity_token.as_str()),
                ("service", service),
                ("scope", scope.as_str()),
                ("client_id", "berth"),
                ("access_type", "offline"),
            ]),
            None => {
                {
                    let mut q = url.query_pairs_mut();
                    if !service.is_empty() {
                        q.append_pair("service", service);
                    }
                    if !scope.is_empty() {
                        q.append_pair("scope", &scope);
                    }
                }
                let mut req = self.http.get(url.clone());
                if let Some(c) = self.creds.as_ref().filter(|c| !c.username.is_empty()) {
                    req = req.basic_auth(&c.username, Some(&c.password));
                }
                req
            }
        };
        let r = req
            .send()
            .await
            .map_err(|e| unreachable(url.as_str(), &e))?;
        let status = r.status();
        let body = r.bytes().await.map_err(|e| unreachable(url.as_str(), &e))?;
        if !status.is_success() {
            let why = describe_errors(&body)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(
                if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                    RegistryError::Denied(format!("unauthorized: {why}"))
                } else {
                    RegistryError::Status(status, format!("getting a token: {status}: {why}"))
                },
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Invalid(format!("token response: {e}")))?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| RegistryError::Invalid("token response without a token".into()))
    }

    /// Sends a request with the session's authorization; on 401 answers the challenge
    /// (new token, or basic credentials) and tries once more.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        for attempt in 0..2 {
            let state = self.auth.lock().await.clone();
            let mut req = build(self.http.request(method.clone(), url));
            match &state {
                AuthState::Basic => {
                    if let Some(c) = self.creds.as_ref().filter(|c| !c.username.is_empty()) {
                        req = req.basic_auth(&c.username, Some(&c.password));
                    }
                }
                AuthState::Bearer { token: Some(t), .. } => req = req.bearer_auth(t),
                AuthState::Bearer {
                    challenge: (realm, service),
                    token: None,
                } => {
                    let t = self.fetch_token(realm, service).await?;
                    *self.auth.lock().await = AuthState::Bearer {
                        challenge: (realm.clone(), service.clone()),
                        token: Some(t.clone()),
                    };
                    req = req.bearer_auth(t);
                }
                AuthState::None => {}
            }
            let r = req.send().await.map_err(|e| unreachable(url, &e))?;
            if r.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(r);
            }
            let challenge = r
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|h| h.to_str().ok())
                .and_then(parse_challenge);
            let next = AuthState::from_ping(challenge);
            let same_basic = matches!((&state, &next), (AuthState::Basic, AuthState::Basic));
            if matches!(next, AuthState::None) || same_basic {
                return Ok(r);
            }
            *self.auth.lock().await = next;
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Turns an error answer into an error, Docker's words where it has them.
    pub async fn error_of(r: reqwest::Response, what: &str) -> RegistryError {
        let status = r.status();
        let body = r.bytes().await.unwrap_or_default();
        let why = describe_errors(&body).unwrap_or_else(|| {
            let t = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_string();
            if t.is_empty() {
                status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                t
            }
        });
        match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound(format!("{what}: {why}")),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Denied(why),
            StatusCode::TOO_MANY_REQUESTS => {
                RegistryError::Status(status, format!("toomanyrequests: {why}"))
            }
            s => RegistryError::Status(
                s,
                format!("{what}: received unexpected HTTP status: {s}: {why}"),
            ),
        }
    }

    /// A manifest or index by tag or digest: its bytes (at most
    /// [`manifest::MAX_MANIFEST`]), media type and digest (checked when asked by digest).
    pub async fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String, Digest)> {
        let url = self.url(&format!("manifests/{reference}"));
        let r = self
            .send(Method::GET, &url, |b| {
                b.header(header::ACCEPT, manifest::ACCEPT)
            })
            .await?;
        if !r.status().is_success() {
            return Err(Self::error_of(r, "manifest").await);
        }
        let ct = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = read_capped(r, manifest::MAX_MANIFEST as u64, "manifest").await?;
        let digest = Digest::of(&bytes);
        if let Ok(want) = reference.parse::<Digest>() {
            if want != digest {
                return Err(RegistryError::Invalid(format!(
                    "manifest verification failed for digest {want}"
                )));
            }
        }
        Ok((bytes, ct, digest))
    }

    /// The repository's tags (`tags/list`, following `Link` pages; at most 10,000).
    pub async fn tags(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut url = self.url("tags/list");
        loop {
            let r = self.send(Method::GET, &url, |b| b).await?;
            if !r.status().is_success() {
                return Err(Self::error_of(r, "tags").await);
            }
            let next = r
                .headers()
                .get(header::LINK)
                .and_then(|h| h.to_str().ok())
                .and_then(|l| {
                    l.split_once('<')?
                        .1
                        .split_once('>')
                        .map(|(u, _)| u.to_string())
                });
            let body = read_capped(r, manifest::MAX_MANIFEST as u64, "tags").await?;
            let v: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| RegistryError::Invalid(format!("tags list: {e}")))?;
            out.extend(
                v["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(str::to_string)),
            );
            match next {
                // a relative link, on the same host
                Some(n) if n.starts_with('/') && out.len() < 10_000 => {
                    url = format!("{}{n}", self.base);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// A small blob (a config) read whole and checked against its digest.
    pub async fn small_blob(&self, d: &Digest, max: u64) -> Result<Vec<u8>> {
        let r = self.blob(d, 0).await?;
        let bytes = read_capped(r, max, "config").await?;
        if Digest::of(&bytes) != *d {
            return Err(RegistryError::Invalid(format!(
                "blob {d} does not match its digest"
            )));
        }
        Ok(bytes)
    }

    /// A blob's response, from byte `from` on (a resumed download).
    pub async fn blob(&self, d: &Digest, from: u64) -> Result<reqwest::Response> {
        let url = self.url(&format!("blobs/{d}"));
        let r = self
            .send(Method::GET, &url, |b| {
                if from > 0 {
                    b.header(header::RANGE, format!("bytes={from}-"))
                } else {
                    b
                }
            })
            .await?;
        if !r.status().is_success() {
            return Err(Self::error_of(r, &format!("blob {d}")).await);
        }
        Ok(r)
    }
}

impl Session {
    /// Checks the session's credentials against the registry (`docker login`): `/v2/`
    /// must answer 200 once the challenge is met with them.
    pub async fn check_login(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        let r = match self.send(Method::GET, &url, |b| b).await {
            Err(RegistryError::Denied(_)) => {
                return Err(RegistryError::Denied(format!(
                    "login attempt to {url} failed with status: 401 Unauthorized"
                )))
            }
            r => r?,
        };
        if r.status().is_success() {
            return Ok(());
        }
        let status = r.status();
        Err(RegistryError::Denied(format!(
            "login attempt to {url} failed with status: {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or_default()
        )))
    }

    /// Whether the repository has blob `d` (its size when it does).
    pub async fn blob_exists(&self, d: &Digest) -> Result<Option<u64>> {
        let url = self.url(&format!("blobs/{d}"));
        let r = self.send(Method::HEAD, &url, |b| b).await?;
        match r.status() {
            s if s.is_success() => Ok(Some(r.content_length().unwrap_or(0))),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::error_of(r, &format!("blob {d}")).await),
        }
    }

    /// Asks the registry to mount blob `d` from repository `from` (same registry);
    /// false when it would not (the upload it started instead is cancelled).
    pub async fn mount_blob(&self, d: &Digest, from: &str) -> Result<bool> {
        let url = format!(
            "{}?mount={}&from={}",
            self.url("blobs/uploads/"),
            d,
            url::form_urlencoded::byte_serialize(from.as_bytes()).collect::<String>()
        );
        let r = self
            .send(Method::POST, &url, |b| b.header(header::CONTENT_LENGTH, 0))
            .await?;
        match r.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(loc) = self.location(&r) {
                    let _ = self.send(Method::DELETE, &loc, |b| b).await;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    fn location(&self, r: &reqwest::Response) -> Result<String> {
        let loc = r
            .headers()
            .get(header::LOCATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| RegistryError::Invalid("upload answer without a Location".into()))?;
        let base =
            url::Url::parse(r.url().as_str()).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        base.join(loc)
            .map(|u| u.to_string())
            .map_err(|e| RegistryError::Invalid(format!("upload location {loc:?}: {e}")))
    }

    /// Uploads blob `d` (`size` bytes from `body()`) in one request after starting the
    /// upload session. `body` is called once per attempt.
    pub async fn upload_blob(
        &self,
        d: &Digest,
        size: u64,
        body: impl Fn() -> reqwest::Body,
    ) -> Result<()> {
        let start = self.url("blobs/uploads/");
        let r = self
            .send(Method::POST, &start, |b| {
                b.header(header::CONTENT_LENGTH, 0)
            })
            .await?;
        if r.status() != StatusCode::ACCEPTED {
            return Err(Self::error_of(r, "starting a blob upload").await);
        }
        let loc = self.location(&r)?;
        let mut url = url::Url::parse(&loc).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        url.query_pairs_mut().append_pair("digest", &d.to_string());
        let r = self
            .send(Method::PUT, url.as_str(), |b| {
                b.header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, size)
                    .body(body())
            })
            .await?;
        if r.status() != StatusCode::CREATED {
            return Err(Self::error_of(r, &format!("uploading blob {d}")).await);
        }
        Ok(())
    }

    /// Puts a manifest under `reference` (a tag); returns its digest.
    pub async fn put_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Digest> {
        let digest = Digest::of(&bytes);
        let url = self.url(&format!("manifests/{reference}"));
        let r = self
            .send(Method::PUT, &url, |b| {
                b.header(header::CONTENT_TYPE, media_type)
                    .body(bytes.clone())
            })
            .await?;
        if r.status() != StatusCode::CREATED && !r.status().is_success() {
            return Err(Self::error_of(r, "manifest").await);
        }
        Ok(digest)
    }
}

async fn read_capped(r: reqwest::Response, max: u64, what: &str) -> Result<Vec<u8>> {
    if r.content_length().is_some_and(|n| n > max) {
        return Err(RegistryError::Invalid(format!(
            "{what} too large: {} bytes (at most {max})",
            r.content_length().unwrap_or(0)
        )));
    }
    let mut out = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk =
            chunk.map_err(|e| RegistryError::Unreachable(format!("reading {what}: {e}")))?;
        if out.len() as u64 + chunk.len() as u64 > max {
            return Err(RegistryError::Invalid(format!(
                "{what} too large (more than {max} bytes)"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registries() {
        let s = Settings {
            mirrors: vec![],
            insecure: vec!["myreg:5000".into(), "10.1.0.0/16".into(), "plain".into()],
        };
        assert!(s.is_insecure("localhost:5000"));
        assert!(s.is_insecure("127.0.0.1:8080"));
        assert!(s.is_insecure("[::1]:5000"));
        assert!(s.is_insecure("myreg:5000"));
        assert!(!s.is_insecure("myreg:5001"));
        assert!(s.is_insecure("plain"));
        assert!(s.is_insecure("10.1.2.3:5000"));
        assert!(!s.is_insecure("10.2.0.1:5000"));
        assert!(!s.is_insecure("registry-1.docker.io"));
    }

    #[test]
    fn error_bodies_in_dockers_words() {
        assert_eq!(
            describe_errors(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#).as_deref(),
            Some("manifest unknown: manifest unknown")
        );
        assert_eq!(describe_errors(b"nope"), None);
    }
}
