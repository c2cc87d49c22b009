"""ScoreCalibrator (skelias.calibration): the decision-tree calibration of ELIAS++ and the full chain."""

import joblib
import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline

from skelias import ELIASClassifier, KNNLabelClassifier, ScoreCalibrator, SparseReranker, precision_at_k_scorer


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


def test_boosted_trees_equal_scikit_learns_and_rise_with_the_constrained_features():
    from sklearn.ensemble import HistGradientBoostingClassifier

    from skelias.calibration import BOOSTED_PARAMS, BoostedTrees

    rng = np.random.RandomState(0)
    X = rng.rand(5000, 3).astype(np.float32)
    y = X[:, 0] * X[:, 1] + 0.3 * rng.rand(5000) - 0.2 * X[:, 2] > 0.3
    ours = BoostedTrees([1, 1, 0], random_state=0).fit(X, y)
    ref = HistGradientBoostingClassifier(**BOOSTED_PARAMS, monotonic_cst=[1, 1, 0], early_stopping=False,
                                         random_state=0).fit(X, y)
    Q = rng.rand(300, 3).astype(np.float32)
    np.testing.assert_allclose(ours.predict_proba(Q), ref.predict_proba(Q)[:, 1], rtol=1e-12, atol=1e-12)
    assert ours.n_trees_ == BOOSTED_PARAMS["max_iter"] and ours.depth_ <= BOOSTED_PARAMS["max_depth"]
    for j in (0, 1):  # raising a constrained feature never lowers the probability
        up = Q.copy()
        up[:, j] = np.minimum(up[:, j] + 0.2, 1.0)
        assert np.all(ours.predict_proba(up) >= ours.predict_proba(Q) - 1e-12)
    const = BoostedTrees([1, 1, 0]).fit(X, np.zeros(5000, dtype=bool))
    np.testing.assert_allclose(const.predict_proba(Q), 0.0, atol=1e-9)


def test_boosted_calibrator_scores_and_saves(ranker, cooking, tmp_path):
    import skelias
    from skelias.calibration import BoostedTrees

    texts, labels = cooking
    cal = ScoreCalibrator(FrozenEstimator(ranker), model="boosted", random_state=0).fit(texts[1200:1400],
                                                                                          labels[1200:1400])
    assert isinstance(cal.tree_, BoostedTrees)
    q = texts[1400:1450]
    idx, p, qq = ranker.candidate_scores(q)
    feats = np.stack([p, qq, p * qq, cal.label_frequency_[np.maximum(idx, 0)]], -1)
    want = cal.tree_.predict_proba(feats.reshape(-1, 4)).reshape(p.shape) + p * qq
    top = np.sort(np.where(idx >= 0, want, -np.inf), axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(cal._raw_topk(q, 5)[1], top, rtol=1e-5)
    loaded = skelias.load(skelias.save(cal, tmp_path / "boosted"))
    for a, b in zip(loaded.predict_topk(q, 5), cal.predict_topk(q, 5), strict=True):
        np.testing.assert_array_equal(a, b)


def test_calibrator_holds_out_a_seeded_split_and_reference_variant(cooking):
    texts, labels = cooking
    cal = ScoreCalibrator(SparseReranker(KNNLabelClassifier(), n_candidates=20), validation_size=0.25, refit=False,
                          variant="reference", random_state=0).fit(texts[:800], labels[:800])
    inner = cal.estimator_.estimator_
    assert inner.X_train_T_.shape[1] == 600  # the kNN saw the 75% training split only
    assert cal.refit_ is False
    assert cal.tree_.n_features_in_ == 3
    names, scores = cal.predict_topk(texts[800:820], 3)
    finite = np.where(np.isfinite(scores), scores, -1.0)
    assert names.shape == (20, 3) and np.all(np.diff(finite, axis=1) <= 1e-7)


def test_refit_keeps_the_split_tree_and_fits_the_estimator_on_all_rows(cooking):
    texts, labels = cooking
    X, y = texts[:800], labels[:800]
    base = SparseReranker(KNNLabelClassifier(), n_candidates=20, random_state=0)
    kw = dict(validation_size=0.25, min_samples_leaf=20, random_state=0)
    split = ScoreCalibrator(base, refit=False, **kw).fit(X, y)
    full = ScoreCalibrator(base, refit=True, **kw).fit(X, y)
    assert full.refit_ and set(full.fit_time_) == {"estimator", "tree", "refit"}
    assert full.estimator_.estimator_.X_train_T_.shape[1] == 800
    np.testing.assert_array_equal(full.tree_.tree_.threshold, split.tree_.tree_.threshold)  # the split's tree
    alone = SparseReranker(KNNLabelClassifier(), n_candidates=20, random_state=0).fit(X, y)  # brute force
    q = texts[800:840]
    for a, b in zip(full.estimator_.candidate_scores(q), alone.candidate_scores(q), strict=True):
        np.testing.assert_array_equal(a, b)
    counts = np.array([sum(c in ls for ls in y) for c in full.classes_], dtype=np.float64)
    np.testing.assert_allclose(full.label_frequency_, counts * 600 / 800, rtol=1e-6)
    idx, p, qq = alone.candidate_scores(q)
    feats = np.stack([p, qq, p * qq, full.label_frequency_[np.maximum(idx, 0)]], -1)
    want = full.tree_.predict_proba(feats.reshape(-1, 4))[:, 1].reshape(p.shape) + p * qq
    top = np.sort(np.where(idx >= 0, want, -np.inf), axis=1)[:, ::-1][:, :5]
    np.testing.assert_allclose(full._raw_topk(q, 5)[1], top, rtol=1e-5)


def test_refit_auto_follows_the_row_count(cooking, ranker, monkeypatch):
    from skelias import calibration

    texts, labels = cooking
    base = SparseReranker(KNNLabelClassifier(), n_candidates=10, random_state=0)
    assert ScoreCalibrator(base, validation_size=50, min_samples_leaf=5).fit(texts[:200], labels[:200]).refit_
    monkeypatch.setattr("skelias._auto.SMALL_DATA_ROWS", 200)
    assert not ScoreCalibrator(base, validation_size=50, min_samples_leaf=5).fit(texts[:200], labels[:200]).refit_
    assert calibration.auto_refit(199) and not calibration.auto_refit(200)
    frozen = ScoreCalibrator(FrozenEstimator(ranker)).fit(texts[1200:1300], labels[1200:1300])  # "auto": never
    assert frozen.refit_ is False and frozen.estimator_.estimator is ranker
    with pytest.raises(ValueError, match="refit=True fits the wrapped estimator again"):
        ScoreCalibrator(FrozenEstimator(ranker), refit=True).fit(texts[1200:1300], labels[1200:1300])


def test_calibrator_without_positive_pairs_warns_and_keeps_the_base_ranking(ranker, cooking):
    texts, _ = cooking
    with pytest.warns(UserWarning, match="every validation .* pair is irrelevant"):
        cal = ScoreCalibrator(FrozenEstimator(ranker)).fit(texts[1200:1250], [["no-such-tag"]] * 50)
    labels, _ = cal.predict_topk(texts[1250:1260], 5)  # the constant calibrator keeps the base ranking
    base_labels, _ = ranker.predict_topk(texts[1250:1260], 5)
    np.testing.assert_array_equal(labels, base_labels)


def test_calibrator_bad_validation_size(cooking):
    with pytest.raises(ValueError, match="'validation_size' parameter"):
        ScoreCalibrator(validation_size=1.5).fit(["a b", "c d"], [["x"], ["y"]])
    texts, labels = cooking
    with pytest.warns(UserWarning, match="asks for 90 of 100 rows; the calibrator uses 50"):
        ScoreCalibrator(SparseReranker(KNNLabelClassifier(), n_candidates=5), validation_size=90,
                        min_samples_leaf=1).fit(texts[:100], labels[:100])


@pytest.mark.slow
def test_full_chain_on_raw_texts_pipeline_and_roundtrip(cooking, tmp_path, tiny):
    texts, labels = cooking
    chain = make_pipeline(
        TfidfVectorizer(min_df=2),
        ScoreCalibrator(SparseReranker(ELIASClassifier(**tiny), n_candidates=10), validation_size=200, random_state=0),
    )
    chain.fit(texts[:1000], labels[:1000])
    names, _scores = chain[-1].predict_topk(chain[0].transform(texts[1000:1100]), 5)
    assert names.shape == (100, 5) and set(names.ravel()) - {None} <= set(chain[-1].classes_)
    assert precision_at_k_scorer(1)(chain, texts[1000:1300], labels[1000:1300]) > 0.05
    joblib.dump(chain, tmp_path / "c.joblib")
    again = joblib.load(tmp_path / "c.joblib")
    X = chain[0].transform(texts[1000:1020])
    np.testing.assert_array_equal(chain[-1].predict_topk(X, 5)[0], again[-1].predict_topk(X, 5)[0])


def test_sklearn_estimator_checks(estimator_checks):
    estimator_checks(ScoreCalibrator(SparseReranker(KNNLabelClassifier(n_neighbors=3), n_candidates=5, random_state=0),
                                     validation_size=0.3, min_samples_leaf=1))
