//! `sparsecode`: the command line. Each command parses flags into a validated library config,
//! calls the library, and renders progress and results. Errors print their chain and exit 2; a
//! failed quality gate (`--min-mcc`) exits 1.

mod commands;
mod progress;
mod ranks;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sparsecode",
    version,
    about = "Lift features out of superposition: sparse autoencoders, sparse coding, identifiability metrics"
)]
struct Cli {
    /// Threads for the kernels (results are identical for the same count). Default: all cores.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Most memory a command may allocate for buffers sized by its flags or inputs (e.g. 8G;
    /// default: the memory free now). Larger requests fail before any work.
    #[arg(long, global = true, value_parser = sparsecode::memory::parse_size)]
    memory_limit: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate synthetic superposition data with known ground truth.
    Synth(commands::synth::Args),
    /// Train a sparse autoencoder on activations.
    Train(Box<commands::train::Args>),
    /// Compute sparse codes with an SAE or a dictionary.
    Encode(commands::encode::Args),
    /// Measure reconstruction, sparsity and (with --truth) identifiability.
    Eval(commands::eval::Args),
    /// The whole job on an embedded default: plant features, recover them every way, compare.
    Demo(commands::demo::Args),
    /// Time training steps and encoders (medians after a warm-up).
    Bench(commands::bench::Args),
    /// Build, inspect and verify sharded activation stores.
    Store(commands::store::Args),
    /// Learn a dictionary by alternating sparse coding and atom updates.
    Learn(commands::learn::Args),
    /// Run one of the paper's experiments and write its tables and figures.
    Experiment(commands::experiment::Args),
    /// Run a transformer over text and store the residual stream after one layer.
    Harvest(commands::harvest::Args),
    /// Write a static HTML dashboard of an SAE's features on a harvested store.
    Dashboard(commands::dashboard::Args),
    /// Score features, neurons and random directions by word intrusion (MiniLM embeddings).
    Interp(commands::interp::Args),
    /// Show an SAE's latents on each token of a prompt, and steer the model along them.
    Inspect(commands::inspect::Args),
}

impl Command {
    /// The command's name on the command line.
    fn name(&self) -> &'static str {
        match self {
            Command::Synth(_) => "synth",
            Command::Train(_) => "train",
            Command::Encode(_) => "encode",
            Command::Eval(_) => "eval",
            Command::Demo(_) => "demo",
            Command::Bench(_) => "bench",
            Command::Store(_) => "store",
            Command::Learn(_) => "learn",
            Command::Experiment(_) => "experiment",
            Command::Harvest(_) => "harvest",
            Command::Dashboard(_) => "dashboard",
            Command::Interp(_) => "interp",
            Command::Inspect(_) => "inspect",
        }
    }
}

/// The most threads `--threads` accepts.
const MAX_THREADS: usize = 1024;

/// Outcome of a command that ran to the end.
pub enum Outcome {
    Ok,
    /// A quality gate failed: exit 1.
    GateFailed(String),
}

fn main() {
    let cli = Cli::parse();
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if !(1..=MAX_THREADS).contains(&threads) {
        eprintln!("error: invalid `--threads`: {threads} must be in 1..={MAX_THREADS}");
        std::process::exit(2);
    }
    sparsecode::memory::set_limit(cli.memory_limit);
    // MPI is initialised (and finalised) on this thread; the commands run on the pool below.
    let ranks = match ranks::Ranks::init() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let transport = ranks.transport();
    let single = match &cli.command {
        Command::Train(_)
        | Command::Harvest(_)
        | Command::Bench(_)
        | Command::Encode(_)
        | Command::Eval(_) => Ok(()),
        _ => ranks.refuse_if_many(cli.command.name()),
    };
    // The one thread knob: the command runs on a pool of exactly this many threads, and every
    // library entry point it calls runs its kernels on a pool of the same size.
    let par = sparsecode::Parallelism::threads(threads);
    let result = single.and_then(|()| {
        par.install(|| match cli.command {
            Command::Synth(a) => commands::synth::run(a),
            Command::Train(a) => commands::train::run(*a, threads, transport),
            Command::Encode(a) => commands::encode::run(a, threads, transport),
            Command::Eval(a) => commands::eval::run(a, threads, transport),
            Command::Demo(a) => commands::demo::run(a, threads),
            Command::Bench(a) => commands::bench::run(a, threads, transport),
            Command::Store(a) => commands::store::run(a),
            Command::Learn(a) => commands::learn::run(a, threads),
            Command::Experiment(a) => commands::experiment::run(a, threads),
            Command::Harvest(a) => commands::harvest::run(a, threads, transport),
            Command::Dashboard(a) => commands::dashboard::run(a, threads),
            Command::Interp(a) => commands::interp::run(a, threads),
            Command::Inspect(a) => commands::inspect::run(a, threads),
        })
    });
    match result {
        Ok(Outcome::Ok) => {}
        Ok(Outcome::GateFailed(why)) => {
            eprintln!("quality gate failed: {why}");
            ranks.exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ranks.exit(2);
        }
    }
}
