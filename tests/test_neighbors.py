import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline

from skelias import (
    KNNLabelClassifier,
    LabelIndexer,
    make_topk_scorer,
    ndcg_at_k_scorer,
    precision_at_k,
    precision_at_k_scorer,
    psprecision_at_k_scorer,
    recall_at_k_scorer,
)


def test_fit_predict_shapes_and_consistency(cooking):
    texts, labels = cooking
    clf = KNNLabelClassifier(n_neighbors=10, k=3).fit(texts[:1200], labels[:1200])
    assert clf.fit(texts[:1200], labels[:1200]) is clf
    names, scores = clf.predict_topk(texts[1200:], k=4)
    assert names.shape == scores.shape == (300, 4)
    S = clf.decision_function(texts[1200:])
    assert sp.isspmatrix_csr(S) and S.shape == (300, len(clf.classes_))
    P = clf.predict(texts[1200:])
    assert len(P) == 300 and all(len(row) <= 3 for row in P)
    # predict = top-3 of decision_function = first 3 of predict_topk
    assert P[:20] == [[n for n in names[i, :3] if n is not None] for i in range(20)]
    assert 0.2 < clf.score(texts[1200:], labels[1200:]) <= 1.0


def test_feature_matrix_input_and_indicator_targets(cooking):
    texts, labels = cooking
    X = TfidfVectorizer().fit_transform(texts)
    Y = LabelIndexer().fit_transform(labels)
    clf = KNNLabelClassifier(n_neighbors=10).fit(X[:1000], Y[:1000])
    idx, scores = clf.predict_topk(X[1000:], 5)
    finite = np.where(idx >= 0, scores, -1e9)  # padded slots hold -inf
    assert idx.dtype.kind == "i" and np.all(np.diff(finite, axis=1) <= 0)
    assert np.all(np.isneginf(scores[idx < 0]))
    assert precision_at_k(Y[1000:], (idx, scores), k=1) > 0.2
    with pytest.raises(TypeError, match="fitted on a feature matrix"):
        clf.predict(texts[:3])
    with pytest.raises(ValueError, match="features, but KNNLabelClassifier is expecting"):
        clf.predict(X[:3, :10])


@pytest.mark.parametrize(
    "X, Y, exc, match",
    [
        ([], [], ValueError, "0 documents"),
        (["a b", "c d"], [["x"]], ValueError, "same number of rows"),
        (["a b", 3], [["x"], ["y"]], TypeError, r"X\[1\] is a int"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), [["x"], ["y"]], ValueError, "NaN"),
        (["a b", "b c"], [[], []], ValueError, "no label at all"),
        ("a single string", [["x"]], TypeError, "not a single string"),
    ],
)
def test_bad_input(X, Y, exc, match):
    with pytest.raises(exc, match=match):
        KNNLabelClassifier().fit(X, Y)


def test_bad_params_and_not_fitted(cooking):
    texts, labels = cooking
    with pytest.raises(NotFittedError):
        KNNLabelClassifier().predict(texts[:2])
    with pytest.raises(ValueError, match="'n_neighbors' parameter"):
        KNNLabelClassifier(n_neighbors=0).fit(texts, labels)
    with pytest.raises(ValueError, match=r"'k' parameter .* range \[1, inf\)"):
        KNNLabelClassifier(k=0).fit(texts, labels)
    with pytest.raises(ValueError, match="'power' parameter"):
        KNNLabelClassifier(power=float("nan")).fit(texts, labels)
    clf = KNNLabelClassifier().fit(texts[:200], labels[:200])
    with pytest.raises(ValueError, match="positive integer"):
        clf.predict_topk(texts[:2], k=-1)


def test_clone_params_and_joblib_roundtrip(cooking, tmp_path):
    texts, labels = cooking
    clf = KNNLabelClassifier(n_neighbors=7, power=1.0)
    c2 = clone(clf)
    assert c2.get_params() == clf.get_params() and c2 is not clf
    c2.set_params(n_neighbors=3)
    assert c2.n_neighbors == 3
    clf.fit(texts[:500], labels[:500])
    joblib.dump(clf, tmp_path / "m.joblib")
    loaded = joblib.load(tmp_path / "m.joblib")
    a, sa = clf.predict_topk(texts[500:600], 5)
    b, sb = loaded.predict_topk(texts[500:600], 5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa, sb)


def test_scorers_in_grid_search_and_pipeline(cooking):
    texts, labels = cooking
    grid = GridSearchCV(KNNLabelClassifier(), {"n_neighbors": [3, 20]}, scoring=precision_at_k_scorer(1), cv=KFold(2))
    grid.fit(texts[:800], labels[:800])
    assert grid.best_params_["n_neighbors"] in (3, 20) and grid.best_score_ > 0.2
    pipe = make_pipeline(TfidfVectorizer(sublinear_tf=True), KNNLabelClassifier(n_neighbors=10))
    scores = cross_val_score(pipe, texts[:800], labels[:800], cv=KFold(2), scoring=ndcg_at_k_scorer(5))
    assert scores.shape == (2,) and np.all(scores > 0.2)
    multi = GridSearchCV(
        KNNLabelClassifier(),
        {"power": [1.0, 2.0]},
        cv=2,  # label sets (not lists) pass scikit-learn's stratification check
        scoring={"p1": precision_at_k_scorer(1), "r10": recall_at_k_scorer(10), "psp5": psprecision_at_k_scorer(5)},
        refit="p1",
    ).fit(texts[:600], [set(row) for row in labels[:600]])
    assert set(multi.cv_results_) >= {"mean_test_p1", "mean_test_r10", "mean_test_psp5"}


def test_scorer_matches_metric_and_counts_unknown_labels(cooking):
    texts, labels = cooking
    clf = KNNLabelClassifier(n_neighbors=10).fit(texts[:1000], labels[:1000])
    test_labels = [row + ["label-never-seen"] for row in labels[1000:1100]]
    r_all = make_topk_scorer("recall", 10)(clf, texts[1000:1100], test_labels)
    r_known = make_topk_scorer("recall", 10)(clf, texts[1000:1100], labels[1000:1100])
    assert r_all < r_known  # an unseen label can only be missed
    # scorer on an indicator target = the metric on predict_topk
    X = TfidfVectorizer().fit_transform(texts)
    Y = LabelIndexer().fit_transform(labels)
    clf = KNNLabelClassifier(n_neighbors=10).fit(X[:1000], Y[:1000])
    assert precision_at_k_scorer(3)(clf, X[1000:], Y[1000:]) == pytest.approx(
        precision_at_k(Y[1000:], clf.predict_topk(X[1000:], 3), k=3)
    )


def test_scorer_uses_decision_function_of_plain_sklearn_models():
    rs = np.random.RandomState(0)
    X = rs.randn(120, 5)
    Y = (X[:, :3] + 0.3 * rs.randn(120, 3) > 0).astype(int)
    model = OneVsRestClassifier(LogisticRegression()).fit(X, Y)
    s = precision_at_k_scorer(1)(model, X, Y)
    assert s == pytest.approx(precision_at_k(Y, model.decision_function(X), k=1))
    with pytest.raises(TypeError, match="neither predict_topk"):
        precision_at_k_scorer(1)(object(), X, Y)
    with pytest.raises(ValueError, match="sample_weight"):
        precision_at_k_scorer(1)(model, X, Y, sample_weight=np.ones(120))


def test_sklearn_estimator_checks(estimator_checks):
    estimator_checks(KNNLabelClassifier(n_neighbors=3))


def test_classifier_identity_and_label_lists_in_model_selection(cooking):
    from sklearn.base import is_classifier

    texts, labels = cooking
    assert is_classifier(KNNLabelClassifier())
    with pytest.raises(ValueError, match="legacy multi-label"):  # scikit-learn cannot stratify label lists
        GridSearchCV(KNNLabelClassifier(), {"n_neighbors": [3]}, cv=2).fit(texts[:100], labels[:100])
    first = np.array([row[0] for row in labels[:300]])  # one label per row: multi-class
    knn = KNNLabelClassifier(n_neighbors=5).fit(texts[:300], first)
    proba = knn.predict_proba(texts[300:320])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(knn.predict(texts[300:320]), knn.classes_[np.argmax(proba, axis=1)])
