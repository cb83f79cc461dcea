//! Gemma 3 read from one GGUF file (Gemma 3 270M here), with a forward
//! pass that can stop after any block.
//!
//! Differences from [`crate::llama`]: the embeddings are scaled by sqrt(d_model); each block
//! normalises before and after attention and before and after the MLP ("sandwich" norms); queries
//! and keys are RMS-normalised per head; the MLP is GeGLU (tanh GELU); rotary embeddings rotate
//! halves (llama.cpp does not permute Gemma's rows), with base 10,000 on the sliding-window
//! layers and the file's `rope.freq_base` on the global ones (every sixth layer); sliding-window
//! layers see the last `sliding_window` positions; the unembedding is the embedding. llama.cpp's
//! converter stores every norm weight as `1 + w`, so the norms here multiply by the file's
//! weight as it is.

use crate::decoder::{self, capture, check_residual, check_tokens, GgufFile};
use crate::error::CandleContext;
use crate::tensor_ops::{
    attention_scores, causal_mask, linear, rms_norm, softmax_last, transposed,
};
use crate::tokenizer::{self, TextTokenizer};
use crate::{Error, ResidualModel, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// Base of the rotary embedding on the sliding-window layers (not in the file).
const LOCAL_ROPE_BASE: f64 = 10_000.0;
/// Every this many layers one attends globally (the last of each group).
const GLOBAL_EVERY: usize = 6;

/// Shape of the network, read from the GGUF metadata (`gemma3.*`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GemmaConfig {
    /// Residual width.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of a head (`attention.key_length`).
    pub head_dim: usize,
    /// MLP width.
    pub d_ff: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base of the global layers.
    pub rope_base: f64,
    /// Positions a sliding-window layer sees.
    pub sliding_window: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context.
    pub max_context: usize,
}

impl GemmaConfig {
    /// Whether layer `i` attends over the whole context.
    pub fn is_global(&self, i: usize) -> bool {
        (i + 1).is_multiple_of(GLOBAL_EVERY)
    }
}

struct Block {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    wo: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
    post_ffn_norm: Tensor,
}

/// The loaded model.
pub struct Gemma {
    path: PathBuf,
    name: String,
    cfg: GemmaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    out_norm: Tensor,
    tokenizer: TextTokenizer,
    device: Device,
}

impl Gemma {
    /// Rotary tables `[t, dh / 2, 1]` for `base`.
    fn rope_tables(&self, t: usize, base: f64) -> candle_core::Result<(Tensor, Tensor)> {
        let half = self.cfg.head_dim / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for pos in 0..t {
            for i in 0..half {
                let a = pos as f64 * base.powf(-(2.0 * i as f64) / self.cfg.head_dim as f64);
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, half), &self.device)?,
            Tensor::from_vec(sin, (t, half), &self.device)?,
        ))
    }

    /// Rotates the two halves of `x` `[b, h, t, dh]` (NEOX style).
    fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let dh = x.dim(3)?;
        let x0 = x.narrow(3, 0, dh / 2)?;
        let x1 = x.narrow(3, dh / 2, dh / 2)?;
        let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
        let r1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
        Tensor::cat(&[r0, r1], 3)
    }

    fn block(
        &self,
        blk: &Block,
        x: &Tensor,
        mask: &Tensor,
        (cos, sin): (&Tensor, &Tensor),
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, dh) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim);
        let g = nh / nkv;
        let eps = self.cfg.rms_eps;
        let h = rms_norm(x, &blk.attn_norm, eps)?;
        let heads = |w: &Tensor, n: usize, norm: Option<&Tensor>| -> candle_core::Result<Tensor> {
            let y = linear(&h, w, None)?.reshape((b, t, n, dh))?;
            let y = match norm {
                Some(nw) => rms_norm(&y, nw, eps)?,
                None => y,
            };
            y.transpose(1, 2)?.contiguous()
        };
        let q = Self::rope(&heads(&blk.wq, nh, Some(&blk.q_norm))?, cos, sin)?;
        let k = Self::rope(&heads(&blk.wk, nkv, Some(&blk.k_norm))?, cos, sin)?;
        let v = heads(&blk.wv, nkv, None)?;
        let q = q.reshape((b, nkv, g * t, dh))?;
        let att = attention_scores(&q, &k)?;
        let att = att.reshape((b, nkv, g, t, t))?.broadcast_add(mask)?;
        let att = softmax_last(&att)?.reshape((b, nkv, g * t, t))?;
        let y = att
            .matmul(&v)?
            .reshape((b, nh, t, dh))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, nh * dh))?;
        let attn = rms_norm(&linear(&y, &blk.wo, None)?, &blk.post_attn_norm, eps)?;
        let x = (x + attn)?;
        let h = rms_norm(&x, &blk.ffn_norm, eps)?;
        let gate = linear(&h, &blk.w_gate, None)?.gelu()?; // candle's gelu is the tanh form
        let up = linear(&h, &blk.w_up, None)?;
        let mlp = linear(&(gate * up)?, &blk.w_down, None)?;
        x + rms_norm(&mlp, &blk.post_ffn_norm, eps)?
    }
}

impl Gemma {
    /// Loads a GGUF Gemma 3 model (architecture `gemma3`); errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_gguf(&GgufFile::open(path)?)
    }

    /// The model in an opened GGUF file of architecture `gemma3`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        file.expect("gemma3")?;
        let path = file.path();
        let key = |k: &str| format!("gemma3.{k}");
        let cfg = GemmaConfig {
            d_model: file.usize(&key("embedding_length"))?,
            n_layers: file.block_count(&key("block_count"))?,
            n_heads: file.usize(&key("attention.head_count"))?,
            n_kv_heads: file.usize(&key("attention.head_count_kv"))?,
            head_dim: file.usize(&key("attention.key_length"))?,
            d_ff: file.usize(&key("feed_forward_length"))?,
            rms_eps: file.f64(&key("attention.layer_norm_rms_epsilon"), 1e-6)?,
            rope_base: file.f64(&key("rope.freq_base"), 1e6)?,
            sliding_window: file.usize(&key("attention.sliding_window"))?,
            vocab: 0,
            max_context: file.usize(&key("context_length"))?,
        };
        if cfg.n_heads == 0 || cfg.n_kv_heads == 0 || !cfg.n_heads.is_multiple_of(cfg.n_kv_heads) {
            return Err(Error::model(
                path,
                format!(
                    "inconsistent heads: {} query, {} key/value",
                    cfg.n_heads, cfg.n_kv_heads
                ),
            ));
        }
        let device = Device::Cpu;
        let tokenizer = tokenizer::from_gguf(file.content(), path)?;
        let mut w = file.weights(&device);
        let (d, dh) = (cfg.d_model, cfg.head_dim);
        let (q, kv) = (cfg.n_heads * dh, cfg.n_kv_heads * dh);
        let vocab = tokenizer.vocab_size();
        let embed = w.load("token_embd.weight", &[vocab, d])?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let t = |w: Tensor| transposed(&w).ctx("transposing a weight");
            blocks.push(Block {
                attn_norm: w.load(&p("attn_norm"), &[d])?,
                wq: t(w.load(&p("attn_q"), &[q, d])?)?,
                wk: t(w.load(&p("attn_k"), &[kv, d])?)?,
                wv: t(w.load(&p("attn_v"), &[kv, d])?)?,
                q_norm: w.load(&p("attn_q_norm"), &[dh])?,
                k_norm: w.load(&p("attn_k_norm"), &[dh])?,
                wo: t(w.load(&p("attn_output"), &[d, q])?)?,
                post_attn_norm: w.load(&p("post_attention_norm"), &[d])?,
                ffn_norm: w.load(&p("ffn_norm"), &[d])?,
                w_gate: t(w.load(&p("ffn_gate"), &[cfg.d_ff, d])?)?,
                w_up: t(w.load(&p("ffn_up"), &[cfg.d_ff, d])?)?,
                w_down: t(w.load(&p("ffn_down"), &[d, cfg.d_ff])?)?,
                post_ffn_norm: w.load(&p("post_ffw_norm"), &[d])?,
            });
        }
        let out_norm = w.load("output_norm.weight", &[d])?;
        Ok(Gemma {
            path: path.to_path_buf(),
            name: file.stem(),
            cfg: GemmaConfig { vocab, ..cfg },
            embed,
            blocks,
            out_norm,
            tokenizer,
            device,
        })
    }

    /// The network's shape.
    pub fn config(&self) -> &GemmaConfig {
        &self.cfg
    }

    /// One pass through blocks `0..=max(layers)` keeping the residual `[b, t, d]` after each
    /// block of `layers`, in the order asked.
    fn run_capturing(&self, tokens: &[Vec<u32>], layers: &[usize]) -> Result<Vec<Tensor>> {
        let (b, t) = check_tokens(tokens, self.cfg.vocab)?;
        let ids: Vec<u32> = tokens.iter().flatten().copied().collect();
        let go = || -> candle_core::Result<Vec<Tensor>> {
            let ids = Tensor::from_vec(ids, b * t, &self.device)?;
            let scale = (self.cfg.d_model as f64).sqrt();
            let embedded = self.embed.index_select(&ids, 0)?;
            let x = (embedded.reshape((b, t, self.cfg.d_model))? * scale)?;
            let inputs = self.layer_inputs(t)?;
            capture(x, layers, |i, x| self.layer(i, x, &inputs))
        };
        go().ctx("gemma forward")
    }

    /// Block `i` on `x`, with the mask and rotary tables of its kind of layer.
    fn layer(&self, i: usize, x: &Tensor, inputs: &LayerInputs) -> candle_core::Result<Tensor> {
        let (mask, rope) = if self.cfg.is_global(i) {
            (&inputs.global_mask, &inputs.global_rope)
        } else {
            (&inputs.local_mask, &inputs.local_rope)
        };
        self.block(&self.blocks[i], x, mask, (&rope.0, &rope.1))
    }

    /// Masks and rotary tables of both kinds of layer for sequences of `t` tokens.
    fn layer_inputs(&self, t: usize) -> candle_core::Result<LayerInputs> {
        Ok(LayerInputs {
            global_mask: causal_mask(t, None, &self.device)?,
            local_mask: causal_mask(t, Some(self.cfg.sliding_window), &self.device)?,
            global_rope: self.rope_tables(t, self.cfg.rope_base)?,
            local_rope: self.rope_tables(t, LOCAL_ROPE_BASE)?,
        })
    }

    /// The final norm and the (tied) unembedding of `x` `[b, t, d]` ([`decoder::head`]).
    fn head(&self, x: &Tensor, last_only: bool) -> candle_core::Result<Tensor> {
        decoder::head(
            x,
            (&self.out_norm, self.cfg.rms_eps),
            &self.embed,
            last_only,
        )
    }
}

impl crate::CausalLm for Gemma {
    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn vocab(&self) -> usize {
        self.cfg.vocab
    }
    /// Logits of the model continued from `resid` (the residual after block `layer` of `b`
    /// sequences of `t` tokens, row-major `[b * t, d_model]`), as [`crate::llama::Llama::logits_from`].
    fn logits_from(
        &self,
        resid: &[f32],
        (b, t): (usize, usize),
        layer: usize,
        last_only: bool,
    ) -> Result<Vec<f32>> {
        crate::check_layer(self, layer)?;
        let d = self.cfg.d_model;
        check_residual(resid, (b, t), d)?;
        let go = || -> candle_core::Result<Vec<f32>> {
            let mut x = Tensor::from_slice(resid, (b, t, d), &self.device)?;
            let inputs = self.layer_inputs(t)?;
            for i in layer + 1..self.cfg.n_layers {
                x = self.layer(i, &x, &inputs)?;
            }
            self.head(&x, last_only)?.flatten_all()?.to_vec1()
        };
        go().ctx("gemma logits from a residual")
    }
    /// Next-token logits after the last position of each sequence, `[b][vocab]`.
    fn last_logits(&self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let x = self
            .run_capturing(tokens, &[self.cfg.n_layers - 1])?
            .pop()
            .expect("one layer");
        self.head(&x, true)
            .and_then(|l| l.to_vec2())
            .ctx("gemma logits")
    }
    fn logit_effects(&self, dirs: &[f32], k: usize) -> Result<Vec<crate::llama::LogitEffects>> {
        decoder::logit_effects(dirs, k, &self.out_norm, &self.embed)
    }
}

/// What every block of one kind sees for a given sequence length.
struct LayerInputs {
    global_mask: Tensor,
    local_mask: Tensor,
    global_rope: (Tensor, Tensor),
    local_rope: (Tensor, Tensor),
}

impl ResidualModel for Gemma {
    fn d_model(&self) -> usize {
        self.cfg.d_model
    }
    fn n_layers(&self) -> usize {
        self.cfg.n_layers
    }
    fn max_context(&self) -> usize {
        self.cfg.max_context
    }
    fn residual(&self, tokens: &[Vec<u32>], layer: usize) -> Result<Vec<f32>> {
        self.residuals(tokens, &[layer]).map(|mut v| v.remove(0))
    }
    fn residuals(&self, tokens: &[Vec<u32>], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        for &l in layers {
            crate::check_layer(self, l)?;
        }
        self.run_capturing(tokens, layers)?
            .iter()
            .map(decoder::rows)
            .collect()
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn flops_per_token(&self, layer: usize, t: usize) -> f64 {
        let c = &self.cfg;
        let (d, q, kv) = (
            c.d_model as f64,
            (c.n_heads * c.head_dim) as f64,
            (c.n_kv_heads * c.head_dim) as f64,
        );
        let per_block =
            2.0 * (2.0 * d * q + 2.0 * d * kv + 3.0 * d * c.d_ff as f64) + 2.0 * 2.0 * t as f64 * q;
        per_block * (layer + 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sixth_layer_is_global() {
        let cfg = GemmaConfig {
            d_model: 8,
            n_layers: 18,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 8,
            d_ff: 8,
            rms_eps: 1e-6,
            rope_base: 1e6,
            sliding_window: 512,
            vocab: 1,
            max_context: 8,
        };
        let global: Vec<usize> = (0..18).filter(|&i| cfg.is_global(i)).collect();
        assert_eq!(global, [5, 11, 17]);
    }

    #[test]
    fn half_rotation_matches_the_formula() {
        // x = [a0, a1, b0, b1]: each pair (a_i, b_i) rotates by pos * base^(-2i/dh).
        let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (1, 1, 1, 4), &Device::Cpu).unwrap();
        let (pos, base) = (3.0f64, 100.0f64);
        let angles: Vec<f64> = (0..2)
            .map(|i| pos * base.powf(-(2.0 * i as f64) / 4.0))
            .collect();
        let cos = Tensor::from_vec(
            angles.iter().map(|a| a.cos() as f32).collect(),
            (1, 2),
            &Device::Cpu,
        )
        .unwrap();
        let sin = Tensor::from_vec(
            angles.iter().map(|a| a.sin() as f32).collect(),
            (1, 2),
            &Device::Cpu,
        )
        .unwrap();
        let got: Vec<f32> = Gemma::rope(&x, &cos, &sin)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for i in 0..2 {
            let (a, b) = ([1.0, 2.0][i], [3.0, 4.0][i]);
            let (c, s) = (angles[i].cos() as f32, angles[i].sin() as f32);
            assert!((got[i] - (a * c - b * s)).abs() < 1e-6);
            assert!((got[i + 2] - (a * s + b * c)).abs() < 1e-6);
        }
    }

    #[test]
    fn a_missing_file_or_another_architecture_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = Gemma::load(&dir.path().join("nope.gguf"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("nope.gguf"), "{e}");
        let smollm2 = crate::assets::path(crate::assets::Asset::SmolLm2);
        if smollm2.exists() {
            let e = Gemma::load(&smollm2).err().unwrap().to_string();
            assert!(e.contains("'llama'") && e.contains("gemma3"), "{e}");
        }
    }
}
