//! The PostgreSQL source against a real PostgreSQL 15 with wal2json, started for each
//! test by `scripts/postgres.sh` in a temporary folder on a free port. A machine where
//! the cluster cannot be started fails these tests with the script's output.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tidewater_cdc::postgres::PostgresError;
use tidewater_cdc::{ChangeEvent, Op, PostgresConfig, PostgresSource, SourcePosition};
use tidewater_core::ErrorDomain;
use tidewater_core::{EventWriter, WriteError};
use tokio_postgres::{Client, NoTls};

/// A running throw-away cluster, stopped when dropped (also when a test panics).
struct Pg {
    dir: tempfile::TempDir,
    dsn: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local address").port()
}

impl Pg {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let port = free_port().to_string();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .arg(&port)
            .args(extra)
            .output()
            .expect("running scripts/postgres.sh");
        assert!(
            out.status.success(),
            "scripts/postgres.sh could not start PostgreSQL ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let dsn = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Self { dir, dsn }
    }

    async fn client(&self) -> Client {
        connect(&self.dsn).await
    }

    fn state(&self) -> PathBuf {
        // The cluster's folder belongs to the postgres user; the progress file lives beside it.
        self.dir.path().with_extension("progress.json")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
        let _ = std::fs::remove_file(self.state());
    }
}

async fn connect(dsn: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(dsn, NoTls)
        .await
        .expect("connecting to the test cluster");
    tokio::spawn(conn);
    client
}

/// Keeps everything it is sent; fails while `fail` is set.
#[derive(Default)]
struct MemSink {
    events: Mutex<Vec<ChangeEvent>>,
    fail: AtomicBool,
}

impl EventWriter<ChangeEvent> for MemSink {
    fn write(&self, events: Vec<ChangeEvent>) -> Result<(), WriteError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(WriteError::msg("the log is unavailable"));
        }
        self.events.lock().unwrap().extend(events);
        Ok(())
    }
}

impl MemSink {
    fn take(&self) -> Vec<ChangeEvent> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

type Rows = HashMap<(String, String), Map<String, Value>>;

/// The tables' contents as the events describe them: snapshot reads, creates and updates
/// upsert, deletes remove, truncates clear the table.
fn rebuild(events: &[ChangeEvent]) -> Rows {
    let mut rows = Rows::new();
    for e in events {
        let table = e.table_id();
        match e.op {
            Op::Read | Op::Create | Op::Update => {
                rows.insert(
                    (table, e.key_string()),
                    e.after.clone().expect("after image"),
                );
            }
            Op::Delete => {
                rows.remove(&(table, e.key_string()));
            }
            Op::Truncate => rows.retain(|(t, _), _| *t != table),
            other => panic!("unexpected op {other:?}"),
        }
    }
    rows
}

/// The tables' contents by `row_to_json`, keyed like the events (key column `id`).
async fn actual(client: &Client, tables: &[&str]) -> Rows {
    let mut rows = Rows::new();
    for t in tables {
        for r in client
            .query(&format!("SELECT row_to_json(x)::text FROM {t} x"), &[])
            .await
            .unwrap()
        {
            let v: Map<String, Value> = serde_json::from_str(&r.get::<_, String>(0)).unwrap();
            let key = format!("{{\"id\":{}}}", v["id"]);
            rows.insert((format!("postgres.public.{t}"), key), v);
        }
    }
    rows
}

async fn lsn_of(client: &Client, sql: &str) -> u64 {
    let s: String = client.query_one(sql, &[]).await.unwrap().get(0);
    let (hi, lo) = s.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

async fn confirmed(client: &Client, slot: &str) -> u64 {
    lsn_of(
        client,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = '{slot}'"
        ),
    )
    .await
}

/// Polls until the slot's confirmed position reaches the WAL flushed now.
async fn drain(src: &PostgresSource, sink: &MemSink, client: &Client, slot: &str) {
    let target = lsn_of(client, "SELECT pg_current_wal_flush_lsn()::text").await;
    for _ in 0..10_000 {
        src.poll_once(sink).await.expect("a streaming round");
        if confirmed(client, slot).await >= target {
            return;
        }
    }
    panic!("the source did not catch up");
}

fn config(pg: &Pg, tables: &[&str], batch_size: usize) -> PostgresConfig {
    let mut c = PostgresConfig::new(
        pg.dsn.clone(),
        tables.iter().map(|t| (*t).to_owned()).collect(),
    );
    c.batch_size = batch_size;
    c.poll_interval = Duration::from_millis(20);
    c
}

/// Streamed events in LSN order per key, and at most one event per (key, transaction),
/// except for a key change which deletes and creates different keys.
fn assert_streamed_order_and_unique(events: &[ChangeEvent]) {
    let mut last: HashMap<(String, String), u64> = HashMap::new();
    let mut seen = HashSet::new();
    for e in events
        .iter()
        .filter(|e| e.op != Op::Read && e.op != Op::Truncate)
    {
        let SourcePosition::PostgresLsn { lsn, tx_id, .. } = e.source.position else {
            panic!("not an LSN position: {e:?}");
        };
        let k = (e.table_id(), e.key_string());
        if let Some(prev) = last.insert(k.clone(), lsn) {
            assert!(prev <= lsn, "key {k:?} went back from {prev} to {lsn}");
        }
        assert!(
            seen.insert((k.clone(), tx_id, e.op)),
            "key {k:?} of transaction {tx_id:?} delivered twice"
        );
    }
}

const SCHEMA: &str = "
    CREATE TABLE a (id int PRIMARY KEY, name text, amount numeric(10,2), flag bool, doc jsonb);
    CREATE TABLE b (id bigint PRIMARY KEY, v text NOT NULL);
    INSERT INTO a SELECT g, 'n' || g, g * 1.25, g % 2 = 0, jsonb_build_object('g', g) FROM generate_series(1, 20) g;
    INSERT INTO b SELECT g, 'v' || g FROM generate_series(1, 10) g;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_rebuilds_the_tables() {
    let pg = Pg::start(&[]);
    let db = pg.client().await;
    db.batch_execute(SCHEMA).await.unwrap();
    let src = PostgresSource::new(config(&pg, &["public.a", "public.b"], 7), pg.state()).unwrap();
    let sink = MemSink::default();
    assert_eq!(
        src.poll_once(&sink).await.unwrap(),
        30,
        "the snapshot reads every row"
    );
    db.batch_execute(
        "INSERT INTO a VALUES (100, 'new', 9.99, true, '{\"x\": [1, 2]}');
         UPDATE a SET name = 'changed', doc = NULL WHERE id <= 5;
         DELETE FROM a WHERE id BETWEEN 6 AND 8;
         BEGIN; UPDATE b SET v = 'tx' WHERE id = 1; DELETE FROM b WHERE id = 2;
                INSERT INTO b VALUES (2, 'again'); COMMIT;
         UPDATE a SET id = 200 WHERE id = 9;
         INSERT INTO b SELECT g, 'bulk' FROM generate_series(11, 40) g;
         UPDATE b SET v = 'x' || id WHERE id > 30;",
    )
    .await
    .unwrap();
    drain(&src, &sink, &db, "tidewater").await;
    let events = sink.take();
    assert_eq!(rebuild(&events), actual(&db, &["a", "b"]).await);
    assert_streamed_order_and_unique(&events);
    assert!(events
        .iter()
        .any(|e| e.op == Op::Delete && e.key_string() == "{\"id\":9}"));
    let del = events
        .iter()
        .find(|e| e.op == Op::Delete && e.key_string() == "{\"id\":6}")
        .unwrap();
    // Default replica identity: the old row carries the key columns only.
    assert_eq!(
        del.before.as_ref().unwrap().keys().collect::<Vec<_>>(),
        ["id"]
    );
    let ins = events
        .iter()
        .find(|e| e.op == Op::Create && e.key_string() == "{\"id\":100}");
    let ins = ins.unwrap();
    assert!(ins.source.ts_ms.is_some() && ins.source.tx_id.is_some());
    assert_eq!(ins.source.snapshot.as_deref(), Some("false"));

    // A truncate clears the table in the rebuilt state too.
    db.batch_execute("TRUNCATE b").await.unwrap();
    drain(&src, &sink, &db, "tidewater").await;
    let more = sink.take();
    assert!(more.iter().any(|e| e.op == Op::Truncate));
    let all: Vec<_> = events.into_iter().chain(more).collect();
    assert_eq!(rebuild(&all), actual(&db, &["a", "b"]).await);
    assert!(src.slot_lag_bytes().await.unwrap() < 1 << 20);
}

/// Writes to `big` in short transactions until stopped; returns how many committed.
async fn writer(dsn: String, stop: Arc<AtomicBool>, rows: i64) -> usize {
    let db = connect(&dsn).await;
    let mut x: i64 = 12345;
    let mut next_id = rows + 1;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        x = (x * 1_103_515_245 + 12_345) % 2_147_483_648;
        let id = x % rows + 1;
        let sql = match n % 4 {
            0 => format!("UPDATE big SET v = v + 1, ver = txid_current() WHERE id = {id}"),
            1 => {
                next_id += 1;
                format!("INSERT INTO big VALUES ({next_id}, 0, txid_current())")
            }
            2 => format!("DELETE FROM big WHERE id = {id}"),
            _ => format!(
                "BEGIN; UPDATE big SET v = v + 10, ver = txid_current() WHERE id = {id};
                 INSERT INTO big VALUES ({}, 1, txid_current()) ON CONFLICT (id) DO UPDATE SET v = 7, ver = txid_current(); COMMIT",
                id + 1
            ),
        };
        db.batch_execute(&sql).await.unwrap();
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_the_snapshot_are_neither_lost_nor_doubled() {
    let pg = Pg::start(&[]);
    let db = pg.client().await;
    let rows = 50_000;
    db.batch_execute(&format!(
        "CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, ver bigint NOT NULL);
         INSERT INTO big SELECT g, 0, 0 FROM generate_series(1, {rows}) g;"
    ))
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(pg.dsn.clone(), stop.clone(), rows));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let src = PostgresSource::new(config(&pg, &["public.big"], 500), pg.state()).unwrap();
    let sink = MemSink::default();
    let read = src.poll_once(&sink).await.unwrap();
    assert!(read > 40_000, "snapshot read {read} rows");
    // Keep writing a little after the snapshot, then let the stream catch up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let written = w.await.unwrap();
    drain(&src, &sink, &db, "tidewater").await;
    let events = sink.take();
    assert_eq!(rebuild(&events), actual(&db, &["big"]).await);
    assert_streamed_order_and_unique(&events);
    // A transaction's write appears at most once: either in the snapshot or streamed.
    let mut versions = HashSet::new();
    for e in &events {
        if let Some(after) = &e.after {
            let ver = after["ver"].as_u64().unwrap();
            if ver != 0 {
                assert!(
                    versions.insert((e.key_string(), ver, e.op == Op::Read)),
                    "write {ver} of {} seen twice",
                    e.key_string()
                );
                let other = (e.key_string(), ver, e.op != Op::Read);
                assert!(
                    !versions.contains(&other),
                    "write {ver} of {} both snapshotted and streamed",
                    e.key_string()
                );
            }
        }
    }
    let streamed = events.iter().filter(|e| e.op != Op::Read).count();
    assert!(
        written > 50 && streamed > 0,
        "{written} transactions written, {streamed} events streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_source_continues_without_loss_or_duplicates() {
    let pg = Pg::start(&[]);
    let db = pg.client().await;
    db.batch_execute(SCHEMA).await.unwrap();
    let sink = Arc::new(MemSink::default());
    {
        let src = Arc::new(
            PostgresSource::new(config(&pg, &["public.a", "public.b"], 5), pg.state()).unwrap(),
        );
        assert_eq!(src.poll_once(&*sink).await.unwrap(), 30, "the snapshot");
        let (tx, rx) = tokio::sync::watch::channel(false);
        let task = {
            let (src, sink) = (src.clone(), sink.clone());
            tokio::spawn(async move { src.run(&*sink, rx).await })
        };
        for i in 0..40 {
            db.batch_execute(&format!(
                "INSERT INTO b VALUES ({}, 'r'); UPDATE a SET amount = amount + 1 WHERE id = {}",
                1000 + i,
                i % 20 + 1
            ))
            .await
            .unwrap();
        }
        // Stop while changes are still waiting in the slot.
        tx.send(true).unwrap();
        task.await.unwrap().unwrap();
    }
    let before_restart = confirmed(&db, "tidewater").await;
    db.batch_execute("DELETE FROM b WHERE id > 1030; UPDATE a SET flag = NOT flag")
        .await
        .unwrap();
    let src = PostgresSource::new(config(&pg, &["public.a", "public.b"], 5), pg.state()).unwrap();
    drain(&src, &sink, &db, "tidewater").await;
    let events = sink.take();
    assert_eq!(
        events.iter().filter(|e| e.op == Op::Read).count(),
        30,
        "one snapshot only"
    );
    assert_eq!(rebuild(&events), actual(&db, &["a", "b"]).await);
    assert_streamed_order_and_unique(&events);
    let end = lsn_of(&db, "SELECT pg_current_wal_flush_lsn()::text").await;
    src.poll_once(&*sink).await.unwrap();
    let after = confirmed(&db, "tidewater").await;
    assert!(
        after > before_restart && after >= end,
        "confirmed {after:X}, end {end:X}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_keeps_the_slot_and_gets_the_events_again() {
    let pg = Pg::start(&[]);
    let db = pg.client().await;
    db.batch_execute(SCHEMA).await.unwrap();
    let src = PostgresSource::new(config(&pg, &["public.a", "public.b"], 100), pg.state()).unwrap();
    let sink = MemSink::default();
    src.poll_once(&sink).await.unwrap();
    drain(&src, &sink, &db, "tidewater").await;
    let mut events = sink.take();
    let slot_before = confirmed(&db, "tidewater").await;
    let state_before = std::fs::read(pg.state()).unwrap();
    db.batch_execute("UPDATE a SET name = 'f' WHERE id < 4; DELETE FROM b WHERE id = 3")
        .await
        .unwrap();
    sink.fail.store(true, Ordering::SeqCst);
    let err = src.poll_once(&sink).await.unwrap_err();
    assert!(matches!(err, PostgresError::Sink(_)), "{err}");
    assert_eq!(err.domain(), ErrorDomain::External);
    assert_eq!(
        confirmed(&db, "tidewater").await,
        slot_before,
        "slot not advanced"
    );
    assert_eq!(
        std::fs::read(pg.state()).unwrap(),
        state_before,
        "progress not recorded"
    );
    assert!(src.slot_lag_bytes().await.unwrap() > 0);
    sink.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        src.poll_once(&sink).await.unwrap(),
        4,
        "the same changes again"
    );
    events.extend(sink.take());
    assert_eq!(rebuild(&events), actual(&db, &["a", "b"]).await);
    assert!(confirmed(&db, "tidewater").await > slot_before);
}

async fn start_error(pg: &Pg, dsn: Option<&str>, tables: &[&str]) -> PostgresError {
    let mut c = config(pg, tables, 10);
    if let Some(d) = dsn {
        c.dsn = d.to_owned();
    }
    let src = PostgresSource::new(c, pg.state()).unwrap();
    src.poll_once(&MemSink::default()).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_errors_say_what_to_run() {
    let pg = Pg::start(&[]);
    let db = pg.client().await;
    db.batch_execute(
        "CREATE TABLE keyless (v text); CREATE TABLE nothing (id int PRIMARY KEY);
         ALTER TABLE nothing REPLICA IDENTITY NOTHING;
         CREATE TABLE full_ident (v text); ALTER TABLE full_ident REPLICA IDENTITY FULL;
         CREATE ROLE plain LOGIN;",
    )
    .await
    .unwrap();

    let e = start_error(&pg, None, &["public.keyless"]).await;
    assert!(matches!(e, PostgresError::NoReplicaIdentity { .. }), "{e}");
    assert!(e.to_string().contains("REPLICA IDENTITY FULL"), "{e}");
    assert_eq!(e.domain(), ErrorDomain::User);
    let e = start_error(&pg, None, &["public.nothing"]).await;
    assert!(e.to_string().contains("REPLICA IDENTITY NOTHING"), "{e}");
    let e = start_error(&pg, None, &["public.missing"]).await;
    assert!(matches!(e, PostgresError::TableMissing { .. }), "{e}");
    assert!(e.to_string().contains("public.missing"), "{e}");
    let plain = format!("{} user=plain", pg.dsn.replace("user=postgres", ""));
    let e = start_error(&pg, Some(&plain), &["public.full_ident"]).await;
    assert!(
        e.to_string()
            .contains("ALTER ROLE \"plain\" WITH REPLICATION"),
        "{e}"
    );
    // REPLICA IDENTITY FULL without a key is usable: the whole row is the key.
    let src = PostgresSource::new(config(&pg, &["public.full_ident"], 10), pg.state()).unwrap();
    src.poll_once(&MemSink::default()).await.unwrap();

    let replica = Pg::start(&["-c", "wal_level=replica"]);
    let e = start_error(&replica, None, &["public.a"]).await;
    assert!(matches!(e, PostgresError::WalLevel { .. }), "{e}");
    assert!(e.to_string().contains("set wal_level = logical"), "{e}");
}
