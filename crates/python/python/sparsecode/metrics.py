"""Interpretability metrics with the CLI's definitions (``sparsecode eval``).

Codes and dictionaries are arrays ``(n_samples, n_latents)`` and ``(n_atoms, n_features)``
(one atom per row, as ``components_``). Inputs are converted to float32.
"""

import numpy as np

from . import _native
from ._arrays import as_matrix


def fvu(X, X_hat):
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``."""
    return _native.fvu(as_matrix(X, "X"), as_matrix(X_hat, "X_hat"))


def l0(codes):
    """Mean number of non-zero codes per row."""
    return _native.l0(as_matrix(_dense(codes), "codes"))


def dead_fraction(codes):
    """Fraction of latents (columns) that are zero on every row."""
    return _native.dead_fraction(as_matrix(_dense(codes), "codes"))


def code_mcc(z_true, z_hat, n_jobs=None):
    """Code MCC: the mean absolute Pearson correlation between true code columns and the
    recovered columns matched to them one-to-one (Hungarian matching up to 4,096 columns,
    greedy above; an unmatched true latent counts 0)."""
    return _native.code_mcc(
        as_matrix(_dense(z_true), "z_true"), as_matrix(_dense(z_hat), "z_hat"), n_jobs
    )


def dict_mcc(d_true, d_hat, n_jobs=None):
    """Dictionary MCC: the mean |cosine| between true atoms and learned atoms matched to them
    one-to-one."""
    return _native.dictionary_match(as_matrix(d_true, "d_true"), as_matrix(d_hat, "d_hat"), n_jobs)[0]


def mmcs(d_true, d_hat, n_jobs=None):
    """Mean max cosine similarity: the mean over true atoms of the best |cosine| with any
    learned atom (atoms may be shared)."""
    return _native.dictionary_match(as_matrix(d_true, "d_true"), as_matrix(d_hat, "d_hat"), n_jobs)[1]


def recovered_at(d_true, d_hat, threshold=0.9, n_jobs=None):
    """Fraction of true atoms whose best |cosine| with a learned atom exceeds ``threshold``
    (the CLI reports 0.9 and 0.99)."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    best = _native.dictionary_match(as_matrix(d_true, "d_true"), as_matrix(d_hat, "d_hat"), n_jobs)[2]
    return float(np.mean(np.asarray(best) > float(threshold)))


def _dense(a):
    return a.toarray() if hasattr(a, "toarray") else a

