//! [`LocalEmbedder`]: a sentence model run in-process by Tidewater's own CPU encoder.

use std::path::Path;

use serde::Deserialize;
use tokenizers::Encoding;

use crate::config::Precision;
use crate::encoder::{Encoder, EncoderConfig};
use crate::model_dir::check_model_dir;
use crate::tokenize::{model_id_of, TextInput};
use crate::{EmbedError, Embedder, LocalModelConfig};

/// Tokens of one forward pass at most: inputs are packed without padding, so a pass of
/// short queries holds many, and memory stays bounded (about 60 MB of activations for a
/// 384-wide model, 120 MB for a 768-wide one).
const PASS_TOKENS: usize = 4096;

/// How token vectors become one sentence vector, from the model's
/// `1_Pooling/config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    /// The mean of all token vectors (all-MiniLM-L6-v2, all-mpnet-base-v2).
    Mean,
    /// The first token's vector (BGE).
    Cls,
}

/// A BERT-family or MPNet sentence model run on the CPU.
///
/// Texts are tokenised with truncation, packed into passes, run through the encoder,
/// pooled as the model's sentence-transformers configuration says (mean or CLS) and
/// L2-normalised: the pipeline sentence-transformers uses, so vectors match its output.
pub struct LocalEmbedder {
    encoder: Encoder,
    /// Inputs are packed, never padded.
    input: TextInput,
    model_id: String,
    pooling: Pooling,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder")
            .field("model_id", &self.model_id)
            .field("dimension", &self.encoder.config().hidden)
            .field("max_seq_len", &self.input.max_seq_len())
            .field("pooling", &self.pooling)
            .finish_non_exhaustive()
    }
}

impl LocalEmbedder {
    /// Loads the model in `cfg.model_dir` (default: [`crate::default_model_dir`]).
    ///
    /// Fails with [`EmbedError::ModelMissing`], naming the path and `scripts/fetch-model.sh`,
    /// when the directory or one of its files is absent, and with
    /// [`EmbedError::ModelFormat`] when the model is not one the encoder runs.
    pub fn load(cfg: &LocalModelConfig) -> Result<Self, EmbedError> {
        cfg.validate()?;
        let dir = cfg.resolved_model_dir();
        check_model_dir(&dir)?;
        let config = EncoderConfig::read(&dir.join("config.json"))?;
        let sentence = SentenceConfig::read(&dir)?;
        let max_seq_len = cfg.max_seq_len.or(sentence.max_seq_length).unwrap_or(256);
        if max_seq_len < 2 {
            return Err(EmbedError::invalid_config("max_seq_len must be at least 2"));
        }
        if max_seq_len > config.max_sequence_len() {
            return Err(EmbedError::invalid_config(format!(
                "max_seq_len {max_seq_len} exceeds the model's {} positions",
                config.max_sequence_len()
            )));
        }
        let input = TextInput::load(&dir.join("tokenizer.json"), max_seq_len, cfg.threads)?;
        let encoder = Encoder::load(config, &dir.join("model.safetensors"), cfg.precision)?;
        let model_id = match cfg.precision {
            Precision::F32 => model_id_of(&dir),
            // Their vectors differ slightly: cached vectors of one are not the other's.
            Precision::Int8 => format!("{}-int8", model_id_of(&dir)),
        };
        tracing::info!(
            model = %model_id,
            dir = %dir.display(),
            dimension = encoder.config().hidden,
            max_seq_len,
            precision = ?cfg.precision,
            pooling = ?sentence.pooling,
            "loaded local embedding model"
        );
        Ok(Self {
            encoder,
            input,
            model_id,
            pooling: sentence.pooling,
        })
    }

    fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.input.encode(texts)?;
        let mut out = Vec::with_capacity(texts.len());
        let mut pass: Vec<&[u32]> = Vec::new();
        let mut pass_tokens = 0;
        for ids in encodings.iter().map(Encoding::get_ids) {
            if !pass.is_empty() && pass_tokens + ids.len() > PASS_TOKENS {
                out.extend(self.run_pass(&pass)?);
                pass.clear();
                pass_tokens = 0;
            }
            pass.push(ids);
            pass_tokens += ids.len();
        }
        out.extend(self.run_pass(&pass)?);
        Ok(out)
    }

    /// Encodes one pass of sequences, pools and normalises each.
    fn run_pass(&self, sequences: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let h = self.encoder.config().hidden;
        self.encoder.forward(sequences, |hidden| {
            let mut rows = hidden.chunks_exact(h);
            sequences
                .iter()
                .map(|s| {
                    let mut v = vec![0f32; h];
                    for (i, row) in rows.by_ref().take(s.len()).enumerate() {
                        if i == 0 || self.pooling == Pooling::Mean {
                            v.iter_mut().zip(row).for_each(|(v, r)| *v += r);
                        }
                    }
                    // sentence-transformers' Normalize: x / max(‖x‖, 1e-12); the mean's
                    // 1/len cancels out.
                    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
                    v.iter_mut().for_each(|x| *x /= norm);
                    v
                })
                .collect()
        })
    }
}

impl Embedder for LocalEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.encoder.config().hidden
    }

    fn max_tokens(&self) -> usize {
        self.input.max_seq_len()
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.input.count_tokens(text)
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.input.run(|| self.embed_all(texts))
    }
}

/// What the model's sentence-transformers files say: its sequence length and pooling.
struct SentenceConfig {
    max_seq_length: Option<usize>,
    pooling: Pooling,
}

impl SentenceConfig {
    /// Reads `sentence_bert_config.json` and the pooling module's `config.json` (found
    /// through `modules.json`); a model without them is mean-pooled at the configured or
    /// default length.
    fn read(dir: &Path) -> Result<Self, EmbedError> {
        #[derive(Deserialize)]
        struct Bert {
            max_seq_length: Option<usize>,
        }
        #[derive(Deserialize)]
        struct Module {
            path: String,
            #[serde(rename = "type")]
            kind: String,
        }
        #[derive(Deserialize)]
        struct PoolingFile {
            #[serde(default)]
            pooling_mode_cls_token: bool,
            #[serde(default)]
            pooling_mode_mean_tokens: bool,
        }
        let bert: Option<Bert> = read_json(&dir.join("sentence_bert_config.json"))?;
        let modules: Option<Vec<Module>> = read_json(&dir.join("modules.json"))?;
        let pooling_dir = modules
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map_or_else(|| "1_Pooling".to_owned(), |m| m.path);
        let pooling_path = dir.join(pooling_dir).join("config.json");
        let pooling = match read_json::<PoolingFile>(&pooling_path)? {
            None => Pooling::Mean,
            Some(p) if p.pooling_mode_mean_tokens && !p.pooling_mode_cls_token => Pooling::Mean,
            Some(p) if p.pooling_mode_cls_token && !p.pooling_mode_mean_tokens => Pooling::Cls,
            Some(_) => {
                return Err(EmbedError::ModelFormat {
                    path: pooling_path,
                    reason: "only mean or CLS pooling, alone, is supported".into(),
                })
            }
        };
        Ok(Self {
            max_seq_length: bert.and_then(|b| b.max_seq_length),
            pooling,
        })
    }
}

/// The JSON file at `path`, or `None` when there is none.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, EmbedError> {
    if !path.is_file() {
        return Ok(None);
    }
    serde_json::from_str(&fs_err::read_to_string(path)?)
        .map(Some)
        .map_err(|e| EmbedError::ModelFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}
