//! Helpers the benchmarks share: JSON output, quantiles, the SQuAD file.

use std::path::PathBuf;

use anyhow::Result;

/// Writes `value` as pretty JSON to `path` when given.
pub fn write_json(path: Option<&PathBuf>, value: &serde_json::Value) -> Result<()> {
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
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The SQuAD file shape (only the fields used).
pub mod squad_file {
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
    /// (id, text) pairs.
    pub type Pairs = Vec<(String, String)>;

    pub fn load(path: &std::path::Path) -> anyhow::Result<(Pairs, Pairs)> {
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
