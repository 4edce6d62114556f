//! The per-container shim: a small single-threaded process that outlives berthd.
//!
//! It creates the container with the built-in runtime (youki's libcontainer), keeping
//! it in the created state until berthd says `start`, so that attached clients see all
//! output. It owns the container's stdio (pipes, or the pty master received over the
//! console socket), writes the json-file log, fans output out to attached clients
//! (Docker's 8-byte stream frames without a tty, raw with one), forwards stdin, reaps
//! the container's init (it is a child subreaper), and writes the exit status to
//! `exit` (temp file + rename) before it exits: berthd reads that file after a restart.
//!
//! Control protocol, one line per command on `shim.sock`:
//! `start` → `ok PID`; `wait` → `exit CODE` when the container exits;
//! `kill SIGNAL` → `ok`; `resize ROWS COLS` → `ok`; `pid` → `ok PID`;
//! `attach [stdin] [stdout] [stderr]` → `ok`, then the connection carries the streams.
//! Errors answer `error MESSAGE`.

use crate::logs::LineSplitter;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// What the shim needs to know; berthd passes it on the command line.
#[derive(Debug, Clone)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    /// the container's directory under the exec root: sockets, runtime state, exit file
    pub state: PathBuf,
    pub log: PathBuf,
    pub tty: bool,
    pub stdin: bool,
    /// an OCI runtime binary (runc, crun) instead of the built-in runtime
    pub runtime: Option<PathBuf>,
}

/// The runtime that made the container.
enum Backend {
    Builtin(Box<libcontainer::container::Container>),
    Oci {
        binary: PathBuf,
        root: PathBuf,
        id: String,
    },
}

impl Backend {
    fn oci(&self, args: &[&str]) -> io::Result<()> {
        let Backend::Oci { binary, root, id } = self else {
            return Ok(());
        };
        let out = std::process::Command::new(binary)
            .arg("--root")
            .arg(root)
            .args(args)
            .arg(id)
            .stdin(std::process::Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }

    fn start(&mut self) -> io::Result<()> {
        match self {
            Backend::Builtin(c) => c.start().map_err(io_err),
            Backend::Oci { .. } => self.oci(&["start"]),
        }
    }

    fn delete(&mut self) {
        match self {
            Backend::Builtin(c) => {
                let _ = c.delete(true);
            }
            Backend::Oci { .. } => {
                let _ = self.oci(&["delete", "--force"]);
            }
        }
    }
}

const MAX_PENDING: usize = 1 << 20;

#[derive(PartialEq)]
enum Mode {
    Command,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Waiter,
}

struct Client {
    s: UnixStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    mode: Mode,
    closed: bool,
}

impl Client {
    fn send(&mut self, data: &[u8]) {
        if self.closed {
            return;
        }
        self.out.extend_from_slice(data);
        self.flush();
        if self.out.len() > MAX_PENDING {
            // a client that cannot keep up is dropped; the container never waits for it
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        while !self.out.is_empty() && !self.closed {
            match self.s.write(&self.out) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.closed = true,
            }
        }
    }
}

/// Docker's multiplexed stream frame: type (1 stdout, 2 stderr), 3 zero bytes, length.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.push(stream);
    f.extend_from_slice(&[0, 0, 0]);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

struct Shim {
    args: Args,
    container: Backend,
    pid: Option<i32>,
    pidfd: Option<OwnedFd>,
    /// the pty master, or the read ends of stdout and stderr
    outputs: Vec<(OwnedFd, u8)>,
    stdin: Option<OwnedFd>,
    listener: UnixListener,
    clients: Vec<Client>,
    log: File,
    splitters: [LineSplitter; 2],
    exit_code: Option<i32>,
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Receives the pty master libcontainer sends over the console socket.
fn receive_master(listener: &UnixListener) -> io::Result<OwnedFd> {
    let (conn, _) = listener.accept()?;
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    rustix::net::recvmsg(
        &conn,
        &mut iov,
        &mut cmsg,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    for msg in cmsg.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(io::Error::other("no pty received on the console socket"))
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Creates the container (not yet started) and binds the control socket.
fn create(args: Args) -> io::Result<Shim> {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    std::fs::create_dir_all(&args.state)?;
    let runtime_root = args.state.join("rt");
    std::fs::create_dir_all(&runtime_root)?;
    let log = File::options().create(true).append(true).open(&args.log)?;
    let mut outputs = Vec::new();
    let mut stdin = None;
    let console_path = args.state.join("console.sock");
    // the container's stdio: (stdin, stdout, stderr) ends for the runtime
    let mut child_stdio: Option<(OwnedFd, OwnedFd, OwnedFd)> = None;
    let console = if args.tty {
        let _ = std::fs::remove_file(&console_path);
        Some(UnixListener::bind(&console_path)?)
    } else {
        let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let in_r = if args.stdin {
            let (in_r, in_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            stdin = Some(in_w);
            in_r
        } else {
            OwnedFd::from(File::open("/dev/null")?)
        };
        child_stdio = Some((in_r, out_w, err_w));
        outputs.push((out_r, 1u8));
        outputs.push((err_r, 2u8));
        None
    };
    let (container, pid) = match &args.runtime {
        None => {
            let mut builder = ContainerBuilder::new(args.id.clone(), SyscallType::Linux)
                .with_executor(libcontainer::workload::default::DefaultExecutor {})
                .with_root_path(&runtime_root)
                .map_err(io_err)?;
            if console.is_some() {
                builder = builder.with_console_socket(Some(&console_path));
            }
            if let Some((i, o, e)) = child_stdio {
                builder = builder.with_stdin(i).with_stdout(o).with_stderr(e);
            }
            let c = builder
                .validate_id()
                .map_err(io_err)?
                .as_init(&args.bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(io_err)?;
            let pid = c.pid().map(|p| p.as_raw());
            (Backend::Builtin(Box::new(c)), pid)
        }
        Some(binary) => {
            let pid_file = args.state.join("init.pid");
            let mut cmd = std::process::Command::new(binary);
            cmd.arg("--root")
                .arg(&runtime_root)
                .arg("create")
                .arg("--bundle")
                .arg(&args.bundle)
                .arg("--pid-file")
                .arg(&pid_file);
            if console.is_some() {
                cmd.arg("--console-socket").arg(&console_path);
            }
            cmd.arg(&args.id);
            // without a tty the runtime hands its own stdio to the container
            let err_copy = match child_stdio {
                Some((i, o, e)) => {
                    let copy = rustix::io::fcntl_dupfd_cloexec(&outputs[1].0, 0)?;
                    cmd.stdin(i).stdout(o).stderr(e);
                    Some(copy)
                }
                None => {
                    cmd.stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped());
                    None
                }
            };
            let out = cmd.output()?;
            if !out.status.success() {
                // the runtime's complaint went where the container's stderr goes
                let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
                if let Some(fd) = err_copy {
                    set_nonblocking(&fd)?;
                    let mut buf = [0u8; 8192];
                    if let Ok(n) = rustix::io::read(&fd, &mut buf) {
                        msg.push_str(String::from_utf8_lossy(&buf[..n]).trim());
                    }
                }
                return Err(io::Error::other(format!(
                    "{} create failed: {msg}",
                    binary.display()
                )));
            }
            let pid = std::fs::read_to_string(&pid_file)?
                .trim()
                .parse::<i32>()
                .ok();
            (
                Backend::Oci {
                    binary: binary.clone(),
                    root: runtime_root.clone(),
                    id: args.id.clone(),
                },
                pid,
            )
        }
    };
    if let Some(l) = console {
        let master = receive_master(&l)?;
        drop(l);
        let _ = std::fs::remove_file(&console_path);
        let dup = rustix::io::fcntl_dupfd_cloexec(&master, 0)?;
        if args.stdin {
            stdin = Some(dup);
        }
        outputs.push((master, 1u8));
    }
    for (fd, _) in &outputs {
        set_nonblocking(fd)?;
    }
    let sock = args.state.join("shim.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    listener.set_nonblocking(true)?;
    let pidfd = match pid {
        Some(p) => rustix::process::Pid::from_raw(p)
            .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
            .transpose()?,
        None => None,
    };
    Ok(Shim {
        args,
        container,
        pid,
        pidfd,
        outputs,
        stdin,
        listener,
        clients: Vec::new(),
        log,
        splitters: [LineSplitter::default(), LineSplitter::default()],
        exit_code: None,
    })
}

impl Shim {
    fn output(&mut self, stream: u8, data: &[u8]) {
        let name = if stream == 2 { "stderr" } else { "stdout" };
        let _ = self.splitters[(stream as usize).saturating_sub(1).min(1)].feed(
            &mut self.log,
            name,
            data,
        );
        let tty = self.args.tty;
        for c in &mut self.clients {
            if let Mode::Attach { stdout, stderr, .. } = c.mode {
                let wanted = if stream == 2 { stderr } else { stdout };
                if wanted {
                    if tty {
                        c.send(data);
                    } else {
                        c.send(&frame(stream, data));
                    }
                }
            }
        }
    }

    /// Reads what the container wrote; false once the stream has ended.
    fn read_output(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 32 * 1024];
        loop {
            let (fd, stream) = (&self.outputs[i].0, self.outputs[i].1);
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => return false,
                Ok(n) => self.output(stream, &buf[..n]),
                Err(rustix::io::Errno::AGAIN) => return true,
                Err(rustix::io::Errno::INTR) => continue,
                // EIO: the pty's other side is gone
                Err(_) => return false,
            }
        }
    }

    fn command(&mut self, i: usize, line: &str) {
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("start") => match self.container.start() {
                Ok(()) => format!("ok {}\n", self.pid.unwrap_or(0)),
                Err(e) => format!("error {e}\n"),
            },
            Some("pid") => format!("ok {}\n", self.pid.unwrap_or(0)),
            Some("wait") => {
                self.clients[i].mode = Mode::Waiter;
                if let Some(code) = self.exit_code {
                    format!("exit {code}\n")
                } else {
                    return;
                }
            }
            Some("kill") => {
                let sig: i32 = words
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(libc::SIGTERM);
                match self.pid {
                    // SAFETY: kill(2) with a pid we own (our child) and a signal number
                    Some(p) if unsafe { libc::kill(p, sig) } == 0 => "ok\n".to_string(),
                    Some(_) => format!("error {}\n", io::Error::last_os_error()),
                    None => "error no process\n".to_string(),
                }
            }
            Some("resize") => {
                let rows: u16 = words.next().and_then(|s| s.parse().ok()).unwrap_or(24);
                let cols: u16 = words.next().and_then(|s| s.parse().ok()).unwrap_or(80);
                match self.outputs.first().filter(|_| self.args.tty) {
                    Some((master, _)) => {
                        let ws = rustix::termios::Winsize {
                            ws_row: rows,
                            ws_col: cols,
                            ws_xpixel: 0,
                            ws_ypixel: 0,
                        };
                        match rustix::termios::tcsetwinsize(master, ws) {
                            Ok(()) => "ok\n".to_string(),
                            Err(e) => format!("error {e}\n"),
                        }
                    }
                    None => "error the container has no tty\n".to_string(),
                }
            }
            Some("attach") => {
                let flags: Vec<&str> = words.collect();
                self.clients[i].mode = Mode::Attach {
                    stdin: flags.contains(&"stdin"),
                    stdout: flags.contains(&"stdout"),
                    stderr: flags.contains(&"stderr"),
                };
                "ok\n".to_string()
            }
            Some("close-stdin") => {
                self.stdin = None;
                "ok\n".to_string()
            }
            _ => format!("error unknown command {line:?}\n"),
        };
        self.clients[i].send(reply.as_bytes());
    }

    fn client_readable(&mut self, i: usize) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match self.clients[i].s.read(&mut buf) {
                Ok(0) => {
                    self.clients[i].closed = true;
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.clients[i].closed = true;
                    return;
                }
            };
            match self.clients[i].mode {
                Mode::Attach { stdin: true, .. } => {
                    if let Some(fd) = &self.stdin {
                        let _ = write_all_fd(fd, &buf[..n]);
                    }
                }
                Mode::Attach { .. } | Mode::Waiter => {}
                Mode::Command => {
                    self.clients[i].buf.extend_from_slice(&buf[..n]);
                    while let Some(pos) = self.clients[i].buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = self.clients[i].buf.drain(..=pos).collect();
                        let line = String::from_utf8_lossy(&line).trim().to_string();
                        self.command(i, &line);
                        if self.clients[i].mode != Mode::Command {
                            // the rest of what came is stream data
                            let rest = std::mem::take(&mut self.clients[i].buf);
                            if let (Mode::Attach { stdin: true, .. }, Some(fd)) =
                                (&self.clients[i].mode, &self.stdin)
                            {
                                let _ = write_all_fd(fd, &rest);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    fn reap(&mut self) {
        loop {
            match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
                Ok(Some((pid, status))) => {
                    if Some(pid.as_raw_pid()) == self.pid {
                        let code = if let Some(c) = status.exit_status() {
                            c
                        } else if let Some(sig) = status.terminating_signal() {
                            128 + sig
                        } else {
                            255
                        };
                        self.exit_code = Some(code);
                    }
                }
                _ => return,
            }
        }
    }

    fn run(&mut self) -> io::Result<()> {
        let mut open: Vec<bool> = vec![true; self.outputs.len()];
        loop {
            self.clients.retain(|c| !c.closed);
            let mut fds: Vec<PollFd<'_>> = Vec::new();
            fds.push(PollFd::new(&self.listener, PollFlags::IN));
            let pidfd_at = self.pidfd.as_ref().map(|p| {
                fds.push(PollFd::new(p, PollFlags::IN));
                fds.len() - 1
            });
            let out_base = fds.len();
            for (i, (fd, _)) in self.outputs.iter().enumerate() {
                fds.push(PollFd::new(
                    fd,
                    if open[i] {
                        PollFlags::IN
                    } else {
                        PollFlags::empty()
                    },
                ));
            }
            let client_base = fds.len();
            for c in &self.clients {
                let mut f = PollFlags::IN;
                if !c.out.is_empty() {
                    f |= PollFlags::OUT;
                }
                fds.push(PollFd::new(&c.s, f));
            }
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            if ready[0].contains(PollFlags::IN) {
                while let Ok((s, _)) = self.listener.accept() {
                    s.set_nonblocking(true)?;
                    self.clients.push(Client {
                        s,
                        buf: Vec::new(),
                        out: Vec::new(),
                        mode: Mode::Command,
                        closed: false,
                    });
                }
            }
            for i in 0..self.outputs.len() {
                if open[i] && !ready[out_base + i].is_empty() {
                    open[i] = self.read_output(i);
                }
            }
            let n_clients = ready.len() - client_base;
            for i in 0..n_clients.min(self.clients.len()) {
                let r = ready[client_base + i];
                if r.contains(PollFlags::OUT) {
                    self.clients[i].flush();
                }
                if r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
                    self.client_readable(i);
                }
            }
            if let Some(at) = pidfd_at {
                if !ready[at].is_empty() {
                    self.reap();
                    if self.exit_code.is_some() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// After the container's init exits: last output, exit file, waiters, cleanup.
    fn finish(&mut self) {
        for i in 0..self.outputs.len() {
            self.read_output(i);
        }
        let _ = self.splitters[0].flush(&mut self.log, "stdout");
        let _ = self.splitters[1].flush(&mut self.log, "stderr");
        let code = self.exit_code.unwrap_or(255);
        let _ = write_exit_file(&self.args.state, code);
        for c in &mut self.clients {
            if c.mode == Mode::Waiter {
                c.send(format!("exit {code}\n").as_bytes());
            }
            let _ = c.s.set_nonblocking(false);
            c.flush();
            let _ = c.s.shutdown(std::net::Shutdown::Both);
        }
        self.container.delete();
        remove_cgroups(&self.args.id);
        let _ = std::fs::remove_file(self.args.state.join("shim.sock"));
    }
}

/// Kills and reaps every child of ours (we are a subreaper: orphans of the container
/// setup end up here).
fn kill_children() {
    let me = std::process::id().to_string();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // the parent pid is the second field after the parenthesised command
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string));
            if ppid.as_deref() == Some(me.as_str()) {
                // SAFETY: kill(2) on a child of ours
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::empty()) {}
}

/// Removes the container's cgroups (v1 hierarchies and the v2 tree), for a create
/// that failed half way.
pub fn remove_cgroups(id: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![base.join("berth").join(id)];
    if let Ok(rd) = std::fs::read_dir(base) {
        dirs.extend(rd.flatten().map(|e| e.path().join("berth").join(id)));
    }
    for d in dirs {
        // the last processes may still be leaving: EBUSY for a moment
        for _ in 0..50 {
            match std::fs::remove_dir(&d) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                _ => break,
            }
        }
    }
}

fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `exit`: "CODE UNIX_NANOS", written whole or not at all.
pub fn write_exit_file(state: &Path, code: i32) -> io::Result<()> {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let tmp = state.join("exit.tmp");
    std::fs::write(&tmp, format!("{code} {nanos}\n"))?;
    std::fs::rename(tmp, state.join("exit"))
}

/// Reads an exit file: (code, unix nanos).
pub fn read_exit_file(state: &Path) -> Option<(i32, i64)> {
    let s = std::fs::read_to_string(state.join("exit")).ok()?;
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The shim's whole life after the fork: create, report readiness on `ready`, serve
/// until the container exits, clean up. Returns the process exit code.
pub fn serve(args: Args, ready: OwnedFd) -> i32 {
    let mut ready = File::from(ready);
    let id = args.id.clone();
    let mut shim = match create(args) {
        Ok(s) => s,
        Err(e) => {
            // a half-made container's init may already wait for `start`, as our child
            kill_children();
            remove_cgroups(&id);
            let _ = writeln!(ready, "error {e}");
            return 1;
        }
    };
    let _ = writeln!(ready, "ok {}", shim.pid.unwrap_or(0));
    drop(ready);
    let r = shim.run();
    shim.finish();
    if r.is_err() {
        1
    } else {
        0
    }
}

/// Detaches from the caller: fork (the parent returns at once, so its caller can reap
/// it), new session, child subreaper (the container's init becomes our child).
/// Returns true in the child.
///
/// # Safety
/// Must be called while the process has a single thread.
pub unsafe fn detach() -> io::Result<bool> {
    // SAFETY: single-threaded per this function's contract, so fork is sound
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            rustix::process::setsid()?;
            rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        assert_eq!(frame(2, b"hi"), vec![2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn exit_file_round_trip() {
        let d = tempfile::tempdir().unwrap();
        write_exit_file(d.path(), 137).unwrap();
        assert_eq!(read_exit_file(d.path()).unwrap().0, 137);
    }
}
