//! Reading an encoder from a model directory: `config.json` for its shape, and its weights
//! from `model.safetensors` under the names Hugging Face's BERT and MPNet use.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::{Encoder, Layer, Linear, Norm, RelativeBias};
use crate::{EmbedError, Precision};

/// The encoder families understood, by `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Architecture {
    /// BERT and its sentence models (MiniLM, BGE, E5, ...): absolute positions, token types.
    Bert,
    /// MPNet (all-mpnet-base-v2): absolute positions from `pad_token_id + 1`, and a
    /// learned attention bias by relative position.
    MpNet,
}

/// The names of one layer's tensors, under `encoder.layer.{i}.`.
struct LayerTensors {
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attention_out: &'static str,
    attention_norm: &'static str,
    up: &'static str,
    down: &'static str,
    output_norm: &'static str,
}

impl Architecture {
    /// Where Hugging Face's implementation keeps each layer's weights.
    fn layer_tensors(self) -> LayerTensors {
        match self {
            Self::Bert => LayerTensors {
                query: "attention.self.query",
                key: "attention.self.key",
                value: "attention.self.value",
                attention_out: "attention.output.dense",
                attention_norm: "attention.output.LayerNorm",
                up: "intermediate.dense",
                down: "output.dense",
                output_norm: "output.LayerNorm",
            },
            Self::MpNet => LayerTensors {
                query: "attention.attn.q",
                key: "attention.attn.k",
                value: "attention.attn.v",
                attention_out: "attention.attn.o",
                attention_norm: "attention.LayerNorm",
                up: "intermediate.dense",
                down: "output.dense",
                output_norm: "output.LayerNorm",
            },
        }
    }
}

/// The shape of an encoder.
#[derive(Debug, Clone)]
pub(crate) struct EncoderConfig {
    pub architecture: Architecture,
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    /// Position of a sequence's first token in the position embeddings.
    pub position_offset: usize,
    pub layer_norm_eps: f32,
    pub relative_buckets: usize,
}

impl EncoderConfig {
    /// Most tokens one sequence may have.
    pub(crate) fn max_sequence_len(&self) -> usize {
        self.max_positions - self.position_offset
    }
}

/// `config.json`, the fields used.
#[derive(Deserialize)]
struct RawConfig {
    model_type: String,
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: Option<usize>,
    #[serde(default = "default_act")]
    hidden_act: String,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default = "default_buckets")]
    relative_attention_num_buckets: usize,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_buckets() -> usize {
    32
}

impl EncoderConfig {
    /// Reads `config.json` and checks that the encoder here can run it.
    pub(crate) fn read(path: &Path) -> Result<Self, EmbedError> {
        let format = |reason: String| EmbedError::ModelFormat {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawConfig = serde_json::from_str(&fs_err::read_to_string(path)?)
            .map_err(|e| format(e.to_string()))?;
        let architecture = match raw.model_type.as_str() {
            "bert" => Architecture::Bert,
            "mpnet" => Architecture::MpNet,
            other => {
                return Err(format(format!(
                    "model_type {other:?} is not supported (bert and mpnet are)"
                )))
            }
        };
        if raw.hidden_act != "gelu" {
            return Err(format(format!(
                "hidden_act {:?} is not supported (gelu is)",
                raw.hidden_act
            )));
        }
        if let Some(kind) = raw
            .position_embedding_type
            .as_deref()
            .filter(|k| *k != "absolute")
        {
            return Err(format(format!(
                "position_embedding_type {kind:?} is not supported (absolute is)"
            )));
        }
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            return Err(format(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size, raw.num_attention_heads
            )));
        }
        if architecture == Architecture::MpNet && raw.relative_attention_num_buckets < 4 {
            return Err(format(format!(
                "relative_attention_num_buckets {} is too few (at least 4)",
                raw.relative_attention_num_buckets
            )));
        }
        let position_offset = match architecture {
            Architecture::Bert => 0,
            // Positions count from padding_idx + 1, as in RoBERTa.
            Architecture::MpNet => raw.pad_token_id.unwrap_or(1) + 1,
        };
        if raw.max_position_embeddings <= position_offset + 2 {
            return Err(format(format!(
                "max_position_embeddings {} leaves no positions",
                raw.max_position_embeddings
            )));
        }
        Ok(Self {
            architecture,
            hidden: raw.hidden_size,
            heads: raw.num_attention_heads,
            layers: raw.num_hidden_layers,
            intermediate: raw.intermediate_size,
            vocab_size: raw.vocab_size,
            max_positions: raw.max_position_embeddings,
            position_offset,
            layer_norm_eps: raw.layer_norm_eps as f32,
            relative_buckets: raw.relative_attention_num_buckets,
        })
    }
}

impl Encoder {
    /// Loads the encoder of `config` from the safetensors file `path`.
    pub(crate) fn load(
        config: EncoderConfig,
        path: &Path,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        let bytes = fs_err::read(path)?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| EmbedError::ModelFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let store = Store::new(&tensors, path, config.architecture);
        let h = config.hidden;
        let norm = |name: &str| -> Result<Norm, EmbedError> {
            Ok(Norm {
                gamma: store.get(&format!("{name}.weight"), &[h])?,
                beta: store.get(&format!("{name}.bias"), &[h])?,
            })
        };
        let linear =
            |names: &[&str], inputs: usize, outputs: usize| -> Result<Linear, EmbedError> {
                // PyTorch stores `outputs × inputs`; the encoder wants `inputs × (Σ outputs)`.
                let width = outputs * names.len();
                let mut weights = vec![0f32; inputs * width];
                let mut bias = Vec::with_capacity(width);
                for (part, name) in names.iter().enumerate() {
                    let w = store.get(&format!("{name}.weight"), &[outputs, inputs])?;
                    for (o, row) in w.chunks_exact(inputs).enumerate() {
                        for (i, v) in row.iter().enumerate() {
                            weights[i * width + part * outputs + o] = *v;
                        }
                    }
                    bias.extend(store.get(&format!("{name}.bias"), &[outputs])?);
                }
                Ok(Linear::new(weights, bias, inputs, width, precision))
            };

        let names = config.architecture.layer_tensors();
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let name = |part: &str| format!("encoder.layer.{i}.{part}");
            let (q, k, v) = (name(names.query), name(names.key), name(names.value));
            layers.push(Layer {
                qkv: linear(&[&q, &k, &v], h, h)?,
                attention_out: linear(&[&name(names.attention_out)], h, h)?,
                attention_norm: norm(&name(names.attention_norm))?,
                up: linear(&[&name(names.up)], h, config.intermediate)?,
                down: linear(&[&name(names.down)], config.intermediate, h)?,
                output_norm: norm(&name(names.output_norm))?,
            });
        }
        let token_type = match config.architecture {
            Architecture::Bert => {
                Some(store.get_prefix("embeddings.token_type_embeddings.weight", h)?)
            }
            Architecture::MpNet => None,
        };
        let relative = match config.architecture {
            Architecture::Bert => None,
            Architecture::MpNet => Some(RelativeBias::new(
                &store.get(
                    "encoder.relative_attention_bias.weight",
                    &[config.relative_buckets, config.heads],
                )?,
                config.relative_buckets,
                config.heads,
                config.max_sequence_len(),
            )),
        };
        let (fused, int8) = attention_paths(&config);
        Ok(Self {
            word: store.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: store.get(
                "embeddings.position_embeddings.weight",
                &[config.max_positions, h],
            )?,
            token_type,
            embedding_norm: norm("embeddings.LayerNorm")?,
            layers,
            relative,
            int8_attention: precision == Precision::Int8 && int8,
            fused_attention: fused,
            config,
            scratch: Default::default(),
        })
    }
}

/// Tensors by name, with or without the model-type prefix (`bert.`, `mpnet.`) that some
/// checkpoints carry.
struct Store<'a> {
    tensors: &'a SafeTensors<'a>,
    path: &'a Path,
    prefix: &'static str,
}

impl<'a> Store<'a> {
    fn new(tensors: &'a SafeTensors<'a>, path: &'a Path, architecture: Architecture) -> Self {
        let prefix = match architecture {
            Architecture::Bert => "bert.",
            Architecture::MpNet => "mpnet.",
        };
        let bare = tensors
            .names()
            .contains(&"embeddings.word_embeddings.weight");
        let prefix = if bare { "" } else { prefix };
        Self {
            tensors,
            path,
            prefix,
        }
    }

    /// The tensor `name` as f32, checking its shape.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let full = format!("{}{name}", self.prefix);
        let format = |reason: String| EmbedError::ModelFormat {
            path: self.path.to_path_buf(),
            reason,
        };
        let view = self
            .tensors
            .tensor(&full)
            .map_err(|_| format(format!("tensor {full} is missing")))?;
        if view.shape() != shape {
            return Err(format(format!(
                "tensor {full} has shape {:?}, expected {shape:?}",
                view.shape()
            )));
        }
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(format(format!(
                    "tensor {full} has dtype {other:?} (F32, F16 and BF16 are read)"
                )))
            }
        };
        Ok(values)
    }

    /// The first row (`width` values) of the 2-d tensor `name`.
    fn get_prefix(&self, name: &str, width: usize) -> Result<Vec<f32>, EmbedError> {
        let full = format!("{}{name}", self.prefix);
        let rows = self
            .tensors
            .tensor(&full)
            .map_err(|_| EmbedError::ModelFormat {
                path: self.path.to_path_buf(),
                reason: format!("tensor {full} is missing"),
            })?
            .shape()
            .first()
            .copied()
            .unwrap_or(0);
        let mut all = self.get(name, &[rows, width])?;
        if rows == 0 {
            return Err(EmbedError::ModelFormat {
                path: self.path.to_path_buf(),
                reason: format!("tensor {full} is empty"),
            });
        }
        all.truncate(width);
        Ok(all)
    }
}

/// Whether [`super::attention_f32`] and [`super::attention_int8`] can run this model's
/// heads on this CPU.
fn attention_paths(config: &EncoderConfig) -> (bool, bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let d = config.hidden / config.heads;
        (
            super::attention_f32::available(d),
            super::attention_int8::available(d),
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = config;
        (false, false)
    }
}
