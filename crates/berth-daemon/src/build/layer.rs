//! Writing a COPY's layer: what each copied item is and how it is owned and moded, and
//! the tar that holds it (missing parent directories first).

use super::source::{join, Kind, Meta, Source};
use berth_build::ignore::Ignore;
use std::io::{self, Read, Write};

/// One thing a COPY writes: a path in the image (relative, clean) and where it comes from.
pub struct Item<'a> {
    pub src: &'a dyn Source,
    pub from: String,
    pub to: String,
}

/// How copied entries are owned and moded.
#[derive(Debug, Clone, Default)]
pub struct Attrs {
    /// `--chown`: (uid, gid); None keeps the source's owner
    pub owner: Option<(u64, u64)>,
    /// `--chmod`
    pub mode: Option<u32>,
    /// `--exclude`: patterns of paths below a copied directory that stay out
    pub exclude: Option<std::sync::Arc<Ignore>>,
}

/// Writes a layer tar: first `dirs` (missing parents, root-owned 0755), then each item
/// (directories with their contents).
pub struct LayerWriter<W: Write> {
    tar: tar::Builder<W>,
}

impl<W: Write> LayerWriter<W> {
    pub fn new(w: W) -> Self {
        let mut tar = tar::Builder::new(w);
        tar.follow_symlinks(false);
        LayerWriter { tar }
    }

    pub fn dir(&mut self, path: &str, meta: &Meta) -> io::Result<()> {
        let mut h = header(meta, tar::EntryType::Directory, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
    }

    pub fn file(&mut self, path: &str, meta: &Meta, data: impl Read) -> io::Result<()> {
        let mut h = header(meta, tar::EntryType::Regular, meta.size);
        self.tar.append_data(&mut h, path, data)
    }

    /// A symlink, or (`hard`) a hard link to a path written earlier in this layer.
    pub fn link(&mut self, path: &str, meta: &Meta, target: &str, hard: bool) -> io::Result<()> {
        let t = if hard {
            tar::EntryType::Link
        } else {
            tar::EntryType::Symlink
        };
        let mut h = header(meta, t, 0);
        self.tar.append_link(&mut h, path, target)
    }

    pub fn item(&mut self, it: &Item<'_>, attrs: &Attrs) -> io::Result<()> {
        let root = it.from.clone();
        self.item_below(it, attrs, &root)
    }

    /// [`LayerWriter::item`] of an entry found below `root` (what `--exclude` patterns
    /// are relative to).
    fn item_below(&mut self, it: &Item<'_>, attrs: &Attrs, root: &str) -> io::Result<()> {
        if let Some(ex) = &attrs.exclude {
            let rel = it
                .from
                .strip_prefix(root)
                .unwrap_or(&it.from)
                .trim_start_matches('/');
            if !rel.is_empty() && ex.excluded(rel) {
                return Ok(());
            }
        }
        let Some(meta) = it.src.meta(&it.from) else {
            return Ok(());
        };
        let meta = apply(meta, attrs);
        match &meta.kind {
            Kind::Dir => {
                if !it.to.is_empty() {
                    self.dir(&it.to, &meta)?;
                }
                for n in it.src.children(&it.from) {
                    let child = Item {
                        src: it.src,
                        from: join(&it.from, &n),
                        to: join(&it.to, &n),
                    };
                    self.item_below(&child, attrs, root)?;
                }
                Ok(())
            }
            Kind::File => {
                let r = it.src.open(&it.from)?;
                self.file(&it.to, &meta, r.take(meta.size))
            }
            Kind::Symlink(target) => {
                let mut h = header(&meta, tar::EntryType::Symlink, 0);
                self.tar.append_link(&mut h, &it.to, target)
            }
        }
    }

    pub fn finish(self) -> io::Result<W> {
        self.tar.into_inner()
    }
}

pub(super) fn apply(mut m: Meta, a: &Attrs) -> Meta {
    if let Some((u, g)) = a.owner {
        m.uid = u;
        m.gid = g;
    }
    if let (Some(mode), false) = (a.mode, matches!(m.kind, Kind::Symlink(_))) {
        m.mode = mode;
    }
    m
}

pub(super) fn header(m: &Meta, t: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(m.mode);
    h.set_uid(m.uid);
    h.set_gid(m.gid);
    h.set_mtime(m.mtime);
    h.set_size(size);
    h
}
