"""The two training stages of :class:`~skelias.ELIASClassifier` (paper §3.3), resumable from checkpoints.

Stage 1 trains with A fixed to the label clustering; stage 2 builds A's support from the cluster matching
matrix (Eq. 9–10) and trains everything, and with a validation split the better stage is kept. A
checkpoint directory makes both resumable epoch by epoch.
"""

from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch

from ._checkpoint import Checkpointer, fingerprint, rng_state, set_rng_state
from ._logging import logger
from ._training import StageTrainer, TrainingDivergedError, cluster_matching_matrix
from .index import stage2_adjacency

__all__ = ["TwoStageFitMixin"]


class TwoStageFitMixin:
    """``_train_stage1`` / ``_train_stage2`` and their checkpoint hooks, for an estimator with ELIAS's parameters."""

    def _open_checkpoint(self, X, Y):
        """The fit's :class:`~skelias._checkpoint.Checkpointer` and its last checkpoint (None, None without)."""
        if self.checkpoint_dir is None:
            return None, None
        params = {k: v for k, v in self.get_params(deep=False).items()
                  if k not in ("checkpoint_dir", "verbose", "memory", "device", "distributed_timeout")}
        parallel = getattr(self, "_parallel", None)
        # every rank resumes from the checkpoint; only rank 0 writes
        ckpt = Checkpointer(self.checkpoint_dir, fingerprint(params, X, Y),
                            read_only=parallel is not None and parallel.rank != 0)
        return ckpt, ckpt.load()

    def _epoch_checkpoint(self, ckpt, stage, rs):
        """``on_epoch_end`` hook writing the checkpoint of ``stage`` (None without a checkpoint directory)."""
        if ckpt is None:
            return None

        def save(trainer, epoch, history, best):
            ckpt.save({"stage": stage, "epoch": epoch + 1, "history": history, "trainer": trainer.state_dict(),
                       "net": {k: v.detach().cpu() for k, v in trainer.net.state_dict().items()},
                       "best_score": best.score, "best_epoch": best.epoch, "best_state": best.state,
                       "numpy_rng": rng_state(rs), "torch_rng": torch.get_rng_state(),
                       "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None})

        return save

    @staticmethod
    def _resume_from(saved, net, rs):
        """Load a checkpoint's network and random-generator states; return it for :meth:`StageTrainer.fit`."""
        net.load_state_dict(saved["net"])
        set_rng_state(rs, saved["numpy_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["cuda_rng"])
        return saved

    def _train_stage1(self, net, config, X, Y, rs, evaluate, ckpt, saved):
        """Stage 1 with A fixed to the clustering, continued from a checkpoint when there is one."""
        if saved is not None and saved["stage"] == 2:  # stage 1 had finished: its final model
            stage1 = ckpt.load("stage1.pt")
            net.load_state_dict(stage1["net"])
            self.history_ = stage1["history"]
            return
        trainer = StageTrainer(net, config, rs, evaluate, parallel=getattr(self, "_parallel", None))
        trainer.on_epoch_end = self._epoch_checkpoint(ckpt, 1, rs)
        resume = None if saved is None else self._resume_from(saved, net, rs)
        self.history_ = [dict(stage=1, **h) for h in trainer.fit(X, Y, resume=resume)]

    def _train_stage2(self, net, tree, X, Y, config, rs, seed, evaluate, device, ckpt=None, saved=None):
        """Stage 2: A's support from MᵀY (Eq. 9–10), everything trained; the better stage by validation."""
        stage1_best, stage1_net = -np.inf, None
        if evaluate is not None:  # model selection may keep the stage-1 model
            stage1_best = max(h["val_ndcg@5"] for h in self.history_)
            stage1_net = copy.deepcopy(net).cpu()
        resuming = saved is not None and saved["stage"] == 2
        if ckpt is not None and not resuming:
            ckpt.save({"net": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "history": self.history_},
                      name="stage1.pt")
        t0 = time.perf_counter()
        L, C = Y.shape[1], tree.n_clusters
        kappa = min(self.kappa if self.kappa is not None else 10 * -(-L // C), L)
        M = cluster_matching_matrix(net, X, make_batch=net.encoder.make_batch, batch_size=1024, device=device)
        a_ind, a_mask, a_values = stage2_adjacency(M, Y, kappa, tree.adjacency(), self.adjacency_init, self.beta)
        if getattr(self, "_parallel", None) is not None:  # rank 0's index on every rank
            a_ind, a_mask, a_values = self._parallel.broadcast((a_ind, a_mask, a_values))
        net.set_adjacency(a_ind, a_mask, seed=seed + 1, a_values=a_values)
        self.fit_time_["stage2_init"] = time.perf_counter() - t0
        if self.verbose:
            logger.info("stage-2 index: %d edges (κ = %d per cluster), %.1f s", int(a_mask[:-1].sum()), kappa,
                        self.fit_time_["stage2_init"])
        t0 = time.perf_counter()
        config2 = config.scaled(self.stage2_lr_factor, n_epochs=self.n_epochs_stage2, desc="stage 2",
                                lr_adjacency=self.lr_adjacency if self.lr_adjacency is not None else self.lr_)
        trainer = StageTrainer(net, config2, rs, evaluate, parallel=getattr(self, "_parallel", None))
        trainer.on_epoch_end = self._epoch_checkpoint(ckpt, 2, rs)
        resume = self._resume_from(saved, net, rs) if resuming else None
        try:
            self.history_ += [dict(stage=2, **h) for h in trainer.fit(X, Y, resume=resume)]
        except TrainingDivergedError as exc:
            if stage1_net is None:
                raise
            warnings.warn(f"{exc} Kept the stage-1 model (validation nDCG@5 {stage1_best:.4f}).", RuntimeWarning,
                          stacklevel=3)
            self.selected_stage_ = 1
            return stage1_net.to(device)
        self.fit_time_["stage2"] = time.perf_counter() - t0
        self.selected_stage_ = 2
        if stage1_net is not None and max(h["val_ndcg@5"] for h in self.history_ if h["stage"] == 2) < stage1_best:
            logger.info("stage 2 did not beat stage 1 on the validation split (nDCG@5 %.4f); keeping stage 1",
                        stage1_best)
            net, self.selected_stage_ = stage1_net.to(device), 1
        return net
