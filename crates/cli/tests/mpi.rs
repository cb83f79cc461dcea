//! `train` under `mpirun` (feature `mpi`; CI installs Open MPI): two ranks on localhost.
#![cfg(feature = "mpi")]

mod common;
use common::ok;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `mpirun -np ranks sparsecode --threads 1 ARGS`, as root and with more ranks than cores.
fn mpirun(ranks: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "-np"])
        .arg(ranks.to_string())
        .arg(env!("CARGO_BIN_EXE_sparsecode"))
        .args(["--threads", "1"])
        .args(args);
    c
}

fn mpi_ok(ranks: usize, args: &[&str]) {
    let o = mpirun(ranks, args).output().expect("mpirun runs");
    assert!(
        o.status.success(),
        "mpirun -np {ranks} {args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Planted data: 6,000 rows of width 32 from 128 latents.
fn planted(dir: &Path) -> PathBuf {
    let out = dir.join("syn");
    ok(&[
        "synth",
        "--latents",
        "128",
        "--dims",
        "32",
        "--active",
        "4",
        "--samples",
        "6000",
        "--test-samples",
        "0",
        "--seed",
        "3",
        "--out",
        p(&out),
    ]);
    out.join("activations.npy")
}

fn train_args<'a>(data: &'a str, arch: &'a str, steps: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--arch",
        arch,
        "--k",
        "4",
        "--latents",
        "128",
        "--steps",
        steps,
        "--batch",
        "512",
        "--log-every",
        "20",
        "--checkpoint-every",
        "50",
        "--seed",
        "1",
        "--out",
        out,
    ]
}

/// The saved weights as floats (the safetensors header is the same for equal shapes).
fn weights(run: &Path) -> Vec<f32> {
    let bytes = std::fs::read(run.join("sae_weights.safetensors")).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn two_ranks_equal_one_process_and_repeat_exactly() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    for arch in ["topk", "batchtopk"] {
        let (one, two, again) = (
            t.path().join(format!("{arch}-one")),
            t.path().join(format!("{arch}-two")),
            t.path().join(format!("{arch}-again")),
        );
        ok(&train_args(p(&data), arch, "200", p(&one)));
        mpi_ok(2, &train_args(p(&data), arch, "200", p(&two)));
        mpi_ok(2, &train_args(p(&data), arch, "200", p(&again)));
        assert!(
            weights(&two) == weights(&again),
            "{arch}: a repeat at 2 ranks differs"
        );
        let (a, b) = (weights(&two), weights(&one));
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-3 * scale,
            "{arch}: 2 ranks off by {worst} (scale {scale})"
        );
        let record = std::fs::read_to_string(two.join("run.json")).unwrap();
        assert!(record.contains("\"ranks\": 2"), "{record}");
    }
}

/// The child processes of `parent` (the ranks under mpirun).
fn children(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // The parent pid is the 4th field, after the parenthesised command name.
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        if after.split_whitespace().nth(1) == Some(&parent.to_string()) {
            out.push(pid);
        }
    }
    out
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_killed_rank_ends_the_job_and_resume_continues_it() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let (full, killed) = (t.path().join("full"), t.path().join("killed"));
    let steps = "3000";
    mpi_ok(2, &train_args(p(&data), "topk", steps, p(&full)));

    let ckpt = PathBuf::from(format!(
        "{}.partial/checkpoint/state.json",
        killed.display()
    ));
    kill_a_rank_after_a_checkpoint(&train_args(p(&data), "topk", steps, p(&killed)), &ckpt);
    assert!(!killed.exists(), "a killed run never looks finished");
    // Resumed at the same number of ranks: the bytes of the uninterrupted run.
    mpi_ok(2, &["train", "--resume", p(&killed)]);
    assert!(
        weights(&killed) == weights(&full),
        "the resumed run differs"
    );
}

#[test]
fn resume_at_another_rank_count_continues_the_run() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let (two, mixed) = (t.path().join("two"), t.path().join("mixed"));
    mpi_ok(2, &train_args(p(&data), "topk", "3000", p(&two)));
    // One process trains to its first checkpoint and is killed there; two ranks finish it.
    let mut child = common::bin()
        .args(train_args(p(&data), "topk", "3000", p(&mixed)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = PathBuf::from(format!("{}.partial/checkpoint/state.json", mixed.display()));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ckpt.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !mixed.exists(),
        "killed before it finished (make the run longer)"
    );
    mpi_ok(2, &["train", "--resume", p(&mixed)]);
    // Over thousands of steps rounding differences grow in the weights (the sums group
    // differently at 1 and 2 ranks), so the run is compared by its logged losses: every step
    // logged, each close to the 2-rank run's.
    let (a, b) = (losses(&mixed), losses(&two));
    assert_eq!(
        a.iter().map(|r| r.0).collect::<Vec<_>>(),
        b.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 0.02 * y, "step {step}: loss {x} vs {y}");
    }
}

/// `(step, loss)` of every logged step.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn commands_that_do_not_run_across_ranks_refuse() {
    let o = mpirun(2, &["demo"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("`demo` does not run across processes"),
        "{err}"
    );
}

/// A harvest of MiniLM's layer 2 over the fetched Moby-Dick text into `out`, with `extra` flags.
fn harvest_args(moby: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "harvest",
        "--model",
        "minilm",
        "--layer",
        "2",
        "--context",
        "32",
        "--max-tokens",
        "2048",
        "--shard-contexts",
        "8",
        "--corpus",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(p(moby).into());
    v.extend(["--out".to_string(), p(out).into()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn manifest(store: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(store.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn harvest_parts_and_ranks_join_to_the_one_process_store() {
    let (Some(_), Some(moby)) = (
        common::asset("minilm/model.safetensors"),
        common::asset("text/moby-dick"),
    ) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let (one, joined, ranked) = (
        t.path().join("one"),
        t.path().join("joined"),
        t.path().join("ranked"),
    );
    let run_ok = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run_ok(harvest_args(&moby, &one, &[]));
    // Job-array parts, joined by `store merge`.
    let parts: Vec<PathBuf> = (0..3).map(|i| t.path().join(format!("part{i}"))).collect();
    for (i, dir) in parts.iter().enumerate() {
        run_ok(harvest_args(&moby, dir, &["--part", &format!("{i}/3")]));
    }
    ok(&[
        "store",
        "merge",
        p(&parts[2]),
        p(&parts[0]),
        p(&parts[1]),
        "--out",
        p(&joined),
    ]);
    assert_eq!(
        manifest(&joined),
        manifest(&one),
        "parts joined by store merge"
    );
    // Two ranks under mpirun.
    let args = harvest_args(&moby, &ranked, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mpi_ok(2, &args);
    assert_eq!(manifest(&ranked), manifest(&one), "two ranks under mpirun");
    for s in manifest(&one)["shards"].as_array().unwrap() {
        let f = s["file"].as_str().unwrap();
        assert!(std::fs::read(one.join(f)).unwrap() == std::fs::read(ranked.join(f)).unwrap());
    }
    ok(&["store", "verify", p(&ranked)]);
}

/// Starts `args` under `mpirun -np 2`, kills one rank once `run` has a block checkpoint, and
/// checks that the job ends with an error.
fn kill_a_rank_after_a_checkpoint(args: &[&str], ckpt: &Path) {
    let mut job = mpirun(2, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ckpt.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The last-started rank (not rank 0 necessarily: any rank's death must end the job).
    let victim = *children(job.id()).iter().max().expect("mpirun's ranks");
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let Some(status) = wait_for(&mut job, Duration::from_secs(30)) else {
        let _ = job.kill();
        panic!("the job still runs 30 s after a rank was killed");
    };
    assert!(!status.success(), "a job that lost a rank must fail");
}

#[test]
fn latent_sharded_training_resumes_exactly_and_only_at_its_rank_count() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let (one, full, killed) = (
        t.path().join("one"),
        t.path().join("full"),
        t.path().join("killed"),
    );
    ok(&train_args(p(&data), "topk", "200", p(&one)));
    let sharded = |steps: &'static str, out: &Path| -> Vec<String> {
        let mut v: Vec<String> = train_args(p(&data), "topk", steps, p(out))
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push("--shard-latents".into());
        v
    };
    let run = |v: Vec<String>| mpi_ok(2, &v.iter().map(String::as_str).collect::<Vec<_>>());
    run(sharded("200", &full));
    // The whole dictionary, trained as well as in one process (another initialisation).
    assert_eq!(weights(&full).len(), weights(&one).len());
    let fvu = |run: &Path| -> f64 {
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
        r["metrics"]["fvu"].as_f64().unwrap()
    };
    assert!(
        (fvu(&full) - fvu(&one)).abs() <= 0.1 * fvu(&one),
        "fvu {} vs {}",
        fvu(&full),
        fvu(&one)
    );
    // Killed after a checkpoint and resumed: the uninterrupted bytes.
    let (long_full, args) = (t.path().join("long"), sharded("3000", &killed));
    run(sharded("3000", &long_full));
    let ckpt = PathBuf::from(format!(
        "{}.partial/blocks/1-of-2/checkpoint/state.json",
        killed.display()
    ));
    kill_a_rank_after_a_checkpoint(&args.iter().map(String::as_str).collect::<Vec<_>>(), &ckpt);
    // At another rank count it is refused; at its own it continues.
    let resume = ["train", "--resume", p(&killed), "--shard-latents"];
    let o = mpirun(3, &resume).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("mpirun -np 2"), "{err}");
    mpi_ok(2, &resume);
    assert!(
        weights(&killed) == weights(&long_full),
        "the resumed sharded run differs"
    );
}

fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn encode_and_eval_split_the_rows_across_ranks() {
    let t = tempfile::tempdir().unwrap();
    let data = planted(t.path());
    let run = t.path().join("sae");
    ok(&train_args(p(&data), "topk", "100", p(&run)));
    // Encode: the codes of 3 ranks are the bytes of one process's.
    let (one, three) = (t.path().join("one.npy"), t.path().join("three.npy"));
    let encode = |out: &Path| {
        let args = [
            "encode",
            "--sae",
            p(&run),
            "--data",
            p(&data),
            "--out",
            p(out),
        ];
        args.map(str::to_string)
    };
    let args = encode(&one);
    ok(&args.each_ref().map(String::as_str));
    let args = encode(&three);
    mpi_ok(3, &args.each_ref().map(String::as_str));
    assert!(std::fs::read(&one).unwrap() == std::fs::read(&three).unwrap());
    let record = json_of(&std::fs::read_to_string(three.with_extension("json")).unwrap());
    assert_eq!(record["ranks"], 3);
    assert_eq!(record["codes"]["shape"], serde_json::json!([6000, 128]));
    // An existing output is refused, and left as it was.
    let before = std::fs::read(&three).unwrap();
    let o = mpirun(2, &args.each_ref().map(String::as_str))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("exists"));
    assert!(std::fs::read(&three).unwrap() == before);
    // Eval: the joined sums give one process's metrics.
    let eval = ["eval", "--sae", p(&run), "--data", p(&data), "--json"];
    let whole = json_of(&ok(&eval));
    let o = mpirun(2, &eval).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let split = json_of(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(split["ranks"], 2);
    assert_eq!(split["samples"], whole["samples"]);
    for key in [
        "mse",
        "fvu",
        "l0",
        "dead_fraction",
        "l1",
        "cosine",
        "l2_ratio",
    ] {
        let (a, b) = (split[key].as_f64().unwrap(), whole[key].as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "{key}: {a} vs {b}"
        );
    }
    assert_eq!(split["density_histogram"], whole["density_histogram"]);
    // The same rows as a store of 6 shards: parts that cross shard boundaries.
    let store = t.path().join("store");
    ok(&[
        "store",
        "create",
        "--from",
        p(&data),
        "--shard-rows",
        "1000",
        "--out",
        p(&store),
    ]);
    let from_store = ["eval", "--sae", p(&run), "--store", p(&store), "--json"];
    let o = mpirun(3, &from_store).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let split = json_of(&String::from_utf8_lossy(&o.stdout));
    for key in ["samples", "l0", "dead_fraction", "density_histogram"] {
        assert_eq!(split[key], whole[key], "{key}");
    }
    let (a, b) = (
        split["fvu"].as_f64().unwrap(),
        whole["fvu"].as_f64().unwrap(),
    );
    assert!((a - b).abs() <= 1e-9 * b, "fvu {a} vs {b}");
    let stored = t.path().join("stored.npy");
    let args = [
        "encode",
        "--sae",
        p(&run),
        "--store",
        p(&store),
        "--out",
        p(&stored),
    ];
    mpi_ok(2, &args);
    assert!(std::fs::read(&one).unwrap() == std::fs::read(&stored).unwrap());
    // Against a planted truth eval runs in one process.
    let truth = data.parent().unwrap();
    let mut with_truth = eval.to_vec();
    with_truth.extend(["--truth", p(truth)]);
    let o = mpirun(2, &with_truth).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--truth"), "{err}");
}
