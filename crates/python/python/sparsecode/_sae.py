"""``SparseAutoencoder``: a scikit-learn-style estimator over the native trainer."""

import json
import operator
import os
import sys

from . import _native
from ._arrays import as_matrix
from ._base import BASES
from ._store import ActivationStore

_ARCHS = ("topk", "batchtopk", "matryoshka", "relu", "jumprelu", "gated", "mlp", "switch")


class SparseAutoencoder(*BASES):
    """A sparse autoencoder trained natively, by the same trainer and defaults as
    ``sparsecode train``: same data, seed and ``n_threads`` give the same model.

    Follows scikit-learn's conventions: the constructor only stores its parameters, ``fit``
    returns ``self``, learned attributes end in ``_``, and ``get_params``/``set_params`` make
    ``sklearn.base.clone``, ``Pipeline`` and ``GridSearchCV`` work. ``None`` leaves a choice to
    the library (the defaults of ``sparsecode train``, decided on the data).

    Parameters
    ----------
    arch : {"topk", "batchtopk", "matryoshka", "relu", "jumprelu", "gated", "mlp", "switch"}, default="topk"
        Architecture: TopK, BatchTopK or Matryoshka BatchTopK with AuxK, ReLU + L1 (SAELens
        "standard"), JumpReLU with an L0 penalty, Gated, an MLP encoder (ReLU + L1), or a
        Switch SAE (a router picks one of ``n_experts`` blocks of latents per sample, TopK
        within it).
    n_latents : int, optional
        Latents (default: 4 x the number of features).
    k : int, optional
        Active latents per sample (topk, switch; the batch mean for batchtopk and matryoshka;
        default 8).
    n_experts : int, optional
        Blocks of latents a Switch SAE routes among (switch; must divide ``n_latents``;
        default 8).
    lb_coef : float, optional
        Load-balancing coefficient of a Switch SAE (switch; library default 0.01).
    l1 : float, optional
        L1 coefficient on normalised inputs (relu, gated, mlp; library default 3.0).
    l0 : float, optional
        L0 coefficient (jumprelu; library default 0.1).
    aux_k : int, optional
        Dead latents AuxK uses (topk, batchtopk, matryoshka: default
        ``min(256, n_features / 2)``; switch: within each sample's expert, default 0; 0 off).
    hidden : int, optional
        Hidden width of the MLP encoder (mlp; default ``n_features``).
    prefixes : sequence of int, optional
        Nested prefix sizes, increasing (matryoshka; ``n_latents`` ends them; default
        ``n_latents // 64, // 16, // 4``).
    n_steps : int, optional
        Optimiser steps of ``fit`` (default: 100 passes over the data, 3,000 to 100,000 steps).
    epochs : float, optional
        Passes over the data instead of ``n_steps``.
    batch_size : int, optional
        Rows per step (default ``min(4096, n_samples)``).
    lr : float, optional
        Adam's peak learning rate (default ``2e-4 / sqrt(n_latents / 2**14)``).
    normalize : bool, default=True
        Scale inputs to ``E||x|| = sqrt(n_features)`` while training (SAELens'
        ``expected_average_only_in``); the fitted model reads raw inputs (the scale is folded in).
    seed : int, default=0
        Seed of the initialisation and the batch order.
    n_threads : int, optional
        Threads (default: all cores). Results are identical for the same seed and threads.
    sparse_output : bool, default=False
        ``transform`` returns a ``scipy.sparse`` CSR matrix.
    verbose : bool, default=False
        Print a line per logged step to standard error.
    callback : callable, optional
        Called with a dict per logged step (``step``, ``loss``, ``fvu``, ``l0``,
        ``dead_fraction``, ``lr``, ``samples``, ``elapsed_s``, ...); an exception it raises stops
        training after the current step and propagates.
    log_every : int, optional
        Steps between logged steps (default 100).

    Attributes
    ----------
    components_ : ndarray of shape (n_latents, n_features)
        The decoder (one unit-norm atom per row).
    intercept_ : ndarray of shape (n_features,)
        The decoder bias.
    n_features_in_ : int
        Features seen by ``fit``.
    n_steps_ : int
        Steps trained so far (``fit`` and ``partial_fit``).
    config_ : dict
        The resolved training configuration (every default filled in).

    Notes
    -----
    Inputs are converted once to float32 C-contiguous arrays (no conversion when they already
    are); the native side then takes one copy into its own matrix. Training releases the GIL
    and checks for Ctrl-C every 20 ms: ``KeyboardInterrupt`` stops ``fit`` after the current
    step, keeping what was learned.
    """

    def __init__(
        self,
        arch="topk",
        n_latents=None,
        k=None,
        n_experts=None,
        lb_coef=None,
        l1=None,
        l0=None,
        aux_k=None,
        hidden=None,
        prefixes=None,
        n_steps=None,
        epochs=None,
        batch_size=None,
        lr=None,
        normalize=True,
        seed=0,
        n_threads=None,
        sparse_output=False,
        verbose=False,
        callback=None,
        log_every=None,
    ):
        self.arch = arch
        self.n_latents = n_latents
        self.k = k
        self.n_experts = n_experts
        self.lb_coef = lb_coef
        self.l1 = l1
        self.l0 = l0
        self.aux_k = aux_k
        self.hidden = hidden
        self.prefixes = prefixes
        self.n_steps = n_steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.normalize = normalize
        self.seed = seed
        self.n_threads = n_threads
        self.sparse_output = sparse_output
        self.verbose = verbose
        self.callback = callback
        self.log_every = log_every

    # -- building the native model ------------------------------------------------------------

    def _request(self, n_features):
        """The parameters as the library's ``TrainRequest`` (JSON)."""
        if self.arch not in _ARCHS:
            raise ValueError(f"arch '{self.arch}': expected one of {', '.join(_ARCHS)}")
        n_latents = self.n_latents if self.n_latents is not None else 4 * n_features
        req = {
            "arch": self.arch,
            "latents": _count("n_latents", n_latents),
            "seed": _count("seed", self.seed, low=0),
            "threads": _threads(self.n_threads),
            "normalize": "expected_average_only_in" if self.normalize else "none",
        }
        if self.arch in ("topk", "batchtopk", "matryoshka", "switch"):
            req["k"] = _count("k", self.k if self.k is not None else 8)
        if self.arch == "switch":
            experts = self.n_experts if self.n_experts is not None else 8
            req["experts"] = _count("n_experts", experts)
            if self.lb_coef is not None:
                req["lb_coef"] = _number("lb_coef", self.lb_coef, float)
        optional = {
            "l1": (self.l1, float),
            "l0": (self.l0, float),
            "aux_k": (self.aux_k, int),
            "hidden": (self.hidden, int),
            "steps": (self.n_steps, int),
            "epochs": (self.epochs, float),
            "batch_size": (self.batch_size, int),
            "lr": (self.lr, float),
            "log_every": (self.log_every, int),
        }
        for key, (value, kind) in optional.items():
            if value is not None:
                req[key] = _number(key, value, kind)
        if self.prefixes is not None:
            if isinstance(self.prefixes, (str, bytes)) or not hasattr(self.prefixes, "__iter__"):
                raise ValueError(f"prefixes must be a sequence of integers, got {self.prefixes!r}")
            req["prefixes"] = [_count("prefixes", p) for p in self.prefixes]
        return json.dumps(req)

    def _progress(self):
        """The callback handed to the native trainer (None when nobody listens)."""
        if not self.verbose and self.callback is None:
            return None

        def on_log(line):
            record = json.loads(line)
            if self.verbose:
                print(
                    f"[sparsecode] step {record['step']}  loss {record['loss']:.4g}  "
                    f"fvu {record['fvu']:.4f}  l0 {record['l0']:.1f}  "
                    f"dead {record['dead_fraction']:.3f}  {record['elapsed_s']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            if self.callback is not None:
                self.callback(record)

        return on_log

    def _learned(self):
        # After an error before the first step there is nothing learned to expose.
        if self._core.steps() > 0 or getattr(self, "_loaded", False):
            self.components_ = self._core.components()
            self.intercept_ = self._core.decoder_bias()[0]
            self.n_steps_ = self._core.steps()
            config = self._core.config_json()
            self.config_ = json.loads(config) if config is not None else None

    # -- scikit-learn's protocol ----------------------------------------------------------------

    def fit(self, X, y=None):
        """Trains from scratch for ``n_steps`` steps; returns ``self``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or ActivationStore
            The activations. A store is streamed from disk (it may be larger than memory).
        y : ignored
        """
        if isinstance(X, ActivationStore):
            n_features = X.shape[1]
            self._core = _native.SaeCore(self._request(n_features))
            self._loaded = False
            self.n_features_in_ = n_features
            try:
                self._core.fit_store(os.fspath(X.path), X.verify_reads, self._progress())
            finally:
                self._learned()
            return self
        X = as_matrix(X, "X")
        self._core = _native.SaeCore(self._request(X.shape[1]))
        self._loaded = False
        self.n_features_in_ = X.shape[1]
        try:
            self._core.fit(X, self._progress())
        finally:
            self._learned()
        return self

    def partial_fit(self, X, y=None, n_steps=1):
        """``n_steps`` more steps on the batch ``X`` (the first call starts the model, with
        its input scale and defaults decided on this batch); returns ``self``.

        Meant for training straight from a model's forward hook, one batch at a time.
        """
        X = as_matrix(X, "X")
        if getattr(self, "_loaded", False):
            raise ValueError(
                "a loaded SparseAutoencoder has no optimiser state to continue: fit() trains a new one"
            )
        if getattr(self, "_core", None) is None:
            self._core = _native.SaeCore(self._request(X.shape[1]))
            self.n_features_in_ = X.shape[1]
        try:
            self._core.partial_fit(X, _count("n_steps", n_steps), self._progress())
        finally:
            self._learned()
        return self

    def _check_fitted(self):
        if getattr(self, "_core", None) is None or not hasattr(self, "components_"):
            raise ValueError("this SparseAutoencoder is not fitted yet: call fit or partial_fit")

    def transform(self, X):
        """Codes of the rows of ``X``: an array (n_samples, n_latents), or CSR with
        ``sparse_output=True``."""
        self._check_fitted()
        X = as_matrix(X, "X")
        if self.sparse_output:
            from scipy import sparse

            # Built from the selected latents: the dense (n_samples, n_latents) array is never
            # made, so wide SAEs transform many rows in little memory.
            data, indices, indptr = self._core.encode_csr(X)
            return sparse.csr_matrix(
                (data, indices, indptr), shape=(X.shape[0], self.components_.shape[0])
            )
        return self._core.encode(X)

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        """Reconstructions ``Z W_dec + b_dec`` of the codes ``Z`` (dense or scipy.sparse)."""
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

    # -- files ----------------------------------------------------------------------------------

    def save(self, path, format="saelens", overwrite=False):
        """Writes the model as an SAE folder, atomically.

        Parameters
        ----------
        path : str or os.PathLike
            The folder to create (refused when it exists, unless ``overwrite``).
        format : {"saelens", "sparsify"}, default="saelens"
            SAELens (``cfg.json`` + ``sae_weights.safetensors``; every architecture) or
            EleutherAI sparsify (``cfg.json`` + ``sae.safetensors``; TopK only). The input
            normalisation is folded into the weights: the folder reads raw activations.
        """
        self._check_fitted()
        self._core.save(os.fspath(path), format, bool(overwrite))

    @classmethod
    def load(cls, path, n_threads=None):
        """An SAE folder (SAELens or sparsify, told apart by content) as a fitted estimator.

        The loaded model encodes, decodes, scores and saves; it has no optimiser state, so
        ``partial_fit`` refuses it and ``fit`` trains a new model with its parameters.
        """
        core = _native.SaeCore.load(os.fspath(path), n_threads)
        d_in, n_latents, arch, k, n_experts = core.shape()
        est = cls(arch=arch, n_latents=n_latents, k=k, n_experts=n_experts, n_threads=n_threads)
        est._core = core
        est._loaded = True
        est.n_features_in_ = d_in
        est._learned()
        return est


def _count(name, value, low=1):
    """``value`` as an int >= ``low``, or ``ValueError`` naming the parameter."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # ints and numpy integers; not floats or strings
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}") from None
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return value


def _number(name, value, kind):
    if kind is int:
        return _count(name, value, low=0)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _threads(n_threads):
    if n_threads is None or n_threads == -1:
        return os.cpu_count() or 1
    return _count("n_threads", n_threads)
