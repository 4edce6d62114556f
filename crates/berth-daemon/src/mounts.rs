//! A container's mounts: `-v`/`Binds`, `--mount`/`Mounts`, `--tmpfs`, `--volumes-from`
//! and the image's `VOLUME`s, resolved once at create into mount points (stored with
//! the container, shown by inspect as `Mounts`), and turned into runtime mounts at each
//! start: volumes mounted (and populated from the image once), subpaths resolved inside
//! the volume, binds and tmpfs as asked.

use crate::error::EngineError;
use crate::volumes::Volumes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// One mount of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MountPoint {
    /// "volume", "bind" or "tmpfs"
    pub kind: String,
    /// the volume's name
    #[serde(default)]
    pub name: String,
    /// a bind's host path
    #[serde(default)]
    pub source: String,
    pub destination: String,
    pub rw: bool,
    /// the mode text inspect shows ("ro", "z", "" …)
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub propagation: String,
    /// a volume made for this container (removed with `rm -v`)
    #[serde(default)]
    pub anonymous: bool,
    /// do not copy the image's files into a new volume
    #[serde(default)]
    pub nocopy: bool,
    /// a directory inside the volume
    #[serde(default)]
    pub subpath: String,
    /// tmpfs options (size=, mode=)
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// `-v HOST:CTR` (legacy: a missing host directory is made)
    #[serde(default)]
    pub from_binds: bool,
    /// `--tmpfs` (`HostConfig.Tmpfs`): mounted, but not among inspect's `Mounts`, as
    /// dockerd keeps those apart from its mount points
    #[serde(default)]
    pub from_tmpfs: bool,
}

/// A tmpfs at `destination` with `--tmpfs`'s comma-separated options.
fn tmpfs_point(destination: String, opts: &Value) -> MountPoint {
    MountPoint {
        kind: "tmpfs".into(),
        destination,
        rw: true,
        tmpfs: opts
            .as_str()
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        from_tmpfs: true,
        ..Default::default()
    }
}

fn bad(m: impl Into<String>) -> EngineError {
    EngineError::invalid(m)
}

/// A container path: absolute, with no `..` (nothing may point above the root).
fn check_target(kind: &str, t: &str, spec: &str) -> Result<String, EngineError> {
    if t.is_empty() {
        return Err(bad(format!(
            "invalid mount config for type \"{kind}\": field Target must not be empty"
        )));
    }
    if !t.starts_with('/') {
        return Err(bad(format!(
            "invalid mount config for type \"{kind}\": invalid mount path: '{t}' mount path must be absolute"
        )));
    }
    if Path::new(t).components().any(|c| c == Component::ParentDir) {
        return Err(bad(format!(
            "invalid volume specification: '{spec}': mount path {t} must not contain '..'"
        )));
    }
    let clean: PathBuf = Path::new(t)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if clean == Path::new("/") {
        return Err(bad(format!(
            "invalid specification: destination can't be '/' in '{spec}'"
        )));
    }
    Ok(clean.display().to_string())
}

const PROPAGATIONS: &[&str] = &[
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// `SRC:DST[:MODE]` of `-v`/`Binds`.
fn parse_bind(spec: &str) -> Result<MountPoint, EngineError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let invalid = || bad(format!("invalid volume specification: '{spec}'"));
    let (src, dst, mode) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(invalid()),
    };
    if src.is_empty() && parts.len() > 1 {
        return Err(invalid());
    }
    let kind = if src.starts_with('/') {
        "bind"
    } else {
        "volume"
    };
    let destination = check_target(kind, dst, spec)?;
    let mut m = MountPoint {
        kind: kind.into(),
        destination,
        rw: true,
        mode: mode.to_string(),
        from_binds: true,
        ..Default::default()
    };
    for o in mode.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.rw = false,
            "rw" => m.rw = true,
            "z" | "Z" => {}
            "nocopy" if kind == "volume" => m.nocopy = true,
            p if PROPAGATIONS.contains(&p) && kind == "bind" => m.propagation = p.into(),
            _ => return Err(bad(format!("invalid mode: {mode}"))),
        }
    }
    if kind == "bind" {
        m.source = src.to_string();
        if m.propagation.is_empty() {
            m.propagation = "rprivate".into();
        }
    } else if src.is_empty() {
        m.anonymous = true;
    } else {
        crate::volumes::valid_name(src)?;
        m.name = src.to_string();
    }
    Ok(m)
}

/// One entry of `HostConfig.Mounts` (the API's form of `--mount`), with Docker's errors.
fn parse_mount(v: &Value) -> Result<MountPoint, EngineError> {
    let kind = v["Type"].as_str().unwrap_or_default();
    let err = |m: &str| bad(format!("invalid mount config for type \"{kind}\": {m}"));
    let source = v["Source"].as_str().unwrap_or_default();
    let target = v["Target"].as_str().unwrap_or_default();
    let ro = v["ReadOnly"].as_bool().unwrap_or(false);
    let mut m = MountPoint {
        kind: kind.to_string(),
        rw: !ro,
        mode: if ro { "ro".into() } else { String::new() },
        ..Default::default()
    };
    let present = |k: &str| !v[k].is_null();
    match kind {
        "bind" => {
            if present("VolumeOptions") {
                return Err(err("field VolumeOptions must not be specified"));
            }
            if present("TmpfsOptions") {
                return Err(err("field TmpfsOptions must not be specified"));
            }
            if source.is_empty() {
                return Err(err("field Source must not be empty"));
            }
            if !source.starts_with('/') {
                return Err(err(&format!(
                    "invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            let create = v["BindOptions"]["CreateMountpoint"]
                .as_bool()
                .unwrap_or(false);
            if !create && !Path::new(source).exists() {
                return Err(err(&format!("bind source path does not exist: {source}")));
            }
            m.source = source.to_string();
            m.from_binds = create;
            m.propagation = v["BindOptions"]["Propagation"]
                .as_str()
                .filter(|p| !p.is_empty())
                .unwrap_or("rprivate")
                .to_string();
            if !PROPAGATIONS.contains(&m.propagation.as_str()) {
                return Err(err(&format!("invalid propagation mode: {}", m.propagation)));
            }
        }
        "volume" => {
            if present("BindOptions") {
                return Err(err("field BindOptions must not be specified"));
            }
            if present("TmpfsOptions") {
                return Err(err("field TmpfsOptions must not be specified"));
            }
            if source.is_empty() {
                m.anonymous = true;
            } else {
                crate::volumes::valid_name(source)?;
                m.name = source.to_string();
            }
            let vo = &v["VolumeOptions"];
            m.nocopy = vo["NoCopy"].as_bool().unwrap_or(false);
            if let Some(sp) = vo["Subpath"].as_str().filter(|s| !s.is_empty()) {
                let p = Path::new(sp);
                if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
                    return Err(err(&format!(
                        "subpath must be a relative path within the volume: {sp}"
                    )));
                }
                m.subpath = sp.to_string();
            }
            if let Some(d) = vo["DriverConfig"]["Name"]
                .as_str()
                .filter(|d| !d.is_empty() && *d != "local")
            {
                return Err(EngineError::not_found(format!(
                    "error looking up volume plugin {d}: plugin \"{d}\" not found"
                )));
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(err("field Source must not be specified"));
            }
            if present("BindOptions") {
                return Err(err("field BindOptions must not be specified"));
            }
            if present("VolumeOptions") {
                return Err(err("field VolumeOptions must not be specified"));
            }
            let to = &v["TmpfsOptions"];
            if let Some(n) = to["SizeBytes"].as_i64().filter(|n| *n != 0) {
                if n < 0 {
                    return Err(err("invalid tmpfs size"));
                }
                m.tmpfs.push(format!("size={n}"));
            }
            if let Some(mode) = to["Mode"].as_u64().filter(|n| *n != 0) {
                m.tmpfs.push(format!("mode={mode:o}"));
            }
        }
        "" => return Err(bad("invalid mount config: mount type unknown")),
        "npipe" | "cluster" | "image" => {
            return Err(err("mount type not supported on this platform"))
        }
        _ => return Err(err("mount type unknown")),
    }
    m.destination = check_target(kind, target, target)?;
    Ok(m)
}

/// Resolves a create request's mounts (`spec`: Config, HostConfig), making named and
/// anonymous volumes as Docker does at create. `from`: another container's mount points
/// for `--volumes-from`.
pub fn resolve(
    spec: &Value,
    vols: &Volumes,
    from: &dyn Fn(&str) -> Result<Vec<MountPoint>, EngineError>,
) -> Result<Vec<MountPoint>, EngineError> {
    let hc = &spec["HostConfig"];
    let mut out: Vec<MountPoint> = Vec::new();
    let add = |m: MountPoint, out: &mut Vec<MountPoint>| -> Result<(), EngineError> {
        if out.iter().any(|x| x.destination == m.destination) {
            return Err(bad(format!("Duplicate mount point: {}", m.destination)));
        }
        out.push(m);
        Ok(())
    };
    for b in crate::spec::strings(&hc["Binds"]).unwrap_or_default() {
        add(parse_bind(&b)?, &mut out)?;
    }
    for m in hc["Mounts"].as_array().into_iter().flatten() {
        add(parse_mount(m)?, &mut out)?;
    }
    if let Some(t) = hc["Tmpfs"].as_object() {
        for (dest, opts) in t {
            add(
                tmpfs_point(check_target("tmpfs", dest, dest)?, opts),
                &mut out,
            )?;
        }
    }
    // --volumes-from NAME[:ro|:rw]: its mounts, unless this container mounts there itself
    for vf in crate::spec::strings(&hc["VolumesFrom"]).unwrap_or_default() {
        let (name, mode) = match vf.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (vf.as_str(), None),
        };
        if !matches!(mode, None | Some("ro") | Some("rw")) {
            return Err(bad(format!("invalid mode: {}", mode.unwrap_or_default())));
        }
        for mut m in from(name)? {
            if out.iter().any(|x| x.destination == m.destination) || m.kind == "tmpfs" {
                continue;
            }
            if let Some(md) = mode {
                m.rw = md == "rw";
                m.mode = md.to_string();
            }
            // the volume stays the other container's
            m.anonymous = false;
            out.push(m);
        }
    }
    // the image's VOLUMEs (and `-v /path`): anonymous volumes where nothing is mounted
    if let Some(vs) = spec["Config"]["Volumes"].as_object() {
        for dest in vs.keys() {
            let destination = check_target("volume", dest, dest)?;
            if out.iter().any(|x| x.destination == destination) {
                continue;
            }
            out.push(MountPoint {
                kind: "volume".into(),
                destination,
                rw: true,
                anonymous: true,
                ..Default::default()
            });
        }
    }
    // the volumes themselves
    for m in out.iter_mut().filter(|m| m.kind == "volume") {
        if m.name.is_empty() {
            let v = vols.create(None, "local", BTreeMap::new(), Default::default(), true)?;
            m.name = v.name;
        } else if vols.get(&m.name).is_err() {
            let v = vols.create(
                Some(&m.name),
                "local",
                BTreeMap::new(),
                Default::default(),
                false,
            )?;
            m.name = v.name;
        }
    }
    Ok(out)
}

/// The mount points a container was created with. A container made before mount points
/// were stored has only binds and tmpfs mounts: those, from its request.
pub fn of(spec: &Value) -> Vec<MountPoint> {
    if spec["MountPoints"].is_null() {
        let hc = &spec["HostConfig"];
        let mut out: Vec<MountPoint> = crate::spec::strings(&hc["Binds"])
            .unwrap_or_default()
            .iter()
            .filter_map(|b| parse_bind(b).ok())
            .filter(|m| m.kind == "bind")
            .collect();
        for (dest, opts) in hc["Tmpfs"].as_object().into_iter().flatten() {
            out.push(tmpfs_point(dest.clone(), opts));
        }
        return out;
    }
    serde_json::from_value(spec["MountPoints"].clone()).unwrap_or_default()
}

/// inspect's `Mounts`.
pub fn inspect_json(vols: &Volumes, mps: &[MountPoint]) -> Value {
    Value::Array(
        mps.iter()
            .filter(|m| !m.from_tmpfs)
            .map(|m| match m.kind.as_str() {
                "volume" => json!({
                    "Type": "volume",
                    "Name": m.name,
                    "Source": vols.data(&m.name),
                    "Destination": m.destination,
                    "Driver": "local",
                    "Mode": if m.mode.is_empty() { "z".to_string() } else { m.mode.clone() },
                    "RW": m.rw,
                    "Propagation": "",
                }),
                "bind" => json!({
                    "Type": "bind",
                    "Source": m.source,
                    "Destination": m.destination,
                    "Mode": m.mode,
                    "RW": m.rw,
                    "Propagation": m.propagation,
                }),
                _ => json!({
                    "Type": "tmpfs",
                    "Source": "",
                    "Destination": m.destination,
                    "Mode": m.mode,
                    "RW": m.rw,
                    "Propagation": "",
                }),
            })
            .collect(),
    )
}

/// A directory inside a volume's data, resolved without leaving it (symlinks inside the
/// volume may not point out of it: CVE-2021-30465's class).
fn subpath_in(data: &Path, sub: &str) -> Result<PathBuf, EngineError> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let flags = OFlags::PATH | OFlags::CLOEXEC;
    let root = rustix::fs::open(
        data,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| EngineError::internal(format!("opening the volume: {e}")))?;
    let fd = openat2(
        &root,
        sub,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
    )
    .map_err(|e| {
        bad(format!(
            "cannot access path {sub} in the volume: {e}: a subpath must be a directory of the volume, reached without symlinks"
        ))
    })?;
    // the path as the kernel sees it, for the runtime's bind mount
    std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .map_err(|e| EngineError::internal(e.to_string()))
}

/// Copies the image's files at `dest` (inside `rootfs`, resolved there) into an empty
/// new volume, owners, modes and times kept (Docker's copy-up).
fn copy_up(rootfs: &Path, dest: &str, data: &Path) -> std::io::Result<()> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        rootfs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = dest.trim_start_matches('/');
    let src = match openat2(
        &root,
        if rel.is_empty() { "." } else { rel },
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        // nothing there (or not a directory): nothing to copy
        Err(_) => return Ok(()),
    };
    let src_path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&src)
    ))?;
    if std::fs::read_dir(data)?.next().is_some() {
        return Ok(()); // the volume has data of its own
    }
    copy_tree(&src_path, data)?;
    // the volume's root takes the image directory's owner and mode
    let meta = std::fs::symlink_metadata(&src_path)?;
    use std::os::unix::fs::MetadataExt;
    std::os::unix::fs::chown(data, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(
        data,
        std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
    )?;
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
        } else {
            // devices, fifos, sockets: not copied (as Docker's copy-up skips what it
            // cannot read as a file)
            continue;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
        if !ft.is_symlink() {
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// The runtime mounts for a start: volumes mounted and populated, subpaths resolved.
/// Returns them with the volumes taken (to give back with [`release`]).
pub fn for_start(
    vols: &Volumes,
    mps: &[MountPoint],
    rootfs: &Path,
) -> Result<(Vec<berth_runtime::spec::Mount>, Vec<String>), EngineError> {
    let mut out = Vec::new();
    let mut taken = Vec::new();
    let result = (|| {
        for m in mps {
            let mut opts = Vec::new();
            let source = match m.kind.as_str() {
                "volume" => {
                    let data = vols.mount(&m.name)?;
                    taken.push(m.name.clone());
                    let v = vols.get(&m.name)?;
                    if !v.populated {
                        if !m.nocopy && m.subpath.is_empty() {
                            copy_up(rootfs, &m.destination, &data).map_err(|e| {
                                EngineError::internal(format!(
                                    "copying the image's {} into volume {}: {e}",
                                    m.destination, m.name
                                ))
                            })?;
                        }
                        vols.set_populated(&m.name);
                    }
                    let src = if m.subpath.is_empty() {
                        data
                    } else {
                        subpath_in(&data, &m.subpath)?
                    };
                    opts.push("rbind".to_string());
                    opts.push("rprivate".to_string());
                    src.display().to_string()
                }
                "bind" => {
                    if m.from_binds && !Path::new(&m.source).exists() {
                        std::fs::create_dir_all(&m.source).map_err(|e| {
                            bad(format!(
                                "error while creating mount source path '{}': {e}",
                                m.source
                            ))
                        })?;
                    }
                    opts.push("rbind".to_string());
                    opts.push(if m.propagation.is_empty() {
                        "rprivate".to_string()
                    } else {
                        m.propagation.clone()
                    });
                    m.source.clone()
                }
                _ => {
                    opts.extend(["nosuid", "nodev", "noexec"].map(String::from));
                    opts.extend(m.tmpfs.iter().cloned());
                    out.push(berth_runtime::spec::Mount {
                        destination: m.destination.clone(),
                        kind: "tmpfs".into(),
                        source: "tmpfs".into(),
                        options: opts,
                    });
                    continue;
                }
            };
            if !m.rw {
                opts.push("ro".into());
            }
            out.push(berth_runtime::spec::Mount {
                destination: m.destination.clone(),
                kind: "bind".into(),
                source,
                options: opts,
            });
        }
        Ok(())
    })();
    // every destination as the container's own symlinks lead it
    let result = result.and_then(|()| {
        out.iter_mut().try_for_each(|m| {
            m.destination = crate::spec::resolve_in_root(rootfs, &m.destination)?;
            Ok(())
        })
    });
    match result {
        Ok(()) => Ok((out, taken)),
        Err(e) => {
            release(vols, &taken);
            Err(e)
        }
    }
}

/// Gives back the volumes a start took.
pub fn release(vols: &Volumes, taken: &[String]) {
    for n in taken {
        vols.release(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds() {
        let m = parse_bind("/host:/ctr:ro").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.rw),
            ("bind", "/host", false)
        );
        assert_eq!(m.propagation, "rprivate");
        let m = parse_bind("data:/d:nocopy").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.name.as_str(), m.nocopy),
            ("volume", "data", true)
        );
        let m = parse_bind("/only").unwrap();
        assert!(m.anonymous);
        for bad in [
            "a:b:c:d",
            ":/x",
            "data:rel",
            "data:/x:bogus",
            "/h:/../x",
            "/h:/",
        ] {
            assert!(parse_bind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_mounts() {
        let m = parse_mount(&json!({"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}})).unwrap();
        assert_eq!(m.tmpfs, vec!["size=1048576", "mode=700"]);
        let e =
            parse_mount(&json!({"Type": "volume", "Target": "/v", "BindOptions": {}})).unwrap_err();
        assert_eq!(
            e.message,
            "invalid mount config for type \"volume\": field BindOptions must not be specified"
        );
        let e = parse_mount(&json!({"Type": "volume", "Source": "vol", "Target": "/v", "VolumeOptions": {"Subpath": "/abs"}})).unwrap_err();
        assert!(
            e.message.contains("subpath must be a relative path"),
            "{}",
            e.message
        );
        let e = parse_mount(&json!({"Type": "bind", "Source": "/", "Target": "x"})).unwrap_err();
        assert!(
            e.message.contains("mount path must be absolute"),
            "{}",
            e.message
        );
    }

    #[test]
    fn old_containers_keep_their_binds() {
        let spec = json!({"HostConfig": {"Binds": ["/a:/b:ro"], "Tmpfs": {"/t": "size=1m"}}});
        let m = of(&spec);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].source.as_str(), m[0].rw), ("/a", false));
        assert_eq!(m[1].tmpfs, vec!["size=1m"]);
    }
}
