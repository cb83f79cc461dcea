//! `cargo bench -p sparsecode`: the kernels beside naive baselines measured in the same run.
//! Shapes are kept moderate so the whole suite takes a few minutes on 2 cores; the full-size
//! comparison against PyTorch lives in `benches/run-comparison.sh` at the workspace root.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use sparsecode::coding::{fista, omp, FistaParams, OmpParams};
use sparsecode::data::{generate, Magnitude, Support, SynthConfig};
use sparsecode::linalg::int16::{self, IntRows};
use sparsecode::linalg::{matmul, topk_row, MatRef};
use sparsecode::sae::{
    relu_loss_grad, topk_loss_grad, Activation, Encoder, EncoderInit, Grads, Sae, Workspace,
};
use sparsecode::Parallelism;
use std::hint::black_box;

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
}

fn bench_gemm(c: &mut Criterion) {
    let (m, k, n) = (1024usize, 768usize, 4096usize);
    let a = sparsecode::Matrix::standard_normal(m, k, 1);
    let b = sparsecode::Matrix::standard_normal(n, k, 2);
    let mut out = vec![0.0f32; m * n];
    let mut g = c.benchmark_group("gemm 1024x768x4096 (x W^T)");
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    for threads in [1, 2] {
        let p = pool(threads);
        g.bench_with_input(
            BenchmarkId::new("gemm crate", threads),
            &threads,
            |bch, &t| {
                p.install(|| {
                    bch.iter(|| {
                        matmul(
                            &mut out,
                            a.view(),
                            MatRef::new(b.as_slice(), n, k).t(),
                            0.0,
                            Parallelism::threads(t),
                        )
                    })
                })
            },
        );
        // The certified TopK encoder's approximation on AVX2: both operands rounded to 16-bit
        // integers (packing included, as a step pays it), the sums exact.
        g.bench_with_input(
            BenchmarkId::new("int16 incl. packing (ours)", threads),
            &threads,
            |bch, _| {
                let (mut xq, mut wq) = (IntRows::default(), IntRows::default());
                p.install(|| {
                    bch.iter(|| {
                        int16::pack_rows(a.as_slice(), k, &mut xq);
                        int16::pack_panels(b.as_slice(), n, k, &mut wq);
                        int16::matmul_int16(&mut out, &xq, &wq)
                    })
                })
            },
        );
    }
    g.finish();
}

fn bench_topk(c: &mut Criterion) {
    let row: Vec<f32> = sparsecode::Matrix::standard_normal(1, 16384, 3).into_vec();
    let mut g = c.benchmark_group("top-32 of 16384");
    let (mut idx, mut val, mut scratch) = (vec![0u32; 32], vec![0f32; 32], Vec::new());
    g.bench_function("threshold heap (ours)", |b| {
        b.iter(|| topk_row(black_box(&row), 32, &mut scratch, &mut idx, &mut val))
    });
    g.bench_function("naive: full sort", |b| {
        b.iter(|| {
            let mut all: Vec<(f32, u32)> = row
                .iter()
                .enumerate()
                .map(|(i, &v)| (v, i as u32))
                .collect();
            all.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
            black_box(&all[..32]);
        })
    });
    g.finish();
}

fn bench_sae_step(c: &mut Criterion) {
    let (m, n, k, b) = (768usize, 4096usize, 32usize, 1024usize);
    let x = sparsecode::Matrix::standard_normal(b, m, 4);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let topk = Sae::init(m, n, Activation::TopK { k }, EncoderInit::Tied, &mut rng);
    let relu = Sae {
        encoder: Encoder::Relu,
        ..topk.clone()
    };
    let p = pool(2);
    let mut g =
        c.benchmark_group("SAE loss+gradient, d_in 768, 4096 latents, batch 1024, 2 threads");
    g.sample_size(10);
    g.throughput(Throughput::Elements(b as u64));
    let (mut ws, mut gr) = (Workspace::default(), Grads::like(&topk));
    g.bench_function("topk k=32 (sparse backward)", |bch| {
        p.install(|| {
            bch.iter(|| {
                topk_loss_grad(
                    &topk,
                    x.as_slice(),
                    b,
                    k,
                    None,
                    &mut ws,
                    &mut gr,
                    Parallelism::Threads(2),
                )
            })
        })
    });
    g.bench_function("relu (dense backward)", |bch| {
        p.install(|| {
            bch.iter(|| {
                relu_loss_grad(
                    &relu,
                    x.as_slice(),
                    b,
                    1e-3,
                    &mut ws,
                    &mut gr,
                    Parallelism::Threads(2),
                )
            })
        })
    });
    g.finish();
}

fn bench_coding(c: &mut Criterion) {
    let cfg = SynthConfig {
        latents: 1024,
        dims: 256,
        support: Support::Exact { k: 10 },
        magnitude: Magnitude::SignedNormal,
        samples: 2048,
        test_samples: 0,
        snr_db: None,
        seed: 5,
        hierarchy: None,
        correlation: None,
    };
    let data = generate(&cfg, None).expect("valid synthetic config");
    let (y, d) = (&data.train.activations, &data.dictionary);
    let p = pool(2);
    let mut g = c.benchmark_group("encode 2048 samples, 1024 x 256 dictionary, 2 threads");
    g.sample_size(10);
    g.bench_function("FISTA 100 iterations", |b| {
        let fp = FistaParams {
            lambda: 0.05,
            nonneg: false,
            max_iter: 100,
            tol: 0.0,
            accelerated: true,
        };
        p.install(|| {
            b.iter(|| fista(y, d, None, &fp, Parallelism::Threads(2)).expect("valid problem"))
        })
    });
    g.bench_function("OMP k=10", |b| {
        p.install(|| {
            b.iter(|| {
                omp(
                    y,
                    d,
                    &OmpParams {
                        k: Some(10),
                        tol: None,
                    },
                    Parallelism::Threads(2),
                )
                .expect("valid problem")
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_gemm,
    bench_topk,
    bench_sae_step,
    bench_coding
);
criterion_main!(benches);
