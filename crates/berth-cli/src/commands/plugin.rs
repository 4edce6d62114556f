//! CLI plugins: `berth NAME …` for a command berth does not have runs the docker CLI
//! plugin `docker-NAME` (Compose v2 as `berth compose`, buildx as `berth buildx`), found
//! where the docker CLI looks: config.json's `cliPluginsExtraDirs`,
//! `$DOCKER_CONFIG/cli-plugins`, then the system plugin directories. As with the docker
//! CLI, the plugin gets the whole command line (global flags included) and
//! `DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND`; when no flag, environment or context chose the
//! daemon, `DOCKER_HOST` tells it berth's default socket.

use super::registry::{config_dir, read_config};
use anyhow::{bail, Result};
use serde_json::Value;
use std::path::PathBuf;

const SYSTEM_DIRS: [&str; 4] = [
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
];

/// The directories searched for plugins, in order.
pub fn dirs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = read_config()["cliPluginsExtraDirs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    out.push(config_dir().join("cli-plugins"));
    out.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    out
}

/// A plugin name as the docker CLI accepts it: a lowercase letter, then lowercase
/// letters and digits.
fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit())
}

/// A plugin found on disk: its path and the metadata it reported.
pub struct Plugin {
    pub path: PathBuf,
    pub metadata: Value,
}

/// The plugin `name`, if one is installed and answers `docker-cli-plugin-metadata` as
/// a plugin must (schema 0.x, a vendor).
pub fn find(name: &str) -> Option<Plugin> {
    if !valid_name(name) {
        return None;
    }
    dirs()
        .into_iter()
        .map(|d| d.join(format!("docker-{name}")))
        .filter(|p| p.is_file())
        .find_map(|path| {
            let out = std::process::Command::new(&path)
                .arg("docker-cli-plugin-metadata")
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let metadata: Value = serde_json::from_slice(&out.stdout).ok()?;
            let schema_ok = metadata["SchemaVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("0."));
            let vendor_ok = metadata["Vendor"].as_str().is_some_and(|v| !v.is_empty());
            (schema_ok && vendor_ok).then_some(Plugin { path, metadata })
        })
}

/// The plugins installed: name and short description, by name.
pub fn installed() -> Vec<(String, String)> {
    let mut names: Vec<String> = dirs()
        .into_iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(|d| d.flatten())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("docker-"))
                .filter(|n| valid_name(n))
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|n| {
            let p = find(&n)?;
            let about = p.metadata["ShortDescription"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            Some((n, about))
        })
        .collect()
}

/// Runs the plugin `args` names (the command line from the plugin's name on) in place
/// of this process, with the original command line; returns only if it cannot.
pub fn exec(args: &[std::ffi::OsString], default_host: Option<&str>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let name = args
        .first()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let Some(plugin) = find(&name) else {
        bail!("berth: unknown command: berth {name}\n\nRun 'berth --help' for more information");
    };
    let me = std::env::args_os().next().unwrap_or_else(|| "berth".into());
    let mut cmd = std::process::Command::new(&plugin.path);
    cmd.args(&argv)
        .env("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND", me);
    if let Some(h) = default_host {
        cmd.env("DOCKER_HOST", h);
    }
    let err = cmd.exec();
    bail!("running plugin {}: {err}", plugin.path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names() {
        assert!(valid_name("compose"));
        assert!(valid_name("buildx2"));
        assert!(!valid_name("Compose"));
        assert!(!valid_name("2x"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name("../x"));
        assert!(!valid_name(""));
    }
}
