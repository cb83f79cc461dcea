//! The few normalisation and attention primitives both forwards need, on candle tensors.
//! (candle-nn has fused versions; these are a handful of lines each and keep the dependency
//! set to candle-core.)

use candle_core::{DType, Device, Tensor, D};

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(w)?
        .broadcast_add(b)
}

/// Numerically stable softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
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

/// A `[t, t]` additive mask: 0 on and below the diagonal, -inf above (causal attention).
pub fn causal_mask(t: usize, device: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(v, (t, t), device)
}

/// Transposed, contiguous copy of a 2-D weight (`[out, in]` -> `[in, out]`) in f32.
pub fn transposed(w: &Tensor) -> candle_core::Result<Tensor> {
    w.to_dtype(DType::F32)?.t()?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_and_softmax_match_naive_formulas() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1.0f32, 2.0, 3.0, 6.0], [-1.0, 0.5, 0.0, 2.0]], &dev).unwrap();
        let w = Tensor::new(&[1.0f32, 2.0, 0.5, 1.0], &dev).unwrap();
        let b = Tensor::new(&[0.1f32, 0.0, -0.1, 0.0], &dev).unwrap();
        let rows: Vec<Vec<f32>> = x.to_vec2().unwrap();
        let wv: Vec<f32> = w.to_vec1().unwrap();
        let bv: Vec<f32> = b.to_vec1().unwrap();
        let rms: Vec<Vec<f32>> = rms_norm(&x, &w, 1e-5).unwrap().to_vec2().unwrap();
        let ln: Vec<Vec<f32>> = layer_norm(&x, &w, &b, 1e-5).unwrap().to_vec2().unwrap();
        let sm: Vec<Vec<f32>> = softmax_last(&x).unwrap().to_vec2().unwrap();
        for (r, row) in rows.iter().enumerate() {
            let n = row.len() as f32;
            let ms = row.iter().map(|v| v * v).sum::<f32>() / n;
            let mean = row.iter().sum::<f32>() / n;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
            let z: f32 = row.iter().map(|v| v.exp()).sum();
            for c in 0..row.len() {
                let want_rms = row[c] / (ms + 1e-5).sqrt() * wv[c];
                let want_ln = (row[c] - mean) / (var + 1e-5).sqrt() * wv[c] + bv[c];
                assert!((rms[r][c] - want_rms).abs() < 1e-5);
                assert!((ln[r][c] - want_ln).abs() < 1e-5);
                assert!((sm[r][c] - row[c].exp() / z).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let m: Vec<Vec<f32>> = causal_mask(3, &Device::Cpu).unwrap().to_vec2().unwrap();
        assert_eq!(m[0][0], 0.0);
        assert!(m[0][1].is_infinite() && m[1][2].is_infinite());
        assert_eq!(m[2][0], 0.0);
    }
}
