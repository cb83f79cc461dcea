//! What the GGUF decoder-only language models ([`crate::llama`], [`crate::gemma`]) share: the
//! opened file with its metadata and architecture, weights read with their shapes checked, the
//! checks on a batch of token ids and on a residual, the loop that keeps the residual after
//! chosen blocks, the final norm with the unembedding, and the logit effects of directions.

use crate::error::CandleContext;
use crate::llama::LogitEffects;
use crate::tensor_ops::rms_norm;
use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// A GGUF model file, mapped, with its metadata and tensor table read (the weights are not).
pub struct GgufFile {
    path: PathBuf,
    map: memmap2::Mmap,
    content: Content,
    arch: String,
}

impl GgufFile {
    /// Maps and reads `path`; errors name the file (missing, not a file, not GGUF).
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(path, "no such file"));
        }
        if !path.is_file() {
            return Err(Error::model(
                path,
                "is not a file, expected a GGUF model file",
            ));
        }
        let map = sparsecode::io::map_file(path, "a GGUF model file")?;
        let content = crate::gguf::read(path, &map)?;
        let arch = meta(&content, path, "general.architecture")?
            .to_string()
            .map_err(|e| Error::model(path, format!("`general.architecture`: {e}")))?
            .clone();
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            content,
            arch,
        })
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> &str {
        &self.arch
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata and tensor table.
    pub(crate) fn content(&self) -> &Content {
        &self.content
    }

    /// Refuses a file of another architecture.
    pub(crate) fn expect(&self, arch: &str) -> Result<()> {
        if self.arch != arch {
            return Err(Error::model(
                &self.path,
                format!("architecture '{}' (expected '{arch}')", self.arch),
            ));
        }
        Ok(())
    }

    /// The metadata integer `key`.
    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        let v = meta(&self.content, &self.path, key)?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x.max(0) as usize))
            .map_err(|e| Error::model(&self.path, format!("`{key}`: {e}")))
    }

    /// The block count `key`, which the tensor table must bear out (checked before anything is
    /// sized by the count).
    pub(crate) fn block_count(&self, key: &str) -> Result<usize> {
        let n = self.usize(key)?;
        let present = (0..)
            .take_while(|i| {
                self.content
                    .tensor_infos
                    .contains_key(&format!("blk.{i}.attn_norm.weight"))
            })
            .count();
        if n == 0 || n != present {
            return Err(Error::model(
                &self.path,
                format!("`{key}` is {n} but the tensor table has {present} blocks"),
            ));
        }
        Ok(n)
    }

    /// The metadata float `key`, or `default` when absent.
    pub(crate) fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.content.metadata.get(key) {
            None => Ok(default),
            Some(v) => v
                .to_f32()
                .map(f64::from)
                .map_err(|e| Error::model(&self.path, format!("`{key}`: {e}"))),
        }
    }

    /// A reader of the weights onto `device`.
    pub(crate) fn weights<'a>(&'a self, device: &'a Device) -> Weights<'a> {
        Weights {
            file: self,
            reader: std::io::Cursor::new(&self.map[..]),
            device,
        }
    }

    /// The file's stem, which names the model in records (`SmolLM2-135M-Instruct.Q4_1`).
    pub(crate) fn stem(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.arch.clone())
    }
}

fn meta<'a>(c: &'a Content, path: &Path, key: &str) -> Result<&'a Value> {
    c.metadata
        .get(key)
        .ok_or_else(|| Error::model(path, format!("GGUF metadata has no `{key}`")))
}

/// Reads tensors of a [`GgufFile`], dequantised to f32.
pub(crate) struct Weights<'a> {
    file: &'a GgufFile,
    reader: std::io::Cursor<&'a [u8]>,
    device: &'a Device,
}

impl Weights<'_> {
    /// Tensor `name`, whose table shape must be `shape` (checked before any data is read).
    pub(crate) fn load(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let path = &self.file.path;
        if let Some(info) = self.file.content.tensor_infos.get(name) {
            if info.shape.dims() != shape {
                return Err(Error::model(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        info.shape.dims()
                    ),
                ));
            }
        }
        let q = self
            .file
            .content
            .tensor(&mut self.reader, name, self.device)
            .map_err(|e| Error::model(path, format!("tensor `{name}`: {e}")))?;
        q.dequantize(self.device)
            .map_err(|e| Error::model(path, format!("tensor `{name}`: {e}")))
    }

    /// Tensor `name` as [`Weights::load`], when the file has it.
    pub(crate) fn optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.file.content.tensor_infos.contains_key(name) {
            self.load(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// `(batch, length)` of a non-empty batch of equally long, non-empty sequences of ids below
/// `vocab`.
pub(crate) fn check_tokens(tokens: &[Vec<u32>], vocab: usize) -> Result<(usize, usize)> {
    let b = tokens.len();
    let t = tokens.first().map(Vec::len).unwrap_or(0);
    if b == 0 || t == 0 || tokens.iter().any(|s| s.len() != t) {
        return Err(Error::Param {
            field: "tokens",
            reason: "a non-empty batch of equally long, non-empty sequences".into(),
        });
    }
    if let Some(&bad) = tokens.iter().flatten().find(|&&i| i as usize >= vocab) {
        return Err(Error::Param {
            field: "tokens",
            reason: format!("token id {bad} outside the vocabulary of {vocab}"),
        });
    }
    Ok((b, t))
}

/// A residual of `b` sequences of `t` positions of width `d` must hold `b * t * d` values.
pub(crate) fn check_residual(resid: &[f32], (b, t): (usize, usize), d: usize) -> Result<()> {
    if b == 0 || t == 0 || b.checked_mul(t).and_then(|n| n.checked_mul(d)) != Some(resid.len()) {
        return Err(Error::Param {
            field: "residual",
            reason: format!(
                "{} values for {b} sequences of {t} positions of width {d}",
                resid.len()
            ),
        });
    }
    Ok(())
}

/// Runs `block(i, x)` for blocks `0..=max(layers)` from `x`, keeping the residual after each
/// block of `layers`, in the order asked.
pub(crate) fn capture(
    mut x: Tensor,
    layers: &[usize],
    mut block: impl FnMut(usize, &Tensor) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Vec<Tensor>> {
    let last = layers.iter().copied().max().unwrap_or(0);
    let mut kept: Vec<Option<Tensor>> = vec![None; layers.len()];
    for i in 0..=last {
        x = block(i, &x)?;
        for (slot, _) in kept.iter_mut().zip(layers).filter(|(_, l)| **l == i) {
            *slot = Some(x.clone());
        }
    }
    Ok(kept.into_iter().flatten().collect())
}

/// A residual tensor as row-major values.
pub(crate) fn rows(x: &Tensor) -> Result<Vec<f32>> {
    x.flatten_all()
        .and_then(|x| x.to_vec1())
        .ctx("reading the residual")
}

/// The final norm (`gain`, `eps`) and the unembedding `[vocab, d]` of `x` `[b, t, d]`: logits
/// `[b * t, vocab]`, or with `last_only` `[b, vocab]` of each sequence's last position.
pub(crate) fn head(
    x: &Tensor,
    (gain, eps): (&Tensor, f64),
    unembedding: &Tensor,
    last_only: bool,
) -> candle_core::Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let x = if last_only {
        x.narrow(1, t - 1, 1)?.reshape((b, d))?
    } else {
        x.reshape((b * t, d))?
    };
    rms_norm(&x, gain, eps)?.matmul(&unembedding.t()?)
}

/// For each row of `dirs` (`[n, d]`, row-major), the `k` tokens whose logits the direction
/// raises most and the `k` it lowers most, through the final norm's `gain` `[d]` and the
/// unembedding `[vocab, d]` (computed 256 directions at a time).
pub(crate) fn logit_effects(
    dirs: &[f32],
    k: usize,
    gain: &Tensor,
    unembedding: &Tensor,
) -> Result<Vec<LogitEffects>> {
    let d = gain.dim(0).ctx("the final norm")?;
    if !dirs.len().is_multiple_of(d) {
        return Err(Error::Param {
            field: "directions",
            reason: format!("rows of width {d}"),
        });
    }
    let mut out = Vec::with_capacity(dirs.len() / d);
    for chunk in dirs.chunks(256 * d) {
        let n = chunk.len() / d;
        let go = || -> candle_core::Result<Vec<Vec<f32>>> {
            let x = Tensor::from_vec(chunk.to_vec(), (n, d), gain.device())?.broadcast_mul(gain)?;
            x.matmul(&unembedding.t()?)?.to_vec2()
        };
        for row in go().ctx("unembedding directions")? {
            out.push(LogitEffects {
                up: extremes(&row, k, true),
                down: extremes(&row, k, false),
            });
        }
    }
    Ok(out)
}

/// The `k` largest (or smallest) entries of `row` with their ids, by partial selection (not a
/// sort of the vocabulary), most extreme first.
fn extremes(row: &[f32], k: usize, largest: bool) -> Vec<(u32, f32)> {
    let key = |i: &u32| {
        if largest {
            -row[*i as usize]
        } else {
            row[*i as usize]
        }
    };
    let mut idx: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |a, b| key(a).total_cmp(&key(b)));
    idx.truncate(k);
    idx.sort_by(|a, b| key(a).total_cmp(&key(b)));
    idx.into_iter().map(|i| (i, row[i as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_batches_and_residuals_are_checked() {
        assert_eq!(check_tokens(&[vec![1, 2], vec![3, 4]], 5).unwrap(), (2, 2));
        assert!(check_tokens(&[vec![1, 2], vec![3]], 5).is_err());
        assert!(check_tokens(&[], 5).is_err());
        let e = check_tokens(&[vec![1, 7]], 5).unwrap_err().to_string();
        assert!(e.contains("token id 7"), "{e}");
        assert!(check_residual(&[0.0; 12], (2, 3), 2).is_ok());
        assert!(check_residual(&[0.0; 11], (2, 3), 2).is_err());
        assert!(check_residual(&[], (0, 3), 2).is_err());
    }

    #[test]
    fn capture_keeps_the_asked_blocks_in_the_asked_order() {
        let x = Tensor::new(&[0f32], &Device::Cpu).unwrap();
        let kept = capture(x, &[3, 1], |i, x| x + (i as f64 + 1.0)).unwrap();
        let v: Vec<f32> = kept
            .iter()
            .map(|t| t.to_vec1::<f32>().unwrap()[0])
            .collect();
        // After block i the value is 1 + 2 + ... + (i + 1).
        assert_eq!(v, [10.0, 3.0]);
    }

    #[test]
    fn extremes_pick_the_largest_and_smallest() {
        let row = [0.5, -2.0, 3.0, 1.0, -1.0];
        assert_eq!(extremes(&row, 2, true), [(2, 3.0), (3, 1.0)]);
        assert_eq!(extremes(&row, 2, false), [(1, -2.0), (4, -1.0)]);
        assert!(extremes(&row, 0, true).is_empty());
    }
}
