//! The instructions: stages and which of them a target needs, ARG scoping, each
//! instruction's effect on the image config, COPY/ADD planning, RUN in a container, and
//! the cache around every step.

mod copy;
mod instructions;
mod steps;

use copy::*;
use instructions::*;

use super::layer::{Attrs, Item, LayerWriter};
use super::source::{self, clamp, Context, Kind, Meta, Source, Tree};
use super::view::View;
use super::{Failure, Options, Out};
use crate::Daemon;
use berth_build::parser::{Args, Dockerfile, Instruction};
use berth_build::shell;
use berth_image::digest::Digest;
use berth_image::reference::Reference;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::sync::Arc;

/// Build arguments every Dockerfile may use without declaring them; kept out of history.
const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

#[derive(Clone)]
struct StageDef {
    from: Instruction,
    name: Option<String>,
    body: Vec<Instruction>,
}

/// A stage being built.
struct Stage {
    image: Option<Digest>,
    config: Map<String, Value>,
    author: String,
    /// declared ARGs and their values (None: declared without one)
    args: Vec<(String, Option<String>)>,
    /// CMD set in this stage (an ENTRYPOINT then keeps it)
    cmd_set: bool,
}

impl Stage {
    fn env(&self) -> Vec<String> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn var(&self, name: &str) -> Option<String> {
        for e in self.env() {
            if let Some((k, v)) = e.split_once('=') {
                if k == name {
                    return Some(v.to_string());
                }
            }
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    fn str(&self, key: &str) -> String {
        self.config
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn shell(&self) -> Vec<String> {
        match self.config.get("Shell").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    fn workdir(&self) -> String {
        match self.str("WorkingDir") {
            w if w.is_empty() => "/".into(),
            w => w,
        }
    }
}

/// Where a COPY item's data comes from.
enum From {
    Context,
    Image,
    Mem,
}

enum Planned {
    Dir(String, Meta),
    Copy(From, String, String),
    /// a context archive ADD unpacks into a directory
    Extract(String, String),
}

/// Files made during planning: heredocs (in memory) and downloads (in a spill file).
#[derive(Default)]
struct Mem {
    files: Vec<(String, Meta, Data)>,
}

enum Data {
    Bytes(Vec<u8>),
    File(std::fs::File),
}

impl Source for Mem {
    fn meta(&self, path: &str) -> Option<Meta> {
        self.files
            .iter()
            .find(|(p, _, _)| p == path)
            .map(|(_, m, _)| m.clone())
    }
    fn children(&self, _path: &str) -> Vec<String> {
        Vec::new()
    }
    fn open(&self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let (_, m, d) = self
            .files
            .iter()
            .find(|(p, _, _)| p == path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        Ok(match d {
            Data::Bytes(b) => Box::new(&b[..]),
            Data::File(f) => Box::new(source::SpillReader::new(f, 0, m.size)),
        })
    }
}

fn fail(m: impl Into<String>) -> Failure {
    Failure {
        message: m.into(),
        code: None,
    }
}

fn short(id: &Digest) -> String {
    let s = id.to_string();
    s["sha256:".len()..][..12].to_string()
}

fn strings(v: &[String]) -> Value {
    Value::from(v.to_vec())
}

pub struct Builder {
    d: Arc<Daemon>,
    pub opts: Options,
    ctx: Arc<Context>,
    out: Out,
    escape: char,
    meta_args: Vec<(String, Option<String>)>,
    /// the ARG instructions before the first FROM (shown as steps, as Docker does)
    meta_ins: Vec<Instruction>,
    stages: Vec<StageDef>,
    /// each built stage's image (None: not built, or `scratch` with nothing added);
    /// shared by the stages that build at once
    built: Arc<std::sync::Mutex<Vec<Option<Option<Digest>>>>>,
    step: usize,
    total: usize,
    /// the stage being built
    current: usize,
    used_args: Arc<std::sync::Mutex<BTreeSet<String>>>,
    /// `--cache-from` images: a step also hits when one of them was built on the same
    /// history and made this step next
    sources: Arc<Vec<berth_image::Image>>,
    /// each step's cache key and image, in order (what `--cache-to` exports)
    records: Arc<std::sync::Mutex<Vec<crate::buildkit::cache::Record>>>,
}

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Builder {
    pub fn new(
        d: Arc<Daemon>,
        opts: Options,
        ctx: Arc<Context>,
        out: Out,
        file: Dockerfile,
    ) -> Result<Builder, Failure> {
        let mut b = Builder {
            d,
            opts,
            ctx,
            out,
            escape: file.escape,
            meta_args: Vec::new(),
            meta_ins: Vec::new(),
            stages: Vec::new(),
            built: Arc::default(),
            step: 0,
            total: 0,
            current: 0,
            used_args: Arc::default(),
            sources: Arc::new(Vec::new()),
            records: Arc::default(),
        };
        if file.instructions.is_empty() {
            // blank lines and comments only (an empty file was refused before)
            return Err(fail("file with no instructions"));
        }
        for ins in file.instructions {
            if ins.cmd == "FROM" {
                let words = shell::split_raw(&ins.text(), b.escape).map_err(|e| {
                    fail(format!("dockerfile parse error on line {}: {e}", ins.line))
                })?;
                let name = match words.as_slice() {
                    [_] => None,
                    [_, as_, n] if as_.eq_ignore_ascii_case("as") => {
                        let n = n.to_ascii_lowercase();
                        let ok = n
                            .chars()
                            .next()
                            .is_some_and(|c| c.is_ascii_alphabetic())
                            && n.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                        if !ok {
                            return Err(fail(format!(
                                "invalid name for build stage: {n:?}, name can't start with a number or contain symbols"
                            )));
                        }
                        Some(n)
                    }
                    _ => {
                        return Err(fail(format!(
                            "dockerfile parse error on line {}: FROM requires either one or three arguments",
                            ins.line
                        )))
                    }
                };
                b.stages.push(StageDef {
                    from: ins,
                    name,
                    body: Vec::new(),
                });
            } else if let Some(s) = b.stages.last_mut() {
                s.body.push(ins);
            } else if ins.cmd == "ARG" {
                let vars = |n: &str| b.meta_value(n);
                let pairs = shell::pairs(&ins.text(), &vars, b.escape, false)
                    .map_err(|e| fail(format!("ARG: {e}")))?;
                for (k, v) in pairs {
                    let v = match b.opts.build_args.get(&k) {
                        Some(Some(given)) => Some(given.clone()),
                        _ => v,
                    };
                    locked(&b.used_args).insert(k.clone());
                    b.meta_args.push((k, v));
                }
                b.meta_ins.push(ins);
            } else {
                return Err(fail(format!(
                    "dockerfile parse error on line {}: no build stage in current context",
                    ins.line
                )));
            }
        }
        if b.stages.is_empty() {
            return Err(fail(
                "no build stage in current context: the Dockerfile has no FROM",
            ));
        }
        *locked(&b.built) = vec![None; b.stages.len()];
        Ok(b)
    }

    fn meta_value(&self, name: &str) -> Option<String> {
        self.meta_args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    fn stage_index(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Ok(i) = name.parse::<usize>() {
            return (i < before).then_some(i);
        }
        self.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    fn base_name(&self, i: usize) -> Result<String, Failure> {
        let s = &self.stages[i];
        let words = shell::split_raw(&s.from.text(), self.escape).map_err(Failure::from)?;
        let first = words.first().cloned().unwrap_or_default();
        let vars = |n: &str| self.meta_value(n);
        let base = shell::expand(&first, &vars, self.escape).map_err(Failure::from)?;
        if base.is_empty() {
            return Err(fail(format!("base name ({first}) should not be blank")));
        }
        Ok(base)
    }

    /// The earlier stages stage `i` builds on or copies from: its FROM, the `--from`s of
    /// its instructions and the `from=` of its RUN mounts (a named context of the same
    /// name is not a stage).
    fn refs(&self, i: usize) -> Result<Vec<usize>, Failure> {
        let mut names = vec![self.base_name(i)?];
        for ins in &self.stages[i].body {
            if let Some(f) = ins.flag("from") {
                names.push(f.to_string());
            }
            if ins.cmd == "RUN" {
                let mounts = ins.flags.iter().filter(|(n, _)| n == "mount");
                for (_, v) in mounts {
                    if let Ok(sp) = super::runmount::parse(v.as_deref().unwrap_or("")) {
                        if !sp.from.is_empty() {
                            names.push(sp.from);
                        }
                    }
                }
            }
        }
        let mut refs: Vec<usize> = names
            .iter()
            .filter(|n| !self.opts.named_contexts.contains_key(n.as_str()))
            .filter_map(|n| self.stage_index(n, i))
            .collect();
        refs.sort_unstable();
        refs.dedup();
        Ok(refs)
    }

    /// The stages a target needs: itself and what it refers to, all the way down.
    fn needed(&self, target: usize) -> Result<Vec<bool>, Failure> {
        let mut need = vec![false; self.stages.len()];
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if need[i] {
                continue;
            }
            need[i] = true;
            todo.extend(self.refs(i)?);
        }
        Ok(need)
    }

    /// Stage `j`'s image once built (Some(None): built, and empty).
    fn built_image(&self, j: usize) -> Option<Option<Digest>> {
        locked(&self.built).get(j).cloned().flatten()
    }

    /// The cache records of the steps, in the order they were made or found.
    pub fn take_records(&mut self) -> Vec<crate::buildkit::cache::Record> {
        std::mem::take(&mut *locked(&self.records))
    }

    /// Keeps the digests the build computed of a kept context's files.
    pub fn save_context_hashes(&self) {
        self.ctx.save_hashes();
    }

    pub async fn run(&mut self) -> Result<Digest, Failure> {
        let target = if self.opts.target.is_empty() {
            self.stages.len() - 1
        } else {
            let t = self.opts.target.to_ascii_lowercase();
            self.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.as_str()))
                .ok_or_else(|| {
                    fail(format!(
                        "failed to reach build target {} in Dockerfile",
                        self.opts.target
                    ))
                })?
        };
        // the classic builder builds every stage up to the target, as dockerd's does
        // (and names each stage's image in an aux message); BuildKit only those the
        // target needs
        let need = if self.out.lanes() {
            self.needed(target)?
        } else {
            vec![true; self.stages.len()]
        };
        let sources: Vec<berth_image::Image> = self
            .opts
            .cache_from
            .iter()
            .filter_map(|n| self.d.images.inspect(n).ok())
            .collect();
        self.sources = Arc::new(sources);
        self.total = (0..=target)
            .filter(|i| need[*i])
            .map(|i| 1 + self.stages[i].body.len())
            .sum::<usize>()
            + usize::from(!self.opts.labels.is_empty())
            + self.meta_ins.len();
        for ins in self.meta_ins.clone() {
            self.announce(&ins).await?;
        }
        let stages: Vec<usize> = (0..=target).filter(|i| need[*i]).collect();
        if stages.len() > 1 && self.out.lanes() {
            self.stages_at_once(&stages, target).await?;
        } else {
            for &i in &stages {
                let image = self.stage(i, i == target).await?;
                if let Some(id) = image.as_ref().filter(|_| i != target) {
                    // the target's goes out once the build is done
                    self.out
                        .raw(&serde_json::json!({"aux": {"ID": id.to_string()}}))
                        .await;
                }
                locked(&self.built)[i] = Some(image);
            }
        }
        let used = locked(&self.used_args).clone();
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !used.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.out
                .say(format!(
                    "[Warning] One or more build-args [{}] were not consumed\n",
                    names.join(" ")
                ))
                .await;
        }
        self.built_image(target)
            .flatten()
            .ok_or_else(|| fail("No image was generated. Is your Dockerfile empty?"))
    }

    /// Builds `stages` (in Dockerfile order, `target` last), each once the stages it
    /// refers to are built, those that do not depend on each other at the same time
    /// (a BuildKit build: each stage's steps are vertexes of their own). Steps keep the
    /// numbers they have in the Dockerfile's order. The first failure stops the others
    /// (their running steps are killed) and is the build's.
    async fn stages_at_once(&mut self, stages: &[usize], target: usize) -> Result<(), Failure> {
        let mut first_step = Vec::with_capacity(stages.len());
        let mut n = self.step;
        for &i in stages {
            first_step.push(n);
            n += 1 + self.stages[i].body.len();
        }
        let abort = Arc::new(tokio::sync::watch::Sender::new(false));
        let (done_tx, _) = tokio::sync::broadcast::channel::<(usize, bool)>(stages.len().max(1));
        let mut lanes = Vec::with_capacity(stages.len());
        for (k, &i) in stages.iter().enumerate() {
            let mut lane = self.lane(abort.clone());
            lane.step = first_step[k];
            let refs: Vec<usize> = self.refs(i)?;
            let mut done_rx = done_tx.subscribe();
            let done_tx = done_tx.clone();
            let abort = abort.clone();
            lanes.push(async move {
                // wait for what it refers to
                let mut waiting: BTreeSet<usize> = refs
                    .into_iter()
                    .filter(|j| lane.built_image(*j).is_none())
                    .collect();
                while !waiting.is_empty() {
                    match done_rx.recv().await {
                        Ok((j, true)) => {
                            waiting.remove(&j);
                        }
                        // a stage failed: that failure is the build's, and what depends
                        // on this stage learns it does not come
                        Ok((_, false)) | Err(_) => {
                            let _ = done_tx.send((i, false));
                            return Ok(());
                        }
                    }
                    waiting.retain(|j| lane.built_image(*j).is_none());
                }
                if *abort.borrow() {
                    let _ = done_tx.send((i, false));
                    return Ok(());
                }
                let r = lane.stage(i, i == target).await;
                match r {
                    Ok(image) => {
                        locked(&lane.built)[i] = Some(image);
                        let _ = done_tx.send((i, true));
                        Ok(())
                    }
                    Err(e) => {
                        let first = !abort.send_replace(true);
                        let _ = done_tx.send((i, false));
                        // the first failure is the one to report
                        if first {
                            Err(e)
                        } else {
                            Ok(())
                        }
                    }
                }
            });
        }
        drop(done_tx);
        let results = futures_util::future::join_all(lanes).await;
        self.step = n;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        if locked(&self.built)[target].is_none() {
            return Err(fail("the build was canceled"));
        }
        Ok(())
    }

    /// A copy of the builder for one stage built beside others: the same shared state
    /// (built stages, used ARGs, cache records), its own step counter and vertexes.
    fn lane(&self, abort: Arc<tokio::sync::watch::Sender<bool>>) -> Builder {
        Builder {
            d: self.d.clone(),
            opts: self.opts.clone(),
            ctx: self.ctx.clone(),
            out: self.out.lane(abort),
            escape: self.escape,
            meta_args: self.meta_args.clone(),
            meta_ins: self.meta_ins.clone(),
            stages: self.stages.clone(),
            built: self.built.clone(),
            step: self.step,
            total: self.total,
            current: self.current,
            used_args: self.used_args.clone(),
            sources: self.sources.clone(),
            records: self.records.clone(),
        }
    }

    async fn announce(&mut self, ins: &Instruction) -> Result<(), Failure> {
        if self.out.gone() {
            return Err(fail("the build was canceled: its client went away"));
        }
        self.step += 1;
        let text = ins.original.trim();
        // the ARGs before the first FROM belong to no stage
        let stage = if self.meta_ins.contains(ins) {
            None
        } else {
            self.stage_label()
        };
        self.out
            .step(self.step, self.total, stage.as_deref(), text)
            .await;
        Ok(())
    }

    /// The current stage's name in BuildKit's progress: its `AS` name, or `stage-N`; none
    /// when the Dockerfile has one stage.
    fn stage_label(&self) -> Option<String> {
        if self.stages.len() < 2 {
            return None;
        }
        Some(
            self.stages[self.current]
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", self.current)),
        )
    }

    async fn stage(&mut self, i: usize, last: bool) -> Result<Option<Digest>, Failure> {
        let def = self.stages[i].clone();
        self.current = i;
        self.announce(&def.from).await?;
        if let Some(p) = def.from.flag("platform") {
            let vars = |n: &str| self.meta_value(n);
            let p = shell::expand(p, &vars, self.escape).map_err(Failure::from)?;
            let host = format!("linux/{}", berth_image::config::host_arch());
            if !p.is_empty() && p != host && p != "linux" {
                return Err(fail(format!(
                    "FROM --platform={p}: this host builds {host} only"
                )));
            }
        }
        check_flags(&def.from, self.opts.session.is_some())?;
        let base = self.base_name(i)?;
        let (image, config) = if base.eq_ignore_ascii_case("scratch") {
            (None, Map::new())
        } else if let Some(j) = self
            .stage_index(&base, i)
            .filter(|_| !self.opts.named_contexts.contains_key(&base))
        {
            let img = self.built_image(j).flatten();
            let cfg = match &img {
                Some(id) => self.config_of(id)?,
                None => Map::new(),
            };
            (img, cfg)
        } else {
            let id = self.base_image(&base).await?;
            (Some(id.clone()), self.config_of(&id)?)
        };
        self.out
            .step_done(&image.as_ref().map(short).unwrap_or_default())
            .await;
        let mut st = Stage {
            image,
            config,
            author: String::new(),
            args: Vec::new(),
            cmd_set: false,
        };
        let triggers: Vec<String> = st
            .config
            .get("OnBuild")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        st.config.insert("OnBuild".into(), Value::Null);
        // every stage has a PATH, as with Docker's builder
        let mut env = st.env();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(crate::spec::DEFAULT_PATH.to_string());
            st.config.insert("Env".into(), strings(&env));
        }
        if !triggers.is_empty() {
            let n = triggers.len();
            self.out
                .say(format!(
                    "# Executing {n} build trigger{}\n",
                    if n == 1 { "" } else { "s" }
                ))
                .await;
            for t in triggers {
                let file = berth_build::parser::parse(&t).map_err(Failure::from)?;
                for ins in file.instructions {
                    if matches!(ins.cmd.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                        return Err(fail(format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            ins.cmd
                        )));
                    }
                    self.dispatch(&mut st, &ins).await?;
                }
            }
        }
        for ins in &def.body {
            self.announce(ins).await?;
            self.dispatch(&mut st, ins).await?;
        }
        if last && !self.opts.labels.is_empty() {
            let mut text = String::from("LABEL");
            for (k, v) in &self.opts.labels {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                text.push_str(&format!(" {}={}", quote(k), quote(&v)));
            }
            let ins = berth_build::parser::parse(&text)
                .map_err(Failure::from)?
                .instructions
                .remove(0);
            self.announce(&ins).await?;
            self.dispatch(&mut st, &ins).await?;
        }
        Ok(st.image)
    }

    fn config_of(&self, id: &Digest) -> Result<Map<String, Value>, Failure> {
        let img = self.d.images.get(id).map_err(Failure::from)?;
        Ok(img.config.config.clone().unwrap_or_default())
    }

    /// A FROM image: local, or pulled (always with `pull`), progress in the stream.
    async fn base_image(&self, name: &str) -> Result<Digest, Failure> {
        let name = match self.opts.named_contexts.get(name) {
            Some(super::NamedContext::Image(r)) => r.as_str(),
            Some(super::NamedContext::Dir(_)) => {
                return Err(fail(format!(
                    "FROM {name}: a local directory context can be copied from, not built on"
                )))
            }
            None => name,
        };
        if !self.opts.pull {
            if let Ok(img) = self.d.images.inspect(name) {
                return Ok(img.id);
            }
        }
        let reference = Reference::parse_tagged_default(name)
            .map_err(|e| fail(format!("invalid reference format: {name}: {e}")))?;
        let platform = berth_registry::manifest::Platform::host();
        let mut creds = berth_registry::auth::AuthConfig::for_domain_from_config_header(
            &self.opts.registry_config,
            reference.domain(),
        )
        .map_err(fail)?;
        if let (None, Some(s)) = (&creds, &self.opts.session) {
            creds = crate::buildkit::credentials(&s.0, reference.domain()).await;
        }
        let plan = crate::pull::plan(&self.d, reference, &platform, creds)
            .await
            .map_err(|e| fail(e.message))?;
        crate::pull::run(self.d.clone(), plan, self.out.pull_sink())
            .await
            .map_err(fail)?;
        Ok(self.d.images.inspect(name).map_err(Failure::from)?.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose_ports("8000-8002").unwrap().len(), 3);
        assert!(expose_ports("x").is_err());
    }

    #[test]
    fn chown_names() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/h:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let t = Tree {
            root: d.path().to_path_buf(),
        };
        assert_eq!(owner(&t, "app").unwrap(), (1000, 1001));
        assert_eq!(owner(&t, "app:staff").unwrap(), (1000, 50));
        assert_eq!(owner(&t, "10:20").unwrap(), (10, 20));
        assert_eq!(owner(&t, "7").unwrap(), (7, 7));
        assert!(owner(&t, "nobody").is_err());
    }
}
