//! `tidewater bench freshness`: edit files with a unique token and poll `/v1/search` until
//! the token is found; report change-to-searchable latency percentiles.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::Rng;
use serde_json::json;

use tidewater_runtime::App;

/// Options of `bench freshness`.
#[derive(clap::Args)]
pub struct Args {
    /// Number of edits measured.
    #[arg(long, default_value_t = 60)]
    edits: usize,
    /// Size of each edited file in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Number of files in the watched folder.
    #[arg(long, default_value_t = 20)]
    files: usize,
    /// Pause between edits, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pause_ms: u64,
    /// Give up on one edit after this many seconds.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const WORDS: &[&str] = &[
    "harbour",
    "tide",
    "river",
    "delta",
    "estuary",
    "current",
    "basin",
    "channel",
    "shore",
    "inlet",
    "lagoon",
    "marsh",
    "reef",
    "sandbar",
    "wharf",
    "jetty",
    "dock",
    "canal",
    "ferry",
    "lighthouse",
];

/// A ~`size`-byte English-like text carrying `token`.
fn text_with(token: &str, size: usize, rng: &mut impl Rng) -> String {
    let mut text = format!("Status report {token}. ");
    while text.len() < size {
        let w = WORDS[rng.random_range(0..WORDS.len())];
        text.push_str(w);
        text.push(if rng.random_range(0..12) == 0 {
            '.'
        } else {
            ' '
        });
        if text.ends_with('.') {
            text.push(' ');
        }
    }
    text.truncate(size);
    text
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let temp = tempfile::tempdir()?;
    let docs = temp.path().join("docs");
    std::fs::create_dir_all(&docs)?;
    let mut rng = rand::rng();
    for i in 0..args.files {
        std::fs::write(
            docs.join(format!("file-{i:03}.txt")),
            text_with(&format!("initial{i}"), args.size, &mut rng),
        )?;
    }
    let mut config = tidewater_config::Config {
        data_dir: temp.path().join("data"),
        ..Default::default()
    };
    config.sources.files = vec![tidewater_sources::FilesConfig::new(&docs)];
    let app = App::start(config)?;
    anyhow::ensure!(
        app.wait_ready(Duration::from_secs(600)),
        "the initial scan was not indexed within 10 minutes"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app_state = app.api_state();
    let server = runtime.spawn(async move {
        let config = tidewater_config::ServerConfig::default();
        tidewater_server::serve(listener, app_state, &config, async {
            let _ = stop_rx.await;
        })
        .await
    });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/search");
    eprintln!(
        "measuring {} edits of {}-byte files through {url}…",
        args.edits, args.size
    );

    let mut latencies = Vec::with_capacity(args.edits);
    for edit in 0..args.edits {
        let file = format!("file-{:03}.txt", edit % args.files);
        let token = format!("tok{}x{}", edit, rng.random_range(100_000..999_999));
        let body = text_with(&token, args.size, &mut rng);
        std::fs::write(docs.join(&file), body)?;
        let written = Instant::now();
        let request = json!({"query": format!("status report {token}"), "k": 10, "filter": {"doc_id_prefix": file}});
        let found = runtime.block_on(async {
            loop {
                let response = client.post(&url).json(&request).send().await?;
                let value: serde_json::Value = response.json().await?;
                let hit = value["results"].as_array().is_some_and(|r| {
                    r.iter()
                        .any(|h| h["text"].as_str().is_some_and(|t| t.contains(&token)))
                });
                if hit {
                    return anyhow::Ok(true);
                }
                if written.elapsed() > Duration::from_secs(args.timeout_s) {
                    return anyhow::Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })?;
        anyhow::ensure!(
            found,
            "edit {edit} of {file} was not searchable within {} s",
            args.timeout_s
        );
        latencies.push(written.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_millis(args.pause_ms));
    }
    let _ = stop_tx.send(());
    runtime.block_on(server).context("server task")??;

    let ms = |q: f64| super::shared::quantile(&latencies, q) * 1000.0;
    let result = json!({
        "benchmark": "freshness",
        "edits": latencies.len(),
        "file_bytes": args.size,
        "p50_ms": ms(0.50),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": ms(1.0),
        "mean_ms": latencies.iter().sum::<f64>() / latencies.len().max(1) as f64 * 1000.0,
    });
    println!(
        "freshness over {} edits of {}-byte files (file written → found by /v1/search)",
        latencies.len(),
        args.size
    );
    println!(
        "p50 {:.0} ms   p95 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        ms(0.5),
        ms(0.95),
        ms(0.99),
        ms(1.0)
    );
    super::shared::write_json(args.json.as_ref(), &result)?;
    app.shutdown();
    Ok(())
}
