//! Volumes (the `local` driver): a directory `DATA_ROOT/volumes/NAME/_data`, or, with
//! `-o type=… device=… o=…`, a filesystem mounted there while containers use it (tmpfs,
//! a bind of a host path, anything `mount(2)` takes). A volume is populated from the
//! image once, the first time a container mounts it over a non-empty image directory.

use crate::error::EngineError;
use berth_store::Db;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A volume's settings, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: Map<String, Value>,
    pub created: String,
    /// made for a container (`-v /path`, an image VOLUME), removed with `rm -v`
    #[serde(default)]
    pub anonymous: bool,
    /// copied from an image once already (or used by a container: no copy any more)
    #[serde(default)]
    pub populated: bool,
}

pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

pub struct Volumes {
    db: Arc<Db>,
    root: PathBuf,
    all: Mutex<BTreeMap<String, Volume>>,
    /// containers using each mounted option volume
    mounted: Mutex<HashMap<String, usize>>,
}

/// Docker's rule for local volume names.
pub fn valid_name(name: &str) -> Result<(), EngineError> {
    if name.len() < 2 {
        return Err(EngineError::invalid(format!(
            "create {name}: volume name is too short, names should be at least two alphanumeric characters"
        )));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(EngineError::invalid(format!(
            "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )));
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Volumes {
    pub fn open(db: Arc<Db>, data_root: &Path) -> anyhow::Result<Volumes> {
        let root = data_root.join("volumes");
        std::fs::create_dir_all(&root)?;
        let mut all = BTreeMap::new();
        for (name, body) in db.volumes()? {
            match serde_json::from_str::<Volume>(&body) {
                Ok(v) => {
                    all.insert(name, v);
                }
                Err(e) => tracing::warn!(volume = %name, error = %e, "unreadable volume"),
            }
        }
        let v = Volumes {
            db,
            root,
            all: Mutex::new(all),
            mounted: Mutex::new(HashMap::new()),
        };
        Ok(v)
    }

    pub fn data(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    pub fn list(&self) -> Vec<Volume> {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, name: &str) -> Result<Volume, EngineError> {
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::not_found(format!("get {name}: no such volume")))
    }

    /// `volume create` (and the volumes containers name): an existing volume of the same
    /// name is returned as it is, as Docker does.
    pub fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        options: BTreeMap<String, String>,
        labels: Map<String, Value>,
        anonymous: bool,
    ) -> Result<Volume, EngineError> {
        let driver = if driver.is_empty() { "local" } else { driver };
        if driver != "local" {
            return Err(EngineError::not_found(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                valid_name(n)?;
                n.to_string()
            }
            None => hex::encode(rand::random::<[u8; 32]>()),
        };
        for k in options.keys() {
            if !matches!(k.as_str(), "type" | "device" | "o" | "size") {
                return Err(EngineError::invalid(format!(
                    "create {name}: invalid option key: \"{k}\""
                )));
            }
        }
        if options.contains_key("type") != options.contains_key("device") {
            return Err(EngineError::invalid(format!(
                "create {name}: missing required option: \"{}\"",
                if options.contains_key("type") {
                    "device"
                } else {
                    "type"
                }
            )));
        }
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = all.get(&name) {
            return Ok(v.clone());
        }
        let mut labels = labels;
        if anonymous {
            labels.insert(ANONYMOUS_LABEL.into(), json!(""));
        }
        let v = Volume {
            name: name.clone(),
            driver: driver.to_string(),
            options,
            labels,
            created: now(),
            anonymous,
            populated: false,
        };
        std::fs::create_dir_all(self.data(&name))
            .map_err(|e| EngineError::internal(format!("create {name}: {e}")))?;
        let body = serde_json::to_string(&v).map_err(|e| EngineError::internal(e.to_string()))?;
        self.db.insert_volume(&name, &body)?;
        all.insert(name, v.clone());
        Ok(v)
    }

    /// Removes a volume no container uses (`users`: the containers that do).
    pub fn remove(&self, name: &str, users: &[String]) -> Result<(), EngineError> {
        let v = self.get(name)?;
        if !users.is_empty() {
            return Err(EngineError::conflict(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        if v.has_mount() {
            crate::sys::unmount(&self.data(name));
        }
        self.db.delete_volume(name)?;
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let _ = std::fs::remove_dir_all(self.root.join(name));
        Ok(())
    }

    fn save(&self, v: &Volume) {
        if let Ok(body) = serde_json::to_string(v) {
            if let Err(e) = self.db.update_volume(&v.name, &body) {
                tracing::warn!(volume = %v.name, error = %e, "saving a volume");
            }
        }
        self.all
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(v.name.clone(), v.clone());
    }

    /// Marks a volume as holding data of its own: no image is copied into it any more.
    pub fn set_populated(&self, name: &str) {
        if let Ok(mut v) = self.get(name) {
            if !v.populated {
                v.populated = true;
                self.save(&v);
            }
        }
    }

    /// The volume's data directory for a container, its filesystem mounted there first
    /// for a volume with options.
    pub fn mount(&self, name: &str) -> Result<PathBuf, EngineError> {
        let v = self.get(name)?;
        let data = self.data(name);
        if !v.has_mount() {
            return Ok(data);
        }
        let mut m = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(name.to_string()).or_insert(0);
        // (still mounted from before a daemon restart: used as it is)
        if *n == 0 && !is_mountpoint(&data) {
            v.mount_on(&data).map_err(|e| {
                EngineError::internal(format!(
                    "error while mounting volume '{}': {e}",
                    data.display()
                ))
            })?;
        }
        *n += 1;
        Ok(data)
    }

    /// A running container found at daemon start uses the volume (already mounted).
    pub fn adopt(&self, name: &str) {
        if self.get(name).is_ok_and(|v| v.has_mount()) {
            *self
                .mounted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name.to_string())
                .or_insert(0) += 1;
        }
    }

    /// A container stopped using the volume.
    pub fn release(&self, name: &str) {
        let Ok(v) = self.get(name) else { return };
        if !v.has_mount() {
            return;
        }
        let mut m = self.mounted.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(name);
                crate::sys::unmount(&self.data(name));
            }
        }
    }

    /// Bytes under a volume's data (for `system df` and prune).
    pub fn size(&self, name: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.data(name))
    }
}

fn is_mountpoint(p: &Path) -> bool {
    let p = p.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(p.as_str())))
        .unwrap_or(false)
}

impl Volume {
    /// Options that mount a filesystem (`type`/`device`).
    pub fn has_mount(&self) -> bool {
        self.options.contains_key("type")
    }

    fn mount_on(&self, data: &Path) -> std::io::Result<()> {
        let kind = self
            .options
            .get("type")
            .map(String::as_str)
            .unwrap_or_default();
        let device = self
            .options
            .get("device")
            .map(String::as_str)
            .unwrap_or_default();
        let o = self
            .options
            .get("o")
            .map(String::as_str)
            .unwrap_or_default();
        let mut flags = rustix::mount::MountFlags::empty();
        let mut data_opts = Vec::new();
        for opt in o.split(',').filter(|x| !x.is_empty()) {
            match opt {
                "bind" => flags |= rustix::mount::MountFlags::BIND,
                "rbind" => {
                    flags |= rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::REC
                }
                "ro" => flags |= rustix::mount::MountFlags::RDONLY,
                "nosuid" => flags |= rustix::mount::MountFlags::NOSUID,
                "nodev" => flags |= rustix::mount::MountFlags::NODEV,
                "noexec" => flags |= rustix::mount::MountFlags::NOEXEC,
                other => data_opts.push(other.to_string()),
            }
        }
        let data_c = std::ffi::CString::new(data_opts.join(","))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        if flags.contains(rustix::mount::MountFlags::BIND) && !Path::new(device).is_absolute() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bind device {device:?} is not an absolute path"),
            ));
        }
        rustix::mount::mount(device, data, kind, flags, Some(data_c.as_c_str()))?;
        Ok(())
    }
}

/// `GET /volumes/{name}`'s shape.
pub fn volume_json(vols: &Volumes, v: &Volume, usage: Option<(i64, i64)>) -> Value {
    let mut j = json!({
        "CreatedAt": v.created,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": vols.data(&v.name),
        "Name": v.name,
        "Options": if v.options.is_empty() { Value::Null } else { json!(v.options) },
        "Scope": "local",
    });
    if let Some((size, refs)) = usage {
        j["UsageData"] = json!({"Size": size, "RefCount": refs});
    }
    j
}
