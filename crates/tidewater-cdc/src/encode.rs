//! Writing change events as Debezium records — the form [`crate::parse_debezium`] reads —
//! so that events from Tidewater's own CDC sources travel through the log exactly like
//! events from Debezium.

use serde_json::{json, Map, Value};

use crate::event::{ChangeEvent, Connector, SourcePosition};

/// A change as a Debezium record: the key (the primary-key columns) and the schema-less
/// value. Parsing them back gives the same event.
pub fn to_debezium(event: &ChangeEvent) -> (Value, Value) {
    let mut source = Map::new();
    let connector = match &event.source.connector {
        Connector::Postgresql => Some("postgresql"),
        Connector::Mysql => Some("mysql"),
        Connector::Mongodb => Some("mongodb"),
        Connector::Other(name) => Some(name.as_str()),
        Connector::Unknown => None,
    };
    let mut put = |name: &str, value: Option<Value>| {
        if let Some(value) = value {
            source.insert(name.to_owned(), value);
        }
    };
    put("connector", connector.map(Value::from));
    put("name", event.source.name.clone().map(Value::from));
    put("db", event.source.database.clone().map(Value::from));
    put("schema", event.source.schema.clone().map(Value::from));
    put("table", event.source.table.clone().map(Value::from));
    put("ts_ms", event.source.ts_ms.map(Value::from));
    put("snapshot", event.source.snapshot.clone().map(Value::from));
    match &event.source.position {
        SourcePosition::PostgresLsn {
            lsn,
            tx_id,
            last_commit_lsn,
        } => {
            put("lsn", Some(json!(lsn)));
            put("txId", tx_id.map(Value::from));
            put(
                "sequence",
                last_commit_lsn.map(|last| Value::from(format!("[\"{last}\",\"{lsn}\"]"))),
            );
        }
        SourcePosition::MysqlBinlog {
            file,
            pos,
            row,
            gtid,
            server_id,
        } => {
            put("file", Some(json!(file)));
            put("pos", Some(json!(pos)));
            put("row", Some(json!(row)));
            put("gtid", gtid.clone().map(Value::from));
            put("server_id", server_id.map(Value::from));
        }
        SourcePosition::Mongo { ts_ms, ord, rs, h } => {
            put("ts_ms", Some(json!(ts_ms)));
            put("ord", Some(json!(ord)));
            put("rs", rs.clone().map(Value::from));
            put("h", h.map(Value::from));
        }
        SourcePosition::Unknown => {}
    }
    let image =
        |m: &Option<Map<String, Value>>| m.clone().map(Value::Object).unwrap_or(Value::Null);
    let mut value = json!({
        "op": event.op.code(),
        "before": image(&event.before),
        "after": image(&event.after),
        "source": Value::Object(source),
    });
    if let Some(ts) = event.event_time_ms {
        value["ts_ms"] = json!(ts);
    }
    (Value::Object(event.key.clone()), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Op, SourceInfo};
    use crate::{parse_debezium_value, Parsed};

    fn postgres_event(op: Op, before: Option<Value>, after: Option<Value>) -> ChangeEvent {
        let mut source = SourceInfo::new(Connector::Postgresql);
        source.name = Some("travel".into());
        source.database = Some("travel".into());
        source.schema = Some("crm".into());
        source.table = Some("customers".into());
        source.ts_ms = Some(1_700_000_000_123);
        source.position = SourcePosition::PostgresLsn {
            lsn: 33_227_720,
            tx_id: Some(767),
            last_commit_lsn: None,
        };
        source.tx_id = Some("767".into());
        let mut event = ChangeEvent::new(
            op,
            source,
            json!({"id": 42}).as_object().cloned().unwrap_or_default(),
        );
        event.before = before.and_then(|v| v.as_object().cloned());
        event.after = after.and_then(|v| v.as_object().cloned());
        event.event_time_ms = Some(1_700_000_000_456);
        event
    }

    #[test]
    fn encoded_events_parse_back_unchanged() {
        let row = json!({"id": 42, "email": "ana@example.com", "big": 18_446_744_073_709_551_615u64, "note": null});
        for event in [
            postgres_event(Op::Read, None, Some(row.clone())),
            postgres_event(Op::Create, None, Some(row.clone())),
            postgres_event(Op::Update, Some(json!({"id": 42})), Some(row.clone())),
            postgres_event(Op::Delete, Some(json!({"id": 42})), None),
            postgres_event(Op::Truncate, None, None),
        ] {
            let (key, value) = to_debezium(&event);
            match parse_debezium_value(&value, Some(&key)) {
                Ok(Parsed::Change(parsed)) => assert_eq!(parsed, event),
                other => panic!("{event:?} parsed as {other:?}"),
            }
        }
    }
}
