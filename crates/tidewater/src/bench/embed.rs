//! `tidewater bench embed`: embedding throughput of the local model for ~250-token chunks
//! and for short queries, in f32 and int8 (and on candle's CPU backend when built with the
//! `candle` feature, for comparison), on texts that the peer script in `bench/` reads too
//! (`--dump-texts`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;
use tidewater_embed::Embedder;

/// Options of `bench embed`.
#[derive(clap::Args)]
pub struct Args {
    /// A SQuAD-format JSON file the texts are taken from.
    #[arg(long, default_value = "../shared/data/squad-v2-dev-subset.json")]
    file: PathBuf,
    /// Number of ~250-token chunks.
    #[arg(long, default_value_t = 128)]
    chunks: usize,
    /// Number of short queries.
    #[arg(long, default_value_t = 512)]
    queries: usize,
    /// Timed repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The model directory (default: the default model's).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// Write the texts used as JSON here (input of `bench/peer.py`).
    #[arg(long)]
    dump_texts: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    let (docs, questions) = super::shared::squad_file::load(&args.file)?;
    let config = tidewater_embed::LocalModelConfig {
        model_dir: args.model_dir.clone(),
        ..Default::default()
    };
    let embedder = tidewater_embed::LocalEmbedder::load(&config)?;
    // Chunks: consecutive paragraph text cut to ~250 model tokens at word boundaries.
    let words: Vec<&str> = docs
        .iter()
        .flat_map(|(_, p)| p.split_whitespace())
        .collect();
    let mut chunks = Vec::with_capacity(args.chunks);
    let mut start = 0;
    while chunks.len() < args.chunks && start < words.len() {
        let mut end = (start + 150).min(words.len());
        while end < words.len() && embedder.count_tokens(&words[start..end].join(" ")) < 250 {
            end += 10.min(words.len() - end);
        }
        chunks.push(words[start..end].join(" "));
        start = end;
    }
    let queries: Vec<String> = questions
        .iter()
        .map(|(q, _)| q.clone())
        .cycle()
        .take(args.queries)
        .collect();
    if let Some(path) = &args.dump_texts {
        super::shared::write_json(Some(path), &json!({"chunks": chunks, "queries": queries}))?;
    }
    let mut engines: Vec<(&str, Box<dyn Embedder>)> = vec![("f32", Box::new(embedder))];
    let int8 = tidewater_embed::LocalModelConfig {
        precision: tidewater_embed::Precision::Int8,
        ..config.clone()
    };
    engines.push((
        "int8",
        Box::new(tidewater_embed::LocalEmbedder::load(&int8)?),
    ));
    // candle's BERT, for comparison; it does not run MPNet.
    #[cfg(feature = "candle")]
    match tidewater_embed::CandleEmbedder::load(&config) {
        Ok(candle) => engines.push(("candle-f32", Box::new(candle))),
        Err(e) => eprintln!("candle left out: {e}"),
    }

    let mut sets = Vec::new();
    for (engine, embedder) in &engines {
        for (name, texts) in [("chunks_250_tokens", &chunks), ("short_queries", &queries)] {
            sets.push(time_set(embedder.as_ref(), engine, name, texts, args.runs)?);
        }
    }
    println!(
        "embedding throughput, model {} (median of {} runs)",
        engines[0].1.model_id(),
        args.runs.max(1)
    );
    println!(
        "{:<11} {:<18} {:>6} {:>9} {:>10} {:>11}",
        "engine", "set", "texts", "mean tok", "texts/s", "tokens/s"
    );
    for s in &sets {
        println!(
            "{:<11} {:<18} {:>6} {:>9.1} {:>10.1} {:>11.0}",
            s["engine"].as_str().unwrap_or(""),
            s["set"].as_str().unwrap_or(""),
            s["texts"],
            s["mean_tokens"].as_f64().unwrap_or(0.0),
            s["texts_per_second"].as_f64().unwrap_or(0.0),
            s["tokens_per_second"].as_f64().unwrap_or(0.0)
        );
    }
    super::shared::write_json(
        args.json.as_ref(),
        &json!({"benchmark": "embed", "model": engines[0].1.model_id(), "sets": sets}),
    )?;
    Ok(())
}

/// Times embedding `texts` as one call, `runs` times after a warm-up.
fn time_set(
    embedder: &dyn Embedder,
    engine: &str,
    name: &str,
    texts: &[String],
    runs: usize,
) -> Result<serde_json::Value> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tokens: usize = refs
        .iter()
        .map(|t| embedder.count_tokens(t).min(embedder.max_tokens()))
        .sum();
    embedder.embed(&refs[..refs.len().min(8)])?; // warm-up
    let mut seconds = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        embedder.embed(&refs)?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    let median = super::shared::quantile(&seconds, 0.5);
    Ok(json!({
        "engine": engine,
        "set": name,
        "texts": refs.len(),
        "tokens": tokens,
        "mean_tokens": tokens as f64 / refs.len().max(1) as f64,
        "median_seconds": median,
        "texts_per_second": refs.len() as f64 / median,
        "tokens_per_second": tokens as f64 / median,
        "runs": seconds,
    }))
}
