//! Running containers: the OCI runtime spec berth generates for a container, the
//! built-in runtime (`berth-runtime`, runc's interface on youki's libcontainer), the
//! per-container shim (`berth-shim`) that creates the container with a runtime, owns its
//! stdio, writes its json-file log, serves attach and records its exit, and the log
//! format itself.

pub mod builtin;
pub mod cgroups;
pub mod deadline;
pub mod initerr;
pub mod logs;
pub mod shim;
pub mod spec;

/// Marks every descriptor above stderr close-on-exec, except `keep`: whatever our parent
/// left open must never reach a container (CVE-2024-21626 leaked one through `-w
/// /proc/self/fd/N`). Called first thing by berthd and by the shim.
pub fn cloexec_inherited(keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a closed one just fails with EBADF
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}
