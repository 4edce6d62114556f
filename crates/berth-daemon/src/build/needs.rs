//! What of the context a Dockerfile's steps can read: the sources of COPY and ADD
//! (without `--from`) and the sources of `RUN --mount=type=bind` from the context. A
//! BuildKit client sends only these paths (its include patterns, as BuildKit's own
//! Dockerfile frontend asks for them), so files the build never reads do not cross.

use berth_build::parser::{Args, Dockerfile};
use berth_build::shell;

/// The context paths the steps of `file` can read, clean and relative (a wildcard's
/// directory stands for it), or `None` when the whole context may be read: a source of
/// `.`, a variable in a source or a base image, a wildcard in a path's first element, an
/// `ONBUILD` trigger. `has_triggers(image)` says whether a base image may carry
/// `ONBUILD` triggers (which copy from the context); an image it does not know does.
pub fn context_paths(
    file: &Dockerfile,
    has_triggers: impl Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let mut stages: Vec<String> = Vec::new();
    let mut paths: Vec<String> = Vec::new();
    for ins in &file.instructions {
        if ins.onbuild.is_some() {
            return None;
        }
        let words = match &ins.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(t) => shell::split_raw(t, file.escape).ok()?,
        };
        match ins.cmd.as_str() {
            "FROM" => {
                let image = words.first()?;
                if image.contains('$') {
                    return None;
                }
                let known = stages.iter().any(|s| s.eq_ignore_ascii_case(image));
                if !known && !image.eq_ignore_ascii_case("scratch") && has_triggers(image) {
                    return None;
                }
                if words.len() == 3 && words[1].eq_ignore_ascii_case("as") {
                    stages.push(words[2].clone());
                }
            }
            "COPY" | "ADD" => {
                if ins.flag("from").is_some() {
                    continue;
                }
                let heredocs: Vec<String> = ins
                    .heredocs
                    .iter()
                    .flat_map(|h| [format!("<<{}", h.name), format!("<<-{}", h.name)])
                    .collect();
                let (_, srcs) = words.split_last()?;
                for src in srcs {
                    let remote = src.starts_with("http://")
                        || src.starts_with("https://")
                        || src.starts_with("git@");
                    if remote
                        || src.starts_with("<<")
                            && heredocs.iter().any(|h| src.starts_with(h.as_str()))
                    {
                        continue;
                    }
                    paths.push(needed(&src.replace("/./", "/"))?);
                }
            }
            "RUN" => {
                for (_, v) in ins.flags.iter().filter(|(n, _)| n == "mount") {
                    let v = v.as_deref().unwrap_or_default();
                    if v.contains('$') {
                        return None;
                    }
                    let spec = super::runmount::parse(v).ok()?;
                    if spec.kind == "bind" && spec.from.is_empty() {
                        paths.push(needed(&spec.source)?);
                    }
                }
            }
            _ => {}
        }
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// The context path a source names, cut before its first wildcard; `None` for the whole
/// context.
fn needed(src: &str) -> Option<String> {
    if src.contains('$') {
        return None;
    }
    let mut kept = Vec::new();
    for part in src.split('/') {
        if part.contains(['*', '?', '[', '\\']) {
            break;
        }
        kept.push(part);
    }
    let path = super::source::clean(&kept.join("/"))?;
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(text: &str) -> Option<Vec<String>> {
        context_paths(&berth_build::parser::parse(text).unwrap(), |i| i == "trig")
    }

    #[test]
    fn sources_of_the_context_only() {
        assert_eq!(
            paths(
                "FROM bb AS a\nCOPY a.txt src/ /x/\nADD https://example.com/f /f\nCOPY --from=a /etc /e\nFROM a\nCOPY ./lib/*.so docs/./sub/f /o/\nRUN --mount=type=bind,source=tools,target=/t --mount=type=cache,target=/c true\nCOPY <<EOF /h\nhi\nEOF\n"
            ),
            Some(vec![
                "a.txt".to_string(),
                "docs/sub/f".to_string(),
                "lib".to_string(),
                "src".to_string(),
                "tools".to_string()
            ])
        );
        assert_eq!(paths("FROM bb\nRUN true\n"), Some(vec![]));
    }

    #[test]
    fn the_whole_context_when_unsure() {
        for text in [
            "FROM bb\nCOPY . /app\n",
            "FROM bb\nCOPY ./ /app\n",
            "FROM bb\nARG D=src\nCOPY $D /app\n",
            "FROM bb\nCOPY *.txt /app/\n",
            "ARG B=bb\nFROM $B\nCOPY a /a\n",
            "FROM trig\nCOPY a /a\n",
            "FROM bb\nONBUILD COPY a /a\n",
            "FROM bb\nRUN --mount=type=bind,target=/m true\n",
        ] {
            assert_eq!(paths(text), None, "{text}");
        }
    }
}
