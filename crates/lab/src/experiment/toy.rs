//! Toy Models of Superposition (REFERENCE E8, Elhage et al. 2022): `n` sparse features
//! (`x_i = 0` with probability `S`, else `U[0, 1]`) squeezed into `m < n` dimensions by
//! `h = W x` and read back by `x' = ReLU(W^T h + b)`, trained on the importance-weighted squared
//! error. As `S` grows the model packs more features than dimensions (superposition); then an SAE
//! trained on `h` is asked to find the model's feature directions `W_i` again.

use super::plot::{HeatMap, LinePlot, Series};
use super::{require_grid, Report, Table};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sparsecode::eval::{code_mcc, dictionary_metrics, HUNGARIAN_MAX};
use sparsecode::linalg::{matmul, normalize_rows, MatRef};
use sparsecode::sae::ParamId;
use sparsecode::train::{train, Adam, ArchConfig, NoObserver, TrainConfig};
use sparsecode::{Error, Matrix, Parallelism, Result};

/// The toy model: `W [m, n]` (column `i` is feature `i`'s direction) and the bias `b [n]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ToyModel {
    /// `[m, n]`.
    pub w: Matrix,
    /// `[n]`.
    pub b: Vec<f32>,
}

/// Draws `rows` samples of `n` features, each zero with probability `sparsity`, else `U[0, 1]`.
pub fn toy_batch(rows: usize, n: usize, sparsity: f64, rng: &mut ChaCha8Rng) -> Matrix {
    Matrix::from_fn(rows, n, |_, _| {
        if rng.random_bool(sparsity) {
            0.0
        } else {
            rng.random::<f32>()
        }
    })
}

impl ToyModel {
    /// `W ~ N(0, 1/n)`-ish (Xavier-normal scale), `b = 0`.
    pub fn init(n: usize, m: usize, rng: &mut ChaCha8Rng) -> Self {
        use rand_distr::{Distribution, StandardNormal};
        let scale = (2.0 / (n + m) as f32).sqrt();
        ToyModel {
            w: Matrix::from_fn(m, n, |_, _| {
                let v: f32 = StandardNormal.sample(rng);
                scale * v
            }),
            b: vec![0.0; n],
        }
    }

    /// Hidden activations `h = x W^T` (`[rows, m]`).
    pub fn hidden(&self, x: &Matrix) -> Matrix {
        let mut h = Matrix::zeros(x.rows(), self.w.rows());
        matmul(
            h.as_mut_slice(),
            x.view(),
            self.w.view().t(),
            0.0,
            Parallelism::Serial,
        );
        h
    }

    /// Loss `1/B sum_b sum_i I_i (x_bi - x'_bi)^2` and its gradients `(dW, db)`.
    pub fn loss_grad(&self, x: &Matrix, importance: &[f32]) -> (f64, Vec<f32>, Vec<f32>) {
        let (bsz, n) = x.shape();
        let m = self.w.rows();
        let h = self.hidden(x);
        let mut out = Matrix::zeros(bsz, n);
        matmul(
            out.as_mut_slice(),
            h.view(),
            self.w.view(),
            0.0,
            Parallelism::Serial,
        );
        let mut loss = 0.0f64;
        let mut dout = vec![0.0f32; bsz * n];
        let inv_b = 1.0 / bsz as f32;
        for r in 0..bsz {
            for i in 0..n {
                let pre = out.get(r, i) + self.b[i];
                let e = x.get(r, i) - pre.max(0.0);
                loss += (importance[i] * e * e) as f64;
                if pre > 0.0 {
                    dout[r * n + i] = -2.0 * inv_b * importance[i] * e;
                }
            }
        }
        let dout_v = dout;
        let dout = MatRef::new(&dout_v, bsz, n);
        // out = h W: dW = h^T dout; h = x W^T: dh = dout W^T, dW += dh^T x.
        let mut dw = vec![0.0f32; m * n];
        matmul(&mut dw, h.view().t(), dout, 0.0, Parallelism::Serial);
        let mut dh = vec![0.0f32; bsz * m];
        matmul(&mut dh, dout, self.w.view().t(), 0.0, Parallelism::Serial);
        matmul(
            &mut dw,
            MatRef::new(&dh, bsz, m).t(),
            x.view(),
            1.0,
            Parallelism::Serial,
        );
        let mut db = vec![0.0f32; n];
        for r in 0..bsz {
            for i in 0..n {
                db[i] += dout_v[r * n + i];
            }
        }
        (loss / bsz as f64, dw, db)
    }

    /// Norm of each feature's direction `||W_i||`.
    pub fn feature_norms(&self) -> Vec<f64> {
        let (m, n) = self.w.shape();
        (0..n)
            .map(|i| {
                (0..m)
                    .map(|r| (self.w.get(r, i) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect()
    }

    /// `W^T W` (`[n, n]`): how features interfere.
    pub fn gram(&self) -> Matrix {
        let n = self.w.cols();
        let mut g = Matrix::zeros(n, n);
        matmul(
            g.as_mut_slice(),
            self.w.view().t(),
            self.w.view(),
            0.0,
            Parallelism::Serial,
        );
        g
    }

    /// Per-feature dimensionality `D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2` (0 for a feature
    /// the model ignores).
    pub fn feature_dimensionality(&self) -> Vec<f64> {
        let g = self.gram();
        let n = g.rows();
        (0..n)
            .map(|i| {
                let nn = g.get(i, i) as f64;
                if nn < 1e-12 {
                    return 0.0;
                }
                let den: f64 = (0..n).map(|j| (g.get(i, j) as f64).powi(2) / nn).sum();
                nn / den
            })
            .collect()
    }

    /// Dimensions per feature `D* = m / ||W||_F^2`.
    pub fn dims_per_feature(&self) -> f64 {
        let f: f64 = self.w.as_slice().iter().map(|v| (*v as f64).powi(2)).sum();
        self.w.rows() as f64 / f.max(1e-12)
    }
}

/// Parameters of the toy-superposition experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToyParams {
    /// `(n features, m dimensions)` models to train.
    pub shapes: Vec<(usize, usize)>,
    /// Feature sparsities `S` (probability that a feature is zero), each in [0, 1).
    pub sparsities: Vec<f64>,
    /// Importance of feature `i` is `importance_decay^i`.
    pub importance_decay: f32,
    /// Adam steps of the toy model (batch 1024, lr 1e-3).
    pub steps: u64,
    /// Steps of the SAE trained on the hidden layer.
    pub sae_steps: u64,
    /// Seed.
    pub seed: u64,
}

impl ToyParams {
    /// REFERENCE E8: 10k steps, sparsities from dense to 99.7% zero.
    pub fn full() -> Self {
        ToyParams {
            shapes: vec![(5, 2), (20, 5)],
            sparsities: vec![0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99, 0.997],
            importance_decay: 0.9,
            steps: 10_000,
            sae_steps: 5_000,
            seed: 0,
        }
    }

    /// Fewer sparsities and steps.
    pub fn quick() -> Self {
        ToyParams {
            sparsities: vec![0.0, 0.7, 0.9, 0.97],
            steps: 4_000,
            sae_steps: 2_000,
            ..ToyParams::full()
        }
    }

    fn validate(&self) -> Result<()> {
        require_grid("shapes", &self.shapes)?;
        require_grid("sparsities", &self.sparsities)?;
        sparsecode::error::require_positive_count("steps", self.steps as usize)?;
        if let Some(&(n, m)) = self.shapes.iter().find(|(n, m)| *m == 0 || *m >= *n) {
            return Err(Error::param(
                "shapes",
                format!("n = {n} features in m = {m} dimensions: need 1 <= m < n"),
            ));
        }
        if let Some(s) = self.sparsities.iter().find(|s| !(**s >= 0.0 && **s < 1.0)) {
            return Err(Error::param(
                "sparsities",
                format!("S = {s} must be in [0, 1) (the probability that a feature is zero)"),
            ));
        }
        if !(self.importance_decay > 0.0 && self.importance_decay <= 1.0) {
            return Err(Error::param("importance_decay", "must be in (0, 1]"));
        }
        Ok(())
    }
}

/// A feature counts as represented when its direction has at least this norm.
pub const REPRESENTED: f64 = 0.5;

/// Trains one toy model.
pub fn train_toy(n: usize, m: usize, sparsity: f64, p: &ToyParams, seed: u64) -> ToyModel {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = ToyModel::init(n, m, &mut rng);
    let importance: Vec<f32> = (0..n).map(|i| p.importance_decay.powi(i as i32)).collect();
    // The optimiser keeps W's moments under the encoder's name and b's under its bias's.
    let mut adam = Adam::new(0.9, 0.999, 1e-8);
    for _ in 0..p.steps {
        let x = toy_batch(1024, n, sparsity, &mut rng);
        let (_, dw, db) = model.loss_grad(&x, &importance);
        adam.begin_step();
        adam.update_tensor(ParamId::WEnc, model.w.as_mut_slice(), &dw, 1e-3);
        adam.update_tensor(ParamId::BEnc, &mut model.b, &db, 1e-3);
    }
    model
}

/// One trained toy model and what is measured on it.
struct ToyRun {
    n: usize,
    m: usize,
    sparsity: f64,
    model: ToyModel,
    loss: f64,
    norms: Vec<f64>,
    dims: Vec<f64>,
    represented: usize,
    /// m / ||W||_F^2.
    dstar: f64,
    /// D_i of the represented features, largest first.
    rep_dims: Vec<f64>,
}

/// Trains the toy model of one (shape, sparsity) cell and measures it on fresh samples.
fn toy_run(p: &ToyParams, (n, m): (usize, usize), sparsity: f64, seed: u64) -> ToyRun {
    let model = train_toy(n, m, sparsity, p, seed);
    let importance: Vec<f32> = (0..n).map(|i| p.importance_decay.powi(i as i32)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xE7A1);
    let batch = toy_batch(8192, n, sparsity, &mut rng);
    let (loss, _, _) = model.loss_grad(&batch, &importance);
    let norms = model.feature_norms();
    let dims = model.feature_dimensionality();
    let mut rep_dims: Vec<f64> = (0..n)
        .filter(|&i| norms[i] > REPRESENTED)
        .map(|i| dims[i])
        .collect();
    rep_dims.sort_by(|a, b| b.total_cmp(a));
    ToyRun {
        n,
        m,
        sparsity,
        loss,
        represented: rep_dims.len(),
        dstar: model.dims_per_feature(),
        model,
        norms,
        dims,
        rep_dims,
    }
}

impl ToyRun {
    fn row(&self) -> Vec<String> {
        let in_superposition = if self.represented > self.m {
            "yes"
        } else {
            "no"
        };
        let rep_dims: Vec<String> = self.rep_dims.iter().map(|d| format!("{d:.2}")).collect();
        vec![
            self.n.to_string(),
            self.m.to_string(),
            format!("{}", self.sparsity),
            self.represented.to_string(),
            in_superposition.into(),
            format!("{:.3}", self.dstar),
            rep_dims.join(" "),
            format!("{:.4}", self.loss),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "n": self.n, "m": self.m, "sparsity": self.sparsity, "represented": self.represented,
            "feature_norms": self.norms, "feature_dimensionality": self.dims,
            "dims_per_feature": self.dstar, "loss": self.loss,
            "w": self.model.w.as_slice(), "b": self.model.b,
        })
    }

    /// W^T W as a diverging heat map.
    fn gram_plot(&self) -> (String, String) {
        let (n, m, s) = (self.n, self.m, self.sparsity);
        let g = self.model.gram();
        let map = HeatMap {
            title: format!(
                "W^T W, n = {n}, m = {m}, S = {s} ({} features represented)",
                self.represented
            ),
            x_label: "feature j".into(),
            y_label: "feature i".into(),
            row_labels: (0..n).map(|i| i.to_string()).collect(),
            col_labels: (0..n).map(|i| i.to_string()).collect(),
            values: (0..n)
                .map(|i| (0..n).map(|j| g.get(i, j) as f64).collect())
                .collect(),
            range: (-1.0, 1.0),
            diverging: true,
            annotate: n <= 8,
        };
        (format!("toy-n{n}-m{m}-S{s}-wtw.svg"), map.to_svg())
    }
}

/// D_i of the represented features and D* against 1 / (1 - S), over the sparsities of a shape.
fn dimensionality_plot(runs: &[ToyRun]) -> Option<(String, String)> {
    let (n, m) = (runs.first()?.n, runs.first()?.m);
    let inv = |r: &ToyRun| 1.0 / (1.0 - r.sparsity);
    let dims_points = runs
        .iter()
        .flat_map(|r| r.rep_dims.iter().map(move |d| (inv(r), *d)))
        .collect();
    let dstar_points = runs.iter().map(|r| (inv(r), r.dstar)).collect();
    let plot = LinePlot {
        title: format!("Feature dimensionality, n = {n}, m = {m}"),
        x_label: "1 / (1 - S)".into(),
        y_label: "D_i (dimensions per feature)".into(),
        series: vec![
            Series::scatter("D_i (represented features)", dims_points),
            Series::line("D* = m / ||W||_F^2", dstar_points),
        ],
        log_x: true,
        y_range: Some((0.0, 1.1)),
        ..LinePlot::default()
    };
    Some((format!("toy-n{n}-m{m}-dimensionality.svg"), plot.to_svg()))
}

fn sae_row(run: &ToyRun, rec: &SaeRecovery) -> Vec<String> {
    vec![
        run.n.to_string(),
        run.m.to_string(),
        format!("{}", run.sparsity),
        rec.directions.to_string(),
        format!("{:.3}", rec.dict_mcc),
        format!("{:.0}%", 100.0 * rec.recovered_090),
        format!("{:.0}%", 100.0 * rec.recovered_099),
        format!("{:.3}", rec.code_mcc),
    ]
}

/// Runs the experiment; `progress` is told the fraction done.
pub fn run(p: &ToyParams, par: Parallelism, progress: &mut dyn FnMut(f64)) -> Result<Report> {
    p.validate()?;
    let mut table = Table::new(
        "Features represented (||W_i|| > 0.5) and dimensions per feature",
        &[
            "n",
            "m",
            "S",
            "represented",
            "in superposition",
            "D* = m/||W||_F^2",
            "D_i of represented features",
            "loss",
        ],
    );
    let mut sae_table = Table::new(
        "SAE on the hidden layer h (TopK, n latents), sparsest setting",
        &[
            "n",
            "m",
            "S",
            "true directions",
            "dict MCC",
            "recovered @0.9",
            "recovered @0.99",
            "code MCC",
        ],
    );
    let mut json_runs = Vec::new();
    let mut plots = Vec::new();
    let total = p.shapes.len() * p.sparsities.len();
    for (si, &shape) in p.shapes.iter().enumerate() {
        let mut runs = Vec::new();
        for (k, &s) in p.sparsities.iter().enumerate() {
            let run = toy_run(p, shape, s, p.seed ^ ((si as u64) << 32 | k as u64));
            table.push(run.row());
            json_runs.push(run.json());
            if shape.0 <= 5 || k + 1 == p.sparsities.len() {
                plots.push(run.gram_plot());
            }
            runs.push(run);
            progress((si * p.sparsities.len() + k + 1) as f64 / total as f64);
        }
        plots.extend(dimensionality_plot(&runs));
        // The SAE on the hidden layer of the sparsest model.
        if let Some(last) = runs.last() {
            let rec = sae_on_hidden(&last.model, last.sparsity, p, par)?;
            sae_table.push(sae_row(last, &rec));
            json_runs
                .push(json!({"n": last.n, "m": last.m, "sparsity": last.sparsity, "sae": rec}));
        }
    }
    Ok(Report {
        name: "toy-superposition".into(),
        summary: format!(
            "Toy Models of Superposition (REFERENCE E8): x_i = 0 with probability S else U[0,1], h = W x, x' = ReLU(W^T h + b), importance {}^i, Adam lr 1e-3, batch 1024, {} steps. A feature is represented when ||W_i|| > {REPRESENTED}; more represented features than dimensions is superposition.",
            p.importance_decay, p.steps
        ),
        tables: vec![table, sae_table],
        notes: vec![
            "Published (n=5, m=2): dense features give 2 orthogonal features, sparse ones all 5 in a pentagon; D_i clusters at 1, 3/4, 2/3, 1/2, 2/5, 3/8.".into(),
            "The SAE is a TopK SAE with n latents and k = max(1, round(n (1 - S))) trained on h of fresh samples; its decoder is matched to the represented feature directions W_i / ||W_i||, and its codes to the true feature values.".into(),
        ],
        json: json!({"params": p, "runs": json_runs}),
        images: Vec::new(),
        plots,
    })
}

/// Recovery of a toy model's features by an SAE on its hidden layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SaeRecovery {
    /// Represented feature directions the SAE was matched against.
    pub directions: usize,
    /// Dictionary MCC (|cosine|, Hungarian).
    pub dict_mcc: f64,
    /// Share of directions matched above cosine 0.9.
    pub recovered_090: f64,
    /// Share above 0.99.
    pub recovered_099: f64,
    /// Code MCC against the represented features' values on held-out samples.
    pub code_mcc: f64,
}

fn sae_on_hidden(model: &ToyModel, s: f64, p: &ToyParams, par: Parallelism) -> Result<SaeRecovery> {
    let (m, n) = model.w.shape();
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed ^ 0x5AE);
    let x_train = toy_batch(32_768, n, s, &mut rng);
    let x_test = toy_batch(8_192, n, s, &mut rng);
    let norms = model.feature_norms();
    let rep: Vec<usize> = (0..n).filter(|&i| norms[i] > REPRESENTED).collect();
    let mut truth = Matrix::from_fn(rep.len(), m, |a, r| model.w.get(r, rep[a]));
    normalize_rows(truth.as_mut_slice(), m);
    let k = ((n as f64 * (1.0 - s)).round() as usize).clamp(1, n);
    let mut tc = TrainConfig::new(
        ArchConfig::TopK {
            k,
            aux_k: m.max(1),
            aux_coef: 1.0 / 32.0,
        },
        n,
        p.sae_steps,
        256,
        3e-3,
        p.seed,
    );
    tc.biases = false;
    tc.lr_decay_steps = p.sae_steps / 5;
    tc.dead_window = 10_000;
    tc.threads = par.count();
    tc.log_every = p.sae_steps.max(1);
    let h = model.hidden(&x_train);
    let sae = train(&tc.check_for(&h)?, &h, None, None, &mut NoObserver)?
        .state
        .sae;
    let dm = dictionary_metrics(&truth, &sae.w_dec, HUNGARIAN_MAX, par)?;
    let codes = sae.encode_dense(&model.hidden(&x_test), par);
    let z_true = x_test.select_columns(&rep);
    Ok(SaeRecovery {
        directions: rep.len(),
        dict_mcc: dm.dict_mcc,
        recovered_090: dm.recovered_090,
        recovered_099: dm.recovered_099,
        code_mcc: code_mcc(&z_true, &codes, HUNGARIAN_MAX, par)?.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toy_gradient_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut model = ToyModel::init(6, 3, &mut rng);
        model.b = vec![0.1, -0.05, 0.2, 0.0, 0.05, -0.1];
        let x = toy_batch(64, 6, 0.5, &mut rng);
        let imp: Vec<f32> = (0..6).map(|i| 0.8f32.powi(i)).collect();
        let (_, dw, db) = model.loss_grad(&x, &imp);
        // Small enough that no ReLU of the 64 samples changes side (1e-3 crosses one kink).
        let h = 1e-4f32;
        let fd = |m: &ToyModel| m.loss_grad(&x, &imp).0;
        for idx in 0..18 {
            let (mut a, mut b) = (model.clone(), model.clone());
            a.w.as_mut_slice()[idx] += h;
            b.w.as_mut_slice()[idx] -= h;
            let num = (fd(&a) - fd(&b)) / (2.0 * h as f64);
            assert!(
                (num - dw[idx] as f64).abs() < 2e-3 * (1.0 + num.abs()),
                "dW[{idx}]: {num} vs {}",
                dw[idx]
            );
        }
        for i in 0..6 {
            let (mut a, mut b) = (model.clone(), model.clone());
            a.b[i] += h;
            b.b[i] -= h;
            let num = (fd(&a) - fd(&b)) / (2.0 * h as f64);
            assert!(
                (num - db[i] as f64).abs() < 2e-3 * (1.0 + num.abs()),
                "db[{i}]: {num} vs {}",
                db[i]
            );
        }
    }

    #[test]
    fn dimensionality_of_known_geometries() {
        // Two orthogonal unit features and one ignored: D = 1, 1, 0; D* = 2 / 2.
        let m = ToyModel {
            w: Matrix::from_vec(2, 3, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).unwrap(),
            b: vec![0.0; 3],
        };
        assert_eq!(m.feature_dimensionality(), vec![1.0, 1.0, 0.0]);
        assert!((m.dims_per_feature() - 1.0).abs() < 1e-12);
        // An antipodal pair shares one dimension: D = 1/2 each.
        let m = ToyModel {
            w: Matrix::from_vec(1, 2, vec![1.0, -1.0]).unwrap(),
            b: vec![0.0; 2],
        };
        assert_eq!(m.feature_dimensionality(), vec![0.5, 0.5]);
    }

    #[test]
    fn bad_shapes_and_sparsities_are_refused() {
        let mut p = ToyParams::quick();
        p.shapes = vec![(3, 3)];
        assert!(run(&p, Parallelism::Serial, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("m < n"));
        let mut p = ToyParams::quick();
        p.sparsities = vec![1.0];
        assert!(run(&p, Parallelism::Serial, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("[0, 1)"));
    }
}
