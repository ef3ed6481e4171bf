//! Configuration of the embedder: which backend, and its knobs. Deserialised from the
//! `[embedder]` table of Tidewater's TOML file; [`build_embedder`] turns it into an
//! [`Embedder`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{EmbedError, Embedder};

/// Which embedding backend to use, chosen by the `backend` key.
///
/// ```toml
/// [embedder]
/// backend = "openai"
/// base_url = "http://localhost:8080"
/// model = "all-MiniLM-L6-v2"
/// dimension = 384
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum EmbedderConfig {
    /// A BERT-family or MPNet sentence model run in-process.
    Local(LocalModelConfig),
    /// An OpenAI-compatible `/v1/embeddings` endpoint (TEI, vLLM, Ollama, OpenAI, ...).
    Openai(OpenAiConfig),
}

impl Default for EmbedderConfig {
    fn default() -> Self {
        Self::Local(LocalModelConfig::default())
    }
}

/// Settings of the local backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalModelConfig {
    /// Directory holding `config.json`, `tokenizer.json` and `model.safetensors` (and the
    /// sentence-transformers files that set pooling and length). Unset:
    /// [`crate::default_model_dir`] (`$TIDEWATER_MODEL_DIR`, else the user's cache
    /// directory), filled by `scripts/fetch-model.sh`.
    pub model_dir: Option<PathBuf>,
    /// Tokens per input, special tokens included; longer inputs are truncated. Unset: the
    /// model's `sentence_bert_config.json` (`max_seq_length`: 256 for all-MiniLM-L6-v2,
    /// 384 for all-mpnet-base-v2), else 256. The tokenizer files' own limit (128) is
    /// overridden, as sentence-transformers does.
    pub max_seq_len: Option<usize>,
    /// Inputs per forward pass of the candle engine (CUDA), grouped by length first. The
    /// CPU encoder packs inputs without padding, up to 4,096 tokens per pass.
    pub batch_size: usize,
    /// CPU threads for inference. Unset: one per physical core (or `RAYON_NUM_THREADS`).
    pub threads: Option<usize>,
    /// `f32`, or `int8` linear layers: about twice as fast on CPUs with AVX-512 VNNI,
    /// with vectors at cosine ≥ 0.99 to f32's.
    pub precision: Precision,
}

impl Default for LocalModelConfig {
    fn default() -> Self {
        Self {
            model_dir: None,
            max_seq_len: None,
            batch_size: 32,
            threads: None,
            precision: Precision::F32,
        }
    }
}

impl LocalModelConfig {
    /// The model directory: the configured one, else [`crate::default_model_dir`].
    pub fn resolved_model_dir(&self) -> PathBuf {
        self.model_dir
            .clone()
            .unwrap_or_else(crate::default_model_dir)
    }

    /// Checks the settings that do not depend on the model.
    pub fn validate(&self) -> Result<(), EmbedError> {
        let invalid = |reason: &str| Err(EmbedError::invalid_config(reason));
        if self.batch_size == 0 {
            return invalid("batch_size must be at least 1");
        }
        if self.max_seq_len.is_some_and(|n| n < 2) {
            // Room for [CLS] and [SEP] at least.
            return invalid("max_seq_len must be at least 2");
        }
        if self.threads == Some(0) {
            return invalid("threads must be at least 1");
        }
        Ok(())
    }
}

/// How the local encoder's linear layers compute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// Linear layers in int8 (weights quantised per output column at load, activations per
    /// token as they come); attention, norms and activations stay f32.
    Int8,
}

/// Settings of the OpenAI-compatible HTTP backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Base URL of the server, e.g. `http://localhost:8080` or `https://api.openai.com/v1`;
    /// `/v1/embeddings` is appended (without doubling a trailing `/v1`). Give this or
    /// `base_urls`.
    #[serde(default)]
    pub base_url: String,
    /// Several servers of the same model, instead of `base_url`: each request goes to the
    /// healthy one with the fewest requests in flight, and one that fails is left alone
    /// for a back-off while the others take its share.
    #[serde(default)]
    pub base_urls: Vec<String>,
    /// Model name sent with each request; also the embedder's model id.
    pub model: String,
    /// Name of the environment variable holding the API key, sent as a bearer token.
    /// Unset: `OPENAI_API_KEY` if that is set, else no `Authorization` header.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Length of the vectors the model returns; responses of another length are an error.
    pub dimension: usize,
    /// Token limit per input advertised to callers, who split longer texts.
    #[serde(default = "default_openai_max_tokens")]
    pub max_tokens: usize,
    /// Inputs per request at most.
    #[serde(default = "default_openai_batch_size")]
    pub batch_size: usize,
    /// Tokens per request at most (estimated as for `max_tokens`): requests are filled by
    /// tokens, so many short texts share one and long ones go a few at a time. A single
    /// text over the limit goes alone.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// Requests in flight at most per server, across all callers of one embedder.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Time limit of one request, from sending to the end of the response body.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a request after a retryable failure (connection error, timeout, HTTP
    /// 408, 429, 5xx) before the call fails with a retryable error.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Upper bound of the first back-off; each further retry doubles it. The actual wait is
    /// drawn uniformly below the bound ("full jitter") so that clients spread out.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Cap of the back-off bound, and of a server's `Retry-After`.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
}

impl OpenAiConfig {
    /// The servers' base URLs: `base_urls`, or `base_url` alone.
    pub fn endpoints(&self) -> Vec<&str> {
        match self.base_urls.is_empty() {
            true => vec![self.base_url.as_str()],
            false => self.base_urls.iter().map(String::as_str).collect(),
        }
    }

    /// A configuration with every optional setting at its default.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimension: usize) -> Self {
        Self {
            base_url: base_url.into(),
            base_urls: Vec::new(),
            model: model.into(),
            api_key_env: None,
            dimension,
            max_tokens: default_openai_max_tokens(),
            batch_size: default_openai_batch_size(),
            batch_tokens: default_batch_tokens(),
            max_concurrency: default_max_concurrency(),
            timeout: default_timeout(),
            max_retries: default_max_retries(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
        }
    }
}

fn default_openai_max_tokens() -> usize {
    512
}
fn default_openai_batch_size() -> usize {
    64
}
fn default_batch_tokens() -> usize {
    8_192
}
fn default_max_concurrency() -> usize {
    4
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_retries() -> u32 {
    5
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(200)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(10)
}

/// Builds the embedder `cfg` describes. Loading a local model reads its weights (≈ 90 MB
/// for all-MiniLM-L6-v2), so call this once and share the result.
pub fn build_embedder(cfg: &EmbedderConfig) -> Result<Arc<dyn Embedder>, EmbedError> {
    match cfg {
        #[cfg(feature = "cuda")]
        EmbedderConfig::Local(local) if crate::candle::cuda_available() => {
            Ok(Arc::new(crate::candle::CandleEmbedder::load(local)?))
        }
        #[cfg(feature = "local")]
        EmbedderConfig::Local(local) => Ok(Arc::new(crate::LocalEmbedder::load(local)?)),
        #[cfg(not(feature = "local"))]
        EmbedderConfig::Local(_) => Err(EmbedError::InvalidConfig {
            reason: "backend \"local\" needs tidewater-embed built with the \"local\" feature"
                .into(),
        }),
        EmbedderConfig::Openai(openai) => Ok(Arc::new(crate::openai::OpenAiEmbedder::new(
            openai.clone(),
        )?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_local_model() {
        let cfg: EmbedderConfig = serde_json::from_str(r#"{"backend": "local"}"#).unwrap();
        assert_eq!(cfg, EmbedderConfig::default());
        let EmbedderConfig::Local(local) = cfg else {
            panic!("not local")
        };
        assert_eq!((local.max_seq_len, local.batch_size), (None, 32));
        assert_eq!(local.precision, Precision::F32);
        let int8: EmbedderConfig =
            serde_json::from_str(r#"{"backend": "local", "precision": "int8"}"#).unwrap();
        assert!(matches!(int8, EmbedderConfig::Local(l) if l.precision == Precision::Int8));
        assert!(serde_json::from_str::<EmbedderConfig>(
            r#"{"backend": "local", "precision": "fp8"}"#
        )
        .is_err());
    }

    #[test]
    fn openai_defaults_and_durations() {
        let cfg: EmbedderConfig = serde_json::from_str(
            r#"{"backend": "openai", "base_url": "http://h:1", "model": "m", "dimension": 3,
                "timeout": "2s 500ms", "backoff_initial": "50ms"}"#,
        )
        .unwrap();
        let mut want = OpenAiConfig::new("http://h:1", "m", 3);
        want.timeout = Duration::from_millis(2500);
        want.backoff_initial = Duration::from_millis(50);
        assert_eq!(cfg, EmbedderConfig::Openai(want));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = serde_json::from_str::<EmbedderConfig>(r#"{"backend": "local", "batch": 3}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `batch`"), "{err}");
        let err = serde_json::from_str::<EmbedderConfig>(
            r#"{"backend": "openai", "base_url": "u", "model": "m", "dimension": 3, "retries": 1}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `retries`"), "{err}");
        assert!(serde_json::from_str::<EmbedderConfig>(r#"{"backend": "onnx"}"#).is_err());
    }

    #[test]
    fn round_trips_through_serde() {
        let cfg = EmbedderConfig::Openai(OpenAiConfig::new("http://h:1/v1", "m", 8));
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<EmbedderConfig>(&json).unwrap(), cfg);
    }
}
