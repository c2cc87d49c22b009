"""Data-parallel training over ``torch.distributed`` (launched with ``torchrun`` or ``accelerate launch``).

Every rank is given the same data and computes the same model; each global batch of ``batch_size`` rows is
split across the ranks, and after every backward pass the gradients are summed across them, weighted by each
rank's share of the batch, so that every rank takes the same optimizer step. Row-sparse gradients (the TF-IDF
embedding table, the shortlisted rows of the label classifiers W_L) travel as their touched rows (indices and
values), not as dense tables. Decisions taken from data (the clustering, the stage-2 index, validation
scores) are made on rank 0 and broadcast.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ._logging import logger

__all__ = ["DataParallel", "join_process_group"]


def join_process_group(distributed, device, timeout):
    """The :class:`DataParallel` of the launcher's process group, or None for a single-process fit.

    Parameters
    ----------
    distributed : "auto" or False
        ``"auto"``: join the group that the launcher describes (``WORLD_SIZE`` > 1, with ``RANK``,
        ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), initialising it when the script has not; an
        already initialised group is used as it is. ``False``: train in this process only.
    device : torch.device
        The fit's device; CUDA ranks use ``cuda:LOCAL_RANK`` and NCCL, CPU ranks gloo.
    timeout : float
        Seconds a collective may wait for the other ranks before failing (a rank that died or hangs).

    Returns
    -------
    DataParallel or None
    """
    if distributed is False or not dist.is_available():
        return None
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout))
        logger.info("joined the %s process group: rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
    if dist.get_world_size() <= 1:
        return None
    return DataParallel(dist.get_rank(), dist.get_world_size(), device)


def resolve_device(device):
    """``device`` ("auto", "cpu", "cuda", "cuda:N" or a torch.device) as a torch.device; "auto": CUDA when available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}.") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but CUDA is not available to this torch ({torch.__version__}); "
                         "use device='cpu' or device='auto'.")
    return resolved


def rank_device(device):
    """``cuda:LOCAL_RANK`` for a CUDA fit launched with several processes per node; ``device`` otherwise."""
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


class DataParallel:
    """One rank's view of a data-parallel fit: its share of each batch and the gradient exchange.

    Parameters
    ----------
    rank, world_size : int
    device : torch.device
        Where the collectives' tensors live (CPU for gloo, the rank's GPU for NCCL).
    """

    def __init__(self, rank, world_size, device):
        self.rank, self.world_size, self.device = rank, world_size, device
        self.bytes_sent = 0  # gradient payload this rank contributed, summed over steps
        self.dense_bytes = 0  # what dense all-reduces of the same gradients would have sent
        self.steps = 0

    # ------------------------------------------------------------------ objects and batches
    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (pickled; for small objects and decisions)."""
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def shard(self, rows):
        """This rank's rows of a global batch (every ``world_size``-th row, starting at ``rank``)."""
        return rows[self.rank :: self.world_size]

    def all_sum(self, values):
        """Element-wise sum over the ranks of a list of floats."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def all_max(self, value):
        """The largest ``value`` (an int) over the ranks."""
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t)

    # ------------------------------------------------------------------ gradients
    def stash(self, params):
        """Move accumulated ``.grad`` aside (gradient accumulation: only a step's new part is exchanged)."""
        out = []
        for p in params:
            out.append(p.grad)
            p.grad = None
        return out

    def unstash(self, params, stashed):
        for p, g in zip(params, stashed, strict=True):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g

    def reduce_gradients(self, named_params, weight, row_sparse_names=(), touched=None):
        """Sum ``weight · grad`` over the ranks in place: the batch gradient when ``weight`` is this rank's
        share of the global batch (its rows / the batch's rows).

        Sparse gradients are all-gathered as (indices, values); the dense gradients named in
        ``row_sparse_names`` (e.g. W_L, whose untouched rows are zero) exchange only the union of the
        ranks' non-zero rows (``touched[name]``: those rows when the caller knows them, e.g. the shortlisted
        labels, instead of a scan of the gradient); every other gradient is flattened into one all-reduce.
        """
        touched = touched or {}
        dense = []
        for name, p in named_params:
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            self.dense_bytes += p.numel() * p.element_size()
            if p.grad.is_sparse:
                p.grad = self._gather_sparse(p.grad, weight)
            elif name in row_sparse_names:
                self._reduce_rows(p.grad, weight, touched.get(name))
            else:
                dense.append(p.grad)
        if dense:
            flat = torch.cat([g.reshape(-1) for g in dense]).mul_(weight)
            dist.all_reduce(flat)
            self.bytes_sent += flat.numel() * flat.element_size()
            offset = 0
            for g in dense:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        self.steps += 1

    def _sizes(self, n):
        sizes = [torch.zeros(1, dtype=torch.int64, device=self.device) for _ in range(self.world_size)]
        dist.all_gather(sizes, torch.tensor([n], dtype=torch.int64, device=self.device))
        return [int(s) for s in sizes]

    def _gather_padded(self, t, sizes):
        """All-gather tensors of different first dimensions (padded to the largest)."""
        pad = max(sizes)
        buf = torch.zeros((pad, *t.shape[1:]), dtype=t.dtype, device=t.device)
        buf[: t.shape[0]] = t
        parts = [torch.empty_like(buf) for _ in range(self.world_size)]
        dist.all_gather(parts, buf)
        self.bytes_sent += buf.numel() * buf.element_size()
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    def _gather_sparse(self, grad, weight):
        idx, val = grad._indices()[0], grad._values() * weight
        sizes = self._sizes(idx.numel())
        all_idx = self._gather_padded(idx, sizes)
        all_val = self._gather_padded(val, sizes)
        return torch.sparse_coo_tensor(all_idx[None], all_val, grad.shape, check_invariants=False)  # duplicates sum

    def _reduce_rows(self, grad, weight, rows=None):
        if rows is None:
            rows = torch.nonzero(grad.abs().sum(dim=1)).flatten()
        sizes = self._sizes(rows.numel())
        union = torch.unique(self._gather_padded(rows, sizes))
        sub = grad[union].mul_(weight)
        dist.all_reduce(sub)
        self.bytes_sent += sub.numel() * sub.element_size()
        grad.zero_()
        grad[union] = sub

    def stats(self):
        """Gradient bytes this rank sent per step, against dense all-reduces of the same gradients."""
        steps = max(1, self.steps)
        return {"world_size": self.world_size, "bytes_per_step": self.bytes_sent / steps,
                "dense_bytes_per_step": self.dense_bytes / steps}
