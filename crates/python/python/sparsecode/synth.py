"""Planted superposition data with its ground truth (``sparsecode synth``)."""

import json
from collections import namedtuple

from . import _native

Superposition = namedtuple(
    "Superposition",
    ["X", "codes", "dictionary", "X_test", "codes_test", "noise_std"],
)
Superposition.__doc__ = """Generated data: activations ``X = codes @ dictionary`` (+ noise),
the true ``codes`` (n_samples, n_latents), the unit-norm ``dictionary`` (n_latents,
n_features), the held-out split (None without ``n_test``) and the noise's standard deviation."""

_MAGNITUDES = ("abs_normal", "uniform", "exponential", "constant", "signed_normal")


def superposition(
    n_latents=16,
    n_features=8,
    k=3,
    n_samples=1024,
    n_test=0,
    p=None,
    magnitude="abs_normal",
    snr_db=None,
    seed=0,
    parents=None,
    children=None,
    correlation=None,
    correlation_block=4,
):
    """Sparse latents in superposition: ``n_latents`` latents, ``k`` active per sample (or each
    with probability ``p``), projected by a random unit-norm dictionary into ``n_features``
    dimensions. The defaults are REFERENCE E2 (arXiv 2411.13117): N=16, M=8, K=3, |N(0,1)|.

    Parameters
    ----------
    n_latents, n_features, k, n_samples : int
        N, M, K and the number of training rows.
    n_test : int, default=0
        Held-out rows from the same process.
    p : float, optional
        Bernoulli support (each latent active with probability ``p``) instead of exactly ``k``.
    magnitude : {"abs_normal", "uniform", "exponential", "constant", "signed_normal"}
        Law of an active latent's value.
    snr_db : float, optional
        Additive Gaussian noise at this signal-to-noise ratio (None: noiseless).
    seed : int, default=0
    parents, children : int, optional
        A planted hierarchy: latents ``0..parents`` are parents, each with ``children``
        children after them that imply it (a child's rows also carry its parent); the pairs
        are ``[(p, parents + p * children + c) ...]``.
    correlation : float, optional
        Correlation in [0, 1) of the Gaussians that choose the supports, within blocks of
        ``correlation_block`` consecutive latents (marginal rates unchanged).

    Returns
    -------
    Superposition
        ``(X, codes, dictionary, X_test, codes_test, noise_std)``, float32.
    """
    if magnitude not in _MAGNITUDES:
        raise ValueError(f"magnitude '{magnitude}': expected one of {', '.join(_MAGNITUDES)}")
    support = {"type": "exact", "k": int(k)} if p is None else {"type": "bernoulli", "p": float(p)}
    cfg = {
        "latents": int(n_latents),
        "dims": int(n_features),
        "support": support,
        "magnitude": magnitude,
        "samples": int(n_samples),
        "test_samples": int(n_test),
        "snr_db": None if snr_db is None else float(snr_db),
        "seed": int(seed),
    }
    if (parents is None) != (children is None):
        raise ValueError("parents and children go together")
    if parents is not None:
        cfg["hierarchy"] = {"parents": int(parents), "children": int(children)}
    if correlation is not None:
        cfg["correlation"] = {"rho": float(correlation), "block": int(correlation_block)}
    d, x, z, xt, zt, noise = _native.superposition(json.dumps(cfg))
    return Superposition(x, z, d, xt, zt, noise)
