//! `RUN --mount` (BuildKit builds): what a step's container gets mounted for the time of
//! the step and never keeps in its layer.
//!
//! - `type=bind` (the default): a path of the context, or of a stage or image
//!   (`from=`), read-only unless `rw` (then its writes go to a scratch overlay that is
//!   thrown away);
//! - `type=cache`: a directory kept between builds (`DATA_ROOT/buildkit/cache-mounts`),
//!   named by `id` (the target by default), `sharing=shared|private|locked`, first filled
//!   from `from`/`source` if given, owned by `uid`/`gid` with `mode`;
//! - `type=tmpfs`: a tmpfs of `size` bytes;
//! - `type=secret`: the client's secret `id`, fetched from its session into a file on a
//!   tmpfs, bound read-only at `target` (`/run/secrets/ID`); it is in no layer, no
//!   config, no cache key;
//! - `type=ssh`: a socket at `target` (`/run/buildkit/ssh_agent.N`, and `SSH_AUTH_SOCK`)
//!   whose connections are forwarded to the client's agent `id`.
//!
//! Mount points the runtime had to make (the target and parent directories the image
//! does not have) are taken out of the step's changes before they are committed.

use super::source::{clamp, Source};
use super::Failure;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn fail(m: impl Into<String>) -> Failure {
    Failure {
        message: m.into(),
        code: None,
    }
}

/// One `--mount` as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    pub kind: String,
    pub target: String,
    pub source: String,
    pub from: String,
    pub id: String,
    pub sharing: String,
    pub readonly: bool,
    pub required: bool,
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

fn truthy(v: Option<&str>) -> Result<bool, Failure> {
    match v {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(o) => Err(fail(format!("invalid boolean value {o:?} in --mount"))),
    }
}

/// Parses `type=cache,target=/root/.cache,sharing=locked` (BuildKit's keys and
/// aliases).
pub fn parse(text: &str) -> Result<Spec, Failure> {
    let mut s = Spec {
        kind: "bind".into(),
        ..Default::default()
    };
    let mut rw = None;
    for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.to_ascii_lowercase(), None),
        };
        let val = || {
            v.map(str::to_string)
                .ok_or_else(|| fail(format!("--mount option {k} needs a value")))
        };
        let num = |radix: u32| -> Result<u32, Failure> {
            let t = val()?;
            u32::from_str_radix(&t, radix)
                .map_err(|_| fail(format!("invalid {k} {t:?} in --mount")))
        };
        match k.as_str() {
            "type" => s.kind = val()?,
            "target" | "dst" | "destination" => s.target = val()?,
            "source" | "src" => s.source = val()?,
            "from" => s.from = val()?,
            "id" => s.id = val()?,
            "sharing" => s.sharing = val()?,
            "ro" | "readonly" => rw = Some(!truthy(v)?),
            "rw" | "readwrite" => rw = Some(truthy(v)?),
            "required" => s.required = truthy(v)?,
            "size" => {
                let t = val()?;
                s.size = Some(
                    crate::logconfig::parse_size(&t)
                        .ok_or_else(|| fail(format!("invalid size {t:?} in --mount")))?,
                )
            }
            "mode" => s.mode = Some(num(8)?),
            "uid" => s.uid = Some(num(10)?),
            "gid" => s.gid = Some(num(10)?),
            "env" => {
                return Err(fail(
                    "a secret as an environment variable (--mount=type=secret,env=…) is not supported yet: mount it as a file",
                ))
            }
            other => return Err(fail(format!("unexpected key '{other}' in '{field}'"))),
        }
    }
    if !matches!(
        s.kind.as_str(),
        "bind" | "cache" | "tmpfs" | "secret" | "ssh"
    ) {
        return Err(fail(format!("unsupported mount type {:?}", s.kind)));
    }
    if !matches!(s.sharing.as_str(), "" | "shared" | "private" | "locked") {
        return Err(fail(format!("unsupported sharing value {:?}", s.sharing)));
    }
    // bind and secret mounts are read-only unless asked; cache and tmpfs writable
    s.readonly = rw
        .map(|w| !w)
        .unwrap_or(matches!(s.kind.as_str(), "bind" | "secret" | "ssh"));
    if s.target.is_empty() && matches!(s.kind.as_str(), "bind" | "cache" | "tmpfs") {
        return Err(fail(format!("--mount of type {} needs a target", s.kind)));
    }
    Ok(s)
}

/// What a step's container gets, and what must live while it runs.
#[derive(Default)]
pub struct Prepared {
    /// `HostConfig.Mounts` entries
    pub mounts: Vec<Value>,
    pub env: Vec<String>,
    /// mount points to take out of the step's changes, deepest first
    pub stubs: Vec<String>,
    /// temporary directories, locks, views, forwarders: dropped after the step
    guards: Vec<Box<dyn Send + Sync>>,
}

impl Prepared {
    fn keep(&mut self, g: impl Send + Sync + 'static) {
        self.guards.push(Box::new(g));
    }
}

/// A directory of the step's, removed when dropped; `mount`, what is mounted in it (an
/// overlay's `merged`, a secret's tmpfs), unmounted first.
struct Scratch {
    dir: PathBuf,
    mount: Option<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(m) = &self.mount {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A task that ends with its guard.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the pieces of the mounts are made.
pub struct Env<'a> {
    pub data_root: &'a Path,
    pub tmp: &'a Path,
    pub session: Option<&'a super::SessionAuth>,
    /// the step's parent image, to tell mount points the image lacks
    pub parent: &'a dyn Source,
    /// the context's directory (a BuildKit build's synced context)
    pub context_dir: Option<&'a Path>,
}

fn scratch_dir(tmp: &Path, what: &str) -> Result<PathBuf, Failure> {
    let dir = tmp.join(format!("{what}-{}", hex::encode(rand::random::<[u8; 8]>())));
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{what}: {e}")))?;
    Ok(dir)
}

/// A path below `root` (never above it).
fn under(root: &Path, p: &str) -> PathBuf {
    let c = clamp(p);
    if c.is_empty() {
        root.to_path_buf()
    } else {
        root.join(c)
    }
}

/// Prepares the mounts of one step: `specs` with `from` resolved to the root of that
/// stage's or image's filesystem (`froms[i]`, held by the caller).
pub async fn prepare(
    env: &Env<'_>,
    specs: &[Spec],
    froms: &[Option<PathBuf>],
) -> Result<Prepared, Failure> {
    let mut out = Prepared::default();
    let mut ssh_n = 0;
    for (i, s) in specs.iter().enumerate() {
        let from_root = froms.get(i).cloned().flatten();
        // a secret's id is its target's name when not given, its target
        // /run/secrets/ID when not given
        let secret_id = match (s.id.as_str(), s.target.rsplit('/').next()) {
            ("", Some(name)) if !name.is_empty() => name.to_string(),
            (id, _) => id.to_string(),
        };
        let target = match s.kind.as_str() {
            "secret" if s.target.is_empty() => {
                if secret_id.is_empty() {
                    return Err(fail("--mount=type=secret needs an id or a target"));
                }
                format!("/run/secrets/{secret_id}")
            }
            "ssh" if s.target.is_empty() => format!("/run/buildkit/ssh_agent.{ssh_n}"),
            _ => s.target.clone(),
        };
        let target = format!("/{}", clamp(&target));
        match s.kind.as_str() {
            "bind" => {
                let root = match (&from_root, env.context_dir) {
                    (Some(r), _) => r.clone(),
                    (None, Some(c)) => c.to_path_buf(),
                    (None, None) => {
                        return Err(fail(
                            "--mount=type=bind from the context needs a BuildKit build",
                        ))
                    }
                };
                let src = under(&root, &s.source);
                if std::fs::symlink_metadata(&src).is_err() {
                    return Err(fail(format!(
                        "failed to compute cache key: \"/{}\": not found",
                        clamp(&s.source)
                    )));
                }
                let source = if s.readonly {
                    src
                } else {
                    // writes go to a scratch layer that is thrown away
                    let dir = scratch_dir(env.tmp, "bind")?;
                    let mut sc = Scratch {
                        dir: dir.clone(),
                        mount: None,
                    };
                    for d in ["upper", "work", "merged"] {
                        std::fs::create_dir_all(dir.join(d)).map_err(|e| fail(e.to_string()))?;
                    }
                    if src.is_dir() {
                        let data = std::ffi::CString::new(format!(
                            "lowerdir={},upperdir={},workdir={}",
                            src.display(),
                            dir.join("upper").display(),
                            dir.join("work").display()
                        ))
                        .map_err(|e| fail(e.to_string()))?;
                        rustix::mount::mount(
                            "overlay",
                            dir.join("merged"),
                            "overlay",
                            rustix::mount::MountFlags::empty(),
                            Some(data.as_c_str()),
                        )
                        .map_err(|e| fail(format!("--mount rw: {e}")))?;
                        sc.mount = Some(dir.join("merged"));
                        let m = dir.join("merged");
                        out.keep(sc);
                        m
                    } else {
                        let f = dir.join("merged").join("file");
                        std::fs::copy(&src, &f).map_err(|e| fail(e.to_string()))?;
                        out.keep(sc);
                        f
                    }
                };
                out.mounts.push(json!({"Type": "bind", "Source": source, "Target": target, "ReadOnly": s.readonly}));
            }
            "cache" => {
                let id = if s.id.is_empty() {
                    target.clone()
                } else {
                    s.id.clone()
                };
                let (dir, guard) = cache_dir(env, s, &id, from_root.as_deref()).await?;
                out.keep(guard);
                out.mounts.push(json!({"Type": "bind", "Source": dir, "Target": target, "ReadOnly": s.readonly}));
            }
            "tmpfs" => {
                let mut m = json!({"Type": "tmpfs", "Target": target});
                if let Some(size) = s.size {
                    m["TmpfsOptions"] = json!({"SizeBytes": size});
                }
                out.mounts.push(m);
            }
            "secret" => {
                let id = secret_id;
                let value = match env.session {
                    Some(sess) if sess.serves(berth_buildkit::session::methods::GET_SECRET) => {
                        sess.0.secret(&id).await.ok()
                    }
                    _ => None,
                };
                let Some(value) = value else {
                    if s.required {
                        return Err(fail(format!("secret {id} not found")));
                    }
                    continue;
                };
                let dir = secret_dir(env.tmp)?;
                let file = dir.dir.join("secret");
                write_private(
                    &file,
                    &value,
                    s.mode.unwrap_or(0o400),
                    s.uid.unwrap_or(0),
                    s.gid.unwrap_or(0),
                )?;
                out.mounts.push(
                    json!({"Type": "bind", "Source": file, "Target": target, "ReadOnly": true}),
                );
                out.keep(dir);
            }
            "ssh" => {
                let id = if s.id.is_empty() {
                    "default".to_string()
                } else {
                    s.id.clone()
                };
                let Some(sess) = env
                    .session
                    .filter(|x| x.serves(berth_buildkit::session::methods::FORWARD_AGENT))
                else {
                    if s.required {
                        return Err(fail(format!("no SSH key {id:?} forwarded from the client")));
                    }
                    continue;
                };
                let dir = scratch_dir(env.tmp, "ssh")?;
                let sock = dir.join("agent.sock");
                let listener = tokio::net::UnixListener::bind(&sock)
                    .map_err(|e| fail(format!("ssh agent socket: {e}")))?;
                set_owner_mode(
                    &sock,
                    s.mode.unwrap_or(0o600),
                    s.uid.unwrap_or(0),
                    s.gid.unwrap_or(0),
                )?;
                let client = sess.0.clone();
                let task = tokio::spawn(async move {
                    while let Ok((conn, _)) = listener.accept().await {
                        let (client, id) = (client.clone(), id.clone());
                        tokio::spawn(async move {
                            let _ = client.forward_ssh(&id, conn).await;
                        });
                    }
                });
                out.keep(Task(task));
                out.keep(Scratch { dir, mount: None });
                if ssh_n == 0 {
                    out.env.push(format!("SSH_AUTH_SOCK={target}"));
                }
                ssh_n += 1;
                out.mounts.push(
                    json!({"Type": "bind", "Source": sock, "Target": target, "ReadOnly": false}),
                );
            }
            _ => {}
        }
        // the mount point and the parents the image lacks are the runtime's doing
        let mut p = clamp(&target);
        while !p.is_empty() && env.parent.meta(&p).is_none() {
            if !out.stubs.contains(&p) {
                out.stubs.push(p.clone());
            }
            p = match p.rsplit_once('/') {
                Some((parent, _)) => parent.to_string(),
                None => String::new(),
            };
        }
    }
    out.stubs
        .sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    Ok(out)
}

impl super::SessionAuth {
    pub fn serves(&self, method: &str) -> bool {
        self.1.iter().any(|m| m == method)
    }
}

/// A secret's directory on a tmpfs (never on disk).
fn secret_dir(tmp: &Path) -> Result<Scratch, Failure> {
    let dir = scratch_dir(tmp, "secret")?;
    let data = std::ffi::CString::new("size=4m,mode=0700").map_err(|e| fail(e.to_string()))?;
    rustix::mount::mount(
        "tmpfs",
        &dir,
        "tmpfs",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        Some(data.as_c_str()),
    )
    .map_err(|e| fail(format!("a tmpfs for the secret: {e}")))?;
    Ok(Scratch {
        dir: dir.clone(),
        mount: Some(dir),
    })
}

fn set_owner_mode(p: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), Failure> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(|e| fail(e.to_string()))?;
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(|e| fail(e.to_string()))
}

fn write_private(p: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(), Failure> {
    use std::io::Write;
    let mut f = std::fs::File::options()
        .create_new(true)
        .write(true)
        .open(p)
        .map_err(|e| fail(e.to_string()))?;
    f.write_all(data).map_err(|e| fail(e.to_string()))?;
    set_owner_mode(p, mode, uid, gid)
}

/// A cache mount's directory, with what holds it (its lock for `locked`, a throwaway
/// copy for a `private` one in use).
async fn cache_dir(
    env: &Env<'_>,
    s: &Spec,
    id: &str,
    from: Option<&Path>,
) -> Result<(PathBuf, Box<dyn Send + Sync>), Failure> {
    use sha2::Digest as _;
    let key = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    let base = env
        .data_root
        .join("buildkit")
        .join("cache-mounts")
        .join(&key[..32]);
    let data = base.join("data");
    let fresh = !data.exists();
    std::fs::create_dir_all(&data).map_err(|e| fail(format!("cache mount {id}: {e}")))?;
    if fresh {
        if let Some(root) = from {
            let src = under(root, &s.source);
            let st = std::process::Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(&data)
                .status()
                .map_err(|e| fail(e.to_string()))?;
            if !st.success() {
                return Err(fail(format!("filling cache mount {id} from {}", s.from)));
            }
        }
        set_owner_mode(
            &data,
            s.mode.unwrap_or(0o755),
            s.uid.unwrap_or(0),
            s.gid.unwrap_or(0),
        )?;
    }
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(base.join("lock"))
        .map_err(|e| fail(e.to_string()))?;
    match s.sharing.as_str() {
        "locked" => {
            let lock = tokio::task::spawn_blocking(move || {
                rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map(|_| lock)
            })
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
            Ok((data, Box::new(lock)))
        }
        "private" => {
            if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_ok()
            {
                return Ok((data, Box::new(lock)));
            }
            // in use: a fresh one for this step alone
            let dir = scratch_dir(env.tmp, "cache")?;
            set_owner_mode(
                &dir,
                s.mode.unwrap_or(0o755),
                s.uid.unwrap_or(0),
                s.gid.unwrap_or(0),
            )?;
            Ok((dir.clone(), Box::new(Scratch { dir, mount: None })))
        }
        _ => {
            // shared: concurrent steps use it together; a locked one waits for them
            let _ = rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockShared);
            Ok((data, Box::new(lock)))
        }
    }
}

/// Removes the mount points a step's container made (in its changes directory
/// `upper`) when they are still empty.
pub fn remove_stubs(upper: &Path, stubs: &[String]) {
    for s in stubs {
        let p = upper.join(s);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&p);
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&p);
            }
            _ => {}
        }
    }
}

/// Removes every cache mount; the bytes they held.
pub fn prune_cache_mounts(data_root: &Path) -> u64 {
    let root = data_root.join("buildkit").join("cache-mounts");
    let mut bytes = 0;
    for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let Ok(lock) = std::fs::File::options()
            .write(true)
            .open(e.path().join("lock"))
        else {
            continue;
        };
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        bytes += crate::buildkit::locals::du(&e.path());
        let _ = std::fs::remove_dir_all(e.path());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_as_buildkit_reads_them() {
        let s = parse("type=cache,target=/root/.cache,sharing=locked,id=pip").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.target.as_str(), s.id.as_str()),
            ("cache", "/root/.cache", "pip")
        );
        assert!(!s.readonly);
        let b = parse("target=/src,source=app,from=build").unwrap();
        assert_eq!(b.kind, "bind");
        assert!(b.readonly);
        assert!(!parse("type=bind,target=/x,rw").unwrap().readonly);
        let t = parse("type=tmpfs,dst=/t,size=64m").unwrap();
        assert_eq!(t.size, Some(64 << 20));
        let sec = parse("type=secret,id=tok,mode=0440,uid=1").unwrap();
        assert_eq!((sec.mode, sec.uid), (Some(0o440), Some(1)));
        assert!(parse("type=volume,target=/x").is_err());
        assert!(parse("type=cache").is_err());
        assert!(parse("type=cache,target=/x,bogus=1").is_err());
        assert!(parse("type=cache,target=/x,sharing=sometimes").is_err());
    }
}
