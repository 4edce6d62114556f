//! berth: the command-line client. It speaks the Docker Engine API to berthd (or to any
//! Docker-compatible daemon) and prints what the docker CLI prints: same commands, flags,
//! columns, `--format` templates and exit codes.
//!
//! The daemon is chosen by `-H/--host`, else `-c/--context`, else `BERTH_HOST`, else
//! `DOCKER_HOST`, else `DOCKER_CONTEXT`, else the current context (config.json), else
//! `unix:///run/berth/berth.sock` (see `commands::context`).

pub mod client;
pub mod commands;
pub mod format;
pub mod template;

use clap::Parser;
use client::{Client, DaemonError, TlsOptions};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A Docker-compatible container engine client",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Daemon socket to connect to (unix://, tcp://, ssh://[user@]host[:port][/socket])
    #[arg(short = 'H', long = "host", global = false)]
    pub host: Option<String>,
    /// Name of the context to use to connect to the daemon (overrides DOCKER_HOST env var
    /// and default context set with "berth context use")
    #[arg(short = 'c', long = "context")]
    pub context: Option<String>,
    /// Use TLS; implied by --tlsverify
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and verify the daemon's certificate
    #[arg(long)]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
    /// Enable debug mode
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Set the logging level
    #[arg(short = 'l', long = "log-level")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub cmd: commands::Cmd,
}

/// What a failed command exits with.
pub struct Exit(pub i32);

fn tls_options(cli: &Cli) -> TlsOptions {
    let cert_path = std::env::var_os("DOCKER_CERT_PATH").map(PathBuf::from);
    let from_env = |name: &str| {
        cert_path
            .as_ref()
            .map(|p| p.join(name))
            .filter(|p| p.exists())
    };
    let env_verify = std::env::var("DOCKER_TLS_VERIFY")
        .map(|v| !v.is_empty())
        .unwrap_or(false);
    TlsOptions {
        tls: cli.tls || cli.tlsverify || env_verify,
        verify: cli.tlsverify || env_verify,
        ca: cli.tlscacert.clone().or_else(|| from_env("ca.pem")),
        cert: cli.tlscert.clone().or_else(|| from_env("cert.pem")),
        key: cli.tlskey.clone().or_else(|| from_env("key.pem")),
    }
}

pub fn host_of(flag: Option<&str>) -> String {
    flag.map(str::to_string)
        .or_else(|| std::env::var("BERTH_HOST").ok().filter(|s| !s.is_empty()))
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| client::DEFAULT_HOST.to_string())
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    // the CLI plugins installed, in the help as the docker CLI lists them
    let asks_help = std::env::args().skip(1).all(|a| a.starts_with('-'))
        && std::env::args().any(|a| a == "--help" || a == "-h");
    if asks_help {
        let listed = commands::plugin::installed();
        if !listed.is_empty() {
            let mut text = String::from("Plugins:\n");
            for (name, about) in listed {
                text.push_str(&format!("  {:<12}{about}\n", format!("{name}*")));
            }
            command = command.after_help(text);
        }
    }
    let cli = match command
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 125,
            };
            let _ = e.print();
            return code;
        }
    };
    // a client needs one thread; a registry server serves on every core
    let serving = matches!(
        cli.cmd,
        commands::Cmd::Registry(commands::RegistryCmd::Serve(_))
    );
    let mut builder = if serving {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: {e}");
            return 1;
        }
    };
    let env_tls = tls_options(&cli);
    let Cli {
        host, context, cmd, ..
    } = cli;
    if let commands::Cmd::Context(cmd) = cmd {
        let current = commands::context::current_name(context.as_deref(), host.is_some());
        return match commands::context::run(cmd, &current) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e:#}");
                1
            }
        };
    }
    if let commands::Cmd::Plugin(args) = &cmd {
        // a daemon chosen by a flag reaches the plugin in its command line, a context
        // through the shared config; otherwise it is told the host berth would use
        let default_host = match (&host, &context) {
            (None, None) => commands::context::resolve(None, None)
                .ok()
                .filter(|t| t.context == commands::context::DEFAULT)
                .map(|t| t.host),
            _ => None,
        };
        let err = commands::plugin::exec(args, default_host.as_deref())
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        eprintln!("{err}");
        return 1;
    }
    let code = rt.block_on(async {
        let target = match commands::context::resolve(host.as_deref(), context.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{e:#}");
                return 1;
            }
        };
        let tls = target.tls.clone().unwrap_or(env_tls);
        let client = match Client::new(&target.host, &tls) {
            Ok(mut c) => {
                c.context = target.context.clone();
                c
            }
            Err(e) => {
                eprintln!("{e:#}");
                return 1;
            }
        };
        match commands::run(&client, cmd).await {
            Ok(()) => 0,
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<Exit>() {
                    return exit.0;
                }
                if let Some(d) = e.downcast_ref::<DaemonError>() {
                    eprintln!("{d}");
                } else {
                    eprintln!("Error: {e:#}");
                }
                1
            }
        }
    });
    // a read of our stdin may still be blocking a runtime thread: do not wait for it
    rt.shutdown_background();
    code
}

impl std::fmt::Debug for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}
impl std::error::Error for Exit {}

pub use commands::Cmd;
