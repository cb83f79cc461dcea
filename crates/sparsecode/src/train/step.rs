//! One training step in phases: [`gradients`] (the collective phase for batch-level choices,
//! then this process's loss and gradients into buffers, as sums over the step's total rows),
//! [`Collective::reduce`] (summing across processes; nothing in one process), and [`update`]
//! (Adam over the named parameter set, the decoder-norm constraint, BatchTopK's running
//! threshold, dead-latent counters), identical in every process.

use super::{Adam, ArchConfig, TrainConfig, TrainState, Update};
use crate::linalg::normalize_rows;
use crate::sae::{
    gated_loss_grad, jumprelu_loss_grad, matryoshka_loss_grad, mlp_loss_grad, relu_loss_grad,
    sharded_topk_loss_grad, sparse_loss_grad, switch_loss_grad, topk_loss_grad, AuxK, Collective,
    Encoder, Grads, LossParts, Magnitude, ParamId, Sae, Selection, StepStats, Workspace,
};
use crate::{Error, Matrix, Parallelism, Result};

/// What changes from step to step besides the weights.
#[derive(Clone, Copy, Debug)]
pub struct StepInputs<'a> {
    /// This process's rows of the step's batch (row-major, `d_in` wide).
    pub rows: &'a [f32],
    /// Rows in the whole step's batch, over every process (every mean is taken over them).
    pub total: usize,
    /// The L1 coefficient now (after its warm-up).
    pub l1: f32,
    /// Which latents count as dead (for AuxK).
    pub dead: &'a [bool],
}

/// Phases 1 and 2 of a step: the loss and gradients of `inputs.rows` into `g`, and the step's
/// statistics into `stats`, every mean taken over the step's `inputs.total` rows.
pub fn gradients(
    cfg: &TrainConfig,
    sae: &Sae,
    inputs: StepInputs<'_>,
    collective: &mut dyn Collective,
    (ws, g, stats): (&mut Workspace, &mut Grads, &mut StepStats),
    par: Parallelism,
) -> Result<()> {
    let d_in = sae.d_in();
    stats.parts = loss_grad(cfg, sae, inputs, collective, ws, g, par)?;
    stats.fired.clone_from(&ws.fired);
    stats.batch_threshold = ws.batch_threshold;
    stats.observe_rows(inputs.rows, d_in);
    Ok(())
}

/// The architecture's loss on its own encoder; a model whose encoder is not the one the
/// configuration trains is refused (the per-architecture losses take their encoder's
/// parameters as typed arguments, so no other model can reach them).
fn loss_grad(
    cfg: &TrainConfig,
    sae: &Sae,
    inputs: StepInputs<'_>,
    collective: &mut dyn Collective,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> Result<LossParts> {
    let StepInputs {
        rows: x,
        total,
        l1,
        dead,
    } = inputs;
    let aux = |aux_k: usize, coef: f32| {
        (aux_k > 0).then_some(AuxK {
            k_aux: aux_k,
            coef,
            dead,
        })
    };
    // A block of a sharded dictionary (the configuration's check admits TopK and BatchTopK).
    if let Some(shard) = collective.latent_shard() {
        let (selection, aux) = match cfg.arch {
            ArchConfig::TopK { k, aux_k, aux_coef } => {
                (Selection::PerSample(k), aux(aux_k, aux_coef))
            }
            ArchConfig::BatchTopK { k, aux_k, aux_coef } => {
                (Selection::Batch(k), aux(aux_k, aux_coef))
            }
            _ => {
                return Err(Error::param(
                    "latent_shards",
                    "only TopK and BatchTopK shard their latents",
                ))
            }
        };
        return Ok(sharded_topk_loss_grad(
            sae, x, selection, aux, shard, ws, g, par,
        ));
    }
    Ok(match (&cfg.arch, &sae.encoder) {
        (ArchConfig::Relu { .. }, Encoder::Relu) => relu_loss_grad(sae, x, total, l1, ws, g, par),
        (&ArchConfig::TopK { k, aux_k, aux_coef }, Encoder::TopK { .. }) => {
            topk_loss_grad(sae, x, total, k, aux(aux_k, aux_coef), ws, g, par)
        }
        (&ArchConfig::BatchTopK { k, aux_k, aux_coef }, Encoder::JumpRelu { .. }) => {
            let (selection, aux) = (Selection::Batch(k), aux(aux_k, aux_coef));
            sparse_loss_grad(sae, x, total, selection, aux, collective, ws, g, par)
        }
        (
            ArchConfig::Matryoshka {
                k,
                aux_k,
                aux_coef,
                prefixes,
            },
            Encoder::JumpRelu { .. },
        ) => {
            let (selection, aux) = ((*k, &prefixes[..]), aux(*aux_k, *aux_coef));
            matryoshka_loss_grad(sae, x, total, selection, aux, collective, ws, g, par)
        }
        (&ArchConfig::JumpRelu { l0, bandwidth, .. }, Encoder::JumpRelu { threshold }) => {
            jumprelu_loss_grad(sae, threshold, x, total, l0, bandwidth, ws, g, par)
        }
        (ArchConfig::Gated { .. }, Encoder::Gated { b_mag, r_mag }) => {
            let mag = Magnitude { b_mag, r_mag };
            gated_loss_grad(sae, mag, x, total, l1, None, ws, g, par)
        }
        (ArchConfig::Mlp { .. }, Encoder::Mlp { hidden }) => {
            mlp_loss_grad(sae, hidden, x, total, l1, ws, g, par)
        }
        (
            &ArchConfig::Switch {
                lb_coef,
                aux_k,
                aux_coef,
                ..
            },
            Encoder::Switch { k, router },
        ) => {
            let terms = (lb_coef, aux(aux_k, aux_coef));
            switch_loss_grad(sae, router, *k, x, total, terms, collective, ws, g, par)
        }
        (arch, encoder) => {
            return Err(Error::param(
                "arch",
                format!(
                    "the model's encoder ({:?}) is not the one {arch:?} trains",
                    encoder.activation()
                ),
            ))
        }
    })
}

/// Running-average weight of BatchTopK's (and Matryoshka's) inference threshold.
const THRESHOLD_EMA: f32 = 0.99;

/// Phase 4: steps the weights with the (reduced) gradients `g` and statistics `stats` at the
/// learning rate `lr`, the same in every process.
pub fn update(
    cfg: &TrainConfig,
    state: &mut TrainState,
    g: &mut Grads,
    stats: &StepStats,
    lr: f32,
) {
    let sae = &mut state.sae;
    let renormalise = cfg.train_decoder && cfg.unit_norm_decoder;
    if renormalise {
        project_decoder_grad(&sae.w_dec, &mut g.w_dec);
    }
    state.adam.step(sae, g, lr, &|id| cfg.update_of(id));
    if renormalise {
        let d_in = sae.d_in();
        normalize_rows(sae.w_dec.as_mut_slice(), d_in);
    }
    if let (
        ArchConfig::BatchTopK { .. } | ArchConfig::Matryoshka { .. },
        Encoder::JumpRelu { threshold },
    ) = (&cfg.arch, &mut sae.encoder)
    {
        step_batch_threshold(threshold, stats.batch_threshold);
    }
    let b = cfg.batch_size as u64;
    for (s, &f) in state.since_fired.iter_mut().zip(&stats.fired) {
        *s = if f { 0 } else { s.saturating_add(b) };
    }
    state.step += 1;
}

/// BatchTopK's inference threshold: a running average of each step's batch-level threshold.
fn step_batch_threshold(threshold: &mut [f32], batch: f32) {
    if batch <= 0.0 {
        return;
    }
    let old = threshold.first().copied().unwrap_or(0.0);
    let new = if old > 0.0 {
        THRESHOLD_EMA * old + (1.0 - THRESHOLD_EMA) * batch
    } else {
        batch
    };
    threshold.fill(new);
}

/// Removes from each decoder-row gradient its component along the (unit) row, so a step moves
/// along the sphere to first order.
fn project_decoder_grad(w_dec: &Matrix, g: &mut [f32]) {
    use rayon::prelude::*;
    let m = w_dec.cols();
    g.par_chunks_mut(m).enumerate().for_each(|(j, gr)| {
        let d = w_dec.row(j);
        let dot = crate::linalg::simd::dot(gr, d);
        crate::linalg::simd::axpy(gr, -dot, d);
    });
}

impl TrainConfig {
    /// How the optimiser treats the parameter `id` under this configuration: biases only when
    /// learned, the decoder only when trained, JumpReLU's thresholds in log space, BatchTopK's
    /// threshold not at all (a running average sets it).
    pub fn update_of(&self, id: ParamId) -> Update {
        let on = |yes: bool| if yes { Update::Plain } else { Update::Skip };
        match id {
            ParamId::WDec => on(self.train_decoder),
            ParamId::Threshold => match self.arch {
                ArchConfig::JumpRelu { .. } => Update::LogSpace,
                _ => Update::Skip,
            },
            id if id.is_bias() => on(self.biases),
            _ => Update::Plain,
        }
    }
}

/// Adam's fresh state for `sae`, with the configuration's hyper-parameters.
pub(crate) fn adam_for(cfg: &TrainConfig, sae: &Sae) -> Adam {
    Adam::for_sae(cfg.adam_beta1, cfg.adam_beta2, cfg.adam_eps, sae)
}
