"""The training units (skelias._training): one step, one epoch, model selection, the stage configuration."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from skelias._network import ELIASNetwork
from skelias._training import BestEpoch, StageTrainer, TrainingConfig
from skelias.encoders import SparseBagEncoder


def _network(tree_index, dense_bag=False, n_features=60, L=24):
    """A small TF-IDF ELIAS network; ``dense_bag`` swaps its row-sparse bag for a plain ``nn.EmbeddingBag``."""
    _, _, ind, mask = tree_index(0, L)
    torch.manual_seed(0)
    net = ELIASNetwork(SparseBagEncoder(n_features, dim=8, dropout=0.0), L, ind, mask, alpha=4.0, beam_size=3,
                       shortlist_size=L, seed=0)
    if dense_bag:
        plain = nn.EmbeddingBag(n_features, 8, mode="sum")
        plain.load_state_dict(net.encoder.bag.state_dict())
        net.encoder.bag = plain
    return net


def _data(n=50, n_features=60, L=24, seed=0):
    rs = np.random.RandomState(seed)
    X = sp.random(n, n_features - 10, density=0.08, format="csr", dtype=np.float32, random_state=rs)
    X = sp.hstack([X, sp.csr_matrix((n, 10), dtype=np.float32)], format="csr")  # 10 features never present
    Y = sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rs.randint(0, L, n))), shape=(n, L))
    return X, Y


def test_row_sparse_step_is_the_exact_dense_adamw_step(tree_index):
    """train_step over a row-sparse bag (sparse gradient → dense buffer → fused AdamW → clear) = over nn.EmbeddingBag.

    Rows of features never present still move (weight decay and momentum), as with a dense gradient.
    """
    X, Y = _data()
    cfg = TrainingConfig(n_epochs=1, batch_size=12, lr=0.05, lr_encoder=0.05, weight_decay=0.5, warmup=0.0)
    trainers = [StageTrainer(_network(tree_index, dense_bag=d), cfg, np.random.RandomState(0)) for d in (False, True)]
    rng = np.random.RandomState(0)
    for t in trainers:
        t.initialize(6)
    for _ in range(6):
        rows = rng.choice(50, 12, replace=False)
        losses = [t.train_step(X[rows], Y[rows]) for t in trainers]
        assert losses[0] == pytest.approx(losses[1], rel=1e-5)
        assert not trainers[0].row_sparse.pairs[0][1].any()  # the buffer is clean after every step
    w_sparse, w_dense = (t.net.encoder.bag.weight.detach().numpy() for t in trainers)
    np.testing.assert_allclose(w_sparse, w_dense, atol=1e-5)
    never = np.flatnonzero(np.diff(X.tocsc().indptr) == 0)
    assert never.size and not np.allclose(w_sparse[never], _network(tree_index).encoder.bag.weight.detach()[never])


def test_fit_restores_the_best_scoring_epoch(tree_index):
    """With a (scripted) validation score per epoch, fit ends with exactly the parameters of the best epoch."""
    X, Y = _data(n=80)
    scores = iter([0.2, 0.7, 0.4])
    snapshots = []

    def evaluate(net):
        snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return next(scores)

    cfg = TrainingConfig(n_epochs=3, batch_size=16, lr=0.05, lr_encoder=0.05, weight_decay=0.01)
    net = _network(tree_index)
    history = StageTrainer(net, cfg, np.random.RandomState(0), evaluate).fit(X, Y)
    assert [h["val_ndcg@5"] for h in history] == [0.2, 0.7, 0.4]
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, snapshots[1][k])
    assert not torch.equal(net.label_weight.detach(), snapshots[2]["label_weight"])


def test_best_epoch_without_scores_keeps_the_network():
    net = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    BestEpoch().restore(net)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_run_epoch_is_an_overridable_unit(tree_index):
    """A subclass hooks the epoch (as checkpointing will): every epoch goes through run_epoch, in order."""
    X, Y = _data()
    seen = []

    class Recording(StageTrainer):
        def run_epoch(self, X, Y, epoch):
            seen.append(epoch)
            return super().run_epoch(X, Y, epoch)

    cfg = TrainingConfig(n_epochs=3, batch_size=25, lr=0.01, lr_encoder=0.01, weight_decay=0.0)
    history = Recording(_network(tree_index), cfg, np.random.RandomState(0)).fit(X, Y)
    assert seen == [0, 1, 2] and [h["epoch"] for h in history] == [1, 2, 3]
    assert all(np.isfinite(h["loss"]) for h in history)


def test_stage2_config_scales_the_rates():
    cfg = TrainingConfig(n_epochs=10, batch_size=8, lr=0.01, lr_encoder=0.02, weight_decay=0.1, lr_pretrained=1e-4)
    s2 = cfg.scaled(0.1, n_epochs=3, lr_adjacency=0.01)
    assert (s2.lr, s2.lr_encoder, s2.lr_pretrained) == pytest.approx((0.001, 0.002, 1e-5))
    assert s2.n_epochs == 3 and s2.lr_adjacency == 0.01 and s2.weight_decay == 0.1
    assert cfg.scaled(0.5).lr_pretrained == pytest.approx(5e-5)
    assert TrainingConfig(n_epochs=1, batch_size=1, lr=1.0, lr_encoder=1.0, weight_decay=0).scaled(2).lr_pretrained is None
