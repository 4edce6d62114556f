//! `pull`: asks berthd to pull, showing its progress as docker does (a bar per layer
//! on a terminal, status lines otherwise, only the reference with `-q`). Credentials
//! for the image's registry come from the docker-compatible config file.

use crate::client::{each_json_line, Client, ReqBody};
use anyhow::{bail, Context, Result};
use base64::Engine;
use clap::Args;
use http::Method;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// Skip image verification
    #[arg(long, default_value_t = true)]
    pub disable_content_trust: bool,
    pub name: String,
}

/// The directory of the client's config.json: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> std::path::PathBuf {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => d.into(),
        None => {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".docker")
        }
    }
}

/// The registry host of an image reference, as config.json keys it (Docker Hub as
/// `https://index.docker.io/v1/`).
pub fn registry_of(image: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    let has_domain =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain && first != "docker.io" && first != "index.docker.io" {
        first.to_string()
    } else {
        "https://index.docker.io/v1/".to_string()
    }
}

/// The client's config.json, or `{}`.
pub(crate) fn read_config() -> Value {
    std::fs::read_to_string(config_dir().join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}))
}

/// Writes config.json whole (a temporary file renamed over it), readable by its owner only.
pub(crate) fn write_config(v: &Value) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = config_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let path = dir.join("config.json");
    let tmp = dir.join(".config.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, serde_json::to_string_pretty(v)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn bare(k: &str) -> String {
    k.trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// The credential helper for `registry`: `credHelpers` first, then `credsStore`.
fn helper_for(cfg: &Value, registry: &str) -> Option<String> {
    cfg["credHelpers"]
        .as_object()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| bare(k) == bare(registry))
                .and_then(|(_, v)| v.as_str())
        })
        .or_else(|| cfg["credsStore"].as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin; its stdout.
fn run_helper(helper: &str, action: &str, input: &str) -> Result<String> {
    use std::io::Write;
    let prog = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&prog)
        .arg(action)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("error getting credentials - err: exec: \"{prog}\": {e}"))?;
    if let Some(mut w) = child.stdin.take() {
        w.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        bail!(
            "{prog} {action}: {}",
            if text.is_empty() {
                String::from_utf8_lossy(&out.stderr).trim().to_string()
            } else {
                text
            }
        );
    }
    Ok(text)
}

/// Stored credentials for `registry`: (username, secret); an identity token has the
/// username `<token>`.
fn stored_credentials(registry: &str) -> Option<(String, String)> {
    let cfg = read_config();
    if let Some(h) = helper_for(&cfg, registry) {
        let out = run_helper(&h, "get", registry).ok()?;
        let v: Value = serde_json::from_str(&out).ok()?;
        return Some((
            v["Username"].as_str()?.to_string(),
            v["Secret"].as_str()?.to_string(),
        ));
    }
    let auths = cfg["auths"].as_object()?;
    let entry = auths.iter().find(|(k, _)| bare(k) == bare(registry))?.1;
    if let Some(t) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Some(("<token>".into(), t.to_string()));
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry["auth"].as_str()?.trim())
        .ok()?;
    let (u, p) = String::from_utf8_lossy(&raw)
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some((u, p))
}

/// The `X-Registry-Auth` value for `registry` from config.json or its credential
/// helper, if any.
pub fn auth_header(registry: &str) -> Option<String> {
    let (user, secret) = stored_credentials(registry)?;
    let mut out = serde_json::json!({"serveraddress": registry});
    if user == "<token>" {
        out["identitytoken"] = Value::from(secret);
    } else {
        out["username"] = Value::from(user);
        out["password"] = Value::from(secret);
    }
    Some(base64::engine::general_purpose::URL_SAFE.encode(out.to_string()))
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// The registry (Docker Hub when left out)
    pub server: Option<String>,
}

const HUB_KEY: &str = "https://index.docker.io/v1/";

/// The config.json key for a server as given to login/logout.
fn server_key(server: Option<&str>) -> String {
    match server.map(bare).as_deref() {
        None
        | Some("")
        | Some("docker.io")
        | Some("index.docker.io")
        | Some("index.docker.io/v1")
        | Some("registry-1.docker.io") => HUB_KEY.to_string(),
        Some(s) => s.to_string(),
    }
}

/// Reads a line from the terminal without echoing it.
fn read_hidden(prompt: &str) -> Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    eprint!("{prompt}");
    let stdin = std::io::stdin();
    let old = tcgetattr(&stdin).ok();
    if let Some(t) = &old {
        let mut t2 = t.clone();
        t2.local_modes.remove(LocalModes::ECHO);
        let _ = tcsetattr(&stdin, OptionalActions::Now, &t2);
    }
    let mut line = String::new();
    let r = stdin.read_line(&mut line);
    if let Some(t) = &old {
        let _ = tcsetattr(&stdin, OptionalActions::Now, t);
    }
    eprintln!();
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn login(c: &Client, a: LoginArgs) -> Result<()> {
    let key = server_key(a.server.as_deref());
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let interactive = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if a.password_stdin => bail!("Must provide --username with --password-stdin"),
        None if !interactive => {
            bail!("Cannot perform an interactive login from a non TTY device")
        }
        None => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin().read_line(&mut u)?;
            u.trim().to_string()
        }
    };
    let password = if a.password_stdin {
        let mut p = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)?;
        p.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if interactive {
        read_hidden("Password: ")?
    } else {
        bail!("Cannot perform an interactive login from a non TTY device")
    };
    if username.is_empty() || password.is_empty() {
        bail!("Username and password are required");
    }
    let body =
        serde_json::json!({"username": username, "password": password, "serveraddress": key});
    let resp = c
        .request(
            Method::POST,
            "/auth",
            ReqBody::Full(Some(body.to_string().into())),
            &[("Content-Type", "application/json".into())],
        )
        .await?;
    let v = crate::client::read_json(resp).await?;
    let token = v["IdentityToken"].as_str().unwrap_or_default().to_string();
    let mut cfg = read_config();
    let (user, secret) = if token.is_empty() {
        (username.clone(), password.clone())
    } else {
        ("<token>".to_string(), token.clone())
    };
    if let Some(h) = helper_for(&cfg, &key) {
        let input = serde_json::json!({"ServerURL": key, "Username": user, "Secret": secret});
        run_helper(&h, "store", &input.to_string())?;
        cfg["auths"][&key] = serde_json::json!({});
        write_config(&cfg)?;
    } else {
        let entry = if token.is_empty() {
            serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"))})
        } else {
            serde_json::json!({"identitytoken": token})
        };
        if !cfg["auths"].is_object() {
            cfg["auths"] = serde_json::json!({});
        }
        cfg["auths"][&key] = entry;
        let path = write_config(&cfg)?;
        eprintln!(
            "WARNING! Your credentials are stored unencrypted in '{}'.\nConfigure a credential helper to remove this warning.",
            path.display()
        );
    }
    println!("Login Succeeded");
    Ok(())
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (Docker Hub when left out)
    pub server: Option<String>,
}

pub async fn logout(_c: &Client, a: LogoutArgs) -> Result<()> {
    let key = server_key(a.server.as_deref());
    let mut cfg = read_config();
    let helper = helper_for(&cfg, &key);
    let stored = cfg["auths"]
        .as_object()
        .and_then(|m| m.keys().find(|k| bare(k) == bare(&key)).cloned());
    if stored.is_none() && helper.is_none() {
        println!("Not logged in to {key}");
        return Ok(());
    }
    println!("Removing login credentials for {key}");
    if let Some(h) = helper {
        let _ = run_helper(&h, "erase", &key);
    }
    if let (Some(k), Some(m)) = (stored, cfg["auths"].as_object_mut()) {
        m.remove(&k);
        write_config(&cfg)?;
    }
    Ok(())
}

/// A reference's name and its tag or digest, if it has one (`host:port/x` has none).
fn split_tag(image: &str) -> (String, Option<String>) {
    if let Some((n, d)) = image.rsplit_once('@') {
        return (n.to_string(), Some(d.to_string()));
    }
    match image.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n.to_string(), Some(t.to_string())),
        _ => (image.to_string(), None),
    }
}

/// The name docker prints for a reference: with `:latest` when it has no tag.
pub fn tagged(name: &str) -> String {
    match split_tag(name) {
        (_, Some(_)) => name.to_string(),
        (n, None) => format!("{n}:latest"),
    }
}

pub async fn pull(c: &Client, a: PullArgs) -> Result<()> {
    if a.all_tags {
        if a.name.contains('@') || split_tag(&a.name).1.is_some() {
            bail!("tag can't be used with --all-tags/-a");
        }
        let resp = request_pull(c, &a.name, None, a.platform.as_deref()).await?;
        render(resp, a.quiet, false).await?;
        println!("{}", canonical(&a.name));
        return Ok(());
    }
    let full = tagged(&a.name);
    pull_image(c, &full, a.platform.as_deref(), a.quiet, false).await?;
    // docker ends with the fully qualified name, quiet or not
    println!("{}", canonical(&full));
    Ok(())
}

/// `busybox:latest` → `docker.io/library/busybox:latest`; a name with a registry host
/// stays as it is.
pub fn canonical(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    if !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost") {
        name.to_string()
    } else if first.is_empty() {
        format!("docker.io/library/{rest}")
    } else {
        format!("docker.io/{name}")
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Push a platform-specific manifest as a single-platform image
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    /// Skip image signing
    #[arg(long, default_value_t = true)]
    pub disable_content_trust: bool,
    pub name: String,
}

pub async fn push(c: &Client, a: PushArgs) -> Result<()> {
    let (name, tag) = match split_tag(&a.name) {
        (_, Some(_)) if a.all_tags => bail!("tag can't be used with --all-tags/-a"),
        (n, Some(t)) => (n, t),
        (n, None) if a.all_tags => (n, String::new()),
        (n, None) => {
            if !a.quiet {
                println!("Using default tag: latest");
            }
            (n, "latest".to_string())
        }
    };
    let mut path = format!("/images/{}/push", name);
    if !tag.is_empty() {
        path.push_str(&format!("?tag={}", super::q(&tag)));
    }
    let auth = auth_header(&registry_of(&name)).unwrap_or_else(|| "e30=".to_string());
    let resp = c
        .request(
            Method::POST,
            &path,
            ReqBody::Full(None),
            &[("X-Registry-Auth", auth)],
        )
        .await?;
    render(resp, a.quiet, false).await?;
    if a.quiet {
        println!(
            "{}",
            if tag.is_empty() {
                name
            } else {
                format!("{name}:{tag}")
            }
        );
    }
    Ok(())
}

/// Pulls `image`, rendering progress to stdout (to stderr with `to_stderr`, as `run`
/// does); the daemon's error, if any, is returned.
pub async fn pull_image(
    c: &Client,
    image: &str,
    platform: Option<&str>,
    quiet: bool,
    to_stderr: bool,
) -> Result<()> {
    let (name, tag) = split_tag(image);
    let tag = tag.unwrap_or_else(|| "latest".to_string());
    let resp = request_pull(c, &name, Some(&tag), platform).await?;
    render(resp, quiet, to_stderr).await
}

/// `POST /images/create?fromImage=` with the registry's credentials; no tag: all tags.
async fn request_pull(
    c: &Client,
    name: &str,
    tag: Option<&str>,
    platform: Option<&str>,
) -> Result<http::Response<hyper::body::Incoming>> {
    let mut path = format!("/images/create?fromImage={}", super::q(name));
    if let Some(t) = tag {
        path.push_str(&format!("&tag={}", super::q(t)));
    }
    if let Some(p) = platform {
        path.push_str(&format!("&platform={}", super::q(p)));
    }
    let mut headers = Vec::new();
    if let Some(h) = auth_header(&registry_of(name)) {
        headers.push(("X-Registry-Auth", h));
    }
    c.request(Method::POST, &path, ReqBody::Full(None), &headers)
        .await
}

/// Shows a pull's or push's progress stream (to stderr with `to_stderr`); the daemon's
/// error, if the stream ends with one.
async fn render(
    resp: http::Response<hyper::body::Incoming>,
    quiet: bool,
    to_stderr: bool,
) -> Result<()> {
    let tty = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let mut view = Progress::new(tty && !quiet, to_stderr);
    let mut failure = None;
    each_json_line(resp, |m| {
        if let Some(e) = m["errorDetail"]["message"].as_str().or(m["error"].as_str()) {
            failure = Some(e.to_string());
        } else if !quiet {
            view.show(m);
        }
        Ok(())
    })
    .await?;
    view.finish();
    if let Some(f) = failure {
        bail!(f);
    }
    Ok(())
}

/// Docker's pull display: a line per layer, updated in place on a terminal.
struct Progress {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    to_stderr: bool,
    /// the last status printed per layer, off a terminal
    last: HashMap<String, String>,
}

impl Progress {
    fn new(tty: bool, to_stderr: bool) -> Self {
        let multi = tty.then(|| {
            MultiProgress::with_draw_target(if to_stderr {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::stdout()
            })
        });
        Progress {
            multi,
            bars: HashMap::new(),
            to_stderr,
            last: HashMap::new(),
        }
    }

    fn say(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None if self.to_stderr => eprintln!("{line}"),
            None => println!("{line}"),
        }
    }

    fn show(&mut self, m: &Value) {
        // aux messages (a push's digest) carry no status
        let Some(status) = m["status"].as_str() else {
            return;
        };
        let Some(id) = m["id"].as_str() else {
            self.say(status);
            return;
        };
        // the first line names the tag being pulled
        if status.starts_with("Pulling from") {
            self.say(&format!("{id}: {status}"));
            return;
        }
        let Some(multi) = &self.multi else {
            if status != "Downloading"
                && status != "Extracting"
                && self.last.get(id).map(String::as_str) != Some(status)
            {
                self.last.insert(id.to_string(), status.to_string());
                self.say(&format!("{id}: {status}"));
            }
            return;
        };
        let bar = self.bars.entry(id.to_string()).or_insert_with(|| {
            let b = multi.add(ProgressBar::new(0));
            b.set_style(plain_style());
            b.set_prefix(id.to_string());
            b
        });
        let current = m["progressDetail"]["current"].as_u64();
        let total = m["progressDetail"]["total"].as_u64();
        match (current, total) {
            (Some(c), Some(t)) if t > 0 => {
                bar.set_style(bar_style());
                bar.set_length(t);
                bar.set_position(c);
            }
            _ => bar.set_style(plain_style()),
        }
        bar.set_message(status.to_string());
        if matches!(
            status,
            "Pull complete" | "Already exists" | "Pushed" | "Layer already exists"
        ) || status.starts_with("Mounted from")
        {
            bar.finish();
        }
    }

    fn finish(&mut self) {
        for b in self.bars.values() {
            if !b.is_finished() {
                b.finish();
            }
        }
    }
}

fn plain_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: {msg:<12} [{bar:50}] {bytes}/{total_bytes}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_of_references() {
        assert_eq!(registry_of("busybox"), "https://index.docker.io/v1/");
        assert_eq!(
            registry_of("library/busybox:1"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(registry_of("docker.io/x/y"), "https://index.docker.io/v1/");
        assert_eq!(registry_of("localhost:5000/x"), "localhost:5000");
        assert_eq!(registry_of("reg.example.com/a/b:1"), "reg.example.com");
        assert_eq!(tagged("busybox"), "busybox:latest");
        assert_eq!(canonical("busybox:1"), "docker.io/library/busybox:1");
        assert_eq!(canonical("a/b:1"), "docker.io/a/b:1");
        assert_eq!(canonical("localhost/b:1"), "localhost/b:1");
        assert_eq!(canonical("127.0.0.1:5000/b:1"), "127.0.0.1:5000/b:1");
        assert_eq!(tagged("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(tagged("localhost:5000/x:v1"), "localhost:5000/x:v1");
        assert_eq!(tagged("x@sha256:ab"), "x@sha256:ab");
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub addr: String,
    /// Directory of the registry's storage
    #[arg(long, default_value = "/var/lib/berth-registry")]
    pub root: PathBuf,
    /// Require basic credentials from this htpasswd file (bcrypt)
    #[arg(long)]
    pub htpasswd: Option<PathBuf>,
    /// Serve HTTPS with this certificate (PEM)
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// ... and this key (PEM)
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse every write
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    /// Directory of the registry's storage
    #[arg(long, default_value = "/var/lib/berth-registry")]
    pub root: PathBuf,
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).with_context(|| format!("reading {}", cert.display()))?,
    ))
    .collect::<std::result::Result<_, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("reading {}", key.display()))?,
    ))?
    .ok_or_else(|| anyhow::anyhow!("no private key in {}", key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg)))
}

/// `berth registry serve`: a registry of our own, until interrupted.
pub async fn serve(a: ServeArgs) -> Result<()> {
    use berth_registry::server::{read_htpasswd, Registry, ServerConfig};
    let htpasswd = match &a.htpasswd {
        Some(p) => Some(read_htpasswd(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let reg = std::sync::Arc::new(
        Registry::new(ServerConfig {
            root: a.root.clone(),
            htpasswd,
            read_only: a.read_only,
        })
        .with_context(|| format!("opening {}", a.root.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(&a.addr)
        .await
        .with_context(|| format!("listening on {}", a.addr))?;
    eprintln!(
        "berth registry serving {} on {}://{}",
        a.root.display(),
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    tokio::select! {
        r = berth_registry::server::serve(reg, listener, tls) => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

/// `berth registry gc`: removes blobs no manifest names.
pub async fn gc(a: GcArgs) -> Result<()> {
    use berth_registry::server::{Registry, ServerConfig};
    let reg = Registry::new(ServerConfig {
        root: a.root.clone(),
        htpasswd: None,
        read_only: false,
    })?;
    let removed = reg.gc()?;
    for d in &removed {
        println!("deleted {d}");
    }
    println!("{} blobs removed", removed.len());
    Ok(())
}
