"""One binary LIBLINEAR classifier per label on its candidate rows (paper Eq. 17), built vectorised.

The problems of a chunk of labels are cut from one stacked row selection of the feature
matrix (optionally with each problem's columns re-indexed to the features it uses), and
the LIBLINEAR ``problem`` structures are filled with numpy (the package's own constructor copies CSR input row by row in Python). Only
the solver call itself runs per label; it releases the GIL, so chunks run in threads.
"""

from __future__ import annotations

import ctypes
import itertools
import logging

import joblib
import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.utils import check_random_state
from tqdm.auto import tqdm

logger = logging.getLogger("skelias")

__all__ = ["LOSSES", "train_label_classifiers", "train_tree_layer"]

#: loss name -> LIBLINEAR solver id (L2-regularised)
LOSSES = {"squared_hinge": 1, "logistic": 0, "hinge": 3}


def _liblinear():
    try:
        from liblinear import liblinear as ll
        from liblinear import liblinearutil
    except ImportError as exc:  # pragma: no cover - a runtime dependency
        raise ImportError("the sparse re-ranker needs liblinear-official: pip install liblinear-official") from exc
    return ll, liblinearutil


def _seed_c_rand(seed):
    """LIBLINEAR's dual solvers draw from the C library's ``rand()``; seed it (serial runs become reproducible)."""
    try:
        ctypes.CDLL(None).srand(ctypes.c_uint(int(seed) & 0xFFFFFFFF))
    except (OSError, AttributeError):  # pragma: no cover - platforms without a global libc
        pass


def _problems(X, R, labels, bias, n_dense=0, remap=True):
    """Stacked, column-remapped rows of the problems of ``labels`` (one chunk).

    Parameters
    ----------
    X : csr_matrix (n, D) float32, sorted indices
    R : csc_matrix (n, L); non-zeros are the training rows of each label, value 2 for
        positives and 1 for negatives
    labels : ndarray of label ids (contiguous chunk)
    n_dense : int
        The last ``n_dense`` columns of X are dense (an embedding): they keep their
        order after each label's remapped sparse columns instead of being remapped.

    Returns
    -------
    dict with the shared LIBLINEAR node array, per-row node offsets, per-label row ranges,
    targets, and the global feature id of each label's remapped columns.
    """
    ll, _ = _liblinear()
    lo, hi = R.indptr[labels[0]], R.indptr[labels[-1] + 1]
    rows = R.indices[lo:hi]
    target = np.where(R.data[lo:hi] > 1.5, 1.0, -1.0)
    row_ptr = R.indptr[labels[0] : labels[-1] + 2] - lo  # label j owns stacked rows row_ptr[j]:row_ptr[j+1]
    n_lab = len(labels)
    block = np.repeat(np.arange(n_lab), np.diff(row_ptr))
    Xs = X[rows]
    nnz_row = np.diff(Xs.indptr)
    blk_nnz = np.repeat(block, nnz_row)
    D = X.shape[1]
    D_sparse = D - n_dense
    if not remap:  # every problem keeps the global column ids
        D_sparse, n_dense = 0, D
    sparse = Xs.indices < D_sparse
    # each label's used sparse columns: the pattern of a (labels × columns) matrix built in C
    # (duplicates summed), then every non-zero's rank within its label's sorted column list
    sp_blk, sp_col = blk_nnz[sparse], Xs.indices[sparse]
    B = sp.csr_matrix((np.ones(sp_col.size, np.float32), (sp_blk, sp_col)), shape=(n_lab, D_sparse))
    B.sum_duplicates()
    B.data = (np.arange(B.nnz) - np.repeat(B.indptr[:-1], np.diff(B.indptr))).astype(np.float64)
    n_sparse = np.diff(B.indptr)
    bstart = B.indptr.astype(np.int64)
    new_col = np.empty(Xs.nnz, dtype=np.int64)
    new_col[sparse] = np.asarray(B[sp_blk, sp_col]).ravel().astype(np.int64) if sp_col.size else 0
    new_col[~sparse] = n_sparse[blk_nnz[~sparse]] + (Xs.indices[~sparse] - D_sparse)
    n_cols = n_sparse + n_dense
    # LIBLINEAR rows: features (1-based), then the bias node, then the terminator (-1)
    n_rows = Xs.shape[0]
    node_ptr = Xs.indptr.astype(np.int64) + 2 * np.arange(n_rows + 1)
    nodes = np.empty(Xs.nnz + 2 * n_rows, dtype=ll.feature_node)
    pos = np.arange(Xs.nnz) + 2 * _row_index(nnz_row)
    nodes["index"][pos] = new_col + 1
    nodes["value"][pos] = Xs.data
    has_bias = bias >= 0
    nodes["index"][node_ptr[1:] - 2] = (n_cols[block] + 1) if has_bias else -1
    nodes["value"][node_ptr[1:] - 2] = bias
    nodes["index"][node_ptr[1:] - 1] = -1
    sparse_cols = B.indices.astype(np.int64)
    return {"nodes": nodes, "node_ptr": node_ptr, "row_ptr": row_ptr, "target": target, "n_cols": n_cols,
            "sparse_cols": sparse_cols, "col_ptr": bstart, "dense_cols": np.arange(D_sparse, D)}


def _row_index(nnz_row):
    """Row id of every non-zero of a CSR matrix with ``nnz_row`` non-zeros per row."""
    return np.repeat(np.arange(nnz_row.size), nnz_row)


def _solve_chunk(X, R, labels, param_str, bias, threshold, n_dense, remap, seed=None):
    ll, util = _liblinear()
    P = _problems(X, R, labels, bias, n_dense, remap)
    nodes, node_ptr, row_ptr, target = P["nodes"], P["node_ptr"], P["row_ptr"], P["target"]
    base = nodes.ctypes.data
    size = ctypes.sizeof(ll.feature_node)
    param = ll.parameter(param_str)
    w_rows, w_cols, w_vals = [], [], []
    intercept = np.zeros(len(labels), dtype=np.float32)
    for j, label in enumerate(labels):
        a, b = row_ptr[j], row_ptr[j + 1]
        y = target[a:b]
        n_pos = int((y > 0).sum())
        if n_pos == 0 or n_pos == b - a:
            # no positive: never relevant; only positives among its candidates: always relevant
            intercept[j] = 1.0 if n_pos else -1.0
            continue
        prob = ll.problem.__new__(ll.problem)
        prob.l = int(b - a)
        prob.n = int(P["n_cols"][j]) + (1 if bias >= 0 else 0)
        prob.bias = bias
        prob.x_space = nodes  # keeps the memory alive while the problem lives
        prob.y = (ctypes.c_double * prob.l)(*y) if prob.l < 64 else _c_doubles(y)
        prob.x = (ctypes.POINTER(ll.feature_node) * prob.l)()
        ptrs = np.ctypeslib.as_array(ctypes.cast(prob.x, ctypes.POINTER(ctypes.c_uint64)), (prob.l,))
        ptrs[:] = base + node_ptr[a:b] * size
        if seed is not None:  # the dual solvers draw from the C library's rand(): one seed per label
            _seed_c_rand((seed + int(label)) & 0x7FFFFFFF)
        model = util.train(prob, param)
        n_feat = model.get_nr_feature()
        w = np.ctypeslib.as_array(model.w, (n_feat + (1 if bias >= 0 else 0),)).copy()
        if model.get_labels()[0] != 1:
            w = -w
        if bias >= 0:
            intercept[j] = w[-1] * bias
            w = w[:-1]
        keep = np.abs(w) >= threshold
        cols = np.concatenate([P["sparse_cols"][P["col_ptr"][j] : P["col_ptr"][j + 1]], P["dense_cols"]])
        w_rows.append(np.full(int(keep.sum()), label, dtype=np.int64))
        w_cols.append(cols[keep])
        w_vals.append(w[keep].astype(np.float32))
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)
    return cat(w_rows, np.int64), cat(w_cols, np.int64), cat(w_vals, np.float32), labels, intercept


def _c_doubles(y):
    arr = (ctypes.c_double * len(y))()
    np.ctypeslib.as_array(arr, (len(y),))[:] = y
    return arr


def _chunks(R, chunk_nnz, X_row_nnz):
    """Contiguous label ranges whose stacked problems hold about ``chunk_nnz`` feature non-zeros."""
    cs = np.concatenate([[0], np.cumsum(X_row_nnz[R.indices])])
    cum = cs[R.indptr[1:]]  # feature non-zeros of labels 0..l together
    bounds = np.searchsorted(cum, np.arange(chunk_nnz, cum[-1] + chunk_nnz, chunk_nnz), side="right")
    bounds = np.unique(np.clip(np.concatenate([[0], bounds, [R.shape[1]]]), 0, R.shape[1]))
    return [np.arange(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def label_problems(Y, candidates):
    """The rows of every label's binary problem (Eq. 17): its candidate rows ∪ its positives.

    Returns
    -------
    csc_matrix (n_samples, n_labels) float32
        Column l holds label l's rows: 2 at a positive, 1 at a negative candidate.
    """
    cand = sp.csr_matrix(candidates, dtype=np.float32, copy=True)
    cand.data[:] = 1.0
    pos = sp.csr_matrix(Y, dtype=np.float32, copy=True)
    pos.data[:] = 2.0
    R = cand.maximum(pos).tocsc()
    R.sort_indices()
    R.eliminate_zeros()
    return R


def train_label_classifiers(X, Y, candidates, *, C=1.0, loss="squared_hinge", bias=1.0, tol=0.1,
                            weight_threshold=0.1, n_dense=0, remap_columns=False, n_jobs=None,
                            chunk_nnz=20_000_000, random_state=None, verbose=False):
    """Train w_l, b_l for every label on its positives ∪ its candidate rows (Eq. 17).

    Parameters
    ----------
    X : csr_matrix (n_samples, n_features) float32
        ψ(x), the ranker's input features.
    Y : csr_matrix (n_samples, n_labels)
        Gold labels.
    candidates : csr_matrix (n_samples, n_labels)
        Non-zeros mark each row's candidate labels (the base model's top-n); a label is
        trained on the rows where it is a candidate plus all of its positives.
    C, loss, bias, tol : LIBLINEAR ``-c``, solver (``LOSSES``), ``-B``, ``-e``.
    weight_threshold : float
        Weights with ``|w| < weight_threshold`` are dropped (model size).
    n_dense : int
        The last ``n_dense`` columns of X are dense (an embedding); they are not remapped.
    remap_columns : bool
        Re-index every problem to the sparse columns it uses: smaller LIBLINEAR weight vectors,
        but a per-chunk sort that makes the fit slower (``docs/design.md``).
    n_jobs : int or None
        Threads over label chunks (LIBLINEAR releases the GIL).

    Returns
    -------
    W : csr_matrix (n_labels, n_features) float32
    intercept : ndarray (n_labels,) float32
        The bias term's contribution ``w_bias · bias`` to the margin. Labels without any
        positive get -1; labels whose candidate rows are all positive get +1.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}.")
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    L = Y.shape[1]
    R = label_problems(Y, candidates)
    param_str = f"-s {LOSSES[loss]} -c {float(C)!r} -e {float(tol)!r} -B {float(bias)!r} -q"
    seed = None
    if random_state is not None:
        seed = int(random_state) if isinstance(random_state, (int, np.integer)) else int(
            check_random_state(random_state).randint(2**31 - 1))
    row_nnz = np.diff(X.indptr).astype(np.int64)
    total = int(row_nnz[R.indices].sum())
    n_threads = max(1, joblib.effective_n_jobs(n_jobs))
    # several chunks per worker (threads, processes or a cluster's workers) so that all stay busy, each
    # bounded in memory and not so small that the per-chunk overhead dominates
    chunks = _chunks(R, min(chunk_nnz, max(50_000, total // (4 * n_threads) + 1)), row_nnz)
    logger.info("sparse ranker: %d labels, %d training pairs, %d chunks", L, R.nnz, len(chunks))
    jobs = (delayed(_solve_chunk)(X, R, ch, param_str, bias, weight_threshold, n_dense, remap_columns, seed)
            for ch in chunks)
    # seeded fits run their chunks in processes: rand() is process-wide, so threads would interleave their draws;
    # with one seed per label the weights do not depend on n_jobs, the chunking or the joblib backend
    prefer = "processes" if seed is not None and n_threads > 1 else "threads"
    results = Parallel(n_jobs=n_jobs, prefer=prefer, return_as="generator")(jobs)
    rows, cols, vals = [], [], []
    intercept = np.zeros(L, dtype=np.float32)
    for r, c, v, labs, icpt in tqdm(results, total=len(chunks), desc="sparse ranker", disable=not verbose, leave=False):
        rows.append(r), cols.append(c), vals.append(v)
        intercept[labs] = icpt
    W = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0, np.float32),
                       (np.concatenate(rows) if rows else np.zeros(0, int),
                        np.concatenate(cols) if cols else np.zeros(0, int))),
                      shape=(L, X.shape[1]), dtype=np.float32)
    return W, intercept


# ----------------------------------------------------------------------------- shared-row problems (tree layers)
def _solve_parents(X, Y, A, units, param_str, bias, threshold, seed=None):
    """Train each unit's nodes on its parent's rows (one problem per unit).

    ``units`` is a list of ``(parent, nodes)``: nodes sharing that parent.
    All children of a parent share the parent's training rows (XR-Linear's negative sampling), so the
    LIBLINEAR node array of those rows is built once, over the columns they use, and only the targets
    change from child to child.
    """
    ll, util = _liblinear()
    size = ctypes.sizeof(ll.feature_node)
    param = ll.parameter(param_str)
    has_bias = bias >= 0
    w_rows, w_cols, w_vals, done, icpt = [], [], [], [], []
    for p, kids in units:
        rows = A.indices[A.indptr[p] : A.indptr[p + 1]]
        target = np.asarray(Y[rows][:, kids].todense()) > 0 if rows.size else np.zeros((0, kids.size), bool)
        n_pos = target.sum(axis=0)
        intercept = np.where((n_pos == rows.size) & (rows.size > 0), 1.0, -1.0).astype(np.float32)  # one class
        done.append(kids), icpt.append(intercept)
        trainable = np.flatnonzero((n_pos > 0) & (n_pos < rows.size))
        if trainable.size == 0:
            continue
        Xs = X if rows.size == X.shape[0] else X[rows]  # rows are sorted: all rows is X itself
        used = np.zeros(X.shape[1] + 1, dtype=np.int64)
        used[Xs.indices + 1] = 1
        cols = np.flatnonzero(used[1:])  # the columns these rows use, and their local ids (no sort)
        local = np.cumsum(used)[Xs.indices]
        n_rows, nnz_row = Xs.shape[0], np.diff(Xs.indptr)
        node_ptr = Xs.indptr.astype(np.int64) + 2 * np.arange(n_rows + 1)
        nodes = np.empty(Xs.nnz + 2 * n_rows, dtype=ll.feature_node)
        pos = np.arange(Xs.nnz) + 2 * _row_index(nnz_row)
        nodes["index"][pos] = local + 1
        nodes["value"][pos] = Xs.data
        nodes["index"][node_ptr[1:] - 2] = cols.size + 1 if has_bias else -1
        nodes["value"][node_ptr[1:] - 2] = bias
        nodes["index"][node_ptr[1:] - 1] = -1
        prob = ll.problem.__new__(ll.problem)
        prob.l, prob.n, prob.bias = int(n_rows), int(cols.size) + (1 if has_bias else 0), bias
        prob.x_space = nodes  # keeps the memory alive while the problem lives
        prob.x = (ctypes.POINTER(ll.feature_node) * prob.l)()
        np.ctypeslib.as_array(ctypes.cast(prob.x, ctypes.POINTER(ctypes.c_uint64)), (prob.l,))[:] = (
            nodes.ctypes.data + node_ptr[:-1] * size)
        y_arr = (ctypes.c_double * prob.l)()
        prob.y = y_arr
        y_view = np.ctypeslib.as_array(y_arr, (prob.l,))
        for j in trainable:
            y_view[:] = np.where(target[:, j], 1.0, -1.0)
            if seed is not None:  # the dual solvers draw from the C library's rand(): one seed per node
                _seed_c_rand((seed + int(kids[j])) & 0x7FFFFFFF)
            model = util.train(prob, param)
            w = np.ctypeslib.as_array(model.w, (prob.n,)).copy()
            if model.get_labels()[0] != 1:
                w = -w
            if has_bias:
                intercept[j] = w[-1] * bias
                w = w[:-1]
            keep = np.flatnonzero(np.abs(w) >= threshold)
            w_rows.append(np.full(keep.size, kids[j], dtype=np.int64))
            w_cols.append(cols[keep])
            w_vals.append(w[keep].astype(np.float32))
    cat = lambda parts, dt: np.concatenate(parts) if parts else np.zeros(0, dt)
    return (cat(w_rows, np.int64), cat(w_cols, np.int64), cat(w_vals, np.float32), cat(done, np.int64),
            cat(icpt, np.float32))


def train_tree_layer(X, Y, parent, active, *, Cp=1.0, Cn=1.0, loss="squared_hinge", bias=1.0, tol=0.1,
                     threshold=0.1, n_jobs=None, random_state=None, verbose=False, desc="layer"):
    """One layer of XR-Linear rankers: node ``k`` is trained on the rows where its parent is active.

    Parameters
    ----------
    X : csr_matrix (n_samples, n_features) float32
    Y : csr_matrix (n_samples, n_nodes)
        The layer's targets (non-zero: the row is relevant to the node).
    parent : ndarray (n_nodes,) int
        Each node's parent in ``0..n_parents-1``.
    active : csr_matrix (n_samples, n_parents)
        Non-zeros mark the parents whose children a row trains (the negative-sampling matrix M̄).
    Cp, Cn : float
        LIBLINEAR's cost of positive and negative examples (``-c 1 -w1 Cp -w-1 Cn``).
    loss, bias, tol, threshold : as :func:`train_label_classifiers`.
    n_jobs, random_state, verbose : as :func:`train_label_classifiers`.

    Returns
    -------
    W : csr_matrix (n_nodes, n_features) float32
    intercept : ndarray (n_nodes,) float32
        ``w_bias · bias``; ±1 for nodes whose rows are all relevant / none is (and for nodes without rows).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}.")
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    Y = sp.csr_matrix(Y)
    K = Y.shape[1]
    parent = np.asarray(parent, dtype=np.int64)
    A = sp.csc_matrix(active, dtype=np.float32)
    A.eliminate_zeros()
    A.sort_indices()
    n_parents = A.shape[1]
    children = np.argsort(parent, kind="stable")
    child_ptr = np.concatenate([[0], np.cumsum(np.bincount(parent, minlength=n_parents))])
    param_str = (f"-s {LOSSES[loss]} -c 1 -w1 {float(Cp)!r} -w-1 {float(Cn)!r} -e {float(tol)!r} "
                 f"-B {float(bias)!r} -q")
    seed = None
    if random_state is not None:
        seed = int(random_state) if isinstance(random_state, (int, np.integer)) else int(
            check_random_state(random_state).randint(2**31 - 1))
    # work units: a parent's children, split so that no unit costs more than a share of the layer (the top
    # layer has one parent); the cost of a child is the feature non-zeros of its parent's rows
    row_nnz = np.diff(X.indptr).astype(np.int64)
    parent_nnz = np.add.reduceat(np.concatenate([row_nnz[A.indices], [0]]), A.indptr[:-1]) * (np.diff(A.indptr) > 0)
    n_threads = max(1, joblib.effective_n_jobs(n_jobs))
    child_cost = np.maximum(parent_nnz[parent[children]], 1)
    total = int(child_cost.sum())
    if total < 20_000_000:  # a small layer: starting workers would cost more than the solves
        n_jobs, n_threads = 1, 1
    # a unit builds its parent's problem once: split a parent only to keep the threads busy
    unit_budget = max(total // (2 * n_threads), 1) if n_threads > 1 else total + 1
    budget = max(total // (8 * n_threads), 1) if n_threads > 1 else total + 1
    units, chunk_of_unit, chunk, spent = [], [], 0, 0
    for p in np.flatnonzero(np.diff(child_ptr)):
        kids = children[child_ptr[p] : child_ptr[p + 1]]
        per_unit = max(1, -(-unit_budget // max(int(parent_nnz[p]), 1)))
        for a in range(0, kids.size, per_unit):
            part = kids[a : a + per_unit]
            units.append((int(p), part))
            spent += int(child_cost[child_ptr[p] + a : child_ptr[p] + a + part.size].sum())
            chunk_of_unit.append(chunk)
            if spent >= budget:
                chunk, spent = chunk + 1, 0
    chunk_of_unit = np.asarray(chunk_of_unit)
    chunks = [[units[i] for i in np.flatnonzero(chunk_of_unit == c)] for c in np.unique(chunk_of_unit)]
    jobs = (delayed(_solve_parents)(X, Y, A, ch, param_str, bias, threshold, seed) for ch in chunks)
    prefer = "processes" if seed is not None and n_threads > 1 else "threads"
    results = Parallel(n_jobs=n_jobs, prefer=prefer, return_as="generator")(jobs)
    rows, cols, vals = [], [], []
    intercept = np.full(K, -1.0, dtype=np.float32)
    for r, c, v, nodes, icpt in tqdm(results, total=len(chunks), desc=desc, disable=not verbose, leave=False):
        rows.append(r), cols.append(c), vals.append(v)
        intercept[nodes] = icpt
    W = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(K, X.shape[1]), dtype=np.float32)
    return W, intercept
