//! COPY and ADD: sources from the context, a stage or an image, URLs and archives,
//! owners and modes, written as a layer.

use super::*;

/// A step's image from a `--cache-from` image that shares the parent's layers and
/// history and whose next history entry is this step: the parent plus that image's next
/// layer (or none, for a config step), with this build's config.
pub(super) fn from_sources(
    d: &Daemon,
    sources: &[berth_image::Image],
    parent: Option<Digest>,
    opts: berth_image::CommitOptions,
) -> Result<Option<Digest>, Failure> {
    let (diffs, hist) = match &parent {
        Some(p) => {
            let img = d.images.get(p).map_err(Failure::from)?;
            (img.config.rootfs.diff_ids, img.config.history)
        }
        None => (Vec::new(), Vec::new()),
    };
    for c in sources {
        let (cd, ch) = (&c.config.rootfs.diff_ids, &c.config.history);
        let same_base = cd.len() >= diffs.len()
            && cd[..diffs.len()] == diffs[..]
            && ch.len() > hist.len()
            && ch
                .iter()
                .zip(&hist)
                .all(|(a, b)| a.created_by == b.created_by);
        let next = &ch.get(hist.len());
        if !same_base
            || next.and_then(|h| h.created_by.as_deref()) != Some(opts.created_by.as_str())
        {
            continue;
        }
        let empty = next.is_some_and(|h| h.empty_layer);
        let id = if empty {
            d.images.child(parent.as_ref(), None, opts)
        } else {
            let Some(l) = c.layers.get(diffs.len()) else {
                continue;
            };
            let mut r = d.images.layer_tar(l).map_err(Failure::from)?;
            d.images.child(parent.as_ref(), Some(&mut r), opts)
        };
        return id.map(Some).map_err(Failure::from);
    }
    Ok(None)
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) fn file_meta(mode: u32, size: u64) -> Meta {
    Meta {
        kind: Kind::File,
        mode,
        uid: 0,
        gid: 0,
        mtime: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        size,
    }
}

/// The directories of `path` (and `path` itself) an image lacks, parents first.
pub(super) fn missing_dirs(
    tree: &Tree,
    path: &str,
    owner: Option<(u64, u64)>,
) -> Vec<(String, Meta)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur = join(&cur, part);
        if std::fs::metadata(tree.host_path(&cur)).is_err() {
            let (uid, gid) = owner.unwrap_or((0, 0));
            out.push((
                cur.clone(),
                Meta {
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid,
                    gid,
                    mtime: file_meta(0, 0).mtime,
                    size: 0,
                },
            ));
        }
    }
    out
}

/// `--chown=user[:group]` to ids: numbers, or names in the image's passwd and group files.
pub(super) fn owner(tree: &Tree, spec: &str) -> Result<(u64, u64), Failure> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u64, u64)> {
        let text = std::fs::read_to_string(tree.host_path(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() == Some(&name) && f.len() > 2 {
                let id: u64 = f[2].parse().ok()?;
                // passwd: the primary group; group files have none
                Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id)))
            } else {
                None
            }
        })
    };
    let (uid, primary) = match u.parse::<u64>() {
        Ok(n) => (n, n),
        Err(_) => lookup("etc/passwd", u).ok_or_else(|| {
            fail(format!(
                "unable to convert uid/gid chown string to host mapping: can't find uid for user {u}: no such user: {u}"
            ))
        })?,
    };
    let gid = match g {
        None | Some("") => primary,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => lookup("etc/group", g).map(|(id, _)| id).ok_or_else(|| {
                fail(format!(
                    "unable to convert uid/gid chown string to host mapping: can't find gid for group {g}: no such group: {g}"
                ))
            })?,
        },
    };
    Ok((uid, gid))
}

/// A context file ADD unpacks: a tar, plain or compressed (gzip, zstd).
pub(super) fn is_archive(ctx: &Context, path: &str) -> bool {
    let Ok(r) = ctx.open(path) else { return false };
    let Ok(mut r) = berth_image::decompress(r) else {
        return false;
    };
    let mut head = Vec::with_capacity(512);
    if (&mut r).take(512).read_to_end(&mut head).is_err() || head.len() < 512 {
        return false;
    }
    !head.iter().all(|b| *b == 0) && source::looks_like_tar(&head)
}

/// Unpacks a context archive into `to` in the layer.
pub(super) fn extract<W: io::Write>(
    lw: &mut LayerWriter<W>,
    ctx: &Context,
    src: &str,
    to: &str,
) -> io::Result<()> {
    let r = berth_image::decompress(ctx.open(src)?).map_err(io::Error::other)?;
    let mut ar = tar::Archive::new(r);
    for e in ar.entries()? {
        let mut e = e?;
        let Some(p) = source::clean(&e.path()?.to_string_lossy()) else {
            continue;
        };
        if p.is_empty() {
            continue;
        }
        let h = e.header();
        let meta = Meta {
            kind: Kind::File,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
            size: h.size().unwrap_or(0),
        };
        let path = join(to, &p);
        match h.entry_type() {
            tar::EntryType::Directory => lw.dir(
                &path,
                &Meta {
                    kind: Kind::Dir,
                    ..meta
                },
            )?,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                lw.file(&path, &meta, &mut e)?
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let (kind, target) = if h.entry_type() == tar::EntryType::Link {
                    (
                        "link",
                        source::clean(&target)
                            .map(|t| join(to, &t))
                            .unwrap_or_default(),
                    )
                } else {
                    ("sym", target)
                };
                lw.link(&path, &meta, &target, kind == "link")?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// An ADD URL's download, kept in an unlinked file.
pub(super) struct Download {
    name: String,
    file: std::fs::File,
    size: u64,
    /// `sha256:…` of the contents
    digest: String,
    /// from Last-Modified
    mtime: u64,
}

/// Downloads an ADD URL into a spill file under `tmp`, hashing it on the way.
pub(super) async fn download(url: &str, tmp: &std::path::Path) -> Result<Download, Failure> {
    use std::io::Write;
    let bad = |e: String| fail(format!("ADD failed: failed to GET {url}: {e}"));
    let name = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()
                .and_then(|mut s| s.next_back().map(str::to_string))
        })
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            bad("cannot determine a file name from the URL: end it with one, or name the destination file".into())
        })?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(3600))
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| bad(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(bad(format!("status {}", resp.status())));
    }
    let mtime = resp
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
        .map(|t| t.timestamp().max(0) as u64)
        .unwrap_or(0);
    let mut file = source::spill_file(tmp).map_err(|e| bad(e.to_string()))?;
    let mut h = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| bad(e.to_string()))? {
        h.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Download {
        name,
        file,
        size,
        digest: format!("sha256:{}", hex::encode(h.finalize())),
        mtime,
    })
}

impl Builder {
    pub(super) async fn copy_step(
        &mut self,
        st: &mut Stage,
        ins: &Instruction,
    ) -> Result<(), Failure> {
        let add = ins.cmd == "ADD";
        let esc = self.escape;
        let words: Vec<String> = {
            let vars = |n: &str| st.var(n);
            match &ins.args {
                Args::Exec(v) => v
                    .iter()
                    .map(|w| shell::expand(w, &vars, esc))
                    .collect::<Result<_, _>>(),
                Args::Shell(t) => shell::split(t, &vars, esc),
            }
            .map_err(|e| fail(format!("{}: {e}", ins.cmd)))?
        };
        if words.len() < 2 {
            return Err(fail(format!("{} requires at least two arguments", ins.cmd)));
        }
        let (dest_raw, srcs) = words.split_last().unwrap_or((&words[0], &[]));
        if ins.flag("checksum").is_some()
            && srcs
                .iter()
                .any(|s| !s.starts_with("http://") && !s.starts_with("https://"))
        {
            return Err(fail("checksum can't be specified for non-HTTP(S) sources"));
        }
        let dest_abs = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", st.workdir())
        };
        let dest = clamp(&dest_abs);
        let dir_syntax = dest_raw.ends_with('/') || dest_raw.ends_with("/.") || dest_raw == ".";
        let from_flag = match ins.flag("from") {
            Some(f) => {
                let vars = |n: &str| st.var(n);
                Some(shell::expand(f, &vars, esc).map_err(Failure::from)?)
            }
            None => None,
        };
        let parent_view = self.view(st.image.as_ref())?;
        let attrs = Attrs {
            owner: match ins.flag("chown") {
                Some(c) => {
                    let c = {
                        let vars = |n: &str| st.var(n);
                        shell::expand(c, &vars, esc).map_err(Failure::from)?
                    };
                    Some(owner(&parent_view.tree, &c)?)
                }
                None => None,
            },
            mode: match ins.flag("chmod") {
                Some(m) => Some(
                    u32::from_str_radix(m, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| fail(format!("invalid chmod parameter: {m}")))?,
                ),
                None => None,
            },
            exclude: {
                let pats: Vec<&str> = ins
                    .flags
                    .iter()
                    .filter(|(n, _)| n == "exclude")
                    .filter_map(|(_, v)| v.as_deref())
                    .collect();
                (!pats.is_empty())
                    .then(|| Arc::new(berth_build::ignore::Ignore::parse(&pats.join("\n"))))
            },
        };
        // --parents: the sources keep their directories (relative to the context or the
        // source image's root)
        let parents = match ins.flag("parents") {
            None => false,
            Some("" | "true") => true,
            Some("false") => false,
            Some(v) => return Err(fail(format!("invalid value for --parents: {v}"))),
        };
        // the source image's view, for --from
        let (src_view, src_image) = match &from_flag {
            None => (None, None),
            Some(f) => {
                if add {
                    return Err(fail("ADD does not support --from: use COPY --from"));
                }
                if let Some(crate::build::NamedContext::Dir(p)) = self.opts.named_contexts.get(f) {
                    (Some(View::of_dir(p.clone())), None)
                } else {
                    let id = match self
                        .stage_index(f, self.current)
                        .filter(|_| !self.opts.named_contexts.contains_key(f))
                        .and_then(|j| self.built_image(j))
                    {
                        Some(img) => img,
                        None => Some(self.base_image(f).await?),
                    };
                    (Some(self.view(id.as_ref())?), id)
                }
            }
        };
        let mut mem = Mem::default();
        let mut plan: Vec<Planned> = Vec::new();
        let mut extra = String::new();
        let mut ctx_paths: Vec<String> = Vec::new();
        let mut copies: Vec<(From, String, Kind)> = Vec::new();
        // paths copied from another image or a named directory context
        let mut from_paths: Vec<String> = Vec::new();
        for s in srcs {
            if let Some(h) = s
                .strip_prefix("<<")
                .map(|n| {
                    n.trim_start_matches('-')
                        .trim_matches(|c| c == '"' || c == '\'')
                })
                .and_then(|n| ins.heredocs.iter().find(|h| h.name == n))
            {
                let content = if h.expand {
                    let vars = |n: &str| st.var(n);
                    shell::expand(&h.content, &vars, esc).unwrap_or_else(|_| h.content.clone())
                } else {
                    h.content.clone()
                };
                extra.push_str(&format!(
                    "heredoc:{}:{}\n",
                    h.name,
                    hex::encode(Sha256::digest(&content))
                ));
                mem.files.push((
                    h.name.clone(),
                    file_meta(0o644, content.len() as u64),
                    Data::Bytes(content.into_bytes()),
                ));
                copies.push((From::Mem, h.name.clone(), Kind::File));
                continue;
            }
            if s.starts_with("http://") || s.starts_with("https://") {
                if !add {
                    return Err(fail("COPY failed: source can't be a URL for COPY"));
                }
                let got = download(s, self.d.images.tmp_dir()).await?;
                if let Some(want) = ins.flag("checksum") {
                    if want != got.digest {
                        return Err(fail(format!(
                            "ADD failed: digest mismatch for {s}: {}, expected {want}",
                            got.digest
                        )));
                    }
                }
                extra.push_str(&format!("url:{s}:{}\n", got.digest));
                let mut m = file_meta(0o600, got.size);
                m.mtime = got.mtime;
                let name = got.name.clone();
                mem.files.push((name.clone(), m, Data::File(got.file)));
                copies.push((From::Mem, name, Kind::File));
                continue;
            }
            let found = match &src_view {
                None => {
                    let Some(p) = source::clean(s) else {
                        return Err(fail(format!(
                            "{} failed: forbidden path outside the build context: {s} ()",
                            ins.cmd
                        )));
                    };
                    let m = source::matches(&*self.ctx, &p);
                    if m.is_empty() && s.contains(['*', '?', '[']) {
                        return Err(fail(format!(
                            "{} failed: no source files were specified",
                            ins.cmd
                        )));
                    }
                    if m.is_empty() {
                        return Err(fail(format!(
                            "{} failed: file not found in build context or excluded by .dockerignore: stat {s}: file does not exist",
                            ins.cmd
                        )));
                    }
                    m
                }
                Some(v) => {
                    let m = source::matches(&v.tree, &clamp(s));
                    if m.is_empty() {
                        return Err(fail(format!(
                            "COPY failed: stat {s}: file does not exist in {}",
                            from_flag.clone().unwrap_or_default()
                        )));
                    }
                    m
                }
            };
            for p in found {
                if attrs.exclude.as_ref().is_some_and(|ex| ex.excluded(&p)) {
                    continue;
                }
                let kind = match &src_view {
                    None => self.ctx.meta(&p),
                    Some(v) => v.tree.meta(&p),
                }
                .map(|m| m.kind)
                .unwrap_or(Kind::File);
                if src_view.is_none() {
                    ctx_paths.push(p.clone());
                    copies.push((From::Context, p, kind));
                } else {
                    from_paths.push(p.clone());
                    copies.push((From::Image, p, kind));
                }
            }
        }
        if copies.len() > 1 && !dir_syntax {
            return Err(fail(format!(
                "When using {} with more than one source file, the destination must be a directory and end with a /",
                ins.cmd
            )));
        }
        let dest_is_dir = dir_syntax
            || copies.len() > 1
            || std::fs::metadata(parent_view.tree.host_path(&dest)).is_ok_and(|m| m.is_dir());
        // where the writes land, through the image's symlinks
        let dest = parent_view.tree.resolve(&dest, dest_is_dir);
        let mut made = BTreeSet::new();
        for (from, p, kind) in copies {
            let base = p.rsplit('/').next().unwrap_or(&p).to_string();
            let archive = add
                && matches!(from, From::Context)
                && kind == Kind::File
                && is_archive(&self.ctx, &p);
            let to = if parents && !archive && matches!(from, From::Context | From::Image) {
                join(&dest, &p)
            } else if archive || kind == Kind::Dir {
                dest.clone()
            } else if dest_is_dir {
                join(&dest, &base)
            } else {
                dest.clone()
            };
            // the directories above what is written, when the image lacks them
            let holder = if archive || kind == Kind::Dir {
                to.clone()
            } else {
                to.rsplit_once('/')
                    .map(|(d, _)| d.to_string())
                    .unwrap_or_default()
            };
            for (dpath, meta) in missing_dirs(&parent_view.tree, &holder, attrs.owner) {
                if made.insert(dpath.clone()) {
                    plan.push(Planned::Dir(dpath, meta));
                }
            }
            extra.push_str(&format!("{p}\0{to}\0"));
            plan.push(if archive {
                Planned::Extract(p, to)
            } else {
                Planned::Copy(from, p, to)
            });
        }
        for (n, v) in &ins.flags {
            if n == "exclude" {
                extra.push_str(&format!("exclude:{}\n", v.as_deref().unwrap_or_default()));
            }
        }
        if !ctx_paths.is_empty() {
            let ctx = self.ctx.clone();
            let paths = ctx_paths.clone();
            let sum = tokio::task::spawn_blocking(move || ctx.checksum(&paths))
                .await
                .map_err(Failure::from)?
                .map_err(Failure::from)?;
            extra.push_str(&sum);
        }
        if let Some(id) = &src_image {
            extra.push_str(&id.to_string());
        } else if let (Some(v), false) = (&src_view, from_paths.is_empty()) {
            // a named directory context: what is copied from it counts, as the context's
            let root = v.tree.root.clone();
            let paths = from_paths.clone();
            let sum = tokio::task::spawn_blocking(move || {
                source::Context::from_dir(&root).and_then(|c| c.checksum(&paths))
            })
            .await
            .map_err(Failure::from)?
            .map_err(Failure::from)?;
            extra.push_str(&sum);
        }
        extra.push_str(&format!("{:?}", attrs));
        let sum = hex::encode(Sha256::digest(extra.as_bytes()));
        let created_by = format!(
            "/bin/sh -c #(nop) {} {}:{} in /{} ",
            ins.cmd,
            if dest_is_dir { "dir" } else { "file" },
            &sum[..16],
            dest
        );
        drop(parent_view);
        self.layer_step(st, created_by, extra, plan, src_view, Some(attrs), mem)
            .await
    }
}
