//! A BuildKit build's progress as `Status` streams it: vertexes (one per step, with
//! their start, end, cache hit or error), statuses (counters inside a vertex, such as
//! the bytes of a context transfer) and logs (a RUN step's output). Every update is
//! kept, so a `Status` call that comes late (clients call it beside `Solve`) still sees
//! the whole build; the stream ends when the build does.

use berth_buildkit::control::{StatusResponse, Vertex, VertexLog, VertexStatus};
use prost_types::Timestamp;
use sha2::{Digest as _, Sha256};
use std::sync::Mutex;
use tokio::sync::watch;

fn now() -> Timestamp {
    Timestamp::from(std::time::SystemTime::now())
}

#[derive(Default)]
struct State {
    history: Vec<StatusResponse>,
    vertexes: Vec<Vertex>,
    /// the vertex steps' output goes to
    current: Option<usize>,
    done: bool,
    steps: u32,
    cached: u32,
}

/// One build's progress.
pub struct Progress {
    reference: String,
    state: Mutex<State>,
    changed: watch::Sender<usize>,
    cancelled: watch::Sender<bool>,
}

impl Progress {
    pub fn new(reference: &str) -> Progress {
        Progress {
            reference: reference.to_string(),
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
            cancelled: watch::Sender::new(false),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut g);
        let n = g.history.len();
        drop(g);
        self.changed.send_replace(n);
        r
    }

    fn digest(&self, i: usize) -> String {
        let h = Sha256::digest(format!("{}/{i}", self.reference).as_bytes());
        format!("sha256:{}", hex::encode(h))
    }

    /// Adds a started vertex named `name` after vertex `input`; its index.
    fn push_vertex(&self, s: &mut State, name: &str, input: Option<usize>) -> usize {
        let i = s.vertexes.len();
        let v = Vertex {
            digest: self.digest(i),
            inputs: input
                .and_then(|c| s.vertexes.get(c))
                .map(|v| vec![v.digest.clone()])
                .unwrap_or_default(),
            name: name.to_string(),
            started: Some(now()),
            ..Default::default()
        };
        s.vertexes.push(v.clone());
        s.history.push(StatusResponse {
            vertexes: vec![v],
            ..Default::default()
        });
        i
    }

    /// Starts a vertex named `name` (it becomes the current one); its index.
    pub fn start(&self, name: &str) -> usize {
        self.with(|s| {
            let i = self.push_vertex(s, name, s.current);
            s.current = Some(i);
            i
        })
    }

    /// A step of the Dockerfile: counted in the build's record.
    pub fn start_step(&self, name: &str) -> usize {
        let i = self.start(name);
        self.with(|s| s.steps += 1);
        i
    }

    /// A step of a stage built beside others: a vertex after `input` (the stage's step
    /// before), not the current one.
    pub fn start_step_after(&self, name: &str, input: Option<usize>) -> usize {
        self.with(|s| {
            s.steps += 1;
            self.push_vertex(s, name, input)
        })
    }

    /// Ends vertex `i` (with `error` if it failed); a cache hit says so.
    pub fn complete(&self, i: usize, cached: bool, error: Option<&str>) {
        self.with(|s| {
            let Some(v) = s.vertexes.get_mut(i) else {
                return;
            };
            if v.completed.is_some() {
                return;
            }
            v.cached = cached;
            if cached {
                v.started.get_or_insert_with(now);
            }
            v.completed = Some(now());
            v.error = error.unwrap_or_default().to_string();
            let v = v.clone();
            if cached {
                s.cached += 1;
            }
            s.history.push(StatusResponse {
                vertexes: vec![v],
                ..Default::default()
            });
        })
    }

    /// Ends the current vertex.
    pub fn complete_current(&self, cached: bool, error: Option<&str>) {
        let cur = self.with(|s| s.current);
        if let Some(i) = cur {
            self.complete(i, cached, error);
        }
    }

    /// Output of the current vertex (stream 1 stdout, 2 stderr).
    pub fn log(&self, stream: i64, msg: &[u8]) {
        let cur = self.with(|s| s.current);
        if let Some(i) = cur {
            self.log_to(i, stream, msg);
        }
    }

    /// Output of vertex `i`.
    pub fn log_to(&self, i: usize, stream: i64, msg: &[u8]) {
        self.with(|s| {
            let Some(v) = s.vertexes.get(i) else { return };
            let vertex = v.digest.clone();
            s.history.push(StatusResponse {
                logs: vec![VertexLog {
                    vertex,
                    timestamp: Some(now()),
                    stream,
                    msg: msg.to_vec(),
                }],
                ..Default::default()
            });
        })
    }

    /// A counter inside vertex `i` (`transferring context: 1.2kB`), done or not.
    pub fn status(&self, i: usize, id: &str, current: i64, total: i64, done: bool) {
        self.with(|s| {
            let Some(v) = s.vertexes.get(i) else { return };
            let t = now();
            s.history.push(StatusResponse {
                statuses: vec![VertexStatus {
                    id: id.to_string(),
                    vertex: v.digest.clone(),
                    name: id.to_string(),
                    current,
                    total,
                    timestamp: Some(t),
                    started: v.started,
                    completed: done.then_some(t),
                }],
                ..Default::default()
            });
        })
    }

    /// The build is over: every open vertex ends (failed ones with `error`) and the
    /// status streams close.
    pub fn finish(&self, error: Option<&str>) {
        let open: Vec<usize> = self.with(|s| {
            s.vertexes
                .iter()
                .enumerate()
                .filter(|(_, v)| v.completed.is_none())
                .map(|(i, _)| i)
                .collect()
        });
        for i in open {
            self.complete(i, false, error);
        }
        self.with(|s| s.done = true);
    }

    /// Steps run and steps that were cache hits.
    pub fn counts(&self) -> (u32, u32) {
        self.with(|s| (s.steps, s.cached))
    }

    pub fn cancel(&self) {
        self.cancelled.send_replace(true);
    }

    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Updates from `from` on, waiting for new ones; None once the build is over and
    /// everything was seen.
    pub async fn next(&self, from: usize) -> Option<Vec<StatusResponse>> {
        let mut rx = self.changed.subscribe();
        loop {
            {
                let g = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if g.history.len() > from {
                    return Some(g.history[from..].to_vec());
                }
                if g.done {
                    return None;
                }
            }
            if rx.changed().await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_late_reader_sees_everything() {
        let p = Progress::new("ref1");
        let a = p.start("[internal] load build definition from Dockerfile");
        p.status(a, "transferring dockerfile", 30, 0, true);
        p.complete(a, false, None);
        let b = p.start_step("[1/2] FROM busybox");
        p.log(1, b"hello\n");
        p.complete(b, true, None);
        p.start_step("[2/2] RUN false");
        p.finish(Some("exit code 1"));
        let all: Vec<StatusResponse> = p.next(0).await.unwrap();
        assert_eq!(p.next(all.len()).await, None);
        let vs: Vec<&Vertex> = all.iter().flat_map(|r| &r.vertexes).collect();
        assert_eq!(vs.last().unwrap().error, "exit code 1");
        assert!(vs.iter().any(|v| v.cached));
        assert_eq!(vs[2].inputs, vec![vs[0].digest.clone()]);
        assert_eq!(p.counts(), (2, 1));
    }
}
