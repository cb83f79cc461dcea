//! The distributed paths with ranks as threads ([`LocalGroup`]).

use super::reduce::{any, or_bits, Reducer};
use super::*;
use crate::data::{generate, SynthConfig};
use crate::train::{train, train_with, ArchConfig, NoObserver, TrainConfig, TrainOutcome};
use crate::Matrix;

/// Runs `f(rank's transport)` on every rank of a group of `size` threads, each inside a
/// one-thread pool of its own (ranks sharing the library's pool of that size would wait for
/// each other's turn on it while waiting for each other in the exchanges); results in rank
/// order.
pub(super) fn on_ranks<R: Send>(size: usize, f: impl Fn(&mut LocalGroup) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(size)
            .into_iter()
            .map(|mut t| {
                let f = &f;
                s.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .build()
                        .unwrap();
                    pool.install(|| f(&mut t))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn parts_cover_the_rows_in_rank_order() {
    for (rows, size) in [(10, 3), (4096, 2), (5, 8), (0, 2), (7, 1)] {
        let parts: Vec<_> = (0..size).map(|r| part_of(rows, r, size)).collect();
        assert_eq!(parts[0].start, 0);
        assert_eq!(parts[size - 1].end, rows);
        for w in parts.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        assert!(parts.iter().all(|p| p.len() <= rows.div_ceil(size)));
    }
}

#[test]
fn sum_is_the_rank_order_sum_on_every_rank() {
    for (size, n) in [(2, 7), (3, 1000), (4, 3), (1, 5)] {
        let input = |r: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 31 + r * 17) % 13) as f32 * 0.1 + r as f32 * 1e-7)
                .collect()
        };
        let got = on_ranks(size, |t| {
            let mut v = input(t.rank());
            Reducer::default().sum_f32(t, &mut v);
            v
        });
        let mut expect = input(0);
        for r in 1..size {
            expect.iter_mut().zip(input(r)).for_each(|(a, b)| *a += b);
        }
        for v in &got {
            assert_eq!(v, &expect, "size {size}");
        }
    }
}

#[test]
fn flags_and_bits_are_or_ed() {
    let got = on_ranks(3, |t| {
        let mut bits: Vec<bool> = (0..20).map(|i| i % 3 == t.rank()).collect();
        or_bits(t, &mut bits);
        let last = t.rank() == 2;
        (any(t, last), any(t, false), bits)
    });
    for (a, b, bits) in got {
        assert!(a && !b);
        assert!(bits.iter().all(|&f| f));
    }
}

fn planted() -> Matrix {
    generate(
        &SynthConfig {
            latents: 32,
            dims: 12,
            samples: 400,
            test_samples: 0,
            ..SynthConfig::e2(5)
        },
        None,
    )
    .unwrap()
    .train
    .activations
}

fn config(arch: ArchConfig) -> TrainConfig {
    let mut c = TrainConfig::new(arch, 32, 40, 64, 3e-3, 3);
    c.log_every = 10;
    c.dead_window = 256;
    c
}

fn weights(o: &TrainOutcome) -> Vec<f32> {
    o.state
        .sae
        .tensors()
        .into_iter()
        .flat_map(|(_, t)| t.to_vec())
        .collect()
}

fn data_parallel(cfg: &TrainConfig, x: &Matrix, size: usize) -> Vec<TrainOutcome> {
    let checked = cfg.clone().check_for(x).unwrap();
    on_ranks(size, |t| {
        let mut dp = DataParallel::new(t);
        train_with(&checked, x, None, None, &mut NoObserver, &mut dp).unwrap()
    })
}

#[test]
fn data_parallel_equals_one_process_and_repeats_exactly() {
    let x = planted();
    for arch in [
        ArchConfig::TopK {
            k: 3,
            aux_k: 4,
            aux_coef: 0.1,
        },
        ArchConfig::BatchTopK {
            k: 3,
            aux_k: 4,
            aux_coef: 0.1,
        },
        ArchConfig::Relu {
            l1: 0.05,
            l1_warmup_steps: 0,
        },
        ArchConfig::Switch {
            k: 3,
            experts: 4,
            lb_coef: 0.1,
            aux_k: 4,
            aux_coef: 0.1,
        },
    ] {
        let cfg = config(arch.clone());
        let one = train(
            &cfg.clone().check_for(&x).unwrap(),
            &x,
            None,
            None,
            &mut NoObserver,
        )
        .unwrap();
        let two = data_parallel(&cfg, &x, 2);
        let again = data_parallel(&cfg, &x, 2);
        let three = data_parallel(&cfg, &x, 3);
        for o in two.iter().chain(&again) {
            assert_eq!(weights(o), weights(&two[0]), "{arch:?}: ranks and repeats");
            assert_eq!(o.state.since_fired, two[0].state.since_fired);
        }
        for (name, runs) in [("2 ranks", &two), ("3 ranks", &three)] {
            let (a, b) = (weights(&runs[0]), weights(&one));
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 2e-3 * scale,
                "{arch:?} {name}: off by {worst} (scale {scale})"
            );
            let (la, lb) = (runs[0].last.as_ref().unwrap(), one.last.as_ref().unwrap());
            assert!(
                (la.loss - lb.loss).abs() <= 1e-3 * lb.loss,
                "{arch:?} {name}: loss"
            );
            assert!(
                (la.l0 - lb.l0).abs() <= 0.05 * lb.l0.max(1.0),
                "{arch:?} {name}: l0"
            );
        }
    }
}

/// A transport whose rank 1 reports other weights when they are compared.
#[test]
fn ranks_holding_other_weights_stop_with_an_error() {
    let x = planted();
    let cfg = config(ArchConfig::TopK {
        k: 3,
        aux_k: 0,
        aux_coef: 0.0,
    });
    let checked = cfg.check_for(&x).unwrap();
    let errors = on_ranks(2, |t| {
        let rank = t.rank();
        let mut dp = DataParallel::new(t);
        // Rank 1 starts from other weights: its digest differs at the first comparison.
        let mut state = crate::train::initial_state_for(&checked, &x).unwrap();
        if rank == 1 {
            state.sae.b_dec[0] += 1.0;
        }
        train_with(&checked, &x, None, Some(state), &mut NoObserver, &mut dp)
            .err()
            .map(|e| e.to_string())
    });
    for e in errors {
        let e = e.expect("the run must stop");
        // Compared every 100 steps and at the last (the 40th).
        assert!(e.contains("after step 40") && e.contains("[1]"), "{e}");
    }
}

/// The slots with a positive value of `codes`, as (row, global latent, value bits).
fn entries(codes: &crate::linalg::TopK, offset: u32) -> Vec<(usize, u32, u32)> {
    let k = codes.k;
    let mut v: Vec<_> = (0..codes.values.len())
        .filter(|&s| codes.values[s] > 0.0)
        .map(|s| (s / k, codes.indices[s] + offset, codes.values[s].to_bits()))
        .collect();
    v.sort_unstable();
    v
}

fn near(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * scale,
            "{what}[{i}]: {x} vs {y} (scale {scale})"
        );
    }
}

#[test]
fn one_sharded_step_selects_what_one_process_selects() {
    use crate::sae::{sharded_topk_loss_grad, sparse_loss_grad, AuxK, Grads, Selection};
    use crate::sae::{SingleProcess, Workspace};
    let x = planted();
    let (rows, n, k) = (x.rows(), 32, 4);
    let dead: Vec<bool> = (0..n).map(|j| j % 3 == 0).collect();
    let (aux_k, aux_coef) = (6, 0.5);
    for arch in [
        ArchConfig::TopK { k, aux_k, aux_coef },
        ArchConfig::BatchTopK { k, aux_k, aux_coef },
    ] {
        let cfg = config(arch.clone());
        let mut state = crate::train::initial_state_for(&cfg.check_for(&x).unwrap(), &x).unwrap();
        // Biases that move the selection away from the tied initialisation's.
        for (j, b) in state.sae.b_enc.iter_mut().enumerate() {
            *b = ((j * 7) % 5) as f32 * 0.05 - 0.1;
        }
        let sae = &state.sae;
        let selection = match arch {
            ArchConfig::TopK { .. } => Selection::PerSample(k),
            _ => Selection::Batch(k),
        };
        for (size, with_aux) in [(2, false), (3, true), (4, true)] {
            let aux = |dead| {
                with_aux.then_some(AuxK {
                    k_aux: aux_k,
                    coef: aux_coef,
                    dead,
                })
            };
            let (mut ws, mut g) = (Workspace::default(), Grads::like(sae));
            let serial = crate::Parallelism::Serial;
            let one = sparse_loss_grad(
                sae,
                x.as_slice(),
                rows,
                selection,
                aux(&dead),
                &mut SingleProcess,
                &mut ws,
                &mut g,
                serial,
            );
            let reference = entries(&ws.topk, 0);
            let shards = on_ranks(size, |t| {
                let mut sh = LatentSharded::new(t, n);
                let block = sh.block();
                let local = block_of(sae, block.clone());
                let (mut ws, mut gl) = (Workspace::default(), Grads::like(&local));
                let a = aux(&dead[block.clone()]);
                let x = x.as_slice();
                let parts = sharded_topk_loss_grad(
                    &local, x, selection, a, &mut sh, &mut ws, &mut gl, serial,
                );
                (
                    block.clone(),
                    parts,
                    entries(&ws.topk, block.start as u32),
                    gl,
                    ws.batch_threshold,
                )
            });
            let mut union: Vec<_> = shards.iter().flat_map(|s| s.2.clone()).collect();
            union.sort_unstable();
            let first_difference = union.iter().zip(&reference).find(|(a, b)| a != b);
            assert!(
                union == reference,
                "{arch:?}, {size} shards select {} entries, one process {}; first difference {first_difference:?}",
                union.len(),
                reference.len()
            );
            for (block, parts, _, gl, threshold) in &shards {
                let m = x.cols();
                let what = format!("{arch:?}, {size} shards, block {block:?}");
                assert_eq!(threshold.to_bits(), ws.batch_threshold.to_bits(), "{what}");
                near(
                    &gl.w_dec,
                    &g.w_dec[block.start * m..block.end * m],
                    &format!("{what} w_dec"),
                );
                near(
                    &gl.w_enc,
                    &g.w_enc[block.start * m..block.end * m],
                    &format!("{what} w_enc"),
                );
                near(&gl.b_enc, &g.b_enc[block.clone()], &format!("{what} b_enc"));
                near(&gl.b_dec, &g.b_dec, &format!("{what} b_dec"));
                for (a, b, term) in [
                    (parts.recon, one.recon, "recon"),
                    (parts.sparsity, one.sparsity, "aux"),
                    (parts.l0, one.l0, "l0"),
                ] {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{what} {term}: {a} vs {b}"
                    );
                }
            }
            assert!(one.l0 > 0.0 && (!with_aux || one.sparsity > 0.0));
        }
    }
}

#[test]
fn a_sharded_dictionary_starts_alike_at_every_rank_count() {
    let x = planted();
    let cfg = config(ArchConfig::TopK {
        k: 3,
        aux_k: 4,
        aux_coef: 0.1,
    });
    let whole = crate::train::initial_block_state(&cfg, &x, 0..32).unwrap();
    for size in [2, 3, 5] {
        let mut w_dec = Vec::new();
        for r in 0..size {
            let block = crate::train::initial_block_state(&cfg, &x, part_of(32, r, size)).unwrap();
            assert_eq!(block.sae.b_dec, whole.sae.b_dec);
            w_dec.extend_from_slice(block.sae.w_dec.as_slice());
        }
        assert!(w_dec == whole.sae.w_dec.as_slice(), "{size} blocks");
    }
}

#[test]
fn sharded_training_follows_one_process_from_the_same_start() {
    let x = planted();
    let (k, aux_k, aux_coef) = (3, 4, 0.1);
    for arch in [
        ArchConfig::TopK { k, aux_k, aux_coef },
        ArchConfig::BatchTopK { k, aux_k, aux_coef },
    ] {
        let mut cfg = config(arch);
        cfg.steps = 30;
        let checked = cfg.clone().check_for(&x).unwrap();
        let start = crate::train::initial_state_for(&checked, &x).unwrap();
        let one = train(&checked, &x, None, Some(start.clone()), &mut NoObserver).unwrap();
        for size in [2, 3] {
            let sharded = TrainConfig {
                latent_shards: size,
                ..cfg.clone()
            };
            let checked = sharded.check_for(&x).unwrap();
            // A run that does not shard its latents refuses a sharded job, and the other way round.
            let refused = on_ranks(size, |t| {
                let mut sh = LatentSharded::new(t, 32);
                let plain = cfg.clone().check_for(&x).unwrap();
                train_with(&plain, &x, None, None, &mut NoObserver, &mut sh).unwrap_err()
            });
            assert!(
                refused[0].to_string().contains("latent_shards"),
                "{}",
                refused[0]
            );
            let runs = on_ranks(size, |t| {
                let mut sh = LatentSharded::new(t, 32);
                let sae = block_of(&start.sae, sh.block());
                let state = crate::train::TrainState {
                    adam: crate::train::step::adam_for(&cfg, &sae),
                    since_fired: start.since_fired[sh.block()].to_vec(),
                    sae,
                    step: 0,
                };
                train_with(&checked, &x, None, Some(state), &mut NoObserver, &mut sh).unwrap()
            });
            let w_dec: Vec<f32> = runs
                .iter()
                .flat_map(|o| o.state.sae.w_dec.as_slice().to_vec())
                .collect();
            let reference = one.state.sae.w_dec.as_slice();
            let worst = w_dec
                .iter()
                .zip(reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-3, "{size} blocks: decoders off by {worst}");
            let (a, b) = (runs[0].last.as_ref().unwrap(), one.last.as_ref().unwrap());
            assert!(
                (a.loss - b.loss).abs() <= 1e-4 * b.loss,
                "{size} blocks: loss {} vs {}",
                a.loss,
                b.loss
            );
            assert!((a.dead_fraction - b.dead_fraction).abs() < 1e-9);
            for o in &runs {
                assert_eq!(
                    o.state.sae.b_dec, runs[0].state.sae.b_dec,
                    "b_dec on every rank"
                );
            }
        }
    }
}
