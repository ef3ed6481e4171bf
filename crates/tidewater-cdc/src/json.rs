//! JSON helpers: canonical serialisation, numbers that arrive as strings, and MongoDB
//! extended JSON.

use serde_json::{Map, Number, Value};

use crate::error::CdcError;

/// Writes `value` as canonical JSON: object members sorted by name at every depth, no
/// whitespace, numbers and strings as serde_json writes them. Deterministic whatever
/// order the members were inserted in.
pub fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Joins a JSON path and a member name.
pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A member that is absent or `null` is `None`.
pub(crate) fn present<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

/// An unsigned integer given as a JSON number or a decimal string; absent or null is
/// `None`.
pub(crate) fn opt_u64(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<u64>, CdcError> {
    let Some(v) = present(obj, name) else {
        return Ok(None);
    };
    let parsed = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        CdcError::invalid(
            join(path, name),
            format!("expected a non-negative integer (number or string), got {v}"),
        )
    })
}

/// A signed integer given as a JSON number or a decimal string; absent or null is `None`.
pub(crate) fn opt_i64(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<i64>, CdcError> {
    let Some(v) = present(obj, name) else {
        return Ok(None);
    };
    let parsed = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        CdcError::invalid(
            join(path, name),
            format!("expected an integer within 64 bits (number or string), got {v}"),
        )
    })
}

/// A string member; absent or null is `None`. Numbers are accepted and written out, as
/// some converters turn ids into numbers.
pub(crate) fn opt_string(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<String>, CdcError> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(v) => Err(CdcError::invalid(
            join(path, name),
            format!("expected a string, got {v}"),
        )),
    }
}

/// Replaces MongoDB extended-JSON integers and doubles (`{"$numberLong": "1004"}`,
/// `$numberInt`, `$numberDouble`) by plain JSON numbers, at every depth. Other extended
/// types (`$oid`, `$date`, `$binary`, `$numberDecimal`…) stay as their extended-JSON
/// objects, which are lossless.
pub(crate) fn simplify_extended_json(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            if map.len() == 1 {
                if let Some((k, Value::String(s))) = map.iter().next() {
                    let number = match k.as_str() {
                        "$numberLong" | "$numberInt" => s.parse::<i64>().ok().map(Number::from),
                        "$numberDouble" => s.parse::<f64>().ok().and_then(Number::from_f64),
                        _ => None,
                    };
                    if let Some(n) = number {
                        return Value::Number(n);
                    }
                }
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, simplify_extended_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(simplify_extended_json).collect())
        }
        other => other,
    }
}
