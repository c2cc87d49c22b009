"""Failures leave nothing half-done: atomic refits, divergence, caller's RNG, bad inputs, threads, memory."""

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import skelias
from skelias import ELIASClassifier, KNNLabelClassifier, ScoreCalibrator, SparseReranker, TopKEnsemble
from skelias._training import StageTrainer, TrainingDivergedError

TINY = dict(embed_dim=16, n_epochs_stage1=1, n_epochs_stage2=1, batch_size=128, shortlist_size=100, max_leaf_size=50,
            random_state=0)


def _interrupt_after(calls):
    """A side effect raising KeyboardInterrupt on its ``calls``-th call (as Ctrl-C inside training)."""
    state = {"n": 0}

    def hit(*args, **kwargs):
        state["n"] += 1
        if state["n"] >= calls:
            raise KeyboardInterrupt

    return hit


ESTIMATORS = {
    "elias": (lambda: ELIASClassifier(**TINY), "skelias._training.StageTrainer.train_step"),
    "knn": (lambda: KNNLabelClassifier(n_neighbors=5), "skelias.neighbors.KNNLabelClassifier._vectorize"),
    "ranker": (lambda: SparseReranker(KNNLabelClassifier(n_neighbors=5), n_candidates=10, random_state=0),
               "skelias.rerank.train_label_classifiers"),
    "calibrator": (lambda: ScoreCalibrator(SparseReranker(KNNLabelClassifier(n_neighbors=5), n_candidates=10),
                                           validation_size=100, min_samples_leaf=5, random_state=0),
                   "sklearn.tree.DecisionTreeClassifier.fit"),
    "ensemble": (lambda: TopKEnsemble(KNNLabelClassifier(n_neighbors=5), n_estimators=2, random_state=0),
                 "skelias.neighbors.KNNLabelClassifier._vectorize"),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_a_failed_or_interrupted_refit_leaves_the_fitted_model_as_it_was(name, cooking, monkeypatch):
    make, hook = ESTIMATORS[name]
    texts, labels = cooking
    model = make().fit(texts[:500], labels[:500])
    before = model.predict_topk(texts[600:650], 5)
    state = dict(vars(model))
    other = [[f"new-{i % 7}"] for i in range(400)]  # a refit on another label space
    with pytest.raises(ValueError, match="same number of rows"):
        model.fit(texts[:400], other[:300])
    with pytest.raises(ValueError):
        model.fit(texts[:400], [[] for _ in range(400)])  # no positive label at all
    with monkeypatch.context() as m:
        if name in ("knn", "ensemble"):  # the ensemble: after its first member is fitted
            real = KNNLabelClassifier._vectorize
            counter = _interrupt_after(2 if name == "ensemble" else 1)

            def vectorize(self, *args):
                counter()
                return real(self, *args)

            m.setattr(hook, vectorize)
        else:
            m.setattr(hook, _interrupt_after(1))
        with pytest.raises(KeyboardInterrupt):
            model.fit(texts[:400], other)
    assert vars(model).keys() == state.keys() and all(vars(model)[k] is v for k, v in state.items())
    after = model.predict_topk(texts[600:650], 5)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])


def test_divergence_is_an_error_or_a_kept_finite_epoch(cooking, monkeypatch):
    texts, labels = cooking
    with pytest.raises(TrainingDivergedError, match=r"stage 1, epoch \d.*lr=1e\+06.*lower them"):
        ELIASClassifier(**{**TINY, "n_epochs_stage1": 3, "lr": 1e6}).fit(texts[:400], labels[:400])
    real = StageTrainer.run_epoch

    def blow_up_in_epoch_2(self, X, Y, epoch):  # a NaN appears in W_L during the second epoch
        rec = real(self, X, Y, epoch)
        if epoch == 1:
            with torch.no_grad():
                self.net.label_weight[0, 0] = float("nan")
        return rec

    monkeypatch.setattr(StageTrainer, "run_epoch", blow_up_in_epoch_2)
    params = {**TINY, "n_epochs_stage1": 3, "n_epochs_stage2": 0}
    with pytest.raises(TrainingDivergedError, match="stage 1, epoch 2: parameter 'label_weight' is not finite"):
        ELIASClassifier(**params).fit(texts[:400], labels[:400])
    with pytest.warns(RuntimeWarning, match="Restored epoch 1 of stage 1, the best finite one"):
        clf = ELIASClassifier(**params, validation_size=100).fit(texts[:500], labels[:500])
    assert [h["epoch"] for h in clf.history_] == [1]
    assert all(bool(torch.isfinite(p.detach()).all()) for p in clf.network_.parameters())
    _, scores = clf.predict_topk(texts[600:650], 5)
    assert not np.isnan(scores).any()


def test_scorers_refuse_nan_scores(cooking):
    texts, labels = cooking

    class NaNModel(KNNLabelClassifier):
        def predict_topk(self, X, k=None):
            names, scores = super().predict_topk(X, k)
            return names, np.full_like(scores, np.nan)

    model = NaNModel(n_neighbors=5).fit(texts[:300], labels[:300])
    with pytest.raises(ValueError, match="NaN scores"):
        skelias.precision_at_k_scorer(1)(model, texts[300:320], labels[300:320])


def test_fit_leaves_the_callers_random_state_alone(cooking):
    texts, labels = cooking
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    ELIASClassifier(**TINY).fit(texts[:300], labels[:300])
    torch.testing.assert_close(torch.rand(3), expected)


def test_bad_inputs_get_clear_errors(cooking):
    texts, labels = cooking
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            ELIASClassifier(device="cuda").fit(texts[:20], labels[:20])
    for params in ({"bias": float("inf")}, {"bias": float("nan")}, {"tol": float("inf")}):
        with pytest.raises(ValueError, match=f"'{next(iter(params))}' parameter"):
            SparseReranker(KNNLabelClassifier(), **params).fit(texts[:50], labels[:50])


def test_targets_as_generators_series_like_arrays_and_huge_k(cooking):
    texts, labels = cooking
    ref = KNNLabelClassifier(n_neighbors=5).fit(texts[:300], labels[:300])
    from_gen = KNNLabelClassifier(n_neighbors=5).fit(texts[:300], (row for row in labels[:300]))
    series_like = np.empty(300, dtype=object)
    series_like[:] = [list(row) for row in labels[:300]]
    from_obj = KNNLabelClassifier(n_neighbors=5).fit(texts[:300], series_like)
    for other in (from_gen, from_obj):
        np.testing.assert_array_equal(other.classes_, ref.classes_)
        np.testing.assert_array_equal(other.predict_topk(texts[300:320], 3)[0], ref.predict_topk(texts[300:320], 3)[0])
    names, scores = ref.predict_topk(texts[300:302], 10**7)  # capped at the number of labels
    assert names.shape == scores.shape == (2, len(ref.classes_))


def test_two_threads_predicting_on_one_model_give_the_sequential_results(elias_base, cooking):
    texts, _ = cooking
    chunks = [texts[1200 + 50 * i : 1250 + 50 * i] for i in range(4)]
    expected = [elias_base.predict_topk(c, 10) for c in chunks]
    results = {}

    def work(i):
        for _ in range(3):
            results.setdefault(i, []).append(elias_base.predict_topk(chunks[i], 10))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, runs in results.items():
        for labels, scores in runs:
            np.testing.assert_array_equal(labels, expected[i][0])
            np.testing.assert_array_equal(scores, expected[i][1])


MEMORY_SCRIPT = textwrap.dedent("""
    import hashlib, pathlib, resource, sys
    import skelias
    from skelias import ELIASClassifier, KNNLabelClassifier
    from skelias.datasets import load_cooking_stackexchange

    texts, labels = load_cooking_stackexchange("train")
    path = pathlib.Path(sys.argv[1])
    skelias.save(KNNLabelClassifier(n_neighbors=3).fit(texts[:200], labels[:200]), path)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.iterdir()}
    used = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + 300 * 2**20, resource.RLIM_INFINITY))
    try:
        ELIASClassifier(embed_dim=100_000, n_epochs_stage1=1, n_epochs_stage2=0).fit(texts[:2000], labels[:2000])
    except MemoryError as exc:
        print("MemoryError:", exc)
    now = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.iterdir()}
    print("model file intact:", now == digest)
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and RLIMIT_AS")
def test_a_fit_out_of_memory_fails_clearly_and_keeps_the_model_file(tmp_path):
    script = tmp_path / "oom.py"
    script.write_text(MEMORY_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "model")], check=False, capture_output=True,
                         text=True, timeout=600)
    assert "MemoryError:" in out.stdout and "embed_dim" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "model file intact: True" in out.stdout


def test_sparse_matrix_targets_are_not_consumed(cooking):
    texts, labels = cooking
    Y = skelias.LabelIndexer().fit_transform(labels[:300])
    model = KNNLabelClassifier(n_neighbors=5).fit(texts[:300], Y)
    assert sp.issparse(Y) and Y.shape[0] == 300 and model.predict_topk(texts[:2], 3)[0].dtype.kind == "i"
