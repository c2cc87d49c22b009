"""Ensembles of skelias models with different seeds (the paper's 3× ensemble)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._base import TopKOutputMixin, base_candidates, check_fit_input, pad_topk
from ._labels import LabelIndexer, is_label_matrix
from ._validation import HasMethods, positive_int
from .metrics import top_k

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
        The member model; ``None``: ``ELIASClassifier()``.
    n_estimators : int, default=3
        Number of members.
    n_candidates : int, default=100
        Labels per row and member that enter the average.
    k : int, default=5
        Labels per row returned by :meth:`predict`.
    random_state : int, RandomState or None, default=None
        Draws the members' seeds.

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
    >>> texts = ["boil pasta in salted water", "bake bread with yeast", "pasta with tomato sauce",
    ...          "sourdough bread starter", "fresh egg pasta dough", "rye bread loaf"] * 20
    >>> tags = [["pasta"], ["bread"], ["pasta", "sauce"], ["bread"], ["pasta"], ["bread"]] * 20
    >>> ens = TopKEnsemble(KNNLabelClassifier(n_neighbors=5), n_estimators=2, random_state=0).fit(texts, tags)
    >>> labels, scores = ens.predict_topk(["pasta with tomato sauce"], k=2)
    >>> sorted(labels[0])
    ['pasta', 'sauce']
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [None, HasMethods(["fit"])],
        "n_estimators": [positive_int],
        "n_candidates": [positive_int],
        "k": [positive_int],
        "random_state": ["random_state"],
    }

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
        self._validate_params()
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
        return pad_topk(*top_k(S, min(k, S.shape[1])), k)
