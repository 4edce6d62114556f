//! A container's cgroups (`/berth/ID`, or under its `--cgroup-parent`) in every
//! hierarchy of the machine (v1 controllers, the v2 tree, hybrid), as a shim or berthd
//! cleans them up: the processes left in them killed, the directories removed.

use std::path::{Path, PathBuf};

/// The container's cgroup directories that exist (each hierarchy's, and below them any
/// the container made itself), deepest first. None for a path that could reach outside
/// the hierarchies (empty, or with `..`).
fn dirs(path: &str) -> Option<Vec<PathBuf>> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return None;
    }
    let base = Path::new("/sys/fs/cgroup");
    let mut tops = vec![base.join(rel)];
    if let Ok(rd) = std::fs::read_dir(base) {
        tops.extend(rd.flatten().map(|e| e.path().join(rel)));
    }
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = tops.into_iter().filter(|d| d.is_dir()).collect();
    while let Some(d) = todo.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            todo.extend(
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
        out.push(d);
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    out.dedup();
    Some(out)
}

fn procs(d: &Path) -> Vec<i32> {
    std::fs::read_to_string(d.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p: &i32| *p > 0 && *p != std::process::id() as i32)
        .collect()
}

/// SIGKILLs every process in the container's cgroups until none is left (2 s at most:
/// a process in uninterruptible sleep may outlast that); how many distinct ones.
pub fn kill_all(path: &str) -> usize {
    let Some(dirs) = dirs(path) else {
        return 0;
    };
    let mut killed = std::collections::HashSet::new();
    for _ in 0..200 {
        let left: Vec<i32> = dirs.iter().flat_map(|d| procs(d)).collect();
        if left.is_empty() {
            break;
        }
        for pid in left {
            // SAFETY: kill(2) of a process listed in the container's own cgroup
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            killed.insert(pid);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    killed.len()
}

/// Removes the container's cgroups, deepest first (for a create that failed half way,
/// a runtime that left them, or a lost shim).
pub fn remove(path: &str) {
    let Some(dirs) = dirs(path) else {
        return;
    };
    for d in dirs {
        // the last processes may still be leaving: EBUSY for a moment
        for _ in 0..50 {
            match std::fs::remove_dir(&d) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_outside_the_hierarchies_are_refused() {
        assert!(super::dirs("").is_none());
        assert!(super::dirs("/").is_none());
        assert!(super::dirs("/berth/../..").is_none());
        assert_eq!(super::kill_all("/../x"), 0);
        assert!(super::dirs("/berth/no-such-container-xyz")
            .unwrap()
            .is_empty());
    }
}
