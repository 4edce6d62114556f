//! `pause`, `unpause`, `update` and `stats`: a running container's limits and what it
//! uses, as the docker CLI shows them.

use super::containers::post_each;
use super::limits::LimitArgs;
use crate::client::{read_json, Client, ReqBody};
use crate::format::{fmt_g, human_size_prec, Format};
use crate::template::row;
use anyhow::{anyhow, Result};
use clap::Args;
use http::Method;
use serde_json::{json, Value};
use std::io::IsTerminal;

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn pause(c: &Client, a: PauseArgs) -> Result<()> {
    post_each(c, &a.containers, "pause", "").await
}

pub async fn unpause(c: &Client, a: PauseArgs) -> Result<()> {
    post_each(c, &a.containers, "unpause", "").await
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub async fn update(c: &Client, a: UpdateArgs) -> Result<()> {
    let mut body = json!({});
    a.limits.apply(&mut body)?;
    if let Some(r) = &a.restart {
        body["RestartPolicy"] = match r.split_once(':') {
            Some((n, m)) => {
                json!({"Name": n, "MaximumRetryCount": m.parse::<i64>().map_err(|_| anyhow!("invalid restart policy format"))?})
            }
            None => json!({"Name": r, "MaximumRetryCount": 0}),
        };
    }
    if body.as_object().is_some_and(|m| m.is_empty()) {
        return Err(anyhow!(
            "you must provide one or more flags when using this command"
        ));
    }
    let bytes = serde_json::to_vec(&body)?;
    super::for_each_name(&a.containers, |name| {
        let bytes = bytes.clone();
        async move {
            let resp = c
                .request(
                    Method::POST,
                    &format!("/containers/{name}/update"),
                    ReqBody::Full(Some(bytes.into())),
                    &[("Content-Type", "application/json".into())],
                )
                .await?;
            let v = read_json(resp).await?;
            for w in v["Warnings"].as_array().into_iter().flatten() {
                eprintln!("WARNING: {}", w.as_str().unwrap_or_default());
            }
            println!("{name}");
            Ok(())
        }
    })
    .await
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

/// docker's `units.BytesSize`: binary units, four significant digits.
fn bytes_size(v: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let (mut s, mut i) = (v, 0);
    while s >= 1024.0 && i < UNITS.len() - 1 {
        s /= 1024.0;
        i += 1;
    }
    format!("{}{}", fmt_g(s, 4), UNITS[i])
}

/// One row of `docker stats`, computed as the docker CLI does from a stats message.
pub fn stats_row(v: &Value, no_trunc: bool) -> Value {
    let u = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0) as f64;
    let cpu_delta =
        u("/cpu_stats/cpu_usage/total_usage") - u("/precpu_stats/cpu_usage/total_usage");
    let sys_delta = u("/cpu_stats/system_cpu_usage") - u("/precpu_stats/system_cpu_usage");
    let mut online = u("/cpu_stats/online_cpus");
    if online == 0.0 {
        online = v
            .pointer("/cpu_stats/cpu_usage/percpu_usage")
            .and_then(Value::as_array)
            .map(|a| a.len() as f64)
            .unwrap_or(0.0);
    }
    let cpu = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    // the page cache that could go is not counted (v1 total_inactive_file, v2 inactive_file)
    let usage = u("/memory_stats/usage");
    let inactive = v
        .pointer("/memory_stats/stats/total_inactive_file")
        .or_else(|| v.pointer("/memory_stats/stats/inactive_file"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as f64;
    let mem = if inactive < usage {
        usage - inactive
    } else {
        usage
    };
    let limit = u("/memory_stats/limit");
    let mem_perc = if limit > 0.0 {
        mem / limit * 100.0
    } else {
        0.0
    };
    let (mut read, mut write) = (0.0, 0.0);
    for e in v
        .pointer("/blkio_stats/io_service_bytes_recursive")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let n = e["value"].as_u64().unwrap_or(0) as f64;
        match e["op"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "read" => read += n,
            "write" => write += n,
            _ => {}
        }
    }
    let (mut rx, mut tx) = (0.0, 0.0);
    for n in v["networks"].as_object().into_iter().flatten() {
        rx += n.1["rx_bytes"].as_f64().unwrap_or(0.0);
        tx += n.1["tx_bytes"].as_f64().unwrap_or(0.0);
    }
    let id = v["id"].as_str().unwrap_or_default();
    let running = v["read"].as_str().is_some_and(|r| !r.starts_with("0001-"));
    let dash = |s: String| if running { s } else { "--".to_string() };
    row(vec![
        (
            "ID",
            json!(if no_trunc {
                id.to_string()
            } else {
                id.chars().take(12).collect()
            }),
        ),
        ("Container", json!(id.chars().take(12).collect::<String>())),
        (
            "Name",
            json!(v["name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')),
        ),
        ("CPUPerc", json!(dash(format!("{cpu:.2}%")))),
        (
            "MemUsage",
            json!(dash(format!("{} / {}", bytes_size(mem), bytes_size(limit)))),
        ),
        ("MemPerc", json!(dash(format!("{mem_perc:.2}%")))),
        (
            "NetIO",
            json!(dash(format!(
                "{} / {}",
                human_size_prec(rx, 3),
                human_size_prec(tx, 3)
            ))),
        ),
        (
            "BlockIO",
            json!(dash(format!(
                "{} / {}",
                human_size_prec(read, 3),
                human_size_prec(write, 3)
            ))),
        ),
        (
            "PIDs",
            json!(dash(format!("{}", u("/pids_stats/current") as u64))),
        ),
    ])
}

const DEFAULT: &str = "{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

fn headers() -> Value {
    json!({"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
        "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"})
}

pub async fn stats(c: &Client, a: StatsArgs) -> Result<()> {
    let names: Vec<String> = if a.containers.is_empty() {
        let list = c
            .get_json(&format!("/containers/json?all={}", a.all))
            .await?;
        list.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["Id"].as_str().map(str::to_string))
            .collect()
    } else {
        a.containers.clone()
    };
    let fmt = Format::new(a.format.as_deref(), DEFAULT);
    // one stream per container, as the docker CLI keeps; the table shows the latest
    // message of each (the first one a second in, with its CPU measured over it)
    let latest: std::sync::Arc<std::sync::Mutex<Vec<Option<Value>>>> =
        std::sync::Arc::new(std::sync::Mutex::new(vec![None; names.len()]));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (c, name, latest, failed) = (c.clone(), name.clone(), latest.clone(), failed.clone());
        let (explicit, one) = (!a.containers.is_empty(), a.no_stream);
        tasks.push(tokio::spawn(async move {
            let path = if one {
                format!("/containers/{name}/stats?stream=false")
            } else {
                format!("/containers/{name}/stats?stream=true")
            };
            let resp = match c.request(Method::GET, &path, ReqBody::Empty, &[]).await {
                Ok(r) => r,
                Err(e) => {
                    if explicit {
                        eprintln!("{e}");
                        failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    return;
                }
            };
            let _ = crate::client::each_json_line(resp, |v| {
                // a stream's first message has no previous sample: its CPU is unknown
                if one || !v["precpu_stats"]["system_cpu_usage"].is_null() {
                    if let Ok(mut l) = latest.lock() {
                        l[i] = Some(v.clone());
                    }
                }
                Ok(())
            })
            .await;
        }));
    }
    let tty = std::io::stdout().is_terminal();
    if a.no_stream {
        for t in tasks.iter_mut() {
            let _ = t.await;
        }
    }
    loop {
        if !a.no_stream {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
        let rows: Vec<Value> = latest
            .lock()
            .map(|l| {
                l.iter()
                    .flatten()
                    .map(|v| stats_row(v, a.no_trunc))
                    .collect()
            })
            .unwrap_or_default();
        let text = fmt.render(&rows, &headers())?;
        if !a.no_stream && tty {
            // redraw in place, as docker does
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        if a.no_stream {
            if failed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::Exit(1).into());
            }
            return Ok(());
        }
        if tasks.iter().all(|t| t.is_finished()) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_prints_them() {
        assert_eq!(bytes_size(372.0 * 1024.0), "372KiB");
        assert_eq!(bytes_size(64.0 * 1024.0 * 1024.0), "64MiB");
        assert_eq!(bytes_size(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5GiB");
        assert_eq!(bytes_size(0.0), "0B");
    }

    #[test]
    fn a_row_from_a_message() {
        let v = json!({
            "id": "0123456789abcdef", "name": "/web", "read": "2026-01-01T00:00:00Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 300}, "system_cpu_usage": 2000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 100}, "system_cpu_usage": 1000},
            "memory_stats": {"usage": 2 << 20, "limit": 64 << 20, "stats": {"total_inactive_file": 1 << 20}},
            "pids_stats": {"current": 3},
            "blkio_stats": {"io_service_bytes_recursive": [{"op": "read", "value": 1536}, {"op": "write", "value": 0}]},
        });
        let r = stats_row(&v, false);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Name"], "web");
        assert_eq!(r["CPUPerc"], "40.00%");
        assert_eq!(r["MemUsage"], "1MiB / 64MiB");
        assert_eq!(r["MemPerc"], "1.56%");
        assert_eq!(r["BlockIO"], "1.54kB / 0B");
        assert_eq!(r["PIDs"], "3");
        let stopped = stats_row(&json!({"id": "x", "read": "0001-01-01T00:00:00Z"}), false);
        assert_eq!(stopped["CPUPerc"], "--");
    }
}
