"""Training and prediction loops for :class:`~skelias._network.ELIASNetwork` (paper §3.4, App. C).

One stage of training is a :class:`StageTrainer` configured by a :class:`TrainingConfig`. Its units
are named and overridable, from the outside in: :meth:`StageTrainer.fit` (the epochs, then the best
epoch restored) → :meth:`StageTrainer.run_epoch` → :meth:`StageTrainer.train_step` (one batch:
forward, loss, backward, optimizer steps) → :meth:`StageTrainer.get_loss`. Model selection on a
validation split is a :class:`BestEpoch` fed by a :func:`validation_ndcg` scorer.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from ._logging import logger
from ._network import elias_loss, gold_tensors
from .encoders import RowSparseEmbeddingBag
from .metrics import _ndcg

__all__ = ["BestEpoch", "StageTrainer", "TrainingConfig", "TrainingDivergedError", "cluster_matching_matrix",
           "predict_topk_scores", "validation_ndcg"]


class TrainingDivergedError(ValueError):
    """Training produced a non-finite loss or parameter: the model would predict NaN scores."""


@dataclasses.dataclass
class TrainingConfig:
    """How one training stage runs.

    Parameters
    ----------
    n_epochs : int
    batch_size : int
    lr : float
        Learning rate of the index and the label classifiers (W_C, A, W_L).
    lr_encoder : float
        Learning rate of the encoder φ.
    weight_decay : float
        AdamW's decoupled weight decay on weight matrices (not on biases, norms or A's values).
    warmup : float, default=0.1
        Fraction of the stage's steps with a linear warm-up; the rates then decay linearly to 0.
    loss_lambda : float, default=0.05
        λ of Eq. 8.
    accumulation_steps : int, default=1
        W_C, A and W_L step once every this many batches (App. C); the encoder steps every batch.
    lr_adjacency : float or None, default=None
        Learning rate of A's values; ``None``: ``lr``.
    lr_pretrained : float or None, default=None
        Learning rate of a fine-tuned pretrained transformer inside the encoder; ``None``: ``lr_encoder``.
    embedding_optimizer : {"adamw", "sparse_adam"}, default="adamw"
        Optimizer of the encoder's embedding-bag tables.
    device : torch.device, default=cpu
    use_amp : bool, default=False
        bf16 autocast (CUDA only).
    verbose : int, default=0
    desc : str, default="training"
        Name of the stage in progress bars and logs.
    """

    n_epochs: int
    batch_size: int
    lr: float
    lr_encoder: float
    weight_decay: float
    warmup: float = 0.1
    loss_lambda: float = 0.05
    accumulation_steps: int = 1
    lr_adjacency: float | None = None
    lr_pretrained: float | None = None
    embedding_optimizer: str = "adamw"
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    use_amp: bool = False
    verbose: int = 0
    desc: str = "training"

    def scaled(self, factor, **changes):
        """A copy with ``lr``, ``lr_encoder`` and ``lr_pretrained`` multiplied by ``factor``, then ``changes``."""
        lr_pretrained = None if self.lr_pretrained is None else self.lr_pretrained * factor
        return dataclasses.replace(self, lr=self.lr * factor, lr_encoder=self.lr_encoder * factor,
                                   lr_pretrained=lr_pretrained, **changes)

    def autocast(self):
        """The autocast context of a forward pass: bf16 on CUDA with ``use_amp``, disabled otherwise."""
        return _autocast(self.use_amp)


def _autocast(use_amp):
    if use_amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


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


class RowSparseGradients:
    """Dense AdamW over row-sparse embedding-bag gradients without a full-table zero fill per step.

    Each :class:`~skelias.encoders.RowSparseEmbeddingBag` weight gets a persistent zero buffer.
    :meth:`densify` scatters the step's sparse gradient into it and makes it the weight's ``.grad``
    (the exact dense gradient); :meth:`clear` zeroes the touched rows after the optimizer step.

    Parameters
    ----------
    weights : list of Parameter
    """

    def __init__(self, weights):
        self.pairs = [(w, torch.zeros_like(w)) for w in weights]
        self._touched = []

    def densify(self):
        """Replace each sparse ``.grad`` by its dense buffer holding the same values."""
        self._touched = []
        for weight, buf in self.pairs:
            g = weight.grad
            if g is None or not g.is_sparse:
                continue
            # autograd hands the gradient over without its coalesced flag; index_add_ sums any duplicate
            # rows into the (zero) buffer rows, so no sort is needed
            rows = g._indices()[0]
            buf.index_add_(0, rows, g._values().to(buf.dtype))
            weight.grad = buf
            self._touched.append((buf, rows))

    def clear(self):
        """Zero the buffer rows that :meth:`densify` filled."""
        for buf, rows in self._touched:
            buf.index_fill_(0, rows, 0.0)
        self._touched = []


class BestEpoch:
    """Model selection: keep a CPU copy of the parameters of the best-scoring epoch."""

    def __init__(self):
        self.score, self.state, self.epoch = -np.inf, None, None

    def update(self, net, score, epoch=None):
        """Record ``score``; copy ``net``'s parameters when it beats every earlier one."""
        if score > self.score:
            self.score, self.epoch = score, epoch
            self.state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})

    def restore(self, net):
        """Load the best epoch's parameters into ``net`` (nothing when no epoch was scored)."""
        if self.state is not None:
            net.load_state_dict(self.state)
            net.update_parents()


def validation_ndcg(X_val, Y_val, *, batch_size, device, use_amp=False):
    """A scorer ``evaluate(net) -> nDCG@5`` of ``net``'s top-5 predictions on a validation split."""

    def evaluate(net):
        labels, _ = predict_topk_scores(net, X_val, make_batch=net.encoder.make_batch, k=5, batch_size=batch_size,
                                        device=device, use_amp=use_amp)
        return _ndcg(Y_val, labels, 5)

    return evaluate


class StageTrainer:
    """Trains an :class:`~skelias._network.ELIASNetwork` for one stage (paper §3.4, App. C).

    The encoder steps every batch; the index and label classifiers (W_C, A, W_L) accumulate
    their gradients over ``accumulation_steps`` batches and step once (App. C's W_L trick,
    which saves dense optimizer steps over the L × d table). Learning rates warm up linearly
    and then decay linearly to 0 over the stage. With ``embedding_optimizer="sparse_adam"``
    the encoder's embedding-bag tables take sparse gradients and a lazy ``torch.optim.SparseAdam``
    step (``lr_encoder``, no weight decay); with ``"adamw"`` a row-sparse bag's gradient goes
    through :class:`RowSparseGradients` into the same dense AdamW update.

    Parameters
    ----------
    net : ELIASNetwork
    config : TrainingConfig
    rng : numpy.random.RandomState
        Draws each epoch's batch order.
    evaluate : callable or None, default=None
        ``evaluate(net) -> float`` after every epoch (e.g. :func:`validation_ndcg`); the
        best-scoring epoch's parameters are restored at the end of :meth:`fit`.
    parallel : skelias._distributed.DataParallel or None, default=None
        Data-parallel training: this rank trains on its share of every batch and the gradients are
        summed across the ranks before each optimizer step (every rank takes the same step).
    """

    def __init__(self, net, config, rng, evaluate=None, parallel=None):
        self.net, self.config, self.rng, self.evaluate = net, config, rng, evaluate
        self.parallel = parallel
        self.step = 0
        #: ``on_epoch_end(trainer, epoch, history, best)`` after every completed epoch (e.g. a checkpoint)
        self.on_epoch_end = None
        self._bags = [m for m in net.encoder.modules() if isinstance(m, torch.nn.EmbeddingBag)]
        self._lazy = config.embedding_optimizer == "sparse_adam" and bool(self._bags)

    # ------------------------------------------------------------------ set-up
    def initialize(self, n_steps):
        """Create the optimizers and the warm-up/decay schedule for a stage of ``n_steps`` steps."""
        cfg, net = self.config, self.net
        for m in self._bags:  # sparse gradients: lazy Adam moves only the rows of features present in the batch
            m.sparse = self._lazy and not isinstance(m, RowSparseEmbeddingBag)
        self.row_sparse = RowSparseGradients([] if self._lazy else [
            m.weight for m in self._bags if isinstance(m, RowSparseEmbeddingBag) and m.weight.requires_grad])
        groups = _param_groups(net, cfg.lr, cfg.lr_encoder, cfg.weight_decay, cfg.lr_adjacency, cfg.lr_pretrained,
                               exclude=[m.weight for m in self._bags] if self._lazy else ())
        enc_groups = [g for g in groups if g["part"] == "encoder"]
        idx_groups = [g for g in groups if g["part"] == "index"]
        self.encoder_optimizers = [_adamw(enc_groups)] if enc_groups else []
        if self._lazy:
            self.encoder_optimizers.insert(0, torch.optim.SparseAdam([m.weight for m in self._bags], lr=cfg.lr_encoder))
        self.index_optimizer = _adamw(idx_groups) if idx_groups else None
        n_warm = int(cfg.warmup * n_steps)

        def factor(step):
            if step < n_warm:
                return (step + 1) / max(1, n_warm)
            return max(0.0, (n_steps - step) / max(1, n_steps - n_warm))

        optimizers = self.encoder_optimizers + ([self.index_optimizer] if self.index_optimizer else [])
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in optimizers]

    def state_dict(self):
        """The optimizers', schedulers' and step counter's state (the network's is its own)."""
        return {"encoder_optimizers": [o.state_dict() for o in self.encoder_optimizers],
                "index_optimizer": None if self.index_optimizer is None else self.index_optimizer.state_dict(),
                "schedulers": [s.state_dict() for s in self.schedulers], "step": self.step}

    def load_state_dict(self, state):
        """Restore :meth:`state_dict` (after :meth:`initialize`)."""
        for opt, s in zip(self.encoder_optimizers, state["encoder_optimizers"]):
            opt.load_state_dict(s)
        if self.index_optimizer is not None:
            self.index_optimizer.load_state_dict(state["index_optimizer"])
        for sched, s in zip(self.schedulers, state["schedulers"]):
            sched.load_state_dict(s)
        self.step = state["step"]

    # ------------------------------------------------------------------ the units
    def fit(self, X, Y, resume=None):
        """Train for ``config.n_epochs`` epochs on (X, Y), then restore the best epoch.

        Parameters
        ----------
        X : model input (rows selectable as ``X[rows]``), n rows
        Y : csr_matrix (n, L)
        resume : dict, optional
            Continue a stage from a checkpoint: ``epoch`` (epochs completed), ``trainer``
            (:meth:`state_dict`), ``history`` and the best epoch (``best_score``, ``best_epoch``,
            ``best_state``). The network's parameters and the random generators are the caller's to restore.

        Returns
        -------
        history : list of dict
            One record per epoch: ``epoch``, ``loss``, ``loss_c``, ``loss_s`` and, with
            ``evaluate``, ``val_ndcg@5``.
        """
        cfg = self.config
        n_batches = max(1, -(-X.shape[0] // cfg.batch_size))
        self.initialize(max(1, cfg.n_epochs * n_batches))
        best, history, start = BestEpoch(), [], 0
        if resume is not None:
            self.load_state_dict(resume["trainer"])
            history, start = list(resume["history"]), resume["epoch"]
            best.score, best.epoch, best.state = resume["best_score"], resume["best_epoch"], resume["best_state"]
        try:
            for epoch in range(start, cfg.n_epochs):
                t0 = time.perf_counter()
                try:
                    rec = self.run_epoch(X, Y, epoch)
                    self.check_finite(epoch)
                except TrainingDivergedError as exc:
                    if best.state is None:
                        raise
                    warnings.warn(f"{exc} Restored epoch {best.epoch + 1} of {cfg.desc}, the best finite one "
                                  f"(validation nDCG@5 {best.score:.4f}).", RuntimeWarning, stacklevel=2)
                    break
                if self.evaluate is not None:
                    rec["val_ndcg@5"] = self.evaluate(self.net)
                    best.update(self.net, rec["val_ndcg@5"], epoch)
                history.append(rec)
                if self.on_epoch_end is not None:
                    self.on_epoch_end(self, epoch, history, best)
                if cfg.verbose:
                    val = f", validation nDCG@5 {rec['val_ndcg@5']:.4f}" if "val_ndcg@5" in rec else ""
                    logger.info("%s epoch %d/%d: loss %.4f (L_c %.4f, L_s %.4f)%s, %.1f s", cfg.desc, epoch + 1,
                                cfg.n_epochs, rec["loss"], rec["loss_c"], rec["loss_s"], val, time.perf_counter() - t0)
        finally:
            for m in self._bags:
                m.sparse = False
        best.restore(self.net)
        return history

    def diverged(self, epoch, what):
        """The error for a non-finite ``what`` in ``epoch`` (0-based), naming the likely cause."""
        cfg = self.config
        return TrainingDivergedError(
            f"Training diverged in {cfg.desc}, epoch {epoch + 1}: {what} is not finite. The learning rates are "
            f"likely too high (lr={cfg.lr:g}, lr_encoder={cfg.lr_encoder:g}); lower them.")

    def check_finite(self, epoch):
        """Raise :class:`TrainingDivergedError` when a parameter of the network holds NaN or ±inf."""
        for name, p in self.net.named_parameters():
            if not bool(torch.isfinite(p.detach()).all()):
                raise self.diverged(epoch, f"parameter {name!r}")

    def run_epoch(self, X, Y, epoch):
        """One pass over (X, Y) in a random order; returns the epoch's mean losses."""
        cfg, net = self.config, self.net
        n_batches = max(1, -(-X.shape[0] // cfg.batch_size))
        net.train()
        net.update_parents()
        perm = self.rng.permutation(X.shape[0])
        bar = tqdm(range(n_batches), desc=f"{cfg.desc} epoch {epoch + 1}/{cfg.n_epochs}", disable=not cfg.verbose,
                   leave=False)
        totals = np.zeros(3)
        for b in bar:
            rows = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            if self.parallel is not None:  # this rank's share of the global batch
                n_global, rows = rows.size, self.parallel.shard(rows)
                losses = self.train_step(X[rows], Y[rows], last=b == n_batches - 1, weight=rows.size / n_global)
            else:
                losses = self.train_step(X[rows], Y[rows], last=b == n_batches - 1)
            if not math.isfinite(losses[0]):
                raise self.diverged(epoch, f"the loss of step {b + 1}")
            totals += losses
            if cfg.verbose and b % 10 == 0:
                bar.set_postfix(loss=f"{totals[0] / (b + 1):.4f}")
        loss, loss_c, loss_s = (totals / n_batches).tolist()
        return {"epoch": epoch + 1, "loss": loss, "loss_c": loss_c, "loss_s": loss_s}

    def train_step(self, X_rows, Y_rows, last=False, weight=1.0):
        """One batch: forward (teacher-forced, Eq. 3–4), loss, backward, optimizer and scheduler steps.

        Parameters
        ----------
        X_rows : model input of the batch's rows
        Y_rows : csr_matrix (n, L)
        last : bool, default=False
            Last batch of the epoch: the index optimizer steps even inside an accumulation window.
        weight : float, default=1.0
            Data-parallel training: this rank's share of the global batch (its gradients are summed
            across the ranks with this weight).

        Returns
        -------
        (loss, loss_c, loss_s) : tuple of float
            Of the global batch under data-parallel training.
        """
        cfg, net = self.config, self.net
        index_params = [p for g in (self.index_optimizer.param_groups if self.index_optimizer else ())
                        for p in g["params"]]
        stashed = self.parallel.stash(index_params) if self.parallel is not None else None
        width = None
        if self.parallel is not None:  # L_s is normalised by the global batch's gold width P
            width = self.parallel.all_max(int(np.diff(Y_rows.indptr).max(initial=0)))
        if Y_rows.shape[0]:
            batch = net.encoder.make_batch(X_rows, cfg.device)
            keys, gold, parents = gold_tensors(Y_rows, net.parent, net.n_clusters, cfg.device, width=width)
            with cfg.autocast():
                out = net(batch, gold_parents=parents, gold_labels=gold)
            loss, loss_c, loss_s = self.get_loss(out, keys)
            loss.backward()
            losses = [float(loss.detach()), float(loss_c), float(loss_s)]
            shortlisted = out["labels"]
        else:  # a rank without rows in a short last batch contributes zero gradients
            losses = [0.0, 0.0, 0.0]
            shortlisted = torch.zeros(0, dtype=torch.int64, device=cfg.device)
        if self.parallel is not None:  # W_L's gradient lives on the shortlisted labels' rows only
            rows = torch.unique(shortlisted)
            self.parallel.reduce_gradients(net.named_parameters(), weight, row_sparse_names=("label_weight",),
                                           touched={"label_weight": rows[rows < net.n_labels]})
            self.parallel.unstash(index_params, stashed)
            losses = self.parallel.all_sum([v * weight for v in losses])
        self.row_sparse.densify()
        for opt in self.encoder_optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.row_sparse.clear()
        if self.index_optimizer is not None and ((self.step + 1) % cfg.accumulation_steps == 0 or last):
            self.index_optimizer.step()
            self.index_optimizer.zero_grad(set_to_none=True)
        for s in self.schedulers:
            s.step()
        self.step += 1
        return tuple(losses)

    def get_loss(self, out, gold_keys):
        """Eq. 7–8: ``(L_c + λ·L_s, L_c, L_s)`` of a forward pass (see :func:`~skelias._network.elias_loss`)."""
        return elias_loss(out, gold_keys, self.net.n_labels, self.config.loss_lambda)


#: entries of Eq. 6's (rows × (L+1)) buffer per prediction chunk
_PREDICT_BUFFER = 2**23


@torch.inference_mode()  # cheaper per operation than no_grad, felt in single queries; nothing it makes is kept
def predict_topk_scores(net, X, *, make_batch, k, batch_size, device, use_amp=False, embeddings=False,
                        beam_size=None, shortlist_size=None):
    """Final scores ``p_l = σ(w_lᵀφ + b_l)·ŷ_l`` (Eq. 7's p) of each row's top-k labels.

    ``beam_size`` and ``shortlist_size`` override the network's b and K for this call.

    Returns
    -------
    labels : ndarray (n, k) int64, -1 for padding
    scores : ndarray (n, k) float32, descending, -inf for padding
    emb : ndarray (n, d) float32 when ``embeddings`` is True
    """
    from ._base import pad_topk

    if net.training:
        net.eval()
    L = net.n_labels
    if net.multi_edge and (L + 1) * 64 <= net.dense_max_threshold:
        # keep Eq. 6's N × (L+1) max-over-paths buffer within the dense threshold (the sort-based
        # fallback is slower for a batch) and its per-chunk intermediates moderate (chunks of
        # _PREDICT_BUFFER entries predict faster than chunks of the whole threshold)
        batch_size = max(64, min(batch_size, min(net.dense_max_threshold, _PREDICT_BUFFER) // (L + 1)))
    labs, scs, embs = [], [], []
    for start in range(0, X.shape[0], batch_size):
        xb = make_batch(X if X.shape[0] <= batch_size else X[start : start + batch_size], device)
        with _autocast(use_amp):
            out = net(xb, beam_size=beam_size, shortlist_size=shortlist_size)
        log_p = torch.nn.functional.logsigmoid(out["logits"].float()) + out["log_shortlist"]
        top, pos = torch.topk(log_p, min(k, log_p.shape[1]), dim=1)
        if bool(torch.isnan(top).any()):
            raise ValueError("the network produced NaN scores: its parameters are not finite.")
        lab = torch.gather(out["labels"], 1, pos)
        pad = torch.isneginf(top) | (lab >= L)
        labs.append(lab.masked_fill(pad, -1).cpu().numpy())
        scs.append(top.exp().masked_fill(pad, float("-inf")).cpu().numpy().astype(np.float32))
        if embeddings:
            embs.append(out["embedding"].float().cpu().numpy())
    labels = np.vstack(labs) if labs else np.zeros((0, k), np.int64)
    scores = np.vstack(scs) if scs else np.zeros((0, k), np.float32)
    labels, scores = pad_topk(labels, scores, k)
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
