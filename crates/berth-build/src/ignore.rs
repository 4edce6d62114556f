//! `.dockerignore`: which context paths a build leaves out, with Docker's rules. Lines
//! are patterns (comments `#`, blank lines skipped, surrounding spaces trimmed), relative
//! to the context root whether or not they start with `/`, cleaned like paths; `*`, `?`
//! and `[…]` match within one path element, `**` any number of elements; a pattern that
//! matches a directory matches everything in it; `!` re-includes; the last matching
//! pattern decides.

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    parts: Vec<String>,
    exception: bool,
}

/// The patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

/// `a/./b/../c/` → `a/c` (leading `/` and `..` above the root dropped).
fn clean(p: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x.to_string()),
        }
    }
    out
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, pat) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let parts = clean(pat);
            if parts.is_empty() {
                continue;
            }
            patterns.push(Pattern { parts, exception });
        }
        Ignore { patterns }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excluded(&self, path: &str) -> bool {
        let parts = clean(path);
        let elems: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut out = false;
        for p in &self.patterns {
            // the path itself, or a directory it is in
            let hit = (1..=elems.len()).any(|n| match_parts(&p.parts, &elems[..n]));
            if hit {
                out = !p.exception;
            }
        }
        out
    }

    /// Whether any pattern is an exception (then a walker must still descend into an
    /// excluded directory: something below it may be re-included).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

fn match_parts(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => glob(first, p) && match_parts(rest, prest),
            None => false,
        },
    }
}

/// Go's `filepath.Match` for one path element: `*`, `?`, `[…]` (ranges, `^`/`!`
/// negation), `\` escapes. A malformed class matches nothing.
pub fn glob(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|k| glob_at(&p[1..], &n[k..])),
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((true, used)) => glob_at(&p[1 + used..], &n[1..]),
                _ => false,
            }
        }
        Some('\\') => match (p.get(1), n.first()) {
            (Some(e), Some(c)) if e == c => glob_at(&p[2..], &n[1..]),
            _ => false,
        },
        Some(c) => n.first() == Some(c) && glob_at(&p[1..], &n[1..]),
    }
}

/// A `[…]` class after its `[`: (whether `c` is in it, characters used up to and
/// including `]`); None when it is never closed.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negated = matches!(p.first(), Some('^') | Some('!'));
    if negated {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((hit != negated, i + 1));
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            let mut hi = *p.get(i + 1)?;
            i += 2;
            if hi == '\\' {
                hi = *p.get(i)?;
                i += 1;
            }
            if lo <= c && c <= hi {
                hit = true;
            }
        } else if lo == c {
            hit = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*.go", "main.go"));
        assert!(!glob("*.go", "main.rs"));
        assert!(glob("a?c", "abc"));
        assert!(glob("[a-c]x", "bx"));
        assert!(!glob("[^a-c]x", "bx"));
        assert!(glob("[!a-c]x", "dx"));
        assert!(glob("\\*", "*"));
        assert!(!glob("[abc", "a"));
    }

    #[test]
    fn dockerignore_rules() {
        let ig = Ignore::parse(
            "# comment\n\n  *.log  \n/build\nnode_modules\n**/*.tmp\ndocs/**/secret\n!important.log\ntemp?\n",
        );
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("sub/a.log"), "* stays within one element");
        assert!(!ig.excluded("important.log"), "an exception re-includes");
        assert!(ig.excluded("build"));
        assert!(
            ig.excluded("build/out/x.o"),
            "a directory takes its contents"
        );
        assert!(ig.excluded("node_modules/pkg/index.js"));
        assert!(
            !ig.excluded("src/node_modules"),
            "patterns start at the root"
        );
        assert!(ig.excluded("x.tmp"));
        assert!(ig.excluded("deep/er/x.tmp"));
        assert!(ig.excluded("docs/secret"));
        assert!(ig.excluded("docs/a/b/secret"));
        assert!(ig.excluded("temp1"));
        assert!(!ig.excluded("temp12"));
        assert!(!ig.excluded("Dockerfile"));
        // the last match decides
        let ig = Ignore::parse("*\n!keep\n!keep/**\nkeep/drop\n");
        assert!(ig.excluded("other"));
        assert!(!ig.excluded("keep/a"));
        assert!(ig.excluded("keep/drop"));
        assert!(ig.has_exceptions());
        // cleaned like paths
        let ig = Ignore::parse("./a/../b/\n");
        assert!(ig.excluded("b/c"));
        assert!(!ig.excluded("a"));
    }
}
