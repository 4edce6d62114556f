//! A read-only view of an image's filesystem for the builder: the layer itself when
//! there is one (or the vfs driver's full copy), an overlay of the layers (lower
//! directories only, so nothing can write) when there are more, an empty directory for
//! `scratch`. Unmounted and removed when dropped.

use super::source::Tree;
use crate::Daemon;
use berth_image::digest::Digest;
use berth_image::snapshot::Driver;
use std::path::PathBuf;

pub struct View {
    pub tree: Tree,
    mounted: bool,
    /// the mount point or empty directory this view made
    made: Option<PathBuf>,
}

impl View {
    pub fn open(d: &Daemon, image: Option<&Digest>) -> std::io::Result<View> {
        let layers = match image {
            Some(id) => d
                .images
                .layer_dirs(id)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            None => Vec::new(),
        };
        let one = match (d.images.driver(), layers.len()) {
            (_, 0) => None,
            (Driver::Copy, _) | (Driver::Overlay, 1) => layers.last().cloned(),
            _ => None,
        };
        if let Some(root) = one {
            return Ok(View {
                tree: Tree { root },
                mounted: false,
                made: None,
            });
        }
        let dir = d
            .images
            .tmp_dir()
            .join(format!("view-{}", hex::encode(rand::random::<[u8; 8]>())));
        std::fs::create_dir_all(&dir)?;
        let mut v = View {
            tree: Tree { root: dir.clone() },
            mounted: false,
            made: Some(dir.clone()),
        };
        if layers.len() > 1 {
            let lower: Vec<String> = layers
                .iter()
                .rev()
                .map(|p| p.display().to_string())
                .collect();
            let data = std::ffi::CString::new(format!("lowerdir={}", lower.join(":")))
                .map_err(std::io::Error::other)?;
            rustix::mount::mount(
                "overlay",
                &dir,
                "overlay",
                rustix::mount::MountFlags::RDONLY,
                Some(data.as_c_str()),
            )?;
            v.mounted = true;
        }
        Ok(v)
    }
}

impl View {
    /// A directory as it is (a BuildKit build's named local context).
    pub fn of_dir(root: std::path::PathBuf) -> View {
        View {
            tree: Tree { root },
            mounted: false,
            made: None,
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Some(dir) = &self.made {
            if self.mounted {
                let _ = rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH);
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
}
