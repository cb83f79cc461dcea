//! Latent sharding: rank `r` of `P` owns latents [`part_of`]`(N, r, P)` (their encoder and
//! decoder rows and Adam moments) and sees the whole batch; TopK's selection, reconstruction
//! and `b_dec` gradient are exchanged as [`crate::sae::sharded_topk_loss_grad`] describes,
//! the rest of a step (weight gradients, Adam, the decoder-norm constraint) stays on the owner.

use super::reduce::Reducer;
use super::{part_of, Transport};
use crate::sae::{Collective, Encoder, Grads, LatentShard, Sae, StepStats};
use std::ops::Range;

/// This rank's block of a latent-sharded dictionary, as the step's collective.
pub struct LatentSharded<'a> {
    transport: &'a mut dyn Transport,
    reducer: Reducer,
    latents: usize,
    block: Range<usize>,
}

impl<'a> LatentSharded<'a> {
    /// Rank `transport.rank()`'s block of a dictionary of `latents` latents.
    pub fn new(transport: &'a mut dyn Transport, latents: usize) -> Self {
        let block = part_of(latents, transport.rank(), transport.size());
        LatentSharded {
            transport,
            reducer: Reducer::default(),
            latents,
            block,
        }
    }

    /// The latents this rank owns.
    pub fn block(&self) -> Range<usize> {
        self.block.clone()
    }
}

/// The block `rows` of `sae`: its latents' encoder and decoder rows and biases (a linear
/// encoder's; `b_dec` whole).
pub fn block_of(sae: &Sae, rows: Range<usize>) -> Sae {
    let per_latent = |v: &[f32]| v[rows.clone()].to_vec();
    let encoder = match &sae.encoder {
        Encoder::JumpRelu { threshold } => Encoder::JumpRelu {
            threshold: per_latent(threshold),
        },
        e => e.clone(),
    };
    Sae {
        encoder,
        w_enc: sae.w_enc.slice_rows(rows.start, rows.end),
        b_enc: per_latent(&sae.b_enc),
        w_dec: sae.w_dec.slice_rows(rows.start, rows.end),
        b_dec: sae.b_dec.clone(),
        apply_b_dec_to_input: sae.apply_b_dec_to_input,
    }
}

/// The whole SAE from its blocks, in latent order (the inverse of [`block_of`]).
pub fn join_blocks(blocks: &[Sae]) -> Option<Sae> {
    let first = blocks.first()?;
    let d_in = first.d_in();
    let cat = |f: &dyn Fn(&Sae) -> &[f32]| -> Vec<f32> {
        blocks.iter().flat_map(|b| f(b).iter().copied()).collect()
    };
    let n: usize = blocks.iter().map(|b| b.d_sae()).sum();
    let encoder = match &first.encoder {
        Encoder::JumpRelu { .. } => Encoder::JumpRelu {
            threshold: blocks
                .iter()
                .flat_map(|b| match &b.encoder {
                    Encoder::JumpRelu { threshold } => threshold.clone(),
                    _ => Vec::new(),
                })
                .collect(),
        },
        e => e.clone(),
    };
    Some(Sae {
        encoder,
        w_enc: crate::Matrix::from_vec(n, d_in, cat(&|b| b.w_enc.as_slice())).ok()?,
        b_enc: cat(&|b| &b.b_enc),
        w_dec: crate::Matrix::from_vec(n, d_in, cat(&|b| b.w_dec.as_slice())).ok()?,
        b_dec: first.b_dec.clone(),
        apply_b_dec_to_input: first.apply_b_dec_to_input,
    })
}

impl LatentShard for LatentSharded<'_> {
    fn offset(&self) -> usize {
        self.block.start
    }

    fn latents(&self) -> usize {
        self.block.len()
    }

    fn total_latents(&self) -> usize {
        self.latents
    }

    fn all_gather_bytes(&mut self, send: &[u8]) -> Vec<Vec<u8>> {
        self.transport.all_gather_bytes(send)
    }

    fn sum_f32(&mut self, values: &mut [f32]) {
        self.reducer.sum_f32(self.transport, values)
    }
}

impl Collective for LatentSharded<'_> {
    fn kth_largest(&mut self, values: &mut Vec<f32>, count: usize) -> f32 {
        self.gathered_kth(values, count)
    }

    /// The gradients belong to their block and the loss terms are already the whole step's:
    /// only the step's statistics stay as they are (every rank saw the same rows).
    fn reduce(&mut self, _grads: &mut Grads, _stats: &mut StepStats) {}

    fn latent_shard(&mut self) -> Option<&mut dyn LatentShard> {
        Some(self)
    }

    fn ranks(&self) -> usize {
        self.transport.size()
    }

    fn any(&mut self, flag: bool) -> bool {
        super::reduce::any(self.transport, flag)
    }
}
