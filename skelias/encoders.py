"""Encoders φ: plain ``torch.nn`` modules behind one small interface.

Every encoder has ``dim`` (the embedding size d), ``make_batch(X_rows, device)`` that builds its
input tensors from rows of a model input (:mod:`skelias._inputs`) and ``forward(batch) -> Tensor (N, d)``:

- :class:`SparseBagEncoder`: TF-IDF rows (CSR) through a sparse embedding bag;
- :class:`DenseMLPEncoder`: an MLP over dense feature arrays;
- :class:`HybridEncoder`: the TF-IDF bag plus a projected pretrained sentence embedding, frozen or fine-tuned;
- :class:`TransformerEncoder`: a fine-tuned Hugging Face transformer on raw texts (the paper's φ).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ._inputs import TextRows
from .pretrained import POOLINGS, load_pretrained, pool, tokenize

__all__ = ["DenseMLPEncoder", "HybridEncoder", "RowSparseEmbeddingBag", "SparseBagEncoder", "TransformerEncoder"]


class _RowSparseBagFunction(torch.autograd.Function):
    """Sum-mode embedding bag whose weight gradient is a sparse (rows × dim) tensor, one row per feature.

    ``∂loss/∂E = Xᵀ G`` restricted to the u features present in the batch, computed as a second
    embedding bag over the rows of G (u bags, one per feature). ``nn.EmbeddingBag`` instead fills a
    dense (n_features × dim) zero gradient every step or, with ``sparse=True``, one row per non-zero
    of the batch.
    """

    @staticmethod
    def forward(ctx, weight, indices, offsets, per_sample_weights):
        ctx.save_for_backward(indices, offsets, per_sample_weights)
        ctx.weight_shape = weight.shape
        return nn.functional.embedding_bag(indices, weight, offsets, mode="sum", per_sample_weights=per_sample_weights)

    @staticmethod
    def backward(ctx, grad_out):
        indices, offsets, psw = ctx.saved_tensors
        n = grad_out.shape[0]
        ends = torch.cat([offsets[1:], offsets.new_tensor([indices.numel()])])
        bag_of = torch.repeat_interleave(torch.arange(n, device=indices.device), ends - offsets)
        # Xᵀ G is itself an embedding bag: one bag per distinct feature, over the rows of G of the
        # documents that hold it, weighted by the feature values
        rows, inverse, counts = torch.unique(indices, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        grad_rows = nn.functional.embedding_bag(bag_of[order], grad_out.to(torch.float32), starts, mode="sum",
                                                per_sample_weights=psw[order].to(torch.float32))
        grad = torch.sparse_coo_tensor(rows.unsqueeze(0), grad_rows, ctx.weight_shape,
                                       is_coalesced=True, check_invariants=False)
        return grad, None, None, None


class RowSparseEmbeddingBag(nn.EmbeddingBag):
    """``nn.EmbeddingBag`` (mode "sum", per-sample weights) whose training gradient is row-sparse.

    Forward values are those of ``nn.EmbeddingBag``. When gradients flow to the table, ``weight.grad``
    is a sparse COO tensor holding one row per feature present in the batch, already summed;
    :class:`skelias._training.RowSparseGradients` scatters it into a persistent dense buffer for AdamW (the
    exact dense update, without a full-table zero fill per step) or hands it to ``SparseAdam``.
    """

    def forward(self, input, offsets=None, per_sample_weights=None):
        """Sum of the weighted rows of each bag, shape (n_bags, dim) float32 (as ``nn.EmbeddingBag``)."""
        if torch.is_grad_enabled() and self.weight.requires_grad and offsets is not None and self.mode == "sum":
            if per_sample_weights is None:
                per_sample_weights = torch.ones(input.shape, dtype=self.weight.dtype, device=input.device)
            return _RowSparseBagFunction.apply(self.weight, input, offsets, per_sample_weights)
        return super().forward(input, offsets, per_sample_weights=per_sample_weights)


class _ResidualHead(nn.Module):
    """h -> h + GELU(W h + b), then dropout."""

    def __init__(self, dim, dropout):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h):
        return self.dropout(h + nn.functional.gelu(self.linear(h)))


def _tfidf_bag(n_features, dim, init_std):
    """A row-sparse sum bag with N(0, init_std²) entries.

    Unit-norm TF-IDF rows then give activations of about ``init_std`` per unit (a much smaller
    initialisation leaves the model predicting label priors for several epochs before it learns).
    """
    bag = RowSparseEmbeddingBag(n_features, dim, mode="sum")
    nn.init.normal_(bag.weight, std=init_std)
    return bag


class SparseBagEncoder(nn.Module):
    """φ(x) = h + GELU(W₂h + b₂), h = GELU(Σ_f x_f e_f + b₁): a sparse linear layer (embedding bag).

    Sparse input stays sparse: each row's non-zeros index rows of the
    (n_features × dim) table, weighted by their values (``nn.EmbeddingBag``, mode "sum").

    Parameters
    ----------
    n_features : int
        Columns of the input matrix (the table's rows).
    dim : int, default=512
        d, the embedding size.
    dropout : float, default=0.2
        Dropout on the output.
    residual : bool, default=True
        Add the residual GELU block.
    init_std : float, default=0.3
        Standard deviation of the table's initial entries.
    """

    def __init__(self, n_features, dim=512, dropout=0.2, residual=True, init_std=0.3):
        super().__init__()
        self.dim = dim
        self.bag = _tfidf_bag(n_features, dim, init_std)
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
    """φ(x) = h + GELU(W₂h + b₂), h = GELU(W₁x + b₁), for dense feature arrays.

    Parameters
    ----------
    n_features : int
        Columns of the input array.
    dim, dropout, residual :
        As in :class:`SparseBagEncoder`.
    """

    def __init__(self, n_features, dim=512, dropout=0.2, residual=True):
        super().__init__()
        self.dim = dim
        self.input = nn.Linear(n_features, dim)
        self.head = _ResidualHead(dim, dropout) if residual else nn.Dropout(dropout)

    @staticmethod
    def make_batch(X, device):
        """Dense rows → a float32 tensor."""
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)

    def forward(self, batch):
        return self.head(nn.functional.gelu(self.input(batch)))


class HybridEncoder(nn.Module):
    """φ(x) = h + GELU(W₂h + b₂), h = GELU(bag(TF-IDF(x)) + W_p·e(x) + b₁), e(x) a pretrained sentence embedding.

    The pretrained embedding enters through a learned projection before the nonlinearity.
    Frozen (``transformer=None``): e(x) is computed once per fit/predict and the batches
    carry it (:class:`~skelias._inputs.HybridFeatures`). Fine-tuned: ``transformer`` (a mean-pooling
    :class:`TransformerEncoder`) computes e(x) = normalize(pool(transformer(x))) from the
    texts in every batch (:class:`~skelias._inputs.HybridTexts`) and is trained with the rest.

    Parameters
    ----------
    n_features : int
        TF-IDF columns (the bag's rows).
    pretrained_dim : int
        p, the size of the pretrained embedding.
    dim, dropout, residual, init_std :
        As in :class:`SparseBagEncoder`.
    pretrained_scale : float or None, default=1.0
        The unit-norm embedding is multiplied by this before the projection; ``None``: √p.
    transformer : TransformerEncoder or None, default=None
        The pretrained model to fine-tune; ``None``: frozen embeddings come with the batches.
    """

    def __init__(self, n_features, pretrained_dim, dim=512, dropout=0.2, residual=True, init_std=0.3,
                 pretrained_scale=1.0, transformer=None):
        super().__init__()
        self.transformer = transformer
        self.dim = dim
        self.bag = _tfidf_bag(n_features, dim, init_std)
        self.project = nn.Linear(pretrained_dim, dim)
        # unit-norm embeddings have entries ~ 1/sqrt(p); scaled by sqrt(p) they enter the projection with
        # unit variance (None), the same activation scale as the bag's at initialisation
        scale = np.sqrt(pretrained_dim) if pretrained_scale is None else pretrained_scale
        self.register_buffer("pretrained_scale", torch.tensor(float(scale)))
        self.head = _ResidualHead(dim, dropout) if residual else nn.Dropout(dropout)

    def make_batch(self, X, device):
        """(bag tensors, embeddings (N, p)) — or (bag tensors, tokens) when the transformer is fine-tuned."""
        bag = SparseBagEncoder.make_batch(X.sparse, device)
        if self.transformer is not None:
            return bag, self.transformer.make_batch(X.texts, device)
        return bag, torch.from_numpy(X.dense).to(device)

    def forward(self, batch):
        (indices, offsets, weights), dense = batch
        if self.transformer is not None:  # same input as the frozen path: the unit-norm mean-pooled embedding
            dense = nn.functional.normalize(self.transformer(dense), dim=-1)
        h = self.bag(indices, offsets, per_sample_weights=weights) + self.project(dense * self.pretrained_scale)
        return self.head(nn.functional.gelu(h))


class TransformerEncoder(nn.Module):
    """φ(x) = dropout(CLS vector of a Hugging Face ``AutoModel``) (paper §3.2), optionally projected to ``dim``.

    Fine-tuned with its own learning rate (``lr_encoder``); tokenisation happens per batch.

    Parameters
    ----------
    model : str
        Local model directory (or an offline-resolvable name, or "all-MiniLM-L6-v2").
    max_length : int, default=32
        Tokens per text.
    dim : int or None, default=None
        Output size; ``None`` keeps the transformer's hidden size.
    pooling : {"cls", "mean"}, default="cls"
        The CLS token's state or the mask-weighted mean of the token states.
    dropout : float, default=0.2
        Dropout on the output.
    download : bool, default=False
        Allow downloading a Hugging Face Hub id that is not in the local cache.
    """

    def __init__(self, model, max_length=32, dim=None, pooling="cls", dropout=0.2, download=False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'cls' or 'mean'; got {pooling!r}.")
        self.tokenizer, self.transformer = load_pretrained(model, download=download)
        hidden = int(self.transformer.config.hidden_size)
        self.max_length, self.pooling = int(max_length), pooling
        self.projection = nn.Linear(hidden, dim) if dim and dim != hidden else nn.Identity()
        self.dim = int(dim) if dim else hidden
        self.dropout = nn.Dropout(dropout)

    def make_batch(self, X, device):
        """Tokenised texts (padded, truncated to ``max_length``) of a :class:`~skelias._inputs.TextRows` or list."""
        texts = X.texts if isinstance(X, TextRows) else list(X)
        return tokenize(self.tokenizer, texts, self.max_length, return_tensors="pt").to(device)

    def forward(self, batch):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=batch["input_ids"].is_cuda):
            hidden = self.transformer(**batch).last_hidden_state
        return self.dropout(self.projection(pool(hidden.float(), batch["attention_mask"], self.pooling)))
