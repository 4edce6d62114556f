//! Go `text/template`, as the docker CLI's `--format` uses it, over JSON values.
//!
//! Supported: text and `{{ }}` actions with `{{-`/`-}}` trimming and comments; fields
//! (`.A.B`), variables (`$`, `$x`, `$x := ...`, `$x = ...`), string, raw-string,
//! number, bool and nil literals, parenthesised pipelines, `|` pipelines; `if`/`else
//! if`/`else`, `range` (with `$i, $v :=` and `else`), `with`/`else`; Go's built-in
//! functions (and, or, not, len, index, print, printf, println, eq, ne, lt, le, gt, ge)
//! and docker's (json, join, split, lower, upper, title, pad, truncate).
//!
//! Values print as Go prints decoded JSON: lists as `[a b]`, objects as `map[k:v]` with
//! sorted keys, null as `<nil>`, a missing key as `<no value>`, whole numbers without a
//! fraction.

use serde_json::{Map, Value};
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template: {}", self.0)
    }
}
impl std::error::Error for TemplateError {}

fn err<T>(m: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(m.into()))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Dot,
    Field(String),
    /// a field directly after another operand (`$x.A`, `(...).A`, `.A.B`)
    Chain(String),
    Var(String),
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

fn lex_action(s: &str) -> Result<Vec<Tok>, TemplateError> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < c.len() {
        let ch = c[i];
        match ch {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
                // (pipeline).Field
                while i < c.len()
                    && c[i] == '.'
                    && c.get(i + 1)
                        .is_some_and(|x| x.is_alphanumeric() || *x == '_')
                {
                    let start = i + 1;
                    i = start;
                    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                        i += 1;
                    }
                    out.push(Tok::Chain(c[start..i].iter().collect()));
                }
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            ':' if c.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match c.get(i) {
                        None => return err("unterminated quoted string"),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let e = c.get(i + 1).copied().unwrap_or('\\');
                            v.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                            i += 2;
                        }
                        Some(x) => {
                            v.push(*x);
                            i += 1
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            '`' => {
                let start = i + 1;
                let end = c[start..]
                    .iter()
                    .position(|x| *x == '`')
                    .ok_or_else(|| TemplateError("unterminated raw quoted string".into()))?;
                out.push(Tok::Str(c[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            '.' | '$' => {
                let start = i;
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                let name: String = c[start + 1..i].iter().collect();
                if ch == '$' {
                    out.push(Tok::Var(name));
                } else if name.is_empty() {
                    out.push(Tok::Dot);
                } else {
                    out.push(Tok::Field(name));
                }
                // chained fields: .A.B or $x.A
                while i < c.len()
                    && c[i] == '.'
                    && c.get(i + 1)
                        .is_some_and(|x| x.is_alphanumeric() || *x == '_')
                {
                    let s2 = i + 1;
                    i = s2;
                    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                        i += 1;
                    }
                    out.push(Tok::Chain(c[s2..i].iter().collect()));
                }
            }
            c0 if c0.is_ascii_digit()
                || (c0 == '-' && c.get(i + 1).is_some_and(|x| x.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.' || c[i] == 'e') {
                    i += 1;
                }
                let t: String = c[start..i].iter().collect();
                out.push(Tok::Num(t.parse().map_err(|_| {
                    TemplateError(format!("bad number syntax: {t:?}"))
                })?));
            }
            c0 if c0.is_alphabetic() || c0 == '_' => {
                let start = i;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            }
            other => return err(format!("unexpected {other:?} in command")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Arg {
    /// a value source followed by field accesses
    Chain(Box<Arg>, Vec<String>),
    Dot,
    Var(String),
    Lit(Value),
    Func(String),
    Pipe(Pipeline),
}

#[derive(Debug, Clone)]
struct Command {
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
struct Pipeline {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

struct P<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl P<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn pipeline(&mut self) -> Result<Pipeline, TemplateError> {
        let mut decl = Vec::new();
        let mut assign = false;
        // `$a := ` or `$a, $b := `
        let save = self.pos;
        let mut vars = Vec::new();
        while let Some(Tok::Var(v)) = self.peek() {
            vars.push(v.clone());
            self.pos += 1;
            if self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                continue;
            }
            break;
        }
        match self.peek() {
            Some(Tok::Declare) if !vars.is_empty() => {
                self.pos += 1;
                decl = vars;
            }
            Some(Tok::Assign) if !vars.is_empty() => {
                self.pos += 1;
                decl = vars;
                assign = true;
            }
            _ => self.pos = save,
        }
        let mut cmds = vec![self.command()?];
        while self.peek() == Some(&Tok::Pipe) {
            self.pos += 1;
            cmds.push(self.command()?);
        }
        Ok(Pipeline { decl, assign, cmds })
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let mut args = Vec::new();
        while let Some(t) = self.peek() {
            if matches!(t, Tok::Pipe | Tok::RParen) {
                break;
            }
            args.push(self.operand()?);
        }
        if args.is_empty() {
            return err("missing value for command");
        }
        Ok(Command { args })
    }

    fn operand(&mut self) -> Result<Arg, TemplateError> {
        let t = self
            .peek()
            .cloned()
            .ok_or_else(|| TemplateError("unexpected end of action".into()))?;
        self.pos += 1;
        let base = match t {
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => {
                let mut fields = vec![f];
                self.fields(&mut fields);
                return Ok(Arg::Chain(Box::new(Arg::Dot), fields));
            }
            Tok::Var(v) => Arg::Var(v),
            Tok::Str(s) => Arg::Lit(Value::String(s)),
            Tok::Num(n) => Arg::Lit(
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
            ),
            Tok::Ident(i) => match i.as_str() {
                "true" => Arg::Lit(Value::Bool(true)),
                "false" => Arg::Lit(Value::Bool(false)),
                "nil" => Arg::Lit(Value::Null),
                _ => Arg::Func(i),
            },
            Tok::LParen => {
                let p = self.pipeline()?;
                if self.peek() != Some(&Tok::RParen) {
                    return err("unclosed left paren");
                }
                self.pos += 1;
                Arg::Pipe(p)
            }
            other => return err(format!("unexpected {other:?} in operand")),
        };
        let mut fields = Vec::new();
        self.fields(&mut fields);
        Ok(if fields.is_empty() {
            base
        } else {
            Arg::Chain(Box::new(base), fields)
        })
    }

    fn fields(&mut self, out: &mut Vec<String>) {
        while let Some(Tok::Chain(f)) = self.peek() {
            out.push(f.clone());
            self.pos += 1;
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

enum Item {
    Text(String),
    Action(String),
}

fn split_items(src: &str) -> Result<Vec<Item>, TemplateError> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_left =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            text = text.trim_end();
        }
        items.push(Item::Text(text.to_string()));
        let end = after
            .find("}}")
            .ok_or_else(|| TemplateError("unclosed action".into()))?;
        let mut inner = &after[..end];
        if trim_left {
            inner = &inner[1..];
        }
        trim_next = inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-");
        if trim_next {
            inner = &inner[..inner.len() - 1];
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            items.push(Item::Action(inner.to_string()));
        }
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    items.push(Item::Text(text.to_string()));
    Ok(items)
}

enum Stop {
    End,
    Else(Option<String>),
    Eof,
}

fn parse_list(
    items: &mut std::iter::Peekable<std::vec::IntoIter<Item>>,
) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(item) = items.next() {
        match item {
            Item::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t));
                }
            }
            Item::Action(a) => {
                let (kw, rest) = match a.split_once(char::is_whitespace) {
                    Some((k, r)) => (k, r.trim()),
                    None => (a.as_str(), ""),
                };
                match kw {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        return Ok((
                            nodes,
                            Stop::Else(if rest.is_empty() {
                                None
                            } else {
                                Some(rest.to_string())
                            }),
                        ))
                    }
                    "if" | "range" | "with" => nodes.push(parse_block(kw, rest, items)?),
                    "define" | "template" | "block" | "break" | "continue" => {
                        return err(format!("{kw} is not supported in --format templates"))
                    }
                    _ => nodes.push(Node::Action(parse_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let toks = lex_action(src)?;
    if toks.is_empty() {
        return err("missing value for command");
    }
    let mut p = P {
        toks: &toks,
        pos: 0,
    };
    let pl = p.pipeline()?;
    if p.pos != toks.len() {
        return err(format!("unexpected {:?} in operand", toks[p.pos]));
    }
    Ok(pl)
}

fn parse_block(
    kw: &str,
    cond: &str,
    items: &mut std::iter::Peekable<std::vec::IntoIter<Item>>,
) -> Result<Node, TemplateError> {
    let pipe = parse_pipeline(cond)?;
    let (body, stop) = parse_list(items)?;
    let alt = match stop {
        Stop::End => Vec::new(),
        Stop::Eof => return err(format!("unexpected EOF in {kw}")),
        Stop::Else(None) => {
            let (alt, stop) = parse_list(items)?;
            if !matches!(stop, Stop::End) {
                return err(format!("expected end after else in {kw}"));
            }
            alt
        }
        Stop::Else(Some(chain)) => {
            // `else if ...` / `else with ...`: a nested block sharing our end
            let (k2, r2) = chain
                .split_once(char::is_whitespace)
                .unwrap_or((chain.as_str(), ""));
            if k2 != "if" && k2 != "with" {
                return err(format!("unexpected else {chain}"));
            }
            vec![parse_block(k2, r2.trim(), items)?]
        }
    };
    Ok(match kw {
        "if" => Node::If(pipe, body, alt),
        "range" => Node::Range(pipe, body, alt),
        _ => Node::With(pipe, body, alt),
    })
}

impl Template {
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let mut items = split_items(src)?.into_iter().peekable();
        let (nodes, stop) = parse_list(&mut items)?;
        match stop {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End => err("unexpected {{end}}"),
            Stop::Else(_) => err("unexpected {{else}}"),
        }
    }

    pub fn render(&self, data: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut vars = vec![("$".to_string(), data.clone())];
        exec_nodes(&self.nodes, data, &mut vars, &mut out)?;
        Ok(out)
    }
}

/// Go's truth: false, 0, nil, and empty strings, lists and maps are false.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Sentinel for a missing map key, printed as `<no value>`.
const NO_VALUE: &str = "\u{0}<no value>";

fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        format!("{f}")
    }
}

/// Go's `%v` of a decoded JSON value.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) if s == NO_VALUE => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_print(&o[*k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn field(v: &Value, name: &str) -> Result<Value, TemplateError> {
    match v {
        Value::Object(o) => Ok(o
            .get(name)
            .cloned()
            .unwrap_or_else(|| Value::String(NO_VALUE.into()))),
        Value::Null => err(format!("nil pointer evaluating interface {{}}.{name}")),
        Value::String(s) if s == NO_VALUE => {
            err(format!("nil pointer evaluating interface {{}}.{name}"))
        }
        _ => err(format!(
            "can't evaluate field {name} in type {}",
            type_name(v)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn exec_nodes(
    nodes: &[Node],
    dot: &Value,
    vars: &mut Vec<(String, Value)>,
    out: &mut String,
) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, vars)?;
                if p.decl.is_empty() {
                    out.push_str(&go_print(&v));
                }
            }
            Node::If(p, body, alt) => {
                let mark = vars.len();
                let v = eval_pipeline(p, dot, vars)?;
                if truthy(&v) {
                    exec_nodes(body, dot, vars, out)?;
                } else {
                    exec_nodes(alt, dot, vars, out)?;
                }
                vars.truncate(mark.max(1));
            }
            Node::With(p, body, alt) => {
                let mark = vars.len();
                let v = eval_pipeline(p, dot, vars)?;
                if truthy(&v) {
                    exec_nodes(body, &v, vars, out)?;
                } else {
                    exec_nodes(alt, dot, vars, out)?;
                }
                vars.truncate(mark.max(1));
            }
            Node::Range(p, body, alt) => {
                let mark = vars.len();
                let mut pl = p.clone();
                let names = std::mem::take(&mut pl.decl);
                let v = eval_pipeline(&pl, dot, vars)?;
                let items: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(o) => {
                        let mut keys: Vec<&String> = o.keys().collect();
                        keys.sort();
                        keys.into_iter()
                            .map(|k| (Value::from(k.clone()), o[k].clone()))
                            .collect()
                    }
                    Value::Null => Vec::new(),
                    Value::String(s) if s == NO_VALUE => Vec::new(),
                    other => return err(format!("range can't iterate over {}", go_print(other))),
                };
                if items.is_empty() {
                    exec_nodes(alt, dot, vars, out)?;
                }
                for (k, x) in items {
                    let inner = vars.len();
                    match names.as_slice() {
                        [] => {}
                        [one] => vars.push((format!("${one}"), x.clone())),
                        [a, b, ..] => {
                            vars.push((format!("${a}"), k));
                            vars.push((format!("${b}"), x.clone()));
                        }
                    }
                    exec_nodes(body, &x, vars, out)?;
                    vars.truncate(inner);
                }
                vars.truncate(mark.max(1));
            }
        }
    }
    Ok(())
}

fn lookup_var(vars: &[(String, Value)], name: &str) -> Result<Value, TemplateError> {
    let key = if name.is_empty() {
        "$".to_string()
    } else {
        format!("${name}")
    };
    vars.iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| TemplateError(format!("undefined variable: {key}")))
}

fn eval_pipeline(
    p: &Pipeline,
    dot: &Value,
    vars: &mut Vec<(String, Value)>,
) -> Result<Value, TemplateError> {
    let mut last: Option<Value> = None;
    for c in &p.cmds {
        last = Some(eval_command(c, dot, vars, last)?);
    }
    let v = last.unwrap_or(Value::Null);
    if let Some(name) = p.decl.first() {
        let key = format!("${name}");
        if p.assign {
            if let Some(slot) = vars.iter_mut().rev().find(|(k, _)| *k == key) {
                slot.1 = v.clone();
            } else {
                return err(format!("undefined variable: {key}"));
            }
        } else {
            vars.push((key, v.clone()));
        }
    }
    Ok(v)
}

fn eval_arg(a: &Arg, dot: &Value, vars: &mut Vec<(String, Value)>) -> Result<Value, TemplateError> {
    match a {
        Arg::Dot => Ok(dot.clone()),
        Arg::Var(v) => lookup_var(vars, v),
        Arg::Lit(v) => Ok(v.clone()),
        Arg::Pipe(p) => eval_pipeline(p, dot, vars),
        Arg::Func(f) => call(f, &[]),
        Arg::Chain(base, fields) => {
            let mut v = eval_arg(base, dot, vars)?;
            for f in fields {
                v = field(&v, f)?;
            }
            Ok(v)
        }
    }
}

fn eval_command(
    c: &Command,
    dot: &Value,
    vars: &mut Vec<(String, Value)>,
    piped: Option<Value>,
) -> Result<Value, TemplateError> {
    if let Arg::Func(name) = &c.args[0] {
        let mut args = Vec::new();
        for a in &c.args[1..] {
            args.push(eval_arg(a, dot, vars)?);
        }
        if let Some(p) = piped {
            args.push(p);
        }
        return call(name, &args);
    }
    if c.args.len() > 1 || piped.is_some() {
        return err("can't give argument to non-function");
    }
    eval_arg(&c.args[0], dot, vars)
}

fn as_str(v: &Value) -> String {
    match v {
        Value::String(s) if s == NO_VALUE => String::new(),
        Value::String(s) => s.clone(),
        other => go_print(other),
    }
}

fn as_int(v: &Value) -> Result<i64, TemplateError> {
    v.as_f64()
        .map(|f| f as i64)
        .ok_or_else(|| TemplateError(format!("expected integer; found {}", go_print(v))))
}

fn cmp(a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => Ok(x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal)),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => err("incompatible types for comparison"),
    }
}

fn need(name: &str, args: &[Value], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

/// Go's `printf` for the verbs people use: %s %v %d %q %f with width and `-`.
fn printf(args: &[Value]) -> Result<String, TemplateError> {
    let fmt = args.first().map(as_str).unwrap_or_default();
    let mut rest = args.iter().skip(1);
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut left = false;
        let mut width = String::new();
        while let Some(&n) = chars.peek() {
            if n == '-' {
                left = true;
                chars.next();
            } else if n.is_ascii_digit() || n == '.' {
                width.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let verb = chars.next().unwrap_or('%');
        if verb == '%' {
            out.push('%');
            continue;
        }
        let arg = rest.next().cloned().unwrap_or(Value::Null);
        let s = match verb {
            'd' => as_int(&arg)
                .map(|i| i.to_string())
                .unwrap_or_else(|_| go_print(&arg)),
            'q' => serde_json::to_string(&as_str(&arg)).unwrap_or_default(),
            'f' => {
                let prec: usize = width
                    .split_once('.')
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(6);
                format!("{:.*}", prec, arg.as_f64().unwrap_or(0.0))
            }
            _ => as_str(&arg),
        };
        let w: usize = width
            .split('.')
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        if left {
            let _ = write!(out, "{s:<w$}");
        } else {
            let _ = write!(out, "{s:>w$}");
        }
    }
    Ok(out)
}

fn to_json(v: &Value) -> String {
    let s = match v {
        Value::String(s) if s == NO_VALUE => return "null".into(),
        other => serde_json::to_string(other).unwrap_or_default(),
    };
    // Go's encoder escapes HTML characters
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

fn call(name: &str, args: &[Value]) -> Result<Value, TemplateError> {
    let s = |v: String| Ok(Value::String(v));
    match name {
        "json" => {
            need(name, args, 1)?;
            s(to_json(&args[0]))
        }
        "lower" => s(as_str(args.first().unwrap_or(&Value::Null)).to_lowercase()),
        "upper" => s(as_str(args.first().unwrap_or(&Value::Null)).to_uppercase()),
        "title" => {
            let t = as_str(args.first().unwrap_or(&Value::Null));
            let mut out = String::new();
            let mut start = true;
            for c in t.chars() {
                if start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            s(out)
        }
        "split" => {
            need(name, args, 2)?;
            Ok(Value::from(
                as_str(&args[0])
                    .split(as_str(&args[1]).as_str())
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            ))
        }
        "join" => {
            need(name, args, 2)?;
            let list: Vec<String> = args[0]
                .as_array()
                .map(|a| a.iter().map(as_str).collect())
                .unwrap_or_default();
            s(list.join(&as_str(&args[1])))
        }
        "pad" => {
            need(name, args, 3)?;
            let l = as_int(&args[1])?.max(0) as usize;
            let r = as_int(&args[2])?.max(0) as usize;
            s(format!(
                "{}{}{}",
                " ".repeat(l),
                as_str(&args[0]),
                " ".repeat(r)
            ))
        }
        "truncate" => {
            need(name, args, 2)?;
            let n = as_int(&args[1])?.max(0) as usize;
            s(as_str(&args[0]).chars().take(n).collect())
        }
        "println" => s(format!(
            "{}\n",
            args.iter().map(go_print).collect::<Vec<_>>().join(" ")
        )),
        "print" => s(args.iter().map(go_print).collect::<Vec<_>>().join("")),
        "printf" => s(printf(args)?),
        "len" => {
            need(name, args, 1)?;
            match &args[0] {
                Value::String(x) => Ok(Value::from(x.len())),
                Value::Array(a) => Ok(Value::from(a.len())),
                Value::Object(o) => Ok(Value::from(o.len())),
                Value::Null => Ok(Value::from(0)),
                other => err(format!("len of type {}", type_name(other))),
            }
        }
        "index" => {
            let mut v = args.first().cloned().unwrap_or(Value::Null);
            for k in args.iter().skip(1) {
                v = match (&v, k) {
                    (Value::Array(a), _) => a
                        .get(as_int(k)? as usize)
                        .cloned()
                        .ok_or_else(|| TemplateError("index out of range".into()))?,
                    (Value::Object(o), _) => o.get(&as_str(k)).cloned().unwrap_or(Value::Null),
                    (Value::Null, _) => Value::Null,
                    _ => return err(format!("can't index item of type {}", type_name(&v))),
                };
            }
            Ok(v)
        }
        "not" => {
            need(name, args, 1)?;
            Ok(Value::Bool(!truthy(&args[0])))
        }
        "and" => Ok(args
            .iter()
            .find(|a| !truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null)),
        "or" => Ok(args
            .iter()
            .find(|a| truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Null)),
        "eq" => {
            if args.len() < 2 {
                return err("missing argument for comparison");
            }
            Ok(Value::Bool(
                args[1..].iter().any(|b| eq_values(&args[0], b)),
            ))
        }
        "ne" => {
            need(name, args, 2)?;
            Ok(Value::Bool(!eq_values(&args[0], &args[1])))
        }
        "lt" | "le" | "gt" | "ge" => {
            need(name, args, 2)?;
            let o = cmp(&args[0], &args[1])?;
            use std::cmp::Ordering::*;
            Ok(Value::Bool(match name {
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            }))
        }
        other => err(format!("function \"{other}\" not defined")),
    }
}

fn eq_values(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A JSON object from pairs, for table rows.
pub fn row(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        m.insert(k.to_string(), v);
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: Value) -> String {
        Template::parse(t).unwrap().render(&v).unwrap()
    }

    #[test]
    fn prints_like_go() {
        let v = json!({"Id": "sha256:1", "Cmd": ["sh", "-c"], "L": {"b": 2, "a": "x"}, "N": null, "Size": 1234567});
        assert_eq!(r("{{.Id}}", v.clone()), "sha256:1");
        assert_eq!(r("{{.Cmd}}", v.clone()), "[sh -c]");
        assert_eq!(r("{{.L}}", v.clone()), "map[a:x b:2]");
        assert_eq!(r("{{.N}}", v.clone()), "<nil>");
        assert_eq!(r("{{.Missing}}", v.clone()), "<no value>");
        assert_eq!(r("{{.Size}}", v.clone()), "1234567");
        assert_eq!(r("{{json .Cmd}}", v.clone()), "[\"sh\",\"-c\"]");
        assert_eq!(r("{{join .Cmd \",\"}}", v.clone()), "sh,-c");
        assert_eq!(
            r("{{.Id | printf \"%-6s|\"}}", json!({"Id": "ab"})),
            "ab    |"
        );
    }

    #[test]
    fn control_flow() {
        let v = json!({"T": ["a", "b"], "E": [], "M": {"k": "v"}, "B": true});
        assert_eq!(r("{{range .T}}<{{.}}>{{end}}", v.clone()), "<a><b>");
        assert_eq!(
            r("{{range $i, $e := .T}}{{$i}}={{$e}} {{end}}", v.clone()),
            "0=a 1=b "
        );
        assert_eq!(r("{{range .E}}x{{else}}empty{{end}}", v.clone()), "empty");
        assert_eq!(
            r("{{range $k, $v := .M}}{{$k}}:{{$v}}{{end}}", v.clone()),
            "k:v"
        );
        assert_eq!(r("{{if .B}}yes{{else}}no{{end}}", v.clone()), "yes");
        assert_eq!(
            r(
                "{{if not .B}}yes{{else if .T}}t{{else}}no{{end}}",
                v.clone()
            ),
            "t"
        );
        assert_eq!(r("{{with .M}}{{.k}}{{end}}", v.clone()), "v");
        assert_eq!(r("{{$x := .M.k}}{{$x}}{{$.B}}", v.clone()), "vtrue");
        assert_eq!(r("a  {{- .M.k -}}  b", v.clone()), "avb");
        assert_eq!(r("{{/* c */}}x", v.clone()), "x");
        assert_eq!(r("{{if eq .M.k \"z\" \"v\"}}1{{end}}", v.clone()), "1");
        assert_eq!(r("{{(index .T 1)}}{{len .T}}", v.clone()), "b2");
        assert_eq!(r("{{upper (index .M \"k\")}}", v), "V");
    }

    #[test]
    fn errors() {
        assert!(Template::parse("{{.A").is_err());
        assert!(Template::parse("{{if .A}}x").is_err());
        assert!(Template::parse("{{end}}").is_err());
        assert!(Template::parse("{{nope .A}}")
            .unwrap()
            .render(&json!({}))
            .is_err());
    }
}
