//! The fields of a create request (`POST /containers/create`) with their Go types, as
//! dockerd's `container.CreateRequest` (its embedded `Config`, `HostConfig` and
//! `NetworkingConfig`) declares them in API v1.50: one table for matching names without
//! case (docker-py sends `CPURealtimeRuntime`) and for refusing a wrong JSON type in
//! Go's words before anything reads the request.

use berth_proto::gotypes::{Field, GoType};
use GoType::{Array, Bool, Int, Object, Str, StrSlice, StringMap, Strings, Struct};

const HEALTHCHECK: &[Field] = &[
    ("Test", Strings),
    ("Interval", Int("time.Duration")),
    ("Timeout", Int("time.Duration")),
    ("StartPeriod", Int("time.Duration")),
    ("StartInterval", Int("time.Duration")),
    ("Retries", Int("int")),
];

const RESTART_POLICY: &[Field] = &[
    ("Name", Str("container.RestartPolicyMode")),
    ("MaximumRetryCount", Int("int")),
];

const LOG_CONFIG: &[Field] = &[("Type", Str("string")), ("Config", StringMap)];

pub const HOST_CONFIG: &[Field] = &[
    ("CpuShares", Int("int64")),
    ("Memory", Int("int64")),
    ("CgroupParent", Str("string")),
    ("BlkioWeight", Int("uint16")),
    ("BlkioWeightDevice", Array("[]*blkiodev.WeightDevice")),
    ("BlkioDeviceReadBps", Array("[]*blkiodev.ThrottleDevice")),
    ("BlkioDeviceWriteBps", Array("[]*blkiodev.ThrottleDevice")),
    ("BlkioDeviceReadIOps", Array("[]*blkiodev.ThrottleDevice")),
    ("BlkioDeviceWriteIOps", Array("[]*blkiodev.ThrottleDevice")),
    ("CpuPeriod", Int("int64")),
    ("CpuQuota", Int("int64")),
    ("CpuRealtimePeriod", Int("int64")),
    ("CpuRealtimeRuntime", Int("int64")),
    ("CpusetCpus", Str("string")),
    ("CpusetMems", Str("string")),
    ("Devices", Array("[]container.DeviceMapping")),
    ("DeviceCgroupRules", Strings),
    ("DeviceRequests", Array("[]container.DeviceRequest")),
    ("KernelMemoryTCP", Int("int64")),
    ("MemoryReservation", Int("int64")),
    ("MemorySwap", Int("int64")),
    ("MemorySwappiness", Int("int64")),
    ("NanoCpus", Int("int64")),
    ("OomKillDisable", Bool),
    ("Init", Bool),
    ("PidsLimit", Int("int64")),
    ("Ulimits", Array("[]*container.Ulimit")),
    ("CpuCount", Int("int64")),
    ("CpuPercent", Int("int64")),
    ("IOMaximumIOps", Int("uint64")),
    ("IOMaximumBandwidth", Int("uint64")),
    ("Binds", Strings),
    ("ContainerIDFile", Str("string")),
    ("LogConfig", Struct("container.LogConfig", LOG_CONFIG)),
    ("NetworkMode", Str("container.NetworkMode")),
    ("PortBindings", Object("nat.PortMap")),
    (
        "RestartPolicy",
        Struct("container.RestartPolicy", RESTART_POLICY),
    ),
    ("AutoRemove", Bool),
    ("VolumeDriver", Str("string")),
    ("VolumesFrom", Strings),
    ("Mounts", Array("[]mount.Mount")),
    ("ConsoleSize", Array("[2]uint")),
    ("Annotations", StringMap),
    ("CapAdd", StrSlice),
    ("CapDrop", StrSlice),
    ("CgroupnsMode", Str("container.CgroupnsMode")),
    ("Dns", Strings),
    ("DnsOptions", Strings),
    ("DnsSearch", Strings),
    ("ExtraHosts", Strings),
    ("GroupAdd", Strings),
    ("IpcMode", Str("container.IpcMode")),
    ("Cgroup", Str("container.CgroupSpec")),
    ("Links", Strings),
    ("OomScoreAdj", Int("int")),
    ("PidMode", Str("container.PidMode")),
    ("Privileged", Bool),
    ("PublishAllPorts", Bool),
    ("ReadonlyRootfs", Bool),
    ("SecurityOpt", Strings),
    ("StorageOpt", StringMap),
    ("Tmpfs", StringMap),
    ("UTSMode", Str("container.UTSMode")),
    ("UsernsMode", Str("container.UsernsMode")),
    ("ShmSize", Int("int64")),
    ("Sysctls", StringMap),
    ("Runtime", Str("string")),
    ("Isolation", Str("container.Isolation")),
    ("MaskedPaths", Strings),
    ("ReadonlyPaths", Strings),
];

pub const CONFIG: &[Field] = &[
    ("Hostname", Str("string")),
    ("Domainname", Str("string")),
    ("User", Str("string")),
    ("AttachStdin", Bool),
    ("AttachStdout", Bool),
    ("AttachStderr", Bool),
    ("ExposedPorts", Object("nat.PortSet")),
    ("Tty", Bool),
    ("OpenStdin", Bool),
    ("StdinOnce", Bool),
    ("Env", Strings),
    ("Cmd", StrSlice),
    ("Healthcheck", Struct("container.HealthConfig", HEALTHCHECK)),
    ("ArgsEscaped", Bool),
    ("Image", Str("string")),
    ("Volumes", Object("map[string]struct {}")),
    ("WorkingDir", Str("string")),
    ("Entrypoint", StrSlice),
    ("NetworkDisabled", Bool),
    ("MacAddress", Str("string")),
    ("OnBuild", Strings),
    ("Labels", StringMap),
    ("StopSignal", Str("string")),
    ("StopTimeout", Int("int")),
    ("Shell", StrSlice),
    ("HostConfig", Struct("container.HostConfig", HOST_CONFIG)),
    ("NetworkingConfig", Object("network.NetworkingConfig")),
];

/// The Go type a create request is decoded into.
pub const REQUEST: &str = "container.CreateRequest";

/// The names of `fields`, as Docker spells them.
pub fn names(fields: &[Field]) -> Vec<&'static str> {
    fields.iter().map(|(n, _)| *n).collect()
}
