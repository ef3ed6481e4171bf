//! `tidewater bench scale`: the cluster on this machine. Starts a Kafka-protocol broker and
//! a PostgreSQL with pgvector (the project's scripts), then for 1, 2, 3… members measures
//! how fast a backlog of documents is indexed into pgvector, with a fast in-process
//! embedding endpoint (so the model is not the limit) and optionally with the local
//! model; then one edit's freshness through the cluster, and search latency of pgvector
//! against the built-in HNSW at equal recall@10.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tidewater_core::{content_hash, DocumentEvent, DocumentFormat, DocumentOp};
use tidewater_index::{ExactIndex, IndexConfig, Metric, UsearchIndex, VectorIndex};
use tidewater_log::kafka::KafkaLog;
use tidewater_log::{KafkaConfig, Log, NewRecord};
use tidewater_pgvector::{
    BatchPosition, ChunkRow, DocumentRow, Filter, IndexChanges, PgVectorConfig, PgVectorStore,
};

use super::shared::{
    free_port, fresh_server, quantile, script, squad_file, start_stub_endpoint, write_json,
    STUB_DIMENSION,
};

/// Options of `bench scale`.
#[derive(clap::Args)]
pub struct Args {
    /// The SQuAD file whose paragraphs make the documents (repeated, varied, as needed).
    #[arg(long, default_value = "../shared/data/squad-v2-dev-subset.json")]
    squad: PathBuf,
    /// Documents indexed per member count, with the fast embedding endpoint.
    #[arg(long, default_value_t = 3000)]
    docs: usize,
    /// Documents indexed per member count with the local model (0: skip that run).
    #[arg(long, default_value_t = 0)]
    local_docs: usize,
    /// Member counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    members: Vec<usize>,
    /// Partitions of the documents topic.
    #[arg(long, default_value_t = 12)]
    partitions: u32,
    /// Edits whose change-to-searchable latency is measured on the largest cluster.
    #[arg(long, default_value_t = 20)]
    edits: usize,
    /// Vectors in the search comparison (0: skip it).
    #[arg(long, default_value_t = 100_000)]
    vectors: usize,
    /// Queries in the search comparison.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Where the broker, the database and the members keep their files.
    #[arg(long, default_value = "target/bench-scale")]
    work_dir: PathBuf,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Dimension of the search comparison's vectors.
const SEARCH_DIMENSION: usize = 64;

/// A member: `tidewater run` in a process of its own.
struct Member {
    child: Child,
    addr: String,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            // No pooled connections: the members close idle ones (`[server] idle_timeout`),
            // and a request on a connection closed meanwhile fails.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()?,
        })
    }

    fn request(&self, method: &str, url: &str, body: Option<Value>) -> Result<(u16, Value)> {
        self.runtime.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes())?;
            let mut request = self.client.request(method, url);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let value = response.json().await.unwrap_or(Value::Null);
            Ok((status, value))
        })
    }
}

fn start_member(dir: &Path, config: &Path, http: &Http) -> Result<Member> {
    std::fs::create_dir_all(dir.join("docs"))?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log = std::fs::File::create(dir.join("member.log"))?;
    let child = Command::new(std::env::current_exe()?)
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--docs")
        .arg(dir.join("docs"))
        .arg("--listen")
        .arg(&addr)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let mut member = Member { child, addr };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = member.child.try_wait()? {
            bail!(
                "a member exited with {status}; see {}",
                dir.join("member.log").display()
            );
        }
        if matches!(
            http.request("GET", &format!("http://{}/readyz", member.addr), None),
            Ok((200, _))
        ) {
            return Ok(member);
        }
        if Instant::now() > deadline {
            member.child.kill()?;
            bail!("a member was not ready in 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The documents: SQuAD paragraphs, varied so that every document is new text.
fn corpus(squad: &Path, count: usize) -> Result<Vec<(String, String)>> {
    let (paragraphs, _) = squad_file::load(squad)?;
    if paragraphs.is_empty() {
        bail!("{} has no paragraphs", squad.display());
    }
    Ok((0..count)
        .map(|i| {
            let (id, text) = &paragraphs[i % paragraphs.len()];
            (format!("{id}/{i}"), format!("{text} (Edition {i}.)"))
        })
        .collect())
}

fn document(id: &str, text: &str) -> NewRecord {
    let event = DocumentEvent {
        op: DocumentOp::Upsert,
        doc_id: id.to_owned(),
        source: "bench".into(),
        format: DocumentFormat::Text,
        metadata: Default::default(),
        content_hash: Some(content_hash(text.as_bytes())),
        observed_at_ms: tidewater_core::time::now_ms(),
        body: text.as_bytes().to_vec(),
    };
    NewRecord {
        key: Some(id.as_bytes().to_vec()),
        value: event.encode(),
        timestamp_ms: event.observed_at_ms,
        headers: Vec::new(),
    }
}

struct Servers {
    work: PathBuf,
    brokers: String,
    dsn: String,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (name, dir) in [("kafka.sh", "kafka"), ("pgvector.sh", "pg")] {
            let _ = script(
                name,
                &["stop", self.work.join(dir).to_str().unwrap_or_default()],
            );
        }
    }
}

/// One cluster size: members ready on an empty topic, then the backlog appended at once;
/// the time until pgvector holds every partition's end.
#[allow(clippy::too_many_arguments)]
fn ingest_run(
    servers: &Servers,
    http: &Http,
    args: &Args,
    label: &str,
    members: usize,
    embedding: &str,
    docs: &[(String, String)],
    keep: bool,
) -> Result<(Value, Vec<Member>, PathBuf)> {
    let topic = format!("documents-{label}-{members}");
    let prefix = format!("scale_{label}_{members}");
    let dir = servers.work.join(format!("{label}-{members}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("tidewater.toml");
    std::fs::write(
        &config,
        format!(
            r#"[log]
backend = "kafka"
[log.kafka]
brokers = "{brokers}"
group = "scale-{label}-{members}"
properties = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "1000" }}

[knowledge]
topic = "{topic}"
[knowledge.topic_config]
partitions = {partitions}
[knowledge.index]
backend = "pgvector"
[knowledge.index.pgvector]
dsn = "{dsn}"
table_prefix = "{prefix}"

{embedding}

[reconcile]
on_start = false
interval = "0s"

[lake]
enabled = false
"#,
            brokers = servers.brokers,
            partitions = args.partitions,
            dsn = servers.dsn,
        ),
    )?;
    let mut running = Vec::new();
    for i in 0..members {
        running.push(start_member(
            &dir.join(format!("member-{i}")),
            &config,
            http,
        )?);
    }
    // Members joined one after another: let the group settle (a rebalance takes a few
    // heartbeats) so the backlog is read by all of them from the start.
    std::thread::sleep(Duration::from_secs(8));
    let producer = producer(&servers.brokers)?;
    let cpu_before = cpu_times()?;
    let started = Instant::now();
    for batch in docs.chunks(500) {
        let records = batch.iter().map(|(id, text)| document(id, text)).collect();
        producer.append(&topic, records)?;
    }
    let ends: BTreeMap<u32, u64> = (0..args.partitions)
        .map(|p| Ok((p, producer.range(&topic, p)?.end)))
        .collect::<Result<_>>()?;
    // The model and dimension the members embed with (the tables record them).
    let (model, dimension) = if embedding.contains("openai") {
        ("stub", STUB_DIMENSION)
    } else {
        ("all-MiniLM-L6-v2", 384)
    };
    let store = PgVectorStore::open(&pg_config(&servers.dsn, &prefix), model, dimension)?;
    loop {
        let committed = store.committed_offsets("knowledge", &topic)?;
        if ends
            .iter()
            .all(|(p, end)| *end == 0 || committed.get(p) == Some(end))
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(3600) {
            bail!(
                "{members} member(s) did not index {} documents in an hour",
                docs.len()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_busy = cpu_busy_since(cpu_before)?;
    let chunks = store.len()?;
    let result = json!({
        "members": members,
        "documents": docs.len(),
        "chunks": chunks,
        "seconds": seconds,
        "documents_per_s": docs.len() as f64 / seconds,
        "chunks_per_s": chunks as f64 / seconds,
        "machine_cpu_busy": cpu_busy,
    });
    eprintln!("{label}: {members} member(s): {result}");
    if !keep {
        running.clear();
    }
    Ok((result, running, dir))
}

/// (busy, total) jiffies of all CPUs, from `/proc/stat`.
fn cpu_times() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle + iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The share of the whole machine's CPU time that was busy since `before` (1.0: every
/// core all the time): how much room more members had.
fn cpu_busy_since(before: (u64, u64)) -> Result<f64> {
    let after = cpu_times()?;
    let total = after.1.saturating_sub(before.1).max(1);
    Ok(after.0.saturating_sub(before.0) as f64 / total as f64)
}

fn pg_config(dsn: &str, prefix: &str) -> PgVectorConfig {
    PgVectorConfig {
        dsn: dsn.to_owned(),
        table_prefix: prefix.to_owned(),
        ..PgVectorConfig::default()
    }
}

fn producer(brokers: &str) -> Result<Arc<KafkaLog>> {
    let config = KafkaConfig {
        brokers: brokers.to_owned(),
        group: "bench".into(),
        client_id: None,
        properties: BTreeMap::new(),
    };
    Ok(KafkaLog::connect(&config, 16 << 20)?)
}

/// Writes through the first member, reads through the last: ms until the last member
/// reports the new content.
fn freshness(http: &Http, members: &[Member], edits: usize) -> Result<Value> {
    let (first, last) = (
        members.first().ok_or_else(|| anyhow!("no member"))?,
        members.last().ok_or_else(|| anyhow!("no member"))?,
    );
    let mut latencies = Vec::new();
    for i in 0..edits {
        let id = format!("fresh-{}", i % 5);
        let text = format!(
            "Harbour bulletin {i}: the tide turned at {} hours.",
            1000 + i
        );
        let hash = content_hash(text.as_bytes());
        let started = Instant::now();
        let (status, body) = http.request(
            "PUT",
            &format!("http://{}/v1/documents/{id}", first.addr),
            Some(json!({"text": text})),
        )?;
        if status != 202 {
            bail!("PUT answered {status}: {body}");
        }
        loop {
            let (status, doc) = http.request(
                "GET",
                &format!("http://{}/v1/documents/{id}", last.addr),
                None,
            )?;
            if status == 200 && doc["content_hash"] == hash.as_str() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("edit {i} not visible after 60 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(json!({
        "edits": edits,
        "p50_ms": quantile(&latencies, 0.5),
        "p99_ms": quantile(&latencies, 0.99),
        "max_ms": quantile(&latencies, 1.0),
    }))
}

/// Unit vectors on a low-dimensional subspace plus a little noise: like sentence
/// embeddings, whose neighbourhoods have far fewer degrees of freedom than their
/// dimension (uniform noise in every dimension would make all neighbours nearly
/// equidistant, which no real corpus is). The same `basis` for data and queries.
fn embedding_like(count: usize, basis: &[Vec<f32>], rng: &mut impl Rng) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            let weights: Vec<f32> = basis.iter().map(|_| rng.random_range(-1.0..1.0)).collect();
            let v: Vec<f32> = (0..SEARCH_DIMENSION)
                .map(|d| {
                    let along: f32 = basis.iter().zip(&weights).map(|(b, w)| b[d] * w).sum();
                    along + rng.random_range(-0.02..0.02f32)
                })
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

fn recall(found: &[u64], exact: &[u64]) -> f64 {
    found.iter().filter(|k| exact.contains(k)).count() as f64 / exact.len().max(1) as f64
}

fn summary(latencies: &[f64], recalls: &[f64]) -> Value {
    json!({
        "recall_at_10": recalls.iter().sum::<f64>() / recalls.len().max(1) as f64,
        "p50_ms": quantile(latencies, 0.5),
        "p99_ms": quantile(latencies, 0.99),
    })
}

/// pgvector HNSW against the built-in HNSW (both m = 16, ef_construction = 64) at several
/// ef_search values, on the same vectors and queries, with recall@10 against exact search.
fn search_comparison(servers: &Servers, vectors: usize, queries: usize) -> Result<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let basis: Vec<Vec<f32>> = (0..12)
        .map(|_| {
            (0..SEARCH_DIMENSION)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect()
        })
        .collect();
    let data = embedding_like(vectors, &basis, &mut rng);
    let probes = embedding_like(queries, &basis, &mut rng);
    let exact = ExactIndex::new(SEARCH_DIMENSION, Metric::Cosine)?;
    for (key, v) in data.iter().enumerate() {
        exact.upsert(key as u64, v)?;
    }
    let truth: Vec<Vec<u64>> = probes
        .iter()
        .map(|q| Ok(exact.search(q, 10, None)?.iter().map(|h| h.key).collect()))
        .collect::<Result<_>>()?;

    let mut rows = Vec::new();
    eprintln!("search: loading {vectors} vectors into pgvector");
    let mut config = pg_config(&servers.dsn, "scale_search");
    config.ef_construction = 64;
    let loaded = Instant::now();
    {
        let store = PgVectorStore::open(&config, "random-vectors", SEARCH_DIMENSION)?;
        for (batch_no, batch) in data.chunks(2000).enumerate() {
            let first = batch_no * 2000;
            let changes = IndexChanges {
                upsert_documents: vec![DocumentRow {
                    doc_id: format!("d{batch_no}"),
                    source: "bench".into(),
                    content_hash: String::new(),
                    metadata: Default::default(),
                    updated_at_ms: 0,
                    rejected: None,
                }],
                upsert_chunks: batch
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ChunkRow {
                        chunk_id: format!("{}", first + i),
                        doc_id: format!("d{batch_no}"),
                        ordinal: i as u32,
                        text: String::new(),
                        text_hash: format!("h{}", first + i),
                        vector: v.clone(),
                    })
                    .collect(),
                ..IndexChanges::default()
            };
            let position = BatchPosition {
                pipeline: "bench".into(),
                topic: "search".into(),
                partition: 0,
                expected: (batch_no > 0).then_some(batch_no as u64),
                next_offset: batch_no as u64 + 1,
            };
            store.apply(&position, &changes)?;
        }
    }
    let pg_load_s = loaded.elapsed().as_secs_f64();
    for ef in [40u32, 80, 160] {
        config.ef_search = Some(ef);
        let store = PgVectorStore::open(&config, "random-vectors", SEARCH_DIMENSION)?;
        let (mut latencies, mut recalls) = (Vec::new(), Vec::new());
        for (q, want) in probes.iter().zip(&truth) {
            let started = Instant::now();
            let hits = store.search(q, 10, &Filter::default())?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            let keys: Vec<u64> = hits
                .iter()
                .filter_map(|h| h.chunk_id.parse().ok())
                .collect();
            recalls.push(recall(&keys, want));
        }
        rows.push(json!({"index": "pgvector hnsw", "ef_search": ef, "result": summary(&latencies, &recalls)}));
        eprintln!(
            "search: pgvector ef_search {ef}: {}",
            rows.last().unwrap_or(&Value::Null)
        );
    }
    let mut usearch_build_s = 0.0;
    for ef in [16usize, 32, 64, 128] {
        let config = IndexConfig {
            ef_construction: 64,
            ef_search: ef,
            ..IndexConfig::default()
        };
        let index = UsearchIndex::new(SEARCH_DIMENSION, &config)?;
        let started = Instant::now();
        for (key, v) in data.iter().enumerate() {
            index.upsert(key as u64, v)?;
        }
        usearch_build_s = started.elapsed().as_secs_f64();
        let (mut latencies, mut recalls) = (Vec::new(), Vec::new());
        for (q, want) in probes.iter().zip(&truth) {
            let started = Instant::now();
            let hits = index.search(q, 10, None)?;
            latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            let keys: Vec<u64> = hits.iter().map(|h| h.key).collect();
            recalls.push(recall(&keys, want));
        }
        rows.push(json!({"index": "built-in hnsw", "ef_search": ef, "result": summary(&latencies, &recalls)}));
        eprintln!(
            "search: built-in ef_search {ef}: {}",
            rows.last().unwrap_or(&Value::Null)
        );
    }
    Ok(json!({
        "vectors": vectors,
        "dimension": SEARCH_DIMENSION,
        "queries": queries,
        "pgvector_load_s": pg_load_s,
        "builtin_build_s": usearch_build_s,
        "rows": rows,
    }))
}

/// Runs the benchmark.
pub fn run(args: Args) -> Result<()> {
    let work = std::path::absolute(&args.work_dir)?;
    std::fs::create_dir_all(&work)?;
    let servers = Servers {
        brokers: fresh_server("kafka.sh", &work.join("kafka"))?,
        dsn: fresh_server("pgvector.sh", &work.join("pg"))?,
        work,
    };
    let http = Http::new()?;
    let stub = start_stub_endpoint()?;
    let stub_section = format!(
        "[embedding]\nbackend = \"openai\"\nbase_url = \"{stub}\"\nmodel = \"stub\"\ndimension = {STUB_DIMENSION}\nmax_concurrency = 8\n"
    );
    let run_id = format!("{:x}", rand::random::<u32>());
    let docs = corpus(&args.squad, args.docs)?;
    let mut ingest = Vec::new();
    let mut fresh = Value::Null;
    let largest = args.members.iter().copied().max().unwrap_or(1);
    for &members in &args.members {
        let label = format!("stub{run_id}");
        let keep = members == largest && args.edits > 0;
        let (result, running, _) = ingest_run(
            &servers,
            &http,
            &args,
            &label,
            members,
            &stub_section,
            &docs,
            keep,
        )?;
        ingest.push(result);
        if keep {
            fresh = freshness(&http, &running, args.edits)?;
            eprintln!("freshness through {members} member(s): {fresh}");
        }
    }
    let mut local = Vec::new();
    if args.local_docs > 0 {
        let docs = corpus(&args.squad, args.local_docs)?;
        for &members in &args.members {
            let label = format!("local{run_id}");
            let (result, _, _) =
                ingest_run(&servers, &http, &args, &label, members, "", &docs, false)?;
            local.push(result);
        }
    }
    let search = if args.vectors > 0 {
        search_comparison(&servers, args.vectors, args.queries)?
    } else {
        Value::Null
    };
    let scaling: Vec<Value> = ingest
        .iter()
        .map(|r| {
            let base = ingest[0]["documents_per_s"].as_f64().unwrap_or(f64::NAN)
                / ingest[0]["members"].as_f64().unwrap_or(1.0);
            let members = r["members"].as_f64().unwrap_or(1.0);
            json!({"members": members, "of_linear": r["documents_per_s"].as_f64().unwrap_or(0.0) / (base * members)})
        })
        .collect();
    let result = json!({
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "partitions": args.partitions,
        "ingest_fast_endpoint": ingest,
        "scaling_vs_linear": scaling,
        "ingest_local_model": local,
        "freshness": fresh,
        "search": search,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    write_json(args.json.as_ref(), &result)
}
