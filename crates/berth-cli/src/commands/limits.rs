//! Resource and security flags of `run`/`create` (and the resource flags `update`
//! shares), turned into HostConfig fields as the docker CLI sends them.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::{json, Value};

#[derive(Debug, Args, Clone, Default)]
pub struct LimitArgs {
    /// Memory limit
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Memory soft limit
    #[arg(long)]
    pub memory_reservation: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<String>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long)]
    pub cpu_shares: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long)]
    pub cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable
    #[arg(long)]
    pub blkio_weight: Option<u16>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunLimitArgs {
    /// Tune container memory swappiness (0 to 100)
    #[arg(long, allow_hyphen_values = true)]
    pub memory_swappiness: Option<i64>,
    /// Ulimit options (NAME=SOFT[:HARD])
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Disable OOM Killer
    #[arg(long)]
    pub oom_kill_disable: bool,
    /// Size of /dev/shm
    #[arg(long)]
    pub shm_size: Option<String>,
    /// Optional parent cgroup for the container
    #[arg(long)]
    pub cgroup_parent: Option<String>,
    /// Add Linux capabilities
    #[arg(long)]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long)]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Security Options
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// Add a host device to the container
    #[arg(long)]
    pub device: Vec<String>,
    /// Add additional groups to join
    #[arg(long)]
    pub group_add: Vec<String>,
    /// Sysctl options
    #[arg(long)]
    pub sysctl: Vec<String>,
    /// Kernel memory limit
    #[arg(long)]
    pub kernel_memory: Option<String>,
    /// Limit CPU real-time period in microseconds
    #[arg(long)]
    pub cpu_rt_period: Option<i64>,
    /// Limit CPU real-time runtime in microseconds
    #[arg(long)]
    pub cpu_rt_runtime: Option<i64>,
    /// Block IO weight (relative device weight, DEVICE:WEIGHT)
    #[arg(long)]
    pub blkio_weight_device: Vec<String>,
    /// Limit read rate (bytes per second) from a device
    #[arg(long)]
    pub device_read_bps: Vec<String>,
    /// Limit write rate (bytes per second) to a device
    #[arg(long)]
    pub device_write_bps: Vec<String>,
    /// Limit read rate (IO per second) from a device
    #[arg(long)]
    pub device_read_iops: Vec<String>,
    /// Limit write rate (IO per second) to a device
    #[arg(long)]
    pub device_write_iops: Vec<String>,
    /// Add a rule to the cgroup allowed devices list
    #[arg(long)]
    pub device_cgroup_rule: Vec<String>,
    /// Tune host's OOM preferences (-1000 to 1000)
    #[arg(long, allow_hyphen_values = true)]
    pub oom_score_adj: Option<i64>,
    /// GPU devices to add to the container ('all' to pass all GPUs)
    #[arg(long)]
    pub gpus: Option<String>,
    /// Storage driver options for the container
    #[arg(long = "storage-opt")]
    pub storage_opt: Vec<String>,
    /// User namespace to use
    #[arg(long)]
    pub userns: Option<String>,
}

/// Docker's size syntax (`64m`, `1g`, `512k`, `100b`, `1.5g`), in bytes (1024-based).
pub fn parse_bytes(s: &str) -> Result<i64> {
    let bad = || anyhow!("invalid size: '{s}'");
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        Some('p') => (&t[..t.len() - 1], 1 << 50),
        _ => (t, 1),
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    if n < 0.0 || !n.is_finite() {
        return Err(bad());
    }
    Ok((n * mult as f64) as i64)
}

/// `--cpus 1.5` in billionths of a CPU.
pub fn parse_cpus(s: &str) -> Result<i64> {
    let n: f64 = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid argument \"{s}\" for \"--cpus\" flag"))?;
    if !n.is_finite() || n < 0.0 {
        bail!("invalid argument \"{s}\" for \"--cpus\" flag");
    }
    Ok((n * 1e9).round() as i64)
}

/// `--ulimit nofile=1024:2048` as the API's `{"Name", "Soft", "Hard"}`.
pub fn parse_ulimit(s: &str) -> Result<Value> {
    let (name, vals) = s
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid ulimit argument: {s}"))?;
    let num = |v: &str| -> Result<i64> {
        v.parse()
            .map_err(|_| anyhow!("invalid ulimit argument: {s}"))
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(vals)?, num(vals)?),
    };
    if soft > hard && hard >= 0 {
        bail!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}");
    }
    Ok(json!({"Name": name, "Soft": soft, "Hard": hard}))
}

/// `--device /dev/x[:/dev/y[:rwm]]` as the API's device mapping.
pub fn parse_device(s: &str) -> Result<Value> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, c] if c.chars().all(|x| "rwm".contains(x)) && !c.starts_with('/') => (*h, *h, *c),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => bail!("invalid device specification: {s}"),
    };
    if perms.is_empty() || !perms.chars().all(|x| "rwm".contains(x)) {
        bail!("invalid device mode: {perms}");
    }
    Ok(json!({"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}))
}

impl LimitArgs {
    /// Writes the flags given into `hc` (a HostConfig, or an update body).
    pub fn apply(&self, hc: &mut Value) -> Result<()> {
        if let Some(m) = &self.memory {
            hc["Memory"] = json!(parse_bytes(m)?);
        }
        if let Some(s) = &self.memory_swap {
            hc["MemorySwap"] = json!(if s == "-1" { -1 } else { parse_bytes(s)? });
        }
        if let Some(m) = &self.memory_reservation {
            hc["MemoryReservation"] = json!(parse_bytes(m)?);
        }
        if let Some(c) = &self.cpus {
            hc["NanoCpus"] = json!(parse_cpus(c)?);
        }
        if let Some(v) = self.cpu_shares {
            hc["CpuShares"] = json!(v);
        }
        if let Some(v) = self.cpu_period {
            hc["CpuPeriod"] = json!(v);
        }
        if let Some(v) = self.cpu_quota {
            hc["CpuQuota"] = json!(v);
        }
        if let Some(v) = &self.cpuset_cpus {
            hc["CpusetCpus"] = json!(v);
        }
        if let Some(v) = &self.cpuset_mems {
            hc["CpusetMems"] = json!(v);
        }
        if let Some(v) = self.pids_limit {
            hc["PidsLimit"] = json!(v);
        }
        if let Some(v) = self.blkio_weight {
            hc["BlkioWeight"] = json!(v);
        }
        Ok(())
    }
}

impl RunLimitArgs {
    pub fn apply(&self, hc: &mut Value) -> Result<()> {
        if let Some(v) = self.memory_swappiness {
            hc["MemorySwappiness"] = json!(v);
        }
        if !self.ulimit.is_empty() {
            hc["Ulimits"] = Value::from(
                self.ulimit
                    .iter()
                    .map(|u| parse_ulimit(u))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        if self.oom_kill_disable {
            hc["OomKillDisable"] = json!(true);
        }
        if let Some(s) = &self.shm_size {
            hc["ShmSize"] = json!(parse_bytes(s)?);
        }
        if let Some(p) = &self.cgroup_parent {
            hc["CgroupParent"] = json!(p);
        }
        if !self.cap_add.is_empty() {
            hc["CapAdd"] = json!(self.cap_add);
        }
        if !self.cap_drop.is_empty() {
            hc["CapDrop"] = json!(self.cap_drop);
        }
        if self.privileged {
            hc["Privileged"] = json!(true);
        }
        if !self.security_opt.is_empty() {
            let mut opts = Vec::new();
            for o in &self.security_opt {
                // a seccomp profile file is sent as its contents, as the docker CLI does
                match o.strip_prefix("seccomp=").or(o.strip_prefix("seccomp:")) {
                    Some(p) if p != "unconfined" && p != "builtin" => {
                        let text = std::fs::read_to_string(p)
                            .map_err(|e| anyhow!("opening seccomp profile ({p}) failed: {e}"))?;
                        // checked by the daemon, as the docker CLI leaves it
                        opts.push(format!("seccomp={text}"));
                    }
                    _ => opts.push(o.clone()),
                }
            }
            hc["SecurityOpt"] = json!(opts);
        }
        if !self.device.is_empty() {
            hc["Devices"] = Value::from(
                self.device
                    .iter()
                    .map(|d| parse_device(d))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        if !self.group_add.is_empty() {
            hc["GroupAdd"] = json!(self.group_add);
        }
        if !self.sysctl.is_empty() {
            let mut m = serde_json::Map::new();
            for s in &self.sysctl {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow!("invalid argument \"{s}\" for \"--sysctl\" flag"))?;
                m.insert(k.to_string(), json!(v));
            }
            hc["Sysctls"] = Value::Object(m);
        }
        if let Some(u) = &self.userns {
            hc["UsernsMode"] = json!(u);
        }
        if let Some(g) = &self.gpus {
            hc["DeviceRequests"] = json!([parse_gpus(g)?]);
        }
        if let Some(k) = &self.kernel_memory {
            hc["KernelMemory"] = json!(parse_bytes(k)?);
        }
        if let Some(p) = self.cpu_rt_period {
            hc["CpuRealtimePeriod"] = json!(p);
        }
        if let Some(r) = self.cpu_rt_runtime {
            hc["CpuRealtimeRuntime"] = json!(r);
        }
        if let Some(o) = self.oom_score_adj {
            if !(-1000..=1000).contains(&o) {
                bail!("invalid value {o} for --oom-score-adj: must be between -1000 and 1000");
            }
            hc["OomScoreAdj"] = json!(o);
        }
        if !self.device_cgroup_rule.is_empty() {
            hc["DeviceCgroupRules"] = json!(self.device_cgroup_rule);
        }
        if !self.blkio_weight_device.is_empty() {
            let list = self
                .blkio_weight_device
                .iter()
                .map(|d| {
                    let (path, w) = device_pair(d, "--blkio-weight-device")?;
                    let weight: u16 = w
                        .parse()
                        .ok()
                        .filter(|w| *w == 0 || (10..=1000).contains(w))
                        .ok_or_else(|| anyhow!("invalid weight for device: {d}"))?;
                    Ok(json!({"Path": path, "Weight": weight}))
                })
                .collect::<Result<Vec<_>>>()?;
            hc["BlkioWeightDevice"] = json!(list);
        }
        for (flags, key, bytes) in [
            (&self.device_read_bps, "BlkioDeviceReadBps", true),
            (&self.device_write_bps, "BlkioDeviceWriteBps", true),
            (&self.device_read_iops, "BlkioDeviceReadIOps", false),
            (&self.device_write_iops, "BlkioDeviceWriteIOps", false),
        ] {
            if flags.is_empty() {
                continue;
            }
            let list = flags
                .iter()
                .map(|d| {
                    let (path, rate) = device_pair(d, key)?;
                    let rate = if bytes {
                        parse_bytes(rate)?
                    } else {
                        rate.parse::<i64>()
                            .map_err(|_| anyhow!("invalid rate for device: {d}"))?
                    };
                    Ok(json!({"Path": path, "Rate": rate}))
                })
                .collect::<Result<Vec<_>>>()?;
            hc[key] = json!(list);
        }
        if !self.storage_opt.is_empty() {
            let mut m = serde_json::Map::new();
            for s in &self.storage_opt {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow!("invalid storage option {s:?}: must be KEY=VALUE"))?;
                m.insert(k.to_string(), json!(v));
            }
            hc["StorageOpt"] = Value::Object(m);
        }
        Ok(())
    }
}

/// `DEVICE:VALUE` of the per-device block IO flags (the device path must be absolute).
fn device_pair<'a>(s: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    match s.rsplit_once(':') {
        Some((p, v)) if p.starts_with("/dev/") && !v.is_empty() => Ok((p, v)),
        _ => bail!("bad format for {flag}: {s:?} (DEVICE:VALUE, with DEVICE under /dev)"),
    }
}

/// A `--gpus` request as the docker CLI reads it: `all`, a count, or
/// `count=…,device=…,driver=…,capabilities=…` (capabilities always include `gpu`).
pub fn parse_gpus(spec: &str) -> Result<Value> {
    let mut count: Option<i64> = None;
    let mut ids: Vec<String> = Vec::new();
    let mut driver = String::new();
    let mut caps: Vec<String> = vec!["gpu".into()];
    let bad = || anyhow!("invalid argument \"{spec}\" for \"--gpus\" flag");
    let parse_count = |v: &str| -> Result<i64> {
        if v == "all" {
            Ok(-1)
        } else {
            v.parse::<i64>().map_err(|_| bad())
        }
    };
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        match field.split_once('=') {
            None => count = Some(parse_count(field)?),
            Some(("count", v)) => count = Some(parse_count(v)?),
            Some(("device", v)) => ids.extend(v.split(',').map(str::to_string)),
            Some(("driver", v)) => driver = v.to_string(),
            Some(("capabilities", v)) => {
                for c in v.split(',') {
                    if !caps.iter().any(|x| x == c) {
                        caps.push(c.to_string());
                    }
                }
            }
            _ => return Err(bad()),
        }
    }
    if count.is_some() && !ids.is_empty() {
        return Err(anyhow!(
            "cannot set both Count and DeviceIDs on device request"
        ));
    }
    Ok(json!({
        "Driver": driver,
        "Count": count.unwrap_or(if ids.is_empty() { -1 } else { 0 }),
        "DeviceIDs": if ids.is_empty() { Value::Null } else { json!(ids) },
        "Capabilities": [caps],
        "Options": {},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_requests() {
        let all = parse_gpus("all").unwrap();
        assert_eq!(all["Count"], -1);
        assert_eq!(all["Capabilities"], json!([["gpu"]]));
        let two = parse_gpus("2").unwrap();
        assert_eq!(two["Count"], 2);
        let d = parse_gpus("driver=nvidia,capabilities=utility").unwrap();
        assert_eq!(d["Driver"], "nvidia");
        assert_eq!(d["Capabilities"], json!([["gpu", "utility"]]));
        assert_eq!(parse_gpus("device=0").unwrap()["DeviceIDs"], json!(["0"]));
        assert!(parse_gpus("bogus=1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64m").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512kb").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("100").unwrap(), 100);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("-1m").is_err());
    }

    #[test]
    fn cpus_and_ulimits() {
        assert_eq!(parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(parse_cpus("0.01").unwrap(), 10_000_000);
        assert!(parse_cpus("x").is_err());
        assert_eq!(
            parse_ulimit("nofile=1024:2048").unwrap(),
            json!({"Name": "nofile", "Soft": 1024, "Hard": 2048})
        );
        assert_eq!(parse_ulimit("nproc=10").unwrap()["Hard"], 10);
        assert!(parse_ulimit("nofile=2:1").is_err());
        assert!(parse_ulimit("nofile").is_err());
    }

    #[test]
    fn devices() {
        assert_eq!(
            parse_device("/dev/fuse").unwrap(),
            json!({"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"})
        );
        assert_eq!(
            parse_device("/dev/null:/dev/mynull:r").unwrap()["PathInContainer"],
            "/dev/mynull"
        );
        assert_eq!(
            parse_device("/dev/null:rw").unwrap()["CgroupPermissions"],
            "rw"
        );
        assert!(parse_device("/dev/null:/x:z").is_err());
    }
}
