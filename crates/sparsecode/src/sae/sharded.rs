//! TopK and BatchTopK on a dictionary split by latents across processes (latent sharding).
//!
//! Each process holds a block of latents (their encoder and decoder rows) and the whole batch.
//! A step: (1) each block's top `k` per row, with exact values (the certified encoder's
//! selection, whose values are the reference dot products); (2) the blocks' candidates are
//! gathered and each row keeps the `k` largest positive values over the whole dictionary, ties
//! to the lower global index, the rule of one process, so that the union of the blocks'
//! selections is exactly one process's selection (the whole top `k` is among the blocks' top
//! `k`s); (3) the blocks' partial reconstructions are summed (in block order) and `b_dec`
//! added, so every process holds the same error `e`; (4) each block's weight gradients from `e`
//! and its own codes; `b_dec`'s from `e` and the summed encoder paths. AuxK runs the same way
//! over the dead latents of every block. Only the reconstruction's rounding differs from one
//! process (a sum of partial sums), so gradients agree within float tolerance.

use super::collective::{Collective, LatentShard};
use super::grads::{encoder_path, sized, LossParts, Workspace};
use super::params::Grads;
use super::topk::{
    auxk_and_weight_grads, certifiable, error_of_reconstruction, gather_sum, mark_fired,
    pre_activations_as, select_active, select_top, AuxK, Selection,
};
use super::Sae;
use crate::linalg::TopK;
use crate::Parallelism;
use rayon::prelude::*;

/// The loss and gradients of this block's latents of a TopK SAE (`sae` holds the block's
/// rows, `b_dec` whole) on the whole step's rows `x`. Gradients go into `g` (this block's
/// tensors and the whole `b_dec`); `ws.fired` marks this block's latents that fired. Every
/// block returns the same loss terms; `l0` counts the whole dictionary's codes.
pub fn sharded_topk_loss_grad(
    sae: &Sae,
    x: &[f32],
    selection: Selection<'_>,
    aux: Option<AuxK<'_>>,
    shard: &mut dyn LatentShard,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let (n, m) = sae.w_dec.shape();
    let b = pre_activations_as(sae, x, ws, certifiable(sae, selection), par);
    match selection {
        Selection::PerSample(k) => {
            select_top(sae, b, k.min(n), None, ws, false);
            keep_global_top(shard, &mut ws.topk, k);
        }
        // BatchTopK: the threshold is the k·B-th largest over every block's values (gathered),
        // so each block's entries above it are already the global selection's.
        _ => select_active(sae, selection, (b, b), &mut BlockValues(shard), ws),
    }
    let xhat = sized(&mut ws.xhat, x.len());
    xhat.fill(0.0);
    gather_sum(sae, &ws.topk, xhat);
    shard.sum_f32(xhat);
    xhat.par_chunks_mut(m)
        .for_each(|r| r.iter_mut().zip(&sae.b_dec).for_each(|(v, c)| *v += c));
    let recon = error_of_reconstruction(x, b, ws);
    let aux_loss = auxk_and_weight_grads(sae, aux, (b, b), None, (ws, g), Some(shard), par);
    g.b_dec.fill(0.0);
    for row in ws.de[..b * m].chunks_exact(m) {
        g.b_dec.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    // b_dec also enters every block's encoder through x - b_dec: the blocks' paths summed.
    if sae.apply_b_dec_to_input {
        let through = encoder_path(sae, &g.b_enc, &mut ws.tmp_m);
        shard.sum_f32(through);
        g.b_dec.iter_mut().zip(&*through).for_each(|(a, v)| *a -= v);
    }
    let active = shard.sum_count(mark_fired(ws, n) as u64) as usize;
    LossParts::of_step(recon, aux_loss, active, b)
}

/// The collective of a block's selection: every block's values, gathered.
struct BlockValues<'a>(&'a mut dyn LatentShard);

impl Collective for BlockValues<'_> {
    fn kth_largest(&mut self, values: &mut Vec<f32>, count: usize) -> f32 {
        self.0.gathered_kth(values, count)
    }

    fn reduce(&mut self, _grads: &mut Grads, _stats: &mut super::StepStats) {}
}

/// Keeps in `codes` (this block's best slots per row, local indices) only the entries that are
/// among the `k` largest positive values of their row over every block (ties to the lower
/// global index); the others get value 0 (an inactive slot).
pub fn keep_global_top(shard: &mut dyn LatentShard, codes: &mut TopK, k: usize) {
    let offset = shard.offset() as u32;
    let rows = codes.rows();
    let mut send = Vec::with_capacity(8 + codes.values.len() * 8);
    send.extend_from_slice(&(codes.k as u64).to_le_bytes());
    for (&j, &v) in codes.indices.iter().zip(&codes.values) {
        send.extend_from_slice(&v.to_le_bytes());
        send.extend_from_slice(&(j + offset).to_le_bytes());
    }
    let all = shard.all_gather_bytes(&send);
    let blocks: Vec<(usize, &[u8])> = all
        .iter()
        .map(|b| {
            let kb = crate::io::le::leading_u64(b) as usize;
            (kb, b.get(8..).unwrap_or_default())
        })
        .collect();
    let mut row_best: Vec<(f32, u32)> = Vec::new();
    for r in 0..rows {
        row_best.clear();
        for &(kb, data) in &blocks {
            for s in r * kb..(r + 1) * kb {
                let at = s * 8;
                let Some(slot) = data.get(at..at + 8) else {
                    continue;
                };
                let v = f32::from_le_bytes(slot[..4].try_into().unwrap_or([0; 4]));
                let j = u32::from_le_bytes(slot[4..].try_into().unwrap_or([0; 4]));
                if v > 0.0 {
                    row_best.push((v, j));
                }
            }
        }
        row_best.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        row_best.truncate(k);
        let kept = |j: u32| row_best.iter().any(|&(_, i)| i == j);
        let ck = codes.k;
        for s in r * ck..(r + 1) * ck {
            if codes.values[s] > 0.0 && !kept(codes.indices[s] + offset) {
                codes.values[s] = 0.0;
            }
        }
    }
}
