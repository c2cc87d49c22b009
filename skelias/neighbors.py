"""A simple, honest baseline: k-nearest-neighbour label voting on TF-IDF.

:class:`KNNLabelClassifier` ranks labels by the summed cosine similarity of the
training documents that carry them among the ``n_neighbors`` most similar
training documents. It has no learned index and no training beyond storing
the data; it exists as a reference point, not as the product.
"""

from __future__ import annotations

import numbers
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from ._base import TopKOutputMixin, fit_aside, pad_topk, require_fitted, store_params
from ._labels import LabelIndexer, as_targets, is_label_matrix, target_kind
from ._typing import InputLike, ScoreMatrix, TargetLike
from ._validation import HasMethods, Interval, apply_vectorizer, check_n_rows, check_X, default_vectorizer, positive_int
from .metrics import top_k

__all__ = ["KNNLabelClassifier"]


class KNNLabelClassifier(TopKOutputMixin, BaseEstimator):
    """k-nearest-neighbour label voting (a baseline, not ELIAS).

    Parameters
    ----------
    n_neighbors : int, default=30
        Training documents that vote for each query.
    k : int, default=5
        Labels returned per row by :meth:`predict`.
    power : float, default=2.0
        Votes are ``similarity ** power``: larger values favour the closest neighbours.
    vectorizer : TfidfVectorizer or None, default=None
        Used when ``X`` is raw text. ``None``: :func:`skelias.default_vectorizer` of the training
        texts (character 3–5-grams for short texts, word 1–2 grams otherwise).
    batch_size : int, default=1024
        Query rows scored at once (bounds memory to ``batch_size * n_train`` floats).

    Attributes
    ----------
    classes_ : ndarray of shape (n_labels,)
        Label of each column (column indices when fitted on an indicator matrix).
    vectorizer_ : TfidfVectorizer or None
        The fitted vectorizer when fitted on raw text.
    n_features_in_ : int
        Number of features of the (vectorised) input.

    Examples
    --------
    >>> from skelias import KNNLabelClassifier
    >>> texts = ["boil pasta in salted water", "bake bread with yeast", "pasta with tomato sauce",
    ...          "sourdough bread starter", "fresh egg pasta dough", "rye bread loaf"] * 20
    >>> tags = [["pasta"], ["bread"], ["pasta", "sauce"], ["bread"], ["pasta"], ["bread"]] * 20
    >>> knn = KNNLabelClassifier(n_neighbors=5).fit(texts, tags)
    >>> labels, scores = knn.predict_topk(["pasta with tomato sauce"], k=2)
    >>> sorted(labels[0])
    ['pasta', 'sauce']
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_neighbors": [positive_int],
        "k": [positive_int],
        "power": [Interval(numbers.Real, 0, None, closed="neither")],
        "vectorizer": [None, HasMethods(["fit", "transform"])],
        "batch_size": [positive_int],
    }

    def __init__(self, n_neighbors=30, k=5, power=2.0, vectorizer=None, batch_size=1024):
        store_params(self, locals())

    def _vectorize(self, kind, X):
        return normalize(sp.csr_matrix(apply_vectorizer(kind, X, self.vectorizer_), dtype=np.float32))

    def fit(self, X: InputLike, y: TargetLike) -> KNNLabelClassifier:
        """Store the normalised training documents and their labels.

        Parameters
        ----------
        X : list of str, or sparse matrix / ndarray of shape (n_samples, n_features)
        y : sparse matrix of shape (n_samples, n_labels), or sequence of label collections
            Indicator matrix or labels (see :class:`skelias.LabelIndexer`).

        Returns
        -------
        self
        """
        return fit_aside(self, type(self)._fit, X, as_targets(y))

    def _fit(self, X, y):
        self._validate_params()
        kind, X = check_X(X)
        self.label_indexer_ = LabelIndexer().fit(y)
        Ytr = self.label_indexer_.transform(y)
        check_n_rows(len(X) if kind == "text" else X.shape[0], Ytr.shape[0])
        if Ytr.nnz == 0:
            raise ValueError("Y has no positive label at all; there is nothing to learn.")
        self._fitted_on_matrix = is_label_matrix(y)
        self._y_kind = target_kind(y)
        if kind == "text":
            vec = self.vectorizer if self.vectorizer is not None else default_vectorizer(X)
            self.vectorizer_ = clone(vec).fit(X)
        else:
            self.vectorizer_ = None
        Xtr = self._vectorize(kind, X)
        self.n_features_in_ = Xtr.shape[1]
        self.classes_ = self.label_indexer_.classes_
        self.X_train_T_ = Xtr.T.tocsr()
        self.Y_train_ = Ytr
        return self

    def decision_function(self, X: InputLike) -> ScoreMatrix:
        """Label scores: summed ``similarity ** power`` of the neighbours carrying each label.

        Returns
        -------
        scores : (n_samples, n_labels) float32
            A CSR matrix holding only the labels of the neighbours, or a dense ndarray when fitted on a
            dense indicator matrix. Fitted on one label per row, the normalised votes of
            :meth:`predict_proba` (one column, ``P(classes_[1]) - P(classes_[0])``, for two classes).
        """
        kind = getattr(self, "_y_kind", "sparse")
        if kind == "1d":  # the multi-class convention (normalised votes; one column for two classes)
            return super().decision_function(X)
        S = self._vote_scores(X)
        return S.toarray() if kind == "dense" else S

    def _vote_scores(self, X):
        """The votes as a CSR matrix (n_samples, n_labels), float32."""
        check_is_fitted(self, "X_train_T_")
        kind, Xq = check_X(
            X, n_features=None if self.vectorizer_ is not None else self.n_features_in_, estimator_name=type(self).__name__
        )
        Xq = self._vectorize(kind, Xq)
        n_train = self.X_train_T_.shape[1]
        nn = min(self.n_neighbors, n_train)
        parts = []
        for start in range(0, Xq.shape[0], self.batch_size):
            sims = (Xq[start : start + self.batch_size] @ self.X_train_T_).toarray()
            idx, s = top_k(sims, nn)
            keep = s > 0
            rows = np.repeat(np.arange(sims.shape[0]), nn)[keep.ravel()]
            K = sp.csr_matrix(
                (np.power(s[keep], self.power).astype(np.float32), (rows, idx[keep])), shape=(sims.shape[0], n_train)
            )
            parts.append(K @ self.Y_train_)
        return sp.vstack(parts, format="csr").astype(np.float32)

    def predict_proba(self, X: InputLike) -> ScoreMatrix:
        """The votes divided by ``n_neighbors``: the similarity-weighted share of neighbours carrying each label.

        Values lie in [0, 1]; same form as :meth:`decision_function`. Fitted on one label per row, each
        row is normalised to sum to 1 (the multi-class convention).
        """
        if getattr(self, "_y_kind", "sparse") == "1d":
            return super().predict_proba(X)
        S = self.decision_function(X)
        return S * np.float32(1.0 / min(self.n_neighbors, self.X_train_T_.shape[1]))

    def _n_scored(self):
        return len(self.classes_)

    def _raw_topk(self, X, k):
        """(indices, scores) of the ``k`` best-voted labels; rows with fewer voted labels are padded."""
        require_fitted(self, "X_train_T_")
        S = self._vote_scores(X)
        return pad_topk(*top_k(S, min(k, S.shape[1])), k)
