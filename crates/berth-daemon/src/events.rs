//! The event log behind `GET /events`: a bounded ring of recent events for `since`
//! replays, and a broadcast channel for live subscribers.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::broadcast;

const KEEP: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// legacy fields that older clients read
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

pub struct Events {
    ring: Mutex<VecDeque<Event>>,
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(256);
        Events {
            ring: Mutex::new(VecDeque::with_capacity(KEEP)),
            tx,
        }
    }

    /// Records and publishes an event.
    pub fn emit(&self, kind: &str, action: &str, id: &str, attributes: BTreeMap<String, String>) {
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or(0);
        let legacy = matches!(kind, "image" | "container");
        let ev = Event {
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: attributes
                .get("image")
                .filter(|_| kind == "container")
                .cloned(),
            kind: kind.to_string(),
            action: action.to_string(),
            actor: Actor {
                id: id.to_string(),
                attributes,
            },
            scope: "local".into(),
            time: nanos / 1_000_000_000,
            time_nano: nanos,
        };
        {
            let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
            if ring.len() == KEEP {
                ring.pop_front();
            }
            ring.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    /// A live subscription plus the recorded events from `since_nano` on; subscribing
    /// first means nothing falls between the two.
    pub fn subscribe(&self, since_nano: i64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let rx = self.tx.subscribe();
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let past = ring
            .iter()
            .filter(|e| e.time_nano >= since_nano)
            .cloned()
            .collect();
        (past, rx)
    }
}

/// Parses Docker's event time forms: unix seconds with optional fraction, or RFC 3339.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Some((secs, frac)) = s.split_once('.') {
        let secs: i64 = secs.parse().ok()?;
        let mut frac = frac.to_string();
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        while frac.len() < 9 {
            frac.push('0');
        }
        return Some(secs * 1_000_000_000 + frac.parse::<i64>().ok()?);
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs.saturating_mul(1_000_000_000));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("10"), Some(10_000_000_000));
        assert_eq!(parse_time("10.5"), Some(10_500_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_time("x"), None);
    }

    #[test]
    fn replay_and_live() {
        let ev = Events::new();
        ev.emit("image", "tag", "sha256:1", BTreeMap::new());
        let (past, mut rx) = ev.subscribe(0);
        assert_eq!(past.len(), 1);
        ev.emit("image", "untag", "sha256:1", BTreeMap::new());
        assert_eq!(rx.try_recv().unwrap().action, "untag");
    }
}
