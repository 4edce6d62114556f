//! `berth-runtime`: berth's built-in OCI runtime (youki's libcontainer) behind runc's
//! command line, run by `berth-shim` once per operation. See berth-runtime's `builtin`
//! module.

use berth_runtime::builtin::{run, Op};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth-runtime",
    version,
    about = "berth's built-in OCI runtime"
)]
struct Cli {
    /// where container state is kept
    #[arg(long, default_value = "/run/berth-runtime")]
    root: PathBuf,
    /// accepted for runc compatibility; errors go to stderr
    #[arg(long, hide = true)]
    log: Option<PathBuf>,
    #[arg(long, hide = true)]
    log_format: Option<String>,
    #[arg(long, hide = true)]
    debug: bool,
    #[arg(long, hide = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// create a container from a bundle; its process waits for `start`
    Create {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// run the process of a created container
    Start { id: String },
    /// run a process (an OCI process JSON) in a running container, detached
    Exec {
        #[arg(short, long)]
        detach: bool,
        #[arg(short, long)]
        process: PathBuf,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// send a signal (default SIGTERM) to the container's process
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// remove a stopped container (`--force`: also a running one)
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// print the container's state as JSON
    State { id: String },
    /// freeze every process of the container
    Pause { id: String },
    /// thaw a paused container
    Resume { id: String },
    /// apply new resource limits (an OCI linux.resources JSON file) to a container
    Update {
        #[arg(short, long)]
        resources: PathBuf,
        id: String,
    },
}

fn main() {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Create { .. } | Cmd::Exec { .. }) {
        // what enters a container runs from a sealed copy of this binary
        if let Err(e) = berth_runtime::builtin::reexec_sealed() {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
    let (id, op) = match cli.cmd {
        Cmd::Create {
            bundle,
            pid_file,
            console_socket,
            id,
        } => (
            id,
            Op::Create {
                bundle,
                pid_file,
                console_socket,
            },
        ),
        Cmd::Start { id } => (id, Op::Start),
        Cmd::Exec {
            detach,
            process,
            pid_file,
            console_socket,
            id,
        } => {
            if !detach {
                eprintln!("berth-runtime: exec runs detached only (-d)");
                std::process::exit(2);
            }
            (
                id,
                Op::Exec {
                    process,
                    pid_file,
                    console_socket,
                },
            )
        }
        Cmd::Kill { all, id, signal } => (id, Op::Kill { signal, all }),
        Cmd::Delete { force, id } => (id, Op::Delete { force }),
        Cmd::State { id } => (id, Op::State),
        Cmd::Pause { id } => (id, Op::Pause),
        Cmd::Resume { id } => (id, Op::Resume),
        Cmd::Update { resources, id } => (id, Op::Update { resources }),
    };
    if let Err(e) = run(&cli.root, &id, op) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
