//! A container's processes and streams: `top`, `wait`, `logs`, `attach`.

use super::streams::{detach_scanner, splice, upgraded};
use super::Ctx;
use crate::error::EngineError;
use crate::http::{stream, Resp};
use crate::model::{attrs, Ctr};
use crate::Daemon;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// The processes in the pid namespace of `init`: the host's `ps` with the client's
/// arguments, filtered to those pids, as Docker does.
pub(super) fn top(init: i64, ps_args: &str) -> Result<Value, EngineError> {
    let ns_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let target = ns_of(&init.to_string())
        .ok_or_else(|| EngineError::conflict("the container's process is gone"))?;
    let pids: std::collections::HashSet<String> = std::fs::read_dir("/proc")
        .map_err(|e| EngineError::internal(e.to_string()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .filter(|n| ns_of(n).as_ref() == Some(&target))
        .collect();
    let out = std::process::Command::new("ps")
        .args(ps_args.split_whitespace())
        .output()
        .map_err(|e| EngineError::internal(format!("running ps: {e}")))?;
    if !out.status.success() {
        return Err(EngineError::internal(format!(
            "ps: {}: {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            ps_args
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let titles: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| *t == "PID")
        .ok_or_else(|| EngineError::internal("Couldn't find PID field in ps output"))?;
    let mut procs = Vec::new();
    for l in lines {
        // the last column (the command) keeps its spaces
        let mut fields: Vec<String> = Vec::new();
        let mut rest = l.trim_start();
        while fields.len() + 1 < titles.len() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        fields.push(rest.to_string());
        if fields.get(pid_col).is_some_and(|p| pids.contains(p)) {
            procs.push(fields);
        }
    }
    Ok(json!({"Titles": titles, "Processes": procs}))
}

pub(super) fn wait(ctx: &Ctx, c: Arc<Ctr>) -> Result<Resp, EngineError> {
    let cond = ctx
        .query
        .get("condition")
        .unwrap_or("not-running")
        .to_string();
    if !matches!(cond.as_str(), "" | "not-running" | "next-exit" | "removed") {
        return Err(EngineError::invalid(format!(
            "invalid condition: \"{cond}\""
        )));
    }
    let mut rx = c.state.subscribe();
    let mut removed = c.removed.subscribe();
    let initial = c.state();
    let (tx, resp) = stream("application/json");
    tokio::spawn(async move {
        let done = match cond.as_str() {
            "next-exit" => rx
                .wait_for(|s| s.status == "exited" && s.finished_at != initial.finished_at)
                .await
                .map(|s| s.clone())
                .ok(),
            "removed" => {
                let _ = removed.wait_for(|r| *r).await;
                Some(c.state())
            }
            _ => rx
                .wait_for(|s| s.status != "running")
                .await
                .map(|s| s.clone())
                .ok(),
        };
        let s = done.unwrap_or_else(|| c.state());
        let err = if s.error.is_empty() {
            Value::Null
        } else {
            json!({"Message": s.error})
        };
        let body = json!({"StatusCode": s.exit_code, "Error": err});
        let _ = tx.send(Bytes::from(format!("{body}\n"))).await;
    });
    Ok(resp)
}

pub(super) fn logs(d: &Arc<Daemon>, ctx: &Ctx, c: Arc<Ctr>) -> Result<Resp, EngineError> {
    let stdout = ctx.query.bool("stdout")?;
    let stderr = ctx.query.bool("stderr")?;
    if !stdout && !stderr {
        return Err(EngineError::invalid("You must choose at least one stream"));
    }
    let follow = ctx.query.bool("follow")?;
    let timestamps = ctx.query.bool("timestamps")?;
    let tail: Option<usize> = match ctx.query.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => Some(
            n.parse()
                .map_err(|_| EngineError::invalid(format!("invalid tail value {n:?}")))?,
        ),
    };
    let since = ctx
        .query
        .get("since")
        .and_then(crate::events::parse_time)
        .unwrap_or(0);
    let until = ctx
        .query
        .get("until")
        .filter(|u| !u.is_empty())
        .and_then(crate::events::parse_time);
    if !crate::logconfig::LogConfig::of(&c.host_config()).readable() {
        return Err(EngineError::not_implemented(
            "configured logging driver does not support reading",
        ));
    }
    let path = d.containers.log_path(&c);
    let tty = c.tty();
    let ctype = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let (tx, resp) = stream(ctype);
    tokio::spawn(async move {
        let render = |e: &berth_runtime::logs::Entry| -> Option<Bytes> {
            let is_err = e.stream == "stderr";
            if (is_err && !stderr) || (!is_err && !stdout) {
                return None;
            }
            let t = chrono::DateTime::parse_from_rfc3339(&e.time)
                .ok()?
                .timestamp_nanos_opt()?;
            if t < since || until.is_some_and(|u| t > u) {
                return None;
            }
            let mut data = Vec::new();
            if timestamps {
                data.extend_from_slice(format!("{} ", e.time).as_bytes());
            }
            data.extend_from_slice(e.log.as_bytes());
            Some(if tty {
                Bytes::from(data)
            } else {
                Bytes::from(berth_runtime::shim::frame(
                    if is_err { 2 } else { 1 },
                    &data,
                ))
            })
        };
        let mut reader = berth_runtime::logs::LogReader::new(&path);
        let mut first = true;
        loop {
            let entries = reader.read();
            let complete = entries.len();
            let skip = if first {
                tail.map(|t| entries.len().saturating_sub(t)).unwrap_or(0)
            } else {
                0
            };
            first = false;
            for e in entries.iter().skip(skip) {
                if let Some(b) = render(e) {
                    if tx.send(b).await.is_err() {
                        return;
                    }
                }
            }
            if !follow || c.state().status != "running" {
                // one more read after the exit, for the last lines
                if follow && c.state().status != "running" && complete > 0 {
                    continue;
                }
                return;
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
            }
        }
    });
    Ok(resp)
}

pub(super) fn attach(d: &Arc<Daemon>, ctx: &mut Ctx, c: Arc<Ctr>) -> Result<Resp, EngineError> {
    let want = |k: &str| ctx.query.bool(k);
    let (stdin, stdout, stderr) = (want("stdin")?, want("stdout")?, want("stderr")?);
    let Some(upgrade) = ctx.upgrade.take() else {
        return Err(EngineError::invalid(
            "attach needs an upgraded connection (Upgrade: tcp)",
        ));
    };
    let tty = c.tty();
    let scanner = detach_scanner(ctx.query.get("detachKeys"), tty, stdin)?;
    // `logs=1`: what the container wrote so far comes first; `stream=0`: only that
    // (clients that say nothing get the live streams, as the CLIs always ask for them)
    let logs = want("logs")?;
    let live = ctx.query.get("stream").is_none() || want("stream")?;
    let log_path = d.containers.log_path(&c);
    let readable = crate::logconfig::LogConfig::of(&c.host_config()).readable();
    let mut flags = Vec::new();
    if stdin {
        flags.push("stdin");
    }
    if stdout {
        flags.push("stdout");
    }
    if stderr {
        flags.push("stderr");
    }
    // as Docker: the end of the client's input closes the container's only without
    // a tty (a terminal's input is never "done")
    let stdin_once = stdin && !tty && c.config()["StdinOnce"].as_bool().unwrap_or(false);
    if stdin_once {
        flags.push("once");
    }
    let d2 = d.clone();
    let running = c.state().status == "running";
    if !running {
        c.pending_attach.send_modify(|n| *n += 1);
    }
    tokio::spawn(async move {
        let release = |c: &Ctr| {
            if !running {
                c.pending_attach.send_modify(|n| *n = n.saturating_sub(1));
            }
        };
        let Ok(up) = upgrade.await else {
            release(&c);
            return;
        };
        let mut client = TokioIo::new(up);
        if logs && readable {
            let entries = tokio::task::spawn_blocking(move || {
                berth_runtime::logs::LogReader::new(&log_path).read()
            })
            .await
            .unwrap_or_default();
            for e in entries {
                let n = if e.stream == "stderr" { 2 } else { 1 };
                if (n == 1 && !stdout) || (n == 2 && !stderr) {
                    continue;
                }
                let bytes = if tty {
                    e.log.into_bytes()
                } else {
                    berth_runtime::shim::frame(n, e.log.as_bytes())
                };
                if client.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
        if !live {
            release(&c);
            let _ = client.shutdown().await;
            return;
        }
        // before start, wait for the shim to appear
        let sock = d2.containers.shim_socket(&c);
        let mut shim = None;
        for _ in 0..600 {
            shim = crate::shimctl::attach(&sock, &flags).await;
            if shim.is_some() || (c.state().status == "exited" && running) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        release(&c);
        let Some(shim) = shim else {
            let _ = client.shutdown().await;
            return;
        };
        let detached = splice(client, shim, stdin, stdin_once, scanner, async {}).await;
        if detached {
            d2.events.emit("container", "detach", &c.id, attrs(&c));
        }
    });
    Ok(upgraded(tty))
}
