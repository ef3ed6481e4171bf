//! `tidewater bench ingest`: a corpus in, searchable out, for each vector store.
//!
//! The corpus is written once as a Parquet file (`id`, `text`). For each store the
//! benchmark then does what a user does: `tidewater import` of that file into a fresh data
//! directory (a process of its own), then Tidewater's knowledge pipeline (chunk → embed →
//! index) until everything imported is searchable; with pgvector's IVFFlat, the index is
//! built after the load, as pgvector advises. That whole time is the ingest time. Then
//! it times searches (the query already embedded) and measures their recall@10 against
//! exact search over the same vectors (taken from the built-in store's run, so the stores
//! are compared on identical chunks and vectors).
//!
//! Two corpora: the SQuAD paragraphs with the local model, and the entries of the GNU
//! Collaborative International Dictionary of English (Debian's `dict-gcide`,
//! `scripts/fetch-corpus.sh gcide`, ~249,000 entries) with a fast in-process stub embedding
//! endpoint, so that the pipeline and the stores are what is measured, not the model.
//!
//! With `--peer-python`, the plain-Python peer (`bench/ingest_peer.py`: pyarrow →
//! sentence-transformers or the same endpoint → pgvector `COPY`) loads the same Parquet
//! file into the same PostgreSQL, once per pgvector index method.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tidewater_config::Config;
use tidewater_index::VectorIndex;
use tidewater_runtime::App;

use super::shared::{
    fresh_server, quantile, script, squad_file, start_stub_endpoint, write_json, STUB_DIMENSION,
};

/// Options of `bench ingest`.
#[derive(clap::Args)]
pub struct Args {
    /// The corpus: the SQuAD paragraphs with the local model, or the GCIDE dictionary's
    /// entries with a fast stub embedding endpoint.
    #[arg(long, value_enum, default_value_t = CorpusKind::Squad)]
    corpus: CorpusKind,
    /// The SQuAD file.
    #[arg(long, default_value = "../shared/data/squad-v2-dev-subset.json")]
    squad: PathBuf,
    /// The GCIDE dictionary as text (default: where `scripts/fetch-corpus.sh gcide` puts it).
    #[arg(long)]
    gcide: Option<PathBuf>,
    /// At most this many documents of the corpus (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// The stores, in this order. The exact baseline for recall comes from `builtin`'s
    /// run; without it no recall is reported.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "builtin,pgvector-hnsw,pgvector-ivfflat"
    )]
    stores: Vec<Store>,
    /// PostgreSQL with pgvector (default: a fresh one from `scripts/pgvector.sh`, in the
    /// work directory, stopped at the end).
    #[arg(long)]
    dsn: Option<String>,
    /// Queries timed per store: GCIDE phrases drawn from the corpus; SQuAD questions (at
    /// most as many as it has).
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// The local model's directory (SQuAD; default: the default model's).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// A Python with pyarrow, psycopg and sentence-transformers: runs the peer
    /// `bench/ingest_peer.py` on the same file for each pgvector store.
    #[arg(long)]
    peer_python: Option<PathBuf>,
    /// The pgvector index methods the peer loads into (of those `--stores` names).
    /// Loading into an HNSW index is bound by pgvector's insertion for both loaders, and
    /// slow on a large corpus.
    #[arg(
        long,
        value_delimiter = ',',
        value_parser = ["hnsw", "ivfflat"],
        default_value = "hnsw,ivfflat"
    )]
    peer_indexes: Vec<String>,
    /// Where the corpus file, the data directories and the database live.
    #[arg(long, default_value = "target/bench-ingest")]
    work_dir: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--corpus`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CorpusKind {
    Squad,
    Gcide,
}

/// `--stores`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    /// The built-in HNSW index (usearch, in process).
    Builtin,
    /// pgvector's HNSW (m = 16, ef_construction = 256).
    PgvectorHnsw,
    /// pgvector's IVFFlat, lists sized to the rows, built after the load.
    PgvectorIvfflat,
}

impl Store {
    fn name(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::PgvectorHnsw => "pgvector-hnsw",
            Self::PgvectorIvfflat => "pgvector-ivfflat",
        }
    }

    /// pgvector's index method, if the store is pgvector.
    fn pgvector_method(self) -> Option<&'static str> {
        match self {
            Self::Builtin => None,
            Self::PgvectorHnsw => Some("hnsw"),
            Self::PgvectorIvfflat => Some("ivfflat"),
        }
    }
}

/// A corpus and how it is embedded.
struct Corpus {
    name: &'static str,
    /// (id, text), texts distinct.
    docs: Vec<(String, String)>,
    queries: Vec<String>,
    /// The `[embedding]` section.
    embedding: String,
    /// How the peer embeds: its arguments.
    peer_embedding: Vec<String>,
}

/// A search result as compared across stores: (chunk id, score).
type Found = Vec<(String, f32)>;

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    ensure!(!args.stores.is_empty(), "--stores names no store");
    let work = std::path::absolute(&args.work_dir)?;
    std::fs::create_dir_all(&work)?;
    let corpus = match args.corpus {
        CorpusKind::Squad => squad_corpus(&args)?,
        CorpusKind::Gcide => gcide_corpus(&args)?,
    };
    let parquet = work.join(format!("{}.parquet", corpus.name));
    write_parquet(&parquet, &corpus.docs)?;
    let bytes: usize = corpus.docs.iter().map(|(_, t)| t.len()).sum();
    eprintln!(
        "corpus {}: {} documents, {:.1} MB of text, {} queries → {}",
        corpus.name,
        corpus.docs.len(),
        bytes as f64 / 1e6,
        corpus.queries.len(),
        parquet.display()
    );

    let needs_pg = args.stores.iter().any(|s| s.pgvector_method().is_some());
    let (dsn, _pg) = match (&args.dsn, needs_pg) {
        (Some(dsn), _) => (Some(dsn.clone()), None),
        (None, true) => {
            let dir = work.join("pg");
            let dsn = fresh_server("pgvector.sh", &dir)?;
            (Some(dsn), Some(StopOnDrop(dir)))
        }
        (None, false) => (None, None),
    };
    let run_id = format!("{:x}", rand::random::<u32>());

    let mut truth: Option<Vec<Found>> = None;
    let mut rows = Vec::new();
    for &store in &args.stores {
        let (mut row, found, exact) =
            ingest_store(store, &corpus, &parquet, &work, dsn.as_deref(), &run_id)?;
        if let Some(exact) = exact {
            truth = Some(exact);
        }
        row["recall_at_10"] = match &truth {
            Some(truth) => json!(mean_recall(&found, truth)),
            None => Value::Null,
        };
        eprintln!("{}: {row}", store.name());
        rows.push(row);
    }

    let mut peers = Vec::new();
    if let Some(python) = &args.peer_python {
        let dsn = dsn.as_deref().context("the peer needs PostgreSQL")?;
        let methods = args
            .stores
            .iter()
            .filter_map(|s| s.pgvector_method())
            .filter(|m| args.peer_indexes.iter().any(|p| p == m));
        for store in methods {
            let peer = run_peer(python, &corpus, &parquet, &work, dsn, store, &run_id)?;
            let ours = rows
                .iter()
                .find(|r| r["store"] == format!("pgvector-{store}"))
                .context("no Tidewater row for the peer's store")?;
            let ratio = ours["documents_per_s"].as_f64().unwrap_or(f64::NAN)
                / peer["documents_per_s"].as_f64().unwrap_or(f64::NAN);
            eprintln!("peer, pgvector {store}: {peer}; Tidewater/peer documents/s = {ratio:.2}");
            let table = peer["table"].clone();
            peers.push(json!({
                "index": store,
                "table": table,
                "peer": peer,
                "tidewater_over_peer_documents_per_s": ratio,
            }));
        }
    }

    print_table(&corpus, &rows, &peers);
    let result = json!({
        "benchmark": "ingest",
        "corpus": corpus.name,
        "documents": corpus.docs.len(),
        "text_bytes": bytes,
        "queries": corpus.queries.len(),
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "stores": rows,
        "peers": peers,
    });
    write_json(args.json.as_ref(), &result)
}

/// Stops the throw-away PostgreSQL in its directory.
struct StopOnDrop(PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = script(
            "pgvector.sh",
            &["stop", self.0.to_str().unwrap_or_default()],
        );
    }
}

fn squad_corpus(args: &Args) -> Result<Corpus> {
    let (mut docs, questions) = squad_file::load(&args.squad)?;
    truncate(&mut docs, args.limit);
    let queries = questions
        .into_iter()
        .take(args.queries)
        .map(|(q, _)| q)
        .collect();
    let model_dir = args
        .model_dir
        .clone()
        .unwrap_or_else(tidewater_embed::default_model_dir);
    Ok(Corpus {
        name: "squad",
        docs,
        queries,
        embedding: format!(
            "[embedding]\nbackend = \"local\"\nmodel_dir = {}\n",
            toml_string(&model_dir.display().to_string())
        ),
        peer_embedding: vec!["--model-dir".into(), model_dir.display().to_string()],
    })
}

/// GCIDE's entries as documents: the dictionary text split at blank lines (an entry, or
/// one block of a long entry), the database's own `00-database-*` header left out, and
/// blocks under 40 characters (a lone source tag) and repeated blocks skipped.
fn gcide_corpus(args: &Args) -> Result<Corpus> {
    let path = match &args.gcide {
        Some(path) => path.clone(),
        None => tidewater_embed::cache_dir().join("corpora/gcide.txt"),
    };
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (scripts/fetch-corpus.sh gcide fetches it)",
            path.display()
        )
    })?;
    // ASCII but for three Windows-1252 apostrophes.
    let text = String::from_utf8_lossy(&bytes);
    let mut seen = HashSet::new();
    let mut docs = Vec::new();
    for block in text.split("\n\n") {
        let block = block.trim();
        if block.len() < 40 || block.starts_with("00-database-") || !seen.insert(block) {
            continue;
        }
        docs.push((format!("gcide/{:06}", docs.len()), block.to_owned()));
    }
    truncate(&mut docs, args.limit);
    ensure!(!docs.is_empty(), "{} holds no entries", path.display());
    // Queries: 2 to 6 consecutive words of a random entry, as a user would type them.
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let queries = (0..args.queries)
        .map(|_| {
            let (_, text) = docs.choose(&mut rng).expect("docs is not empty");
            let words: Vec<&str> = text.split_whitespace().collect();
            let len = rng.random_range(2..=6).min(words.len());
            let start = rng.random_range(0..=words.len() - len);
            words[start..start + len].join(" ")
        })
        .collect();
    let url = start_stub_endpoint()?;
    Ok(Corpus {
        name: "gcide",
        docs,
        queries,
        embedding: format!(
            "[embedding]\nbackend = \"openai\"\nbase_url = \"{url}\"\nmodel = \"stub\"\n\
             dimension = {STUB_DIMENSION}\nmax_concurrency = 8\n"
        ),
        peer_embedding: vec![
            "--embedding-url".into(),
            url,
            "--dimension".into(),
            STUB_DIMENSION.to_string(),
        ],
    })
}

fn truncate(docs: &mut Vec<(String, String)>, limit: usize) {
    if limit > 0 {
        docs.truncate(limit);
    }
}

/// `text` as a TOML basic string (JSON's string escapes are TOML's).
fn toml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// Writes the documents as Parquet (`id`, `text`), 10,000 rows a row group.
fn write_parquet(path: &Path, docs: &[(String, String)]) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let properties = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_size(10_000)
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, Arc::clone(&schema), Some(properties))?;
    for part in docs.chunks(10_000) {
        let ids = StringArray::from_iter_values(part.iter().map(|(id, _)| id));
        let texts = StringArray::from_iter_values(part.iter().map(|(_, text)| text));
        writer.write(&RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(ids), Arc::new(texts)],
        )?)?;
    }
    writer.close()?;
    Ok(())
}

/// One store: import into a fresh data directory, index, search. Returns its row, the
/// search results, and (built-in store) exact search's results.
fn ingest_store(
    store: Store,
    corpus: &Corpus,
    parquet: &Path,
    work: &Path,
    dsn: Option<&str>,
    run_id: &str,
) -> Result<(Value, Vec<Found>, Option<Vec<Found>>)> {
    let dir = work.join(format!("{}-{}", corpus.name, store.name()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let prefix = store
        .pgvector_method()
        .map(|method| format!("ingest_{}_{method}_{run_id}", corpus.name));
    let index = match (&prefix, store.pgvector_method()) {
        (Some(prefix), Some(method)) => format!(
            "[knowledge.index]\nbackend = \"pgvector\"\n[knowledge.index.pgvector]\n\
             dsn = {}\ntable_prefix = \"{prefix}\"\nmethod = \"{method}\"\n",
            toml_string(dsn.context("pgvector needs a DSN")?),
        ),
        _ => String::new(),
    };
    let config_path = dir.join("tidewater.toml");
    std::fs::write(
        &config_path,
        format!(
            "data_dir = {}\n\n{}\n{index}\n[reconcile]\non_start = false\ninterval = \"0s\"\n\n\
             [lake]\nenabled = false\n",
            toml_string(&dir.join("data").display().to_string()),
            corpus.embedding
        ),
    )?;
    let config = Config::load(Some(&config_path))?;

    eprintln!("{}: importing {}", store.name(), parquet.display());
    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?)
        .arg("import")
        .arg("--config")
        .arg(&config_path)
        .arg("--quiet")
        .arg(parquet)
        .stdout(Stdio::null())
        .status()
        .context("running tidewater import")?;
    ensure!(status.success(), "tidewater import failed ({status})");
    let import_s = started.elapsed().as_secs_f64();

    eprintln!("{}: indexing", store.name());
    let app = App::start(config)?;
    ensure!(
        app.knowledge
            .wait_caught_up(Duration::from_secs(4 * 3600))?,
        "{} did not index the corpus in 4 hours",
        store.name()
    );
    let indexed_s = started.elapsed().as_secs_f64();
    app.knowledge.rebuild_index()?;
    let seconds = started.elapsed().as_secs_f64();
    let chunks = app.knowledge.index_len();
    ensure!(chunks > 0, "{} holds no chunk", store.name());

    let texts: Vec<&str> = corpus.queries.iter().map(String::as_str).collect();
    let vectors = app.knowledge.embedder().embed(&texts)?;
    let mut latencies = Vec::with_capacity(vectors.len());
    let mut found = Vec::with_capacity(vectors.len());
    for vector in &vectors {
        let started = Instant::now();
        let hits = app.knowledge.search_vector(vector, 10, None)?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        found.push(hits.into_iter().map(|h| (h.chunk_id, h.score)).collect());
    }
    let exact = match store {
        Store::Builtin => {
            let exact = app.knowledge.exact_index()?;
            let mut all = Vec::with_capacity(vectors.len());
            for vector in &vectors {
                let hits = app.knowledge.resolve(exact.search(vector, 10, None)?)?;
                all.push(hits.into_iter().map(|h| (h.chunk_id, h.score)).collect());
            }
            Some(all)
        }
        _ => None,
    };
    app.shutdown();

    let documents = corpus.docs.len();
    let row = json!({
        "store": store.name(),
        "table_prefix": prefix,
        "documents": documents,
        "chunks": chunks,
        "import_s": import_s,
        "index_s": indexed_s - import_s,
        "build_index_s": seconds - indexed_s,
        "seconds": seconds,
        "documents_per_s": documents as f64 / seconds,
        "records_per_s": chunks as f64 / seconds,
        "ms_per_record": seconds * 1000.0 / chunks as f64,
        "query_avg_ms": latencies.iter().sum::<f64>() / latencies.len().max(1) as f64,
        "query_p50_ms": quantile(&latencies, 0.5),
        "query_p99_ms": quantile(&latencies, 0.99),
    });
    Ok((row, found, exact))
}

/// Mean recall@10 of `found` against `truth`. A result outside the exact top 10 still
/// counts when it scores as high as the exact 10th (a tie: equal vectors).
fn mean_recall(found: &[Found], truth: &[Found]) -> f64 {
    let recalls: Vec<f64> = found
        .iter()
        .zip(truth)
        .filter(|(_, t)| !t.is_empty())
        .map(|(f, t)| {
            let floor = t.iter().map(|(_, s)| *s).fold(f32::INFINITY, f32::min) - 1e-5;
            let hits = f
                .iter()
                .take(t.len())
                .filter(|(id, score)| t.iter().any(|(tid, _)| tid == id) || *score >= floor)
                .count();
            hits as f64 / t.len() as f64
        })
        .collect();
    recalls.iter().sum::<f64>() / recalls.len().max(1) as f64
}

/// Runs `bench/ingest_peer.py` for one pgvector index method; returns its JSON with
/// `documents_per_s` added.
fn run_peer(
    python: &Path,
    corpus: &Corpus,
    parquet: &Path,
    work: &Path,
    dsn: &str,
    method: &str,
    run_id: &str,
) -> Result<Value> {
    let peer_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/ingest_peer.py");
    let out = work.join(format!("peer-{}-{method}.json", corpus.name));
    let table = format!("peer_{}_{method}_{run_id}", corpus.name);
    eprintln!("peer: pgvector {method}");
    let status = Command::new(python)
        .arg(&peer_script)
        .arg("--parquet")
        .arg(parquet)
        .args(["--dsn", dsn])
        .args(["--table", &table])
        .args(["--index", method])
        .args(&corpus.peer_embedding)
        .arg("--json")
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("running {}", python.display()))?;
    if !status.success() {
        bail!("bench/ingest_peer.py failed ({status})");
    }
    let mut peer: Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let rows = peer["rows"].as_f64().unwrap_or(f64::NAN);
    let seconds = peer["seconds"].as_f64().unwrap_or(f64::NAN);
    peer["documents_per_s"] = json!(rows / seconds);
    peer["table"] = json!(table);
    Ok(peer)
}

fn print_table(corpus: &Corpus, rows: &[Value], peers: &[Value]) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    println!(
        "ingest: corpus {} ({} documents), {} queries",
        corpus.name,
        corpus.docs.len(),
        corpus.queries.len()
    );
    println!(
        "{:<18} {:>8} {:>9} {:>10} {:>8} {:>9} {:>9} {:>9} {:>10}",
        "store",
        "chunks",
        "seconds",
        "records/s",
        "ms/rec",
        "q avg ms",
        "q p50 ms",
        "q p99 ms",
        "recall@10"
    );
    for row in rows {
        println!(
            "{:<18} {:>8} {:>9.1} {:>10.1} {:>8.3} {:>9.2} {:>9.2} {:>9.2} {:>10.4}",
            row["store"].as_str().unwrap_or_default(),
            row["chunks"],
            f(&row["seconds"]),
            f(&row["records_per_s"]),
            f(&row["ms_per_record"]),
            f(&row["query_avg_ms"]),
            f(&row["query_p50_ms"]),
            f(&row["query_p99_ms"]),
            f(&row["recall_at_10"]),
        );
    }
    for peer in peers {
        let p = &peer["peer"];
        println!(
            "peer (pyarrow → {} → pgvector {} COPY): {} chunks in {:.1} s, {:.1} records/s; \
             Tidewater/peer documents/s: {:.2}",
            p["embedder"].as_str().unwrap_or_default(),
            peer["index"].as_str().unwrap_or_default(),
            p["chunks"],
            f(&p["seconds"]),
            f(&p["records_per_s"]),
            f(&peer["tidewater_over_peer_documents_per_s"]),
        );
    }
}
