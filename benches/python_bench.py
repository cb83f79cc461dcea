"""The Python package from the user's side: the same training from Python and from the CLI, and
sparse_encode / DictionaryLearning / MiniBatchDictionaryLearning against scikit-learn's.

Run with the package installed (scripts/test.sh makes target/venv):
    target/venv/bin/python benches/python_bench.py [--bin target/release/sparsecode] [--rounds 3]
Prints a Markdown table per comparison: medians of alternating runs, ratios against the
baseline measured in the same run.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

import sparsecode as sc


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def alternate(rounds, **runs):
    """Runs each callable once per round, in turn; returns the times of each."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            times[name].append(timed(fn)[0])
    return times


def fmt(ts):
    return f"{statistics.median(ts):.3f} ({' '.join(f'{t:.3f}' for t in ts)})"


def bench_training(binary, rounds, threads):
    """Python fit against `sparsecode train`, both from a .npy file to a trained model."""
    data = sc.synth.superposition(
        n_latents=4096, n_features=256, k=16, n_samples=40_000, seed=1
    ).X
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npy")
        np.save(path, data)
        steps, latents, k = 150, 2048, 32
        args = ["--arch", "topk", "--latents", str(latents), "--k", str(k), "--steps", str(steps),
                "--seed", "3", "--threads", str(threads), "--checkpoint-every", "0"]
        counter = iter(range(10_000))
        inner = {"cli": [], "python": []}

        def cli():
            out = os.path.join(tmp, f"run{next(counter)}")
            subprocess.run([binary, "train", "--data", path, *args, "--out", out],
                           check=True, capture_output=True)
            with open(os.path.join(out, "run.json")) as f:
                inner["cli"].append(json.load(f)["timings"]["seconds_this_process"])

        def python():
            x = np.load(path)
            sae = sc.SparseAutoencoder(n_latents=latents, k=k, n_steps=steps, seed=3,
                                       n_threads=threads)
            inner["python"].append(timed(lambda: sae.fit(x))[0])

        times = alternate(rounds, cli=cli, python=python)
    ratio = statistics.median(times["python"]) / statistics.median(times["cli"])
    inner_ratio = statistics.median(inner["python"]) / statistics.median(inner["cli"])
    print("\n## Training from Python against the CLI\n")
    print(f"TopK, 40,000 x 256 planted rows, {latents} latents, k = {k}, {steps} steps, batch 4096, "
          f"{threads} threads; from the .npy file to a trained model (the CLI also starts a process, "
          "writes its run folder and measures the training data at the end).\n")
    print("| | seconds, median (runs) |\n|---|---|")
    print(f"| `sparsecode train` | {fmt(times['cli'])} |")
    print(f"| `SparseAutoencoder.fit` | {fmt(times['python'])} |")
    print(f"| Python / CLI | **{ratio:.3f}** |")
    print(f"| the CLI's training loop alone (run.json `seconds_this_process`) | {fmt(inner['cli'])} |")
    print(f"| `fit` alone (input checks, copy, scale estimate, training) | {fmt(inner['python'])} |")
    print(f"| `fit` / the CLI's training loop | **{inner_ratio:.3f}** |")


def bench_sparse_encode(rounds, threads):
    from sklearn.decomposition import sparse_encode as sk_encode

    rng = np.random.default_rng(0)
    atoms, features, samples = 512, 128, 2000
    d = rng.standard_normal((atoms, features)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    z = np.zeros((samples, atoms), np.float32)
    for r in range(samples):
        z[r, rng.choice(atoms, 8, replace=False)] = np.abs(rng.standard_normal(8)) + 0.5
    x = z @ d + 0.01 * rng.standard_normal((samples, features)).astype(np.float32)
    x64, d64 = x.astype(np.float64), d.astype(np.float64)
    print("\n## sparse_encode against scikit-learn's\n")
    print(f"{samples} rows of width {features}, {atoms} unit atoms, 8 active per row plus noise; "
          f"alpha 0.05 for the lasso, 8 atoms for OMP; n_jobs = {threads} on both sides "
          "(scikit-learn gets float64, its native precision).\n")
    print("| algorithm | sparsecode s | scikit-learn s | scikit-learn / sparsecode |\n|---|---|---|---|")
    for algorithm, kw in [("lasso_lars", {"alpha": 0.05}), ("lasso_cd", {"alpha": 0.05}),
                          ("omp", {"n_nonzero_coefs": 8})]:
        times = alternate(
            rounds,
            ours=lambda: sc.sparse_encode(x, d, algorithm=algorithm, n_jobs=threads, **kw),
            theirs=lambda: sk_encode(x64, d64, algorithm=algorithm, n_jobs=threads, **kw),
        )
        ratio = statistics.median(times["theirs"]) / statistics.median(times["ours"])
        print(f"| {algorithm} | {fmt(times['ours'])} | {fmt(times['theirs'])} | **{ratio:.1f}x** |")


def bench_dictionary_learning(rounds, threads):
    from sklearn import decomposition as sk

    data = sc.synth.superposition(n_latents=64, n_features=32, k=3, n_samples=4000, seed=2)
    x, x64 = data.X, data.X.astype(np.float64)
    common = dict(n_components=64, alpha=0.05, positive_code=True, random_state=0, n_jobs=threads)
    print("\n## Dictionary learning against scikit-learn's\n")
    print("Planted: 4,000 rows, 64 true atoms in 32 dimensions, 3 active per row (|N(0,1)|); "
          f"64 atoms, alpha 0.05, non-negative codes, n_jobs = {threads}. Quality: dictionary MCC "
          "against the true atoms, and code MCC of `fit_transform`'s codes (DictionaryLearning) "
          "or of lasso codes (MiniBatch).\n")
    print("| estimator | sparsecode s | scikit-learn s | ratio | sparsecode dict / code MCC | "
          "scikit-learn dict / code MCC |\n|---|---|---|---|---|---|")
    cases = [
        ("DictionaryLearning (100 alternations)",
         lambda: sc.DictionaryLearning(max_iter=100, tol=1e-6, **common),
         lambda: sk.DictionaryLearning(max_iter=100, tol=1e-6, fit_algorithm="cd", **common)),
        ("MiniBatchDictionaryLearning (10 passes, batch 256)",
         lambda: sc.MiniBatchDictionaryLearning(max_iter=10, batch_size=256, fit_algorithm="cd", **common),
         lambda: sk.MiniBatchDictionaryLearning(max_iter=10, batch_size=256, fit_algorithm="cd", **common)),
    ]
    for name, ours, theirs in cases:
        fitted = {}

        def run(key, make, arr):
            est = make()
            # DictionaryLearning returns the codes it learned with; MiniBatch is timed on fit
            # (its transform would be OMP, which takes no positive constraint).
            codes = est.fit_transform(arr) if "MiniBatch" not in name else est.fit(arr) and None
            fitted[key] = (est, codes)

        times = alternate(rounds, ours=lambda: run("ours", ours, x),
                          theirs=lambda: run("theirs", theirs, x64))
        quality = {}
        for key, (est, codes) in fitted.items():
            if "MiniBatch" in name:
                codes = sc.sparse_encode(x, est.components_.astype(np.float32),
                                         algorithm="lasso_cd", alpha=0.05, positive=True)
            quality[key] = (sc.metrics.dict_mcc(data.dictionary, est.components_),
                            sc.metrics.code_mcc(data.codes, codes))
        ratio = statistics.median(times["theirs"]) / statistics.median(times["ours"])
        q = {k: f"{a:.4f} / {b:.4f}" for k, (a, b) in quality.items()}
        print(f"| {name} | {fmt(times['ours'])} | {fmt(times['theirs'])} | **{ratio:.1f}x** | "
              f"{q['ours']} | {q['theirs']} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bin", default=os.path.join(root, "target", "release", "sparsecode"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["train", "encode", "dictionary"])
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    import sklearn

    print(f"{cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"numpy {np.__version__}, scikit-learn {sklearn.__version__}; {a.rounds} alternating rounds.")
    if a.only in (None, "train"):
        bench_training(a.bin, a.rounds, a.threads)
    if a.only in (None, "encode"):
        bench_sparse_encode(a.rounds, a.threads)
    if a.only in (None, "dictionary"):
        bench_dictionary_learning(a.rounds, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
