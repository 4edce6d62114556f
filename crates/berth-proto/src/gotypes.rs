//! The type errors of Go's `encoding/json` decoder, for bodies dockerd decodes into Go
//! structs: a field of the wrong JSON type is refused with `json: cannot unmarshal
//! number into Go struct field CreateRequest.Image of type string`, and clients (and
//! their users) read that name and type. A body is checked against a table of its
//! fields' Go types ([`Field`]); `null` is always allowed (Go leaves the field as it
//! is), unknown fields are ignored as Go ignores them, names match without case.

use serde_json::Value;

/// A field's Go type, as far as its JSON shape goes.
#[derive(Debug, Clone, Copy)]
pub enum GoType {
    /// a string (`string`, or a named string type such as `container.NetworkMode`)
    Str(&'static str),
    Bool,
    /// an integer type (`int64`, `uint16`, `*int64` shows as `int64`)
    Int(&'static str),
    /// `strslice.StrSlice`: a string or an array of strings
    StrSlice,
    /// an array whose elements are strings (`[]string`)
    Strings,
    /// an object whose values are strings (`map[string]string`)
    StringMap,
    /// an array of anything (`[]*container.Ulimit`: the elements are not looked into)
    Array(&'static str),
    /// an object (a struct or a map) not looked into
    Object(&'static str),
    /// a struct checked field by field
    Struct(&'static str, &'static [Field]),
}

/// A struct's field: its JSON name and Go type.
pub type Field = (&'static str, GoType);

/// Go's name for the kind of a JSON value.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn refuse(v: &Value, field: &str, ty: &str) -> String {
    format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {ty}",
        kind(v)
    )
}

/// Whether `n` fits Go's integer type `ty`.
fn fits(n: &serde_json::Number, ty: &str) -> bool {
    let unsigned = ty.starts_with('u');
    match (n.as_i64(), n.as_u64()) {
        (Some(i), _) if !unsigned => match ty {
            "int8" => i8::try_from(i).is_ok(),
            "int16" => i16::try_from(i).is_ok(),
            "int32" => i32::try_from(i).is_ok(),
            _ => true,
        },
        (_, Some(u)) if unsigned => match ty {
            "uint8" => u8::try_from(u).is_ok(),
            "uint16" => u16::try_from(u).is_ok(),
            "uint32" => u32::try_from(u).is_ok(),
            _ => true,
        },
        _ => false,
    }
}

/// Checks one value of Go type `ty` at `path` (`CreateRequest.HostConfig.Memory`).
fn check_value(v: &Value, ty: GoType, path: &str) -> Result<(), String> {
    if v.is_null() {
        return Ok(());
    }
    match ty {
        GoType::Str(name) if !v.is_string() => Err(refuse(v, path, name)),
        GoType::Bool if !v.is_boolean() => Err(refuse(v, path, "bool")),
        GoType::Int(name) => match v {
            Value::Number(n) if fits(n, name) => Ok(()),
            // a number an integer cannot hold says which
            Value::Number(n) => Err(format!(
                "json: cannot unmarshal number {n} into Go struct field {path} of type {name}"
            )),
            _ => Err(refuse(v, path, name)),
        },
        // StrSlice's own decoder: an array of strings, else a string
        GoType::StrSlice => match v {
            Value::String(_) => Ok(()),
            Value::Array(a) if a.iter().all(|e| e.is_string() || e.is_null()) => Ok(()),
            _ => Err(format!(
                "json: cannot unmarshal {} into Go value of type string",
                kind(v)
            )),
        },
        GoType::Strings => match v {
            Value::Array(a) => a
                .iter()
                .try_for_each(|e| check_value(e, GoType::Str("string"), path)),
            _ => Err(refuse(v, path, "[]string")),
        },
        GoType::StringMap => match v {
            Value::Object(m) => m
                .values()
                .try_for_each(|e| check_value(e, GoType::Str("string"), path)),
            _ => Err(refuse(v, path, "map[string]string")),
        },
        GoType::Array(name) if !v.is_array() => Err(refuse(v, path, name)),
        GoType::Object(name) if !v.is_object() => Err(refuse(v, path, name)),
        GoType::Struct(name, fields) => match v {
            Value::Object(_) => check_fields(v, fields, path),
            _ => Err(refuse(v, path, name)),
        },
        _ => Ok(()),
    }
}

/// Checks the fields of the object `body` against `fields`; `path` names the struct
/// (`CreateRequest`). Not an object: nothing to say here (the caller's own check).
pub fn check_fields(body: &Value, fields: &[Field], path: &str) -> Result<(), String> {
    let Some(m) = body.as_object() else {
        return Ok(());
    };
    for (k, v) in m {
        if let Some((name, ty)) = fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
            check_value(v, *ty, &format!("{path}.{name}"))?;
        }
    }
    Ok(())
}

/// Checks a whole body that Go decodes into the struct `name`: one that is not an
/// object is refused as Go refuses it.
pub fn check_body(body: &Value, name: &str, fields: &[Field]) -> Result<(), String> {
    match body {
        Value::Object(_) | Value::Null => {
            check_fields(body, fields, name.rsplit('.').next().unwrap_or(name))
        }
        v => Err(format!(
            "json: cannot unmarshal {} into Go value of type {name}",
            kind(v)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INNER: &[Field] = &[("Memory", GoType::Int("int64")), ("Binds", GoType::Strings)];
    const OUTER: &[Field] = &[
        ("Image", GoType::Str("string")),
        ("Tty", GoType::Bool),
        ("Cmd", GoType::StrSlice),
        ("Labels", GoType::StringMap),
        ("HostConfig", GoType::Struct("container.HostConfig", INNER)),
        ("Weight", GoType::Int("uint16")),
    ];

    fn check(v: Value) -> Result<(), String> {
        check_body(&v, "container.CreateRequest", OUTER)
    }

    #[test]
    fn type_errors_in_gos_words() {
        assert_eq!(
            check(json!({"Image": "x", "Tty": null, "Other": 5})),
            Ok(())
        );
        assert_eq!(
            check(json!({"image": 5})).unwrap_err(),
            "json: cannot unmarshal number into Go struct field CreateRequest.Image of type string"
        );
        assert_eq!(
            check(json!({"Tty": "yes"})).unwrap_err(),
            "json: cannot unmarshal string into Go struct field CreateRequest.Tty of type bool"
        );
        assert_eq!(
            check(json!({"HostConfig": {"Memory": "1g"}})).unwrap_err(),
            "json: cannot unmarshal string into Go struct field CreateRequest.HostConfig.Memory of type int64"
        );
        assert_eq!(
            check(json!({"HostConfig": {"Memory": 1.5}})).unwrap_err(),
            "json: cannot unmarshal number 1.5 into Go struct field CreateRequest.HostConfig.Memory of type int64"
        );
        assert_eq!(
            check(json!({"Weight": -1})).unwrap_err(),
            "json: cannot unmarshal number -1 into Go struct field CreateRequest.Weight of type uint16"
        );
        assert_eq!(
            check(json!({"HostConfig": {"Binds": [1]}})).unwrap_err(),
            "json: cannot unmarshal number into Go struct field CreateRequest.HostConfig.Binds of type string"
        );
        assert_eq!(
            check(json!({"HostConfig": "x"})).unwrap_err(),
            "json: cannot unmarshal string into Go struct field CreateRequest.HostConfig of type container.HostConfig"
        );
        assert_eq!(
            check(json!({"Labels": {"a": 1}})).unwrap_err(),
            "json: cannot unmarshal number into Go struct field CreateRequest.Labels of type string"
        );
        assert_eq!(check(json!({"Cmd": "ls"})), Ok(()));
        assert_eq!(check(json!({"Cmd": ["ls", "-l"]})), Ok(()));
        assert_eq!(
            check(json!({"Cmd": 5})).unwrap_err(),
            "json: cannot unmarshal number into Go value of type string"
        );
        assert_eq!(
            check(json!([1])).unwrap_err(),
            "json: cannot unmarshal array into Go value of type container.CreateRequest"
        );
    }
}
