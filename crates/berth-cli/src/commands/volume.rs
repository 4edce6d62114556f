//! `berth volume ...`, and the storage flags of `run`/`create` (`-v`, `--mount`,
//! `--volumes-from`).

use super::{filters_json, q, FormatArg};
use crate::client::{read_json, Client, ReqBody};
use crate::format::Format;
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Map, Value};

/// `--mount`'s CSV syntax (`type=bind,source=/a,target=/b,readonly`) into the API's
/// `Mounts` entry, with the docker CLI's errors.
pub fn parse_mount(spec: &str) -> Result<Value> {
    let wrap = |m: String| anyhow!("invalid argument \"{spec}\" for \"--mount\" flag: {m}");
    let mut kind = "volume".to_string();
    let mut m = Map::new();
    let mut bind = Map::new();
    let mut vol = Map::new();
    let mut tmpfs = Map::new();
    let mut labels = Map::new();
    let mut driver_opts = Map::new();
    let boolean = |k: &str, v: Option<&str>| -> Result<bool> {
        match v.map(str::to_ascii_lowercase).as_deref() {
            None | Some("1") | Some("true") => Ok(true),
            Some("0") | Some("false") => Ok(false),
            Some(x) => Err(wrap(format!("invalid value for {k}: {x}"))),
        }
    };
    for field in spec.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need = |v: Option<&str>| -> Result<String> {
            v.map(str::to_string)
                .ok_or_else(|| wrap(format!("invalid field '{field}' must be a key=value pair")))
        };
        match k.as_str() {
            "type" => kind = need(v)?,
            "source" | "src" => {
                m.insert("Source".into(), json!(need(v)?));
            }
            "target" | "dst" | "destination" => {
                m.insert("Target".into(), json!(need(v)?));
            }
            "readonly" | "ro" => {
                m.insert("ReadOnly".into(), json!(boolean(&k, v)?));
            }
            "consistency" => {
                m.insert("Consistency".into(), json!(need(v)?));
            }
            "bind-propagation" => {
                bind.insert("Propagation".into(), json!(need(v)?));
            }
            "bind-nonrecursive" => {
                bind.insert("NonRecursive".into(), json!(boolean(&k, v)?));
            }
            "bind-create-src" => {
                bind.insert("CreateMountpoint".into(), json!(boolean(&k, v)?));
            }
            "volume-nocopy" => {
                vol.insert("NoCopy".into(), json!(boolean(&k, v)?));
            }
            "volume-subpath" => {
                vol.insert("Subpath".into(), json!(need(v)?));
            }
            "volume-label" => {
                let l = need(v)?;
                let (a, b) = l.split_once('=').unwrap_or((&l, ""));
                labels.insert(a.into(), json!(b));
            }
            "volume-driver" => {
                vol.insert("DriverConfig".into(), json!({"Name": need(v)?}));
            }
            "volume-opt" => {
                let o = need(v)?;
                let (a, b) = o.split_once('=').unwrap_or((&o, ""));
                driver_opts.insert(a.into(), json!(b));
            }
            "tmpfs-size" => {
                let t = need(v)?;
                tmpfs.insert("SizeBytes".into(), json!(parse_bytes(&t).map_err(|_| wrap(format!("invalid value for {k}: {t}")))?));
            }
            "tmpfs-mode" => {
                let t = need(v)?;
                let mode = u32::from_str_radix(&t, 8)
                    .map_err(|_| wrap(format!("invalid value for {k}: {t}")))?;
                tmpfs.insert("Mode".into(), json!(mode));
            }
            _ => return Err(wrap(format!("unexpected key '{k}' in '{field}'"))),
        }
    }
    if !m.contains_key("Target") {
        return Err(wrap("target is required".into()));
    }
    if !labels.is_empty() {
        vol.insert("Labels".into(), Value::Object(labels));
    }
    if !driver_opts.is_empty() {
        let dc = vol.entry("DriverConfig").or_insert_with(|| json!({}));
        dc["Options"] = Value::Object(driver_opts);
    }
    let mixed = |what: &str| {
        wrap(format!(
            "cannot mix '{what}-*' options with mount type '{kind}'"
        ))
    };
    match kind.as_str() {
        "bind" => {
            if !vol.is_empty() {
                return Err(mixed("volume"));
            }
            if !tmpfs.is_empty() {
                return Err(mixed("tmpfs"));
            }
        }
        "volume" => {
            if !bind.is_empty() {
                return Err(mixed("bind"));
            }
            if !tmpfs.is_empty() {
                return Err(mixed("tmpfs"));
            }
        }
        "tmpfs" => {
            if !bind.is_empty() {
                return Err(mixed("bind"));
            }
            if !vol.is_empty() {
                return Err(mixed("volume"));
            }
        }
        _ => {}
    }
    m.insert("Type".into(), json!(kind));
    if !bind.is_empty() {
        m.insert("BindOptions".into(), Value::Object(bind));
    }
    if !vol.is_empty() {
        m.insert("VolumeOptions".into(), Value::Object(vol));
    }
    if !tmpfs.is_empty() {
        m.insert("TmpfsOptions".into(), Value::Object(tmpfs));
    }
    Ok(Value::Object(m))
}

/// `64m`, `1g`, `100` (bytes) as docker's units (powers of 1024).
fn parse_bytes(s: &str) -> Result<i64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.trim_end_matches('b').chars().last() {
        Some('k') => (&s[..s.find('k').unwrap_or(0)], 1i64 << 10),
        Some('m') => (&s[..s.find('m').unwrap_or(0)], 1 << 20),
        Some('g') => (&s[..s.find('g').unwrap_or(0)], 1 << 30),
        _ => (s.trim_end_matches('b'), 1),
    };
    let n: f64 = num.parse().map_err(|_| anyhow!("invalid size {s}"))?;
    Ok((n * mult as f64) as i64)
}

/// Puts `-v`, `--mount` and `--volumes-from` into a create request: `-v /path` is an
/// anonymous volume (Config.Volumes), `-v SRC:DST[:MODE]` a bind or named volume.
pub fn apply(
    cfg: &mut Value,
    volumes: &[String],
    mounts: &[String],
    from: &[String],
) -> Result<()> {
    let mut binds = Vec::new();
    let mut anon = cfg["Volumes"].as_object().cloned().unwrap_or_default();
    for v in volumes {
        if v.contains(':') {
            binds.push(v.clone());
        } else {
            anon.insert(v.clone(), json!({}));
        }
    }
    cfg["HostConfig"]["Binds"] = json!(binds);
    if !anon.is_empty() {
        cfg["Volumes"] = Value::Object(anon);
    }
    if !mounts.is_empty() {
        let parsed = mounts
            .iter()
            .map(|m| parse_mount(m))
            .collect::<Result<Vec<_>>>()?;
        cfg["HostConfig"]["Mounts"] = json!(parsed);
    }
    if !from.is_empty() {
        cfg["HostConfig"]["VolumesFrom"] = json!(from);
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum VolumeCmd {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume
    #[arg(long)]
    pub label: Vec<String>,
    /// Set driver specific options
    #[arg(short, long = "opt")]
    pub opt: Vec<String>,
    /// Specify volume name
    #[arg(long = "name")]
    pub name_flag: Option<String>,
    pub name: Option<String>,
}

fn kv(items: &[String]) -> Map<String, Value> {
    items
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), json!(v)),
            None => (l.clone(), json!("")),
        })
        .collect()
}

pub async fn create(c: &Client, a: CreateArgs) -> Result<()> {
    if a.name.is_some() && a.name_flag.is_some() {
        bail!("conflicting options: either specify --name or provide positional arg, not both");
    }
    let body = json!({
        "Name": a.name.or(a.name_flag).unwrap_or_default(),
        "Driver": a.driver,
        "DriverOpts": kv(&a.opt),
        "Labels": kv(&a.label),
    });
    let resp = c
        .request(
            Method::POST,
            "/volumes/create",
            ReqBody::Full(Some(serde_json::to_vec(&body)?.into())),
            &[("Content-Type", "application/json".to_string())],
        )
        .await?;
    let v = read_json(resp).await?;
    println!("{}", v["Name"].as_str().unwrap_or_default());
    Ok(())
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Only display volume names
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

pub async fn ls(c: &Client, a: LsArgs) -> Result<()> {
    let mut path = "/volumes".to_string();
    if let Some(f) = filters_json(&a.filter)? {
        path.push_str(&format!("?filters={}", q(&f)));
    }
    let v = c.get_json(&path).await?;
    let mut vols: Vec<Value> = v["Volumes"].as_array().cloned().unwrap_or_default();
    vols.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
    if a.quiet {
        for x in &vols {
            println!("{}", x["Name"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let rows: Vec<Value> = vols
        .iter()
        .map(|x| {
            let labels = crate::format::labels_text(&x["Labels"]);
            json!({
                "Name": x["Name"], "Driver": x["Driver"], "Scope": x["Scope"],
                "Mountpoint": x["Mountpoint"], "Labels": labels,
                "Links": "N/A", "Size": "N/A",
            })
        })
        .collect();
    let f = Format::new(a.format.format.as_deref(), "{{.Driver}}\t{{.Name}}");
    let headers = json!({"Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS", "Links": "LINKS", "Size": "SIZE"});
    print!("{}", f.render(&rows, &headers)?);
    Ok(())
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short, long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

pub async fn inspect(c: &Client, a: InspectArgs) -> Result<()> {
    let paths: Vec<String> = a
        .volumes
        .iter()
        .map(|n| format!("/volumes/{}", q(n)))
        .collect();
    super::images::inspect_paths(c, &paths, a.format.as_deref()).await
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Force the removal of one or more volumes
    #[arg(short, long)]
    pub force: bool,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

pub async fn rm(c: &Client, a: RmArgs) -> Result<()> {
    let paths: Vec<(String, String)> = a
        .volumes
        .iter()
        .map(|n| (n.clone(), format!("/volumes/{}?force={}", q(n), a.force)))
        .collect();
    super::remove_each(c, &paths, false).await
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long)]
    pub filter: Vec<String>,
}

pub async fn prune(c: &Client, a: PruneArgs) -> Result<()> {
    let warning = if a.all {
        "WARNING! This will remove all local volumes not used by at least one container.\nAre you sure you want to continue?"
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container.\nAre you sure you want to continue?"
    };
    if !a.force && !super::confirm(warning) {
        return Ok(());
    }
    let (space, out) = run_prune(c, a.all, &a.filter).await?;
    super::print_pruned(&out, Some(space));
    Ok(())
}

/// Removes unused anonymous (with `all`, all unused) local volumes: the space reclaimed
/// and what docker prints of it.
pub async fn run_prune(c: &Client, all: bool, filter: &[String]) -> Result<(i64, String)> {
    let mut filters = filter.to_vec();
    if all {
        filters.push("all=true".into());
    }
    let mut path = "/volumes/prune".to_string();
    if let Some(f) = filters_json(&filters)? {
        path.push_str(&format!("?filters={}", q(&f)));
    }
    let v = c.send_json(Method::POST, &path).await?;
    Ok((
        v["SpaceReclaimed"].as_i64().unwrap_or(0),
        super::deleted_list("Deleted Volumes:", &v["VolumesDeleted"]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flags() {
        let m = parse_mount("type=bind,source=/a,target=/b,readonly").unwrap();
        assert_eq!(
            m,
            json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true})
        );
        let m = parse_mount("src=data,dst=/d,volume-nocopy,volume-subpath=x/y").unwrap();
        assert_eq!(m["Type"], "volume");
        assert_eq!(
            m["VolumeOptions"],
            json!({"NoCopy": true, "Subpath": "x/y"})
        );
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
        assert_eq!(
            m["TmpfsOptions"],
            json!({"SizeBytes": 64 << 20, "Mode": 0o1770})
        );
        for (bad, says) in [
            ("type=bind,source=/a", "target is required"),
            (
                "type=bind,target=/b,foo=1",
                "unexpected key 'foo' in 'foo=1'",
            ),
            (
                "type=bind,target",
                "invalid field 'target' must be a key=value pair",
            ),
            (
                "type=bind,target=/b,readonly=maybe",
                "invalid value for readonly: maybe",
            ),
            (
                "type=bind,target=/b,volume-nocopy",
                "cannot mix 'volume-*' options with mount type 'bind'",
            ),
        ] {
            let e = parse_mount(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(
                e.starts_with(&format!(
                    "invalid argument \"{bad}\" for \"--mount\" flag: "
                )),
                "{e}"
            );
        }
    }
}
