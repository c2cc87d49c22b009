"""XRLinearClassifier: PECOS's XR-Linear (a recursive tree of sparse linear rankers) as a scikit-learn estimator.

The label tree comes from PIFA label embeddings and balanced B-ary k-means (PECOS §2.1-2.2, Algorithm 1,
:mod:`skelias.cluster`); every layer of the tree gets one LIBLINEAR classifier per node, trained on the rows
where its parent is active (PECOS §2.3, Algorithm 2: teacher-forced and/or matcher-aware negatives); a
query descends the tree with beam search, each layer's score combining the parent's score with the node's
transformed margin (PECOS Eq. 11, 13).
"""

from __future__ import annotations

import numbers
import time
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import BaseEstimator, clone
from sklearn.utils import check_random_state

from ._base import (
    TopKOutputMixin,
    check_fit_input,
    fill_new_parameters,
    fit_aside,
    require_fitted,
    store_params,
    topk_of,
)
from ._labels import LabelIndexer, as_targets, is_label_matrix, target_kind
from ._liblinear import LOSSES, train_tree_layer
from ._logging import logger, verbose_logging
from ._typing import InputLike, TargetLike
from ._validation import (
    HasMethods,
    Interval,
    StrOptions,
    apply_vectorizer,
    check_k,
    check_X,
    default_vectorizer,
    non_negative_real,
    positive_int,
    positive_real,
    topk_to_indicator,
)
from .cluster import LabelTree, cluster_labels

__all__ = ["POST_PROCESSORS", "XRLinearClassifier"]


def _hinge(p):
    return lambda m: np.exp(-np.maximum(0.0, 1.0 - m) ** p)


def _log_hinge(p):
    return lambda m: -(np.maximum(0.0, 1.0 - m) ** p)


def _sigmoid(m):
    return 1.0 / (1.0 + np.exp(-m))


def _log_sigmoid(m):
    return -np.logaddexp(0.0, -m)


#: post-processor name -> (transform of a node's margin, how it combines with the parent's score)
POST_PROCESSORS = {
    "noop": (lambda m: m, "replace"),  # PECOS Eq. 12: the ranker's score only
    "sigmoid": (_sigmoid, "mul"),
    "log-sigmoid": (_log_sigmoid, "add"),
    **{f"l{p}-hinge": (_hinge(p), "mul") for p in (1, 2, 3, 4)},  # Eq. 13 is p = 3
    **{f"log-l{p}-hinge": (_log_hinge(p), "add") for p in (1, 2, 3, 4)},
}

NEGATIVE_SAMPLING = ("tfn", "man", "tfn+man")


def _children_table(parent, n_parents):
    """(n_parents, max_children) node ids of each parent's children, -1 padded (ascending id)."""
    order = np.argsort(parent, kind="stable")
    counts = np.bincount(parent, minlength=n_parents)
    width = max(1, int(counts.max(initial=0)))
    table = np.full((n_parents, width), -1, dtype=np.int64)
    slot = np.arange(order.size) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    table[parent[order], slot] = order
    return table


def _layer_targets(Y, chain):
    """Y^(t) for every layer, top to bottom: Y^(D) = Y and Y^(t) = binarize(Y^(t+1) C^(t+1)) (Algorithm 2)."""
    out = [sp.csr_matrix(Y, dtype=np.float32)]
    for C in reversed(chain[1:]):
        Yt = (out[0] @ C).tocsr()
        Yt.data[:] = 1.0
        out.insert(0, Yt)
    return out


def _beam_step(X, W_T, intercept, children, beam_idx, beam_score, width, post_processor):
    """Expand every row's beam by one layer and keep its ``width`` best nodes.

    Parameters
    ----------
    X : csr_matrix (n, D) float32
    W_T : csr_matrix (D, K_t) float32, the layer's classifiers (transposed)
    intercept : ndarray (K_t,) float32
    children : ndarray (K_{t-1}, max_children) int64, -1 padded
    beam_idx : ndarray (n, b) int64 parent nodes, -1 padded
    beam_score : ndarray (n, b) float32 their scores
    width : int, nodes kept per row
    post_processor : key of :data:`POST_PROCESSORS`

    Returns
    -------
    beam_idx, beam_score : ndarrays (n, width), best first, -1 / -inf padded
    """
    n = beam_idx.shape[0]
    cand = children[np.maximum(beam_idx, 0)]  # (n, b, max_children)
    cand[beam_idx < 0] = -1
    cand = cand.reshape(n, -1)
    parent_score = np.repeat(beam_score, children.shape[1], axis=1)
    valid = cand >= 0
    margin = np.zeros(cand.shape, dtype=np.float32)
    rows = np.nonzero(valid)[0]
    if rows.size:
        cols = cand[valid]
        margin[valid] = _pair_margins(X, W_T, rows, cols) + intercept[cols]
    transform, combine = POST_PROCESSORS[post_processor]
    h = transform(margin.astype(np.float64))
    if combine == "mul":
        score = parent_score * h
    elif combine == "add":
        score = parent_score + h
    else:
        score = h
    return _best(cand, score.astype(np.float32), width)


def _pair_margins(X, W_T, rows, cols, max_cells=4_000_000):
    """``x_rowsᵀ w_cols`` for sorted ``rows``: each block of rows' margins accumulated densely, then gathered."""
    n, K = X.shape[0], W_T.shape[1]
    step = max(1, max_cells // max(K, 1))
    out = np.empty(rows.size, dtype=np.float32)
    bounds = np.searchsorted(rows, np.arange(0, n + step, step))
    for a, lo, hi in zip(range(0, n, step), bounds[:-1], bounds[1:], strict=False):
        if hi > lo:
            b = min(a + step, n)
            if b - a <= 4:  # a few rows (single queries): numpy, without scipy's per-call overhead
                dense = _dense_margins(X.indptr[a : b + 1] - X.indptr[a], X.indices[X.indptr[a] : X.indptr[b]],
                                       X.data[X.indptr[a] : X.indptr[b]], W_T, b - a)
            else:  # blocks of rows: scipy's sparse product (compiled, and it releases the GIL)
                dense = (X[a:b] @ W_T).toarray()
            out[lo:hi] = dense[rows[lo:hi] - a, cols[lo:hi]]
    return out


def _dense_margins(indptr, indices, data, W_T, n):
    """(n, K) dense ``X W`` of CSR rows ``(indptr, indices, data)``: gather the weight rows of each feature
    (W_T is CSR by feature) and accumulate them with one ``bincount``."""
    K = W_T.shape[1]
    starts, lens = W_T.indptr[indices], np.diff(W_T.indptr)[indices]
    total = int(lens.sum())
    if total == 0:
        return np.zeros((n, K), dtype=np.float32)
    offs = np.cumsum(lens) - lens
    pos = np.arange(total) - np.repeat(offs - starts, lens)  # positions in W_T of every (feature, node) weight
    row_of_nnz = np.repeat(np.arange(n), np.diff(indptr))
    key = np.repeat(row_of_nnz * K, lens) + W_T.indices[pos]
    vals = W_T.data[pos] * np.repeat(data, lens)
    return np.bincount(key, weights=vals, minlength=n * K).reshape(n, K).astype(np.float32)


def _best(cand, score, width):
    """Each row's ``width`` best candidates (ties: any order), best first; -1 / -inf padded."""
    s = np.where(cand >= 0, score, -np.inf).astype(np.float32)
    if width < s.shape[1]:
        part = np.argpartition(-s, width - 1, axis=1)[:, :width]
        cand, s = np.take_along_axis(cand, part, 1), np.take_along_axis(s, part, 1)
    return topk_of(cand, s, width)


class XRLinearClassifier(TopKOutputMixin, BaseEstimator):
    """PECOS's XR-Linear: a label tree of sparse linear rankers searched with a beam (PECOS §2-3).

    The labels are clustered into a balanced tree by PIFA embeddings (label centroids of the training
    rows' features) and recursive balanced spherical 2-means down to leaves of at most ``max_leaf_size``
    labels, whose codes are grouped ``branching_factor`` at a time into the layers above (as PECOS builds
    its ``branching_factor``-ary tree). Every layer ``t``
    of the tree has one L2-regularised LIBLINEAR classifier per node, trained on the rows whose parent
    node is active in the negative-sampling matrix M̄ (PECOS Algorithm 2): teacher-forced negatives
    (``"tfn"``: the parents of the row's own labels), matcher-aware negatives (``"man"``: the parents the
    layers above put in the row's beam) or both. Small weights are pruned (``threshold``), so the model
    stays sparse. A query keeps the ``beam_size`` best nodes per layer; a node's score combines its
    parent's score with its transformed margin (``post_processor``; PECOS Eq. 11, 13).

    Parameters
    ----------
    vectorizer : TfidfVectorizer or None, default=None
        Used when ``X`` is raw text. ``None``: :func:`skelias.default_vectorizer` of the training
        texts (character 3–5-grams for short texts, word 1–2 grams otherwise).
    branching_factor : int, default=16
        Children per node of the layers above the leaf clusters (PECOS's ``nr_splits``).
    max_leaf_size : int, default=100
        Labels per leaf cluster at most; there are ``2 ** ceil(log2(n_labels / max_leaf_size))`` leaf clusters.
    hierarchy : LabelTree, list of sparse matrices, or None, default=None
        A given label tree instead of clustering: a :class:`~skelias.cluster.LabelTree` over the
        ``classes_`` order, or PECOS's chain of indexing matrices ``[C^(1), ..., C^(D)]``, ``C^(t)`` of
        shape (K_t, K_{t-1}) with one non-zero per row, ``K_0 = 1`` and ``K_D = n_labels``.
    negative_sampling : {"tfn", "man", "tfn+man"}, default="tfn"
        The training rows of each node: teacher-forced (TFN), matcher-aware (MAN, from a beam search
        of the layers above over the training rows, with ``beam_size``) or their union.
    loss : {"squared_hinge", "logistic", "hinge"}, default="squared_hinge"
        LIBLINEAR's L2-regularised dual solver for this loss (PECOS's default is the squared hinge).
    Cp, Cn : float, default=1.0
        Cost of positive and negative examples.
    bias : float, default=1.0
        Value of the bias feature appended to every row (LIBLINEAR ``-B``); < 0: no bias.
    tol : float, default=0.1
        LIBLINEAR's stopping tolerance ``-e``.
    threshold : float, default=0.1
        Weights with absolute value below it are dropped (model size and speed; PECOS's default).
    beam_size : int, default=10
        Nodes kept per layer at prediction (read at predict time; ``predict_topk(X, k, beam_size=...)``
        overrides it for one call).
    post_processor : str, default="l3-hinge"
        How a margin m becomes a score and combines along the path: ``"l3-hinge"`` multiplies
        ``exp(-max(0, 1 - m)³)`` into the parent's score (PECOS's default); ``"l1-hinge"`` …
        ``"l4-hinge"``, ``"sigmoid"`` likewise; the ``"log-"`` variants add logarithms; ``"noop"`` keeps
        the margin of the last layer only (PECOS Eq. 12). Read at predict time.
    k : int, default=5
        Labels per row returned by :meth:`predict`.
    n_jobs : int or None, default=None
        Threads for the LIBLINEAR solves and for batch prediction (blocks of rows).
    random_state : int, RandomState or None, default=None
        Seeds the k-means initialisation and LIBLINEAR's dual solvers (one seed per node; seeded fits
        run their chunks in processes, so the model is the same for any ``n_jobs``).
    verbose : int, default=0
        > 0: one log line per layer and progress bars.

    Attributes
    ----------
    classes_ : ndarray (n_labels,)
        Label of each column (column indices when fitted on an indicator matrix).
    label_indexer_ : LabelIndexer
    vectorizer_ : the fitted vectorizer (raw-text input) or None
    indexing_chain_ : list of csr_matrix float32
        The label tree as PECOS's indexing matrices ``[C^(1), ..., C^(D)]``, ``C^(t)`` of shape
        (K_t, K_{t-1}) mapping each node to its parent; the last one maps the labels to the leaf clusters.
    coef_ : list of csr_matrix (K_t, n_features) float32
        The pruned classifiers of every layer, top to bottom; the last one has a row per label.
    intercept_ : list of ndarray (K_t,) float32
    parents_ : list of ndarray (K_t,) int64
        Each node's parent in the layer above.
    label_frequency_ : ndarray (n_labels,) float32
        Training positives of each label.
    fit_time_ : dict
        Seconds in clustering and in each layer's solves.
    n_features_in_ : int

    Examples
    --------
    >>> from skelias import XRLinearClassifier
    >>> texts = ["boil pasta in salted water", "bake bread with yeast", "pasta with tomato sauce",
    ...          "sourdough bread starter", "fresh egg pasta dough", "rye bread loaf"] * 20
    >>> tags = [["pasta"], ["bread"], ["pasta", "sauce"], ["bread"], ["pasta"], ["bread"]] * 20
    >>> xr = XRLinearClassifier(vectorizer=None, random_state=0).fit(texts, tags)
    >>> labels, scores = xr.predict_topk(["bread with yeast"], k=1)
    >>> labels[0, 0]
    'bread'
    """

    _parameter_constraints: ClassVar[dict] = {
        "vectorizer": [None, HasMethods(["fit", "transform"])],
        "branching_factor": [Interval(numbers.Integral, 2, None, closed="left")],
        "max_leaf_size": [positive_int],
        "hierarchy": [None, LabelTree, list],
        "negative_sampling": [StrOptions(set(NEGATIVE_SAMPLING))],
        "loss": [StrOptions(set(LOSSES))],
        "Cp": [positive_real],
        "Cn": [positive_real],
        "bias": [Interval(numbers.Real, None, None, closed="neither")],
        "tol": [positive_real],
        "threshold": [non_negative_real],
        "beam_size": [positive_int],
        "post_processor": [StrOptions(set(POST_PROCESSORS))],
        "k": [positive_int],
        "n_jobs": [None, numbers.Integral],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, vectorizer=None, branching_factor=16, max_leaf_size=100, hierarchy=None,
                 negative_sampling="tfn", loss="squared_hinge", Cp=1.0, Cn=1.0, bias=1.0, tol=0.1, threshold=0.1,
                 beam_size=10, post_processor="l3-hinge", k=5, n_jobs=None, random_state=None, verbose=0):
        store_params(self, locals())

    def fit(self, X: InputLike, y: TargetLike) -> XRLinearClassifier:
        """Cluster the labels into a tree and train every layer's rankers.

        Parameters
        ----------
        X : list of str, or sparse matrix / ndarray of shape (n_samples, n_features)
        y : sparse matrix of shape (n_samples, n_labels), or sequence of label collections
            Indicator matrix or labels (see :class:`skelias.LabelIndexer`).

        Returns
        -------
        self
        """
        with verbose_logging(self.verbose):
            return fit_aside(self, type(self)._fit, X, as_targets(y))

    # ------------------------------------------------------------------ fit steps
    def _fit(self, X, y):
        self._validate_params()
        kind, Xc, _ = check_fit_input(self, X, y)
        self.label_indexer_ = LabelIndexer().fit(y)
        Y = self.label_indexer_.transform(y)
        if Y.nnz == 0:
            raise ValueError("y has no positive label at all; there is nothing to learn.")
        self._fitted_on_matrix = is_label_matrix(y)
        self._y_kind = target_kind(y)
        self.classes_ = self.label_indexer_.classes_
        self.label_frequency_ = np.asarray(Y.sum(axis=0), dtype=np.float32).ravel()
        if kind == "text":
            self.vectorizer_ = clone(self.vectorizer if self.vectorizer is not None else default_vectorizer(Xc)).fit(Xc)
        else:
            self.vectorizer_ = None
        Xf = self._features(kind, Xc)
        self.n_features_in_ = Xf.shape[1]
        rs = check_random_state(self.random_state)
        self.fit_time_ = {}
        t0 = time.perf_counter()
        chain = self._indexing_chain(Xf, Y, rs)
        self.indexing_chain_ = chain
        self.fit_time_["tree"] = time.perf_counter() - t0
        self._train_layers(Xf, Y, chain, rs)
        return self

    def _features(self, kind, X):
        """The model's input features: CSR float32 with sorted indices."""
        Xf = apply_vectorizer(kind, X, self.vectorizer_)
        Xf = sp.csr_matrix(Xf, dtype=np.float32)
        if not Xf.has_sorted_indices:
            Xf.sort_indices()
        return Xf

    def _indexing_chain(self, Xf, Y, rs):
        """PECOS's indexing matrices ``[C^(1), ..., C^(D)]`` of the label tree (given or clustered)."""
        L = Y.shape[1]
        if isinstance(self.hierarchy, list):
            return _check_chain(self.hierarchy, L)
        if isinstance(self.hierarchy, LabelTree):
            if self.hierarchy.n_labels != L:
                raise ValueError(f"hierarchy has {self.hierarchy.n_labels} labels but y has {L}.")
            return self.hierarchy.indexing_matrices()
        # as PECOS: recursive balanced 2-means down to leaves of <= max_leaf_size labels, whose left-to-right
        # codes are then grouped branching_factor at a time into the layers above
        tree = cluster_labels(Y, Xf, max_leaf_size=self.max_leaf_size, branching=2,
                              random_state=rs.randint(2**31 - 1), verbose=bool(self.verbose))
        return grouped_chain(tree.labels_, tree.n_clusters, self.branching_factor)

    def _train_layers(self, Xf, Y, chain, rs):
        """Algorithm 2: train the layers top to bottom, each on its negative-sampling matrix M̄^(t)."""
        n = Xf.shape[0]
        targets = _layer_targets(Y, chain)
        self.coef_, self.intercept_, self.parents_ = [], [], []
        self._children = []
        beam_idx, beam_score = np.zeros((n, 1), np.int64), np.ones((n, 1), np.float32)
        seed = rs.randint(2**31 - 1) if self.random_state is not None else None
        for t, C in enumerate(chain):
            t0 = time.perf_counter()
            parent = C.indices.astype(np.int64)  # one non-zero per row: the node's parent
            n_parents = C.shape[1]
            tfn = targets[t - 1] if t > 0 else sp.csr_matrix(np.ones((n, 1), np.float32))
            if self.negative_sampling == "tfn":
                active = tfn
            else:
                man = topk_to_indicator(beam_idx, n_parents)
                active = man if self.negative_sampling == "man" else (tfn + man)
            W, b = train_tree_layer(Xf, targets[t], parent, active, Cp=self.Cp, Cn=self.Cn, loss=self.loss,
                                    bias=self.bias, tol=self.tol, threshold=self.threshold, n_jobs=self.n_jobs,
                                    random_state=None if seed is None else seed + 7919 * t,
                                    verbose=bool(self.verbose), desc=f"layer {t + 1}/{len(chain)}")
            self.coef_.append(W)
            self.intercept_.append(b)
            self.parents_.append(parent)
            self._children.append(_children_table(parent, n_parents))
            if "man" in self.negative_sampling and t + 1 < len(chain):
                beam_idx, beam_score = _beam_step(Xf, W.T.tocsr(), b, self._children[-1], beam_idx, beam_score,
                                                  self.beam_size, self.post_processor)
            self.fit_time_[f"layer {t + 1}"] = time.perf_counter() - t0
            logger.info("XR-Linear layer %d/%d: %d nodes, %d weights, %.1f s", t + 1, len(chain), W.shape[0], W.nnz,
                        self.fit_time_[f"layer {t + 1}"])
        self._derive_search_tables()

    # ------------------------------------------------------------------ prediction
    def _n_scored(self):
        return self.beam_size * self._children[-1].shape[1]

    def _raw_topk(self, X, k, beam_size=None, post_processor=None, tfidf=None):
        """Beam search down the tree: (indices (n, k) int64 -1 padded, scores (n, k) float32 descending)."""
        require_fitted(self, "coef_")
        beam = check_k(self.beam_size if beam_size is None else beam_size)
        post = self.post_processor if post_processor is None else post_processor
        if post not in POST_PROCESSORS:
            raise ValueError(f"post_processor must be one of {sorted(POST_PROCESSORS)}; got {post!r}.")
        if tfidf is not None and self.vectorizer_ is not None:
            Xf = sp.csr_matrix(tfidf, dtype=np.float32)
        else:
            kind, Xc = check_X(X, n_features=None if self.vectorizer_ is not None else self.n_features_in_,
                               estimator_name=type(self).__name__)
            Xf = self._features(kind, Xc)
        n = Xf.shape[0]
        n_threads = max(1, effective_n_jobs(self.n_jobs))
        if n_threads == 1 or n < 512:
            return self._descend(Xf, k, beam, post)
        step = max(256, -(-n // (4 * n_threads)))  # rows are independent: blocks of rows in threads
        parts = Parallel(n_jobs=n_threads, prefer="threads")(
            delayed(self._descend)(Xf[a : a + step], k, beam, post) for a in range(0, n, step))
        return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])

    def _descend(self, Xf, k, beam, post):
        """Beam search of the rows of ``Xf`` through every layer."""
        n = Xf.shape[0]
        idx = np.zeros((n, 1), np.int64)
        score = np.full((n, 1), 0.0 if post.startswith("log") else 1.0, np.float32)
        depth = len(self._coef_t)
        for t in range(depth):
            width = k if t == depth - 1 else beam
            idx, score = _beam_step(Xf, self._coef_t[t], self.intercept_[t], self._children[t], idx, score, width, post)
        return idx, score

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_coef_t", None)  # derived from coef_ and parents_
        state.pop("_children", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        fill_new_parameters(self)
        if "coef_" in state:
            self._derive_search_tables()

    def _derive_search_tables(self):
        """The transposed classifiers and each layer's children table, from ``coef_`` and ``parents_``."""
        self._coef_t = [W.T.tocsr() for W in self.coef_]
        sizes = [1] + [W.shape[0] for W in self.coef_[:-1]]
        self._children = [_children_table(p, k) for p, k in zip(self.parents_, sizes, strict=True)]


def grouped_chain(leaf_of_label, n_leaves, branching):
    """PECOS's chain of indexing matrices for leaf codes grouped ``branching`` at a time.

    Parameters
    ----------
    leaf_of_label : ndarray (n_labels,) int
        Leaf cluster of each label, ``0..n_leaves-1``, siblings adjacent (as :class:`LabelTree` numbers them).
    n_leaves : int
    branching : int

    Returns
    -------
    chain : list of csr_matrix float32
        ``chain[t]`` of shape (K_{t+1}, K_t) maps each node to its parent (``K_0 = 1``); node ``i`` of a
        layer has parent ``i // branching``; the last matrix maps the labels to their leaves.
    """
    sizes = [int(n_leaves)] if n_leaves > 1 else []
    while sizes and sizes[0] > branching:
        sizes.insert(0, -(-sizes[0] // branching))
    chain, k_prev = [], 1
    for k in sizes:
        parent = np.zeros(k, np.int64) if k_prev == 1 else np.arange(k) // branching
        chain.append(sp.csr_matrix((np.ones(k, np.float32), (np.arange(k), parent)), shape=(k, k_prev)))
        k_prev = k
    leaf = np.asarray(leaf_of_label, dtype=np.int64)
    chain.append(sp.csr_matrix((np.ones(leaf.size, np.float32), (np.arange(leaf.size), leaf)), shape=(leaf.size, k_prev)))
    return chain


def _check_chain(chain, n_labels):
    """Validate a user-given chain of indexing matrices (PECOS's ``C^(t)``, top to bottom)."""
    if not chain:
        raise ValueError("hierarchy is an empty list; give the indexing matrices C^(1) ... C^(D).")
    out, k_prev = [], 1
    for t, C in enumerate(chain):
        if not sp.issparse(C) and not isinstance(C, np.ndarray):
            raise TypeError(f"hierarchy[{t}] must be a sparse matrix or ndarray, not {type(C).__name__}.")
        C = sp.csr_matrix(C, dtype=np.float32)
        C.eliminate_zeros()
        if C.shape[1] != k_prev:
            raise ValueError(f"hierarchy[{t}] has {C.shape[1]} columns; it must have one per node of the layer "
                             f"above ({k_prev}).")
        if np.any(np.diff(C.indptr) != 1):
            raise ValueError(f"hierarchy[{t}] must have exactly one non-zero per row (each node's parent).")
        C.sort_indices()
        out.append(C)
        k_prev = C.shape[0]
    if k_prev != n_labels:
        raise ValueError(f"the last matrix of hierarchy has {k_prev} rows; it must have one per label ({n_labels}).")
    return out
