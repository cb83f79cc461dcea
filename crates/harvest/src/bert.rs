//! A BERT encoder (all-MiniLM-L6-v2) on candle tensors: hidden states after any layer, and
//! sentence embeddings (mean over the tokens, then unit length, as sentence-transformers does
//! for this model).

use crate::assets::{self, Asset};
use crate::error::CandleContext;
use crate::fused::{self, attention, Heads, Keys, Linear};
use crate::tokenizer::TextTokenizer;
use crate::{Error, ResidualModel, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

#[derive(serde::Deserialize)]
struct BertConfig {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    layer_norm_eps: f64,
    max_position_embeddings: usize,
    vocab_size: usize,
    hidden_act: String,
}

struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

struct Layer {
    /// Queries, keys and values in one product.
    qkv: Linear,
    attn_out: Linear,
    ln1: Norm,
    inter: Linear,
    out: Linear,
    ln2: Norm,
}

/// The loaded encoder with its tokenizer.
pub struct Bert {
    cfg: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    ln_emb: Norm,
    layers: Vec<Layer>,
    tokenizer: TextTokenizer,
    device: Device,
}

impl Bert {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from a folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let weights = dir.join("model.safetensors");
        for f in ["model.safetensors", "config.json", "tokenizer.json"] {
            if !dir.join(f).exists() {
                return Err(Error::model(dir.join(f), "no such file (a BERT folder holds model.safetensors, config.json and tokenizer.json)"));
            }
        }
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let cfg: BertConfig = serde_json::from_str(&text)
            .map_err(|e| Error::model(&cfg_path, format!("BERT config: {e}")))?;
        if cfg.hidden_act != "gelu" {
            return Err(Error::model(
                &cfg_path,
                format!("hidden_act '{}' (expected 'gelu')", cfg.hidden_act),
            ));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::model(
                &cfg_path,
                "hidden_size not divisible by the heads",
            ));
        }
        let device = Device::Cpu;
        let mut t: HashMap<String, Tensor> = candle_core::safetensors::load(&weights, &device)
            .map_err(|e| Error::model(&weights, format!("not a readable safetensors file: {e}")))?;
        let d = cfg.hidden_size;
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let x = t
                .remove(name)
                .ok_or_else(|| Error::model(&weights, format!("no tensor `{name}`")))?;
            if x.dims() != shape {
                return Err(Error::model(
                    &weights,
                    format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        x.dims()
                    ),
                ));
            }
            x.to_dtype(DType::F32).ctx(name)
        };
        let mut dense = |name: &str, out: usize, inp: usize| -> Result<Linear> {
            let w = take(&format!("{name}.weight"), &[out, inp])?;
            let b = take(&format!("{name}.bias"), &[out])?;
            Linear::new(&w, Some(&b)).ctx(name)
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        let ff = cfg.intermediate_size;
        let mut dense_layers = Vec::new();
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            dense_layers.push([
                dense(&format!("{p}.attention.self.query"), d, d)?,
                dense(&format!("{p}.attention.self.key"), d, d)?,
                dense(&format!("{p}.attention.self.value"), d, d)?,
                dense(&format!("{p}.attention.output.dense"), d, d)?,
                dense(&format!("{p}.intermediate.dense"), ff, d)?,
                dense(&format!("{p}.output.dense"), d, ff)?,
            ]);
        }
        let mut norm = |name: &str| -> Result<Norm> {
            let values = |t: Tensor| t.to_vec1::<f32>().ctx(name);
            Ok(Norm {
                w: values(take(&format!("{name}.weight"), &[d])?)?,
                b: values(take(&format!("{name}.bias"), &[d])?)?,
            })
        };
        for (i, [q, k, v, attn_out, inter, out]) in dense_layers.into_iter().enumerate() {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                qkv: Linear::concat(vec![q, k, v]),
                attn_out,
                ln1: norm(&format!("{p}.attention.output.LayerNorm"))?,
                inter,
                out,
                ln2: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let ln_emb = norm("embeddings.LayerNorm")?;
        let word = take("embeddings.word_embeddings.weight", &[cfg.vocab_size, d])?;
        let position = take(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, d],
        )?;
        let token_type = take("embeddings.token_type_embeddings.weight", &[2, d])?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), true)?;
        Ok(Bert {
            cfg,
            word,
            position,
            token_type,
            ln_emb,
            layers,
            tokenizer,
            device,
        })
    }

    /// Loads the fetched all-MiniLM-L6-v2 (`scripts/fetch-assets minilm`).
    pub fn minilm() -> Result<Self> {
        Self::load(&assets::require(Asset::MiniLm)?)
    }

    /// The tokenizer (adds [CLS] and [SEP]).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Hidden states after layer `last` for sequences padded to one length; `valid[b]` tokens of
    /// sequence `b` are real. Returns row-major `[b * t, d]`.
    fn run(&self, ids: &[Vec<u32>], valid: &[usize], last: usize) -> candle_core::Result<Vec<f32>> {
        let b = ids.len();
        let t = ids[0].len();
        let d = self.cfg.hidden_size;
        let nh = self.cfg.num_attention_heads;
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let idx = Tensor::from_vec(flat, b * t, &self.device)?;
        let pos = Tensor::arange(0u32, t as u32, &self.device)?;
        let mut x: Vec<f32> = self
            .word
            .index_select(&idx, 0)?
            .reshape((b, t, d))?
            .broadcast_add(&self.position.index_select(&pos, 0)?)?
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?
            .flatten_all()?
            .to_vec1()?;
        let eps = self.cfg.layer_norm_eps as f32;
        fused::layer_norm(&mut x, &self.ln_emb.w, &self.ln_emb.b, eps);
        let heads = Heads {
            q: nh,
            kv: nh,
            dh: d / nh,
        };
        let rows = b * t;
        let mut qkv = vec![0.0f32; rows * heads.width()];
        let mut y = vec![0.0f32; rows * d];
        let mut f = vec![0.0f32; rows * self.cfg.intermediate_size];
        let mut scratch = Vec::new();
        for l in &self.layers[..=last] {
            l.qkv.forward(&x, &mut qkv);
            attention(
                &qkv,
                (b, t),
                heads,
                Keys::Valid(valid),
                &mut y,
                &mut scratch,
            );
            l.attn_out.accumulate(&y, &mut x);
            fused::layer_norm(&mut x, &l.ln1.w, &l.ln1.b, eps);
            l.inter.forward(&x, &mut f);
            fused::gelu_erf(&mut f);
            l.out.accumulate(&f, &mut x);
            fused::layer_norm(&mut x, &l.ln2.w, &l.ln2.b, eps);
        }
        Ok(x)
    }

    /// Unit-length sentence embeddings (mean of the last layer over each text's tokens), one
    /// `Vec` of `d` values per text. Texts longer than the model's 512 positions are cut.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let max = self.cfg.max_position_embeddings.min(256);
        let mut out = Vec::with_capacity(texts.len());
        // Batches of similar length waste little on padding.
        for chunk in texts.chunks(32) {
            let mut ids: Vec<Vec<u32>> = chunk
                .iter()
                .map(|s| self.tokenizer.encode(s))
                .collect::<Result<_>>()?;
            for s in &mut ids {
                if s.len() > max {
                    let sep = *s.last().unwrap_or(&0);
                    s.truncate(max - 1);
                    s.push(sep);
                }
            }
            let valid: Vec<usize> = ids.iter().map(Vec::len).collect();
            let t = valid.iter().copied().max().unwrap_or(0);
            for s in &mut ids {
                s.resize(t, 0);
            }
            let x = self
                .run(&ids, &valid, self.cfg.num_hidden_layers - 1)
                .ctx("BERT forward")?;
            let d = self.cfg.hidden_size;
            for (r, n) in x.chunks_exact(t * d).zip(&valid) {
                let mut mean = vec![0.0f32; d];
                for tok in r[..n * d].chunks_exact(d) {
                    mean.iter_mut().zip(tok).for_each(|(m, v)| *m += v);
                }
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                mean.iter_mut().for_each(|m| *m /= norm);
                out.push(mean);
            }
        }
        Ok(out)
    }
}

impl ResidualModel for Bert {
    fn d_model(&self) -> usize {
        self.cfg.hidden_size
    }
    fn n_layers(&self) -> usize {
        self.cfg.num_hidden_layers
    }
    fn max_context(&self) -> usize {
        self.cfg.max_position_embeddings
    }
    fn residual(&self, tokens: &[Vec<u32>], layer: usize) -> Result<Vec<f32>> {
        crate::check_layer(self, layer)?;
        let t = tokens.first().map(Vec::len).unwrap_or(0);
        if t == 0 || t > self.cfg.max_position_embeddings || tokens.iter().any(|s| s.len() != t) {
            return Err(Error::Param {
                field: "tokens",
                reason: format!(
                    "equally long sequences of 1..={} tokens",
                    self.cfg.max_position_embeddings
                ),
            });
        }
        if let Some(&bad) = tokens
            .iter()
            .flatten()
            .find(|&&i| i as usize >= self.cfg.vocab_size)
        {
            return Err(Error::Param {
                field: "tokens",
                reason: format!("token id {bad} outside the vocabulary"),
            });
        }
        let valid = vec![t; tokens.len()];
        self.run(tokens, &valid, layer).ctx("BERT forward")
    }
    fn name(&self) -> &str {
        "all-MiniLM-L6-v2"
    }
    fn flops_per_token(&self, layer: usize, t: usize) -> f64 {
        let d = self.cfg.hidden_size as f64;
        let ff = self.cfg.intermediate_size as f64;
        let per_block = 2.0 * (4.0 * d * d + 2.0 * d * ff) + 2.0 * 2.0 * t as f64 * d;
        per_block * (layer + 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsecode::linalg::cosine;

    fn model() -> Option<Bert> {
        match Bert::minilm() {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("skipped: {e}");
                None
            }
        }
    }

    #[test]
    fn minilm_embeddings_are_unit_length_and_rank_paraphrases_first() {
        let Some(m) = model() else { return };
        let e = m
            .embed(&[
                "A man is playing a guitar.",
                "Someone plays an acoustic guitar.",
                "The stock market fell sharply today.",
            ])
            .unwrap();
        for v in &e {
            let n: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-4);
        }
        let close = cosine(&e[0], &e[1]);
        let far = cosine(&e[0], &e[2]);
        assert!(
            close > 0.5 && far < 0.2 && close > far + 0.4,
            "{close} {far}"
        );
        // Padding does not change an embedding: alone vs in a batch with a longer text.
        let alone = m.embed(&["A man is playing a guitar."]).unwrap();
        assert!(cosine(&alone[0], &e[0]) > 0.9999);
    }

    #[test]
    fn residual_after_the_last_layer_matches_the_embedding_path() {
        let Some(m) = model() else { return };
        let ids = m.tokenizer().encode("Call me Ishmael.").unwrap();
        let r = m.residual(std::slice::from_ref(&ids), 5).unwrap();
        let d = m.d_model();
        let t = ids.len();
        let mut mean = vec![0.0f32; d];
        for row in r.chunks_exact(d) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(a, b)| *a += b / t as f32);
        }
        let e = m.embed(&["Call me Ishmael."]).unwrap();
        assert!(cosine(&mean, &e[0]) > 0.9999);
        let err = m.residual(&[ids], 6).err().unwrap().to_string();
        assert!(err.contains("layer 6") && err.contains("6 layers"), "{err}");
    }
}
