//! AVX-512 versions of the row kernels, written with intrinsics.
//!
//! The portable loops in [`super::kernels`] vectorise, but the compiler cannot do three
//! things for them: fuse a multiply and an add (Rust never contracts `a * b + c`), finish a
//! row's tail with one masked vector instead of a scalar loop, and use the instructions
//! that make `exp` and GELU short (`vscalefps` for `2^n`, `vrcp14ps` for a reciprocal
//! without a division). Together that made softmax and GELU about 1.7× and the int8
//! quantisation 1.3× faster than the compiler's AVX-512 versions of the same polynomials.
//!
//! Every function here needs AVX-512F and FMA; [`super::kernels::has_avx512`] checks that
//! before any of them is called. Results equal the portable kernels' within f32 rounding
//! (the tests in `kernels` compare both).
#![allow(unsafe_code)] // intrinsics: pointer loads and stores within checked slice bounds

use std::arch::x86_64::*;

use super::kernels;

const LANES: usize = 16;

/// A mask of the first `n` (< 16) lanes.
#[inline(always)]
fn first(n: usize) -> __mmask16 {
    debug_assert!(n < LANES);
    ((1u32 << n) - 1) as __mmask16
}

/// A mask of the first `n` (≤ 16) lanes.
#[inline(always)]
pub(super) fn first_lanes(n: usize) -> __mmask16 {
    match n {
        LANES => !0,
        n => first(n),
    }
}

/// `Σ_k c[k] x^k` in 16 lanes, by Horner's rule with fused multiply-adds.
#[inline]
#[target_feature(enable = "avx512f,fma")]
fn polynomial(c: &[f32], x: __m512) -> __m512 {
    let (last, rest) = c.split_last().expect("a coefficient");
    let mut p = _mm512_set1_ps(*last);
    for &k in rest.iter().rev() {
        p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(k));
    }
    p
}

/// `2^t` in 16 lanes: the portable `exp2`'s polynomial, with `2^n` applied by `vscalefps`
/// (which also takes any `n` below the normal range to 0).
#[inline]
#[target_feature(enable = "avx512f,fma")]
fn exp2(t: __m512) -> __m512 {
    let t = _mm512_max_ps(t, _mm512_set1_ps(-150.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, n);
    _mm512_scalef_ps(polynomial(&kernels::EXP2, f), n)
}

/// GELU, `x Φ(x)`, with the normal tail `Φ(−|x|) = c(|x|)^−16` as in the portable kernel;
/// `1 / c` is a `vrcp14ps` refined by one Newton step.
#[inline]
#[target_feature(enable = "avx512f,fma")]
fn gelu_vector(x: __m512) -> __m512 {
    let a = _mm512_min_ps(_mm512_abs_ps(x), _mm512_set1_ps(kernels::NORMAL_TAIL_MAX));
    let c = polynomial(&kernels::NORMAL_TAIL, a);
    let t = _mm512_rcp14_ps(c);
    let t = _mm512_mul_ps(t, _mm512_fnmadd_ps(c, t, _mm512_set1_ps(2.0)));
    let t2 = _mm512_mul_ps(t, t);
    let t4 = _mm512_mul_ps(t2, t2);
    let t8 = _mm512_mul_ps(t4, t4);
    let x_tail = _mm512_mul_ps(x, _mm512_mul_ps(t8, t8));
    // x Φ(x): x − x Φ(−|x|) where x ≥ 0, x Φ(−|x|) elsewhere.
    let non_negative = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_setzero_ps());
    _mm512_mask_sub_ps(x_tail, non_negative, x, x_tail)
}

/// See [`super::kernels::gelu`].
#[target_feature(enable = "avx512f,fma")]
pub(super) fn gelu(xs: &mut [f32]) {
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        let p = chunk.as_mut_ptr();
        // SAFETY: `chunk` holds 16 floats.
        unsafe { _mm512_storeu_ps(p, gelu_vector(_mm512_loadu_ps(p))) };
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let (mask, p) = (first(tail.len()), tail.as_mut_ptr());
        // SAFETY: the mask covers only the tail's own elements.
        unsafe {
            _mm512_mask_storeu_ps(p, mask, gelu_vector(_mm512_maskz_loadu_ps(mask, p)));
        }
    }
}

/// See [`super::kernels::gelu_with_bias`].
#[target_feature(enable = "avx512f,fma")]
pub(super) fn gelu_with_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, b) in row.chunks_mut(LANES).zip(bias.chunks(LANES)) {
            let mask = match x.len() {
                LANES => !0,
                n => first(n),
            };
            // SAFETY: both chunks are `x.len()` long and the mask covers only their elements.
            unsafe {
                let v = _mm512_add_ps(
                    _mm512_maskz_loadu_ps(mask, x.as_ptr()),
                    _mm512_maskz_loadu_ps(mask, b.as_ptr()),
                );
                _mm512_mask_storeu_ps(x.as_mut_ptr(), mask, gelu_vector(v));
            }
        }
    }
}

/// Calls `f` with each 16-float vector of `row` and the mask of its valid lanes (all but
/// the last); lanes past the end read as `fill`.
#[inline(always)]
fn for_each_vector(row: &[f32], fill: f32, mut f: impl FnMut(__m512, __mmask16)) {
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        // SAFETY: `chunk` holds 16 floats.
        f(unsafe { _mm512_loadu_ps(chunk.as_ptr()) }, !0);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let mask = first(tail.len());
        // SAFETY: the mask covers only the tail's own elements.
        let v = unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, tail.as_ptr()) };
        f(v, mask);
    }
}

/// The largest element of `row` (`−∞` if it is empty).
#[target_feature(enable = "avx512f")]
pub(super) fn row_max(row: &[f32]) -> f32 {
    // Four running maxima in a plain loop over 64 floats at a time, so that the
    // comparisons do not wait on each other (and stay in registers).
    let mut max = [_mm512_set1_ps(f32::NEG_INFINITY); 4];
    let mut blocks = row.chunks_exact(4 * LANES);
    for block in &mut blocks {
        for (i, m) in max.iter_mut().enumerate() {
            // SAFETY: `block` holds 64 floats.
            *m = _mm512_max_ps(*m, unsafe {
                _mm512_loadu_ps(block.as_ptr().add(i * LANES))
            });
        }
    }
    for_each_vector(blocks.remainder(), f32::NEG_INFINITY, |v, _| {
        max[0] = _mm512_max_ps(max[0], v);
    });
    let max = _mm512_max_ps(_mm512_max_ps(max[0], max[1]), _mm512_max_ps(max[2], max[3]));
    _mm512_reduce_max_ps(max)
}

/// See [`super::kernels::exp_rows`].
#[target_feature(enable = "avx512f,fma")]
pub(super) fn exp_rows(rows: &mut [f32], width: usize, sums: &mut [f32]) {
    for (row, sum) in rows.chunks_exact_mut(width).zip(sums) {
        *sum = exp_row(row, row_max(row));
    }
}

/// `x = e^(x − max)` for each element of `row`, in place; returns their sum.
#[target_feature(enable = "avx512f,fma")]
pub(super) fn exp_row(row: &mut [f32], max: f32) -> f32 {
    // e^(x − max) = 2^(x log2 e − max log2 e), one fused step; an error in the second term
    // is the same for the whole row, and the softmax divides it out.
    let log2_e = _mm512_set1_ps(std::f32::consts::LOG2_E);
    let shift = _mm512_set1_ps(max * std::f32::consts::LOG2_E);
    let exp = |x: __m512| exp2(_mm512_fmsub_ps(x, log2_e, shift));
    // Two vectors per step with a sum each: each `exp` is a long chain of dependent steps,
    // and two side by side keep both vector units busy.
    let mut total = [_mm512_setzero_ps(); 2];
    let mut blocks = row.chunks_exact_mut(2 * LANES);
    for block in &mut blocks {
        for (i, total) in total.iter_mut().enumerate() {
            // SAFETY: `block` holds 32 floats.
            unsafe {
                let p = block.as_mut_ptr().add(i * LANES);
                let e = exp(_mm512_loadu_ps(p));
                _mm512_storeu_ps(p, e);
                *total = _mm512_add_ps(*total, e);
            }
        }
    }
    for chunk in blocks.into_remainder().chunks_mut(LANES) {
        let (mask, p) = (first_lanes(chunk.len()), chunk.as_mut_ptr());
        // SAFETY: the mask covers only the chunk's own elements.
        unsafe {
            let e = exp(_mm512_maskz_loadu_ps(mask, p));
            _mm512_mask_storeu_ps(p, mask, e);
            total[0] = _mm512_mask_add_ps(total[0], mask, total[0], e);
        }
    }
    _mm512_reduce_add_ps(_mm512_add_ps(total[0], total[1]))
}

/// See [`super::kernels::layer_norm`].
#[target_feature(enable = "avx512f,fma")]
pub(super) fn layer_norm(
    rows: &mut [f32],
    width: usize,
    bias: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let (gamma, beta) = (&gamma[..width], &beta[..width]);
    for row in rows.chunks_exact_mut(width) {
        if let Some(bias) = bias {
            // The row is in L1 from here on; adding the bias costs a pass over it there.
            kernels::add(row, &bias[..width]);
        }
        let mut sum = _mm512_setzero_ps();
        for_each_vector(row, 0.0, |v, _| sum = _mm512_add_ps(sum, v));
        let mean = _mm512_set1_ps(_mm512_reduce_add_ps(sum) / width as f32);
        let mut squares = _mm512_setzero_ps();
        for_each_vector(row, 0.0, |v, mask| {
            let centred = _mm512_maskz_sub_ps(mask, v, mean);
            squares = _mm512_fmadd_ps(centred, centred, squares);
        });
        let var = _mm512_reduce_add_ps(squares) / width as f32;
        let inv = _mm512_set1_ps(1.0 / (var + eps).sqrt());
        for ((x, g), b) in row
            .chunks_mut(LANES)
            .zip(gamma.chunks(LANES))
            .zip(beta.chunks(LANES))
        {
            let mask = match x.len() {
                LANES => !0,
                n => first(n),
            };
            // SAFETY: the three chunks are equally long (gamma and beta were cut to the
            // row's width) and the mask covers only their elements.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, x.as_ptr());
                let g = _mm512_maskz_loadu_ps(mask, g.as_ptr());
                let b = _mm512_maskz_loadu_ps(mask, b.as_ptr());
                let scaled = _mm512_mul_ps(_mm512_sub_ps(v, mean), inv);
                _mm512_mask_storeu_ps(x.as_mut_ptr(), mask, _mm512_fmadd_ps(scaled, g, b));
            }
        }
    }
}

/// See [`super::kernels::quantize_row`].
#[target_feature(enable = "avx512f,fma")]
pub(super) fn quantize_row(row: &[f32], codes: &mut [u8], scale_zero: &mut [f32; 2]) {
    assert!(codes.len() >= row.len());
    let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for_each_vector(row, 0.0, |v, _| {
        lo = _mm512_min_ps(lo, v);
        hi = _mm512_max_ps(hi, v);
    });
    let (min, max) = (_mm512_reduce_min_ps(lo), _mm512_reduce_max_ps(hi));
    let scale = if max > min { (max - min) / 255.0 } else { 1.0 };
    let zero = (-min / scale).round_ties_even();
    let (inv, zero_v) = (_mm512_set1_ps(1.0 / scale), _mm512_set1_ps(zero));
    let mut out = codes.as_mut_ptr();
    for_each_vector(row, 0.0, |v, mask| {
        // Rounds to nearest even (the default rounding mode); negatives become 0 and the
        // unsigned-saturating narrowing caps at 255.
        let q = _mm512_cvtps_epi32(_mm512_fmadd_ps(v, inv, zero_v));
        let q = _mm512_max_epi32(q, _mm512_setzero_si512());
        // SAFETY: `codes` is at least as long as `row`; `out` is at the vector's first
        // element, and the mask limits the store to the row's own elements.
        unsafe {
            _mm512_mask_cvtusepi32_storeu_epi8(out.cast(), mask, q);
        }
        out = out.wrapping_add(LANES);
    });
    *scale_zero = [scale, zero];
}
