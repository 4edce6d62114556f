//! `GET /containers/{id}/stats`: one sample (`stream=false`; with `one-shot` at once,
//! otherwise after a second so that `precpu_stats` is filled) or one a second until the
//! container stops or the client goes.

use super::Ctx;
use crate::error::EngineError;
use crate::http::{ok_json, stream, Resp};
use crate::model::Ctr;
use crate::stats::Cgroup;
use crate::Daemon;
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::sync::Arc;

const INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// One reading: its time and Docker's fields, or zeros for a container that is not
/// running.
fn read(c: &Ctr, cg: &Cgroup) -> (String, Map<String, Value>) {
    let running = c.state().status == "running" && cg.exists();
    let mut fields = if running {
        cg.sample(super::system::mem_total().max(0) as u64)
    } else {
        crate::stats::empty()
    };
    if let Some(net) = c.state().net.filter(|_| running) {
        fields.insert("networks".into(), networks(&net));
    }
    (
        if running {
            now()
        } else {
            crate::model::ZERO_TIME.into()
        },
        fields,
    )
}

/// Each interface's counters, as the container sees them: its veth's host side counts
/// the other way round.
fn networks(net: &crate::model::NetState) -> Value {
    let mut out = Map::new();
    for e in &net.endpoints {
        let dir = format!("/sys/class/net/{}/statistics", e.veth);
        let read = |f: &str| -> u64 {
            std::fs::read_to_string(format!("{dir}/{f}"))
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        };
        let mut m = Map::new();
        for (mine, host) in [("rx", "tx"), ("tx", "rx")] {
            for what in ["bytes", "packets", "errors", "dropped"] {
                m.insert(
                    format!("{mine}_{what}"),
                    json!(read(&format!("{host}_{what}"))),
                );
            }
        }
        out.insert(e.ifname.clone(), Value::Object(m));
    }
    Value::Object(out)
}

fn message(
    c: &Ctr,
    cur: &(String, Map<String, Value>),
    pre: Option<&(String, Map<String, Value>)>,
) -> Value {
    let mut v = json!({
        "name": format!("/{}", c.name()),
        "id": c.id,
        "read": cur.0,
        "preread": pre.map(|p| p.0.clone()).unwrap_or_else(|| crate::model::ZERO_TIME.into()),
        "num_procs": 0,
        "storage_stats": {},
    });
    for (k, val) in &cur.1 {
        v[k] = val.clone();
    }
    v["precpu_stats"] = pre
        .and_then(|p| p.1.get("cpu_stats").cloned())
        .unwrap_or_else(|| json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}));
    v
}

pub fn stats(d: &Arc<Daemon>, ctx: &Ctx, c: Arc<Ctr>) -> Result<Resp, EngineError> {
    let streaming = match ctx.query.get("stream") {
        None | Some("") => true,
        Some(_) => ctx.query.bool("stream")?,
    };
    let one_shot = ctx.query.bool("one-shot")?;
    if one_shot && streaming {
        return Err(EngineError::invalid(
            "cannot have stream=true and one-shot=true",
        ));
    }
    let hc = c.host_config();
    let cg = Cgroup {
        root: "/sys/fs/cgroup".into(),
        path: crate::resources::cgroup_path(&hc, crate::model::short(&c.id)),
        v2: d.containers.sys.v2,
    };
    if !streaming {
        let first = read(&c, &cg);
        if one_shot || first.0 == crate::model::ZERO_TIME {
            return Ok(ok_json(&message(&c, &first, None)));
        }
        let (tx, resp) = stream("application/json");
        tokio::spawn(async move {
            tokio::time::sleep(INTERVAL).await;
            let second = read(&c, &cg);
            let _ = tx.send(line(&message(&c, &second, Some(&first)))).await;
        });
        return Ok(resp);
    }
    let (tx, resp) = stream("application/json");
    tokio::spawn(async move {
        let mut pre: Option<(String, Map<String, Value>)> = None;
        loop {
            let cur = read(&c, &cg);
            let stopped = cur.0 == crate::model::ZERO_TIME;
            if tx
                .send(line(&message(&c, &cur, pre.as_ref())))
                .await
                .is_err()
                || stopped
            {
                return;
            }
            pre = Some(cur);
            tokio::time::sleep(INTERVAL).await;
        }
    });
    Ok(resp)
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}
