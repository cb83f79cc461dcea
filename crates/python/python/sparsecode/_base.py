"""The estimators' base classes: scikit-learn's own when it is installed (tags, repr, clone's
checks), else a small stand-in with its parameter protocol."""

import inspect


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

    def fit_transform(self, X, y=None):
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)


try:
    from sklearn.base import BaseEstimator, TransformerMixin

    BASES = (TransformerMixin, BaseEstimator)
except ImportError:  # pragma: no cover - scikit-learn is a test dependency
    BASES = (_Params,)
