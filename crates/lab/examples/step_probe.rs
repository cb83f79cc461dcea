//! Splits one TopK training step into its phases and times each (steady state, 2 threads).
use rand::SeedableRng;
use sparsecode::sae::{
    topk_loss_grad, Activation, AuxK, EncoderInit, Grads, ParamId, Sae, Workspace,
};
use sparsecode::train::{Adam, Update};
use sparsecode::Parallelism;
use std::time::Instant;

fn main() {
    let (b, m, n, k) = (4096usize, 768usize, 16384usize, 32usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut sae = Sae::init(m, n, Activation::TopK { k }, EncoderInit::Tied, &mut rng);
    let x = sparsecode_lab::bench::random_data(b, m, 1).expect("4096 x 768 floats fit");
    let dead: Vec<bool> = (0..n).map(|j| j % 10 == 0).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let par = Parallelism::Threads(2);
    pool.install(|| {
        let mut ws = Workspace::default();
        let mut g = Grads::like(&sae);
        let mut adam = Adam::for_sae(0.9, 0.999, 1e-8, &sae);
        for it in 0..4 {
            let t = Instant::now();
            let aux = AuxK {
                k_aux: 256,
                coef: 1.0 / 32.0,
                dead: &dead,
            };
            let aux = if std::env::args().nth(1).is_some() {
                Some(aux)
            } else {
                None
            };
            topk_loss_grad(&sae, x.as_slice(), b, k, aux, &mut ws, &mut g, par);
            let t1 = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let weights = |id| match id {
                ParamId::WEnc | ParamId::WDec => Update::Plain,
                _ => Update::Skip,
            };
            adam.step(&mut sae, &g, 1e-4, &weights);
            let t2 = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            sparsecode::linalg::normalize_rows(sae.w_dec.as_mut_slice(), m);
            let t3 = t.elapsed().as_secs_f64() * 1e3;
            println!("iter {it}: loss+grad {t1:.1} ms, adam {t2:.1} ms, normalize {t3:.1} ms");
            println!("  certified selection so far: {:?}", ws.certified_stats());
        }
    });
}
