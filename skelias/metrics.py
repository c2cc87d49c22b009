"""Extreme multi-label ranking metrics and scikit-learn scorers.

Conventions (identical to the standard XMC evaluation, i.e. pyxclib/napkinXC):

* ``y_true`` is an indicator matrix of shape ``(n_samples, n_labels)`` (any
  scipy sparse format or a 2-D array); every non-zero entry is a relevant label.
* ``y_pred`` is either a score matrix of shape ``(n_samples, n_labels)``
  (sparse: only stored entries are predictions; dense: every entry is) or a
  pair ``(indices, scores)`` of arrays of shape ``(n_samples, k')`` with
  ``k' >= k``, holding each row's predicted column indices and their scores
  (``-1`` marks padding, i.e. "no prediction"). Predictions are ranked by
  descending score; ties are broken by the order given (for matrices: by
  ascending column index).

Definitions for one row with true label set ``y`` (``|y|`` labels) and the
ranked predictions ``r_1..r_k``; the reported value is the mean over rows::

    P@k     = |{j <= k : r_j in y}| / k                       (paper Eq. 11)
    R@k     = |{j <= k : r_j in y}| / |y|                     (paper Eq. 13)
    nDCG@k  = sum_{j<=k, r_j in y} 1/log2(j+1)  /  sum_{j <= min(k,|y|)} 1/log2(j+1)

Rows with no true label count as 0 for P@k and nDCG@k and are **excluded**
from the mean for R@k (their recall is undefined); if no row has a true label,
R@k is 0.0. No NaN and no division warning is ever produced.

Propensity-scored metrics use the inverse propensities ``ip`` of Jain et al.
(2016) (see :func:`inverse_propensity`) and, as in the standard XMC
evaluation, are normalised by the best achievable ranking::

    PSP@k    = sum_i sum_{j<=k, r_ij in y_i} ip[r_ij]
               / sum_i (sum of the min(k, |y_i|) largest ip[l], l in y_i)
    PSnDCG@k = same with each term weighted by 1/log2(j+1)

(the paper's Eq. 12 is the numerator; ``normalize=False`` in
:func:`psprecision_at_k` returns it divided by ``n_samples * k``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from ._base import final_estimator, pad_topk
from ._labels import check_label_matrix, is_label_matrix, to_common_label_space
from ._validation import check_k

#: a label indicator matrix (sparse or dense), as accepted by the metrics
LabelMatrix = sp.spmatrix | sp.sparray | np.ndarray
#: a score matrix (n_samples, n_labels)
ScoreMatrix = sp.spmatrix | sp.sparray | np.ndarray
#: a score matrix, or top-k (indices, scores) arrays
Predictions = ScoreMatrix | tuple

__all__ = ["inverse_propensity", "make_topk_scorer", "ndcg_at_k", "ndcg_at_k_scorer", "precision_at_k",
           "precision_at_k_scorer", "psndcg_at_k", "psprecision_at_k", "psprecision_at_k_scorer",
           "recall_at_k", "recall_at_k_scorer", "top_k", "xmc_metrics"]


# ----------------------------------------------------------------------------- validation
def _check_scores_finite(scores, name):
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN scores.")
    if np.isposinf(scores).any():
        raise ValueError(f"{name} contains +inf scores.")


def top_k(y_score: ScoreMatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` column indices and scores of each row of a score matrix.

    Parameters
    ----------
    y_score : sparse matrix or ndarray of shape (n_samples, n_labels)
        Scores. For a sparse matrix only the stored entries are candidates.
    k : int
        Number of entries to keep per row, ``1 <= k <= n_labels``.

    Returns
    -------
    indices : ndarray of shape (n_samples, k), dtype int64
        Column indices by descending score (ties: ascending column index);
        ``-1`` pads rows with fewer than ``k`` stored entries.
    scores : ndarray of shape (n_samples, k), dtype float32
        The matching scores; ``-inf`` at padded positions.

    Raises
    ------
    ValueError
        If ``k`` is not in ``[1, n_labels]``, or scores are NaN or +inf.
    """
    if sp.issparse(y_score):
        S = sp.csr_matrix(y_score)
        if S.ndim != 2:
            raise ValueError("y_score must be 2-D.")
        n, L = S.shape
        k = check_k(k, L)
        S.sum_duplicates()
        data = np.asarray(S.data, dtype=np.float64)
        _check_scores_finite(data, "y_score")
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(S.indptr))
        # sort stored entries by (row asc, score desc, column asc)
        order = np.lexsort((S.indices, -data, rows))
        rank = np.arange(order.size, dtype=np.int64) - S.indptr[rows[order]]
        keep = order[rank < k]
        indices = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        pos = rank[rank < k]
        indices[rows[keep], pos] = S.indices[keep]
        scores[rows[keep], pos] = data[keep]
        return indices, scores
    S = np.asarray(y_score)
    if S.ndim != 2:
        raise ValueError(f"y_score must be 2-D (n_samples, n_labels); got shape {S.shape}.")
    if not np.issubdtype(S.dtype, np.number):
        raise TypeError(f"y_score must be numeric; got dtype {S.dtype}.")
    n, L = S.shape
    k = check_k(k, L)
    _check_scores_finite(S, "y_score")
    if k < L:
        # exact selection with ties at the k-th value broken by ascending column index
        kth = -np.partition(-S, k - 1, axis=1)[:, k - 1 : k]
        above = S > kth
        tied = S == kth
        need = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= need))
        part = np.nonzero(chosen)[1].reshape(n, k)
    else:
        part = np.broadcast_to(np.arange(L), (n, L))
    part_scores = np.take_along_axis(S, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    indices = np.take_along_axis(part, order, axis=1).astype(np.int64)
    scores = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    return indices, scores


def _is_topk_pair(y_pred):
    return isinstance(y_pred, tuple) and len(y_pred) == 2 and not sp.issparse(y_pred[0])


def _check_inputs(y_true, y_pred, k):
    """Validate and return (Y csr float32, ranked indices (n, k) int64 with -1 padding)."""
    Y = check_label_matrix(y_true, name="y_true")
    n, L = Y.shape
    k = check_k(k, L)
    if _is_topk_pair(y_pred):
        indices, scores = (np.asarray(a) for a in y_pred)
        if indices.ndim != 2 or scores.shape != indices.shape:
            raise ValueError(
                f"(indices, scores) must be two arrays of the same shape (n_samples, k); got "
                f"{indices.shape} and {scores.shape}."
            )
        if not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"top-k indices must be integers; got dtype {indices.dtype}.")
        if indices.shape[0] != n:
            raise ValueError(f"y_true has {n} rows but the predictions have {indices.shape[0]}.")
        if indices.shape[1] < k:
            raise ValueError(f"the predictions hold {indices.shape[1]} labels per row; cannot evaluate at k={k}.")
        if indices.size and (indices.min() < -1 or indices.max() >= L):
            raise ValueError(f"top-k indices must lie in [-1, {L}) (-1 = padding); got [{indices.min()}, {indices.max()}].")
        scores = np.asarray(scores, dtype=np.float64)
        pad = indices < 0
        if np.isnan(scores).any() or np.isposinf(scores).any() or np.isneginf(scores[~pad]).any():
            raise ValueError("top-k scores contain NaN or infinite values (only padded entries may be -inf).")
        order = np.argsort(-np.where(pad, -np.inf, scores), axis=1, kind="stable")
        return Y, np.take_along_axis(indices, order, axis=1)[:, :k].astype(np.int64)
    if sp.issparse(y_pred) or isinstance(y_pred, np.ndarray):
        if y_pred.ndim != 2 or y_pred.shape[0] != n:
            raise ValueError(f"y_true has shape {Y.shape} but the score matrix has shape {y_pred.shape}.")
        if y_pred.shape[1] != L:
            raise ValueError(f"y_true has {L} label columns but the score matrix has {y_pred.shape[1]}.")
        return Y, top_k(y_pred, k)[0]
    raise TypeError(
        "y_pred must be a score matrix (sparse or ndarray, n_samples x n_labels) or a tuple "
        f"(indices, scores) of top-k arrays; got {type(y_pred).__name__}."
    )


def _hits(Y, indices):
    """Boolean (n, k): is indices[i, j] a true label of row i? (vectorised sorted-key lookup)."""
    n, L = Y.shape
    true_keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(Y.indptr)) * L + Y.indices
    if true_keys.size == 0:
        return np.zeros(indices.shape, dtype=bool)
    query = np.arange(n, dtype=np.int64)[:, None] * L + indices
    pos = np.minimum(np.searchsorted(true_keys, query), true_keys.size - 1)
    return (true_keys[pos] == query) & (indices >= 0)


def _discount(k):
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def _best_propensity_ranking(Y, inv_prop, k):
    """(n, k) inverse propensities of each row's true labels sorted descending, zero-padded."""
    n = Y.shape[0]
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(Y.indptr))
    vals = inv_prop[Y.indices]
    order = np.lexsort((-vals, rows))
    rank = np.arange(order.size) - Y.indptr[rows[order]]
    keep = rank < k
    out = np.zeros((n, k), dtype=np.float64)
    out[rows[order][keep], rank[keep]] = vals[order][keep]
    return out


def _check_inv_prop(inv_prop, Y, A, B):
    if inv_prop is None:
        return inverse_propensity(Y, A=A, B=B)
    inv_prop = np.asarray(inv_prop, dtype=np.float64)
    if inv_prop.shape != (Y.shape[1],):
        raise ValueError(f"inv_prop must have shape ({Y.shape[1]},) (one value per label); got {inv_prop.shape}.")
    if not np.all(np.isfinite(inv_prop)):
        raise ValueError("inv_prop contains NaN or infinite values.")
    return inv_prop


# ----------------------------------------------------------------------------- metrics on (Y, ranked indices)
def _precision(Y, idx, k):
    return float(_hits(Y, idx[:, :k]).sum(axis=1).mean() / k)


def _recall(Y, idx, k):
    n_true = np.diff(Y.indptr)
    has = n_true > 0
    if not has.any():
        return 0.0
    hits = _hits(Y, idx[:, :k]).sum(axis=1)
    return float(np.mean(hits[has] / n_true[has]))


def _ndcg(Y, idx, k):
    disc = _discount(k)
    dcg = (_hits(Y, idx[:, :k]) * disc).sum(axis=1)
    n_true = np.minimum(np.diff(Y.indptr), k)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[n_true]
    return float(np.mean(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)))


def _psp(Y, idx, k, ip, normalize=True, discount=False):
    w = _discount(k) if discount else np.ones(k)
    gains = _hits(Y, idx[:, :k]) * ip[np.maximum(idx[:, :k], 0)] * w
    num = gains.sum()
    if not normalize:
        return float(num / (Y.shape[0] * k))
    den = (_best_propensity_ranking(Y, ip, k) * w).sum()
    return float(num / den) if den > 0 else 0.0


# ----------------------------------------------------------------------------- public metrics
def precision_at_k(y_true: LabelMatrix, y_pred: Predictions, k: int = 5) -> float:
    """Precision@k averaged over samples (paper Eq. 11).

    Parameters
    ----------
    y_true : sparse matrix or ndarray of shape (n_samples, n_labels)
        Ground-truth indicator matrix.
    y_pred : sparse matrix / ndarray of shape (n_samples, n_labels), or tuple (indices, scores)
        Score matrix, or top-k arrays of shape (n_samples, k') with k' >= k.
    k : int, default=5
        Number of top-ranked labels evaluated.

    Returns
    -------
    float
        In [0, 1]. Rows without true labels count as 0.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> Y = sp.csr_matrix(np.array([[1, 0, 1], [0, 1, 0]]))
    >>> S = np.array([[0.9, 0.5, 0.1], [0.2, 0.1, 0.3]])
    >>> precision_at_k(Y, S, k=1)
    0.5
    """
    Y, idx = _check_inputs(y_true, y_pred, k)
    return _precision(Y, idx, k)


def recall_at_k(y_true: LabelMatrix, y_pred: Predictions, k: int = 5) -> float:
    """Recall@k averaged over samples with at least one true label (paper Eq. 13).

    Parameters
    ----------
    y_true, y_pred, k :
        As in :func:`precision_at_k`.

    Returns
    -------
    float
        In [0, 1]. Rows with no true label are excluded from the mean; 0.0 if no row has a true label.
    """
    Y, idx = _check_inputs(y_true, y_pred, k)
    return _recall(Y, idx, k)


def ndcg_at_k(y_true: LabelMatrix, y_pred: Predictions, k: int = 5) -> float:
    """nDCG@k with binary gains, normalised by the ideal DCG over ``min(k, |y|)`` positions.

    Parameters
    ----------
    y_true, y_pred :
        As in :func:`precision_at_k`.
    k : int, default=5
        Number of ranked positions discounted.

    Returns
    -------
    float
        In [0, 1]; rows without true labels count as 0.
    """
    Y, idx = _check_inputs(y_true, y_pred, k)
    return _ndcg(Y, idx, k)


def psprecision_at_k(y_true: LabelMatrix, y_pred: Predictions, k: int = 5, *, inv_prop: np.ndarray | None = None,
                     A: float = 0.55, B: float = 1.5, normalize: bool = True) -> float:
    """Propensity-scored precision@k (paper Eq. 12), normalised by the best ranking.

    Parameters
    ----------
    y_true, y_pred, k :
        As in :func:`precision_at_k`.
    inv_prop : ndarray of shape (n_labels,), optional
        Inverse propensities, normally ``inverse_propensity(Y_train)``. When
        ``None`` they are computed from ``y_true`` with ``A`` and ``B``.
    A, B : float, default=0.55, 1.5
        Parameters of :func:`inverse_propensity` (used only when ``inv_prop`` is None).
    normalize : bool, default=True
        Divide by the same quantity for the best possible ranking (standard XMC
        evaluation). ``False`` returns the mean of Eq. 12 divided by ``k``.

    Returns
    -------
    float
    """
    Y, idx = _check_inputs(y_true, y_pred, k)
    return _psp(Y, idx, k, _check_inv_prop(inv_prop, Y, A, B), normalize=normalize)


def psndcg_at_k(y_true: LabelMatrix, y_pred: Predictions, k: int = 5, *, inv_prop: np.ndarray | None = None,
                A: float = 0.55, B: float = 1.5) -> float:
    """Propensity-scored nDCG@k, normalised by the best ranking (as :func:`psprecision_at_k`).

    Parameters
    ----------
    y_true, y_pred, k, inv_prop, A, B :
        As in :func:`psprecision_at_k`.

    Returns
    -------
    float
        In [0, 1].
    """
    Y, idx = _check_inputs(y_true, y_pred, k)
    return _psp(Y, idx, k, _check_inv_prop(inv_prop, Y, A, B), discount=True)


def inverse_propensity(Y: LabelMatrix, A: float = 0.55, B: float = 1.5) -> np.ndarray:
    """Inverse label propensities of Jain et al. (2016).

    ``ip_l = 1 + (ln N - 1) * (B + 1)**A * (N_l + B)**(-A)`` where ``N`` is the
    number of rows of ``Y`` and ``N_l`` the number of rows containing label ``l``.
    Standard constants: A=0.55, B=1.5 (default); Amazon datasets A=0.6, B=2.6;
    Wikipedia datasets A=0.5, B=0.4. The formula needs ``N >= 3`` to give
    values >= 1 (``ln N - 1`` is negative below ``e``); it is applied as is.

    Parameters
    ----------
    Y : sparse matrix or ndarray of shape (n_samples, n_labels)
        Training indicator matrix.
    A, B : float, default=0.55, 1.5
        The constants of the formula above.

    Returns
    -------
    inv_prop : ndarray of shape (n_labels,), dtype float64
        Values >= 1; rare labels get large values.
    """
    Y = check_label_matrix(Y)
    for name, v in (("A", A), ("B", B)):
        if not isinstance(v, numbers.Real) or not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number; got {v!r}.")
    if B <= -1:
        raise ValueError(f"B must be > -1; got {B}.")
    N = Y.shape[0]
    freq = np.bincount(Y.indices, minlength=Y.shape[1]).astype(np.float64)
    C = (np.log(N) - 1.0) * (B + 1.0) ** A
    return 1.0 + C * (freq + B) ** (-A)


def xmc_metrics(y_true: LabelMatrix, y_pred: Predictions, *, ks: Sequence[int] = (1, 3, 5),
                recall_ks: Sequence[int] = (10, 100), inv_prop: np.ndarray | None = None, A: float = 0.55,
                B: float = 1.5) -> dict[str, float]:
    """The standard XMC report in one pass: P@k, nDCG@k, PSP@k, PSnDCG@k for ``ks``, R@k for ``recall_ks``.

    Parameters
    ----------
    y_true, y_pred :
        As in :func:`precision_at_k`. ``y_pred`` must rank at least ``max(ks + recall_ks)``
        labels when given as top-k arrays; with a score matrix, ``k`` values larger than
        ``n_labels`` are skipped.
    ks : sequence of int, default=(1, 3, 5)
        Cut-offs of P@k, nDCG@k, PSP@k and PSnDCG@k.
    recall_ks : sequence of int, default=(10, 100)
        Cut-offs of R@k.
    inv_prop : ndarray of shape (n_labels,), optional
        Inverse propensities (usually of the training labels); computed from
        ``y_true`` when None.
    A, B : float, default=0.55, 1.5
        Parameters of :func:`inverse_propensity` (used only when ``inv_prop`` is None).

    Returns
    -------
    dict
        Keys like ``"P@1"``, ``"nDCG@3"``, ``"PSP@5"``, ``"PSnDCG@5"``, ``"R@100"``; values in [0, 1].
    """
    Y = check_label_matrix(y_true, name="y_true")
    L = Y.shape[1]
    all_k = sorted({check_k(k, name="ks") for k in ks} | {check_k(k, name="recall_ks") for k in recall_ks})
    if not _is_topk_pair(y_pred):
        all_k = [k for k in all_k if k <= L]
    if not all_k:
        raise ValueError(f"every requested k exceeds the number of labels ({L}).")
    kmax = all_k[-1]
    Y, idx = _check_inputs(Y, y_pred, kmax)
    ip = _check_inv_prop(inv_prop, Y, A, B)
    out = {}
    for k in ks:
        if k in all_k:
            out[f"P@{k}"] = _precision(Y, idx, k)
            out[f"nDCG@{k}"] = _ndcg(Y, idx, k)
            out[f"PSP@{k}"] = _psp(Y, idx, k, ip)
            out[f"PSnDCG@{k}"] = _psp(Y, idx, k, ip, discount=True)
    for k in recall_ks:
        if k in all_k:
            out[f"R@{k}"] = _recall(Y, idx, k)
    return out


# ----------------------------------------------------------------------------- scorers
_METRICS = {
    "precision": _precision,
    "recall": _recall,
    "ndcg": _ndcg,
    "psprecision": None,  # needs propensities, handled in the scorer
}


def _predict_topk(estimator, X, k):
    """(labels, scores) of shape (n, k) from any estimator exposing top-k or score outputs."""
    final, Xt = final_estimator(estimator, X)
    if hasattr(final, "predict_topk"):
        labels, scores = final.predict_topk(Xt, k)
        return np.asarray(labels), np.asarray(scores, dtype=np.float64), False
    for method in ("decision_function", "predict_proba"):
        if hasattr(final, method):
            S = getattr(final, method)(Xt)
            if isinstance(S, list):  # e.g. MultiOutputClassifier.predict_proba
                S = np.column_stack([s[:, -1] for s in S])
            idx, scores = top_k(S, min(k, S.shape[1]))
            return idx, scores.astype(np.float64), True
    raise TypeError(
        f"{type(final).__name__} exposes neither predict_topk, decision_function nor predict_proba; "
        "a top-k scorer needs ranked scores."
    )


class _TopKScorer:
    """Callable ``scorer(estimator, X, y)`` for ``GridSearchCV(scoring=...)``; larger is better."""

    def __init__(self, metric, k, A=0.55, B=1.5):
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {sorted(_METRICS)}; got {metric!r}.")
        self.metric = metric
        self.k = check_k(k)
        self.A = A
        self.B = B

    def __repr__(self):
        return f"make_topk_scorer({self.metric!r}, k={self.k})"

    def __call__(self, estimator, X, y_true, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("top-k scorers do not support sample_weight.")
        labels, scores, are_indices = _predict_topk(estimator, X, self.k)
        if is_label_matrix(y_true):
            Y = check_label_matrix(y_true, name="y")
            idx = labels.astype(np.int64) if np.issubdtype(labels.dtype, np.integer) else None
            if idx is None:
                raise TypeError("y is an indicator matrix but the estimator predicted label names, not column indices.")
        else:
            if are_indices:
                classes = getattr(estimator, "classes_", None)
                if classes is None:
                    raise TypeError("y holds label collections but the estimator has no classes_ to name its columns.")
                classes = np.asarray(classes)
                named = classes[np.maximum(labels, 0)].astype(object)
                named[labels < 0] = None
                labels = named
            Y, idx, _ = to_common_label_space(y_true, labels)
        pad = idx < 0
        if np.isnan(scores[~pad]).any():
            raise ValueError(f"{type(estimator).__name__} predicted NaN scores; they cannot be ranked.")
        scores = np.where(pad, -np.inf, scores)
        idx, scores = pad_topk(idx, scores, self.k)  # fewer labels than k
        order = np.argsort(-scores, axis=1, kind="stable")
        idx = np.take_along_axis(idx, order, axis=1)[:, : self.k]
        if self.metric == "psprecision":
            return _psp(Y, idx, self.k, inverse_propensity(Y, self.A, self.B))
        return _METRICS[self.metric](Y, idx, self.k)


def make_topk_scorer(metric: str, k: int, *, A: float = 0.55, B: float = 1.5) -> Callable[..., float]:
    """Build a scorer for ``GridSearchCV``/``cross_val_score`` from a top-k metric.

    The scorer asks the estimator (or a Pipeline's final step, after the other
    steps' ``transform``) for ``predict_topk(X, k)``; estimators without it are
    ranked by ``decision_function`` or ``predict_proba``. ``y`` may be an
    indicator matrix (predictions are then column indices) or a sequence of
    label collections (predictions are compared by label value, so test labels
    the model never saw still count as relevant).

    Parameters
    ----------
    metric : {"precision", "recall", "ndcg", "psprecision"}
        The metric; ``"psprecision"`` is normalised PSP@k.
    k : int
        Cut-off.
    A, B : float, default=0.55, 1.5
        Propensity parameters for ``"psprecision"``; propensities are computed
        from the evaluated fold's labels.

    Returns
    -------
    scorer : callable ``scorer(estimator, X, y) -> float``
    """
    return _TopKScorer(metric, k, A=A, B=B)


def precision_at_k_scorer(k: int = 1) -> Callable[..., float]:
    """A ``scorer(estimator, X, y)`` for P@k (see :func:`make_topk_scorer`).

    Parameters
    ----------
    k : int, optional
        The cut-off of P@k; 1 (is the top label relevant?) by default.
    """
    return _TopKScorer("precision", k)


def recall_at_k_scorer(k: int = 10) -> Callable[..., float]:
    """A ``scorer(estimator, X, y)`` for R@k (see :func:`make_topk_scorer`).

    Rows without a true label are left out of the mean, as in :func:`recall_at_k`.

    Parameters
    ----------
    k : int, default=10
        The cut-off of R@k.
    """
    return _TopKScorer("recall", k)


def ndcg_at_k_scorer(k: int = 5) -> Callable[..., float]:
    """A ``scorer(estimator, X, y)`` for nDCG@k (see :func:`make_topk_scorer`).

    Parameters
    ----------
    k : int, default=5
        The cut-off of nDCG@k (binary gains; the ideal DCG covers ``min(k, |y|)`` positions).
    """
    return _TopKScorer("ndcg", k)


def psprecision_at_k_scorer(k: int = 5, *, A: float = 0.55, B: float = 1.5) -> Callable[..., float]:
    """A ``scorer(estimator, X, y)`` for normalised PSP@k with the evaluated fold's propensities.

    See :func:`make_topk_scorer`.

    Parameters
    ----------
    k : int, default=5
        The cut-off of PSP@k.
    A, B : float, default=0.55, 1.5
        Parameters of :func:`inverse_propensity`.
    """
    return _TopKScorer("psprecision", k, A=A, B=B)

