//! The network, its forward pass and its hand-written backward pass (math in the module above).

use crate::linalg::{matmul, MatRef};
use crate::{Error, Matrix, Parallelism, Result};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Hidden-layer nonlinearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    /// `tanh`.
    Tanh,
    /// `max(0, x)`.
    Relu,
}

impl Act {
    fn apply(self, v: f32) -> f32 {
        match self {
            Act::Tanh => v.tanh(),
            Act::Relu => v.max(0.0),
        }
    }

    /// The derivative at pre-activation `z`, given the output `a = act(z)`.
    fn derivative(self, a: f32) -> f32 {
        match self {
            Act::Tanh => 1.0 - a * a,
            Act::Relu => (a > 0.0) as u8 as f32,
        }
    }
}

/// What a classifier looks like: input width, hidden widths, representation width `M`, classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierShape {
    /// Input width.
    pub d_in: usize,
    /// Widths of the hidden layers before the representation.
    pub hidden: Vec<usize>,
    /// Width `M` of the representation `h`.
    pub features: usize,
    /// Number of classes `C`.
    pub classes: usize,
    /// Hidden nonlinearity.
    pub act: Act,
    /// Unit features and class vectors with a learned temperature (the theorem's setting).
    pub normalized: bool,
}

impl ClassifierShape {
    /// Refuses widths of 0 and fewer than two classes, naming the field.
    pub fn check(&self) -> Result<()> {
        let widths = std::iter::once(("d_in", self.d_in))
            .chain(self.hidden.iter().map(|&w| ("hidden", w)))
            .chain([("features", self.features)]);
        for (name, w) in widths {
            if w == 0 {
                return Err(Error::param(name, "must be at least 1"));
            }
        }
        if self.classes < 2 {
            return Err(Error::param(
                "classes",
                format!("{} (a classifier needs at least 2)", self.classes),
            ));
        }
        Ok(())
    }
}

/// One dense layer `a W^T + b`, `W` of shape `[out, in]`.
#[derive(Clone, Debug, PartialEq)]
struct Dense {
    w: Matrix,
    b: Vec<f32>,
}

/// The classifier's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Classifier {
    shape: ClassifierShape,
    /// Hidden layers, then the representation layer.
    layers: Vec<Dense>,
    /// Class vectors `[C, M]`.
    head: Matrix,
    /// Class biases of the plain head (`logit_c = <h, v_c> + b_c`; unused, and kept at 0, by
    /// the normalised head).
    head_bias: Vec<f32>,
    /// Log temperature of the normalised head.
    log_temp: f32,
}

/// The activations of a forward pass, kept for the backward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    /// Outputs of the hidden layers (`a_1 .. a_{L-1}`).
    hidden: Vec<Matrix>,
    /// The representation `h` (unnormalised).
    pub h: Matrix,
    /// The logits `[rows, C]`.
    pub logits: Matrix,
}

impl Classifier {
    /// Random initialisation (weights `N(0, 1/fan_in)`, biases 0, temperature 1 ... `e^t = 10`).
    pub fn init<R: Rng>(shape: ClassifierShape, rng: &mut R) -> Result<Self> {
        shape.check()?;
        let widths: Vec<usize> = std::iter::once(shape.d_in)
            .chain(shape.hidden.iter().copied())
            .chain([shape.features])
            .collect();
        let mut normal = |rows: usize, cols: usize| {
            let s = 1.0 / (cols as f32).sqrt();
            Matrix::from_fn(rows, cols, |_, _| {
                s * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng)
            })
        };
        let layers = widths
            .windows(2)
            .map(|w| Dense {
                w: normal(w[1], w[0]),
                b: vec![0.0; w[1]],
            })
            .collect();
        let head = normal(shape.classes, shape.features);
        Ok(Classifier {
            head_bias: vec![0.0; shape.classes],
            shape,
            layers,
            head,
            log_temp: 10f32.ln(),
        })
    }

    /// The shape it was made with.
    pub fn shape(&self) -> &ClassifierShape {
        &self.shape
    }

    /// Sets the normalised head's temperature `e^t` (its learning starts there); refuses a
    /// temperature that is not positive and finite.
    pub fn set_temperature(&mut self, temperature: f32) -> Result<()> {
        if !(temperature > 0.0 && temperature.is_finite()) {
            return Err(Error::param(
                "temperature",
                format!("{temperature} (must be positive and finite)"),
            ));
        }
        self.log_temp = temperature.ln();
        Ok(())
    }

    /// The normalised head's temperature `e^t`.
    pub fn temperature(&self) -> f32 {
        self.log_temp.exp()
    }

    /// Every parameter tensor, flattened, in one fixed order (layers' `W` and `b`, head, class
    /// biases, `t`).
    pub fn params(&self) -> Vec<&[f32]> {
        let mut v: Vec<&[f32]> = Vec::new();
        for l in &self.layers {
            v.push(l.w.as_slice());
            v.push(&l.b);
        }
        v.push(self.head.as_slice());
        v.push(&self.head_bias);
        v.push(std::slice::from_ref(&self.log_temp));
        v
    }

    /// [`Self::params`], mutable.
    pub fn params_mut(&mut self) -> Vec<&mut [f32]> {
        let mut v: Vec<&mut [f32]> = Vec::new();
        for l in &mut self.layers {
            v.push(l.w.as_mut_slice());
            v.push(&mut l.b);
        }
        v.push(self.head.as_mut_slice());
        v.push(&mut self.head_bias);
        v.push(std::slice::from_mut(&mut self.log_temp));
        v
    }

    /// The forward pass on `x` (`[rows, d_in]`).
    pub fn forward(&self, x: &Matrix, par: Parallelism) -> Forward {
        let (hidden, h) = self.representation(x, par);
        let logits = self.logits(&h, par);
        Forward { hidden, h, logits }
    }

    /// The hidden layers' outputs and `h`, each layer reading the one before in place (no copy
    /// of the batch or of an activation).
    fn representation(&self, x: &Matrix, par: Parallelism) -> (Vec<Matrix>, Matrix) {
        let (last, inner) = self
            .layers
            .split_last()
            .expect("init makes at least one layer");
        let mut hidden: Vec<Matrix> = Vec::with_capacity(inner.len());
        for l in inner {
            let mut z = dense(hidden.last().unwrap_or(x), l, par);
            z.as_mut_slice()
                .iter_mut()
                .for_each(|v| *v = self.shape.act.apply(*v));
            hidden.push(z);
        }
        let h = dense(hidden.last().unwrap_or(x), last, par);
        (hidden, h)
    }

    /// The representation `h` the experiments read (normalised when `unit`); no logits.
    pub fn features(&self, x: &Matrix, unit: bool, par: Parallelism) -> Matrix {
        let mut h = self.representation(x, par).1;
        if unit {
            unit_rows(&mut h);
        }
        h
    }

    fn logits(&self, h: &Matrix, par: Parallelism) -> Matrix {
        let mut out = Matrix::zeros(h.rows(), self.shape.classes);
        if self.shape.normalized {
            let (mut f, mut u) = (h.clone(), self.head.clone());
            unit_rows(&mut f);
            unit_rows(&mut u);
            matmul(out.as_mut_slice(), f.view(), u.view().t(), 0.0, par);
            let s = self.log_temp.exp();
            out.as_mut_slice().iter_mut().for_each(|v| *v *= s);
        } else {
            matmul(out.as_mut_slice(), h.view(), self.head.view().t(), 0.0, par);
            let c = self.shape.classes;
            out.as_mut_slice()
                .chunks_mut(c)
                .for_each(|r| r.iter_mut().zip(&self.head_bias).for_each(|(v, b)| *v += b));
        }
        out
    }

    /// The outputs (the plain head's logits) on `x`: what the regression control is fitted by.
    pub fn outputs(&self, x: &Matrix, par: Parallelism) -> Matrix {
        self.forward(x, par).logits
    }

    /// Mean cross-entropy of `x` against `labels` and its gradient for every parameter (in the
    /// order of [`Self::params`]).
    pub fn loss_grad(
        &self,
        x: &Matrix,
        labels: &[usize],
        par: Parallelism,
    ) -> Result<(f64, Vec<Vec<f32>>)> {
        self.check_batch(x, labels.len())?;
        if let Some(c) = labels.iter().find(|&&c| c >= self.shape.classes) {
            return Err(Error::param(
                "labels",
                format!("label {c} for {} classes", self.shape.classes),
            ));
        }
        let fw = self.forward(x, par);
        let (loss, g) = cross_entropy(&fw.logits, labels);
        Ok((loss, self.backward(x, &fw, &g, par)))
    }

    /// Mean squared error of the plain head's outputs against `targets` (`[rows, C]`, the
    /// mean over rows and columns) and its gradient: the non-identifying control objective.
    pub fn regression_loss_grad(
        &self,
        x: &Matrix,
        targets: &Matrix,
        par: Parallelism,
    ) -> Result<(f64, Vec<Vec<f32>>)> {
        self.check_batch(x, targets.rows())?;
        if self.shape.normalized || targets.cols() != self.shape.classes {
            return Err(Error::shape(
                "regression targets",
                format!("[rows, {}] for a plain head", self.shape.classes),
                format!(
                    "{:?} for a {} head",
                    targets.shape(),
                    if self.shape.normalized {
                        "normalised"
                    } else {
                        "plain"
                    }
                ),
            ));
        }
        let fw = self.forward(x, par);
        let scale = 1.0 / targets.as_slice().len() as f64;
        let mut loss = 0.0f64;
        let mut g = fw.logits.clone();
        for (o, t) in g.as_mut_slice().iter_mut().zip(targets.as_slice()) {
            let d = (*o - t) as f64;
            loss += d * d * scale;
            *o = (2.0 * d * scale) as f32;
        }
        Ok((loss, self.backward(x, &fw, &g, par)))
    }

    /// Every parameter's gradient from `g = d loss / d logits`.
    fn backward(&self, x: &Matrix, fw: &Forward, g: &Matrix, par: Parallelism) -> Vec<Vec<f32>> {
        let (dh, dhead, dt) = self.head_backward(fw, g, par);
        let mut grads = self.layers_backward(x, fw, dh, par);
        grads.push(dhead.into_vec());
        let mut dbias = vec![0.0f32; self.shape.classes];
        if !self.shape.normalized {
            for r in 0..g.rows() {
                dbias.iter_mut().zip(g.row(r)).for_each(|(a, v)| *a += v);
            }
        }
        grads.push(dbias);
        grads.push(vec![dt]);
        grads
    }

    fn check_batch(&self, x: &Matrix, targets: usize) -> Result<()> {
        if x.cols() != self.shape.d_in || x.rows() != targets || x.rows() == 0 {
            return Err(Error::shape(
                "classifier batch",
                format!("[rows >= 1, {}] with one target per row", self.shape.d_in),
                format!("{:?} with {} targets", x.shape(), targets),
            ));
        }
        Ok(())
    }

    /// `(dh, dhead, dt)` from `g = d loss / d logits`.
    fn head_backward(&self, fw: &Forward, g: &Matrix, par: Parallelism) -> (Matrix, Matrix, f32) {
        let (rows, m) = fw.h.shape();
        let c = self.shape.classes;
        let mut dh = Matrix::zeros(rows, m);
        let mut dhead = Matrix::zeros(c, m);
        if !self.shape.normalized {
            matmul(dh.as_mut_slice(), g.view(), self.head.view(), 0.0, par);
            matmul(dhead.as_mut_slice(), g.view().t(), fw.h.view(), 0.0, par);
            return (dh, dhead, 0.0);
        }
        let s = self.log_temp.exp();
        let dt: f64 = g
            .as_slice()
            .iter()
            .zip(fw.logits.as_slice())
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        let (mut f, mut u) = (fw.h.clone(), self.head.clone());
        let (hn, vn) = (unit_rows(&mut f), unit_rows(&mut u));
        let mut df = Matrix::zeros(rows, m);
        let mut du = Matrix::zeros(c, m);
        matmul(df.as_mut_slice(), g.view(), u.view(), 0.0, par);
        matmul(du.as_mut_slice(), g.view().t(), f.view(), 0.0, par);
        df.as_mut_slice().iter_mut().for_each(|v| *v *= s);
        du.as_mut_slice().iter_mut().for_each(|v| *v *= s);
        unnormalize_grad(&f, &hn, &df, &mut dh);
        unnormalize_grad(&u, &vn, &du, &mut dhead);
        (dh, dhead, dt as f32)
    }

    /// Gradients of every layer's `W` and `b` from `dh`, last layer first pushed in order.
    fn layers_backward(
        &self,
        x: &Matrix,
        fw: &Forward,
        dh: Matrix,
        par: Parallelism,
    ) -> Vec<Vec<f32>> {
        let n = self.layers.len();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); 2 * n];
        let mut dz = dh;
        for i in (0..n).rev() {
            let input = if i == 0 { x } else { &fw.hidden[i - 1] };
            let l = &self.layers[i];
            let mut dw = Matrix::zeros(l.w.rows(), l.w.cols());
            matmul(dw.as_mut_slice(), dz.view().t(), input.view(), 0.0, par);
            let mut db = vec![0.0f32; l.b.len()];
            for r in 0..dz.rows() {
                db.iter_mut().zip(dz.row(r)).for_each(|(a, v)| *a += v);
            }
            if i > 0 {
                let mut da = Matrix::zeros(dz.rows(), l.w.cols());
                matmul(da.as_mut_slice(), dz.view(), l.w.view(), 0.0, par);
                da.as_mut_slice()
                    .iter_mut()
                    .zip(input.as_slice())
                    .for_each(|(d, a)| *d *= self.shape.act.derivative(*a));
                dz = da;
            }
            out[2 * i] = dw.into_vec();
            out[2 * i + 1] = db;
        }
        out
    }
}

fn dense(a: &Matrix, l: &Dense, par: Parallelism) -> Matrix {
    let mut z = Matrix::zeros(a.rows(), l.w.rows());
    matmul(
        z.as_mut_slice(),
        MatRef::new(a.as_slice(), a.rows(), a.cols()),
        l.w.view().t(),
        0.0,
        par,
    );
    let w = l.b.len().max(1);
    z.as_mut_slice()
        .chunks_mut(w)
        .for_each(|r| r.iter_mut().zip(&l.b).for_each(|(v, b)| *v += b));
    z
}

/// Scales each row to unit length (a zero row stays zero) and returns the norms before.
fn unit_rows(m: &mut Matrix) -> Vec<f32> {
    let w = m.cols().max(1);
    m.as_mut_slice()
        .chunks_mut(w)
        .map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            if n > 0.0 {
                r.iter_mut().for_each(|v| *v /= n);
            }
            n
        })
        .collect()
}

/// `dv = (dy - y <y, dy>) / ||v||` row by row, for `y = v / ||v||`.
fn unnormalize_grad(y: &Matrix, norms: &[f32], dy: &Matrix, dv: &mut Matrix) {
    for (r, &n) in norms.iter().enumerate() {
        if n == 0.0 {
            continue;
        }
        let proj: f32 = y.row(r).iter().zip(dy.row(r)).map(|(a, b)| a * b).sum();
        let (yr, dyr) = (y.row(r), dy.row(r));
        for (j, out) in dv.row_mut(r).iter_mut().enumerate() {
            *out = (dyr[j] - yr[j] * proj) / n;
        }
    }
}

/// Mean cross-entropy and `(softmax - onehot) / rows`.
fn cross_entropy(logits: &Matrix, labels: &[usize]) -> (f64, Matrix) {
    let rows = logits.rows();
    let mut g = logits.clone();
    let mut loss = 0.0f64;
    for (r, &y) in labels.iter().enumerate() {
        let row = g.row_mut(r);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|v| ((*v - max) as f64).exp()).sum();
        loss += sum.ln() + max as f64 - row[y] as f64;
        for v in row.iter_mut() {
            *v = (((*v - max) as f64).exp() / sum) as f32 / rows as f32;
        }
        row[y] -= 1.0 / rows as f32;
    }
    (loss / rows as f64, g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn shape(normalized: bool, act: Act) -> ClassifierShape {
        ClassifierShape {
            d_in: 4,
            hidden: vec![6],
            features: 3,
            classes: 5,
            act,
            normalized,
        }
    }

    /// Every parameter's gradient against central differences of the loss, in f64 of f32 sums.
    #[test]
    fn gradients_match_finite_differences() {
        for normalized in [true, false] {
            for act in [Act::Tanh, Act::Relu] {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
                let net = Classifier::init(shape(normalized, act), &mut rng).unwrap();
                let x = Matrix::standard_normal(7, 4, 1);
                let labels = [0, 1, 2, 3, 4, 0, 2];
                let (_, grads) = net.loss_grad(&x, &labels, Parallelism::Serial).unwrap();
                let n_tensors = net.params().len();
                for t in 0..n_tensors {
                    for k in 0..net.params()[t].len() {
                        let eps = 2e-3f32;
                        let at = |d: f32| {
                            let mut p = net.clone();
                            p.params_mut()[t][k] += d;
                            p.loss_grad(&x, &labels, Parallelism::Serial).unwrap().0
                        };
                        let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                        let analytic = grads[t][k] as f64;
                        assert!(
                            (numeric - analytic).abs() < 2e-3 + 1e-2 * numeric.abs(),
                            "normalized {normalized} {act:?} tensor {t} entry {k}: {analytic} vs {numeric}"
                        );
                    }
                }
            }
        }
    }

    /// The regression control's gradient (plain head, class biases included) against central
    /// differences.
    #[test]
    fn regression_gradients_match_finite_differences() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let net = Classifier::init(shape(false, Act::Tanh), &mut rng).unwrap();
        let x = Matrix::standard_normal(6, 4, 2);
        let y = Matrix::standard_normal(6, 5, 3);
        let (_, grads) = net
            .regression_loss_grad(&x, &y, Parallelism::Serial)
            .unwrap();
        for t in 0..net.params().len() {
            for k in 0..net.params()[t].len() {
                let eps = 2e-3f32;
                let at = |d: f32| {
                    let mut p = net.clone();
                    p.params_mut()[t][k] += d;
                    p.regression_loss_grad(&x, &y, Parallelism::Serial)
                        .unwrap()
                        .0
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                let analytic = grads[t][k] as f64;
                assert!(
                    (numeric - analytic).abs() < 2e-3 + 1e-2 * numeric.abs(),
                    "tensor {t} entry {k}: {analytic} vs {numeric}"
                );
            }
        }
        let normalized = Classifier::init(shape(true, Act::Tanh), &mut rng).unwrap();
        assert!(normalized
            .regression_loss_grad(&x, &y, Parallelism::Serial)
            .is_err());
    }

    #[test]
    fn temperatures_that_are_not_positive_are_refused() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut net = Classifier::init(shape(true, Act::Tanh), &mut rng).unwrap();
        for t in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let e = net.set_temperature(t).unwrap_err().to_string();
            assert!(e.contains("temperature"), "{e}");
        }
        net.set_temperature(4.0).unwrap();
        assert!((net.temperature() - 4.0).abs() < 1e-5);
    }

    #[test]
    fn bad_shapes_and_labels_are_refused_by_name() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut s = shape(true, Act::Tanh);
        s.classes = 1;
        assert!(Classifier::init(s.clone(), &mut rng)
            .unwrap_err()
            .to_string()
            .contains("classes"));
        s.classes = 3;
        s.features = 0;
        assert!(Classifier::init(s, &mut rng)
            .unwrap_err()
            .to_string()
            .contains("features"));
        let net = Classifier::init(shape(true, Act::Tanh), &mut rng).unwrap();
        let e = net
            .loss_grad(&Matrix::zeros(2, 4), &[0, 9], Parallelism::Serial)
            .unwrap_err();
        assert!(e.to_string().contains("label 9"), "{e}");
    }
}
