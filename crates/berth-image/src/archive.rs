//! Image archives: `docker save` and `docker load`.
//!
//! Save writes one tarball that is both a docker-archive (`manifest.json`,
//! `repositories`) and an OCI image layout (`oci-layout`, `index.json`, `blobs/`), as
//! Docker 25 and later do, so either kind of reader takes it. Load reads either kind:
//! `manifest.json` first, else `index.json` (nested indexes resolved to this
//! platform). Layers may be plain, gzip or zstd tarballs; every digest is checked.

use crate::config::{host_arch, ImageConfigFile};
use crate::digest::{Digest, HashingReader};
use crate::reference::Reference;
use crate::unpack::clean_components;
use crate::{ImageError, ImageStore, NewLayer, Result};
use berth_store::ImageRow;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const ANNOT_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOT_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Manifests, configs and indexes are small; refuse to read a huge one into memory.
const MAX_JSON: u64 = 16 << 20;

/// What a load did, one line each as Docker prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadEvent {
    /// `Loaded image: busybox:latest`
    Tagged { reference: String, id: Digest },
    /// `Loaded image ID: sha256:...`
    Untagged(Digest),
    /// a reference moved off another image
    Renamed { reference: String, old: String },
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut h, name, &[][..])
}

impl ImageStore {
    /// Resolves `docker save` names: a repository without a tag means all its tags.
    fn save_selection(&self, names: &[String]) -> Result<Vec<(Digest, Vec<Reference>)>> {
        let mut picked: Vec<(Digest, Vec<Reference>)> = Vec::new();
        let mut add = |id: Digest, r: Option<Reference>| {
            let slot = match picked.iter().position(|(i, _)| *i == id) {
                Some(p) => p,
                None => {
                    picked.push((id, Vec::new()));
                    picked.len() - 1
                }
            };
            if let Some(r) = r {
                if !picked[slot].1.contains(&r) {
                    picked[slot].1.push(r);
                }
            }
        };
        for name in names {
            let parsed = Reference::parse(name).ok();
            let bare_repo = parsed
                .as_ref()
                .filter(|r| r.tag().is_none() && r.digest().is_none());
            if let Some(repo) = bare_repo {
                let mut found = false;
                for img in self.list()? {
                    for t in &img.repo_tags {
                        if t.full_name() == repo.full_name() {
                            add(img.id.clone(), Some(t.clone()));
                            found = true;
                        }
                    }
                }
                if found {
                    continue;
                }
            }
            let id = self.resolve(name)?;
            let as_tag = Reference::parse_tagged_default(name).ok().filter(|r| {
                r.digest().is_none()
                    && self
                        .db
                        .resolve_ref(&r.to_string())
                        .ok()
                        .flatten()
                        .as_deref()
                        == Some(&id.to_string())
            });
            add(id, as_tag);
        }
        Ok(picked)
    }

    /// Checks that every name resolves, before a response starts streaming.
    pub fn check_save(&self, names: &[String]) -> Result<()> {
        self.save_selection(names).map(|_| ())
    }

    /// `docker save`: writes the archive of `names` to `out`.
    pub fn save(&self, names: &[String], out: &mut dyn Write) -> Result<()> {
        let picked = self.save_selection(names)?;
        let mut tar = tar::Builder::new(out);
        let err = ImageError::io("writing archive");
        let mut manifest_json = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut index = Vec::new();
        let mut written = std::collections::HashSet::new();
        let mut wrote_dirs = false;
        for (id, refs) in &picked {
            let img = self.get(id)?;
            if !wrote_dirs {
                append_dir(&mut tar, "blobs/").map_err(ImageError::io("writing archive"))?;
                append_dir(&mut tar, "blobs/sha256/").map_err(ImageError::io("writing archive"))?;
                wrote_dirs = true;
            }
            let mut layer_paths = Vec::new();
            let mut layer_descs = Vec::new();
            for l in &img.layers {
                let blob: Digest = l
                    .diff_id
                    .parse()
                    .map_err(|_| ImageError::Invalid(format!("corrupt diff id {}", l.diff_id)))?;
                let path = format!("blobs/sha256/{}", blob.hex());
                if written.insert(path.clone()) {
                    let reader = self.layer_tar(l)?;
                    let mut h = tar::Header::new_ustar();
                    h.set_size(l.blob_size as u64);
                    h.set_mode(0o644);
                    h.set_mtime(0);
                    h.set_entry_type(tar::EntryType::Regular);
                    tar.append_data(&mut h, &path, reader)
                        .map_err(ImageError::io("writing archive"))?;
                }
                layer_descs.push(json!({"mediaType": MEDIA_LAYER, "digest": blob.to_string(), "size": l.blob_size}));
                layer_paths.push(path);
            }
            let cfg_path = format!("blobs/sha256/{}", id.hex());
            if written.insert(cfg_path.clone()) {
                append_bytes(&mut tar, &cfg_path, &img.raw_config)
                    .map_err(ImageError::io("writing archive"))?;
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {"mediaType": MEDIA_CONFIG, "digest": id.to_string(), "size": img.raw_config.len()},
                "layers": layer_descs,
            });
            let mbytes =
                serde_json::to_vec(&manifest).map_err(|e| ImageError::Invalid(e.to_string()))?;
            let mdigest = Digest::of(&mbytes);
            let mpath = format!("blobs/sha256/{}", mdigest.hex());
            if written.insert(mpath.clone()) {
                append_bytes(&mut tar, &mpath, &mbytes)
                    .map_err(ImageError::io("writing archive"))?;
            }
            let desc = |annotations: Option<Value>| {
                let mut d = json!({"mediaType": MEDIA_MANIFEST, "digest": mdigest.to_string(), "size": mbytes.len()});
                if let Some(a) = annotations {
                    d["annotations"] = a;
                }
                d
            };
            if refs.is_empty() {
                index.push(desc(None));
            }
            for r in refs {
                index.push(desc(Some(json!({
                    ANNOT_IMAGE_NAME: r.to_string(),
                    ANNOT_REF_NAME: r.tag().unwrap_or_default(),
                }))));
                if let (Some(tag), Some(top)) = (r.tag(), img.layers.last()) {
                    repositories.entry(r.familiar_name()).or_default().insert(
                        tag.to_string(),
                        top.diff_id.trim_start_matches("sha256:").to_string(),
                    );
                }
            }
            manifest_json.push(json!({
                "Config": cfg_path,
                "RepoTags": if refs.is_empty() { Value::Null } else { json!(refs.iter().map(|r| r.familiar()).collect::<Vec<_>>()) },
                "Layers": layer_paths,
            }));
        }
        let index = json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": index});
        let to_vec =
            |v: &Value| serde_json::to_vec(v).map_err(|e| ImageError::Invalid(e.to_string()));
        append_bytes(&mut tar, "index.json", &to_vec(&index)?)
            .map_err(ImageError::io("writing archive"))?;
        append_bytes(
            &mut tar,
            "manifest.json",
            &to_vec(&Value::from(manifest_json))?,
        )
        .map_err(ImageError::io("writing archive"))?;
        append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(ImageError::io("writing archive"))?;
        if !repositories.is_empty() {
            append_bytes(&mut tar, "repositories", &to_vec(&json!(repositories))?)
                .map_err(ImageError::io("writing archive"))?;
        }
        tar.finish().map_err(err)?;
        Ok(())
    }

    /// `docker load`: reads a docker-archive or OCI layout tarball (plain or compressed).
    pub fn load(&self, reader: &mut dyn Read) -> Result<Vec<LoadEvent>> {
        let dir = tempdir_in(self.tmp_dir())?;
        let result = (|| {
            let links = extract(reader, dir.path())?;
            let bundle = Bundle {
                root: dir.path().to_path_buf(),
                links,
            };
            let mut layers: Vec<NewLayer> = Vec::new();
            let r = if bundle.exists("manifest.json") {
                self.load_docker(&bundle, &mut layers)
            } else if bundle.exists("index.json") {
                self.load_oci(&bundle, &mut layers)
            } else {
                Err(ImageError::Invalid(
                    "invalid image archive: it holds neither manifest.json nor index.json".into(),
                ))
            };
            if r.is_err() {
                self.discard(&layers);
            }
            r
        })();
        drop(dir);
        result
    }

    fn load_layers(
        &self,
        bundle: &Bundle,
        cfg: &ImageConfigFile,
        sources: &[(String, Option<Digest>)],
        layers: &mut Vec<NewLayer>,
    ) -> Result<Vec<berth_store::LayerRow>> {
        if sources.len() != cfg.rootfs.diff_ids.len() {
            return Err(ImageError::Invalid(format!(
                "invalid image archive: {} layers listed but the config has {} diff ids",
                sources.len(),
                cfg.rootfs.diff_ids.len()
            )));
        }
        let mut rows = Vec::new();
        let mut parent: Option<Digest> = None;
        for ((path, blob_digest), diff) in sources.iter().zip(&cfg.rootfs.diff_ids) {
            let chain = match &parent {
                None => diff.clone(),
                Some(p) => Digest::of(format!("{p} {diff}").as_bytes()),
            };
            if let Some(known) = self.db.layer(&chain.to_string())? {
                if self.snaps.exists(&chain) {
                    rows.push(known);
                    parent = Some(chain);
                    continue;
                }
            }
            let file = bundle.open(path)?;
            let mut hashing = HashingReader::new(file);
            let new = self.ingest_layer(&mut hashing, parent.as_ref(), Some(diff))?;
            let (got, _) = hashing.finish().map_err(ImageError::io(path.clone()))?;
            rows.push(new.row.clone());
            layers.push(new);
            if let Some(want) = blob_digest {
                if *want != got {
                    return Err(ImageError::Invalid(format!(
                        "invalid image archive: blob {path} has digest {got}, expected {want}"
                    )));
                }
            }
            parent = Some(chain);
        }
        Ok(rows)
    }

    pub(crate) fn image_row(
        id: &Digest,
        raw: Vec<u8>,
        cfg: &ImageConfigFile,
        rows: &[berth_store::LayerRow],
        tagged: bool,
    ) -> ImageRow {
        ImageRow {
            id: id.to_string(),
            size: rows.iter().map(|l| l.size).sum(),
            created: cfg.created_unix(),
            config: raw,
            parent: String::new(),
            last_tag_time: if tagged {
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
            } else {
                String::new()
            },
        }
    }

    fn finish_load(
        &self,
        images: Vec<(ImageRow, Vec<berth_store::LayerRow>, Vec<Reference>)>,
    ) -> Result<Vec<LoadEvent>> {
        let mut events = Vec::new();
        let mut commits = Vec::new();
        for (row, layers, refs) in images {
            let id: Digest = row
                .id
                .parse()
                .map_err(|_| ImageError::Invalid("image id".into()))?;
            if refs.is_empty() {
                events.push(LoadEvent::Untagged(id.clone()));
            }
            for r in &refs {
                if let Some(old) = self.db.resolve_ref(&r.to_string())? {
                    if old != row.id {
                        events.push(LoadEvent::Renamed {
                            reference: r.familiar(),
                            old,
                        });
                    }
                }
                events.push(LoadEvent::Tagged {
                    reference: r.familiar(),
                    id: id.clone(),
                });
            }
            let refs = refs.iter().map(|r| (r.to_string(), false)).collect();
            commits.push((row, layers, refs));
        }
        self.commit_images(&commits)?;
        Ok(events)
    }

    fn load_docker(&self, bundle: &Bundle, layers: &mut Vec<NewLayer>) -> Result<Vec<LoadEvent>> {
        let manifest: Value = bundle.json("manifest.json")?;
        let entries = manifest.as_array().ok_or_else(|| {
            ImageError::Invalid("invalid image archive: manifest.json is not a list".into())
        })?;
        let mut images = Vec::new();
        for e in entries {
            let cfg_path = e["Config"].as_str().ok_or_else(|| {
                ImageError::Invalid("invalid image archive: manifest entry without Config".into())
            })?;
            let raw = bundle.read(cfg_path)?;
            let id = Digest::of(&raw);
            let cfg = ImageConfigFile::parse(&raw).map_err(|e| {
                ImageError::Invalid(format!("invalid image archive: config {cfg_path}: {e}"))
            })?;
            let sources: Vec<(String, Option<Digest>)> = e["Layers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(|s| (s.to_string(), None)))
                        .collect()
                })
                .unwrap_or_default();
            let rows = self.load_layers(bundle, &cfg, &sources, layers)?;
            let mut refs = Vec::new();
            for t in e["RepoTags"].as_array().into_iter().flatten() {
                let t = t.as_str().unwrap_or_default();
                refs.push(Reference::parse_tagged_default(t)?);
            }
            let row = Self::image_row(&id, raw, &cfg, &rows, !refs.is_empty());
            images.push((row, rows, refs));
        }
        self.finish_load(images)
    }

    fn load_oci(&self, bundle: &Bundle, layers: &mut Vec<NewLayer>) -> Result<Vec<LoadEvent>> {
        let index: Value = bundle.json("index.json")?;
        let mut images: Vec<(ImageRow, Vec<berth_store::LayerRow>, Vec<Reference>)> = Vec::new();
        for desc in index["manifests"].as_array().into_iter().flatten() {
            let refs = desc_refs(desc)?;
            let manifest = bundle.resolve_manifest(desc, 0)?;
            let cfg_digest: Digest = manifest["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .parse()
                .map_err(|e| ImageError::Invalid(format!("invalid image archive: {e}")))?;
            let raw = bundle.blob(&cfg_digest)?;
            let cfg = ImageConfigFile::parse(&raw)
                .map_err(|e| ImageError::Invalid(format!("invalid image archive: config: {e}")))?;
            let mut sources = Vec::new();
            for l in manifest["layers"].as_array().into_iter().flatten() {
                let d: Digest = l["digest"]
                    .as_str()
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| ImageError::Invalid(format!("invalid image archive: {e}")))?;
                sources.push((format!("blobs/sha256/{}", d.hex()), Some(d)));
            }
            let rows = self.load_layers(bundle, &cfg, &sources, layers)?;
            if let Some(existing) = images
                .iter_mut()
                .find(|(r, _, _)| r.id == cfg_digest.to_string())
            {
                existing.2.extend(refs);
                continue;
            }
            let row = Self::image_row(&cfg_digest, raw, &cfg, &rows, !refs.is_empty());
            images.push((row, rows, refs));
        }
        if images.is_empty() {
            return Err(ImageError::Invalid(
                "invalid image archive: index.json lists no images".into(),
            ));
        }
        self.finish_load(images)
    }
}

/// The references an index entry names: containerd's full-name annotation, else an
/// OCI ref name that is itself a full reference (a bare tag names no repository).
fn desc_refs(desc: &Value) -> Result<Vec<Reference>> {
    let a = &desc["annotations"];
    if let Some(n) = a[ANNOT_IMAGE_NAME].as_str() {
        return Ok(vec![Reference::parse_tagged_default(n)?]);
    }
    if let Some(n) = a[ANNOT_REF_NAME].as_str() {
        if n.contains(['/', ':']) {
            if let Ok(r) = Reference::parse_tagged_default(n) {
                return Ok(vec![r]);
            }
        }
    }
    Ok(vec![])
}

/// An archive unpacked into a private directory; symlinks are kept as a map and
/// resolved lexically inside the archive.
struct Bundle {
    root: PathBuf,
    links: HashMap<String, String>,
}

impl Bundle {
    fn clean(&self, name: &str) -> Result<String> {
        let mut path = clean_components(name)
            .ok_or_else(|| {
                ImageError::Invalid(format!(
                    "invalid image archive: path {name:?} escapes the archive"
                ))
            })?
            .join("/");
        for _ in 0..16 {
            match self.links.get(&path) {
                Some(target) => {
                    let base = Path::new(&path)
                        .parent()
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let joined = if target.starts_with('/') {
                        target.clone()
                    } else {
                        format!("{base}/{target}")
                    };
                    path = clean_components(&joined)
                        .ok_or_else(|| {
                            ImageError::Invalid(format!(
                                "invalid image archive: link {name:?} escapes the archive"
                            ))
                        })?
                        .join("/");
                }
                None => return Ok(path),
            }
        }
        Err(ImageError::Invalid(format!(
            "invalid image archive: too many links at {name:?}"
        )))
    }

    fn exists(&self, name: &str) -> bool {
        self.clean(name)
            .map(|p| self.root.join(p).is_file())
            .unwrap_or(false)
    }

    fn open(&self, name: &str) -> Result<File> {
        let p = self.clean(name)?;
        File::open(self.root.join(&p))
            .map_err(|e| ImageError::Invalid(format!("invalid image archive: {name}: {e}")))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(name)?
            .take(MAX_JSON)
            .read_to_end(&mut buf)
            .map_err(ImageError::io(name.to_string()))?;
        Ok(buf)
    }

    fn json(&self, name: &str) -> Result<Value> {
        serde_json::from_slice(&self.read(name)?)
            .map_err(|e| ImageError::Invalid(format!("invalid image archive: {name}: {e}")))
    }

    /// A blob read and checked against its digest.
    fn blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let data = self.read(&format!("blobs/sha256/{}", d.hex()))?;
        let got = Digest::of(&data);
        if got != *d {
            return Err(ImageError::Invalid(format!(
                "invalid image archive: blob {d} has digest {got}"
            )));
        }
        Ok(data)
    }

    /// Follows nested indexes to the manifest for this platform.
    fn resolve_manifest(&self, desc: &Value, depth: usize) -> Result<Value> {
        if depth > 4 {
            return Err(ImageError::Invalid(
                "invalid image archive: indexes nested too deep".into(),
            ));
        }
        let d: Digest = desc["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| ImageError::Invalid(format!("invalid image archive: {e}")))?;
        let v: Value = serde_json::from_slice(&self.blob(&d)?).map_err(|e| {
            ImageError::Invalid(format!("invalid image archive: manifest {d}: {e}"))
        })?;
        if v.get("manifests").is_some() {
            let list = v["manifests"].as_array().cloned().unwrap_or_default();
            let pick = list
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch()
                })
                .or_else(|| list.first())
                .ok_or_else(|| ImageError::Invalid("invalid image archive: empty index".into()))?;
            return self.resolve_manifest(pick, depth + 1);
        }
        if v.get("config").is_none() {
            return Err(ImageError::Invalid(format!(
                "invalid image archive: {d} is not an image manifest"
            )));
        }
        Ok(v)
    }
}

struct TempDir(PathBuf);
impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tempdir_in(base: &Path) -> Result<TempDir> {
    let name: u64 = rand::random();
    let p = base.join(format!("load-{name:016x}"));
    fs::create_dir_all(&p).map_err(ImageError::io("creating load directory"))?;
    Ok(TempDir(p))
}

/// Unpacks the regular files of an archive (by cleaned name) into `dir`; returns its
/// symlinks. Nothing in the archive can write outside `dir`.
fn extract(reader: &mut dyn Read, dir: &Path) -> Result<HashMap<String, String>> {
    let plain = crate::decompress(reader)?;
    let mut ar = tar::Archive::new(plain);
    let mut links = HashMap::new();
    let bad = |e: io::Error| ImageError::Invalid(format!("invalid image archive: {e}"));
    for entry in ar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let comps = clean_components(&name).ok_or_else(|| {
            ImageError::Invalid(format!(
                "invalid image archive: path {name:?} escapes the archive"
            ))
        })?;
        if comps.is_empty() {
            continue;
        }
        let rel = comps.join("/");
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = dir.join(&rel);
                if let Some(p) = dest.parent() {
                    fs::create_dir_all(p).map_err(ImageError::io(rel.clone()))?;
                }
                let mut f = File::create(&dest).map_err(ImageError::io(rel.clone()))?;
                io::copy(&mut entry, &mut f).map_err(bad)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let target = if entry.header().entry_type() == tar::EntryType::Link {
                    format!("/{target}")
                } else {
                    target
                };
                links.insert(rel, target);
            }
            _ => {}
        }
    }
    Ok(links)
}
