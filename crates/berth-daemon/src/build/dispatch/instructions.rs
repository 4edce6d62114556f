//! Each instruction's effect: on the stage's image config, or through a step (RUN,
//! COPY/ADD); and the checks of their flags and arguments.

use super::*;

/// The flags each instruction takes in Docker's classic builder (`--link` is accepted and
/// changes nothing here: every COPY writes a layer of its own).
/// Refuses flags the instruction does not take (`RUN --mount`, `--network` and
/// `--security` only in BuildKit builds).
pub(super) fn check_flags(ins: &Instruction, buildkit: bool) -> Result<(), Failure> {
    let allowed: &[&str] = match ins.cmd.as_str() {
        "COPY" if buildkit => &["from", "chown", "chmod", "link", "parents", "exclude"],
        "ADD" if buildkit => &["chown", "chmod", "link", "checksum", "exclude"],
        "COPY" => &["from", "chown", "chmod", "link"],
        "ADD" => &["chown", "chmod", "link", "checksum"],
        "FROM" => &["platform"],
        "HEALTHCHECK" => &[
            "interval",
            "timeout",
            "start-period",
            "start-interval",
            "retries",
        ],
        _ => &[],
    };
    for (name, _) in &ins.flags {
        if allowed.contains(&name.as_str()) {
            continue;
        }
        if ins.cmd == "RUN" && matches!(name.as_str(), "mount" | "network" | "security") && buildkit
        {
            continue;
        }
        if ins.cmd == "RUN" && matches!(name.as_str(), "mount" | "network" | "security") {
            return Err(fail(format!(
                "the --{name} option requires BuildKit; berth builds with Docker's classic builder"
            )));
        }
        return Err(fail(format!("Unknown flag: {name}")));
    }
    Ok(())
}

/// Docker's text of a JSON-form argument list in history.
pub(super) fn json_words(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub(super) fn quote(s: &str) -> String {
    if s.is_empty()
        || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == '$')
    {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
        )
    } else {
        s.to_string()
    }
}

pub(super) fn expose_ports(w: &str) -> Result<Vec<String>, Failure> {
    let (ports, proto) = match w.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (w, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(fail(format!("invalid proto: {proto}")));
    }
    let bad = || fail(format!("invalid containerPort: {ports}"));
    let (a, b) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if b < a {
        return Err(bad());
    }
    Ok((a..=b).map(|p| format!("{p}/{proto}")).collect())
}

pub(super) fn healthcheck(ins: &Instruction, text: &str) -> Result<Value, Failure> {
    let t = text.trim();
    let (kind, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
    if kind.eq_ignore_ascii_case("NONE") {
        if !rest.trim().is_empty() || !ins.flags.is_empty() {
            return Err(fail("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(json!({"Test": ["NONE"]}));
    }
    if !kind.eq_ignore_ascii_case("CMD") {
        return Err(fail(format!(
            "Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"
        )));
    }
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(fail("Missing command after HEALTHCHECK CMD"));
    }
    let test: Vec<String> = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
        Err(_) => vec!["CMD-SHELL".into(), rest.into()],
    };
    let mut hc = json!({"Test": test});
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = ins.flag(flag) {
            let n = berth_proto::duration::parse(v)
                .ok_or_else(|| fail(format!("time: invalid duration \"{v}\"")))?;
            hc[key] = Value::from(n);
        }
    }
    if let Some(v) = ins.flag("retries") {
        let n: i64 = v
            .parse()
            .map_err(|_| fail(format!("invalid retries: {v}")))?;
        hc["Retries"] = Value::from(n);
    }
    Ok(hc)
}

impl Builder {
    pub(super) async fn dispatch(
        &mut self,
        st: &mut Stage,
        ins: &Instruction,
    ) -> Result<(), Failure> {
        check_flags(ins, self.opts.session.is_some())?;
        let esc = self.escape;
        let text = ins.text();
        let nop = |s: &str| format!("/bin/sh -c #(nop)  {s}");
        macro_rules! expand {
            ($w:expr) => {{
                let vars = |n: &str| st.var(n);
                shell::expand($w, &vars, esc).map_err(|e| fail(format!("{}: {e}", ins.cmd)))?
            }};
        }
        match ins.cmd.as_str() {
            "ENV" | "LABEL" => {
                let pairs = {
                    let vars = |n: &str| st.var(n);
                    shell::pairs(&text, &vars, esc, true)
                        .map_err(|e| fail(format!("{}: {e}", ins.cmd)))?
                };
                let mut desc = Vec::new();
                for (k, v) in pairs {
                    let v = v.unwrap_or_default();
                    if ins.cmd == "ENV" {
                        let mut env = st.env();
                        env.retain(|e| e.split('=').next() != Some(k.as_str()));
                        env.push(format!("{k}={v}"));
                        st.config.insert("Env".into(), strings(&env));
                    } else {
                        let labels = st
                            .config
                            .entry("Labels")
                            .or_insert_with(|| Value::Object(Map::new()));
                        if !labels.is_object() {
                            *labels = Value::Object(Map::new());
                        }
                        labels[&k] = Value::from(v.clone());
                    }
                    desc.push(format!("{k}={v}"));
                }
                self.config_step(st, nop(&format!("{} {}", ins.cmd, desc.join(" "))))
                    .await
            }
            "ARG" => {
                let pairs = {
                    let vars = |n: &str| st.var(n);
                    shell::pairs(&text, &vars, esc, false).map_err(|e| fail(format!("ARG: {e}")))?
                };
                let mut desc = Vec::new();
                for (k, default) in pairs {
                    let v = match self.opts.build_args.get(&k) {
                        Some(Some(given)) => Some(given.clone()),
                        _ => default.clone().or_else(|| self.meta_value(&k)),
                    };
                    locked(&self.used_args).insert(k.clone());
                    desc.push(match &default {
                        Some(dv) => format!("{k}={dv}"),
                        None => k.clone(),
                    });
                    st.args.push((k, v));
                }
                self.config_step(st, nop(&format!("ARG {}", desc.join(" "))))
                    .await
            }
            "CMD" | "ENTRYPOINT" => {
                let v = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(s) => {
                        let mut sh = st.shell();
                        sh.push(s.clone());
                        sh
                    }
                };
                if ins.cmd == "CMD" {
                    st.cmd_set = true;
                    st.config.insert("Cmd".into(), strings(&v));
                } else {
                    st.config.insert("Entrypoint".into(), strings(&v));
                    if !st.cmd_set {
                        st.config.insert("Cmd".into(), Value::Null);
                    }
                }
                self.config_step(st, nop(&format!("{} {}", ins.cmd, json_words(&v))))
                    .await
            }
            "EXPOSE" => {
                let words = {
                    let vars = |n: &str| st.var(n);
                    shell::split(&text, &vars, esc).map_err(|e| fail(format!("EXPOSE: {e}")))?
                };
                if words.is_empty() {
                    return Err(fail("EXPOSE requires at least one argument"));
                }
                let mut ports = Vec::new();
                for w in &words {
                    ports.extend(expose_ports(w)?);
                }
                let map = st
                    .config
                    .entry("ExposedPorts")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !map.is_object() {
                    *map = Value::Object(Map::new());
                }
                for p in &ports {
                    map[p] = json!({});
                }
                self.config_step(st, nop(&format!("EXPOSE {}", ports.join(" "))))
                    .await
            }
            "VOLUME" => {
                let words = match &ins.args {
                    Args::Exec(v) => v
                        .iter()
                        .map(|w| Ok(expand!(w)))
                        .collect::<Result<Vec<_>, Failure>>()?,
                    Args::Shell(_) => {
                        let vars = |n: &str| st.var(n);
                        shell::split(&text, &vars, esc).map_err(|e| fail(format!("VOLUME: {e}")))?
                    }
                };
                if words.is_empty() || words.iter().any(|w| w.trim().is_empty()) {
                    return Err(fail("VOLUME specified can not be an empty string"));
                }
                let map = st
                    .config
                    .entry("Volumes")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !map.is_object() {
                    *map = Value::Object(Map::new());
                }
                for w in &words {
                    map[w.trim()] = json!({});
                }
                self.config_step(st, nop(&format!("VOLUME {}", json_words(&words))))
                    .await
            }
            "USER" | "STOPSIGNAL" => {
                let v = expand!(text.trim());
                if v.is_empty() {
                    return Err(fail(format!("{} requires exactly one argument", ins.cmd)));
                }
                let key = if ins.cmd == "USER" {
                    "User"
                } else {
                    "StopSignal"
                };
                st.config.insert(key.into(), Value::from(v.clone()));
                self.config_step(st, nop(&format!("{} {v}", ins.cmd))).await
            }
            "MAINTAINER" => {
                st.author = expand!(text.trim());
                let a = st.author.clone();
                self.config_step(st, nop(&format!("MAINTAINER {a}"))).await
            }
            "SHELL" => {
                let Args::Exec(v) = &ins.args else {
                    return Err(fail("SHELL requires the arguments to be in JSON form"));
                };
                if v.is_empty() {
                    return Err(fail("SHELL requires at least one argument"));
                }
                st.config.insert("Shell".into(), strings(v));
                self.config_step(st, nop(&format!("SHELL {}", json_words(v))))
                    .await
            }
            "ONBUILD" => {
                let Some(inner) = &ins.onbuild else {
                    return Err(fail("ONBUILD requires at least one argument"));
                };
                if matches!(inner.cmd.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(fail(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        inner.cmd
                    )));
                }
                let trigger = inner.original.trim().to_string();
                let mut list: Vec<Value> = st
                    .config
                    .get("OnBuild")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                list.push(Value::from(trigger.clone()));
                st.config.insert("OnBuild".into(), Value::from(list));
                self.config_step(st, nop(&format!("ONBUILD {trigger}")))
                    .await
            }
            "HEALTHCHECK" => {
                let hc = healthcheck(ins, &text)?;
                st.config.insert("Healthcheck".into(), hc);
                self.config_step(st, nop(&format!("HEALTHCHECK {}", text.trim())))
                    .await
            }
            "WORKDIR" => {
                let p = expand!(text.trim());
                if p.is_empty() {
                    return Err(fail("WORKDIR requires exactly one argument"));
                }
                let abs = if p.starts_with('/') {
                    p
                } else {
                    format!("{}/{p}", st.workdir())
                };
                let abs = format!("/{}", clamp(&abs));
                st.config
                    .insert("WorkingDir".into(), Value::from(abs.clone()));
                let created_by = nop(&format!("WORKDIR {abs}"));
                if st.image.is_some() {
                    let view = self.view(st.image.as_ref())?;
                    let real = view.tree.resolve(&clamp(&abs), true);
                    let dirs = missing_dirs(&view.tree, &real, None);
                    if !dirs.is_empty() {
                        let plan: Vec<Planned> =
                            dirs.into_iter().map(|(p, m)| Planned::Dir(p, m)).collect();
                        return self
                            .layer_step(
                                st,
                                created_by,
                                String::new(),
                                plan,
                                None,
                                None,
                                Mem::default(),
                            )
                            .await;
                    }
                }
                self.config_step(st, created_by).await
            }
            "RUN" => self.run_step(st, ins).await,
            "COPY" | "ADD" => self.copy_step(st, ins).await,
            other => Err(fail(format!("unknown instruction: {other}"))),
        }
    }
}
