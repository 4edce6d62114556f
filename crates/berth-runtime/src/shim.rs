//! The per-container shim: a small single-threaded process that outlives berthd.
//!
//! It creates the container with an OCI runtime command — the built-in `berth-runtime`
//! (see `builtin`), or runc/crun — keeping it in the created state until berthd says
//! `start`, so that attached clients see all output. It owns the container's stdio
//! (pipes, or the pty master received over the console socket), writes the json-file log, fans output out to attached clients
//! (Docker's 8-byte stream frames without a tty, raw with one), forwards stdin, reaps
//! the container's init (it is a child subreaper), and writes the exit status to
//! `exit` (temp file + rename) before it exits: berthd reads that file after a restart.
//!
//! An exec shim (`--exec PROCESS_JSON`) is the same program for one `docker exec`: it
//! joins the running container's namespaces through the same runtime when berthd says
//! `start` (attached clients are connected by then), serves its stdio the same way and
//! records its exit, but keeps no log and leaves the container alone when it ends.
//!
//! Control protocol, one line per command on `shim.sock`:
//! `start` → `ok PID`; `wait` → `exit CODE` when the container exits;
//! `kill SIGNAL` → `ok`; `resize ROWS COLS` → `ok`; `pid` → `ok PID`;
//! `attach [stdin] [stdout] [stderr] [framed|raw] [once]` → `ok`, then the connection carries
//! the streams; with `once`, the end of that client's input (a half-close) closes the
//! process's stdin once everything it sent has been written there;
//! `close-stdin` → `ok`; `abort` (an exec shim not started yet) → `ok`, and it exits.
//!
//! Input for the process is queued and written as the process reads it (the pipe or
//! pty is non-blocking): a process that does not read yet (a container not started)
//! never blocks the shim, and a client whose input is not taken is not read further
//! once [`MAX_STDIN_PENDING`] is queued.
//! An exec shim that gets no `start` within a minute exits too. Errors answer
//! `error MESSAGE`.

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
    /// the json-file log (a container shim; an exec's output is not logged)
    pub log: Option<PathBuf>,
    /// rotation of the log: bytes per file (None: unlimited) and files kept
    pub log_max_size: Option<u64>,
    pub log_max_file: u32,
    pub tty: bool,
    pub stdin: bool,
    /// the OCI runtime command: `berth-runtime` (built in), runc, crun
    pub runtime: PathBuf,
    /// an exec shim: the OCI process (`process.json`) to run in the running container
    /// `id`, whose runtime state is in `runtime_root`
    pub exec: Option<PathBuf>,
    pub exec_runtime_root: Option<PathBuf>,
}

impl Args {
    /// Where the runtime keeps its state for the container.
    fn runtime_root(&self) -> PathBuf {
        self.exec_runtime_root
            .clone()
            .unwrap_or_else(|| self.state.join("rt"))
    }
}

/// The runtime that made the container: an OCI runtime command (runc's interface).
enum Backend {
    Container {
        binary: PathBuf,
        root: PathBuf,
        id: String,
    },
    /// an exec process: nothing to start or delete
    Exec,
}

impl Backend {
    fn oci(&self, args: &[&str]) -> io::Result<()> {
        let Backend::Container { binary, root, id } = self else {
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
        self.oci(&["start"])
    }

    fn delete(&mut self) {
        let _ = self.oci(&["delete", "--force"]);
    }
}

const MAX_PENDING: usize = 1 << 20;

/// Input queued for the process before its clients are read no further.
pub const MAX_STDIN_PENDING: usize = 256 << 10;

/// The lock a container's shim holds in its state directory for its whole life.
pub const LOCK_FILE: &str = "shim.lock";

/// How long a new run of a container waits for the previous run's shim, which answers
/// waiters first and then has the runtime delete the container, to finish.
pub const PREVIOUS_RUN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Takes the lock in `state` once no shim holds it (the previous run's shim has exited),
/// waiting [`PREVIOUS_RUN_WAIT`] at most. The lock lasts as long as the returned file.
pub fn lock_state(state: &Path) -> io::Result<File> {
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(state.join(LOCK_FILE))?;
    let deadline = std::time::Instant::now() + PREVIOUS_RUN_WAIT;
    loop {
        match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(f),
            Err(rustix::io::Errno::WOULDBLOCK) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(io::Error::other(
                    "the container's previous run is still being cleaned up",
                ))
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// How long an exec shim waits for `start` before it gives up and exits.
const EXEC_START_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(PartialEq)]
enum Mode {
    Command,
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
        /// output in Docker's stream frames (else raw): without a tty by default
        framed: bool,
        /// the end of this client's input closes the process's stdin
        once: bool,
    },
    Waiter,
}

struct Client {
    s: UnixStream,
    buf: Vec<u8>,
    out: Vec<u8>,
    mode: Mode,
    closed: bool,
    /// the client has sent all its input (a half-close); it still takes output
    eof: bool,
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
    /// input not yet taken by the process
    stdin_queue: Vec<u8>,
    /// stdin is closed once the queue is written
    stdin_closing: bool,
    /// the process's ends of its stdio until the runtime has made it
    child: Option<ChildStdio>,
    listener: UnixListener,
    clients: Vec<Client>,
    log: Option<crate::logs::RotatingLog>,
    splitters: [LineSplitter; 2],
    exit_code: Option<i32>,
    /// an exec that could not start
    failed: Option<String>,
    /// a container shim's [`LOCK_FILE`], held until it exits
    _lock: Option<File>,
}

fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Receives the pty master the runtime sends over the console socket.
fn receive_master(listener: &UnixListener) -> io::Result<OwnedFd> {
    // the runtime connects during its `create`, which has returned by now
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let conn = crate::deadline::accept_by(listener, deadline, "receiving the pty")?;
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

/// The container's side of its stdio, until the runtime takes it.
struct ChildStdio {
    /// (stdin, stdout, stderr) ends for the runtime, without a tty
    pipes: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    /// where the runtime sends the pty master, with a tty
    console: Option<UnixListener>,
    console_path: PathBuf,
}

/// Makes the pipes (or the console socket) and our ends of them.
fn stdio(
    args: &Args,
    outputs: &mut Vec<(OwnedFd, u8)>,
    stdin: &mut Option<OwnedFd>,
) -> io::Result<ChildStdio> {
    let console_path = args.state.join("console.sock");
    if args.tty {
        let _ = std::fs::remove_file(&console_path);
        return Ok(ChildStdio {
            pipes: None,
            console: Some(UnixListener::bind(&console_path)?),
            console_path,
        });
    }
    let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let in_r = if args.stdin {
        let (in_r, in_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        set_nonblocking(&in_w)?;
        *stdin = Some(in_w);
        in_r
    } else {
        OwnedFd::from(File::open("/dev/null")?)
    };
    outputs.push((out_r, 1u8));
    outputs.push((err_r, 2u8));
    Ok(ChildStdio {
        pipes: Some((in_r, out_w, err_w)),
        console: None,
        console_path,
    })
}

/// Runs an OCI runtime binary's `create` or `exec -d`, with the container's stdio.
fn run_oci(
    mut cmd: std::process::Command,
    io: &mut ChildStdio,
    err_out: Option<&OwnedFd>,
    what: &str,
) -> io::Result<()> {
    if io.console.is_some() {
        cmd.arg("--console-socket").arg(&io.console_path);
    }
    // without a tty the runtime hands its own stdio to the process
    let err_copy = match io.pipes.take() {
        Some((i, o, e)) => {
            cmd.stdin(i).stdout(o).stderr(e);
            err_out
                .map(|fd| rustix::io::fcntl_dupfd_cloexec(fd, 0))
                .transpose()?
        }
        None => {
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            None
        }
    };
    let out = crate::deadline::output_within(cmd, crate::deadline::RUNTIME_DEADLINE, what)?;
    if out.status.success() {
        return Ok(());
    }
    // the runtime's complaint went where the process's stderr goes
    let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if let Some(fd) = err_copy {
        set_nonblocking(&fd)?;
        let mut buf = [0u8; 8192];
        if let Ok(n) = rustix::io::read(&fd, &mut buf) {
            msg.push_str(String::from_utf8_lossy(&buf[..n]).trim());
        }
    }
    Err(io::Error::other(format!("{what} failed: {msg}")))
}

/// Creates the container (not yet started), or starts the exec process, with the
/// runtime; returns the runtime handle and the process's pid.
fn launch(
    args: &Args,
    io: &mut ChildStdio,
    err_out: Option<&OwnedFd>,
) -> io::Result<(Backend, Option<i32>)> {
    let runtime_root = args.runtime_root();
    let pid_file = args.state.join("init.pid");
    let binary = &args.runtime;
    let mut cmd = std::process::Command::new(binary);
    cmd.arg("--root").arg(&runtime_root);
    match &args.exec {
        Some(process) => {
            cmd.arg("exec").arg("-d").arg("--process").arg(process);
        }
        None => {
            cmd.arg("create").arg("--bundle").arg(&args.bundle);
        }
    }
    cmd.arg("--pid-file").arg(&pid_file);
    // the built-in runtime comes as berthd's sealed copy, /proc/self/fd/N
    let name = if binary.starts_with("/proc/self/fd") {
        "berth-runtime".into()
    } else {
        binary
            .file_name()
            .unwrap_or(binary.as_os_str())
            .to_string_lossy()
    };
    let op = if args.exec.is_some() {
        "exec"
    } else {
        "create"
    };
    let what = format!("{name} {op}");
    // the runtime wants the id last
    let mut with_id = cmd;
    with_id.arg(&args.id);
    let mut backend = if args.exec.is_some() {
        Backend::Exec
    } else {
        Backend::Container {
            binary: binary.clone(),
            root: runtime_root,
            id: args.id.clone(),
        }
    };
    if let Err(e) = run_oci(with_id, io, err_out, &what) {
        if args.exec.is_none() {
            // a create cut short (its deadline) may have left an init behind
            backend.delete();
            let cgroups = cgroups_path_of(&args.bundle, &args.id);
            crate::cgroups::kill_all(&cgroups);
            crate::cgroups::remove(&cgroups);
        }
        return Err(e);
    }
    let pid = std::fs::read_to_string(&pid_file)?
        .trim()
        .parse::<i32>()
        .ok();
    Ok((backend, pid))
}

/// Sets up stdio and the control socket; creates the container (a container shim) or
/// waits for `start` (an exec shim).
fn create(args: Args) -> io::Result<Shim> {
    std::fs::create_dir_all(&args.state)?;
    let lock = match args.exec {
        None => {
            let mut f = lock_state(&args.state)?;
            // who holds it: berthd ends a shim that stops answering (`force_end`)
            f.set_len(0)?;
            write!(f, "{}", std::process::id())?;
            Some(f)
        }
        Some(_) => None,
    };
    std::fs::create_dir_all(args.runtime_root())?;
    let log = match &args.log {
        Some(p) => Some(crate::logs::RotatingLog::open(
            p,
            args.log_max_size,
            args.log_max_file,
        )?),
        None => None,
    };
    let mut outputs = Vec::new();
    let mut stdin = None;
    let child = stdio(&args, &mut outputs, &mut stdin)?;
    let sock = args.state.join("shim.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock)?;
    listener.set_nonblocking(true)?;
    let mut shim = Shim {
        args,
        container: Backend::Exec,
        pid: None,
        pidfd: None,
        outputs,
        stdin,
        stdin_queue: Vec::new(),
        stdin_closing: false,
        child: Some(child),
        listener,
        clients: Vec::new(),
        log,
        splitters: [LineSplitter::default(), LineSplitter::default()],
        exit_code: None,
        failed: None,
        _lock: lock,
    };
    if shim.args.exec.is_none() {
        shim.launch()?;
    }
    Ok(shim)
}

impl Shim {
    /// Has the runtime make the process, then takes our ends of its stdio.
    fn launch(&mut self) -> io::Result<()> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| io::Error::other("already started"))?;
        let err_out = self.outputs.get(1).map(|(fd, _)| fd);
        let (backend, pid) = launch(&self.args, &mut child, err_out)?;
        self.container = backend;
        self.pid = pid;
        if let Some(l) = child.console.take() {
            let master = receive_master(&l)?;
            drop(l);
            let _ = std::fs::remove_file(&child.console_path);
            let dup = rustix::io::fcntl_dupfd_cloexec(&master, 0)?;
            if self.args.stdin {
                self.stdin = Some(dup);
            }
            self.outputs.push((master, 1u8));
        }
        for (fd, _) in &self.outputs {
            set_nonblocking(fd)?;
        }
        self.pidfd = match pid {
            Some(p) => rustix::process::Pid::from_raw(p)
                .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
                .transpose()?,
            None => None,
        };
        Ok(())
    }

    fn output(&mut self, stream: u8, data: &[u8]) {
        let name = if stream == 2 { "stderr" } else { "stdout" };
        if let Some(log) = &mut self.log {
            let _ =
                self.splitters[(stream as usize).saturating_sub(1).min(1)].feed(log, name, data);
        }
        for c in &mut self.clients {
            if let Mode::Attach {
                stdout,
                stderr,
                framed,
                ..
            } = c.mode
            {
                let wanted = if stream == 2 { stderr } else { stdout };
                if wanted {
                    if framed {
                        c.send(&frame(stream, data));
                    } else {
                        c.send(data);
                    }
                }
            }
        }
    }

    /// Reads what the container wrote, 256 KiB at most (a process that writes without
    /// pause never holds the loop); false once the stream has ended.
    fn read_output(&mut self, i: usize) -> bool {
        self.read_chunks(i, 8) != Some(false)
    }

    /// Reads what the container wrote up to `max` chunks: Some(true) when all of it
    /// was read, Some(false) when the stream has ended, None when more is waiting.
    fn read_chunks(&mut self, i: usize, max: usize) -> Option<bool> {
        let mut buf = [0u8; 32 * 1024];
        let mut chunks = 0;
        while chunks < max {
            let (fd, stream) = (&self.outputs[i].0, self.outputs[i].1);
            match rustix::io::read(fd, &mut buf) {
                Ok(0) => return Some(false),
                Ok(n) => {
                    chunks += 1;
                    self.output(stream, &buf[..n])
                }
                Err(rustix::io::Errno::AGAIN) => return Some(true),
                Err(rustix::io::Errno::INTR) => continue,
                // EIO: the pty's other side is gone
                Err(_) => return Some(false),
            }
        }
        None
    }

    fn command(&mut self, i: usize, line: &str) {
        let mut words = line.split_whitespace();
        let reply = match words.next() {
            Some("start") => {
                let started = if self.args.exec.is_some() {
                    self.launch()
                } else {
                    let before = self.pid.and_then(exe_of);
                    self.container.start().inspect(|_| {
                        if let Some(pid) = self.pid {
                            settle(pid, before, SETTLE_LIMIT);
                        }
                        // what it wrote by now is in the log before `start` answers
                        for i in 0..self.outputs.len() {
                            self.read_output(i);
                        }
                    })
                };
                match started {
                    Ok(()) => {
                        // the runtime's work is done: its code and memory can go
                        release_memory();
                        format!("ok {}\n", self.pid.unwrap_or(0))
                    }
                    Err(e) => {
                        if self.args.exec.is_some() && self.pid.is_none() {
                            // nothing will ever exit: say so to waiters and stop
                            self.exit_code = Some(exit_code_for_error(&e.to_string()));
                            self.failed = Some(e.to_string());
                        }
                        format!("error {}\n", e.to_string().replace('\n', " "))
                    }
                }
            }
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
                    // nothing to resize: not an error, as dockerd answers
                    None => "ok\n".to_string(),
                }
            }
            Some("attach") => {
                let flags: Vec<&str> = words.collect();
                // `framed`/`raw`: what the client asked for, whatever the tty
                let framed = if flags.contains(&"framed") {
                    true
                } else if flags.contains(&"raw") {
                    false
                } else {
                    !self.args.tty
                };
                self.clients[i].mode = Mode::Attach {
                    stdin: flags.contains(&"stdin"),
                    stdout: flags.contains(&"stdout"),
                    stderr: flags.contains(&"stderr"),
                    framed,
                    once: flags.contains(&"once"),
                };
                "ok\n".to_string()
            }
            Some("abort") if self.pid.is_none() && self.args.exec.is_some() => {
                // an exec that will not be started after all
                self.exit_code = Some(126);
                self.failed = Some("aborted".into());
                "ok\n".to_string()
            }
            Some("close-stdin") => {
                self.close_stdin();
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
                    if let Mode::Attach { once: true, .. } = self.clients[i].mode {
                        // all its input is in: the process's stdin ends after it
                        self.clients[i].eof = true;
                        self.close_stdin();
                    } else {
                        self.clients[i].closed = true;
                    }
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
                    self.queue_stdin(&buf[..n]);
                    if self.stdin_queue.len() >= MAX_STDIN_PENDING {
                        // the rest waits in the socket until the process reads
                        return;
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
                            if let Mode::Attach { stdin: true, .. } = self.clients[i].mode {
                                self.queue_stdin(&rest);
                            }
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Queues input for the process and writes what it takes now.
    fn queue_stdin(&mut self, data: &[u8]) {
        if self.stdin.is_none() || data.is_empty() {
            return;
        }
        self.stdin_queue.extend_from_slice(data);
        self.flush_stdin();
    }

    /// Writes queued input as far as the process takes it; closes stdin once the
    /// queue is empty if that was asked. A process that closed its stdin loses the rest.
    fn flush_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.stdin_queue.clear();
            return;
        };
        let mut done = 0;
        let mut gone = false;
        while done < self.stdin_queue.len() {
            match rustix::io::write(fd, &self.stdin_queue[done..]) {
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        self.stdin_queue.drain(..done);
        if gone {
            self.stdin = None;
            self.stdin_queue.clear();
        } else if self.stdin_closing && self.stdin_queue.is_empty() {
            self.stdin = None;
        }
    }

    fn close_stdin(&mut self) {
        self.stdin_closing = true;
        self.flush_stdin();
    }

    /// Whether a client's input is read now: not after its end, and not while the
    /// process has [`MAX_STDIN_PENDING`] of input it has not taken.
    fn reads_client(&self, c: &Client) -> bool {
        if c.eof {
            return false;
        }
        match c.mode {
            Mode::Attach { stdin: true, .. } => self.stdin_queue.len() < MAX_STDIN_PENDING,
            _ => true,
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
        let mut open: Vec<bool> = Vec::new();
        let born = std::time::Instant::now();
        loop {
            if self.failed.is_some() {
                return Ok(());
            }
            open.resize(self.outputs.len(), true);
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
            let stdin_at = match &self.stdin {
                Some(fd) if !self.stdin_queue.is_empty() => {
                    fds.push(PollFd::new(fd, PollFlags::OUT));
                    Some(fds.len() - 1)
                }
                _ => None,
            };
            let client_base = fds.len();
            // a client held back (its input waits for the process) with nothing to
            // send is left out: poll would report its hang-up over and over
            let mut polled = Vec::with_capacity(self.clients.len());
            for (i, c) in self.clients.iter().enumerate() {
                let mut f = if self.reads_client(c) {
                    PollFlags::IN
                } else {
                    PollFlags::empty()
                };
                if !c.out.is_empty() {
                    f |= PollFlags::OUT;
                }
                if f.is_empty() && !c.eof {
                    continue;
                }
                fds.push(PollFd::new(&c.s, f));
                polled.push(i);
            }
            // an exec shim that is never told to start gives up after a while
            let timeout = match (&self.args.exec, self.pid) {
                (Some(_), None) => {
                    let left = EXEC_START_WAIT.saturating_sub(born.elapsed());
                    if left.is_zero() {
                        self.exit_code = Some(126);
                        self.failed = Some("never started".into());
                        return Ok(());
                    }
                    Some(rustix::event::Timespec {
                        tv_sec: left.as_secs() as i64,
                        tv_nsec: left.subsec_nanos() as i64,
                    })
                }
                _ => None,
            };
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
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
                        eof: false,
                    });
                }
            }
            for i in 0..self.outputs.len() {
                if open[i] && !ready[out_base + i].is_empty() {
                    open[i] = self.read_output(i);
                }
            }
            if let Some(at) = stdin_at {
                if !ready[at].is_empty() {
                    self.flush_stdin();
                }
            }
            for (k, &i) in polled.iter().enumerate() {
                let r = ready[client_base + k];
                if r.contains(PollFlags::OUT) {
                    self.clients[i].flush();
                }
                if self.clients[i].eof {
                    // only output goes to it now; a hang-up means it is gone
                    if r.intersects(PollFlags::HUP | PollFlags::ERR) {
                        self.clients[i].closed = true;
                    }
                } else if r.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) {
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
        // a process never made (an exec aborted or never started): its ends of the
        // pipes go, so what is left to read ends instead of waiting on ourselves
        self.child = None;
        for i in 0..self.outputs.len() {
            self.read_chunks(i, usize::MAX);
        }
        if let Some(log) = &mut self.log {
            let _ = self.splitters[0].flush(log, "stdout");
            let _ = self.splitters[1].flush(log, "stderr");
        }
        let code = self.exit_code.unwrap_or(255);
        let cgroups = match self.args.exec {
            None => Some(cgroups_path(&self.args)),
            Some(_) => None,
        };
        let oom = cgroups.as_deref().is_some_and(oom_killed);
        let _ = write_exit_file(&self.args.state, code, oom);
        // gone before the waiters hear: the next shim of the container binds it anew
        let _ = std::fs::remove_file(self.args.state.join("shim.sock"));
        for c in &mut self.clients {
            if c.mode == Mode::Waiter {
                c.send(format!("exit {code}\n").as_bytes());
            }
            let _ = c.s.set_nonblocking(false);
            c.flush();
            let _ = c.s.shutdown(std::net::Shutdown::Both);
        }
        // the runtime's cleanup is off the waiters' path; the next run of the container
        // waits for our lock (`lock_state`) before it makes it again
        match &cgroups {
            Some(path) => {
                self.container.delete();
                crate::cgroups::remove(path);
            }
            None => reap_remaining(),
        }
    }
}

/// Docker's codes for a process that could not be started: 127 not found, 126 not
/// executable.
pub fn exit_code_for_error(msg: &str) -> i32 {
    let m = msg.to_ascii_lowercase();
    if m.contains("no such file") || m.contains("not found") {
        127
    } else {
        126
    }
}

/// The exit code dockerd gives an exec (or container) whose process could not be
/// started: 127 when the error says its command `cmd` is not found, 126 when it may not
/// be run, 127 for a mount of a directory on a file (ENOTDIR), 126 otherwise.
pub fn exit_code_for_start_error(cmd: &str, msg: &str) -> i32 {
    let m = msg.to_ascii_lowercase();
    let missing =
        m.contains("executable file not found") || m.contains("no such file or directory");
    if m.contains("permission denied") {
        126
    } else if m.contains("not a directory") || (missing && !cmd.is_empty() && msg.contains(cmd)) {
        127
    } else {
        126
    }
}

/// Reaps the children still ours (the runtime's helpers of an exec that failed), for a
/// moment at most: whatever we leave would become a zombie of the machine's init.
fn reap_remaining() {
    for _ in 0..100 {
        match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
            Ok(Some(_)) => continue,
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(_) => return, // ECHILD: none left
        }
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

/// The container's cgroup (`linux.cgroupsPath` of its bundle; berth's default place
/// if the bundle does not say).
fn cgroups_path(args: &Args) -> String {
    cgroups_path_of(&args.bundle, &args.id)
}

fn cgroups_path_of(bundle: &Path, id: &str) -> String {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("/berth/{id}"))
}

/// The pid of the container shim that holds the lock in `state` (0 if it did not say),
/// or None when no shim holds it.
pub fn lock_holder(state: &Path) -> Option<i32> {
    let mut f = File::open(state.join(LOCK_FILE)).ok()?;
    match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => None,
        Err(_) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            Some(s.trim().parse().unwrap_or(0))
        }
    }
}

/// Ends the container shim of `state` for a removal: waits `grace` for it to exit (it
/// was asked to kill the process), then kills it and the container's init, and removes
/// the container's cgroups, which the shim would have done.
pub fn force_end(state: &Path, bundle: &Path, id: &str, grace: std::time::Duration) {
    let deadline = std::time::Instant::now() + grace;
    let mut holder = lock_holder(state);
    while holder.is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        holder = lock_holder(state);
    }
    let Some(shim) = holder else {
        return;
    };
    let cgroups = cgroups_path_of(bundle, id);
    let comm = |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if shim > 0 && comm(shim).trim() == "berth-shim" {
        // the shim leads a session of its own: its process group holds a runtime
        // command under way (a `create` not yet done) too
        // SAFETY: getsid(2) only reads
        let leader = unsafe { libc::getsid(shim) } == shim;
        let group = if leader { -shim } else { shim };
        // SAFETY: kill(2) of the process (group) that holds the container's shim lock
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
    }
    // the container's processes, now nobody's: every one in its cgroups (again once the
    // lock is free, for an init a killed runtime had just put there)
    crate::cgroups::kill_all(&cgroups);
    for _ in 0..100 {
        if lock_holder(state).is_none() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    crate::cgroups::kill_all(&cgroups);
    crate::cgroups::remove(&cgroups);
}

/// A container whose shim died without recording an exit: every process left in its
/// cgroups is killed and the cgroups removed (as containerd does for a lost shim), so
/// nothing of a container reported exited keeps running. Gives how many were killed.
pub fn end_orphaned(bundle: &Path, id: &str) -> usize {
    let cgroups = cgroups_path_of(bundle, id);
    let killed = crate::cgroups::kill_all(&cgroups);
    crate::cgroups::remove(&cgroups);
    killed
}

/// `exit`: "CODE UNIX_NANOS[ oom]", written whole or not at all.
pub fn write_exit_file(state: &Path, code: i32, oom: bool) -> io::Result<()> {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let tmp = state.join("exit.tmp");
    let oom = if oom { " oom" } else { "" };
    std::fs::write(&tmp, format!("{code} {nanos}{oom}\n"))?;
    std::fs::rename(tmp, state.join("exit"))
}

/// Whether the exit file says the kernel's OOM killer killed a process of the container.
pub fn exit_was_oom(state: &Path) -> bool {
    std::fs::read_to_string(state.join("exit"))
        .map(|s| s.split_whitespace().nth(2) == Some("oom"))
        .unwrap_or(false)
}

/// Whether the OOM killer has killed in the cgroup at `path` (v1 `memory.oom_control`,
/// v2 `memory.events`: their `oom_kill` counter).
pub fn oom_killed(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    [
        base.join("memory").join(rel).join("memory.oom_control"),
        base.join(rel).join("memory.events"),
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .any(|text| {
        text.lines().any(|l| {
            l.strip_prefix("oom_kill ")
                .and_then(|n| n.trim().parse::<u64>().ok())
                .is_some_and(|n| n > 0)
        })
    })
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
    let exec = args.exec.is_some();
    let cgroups = if exec {
        String::new()
    } else {
        cgroups_path(&args)
    };
    let mut shim = match create(args) {
        Ok(s) => s,
        Err(e) => {
            // a half-made container's init may already wait for `start`, as our child
            kill_children();
            if !exec {
                crate::cgroups::remove(&cgroups);
            }
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

/// Gives back what the creation needed and the watching does not: the allocator's free
/// memory, and the pages of our executable and libraries that were only used to create
/// the container (the runtime's code). Only mappings that are read-only and hold no page
/// of their own (all identical to the file) are dropped: the kernel reads a page back
/// from the page cache if it is used again. A shim then keeps about what its poll loop
/// touches.
pub fn release_memory() {
    // SAFETY: malloc_trim only returns free memory to the system
    unsafe {
        libc::malloc_trim(0);
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut current: Option<(usize, usize, bool)> = None;
    let mut drop_ranges = Vec::new();
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or_default();
        if let Some((a, b)) = first
            .split_once('-')
            .filter(|(a, _)| a.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            let perms = parts.next().unwrap_or_default();
            let path = parts.nth(3).unwrap_or_default();
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                current = None;
                continue;
            };
            let candidate = path.starts_with('/') && !perms.contains('w');
            current = Some((start, end, candidate));
        } else if first == "Anonymous:" {
            if let Some((start, end, true)) = current {
                if parts.next() == Some("0") {
                    drop_ranges.push((start, end - start));
                }
            }
        }
    }
    for (start, len) in drop_ranges {
        // SAFETY: the range is a whole read-only file mapping with no private pages:
        // dropping it only makes the next access read the file's page again
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
}

/// How long a container's `start` waits at most for its command to settle.
pub const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_millis(10);

/// The file a process runs (device and inode of `/proc/PID/exe`).
fn exe_of(pid: i32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(format!("/proc/{pid}/exe")).ok()?;
    Some((md.dev(), md.ino()))
}

/// A process's state letter (`R`, `S`, `D`, `Z`…), None once it is gone.
fn state_of(pid: i32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    stat.get(close + 2).copied()
}

/// Waits, `limit` at most, until the process that ran `before` (the runtime's init) has
/// executed the container's command and that command has settled: it waits for
/// something (input, a timer, a child, room in a pipe) or has exited. The runtime's `start` returns
/// just before the command is executed; answering only now makes `start` mean the
/// command runs, and a `logs` or `top` right after it sees what its first instants did,
/// as clients of Docker (whose start answers well after that) take for granted.
fn settle(pid: i32, before: Option<(u64, u64)>, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    let mut executed = before.is_none();
    loop {
        executed = executed || exe_of(pid).is_some_and(|e| Some(e) != before);
        match state_of(pid) {
            None | Some(b'Z' | b'X' | b'x') => return,
            // running, or waiting for the disk (reading its program, its files)
            Some(b'R' | b'D') => {}
            Some(_) if executed => return,
            Some(_) => {}
        }
        if std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
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
        write_exit_file(d.path(), 137, false).unwrap();
        assert_eq!(read_exit_file(d.path()).unwrap().0, 137);
        assert!(!exit_was_oom(d.path()));
        write_exit_file(d.path(), 137, true).unwrap();
        assert_eq!(read_exit_file(d.path()).unwrap().0, 137);
        assert!(exit_was_oom(d.path()));
    }

    fn spawn(script: &str) -> std::process::Child {
        std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .unwrap()
    }

    #[test]
    fn settle_waits_for_the_command_to_exit_or_wait() {
        let limit = std::time::Duration::from_secs(5);
        // a command that ends: settled once it is a zombie
        let mut c = spawn("exit 3");
        let t = std::time::Instant::now();
        settle(c.id() as i32, None, limit);
        assert!(t.elapsed() < limit);
        assert_eq!(state_of(c.id() as i32), Some(b'Z'));
        c.wait().unwrap();
        assert_eq!(state_of(c.id() as i32), None);

        // a command that waits (for its child) is settled; one still running the
        // program it started as (`before`) is not, though it waits too
        let mut c = spawn("sleep 0.2; exec sleep 5");
        let pid = c.id() as i32;
        let before = exe_of(pid);
        assert!(before.is_some());
        let t = std::time::Instant::now();
        settle(pid, before, limit);
        let took = t.elapsed();
        assert!(took >= std::time::Duration::from_millis(200), "{took:?}");
        assert!(took < limit, "{took:?}");
        assert_ne!(exe_of(pid), before);
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn settle_gives_up_on_a_busy_command() {
        let mut c = spawn("while :; do :; done");
        let limit = std::time::Duration::from_millis(100);
        let t = std::time::Instant::now();
        settle(c.id() as i32, None, limit);
        assert!(t.elapsed() >= limit);
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
