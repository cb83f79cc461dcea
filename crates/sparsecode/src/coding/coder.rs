//! How codes are produced: the one description that `encode`, the benchmarks and the
//! experiments share. A [`Coder`] says which method and with which parameters; a [`Basis`] says
//! what the codes are computed against (an SAE, or a dictionary).
//!
//! Against an SAE, the classical methods code `x - b_dec` with the SAE's decoder rows as atoms
//! (so that `codes W_dec + b_dec` reconstructs `x`); ITO is FISTA on that problem started from
//! the SAE's own codes.

use super::{fista, ito, omp, FistaParams, OmpParams};
use crate::sae::Sae;
use crate::{Error, Matrix, Parallelism, Result};
use serde::{Deserialize, Serialize};

/// A way of producing codes, with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Coder {
    /// The SAE's own encoder (needs an SAE).
    Sae,
    /// Inference-time optimisation: non-negative FISTA on the SAE's decoder, from its codes.
    Ito(FistaParams),
    /// L1 codes by FISTA (ISTA when `accelerated` is false).
    Fista(FistaParams),
    /// Orthogonal matching pursuit.
    Omp(OmpParams),
}

/// What codes are computed against.
#[derive(Clone, Copy, Debug)]
pub enum Basis<'a> {
    /// An SAE (its encoder, or its decoder as the dictionary).
    Sae(&'a Sae),
    /// A dictionary `[N, d_in]`, atoms as rows.
    Dictionary(&'a Matrix),
}

impl Coder {
    /// The method used when none is named: the SAE's encoder for an SAE, FISTA for a
    /// dictionary.
    pub fn default_name(basis: Basis<'_>) -> &'static str {
        match basis {
            Basis::Sae(_) => "sae",
            Basis::Dictionary(_) => "fista",
        }
    }

    /// The method of `name` (`sae`, `ito`, `fista`, `ista`, `omp`) with these parameters.
    pub fn named(name: &str, fista: FistaParams, omp: OmpParams) -> Result<Coder> {
        Ok(match name {
            "sae" => Coder::Sae,
            "ito" => Coder::Ito(FistaParams {
                nonneg: true,
                accelerated: true,
                ..fista
            }),
            "fista" => Coder::Fista(FistaParams {
                accelerated: true,
                ..fista
            }),
            "ista" => Coder::Fista(FistaParams {
                accelerated: false,
                ..fista
            }),
            "omp" => Coder::Omp(omp),
            other => {
                return Err(Error::param(
                    "method",
                    format!("unknown method '{other}' (expected sae, ito, fista, ista or omp)"),
                ))
            }
        })
    }

    /// The method's name, as [`Coder::named`] takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Coder::Sae => "sae",
            Coder::Ito(_) => "ito",
            Coder::Fista(p) if !p.accelerated => "ista",
            Coder::Fista(_) => "fista",
            Coder::Omp(_) => "omp",
        }
    }

    /// The codes of the rows of `x` (`[samples, d_in]`) against `basis`, on `par`'s threads.
    pub fn encode(&self, basis: Basis<'_>, x: &Matrix, par: Parallelism) -> Result<Matrix> {
        if let Basis::Sae(s) = basis {
            s.check_input(x, "data")?;
        }
        let atoms = match basis {
            Basis::Sae(s) => s.d_sae(),
            Basis::Dictionary(d) => d.rows(),
        };
        // Dense codes, as much again for the solver's own [samples, N] buffers (FISTA's
        // momentum, ITO's gradient step; the SAE's pre-activations) and for the file.
        crate::memory::admit_array(
            "codes [samples, atoms], a solver buffer and the .npy bytes of that size",
            &[x.rows(), atoms, 3],
            4,
        )?;
        match (self, basis) {
            (Coder::Sae, Basis::Sae(s)) => Ok(s.encode_dense(x, par)),
            (Coder::Ito(p), Basis::Sae(s)) => Ok(ito(s, x, p, par)?.codes),
            (Coder::Sae | Coder::Ito(_), Basis::Dictionary(_)) => Err(Error::param(
                "method",
                format!("'{}' needs an SAE, not a dictionary", self.name()),
            )),
            (Coder::Fista(p), _) => {
                let (y, d) = centred(basis, x);
                Ok(fista(&y, d, None, p, par)?.codes)
            }
            (Coder::Omp(p), _) => {
                let (y, d) = centred(basis, x);
                omp(&y, d, p, par)
            }
        }
    }
}

/// The problem the classical methods solve: `x` against a dictionary, or `x - b_dec` against
/// an SAE's decoder.
fn centred<'a>(basis: Basis<'a>, x: &Matrix) -> (Matrix, &'a Matrix) {
    match basis {
        Basis::Sae(s) => {
            let mut y = x.clone();
            y.add_to_rows(&s.b_dec, -1.0);
            (y, &s.w_dec)
        }
        Basis::Dictionary(d) => (x.clone(), d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, SynthConfig};
    use crate::sae::{Activation, EncoderInit};
    use rand::SeedableRng;

    #[test]
    fn every_method_by_name_on_the_basis_it_needs() {
        let data = generate(&SynthConfig::e2(0), None).unwrap();
        let (x, d) = (&data.train.activations, &data.dictionary);
        let f = FistaParams {
            lambda: 0.001,
            nonneg: true,
            ..FistaParams::default()
        };
        let o = OmpParams {
            k: Some(3),
            tol: None,
        };
        let par = Parallelism::Serial;
        let dict = Basis::Dictionary(d);
        for name in ["fista", "ista", "omp"] {
            let coder = Coder::named(name, f, o).unwrap();
            assert_eq!(coder.name(), name);
            let codes = coder.encode(dict, x, par).unwrap();
            let (mcc, _) = crate::eval::code_mcc(&data.train.codes, &codes, 4096, par).unwrap();
            assert!(mcc > 0.8, "{name}: {mcc}");
        }
        assert_eq!(Coder::default_name(dict), "fista");
        let e = Coder::Sae.encode(dict, x, par).unwrap_err().to_string();
        assert!(e.contains("needs an SAE"), "{e}");
        assert!(Coder::named("lasso", f, o)
            .unwrap_err()
            .to_string()
            .contains("lasso"));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let sae = Sae::init(8, 16, Activation::Relu, EncoderInit::Tied, &mut rng);
        let basis = Basis::Sae(&sae);
        assert_eq!(Coder::default_name(basis), "sae");
        assert_eq!(
            Coder::Sae.encode(basis, x, par).unwrap(),
            sae.encode_dense(x, par)
        );
        let ito_codes = Coder::named("ito", f, o)
            .unwrap()
            .encode(basis, x, par)
            .unwrap();
        assert_eq!(ito_codes.shape(), (x.rows(), 16));
        let narrow = Matrix::zeros(3, 5);
        assert!(Coder::Sae.encode(basis, &narrow, par).is_err());
    }
}
