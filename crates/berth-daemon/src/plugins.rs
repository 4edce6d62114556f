//! Managed plugins (`/plugins`): installed from a registry (`plugin install`, the
//! privileges it asks for shown first) or made from a directory (`plugin create`: a
//! `config.json` and a `rootfs/`), listed, inspected, configured (`plugin set`) and
//! removed.
//!
//! A plugin lives in `DATA_ROOT/plugins/<id>/`: `plugin.json` (its record, the API's
//! shape; written to a temp file and renamed) and `rootfs/` (its unpacked layers, or the
//! directory it was made from). Its config is read as Docker reads it (field names
//! without regard to case: `config.json` files spell them in lower case) and kept in the
//! API's spelling.
//!
//! berthd does not run plugins: `enable` is refused with a clear error, so every plugin
//! stays disabled (and `disable` answers as dockerd does for a disabled plugin).

use crate::error::EngineError;
use berth_image::reference::Reference;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The media type of a plugin's config in a registry.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.plugin.v1+json";

/// One installed plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub id: String,
    /// `vieux/sshfs:latest`
    pub name: String,
    /// what it was installed from (`docker.io/vieux/sshfs:latest`), empty when made here
    pub reference: String,
    /// the config, in the API's spelling
    pub config: Value,
    /// `Settings`: Mounts, Env, Args, Devices
    pub settings: Value,
}

impl Plugin {
    /// `GET /plugins/{name}/json`'s shape.
    pub fn to_json(&self) -> Value {
        json!({
            "Id": self.id,
            "Name": self.name,
            "Enabled": false,
            "Settings": self.settings,
            "PluginReference": self.reference,
            "Config": self.config,
        })
    }

    fn from_json(v: &Value) -> Option<Plugin> {
        Some(Plugin {
            id: v["Id"].as_str()?.to_string(),
            name: v["Name"].as_str()?.to_string(),
            reference: v["PluginReference"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            config: v["Config"].clone(),
            settings: v["Settings"].clone(),
        })
    }
}

/// The installed plugins.
pub struct Plugins {
    dir: PathBuf,
    list: Mutex<Vec<Arc<Plugin>>>,
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::internal(format!("{what}: {e}"))
}

/// A plugin name as Docker keeps it: `NAME:TAG`, familiar (`vieux/sshfs:latest`).
pub fn normalize_name(name: &str) -> Result<Reference, EngineError> {
    let r = Reference::parse_tagged_default(name)
        .map_err(|e| EngineError::invalid(format!("invalid reference format: {name}: {e}")))?;
    if r.digest().is_some() {
        return Err(EngineError::invalid(format!(
            "invalid plugin name {name}: a plugin name cannot have a digest"
        )));
    }
    Ok(r)
}

impl Plugins {
    /// Loads the plugins under `DATA_ROOT/plugins`; a directory without a readable record
    /// (a create or pull that did not finish) is removed.
    pub fn open(data_root: &Path) -> anyhow::Result<Plugins> {
        let dir = data_root.join("plugins");
        std::fs::create_dir_all(&dir)?;
        let mut list = Vec::new();
        for e in std::fs::read_dir(&dir)?.flatten() {
            let rec = std::fs::read(e.path().join("plugin.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| Plugin::from_json(&v));
            match rec {
                Some(p) => list.push(Arc::new(p)),
                None => {
                    tracing::info!(path = %e.path().display(), "removing an unfinished plugin");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Plugins {
            dir,
            list: Mutex::new(list),
        })
    }

    pub fn all(&self) -> Vec<Arc<Plugin>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// By name (`NAME`, `NAME:TAG`), full ID or unique ID prefix.
    pub fn find(&self, key: &str) -> Result<Arc<Plugin>, EngineError> {
        let all = self.all();
        let name = normalize_name(key).ok().map(|r| r.familiar());
        if let Some(p) = all
            .iter()
            .find(|p| Some(&p.name) == name.as_ref() || p.id == key)
        {
            return Ok(p.clone());
        }
        let hits: Vec<&Arc<Plugin>> = all
            .iter()
            .filter(|p| !key.is_empty() && p.id.starts_with(key))
            .collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(EngineError::not_found(format!(
                "plugin \"{key}\" not found"
            ))),
            _ => Err(EngineError::not_found(format!(
                "plugin \"{key}\" not found: multiple IDs found with provided prefix"
            ))),
        }
    }

    /// A new plugin's directory (not yet listed): its path and ID. Refused when `name` is
    /// installed already.
    pub fn reserve(&self, name: &str) -> Result<(PathBuf, String), EngineError> {
        if self.all().iter().any(|p| p.name == name) {
            return Err(EngineError::conflict(format!(
                "plugin {name} already exists"
            )));
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let dir = self.dir.join(&id);
        std::fs::create_dir_all(dir.join("rootfs"))
            .map_err(io_err("making the plugin's directory"))?;
        Ok((dir, id))
    }

    /// Records a plugin whose rootfs is in place (its directory from [`Self::reserve`]).
    pub fn commit(&self, p: Plugin) -> Result<Arc<Plugin>, EngineError> {
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        if list.iter().any(|x| x.name == p.name) {
            let _ = std::fs::remove_dir_all(self.dir.join(&p.id));
            return Err(EngineError::conflict(format!(
                "plugin {} already exists",
                p.name
            )));
        }
        self.write(&p)?;
        let p = Arc::new(p);
        list.push(p.clone());
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(p)
    }

    fn write(&self, p: &Plugin) -> Result<(), EngineError> {
        let dir = self.dir.join(&p.id);
        let tmp = dir.join("plugin.json.tmp");
        let body =
            serde_json::to_vec(&p.to_json()).map_err(|e| EngineError::internal(e.to_string()))?;
        std::fs::write(&tmp, body).map_err(io_err("writing the plugin's record"))?;
        std::fs::rename(&tmp, dir.join("plugin.json"))
            .map_err(io_err("writing the plugin's record"))
    }

    /// Drops a reserved directory whose plugin was never recorded.
    pub fn abandon(&self, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
    }

    /// `DELETE /plugins/{name}`.
    pub fn remove(&self, key: &str) -> Result<Arc<Plugin>, EngineError> {
        let p = self.find(key)?;
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        list.retain(|x| x.id != p.id);
        drop(list);
        // the record first: a removal cut short leaves a directory the next start clears
        let dir = self.dir.join(&p.id);
        let _ = std::fs::remove_file(dir.join("plugin.json"));
        std::fs::remove_dir_all(&dir).map_err(io_err("removing the plugin"))?;
        Ok(p)
    }

    /// `POST /plugins/{name}/set`: `NAME=VALUE` for an env variable, `NAME.source=PATH`
    /// for a mount, `NAME.path=PATH` for a device, `NAME=V1 V2` for the args; each only
    /// where the config says it is settable.
    pub fn set(&self, key: &str, args: &[String]) -> Result<(), EngineError> {
        let p = self.find(key)?;
        let mut settings = p.settings.clone();
        for a in args {
            apply_setting(&p.config, &mut settings, a)?;
        }
        let mut list = self.list.lock().unwrap_or_else(|p| p.into_inner());
        let new = Plugin {
            settings,
            ..(*p).clone()
        };
        self.write(&new)?;
        if let Some(slot) = list.iter_mut().find(|x| x.id == p.id) {
            *slot = Arc::new(new);
        }
        Ok(())
    }
}

/// Every key of `v`, at any depth, in lower case (Go reads JSON fields without regard
/// to case, and plugin configs are written in lower case).
fn lower_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lower_keys(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(lower_keys).collect()),
        other => other.clone(),
    }
}

fn string(v: &Value) -> Value {
    Value::from(v.as_str().unwrap_or_default())
}

fn strings(v: &Value) -> Value {
    Value::Array(
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(Value::from))
            .collect(),
    )
}

fn boolean(v: &Value) -> Value {
    Value::from(v.as_bool().unwrap_or(false))
}

/// A settable item's common fields: Name, Description, Settable.
fn item(v: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Name".into(), string(&v["name"]));
    m.insert("Description".into(), string(&v["description"]));
    m.insert("Settable".into(), strings(&v["settable"]));
    m
}

/// A plugin config (`config.json`, or a registry's config blob) in the API's spelling,
/// with Docker's defaults; `diff_ids` of its rootfs layers.
pub fn normalize_config(raw: &Value, diff_ids: &[String]) -> Result<Value, EngineError> {
    if !raw.is_object() {
        return Err(EngineError::invalid(
            "the plugin's config is not a JSON object",
        ));
    }
    let c = lower_keys(raw);
    let socket = c["interface"]["socket"].as_str().unwrap_or_default();
    if socket.is_empty() || socket.contains('/') {
        return Err(EngineError::invalid(
            "the plugin's config needs interface.socket: a socket file name",
        ));
    }
    let mounts: Vec<Value> = c["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let mut o = item(m);
            o.insert("Source".into(), string(&m["source"]));
            o.insert("Destination".into(), string(&m["destination"]));
            o.insert("Type".into(), string(&m["type"]));
            o.insert("Options".into(), strings(&m["options"]));
            Value::Object(o)
        })
        .collect();
    let devices: Vec<Value> = c["linux"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let mut o = item(d);
            o.insert("Path".into(), string(&d["path"]));
            Value::Object(o)
        })
        .collect();
    let env: Vec<Value> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let mut o = item(e);
            o.insert("Value".into(), string(&e["value"]));
            Value::Object(o)
        })
        .collect();
    let mut args = item(&c["args"]);
    args.insert("Value".into(), strings(&c["args"]["value"]));
    let network = c["network"]["type"].as_str().unwrap_or_default();
    let mut out = json!({
        "DockerVersion": string(&c["dockerversion"]),
        "Description": string(&c["description"]),
        "Documentation": string(&c["documentation"]),
        "Interface": {
            "Types": strings(&c["interface"]["types"]),
            "Socket": socket,
            "ProtocolScheme": string(&c["interface"]["protocolscheme"]),
        },
        "Entrypoint": strings(&c["entrypoint"]),
        "WorkDir": string(&c["workdir"]),
        "Network": {"Type": network},
        "Linux": {
            "Capabilities": strings(&c["linux"]["capabilities"]),
            "AllowAllDevices": boolean(&c["linux"]["allowalldevices"]),
            "Devices": devices,
        },
        "PropagatedMount": string(&c["propagatedmount"]),
        "IpcHost": boolean(&c["ipchost"]),
        "PidHost": boolean(&c["pidhost"]),
        "Mounts": mounts,
        "Env": env,
        "Args": args,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    if c["user"].is_object() {
        out["User"] = json!({
            "UID": c["user"]["uid"].as_u64().unwrap_or(0),
            "GID": c["user"]["gid"].as_u64().unwrap_or(0),
        });
    }
    Ok(out)
}

/// A new plugin's settings, from its config: the env variables that have a value,
/// its args, mounts and devices.
pub fn initial_settings(config: &Value) -> Value {
    let env: Vec<Value> = config["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e.get("Value").is_some_and(Value::is_string))
        .map(|e| {
            Value::from(format!(
                "{}={}",
                e["Name"].as_str().unwrap_or_default(),
                e["Value"].as_str().unwrap_or_default()
            ))
        })
        .collect();
    json!({
        "Mounts": config["Mounts"],
        "Env": env,
        "Args": config["Args"]["Value"],
        "Devices": config["Linux"]["Devices"],
    })
}

/// What a plugin may do beyond a container's defaults, which `plugin install` shows
/// and the user grants: host networking or namespaces, host paths, devices,
/// capabilities.
pub fn privileges(config: &Value) -> Value {
    let mut out = Vec::new();
    let mut add = |name: &str, description: &str, value: Vec<String>| {
        out.push(json!({"Name": name, "Description": description, "Value": value}));
    };
    let network = config["Network"]["Type"].as_str().unwrap_or_default();
    if !matches!(network, "" | "null" | "bridge") {
        add(
            "network",
            "permissions to access a network",
            vec![network.to_string()],
        );
    }
    if config["IpcHost"].as_bool() == Some(true) {
        add(
            "host ipc namespace",
            "allow access to host ipc namespace",
            vec!["true".into()],
        );
    }
    if config["PidHost"].as_bool() == Some(true) {
        add(
            "host pid namespace",
            "allow access to host pid namespace",
            vec!["true".into()],
        );
    }
    for m in config["Mounts"].as_array().into_iter().flatten() {
        if let Some(src) = m["Source"].as_str().filter(|s| !s.is_empty()) {
            add("mount", "host path to mount", vec![src.to_string()]);
        }
    }
    for d in config["Linux"]["Devices"].as_array().into_iter().flatten() {
        if let Some(path) = d["Path"].as_str().filter(|s| !s.is_empty()) {
            add("device", "host device to access", vec![path.to_string()]);
        }
    }
    if config["Linux"]["AllowAllDevices"].as_bool() == Some(true) {
        add(
            "allow-all-devices",
            "allow 'rwm' access to all devices",
            vec!["true".into()],
        );
    }
    let caps: Vec<String> = config["Linux"]["Capabilities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(str::to_string))
        .collect();
    if !caps.is_empty() {
        add(
            "capabilities",
            "list of additional capabilities required",
            caps,
        );
    }
    Value::Array(out)
}

/// Whether the privileges a client granted are the ones the plugin asks for (same
/// names and values, in any order).
pub fn granted(asked: &Value, given: &Value) -> bool {
    let key = |v: &Value| {
        let mut all: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut vals: Vec<String> = p["Value"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect();
                vals.sort();
                format!(
                    "{}={}",
                    p["Name"].as_str().unwrap_or_default(),
                    vals.join(",")
                )
            })
            .collect();
        all.sort();
        all
    };
    key(asked) == key(given)
}

/// One `plugin set` argument applied to `settings`, as the config allows it.
fn apply_setting(config: &Value, settings: &mut Value, arg: &str) -> Result<(), EngineError> {
    let bad = |m: String| EngineError::invalid(m);
    let (lhs, value) = arg
        .split_once('=')
        .ok_or_else(|| bad(format!("invalid setting {arg:?}: it should be NAME=VALUE")))?;
    let (name, field) = match lhs.split_once('.') {
        Some((n, f)) => (n, Some(f)),
        None => (lhs, None),
    };
    let settable = |v: &Value, what: &str| {
        v["Settable"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s.as_str() == Some(what))
    };
    let find = |list: &Value| -> Option<Value> {
        list.as_array()?
            .iter()
            .find(|x| x["Name"].as_str() == Some(name))
            .cloned()
    };
    let not_settable = |what: &str| {
        bad(format!(
            "setting {what} of {name} is not allowed by the plugin's config"
        ))
    };
    if let Some(e) = find(&config["Env"]) {
        if field.is_some_and(|f| f != "value") || !settable(&e, "value") {
            return Err(not_settable("the value"));
        }
        let env = settings["Env"].as_array_mut();
        let Some(env) = env else {
            settings["Env"] = json!([format!("{name}={value}")]);
            return Ok(());
        };
        let new = Value::from(format!("{name}={value}"));
        match env.iter_mut().find(|x| {
            x.as_str()
                .is_some_and(|s| s.split('=').next() == Some(name))
        }) {
            Some(slot) => *slot = new,
            None => env.push(new),
        }
        return Ok(());
    }
    let (list_key, wanted, item) = if let Some(m) = find(&config["Mounts"]) {
        ("Mounts", "source", m)
    } else if let Some(d) = find(&config["Linux"]["Devices"]) {
        ("Devices", "path", d)
    } else if config["Args"]["Name"].as_str() == Some(name) {
        if !settable(&config["Args"], "value") || field.is_some_and(|f| f != "value") {
            return Err(not_settable("the value"));
        }
        settings["Args"] = Value::Array(value.split_whitespace().map(Value::from).collect());
        return Ok(());
    } else {
        return Err(bad(format!("plugin has no setting named {name}")));
    };
    let field = field.unwrap_or(wanted);
    if field != wanted || !settable(&item, wanted) {
        return Err(not_settable(field));
    }
    let key = if wanted == "source" { "Source" } else { "Path" };
    if let Some(slot) = settings[list_key]
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|x| x["Name"].as_str() == Some(name)))
    {
        slot[key] = Value::from(value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sshfs() -> Value {
        json!({
            "description": "sshFS plugin for Docker",
            "documentation": "https://docs.docker.com/engine/extend/plugins/",
            "entrypoint": ["/docker-volume-sshfs"],
            "network": {"type": "host"},
            "interface": {"socket": "sshfs.sock", "types": ["docker.volumedriver/1.0"]},
            "linux": {
                "capabilities": ["CAP_SYS_ADMIN"],
                "devices": [{"path": "/dev/fuse"}]
            },
            "mounts": [{"destination": "/mnt/state", "options": ["rbind"], "name": "state",
                        "source": "/var/lib/docker/plugins/", "settable": ["source"], "type": "bind"}],
            "env": [{"name": "DEBUG", "settable": ["value"], "value": "0"}],
            "PropagatedMount": "/mnt/volumes"
        })
    }

    #[test]
    fn configs_are_read_as_docker_reads_them() {
        let c = normalize_config(&sshfs(), &["sha256:ab".into()]).unwrap();
        assert_eq!(c["Entrypoint"], json!(["/docker-volume-sshfs"]));
        assert_eq!(c["Interface"]["Socket"], "sshfs.sock");
        assert_eq!(c["PropagatedMount"], "/mnt/volumes");
        assert_eq!(c["Mounts"][0]["Source"], "/var/lib/docker/plugins/");
        assert_eq!(c["rootfs"]["diff_ids"], json!(["sha256:ab"]));
        let s = initial_settings(&c);
        assert_eq!(s["Env"], json!(["DEBUG=0"]));
        assert_eq!(s["Devices"][0]["Path"], "/dev/fuse");
        assert!(normalize_config(&json!({"entrypoint": ["/x"]}), &[]).is_err());
        assert!(normalize_config(&json!([]), &[]).is_err());
    }

    #[test]
    fn privileges_of_a_config() {
        let c = normalize_config(&sshfs(), &[]).unwrap();
        let p = privileges(&c);
        let names: Vec<&str> = p
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["network", "mount", "device", "capabilities"]);
        assert_eq!(p[0]["Value"], json!(["host"]));
        assert!(granted(&p, &p));
        let mut fewer = p.clone();
        fewer.as_array_mut().unwrap().pop();
        assert!(!granted(&p, &fewer));
        assert!(granted(&json!([]), &Value::Null));
    }

    #[test]
    fn settings_follow_the_config() {
        let c = normalize_config(&sshfs(), &[]).unwrap();
        let mut s = initial_settings(&c);
        apply_setting(&c, &mut s, "DEBUG=1").unwrap();
        assert_eq!(s["Env"], json!(["DEBUG=1"]));
        apply_setting(&c, &mut s, "state.source=/srv").unwrap();
        assert_eq!(s["Mounts"][0]["Source"], "/srv");
        assert!(apply_setting(&c, &mut s, "state.destination=/x").is_err());
        assert!(apply_setting(&c, &mut s, "NOPE=1").is_err());
        assert!(apply_setting(&c, &mut s, "DEBUG").is_err());
    }
}
