//! Hijacked sessions: attach and exec take over the HTTP connection and carry the
//! process's streams (raw with a tty, Docker's 8-byte frames without). The terminal goes
//! raw while a tty session is interactive, and the detach keys end the session.

use crate::client::{Client, ReqBody};
use anyhow::{anyhow, Result};
use berth_proto::detach::{Scan, Scanner};
use http::Method;
use hyper_util::rt::TokioIo;
use std::io::{IsTerminal, Write};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Writes a Docker stream frame's payload to stdout or stderr.
pub fn demux(buf: &mut Vec<u8>, data: &[u8]) -> Result<()> {
    buf.extend_from_slice(data);
    while buf.len() >= 8 {
        let n = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < 8 + n {
            break;
        }
        let payload = &buf[8..8 + n];
        if buf[0] == 2 {
            let mut e = std::io::stderr().lock();
            e.write_all(payload)?;
            e.flush()?;
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(payload)?;
            o.flush()?;
        }
        buf.drain(..8 + n);
    }
    Ok(())
}

/// Puts the terminal in raw mode while alive.
/// A tty session needs a terminal to read from: attaching stdin to a tty from a file or
/// a pipe is refused as the docker CLI refuses it (it would wait for ever otherwise).
pub fn check_tty(attach_stdin: bool, tty: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if attach_stdin && tty && !std::io::stdin().is_terminal() {
        eprintln!("the input device is not a TTY");
        return Err(crate::Exit(1).into());
    }
    Ok(())
}

pub struct RawTerminal(Option<rustix::termios::Termios>);
impl RawTerminal {
    pub fn enter() -> Self {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawTerminal(None);
        }
        match rustix::termios::tcgetattr(&stdin) {
            Ok(old) => {
                let mut raw = old.clone();
                raw.make_raw();
                let _ =
                    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw);
                RawTerminal(Some(old))
            }
            Err(_) => RawTerminal(None),
        }
    }
}
impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                old,
            );
        }
    }
}

pub fn terminal_size() -> Option<(u16, u16)> {
    let out = std::io::stdout();
    if !out.is_terminal() {
        return None;
    }
    rustix::termios::tcgetwinsize(&out)
        .ok()
        .map(|w| (w.ws_row, w.ws_col))
}

/// A running session: `output` ends when the process's output does; `detached` fires
/// when the user typed the detach keys.
pub struct Session {
    pub output: tokio::task::JoinHandle<()>,
    pub detached: oneshot::Receiver<()>,
    /// set as soon as the keys are seen (the output may end before `detached` fires)
    pub detaching: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The detach keys for a session (`--detach-keys`), or an error for a bad spec.
pub fn detach_keys(spec: Option<&str>) -> Result<Vec<u8>> {
    match spec.filter(|k| !k.is_empty()) {
        Some(k) => berth_proto::detach::parse(k).map_err(|e| anyhow!(e)),
        None => Ok(berth_proto::detach::DEFAULT.to_vec()),
    }
}

/// Sends `path` with `body` as an upgrade request and relays the session: our stdin to
/// the process (when `stdin`), its output to our stdout/stderr.
pub async fn hijack(
    c: &Client,
    path: &str,
    body: ReqBody,
    stdin: bool,
    tty: bool,
    keys: Vec<u8>,
) -> Result<Session> {
    let resp = c
        .request(
            Method::POST,
            path,
            body,
            &[
                ("Connection", "Upgrade".into()),
                ("Upgrade", "tcp".into()),
                ("Content-Type", "application/json".into()),
            ],
        )
        .await?;
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| anyhow!("attach: {e}"))?;
    let io = TokioIo::new(upgraded);
    let (mut r, mut w) = tokio::io::split(io);
    let (detach_tx, detached) = oneshot::channel();
    let detaching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = detaching.clone();
    if stdin {
        let mut scanner =
            (tty && std::io::stdin().is_terminal()).then(|| Scanner::new(keys.clone()));
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 4096];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let (data, detach) = match scanner.as_mut().map(|s| s.feed(&buf[..n])) {
                            None => (buf[..n].to_vec(), false),
                            Some(Scan::Pass(d)) => (d, false),
                            // the daemon sees the keys too, so it detaches rather than
                            // taking our leaving for the end of the input
                            Some(Scan::Detach(mut d)) => {
                                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                                d.extend_from_slice(&keys);
                                (d, true)
                            }
                        };
                        if w.write_all(&data).await.is_err() {
                            return;
                        }
                        if detach {
                            let _ = w.flush().await;
                            // a moment for the daemon to read them before we go
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            let _ = detach_tx.send(());
                            return;
                        }
                    }
                }
            }
            let _ = w.shutdown().await;
        });
    }
    let output = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        let mut pending = Vec::new();
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tty {
                        let mut o = std::io::stdout().lock();
                        let _ = o.write_all(&buf[..n]);
                        let _ = o.flush();
                    } else if demux(&mut pending, &buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(Session {
        output,
        detached,
        detaching,
    })
}
