"""ELIAS++'s score calibration (paper §3.5, App. D.2): a decision tree (boosted trees for feature matrices) over (p, q, p·q, f_l)."""

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

__all__ = ["BoostedTrees", "ScoreCalibrator", "auto_model", "auto_refit"]


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


def auto_model(kind):
    """``model="auto"``'s calibrator for an input ``kind``: ``"boosted"`` for a feature matrix, ``"tree"`` for texts.

    Without texts there is no pretrained encoder and no text vectorizer: the base model and the
    re-ranker both see only the given features, and the calibrator's combination of p, q and f_l
    carries more of the ranking; boosted trees learn a finer one than the paper's single tree
    (``docs/design.md``). Raw texts keep the paper's tree.

    Parameters
    ----------
    kind : {"text", "features"}
        What ``fit`` was given: raw texts or a feature matrix.

    Returns
    -------
    str

    Examples
    --------
    >>> from skelias.calibration import auto_model
    >>> auto_model("features"), auto_model("text")
    ('boosted', 'tree')
    """
    return "boosted" if kind == "features" else "tree"


#: ``model="boosted"``: scikit-learn ``HistGradientBoostingClassifier`` settings of the boosted calibrator
BOOSTED_PARAMS = {"max_iter": 50, "learning_rate": 0.1, "max_depth": 4, "max_leaf_nodes": 15}


class BoostedTrees:
    """Gradient-boosted trees, increasing in the given features, evaluated for every row and tree at once.

    Fitted with scikit-learn's ``HistGradientBoostingClassifier`` (:data:`BOOSTED_PARAMS`, binary
    log loss); every tree is then stored as a complete binary tree of the deepest tree's depth D (a
    leaf above depth D continues as splits that always go left), so a row's path is one index
    computation per level for all trees together — a few array operations per level instead of one
    call per tree (which would cost more than the rest of a single query's calibration).

    Parameters
    ----------
    monotonic : sequence of int
        Per feature: 1 the probability may only rise with it, 0 unconstrained (``monotonic_cst``).
    random_state : int or None, default=None

    Attributes
    ----------
    feature_ : ndarray (n_trees · (2**D − 1),) int32
        Split feature of each internal node, tree by tree in breadth-first order.
    threshold_ : ndarray (n_trees · (2**D − 1),) float64
        A row goes right when its feature is above it.
    value_ : ndarray (n_trees · 2**D,) float64
        Leaf values.
    depth_ : int
        D.
    n_trees_ : int
    baseline_ : float
        The raw score before the first tree.

    Examples
    --------
    >>> import numpy as np
    >>> from skelias.calibration import BoostedTrees
    >>> X = np.random.RandomState(0).rand(500, 2).astype(np.float32)
    >>> model = BoostedTrees([1, 0], random_state=0).fit(X, X[:, 0] > 0.5)
    >>> model.predict_proba(np.array([[0.9, 0.5], [0.1, 0.5]], dtype=np.float32)).round(1)
    array([1., 0.])
    """

    #: rows evaluated together in :meth:`predict_proba` (bounds its memory)
    chunk_rows = 1024

    def __init__(self, monotonic, random_state=None):
        self.monotonic = list(monotonic)
        self.random_state = random_state

    def fit(self, X, y):
        """Fit the trees on ``X`` (n, n_features) float32 and binary ``y`` (n,); returns self."""
        from sklearn.ensemble import HistGradientBoostingClassifier

        hgb = HistGradientBoostingClassifier(**BOOSTED_PARAMS, monotonic_cst=self.monotonic, early_stopping=False,
                                             random_state=self.random_state).fit(X, y)
        if len(hgb.classes_) == 1:  # one class only: a constant probability
            self.depth_, self.n_trees_ = 0, 0
            self.feature_, self.threshold_, self.value_ = np.zeros(0, np.int32), np.zeros(0), np.zeros(0)
            self.baseline_ = 30.0 if bool(hgb.classes_[0]) else -30.0
            return self
        trees = [predictor.nodes for round_ in hgb._predictors for predictor in round_]
        depth = max(int(nodes["depth"].max()) for nodes in trees)
        n_inner, n_leaves = 2**depth - 1, 2**depth
        feature = np.zeros((len(trees), n_inner), dtype=np.int32)
        threshold = np.full((len(trees), n_inner), np.inf)
        value = np.zeros((len(trees), n_leaves))
        for t, nodes in enumerate(trees):  # at fit time only: ≤ 2**D nodes a tree
            stack = [(0, 0, 0)]  # (node, position in the complete tree, level)
            while stack:
                node, pos, level = stack.pop()
                if nodes["is_leaf"][node]:
                    first = (pos + 1) * 2 ** (depth - level) - 1 - n_inner  # the leftmost leaf below pos
                    value[t, first:first + 2 ** (depth - level)] = nodes["value"][node]
                    continue
                feature[t, pos] = nodes["feature_idx"][node]
                threshold[t, pos] = nodes["num_threshold"][node]
                stack += [(int(nodes["left"][node]), 2 * pos + 1, level + 1),
                          (int(nodes["right"][node]), 2 * pos + 2, level + 1)]
        self.depth_, self.n_trees_ = depth, len(trees)
        self.feature_, self.threshold_, self.value_ = feature.ravel(), threshold.ravel(), value.ravel()
        self.baseline_ = float(np.ravel(hgb._baseline_prediction)[0])
        return self

    def predict_proba(self, X):
        """P(y = 1) of each row of ``X`` (n, n_features), shape (n,) float64."""
        X = np.asarray(X, dtype=np.float64)
        raw = np.full(X.shape[0], self.baseline_)
        n_inner = 2**self.depth_ - 1
        tree_inner = (np.arange(self.n_trees_) * n_inner).astype(np.int32)
        tree_leaf = (np.arange(self.n_trees_) * (n_inner + 1) - n_inner).astype(np.int32)
        for lo in range(0, X.shape[0], self.chunk_rows):
            cols = X[lo:lo + self.chunk_rows].T.ravel()  # feature-major: feature f of row r at f · m + r
            m = cols.size // max(X.shape[1], 1)
            at = np.zeros((m, self.n_trees_), dtype=np.int32)  # position in each complete tree
            rows = np.arange(m, dtype=np.int32)[:, None]
            for _ in range(self.depth_):
                node = at + tree_inner
                at = 2 * at + 1 + (cols[self.feature_[node] * m + rows] > self.threshold_[node])
            if self.n_trees_:
                raw[lo:lo + m] += self.value_[at + tree_leaf].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))


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
    model : {"auto", "tree", "boosted"}, default="auto"
        T itself. ``"tree"``: one :class:`~sklearn.tree.DecisionTreeClassifier` (the paper's).
        ``"boosted"``: :class:`BoostedTrees`, 50 gradient-boosted trees of depth ≤ 4 whose
        probability can only rise with p, q and p·q (``max_depth`` and ``min_samples_leaf`` are
        the single tree's). ``"auto"``: boosted when X is a feature matrix, the tree for raw
        texts (:func:`auto_model`). The value used is ``model_``.
    max_depth : int or None, default=5
        Depth of the decision tree T (``model="tree"``).
    min_samples_leaf : int, default=100
        (row, candidate) pairs per leaf of T (``model="tree"``).
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
    model_ : str
        ``"tree"`` or ``"boosted"`` (``model``, with ``"auto"`` resolved).
    refit_ : bool
        Whether ``estimator_`` was refitted on all rows (``refit``, with ``"auto"`` resolved).
    tree_ : DecisionTreeClassifier or BoostedTrees
        T (``model``).
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
        "model": [StrOptions({"auto", "tree", "boosted"})],
        "max_depth": [None, positive_int],
        "min_samples_leaf": [positive_int],
        "variant": [StrOptions({"paper", "reference"})],
        "k": [positive_int],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator=None, validation_size=5000, refit="auto", model="auto", max_depth=5,
                 min_samples_leaf=100, variant="paper", k=5, random_state=None, verbose=0):
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
        kind, Xc, n = check_fit_input(self, X, y)
        self.model_ = auto_model(kind) if self.model == "auto" else self.model
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
        seed = rs.randint(2**31 - 1)
        if self.model_ == "boosted":  # increasing in the scores, free in f_l
            self.tree_ = BoostedTrees([1, 1, 1, 0] if self.variant == "paper" else [1, 1, 0], random_state=seed)
        else:
            self.tree_ = DecisionTreeClassifier(max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                                                random_state=seed)
        self.tree_.fit(self._features(idx, p, q)[valid], target)
        self.fit_time_["tree"] = time.perf_counter() - t0
        if self.verbose:
            what = "boosted trees" if self.model_ == "boosted" else f"a depth-{self.max_depth} tree"
            logger.info("calibrator: %s on %d (row, candidate) pairs, %.1f s", what, int(valid.sum()),
                        self.fit_time_["tree"])
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
            if isinstance(self.tree_, BoostedTrees):
                t[valid] = self.tree_.predict_proba(feats)
            else:
                proba = self.tree_.predict_proba(feats, check_input=False)
                t[valid] = proba[:, 1] if proba.shape[1] == 2 else float(self.tree_.classes_[0])
        s = t + p * q if self.variant == "paper" else 0.3 * t + 0.7 * p * q
        return topk_of(idx, s, k)
