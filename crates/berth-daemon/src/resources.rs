//! Resource limits: what the machine's cgroups can do (detected once at start and shown
//! in `info`), Docker's checks of a HostConfig's limits (its words, its warnings, its
//! defaults), and the OCI `linux.resources`, rlimits and `/dev/shm` size they become.

use crate::error::EngineError;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Docker's smallest memory limit and reservation.
pub const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// `/dev/shm` when the request says nothing.
pub const DEFAULT_SHM: i64 = 64 * 1024 * 1024;
/// The cgroup parent of every container unless `--cgroup-parent` says otherwise.
pub const DEFAULT_PARENT: &str = "/berth";

/// What the cgroups of this machine offer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysInfo {
    /// cgroup v2 alone (a v1 hierarchy with or without a v2 mount is "1", as Docker says)
    pub v2: bool,
    /// v1 controllers and a v2 mount without controllers
    pub hybrid: bool,
    pub memory: bool,
    pub swap: bool,
    pub swappiness: bool,
    pub oom_kill_disable: bool,
    pub cpu_shares: bool,
    pub cpu_cfs: bool,
    /// v1 `cpu.rt_runtime_us` (v2 has no real-time controls)
    pub cpu_realtime: bool,
    pub cpuset: bool,
    pub pids: bool,
    pub blkio_weight: bool,
    pub ncpu: usize,
    /// the online CPUs and memory nodes, as the kernel lists them ("0-3")
    pub cpus: String,
    pub mems: String,
}

impl SysInfo {
    /// Looks at `/sys/fs/cgroup` (the root of a v1 tree, or a v2 mount).
    pub fn detect() -> SysInfo {
        Self::detect_at(Path::new("/sys/fs/cgroup"))
    }

    pub fn detect_at(root: &Path) -> SysInfo {
        let v2 = rustix::fs::statfs(root)
            .map(|s| s.f_type == 0x6367_7270)
            .unwrap_or(false);
        Self::detect_as(root, v2)
    }

    /// Reads `root` as a v2 mount (`v2`) or as the root of v1 hierarchies.
    pub fn detect_as(root: &Path, v2: bool) -> SysInfo {
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let online_cpus = read(Path::new("/sys/devices/system/cpu/online"));
        let online_mems = read(Path::new("/sys/devices/system/node/online"));
        if v2 {
            let controllers = read(&root.join("cgroup.controllers"));
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            let cpus = read(&root.join("cpuset.cpus.effective"));
            let mems = read(&root.join("cpuset.mems.effective"));
            return SysInfo {
                v2: true,
                hybrid: false,
                memory: has("memory"),
                swap: has("memory"),
                swappiness: false,
                oom_kill_disable: false,
                cpu_shares: has("cpu"),
                cpu_cfs: has("cpu"),
                cpu_realtime: false,
                cpuset: has("cpuset"),
                pids: has("pids"),
                blkio_weight: has("io"),
                ncpu,
                cpus: first_nonempty(&[cpus, online_cpus, format!("0-{}", ncpu - 1)]),
                mems: first_nonempty(&[mems, online_mems, "0".into()]),
            };
        }
        let ctl = |c: &str, file: &str| root.join(c).join(file).exists();
        SysInfo {
            v2: false,
            hybrid: root.join("unified").is_dir(),
            memory: ctl("memory", "memory.limit_in_bytes"),
            swap: ctl("memory", "memory.memsw.limit_in_bytes"),
            swappiness: ctl("memory", "memory.swappiness"),
            oom_kill_disable: ctl("memory", "memory.oom_control"),
            cpu_shares: ctl("cpu", "cpu.shares"),
            cpu_cfs: ctl("cpu", "cpu.cfs_quota_us"),
            cpu_realtime: ctl("cpu", "cpu.rt_runtime_us"),
            cpuset: ctl("cpuset", "cpuset.cpus"),
            pids: root.join("pids").join("cgroup.procs").exists(),
            blkio_weight: ctl("blkio", "blkio.weight"),
            ncpu,
            cpus: first_nonempty(&[
                read(&root.join("cpuset/cpuset.cpus")),
                online_cpus,
                format!("0-{}", ncpu - 1),
            ]),
            mems: first_nonempty(&[
                read(&root.join("cpuset/cpuset.mems")),
                online_mems,
                "0".into(),
            ]),
        }
    }

    /// Docker's `CgroupVersion`.
    pub fn version(&self) -> &'static str {
        if self.v2 {
            "2"
        } else {
            "1"
        }
    }

    /// What `info` warns about, in Docker's words.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let mut say = |ok: bool, what: &str| {
            if !ok {
                w.push(format!("WARNING: No {what}"));
            }
        };
        say(self.memory, "memory limit support");
        say(self.swap, "swap limit support");
        if !self.v2 {
            say(self.oom_kill_disable, "oom kill disable support");
        }
        say(self.cpu_cfs, "cpu cfs quota support");
        say(self.cpu_cfs, "cpu cfs period support");
        say(self.cpu_shares, "cpu shares support");
        say(self.cpuset, "cpuset support");
        say(self.pids, "pids limit support");
        say(self.blkio_weight, "blkio weight support");
        say(self.blkio_weight, "blkio weight_device support");
        w
    }
}

fn first_nonempty(v: &[String]) -> String {
    v.iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_default()
}

/// Parses a cpuset list ("0-2,4") into its members.
pub fn parse_set(s: &str) -> Option<Vec<u32>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return None;
        }
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if a > b || b - a > 1 << 16 {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

fn int(hc: &Value, key: &str) -> i64 {
    hc[key].as_i64().unwrap_or(0)
}

fn bad(msg: impl Into<String>) -> EngineError {
    EngineError::invalid(msg)
}

/// Docker's checks of the limits in `hc`, on create (`update` false) and on update.
/// Settings the machine cannot apply are dropped from `hc` with a warning, as Docker
/// does; defaults Docker fills in (swap twice the memory) are filled in. Returns the
/// warnings.
pub fn verify(hc: &mut Value, sys: &SysInfo, update: bool) -> Result<Vec<String>, EngineError> {
    let mut warnings = Vec::new();
    let mut memory = int(hc, "Memory");
    let swap = int(hc, "MemorySwap");
    if memory < 0 {
        return Err(bad("invalid memory limit: must be positive"));
    }
    if memory != 0 && memory < MIN_MEMORY {
        return Err(bad("Minimum memory limit allowed is 6MB"));
    }
    if memory > 0 && !sys.memory {
        warnings.push("Your kernel does not support memory limit capabilities or the cgroup is not mounted. Limitation discarded.".to_string());
        hc["Memory"] = json!(0);
        hc["MemorySwap"] = json!(0);
        memory = 0;
    }
    if memory > 0 && swap != -1 && !sys.swap {
        warnings.push("Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap.".to_string());
        hc["MemorySwap"] = json!(-1);
    }
    if memory > 0 && swap > 0 && swap < memory {
        return Err(bad(
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ));
    }
    if memory == 0 && swap > 0 && !update {
        return Err(bad(
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ));
    }
    if let Some(s) = hc["MemorySwappiness"].as_i64() {
        if s != -1 && !(0..=100).contains(&s) {
            return Err(bad(format!(
                "Invalid value: {s}, valid memory swappiness range is 0-100"
            )));
        }
        if s != -1 && !sys.swappiness {
            warnings.push("Your kernel does not support memory swappiness capabilities or the cgroup is not mounted. Memory swappiness discarded.".to_string());
            hc["MemorySwappiness"] = Value::Null;
        }
    }
    let reservation = int(hc, "MemoryReservation");
    if reservation < 0 {
        return Err(bad("invalid memory reservation: must be positive"));
    }
    if reservation != 0 && reservation < MIN_MEMORY {
        return Err(bad("Minimum memory reservation allowed is 6MB"));
    }
    if memory > 0 && reservation > 0 && memory < reservation {
        return Err(bad(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ));
    }
    if hc["OomKillDisable"].as_bool().unwrap_or(false) {
        if !sys.oom_kill_disable {
            warnings.push(
                "Your kernel does not support OomKillDisable. OomKillDisable discarded."
                    .to_string(),
            );
            hc["OomKillDisable"] = json!(false);
        } else if memory == 0 {
            warnings.push("OOM killer is disabled for the container, but no memory limit is set, this can result in the system running out of resources.".to_string());
        }
    }
    let nano = int(hc, "NanoCpus");
    let (period, quota) = (int(hc, "CpuPeriod"), int(hc, "CpuQuota"));
    if nano > 0 && period > 0 {
        return Err(bad(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    if nano > 0 && quota > 0 {
        return Err(bad(
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set",
        ));
    }
    if nano < 0 || nano > sys.ncpu as i64 * 1_000_000_000 {
        return Err(bad(format!(
            "Range of CPUs is from 0.01 to {n}.00, as there are only {n} CPUs available",
            n = sys.ncpu
        )));
    }
    if nano > 0 && !sys.cpu_cfs {
        return Err(bad("NanoCPUs can not be set, as your kernel does not support CPU CFS scheduler or the cgroup is not mounted"));
    }
    if int(hc, "CpuShares") < 0 {
        return Err(bad(format!(
            "invalid CPU shares ({}): value must be a positive integer",
            int(hc, "CpuShares")
        )));
    }
    if int(hc, "CpuShares") > 0 && !sys.cpu_shares {
        warnings.push("Your kernel does not support CPU shares or the cgroup is not mounted. Shares discarded.".to_string());
        hc["CpuShares"] = json!(0);
    }
    if (period > 0 || quota > 0) && !sys.cpu_cfs {
        warnings.push("Your kernel does not support CPU CFS scheduler or the cgroup is not mounted. CPU period and quota discarded.".to_string());
        hc["CpuPeriod"] = json!(0);
        hc["CpuQuota"] = json!(0);
    }
    for (key, what) in [
        ("CpuRealtimePeriod", "period"),
        ("CpuRealtimeRuntime", "runtime"),
    ] {
        if int(hc, key) > 0 && !sys.cpu_realtime {
            warnings.push(format!(
                "Your kernel does not support cgroup cpu real-time {what}. {} discarded.",
                if what == "period" {
                    "Period"
                } else {
                    "Runtime"
                }
            ));
            hc[key] = json!(0);
        }
    }
    let (rt_period, rt_runtime) = (int(hc, "CpuRealtimePeriod"), int(hc, "CpuRealtimeRuntime"));
    if rt_period != 0 && rt_runtime != 0 && rt_runtime > rt_period {
        return Err(bad(
            "cpu real-time runtime cannot be higher than cpu real-time period",
        ));
    }
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return Err(bad(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        ));
    }
    if quota > 0 && quota < 1000 {
        return Err(bad("CPU cfs quota can not be less than 1ms (i.e. 1000)"));
    }
    for (key, what, available) in [
        ("CpusetCpus", "cpus", &sys.cpus),
        ("CpusetMems", "mems", &sys.mems),
    ] {
        let Some(req) = hc[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
        else {
            continue;
        };
        if !sys.cpuset {
            warnings.push("Your kernel does not support cpuset or the cgroup is not mounted. Cpuset discarded.".to_string());
            hc[key] = json!("");
            continue;
        }
        let Some(wanted) = parse_set(&req) else {
            return Err(bad(format!("Invalid value {req} for cpuset {what}")));
        };
        let have = parse_set(available).unwrap_or_default();
        if wanted.iter().any(|c| !have.contains(c)) {
            let noun = if what == "cpus" {
                "CPUs"
            } else {
                "memory nodes"
            };
            return Err(bad(format!(
                "Requested {noun} are not available - requested {req}, available: {available}"
            )));
        }
    }
    if int(hc, "IOMaximumBandwidth") != 0 || int(hc, "IOMaximumIOps") != 0 {
        return Err(bad(
            "Invalid QoS settings: linux does not support Maximum IO Bandwidth or Maximum IO IOps",
        ));
    }
    for (key, what) in [("CpuPercent", "CPU percent"), ("CpuCount", "CPU count")] {
        if int(hc, key) > 0 {
            warnings.push(format!(
                "linux does not support {what}. {} discarded.",
                if key == "CpuPercent" {
                    "Percent"
                } else {
                    "Count"
                }
            ));
            hc[key] = json!(0);
        }
    }
    for key in [
        "BlkioWeightDevice",
        "BlkioDeviceReadBps",
        "BlkioDeviceWriteBps",
        "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps",
    ] {
        for d in hc[key].as_array().into_iter().flatten() {
            let path = d["Path"].as_str().unwrap_or_default();
            if device_numbers(path).is_none() {
                return Err(bad(format!("{path:?} is not a block device")));
            }
        }
    }
    if hc["BlkioWeightDevice"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
        && !sys.blkio_weight
    {
        warnings.push("Your kernel does not support Block I/O weight_device or the cgroup is not mounted. Weight-device discarded.".to_string());
        hc["BlkioWeightDevice"] = json!([]);
    }
    let weight = int(hc, "BlkioWeight");
    if weight > 0 && !sys.blkio_weight {
        warnings.push("Your kernel does not support Block I/O weight or the cgroup is not mounted. Weight discarded.".to_string());
        hc["BlkioWeight"] = json!(0);
    } else if weight > 0 && !(10..=1000).contains(&weight) {
        return Err(bad("Range of blkio weight is from 10 to 1000"));
    }
    if int(hc, "PidsLimit") > 0 && !sys.pids {
        warnings.push("Your kernel does not support PIDs limit capabilities or the cgroup is not mounted. PIDs limit discarded.".to_string());
        hc["PidsLimit"] = Value::Null;
    }
    if !update {
        if int(hc, "ShmSize") < 0 {
            return Err(bad("SHM size can not be less than 0"));
        }
        if int(hc, "ShmSize") == 0 {
            hc["ShmSize"] = json!(DEFAULT_SHM);
        }
        // Docker's default: as much swap as memory
        if int(hc, "Memory") > 0 && int(hc, "MemorySwap") == 0 && sys.swap {
            hc["MemorySwap"] = json!(int(hc, "Memory") * 2);
        }
        if let Some(p) = hc["CgroupParent"].as_str().filter(|p| !p.is_empty()) {
            if p.split('/').any(|c| c == "..") {
                return Err(bad(format!("invalid cgroup parent {p:?}")));
            }
        }
        verify_ulimits(&hc["Ulimits"])?;
    }
    Ok(warnings)
}

/// The rlimit names Docker accepts (`--ulimit NAME=SOFT[:HARD]`).
const RLIMITS: &[(&str, libc::__rlimit_resource_t)] = &[
    ("as", libc::RLIMIT_AS),
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

fn verify_ulimits(v: &Value) -> Result<(), EngineError> {
    for u in v.as_array().into_iter().flatten() {
        let name = u["Name"].as_str().unwrap_or_default();
        if !RLIMITS.iter().any(|(n, _)| *n == name) {
            return Err(bad(format!("invalid ulimit type: {name}")));
        }
        let (soft, hard) = (
            u["Soft"].as_i64().unwrap_or(0),
            u["Hard"].as_i64().unwrap_or(0),
        );
        if soft > hard && hard >= 0 {
            return Err(bad(format!(
                "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )));
        }
    }
    Ok(())
}

/// capability(7) number of CAP_SYS_RESOURCE
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process may raise hard rlimits (CAP_SYS_RESOURCE in its effective set).
fn may_raise_rlimits() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// The container's rlimits: the request's `Ulimits` over daemon.json's
/// `default-ulimits`. Nothing is set that the request does not ask for, so nothing is
/// raised by default; a hard limit above ours that we may not raise is refused here,
/// naming the limit, rather than by the runtime.
pub fn rlimits(hc: &Value, defaults: &Map<String, Value>) -> Result<Vec<Value>, EngineError> {
    let mut wanted: Vec<(String, i64, i64)> = Vec::new();
    for (name, d) in defaults {
        wanted.push((
            name.clone(),
            d["Soft"].as_i64().unwrap_or(0),
            d["Hard"].as_i64().unwrap_or(0),
        ));
    }
    for u in hc["Ulimits"].as_array().into_iter().flatten() {
        let name = u["Name"].as_str().unwrap_or_default().to_string();
        wanted.retain(|(n, _, _)| *n != name);
        wanted.push((
            name,
            u["Soft"].as_i64().unwrap_or(0),
            u["Hard"].as_i64().unwrap_or(0),
        ));
    }
    let privileged = may_raise_rlimits();
    let mut out = Vec::new();
    for (name, soft, hard) in wanted {
        let Some((_, res)) = RLIMITS.iter().find(|(n, _)| *n == name) else {
            return Err(bad(format!("invalid ulimit type: {name}")));
        };
        let to_u64 = |v: i64| if v < 0 { u64::MAX } else { v as u64 };
        let (soft, hard) = (to_u64(soft), to_u64(hard));
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit(2) fills the struct we pass
        unsafe {
            libc::getrlimit(*res, &mut cur);
        }
        if hard > cur.rlim_max && !privileged {
            let show = |v: u64| {
                if v == u64::MAX {
                    "unlimited".to_string()
                } else {
                    v.to_string()
                }
            };
            return Err(bad(format!(
                "cannot set ulimit {name} to {}:{}: the hard limit here is {}, and raising it needs CAP_SYS_RESOURCE, which berthd does not have",
                show(soft),
                show(hard),
                show(cur.rlim_max)
            )));
        }
        out.push(json!({"type": format!("RLIMIT_{}", name.to_ascii_uppercase()), "soft": soft, "hard": hard}));
    }
    Ok(out)
}

/// The OCI `linux.resources` (without devices) for `hc`.
pub fn linux_resources(hc: &Value) -> Value {
    let mut r = Map::new();
    let mut memory = Map::new();
    let pos = |key: &str| Some(int(hc, key)).filter(|v| *v > 0);
    if let Some(m) = pos("Memory") {
        memory.insert("limit".into(), json!(m));
    }
    // a swap limit means something only beside a memory limit
    match int(hc, "MemorySwap") {
        0 => {}
        _ if pos("Memory").is_none() => {}
        s => {
            memory.insert("swap".into(), json!(s));
        }
    }
    if let Some(m) = pos("MemoryReservation") {
        memory.insert("reservation".into(), json!(m));
    }
    if let Some(s) = hc["MemorySwappiness"].as_i64().filter(|s| *s >= 0) {
        memory.insert("swappiness".into(), json!(s));
    }
    if hc["OomKillDisable"].as_bool().unwrap_or(false) {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if !memory.is_empty() {
        r.insert("memory".into(), Value::Object(memory));
    }
    let mut cpu = Map::new();
    if let Some(s) = pos("CpuShares") {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(n) = pos("NanoCpus") {
        let period = 100_000i64;
        cpu.insert("period".into(), json!(period));
        cpu.insert("quota".into(), json!(n * period / 1_000_000_000));
    } else {
        if let Some(p) = pos("CpuPeriod") {
            cpu.insert("period".into(), json!(p));
        }
        if let Some(q) = pos("CpuQuota") {
            cpu.insert("quota".into(), json!(q));
        }
    }
    for (key, field) in [("CpusetCpus", "cpus"), ("CpusetMems", "mems")] {
        if let Some(s) = hc[key].as_str().filter(|s| !s.is_empty()) {
            cpu.insert(field.into(), json!(s));
        }
    }
    if let Some(p) = pos("CpuRealtimePeriod") {
        cpu.insert("realtimePeriod".into(), json!(p));
    }
    if let Some(r) = pos("CpuRealtimeRuntime") {
        cpu.insert("realtimeRuntime".into(), json!(r));
    }
    if !cpu.is_empty() {
        r.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(p) = pos("PidsLimit") {
        r.insert("pids".into(), json!({"limit": p}));
    }
    let mut block = Map::new();
    if let Some(w) = pos("BlkioWeight") {
        block.insert("weight".into(), json!(w));
    }
    // per-device weights and throttles, by the device's major and minor numbers
    for (key, field, value) in [
        ("BlkioWeightDevice", "weightDevice", "Weight"),
        ("BlkioDeviceReadBps", "throttleReadBpsDevice", "Rate"),
        ("BlkioDeviceWriteBps", "throttleWriteBpsDevice", "Rate"),
        ("BlkioDeviceReadIOps", "throttleReadIOPSDevice", "Rate"),
        ("BlkioDeviceWriteIOps", "throttleWriteIOPSDevice", "Rate"),
    ] {
        let list: Vec<Value> = hc[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let (major, minor) = device_numbers(d["Path"].as_str()?)?;
                let v = d[value].as_u64()?;
                let name = if value == "Weight" { "weight" } else { "rate" };
                Some(json!({"major": major, "minor": minor, name: v}))
            })
            .collect();
        if !list.is_empty() {
            block.insert(field.into(), json!(list));
        }
    }
    if !block.is_empty() {
        r.insert("blockIO".into(), Value::Object(block));
    }
    Value::Object(r)
}

/// The major and minor numbers of the block device at `path` (block IO limits are
/// kept per block device).
pub fn device_numbers(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let md = std::fs::metadata(path).ok()?;
    if !md.file_type().is_block_device() {
        return None;
    }
    let rdev = md.rdev();
    Some((
        u64::from(rustix::fs::major(rdev)),
        u64::from(rustix::fs::minor(rdev)),
    ))
}

/// The container's cgroup path (`cgroupsPath`): under `--cgroup-parent`, or berth's.
/// The controllers whose v1 hierarchies hold every container's cgroup (the runtimes
/// make one in each).
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// What containers see at `/sys/fs/cgroup` on this machine: cgroup2 alone, or the v1
/// controller hierarchies mounted under `/sys/fs/cgroup` (`mountinfo`: this process's
/// `/proc/self/mountinfo`).
pub fn cgroup_view(sys: &SysInfo, mountinfo: &str) -> berth_runtime::spec::CgroupView {
    use berth_runtime::spec::{CgroupView, V1Hierarchy};
    if sys.v2 {
        return CgroupView::Unified;
    }
    let mut out: Vec<V1Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split_whitespace();
        if r.next() != Some("cgroup") {
            continue;
        }
        let opts = r.nth(1).unwrap_or_default();
        let Some(point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let Some(base) = point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if base.is_empty() || base.contains('/') {
            continue;
        }
        let ctrls: Vec<&str> = opts
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o))
            .collect();
        if ctrls.is_empty() || out.iter().any(|h| h.mount_point == Path::new(point)) {
            continue;
        }
        let mut names = vec![base.to_string()];
        if ctrls.len() > 1 {
            names.extend(ctrls.iter().map(|c| c.to_string()));
        }
        names.dedup();
        out.push(V1Hierarchy {
            mount_point: point.into(),
            names,
        });
    }
    if out.is_empty() {
        CgroupView::None
    } else {
        CgroupView::V1(out)
    }
}

pub fn cgroup_path(hc: &Value, short_id: &str) -> String {
    let parent = hc["CgroupParent"]
        .as_str()
        .filter(|p| !p.is_empty())
        .unwrap_or(DEFAULT_PARENT);
    format!("/{}/{short_id}", parent.trim_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_view_of_hybrid_and_comounted_hierarchies() {
        use berth_runtime::spec::{CgroupView, V1Hierarchy};
        let mi = "\
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
38 35 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
39 35 0:34 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
40 35 0:35 / /sys/fs/cgroup/rdma rw,nosuid - cgroup cgroup rw,rdma
41 24 0:36 / /mnt/elsewhere rw - cgroup cgroup rw,pids
";
        let sys = SysInfo::default();
        assert_eq!(
            cgroup_view(&sys, mi),
            CgroupView::V1(vec![
                V1Hierarchy {
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    names: vec!["cpu,cpuacct".into(), "cpu".into(), "cpuacct".into()],
                },
                V1Hierarchy {
                    mount_point: "/sys/fs/cgroup/memory".into(),
                    names: vec!["memory".into()],
                },
            ])
        );
        let v2 = SysInfo {
            v2: true,
            ..SysInfo::default()
        };
        assert_eq!(cgroup_view(&v2, mi), CgroupView::Unified);
        assert_eq!(cgroup_view(&sys, ""), CgroupView::None);
    }

    fn sys() -> SysInfo {
        SysInfo {
            v2: false,
            hybrid: true,
            memory: true,
            swap: true,
            swappiness: true,
            oom_kill_disable: true,
            cpu_shares: true,
            cpu_cfs: true,
            cpu_realtime: true,
            cpuset: true,
            pids: true,
            blkio_weight: false,
            ncpu: 2,
            cpus: "0-1".into(),
            mems: "0".into(),
        }
    }

    fn check(hc: Value) -> Result<(Value, Vec<String>), String> {
        let mut hc = hc;
        verify(&mut hc, &sys(), false)
            .map(|w| (hc, w))
            .map_err(|e| e.message)
    }

    #[test]
    fn docker_refusals() {
        for (hc, msg) in [
            (
                json!({"Memory": 4 << 20}),
                "Minimum memory limit allowed is 6MB",
            ),
            (
                json!({"Memory": 64 << 20, "MemorySwap": 32 << 20}),
                "Minimum memoryswap limit should be larger than memory limit",
            ),
            (
                json!({"MemorySwap": 64 << 20}),
                "You should always set the Memory limit",
            ),
            (
                json!({"NanoCpus": 3_000_000_000i64}),
                "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available",
            ),
            (
                json!({"NanoCpus": 1_000_000_000, "CpuPeriod": 100000}),
                "Nano CPUs and CPU Period cannot both be set",
            ),
            (
                json!({"CpuPeriod": 10}),
                "CPU cfs period can not be less than 1ms",
            ),
            (
                json!({"CpuQuota": 10}),
                "CPU cfs quota can not be less than 1ms",
            ),
            (
                json!({"CpusetCpus": "0-7"}),
                "Requested CPUs are not available - requested 0-7, available: 0-1",
            ),
            (
                json!({"CpusetCpus": "a"}),
                "Invalid value a for cpuset cpus",
            ),
            (
                json!({"CpusetMems": "3"}),
                "Requested memory nodes are not available",
            ),
            (
                json!({"MemoryReservation": 1 << 20}),
                "Minimum memory reservation allowed is 6MB",
            ),
            (
                json!({"MemorySwappiness": 101}),
                "valid memory swappiness range is 0-100",
            ),
            (json!({"ShmSize": -1}), "SHM size can not be less than 0"),
            (
                json!({"Ulimits": [{"Name": "nofiles", "Soft": 1, "Hard": 1}]}),
                "invalid ulimit type: nofiles",
            ),
        ] {
            let e = check(hc.clone()).expect_err(&hc.to_string());
            assert!(e.contains(msg), "{hc}: {e}");
        }
    }

    #[test]
    fn defaults_and_warnings() {
        let (hc, w) = check(json!({"Memory": 64 << 20, "BlkioWeight": 500})).unwrap();
        assert_eq!(hc["MemorySwap"], json!(128i64 << 20), "swap twice memory");
        assert_eq!(hc["ShmSize"], json!(DEFAULT_SHM));
        assert_eq!(hc["BlkioWeight"], json!(0));
        assert!(w[0].contains("Block I/O weight"), "{w:?}");
        let (_, w) = check(json!({"OomKillDisable": true})).unwrap();
        assert!(w[0].contains("no memory limit is set"), "{w:?}");
    }

    #[test]
    fn oci_resources() {
        let r = linux_resources(&json!({
            "Memory": 64 << 20, "MemorySwap": 128 << 20, "NanoCpus": 1_500_000_000,
            "CpuShares": 512, "PidsLimit": 100, "CpusetCpus": "0",
        }));
        assert_eq!(r["memory"]["limit"], json!(64 << 20));
        assert_eq!(r["cpu"]["quota"], json!(150000));
        assert_eq!(r["cpu"]["period"], json!(100000));
        assert_eq!(r["cpu"]["shares"], json!(512));
        assert_eq!(r["cpu"]["cpus"], json!("0"));
        assert_eq!(r["pids"]["limit"], json!(100));
        assert_eq!(linux_resources(&json!({})), json!({}));
    }

    #[test]
    fn cpusets() {
        assert_eq!(parse_set("0-2,4").unwrap(), vec![0, 1, 2, 4]);
        assert!(parse_set("2-1").is_none());
        assert!(parse_set("").is_none());
        assert!(parse_set("0,,1").is_none());
    }

    #[test]
    fn cgroup_paths() {
        assert_eq!(cgroup_path(&json!({}), "abc"), "/berth/abc");
        assert_eq!(
            cgroup_path(&json!({"CgroupParent": "/mine/"}), "abc"),
            "/mine/abc"
        );
    }

    #[test]
    fn rlimits_are_never_raised_unasked() {
        assert!(rlimits(&json!({}), &Map::new()).unwrap().is_empty());
        let r = rlimits(
            &json!({"Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}]}),
            &Map::new(),
        )
        .unwrap();
        assert_eq!(r[0]["type"], "RLIMIT_NOFILE");
        assert_eq!(r[0]["hard"], 200);
    }

    #[test]
    fn v2_detection_in_a_fake_root() {
        // not a cgroup2 mount: read as a v1 tree with nothing in it
        let d = tempfile::tempdir().unwrap();
        let s = SysInfo::detect_at(d.path());
        assert!(!s.v2 && !s.memory && !s.pids);
        assert!(s
            .warnings()
            .iter()
            .any(|w| w == "WARNING: No memory limit support"));
        // a v2 mount: what its cgroup.controllers lists
        std::fs::write(
            d.path().join("cgroup.controllers"),
            "cpuset cpu memory pids\n",
        )
        .unwrap();
        std::fs::write(d.path().join("cpuset.cpus.effective"), "0-3\n").unwrap();
        let s = SysInfo::detect_as(d.path(), true);
        assert!(s.v2 && s.memory && s.swap && s.pids && s.cpu_cfs && s.cpuset);
        assert!(!s.blkio_weight && !s.oom_kill_disable);
        assert_eq!(s.cpus, "0-3");
        assert_eq!(s.version(), "2");
        assert_eq!(
            s.warnings(),
            vec![
                "WARNING: No blkio weight support",
                "WARNING: No blkio weight_device support"
            ]
        );
    }
}
