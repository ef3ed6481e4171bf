//! `tidewater bench state`: what keeping the profiles state in PostgreSQL costs. The same
//! backlog of change events (customers in two tables, linked by email) is appended to an
//! embedded log, then the profiles pipeline works it off twice in one run: with its state
//! in a local redb file, and in PostgreSQL (redb on the block backend that members share
//! on Kafka). The clock runs from the pipeline's start to its last commit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use tidewater_engine::{EngineConfig, Lease, Replica};
use tidewater_metrics::Metrics;
use tidewater_pgvector::PgVectorConfig;
use tidewater_profiles::Profiles;

use super::shared::write_json;

/// Options of `bench state`.
#[derive(clap::Args)]
pub struct Args {
    /// libpq connection string of the PostgreSQL that holds the state (the tables get a
    /// prefix of their own and are dropped afterwards).
    #[arg(long)]
    dsn: String,
    /// Customers in the backlog (two change events each).
    #[arg(long, default_value_t = 20_000)]
    customers: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const PROFILES: &str = r#"
[profiles]
topic = "changes"
[[profiles.tables]]
table = "crm.public.customers"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "city"]
[[profiles.tables]]
table = "loyalty.public.members"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "tier"]
"#;

/// A Debezium create of `table` (no schema).
fn created(db: &str, table: &str, row: Value, at: usize) -> Value {
    json!({"payload": {"op": "c", "before": null, "after": row, "ts_ms": 1_700_000_000_000u64 + at as u64,
        "source": {"db": db, "schema": "public", "table": table, "ts_ms": 1_700_000_000_000u64 + at as u64}}})
}

fn backlog(customers: usize) -> Vec<Value> {
    (0..customers)
        .flat_map(|i| {
            let email = format!("c{i}@example.com");
            [
                json!({"key": {"id": i}, "value": created("crm", "customers",
                    json!({"id": i, "name": format!("C{i}"), "email": email, "city": "Lisbon"}), 2 * i)}),
                json!({"key": {"id": i}, "value": created("loyalty", "members",
                    json!({"id": i, "name": format!("C{i}"), "email": email.to_uppercase(), "tier": "gold"}), 2 * i + 1)}),
            ]
        })
        .collect()
}

/// One pass: the seconds to work the backlog off, and the batches committed.
fn pass(args: &Args, shared: Option<&PgVectorConfig>) -> Result<(f64, u64)> {
    let dir = tempfile::tempdir()?;
    let mut config = tidewater_config::Config::parse(PROFILES, "bench")?;
    config.data_dir = dir.path().to_owned();
    let profiles_config = config.profiles.clone().context("the [profiles] section")?;
    let metrics = Arc::new(Metrics::new(&config.health));
    let log = tidewater_log::open_log(&config.log, dir.path(), Arc::clone(&metrics))?;
    let (profiles, replica) = match shared {
        None => (
            Profiles::open(
                &dir.path().join("profiles"),
                profiles_config,
                Arc::clone(&log),
                Arc::clone(&metrics),
            )?,
            None,
        ),
        Some(pg) => {
            let state = tidewater_runtime::PgState::open(pg, "profiles")?;
            let profiles = Profiles::open_shared(
                state,
                profiles_config,
                Arc::clone(&log),
                Arc::clone(&metrics),
            )?;
            let replica = Replica {
                group: "profiles.bench".into(),
                publisher: Lease::sole("profiles"),
            };
            (profiles, Some(replica))
        }
    };
    let events = backlog(args.customers);
    let total = events.len() as u64;
    for chunk in events.chunks(1_000) {
        profiles.ingest(chunk.to_vec())?;
    }
    let consumed = || {
        metrics
            .pipeline_records
            .with(&["profiles", "changes"])
            .get()
    };
    let started = Instant::now();
    profiles.start(EngineConfig::default(), replica)?;
    let deadline = started + Duration::from_secs(1_800);
    while consumed() < total {
        ensure!(
            Instant::now() < deadline,
            "the backlog was not worked off in 30 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let batches = metrics.pipeline_batches.with(&["profiles"]).get();
    let last = tidewater_profiles::Identifier::parse(&format!(
        "email:c{}@example.com",
        args.customers - 1
    ))?;
    let merged = profiles
        .by_identifier(&last)?
        .is_some_and(|p| p.records.len() == 2);
    ensure!(merged, "the last customer's two records are not merged");
    profiles.stop();
    Ok((seconds, batches))
}

/// Drops the tables of `prefix`'s state.
fn drop_tables(dsn: &str, prefix: &str) -> Result<()> {
    let mut client = postgres::Client::connect(dsn, postgres::NoTls)?;
    client.batch_execute(&format!(
        "DROP TABLE IF EXISTS {prefix}_state_blocks, {prefix}_state_stores"
    ))?;
    Ok(())
}

/// Runs the benchmark and prints its table.
pub fn run(args: Args) -> Result<()> {
    let prefix = format!("bench_state_{}", std::process::id());
    let pg = PgVectorConfig {
        table_prefix: prefix.clone(),
        ..PgVectorConfig::new(args.dsn.clone())
    };
    let changes = 2 * args.customers;
    println!(
        "profiles backlog: {} customers, {changes} change events",
        args.customers
    );
    let mut rows = Vec::new();
    let mut local_seconds = None;
    for (name, shared) in [("local redb file", None), ("PostgreSQL", Some(&pg))] {
        let (seconds, batches) = pass(&args, shared)?;
        let base = *local_seconds.get_or_insert(seconds);
        rows.push(
            json!({"state": name, "seconds": seconds, "changes_per_s": changes as f64 / seconds,
            "batches": batches, "ms_per_batch": seconds * 1000.0 / batches.max(1) as f64,
            "relative_time": seconds / base}),
        );
    }
    drop_tables(&args.dsn, &prefix)?;
    println!(
        "{:<18} {:>9} {:>11} {:>8} {:>12} {:>9}",
        "state", "seconds", "changes/s", "batches", "ms/batch", "time ×"
    );
    for row in &rows {
        println!(
            "{:<18} {:>9.1} {:>11.0} {:>8} {:>12.1} {:>9.2}",
            row["state"].as_str().unwrap_or(""),
            row["seconds"].as_f64().unwrap_or(0.0),
            row["changes_per_s"].as_f64().unwrap_or(0.0),
            row["batches"].as_u64().unwrap_or(0),
            row["ms_per_batch"].as_f64().unwrap_or(0.0),
            row["relative_time"].as_f64().unwrap_or(0.0),
        );
    }
    write_json(
        args.json.as_ref(),
        &json!({"customers": args.customers, "changes": changes, "runs": rows}),
    )
}
