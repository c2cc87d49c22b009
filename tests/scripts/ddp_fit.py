"""A user script for ``torchrun``: every rank fits the same ELIASClassifier on the same data.

``python -m torch.distributed.run --nproc_per_node=2 ddp_fit.py OUT_DIR [fail]`` writes each rank's parameters
and top-10 test predictions to ``OUT_DIR/rank{r}.npz``; with ``fail``, rank 1 raises in the middle of training.
"""

import sys

import numpy as np
import torch

from skelias import ELIASClassifier
from skelias.datasets import load_cooking_stackexchange

PARAMS = dict(embed_dim=16, n_epochs_stage1=2, n_epochs_stage2=1, batch_size=64, shortlist_size=100,
              max_leaf_size=40, dropout=0.0, validation_size=100, random_state=0)


def data():
    texts, labels = load_cooking_stackexchange("train")
    return texts[:800], labels[:800], texts[800:1000]


def main(out_dir, fail=False):
    texts, labels, test = data()
    if fail:
        from skelias import _training

        step = _training.StageTrainer.train_step

        def failing_step(self, *args, **kwargs):
            if self.parallel is not None and self.parallel.rank == 1 and self.step == 3:
                raise RuntimeError("rank 1 failed on purpose")
            return step(self, *args, **kwargs)

        _training.StageTrainer.train_step = failing_step
    model = ELIASClassifier(**PARAMS, distributed_timeout=60).fit(texts, labels)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    idx, scores = model._raw_topk(test, 10)
    params = {f"param:{k}": v.detach().cpu().numpy() for k, v in model.network_.state_dict().items()}
    np.savez(f"{out_dir}/rank{rank}.npz", idx=idx, scores=scores, world_size=model.world_size_,
             bytes_per_step=model.communication_["bytes_per_step"] if model.communication_ else 0,
             dense_bytes_per_step=model.communication_["dense_bytes_per_step"] if model.communication_ else 0,
             **params)


if __name__ == "__main__":
    main(sys.argv[1], fail=len(sys.argv) > 2 and sys.argv[2] == "fail")
