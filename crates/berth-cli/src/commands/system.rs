//! version, info, events, system df.

use super::{filters_json, q, FormatArg};
use crate::client::{each_json_line, Client, ReqBody};
use crate::format::{human_size_prec, Format};
use crate::template::{row, Template};
use anyhow::{anyhow, Result};
use clap::Args;
use http::Method;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
}

pub async fn version(c: &Client, a: VersionArgs) -> Result<()> {
    let client = json!({
        "Platform": {"Name": ""},
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": format!("{}.{}", crate::client::CLIENT_API_VERSION.0, crate::client::CLIENT_API_VERSION.1),
        "APIVersion": format!("{}.{}", crate::client::CLIENT_API_VERSION.0, crate::client::CLIENT_API_VERSION.1),
        "GoVersion": "rust",
        "GitCommit": option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown"),
        "Os": "linux",
        "Arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "Context": c.context,
    });
    let server = c.get_json("/version").await;
    if let Some(f) = a.format.as_deref().filter(|f| !f.is_empty()) {
        // the docker CLI's template data uses Go field names (APIVersion)
        let server_v = server.as_ref().ok().map(|s| {
            let mut s = s.clone();
            if let Some(v) = s.get("ApiVersion").cloned() {
                s["APIVersion"] = v;
            }
            s
        });
        let data = json!({"Client": client, "Server": server_v});
        let t = if f == "json" {
            "{{json .}}".to_string()
        } else {
            f.to_string()
        };
        println!("{}", Template::parse(&t)?.render(&data)?);
        return server.map(|_| ());
    }
    println!("Client:");
    println!(
        " Version:           {}",
        client["Version"].as_str().unwrap_or_default()
    );
    println!(
        " API version:       {}",
        client["ApiVersion"].as_str().unwrap_or_default()
    );
    println!(" Go version:        rust");
    println!(
        " Git commit:        {}",
        client["GitCommit"].as_str().unwrap_or_default()
    );
    println!(
        " OS/Arch:           linux/{}",
        client["Arch"].as_str().unwrap_or_default()
    );
    println!(" Context:           {}", c.context);
    let s = server?;
    println!();
    println!(
        "Server: {}",
        s["Platform"]["Name"].as_str().unwrap_or_default()
    );
    for comp in s["Components"].as_array().into_iter().flatten() {
        let d = &comp["Details"];
        println!(" {}:", comp["Name"].as_str().unwrap_or_default());
        println!(
            "  Version:          {}",
            comp["Version"].as_str().unwrap_or_default()
        );
        if comp["Name"] == "Engine" {
            println!(
                "  API version:      {} (minimum version {})",
                d["ApiVersion"].as_str().unwrap_or_default(),
                d["MinAPIVersion"].as_str().unwrap_or_default()
            );
            println!(
                "  Go version:       {}",
                d["GoVersion"].as_str().unwrap_or_default()
            );
            println!(
                "  Git commit:       {}",
                d["GitCommit"].as_str().unwrap_or_default()
            );
            println!(
                "  Built:            {}",
                d["BuildTime"].as_str().unwrap_or_default()
            );
            println!(
                "  OS/Arch:          {}/{}",
                d["Os"].as_str().unwrap_or_default(),
                d["Arch"].as_str().unwrap_or_default()
            );
            println!(
                "  Experimental:     {}",
                d["Experimental"].as_str().unwrap_or("false")
            );
        }
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
}

pub async fn info(c: &Client, a: InfoArgs) -> Result<()> {
    let i = c.get_json("/info").await?;
    if let Some(f) = a.format.as_deref().filter(|f| !f.is_empty()) {
        let t = if f == "json" {
            "{{json .}}".to_string()
        } else {
            f.to_string()
        };
        println!("{}", Template::parse(&t)?.render(&i)?);
        return Ok(());
    }
    let s = |k: &str| match &i[k] {
        Value::String(x) => x.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(" Context:    {}", c.context);
    println!(" Debug Mode: false");
    println!();
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    for kv in i["DriverStatus"].as_array().into_iter().flatten() {
        println!(
            "  {}: {}",
            kv[0].as_str().unwrap_or_default(),
            kv[1].as_str().unwrap_or_default()
        );
    }
    println!(" Logging Driver: {}", s("LoggingDriver"));
    println!(" Cgroup Driver: {}", s("CgroupDriver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    println!(
        " Swarm: {}",
        i["Swarm"]["LocalNodeState"].as_str().unwrap_or("inactive")
    );
    println!(
        " Runtimes: {}",
        i["Runtimes"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    println!(" Default Runtime: {}", s("DefaultRuntime"));
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: {}", s("OSType"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(
        " Total Memory: {}",
        crate::format::human_size_prec(i["MemTotal"].as_f64().unwrap_or(0.0), 4)
    );
    println!(" Name: {}", s("Name"));
    println!(" ID: {}", s("ID"));
    println!(" Docker Root Dir: {}", s("DockerRootDir"));
    println!(" Debug Mode: {}", s("Debug"));
    let labels: Vec<&str> = i["Labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !labels.is_empty() {
        println!(" Labels:");
        for l in labels {
            println!("  {l}");
        }
    }
    println!(" Experimental: {}", s("ExperimentalBuild"));
    println!(" Live Restore Enabled: {}", s("LiveRestoreEnabled"));
    for w in i["Warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        eprintln!("{w}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Show all events created since timestamp
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    pub until: Option<String>,
    /// Filter output based on conditions provided
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

/// Relative durations (`10m`, `1h30m`) become unix timestamps, as the docker CLI sends.
fn event_time(s: &str) -> Result<String> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut relative = false;
    let mut ok = !s.is_empty();
    for ch in s.chars() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let n: f64 = num.parse().unwrap_or(f64::NAN);
        num.clear();
        let mult = match ch {
            'h' => 3600.0,
            'm' => 60.0,
            's' => 1.0,
            _ => f64::NAN,
        };
        if n.is_nan() || mult.is_nan() {
            ok = false;
            break;
        }
        total += n * mult;
        relative = true;
    }
    if ok && relative && num.is_empty() {
        let t = chrono::Utc::now().timestamp() as f64 - total;
        return Ok(format!("{}", t as i64));
    }
    if s.parse::<f64>().is_ok() {
        return Ok(s.to_string());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(format!(
            "{}.{:09}",
            t.timestamp(),
            t.timestamp_subsec_nanos()
        ));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp().to_string())
            .unwrap_or_default());
    }
    Err(anyhow!("invalid timestamp {s:?}"))
}

pub async fn events(c: &Client, a: EventsArgs) -> Result<()> {
    let mut path = String::from("/events?");
    let mut parts = Vec::new();
    if let Some(s) = &a.since {
        parts.push(format!("since={}", q(&event_time(s)?)));
    }
    if let Some(u) = &a.until {
        parts.push(format!("until={}", q(&event_time(u)?)));
    }
    if let Some(f) = filters_json(&a.filter)? {
        parts.push(format!("filters={}", q(&f)));
    }
    path.push_str(&parts.join("&"));
    let resp = c.request(Method::GET, &path, ReqBody::Empty, &[]).await?;
    let tpl = match a.format.as_deref().filter(|f| !f.is_empty()) {
        Some("json") => Some(Template::parse("{{json .}}")?),
        Some(f) => Some(Template::parse(f)?),
        None => None,
    };
    each_json_line(resp, |e| {
        use std::io::Write;
        let line = match &tpl {
            Some(t) => t.render(e)?,
            None => {
                let nanos = e["timeNano"].as_i64().unwrap_or(0);
                let t = chrono::DateTime::from_timestamp(
                    nanos / 1_000_000_000,
                    (nanos % 1_000_000_000) as u32,
                )
                .unwrap_or_default();
                let mut attrs: Vec<(String, String)> = e["Actor"]["Attributes"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                attrs.sort();
                let attrs = attrs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut l = format!(
                    "{} {} {} {}",
                    t.format("%Y-%m-%dT%H:%M:%S.%9fZ"),
                    e["Type"].as_str().unwrap_or_default(),
                    e["Action"].as_str().unwrap_or_default(),
                    e["Actor"]["ID"].as_str().unwrap_or_default()
                );
                if !attrs.is_empty() {
                    l.push_str(&format!(" ({attrs})"));
                }
                l
            }
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    })
    .await
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Show detailed information on space usage
    #[arg(short, long)]
    pub verbose: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

pub async fn df(c: &Client, a: DfArgs) -> Result<()> {
    let d = c.get_json("/system/df").await?;
    let hs = |n: i64| human_size_prec(n as f64, 4);
    let images = d["Images"].as_array().cloned().unwrap_or_default();
    let total = images.len();
    let active = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .count();
    let size = d["LayersSize"].as_i64().unwrap_or(0);
    let reclaimable: i64 = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) == 0)
        .map(|i| i["Size"].as_i64().unwrap_or(0) - i["SharedSize"].as_i64().unwrap_or(0).max(0))
        .sum::<i64>()
        .min(size);
    let pct = if size > 0 {
        format!(" ({}%)", reclaimable * 100 / size)
    } else {
        String::new()
    };
    let count = |k: &str| d[k].as_array().map(|a| a.len()).unwrap_or(0);
    let cache_size: i64 = d["BuildCache"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["Size"].as_i64().unwrap_or(0))
        .sum();
    let rows = vec![
        row(vec![
            ("Type", json!("Images")),
            ("TotalCount", json!(total.to_string())),
            ("Active", json!(active.to_string())),
            ("Size", json!(hs(size))),
            ("Reclaimable", json!(format!("{}{pct}", hs(reclaimable)))),
        ]),
        row(vec![
            ("Type", json!("Containers")),
            ("TotalCount", json!(count("Containers").to_string())),
            ("Active", json!("0")),
            ("Size", json!(hs(0))),
            ("Reclaimable", json!(hs(0))),
        ]),
        row(vec![
            ("Type", json!("Local Volumes")),
            ("TotalCount", json!(count("Volumes").to_string())),
            ("Active", json!("0")),
            ("Size", json!(hs(0))),
            ("Reclaimable", json!(hs(0))),
        ]),
        row(vec![
            ("Type", json!("Build Cache")),
            ("TotalCount", json!(count("BuildCache").to_string())),
            ("Active", json!("0")),
            ("Size", json!(hs(cache_size))),
            ("Reclaimable", json!(hs(cache_size))),
        ]),
    ];
    let headers = json!({"Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE"});
    let fmt = Format::new(
        a.format.format.as_deref(),
        "{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
    );
    print!("{}", fmt.render(&rows, &headers)?);
    if a.verbose {
        println!("\nImages space usage:\n");
        let mut irows = Vec::new();
        for i in &images {
            let tags: Vec<&str> = i["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let (repo, tag) = tags
                .first()
                .and_then(|t| t.rsplit_once(':'))
                .unwrap_or(("<none>", "<none>"));
            let id = i["Id"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches("sha256:")
                .chars()
                .take(12)
                .collect::<String>();
            irows.push(row(vec![
                ("Repository", json!(repo)),
                ("Tag", json!(tag)),
                ("ID", json!(id)),
                (
                    "CreatedSince",
                    json!(crate::format::since(i["Created"].as_i64().unwrap_or(0))),
                ),
                ("Size", json!(hs(i["Size"].as_i64().unwrap_or(0)))),
                (
                    "SharedSize",
                    json!(hs(i["SharedSize"].as_i64().unwrap_or(0).max(0))),
                ),
                (
                    "UniqueSize",
                    json!(hs(i["Size"].as_i64().unwrap_or(0)
                        - i["SharedSize"].as_i64().unwrap_or(0).max(0))),
                ),
                (
                    "Containers",
                    json!(i["Containers"].as_i64().unwrap_or(0).to_string()),
                ),
            ]));
        }
        let h = json!({"Repository": "REPOSITORY", "Tag": "TAG", "ID": "IMAGE ID", "CreatedSince": "CREATED", "Size": "SIZE", "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE", "Containers": "CONTAINERS"});
        print!("{}", Format::Table("{{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}".into()).render(&irows, &h)?);
        println!("\nBuild cache usage: {}\n", hs(cache_size));
        let time = |v: &Value| {
            v.as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| crate::format::since(t.timestamp()))
                .unwrap_or_default()
        };
        let crows: Vec<Value> = d["BuildCache"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let id: String = c["ID"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(12)
                    .collect();
                row(vec![
                    ("ID", json!(id)),
                    ("CacheType", c["Type"].clone()),
                    ("Size", json!(hs(c["Size"].as_i64().unwrap_or(0)))),
                    ("CreatedSince", json!(time(&c["CreatedAt"]))),
                    ("LastUsedSince", json!(time(&c["LastUsedAt"]))),
                    (
                        "UsageCount",
                        json!(c["UsageCount"].as_i64().unwrap_or(0).to_string()),
                    ),
                    (
                        "Shared",
                        json!(c["Shared"].as_bool().unwrap_or(false).to_string()),
                    ),
                ])
            })
            .collect();
        let h = json!({"ID": "CACHE ID", "CacheType": "CACHE TYPE", "Size": "SIZE", "CreatedSince": "CREATED", "LastUsedSince": "LAST USED", "UsageCount": "USAGE", "Shared": "SHARED"});
        print!(
            "{}",
            Format::Table(
                "{{.ID}}\t{{.CacheType}}\t{{.Size}}\t{{.CreatedSince}}\t{{.LastUsedSince}}\t{{.UsageCount}}\t{{.Shared}}".into()
            )
            .render(&crows, &h)?
        );
    }
    Ok(())
}

/// `system dial-stdio`: one connection to the daemon, carried over stdin and stdout
/// (what an `ssh://` host runs at the remote end). The end of stdin closes the
/// connection's write side; the daemon closing it ends the command.
pub async fn dial_stdio(c: &Client) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let conn = c.connect().await?;
    let (mut from_daemon, mut to_daemon) = tokio::io::split(conn);
    let upstream = tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut to_daemon).await;
        let _ = to_daemon.shutdown().await;
    });
    let mut stdout = tokio::io::stdout();
    let copied = tokio::io::copy(&mut from_daemon, &mut stdout).await;
    let _ = stdout.flush().await;
    upstream.abort();
    copied.map(|_| ()).map_err(|e| anyhow!("dial-stdio: {e}"))
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long)]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    pub volumes: bool,
}

/// The question `system prune` asks before it removes anything.
fn prune_warning(a: &PruneArgs) -> String {
    let mut warnings = vec![
        "all stopped containers",
        "all networks not used by at least one container",
    ];
    if a.volumes {
        warnings.push("all anonymous volumes not used by at least one container");
    }
    warnings.push(if a.all {
        "all images without at least one container associated to them"
    } else {
        "all dangling images"
    });
    warnings.push(if a.all {
        "all build cache"
    } else {
        "unused build cache"
    });
    let mut text = String::from("WARNING! This will remove:");
    for w in warnings {
        text.push_str(&format!("\n  - {w}"));
    }
    text.push('\n');
    let mut filters: Vec<&String> = a
        .filter
        .iter()
        .filter(|f| {
            ["label=", "label!=", "until="]
                .iter()
                .any(|k| f.starts_with(k))
        })
        .collect();
    filters.sort();
    if !filters.is_empty() {
        text.push_str("\n  Items to be pruned will be filtered with:");
        for f in filters {
            text.push_str(&format!("\n  - {f}"));
        }
        text.push('\n');
    }
    text.push_str("\nAre you sure you want to continue?");
    text
}

/// `system prune`: stopped containers, unused networks, (anonymous volumes,) dangling or
/// unused images and the build cache, each reported as its own prune reports it.
pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    if a.volumes && a.filter.iter().any(|f| f.starts_with("until=")) {
        eprintln!("ERROR: The \"until\" filter is not supported with \"--volumes\"");
        return Err(crate::Exit(1).into());
    }
    if !a.force && !super::confirm(&prune_warning(&a)) {
        return Ok(());
    }
    let mut space = 0i64;
    let show = |out: String| {
        if !out.is_empty() {
            println!("{out}");
        }
    };
    let (s, out) = super::containers::run_prune(c, &a.filter).await?;
    space += s;
    show(out);
    show(super::network::run_prune(c, &a.filter).await?);
    if a.volumes {
        let (s, out) = super::volume::run_prune(c, false, &a.filter).await?;
        space += s;
        show(out);
    }
    let (s, out) = super::images::run_prune(c, a.all, &a.filter).await?;
    space += s;
    show(out);
    let (s, out) = super::build::run_prune(c, a.all).await?;
    space += s;
    show(out);
    println!(
        "Total reclaimed space: {}",
        human_size_prec(space as f64, 3)
    );
    Ok(())
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn the_question_lists_what_goes() {
        let a = PruneArgs {
            all: false,
            filter: vec!["label=a=b".into()],
            force: false,
            volumes: true,
        };
        assert_eq!(
            prune_warning(&a),
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n  - all anonymous volumes not used by at least one container\n  - all dangling images\n  - unused build cache\n\n  Items to be pruned will be filtered with:\n  - label=a=b\n\nAre you sure you want to continue?"
        );
    }
}
