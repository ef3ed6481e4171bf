//! Property tests: random valid events written the way Debezium writes them (with and
//! without the schema wrapper, numbers as numbers or strings) parse back to the same
//! event; random bytes never make the parser panic.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tidewater_cdc::{
    parse_debezium, ChangeEvent, Connector, Op, Parsed, SourceInfo, SourcePosition,
};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        // Quarters of small integers: exact in binary and short in decimal.
        (-4_000_000i32..4_000_000).prop_map(|n| json!(f64::from(n) / 4.0)),
        "\\PC{0,12}".prop_map(Value::String),
        "[0-9]{1,20}".prop_map(Value::String),
    ]
}

fn column_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn row() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,8}", column_value(), 0..5)
        .prop_map(|m| m.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,7}"
}

fn source() -> impl Strategy<Value = SourceInfo> {
    let common = (
        prop::option::of(name()),
        name(),
        name(),
        prop::option::of(any::<i64>()),
        prop::option::of(prop::sample::select(vec![
            "true",
            "false",
            "last",
            "incremental",
        ])),
    );
    let position = prop_oneof![
        (
            any::<u64>(),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            name()
        )
            .prop_map(|(lsn, tx_id, last_commit_lsn, schema)| {
                (
                    Connector::Postgresql,
                    Some(schema),
                    SourcePosition::PostgresLsn {
                        lsn,
                        tx_id,
                        last_commit_lsn,
                    },
                )
            }),
        (
            1u32..999_999,
            any::<u64>(),
            any::<u64>(),
            prop::option::of("[0-9a-f]{8}:[0-9]{1,3}"),
            prop::option::of(any::<u64>())
        )
            .prop_map(|(index, pos, row, gtid, server_id)| {
                let file = format!("mysql-bin.{index:06}");
                (
                    Connector::Mysql,
                    None,
                    SourcePosition::MysqlBinlog {
                        file,
                        pos,
                        row,
                        gtid,
                        server_id,
                    },
                )
            }),
        (
            any::<i64>(),
            any::<i64>(),
            prop::option::of(name()),
            prop::option::of(any::<i64>())
        )
            .prop_map(|(ts_ms, ord, rs, h)| {
                (
                    Connector::Mongodb,
                    None,
                    SourcePosition::Mongo { ts_ms, ord, rs, h },
                )
            }),
    ];
    (common, position, prop::option::of(any::<i64>())).prop_map(
        |((server, db, table, ts_ms, snapshot), (connector, schema, position), mongo_txn)| {
            let mut s = SourceInfo::new(connector);
            s.name = server;
            s.database = Some(db);
            s.schema = schema;
            s.table = Some(table);
            s.snapshot = snapshot.map(str::to_owned);
            s.tx_id = match &position {
                SourcePosition::PostgresLsn { tx_id, .. } => tx_id.map(|t| t.to_string()),
                SourcePosition::MysqlBinlog { gtid, .. } => gtid.clone(),
                _ => mongo_txn.map(|t| t.to_string()),
            };
            s.ts_ms = match &position {
                SourcePosition::Mongo { ts_ms, .. } => Some(*ts_ms),
                _ => ts_ms,
            };
            s.position = position;
            s
        },
    )
}

fn event() -> impl Strategy<Value = ChangeEvent> {
    let op = prop::sample::select(vec![
        Op::Create,
        Op::Update,
        Op::Delete,
        Op::Read,
        Op::Truncate,
    ]);
    (
        op,
        source(),
        row(),
        scalar(),
        row(),
        row(),
        any::<bool>(),
        prop::option::of(any::<i64>()),
    )
        .prop_map(
            |(op, source, key, mongo_id, before, after, with_before, event_time_ms)| {
                let key = if op == Op::Truncate {
                    Map::new()
                } else if source.connector == Connector::Mongodb {
                    Map::from_iter([("id".to_owned(), mongo_id)])
                } else {
                    key
                };
                let mut e = ChangeEvent::new(op, source, key);
                e.before = (matches!(op, Op::Update | Op::Delete) && with_before).then_some(before);
                e.after = matches!(op, Op::Create | Op::Update | Op::Read).then_some(after);
                e.event_time_ms = event_time_ms;
                e
            },
        )
}

fn num(n: impl ToString + Into<Value>, as_string: bool) -> Value {
    if as_string {
        Value::String(n.to_string())
    } else {
        n.into()
    }
}

/// Writes `e` as a Debezium record (key, value) the way the connectors do.
fn to_debezium(e: &ChangeEvent, strings: bool, wrap: bool) -> (Value, Value) {
    let s = &e.source;
    let mongo = s.connector == Connector::Mongodb;
    let mut src = Map::new();
    let mut put = |k: &str, v: Value| {
        src.insert(k.to_owned(), v);
    };
    put("version", json!("2.7.0.Final"));
    if let Some(name) = &s.name {
        put("name", json!(name));
    }
    put("db", json!(s.database));
    if let Some(ts) = s.ts_ms {
        put("ts_ms", num(ts, strings));
    }
    if let Some(snapshot) = &s.snapshot {
        put("snapshot", json!(snapshot));
    }
    match &s.position {
        SourcePosition::PostgresLsn {
            lsn,
            tx_id,
            last_commit_lsn,
        } => {
            put("connector", json!("postgresql"));
            put("schema", json!(s.schema));
            put("table", json!(s.table));
            put("lsn", num(*lsn, strings));
            put("txId", tx_id.map_or(Value::Null, |t| num(t, strings)));
            put("xmin", Value::Null);
            let seq = json!([last_commit_lsn.map(|l| l.to_string()), lsn.to_string()]);
            put("sequence", json!(seq.to_string()));
        }
        SourcePosition::MysqlBinlog {
            file,
            pos,
            row,
            gtid,
            server_id,
        } => {
            put("connector", json!("mysql"));
            put("table", json!(s.table));
            put("file", json!(file));
            put("pos", num(*pos, strings));
            put("row", num(*row, strings));
            put("gtid", json!(gtid));
            put(
                "server_id",
                server_id.map_or(Value::Null, |t| num(t, strings)),
            );
        }
        SourcePosition::Mongo { ord, rs, h, .. } => {
            put("connector", json!("mongodb"));
            put("collection", json!(s.table));
            put("ord", num(*ord, strings));
            put("rs", json!(rs));
            put("h", h.map_or(Value::Null, |h| num(h, strings)));
            if let Some(txn) = &s.tx_id {
                put("txnNumber", json!(txn.parse::<i64>().expect("txnNumber")));
            }
        }
        other => unreachable!("not generated: {other:?}"),
    }
    let image = |m: &Option<Map<String, Value>>| match m {
        None => Value::Null,
        Some(m) if mongo => Value::String(Value::Object(m.clone()).to_string()),
        Some(m) => Value::Object(m.clone()),
    };
    let mut value = json!({
        "before": image(&e.before),
        "after": image(&e.after),
        "source": src,
        "op": e.op.code(),
    });
    if let Some(ts) = e.event_time_ms {
        value["ts_ms"] = num(ts, strings);
    }
    let mut key = Value::Object(e.key.clone());
    if mongo {
        if let Some(id) = e.key.get("id") {
            key = json!({"id": id.to_string()});
        }
    }
    if wrap {
        value = json!({"schema": {"type": "struct", "optional": false}, "payload": value});
        key = json!({"schema": null, "payload": key});
    }
    (key, value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn written_events_parse_back(e in event(), strings: bool, wrap: bool) {
        let (key, value) = to_debezium(&e, strings, wrap);
        let key = serde_json::to_vec(&key).expect("key");
        let value = serde_json::to_vec(&value).expect("value");
        let parsed = parse_debezium(Some(&key), Some(&value));
        prop_assert_eq!(parsed.expect("parses"), Parsed::Change(e));
    }

    #[test]
    fn random_bytes_never_panic(key in prop::option::of(prop::collection::vec(any::<u8>(), 0..64)),
                                value in prop::option::of(prop::collection::vec(any::<u8>(), 0..256))) {
        let _ = parse_debezium(key.as_deref(), value.as_deref());
    }

    #[test]
    fn random_json_never_panics(value in column_value(), key in prop::option::of(column_value())) {
        let _ = tidewater_cdc::parse_debezium_value(&value, key.as_ref());
        let wrapped = json!({"payload": value});
        let _ = tidewater_cdc::parse_debezium_value(&wrapped, key.as_ref());
    }
}
