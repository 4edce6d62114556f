//! The built-in runtime as a command, `berth-runtime`, with runc's interface: `create`,
//! `start`, `exec -d`, `kill`, `delete`, `state`, `pause`, `resume`, on youki's
//! libcontainer.
//!
//! The shim runs it the way it runs runc, so none of the runtime is ever mapped into the
//! shim: the shim stays a small poll loop for the container's whole life (its memory is
//! what it touches, and the runtime's code and relocated data are not part of it), while
//! the runtime runs once per operation. The container's init is re-parented to the shim,
//! a child subreaper, when `create` returns.
//!
//! Without `--console-socket` the process gets the runtime's own stdin, stdout and
//! stderr, as with runc.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use std::path::{Path, PathBuf};

/// One operation on a container; the container is `--root`/ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Create {
        bundle: PathBuf,
        pid_file: Option<PathBuf>,
        console_socket: Option<PathBuf>,
    },
    Start,
    /// a process in the running container (always detached: its parent is the caller)
    Exec {
        process: PathBuf,
        pid_file: Option<PathBuf>,
        console_socket: Option<PathBuf>,
    },
    Kill {
        signal: String,
        all: bool,
    },
    Delete {
        force: bool,
    },
    /// prints the OCI state as JSON
    State,
    Pause,
    Resume,
    /// applies new limits (an OCI `linux.resources` JSON file) to the running container
    Update {
        resources: PathBuf,
    },
}

/// A sealed in-memory copy of the executable at `path`: a memfd with its write, grow,
/// shrink and seal seals set, which nothing can change (CVE-2019-5736: a process that
/// enters a container must not be an executable the container could write through
/// `/proc/PID/exe`). berthd makes one at start and shims run the runtime from it.
pub fn sealed_copy(path: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let mut exe = std::fs::File::open(path)?;
    let memfd = rustix::fs::memfd_create(
        "berth-runtime",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut copy = std::fs::File::from(memfd);
    std::io::copy(&mut exe, &mut copy)?;
    rustix::fs::fcntl_add_seals(
        &copy,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    Ok(copy.into())
}

/// Whether this process runs from a sealed copy.
fn running_sealed() -> bool {
    std::fs::File::open("/proc/self/exe")
        .ok()
        .and_then(|f| rustix::fs::fcntl_get_seals(&f).ok())
        .is_some_and(|s| s.contains(rustix::fs::SealFlags::WRITE))
}

/// Before `create` and `exec`, a runtime not started from a sealed copy (run by hand,
/// or by something other than berth's shim) re-executes itself from one, as runc does,
/// so `/proc/self/exe` of anything it starts in the container is never the host's
/// binary. Returns only when running sealed.
pub fn reexec_sealed() -> Result<(), String> {
    if running_sealed() {
        return Ok(());
    }
    let copy = sealed_copy(Path::new("/proc/self/exe")).map_err(err)?;
    let args: Vec<std::ffi::CString> = std::env::args_os()
        .map(|a| std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let env: Vec<std::ffi::CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = std::os::unix::ffi::OsStrExt::as_bytes(k.as_os_str()).to_vec();
            kv.push(b'=');
            kv.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()));
            std::ffi::CString::new(kv).ok()
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of valid C strings that outlive
    // the call; fexecve only returns on failure
    unsafe {
        libc::fexecve(
            std::os::fd::AsRawFd::as_raw_fd(&copy),
            argv.as_ptr(),
            envp.as_ptr(),
        );
    }
    Err(format!(
        "re-executing from a sealed copy: {}",
        std::io::Error::last_os_error()
    ))
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn builder(root: &Path, id: &str, console: Option<&PathBuf>) -> Result<ContainerBuilder, String> {
    let mut b = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_executor(libcontainer::workload::default::DefaultExecutor {})
        .with_root_path(root)
        .map_err(err)?;
    if let Some(path) = console {
        b = b.with_console_socket(Some(path));
    }
    b.validate_id().map_err(err)
}

/// Writes a pid file whole or not at all (the shim reads it as soon as we return).
fn write_pid_file(path: &Path, pid: i32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn load(root: &Path, id: &str) -> Result<Container, String> {
    let dir = root.join(id);
    if !dir.exists() {
        return Err(format!("container {id} does not exist"));
    }
    Container::load(dir).map_err(err)
}

/// Parses a signal as runc does: a number, or a name with or without `SIG`.
pub fn parse_signal(s: &str) -> Result<libcontainer::signal::Signal, String> {
    match s.parse::<i32>() {
        Ok(n) => libcontainer::signal::Signal::try_from(n).map_err(err),
        Err(_) => libcontainer::signal::Signal::try_from(s).map_err(err),
    }
}

/// The working directory an OCI file (a bundle's config, an exec's process) gives.
fn cwd_in(file: &Path, pointer: &str) -> String {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.pointer(pointer)
                .and_then(|c| c.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "/".into())
}

/// A failed create or exec, with the cause the init recorded.
fn explained(
    rec: Option<&crate::initerr::Recorded>,
    e: impl std::fmt::Display,
    cwd: &str,
) -> String {
    match rec {
        Some(r) => r.explain(&err(e), cwd),
        None => err(e),
    }
}

/// Carries out `op` on container `id` under `root`; prints what `state` shows.
pub fn run(root: &Path, id: &str, op: Op) -> Result<(), String> {
    std::fs::create_dir_all(root).map_err(err)?;
    match op {
        Op::Create {
            bundle,
            pid_file,
            console_socket,
        } => {
            let cwd = cwd_in(&bundle.join("config.json"), "/process/cwd");
            let rec = crate::initerr::record();
            let (bundle, executor) = confine_init(root, id, &bundle)?;
            let c = builder(root, id, console_socket.as_ref())?
                .with_executor(executor)
                .as_init(&bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
                .map_err(|e| explained(rec.as_ref(), e, &cwd))?;
            if let (Some(path), Some(pid)) = (pid_file, c.pid()) {
                write_pid_file(&path, pid.as_raw())?;
            }
            Ok(())
        }
        Op::Start => load(root, id)?.start().map_err(err),
        Op::Exec {
            process,
            pid_file,
            console_socket,
        } => {
            let cwd = cwd_in(&process, "/cwd");
            let rec = crate::initerr::record();
            let (process, executor) = confine_exec(root, id, &process)?;
            let pid = builder(root, id, console_socket.as_ref())?
                .with_executor(executor)
                .as_tenant()
                .with_process(Some(&process))
                .with_detach(true)
                .build()
                .map_err(|e| explained(rec.as_ref(), e, &cwd))?;
            if let Some(path) = pid_file {
                write_pid_file(&path, pid.as_raw())?;
            }
            Ok(())
        }
        Op::Kill { signal, all } => load(root, id)?
            .kill(parse_signal(&signal)?, all)
            .map_err(err),
        Op::Delete { force } => {
            let _ = std::fs::remove_dir_all(root.join(format!("{id}.bundle")));
            if !root.join(id).exists() && force {
                return Ok(());
            }
            load(root, id)?.delete(force).map_err(err)
        }
        Op::State => {
            let c = load(root, id)?;
            let json = serde_json::to_string_pretty(&c.state).map_err(err)?;
            println!("{json}");
            Ok(())
        }
        Op::Pause => load(root, id)?.pause().map_err(err),
        Op::Resume => load(root, id)?.resume().map_err(err),
        Op::Update { resources } => update(root, id, &resources),
    }
}

/// The seccomp filter of a container, compiled once: libcontainer would compile the
/// profile with libseccomp at every create and exec (tens of milliseconds for Docker's
/// profile on three architectures), and its tenant builder (exec) drops it altogether.
/// So the runtime compiles it to BPF itself, keeps the result by the profile's digest
/// (in `$BERTH_SECCOMP_CACHE`, which berthd sets), and loads it just before the
/// process's own executable starts, as runc does — before the capabilities are
/// lowered, since loading needs CAP_SYS_ADMIN unless no-new-privileges is set: the
/// process is made with CAP_SYS_ADMIN and CAP_SETPCAP added and ends with exactly its
/// own set.
#[derive(Clone)]
struct ConfinedExecutor {
    bpf: Option<Vec<libc::sock_filter>>,
    caps: Option<libcontainer::oci_spec::runtime::LinuxCapabilities>,
    /// for an exec into a container with a user namespace: that namespace, which
    /// libcontainer's tenant builder does not join
    userns: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

impl libcontainer::workload::Executor for ConfinedExecutor {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        use libcontainer::workload::ExecutorError;
        if let Some(ns) = &self.userns {
            join_userns(ns, spec)
                .map_err(|e| ExecutorError::Other(format!("joining the user namespace: {e}")))?;
        }
        if let Some(bpf) = &self.bpf {
            load_bpf(bpf).map_err(|e| ExecutorError::Other(format!("loading seccomp: {e}")))?;
        }
        if let Some(caps) = &self.caps {
            let sys = libcontainer::syscall::syscall::create_syscall();
            libcontainer::capabilities::drop_privileges(caps, sys.as_ref())
                .map_err(|e| ExecutorError::Other(format!("dropping capabilities: {e}")))?;
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// Enters the container's user namespace (gaining a full capability set there) and
/// takes the process's user and groups as IDs of that namespace; the capabilities are
/// lowered after.
fn join_userns(
    ns: &std::os::fd::OwnedFd,
    spec: &libcontainer::oci_spec::runtime::Spec,
) -> std::io::Result<()> {
    use rustix::thread::{Gid, LinkNameSpaceType, Uid};
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(ns),
        Some(LinkNameSpaceType::User),
    )?;
    let user = spec
        .process()
        .as_ref()
        .map(|p| p.user().clone())
        .unwrap_or_default();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    rustix::thread::set_thread_groups(&groups)?;
    rustix::thread::set_thread_res_gid(
        Gid::from_raw(user.gid()),
        Gid::from_raw(user.gid()),
        Gid::from_raw(user.gid()),
    )?;
    rustix::thread::set_thread_res_uid(
        Uid::from_raw(user.uid()),
        Uid::from_raw(user.uid()),
        Uid::from_raw(user.uid()),
    )?;
    Ok(())
}

fn load_bpf(bpf: &[libc::sock_filter]) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: bpf.len() as u16,
        filter: bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl(2) with a filter program that outlives the call; the kernel copies it
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn scmp_arch(a: libcontainer::oci_spec::runtime::Arch) -> Result<libseccomp::ScmpArch, String> {
    use libcontainer::oci_spec::runtime::Arch;
    use libseccomp::ScmpArch;
    Ok(match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        other => return Err(format!("seccomp architecture {other:?} is not supported")),
    })
}

fn scmp_action(
    a: libcontainer::oci_spec::runtime::LinuxSeccompAction,
    errno: Option<u32>,
) -> libseccomp::ScmpAction {
    use libcontainer::oci_spec::runtime::LinuxSeccompAction as A;
    use libseccomp::ScmpAction;
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(errno),
        A::ScmpActTrace => ScmpAction::Trace(errno as u16),
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActNotify => ScmpAction::Notify,
        A::ScmpActLog => ScmpAction::Log,
    }
}

/// An OCI seccomp section as a BPF program (libseccomp's compilation, the same rules
/// libcontainer would add).
fn compile_bpf(sc: &libcontainer::oci_spec::runtime::LinuxSeccomp) -> Result<Vec<u8>, String> {
    use libcontainer::oci_spec::runtime::LinuxSeccompOperator as Op;
    use libseccomp::{ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
    let default = scmp_action(sc.default_action(), sc.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).map_err(err)?;
    for a in sc.architectures().iter().flatten() {
        ctx.add_arch(scmp_arch(*a)?).map_err(err)?;
    }
    ctx.set_ctl_nnp(false).map_err(err)?;
    for rule in sc.syscalls().iter().flatten() {
        let action = scmp_action(rule.action(), rule.errno_ret());
        if action == default {
            continue;
        }
        for name in rule.names() {
            // a syscall this libseccomp does not know cannot be made here either
            let Ok(call) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let args = rule.args().clone().unwrap_or_default();
            if args.is_empty() {
                ctx.add_rule(action, call).map_err(err)?;
                continue;
            }
            let cmps: Vec<ScmpArgCompare> = args
                .iter()
                .map(|a| {
                    let op = match a.op() {
                        Op::ScmpCmpNe => ScmpCompareOp::NotEqual,
                        Op::ScmpCmpLt => ScmpCompareOp::Less,
                        Op::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
                        Op::ScmpCmpEq => ScmpCompareOp::Equal,
                        Op::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
                        Op::ScmpCmpGt => ScmpCompareOp::Greater,
                        Op::ScmpCmpMaskedEq => {
                            ScmpCompareOp::MaskedEqual(a.value_two().unwrap_or(0))
                        }
                    };
                    ScmpArgCompare::new(a.index() as u32, op, a.value())
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            if args.iter().all(|a| seen.insert(a.index())) {
                ctx.add_rule_conditional(action, call, &cmps).map_err(err)?;
            } else {
                // one comparison per argument and rule: separate rules, as runc does
                for c in &cmps {
                    ctx.add_rule_conditional(action, call, std::slice::from_ref(c))
                        .map_err(err)?;
                }
            }
        }
    }
    // exported through an in-memory file (libseccomp 2.5 writes BPF to a descriptor)
    let memfd =
        rustix::fs::memfd_create("seccomp-bpf", rustix::fs::MemfdFlags::CLOEXEC).map_err(err)?;
    ctx.export_bpf(&memfd).map_err(err)?;
    let mut f = std::fs::File::from(memfd);
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).map_err(err)?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut out).map_err(err)?;
    Ok(out)
}

/// The compiled filter for `sc`, from the cache when it is there.
fn bpf_for(sc: &libcontainer::oci_spec::runtime::LinuxSeccomp) -> Result<Vec<u8>, String> {
    use sha2::Digest;
    let cache = std::env::var_os("BERTH_SECCOMP_CACHE").map(PathBuf::from);
    let key = hex::encode(sha2::Sha256::digest(serde_json::to_vec(sc).map_err(err)?));
    if let Some(dir) = &cache {
        if let Ok(b) = std::fs::read(dir.join(format!("{key}.bpf"))) {
            if !b.is_empty() && b.len() % 8 == 0 {
                return Ok(b);
            }
        }
    }
    let bpf = compile_bpf(sc)?;
    if let Some(dir) = &cache {
        // whole or not at all: another runtime may read it at the same moment
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!("{key}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bpf).is_ok() {
            let _ = std::fs::rename(&tmp, dir.join(format!("{key}.bpf")));
        }
    }
    Ok(bpf)
}

fn parse_bpf(bytes: &[u8]) -> Vec<libc::sock_filter> {
    bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect()
}

/// A process's capabilities widened by CAP_SYS_ADMIN and CAP_SETPCAP (to load a filter
/// and then lower them), and the set it is to end with; None when no-new-privileges
/// makes loading unprivileged.
fn widen(
    proc: &mut libcontainer::oci_spec::runtime::Process,
) -> Option<libcontainer::oci_spec::runtime::LinuxCapabilities> {
    use libcontainer::oci_spec::runtime::{Capability, LinuxCapabilities};
    if proc.no_new_privileges() == Some(true) {
        return None;
    }
    let wanted = proc.capabilities().clone().unwrap_or_default();
    let add = |s: &Option<std::collections::HashSet<Capability>>| {
        let mut s = s.clone().unwrap_or_default();
        s.insert(Capability::SysAdmin);
        s.insert(Capability::Setpcap);
        Some(s)
    };
    let mut wider = wanted.clone();
    wider
        .set_bounding(add(wanted.bounding()))
        .set_effective(add(wanted.effective()))
        .set_permitted(add(wanted.permitted()));
    proc.set_capabilities(Some(wider));
    let mut end = LinuxCapabilities::default();
    end.set_bounding(Some(wanted.bounding().clone().unwrap_or_default()))
        .set_effective(Some(wanted.effective().clone().unwrap_or_default()))
        .set_permitted(Some(wanted.permitted().clone().unwrap_or_default()))
        .set_inheritable(None)
        .set_ambient(None);
    Some(end)
}

/// For `create`: a container with a seccomp profile is made from a copy of its bundle
/// (`ROOT/ID.bundle`) without it, beside the compiled filter, and an executor that
/// loads the filter.
fn confine_init(
    root: &Path,
    id: &str,
    bundle: &Path,
) -> Result<(PathBuf, ConfinedExecutor), String> {
    use libcontainer::oci_spec::runtime::Spec;
    let none = ConfinedExecutor {
        bpf: None,
        caps: None,
        userns: None,
    };
    let mut spec = Spec::load(bundle.join("config.json")).map_err(err)?;
    let Some(sc) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok((bundle.to_path_buf(), none));
    };
    let bpf = bpf_for(&sc)?;
    let own = root.join(format!("{id}.bundle"));
    std::fs::create_dir_all(&own).map_err(err)?;
    std::fs::write(own.join("seccomp.bpf"), &bpf).map_err(err)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
    }
    if let Some(r) = spec.root_mut() {
        if r.path().is_relative() {
            let abs = bundle.join(r.path());
            r.set_path(abs);
        }
    }
    let mut caps = None;
    if let Some(p) = spec.process_mut() {
        caps = widen(p);
    }
    spec.save(own.join("config.json")).map_err(err)?;
    Ok((
        own,
        ConfinedExecutor {
            bpf: Some(parse_bpf(&bpf)),
            caps,
            userns: None,
        },
    ))
}

/// For `exec`: the container's filter (kept beside its bundle by `create`) applies to
/// the new process too; the process file given to the tenant builder is widened.
fn confine_exec(
    root: &Path,
    id: &str,
    process: &Path,
) -> Result<(PathBuf, ConfinedExecutor), String> {
    use libcontainer::oci_spec::runtime::Process;
    let c = load(root, id)?;
    let userns = container_userns(&c)?;
    let Ok(bpf) = std::fs::read(c.bundle().join("seccomp.bpf")) else {
        let mut proc: Process = serde_json::from_slice(
            &std::fs::read(process).map_err(|e| format!("{}: {e}", process.display()))?,
        )
        .map_err(|e| format!("invalid process: {e}"))?;
        if userns.is_none() {
            return Ok((
                process.to_path_buf(),
                ConfinedExecutor {
                    bpf: None,
                    caps: None,
                    userns,
                },
            ));
        }
        // joining the user namespace needs CAP_SYS_ADMIN, dropped after
        let caps = widen(&mut proc);
        let confined = process.with_extension("confined.json");
        std::fs::write(&confined, serde_json::to_vec(&proc).map_err(err)?).map_err(err)?;
        return Ok((
            confined,
            ConfinedExecutor {
                bpf: None,
                caps,
                userns,
            },
        ));
    };
    let mut proc: Process = serde_json::from_slice(
        &std::fs::read(process).map_err(|e| format!("{}: {e}", process.display()))?,
    )
    .map_err(|e| format!("invalid process: {e}"))?;
    let caps = widen(&mut proc);
    let confined = process.with_extension("confined.json");
    std::fs::write(&confined, serde_json::to_vec(&proc).map_err(err)?).map_err(err)?;
    Ok((
        confined,
        ConfinedExecutor {
            bpf: Some(parse_bpf(&bpf)),
            caps,
            userns,
        },
    ))
}

/// The user namespace of a container made with one of its own, opened from its init
/// process (before the exec's process enters the container's other namespaces).
fn container_userns(
    c: &libcontainer::container::Container,
) -> Result<Option<std::sync::Arc<std::os::fd::OwnedFd>>, String> {
    use libcontainer::oci_spec::runtime::{LinuxNamespaceType, Spec};
    let spec = Spec::load(c.bundle().join("config.json")).map_err(err)?;
    let own = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none())
        });
    if !own {
        return Ok(None);
    }
    let pid = c.pid().ok_or("the container is not running")?;
    let f = std::fs::File::open(format!("/proc/{}/ns/user", pid.as_raw()))
        .map_err(|e| format!("the container's user namespace: {e}"))?;
    Ok(Some(std::sync::Arc::new(f.into())))
}

/// `update --resources FILE`: the new limits go to the container's cgroup.
fn update(root: &Path, id: &str, resources: &Path) -> Result<(), String> {
    use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt};
    let c = load(root, id)?;
    let text = std::fs::read(resources).map_err(|e| format!("{}: {e}", resources.display()))?;
    let res: libcontainer::oci_spec::runtime::LinuxResources =
        serde_json::from_slice(&text).map_err(|e| format!("invalid resources: {e}"))?;
    let config = libcontainer::config::YoukiConfig::load(&c.root).map_err(err)?;
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(err)?;
    manager
        .apply(&ControllerOpt {
            resources: &res,
            disable_oom_killer: res
                .memory()
                .as_ref()
                .and_then(|m| m.disable_oom_killer())
                .unwrap_or(false),
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        let name = |s: &str| format!("{:?}", parse_signal(s).unwrap());
        assert_eq!(name("9"), name("KILL"));
        assert_eq!(name("SIGTERM"), name("15"));
        assert_ne!(name("SIGTERM"), name("9"));
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn missing_containers_are_named() {
        let d = tempfile::tempdir().unwrap();
        let e = run(d.path(), "nothere", Op::Start).unwrap_err();
        assert!(e.contains("nothere"), "{e}");
        // a forced delete of nothing is not an error, as runc's
        run(d.path(), "nothere", Op::Delete { force: true }).unwrap();
    }
}
