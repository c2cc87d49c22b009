"""ELIAS++'s sparse re-ranker (paper §3.5, App. D.2): LIBLINEAR classifiers on a base model's top candidates."""

from __future__ import annotations

import numbers
import time
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, MetaEstimatorMixin, clone

from ._base import (
    TopKOutputMixin,
    base_candidates,
    check_fit_input,
    fill_new_parameters,
    fit_aside,
    is_fitted,
    require_fitted,
    store_params,
    topk_of,
)
from ._features import weight_features
from ._labels import as_targets, is_label_matrix, target_kind
from ._liblinear import LOSSES, label_problems, train_label_classifiers
from ._logging import logger, verbose_logging
from ._typing import InputLike, TargetLike
from ._validation import (
    HasMethods,
    Interval,
    StrOptions,
    check_k,
    check_X,
    default_vectorizer,
    non_negative_real,
    positive_int,
    positive_real,
    tfidf_transform,
    topk_to_indicator,
)

__all__ = ["SparseReranker", "auto_C", "auto_n_candidates", "auto_weight_threshold", "pair_margins", "ranker_features",
           "transform_margins"]

SCORE_TRANSFORMS = ("auto", "sigmoid", "l3-hinge")



def ranker_features(bow, emb, embedding_weight=1.0):
    """ψ(x) = [bow/‖bow‖₂, w·φ/‖φ‖₂] (Eq. 16 with w = 1) as CSR float32 (n, n_bow + d).

    ``emb=None`` or ``embedding_weight=0`` gives the bow half only.
    """
    bow = sp.csr_matrix(bow, dtype=np.float32, copy=True)
    counts = np.diff(bow.indptr)
    rows = np.repeat(np.arange(bow.shape[0]), counts)
    # row L2 norms without sklearn's per-call input validation (felt in single queries)
    norms = np.sqrt(np.bincount(rows, weights=bow.data.astype(np.float64) ** 2, minlength=bow.shape[0]))
    bow.data /= np.maximum(norms, 1e-30)[rows].astype(np.float32)
    bow.sort_indices()
    if emb is None or embedding_weight <= 0:
        return bow
    emb = np.asarray(emb, dtype=np.float32)
    emb = embedding_weight * emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    out = sp.hstack([bow, sp.csr_matrix(emb)], format="csr", dtype=np.float32)
    out.sort_indices()
    return out


#: ``C="auto"``: C × (mean rows of a label problem) is held at this value; smaller problems get C = 1
_AUTO_C_ROWS = 600


def auto_C(Y, candidates):
    """``C="auto"``: ``min(1, 600 / r)``, r the mean number of rows of the label problems (PECOS's C = 1 up to 600).

    LIBLINEAR sums the loss over a problem's rows, so C · r weighs the data against the regulariser;
    it is held at 600 once the problems are larger than that (few labels, many rows each), and
    smaller problems keep PECOS's C = 1.

    Parameters
    ----------
    Y : sparse matrix (n_samples, n_labels)
        Relevant labels of the training rows.
    candidates : sparse matrix (n_samples, n_labels)
        The base model's candidates of the same rows (non-zero = candidate).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> auto_C(sp.eye(10, 5, format="csr"), sp.csr_matrix(np.ones((10, 5))))  # 10 rows per label problem
    1.0
    >>> auto_C(sp.eye(2400, 5, format="csr"), sp.csr_matrix(np.ones((2400, 5))))  # 2,400 rows
    0.25
    """
    rows = label_problems(Y, candidates).getnnz(axis=0)
    used = rows[rows > 0]
    if not used.size:
        return 1.0
    return float(min(1.0, _AUTO_C_ROWS / used.mean()))


#: ``weight_threshold="auto"``: the pruning threshold at C = 1 (PECOS's), scaled with C
_AUTO_WEIGHT_THRESHOLD_AT_C1 = 0.1


def auto_weight_threshold(C):
    """``weight_threshold="auto"``: ``0.1 · C``, PECOS's threshold at its C = 1, scaled with the C the classifiers use.

    A classifier's weights shrink as C falls (the regulariser weighs more), so PECOS's fixed
    threshold prunes more of what a classifier learned at a smaller C; the scaled threshold does
    not. The model is larger at a small C than with the fixed threshold (``docs/design.md``).

    Parameters
    ----------
    C : float
        LIBLINEAR's C of the label classifiers.

    Returns
    -------
    float

    Examples
    --------
    >>> from skelias.rerank import auto_weight_threshold
    >>> auto_weight_threshold(1.0), auto_weight_threshold(0.25)
    (0.1, 0.025)
    """
    return _AUTO_WEIGHT_THRESHOLD_AT_C1 * float(C)


#: ``n_candidates="auto"``: candidates per relevant label of an average training row, and the least taken
_AUTO_CANDIDATES_PER_LABEL = 10
_AUTO_MIN_CANDIDATES = 100


def auto_n_candidates(Y):
    """``n_candidates="auto"``: ``max(100, ⌈10 · m⌉)``, m the mean number of relevant labels per training row.

    The re-ranker learns from the labels among a row's candidates and can only promote those: with about
    20 relevant labels per row, 100 candidates leave few hard negatives per positive and cut off the
    relevant labels the base model ranks lower. Data with up to 10 labels per row keep 100.

    Parameters
    ----------
    Y : sparse matrix (n_samples, n_labels)
        Relevant labels of the training rows.

    Returns
    -------
    int

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> auto_n_candidates(sp.eye(10, 5, format="csr"))  # one label per row
    100
    >>> auto_n_candidates(sp.csr_matrix(np.ones((4, 192))))  # 192 labels per row
    1920
    """
    mean = Y.nnz / max(Y.shape[0], 1)
    return int(max(_AUTO_MIN_CANDIDATES, np.ceil(_AUTO_CANDIDATES_PER_LABEL * mean - 1e-9)))


#: largest rows × labels product looked up through a dense copy in :func:`pair_margins`
_DENSE_LOOKUP = 2**22


def _one_row_margins(psi_row, WT):
    """w_lᵀψ for every label l of one ψ row (1 × D CSR) through ``WT`` (D × L CSR), float64 (L,).

    The non-zeros of the rows of ``WT`` that ψ's features select, weighted and summed per label by one
    ``bincount``: about 40 % less time than scipy's two-pass sparse product for a single query.
    """
    f = psi_row.indices
    starts = WT.indptr[f]
    lens = WT.indptr[f + 1] - starts
    pos = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(int(lens.sum()))
    return np.bincount(WT.indices[pos], weights=WT.data[pos] * np.repeat(psi_row.data, lens), minlength=WT.shape[1])


def pair_margins(psi, W, intercept, indices, chunk_size=1024, WT=None):
    """w_lᵀψ(x_i) + b_l for every (row i, label ``indices[i, j]``) pair; 0 at padding (-1).

    Sparse throughout: per chunk of rows, one sparse product with the classifiers of the
    labels that occur in the chunk, then a gather. With ``WT`` (``W.T`` as CSR, D × L), chunks of
    at most 64 rows use ψ_chunk · Wᵀ over the features the rows use instead — no copy of the
    classifiers' rows, which dominates single queries — then a lookup of the pairs (for a single
    row, a ``bincount`` over those features' rows of ``WT``).

    Returns
    -------
    ndarray (n, c) float32
    """
    n, c = indices.shape
    out = np.zeros((n, c), dtype=np.float32)
    for start in range(0, n, chunk_size):
        I = indices[start : start + chunk_size]
        rows = psi if n <= chunk_size else psi[start : start + chunk_size]  # (slicing a CSR is not free)
        valid = I >= 0
        if not valid.any():
            continue
        if WT is not None and I.shape[0] == 1:  # one query: ψ·Wᵀ as a bincount over the rows of its features
            cols = I[0, valid[0]]
            out[start][valid[0]] = _one_row_margins(rows, WT)[cols] + intercept[cols]
            continue
        if WT is not None and I.shape[0] <= 64:  # small batches: no copy of classifier rows (slower for large ones)
            S = sp.csr_matrix(rows @ WT)
            r, j = np.nonzero(valid)
            cols = I[r, j]
            if S.shape[0] * S.shape[1] <= _DENSE_LOOKUP:  # a dense gather instead of scipy's slow fancy indexing
                vals = S.toarray()[r, cols].astype(np.float32, copy=False)
            else:
                vals = np.asarray(S[r, cols], dtype=np.float32).ravel()
            out[start : start + chunk_size][r, j] = vals + intercept[cols]
            continue
        U, inv = np.unique(I[valid], return_inverse=True)
        S = (rows @ W[U].T).toarray()
        r = np.nonzero(valid)[0]
        block = out[start : start + chunk_size]
        block[valid] = S[r, inv.reshape(-1)] + intercept[U][inv.reshape(-1)]
    return out


def transform_margins(margins, how):
    """q = σ(m) (paper, Eq. 17's logistic model) or PECOS's l3-hinge ``exp(-max(0, 1 - m)³)``."""
    m = np.asarray(margins, dtype=np.float32)
    if how == "sigmoid":
        return (1.0 / (1.0 + np.exp(-m))).astype(np.float32)
    return np.exp(-np.maximum(0.0, 1.0 - m) ** 3).astype(np.float32)


class SparseReranker(TopKOutputMixin, MetaEstimatorMixin, BaseEstimator):
    """Re-rank a base model's top candidates with sparse linear classifiers (ELIAS++, paper §3.5).

    For every label l a binary L2-regularised linear classifier w_l is trained with
    LIBLINEAR on ψ(x) = [bow(x)/‖bow(x)‖, φ(x)/‖φ(x)‖] (Eq. 16) over the training rows
    where l is among the base model's top ``n_candidates`` (hard negatives from the
    learned index) plus all of l's positives (Eq. 17). At prediction the base model's
    top ``n_candidates`` labels are re-scored by ``p · q``, p the base score and
    q = transform(w_lᵀψ(x) + b_l).

    Parameters
    ----------
    estimator : estimator or None, default=None
        The base model (``None``: ``ELIASClassifier()``). It needs ``predict_topk`` and,
        for the dense half of ψ, ``transform`` (embeddings φ). It is cloned and fitted in
        :meth:`fit`; wrap an already fitted model in :class:`sklearn.frozen.FrozenEstimator`
        to reuse it as is.
    n_candidates : int or "auto", default="auto"
        Labels per row taken from the base model, for training and prediction. ``"auto"``:
        max(100, ⌈10 · m⌉), m the mean number of relevant labels per training row
        (:func:`auto_n_candidates`): 100 unless the rows average more than 10 labels. The value
        used is ``n_candidates_``.
    C : float or "auto", default="auto"
        LIBLINEAR's inverse regularisation strength. ``"auto"``: from the size of the label
        problems — each label's problem holds its positives and the rows where it is among the
        top ``n_candidates``; with r their mean number of rows, C = min(1, 600 / r)
        (:func:`auto_C`): PECOS's 1.0 up to 600 rows, then C · r held at 600. LIBLINEAR sums the
        loss over a problem's rows, so under one C a problem with more rows is regularised
        relatively less (``docs/design.md``). The value used is ``C_``.
    loss : {"squared_hinge", "logistic", "hinge"}, default="squared_hinge"
        ``"squared_hinge"``: L2-loss SVM, dual coordinate descent (PECOS's default);
        ``"logistic"``: the paper's Eq. 17 (primal trust-region Newton, reproducible).
    weight_threshold : float or "auto", default="auto"
        Weights with absolute value below it are dropped (model size). ``"auto"``: 0.1 · C
        (:func:`auto_weight_threshold`): PECOS's 0.1 at C = 1, scaled with the C used, since
        the weights shrink with C. The value used is ``weight_threshold_``.
    bias : float, default=1.0
        Value of the bias feature appended to every row (LIBLINEAR ``-B``); < 0: no bias.
    tol : float, default=0.1
        LIBLINEAR's stopping tolerance ``-e``.
    score_transform : {"auto", "sigmoid", "l3-hinge"}, default="auto"
        How a margin m becomes q: ``σ(m)`` (the paper) or ``exp(-max(0, 1 - m)³)``
        (PECOS's ``l3-hinge``). ``"auto"``: sigmoid for the logistic loss, l3-hinge otherwise.
    embedding_weight : float, default=0.0
        w in ψ(x) = [bow/‖bow‖, w·φ/‖φ‖]. The paper's Eq. 16 is w = 1; the default 0 uses
        the bow half only, because on training rows φ is the base model's own fitted
        representation and classifiers on it overfit (``docs/design.md``).
    vectorizer : TfidfVectorizer or None, default=None
        Builds bow(x) from raw texts. ``None``: the base model's fitted ``vectorizer_``
        when it has one, else :func:`skelias.default_vectorizer` of the training texts.
        With a sparse feature matrix as X (e.g. after a ``TfidfVectorizer`` in a
        Pipeline), X itself is bow(x), column-weighted as the base model weights it when
        it has ``feature_idf_`` (``ELIASClassifier(feature_weighting=...)``).
    k : int, default=5
        Labels per row returned by :meth:`predict`.
    n_jobs : int or None, default=None
        Threads for the LIBLINEAR solves (it releases the GIL).
    random_state : int, RandomState or None, default=None
        Seeds LIBLINEAR's dual solvers, one seed per label; seeded fits run their label chunks in processes,
        so the weights are the same for any ``n_jobs`` or joblib backend.
    verbose : int, default=0
        > 0: a progress bar over the label chunks.

    Attributes
    ----------
    estimator_ : the fitted base model
    vectorizer_ : the fitted bow vectorizer (raw-text input) or None
    coef_ : csr_matrix (n_labels, n_bow + d) float32
        The pruned classifiers w_l.
    intercept_ : ndarray (n_labels,) float32
    n_candidates_ : int
        Candidates per row (``n_candidates``, or its ``"auto"`` choice).
    C_ : float
        The C the classifiers were trained with (``C``, or its ``"auto"`` choice).
    weight_threshold_ : float
        The pruning threshold applied (``weight_threshold``, or its ``"auto"`` choice).
    classes_ : ndarray (n_labels,)
    label_frequency_ : ndarray (n_labels,) float32
        Training positives of each label (the base model's when it records them).
    fit_time_ : dict
        Seconds in the base fit, candidate generation and the LIBLINEAR solves.
    n_features_in_ : int
        Features of the base model's input.

    Examples
    --------
    >>> from skelias import KNNLabelClassifier, SparseReranker
    >>> texts = ["boil pasta in salted water", "bake bread with yeast", "pasta with tomato sauce",
    ...          "sourdough bread starter", "fresh egg pasta dough", "rye bread loaf"] * 20
    >>> tags = [["pasta"], ["bread"], ["pasta", "sauce"], ["bread"], ["pasta"], ["bread"]] * 20
    >>> ranker = SparseReranker(KNNLabelClassifier(n_neighbors=5), n_candidates=3).fit(texts, tags)
    >>> labels, scores = ranker.predict_topk(["bread with yeast"], k=1)
    >>> labels[0, 0]
    'bread'
    """

    _parameter_constraints: ClassVar[dict] = {
        "estimator": [None, HasMethods(["fit"])],
        "n_candidates": [positive_int, StrOptions({"auto"})],
        "C": [positive_real, StrOptions({"auto"})],
        "loss": [StrOptions(set(LOSSES))],
        "weight_threshold": [non_negative_real, StrOptions({"auto"})],
        "bias": [Interval(numbers.Real, None, None, closed="neither")],
        "tol": [positive_real],
        "score_transform": [StrOptions(set(SCORE_TRANSFORMS))],
        "embedding_weight": [non_negative_real],
        "vectorizer": [None, HasMethods(["fit", "transform"])],
        "k": [positive_int],
        "n_jobs": [None, numbers.Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, estimator=None, n_candidates="auto", C="auto", loss="squared_hinge", weight_threshold="auto",
                 bias=1.0, tol=0.1, score_transform="auto", embedding_weight=0.0, vectorizer=None, k=5, n_jobs=None,
                 random_state=None, verbose=0):
        store_params(self, locals())

    def _transform_name(self):
        if self.score_transform == "auto":
            return "sigmoid" if self.loss == "logistic" else "l3-hinge"
        return self.score_transform

    def _bow(self, kind, X, fitting):
        if kind != "text":
            bow = sp.csr_matrix(X, dtype=np.float32)
            idf = getattr(self.estimator_, "feature_idf_", None)  # the base model's column weights: same features
            if idf is not None:
                bow = weight_features(bow, idf)
            if fitting:
                self.vectorizer_ = None
                self._n_bow = bow.shape[1]
            return bow
        if fitting:
            base_vec = getattr(self.estimator_, "vectorizer_", None)
            if self.vectorizer is not None:
                self.vectorizer_ = clone(self.vectorizer).fit(X)
            elif base_vec is not None:
                self.vectorizer_ = base_vec  # the base model's own TF-IDF: same features, no refit
            else:
                self.vectorizer_ = default_vectorizer(X).fit(X)
        if self.vectorizer_ is None:
            raise TypeError("This SparseReranker was fitted on a feature matrix; pass features, not raw texts.")
        bow = tfidf_transform(self.vectorizer_, X)
        if fitting:
            self._n_bow = bow.shape[1]
        return bow

    def fit(self, X: InputLike, y: TargetLike) -> SparseReranker:
        """Fit the base model (unless frozen), then one sparse classifier per label.

        The base model's top ``n_candidates_`` on the training rows are the hard negatives (Eq. 17).

        Parameters
        ----------
        X : list of str, or sparse matrix (n_samples, n_features)
            Raw texts (bow(x) from ``vectorizer``) or the bow features themselves.
        y : sparse indicator matrix (n_samples, n_labels) or sequence of label collections
            Relevant labels; labels outside the base model's label space are ignored.

        Returns
        -------
        self : SparseReranker
        """
        with verbose_logging(self.verbose):
            return fit_aside(self, type(self)._fit, X, as_targets(y))

    def _fit(self, X, y):
        self._validate_params()
        kind, Xc, _ = check_fit_input(self, X, y)
        self.fit_time_ = {}
        t0 = time.perf_counter()
        base = _default_base() if self.estimator is None else self.estimator
        self.estimator_ = clone(base)
        if not is_fitted(self.estimator_):
            self.estimator_.fit(X, y)
        self.fit_time_["base"] = time.perf_counter() - t0
        self.label_indexer_ = self.estimator_.label_indexer_
        self.classes_ = self.estimator_.classes_
        self._fitted_on_matrix = is_label_matrix(y)
        self._y_kind = target_kind(y)
        Y = self.label_indexer_.transform(y)
        if Y.nnz == 0:
            raise ValueError("y has no positive label in the base model's label space; there is nothing to learn.")
        self.label_frequency_ = getattr(self.estimator_, "label_frequency_", None)
        if self.label_frequency_ is None:
            self.label_frequency_ = np.asarray(Y.sum(axis=0), dtype=np.float32).ravel()
        if kind == "text" and getattr(self.estimator_, "vectorizer_", "missing") is None:
            raise TypeError("the base model was fitted on a feature matrix; pass the same kind of X.")
        self.n_candidates_ = auto_n_candidates(Y) if self.n_candidates == "auto" else int(self.n_candidates)
        t0 = time.perf_counter()
        idx, _, emb = base_candidates(self.estimator_, Xc if kind == "features" else X, self.n_candidates_,
                                      embeddings=self.embedding_weight > 0)
        psi = ranker_features(self._bow(kind, Xc, fitting=True), emb, self.embedding_weight)
        n_dense = psi.shape[1] - self._n_bow
        cand = topk_to_indicator(idx, Y.shape[1])
        self.fit_time_["candidates"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        self.C_ = auto_C(Y, cand) if self.C == "auto" else float(self.C)
        self.weight_threshold_ = (auto_weight_threshold(self.C_) if self.weight_threshold == "auto"
                                  else float(self.weight_threshold))
        self.coef_, self.intercept_ = train_label_classifiers(
            psi, Y, cand, C=self.C_, loss=self.loss, bias=self.bias, tol=self.tol,
            weight_threshold=self.weight_threshold_, n_dense=n_dense, n_jobs=self.n_jobs, random_state=self.random_state,
            verbose=bool(self.verbose),
        )
        self.fit_time_["ranker"] = time.perf_counter() - t0
        if self.verbose:
            logger.info("re-ranker: %d label classifiers (C = %g), %d weights, %.1f s", self.coef_.shape[0], self.C_,
                        self.coef_.nnz, self.fit_time_["ranker"])
        self._coef_t = sp.csr_matrix(self.coef_.T)  # (D, L): prediction multiplies ψ by it
        self.n_features_in_ = getattr(self.estimator_, "n_features_in_", psi.shape[1])
        return self

    def candidate_scores(self, X: InputLike, n_candidates: int | None = None,
                         **base_params) -> sp.csr_matrix:
        """The base model's candidates with both scores.

        Parameters
        ----------
        X : list of str, or sparse matrix (n_samples, n_features)
            Inputs of the kind the model was fitted on.
        n_candidates : int, optional
            Candidates per row for this call; default the ``n_candidates`` parameter (``n_candidates_``
            for ``"auto"``).
        **base_params
            Prediction-time settings passed to the base model (e.g. ``beam_size`` of an ELIAS base).

        Returns
        -------
        indices : ndarray (n, n_candidates) int64, -1 for padding
        p : ndarray (n, n_candidates) float32, base scores (0 at padding)
        q : ndarray (n, n_candidates) float32, ranker scores (0 at padding)
        """
        require_fitted(self, "coef_")
        n_candidates = check_k(self._n_scored() if n_candidates is None else n_candidates, name="n_candidates")
        kind, Xc = check_X(X, estimator_name=type(self).__name__)
        tfidf = None
        if kind == "text" and self.vectorizer_ is not None and self.vectorizer_ is getattr(
                self.estimator_, "vectorizer_", None):  # the base's own TF-IDF: one pass serves both models
            tfidf = tfidf_transform(self.vectorizer_, Xc)
        idx, p, emb = base_candidates(self.estimator_, Xc if kind == "features" else X, n_candidates,
                                      embeddings=self.embedding_weight > 0, tfidf=tfidf, **base_params)
        bow = tfidf if tfidf is not None else self._bow(kind, Xc, fitting=False)
        psi = ranker_features(bow, emb, self.embedding_weight)
        if psi.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"X gives {psi.shape[1]} ranker features, but the ranker was fitted with "
                             f"{self.coef_.shape[1]}.")
        coef_t = getattr(self, "_coef_t", None)  # set by fit and unpickling (not stored in the pickle)
        if coef_t is None or coef_t.shape[::-1] != self.coef_.shape:
            coef_t = sp.csr_matrix(self.coef_.T)
        q = transform_margins(pair_margins(psi, self.coef_, self.intercept_, idx, WT=coef_t), self._transform_name())
        pad = idx < 0
        return idx, np.where(pad, 0.0, p).astype(np.float32), np.where(pad, 0.0, q).astype(np.float32)

    def _n_scored(self):
        # the current parameter, so that set_params after fit takes effect; "auto": the count resolved by fit
        return self.n_candidates_ if self.n_candidates == "auto" else self.n_candidates

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_coef_t", None)  # re-derived from coef_ when unpickled
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        fill_new_parameters(self)
        if getattr(self, "coef_", None) is not None:
            self._coef_t = sp.csr_matrix(self.coef_.T)

    def _raw_topk(self, X, k, embeddings=False, **predict_params):
        idx, p, q = self.candidate_scores(X, **predict_params)
        return topk_of(idx, p * q, k)


def _default_base():
    from .elias import ELIASClassifier

    return ELIASClassifier()
