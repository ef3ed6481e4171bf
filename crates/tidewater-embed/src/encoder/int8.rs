//! int8 linear layers: weights quantised per output column at load time, activations per
//! row at run time (dynamic quantisation), products accumulated in i32.
//!
//! Weights are symmetric, `qw = round(w / sw)` in −127..=127 per output column.
//! Activations are asymmetric per row, `qx = round(x / sx) + zx` in 0..=255 with `sx` and
//! `zx` mapping the row's minimum to 0 and its maximum to 255: the inputs of the FFN's
//! second layer are GELU outputs, mostly positive, and a symmetric range would waste half
//! its steps on them. The AVX-512 VNNI instruction `vpdpbusd` multiplies exactly these,
//! unsigned by signed bytes, and the zero point comes back out with each column's weight
//! sum: `y[t][n] = sx[t] sw[n] (Σ_k qx[t][k] qw[k][n] − zx[t] Σ_k qw[k][n])`.
//!
//! Weights are packed in panels of 16 columns: for each group of 4 consecutive `k`, the
//! 16 columns' 4 bytes lie side by side (64 bytes, one vector), so one load feeds 16
//! column accumulators. Without VNNI a portable loop computes the same integers.
#![allow(unsafe_code)] // AVX-512 VNNI intrinsics behind run-time detection, see SAFETY notes

use std::sync::OnceLock;

use rayon::prelude::*;

/// Columns per packed panel (one 512-bit vector of i32 accumulators).
const LANES: usize = 16;
/// Panels computed together by the micro-kernel.
const PANELS: usize = 4;
/// Rows computed together by the micro-kernel.
const ROWS: usize = 6;
/// Rows per parallel task: enough to amortise reading the weights once per task.
pub(crate) const ROWS_PER_TASK: usize = 48;

/// A linear layer's weights in int8 (see the module docs).
pub(crate) struct QuantizedLinear {
    inputs: usize,
    outputs: usize,
    /// `inputs` rounded up to a multiple of 4.
    k_padded: usize,
    /// `outputs` rounded up to a multiple of `LANES * PANELS`.
    n_padded: usize,
    /// Panels of 16 columns, each `k_padded / 4` groups of 64 bytes.
    packed: Vec<i8>,
    /// Per output column: the weight scale.
    scales: Vec<f32>,
    /// Per output column: `Σ_k qw[k][n]`, times a row's zero point taken out of its sums.
    sums: Vec<f32>,
}

impl QuantizedLinear {
    /// Quantises `weights`, given row-major `inputs × outputs` (`w[k][n]` at `k * outputs + n`).
    pub(crate) fn new(weights: &[f32], inputs: usize, outputs: usize) -> Self {
        assert_eq!(weights.len(), inputs * outputs);
        let k_padded = inputs.next_multiple_of(4);
        let n_padded = outputs.next_multiple_of(LANES * PANELS);
        let mut scales = vec![0f32; outputs];
        for row in weights.chunks_exact(outputs) {
            for (s, w) in scales.iter_mut().zip(row) {
                *s = s.max(w.abs());
            }
        }
        for s in &mut scales {
            // An all-zero column quantises to zeros with any scale.
            *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
        }
        let mut packed = vec![0i8; k_padded * n_padded];
        let mut sums = vec![0f32; outputs];
        for k in 0..inputs {
            for n in 0..outputs {
                let q = (weights[k * outputs + n] / scales[n])
                    .round()
                    .clamp(-127.0, 127.0) as i8;
                packed[packed_index(k, n, k_padded)] = q;
                sums[n] += f32::from(q);
            }
        }
        Self {
            inputs,
            outputs,
            k_padded,
            n_padded,
            packed,
            scales,
            sums,
        }
    }

    /// `out[t][n] = residual + Σ_k x[t][k] w[k][n] + bias[n]` for the `rows` rows of `x`
    /// (row-major, `inputs` wide), where `residual` is what `out` (`outputs` wide) holds
    /// when `accumulate`, else zero.
    pub(crate) fn forward(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        bias: &[f32],
        accumulate: bool,
    ) {
        assert_eq!(x.len(), rows * self.inputs);
        assert_eq!(out.len(), rows * self.outputs);
        x.par_chunks(ROWS_PER_TASK * self.inputs)
            .zip(out.par_chunks_mut(ROWS_PER_TASK * self.outputs))
            .for_each(|(x, out)| {
                self.forward_serial(x, x.len() / self.inputs, out, bias, accumulate)
            });
    }

    /// As [`QuantizedLinear::forward`], on the calling thread.
    pub(crate) fn forward_serial(
        &self,
        x: &[f32],
        rows: usize,
        out: &mut [f32],
        bias: &[f32],
        accumulate: bool,
    ) {
        assert_eq!(x.len(), rows * self.inputs);
        assert_eq!(out.len(), rows * self.outputs);
        assert_eq!(bias.len(), self.outputs);
        let q = self.quantize_rows(x, rows);
        let epilogue = Epilogue { bias, accumulate };
        self.multiply(&q, rows, out, epilogue);
    }

    /// Quantises each row (see the module docs), `k_padded` wide; the padding meets zero
    /// weights, so its value does not matter.
    fn quantize_rows(&self, x: &[f32], rows: usize) -> QuantizedRows {
        let mut q = QuantizedRows {
            values: vec![0u8; rows * self.k_padded],
            scales: vec![0f32; rows],
            zeros: vec![0f32; rows],
        };
        for (t, row) in x.chunks_exact(self.inputs).enumerate() {
            let mut scale_zero = [0f32; 2];
            let codes = &mut q.values[t * self.k_padded..t * self.k_padded + self.inputs];
            super::kernels::quantize_row(row, codes, &mut scale_zero);
            [q.scales[t], q.zeros[t]] = scale_zero;
        }
        q
    }

    fn multiply(&self, x: &QuantizedRows, rows: usize, out: &mut [f32], epilogue: Epilogue) {
        #[cfg(target_arch = "x86_64")]
        if has_vnni() {
            // SAFETY: `has_vnni` checked that the CPU has AVX-512F/BW/VNNI; `x` and `out`
            // hold `rows` rows, which `multiply_vnni` checks before its unchecked reads.
            unsafe { self.multiply_vnni(x, rows, out, epilogue) };
            return;
        }
        self.multiply_portable(x, rows, out, epilogue);
    }

    fn multiply_portable(
        &self,
        x: &QuantizedRows,
        rows: usize,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        for t in 0..rows {
            let q = &x.values[t * self.k_padded..(t + 1) * self.k_padded];
            for n in 0..self.outputs {
                let acc: i32 = (0..self.k_padded)
                    .map(|k| {
                        i32::from(q[k]) * i32::from(self.packed[packed_index(k, n, self.k_padded)])
                    })
                    .sum();
                let y = x.scales[t] * self.scales[n] * (acc as f32 - x.zeros[t] * self.sums[n]);
                let o = &mut out[t * self.outputs + n];
                *o = y + epilogue.bias[n] + if epilogue.accumulate { *o } else { 0.0 };
            }
        }
    }

    /// The VNNI kernel: for each group of `PANELS` panels (64 columns) and each `ROWS`
    /// rows, `k_padded / 4` steps of `ROWS × PANELS` `vpdpbusd`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn multiply_vnni(
        &self,
        x: &QuantizedRows,
        rows: usize,
        out: &mut [f32],
        epilogue: Epilogue,
    ) {
        use std::arch::x86_64::*;
        let groups = self.k_padded / 4;
        let panel_len = groups * 64;
        assert!(
            x.values.len() >= rows * self.k_padded
                && x.scales.len() >= rows
                && out.len() >= rows * self.outputs
                && epilogue.bias.len() >= self.outputs
        );
        assert_eq!(self.packed.len(), panel_len * self.n_padded / LANES);
        for panel0 in (0..self.n_padded / LANES).step_by(PANELS) {
            let mut t0 = 0;
            while t0 < rows {
                let tile_rows = ROWS.min(rows - t0);
                let mut acc = [[_mm512_setzero_si512(); PANELS]; ROWS];
                let w = self.packed.as_ptr().add(panel0 * panel_len);
                // A fixed trip count, so the accumulators stay in registers; rows past the
                // tile's end read its last row's bytes and are never stored.
                let row_codes: [*const u8; ROWS] = std::array::from_fn(|r| {
                    x.values
                        .as_ptr()
                        .add((t0 + r.min(tile_rows - 1)) * self.k_padded)
                });
                for g in 0..groups {
                    let mut wv = [_mm512_setzero_si512(); PANELS];
                    for (p, v) in wv.iter_mut().enumerate() {
                        *v = _mm512_loadu_si512(w.add(p * panel_len + g * 64).cast());
                    }
                    for (acc_r, codes) in acc.iter_mut().zip(row_codes) {
                        let xv = _mm512_set1_epi32(codes.add(g * 4).cast::<i32>().read_unaligned());
                        for (a, wv) in acc_r.iter_mut().zip(&wv) {
                            *a = _mm512_dpbusd_epi32(*a, xv, *wv);
                        }
                    }
                }
                for (r, acc_r) in acc.iter().enumerate().take(tile_rows) {
                    let t = t0 + r;
                    let row_scale = _mm512_set1_ps(x.scales[t]);
                    let row_zero = _mm512_set1_ps(x.zeros[t]);
                    for (p, a) in acc_r.iter().enumerate() {
                        let n0 = (panel0 + p) * LANES;
                        if n0 >= self.outputs {
                            break;
                        }
                        let valid = (self.outputs - n0).min(LANES);
                        let mask: __mmask16 = if valid == LANES {
                            0xffff
                        } else {
                            (1u16 << valid) - 1
                        };
                        let sums = _mm512_maskz_loadu_ps(mask, self.sums.as_ptr().add(n0));
                        let scale = _mm512_maskz_loadu_ps(mask, self.scales.as_ptr().add(n0));
                        let bias = _mm512_maskz_loadu_ps(mask, epilogue.bias.as_ptr().add(n0));
                        // acc - zero * sums, then the two scales, then the bias.
                        let centred = _mm512_fnmadd_ps(row_zero, sums, _mm512_cvtepi32_ps(*a));
                        let y = _mm512_fmadd_ps(_mm512_mul_ps(row_scale, scale), centred, bias);
                        let dst = out.as_mut_ptr().add(t * self.outputs + n0);
                        let y = match epilogue.accumulate {
                            true => _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, dst)),
                            false => y,
                        };
                        _mm512_mask_storeu_ps(dst, mask, y);
                    }
                }
                t0 += tile_rows;
            }
        }
    }
}

/// What a product adds to its sums before storing them: the layer's bias, and the output's
/// old contents when `accumulate` (a residual connection).
#[derive(Clone, Copy)]
struct Epilogue<'a> {
    bias: &'a [f32],
    accumulate: bool,
}

/// Quantised activations: `rows × k_padded` codes, each row's scale and zero point.
struct QuantizedRows {
    values: Vec<u8>,
    scales: Vec<f32>,
    zeros: Vec<f32>,
}

/// Where `qw[k][n]` lives in the packed panels.
fn packed_index(k: usize, n: usize, k_padded: usize) -> usize {
    let (panel, lane) = (n / LANES, n % LANES);
    panel * k_padded * LANES + (k / 4) * 64 + lane * 4 + k % 4
}

pub(super) fn has_vnni() -> bool {
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kernels give the f32 product plus bias (and residual, when accumulating)
    /// within the quantisation error, for shapes that are and are not multiples of the
    /// kernel's tiles.
    #[test]
    fn int8_products_approximate_f32() {
        for (rows, inputs, outputs) in [(1, 4, 16), (7, 30, 70), (50, 384, 128), (13, 64, 200)] {
            let w: Vec<f32> = (0..inputs * outputs)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect();
            let x: Vec<f32> = (0..rows * inputs)
                .map(|i| ((i * 104_729 % 997) as f32 / 498.0) - 1.0)
                .collect();
            let bias: Vec<f32> = (0..outputs).map(|n| n as f32 / 10.0).collect();
            let layer = QuantizedLinear::new(&w, inputs, outputs);
            for accumulate in [false, true] {
                let mut got = vec![1.0; rows * outputs];
                layer.forward(&x, rows, &mut got, &bias, accumulate);
                let q = layer.quantize_rows(&x, rows);
                let mut portable = vec![1.0; rows * outputs];
                let epilogue = Epilogue {
                    bias: &bias,
                    accumulate,
                };
                layer.multiply_portable(&q, rows, &mut portable, epilogue);
                let residual = if accumulate { 1.0 } else { 0.0 };
                for t in 0..rows {
                    for n in 0..outputs {
                        let exact: f32 = residual
                            + bias[n]
                            + (0..inputs)
                                .map(|k| x[t * inputs + k] * w[k * outputs + n])
                                .sum::<f32>();
                        let tolerance = 0.02 * (inputs as f32).sqrt();
                        let (g, p) = (got[t * outputs + n], portable[t * outputs + n]);
                        assert!(
                            (g - exact).abs() < tolerance,
                            "{rows}x{inputs}x{outputs} [{t}][{n}]: {g} vs {exact}"
                        );
                        assert!(
                            (g - p).abs() <= 1e-4 * exact.abs().max(1.0),
                            "kernels differ: {g} vs {p}"
                        );
                    }
                }
            }
        }
    }
}
