"""ELIAS++'s score calibration (paper §3.5, App. D.2): a decision tree over (p, q, p·q, f_l)."""

from __future__ import annotations

import numbers
import time
import warnings
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import check_random_state

from ._auto import auto_refit
from ._base import (
    TopKOutputMixin,
    base_candidates,
    check_fit_input,
    fit_aside,
    is_fitted,
    require_fitted,
    store_params,
    topk_of,
)
from ._labels import as_targets, is_label_matrix, target_kind
from ._logging import logger, verbose_logging
from ._typing import InputLike, TargetLike
from ._validation import (
    HasMethods,
    Interval,
    RealNotInt,
    StrOptions,
    n_validation_rows,
    positive_int,
)
from .rerank import SparseReranker

__all__ = ["ScoreCalibrator", "auto_refit"]


def _candidates_of(estimator):
    """Candidates per row of a fitted wrapped estimator: its ``n_candidates`` (``n_candidates_`` for "auto")."""
    n = getattr(estimator, "n_candidates", None)
    if isinstance(n, str):
        n = getattr(estimator, "n_candidates_", None)
    return n if isinstance(n, numbers.Integral) else None


def _take(X, rows):
    return [X[i] for i in rows] if isinstance(X, list) else X[rows]


def _n_rows(y):
    return y.shape[0] if sp.issparse(y) or isinstance(y, np.ndarray) else len(y)


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
    (paper App. D.2). With ``refit``, the wrapped estimator is then fitted again on all
    rows, the held-out ones included, and the tree is kept.

    Parameters
    ----------
    estimator : estimator or None, default=None
        ``None``: ``SparseReranker()``. Anything with ``candidate_scores`` (p and q) or
        ``predict_topk`` (then q = p). Wrap a fitted model in
        :class:`sklearn.frozen.FrozenEstimator` to reuse it: all data given to :meth:`fit`
        is then the calibration set (like ``CalibratedClassifierCV`` with a frozen model).
    validation_size : int or float, default=5000
        Rows held out for the tree (an int, or a fraction in (0, 1)); capped at half the
        data, with a warning.
    refit : bool or "auto", default="auto"
        After the tree is learned, fit a fresh clone of the wrapped estimator on all rows given
        to :meth:`fit` (the validation split included) and keep the tree: the final model then
        learns from every row, at the cost of a second fit. f_l is then counted on all rows and
        scaled to the training split's size, so the tree's thresholds keep their meaning.
        ``"auto"``: refit below 20,000 rows (:func:`auto_refit`), where the split is a large
        share of the data and a second fit is cheap. A frozen estimator is never refitted
        (``refit=True`` with one is an error).
    max_depth : int or None, default=5
        Depth of the decision tree T.
    min_samples_leaf : int, default=100
        (row, candidate) pairs per leaf of T.
    variant : {"paper", "reference"}, default="paper"
        ``"paper"``: features (p, q, p·q, f_l), score ``T + p·q``. ``"reference"``: the
        public code's features (p·q, p, f_l) and score ``0.3·T + 0.7·p·q``.
    k : int, default=5
        Labels per row returned by :meth:`predict`.
    random_state : int, RandomState or None, default=None
        Seeds the split and the tree.
    verbose : int, default=0
        > 0: a log line for the calibration (and the wrapped estimator's own, per its ``verbose``).

    Attributes
    ----------
    estimator_ : the fitted wrapped estimator
    refit_ : bool
        Whether ``estimator_`` was refitted on all rows (``refit``, with ``"auto"`` resolved).
    tree_ : DecisionTreeClassifier
    label_frequency_ : ndarray (n_labels,) float32
        f_l: positives of each label in the rows the wrapped estimator was fitted on (for a
        frozen estimator its ``label_frequency_`` when it has one, else the calibration rows'; when
        refitted, all rows' counts × training-split rows / all rows).
    classes_ : ndarray (n_labels,)
        Label of each column.
    fit_time_ : dict
        Seconds in the wrapped estimator's fit, in the tree and (``refit_``) in the second fit.

    Examples
    --------
    >>> from skelias import KNNLabelClassifier, ScoreCalibrator, SparseReranker
    >>> texts = ["boil pasta in salted water", "bake bread with yeast", "pasta with tomato sauce",
    ...          "sourdough bread starter", "fresh egg pasta dough", "rye bread loaf"] * 20
    >>> tags = [["pasta", "italian"], ["bread"], ["pasta", "sauce"], ["bread", "baking"], ["pasta"], ["bread"]] * 20
    >>> ranker = SparseReranker(KNNLabelClassifier(n_neighbors=60), n_candidates=3)
    >>> model = ScoreCalibrator(ranker, validation_size=0.3, min_samples_leaf=5, random_state=0).fit(texts, tags)
    >>> labels, scores = model.predict_topk(["bread with yeast"], k=1)
    >>> labels[0, 0]
    'bread'
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [None, HasMethods(["fit"])],
        "validation_size": [Interval(numbers.Integral, 1, None, closed="left"),
                            Interval(RealNotInt, 0, 1, closed="neither")],
        "refit": ["boolean", StrOptions({"auto"})],
        "max_depth": [None, positive_int],
        "min_samples_leaf": [positive_int],
        "variant": [StrOptions({"paper", "reference"})],
        "k": [positive_int],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator=None, validation_size=5000, refit="auto", max_depth=5, min_samples_leaf=100,
                 variant="paper", k=5, random_state=None, verbose=0):
        store_params(self, locals())

    def _features(self, idx, p, q):
        f = np.where(idx >= 0, self.label_frequency_[np.maximum(idx, 0)], 0.0).astype(np.float32)
        if self.variant == "paper":
            return np.stack([p, q, p * q, f], axis=-1)
        return np.stack([p * q, p, f], axis=-1)

    def _scores(self, X, **predict_params):
        est = self.estimator_
        if hasattr(est, "candidate_scores"):
            return est.candidate_scores(X, **predict_params)
        n = _candidates_of(est) or getattr(est, "shortlist_size", None) or 100
        idx, p, _ = base_candidates(est, X, int(n), embeddings=False, **predict_params)
        p = np.where(idx >= 0, p, 0.0).astype(np.float32)
        return idx, p, p

    def fit(self, X: InputLike, y: TargetLike) -> ScoreCalibrator:
        """Fit the estimator on a training split and the tree on the rest; with ``refit``, the estimator on all rows.

        Parameters
        ----------
        X : list of str, or sparse matrix (n_samples, n_features)
            Training inputs; ``validation_size`` of them (all, for a frozen estimator) calibrate the tree.
        y : sparse indicator matrix (n_samples, n_labels) or sequence of label collections
            Relevant labels of each row.

        Returns
        -------
        self : ScoreCalibrator
            This estimator, fitted.
        """
        with verbose_logging(self.verbose):
            return fit_aside(self, type(self)._fit, X, as_targets(y))

    def _fit(self, X, y):
        self._validate_params()
        _, Xc, n = check_fit_input(self, X, y)
        X = Xc
        rs = check_random_state(self.random_state)
        base = SparseReranker() if self.estimator is None else self.estimator
        self.estimator_ = clone(base)
        self.fit_time_ = {}
        t0 = time.perf_counter()
        frozen = is_fitted(self.estimator_)
        if frozen and self.refit is True:
            raise ValueError("refit=True fits the wrapped estimator again on all rows, but it is already fitted "
                             "(frozen) and is used as is; pass an unfitted estimator, or refit=False.")
        self.refit_ = (not frozen) and (auto_refit(n) if self.refit == "auto" else bool(self.refit))
        if frozen:  # every row calibrates
            X_val, y_val = X, y
            Y_fit = None
        else:
            n_val = n_validation_rows(self.validation_size, n, max_fraction=0.5, needed_by="the calibrator")
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
        self._y_kind = target_kind(y)
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
        if target.all() or not target.any():
            warnings.warn(f"every validation (row, candidate label) pair is {'relevant' if target.all() else 'irrelevant'}"
                          ", so the calibrator learns a constant and the ranking follows the base scores; a larger "
                          "validation_size or more candidates (n_candidates) give it both kinds.", UserWarning,
                          stacklevel=3)
        self.tree_ = DecisionTreeClassifier(max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                                            random_state=rs.randint(2**31 - 1))
        self.tree_.fit(self._features(idx, p, q)[valid], target)
        self.fit_time_["tree"] = time.perf_counter() - t0
        if self.verbose:
            logger.info("calibrator: a depth-%s tree on %d (row, candidate) pairs, %.1f s", self.max_depth,
                        int(valid.sum()), self.fit_time_["tree"])
        if self.refit_:
            self._refit_estimator(base, X, y, n_split=n - _n_rows(y_val))
        self.n_features_in_ = getattr(self.estimator_, "n_features_in_", None)
        return self

    def _refit_estimator(self, base, X, y, n_split):
        """Replace ``estimator_`` by a clone fitted on all rows; f_l on all rows, scaled to ``n_split`` rows."""
        t0 = time.perf_counter()
        if self.verbose:
            logger.info("calibrator: refitting the wrapped estimator on all %d rows", _n_rows(y))
        self.estimator_ = clone(base).fit(X, y)
        self.label_indexer_ = self.estimator_.label_indexer_
        self.classes_ = self.estimator_.classes_
        Y = self.label_indexer_.transform(y)
        counts = np.asarray(Y.sum(axis=0), dtype=np.float64).ravel()
        self.label_frequency_ = (counts * (n_split / Y.shape[0])).astype(np.float32)
        self.fit_time_["refit"] = time.perf_counter() - t0

    def _n_scored(self):
        return _candidates_of(self.estimator_) or 100

    def _raw_topk(self, X, k, embeddings=False, **predict_params):
        require_fitted(self, "tree_")
        idx, p, q = self._scores(X, **predict_params)
        valid = idx >= 0
        t = np.zeros(idx.shape, dtype=np.float32)
        if valid.any():
            # float32 and C-contiguous as the tree needs: skip sklearn's per-call validation (felt in single queries)
            feats = np.ascontiguousarray(self._features(idx, p, q)[valid], dtype=np.float32)
            proba = self.tree_.predict_proba(feats, check_input=False)
            t[valid] = proba[:, 1] if proba.shape[1] == 2 else float(self.tree_.classes_[0])
        s = t + p * q if self.variant == "paper" else 0.3 * t + 0.7 * p * q
        return topk_of(idx, s, k)
