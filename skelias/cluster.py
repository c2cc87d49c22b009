"""Label embeddings (PIFA) and recursive balanced k-means label clustering.

This is the index initialisation of ELIAS stage 1 (paper Appendix D.1) and the
label-indexing step of PECOS (JMLR 2022, Section 2.1, Algorithm 1):

1. :func:`pifa` builds label centroids
   ``mu_l = normalize(sum_{i: y_il = 1} psi(x_i))`` with
   ``psi(x) = [bow(x)/||bow(x)||, phi(x)/||phi(x)||]`` (paper Eq. 14-15).
2. :func:`balanced_kmeans` partitions the labels recursively with B-ary
   (default binary) spherical k-means into ``C`` clusters whose sizes are all
   ``floor(L/C)`` or ``ceil(L/C)``, and returns the whole hierarchy as a
   :class:`LabelTree`.

Implementation notes
--------------------
All nodes of one tree level are clustered at once ("level-synchronous"):
centroid sums, norms and label-to-centroid similarities are computed with
``np.bincount`` over the non-zeros of the sparse block (and a sparse-dense
product for a dense block), so there is no Python loop over nodes, labels or
samples — only over levels, k-means iterations and the B children. Sparse
embeddings stay sparse: each node's centroids are stored only on the features
that occur in its labels.

Balance is exact: each node is cut into children whose label counts are fixed
in advance so that every leaf ends with ``floor(L/C)`` or ``ceil(L/C)`` labels
(also when ``C`` is not a power of B). For B = 2 the assignment step is the
median cut on ``<c_1 - c_2, z>`` of PECOS; for B > 2 children are filled in
turn with the labels of largest margin ``s_j - max_{j' > j} s_j'``.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize
from sklearn.utils import check_random_state

from ._labels import check_label_matrix

__all__ = ["LabelTree", "balanced_kmeans", "cluster_labels", "default_n_clusters", "pifa"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- helpers
def _as_blocks(Z, name="Z"):
    """Return Z as a list of blocks: CSR float32 (sorted indices) and/or C-contiguous float32 arrays."""
    blocks = list(Z) if isinstance(Z, (list, tuple)) else [Z]
    if not blocks:
        raise ValueError(f"{name} has no block.")
    out = []
    for b in blocks:
        if sp.issparse(b):
            b = sp.csr_matrix(b, dtype=np.float32)
            b.sum_duplicates()
            data = b.data
        elif isinstance(b, np.ndarray) or hasattr(b, "__array__"):
            b = np.ascontiguousarray(b, dtype=np.float32)
            if b.ndim != 2:
                raise ValueError(f"{name} blocks must be 2-D; got shape {b.shape}.")
            data = b
        else:
            raise TypeError(f"{name} must be a sparse matrix, an ndarray, or a list of them; got {type(b).__name__}.")
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{name} contains NaN or infinite values.")
        out.append(b)
    if len({b.shape[0] for b in out}) != 1:
        raise ValueError(f"{name} blocks have different numbers of rows: {[b.shape[0] for b in out]}.")
    return out


def _row_sq_norms(block):
    if sp.issparse(block):
        return np.asarray(block.multiply(block).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", block, block, dtype=np.float64)


def default_n_clusters(n_labels, max_leaf_size=100, branching=2):
    """``branching ** ceil(log_branching(n_labels / max_leaf_size))``, at least 1 and at most ``n_labels``.

    With ``branching=2`` this is ELIAS's ``C = 2**ceil(log2(L / max_leaf))``.

    Parameters
    ----------
    n_labels : int
        L.
    max_leaf_size : int, default=100
        Labels per cluster aimed at.
    branching : int, default=2
        Children per tree node.

    Returns
    -------
    int
    """
    if n_labels <= max_leaf_size:
        return 1
    depth = math.ceil(math.log(n_labels / max_leaf_size) / math.log(branching) - 1e-12)
    return int(min(branching**depth, n_labels))


# ----------------------------------------------------------------------------- PIFA
def pifa(Y, X=None, X_dense=None, *, normalize_y=False):
    """Positive-instance feature aggregation: label centroids (paper Eq. 14-15).

    ``mu_l = normalize(sum_{i: Y_il != 0} [X_i/||X_i||, X_dense_i/||X_dense_i||])``

    Parameters
    ----------
    Y : sparse matrix or ndarray of shape (n_samples, n_labels)
        Training indicator matrix.
    X : sparse matrix or ndarray of shape (n_samples, n_features), optional
        Instance features, typically TF-IDF (kept sparse).
    X_dense : ndarray of shape (n_samples, dim), optional
        A second block, typically dense encoder embeddings phi(x).
    normalize_y : bool, default=False
        L2-normalise the rows of Y first (PECOS's ``normalized_Y=True``
        variant). The paper and the ELIAS code do not.

    Returns
    -------
    Z : csr_matrix (n_labels, n_features) float32, ndarray (n_labels, dim) float32, or list of both
        One block per input block (in the order X, X_dense). The concatenated
        rows have unit L2 norm; labels without positives get an all-zero row.
    """
    Yc = check_label_matrix(Y)
    inputs = [b for b in (X, X_dense) if b is not None]
    if not inputs:
        raise ValueError("pifa needs at least one feature block (X and/or X_dense).")
    blocks = _as_blocks(inputs, name="X")
    if blocks[0].shape[0] != Yc.shape[0]:
        raise ValueError(f"Y has {Yc.shape[0]} rows but X has {blocks[0].shape[0]}.")
    if normalize_y:
        Yc = normalize(Yc, norm="l2", axis=1, copy=False)
    Yt = Yc.T.tocsr()
    out = []
    for b in blocks:
        bn = normalize(b, norm="l2", axis=1, copy=True)  # psi(x): each block row-normalised (Eq. 14)
        M = Yt @ bn
        out.append(sp.csr_matrix(M, dtype=np.float32) if sp.issparse(M) else np.ascontiguousarray(M, dtype=np.float32))
    norms = np.sqrt(sum(_row_sq_norms(b) for b in out))  # joint norm over the concatenation (Eq. 15)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
    out = [sp.diags(inv) @ b if sp.issparse(b) else b * inv[:, None] for b in out]
    out = [sp.csr_matrix(b, dtype=np.float32) if sp.issparse(b) else b for b in out]
    return out[0] if len(out) == 1 else out


# ----------------------------------------------------------------------------- result
@dataclass
class LabelTree:
    """A balanced label hierarchy produced by :func:`balanced_kmeans`.

    Attributes
    ----------
    levels : list of ndarray of shape (n_labels,), dtype int64
        ``levels[t][l]`` is the node holding label ``l`` at depth ``t + 1``
        (the root, depth 0, is implicit). Node ids at each depth are 0..n-1 in
        left-to-right order; ``levels[-1]`` is the leaf cluster of each label.
        Empty when ``n_clusters == 1``.
    n_labels : int
        Number of labels L.
    n_clusters : int
        Number of leaf clusters C.
    branching : int
        Maximum number of children per node.
    """

    n_labels: int
    n_clusters: int = 1
    branching: int = 2
    levels: list = field(default_factory=list)

    @property
    def labels_(self):
        """Leaf cluster of each label, ndarray of shape (n_labels,)."""
        return self.levels[-1] if self.levels else np.zeros(self.n_labels, dtype=np.int64)

    @property
    def depth(self):
        return len(self.levels)

    def cluster_sizes(self) -> np.ndarray:
        """Number of labels in each leaf cluster, ndarray of shape (n_clusters,)."""
        return np.bincount(self.labels_, minlength=self.n_clusters)

    def adjacency(self) -> sp.csr_matrix:
        """Cluster-to-label matrix ``A`` of shape (n_clusters, n_labels), CSR float32 with one 1 per column.

        This is ELIAS's stage-1 adjacency (paper Section 3.4 / App. D.1).
        """
        lab = self.labels_
        L = lab.size
        return sp.csr_matrix(
            (np.ones(L, dtype=np.float32), (lab, np.arange(L))), shape=(self.n_clusters, L)
        )

    def indexing_matrices(self) -> list[sp.csr_matrix]:
        """PECOS-style chain of indexing matrices, top to bottom.

        Returns
        -------
        chain : list of csr_matrix (float32)
            ``chain[t]`` has shape (n_nodes at depth t+1, n_nodes at depth t)
            and maps each node to its parent; the last matrix has shape
            (n_labels, n_clusters) and maps labels to leaf clusters.
        """
        chain = []
        prev = np.zeros(self.n_labels, dtype=np.int64)
        n_prev = 1
        for lev in self.levels:
            n_cur = int(lev.max()) + 1
            parent = np.zeros(n_cur, dtype=np.int64)
            parent[lev] = prev
            chain.append(sp.csr_matrix((np.ones(n_cur, np.float32), (np.arange(n_cur), parent)), shape=(n_cur, n_prev)))
            prev, n_prev = lev, n_cur
        L = self.n_labels
        chain.append(sp.csr_matrix((np.ones(L, np.float32), (np.arange(L), prev)), shape=(L, n_prev)))
        return chain


# ----------------------------------------------------------------------------- one tree level
class _SparseBlock:
    """A sparse embedding block with its column-major order precomputed once.

    ``cm_rows[t]``/``cm_cols[t]`` are the row and column of the t-th non-zero in
    column-major order and ``cm_pos[t]`` its position in the CSR (row-major) data.
    """

    def __init__(self, Z):
        self.Z = Z
        n, D = Z.shape
        idx = np.int32 if max(Z.nnz, n, D) < 2**31 - 1 else np.int64
        pos = sp.csr_matrix((np.arange(Z.nnz, dtype=np.float64), Z.indices, Z.indptr), shape=(n, D)).tocsc()
        self.cm_pos = pos.data.astype(idx)
        self.cm_rows = pos.indices.astype(idx)
        self.cm_cols = np.repeat(np.arange(D, dtype=idx), np.diff(pos.indptr))

    def node_local(self, node_of_label, n_nodes):
        """Re-index columns to node-local features: returns P (L x U, CSR float32) and the node of each column u."""
        small = n_nodes < 65535
        nn = node_of_label.astype(np.uint16 if small else np.int64)
        nn[node_of_label < 0] = n_nodes  # labels not split at this level: a dummy node, never scored
        nn = nn[self.cm_rows]
        # stable radix sort by node keeps the column-major order inside each node
        order = np.argsort(nn, kind="stable")
        nn_s, col_s = nn[order], self.cm_cols[order]
        change = np.empty(order.size, dtype=bool)
        change[:1] = True
        np.not_equal(col_s[1:], col_s[:-1], out=change[1:])
        change[1:] |= nn_s[1:] != nn_s[:-1]
        starts = np.flatnonzero(change)
        u_sorted = np.repeat(np.arange(starts.size, dtype=self.cm_pos.dtype), np.diff(np.append(starts, order.size)))
        u = np.empty(order.size, dtype=self.cm_pos.dtype)
        u[self.cm_pos[order]] = u_sorted
        P = sp.csr_matrix((self.Z.data, u, self.Z.indptr), shape=(self.Z.shape[0], starts.size))
        return P, nn_s[starts].astype(np.int64)


class _Level:
    """Spherical (or Euclidean) k-means for all nodes of one level at once.

    ``node[l]`` is the node of label ``l`` (-1: label not split at this level);
    ``n_children`` and ``caps`` give each node's number of children and the
    exact label count of each child (``caps[node, j]``, zero for
    ``j >= n_children[node]``).

    A sparse block Z (L x D) is re-indexed to node-local features: column u of
    ``P`` (L x U) is one (node, feature) pair occurring in the node's labels.
    Centroid sums are then ``P.T @ onehot(assign)`` (U x B) and similarities
    ``P @ centroids`` (L x B): two sparse-dense products per iteration.
    """

    def __init__(self, sparse_blocks, dense_blocks, node, n_children, caps, B, spherical):
        self.node, self.B = node, B
        self.n_nodes = n_children.size
        self.n_children, self.caps, self.spherical = n_children, caps, spherical
        self.dense = dense_blocks
        self.sparse = []
        for blk in sparse_blocks:
            P, u_node = blk.node_local(node, self.n_nodes)
            starts = np.flatnonzero(np.diff(u_node, prepend=-1))  # u is sorted by node
            seg_nodes = u_node[starts]
            seg_len = np.diff(np.append(starts, u_node.size))
            real = seg_nodes < self.n_nodes  # the last segment may be the dummy node
            self.sparse.append((P, P.T, starts, seg_nodes, seg_len, real))  # P.T: a CSC view, no copy
        self.valid = np.arange(B)[None, :] < n_children[:, None]  # (n_nodes, B)
        active = (node >= 0).astype(np.float32)
        self._totals = [PT @ active for _, PT, *_ in self.sparse]  # sums over all rows of each node
        self._sub, self._sub_key = None, None

    def centroid_scores(self, assign, rows):
        """Similarity (len(rows), B) of labels ``rows`` to the B centroids of their nodes.

        ``rows`` must hold whole nodes. Centroids are those of ``assign`` (-1:
        not a member of any centroid); missing children score -inf. For B = 2
        only column 0 is meaningful: it holds the margin s_0 - s_1.
        """
        B, n_nodes, L = self.B, self.n_nodes, self.node.size
        member = assign >= 0
        sq = np.zeros((n_nodes + 1, B))
        sums_sparse = []
        # rows hold whole nodes, so the centroids of their nodes need their rows only: once few nodes are
        # still changing, the products run on the sub-matrix of their rows
        sub = rows.size < 0.6 * np.count_nonzero(self.node >= 0)
        if sub and self._sub_key is not rows:
            self._sub = [P[rows] for P, *_ in self.sparse]
            self._sub_key = rows
        a = assign[rows] if sub else assign
        all_member = bool(np.all(assign[rows] >= 0))
        for b, (P, PT, starts, seg_nodes, seg_len, real) in enumerate(self.sparse):
            PTa = self._sub[b].T if sub else PT
            S = []
            for j in range(B):
                if B == 2 and j == 1 and all_member:  # every row is in child 0 or 1: S_1 = total - S_0
                    S_j = (self._totals[b] if not sub else PTa @ np.ones(rows.size, np.float32)) - S[0]
                else:
                    S_j = PTa @ (a == j).astype(np.float32)  # centroid sums on node-local features (U,)
                sq[seg_nodes, j] += np.add.reduceat(S_j * S_j, starts, dtype=np.float64) if starts.size else 0.0
                S.append(S_j)
            sums_sparse.append(S)
        sums_dense = []
        grp = self.node * B + np.maximum(assign, 0)
        for Zd in self.dense:
            M = sp.csr_matrix((np.ones(member.sum(), np.float32), (grp[member], np.flatnonzero(member))), shape=(n_nodes * B, L))
            Sd = np.asarray(M @ Zd, dtype=np.float32)
            sq[:n_nodes] += np.einsum("ij,ij->i", Sd, Sd, dtype=np.float64).reshape(n_nodes, B)
            sums_dense.append(Sd)
        sq = sq[:n_nodes]
        if self.spherical:  # centroid = sum / ||sum||, score = <z, centroid>
            scale = np.divide(1.0, np.sqrt(sq), out=np.zeros_like(sq), where=sq > 0)
            offset = np.zeros_like(sq)
        else:  # centroid = sum / count, score = <z, c> - ||c||^2 / 2 (same argmax as -||z - c||^2)
            counts = np.bincount(grp[member], minlength=n_nodes * B).reshape(n_nodes, B).astype(np.float64)
            scale = np.divide(1.0, counts, out=np.zeros_like(counts), where=counts > 0)
            offset = 0.5 * sq * scale**2
        scale = np.vstack([scale, np.zeros((1, B))]).astype(np.float32)  # row n_nodes: the dummy node
        node = self.node[rows]
        scores = np.zeros((rows.size, B))
        for b, ((P, _, _, seg_nodes, seg_len, _), S) in enumerate(zip(self.sparse, sums_sparse, strict=True)):
            coef = [np.repeat(scale[seg_nodes, j], seg_len) for j in range(B)]
            if B == 2:  # only the margin matters for the median cut: one product instead of two
                v = S[0] * coef[0] - S[1] * coef[1]
                scores[:, 0] += (self._sub[b] @ v) if sub else (P @ v)[rows]
            else:
                for j in range(B):
                    scores[:, j] += (self._sub[b] @ (S[j] * coef[j])) if sub else (P @ (S[j] * coef[j]))[rows]
        for Zd, Sd in zip(self.dense, sums_dense):
            Sd = Sd.reshape(n_nodes, B, -1) * scale[:n_nodes, :, None]
            for j in range(B):
                for start in range(0, rows.size, 65536):
                    r = rows[start : start + 65536]
                    scores[start : start + 65536, j] += np.einsum("ij,ij->i", Zd[r], Sd[self.node[r], j])
        if B == 2:
            scores[:, 0] -= scores[:, 1] + offset[node, 0] - offset[node, 1]
            scores[:, 1] = 0.0
            return scores
        scores -= offset[node]
        return np.where(self.valid[node], scores, -np.inf)

    def balanced_assign(self, scores, rows):
        """Child of each label in ``rows``, with exactly ``caps[node, j]`` labels in child j of each node."""
        B, node = self.B, self.node[rows]
        assign = np.full(rows.size, -1, dtype=np.int64)
        last = self.n_children[node] - 1
        for j in range(B - 1):
            todo = np.flatnonzero((assign < 0) & (j < last))
            if todo.size == 0:
                break
            margin = scores[todo, 0] if B == 2 else scores[todo, j] - scores[todo, j + 1 :].max(axis=1)
            # order by node, then margin descending, then label index: two sorts instead of a lexsort
            order = np.argsort(-margin, kind="stable")
            nd = node[todo][order]
            order = order[np.argsort(nd.astype(np.uint16) if self.n_nodes < 65536 else nd, kind="stable")]
            nd = node[todo][order]
            rank = np.arange(order.size) - np.searchsorted(nd, nd, side="left")
            take = rank < self.caps[nd, j]
            assign[todo[order][take]] = j
        rem = assign < 0
        assign[rem] = last[rem]
        return assign

    def initial_assignment(self, rows, rng):
        """Seed each node's centroids with n_children distinct random labels (others -1)."""
        node = self.node[rows]
        key = rng.random_sample(rows.size)
        order = np.lexsort((key, node))
        nd = node[order]
        rank = np.arange(rows.size) - np.searchsorted(nd, nd, side="left")
        assign = np.full(self.node.size, -1, dtype=np.int64)
        seed = rank < self.n_children[nd]
        assign[rows[order[seed]]] = rank[seed]
        return assign

    def run(self, rows, rng, max_iter):
        """Lloyd iterations with exact balance; a node stops once its assignment is stable.

        A node whose assignment did not change keeps the same centroids, hence the
        same assignment forever, so dropping it from later iterations is exact.
        """
        assign = self.initial_assignment(rows, rng)
        live_rows, n_iter = rows, 0
        for n_iter in range(1, max_iter + 1):
            new = self.balanced_assign(self.centroid_scores(assign, live_rows), live_rows)
            changed = new != assign[live_rows]
            assign[live_rows] = new
            if not changed.any():
                break
            live = np.zeros(self.n_nodes, dtype=bool)
            live[self.node[live_rows[changed]]] = True
            live_rows = live_rows[live[self.node[live_rows]]]
        return assign[rows], n_iter


# ----------------------------------------------------------------------------- driver
def balanced_kmeans(
    Z,
    n_clusters=None,
    *,
    max_leaf_size=100,
    branching=2,
    spherical=True,
    max_iter=20,
    random_state=None,
    verbose=False,
):
    """Recursive balanced B-ary k-means over label embeddings (PECOS Algorithm 1).

    Parameters
    ----------
    Z : csr_matrix, ndarray, or list of them, each of shape (n_labels, n_features_b)
        Label embeddings, e.g. from :func:`pifa`. A list is the horizontal
        concatenation of its blocks (sparse blocks stay sparse).
    n_clusters : int, optional
        Number of leaf clusters C, ``1 <= C <= n_labels``. Default:
        :func:`default_n_clusters` ``(n_labels, max_leaf_size, branching)``.
    max_leaf_size : int, default=100
        Used only to choose the default ``n_clusters``.
    branching : int, default=2
        Children per node (B). Depth is ``ceil(log_B C)``.
    spherical : bool, default=True
        Spherical k-means (cosine similarity to unit-norm centroids), as in
        PECOS and ELIAS. ``False`` uses Euclidean k-means.
    max_iter : int, default=20
        Maximum k-means iterations per level (PECOS's ``kmeans_max_iter``);
        a level stops earlier once no label changes child.
    random_state : int, RandomState instance or None
        Seeds the choice of initial centroids.
    verbose : bool, default=False
        Log per-level progress at INFO level on the ``skelias.cluster`` logger.

    Returns
    -------
    tree : LabelTree
        Leaf sizes are all ``floor(L/C)`` or ``ceil(L/C)``.

    Examples
    --------
    >>> import numpy as np
    >>> Z = np.random.RandomState(0).randn(1000, 16)
    >>> tree = balanced_kmeans(Z, n_clusters=8, random_state=0)
    >>> sorted(set(tree.cluster_sizes().tolist()))
    [125]
    """
    blocks = _as_blocks(Z)
    L = blocks[0].shape[0]
    if L == 0:
        raise ValueError("Z has no rows (no label to cluster).")
    for name, v, lo in (("max_leaf_size", max_leaf_size, 1), ("branching", branching, 2), ("max_iter", max_iter, 1)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}; got {v!r}.")
    if n_clusters is None:
        n_clusters = default_n_clusters(L, max_leaf_size, branching)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral) or not 1 <= n_clusters <= L:
        raise ValueError(f"n_clusters must be an integer in [1, n_labels={L}]; got {n_clusters!r}.")
    C, B = int(n_clusters), int(branching)
    rng = check_random_state(random_state)
    tree = LabelTree(n_labels=L, n_clusters=C, branching=B)
    if C == 1:
        return tree

    sizes = L // C + (np.arange(C) < L % C)
    prefix = np.concatenate([[0], np.cumsum(sizes)])
    sparse_all = [_SparseBlock(b) for b in blocks if sp.issparse(b)]
    dense_all = [b for b in blocks if not sp.issparse(b)]

    lo = np.zeros(L, dtype=np.int64)
    hi = np.full(L, C, dtype=np.int64)
    level = 0
    while True:
        width = hi - lo
        if width.max() <= 1:
            break
        level += 1
        active = np.flatnonzero(width > 1)
        node_lo, node_a = np.unique(lo[active], return_inverse=True)
        node_w = np.zeros(node_lo.size, dtype=np.int64)
        node_w[node_a] = width[active]
        k = np.minimum(B, node_w)
        j = np.arange(B)[None, :]
        child_lo = node_lo[:, None] + (j * node_w[:, None]) // k[:, None]
        child_hi = node_lo[:, None] + ((j + 1) * node_w[:, None]) // k[:, None]
        caps = np.where(j < k[:, None], prefix[np.minimum(child_hi, C)] - prefix[np.minimum(child_lo, C)], 0)
        node = np.full(L, -1, dtype=np.int64)
        node[active] = node_a
        lev = _Level(sparse_all, dense_all, node, k, caps, B, spherical)
        assign, n_iter = lev.run(active, rng, max_iter)
        lo[active] = child_lo[node_a, assign]
        hi[active] = child_hi[node_a, assign]
        tree.levels.append(np.unique(lo, return_inverse=True)[1].astype(np.int64))
        if verbose:
            logger.info("level %d: %d nodes split, %d iterations", level, node_lo.size, n_iter)
    return tree


def cluster_labels(Y, X=None, X_dense=None, *, n_clusters=None, max_leaf_size=100, branching=2, normalize_y=False,
                   spherical=True, max_iter=20, random_state=None, verbose=False):
    """PIFA label embeddings followed by :func:`balanced_kmeans` (ELIAS stage-1 index).

    Parameters
    ----------
    Y : sparse matrix of shape (n_samples, n_labels)
        Training label indicator matrix.
    X : sparse matrix of shape (n_samples, n_features), optional
        Sparse feature block of PIFA (e.g. TF-IDF).
    X_dense : ndarray of shape (n_samples, p), optional
        Dense feature block of PIFA (e.g. pretrained embeddings), concatenated to ``X``.
    normalize_y : bool, default=False
        Row-normalise ``Y`` before the label embedding (see :func:`pifa`).
    n_clusters, max_leaf_size, branching, spherical, max_iter, random_state, verbose :
        As in :func:`balanced_kmeans`.

    Returns
    -------
    tree : LabelTree
        ``tree.adjacency()`` is the (n_clusters, n_labels) stage-1 adjacency matrix.
    """
    Z = pifa(Y, X, X_dense, normalize_y=normalize_y)
    return balanced_kmeans(
        Z,
        n_clusters,
        max_leaf_size=max_leaf_size,
        branching=branching,
        spherical=spherical,
        max_iter=max_iter,
        random_state=random_state,
        verbose=verbose,
    )
