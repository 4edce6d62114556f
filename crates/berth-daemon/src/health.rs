//! Healthchecks: a container whose config has a `Healthcheck` test gets a monitor task
//! while it runs. Each probe is an exec of the test (through an exec shim, like
//! `docker exec`); the result updates `State.Health` (status, failing streak, the last
//! five probes) and a change of status is announced as a `health_status: …` event.

use crate::containers::Containers;
use crate::error::EngineError;
use crate::events::Events;
use crate::model::{attrs, Ctr};
use crate::model::{Health, Probe};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Docker keeps this many probes, and this much of each probe's output.
const KEEP_PROBES: usize = 5;
const MAX_OUTPUT: usize = 4096;

/// A container's healthcheck, with Docker's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub cmd: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub start_interval: Duration,
    pub retries: i64,
}

fn nanos(v: &Value, default: Duration) -> Duration {
    match v.as_i64() {
        Some(n) if n > 0 => Duration::from_nanos(n as u64),
        _ => default,
    }
}

impl Check {
    /// None when there is no healthcheck or it is disabled (`NONE`).
    pub fn of(config: &Value) -> Option<Check> {
        let hc = &config["Healthcheck"];
        let test: Vec<String> = hc["Test"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let cmd = match test.first().map(String::as_str) {
            Some("CMD") => test[1..].to_vec(),
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
            _ => return None,
        };
        if cmd.is_empty() {
            return None;
        }
        Some(Check {
            cmd,
            interval: nanos(&hc["Interval"], Duration::from_secs(30)),
            timeout: nanos(&hc["Timeout"], Duration::from_secs(30)),
            start_period: nanos(&hc["StartPeriod"], Duration::ZERO),
            start_interval: nanos(&hc["StartInterval"], Duration::from_secs(5)),
            retries: hc["Retries"].as_i64().filter(|r| *r > 0).unwrap_or(3),
        })
    }
}

/// Docker's checks of a create request's Healthcheck.
pub fn validate(config: &Value) -> Result<(), EngineError> {
    let hc = &config["Healthcheck"];
    if hc.is_null() {
        return Ok(());
    }
    for k in ["Interval", "Timeout", "StartPeriod", "StartInterval"] {
        let n = hc[k].as_i64().unwrap_or(0);
        if n != 0 && n < 1_000_000 {
            return Err(EngineError::invalid(format!(
                "{k} in Healthcheck cannot be less than 1ms"
            )));
        }
    }
    if hc["Retries"].as_i64().unwrap_or(0) < 0 {
        return Err(EngineError::invalid(
            "Retries in Healthcheck cannot be negative",
        ));
    }
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl Containers {
    /// Runs the health monitor of a container that just started, until that run ends.
    pub fn watch_health(self: &Arc<Self>, c: &Arc<Ctr>, events: &Arc<Events>) {
        let Some(check) = Check::of(&c.config()) else {
            return;
        };
        let started = c.state().started_at;
        self.set_health(c, |h| {
            h.status = "starting".into();
            h.failing_streak = 0;
        });
        let this = self.clone();
        let c = c.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let begun = std::time::Instant::now();
            loop {
                let in_start = begun.elapsed() < check.start_period;
                let wait = if in_start && c.health().is_some_and(|h| h.status == "starting") {
                    check.start_interval
                } else {
                    check.interval
                };
                tokio::time::sleep(wait).await;
                let st = c.state();
                if st.status != "running" || st.started_at != started {
                    return;
                }
                let start = now();
                let (exit_code, output) = this.probe(&c, &check, &events).await;
                let st = c.state();
                if st.status != "running" || st.started_at != started {
                    return;
                }
                let in_start = begun.elapsed() < check.start_period;
                let before = c.health().map(|h| h.status).unwrap_or_default();
                this.set_health(&c, |h| {
                    if exit_code == 0 {
                        h.status = "healthy".into();
                        h.failing_streak = 0;
                    } else if !in_start {
                        // failures in the start period do not count
                        h.failing_streak += 1;
                        if h.failing_streak >= check.retries {
                            h.status = "unhealthy".into();
                        }
                    }
                    h.log.push(Probe {
                        start,
                        end: now(),
                        exit_code,
                        output,
                    });
                    let extra = h.log.len().saturating_sub(KEEP_PROBES);
                    h.log.drain(..extra);
                });
                let after = c.health().map(|h| h.status).unwrap_or_default();
                if after != before {
                    events.emit(
                        "container",
                        &format!("health_status: {after}"),
                        &c.id,
                        attrs(&c),
                    );
                }
            }
        });
    }

    /// One probe: the test as an exec, its output (up to 4 KiB) and exit code; a probe
    /// that outlives the timeout is killed and counts as failed (-1).
    async fn probe(
        self: &Arc<Self>,
        c: &Arc<Ctr>,
        check: &Check,
        events: &Arc<Events>,
    ) -> (i64, String) {
        use tokio::io::AsyncReadExt;
        let e = crate::model::Exec::new(c, crate::model::ExecSpec::internal(&check.cmd));
        if let Err(err) = self.prepare_exec(&e).await {
            let code = e.state.borrow().exit_code.unwrap_or(1);
            return (code, err.message);
        }
        let sock = self.exec_socket(&e);
        let Some(mut out) = crate::shimctl::attach(&sock, &["stdout", "stderr"]).await else {
            let _ = crate::shimctl::call(&sock, "abort").await;
            return (1, "health check: the exec shim did not answer".into());
        };
        if let Err(err) = self.run_exec(&e, events).await {
            return (e.state.borrow().exit_code.unwrap_or(1), err.message);
        }
        let mut raw = Vec::new();
        let read = async {
            let mut buf = [0u8; 8192];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if raw.len() < 64 * 1024 {
                            raw.extend_from_slice(&buf[..n]);
                        }
                    }
                }
            }
            let mut st = e.state.subscribe();
            let _ = st.wait_for(|s| s.exit_code.is_some()).await;
        };
        if tokio::time::timeout(check.timeout, read).await.is_err() {
            let _ = crate::shimctl::call(&sock, "kill 9").await;
            return (
                -1,
                format!("Health check exceeded timeout ({:?})", check.timeout),
            );
        }
        // the payloads of the stream frames
        let mut text = Vec::new();
        let mut rest = raw.as_slice();
        while rest.len() >= 8 {
            let n = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            let end = (8 + n).min(rest.len());
            text.extend_from_slice(&rest[8..end]);
            rest = &rest[end..];
        }
        text.truncate(MAX_OUTPUT);
        let code = e.state.borrow().exit_code.unwrap_or(-1);
        (code, String::from_utf8_lossy(&text).into_owned())
    }

    fn set_health(&self, c: &Ctr, f: impl FnOnce(&mut Health)) {
        self.set_state(c, |s| {
            let h = s.health.get_or_insert_with(Health::default);
            f(h);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_with_docker_defaults() {
        let c = Check::of(&json!({"Healthcheck": {"Test": ["CMD-SHELL", "true"]}})).unwrap();
        assert_eq!(c.cmd, vec!["/bin/sh", "-c", "true"]);
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.retries, 3);
        let c = Check::of(&json!({"Healthcheck": {"Test": ["CMD", "pg", "-x"], "Interval": 1_000_000_000i64, "Retries": 2}})).unwrap();
        assert_eq!(c.cmd, vec!["pg", "-x"]);
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(c.retries, 2);
        assert!(Check::of(&json!({"Healthcheck": {"Test": ["NONE"]}})).is_none());
        assert!(Check::of(&json!({})).is_none());
        assert!(validate(&json!({"Healthcheck": {"Interval": 5}})).is_err());
        assert!(validate(&json!({"Healthcheck": {"Retries": -1}})).is_err());
        assert!(validate(&json!({"Healthcheck": {"Interval": 1_000_000}})).is_ok());
    }
}
