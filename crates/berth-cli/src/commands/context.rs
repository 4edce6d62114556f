//! `berth context`: named daemons to talk to, stored as the docker CLI stores them
//! (`$DOCKER_CONFIG/contexts/meta/<sha256 of the name>/meta.json`, TLS files under
//! `contexts/tls/<sha256>/docker/`, the current one in config.json's `currentContext`),
//! so both CLIs share them. Which daemon a command talks to: `-H`, else `--context`,
//! else `BERTH_HOST`/`DOCKER_HOST` (the `default` context), else `DOCKER_CONTEXT`, else
//! the current context, else `default`.

use super::registry::{config_dir, read_config, write_config};
use crate::client::TlsOptions;
use crate::format::{indent_json, Format};
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub const DEFAULT: &str = "default";
const DEFAULT_DESCRIPTION: &str = "Current DOCKER_HOST based configuration";

#[derive(Debug, Subcommand)]
pub enum ContextCmd {
    /// Create a context
    Create(CreateArgs),
    /// List contexts
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Set the current context
    Use(UseArgs),
    /// Display detailed information on one or more contexts
    Inspect(InspectArgs),
    /// Remove one or more contexts
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Print the name of the current context
    Show,
    /// Update a context
    Update(UpdateArgs),
    /// Export a context to a tar archive FILE or a tar stream on STDOUT
    Export(ExportArgs),
    /// Import a context from a tar archive (FILE, or STDIN with "-")
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    pub name: String,
    /// where to write it: a file (default NAME.dockercontext), or "-" for STDOUT
    pub file: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub name: String,
    pub file: String,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Description of the context
    #[arg(long)]
    pub description: Option<String>,
    /// set the docker endpoint (host=…,ca=…,cert=…,key=…,skip-tls-verify=…)
    #[arg(long)]
    pub docker: Option<String>,
    /// create context from a named context
    #[arg(long)]
    pub from: Option<String>,
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Format output using a custom template ('table', 'table TEMPLATE', 'json', or a Go template)
    #[arg(long)]
    pub format: Option<String>,
    /// Only show context names
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct UseArgs {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of a context in use
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Description of the context
    #[arg(long)]
    pub description: Option<String>,
    /// set the docker endpoint
    #[arg(long)]
    pub docker: Option<String>,
    pub name: String,
}

/// The daemon a command talks to, and the context it came from.
pub struct Target {
    pub host: String,
    pub tls: Option<TlsOptions>,
    pub context: String,
}

fn key(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

fn meta_dir(name: &str) -> PathBuf {
    config_dir().join("contexts/meta").join(key(name))
}

fn tls_dir(name: &str) -> PathBuf {
    config_dir().join("contexts/tls").join(key(name))
}

/// A stored context's meta.json.
fn load(name: &str) -> Result<Value> {
    let path = meta_dir(name).join("meta.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow!(
            "context {name:?}: context not found: open {}: {}",
            path.display(),
            io_words(&e)
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// An I/O error as Go words it.
fn io_words(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn exists(name: &str) -> bool {
    meta_dir(name).join("meta.json").is_file()
}

/// The `default` context: the environment's host.
fn default_meta() -> Value {
    json!({
        "Name": DEFAULT,
        "Metadata": {},
        "Endpoints": {"docker": {"Host": crate::host_of(None), "SkipTLSVerify": false}},
    })
}

fn meta_of(name: &str) -> Result<Value> {
    if name == DEFAULT {
        Ok(default_meta())
    } else {
        load(name)
    }
}

/// The TLS files a context may hold, as the docker CLI names them.
const TLS_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

/// The TLS files stored with a context, by name.
fn tls_files(name: &str) -> Vec<&'static str> {
    let dir = tls_dir(name).join("docker");
    TLS_FILES
        .into_iter()
        .filter(|f| dir.join(f).is_file())
        .collect()
}

/// The TLS files stored with a context, with their contents.
fn stored_tls(name: &str) -> Vec<(&'static str, Vec<u8>)> {
    let dir = tls_dir(name).join("docker");
    TLS_FILES
        .into_iter()
        .filter_map(|f| Some((f, std::fs::read(dir.join(f)).ok()?)))
        .collect()
}

/// Which context is current when `flag` (`--context`) is not given.
pub fn current_name(flag: Option<&str>, host_flag: bool) -> String {
    if let Some(c) = flag {
        return c.to_string();
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if host_flag || env("BERTH_HOST").is_some() || env("DOCKER_HOST").is_some() {
        return DEFAULT.into();
    }
    if let Some(c) = env("DOCKER_CONTEXT") {
        return c;
    }
    read_config()["currentContext"]
        .as_str()
        .filter(|c| !c.is_empty())
        .unwrap_or(DEFAULT)
        .to_string()
}

/// The daemon to talk to, given `-H` and `--context`.
pub fn resolve(host_flag: Option<&str>, context_flag: Option<&str>) -> Result<Target> {
    if host_flag.is_some() && context_flag.is_some() {
        bail!("conflicting options: cannot specify both --host and --context");
    }
    let name = current_name(context_flag, host_flag.is_some());
    if name == DEFAULT {
        return Ok(Target {
            host: crate::host_of(host_flag),
            tls: None,
            context: name,
        });
    }
    let meta = load(&name)
        .map_err(|e| anyhow!("Failed to initialize: unable to resolve docker endpoint: {e}"))?;
    let ep = &meta["Endpoints"]["docker"];
    let host = ep["Host"].as_str().unwrap_or_default().to_string();
    let files = tls_files(&name);
    let tls = (!files.is_empty() || host.starts_with("https://")).then(|| {
        let file = |f: &'static str| {
            files
                .contains(&f)
                .then(|| tls_dir(&name).join("docker").join(f))
        };
        TlsOptions {
            tls: true,
            verify: !ep["SkipTLSVerify"].as_bool().unwrap_or(false),
            ca: file("ca.pem"),
            cert: file("cert.pem"),
            key: file("key.pem"),
        }
    });
    Ok(Target {
        host,
        tls,
        context: name,
    })
}

fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    if !first_ok
        || rest.is_empty()
        || !rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(*c))
    {
        bail!(
            "context name {name:?} is invalid, names are validated against regexp \"^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$\""
        );
    }
    if name == DEFAULT {
        bail!("\"default\" is a reserved context name");
    }
    Ok(())
}

/// A `--docker` endpoint: its host, skip-tls-verify, and the TLS files to copy.
#[derive(Debug)]
struct EndpointSpec {
    host: Option<String>,
    skip_tls_verify: bool,
    files: Vec<(&'static str, PathBuf)>,
}

fn parse_endpoint(spec: &str) -> Result<EndpointSpec> {
    let words = |e: anyhow::Error| anyhow!("unable to create docker endpoint config: {e}");
    let mut ep = EndpointSpec {
        host: None,
        skip_tls_verify: false,
        files: Vec::new(),
    };
    for part in spec.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "host" => {
                check_host(v).map_err(words)?;
                ep.host = Some(v.to_string()).filter(|h| !h.is_empty());
            }
            "skip-tls-verify" => {
                ep.skip_tls_verify = matches!(v, "true" | "1" | "t" | "T" | "TRUE" | "True")
            }
            "ca" | "cert" | "key" => {
                let path = PathBuf::from(v);
                std::fs::metadata(&path)
                    .map_err(|e| anyhow!("open {v}: {}", io_words(&e)))
                    .map_err(words)?;
                let file = match k {
                    "ca" => "ca.pem",
                    "cert" => "cert.pem",
                    _ => "key.pem",
                };
                ep.files.push((file, path));
            }
            _ => return Err(words(anyhow!("unrecognized config key: {k}"))),
        }
    }
    Ok(ep)
}

/// A host given as a URL (`scheme://…`), as the docker CLI accepts it; empty is the
/// environment's host.
fn check_host(host: &str) -> Result<()> {
    match host.split_once("://") {
        _ if host.is_empty() => Ok(()),
        Some((scheme, _))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            Ok(())
        }
        _ => bail!("unable to apply docker endpoint options: unable to parse docker host `{host}`"),
    }
}

/// Writes a context: its meta.json and, when given, its TLS files (replacing the old ones).
fn store(name: &str, meta: &Value, files: Option<Vec<(&'static str, Vec<u8>)>>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = meta_dir(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)?;
    let tmp = dir.join(".meta.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(meta)?)?;
    std::fs::rename(&tmp, dir.join("meta.json"))?;
    if let Some(files) = files {
        let tls = tls_dir(name);
        let _ = std::fs::remove_dir_all(&tls);
        if !files.is_empty() {
            let d = tls.join("docker");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)?;
            for (f, data) in files {
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(if f == "key.pem" { 0o600 } else { 0o644 })
                    .open(d.join(f))?;
                std::io::Write::write_all(&mut out, &data)?;
            }
        }
    }
    Ok(())
}

fn read_files(ep: &EndpointSpec) -> Result<Vec<(&'static str, Vec<u8>)>> {
    ep.files
        .iter()
        .map(|(f, p)| {
            std::fs::read(p)
                .map(|d| (*f, d))
                .map_err(|e| anyhow!("open {}: {}", p.display(), io_words(&e)))
        })
        .collect()
}

fn create(a: CreateArgs, current: &str) -> Result<()> {
    check_name(&a.name)?;
    if exists(&a.name) {
        bail!("context {:?} already exists", a.name);
    }
    let (meta, files) = match &a.docker {
        Some(spec) => {
            let ep = parse_endpoint(spec)?;
            let host = ep.host.clone().unwrap_or_else(|| crate::host_of(None));
            let mut metadata = json!({});
            if let Some(d) = &a.description {
                metadata["Description"] = json!(d);
            }
            let meta = json!({
                "Name": a.name,
                "Metadata": metadata,
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": ep.skip_tls_verify}},
            });
            (meta, read_files(&ep)?)
        }
        None => {
            // the endpoint (and description) of the context named, else the current one
            let from = a.from.as_deref().unwrap_or(current);
            let mut meta = meta_of(from)?;
            if from == DEFAULT {
                meta["Metadata"]["Description"] = json!(DEFAULT_DESCRIPTION);
            }
            meta["Name"] = json!(a.name);
            if let Some(d) = &a.description {
                meta["Metadata"]["Description"] = json!(d);
            }
            (meta, stored_tls(from))
        }
    };
    store(&a.name, &meta, Some(files))?;
    println!("{}", a.name);
    eprintln!("Successfully created context {:?}", a.name);
    Ok(())
}

fn update(a: UpdateArgs) -> Result<()> {
    check_name(&a.name)?;
    let mut meta = load(&a.name)?;
    if let Some(d) = &a.description {
        meta["Metadata"]["Description"] = json!(d);
    }
    let mut files = None;
    if let Some(spec) = &a.docker {
        let ep = parse_endpoint(spec)?;
        let old = &meta["Endpoints"]["docker"];
        let host = ep
            .host
            .clone()
            .or_else(|| old["Host"].as_str().map(str::to_string))
            .unwrap_or_else(|| crate::host_of(None));
        meta["Endpoints"]["docker"] = json!({"Host": host, "SkipTLSVerify": ep.skip_tls_verify});
        files = Some(read_files(&ep)?);
    }
    store(&a.name, &meta, files)?;
    println!("{}", a.name);
    eprintln!("Successfully updated context {:?}", a.name);
    Ok(())
}

/// Every context: `default` and the stored ones, by name.
fn all() -> Vec<Value> {
    let mut out = vec![default_meta()];
    if let Ok(d) = std::fs::read_dir(config_dir().join("contexts/meta")) {
        for e in d.flatten() {
            if let Some(v) = std::fs::read_to_string(e.path().join("meta.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                out.push(v);
            }
        }
    }
    out.sort_by(|a, b| a["Name"].as_str().cmp(&b["Name"].as_str()));
    out
}

fn warn_if_overridden(current: &str) {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty());
    let configured = read_config()["currentContext"]
        .as_str()
        .is_some_and(|c| !c.is_empty() && c != DEFAULT);
    if current == DEFAULT && configured && (set("DOCKER_HOST") || set("BERTH_HOST")) {
        eprintln!(
            "Warning: DOCKER_HOST environment variable overrides the active context. To use a context, either set the global --context flag, or unset DOCKER_HOST environment variable."
        );
    }
}

fn list(a: LsArgs, current: &str) -> Result<()> {
    let rows: Vec<Value> = all()
        .into_iter()
        .map(|m| {
            let name = m["Name"].as_str().unwrap_or_default().to_string();
            let description = if name == DEFAULT {
                DEFAULT_DESCRIPTION.to_string()
            } else {
                m["Metadata"]["Description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            };
            json!({
                "Name": name,
                "Current": name == current,
                "Description": description,
                "DockerEndpoint": m["Endpoints"]["docker"]["Host"].as_str().unwrap_or_default(),
                "Error": "",
            })
        })
        .collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r["Name"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let fmt = Format::new(
        a.format.as_deref(),
        "{{.Name}}{{if .Current}} *{{end}}\t{{.Description}}\t{{.DockerEndpoint}}\t{{.Error}}",
    );
    let headers = json!({"Name": "NAME", "Current": false, "Description": "DESCRIPTION",
        "DockerEndpoint": "DOCKER ENDPOINT", "Error": "ERROR"});
    print!("{}", fmt.render(&rows, &headers)?);
    warn_if_overridden(current);
    Ok(())
}

fn use_context(a: UseArgs) -> Result<()> {
    if a.name != DEFAULT {
        check_name(&a.name)?;
        load(&a.name)?;
    }
    let mut cfg = read_config();
    if a.name == DEFAULT {
        if let Some(m) = cfg.as_object_mut() {
            m.remove("currentContext");
        }
    } else {
        cfg["currentContext"] = json!(a.name);
    }
    write_config(&cfg)?;
    println!("{}", a.name);
    eprintln!("Current context is now {:?}", a.name);
    warn_if_overridden(DEFAULT);
    Ok(())
}

fn inspect(a: InspectArgs, current: &str) -> Result<()> {
    let names = if a.names.is_empty() {
        vec![current.to_string()]
    } else {
        a.names
    };
    let mut out = Vec::new();
    for n in &names {
        let mut m = meta_of(n)?;
        let (tls_material, storage) = if n == DEFAULT {
            (
                json!({}),
                json!({"MetadataPath": "<IN MEMORY>", "TLSPath": "<IN MEMORY>"}),
            )
        } else {
            let files = tls_files(n);
            (
                if files.is_empty() {
                    json!({})
                } else {
                    json!({ "docker": files })
                },
                json!({
                    "MetadataPath": meta_dir(n).display().to_string(),
                    "TLSPath": tls_dir(n).display().to_string(),
                }),
            )
        };
        m["TLSMaterial"] = tls_material;
        m["Storage"] = storage;
        out.push(m);
    }
    match a.format.as_deref() {
        None | Some("") => println!("{}", indent_json(&Value::Array(out))),
        Some(f) => {
            let fmt = Format::new(Some(f), "");
            print!("{}", fmt.render(&out, &json!({}))?);
        }
    }
    Ok(())
}

fn remove(a: RmArgs, current: &str) -> Result<()> {
    let configured = read_config()["currentContext"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut failed = Vec::new();
    for n in &a.names {
        if n == DEFAULT {
            failed.push("default: context \"default\" cannot be removed".to_string());
            continue;
        }
        if !exists(n) {
            failed.push(format!("context {n:?} does not exist"));
            continue;
        }
        if (n == current || *n == configured) && !a.force {
            failed.push(format!(
                "context {n:?} is in use, set -f flag to force remove"
            ));
            continue;
        }
        if *n == configured {
            let mut cfg = read_config();
            if let Some(m) = cfg.as_object_mut() {
                m.remove("currentContext");
            }
            write_config(&cfg)?;
        }
        std::fs::remove_dir_all(meta_dir(n))?;
        let _ = std::fs::remove_dir_all(tls_dir(n));
        println!("{n}");
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// Runs a `context` command; `current` is the context in use.
pub fn run(cmd: ContextCmd, current: &str) -> Result<()> {
    match cmd {
        ContextCmd::Create(a) => create(a, current),
        ContextCmd::Ls(a) => list(a, current),
        ContextCmd::Use(a) => use_context(a),
        ContextCmd::Inspect(a) => inspect(a, current),
        ContextCmd::Rm(a) => remove(a, current),
        ContextCmd::Show => {
            println!("{current}");
            Ok(())
        }
        ContextCmd::Update(a) => update(a),
        ContextCmd::Export(a) => export(a),
        ContextCmd::Import(a) => import(a),
    }
}

/// `context export`: the docker CLI's archive (meta.json, then tls/docker/*.pem).
fn export(a: ExportArgs) -> Result<()> {
    check_name(&a.name)?;
    let meta = load(&a.name)?;
    let mut ar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, mode: u32, data: &[u8], dir: bool| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(if dir {
            tar::EntryType::Directory
        } else {
            tar::EntryType::Regular
        });
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        ar.append_data(&mut h, path, data)?;
        Ok(())
    };
    add("meta.json", 0o644, &serde_json::to_vec(&meta)?, false)?;
    let files = stored_tls(&a.name);
    if !files.is_empty() {
        add("tls", 0o700, &[], true)?;
        add("tls/docker", 0o700, &[], true)?;
        for (f, data) in files {
            add(&format!("tls/docker/{f}"), 0o600, &data, false)?;
        }
    }
    let bytes = ar.into_inner()?;
    match a.file.as_deref() {
        Some("-") => std::io::Write::write_all(&mut std::io::stdout().lock(), &bytes)?,
        other => {
            let path = other
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}.dockercontext", a.name));
            std::fs::write(&path, bytes)?;
            eprintln!("Written file {path:?}");
        }
    }
    Ok(())
}

/// `context import`: a `context export` archive stored under a new name.
fn import(a: ImportArgs) -> Result<()> {
    check_name(&a.name)?;
    if exists(&a.name) {
        bail!("context {:?} already exists", a.name);
    }
    let data = if a.file == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)?;
        b
    } else {
        std::fs::read(&a.file).map_err(|e| anyhow!("open {}: {}", a.file, io_words(&e)))?
    };
    let mut meta = None;
    let mut files = Vec::new();
    let mut ar = tar::Archive::new(std::io::Cursor::new(data));
    let entries = ar.entries().map_err(|e| anyhow!("invalid context: {e}"))?;
    for e in entries {
        let mut e = match e {
            Ok(e) => e,
            // the docker CLI's archives end without the end-of-archive blocks
            Err(err)
                if err.kind() == std::io::ErrorKind::UnexpectedEof
                    || err.to_string().contains("unexpected EOF") =>
            {
                break
            }
            Err(err) => bail!("invalid context: {err}"),
        };
        let path = e.path()?.to_string_lossy().into_owned();
        let mut body = Vec::new();
        if e.header().entry_type().is_file() {
            std::io::Read::read_to_end(&mut e, &mut body)?;
        }
        let path = path.trim_start_matches("./");
        if path == "meta.json" {
            meta = Some(serde_json::from_slice::<Value>(&body)?);
        } else if let Some(f) = path
            .strip_prefix("tls/docker/")
            .and_then(|f| TLS_FILES.into_iter().find(|x| *x == f))
        {
            files.push((f, body));
        }
    }
    let mut meta = meta.ok_or_else(|| anyhow!("invalid context: no metadata found"))?;
    meta["Name"] = json!(a.name);
    store(&a.name, &meta, Some(files))?;
    println!("{}", a.name);
    eprintln!("Successfully imported context {:?}", a.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_docker_checks_them() {
        assert!(check_name("one").is_ok());
        assert!(check_name("a.b_c+d-e").is_ok());
        assert!(check_name("a").is_err());
        assert!(check_name("-ab").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("default")
            .unwrap_err()
            .to_string()
            .contains("reserved"));
    }

    #[test]
    fn context_keys_are_sha256_of_the_name() {
        assert_eq!(
            key("one"),
            "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
        );
    }

    #[test]
    fn endpoints() {
        let ep = parse_endpoint("host=ssh://me@h:22/run/b.sock,skip-tls-verify=true").unwrap();
        assert_eq!(ep.host.as_deref(), Some("ssh://me@h:22/run/b.sock"));
        assert!(ep.skip_tls_verify);
        assert!(parse_endpoint("foo=bar")
            .unwrap_err()
            .to_string()
            .contains("unrecognized config key: foo"));
        assert!(parse_endpoint("host=tcp://h:1,ca=/nonexistent/ca.pem")
            .unwrap_err()
            .to_string()
            .contains("open /nonexistent/ca.pem: no such file or directory"));
        assert!(parse_endpoint("host=nothing").is_err());
    }
}
