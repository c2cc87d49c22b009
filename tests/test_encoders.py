import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from skelias._training import _densify_row_grads
from skelias.encoders import RowSparseEmbeddingBag, SparseBagEncoder


def _pair(n_features=40, dim=8):
    torch.manual_seed(0)
    dense = nn.EmbeddingBag(n_features, dim, mode="sum")
    row_sparse = RowSparseEmbeddingBag(n_features, dim, mode="sum")
    row_sparse.load_state_dict(dense.state_dict())
    return dense, row_sparse


@pytest.mark.parametrize("weighted", [True, False])
def test_row_sparse_bag_matches_embedding_bag_values_and_gradient(weighted):
    dense, row_sparse = _pair()
    # duplicate features inside a bag, a feature shared by bags, an empty bag (row 2)
    indices = torch.tensor([3, 3, 7, 0, 7, 39, 5])
    offsets = torch.tensor([0, 3, 5, 5])
    psw = torch.tensor([0.5, 2.0, 1.0, -1.0, 3.0, 0.25, 1.5]) if weighted else None
    grad_out = torch.randn(4, 8)
    for m in (dense, row_sparse):
        (m(indices, offsets, per_sample_weights=psw) * grad_out).sum().backward()
    g = row_sparse.weight.grad
    assert g.is_sparse
    assert sorted(g._indices()[0].tolist()) == [0, 3, 5, 7, 39]  # only the rows present in the batch
    np.testing.assert_allclose(g.to_dense().numpy(), dense.weight.grad.numpy(), atol=1e-6)
    with torch.no_grad():
        np.testing.assert_array_equal(row_sparse(indices, offsets, per_sample_weights=psw).numpy(),
                                      dense(indices, offsets, per_sample_weights=psw).numpy())


def test_dense_buffer_gives_the_exact_dense_adamw_update():
    # the training loop's path: sparse gradient → persistent dense buffer → fused AdamW → clear touched rows;
    # rows never present still move (decay and momentum), exactly as with a dense gradient
    dense, row_sparse = _pair(n_features=60)
    X = sp.random(50, 60, density=0.08, format="csr", dtype=np.float32, random_state=0)
    opts = [torch.optim.AdamW(m.parameters(), lr=0.05, weight_decay=0.5) for m in (dense, row_sparse)]
    pairs = [(row_sparse.weight, torch.zeros_like(row_sparse.weight))]
    rng = np.random.RandomState(0)
    for _ in range(6):
        idx, off, w = SparseBagEncoder.make_batch(X[rng.choice(50, 12, replace=False)], "cpu")
        grad_out = torch.randn(12, 8)
        for m in (dense, row_sparse):
            (m(idx, off, per_sample_weights=w) * grad_out).sum().backward()
        touched = _densify_row_grads(pairs)
        assert len(touched) == 1
        for o in opts:
            o.step()
            o.zero_grad(set_to_none=True)
        for buf, rows in touched:
            buf.index_fill_(0, rows, 0.0)
        assert not pairs[0][1].any()
    np.testing.assert_allclose(row_sparse.weight.detach().numpy(), dense.weight.detach().numpy(), atol=1e-5)
