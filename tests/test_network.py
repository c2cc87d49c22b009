"""ELIASNetwork (skelias._network): the forward pass over the index, the loss, teacher forcing."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from skelias._network import ELIASNetwork, elias_loss, gold_tensors
from skelias.encoders import DenseMLPEncoder
from skelias.index import cluster_log_scores, expand_paths, padded_adjacency, shortlist_clusters


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


def test_stage2_with_kappa_equal_cluster_size_reduces_to_fixed_tree(tree_index):
    """Stage-2 machinery over the stage-1 clustering, with saturated edge scores, equals stage 1."""
    L = 24
    rs, tree, ind, mask = tree_index(2, L)
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


def test_stage1_gold_scores_gather_equals_path_lookup(tree_index):
    """In stage 1 (A a partition) ŷ of a gold label is its parent cluster's score: same as searching the path set."""
    from skelias._network import _lookup

    L = 24
    rs, _, ind, mask = tree_index(4, L)
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


@pytest.mark.parametrize("n_rows", [1, 3])
def test_prediction_label_logits_equal_the_gathered_rows(tree_index, n_rows):
    """Without autograd, the shortlist's logits (a sampled product) equal w_l·φ + b_l of the gathered rows,
    in the shortlist's order, with repeated labels and the padding label L among them."""
    L = 24
    rs, _, ind, mask = tree_index(2, L)
    net = _net(ind, mask, True, L)
    net.dense_label_scoring = False
    with torch.no_grad():
        net.label_bias.copy_(torch.randn(L))
    emb = torch.from_numpy(rs.randn(n_rows, 16).astype(np.float32))
    labels = torch.from_numpy(rs.randint(0, L + 1, (n_rows, 9)))
    labels[:, -2:] = labels[:, :2]  # repeats
    labels[0, 3] = L  # padding
    safe = labels.clamp(max=L - 1)
    expected = (net.label_weight[safe] * emb[:, None, :]).sum(-1) + net.label_bias[safe]
    with torch.no_grad():
        got = net.label_logits(emb, labels)
    torch.testing.assert_close(got, expected.detach(), rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # training: the differentiable gather gives the same values
        torch.testing.assert_close(net.label_logits(emb, labels).detach(), got, rtol=1e-5, atol=1e-5)
