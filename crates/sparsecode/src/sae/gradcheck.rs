//! Finite-difference checks of the hand-written backward passes.

use super::*;
use crate::Parallelism;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn random_sae(d_in: usize, d_sae: usize, act: Activation, seed: u64) -> Sae {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sae = Sae::init(d_in, d_sae, act, EncoderInit::FanInUniform, &mut rng);
    // Non-unit decoder rows and non-zero biases, so every term of the gradient is exercised.
    for v in sae.w_dec.as_mut_slice() {
        *v *= 1.3;
    }
    for v in sae.w_dec.as_mut_slice().iter_mut().take(d_in) {
        *v *= 0.5;
    }
    sae.b_enc
        .iter_mut()
        .for_each(|v| *v = 0.1 * Distribution::<f32>::sample(&StandardNormal, &mut rng) + 0.05);
    sae.b_dec
        .iter_mut()
        .for_each(|v| *v = 0.2 * Distribution::<f32>::sample(&StandardNormal, &mut rng));
    sae
}

fn batch(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect()
}

/// Loss of a (perturbed) SAE and a signature of its active set: a change of signature inside the
/// difference interval marks a kink.
type LossFn<'a> = dyn Fn(&Sae) -> (f64, Vec<u32>) + 'a;

/// Loss and kink signature from one of the library's loss functions.
fn via_library(
    s: &Sae,
    f: &dyn Fn(&Sae, &mut Workspace, &mut Grads) -> LossParts,
) -> (f64, Vec<u32>) {
    let mut w = Workspace::default();
    let mut g = Grads::like(s);
    let loss = f(s, &mut w, &mut g).loss;
    let mut sig: Vec<u32> = w.pre.iter().map(|v| (*v > 0.0) as u32).collect();
    sig.extend(&w.topk.indices);
    sig.extend(w.topk.values.iter().map(|v| (*v > 0.0) as u32));
    (loss, sig)
}

/// Compares every analytic partial derivative with a central difference. Coordinates where the
/// active set changes inside the difference interval (a kink) are skipped; at most 25% may be.
fn check(sae: &Sae, analytic: &Grads, f: &LossFn<'_>) {
    let eps = 2e-3f32;
    let mut checked = 0;
    let mut skipped = 0;
    // The JumpReLU threshold gets a pseudo-gradient (checked against a naive loop instead).
    for (name, grad) in analytic
        .named()
        .into_iter()
        .filter(|(n, _)| *n != ParamId::Threshold)
    {
        for i in 0..grad.len() {
            let eval = |delta: f32| {
                let mut s = sae.clone();
                let mut tensors = s.tensors_mut();
                let (_, t) = tensors
                    .iter_mut()
                    .find(|(id, _)| *id == name)
                    .expect("the gradient's names are the model's");
                t[i] += delta;
                drop(tensors);
                f(&s)
            };
            let (lp, sp) = eval(eps);
            let (lm, sm) = eval(-eps);
            if sp != sm {
                skipped += 1;
                continue;
            }
            let numeric = (lp - lm) / (2.0 * eps as f64);
            let a = grad[i] as f64;
            assert!(
                (a - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                "{name}[{i}]: analytic {a} vs numeric {numeric}"
            );
            checked += 1;
        }
    }
    assert!(
        skipped * 4 <= checked,
        "too many kinks: {skipped} skipped, {checked} checked"
    );
}

fn analytic(sae: &Sae, f: &dyn Fn(&Sae, &mut Workspace, &mut Grads) -> LossParts) -> Grads {
    let mut ws = Workspace::default();
    let mut g = Grads::like(sae);
    f(sae, &mut ws, &mut g);
    g
}

#[test]
fn relu_l1_gradient_matches_finite_differences() {
    for apply in [true, false] {
        let mut sae = random_sae(5, 7, Activation::Relu, 1);
        sae.apply_b_dec_to_input = apply;
        let x = batch(6, 5, 2);
        let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
            relu_loss_grad(s, &x, 6, 0.3, ws, g, Parallelism::Serial)
        };
        check(&sae, &analytic(&sae, &f), &|s| via_library(s, &f));
    }
}

/// Runs `f` with the ReLU step forced onto its sparse (or dense) path.
fn relu_path<T>(sparse: bool, f: impl FnOnce() -> T) -> T {
    super::relu::FORCE_SPARSE_RELU.with(|c| c.set(Some(sparse)));
    let out = f();
    super::relu::FORCE_SPARSE_RELU.with(|c| c.set(None));
    out
}

#[test]
fn sparse_relu_l1_gradient_matches_finite_differences() {
    for apply in [true, false] {
        let mut sae = random_sae(5, 7, Activation::Relu, 3);
        sae.apply_b_dec_to_input = apply;
        let x = batch(6, 5, 4);
        let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
            relu_path(true, || {
                relu_loss_grad(s, &x, 6, 0.3, ws, g, Parallelism::Serial)
            })
        };
        check(&sae, &analytic(&sae, &f), &|s| via_library(s, &f));
    }
}

#[test]
fn sparse_and_dense_relu_paths_agree_at_every_thread_count() {
    let mut sae = random_sae(24, 300, Activation::Relu, 5);
    let x = batch(64, 24, 6);
    let xm = crate::Matrix::from_vec(64, 24, x.clone()).unwrap();
    sae.set_firing_rate(&xm, 0.05, Parallelism::Serial).unwrap();
    let run = |sparse: bool, threads: usize| {
        let par = Parallelism::threads(threads);
        let mut ws = Workspace::default();
        let mut g = Grads::like(&sae);
        let parts = relu_path(sparse, || {
            par.install(|| relu_loss_grad(&sae, &x, 64, 0.2, &mut ws, &mut g, par))
        });
        (parts, g, ws.fired)
    };
    let dense = paths_agree(&run);
    // Each latent fires on round(5% of 64) = 3 rows.
    assert_eq!(dense.l0, 300.0 * 3.0 / 64.0);
}

/// The dense and sparse paths of `run(sparse, threads)` give the same L0 and fired latents,
/// losses within 1e-5 and gradients within 1e-4 of each tensor's largest, and the sparse path
/// the same bits at 2 and 3 threads as at 1; returns the dense path's loss parts.
fn paths_agree(run: &dyn Fn(bool, usize) -> (LossParts, Grads, Vec<bool>)) -> LossParts {
    let (dense, g_dense, fired_dense) = run(false, 1);
    let (sparse, g_sparse, fired_sparse) = run(true, 1);
    assert_eq!(dense.l0, sparse.l0);
    assert_eq!(fired_dense, fired_sparse);
    assert!(
        (dense.loss - sparse.loss).abs() <= 1e-5 * dense.loss,
        "{dense:?} {sparse:?}"
    );
    for ((name, a), (_, b)) in g_dense.named().into_iter().zip(g_sparse.named()) {
        let scale = a.iter().map(|v| v.abs()).fold(0.0f32, f32::max).max(1e-6);
        let worst = a
            .iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-4 * scale, "{name}: {worst} of {scale}");
    }
    for threads in [2, 3] {
        let (parts, g, _) = run(true, threads);
        assert_eq!(parts, sparse, "{threads} threads");
        assert_eq!(g, g_sparse, "{threads} threads");
    }
    dense
}

#[test]
fn sparse_and_dense_gated_paths_agree_at_every_thread_count() {
    let mut sae = random_sae(24, 300, Activation::Gated, 25);
    if let Encoder::Gated { b_mag, r_mag } = &mut sae.encoder {
        b_mag
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 0.01 * (i % 7) as f32 - 0.03);
        r_mag
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = 0.02 * (i % 5) as f32 - 0.04);
    }
    let x = batch(64, 24, 26);
    let xm = crate::Matrix::from_vec(64, 24, x.clone()).unwrap();
    sae.set_firing_rate(&xm, 0.05, Parallelism::Serial).unwrap();
    let (wf, bf) = (sae.w_dec.clone(), sae.b_dec.clone());
    let run = |sparse: bool, threads: usize| {
        let par = Parallelism::threads(threads);
        let (mut ws, mut g) = (Workspace::default(), Grads::like(&sae));
        let Encoder::Gated { b_mag, r_mag } = &sae.encoder else {
            unreachable!("a gated model")
        };
        let mag = Magnitude { b_mag, r_mag };
        let parts = relu_path(sparse, || {
            let frozen = Some((&wf, &bf[..]));
            par.install(|| gated_loss_grad(&sae, mag, &x, 64, 0.2, frozen, &mut ws, &mut g, par))
        });
        (parts, g, ws.fired)
    };
    let dense = paths_agree(&run);
    assert!(dense.l0 > 1.0, "{dense:?}");
}

#[test]
fn topk_gradient_matches_finite_differences() {
    let sae = random_sae(6, 9, Activation::TopK { k: 3 }, 3);
    let x = batch(7, 6, 4);
    let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
        topk_loss_grad(s, &x, 7, 3, None, ws, g, Parallelism::Serial)
    };
    check(&sae, &analytic(&sae, &f), &|s| via_library(s, &f));
}

#[test]
fn topk_auxk_gradient_matches_finite_differences() {
    let sae = random_sae(6, 10, Activation::TopK { k: 2 }, 5);
    let x = batch(8, 6, 6);
    let dead: Vec<bool> = (0..10).map(|j| j % 3 != 0).collect();
    let aux = AuxK {
        k_aux: 3,
        coef: 0.5,
        dead: &dead,
    };
    let mut ws = Workspace::default();
    let mut g = Grads::like(&sae);
    let with = topk_loss_grad(
        &sae,
        &x,
        8,
        2,
        Some(aux),
        &mut ws,
        &mut g,
        Parallelism::Serial,
    );
    assert!(
        with.sparsity > 0.0,
        "the aux loss must be active in this test"
    );
    // The residual target of AuxK is detached (a constant), so the aux gradient is checked on its
    // own: (gradient with aux) - (gradient without) against a naive dense AuxK loss whose target
    // is the base model's residual.
    let with_aux = analytic(&sae, &|s, ws, g| {
        topk_loss_grad(s, &x, 8, 2, Some(aux), ws, g, Parallelism::Serial)
    });
    let without = analytic(&sae, &|s, ws, g| {
        topk_loss_grad(s, &x, 8, 2, None, ws, g, Parallelism::Serial)
    });
    let diff =
        |a: &Vec<f32>, b: &Vec<f32>| a.iter().zip(b).map(|(p, q)| p - q).collect::<Vec<f32>>();
    let aux_grad = Grads {
        w_enc: diff(&with_aux.w_enc, &without.w_enc),
        b_enc: diff(&with_aux.b_enc, &without.b_enc),
        w_dec: diff(&with_aux.w_dec, &without.w_dec),
        b_dec: diff(&with_aux.b_dec, &without.b_dec),
        encoder: Vec::new(),
    };
    let xm = crate::Matrix::from_vec(8, 6, x.clone()).unwrap();
    let base_rec = sae.reconstruct(&xm, Parallelism::Serial);
    let residual: Vec<f32> = x
        .iter()
        .zip(base_rec.as_slice())
        .map(|(a, b)| a - b)
        .collect();
    let naive_aux = |s: &Sae| {
        let mut sig = Vec::new();
        let mut loss = 0.0f64;
        let scale = (dead.iter().filter(|d| **d).count() as f64 / 3.0).min(1.0);
        for r in 0..8 {
            let xr = &x[r * 6..(r + 1) * 6];
            let mut pre: Vec<(f32, usize)> = (0..10)
                .filter(|j| dead[*j])
                .map(|j| {
                    let v: f32 = (0..6)
                        .map(|i| (xr[i] - s.b_dec[i]) * s.w_enc.get(j, i))
                        .sum::<f32>()
                        + s.b_enc[j];
                    (v, j)
                })
                .collect();
            pre.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut e = [0.0f32; 6];
            for &(v, j) in pre.iter().take(3) {
                sig.push(j as u32 * 2 + (v > 0.0) as u32);
                for i in 0..6 {
                    e[i] += v.max(0.0) * s.w_dec.get(j, i);
                }
            }
            loss += (0..6)
                .map(|i| ((e[i] - residual[r * 6 + i]) as f64).powi(2))
                .sum::<f64>();
        }
        (0.5 * scale * loss / 8.0, sig)
    };
    check(&sae, &aux_grad, &naive_aux);
}

/// Loss and gradients of `f` (given the workspace, gradients and parallelism) computed on a pool
/// of `threads` threads.
fn at_threads(
    threads: usize,
    sae: &Sae,
    f: &(dyn Fn(&mut Workspace, &mut Grads, Parallelism) -> LossParts + Sync),
) -> (LossParts, Grads) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let (mut ws, mut g) = (Workspace::default(), Grads::like(sae));
        let l = f(&mut ws, &mut g, Parallelism::threads(threads));
        (l, g)
    })
}

/// AuxK over every other latent, as the thread-count tests use it.
fn every_other_dead(n: usize) -> Vec<bool> {
    (0..n).map(|j| j % 2 == 0).collect()
}

#[test]
fn topk_gradients_identical_across_thread_counts() {
    let sae = random_sae(33, 70, Activation::TopK { k: 4 }, 7);
    let x = batch(50, 33, 8);
    let dead = every_other_dead(70);
    let f = |ws: &mut Workspace, g: &mut Grads, par: Parallelism| {
        let aux = AuxK {
            k_aux: 5,
            coef: 1.0 / 32.0,
            dead: &dead,
        };
        topk_loss_grad(&sae, &x, 50, 4, Some(aux), ws, g, par)
    };
    assert_eq!(at_threads(1, &sae, &f), at_threads(2, &sae, &f));
}

#[test]
fn topk_forward_matches_dense_reference() {
    // The sparse gather-sum reconstruction equals decode(encode_dense(x)).
    let sae = random_sae(8, 20, Activation::TopK { k: 5 }, 9);
    let x = batch(11, 8, 10);
    let mut ws = Workspace::default();
    let mut g = Grads::like(&sae);
    let parts = topk_loss_grad(&sae, &x, 11, 5, None, &mut ws, &mut g, Parallelism::Serial);
    let xm = crate::Matrix::from_vec(11, 8, x.clone()).unwrap();
    let rec = sae.reconstruct(&xm, Parallelism::Serial);
    let want: f64 = rec
        .as_slice()
        .iter()
        .zip(&x)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / 11.0;
    assert!(
        (parts.recon - want).abs() < 1e-4 * want.max(1.0),
        "{} vs {want}",
        parts.recon
    );
}

#[test]
fn dense_and_sparse_auxk_paths_agree() {
    let sae = random_sae(12, 40, Activation::TopK { k: 3 }, 11);
    let x = batch(9, 12, 12);
    let dead: Vec<bool> = (0..40).map(|j| j % 5 != 0).collect();
    let aux = AuxK {
        k_aux: 4,
        coef: 0.25,
        dead: &dead,
    };
    let run = |dense: bool| {
        super::topk::FORCE_DENSE_AUX.with(|f| f.set(Some(dense)));
        let mut ws = Workspace::default();
        let mut g = Grads::like(&sae);
        let l = topk_loss_grad(
            &sae,
            &x,
            9,
            3,
            Some(aux),
            &mut ws,
            &mut g,
            Parallelism::Serial,
        );
        super::topk::FORCE_DENSE_AUX.with(|f| f.set(None));
        (l, g)
    };
    let ((ld, gd), (ls, gs)) = (run(true), run(false));
    assert!(ld.sparsity > 0.0);
    assert!((ld.loss - ls.loss).abs() < 1e-6 * ld.loss.abs().max(1.0));
    for (a, b) in [
        (&gd.w_enc, &gs.w_enc),
        (&gd.b_enc, &gs.b_enc),
        (&gd.w_dec, &gs.w_dec),
        (&gd.b_dec, &gs.b_dec),
    ] {
        for (u, v) in a.iter().zip(b.iter()) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }
}

/// Which side of every kink a gated or MLP SAE is on for batch `x` (plain loops, no library
/// kernels): a change inside the difference interval marks a kink.
fn dense_signature(s: &Sae, x: &[f32]) -> Vec<u32> {
    let m = s.d_in();
    let mut sig = Vec::new();
    for xr in x.chunks_exact(m) {
        let xc: Vec<f32> = (0..m)
            .map(|i| {
                xr[i]
                    - if s.apply_b_dec_to_input {
                        s.b_dec[i]
                    } else {
                        0.0
                    }
            })
            .collect();
        let input: Vec<f32> = match s.encoder.hidden() {
            Some(h) => (0..h.w.rows())
                .map(|r| {
                    let v = (0..m).map(|i| h.w.get(r, i) * xc[i]).sum::<f32>() + h.b[r];
                    sig.push((v > 0.0) as u32);
                    v.max(0.0)
                })
                .collect(),
            None => xc,
        };
        for j in 0..s.d_sae() {
            let u: f32 = input.iter().zip(s.w_enc.row(j)).map(|(a, b)| a * b).sum();
            sig.push((u + s.b_enc[j] > 0.0) as u32);
            if let Encoder::Gated { b_mag, r_mag } = &s.encoder {
                sig.push((u * r_mag[j].exp() + b_mag[j] > 0.0) as u32);
            }
        }
    }
    sig
}

#[test]
fn gated_gradient_matches_finite_differences() {
    for (apply, sparse) in [(true, false), (false, false), (true, true), (false, true)] {
        let mut sae = random_sae(5, 8, Activation::Gated, 21);
        sae.apply_b_dec_to_input = apply;
        if let Encoder::Gated { b_mag, r_mag } = &mut sae.encoder {
            b_mag
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = 0.05 * i as f32 - 0.1);
            r_mag
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = 0.1 * i as f32 - 0.3);
        }
        let x = batch(7, 5, 22);
        // The auxiliary term reads a frozen copy of the decoder: perturbing the live decoder
        // must not move it.
        let (wf, bf) = (sae.w_dec.clone(), sae.b_dec.clone());
        let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
            let Encoder::Gated { b_mag, r_mag } = &s.encoder else {
                unreachable!("a gated model")
            };
            let mag = Magnitude { b_mag, r_mag };
            let frozen = Some((&wf, &bf[..]));
            relu_path(sparse, || {
                gated_loss_grad(s, mag, &x, 7, 0.2, frozen, ws, g, Parallelism::Serial)
            })
        };
        let g = analytic(&sae, &f);
        let nonzero = |id| g.get(id).unwrap().iter().any(|v| *v != 0.0);
        assert!(nonzero(ParamId::RMag) && nonzero(ParamId::BMag));
        check(&sae, &g, &|s| {
            (via_library(s, &f).0, dense_signature(s, &x))
        });
    }
}

#[test]
fn mlp_encoder_gradient_matches_finite_differences() {
    for apply in [true, false] {
        let mut rng = ChaCha8Rng::seed_from_u64(31);
        let mut sae = random_sae(5, 7, Activation::Relu, 30).with_hidden_layer(6, &mut rng);
        sae.apply_b_dec_to_input = apply;
        if let Encoder::Mlp { hidden } = &mut sae.encoder {
            hidden.b.iter_mut().for_each(|v| *v = 0.1);
        }
        sae.b_enc.iter_mut().for_each(|v| *v = 0.05);
        let x = batch(8, 5, 32);
        let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
            let hidden = s.encoder.hidden().expect("an MLP encoder");
            mlp_loss_grad(s, hidden, &x, 8, 0.3, ws, g, Parallelism::Serial)
        };
        let g = analytic(&sae, &f);
        assert!(g.get(ParamId::WHidden).unwrap().iter().any(|v| *v != 0.0));
        check(&sae, &g, &|s| {
            (via_library(s, &f).0, dense_signature(s, &x))
        });
        // Its loss agrees with the inference path's reconstruction.
        let xm = crate::Matrix::from_vec(8, 5, x.clone()).unwrap();
        let rec = sae.reconstruct(&xm, Parallelism::Serial);
        let want: f64 = rec
            .as_slice()
            .iter()
            .zip(&x)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            / 8.0;
        let got = f(&sae, &mut Workspace::default(), &mut Grads::like(&sae)).recon;
        assert!((got - want).abs() < 1e-4 * want.max(1.0), "{got} vs {want}");
    }
}

#[test]
fn batch_topk_gradient_matches_finite_differences() {
    let sae = random_sae(6, 9, Activation::TopK { k: 2 }, 41);
    let x = batch(7, 6, 42);
    let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
        let mut one = SingleProcess;
        let sel = Selection::Batch(2);
        sparse_loss_grad(s, &x, 7, sel, None, &mut one, ws, g, Parallelism::Serial)
    };
    let mut ws = Workspace::default();
    let parts = f(&sae, &mut ws, &mut Grads::like(&sae));
    // k * B codes in the whole batch, spread unevenly over the samples.
    assert!((parts.l0 - 2.0).abs() < 1e-9, "{}", parts.l0);
    let per_row: Vec<usize> = ws
        .topk
        .values
        .chunks(ws.topk.k)
        .map(|r| r.iter().filter(|v| **v > 0.0).count())
        .collect();
    assert!(per_row.iter().any(|c| *c != 2), "{per_row:?}");
    check(&sae, &analytic(&sae, &f), &|s| via_library(s, &f));
}

#[test]
fn jumprelu_gradient_matches_finite_differences_and_naive_threshold_rule() {
    let mut sae = random_sae(6, 9, Activation::JumpRelu, 51);
    let thresholds: Vec<f32> = (0..9).map(|j| 0.05 + 0.03 * j as f32).collect();
    sae.encoder = Encoder::JumpRelu {
        threshold: thresholds.clone(),
    };
    let x = batch(10, 6, 52);
    let (l0, eps) = (0.3f32, 0.4f32);
    let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
        let Encoder::JumpRelu { threshold } = &s.encoder else {
            unreachable!("a JumpReLU model")
        };
        jumprelu_loss_grad(s, threshold, &x, 10, l0, eps, ws, g, Parallelism::Serial)
    };
    let g = analytic(&sae, &f);
    check(&sae, &g, &|s| via_library(s, &f));
    // The threshold's straight-through pseudo-gradient, written out per sample and latent.
    let xm = crate::Matrix::from_vec(10, 6, x.clone()).unwrap();
    let rec = sae.reconstruct(&xm, Parallelism::Serial);
    let mut want = vec![0.0f64; 9];
    for r in 0..10 {
        for j in 0..9 {
            let pre: f32 = (0..6)
                .map(|i| (x[r * 6 + i] - sae.b_dec[i]) * sae.w_enc.get(j, i))
                .sum::<f32>()
                + sae.b_enc[j];
            let theta = thresholds[j];
            if ((pre - theta) / eps).abs() < 0.5 {
                let dz: f64 = (0..6)
                    .map(|i| {
                        2.0 / 10.0
                            * (rec.get(r, i) - x[r * 6 + i]) as f64
                            * sae.w_dec.get(j, i) as f64
                    })
                    .sum();
                want[j] += (-(theta as f64) / eps as f64 * dz - l0 as f64 / 10.0 / eps as f64)
                    * theta as f64;
            }
        }
    }
    assert!(
        want.iter().filter(|v| **v != 0.0).count() >= 3,
        "too few latents near their threshold"
    );
    for (a, b) in g.get(ParamId::Threshold).unwrap().iter().zip(&want) {
        assert!((*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn matryoshka_gradient_matches_finite_differences() {
    let sae = random_sae(6, 12, Activation::JumpRelu, 61);
    let x = batch(9, 6, 62);
    for widths in [vec![2usize, 5, 12], vec![12], vec![11, 12]] {
        let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
            let (sel, mut one) = ((3, &widths[..]), SingleProcess);
            matryoshka_loss_grad(s, &x, 9, sel, None, &mut one, ws, g, Parallelism::Serial)
        };
        check(&sae, &analytic(&sae, &f), &|s| via_library(s, &f));
    }
}

#[test]
fn matryoshka_auxk_is_batch_topk_auxk_on_the_full_residual() {
    // AuxK's target is the detached full residual (checked by finite differences for TopK above),
    // so what AuxK adds to the gradient is what it adds to BatchTopK's.
    let sae = random_sae(6, 12, Activation::JumpRelu, 65);
    let x = batch(9, 6, 66);
    let dead: Vec<bool> = (0..12).map(|j| j % 3 == 1).collect();
    let aux = AuxK {
        k_aux: 2,
        coef: 0.5,
        dead: &dead,
    };
    let added = |widths: &[usize]| {
        let run = |aux: Option<AuxK<'_>>| {
            let (mut one, mut ws) = (SingleProcess, Workspace::default());
            let mut g = Grads::like(&sae);
            let (sel, par) = ((3, widths), Parallelism::Serial);
            let parts = matryoshka_loss_grad(&sae, &x, 9, sel, aux, &mut one, &mut ws, &mut g, par);
            (parts, g)
        };
        let ((with, gw), (_, g0)) = (run(Some(aux)), run(None));
        assert!(with.sparsity > 0.0, "the aux loss must be active");
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| p - q).collect::<Vec<_>>();
        (
            with.sparsity,
            diff(&gw.w_enc, &g0.w_enc),
            diff(&gw.w_dec, &g0.w_dec),
        )
    };
    let (nested, flat) = (added(&[2, 5, 12]), added(&[12]));
    assert_eq!(nested.0, flat.0);
    for (a, b) in nested
        .1
        .iter()
        .zip(&flat.1)
        .chain(nested.2.iter().zip(&flat.2))
    {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}

#[test]
fn matryoshka_gradients_identical_across_thread_counts() {
    let sae = random_sae(33, 70, Activation::JumpRelu, 63);
    let x = batch(50, 33, 64);
    let dead = every_other_dead(70);
    let f = |ws: &mut Workspace, g: &mut Grads, par: Parallelism| {
        let aux = AuxK {
            k_aux: 5,
            coef: 1.0 / 32.0,
            dead: &dead,
        };
        let sel = (4, &[8usize, 20, 70][..]);
        matryoshka_loss_grad(&sae, &x, 50, sel, Some(aux), &mut SingleProcess, ws, g, par)
    };
    assert_eq!(at_threads(1, &sae, &f), at_threads(2, &sae, &f));
}

/// A Switch SAE with a non-zero router bias and logits spread enough that the probabilities
/// differ (every term of the router's gradient matters).
fn random_switch(d_in: usize, d_sae: usize, k: usize, experts: usize, seed: u64) -> Sae {
    let mut sae = random_sae(d_in, d_sae, Activation::Switch { k, experts }, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    if let Encoder::Switch { router, .. } = &mut sae.encoder {
        router.w.as_mut_slice().iter_mut().for_each(|v| *v *= 3.0);
        router
            .b
            .iter_mut()
            .for_each(|v| *v = 0.3 * Distribution::<f32>::sample(&StandardNormal, &mut rng));
    }
    sae
}

fn switch_step(
    s: &Sae,
    x: &[f32],
    lb_coef: f32,
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    switch_step_aux(s, x, (lb_coef, None), ws, g, par)
}

fn switch_step_aux(
    s: &Sae,
    x: &[f32],
    terms: (f32, Option<AuxK<'_>>),
    ws: &mut Workspace,
    g: &mut Grads,
    par: Parallelism,
) -> LossParts {
    let Encoder::Switch { k, router } = &s.encoder else {
        panic!("a Switch SAE")
    };
    let rows = x.len() / s.d_in();
    switch_loss_grad(
        s,
        router,
        *k,
        x,
        rows,
        terms,
        &mut SingleProcess,
        ws,
        g,
        par,
    )
}

#[test]
fn switch_gradient_matches_finite_differences() {
    for (apply, experts, k, lb) in [(true, 3, 2, 0.5), (false, 2, 3, 0.5), (true, 4, 1, 0.0)] {
        let mut sae = random_switch(5, 12, k, experts, 31);
        sae.apply_b_dec_to_input = apply;
        let x = batch(9, 5, 32);
        let f = |s: &Sae, ws: &mut Workspace, g: &mut Grads| {
            switch_step(s, &x, lb, ws, g, Parallelism::Serial)
        };
        let g = analytic(&sae, &f);
        assert!(
            g.get(ParamId::WRouter).unwrap().iter().any(|v| *v != 0.0),
            "the router learns"
        );
        check(&sae, &g, &|s| via_library(s, &f));
    }
}

#[test]
fn switch_auxk_gradient_matches_finite_differences_and_stays_in_the_expert() {
    let (d, n, rows, experts, ka) = (5, 12, 9, 3, 2);
    let l = n / experts;
    let sae = random_switch(d, n, 2, experts, 35);
    let x = batch(rows, d, 36);
    let dead: Vec<bool> = (0..n).map(|j| j % 3 != 0).collect();
    let aux = AuxK {
        k_aux: ka,
        coef: 0.7,
        dead: &dead,
    };
    let run = |s: &Sae, aux: Option<AuxK<'_>>, ws: &mut Workspace, g: &mut Grads| {
        switch_step_aux(s, &x, (0.2, aux), ws, g, Parallelism::Serial)
    };
    let (mut ws, mut g) = (Workspace::default(), Grads::like(&sae));
    let with = run(&sae, Some(aux), &mut ws, &mut g);
    let without = run(
        &sae,
        None,
        &mut Workspace::default(),
        &mut Grads::like(&sae),
    );
    assert!(with.sparsity > without.sparsity, "AuxK adds to the loss");
    // Every AuxK code is a dead latent of its row's expert (the main codes' block).
    for r in 0..rows {
        let block = ws.topk.indices[r * 2] as usize / l;
        for s in r * ka..(r + 1) * ka {
            let j = ws.aux.indices[s] as usize;
            if ws.aux.values[s] > 0.0 {
                assert!(dead[j] && j / l == block, "row {r}: aux latent {j}");
            }
        }
    }
    // AuxK's target, the residual, is detached: its gradient (with minus without) is checked
    // against a naive AuxK within each row's expert whose target is the base model's residual.
    let with_aux = analytic(&sae, &|s, ws, g| run(s, Some(aux), ws, g));
    let base = analytic(&sae, &|s, ws, g| run(s, None, ws, g));
    let mut aux_grad = Grads::like(&sae);
    for (id, t) in aux_grad.named_mut() {
        let (a, b) = (with_aux.get(id).unwrap(), base.get(id).unwrap());
        t.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(v, (p, q))| *v = p - q);
    }
    let xm = crate::Matrix::from_vec(rows, d, x.clone()).unwrap();
    let rec = sae.reconstruct(&xm, Parallelism::Serial);
    let residual: Vec<f32> = x.iter().zip(rec.as_slice()).map(|(a, b)| a - b).collect();
    let scale = (dead.iter().filter(|v| **v).count() as f64 / ka as f64).min(1.0);
    let naive_aux = |s: &Sae| {
        let Encoder::Switch { router, .. } = &s.encoder else {
            panic!("switch")
        };
        let (mut sig, mut loss) = (Vec::new(), 0.0f64);
        for r in 0..rows {
            let xr = &x[r * d..(r + 1) * d];
            let logit = |e: usize| -> f32 {
                (0..d)
                    .map(|i| router.w.get(e, i) * (xr[i] - router.b[i]))
                    .sum()
            };
            let e = (0..experts).fold(0, |best, e| if logit(e) > logit(best) { e } else { best });
            let mut pre: Vec<(f32, usize)> = (e * l..(e + 1) * l)
                .filter(|j| dead[*j])
                .map(|j| {
                    let v: f32 = (0..d)
                        .map(|i| (xr[i] - s.b_dec[i]) * s.w_enc.get(j, i))
                        .sum();
                    (v + s.b_enc[j], j)
                })
                .collect();
            pre.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut rec = vec![0.0f32; d];
            for &(v, j) in pre.iter().take(ka) {
                sig.push(j as u32 * 2 + (v > 0.0) as u32);
                (0..d).for_each(|i| rec[i] += v.max(0.0) * s.w_dec.get(j, i));
            }
            let res = &residual[r * d..(r + 1) * d];
            loss += rec
                .iter()
                .zip(res)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum::<f64>();
        }
        (0.7 * scale * loss / rows as f64, sig)
    };
    check(&sae, &aux_grad, &naive_aux);
}

#[test]
fn a_switch_sae_routes_every_sample_to_one_expert_and_balances_a_fair_router_at_one() {
    let sae = random_switch(6, 24, 3, 4, 40);
    let x = batch(50, 6, 41);
    let (mut ws, mut g) = (Workspace::default(), Grads::like(&sae));
    let parts = switch_step(&sae, &x, 1.0, &mut ws, &mut g, Parallelism::Serial);
    // Each sample's codes lie in one block of 6 latents.
    for (r, idx) in ws.topk.indices.chunks(3).enumerate() {
        let block = idx[0] / 6;
        assert!(idx.iter().all(|j| j / 6 == block), "row {r}: {idx:?}");
    }
    // The balance term is at least s (E sum f P >= 1 only at a uniform router; here it is
    // finite and positive) and reported as the sparsity part.
    let s: f64 = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 50.0;
    assert!(
        parts.sparsity > 0.0 && parts.sparsity < 4.0 * s,
        "{parts:?}"
    );
    assert!((parts.loss - parts.recon - parts.sparsity).abs() < 1e-9);
    // A router with zero weights and bias is uniform: E sum_e f_e P_e = sum_e f_e = 1.
    let mut fair = sae.clone();
    if let Encoder::Switch { router, .. } = &mut fair.encoder {
        router.w.as_mut_slice().fill(0.0);
    }
    let parts = switch_step(&fair, &x, 1.0, &mut ws, &mut g, Parallelism::Serial);
    assert!(
        (parts.sparsity - s).abs() < 1e-6 * s,
        "{} vs {s}",
        parts.sparsity
    );
}

#[test]
fn a_switch_sae_with_one_expert_is_a_topk_sae() {
    let switch = random_switch(7, 20, 4, 1, 50);
    let mut topk = switch.clone();
    topk.encoder = Encoder::TopK { k: 4 };
    let x = batch(11, 7, 51);
    let par = Parallelism::Serial;
    let (mut ws, mut g) = (Workspace::default(), Grads::like(&switch));
    let parts = switch_step(&switch, &x, 0.0, &mut ws, &mut g, par);
    let (mut tws, mut tg) = (Workspace::default(), Grads::like(&topk));
    let want = topk_loss_grad(&topk, &x, 11, 4, None, &mut tws, &mut tg, par);
    assert_eq!(ws.topk.indices, tws.topk.indices);
    let close = |a: &[f32], b: &[f32], what: &str| {
        for (i, (u, v)) in a.iter().zip(b).enumerate() {
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                "{what}[{i}]: {u} vs {v}"
            );
        }
    };
    close(&ws.topk.values, &tws.topk.values, "codes");
    assert!((parts.recon - want.recon).abs() <= 1e-6 * want.recon);
    close(&g.w_enc, &tg.w_enc, "w_enc");
    close(&g.w_dec, &tg.w_dec, "w_dec");
    close(&g.b_enc, &tg.b_enc, "b_enc");
    close(&g.b_dec, &tg.b_dec, "b_dec");
    // One expert: the softmax is constant, the router gets no gradient.
    assert!(g.get(ParamId::WRouter).unwrap().iter().all(|v| *v == 0.0));
}

#[test]
fn a_switch_step_is_identical_at_any_thread_count() {
    let sae = random_switch(16, 64, 4, 8, 60);
    let x = batch(300, 16, 61);
    let run = |threads: usize| {
        let par = Parallelism::threads(threads);
        let (mut ws, mut g) = (Workspace::default(), Grads::like(&sae));
        let parts = par.install(|| switch_step(&sae, &x, 0.3, &mut ws, &mut g, par));
        (parts.loss.to_bits(), ws.topk.indices.clone(), g)
    };
    let one = run(1);
    for t in [2, 3] {
        assert!(run(t) == one, "{t} threads");
    }
}
