"""Interpretability metrics with the CLI's definitions (``sparsecode eval``)."""

from . import _native
from ._arrays import as_matrix


def fvu(X, X_hat):
    """Fraction of variance unexplained: ``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``."""
    return _native.fvu(as_matrix(X, "X"), as_matrix(X_hat, "X_hat"))


def l0(codes):
    """Mean number of non-zero codes per row."""
    return _native.l0(as_matrix(codes, "codes"))


def code_mcc(z_true, z_hat, n_jobs=None):
    """Matched mean absolute correlation between true and recovered code columns."""
    return _native.code_mcc(as_matrix(z_true, "z_true"), as_matrix(z_hat, "z_hat"), n_jobs)
