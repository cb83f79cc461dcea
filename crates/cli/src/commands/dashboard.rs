//! `sparsecode dashboard`: scan a harvested store with an SAE and write a static HTML site of
//! its features.

use crate::Outcome;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sparsecode::data::store::Store;
use sparsecode::data::tokens::TokenTable;
use sparsecode::sae::Sae;
use sparsecode::Parallelism;
use sparsecode_lab::report::dashboard::neuronpedia::NeuronpediaMeta;
use sparsecode_lab::report::dashboard::{self, DashboardInput};
use sparsecode_lab::report::features::{self, ScanConfig};
use std::path::{Path, PathBuf};

/// The inputs and output that `dashboard` and `interp` share.
#[derive(clap::Args)]
pub struct SaeOnStore {
    /// An SAE folder (a `train` run or any SAELens-format folder).
    #[arg(long)]
    pub sae: PathBuf,
    /// The harvested store (with token provenance) the SAE's features are read on.
    #[arg(long)]
    pub store: PathBuf,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Scan only the first N rows of the store.
    #[arg(long)]
    pub max_rows: Option<u64>,
    /// Replace an existing output folder.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    io: SaeOnStore,
    /// Top contexts per feature.
    #[arg(long, default_value_t = 12)]
    top: usize,
    /// Contexts per activation quantile band (four bands).
    #[arg(long, default_value_t = 3)]
    per_quantile: usize,
    /// GGUF model for the promote/suppress token lists (default: the store's model when it is
    /// a GGUF file found among the fetched assets; `none` to skip).
    #[arg(long)]
    unembed: Option<String>,
    /// `interp` results (scores.json) to show and sort by.
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Also write the features in Neuronpedia's upload layout, in OUT/neuronpedia.
    #[arg(long)]
    neuronpedia: bool,
    /// Neuronpedia model id (default: the store's model name in lower case, without a
    /// quantisation suffix such as `.q4_1`).
    #[arg(long, requires = "neuronpedia")]
    np_model_id: Option<String>,
    /// Neuronpedia source set (default: sparsecode-res-LATENTS).
    #[arg(long, requires = "neuronpedia")]
    np_source_set: Option<String>,
    /// Creator named in the release.
    #[arg(long, default_value = "sparsecode", requires = "neuronpedia")]
    np_creator: String,
}

/// The identifiers of a Neuronpedia export of `latents` features read on `store`.
fn neuronpedia_meta(a: &Args, store: &Store, latents: usize) -> Result<NeuronpediaMeta> {
    let meta = &store.manifest().metadata;
    let hook_name = meta["hook_name"].as_str().unwrap_or_default().to_string();
    let layer = sparsecode::sae::layer_of(meta)
        .with_context(|| {
            format!(
                "{}: the store names no layer (Neuronpedia files features by layer); harvest it with sparsecode",
                a.io.store.display()
            )
        })?;
    let model_id = match &a.np_model_id {
        Some(m) => m.clone(),
        None => {
            let name = meta["model_name"]
                .as_str()
                .unwrap_or("model")
                .to_lowercase();
            name.split('.').next().unwrap_or(&name).to_string()
        }
    };
    Ok(NeuronpediaMeta {
        model_id,
        source_set: a
            .np_source_set
            .clone()
            .unwrap_or_else(|| format!("sparsecode-res-{latents}")),
        layer,
        hook_name,
        creator: a.np_creator.clone(),
        dataset: meta["corpus"].as_str().unwrap_or_default().to_string(),
        tokens_per_prompt: meta["context_size"].as_u64().unwrap_or(0) as usize,
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    })
}

/// Progress bar over rows.
pub fn row_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} {{bar:30}} {{pos}}/{{len}} rows ({{per_sec}}, eta {{eta}})"
        ))
        .expect("the template is valid"),
    );
    bar
}

/// Opens an SAE and a harvested store (with its token provenance) and checks that the SAE reads
/// the store's rows.
pub fn open_sae_on_store(sae: &Path, store: &Path) -> Result<(Sae, Store, TokenTable)> {
    let model = sparsecode::sae::load(sae)?;
    let st = Store::open(store)?;
    let tokens = TokenTable::open(&st)?;
    let d_in = st.manifest().d_in;
    if model.d_in() != d_in {
        anyhow::bail!(
            "{}: the SAE reads {} values per row but the store {} has rows of {d_in}",
            sae.display(),
            model.d_in(),
            store.display()
        );
    }
    Ok((model, st, tokens))
}

/// The GGUF file behind a store, when it is a fetched model (SmolLM2 or Gemma 3): the same bytes
/// (the manifest's model SHA-256), not merely the same file name.
fn store_model(store: &Store) -> Option<PathBuf> {
    use sparsecode_harvest::assets::{path, Asset};
    let meta = &store.manifest().metadata;
    let want = meta["model_sha256"].as_str()?;
    // Only the fetched model of the file name the harvest recorded is hashed (every one when a
    // store records none).
    let file = meta["model_file"].as_str();
    [Asset::SmolLm2, Asset::Gemma3]
        .into_iter()
        .map(path)
        .filter(|p| p.exists() && file.is_none_or(|f| p.file_name().is_some_and(|n| n == f)))
        .find(|p| sparsecode::data::store::sha256_file(p).ok().as_deref() == Some(want))
}

fn read_scores(path: &Path, n: usize) -> Result<Vec<Option<f64>>> {
    let v: serde_json::Value = sparsecode::io::read_json(path)?;
    let mut out = vec![None; n];
    let list = v["sae"]["features"].as_array().with_context(|| {
        format!(
            "{}: no `sae.features` list (expected an `interp` scores.json)",
            path.display()
        )
    })?;
    for f in list {
        if let (Some(id), Some(s)) = (f["id"].as_u64(), f["correct"].as_f64()) {
            if (id as usize) < n {
                out[id as usize] = Some(s);
            }
        }
    }
    Ok(out)
}

pub fn run(a: Args, threads: usize) -> Result<Outcome> {
    let (sae, store, tokens) = open_sae_on_store(&a.io.sae, &a.io.store)?;
    let d_in = store.manifest().d_in;
    let par = Parallelism::Threads(threads);
    let encode = |x: &sparsecode::Matrix| Ok(sae.encode(x, par));
    let rows = a.io.max_rows.unwrap_or(u64::MAX).min(store.manifest().rows);
    let bar = row_bar(rows, "scanning");
    let scan = features::scan(
        &store,
        sae.d_sae(),
        Some(rows),
        8192,
        ScanConfig {
            par,
            ..ScanConfig::default()
        },
        &encode,
        None,
        &mut |done| bar.set_position(done),
    )?;
    bar.finish_and_clear();
    let unembed = match a.unembed.as_deref() {
        Some("none") => None,
        Some(p) => Some(PathBuf::from(p)),
        None => store_model(&store),
    };
    let logits = match unembed {
        Some(p) => {
            let spec = p.to_string_lossy();
            let Some(m) = sparsecode_harvest::models::Loaded::load(&spec)?.0.causal() else {
                anyhow::bail!("--unembed {spec}: not a causal language model (a .gguf file)");
            };
            if m.d_model() != d_in {
                anyhow::bail!(
                    "{}: width {} does not match the store's {d_in}",
                    p.display(),
                    m.d_model()
                );
            }
            let fx = m.logit_effects(sae.w_dec.as_slice(), 10)?;
            let tok = m.tokenizer();
            fx.into_iter()
                .map(|e| {
                    let name = |l: Vec<(u32, f32)>| {
                        l.into_iter()
                            .map(|(i, v)| (tok.token_text(i), v))
                            .collect::<Vec<_>>()
                    };
                    (name(e.up), name(e.down))
                })
                .collect()
        }
        None => Vec::new(),
    };
    let scores = match &a.scores {
        Some(p) => read_scores(p, sae.d_sae())?,
        None => Vec::new(),
    };
    let meta = &store.manifest().metadata;
    let input = DashboardInput {
        title: format!(
            "{} features of {} · {}",
            sae.d_sae(),
            meta["model_name"].as_str().unwrap_or("?"),
            meta["hook_name"].as_str().unwrap_or("?")
        ),
        subtitle: vec![
            format!("SAE {} ({:?})", a.io.sae.display(), sae.activation()),
            format!(
                "store {} ({} rows)",
                a.io.store.display(),
                store.manifest().rows
            ),
        ],
        scan: &scan,
        tokens: &tokens,
        decoder: &sae.w_dec,
        logits,
        scores,
        top_contexts: a.top,
        quantile_contexts: a.per_quantile,
        par,
        neuronpedia: if a.neuronpedia {
            Some(neuronpedia_meta(&a, &store, sae.d_sae())?)
        } else {
            None
        },
    };
    let summary = dashboard::write(&a.io.out, a.io.force, &input, &store, &encode)?;
    let mut record = sparsecode::io::record::provenance("dashboard");
    record["inputs"] = serde_json::json!({
        "sae": a.io.sae, "store": a.io.store, "rows_scanned": rows, "scores": a.scores,
        "unembed": input.logits.len() == sae.d_sae(),
    });
    record["config"] = serde_json::json!({ "top": a.top, "per_quantile": a.per_quantile });
    record["summary"] = serde_json::to_value(&summary)?;
    sparsecode::io::write_json_atomic(&summary.dir.join("dashboard.json"), &record)?;
    println!(
        "wrote {}: {} features, {} pages (open index.html)",
        summary.dir.display(),
        summary.features,
        summary.pages
    );
    Ok(Outcome::Ok)
}
