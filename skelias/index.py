"""The ELIAS index: cluster scores, shortlisting, path scores and the learned adjacency (paper §3.1–3.4).

All scores are handled in **log space**: ``log ŝ_c = min(0, log α + log_softmax(W_C φ)_c)``
(Eq. 1) and ``log ŝ_{c,l} = min(0, log β + log_softmax(a_c)_l)`` (Eq. 5), so path
products become sums and the loss never takes the log of an underflowed product.

The adjacency matrix ``A`` (C × L, row-sparse with at most κ non-zeros per row)
is stored as two (C+1) × κ tensors (paper §3.4): ``a_indices`` (label ids, the
pad label ``L`` where a row has fewer entries) and a mask; the extra last row
(cluster id ``C``) is an all-padding row used for padded cluster slots.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "ADJACENCY_INITS",
    "approximate_adjacency",
    "cluster_log_scores",
    "dense_shortlist",
    "edge_log_scores",
    "expand_paths",
    "label_parents",
    "max_over_paths",
    "max_over_paths_dense",
    "padded_adjacency",
    "prune_edges",
    "shortlist_clusters",
    "shortlist_labels",
    "stage2_adjacency",
    "tree_preserving_values",
]

NEG_INF = float("-inf")

#: the stage-2 initialisations of A's values (see :func:`stage2_adjacency`)
ADJACENCY_INITS = ("tree", "random", "approx")


def cluster_log_scores(logits, alpha):
    """Eq. 1 in log space: ``log min(1, α·softmax(logits))``, shape (N, C)."""
    return torch.clamp(math.log(alpha) + torch.log_softmax(logits.float(), dim=-1), max=0.0)


def edge_log_scores(a_values, a_mask, beta):
    """Eq. 5 in log space: ``log min(1, β·softmax_row(a))`` over each row's non-zeros; -inf at padding.

    Parameters
    ----------
    a_values : Tensor of shape (C+1, κ), float
    a_mask : Tensor of shape (C+1, κ), bool (True = an edge)
    beta : float
    """
    a = a_values.float().masked_fill(~a_mask, NEG_INF)
    lsm = torch.log_softmax(a, dim=-1)
    out = torch.clamp(math.log(beta) + lsm, max=0.0)
    return out.masked_fill(~a_mask, NEG_INF).nan_to_num(nan=NEG_INF)  # an all-padding row gives NaN


def _dedup_rows(x, pad):
    """Replace repeated values within each row of an int tensor by ``pad`` (order not preserved)."""
    s, _ = torch.sort(x, dim=1)
    dup = torch.zeros_like(s, dtype=torch.bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    return s.masked_fill(dup, pad)


def shortlist_clusters(log_cs, beam_size, parents=None):
    """Eq. 2–4: top-b clusters, united with the gold labels' parent clusters during training.

    Parameters
    ----------
    log_cs : Tensor of shape (N, C)
        Log cluster scores.
    beam_size : int
    parents : Tensor of shape (N, P), int64, optional
        Parent cluster of each gold label, ``C`` as padding.

    Returns
    -------
    clusters : Tensor of shape (N, b') int64
        Distinct cluster ids per row; ``C`` marks padding.
    """
    C = log_cs.shape[1]
    top = torch.topk(log_cs, min(beam_size, C), dim=1).indices
    if parents is None or parents.shape[1] == 0:
        return top
    return _dedup_rows(torch.cat([top, parents], dim=1), C)


def expand_paths(clusters, log_cs, a_indices, log_es):
    """Path set of the shortlisted clusters (before the max of Eq. 6).

    Returns
    -------
    labels : Tensor of shape (N, b'·κ), int64 (pad label ``L`` = ``a_indices`` padding)
    log_path : Tensor of shape (N, b'·κ), float32: ``log ŝ_c + log ŝ_{c,l}``; -inf for padding.
    """
    N, b = clusters.shape
    C = log_cs.shape[1]
    pad = clusters >= C
    cs = torch.gather(log_cs, 1, clusters.clamp(max=C - 1)).masked_fill(pad, NEG_INF)
    rows = clusters.reshape(-1)  # row C of a_indices is all padding
    labels = a_indices.index_select(0, rows).view(N, -1)
    log_path = log_es.index_select(0, rows).view(N, b, -1).add_(cs.unsqueeze(-1))
    return labels, log_path.view(N, -1)


def _best_per_group(groups, values, dim=-1):
    """Order by ``values`` descending, then stably by ``groups``; returns (order, is_first_of_group).

    After reordering, the first entry of each group holds its maximum value.
    """
    order = torch.argsort(values, dim=dim, descending=True, stable=True)
    g = torch.gather(groups, dim, order)
    order2 = torch.argsort(g, dim=dim, stable=True)
    order = torch.gather(order, dim, order2)
    g = torch.gather(groups, dim, order)
    first = torch.ones_like(g, dtype=torch.bool)
    first.narrow(dim, 1, g.shape[dim] - 1).copy_(g.narrow(dim, 1, g.shape[dim] - 1) != g.narrow(dim, 0, g.shape[dim] - 1))
    return order, first


def max_over_paths(labels, log_path, pad_label):
    """Eq. 6: keep, for each label of a row, only its best path; the others become padding."""
    idx, first = _best_per_group(labels, log_path, dim=1)
    lab = torch.gather(labels, 1, idx)
    keep = first & (lab != pad_label)
    out_lp = torch.gather(log_path, 1, idx).masked_fill(~keep, NEG_INF)
    return lab.masked_fill(~keep, pad_label), out_lp


def max_over_paths_dense(labels, log_path, n_labels):
    """Eq. 6 into a dense (N, L+1) buffer of log ŷ (-inf where no path; column L = padding).

    ``scatter_reduce(amax)`` back-propagates to the maximal path(s); cheaper than
    sorting when N·(L+1) is moderate.
    """
    if torch.is_grad_enabled() and log_path.requires_grad:
        buf = torch.full((labels.shape[0], n_labels + 1), NEG_INF, dtype=log_path.dtype, device=log_path.device)
        out = buf.scatter_reduce(1, labels, log_path, reduce="amax", include_self=True)
    else:
        out = _scatter_max(labels, log_path, n_labels)
    return _restore_neg_inf(out)


def _scatter_max(labels, log_path, n_labels):
    """(N, L+1) buffer of each label's largest path score, filled in place (no autograd)."""
    buf = torch.full((labels.shape[0], n_labels + 1), NEG_INF, dtype=log_path.dtype, device=log_path.device)
    return buf.scatter_reduce_(1, labels, log_path, reduce="amax", include_self=True)


def _restore_neg_inf(t):
    """-inf where a kernel's amax over only -inf values left the dtype's lowest finite value instead."""
    return t.masked_fill(t <= torch.finfo(t.dtype).min, NEG_INF)


#: :func:`_shortlist_one_row` fills its buffer with distinct values in [-3·10³⁸, -2·10³⁸), far below every
#: finite log score (so the selection's pivoting does not degrade on thousands of equal values; they stay
#: distinct in float32 up to ~5·10⁶ labels, beyond which ties only slow the selection down)
_UNREACHED = -3e38


def _shortlist_one_row(labels, log_path, n_labels, K):
    """Eq. 6 and the top-K shortlist of a single prediction row (CPU, no autograd), unordered.

    The same labels as the dense path's ``torch.topk`` (up to the choice among exact ties at the K-th value)
    in about a third of its time: NumPy's introselect over a buffer whose unreached labels hold distinct
    values far below any log score, instead of thousands of equal ``-inf``. (For batches, ``torch.topk``
    over rows in parallel is as fast as NumPy on row blocks in threads.)
    """
    fill = torch.arange(n_labels + 1, dtype=torch.float32).mul_(1e38 / (n_labels + 1)).add_(_UNREACHED)
    dense = fill.unsqueeze(0).scatter_reduce_(1, labels, log_path.float(), reduce="amax", include_self=True)
    row = dense[0, :n_labels].numpy()
    K = min(K, n_labels)
    top = np.argpartition(row, n_labels - K)[n_labels - K:] if K < n_labels else np.arange(n_labels)
    top_lab = torch.from_numpy(top).unsqueeze(0)
    top_lp = torch.from_numpy(row[top]).unsqueeze(0).to(log_path.dtype)
    unreached = top_lp < -1.5e38
    return top_lab.masked_fill(unreached, n_labels), top_lp.masked_fill(unreached, NEG_INF)


class _DenseShortlist(torch.autograd.Function):
    """Eq. 6 into a dense buffer, then the top-K shortlist and the gold labels' scores, with a sparse backward.

    The gradient of a label's max-over-paths score goes to its maximal path only (one of them at an exact
    tie, where autograd's ``scatter_reduce`` would split it; ties of unsaturated scores have probability 0,
    and saturated ones pass no gradient through Eq. 1 and 5's ``min(1, ·)``). The backward is one
    (N, P) zero fill and two small scatters instead of autograd's several passes over the (N, L+1) buffer.
    """

    @staticmethod
    def forward(ctx, log_path, labels, n_labels, K, gold_labels):
        if labels.shape[0] == 1 and labels.device.type == "cpu" and gold_labels is None and not ctx.needs_input_grad[0]:
            top_lab, top_lp = _shortlist_one_row(labels, log_path, n_labels, K)
            ctx.mark_non_differentiable(top_lab)
            return top_lp, top_lab, None
        dense = _scatter_max(labels, log_path, n_labels)  # -inf (or the lowest float) where no path
        # the shortlist's order is irrelevant downstream; at prediction an unsorted selection is ~30 % cheaper
        # (training keeps the sorted one, so its summation order, and results, do not depend on this)
        top_lp, top_lab = torch.topk(dense[:, :n_labels], K, dim=1, sorted=bool(ctx.needs_input_grad[0]))
        top_lp = _restore_neg_inf(top_lp)
        top_lab = top_lab.masked_fill(torch.isneginf(top_lp), n_labels)
        gold_lp = _restore_neg_inf(torch.gather(dense, 1, gold_labels)) if gold_labels is not None else None
        if ctx.needs_input_grad[0]:
            # position of each label's maximal path (the last one written at a tie)
            best = torch.zeros(dense.shape, dtype=torch.int64, device=dense.device)
            is_max = log_path == torch.gather(dense, 1, labels)
            pos = torch.arange(labels.shape[1], device=labels.device).expand_as(labels)
            best.scatter_(1, labels.masked_fill(~is_max, n_labels), pos)
            ctx.save_for_backward(torch.gather(best, 1, top_lab),
                                  torch.gather(best, 1, gold_labels) if gold_labels is not None else None)
            ctx.path_shape = log_path.shape
        ctx.mark_non_differentiable(top_lab)
        return top_lp, top_lab, gold_lp

    @staticmethod
    def backward(ctx, grad_top, grad_lab, grad_gold):
        top_pos, gold_pos = ctx.saved_tensors
        grad = torch.zeros(ctx.path_shape, dtype=grad_top.dtype, device=grad_top.device)
        grad.scatter_add_(1, top_pos, grad_top)
        if gold_pos is not None and grad_gold is not None:
            grad.scatter_add_(1, gold_pos, grad_gold.to(grad.dtype))
        return grad, None, None, None, None


def dense_shortlist(labels, log_path, n_labels, K, gold_labels=None):
    """Eq. 6 (max over paths) and the top-K shortlist through a dense (N, L+1) buffer.

    Values equal :func:`max_over_paths_dense` followed by a top-K and a gather of the gold labels; the
    backward sends each selected label's gradient to its maximal path only (see ``_DenseShortlist``).

    Parameters
    ----------
    labels : Tensor of shape (N, P), int64
        The paths' labels (``n_labels`` = padding).
    log_path : Tensor of shape (N, P), float32
        The paths' log scores (-inf for padding).
    n_labels : int
        L.
    K : int
        Shortlist size, at most L.
    gold_labels : Tensor of shape (N, G), int64, optional
        Gold label ids (``n_labels`` = padding).

    Returns
    -------
    top_lab : Tensor of shape (N, K), int64
        The K labels of largest log ŷ (``n_labels`` where fewer are reachable); in no particular order
        unless gradients flow to ``log_path``.
    top_lp : Tensor of shape (N, K), float32
        Their log ŷ (-inf for padding).
    gold_lp : Tensor of shape (N, G), float32, or None
        log ŷ of each gold label (-inf when no path reaches it).
    """
    top_lp, top_lab, gold_lp = _DenseShortlist.apply(log_path, labels, int(n_labels), int(K), gold_labels)
    return top_lab, top_lp, gold_lp


def shortlist_labels(labels, log_path, K, pad_label):
    """Top-K labels of the path set by shortlist score (unordered when all paths fit); padding where fewer exist."""
    if K >= labels.shape[1]:  # every path fits: no selection needed (order is irrelevant downstream)
        return labels.masked_fill(torch.isneginf(log_path), pad_label), log_path
    top_lp, pos = torch.topk(log_path, K, dim=1)
    top_lab = torch.gather(labels, 1, pos).masked_fill(torch.isneginf(top_lp), pad_label)
    return top_lab, top_lp


# ----------------------------------------------------------------------------- adjacency construction
def padded_adjacency(A, n_labels, kappa=None):
    """Row-sparse C × L matrix → (a_indices, a_mask, a_values) arrays of shape (C+1, κ).

    Rows are sorted by descending value; padding uses label ``n_labels`` and a
    False mask; the extra last row is all padding.
    """
    A = sp.csr_matrix(A)
    C = A.shape[0]
    nnz = np.diff(A.indptr)
    width = int(nnz.max()) if kappa is None else int(kappa)
    width = max(width, 1)
    rows = np.repeat(np.arange(C), nnz)
    order = np.lexsort((A.indices, -A.data, rows))
    rank = np.arange(A.nnz) - A.indptr[rows[order]]
    keep = rank < width
    ind = np.full((C + 1, width), n_labels, dtype=np.int64)
    val = np.zeros((C + 1, width), dtype=np.float32)
    ind[rows[order][keep], rank[keep]] = A.indices[order][keep]
    val[rows[order][keep], rank[keep]] = A.data[order][keep]
    return ind, ind < n_labels, val


def approximate_adjacency(M, Y, kappa, fallback_parent=None):
    """Support of the stage-2 adjacency (Eq. 9–10): top-κ per row of ``A' = MᵀY``.

    Every label keeps at least one edge: a label left without any (the public
    code silently drops such labels) gets an edge to the cluster with the largest
    ``A'`` entry in its column, or to ``fallback_parent[l]`` (its stage-1 cluster)
    when its column of ``A'`` is empty. Such rows may then hold more than κ edges.

    Parameters
    ----------
    M : sparse matrix of shape (N, C)
        Top-b cluster scores of the training points (Eq. 9).
    Y : sparse matrix of shape (N, L)
    kappa : int
    fallback_parent : ndarray of shape (L,), optional

    Returns
    -------
    support : csr_matrix of shape (C, L), float32, values = A' (for inspection)
    """
    Ap = sp.csr_matrix(M.T @ Y, dtype=np.float32)
    Ap.eliminate_zeros()
    C, L = Ap.shape
    rows = np.repeat(np.arange(C), np.diff(Ap.indptr))
    order = np.lexsort((Ap.indices, -Ap.data, rows))
    rank = np.arange(Ap.nnz) - Ap.indptr[rows[order]]
    keep = order[rank < kappa]
    support = sp.csr_matrix((Ap.data[keep], (rows[keep], Ap.indices[keep])), shape=(C, L))
    missing = np.flatnonzero(np.diff(support.tocsc().indptr) == 0)
    if missing.size:
        colmax_c = np.asarray(Ap[:, missing].argmax(axis=0)).ravel()
        has = np.asarray(Ap[:, missing].max(axis=0).todense()).ravel() > 0
        if fallback_parent is None:
            fallback = np.zeros(missing.size, dtype=np.int64)
        else:
            fallback = np.asarray(fallback_parent)[missing]
        parent = np.where(has, colmax_c, fallback)
        extra = sp.csr_matrix((np.full(missing.size, 1e-6, np.float32), (parent, missing)), shape=(C, L))
        support = support + extra
    support.sort_indices()
    return support


def tree_preserving_values(a_indices, a_mask, a_prime, tree_labels, beta, new_mass=0.25, weighted=False):
    """Stage-2 starting values of A that reproduce the stage-1 tree (``adjacency_init="tree"``).

    The stage-1 edges (label ``l`` in its own cluster ``tree_labels[l]``) start at ``a = 0``;
    the edges A' = MᵀY adds start low enough that together they hold ``new_mass`` times the
    tree edges' softmax mass in their row. Under Eq. 5, a row with ``n_c`` tree edges then gives
    them ``min(1, β / (n_c · (1 + new_mass)))`` — exactly 1, i.e. the stage-1 index, whenever
    ``n_c ≤ β / (1 + new_mass)`` — and Eq. 3's parent of every label is its stage-1 cluster.

    Parameters
    ----------
    a_indices, a_mask : ndarray of shape (C+1, κ)
        Padded support (see :func:`padded_adjacency`); it must contain every tree edge.
    a_prime : ndarray of shape (C+1, κ), float
        A' = MᵀY on the support (used to spread the new edges' mass when ``weighted``).
    tree_labels : ndarray of shape (L,), int
        Stage-1 cluster of each label.
    beta : float
    new_mass : float, default=0.25
    weighted : bool, default=False
        Spread the new edges' mass in proportion to A' (floored at 1e-3 of the row's largest
        new entry) instead of evenly (which puts a few new edges at score 1 from the start).

    Returns
    -------
    a_values : ndarray of shape (C+1, κ), float32 (0 at padding)
    """
    tree_labels = np.asarray(tree_labels)
    C1 = a_indices.shape[0]
    own = a_mask & (tree_labels[np.minimum(a_indices, tree_labels.size - 1)] == np.arange(C1)[:, None])
    new = a_mask & ~own
    n_own = own.sum(axis=1, keepdims=True)
    w = np.where(new, np.maximum(a_prime, 0), 0.0) if weighted else new.astype(np.float64)
    rowmax = np.maximum(w.max(axis=1, keepdims=True), 1e-30)
    w = np.where(new, np.maximum(w / rowmax, 1e-3), 0.0)
    share = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-30)  # of the row's new mass
    # exp(a) of a new edge = new_mass · n_own · share (n_own ≥ 1 for non-empty rows; a row with no
    # tree edge — impossible for a balanced clustering — falls back to the shares alone)
    mass = new_mass * np.maximum(n_own, 1) * share
    vals = np.where(new, np.log(np.maximum(mass, 1e-30)), 0.0)
    return vals.astype(np.float32)


def stage2_adjacency(M, Y, kappa, tree_adjacency, init="tree", beta=150.0):
    """Stage-2 adjacency A: its support from Eq. 9 and its starting values.

    Parameters
    ----------
    M : sparse matrix of shape (N, C)
        Top-b cluster scores of the training points (Eq. 9, from the stage-1 model).
    Y : sparse matrix of shape (N, L)
    kappa : int
        Non-zeros per row of A.
    tree_adjacency : sparse matrix of shape (C, L)
        The stage-1 clustering (one 1 per column, :meth:`skelias.LabelTree.adjacency`).
    init : {"tree", "random", "approx"}, default="tree"
        ``"tree"``: the support also holds every stage-1 edge, with values from
        :func:`tree_preserving_values`, so that stage 2 starts from the stage-1 index.
        ``"random"``: random(0, 1) on the top-κ of A' = MᵀY (Eq. 10; drawn by
        :meth:`skelias._network.ELIASNetwork.set_adjacency`). ``"approx"``: log(A'/rowmax(A')),
        floored at log(1e-3).
    beta : float, default=150.0
        Eq. 5's multiplier (``"tree"`` only).

    Returns
    -------
    a_indices, a_mask : ndarray of shape (C+1, κ')
        Padded support (:func:`padded_adjacency`); κ' ≥ κ when a row keeps extra edges.
    a_values : ndarray of shape (C+1, κ') float32, or None for ``"random"``
    """
    if init not in ADJACENCY_INITS:
        raise ValueError(f"init must be one of {ADJACENCY_INITS}; got {init!r}.")
    tree_adjacency = sp.csr_matrix(tree_adjacency)
    tree_labels = np.asarray(tree_adjacency.argmax(axis=0)).ravel()
    L = Y.shape[1]
    support = approximate_adjacency(M, Y, kappa, fallback_parent=tree_labels)
    if init == "tree":  # the stage-1 edges stay in A's support
        support = (support + 1e-6 * tree_adjacency).tocsr()
    a_ind, a_mask, a_val = padded_adjacency(support, L)
    if init == "tree":
        return a_ind, a_mask, tree_preserving_values(a_ind, a_mask, a_val, tree_labels, beta)
    if init == "approx":
        rowmax = np.maximum(np.where(a_mask, a_val, 0).max(axis=1, keepdims=True), 1e-30)
        values = np.log(np.clip(np.where(a_mask, a_val, 0) / rowmax, 1e-3, 1.0)).astype(np.float32)
        return a_ind, a_mask, values
    return a_ind, a_mask, None


def prune_edges(A, threshold=None, top_k=None):
    """The strong edges of an index (paper App. E): ``A``'s edges with score ≥ ``threshold`` and among each
    cluster's ``top_k`` strongest; every label keeps its strongest edge, so none becomes unreachable.

    Parameters
    ----------
    A : sparse matrix (n_clusters, n_labels)
        Edge scores ŝ_{c,l} (e.g. :meth:`~skelias.ELIASClassifier.adjacency_matrix`).
    threshold : float, optional
    top_k : int, optional

    Returns
    -------
    csr_matrix (n_clusters, n_labels)
        The kept edges with their scores.
    """
    A = sp.coo_matrix(A)
    c, lab, v = A.row, A.col, A.data
    keep = np.ones(v.size, dtype=bool)
    if threshold is not None:
        keep &= v >= threshold
    if top_k is not None:  # rank of each edge within its cluster, strongest first
        order = np.lexsort((-v, c))
        first = np.searchsorted(c[order], c[order], side="left")
        rank = np.empty(v.size, dtype=np.int64)
        rank[order] = np.arange(v.size) - first
        keep &= rank < top_k
    order = np.lexsort((-v, lab))  # every label keeps its strongest edge
    is_first = np.ones(v.size, dtype=bool)
    is_first[1:] = lab[order][1:] != lab[order][:-1]
    keep[order[is_first]] = True
    return sp.csr_matrix((v[keep], (c[keep], lab[keep])), shape=A.shape)


def label_parents(a_indices, a_mask, a_values, n_labels):
    """Eq. 3: ``argmax_c a_{c,l}`` for every label, vectorised over the (C+1) × κ storage.

    Returns an int64 tensor of shape (n_labels,); labels without any edge get ``C``
    (padding), which cannot happen for adjacencies built by this module.
    """
    Cp1, kappa = a_indices.shape
    lab = a_indices[a_mask]
    val = a_values.detach().float()[a_mask]
    clu = torch.arange(Cp1, device=a_indices.device).unsqueeze(1).expand(Cp1, kappa)[a_mask]
    parent = torch.full((n_labels,), Cp1 - 1, dtype=torch.int64, device=a_indices.device)
    if lab.numel():
        order, first = _best_per_group(lab, val, dim=0)
        parent[lab[order][first]] = clu[order][first]
    return parent
