//! Network namespaces kept by a bind mount on a file, as `ip netns` keeps them, so
//! berthd can make one before the container's process exists and configure it.
//! Namespace changes are per thread: each operation runs on a short-lived thread of its
//! own and never touches the daemon's threads.

use rustix::fd::AsFd;
use std::io;
use std::path::Path;

/// Makes a new network namespace and pins it at `path` (a file, created).
pub fn create(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path)?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: only the network namespace of this thread changes (no FILES or FS
        // flags); the thread ends right after pinning it and shares nothing else.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
        rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unpins and removes a namespace file; the namespace goes when its last process does.
pub fn remove(path: &Path) {
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}

/// Runs `f` on a thread inside the namespace pinned at `path`.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let ns = std::fs::File::open(path)?;
    std::thread::spawn(move || -> io::Result<T> {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// Whether `path` holds a pinned namespace (a mount of nsfs).
pub fn is_pinned(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| {
            let p = path.display().to_string();
            m.lines().any(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                f.get(4) == Some(&p.as_str()) && l.contains(" - nsfs ")
            })
        })
        .unwrap_or(false)
}
