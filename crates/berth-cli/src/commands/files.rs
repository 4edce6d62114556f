//! cp, diff, export.

use crate::client::{blocking_reader, writer_body, Client, DaemonError, ReqBody};
use anyhow::{anyhow, bail, Result};
use base64::Engine;
use clap::Args;
use http::{Method, StatusCode};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short, long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long)]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short, long)]
    pub quiet: bool,
    pub src: String,
    pub dest: String,
}

/// `CONTAINER:PATH` → (container, path); a local path has no container.
fn split_arg(arg: &str) -> (Option<&str>, &str) {
    if arg.starts_with('/') || arg.starts_with('.') {
        return (None, arg);
    }
    match arg.split_once(':') {
        Some((c, p)) if !c.is_empty() && !c.contains('/') => (Some(c), p),
        _ => (None, arg),
    }
}

/// The path stat of a container path (HEAD archive), or None when it does not exist.
async fn stat(c: &Client, ctr: &str, path: &str) -> Result<Option<Value>> {
    let resp = c
        .request(
            Method::HEAD,
            &format!("/containers/{ctr}/archive?path={}", super::q(path)),
            ReqBody::Empty,
            &[],
        )
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            if let Some(d) = e.downcast_ref::<DaemonError>() {
                if d.status == StatusCode::NOT_FOUND {
                    // a missing container is an error; a missing path is an answer
                    if c.get_json(&format!("/containers/{ctr}/json"))
                        .await
                        .is_err()
                    {
                        bail!("No such container: {ctr}");
                    }
                    return Ok(None);
                }
            }
            return Err(e);
        }
    };
    let header = resp
        .headers()
        .get("X-Docker-Container-Path-Stat")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json = base64::engine::general_purpose::STANDARD
        .decode(header)
        .map_err(|e| anyhow!("bad path stat from the daemon: {e}"))?;
    Ok(Some(serde_json::from_slice(&json)?))
}

fn is_dir_mode(st: &Value) -> bool {
    st["mode"].as_u64().unwrap_or(0) & (1 << 31) != 0
}

fn is_link_mode(st: &Value) -> bool {
    st["mode"].as_u64().unwrap_or(0) & (1 << 27) != 0
}

fn done(quiet: bool, bytes: u64, dest: &str) {
    if !quiet && std::io::stderr().is_terminal() {
        eprintln!(
            "Successfully copied {} to {dest}",
            crate::format::human_size_prec(bytes as f64, 3)
        );
    }
}

pub async fn cp(c: &Client, a: CpArgs) -> Result<()> {
    match (split_arg(&a.src), split_arg(&a.dest)) {
        ((Some(ctr), src), (None, dest)) => copy_out(c, &a, ctr, src, dest).await,
        ((None, src), (Some(ctr), dest)) => copy_in(c, &a, src, ctr, dest).await,
        ((Some(_), _), (Some(_), _)) => bail!("copying between containers is not supported"),
        ((None, _), (None, _)) => bail!("must specify at least one container source"),
    }
}

async fn copy_out(c: &Client, a: &CpArgs, ctr: &str, src: &str, dest: &str) -> Result<()> {
    let mut src = src.to_string();
    let mut st = stat(c, ctr, &src)
        .await?
        .ok_or_else(|| anyhow!("Could not find the file {src} in container {ctr}"))?;
    if a.follow_link && is_link_mode(&st) {
        let target = st["linkTarget"].as_str().unwrap_or_default().to_string();
        if !target.is_empty() {
            src = target;
            st = stat(c, ctr, &src)
                .await?
                .ok_or_else(|| anyhow!("Could not find the file {src} in container {ctr}"))?;
        }
    }
    let resp = c
        .request(
            Method::GET,
            &format!("/containers/{ctr}/archive?path={}", super::q(&src)),
            ReqBody::Empty,
            &[],
        )
        .await?;
    let reader = blocking_reader(resp);
    if dest == "-" {
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let mut r = reader;
            let mut out = std::io::stdout().lock();
            Ok(std::io::copy(&mut r, &mut out)?)
        })
        .await??;
        return Ok(());
    }
    let dest_path = PathBuf::from(dest);
    let src_is_dir = is_dir_mode(&st);
    let src_name = st["name"].as_str().unwrap_or_default().to_string();
    let dest_exists = dest_path.exists();
    if !dest_exists && dest.ends_with('/') && !src_is_dir {
        bail!("destination directory {dest} does not exist");
    }
    // `dir/.` copies the contents, and so does the root (its entries are `/NAME`)
    let contents_only = src.ends_with("/.") || src_name == "/";
    let n = tokio::task::spawn_blocking(move || -> Result<u64> {
        let counted = Counted(reader, 0);
        let mut ar = tar::Archive::new(counted);
        ar.set_preserve_permissions(true);
        ar.set_preserve_mtime(true);
        ar.set_overwrite(true);
        if dest_exists && dest_path.is_dir() {
            // into the directory: as SRC's name (or its contents for `dir/.`)
            ar.unpack(&dest_path)?;
        } else if dest_exists && src_is_dir {
            bail!("cannot copy a directory to a file: {}", dest_path.display());
        } else {
            // as DEST: unpack beside it, then give it DEST's name
            let parent = dest_path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf();
            if !parent.is_dir() {
                bail!("destination directory {} does not exist", parent.display());
            }
            let tmp = tempdir_in(&parent)?;
            let r = (|| -> Result<()> {
                ar.unpack(&tmp)?;
                // `dir/.` copies the contents: the temporary directory becomes DEST
                let top = if contents_only {
                    tmp.clone()
                } else {
                    tmp.join(&src_name)
                };
                std::fs::rename(&top, &dest_path)
                    .map_err(|e| anyhow!("{}: {e}", dest_path.display()))?;
                Ok(())
            })();
            let _ = std::fs::remove_dir_all(&tmp);
            r?;
        }
        Ok(ar.into_inner().1)
    })
    .await??;
    done(a.quiet, n, dest);
    Ok(())
}

fn tempdir_in(parent: &Path) -> Result<PathBuf> {
    for _ in 0..100 {
        let p = parent.join(format!(".berth-cp-{:08x}", rand_u32()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(anyhow!("{}: {e}", parent.display())),
        }
    }
    bail!("cannot make a temporary directory in {}", parent.display())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// Counts what passes through a reader.
struct Counted<R>(R, u64);
impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
}

async fn copy_in(c: &Client, a: &CpArgs, src: &str, ctr: &str, dest: &str) -> Result<()> {
    let query = |path: &str| {
        format!(
            "/containers/{ctr}/archive?path={}&noOverwriteDirNonDir=true&copyUIDGID={}",
            super::q(path),
            a.archive
        )
    };
    if src == "-" {
        // stdin is a tar for the directory DEST
        let body = crate::client::file_body(Some("-"))?;
        c.request(
            Method::PUT,
            &query(dest),
            body,
            &[("Content-Type", "application/x-tar".into())],
        )
        .await?;
        return Ok(());
    }
    let mut src_path = PathBuf::from(src);
    if a.follow_link {
        src_path = std::fs::canonicalize(&src_path).map_err(|e| anyhow!("{src}: {e}"))?;
    }
    let md = std::fs::symlink_metadata(&src_path).map_err(|e| anyhow!("{src}: {e}"))?;
    let contents_only = src.ends_with("/.");
    let src_name = src_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| ".".into());
    let st = stat(c, ctr, dest).await?;
    if contents_only && st.is_none() {
        bail!("destination directory {dest} does not exist in container {ctr}");
    }
    let (put_at, as_name) = match &st {
        Some(st) if is_dir_mode(st) => (dest.to_string(), src_name.clone()),
        Some(_) if md.is_dir() => bail!("cannot copy a directory to a file: {dest}"),
        _ => {
            if st.is_none() && dest.ends_with('/') {
                bail!("destination directory {dest} does not exist in container {ctr}");
            }
            let p = Path::new(dest);
            let parent = p
                .parent()
                .map(|x| x.to_string_lossy().into_owned())
                .filter(|x| !x.is_empty())
                .unwrap_or_else(|| "/".into());
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (parent, name)
        }
    };
    let size = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = size.clone();
    let body = writer_body(move |w| {
        let mut b = tar::Builder::new(CountedW(w, counter));
        b.follow_symlinks(false);
        if md.is_dir() {
            if contents_only {
                b.append_dir_all(".", &src_path)?;
            } else {
                b.append_dir_all(&as_name, &src_path)?;
            }
        } else {
            b.append_path_with_name(&src_path, &as_name)?;
        }
        b.finish()
    });
    c.request(
        Method::PUT,
        &query(&put_at),
        body,
        &[("Content-Type", "application/x-tar".into())],
    )
    .await?;
    done(
        a.quiet,
        size.load(std::sync::atomic::Ordering::SeqCst),
        &format!("{ctr}:{dest}"),
    );
    Ok(())
}

struct CountedW<'a>(
    &'a mut dyn Write,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
);
impl Write for CountedW<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(b)?;
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    pub container: String,
}

pub async fn diff(c: &Client, a: DiffArgs) -> Result<()> {
    let v = c
        .get_json(&format!("/containers/{}/changes", a.container))
        .await?;
    let mut out = String::new();
    for ch in v.as_array().into_iter().flatten() {
        let kind = match ch["Kind"].as_i64() {
            Some(1) => "A",
            Some(2) => "D",
            _ => "C",
        };
        out.push_str(&format!(
            "{kind} {}\n",
            ch["Path"].as_str().unwrap_or_default()
        ));
    }
    print!("{out}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub output: Option<String>,
    pub container: String,
}

pub async fn export(c: &Client, a: ExportArgs) -> Result<()> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let resp = c
        .request(
            Method::GET,
            &format!("/containers/{}/export", a.container),
            ReqBody::Empty,
            &[],
        )
        .await?;
    let mut reader = blocking_reader(resp);
    let output = a.output.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        match output {
            Some(p) => {
                let tmp = format!("{p}.berth-tmp");
                let mut f = std::fs::File::create(&tmp).map_err(|e| anyhow!("{tmp}: {e}"))?;
                std::io::copy(&mut reader, &mut f)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &p)?;
            }
            None => {
                let mut out = std::io::stdout().lock();
                std::io::copy(&mut reader, &mut out)?;
                out.flush()?;
            }
        }
        Ok(())
    })
    .await??;
    Ok(())
}

#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short, long, default_value = "true", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pause: bool,
    pub container: String,
    /// REPOSITORY[:TAG]
    pub reference: Option<String>,
}

pub async fn commit(c: &Client, a: CommitArgs) -> Result<()> {
    let mut query = format!(
        "/commit?container={}&pause={}",
        super::q(&a.container),
        a.pause
    );
    if let Some(r) = &a.reference {
        // the tag is after the last colon that is not part of a registry port
        let (repo, tag) = match r.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (r.as_str(), ""),
        };
        query.push_str(&format!("&repo={}", super::q(repo)));
        if !tag.is_empty() {
            query.push_str(&format!("&tag={}", super::q(tag)));
        }
    }
    if let Some(m) = &a.message {
        query.push_str(&format!("&comment={}", super::q(m)));
    }
    if let Some(au) = &a.author {
        query.push_str(&format!("&author={}", super::q(au)));
    }
    for ch in &a.change {
        query.push_str(&format!("&changes={}", super::q(ch)));
    }
    let resp = c
        .request(
            Method::POST,
            &query,
            ReqBody::Full(Some(b"{}".to_vec().into())),
            &[("Content-Type", "application/json".into())],
        )
        .await?;
    let v = crate::client::read_json(resp).await?;
    println!("{}", v["Id"].as_str().unwrap_or_default());
    Ok(())
}
