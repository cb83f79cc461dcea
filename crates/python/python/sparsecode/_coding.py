"""Sparse coding with scikit-learn's ``sparse_encode`` signature."""

import numpy as np

from . import _native
from ._arrays import as_matrix

# scikit-learn's algorithm names and the native coder that minimises the same objective.
_LASSO = ("lasso_lars", "lasso_cd", "fista")
_GREEDY = ("omp", "lars")


def sparse_encode(
    X,
    dictionary,
    *,
    gram=None,
    cov=None,
    algorithm="lasso_lars",
    n_nonzero_coefs=None,
    alpha=None,
    copy_cov=True,
    init=None,
    max_iter=1000,
    n_jobs=None,
    check_input=True,
    verbose=0,
    positive=False,
):
    """Sparse codes of the rows of ``X`` against the atoms (rows) of ``dictionary``.

    Same signature and objectives as ``sklearn.decomposition.sparse_encode``, so that changing
    the import is the whole migration.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    dictionary : array-like of shape (n_components, n_features)
        The atoms, one per row (scikit-learn's ``components_``).
    algorithm : {"lasso_lars", "lasso_cd", "fista", "omp", "lars", "threshold"}
        - ``lasso_lars``, ``lasso_cd``, ``fista``: ``1/2 ||x - z D||^2 + alpha ||z||_1`` per
          row, solved by FISTA on a working set with an exact KKT check;
        - ``omp``, ``lars``: at most ``n_nonzero_coefs`` atoms chosen greedily by orthogonal
          matching pursuit (scikit-learn's ``lars`` is least-angle regression stopped at that
          many atoms; OMP selects by the same correlations);
        - ``threshold``: ``sign(c) max(|c| - alpha, 0)`` with ``c = x D^T``.
    n_nonzero_coefs : int, optional
        Atoms per row for ``omp``/``lars`` (default ``max(n_features / 10, 1)``).
    alpha : float, optional
        Sparsity weight for the lasso and the threshold (default 1).
    max_iter : int, default=1000
        Most FISTA iterations per row.
    n_jobs : int, optional
        Threads (default: all cores).
    positive : bool, default=False
        Non-negative codes.
    gram, cov, copy_cov, init, check_input, verbose
        Accepted for compatibility; not needed.

    Returns
    -------
    ndarray of shape (n_samples, n_components), float32

    Raises
    ------
    ValueError
        Shapes that do not fit, NaN/Inf (naming the row), an unknown algorithm, a negative
        alpha.
    """
    X = as_matrix(X, "X")
    dictionary = as_matrix(dictionary, "dictionary")
    if X.shape[1] != dictionary.shape[1]:
        raise ValueError(
            f"X has {X.shape[1]} features but the dictionary's atoms have {dictionary.shape[1]}"
        )
    threads = None if n_jobs is None or n_jobs < 0 else int(n_jobs)
    if algorithm in _LASSO:
        a = 1.0 if alpha is None else float(alpha)
        if not np.isfinite(a) or a < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
        return _native.sparse_encode(
            X, dictionary, "fista", a, None, bool(positive), int(max_iter), threads
        )
    if algorithm in _GREEDY:
        if positive:
            raise ValueError(
                f"positive=True is not supported by algorithm '{algorithm}' (as in scikit-learn): "
                "use lasso_lars, lasso_cd or fista"
            )
        k = n_nonzero_coefs
        if k is None:
            k = max(X.shape[1] // 10, 1)
        if int(k) < 1:
            raise ValueError(f"n_nonzero_coefs must be >= 1, got {n_nonzero_coefs}")
        return _native.sparse_encode(
            X, dictionary, "omp", 0.0, int(k), bool(positive), int(max_iter), threads
        )
    if algorithm == "threshold":
        a = 1.0 if alpha is None else float(alpha)
        c = X @ dictionary.T
        codes = np.sign(c) * np.maximum(np.abs(c) - a, 0.0)
        if positive:
            codes = np.maximum(codes, 0.0)
        return codes.astype(np.float32, copy=False)
    raise ValueError(
        f"unknown algorithm '{algorithm}' (expected one of lasso_lars, lasso_cd, lars, omp, "
        "threshold, fista)"
    )
