//! Image commands: images, inspect, history, tag, rmi, prune, import, save, load.

use super::{filters_json, q, FormatArg};
use crate::client::{each_json_line, file_body, Client, DaemonError, ReqBody};
use crate::format::{go_time, human_size, indent_json, since, Format};
use crate::template::{row, Template};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short, long)]
    pub all: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub format: FormatArg,
    /// Only images of this repository (and tag)
    pub reference: Option<String>,
}

fn short_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        return id.to_string();
    }
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    h.chars().take(12).collect()
}

fn split_repo_tag(r: &str) -> (String, String) {
    let slash = r.rfind('/').map_or(0, |i| i + 1);
    match r[slash..].rfind(':') {
        Some(i) => (r[..slash + i].to_string(), r[slash + i + 1..].to_string()),
        None => (r.to_string(), "<none>".into()),
    }
}

pub async fn list(c: &Client, a: ListArgs) -> Result<()> {
    let mut filters = a.filter.clone();
    if let Some(r) = &a.reference {
        filters.push(format!("reference={r}"));
    }
    let mut path = format!("/images/json?all={}", a.all);
    if let Some(f) = filters_json(&filters)? {
        path.push_str(&format!("&filters={}", q(&f)));
    }
    let images = c.get_json(&path).await?;
    let mut rows = Vec::new();
    for img in images.as_array().into_iter().flatten() {
        let id = img["Id"].as_str().unwrap_or_default();
        let created = img["Created"].as_i64().unwrap_or(0);
        let size = img["Size"].as_i64().unwrap_or(0);
        let tags: Vec<&str> = img["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let digests: Vec<&str> = img["RepoDigests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut pairs: Vec<(String, String, String)> = Vec::new();
        for t in &tags {
            let (repo, tag) = split_repo_tag(t);
            let digest = digests
                .iter()
                .find(|d| d.split('@').next() == Some(repo.as_str()))
                .and_then(|d| d.split('@').nth(1))
                .unwrap_or("<none>");
            pairs.push((repo, tag, digest.to_string()));
        }
        if tags.is_empty() {
            if digests.is_empty() {
                pairs.push(("<none>".into(), "<none>".into(), "<none>".into()));
            }
            for d in &digests {
                let (repo, dg) = d.split_once('@').unwrap_or((d, "<none>"));
                pairs.push((repo.to_string(), "<none>".into(), dg.to_string()));
            }
        }
        for (repo, tag, digest) in pairs {
            rows.push(row(vec![
                (
                    "Containers",
                    json!(if img["Containers"].as_i64().unwrap_or(-1) < 0 {
                        "N/A".to_string()
                    } else {
                        img["Containers"].to_string()
                    }),
                ),
                ("CreatedAt", json!(go_time(created))),
                ("CreatedSince", json!(since(created))),
                ("Digest", json!(digest)),
                ("ID", json!(short_id(id, a.no_trunc))),
                ("Repository", json!(repo)),
                (
                    "SharedSize",
                    json!(if img["SharedSize"].as_i64().unwrap_or(-1) < 0 {
                        "N/A".to_string()
                    } else {
                        human_size(img["SharedSize"].as_i64().unwrap_or(0))
                    }),
                ),
                ("Size", json!(human_size(size))),
                ("Tag", json!(tag)),
                (
                    "UniqueSize",
                    json!(human_size(
                        size - img["SharedSize"].as_i64().unwrap_or(0).max(0)
                    )),
                ),
                ("VirtualSize", json!(human_size(size))),
            ]));
        }
    }
    let default = if a.digests {
        "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let fmt = if a.quiet {
        Format::Raw("{{.ID}}".into())
    } else {
        Format::new(a.format.format.as_deref(), default)
    };
    let headers = json!({
        "Containers": "CONTAINERS", "CreatedAt": "CREATED AT", "CreatedSince": "CREATED", "Digest": "DIGEST",
        "ID": "IMAGE ID", "Repository": "REPOSITORY", "SharedSize": "SHARED SIZE", "Size": "SIZE", "Tag": "TAG",
        "UniqueSize": "UNIQUE SIZE", "VirtualSize": "VIRTUAL SIZE",
    });
    let out = fmt.render(&rows, &headers)?;
    print!("{out}");
    Ok(())
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short, long)]
    pub size: bool,
    /// Only inspect objects of this type
    #[arg(long = "type")]
    pub kind: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImageInspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Prints inspect results as docker does: a JSON array, or one template rendering each.
pub fn print_inspected(objs: &[Value], format: Option<&str>) -> Result<()> {
    match format.filter(|f| !f.is_empty()) {
        None => println!("{}", indent_json(&Value::Array(objs.to_vec()))),
        Some("json") => {
            for o in objs {
                println!("{}", serde_json::to_string(o)?);
            }
        }
        Some(f) => {
            let t = Template::parse(&f.replace("\\n", "\n").replace("\\t", "\t"))?;
            let mut out = String::new();
            for o in objs {
                out.push_str(&t.render(o)?);
                out.push('\n');
            }
            print!("{out}");
        }
    }
    Ok(())
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<DaemonError>()
        .is_some_and(|d| d.status == StatusCode::NOT_FOUND)
}

pub async fn image_inspect(c: &Client, a: ImageInspectArgs) -> Result<()> {
    let paths: Vec<String> = a
        .images
        .iter()
        .map(|n| format!("/images/{n}/json"))
        .collect();
    inspect_paths(c, &paths, a.format.as_deref()).await
}

/// `X inspect`: each object's JSON, printed as docker does; the first error after the
/// objects that were found.
pub async fn inspect_paths(c: &Client, paths: &[String], format: Option<&str>) -> Result<()> {
    let mut objs = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match c.get_json(p).await {
            Ok(v) => objs.push(v),
            Err(e) => errors.push(e),
        }
    }
    if !objs.is_empty() || format.is_none() {
        print_inspected(&objs, format)?;
    }
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(())
}

pub async fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let kinds: Vec<&str> = match a.kind.as_deref() {
        None | Some("") => vec!["container", "image", "network", "volume"],
        Some(k @ ("container" | "image" | "network" | "volume")) => vec![k],
        Some(k @ ("config" | "node" | "plugin" | "secret" | "service" | "task")) => {
            vec![k]
        }
        Some(k) => bail!("\"{k}\" is not a valid value for --type"),
    };
    let mut objs = Vec::new();
    let mut missing = Vec::new();
    // with one type asked for, a name not found is the daemon's own error
    let mut first_error = None;
    for n in &a.names {
        let mut found = None;
        for k in &kinds {
            let path = match *k {
                "container" => format!("/containers/{n}/json?size={}", a.size),
                "image" => format!("/images/{n}/json"),
                "network" => format!("/networks/{}", super::q(n)),
                "volume" => format!("/volumes/{}", super::q(n)),
                _ => continue,
            };
            match c.get_json(&path).await {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(e) if is_not_found(&e) => {
                    if kinds.len() == 1 && first_error.is_none() {
                        first_error = Some(e);
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        match found {
            Some(v) => objs.push(v),
            None => missing.push(n.clone()),
        }
    }
    if !objs.is_empty() || a.format.is_none() {
        print_inspected(&objs, a.format.as_deref())?;
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if let Some(n) = missing.first() {
        return Err(anyhow!("No such object: {n}"));
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub human: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub format: FormatArg,
    pub image: String,
}

pub async fn history(c: &Client, a: HistoryArgs) -> Result<()> {
    let rows_in = c.get_json(&format!("/images/{}/history", a.image)).await?;
    let mut rows = Vec::new();
    for h in rows_in.as_array().into_iter().flatten() {
        let id = h["Id"].as_str().unwrap_or_default();
        let created = h["Created"].as_i64().unwrap_or(0);
        let mut by = h["CreatedBy"]
            .as_str()
            .unwrap_or_default()
            .replace('\t', " ");
        if !a.no_trunc && by.chars().count() > 45 {
            by = format!("{}…", by.chars().take(44).collect::<String>());
        }
        let size = h["Size"].as_i64().unwrap_or(0);
        rows.push(row(vec![
            (
                "ID",
                json!(if id == "<missing>" {
                    id.to_string()
                } else {
                    short_id(id, a.no_trunc)
                }),
            ),
            (
                "CreatedSince",
                json!(if a.human {
                    since(created)
                } else {
                    go_time(created)
                }),
            ),
            (
                "CreatedAt",
                json!(chrono::DateTime::from_timestamp(created, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default()),
            ),
            ("CreatedBy", json!(by)),
            (
                "Size",
                json!(if a.human {
                    human_size(size)
                } else {
                    size.to_string()
                }),
            ),
            ("Comment", json!(h["Comment"].as_str().unwrap_or_default())),
        ]));
    }
    let fmt = if a.quiet {
        Format::Raw("{{.ID}}".into())
    } else {
        Format::new(
            a.format.format.as_deref(),
            "{{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
        )
    };
    let headers = json!({"ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY", "Size": "SIZE", "Comment": "COMMENT"});
    print!("{}", fmt.render(&rows, &headers)?);
    Ok(())
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

pub async fn tag(c: &Client, a: TagArgs) -> Result<()> {
    let (repo, tag) = match a.target.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (a.target.clone(), String::new()),
    };
    let path = format!("/images/{}/tag?repo={}&tag={}", a.source, q(&repo), q(&tag));
    c.request(Method::POST, &path, ReqBody::Empty, &[]).await?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short, long)]
    pub force: bool,
    /// Do not delete untagged parents
    #[arg(long)]
    pub no_prune: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

fn print_deleted(items: &Value) {
    for it in items.as_array().into_iter().flatten() {
        if let Some(u) = it["Untagged"].as_str() {
            println!("Untagged: {u}");
        }
        if let Some(d) = it["Deleted"].as_str() {
            println!("Deleted: {d}");
        }
    }
}

pub async fn rmi(c: &Client, a: RmiArgs) -> Result<()> {
    super::for_each_name(&a.images, |img| async move {
        let path = format!("/images/{}?force={}&noprune={}", img, a.force, a.no_prune);
        print_deleted(&c.send_json(Method::DELETE, &path).await?);
        Ok(())
    })
    .await
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them."
    } else {
        "WARNING! This will remove all dangling images."
    };
    if !a.force && !super::confirm(&format!("{warning}\nAre you sure you want to continue?")) {
        return Ok(());
    }
    let (space, out) = run_prune(c, a.all, &a.filter).await?;
    super::print_pruned(&out, Some(space));
    Ok(())
}

/// Removes dangling (or, with `all`, unused) images: the space reclaimed and what
/// docker prints of it.
pub async fn run_prune(c: &Client, all: bool, filter: &[String]) -> Result<(i64, String)> {
    let mut filters = filter.to_vec();
    filters.push(format!("dangling={}", !all));
    let f = filters_json(&filters)?.unwrap_or_default();
    let report = c
        .send_json(Method::POST, &format!("/images/prune?filters={}", q(&f)))
        .await?;
    let mut out = String::new();
    let deleted = report["ImagesDeleted"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !deleted.is_empty() {
        out.push_str("Deleted Images:\n");
        for it in &deleted {
            if let Some(u) = it["Untagged"].as_str() {
                out.push_str(&format!("untagged: {u}\n"));
            }
            if let Some(d) = it["Deleted"].as_str() {
                out.push_str(&format!("deleted: {d}\n"));
            }
        }
    }
    Ok((report["SpaceReclaimed"].as_i64().unwrap_or(0), out))
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short, long)]
    pub message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// file|URL|- to import from
    pub file: String,
    pub reference: Option<String>,
}

/// Prints a JSON message stream as docker does; an error message fails the command.
async fn print_stream(resp: http::Response<hyper::body::Incoming>) -> Result<()> {
    let mut failure: Option<String> = None;
    each_json_line(resp, |m| {
        if let Some(e) = m["errorDetail"]["message"].as_str().or(m["error"].as_str()) {
            failure = Some(e.to_string());
        } else if let Some(s) = m["stream"].as_str() {
            print!("{s}");
        } else if let Some(s) = m["status"].as_str() {
            match m["id"].as_str() {
                Some(id) => println!("{id}: {s}"),
                None => println!("{s}"),
            }
        }
        Ok(())
    })
    .await?;
    if let Some(f) = failure {
        bail!(f);
    }
    Ok(())
}

pub async fn import(c: &Client, a: ImportArgs) -> Result<()> {
    if a.file.starts_with("http://") || a.file.starts_with("https://") {
        bail!("importing from a URL is not supported; download the file and import it");
    }
    let mut path = String::from("/images/create?fromSrc=-");
    if let Some(r) = &a.reference {
        path.push_str(&format!("&repo={}", q(r)));
    }
    if let Some(m) = &a.message {
        path.push_str(&format!("&message={}", q(m)));
    }
    if let Some(p) = &a.platform {
        path.push_str(&format!("&platform={}", q(p)));
    }
    for ch in &a.change {
        path.push_str(&format!("&changes={}", q(ch)));
    }
    let body = file_body(Some(&a.file))?;
    let resp = c
        .request(
            Method::POST,
            &path,
            body,
            &[("Content-Type", "application/x-tar".into())],
        )
        .await?;
    print_stream(resp).await
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    pub output: Option<String>,
    /// Save only the given platform variant
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(required = true)]
    pub images: Vec<String>,
}

pub async fn save(c: &Client, a: SaveArgs) -> Result<()> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let names: Vec<String> = a.images.iter().map(|n| format!("names={}", q(n))).collect();
    let resp = c
        .request(
            Method::GET,
            &format!("/images/get?{}", names.join("&")),
            ReqBody::Empty,
            &[],
        )
        .await?;
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow!("failed to save image: {p}: {e}"))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        if let Ok(d) = frame?.into_data() {
            out.write_all(&d)?;
        }
    }
    out.flush()?;
    Ok(())
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short, long)]
    pub input: Option<String>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
    /// Load only the given platform variant
    #[arg(long)]
    pub platform: Option<String>,
}

pub async fn load(c: &Client, a: LoadArgs) -> Result<()> {
    if a.input.is_none() && std::io::stdin().is_terminal() {
        bail!("requested load from stdin, but stdin is empty");
    }
    let body = file_body(a.input.as_deref())?;
    let resp = c
        .request(
            Method::POST,
            &format!("/images/load?quiet={}", a.quiet),
            body,
            &[("Content-Type", "application/x-tar".into())],
        )
        .await?;
    print_stream(resp).await
}
