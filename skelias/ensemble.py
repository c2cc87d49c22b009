"""Ensembles of skelias models with different seeds (the paper's 3× ensemble)."""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import check_random_state

from ._base import TopKOutputMixin, base_candidates, check_fit_input, fit_aside, pad_topk, require_fitted, store_params
from ._labels import LabelIndexer, as_targets, is_label_matrix, target_kind
from ._typing import InputLike, TargetLike
from ._validation import HasMethods, positive_int
from .metrics import top_k

__all__ = ["TopKEnsemble", "average_topk"]


def _fit_member(member, X, y):
    return member.fit(X, y)


def average_topk(candidates, n_labels, k):
    """The top ``k`` labels by mean score over several models' candidate lists.

    A label's score is the mean of the members' scores, a member that does not rank the label
    contributing 0 (the averaging of :class:`TopKEnsemble`).

    Parameters
    ----------
    candidates : list of (indices, scores)
        Each member's candidates as ndarrays of shape (n_samples, k_m): column indices in a common
        label space (-1 = padding) and their scores (non-finite = padding).
    n_labels : int
        Size of the common label space.
    k : int
        Labels per row returned.

    Returns
    -------
    indices : ndarray (n_samples, k) int64, -1 for padding
    scores : ndarray (n_samples, k) float32, descending, -inf for padding
    """
    n_m = len(candidates)
    n = candidates[0][0].shape[0]
    rows, cols, vals = [], [], []
    for idx, s in candidates:
        keep = (idx >= 0) & np.isfinite(s)
        rows.append(np.nonzero(keep)[0])
        cols.append(idx[keep])
        vals.append(s[keep] / n_m)
    S = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n, n_labels), dtype=np.float32)  # duplicates are summed: the mean
    return pad_topk(*top_k(S, min(k, S.shape[1])), k)


def _reseed(estimator, seed):
    """Set every ``random_state`` parameter of ``estimator`` (nested ones included) to ``seed``.

    A ``FrozenEstimator`` member is used as it is (already fitted, never re-seeded).
    """
    from sklearn.frozen import FrozenEstimator

    if isinstance(estimator, FrozenEstimator):
        return estimator
    params = {k: seed for k in estimator.get_params(deep=True) if k == "random_state" or k.endswith("__random_state")}
    return estimator.set_params(**params) if params else estimator


class TopKEnsemble(TopKOutputMixin, MetaEstimatorMixin, BaseEstimator):
    """Average the top-k scores of several models: seed copies of one model, or different models.

    Each member is a clone of ``estimator`` (``n_estimators`` of them), or of each estimator of a list
    (heterogeneous members, e.g. an :class:`XRLinearClassifier` and an :class:`ELIASClassifier`); its
    ``random_state`` parameters (nested ones too: initial clustering, initialisation, data order,
    validation split) get a different seed. A label's ensemble score is the mean of the members' scores over
    their top ``n_candidates`` (a member that does not rank the label contributes 0).
    Works around :class:`ELIASClassifier`, :class:`SparseReranker` and :class:`ScoreCalibrator`.

    Parameters
    ----------
    estimator : estimator, list of estimators, or None, default=None
        The member model; ``None``: ``ELIASClassifier()``. A list: one member per entry.
    n_estimators : int, default=3
        Number of members when ``estimator`` is a single model (ignored for a list).
    n_candidates : int, default=100
        Labels per row and member that enter the average.
    k : int, default=5
        Labels per row returned by :meth:`predict`.
    random_state : int, RandomState or None, default=None
        Draws the members' seeds.
    n_jobs : int or None, default=None
        Members fitted in parallel (joblib's default backend: processes; a ``joblib.parallel_backend``
        context such as Dask's places them elsewhere). The members are the same for any ``n_jobs``.

    Attributes
    ----------
    estimators_ : list of fitted members
    classes_ : ndarray (n_labels,)
        The union of the members' label spaces.
    n_features_in_ : int or None
        Features of the first member's input.

    Examples
    --------
    >>> from skelias import KNNLabelClassifier, TopKEnsemble
    >>> from skelias.datasets import load_cooking_stackexchange
    >>> texts, tags = load_cooking_stackexchange("train")
    >>> ens = TopKEnsemble(KNNLabelClassifier(), n_estimators=2, random_state=0).fit(texts[:2000], tags[:2000])
    >>> labels, scores = ens.predict_topk(["How long should I boil an egg?"], k=3)
    >>> labels.shape, bool(scores[0, 0] >= scores[0, 1] >= scores[0, 2])
    ((1, 3), True)
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [None, HasMethods(["fit"]), list],
        "n_estimators": [positive_int],
        "n_candidates": [positive_int],
        "k": [positive_int],
        "random_state": ["random_state"],
        "n_jobs": [None, numbers.Integral],
    }

    def __init__(self, estimator=None, n_estimators=3, n_candidates=100, k=5, random_state=None, n_jobs=None):
        store_params(self, locals())

    def fit(self, X: InputLike, y: TargetLike) -> TopKEnsemble:
        """Fit every member on (X, y) with its own seed.

        Parameters
        ----------
        X, y :
            Training inputs and labels, as the member estimator's ``fit`` takes them.

        Returns
        -------
        self : TopKEnsemble
        """
        return fit_aside(self, type(self)._fit, X, as_targets(y))

    def _fit(self, X, y):
        self._validate_params()
        check_fit_input(self, X, y)
        if self.estimator is None:
            from .elias import ELIASClassifier

            bases = [ELIASClassifier()] * self.n_estimators
        elif isinstance(self.estimator, list):
            if not self.estimator or not all(hasattr(e, "fit") for e in self.estimator):
                raise ValueError("estimator, when a list, must hold at least one estimator (objects with fit).")
            bases = self.estimator
        else:
            bases = [self.estimator] * self.n_estimators
        rs = check_random_state(self.random_state)
        seeds = rs.randint(2**31 - 1, size=len(bases))
        self.estimators_ = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_member)(_reseed(clone(b), int(s)), X, y) for b, s in zip(bases, seeds, strict=True))
        self._fitted_on_matrix = is_label_matrix(y)
        self._y_kind = target_kind(y)
        self.label_indexer_ = LabelIndexer().fit(y)  # every member's label space is within y's
        self.classes_ = self.label_indexer_.classes_
        self._maps = [self.label_indexer_.indices_of(m.classes_) for m in self.estimators_]
        self.n_features_in_ = getattr(self.estimators_[0], "n_features_in_", None)
        return self

    def _n_scored(self):
        return self.n_candidates * len(self.estimators_)

    def _raw_topk(self, X, k, embeddings=False):
        require_fitted(self, "estimators_")
        candidates = []
        for member, remap in zip(self.estimators_, self._maps):
            idx, scores, _ = base_candidates(member, X, self.n_candidates, embeddings=False)
            candidates.append((np.where(idx >= 0, remap[np.maximum(idx, 0)], -1), scores))
        return average_topk(candidates, len(self.classes_), k)
