"""SparseReranker and its pieces (skelias.rerank): Eq. 16–17 and the composition with base models."""

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skelias import ELIASClassifier, KNNLabelClassifier, SparseReranker, precision_at_k_scorer
from skelias.rerank import (
    auto_C,
    auto_n_candidates,
    auto_weight_threshold,
    pair_margins,
    ranker_features,
    transform_margins,
)


def test_pair_margins_match_brute_force(monkeypatch):
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
    for i in (0, 3, 49):  # one query: the bincount path
        got_1 = pair_margins(psi[i : i + 1], W, b, idx[i : i + 1], WT=sp.csr_matrix(W.T))
        np.testing.assert_allclose(got_1, want[i : i + 1], rtol=1e-5, atol=1e-6)
    monkeypatch.setattr("skelias.rerank._DENSE_LOOKUP", 0)  # scipy's sparse lookup instead of the dense one
    np.testing.assert_array_equal(pair_margins(psi, W, b, idx, chunk_size=7, WT=sp.csr_matrix(W.T)), got_t)
    np.testing.assert_allclose(transform_margins(np.array([1.5, 0.0, -1.0]), "l3-hinge"),
                               np.exp(-np.array([0.0, 1.0, 8.0])), rtol=1e-6)
    np.testing.assert_allclose(transform_margins(np.array([0.0]), "sigmoid"), [0.5])


def test_ranker_features_are_eq16():
    bow = sp.csr_matrix(np.array([[3.0, 4.0, 0.0]], np.float32))
    emb = np.array([[0.0, 2.0]], np.float32)
    np.testing.assert_allclose(ranker_features(bow, emb).toarray(), [[0.6, 0.8, 0.0, 0.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(ranker_features(bow, emb, 0.5).toarray(), [[0.6, 0.8, 0.0, 0.0, 0.5]], rtol=1e-6)
    assert ranker_features(bow, emb, 0.0).shape == (1, 3)


def test_reranker_rescores_the_base_candidates_and_outputs_agree(ranker, elias_base, cooking):
    texts, _ = cooking
    q = texts[1200:1300]
    idx, p, qq = ranker.candidate_scores(q)
    b_idx, b_scores = elias_base._raw_topk(q, 20)
    np.testing.assert_array_equal(idx, b_idx)
    np.testing.assert_allclose(p, np.where(b_idx >= 0, b_scores, 0), rtol=1e-6)
    assert np.all((qq >= 0) & (qq <= 1))
    _names, scores = ranker.predict_topk(q, 5)
    top = np.argsort(-(p * qq), axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(scores, np.take_along_axis(p * qq, top, 1), rtol=1e-6)
    P = ranker.predict_proba(q)
    assert P.shape == (100, len(ranker.classes_)) and P.getnnz(axis=1).max() <= 20
    assert [len(row) for row in ranker.predict(q)] == [5] * 100
    assert ranker.coef_.shape[0] == len(ranker.classes_) and ranker.vectorizer_ is elias_base.vectorizer_


def test_reranker_improves_on_a_kNN_base_and_a_frozen_base_is_not_refitted(cooking):
    texts, labels = cooking
    knn = KNNLabelClassifier(k=5).fit(texts[:1200], labels[:1200])
    rr = SparseReranker(FrozenEstimator(knn), n_candidates=30, random_state=0).fit(texts[:1200], labels[:1200])
    assert rr.estimator_.estimator is knn
    p1 = precision_at_k_scorer(1)
    assert p1(rr, texts[1200:], labels[1200:]) > p1(knn, texts[1200:], labels[1200:])


@pytest.mark.slow
def test_reranker_in_a_pipeline_with_gridsearch_over_nested_params(cooking, tiny):
    texts, labels = cooking
    pipe = make_pipeline(TfidfVectorizer(min_df=2), SparseReranker(ELIASClassifier(**tiny), n_candidates=10))
    gs = GridSearchCV(pipe, {"sparsereranker__C": [0.5, 2.0], "sparsereranker__estimator__beam_size": [4]},
                      scoring=precision_at_k_scorer(1), cv=KFold(2))
    gs.fit(texts[:800], labels[:800])
    assert set(gs.cv_results_["param_sparsereranker__C"]) == {0.5, 2.0}
    assert gs.best_estimator_[-1].estimator_.beam_size == 4
    best = gs.best_estimator_
    names, _ = best[-1].predict_topk(best[0].transform(texts[800:810]), 3)
    assert names.shape == (10, 3)


def test_auto_C_follows_the_mean_size_of_the_label_problems(monkeypatch):
    rng = np.random.RandomState(0)
    Y = sp.random(60, 9, density=0.1, random_state=0).toarray()
    cand = (rng.rand(60, 9) < 0.3) * 1.0
    Y[:, 4] = cand[:, 4] = 0  # a label with no rows at all does not count
    union = (Y != 0) | (cand != 0)
    Y, cand = sp.csr_matrix(Y), sp.csr_matrix(cand)
    mean_rows = union.sum(axis=0)[union.sum(axis=0) > 0].mean()
    assert auto_C(Y, cand) == 1.0  # a few rows per problem: PECOS's C
    monkeypatch.setattr("skelias.rerank._AUTO_C_ROWS", mean_rows / 4)
    assert auto_C(Y, cand) == pytest.approx(0.25)  # C · mean rows held at the budget
    monkeypatch.setattr("skelias.rerank._AUTO_C_ROWS", mean_rows)
    assert auto_C(Y, cand) == pytest.approx(1.0)
    assert auto_C(sp.csr_matrix((5, 3)), sp.csr_matrix((5, 3))) == 1.0  # no label problem at all


def test_reranker_auto_C_trains_with_the_C_it_records(ranker, elias_base, cooking, monkeypatch):
    texts, labels = cooking
    assert ranker.C == "auto" and ranker.C_ == 1.0  # 1,200 rows × 20 candidates over hundreds of labels
    explicit = SparseReranker(FrozenEstimator(elias_base), n_candidates=20, C=1.0, random_state=0)
    explicit.fit(texts[:1200], labels[:1200])
    np.testing.assert_array_equal(ranker.coef_.toarray(), explicit.coef_.toarray())
    monkeypatch.setattr("skelias.rerank._AUTO_C_ROWS", 10)
    large = SparseReranker(FrozenEstimator(elias_base), n_candidates=20, random_state=0).fit(texts[:1200],
                                                                                           labels[:1200])
    assert 0 < large.C_ < 1
    same = SparseReranker(FrozenEstimator(elias_base), n_candidates=20, C=large.C_, random_state=0)
    same.fit(texts[:1200], labels[:1200])
    np.testing.assert_array_equal(large.coef_.toarray(), same.coef_.toarray())
    fixed = SparseReranker(FrozenEstimator(elias_base), n_candidates=20, C=large.C_, weight_threshold=0.1,
                           random_state=0).fit(texts[:1200], labels[:1200])
    assert fixed.coef_.nnz < explicit.coef_.nnz  # stronger regularisation: fewer weights above one threshold


def test_auto_weight_threshold_is_pecos_threshold_scaled_with_C(elias_base, cooking):
    texts, labels = cooking
    assert auto_weight_threshold(1.0) == pytest.approx(0.1)  # PECOS's threshold at PECOS's C
    fits = {}
    for C, wt in [(0.25, "auto"), (0.25, 0.025), (0.25, 0.1), (1.0, "auto")]:
        fits[C, wt] = SparseReranker(FrozenEstimator(elias_base), n_candidates=20, C=C, weight_threshold=wt,
                                     random_state=0).fit(texts[:1200], labels[:1200])
    auto = fits[0.25, "auto"]
    assert auto.weight_threshold == "auto" and auto.weight_threshold_ == pytest.approx(0.025)
    assert fits[1.0, "auto"].weight_threshold_ == pytest.approx(0.1)
    np.testing.assert_array_equal(auto.coef_.toarray(), fits[0.25, 0.025].coef_.toarray())
    assert np.abs(auto.coef_.data).min() >= 0.025
    assert fits[0.25, 0.1].coef_.nnz < auto.coef_.nnz  # PECOS's fixed 0.1 prunes more of the smaller weights


def test_auto_n_candidates_gives_ten_per_relevant_label_and_at_least_100():
    rng = np.random.RandomState(0)
    for density in (0.01, 0.05, 0.3):
        Y = sp.csr_matrix(rng.rand(70, 400) < density)
        mean = np.asarray(Y.sum(axis=1)).mean()  # brute force: the mean count of each row's labels
        assert auto_n_candidates(Y) == max(100, int(np.ceil(10 * mean)))
    assert auto_n_candidates(sp.csr_matrix(np.ones((3, 12)))) == 120  # exactly 12 per row: no rounding up
    assert auto_n_candidates(sp.csr_matrix((4, 9))) == 100  # no labels


def test_reranker_auto_n_candidates_trains_and_predicts_with_the_count_it_records(cooking, monkeypatch):
    texts, labels = cooking
    knn = KNNLabelClassifier(n_neighbors=30).fit(texts[:600], labels[:600])
    default = SparseReranker(FrozenEstimator(knn), random_state=0).fit(texts[:600], labels[:600])
    assert default.n_candidates == "auto" and default.n_candidates_ == 100  # a few tags per question
    monkeypatch.setattr("skelias.rerank._AUTO_MIN_CANDIDATES", 1)
    auto = SparseReranker(FrozenEstimator(knn), random_state=0).fit(texts[:600], labels[:600])
    want = int(np.ceil(10 * np.mean([len(set(row)) for row in labels[:600]])))
    assert auto.n_candidates_ == want < 100
    same = SparseReranker(FrozenEstimator(knn), n_candidates=want, random_state=0).fit(texts[:600], labels[:600])
    np.testing.assert_array_equal(auto.coef_.toarray(), same.coef_.toarray())
    idx, p, q = auto.candidate_scores(texts[600:620])
    assert idx.shape == p.shape == q.shape == (20, want)
    idx_same, p_same, q_same = same.candidate_scores(texts[600:620])
    np.testing.assert_array_equal(idx, idx_same)
    np.testing.assert_array_equal(q, q_same)
    np.testing.assert_array_equal(p, p_same)
    same.__dict__.pop("n_candidates_")  # a model saved before the attribute existed: its integer parameter
    np.testing.assert_array_equal(idx, same.candidate_scores(texts[600:620])[0])
    auto.set_params(n_candidates=want + 5)  # a number set after fit takes effect at prediction
    assert auto.candidate_scores(texts[600:620])[0].shape == (20, want + 5)


def test_reranker_joblib_roundtrip(ranker, cooking, tmp_path):
    texts, _ = cooking
    joblib.dump(ranker, tmp_path / "r.joblib")
    loaded = joblib.load(tmp_path / "r.joblib")
    a, sa = ranker.predict_topk(texts[1200:1250], 10)
    b, sb = loaded.predict_topk(texts[1200:1250], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)


@pytest.mark.parametrize("params, err, match", [
    ({"n_candidates": 0}, ValueError, r"'n_candidates' parameter .* range \[1, inf\)"),
    ({"C": -1.0}, ValueError, "'C' parameter"),
    ({"C": "large"}, ValueError, "'C' parameter"),
    ({"loss": "hingey"}, ValueError, r"'loss' parameter .*'squared_hinge'"),
    ({"score_transform": "tanh"}, ValueError, "'score_transform' parameter"),
    ({"embedding_weight": -1}, ValueError, "'embedding_weight' parameter"),
    ({"k": 0}, ValueError, "'k' parameter"),
    ({"bias": float("inf")}, ValueError, "'bias' parameter"),
    ({"bias": float("nan")}, ValueError, "'bias' parameter"),
    ({"tol": float("inf")}, ValueError, "'tol' parameter"),
    ({"bias": "1"}, TypeError, "'bias' parameter"),
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


def test_sklearn_estimator_checks(estimator_checks):
    estimator_checks(SparseReranker(KNNLabelClassifier(n_neighbors=3), n_candidates=5, random_state=0))
