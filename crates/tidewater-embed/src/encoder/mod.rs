//! A transformer encoder for sentence models on the CPU: BERT and MPNet by their
//! `config.json`, in f32 or with int8 linear layers and attention.
//!
//! Written for throughput rather than generality. A batch is *packed*: the sequences'
//! tokens are laid end to end in one `tokens × hidden` matrix, without padding, so every
//! linear layer is one large matrix product over all tokens of the batch and no work is
//! spent on pad tokens; only attention looks at sequence boundaries. Residual connections
//! are folded into the products (the product accumulates onto the residual), each layer's
//! bias is added by the next pass over its output (see `Linear::forward_deferring_bias`),
//! and layer norm, GELU and softmax are vectorised row kernels ([`kernels`], [`avx512`]).
//! On AVX-512, f32 attention runs fused, head by head ([`attention_f32`]); with int8
//! weights, attention runs in int8 too ([`attention_int8`]).
//!
//! A pass either spreads each of its steps over the thread pool, or runs whole on the
//! calling thread beside passes on the other threads ([`PassThreads`]): with enough tokens,
//! the second keeps every core busy without the threads meeting between steps.

#[cfg(target_arch = "x86_64")]
mod attention_f32;
#[cfg(target_arch = "x86_64")]
mod attention_int8;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod int8;
mod kernels;
mod weights;

use parking_lot::Mutex;
use rayon::prelude::*;

use kernels::View;
pub(crate) use weights::EncoderConfig;

use crate::{EmbedError, Precision};

/// A linear layer's weights in the configured precision.
enum Weights {
    /// `inputs × outputs`, row-major.
    F32(Vec<f32>),
    Int8(int8::QuantizedLinear),
}

/// A linear layer: `y = x W + b`.
struct Linear {
    weights: Weights,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

impl Linear {
    /// `weights` given `inputs × outputs` row-major.
    fn new(
        weights: Vec<f32>,
        bias: Vec<f32>,
        inputs: usize,
        outputs: usize,
        precision: Precision,
    ) -> Self {
        let weights = match precision {
            Precision::F32 => Weights::F32(weights),
            Precision::Int8 => Weights::Int8(int8::QuantizedLinear::new(&weights, inputs, outputs)),
        };
        Self {
            weights,
            bias,
            inputs,
            outputs,
        }
    }

    /// `out = residual + x W (+ b)` for the `rows` rows of `x`, where `residual` is what
    /// `out` holds when `accumulate`, else zero. int8 layers add their bias as they store
    /// their products; f32 ones leave it out and return it, for the caller to add in the
    /// next pass over `out` (a GELU, a layer norm) instead of in a pass of its own.
    fn forward_deferring_bias(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        accumulate: bool,
        threads: PassThreads,
    ) -> Option<&[f32]> {
        debug_assert_eq!(x.len(), rows * self.inputs);
        let out = &mut out[..rows * self.outputs];
        match &self.weights {
            Weights::F32(w) => {
                kernels::matmul(
                    (rows, self.outputs, self.inputs),
                    View {
                        data: x,
                        offset: 0,
                        stride: self.inputs,
                    },
                    View {
                        data: w,
                        offset: 0,
                        stride: self.outputs,
                    },
                    false,
                    out,
                    self.outputs,
                    accumulate,
                    1.0,
                    threads == PassThreads::Pool,
                );
                Some(&self.bias)
            }
            Weights::Int8(q) => {
                match threads {
                    PassThreads::Pool => q.forward(x, rows, out, &self.bias, accumulate),
                    PassThreads::Caller => q.forward_serial(x, rows, out, &self.bias, accumulate),
                }
                None
            }
        }
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value side by side: `hidden × 3 hidden`.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    up: Linear,
    down: Linear,
    output_norm: Norm,
}

/// MPNet's learned attention bias by relative position, shared by all layers: for each
/// head, the bias of every query−key distance a sequence can have, looked up from the
/// model's bucket table once at load.
struct RelativeBias {
    /// `heads × (2 max_len − 1)`: head `h`'s bias for `i − j = d` at
    /// `h * (2 max_len − 1) + d + max_len − 1`.
    by_distance: Vec<f32>,
    max_len: usize,
}

/// The encoder: embeddings, then `layers` post-norm transformer layers.
pub(crate) struct Encoder {
    config: EncoderConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    /// Row 0 of the token type embeddings (BERT); sentence models embed one segment.
    token_type: Option<Vec<f32>>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    relative: Option<RelativeBias>,
    /// Whether attention runs in int8 ([`attention_int8`]): with int8 precision on CPUs
    /// with AVX-512 VNNI.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    int8_attention: bool,
    /// Whether f32 attention runs fused ([`attention_f32`]): on CPUs with AVX-512, for
    /// heads 32 or 64 wide.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fused_attention: bool,
    /// Activation buffers of finished passes, for the next ones.
    scratch: Mutex<Vec<Scratch>>,
}

/// How one forward pass uses the thread pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassThreads {
    /// Each step of the pass is spread over the pool: for a pass that runs alone.
    Pool,
    /// The whole pass runs on the calling thread: for passes that run side by side, one
    /// per thread, which then never wait for one another between steps.
    Caller,
}

impl PassThreads {
    /// The fewest items of a parallel iterator that one rayon job takes. With `Caller` that
    /// is all of them: the iterator never splits, and runs on the calling thread.
    fn min_len(self) -> usize {
        match self {
            PassThreads::Pool => 1,
            PassThreads::Caller => usize::MAX,
        }
    }
}

/// The activations of one pass.
#[derive(Default)]
struct Scratch {
    x: LineAligned,
    qkv: LineAligned,
    context: LineAligned,
    inner: LineAligned,
}

/// A reusable buffer of floats whose slice starts on a 64-byte cache line.
///
/// A large `Vec<f32>` starts 16 bytes into a page (the allocator's header), so every
/// 16-float vector of its rows straddled two cache lines: each load and store of the row
/// kernels and of the products' outputs touched two lines instead of one.
#[derive(Default)]
struct LineAligned(Vec<f32>);

impl LineAligned {
    /// `len` floats from the first cache line boundary. Contents are whatever earlier
    /// passes left; callers write every element before they read it.
    fn slice(&mut self, len: usize) -> &mut [f32] {
        const LINE_FLOATS: usize = 64 / std::mem::size_of::<f32>();
        self.0.resize(len + LINE_FLOATS - 1, 0.0);
        let skip = self.0.as_ptr().align_offset(64).min(LINE_FLOATS - 1);
        &mut self.0[skip..skip + len]
    }
}

impl Encoder {
    /// The model's configuration.
    pub(crate) fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Runs the encoder on `sequences` (token ids, special tokens included) and hands the
    /// last hidden states to `read`, packed: `Σ len × hidden`, sequence after sequence.
    pub(crate) fn forward<R>(
        &self,
        sequences: &[&[u32]],
        threads: PassThreads,
        read: impl FnOnce(&[f32]) -> R,
    ) -> Result<R, EmbedError> {
        let h = self.config.hidden;
        let tokens: usize = sequences.iter().map(|s| s.len()).sum();
        for s in sequences {
            if s.len() > self.config.max_sequence_len() {
                return Err(EmbedError::invalid_config(format!(
                    "a sequence of {} tokens exceeds the model's {} positions",
                    s.len(),
                    self.config.max_sequence_len()
                )));
            }
        }
        // Reusing the buffers saves the page faults of fresh ones (several percent of a pass).
        let mut scratch = self.scratch.lock().pop().unwrap_or_default();
        // Every element is written before it is read, so old contents do not matter.
        let x = scratch.x.slice(tokens * h);
        let qkv = scratch.qkv.slice(tokens * 3 * h);
        let context = scratch.context.slice(tokens * h);
        let inner = scratch.inner.slice(tokens * self.config.intermediate);
        self.embed(sequences, x, threads)?;
        let lengths: Vec<usize> = sequences.iter().map(|s| s.len()).collect();
        // Post-norm layers; each residual connection accumulates onto `x` in place. An f32
        // layer's bias is added by the pass that next reads its output (see
        // `Linear::forward_deferring_bias`).
        for layer in &self.layers {
            let v_bias = match layer
                .qkv
                .forward_deferring_bias(x, tokens, qkv, false, threads)
            {
                Some(bias) => {
                    // The query bias goes on the queries. The key bias shifts all scores of
                    // a query by the same q·b_k, which the softmax cancels: it is left out.
                    // The value bias comes out of attention unchanged (each row's weights
                    // sum to one), so attention adds it to its output.
                    qkv.par_chunks_mut(64 * 3 * h)
                        .with_min_len(threads.min_len())
                        .for_each(|rows| {
                            for row in rows.chunks_exact_mut(3 * h) {
                                kernels::add(&mut row[..h], &bias[..h]);
                            }
                        });
                    Some(&bias[2 * h..])
                }
                None => None,
            };
            self.attention(qkv, &lengths, context, v_bias, threads);
            let bias = layer
                .attention_out
                .forward_deferring_bias(context, tokens, x, true, threads);
            self.norm(x, &layer.attention_norm, bias, threads);
            let bias = self.feed_forward(layer, x, inner, tokens, threads);
            self.norm(x, &layer.output_norm, bias, threads);
        }
        let result = read(x);
        self.scratch.lock().push(scratch);
        Ok(result)
    }

    /// `x += down(gelu(up(x)))`, the layer's feed-forward block with its residual; returns
    /// the bias of `down` if it is still to be added.
    fn feed_forward<'l>(
        &self,
        layer: &'l Layer,
        x: &mut [f32],
        inner: &mut [f32],
        tokens: usize,
        threads: PassThreads,
    ) -> Option<&'l [f32]> {
        let (h, wide) = (self.config.hidden, self.config.intermediate);
        if let (Weights::Int8(up), Weights::Int8(down)) = (&layer.up.weights, &layer.down.weights) {
            // Block by block of rows through both layers, so that a block's inner
            // activations (4 × hidden wide) stay in cache from the first product to the
            // second instead of going out to memory three times.
            let rows = int8::ROWS_PER_TASK;
            x.par_chunks_mut(rows * h)
                .zip(inner.par_chunks_mut(rows * wide))
                .with_min_len(threads.min_len())
                .for_each(|(x, inner)| {
                    let rows = x.len() / h;
                    let inner = &mut inner[..rows * wide];
                    up.forward_serial(x, rows, inner, &layer.up.bias, false);
                    kernels::gelu(inner);
                    down.forward_serial(inner, rows, x, &layer.down.bias, true);
                });
            return None;
        }
        let bias = layer
            .up
            .forward_deferring_bias(x, tokens, inner, false, threads);
        inner
            .par_chunks_mut(16 * wide)
            .with_min_len(threads.min_len())
            .for_each(|rows| match bias {
                Some(bias) => kernels::gelu_with_bias(rows, bias),
                None => kernels::gelu(rows),
            });
        layer
            .down
            .forward_deferring_bias(inner, tokens, x, true, threads)
    }

    /// Layer norm of each row of `rows`, after adding `bias` if given.
    fn norm(&self, rows: &mut [f32], norm: &Norm, bias: Option<&[f32]>, threads: PassThreads) {
        let h = self.config.hidden;
        rows.par_chunks_mut(64 * h)
            .with_min_len(threads.min_len())
            .for_each(|rows| {
                kernels::layer_norm(
                    rows,
                    h,
                    bias,
                    &norm.gamma,
                    &norm.beta,
                    self.config.layer_norm_eps,
                )
            });
    }

    /// Word + position (+ token type) embeddings, normalised, into `x`.
    fn embed(
        &self,
        sequences: &[&[u32]],
        x: &mut [f32],
        threads: PassThreads,
    ) -> Result<(), EmbedError> {
        let h = self.config.hidden;
        let mut rows = x.chunks_exact_mut(h);
        for s in sequences {
            for (i, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= self.config.vocab_size {
                    return Err(EmbedError::invalid_config(format!(
                        "token id {id} is outside the model's vocabulary of {}",
                        self.config.vocab_size
                    )));
                }
                let row = rows.next().expect("x holds every token");
                let position = self.config.position_offset + i;
                row.copy_from_slice(&self.word[id * h..(id + 1) * h]);
                row.iter_mut()
                    .zip(&self.position[position * h..(position + 1) * h])
                    .for_each(|(r, p)| *r += p);
                if let Some(token_type) = &self.token_type {
                    row.iter_mut().zip(token_type).for_each(|(r, t)| *r += t);
                }
            }
        }
        self.norm(x, &self.embedding_norm, None, threads);
        Ok(())
    }

    /// Multi-head self-attention of each sequence over itself, from the packed
    /// `tokens × 3 hidden` query/key/value rows into `context` (`tokens × hidden`), plus
    /// `v_bias` (the value bias, if not yet in `qkv`) on every row.
    fn attention(
        &self,
        qkv: &[f32],
        lengths: &[usize],
        context: &mut [f32],
        v_bias: Option<&[f32]>,
        threads: PassThreads,
    ) {
        let h = self.config.hidden;
        let heads = self.config.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        // Split `context` into each sequence's rows, so sequences run in parallel.
        let mut parts = Vec::with_capacity(lengths.len());
        let mut rest = context;
        let mut start = 0;
        for &len in lengths {
            let (mine, tail) = rest.split_at_mut(len * h);
            parts.push((start, len, mine));
            rest = tail;
            start += len;
        }
        parts
            .into_par_iter()
            .with_min_len(threads.min_len())
            .for_each_init(
                AttentionBuffers::default,
                |buffers, (start, len, out): (usize, usize, &mut [f32])| {
                    for head in 0..heads {
                        let view = |part: usize| View {
                            data: qkv,
                            offset: start * 3 * h + part * h + head * d,
                            stride: 3 * h,
                        };
                        let relative = self.relative.as_ref().map(|relative| {
                            move |i: usize, scores: &mut [f32]| relative.add_to_row(scores, i, head)
                        });
                        let input = HeadInput {
                            q: view(0),
                            k: view(1),
                            v: view(2),
                            len,
                            d,
                            scale,
                            add_bias: relative.as_ref().map(|f| f as &AddBias),
                        };
                        let v_bias = v_bias.map(|b| &b[head * d..(head + 1) * d]);
                        let out = &mut out[head * d..];
                        #[cfg(target_arch = "x86_64")]
                        if self.int8_attention && len >= INT8_ATTENTION_MIN_LEN {
                            debug_assert!(v_bias.is_none(), "int8 layers add their biases");
                            attention_int8::head(&mut buffers.int8, &input, out, h);
                            continue;
                        }
                        #[cfg(target_arch = "x86_64")]
                        if self.fused_attention && len <= attention_f32::MAX_LEN {
                            attention_f32::head(&mut buffers.f32, &input, v_bias, out, h);
                            continue;
                        }
                        attention_head(buffers, &input, v_bias, out, h);
                    }
                },
            );
    }
}

/// Adds a bias to query `i`'s scores: `add_bias(i, scores)` (MPNet's relative positions).
type AddBias<'a> = dyn Fn(usize, &mut [f32]) + 'a;

/// One head of one sequence, as every attention path reads it: `softmax(scale q_i Kᵀ +
/// bias) V` for rows `q`, `k`, `v` of `d` values and `len` tokens, where `add_bias(i,
/// scores)`, if any, adds to query `i`'s `len` scores before the softmax.
#[derive(Clone, Copy)]
struct HeadInput<'a> {
    q: View<'a>,
    k: View<'a>,
    v: View<'a>,
    len: usize,
    d: usize,
    scale: f32,
    add_bias: Option<&'a AddBias<'a>>,
}

/// One head through the general matrix product, plus `v_bias` on every row: row `i` of
/// the result goes to `out[i * out_stride..][..d]`. The path for any head width and CPU;
/// [`attention_f32`] is the fast one on AVX-512.
fn attention_head(
    buffers: &mut AttentionBuffers,
    head: &HeadInput<'_>,
    v_bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    let HeadInput {
        q,
        k,
        v,
        len,
        d,
        scale,
        add_bias,
    } = *head;
    let AttentionBuffers { scores, sums, .. } = buffers;
    scores.resize(len * len, 0.0);
    sums.resize(len, 0.0);
    kernels::matmul((len, len, d), q, k, true, scores, len, false, scale, false);
    if let Some(add_bias) = add_bias {
        for (i, row) in scores.chunks_exact_mut(len).enumerate() {
            add_bias(i, row);
        }
    }
    // Softmax, with the division by each row's sum left for the row of the product, which
    // is d wide rather than len.
    kernels::exp_rows(scores, len, sums);
    let p = View {
        data: scores,
        offset: 0,
        stride: len,
    };
    kernels::matmul(
        (len, d, len),
        p,
        v,
        false,
        out,
        out_stride,
        false,
        1.0,
        false,
    );
    for (row, sum) in out.chunks_mut(out_stride).zip(sums.iter()) {
        let inv = 1.0 / sum;
        let row = &mut row[..d];
        match v_bias {
            Some(b) => row.iter_mut().zip(b).for_each(|(x, b)| *x = *x * inv + b),
            None => row.iter_mut().for_each(|x| *x *= inv),
        }
    }
}

/// The shortest sequence whose attention runs in int8 (with int8 precision): shorter ones
/// cost little in f32, and their vectors, averaged over few tokens, would keep more of the
/// quantisation error (the empty text's cosine to f32 fell from 0.9935 to 0.9919).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const INT8_ATTENTION_MIN_LEN: usize = 32;

/// One thread's attention buffers, reused from sequence to sequence.
#[derive(Default)]
struct AttentionBuffers {
    scores: Vec<f32>,
    sums: Vec<f32>,
    #[cfg(target_arch = "x86_64")]
    int8: attention_int8::Buffers,
    #[cfg(target_arch = "x86_64")]
    f32: attention_f32::Buffers,
}

impl RelativeBias {
    /// The bias of `table` (`buckets × heads`, as MPNet stores it) for every distance of a
    /// sequence of up to `max_len` tokens.
    fn new(table: &[f32], buckets: usize, heads: usize, max_len: usize) -> Self {
        let width = 2 * max_len - 1;
        let mut by_distance = vec![0f32; heads * width];
        for (d, i) in (-(max_len as i64 - 1)..max_len as i64).zip(0..) {
            let bucket = bucket_of(d, buckets);
            for head in 0..heads {
                by_distance[head * width + i] = table[bucket * heads + head];
            }
        }
        Self {
            by_distance,
            max_len,
        }
    }

    /// Adds head `head`'s bias to the scores of query `i` over a sequence's `row.len()` keys.
    fn add_to_row(&self, row: &mut [f32], i: usize, head: usize) {
        let width = 2 * self.max_len - 1;
        let bias = &self.by_distance[head * width..(head + 1) * width];
        let len = row.len();
        // Row i needs distances i − j for j = 0..len: a run of the table, backwards.
        let first = i + self.max_len - len; // distance i − (len − 1)
        for (s, b) in row.iter_mut().zip(bias[first..first + len].iter().rev()) {
            *s += b;
        }
    }
}

/// MPNet's bucket of the query−key distance `i − j`: bidirectional (half the buckets for
/// each sign), exact up to a quarter of them, then logarithmic up to a distance of 128.
fn bucket_of(distance: i64, buckets: usize) -> usize {
    const MAX_DISTANCE: f32 = 128.0;
    let half = buckets / 2;
    let exact = half / 2;
    // MPNet takes n = -(key - query) = i - j.
    let sign = if distance < 0 { half } else { 0 };
    let n = distance.unsigned_abs() as usize;
    sign + if n < exact {
        n
    } else {
        let large = exact as f32
            + ((n as f32 / exact as f32).ln() / (MAX_DISTANCE / exact as f32).ln()
                * (half - exact) as f32);
        (large as usize).min(half - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one head: `(input, v_bias, out, out_stride)`.
    pub(super) type Head<'a> = dyn FnMut(&HeadInput<'_>, Option<&[f32]>, &mut [f32], usize) + 'a;

    /// What a head is held to by [`matches_the_formula`].
    pub(super) struct Check<'a> {
        pub widths: &'a [usize],
        pub lengths: &'a [usize],
        /// The largest difference allowed from the formula's result.
        pub tolerance: f64,
        /// Whether the head takes a value bias (int8 heads do not: their layers add it).
        pub value_bias: bool,
    }

    /// Holds `head` to the attention formula (in f64) within `check.tolerance`, for each
    /// width and length, with and without a score bias (and a value bias, if the head takes
    /// one), into rows wider than a head.
    pub(super) fn matches_the_formula(head: &mut Head<'_>, check: Check<'_>) {
        let Check {
            widths,
            lengths,
            tolerance,
            value_bias,
        } = check;
        let value = |i: usize| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 2.0;
        for (&len, &d) in lengths
            .iter()
            .flat_map(|l| widths.iter().map(move |d| (l, d)))
        {
            for with_bias in [false, true] {
                let stride = 3 * d;
                let qkv: Vec<f32> = (0..len * stride).map(value).collect();
                let view = |part: usize| View {
                    data: &qkv,
                    offset: part * d,
                    stride,
                };
                let scale = 1.0 / (d as f32).sqrt();
                let bias = |i: usize, j: usize| match with_bias {
                    true => (i as f32 - j as f32).abs() / len as f32,
                    false => 0.0,
                };
                let add_bias = |i: usize, scores: &mut [f32]| {
                    for (j, s) in scores.iter_mut().enumerate() {
                        *s += bias(i, j);
                    }
                };
                let v_bias: Vec<f32> = (0..d).map(|c| c as f32 / d as f32).collect();
                // Output rows twice a head wide, with a sentinel in the other half.
                let out_stride = 2 * d;
                let mut got = vec![f32::NAN; len * out_stride];
                let input = HeadInput {
                    q: view(0),
                    k: view(1),
                    v: view(2),
                    len,
                    d,
                    scale,
                    add_bias: with_bias.then_some(&add_bias as &AddBias),
                };
                let v_bias = (with_bias && value_bias).then_some(&v_bias[..]);
                head(&input, v_bias, &mut got, out_stride);
                for i in 0..len {
                    let q = &qkv[i * stride..][..d];
                    let scores: Vec<f64> = (0..len)
                        .map(|j| {
                            let k = &qkv[j * stride + d..][..d];
                            let dot: f64 =
                                q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum();
                            scale as f64 * dot + bias(i, j) as f64
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let p: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = p.iter().sum();
                    for c in 0..d {
                        let mut want: f64 = (0..len)
                            .map(|j| p[j] * qkv[j * stride + 2 * d + c] as f64)
                            .sum::<f64>()
                            / sum;
                        if let Some(v_bias) = v_bias {
                            want += v_bias[c] as f64;
                        }
                        let g = got[i * out_stride + c] as f64;
                        assert!(
                            (g - want).abs() < tolerance,
                            "len {len} d {d} bias {with_bias} [{i}][{c}]: {g} vs {want}"
                        );
                        assert!(got[i * out_stride + d + c].is_nan(), "wrote past the head");
                    }
                }
            }
        }
    }

    /// An f32 head's check: within f32 rounding of scores and sums over up to 512 keys.
    fn f32_check<'a>(widths: &'a [usize], lengths: &'a [usize]) -> Check<'a> {
        Check {
            widths,
            lengths,
            tolerance: 2e-5,
            value_bias: true,
        }
    }

    const LENGTHS: [usize; 15] = [1, 2, 3, 4, 6, 7, 12, 13, 17, 31, 32, 33, 70, 253, 300];

    #[test]
    fn general_attention_matches_the_formula() {
        let mut buffers = AttentionBuffers::default();
        matches_the_formula(
            &mut |input, v_bias, out, stride| {
                attention_head(&mut buffers, input, v_bias, out, stride)
            },
            f32_check(&[16, 32, 64], &LENGTHS),
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fused_attention_matches_the_formula() {
        if !attention_f32::available(32) {
            eprintln!("no AVX-512 on this CPU: the fused f32 attention does not run here");
            return;
        }
        let mut buffers = attention_f32::Buffers::default();
        let mut lengths = LENGTHS.to_vec();
        lengths.push(attention_f32::MAX_LEN);
        matches_the_formula(
            &mut |input, v_bias, out, stride| {
                attention_f32::head(&mut buffers, input, v_bias, out, stride)
            },
            f32_check(&[32, 64], &lengths),
        );
    }
}
