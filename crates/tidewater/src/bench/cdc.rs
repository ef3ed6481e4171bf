//! `tidewater bench cdc`: commit-to-profile-visible latency of PostgreSQL changes at a
//! steady change rate, and the highest change rate the profiles pipeline keeps up with.
//!
//! Needs a PostgreSQL with wal2json and `wal_level = logical` (`scripts/postgres.sh
//! start DIR PORT` prints a DSN). The benchmark creates its own schema `bench_cdc`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use tidewater_runtime::App;

/// Options of `bench cdc`.
#[derive(clap::Args)]
pub struct Args {
    /// libpq connection string of a PostgreSQL with logical decoding (superuser or REPLICATION).
    #[arg(long)]
    dsn: String,
    /// Background change rate (changes per second) during the latency measurement.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency measurement.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Rates tried for the sustained-throughput measurement (changes per second).
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,4000,8000")]
    ramp: Vec<u64>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const CUSTOMERS: i64 = 2000;

const PROFILES: &str = r#"
[profiles]
[[profiles.tables]]
table = "{db}.bench_cdc.customers"
identifiers = [{ column = "email", namespace = "email", normaliser = "email" }]
attributes = ["name", "city"]
[[profiles.tables]]
table = "{db}.bench_cdc.bookings"
child = { link = { column = "customer_email", namespace = "email", normaliser = "email" }, aggregates = [
  { name = "bookings", kind = "count" }, { name = "booked_total", kind = { sum = { column = "amount" } } },
] }
"#;

async fn connect(dsn: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

/// Commits `rate` changes per second for `seconds` in batches every 10 ms: booking
/// inserts and updates spread over all customers.
async fn load(client: &Client, rate: u64, seconds: f64, seed: &mut u64) -> Result<u64> {
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        if due > sent {
            let n = (due - sent).min(2000);
            let mut sql = String::from("BEGIN;");
            for _ in 0..n {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let customer = (*seed >> 33) as i64 % CUSTOMERS;
                let booking = (*seed >> 20) as i64 % 50_000;
                sql.push_str(&format!(
                    "INSERT INTO bench_cdc.bookings VALUES ({booking}, 'c{customer}@example.com', {}) \
                     ON CONFLICT (id) DO UPDATE SET customer_email = EXCLUDED.customer_email, amount = EXCLUDED.amount;",
                    (*seed >> 50) % 500
                ));
            }
            sql.push_str("COMMIT;");
            client.batch_execute(&sql).await?;
            sent += n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(sent)
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = runtime.block_on(connect(&args.dsn))?;
    let db: String = runtime
        .block_on(client.query_one("SELECT current_database()", &[]))?
        .get(0);
    runtime.block_on(client.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS bench_cdc CASCADE; CREATE SCHEMA bench_cdc;
         CREATE TABLE bench_cdc.customers (id int PRIMARY KEY, name text, email text, city text);
         CREATE TABLE bench_cdc.bookings (id int PRIMARY KEY, customer_email text, amount int);
         INSERT INTO bench_cdc.customers SELECT i, 'name' || i, 'c' || i || '@example.com', 'city' FROM generate_series(0, {}) i;
         SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'bench_cdc';",
        CUSTOMERS - 1
    )))?;

    let temp = tempfile::tempdir()?;
    let mut text = PROFILES.replace("{db}", &db);
    text.push_str(&format!(
        "\n[[sources.postgres]]\ndsn = \"{}\"\nslot = \"bench_cdc\"\ntables = [\"bench_cdc.customers\", \"bench_cdc.bookings\"]\npoll_interval = \"10ms\"\n",
        args.dsn.replace('"', "\\\"")
    ));
    let mut config = tidewater_config::Config::parse(&text, "bench")?;
    config.data_dir = temp.path().join("data");
    config.reconcile.on_start = false;
    let app = App::start(config)?;
    let profiles = app
        .profiles
        .clone()
        .context("profiles pipeline not running")?;
    let probe_email = tidewater_profiles::Identifier::parse("email:c0@example.com")?;
    eprintln!("waiting for the snapshot of {CUSTOMERS} customers…");
    let deadline = Instant::now() + Duration::from_secs(120);
    while profiles.by_identifier(&probe_email)?.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the snapshot did not reach the profiles within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Latency: background load at `rate`, and every 100 ms a probe that changes customer
    // 0's city and waits until its profile shows it.
    eprintln!("latency at {} changes/s for {} s…", args.rate, args.seconds);
    let probe = runtime.block_on(connect(&args.dsn))?;
    let mut seed = 42u64;
    let background = {
        let dsn = args.dsn.clone();
        let (rate, seconds) = (args.rate, args.seconds as f64);
        runtime.spawn(async move {
            let client = connect(&dsn).await?;
            let mut seed = 7u64;
            load(&client, rate, seconds, &mut seed).await
        })
    };
    let mut latencies = Vec::new();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        n += 1;
        let city = format!("probe{n}");
        runtime.block_on(probe.execute(
            "UPDATE bench_cdc.customers SET city = $1 WHERE id = 0",
            &[&city],
        ))?;
        let committed = Instant::now();
        loop {
            let seen = profiles
                .by_identifier(&probe_email)?
                .is_some_and(|p| p.attributes.get("city") == Some(&json!(city)));
            if seen {
                latencies.push(committed.elapsed().as_secs_f64());
                break;
            }
            anyhow::ensure!(
                committed.elapsed() < Duration::from_secs(30),
                "probe {n} not visible after 30 s"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let sent = runtime.block_on(background)??;
    let ms = |q: f64| super::shared::quantile(&latencies, q) * 1000.0;
    println!(
        "commit → profile visible, {} probes under {} changes/s ({} background changes)",
        latencies.len(),
        args.rate,
        sent
    );
    println!(
        "p50 {:.0} ms   p95 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        ms(1.0)
    );

    // Sustained rate: 10 s at each rate; sustained if everything committed is in the
    // profiles within 2 s after the load stops.
    let mut ramp = Vec::new();
    for &rate in &args.ramp {
        let loaded = runtime.block_on(load(&probe, rate, 10.0, &mut seed))?;
        let end: String = runtime
            .block_on(probe.query_one("SELECT pg_current_wal_lsn()::text", &[]))?
            .get(0);
        let stopped = Instant::now();
        let caught_up = loop {
            let row = runtime.block_on(probe.query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'bench_cdc'",
                &[&end],
            ))?;
            let delivered: bool = row.get(0);
            if delivered
                && app
                    .metrics
                    .pipeline_lag
                    .members()
                    .iter()
                    .filter(|(l, _)| l[0] == "profiles")
                    .all(|(_, g)| g.get() == 0)
            {
                break Some(stopped.elapsed().as_secs_f64());
            }
            if stopped.elapsed() > Duration::from_secs(60) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let achieved = loaded as f64 / 10.0;
        println!(
            "{rate:>6} changes/s offered, {achieved:>7.0} committed/s: {}",
            caught_up.map_or("not caught up within 60 s".to_owned(), |s| format!(
                "caught up {s:.2} s after the load stopped"
            ))
        );
        ramp.push(json!({"offered_per_second": rate, "committed_per_second": achieved, "catch_up_seconds": caught_up}));
    }
    let sustained = ramp
        .iter()
        .filter(|r| r["catch_up_seconds"].as_f64().is_some_and(|s| s <= 2.0))
        .filter_map(|r| r["committed_per_second"].as_f64())
        .fold(0.0, f64::max);
    println!("highest rate sustained (caught up within 2 s): {sustained:.0} changes/s");
    let result = json!({
        "benchmark": "cdc",
        "latency": {"rate": args.rate, "probes": latencies.len(), "p50_ms": ms(0.5), "p95_ms": ms(0.95), "p99_ms": ms(0.99), "max_ms": ms(1.0)},
        "ramp": ramp,
        "sustained_changes_per_second": sustained,
    });
    super::shared::write_json(args.json.as_ref(), &result)?;
    app.shutdown();
    Ok(())
}
