//! The build history BuildKit clients read (`ListenBuildHistory`, `UpdateBuildHistory`):
//! a record per build of this daemon's life (the last [`KEEP`]), and the events of
//! builds starting and ending.

use berth_buildkit::control::{BuildHistoryEvent, BuildHistoryEventType, BuildHistoryRecord};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Records kept (older unpinned ones go first).
const KEEP: usize = 50;

pub struct History {
    records: Mutex<VecDeque<BuildHistoryRecord>>,
    events: broadcast::Sender<BuildHistoryEvent>,
}

impl Default for History {
    fn default() -> Self {
        History {
            records: Mutex::default(),
            events: broadcast::channel(64).0,
        }
    }
}

impl History {
    /// A build started, or ended (its record replaces the started one).
    pub fn record(&self, r: BuildHistoryRecord, done: bool) {
        let mut g = self.records.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|x| x.r#ref != r.r#ref);
        g.push_back(r.clone());
        while g.len() > KEEP {
            match g.iter().position(|x| !x.pinned) {
                Some(i) => {
                    g.remove(i);
                }
                None => break,
            }
        }
        drop(g);
        let t = if done {
            BuildHistoryEventType::Complete
        } else {
            BuildHistoryEventType::Started
        };
        let _ = self.events.send(BuildHistoryEvent {
            r#type: t as i32,
            record: Some(r),
        });
    }

    /// Records (of `reference` if not empty; the running ones only with `active_only`).
    pub fn list(&self, reference: &str, active_only: bool) -> Vec<BuildHistoryRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| reference.is_empty() || r.r#ref == reference)
            .filter(|r| !active_only || r.completed_at.is_none())
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<BuildHistoryEvent> {
        self.events.subscribe()
    }

    /// Pins or deletes a record; false when there is none.
    pub fn update(&self, reference: &str, pinned: bool, delete: bool) -> bool {
        let mut g = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let Some(i) = g.iter().position(|r| r.r#ref == reference) else {
            return false;
        };
        if delete {
            if let Some(r) = g.remove(i) {
                let _ = self.events.send(BuildHistoryEvent {
                    r#type: BuildHistoryEventType::Deleted as i32,
                    record: Some(r),
                });
            }
        } else if let Some(r) = g.get_mut(i) {
            r.pinned = pinned;
        }
        true
    }
}
