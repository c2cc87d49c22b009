import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from skelias._network import ELIASNetwork, elias_loss, gold_tensors
from skelias.cluster import balanced_kmeans
from skelias.encoders import DenseMLPEncoder
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


def _tree_index(seed, L=24, C=6):
    """A random generator and the padded stage-1 adjacency of a balanced clustering of L random labels."""
    rs = np.random.RandomState(seed)
    tree = balanced_kmeans(rs.randn(L, 4), n_clusters=C, random_state=0)
    ind, mask, _ = padded_adjacency(tree.adjacency(), L)
    return rs, tree, ind, mask


def _shortlist_map(out, i, L, keys=("log_shortlist",)):
    """Row i of a forward output as {label: (values...)} (shortlists may order ties differently)."""
    cols = [out["labels"][i].tolist()] + [out[k][i].tolist() for k in keys]
    return {row[0]: row[1:] for row in zip(*cols) if row[0] < L}


def _assert_same_shortlists(o1, o2, n_rows, L, keys=("log_shortlist",)):
    for i in range(n_rows):
        m1, m2 = _shortlist_map(o1, i, L, keys), _shortlist_map(o2, i, L, keys)
        assert m1.keys() == m2.keys()
        for l in m1:
            assert m1[l] == pytest.approx(m2[l], abs=1e-6)


def _net(a_ind, a_mask, learn, L, seed=0, beta=150.0):
    torch.manual_seed(seed)
    enc = DenseMLPEncoder(5, 16, dropout=0.0)
    return ELIASNetwork(enc, L, a_ind, a_mask, alpha=4.0, beta=beta, beam_size=3, shortlist_size=L,
                        learn_adjacency=learn, seed=seed)


def test_stage2_with_kappa_equal_cluster_size_reduces_to_fixed_tree():
    """Stage-2 machinery over the stage-1 clustering, with saturated edge scores, equals stage 1."""
    L = 24
    rs, tree, ind, mask = _tree_index(2, L)
    n1 = _net(ind, mask, False, L)
    n2 = _net(ind, mask, True, L, beta=1e6)  # beta * softmax >= 1 on every edge -> edge score 1
    n2.load_state_dict({k: v for k, v in n1.state_dict().items() if k != "a_values"}, strict=False)
    n1.eval(), n2.eval()
    x = torch.from_numpy(rs.randn(7, 5).astype(np.float32))
    o1, o2 = n1(x), n2(x)
    # same shortlist and scores (ties may be ordered differently)
    _assert_same_shortlists(o1, o2, 7, L, keys=("log_shortlist", "logits"))
    assert all(len(_shortlist_map(o1, i, L)) >= 12 for i in range(7))
    np.testing.assert_array_equal(n1.parent.numpy(), tree.labels_)
    np.testing.assert_array_equal(n2.parent.numpy(), tree.labels_)


@pytest.mark.parametrize("weighted", [True, False])
def test_tree_preserving_stage2_start_reproduces_the_stage1_index(weighted):
    """adjacency_init="tree": tree edges at score 1, parents = stage-1 clusters, new edges hold new_mass."""
    L, C = 24, 6
    rs, tree, _, _ = _tree_index(3, L, C)
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


def test_loss_is_finite_and_matches_naive_formula():
    L = 6
    out = {
        "labels": torch.tensor([[0, 1, 2, L], [3, 4, 5, 1]]),
        "log_shortlist": torch.tensor([[-0.1, -2.0, 0.0, float("-inf")], [-1.0, -0.5, -3.0, -0.2]]),
        "logits": torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 1.0, -2.0, 3.0]], requires_grad=True),
        "gold_log_shortlist": torch.tensor([[-0.1, 0.0], [-0.5, float("-inf")]]),
    }
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0]]))
    keys, gold, parents = gold_tensors(Y, torch.zeros(L, dtype=torch.int64), 1, "cpu")
    assert gold.tolist() == [[0, 2], [4, L]] and parents.tolist() == [[0, 0], [0, 1]]
    loss, lc, ls = elias_loss(out, keys, L, 0.5)
    # naive Eq. 7-8 (with the means of the public code)
    p = torch.sigmoid(out["logits"].detach()) * out["log_shortlist"].exp()
    t = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.float32)
    valid = torch.isfinite(out["log_shortlist"])
    naive_c = -(t * torch.log(p) + (1 - t) * torch.log1p(-p))[valid].sum() / 8
    naive_s = -(-0.1 + 0.0 - 0.5) / (2 * 2)
    assert float(lc.detach()) == pytest.approx(float(naive_c), rel=1e-4)
    assert float(ls) == pytest.approx(naive_s, rel=1e-5)
    loss.backward()
    assert torch.isfinite(out["logits"].grad).all()
    # extreme logits stay finite
    out["logits"] = torch.tensor([[1e4, -1e4, 1e4, 0.0], [-1e4, 1e4, 1e4, -1e4]], requires_grad=True)
    loss, _, _ = elias_loss(out, keys, L, 0.5)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and torch.isfinite(out["logits"].grad).all()


def test_dense_and_sorted_max_over_paths_agree():
    """Eq. 6 through the dense scatter-max buffer = through sort-and-dedup, gold lookups included."""
    rs = np.random.RandomState(3)
    L, C, kappa = 30, 5, 12
    A = np.zeros((C, L))
    for c in range(C):
        A[c, rs.choice(L, kappa, replace=False)] = rs.rand(kappa) + 0.1
    A[0, np.flatnonzero(A.sum(0) == 0)] = 0.5
    ind, mask, _ = padded_adjacency(sp.csr_matrix(A), L)
    n1 = _net(ind, mask, True, L, beta=3.0)
    n2 = _net(ind, mask, True, L, beta=3.0)
    n2.load_state_dict(n1.state_dict())
    n2.dense_max_threshold = 0  # force the sort path
    n1.eval(), n2.eval()
    x = torch.from_numpy(rs.randn(6, 5).astype(np.float32))
    gold = torch.from_numpy(rs.randint(0, L + 1, (6, 3)))
    parents = n1.parent[gold.clamp(max=L - 1)].masked_fill(gold >= L, C)
    o1 = n1(x, gold_parents=parents, gold_labels=gold)
    o2 = n2(x, gold_parents=parents, gold_labels=gold)
    torch.testing.assert_close(o1["gold_log_shortlist"], o2["gold_log_shortlist"])
    _assert_same_shortlists(o1, o2, 6, L)


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
    with torch.no_grad():  # prediction: same values without the backward bookkeeping
        lab3, lp3, gold3 = dense_shortlist(labels, lp, L, K)
    assert torch.equal(lab3, ref_lab) and gold3 is None
    torch.testing.assert_close(lp3, ref_lp.detach())


def test_stage1_gold_scores_gather_equals_path_lookup():
    """In stage 1 (A a partition) ŷ of a gold label is its parent cluster's score: same as searching the path set."""
    from skelias._network import _lookup

    L = 24
    rs, _, ind, mask = _tree_index(4, L)
    net = _net(ind, mask, False, L)
    net.eval()
    x = torch.from_numpy(rs.randn(5, 5).astype(np.float32))
    gold = torch.from_numpy(rs.randint(0, L + 1, (5, 3)))
    parents = net.parent[gold.clamp(max=L - 1)].masked_fill(gold >= L, 6)
    out = net(x, gold_parents=parents, gold_labels=gold)
    log_cs = cluster_log_scores(net.cluster_classifier(net.encoder(x)), net.alpha)
    clusters = shortlist_clusters(log_cs, net.beam_size, parents)
    labels, lp = expand_paths(clusters, log_cs, net.a_indices, net.log_edge_scores())
    torch.testing.assert_close(out["gold_log_shortlist"], _lookup(labels, lp, gold, L))
    assert torch.isfinite(out["gold_log_shortlist"][gold < L]).all()  # teacher forcing reaches every gold label
