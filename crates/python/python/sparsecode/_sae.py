"""``SparseAutoencoder``: a scikit-learn-style estimator over the native trainer."""

import inspect

import numpy as np

from . import _native
from ._arrays import as_matrix


class _Params:
    """scikit-learn's parameter protocol, for when scikit-learn is not installed."""

    @classmethod
    def _param_names(cls):
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self, deep=True):
        """The constructor's parameters, by name."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Sets constructor parameters; unknown names raise ``ValueError``."""
        names = self._param_names()
        for key, value in params.items():
            if key not in names:
                raise ValueError(
                    f"Invalid parameter '{key}' for {type(self).__name__} (expected one of {names})"
                )
            setattr(self, key, value)
        return self


try:  # With scikit-learn, its own base classes (tags, repr, clone's checks).
    from sklearn.base import BaseEstimator, TransformerMixin

    _BASES = (TransformerMixin, BaseEstimator)
except ImportError:  # pragma: no cover - scikit-learn is a test dependency
    _BASES = (_Params,)


class SparseAutoencoder(*_BASES):
    """A sparse autoencoder trained natively (TopK with AuxK, or ReLU + L1).

    Follows scikit-learn's conventions: the constructor only stores its parameters, ``fit``
    returns ``self``, learned attributes end in ``_``, and ``get_params``/``set_params`` make
    ``sklearn.base.clone``, ``Pipeline`` and ``GridSearchCV`` work.

    Parameters
    ----------
    arch : {"topk", "relu"}
        Architecture.
    n_latents : int, optional
        Latents (default: 4 x the number of features).
    k : int, optional
        Active latents per sample (``topk``; default 8).
    l1 : float, optional
        L1 coefficient (``relu``; default 1e-3).
    n_steps : int, optional
        Training steps of ``fit`` (default 2000).
    batch_size : int, optional
        Rows per step (default 256, at most the number of rows).
    lr : float, optional
        Adam's learning rate (default 2e-3).
    seed : int
        Seed of the initialisation and the batch stream (same seed, same threads: same model).
    n_threads : int, optional
        Threads (default: all cores).
    sparse_output : bool
        ``transform`` returns a ``scipy.sparse`` CSR matrix.

    Attributes
    ----------
    components_ : ndarray of shape (n_latents, n_features)
        The decoder (one atom per row).
    n_features_in_ : int
        Features seen by ``fit``.
    n_steps_ : int
        Steps trained so far (``fit`` and ``partial_fit``).
    """

    def __init__(
        self,
        arch="topk",
        n_latents=None,
        k=None,
        l1=None,
        n_steps=None,
        batch_size=None,
        lr=None,
        seed=0,
        n_threads=None,
        sparse_output=False,
    ):
        self.arch = arch
        self.n_latents = n_latents
        self.k = k
        self.l1 = l1
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.n_threads = n_threads
        self.sparse_output = sparse_output

    def _new_core(self, n_features):
        n_latents = self.n_latents if self.n_latents is not None else 4 * n_features
        k = self.k if self.k is not None else 8
        l1 = self.l1 if self.l1 is not None else 1e-3
        if int(n_latents) < 1:
            raise ValueError(f"n_latents must be >= 1, got {self.n_latents}")
        return _native.SaeCore(
            self.arch,
            int(n_latents),
            int(k) if self.arch == "topk" else None,
            float(l1) if self.arch == "relu" else None,
            float(self.lr if self.lr is not None else 2e-3),
            int(self.batch_size if self.batch_size is not None else 256),
            int(self.seed),
            int(n_features),
            self.n_threads,
        )

    def _learned(self):
        # After an error before the first step there is nothing learned to expose.
        if self._core.steps() > 0:
            self.components_ = self._core.components()
            self.n_steps_ = self._core.steps()

    def fit(self, X, y=None):
        """Trains from scratch on the rows of ``X`` for ``n_steps`` steps; returns ``self``."""
        X = as_matrix(X, "X")
        self._core = self._new_core(X.shape[1])
        self.n_features_in_ = X.shape[1]
        try:
            self._core.fit(X, int(self.n_steps if self.n_steps is not None else 2000))
        finally:
            self._learned()
        return self

    def partial_fit(self, X, y=None, n_steps=1):
        """``n_steps`` more steps on the batch ``X`` (the first call starts the model)."""
        X = as_matrix(X, "X")
        if getattr(self, "_core", None) is None:
            self._core = self._new_core(X.shape[1])
            self.n_features_in_ = X.shape[1]
        try:
            self._core.partial_fit(X, int(n_steps))
        finally:
            self._learned()
        return self

    def _check_fitted(self):
        if getattr(self, "_core", None) is None:
            raise ValueError("this SparseAutoencoder is not fitted yet: call fit or partial_fit")

    def transform(self, X):
        """Codes of the rows of ``X`` (dense, or CSR with ``sparse_output=True``)."""
        self._check_fitted()
        codes = self._core.encode(as_matrix(X, "X"))
        if self.sparse_output:
            from scipy import sparse

            return sparse.csr_matrix(codes)
        return codes

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        """Reconstructions of the codes ``Z`` (dense or scipy.sparse)."""
        self._check_fitted()
        if hasattr(Z, "toarray"):
            Z = Z.toarray()
        return self._core.decode(as_matrix(Z, "Z"))

    def score(self, X, y=None):
        """Explained variance of the reconstruction of ``X``: ``1 - FVU``."""
        self._check_fitted()
        X = as_matrix(X, "X")
        recon = self._core.decode(self._core.encode(X))
        return 1.0 - _native.fvu(X, recon)

