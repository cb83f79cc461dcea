"""sparsecode: lift features out of superposition (a Rust core, numpy in and out).

This first slice of the Python package (issue 14) offers :func:`sparse_encode` with
scikit-learn's signature and :mod:`sparsecode.metrics`; the estimators follow.
"""

from ._native import FormatError
from ._coding import sparse_encode
from ._sae import SparseAutoencoder
from . import metrics

__all__ = ["FormatError", "SparseAutoencoder", "sparse_encode", "metrics"]
