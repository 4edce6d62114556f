//! Docker's processing of instruction arguments: single quotes keep text as it is,
//! double quotes keep spaces but expand variables, the escape character (`\` or the
//! `escape` directive's) takes the next character literally, and `$NAME`, `${NAME}`,
//! `${NAME:-word}`, `${NAME-word}`, `${NAME:+word}`, `${NAME+word}`, `${NAME:?message}`
//! expand from the build's variables (an unset variable is empty).

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShellError {
    #[error("unterminated quote")]
    Quote,
    #[error("missing '}}' in variable substitution")]
    Brace,
    #[error("invalid variable name in substitution: {0:?}")]
    Name(String),
    #[error("{0}")]
    Required(String),
    #[error("unsupported modifier ({0}) in substitution")]
    Modifier(String),
}

/// What variables are set: their value, or None.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// A word's processed text (quotes removed, escapes applied, variables expanded).
pub fn expand(word: &str, vars: &dyn Vars, escape: char) -> Result<String, ShellError> {
    Ok(words(word, vars, escape, false)?.concat())
}

/// Splits `text` into words at unquoted whitespace, each processed as [`expand`] does
/// (an expansion does not split further, as in Docker).
pub fn split(text: &str, vars: &dyn Vars, escape: char) -> Result<Vec<String>, ShellError> {
    words(text, vars, escape, true)
}

/// Splits without expanding: quotes and escapes are kept (for `key=value` lists whose
/// values are processed one by one later).
pub fn split_raw(text: &str, escape: char) -> Result<Vec<String>, ShellError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let mut quote: Option<char> = None;
    let mut started = false;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c.is_whitespace() {
                    if started {
                        out.push(std::mem::take(&mut cur));
                        started = false;
                    }
                    continue;
                }
                started = true;
                cur.push(c);
                if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        return Err(ShellError::Quote);
    }
    if started {
        out.push(cur);
    }
    Ok(out)
}

fn words(
    text: &str,
    vars: &dyn Vars,
    escape: char,
    split_ws: bool,
) -> Result<Vec<String>, ShellError> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    while i < chars.len() {
        let c = chars[i];
        if split_ws && c.is_whitespace() {
            if started {
                out.push(std::mem::take(&mut cur));
                started = false;
            }
            i += 1;
            continue;
        }
        started = true;
        if c == escape {
            // the next character as it is (a trailing escape stays)
            match chars.get(i + 1) {
                Some(n) => cur.push(*n),
                None => cur.push(c),
            }
            i += 2;
        } else if c == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|x| *x == '\'')
                .ok_or(ShellError::Quote)?;
            cur.extend(&chars[i + 1..i + 1 + end]);
            i += end + 2;
        } else if c == '"' {
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(ShellError::Quote);
                };
                if d == '"' {
                    i += 1;
                    break;
                }
                if d == escape {
                    // inside double quotes the escape only takes ", $, itself
                    match chars.get(i + 1) {
                        Some(&n) if n == '"' || n == '$' || n == escape => {
                            cur.push(n);
                            i += 2;
                        }
                        _ => {
                            cur.push(d);
                            i += 1;
                        }
                    }
                } else if d == '$' {
                    i = variable(&chars, i, vars, escape, &mut cur)?;
                } else {
                    cur.push(d);
                    i += 1;
                }
            }
        } else if c == '$' {
            i = variable(&chars, i, vars, escape, &mut cur)?;
        } else {
            cur.push(c);
            i += 1;
        }
    }
    if started || (!split_ws && out.is_empty()) {
        out.push(cur);
    }
    Ok(out)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands the variable at `chars[i]` (a `$`) into `out`; returns the index after it.
fn variable(
    chars: &[char],
    i: usize,
    vars: &dyn Vars,
    escape: char,
    out: &mut String,
) -> Result<usize, ShellError> {
    let mut j = i + 1;
    match chars.get(j) {
        Some('{') => {
            j += 1;
            let start = j;
            while chars.get(j).is_some_and(|c| is_name_char(*c)) {
                j += 1;
            }
            let name: String = chars[start..j].iter().collect();
            if name.is_empty() {
                return Err(ShellError::Name(
                    chars[start..].iter().take_while(|c| **c != '}').collect(),
                ));
            }
            let value = vars.get(&name);
            match chars.get(j) {
                Some('}') => {
                    out.push_str(&value.unwrap_or_default());
                    Ok(j + 1)
                }
                Some(&m) if m == ':' || m == '-' || m == '+' || m == '?' => {
                    let colon = m == ':';
                    let op_at = if colon { j + 1 } else { j };
                    let op = *chars.get(op_at).ok_or(ShellError::Brace)?;
                    if !matches!(op, '-' | '+' | '?') {
                        return Err(ShellError::Modifier(format!(":{op}")));
                    }
                    // the word runs to the matching brace (nested ${…} allowed)
                    let mut k = op_at + 1;
                    let mut depth = 0;
                    let word_start = k;
                    loop {
                        let Some(&c) = chars.get(k) else {
                            return Err(ShellError::Brace);
                        };
                        if c == escape {
                            k += 2;
                            continue;
                        }
                        if c == '$' && chars.get(k + 1) == Some(&'{') {
                            depth += 1;
                            k += 2;
                            continue;
                        }
                        if c == '}' {
                            if depth == 0 {
                                break;
                            }
                            depth -= 1;
                        }
                        k += 1;
                    }
                    let word: String = chars[word_start..k].iter().collect();
                    let set = match &value {
                        Some(v) => !(colon && v.is_empty()),
                        None => false,
                    };
                    match op {
                        '-' => {
                            if set {
                                out.push_str(&value.unwrap_or_default());
                            } else {
                                out.push_str(&expand(&word, vars, escape)?);
                            }
                        }
                        '+' => {
                            if set {
                                out.push_str(&expand(&word, vars, escape)?);
                            }
                        }
                        _ => {
                            if set {
                                out.push_str(&value.unwrap_or_default());
                            } else {
                                let msg = expand(&word, vars, escape)?;
                                return Err(ShellError::Required(if msg.is_empty() {
                                    format!("{name}: is not allowed to be unset")
                                } else {
                                    format!("{name}: {msg}")
                                }));
                            }
                        }
                    }
                    Ok(k + 1)
                }
                _ => Err(ShellError::Brace),
            }
        }
        Some(c) if is_name_char(*c) && !c.is_ascii_digit() => {
            let start = j;
            while chars.get(j).is_some_and(|c| is_name_char(*c)) {
                j += 1;
            }
            let name: String = chars[start..j].iter().collect();
            out.push_str(&vars.get(&name).unwrap_or_default());
            Ok(j)
        }
        _ => {
            // a lone `$` stays
            out.push('$');
            Ok(j)
        }
    }
}

/// `KEY=VALUE` pairs of ENV, LABEL and ARG (values expanded); the legacy `KEY VALUE`
/// form when the first word has no `=` (ENV and LABEL only, `legacy`).
pub fn pairs(
    text: &str,
    vars: &dyn Vars,
    escape: char,
    legacy: bool,
) -> Result<Vec<(String, Option<String>)>, String> {
    let raw = split_raw(text, escape).map_err(|e| e.to_string())?;
    let Some(first) = raw.first() else {
        return Err("requires at least one argument".into());
    };
    if !first.contains('=') && legacy {
        let (k, v) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| "must have two arguments".to_string())?;
        let v = expand(v.trim(), vars, escape).map_err(|e| e.to_string())?;
        return Ok(vec![(k.to_string(), Some(v))]);
    }
    let mut out = Vec::new();
    for w in raw {
        match w.split_once('=') {
            Some((k, v)) => {
                let k = expand(k, vars, escape).map_err(|e| e.to_string())?;
                if k.is_empty() {
                    return Err(format!("empty key in {w:?}"));
                }
                out.push((k, Some(expand(v, vars, escape).map_err(|e| e.to_string())?)));
            }
            None if !legacy => {
                out.push((expand(&w, vars, escape).map_err(|e| e.to_string())?, None));
            }
            None => {
                return Err(format!(
                    "syntax error - can't find = in {w:?}. Must be of the form: name=value"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/root".into()),
            "EMPTY" => Some(String::new()),
            "N" => Some("two words".into()),
            _ => None,
        }
    }

    fn x(s: &str) -> String {
        expand(s, &env, '\\').unwrap()
    }

    #[test]
    fn expansion() {
        assert_eq!(x("$HOME/x"), "/root/x");
        assert_eq!(x("${HOME}x"), "/rootx");
        assert_eq!(x("$UNSET-a"), "-a");
        assert_eq!(x("${UNSET:-def}"), "def");
        assert_eq!(x("${EMPTY:-def}"), "def");
        assert_eq!(x("${EMPTY-def}"), "");
        assert_eq!(x("${HOME:+alt}"), "alt");
        assert_eq!(x("${UNSET:+alt}"), "");
        assert_eq!(x("${UNSET:-${HOME}}"), "/root");
        assert_eq!(x("'$HOME'"), "$HOME");
        assert_eq!(x("\"$HOME x\""), "/root x");
        assert_eq!(x("\\$HOME"), "$HOME");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("cost: $"), "cost: $");
        assert_eq!(x("$1"), "$1");
        assert_eq!(
            expand("${UNSET:?say why}", &env, '\\'),
            Err(ShellError::Required("UNSET: say why".into()))
        );
        assert_eq!(expand("${HOME", &env, '\\'), Err(ShellError::Brace));
        assert_eq!(expand("'open", &env, '\\'), Err(ShellError::Quote));
        assert_eq!(
            expand("${HOME:=x}", &env, '\\'),
            Err(ShellError::Modifier(":=".into()))
        );
        // the backtick escape
        assert_eq!(expand("a`$HOME", &env, '`').unwrap(), "a$HOME");
    }

    #[test]
    fn splitting() {
        assert_eq!(
            split("a \"b c\" $N 'd e'", &env, '\\').unwrap(),
            vec!["a", "b c", "two words", "d e"]
        );
        assert_eq!(split("  ", &env, '\\').unwrap(), Vec::<String>::new());
        assert_eq!(
            split_raw(r#"a="x y" b=z\ w"#, '\\').unwrap(),
            vec![r#"a="x y""#, r"b=z\ w"]
        );
    }

    #[test]
    fn key_values() {
        assert_eq!(
            pairs(r#"A=1 B="two words" C=$HOME"#, &env, '\\', true).unwrap(),
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), Some("two words".into())),
                ("C".into(), Some("/root".into())),
            ]
        );
        assert_eq!(
            pairs("KEY value with spaces", &env, '\\', true).unwrap(),
            vec![("KEY".into(), Some("value with spaces".into()))]
        );
        assert_eq!(
            pairs("V1 V2=x", &env, '\\', false).unwrap(),
            vec![("V1".into(), None), ("V2".into(), Some("x".into()))]
        );
        assert!(pairs("A=1 B", &env, '\\', true).is_err());
        assert!(pairs("", &env, '\\', true).is_err());
    }
}
