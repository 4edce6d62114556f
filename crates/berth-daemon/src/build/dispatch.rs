//! The instructions: stages and which of them a target needs, ARG scoping, each
//! instruction's effect on the image config, COPY/ADD planning, RUN in a container, and
//! the cache around every step.

use super::source::{self, clamp, Attrs, Context, Item, Kind, LayerWriter, Meta, Source, Tree};
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

    async fn dispatch(&mut self, st: &mut Stage, ins: &Instruction) -> Result<(), Failure> {
        check_flags(ins, self.opts.session.is_some())?;
        let esc = self.escape;
        let text = ins.text();
        let nop = |s: &str| format!("/bin/sh -c #(nop)  {s}");
        macro_rules! expand {
            ($w:expr) => {{
                let vars = |n: &str| st.var(n);
                shell::expand($w, &vars, esc).map_err(|e| fail(format!("{}: {e}", ins.cmd)))?
            }};
        }
        match ins.cmd.as_str() {
            "ENV" | "LABEL" => {
                let pairs = {
                    let vars = |n: &str| st.var(n);
                    shell::pairs(&text, &vars, esc, true)
                        .map_err(|e| fail(format!("{}: {e}", ins.cmd)))?
                };
                let mut desc = Vec::new();
                for (k, v) in pairs {
                    let v = v.unwrap_or_default();
                    if ins.cmd == "ENV" {
                        let mut env = st.env();
                        env.retain(|e| e.split('=').next() != Some(k.as_str()));
                        env.push(format!("{k}={v}"));
                        st.config.insert("Env".into(), strings(&env));
                    } else {
                        let labels = st
                            .config
                            .entry("Labels")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if !labels.is_object() {
                            *labels = Value::Object(Map::new());
                        }
                        labels[&k] = Value::from(v.clone());
                    }
                    desc.push(format!("{k}={v}"));
                }
                self.config_step(st, nop(&format!("{} {}", ins.cmd, desc.join(" "))))
                    .await
            }
            "ARG" => {
                let pairs = {
                    let vars = |n: &str| st.var(n);
                    shell::pairs(&text, &vars, esc, false).map_err(|e| fail(format!("ARG: {e}")))?
                };
                let mut desc = Vec::new();
                for (k, default) in pairs {
                    let v = match self.opts.build_args.get(&k) {
                        Some(Some(given)) => Some(given.clone()),
                        _ => default.clone().or_else(|| self.meta_value(&k)),
                    };
                    locked(&self.used_args).insert(k.clone());
                    desc.push(match &default {
                        Some(dv) => format!("{k}={dv}"),
                        None => k.clone(),
                    });
                    st.args.push((k, v));
                }
                self.config_step(st, nop(&format!("ARG {}", desc.join(" "))))
                    .await
            }
            "CMD" | "ENTRYPOINT" => {
                let v = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(s) => {
                        let mut sh = st.shell();
                        sh.push(s.clone());
                        sh
                    }
                };
                if ins.cmd == "CMD" {
                    st.cmd_set = true;
                    st.config.insert("Cmd".into(), strings(&v));
                } else {
                    st.config.insert("Entrypoint".into(), strings(&v));
                    if !st.cmd_set {
                        st.config.insert("Cmd".into(), Value::Null);
                    }
                }
                self.config_step(st, nop(&format!("{} {}", ins.cmd, json_words(&v))))
                    .await
            }
            "EXPOSE" => {
                let words = {
                    let vars = |n: &str| st.var(n);
                    shell::split(&text, &vars, esc).map_err(|e| fail(format!("EXPOSE: {e}")))?
                };
                if words.is_empty() {
                    return Err(fail("EXPOSE requires at least one argument"));
                }
                let mut ports = Vec::new();
                for w in &words {
                    ports.extend(expose_ports(w)?);
                }
                let map = st
                    .config
                    .entry("ExposedPorts")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !map.is_object() {
                    *map = Value::Object(Map::new());
                }
                for p in &ports {
                    map[p] = json!({});
                }
                self.config_step(st, nop(&format!("EXPOSE {}", ports.join(" "))))
                    .await
            }
            "VOLUME" => {
                let words = match &ins.args {
                    Args::Exec(v) => v
                        .iter()
                        .map(|w| Ok(expand!(w)))
                        .collect::<Result<Vec<_>, Failure>>()?,
                    Args::Shell(_) => {
                        let vars = |n: &str| st.var(n);
                        shell::split(&text, &vars, esc).map_err(|e| fail(format!("VOLUME: {e}")))?
                    }
                };
                if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                    return Err(fail("VOLUME specified can not be an empty string"));
                }
                let map = st
                    .config
                    .entry("Volumes")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !map.is_object() {
                    *map = Value::Object(Map::new());
                }
                for w in &words {
                    map[w.trim()] = json!({});
                }
                self.config_step(st, nop(&format!("VOLUME {}", json_words(&words))))
                    .await
            }
            "USER" | "STOPSIGNAL" => {
                let v = expand!(text.trim());
                if v.is_empty() {
                    return Err(fail(format!("{} requires exactly one argument", ins.cmd)));
                }
                let key = if ins.cmd == "USER" {
                    "User"
                } else {
                    "StopSignal"
                };
                st.config.insert(key.into(), Value::from(v.clone()));
                self.config_step(st, nop(&format!("{} {v}", ins.cmd))).await
            }
            "MAINTAINER" => {
                st.author = expand!(text.trim());
                let a = st.author.clone();
                self.config_step(st, nop(&format!("MAINTAINER {a}"))).await
            }
            "SHELL" => {
                let Args::Exec(v) = &ins.args else {
                    return Err(fail("SHELL requires the arguments to be in JSON form"));
                };
                if v.is_empty() {
                    return Err(fail("SHELL requires at least one argument"));
                }
                st.config.insert("Shell".into(), strings(v));
                self.config_step(st, nop(&format!("SHELL {}", json_words(v))))
                    .await
            }
            "ONBUILD" => {
                let Some(inner) = &ins.onbuild else {
                    return Err(fail("ONBUILD requires at least one argument"));
                };
                if matches!(inner.cmd.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(fail(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        inner.cmd
                    )));
                }
                let trigger = inner.original.trim().to_string();
                let mut list: Vec<Value> = st
                    .config
                    .get("OnBuild")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                list.push(Value::from(trigger.clone()));
                st.config.insert("OnBuild".into(), Value::from(list));
                self.config_step(st, nop(&format!("ONBUILD {trigger}")))
                    .await
            }
            "HEALTHCHECK" => {
                let hc = healthcheck(ins, &text)?;
                st.config.insert("Healthcheck".into(), hc);
                self.config_step(st, nop(&format!("HEALTHCHECK {}", text.trim())))
                    .await
            }
            "WORKDIR" => {
                let p = expand!(text.trim());
                if p.is_empty() {
                    return Err(fail("WORKDIR requires exactly one argument"));
                }
                let abs = if p.starts_with('/') {
                    p
                } else {
                    format!("{}/{p}", st.workdir())
                };
                let abs = format!("/{}", clamp(&abs));
                st.config
                    .insert("WorkingDir".into(), Value::from(abs.clone()));
                let created_by = nop(&format!("WORKDIR {abs}"));
                if st.image.is_some() {
                    let view = self.view(st.image.as_ref())?;
                    let real = view.tree.resolve(&clamp(&abs), true);
                    let dirs = missing_dirs(&view.tree, &real, None);
                    if !dirs.is_empty() {
                        let plan: Vec<Planned> =
                            dirs.into_iter().map(|(p, m)| Planned::Dir(p, m)).collect();
                        return self
                            .layer_step(
                                st,
                                created_by,
                                String::new(),
                                plan,
                                None,
                                None,
                                Mem::default(),
                            )
                            .await;
                    }
                }
                self.config_step(st, created_by).await
            }
            "RUN" => self.run_step(st, ins).await,
            "COPY" | "ADD" => self.copy_step(st, ins).await,
            other => Err(fail(format!("unknown instruction: {other}"))),
        }
    }

    fn view(&self, image: Option<&Digest>) -> Result<View, Failure> {
        View::open(&self.d, image).map_err(|e| fail(format!("opening the image's filesystem: {e}")))
    }

    fn commit_opts(&self, st: &Stage, created_by: String) -> berth_image::CommitOptions {
        berth_image::CommitOptions {
            config: st.config.clone(),
            changes: Vec::new(),
            comment: String::new(),
            author: st.author.clone(),
            created_by,
            reference: None,
        }
    }

    fn key(&self, st: &Stage, created_by: &str, extra: &str) -> String {
        let mut h = Sha256::new();
        h.update(
            st.image
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_else(|| "scratch".into()),
        );
        for part in [
            created_by,
            extra,
            &Value::Object(st.config.clone()).to_string(),
            &st.author,
        ] {
            h.update([0]);
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    async fn cached(
        &mut self,
        st: &mut Stage,
        key: &str,
        created_by: &str,
    ) -> Result<bool, Failure> {
        if self.opts.nocache {
            return Ok(false);
        }
        let mut hit = self.d.images.cache_hit(key).map_err(Failure::from)?;
        if !self.opts.cache_from.is_empty() {
            // as dockerd: with --cache-from, a local hit counts only when it is one of
            // those images or an image they were built on
            hit = hit.filter(|id| self.in_sources(id));
        }
        if hit.is_none() && !self.sources.is_empty() {
            let d = self.d.clone();
            let sources = self.sources.clone();
            let parent = st.image.clone();
            let opts = self.commit_opts(st, created_by.to_string());
            hit = tokio::task::spawn_blocking(move || from_sources(&d, &sources, parent, opts))
                .await
                .map_err(Failure::from)??;
            if let Some(id) = &hit {
                self.d
                    .images
                    .cache_put(key, id, created_by)
                    .map_err(Failure::from)?;
            }
        }
        match hit {
            Some(id) => {
                locked(&self.records).push(crate::buildkit::cache::Record {
                    key: key.to_string(),
                    image: id.clone(),
                    description: created_by.to_string(),
                });
                self.out.cache_hit(&short(&id)).await;
                st.image = Some(id);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether `id` is a `--cache-from` image or one of its parents.
    fn in_sources(&self, id: &Digest) -> bool {
        let want = id.to_string();
        self.sources.iter().any(|src| {
            let mut cur = src.id.to_string();
            for _ in 0..10_000 {
                if cur == want {
                    return true;
                }
                match self.d.images.inspect(&cur) {
                    Ok(img) if !img.parent.is_empty() => cur = img.parent,
                    _ => return false,
                }
            }
            false
        })
    }

    async fn done(
        &mut self,
        st: &mut Stage,
        id: Digest,
        key: &str,
        desc: &str,
    ) -> Result<(), Failure> {
        self.d
            .images
            .cache_put(key, &id, desc)
            .map_err(Failure::from)?;
        locked(&self.records).push(crate::buildkit::cache::Record {
            key: key.to_string(),
            image: id.clone(),
            description: desc.to_string(),
        });
        self.out.step_done(&short(&id)).await;
        st.image = Some(id);
        Ok(())
    }

    async fn config_step(&mut self, st: &mut Stage, created_by: String) -> Result<(), Failure> {
        let key = self.key(st, &created_by, "");
        if self.cached(st, &key, &created_by).await? {
            return Ok(());
        }
        let opts = self.commit_opts(st, created_by.clone());
        let d = self.d.clone();
        let parent = st.image.clone();
        let id = tokio::task::spawn_blocking(move || d.images.child(parent.as_ref(), None, opts))
            .await
            .map_err(Failure::from)?
            .map_err(Failure::from)?;
        self.done(st, id, &key, &created_by).await
    }

    /// A step that adds a layer written from `plan` (sources: the context, `image`'s
    /// view, `mem`).
    #[allow(clippy::too_many_arguments)]
    async fn layer_step(
        &mut self,
        st: &mut Stage,
        created_by: String,
        extra: String,
        plan: Vec<Planned>,
        image: Option<View>,
        attrs: Option<Attrs>,
        mem: Mem,
    ) -> Result<(), Failure> {
        let key = self.key(st, &created_by, &extra);
        if self.cached(st, &key, &created_by).await? {
            return Ok(());
        }
        let opts = self.commit_opts(st, created_by.clone());
        let d = self.d.clone();
        let parent = st.image.clone();
        let ctx = self.ctx.clone();
        let attrs = attrs.unwrap_or_default();
        let id = tokio::task::spawn_blocking(move || -> Result<Digest, Failure> {
            let (r, w) = io::pipe().map_err(Failure::from)?;
            let writer = std::thread::spawn(move || -> io::Result<()> {
                let mut lw = LayerWriter::new(w);
                for p in &plan {
                    match p {
                        Planned::Dir(path, meta) => lw.dir(path, meta)?,
                        Planned::Copy(from, src, to) => {
                            let source: &dyn Source = match from {
                                From::Context => &*ctx,
                                From::Image => match &image {
                                    Some(v) => &v.tree,
                                    None => continue,
                                },
                                From::Mem => &mem,
                            };
                            let it = Item {
                                src: source,
                                from: src.clone(),
                                to: to.clone(),
                            };
                            lw.item(&it, &attrs)?;
                        }
                        Planned::Extract(src, to) => extract(&mut lw, &ctx, src, to)?,
                    }
                }
                lw.finish().map(drop)
            });
            let mut r = r;
            let id = d.images.child(parent.as_ref(), Some(&mut r), opts);
            drop(r);
            let written = writer.join();
            let id = id.map_err(Failure::from)?;
            match written {
                Ok(Ok(())) => Ok(id),
                Ok(Err(e)) => Err(fail(format!("writing the layer: {e}"))),
                Err(_) => Err(fail("writing the layer failed")),
            }
        })
        .await
        .map_err(Failure::from)??;
        self.done(st, id, &key, &created_by).await
    }

    async fn run_step(&mut self, st: &mut Stage, ins: &Instruction) -> Result<(), Failure> {
        let cmd: Vec<String> = match &ins.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => {
                let mut script = s.clone();
                let only_heredoc = ins.heredocs.len() == 1
                    && matches!(
                        s.trim().trim_start_matches("<<").trim_start_matches('-').trim_matches(|c| c == '"' || c == '\''),
                        n if n == ins.heredocs[0].name
                    );
                if only_heredoc {
                    script = ins.heredocs[0].content.clone();
                } else {
                    for h in &ins.heredocs {
                        script.push('\n');
                        script.push_str(&h.content);
                        if !h.content.ends_with('\n') {
                            script.push('\n');
                        }
                        script.push_str(&h.name);
                    }
                }
                let mut sh = st.shell();
                sh.push(script);
                sh
            }
        };
        let env_keys: BTreeSet<String> = st
            .env()
            .iter()
            .filter_map(|e| e.split('=').next().map(str::to_string))
            .collect();
        let mut arg_env: Vec<String> = Vec::new();
        for (k, v) in &st.args {
            if let (Some(v), false) = (v, env_keys.contains(k)) {
                arg_env.retain(|e| e.split('=').next() != Some(k.as_str()));
                arg_env.push(format!("{k}={v}"));
            }
        }
        let created_by = if arg_env.is_empty() {
            cmd.join(" ")
        } else {
            format!("|{} {} {}", arg_env.len(), arg_env.join(" "), cmd.join(" "))
        };
        // BuildKit's RUN flags: in the cache key (not the secrets' values)
        let specs: Vec<super::runmount::Spec> = ins
            .flags
            .iter()
            .filter(|(n, _)| n == "mount")
            .map(|(_, v)| super::runmount::parse(v.as_deref().unwrap_or_default()))
            .collect::<Result<_, _>>()?;
        let network = match ins.flag("network") {
            None | Some("default") => self.opts.network_mode.clone(),
            Some("none") => "none".to_string(),
            Some("host") => {
                if !self.opts.entitlements.iter().any(|e| e == "network.host") {
                    return Err(fail(
                        "network.host is not allowed: the build must be started with --allow network.host",
                    ));
                }
                "host".to_string()
            }
            Some(other) => return Err(fail(format!("unsupported network mode {other:?}"))),
        };
        let privileged = match ins.flag("security") {
            None | Some("sandbox") => false,
            Some("insecure") => {
                if !self
                    .opts
                    .entitlements
                    .iter()
                    .any(|e| e == "security.insecure")
                {
                    return Err(fail(
                        "security.insecure is not allowed: the build must be started with --allow security.insecure",
                    ));
                }
                true
            }
            Some(other) => return Err(fail(format!("unsupported security mode {other:?}"))),
        };
        let flags_text: Vec<String> = ins
            .flags
            .iter()
            .filter(|(n, _)| matches!(n.as_str(), "mount" | "network" | "security"))
            .map(|(n, v)| format!("--{n}={}", v.as_deref().unwrap_or_default()))
            .collect();
        // what a bind mount shows the step counts as its input
        let mut mount_inputs = String::new();
        for sp in specs.iter().filter(|sp| sp.kind == "bind") {
            let path = source::clamp(&sp.source);
            let sum = if sp.from.is_empty() {
                let ctx = self.ctx.clone();
                tokio::task::spawn_blocking(move || ctx.checksum(&[path]))
                    .await
                    .map_err(Failure::from)?
                    .map_err(Failure::from)?
            } else if let Some(super::NamedContext::Dir(dir)) =
                self.opts.named_contexts.get(&sp.from)
            {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    source::Context::from_dir(&dir).and_then(|c| c.checksum(&[path]))
                })
                .await
                .map_err(Failure::from)?
                .map_err(Failure::from)?
            } else {
                match self
                    .stage_index(&sp.from, self.current)
                    .filter(|_| !self.opts.named_contexts.contains_key(&sp.from))
                    .and_then(|j| self.built_image(j))
                {
                    Some(img) => img.map(|i| i.to_string()).unwrap_or_default(),
                    None => self.base_image(&sp.from).await?.to_string(),
                }
            };
            mount_inputs.push_str(&sum);
        }
        let key = self.key(
            st,
            &created_by,
            &format!("{network}{}{mount_inputs}", flags_text.join(" ")),
        );
        if self.cached(st, &key, &created_by).await? {
            return Ok(());
        }
        let Some(parent) = st.image.clone() else {
            return Err(fail(format!(
                "The command '{}' cannot run: the image is empty (FROM scratch), it has no shell or programs",
                cmd.join(" ")
            )));
        };
        let mut env = st.env();
        env.extend(arg_env);
        for p in PROXY_ARGS {
            if let Some(Some(v)) = self.opts.build_args.get(*p) {
                env.push(format!("{p}={v}"));
            }
        }
        // --mount: what the step sees beside its image, for its time only
        let mut from_views = Vec::new();
        let mut froms = Vec::new();
        for sp in &specs {
            if sp.from.is_empty() {
                froms.push(None);
                continue;
            }
            let v =
                if let Some(super::NamedContext::Dir(p)) = self.opts.named_contexts.get(&sp.from) {
                    View::of_dir(p.clone())
                } else {
                    let id = match self
                        .stage_index(&sp.from, self.current)
                        .filter(|_| !self.opts.named_contexts.contains_key(&sp.from))
                        .and_then(|j| self.built_image(j))
                    {
                        Some(img) => img,
                        None => Some(self.base_image(&sp.from).await?),
                    };
                    self.view(id.as_ref())?
                };
            froms.push(Some(v.tree.root.clone()));
            from_views.push(v);
        }
        let prepared = if specs.is_empty() {
            super::runmount::Prepared::default()
        } else {
            let parent_view = self.view(Some(&parent))?;
            let tmp = self.d.images.tmp_dir().to_path_buf();
            let env = super::runmount::Env {
                data_root: &self.d.config.data_root,
                tmp: &tmp,
                session: self.opts.session.as_ref(),
                parent: &parent_view.tree,
                context_dir: self.opts.context_dir.as_deref(),
            };
            super::runmount::prepare(&env, &specs, &froms).await?
        };
        env.extend(prepared.env.iter().cloned());
        let mut hc = json!({
            "NetworkMode": network,
            "LogConfig": {"Type": "json-file", "Config": {}},
            "ExtraHosts": self.opts.extra_hosts,
            "Mounts": prepared.mounts,
            "Privileged": privileged,
        });
        for (k, v) in &self.opts.resources {
            hc[k] = v.clone();
        }
        let req = json!({
            "Image": parent.to_string(),
            "Cmd": cmd,
            "Entrypoint": [],
            "Env": env,
            "User": st.str("User"),
            "WorkingDir": st.str("WorkingDir"),
            "Healthcheck": {"Test": ["NONE"]},
            "Labels": if self.opts.rm || self.opts.forcerm {
                json!({super::STEP_LABEL: "1"})
            } else {
                json!({})
            },
            "AttachStdout": true,
            "AttachStderr": true,
            "HostConfig": hc,
        });
        let (c, _) =
            crate::create::create_from(&self.d, None, &req).map_err(|e| fail(e.message))?;
        let c_short = c.id[..12].to_string();
        self.out.note(format!(" ---> Running in {c_short}\n")).await;
        let result = self.run_container(&c).await;
        // mount points the runtime made are not the step's changes
        super::runmount::remove_stubs(&self.d.containers.dir(&c).join("upper"), &prepared.stubs);
        drop(from_views);
        // failed steps too: a build leaves no container behind unless asked (--rm=false)
        let remove_now = self.opts.rm || self.opts.forcerm;
        let outcome = match result {
            Ok(0) => {
                let opts = self.commit_opts(st, created_by.clone());
                crate::commit::commit_changes(&self.d, &c, Some(parent), opts)
                    .await
                    .map_err(|e| fail(e.message))
            }
            Ok(code) => Err(Failure {
                message: format!(
                    "The command '{}' returned a non-zero code: {code}",
                    cmd.join(" ")
                ),
                code: Some(code),
            }),
            Err(e) => Err(e),
        };
        if remove_now {
            let _ = self
                .d
                .containers
                .remove_with(&c, true, true, &self.d.events)
                .await;
            if outcome.is_ok() {
                self.out
                    .note(format!("Removing intermediate container {c_short}\n"))
                    .await;
            }
        }
        drop(prepared);
        let id = outcome?;
        self.done(st, id, &key, &created_by).await
    }

    /// Starts a RUN container, streams its output, returns its exit code.
    async fn run_container(&self, c: &Arc<crate::model::Ctr>) -> Result<i64, Failure> {
        let mut rx = c.state.subscribe();
        self.d
            .containers
            .start(c, &self.d.events)
            .await
            .map_err(|e| fail(e.message))?;
        let path = self.d.containers.log_path(c);
        let mut reader = berth_runtime::logs::LogReader::new(&path);
        loop {
            let running = c.state().status == "running";
            for e in reader.read() {
                self.out.run_output(e.stream == "stderr", &e.log).await;
            }
            if !running {
                break;
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                _ = self.out.closed() => {
                    // canceled: the step's container goes (the caller removes it)
                    let _ = self.d.containers.kill(c, 9).await;
                    return Err(fail("the build was canceled: its client went away"));
                }
            }
        }
        let s = c.state();
        if !s.error.is_empty() {
            return Err(fail(s.error));
        }
        Ok(s.exit_code)
    }

    async fn copy_step(&mut self, st: &mut Stage, ins: &Instruction) -> Result<(), Failure> {
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
                if let Some(super::NamedContext::Dir(p)) = self.opts.named_contexts.get(f) {
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

/// The flags each instruction takes in Docker's classic builder (`--link` is accepted and
/// changes nothing here: every COPY writes a layer of its own).
/// Refuses flags the instruction does not take (`RUN --mount`, `--network` and
/// `--security` only in BuildKit builds).
fn check_flags(ins: &Instruction, buildkit: bool) -> Result<(), Failure> {
    let allowed: &[&str] = match ins.cmd.as_str() {
        "COPY" if buildkit => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "ADD" if buildkit => &["chown", "chmod", "link", "checksum", "exclude"],
        "COPY" => &["from", "chown", "chmod", "link"],
        "ADD" => &["chown", "chmod", "link", "checksum"],
        "FROM" => &["platform"],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    };
    for (name, _) in &ins.flags {
        if allowed.contains(&name.as_str()) {
            continue;
        }
        if ins.cmd == "RUN" && matches!(name.as_str(), "mount" | "network" | "security") && buildkit
        {
            continue;
        }
        if ins.cmd == "RUN" && matches!(name.as_str(), "mount" | "network" | "security") {
            return Err(fail(format!(
                "the --{name} option requires BuildKit; berth builds with Docker's classic builder"
            )));
        }
        return Err(fail(format!("Unknown flag: {name}")));
    }
    Ok(())
}

/// A step's image from a `--cache-from` image that shares the parent's layers and
/// history and whose next history entry is this step: the parent plus that image's next
/// layer (or none, for a config step), with this build's config.
fn from_sources(
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

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn file_meta(mode: u32, size: u64) -> Meta {
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
fn missing_dirs(tree: &Tree, path: &str, owner: Option<(u64, u64)>) -> Vec<(String, Meta)> {
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
fn owner(tree: &Tree, spec: &str) -> Result<(u64, u64), Failure> {
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
fn is_archive(ctx: &Context, path: &str) -> bool {
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
fn extract<W: io::Write>(
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
struct Download {
    name: String,
    file: std::fs::File,
    size: u64,
    /// `sha256:…` of the contents
    digest: String,
    /// from Last-Modified
    mtime: u64,
}

/// Downloads an ADD URL into a spill file under `tmp`, hashing it on the way.
async fn download(url: &str, tmp: &std::path::Path) -> Result<Download, Failure> {
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

/// Docker's text of a JSON-form argument list in history.
fn json_words(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn quote(s: &str) -> String {
    if s.is_empty()
        || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == '$')
    {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
        )
    } else {
        s.to_string()
    }
}

fn expose_ports(w: &str) -> Result<Vec<String>, Failure> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(fail(format!("invalid proto: {proto}")));
    }
    let bad = || fail(format!("invalid containerPort: {ports}"));
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if b < a {
        return Err(bad());
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

fn healthcheck(ins: &Instruction, text: &str) -> Result<Value, Failure> {
    let t = text.trim();
    let (kind, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    if kind.eq_ignore_ascii_case("NONE") {
        if !rest.trim().is_empty() || !ins.flags.is_empty() {
            return Err(fail("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(json!({"Test": ["NONE"]}));
    }
    if !kind.eq_ignore_ascii_case("CMD") {
        return Err(fail(format!(
            "Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"
        )));
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(fail("Missing command after HEALTHCHECK CMD"));
    }
    let test: Vec<String> = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
        Err(_) => vec!["CMD-SHELL".into(), rest.into()],
    };
    let mut hc = json!({"Test": test});
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = ins.flag(flag) {
            let n = berth_proto::duration::parse(v)
                .ok_or_else(|| fail(format!("time: invalid duration \"{v}\"")))?;
            hc[key] = Value::from(n);
        }
    }
    if let Some(v) = ins.flag("retries") {
        let n: i64 = v
            .parse()
            .map_err(|_| fail(format!("invalid retries: {v}")))?;
        hc["Retries"] = Value::from(n);
    }
    Ok(hc)
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
