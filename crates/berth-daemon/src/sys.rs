//! Host calls the engine's parts share.

use std::path::Path;

/// Detaches the mount at `p` (lazily: it goes once nothing uses it); nothing if there
/// is none.
pub fn unmount(p: &Path) {
    let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
}
