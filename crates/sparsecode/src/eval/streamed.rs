//! Evaluation of data of any length (a `.npy` file or an activation store, any
//! [`RowSource`]): data, codes and true codes are read a chunk of samples at a time and folded into [`ReconStats`] and [`CodeCorrelation`], so that
//! memory is bounded by the matrices being matched (and one chunk), not by the number of
//! samples. This is what `sparsecode eval` runs.

use super::{CodeCorrelation, ReconMetrics, ReconStats};
use crate::data::{rows_of, RowSource};
use crate::io::npy::NpyMap;
use crate::sae::Sae;
use crate::{Error, Matrix, Parallelism, Result};

/// Where the codes being evaluated come from.
pub enum CodeSource<'a> {
    /// Encoded (and reconstructed) by an SAE.
    Sae(&'a Sae),
    /// The SAE's codes refined by inference-time optimisation on its decoder
    /// ([`crate::coding::ito`]), reconstructed by its decoder.
    Ito(&'a Sae, crate::coding::FistaParams),
    /// Read from a `[samples, N]` file, decoded with the `[N, d_in]` dictionary when given.
    File {
        /// The codes.
        codes: &'a NpyMap,
        /// Their dictionary, if any.
        dictionary: Option<&'a Matrix>,
    },
}

/// What [`evaluate_streamed`] measured.
#[derive(Clone, Debug)]
pub struct Streamed {
    /// Reconstruction and sparsity; `mse` and `fvu` mean nothing unless `reconstructed`.
    pub recon: ReconMetrics,
    /// Whether there was a decoder (an SAE, or codes with a dictionary).
    pub reconstructed: bool,
    /// `|Pearson|` of every true latent with every code latent, `[true, codes]`, when true
    /// codes were given.
    pub correlation: Option<Matrix>,
}

/// About this many bytes of chunk buffers per step.
const CHUNK_BYTES: usize = 64 << 20;

/// Streams `data` (`[samples, d_in]`) through `source`, comparing with `truth`
/// (`[samples, n_true]`) when given, and counting absorption into `absorption` when given (it
/// needs `truth`).
pub fn evaluate_streamed(
    data: &dyn RowSource,
    source: &CodeSource,
    truth: Option<&NpyMap>,
    absorption: Option<&mut super::AbsorptionCounter>,
    par: Parallelism,
) -> Result<Streamed> {
    let samples = row_count(data);
    let (stats, corr) = stream(data, source, truth, absorption, 0..samples, par)?;
    Ok(Streamed {
        recon: stats.metrics(),
        reconstructed: reconstructs(source),
        correlation: corr.map(|c| c.abs_correlation()),
    })
}

/// The reconstruction and sparsity sums of the samples `rows` of `data` through `source`: one
/// process's part of an evaluation split across processes, the parts joined by
/// [`ReconStats::merge`].
pub fn reconstruction_of_rows(
    data: &dyn RowSource,
    source: &CodeSource,
    rows: std::ops::Range<usize>,
    par: Parallelism,
) -> Result<ReconStats> {
    let samples = row_count(data);
    if rows.start > rows.end || rows.end > samples {
        return Err(Error::param(
            "rows",
            format!("{rows:?} is not within the {samples} samples"),
        ));
    }
    Ok(stream(data, source, None, None, rows, par)?.0)
}

/// Whether `source` has a decoder (an SAE, or codes with a dictionary).
pub fn reconstructs(source: &CodeSource) -> bool {
    !matches!(
        source,
        CodeSource::File {
            dictionary: None,
            ..
        }
    )
}

/// Streams the samples `rows` of `data` through `source` a chunk at a time.
fn stream(
    data: &dyn RowSource,
    source: &CodeSource,
    truth: Option<&NpyMap>,
    mut absorption: Option<&mut super::AbsorptionCounter>,
    rows: std::ops::Range<usize>,
    par: Parallelism,
) -> Result<(ReconStats, Option<CodeCorrelation>)> {
    let (samples, d_in) = (row_count(data), data.cols());
    let latents = check_source(source, data)?;
    let n_true = match truth {
        Some(t) => same_rows(t, samples)?,
        None => 0,
    };
    let mut stats = ReconStats::new(d_in, latents);
    let mut corr = match truth {
        Some(_) => Some(CodeCorrelation::new(n_true, latents)?),
        None => None,
    };
    let per_row = (latents + n_true + 2 * d_in).max(1) * 4;
    let chunk = (CHUNK_BYTES / per_row).clamp(64, 8192);
    for start in rows.clone().step_by(chunk) {
        let end = (start + chunk).min(rows.end);
        let x = rows_of(data, start as u64..end as u64)?;
        let (codes, x_hat) = codes_of(source, &x, start, end, par)?;
        stats.add(&x, x_hat.as_ref().unwrap_or(&x), &codes);
        if let (Some(acc), Some(t)) = (corr.as_mut(), truth) {
            let t = t.read_rows(start, end)?;
            acc.add(&t, &codes, par)?;
            if let Some(counter) = absorption.as_deref_mut() {
                counter.add(&t, &codes)?;
            }
        }
    }
    Ok((stats, corr))
}

/// The number of code latents, after checking the source against the data's shape.
fn check_source(source: &CodeSource, data: &dyn RowSource) -> Result<usize> {
    let (samples, d_in) = (row_count(data), data.cols());
    match source {
        CodeSource::Sae(sae) | CodeSource::Ito(sae, _) if sae.d_in() != d_in => Err(Error::shape(
            data.describe(),
            format!("{} columns (the SAE's d_in)", sae.d_in()),
            format!("{d_in} columns"),
        )),
        CodeSource::Sae(sae) | CodeSource::Ito(sae, _) => Ok(sae.d_sae()),
        CodeSource::File { codes, dictionary } => {
            let n = same_rows(codes, samples)?;
            if let Some(d) = dictionary {
                if d.shape() != (n, d_in) {
                    return Err(Error::shape(
                        "the dictionary",
                        format!("[{n}, {d_in}] (one atom per code latent, data width)"),
                        format!("{:?}", d.shape()),
                    ));
                }
            }
            Ok(n)
        }
    }
}

/// The rows of `data` as an index (a source of more rows than addressable is cut there: it
/// could not be read anyway).
fn row_count(data: &dyn RowSource) -> usize {
    usize::try_from(data.rows()).unwrap_or(usize::MAX)
}

/// Columns of `m`, which must have `samples` rows.
fn same_rows(m: &NpyMap, samples: usize) -> Result<usize> {
    let (rows, cols) = m.matrix_shape()?;
    if rows != samples {
        return Err(Error::shape(
            m.path().display().to_string(),
            format!("{samples} rows (one per data sample)"),
            format!("{rows} rows"),
        ));
    }
    Ok(cols)
}

/// Dense codes of rows `start..end` and their reconstruction, if there is a decoder.
fn codes_of(
    source: &CodeSource,
    x: &Matrix,
    start: usize,
    end: usize,
    par: Parallelism,
) -> Result<(Matrix, Option<Matrix>)> {
    Ok(match source {
        CodeSource::Sae(sae) => {
            let z = sae.encode_dense(x, par);
            let xh = sae.decode(&z, par);
            (z, Some(xh))
        }
        CodeSource::Ito(sae, p) => {
            let z = crate::coding::ito(sae, x, p, par)?.codes;
            let xh = sae.decode(&z, par);
            (z, Some(xh))
        }
        CodeSource::File { codes, dictionary } => {
            let z = codes.read_rows(start, end)?;
            let xh = dictionary.map(|d| crate::linalg::synthesize(&z, d, None, par));
            (z, xh)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, SynthConfig};
    use crate::eval::{code_mcc, evaluate, mcc_of};
    use crate::sae::{Activation, EncoderInit};
    use rand::SeedableRng;

    #[test]
    fn ito_codes_are_scored_as_the_sae_decodes_them_and_reconstruct_better() {
        let d = generate(
            &SynthConfig {
                latents: 30,
                dims: 10,
                samples: 3000,
                test_samples: 0,
                ..SynthConfig::e2(3)
            },
            None,
        )
        .unwrap();
        let x = &d.train.activations;
        let t = tempfile::tempdir().unwrap();
        let xp = t.path().join("x.npy");
        crate::io::write_matrix(&xp, x).unwrap();
        let xm = NpyMap::open(&xp).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let sae = Sae::init(10, 30, Activation::Relu, EncoderInit::Tied, &mut rng);
        let par = Parallelism::Threads(2);
        let p = crate::coding::FistaParams {
            lambda: 1e-3,
            nonneg: true,
            ..Default::default()
        };
        let ito = evaluate_streamed(&xm, &CodeSource::Ito(&sae, p), None, None, par).unwrap();
        let plain = evaluate_streamed(&xm, &CodeSource::Sae(&sae), None, None, par).unwrap();
        let codes = crate::coding::ito(&sae, x, &p, par).unwrap().codes;
        let want = evaluate(x, &sae.decode(&codes, par), &codes);
        assert!(
            (ito.recon.fvu - want.fvu).abs() < 1e-9,
            "{} vs {}",
            ito.recon.fvu,
            want.fvu
        );
        assert!(
            ito.recon.fvu < plain.recon.fvu,
            "{} vs {}",
            ito.recon.fvu,
            plain.recon.fvu
        );
    }

    #[test]
    fn streamed_evaluation_equals_the_whole_matrix_one() {
        // 20k samples: three chunks of 8192 rows.
        let d = generate(
            &SynthConfig {
                latents: 40,
                dims: 12,
                samples: 20_000,
                test_samples: 0,
                ..SynthConfig::e2(4)
            },
            None,
        )
        .unwrap();
        let (x, z) = (&d.train.activations, &d.train.codes);
        let t = tempfile::tempdir().unwrap();
        let (xp, zp) = (t.path().join("x.npy"), t.path().join("z.npy"));
        crate::io::write_matrix(&xp, x).unwrap();
        crate::io::write_matrix(&zp, z).unwrap();
        let (xm, zm) = (NpyMap::open(&xp).unwrap(), NpyMap::open(&zp).unwrap());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let sae = Sae::init(
            12,
            50,
            Activation::TopK { k: 4 },
            EncoderInit::Tied,
            &mut rng,
        );
        let par = Parallelism::Threads(2);
        let got = evaluate_streamed(&xm, &CodeSource::Sae(&sae), Some(&zm), None, par).unwrap();
        let codes = sae.encode_dense(x, par);
        let want = evaluate(x, &sae.decode(&codes, par), &codes);
        assert_eq!(got.recon.l0, want.l0);
        assert_eq!(got.recon.density, want.density);
        for (a, b) in [(got.recon.mse, want.mse), (got.recon.fvu, want.fvu)] {
            assert!((a - b).abs() < 1e-9 * b.abs(), "{a} vs {b}");
        }
        let (mcc, _) = mcc_of(got.correlation.as_ref().unwrap(), 64);
        let (want_mcc, _) = code_mcc(z, &codes, 64, par).unwrap();
        assert!((mcc - want_mcc).abs() < 1e-6, "{mcc} vs {want_mcc}");
        // Codes from a file with their dictionary give the same reconstruction metrics.
        let cp = t.path().join("codes.npy");
        crate::io::write_matrix(&cp, &codes).unwrap();
        let cm = NpyMap::open(&cp).unwrap();
        let mut dict_sae = sae.clone();
        dict_sae.b_dec.iter_mut().for_each(|b| *b = 0.0);
        let from_file = CodeSource::File {
            codes: &cm,
            dictionary: Some(&dict_sae.w_dec),
        };
        let f = evaluate_streamed(&xm, &from_file, None, None, par).unwrap();
        assert!(f.reconstructed && f.correlation.is_none());
        assert_eq!(f.recon.l0, want.l0);
    }

    #[test]
    fn files_that_disagree_are_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        let (xp, zp) = (t.path().join("x.npy"), t.path().join("short.npy"));
        crate::io::write_matrix(&xp, &Matrix::zeros(10, 3)).unwrap();
        crate::io::write_matrix(&zp, &Matrix::zeros(9, 4)).unwrap();
        let (xm, zm) = (NpyMap::open(&xp).unwrap(), NpyMap::open(&zp).unwrap());
        let src = CodeSource::File {
            codes: &zm,
            dictionary: None,
        };
        let e = evaluate_streamed(&xm, &src, None, None, Parallelism::Serial)
            .unwrap_err()
            .to_string();
        assert!(e.contains("short.npy") && e.contains("10 rows"), "{e}");
    }
}
