"""ELIAS++'s score calibration (paper §3.5, App. D.2): a decision tree over (p, q, p·q, f_l)."""

from __future__ import annotations

import numbers
import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._base import TopKOutputMixin, base_candidates, check_fit_input
from ._labels import is_label_matrix
from .metrics import _check_k
from .rerank import SparseReranker, _is_fitted, _topk_of

__all__ = ["ScoreCalibrator"]


def _take(X, rows):
    return [X[i] for i in rows] if isinstance(X, list) else X[rows]


def _take_y(y, rows):
    if sp.issparse(y) or isinstance(y, np.ndarray):
        return y[rows]
    return [y[i] for i in rows]


class ScoreCalibrator(TopKOutputMixin, MetaEstimatorMixin, BaseEstimator):
    """Calibrate a re-ranker's scores with a decision tree learned on held-out data (ELIAS++).

    The wrapped estimator is fitted on the training rows minus a validation split. On
    every (validation row i, candidate label l) pair, a :class:`~sklearn.tree.DecisionTreeClassifier`
    T learns y_il from (p, q, p·q, f_l): p the base model's score, q the ranker's, f_l
    the label's training frequency. The final score is ``T(p, q, p·q, f_l) + p·q``
    (paper App. D.2).

    Parameters
    ----------
    estimator : estimator or None, default=None
        ``None``: ``SparseReranker()``. Anything with ``candidate_scores`` (p and q) or
        ``predict_topk`` (then q = p). Wrap a fitted model in
        :class:`sklearn.frozen.FrozenEstimator` to reuse it: all data given to :meth:`fit`
        is then the calibration set (like ``CalibratedClassifierCV`` with a frozen model).
    validation_size : int or float, default=5000
        Rows held out for the tree (an int, or a fraction in (0, 1)); capped at half the data.
    max_depth : int or None, default=5
    min_samples_leaf : int, default=100
    variant : {"paper", "reference"}, default="paper"
        ``"paper"``: features (p, q, p·q, f_l), score ``T + p·q``. ``"reference"``: the
        public code's features (p·q, p, f_l) and score ``0.3·T + 0.7·p·q``.
    k : int, default=5
    random_state : int, RandomState or None
        Seeds the split and the tree.
    verbose : int, default=0

    Attributes
    ----------
    estimator_ : the fitted wrapped estimator
    tree_ : DecisionTreeClassifier
    label_frequency_ : ndarray (n_labels,) float32
        f_l: positives of each label in the rows the wrapped estimator was fitted on (for a
        frozen estimator its ``label_frequency_`` when it has one, else the calibration rows').
    classes_ : ndarray (n_labels,)
    """

    def __init__(self, estimator=None, validation_size=5000, max_depth=5, min_samples_leaf=100, variant="paper", k=5,
                 random_state=None, verbose=0):
        self.estimator = estimator
        self.validation_size = validation_size
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.variant = variant
        self.k = k
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self):
        v = self.validation_size
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v <= 0 or (
            not isinstance(v, numbers.Integral) and v >= 1
        ):
            raise ValueError(f"validation_size must be an int >= 1 or a float in (0, 1); got {v!r}.")
        if self.variant not in ("paper", "reference"):
            raise ValueError(f"variant must be 'paper' or 'reference'; got {self.variant!r}.")
        _check_k(self.k)

    def _features(self, idx, p, q):
        f = np.where(idx >= 0, self.label_frequency_[np.maximum(idx, 0)], 0.0).astype(np.float32)
        if self.variant == "paper":
            return np.stack([p, q, p * q, f], axis=-1)
        return np.stack([p * q, p, f], axis=-1)

    def _scores(self, X):
        est = self.estimator_
        if hasattr(est, "candidate_scores"):
            return est.candidate_scores(X)
        n = getattr(est, "n_candidates", None) or getattr(est, "shortlist_size", None) or 100
        idx, p, _ = base_candidates(est, X, int(n), embeddings=False)
        p = np.where(idx >= 0, p, 0.0).astype(np.float32)
        return idx, p, p

    def fit(self, X, y):
        """Fit the wrapped estimator on a training split and the tree on the validation split.

        Parameters
        ----------
        X : list of str, or sparse matrix (n_samples, n_features)
        y : sparse indicator matrix (n_samples, n_labels) or sequence of label collections

        Returns
        -------
        self
        """
        self._check_params()
        _, Xc, n = check_fit_input(self, X, y)
        X = Xc
        rs = check_random_state(self.random_state)
        base = SparseReranker() if self.estimator is None else self.estimator
        self.estimator_ = clone(base)
        self.fit_time_ = {}
        t0 = time.perf_counter()
        if _is_fitted(self.estimator_):  # frozen: every row calibrates
            X_val, y_val = X, y
            Y_fit = None
        else:
            v = self.validation_size
            n_val = int(v) if isinstance(v, numbers.Integral) else round(v * n)
            n_val = min(n_val, n // 2)
            if n_val < 1:
                raise ValueError(f"validation_size gives {n_val} validation rows out of {n} samples; the calibrator "
                                 "needs at least 2 samples (one to fit on, one to calibrate on).")
            perm = rs.permutation(n)
            val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
            X_val, y_val = _take(X, val), _take_y(y, val)
            y_tr = _take_y(y, tr)
            self.estimator_.fit(_take(X, tr), y_tr)
            Y_fit = self.estimator_.label_indexer_.transform(y_tr)
        self.fit_time_["estimator"] = time.perf_counter() - t0
        self.label_indexer_ = self.estimator_.label_indexer_
        self.classes_ = self.estimator_.classes_
        self._fitted_on_matrix = is_label_matrix(y)
        with warnings.catch_warnings():  # validation labels the model never saw cannot be candidates anyway
            warnings.simplefilter("ignore", UserWarning)
            Y_val = self.label_indexer_.transform(y_val).tocsr()
        if Y_fit is not None:
            self.label_frequency_ = np.asarray(Y_fit.sum(axis=0), dtype=np.float32).ravel()
        elif getattr(self.estimator_, "label_frequency_", None) is not None:  # a frozen model's training counts
            self.label_frequency_ = np.asarray(self.estimator_.label_frequency_, dtype=np.float32)
        else:  # unknown: the calibration rows' counts
            self.label_frequency_ = np.asarray(Y_val.sum(axis=0), dtype=np.float32).ravel()
        t0 = time.perf_counter()
        idx, p, q = self._scores(X_val)
        valid = idx >= 0
        rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1]).reshape(idx.shape)
        target = np.asarray(Y_val[rows[valid], idx[valid]]).ravel() > 0
        if not target.any():
            raise ValueError("the validation rows have no positive (row, candidate label) pair, so the calibrator "
                             "has nothing to learn; use a larger validation_size or check the labels.")
        if target.all():
            raise ValueError("every validation candidate pair is positive; the calibrator needs negatives too.")
        self.tree_ = DecisionTreeClassifier(max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                                            random_state=rs.randint(2**31 - 1))
        self.tree_.fit(self._features(idx, p, q)[valid], target)
        self.fit_time_["tree"] = time.perf_counter() - t0
        self.n_features_in_ = getattr(self.estimator_, "n_features_in_", None)
        return self

    def _n_scored(self):
        return getattr(self.estimator_, "n_candidates", 100)

    def _raw_topk(self, X, k, embeddings=False):
        check_is_fitted(self, "tree_")
        idx, p, q = self._scores(X)
        valid = idx >= 0
        t = np.zeros(idx.shape, dtype=np.float32)
        if valid.any():
            t[valid] = self.tree_.predict_proba(self._features(idx, p, q)[valid])[:, 1]
        s = t + p * q if self.variant == "paper" else 0.3 * t + 0.7 * p * q
        return _topk_of(idx, s, k)
