//! Container commands: run, create, start, ps, logs, stop, kill, restart, wait, rename,
//! rm, container prune.

use super::stream::{demux, detach_keys, hijack, terminal_size, RawTerminal, Session};
use super::{filters_json, q};
use crate::client::{Client, DaemonError, ReqBody};
use crate::format::{since, Format};
use crate::template::row;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::io::Write;

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Run container in background and print container ID
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    pub rm: bool,
    /// Attach to STDIN, STDOUT or STDERR
    #[arg(short = 'a', long)]
    pub attach: Vec<String>,
    /// Read in a line delimited file of labels
    #[arg(long = "label-file")]
    pub label_file: Vec<String>,
    /// Container NIS domain name
    #[arg(long)]
    pub domainname: Option<String>,
    /// PID namespace to use
    #[arg(long)]
    pub pid: Option<String>,
    /// IPC mode to use
    #[arg(long)]
    pub ipc: Option<String>,
    /// UTS namespace to use
    #[arg(long)]
    pub uts: Option<String>,
    /// Cgroup namespace to use (host|private)
    #[arg(long)]
    pub cgroupns: Option<String>,
    /// Write the container ID to the file
    #[arg(long)]
    pub cidfile: Option<String>,
    /// Container isolation technology
    #[arg(long)]
    pub isolation: Option<String>,
    /// Optional volume driver for the container
    #[arg(long)]
    pub volume_driver: Option<String>,
    /// Add an annotation to the container (passed through to the OCI runtime)
    #[arg(long)]
    pub annotation: Vec<String>,
    /// Skip image verification
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "true")]
    pub disable_content_trust: bool,
    /// Suppress the pull output
    #[arg(short, long)]
    pub quiet: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    pub hostname: Option<String>,
    /// Set meta data on a container
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Bind mount a volume
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount volumes from the specified container(s)
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// Mount a tmpfs directory
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    pub read_only: bool,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    #[command(flatten)]
    pub net: super::network::NetFlags,
    /// Signal to stop the container
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long)]
    pub stop_timeout: Option<i64>,
    /// Runtime to use for this container (berth, runc, or one from daemon.json)
    #[arg(long)]
    pub runtime: Option<String>,
    /// Logging driver for the container
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver options
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Override the key sequence for detaching a container
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Proxy received signals to the process
    #[arg(long, default_value = "true", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    /// Command to run to check health
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s)
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long)]
    pub health_retries: Option<i64>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s)
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h) (default 0s)
    #[arg(long)]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    pub no_healthcheck: bool,
    #[command(flatten)]
    pub limits: super::limits::LimitArgs,
    #[command(flatten)]
    pub run_limits: super::limits::RunLimitArgs,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// IMAGE [COMMAND] [ARG...]: flags end at the image, as with docker
    #[arg(
        value_name = "IMAGE",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub image_and_command: Vec<String>,
    #[arg(skip)]
    pub image: String,
    #[arg(skip)]
    pub command: Vec<String>,
}

impl CreateArgs {
    /// A flag berth does not know stands where the image should (flags end at the
    /// image): docker's words for it.
    fn unknown_flag(&self) -> Option<String> {
        self.image_and_command
            .first()
            .filter(|f| f.starts_with('-') && f.len() > 1)
            .map(|f| f.split('=').next().unwrap_or(f).to_string())
    }

    /// Splits the image from the command after it.
    fn split(mut self) -> Self {
        let mut rest = std::mem::take(&mut self.image_and_command).into_iter();
        self.image = rest.next().unwrap_or_default();
        self.command = rest.collect();
        self
    }
}

/// The streams `run` attaches: stdin, stdout, stderr (`-a`, else stdout and stderr,
/// and stdin with `-i`).
fn attached_streams(a: &CreateArgs) -> Result<(bool, bool, bool)> {
    if a.attach.is_empty() {
        return Ok((a.interactive && !a.detach, !a.detach, !a.detach));
    }
    if a.detach {
        bail!("conflicting options: cannot specify both --attach and --detach");
    }
    let mut s = (false, false, false);
    for v in &a.attach {
        match v.to_ascii_lowercase().as_str() {
            "stdin" => s.0 = true,
            "stdout" => s.1 = true,
            "stderr" => s.2 = true,
            _ => bail!(
                "invalid argument \"{v}\" for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"
            ),
        }
    }
    Ok(s)
}

/// `--label-file` lines (`KEY=VALUE`; as the docker CLI reads them, lines without a
/// value, blank lines and `#` comments are skipped), before the `--label` flags.
fn labels_of(a: &CreateArgs) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in &a.label_file {
        let text = std::fs::read_to_string(f).map_err(|e| anyhow!("open {f}: {e}"))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#') && l.contains('='))
                .map(str::to_string),
        );
    }
    out.extend(a.label.iter().cloned());
    Ok(out)
}

fn create_body(a: &CreateArgs) -> Result<Value> {
    let env = super::exec::env_list(&a.env, &a.env_file)?;
    let labels: serde_json::Map<String, Value> = labels_of(a)?
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), Value::from(v)),
            None => (l.clone(), Value::from("")),
        })
        .collect();
    let (attach_in, attach_out, attach_err) = attached_streams(a)?;
    let tmpfs: serde_json::Map<String, Value> = a
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((p, o)) => (p.to_string(), Value::from(o)),
            None => (t.clone(), Value::from("")),
        })
        .collect();
    let restart = match a.restart.as_deref() {
        None => json!({"Name": "no", "MaximumRetryCount": 0}),
        Some(r) => match r.split_once(':') {
            Some((n, c)) => {
                json!({"Name": n, "MaximumRetryCount": c.parse::<i64>().map_err(|_| anyhow!("invalid restart policy format"))?})
            }
            None => json!({"Name": r, "MaximumRetryCount": 0}),
        },
    };
    let mut cfg = json!({
        "Image": a.image,
        "Tty": a.tty,
        "OpenStdin": a.interactive,
        "StdinOnce": a.interactive && attach_in,
        "AttachStdin": a.interactive && attach_in,
        "AttachStdout": attach_out,
        "AttachStderr": attach_err,
        "Env": env,
        "Labels": labels,
        "HostConfig": {
            "AutoRemove": a.rm,
            "Tmpfs": tmpfs,
            "ReadonlyRootfs": a.read_only,
            "RestartPolicy": restart,
        },
    });
    if !a.command.is_empty() {
        cfg["Cmd"] = json!(a.command);
    }
    if let Some(e) = &a.entrypoint {
        cfg["Entrypoint"] = if e.is_empty() { json!([]) } else { json!([e]) };
    }
    if let Some(w) = &a.workdir {
        cfg["WorkingDir"] = json!(w);
    }
    if let Some(u) = &a.user {
        cfg["User"] = json!(u);
    }
    if let Some(h) = &a.hostname {
        cfg["Hostname"] = json!(h);
    }
    if let Some(dn) = &a.domainname {
        cfg["Domainname"] = json!(dn);
    }
    if let Some(v) = &a.volume_driver {
        cfg["HostConfig"]["VolumeDriver"] = json!(v);
    }
    for (flag, key) in [
        (&a.pid, "PidMode"),
        (&a.ipc, "IpcMode"),
        (&a.uts, "UTSMode"),
        (&a.isolation, "Isolation"),
    ] {
        if let Some(v) = flag {
            cfg["HostConfig"][key] = json!(v);
        }
    }
    if let Some(ns) = &a.cgroupns {
        if !matches!(ns.as_str(), "host" | "private") {
            bail!("--cgroupns: invalid CGROUP mode \"{ns}\": must be \"host\" or \"private\"");
        }
        cfg["HostConfig"]["CgroupnsMode"] = json!(ns);
    }
    if !a.annotation.is_empty() {
        let mut m = serde_json::Map::new();
        for an in &a.annotation {
            let (k, v) = an
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid annotation {an:?}: must be KEY=VALUE"))?;
            m.insert(k.to_string(), json!(v));
        }
        cfg["HostConfig"]["Annotations"] = Value::Object(m);
    }
    if let Some(s) = &a.stop_signal {
        cfg["StopSignal"] = json!(s);
    }
    if let Some(t) = a.stop_timeout {
        cfg["StopTimeout"] = json!(t);
    }
    if let Some(r) = &a.runtime {
        cfg["HostConfig"]["Runtime"] = json!(r);
    }
    if a.init {
        cfg["HostConfig"]["Init"] = json!(true);
    }
    if a.log_driver.is_some() || !a.log_opt.is_empty() {
        let mut opts = serde_json::Map::new();
        for o in &a.log_opt {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid key-value pair {o:?}: expected key=value"))?;
            opts.insert(k.to_string(), json!(v));
        }
        cfg["HostConfig"]["LogConfig"] =
            json!({"Type": a.log_driver.clone().unwrap_or_default(), "Config": opts});
    }
    if let Some(hc) = healthcheck(a)? {
        cfg["Healthcheck"] = hc;
    }
    a.limits.apply(&mut cfg["HostConfig"])?;
    a.run_limits.apply(&mut cfg["HostConfig"])?;
    a.net.apply(&mut cfg)?;
    super::volume::apply(&mut cfg, &a.volume, &a.mount, &a.volumes_from)?;
    Ok(cfg)
}

/// Go's duration syntax (`1h2m3.5s`, `300ms`) in nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64> {
    berth_proto::duration::parse(s).ok_or_else(|| anyhow!("invalid duration {s:?}"))
}

/// `--health-*` and `--no-healthcheck` as the API's Healthcheck.
fn healthcheck(a: &CreateArgs) -> Result<Option<Value>> {
    let any = a.health_cmd.is_some()
        || a.health_interval.is_some()
        || a.health_retries.is_some()
        || a.health_timeout.is_some()
        || a.health_start_period.is_some()
        || a.health_start_interval.is_some();
    if a.no_healthcheck {
        if any {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(json!({"Test": ["NONE"]})));
    }
    if !any {
        return Ok(None);
    }
    let mut hc = json!({});
    if let Some(cmd) = &a.health_cmd {
        hc["Test"] = json!(["CMD-SHELL", cmd]);
    }
    for (flag, key, v) in [
        ("--health-interval", "Interval", &a.health_interval),
        ("--health-timeout", "Timeout", &a.health_timeout),
        (
            "--health-start-period",
            "StartPeriod",
            &a.health_start_period,
        ),
        (
            "--health-start-interval",
            "StartInterval",
            &a.health_start_interval,
        ),
    ] {
        if let Some(v) = v {
            let n = parse_duration(v)?;
            if n < 0 {
                bail!("{flag} cannot be negative");
            }
            hc[key] = json!(n);
        }
    }
    if let Some(r) = a.health_retries {
        if r < 0 {
            bail!("--health-retries cannot be negative");
        }
        hc["Retries"] = json!(r);
    }
    Ok(Some(hc))
}

/// Creates the container; prints the daemon's warnings. Errors carry docker's exit code:
/// 125 for `run` (whose messages start with the program's name), 1 for `create`.
async fn create_container(c: &Client, a: &CreateArgs, run: bool) -> Result<String> {
    let fail = |e: anyhow::Error| -> anyhow::Error {
        if run {
            eprintln!("berth: {e}");
            crate::Exit(125).into()
        } else {
            eprintln!("{e}");
            crate::Exit(1).into()
        }
    };
    if !matches!(a.pull.as_str(), "always" | "missing" | "never") {
        return Err(fail(anyhow!(
            "invalid pull option: '{}': must be one of \"always\", \"missing\" or \"never\"",
            a.pull
        )));
    }
    let platform = a.platform.as_deref();
    // docker refuses to overwrite an ID file: another container may be using it
    if let Some(f) = a
        .cidfile
        .as_deref()
        .filter(|f| std::path::Path::new(f).exists())
    {
        return Err(fail(anyhow!(
            "container ID file found, make sure the other container isn't running or delete {f}"
        )));
    }
    if a.pull == "always" {
        super::registry::pull_image(
            c,
            &super::registry::tagged(&a.image),
            platform,
            a.quiet,
            true,
        )
        .await
        .map_err(fail)?;
    }
    // a flag the daemon never sees is wrong: 125 for run and create alike, as docker
    let body = match create_body(a) {
        Ok(b) => serde_json::to_vec(&b)?,
        Err(e) => {
            eprintln!("berth: {e}");
            eprintln!("See 'berth {} --help'.", if run { "run" } else { "create" });
            return Err(crate::Exit(125).into());
        }
    };
    let resp = create_or_pull(
        c,
        a.name.as_deref(),
        &body,
        &a.image,
        platform,
        a.pull != "never",
        a.quiet,
    )
    .await
    .map_err(fail)?;
    let v = crate::client::read_json(resp).await?;
    for w in v["Warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        eprintln!("WARNING: {w}");
    }
    let id = v["Id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the daemon answered no container ID"))?;
    if let Some(f) = &a.cidfile {
        std::fs::write(f, &id)
            .map_err(|e| fail(anyhow!("failed to write the container ID to the file: {e}")))?;
    }
    Ok(id)
}

/// docker's answer to a flag it does not know: the usage hint, exit 125.
fn refuse_unknown_flag(a: &CreateArgs, verb: &str) -> Result<()> {
    if let Some(f) = a.unknown_flag() {
        eprintln!("unknown flag: {f}\nSee 'berth {verb} --help'.");
        return Err(crate::Exit(125).into());
    }
    Ok(())
}

pub async fn create(c: &Client, a: CreateArgs) -> Result<()> {
    refuse_unknown_flag(&a, "create")?;
    let a = a.split();
    let id = create_container(c, &a, false).await?;
    println!("{id}");
    Ok(())
}

/// `POST /containers/create` of `body` (named `name`); when its image is missing, says
/// so as docker does and, if `pull_missing`, pulls it (progress on stderr) and creates
/// again.
pub(crate) async fn create_or_pull(
    c: &Client,
    name: Option<&str>,
    body: &[u8],
    image: &str,
    platform: Option<&str>,
    pull_missing: bool,
    quiet: bool,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    let mut path = "/containers/create".to_string();
    if let Some(n) = name {
        path.push_str(&format!("?name={}", q(n)));
    }
    let headers = [("Content-Type", "application/json".to_string())];
    let send = || {
        c.request(
            Method::POST,
            &path,
            ReqBody::Full(Some(body.to_vec().into())),
            &headers,
        )
    };
    match send().await {
        Ok(r) => Ok(r),
        Err(e) => {
            let missing = e.downcast_ref::<DaemonError>().is_some_and(|d| {
                d.status == StatusCode::NOT_FOUND && d.message.contains("No such image")
            });
            if !missing {
                return Err(e);
            }
            let tagged = super::registry::tagged(image);
            eprintln!("Unable to find image '{tagged}' locally");
            if !pull_missing {
                return Err(e);
            }
            super::registry::pull_image(c, &tagged, platform, quiet, true).await?;
            send().await
        }
    }
}

/// Exit code docker's CLI gives a failed start.
fn start_error_code(msg: &str) -> i32 {
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        127
    } else if msg.contains("permission denied") {
        126
    } else {
        125
    }
}

pub async fn run(c: &Client, a: CreateArgs) -> Result<()> {
    refuse_unknown_flag(&a, "run")?;
    if a.detach && !a.attach.is_empty() {
        eprintln!("conflicting options: cannot specify both --attach and --detach");
        return Err(crate::Exit(1).into());
    }
    let a = a.split();
    let keys = detach_keys(a.detach_keys.as_deref())?;
    if !a.detach {
        super::stream::check_tty(a.interactive, a.tty)?;
    }
    let id = create_container(c, &a, true).await?;
    if a.detach {
        if let Err(e) = c
            .request(
                Method::POST,
                &format!("/containers/{id}/start"),
                ReqBody::Empty,
                &[],
            )
            .await
        {
            eprintln!("berth: {e}");
            return Err(crate::Exit(start_error_code(&e.to_string())).into());
        }
        println!("{id}");
        return Ok(());
    }
    let (attach_in, attach_out, attach_err) = attached_streams(&a)?;
    let streams = Streams {
        stdin: a.interactive && attach_in,
        stdout: attach_out,
        stderr: attach_err,
    };
    let session = attach_session(c, &id, streams, a.tty, &a.detach_keys, keys).await?;
    let cond = if a.rm { "removed" } else { "next-exit" };
    let wait = c
        .request(
            Method::POST,
            &format!("/containers/{id}/wait?condition={cond}"),
            ReqBody::Empty,
            &[],
        )
        .await?;
    let raw = (a.tty && a.interactive).then(RawTerminal::enter);
    if let Err(e) = c
        .request(
            Method::POST,
            &format!("/containers/{id}/start"),
            ReqBody::Empty,
            &[],
        )
        .await
    {
        drop(raw);
        eprintln!("berth: {e}");
        return Err(crate::Exit(start_error_code(&e.to_string())).into());
    }
    follow_session(c, &id, a.tty, a.sig_proxy && !a.tty, session, wait, raw).await
}

/// Which of a container's streams a client attaches to.
#[derive(Clone, Copy)]
struct Streams {
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

/// Attaches to a container for `run` or `start -a`.
async fn attach_session(
    c: &Client,
    id: &str,
    streams: Streams,
    tty: bool,
    keys_flag: &Option<String>,
    keys: Vec<u8>,
) -> Result<Session> {
    let stdin = streams.stdin;
    let mut path = format!(
        "/containers/{id}/attach?stream=1&stdout={}&stderr={}&stdin={}",
        u8::from(streams.stdout),
        u8::from(streams.stderr),
        u8::from(stdin)
    );
    if let Some(k) = keys_flag {
        path.push_str(&format!("&detachKeys={}", q(k)));
    }
    hijack(c, &path, ReqBody::Empty, stdin, tty, keys).await
}

/// Follows an attached, started container to its end (or until the user detaches):
/// window size, signal proxying, then the exit code.
pub async fn follow_session(
    c: &Client,
    id: &str,
    tty: bool,
    sig_proxy: bool,
    session: Session,
    wait: http::Response<hyper::body::Incoming>,
    raw: Option<RawTerminal>,
) -> Result<()> {
    if tty {
        if let Some((rows, cols)) = terminal_size() {
            let _ = c
                .request(
                    Method::POST,
                    &format!("/containers/{id}/resize?h={rows}&w={cols}"),
                    ReqBody::Empty,
                    &[],
                )
                .await;
        }
    }
    let proxy = sig_proxy.then(|| proxy_signals(c.clone(), id.to_string()));
    let Session {
        output, detached, ..
    } = session;
    let detached = async {
        if detached.await.is_err() {
            std::future::pending::<()>().await
        }
    };
    let result = tokio::select! {
        r = crate::client::read_json(wait) => r?,
        _ = detached => {
            drop(raw);
            if let Some(p) = proxy {
                p.abort();
            }
            return Ok(());
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), output).await;
    drop(raw);
    if let Some(p) = proxy {
        p.abort();
    }
    let code = result["StatusCode"].as_i64().unwrap_or(125) as i32;
    if code != 0 {
        return Err(crate::Exit(code).into());
    }
    Ok(())
}

/// `--sig-proxy`: the signals we receive go to the container's process.
fn proxy_signals(c: Client, id: String) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let kinds = [
            (libc_sig::SIGINT, SignalKind::interrupt()),
            (libc_sig::SIGTERM, SignalKind::terminate()),
            (libc_sig::SIGHUP, SignalKind::hangup()),
            (libc_sig::SIGQUIT, SignalKind::quit()),
            (libc_sig::SIGUSR1, SignalKind::user_defined1()),
            (libc_sig::SIGUSR2, SignalKind::user_defined2()),
        ];
        let (tx, mut rx) = tokio::sync::mpsc::channel::<i32>(8);
        for (n, k) in kinds {
            let Ok(mut s) = signal(k) else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(n).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        while let Some(n) = rx.recv().await {
            let _ = c
                .request(
                    Method::POST,
                    &format!("/containers/{id}/kill?signal={n}"),
                    ReqBody::Empty,
                    &[],
                )
                .await;
        }
    })
}

/// Signal numbers (Linux).
mod libc_sig {
    pub const SIGHUP: i32 = 1;
    pub const SIGINT: i32 = 2;
    pub const SIGQUIT: i32 = 3;
    pub const SIGUSR1: i32 = 10;
    pub const SIGUSR2: i32 = 12;
    pub const SIGTERM: i32 = 15;
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short, long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long)]
    pub detach_keys: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn start(c: &Client, a: StartArgs) -> Result<()> {
    if a.attach || a.interactive {
        let keys = detach_keys(a.detach_keys.as_deref())?;
        let id = a.containers.first().cloned().unwrap_or_default();
        let info = c.get_json(&format!("/containers/{id}/json")).await?;
        let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
        let streams = Streams {
            stdin: a.interactive,
            stdout: true,
            stderr: true,
        };
        let session = attach_session(c, &id, streams, tty, &a.detach_keys, keys).await?;
        let wait = c
            .request(
                Method::POST,
                &format!("/containers/{id}/wait?condition=next-exit"),
                ReqBody::Empty,
                &[],
            )
            .await?;
        let raw = (tty && a.interactive).then(RawTerminal::enter);
        c.request(
            Method::POST,
            &format!("/containers/{id}/start"),
            ReqBody::Empty,
            &[],
        )
        .await?;
        return follow_session(c, &id, tty, !tty, session, wait, raw).await;
    }
    post_each(c, &a.containers, "start", "").await
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long)]
    pub last: Option<i64>,
    /// Show the latest created container (includes all states)
    #[arg(short, long)]
    pub latest: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only display container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Display total file sizes
    #[arg(short, long)]
    pub size: bool,
}

/// docker's SIZE cell: the container's own bytes, and with the image's.
fn size_text(ct: &Value) -> String {
    let rw = crate::format::human_size_prec(ct["SizeRw"].as_i64().unwrap_or(0) as f64, 3);
    match ct["SizeRootFs"].as_i64() {
        Some(v) if v > 0 => format!(
            "{rw} (virtual {})",
            crate::format::human_size_prec(v as f64, 3)
        ),
        _ => rw,
    }
}

fn ellipsis(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    } else {
        s.to_string()
    }
}

pub async fn ps(c: &Client, a: PsArgs) -> Result<()> {
    let limit = if a.latest { Some(1) } else { a.last };
    let all = a.all || limit.is_some();
    let mut path = format!("/containers/json?all={all}&size={}", a.size);
    if let Some(n) = limit {
        path.push_str(&format!("&limit={n}"));
    }
    if let Some(f) = filters_json(&a.filter)? {
        path.push_str(&format!("&filters={}", q(&f)));
    }
    let list = c.get_json(&path).await?;
    let mut rows = Vec::new();
    for ct in list.as_array().into_iter().flatten() {
        let id = ct["Id"].as_str().unwrap_or_default();
        let cmd = ct["Command"].as_str().unwrap_or_default();
        let names: Vec<String> = ct["Names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        let labels = crate::format::labels_text(&ct["Labels"]);
        rows.push(row(vec![
            (
                "ID",
                json!(if a.no_trunc {
                    id.to_string()
                } else {
                    id.chars().take(12).collect()
                }),
            ),
            ("Image", ct["Image"].clone()),
            (
                "Command",
                json!(if a.no_trunc {
                    format!("{cmd:?}")
                } else {
                    format!("{:?}", ellipsis(cmd, 20))
                }),
            ),
            (
                "CreatedAt",
                json!(crate::format::go_time(ct["Created"].as_i64().unwrap_or(0))),
            ),
            (
                "RunningFor",
                json!(since(ct["Created"].as_i64().unwrap_or(0))),
            ),
            ("Status", ct["Status"].clone()),
            ("State", ct["State"].clone()),
            ("Ports", json!(super::network::ports_text(&ct["Ports"]))),
            ("Names", json!(names.join(","))),
            ("Labels", json!(labels)),
            ("Size", json!(size_text(ct))),
            (
                "Networks",
                json!(ct["NetworkSettings"]["Networks"]
                    .as_object()
                    .map(|m| m.keys().cloned().collect::<Vec<_>>().join(","))
                    .unwrap_or_default()),
            ),
            ("Mounts", json!("")),
        ]));
    }
    let fmt = if a.quiet {
        Format::Raw("{{.ID}}".into())
    } else {
        Format::new(
            a.format.as_deref(),
            if a.size {
                "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
            } else {
                "{{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
            },
        )
    };
    let headers = json!({"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT", "RunningFor": "CREATED",
        "Status": "STATUS", "State": "STATE", "Ports": "PORTS", "Names": "NAMES", "Labels": "LABELS", "Size": "SIZE", "Networks": "NETWORKS", "Mounts": "MOUNTS"});
    print!("{}", fmt.render(&rows, &headers)?);
    Ok(())
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show logs since timestamp (unix seconds or RFC 3339)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp
    #[arg(long)]
    pub until: Option<String>,
    pub container: String,
}

pub async fn logs(c: &Client, a: LogsArgs) -> Result<()> {
    let info = c
        .get_json(&format!("/containers/{}/json", a.container))
        .await?;
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let mut path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
        a.container,
        a.follow,
        a.timestamps,
        q(&a.tail)
    );
    if let Some(s) = &a.since {
        path.push_str(&format!("&since={}", q(s)));
    }
    if let Some(u) = &a.until {
        path.push_str(&format!("&until={}", q(u)));
    }
    let resp = c.request(Method::GET, &path, ReqBody::Empty, &[]).await?;
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            if tty {
                let mut o = std::io::stdout().lock();
                o.write_all(&d)?;
                o.flush()?;
            } else {
                demux(&mut pending, &d)?;
            }
        }
    }
    Ok(())
}

/// `POST /containers/NAME/ACTION?QUERY` for each name, printing each name done.
pub(crate) async fn post_each(
    c: &Client,
    names: &[String],
    action: &str,
    query: &str,
) -> Result<()> {
    super::for_each_name(names, |name| async move {
        c.request(
            Method::POST,
            &format!("/containers/{name}/{action}?{query}"),
            ReqBody::Empty,
            &[],
        )
        .await?;
        println!("{name}");
        Ok(())
    })
    .await
}

#[derive(Debug, Args)]
pub struct StopArgs {
    /// Signal to send to the container
    #[arg(short, long)]
    pub signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(short, long)]
    pub timeout: Option<i64>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn stop(c: &Client, a: StopArgs, action: &str) -> Result<()> {
    let mut query = Vec::new();
    if let Some(t) = a.timeout {
        query.push(format!("t={t}"));
    }
    if let Some(s) = &a.signal {
        query.push(format!("signal={}", q(s)));
    }
    post_each(c, &a.containers, action, &query.join("&")).await
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn kill(c: &Client, a: KillArgs) -> Result<()> {
    post_each(
        c,
        &a.containers,
        "kill",
        &format!("signal={}", q(&a.signal)),
    )
    .await
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn wait(c: &Client, a: WaitArgs) -> Result<()> {
    super::for_each_name(&a.containers, |name| async move {
        let v = c
            .send_json(Method::POST, &format!("/containers/{name}/wait"))
            .await?;
        println!("{}", v["StatusCode"].as_i64().unwrap_or(-1));
        Ok(())
    })
    .await
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

pub async fn rename(c: &Client, a: RenameArgs) -> Result<()> {
    c.request(
        Method::POST,
        &format!("/containers/{}/rename?name={}", a.container, q(&a.new_name)),
        ReqBody::Empty,
        &[],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
}

pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    if !a.force
        && !super::confirm(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?",
        )
    {
        return Ok(());
    }
    let (space, out) = run_prune(c, &a.filter).await?;
    super::print_pruned(&out, Some(space));
    Ok(())
}

/// Removes stopped containers: the space reclaimed and what docker prints of it.
pub async fn run_prune(c: &Client, filter: &[String]) -> Result<(i64, String)> {
    let mut path = "/containers/prune".to_string();
    if let Some(f) = filters_json(filter)? {
        path.push_str(&format!("?filters={}", q(&f)));
    }
    let v = c.send_json(Method::POST, &path).await?;
    Ok((
        v["SpaceReclaimed"].as_i64().unwrap_or(0),
        super::deleted_list("Deleted Containers:", &v["ContainersDeleted"]),
    ))
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short, long)]
    pub volumes: bool,
    /// Remove the specified link
    #[arg(short, long)]
    pub link: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn rm(c: &Client, a: RmArgs) -> Result<()> {
    super::for_each_name(&a.containers, |name| async move {
        // with --link, NAME is PARENT/ALIAS: the link goes, the containers stay
        let path = if a.link {
            let n = name.trim_start_matches('/');
            let (p, alias) = n.rsplit_once('/').unwrap_or((n, ""));
            format!("/containers/{}/{}?link=1", q(p), q(alias))
        } else {
            format!("/containers/{}?force={}&v={}", q(&name), a.force, a.volumes)
        };
        c.request(Method::DELETE, &path, ReqBody::Empty, &[])
            .await?;
        println!("{name}");
        Ok(())
    })
    .await
}
