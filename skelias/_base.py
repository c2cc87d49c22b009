"""Shared pieces of the skelias estimators: top-k outputs and access to a base model's candidates."""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._validation import check_k, check_n_rows, check_X, topk_to_indicator

__all__ = [
    "TopKOutputMixin",
    "base_candidates",
    "check_fit_input",
    "check_y_given",
    "fit_aside",
    "is_fitted",
    "label_indices",
    "pad_topk",
    "store_params",
    "topk_of",
]


def store_params(estimator, init_locals):
    """Store every ``__init__`` argument as the attribute of the same name, unchanged (scikit-learn's rule).

    Called as ``store_params(self, locals())`` first thing in ``__init__``: no validation, no derived state.
    """
    for name, value in init_locals.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


#: private attributes that ``fit`` sets (besides the public ones ending with "_")
_PRIVATE_FITTED = frozenset({"_fitted_on_matrix", "_pretrained_dim", "_pretrained_dir", "_embedder", "_coef_t", "_maps",
                             "_n_bow"})


def _fitted_state(estimator):
    return {k: v for k, v in vars(estimator).items()
            if (k.endswith("_") and not k.startswith("__")) or k in _PRIVATE_FITTED}


def fit_aside(estimator, fit, *args, **kwargs):
    """Run ``fit(new, *args, **kwargs)`` on a shallow copy; replace ``estimator``'s fitted state only if it returns.

    A fit that raises, or is interrupted (``KeyboardInterrupt``), leaves a previously fitted estimator exactly
    as it was. Parameters and configuration (e.g. metadata requests) are shared with the copy, so a
    ``RandomState`` given as ``random_state`` is consumed as usual; the fitted state is the attributes whose
    names end with "_" and the private ones in ``_PRIVATE_FITTED``.

    Parameters
    ----------
    estimator : BaseEstimator
    fit : callable
        ``fit(estimator, *args, **kwargs)``, the function that does the work (e.g. ``type(est)._fit``).

    Returns
    -------
    estimator
    """
    new = copy.copy(estimator)
    for name in _fitted_state(new):
        delattr(new, name)
    fit(new, *args, **kwargs)
    for name in _fitted_state(estimator):
        delattr(estimator, name)
    vars(estimator).update(_fitted_state(new))
    return estimator


def check_y_given(estimator, y):
    """The error scikit-learn expects when a supervised estimator gets ``y=None``."""
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the target y is None.")


def check_fit_input(estimator, X, y):
    """Validate ``fit``'s (X, y) before any work: y given, X valid, same number of rows.

    Returns
    -------
    kind : "text" or "features"
    X : list of str or validated feature matrix
    n : int, number of samples
    """
    check_y_given(estimator, y)
    kind, Xc = check_X(X, estimator_name=type(estimator).__name__)
    n = len(Xc) if kind == "text" else Xc.shape[0]
    check_n_rows(n, y.shape[0] if hasattr(y, "shape") else len(y))
    return kind, Xc, n


def require_fitted(estimator, attribute):
    """``check_is_fitted(estimator, attribute)`` without its per-call tag lookups (prediction paths)."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
                             "appropriate arguments before using this estimator.")


def is_fitted(estimator):
    """True for a fitted estimator; False for an unfitted one or for an object that is not an estimator."""
    try:
        check_is_fitted(estimator)
        return True
    except (NotFittedError, TypeError):
        return False


def pad_topk(indices, scores, k):
    """Widen (n, k') top-k arrays to (n, k) with index ``-1`` and score ``-inf``; k' ≥ k leaves them as they are.

    Returns
    -------
    indices : ndarray (n, max(k, k')) int64
    scores : ndarray (n, max(k, k')), the dtype of ``scores``
    """
    indices = np.asarray(indices, dtype=np.int64)
    scores = np.asarray(scores)
    missing = k - indices.shape[1]
    if missing <= 0:
        return indices, scores
    n = indices.shape[0]
    return (np.hstack([indices, np.full((n, missing), -1, dtype=np.int64)]),
            np.hstack([scores, np.full((n, missing), -np.inf, dtype=scores.dtype)]))


def topk_of(indices, scores, k):
    """Sort candidate (indices, scores) by descending score and keep ``k`` per row (pad -1 / -inf).

    Padding candidates (index -1) never rank above a real one; ties keep the candidates' order.
    """
    s = np.where(indices >= 0, scores, -np.inf).astype(np.float32)
    kk = min(k, s.shape[1])
    order = np.argsort(-s, axis=1, kind="stable")[:, :kk]
    idx = np.take_along_axis(indices, order, 1)
    top = np.take_along_axis(s, order, 1)
    return pad_topk(np.where(np.isneginf(top), -1, idx), top, k)


class TopKOutputMixin:
    """``predict_topk``, ``predict``, ``predict_proba``/``decision_function`` and ``score`` from ``_raw_topk``.

    A subclass implements ``_raw_topk(X, k) -> (indices (n, k) int64 with -1 padding,
    scores (n, k) float32 descending with -inf padding)`` and ``_n_scored()``, the number
    of labels per row it scores (the width of :meth:`predict_proba`), and sets
    ``label_indexer_``, ``classes_`` and ``_fitted_on_matrix`` in ``fit``.
    """

    def predict_topk(self, X, k=None):
        """Top-``k`` labels and their scores per row.

        Parameters
        ----------
        X : list of str, or sparse matrix (n_samples, n_features)
            Inputs of the kind the model was fitted on.
        k : int, optional
            Labels per row; defaults to the ``k`` parameter and is capped at the number of labels.

        Returns
        -------
        labels : ndarray (n_samples, min(k, n_labels))
            Label names (``classes_`` values; padding ``None``/``-1``), or column
            indices when fitted on an indicator matrix.
        scores : ndarray (n_samples, min(k, n_labels)) float32, descending; ``-inf`` at padding.
        """
        require_fitted(self, "classes_")
        k = min(check_k(self.k if k is None else k), len(self.classes_))
        idx, scores = self._raw_topk(X, k)
        if self._fitted_on_matrix:
            return idx, scores
        return self.label_indexer_.inverse_transform(idx), scores

    def predict_proba(self, X):
        """Scores of each row's scored labels as a CSR matrix (n_samples, n_labels), float32.

        Labels outside a row's candidate set are not stored (score 0).
        """
        check_is_fitted(self)
        idx, scores = self._raw_topk(X, self._n_scored())
        keep = idx >= 0
        rows = np.repeat(np.arange(idx.shape[0]), idx.shape[1])[keep.ravel()]
        return sp.csr_matrix((scores[keep], (rows, idx[keep])), shape=(idx.shape[0], len(self.classes_)),
                             dtype=np.float32)

    def decision_function(self, X):
        """Same as :meth:`predict_proba` (scores are in [0, 1] but not calibrated probabilities)."""
        return self.predict_proba(X)

    def predict(self, X):
        """CSR indicator (n_samples, n_labels), float32, of each row's top ``k`` labels."""
        idx, _ = self._raw_topk(X, check_k(self.k))
        return topk_to_indicator(idx, len(self.classes_))

    def score(self, X, y):
        """Precision@1 on (X, y); labels unknown to the model count as misses."""
        from .metrics import precision_at_k_scorer

        return precision_at_k_scorer(1)(self, X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # sparse feature matrices (e.g. from a TfidfVectorizer) are accepted
        tags.target_tags.required = True
        return tags


def label_indices(estimator, labels):
    """Column indices (-1 for padding) of ``predict_topk`` labels in ``estimator.classes_``."""
    return estimator.label_indexer_.indices_of(labels)


def base_candidates(estimator, X, k, embeddings=True, tfidf=None):
    """A fitted base model's top-``k`` candidates for ``X`` (and its embeddings φ(X)).

    Uses the base's private one-pass ``_raw_topk(X, k, embeddings=True)`` when it has one
    (ELIASClassifier: candidates and φ from a single forward pass), else ``predict_topk``
    and ``transform``. ``tfidf``: the base's own ``vectorizer_.transform(X)`` when the caller
    has already computed it (raw texts; saves a second TF-IDF pass per call).

    Returns
    -------
    indices : ndarray (n, k) int64, -1 for padding
    scores : ndarray (n, k) float32, -inf for padding
    emb : ndarray (n, d) float32 or None (when ``embeddings`` is False or the base has no ``transform``)
    """
    check_is_fitted(estimator)
    if hasattr(estimator, "_raw_topk"):
        extra = {} if tfidf is None else {"tfidf": tfidf}
        if embeddings:
            try:
                return estimator._raw_topk(X, k, embeddings=True, **extra)
            except TypeError:  # a _raw_topk without embeddings
                pass
        try:
            idx, scores = estimator._raw_topk(X, k, **extra)[:2]
        except TypeError:  # a _raw_topk without the tfidf shortcut
            idx, scores = estimator._raw_topk(X, k)[:2]
    else:
        labels, scores = estimator.predict_topk(X, k)
        idx = label_indices(estimator, labels)
    emb = None
    if embeddings and hasattr(estimator, "transform"):
        emb = np.asarray(estimator.transform(X), dtype=np.float32)
    return idx, np.asarray(scores, dtype=np.float32), emb
