//! [`CandleEmbedder`]: loads a sentence model directory and embeds texts with it.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::Encoding;

use super::batching::batches_by_length;
use crate::model_dir::check_model_dir;
use crate::tokenize::{model_id_of, TextInput};
use crate::{EmbedError, Embedder, LocalModelConfig};

/// A BERT sentence model run by candle: on the first CUDA device when built with the
/// `cuda` feature and one is present, else on the CPU (where [`crate::LocalEmbedder`] is
/// faster; `tidewater bench embed` compares them).
///
/// Texts are tokenised with truncation at `max_seq_len`, grouped by length into batches,
/// run through the encoder, mean-pooled over their real tokens and L2-normalised: the
/// pipeline sentence-transformers uses for all-MiniLM-L6-v2, so vectors match its output.
pub struct CandleEmbedder {
    model: BertModel,
    /// Padding is done per batch by hand; the thread pool bounds candle's matrix kernels.
    input: TextInput,
    device: Device,
    model_id: String,
    dimension: usize,
    batch_size: usize,
    pad_id: u32,
}

impl std::fmt::Debug for CandleEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CandleEmbedder")
            .field("model_id", &self.model_id)
            .field("dimension", &self.dimension)
            .field("max_seq_len", &self.input.max_seq_len())
            .field("batch_size", &self.batch_size)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl CandleEmbedder {
    /// Loads the model in `cfg.model_dir` (default: [`crate::default_model_dir`]).
    ///
    /// Fails with [`EmbedError::ModelMissing`], naming the path and `scripts/fetch-model.sh`,
    /// when the directory or one of its files is absent.
    pub fn load(cfg: &LocalModelConfig) -> Result<Self, EmbedError> {
        cfg.validate()?;
        let dir = cfg.resolved_model_dir();
        check_model_dir(&dir)?;

        let config_path = dir.join("config.json");
        let bert_config: BertConfig = serde_json::from_str(&fs_err::read_to_string(&config_path)?)
            .map_err(|e| EmbedError::ModelFormat {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
        let max_seq_len = cfg.max_seq_len.unwrap_or(256);
        if max_seq_len > bert_config.max_position_embeddings {
            return Err(EmbedError::invalid_config(format!(
                "max_seq_len {max_seq_len} exceeds the model's {} positions",
                bert_config.max_position_embeddings
            )));
        }

        let input = TextInput::load(&dir.join("tokenizer.json"), max_seq_len, cfg.threads)?;
        let device = pick_device()?;
        let weights_path = dir.join("model.safetensors");
        // Read rather than mmap: mmap needs `unsafe` (the file could change underneath), and
        // the weights of a small sentence model fit comfortably in memory.
        let weights = fs_err::read(&weights_path)?;
        let model = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .and_then(|vb| BertModel::load(vb, &bert_config))
            .map_err(|source| EmbedError::Candle {
                context: format!("loading weights from {}", weights_path.display()),
                source,
            })?;

        let model_id = model_id_of(&dir);
        tracing::info!(
            model = %model_id,
            dir = %dir.display(),
            dimension = bert_config.hidden_size,
            max_seq_len,
            device = ?device,
            "loaded local embedding model"
        );
        Ok(Self {
            model,
            input,
            device,
            model_id,
            dimension: bert_config.hidden_size,
            batch_size: cfg.batch_size,
            pad_id: u32::try_from(bert_config.pad_token_id).unwrap_or(0),
        })
    }

    fn embed_all(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.input.encode(texts)?;
        let lengths: Vec<usize> = encodings.iter().map(Encoding::len).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for batch in batches_by_length(&lengths, self.batch_size) {
            let group: Vec<&Encoding> = batch.iter().map(|&i| &encodings[i]).collect();
            let vectors = self.forward(&group).map_err(|source| EmbedError::Candle {
                context: "running the model".into(),
                source,
            })?;
            for (i, v) in batch.into_iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Embeds one batch: pads to its longest input, runs the encoder, mean-pools over the
    /// attention mask and L2-normalises.
    fn forward(&self, batch: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let width = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * width);
        let mut type_ids = Vec::with_capacity(batch.len() * width);
        let mut mask = Vec::with_capacity(batch.len() * width);
        for e in batch {
            let pad = width - e.len();
            ids.extend_from_slice(e.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, pad));
            type_ids.extend_from_slice(e.get_type_ids());
            type_ids.extend(std::iter::repeat_n(0, pad));
            mask.extend_from_slice(e.get_attention_mask());
            mask.extend(std::iter::repeat_n(0, pad));
        }
        let shape = (batch.len(), width);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let type_ids = Tensor::from_vec(type_ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;

        let hidden = self.model.forward(&ids, &type_ids, Some(&mask))?; // (batch, width, dim)
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (batch, width, 1)
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (batch, dim)
                                                           // Every input has at least [CLS] and [SEP], so the count is never zero.
        let counts = mask.sum(1)?; // (batch, 1)
        let mean = summed.broadcast_div(&counts)?;
        // sentence-transformers' Normalize: x / max(‖x‖, 1e-12).
        let norms = mean
            .sqr()?
            .sum_keepdim(1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

impl Embedder for CandleEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
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

/// Whether a CUDA device is there for candle.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_available() -> bool {
    candle_core::utils::cuda_is_available() && Device::new_cuda(0).is_ok()
}

#[cfg(feature = "cuda")]
fn pick_device() -> Result<Device, EmbedError> {
    Device::cuda_if_available(0).map_err(|source| EmbedError::Candle {
        context: "opening the CUDA device".into(),
        source,
    })
}

#[cfg(not(feature = "cuda"))]
fn pick_device() -> Result<Device, EmbedError> {
    Ok(Device::Cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Length grouping keeps batches from padding much, so the integration tests rarely
    /// pad; this one forces a batch that is mostly padding, to check that pad tokens are
    /// masked out of attention and pooling.
    #[test]
    fn padding_does_not_change_vectors() {
        let model = CandleEmbedder::load(&LocalModelConfig::default())
            .unwrap_or_else(|e| panic!("cannot load the model: {e}"));
        let texts = [
            "short",
            "a much longer text, which pads the short one to many times its length: \
             the quick brown fox jumps over the lazy dog, again and again and again",
        ];
        let encodings = model.input.encode(&texts).unwrap();
        assert!(encodings[1].len() > 4 * encodings[0].len());
        let together = model.forward(&[&encodings[0], &encodings[1]]).unwrap();
        for (i, encoding) in encodings.iter().enumerate() {
            let alone = model.forward(&[encoding]).unwrap().remove(0);
            let dot: f32 = alone.iter().zip(&together[i]).map(|(a, b)| a * b).sum();
            assert!(
                dot >= 0.9999,
                "text {i}: cosine {dot} between padded and alone"
            );
        }
    }
}
