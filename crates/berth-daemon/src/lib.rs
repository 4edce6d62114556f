//! berthd: serves the Docker Engine API over its sockets and runs the services behind it.
#![recursion_limit = "256"]
//!
//! One tokio process. Start-up takes the data root's lock (one daemon per data root),
//! writes the pidfile, opens the metadata database and the image store, binds the
//! sockets and serves until SIGTERM or SIGINT; SIGHUP re-reads daemon.json for what can
//! change while running (log level, labels, debug).

pub mod apiversion;
pub mod build;
pub mod buildkit;
pub mod changes;
pub mod commit;
pub mod config;
pub mod containers;
pub mod create;
pub mod error;
pub mod events;
pub mod exec;
pub mod files;
pub mod health;
pub mod http;
pub mod logconfig;
pub mod model;
pub mod mounts;
pub mod networks;
pub mod plugins;
pub mod progress;
pub mod pull;
pub mod push;
pub mod resources;
pub mod routes;
pub mod seccomp;
pub mod security;
pub mod server;
pub mod shimctl;
pub mod spec;
pub mod stats;
pub mod sys;
pub mod userns;
pub mod volumes;

use anyhow::{bail, Context, Result};
use berth_image::ImageStore;
use berth_store::Db;
use config::{Config, Flags};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::sync::{Arc, RwLock};
use tracing_subscriber::{reload, EnvFilter};

/// The running daemon's shared state.
pub struct Daemon {
    pub config: Config,
    pub images: Arc<ImageStore>,
    pub db: Arc<Db>,
    pub containers: Arc<containers::Containers>,
    pub events: Arc<events::Events>,
    pub plugins: Arc<plugins::Plugins>,
    pub buildkit: Arc<buildkit::BuildKit>,
    pub engine_id: String,
    /// the registry client pulls and pushes use, made at the first (its TLS roots and
    /// connection pools cost memory an idle daemon need not hold)
    registry: std::sync::OnceLock<berth_registry::client::Client>,
    labels: RwLock<Vec<String>>,
    warnings: Vec<String>,
}

impl Daemon {
    /// The registry client, made on first use.
    pub fn registry(&self) -> Result<&berth_registry::client::Client, error::EngineError> {
        if let Some(c) = self.registry.get() {
            return Ok(c);
        }
        let c = berth_registry::client::Client::new(berth_registry::client::Settings {
            mirrors: self.config.registry_mirrors.clone(),
            insecure: self.config.insecure_registries.clone(),
        })
        .map_err(|e| error::EngineError::internal(e.to_string()))?;
        Ok(self.registry.get_or_init(|| c))
    }

    pub fn labels(&self) -> Vec<String> {
        self.labels.read().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    /// Why an image may not be removed: a container uses it.
    pub fn image_in_use(&self, id: &berth_image::digest::Digest) -> Option<String> {
        self.containers.uses_image(id)
    }
}

type LogHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn filter_for(level: &str) -> EnvFilter {
    let level = if level == "fatal" { "error" } else { level };
    let mut f = format!("warn,berth={level},berthd={level},berth_daemon={level},berth_image={level},berth_store={level},berth_buildkit={level}");
    // more detail for a module, as tracing's directives (e.g. `h2=debug`), for debugging
    if let Ok(extra) = std::env::var("BERTHD_TRACE") {
        f = format!("{f},{extra}");
    }
    EnvFilter::new(f)
}

fn init_logging(level: &str) -> LogHandle {
    use tracing_subscriber::prelude::*;
    let (filter, handle) = reload::Layer::new(filter_for(level));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
    handle
}

/// Holds the data root's lock for the daemon's lifetime.
struct Lock(#[allow(dead_code)] File);

fn lock_data_root(cfg: &Config) -> Result<Lock> {
    std::fs::create_dir_all(&cfg.data_root)
        .with_context(|| format!("creating data root {}", cfg.data_root.display()))?;
    std::fs::set_permissions(
        &cfg.data_root,
        std::os::unix::fs::PermissionsExt::from_mode(0o710),
    )?;
    let p = cfg.data_root.join("berthd.lock");
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "another berthd is already running on data root {} (its lock {} is held)",
            cfg.data_root.display(),
            p.display()
        );
    }
    Ok(Lock(f))
}

/// Whether `pid` is a berthd that still runs: a zombie (a berthd killed a moment ago
/// whose parent has not reaped it) or a pid taken by another program is not. The data
/// root's lock, taken before, is what keeps two daemons off one data root.
fn berthd_alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `PID (COMM) STATE ...`: the name may hold spaces and parentheses
    let Some((name, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") ")) else {
        return false;
    };
    let state = rest.chars().next().unwrap_or('?');
    name == "berthd" && !matches!(state, 'Z' | 'X')
}

fn write_pidfile(cfg: &Config) -> Result<()> {
    if let Ok(old) = std::fs::read_to_string(&cfg.pidfile) {
        if let Ok(pid) = old.trim().parse::<i32>() {
            if pid != std::process::id() as i32 && berthd_alive(pid) {
                bail!(
                    "pid file found, ensure berthd is not running or delete {} (process {pid} is alive)",
                    cfg.pidfile.display()
                );
            }
        }
    }
    if let Some(dir) = cfg.pidfile.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f =
        File::create(&cfg.pidfile).with_context(|| format!("writing {}", cfg.pidfile.display()))?;
    writeln!(f, "{}", std::process::id())?;
    Ok(())
}

fn engine_id(cfg: &Config) -> Result<String> {
    let p = cfg.data_root.join("engine-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    let id = format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    );
    std::fs::write(&p, &id)?;
    Ok(id)
}

/// Hands freed heap back to the kernel after work that allocated a lot (an import's
/// buffers, a compressor's window), so an idle daemon stays small.
pub fn release_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap structures; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Runs berthd to completion.
pub fn main_with(flags: Flags) -> Result<()> {
    berth_runtime::cloexec_inherited(&[]);
    // Few arenas: blocking threads come and go, and each arena of glibc's keeps its
    // high-water mark of memory. Two are plenty for a daemon that mostly waits.
    // SAFETY: mallopt sets an allocator tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let early_level = flags.log_level.clone().unwrap_or_else(|| {
        if flags.debug {
            "debug".into()
        } else {
            "info".into()
        }
    });
    let log = init_logging(if config::valid_log_level(&early_level) {
        &early_level
    } else {
        "info"
    });
    let cfg = Config::load(flags)?;
    let _ = log.reload(filter_for(&cfg.log_level));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .enable_all()
        .build()?;
    rt.block_on(run(cfg, log))
}

async fn run(cfg: Config, log: LogHandle) -> Result<()> {
    let _lock = lock_data_root(&cfg)?;
    std::fs::create_dir_all(&cfg.exec_root)
        .with_context(|| format!("creating exec root {}", cfg.exec_root.display()))?;
    write_pidfile(&cfg)?;
    let result = serve(cfg.clone(), log).await;
    let _ = std::fs::remove_file(&cfg.pidfile);
    result
}

async fn serve(cfg: Config, log: LogHandle) -> Result<()> {
    let db = Arc::new(
        Db::open(&cfg.data_root.join("berth.db")).context("opening the metadata database")?,
    );
    let driver = cfg
        .storage_driver
        .as_deref()
        .and_then(berth_image::snapshot::Driver::parse);
    let images = Arc::new(
        ImageStore::open(&cfg.data_root, db.clone(), driver).context("opening the image store")?,
    );
    let mut warnings = Vec::new();
    if cfg.hosts.iter().any(|h| h.starts_with("tcp://")) && !cfg.tls {
        warnings.push("WARNING: API is accessible on http:// without encryption.\n         Access to the remote API is equivalent to root access on the host.".to_string());
    }
    let remap = match &cfg.userns_remap {
        Some(spec) => {
            let r = userns::Remap::setup(spec, &cfg.data_root, images.layer_root())
                .context("setting up user namespace remapping")?;
            tracing::info!(user = %r.user, group = %r.group, uid = r.root_uid(), gid = r.root_gid(), "user namespace remapping");
            Some(Arc::new(r))
        }
        None => None,
    };
    let net = Arc::new(networks::Networks::open(db.clone(), &cfg).context("opening the networks")?);
    let containers = Arc::new(
        containers::Containers::open(
            db.clone(),
            &cfg,
            images.clone(),
            remap.clone(),
            net,
            Arc::new(
                volumes::Volumes::open(db.clone(), &cfg.data_root)
                    .context("opening the volumes")?,
            ),
        )
        .context("opening the container store")?,
    );
    let d = Arc::new(Daemon {
        containers,
        engine_id: engine_id(&cfg)?,
        registry: std::sync::OnceLock::new(),
        labels: RwLock::new(cfg.labels.clone()),
        config: cfg.clone(),
        images,
        db,
        events: Arc::new(events::Events::new()),
        plugins: Arc::new(plugins::Plugins::open(&cfg.data_root)?),
        buildkit: Arc::new(buildkit::BuildKit::open(&cfg.data_root)?),
        warnings,
    });
    tokio::spawn(d.containers.net.clone().watch_host_firewall());
    tracing::info!(
        data_root = %cfg.data_root.display(),
        driver = d.images.driver().name(),
        version = env!("CARGO_PKG_VERSION"),
        "berthd started"
    );
    d.containers.restore(&d.events).await;
    build::remove_leftover_steps(&d).await;
    let listeners = match server::bind(&cfg).await {
        Ok(l) => l,
        Err(e) => {
            // nothing will serve: the rules go as at a stop
            release_network(&d).await;
            return Err(e);
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for l in listeners {
        tasks.push(tokio::spawn(server::accept_loop(
            d.clone(),
            l,
            stop_rx.clone(),
        )));
    }
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => reload_config(&d, &log),
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), t).await;
    }
    if let Some(r) = &remap {
        r.unmount();
    }
    release_network(&d).await;
    tracing::info!("berthd stopped");
    Ok(())
}

/// At a stop: berth's rules go (and, with no container running, its bridges).
async fn release_network(d: &Daemon) {
    let running = d
        .containers
        .all()
        .iter()
        .any(|c| c.state().status == "running");
    d.containers.net.shutdown(running).await;
}

fn reload_config(d: &Daemon, log: &LogHandle) {
    let Some(path) = d.config.config_file.clone() else {
        tracing::info!("SIGHUP: no configuration file to reload");
        return;
    };
    match config::reload(&path) {
        Ok(r) => {
            let level = r
                .log_level
                .clone()
                .or_else(|| r.debug.filter(|d| *d).map(|_| "debug".into()));
            if let Some(l) = &level {
                let _ = log.reload(filter_for(l));
            }
            if let Some(labels) = r.labels {
                if let Ok(mut w) = d.labels.write() {
                    *w = labels;
                }
            }
            tracing::info!(file = %path.display(), "SIGHUP: configuration reloaded");
            d.events.emit(
                "daemon",
                "reload",
                &d.engine_id,
                BTreeMap::from([("log-level".to_string(), level.unwrap_or_default())]),
            );
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded"),
    }
}
