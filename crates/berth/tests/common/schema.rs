//! Checks JSON responses against Docker's v1.50 swagger (`../shared/reference/`).

use serde_json::Value;
use std::path::PathBuf;

pub struct Spec {
    root: Value,
}

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/docker-engine-api-v1.50.yaml")
}

impl Spec {
    /// The spec, or None (with a message) when the reference copy is not beside the repo.
    pub fn load() -> Option<Spec> {
        let p = spec_path();
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("skipping schema checks: {}: {e}", p.display());
                return None;
            }
        };
        let root: Value = serde_yaml::from_str(&text).expect("swagger parses");
        Some(Spec { root })
    }

    pub fn definition(&self, name: &str) -> Value {
        self.root["definitions"][name].clone()
    }

    /// The schema of a path's response.
    pub fn response(&self, path: &str, method: &str, status: &str) -> Value {
        let s = self.root["paths"][path][method]["responses"][status]["schema"].clone();
        assert!(!s.is_null(), "no schema for {method} {path} {status}");
        s
    }

    fn resolve<'a>(&'a self, s: &'a Value) -> &'a Value {
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/definitions/");
                &self.root["definitions"][name]
            }
            None => s,
        }
    }

    /// Every way `v` departs from `schema`.
    pub fn check(&self, schema: &Value, v: &Value) -> Vec<String> {
        let mut errs = Vec::new();
        self.walk(schema, v, "$", &mut errs);
        errs
    }

    fn walk(&self, schema: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let s = self.resolve(schema);
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for part in all {
                self.walk_loose(part, v, at, errs);
            }
            return;
        }
        let ty =
            s.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if s.get("properties").is_some() {
                    "object"
                } else {
                    ""
                });
        if v.is_null() {
            let nullable = s
                .get("x-nullable")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !nullable && matches!(ty, "string" | "integer" | "boolean" | "number") {
                errs.push(format!("{at}: null for a {ty}"));
            }
            return;
        }
        match ty {
            "object" => {
                let Some(obj) = v.as_object() else {
                    errs.push(format!("{at}: want an object, got {v}"));
                    return;
                };
                for r in s
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let r = r.as_str().unwrap_or_default();
                    if !obj.contains_key(r) {
                        errs.push(format!("{at}: required field {r} missing"));
                    }
                }
                let props = s.get("properties").and_then(Value::as_object);
                let extra = s.get("additionalProperties");
                for (k, val) in obj {
                    if let Some(p) = props.and_then(|p| p.get(k)) {
                        self.walk(p, val, &format!("{at}.{k}"), errs);
                    } else if let Some(e) = extra.filter(|e| e.is_object()) {
                        self.walk(e, val, &format!("{at}.{k}"), errs);
                    } else if props.is_some() && extra.is_none() {
                        errs.push(format!("{at}: field {k} is not in the schema"));
                    }
                }
            }
            "array" => {
                let Some(a) = v.as_array() else {
                    errs.push(format!("{at}: want an array, got {v}"));
                    return;
                };
                if let Some(items) = s.get("items") {
                    for (i, x) in a.iter().enumerate() {
                        self.walk(items, x, &format!("{at}[{i}]"), errs);
                    }
                }
            }
            "string" => {
                if !v.is_string() {
                    errs.push(format!("{at}: want a string, got {v}"));
                } else if let Some(en) = s.get("enum").and_then(Value::as_array) {
                    if !en.contains(v) {
                        errs.push(format!("{at}: {v} is not one of {en:?}"));
                    }
                }
            }
            "integer" if !(v.is_i64() || v.is_u64()) => {
                errs.push(format!("{at}: want an integer, got {v}"));
            }
            "number" if !v.is_number() => errs.push(format!("{at}: want a number, got {v}")),
            "boolean" if !v.is_boolean() => errs.push(format!("{at}: want a boolean, got {v}")),
            _ => {}
        }
    }

    /// allOf parts: each part's fields are checked, unknown ones left to the others.
    fn walk_loose(&self, part: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
        let s = self.resolve(part);
        if let (Some(props), Some(obj)) = (
            s.get("properties").and_then(Value::as_object),
            v.as_object(),
        ) {
            for (k, p) in props {
                if let Some(val) = obj.get(k) {
                    self.walk(p, val, &format!("{at}.{k}"), errs);
                }
            }
        }
    }
}
