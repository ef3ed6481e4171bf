//! Helpers the benchmarks share: JSON output, quantiles, the SQuAD file, the project's
//! server scripts, and a fast stub embedding endpoint.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

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

/// Dimension of the fast endpoint's vectors (MiniLM's).
pub const STUB_DIMENSION: usize = 384;

/// The project's `scripts/` directory.
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// Stops the server `scripts/NAME` runs in `dir`, empties `dir` (earlier runs' topics and
/// tables would skew the figures) and starts it again on a free port; returns its address.
pub fn fresh_server(name: &str, dir: &Path) -> Result<String> {
    let dir_str = dir.to_str().unwrap_or_default();
    let _ = script(name, &["stop", dir_str]);
    let _ = std::fs::remove_dir_all(dir);
    script(name, &["start", dir_str, &free_port()?.to_string()])
}

/// Runs `scripts/NAME ARGS…`; returns its last line (an address).
pub fn script(name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("bash")
        .arg(scripts().join(name))
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running scripts/{name}"))?;
    if !out.status.success() {
        bail!("scripts/{name} {args:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A deterministic word-hash embedding (the same as the test endpoint's idea): fast, so
/// the pipeline around the model is what is measured.
fn stub_vector(text: &str, dimension: usize) -> Vec<f32> {
    let mut vector = vec![0f32; dimension];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = blake3::hash(word.to_lowercase().as_bytes());
        let bytes = hash.as_bytes();
        let position = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        vector[position % dimension] += if bytes[4] & 1 == 1 { 1.0 } else { -1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        vector[0] = 1.0;
        return vector;
    }
    vector.iter().map(|x| x / norm).collect()
}

/// Serves `POST /v1/embeddings` on a free port from a thread of its own; returns its base URL.
pub fn start_stub_endpoint() -> Result<String> {
    use axum::routing::post;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("stub runtime");
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/v1/embeddings",
                post(|axum::Json(body): axum::Json<Value>| async move {
                    let texts: Vec<String> = match &body["input"] {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(items) => items
                            .iter()
                            .map(|t| t.as_str().unwrap_or_default().to_owned())
                            .collect(),
                        _ => Vec::new(),
                    };
                    let data: Vec<Value> = texts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": stub_vector(t, STUB_DIMENSION)}))
                        .collect();
                    axum::Json(json!({"object": "list", "data": data, "model": "stub"}))
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok(format!("http://{addr}"))
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
