import numpy as np
import pytest
import scipy.sparse as sp
import torch

from skelias.index import (
    approximate_adjacency,
    cluster_log_scores,
    dense_shortlist,
    edge_log_scores,
    expand_paths,
    label_parents,
    max_over_paths,
    max_over_paths_dense,
    padded_adjacency,
    shortlist_clusters,
    stage2_adjacency,
    tree_preserving_values,
)


def test_cluster_and_edge_scores_match_equations():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, generator=g) * 3
    ref = torch.clamp(10 * torch.softmax(logits, -1), max=1.0)  # Eq. 1
    torch.testing.assert_close(cluster_log_scores(logits, 10).exp(), ref)
    a = torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    out = edge_log_scores(a, mask, 2.0).exp()
    for r in range(2):  # Eq. 5: softmax over the row's non-zeros only
        m = mask[r]
        torch.testing.assert_close(out[r, m], torch.clamp(2.0 * torch.softmax(a[r, m], -1), max=1.0))
    assert torch.all(out[~mask] == 0)


def test_max_over_paths_matches_brute_force():
    rs = np.random.RandomState(0)
    L = 12
    labels = torch.from_numpy(rs.randint(0, L + 1, (5, 40)))  # includes the pad label L
    scores = torch.from_numpy(rs.randn(5, 40).astype(np.float32))
    scores[labels == L] = float("-inf")
    lab, lp = max_over_paths(labels, scores, L)
    for i in range(5):
        best = {}
        for l, s in zip(labels[i].tolist(), scores[i].tolist()):
            if l != L:
                best[l] = max(best.get(l, -np.inf), s)
        got = {l: s for l, s in zip(lab[i].tolist(), lp[i].tolist()) if l != L}
        assert got.keys() == best.keys()
        for l, s in best.items():
            assert got[l] == pytest.approx(s)


def test_shortlist_scores_match_dense_brute_force():
    """Eq. 1-6 vectorised = a dense computation of ŷ_l = max_c s_c * s_{c,l} over shortlisted clusters."""
    rs = np.random.RandomState(1)
    C, L, kappa, N, b = 6, 20, 8, 4, 3
    A = np.zeros((C, L))
    for c in range(C):
        A[c, rs.choice(L, kappa, replace=False)] = 1
    ind, mask, _ = padded_adjacency(sp.csr_matrix(A), L)
    a_vals = torch.from_numpy(rs.randn(*ind.shape).astype(np.float32))
    ind, mask = torch.from_numpy(ind), torch.from_numpy(mask)
    logits = torch.from_numpy(rs.randn(N, C).astype(np.float32))
    log_cs = cluster_log_scores(logits, 3.0)
    log_es = edge_log_scores(a_vals, mask, 4.0)
    parents = torch.tensor([[0, C], [5, 5], [C, C], [2, 1]])
    clusters = shortlist_clusters(log_cs, b, parents)
    labels, lp = max_over_paths(*expand_paths(clusters, log_cs, ind, log_es), L)
    cs, es = log_cs.exp().numpy(), log_es.exp().numpy()
    for i in range(N):
        chosen = set(torch.topk(log_cs[i], b).indices.tolist()) | {p for p in parents[i].tolist() if p < C}
        ref = np.zeros(L)
        for c in chosen:
            for j in range(ind.shape[1]):
                if mask[c, j]:
                    ref[ind[c, j]] = max(ref[ind[c, j]], cs[i, c] * es[c, j])
        got = np.zeros(L)
        for l, v in zip(labels[i].tolist(), lp[i].exp().tolist()):
            if l < L:
                got[l] = v
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weighted", [True, False])
def test_tree_preserving_stage2_start_reproduces_the_stage1_index(weighted, tree_index):
    """adjacency_init="tree": tree edges at score 1, parents = stage-1 clusters, new edges hold new_mass."""
    L, C = 24, 6
    rs, tree, _, _ = tree_index(3, L, C)
    extra = sp.csr_matrix((rs.rand(30) + 0.1, (rs.randint(0, C, 30), rs.randint(0, L, 30))), shape=(C, L))
    support = (extra + 1e-6 * tree.adjacency()).tocsr()
    ind, mask, a_prime = padded_adjacency(support, L)
    vals = tree_preserving_values(ind, mask, a_prime, tree.labels_, beta=8.0, new_mass=0.25, weighted=weighted)
    own = mask & (tree.labels_[np.minimum(ind, L - 1)] == np.arange(C + 1)[:, None])
    new = mask & ~own
    assert own.sum() == L  # every tree edge is in the support
    np.testing.assert_array_equal(vals[own], 0.0)
    n_own = own.sum(axis=1)
    has_new = new.any(axis=1)
    np.testing.assert_allclose(np.where(new, np.exp(vals), 0).sum(axis=1)[has_new], 0.25 * n_own[has_new], rtol=1e-5)
    if weighted:  # new edges ordered like A' within a row
        for c in np.flatnonzero(has_new):
            order = np.argsort(a_prime[c][new[c]])
            assert np.all(np.diff(vals[c][new[c]][order]) >= -1e-6)
    t = torch.from_numpy
    log_es = edge_log_scores(t(vals), t(mask), beta=8.0)  # rows hold <= 6 labels <= 8 / 1.25
    np.testing.assert_array_equal(log_es.numpy()[own], 0.0)  # Eq. 5 saturates: exactly the tree's 0/1 edges
    assert np.all(log_es.numpy()[new] < 0)
    parent = label_parents(t(ind), t(mask), t(vals), L)
    np.testing.assert_array_equal(parent.numpy(), tree.labels_)


def test_approximate_adjacency_keeps_every_label_reachable():
    M = sp.csr_matrix(np.array([[0.9, 0.1, 0], [0, 0.5, 0.5], [0.2, 0, 0.8]]))
    Y = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]]))
    S = approximate_adjacency(M, Y, kappa=1, fallback_parent=np.array([0, 0, 1, 2, 2]))
    assert np.all(np.diff(S.tocsc().indptr) >= 1)  # every label has an edge
    Ap = (M.T @ Y).toarray()
    for c in range(3):  # each row keeps its top-1 of A' = M^T Y (Eq. 9-10)
        assert Ap[c, S[c].indices].max() == Ap[c].max()
    assert S[2, 4] > 0  # label 4 never appears: its stage-1 cluster (2) is used
    ind, mask, vals = padded_adjacency(S, 5)
    parent = label_parents(torch.from_numpy(ind), torch.from_numpy(mask), torch.from_numpy(vals), 5)
    dense = S.toarray()
    np.testing.assert_array_equal(parent.numpy(), dense.argmax(axis=0))


def test_dense_shortlist_gradient_equals_autograd_through_scatter_max():
    """The fused Eq. 6 + top-K op gives autograd's values and gradients (distinct path scores, padding included)."""
    g = torch.Generator().manual_seed(0)
    N, P, L, K, G = 5, 40, 25, 7, 3
    labels = torch.randint(0, L + 1, (N, P), generator=g)  # label L = padding
    labels[0, :] = L  # a row with no path at all
    lp = torch.randn(N, P, generator=g).masked_fill(labels == L, float("-inf"))
    gold = torch.randint(0, L + 1, (N, G), generator=g)
    w_top, w_gold = torch.rand(N, K, generator=g), torch.rand(N, G, generator=g)

    def loss(top_lp, gold_lp):  # finite weights on finite scores only, as elias_loss does
        return (torch.where(torch.isfinite(top_lp), top_lp, 0) * w_top).sum() + (
            torch.where(torch.isfinite(gold_lp), gold_lp, 0) * w_gold).sum()

    x1 = lp.clone().requires_grad_()
    dense = max_over_paths_dense(labels, x1, L)
    ref_lp, ref_lab = torch.topk(dense[:, :L], K, dim=1)
    ref_lab = ref_lab.masked_fill(torch.isneginf(ref_lp), L)
    loss(ref_lp, torch.gather(dense, 1, gold)).backward()
    x2 = lp.clone().requires_grad_()
    top_lab, top_lp, gold_lp = dense_shortlist(labels, x2, L, K, gold)
    loss(top_lp, gold_lp).backward()
    torch.testing.assert_close(top_lp, ref_lp)
    assert torch.equal(top_lab, ref_lab)
    torch.testing.assert_close(gold_lp, torch.gather(dense, 1, gold))
    torch.testing.assert_close(x2.grad, x1.grad)
    assert x2.grad[0].abs().sum() == 0 and x2.grad.abs().sum() > 0
    with torch.no_grad():  # prediction: the same shortlist (in no particular order) without the bookkeeping
        lab3, lp3, gold3 = dense_shortlist(labels, lp, L, K)
    assert gold3 is None
    _assert_same_shortlist(lab3, lp3, ref_lab, ref_lp.detach())


def _assert_same_shortlist(lab, lp, ref_lab, ref_lp):
    """Equal (label, score) sets per row, whatever their order."""
    lab_s, order = torch.sort(lab, dim=1, stable=True)
    ref_s, ref_order = torch.sort(ref_lab, dim=1, stable=True)
    assert torch.equal(lab_s, ref_s)
    torch.testing.assert_close(torch.gather(lp, 1, order), torch.gather(ref_lp, 1, ref_order))


@pytest.mark.parametrize(("n_paths", "K", "L"), [(40, 7, 25), (6, 7, 25), (40, 25, 25), (6, 7, 400_000)])
def test_prediction_shortlist_equals_torch_selection(n_paths, K, L):
    """At prediction (unsorted; NumPy's selection for one row) the shortlist holds the labels and scores the
    differentiable path's sorted torch.topk selects, padding included, for one row and for a batch."""
    g = torch.Generator().manual_seed(n_paths + K)
    N = 9
    labels = torch.randint(0, L + 1, (N, n_paths), generator=g)
    lp = torch.randn(N, n_paths, generator=g).masked_fill(labels == L, float("-inf"))
    lp[0, :3] = float("-inf")  # unreachable edges among real labels
    ref_lab, ref_lp, _ = dense_shortlist(labels, lp.clone().requires_grad_(), L, K)
    with torch.no_grad():
        lab, got_lp, gold = dense_shortlist(labels, lp, L, K)
        assert gold is None and lab.shape == (N, K)
        _assert_same_shortlist(lab, got_lp, ref_lab, ref_lp.detach())
        for i in range(N):
            one_lab, one_lp, _ = dense_shortlist(labels[i : i + 1], lp[i : i + 1], L, K)
            _assert_same_shortlist(one_lab, one_lp, ref_lab[i : i + 1], ref_lp[i : i + 1].detach())
    assert bool((lab[torch.isneginf(got_lp)] == L).all())  # fewer reachable than K: padded
    if n_paths < K:
        assert bool(torch.isneginf(got_lp).any())


@pytest.mark.parametrize("init", ["tree", "random", "approx"])
def test_stage2_adjacency_support_and_starting_values(init, tree_index):
    L, C = 24, 6
    _, tree, _, _ = tree_index(5, L, C)
    M = sp.random(40, C, density=0.4, random_state=1, format="csr", dtype=np.float32)
    Y = sp.random(40, L, density=0.1, random_state=2, format="csr", dtype=np.float32)
    Y.data[:] = 1
    ind, mask, vals = stage2_adjacency(M, Y, 5, tree.adjacency(), init, beta=150.0)
    np.testing.assert_array_equal(np.unique(ind[mask]), np.arange(L))  # every label reachable
    if init == "random":  # Eq. 10's random values are drawn by the network
        assert vals is None
        return
    assert vals.shape == ind.shape and vals.dtype == np.float32
    if init == "tree":  # every stage-1 edge is in the support, at edge score 1 (Eq. 5)
        es = edge_log_scores(torch.from_numpy(vals), torch.from_numpy(mask), 150.0).exp().numpy()
        rows, cols = np.nonzero(mask)
        tree_edges = tree.labels_[ind[rows, cols]] == rows
        assert tree_edges.sum() == L
        np.testing.assert_allclose(es[rows[tree_edges], cols[tree_edges]], 1.0)
    else:  # log(A' / rowmax(A')), floored at log(1e-3)
        v = vals[mask]
        assert v.max() == 0.0 and v.min() >= np.log(1e-3) - 1e-6
    with pytest.raises(ValueError, match="init must be one of"):
        stage2_adjacency(M, Y, 5, tree.adjacency(), "zeros")
