//! Data parallelism in miniature: the two halves of a batch, computed separately (BatchTopK's
//! threshold and a Switch SAE's rows per expert taken over the whole batch) and summed, give the whole batch's gradients and
//! statistics, and therefore its update, for every architecture.

use super::step::{gradients, update, StepInputs};
use super::trainer::initial_state;
use super::*;
use crate::data::{generate, SynthConfig};
use crate::sae::{Collective, Grads, SingleProcess, StepStats, Workspace};
use crate::{Matrix, Parallelism};

/// One process's view of a batch split in two: the batch-level threshold and sums are the
/// ones found over the whole batch.
struct HalfOf {
    threshold: f32,
    sums: Vec<f64>,
}

impl Collective for HalfOf {
    fn kth_largest(&mut self, _values: &mut Vec<f32>, _count: usize) -> f32 {
        self.threshold
    }
    fn reduce(&mut self, _grads: &mut Grads, _stats: &mut StepStats) {}
    fn sum_f64(&mut self, values: &mut [f64]) {
        values.copy_from_slice(&self.sums);
    }
}

/// The whole batch in one process, keeping what it summed.
#[derive(Default)]
struct Whole {
    sums: Vec<f64>,
}

impl Collective for Whole {
    fn kth_largest(&mut self, values: &mut Vec<f32>, count: usize) -> f32 {
        SingleProcess.kth_largest(values, count)
    }
    fn reduce(&mut self, _grads: &mut Grads, _stats: &mut StepStats) {}
    fn sum_f64(&mut self, values: &mut [f64]) {
        self.sums = values.to_vec();
    }
}

fn step_of(
    cfg: &TrainConfig,
    state: &TrainState,
    (rows, total): (&[f32], usize),
    dead: &[bool],
    collective: &mut dyn Collective,
) -> (Grads, StepStats) {
    let mut ws = Workspace::default();
    let mut g = Grads::like(&state.sae);
    let mut stats = StepStats::default();
    let inputs = StepInputs {
        rows,
        total,
        l1: 0.05,
        dead,
    };
    let buffers = (&mut ws, &mut g, &mut stats);
    gradients(
        cfg,
        &state.sae,
        inputs,
        collective,
        buffers,
        Parallelism::Serial,
    )
    .unwrap();
    (g, stats)
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale,
            "{what}[{i}]: halves {x} vs whole {y}"
        );
    }
}

fn architectures() -> Vec<ArchConfig> {
    vec![
        ArchConfig::Relu {
            l1: 0.05,
            l1_warmup_steps: 0,
        },
        ArchConfig::TopK {
            k: 3,
            aux_k: 4,
            aux_coef: 0.5,
        },
        ArchConfig::BatchTopK {
            k: 3,
            aux_k: 4,
            aux_coef: 0.5,
        },
        ArchConfig::Matryoshka {
            k: 3,
            aux_k: 4,
            aux_coef: 0.5,
            prefixes: vec![4, 10, 24],
        },
        ArchConfig::JumpRelu {
            l0: 0.1,
            bandwidth: 0.5,
            init_threshold: 0.3,
        },
        ArchConfig::Gated { l1: 0.05 },
        ArchConfig::Mlp {
            l1: 0.05,
            hidden: 16,
            l1_warmup_steps: 0,
        },
        ArchConfig::Switch {
            k: 3,
            experts: 4,
            lb_coef: 0.5,
            aux_k: 4,
            aux_coef: 0.5,
        },
    ]
}

#[test]
fn two_halves_summed_give_the_whole_batch_update() {
    let data = generate(
        &SynthConfig {
            latents: 24,
            dims: 10,
            samples: 64,
            test_samples: 0,
            ..SynthConfig::e2(3)
        },
        None,
    )
    .unwrap();
    let x: &Matrix = &data.train.activations;
    let (rows, d) = x.shape();
    let dead: Vec<bool> = (0..24).map(|j| j % 3 == 0).collect();
    for arch in architectures() {
        let mut cfg = TrainConfig::new(arch.clone(), 24, 10, rows, 1e-2, 5);
        // Adam divides by the root of the second moment: with a larger epsilon a gradient that
        // is zero up to rounding moves nothing, instead of a full step of either sign.
        cfg.adam_eps = 1e-3;
        let state = initial_state(&cfg, x, None).unwrap();
        let mut one = Whole::default();
        let (mut g_whole, mut whole) = step_of(&cfg, &state, (x.as_slice(), rows), &dead, &mut one);
        whole.finish();
        let mut half = HalfOf {
            threshold: whole.batch_threshold,
            sums: one.sums,
        };
        let cut = rows / 2 * d;
        let (mut g, mut stats) =
            step_of(&cfg, &state, (&x.as_slice()[..cut], rows), &dead, &mut half);
        let (g2, stats2) = step_of(&cfg, &state, (&x.as_slice()[cut..], rows), &dead, &mut half);
        g.add(&g2);
        stats.add(&stats2);
        stats.finish();
        let name = format!("{arch:?}");
        for ((id, a), (_, b)) in g.named().into_iter().zip(g_whole.named()) {
            close(a, b, &format!("{name} {id}"));
        }
        assert_eq!(stats.fired, whole.fired, "{name}: fired");
        let (p, q) = (stats.parts, whole.parts);
        for (a, b, what) in [
            (p.loss, q.loss, "loss"),
            (p.recon, q.recon, "recon"),
            (p.l0, q.l0, "l0"),
            (p.variance, q.variance, "variance"),
        ] {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{name} {what}: {a} vs {b}"
            );
        }
        assert!(
            q.l0 > 0.0 && q.recon > 0.0,
            "{name}: the step does something"
        );
        // The same update follows from the summed parts as from the whole batch.
        let (mut s1, mut s2) = (state.clone(), state.clone());
        update(&cfg, &mut s1, &mut g, &stats, 1e-2);
        update(&cfg, &mut s2, &mut g_whole, &whole, 1e-2);
        for ((id, a), (_, b)) in s1.sae.tensors().into_iter().zip(s2.sae.tensors()) {
            close(a, b, &format!("{name} updated {id}"));
        }
        assert_eq!(s1.since_fired, s2.since_fired, "{name}: dead counters");
    }
}

#[test]
fn batch_topk_threshold_is_the_whole_batch_kth_largest() {
    let mut v = vec![0.5f32, 3.0, 1.0, 2.0, 0.25];
    assert_eq!(SingleProcess.kth_largest(&mut v, 2), 2.0);
    assert_eq!(SingleProcess.kth_largest(&mut v, 5), 0.0);
    assert_eq!(SingleProcess.kth_largest(&mut v, 0), 0.0);
}
