//! `tidewater bench`: end-to-end benchmarks that print a table and can write JSON.

mod embed;
mod freshness;
mod squad;

use std::path::PathBuf;

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
}

/// Runs a benchmark.
pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Squad(args) => squad::run(args),
        BenchCommand::Freshness(args) => freshness::run(args),
        BenchCommand::Embed(args) => embed::run(args),
    }
}

/// Writes `value` as pretty JSON to `path` when given.
fn write_json(path: Option<&PathBuf>, value: &serde_json::Value) -> Result<()> {
    if let Some(path) = path {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(value)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// The `q` quantile of `values` (nearest rank), `NaN` when empty.
fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The SQuAD file shape (only the fields used).
mod squad_file {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct File {
        pub data: Vec<Article>,
    }
    #[derive(Deserialize)]
    pub struct Article {
        pub title: String,
        pub paragraphs: Vec<Paragraph>,
    }
    #[derive(Deserialize)]
    pub struct Paragraph {
        pub context: String,
        pub qas: Vec<Question>,
    }
    #[derive(Deserialize)]
    pub struct Question {
        pub question: String,
        #[serde(default)]
        pub is_impossible: bool,
    }

    /// Reads a SQuAD JSON file: (doc id, paragraph) pairs and (question, doc id) pairs of
    /// the answerable questions.
    pub fn load(
        path: &std::path::Path,
    ) -> anyhow::Result<(Vec<(String, String)>, Vec<(String, String)>)> {
        let file: File = serde_json::from_slice(
            &std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        )
        .map_err(|e| anyhow::anyhow!("{} is not a SQuAD file: {e}", path.display()))?;
        let mut docs = Vec::new();
        let mut questions = Vec::new();
        for article in file.data {
            for (i, p) in article.paragraphs.into_iter().enumerate() {
                let doc_id = format!("squad/{}/{i:03}", article.title);
                for q in p.qas.into_iter().filter(|q| !q.is_impossible) {
                    questions.push((q.question, doc_id.clone()));
                }
                docs.push((doc_id, p.context));
            }
        }
        Ok((docs, questions))
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
