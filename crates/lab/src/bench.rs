//! Timing harness behind `sparsecode bench`: trains or encodes on random data of a given shape
//! and reports the median step time, throughput and peak memory after a warm-up. Medians, not
//! means: these machines are noisy.

use serde::{Deserialize, Serialize};
use sparsecode::coding::{Basis, Coder};
use sparsecode::linalg::matmul;
use sparsecode::sae::EncoderPrecision;
use sparsecode::train::{
    initial_state_for, train_with, ArchConfig, Control, Observer, StepRecord, TrainConfig,
};
use sparsecode::{Matrix, Parallelism, Result};
use std::time::Instant;

/// Timing of a benchmark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Samples processed per second (median step).
    pub samples_per_s: f64,
    /// Median wall-clock milliseconds of one step (or one encode call).
    pub step_ms_median: f64,
    /// Every timed step, in milliseconds.
    pub step_ms: Vec<f64>,
    /// Peak resident memory of the process in MiB (Linux; 0 elsewhere).
    pub peak_rss_mb: f64,
    /// Training benches: the median over the timed steps of the active latents per sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l0: Option<f64>,
    /// Data-parallel benches: the processes that shared every batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranks: Option<usize>,
    /// Data-parallel benches: bytes one rank sent to the others per step (the payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent_per_step: Option<f64>,
}

/// Median of a non-empty slice (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Peak resident set size of this process in MiB, from `/proc/self/status` (0 when unavailable).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Gaussian data `[rows, dims]` from a seed, its memory admitted first (both are flags).
pub fn random_data(rows: usize, dims: usize, seed: u64) -> Result<Matrix> {
    sparsecode::memory::admit_array("random data [rows, dims]", &[rows, dims], 4)?;
    Ok(Matrix::standard_normal(rows, dims, seed))
}

struct StepTimer {
    last: Instant,
    warmup: u64,
    times: Vec<f64>,
    l0: Vec<f64>,
}

impl Observer for StepTimer {
    fn on_log(&mut self, record: &StepRecord) -> Result<()> {
        if record.step > self.warmup {
            self.l0.push(record.l0);
        }
        Ok(())
    }

    fn on_step(&mut self, step: u64) -> Control {
        let now = Instant::now();
        if step > self.warmup {
            self.times
                .push(now.duration_since(self.last).as_secs_f64() * 1e3);
        }
        self.last = now;
        Control::Continue
    }
}

/// Times `steps` training steps (after `warmup` untimed ones) of `arch` with `latents` latents on
/// Gaussian data of width `dims`, one batch of `batch` rows reused (the data order does not
/// change the cost).
pub fn bench_train(
    arch: ArchConfig,
    dims: usize,
    latents: usize,
    batch: usize,
    steps: u64,
    warmup: u64,
    threads: usize,
    precision: EncoderPrecision,
    firing_rate: Option<f64>,
) -> Result<BenchResult> {
    let mut one = sparsecode::sae::SingleProcess;
    let shape = (dims, latents, batch);
    bench_train_with(
        arch,
        shape,
        (steps, warmup),
        threads,
        precision,
        firing_rate,
        &mut one,
    )
}

/// [`bench_train`] as one process of several (`collective`, e.g. data-parallel ranks that
/// split every batch of `batch` rows); `(dims, latents, batch)`, `(steps, warmup)`.
pub fn bench_train_with(
    arch: ArchConfig,
    (dims, latents, batch): (usize, usize, usize),
    (steps, warmup): (u64, u64),
    threads: usize,
    precision: EncoderPrecision,
    firing_rate: Option<f64>,
    collective: &mut dyn sparsecode::sae::Collective,
) -> Result<BenchResult> {
    let x = random_data(batch, dims, 1)?;
    let mut cfg = TrainConfig::new(arch, latents, steps + warmup, batch, 1e-4, 0);
    cfg.threads = threads;
    cfg.encoder_precision = precision;
    cfg.log_every = 1;
    cfg.b_dec_init = sparsecode::train::BDecInit::Zero;
    let mut timer = StepTimer {
        last: Instant::now(),
        warmup,
        times: Vec::new(),
        l0: Vec::new(),
    };
    let checked = cfg.check_for(&x)?;
    // A chosen L0 from the first step: every latent's firing point moved on the batch.
    let start = match firing_rate {
        Some(rate) => {
            let mut state = initial_state_for(&checked, &x)?;
            state
                .sae
                .set_firing_rate(&x, rate, Parallelism::threads(threads))?;
            Some(state)
        }
        None => None,
    };
    train_with(&checked, &x, None, start, &mut timer, collective)?;
    let med = median(&timer.times);
    Ok(BenchResult {
        samples_per_s: batch as f64 / (med / 1e3),
        step_ms_median: med,
        step_ms: timer.times,
        peak_rss_mb: peak_rss_mb(),
        l0: Some(median(&timer.l0)),
        ranks: None,
        bytes_sent_per_step: None,
    })
}

/// Median milliseconds of the dense f32 encoder product of a training step (`[batch, dims]`
/// times `[dims, latents]` through the same GEMM the library uses) over `repeats` runs after one
/// warm-up: the bound exact f32 arithmetic sets on a TopK step.
pub fn bench_encoder_product(
    dims: usize,
    latents: usize,
    batch: usize,
    repeats: usize,
    threads: usize,
) -> Result<f64> {
    let x = random_data(batch, dims, 1)?;
    let w = random_data(latents, dims, 2)?;
    sparsecode::memory::admit_array("encoder product [batch, latents]", &[batch, latents], 4)?;
    let mut pre = vec![0.0f32; batch * latents];
    let par = Parallelism::threads(threads);
    let mut times = Vec::with_capacity(repeats);
    par.install(|| {
        for i in 0..=repeats {
            let t = Instant::now();
            matmul(&mut pre, x.view(), w.view().t(), 0.0, par);
            if i > 0 {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    });
    Ok(median(&times))
}

/// Times `repeats` encodes (after one warm-up) of `samples` planted `k`-sparse signals with a
/// random unit-norm dictionary of `atoms` x `dims`.
pub fn bench_encode(
    coder: Coder,
    dims: usize,
    atoms: usize,
    samples: usize,
    repeats: usize,
    threads: usize,
) -> Result<BenchResult> {
    let cfg = sparsecode::data::SynthConfig {
        latents: atoms,
        dims,
        support: sparsecode::data::Support::Exact {
            k: (dims / 8).clamp(1, atoms),
        },
        magnitude: sparsecode::data::Magnitude::SignedNormal,
        samples,
        test_samples: 0,
        snr_db: None,
        seed: 2,
        hierarchy: None,
        correlation: None,
    };
    let data = sparsecode::data::generate(&cfg, None)?;
    let par = Parallelism::threads(threads);
    let (y, d) = (&data.train.activations, &data.dictionary);
    let basis = Basis::Dictionary(d);
    let mut times = Vec::with_capacity(repeats);
    par.install(|| -> Result<()> {
        coder.encode(basis, y, par)?;
        for _ in 0..repeats {
            let t = Instant::now();
            coder.encode(basis, y, par)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    })?;
    let med = median(&times);
    Ok(BenchResult {
        samples_per_s: samples as f64 / (med / 1e3),
        step_ms_median: med,
        step_ms: times,
        peak_rss_mb: peak_rss_mb(),
        l0: None,
        ranks: None,
        bytes_sent_per_step: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn tiny_benches_run_and_report() {
        let r = bench_train(
            ArchConfig::TopK {
                k: 4,
                aux_k: 8,
                aux_coef: 1.0 / 32.0,
            },
            16,
            64,
            32,
            3,
            1,
            1,
            EncoderPrecision::Auto,
            None,
        )
        .unwrap();
        assert_eq!(r.step_ms.len(), 3);
        assert!(bench_encoder_product(16, 64, 32, 2, 1).unwrap() > 0.0);
        assert!(r.samples_per_s > 0.0 && r.step_ms_median > 0.0);
        let omp = Coder::Omp(sparsecode::coding::OmpParams {
            k: Some(2),
            tol: None,
        });
        let r = bench_encode(omp, 16, 32, 20, 2, 1).unwrap();
        assert_eq!(r.step_ms.len(), 2);
    }
}
