//! Rows committed in a real PostgreSQL reach merged profiles through `tidewater run`:
//! the initial snapshot, then streamed inserts, updates and deletes.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

fn config(dsn: &str) -> String {
    format!(
        r#"
[profiles]
[[profiles.tables]]
table = "postgres.crm.customers"
identifiers = [{{ column = "email", namespace = "email", normaliser = "email" }}]
attributes = ["name", "city"]
priority = 10
[[profiles.tables]]
table = "postgres.loyalty.members"
identifiers = [{{ column = "email", namespace = "email", normaliser = "email" }}]
attributes = ["tier"]
[[profiles.tables]]
table = "postgres.bookings.bookings"
child = {{ link = {{ column = "customer_email", namespace = "email", normaliser = "email" }}, aggregates = [
  {{ name = "bookings", kind = "count" }}, {{ name = "booked_total", kind = {{ sum = {{ column = "amount" }} }} }},
] }}

[[sources.postgres]]
dsn = "{dsn}"
slot = "tidewater_test"
tables = ["crm.customers", "loyalty.members", "bookings.bookings"]
poll_interval = "50ms"
"#
    )
}

#[test]
fn postgres_rows_become_profiles_from_snapshot_then_stream() {
    let pg = Pg::start();
    pg.sql(
        "CREATE SCHEMA crm; CREATE SCHEMA loyalty; CREATE SCHEMA bookings;
         CREATE TABLE crm.customers (id int PRIMARY KEY, name text, email text, city text);
         CREATE TABLE loyalty.members (id int PRIMARY KEY, email text, tier text);
         CREATE TABLE bookings.bookings (id int PRIMARY KEY, customer_email text, amount int);
         INSERT INTO crm.customers VALUES (1, 'Ana Lima', 'ana@example.com', 'Lisbon');
         INSERT INTO loyalty.members VALUES (7, ' ANA@example.com', 'gold');
         INSERT INTO bookings.bookings VALUES (100, 'ana@example.com', 250);",
    );
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let config_path = dir.path().join("tidewater.toml");
    std::fs::write(&config_path, config(&pg.dsn)).unwrap();
    let config_path = config_path.to_string_lossy().into_owned();
    let mut tw = Tidewater::start(&docs, &dir.path().join("data"), &["--config", &config_path]);
    tw.wait_ready(Duration::from_secs(120));

    let profile = |tw: &Tidewater| tw.json("GET", "/v1/profiles/email:ana@example.com", None);
    eventually(
        Duration::from_secs(30),
        "snapshot merged into one profile",
        || {
            let (status, p) = profile(&tw);
            status == 200
                && p["records"].as_array().map_or(0, Vec::len) == 2
                && p["aggregates"]["bookings"] == 1
        },
    );

    // Streamed changes: a new booking, a move, a deleted booking.
    pg.sql(
        "INSERT INTO bookings.bookings VALUES (101, 'ana@example.com', 100);
         UPDATE crm.customers SET city = 'Porto' WHERE id = 1;
         DELETE FROM bookings.bookings WHERE id = 100;",
    );
    let mut last = Value::Null;
    eventually(
        Duration::from_secs(30),
        "streamed changes reflected",
        || {
            let (_, p) = profile(&tw);
            last = p;
            last["attributes"]["city"] == "Porto"
                && last["aggregates"]["bookings"] == 1
                && last["aggregates"]["booked_total"] == 100
        },
    );
    assert_eq!(last["attributes"]["tier"], "gold", "{last}");
    assert_eq!(last["attributes"]["name"], "Ana Lima", "{last}");

    // The slot's lag is exported, and reaches 0 once everything is delivered.
    eventually(Duration::from_secs(30), "slot caught up", || {
        tw.request("GET", "/metrics", None)
            .1
            .contains("tidewater_cdc_slot_lag_bytes{slot=\"tidewater_test\"} 0")
    });
    tw.terminate();
}
