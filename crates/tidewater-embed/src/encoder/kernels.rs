//! The encoder's element-wise and row kernels (layer norm, GELU, softmax) and its f32
//! matrix product.
//!
//! The row kernels here are portable loops written so that the compiler vectorises them
//! (no branches, `2^x` and the normal distribution's tail as polynomials instead of libm
//! calls: scalar `exp` calls would cost a fifth of the encoder's time). On CPUs with
//! AVX-512 the same computations run as the intrinsic kernels of [`super::avx512`], chosen
//! at run time.
#![allow(unsafe_code)] // run-time CPU dispatch and the gemm crate's raw-pointer API, see SAFETY notes

use std::sync::OnceLock;

/// Whether the AVX-512 versions of the kernels may run on this CPU.
pub(crate) fn has_avx512() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Runs the AVX-512 kernel `$fast` when this CPU has it, else the portable `$portable`.
macro_rules! dispatch {
    ($fast:ident, $portable:ident, $($arg:expr),*) => {{
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: `has_avx512` checked that this CPU has every feature the AVX-512
            // kernels are compiled with.
            return unsafe { super::avx512::$fast($($arg),*) };
        }
        $portable($($arg),*)
    }};
}

/// Layer normalisation of each `width`-long row of `rows`, in place, after adding `bias`
/// if given: `x += bias`, then `(x - mean) / sqrt(var + eps) * gamma + beta`.
pub(crate) fn layer_norm(
    rows: &mut [f32],
    width: usize,
    bias: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    dispatch!(
        layer_norm,
        layer_norm_body,
        rows,
        width,
        bias,
        gamma,
        beta,
        eps
    )
}

/// GELU (the exact, erf-based form BERT and MPNet use), in place.
pub(crate) fn gelu(xs: &mut [f32]) {
    dispatch!(gelu, gelu_body, xs)
}

/// `x = gelu(x + b)` for each `bias.len()`-wide row of `rows`, in place: a layer's bias
/// added on the way into the activation, in the same pass.
pub(crate) fn gelu_with_bias(rows: &mut [f32], bias: &[f32]) {
    dispatch!(gelu_with_bias, gelu_with_bias_body, rows, bias)
}

/// The numerators of a softmax: each `width`-long row of `rows` becomes
/// `e^(x - max)`, and its sum goes to `sums`. Dividing by the sum is left to the caller.
pub(crate) fn exp_rows(rows: &mut [f32], width: usize, sums: &mut [f32]) {
    dispatch!(exp_rows, exp_rows_body, rows, width, sums)
}

/// Quantises `row` to bytes, asymmetrically: `code = round(x / scale) + zero` in
/// 0..=255, the range spanning the row's minimum and maximum (and 0, which so has an
/// exact code). Writes `[scale, zero]` to `scale_zero`.
pub(crate) fn quantize_row(row: &[f32], codes: &mut [u8], scale_zero: &mut [f32; 2]) {
    dispatch!(quantize_row, quantize_row_body, row, codes, scale_zero)
}

/// `x += y`, element by element (a bias onto a row).
#[inline(always)]
pub(crate) fn add(xs: &mut [f32], ys: &[f32]) {
    xs.iter_mut().zip(ys).for_each(|(x, y)| *x += y);
}

#[inline(always)]
fn layer_norm_body(
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
            add(row, &bias[..width]);
        }
        let mean = lane_sum(row, |x| x) / width as f32;
        let var = lane_sum(row, |x| (x - mean) * (x - mean)) / width as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
            *x = (*x - mean) * inv * g + b;
        }
    }
}

#[inline(always)]
fn gelu_body(xs: &mut [f32]) {
    for x in xs.iter_mut() {
        let tail = normal_tail(*x);
        // x Φ(x), with Φ(x) = 1 − Φ(−|x|) for x ≥ 0 and Φ(−|x|) below.
        *x = if *x >= 0.0 { *x - *x * tail } else { *x * tail };
    }
}

/// Coefficients of `c(a) = 2^(1/16) (1 + Σ_k a_k (a/√2)^k)`, constant first, where the
/// `a_k` are Abramowitz and Stegun's for erf (7.1.28): `erfc(z) ≈ (1 + Σ a_k z^k)^−16`
/// (absolute error below 3e-7) for `z = a/√2`. The factor `2^(1/16)` makes `c(a)^−16` half
/// of erfc, the tail `Φ(−a)` of the standard normal distribution, with no multiplication.
pub(crate) const NORMAL_TAIL: [f32; 7] = [
    1.044_273_7,
    5.207_516_3e-2,
    2.207_699_8e-2,
    3.422_739_2e-3,
    3.968_613_6e-5,
    5.105_521e-5,
    5.621_3e-6,
];

/// The polynomial's argument stops here: `c(25)^−16` is 0 in f32, so GELU of a large
/// negative `x` is 0 (the true tail is below 1e-130), and `c` stays far from overflowing.
pub(crate) const NORMAL_TAIL_MAX: f32 = 25.0;

/// `Φ(−|x|)`, the standard normal probability below `−|x|`, as `c(|x|)^−16` (see
/// [`NORMAL_TAIL`]): GELU's `x Φ(x)` without an `exp`. Absolute error below 5e-7.
#[inline(always)]
fn normal_tail(x: f32) -> f32 {
    let a = x.abs().min(NORMAL_TAIL_MAX);
    let c = polynomial(&NORMAL_TAIL, a);
    let t = 1.0 / c;
    let t2 = t * t;
    let t4 = t2 * t2;
    let t8 = t4 * t4;
    t8 * t8
}

fn gelu_with_bias_body(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        add(row, bias);
        gelu_body(row);
    }
}

#[inline(always)]
fn exp_rows_body(rows: &mut [f32], width: usize, sums: &mut [f32]) {
    for (row, sum) in rows.chunks_exact_mut(width).zip(sums) {
        // e^(x − max) = 2^(x log2 e − max log2 e): any error in the second term is the
        // same for the whole row, and the softmax divides it out.
        let shift = lane_max(row) * std::f32::consts::LOG2_E;
        for x in row.iter_mut() {
            *x = exp2(*x * std::f32::consts::LOG2_E - shift);
        }
        *sum = lane_sum(row, |x| x);
    }
}

/// Lanes of the partial sums and maxima below: a reduction into one scalar is strictly
/// ordered and never vectorised, one into 16 independent lanes is.
const LANES: usize = 16;

/// `Σ f(x)` over `xs`, summed in `LANES` partial sums.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder().iter().map(|&x| f(x)).sum::<f32>();
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a += f(x);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `xs` folded by `op` in `LANES` independent lanes, then across them; `op` must be
/// associative and commutative (max, min).
#[inline(always)]
fn lane_fold(xs: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(init, |a, &x| op(a, x));
    for chunk in chunks {
        for (a, &x) in acc.iter_mut().zip(chunk) {
            *a = op(*a, x);
        }
    }
    acc.iter().fold(tail, |a, &x| op(a, x))
}

// Plain comparisons, not `f32::max`/`min`: those handle NaN, which costs a compare and a
// blend per vector, and the encoder's values are never NaN.
#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    lane_fold(xs, f32::NEG_INFINITY, max)
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

#[inline(always)]
fn min(a: f32, b: f32) -> f32 {
    if b < a {
        b
    } else {
        a
    }
}

#[inline(always)]
fn quantize_row_body(row: &[f32], codes: &mut [u8], scale_zero: &mut [f32; 2]) {
    let (min, max) = (lane_fold(row, 0.0, min), lane_fold(row, 0.0, max));
    let scale = if max > min { (max - min) / 255.0 } else { 1.0 };
    let zero = (-min / scale).round_ties_even();
    let inv = 1.0 / scale;
    for (q, v) in codes.iter_mut().zip(row) {
        // Adding 2^23 leaves the whole number in the low mantissa bits (a bit cast, which
        // vectorises, where `as u8` saturates element by element).
        *q = ((v * inv + zero).round_ties_even().clamp(0.0, 255.0) + 8_388_608.0).to_bits() as u8;
    }
    *scale_zero = [scale, zero];
}

/// `2^t` for f32, branch-free: `t = n + f` with `n` whole and `|f| ≤ 1/2`, `2^f` by a
/// degree-5 polynomial (a minimax fit, relative error below 2e-7 in f32) and `2^n` from
/// exponent bits. Below −126 the result is 2^−126 at most (softmax weights that small do
/// not count).
#[inline(always)]
pub(crate) fn exp2(t: f32) -> f32 {
    let t = t.clamp(-126.0, 127.0);
    let n = (t + 0.5).floor();
    let f = t - n;
    let p = polynomial(&EXP2, f);
    p * exp2_int(n)
}

/// `Σ_k c[k] x^k`, by Horner's rule.
#[inline(always)]
fn polynomial(c: &[f32], x: f32) -> f32 {
    let (last, rest) = c.split_last().expect("a coefficient");
    rest.iter().rev().fold(*last, |p, &k| p * x + k)
}

/// Coefficients of the polynomial for `2^f` on `[−1/2, 1/2]`, constant first.
#[allow(clippy::approx_constant)] // the fit's own linear term, not ln 2
pub(crate) const EXP2: [f32; 6] = [
    1.0,
    0.693_147,
    0.240_222_42,
    5.550_734e-2,
    9.671_514e-3,
    1.326_471_5e-3,
];

/// `2^n` for a whole `n` in −126..=127, built from its exponent bits. Adding 1.5 × 2^23
/// puts `n` in the low bits of the sum's mantissa; unlike `n as i32` (which saturates and
/// is compiled one element at a time) the bit cast vectorises.
#[inline(always)]
fn exp2_int(n: f32) -> f32 {
    let biased = (n + 12_582_912.0)
        .to_bits()
        .wrapping_sub(0x4B40_0000)
        .wrapping_add(127);
    f32::from_bits(biased << 23)
}

/// A row-major f32 matrix view: `rows × cols` elements, row `i` starting at
/// `offset + i * stride`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub stride: usize,
}

/// `dst[i][j] = (accumulate ? dst[i][j] : 0) + scale * Σ_p a[i][p] * b[p][j]` for an
/// `m × k` matrix `a` and a `k × n` matrix `b`, given `b` either row-major (`b_transposed`
/// false: `b[p][j]` at `p * stride + j`) or as the rows of its transpose (`b[p][j]` at
/// `j * stride + p`). `dst` is row-major with row stride `dst_stride`. Parallel over the
/// current rayon pool when `parallel`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    a: View<'_>,
    b: View<'_>,
    b_transposed: bool,
    dst: &mut [f32],
    dst_stride: usize,
    accumulate: bool,
    scale: f32,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (b_rs, b_cs) = match b_transposed {
        false => (b.stride, 1),
        true => (1, b.stride),
    };
    // The gemm crate takes raw pointers: check here that every element it may touch is in
    // bounds of its slice, which makes the call below sound.
    let last = |offset: usize, rows: usize, rs: usize, cols: usize, cs: usize| {
        offset + (rows.max(1) - 1) * rs + (cols.max(1) - 1) * cs
    };
    assert!(
        last(0, m, dst_stride, n, 1) < dst.len(),
        "matmul: dst too small"
    );
    if k > 0 {
        assert!(
            last(a.offset, m, a.stride, k, 1) < a.data.len(),
            "matmul: a too small"
        );
        assert!(
            last(b.offset, k, b_rs, n, b_cs) < b.data.len(),
            "matmul: b too small"
        );
    }
    let parallelism = match parallel {
        true => gemm::Parallelism::Rayon(rayon::current_num_threads()),
        false => gemm::Parallelism::None,
    };
    let signed = |x: usize| x as isize;
    // SAFETY: the asserts above keep every accessed element inside its slice; `dst` is a
    // unique borrow and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            signed(dst_stride),
            accumulate,
            a.data.as_ptr().add(a.offset),
            1,
            signed(a.stride),
            b.data.as_ptr().add(b.offset),
            signed(b_cs),
            signed(b_rs),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp2_and_gelu_match_the_standard_library() {
        for i in -2000..=2000 {
            let t = i as f32 / 50.0; // -40 ..= 40
            let want = (t as f64).exp2();
            let rel = ((exp2(t) as f64 - want) / want).abs();
            assert!(rel < 1e-6, "exp2({t}): {} vs {want}", exp2(t));
        }
        let xs: Vec<f32> = (-1200..=1200).map(|i| i as f32 / 100.0).collect();
        let mut got = xs.clone();
        gelu_body(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let x64 = x as f64;
            let want = 0.5 * x64 * (1.0 + libm_erf(x64 / std::f64::consts::SQRT_2));
            // A&S 7.1.28 is within 3e-7 of erf; the 16th power adds f32 rounding.
            let tolerance = 1e-6 * x64.abs().max(1.0);
            assert!(
                (g as f64 - want).abs() < tolerance,
                "gelu({x}): {g} vs {want}"
            );
        }
        let mut extremes = [1e30, -1e30, f32::MAX, f32::MIN, 0.0];
        gelu_body(&mut extremes);
        assert_eq!(extremes, [1e30, 0.0, f32::MAX, 0.0, 0.0]);
    }

    /// erf by its series / continued fraction in f64, as an oracle.
    fn libm_erf(x: f64) -> f64 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)), fine for |x| <= 6 in f64
        // with enough terms; beyond 4 erf is 1 within 1e-8.
        if x.abs() > 4.0 {
            return x.signum();
        }
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn softmax_numerators_and_layer_norm_rows() {
        // 40 wide: two full lanes and a tail.
        let mut rows: Vec<f32> = (0..80)
            .map(|i| (i % 40) as f32 / 7.0 - (i / 40) as f32)
            .collect();
        let want = rows.clone();
        let mut sums = [0.0; 2];
        exp_rows(&mut rows, 40, &mut sums);
        for (r, (row, sum)) in rows.chunks(40).zip(sums).enumerate() {
            let max = want[r * 40 + 39];
            let expected: Vec<f32> = want[r * 40..(r + 1) * 40]
                .iter()
                .map(|x| (x - max).exp())
                .collect();
            for (got, e) in row.iter().zip(&expected) {
                assert!((got - e).abs() < 1e-6, "{got} vs {e}");
            }
            assert!((sum - expected.iter().sum::<f32>()).abs() < 1e-5);
        }

        let mut rows = vec![1.0, 3.0];
        layer_norm(&mut rows, 2, None, &[2.0, 2.0], &[0.5, 0.5], 0.0);
        assert!((rows[0] - -1.5).abs() < 1e-6 && (rows[1] - 2.5).abs() < 1e-6);
    }

    /// The AVX-512 kernels compute what the portable loops do, within f32 rounding, on
    /// rows with and without a partial last vector.
    #[test]
    fn avx512_kernels_match_the_portable_ones() {
        if !has_avx512() {
            eprintln!("no AVX-512 on this CPU: only the portable kernels run here");
            return;
        }
        let value = |i: usize| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 6.0;
        for width in [1, 15, 16, 17, 40, 253, 384] {
            let rows: Vec<f32> = (0..3 * width).map(value).collect();
            let close = |a: &[f32], b: &[f32], tolerance: f32| {
                for (i, (x, y)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (x - y).abs() <= tolerance * y.abs().max(1.0),
                        "width {width} [{i}]: {x} vs {y}"
                    );
                }
            };

            let (mut fast, mut portable) = (rows.clone(), rows.clone());
            gelu(&mut fast);
            gelu_body(&mut portable);
            close(&fast, &portable, 1e-6);

            let bias: Vec<f32> = (0..width).map(|i| value(i + 3) / 4.0).collect();
            let (mut fast, mut portable) = (rows.clone(), rows.clone());
            gelu_with_bias(&mut fast, &bias);
            gelu_with_bias_body(&mut portable, &bias);
            close(&fast, &portable, 1e-6);

            let (mut fast, mut portable) = (rows.clone(), rows.clone());
            let (mut fast_sums, mut portable_sums) = ([0.0; 3], [0.0; 3]);
            exp_rows(&mut fast, width, &mut fast_sums);
            exp_rows_body(&mut portable, width, &mut portable_sums);
            close(&fast, &portable, 1e-6);
            close(&fast_sums, &portable_sums, 1e-5);

            let gamma: Vec<f32> = (0..width).map(|i| 1.0 + value(i + 5) / 10.0).collect();
            let beta: Vec<f32> = (0..width).map(|i| value(i + 9) / 10.0).collect();
            for bias in [None, Some(&beta[..])] {
                let (mut fast, mut portable) = (rows.clone(), rows.clone());
                layer_norm(&mut fast, width, bias, &gamma, &beta, 1e-12);
                layer_norm_body(&mut portable, width, bias, &gamma, &beta, 1e-12);
                close(&fast, &portable, 1e-5);
            }

            for row in rows.chunks(width) {
                let (mut fast, mut portable) = (vec![7u8; width], vec![7u8; width]);
                let (mut fast_sz, mut portable_sz) = ([0.0; 2], [0.0; 2]);
                quantize_row(row, &mut fast, &mut fast_sz);
                quantize_row_body(row, &mut portable, &mut portable_sz);
                assert_eq!(fast_sz, portable_sz, "width {width}");
                // A fused multiply-add may round a value lying on a half step the other way.
                for (f, p) in fast.iter().zip(&portable) {
                    assert!(f.abs_diff(*p) <= 1, "width {width}: code {f} vs {p}");
                }
            }
        }
        let extremes = [1e30, -1e30, f32::MAX, f32::MIN, 0.0, -0.0, 30.0, -30.0];
        let (mut fast, mut portable) = (extremes, extremes);
        gelu(&mut fast);
        gelu_body(&mut portable);
        assert_eq!(fast, portable);
    }

    #[test]
    fn matmul_with_strides_and_accumulation() {
        // a: 2×3, b: 3×2 given transposed (2 rows of 3).
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let bt = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        let mut dst = vec![10.0, 10.0, 10.0, 10.0];
        matmul(
            (2, 2, 3),
            View {
                data: &a,
                offset: 0,
                stride: 3,
            },
            View {
                data: &bt,
                offset: 0,
                stride: 3,
            },
            true,
            &mut dst,
            2,
            true,
            0.5,
            false,
        );
        assert_eq!(dst, vec![10.0 + 2.0, 10.0 + 1.0, 10.0 + 5.0, 10.0 + 2.5]);
    }
}
