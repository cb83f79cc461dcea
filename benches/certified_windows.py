"""How many candidates per row the certified TopK encoder's bound leaves, by input precision.

Simulates `crates/sparsecode/src/sae/certified.rs` on the benchmark's start (unit-norm tied
weights, standard normal inputs, zero biases): rounds the weights and inputs to bfloat16, to
16-bit or to 8-bit integers (per-row power-of-two scales, as `linalg/int16.rs` does with 16), forms
the rigorous per-row bound `E` of certified.rs's module docs from the rounding residuals' norms,
and counts each row's candidates `s_j >= t0 - 2E`, `t0` the k-th largest maximum of the lane
groups certified.rs uses (and, for comparison, the row's exact k-th approximate value). The
approximate products are computed in float64 here, which the bound covers. bfloat16's and 16-bit
integers' counts can be checked against the Rust encoder's statistics (`bench train` reports no
such count; `crates/lab/examples/step_probe.rs` prints `certified_stats`); 8-bit integers have no
Rust kernel: this is the measurement that says whether one would pay.

Usage: python benches/certified_windows.py [--dims 768] [--latents 16384] [--k 32] [--rows 256]
"""
import argparse

import numpy as np

U = 2.0 ** -24
LANES = 16


def gamma(n):
    return n * U / (1 - n * U)


def bf16(a):
    """Round to nearest even bfloat16 (through float32)."""
    b = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32).astype(np.float64)


def integers(a, bits):
    """Round each row to `bits`-bit integers times a power-of-two scale covering its largest entry."""
    q = 2 ** (bits - 1) - 1
    big = np.abs(a).max(axis=1, keepdims=True)
    scale = 2.0 ** np.ceil(np.log2(np.maximum(big, 1e-30) / q))
    return np.clip(np.round(a / scale), -q, q) * scale


def group_kth(s, k):
    """The k-th largest of the row's lane-group maxima (chunks of 16 vectors, one group per lane)."""
    rows, n = s.shape
    whole = n - n % LANES
    v = s[:, :whole].reshape(rows, -1, LANES)
    chunks = -(-v.shape[1] // LANES)
    pad = np.full((rows, chunks * LANES, LANES), -np.inf)
    pad[:, : v.shape[1]] = v
    maxima = pad.reshape(rows, chunks, LANES, LANES).max(axis=2).reshape(rows, -1)
    if n > whole:
        tail = np.full((rows, LANES), -np.inf)
        tail[:, : n - whole] = s[:, whole:]
        maxima = np.concatenate([maxima, tail], axis=1)
    return -np.sort(-maxima, axis=1)[:, k - 1]


def windows(w, x, wh, xh, sum_error, k):
    m = w.shape[1]
    norms = lambda a: np.linalg.norm(a, axis=1)
    ew, wn, whn = norms(w - wh).max(), norms(w).max(), norms(wh).max()
    ex, xn, xhn = norms(x - xh), norms(x), norms(xh)
    e_dot = gamma(m) * wn * xn + ew * xn + wn * ex + ew * ex + sum_error * whn * xhn
    bound = e_dot + 2 * U * (wn * xn * (1 + gamma(m)) + e_dot)
    s = xh @ wh.T
    exact_kth = -np.sort(-s, axis=1)[:, k - 1]
    kept = s >= (group_kth(s, k) - 2 * bound)[:, None]
    best = (s >= (exact_kth - 2 * bound)[:, None]).sum(axis=1)
    top = np.argsort(-(x @ w.T), axis=1)[:, :k]
    assert kept[np.arange(len(x))[:, None], top].all(), "a reference top-k latent fell outside"
    return kept.sum(axis=1), best, bound


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dims", type=int, default=768)
    p.add_argument("--latents", type=int, default=16384)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--rows", type=int, default=256)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((a.latents, a.dims))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    x = rng.standard_normal((a.rows, a.dims))
    print(f"{a.dims} x {a.latents}, k {a.k}, {a.rows} rows; candidates per row (median, mean, max)")
    print("| inputs | bound E (median) | candidates, lane-group t0 | candidates, exact k-th t0 |")
    print("|---|---|---|---|")
    for name, wh, xh, sum_error in [
        ("bfloat16", bf16(w), bf16(x), gamma(2 * a.dims)),
        ("16-bit integers", integers(w, 16), integers(x, 16), gamma(2)),
        ("8-bit integers", integers(w, 8), integers(x, 8), gamma(2)),
    ]:
        groups, best, bound = windows(w, x, wh, xh, sum_error, a.k)
        fmt = lambda c: f"{np.median(c):.0f} / {c.mean():.0f} / {c.max()}"
        print(f"| {name} | {np.median(bound):.4f} | {fmt(groups)} | {fmt(best)} |")


if __name__ == "__main__":
    main()
