//! Exactly-once from a real PostgreSQL to profiles: ≥ 10,000 mixed changes on three
//! tables while `tidewater run` is killed with SIGKILL at random moments and restarted.
//! At the end every stored profile equals a from-scratch computation over the final
//! tables, nothing is lost or doubled, and the replication slot has advanced to the end.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use support::*;
use tidewater_profiles::{Profile, ProfilesConfig, RecordId, StoredRow};

const KILLS: usize = 6;
const TRANSACTIONS: usize = 110;
const CHANGES_PER_TRANSACTION: usize = 100;

const PROFILES: &str = r#"
[profiles]
[[profiles.tables]]
table = "postgres.crm.customers"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "city"]
priority = 10
[[profiles.tables]]
table = "postgres.loyalty.members"
identifiers = [
  { column = "email", namespace = "email", normaliser = "email" },
  { column = "card", namespace = "loyalty_id", normaliser = "exact" },
]
attributes = ["tier"]
[[profiles.tables]]
table = "postgres.bookings.bookings"
child = { link = { column = "customer_email", namespace = "email", normaliser = "email" }, aggregates = [
  { name = "bookings", kind = "count" }, { name = "booked_total", kind = { sum = { column = "amount" } } },
] }
"#;

/// One random transaction of `n` changes over small key and email ranges, so rows are
/// updated and deleted often and customers merge and split.
fn transaction(rng: &mut impl Rng, n: usize) -> String {
    let email = |rng: &mut dyn rand::RngCore| {
        let i = rng.random_range(0..40);
        if rng.random_range(0..4) == 0 {
            format!("' User{i}@Example.com '")
        } else {
            format!("'user{i}@example.com'")
        }
    };
    let mut sql = String::from("BEGIN;");
    for _ in 0..n {
        let id = rng.random_range(0..120);
        let stmt = match rng.random_range(0..9) {
            0..=2 => format!(
                "INSERT INTO crm.customers VALUES ({id}, 'name{}', {}, 'city{}') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, city = EXCLUDED.city;",
                rng.random_range(0..1000), email(rng), rng.random_range(0..20)
            ),
            3 => format!(
                "INSERT INTO loyalty.members VALUES ({id}, {}, 'card{}', 'tier{}') ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, card = EXCLUDED.card, tier = EXCLUDED.tier;",
                email(rng), rng.random_range(0..30), rng.random_range(0..3)
            ),
            4..=5 => format!(
                "INSERT INTO bookings.bookings VALUES ({id}, {}, {}) ON CONFLICT (id) DO UPDATE SET customer_email = EXCLUDED.customer_email, amount = EXCLUDED.amount;",
                email(rng), rng.random_range(1..500)
            ),
            6 => format!("DELETE FROM crm.customers WHERE id = {id};"),
            7 => format!("DELETE FROM loyalty.members WHERE id = {id};"),
            _ => format!("DELETE FROM bookings.bookings WHERE id = {id};"),
        };
        sql.push_str(&stmt);
    }
    sql.push_str("COMMIT;");
    sql
}

/// Final rows as the profiles pipeline keys them.
fn final_rows(pg: &Pg) -> BTreeMap<RecordId, StoredRow> {
    let mut rows = BTreeMap::new();
    for table in ["crm.customers", "loyalty.members", "bookings.bookings"] {
        for line in pg
            .sql(&format!("SELECT row_to_json(t) FROM {table} t"))
            .lines()
        {
            let after: Map<String, Value> = serde_json::from_str(line).unwrap();
            let key = format!("{{\"id\":{}}}", after["id"]);
            rows.insert(
                RecordId::new(format!("postgres.{table}"), key),
                StoredRow {
                    after,
                    event_time_ms: 0,
                },
            );
        }
    }
    rows
}

/// What must match, with customer ids and event times left out (they depend on history).
fn comparable(profiles: Vec<Profile>) -> BTreeMap<Vec<String>, Value> {
    profiles
        .into_iter()
        .map(|p| {
            let mut members: Vec<String> = p.records.iter().map(|r| format!("{}/{}", r.table, r.key)).collect();
            members.sort();
            let identifiers: BTreeSet<String> = p.identifiers.into_iter().collect();
            (members, serde_json::json!({"attributes": p.attributes, "aggregates": p.aggregates, "identifiers": identifiers}))
        })
        .collect()
}

#[test]
fn sigkill_during_10k_changes_neither_loses_nor_doubles_anything() {
    let pg = Arc::new(Pg::start());
    pg.sql(
        "CREATE SCHEMA crm; CREATE SCHEMA loyalty; CREATE SCHEMA bookings;
         CREATE TABLE crm.customers (id int PRIMARY KEY, name text, email text, city text);
         CREATE TABLE loyalty.members (id int PRIMARY KEY, email text, card text, tier text);
         CREATE TABLE bookings.bookings (id int PRIMARY KEY, customer_email text, amount int);",
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::rng().random());
    // Rows before Tidewater starts, so the snapshot is part of the run too.
    for _ in 0..5 {
        pg.sql(&transaction(&mut rng, CHANGES_PER_TRANSACTION));
    }
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let config = dir.path().join("tidewater.toml");
    let source = format!(
        "\n[[sources.postgres]]\ndsn = \"{}\"\nslot = \"crash_test\"\ntables = [\"crm.customers\", \"loyalty.members\", \"bookings.bookings\"]\npoll_interval = \"20ms\"\nbatch_size = 300\n",
        pg.dsn
    );
    std::fs::write(&config, format!("{PROFILES}{source}")).unwrap();
    let config = config.to_string_lossy().into_owned();
    let data = dir.path().join("data");
    let extra = ["--config", config.as_str()];

    // The driver commits the changes while the main thread kills and restarts Tidewater.
    let done = Arc::new(AtomicBool::new(false));
    let driver = {
        let (pg, done) = (Arc::clone(&pg), Arc::clone(&done));
        let mut rng = rand::rngs::StdRng::seed_from_u64(rng.random());
        std::thread::spawn(move || {
            for _ in 0..TRANSACTIONS {
                pg.sql(&transaction(&mut rng, CHANGES_PER_TRANSACTION));
                std::thread::sleep(Duration::from_millis(rng.random_range(20..120)));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut kills = 0;
    while kills < KILLS || !done.load(Ordering::SeqCst) {
        let tw = Tidewater::start(&docs, &data, &extra);
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2500)));
        if kills < KILLS {
            tw.kill();
            kills += 1;
        } else {
            tw.terminate();
        }
    }
    driver.join().unwrap();
    let end_lsn = pg.sql("SELECT pg_current_wal_lsn()").trim().to_owned();

    // Final run: wait until the slot has delivered everything and the pipeline consumed it.
    let mut tw = Tidewater::start(&docs, &data, &extra);
    tw.wait_ready(Duration::from_secs(120));
    eventually(
        Duration::from_secs(120),
        "slot delivered and advanced past the last change",
        || {
            pg.sql(&format!(
            "SELECT confirmed_flush_lsn >= '{end_lsn}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'crash_test'"
        ))
        .trim()
            == "t"
        },
    );
    eventually(
        Duration::from_secs(120),
        "profiles pipeline caught up",
        || {
            let (_, metrics) = tw.request("GET", "/metrics", None);
            let lag: f64 = metrics
                .lines()
                .filter(|l| l.starts_with("tidewater_pipeline_lag_records{pipeline=\"profiles\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            metrics.contains("pipeline=\"profiles\"") && lag == 0.0
        },
    );
    tw.terminate();

    let changes: usize = (5 + TRANSACTIONS) * CHANGES_PER_TRANSACTION;
    assert!(changes >= 10_000);
    let profiles_config: ProfilesConfig = toml_profiles();
    let mut rows = final_rows(&pg);
    let db = redb::Database::open(data.join("profiles/profiles.redb")).unwrap();
    let stored_rows = tidewater_profiles::all_rows(&db).unwrap();
    assert_eq!(
        stored_rows.keys().collect::<BTreeSet<_>>(),
        rows.keys().collect::<BTreeSet<_>>(),
        "the rows Tidewater holds differ from the final tables"
    );
    for (record, row) in &mut rows {
        assert_eq!(&stored_rows[record].after, &row.after, "{record}");
        // "Latest event time wins" needs each row's commit time, which the tables do not
        // carry: take it from the change that wrote the row.
        row.event_time_ms = stored_rows[record].event_time_ms;
    }
    let want = comparable(tidewater_profiles::compute_profiles(&profiles_config, &rows).unwrap());
    let stored = tidewater_profiles::all_profiles(&db).unwrap();
    // Every profile change reached the profiles topic despite the kills: the latest
    // record per customer is its stored profile, or a removal.
    let published = latest_per_key(&data, "profiles");
    for profile in &stored {
        let id = profile.customer_id.to_string();
        assert_eq!(
            published.get(&id),
            Some(&serde_json::to_value(profile).unwrap()),
            "{id}"
        );
    }
    let live: BTreeSet<String> = stored.iter().map(|p| p.customer_id.to_string()).collect();
    for (id, value) in &published {
        assert!(
            live.contains(id) || value["removed"] == true,
            "{id} published but neither live nor removed: {value}"
        );
    }
    let got = comparable(stored);
    assert_eq!(got.len(), want.len(), "number of customers");
    assert_eq!(
        got, want,
        "profiles differ from a from-scratch computation over the final tables"
    );
}

fn toml_profiles() -> ProfilesConfig {
    tidewater_config::Config::parse(PROFILES, "profiles")
        .unwrap()
        .profiles
        .unwrap()
}
