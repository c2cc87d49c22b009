import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skelias import ELIASClassifier, LabelIndexer, precision_at_k, precision_at_k_scorer
from skelias.datasets import load_cooking_stackexchange

TINY = dict(embed_dim=32, n_epochs_stage1=2, n_epochs_stage2=1, batch_size=128, shortlist_size=200,
            max_leaf_size=50, random_state=0)


@pytest.fixture(scope="module")
def cooking():
    texts, labels = load_cooking_stackexchange("train")
    return texts[:1200], labels[:1200]


@pytest.fixture(scope="module")
def fitted(cooking):
    texts, labels = cooking
    return ELIASClassifier(**TINY).fit(texts[:1000], labels[:1000])


def test_fit_predict_outputs_are_consistent(fitted, cooking):
    texts, _ = cooking
    q = texts[1000:1100]
    names, scores = fitted.predict_topk(q, k=5)
    assert names.shape == scores.shape == (100, 5)
    finite = np.where(np.isfinite(scores), scores, -1.0)
    assert np.all(np.diff(finite, axis=1) <= 1e-7) and np.all(finite <= 1.0)
    P = fitted.predict_proba(q)
    assert sp.isspmatrix_csr(P) and P.shape == (100, len(fitted.classes_))
    # predict_topk = top-k of predict_proba = predict
    idx = fitted.label_indexer_.transform([[n for n in row if n is not None] for row in names])
    assert (fitted.predict(q) != idx).nnz == 0
    top_from_proba = [set(P[i].indices[np.argsort(-P[i].data, kind="stable")[:5]]) for i in range(100)]
    assert [set(idx[i].indices) for i in range(100)] == top_from_proba
    emb = fitted.transform(q)
    assert emb.shape == (100, 32) and emb.dtype == np.float32
    assert {"clustering", "stage1", "stage2_init", "stage2", "total"} <= set(fitted.fit_time_)
    assert [h["stage"] for h in fitted.history_] == [1, 1, 2]
    assert fitted.weight_decay_ == 0.01  # "auto" without a pretrained model
    assert fitted.pretrained_scale_ is None


def test_every_label_stays_reachable_after_stage2(fitted):
    net = fitted.network_
    reachable = np.unique(net.a_indices[net.a_mask].numpy())
    np.testing.assert_array_equal(reachable, np.arange(len(fitted.classes_)))
    assert net.learn_adjacency and np.all(net.parent.numpy() < net.n_clusters)


def test_same_seed_same_predictions_and_joblib_roundtrip(fitted, cooking, tmp_path):
    texts, labels = cooking
    again = ELIASClassifier(**TINY).fit(texts[:1000], labels[:1000])
    a, sa = fitted.predict_topk(texts[1000:1050], 10)
    b, sb = again.predict_topk(texts[1000:1050], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    joblib.dump(fitted, tmp_path / "elias.joblib")
    loaded = joblib.load(tmp_path / "elias.joblib")
    c, sc = loaded.predict_topk(texts[1000:1050], 10)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(sa, sc)


def test_indicator_targets_feature_input_and_dense_encoder(cooking):
    texts, labels = cooking
    X = TfidfVectorizer(min_df=2).fit_transform(texts)
    Y = LabelIndexer().fit_transform(labels)
    clf = ELIASClassifier(**{**TINY, "n_epochs_stage2": 0}).fit(X[:1000], Y[:1000])
    idx, scores = clf.predict_topk(X[1000:], 5)
    assert idx.dtype.kind == "i" and precision_at_k(Y[1000:], (idx, scores), k=5) >= 0
    assert not clf.network_.learn_adjacency  # stage-1-only model
    with pytest.raises(ValueError, match="features, but ELIASClassifier is expecting"):
        clf.predict(X[:3, :10])
    with pytest.raises(TypeError, match="fitted on a feature matrix"):
        clf.predict(texts[:3])
    rs = np.random.RandomState(0)
    Xd = rs.randn(300, 8).astype(np.float32)
    Yd = np.hstack([Xd[:, :5] > 0.5, np.zeros((300, 1))]).astype(np.float32)
    Yd[Yd.sum(1) == 0, 5] = 1
    dense = ELIASClassifier(encoder="dense", **{**TINY, "max_leaf_size": 2}).fit(Xd, sp.csr_matrix(Yd))
    assert dense.predict(Xd).shape == (300, 6)


def test_sklearn_composition(cooking):
    texts, labels = cooking
    pipe = make_pipeline(TfidfVectorizer(sublinear_tf=True), ELIASClassifier(**TINY))
    pipe.fit(texts[:800], labels[:800])
    assert pipe.predict(texts[800:820]).shape[0] == 20
    est = ELIASClassifier(**TINY)
    c = clone(est).set_params(alpha=5.0)
    assert c.get_params()["alpha"] == 5.0 and est.alpha == 10.0
    grid = GridSearchCV(ELIASClassifier(**{**TINY, "n_epochs_stage2": 0}), {"beam_size": [2, 4]},
                        scoring=precision_at_k_scorer(1), cv=2).fit(texts[:600], labels[:600])
    assert grid.best_params_["beam_size"] in (2, 4) and 0 <= grid.best_score_ <= 1


@pytest.mark.parametrize(
    "X, y, kwargs, exc, match",
    [
        ([], [], {}, ValueError, "0 documents"),
        (["a b", "c d"], [["x"]], {}, ValueError, "same number of rows"),
        (["a b", 3], [["x"], ["y"]], {}, TypeError, r"X\[1\] is a int"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), [["x"], ["y"]], {"encoder": "dense"}, ValueError, "NaN"),
        (["a b", "b c"], [[], []], {}, ValueError, "no label at all"),
        (["a b", "b c"], [["x"], ["y"]], {"k": 0}, ValueError, "positive integer"),
        (["a b", "b c"], [["x"], ["y"]], {"alpha": -1}, ValueError, "alpha must be"),
        (["a b", "b c"], [["x"], ["y"]], {"encoder": "bert"}, ValueError, "encoder must be"),
        (["a b", "b c"], [["x"], ["y"]], {"device": "tpu:9"}, ValueError, "device must be"),
        (["a b", "b c"], [["x"], ["y"]], {"validation_size": 1.5}, ValueError, "validation_size must be"),
        (["a b", "b c"], [["x"], ["y"]], {"validation_size": "10%"}, ValueError, "validation_size must be"),
        (["a b", "b c"], [["x"], ["y"]], {"weight_decay": "high"}, ValueError, "weight_decay must be 'auto' or"),
        (["a b", "b c"], [["x"], ["y"]], {"weight_decay": -0.1}, ValueError, "weight_decay must be 'auto' or"),
        (["a b", "b c"], [["x"], ["y"]], {"pretrained_scale": "big"}, ValueError, "pretrained_scale must be a number"),
        (["a b", "b c"], [["x"], ["y"]], {"pretrained_scale": 0}, ValueError, "pretrained_scale must be a number"),
        (["a b", "b c"], [["x"], ["y"]], {"encoder": "dense"}, ValueError, "raw texts need encoder='tfidf'"),
    ],
)
def test_bad_input_is_rejected_before_training(X, y, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ELIASClassifier(**{**TINY, **kwargs}).fit(X, y)


def test_validation_split_selects_the_best_epoch(cooking):
    texts, labels = cooking
    clf = ELIASClassifier(**{**TINY, "validation_size": 0.2}).fit(texts, labels)
    scores = [h["val_ndcg@5"] for h in clf.history_]
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        ELIASClassifier().predict(["a"])


def test_sklearn_estimator_checks():
    from sklearn.utils.estimator_checks import check_estimator
    from test_neighbors import MULTILABEL_EXPECTED_FAILURES

    est = ELIASClassifier(encoder="dense", embed_dim=8, n_epochs_stage1=1, n_epochs_stage2=1, batch_size=32,
                          shortlist_size=10, max_leaf_size=2, random_state=0)
    results = check_estimator(est, expected_failed_checks=MULTILABEL_EXPECTED_FAILURES, on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:300] for r in results if r["status"] == "failed"}
    assert not failed, failed


def test_index_analysis_and_pruning(fitted, cooking):
    texts, _ = cooking
    A = fitted.adjacency_matrix()
    net = fitted.network_
    assert A.shape == (net.n_clusters, net.n_labels)
    assert A.data.min() > 0 and A.data.max() <= 1.0
    assert np.all(np.diff(A.tocsc().indptr) >= 1)  # every label hangs under at least one cluster
    q = texts[1000:1040]
    same = fitted.prune_index(threshold=0.0)  # keeps every edge with its score: same predictions
    a, sa = fitted.predict_topk(q, 10)
    b, sb = same.predict_topk(q, 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    small = fitted.prune_index(top_k=3)
    P = small.adjacency_matrix()
    assert np.all(np.diff(P.tocsc().indptr) >= 1) and P.nnz < A.nnz
    per_cluster = np.diff(P.indptr)
    assert per_cluster.max() <= 3 + np.bincount(np.asarray(A.tocsc().argmax(axis=0)).ravel()).max()
    assert small.predict_topk(q, 5)[0].shape == (40, 5)
    import io

    import joblib
    buf = io.BytesIO()
    joblib.dump(small, buf)
    buf.seek(0)
    np.testing.assert_array_equal(joblib.load(buf).predict_topk(q, 5)[0], small.predict_topk(q, 5)[0])


@pytest.mark.parametrize("params", [
    {"adjacency_init": "approx"},
    {"adjacency_init": "random", "stage2_lr_factor": 1.0},
    {"stage2_lr_factor": 0.5, "lr_adjacency": 0.05},
])
def test_stage2_options_train_and_keep_every_label_reachable(params, cooking):
    texts, labels = cooking
    clf = ELIASClassifier(**{**TINY, **params}).fit(texts[:600], labels[:600])
    net = clf.network_
    np.testing.assert_array_equal(np.unique(net.a_indices[net.a_mask].numpy()), np.arange(len(clf.classes_)))
    assert np.isfinite(clf.history_[-1]["loss"])
    if "adjacency_init" in params:  # the stage-1 cluster of a label starts as its strongest edge
        A = clf.adjacency_matrix()
        assert A.shape == (net.n_clusters, len(clf.classes_))
    np.testing.assert_allclose(clf.label_frequency_, np.asarray(clf.label_indexer_.transform(labels[:600]).sum(0)).ravel())


def test_tree_init_starts_stage2_from_the_stage1_index(cooking):
    """adjacency_init="tree" with a frozen stage 2: every stage-1 edge at score 1, parents unchanged, same top-5."""
    texts, labels = cooking
    # every label shortlisted (K ≥ L), so that ties in ŷ cannot pick different shortlists
    frozen = dict(TINY, adjacency_init="tree", stage2_lr_factor=1e-12, lr_adjacency=1e-12, warmup=0.0,
                  shortlist_size=1000)
    clf = ELIASClassifier(**frozen).fit(texts[:600], labels[:600])
    only1 = ELIASClassifier(**{**frozen, "n_epochs_stage2": 0}).fit(texts[:600], labels[:600])
    assert clf.selected_stage_ == 2 and clf.network_.learn_adjacency
    tree = clf.label_tree_.labels_
    A = clf.adjacency_matrix()
    np.testing.assert_allclose(A[tree, np.arange(A.shape[1])].A1, 1.0)  # Eq. 5 saturates on the stage-1 edges
    assert A.nnz > A.shape[1]  # ... and A' added edges, below 1
    np.testing.assert_array_equal(clf.network_.parent.numpy(), tree)
    ref = only1.predict_topk(texts[600:900], 5)[0]
    np.testing.assert_array_equal(clf.predict_topk(texts[600:900], 5)[0], ref)  # the stage-1 model's ranking
    paper = ELIASClassifier(**{**frozen, "adjacency_init": "random"}).fit(texts[:600], labels[:600])
    assert np.mean(paper.predict_topk(texts[600:900], 1)[0] == ref[:, :1]) < 0.9  # Eq. 10's random A does not


@pytest.mark.parametrize("params, match", [
    ({"adjacency_init": "zeros"}, "adjacency_init"),
    ({"stage2_lr_factor": 0}, "stage2_lr_factor"),
    ({"lr_adjacency": -1.0}, "lr_adjacency"),
])
def test_stage2_option_errors(params, match, cooking):
    texts, labels = cooking
    with pytest.raises(ValueError, match=match):
        ELIASClassifier(**params).fit(texts[:20], labels[:20])


def test_one_vs_all_fast_path_equals_the_general_index_path(cooking, monkeypatch):
    """C = 1, K = L skips the index machinery; it must train and predict exactly like the general path."""
    from skelias._network import ELIASNetwork

    texts, labels = cooking
    kw = dict(TINY, n_clusters=1, shortlist_size=10**6, n_epochs_stage2=0)
    fast = ELIASClassifier(**kw).fit(texts[:600], labels[:600])
    assert fast.network_.is_one_vs_all
    monkeypatch.setattr(ELIASNetwork, "is_one_vs_all", property(lambda self: False))
    general = ELIASClassifier(**kw).fit(texts[:600], labels[:600])
    np.testing.assert_allclose([h["loss"] for h in fast.history_], [h["loss"] for h in general.history_], rtol=1e-5)
    a, sa = fast.predict_topk(texts[600:700], 5)
    b, sb = general.predict_topk(texts[600:700], 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-7)


def test_validation_keeps_the_stage1_model_when_stage2_is_worse(cooking, monkeypatch):
    import skelias._training as T

    texts, labels = cooking
    real = T.train_stage

    def scripted(net, *a, desc, **kw):  # stage 2 always scores below stage 1 on validation
        hist = real(net, *a, desc=desc, **kw)
        for h in hist:
            h["val_ndcg@5"] = 0.5 if desc == "stage 1" else 0.1
        return hist

    monkeypatch.setattr("skelias.elias.train_stage", scripted)
    clf = ELIASClassifier(**{**TINY, "validation_size": 100}).fit(texts[:600], labels[:600])
    assert clf.selected_stage_ == 1 and not clf.network_.learn_adjacency
    assert [h["stage"] for h in clf.history_] == [1, 1, 2]  # stage 2 ran, its model was dropped
    # the kept model is exactly the stage-1-only model of the same seed
    only1 = ELIASClassifier(**{**TINY, "validation_size": 100, "n_epochs_stage2": 0}).fit(texts[:600], labels[:600])
    (a, sa), (b, sb) = clf.predict_topk(texts[600:700], 10), only1.predict_topk(texts[600:700], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    ref = ELIASClassifier(**TINY).fit(texts[:600], labels[:600])
    assert ref.selected_stage_ == 2 and ref.network_.learn_adjacency


def test_single_queries_gather_and_batches_score_densely_with_equal_results(fitted, cooking):
    texts, _ = cooking
    q = texts[1000:1030]
    net = fitted.network_
    assert net.dense_label_scoring and net.shortlist_size < net.n_labels  # a single query takes the gather path
    names, scores = fitted.predict_topk(q, k=10)  # 30 × K ≥ L entries: one dense matmul
    for i in range(len(q)):
        n1, s1 = fitted.predict_topk(q[i : i + 1], k=10)
        np.testing.assert_allclose(s1[0], scores[i], rtol=1e-5, atol=1e-7)
        assert list(n1[0][:3]) == list(names[i][:3])


def test_edge_scores_are_cached_in_prediction_and_follow_updates(fitted):
    import copy

    import torch

    net = copy.deepcopy(fitted.network_).eval()  # the module-scoped fixture stays untouched
    assert net.learn_adjacency  # the fitted model went through stage 2
    with torch.no_grad():
        first = net.log_edge_scores()
        assert net.log_edge_scores() is first  # cached between prediction calls
        net.a_values.add_(0.5 * torch.rand_like(net.a_values))  # an in-place update (as an optimiser step)
        updated = net.log_edge_scores()
    assert updated is not first and not torch.equal(updated, first)
    with torch.enable_grad():
        assert net.log_edge_scores().requires_grad  # training never sees a cached, detached tensor


def test_label_bias_starts_at_the_log_odds_of_a_scored_label(cooking):
    texts, labels = cooking
    params = dict(TINY, n_epochs_stage1=1, n_epochs_stage2=0, lr=1e-12, lr_encoder=1e-12, weight_decay=0.0)
    clf = ELIASClassifier(**params).fit(texts[:600], labels[:600])  # (almost) no learning: b_l stays at its init
    Y = LabelIndexer().fit(labels[:600]).transform(labels[:600])
    K = min(TINY["shortlist_size"], Y.shape[1])
    y_bar = Y.nnz / Y.shape[0]
    expected = np.log(y_bar / (K - y_bar))
    np.testing.assert_allclose(clf.network_.label_bias.detach().numpy(), expected, atol=1e-4)


def test_sparse_adam_moves_only_the_embedding_rows_of_present_features():
    # features 10-19 never occur. Their gradient is 0, so dense AdamW only applies weight decay:
    # its rows are c * initial rows (one c for all); lazy Adam (no decay) leaves them at the initial rows
    rng = np.random.RandomState(0)
    X = sp.random(200, 20, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    X = sp.csr_matrix(X.multiply(np.r_[np.ones(10), np.zeros(10)][None, :]), dtype=np.float32)
    X.eliminate_zeros()
    Y = sp.lil_matrix((200, 30), dtype=np.float32)
    Y[np.arange(200), rng.randint(0, 30, 200)] = 1
    kw = dict(TINY, n_epochs_stage1=1, n_epochs_stage2=0, max_leaf_size=10, shortlist_size=30)
    w = {}
    for opt in ("adamw", "sparse_adam"):
        clf = ELIASClassifier(embedding_optimizer=opt, **kw).fit(X, sp.csr_matrix(Y))
        assert not clf.network_.encoder.bag.sparse  # sparse gradients only while training
        w[opt] = clf.network_.encoder.bag.weight.detach().numpy()
    ratio = w["adamw"][10:] / w["sparse_adam"][10:]
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-5) and 0.99 < ratio.flat[0] < 1.0
    seen = w["adamw"][:10] / w["sparse_adam"][:10]
    assert not np.allclose(seen, ratio.flat[0], rtol=1e-3)
    with pytest.raises(ValueError, match="embedding_optimizer must be"):
        ELIASClassifier(embedding_optimizer="sgd").fit(X, sp.csr_matrix(Y))
