"""Encoders φ: sparse bag (TF-IDF), dense MLP. Plain ``torch.nn`` modules behind one small interface.

Every encoder has ``dim`` (the embedding size d) and ``forward(batch) -> Tensor (N, d)``
where ``batch`` is what :meth:`make_batch` builds from rows of the estimator's
input (a CSR matrix for the sparse encoder, an ndarray for the dense one).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

__all__ = ["SparseBagEncoder", "DenseMLPEncoder", "HybridEncoder", "HybridFeatures"]


class _ResidualHead(nn.Module):
    """h -> h + GELU(W h + b), then dropout."""

    def __init__(self, dim, dropout):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h):
        return self.dropout(h + nn.functional.gelu(self.linear(h)))


class SparseBagEncoder(nn.Module):
    """φ(x) = h + GELU(W₂h + b₂), h = GELU(Σ_f x_f e_f + b₁): a sparse linear layer (embedding bag).

    Sparse input stays sparse: each row's non-zeros index rows of the
    (n_features × dim) table, weighted by their values (``nn.EmbeddingBag``, mode "sum").

    Parameters
    ----------
    n_features : int
    dim : int
    dropout : float
    residual : bool
        Add the residual GELU block.
    """

    def __init__(self, n_features, dim=512, dropout=0.2, residual=True, init_std=0.3):
        super().__init__()
        self.dim = dim
        self.bag = nn.EmbeddingBag(n_features, dim, mode="sum")
        # unit-norm TF-IDF rows then give unit-variance activations (a smaller init leaves the
        # model predicting label priors for several epochs before it starts to learn)
        nn.init.normal_(self.bag.weight, std=init_std)
        self.bias = nn.Parameter(torch.zeros(dim))
        self.head = _ResidualHead(dim, dropout) if residual else nn.Dropout(dropout)

    @staticmethod
    def make_batch(X, device):
        """CSR rows → (indices, offsets, per-sample weights) tensors."""
        X = sp.csr_matrix(X)
        return (
            torch.from_numpy(X.indices.astype(np.int64)).to(device),
            torch.from_numpy(X.indptr[:-1].astype(np.int64)).to(device),
            torch.from_numpy(X.data.astype(np.float32)).to(device),
        )

    def forward(self, batch):
        indices, offsets, weights = batch
        h = nn.functional.gelu(self.bag(indices, offsets, per_sample_weights=weights) + self.bias)
        return self.head(h)


class DenseMLPEncoder(nn.Module):
    """φ(x) = h + GELU(W₂h + b₂), h = GELU(W₁x + b₁), for dense feature arrays."""

    def __init__(self, n_features, dim=512, dropout=0.2, residual=True):
        super().__init__()
        self.dim = dim
        self.input = nn.Linear(n_features, dim)
        self.head = _ResidualHead(dim, dropout) if residual else nn.Dropout(dropout)

    @staticmethod
    def make_batch(X, device):
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)

    def forward(self, batch):
        return self.head(nn.functional.gelu(self.input(batch)))


class HybridFeatures:
    """TF-IDF rows (CSR, n × D) and frozen pretrained embeddings (n × p) of the same documents."""

    def __init__(self, sparse, dense):
        if sparse.shape[0] != dense.shape[0]:
            raise ValueError(f"{sparse.shape[0]} TF-IDF rows but {dense.shape[0]} embeddings.")
        self.sparse = sp.csr_matrix(sparse, dtype=np.float32)
        self.dense = np.ascontiguousarray(dense, dtype=np.float32)

    @property
    def shape(self):
        return (self.sparse.shape[0], self.sparse.shape[1])

    def __getitem__(self, rows):
        return HybridFeatures(self.sparse[rows], self.dense[rows])


class HybridEncoder(nn.Module):
    """φ(x) = h + GELU(W₂h + b₂), h = GELU(bag(TF-IDF(x)) + W_p·e(x) + b₁), e(x) a frozen sentence embedding.

    The measured accuracy lever on CPU (tibkat-en: +9 P@1 over the TF-IDF bag alone):
    the pretrained embedding is computed once per fit/predict and enters through a
    learned projection before the nonlinearity.
    """

    def __init__(self, n_features, pretrained_dim, dim=512, dropout=0.2, residual=True, init_std=0.3):
        super().__init__()
        self.dim = dim
        self.bag = nn.EmbeddingBag(n_features, dim, mode="sum")
        nn.init.normal_(self.bag.weight, std=init_std)
        self.project = nn.Linear(pretrained_dim, dim)
        self.head = _ResidualHead(dim, dropout) if residual else nn.Dropout(dropout)

    @staticmethod
    def make_batch(X, device):
        return SparseBagEncoder.make_batch(X.sparse, device), torch.from_numpy(X.dense).to(device)

    def forward(self, batch):
        (indices, offsets, weights), dense = batch
        h = self.bag(indices, offsets, per_sample_weights=weights) + self.project(dense)
        return self.head(nn.functional.gelu(h))
