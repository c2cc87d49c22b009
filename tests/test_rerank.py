import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from liblinear.liblinearutil import train
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from test_elias import TINY

from skelias import (
    ELIASClassifier,
    KNNLabelClassifier,
    ScoreCalibrator,
    SparseReranker,
    TopKEnsemble,
    precision_at_k_scorer,
)
from skelias._liblinear import train_label_classifiers
from skelias.datasets import load_cooking_stackexchange
from skelias.rerank import pair_margins, ranker_features, transform_margins


@pytest.fixture(scope="module")
def cooking():
    texts, labels = load_cooking_stackexchange("train")
    return texts[:1500], labels[:1500]


@pytest.fixture(scope="module")
def base(cooking):
    texts, labels = cooking
    return ELIASClassifier(**TINY).fit(texts[:1200], labels[:1200])


@pytest.fixture(scope="module")
def ranker(base, cooking):
    texts, labels = cooking
    return SparseReranker(FrozenEstimator(base), n_candidates=20, random_state=0).fit(texts[:1200], labels[:1200])


# ---------------------------------------------------------------- the vectorised LIBLINEAR problems
@pytest.mark.parametrize("loss, solver", [("logistic", 0), ("squared_hinge", 1)])
@pytest.mark.parametrize("n_dense", [0, 40])
@pytest.mark.parametrize("remap", [False, True])
def test_vectorised_problems_match_one_liblinear_call_per_label(loss, solver, n_dense, remap):
    n, D, L = 300, 200, 25
    X = sp.hstack([sp.random(n, D - n_dense, density=0.05, random_state=1, dtype=np.float32),
                   sp.csr_matrix(np.random.RandomState(0).rand(n, n_dense).astype(np.float32))], format="csr")
    Y = sp.random(n, L, density=0.08, random_state=2, format="csr", dtype=np.float32)
    Y.data[:] = 1
    cand = sp.random(n, L, density=0.3, random_state=3, format="csr", dtype=np.float32)
    W, b = train_label_classifiers(X, Y, cand, loss=loss, weight_threshold=0.0, tol=1e-4, n_dense=n_dense,
                                   chunk_nnz=400, random_state=0, remap_columns=remap)
    R = ((cand + Y) > 0).tocsc()
    Yc = Y.tocsc()
    compared = 0
    for l in range(L):
        rows = R.indices[R.indptr[l] : R.indptr[l + 1]]
        y = np.where(Yc[rows, l].toarray().ravel() > 0, 1.0, -1.0)
        if len(set(y)) < 2:
            expected = 1.0 if (y > 0).any() else -1.0
            assert W[l].nnz == 0 and b[l] == expected
            continue
        m = train(y, X[rows], f"-s {solver} -c 1 -e 0.0001 -B 1 -q")
        w = np.ctypeslib.as_array(m.w, (D + 1,)).copy()
        w = -w if m.get_labels()[0] != 1 else w
        np.testing.assert_allclose(X[rows] @ W[l].toarray().ravel() + b[l], X[rows] @ w[:-1] + w[-1], atol=2e-4)
        compared += 1
    assert compared > 10


def test_weight_threshold_prunes_and_labels_without_positives_are_skipped():
    rng = np.random.RandomState(0)
    X = sp.csr_matrix(rng.rand(60, 10).astype(np.float32))
    Y = (rng.rand(60, 4) < 0.3).astype(np.float32)
    Y[:, 3] = 0
    Y = sp.csr_matrix(Y)
    cand = sp.csr_matrix(np.ones((60, 4), np.float32))
    W0, _ = train_label_classifiers(X, Y, cand, weight_threshold=0.0)
    W1, b1 = train_label_classifiers(X, Y, cand, weight_threshold=0.2)
    assert W1.nnz < W0.nnz and np.all(np.abs(W1.data) >= 0.2)
    assert W1[3].nnz == 0 and b1[3] == -1.0


def test_pair_margins_match_brute_force():
    rng = np.random.RandomState(0)
    psi = sp.random(50, 30, density=0.2, random_state=0, format="csr", dtype=np.float32)
    W = sp.random(12, 30, density=0.3, random_state=1, format="csr", dtype=np.float32)
    b = rng.randn(12).astype(np.float32)
    idx = rng.randint(-1, 12, size=(50, 6))
    got = pair_margins(psi, W, b, idx, chunk_size=7)
    full = (psi @ W.T).toarray() + b
    want = np.where(idx >= 0, np.take_along_axis(full, np.maximum(idx, 0), 1), 0.0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    got_t = pair_margins(psi, W, b, idx, chunk_size=7, WT=sp.csr_matrix(W.T))  # the transposed path
    np.testing.assert_allclose(got_t, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(transform_margins(np.array([1.5, 0.0, -1.0]), "l3-hinge"),
                               np.exp(-np.array([0.0, 1.0, 8.0])), rtol=1e-6)
    np.testing.assert_allclose(transform_margins(np.array([0.0]), "sigmoid"), [0.5])


def test_ranker_features_are_eq16():
    bow = sp.csr_matrix(np.array([[3.0, 4.0, 0.0]], np.float32))
    emb = np.array([[0.0, 2.0]], np.float32)
    np.testing.assert_allclose(ranker_features(bow, emb).toarray(), [[0.6, 0.8, 0.0, 0.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(ranker_features(bow, emb, 0.5).toarray(), [[0.6, 0.8, 0.0, 0.0, 0.5]], rtol=1e-6)
    assert ranker_features(bow, emb, 0.0).shape == (1, 3)


# ---------------------------------------------------------------- SparseReranker
def test_reranker_rescores_the_base_candidates_and_outputs_agree(ranker, base, cooking):
    texts, _ = cooking
    q = texts[1200:1300]
    idx, p, qq = ranker.candidate_scores(q)
    b_idx, b_scores = base._raw_topk(q, 20)
    np.testing.assert_array_equal(idx, b_idx)
    np.testing.assert_allclose(p, np.where(b_idx >= 0, b_scores, 0), rtol=1e-6)
    assert np.all((qq >= 0) & (qq <= 1))
    _names, scores = ranker.predict_topk(q, 5)
    top = np.argsort(-(p * qq), axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(scores, np.take_along_axis(p * qq, top, 1), rtol=1e-6)
    P = ranker.predict_proba(q)
    assert P.shape == (100, len(ranker.classes_)) and P.getnnz(axis=1).max() <= 20
    Ind = ranker.predict(q)
    assert np.all(Ind.getnnz(axis=1) == 5)
    assert ranker.coef_.shape[0] == len(ranker.classes_) and ranker.vectorizer_ is base.vectorizer_


def test_reranker_improves_on_a_kNN_base_and_a_frozen_base_is_not_refitted(cooking):
    texts, labels = cooking
    knn = KNNLabelClassifier(k=5).fit(texts[:1200], labels[:1200])
    rr = SparseReranker(FrozenEstimator(knn), n_candidates=30, random_state=0).fit(texts[:1200], labels[:1200])
    assert rr.estimator_.estimator is knn
    p1 = precision_at_k_scorer(1)
    assert p1(rr, texts[1200:], labels[1200:]) > p1(knn, texts[1200:], labels[1200:])


def test_reranker_in_a_pipeline_with_gridsearch_over_nested_params(cooking):
    texts, labels = cooking
    pipe = make_pipeline(TfidfVectorizer(min_df=2), SparseReranker(ELIASClassifier(**TINY), n_candidates=10))
    gs = GridSearchCV(pipe, {"sparsereranker__C": [0.5, 2.0], "sparsereranker__estimator__beam_size": [4]},
                      scoring=precision_at_k_scorer(1), cv=2)
    gs.fit(texts[:800], labels[:800])
    assert set(gs.cv_results_["param_sparsereranker__C"]) == {0.5, 2.0}
    assert gs.best_estimator_[-1].estimator_.beam_size == 4
    best = gs.best_estimator_
    names, _ = best[-1].predict_topk(best[0].transform(texts[800:810]), 3)
    assert names.shape == (10, 3)


def test_reranker_joblib_roundtrip(ranker, cooking, tmp_path):
    texts, _ = cooking
    joblib.dump(ranker, tmp_path / "r.joblib")
    loaded = joblib.load(tmp_path / "r.joblib")
    a, sa = ranker.predict_topk(texts[1200:1250], 10)
    b, sb = loaded.predict_topk(texts[1200:1250], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)


@pytest.mark.parametrize("params, err, match", [
    ({"n_candidates": 0}, ValueError, "n_candidates"),
    ({"C": -1.0}, ValueError, "C must"),
    ({"loss": "hingey"}, ValueError, "loss must"),
    ({"score_transform": "tanh"}, ValueError, "score_transform"),
    ({"embedding_weight": -1}, ValueError, "embedding_weight"),
    ({"k": 0}, ValueError, "k"),
])
def test_reranker_bad_params(params, err, match, cooking):
    texts, labels = cooking
    with pytest.raises(err, match=match):
        SparseReranker(KNNLabelClassifier(), **params).fit(texts[:50], labels[:50])


def test_reranker_bad_input(ranker, cooking):
    texts, labels = cooking
    with pytest.raises(ValueError, match="same number of rows"):
        SparseReranker(KNNLabelClassifier()).fit(texts[:50], labels[:40])
    with pytest.raises(TypeError, match="str"):
        ranker.predict_topk(["ok", 3])
    with pytest.raises(TypeError, match="raw texts"):
        ranker.predict_topk(sp.csr_matrix((2, 5), dtype=np.float32))


# ---------------------------------------------------------------- ScoreCalibrator
def test_calibrator_final_score_is_tree_plus_pq(ranker, cooking):
    texts, labels = cooking
    cal = ScoreCalibrator(FrozenEstimator(ranker), random_state=0).fit(texts[1200:1400], labels[1200:1400])
    q = texts[1400:1450]
    idx, p, qq = ranker.candidate_scores(q)
    feats = np.stack([p, qq, p * qq, cal.label_frequency_[np.maximum(idx, 0)]], -1)
    want = cal.tree_.predict_proba(feats.reshape(-1, 4))[:, 1].reshape(p.shape) + p * qq
    _lab, scores = cal._raw_topk(q, 5)
    top = np.sort(np.where(idx >= 0, want, -np.inf), axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(scores, top, rtol=1e-5)
    assert cal.classes_ is ranker.classes_


def test_calibrator_holds_out_a_seeded_split_and_reference_variant(cooking):
    texts, labels = cooking
    cal = ScoreCalibrator(SparseReranker(KNNLabelClassifier(), n_candidates=20), validation_size=0.25,
                          variant="reference", random_state=0).fit(texts[:800], labels[:800])
    inner = cal.estimator_.estimator_
    assert inner.X_train_T_.shape[1] == 600  # the kNN saw the 75% training split only
    assert cal.tree_.n_features_in_ == 3
    names, scores = cal.predict_topk(texts[800:820], 3)
    finite = np.where(np.isfinite(scores), scores, -1.0)
    assert names.shape == (20, 3) and np.all(np.diff(finite, axis=1) <= 1e-7)


def test_calibrator_without_positive_pairs_says_so(ranker, cooking):
    texts, _ = cooking
    with pytest.raises(ValueError, match="no positive"):
        ScoreCalibrator(FrozenEstimator(ranker)).fit(texts[1200:1250], [["no-such-tag"]] * 50)


def test_calibrator_bad_validation_size():
    with pytest.raises(ValueError, match="validation_size"):
        ScoreCalibrator(validation_size=1.5).fit(["a b", "c d"], [["x"], ["y"]])


# ---------------------------------------------------------------- ensembles and the full chain
def test_ensemble_averages_members_scores(cooking):
    texts, labels = cooking
    ens = TopKEnsemble(KNNLabelClassifier(), n_estimators=2, n_candidates=10, random_state=0)
    ens.fit(texts[:600], labels[:600])
    assert len(ens.estimators_) == 2
    q = texts[600:620]
    dense = np.zeros((20, len(ens.classes_)))
    for m, remap in zip(ens.estimators_, ens._maps):
        names, s = m.predict_topk(q, 10)
        i = m.label_indexer_.indices_of(names)
        for r in range(20):
            ok = i[r] >= 0
            dense[r, remap[i[r][ok]]] += s[r][ok] / 2
    _idx, scores = ens._raw_topk(q, 5)
    np.testing.assert_allclose(scores, -np.sort(-dense, axis=1)[:, :5], rtol=1e-5)


def test_full_chain_on_raw_texts_pipeline_and_roundtrip(cooking, tmp_path):
    texts, labels = cooking
    chain = make_pipeline(
        TfidfVectorizer(min_df=2),
        ScoreCalibrator(SparseReranker(ELIASClassifier(**TINY), n_candidates=10), validation_size=200, random_state=0),
    )
    chain.fit(texts[:1000], labels[:1000])
    names, _scores = chain[-1].predict_topk(chain[0].transform(texts[1000:1100]), 5)
    assert names.shape == (100, 5) and set(names.ravel()) - {None} <= set(chain[-1].classes_)
    assert 0 <= precision_at_k_scorer(1)(chain, texts[1000:1300], labels[1000:1300]) <= 1
    joblib.dump(chain, tmp_path / "c.joblib")
    again = joblib.load(tmp_path / "c.joblib")
    X = chain[0].transform(texts[1000:1020])
    np.testing.assert_array_equal(chain[-1].predict_topk(X, 5)[0], again[-1].predict_topk(X, 5)[0])


@pytest.mark.parametrize("make", [
    lambda: SparseReranker(KNNLabelClassifier(n_neighbors=3), n_candidates=5, random_state=0),
    lambda: ScoreCalibrator(SparseReranker(KNNLabelClassifier(n_neighbors=3), n_candidates=5, random_state=0),
                            validation_size=0.3, min_samples_leaf=1),
    lambda: TopKEnsemble(KNNLabelClassifier(n_neighbors=3), n_estimators=2, n_candidates=5),
], ids=["SparseReranker", "ScoreCalibrator", "TopKEnsemble"])
def test_sklearn_estimator_checks(make):
    """Every applicable scikit-learn API check passes; the exceptions are the documented multi-label ones."""
    from sklearn.utils.estimator_checks import check_estimator
    from test_neighbors import MULTILABEL_EXPECTED_FAILURES

    results = check_estimator(make(), expected_failed_checks=MULTILABEL_EXPECTED_FAILURES, on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:300] for r in results if r["status"] == "failed"}
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= 30


def test_ranker_features_match_sklearn_normalize():
    from sklearn.preprocessing import normalize

    from skelias.rerank import ranker_features

    rng = np.random.default_rng(0)
    X = sp.random(40, 30, density=0.2, format="csr", dtype=np.float32, random_state=0).tolil()
    X[3], X[38], X[39] = 0, 0, 0  # empty rows, also trailing ones
    X = X.tocsr()
    X.eliminate_zeros()
    E = rng.random((40, 4)).astype(np.float32)
    np.testing.assert_allclose(ranker_features(X, None).toarray(), normalize(X).toarray(), rtol=1e-6)
    both = ranker_features(X, E, 0.5)
    assert both.dtype == np.float32 and both.shape == (40, 34)
    np.testing.assert_allclose(both.toarray(), np.hstack([normalize(X).toarray(), 0.5 * normalize(E)]), rtol=1e-6)
    assert X.data.min() > 0 and not np.allclose(X.toarray(), normalize(X).toarray())  # input left untouched
