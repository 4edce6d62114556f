//! Hosts of a test's own: network namespaces, and processes stopped when a test ends.

use std::time::{Duration, Instant};

/// A network namespace of the test's own (removed with the guard).
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("b{tag}{}", std::process::id());
        let ok = |args: &[&str]| {
            assert!(std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap()
                .success())
        };
        ok(&["netns", "add", &name]);
        ok(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        Netns(name)
    }

    pub fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// A process of a test's own (a berthd, a registry), stopped (SIGTERM, then SIGKILL
/// after 10 s) if the test ends without stopping it.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // asked first, so a berthd takes its rules away as at any stop
            // SAFETY: kill(2) of the test's own child
            unsafe {
                libc::kill(self.0.id() as i32, libc::SIGTERM);
            }
            let end = Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `f` every 50 ms until it holds, or panics after `secs` saying `what`.
pub fn until(secs: u64, what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "{what} did not happen in {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}
