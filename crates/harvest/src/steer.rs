//! Working with an SAE's features inside the model: which latents fire on each token of a
//! prompt, and steering, where the residual stream after the SAE's block is edited along
//! latents' decoder directions at every position after BOS before the rest of the model runs:
//!
//! ```text
//! add:    x' = x + v_l d_l                 (d_l = row l of W_dec)
//! clamp:  x' = x + (v_l - z_l(x)) d_l      (the latent's code set to v_l, the SAE's error kept)
//! ```
//!
//! and the next-token distribution and the greedy continuation are compared with the model's own.

use crate::{CausalLm, Error, Result};
use serde::Serialize;
use sparsecode::sae::Sae;
use sparsecode::{Matrix, Parallelism};

/// One latent set to, or pushed by, a value.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Steer {
    /// The latent.
    pub latent: usize,
    /// Its value (clamp) or the multiple of its decoder direction added (add).
    pub value: f32,
}

/// How a [`Steer`] edits the residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SteerMode {
    /// Add `value` times the decoder direction.
    Add,
    /// Set the latent's code to `value`.
    Clamp,
}

/// The latents that fire on one token: `(latent, value)`, largest first.
#[derive(Clone, Debug, Serialize)]
pub struct TokenLatents {
    /// Position in the prompt (BOS not counted).
    pub pos: usize,
    /// Token id.
    pub token: u32,
    /// How it reads.
    pub text: String,
    /// At most `top` firing latents, largest value first.
    pub latents: Vec<(usize, f32)>,
}

/// The prompt's token ids with the model's BOS first (when it has one).
pub fn prompt_ids(model: &dyn CausalLm, prompt: &str) -> Result<Vec<u32>> {
    let ids = model.tokenizer().encode_plain(prompt)?;
    if ids.is_empty() {
        return Err(Error::Param {
            field: "prompt",
            reason: "has no tokens".into(),
        });
    }
    Ok(model.tokenizer().bos().into_iter().chain(ids).collect())
}

/// Checks that `sae` reads the residual stream of `model` after `layer`, and that every steered
/// latent exists.
pub fn check(model: &dyn CausalLm, sae: &Sae, layer: usize, steers: &[Steer]) -> Result<()> {
    crate::check_layer(model, layer)?;
    crate::check_sae_width(model, sae)?;
    if let Some(s) = steers.iter().find(|s| s.latent >= sae.d_sae()) {
        return Err(Error::Param {
            field: "steer",
            reason: format!("latent {} of an SAE with {} latents", s.latent, sae.d_sae()),
        });
    }
    if let Some(s) = steers.iter().find(|s| !s.value.is_finite()) {
        return Err(Error::Param {
            field: "steer",
            reason: format!("latent {}: value {} is not finite", s.latent, s.value),
        });
    }
    Ok(())
}

/// Per token of `ids` after BOS, the `top` largest firing latents of `sae` at `layer`.
pub fn latents_per_token(
    model: &dyn CausalLm,
    sae: &Sae,
    ids: &[u32],
    layer: usize,
    top: usize,
    par: Parallelism,
) -> Result<Vec<TokenLatents>> {
    let first = usize::from(model.tokenizer().bos().is_some());
    let d = model.d_model();
    let resid = model.residual(&[ids.to_vec()], layer)?;
    let rows = Matrix::from_vec(ids.len() - first, d, resid[first * d..].to_vec())?;
    let codes = sae.encode_dense(&rows, par);
    Ok((0..rows.rows())
        .map(|r| {
            let mut fired: Vec<(usize, f32)> = codes
                .row(r)
                .iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(j, v)| (j, *v))
                .collect();
            fired.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            fired.truncate(top);
            let token = ids[first + r];
            TokenLatents {
                pos: r,
                token,
                text: model.tokenizer().token_text(token),
                latents: fired,
            }
        })
        .collect())
}

/// Applies `steers` to the residual rows `resid` (`[t, d]`) from position `first` on.
pub fn edit(
    sae: &Sae,
    steers: &[Steer],
    mode: SteerMode,
    resid: &mut [f32],
    first: usize,
    par: Parallelism,
) -> Result<()> {
    let d = sae.d_in();
    let rows = &mut resid[first * d..];
    let codes = match mode {
        SteerMode::Add => None,
        SteerMode::Clamp => {
            Some(sae.encode_dense(&Matrix::from_vec(rows.len() / d, d, rows.to_vec())?, par))
        }
    };
    for (r, row) in rows.chunks_exact_mut(d).enumerate() {
        for s in steers {
            let by = match &codes {
                None => s.value,
                Some(z) => s.value - z.row(r)[s.latent],
            };
            for (x, dir) in row.iter_mut().zip(sae.w_dec.row(s.latent)) {
                *x += by * dir;
            }
        }
    }
    Ok(())
}

/// A model run with an optional steering edit after `layer`.
pub struct Steered<'a> {
    /// The model.
    pub model: &'a dyn CausalLm,
    /// The SAE whose decoder directions steer.
    pub sae: &'a Sae,
    /// The hook.
    pub layer: usize,
    /// The edit (none: the model as it is).
    pub steers: &'a [Steer],
    /// Add or clamp.
    pub mode: SteerMode,
    /// Threads of the SAE's encoder.
    pub par: Parallelism,
}

impl Steered<'_> {
    /// Next-token logits after the last of `ids` (BOS first), the edit applied.
    pub fn next_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let t = ids.len();
        let mut resid = self.model.residual(&[ids.to_vec()], self.layer)?;
        if !self.steers.is_empty() {
            let first = usize::from(self.model.tokenizer().bos().is_some());
            edit(
                self.sae,
                self.steers,
                self.mode,
                &mut resid,
                first,
                self.par,
            )?;
        }
        self.model.logits_from(&resid, (1, t), self.layer, true)
    }

    /// `n` greedy tokens after `ids`, each step run with the edit.
    pub fn greedy(&self, ids: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut seq = ids.to_vec();
        for _ in 0..n {
            let next = crate::llama::argmax(&self.next_logits(&seq)?) as u32;
            seq.push(next);
        }
        Ok(seq[ids.len()..].to_vec())
    }
}

/// Softmax of `logits` in f64.
pub fn probabilities(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
    let e: Vec<f64> = logits.iter().map(|v| (*v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// The `k` tokens whose probability rose most and the `k` that fell most: `(token, before,
/// after)`.
pub fn largest_changes(before: &[f64], after: &[f64], k: usize) -> [Vec<(u32, f64, f64)>; 2] {
    let mut idx: Vec<usize> = (0..before.len()).collect();
    let delta = |i: &usize| after[*i] - before[*i];
    idx.sort_by(|a, b| delta(b).total_cmp(&delta(a)).then(a.cmp(b)));
    let pick = |it: &mut dyn Iterator<Item = &usize>| -> Vec<(u32, f64, f64)> {
        it.take(k)
            .map(|&i| (i as u32, before[i], after[i]))
            .collect()
    };
    [pick(&mut idx.iter()), pick(&mut idx.iter().rev())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsecode::sae::Activation;

    #[test]
    fn add_moves_along_the_decoder_row_and_clamp_sets_the_code() {
        // Two latents with decoder rows e0 and e1; encoder the same rows (ReLU).
        let mut sae = Sae::zeros(2, 2, Activation::Relu, None);
        sae.w_enc = Matrix::from_vec(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap();
        sae.w_dec = sae.w_enc.clone();
        let steer = [Steer {
            latent: 1,
            value: 5.0,
        }];
        // Row 0 is BOS (left alone); row 1 is x = (1, 2), where latent 1 reads 2.
        let mut resid = vec![9.0, 9.0, 1.0, 2.0];
        edit(
            &sae,
            &steer,
            SteerMode::Add,
            &mut resid,
            1,
            Parallelism::Serial,
        )
        .unwrap();
        assert_eq!(resid, [9.0, 9.0, 1.0, 7.0]);
        let mut resid = vec![9.0, 9.0, 1.0, 2.0];
        edit(
            &sae,
            &steer,
            SteerMode::Clamp,
            &mut resid,
            1,
            Parallelism::Serial,
        )
        .unwrap();
        assert_eq!(resid, [9.0, 9.0, 1.0, 5.0]);
    }

    #[test]
    fn changes_are_ranked_by_their_sign_and_size() {
        let before = [0.5, 0.3, 0.2];
        let after = [0.2, 0.3, 0.5];
        let [up, down] = largest_changes(&before, &after, 1);
        assert_eq!((up[0].0, down[0].0), (2, 0));
        let p = probabilities(&[0.0, 0.0]);
        assert_eq!(p, [0.5, 0.5]);
    }
}
