//! Output formatting as the docker CLI does it: human sizes and durations, tables
//! aligned like Go's tabwriter (min width 10, padding 3), and `--format` handling
//! (`table ...`, `json`, or a Go template).

use crate::template::Template;
use anyhow::Result;
use serde_json::Value;

/// Go's `%.{p}g`.
pub fn fmt_g(v: f64, p: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let e = format!("{:.*e}", p.saturating_sub(1), v);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if exp < -4 || exp >= p as i32 {
        let m = trim(mant.to_string());
        format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (p as i32 - 1 - exp).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    }
}

/// docker's `units.HumanSizeWithPrecision`: decimal units.
pub fn human_size_prec(size: f64, prec: usize) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut s = size;
    let mut i = 0;
    while s >= 1000.0 && i < UNITS.len() - 1 {
        s /= 1000.0;
        i += 1;
    }
    format!("{}{}", fmt_g(s, prec), UNITS[i])
}

pub fn human_size(size: i64) -> String {
    human_size_prec(size as f64, 3)
}

/// docker's `units.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs;
    if s < 1 {
        return "Less than a second".into();
    }
    if s == 1 {
        return "1 second".into();
    }
    if s < 60 {
        return format!("{s} seconds");
    }
    let m = s / 60;
    if m == 1 {
        return "About a minute".into();
    }
    if m < 60 {
        return format!("{m} minutes");
    }
    let h = ((s as f64) / 3600.0 + 0.5) as i64;
    if h == 1 {
        return "About an hour".into();
    }
    if h < 48 {
        return format!("{h} hours");
    }
    if h < 24 * 7 * 2 {
        return format!("{} days", h / 24);
    }
    if h < 24 * 30 * 2 {
        return format!("{} weeks", h / 24 / 7);
    }
    if h < 24 * 365 * 2 {
        return format!("{} months", h / 24 / 30);
    }
    format!("{} years", s / 3600 / 24 / 365)
}

/// "2 hours ago", for a unix time.
pub fn since(unix: i64) -> String {
    if unix <= 0 {
        return "N/A".into();
    }
    format!(
        "{} ago",
        human_duration(chrono::Utc::now().timestamp() - unix)
    )
}

/// Go's `time.Time.String()` for a unix time (UTC here).
pub fn go_time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
        .unwrap_or_default()
}

/// Aligns tab-separated cells like Go's tabwriter(minwidth 10, tabwidth 1, padding 3).
/// The last cell of a line (not followed by a tab) is not aligned.
pub fn tabwrite(text: &str) -> String {
    tabwrite_min(text, 10)
}

/// [`tabwrite`] with another minimum cell width (`docker top` uses 20).
pub fn tabwrite_min(text: &str, min: usize) -> String {
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for cells in &lines {
        for (i, c) in cells.iter().enumerate().take(cells.len().saturating_sub(1)) {
            let w = c.chars().count() + 3;
            if widths.len() <= i {
                widths.resize(i + 1, min);
            }
            widths[i] = widths[i].max(w);
        }
    }
    let mut out = String::new();
    for cells in &lines {
        let n = cells.len();
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                let pad = widths[i].saturating_sub(c.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    out
}

/// How rows get printed for a `--format` value.
pub enum Format {
    /// `table TEMPLATE`: a header row and aligned columns
    Table(String),
    /// a bare template, one rendering per row, nothing aligned
    Raw(String),
}

impl Format {
    /// `default` is the table template used when `--format` is empty or `table`.
    pub fn new(flag: Option<&str>, default: &str) -> Format {
        match flag.map(str::trim) {
            None | Some("") | Some("table") => Format::Table(default.to_string()),
            Some("json") => Format::Raw("{{json .}}".into()),
            Some(f) => match f.strip_prefix("table") {
                Some(rest) if rest.starts_with(char::is_whitespace) => {
                    Format::Table(rest.trim_start().to_string())
                }
                _ => Format::Raw(f.to_string()),
            },
        }
    }

    /// Renders `rows`; `headers` maps each field name to its column title.
    pub fn render(&self, rows: &[Value], headers: &Value) -> Result<String> {
        let unescape = |s: &str| s.replace("\\t", "\t").replace("\\n", "\n");
        match self {
            Format::Table(t) => {
                let tpl = Template::parse(&unescape(t))?;
                let mut text = tpl.render(headers)?;
                text.push('\n');
                for r in rows {
                    text.push_str(&tpl.render(r)?);
                    text.push('\n');
                }
                Ok(tabwrite(&text))
            }
            Format::Raw(t) => {
                let tpl = Template::parse(&unescape(t))?;
                let mut out = String::new();
                for r in rows {
                    out.push_str(&tpl.render(r)?);
                    out.push('\n');
                }
                Ok(out)
            }
        }
    }
}

/// Labels as `ls` tables show them: `k=v,k2=v2`, sorted.
pub fn labels_text(labels: &Value) -> String {
    let mut all: Vec<String> = labels
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all.join(",")
}

/// JSON indented with four spaces, as `docker inspect` prints it.
pub fn indent_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1234567), "1.23MB");
        assert_eq!(human_size(12345), "12.3kB");
        assert_eq!(human_size_prec(4_672_000.0, 4), "4.672MB");
        assert_eq!(fmt_g(999.9, 3), "1e+03");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn tabwriter_like_go() {
        let t = tabwrite("REPOSITORY\tTAG\tSIZE\nbusybox\tlatest\t1MB\n");
        assert_eq!(
            t,
            "REPOSITORY   TAG       SIZE\nbusybox      latest    1MB\n"
        );
    }

    #[test]
    fn formats() {
        let rows = vec![serde_json::json!({"ID": "a", "Tag": "t"})];
        let h = serde_json::json!({"ID": "IMAGE ID", "Tag": "TAG"});
        assert_eq!(
            Format::new(Some("{{.ID}}"), "").render(&rows, &h).unwrap(),
            "a\n"
        );
        assert_eq!(
            Format::new(Some("table {{.ID}}\\t{{.Tag}}"), "")
                .render(&rows, &h)
                .unwrap(),
            "IMAGE ID   TAG\na          t\n"
        );
        assert_eq!(
            Format::new(Some("json"), "").render(&rows, &h).unwrap(),
            "{\"ID\":\"a\",\"Tag\":\"t\"}\n"
        );
    }
}
