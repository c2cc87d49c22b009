"""Ensembles of skelias models with different seeds (the paper's 3× ensemble)."""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._base import TopKOutputMixin, base_candidates, check_fit_input
from ._labels import LabelIndexer, is_label_matrix
from .metrics import _check_k, top_k

__all__ = ["TopKEnsemble"]


def _reseed(estimator, seed):
    """Set every ``random_state`` parameter of ``estimator`` (nested ones included) to ``seed``."""
    params = {k: seed for k in estimator.get_params(deep=True) if k == "random_state" or k.endswith("__random_state")}
    return estimator.set_params(**params)


class TopKEnsemble(TopKOutputMixin, MetaEstimatorMixin, BaseEstimator):
    """Average ``n_estimators`` copies of a model trained with different random seeds.

    Each member is a clone of ``estimator`` whose ``random_state`` parameters (nested
    ones too: initial clustering, initialisation, data order, validation split) get a
    different seed. A label's ensemble score is the mean of the members' scores over
    their top ``n_candidates`` (a member that does not rank the label contributes 0).
    Works around :class:`ELIASClassifier`, :class:`SparseReranker` and :class:`ScoreCalibrator`.

    Parameters
    ----------
    estimator : estimator or None, default=None
        ``None``: ``ELIASClassifier()``.
    n_estimators : int, default=3
    n_candidates : int, default=100
        Labels per row and member that enter the average.
    k : int, default=5
    random_state : int, RandomState or None
        Draws the members' seeds.

    Attributes
    ----------
    estimators_ : list of fitted members
    classes_ : ndarray (n_labels,)
        The union of the members' label spaces.
    """

    def __init__(self, estimator=None, n_estimators=3, n_candidates=100, k=5, random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.n_candidates = n_candidates
        self.k = k
        self.random_state = random_state

    def fit(self, X, y):
        """Fit every member on (X, y) with its own seed.

        Parameters
        ----------
        X : list of str, or sparse matrix (n_samples, n_features)
        y : sparse indicator matrix (n_samples, n_labels) or sequence of label collections

        Returns
        -------
        self
        """
        if not (isinstance(self.n_estimators, numbers.Integral) and self.n_estimators >= 1):
            raise ValueError(f"n_estimators must be an int >= 1; got {self.n_estimators!r}.")
        if not (isinstance(self.n_candidates, numbers.Integral) and self.n_candidates >= 1):
            raise ValueError(f"n_candidates must be an int >= 1; got {self.n_candidates!r}.")
        _check_k(self.k)
        check_fit_input(self, X, y)
        if self.estimator is None:
            from .elias import ELIASClassifier

            base = ELIASClassifier()
        else:
            base = self.estimator
        rs = check_random_state(self.random_state)
        seeds = rs.randint(2**31 - 1, size=self.n_estimators)
        self.estimators_ = [_reseed(clone(base), int(s)).fit(X, y) for s in seeds]
        self._fitted_on_matrix = is_label_matrix(y)
        spaces = [m.classes_ for m in self.estimators_]
        if self._fitted_on_matrix:
            self.label_indexer_ = LabelIndexer().fit(sp.csr_matrix((1, max(len(c) for c in spaces))))
        else:
            self.label_indexer_ = LabelIndexer(classes=np.concatenate(spaces)).fit([[]])
        self.classes_ = self.label_indexer_.classes_
        self._maps = [self.label_indexer_.indices_of(c) for c in spaces]
        self.n_features_in_ = getattr(self.estimators_[0], "n_features_in_", None)
        return self

    def _n_scored(self):
        return self.n_candidates * len(self.estimators_)

    def _raw_topk(self, X, k, embeddings=False):
        check_is_fitted(self, "estimators_")
        n_m = len(self.estimators_)
        rows, cols, vals = [], [], []
        for member, remap in zip(self.estimators_, self._maps):
            idx, s, _ = base_candidates(member, X, self.n_candidates, embeddings=False)
            keep = idx >= 0
            rows.append(np.nonzero(keep)[0])
            cols.append(remap[idx[keep]])
            vals.append(s[keep] / n_m)
        n = idx.shape[0]
        S = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                          shape=(n, len(self.classes_)), dtype=np.float32)  # duplicates are summed: the mean
        kk = min(k, S.shape[1])
        idx, top = top_k(S, kk)
        if kk < k:
            idx = np.hstack([idx, np.full((n, k - kk), -1)])
            top = np.hstack([top, np.full((n, k - kk), -np.inf, np.float32)])
        return idx, top
