import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skelias import ELIASClassifier, LabelIndexer, precision_at_k, precision_at_k_scorer


def test_fit_predict_outputs_are_consistent(elias_base, cooking):
    fitted = elias_base
    texts, _ = cooking
    q = texts[1200:1300]
    names, scores = fitted.predict_topk(q, k=5)
    assert names.shape == scores.shape == (100, 5)
    finite = np.where(np.isfinite(scores), scores, -1.0)
    assert np.all(np.diff(finite, axis=1) <= 1e-7) and np.all(finite <= 1.0)
    P = fitted.predict_proba(q)
    assert sp.isspmatrix_csr(P) and P.shape == (100, len(fitted.classes_))
    # predict_topk = top-k of predict_proba = predict
    expected = [[n for n in row if n is not None] for row in names]
    assert fitted.predict(q) == expected  # label lists, best first, as the fitted y (label collections)
    idx = fitted.label_indexer_.transform(expected)
    top_from_proba = [set(P[i].indices[np.argsort(-P[i].data, kind="stable")[:5]]) for i in range(100)]
    assert [set(idx[i].indices) for i in range(100)] == top_from_proba
    emb = fitted.transform(q)
    assert emb.shape == (100, 32) and emb.dtype == np.float32
    assert {"clustering", "stage1", "stage2_init", "stage2", "total"} <= set(fitted.fit_time_)
    assert [h["stage"] for h in fitted.history_] == [1, 1, 2]
    assert fitted.weight_decay_ == 0.01  # "auto" without a pretrained model
    assert fitted.lr_ == 0.01
    assert fitted.pretrained_scale_ is None


def test_auto_lr_is_the_explicit_rate_it_resolves_to(cooking, tiny, monkeypatch):
    from skelias import elias

    texts, labels = cooking
    fit = lambda **kw: ELIASClassifier(**{**tiny, **kw}).fit(texts[:300], labels[:300])
    auto, explicit = fit(lr="auto"), fit(lr=0.003)
    assert auto.lr_ == 0.003  # below 20,000 rows
    a, sa = auto.predict_topk(texts[300:330], 10)
    b, sb = explicit.predict_topk(texts[300:330], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    assert elias.auto_lr(19_999) == 0.003 and elias.auto_lr(20_000) == 0.01
    monkeypatch.setattr("skelias._auto.SMALL_DATA_ROWS", 100)
    big = fit(lr="auto", n_epochs_stage2=0)
    assert big.lr_ == 0.01 and big._training_config(torch.device("cpu")).lr == 0.01
    assert fit(lr=0.05, n_epochs_stage2=0).lr_ == 0.05


def test_auto_dropout_is_the_explicit_rate_it_resolves_to(cooking, tiny, monkeypatch):
    from skelias import elias

    texts, labels = cooking
    fit = lambda **kw: ELIASClassifier(**{**tiny, **kw}).fit(texts[:300], labels[:300])
    rates = lambda model: {m.p for m in model.network_.modules() if isinstance(m, torch.nn.Dropout)}
    auto, explicit = fit(dropout="auto"), fit(dropout=0.5)
    assert auto.dropout_ == 0.5 and rates(auto) == {0.5}  # below 20,000 rows
    a, sa = auto.predict_topk(texts[300:330], 10)
    b, sb = explicit.predict_topk(texts[300:330], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    assert elias.auto_dropout(19_999) == 0.5 and elias.auto_dropout(20_000) == 0.2
    assert elias.auto_dropout(100, "transformer") == 0.2
    monkeypatch.setattr("skelias._auto.SMALL_DATA_ROWS", 100)
    big = fit(dropout="auto", n_epochs_stage2=0)
    assert big.dropout_ == 0.2 and rates(big) == {0.2}
    state = auto.__getstate__()
    del state["dropout_"]  # a model saved before the attribute existed: its numeric parameter builds the network
    state["dropout"] = 0.5
    old = ELIASClassifier.__new__(ELIASClassifier)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.predict_topk(texts[300:330], 10)[0], a)


def test_every_label_stays_reachable_after_stage2(elias_base):
    fitted = elias_base
    net = fitted.network_
    reachable = np.unique(net.a_indices[net.a_mask].numpy())
    np.testing.assert_array_equal(reachable, np.arange(len(fitted.classes_)))
    assert net.learn_adjacency and np.all(net.parent.numpy() < net.n_clusters)


def test_same_seed_same_predictions_and_joblib_roundtrip(elias_base, cooking, tiny, tmp_path):
    fitted = elias_base
    texts, labels = cooking
    again = ELIASClassifier(**tiny).fit(texts[:1200], labels[:1200])
    a, sa = fitted.predict_topk(texts[1200:1250], 10)
    b, sb = again.predict_topk(texts[1200:1250], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    joblib.dump(fitted, tmp_path / "elias.joblib")
    loaded = joblib.load(tmp_path / "elias.joblib")
    c, sc = loaded.predict_topk(texts[1200:1250], 10)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(sa, sc)


def test_indicator_targets_feature_input_and_dense_encoder(cooking, tiny):
    texts, labels = cooking
    X = TfidfVectorizer(min_df=2).fit_transform(texts)
    Y = LabelIndexer().fit_transform(labels)
    clf = ELIASClassifier(**{**tiny, "n_epochs_stage2": 0}).fit(X[:1000], Y[:1000])
    idx, scores = clf.predict_topk(X[1000:], 5)
    assert idx.dtype.kind == "i"  # column indices for an indicator target
    # the same ranking through the score matrix: P@5 of the top-k pair = P@5 of predict_proba
    assert precision_at_k(Y[1000:], (idx, scores), k=5) == pytest.approx(
        precision_at_k(Y[1000:], clf.predict_proba(X[1000:]), k=5))
    assert not clf.network_.learn_adjacency  # stage-1-only model
    with pytest.raises(ValueError, match="features, but ELIASClassifier is expecting"):
        clf.predict(X[:3, :10])
    with pytest.raises(TypeError, match="fitted on a feature matrix"):
        clf.predict(texts[:3])
    rs = np.random.RandomState(0)
    Xd = rs.randn(300, 8).astype(np.float32)
    Yd = np.hstack([Xd[:, :5] > 0.5, np.zeros((300, 1))]).astype(np.float32)
    Yd[Yd.sum(1) == 0, 5] = 1
    dense = ELIASClassifier(encoder="dense", **{**tiny, "max_leaf_size": 2}).fit(Xd, sp.csr_matrix(Yd))
    assert dense.predict(Xd).shape == (300, 6)


@pytest.mark.slow
def test_sklearn_composition(cooking, tiny):
    texts, labels = cooking
    pipe = make_pipeline(TfidfVectorizer(sublinear_tf=True), ELIASClassifier(**tiny))
    pipe.fit(texts[:800], labels[:800])
    assert len(pipe.predict(texts[800:820])) == 20
    est = ELIASClassifier(**tiny)
    c = clone(est).set_params(alpha=5.0)
    assert c.get_params()["alpha"] == 5.0 and est.alpha == 10.0
    grid = GridSearchCV(ELIASClassifier(**{**tiny, "n_epochs_stage2": 0}), {"beam_size": [2, 4]},
                        scoring=precision_at_k_scorer(1), cv=KFold(2)).fit(texts[:600], labels[:600])
    assert grid.best_params_["beam_size"] in (2, 4)
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))  # both candidates were fitted and scored


@pytest.mark.parametrize(
    "X, y, kwargs, exc, match",
    [
        ([], [], {}, ValueError, "0 documents"),
        (["a b", "c d"], [["x"]], {}, ValueError, "same number of rows"),
        (["a b", 3], [["x"], ["y"]], {}, TypeError, r"X\[1\] is a int"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), [["x"], ["y"]], {"encoder": "dense"}, ValueError, "NaN"),
        (["a b", "b c"], [[], []], {}, ValueError, "no label at all"),
        (["a b", "b c"], [["x"], ["y"]], {"k": 0}, ValueError, r"'k' parameter .* must be an int in the range \[1, inf\)"),
        (["a b", "b c"], [["x"], ["y"]], {"alpha": -1}, ValueError, r"'alpha' parameter .* range \(0(\.0)?, inf\)"),
        (["a b", "b c"], [["x"], ["y"]], {"alpha": float("nan")}, ValueError, "'alpha' parameter"),
        (["a b", "b c"], [["x"], ["y"]], {"lr": float("inf")}, ValueError, "'lr' parameter"),
        (["a b", "b c"], [["x"], ["y"]], {"encoder": "bert"}, ValueError, r"'encoder' parameter .* \{.*'tfidf'"),
        (["a b", "b c"], [["x"], ["y"]], {"device": "tpu:9"}, ValueError, "device must be"),
        (["a b", "b c"], [["x"], ["y"]], {"validation_size": 1.5}, ValueError, "'validation_size' parameter"),
        (["a b", "b c"], [["x"], ["y"]], {"validation_size": "10%"}, ValueError, "'validation_size' parameter"),
        (["apple pie", "apple tart", "pie crust"], [["x"], ["y"], ["x"]], {"validation_size": 3}, ValueError,
         "3 validation rows out of 3"),
        (["a b", "b c"], [["x"], ["y"]], {"weight_decay": "high"}, ValueError, r"'weight_decay' parameter .*'auto'"),
        (["a b", "b c"], [["x"], ["y"]], {"weight_decay": -0.1}, ValueError, r"'weight_decay' parameter .*'auto'"),
        (["a b", "b c"], [["x"], ["y"]], {"pretrained_scale": "big"}, ValueError, "'pretrained_scale' parameter"),
        (["a b", "b c"], [["x"], ["y"]], {"pretrained_scale": 0}, ValueError, "'pretrained_scale' parameter"),
        (["a b", "b c"], [["x"], ["y"]], {"dropout": 1.0}, ValueError, r"'dropout' parameter .* \[0(\.0)?, 1(\.0)?\)"),
        (["a b", "b c"], [["x"], ["y"]], {"encoder": "dense"}, ValueError, "raw texts need encoder='tfidf'"),
    ],
)
def test_bad_input_is_rejected_before_training(X, y, kwargs, exc, match, tiny):
    with pytest.raises(exc, match=match):
        ELIASClassifier(**{**tiny, **kwargs}).fit(X, y)


def test_validation_split_is_scored_every_epoch_and_the_kept_model_scores_its_best(cooking, tiny):
    texts, labels = cooking
    clf = ELIASClassifier(**{**tiny, "validation_size": 0.2, "n_epochs_stage1": 3}).fit(texts, labels)
    scores = [h["val_ndcg@5"] for h in clf.history_]
    assert len(scores) == 4 and len(set(scores)) > 1
    best = max(h["val_ndcg@5"] for h in clf.history_ if h["stage"] == clf.selected_stage_)
    assert best == max(scores)  # the kept stage holds the best epoch overall
    # re-score the kept network on the same held-out rows: it is the best epoch's model
    rs = np.random.RandomState(0)
    rs.randint(2**31 - 1)
    val = rs.permutation(len(texts))[: round(0.2 * len(texts))]
    from skelias._training import validation_ndcg

    X_val = clf._features([texts[i] for i in val], fitting=False)
    Y_val = clf.label_indexer_.transform([labels[i] for i in val])
    evaluate = validation_ndcg(X_val, Y_val, batch_size=clf.batch_size, device=torch.device("cpu"))
    assert evaluate(clf.network_) == pytest.approx(best, abs=1e-6)


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        ELIASClassifier().predict(["a"])


def test_sklearn_estimator_checks(estimator_checks):
    est = ELIASClassifier(encoder="dense", embed_dim=8, n_epochs_stage1=10, n_epochs_stage2=5, batch_size=32,
                          shortlist_size=10, max_leaf_size=2, lr=0.01, random_state=0)
    estimator_checks(est)


def test_index_analysis_and_pruning(elias_base, cooking):
    fitted = elias_base
    texts, _ = cooking
    A = fitted.adjacency_matrix()
    net = fitted.network_
    assert A.shape == (net.n_clusters, net.n_labels)
    assert A.data.min() > 0 and A.data.max() <= 1.0
    assert np.all(np.diff(A.tocsc().indptr) >= 1)  # every label hangs under at least one cluster
    q = texts[1200:1240]
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
def test_stage2_options_train_and_keep_every_label_reachable(params, cooking, tiny):
    texts, labels = cooking
    clf = ELIASClassifier(**{**tiny, **params}).fit(texts[:600], labels[:600])
    net = clf.network_
    np.testing.assert_array_equal(np.unique(net.a_indices[net.a_mask].numpy()), np.arange(len(clf.classes_)))
    assert np.isfinite(clf.history_[-1]["loss"])
    A = clf.adjacency_matrix()  # every label keeps an edge of positive score
    assert A.shape == (net.n_clusters, len(clf.classes_)) and np.all(np.diff(A.tocsc().indptr) >= 1)
    np.testing.assert_allclose(clf.label_frequency_, np.asarray(clf.label_indexer_.transform(labels[:600]).sum(0)).ravel())


def test_tree_init_starts_stage2_from_the_stage1_index(cooking, tiny):
    """adjacency_init="tree" with a frozen stage 2: every stage-1 edge at score 1, parents unchanged, same top-5."""
    texts, labels = cooking
    # every label shortlisted (K ≥ L), so that ties in ŷ cannot pick different shortlists
    frozen = dict(tiny, adjacency_init="tree", stage2_lr_factor=1e-12, lr_adjacency=1e-12, warmup=0.0,
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
    ({"adjacency_init": "zeros"}, r"'adjacency_init' parameter .* \{.*'approx'"),
    ({"stage2_lr_factor": 0}, "'stage2_lr_factor' parameter"),
    ({"lr_adjacency": -1.0}, "'lr_adjacency' parameter"),
])
def test_stage2_option_errors(params, match, cooking):
    texts, labels = cooking
    with pytest.raises(ValueError, match=match):
        ELIASClassifier(**params).fit(texts[:20], labels[:20])


def test_one_vs_all_fast_path_equals_the_general_index_path(cooking, tiny, monkeypatch):
    """C = 1, K = L skips the index machinery; it must train and predict exactly like the general path."""
    from skelias._network import ELIASNetwork

    texts, labels = cooking
    kw = dict(tiny, n_clusters=1, shortlist_size=10**6, n_epochs_stage2=0)
    fast = ELIASClassifier(**kw).fit(texts[:600], labels[:600])
    assert fast.network_.is_one_vs_all
    monkeypatch.setattr(ELIASNetwork, "is_one_vs_all", property(lambda self: False))
    general = ELIASClassifier(**kw).fit(texts[:600], labels[:600])
    np.testing.assert_allclose([h["loss"] for h in fast.history_], [h["loss"] for h in general.history_], rtol=1e-5)
    a, sa = fast.predict_topk(texts[600:700], 5)
    b, sb = general.predict_topk(texts[600:700], 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-7)


def test_validation_keeps_the_stage1_model_when_stage2_is_worse(cooking, tiny, monkeypatch):
    from skelias._training import StageTrainer

    texts, labels = cooking
    real = StageTrainer.fit

    def scripted(self, X, Y, resume=None):  # stage 2 always scores below stage 1 on validation
        hist = real(self, X, Y, resume=resume)
        for h in hist:
            h["val_ndcg@5"] = 0.5 if self.config.desc == "stage 1" else 0.1
        return hist

    monkeypatch.setattr(StageTrainer, "fit", scripted)
    clf = ELIASClassifier(**{**tiny, "validation_size": 100}).fit(texts[:600], labels[:600])
    assert clf.selected_stage_ == 1 and not clf.network_.learn_adjacency
    assert [h["stage"] for h in clf.history_] == [1, 1, 2]  # stage 2 ran, its model was dropped
    # the kept model is exactly the stage-1-only model of the same seed
    only1 = ELIASClassifier(**{**tiny, "validation_size": 100, "n_epochs_stage2": 0}).fit(texts[:600], labels[:600])
    (a, sa), (b, sb) = clf.predict_topk(texts[600:700], 10), only1.predict_topk(texts[600:700], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)
    monkeypatch.setattr(StageTrainer, "fit", real)
    ref = ELIASClassifier(**tiny).fit(texts[:600], labels[:600])
    assert ref.selected_stage_ == 2 and ref.network_.learn_adjacency


def test_single_queries_gather_and_batches_score_densely_with_equal_results(elias_base, cooking):
    fitted = elias_base
    texts, _ = cooking
    q = texts[1200:1230]
    net = fitted.network_
    assert net.dense_label_scoring and net.shortlist_size < net.n_labels  # a single query takes the gather path
    names, scores = fitted.predict_topk(q, k=10)  # 30 × K ≥ L entries: one dense matmul
    for i in range(len(q)):
        n1, s1 = fitted.predict_topk(q[i : i + 1], k=10)
        np.testing.assert_allclose(s1[0], scores[i], rtol=1e-5, atol=1e-7)
        assert list(n1[0][:3]) == list(names[i][:3])


def test_edge_scores_are_cached_in_prediction_and_follow_updates(elias_base):
    import copy

    net = copy.deepcopy(elias_base.network_).eval()  # the module-scoped fixture stays untouched
    assert net.learn_adjacency  # the fitted model went through stage 2
    with torch.no_grad():
        first = net.log_edge_scores()
        assert net.log_edge_scores() is first  # cached between prediction calls
        net.a_values.add_(0.5 * torch.rand_like(net.a_values))  # an in-place update (as an optimiser step)
        updated = net.log_edge_scores()
    assert updated is not first and not torch.equal(updated, first)
    with torch.enable_grad():
        assert net.log_edge_scores().requires_grad  # training never sees a cached, detached tensor


def test_label_bias_starts_at_the_log_odds_of_a_scored_label(cooking, tiny):
    texts, labels = cooking
    params = dict(tiny, n_epochs_stage1=1, n_epochs_stage2=0, lr=1e-12, lr_encoder=1e-12, weight_decay=0.0)
    clf = ELIASClassifier(**params).fit(texts[:600], labels[:600])  # (almost) no learning: b_l stays at its init
    Y = LabelIndexer().fit(labels[:600]).transform(labels[:600])
    K = min(tiny["shortlist_size"], Y.shape[1])
    y_bar = Y.nnz / Y.shape[0]
    expected = np.log(y_bar / (K - y_bar))
    np.testing.assert_allclose(clf.network_.label_bias.detach().numpy(), expected, atol=1e-4)


def test_sparse_adam_moves_only_the_embedding_rows_of_present_features(tiny):
    # features 10-19 never occur. Their gradient is 0, so dense AdamW only applies weight decay:
    # its rows are c * initial rows (one c for all); lazy Adam (no decay) leaves them at the initial rows
    rng = np.random.RandomState(0)
    X = sp.random(200, 20, density=0.3, format="csr", random_state=rng, dtype=np.float32)
    X = sp.csr_matrix(X.multiply(np.r_[np.ones(10), np.zeros(10)][None, :]), dtype=np.float32)
    X.eliminate_zeros()
    Y = sp.lil_matrix((200, 30), dtype=np.float32)
    Y[np.arange(200), rng.randint(0, 30, 200)] = 1
    kw = dict(tiny, n_epochs_stage1=1, n_epochs_stage2=0, max_leaf_size=10, shortlist_size=30)
    w = {}
    for opt in ("adamw", "sparse_adam"):
        clf = ELIASClassifier(embedding_optimizer=opt, **kw).fit(X, sp.csr_matrix(Y))
        assert not clf.network_.encoder.bag.sparse  # sparse gradients only while training
        w[opt] = clf.network_.encoder.bag.weight.detach().numpy()
    ratio = w["adamw"][10:] / w["sparse_adam"][10:]
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-5) and 0.99 < ratio.flat[0] < 1.0
    seen = w["adamw"][:10] / w["sparse_adam"][:10]
    assert not np.allclose(seen, ratio.flat[0], rtol=1e-3)
    with pytest.raises(ValueError, match="'embedding_optimizer' parameter"):
        ELIASClassifier(embedding_optimizer="sgd").fit(X, sp.csr_matrix(Y))


def test_prediction_time_knobs_and_csr_output(elias_base, cooking):
    import copy

    texts, _ = cooking
    q = texts[1200:1260]
    ref = elias_base.predict_topk(q, 5)
    narrow = elias_base.predict_topk(q, 5, beam_size=1)
    assert not np.array_equal(ref[0], narrow[0])  # one cluster per query shortlists other labels
    model = copy.deepcopy(elias_base).set_params(beam_size=1)  # read at predict time, not frozen at fit
    np.testing.assert_array_equal(model.predict_topk(q, 5)[0], narrow[0])
    np.testing.assert_array_equal(model.predict_topk(q, 5, beam_size=elias_base.beam_size)[1], ref[1])
    small_k = elias_base.predict_topk(q, 5, shortlist_size=5)[1]
    assert np.all(small_k <= ref[1] + 1e-7)  # a shortlist of 5 can only lose candidates
    S = elias_base.predict_topk(q, 5, as_csr=True)
    assert sp.isspmatrix_csr(S) and S.shape == (60, len(elias_base.classes_)) and S.getnnz(axis=1).max() <= 5
    np.testing.assert_allclose(-np.sort(-S.toarray(), axis=1)[:, :5], np.where(np.isfinite(ref[1]), ref[1], 0))
    with pytest.raises(TypeError):
        elias_base.predict_topk(q, 5, beam_width=3)  # unknown knobs are not ignored


def test_predict_topk_reaches_through_pipelines_and_searches(cooking, tiny):
    import skelias

    texts, labels = cooking
    pipe = make_pipeline(TfidfVectorizer(min_df=2), ELIASClassifier(**{**tiny, "n_epochs_stage2": 0}))
    grid = GridSearchCV(pipe, {"eliasclassifier__beam_size": [2, 4]}, scoring=precision_at_k_scorer(1), cv=KFold(2))
    grid.fit(texts[:600], labels[:600])
    names, _scores = skelias.predict_topk(grid, texts[600:610], 3)
    best = grid.best_estimator_
    expected = best[-1].predict_topk(best[0].transform(texts[600:610]), 3)
    np.testing.assert_array_equal(names, expected[0])
    np.testing.assert_array_equal(skelias.predict_topk(best, texts[600:610], 3)[1], expected[1])
    with pytest.raises(TypeError, match="not a skelias model"):
        skelias.predict_topk(TfidfVectorizer().fit(texts[:10]), texts[:2], 3)


def test_verbose_reports_each_epoch_and_silent_prints_nothing(cooking, tiny, caplog, capfd):
    import logging

    texts, labels = cooking
    with caplog.at_level(logging.INFO, logger="skelias"):
        ELIASClassifier(**{**tiny, "validation_size": 100, "verbose": 1}).fit(texts[:400], labels[:400])
    lines = [r.getMessage() for r in caplog.records if r.name == "skelias"]
    assert any(m.startswith("clustered ") for m in lines)
    assert [m.split(":")[0] for m in lines if " epoch " in m] == ["stage 1 epoch 1/2", "stage 1 epoch 2/2",
                                                                  "stage 2 epoch 1/1"]
    assert all("validation nDCG@5" in m and m.endswith(" s") for m in lines if " epoch " in m)
    capfd.readouterr()
    caplog.clear()
    ELIASClassifier(**tiny).fit(texts[:400], labels[:400])
    out, err = capfd.readouterr()
    assert out == "" and err == "" and not [r for r in caplog.records if r.name == "skelias"]
