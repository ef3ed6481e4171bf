//! The Debezium JSON parser: turns a Debezium record (key and value, as the Kafka
//! Connect JSON converter writes them, with or without its `schema`/`payload` wrapper)
//! into a [`Parsed`] change, tombstone or transaction marker.
//!
//! Keys: the record key's payload becomes [`ChangeEvent::key`]. Without a record key,
//! the primary key cannot be told from the row in general (Debezium values carry no
//! key schema), so the key is left empty and the caller must supply it — except for
//! MongoDB, whose key is always `{"id": <_id>}` and is taken from the document. MongoDB
//! key ids, which Debezium writes as extended-JSON strings (`"1004"`,
//! `"{\"$oid\" : \"…\"}"`), are parsed so that both ways give the same key.

use serde_json::{Map, Value};

use crate::error::CdcError;
use crate::event::{ChangeEvent, Connector, Op, Parsed, TransactionMarker, TransactionStatus};
use crate::json::{join, opt_i64, opt_string, opt_u64, present, simplify_extended_json};
use crate::source::parse_source;

/// Parses a Debezium record from its key and value bytes. A missing or empty value is
/// Kafka's null: with a key it is a [`Parsed::Tombstone`].
pub fn parse_debezium(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Parsed, CdcError> {
    let key = match key.filter(|k| !is_blank(k)) {
        Some(bytes) => {
            Some(
                serde_json::from_slice::<Value>(bytes).map_err(|source| CdcError::Json {
                    part: "key",
                    source,
                })?,
            )
        }
        None => None,
    };
    let value = match value.filter(|v| !is_blank(v)) {
        Some(bytes) => serde_json::from_slice::<Value>(bytes).map_err(|source| CdcError::Json {
            part: "value",
            source,
        })?,
        None => Value::Null,
    };
    parse_debezium_value(&value, key.as_ref())
}

/// Parses a Debezium record value already read as JSON (e.g. one event of an HTTP body),
/// with its key if there is one. Error paths are relative to the value (`payload.op`) or
/// start with `key` for the key.
pub fn parse_debezium_value(value: &Value, key: Option<&Value>) -> Result<Parsed, CdcError> {
    let key = match key {
        Some(k) => record_key(k)?,
        None => None,
    };
    let (payload, path) = match unwrap_envelope(value) {
        Some(inner) => (inner, "payload"),
        None => (value, ""),
    };
    match payload {
        Value::Null => match key {
            Some(key) => Ok(Parsed::Tombstone { key }),
            None => Err(CdcError::invalid(
                path,
                "the value is null and there is no key: neither a change nor a tombstone",
            )),
        },
        Value::Object(obj) if !obj.contains_key("op") && obj.contains_key("status") => {
            transaction(obj, path).map(Parsed::Transaction)
        }
        Value::Object(obj) => change(obj, path, key).map(Parsed::Change),
        other => Err(CdcError::invalid(
            path,
            format!("expected a JSON object, got {}", describe(other)),
        )),
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// The payload of a `{"schema": …, "payload": …}` wrapper, if `value` is one.
fn unwrap_envelope(value: &Value) -> Option<&Value> {
    let obj = value.as_object()?;
    let payload = obj.get("payload")?;
    obj.keys()
        .all(|k| k == "schema" || k == "payload")
        .then_some(payload)
}

/// The key's columns; `None` for a null key (tables without a primary key).
fn record_key(key: &Value) -> Result<Option<Map<String, Value>>, CdcError> {
    let (inner, path) = match unwrap_envelope(key) {
        Some(inner) => (inner, "key.payload"),
        None => (key, "key"),
    };
    match inner {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(map.clone())),
        other => Err(CdcError::invalid(
            path,
            format!(
                "expected a JSON object of key columns, got {}",
                describe(other)
            ),
        )),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn transaction(obj: &Map<String, Value>, path: &str) -> Result<TransactionMarker, CdcError> {
    let status = match obj.get("status").and_then(Value::as_str) {
        Some("BEGIN") => TransactionStatus::Begin,
        Some("END") => TransactionStatus::End,
        _ => {
            return Err(CdcError::invalid(
                join(path, "status"),
                format!(
                    "a transaction marker's status is BEGIN or END, got {}",
                    obj.get("status").unwrap_or(&Value::Null)
                ),
            ))
        }
    };
    let id = opt_string(obj, "id", path)?.ok_or_else(|| {
        CdcError::invalid(
            join(path, "id"),
            "missing; a transaction marker needs the transaction id",
        )
    })?;
    let mut data_collections = Vec::new();
    let dc_path = join(path, "data_collections");
    match present(obj, "data_collections") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{dc_path}[{i}]");
                let Value::Object(entry) = item else {
                    return Err(CdcError::invalid(
                        item_path,
                        format!(
                            "expected an object with data_collection and event_count, got {}",
                            describe(item)
                        ),
                    ));
                };
                let name = opt_string(entry, "data_collection", &item_path)?.ok_or_else(|| {
                    CdcError::invalid(join(&item_path, "data_collection"), "missing")
                })?;
                let count = opt_u64(entry, "event_count", &item_path)?
                    .ok_or_else(|| CdcError::invalid(join(&item_path, "event_count"), "missing"))?;
                data_collections.push((name, count));
            }
        }
        Some(v) => {
            return Err(CdcError::invalid(
                dc_path,
                format!("expected an array, got {}", describe(v)),
            ))
        }
    }
    Ok(TransactionMarker {
        status,
        id,
        event_count: opt_u64(obj, "event_count", path)?,
        data_collections,
        ts_ms: opt_i64(obj, "ts_ms", path)?,
    })
}

fn change(
    obj: &Map<String, Value>,
    path: &str,
    key: Option<Map<String, Value>>,
) -> Result<ChangeEvent, CdcError> {
    let op_path = join(path, "op");
    let op = match obj.get("op") {
        None | Some(Value::Null) => {
            return Err(CdcError::invalid(
                op_path,
                "missing; a change event needs an operation: one of c, u, d, r, t, m",
            ))
        }
        Some(Value::String(code)) => Op::from_code(code).ok_or_else(|| {
            CdcError::invalid(
                op_path,
                format!("unknown operation '{code}'; expected one of c, u, d, r, t, m"),
            )
        })?,
        Some(v) => {
            return Err(CdcError::invalid(
                op_path,
                format!("expected a string such as \"c\", got {}", describe(v)),
            ))
        }
    };
    let source_path = join(path, "source");
    let mut source = match obj.get("source") {
        Some(Value::Object(src)) => parse_source(src, &source_path)?,
        None | Some(Value::Null) => {
            return Err(CdcError::invalid(
                source_path,
                "missing; a Debezium change event names its source database and table",
            ))
        }
        Some(v) => {
            return Err(CdcError::invalid(
                source_path,
                format!("expected an object, got {}", describe(v)),
            ))
        }
    };
    match present(obj, "transaction") {
        None => {}
        Some(Value::Object(tx)) => {
            let tx_path = join(path, "transaction");
            if let Some(id) = opt_string(tx, "id", &tx_path)? {
                source.tx_id = Some(id);
            }
        }
        Some(v) => {
            return Err(CdcError::invalid(
                join(path, "transaction"),
                format!("expected an object, got {}", describe(v)),
            ))
        }
    }

    let mut event = ChangeEvent::new(op, source, Map::new());
    event.before = image(obj, "before", path)?;
    event.after = image(obj, "after", path)?;
    event.event_time_ms = opt_i64(obj, "ts_ms", path)?;
    update_description(obj, path, &mut event)?;
    legacy_patch(obj, path, &mut event)?;
    if op == Op::Message && event.after.is_none() {
        event.after = image(obj, "message", path)?;
    }

    match op {
        Op::Create | Op::Read if event.after.is_none() => {
            return Err(CdcError::invalid(
                join(path, "after"),
                format!(
                    "missing; a{} event carries the new row in 'after'",
                    if op == Op::Create { " create" } else { " read (snapshot)" }
                ),
            ))
        }
        Op::Update if event.after.is_none() && event.patch.is_none() => {
            return Err(CdcError::invalid(
                join(path, "after"),
                "missing; an update event carries the new row in 'after' (or, for MongoDB, the changed fields in 'updateDescription' or 'patch')",
            ))
        }
        _ => {}
    }

    let mongo = event.source.connector == Connector::Mongodb;
    event.key = match key {
        Some(mut key) if mongo => {
            if let Some(id) = key.get_mut("id") {
                *id = parse_mongo_id(id.take());
            }
            key
        }
        Some(key) => key,
        None if mongo => {
            let filter = image(obj, "filter", path)?;
            let id = [&event.after, &event.before, &filter]
                .into_iter()
                .flatten()
                .find_map(|doc| doc.get("_id"))
                .cloned();
            id.map(|id| Map::from_iter([("id".to_owned(), id)]))
                .unwrap_or_default()
        }
        None => Map::new(),
    };
    Ok(event)
}

/// A MongoDB key id as Debezium writes it: a string of extended JSON. Parsed and
/// simplified like the documents are; a string that is not JSON stays as it is.
fn parse_mongo_id(id: Value) -> Value {
    match id {
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(parsed) => simplify_extended_json(parsed),
            Err(_) => Value::String(s),
        },
        other => other,
    }
}

/// A row image: an object, or (MongoDB) a string holding a JSON object in extended JSON.
/// Absent or null is `None`.
fn image(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
) -> Result<Option<Map<String, Value>>, CdcError> {
    match present(obj, name) {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => match simplify_extended_json(v) {
                Value::Object(map) => Ok(Some(map)),
                _ => Ok(None),
            },
            Ok(v) => Err(CdcError::invalid(
                join(path, name),
                format!("the string holds {}, not a JSON object", describe(&v)),
            )),
            Err(e) => Err(CdcError::invalid(
                join(path, name),
                format!("the string is not valid JSON: {e}"),
            )),
        },
        Some(v) => Err(CdcError::invalid(
            join(path, name),
            format!("expected an object, got {}", describe(v)),
        )),
    }
}

/// MongoDB change streams: `updateDescription.updatedFields` (a JSON string or object)
/// and `removedFields`.
fn update_description(
    obj: &Map<String, Value>,
    path: &str,
    event: &mut ChangeEvent,
) -> Result<(), CdcError> {
    let ud_path = join(path, "updateDescription");
    let ud = match present(obj, "updateDescription") {
        None => return Ok(()),
        Some(Value::Object(ud)) => ud,
        Some(v) => {
            return Err(CdcError::invalid(
                ud_path,
                format!("expected an object, got {}", describe(v)),
            ))
        }
    };
    event.patch = image(ud, "updatedFields", &ud_path)?;
    match present(ud, "removedFields") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let Value::String(field) = item else {
                    return Err(CdcError::invalid(
                        format!("{ud_path}.removedFields[{i}]"),
                        format!("expected a field name, got {}", describe(item)),
                    ));
                };
                event.removed_fields.push(field.clone());
            }
        }
        Some(v) => {
            return Err(CdcError::invalid(
                join(&ud_path, "removedFields"),
                format!("expected an array of field names, got {}", describe(v)),
            ))
        }
    }
    Ok(())
}

/// MongoDB oplog events (Debezium 1.x): `patch` is an update document (`$set`,
/// `$unset`) or, without operators, the whole replacement document.
fn legacy_patch(
    obj: &Map<String, Value>,
    path: &str,
    event: &mut ChangeEvent,
) -> Result<(), CdcError> {
    let Some(patch) = image(obj, "patch", path)? else {
        return Ok(());
    };
    if !patch.keys().any(|k| k.starts_with('$')) {
        if event.after.is_none() {
            event.after = Some(patch);
        }
        return Ok(());
    }
    let patch_path = join(path, "patch");
    if let Some(set) = present(&patch, "$set") {
        let Value::Object(set) = set else {
            return Err(CdcError::invalid(
                join(&patch_path, "$set"),
                format!("expected an object, got {}", describe(set)),
            ));
        };
        event.patch.get_or_insert_with(Map::new).extend(set.clone());
    }
    if let Some(unset) = present(&patch, "$unset") {
        let Value::Object(unset) = unset else {
            return Err(CdcError::invalid(
                join(&patch_path, "$unset"),
                format!("expected an object, got {}", describe(unset)),
            ));
        };
        event.removed_fields.extend(unset.keys().cloned());
    }
    Ok(())
}
