//! An SAE spliced into the language model, scored as SAELens' `evals.py` and SAEBench's core
//! evaluation score it: the same token contexts run three times, with the residual stream after
//! block `L` left as it is (clean), replaced by the SAE's reconstruction, and replaced by zeros
//! (ablated). With `p_v(. | t)` the next-token distribution of variant `v` at position `t` and
//! `y_t` the token that follows,
//!
//! ```text
//! CE_v           = mean_t  -log p_v(y_t | t)
//! KL_v           = mean_t  sum_y p_clean(y | t) (log p_clean(y | t) - log p_v(y | t))
//! CE loss score  = (CE_abl - CE_sae) / (CE_abl - CE_clean)     1 = as good as the model, 0 = ablation
//! KL score       = (KL_abl - KL_sae) / KL_abl
//! delta LM loss  = CE_sae - CE_clean
//! ```
//!
//! Positions: the BOS position (when the model has one) and the first `skip` tokens after it
//! keep their clean residual (the SAE was trained without BOS rows, whose norm is far larger than
//! the rest). Every other position is replaced, and every replaced position with a next token in
//! its context is scored; the reconstruction metrics cover every replaced position.

use crate::corpus::Context;
use crate::{CausalLm, Error, Result};
use rayon::prelude::*;
use serde::Serialize;
use sparsecode::eval::{ReconMetrics, ReconStats};
use sparsecode::sae::Sae;
use sparsecode::{Matrix, Parallelism};

/// How the contexts are run.
#[derive(Clone, Debug, Serialize)]
pub struct SpliceConfig {
    /// The hook: the residual stream after this block (0-based).
    pub layer: usize,
    /// Tokens after BOS whose residual stays clean (and which are not scored).
    pub skip: usize,
    /// Contexts per forward pass.
    pub batch: usize,
}

/// Sums over scored positions: cross-entropy of the clean, spliced and ablated model, and the
/// KL divergence of the spliced and the ablated model from the clean one.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpliceSums {
    /// Scored positions.
    pub tokens: u64,
    /// `[clean, sae, ablated]` cross-entropy sums (nats).
    pub ce: [f64; 3],
    /// `[sae, ablated]` KL sums (nats).
    pub kl: [f64; 2],
}

impl SpliceSums {
    fn add(&mut self, o: &SpliceSums) {
        self.tokens += o.tokens;
        (0..3).for_each(|i| self.ce[i] += o.ce[i]);
        (0..2).for_each(|i| self.kl[i] += o.kl[i]);
    }

    /// The means and scores.
    pub fn metrics(&self) -> SpliceMetrics {
        let n = self.tokens.max(1) as f64;
        let [clean, sae, abl] = self.ce.map(|c| c / n);
        let [kl_sae, kl_abl] = self.kl.map(|k| k / n);
        SpliceMetrics {
            tokens: self.tokens,
            ce_clean: clean,
            ce_sae: sae,
            ce_ablated: abl,
            ce_loss_score: (abl - sae) / (abl - clean),
            delta_lm_loss: sae - clean,
            kl_sae,
            kl_ablated: kl_abl,
            kl_score: (kl_abl - kl_sae) / kl_abl,
        }
    }
}

/// The spliced model's metrics (module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpliceMetrics {
    /// Scored positions.
    pub tokens: u64,
    /// Cross-entropy of the model as it is.
    pub ce_clean: f64,
    /// Cross-entropy with the reconstruction spliced in.
    pub ce_sae: f64,
    /// Cross-entropy with the hook zeroed.
    pub ce_ablated: f64,
    /// `(CE_abl - CE_sae) / (CE_abl - CE_clean)`.
    pub ce_loss_score: f64,
    /// `CE_sae - CE_clean`.
    pub delta_lm_loss: f64,
    /// KL of the spliced model from the clean one.
    pub kl_sae: f64,
    /// KL of the ablated model from the clean one.
    pub kl_ablated: f64,
    /// `(KL_abl - KL_sae) / KL_abl`.
    pub kl_score: f64,
}

/// A whole evaluation: the spliced model's metrics and the reconstruction metrics on the same
/// positions.
#[derive(Clone, Debug, Serialize)]
pub struct SplicedEval {
    /// CE and KL.
    pub splice: SpliceMetrics,
    /// Explained variance (1 - FVU), L0, L1, cosine, L2 ratio, dead latents.
    pub reconstruction: ReconMetrics,
}

/// Runs `contexts` through `model` clean, with `sae`'s reconstruction spliced in, and ablated.
/// `on_batch(done, total)` is called after every batch.
pub fn evaluate(
    model: &dyn CausalLm,
    sae: &Sae,
    contexts: &[Context],
    cfg: &SpliceConfig,
    par: Parallelism,
    on_batch: &mut dyn FnMut(usize, usize),
) -> Result<SplicedEval> {
    crate::check_layer(model, cfg.layer)?;
    crate::check_sae_width(model, sae)?;
    if cfg.batch == 0 {
        return Err(Error::Param {
            field: "batch",
            reason: "at least 1 context".into(),
        });
    }
    let bos = model.tokenizer().bos();
    // A batch's logits: the clean and one replaced run side by side, and candle's copy of one.
    let positions = cfg.batch.min(contexts.len()).saturating_mul(
        contexts.first().map_or(0, |c| c.tokens.len()) + usize::from(bos.is_some()),
    );
    sparsecode::memory::admit_array("spliced logits", &[3, positions, model.vocab()], 4)?;
    let mut sums = SpliceSums::default();
    let mut stats = ReconStats::new(sae.d_in(), sae.d_sae());
    let mut done = 0;
    for batch in contexts.chunks(cfg.batch) {
        let seqs: Vec<Vec<u32>> = batch
            .iter()
            .map(|c| bos.into_iter().chain(c.tokens.iter().copied()).collect())
            .collect();
        let keep = usize::from(bos.is_some()) + cfg.skip;
        let mut reconstruct = |x: &Matrix| -> Result<Matrix> {
            let codes = sae.encode_dense(x, par);
            let x_hat = sae.decode(&codes, par);
            stats.add(x, &x_hat, &codes);
            Ok(x_hat)
        };
        sums.add(&splice_batch(
            model,
            &seqs,
            cfg.layer,
            keep,
            &mut reconstruct,
        )?);
        done += batch.len();
        on_batch(done, contexts.len());
    }
    Ok(SplicedEval {
        splice: sums.metrics(),
        reconstruction: stats.metrics(),
    })
}

/// One batch of equally long sequences: the residual after `layer` at positions `keep..` of
/// each is replaced by `reconstruct` of it (rows `[n, d]`) and by zeros, and the replaced
/// positions with a next token are scored.
pub fn splice_batch(
    model: &dyn CausalLm,
    seqs: &[Vec<u32>],
    layer: usize,
    keep: usize,
    reconstruct: &mut dyn FnMut(&Matrix) -> Result<Matrix>,
) -> Result<SpliceSums> {
    let (b, t, d) = (
        seqs.len(),
        seqs.first().map_or(0, Vec::len),
        model.d_model(),
    );
    if t <= keep + 1 {
        return Err(Error::Param {
            field: "context",
            reason: format!("{t} positions leave none to score after the {keep} kept clean"),
        });
    }
    let clean = model.residual(seqs, layer)?;
    let replaced: Vec<usize> = (0..b)
        .flat_map(|s| (keep..t).map(move |p| s * t + p))
        .collect();
    let mut x = Vec::with_capacity(replaced.len() * d);
    for &r in &replaced {
        x.extend_from_slice(&clean[r * d..(r + 1) * d]);
    }
    let x_hat = reconstruct(&Matrix::from_vec(replaced.len(), d, x)?)?;
    let (mut spliced, mut ablated) = (clean.clone(), clean.clone());
    for (i, &r) in replaced.iter().enumerate() {
        spliced[r * d..(r + 1) * d].copy_from_slice(x_hat.row(i));
        ablated[r * d..(r + 1) * d].fill(0.0);
    }
    let targets: Vec<(usize, usize)> = (0..b)
        .flat_map(|s| (keep..t - 1).map(move |p| (s * t + p, seqs[s][p + 1] as usize)))
        .collect();
    let vocab = model.vocab();
    let shape = (b, t);
    let clean_logits = model.logits_from(&clean, shape, layer, false)?;
    let clean = Scored::new(&clean_logits, vocab, &targets);
    let mut sums = SpliceSums {
        tokens: targets.len() as u64,
        ce: [clean.cross_entropy(), 0.0, 0.0],
        kl: [0.0; 2],
    };
    for (v, resid) in [spliced, ablated].iter().enumerate() {
        let logits = model.logits_from(resid, shape, layer, false)?;
        let other = Scored::new(&logits, vocab, &targets);
        sums.ce[v + 1] = other.cross_entropy();
        sums.kl[v] = clean.kl_to(&other);
    }
    Ok(sums)
}

/// Row-major logits of width `vocab` at the scored positions `targets` (row, next token), with
/// each position's log-normaliser `log sum exp`, computed once.
pub struct Scored<'a> {
    logits: &'a [f32],
    vocab: usize,
    targets: &'a [(usize, usize)],
    log_norms: Vec<f64>,
}

impl<'a> Scored<'a> {
    /// The normalisers of `logits` at `targets`.
    pub fn new(logits: &'a [f32], vocab: usize, targets: &'a [(usize, usize)]) -> Self {
        let log_norms = targets
            .par_iter()
            .map(|&(r, _)| log_sum_exp(&logits[r * vocab..(r + 1) * vocab]))
            .collect();
        Scored {
            logits,
            vocab,
            targets,
            log_norms,
        }
    }

    /// Sum over the positions of `-log p(next token)`.
    pub fn cross_entropy(&self) -> f64 {
        (self.targets.iter().zip(&self.log_norms))
            .map(|(&(r, y), n)| n - self.logits[r * self.vocab + y] as f64)
            .sum()
    }

    /// Sum over the positions of `KL(self || other)` (same positions and vocabulary).
    pub fn kl_to(&self, other: &Scored) -> f64 {
        let v = self.vocab;
        (self.targets.par_iter().enumerate())
            .map(|(i, &(r, _))| {
                let (p, q) = (
                    &self.logits[r * v..(r + 1) * v],
                    &other.logits[r * v..(r + 1) * v],
                );
                let (np, nq) = (self.log_norms[i], other.log_norms[i]);
                p.iter()
                    .zip(q)
                    .map(|(a, b)| {
                        let lp = *a as f64 - np;
                        lp.exp() * (lp - (*b as f64 - nq))
                    })
                    .sum::<f64>()
            })
            .sum()
    }
}

/// `log sum exp(row)` in f64, shifted by the maximum.
fn log_sum_exp(row: &[f32]) -> f64 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
    m + row.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_give_zero_kl_and_equal_cross_entropy() {
        let logits = vec![1.0, 2.0, 0.5, -1.0, 0.0, 3.0];
        let targets = [(0, 1), (1, 2)];
        let (a, b) = (
            Scored::new(&logits, 3, &targets),
            Scored::new(&logits, 3, &targets),
        );
        assert_eq!(a.cross_entropy(), b.cross_entropy());
        assert!(a.kl_to(&b).abs() < 1e-12);
    }

    #[test]
    fn cross_entropy_and_kl_match_their_closed_forms() {
        // Uniform clean logits over 4 tokens: CE = ln 4. The other puts p = (0.7, 0.1, 0.1, 0.1):
        // KL(uniform || p) = sum 1/4 ln((1/4) / p_i).
        let clean = vec![0.0f32; 4];
        let p = [0.7f64, 0.1, 0.1, 0.1];
        let other: Vec<f32> = p.iter().map(|v| v.ln() as f32).collect();
        let targets = [(0, 0)];
        let (c, o) = (
            Scored::new(&clean, 4, &targets),
            Scored::new(&other, 4, &targets),
        );
        assert!((c.cross_entropy() - 4f64.ln()).abs() < 1e-9);
        assert!((o.cross_entropy() - -(0.7f64.ln())).abs() < 1e-6);
        let want: f64 = p.iter().map(|q| 0.25 * (0.25 / q).ln()).sum();
        assert!(
            (c.kl_to(&o) - want).abs() < 1e-6,
            "{} vs {want}",
            c.kl_to(&o)
        );
    }

    #[test]
    fn scores_are_one_for_a_perfect_splice_and_zero_for_ablation() {
        let perfect = SpliceSums {
            tokens: 10,
            ce: [20.0, 20.0, 50.0],
            kl: [0.0, 12.0],
        };
        let m = perfect.metrics();
        assert_eq!(
            (m.ce_loss_score, m.kl_score, m.delta_lm_loss),
            (1.0, 1.0, 0.0)
        );
        let ablated = SpliceSums {
            tokens: 10,
            ce: [20.0, 50.0, 50.0],
            kl: [12.0, 12.0],
        };
        let m = ablated.metrics();
        assert_eq!((m.ce_loss_score, m.kl_score), (0.0, 0.0));
        assert!((m.delta_lm_loss - 3.0).abs() < 1e-12);
    }
}
