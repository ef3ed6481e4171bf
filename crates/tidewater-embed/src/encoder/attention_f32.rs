//! Self-attention in f32 on AVX-512, one head of one sequence at a time, fused.
//!
//! A head is `softmax(scale Q Kᵀ + bias) V` for a few hundred tokens by 32 or 64
//! channels: two products whose inner dimension (the channels, then the keys) is short
//! and whose operands sit in the packed `qkv` rows at a stride of `3 × hidden`. Through a
//! general matrix product each call packed both operands and wrote the whole `len × len`
//! score matrix out and read it back twice; attention took 15 % of the encoder's time
//! for 10 % of its arithmetic. Here:
//!
//! - the keys are transposed once per head into panels of 16 keys (one vector per
//!   channel), 16 × 16 at a time in registers;
//! - the values, and each tile's query rows, are copied out of the `qkv` stride into
//!   contiguous rows, so that each kernel reaches all of its rows from one pointer;
//! - query rows go tile by tile (`ROWS` at a time): the tile's scores against all keys,
//!   the bias, the softmax numerators and the tile's context are computed while its
//!   scores stay in L1;
//! - the division by each row's sum and the value bias are applied as the context is
//!   stored.
//!
//! A 253-token MiniLM head took 76 µs here against 82 µs through the general path.
//!
//! The arithmetic is that of the general path ([`super::attention_head`]) in another
//! order of summation; a test in `encoder` holds both to the formula within f32 rounding.
#![allow(unsafe_code)] // AVX-512 intrinsics behind run-time detection, see SAFETY notes

use std::arch::x86_64::*;

use super::avx512;
use super::kernels::{self, View};
use super::HeadInput;

const LANES: usize = 16;
/// Query rows per tile. Both kernels hold `ROWS × 2` accumulators (24 of the 32 vector
/// registers): the scores kernel 2 panels of 16 keys per row, the context kernel 2
/// vectors of 16 channels per row.
const ROWS: usize = 12;
/// Key panels of 16 per step of the scores kernel.
const KEY_PANELS: usize = 2;
/// Channel vectors of 16 per step of the context kernel.
const CHANNEL_VECTORS: usize = 2;
/// The longest sequence this attention takes: a tile's score rows are this far apart, a
/// constant, so that the context kernel reaches every row from one pointer.
pub(super) const MAX_LEN: usize = 512;

/// Whether this attention runs on this CPU for heads `head_dim` wide.
pub(super) fn available(head_dim: usize) -> bool {
    kernels::has_avx512() && matches!(head_dim, 32 | 64)
}

/// Reused buffers of one thread's heads.
#[derive(Default)]
pub(super) struct Buffers {
    /// The keys, transposed by panel: key `j`'s channel `c` at `((j / 16) d + c) 16 + j % 16`.
    k_packed: Vec<f32>,
    /// The values, row after row without the stride of `qkv`: `len × d`.
    v_packed: Vec<f32>,
    /// One tile's query rows, side by side: `ROWS × d`.
    q_tile: Vec<f32>,
    /// One tile's scores, then softmax numerators: `ROWS × MAX_LEN`.
    scores: Vec<f32>,
}

/// One head of one sequence, plus `v_bias` on every row: row `i` of the result goes to
/// `out[i * out_stride..][..d]`. Panics unless [`available`]`(d)` and `len ≤ MAX_LEN`.
pub(super) fn head(
    b: &mut Buffers,
    input: &HeadInput<'_>,
    v_bias: Option<&[f32]>,
    out: &mut [f32],
    out_stride: usize,
) {
    let HeadInput {
        q, k, v, len, d, ..
    } = *input;
    assert!(
        available(d) && len <= MAX_LEN,
        "f32 attention needs AVX-512, heads 32 or 64 wide and at most {MAX_LEN} tokens"
    );
    if len == 0 {
        return;
    }
    // Every row the kernels read or write, checked once here for their unchecked accesses.
    for view in [q, k, v] {
        assert!(view.offset + (len - 1) * view.stride + d <= view.data.len());
    }
    assert!((len - 1) * out_stride + d <= out.len());
    if let Some(v_bias) = v_bias {
        assert!(v_bias.len() >= d);
    }
    let h = Head {
        input: *input,
        keys: len.next_multiple_of(LANES * KEY_PANELS),
        v_bias,
    };
    // SAFETY: `available` checked that the CPU has every feature the kernels are compiled
    // with; the bounds above are the ones their accesses rely on.
    unsafe {
        match d {
            32 => head_avx512::<32>(b, &h, out, out_stride),
            _ => head_avx512::<64>(b, &h, out, out_stride),
        }
    }
}

/// A head as the kernels read it.
struct Head<'a> {
    input: HeadInput<'a>,
    /// Keys rounded up to a whole step of the scores kernel.
    keys: usize,
    v_bias: Option<&'a [f32]>,
}

/// # Safety
///
/// The CPU has AVX-512F and FMA; the views hold `len ≤ MAX_LEN` rows of `D` values, `out`
/// holds `len` rows at `out_stride`, and `v_bias` (if any) `D` values: what [`head`]
/// checks.
#[target_feature(enable = "avx512f,fma")]
unsafe fn head_avx512<const D: usize>(
    b: &mut Buffers,
    h: &Head<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let HeadInput { k, v, len, .. } = h.input;
    pack_keys::<D>(&mut b.k_packed, k, len, h.keys);
    b.v_packed.resize(len * D, 0.0);
    for (j, row) in b.v_packed.chunks_exact_mut(D).enumerate() {
        row.copy_from_slice(&v.data[v.offset + j * v.stride..][..D]);
    }
    b.q_tile.resize(ROWS * D, 0.0);
    b.scores.resize(ROWS * MAX_LEN, 0.0);
    let mut t0 = 0;
    while t0 < len {
        let rows = (len - t0).min(ROWS);
        // The last tile runs with the smallest kernel that covers it.
        match rows {
            7.. => tile::<D, ROWS>(b, h, t0, rows, out, out_stride),
            4..=6 => tile::<D, 6>(b, h, t0, rows, out, out_stride),
            _ => tile::<D, 3>(b, h, t0, rows, out, out_stride),
        }
        t0 += rows;
    }
}

/// Transposes the `len` keys into panels of 16 (see [`Buffers::k_packed`]), with zeros for
/// the keys from `len` up to `keys`: 16 keys × 16 channels at a time, in registers.
#[target_feature(enable = "avx512f")]
unsafe fn pack_keys<const D: usize>(packed: &mut Vec<f32>, k: View<'_>, len: usize, keys: usize) {
    packed.resize(keys * D, 0.0);
    for panel in 0..keys / LANES {
        let j0 = panel * LANES;
        let dst = packed.as_mut_ptr().add(panel * D * LANES);
        let valid = len.saturating_sub(j0).min(LANES);
        for c0 in (0..D).step_by(LANES) {
            // A loop of constant length with the bound inside (rather than `take(valid)`),
            // so that it unrolls and the block stays in registers.
            let mut block = [_mm512_setzero_ps(); LANES];
            for (r, row) in block.iter_mut().enumerate() {
                if r < valid {
                    *row =
                        _mm512_loadu_ps(k.data.as_ptr().add(k.offset + (j0 + r) * k.stride + c0));
                }
            }
            transpose(&mut block);
            for (c, column) in block.iter().enumerate() {
                _mm512_storeu_ps(dst.add((c0 + c) * LANES), *column);
            }
        }
    }
}

/// Transposes 16 × 16 floats in place: `rows[r][c]` becomes `rows[c][r]`. Pairs of rows
/// are interleaved by 32 bits, then by 64 bits (which gathers four rows' values of one
/// column in each 128-bit block), then the blocks are transposed as a 4 × 4 matrix.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose(rows: &mut [__m512; LANES]) {
    let mut t = [_mm512_setzero_ps(); LANES];
    for i in 0..LANES / 2 {
        t[2 * i] = _mm512_unpacklo_ps(rows[2 * i], rows[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(rows[2 * i], rows[2 * i + 1]);
    }
    // u[4i + e], block b: rows 4i..4i+4 of column 4b + e.
    let mut u = [_mm512_setzero_ps(); LANES];
    for i in 0..LANES / 4 {
        let a = _mm512_castps_pd(t[4 * i]);
        let b = _mm512_castps_pd(t[4 * i + 1]);
        let c = _mm512_castps_pd(t[4 * i + 2]);
        let d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // Column 4b + e is block b of u[e], u[4 + e], u[8 + e], u[12 + e].
    for e in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[e], u[4 + e]);
        let v1 = _mm512_shuffle_f32x4::<0xdd>(u[e], u[4 + e]);
        let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + e], u[12 + e]);
        let v3 = _mm512_shuffle_f32x4::<0xdd>(u[8 + e], u[12 + e]);
        rows[e] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
        rows[4 + e] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
        rows[8 + e] = _mm512_shuffle_f32x4::<0xdd>(v0, v2);
        rows[12 + e] = _mm512_shuffle_f32x4::<0xdd>(v1, v3);
    }
}

/// Query rows `t0 .. t0 + rows` (`rows ≤ R`): their scores, softmax and context. The
/// kernels' rows past `rows` compute on a repeat of the last query row and on stale score
/// rows, and are never stored.
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile<const D: usize, const R: usize>(
    b: &mut Buffers,
    h: &Head<'_>,
    t0: usize,
    rows: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let HeadInput {
        q,
        len,
        scale,
        add_bias,
        ..
    } = h.input;
    for (r, row) in b.q_tile.chunks_exact_mut(D).take(R).enumerate() {
        let i = t0 + r.min(rows - 1);
        row.copy_from_slice(&q.data[q.offset + i * q.stride..][..D]);
    }
    scores::<D, R>(b, h.keys, scale, rows);
    let mut sums = [0f32; R];
    for (r, sum) in sums.iter_mut().enumerate().take(rows) {
        let row = &mut b.scores[r * MAX_LEN..r * MAX_LEN + len];
        if let Some(add_bias) = add_bias {
            add_bias(t0 + r, row);
        }
        *sum = avx512::exp_row(row, avx512::row_max(row));
    }
    let out = out.as_mut_ptr().add(t0 * out_stride);
    context::<D, R>(b, len, &sums[..rows], h.v_bias, out, out_stride);
}

// The kernels below are kept out of line (`inline(never)`), so that each gets all vector
// registers for its accumulators: inlined together, the constants of the softmax's `exp`
// stayed in registers across the context kernel, and its accumulators spilled to memory.
// Plain loops build their small arrays rather than `array::from_fn`: in a first version
// its closures were compiled out of line (without the kernel's target features), and every
// loaded vector went through memory.

/// The scores of the query rows in `b.q_tile` against all `keys` keys, times `scale`, into
/// `b.scores` (rows `MAX_LEN` apart), 2 panels of 16 keys at a time.
#[inline(never)]
#[target_feature(enable = "avx512f,fma")]
unsafe fn scores<const D: usize, const R: usize>(
    b: &mut Buffers,
    keys: usize,
    scale: f32,
    rows: usize,
) {
    let queries = b.q_tile.as_ptr();
    let scale = _mm512_set1_ps(scale);
    let scores = b.scores.as_mut_ptr();
    for panel0 in (0..keys / LANES).step_by(KEY_PANELS) {
        let w = b.k_packed.as_ptr().add(panel0 * D * LANES);
        let mut acc = [[_mm512_setzero_ps(); KEY_PANELS]; R];
        for c in 0..D {
            let mut wv = [_mm512_setzero_ps(); KEY_PANELS];
            for (p, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_ps(w.add((p * D + c) * LANES));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*queries.add(r * D + c));
                for (a, wv) in acc_r.iter_mut().zip(&wv) {
                    *a = _mm512_fmadd_ps(x, *wv, *a);
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            for (p, a) in acc_r.iter().enumerate() {
                let at = r * MAX_LEN + (panel0 + p) * LANES;
                _mm512_storeu_ps(scores.add(at), _mm512_mul_ps(*a, scale));
            }
        }
    }
}

/// The context of the tile's rows: the softmax numerators in `b.scores` times the values,
/// divided by each row's sum in `sums` (one per row to store), plus `v_bias`, into row
/// `r` at `out + r * out_stride`; 32 channels at a time.
#[inline(never)]
#[target_feature(enable = "avx512f,fma")]
unsafe fn context<const D: usize, const R: usize>(
    b: &Buffers,
    len: usize,
    sums: &[f32],
    v_bias: Option<&[f32]>,
    out: *mut f32,
    out_stride: usize,
) {
    for c0 in (0..D).step_by(LANES * CHANNEL_VECTORS) {
        let mut acc = [[_mm512_setzero_ps(); CHANNEL_VECTORS]; R];
        let mut value = b.v_packed.as_ptr().add(c0);
        let mut p = b.scores.as_ptr();
        for _ in 0..len {
            let mut vv = [_mm512_setzero_ps(); CHANNEL_VECTORS];
            for (i, vv) in vv.iter_mut().enumerate() {
                *vv = _mm512_loadu_ps(value.add(i * LANES));
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*p.add(r * MAX_LEN));
                for (a, vv) in acc_r.iter_mut().zip(&vv) {
                    *a = _mm512_fmadd_ps(x, *vv, *a);
                }
            }
            value = value.add(D);
            p = p.add(1);
        }
        for ((r, acc_r), sum) in acc.iter().enumerate().zip(sums) {
            let inv = _mm512_set1_ps(1.0 / sum);
            let dst = out.add(r * out_stride + c0);
            for (i, a) in acc_r.iter().enumerate() {
                let y = match v_bias {
                    Some(bias) => {
                        _mm512_fmadd_ps(*a, inv, _mm512_loadu_ps(bias.as_ptr().add(c0 + i * LANES)))
                    }
                    None => _mm512_mul_ps(*a, inv),
                };
                _mm512_storeu_ps(dst.add(i * LANES), y);
            }
        }
    }
}
