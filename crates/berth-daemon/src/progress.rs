//! Docker's JSON progress messages, shared by pull and push: status lines per layer and
//! byte counts reported a few times a second while data moves.

use crate::http::json_line;
use bytes::Bytes;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// `{"status": STATUS, "progressDetail": {}, "id": ID}`.
pub fn line(status: &str, id: &str) -> Bytes {
    json_line(&json!({"status": status, "progressDetail": {}, "id": id}))
}

/// Docker's text bar, for clients that print `progress` as is.
fn bar(current: u64, total: u64) -> String {
    let width = 50u64;
    let filled = (current.min(total) * width).checked_div(total).unwrap_or(0) as usize;
    let arrow = if filled < width as usize { ">" } else { "" };
    format!(
        "[{}{}{}] {}/{}",
        "=".repeat(filled.saturating_sub(usize::from(!arrow.is_empty()))),
        arrow,
        " ".repeat(width as usize - filled.max(usize::from(!arrow.is_empty()))),
        human(current),
        human(total)
    )
}

fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i])
    }
}

/// One layer being moved: its short id, its size, and the bytes moved so far.
pub type Counter = (String, u64, Arc<AtomicU64>);

/// Sends `STATUS` lines with `progressDetail` for each counter that moved, every 200 ms,
/// until stopped.
pub struct Reporter {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    pub fn start(status: &'static str, counters: Vec<Counter>, tx: mpsc::Sender<Bytes>) -> Self {
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut last = vec![0u64; counters.len()];
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                    _ = stop_rx.changed() => break,
                }
                for (k, (id, total, c)) in counters.iter().enumerate() {
                    let now = c.load(Ordering::Relaxed);
                    if now != last[k] && now < *total {
                        last[k] = now;
                        let _ = tx
                            .send(json_line(&json!({
                                "status": status,
                                "progressDetail": {"current": now, "total": total},
                                "progress": bar(now, *total),
                                "id": id,
                            })))
                            .await;
                    }
                }
            }
        });
        Reporter { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_sizes() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.500MB");
        let b = bar(50, 100);
        assert!(b.starts_with("[========================>"), "{b}");
        assert!(b.ends_with("] 50B/100B"), "{b}");
        assert_eq!(bar(100, 100).matches('=').count(), 50);
    }
}
