//! berth's image store: references, the content store, layer snapshots, and the
//! operations on images (import, tag, remove, prune, history, save and load).
//!
//! An image is its config blob (its ID is the config's digest) plus an ordered list of
//! layers. A layer is kept twice: as an uncompressed tar blob in the content store
//! (digest = diff id; what save and push send) and unpacked as a snapshot keyed by its
//! chain id (what containers run on). Rows in the metadata database are written last,
//! in one transaction, so an interrupted import or load leaves nothing visible; files
//! that no row names are removed at the next start.

pub mod archive;
pub mod config;
pub mod content;
pub mod digest;
pub mod platform;
pub mod reference;
pub mod snapshot;
pub mod split;
pub mod unpack;

use berth_store::{Db, ImageRow, LayerRow, NewImage, StoreError};
use config::{ChangeError, History, ImageConfigFile, RootFs};
use content::{ContentError, ContentStore};
use digest::{Digest, TeeReader};
use reference::{Reference, ReferenceError};
use snapshot::{Driver, Snapshots};
use split::{SplitReader, SplitWriter};
use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use unpack::{UnpackError, WhiteoutMode};

/// What can go wrong with images; the daemon maps each kind to an HTTP status once.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// the named image does not exist (404)
    #[error("No such image: {0}")]
    NotFound(String),
    /// a reference failed to parse (400)
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// bad request data (400)
    #[error("{0}")]
    Invalid(String),
    /// the image is in use or ambiguous (409)
    #[error("{0}")]
    Conflict(String),
    /// an archive or layer is damaged (400)
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }
}

pub type Result<T> = std::result::Result<T, ImageError>;

/// An image with everything the API shows about it.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: Digest,
    pub raw_config: Vec<u8>,
    pub config: ImageConfigFile,
    pub size: i64,
    pub created: i64,
    pub parent: String,
    pub last_tag_time: String,
    pub repo_tags: Vec<Reference>,
    pub repo_digests: Vec<Reference>,
    pub layers: Vec<LayerRow>,
}

/// One line of a remove or prune answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteItem {
    Untagged(String),
    /// an image
    Deleted(String),
    /// a layer no image needs any more
    DeletedLayer(String),
}

/// One row of `history`.
#[derive(Debug, Clone)]
pub struct HistoryItem {
    pub id: String,
    pub created: i64,
    pub created_by: String,
    pub tags: Vec<String>,
    pub size: i64,
    pub comment: String,
}

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// the runtime defaults (the container's Config)
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Dockerfile instructions applied over `config` (`commit -c`)
    pub changes: Vec<String>,
    pub comment: String,
    pub author: String,
    pub created_by: String,
    pub reference: Option<Reference>,
}

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub changes: Vec<String>,
    pub message: String,
    pub reference: Option<Reference>,
    /// Where the tar came from, for the default comment (`Imported from -`).
    pub source: String,
}

/// An image about to be written: its row, its layers, its references (name, is digest).
pub(crate) type PendingImage = (ImageRow, Vec<LayerRow>, Vec<(String, bool)>);

/// A layer unpacked and stored, not yet named by any database row.
pub struct NewLayer {
    pub row: LayerRow,
    pub fresh: bool,
}

pub struct ImageStore {
    db: Arc<Db>,
    content: ContentStore,
    snaps: Snapshots,
    tmp: PathBuf,
    /// serialises commits and removals so GC never races a new image
    lock: Mutex<()>,
}

/// Peeks at the magic bytes and wraps `r` in the matching decompressor.
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br
        .fill_buf()
        .map_err(ImageError::io("reading archive"))?
        .to_vec();
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(br)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let z = zstd::stream::read::Decoder::with_buffer(br).map_err(ImageError::io("zstd"))?;
        Ok(Box::new(z))
    } else if head.starts_with(b"BZh") {
        Err(ImageError::Invalid("unsupported compression: bzip2".into()))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(ImageError::Invalid("unsupported compression: xz".into()))
    } else {
        Ok(Box::new(br))
    }
}

/// Runs `f` on the decompressed stream of `reader` (gzip, zstd or plain, told by its
/// magic bytes). A compressed stream is inflated on a thread of its own, in 1 MiB
/// chunks, so decompression and what `f` does with the data (unpacking, hashing)
/// use two cores.
pub fn with_decompressed<T>(
    reader: &mut (dyn Read + Send),
    f: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    let mut br = BufReader::with_capacity(1 << 20, reader);
    let head = br
        .fill_buf()
        .map_err(ImageError::io("reading archive"))?
        .to_vec();
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if !gzip && !zstd {
        let mut plain = decompress(br)?;
        return f(&mut plain);
    }
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
        s.spawn(move || {
            let mut dec: Box<dyn Read> = if gzip {
                Box::new(flate2::read::MultiGzDecoder::new(br))
            } else {
                match zstd::stream::read::Decoder::with_buffer(br) {
                    Ok(z) => Box::new(z),
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            };
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let mut filled = 0;
                let end = loop {
                    match dec.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(true),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(false);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                match end {
                    Ok(done) => {
                        if filled > 0 && tx.send(Ok(buf)).is_err() {
                            return;
                        }
                        if done {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        let mut r = ChunkReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        };
        f(&mut r)
    })
}

/// Reads the chunks a decompressing thread sends.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Whether an image's references name one repository only (one tag at most, and digests
/// of that repository): removing its tag would leave it dangling.
fn single_repository(img: &Image) -> bool {
    if img.repo_tags.len() > 1 {
        return false;
    }
    let mut names = img
        .repo_tags
        .iter()
        .chain(img.repo_digests.iter())
        .map(Reference::full_name);
    match names.next() {
        None => false,
        Some(first) => names.all(|n| n == first),
    }
}

/// How long the verified layers of a failed pull wait for the pull to be tried again.
pub const PARTIAL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unmounts (lazily) every mount at or below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = rustix::mount::unmount(&p, rustix::mount::UnmountFlags::DETACH);
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl ImageStore {
    /// Opens the store under `root` (the data root). `driver` forces a snapshot driver.
    pub fn open(root: &Path, db: Arc<Db>, driver: Option<Driver>) -> Result<Self> {
        let tmp = root.join("tmp");
        // a build's image view mounted there when berthd stopped: unmounted first, so
        // clearing never reaches into it
        unmount_below(&tmp);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(ImageError::io("creating tmp"))?;
        let driver = driver.unwrap_or_else(|| {
            if snapshot::overlay_supported(&tmp) {
                Driver::Overlay
            } else {
                Driver::Copy
            }
        });
        let content = ContentStore::open(&root.join("content"))?;
        let snaps = Snapshots::open(&root.join("snapshots"), driver)
            .map_err(ImageError::io("snapshots"))?;
        let s = ImageStore {
            db,
            content,
            snaps,
            tmp,
            lock: Mutex::new(()),
        };
        s.expire_partial(PARTIAL_LIFETIME)?;
        s.collect_garbage()?;
        Ok(s)
    }

    pub fn driver(&self) -> Driver {
        self.snaps.driver()
    }

    pub fn snapshots(&self) -> &Snapshots {
        &self.snaps
    }

    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes snapshots and blobs no layer row names (left by a crash mid-import).
    fn collect_garbage(&self) -> Result<()> {
        let _g = self.guard();
        let layers = self.db.layers()?;
        let chains: HashSet<String> = layers.iter().map(|l| l.chain_id.clone()).collect();
        let blobs: HashSet<String> = layers.iter().map(|l| l.blob.clone()).collect();
        for c in self.snaps.list() {
            if !chains.contains(&c.to_string()) {
                tracing::info!(chain = %c, "removing unreferenced snapshot");
                self.snaps.remove(&c);
            }
        }
        if let Ok(rd) = std::fs::read_dir(
            self.content
                .path(&Digest::of(b""))
                .parent()
                .unwrap_or(Path::new("/nonexistent")),
        ) {
            for e in rd.flatten() {
                if let Ok(d) = Digest::from_hex(&e.file_name().to_string_lossy()) {
                    if !blobs.contains(&d.to_string()) {
                        tracing::info!(blob = %d, "removing unreferenced blob");
                        self.content.delete(&d);
                    }
                }
            }
        }
        Ok(())
    }

    /// Resolves a name (reference, full or short ID) to an image ID.
    pub fn resolve(&self, name: &str) -> Result<Digest> {
        if let Ok(d) = name.parse::<Digest>() {
            if self.db.image(&d.to_string())?.is_some() {
                return Ok(d);
            }
            return Err(ImageError::NotFound(name.to_string()));
        }
        if let Ok(d) = Digest::from_hex(name) {
            if self.db.image(&d.to_string())?.is_some() {
                return Ok(d);
            }
        }
        let mut shown = name.to_string();
        match Reference::parse_tagged_default(name) {
            Ok(r) => {
                if let Some(id) = self.db.resolve_ref(&r.to_string())? {
                    return id
                        .parse()
                        .map_err(|_| ImageError::NotFound(name.to_string()));
                }
                shown = r.familiar();
            }
            Err(e) => {
                if !is_hex_prefix(name) {
                    return Err(e.into());
                }
            }
        }
        if is_hex_prefix(name) {
            let ids = self.db.images_with_prefix(&format!("sha256:{name}"))?;
            match ids.as_slice() {
                [one] => {
                    return one
                        .parse()
                        .map_err(|_| ImageError::NotFound(name.to_string()))
                }
                [_, _, ..] => {
                    return Err(ImageError::Conflict(format!(
                        "ambiguous image ID prefix {name}: more than one image matches"
                    )))
                }
                [] => {}
            }
        }
        Err(ImageError::NotFound(shown))
    }

    fn image_from_row(&self, row: ImageRow, refs: &[(String, bool)]) -> Result<Image> {
        let id: Digest = row
            .id
            .parse()
            .map_err(|_| ImageError::Invalid(format!("corrupt image id {}", row.id)))?;
        let config = ImageConfigFile::parse(&row.config)
            .map_err(|e| ImageError::Invalid(format!("corrupt config of {id}: {e}")))?;
        let mut repo_tags = Vec::new();
        let mut repo_digests = Vec::new();
        for (name, is_digest) in refs {
            if let Ok(r) = Reference::parse(name) {
                if *is_digest {
                    repo_digests.push(r);
                } else {
                    repo_tags.push(r);
                }
            }
        }
        let layers = self.db.image_layers(&row.id)?;
        Ok(Image {
            id,
            raw_config: row.config,
            config,
            size: row.size,
            created: row.created,
            parent: row.parent,
            last_tag_time: row.last_tag_time,
            repo_tags,
            repo_digests,
            layers,
        })
    }

    pub fn get(&self, id: &Digest) -> Result<Image> {
        let row = self
            .db
            .image(&id.to_string())?
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        let refs = self.db.refs_of(&row.id)?;
        self.image_from_row(row, &refs)
    }

    /// Looks up by any name.
    pub fn inspect(&self, name: &str) -> Result<Image> {
        let id = self.resolve(name)?;
        self.get(&id)
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut by_image: HashMap<String, Vec<(String, bool)>> = HashMap::new();
        for (name, id, d) in self.db.refs()? {
            by_image.entry(id).or_default().push((name, d));
        }
        self.db
            .images()?
            .into_iter()
            .map(|row| {
                let refs = by_image.remove(&row.id).unwrap_or_default();
                self.image_from_row(row, &refs)
            })
            .collect()
    }

    pub fn count(&self) -> Result<i64> {
        Ok(self.db.image_count()?)
    }

    /// Sum of all layer sizes (shared layers once).
    pub fn layers_size(&self) -> Result<i64> {
        Ok(self.db.layers()?.iter().map(|l| l.size).sum())
    }

    /// Unpacks one layer stream on top of `parent`; the blob and snapshot are on disk
    /// when this returns, but no row names them yet.
    pub fn ingest_layer(
        &self,
        reader: &mut (dyn Read + Send),
        parent: Option<&Digest>,
        expect_diff: Option<&Digest>,
    ) -> Result<NewLayer> {
        let started = std::time::Instant::now();
        let (staged, done, unpacked, size) = with_decompressed(reader, |plain| {
            let staged = self
                .snaps
                .stage(parent)
                .map_err(ImageError::io("staging snapshot"))?;
            let split = SplitWriter::new(self.content.writer()?)
                .map_err(ImageError::io("starting the layer writer"))?;
            let mode = match self.snaps.driver() {
                Driver::Overlay => WhiteoutMode::Overlay,
                Driver::Copy => WhiteoutMode::Delete,
            };
            let log = unpack::ContentLog::new(split.marker(), staged.dir().join("extra"));
            let mut tee = TeeReader::new(plain, split);
            let (size, log) = unpack::apply_layer_logged(&mut tee, &staged.fs(), mode, Some(log))?;
            let unpacked = started.elapsed();
            // the tar end marker and padding belong to the layer too
            io::copy(&mut tee, &mut io::sink()).map_err(UnpackError::Tar)?;
            let (_, split) = tee.into_inner();
            let table = log.map(unpack::ContentLog::into_table).unwrap_or_default();
            let done = split
                .finish(&table)
                .map_err(ImageError::io("writing the layer"))?;
            Ok((staged, done, unpacked, size))
        })?;
        let diff_id = done.diff_id;
        let blob_size = done.tar_len;
        if let Some(want) = expect_diff {
            if *want != diff_id {
                return Err(ImageError::Invalid(format!(
                    "layer content does not match its diff id: expected {want}, got {diff_id}"
                )));
            }
        }
        let chain = match parent {
            None => diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
        };
        let known = self.db.layer(&chain.to_string())?;
        let blob = done.blob.commit(None)?;
        tracing::debug!(
            layer = %diff_id,
            bytes = blob_size,
            unpack_ms = unpacked.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "layer stored"
        );
        let fresh = known.is_none() && !self.snaps.exists(&chain);
        self.snaps
            .commit(staged, &chain)
            .map_err(ImageError::io("committing snapshot"))?;
        Ok(NewLayer {
            row: LayerRow {
                chain_id: chain.to_string(),
                diff_id: diff_id.to_string(),
                parent: parent.map(|p| p.to_string()).unwrap_or_default(),
                size: known.map(|k| k.size).unwrap_or(size as i64),
                blob: blob.to_string(),
                blob_size: blob_size as i64,
            },
            fresh,
        })
    }

    /// Removes what `ingest_layer` made when the operation using it failed.
    pub fn discard(&self, layers: &[NewLayer]) {
        let _g = self.guard();
        for l in layers.iter().filter(|l| l.fresh) {
            if let Ok(None) = self.db.layer(&l.row.chain_id) {
                if let Ok(c) = l.row.chain_id.parse::<Digest>() {
                    self.snaps.remove(&c);
                }
                self.delete_blob_if_unused(&l.row.blob);
            }
        }
    }

    /// Keeps the verified layers of a pull that failed elsewhere, so the next pull of
    /// the same layers finds them; they expire after [`PARTIAL_LIFETIME`] unless an image
    /// names them by then.
    pub fn keep_partial(&self, layers: &[NewLayer]) -> Result<()> {
        let _g = self.guard();
        let rows: Vec<LayerRow> = layers
            .iter()
            .filter(|l| l.fresh)
            .map(|l| l.row.clone())
            .collect();
        self.db.keep_partial(&rows, unix_now())?;
        Ok(())
    }

    /// Removes partial layers older than `age` (all of them for zero) that no image
    /// uses; returns the space given back.
    pub fn expire_partial(&self, age: std::time::Duration) -> Result<u64> {
        let _g = self.guard();
        let before = if age.is_zero() {
            i64::MAX
        } else {
            unix_now() - age.as_secs() as i64
        };
        let gone = self.db.expire_partial(before)?;
        let mut freed = 0u64;
        let blobs: HashSet<String> = self.db.layers()?.into_iter().map(|l| l.blob).collect();
        for l in gone {
            freed += l.size.max(0) as u64;
            if let Ok(c) = l.chain_id.parse::<Digest>() {
                self.snaps.remove(&c);
            }
            if !blobs.contains(&l.blob) {
                if let Ok(b) = l.blob.parse::<Digest>() {
                    self.content.delete(&b);
                }
            }
        }
        Ok(freed)
    }

    /// Writes new images with their layers and references, all or nothing.
    pub(crate) fn commit_images(&self, images: &[PendingImage]) -> Result<()> {
        let _g = self.guard();
        let news: Vec<NewImage<'_>> = images
            .iter()
            .map(|(i, l, r)| NewImage {
                image: i,
                layers: l,
                refs: r,
            })
            .collect();
        self.db.insert_images(&news)?;
        Ok(())
    }

    /// A layer already stored under `chain`, with its snapshot.
    pub fn known_layer(&self, chain: &Digest) -> Result<Option<LayerRow>> {
        Ok(self
            .db
            .layer(&chain.to_string())?
            .filter(|_| self.snaps.exists(chain)))
    }

    /// Records a pulled image: its config (`raw`, already checked against its digest),
    /// its layers in order, and references (`true` for digest references). Returns the
    /// image ID and whether a reference changed (the image is new to a name).
    pub fn commit_pulled(
        &self,
        raw: Vec<u8>,
        rows: Vec<LayerRow>,
        refs: &[(Reference, bool)],
    ) -> Result<(Digest, bool)> {
        let cfg = ImageConfigFile::parse(&raw)
            .map_err(|e| ImageError::Invalid(format!("image config: {e}")))?;
        if cfg.rootfs.diff_ids.len() != rows.len() {
            return Err(ImageError::Invalid(format!(
                "the config has {} diff ids for {} layers",
                cfg.rootfs.diff_ids.len(),
                rows.len()
            )));
        }
        let id = Digest::of(&raw);
        let mut changed = false;
        for (r, _) in refs {
            if self.db.resolve_ref(&r.to_string())?.as_deref() != Some(&id.to_string()) {
                changed = true;
            }
        }
        let tagged = refs.iter().any(|(_, d)| !d);
        let row = Self::image_row(&id, raw, &cfg, &rows, tagged && changed);
        let refs = refs.iter().map(|(r, d)| (r.to_string(), *d)).collect();
        self.commit_images(&[(row, rows, refs)])?;
        Ok((id, changed))
    }

    /// `docker import`: a rootfs tarball (plain, gzip or zstd) becomes a one-layer image.
    pub fn import(&self, reader: &mut (dyn Read + Send), opts: ImportOptions) -> Result<Digest> {
        let mut runtime = serde_json::Map::new();
        config::apply_changes(&mut runtime, &opts.changes)?;
        let layer = self.ingest_layer(reader, None, None)?;
        let result = (|| {
            let created = now_rfc3339();
            let msg = if opts.message.is_empty() {
                format!("Imported from {}", opts.source)
            } else {
                opts.message.clone()
            };
            let diff: Digest = layer
                .row
                .diff_id
                .parse()
                .map_err(|_| ImageError::Invalid("diff id".into()))?;
            let cfg = ImageConfigFile {
                architecture: config::host_arch().to_string(),
                comment: Some(msg.clone()),
                config: Some(runtime),
                created: Some(created.clone()),
                docker_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                history: vec![History {
                    created: Some(created.clone()),
                    comment: Some(msg),
                    ..Default::default()
                }],
                os: "linux".into(),
                rootfs: RootFs {
                    kind: "layers".into(),
                    diff_ids: vec![diff],
                },
                ..Default::default()
            };
            let raw = serde_json::to_vec(&cfg).map_err(|e| ImageError::Invalid(e.to_string()))?;
            let id = Digest::of(&raw);
            let refs = opts
                .reference
                .iter()
                .map(|r| (r.to_string(), false))
                .collect::<Vec<_>>();
            let row = ImageRow {
                id: id.to_string(),
                config: raw,
                size: layer.row.size,
                created: cfg.created_unix(),
                parent: String::new(),
                last_tag_time: if refs.is_empty() {
                    String::new()
                } else {
                    created
                },
            };
            self.commit_images(&[(row, vec![layer.row.clone()], refs)])?;
            Ok(id)
        })();
        if result.is_err() {
            self.discard(std::slice::from_ref(&layer));
        }
        result
    }

    /// `docker commit`: a new image of `parent` plus one layer (`layer`, a tar with OCI
    /// whiteouts), with the container's config as its runtime defaults.
    pub fn commit(
        &self,
        parent: &Digest,
        layer: &mut (dyn Read + Send),
        opts: CommitOptions,
    ) -> Result<Digest> {
        self.child(Some(parent), Some(layer), opts)
    }

    /// A build step's image: `parent` (none: `FROM scratch`) plus one layer, or plus only
    /// a history entry marked `empty_layer` when `layer` is `None`. The new image names
    /// `parent` as its parent, as a build's intermediate images do.
    pub fn child(
        &self,
        parent: Option<&Digest>,
        layer: Option<&mut (dyn Read + Send)>,
        opts: CommitOptions,
    ) -> Result<Digest> {
        let base = match parent {
            Some(p) => Some(self.get(p)?),
            None => None,
        };
        let top = base
            .as_ref()
            .and_then(|b| b.layers.last())
            .map(|l| l.chain_id.parse::<Digest>())
            .transpose()
            .map_err(|_| ImageError::Invalid("corrupt chain id".into()))?;
        let new = match layer {
            Some(l) => Some(self.ingest_layer(l, top.as_ref(), None)?),
            None => None,
        };
        let result = (|| {
            let created = now_rfc3339();
            let mut cfg = match &base {
                Some(b) => b.config.clone(),
                None => ImageConfigFile {
                    architecture: config::host_arch().to_string(),
                    os: "linux".into(),
                    rootfs: RootFs {
                        kind: "layers".into(),
                        diff_ids: Vec::new(),
                    },
                    ..Default::default()
                },
            };
            let mut runtime = opts.config.clone();
            config::apply_changes(&mut runtime, &opts.changes)?;
            cfg.config = Some(runtime);
            cfg.created = Some(created.clone());
            cfg.author = (!opts.author.is_empty()).then(|| opts.author.clone());
            cfg.comment = (!opts.comment.is_empty()).then(|| opts.comment.clone());
            cfg.docker_version = Some(env!("CARGO_PKG_VERSION").to_string());
            cfg.history.push(History {
                created: Some(created.clone()),
                created_by: (!opts.created_by.is_empty()).then(|| opts.created_by.clone()),
                author: (!opts.author.is_empty()).then(|| opts.author.clone()),
                comment: (!opts.comment.is_empty()).then(|| opts.comment.clone()),
                empty_layer: new.is_none(),
            });
            let mut layers: Vec<LayerRow> =
                base.as_ref().map(|b| b.layers.clone()).unwrap_or_default();
            if let Some(n) = &new {
                let diff: Digest = n
                    .row
                    .diff_id
                    .parse()
                    .map_err(|_| ImageError::Invalid("diff id".into()))?;
                cfg.rootfs.diff_ids.push(diff);
                layers.push(n.row.clone());
            }
            let raw = serde_json::to_vec(&cfg).map_err(|e| ImageError::Invalid(e.to_string()))?;
            let id = Digest::of(&raw);
            let refs = opts
                .reference
                .iter()
                .map(|r| (r.to_string(), false))
                .collect::<Vec<_>>();
            let row = ImageRow {
                id: id.to_string(),
                config: raw,
                size: layers.iter().map(|l| l.size).sum(),
                created: cfg.created_unix(),
                parent: parent.map(|p| p.to_string()).unwrap_or_default(),
                last_tag_time: if refs.is_empty() {
                    String::new()
                } else {
                    created
                },
            };
            self.commit_images(&[(row, layers, refs)])?;
            Ok(id)
        })();
        if result.is_err() {
            if let Some(n) = new {
                self.discard(std::slice::from_ref(&n));
            }
        }
        result
    }

    /// The image a build step with this cache key made, if it is still there.
    pub fn cache_hit(&self, key: &str) -> Result<Option<Digest>> {
        let Some(id) = self.db.cache_hit(key, unix_now())? else {
            return Ok(None);
        };
        match id.parse::<Digest>() {
            Ok(d) if self.db.image(&id)?.is_some() => Ok(Some(d)),
            _ => {
                self.db.cache_forget(key)?;
                Ok(None)
            }
        }
    }

    /// Records the image a build step made under its cache key.
    pub fn cache_put(&self, key: &str, id: &Digest, description: &str) -> Result<()> {
        Ok(self
            .db
            .cache_put(key, &id.to_string(), description, unix_now())?)
    }

    /// Points `reference` at the image; returns the image it named before, if another.
    pub fn tag(&self, id: &Digest, reference: &Reference) -> Result<Option<String>> {
        if reference.digest().is_some() {
            return Err(ImageError::Invalid(
                "refusing to create a tag with a digest reference".into(),
            ));
        }
        let r = if reference.tag().is_none() {
            reference.with_tag(reference::DEFAULT_TAG)?
        } else {
            reference.clone()
        };
        Ok(self
            .db
            .set_ref(&r.to_string(), &id.to_string(), false, &now_rfc3339())?)
    }

    /// Records `repo@digest` for an image (after a push put it there).
    pub fn add_digest_ref(&self, id: &Digest, reference: &Reference) -> Result<()> {
        if reference.digest().is_none() {
            return Err(ImageError::Invalid(
                "a digest reference needs a digest".into(),
            ));
        }
        self.db
            .set_ref(&reference.to_string(), &id.to_string(), true, "")?;
        Ok(())
    }

    /// `docker rmi NAME`. `in_use` says whether a container uses an image (and how, for
    /// the message). A name that is a reference of an image with other references only
    /// untags; by ID (or the last reference) the image goes, with any layer no other
    /// image needs.
    pub fn remove(
        &self,
        name: &str,
        force: bool,
        in_use: &dyn Fn(&Digest) -> Option<String>,
    ) -> Result<Vec<DeleteItem>> {
        let id = self.resolve(name)?;
        let img = self.get(&id)?;
        let by_ref = Reference::parse_tagged_default(name)
            .ok()
            .filter(|r| img.repo_tags.contains(r) || img.repo_digests.contains(r));
        let mut out = Vec::new();
        let all_refs = img.repo_tags.len() + img.repo_digests.len();
        if let Some(r) = &by_ref {
            if !force && single_repository(&img) {
                if let Some(why) = in_use(&id) {
                    // the image would be left dangling under a container: Docker refuses
                    return Err(ImageError::Conflict(format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - {why}"
                    )));
                }
            }
            self.db.delete_ref(&r.to_string())?;
            out.push(DeleteItem::Untagged(r.familiar()));
            let mut left: Vec<&Reference> = img
                .repo_tags
                .iter()
                .chain(img.repo_digests.iter())
                .filter(|x| *x != r)
                .collect();
            // the last tag of a repository takes that repository's digest references along
            let name = r.full_name();
            if r.digest().is_none()
                && !img
                    .repo_tags
                    .iter()
                    .any(|t| t != r && t.full_name() == name)
            {
                for x in left
                    .iter()
                    .filter(|x| x.digest().is_some() && x.full_name() == name)
                {
                    self.db.delete_ref(&x.to_string())?;
                    out.push(DeleteItem::Untagged(x.familiar()));
                }
                left.retain(|x| x.digest().is_none() || x.full_name() != name);
            }
            if !left.is_empty() || in_use(&id).is_some() {
                return Ok(out);
            }
        } else if all_refs > 1 && !force {
            return Err(ImageError::Conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                id.short()
            )));
        }
        if let Some(why) = in_use(&id) {
            if !force {
                return Err(ImageError::Conflict(format!(
                    "conflict: unable to delete {} (cannot be forced) - {why}",
                    id.short()
                )));
            }
            // forced: untag, leave the image for the container
            for r in img.repo_tags.iter().chain(img.repo_digests.iter()) {
                self.db.delete_ref(&r.to_string())?;
                out.push(DeleteItem::Untagged(r.familiar()));
            }
            return Ok(out);
        }
        if !self.db.children_of(&id.to_string())?.is_empty() && !force {
            return Err(ImageError::Conflict(format!(
                "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
                id.short()
            )));
        }
        if by_ref.is_none() {
            for r in img.repo_tags.iter().chain(img.repo_digests.iter()) {
                out.push(DeleteItem::Untagged(r.familiar()));
            }
        }
        out.extend(self.delete_image(&id)?);
        out.extend(self.remove_parents(&img.parent, in_use)?);
        Ok(out)
    }

    /// The untagged images an image was built on (a build's intermediate steps), up to
    /// the first one still needed: Docker removes them with the image.
    fn remove_parents(
        &self,
        parent: &str,
        in_use: &dyn Fn(&Digest) -> Option<String>,
    ) -> Result<Vec<DeleteItem>> {
        let mut out = Vec::new();
        let mut parent = parent.to_string();
        while let Ok(p) = parent.parse::<Digest>() {
            let Ok(pi) = self.get(&p) else { break };
            let needed = !pi.repo_tags.is_empty()
                || !pi.repo_digests.is_empty()
                || in_use(&p).is_some()
                || !self.db.children_of(&pi.id.to_string())?.is_empty();
            if needed {
                break;
            }
            out.extend(self.delete_image(&p)?);
            parent = pi.parent.clone();
        }
        Ok(out)
    }

    fn delete_image(&self, id: &Digest) -> Result<Vec<DeleteItem>> {
        let _g = self.guard();
        let orphans = self.db.delete_image(&id.to_string())?;
        let mut out = vec![DeleteItem::Deleted(id.to_string())];
        for l in orphans {
            if let Ok(c) = l.chain_id.parse::<Digest>() {
                self.snaps.remove(&c);
                out.push(DeleteItem::DeletedLayer(c.to_string()));
            }
            self.delete_blob_if_unused(&l.blob);
        }
        Ok(out)
    }

    /// Removes a layer's blob unless another layer stores its data there too.
    fn delete_blob_if_unused(&self, blob: &str) {
        if let (Ok(b), Ok(false)) = (blob.parse::<Digest>(), self.db.blob_used(blob)) {
            self.content.delete(&b);
        }
    }

    /// `docker image prune`: dangling images (no references, no children), or with
    /// `all` every image no container uses. `keep` filters further (labels, until).
    pub fn prune(
        &self,
        all: bool,
        keep: &dyn Fn(&Image) -> bool,
        in_use: &dyn Fn(&Digest) -> Option<String>,
    ) -> Result<(Vec<DeleteItem>, u64)> {
        let mut out = Vec::new();
        let mut reclaimed = 0u64;
        let layer_sizes: HashMap<String, i64> = self
            .db
            .layers()?
            .into_iter()
            .map(|l| (l.chain_id, l.size))
            .collect();
        for img in self.list()? {
            let dangling = img.repo_tags.is_empty() && img.repo_digests.is_empty();
            if (!all && !dangling) || in_use(&img.id).is_some() || !keep(&img) {
                continue;
            }
            // gone already: an untagged parent an earlier image in this loop took along
            if self.db.image(&img.id.to_string())?.is_none()
                || !self.db.children_of(&img.id.to_string())?.is_empty()
            {
                continue;
            }
            for r in img.repo_tags.iter().chain(img.repo_digests.iter()) {
                out.push(DeleteItem::Untagged(r.familiar()));
            }
            let mut items = self.delete_image(&img.id)?;
            if !all {
                items.extend(self.remove_parents(&img.parent, in_use)?);
            }
            for it in &items {
                if let DeleteItem::DeletedLayer(c) = it {
                    reclaimed += layer_sizes.get(c).copied().unwrap_or(0) as u64;
                }
            }
            out.extend(items);
        }
        Ok((out, reclaimed))
    }

    /// `docker history`: newest first; the top row carries the ID and tags.
    pub fn history(&self, id: &Digest) -> Result<Vec<HistoryItem>> {
        let img = self.get(id)?;
        let mut layers = img.layers.iter();
        let mut rows = Vec::new();
        let history: Vec<History> = if img.config.history.is_empty() {
            img.layers.iter().map(|_| History::default()).collect()
        } else {
            img.config.history.clone()
        };
        for h in &history {
            let size = if h.empty_layer {
                0
            } else {
                layers.next().map(|l| l.size).unwrap_or(0)
            };
            rows.push(HistoryItem {
                id: "<missing>".into(),
                created: h
                    .created
                    .as_deref()
                    .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                    .map(|t| t.timestamp())
                    .unwrap_or(0),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: Vec::new(),
                size,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        // the images along the parent chain (a build's steps, a commit's base) name the
        // rows up to their own history's length, as Docker shows them
        let top_tags: Vec<String> = img.repo_tags.iter().map(|r| r.familiar()).collect();
        let mut chain = Some(img);
        let mut hops = 0;
        while let Some(i) = chain.take() {
            let n = i.config.history.len();
            if n > 0 && n <= rows.len() && rows[n - 1].id == "<missing>" {
                rows[n - 1].id = i.id.to_string();
                rows[n - 1].tags = i.repo_tags.iter().map(|r| r.familiar()).collect();
            }
            hops += 1;
            chain = match i.parent.parse::<Digest>() {
                Ok(p) if hops < 1000 => self.get(&p).ok(),
                _ => None,
            };
        }
        rows.reverse();
        if let Some(top) = rows.first_mut() {
            if top.id != id.to_string() {
                top.id = id.to_string();
                top.tags = top_tags;
            }
        }
        Ok(rows)
    }

    /// The layer's tar, byte for byte as it came in (reassembled from its split).
    pub fn layer_tar(&self, l: &LayerRow) -> Result<SplitReader> {
        let bad = |what: &str| {
            ImageError::Invalid(format!("corrupt layer record {}: {what}", l.chain_id))
        };
        let blob: Digest = l.blob.parse().map_err(|_| bad("blob"))?;
        let chain: Digest = l.chain_id.parse().map_err(|_| bad("chain id"))?;
        let diff: Digest = l.diff_id.parse().map_err(|_| bad("diff id"))?;
        SplitReader::open(&self.content.path(&blob), &self.snaps.dir(&chain), diff)
            .map_err(ImageError::io(format!("reading layer {}", l.diff_id)))
    }

    /// The snapshot directories of an image's layers, bottom first.
    /// The directory below which every layer directory lives.
    pub fn layer_root(&self) -> &Path {
        self.snaps.root()
    }

    pub fn layer_dirs(&self, id: &Digest) -> Result<Vec<PathBuf>> {
        let img = self.get(id)?;
        img.layers
            .iter()
            .map(|l| {
                l.chain_id
                    .parse::<Digest>()
                    .map(|c| self.snaps.fs_dir(&c))
                    .map_err(|_| ImageError::Invalid(format!("corrupt chain id {}", l.chain_id)))
            })
            .collect()
    }
}

fn is_hex_prefix(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_uid(rustix::process::geteuid().as_raw() as u64);
        h.set_gid(rustix::process::getegid().as_raw() as u64);
        b.append_data(&mut h, "bin/", &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(5);
        h.set_uid(rustix::process::geteuid().as_raw() as u64);
        h.set_gid(rustix::process::getegid().as_raw() as u64);
        b.append_data(&mut h, "bin/sh", &b"#!x\n\n"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn store(dir: &Path) -> ImageStore {
        let db = Arc::new(Db::open(&dir.join("berth.db")).unwrap());
        ImageStore::open(dir, db, Some(Driver::Copy)).unwrap()
    }

    #[test]
    fn import_tag_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let t = rootfs_tar();
        let id = s
            .import(
                &mut &t[..],
                ImportOptions {
                    changes: vec!["CMD [\"/bin/sh\"]".into()],
                    message: String::new(),
                    reference: Some(Reference::parse_tagged_default("test:one").unwrap()),
                    source: "-".into(),
                },
            )
            .unwrap();
        let img = s.inspect("test:one").unwrap();
        assert_eq!(img.id, id);
        assert_eq!(img.size, 5);
        assert_eq!(img.config.rootfs.diff_ids[0], Digest::of(&t));
        assert_eq!(s.resolve(&id.hex()[..6]).unwrap(), id);
        assert!(matches!(s.inspect("nope"), Err(ImageError::NotFound(_))));
        s.tag(&id, &Reference::parse("test:two").unwrap()).unwrap();
        let items = s.remove("test:one", false, &|_| None).unwrap();
        assert_eq!(items, vec![DeleteItem::Untagged("test:one".into())]);
        let items = s.remove("test:two", false, &|_| None).unwrap();
        assert_eq!(items.len(), 3, "{items:?}");
        assert!(matches!(items[2], DeleteItem::DeletedLayer(_)));
        assert_eq!(s.count().unwrap(), 0);
        assert!(s.snapshots().list().is_empty());
    }

    /// A tar whose entries replace and delete each other's files.
    fn tricky_tar() -> Vec<u8> {
        let uid = rustix::process::geteuid().as_raw() as u64;
        let gid = rustix::process::getegid().as_raw() as u64;
        let mut b = tar::Builder::new(Vec::new());
        let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(5);
            b.append_data(&mut h, name, data).unwrap();
        };
        file(&mut b, "a", b"first a");
        file(&mut b, "a", b"second a, longer");
        file(&mut b, "d/x", &[7u8; 3000]);
        file(&mut b, "empty", b"");
        file(&mut b, &format!("{}/long-name", "n".repeat(120)), b"long");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(uid);
        h.set_gid(gid);
        b.append_link(&mut h, "d", "a").unwrap(); // replaces the directory holding d/x
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_uid(uid);
        h.set_gid(gid);
        b.append_link(&mut h, "h", "a").unwrap();
        file(&mut b, ".wh.empty", b"");
        file(&mut b, "z", b"last");
        b.into_inner().unwrap()
    }

    #[test]
    fn layers_reassemble_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        for t in [tricky_tar(), rootfs_tar()] {
            let id = s
                .import(
                    &mut &t[..],
                    ImportOptions {
                        changes: vec![],
                        message: String::new(),
                        reference: None,
                        source: "-".into(),
                    },
                )
                .unwrap();
            let img = s.get(&id).unwrap();
            let mut back = Vec::new();
            s.layer_tar(&img.layers[0])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back.len(), t.len());
            assert!(back == t, "reassembled tar differs");
            let fs = s
                .snapshots()
                .fs_dir(&img.layers[0].chain_id.parse().unwrap());
            if img.layers[0].diff_id == Digest::of(&tricky_tar()).to_string() {
                assert_eq!(std::fs::read(fs.join("a")).unwrap(), b"second a, longer");
                assert!(!fs.join("empty").exists());
            }
        }
        // a changed snapshot is caught, not sent
        let img = &s.list().unwrap()[0];
        let fs = s
            .snapshots()
            .fs_dir(&img.layers[0].chain_id.parse().unwrap());
        let victim = if fs.join("z").exists() {
            fs.join("z")
        } else {
            fs.join("bin/sh")
        };
        let len = std::fs::metadata(&victim).unwrap().len() as usize;
        std::fs::write(&victim, vec![b'!'; len]).unwrap();
        let mut back = Vec::new();
        let err = s
            .layer_tar(&img.layers[0])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap_err();
        assert!(err.to_string().contains("digest"), "{err}");
    }

    #[test]
    fn corrupt_import_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut t = rootfs_tar();
        t.truncate(700);
        let opts = ImportOptions {
            changes: vec![],
            message: String::new(),
            reference: None,
            source: "-".into(),
        };
        assert!(s.import(&mut &t[..], opts).is_err());
        assert_eq!(s.count().unwrap(), 0);
        assert!(s.snapshots().list().is_empty());
        let blobs = std::fs::read_dir(dir.path().join("content/blobs/sha256"))
            .unwrap()
            .count();
        assert_eq!(blobs, 0);
    }
}
