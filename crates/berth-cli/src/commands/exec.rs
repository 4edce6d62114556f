//! exec, attach and top.

use super::stream::{detach_keys, hijack, terminal_size, RawTerminal, Session};
use crate::client::{Client, ReqBody};
use crate::format::tabwrite_min;
use anyhow::Result;
use clap::Args;
use http::Method;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short, long)]
    pub detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Set environment variables
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short, long)]
    pub interactive: bool,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// Allocate a pseudo-TTY
    #[arg(short, long)]
    pub tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// `-e` and `--env-file` as docker reads them: `NAME` alone takes our value.
pub fn env_list(env: &[String], files: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("open {f}: {e}"))?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    for e in env {
        if e.contains('=') {
            out.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    }
    Ok(out)
}

pub async fn exec(c: &Client, a: ExecArgs) -> Result<()> {
    let keys = detach_keys(a.detach_keys.as_deref())?;
    if !a.detach {
        super::stream::check_tty(a.interactive, a.tty)?;
    }
    let mut cfg = json!({
        "AttachStdin": a.interactive && !a.detach,
        "AttachStdout": !a.detach,
        "AttachStderr": !a.detach,
        "Tty": a.tty,
        "Privileged": a.privileged,
        "Env": env_list(&a.env, &a.env_file)?,
        "Cmd": a.command,
    });
    if let Some(u) = &a.user {
        cfg["User"] = json!(u);
    }
    if let Some(w) = &a.workdir {
        cfg["WorkingDir"] = json!(w);
    }
    if let Some(k) = &a.detach_keys {
        cfg["DetachKeys"] = json!(k);
    }
    let created = c
        .request(
            Method::POST,
            &format!("/containers/{}/exec", a.container),
            ReqBody::Full(Some(serde_json::to_vec(&cfg)?.into())),
            &[("Content-Type", "application/json".into())],
        )
        .await?;
    let id = crate::client::read_json(created).await?["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let size = if a.tty { terminal_size() } else { None };
    let mut start = json!({"Detach": a.detach, "Tty": a.tty});
    if let Some((h, w)) = size {
        start["ConsoleSize"] = json!([h, w]);
    }
    let body = ReqBody::Full(Some(serde_json::to_vec(&start)?.into()));
    if a.detach {
        c.request(
            Method::POST,
            &format!("/exec/{id}/start"),
            body,
            &[("Content-Type", "application/json".into())],
        )
        .await?;
        return Ok(());
    }
    let raw = (a.tty && a.interactive).then(RawTerminal::enter);
    let Session {
        output,
        detached,
        detaching,
    } = hijack(
        c,
        &format!("/exec/{id}/start"),
        body,
        a.interactive,
        a.tty,
        keys,
    )
    .await?;
    let detached = async {
        if detached.await.is_err() {
            std::future::pending::<()>().await
        }
    };
    tokio::select! {
        _ = output => {}
        _ = detached => {}
    }
    if detaching.load(std::sync::atomic::Ordering::SeqCst) {
        drop(raw);
        // as docker's exec: leaving is reported as an error
        eprintln!("read escape sequence");
        return Err(crate::Exit(1).into());
    }
    drop(raw);
    let info = c.get_json(&format!("/exec/{id}/json")).await?;
    let code = info["ExitCode"].as_i64().unwrap_or(0) as i32;
    if code != 0 {
        return Err(crate::Exit(code).into());
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Override the key sequence for detaching a container
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Do not attach STDIN
    #[arg(long)]
    pub no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long, default_value = "true", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    pub container: String,
}

pub async fn attach(c: &Client, a: AttachArgs) -> Result<()> {
    let keys = detach_keys(a.detach_keys.as_deref())?;
    let info = c
        .get_json(&format!("/containers/{}/json", a.container))
        .await?;
    if info["State"]["Running"] != Value::Bool(true) {
        anyhow::bail!("You cannot attach to a stopped container, start it first");
    }
    let id = info["Id"].as_str().unwrap_or_default().to_string();
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !a.no_stdin && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    super::stream::check_tty(stdin, tty)?;
    let mut path = format!(
        "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
        u8::from(stdin)
    );
    if let Some(k) = &a.detach_keys {
        path.push_str(&format!("&detachKeys={}", super::q(k)));
    }
    let raw = (tty && stdin).then(RawTerminal::enter);
    let session = hijack(c, &path, ReqBody::Empty, stdin, tty, keys).await?;
    let wait = c
        .request(
            Method::POST,
            &format!("/containers/{id}/wait?condition=not-running"),
            ReqBody::Empty,
            &[],
        )
        .await?;
    super::containers::follow_session(c, &id, tty, a.sig_proxy && !tty, session, wait, raw).await
}

#[derive(Debug, Args)]
pub struct TopArgs {
    pub container: String,
    /// ps options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub async fn top(c: &Client, a: TopArgs) -> Result<()> {
    let mut path = format!("/containers/{}/top", a.container);
    if !a.ps_args.is_empty() {
        path.push_str(&format!("?ps_args={}", super::q(&a.ps_args.join(" "))));
    }
    let v = c.get_json(&path).await?;
    let titles: Vec<String> = v["Titles"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap_or_default().to_string())
        .collect();
    let mut rows = vec![titles];
    for p in v["Processes"].as_array().into_iter().flatten() {
        rows.push(
            p.as_array()
                .into_iter()
                .flatten()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect(),
        );
    }
    let text: String = rows.iter().map(|r| r.join("\t") + "\n").collect();
    print!("{}", tabwrite_min(&text, 20));
    Ok(())
}
