//! The syntax errors of Go's `encoding/json` decoder, as Docker clients see them in
//! dockerd's answers (`invalid character 'i' looking for beginning of object key
//! string`). [`scan`] reads the first JSON value of a body byte by byte as that decoder
//! does and says where it ends, or what Go would have said about it.

/// What the first value of a body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// nothing but white space (Go's `io.EOF`)
    Empty,
    /// a value, ending before this offset (what follows is not read)
    Value(usize),
    /// a syntax error, in Go's words
    Error(String),
}

/// Go's limit on nested arrays and objects.
const MAX_DEPTH: usize = 10_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    ObjectKey,
    ObjectValue,
    Array,
}

#[derive(Clone, Copy)]
enum St {
    BeginValue,
    BeginValueOrEmpty,
    BeginStringOrEmpty,
    BeginString,
    EndValue,
    InString,
    InStringEsc,
    /// hex digits of a `\u` escape still to come
    InStringU(u8),
    Neg,
    Zero,
    One,
    Dot,
    Dot0,
    E,
    ESign,
    E0,
    /// a literal: its text, the next byte expected
    Lit(&'static str, usize),
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Go's `quoteChar`: the byte as a rune in single quotes, escaped as `strconv.Quote`
/// escapes it.
fn quote_char(c: u8) -> String {
    match c {
        b'\'' => r"'\''".to_string(),
        b'"' => "'\"'".to_string(),
        0x07 => r"'\a'".to_string(),
        0x08 => r"'\b'".to_string(),
        0x0c => r"'\f'".to_string(),
        b'\n' => r"'\n'".to_string(),
        b'\r' => r"'\r'".to_string(),
        b'\t' => r"'\t'".to_string(),
        0x0b => r"'\v'".to_string(),
        b'\\' => r"'\\'".to_string(),
        0..=0x1f | 0x7f => format!(r"'\x{c:02x}'"),
        0x80..=0xa0 | 0xad => format!(r"'\u{:04x}'", c),
        _ => format!("'{}'", char::from(c)),
    }
}

fn invalid(c: u8, context: &str) -> Scan {
    Scan::Error(format!("invalid character {} {context}", quote_char(c)))
}

/// Scans the first JSON value of `input` as Go's `json.Decoder` does.
pub fn scan(input: &[u8]) -> Scan {
    let mut stack: Vec<Ctx> = Vec::new();
    let mut st = St::BeginValue;
    for (i, &c) in input.iter().enumerate() {
        // each arm either settles on the next state or ends the scan
        loop {
            match st {
                St::BeginValueOrEmpty if is_space(c) => {}
                St::BeginValueOrEmpty if c == b']' => {
                    st = St::EndValue;
                    continue;
                }
                St::BeginValueOrEmpty => {
                    st = St::BeginValue;
                    continue;
                }
                St::BeginValue if is_space(c) => {}
                St::BeginValue => {
                    st = match c {
                        b'{' | b'[' => {
                            if stack.len() >= MAX_DEPTH {
                                return invalid(c, "exceeded max depth");
                            }
                            if c == b'{' {
                                stack.push(Ctx::ObjectKey);
                                St::BeginStringOrEmpty
                            } else {
                                stack.push(Ctx::Array);
                                St::BeginValueOrEmpty
                            }
                        }
                        b'"' => St::InString,
                        b'-' => St::Neg,
                        b'0' => St::Zero,
                        b'1'..=b'9' => St::One,
                        b't' => St::Lit("true", 1),
                        b'f' => St::Lit("false", 1),
                        b'n' => St::Lit("null", 1),
                        _ => return invalid(c, "looking for beginning of value"),
                    };
                }
                St::BeginStringOrEmpty if is_space(c) => {}
                St::BeginStringOrEmpty if c == b'}' => {
                    if let Some(top) = stack.last_mut() {
                        *top = Ctx::ObjectValue;
                    }
                    st = St::EndValue;
                    continue;
                }
                St::BeginStringOrEmpty | St::BeginString => {
                    if is_space(c) {
                    } else if c == b'"' {
                        st = St::InString;
                    } else {
                        return invalid(c, "looking for beginning of object key string");
                    }
                }
                St::EndValue => {
                    let Some(top) = stack.last().copied() else {
                        // the top-level value has ended: the decoder reads no further
                        return Scan::Value(i);
                    };
                    if is_space(c) {
                        break;
                    }
                    match (top, c) {
                        (Ctx::ObjectKey, b':') => {
                            *stack.last_mut().expect("top") = Ctx::ObjectValue;
                            st = St::BeginValue;
                        }
                        (Ctx::ObjectKey, _) => return invalid(c, "after object key"),
                        (Ctx::ObjectValue, b',') => {
                            *stack.last_mut().expect("top") = Ctx::ObjectKey;
                            st = St::BeginString;
                        }
                        (Ctx::ObjectValue, b'}') | (Ctx::Array, b']') => {
                            stack.pop();
                            if stack.is_empty() {
                                return Scan::Value(i + 1);
                            }
                        }
                        (Ctx::ObjectValue, _) => return invalid(c, "after object key:value pair"),
                        (Ctx::Array, b',') => st = St::BeginValue,
                        (Ctx::Array, _) => return invalid(c, "after array element"),
                    }
                }
                St::InString => match c {
                    b'"' => st = St::EndValue,
                    b'\\' => st = St::InStringEsc,
                    0..=0x1f => return invalid(c, "in string literal"),
                    _ => {}
                },
                St::InStringEsc => match c {
                    b'b' | b'f' | b'n' | b'r' | b't' | b'\\' | b'/' | b'"' => st = St::InString,
                    b'u' => st = St::InStringU(4),
                    _ => return invalid(c, "in string escape code"),
                },
                St::InStringU(n) => {
                    if !c.is_ascii_hexdigit() {
                        return invalid(c, r"in \u hexadecimal character escape");
                    }
                    st = if n == 1 {
                        St::InString
                    } else {
                        St::InStringU(n - 1)
                    };
                }
                St::Neg => match c {
                    b'0' => st = St::Zero,
                    b'1'..=b'9' => st = St::One,
                    _ => return invalid(c, "in numeric literal"),
                },
                St::One if c.is_ascii_digit() => {}
                St::One | St::Zero => match c {
                    b'.' => st = St::Dot,
                    b'e' | b'E' => st = St::E,
                    _ => {
                        st = St::EndValue;
                        continue;
                    }
                },
                St::Dot => {
                    if !c.is_ascii_digit() {
                        return invalid(c, "after decimal point in numeric literal");
                    }
                    st = St::Dot0;
                }
                St::Dot0 if c.is_ascii_digit() => {}
                St::Dot0 => {
                    if c == b'e' || c == b'E' {
                        st = St::E;
                    } else {
                        st = St::EndValue;
                        continue;
                    }
                }
                St::E if c == b'+' || c == b'-' => st = St::ESign,
                St::E | St::ESign => {
                    if !c.is_ascii_digit() {
                        return invalid(c, "in exponent of numeric literal");
                    }
                    st = St::E0;
                }
                St::E0 if c.is_ascii_digit() => {}
                St::E0 => {
                    st = St::EndValue;
                    continue;
                }
                St::Lit(word, at) => {
                    let want = word.as_bytes()[at];
                    if c != want {
                        return invalid(
                            c,
                            &format!("in literal {word} (expecting '{}')", char::from(want)),
                        );
                    }
                    st = if at + 1 == word.len() {
                        St::EndValue
                    } else {
                        St::Lit(word, at + 1)
                    };
                }
            }
            break;
        }
    }
    // the end of the input: a value that may end here has, anything else was cut short
    let done =
        stack.is_empty() && matches!(st, St::EndValue | St::Zero | St::One | St::Dot0 | St::E0);
    if done {
        Scan::Value(input.len())
    } else if input.iter().all(|&c| is_space(c)) {
        Scan::Empty
    } else {
        Scan::Error("unexpected EOF".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        match scan(s.as_bytes()) {
            Scan::Error(e) => e,
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn values_end_where_go_stops_reading() {
        assert_eq!(scan(b""), Scan::Empty);
        assert_eq!(scan(b" \n\t"), Scan::Empty);
        assert_eq!(
            scan(br#"{"a":[1,2.5e-3,true,null,"x\u00e9"]}"#),
            Scan::Value(36)
        );
        assert_eq!(scan(b"{} trailing"), Scan::Value(2));
        assert_eq!(scan(b"12 "), Scan::Value(2));
        assert_eq!(scan(b"12"), Scan::Value(2));
        assert_eq!(scan(b"\"s\"x"), Scan::Value(3));
        assert_eq!(scan(b"[ ]"), Scan::Value(3));
        assert_eq!(scan(b"{ }"), Scan::Value(3));
        assert_eq!(scan(b"-0.5E+7"), Scan::Value(7));
    }

    #[test]
    fn go_words() {
        assert_eq!(
            err("{invalid json"),
            "invalid character 'i' looking for beginning of object key string"
        );
        assert_eq!(
            err("x"),
            "invalid character 'x' looking for beginning of value"
        );
        assert_eq!(err(r#"{"a" 1}"#), "invalid character '1' after object key");
        assert_eq!(
            err(r#"{"a":1 "b"}"#),
            "invalid character '\"' after object key:value pair"
        );
        assert_eq!(err("[1 2]"), "invalid character '2' after array element");
        assert_eq!(
            err("[1,]"),
            "invalid character ']' looking for beginning of value"
        );
        assert_eq!(
            err(r#"{"a":1,}"#),
            "invalid character '}' looking for beginning of object key string"
        );
        assert_eq!(err("\"a\nb\""), r"invalid character '\n' in string literal");
        assert_eq!(
            err(r#""\q""#),
            "invalid character 'q' in string escape code"
        );
        assert_eq!(
            err(r#""\u12g4""#),
            r"invalid character 'g' in \u hexadecimal character escape"
        );
        assert_eq!(err("-a"), "invalid character 'a' in numeric literal");
        assert_eq!(
            err("1.x"),
            "invalid character 'x' after decimal point in numeric literal"
        );
        assert_eq!(
            err("1ex"),
            "invalid character 'x' in exponent of numeric literal"
        );
        assert_eq!(
            err("tru "),
            "invalid character ' ' in literal true (expecting 'e')"
        );
        assert_eq!(err("nul"), "unexpected EOF");
        assert_eq!(err("{\"a\":"), "unexpected EOF");
        assert_eq!(
            err("'"),
            r"invalid character '\'' looking for beginning of value"
        );
        assert_eq!(
            err("\u{1}"),
            r"invalid character '\x01' looking for beginning of value"
        );
        assert_eq!(
            err("\u{e9}"),
            "invalid character '\u{c3}' looking for beginning of value"
        );
        assert_eq!(
            scan(b"\x85"),
            Scan::Error(r"invalid character '\u0085' looking for beginning of value".into())
        );
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(err(&deep), "invalid character '[' exceeded max depth");
    }
}
