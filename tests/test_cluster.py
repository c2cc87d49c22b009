import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import normalize

from skelias import balanced_kmeans, cluster_labels, default_n_clusters, pifa
from skelias.cluster import _Level, _SparseBlock


def _problem(seed=0, n=60, D=40, L=25, d=6):
    rs = np.random.RandomState(seed)
    X = sp.random(n, D, density=0.2, format="csr", random_state=rs, dtype=np.float32)
    Xd = rs.randn(n, d).astype(np.float32)
    Y = sp.random(n, L, density=0.1, format="csr", random_state=rs)
    Y.data[:] = 1
    Y = Y.tolil()
    Y[:, L - 1] = 0  # a label without positives
    return X, Xd, sp.csr_matrix(Y)


def test_pifa_matches_brute_force():
    X, Xd, Y = _problem()
    Yd = Y.toarray()
    psi = np.hstack([normalize(X.toarray()), normalize(Xd)])  # Eq. 14
    ref = np.zeros((Y.shape[1], psi.shape[1]))
    for l in range(Y.shape[1]):  # Eq. 15, one label at a time
        s = psi[Yd[:, l] > 0].sum(axis=0)
        ref[l] = s / np.linalg.norm(s) if np.linalg.norm(s) > 0 else 0
    Zs, Zd = pifa(Y, X, Xd)
    assert sp.issparse(Zs) and isinstance(Zd, np.ndarray) and Zs.dtype == np.float32
    np.testing.assert_allclose(np.hstack([Zs.toarray(), Zd]), ref, atol=1e-6)
    assert not np.any(np.hstack([Zs.toarray(), Zd])[-1])  # label without positives: zero row
    only_sparse = pifa(Y, X)
    np.testing.assert_allclose(only_sparse.toarray()[:-1], normalize(Yd.T @ normalize(X.toarray()))[:-1], atol=1e-6)
    Yn = normalize(Yd)
    np.testing.assert_allclose(pifa(Y, X, normalize_y=True).toarray(), normalize(Yn.T @ normalize(X.toarray())), atol=1e-6)


@pytest.mark.parametrize("B", [2, 3])
def test_level_scores_match_brute_force(B):
    """The vectorised similarity of every label to its node's centroids equals a per-node loop."""
    rs = np.random.RandomState(1)
    L = 40
    Zs = normalize(sp.random(L, 30, density=0.3, format="csr", random_state=rs, dtype=np.float32))
    Zd = rs.randn(L, 5).astype(np.float32)
    node = np.repeat([0, 1, 2, 3], 10)
    node[-5:] = -1  # labels not split at this level
    n_children = np.array([B, B, B, 2])
    caps = np.zeros((4, B), dtype=np.int64)
    caps[:3, :] = 10 // B
    caps[:3, 0] += 10 - B * (10 // B)
    caps[3, :2] = [3, 2]
    lev = _Level([_SparseBlock(Zs)], [Zd], node, n_children, caps, B, spherical=True)
    rows = np.flatnonzero(node >= 0)
    assign = np.full(L, -1)
    assign[rows] = rs.randint(0, 2, rows.size)
    got = lev.centroid_scores(assign, rows)
    Z = np.hstack([Zs.toarray(), Zd]).astype(np.float64)
    ref = np.full((rows.size, B), -np.inf)
    for t, l in enumerate(rows):
        for j in range(n_children[node[l]]):
            members = (node == node[l]) & (assign == j)
            c = Z[members].sum(axis=0)
            ref[t, j] = Z[l] @ c / np.linalg.norm(c) if members.any() else 0.0
    if B == 2:  # the binary path returns the margin s0 - s1
        np.testing.assert_allclose(got[:, 0], ref[:, 0] - ref[:, 1], atol=1e-5)
    else:
        np.testing.assert_allclose(got, ref, atol=1e-5)
    new = lev.balanced_assign(got, rows)
    counts = np.array([[np.sum(new[node[rows] == v] == j) for j in range(B)] for v in range(4)])
    np.testing.assert_array_equal(counts, caps)


@settings(max_examples=40, deadline=None)
@given(L=st.integers(2, 300), frac=st.floats(0.0, 1.0), B=st.integers(2, 5), seed=st.integers(0, 3), dense=st.booleans())
def test_exact_balance_and_consistent_hierarchy(L, frac, B, seed, dense):
    C = max(1, round(frac * L))
    rs = np.random.RandomState(seed)
    Z = rs.randn(L, 4) if dense else sp.random(L, 20, density=0.3, format="csr", random_state=rs)
    tree = balanced_kmeans(Z, n_clusters=C, branching=B, random_state=seed, max_iter=5)
    sizes = tree.cluster_sizes()
    assert sizes.size == C and set(sizes) <= {L // C, -(-L // C)}
    A = tree.adjacency()
    assert A.shape == (C, L) and np.all(A.sum(axis=0) == 1)
    # every level refines the previous one; the chain composes to the leaf assignment
    chain = tree.indexing_matrices()
    assert chain[-1].shape == (L, C)
    prev = np.zeros(L, dtype=int)
    for lev, M in zip(tree.levels, chain[:-1]):
        assert np.all(M.toarray().argmax(axis=1)[lev] == prev)
        prev = lev
    np.testing.assert_array_equal(chain[-1].toarray().argmax(axis=1), tree.labels_)


def test_recovers_separated_clusters_and_is_seeded():
    rs = np.random.RandomState(0)
    centers = rs.randn(8, 32) * 5
    Z = np.repeat(centers, 50, axis=0) + rs.randn(400, 32)
    for B in (2, 8):
        tree = balanced_kmeans(Z, n_clusters=8, branching=B, random_state=3)
        assert all(len(set(tree.labels_[i * 50 : (i + 1) * 50])) == 1 for i in range(8))
    Zs = sp.csr_matrix(np.maximum(Z, 0))
    t1 = balanced_kmeans(Zs, n_clusters=16, random_state=5)
    t2 = balanced_kmeans(Zs, n_clusters=16, random_state=5)
    np.testing.assert_array_equal(t1.labels_, t2.labels_)
    # sparse and dense storage of the same embeddings give the same tree
    t3 = balanced_kmeans(Zs.toarray(), n_clusters=16, random_state=5)
    np.testing.assert_array_equal(t1.labels_, t3.labels_)
    # Euclidean k-means also recovers the clusters
    tree = balanced_kmeans(Z, n_clusters=8, spherical=False, random_state=3)
    assert all(len(set(tree.labels_[i * 50 : (i + 1) * 50])) == 1 for i in range(8))


def test_cluster_labels_and_defaults():
    X, Xd, Y = _problem(L=25)
    tree = cluster_labels(Y, X, Xd, n_clusters=4, random_state=0)
    assert tree.n_clusters == 4 and tree.n_labels == 25
    assert default_n_clusters(22897) == 256
    assert default_n_clusters(670091) == 8192
    assert default_n_clusters(80) == 1
    assert default_n_clusters(1000, 100, branching=4) == 16
    one = balanced_kmeans(np.ones((5, 2)), n_clusters=1)
    assert one.depth == 0 and one.adjacency().toarray().tolist() == [[1, 1, 1, 1, 1]]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_clusters": 0}, "n_clusters must be an integer in"),
        ({"n_clusters": 11}, "n_clusters must be an integer in"),
        ({"branching": 1}, "branching must be an integer >= 2"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_leaf_size": 0}, "max_leaf_size"),
    ],
)
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        balanced_kmeans(np.random.randn(10, 3), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN or infinite"):
        balanced_kmeans(np.array([[np.nan, 1.0], [0.0, 1.0]]), n_clusters=1)
    with pytest.raises(ValueError, match="different numbers of rows"):
        balanced_kmeans([np.ones((3, 2)), np.ones((4, 2))])
    with pytest.raises(TypeError, match="sparse matrix, an ndarray"):
        balanced_kmeans("abc")
    X, _Xd, Y = _problem()
    with pytest.raises(ValueError, match="rows"):
        pifa(Y[:10], X)
    with pytest.raises(ValueError, match="at least one feature block"):
        pifa(Y)
