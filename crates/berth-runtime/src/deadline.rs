//! Waiting with a deadline in the shim: a runtime command that never returns (a
//! `create` whose init is stuck, a runtime that never connects to the console socket)
//! must not keep a container in limbo. The shim gives up after [`RUNTIME_DEADLINE`],
//! kills what it waited for and reports the failure, as it reports any failed create.

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::AsFd;
use std::io::{self, Read};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long a runtime's `create` (or an exec's `exec -d`) may take.
pub const RUNTIME_DEADLINE: Duration = Duration::from_secs(120);

fn timespec(left: Duration) -> Timespec {
    Timespec {
        tv_sec: left.as_secs() as i64,
        tv_nsec: left.subsec_nanos() as i64,
    }
}

/// Waits until `fd` is readable or `deadline` passes (false then).
fn readable_by(fd: impl AsFd, deadline: Instant) -> io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&timespec(left))) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs `cmd` as [`Command::output`] does, but kills it when it has not exited within
/// `limit` (an error naming `what` then). Its stderr, when piped, is read as it comes.
pub fn output_within(mut cmd: Command, limit: Duration, what: &str) -> io::Result<Output> {
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + limit;
    let pid = rustix::process::Pid::from_child(&child);
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    let mut err = child.stderr.take();
    if let Some(e) = &err {
        let flags = rustix::fs::fcntl_getfl(e)?;
        rustix::fs::fcntl_setfl(e, flags | rustix::fs::OFlags::NONBLOCK)?;
    }
    let mut stderr = Vec::new();
    let mut drain = |err: &mut Option<std::process::ChildStderr>| {
        let Some(e) = err else { return };
        let mut buf = [0u8; 4096];
        loop {
            match e.read(&mut buf) {
                Ok(0) => {
                    *err = None;
                    return;
                }
                Ok(n) => stderr.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    *err = None;
                    return;
                }
            }
        }
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "{what} did not finish within {limit:?}"
            )));
        }
        let mut fds = vec![PollFd::new(&pidfd, PollFlags::IN)];
        if let Some(e) = &err {
            fds.push(PollFd::new(e, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&timespec(left))) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        let exited = fds[0].revents().contains(PollFlags::IN);
        drop(fds);
        drain(&mut err);
        if exited {
            // what it wrote before it exited is in the pipe; a process it left behind
            // holding the pipe is not waited for
            let status = child.wait()?;
            drain(&mut err);
            return Ok(Output {
                status,
                stdout: Vec::new(),
                stderr,
            });
        }
    }
}

/// Accepts one connection on `listener` before `deadline`.
pub fn accept_by(listener: &UnixListener, deadline: Instant, what: &str) -> io::Result<UnixStream> {
    if !readable_by(listener, deadline)? {
        return Err(io::Error::other(format!("{what}: nothing came in time")));
    }
    let (conn, _) = listener.accept()?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_deadline() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo oops >&2; exit 3"])
            .stderr(std::process::Stdio::piped());
        let out = output_within(c, Duration::from_secs(10), "sh").unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stderr, b"oops\n");
        let mut c = Command::new("sleep");
        c.arg("30");
        let t = Instant::now();
        let e = output_within(c, Duration::from_millis(200), "sleep 30").unwrap_err();
        assert_eq!(e.to_string(), "sleep 30 did not finish within 200ms");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn accept_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join("s")).unwrap();
        let e = accept_by(&l, Instant::now() + Duration::from_millis(50), "console").unwrap_err();
        assert_eq!(e.to_string(), "console: nothing came in time");
        let _c = UnixStream::connect(dir.path().join("s")).unwrap();
        accept_by(&l, Instant::now() + Duration::from_secs(5), "console").unwrap();
    }
}
