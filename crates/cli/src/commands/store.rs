//! `sparsecode store`: build, inspect and verify activation stores.

use crate::Outcome;
use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sparsecode::data::store::{default_shard_rows, import_files, Store, StoreDType};
use std::path::PathBuf;

#[derive(Clone, Copy, ValueEnum)]
pub enum DTypeArg {
    F32,
    F16,
    Bf16,
}

impl From<DTypeArg> for StoreDType {
    fn from(d: DTypeArg) -> Self {
        match d {
            DTypeArg::F32 => StoreDType::F32,
            DTypeArg::F16 => StoreDType::F16,
            DTypeArg::Bf16 => StoreDType::Bf16,
        }
    }
}

#[derive(Subcommand)]
pub enum Which {
    /// Build a store from .npy and safetensors files (streamed; inputs may exceed RAM).
    Create {
        /// Input files, all of the same row width.
        #[arg(long, required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// Output store folder.
        #[arg(long)]
        out: PathBuf,
        /// On-disk value type.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DTypeArg,
        /// Rows per shard (default: about 256 MiB per shard).
        #[arg(long)]
        shard_rows: Option<usize>,
        /// Tensor to read from safetensors inputs (default: their only 2-D tensor).
        #[arg(long)]
        tensor: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Print a store's manifest summary.
    Inspect {
        store: PathBuf,
        /// Print the whole manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute every shard's SHA-256 and compare with the manifest.
    Verify { store: PathBuf },
    /// Join the parts of a harvest (`harvest --part i/P`) into one store: the rows of a harvest
    /// made in one process.
    Merge {
        /// The part folders, each part once (any order).
        #[arg(required = true, num_args = 1..)]
        parts: Vec<PathBuf>,
        /// The joined store (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    which: Which,
}

pub fn run(a: Args) -> Result<Outcome> {
    match a.which {
        Which::Create {
            from,
            out,
            dtype,
            shard_rows,
            tensor,
            force,
        } => {
            let dtype = StoreDType::from(dtype);
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} rows ({per_sec})")
                    .expect("valid template"),
            );
            // Default shard size: ~256 MiB, computed once the width is known (first input).
            let width = first_width(&from, tensor.as_deref())?;
            let rows = shard_rows.unwrap_or_else(|| default_shard_rows(width, dtype));
            let m = import_files(
                &from,
                &out,
                dtype,
                rows,
                tensor.as_deref(),
                force,
                &mut |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                },
            )?;
            bar.finish_and_clear();
            eprintln!(
                "wrote {}: {} rows of width {} ({:?}) in {} shards",
                out.display(),
                m.rows,
                m.d_in,
                m.dtype,
                m.shards.len()
            );
        }
        Which::Inspect { store, json } => {
            let s = Store::open(&store)?;
            let m = s.manifest();
            if json {
                println!("{}", serde_json::to_string_pretty(m)?);
            } else {
                let bytes: u64 = m
                    .shards
                    .iter()
                    .map(|x| x.rows * (m.d_in * m.dtype.size()) as u64)
                    .sum();
                println!("store    {}", store.display());
                println!("rows     {}", m.rows);
                println!("d_in     {}", m.d_in);
                println!("dtype    {:?}", m.dtype);
                println!("shards   {}", m.shards.len());
                println!("data     {:.1} MiB", bytes as f64 / (1u64 << 20) as f64);
                println!("metadata {}", m.metadata);
            }
        }
        Which::Merge { parts, out } => {
            let rows = sparsecode_harvest::merge::merge_parts(&parts, &out)?;
            eprintln!(
                "wrote {}: {rows} rows from {} parts",
                out.display(),
                parts.len()
            );
        }
        Which::Verify { store } => {
            let s = Store::open(&store)?;
            s.verify()?;
            let tokens = sparsecode::data::tokens::verify_token_shards(&s)?;
            println!(
                "{}: {} shards verified ({} rows){}",
                store.display(),
                s.manifest().shards.len(),
                s.manifest().rows,
                if tokens > 0 {
                    format!(", and {tokens} token shards")
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(Outcome::Ok)
}

fn first_width(from: &[PathBuf], tensor: Option<&str>) -> Result<usize> {
    let first = from
        .first()
        .ok_or_else(|| anyhow::anyhow!("give at least one --from file"))?;
    if !first.exists() {
        anyhow::bail!("{}: no such file", first.display());
    }
    Ok(sparsecode::data::store::input_width(first, tensor)?)
}
