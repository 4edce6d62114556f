//! The built-in runtime as a command, `berth-runtime`, with runc's interface: `create`,
//! `start`, `exec -d`, `kill`, `delete`, `state`, `pause`, `resume`, on youki's
//! libcontainer.
//!
//! The shim runs it the way it runs runc, so none of the runtime is ever mapped into the
//! shim: the shim stays a small poll loop for the container's whole life (its memory is
//! what it touches, and the runtime's code and relocated data are not part of it), while
//! the runtime runs once per operation. The container's init is re-parented to the shim,
//! a child subreaper, when `create` returns.
//!
//! Without `--console-socket` the process gets the runtime's own stdin, stdout and
//! stderr, as with runc.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use std::path::{Path, PathBuf};

/// One operation on a container; the container is `--root`/ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        bundle: PathBuf,
        pid_file: Option<PathBuf>,
        console_socket: Option<PathBuf>,
    },
    Start,
    /// a process in the running container (always detached: its parent is the caller)
    Exec {
        process: PathBuf,
        pid_file: Option<PathBuf>,
        console_socket: Option<PathBuf>,
    },
    Kill {
        signal: String,
        all: bool,
    },
    Delete {
        force: bool,
    },
    /// prints the OCI state as JSON
    State,
    Pause,
    Resume,
    /// applies new limits (an OCI `linux.resources` JSON file) to the running container
    Update {
        resources: PathBuf,
    },
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn builder(root: &Path, id: &str, console: Option<&PathBuf>) -> Result<ContainerBuilder, String> {
    let mut b = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_executor(libcontainer::workload::default::DefaultExecutor {})
        .with_root_path(root)
        .map_err(err)?;
    if let Some(path) = console {
        b = b.with_console_socket(Some(path));
    }
    b.validate_id().map_err(err)
}

/// Writes a pid file whole or not at all (the shim reads it as soon as we return).
fn write_pid_file(path: &Path, pid: i32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn load(root: &Path, id: &str) -> Result<Container, String> {
    let dir = root.join(id);
    if !dir.exists() {
        return Err(format!("container {id} does not exist"));
    }
    Container::load(dir).map_err(err)
}

/// Parses a signal as runc does: a number, or a name with or without `SIG`.
pub fn parse_signal(s: &str) -> Result<libcontainer::signal::Signal, String> {
    match s.parse::<i32>() {
        Ok(n) => libcontainer::signal::Signal::try_from(n).map_err(err),
        Err(_) => libcontainer::signal::Signal::try_from(s).map_err(err),
    }
}

/// Carries out `op` on container `id` under `root`; prints what `state` shows.
pub fn run(root: &Path, id: &str, op: Op) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(err)?;
    match op {
        Op::Create {
            bundle,
            pid_file,
            console_socket,
        } => {
            let c = builder(root, id, console_socket.as_ref())?
                .as_init(&bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(err)?;
            if let (Some(path), Some(pid)) = (pid_file, c.pid()) {
                write_pid_file(&path, pid.as_raw())?;
            }
            Ok(())
        }
        Op::Start => load(root, id)?.start().map_err(err),
        Op::Exec {
            process,
            pid_file,
            console_socket,
        } => {
            let pid = builder(root, id, console_socket.as_ref())?
                .as_tenant()
                .with_process(Some(&process))
                .with_detach(true)
                .build()
                .map_err(err)?;
            if let Some(path) = pid_file {
                write_pid_file(&path, pid.as_raw())?;
            }
            Ok(())
        }
        Op::Kill { signal, all } => load(root, id)?
            .kill(parse_signal(&signal)?, all)
            .map_err(err),
        Op::Delete { force } => {
            if !root.join(id).exists() && force {
                return Ok(());
            }
            load(root, id)?.delete(force).map_err(err)
        }
        Op::State => {
            let c = load(root, id)?;
            let json = serde_json::to_string_pretty(&c.state).map_err(err)?;
            println!("{json}");
            Ok(())
        }
        Op::Pause => load(root, id)?.pause().map_err(err),
        Op::Resume => load(root, id)?.resume().map_err(err),
        Op::Update { resources } => update(root, id, &resources),
    }
}

/// `update --resources FILE`: the new limits go to the container's cgroup.
fn update(root: &Path, id: &str, resources: &Path) -> Result<(), String> {
    use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
    let c = load(root, id)?;
    let text = std::fs::read(resources).map_err(|e| format!("{}: {e}", resources.display()))?;
    let res: libcontainer::oci_spec::runtime::LinuxResources =
        serde_json::from_slice(&text).map_err(|e| format!("invalid resources: {e}"))?;
    let config = libcontainer::config::YoukiConfig::load(&c.root).map_err(err)?;
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(err)?;
    manager
        .apply(&ControllerOpt {
            resources: &res,
            disable_oom_killer: res
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        let name = |s: &str| format!("{:?}", parse_signal(s).unwrap());
        assert_eq!(name("9"), name("KILL"));
        assert_eq!(name("SIGTERM"), name("15"));
        assert_ne!(name("SIGTERM"), name("9"));
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn missing_containers_are_named() {
        let d = tempfile::tempdir().unwrap();
        let e = run(d.path(), "nothere", Op::Start).unwrap_err();
        assert!(e.contains("nothere"), "{e}");
        // a forced delete of nothing is not an error, as runc's
        run(d.path(), "nothere", Op::Delete { force: true }).unwrap();
    }
}
