//! `sparsecode harvest`: run a transformer over a text corpus and store the residual stream
//! after one layer, with the token, document and position of every row.

use super::store::DTypeArg;
use crate::Outcome;
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sparsecode::distributed::Transport;
use sparsecode::io::write_json_atomic;
use sparsecode_harvest::corpus::{InvalidUtf8, Utf8Report};
use sparsecode_harvest::harvest::{self, HarvestConfig, Part, Source};
use sparsecode_harvest::models::Loaded;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// `smollm2`, `gemma3`, `minilm`, a .gguf file or a BERT folder (fetched models:
    /// scripts/fetch-assets).
    #[arg(long, default_value = "smollm2")]
    model: String,
    /// A text file or folder of text files (default: the fetched State of the Union texts).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Read the residual stream after this block (0-based).
    #[arg(long)]
    layer: usize,
    /// Tokens per context (the model's BOS comes on top and is not stored).
    #[arg(long, default_value_t = 128)]
    context: usize,
    /// Tokens at the start of each context (after BOS) that are run but not stored (their
    /// outsized residual norms make features of their own).
    #[arg(long, default_value_t = 0)]
    exclude_positions: usize,
    /// Corpus files that are not UTF-8: `replace` invalid bytes with U+FFFD (the default: the
    /// harvest goes on, and harvest.json and a warning name the files), `skip` the files, or
    /// stop with an `error`.
    #[arg(long, value_enum, default_value = "replace")]
    invalid_utf8: Utf8Arg,
    /// Contexts per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Contexts per shard.
    #[arg(long, default_value_t = 256)]
    shard_contexts: usize,
    /// Stop after this many tokens (whole contexts); default: the whole corpus.
    #[arg(long)]
    max_tokens: Option<u64>,
    /// On-disk value type.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: DTypeArg,
    /// Seed of the context shuffle.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Harvest only part i of P (0-based, e.g. 0/4: a job array's task), to be joined with the
    /// others by `store merge`. Under mpirun/srun each rank takes its part and rank 0 joins them.
    #[arg(long)]
    part: Option<Part>,
    /// Output store folder (an interrupted harvest there is resumed).
    #[arg(long)]
    out: PathBuf,
}

/// `--invalid-utf8`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Utf8Arg {
    Error,
    Skip,
    Replace,
}

impl From<Utf8Arg> for InvalidUtf8 {
    fn from(a: Utf8Arg) -> Self {
        match a {
            Utf8Arg::Error => InvalidUtf8::Error,
            Utf8Arg::Skip => InvalidUtf8::Skip,
            Utf8Arg::Replace => InvalidUtf8::Replace,
        }
    }
}

/// One line on stderr when files were not UTF-8 (the full list is in harvest.json).
fn warn_utf8(r: &Utf8Report) {
    for (files, done) in [
        (&r.replaced, "read with U+FFFD for invalid bytes"),
        (&r.skipped, "skipped"),
    ] {
        if let Some(first) = files.first() {
            eprintln!(
                "warning: {} corpus file(s) not UTF-8, {done} (first: {first}; all in harvest.json)",
                files.len()
            );
        }
    }
}

/// Harvests into `--out`; with `ranks`, rank r harvests part r/P into `OUT.part-r-of-P` and
/// rank 0 joins the parts into `--out` once every rank finished (rerun to resume).
pub fn run(mut a: Args, threads: usize, ranks: Option<Box<dyn Transport>>) -> Result<Outcome> {
    let Some(mut t) = ranks else {
        return harvest_one(&a, threads);
    };
    if a.part.is_some() {
        bail!("--part splits a harvest into job-array tasks; under mpirun/srun every rank takes its own part");
    }
    let (rank, size) = (t.rank(), t.size());
    let parts: Vec<PathBuf> = (0..size)
        .map(|r| PathBuf::from(format!("{}.part-{r}-of-{size}", a.out.display())))
        .collect();
    let out = std::mem::replace(&mut a.out, parts[rank].clone());
    a.part = Some(Part {
        index: rank,
        count: size,
    });
    // A part finished by an earlier run of the job is kept.
    if !a.out.join(sparsecode::data::store::MANIFEST).exists() {
        harvest_one(&a, threads)?;
    }
    sparsecode::distributed::reduce::barrier(t.as_mut());
    if rank == 0 {
        let rows = sparsecode_harvest::merge::merge_parts(&parts, &out)?;
        for p in &parts {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
        }
        eprintln!("joined {size} parts into {}: {rows} rows", out.display());
    }
    sparsecode::distributed::reduce::barrier(t.as_mut());
    Ok(Outcome::Ok)
}

fn harvest_one(a: &Args, threads: usize) -> Result<Outcome> {
    let corpus = super::corpus_or_default(&a.corpus)?;
    let (model, file) = Loaded::load(&a.model)?;
    let cfg = HarvestConfig {
        layer: a.layer,
        context: a.context,
        exclude_positions: a.exclude_positions,
        invalid_utf8: a.invalid_utf8.into(),
        batch: a.batch,
        shard_contexts: a.shard_contexts,
        dtype: a.dtype.into(),
        max_tokens: a.max_tokens,
        threads,
        seed: a.seed,
        part: a.part,
    };
    let src = Source {
        model: model.residual_model(),
        tokenizer: model.tokenizer(),
        model_file: &file,
        corpus: &corpus,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tokens ({per_sec}, eta {eta}) {msg}",
        )
        .expect("the template is valid"),
    );
    let logged_to_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let summary = harvest::harvest(&src, &cfg, &a.out, &mut |p| {
        let total = (p.contexts_total * p.context) as u64;
        let done = (p.contexts_done * p.context) as u64;
        if bar.length() != Some(total) {
            bar.set_length(total);
            bar.reset_elapsed();
            bar.set_position(done);
            if p.resumed_from > 0 {
                bar.set_message(format!(
                    "resumed after {} tokens",
                    p.resumed_from * p.context
                ));
            }
        } else {
            bar.set_position(done);
            if !logged_to_terminal {
                // No bar off a terminal (nohup, CI): one line per shard instead.
                let fresh = done - (p.resumed_from * p.context) as u64;
                eprintln!(
                    "harvest: {done}/{total} tokens, {:.0} tokens/s since start",
                    fresh as f64 / started.elapsed().as_secs_f64().max(1e-9)
                );
            }
        }
    })
    .with_context(|| format!("harvest into {}", a.out.display()))?;
    bar.finish_and_clear();
    warn_utf8(&summary.invalid_utf8);
    let m = model.residual_model();
    println!(
        "harvested {} tokens of {} {} (d={}) into {} in {:.1} s: {:.0} tokens/s{}",
        summary.rows,
        m.name(),
        harvest::hook_name(a.layer),
        m.d_model(),
        a.out.display(),
        summary.seconds,
        summary.tokens_per_second,
        if summary.resumed_contexts > 0 {
            format!(
                " (resumed: {} contexts were on disk)",
                summary.resumed_contexts
            )
        } else {
            String::new()
        }
    );
    let mut record = sparsecode::io::record::provenance("harvest");
    record["config"] = serde_json::to_value(&cfg)?;
    record["threads"] = serde_json::json!(threads);
    record["model"] = serde_json::json!({ "spec": a.model, "file": file, "name": m.name() });
    record["corpus"] = serde_json::json!(corpus);
    record["metrics"] = serde_json::to_value(&summary)?;
    write_json_atomic(&a.out.join("harvest.json"), &record)?;
    Ok(Outcome::Ok)
}
