"""The ELIAS network (paper §3.2): encoder φ, cluster classifiers W_C, adjacency A, label classifiers W_L."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from . import index
from .index import NEG_INF

__all__ = ["ELIASNetwork"]


class ELIASNetwork(nn.Module):
    """ELIAS as a plain torch module.

    Parameters
    ----------
    encoder : nn.Module with attribute ``dim``
    n_labels : int (L)
    a_indices, a_mask : ndarray of shape (C+1, κ)
        Padded row-sparse adjacency (see :func:`skelias.index.padded_adjacency`).
    alpha, beta : float
        Eq. 1 and Eq. 5 multipliers.
    beam_size, shortlist_size : int
        b and K.
    learn_adjacency : bool
        Stage 2 (A's non-zeros are parameters, Eq. 5) or stage 1 (A fixed, edge score 1).
    dense_label_scoring : bool
        Score all L labels with one matmul and gather the shortlist (fast up to ~10⁵
        labels on CPU) instead of gathering K classifier rows per example.
    a_values : ndarray (C+1, κ), optional
        Initial values of A's non-zeros; default random(0, 1) (Eq. 10).
    seed : int
    label_bias_init : float, default=0.0
        Initial b_l of every label classifier. :class:`~skelias.ELIASClassifier` passes the log-odds
        of a scored label being positive, log(ȳ / (K − ȳ)) with ȳ the mean number of labels per row.
    """

    def __init__(self, encoder, n_labels, a_indices, a_mask, *, alpha=10.0, beta=150.0, beam_size=20,
                 shortlist_size=2000, learn_adjacency=False, dense_label_scoring=True, a_values=None, seed=0,
                 label_bias_init=0.0):
        super().__init__()
        self.encoder = encoder
        d = encoder.dim
        C = a_indices.shape[0] - 1
        self.n_labels, self.n_clusters = int(n_labels), int(C)
        self.alpha, self.beta = float(alpha), float(beta)
        self.beam_size, self.shortlist_size = int(beam_size), int(shortlist_size)
        self.dense_label_scoring = bool(dense_label_scoring)
        self.cluster_classifier = nn.Linear(d, C)
        self.label_weight = nn.Parameter(torch.empty(n_labels, d))
        self.label_bias = nn.Parameter(torch.full((n_labels,), float(label_bias_init)))
        nn.init.normal_(self.label_weight, std=1.0 / math.sqrt(d))
        self.register_buffer("a_indices", torch.as_tensor(a_indices, dtype=torch.int64))
        self.register_buffer("a_mask", torch.as_tensor(a_mask, dtype=torch.bool))
        self.learn_adjacency = bool(learn_adjacency)
        if a_values is None:  # Eq. 10: random(0, 1) on the support
            g = torch.Generator().manual_seed(seed)
            a_values = torch.rand(a_indices.shape, generator=g)
        self.a_values = nn.Parameter(torch.as_tensor(a_values, dtype=torch.float32), requires_grad=learn_adjacency)
        self.register_buffer("parent", torch.zeros(n_labels, dtype=torch.int64))
        # fixed edge scores (C+1, κ) in log space, e.g. of a pruned index; None: Eq. 5 / 0-1 support
        self.register_buffer("fixed_log_edges", None)
        self.update_parents()

    # ------------------------------------------------------------------ configuration
    def get_config(self):
        """The settings that, with the encoder and :meth:`state_dict`, rebuild this module (:meth:`from_state`)."""
        return dict(n_labels=self.n_labels, alpha=self.alpha, beta=self.beta, beam_size=self.beam_size,
                    shortlist_size=self.shortlist_size, learn_adjacency=self.learn_adjacency,
                    dense_label_scoring=self.dense_label_scoring, fixed_edges=self.fixed_log_edges is not None)

    @classmethod
    def from_state(cls, encoder, config, state_dict):
        """Rebuild a network from :meth:`get_config` and a state dict, in evaluation mode.

        Parameters
        ----------
        encoder : nn.Module
            An encoder of the architecture the state dict was saved with.
        config : dict
            :meth:`get_config` of the saved network.
        state_dict : dict of str to Tensor
        """
        config = dict(config)
        fixed_edges = config.pop("fixed_edges", False)
        net = cls(encoder, a_indices=state_dict["a_indices"].cpu().numpy(), a_mask=state_dict["a_mask"].cpu().numpy(),
                  **config)
        if fixed_edges:
            net.fixed_log_edges = torch.empty_like(state_dict["fixed_log_edges"])
        net.load_state_dict(state_dict)
        return net.eval()

    # ------------------------------------------------------------------ index pieces
    def log_edge_scores(self):
        """(C+1, κ) log edge scores: Eq. 5 in stage 2, 0 on the fixed support in stage 1.

        Outside training (no autograd) the result is cached until A's values change (their tensor
        version counter moves with every optimiser step): a single-query prediction does not recompute
        a (C+1) × κ softmax.
        """
        if self.learn_adjacency:
            if self.training or torch.is_grad_enabled():
                return index.edge_log_scores(self.a_values, self.a_mask, self.beta)
            key = (self.a_values.data_ptr(), self.a_values._version, self.a_values.device, self.beta)
            cache = getattr(self, "_edge_cache", None)
            if cache is None or cache[0] != key:
                cache = (key, index.edge_log_scores(self.a_values, self.a_mask, self.beta))
                self._edge_cache = cache
            return cache[1]
        if self.fixed_log_edges is not None:
            return self.fixed_log_edges
        return torch.zeros_like(self.a_values).masked_fill(~self.a_mask, NEG_INF)

    @property
    def multi_edge(self):
        """True when a label may hang under several clusters (stage 2, or a fixed learned index)."""
        return self.learn_adjacency or self.fixed_log_edges is not None

    @torch.no_grad()
    def update_parents(self):
        """Eq. 3's ``argmax_c a_{c,l}`` for every label (the fixed cluster in stage 1)."""
        if self.learn_adjacency:
            vals = self.a_values
        elif self.fixed_log_edges is not None:
            vals = self.fixed_log_edges.exp()
        else:
            vals = self.a_mask.float()
        self.parent.copy_(index.label_parents(self.a_indices, self.a_mask, vals, self.n_labels))

    def label_logits(self, emb, labels):
        """w_lᵀφ + b_l for the shortlisted labels (pad label L gives an arbitrary finite value).

        Dense scoring (one N × L matmul, then a gather) in training when ``dense_label_scoring``, and
        in prediction when the batch's shortlists hold at least L entries and L ≤ 16·K; otherwise gather
        the N·K classifier rows, which reads less memory (a single query reads K rows instead of all L).
        """
        safe = labels.clamp(max=self.n_labels - 1)
        # prediction: a GEMM over all L rows costs ~L/(20·K) times a gather of the K shortlisted rows
        # (compute- vs memory-bound on CPU), so beyond L = 16·K the gather wins even for large batches
        dense_pays = labels.numel() >= self.n_labels and self.n_labels <= 16 * labels.shape[-1]
        if self.dense_label_scoring and (self.training or dense_pays):
            if torch.is_grad_enabled():
                full = (emb @ self.label_weight.T).add_(self.label_bias)  # in place: one N × L buffer, not two
            else:  # prediction: the bias added inside the GEMM (one pass less over the N × L buffer)
                full = torch.addmm(self.label_bias, emb, self.label_weight.T)
            return torch.gather(full, 1, safe)
        if emb.device.type == "cpu" and not torch.is_grad_enabled():
            return _sampled_logits(emb, safe, self.label_weight, self.label_bias)
        w = nn.functional.embedding(safe, self.label_weight)  # (N, K, d) rows of W_L
        return torch.bmm(w, emb.unsqueeze(-1)).squeeze(-1) + self.label_bias[safe]

    # ------------------------------------------------------------------ forward
    def forward(self, batch, gold_parents=None, gold_labels=None, shortlist_size=None, beam_size=None):
        """Eq. 1–6 and the label classifiers.

        Parameters
        ----------
        batch : encoder input
        gold_parents : Tensor (N, P), optional
            Parent clusters of the gold labels (training, Eq. 3); ``C`` = padding.
        gold_labels : Tensor (N, P), optional
            Gold label ids (``L`` = padding); when given, ``gold_log_shortlist`` holds log ŷ_l
            of each gold label (-inf when no explored path reaches it).
        shortlist_size : int, optional
            K for this call; default ``shortlist_size``.
        beam_size : int, optional
            b for this call (capped at C); default ``beam_size``.

        Returns
        -------
        dict with ``labels`` (N, K) int64 (pad = L), ``log_shortlist`` (N, K) log ŷ,
        ``logits`` (N, K) label-classifier logits, ``embedding`` (N, d) and, with
        ``gold_labels``, ``gold_log_shortlist`` (N, P).
        """
        emb = self.encoder(batch).float()
        K = self.shortlist_size if shortlist_size is None else shortlist_size
        L = self.n_labels
        if self.is_one_vs_all and K >= L:
            # one cluster holding every label: ŝ = 1 and every label is shortlisted, so ELIAS reduces to
            # a brute-force one-vs-all classifier; skip the index and score all L labels with one matmul
            N = emb.shape[0]
            out = {"embedding": emb, "dense": True,
                   "labels": torch.arange(L, device=emb.device).expand(N, L),
                   "log_shortlist": torch.zeros(N, L, device=emb.device),
                   "logits": emb @ self.label_weight.T + self.label_bias}
            if gold_labels is not None:
                out["gold_log_shortlist"] = torch.zeros(gold_labels.shape, device=emb.device).masked_fill(
                    gold_labels >= L, NEG_INF)
            return out
        log_cs = index.cluster_log_scores(self.cluster_classifier(emb), self.alpha)
        b = self.beam_size if beam_size is None else min(int(beam_size), self.n_clusters)
        clusters = index.shortlist_clusters(log_cs, b, gold_parents)
        log_es = self.log_edge_scores()
        labels, log_path = index.expand_paths(clusters, log_cs, self.a_indices, log_es)
        out = {"embedding": emb}
        # Eq. 6 with a dense N × (L+1) buffer costs O(N·L); sorting the N·P paths costs O(N·P log): the
        # buffer only pays while L is within a small multiple of the paths per row P (and fits in memory)
        use_dense = labels.shape[0] * (L + 1) <= self.dense_max_threshold and L + 1 <= 16 * labels.shape[1]
        if self.multi_edge and use_dense:
            top_lab, top_lp, gold_lp = index.dense_shortlist(labels, log_path, L, min(K, L), gold_labels)  # Eq. 6
            if gold_labels is not None:
                out["gold_log_shortlist"] = gold_lp
        else:
            if self.multi_edge:  # a label may be reached through several clusters: Eq. 6
                labels, log_path = index.max_over_paths(labels, log_path, L)
            top_lab, top_lp = index.shortlist_labels(labels, log_path, K, L)
            if gold_labels is not None and not self.multi_edge:
                # stage 1: A is a partition, so a gold label's only path is through its parent cluster,
                # which teacher forcing put in the shortlist (Eq. 3-4): ŷ_l = ŝ_parent(l), a gather
                par = self.parent[gold_labels.clamp(max=L - 1)]
                g = torch.gather(log_cs, 1, par.clamp(max=self.n_clusters - 1))
                out["gold_log_shortlist"] = g.masked_fill((gold_labels >= L) | (par >= self.n_clusters), NEG_INF)
            elif gold_labels is not None:
                out["gold_log_shortlist"] = _lookup(labels, log_path, gold_labels, L)
        out.update(labels=top_lab, log_shortlist=top_lp, logits=self.label_logits(emb, top_lab))
        return out

    @property
    def is_one_vs_all(self):
        """A single cluster with an edge to every label and a fixed index (stage 1 with C = 1)."""
        return self.n_clusters == 1 and not self.multi_edge and bool(self.a_mask[0].sum() == self.n_labels)

    #: use the dense (N, L+1) buffer for Eq. 6 when it holds at most this many entries
    dense_max_threshold = 2**25

    @torch.no_grad()
    def cluster_topb(self, batch):
        """(indices, scores) of the top-b clusters by ŝ_c (Eq. 9's matching matrix rows)."""
        emb = self.encoder(batch).float()
        log_cs = index.cluster_log_scores(self.cluster_classifier(emb), self.alpha)
        top = torch.topk(log_cs, min(self.beam_size, self.n_clusters), dim=1)
        return top.indices, top.values.exp()

    def set_adjacency(self, a_indices, a_mask, seed=0, a_values=None):
        """Replace A by a new support and make it learnable: random(0, 1) values (Eq. 10) or ``a_values``."""
        dev = self.a_indices.device
        self.a_indices = torch.as_tensor(a_indices, dtype=torch.int64, device=dev)
        self.a_mask = torch.as_tensor(a_mask, dtype=torch.bool, device=dev)
        if a_values is None:
            g = torch.Generator().manual_seed(seed)
            a_values = torch.rand(a_indices.shape, generator=g)
        a_values = torch.as_tensor(a_values, dtype=torch.float32)
        self.a_values = nn.Parameter(a_values.to(dev), requires_grad=True)
        self.learn_adjacency = True
        self.fixed_log_edges = None
        self.update_parents()

    @torch.no_grad()
    def fix_adjacency(self, a_indices, a_mask, log_edges):
        """Freeze the index to given edge scores (log space), e.g. a pruned copy of a learned A."""
        dev = self.a_indices.device
        self.a_indices = torch.as_tensor(a_indices, dtype=torch.int64, device=dev)
        self.a_mask = torch.as_tensor(a_mask, dtype=torch.bool, device=dev)
        self.a_values = nn.Parameter(torch.zeros(self.a_indices.shape, device=dev), requires_grad=False)
        self.learn_adjacency = False
        self.fixed_log_edges = torch.as_tensor(log_edges, dtype=torch.float32, device=dev).masked_fill(
            ~self.a_mask, NEG_INF
        )
        self.update_parents()


def _sampled_logits(emb, labels, weight, bias):
    """``weight[labels[i, j]] · emb[i] + bias[labels[i, j]]`` as one sampled dense-dense product (no autograd).

    ``torch.sparse.sampled_addmm`` computes only the N·K requested dot products, reading each classifier
    row once, where a gather followed by a batched matmul first copies the N·K rows (d floats each) and
    reads them again: about a third less time for a single query on CPU. The pattern keeps the shortlist's
    order and repeated labels (the CPU kernel computes each stored entry on its own; sorting the columns
    would cost a sixth of the product), so its values are the logits in ``labels``' order.
    """
    N, K = labels.shape
    crow = torch.arange(0, N * K + 1, K, dtype=torch.int64, device=labels.device)
    with warnings.catch_warnings():  # torch warns once per process that sparse CSR support is in beta
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(crow, labels.reshape(-1), bias[labels].reshape(-1).to(emb.dtype),
                                          size=(N, weight.shape[0]), check_invariants=False)
    return torch.sparse.sampled_addmm(pattern, emb.contiguous(), weight.T.to(emb.dtype)).values().view(N, K)


def _search(sorted_keys, query):
    """Positions of ``query`` in the sorted 1-D ``sorted_keys`` and whether each is present."""
    pos = torch.searchsorted(sorted_keys, query).clamp(max=max(sorted_keys.numel() - 1, 0))
    if sorted_keys.numel() == 0:
        return pos, torch.zeros_like(query, dtype=torch.bool)
    return pos, sorted_keys[pos] == query


def _row_keys(labels, n_labels):
    """``row * (L+1) + label`` for an (N, m) label tensor."""
    return torch.arange(labels.shape[0], device=labels.device).unsqueeze(1) * (n_labels + 1) + labels


def _lookup(labels, log_path, gold_labels, n_labels):
    """log ŷ of each gold label from a de-duplicated path set (-inf when absent)."""
    keys = _row_keys(labels, n_labels).reshape(-1)
    order = torch.argsort(keys)
    pos, found = _search(keys[order], _row_keys(gold_labels, n_labels))
    vals = log_path.reshape(-1)[order[pos]]
    return torch.where(found & (gold_labels < n_labels), vals, torch.full_like(vals, NEG_INF))


def elias_loss(out, gold_keys, n_labels, loss_lambda):
    """L = L_c + λ·L_s (Eq. 7–8), in log space.

    ``log p = logσ(z) + log ŷ`` and ``log(1-p) = logaddexp(logσ(-z), logσ(z) + log(1-ŷ))``
    are exact and finite; log ŷ is clamped just below 0 so that ``log(1-ŷ)`` stays finite.
    As in the public code, L_c is averaged over the N·K shortlist entries and L_s
    over N × (max gold labels per row) slots, so that λ = 0.05 keeps its tuned meaning.

    Parameters
    ----------
    out : dict from :meth:`ELIASNetwork.forward` (called with ``gold_labels``)
    gold_keys : Tensor (nnz,), sorted int64 keys ``row * (L+1) + label`` of the gold labels
    """
    labels, log_y, z = out["labels"], out["log_shortlist"], out["logits"].float()
    N, K = labels.shape
    if out.get("dense"):  # one-vs-all: BCE over all labels, every gold label reached with ŷ = 1 (L_s = 0)
        target = torch.zeros(N, K, device=z.device)
        target.view(-1)[(gold_keys // (n_labels + 1)) * K + gold_keys % (n_labels + 1)] = 1.0
        loss_c = nn.functional.binary_cross_entropy_with_logits(z, target, reduction="sum") / (N * K)
        zero = torch.zeros((), device=z.device)
        return loss_c, loss_c.detach(), zero
    valid = torch.isfinite(log_y)
    target = _is_gold(labels, gold_keys, n_labels) & valid
    log_y = torch.where(valid, log_y, torch.full_like(log_y, -30.0)).clamp(max=-1e-6)
    log_p = nn.functional.logsigmoid(z) + log_y
    log_1mp = torch.logaddexp(nn.functional.logsigmoid(-z), nn.functional.logsigmoid(z) + torch.log1p(-log_y.exp()))
    lc = -torch.where(target, log_p, log_1mp)
    loss_c = (lc * valid).sum() / (N * K)
    g = out["gold_log_shortlist"]  # (N, P): log ŷ of the gold labels, -inf when unreachable or padding
    found = torch.isfinite(g)
    loss_s = -(g.masked_fill(~found, 0.0)).sum() / (N * g.shape[1])
    return loss_c + loss_lambda * loss_s, loss_c.detach(), loss_s.detach()


def _is_gold(labels, gold_keys, n_labels):
    return _search(gold_keys, _row_keys(labels, n_labels))[1]


def gold_tensors(Y_rows, parent, n_clusters, device, width=None):
    """For a CSR batch of labels: sorted gold keys, (N, P) gold labels (pad L) and their parents (pad C).

    ``width``: at least this many gold columns P (a data-parallel rank pads to the global batch's P, so
    that L_s keeps the global batch's normalisation).
    """
    L = Y_rows.shape[1]
    n_per = np.diff(Y_rows.indptr)
    rows = np.repeat(np.arange(Y_rows.shape[0]), n_per)
    keys = torch.from_numpy(rows * (L + 1) + Y_rows.indices.astype(np.int64)).to(device)
    P = max(int(n_per.max()) if n_per.size else 0, 1, width or 0)
    gold = torch.full((Y_rows.shape[0], P), L, dtype=torch.int64, device=device)
    if Y_rows.nnz:
        pos = np.arange(Y_rows.nnz) - Y_rows.indptr[rows]
        gold[torch.from_numpy(rows).to(device), torch.from_numpy(pos).to(device)] = torch.from_numpy(
            Y_rows.indices.astype(np.int64)
        ).to(device)
    par = torch.full_like(gold, n_clusters)
    real = gold < L
    par[real] = parent[gold[real]]
    return keys, gold, par
