//! `berth build`: sends a directory (less what `.dockerignore` excludes), a tar, or a
//! lone Dockerfile as the build context, and shows the daemon's progress — a live view on
//! a terminal that folds each finished step's output away, plain lines otherwise.

use super::q;
use crate::client::{each_json_line, writer_body, Client};
use anyhow::{bail, Context as _, Result};
use berth_build::ignore::Ignore;
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Map, Value};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short, long = "tag")]
    pub tag: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short, long)]
    pub file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long)]
    pub no_cache: bool,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pub pull: bool,
    /// Set metadata for an image
    #[arg(long)]
    pub label: Vec<String>,
    /// Suppress the build output and print image ID on success
    #[arg(short, long)]
    pub quiet: bool,
    /// Set type of progress output ("auto", "plain", "tty")
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Remove intermediate containers after a successful build
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub rm: bool,
    /// Always remove intermediate containers
    #[arg(long)]
    pub force_rm: bool,
    /// Set the networking mode for the RUN instructions during build
    #[arg(long)]
    pub network: Option<String>,
    /// Add a custom host-to-IP mapping ("host:ip")
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Images to consider as cache sources
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Write the image ID to the file
    #[arg(long)]
    pub iidfile: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Compress the build context using gzip
    #[arg(long)]
    pub compress: bool,
    /// Size of /dev/shm for RUN steps
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Memory limit for RUN steps
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long = "memory-swap")]
    pub memory_swap: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// Limit the CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period")]
    pub cpu_period: Option<i64>,
    /// Limit the CPU CFS (Completely Fair Scheduler) quota
    #[arg(long = "cpu-quota")]
    pub cpu_quota: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems")]
    pub cpuset_mems: Option<String>,
    /// PATH | URL | -
    pub context: String,
}

#[derive(Debug, Subcommand)]
pub enum BuilderCmd {
    /// Build an image from a Dockerfile
    Build(Box<BuildArgs>),
    /// Remove build cache
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

/// The context as a tar writer, and the Dockerfile's name inside it.
type Produce = Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + Send>;

fn dockerfile_name(context: &Path, file: Option<&str>) -> Result<(String, Option<Vec<u8>>)> {
    let Some(f) = file else {
        return Ok(("Dockerfile".into(), None));
    };
    if f == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        return Ok((extra_name(), Some(buf)));
    }
    let path = PathBuf::from(f);
    let abs = std::fs::canonicalize(&path)
        .with_context(|| format!("unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {f}: no such file or directory"))?;
    let ctx = std::fs::canonicalize(context)?;
    match abs.strip_prefix(&ctx) {
        Ok(rel) => Ok((rel.to_string_lossy().into_owned(), None)),
        // outside the context: sent along under a name of its own
        Err(_) => Ok((extra_name(), Some(std::fs::read(&abs)?))),
    }
}

fn extra_name() -> String {
    format!(".dockerfile.{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u64::from_le_bytes(b)
}

/// A directory's files in tar order, with `.dockerignore` applied (the Dockerfile and the
/// ignore file itself are always sent).
fn walk(root: &Path, ig: &Ignore, keep: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(dir) = todo.pop() {
        let mut names: Vec<String> = std::fs::read_dir(root.join(&dir))
            .with_context(|| format!("read {}", root.join(&dir).display()))?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for n in names.into_iter().rev() {
            let rel = if dir.is_empty() {
                n
            } else {
                format!("{dir}/{n}")
            };
            let excluded = rel != keep && rel != ".dockerignore" && ig.excluded(&rel);
            let md = std::fs::symlink_metadata(root.join(&rel))?;
            if md.is_dir() {
                // an excluded directory may still hold an exception
                if !excluded || ig.has_exceptions() {
                    todo.push(rel.clone());
                }
            }
            if !excluded {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn context_body(a: &BuildArgs) -> Result<(Produce, String)> {
    if a.context == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        let is_archive = buf.starts_with(&[0x1f, 0x8b])
            || buf.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || (buf.len() >= 512 && &buf[257..262] == b"ustar");
        if is_archive {
            let name = a.file.clone().unwrap_or_else(|| "Dockerfile".into());
            return Ok((Box::new(move |w| w.write_all(&buf)), name));
        }
        // a lone Dockerfile: no context
        return Ok((
            Box::new(move |w| {
                let mut t = tar::Builder::new(w);
                let mut h = tar::Header::new_gnu();
                h.set_size(buf.len() as u64);
                h.set_mode(0o644);
                t.append_data(&mut h, "Dockerfile", &buf[..])?;
                t.finish()
            }),
            "Dockerfile".into(),
        ));
    }
    if a.context.starts_with("http://")
        || a.context.starts_with("https://")
        || a.context.starts_with("git@")
    {
        bail!("building from a URL is not supported: clone or download it and build the directory");
    }
    let root = PathBuf::from(&a.context);
    if !root.is_dir() {
        bail!("unable to prepare context: path {:?} not found", a.context);
    }
    let (name, extra) = dockerfile_name(&root, a.file.as_deref())?;
    if extra.is_none() && !root.join(&name).exists() {
        bail!(
            "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: no such file or directory",
            root.join(&name).display()
        );
    }
    let ig =
        Ignore::parse(&std::fs::read_to_string(root.join(".dockerignore")).unwrap_or_default());
    let files = walk(&root, &ig, &name)?;
    let extra_name = name.clone();
    Ok((
        Box::new(move |w| {
            let mut t = tar::Builder::new(w);
            t.follow_symlinks(false);
            for f in &files {
                t.append_path_with_name(root.join(f), f)?;
            }
            if let Some(data) = extra {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                t.append_data(&mut h, &extra_name, &data[..])?;
            }
            t.finish()
        }),
        name,
    ))
}

fn json_map(items: &[String], what: &str, from_env: bool) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for it in items {
        match it.split_once('=') {
            Some((k, v)) => {
                m.insert(k.into(), Value::from(v));
            }
            None if from_env => {
                // `--build-arg NAME` takes the value from the environment, if set
                if let Ok(v) = std::env::var(it) {
                    m.insert(it.clone(), Value::from(v));
                }
            }
            None if what == "label" => {
                m.insert(it.clone(), Value::from(""));
            }
            None => bail!("invalid {what}: {it}"),
        }
    }
    Ok(m)
}

pub async fn build(c: &Client, a: BuildArgs) -> Result<()> {
    let (produce, dockerfile) = context_body(&a)?;
    let mut path = format!("/build?dockerfile={}", q(&dockerfile));
    for t in &a.tag {
        path.push_str(&format!("&t={}", q(t)));
    }
    let args = json_map(&a.build_arg, "build-arg", true)?;
    if !args.is_empty() {
        path.push_str(&format!(
            "&buildargs={}",
            q(&Value::Object(args).to_string())
        ));
    }
    let labels = json_map(&a.label, "label", false)?;
    if !labels.is_empty() {
        path.push_str(&format!(
            "&labels={}",
            q(&Value::Object(labels).to_string())
        ));
    }
    if !a.cache_from.is_empty() {
        path.push_str(&format!(
            "&cachefrom={}",
            q(&serde_json::to_string(&a.cache_from)?)
        ));
    }
    for (k, v) in [
        ("target", a.target.as_deref()),
        ("networkmode", a.network.as_deref()),
        ("platform", a.platform.as_deref()),
    ] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", q(v)));
        }
    }
    if !a.add_host.is_empty() {
        path.push_str(&format!("&extrahosts={}", q(&a.add_host.join(","))));
    }
    for (k, on) in [
        ("nocache", a.no_cache),
        ("pull", a.pull),
        ("q", a.quiet),
        ("forcerm", a.force_rm),
    ] {
        if on {
            path.push_str(&format!("&{k}=1"));
        }
    }
    path.push_str(if a.rm { "&rm=1" } else { "&rm=0" });
    let bytes = |v: &Option<String>| -> Result<Option<i64>> {
        match v.as_deref() {
            Some("-1") => Ok(Some(-1)),
            Some(v) => super::limits::parse_bytes(v).map(Some),
            None => Ok(None),
        }
    };
    for (k, v) in [
        ("shmsize", bytes(&a.shm_size)?),
        ("memory", bytes(&a.memory)?),
        ("memswap", bytes(&a.memory_swap)?),
        ("cpushares", a.cpu_shares),
        ("cpuperiod", a.cpu_period),
        ("cpuquota", a.cpu_quota),
    ] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={v}"));
        }
    }
    for (k, v) in [
        ("cpusetcpus", &a.cpuset_cpus),
        ("cpusetmems", &a.cpuset_mems),
    ] {
        if let Some(v) = v {
            path.push_str(&format!("&{k}={}", q(v)));
        }
    }
    let produce: Produce = if a.compress {
        Box::new(move |w: &mut dyn Write| {
            let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
            produce(&mut gz)?;
            gz.finish().map(drop)
        })
    } else {
        produce
    };
    let resp = c
        .request(
            Method::POST,
            &path,
            writer_body(produce),
            &[("Content-Type", "application/x-tar".into())],
        )
        .await?;
    if !resp.status().is_success() {
        let v = crate::client::read_json(resp).await.unwrap_or_default();
        bail!("{}", v["message"].as_str().unwrap_or("the build failed"));
    }
    let live = !a.quiet
        && match a.progress.as_str() {
            "plain" => false,
            "tty" => true,
            "auto" => std::io::stdout().is_terminal(),
            p => bail!("invalid progress type {p:?}: use auto, plain or tty"),
        };
    let mut view = View::new(live);
    let mut failure: Option<(String, i64)> = None;
    let mut id = String::new();
    each_json_line(resp, |m| {
        if let Some(e) = m["errorDetail"]["message"].as_str().or(m["error"].as_str()) {
            failure = Some((
                e.to_string(),
                m["errorDetail"]["code"].as_i64().unwrap_or(1),
            ));
        } else if let Some(i) = m["aux"]["ID"].as_str() {
            id = i.to_string();
        } else if let Some(s) = m["stream"].as_str() {
            if !a.quiet {
                view.text(s);
            }
        } else if let Some(s) = m["status"].as_str() {
            if !a.quiet {
                match m["id"].as_str() {
                    Some(i) => view.text(&format!("{i}: {s}\n")),
                    None => view.text(&format!("{s}\n")),
                }
            }
        }
        Ok(())
    })
    .await?;
    view.finish(failure.is_none());
    if let Some((msg, code)) = failure {
        eprintln!("{msg}");
        return Err(crate::Exit(if code == 0 { 1 } else { code as i32 }).into());
    }
    if a.quiet {
        println!("{id}");
    }
    if let Some(f) = &a.iidfile {
        std::fs::write(f, &id).with_context(|| format!("write {f}"))?;
    }
    Ok(())
}

/// The terminal view: a step's header stays, its output shows dimmed while it runs and
/// folds away when the next step starts (kept when the build fails).
struct View {
    live: bool,
    /// lines shown under the current step
    shown: usize,
    width: usize,
    partial: String,
}

impl View {
    fn new(live: bool) -> View {
        let width = rustix::termios::tcgetwinsize(std::io::stdout())
            .map(|w| w.ws_col as usize)
            .unwrap_or(80)
            .max(20);
        View {
            live,
            shown: 0,
            width,
            partial: String::new(),
        }
    }

    fn text(&mut self, s: &str) {
        let mut out = std::io::stdout().lock();
        if !self.live {
            let _ = out.write_all(s.as_bytes());
            let _ = out.flush();
            return;
        }
        self.partial.push_str(s);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial[..i].to_string();
            self.partial.drain(..=i);
            if line.starts_with("Step ") || line.starts_with("Successfully ") {
                self.fold(&mut out);
                let _ = writeln!(out, "\x1b[1m{line}\x1b[0m");
            } else if let Some(rest) = line.strip_prefix(" ---> ") {
                if rest.len() == 12 && rest.chars().all(|c| c.is_ascii_hexdigit()) {
                    // the step's image: fold its output, keep the result on the header
                    self.fold(&mut out);
                    let _ = writeln!(out, " ---> {rest}");
                } else {
                    self.dim(&mut out, &line);
                }
            } else {
                self.dim(&mut out, &line);
            }
        }
        let _ = out.flush();
    }

    fn dim(&mut self, out: &mut impl Write, line: &str) {
        let cut: String = line.chars().take(self.width.saturating_sub(1)).collect();
        let _ = writeln!(out, "\x1b[2m{cut}\x1b[0m");
        self.shown += 1;
    }

    fn fold(&mut self, out: &mut impl Write) {
        if self.shown > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.shown);
            self.shown = 0;
        }
    }

    fn finish(&mut self, ok: bool) {
        if self.live && !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            let mut out = std::io::stdout().lock();
            self.dim(&mut out, &rest);
        }
        if ok && self.live {
            let mut out = std::io::stdout().lock();
            self.fold(&mut out);
            let _ = out.flush();
        }
    }
}

pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    if !a.force
        && !super::confirm(
            "WARNING! This will remove all dangling build cache.\nAre you sure you want to continue?",
        )
    {
        return Ok(());
    }
    let (space, out) = run_prune(c, a.all).await?;
    super::print_pruned(&out, Some(space));
    Ok(())
}

/// Removes the build cache: the space reclaimed and what docker prints of it.
pub async fn run_prune(c: &Client, all: bool) -> Result<(i64, String)> {
    let path = if all {
        "/build/prune?all=1"
    } else {
        "/build/prune"
    };
    let v = c.send_json(Method::POST, path).await?;
    Ok((
        v["SpaceReclaimed"].as_i64().unwrap_or(0),
        super::deleted_list("Deleted build cache objects:", &v["CachesDeleted"]),
    ))
}
