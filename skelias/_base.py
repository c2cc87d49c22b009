"""Shared pieces of the skelias estimators: top-k outputs and access to a base model's candidates."""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils import ClassifierTags
from sklearn.utils.validation import check_is_fitted

from ._typing import InputLike, PredictOutput, ScoreMatrix, TargetLike, TopKOutput
from ._validation import check_k, check_n_rows, check_X, topk_to_csr, topk_to_indicator

__all__ = [
    "TopKOutputMixin",
    "base_candidates",
    "check_fit_input",
    "check_y_given",
    "final_estimator",
    "fit_aside",
    "is_fitted",
    "label_indices",
    "pad_topk",
    "predict_topk",
    "require_fitted",
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
_PRIVATE_FITTED = frozenset({"_fitted_on_matrix", "_y_kind", "_pretrained_dim", "_pretrained_dir", "_embedder",
                             "_coef_t", "_maps", "_n_bow", "_children"})


def _fitted_state(estimator):
    return {k: v for k, v in vars(estimator).items()
            if (k.endswith("_") and not k.startswith("__")) or k in _PRIVATE_FITTED}


def fit_aside(estimator, fit, *args, **kwargs):
    """Run ``fit(new, *args, **kwargs)`` on a fresh instance; replace ``estimator``'s fitted state only if it returns.

    A fit that raises, or is interrupted (``KeyboardInterrupt``), leaves a previously fitted estimator exactly
    as it was. Parameters and configuration (e.g. metadata requests) are shared with the new instance, so a
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
    fitted = _fitted_state(estimator)
    new = object.__new__(type(estimator))  # parameters and configuration only: no copy of the fitted state
    vars(new).update({k: v for k, v in vars(estimator).items() if k not in fitted})
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


def fill_new_parameters(estimator):
    """Give constructor parameters missing from an unpickled or loaded model their defaults.

    A model pickled or saved by an earlier skelias lacks the parameters added since; their defaults keep the
    earlier behaviour, and ``get_params``/``clone``/``repr`` work on the loaded model.
    """
    for name, param in inspect.signature(type(estimator).__init__).parameters.items():
        if param.default is not param.empty and name not in estimator.__dict__:
            setattr(estimator, name, param.default)


class TopKOutputMixin:
    """``predict_topk``, ``predict``, ``predict_proba``/``decision_function`` and ``score`` from ``_raw_topk``.

    A subclass implements ``_raw_topk(X, k) -> (indices (n, k) int64 with -1 padding,
    scores (n, k) float32 descending with -inf padding)`` and ``_n_scored()``, the number
    of labels per row it scores (the width of :meth:`predict_proba`), and sets
    ``label_indexer_``, ``classes_`` and ``_fitted_on_matrix`` in ``fit``.
    """

    def __setstate__(self, state):
        super().__setstate__(state)
        fill_new_parameters(self)

    def predict_topk(self, X: InputLike, k: int | None = None, *, as_csr: bool = False,
                     **predict_params) -> TopKOutput:
        """Top-``k`` labels and their scores per row.

        Parameters
        ----------
        X : list of str, or sparse matrix (n_samples, n_features)
            Inputs of the kind the model was fitted on.
        k : int, optional
            Labels per row; defaults to the ``k`` parameter and is capped at the number of labels.
        as_csr : bool, default=False
            Return one CSR matrix (n_samples, n_labels) of the top-k scores instead (PECOS's
            ``predict`` format; columns in the order of ``classes_``).
        **predict_params
            Prediction-time settings of this call, e.g. ``beam_size`` and ``shortlist_size`` for
            :class:`~skelias.ELIASClassifier` or ``n_candidates`` for :class:`~skelias.SparseReranker`
            (by default the estimator's current parameters, so ``set_params`` after ``fit`` takes effect).

        Returns
        -------
        labels : ndarray (n_samples, min(k, n_labels))
            Label names (``classes_`` values; padding ``None``/``-1``), or column
            indices when fitted on an indicator matrix.
        scores : ndarray (n_samples, min(k, n_labels)) float32, descending; ``-inf`` at padding.
        """
        require_fitted(self, "classes_")
        k = min(check_k(self.k if k is None else k), len(self.classes_))
        idx, scores = self._raw_topk(X, k, **predict_params)
        if as_csr:
            return topk_to_csr(idx, scores, len(self.classes_))
        if self._fitted_on_matrix:
            return idx, scores
        return self.label_indexer_.inverse_transform(idx), scores

    def predict_proba(self, X: InputLike) -> ScoreMatrix:
        """Scores of each row's scored labels, (n_samples, n_labels) float32; 0 outside its candidates.

        A CSR matrix when fitted on label collections or a sparse indicator (a dense array would not fit
        at 10⁶ labels); a dense ndarray when fitted on a dense indicator. Fitted on one label per row (a
        multi-class problem), each row is normalised to sum to 1, as for scikit-learn classifiers; a row
        without any scored label gets the training label frequencies.
        """
        require_fitted(self, "classes_")
        S = topk_to_csr(*self._raw_topk(X, min(self._n_scored(), len(self.classes_))), len(self.classes_))
        kind = getattr(self, "_y_kind", "sparse")
        if kind == "1d":
            return self._multiclass_proba(S)
        return S.toarray() if kind == "dense" else S

    def _multiclass_proba(self, S):
        """Rows of the (n, L) score matrix ``S`` normalised to sum to 1 (label frequencies for empty rows)."""
        P = np.maximum(S.toarray(), 0).astype(np.float64)
        total = P.sum(axis=1, keepdims=True)
        prior = np.asarray(getattr(self, "label_frequency_", np.ones(P.shape[1])), dtype=np.float64)
        P = np.where(total > 0, P / np.where(total > 0, total, 1), prior / prior.sum())
        return P

    def decision_function(self, X: InputLike) -> ScoreMatrix:
        """Label scores, the same as :meth:`predict_proba` (in [0, 1], not calibrated probabilities).

        Fitted on one label per row with two classes, the scikit-learn binary convention: one column,
        ``P(classes_[1]) - P(classes_[0])``, positive where ``classes_[1]`` is predicted.
        """
        P = self.predict_proba(X)
        if getattr(self, "_y_kind", "sparse") == "1d" and P.shape[1] == 2:
            return P[:, 1] - P[:, 0]
        return P

    def predict(self, X: InputLike) -> PredictOutput:
        """Each row's top ``k`` labels, in the form of the fitted ``y``.

        Returns
        -------
        y_pred : CSR indicator (n_samples, n_labels) float32 when fitted on a sparse indicator matrix, an
            int ndarray indicator when fitted on a dense one; ndarray (n_samples,) of the top label when
            fitted on one label per row; a list of ``n_samples`` lists of up to ``k`` labels (best first)
            when fitted on label collections.
        """
        require_fitted(self, "classes_")
        kind = getattr(self, "_y_kind", "sparse")
        if kind == "1d":  # the most probable label, consistent with predict_proba
            return np.asarray(self.classes_)[np.argmax(self.predict_proba(X), axis=1)]
        idx, _ = self._raw_topk(X, min(check_k(self.k), len(self.classes_)))
        if kind in ("sparse", "dense"):
            Y = topk_to_indicator(idx, len(self.classes_))
            return Y if kind == "sparse" else Y.toarray().astype(np.int64)
        classes = np.asarray(self.classes_)
        keep = idx >= 0
        return [list(row) for row in np.split(classes[idx[keep]], np.cumsum(keep.sum(axis=1))[:-1])]

    def score(self, X: InputLike, y: TargetLike) -> float:
        """Precision@1 on (X, y); labels unknown to the model count as misses."""
        from .metrics import precision_at_k_scorer

        return precision_at_k_scorer(1)(self, X, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags(multi_class=True, multi_label=True)
        tags.target_tags.single_output = True  # one label per row (multi-class)
        tags.target_tags.multi_output = True  # and label sets (multi-label)
        tags.input_tags.sparse = True  # sparse feature matrices (e.g. from a TfidfVectorizer) are accepted
        tags.input_tags.string = True  # and raw texts
        tags.target_tags.required = True
        return tags


def predict_topk(estimator, X: InputLike, k: int = 5, **kwargs) -> TopKOutput:
    """Top-``k`` labels and scores of any fitted skelias model, also inside a ``Pipeline`` or a search.

    Parameters
    ----------
    estimator : estimator
        A fitted skelias estimator, a fitted :class:`~sklearn.pipeline.Pipeline` ending with one (the other
        steps transform ``X`` first), a fitted ``GridSearchCV``/``RandomizedSearchCV`` (its
        ``best_estimator_``), or a ``FrozenEstimator`` around one of these.
    X : list of str, sparse matrix or ndarray
        Inputs for the first step.
    k : int, default=5
        Labels per row.
    **kwargs
        Prediction-time options of the final estimator's ``predict_topk`` (e.g. ``beam_size``).

    Returns
    -------
    labels : ndarray (n_samples, k)
    scores : ndarray (n_samples, k) float32

    Examples
    --------
    >>> from sklearn.feature_extraction.text import TfidfVectorizer
    >>> from sklearn.pipeline import make_pipeline
    >>> from skelias import KNNLabelClassifier, predict_topk
    >>> pipe = make_pipeline(TfidfVectorizer(), KNNLabelClassifier(n_neighbors=2))
    >>> pipe = pipe.fit(["red apple", "green pear", "red wine", "white wine"], [["fruit"], ["fruit"], ["drink"], ["drink"]])
    >>> predict_topk(pipe, ["a glass of red wine"], k=1)[0].tolist()
    [['drink']]
    """
    final, Xt = final_estimator(estimator, X)
    if not hasattr(final, "predict_topk"):
        raise TypeError(f"{type(final).__name__} has no predict_topk: it is not a skelias model.")
    return final.predict_topk(Xt, k, **kwargs)


def final_estimator(estimator, X):
    """The estimator that predicts inside a fitted search or ``Pipeline``, and ``X`` as it receives it.

    A search (``best_estimator_``) is replaced by its best estimator and a ``Pipeline`` by its last step,
    ``X`` going through the other steps' ``transform``; anything with ``predict_topk`` (a
    ``FrozenEstimator`` delegates it) is returned as it is.
    """
    while not hasattr(estimator, "predict_topk"):
        if hasattr(estimator, "best_estimator_"):
            estimator = estimator.best_estimator_
        elif hasattr(estimator, "steps"):
            if len(estimator.steps) > 1:
                X = estimator[:-1].transform(X)
            estimator = estimator.steps[-1][1]
        else:
            break
    return estimator, X


def label_indices(estimator, labels):
    """Column indices (-1 for padding) of ``predict_topk`` labels in ``estimator.classes_``."""
    return estimator.label_indexer_.indices_of(labels)


def base_candidates(estimator, X, k, embeddings=True, tfidf=None, **predict_params):
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
    if hasattr(estimator, "_raw_topk"):  # checks its own fitted state, cheaply (no per-call tag lookups)
        extra = dict(predict_params) if tfidf is None else {"tfidf": tfidf, **predict_params}
        if embeddings:
            try:
                return estimator._raw_topk(X, k, embeddings=True, **extra)
            except TypeError:  # a _raw_topk without embeddings
                pass
        try:
            idx, scores = estimator._raw_topk(X, k, **extra)[:2]
        except TypeError:  # a _raw_topk without the tfidf shortcut
            if tfidf is None:
                raise
            idx, scores = estimator._raw_topk(X, k, **predict_params)[:2]
    else:
        check_is_fitted(estimator)
        labels, scores = estimator.predict_topk(X, k, **predict_params)
        idx = label_indices(estimator, labels)
    emb = None
    if embeddings and hasattr(estimator, "transform"):
        emb = np.asarray(estimator.transform(X), dtype=np.float32)
    return idx, np.asarray(scores, dtype=np.float32), emb
