//! The Dockerfile parser: parser directives (`escape`, `syntax`, `check`) at the top,
//! comments and empty lines, line continuations with the escape character (comment
//! lines inside a continuation dropped), instruction keywords in any case, leading
//! `--flag[=value]`s, JSON (exec) or shell forms, heredocs (`<<EOF`, `<<-EOF`, quoted
//! delimiters turn expansion off), and `ONBUILD` triggers. Arguments are kept as
//! written; expansion happens when the builder knows the variables.

use std::fmt;

/// The instructions Docker knows.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Instructions whose arguments may be a JSON array (exec form).
const JSON_FORM: &[&str] = &["ADD", "CMD", "COPY", "ENTRYPOINT", "RUN", "SHELL", "VOLUME"];
/// Instructions that take `--flag`s.
const FLAGGED: &[&str] = &["ADD", "COPY", "FROM", "HEALTHCHECK", "RUN"];
/// Instructions that may carry heredocs.
const HEREDOC: &[&str] = &["ADD", "COPY", "RUN"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dockerfile parse error on line {}: {}",
            self.line, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// An instruction's arguments: a JSON array, or the text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub content: String,
    /// an unquoted delimiter: variables in the body expand
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// the keyword, uppercase
    pub cmd: String,
    /// `--name[=value]` flags before the arguments
    pub flags: Vec<(String, Option<String>)>,
    pub args: Args,
    pub heredocs: Vec<Heredoc>,
    /// the instruction an ONBUILD registers
    pub onbuild: Option<Box<Instruction>>,
    /// where it starts and ends (1-based)
    pub line: usize,
    pub end_line: usize,
    /// the logical line as written (continuations joined), for `Step N/M : …`
    pub original: String,
}

impl Instruction {
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or(""))
    }

    /// The shell-form text (the JSON array joined for exec form).
    pub fn text(&self) -> String {
        match &self.args {
            Args::Shell(s) => s.clone(),
            Args::Exec(v) => v.join(" "),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub escape: char,
    /// the `syntax` directive (berth has one builder: it is noted, not used)
    pub syntax: Option<String>,
    pub instructions: Vec<Instruction>,
    pub warnings: Vec<String>,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// A directive line: `# key=value`.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

fn bad_escape(v: &str) -> String {
    format!("invalid escape token '{v}' does not validate as a single character")
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Parses a whole Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut escape = '\\';
    let mut syntax = None;
    let mut warnings = Vec::new();
    let mut seen = Vec::new();
    let mut i = 0;
    // parser directives: only at the very top
    while i < lines.len() {
        let Some((k, v)) = directive(lines[i]) else {
            break;
        };
        if seen.contains(&k) {
            return Err(err(
                i + 1,
                format!("only one {k} parser directive can be used"),
            ));
        }
        match k.as_str() {
            "escape" => {
                escape = match v.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => return Err(err(i + 1, bad_escape(&v))),
                }
            }
            "syntax" => {
                warnings.push(format!(
                    "the syntax directive ({v}) is noted: berth builds with its own builder"
                ));
                syntax = Some(v);
            }
            "check" => {}
            // an unknown directive is a comment, and ends the directives
            _ => break,
        }
        seen.push(k);
        i += 1;
    }
    let mut instructions = Vec::new();
    while i < lines.len() {
        let l = lines[i];
        if l.trim().is_empty() || is_comment(l) {
            i += 1;
            continue;
        }
        let start = i;
        // the logical line: continuations joined
        let mut logical = String::new();
        let mut cur = l;
        loop {
            let trimmed = cur.trim_end();
            match trimmed.strip_suffix(escape) {
                Some(body) if !body.ends_with(escape) || escape == '`' => {
                    logical.push_str(body);
                    i += 1;
                    // the next line that is not a comment continues it
                    while i < lines.len() && is_comment(lines[i]) {
                        i += 1;
                    }
                    if i >= lines.len() {
                        break;
                    }
                    if lines[i].trim().is_empty() {
                        warnings.push(format!(
                            "empty continuation line found on line {} (deprecated)",
                            i + 1
                        ));
                    }
                    cur = lines[i];
                }
                _ => {
                    logical.push_str(cur);
                    i += 1;
                    break;
                }
            }
        }
        let mut inst = instruction(&logical, start + 1, escape)?;
        // heredocs: their bodies are the lines that follow
        if HEREDOC.contains(&inst.cmd.as_str()) {
            for (name, strip, expand) in heredoc_markers(&inst.text()) {
                let mut content = String::new();
                let mut closed = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    let l = if strip {
                        raw.trim_start_matches('\t')
                    } else {
                        raw
                    };
                    if l == name {
                        closed = true;
                        break;
                    }
                    content.push_str(l);
                    content.push('\n');
                }
                if !closed {
                    return Err(err(start + 1, format!("unterminated heredoc {name}")));
                }
                inst.heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                });
            }
        }
        inst.end_line = i.max(start + 1);
        instructions.push(inst);
    }
    Ok(Dockerfile {
        escape,
        syntax,
        instructions,
        warnings,
    })
}

/// `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` markers in an instruction's text:
/// (name, strip leading tabs, expand variables).
fn heredoc_markers(text: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(p) = rest.find("<<") {
        let mut m = &rest[p + 2..];
        let strip = m.starts_with('-');
        if strip {
            m = &m[1..];
        }
        let (quoted, m2) = match m.chars().next() {
            Some(q @ ('"' | '\'')) => (Some(q), &m[1..]),
            _ => (None, m),
        };
        let name: String = m2
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
            .collect();
        if name.is_empty() || name.starts_with('-') {
            rest = &rest[p + 2..];
            continue;
        }
        let after = &m2[name.len()..];
        if let Some(q) = quoted {
            if !after.starts_with(q) {
                rest = &rest[p + 2..];
                continue;
            }
        }
        out.push((name, strip, quoted.is_none()));
        rest = after;
    }
    out
}

/// One logical line into an instruction.
fn instruction(logical: &str, line: usize, escape: char) -> Result<Instruction, ParseError> {
    let trimmed = logical.trim();
    let (word, rest) = match trimmed.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim_start()),
        None => (trimmed, ""),
    };
    let cmd = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&cmd.as_str()) {
        return Err(err(line, format!("unknown instruction: {word}")));
    }
    let mut rest = rest.to_string();
    let mut flags = Vec::new();
    if FLAGGED.contains(&cmd.as_str()) {
        loop {
            let t = rest.trim_start();
            if !t.starts_with("--") {
                break;
            }
            let (f, r) = match t.split_once(char::is_whitespace) {
                Some((f, r)) => (f, r),
                None => (t, ""),
            };
            let f = &f[2..];
            if f.is_empty() {
                break; // `--` alone: the arguments start here
            }
            let (name, value) = match f.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (f.to_string(), None),
            };
            flags.push((name, value));
            rest = r.to_string();
        }
    }
    let rest = rest.trim().to_string();
    let mut onbuild = None;
    if cmd == "ONBUILD" {
        if rest.is_empty() {
            return Err(err(line, "ONBUILD requires at least one argument"));
        }
        let inner = instruction(&rest, line, escape)?;
        if matches!(inner.cmd.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
            return Err(err(
                line,
                format!("{} isn't allowed as an ONBUILD trigger", inner.cmd),
            ));
        }
        onbuild = Some(Box::new(inner));
    }
    let args = if JSON_FORM.contains(&cmd.as_str()) && rest.starts_with('[') {
        match serde_json::from_str::<Vec<String>>(&rest) {
            Ok(v) => Args::Exec(v),
            // not valid JSON: the shell form, as Docker falls back
            Err(_) => Args::Shell(rest.clone()),
        }
    } else {
        Args::Shell(rest.clone())
    };
    let empty = match &args {
        Args::Shell(s) => s.is_empty(),
        Args::Exec(v) => v.is_empty() && !matches!(cmd.as_str(), "CMD" | "ENTRYPOINT" | "RUN"),
    };
    if empty && !matches!(cmd.as_str(), "CMD" | "ENTRYPOINT") {
        return Err(err(line, format!("{cmd} requires at least one argument")));
    }
    let _ = escape;
    Ok(Instruction {
        cmd,
        flags,
        args,
        heredocs: Vec::new(),
        onbuild,
        line,
        end_line: line,
        original: trimmed.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dockerfile() {
        let df = parse(
            "# syntax=docker/dockerfile:1\n# escape=\\\n\n# a comment\nFROM --platform=linux/amd64 busybox AS base\nrun echo a \\\n  # inside\n  && echo b\nCMD [\"sh\", \"-c\", \"echo hi\"]\nENTRYPOINT [not json\nCOPY --chown=1:2 --from=base /a /b\nONBUILD RUN echo later\nENV A=1 \\\n    B=2\n",
        )
        .unwrap();
        assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
        let i = &df.instructions;
        assert_eq!(i.len(), 7);
        assert_eq!(i[0].cmd, "FROM");
        assert_eq!(i[0].flag("platform"), Some("linux/amd64"));
        assert_eq!(i[0].args, Args::Shell("busybox AS base".into()));
        assert_eq!(i[0].line, 5);
        assert_eq!(i[1].cmd, "RUN");
        assert_eq!(i[1].args, Args::Shell("echo a   && echo b".into()));
        assert_eq!((i[1].line, i[1].end_line), (6, 8));
        assert_eq!(
            i[2].args,
            Args::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(i[3].args, Args::Shell("[not json".into()));
        assert_eq!(i[4].flag("chown"), Some("1:2"));
        assert_eq!(i[4].flag("from"), Some("base"));
        assert_eq!(i[5].onbuild.as_ref().unwrap().cmd, "RUN");
        assert_eq!(i[6].args, Args::Shell("A=1     B=2".into()));
    }

    #[test]
    fn heredocs_and_escape_directive() {
        let df = parse("FROM x\nRUN <<EOF\necho $A\nEOF\nCOPY <<-'END' /f\n\tliteral $A\n\tEND\n")
            .unwrap();
        let r = &df.instructions[1];
        assert_eq!(r.heredocs[0].content, "echo $A\n");
        assert!(r.heredocs[0].expand);
        let c = &df.instructions[2];
        assert_eq!(c.heredocs[0].content, "literal $A\n");
        assert!(!c.heredocs[0].expand);
        let df = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.instructions[1].text(), "dir c:\\   && echo");
    }

    #[test]
    fn errors_carry_their_line() {
        let e = parse("FROM x\n\nFOO bar\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error on line 3: unknown instruction: FOO"
        );
        let e = parse("FROM x\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unterminated heredoc"));
        let e = parse("FROM x\nCOPY\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error on line 2: COPY requires at least one argument"
        );
        let e = parse("# escape=x\nFROM y\n").unwrap_err();
        assert!(e.message.contains("invalid escape token"));
        let e = parse("FROM x\nONBUILD FROM y\n").unwrap_err();
        assert!(e.message.contains("isn't allowed as an ONBUILD trigger"));
    }

    /// Whatever bytes come in, the parser answers (never panics).
    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet: Vec<char> = "FROM RUN COPY <<EOF-\"'[]\\`#=\n\t ${}:?+ONBUILD"
            .chars()
            .collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut s = String::new();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 80) as usize;
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            let _ = parse(&s);
            let _ = crate::shell::expand(&s, &|_: &str| Some("v".to_string()), '\\');
        }
    }
}
