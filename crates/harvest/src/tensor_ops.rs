//! The few normalisation and attention primitives both forwards need, on candle tensors.
//! (candle-nn has fused versions; these are a handful of lines each and keep the dependency
//! set to candle-core.)

use candle_core::{DType, Device, Tensor, D};

/// Applies `f(row)` to every row (last dimension) of `x` in parallel, returning a new tensor:
/// one fused pass instead of a chain of allocating tensor ops.
fn map_rows(x: &Tensor, f: impl Fn(&mut [f32]) + Sync) -> candle_core::Result<Tensor> {
    use rayon::prelude::*;
    let shape = x.shape().clone();
    let d = x.dim(D::Minus1)?;
    let mut v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    v.par_chunks_mut(d).for_each(&f);
    Tensor::from_vec(v, shape, x.device())
}

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let w: Vec<f32> = w.to_vec1()?;
    map_rows(x, |r| {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / r.len() as f32;
        let s = 1.0 / (ms + eps as f32).sqrt();
        r.iter_mut().zip(&w).for_each(|(v, g)| *v *= s * g);
    })
}

/// Numerically stable softmax over the last dimension (rows of -inf only give zeros).
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    map_rows(x, |r| {
        let m = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if m == f32::NEG_INFINITY {
            r.iter_mut().for_each(|v| *v = 0.0);
            return;
        }
        let mut z = 0.0;
        for v in r.iter_mut() {
            *v = (*v - m).exp();
            z += *v;
        }
        r.iter_mut().for_each(|v| *v /= z);
    })
}

/// `x @ wt (+ b)` for `x` of any leading shape and `wt` stored `[in, out]`.
pub fn linear(x: &Tensor, wt: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let dims = x.dims().to_vec();
    let last = dims[dims.len() - 1];
    let rows = x.elem_count() / last;
    let y = x.reshape((rows, last))?.matmul(wt)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    let n = out.len();
    out[n - 1] = wt.dim(1)?;
    y.reshape(out)
}

/// Scaled attention scores `q k^T / sqrt(dh)` for `[.., t, dh]` queries and keys. `k^T` is made
/// contiguous first: with a transposed view, the batched product took a gemm path that calls a
/// software `fmaf` (27% of the MiniLM forward before this).
pub fn attention_scores(q: &Tensor, k: &Tensor) -> candle_core::Result<Tensor> {
    let dh = q.dim(D::Minus1)?;
    q.matmul(&k.t()?.contiguous()?)? * (1.0 / (dh as f64).sqrt())
}

/// A `[t, t]` additive mask: 0 where position `i` sees position `j` (`j <= i`, and within the
/// last `window` positions when given: sliding-window attention), -inf elsewhere.
pub fn causal_mask(
    t: usize,
    window: Option<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                let seen = j <= i && window.is_none_or(|w| i - j < w);
                if seen {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(v, (t, t), device)
}

/// Transposed, contiguous copy of a 2-D weight (`[out, in]` -> `[in, out]`) in f32.
pub fn transposed(w: &Tensor) -> candle_core::Result<Tensor> {
    w.to_dtype(DType::F32)?.t()?.contiguous()
}

/// erf(x) as a rational function of x on [-4, 4] (|erf| is 1 in f32 beyond): the coefficients
/// used by XLA/Eigen for f32, accurate to a few ulp. Written here because libm's scalar `erff`
/// (what candle's `gelu_erf` calls per element) was 14% of the MiniLM forward, and this form is
/// plain multiplies, adds and one division that the compiler vectorises (not `mul_add`: without
/// a target FMA feature that becomes a call to a software `fmaf`).
#[inline]
pub fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_3e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_erf_matches_libm() {
        let mut worst = 0.0f32;
        for i in -6000..=6000 {
            let x = i as f32 * 1e-3;
            worst = worst.max((erf_fast(x) - libm_erf(x)).abs());
        }
        assert!(worst < 2e-6, "max |erf error| {worst}");
    }

    fn libm_erf(x: f32) -> f32 {
        // candle's own erf (libm) through a one-element tensor.
        Tensor::new(&[x], &Device::Cpu)
            .unwrap()
            .erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    }

    #[test]
    fn rms_norm_and_softmax_match_naive_formulas() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1.0f32, 2.0, 3.0, 6.0], [-1.0, 0.5, 0.0, 2.0]], &dev).unwrap();
        let w = Tensor::new(&[1.0f32, 2.0, 0.5, 1.0], &dev).unwrap();
        let rows: Vec<Vec<f32>> = x.to_vec2().unwrap();
        let wv: Vec<f32> = w.to_vec1().unwrap();
        let rms: Vec<Vec<f32>> = rms_norm(&x, &w, 1e-5).unwrap().to_vec2().unwrap();
        let sm: Vec<Vec<f32>> = softmax_last(&x).unwrap().to_vec2().unwrap();
        for (r, row) in rows.iter().enumerate() {
            let n = row.len() as f32;
            let ms = row.iter().map(|v| v * v).sum::<f32>() / n;
            let z: f32 = row.iter().map(|v| v.exp()).sum();
            for c in 0..row.len() {
                let want_rms = row[c] / (ms + 1e-5).sqrt() * wv[c];
                assert!((rms[r][c] - want_rms).abs() < 1e-5);
                assert!((sm[r][c] - row[c].exp() / z).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn causal_mask_hides_the_future_and_a_window_the_distant_past() {
        let m: Vec<Vec<f32>> = causal_mask(5, None, &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        let w: Vec<Vec<f32>> = causal_mask(5, Some(2), &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(m[i][j] == 0.0, j <= i, "causal ({i}, {j})");
                assert_eq!(w[i][j] == 0.0, j <= i && i - j < 2, "window ({i}, {j})");
                assert!(m[i][j] == 0.0 || m[i][j] == f32::NEG_INFINITY);
            }
        }
    }
}
