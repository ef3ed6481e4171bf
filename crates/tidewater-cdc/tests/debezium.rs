//! The Debezium parser against the examples of Debezium's documentation
//! (`tests/fixtures/debezium/`), malformed input, and random events.

#[path = "debezium/roundtrip.rs"]
mod roundtrip;

use serde_json::{json, Map, Value};
use tidewater_cdc::{
    parse_debezium, parse_debezium_value, CdcError, ChangeEvent, Connector, Op, Parsed,
    SourcePosition, TransactionMarker, TransactionStatus,
};
use tidewater_core::ErrorDomain;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/debezium/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse(key: Option<&str>, value: &str) -> Parsed {
    let key = key.map(fixture);
    parse_debezium(key.as_deref(), Some(&fixture(value))).unwrap_or_else(|e| panic!("{value}: {e}"))
}

fn change(key: Option<&str>, value: &str) -> ChangeEvent {
    match parse(key, value) {
        Parsed::Change(event) => event,
        other => panic!("{value}: expected a change, got {other:?}"),
    }
}

fn marker(value: &str) -> TransactionMarker {
    match parse(None, value) {
        Parsed::Transaction(marker) => marker,
        other => panic!("{value}: expected a transaction marker, got {other:?}"),
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn customer(id: u64, first_name: &str) -> Map<String, Value> {
    obj(json!({
        "id": id,
        "first_name": first_name,
        "last_name": "Kretchmar",
        "email": "annek@noanswer.org"
    }))
}

fn mongo_customer(first_name: &str) -> Map<String, Value> {
    obj(json!({
        "_id": 1004,
        "first_name": first_name,
        "last_name": "Kretchmar",
        "email": "annek@noanswer.org"
    }))
}

fn pg_position(lsn: u64, tx_id: Option<u64>, last_commit_lsn: Option<u64>) -> SourcePosition {
    SourcePosition::PostgresLsn {
        lsn,
        tx_id,
        last_commit_lsn,
    }
}

fn binlog(pos: u64, server_id: u64) -> SourcePosition {
    SourcePosition::MysqlBinlog {
        file: "mysql-bin.000003".into(),
        pos,
        row: 0,
        gtid: None,
        server_id: Some(server_id),
    }
}

fn oplog(ord: i64, h: Option<i64>) -> SourcePosition {
    SourcePosition::Mongo {
        ts_ms: 1558965508000,
        ord,
        rs: Some("rs0".into()),
        h,
    }
}

// ---- PostgreSQL -------------------------------------------------------------------

#[test]
fn postgresql_create_with_schema() {
    let e = change(Some("postgresql-key"), "postgresql-create-with-schema");
    assert_eq!(e.op, Op::Create);
    assert_eq!(e.source.connector, Connector::Postgresql);
    assert_eq!(e.source.name.as_deref(), Some("PostgreSQL_server"));
    assert_eq!(e.table_id(), "postgres.public.customers");
    assert_eq!(e.key, obj(json!({"id": "1"})));
    assert_eq!(e.key_string(), r#"{"id":"1"}"#);
    assert_eq!(e.before, None);
    assert_eq!(e.after, Some(customer(1, "Anne")));
    assert_eq!(
        e.source.position,
        pg_position(24023128, Some(555), Some(24023119))
    );
    assert_eq!(e.source.tx_id.as_deref(), Some("555"));
    assert_eq!(e.source.ts_ms, Some(1559033904863));
    assert_eq!(e.source.snapshot.as_deref(), Some("true"));
    assert_eq!(e.event_time_ms, Some(1559033904863));
}

#[test]
fn postgresql_create_schemaless_equals_wrapped() {
    let wrapped = change(Some("postgresql-key"), "postgresql-create-with-schema");
    let bare = change(Some("postgresql-key"), "postgresql-create-schemaless");
    assert_eq!(bare, wrapped);
}

#[test]
fn postgresql_update() {
    let e = change(Some("postgresql-key"), "postgresql-update");
    assert_eq!(e.op, Op::Update);
    assert_eq!(e.table_id(), "postgres.public.customers");
    assert_eq!(e.key, obj(json!({"id": "1"})));
    assert_eq!(e.before, Some(obj(json!({"id": 1}))));
    assert_eq!(e.after, Some(customer(1, "Anne Marie")));
    assert_eq!(e.source.position, pg_position(24023128, Some(556), None));
    assert_eq!(e.source.tx_id.as_deref(), Some("556"));
    assert_eq!(e.source.snapshot.as_deref(), Some("false"));
    assert_eq!(e.event_time_ms, Some(1465584025523));
}

#[test]
fn postgresql_delete() {
    let e = change(Some("postgresql-key"), "postgresql-delete");
    assert_eq!(e.op, Op::Delete);
    assert_eq!(e.before, Some(obj(json!({"id": 1}))));
    assert_eq!(e.after, None);
    assert_eq!(e.source.position, pg_position(46523128, Some(556), None));
    let create = change(Some("postgresql-key"), "postgresql-create-with-schema");
    assert_eq!(
        create.source.position.cmp_position(&e.source.position),
        Some(std::cmp::Ordering::Less)
    );
}

#[test]
fn postgresql_tombstone() {
    let key = fixture("postgresql-key");
    for value in [None, Some(&b""[..]), Some(&b"null"[..])] {
        let parsed = parse_debezium(Some(&key), value).expect("tombstone");
        assert_eq!(
            parsed,
            Parsed::Tombstone {
                key: obj(json!({"id": "1"}))
            }
        );
    }
}

#[test]
fn postgresql_truncate() {
    let e = change(None, "postgresql-truncate");
    assert_eq!(e.op, Op::Truncate);
    assert_eq!(e.table_id(), "postgres.public.customers");
    assert!(e.key.is_empty());
    assert_eq!((e.before, e.after), (None, None));
    assert_eq!(e.source.position, pg_position(46523128, Some(556), None));
}

#[test]
fn postgresql_messages() {
    let tx = change(None, "postgresql-message-transactional");
    assert_eq!(tx.op, Op::Message);
    assert_eq!(
        tx.table_id(),
        "postgres",
        "empty schema and table are no names"
    );
    assert_eq!(
        tx.after,
        Some(obj(json!({"prefix": "foo", "content": "Ymfy"})))
    );
    assert_eq!(tx.source.tx_id.as_deref(), Some("556"));
    assert_eq!(tx.source.position, pg_position(46523128, Some(556), None));

    let non_tx = change(None, "postgresql-message-non-transactional");
    assert_eq!(non_tx.op, Op::Message);
    assert_eq!(non_tx.source.tx_id, None);
    assert_eq!(non_tx.source.position, pg_position(46523128, None, None));
}

#[test]
fn postgresql_transaction_markers() {
    assert_eq!(
        marker("postgresql-transaction-begin"),
        TransactionMarker {
            status: TransactionStatus::Begin,
            id: "571:53195829".into(),
            event_count: None,
            data_collections: vec![],
            ts_ms: Some(1486500577125),
        }
    );
    assert_eq!(
        marker("postgresql-transaction-end"),
        TransactionMarker {
            status: TransactionStatus::End,
            id: "571:53195832".into(),
            event_count: Some(2),
            data_collections: vec![("s1.a".into(), 1), ("s2.a".into(), 1)],
            ts_ms: Some(1486500577691),
        }
    );
}

#[test]
fn postgresql_transaction_enrichment_with_numbers_as_strings() {
    let e = change(None, "postgresql-create-transaction-enrichment");
    assert_eq!(e.op, Op::Create);
    assert_eq!(e.source.tx_id.as_deref(), Some("571:53195832"));
    assert_eq!(e.event_time_ms, Some(1580390884335));
    assert_eq!(e.after, Some(obj(json!({"pk": "2", "aa": "1"}))));
    assert_eq!(
        e.source.connector,
        Connector::Unknown,
        "the example elides the source"
    );
    assert_eq!(e.source.position, SourcePosition::Unknown);
    assert!(e.key.is_empty(), "no record key: the caller supplies it");
}

#[test]
fn incremental_snapshot_read() {
    let e = change(None, "incremental-snapshot-read");
    assert_eq!(e.op, Op::Read);
    assert_eq!(e.source.snapshot.as_deref(), Some("incremental"));
    assert_eq!(e.after, Some(obj(json!({"pk": "1", "value": "New data"}))));
    assert_eq!(e.event_time_ms, Some(1620393591654));
}

// ---- MySQL --------------------------------------------------------------------------

#[test]
fn mysql_create_with_schema() {
    let e = change(Some("mysql-key"), "mysql-create-with-schema");
    assert_eq!(e.op, Op::Create);
    assert_eq!(e.source.connector, Connector::Mysql);
    assert_eq!(e.source.name.as_deref(), Some("mysql-server-1"));
    assert_eq!(e.table_id(), "inventory.customers");
    assert_eq!(
        e.key,
        obj(json!({"id": 1001})),
        "the documented key, as given"
    );
    assert_eq!(e.before, None);
    assert_eq!(e.after, Some(customer(1004, "Anne")));
    assert_eq!(e.source.position, binlog(154, 0));
    assert_eq!(e.source.tx_id, None);
    assert_eq!(e.source.ts_ms, Some(0));
    assert_eq!(e.event_time_ms, Some(1465491411815));
}

#[test]
fn mysql_update_and_delete_in_binlog_order() {
    let create = change(Some("mysql-key"), "mysql-create-with-schema");
    let update = change(Some("mysql-key"), "mysql-update");
    assert_eq!(update.op, Op::Update);
    assert_eq!(update.before, Some(customer(1004, "Anne")));
    assert_eq!(update.after, Some(customer(1004, "Anne Marie")));
    assert_eq!(update.source.position, binlog(484, 223344));
    assert_eq!(update.source.ts_ms, Some(1465581029100));

    let delete = change(Some("mysql-key"), "mysql-delete");
    assert_eq!(delete.op, Op::Delete);
    assert_eq!(delete.before, Some(customer(1004, "Anne Marie")));
    assert_eq!(delete.after, None);
    assert_eq!(delete.source.position, binlog(805, 223344));

    use std::cmp::Ordering::Less;
    // The create's server_id is 0 in the example, so it is compared with the update
    // only through a position of the same server.
    assert_eq!(
        update.source.position.cmp_position(&delete.source.position),
        Some(Less)
    );
    assert_eq!(
        create.source.position.cmp_position(&update.source.position),
        None
    );
}

#[test]
fn mysql_truncate() {
    let e = change(None, "mysql-truncate");
    assert_eq!(e.op, Op::Truncate);
    assert_eq!(e.table_id(), "inventory.customers");
    assert!(e.key.is_empty());
    assert_eq!(e.source.position, binlog(484, 223344));
}

#[test]
fn mysql_snapshot_read_without_connector_name() {
    let e = change(Some("mysql-key-tutorial"), "mysql-read-tutorial");
    assert_eq!(e.op, Op::Read);
    assert_eq!(
        e.source.connector,
        Connector::Mysql,
        "inferred from file and pos"
    );
    assert_eq!(e.source.name.as_deref(), Some("dbserver1"));
    assert_eq!(e.table_id(), "inventory.customers");
    assert_eq!(e.key, obj(json!({"id": 1004})));
    assert_eq!(e.after, Some(customer(1004, "Anne")));
    assert_eq!(e.source.position, binlog(154, 0));
    assert_eq!(e.source.snapshot.as_deref(), Some("true"));
}

#[test]
fn mysql_transaction_markers() {
    let begin = marker("mysql-transaction-begin");
    assert_eq!(begin.status, TransactionStatus::Begin);
    assert_eq!(begin.id, "0e4d5dcd-a33b-11ea-80f1-02010a22a99e:10");
    let end = marker("mysql-transaction-end");
    assert_eq!(end.status, TransactionStatus::End);
    assert_eq!(end.id, begin.id);
    assert_eq!(end.event_count, Some(2));
    assert_eq!(
        end.data_collections,
        vec![("s1.a".into(), 1), ("s2.a".into(), 1)]
    );
}

// ---- MongoDB ------------------------------------------------------------------------

#[test]
fn mongodb_create_with_schema() {
    let e = change(Some("mongodb-key"), "mongodb-create-with-schema");
    assert_eq!(e.op, Op::Create);
    assert_eq!(e.source.connector, Connector::Mongodb);
    assert_eq!(e.source.name.as_deref(), Some("fulfillment"));
    assert_eq!(e.table_id(), "inventory.customers");
    assert_eq!(
        e.key,
        obj(json!({"id": 1004})),
        "the key's extended-JSON id is parsed"
    );
    assert_eq!(
        e.after,
        Some(mongo_customer("Anne")),
        "the after string is parsed"
    );
    assert_eq!(e.source.position, oplog(31, Some(1546547425148721999)));
    assert_eq!(e.source.ts_ms, Some(1558965508000));
    assert_eq!(e.event_time_ms, Some(1558965515240));
}

#[test]
fn mongodb_update_with_update_description() {
    let e = change(None, "mongodb-update");
    assert_eq!(e.op, Op::Update);
    assert_eq!(
        e.key,
        obj(json!({"id": 1004})),
        "derived from the document's _id"
    );
    assert_eq!(e.before, Some(mongo_customer("unknown")));
    assert_eq!(e.after, Some(mongo_customer("Anne Marie")));
    assert_eq!(e.patch, Some(obj(json!({"first_name": "Anne Marie"}))));
    assert!(e.removed_fields.is_empty());
    assert_eq!(e.source.position, oplog(1, None));
    assert_eq!(e.source.tx_id.as_deref(), Some("1"));
    // With the record key the key is the same.
    let keyed = change(Some("mongodb-key"), "mongodb-update");
    assert_eq!(keyed.key_string(), e.key_string());
}

#[test]
fn mongodb_delete() {
    let e = change(Some("mongodb-key"), "mongodb-delete");
    assert_eq!(e.op, Op::Delete);
    assert_eq!(e.key, obj(json!({"id": 1004})));
    assert_eq!(e.before, Some(mongo_customer("Anne Marie")));
    assert_eq!(e.after, None);
    assert_eq!(e.source.position, oplog(6, Some(1546547425148721999)));
    assert_eq!(e.source.snapshot.as_deref(), Some("true"));
}

#[test]
fn mongodb_legacy_patch_and_filter() {
    let update = change(None, "mongodb-legacy-update-patch");
    assert_eq!(update.op, Op::Update);
    assert_eq!(update.after, None);
    assert_eq!(update.patch, Some(obj(json!({"first_name": "Anne Marie"}))));
    assert_eq!(
        update.key,
        obj(json!({"id": 1004})),
        "derived from the filter"
    );
    assert_eq!(update.source.position, oplog(6, Some(1546547425148721999)));

    let delete = change(None, "mongodb-legacy-delete-filter");
    assert_eq!(delete.op, Op::Delete);
    assert_eq!(delete.key, obj(json!({"id": 1004})));
    assert_eq!((delete.before, delete.after), (None, None));
}

#[test]
fn mongodb_transaction_markers() {
    let begin = marker("mongodb-transaction-begin");
    assert_eq!(begin.status, TransactionStatus::Begin);
    assert_eq!(begin.id, "1462833718356672513");
    assert_eq!(begin.ts_ms, None);
    let end = marker("mongodb-transaction-end");
    assert_eq!(end.event_count, Some(2));
    assert_eq!(
        end.data_collections,
        vec![
            ("rs0.testDB.collectiona".into(), 1),
            ("rs0.testDB.collectionb".into(), 1)
        ]
    );
}

#[test]
fn every_fixture_parses() {
    let dir = format!("{}/tests/fixtures/debezium", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).expect("read");
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            // Key fixtures alone are tombstones.
            let (key, value) = if name.contains("-key") {
                (Some(&bytes[..]), None)
            } else {
                (None, Some(&bytes[..]))
            };
            parse_debezium(key, value).unwrap_or_else(|e| panic!("{name}: {e}"));
            count += 1;
        }
    }
    assert!(count >= 28, "only {count} fixtures");
}

// ---- numbers ------------------------------------------------------------------------

#[test]
fn numbers_as_strings_and_large_integers() {
    let v = json!({
        "op": "u",
        "ts_ms": "1465584025523",
        "after": {"id": 18446744073709551615_u64, "small": -9223372036854775808_i64, "s": "154"},
        "source": {"connector": "postgresql", "lsn": "18446744073709551615", "txId": "556",
                   "sequence": "[null,\"33227720\"]", "db": "d", "table": "t"}
    });
    let Parsed::Change(e) =
        parse_debezium_value(&v, Some(&json!({"id": 18446744073709551615_u64}))).expect("parses")
    else {
        panic!("not a change")
    };
    assert_eq!(e.source.position, pg_position(u64::MAX, Some(556), None));
    assert_eq!(e.event_time_ms, Some(1465584025523));
    let after = e.after.clone().expect("after");
    assert_eq!(after["id"].as_u64(), Some(u64::MAX));
    assert_eq!(after["small"].as_i64(), Some(i64::MIN));
    assert_eq!(after["s"], json!("154"), "column values stay as given");
    assert_eq!(e.key_string(), r#"{"id":18446744073709551615}"#);

    let mysql = json!({"op": "c", "after": {}, "source": {"connector": "mysql", "file": "b.000010", "pos": "154", "row": "2"}});
    let Ok(Parsed::Change(e)) = parse_debezium_value(&mysql, None) else {
        panic!()
    };
    assert_eq!(
        e.source.position,
        SourcePosition::MysqlBinlog {
            file: "b.000010".into(),
            pos: 154,
            row: 2,
            gtid: None,
            server_id: None
        }
    );
    let earlier = SourcePosition::MysqlBinlog {
        file: "b.000009".into(),
        pos: 900,
        row: 0,
        gtid: None,
        server_id: None,
    };
    assert_eq!(
        earlier.cmp_position(&e.source.position),
        Some(std::cmp::Ordering::Less)
    );
}

#[test]
fn key_string_is_sorted_and_deterministic() {
    let mut e = change(Some("postgresql-key"), "postgresql-create-with-schema");
    e.key = obj(json!({"z": 1, "a": {"y": [1, "x"], "b": null}}));
    assert_eq!(e.key_string(), r#"{"a":{"b":null,"y":[1,"x"]},"z":1}"#);
}

#[test]
fn change_events_round_trip_through_serde() {
    for (key, value) in [
        (Some("postgresql-key"), "postgresql-create-with-schema"),
        (Some("mysql-key"), "mysql-update"),
        (None, "mongodb-update"),
    ] {
        let e = change(key, value);
        let stored = serde_json::to_string(&e).expect("serialise");
        let back: ChangeEvent = serde_json::from_str(&stored).expect("deserialise");
        assert_eq!(back, e);
    }
}

// ---- malformed input ----------------------------------------------------------------

fn error(key: Option<&str>, value: &str) -> CdcError {
    let err = parse_debezium(key.map(str::as_bytes), Some(value.as_bytes()))
        .expect_err("must be rejected");
    assert_eq!(err.domain(), ErrorDomain::User);
    err
}

#[test]
fn malformed_json_names_the_part() {
    let err = error(None, r#"{"op": "c""#);
    assert!(matches!(err, CdcError::Json { part: "value", .. }));
    assert!(
        err.to_string().starts_with("value: not valid JSON: EOF"),
        "{err}"
    );
    let err = error(Some("{"), r#"{"op": "c"}"#);
    assert!(err.to_string().starts_with("key: not valid JSON"), "{err}");
}

#[test]
fn malformed_events_say_what_and_where() {
    let src = r#""source": {"connector": "postgresql", "lsn": 1}"#;
    let cases = [
        (format!(r#"{{"schema": null, "payload": {{{src}}}}}"#),
         "payload.op: missing; a change event needs an operation: one of c, u, d, r, t, m"),
        (format!(r#"{{"schema": {{}}, "payload": {{"op": "x", {src}}}}}"#),
         "payload.op: unknown operation 'x'; expected one of c, u, d, r, t, m"),
        (format!(r#"{{"op": "x", {src}}}"#),
         "op: unknown operation 'x'; expected one of c, u, d, r, t, m"),
        (format!(r#"{{"op": 3, {src}}}"#), r#"op: expected a string such as "c", got a number"#),
        (format!(r#"{{"op": "u", "before": {{"id": 1}}, {src}}}"#),
         "after: missing; an update event carries the new row in 'after' (or, for MongoDB, the changed fields in 'updateDescription' or 'patch')"),
        (format!(r#"{{"op": "c", {src}}}"#), "after: missing; a create event carries the new row in 'after'"),
        (r#"{"op": "c", "after": {}, "source": "pg"}"#.to_owned(), "source: expected an object, got a string"),
        (r#"{"op": "c", "after": {}}"#.to_owned(), "source: missing; a Debezium change event names its source database and table"),
        (r#"{"op": "c", "after": [1], "source": {}}"#.to_owned(), "after: expected an object, got an array"),
        (r#"{"op": "c", "after": "{not json", "source": {}}"#.to_owned(),
         "after: the string is not valid JSON: key must be a string at line 1 column 2"),
        (r#"{"op": "d", "source": {"connector": "postgresql", "lsn": "0x10"}}"#.to_owned(),
         r#"source.lsn: expected a non-negative integer (number or string), got "0x10""#),
        (r#"{"op": "d", "source": {"connector": "mysql", "file": "f", "pos": -1}}"#.to_owned(),
         "source.pos: expected a non-negative integer (number or string), got -1"),
        (r#"{"op": "d", "source": {"lsn": 1, "sequence": "[\"1\",\"x\"]"}}"#.to_owned(),
         r#"source.sequence: expected a JSON array of two LSNs such as ["24023119","24023128"]: an LSN is not an unsigned integer"#),
        (r#"{"op": "d", "source": {"snapshot": 1}}"#.to_owned(), "source.snapshot: expected a boolean or a string, got 1"),
        (r#"{"status": "MAYBE", "id": "1"}"#.to_owned(), r#"status: a transaction marker's status is BEGIN or END, got "MAYBE""#),
        (r#"{"status": "END"}"#.to_owned(), "id: missing; a transaction marker needs the transaction id"),
        (r#"{"status": "END", "id": "1", "data_collections": [{"data_collection": "a"}]}"#.to_owned(),
         "data_collections[0].event_count: missing"),
        ("[1, 2]".to_owned(), "$: expected a JSON object, got an array"),
        ("null".to_owned(), "$: the value is null and there is no key: neither a change nor a tombstone"),
        (r#"{"schema": {}, "payload": null}"#.to_owned(),
         "payload: the value is null and there is no key: neither a change nor a tombstone"),
    ];
    for (value, expected) in cases {
        let err = error(None, &value);
        assert_eq!(err.to_string(), expected, "for {value}");
    }
    let err = error(Some("[1]"), "null");
    assert_eq!(
        err.to_string(),
        "key: expected a JSON object of key columns, got an array"
    );
    assert_eq!(err.path(), "key");
    let err = error(Some(r#"{"schema": {}, "payload": 5}"#), "null");
    assert_eq!(
        err.to_string(),
        "key.payload: expected a JSON object of key columns, got a number"
    );
    assert!(parse_debezium(None, None).is_err());
}
