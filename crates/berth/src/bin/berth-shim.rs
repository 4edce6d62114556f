//! `berth-shim`: one per running container, started by berthd. See berth-runtime's
//! `shim` module for what it does and its control protocol.
//!
//! Usage: berth-shim --id ID --bundle DIR --state DIR [--log FILE [--log-max-size N] [--log-max-file N]] --ready-fd N [--tty] [--stdin] --runtime PATH
//!        berth-shim --exec PROCESS_JSON --runtime-root DIR --id ID --state DIR --ready-fd N [--tty] [--stdin] --runtime PATH

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

fn usage(msg: &str) -> ! {
    eprintln!("berth-shim: {msg}\nusage: berth-shim --id ID --bundle DIR --state DIR [--log FILE [--log-max-size N] [--log-max-file N]] --ready-fd N [--tty] [--stdin] --runtime PATH\n       berth-shim --exec PROCESS_JSON --runtime-root DIR --id ID --state DIR --ready-fd N [--tty] [--stdin] --runtime PATH");
    std::process::exit(2);
}

fn main() {
    let mut id = None;
    let mut bundle = None;
    let mut state = None;
    let mut log = None;
    let mut ready_fd: Option<i32> = None;
    let (mut tty, mut stdin) = (false, false);
    let mut runtime = None;
    let (mut log_max_size, mut log_max_file) = (None, 1u32);
    let (mut exec, mut runtime_root) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--id" => id = Some(val()),
            "--bundle" => bundle = Some(PathBuf::from(val())),
            "--state" => state = Some(PathBuf::from(val())),
            "--log" => log = Some(PathBuf::from(val())),
            "--ready-fd" => {
                ready_fd = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|_| usage("--ready-fd takes a number")),
                )
            }
            "--runtime" => runtime = Some(PathBuf::from(val())),
            "--log-max-size" => {
                log_max_size = Some(
                    val()
                        .parse()
                        .unwrap_or_else(|_| usage("--log-max-size takes a number")),
                )
            }
            "--log-max-file" => {
                log_max_file = val()
                    .parse()
                    .unwrap_or_else(|_| usage("--log-max-file takes a number"))
            }
            "--exec" => exec = Some(PathBuf::from(val())),
            "--runtime-root" => runtime_root = Some(PathBuf::from(val())),
            "--tty" => tty = true,
            "--stdin" => stdin = true,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let (Some(id), Some(state), Some(fd), Some(runtime)) = (id, state, ready_fd, runtime) else {
        usage("missing arguments");
    };
    if exec.is_none() && bundle.is_none() {
        usage("a container shim needs --bundle");
    }
    if exec.is_some() != runtime_root.is_some() {
        usage("--exec and --runtime-root go together");
    }
    if fd < 3 {
        usage("--ready-fd must be above 2");
    }
    // nothing else berthd's side may have left open goes further
    berth_runtime::cloexec_inherited(&[]);
    // SAFETY: the caller handed us this fd number for our exclusive use
    let ready = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: nothing has started a thread yet
    match unsafe { berth_runtime::shim::detach() } {
        Ok(true) => {}
        Ok(false) => std::process::exit(0),
        Err(e) => {
            eprintln!("berth-shim: detaching: {e}");
            std::process::exit(1);
        }
    }
    // our own stdio goes nowhere: berthd has stopped listening to it
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which we own
            unsafe {
                libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), target);
            }
        }
    }
    let args = berth_runtime::shim::Args {
        id,
        bundle: bundle.unwrap_or_default(),
        state,
        log,
        log_max_size,
        log_max_file,
        tty,
        stdin,
        runtime,
        exec,
        exec_runtime_root: runtime_root,
    };
    std::process::exit(berth_runtime::shim::serve(args, ready));
}
