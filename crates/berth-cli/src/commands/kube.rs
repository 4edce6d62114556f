//! `berth kube`: from one machine to Kubernetes and back. `generate` writes Kubernetes
//! YAML (a Pod or a Deployment per container, and with `--service` a Service for its
//! ports) from containers as they run; `play` runs Pods and Deployments from such a file
//! on the daemon, and `down` removes what `play` made.
//!
//! A pod's containers share one network namespace, as in Kubernetes: the first
//! container owns it (its ports are published there, it joins the `kube` network under
//! the pod's name and the names of the Services that select the pod, so Service names
//! resolve as they do in a cluster), the others join it (`container:` network mode).

use super::q;
use crate::client::{Client, ReqBody};
use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Map, Value};

/// The network `play` puts pods on.
pub const NETWORK: &str = "kube";
/// The label naming the pod a container was made for.
pub const POD_LABEL: &str = "io.berth.kube.pod";

#[derive(Debug, Subcommand)]
pub enum KubeCmd {
    /// Generate Kubernetes YAML from containers
    Generate(GenerateArgs),
    /// Run the Pods and Deployments of a Kubernetes YAML file
    Play(PlayArgs),
    /// Remove what `kube play` made from a Kubernetes YAML file
    Down(DownArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Also generate a Service for each container's ports
    #[arg(short, long)]
    pub service: bool,
    /// The kind of object: pod or deployment
    #[arg(short, long = "type", default_value = "pod")]
    pub kind: String,
    /// Write to a file instead of STDOUT
    #[arg(short, long)]
    pub filename: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlayArgs {
    /// Remove the pods of the file first, if they exist
    #[arg(long)]
    pub replace: bool,
    /// Remove what the file made instead (as `kube down`)
    #[arg(long)]
    pub down: bool,
    /// Kubernetes YAML file, or - for STDIN
    pub file: String,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Kubernetes YAML file, or - for STDIN
    pub file: String,
}

pub async fn run(c: &Client, cmd: KubeCmd) -> Result<()> {
    match cmd {
        KubeCmd::Generate(a) => generate(c, a).await,
        KubeCmd::Play(a) if a.down => down(c, &read_docs(&a.file)?).await,
        KubeCmd::Play(a) => play(c, a).await,
        KubeCmd::Down(a) => down(c, &read_docs(&a.file)?).await,
    }
}

// --- quantities ----------------------------------------------------------------------

/// A Kubernetes memory quantity in bytes: `128974848`, `129e6`, `129M`, `123Mi`.
pub fn parse_memory(q: &str) -> Result<i64> {
    let q = q.trim();
    let bad = || anyhow!("invalid memory quantity {q:?}");
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, unit) = q.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        u if u.starts_with(['e', 'E']) => {
            let exp: i32 = u[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    Ok((n * mult).round() as i64)
}

/// A memory size as Kubernetes writes it: the largest binary unit that divides it.
pub fn format_memory(bytes: i64) -> String {
    for (unit, size) in [("Gi", 1i64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A Kubernetes CPU quantity in nano-CPUs: `500m`, `1.5`, `2`.
pub fn parse_cpu(q: &str) -> Result<i64> {
    let q = q.trim();
    let bad = || anyhow!("invalid cpu quantity {q:?}");
    let cpus: f64 = match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().map_err(|_| bad())? / 1000.0,
        None => q.parse().map_err(|_| bad())?,
    };
    if cpus <= 0.0 {
        return Err(bad());
    }
    Ok((cpus * 1e9).round() as i64)
}

/// Nano-CPUs as Kubernetes writes them: millicores.
pub fn format_cpu(nano: i64) -> String {
    let milli = nano / 1_000_000;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

// --- generate ------------------------------------------------------------------------

/// A name Kubernetes accepts (lowercase letters, digits, '-').
fn dns_name(s: &str) -> String {
    let mut out: String = s
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The pod spec of one container (`inspect` of it and of its image) and the ports a
/// Service would carry.
pub fn pod_spec(ctr: &Value, image: &Value) -> (Value, Vec<Value>) {
    let cfg = &ctr["Config"];
    let host = &ctr["HostConfig"];
    let img = &image["Config"];
    let name = dns_name(ctr["Name"].as_str().unwrap_or_default());
    let mut c = Map::new();
    c.insert("name".into(), json!(name));
    c.insert("image".into(), cfg["Image"].clone());
    // ENTRYPOINT/CMD the container changed (Kubernetes' command/args replace them)
    let (entry, cmd) = (strings(&cfg["Entrypoint"]), strings(&cfg["Cmd"]));
    if entry != strings(&img["Entrypoint"]) && !entry.is_empty() {
        c.insert("command".into(), json!(entry));
        if !cmd.is_empty() {
            c.insert("args".into(), json!(cmd));
        }
    } else if cmd != strings(&img["Cmd"]) && !cmd.is_empty() {
        c.insert("args".into(), json!(cmd));
    }
    // the container's own variables: not the image's, nor the PATH the engine adds
    // to an image without one
    let image_env = strings(&img["Env"]);
    let default_path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let image_has_path = image_env.iter().any(|e| e.starts_with("PATH="));
    let env: Vec<Value> = strings(&cfg["Env"])
        .into_iter()
        .filter(|e| !image_env.contains(e) && (e != default_path || image_has_path))
        .map(|e| {
            let (k, v) = e.split_once('=').unwrap_or((&e, ""));
            json!({"name": k, "value": v})
        })
        .collect();
    if !env.is_empty() {
        c.insert("env".into(), json!(env));
    }
    let wd = cfg["WorkingDir"].as_str().unwrap_or_default();
    if !wd.is_empty() && wd != img["WorkingDir"].as_str().unwrap_or_default() {
        c.insert("workingDir".into(), json!(wd));
    }
    // ports: published ones with their host side, exposed ones without
    let mut ports = Vec::new();
    let mut service_ports = Vec::new();
    let bindings = host["PortBindings"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut exposed: Vec<String> = cfg["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for k in bindings.keys() {
        if !exposed.contains(k) {
            exposed.push(k.clone());
        }
    }
    exposed.sort_by_key(|p| {
        p.split('/')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    for p in exposed {
        let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
        let Ok(port) = num.parse::<u16>() else {
            continue;
        };
        let proto = proto.to_ascii_uppercase();
        let binding = bindings
            .get(&p)
            .and_then(|b| b.as_array())
            .and_then(|a| a.first())
            .cloned();
        let mut entry = json!({"containerPort": port});
        if proto != "TCP" {
            entry["protocol"] = json!(proto);
        }
        if let Some(b) = binding {
            if let Some(hp) = b["HostPort"]
                .as_str()
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|p| *p != 0)
            {
                entry["hostPort"] = json!(hp);
            }
            let ip = b["HostIp"].as_str().unwrap_or_default();
            if !ip.is_empty() && ip != "0.0.0.0" && ip != "::" {
                entry["hostIP"] = json!(ip);
            }
        }
        ports.push(entry);
        let mut sp = json!({"name": format!("{port}-{}", proto.to_ascii_lowercase()), "port": port, "targetPort": port});
        if proto != "TCP" {
            sp["protocol"] = json!(proto);
        }
        service_ports.push(sp);
    }
    if !ports.is_empty() {
        c.insert("ports".into(), json!(ports));
    }
    if cfg["Tty"].as_bool() == Some(true) {
        c.insert("tty".into(), json!(true));
    }
    if cfg["OpenStdin"].as_bool() == Some(true) {
        c.insert("stdin".into(), json!(true));
    }
    // security
    let mut sec = Map::new();
    if host["Privileged"].as_bool() == Some(true) {
        sec.insert("privileged".into(), json!(true));
    }
    if host["ReadonlyRootfs"].as_bool() == Some(true) {
        sec.insert("readOnlyRootFilesystem".into(), json!(true));
    }
    let strip_cap = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|c| c.trim_start_matches("CAP_").to_string())
            .collect()
    };
    let (add, drop) = (
        strip_cap(strings(&host["CapAdd"])),
        strip_cap(strings(&host["CapDrop"])),
    );
    if !add.is_empty() || !drop.is_empty() {
        let mut caps = Map::new();
        if !add.is_empty() {
            caps.insert("add".into(), json!(add));
        }
        if !drop.is_empty() {
            caps.insert("drop".into(), json!(drop));
        }
        sec.insert("capabilities".into(), Value::Object(caps));
    }
    let user = cfg["User"].as_str().unwrap_or_default();
    if !user.is_empty() {
        let (u, g) = user.split_once(':').unwrap_or((user, ""));
        if let Ok(uid) = u.parse::<i64>() {
            sec.insert("runAsUser".into(), json!(uid));
        }
        if let Ok(gid) = g.parse::<i64>() {
            sec.insert("runAsGroup".into(), json!(gid));
        }
    }
    if !sec.is_empty() {
        c.insert("securityContext".into(), Value::Object(sec));
    }
    // limits
    let mut limits = Map::new();
    if let Some(m) = host["Memory"].as_i64().filter(|m| *m > 0) {
        limits.insert("memory".into(), json!(format_memory(m)));
    }
    let nano = host["NanoCpus"].as_i64().filter(|n| *n > 0).or_else(|| {
        let quota = host["CpuQuota"].as_i64().filter(|q| *q > 0)?;
        let period = host["CpuPeriod"]
            .as_i64()
            .filter(|p| *p > 0)
            .unwrap_or(100_000);
        Some(quota * 1_000_000_000 / period)
    });
    if let Some(n) = nano {
        limits.insert("cpu".into(), json!(format_cpu(n)));
    }
    if !limits.is_empty() {
        c.insert("resources".into(), json!({ "limits": limits }));
    }
    // mounts: named volumes as claims, binds as host paths, tmpfs as memory emptyDirs
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, m) in ctr["Mounts"].as_array().into_iter().flatten().enumerate() {
        let dest = m["Destination"].as_str().unwrap_or_default();
        let vol_name = format!("{}-{}", dns_name(dest).trim_matches('-'), i);
        let vol_name = if vol_name.starts_with('-') || vol_name.len() < 2 {
            format!("vol-{i}")
        } else {
            vol_name
        };
        let source = match m["Type"].as_str() {
            Some("volume") => {
                json!({"persistentVolumeClaim": {"claimName": m["Name"].clone()}})
            }
            Some("bind") => json!({"hostPath": {"path": m["Source"].clone()}}),
            Some("tmpfs") => json!({"emptyDir": {"medium": "Memory"}}),
            _ => continue,
        };
        let mut vm = json!({"name": vol_name, "mountPath": dest});
        if m["RW"].as_bool() == Some(false) {
            vm["readOnly"] = json!(true);
        }
        mounts.push(vm);
        let mut v = json!({ "name": vol_name });
        if let (Some(o), Some(src)) = (v.as_object_mut(), source.as_object()) {
            o.extend(src.clone());
        }
        volumes.push(v);
    }
    for (dest, _) in host["Tmpfs"].as_object().into_iter().flatten() {
        let vol_name = format!("tmpfs-{}", dns_name(dest));
        mounts.push(json!({"name": vol_name, "mountPath": dest}));
        volumes.push(json!({"name": vol_name, "emptyDir": {"medium": "Memory"}}));
    }
    if !mounts.is_empty() {
        c.insert("volumeMounts".into(), json!(mounts));
    }
    let mut spec = Map::new();
    spec.insert("containers".into(), json!([Value::Object(c)]));
    if !volumes.is_empty() {
        spec.insert("volumes".into(), json!(volumes));
    }
    let restart = match host["RestartPolicy"]["Name"].as_str().unwrap_or_default() {
        "always" | "unless-stopped" => "Always",
        "on-failure" => "OnFailure",
        _ => "Never",
    };
    spec.insert("restartPolicy".into(), json!(restart));
    if host["NetworkMode"].as_str() == Some("host") {
        spec.insert("hostNetwork".into(), json!(true));
    }
    let hostname = cfg["Hostname"].as_str().unwrap_or_default();
    let id = ctr["Id"].as_str().unwrap_or_default();
    if !hostname.is_empty()
        && !id.starts_with(hostname)
        && host["NetworkMode"].as_str() != Some("host")
    {
        spec.insert("hostname".into(), json!(hostname));
    }
    (Value::Object(spec), service_ports)
}

async fn generate(c: &Client, a: GenerateArgs) -> Result<()> {
    if !matches!(a.kind.as_str(), "pod" | "deployment") {
        bail!("invalid type {:?}: must be pod or deployment", a.kind);
    }
    let mut docs = Vec::new();
    for name in &a.containers {
        let ctr = c.get_json(&format!("/containers/{}/json", q(name))).await?;
        let image_id = ctr["Image"].as_str().unwrap_or_default().to_string();
        let image = c
            .get_json(&format!("/images/{}/json", q(&image_id)))
            .await
            .unwrap_or(Value::Null);
        let (mut spec, service_ports) = pod_spec(&ctr, &image);
        let pod = dns_name(ctr["Name"].as_str().unwrap_or(name));
        let labels = json!({"app": pod});
        let doc = if a.kind == "deployment" {
            spec["restartPolicy"] = json!("Always");
            json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": pod, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": spec},
                },
            })
        } else {
            json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "labels": labels},
                "spec": spec,
            })
        };
        docs.push(doc);
        if a.service && !service_ports.is_empty() {
            docs.push(json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": pod, "labels": labels},
                "spec": {"selector": labels, "ports": service_ports},
            }));
        }
    }
    let mut text = format!(
        "# Kubernetes YAML generated by berth {}\n",
        env!("CARGO_PKG_VERSION")
    );
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        text.push_str(&serde_yaml::to_string(d)?);
    }
    match a.filename {
        Some(f) => std::fs::write(&f, text).with_context(|| format!("writing {f}"))?,
        None => print!("{text}"),
    }
    Ok(())
}

// --- play ----------------------------------------------------------------------------

/// The YAML documents of a file (or STDIN for "-").
fn read_docs(file: &str) -> Result<Vec<Value>> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    parse_docs(&text)
}

pub fn parse_docs(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for d in serde_yaml::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(d).context("invalid YAML")?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// A pod to run: its name, labels and spec (a Pod's, or a Deployment's template).
#[derive(Debug, Default)]
pub struct PodDoc {
    pub name: String,
    pub labels: Map<String, Value>,
    pub spec: Value,
    /// the files of its ConfigMap volumes, by volume name: path in the volume, content
    pub files: std::collections::BTreeMap<String, Vec<(String, Vec<u8>)>>,
}

/// ConfigMaps by name: their data.
type ConfigMaps = std::collections::BTreeMap<String, Map<String, Value>>;

fn config_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What a pod takes from ConfigMaps, made its own: `valueFrom.configMapKeyRef` values,
/// `envFrom` `configMapRef` variables, and `configMap` volumes (an emptyDir of the pod's
/// that is given the files before its containers start).
fn resolve_config_maps(pod: &mut PodDoc, maps: &ConfigMaps) -> Result<()> {
    let find = |name: &str| -> Result<&Map<String, Value>> {
        maps.get(name)
            .ok_or_else(|| anyhow!("configmap {name:?} not found (pod {})", pod.name))
    };
    let mut containers = pod.spec["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for ctr in &mut containers {
        let mut env: Vec<Value> = Vec::new();
        for from in ctr["envFrom"].as_array().cloned().unwrap_or_default() {
            let Some(name) = from["configMapRef"]["name"].as_str() else {
                bail!(
                    "envFrom of container {}: only configMapRef is supported",
                    ctr["name"]
                );
            };
            let prefix = from["prefix"].as_str().unwrap_or_default();
            for (k, v) in find(name)? {
                // keys that cannot name a variable are left out, as Kubernetes does
                let valid = !k.is_empty()
                    && !k.starts_with(|c: char| c.is_ascii_digit())
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if valid {
                    env.push(json!({"name": format!("{prefix}{k}"), "value": config_value(v)}));
                }
            }
        }
        for e in ctr["env"].as_array().cloned().unwrap_or_default() {
            let Some(r) = e["valueFrom"].get("configMapKeyRef") else {
                env.push(e);
                continue;
            };
            let (name, key) = (
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            );
            let optional = r["optional"].as_bool() == Some(true);
            match maps.get(name).and_then(|m| m.get(key)) {
                Some(v) => env.push(json!({"name": e["name"], "value": config_value(v)})),
                None if optional => {}
                None => bail!(
                    "key {key:?} of configmap {name:?} not found (pod {})",
                    pod.name
                ),
            }
        }
        if let Some(o) = ctr.as_object_mut() {
            o.remove("envFrom");
            o.insert("env".into(), json!(env));
        }
    }
    pod.spec["containers"] = json!(containers);
    let mut volumes = pod.spec["volumes"].as_array().cloned().unwrap_or_default();
    for v in &mut volumes {
        let Some(name) = v["configMap"]["name"].as_str().map(str::to_string) else {
            continue;
        };
        let data = find(&name)?;
        let files: Vec<(String, Vec<u8>)> = match v["configMap"]["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    let key = i["key"].as_str().unwrap_or_default();
                    let value = data.get(key).ok_or_else(|| {
                        anyhow!(
                            "key {key:?} of configmap {name:?} not found (pod {})",
                            pod.name
                        )
                    })?;
                    let path = i["path"].as_str().unwrap_or(key).to_string();
                    Ok((path, config_value(value).into_bytes()))
                })
                .collect::<Result<_>>()?,
            None => data
                .iter()
                .map(|(k, v)| (k.clone(), config_value(v).into_bytes()))
                .collect(),
        };
        let vol_name = v["name"].as_str().unwrap_or_default().to_string();
        if files
            .iter()
            .any(|(p, _)| p.split('/').any(|c| c == "..") || p.starts_with('/'))
        {
            bail!("configmap volume {vol_name:?}: a path must stay inside the volume");
        }
        pod.files.insert(vol_name.clone(), files);
        *v = json!({"name": vol_name, "emptyDir": {}});
    }
    if !volumes.is_empty() {
        pod.spec["volumes"] = json!(volumes);
    }
    Ok(())
}

/// A tar of `files` (regular files, mode 0644, their directories made as needed).
fn files_tar(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data.as_slice())?;
    }
    Ok(b.into_inner()?)
}

/// A Service: its name and the labels it selects.
pub type ServiceDoc = (String, Map<String, Value>);

/// The pods of a file, and its Services.
pub fn pods_of(docs: &[Value]) -> Result<(Vec<PodDoc>, Vec<ServiceDoc>)> {
    let mut pods = Vec::new();
    let mut services = Vec::new();
    let mut maps = ConfigMaps::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match kind {
            "Pod" => pods.push(PodDoc {
                name: dns_name(&name),
                labels: d["metadata"]["labels"].as_object().cloned().unwrap_or_default(),
                spec: d["spec"].clone(),
                ..Default::default()
            }),
            "ConfigMap" => {
                maps.insert(
                    name.clone(),
                    d["data"].as_object().cloned().unwrap_or_default(),
                );
            }
            "Deployment" => {
                let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
                if replicas > 1 {
                    eprintln!("berth runs one replica of deployment {name} (replicas: {replicas})");
                }
                let t = &d["spec"]["template"];
                pods.push(PodDoc {
                    name: dns_name(&name),
                    labels: t["metadata"]["labels"].as_object().cloned().unwrap_or_default(),
                    spec: t["spec"].clone(),
                    ..Default::default()
                });
            }
            "Service" => services.push((
                dns_name(&name),
                d["spec"]["selector"].as_object().cloned().unwrap_or_default(),
            )),
            "" => bail!("a YAML document without a kind"),
            other => bail!("kind {other:?} is not supported by berth kube play (Pod, Deployment, Service and ConfigMap are)"),
        }
    }
    for p in &mut pods {
        if p.name.is_empty() {
            bail!("a pod without a name");
        }
        resolve_config_maps(p, &maps)?;
    }
    Ok((pods, services))
}

/// The name of a pod's container: the pod's own for a lone container of that name.
fn container_name(pod: &PodDoc, ctr: &str) -> String {
    let count = pod.spec["containers"].as_array().map_or(0, Vec::len);
    if count == 1 && ctr == pod.name {
        pod.name.clone()
    } else {
        format!("{}-{}", pod.name, ctr)
    }
}

/// What a pod's volumes become: per volume name, a mount (the Mounts entry of the create
/// body) without its target, or a bind (`SOURCE`).
enum PodVolume {
    Mount(Value),
    Bind(String),
}

fn pod_volumes(pod: &PodDoc) -> Result<Vec<(String, PodVolume)>> {
    let mut out = Vec::new();
    for v in pod.spec["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        let vol = if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
            PodVolume::Mount(json!({"Type": "volume", "Source": claim}))
        } else if let Some(path) = v["hostPath"]["path"].as_str() {
            PodVolume::Bind(path.to_string())
        } else if v.get("emptyDir").is_some() {
            if v["emptyDir"]["medium"].as_str() == Some("Memory") {
                PodVolume::Mount(json!({"Type": "tmpfs"}))
            } else {
                PodVolume::Mount(json!({
                    "Type": "volume",
                    "Source": format!("{}-{}", pod.name, name),
                    "VolumeOptions": {"Labels": {POD_LABEL: pod.name}},
                }))
            }
        } else {
            bail!(
                "volume {name:?} of pod {}: only persistentVolumeClaim, hostPath, emptyDir and configMap volumes are supported",
                pod.name
            );
        };
        out.push((name, vol));
    }
    Ok(out)
}

/// The create body of one container of a pod; `first` owns the pod's network.
pub fn create_body(
    pod: &PodDoc,
    ctr: &Value,
    first: Option<&str>,
    aliases: &[String],
) -> Result<Value> {
    let cname = ctr["name"].as_str().unwrap_or_default();
    let image = ctr["image"]
        .as_str()
        .ok_or_else(|| anyhow!("container {cname:?} of pod {} has no image", pod.name))?;
    let mut labels: Map<String, Value> = pod.labels.clone();
    labels.insert(POD_LABEL.into(), json!(pod.name));
    let mut env = Vec::new();
    for e in ctr["env"].as_array().into_iter().flatten() {
        let k = e["name"].as_str().unwrap_or_default();
        if e.get("valueFrom").is_some() {
            bail!("env {k:?} of container {cname:?}: valueFrom is not supported (but configMapKeyRef)");
        }
        let v = match &e["value"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        env.push(format!("{k}={v}"));
    }
    let sec = &ctr["securityContext"];
    let pod_sec = &pod.spec["securityContext"];
    let uid = sec["runAsUser"].as_i64().or(pod_sec["runAsUser"].as_i64());
    let gid = sec["runAsGroup"]
        .as_i64()
        .or(pod_sec["runAsGroup"].as_i64());
    let user = match (uid, gid) {
        (Some(u), Some(g)) => format!("{u}:{g}"),
        (Some(u), None) => u.to_string(),
        (None, Some(g)) => format!("0:{g}"),
        (None, None) => String::new(),
    };
    let mut body = json!({
        "Image": image,
        "Labels": labels,
        "Env": env,
        "Tty": ctr["tty"].as_bool().unwrap_or(false),
        "OpenStdin": ctr["stdin"].as_bool().unwrap_or(false),
        "User": user,
    });
    if let Some(cmd) = ctr["command"].as_array() {
        body["Entrypoint"] = json!(cmd);
        body["Cmd"] = ctr.get("args").cloned().unwrap_or(json!([]));
    } else if let Some(args) = ctr["args"].as_array() {
        body["Cmd"] = json!(args);
    }
    if let Some(wd) = ctr["workingDir"].as_str() {
        body["WorkingDir"] = json!(wd);
    }
    let mut host = json!({});
    let restart = match pod.spec["restartPolicy"].as_str().unwrap_or("Always") {
        "Always" => "always",
        "OnFailure" => "on-failure",
        _ => "no",
    };
    host["RestartPolicy"] = json!({"Name": restart});
    if sec["privileged"].as_bool() == Some(true) {
        host["Privileged"] = json!(true);
    }
    if sec["readOnlyRootFilesystem"].as_bool() == Some(true) {
        host["ReadonlyRootfs"] = json!(true);
    }
    if let Some(add) = sec["capabilities"]["add"].as_array() {
        host["CapAdd"] = json!(add);
    }
    if let Some(drop) = sec["capabilities"]["drop"].as_array() {
        host["CapDrop"] = json!(drop);
    }
    let limits = &ctr["resources"]["limits"];
    if let Some(m) = limits["memory"]
        .as_str()
        .map(str::to_string)
        .or_else(|| limits["memory"].as_i64().map(|n| n.to_string()))
    {
        host["Memory"] = json!(parse_memory(&m)?);
    }
    if let Some(cpu) = limits["cpu"]
        .as_str()
        .map(str::to_string)
        .or_else(|| limits["cpu"].as_f64().map(|n| n.to_string()))
    {
        host["NanoCpus"] = json!(parse_cpu(&cpu)?);
    }
    // volumes
    let vols = pod_volumes(pod)?;
    let mut mounts = Vec::new();
    let mut binds = Vec::new();
    for vm in ctr["volumeMounts"].as_array().into_iter().flatten() {
        let vname = vm["name"].as_str().unwrap_or_default();
        let target = vm["mountPath"].as_str().unwrap_or_default();
        let ro = vm["readOnly"].as_bool().unwrap_or(false);
        match vols.iter().find(|(n, _)| n == vname).map(|(_, v)| v) {
            Some(PodVolume::Mount(m)) => {
                let mut m = m.clone();
                m["Target"] = json!(target);
                m["ReadOnly"] = json!(ro);
                mounts.push(m);
            }
            Some(PodVolume::Bind(src)) => {
                binds.push(format!("{src}:{target}{}", if ro { ":ro" } else { "" }))
            }
            None => bail!(
                "container {cname:?} mounts volume {vname:?}, which pod {} does not have",
                pod.name
            ),
        }
    }
    if !mounts.is_empty() {
        host["Mounts"] = json!(mounts);
    }
    if !binds.is_empty() {
        host["Binds"] = json!(binds);
    }
    // the network: the pod's first container owns it, with every port of the pod
    let host_network = pod.spec["hostNetwork"].as_bool() == Some(true);
    match first {
        _ if host_network => host["NetworkMode"] = json!("host"),
        Some(owner) => host["NetworkMode"] = json!(format!("container:{owner}")),
        None => {
            host["NetworkMode"] = json!(NETWORK);
            body["NetworkingConfig"] = json!({"EndpointsConfig": {NETWORK: {"Aliases": aliases}}});
            if let Some(h) = pod.spec["hostname"].as_str() {
                body["Hostname"] = json!(h);
            } else {
                body["Hostname"] = json!(pod.name);
            }
            let mut exposed = Map::new();
            let mut bindings = Map::new();
            for c in pod.spec["containers"].as_array().into_iter().flatten() {
                for p in c["ports"].as_array().into_iter().flatten() {
                    let Some(port) = p["containerPort"].as_u64() else {
                        continue;
                    };
                    let proto = p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase();
                    let key = format!("{port}/{proto}");
                    exposed.insert(key.clone(), json!({}));
                    if let Some(hp) = p["hostPort"].as_u64() {
                        let list = bindings.entry(key).or_insert_with(|| json!([]));
                        if let Some(a) = list.as_array_mut() {
                            a.push(json!({
                                "HostIp": p["hostIP"].as_str().unwrap_or(""),
                                "HostPort": hp.to_string(),
                            }));
                        }
                    }
                }
            }
            if !exposed.is_empty() {
                body["ExposedPorts"] = Value::Object(exposed);
            }
            if !bindings.is_empty() {
                host["PortBindings"] = Value::Object(bindings);
            }
        }
    }
    body["HostConfig"] = host;
    Ok(body)
}

/// Creates a container, pulling its image first when it is missing (and the pull policy
/// allows); returns its ID.
async fn create(c: &Client, name: &str, body: &Value, pull: &str) -> Result<String> {
    let image = body["Image"].as_str().unwrap_or_default().to_string();
    let tagged = super::registry::tagged(&image);
    if pull == "Always" {
        super::registry::pull_image(c, &tagged, None, false, true).await?;
    }
    let bytes = serde_json::to_vec(body)?;
    let resp = super::containers::create_or_pull(
        c,
        Some(name),
        &bytes,
        &image,
        None,
        pull != "Never",
        false,
    )
    .await?;
    let v = crate::client::read_json(resp).await?;
    Ok(v["Id"].as_str().unwrap_or_default().to_string())
}

async fn ensure_network(c: &Client) -> Result<()> {
    match c.get_json(&format!("/networks/{NETWORK}")).await {
        Ok(_) => Ok(()),
        Err(_) => {
            let body = serde_json::to_vec(&json!({"Name": NETWORK, "Driver": "bridge"}))?;
            c.request(
                Method::POST,
                "/networks/create",
                ReqBody::Full(Some(body.into())),
                &[("Content-Type", "application/json".to_string())],
            )
            .await?;
            Ok(())
        }
    }
}

async fn play(c: &Client, a: PlayArgs) -> Result<()> {
    let docs = read_docs(&a.file)?;
    let (pods, services) = pods_of(&docs)?;
    if a.replace {
        remove_pods(c, &pods, false).await?;
    }
    // every body first: a bad file makes nothing
    let mut plan = Vec::new();
    for pod in &pods {
        let mut aliases = vec![pod.name.clone()];
        for (svc, selector) in &services {
            let selects =
                !selector.is_empty() && selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v));
            if selects && !aliases.contains(svc) {
                aliases.push(svc.clone());
            }
        }
        let ctrs = pod.spec["containers"]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow!("pod {} has no containers", pod.name))?;
        let mut made = Vec::new();
        let mut owner: Option<String> = None;
        for ctr in ctrs {
            let cname = container_name(pod, ctr["name"].as_str().unwrap_or_default());
            let body = create_body(pod, ctr, owner.as_deref(), &aliases)?;
            let pull = ctr["imagePullPolicy"]
                .as_str()
                .unwrap_or("IfNotPresent")
                .to_string();
            if owner.is_none() {
                owner = Some(cname.clone());
            }
            made.push((cname, body, pull, ctr.clone()));
        }
        plan.push((pod, made));
    }
    if pods
        .iter()
        .any(|p| p.spec["hostNetwork"].as_bool() != Some(true))
    {
        ensure_network(c).await?;
    }
    for (pod, made) in plan {
        let mut ids = Vec::new();
        for (name, body, pull, ctr) in &made {
            let id = create(c, name, body, pull).await?;
            // the files of its ConfigMap volumes, before it starts
            for vm in ctr["volumeMounts"].as_array().into_iter().flatten() {
                let Some(files) = vm["name"].as_str().and_then(|n| pod.files.get(n)) else {
                    continue;
                };
                let target = vm["mountPath"].as_str().unwrap_or("/");
                c.request(
                    Method::PUT,
                    &format!("/containers/{id}/archive?path={}", q(target)),
                    ReqBody::Full(Some(files_tar(files)?.into())),
                    &[("Content-Type", "application/x-tar".to_string())],
                )
                .await?;
            }
            c.request(
                Method::POST,
                &format!("/containers/{id}/start"),
                ReqBody::Empty,
                &[],
            )
            .await?;
            ids.push(id);
        }
        println!("Pod:\n{}\nContainers:", pod.name);
        for id in ids {
            println!("{id}");
        }
        println!();
    }
    Ok(())
}

/// Removes the containers made for `pods` (and their emptyDir volumes); says which
/// pods went unless `quiet`.
async fn remove_pods(c: &Client, pods: &[PodDoc], say: bool) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for pod in pods {
        let filters = json!({"label": [format!("{POD_LABEL}={}", pod.name)]}).to_string();
        let list = c
            .get_json(&format!("/containers/json?all=1&filters={}", q(&filters)))
            .await?;
        // the containers joined to the pod's network go before its owner
        let mut ids: Vec<(bool, String)> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let joined = c["HostConfig"]["NetworkMode"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("container:"));
                Some((!joined, c["Id"].as_str()?.to_string()))
            })
            .collect();
        if ids.is_empty() {
            continue;
        }
        ids.sort();
        for (_, id) in &ids {
            c.request(
                Method::DELETE,
                &format!("/containers/{id}?force=1&v=1"),
                ReqBody::Empty,
                &[],
            )
            .await?;
        }
        let vols = c
            .get_json(&format!("/volumes?filters={}", q(&filters)))
            .await?;
        for v in vols["Volumes"].as_array().into_iter().flatten() {
            if let Some(n) = v["Name"].as_str() {
                let _ = c
                    .request(
                        Method::DELETE,
                        &format!("/volumes/{}", q(n)),
                        ReqBody::Empty,
                        &[],
                    )
                    .await;
            }
        }
        removed.push(pod.name.clone());
    }
    if say && !removed.is_empty() {
        println!("Pods removed:");
        for p in &removed {
            println!("{p}");
        }
    }
    Ok(removed)
}

async fn down(c: &Client, docs: &[Value]) -> Result<()> {
    let (pods, _) = pods_of(docs)?;
    remove_pods(c, &pods, true).await?;
    // the pods' network goes with its last container
    if let Ok(n) = c.get_json(&format!("/networks/{NETWORK}")).await {
        if n["Containers"].as_object().is_none_or(|m| m.is_empty()) {
            let _ = c
                .request(
                    Method::DELETE,
                    &format!("/networks/{NETWORK}"),
                    ReqBody::Empty,
                    &[],
                )
                .await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_memory("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1Gi").unwrap(), 1 << 30);
        assert_eq!(parse_memory("129M").unwrap(), 129_000_000);
        assert_eq!(parse_memory("128974848").unwrap(), 128_974_848);
        assert_eq!(parse_memory("129e6").unwrap(), 129_000_000);
        assert!(parse_memory("lots").is_err());
        assert_eq!(format_memory(64 << 20), "64Mi");
        assert_eq!(format_memory(1000), "1000");
        assert_eq!(parse_cpu("500m").unwrap(), 500_000_000);
        assert_eq!(parse_cpu("1.5").unwrap(), 1_500_000_000);
        assert!(parse_cpu("0").is_err());
        assert_eq!(format_cpu(500_000_000), "500m");
        assert_eq!(format_cpu(2_000_000_000), "2");
    }

    #[test]
    fn names_kubernetes_accepts() {
        assert_eq!(dns_name("/My_App.1"), "my-app-1");
        assert_eq!(dns_name("/a__b"), "a-b");
    }

    fn inspected() -> (Value, Value) {
        let ctr = json!({
            "Id": "0123456789ab",
            "Name": "/web",
            "Image": "sha256:abc",
            "Config": {
                "Image": "bb", "Hostname": "0123456789ab",
                "Cmd": ["httpd", "-f"], "Entrypoint": null,
                "Env": ["PATH=/bin", "MODE=prod"], "WorkingDir": "/srv", "User": "1000:1000",
                "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
            },
            "HostConfig": {
                "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                "Memory": 67108864, "NanoCpus": 500000000,
                "CapAdd": ["NET_ADMIN"], "RestartPolicy": {"Name": "on-failure"},
                "NetworkMode": "bridge", "Tmpfs": {"/run": ""},
            },
            "Mounts": [
                {"Type": "volume", "Name": "data", "Destination": "/data", "RW": true},
                {"Type": "bind", "Source": "/srv/conf", "Destination": "/etc/conf", "RW": false},
            ],
        });
        let image = json!({"Config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": ""}});
        (ctr, image)
    }

    #[test]
    fn a_container_becomes_a_pod_spec() {
        let (ctr, image) = inspected();
        let (spec, service) = pod_spec(&ctr, &image);
        let c = &spec["containers"][0];
        assert_eq!(c["name"], "web");
        assert_eq!(c["image"], "bb");
        assert_eq!(c["args"], json!(["httpd", "-f"]));
        assert!(c.get("command").is_none());
        assert_eq!(c["env"], json!([{"name": "MODE", "value": "prod"}]));
        assert_eq!(c["workingDir"], "/srv");
        assert_eq!(
            c["ports"],
            json!([
                {"containerPort": 53, "protocol": "UDP"},
                {"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.1"},
            ])
        );
        assert_eq!(
            c["resources"]["limits"],
            json!({"memory": "64Mi", "cpu": "500m"})
        );
        assert_eq!(
            c["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN"])
        );
        assert_eq!(c["securityContext"]["runAsUser"], 1000);
        assert_eq!(spec["restartPolicy"], "OnFailure");
        assert!(spec.get("hostname").is_none());
        let vols = spec["volumes"].as_array().unwrap();
        assert_eq!(vols[0]["persistentVolumeClaim"]["claimName"], "data");
        assert_eq!(vols[1]["hostPath"]["path"], "/srv/conf");
        assert_eq!(vols[2]["emptyDir"]["medium"], "Memory");
        assert_eq!(c["volumeMounts"][1]["readOnly"], true);
        assert_eq!(service.len(), 2);
        assert_eq!(
            service[1],
            json!({"name": "80-tcp", "port": 80, "targetPort": 80})
        );
    }

    #[test]
    fn a_pod_spec_becomes_create_bodies() {
        let (ctr, image) = inspected();
        let (spec, _) = pod_spec(&ctr, &image);
        let mut spec = spec;
        spec["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "bb", "command": ["sleep"], "args": ["60"]}));
        let pod = PodDoc {
            name: "web".into(),
            labels: json!({"app": "web"}).as_object().unwrap().clone(),
            spec,
            ..Default::default()
        };
        let first = create_body(
            &pod,
            &pod.spec["containers"][0],
            None,
            &["web".into(), "front".into()],
        )
        .unwrap();
        assert_eq!(first["Cmd"], json!(["httpd", "-f"]));
        assert_eq!(first["Env"], json!(["MODE=prod"]));
        assert_eq!(first["User"], "1000:1000");
        assert_eq!(first["Labels"][POD_LABEL], "web");
        assert_eq!(first["HostConfig"]["NetworkMode"], NETWORK);
        assert_eq!(first["HostConfig"]["Memory"], 64 << 20);
        assert_eq!(first["HostConfig"]["NanoCpus"], 500_000_000);
        assert_eq!(first["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
        assert_eq!(
            first["HostConfig"]["PortBindings"]["80/tcp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}])
        );
        assert_eq!(
            first["NetworkingConfig"]["EndpointsConfig"][NETWORK]["Aliases"],
            json!(["web", "front"])
        );
        assert_eq!(
            first["HostConfig"]["Binds"],
            json!(["/srv/conf:/etc/conf:ro"])
        );
        let mounts = first["HostConfig"]["Mounts"].as_array().unwrap();
        assert_eq!(
            mounts[0],
            json!({"Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": false})
        );
        assert_eq!(mounts[1]["Type"], "tmpfs");
        let second = create_body(&pod, &pod.spec["containers"][1], Some("web"), &[]).unwrap();
        assert_eq!(second["Entrypoint"], json!(["sleep"]));
        assert_eq!(second["Cmd"], json!(["60"]));
        assert_eq!(second["HostConfig"]["NetworkMode"], "container:web");
        assert!(second.get("ExposedPorts").is_none());
        assert_eq!(container_name(&pod, "side"), "web-side");
    }

    #[test]
    fn files_with_pods_deployments_and_services() {
        let docs = parse_docs(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: one\n  labels: {app: one}\nspec:\n  containers:\n  - name: one\n    image: bb\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: two}\nspec:\n  replicas: 1\n  template:\n    metadata: {labels: {app: two}}\n    spec:\n      containers: [{name: c, image: bb}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: front}\nspec:\n  selector: {app: one}\n",
        )
        .unwrap();
        let (pods, services) = pods_of(&docs).unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[1].name, "two");
        assert_eq!(pods[1].labels["app"], "two");
        assert_eq!(services[0].0, "front");
        assert!(pods_of(&parse_docs("kind: Secret\nmetadata: {name: x}\n").unwrap()).is_err());
        let bad = PodDoc {
            name: "p".into(),
            labels: Map::new(),
            spec: json!({"volumes": [{"name": "s", "secret": {"secretName": "x"}}],
                "containers": [{"name": "c", "image": "bb", "volumeMounts": [{"name": "s", "mountPath": "/s"}]}]}),
            ..Default::default()
        };
        assert!(create_body(&bad, &bad.spec["containers"][0], None, &[])
            .unwrap_err()
            .to_string()
            .contains("only persistentVolumeClaim, hostPath, emptyDir and configMap"));
    }

    #[test]
    fn config_maps_become_values_variables_and_files() {
        let docs = parse_docs(
            "kind: ConfigMap\nmetadata: {name: cfg}\ndata: {greeting: hi, app.conf: \"port=80\\n\", LEVEL: '3'}\n---\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: bb\n    env:\n    - name: G\n      valueFrom: {configMapKeyRef: {name: cfg, key: greeting}}\n    - name: GONE\n      valueFrom: {configMapKeyRef: {name: cfg, key: nope, optional: true}}\n    envFrom: [{configMapRef: {name: cfg}, prefix: C_}]\n    volumeMounts: [{name: conf, mountPath: /etc/app}]\n  volumes:\n  - name: conf\n    configMap: {name: cfg, items: [{key: app.conf, path: sub/app.conf}]}\n",
        )
        .unwrap();
        let (pods, _) = pods_of(&docs).unwrap();
        let p = &pods[0];
        let body = create_body(p, &p.spec["containers"][0], None, &[]).unwrap();
        let env: Vec<&str> = body["Env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            env.contains(&"C_greeting=hi") && env.contains(&"C_LEVEL=3"),
            "{env:?}"
        );
        assert!(env.contains(&"G=hi"), "{env:?}");
        assert!(
            !env.iter()
                .any(|e| e.starts_with("GONE") || e.contains("app.conf")),
            "{env:?}"
        );
        assert_eq!(
            p.files["conf"],
            vec![("sub/app.conf".to_string(), b"port=80\n".to_vec())]
        );
        assert_eq!(body["HostConfig"]["Mounts"][0]["Source"], "p-conf");
        let missing = parse_docs("kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: bb, envFrom: [{configMapRef: {name: none}}]}]\n").unwrap();
        assert!(pods_of(&missing)
            .unwrap_err()
            .to_string()
            .contains("configmap \"none\" not found"));
    }
}
