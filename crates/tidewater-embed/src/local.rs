//! [`LocalEmbedder`]: a sentence model run in-process by Tidewater's own CPU encoder.

use std::path::Path;

use rayon::prelude::*;
use serde::Deserialize;
use tokenizers::Encoding;

use crate::config::Precision;
use crate::encoder::{Encoder, EncoderConfig, PassThreads};
use crate::model_dir::check_model_dir;
use crate::tokenize::{model_id_of, TextInput};
use crate::{EmbedError, Embedder, LocalModelConfig};

/// Tokens of one forward pass that has the thread pool to itself, at most: inputs are
/// packed without padding, so a pass of short queries holds many, and memory stays bounded
/// (about 60 MB of activations for a 384-wide model, 120 MB for a 768-wide one).
const PASS_TOKENS: usize = 4096;

/// With at least this many tokens per thread, a call's passes run side by side, one on
/// each thread ([`PassThreads::Caller`]), instead of one after another across all threads.
/// Threads then never wait for each other between a pass's steps (on two cores the encoder
/// got 5–10 % faster on ~250-token chunks); below it, the last pass's imbalance would cost
/// more than the waits.
const MIN_TOKENS_PER_THREAD: usize = 1024;

/// Tokens of one pass that runs on one thread, about: the passes side by side hold about as
/// many activations as one pool pass of [`PASS_TOKENS`] on two threads.
const THREAD_PASS_TOKENS: usize = 2048;

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
        let sequences: Vec<&[u32]> = encodings.iter().map(Encoding::get_ids).collect();
        let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        let plan = plan_passes(&lengths, rayon::current_num_threads());
        let passes = plan.bounds.windows(2).map(|w| &sequences[w[0]..w[1]]);
        let parts: Vec<Vec<Vec<f32>>> = match plan.threads {
            PassThreads::Pool => passes
                .map(|pass| self.run_pass(pass, PassThreads::Pool))
                .collect::<Result<_, _>>()?,
            PassThreads::Caller => passes
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(|pass| self.run_pass(pass, PassThreads::Caller))
                .collect::<Result<_, _>>()?,
        };
        Ok(parts.into_iter().flatten().collect())
    }

    /// Encodes one pass of sequences, pools and normalises each.
    fn run_pass(
        &self,
        sequences: &[&[u32]],
        threads: PassThreads,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let h = self.encoder.config().hidden;
        self.encoder.forward(sequences, threads, |hidden| {
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

/// How one call's sequences are cut into forward passes.
#[derive(Debug, PartialEq, Eq)]
struct PassPlan {
    /// Pass `i` encodes sequences `bounds[i]..bounds[i + 1]`; no pass is empty.
    bounds: Vec<usize>,
    /// How each pass uses the thread pool.
    threads: PassThreads,
}

/// Cuts sequences of `lengths` tokens into passes for a pool of `threads`, keeping their
/// order. Enough work for every thread goes into passes that run side by side, a multiple
/// of `threads` of them and each sequence in the pass its midpoint falls in, so that each
/// holds its share of the tokens to within a sequence. Less work goes into pool passes of
/// up to [`PASS_TOKENS`], filled in order.
fn plan_passes(lengths: &[usize], threads: usize) -> PassPlan {
    let total: usize = lengths.iter().sum();
    let mut bounds = vec![0];
    if threads > 1 && total >= threads * MIN_TOKENS_PER_THREAD {
        let passes = total.div_ceil(THREAD_PASS_TOKENS).div_ceil(threads) * threads;
        let mut before = 0;
        for (i, len) in lengths.iter().enumerate() {
            let pass = (2 * before + len) * passes / (2 * total);
            if pass + 1 > bounds.len() && i > *bounds.last().expect("starts with 0") {
                bounds.push(i);
            }
            before += len;
        }
        bounds.push(lengths.len());
        return PassPlan {
            bounds,
            threads: PassThreads::Caller,
        };
    }
    let mut tokens = 0;
    for (i, len) in lengths.iter().enumerate() {
        if tokens > 0 && tokens + len > PASS_TOKENS {
            bounds.push(i);
            tokens = 0;
        }
        tokens += len;
    }
    if lengths.len() > *bounds.last().expect("starts with 0") {
        bounds.push(lengths.len());
    }
    PassPlan {
        bounds,
        threads: PassThreads::Pool,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sequence once, in order, in non-empty passes.
    fn assert_covers(plan: &PassPlan, sequences: usize) {
        assert_eq!(plan.bounds.first(), Some(&0));
        assert_eq!(plan.bounds.last(), Some(&sequences));
        assert!(plan.bounds.windows(2).all(|w| w[0] < w[1]), "{plan:?}");
    }

    fn pass_tokens(plan: &PassPlan, lengths: &[usize]) -> Vec<usize> {
        plan.bounds
            .windows(2)
            .map(|w| lengths[w[0]..w[1]].iter().sum())
            .collect()
    }

    #[test]
    fn enough_work_runs_side_by_side_in_even_passes() {
        // 58 chunks of ~253 tokens on two threads: 8 passes of 7 or 8 chunks.
        let lengths: Vec<usize> = (0..58).map(|i| 250 + i % 7).collect();
        let plan = plan_passes(&lengths, 2);
        assert_eq!(plan.threads, PassThreads::Caller);
        assert_covers(&plan, lengths.len());
        let tokens = pass_tokens(&plan, &lengths);
        assert_eq!(tokens.len(), 8, "{tokens:?}");
        let (min, max) = (tokens.iter().min().unwrap(), tokens.iter().max().unwrap());
        assert!(max - min <= 256, "{tokens:?}");

        // Long sequences among short ones: no pass is empty, none is lost.
        let lengths = [512, 3, 512, 512, 2, 2, 2, 512, 512, 7];
        let plan = plan_passes(&lengths, 2);
        assert_eq!(plan.threads, PassThreads::Caller);
        assert_covers(&plan, lengths.len());
        let plan = plan_passes(&[4096, 2, 2], 2);
        assert_eq!(plan.threads, PassThreads::Caller);
        assert_covers(&plan, 3);
    }

    #[test]
    fn little_work_or_one_thread_uses_the_pool_per_pass() {
        let queries = [16; 100];
        let plan = plan_passes(&queries, 2);
        assert_eq!(plan.threads, PassThreads::Pool);
        assert_eq!(plan.bounds, vec![0, 100]);

        let chunks = [256; 40];
        let plan = plan_passes(&chunks, 1);
        assert_eq!(plan.threads, PassThreads::Pool);
        assert_covers(&plan, chunks.len());
        assert!(pass_tokens(&plan, &chunks)
            .iter()
            .all(|&t| t <= PASS_TOKENS));

        assert_eq!(plan_passes(&[], 2).bounds, vec![0]);
    }
}
