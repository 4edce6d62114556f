//! A container's resource usage read from its cgroup (v1 hierarchies or the v2 tree), in
//! the shape of Docker's stats JSON (`cpu_stats`, `memory_stats`, `pids_stats`,
//! `blkio_stats`), which `docker stats` and `berth stats` turn into their rows.

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// USER_HZ: the unit of `/proc/stat` and `cpuacct.stat`.
const TICKS_PER_SEC: u64 = 100;
const NS_PER_TICK: u64 = 1_000_000_000 / TICKS_PER_SEC;

/// Where the cgroup files are: `root` (`/sys/fs/cgroup`), the container's cgroup path,
/// and whether the tree is v2.
pub struct Cgroup {
    pub root: PathBuf,
    pub path: String,
    pub v2: bool,
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

fn num(p: &Path) -> Option<u64> {
    read(p)?.trim().parse().ok()
}

/// "key value" lines (memory.stat, cpu.stat).
fn keyed(p: &Path) -> Map<String, Value> {
    read(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), json!(v.trim().parse::<u64>().ok()?)))
        })
        .collect()
}

impl Cgroup {
    fn v1(&self, controller: &str, file: &str) -> PathBuf {
        self.root
            .join(controller)
            .join(self.path.trim_start_matches('/'))
            .join(file)
    }

    fn v2(&self, file: &str) -> PathBuf {
        self.root.join(self.path.trim_start_matches('/')).join(file)
    }

    /// Whether the cgroup is there (the container runs).
    pub fn exists(&self) -> bool {
        if self.v2 {
            self.v2("cgroup.procs").exists()
        } else {
            self.v1("pids", "cgroup.procs").exists() || self.v1("memory", "cgroup.procs").exists()
        }
    }

    /// Docker's stats fields for this cgroup; `host_mem` caps an unlimited limit (as
    /// Docker shows the machine's memory for a container without a limit).
    pub fn sample(&self, host_mem: u64) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("cpu_stats".into(), self.cpu());
        out.insert("memory_stats".into(), self.memory(host_mem));
        out.insert("pids_stats".into(), self.pids());
        out.insert("blkio_stats".into(), self.blkio());
        out
    }

    fn cpu(&self) -> Value {
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let (total, user, kernel, percpu, throttle) = if self.v2 {
            let st = keyed(&self.v2("cpu.stat"));
            let us = |k: &str| st.get(k).and_then(Value::as_u64).unwrap_or(0);
            (
                us("usage_usec") * 1000,
                us("user_usec") * 1000,
                us("system_usec") * 1000,
                None,
                json!({"periods": us("nr_periods"), "throttled_periods": us("nr_throttled"), "throttled_time": us("throttled_usec") * 1000}),
            )
        } else {
            let st = keyed(&self.v1("cpuacct", "cpuacct.stat"));
            let ticks = |k: &str| st.get(k).and_then(Value::as_u64).unwrap_or(0) * NS_PER_TICK;
            let percpu: Vec<u64> = read(&self.v1("cpuacct", "cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            let cs = keyed(&self.v1("cpu", "cpu.stat"));
            let c = |k: &str| cs.get(k).and_then(Value::as_u64).unwrap_or(0);
            (
                num(&self.v1("cpuacct", "cpuacct.usage")).unwrap_or(0),
                ticks("user"),
                ticks("system"),
                Some(percpu),
                json!({"periods": c("nr_periods"), "throttled_periods": c("nr_throttled"), "throttled_time": c("throttled_time")}),
            )
        };
        let mut usage = json!({
            "total_usage": total,
            "usage_in_kernelmode": kernel,
            "usage_in_usermode": user,
        });
        if let Some(p) = percpu.filter(|p| !p.is_empty()) {
            usage["percpu_usage"] = json!(p);
        }
        json!({
            "cpu_usage": usage,
            "system_cpu_usage": system_cpu_usage(),
            "online_cpus": ncpu,
            "throttling_data": throttle,
        })
    }

    fn memory(&self, host_mem: u64) -> Value {
        let cap = |l: Option<u64>| match l {
            Some(l) if l < host_mem || host_mem == 0 => l,
            _ => host_mem,
        };
        if self.v2 {
            let limit = read(&self.v2("memory.max")).and_then(|s| s.trim().parse::<u64>().ok());
            json!({
                "usage": num(&self.v2("memory.current")).unwrap_or(0),
                "stats": keyed(&self.v2("memory.stat")),
                "limit": cap(limit),
            })
        } else {
            json!({
                "usage": num(&self.v1("memory", "memory.usage_in_bytes")).unwrap_or(0),
                "max_usage": num(&self.v1("memory", "memory.max_usage_in_bytes")).unwrap_or(0),
                "failcnt": num(&self.v1("memory", "memory.failcnt")).unwrap_or(0),
                "stats": keyed(&self.v1("memory", "memory.stat")),
                "limit": cap(num(&self.v1("memory", "memory.limit_in_bytes"))),
            })
        }
    }

    fn pids(&self) -> Value {
        let (cur, max) = if self.v2 {
            (self.v2("pids.current"), self.v2("pids.max"))
        } else {
            (self.v1("pids", "pids.current"), self.v1("pids", "pids.max"))
        };
        let mut v = json!({"current": num(&cur).unwrap_or(0)});
        if let Some(l) = num(&max) {
            v["limit"] = json!(l);
        }
        v
    }

    fn blkio(&self) -> Value {
        let mut bytes = Vec::new();
        let mut ios = Vec::new();
        let dev = |d: &str| -> Option<(u64, u64)> {
            let (a, b) = d.split_once(':')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        if self.v2 {
            // "8:0 rbytes=1 wbytes=2 rios=3 wios=4 ..."
            for line in read(&self.v2("io.stat")).unwrap_or_default().lines() {
                let mut words = line.split_whitespace();
                let Some((major, minor)) = words.next().and_then(dev) else {
                    continue;
                };
                for w in words {
                    let Some((k, v)) = w.split_once('=') else {
                        continue;
                    };
                    let v: u64 = v.parse().unwrap_or(0);
                    let entry =
                        |op: &str| json!({"major": major, "minor": minor, "op": op, "value": v});
                    match k {
                        "rbytes" => bytes.push(entry("read")),
                        "wbytes" => bytes.push(entry("write")),
                        "rios" => ios.push(entry("read")),
                        "wios" => ios.push(entry("write")),
                        _ => {}
                    }
                }
            }
        } else {
            for (file, out) in [
                ("blkio.throttle.io_service_bytes_recursive", &mut bytes),
                ("blkio.throttle.io_serviced_recursive", &mut ios),
            ] {
                // "8:0 Read 123"; a last "Total N" line has no device
                for line in read(&self.v1("blkio", file)).unwrap_or_default().lines() {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    if let [d, op, v] = w.as_slice() {
                        if let Some((major, minor)) = dev(d) {
                            out.push(json!({"major": major, "minor": minor, "op": op.to_ascii_lowercase(), "value": v.parse::<u64>().unwrap_or(0)}));
                        }
                    }
                }
            }
        }
        json!({
            "io_service_bytes_recursive": bytes,
            "io_serviced_recursive": ios,
            "io_queue_recursive": null,
            "io_service_time_recursive": null,
            "io_wait_time_recursive": null,
            "io_merged_recursive": null,
            "io_time_recursive": null,
            "sectors_recursive": null,
        })
    }
}

/// The machine's CPU time in nanoseconds (`/proc/stat`'s first line), which the CLIs
/// divide a container's usage by.
pub fn system_cpu_usage() -> u64 {
    read(Path::new("/proc/stat"))
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            let ticks: u64 = line
                .split_whitespace()
                .skip(1)
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum();
            Some(ticks * NS_PER_TICK)
        })
        .unwrap_or(0)
}

/// The stats of a container that does not run: Docker's zero values.
pub fn empty() -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "cpu_stats".into(),
        json!({"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}),
    );
    out.insert("memory_stats".into(), json!({}));
    out.insert("pids_stats".into(), json!({}));
    out.insert(
        "blkio_stats".into(),
        json!({"io_service_bytes_recursive": null, "io_serviced_recursive": null}),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn v1_files() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "memory/berth/x/memory.usage_in_bytes", "1048576\n");
        write(
            r,
            "memory/berth/x/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            r,
            "memory/berth/x/memory.stat",
            "cache 4096\ntotal_inactive_file 8192\n",
        );
        write(r, "cpuacct/berth/x/cpuacct.usage", "5000000\n");
        write(
            r,
            "cpuacct/berth/x/cpuacct.usage_percpu",
            "3000000 2000000 \n",
        );
        write(r, "cpuacct/berth/x/cpuacct.stat", "user 3\nsystem 1\n");
        write(
            r,
            "cpu/berth/x/cpu.stat",
            "nr_periods 7\nnr_throttled 2\nthrottled_time 99\n",
        );
        write(r, "pids/berth/x/pids.current", "3\n");
        write(r, "pids/berth/x/pids.max", "max\n");
        write(r, "pids/berth/x/cgroup.procs", "1\n");
        write(
            r,
            "blkio/berth/x/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 512\n8:0 Write 1024\nTotal 1536\n",
        );
        let cg = Cgroup {
            root: r.into(),
            path: "/berth/x".into(),
            v2: false,
        };
        assert!(cg.exists());
        let s = cg.sample(1 << 30);
        assert_eq!(s["memory_stats"]["usage"], 1048576);
        assert_eq!(
            s["memory_stats"]["limit"],
            1u64 << 30,
            "capped at the machine's"
        );
        assert_eq!(s["memory_stats"]["stats"]["total_inactive_file"], 8192);
        assert_eq!(s["cpu_stats"]["cpu_usage"]["total_usage"], 5000000);
        assert_eq!(
            s["cpu_stats"]["cpu_usage"]["percpu_usage"],
            json!([3000000, 2000000])
        );
        assert_eq!(s["cpu_stats"]["cpu_usage"]["usage_in_usermode"], 30_000_000);
        assert_eq!(s["cpu_stats"]["throttling_data"]["throttled_periods"], 2);
        assert_eq!(s["pids_stats"], json!({"current": 3}));
        let io = &s["blkio_stats"]["io_service_bytes_recursive"];
        assert_eq!(
            io[1],
            json!({"major": 8, "minor": 0, "op": "write", "value": 1024})
        );
        assert_eq!(io.as_array().unwrap().len(), 2);
    }

    #[test]
    fn v2_files() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "berth/x/cgroup.procs", "1\n");
        write(r, "berth/x/memory.current", "2048\n");
        write(r, "berth/x/memory.max", "67108864\n");
        write(r, "berth/x/memory.stat", "anon 1024\ninactive_file 512\n");
        write(r, "berth/x/cpu.stat", "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_periods 1\nnr_throttled 0\nthrottled_usec 0\n");
        write(r, "berth/x/pids.current", "2\n");
        write(r, "berth/x/pids.max", "100\n");
        write(
            r,
            "berth/x/io.stat",
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let cg = Cgroup {
            root: r.into(),
            path: "berth/x".into(),
            v2: true,
        };
        assert!(cg.exists());
        let s = cg.sample(1 << 30);
        assert_eq!(s["memory_stats"]["limit"], 67108864);
        assert_eq!(s["memory_stats"]["usage"], 2048);
        assert_eq!(s["cpu_stats"]["cpu_usage"]["total_usage"], 10_000);
        assert_eq!(s["pids_stats"], json!({"current": 2, "limit": 100}));
        assert_eq!(s["blkio_stats"]["io_serviced_recursive"][1]["value"], 2);
    }

    #[test]
    fn system_time_moves() {
        assert!(system_cpu_usage() > 0);
    }
}
