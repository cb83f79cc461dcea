//! Writes one or more well-formed inputs per fuzz target into `CORPUS/<target>/` (default
//! `fuzz/corpus`), made by sparsecode's own writers: the fuzzer starts from files that reach the
//! end of each parser and mutates from there.
//!
//! `cargo run -p sparsecode-fuzz --bin make-seeds [CORPUS]`

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use serde_json::json;
use sparsecode::data::store::{import_files, StoreDType};
use sparsecode::data::tokens::{token_shard_name, write_token_shard, TokenRow};
use sparsecode::sae::{Activation, EncoderInit, Sae};
use sparsecode::train::{ArchConfig, Control, Observer, RunDir, RunJob, StepRecord, TrainConfig};
use sparsecode::Matrix;
use sparsecode_fuzz::join;
use std::path::{Path, PathBuf};

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("fuzz/corpus".into()));
    let t = tempfile::tempdir()?;
    let all: [(&str, Seeds); 8] = [
        ("npy", npy_seeds(t.path())?),
        ("safetensors", safetensors_seeds(t.path())?),
        ("saelens", sae_seeds(t.path(), "saelens")?),
        ("sparsify", sae_seeds(t.path(), "sparsify")?),
        ("store", store_seeds(t.path())?),
        ("token_shard", token_shard_seeds(t.path())?),
        ("gguf", vec![("tiny-llama", gguf_seed()?)]),
        ("checkpoint", checkpoint_seeds(t.path())?),
    ];
    for (target, seeds) in all {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
    }
    Ok(())
}

fn small() -> Matrix {
    Matrix::from_fn(6, 3, |r, c| (r * 3 + c) as f32 * 0.25 - 1.0)
}

fn npy_seeds(tmp: &Path) -> Result<Seeds, Box<dyn std::error::Error>> {
    let p = tmp.join("x.npy");
    sparsecode::io::write_matrix(&p, &small())?;
    let mut f64_file = sparsecode::io::npy::to_npy_header("<f8", &[2, 2]);
    let mut f16_file = sparsecode::io::npy::to_npy_header("<f2", &[2, 2]);
    for v in [1.0f64, -2.0, 0.5, 3.0] {
        f64_file.extend_from_slice(&v.to_le_bytes());
        f16_file.extend_from_slice(&half_bits(v as f32).to_le_bytes());
    }
    Ok(vec![
        ("f32", std::fs::read(&p)?),
        ("f64", f64_file),
        ("f16", f16_file),
    ])
}

/// IEEE half bits of small exact values (enough for seeds: no rounding, no subnormals).
fn half_bits(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    if v == 0.0 {
        return sign;
    }
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
}

fn safetensors_seeds(tmp: &Path) -> Result<Seeds, Box<dyn std::error::Error>> {
    let p = tmp.join("x.safetensors");
    let m = small();
    sparsecode::io::tensors::write_tensors(&p, &[("x", vec![6, 3], m.as_slice())], None)?;
    Ok(vec![("x", std::fs::read(&p)?)])
}

fn sae_seeds(tmp: &Path, format: &str) -> Result<Seeds, Box<dyn std::error::Error>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let kinds: &[(&str, Activation)] = if format == "saelens" {
        &[
            ("relu", Activation::Relu),
            ("topk", Activation::TopK { k: 2 }),
            ("jumprelu", Activation::JumpRelu),
            ("gated", Activation::Gated),
        ]
    } else {
        &[("topk", Activation::TopK { k: 2 })]
    };
    let mut seeds = Vec::new();
    for (name, act) in kinds {
        let sae = Sae::init(3, 5, *act, EncoderInit::Tied, &mut rng);
        let dir = tmp.join(format!("{format}-{name}"));
        std::fs::create_dir_all(&dir)?;
        let (cfg, weights) = if format == "saelens" {
            sparsecode::sae::saelens::save(&dir, &sae, json!({}))?;
            use sparsecode::sae::saelens::{CFG_FILE, WEIGHTS_FILE};
            (dir.join(CFG_FILE), dir.join(WEIGHTS_FILE))
        } else {
            sparsecode::sae::sparsify::save(&dir, &sae)?;
            use sparsecode::sae::sparsify::{CFG_FILE, WEIGHTS_FILE};
            (dir.join(CFG_FILE), dir.join(WEIGHTS_FILE))
        };
        seeds.push((
            *name,
            join(&[&std::fs::read(cfg)?, &std::fs::read(weights)?]),
        ));
    }
    Ok(seeds)
}

fn store_seeds(tmp: &Path) -> Result<Seeds, Box<dyn std::error::Error>> {
    let input = tmp.join("rows.npy");
    sparsecode::io::write_matrix(&input, &small())?;
    let dir = tmp.join("store");
    import_files(
        &[input],
        &dir,
        StoreDType::F16,
        6,
        None,
        false,
        &mut |_, _| {},
    )?;
    let mpath = dir.join(sparsecode::data::store::MANIFEST);
    let plain = std::fs::read(&mpath)?;
    let shard = std::fs::read(dir.join(sparsecode::data::store::shard_name(0)))?;
    // The same store with token provenance, as `harvest` writes it.
    let rows: Vec<TokenRow> = (0..6)
        .map(|i| TokenRow {
            token: i % 3,
            doc: 0,
            pos: i,
        })
        .collect();
    let info = write_token_shard(&dir, &token_shard_name(0), &rows)?;
    let mut manifest: serde_json::Value = serde_json::from_slice(&plain)?;
    manifest["metadata"] = json!({
        "token_shards": [info],
        "vocab_file": "vocab.json",
        "documents": ["doc"],
        "context_size": 3,
    });
    let vocab = serde_json::to_vec(&["a", "b", "c"])?;
    let tokens = std::fs::read(dir.join(token_shard_name(0)))?;
    Ok(vec![
        ("plain", join(&[&plain, &shard])),
        (
            "tokens",
            join(&[&serde_json::to_vec(&manifest)?, &shard, &tokens, &vocab]),
        ),
    ])
}

fn token_shard_seeds(tmp: &Path) -> Result<Seeds, Box<dyn std::error::Error>> {
    let rows = [TokenRow {
        token: 1,
        doc: 2,
        pos: 3,
    }; 4];
    write_token_shard(tmp, "t.npy", &rows)?;
    let mut seed = 4u16.to_le_bytes().to_vec();
    seed.extend(std::fs::read(tmp.join("t.npy"))?);
    Ok(vec![("four-rows", seed)])
}

/// A one-block Llama of width 4 with a five-token byte-level BPE vocabulary.
fn gguf_seed() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use gguf_file::Value;
    let (d, ff) = (4usize, 8usize);
    let tokens = ["a", "b", "Ġ", "ab", "<s>"];
    let strings =
        |v: &[&str]| Value::Array(v.iter().map(|s| Value::String(s.to_string())).collect());
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.embedding_length", Value::U32(d as u32)),
        ("llama.block_count", Value::U32(1)),
        ("llama.attention.head_count", Value::U32(2)),
        ("llama.attention.head_count_kv", Value::U32(1)),
        ("llama.feed_forward_length", Value::U32(ff as u32)),
        ("llama.context_length", Value::U32(16)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&["a b"])),
        (
            "tokenizer.ggml.token_type",
            Value::Array([1, 1, 1, 1, 3].map(Value::I32).to_vec()),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(4)),
    ];
    let kv = d / 2;
    let shapes: Vec<(String, Vec<usize>)> = [
        ("token_embd.weight", vec![tokens.len(), d]),
        ("blk.0.attn_norm.weight", vec![d]),
        ("blk.0.attn_q.weight", vec![d, d]),
        ("blk.0.attn_k.weight", vec![kv, d]),
        ("blk.0.attn_v.weight", vec![kv, d]),
        ("blk.0.attn_output.weight", vec![d, d]),
        ("blk.0.ffn_norm.weight", vec![d]),
        ("blk.0.ffn_gate.weight", vec![ff, d]),
        ("blk.0.ffn_up.weight", vec![ff, d]),
        ("blk.0.ffn_down.weight", vec![d, ff]),
        ("output_norm.weight", vec![d]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    let mut tensors = Vec::new();
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|j| ((i + j) % 7) as f32 * 0.1 - 0.3).collect();
        let t = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?;
        tensors.push((name.as_str(), QTensor::quantize(&t, GgmlDType::F32)?));
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (*k, v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta_refs, &tensor_refs)?;
    Ok(out.into_inner())
}

/// Stops training after a given step, writing checkpoints through the run folder.
struct StopAfter<'a>(&'a mut RunDir, u64);
impl Observer for StopAfter<'_> {
    fn on_step(&mut self, step: u64) -> Control {
        if step >= self.1 {
            Control::Stop
        } else {
            Control::Continue
        }
    }
    fn on_log(&mut self, r: &StepRecord) -> sparsecode::Result<()> {
        self.0.on_log(r)
    }
    fn on_checkpoint(&mut self, s: &sparsecode::train::TrainState) -> sparsecode::Result<()> {
        self.0.on_checkpoint(s)
    }
}

fn checkpoint_seeds(tmp: &Path) -> Result<Seeds, Box<dyn std::error::Error>> {
    let x = Matrix::from_fn(40, 3, |r, c| ((r * 7 + c * 3) % 5) as f32 - 2.0);
    let arches = [
        (
            "topk",
            ArchConfig::TopK {
                k: 2,
                aux_k: 2,
                aux_coef: 0.1,
            },
        ),
        (
            "relu",
            ArchConfig::Relu {
                l1: 0.01,
                l1_warmup_steps: 2,
            },
        ),
    ];
    let mut seeds = Vec::new();
    for (name, arch) in arches {
        let mut config = TrainConfig::new(arch, 5, 20, 8, 1e-3, 3);
        config.checkpoint_every = 4;
        config.log_every = 2;
        config.threads = 1;
        let job = RunJob {
            config: config.clone(),
            data: "seed".into(),
            data_shape: [x.rows(), x.cols()],
            data_fingerprint: sparsecode::io::record::fingerprint(x.as_slice()),
            dictionary: None,
            metadata: json!({}),
            format: sparsecode::sae::SaeFormat::Saelens,
            source: None,
        };
        let checked = config.check(x.rows(), x.cols())?;
        let run = tmp.join(format!("run-{name}"));
        let mut dir = RunDir::create(&run, false, &job)?;
        sparsecode::train::train(&checked, &x, None, None, &mut StopAfter(&mut dir, 9))?;
        drop(dir);
        let partial = tmp.join(format!("run-{name}.partial"));
        let read = |p: &str| std::fs::read(partial.join(p));
        seeds.push((
            name,
            join(&[
                &read("train_config.json")?,
                &read("checkpoint/state.json")?,
                &read("checkpoint/state.safetensors")?,
                &read("metrics.jsonl")?,
            ]),
        ));
    }
    Ok(seeds)
}
