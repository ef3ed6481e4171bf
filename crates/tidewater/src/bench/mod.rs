//! `tidewater bench`: end-to-end benchmarks that print a table and can write JSON.

mod analytics;
mod cdc;
mod embed;
mod freshness;
mod ingest;
#[cfg(feature = "kafka")]
mod scale;
mod shared;
mod squad;
mod state;

use anyhow::Result;
use clap::Subcommand;

/// The benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Retrieval quality on SQuAD: recall@1/5/10 and MRR, HNSW against exact search.
    Squad(squad::Args),
    /// Change-to-searchable latency of file edits, measured through the HTTP API.
    Freshness(freshness::Args),
    /// Embedding throughput: chunks/s and tokens/s for ~250-token chunks and short queries.
    Embed(embed::Args),
    /// A corpus imported from Parquet and indexed, per vector store (built-in HNSW,
    /// pgvector HNSW and IVFFlat): ingest records/s, query latency, recall@10 against
    /// exact search; optionally beside a plain-Python loader.
    Ingest(ingest::Args),
    /// PostgreSQL commit → profile visible: latency at a steady change rate, and the
    /// highest rate the profiles pipeline sustains.
    Cdc(cdc::Args),
    /// Conversations and feedback → KPIs and lake rows: backlog throughput, and the
    /// latency from a feedback event to its window's KPIs.
    Analytics(analytics::Args),
    /// The profiles pipeline working off a backlog with its state in a local file and in
    /// PostgreSQL (as members share it on Kafka), side by side.
    State(state::Args),
    /// The cluster: indexing throughput with 1, 2, 3 members on Kafka and pgvector, one
    /// edit's freshness through the cluster, pgvector search against the built-in HNSW.
    #[cfg(feature = "kafka")]
    Scale(scale::Args),
}

/// Runs a benchmark.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Squad(args) => squad::run(args),
        BenchCommand::Freshness(args) => freshness::run(args),
        BenchCommand::Embed(args) => embed::run(args),
        BenchCommand::Ingest(args) => ingest::run(args),
        BenchCommand::Cdc(args) => cdc::run(args),
        BenchCommand::Analytics(args) => analytics::run(args),
        BenchCommand::State(args) => state::run(args),
        #[cfg(feature = "kafka")]
        BenchCommand::Scale(args) => scale::run(args),
    }
}
