//! `tidewater bench squad`: ingest each SQuAD paragraph as a document, then ask every
//! answerable question and check whether its paragraph is among the top k results.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
use tidewater_index::VectorIndex;
use tidewater_knowledge::SearchHit;

use tidewater_runtime::App;

/// Options of `bench squad`.
#[derive(clap::Args)]
pub struct Args {
    /// A SQuAD-format JSON file.
    #[arg(long)]
    file: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Data directory (default: a fresh temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write the indexed chunks and the questions as JSON here (input of `bench/peer.py`).
    #[arg(long)]
    dump_chunks: Option<PathBuf>,
    /// The local model's directory (default: the default model's), e.g. all-mpnet-base-v2's.
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// The local model's precision.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
}

/// `--precision`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Precision {
    F32,
    Int8,
}

#[derive(Default)]
struct Scores {
    hits_at: [usize; 3], // @1, @5, @10
    reciprocal_rank: f64,
    n: usize,
}

impl Scores {
    fn add(&mut self, results: &[SearchHit], want: &str) {
        let mut seen = Vec::new();
        for hit in results {
            if !seen.contains(&hit.doc_id) {
                seen.push(hit.doc_id.clone());
            }
        }
        let rank = seen.iter().position(|d| d == want).map(|r| r + 1);
        for (i, k) in [1, 5, 10].into_iter().enumerate() {
            if rank.is_some_and(|r| r <= k) {
                self.hits_at[i] += 1;
            }
        }
        self.reciprocal_rank += rank.map(|r| 1.0 / r as f64).unwrap_or(0.0);
        self.n += 1;
    }

    fn json(&self) -> serde_json::Value {
        let n = self.n.max(1) as f64;
        json!({
            "recall@1": self.hits_at[0] as f64 / n,
            "recall@5": self.hits_at[1] as f64 / n,
            "recall@10": self.hits_at[2] as f64 / n,
            "mrr@10": self.reciprocal_rank / n,
            "questions": self.n,
        })
    }
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    let (docs, questions) = super::shared::squad_file::load(&args.file)?;
    let temp = tempfile::tempdir()?;
    let mut config = tidewater_config::Config {
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().to_path_buf()),
        ..Default::default()
    };
    config.reconcile.on_start = false;
    config.embedding = tidewater_embed::EmbedderConfig::Local(tidewater_embed::LocalModelConfig {
        model_dir: args.model_dir.clone(),
        precision: match args.precision {
            Precision::F32 => tidewater_embed::Precision::F32,
            Precision::Int8 => tidewater_embed::Precision::Int8,
        },
        ..Default::default()
    });
    let app = App::start(config)?;

    eprintln!("ingesting {} paragraphs…", docs.len());
    let started = Instant::now();
    let now = tidewater_core::time::now_ms();
    let events: Vec<DocumentEvent> = docs
        .iter()
        .map(|(doc_id, text)| DocumentEvent {
            op: DocumentOp::Upsert,
            doc_id: doc_id.clone(),
            source: "bench".into(),
            format: DocumentFormat::Text,
            metadata: Default::default(),
            content_hash: Some(content_hash(text.as_bytes())),
            observed_at_ms: now,
            body: text.as_bytes().to_vec(),
        })
        .collect();
    app.knowledge.writer().write(&events)?;
    anyhow::ensure!(
        app.knowledge.wait_caught_up(Duration::from_secs(3600))?,
        "ingest did not finish within an hour"
    );
    let ingest = started.elapsed();
    let chunks = app.knowledge.index_len();
    eprintln!(
        "ingested {} paragraphs as {chunks} chunks in {:.1} s",
        docs.len(),
        ingest.as_secs_f64()
    );

    if let Some(path) = &args.dump_chunks {
        let mut chunks = Vec::new();
        for (doc_id, _) in &docs {
            let status = app
                .knowledge
                .document(doc_id)?
                .with_context(|| format!("{doc_id} was not indexed"))?;
            for hit in app.knowledge.chunks_of(doc_id)? {
                chunks.push(json!({"doc_id": doc_id, "chunk_id": hit.chunk_id, "text": hit.text}));
            }
            anyhow::ensure!(status.rejected.is_none(), "{doc_id} was rejected");
        }
        let questions: Vec<_> = questions
            .iter()
            .map(|(q, d)| json!({"question": q, "doc_id": d}))
            .collect();
        super::shared::write_json(
            Some(path),
            &json!({"chunks": chunks, "questions": questions}),
        )?;
    }
    eprintln!("embedding {} questions…", questions.len());
    let texts: Vec<&str> = questions.iter().map(|(q, _)| q.as_str()).collect();
    let vectors = app
        .knowledge
        .embedder()
        .embed(&texts)
        .context("embedding the questions")?;
    let exact = app.knowledge.exact_index()?;
    let (mut hnsw_scores, mut exact_scores) = (Scores::default(), Scores::default());
    let search_started = Instant::now();
    for ((_, want), vector) in questions.iter().zip(&vectors) {
        hnsw_scores.add(&app.knowledge.search_vector(vector, 10, None)?, want);
    }
    let hnsw_search = search_started.elapsed();
    for ((_, want), vector) in questions.iter().zip(&vectors) {
        exact_scores.add(
            &app.knowledge.resolve(exact.search(vector, 10, None)?)?,
            want,
        );
    }
    let result = json!({
        "benchmark": "squad",
        "file": args.file.display().to_string(),
        "paragraphs": docs.len(),
        "chunks": chunks,
        "ingest_seconds": ingest.as_secs_f64(),
        "ingest_paragraphs_per_second": docs.len() as f64 / ingest.as_secs_f64(),
        "hnsw": hnsw_scores.json(),
        "exact": exact_scores.json(),
        "hnsw_search_ms_per_query": hnsw_search.as_secs_f64() * 1000.0 / questions.len().max(1) as f64,
    });
    println!(
        "SQuAD retrieval ({} answerable questions, {} paragraphs, {chunks} chunks)",
        questions.len(),
        docs.len()
    );
    println!(
        "{:<8} {:>9} {:>9} {:>10} {:>8}",
        "index", "recall@1", "recall@5", "recall@10", "MRR@10"
    );
    for name in ["hnsw", "exact"] {
        let s = &result[name];
        println!(
            "{name:<8} {:>9.4} {:>9.4} {:>10.4} {:>8.4}",
            s["recall@1"].as_f64().unwrap_or(0.0),
            s["recall@5"].as_f64().unwrap_or(0.0),
            s["recall@10"].as_f64().unwrap_or(0.0),
            s["mrr@10"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "ingest: {:.2} s ({:.1} paragraphs/s)",
        ingest.as_secs_f64(),
        docs.len() as f64 / ingest.as_secs_f64()
    );
    super::shared::write_json(args.json.as_ref(), &result)?;
    app.shutdown();
    Ok(())
}
