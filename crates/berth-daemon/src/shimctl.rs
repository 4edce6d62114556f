//! Talking to shims: launching a `berth-shim` and waiting for its report, and the
//! one-line commands of its socket (`wait`, `attach`, `start`, `kill`, `resize`…).

use crate::error::EngineError;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Runs a `berth-shim` command with `w` as its ready pipe; the shim detaches at once and
/// reports `ok PID` or `error MESSAGE` on the pipe once the process is made.
pub async fn launch_shim(
    mut cmd: std::process::Command,
    r: rustix::fd::OwnedFd,
    w: rustix::fd::OwnedFd,
    keep: Option<i32>,
) -> Result<(), EngineError> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let wfd = std::os::fd::AsRawFd::as_raw_fd(&w);
    // SAFETY: between fork and exec only fcntl runs, which is async-signal-safe; it
    // lets exactly the ready pipe and the sealed runtime (and no other fd of berthd)
    // reach the shim
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for fd in [Some(wfd), keep].into_iter().flatten() {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let line = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        let status = cmd.status()?;
        drop(w);
        if !status.success() {
            return Err(std::io::Error::other(format!(
                "berth-shim failed to start: {status}"
            )));
        }
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(std::fs::File::from(r)),
            &mut line,
        )?;
        Ok(line)
    })
    .await
    .map_err(|e| EngineError::internal(e.to_string()))?
    .map_err(|e| EngineError::internal(e.to_string()))?;
    match line.trim().strip_prefix("error ") {
        Some(e) => Err(EngineError::internal(e.to_string())),
        None if line.starts_with("ok") => Ok(()),
        None => Err(EngineError::internal(
            "berth-shim exited before creating the container",
        )),
    }
}

/// Waits on a shim's `wait` for the process's exit code; None if the shim is gone.
pub async fn wait_exit_code(sock: &Path) -> Option<i64> {
    let mut s = UnixStream::connect(sock).await.ok()?;
    s.write_all(b"wait\n").await.ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).await.ok()?;
    line.trim().strip_prefix("exit ")?.parse::<i64>().ok()
}

/// Attaches to a shim's streams (`flags`: stdin, stdout, stderr); the connection then
/// carries them. None if the shim does not answer.
pub async fn attach(sock: &Path, flags: &[&str]) -> Option<UnixStream> {
    let mut s = UnixStream::connect(sock).await.ok()?;
    s.write_all(format!("attach {}\n", flags.join(" ")).as_bytes())
        .await
        .ok()?;
    // the answer line byte by byte: what follows it is the stream, and must not be
    // left in a buffer
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).await.ok()? == 0 {
            return None;
        }
        if b[0] == b'\n' {
            return Some(s);
        }
    }
}

/// One command to a shim socket, one line back.
pub async fn call(sock: &Path, cmd: &str) -> Result<String, EngineError> {
    let mut s = UnixStream::connect(sock)
        .await
        .map_err(|e| EngineError::internal(format!("no shim: {e}")))?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .await
        .map_err(|e| EngineError::internal(e.to_string()))?;
    match line.trim().strip_prefix("error ") {
        Some(e) => Err(EngineError::internal(e.to_string())),
        None => Ok(line.trim().to_string()),
    }
}
