"""``DictionaryLearning`` and ``MiniBatchDictionaryLearning`` with scikit-learn's parameters,
learned natively (alternating working-set FISTA coding and block-coordinate atom updates)."""

import json
import sys

import numpy as np

from . import _native
from ._arrays import as_matrix
from ._base import BASES
from ._coding import sparse_encode

# scikit-learn's fit algorithms both solve the lasso; so does the native FISTA.
_FIT_ALGORITHMS = ("lars", "cd", "fista")


def _seed(random_state):
    """An int seed from scikit-learn's ``random_state`` (None: 0, so fits are reproducible)."""
    if random_state is None:
        return 0
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    seed = int(random_state)
    if seed < 0:
        raise ValueError(f"random_state must be >= 0, got {random_state}")
    return seed


def _threads(n_jobs):
    return None if n_jobs is None or n_jobs < 0 else int(n_jobs)


class _DictionaryBase(*BASES):
    """What both learners share: parameter checks, ``transform``."""

    def _params(self, n_features, batch_size=None, max_iter=None, tol=None):
        """The native learner's parameters (JSON) for data of ``n_features`` columns."""
        if self.fit_algorithm not in _FIT_ALGORITHMS:
            raise ValueError(
                f"fit_algorithm '{self.fit_algorithm}': expected one of {', '.join(_FIT_ALGORITHMS)}"
            )
        if self.positive_dict:
            raise ValueError(
                "positive_dict=True is not supported: atoms are signed (positive_code is)"
            )
        alpha = float(self.alpha)
        if not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha}")
        n_components = self.n_components
        if n_components is None:
            n_components = n_features
        if int(n_components) < 1:
            raise ValueError(f"n_components must be >= 1, got {self.n_components}")
        params = {
            "atoms": int(n_components),
            "lambda": alpha,
            "nonneg": bool(self.positive_code),
            "max_iter": int(max_iter if max_iter is not None else self.max_iter),
            "tol": float(tol if tol is not None else self.tol),
            "seed": _seed(self.random_state),
            "restarts": int(self.n_restarts),
            "coder": {"type": "fista"},
            "update": "bcd",
            "batch_size": batch_size,
            "polish": 0,
            "swaps": 0,
        }
        if params["max_iter"] < 1:
            raise ValueError(f"max_iter must be >= 1, got {params['max_iter']}")
        return json.dumps(params)

    def _dict_init(self):
        if self.dict_init is None:
            return None
        return as_matrix(self.dict_init, "dict_init")

    def _check_fitted(self):
        if not hasattr(self, "components_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit")

    def transform(self, X):
        """Sparse codes of ``X`` against ``components_`` by ``transform_algorithm``
        (scikit-learn's names; see :func:`sparsecode.sparse_encode`)."""
        self._check_fitted()
        X = as_matrix(X, "X")
        alpha = self.transform_alpha if self.transform_alpha is not None else self.alpha
        codes = sparse_encode(
            X,
            self.components_,
            algorithm=self.transform_algorithm,
            n_nonzero_coefs=self.transform_n_nonzero_coefs,
            alpha=alpha,
            max_iter=self.transform_max_iter,
            n_jobs=self.n_jobs,
            positive=self.positive_code,
        )
        return _split_sign(codes) if self.split_sign else codes

    def _report(self, objective):
        if self.verbose:
            for i, obj in enumerate(objective):
                print(f"[sparsecode] iteration {i + 1}  objective {obj:.6g}", file=sys.stderr)


def _split_sign(codes):
    """scikit-learn's ``split_sign``: positive and negative parts side by side."""
    return np.hstack([np.maximum(codes, 0), -np.minimum(codes, 0)]).astype(np.float32)


class DictionaryLearning(_DictionaryBase):
    """Dictionary learning with scikit-learn's parameters and objective,

    ``min_{U, V} 1/2 ||X - U V||_F^2 + alpha ||U||_1,1`` with unit-norm atoms (rows of V),

    solved natively: codes by a working-set FISTA warm-started from the previous alternation
    (``fit_algorithm`` ``lars`` and ``cd`` both solve this lasso), atoms by block-coordinate
    descent on the sufficient statistics (Mairal et al. 2009), atoms no sample uses re-seeded
    from the worst-reconstructed samples.

    Parameters
    ----------
    n_components : int, optional
        Atoms (default: the number of features).
    alpha : float, default=1.0
        Sparsity weight.
    max_iter : int, default=1000
        Most alternations.
    tol : float, default=1e-8
        Stop when the objective changes by less than this, relatively.
    fit_algorithm : {"lars", "cd", "fista"}, default="lars"
        Accepted for compatibility: all three solve the same lasso (by FISTA).
    transform_algorithm : {"omp", "lasso_lars", "lasso_cd", "lars", "threshold", "fista"}
        How ``transform`` codes (default "omp", as scikit-learn).
    transform_n_nonzero_coefs, transform_alpha, transform_max_iter
        ``transform``'s parameters (``transform_alpha`` defaults to ``alpha``).
    n_jobs : int, optional
        Threads (default: all cores).
    code_init : ignored
        Accepted for compatibility (the first codes come from the first atoms).
    dict_init : array of shape (n_components, n_features), optional
        Starting atoms (rows scaled to unit norm).
    callback : ignored
        Accepted for compatibility; ``verbose`` prints the objective of every alternation.
    verbose : bool, default=False
    split_sign : bool, default=False
        ``transform`` returns the positive and negative parts side by side.
    random_state : int, RandomState or None
        Seed of the starting atoms (None: 0, reproducible).
    positive_code : bool, default=False
        Non-negative codes.
    positive_dict : bool, default=False
        Not supported (``ValueError`` when True).
    n_restarts : int, default=1
        Independent starts; the lowest final objective wins (sparsecode's extension).

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
    error_ : list of float
        The objective after every alternation.
    n_iter_ : int
    n_features_in_ : int
    """

    def __init__(
        self,
        n_components=None,
        *,
        alpha=1.0,
        max_iter=1000,
        tol=1e-8,
        fit_algorithm="lars",
        transform_algorithm="omp",
        transform_n_nonzero_coefs=None,
        transform_alpha=None,
        n_jobs=None,
        code_init=None,
        dict_init=None,
        callback=None,
        verbose=False,
        split_sign=False,
        random_state=None,
        positive_code=False,
        positive_dict=False,
        transform_max_iter=1000,
        n_restarts=1,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.tol = tol
        self.fit_algorithm = fit_algorithm
        self.transform_algorithm = transform_algorithm
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.transform_alpha = transform_alpha
        self.n_jobs = n_jobs
        self.code_init = code_init
        self.dict_init = dict_init
        self.callback = callback
        self.verbose = verbose
        self.split_sign = split_sign
        self.random_state = random_state
        self.positive_code = positive_code
        self.positive_dict = positive_dict
        self.transform_max_iter = transform_max_iter
        self.n_restarts = n_restarts

    def fit(self, X, y=None):
        """Learns the atoms from the rows of ``X``; returns ``self``."""
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        """Learns the atoms and returns the codes of ``X`` found while learning (as
        scikit-learn's ``fit_transform``)."""
        X = as_matrix(X, "X")
        params = self._params(X.shape[1])
        d, codes, objective = _native.learn_dictionary(
            X, params, self._dict_init(), _threads(self.n_jobs)
        )
        self.components_ = d
        self.error_ = list(objective)
        self.n_iter_ = len(objective)
        self.n_features_in_ = X.shape[1]
        self._report(objective)
        return _split_sign(codes) if self.split_sign else codes


class MiniBatchDictionaryLearning(_DictionaryBase):
    """Online dictionary learning (Mairal et al. 2009) with scikit-learn's parameters: the
    objective of :class:`DictionaryLearning`, learned from mini-batches whose statistics decay
    as newer batches arrive. ``fit`` makes ``max_iter`` shuffled passes over ``X``;
    ``partial_fit`` learns from one batch at a time (a stream that never sits in memory).

    Parameters are :class:`DictionaryLearning`'s, with ``batch_size`` (default 256),
    ``max_iter`` the passes over the data (default 10), ``tol`` the relative change of the
    objective between passes that stops ``fit`` (default 1e-3). ``shuffle`` (always on) and
    ``max_no_improvement`` are accepted for compatibility.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
    n_iter_ : int
        Passes (``fit``).
    n_steps_ : int
        Mini-batches learned from (``fit`` and ``partial_fit``).
    """

    def __init__(
        self,
        n_components=None,
        *,
        alpha=1.0,
        max_iter=10,
        fit_algorithm="lars",
        n_jobs=None,
        batch_size=256,
        shuffle=True,
        dict_init=None,
        transform_algorithm="omp",
        transform_n_nonzero_coefs=None,
        transform_alpha=None,
        verbose=False,
        split_sign=False,
        random_state=None,
        positive_code=False,
        positive_dict=False,
        transform_max_iter=1000,
        callback=None,
        tol=1e-3,
        max_no_improvement=10,
        n_restarts=1,
    ):
        self.n_components = n_components
        self.alpha = alpha
        self.max_iter = max_iter
        self.fit_algorithm = fit_algorithm
        self.n_jobs = n_jobs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.dict_init = dict_init
        self.transform_algorithm = transform_algorithm
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.transform_alpha = transform_alpha
        self.verbose = verbose
        self.split_sign = split_sign
        self.random_state = random_state
        self.positive_code = positive_code
        self.positive_dict = positive_dict
        self.transform_max_iter = transform_max_iter
        self.callback = callback
        self.tol = tol
        self.max_no_improvement = max_no_improvement
        self.n_restarts = n_restarts

    def fit(self, X, y=None):
        """``max_iter`` passes of mini-batches over ``X``; returns ``self``."""
        X = as_matrix(X, "X")
        batch = int(self.batch_size)
        if batch < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        params = self._params(X.shape[1], batch_size=min(batch, X.shape[0]))
        d, _, objective = _native.learn_dictionary(
            X, params, self._dict_init(), _threads(self.n_jobs)
        )
        self.components_ = d
        self.n_iter_ = len(objective)
        self.n_steps_ = len(objective) * -(-X.shape[0] // min(batch, X.shape[0]))
        self.n_features_in_ = X.shape[1]
        self._online = None
        self._report(objective)
        return self

    def partial_fit(self, X, y=None):
        """Learns from the mini-batch ``X`` (the first call starts the atoms from it, or from
        ``dict_init``); returns ``self``."""
        X = as_matrix(X, "X")
        if getattr(self, "_online", None) is None:
            self._online = _native.OnlineDictCore(
                self._params(X.shape[1], tol=0.0), _threads(self.n_jobs)
            )
            self.n_features_in_ = X.shape[1]
            # After fit, learning continues from the fitted atoms (as scikit-learn's does).
            start = self.components_ if hasattr(self, "components_") else self._dict_init()
            self._online.update(X, start)
        else:
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features but the dictionary was started on {self.n_features_in_}"
                )
            self._online.update(X)
        self.components_ = self._online.dictionary()
        self.n_steps_ = self._online.batches()
        return self
