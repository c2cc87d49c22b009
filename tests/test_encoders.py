import numpy as np
import pytest
import torch
from torch import nn

from skelias.encoders import RowSparseEmbeddingBag


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
