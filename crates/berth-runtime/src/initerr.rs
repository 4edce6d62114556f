//! What went wrong inside a container's init, in words a user can act on. libcontainer's
//! init reports a failure to its parent as the error's top line only (`failed to unix
//! syscall` for a `chdir` that failed), and logs the cause through `tracing`. The
//! runtime keeps those error events in a memfd (the init is a fork and inherits it; it
//! is close-on-exec, so the container's program never sees it) and, when the create or
//! exec fails, says what runc says for the same cause.

use rustix::fd::OwnedFd;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};

/// The error events of this process (and of the processes it forks), one per line.
pub struct Recorder {
    fd: OwnedFd,
    next_span: AtomicU64,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl tracing::Subscriber for Recorder {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() == Level::ERROR
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut line = Line(String::new());
        e.record(&mut line);
        line.0.push('\n');
        // one write(2) per line: the init and its parent append to the same file
        let _ = rustix::io::write(&self.fd, line.0.as_bytes());
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Starts recording; the returned handle reads what was recorded.
pub fn record() -> Option<Recorded> {
    let fd = rustix::fs::memfd_create("init-errors", rustix::fs::MemfdFlags::CLOEXEC).ok()?;
    let reader = rustix::io::fcntl_dupfd_cloexec(&fd, 0).ok()?;
    let rec = Recorder {
        fd,
        next_span: AtomicU64::new(0),
    };
    tracing::subscriber::set_global_default(rec).ok()?;
    Some(Recorded(reader))
}

/// The recorded events.
pub struct Recorded(OwnedFd);

impl Recorded {
    fn text(&self) -> String {
        let path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&self.0));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// `failure` (libcontainer's top line) said as runc says it when the recorded
    /// events show the cause; `cwd` is the process's working directory.
    pub fn explain(&self, failure: &str, cwd: &str) -> String {
        explain(&self.text(), failure, cwd)
    }
}

/// runc's words for an errno name (Go's `syscall.Errno` strings).
fn errno_words(name: &str) -> String {
    match name {
        "ENOENT" => "no such file or directory".into(),
        "ENOTDIR" => "not a directory".into(),
        "EACCES" => "permission denied".into(),
        "EPERM" => "operation not permitted".into(),
        "ELOOP" => "too many levels of symbolic links".into(),
        "ENAMETOOLONG" => "file name too long".into(),
        other => other.to_lowercase(),
    }
}

fn explain(events: &str, failure: &str, cwd: &str) -> String {
    for line in events.lines() {
        if line.starts_with("failed to chdir") {
            let errno = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("e=").or_else(|| w.strip_prefix("err=")))
                .unwrap_or("EINVAL");
            return format!(
                "chdir to cwd ({cwd:?}) set in config.json failed: {}",
                errno_words(errno)
            );
        }
    }
    match events.lines().last() {
        Some(last) if !failure.contains(last) => format!("{failure} ({last})"),
        _ => failure.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn causes_in_runcs_words() {
        let ev = "failed to chdir e=ENOENT\nfailed to run container process err=Other\n";
        assert_eq!(
            super::explain(ev, "failed to unix syscall", "/proc/self/fd/5"),
            "chdir to cwd (\"/proc/self/fd/5\") set in config.json failed: no such file or directory"
        );
        assert_eq!(
            super::explain(
                "failed to mount x err=EPERM\n",
                "failed to prepare rootfs",
                "/"
            ),
            "failed to prepare rootfs (failed to mount x err=EPERM)"
        );
        assert_eq!(super::explain("", "boom", "/"), "boom");
    }
}
