"""Training and prediction loops for :class:`~skelias._network.ELIASNetwork` (paper §3.4, App. C)."""

from __future__ import annotations

import copy
import logging

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ._network import elias_loss, gold_tensors
from .encoders import RowSparseEmbeddingBag

logger = logging.getLogger("skelias")

__all__ = ["cluster_matching_matrix", "predict_topk_scores", "train_stage"]


def _param_groups(net, lr, lr_encoder, weight_decay, lr_adjacency=None, lr_pretrained=None, exclude=()):
    """Two groups x {decay, no decay}: encoder (lr_encoder) and index/classifiers (lr).

    A's edge values get ``lr_adjacency`` (``lr`` when None); a fine-tuned pretrained transformer
    inside the hybrid encoder (``encoder.transformer.*``) gets ``lr_pretrained`` (``lr_encoder``
    when None). Weight decay applies to weight matrices only (not to biases, norms or A's edge values).
    """
    groups = {}
    skip = {id(p) for p in exclude}
    for name, p in net.named_parameters():
        if not p.requires_grad or id(p) in skip:
            continue
        fast = name.startswith("encoder.")
        decay = p.ndim >= 2 and "norm" not in name.lower() and name != "a_values"
        pretrained = lr_pretrained is not None and name.startswith("encoder.transformer.")
        key = ("encoder", decay, pretrained) if fast else ("index", decay, False)
        groups.setdefault(key, []).append(p)
    out = []
    for (part, decay, pretrained), params in groups.items():
        if part == "index" and lr_adjacency is not None and any(p is net.a_values for p in params):
            rest = [p for p in params if p is not net.a_values]
            out.append({"params": [net.a_values], "lr": lr_adjacency, "weight_decay": 0.0, "part": part})
            if not rest:
                continue
            params = rest
        out.append({"params": params, "lr": (lr_pretrained if pretrained else lr_encoder) if part == "encoder" else lr,
                    "weight_decay": weight_decay if decay else 0.0, "part": part})
    return out


def _adamw(groups):
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):  # fused not available for this device/dtype
        return torch.optim.AdamW(groups, foreach=True)


def _densify_row_grads(pairs):
    """Replace each weight's sparse gradient by its dense buffer holding it; return (buffer, rows) to clear."""
    touched = []
    for weight, buf in pairs:
        g = weight.grad
        if g is None or not g.is_sparse:
            continue
        # autograd hands the gradient over without its coalesced flag; index_add_ sums any duplicate
        # rows into the (zero) buffer rows, so no sort is needed
        rows = g._indices()[0]
        buf.index_add_(0, rows, g._values().to(buf.dtype))
        weight.grad = buf
        touched.append((buf, rows))
    return touched


def train_stage(net, X, Y, *, make_batch, n_epochs, batch_size, lr, lr_encoder, weight_decay, warmup,
                loss_lambda, accumulation_steps, rng, device, use_amp, verbose, desc, evaluate=None, lr_adjacency=None,
                lr_pretrained=None, embedding_optimizer="adamw"):
    """Train ``net`` for ``n_epochs`` epochs on (X, Y); return per-epoch history.

    The encoder steps every batch; the index and label classifiers (W_C, A, W_L) accumulate
    their gradients over ``accumulation_steps`` batches and step once (App. C's W_L trick,
    which saves dense optimizer steps over the L × d table). Learning rates warm up linearly
    over the first ``warmup`` fraction of steps and then decay linearly to 0.

    ``evaluate(net) -> float`` (optional) is called after each epoch; the best state is
    restored at the end (model selection). ``embedding_optimizer="sparse_adam"``: the encoder's
    ``nn.EmbeddingBag`` tables take sparse gradients and a lazy ``torch.optim.SparseAdam`` step
    (``lr_encoder``, no weight decay) instead of AdamW.
    """
    N = X.shape[0]
    n_batches = max(1, -(-N // batch_size))
    total = max(1, n_epochs * n_batches)
    bags = [m for m in net.encoder.modules() if isinstance(m, torch.nn.EmbeddingBag)]
    lazy = embedding_optimizer == "sparse_adam" and bags
    for m in bags:  # sparse gradients: lazy Adam moves only the rows of features present in the batch
        m.sparse = bool(lazy) and not isinstance(m, RowSparseEmbeddingBag)
    # AdamW over a row-sparse bag: its sparse gradient is scattered into a persistent dense buffer whose
    # touched rows are cleared after the step (the exact dense update without a full-table fill per step)
    dense_grads = [] if lazy else [(m.weight, torch.zeros_like(m.weight)) for m in bags
                                   if isinstance(m, RowSparseEmbeddingBag) and m.weight.requires_grad]
    groups = _param_groups(net, lr, lr_encoder, weight_decay, lr_adjacency, lr_pretrained,
                           exclude=[m.weight for m in bags] if lazy else ())
    enc_groups = [g for g in groups if g["part"] == "encoder"]
    idx_groups = [g for g in groups if g["part"] == "index"]
    opts = [o for o in (_adamw(enc_groups) if enc_groups else None, _adamw(idx_groups) if idx_groups else None) if o]
    if lazy:
        opts.insert(0, torch.optim.SparseAdam([m.weight for m in bags], lr=lr_encoder))
    n_warm = int(warmup * total)

    def factor(step):
        if step < n_warm:
            return (step + 1) / max(1, n_warm)
        return max(0.0, (total - step) / max(1, total - n_warm))

    scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in opts]
    history, best, best_state = [], -np.inf, None
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_amp else torch.autocast("cpu", enabled=False)
    step = 0
    for epoch in range(n_epochs):
        net.train()
        net.update_parents()
        perm = rng.permutation(N)
        bar = tqdm(range(n_batches), desc=f"{desc} epoch {epoch + 1}/{n_epochs}", disable=not verbose, leave=False)
        tot = tot_c = tot_s = 0.0
        for b in bar:
            rows = perm[b * batch_size : (b + 1) * batch_size]
            xb = make_batch(X[rows], device)
            keys, gold, parents = gold_tensors(Y[rows], net.parent, net.n_clusters, device)
            with amp:
                out = net(xb, gold_parents=parents, gold_labels=gold)
            loss, lc, ls = elias_loss(out, keys, net.n_labels, loss_lambda)
            loss.backward()
            touched = _densify_row_grads(dense_grads)
            for o in opts[: int(bool(enc_groups)) + int(bool(lazy))]:  # encoder optimizers step every batch
                o.step()
                o.zero_grad(set_to_none=True)
            for buf, rows in touched:
                buf.index_fill_(0, rows, 0.0)
            if idx_groups and ((step + 1) % accumulation_steps == 0 or b == n_batches - 1):
                opts[-1].step()
                opts[-1].zero_grad(set_to_none=True)
            for s in scheds:
                s.step()
            step += 1
            tot += float(loss.detach())
            tot_c += float(lc)
            tot_s += float(ls)
            if verbose and b % 10 == 0:
                bar.set_postfix(loss=f"{tot / (b + 1):.4f}")
        rec = {"epoch": epoch + 1, "loss": tot / n_batches, "loss_c": tot_c / n_batches, "loss_s": tot_s / n_batches}
        if evaluate is not None:
            rec["val_ndcg@5"] = score = evaluate(net)
            if score > best:
                best, best_state = score, copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        history.append(rec)
        if verbose:
            logger.info("%s epoch %d: %s", desc, epoch + 1, {k: round(v, 5) for k, v in rec.items() if k != "epoch"})
    for m in bags:
        m.sparse = False
    if best_state is not None:
        net.load_state_dict(best_state)
        net.update_parents()
    return history


@torch.no_grad()
def predict_topk_scores(net, X, *, make_batch, k, batch_size, device, use_amp=False, embeddings=False):
    """Final scores ``p_l = σ(w_lᵀφ + b_l)·ŷ_l`` (Eq. 7's p) of each row's top-k labels.

    Returns
    -------
    labels : ndarray (n, k) int64, -1 for padding
    scores : ndarray (n, k) float32, descending, -inf for padding
    emb : ndarray (n, d) float32 when ``embeddings`` is True
    """
    net.eval()
    L = net.n_labels
    if net.multi_edge and (L + 1) * 64 <= net.dense_max_threshold:
        # keep Eq. 6's N × (L+1) max-over-paths buffer within the dense threshold: the sort-based
        # fallback is slower for a batch (with the gather rule of label_logits, at L = 10⁵, K = 1000: 6.1 → 3.8 ms per query)
        batch_size = max(64, min(batch_size, net.dense_max_threshold // (L + 1)))
    labs, scs, embs = [], [], []
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_amp else torch.autocast("cpu", enabled=False)
    for start in range(0, X.shape[0], batch_size):
        xb = make_batch(X[start : start + batch_size], device)
        with amp:
            out = net(xb)
        log_p = torch.nn.functional.logsigmoid(out["logits"].float()) + out["log_shortlist"]
        kk = min(k, log_p.shape[1])
        top, pos = torch.topk(log_p, kk, dim=1)
        lab = torch.gather(out["labels"], 1, pos)
        pad = torch.isneginf(top) | (lab >= L)
        labs.append(lab.masked_fill(pad, -1).cpu().numpy())
        scs.append(top.exp().masked_fill(pad, float("-inf")).cpu().numpy().astype(np.float32))
        if embeddings:
            embs.append(out["embedding"].float().cpu().numpy())
    labels = np.vstack(labs) if labs else np.zeros((0, k), np.int64)
    scores = np.vstack(scs) if scs else np.zeros((0, k), np.float32)
    if labels.shape[1] < k:
        pad = k - labels.shape[1]
        labels = np.hstack([labels, np.full((labels.shape[0], pad), -1)])
        scores = np.hstack([scores, np.full((scores.shape[0], pad), -np.inf, np.float32)])
    if embeddings:
        return labels, scores, np.vstack(embs)
    return labels, scores


@torch.no_grad()
def cluster_matching_matrix(net, X, *, make_batch, batch_size, device):
    """Eq. 9: M (n × C) holding the top-b cluster scores ŝ_c of each row, CSR float32."""
    net.eval()
    rows, cols, vals = [], [], []
    for start in range(0, X.shape[0], batch_size):
        idx, val = net.cluster_topb(make_batch(X[start : start + batch_size], device))
        idx, val = idx.cpu().numpy(), val.cpu().numpy()
        rows.append(np.repeat(np.arange(start, start + idx.shape[0]), idx.shape[1]))
        cols.append(idx.ravel())
        vals.append(val.ravel())
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(X.shape[0], net.n_clusters), dtype=np.float32)
