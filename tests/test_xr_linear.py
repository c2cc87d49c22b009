"""XRLinearClassifier: beam search against brute force, tree layers, negatives, knobs, persistence, composition."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator

from skelias import (
    KNNLabelClassifier,
    LabelTree,
    ScoreCalibrator,
    SparseReranker,
    TopKEnsemble,
    XRLinearClassifier,
    load,
    save,
)
from skelias._liblinear import train_tree_layer
from skelias.xr_linear import POST_PROCESSORS, _dense_margins, _pair_margins, grouped_chain


@pytest.fixture(scope="module")
def features(cooking):
    texts, labels = cooking
    X = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32).fit_transform(texts)
    return X, labels


@pytest.fixture(scope="module")
def xr(features):
    """A three-layer model (leaves of <= 20 labels grouped 4 at a time) on the cooking slice."""
    X, labels = features
    return XRLinearClassifier(max_leaf_size=20, branching_factor=4, random_state=0).fit(X[:1200], labels[:1200])


def _brute_force(model, X, k, post="l3-hinge"):
    """Every label's path score from dense margins of every node of every layer, then the top k."""
    transform, combine = POST_PROCESSORS[post]
    score = np.ones((X.shape[0], 1))
    for W, b, parent in zip(model.coef_, model.intercept_, model.parents_, strict=True):
        h = transform((X @ W.T).toarray() + b)
        score = score[:, parent] * h if combine == "mul" else h
    order = np.argsort(-score, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(score, order, 1)


def test_wide_beam_equals_brute_force_path_scores(xr, features):
    X, _ = features
    Xq = X[1200:1300]
    # 32 leaves (2 ** ceil(log2(503 / 20))) grouped 4 at a time: 2, 8, 32 nodes, then the 503 labels
    assert [W.shape[0] for W in xr.coef_] == [2, 8, 32, 503]
    widest = max(W.shape[0] for W in xr.coef_)
    idx, scores = xr._raw_topk(Xq, 10, beam_size=widest)
    ref_idx, ref_scores = _brute_force(xr, Xq, 10)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.sort(idx, axis=1), np.sort(ref_idx, axis=1))


def test_narrow_beam_only_scores_labels_under_the_kept_nodes(xr, features):
    X, _ = features
    idx, scores = xr._raw_topk(X[1200:1210], 5, beam_size=1)
    leaf_parent = xr.parents_[-1]
    # beam 1: every returned label hangs from the same leaf cluster
    assert all(len(set(leaf_parent[row[row >= 0]])) == 1 for row in idx)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_numpy_and_scipy_margins_agree(xr, features):
    X, _ = features
    Xq = sp.csr_matrix(X[1200:1220], dtype=np.float32)
    W_T = xr._coef_t[-1]
    ref = (Xq @ W_T).toarray()
    np.testing.assert_allclose(_dense_margins(Xq.indptr, Xq.indices, Xq.data, W_T, Xq.shape[0]), ref, rtol=1e-5,
                               atol=1e-6)
    rows = np.repeat(np.arange(20), 3)
    cols = np.tile([0, 5, W_T.shape[1] - 1], 20)
    np.testing.assert_allclose(_pair_margins(Xq, W_T, rows, cols, max_cells=3 * W_T.shape[1]), ref[rows, cols],
                               rtol=1e-5, atol=1e-6)


def test_threaded_batch_prediction_equals_serial(xr, features):
    X, _ = features
    many = sp.vstack([X] * 2).tocsr()
    serial = pickle.loads(pickle.dumps(xr)).set_params(n_jobs=1)
    threaded = pickle.loads(pickle.dumps(xr)).set_params(n_jobs=2)
    a, b = serial._raw_topk(many, 10), threaded._raw_topk(many, 10)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_grouped_chain_is_pecos_layout():
    leaf = np.arange(40) % 10  # 10 leaves
    chain = grouped_chain(leaf, 10, 4)
    assert [C.shape for C in chain] == [(3, 1), (10, 3), (40, 10)]
    np.testing.assert_array_equal(chain[1].indices, np.arange(10) // 4)
    np.testing.assert_array_equal(chain[2].indices, leaf)
    assert [C.shape for C in grouped_chain(np.zeros(5, int), 1, 16)] == [(5, 1)]  # one leaf: one-vs-rest


def test_tree_layer_trains_a_node_on_its_parents_rows_only():
    rng = np.random.RandomState(0)
    X = sp.random(60, 30, density=0.3, random_state=0, format="csr", dtype=np.float32)
    Y = sp.csr_matrix((rng.rand(60, 4) < 0.4).astype(np.float32))
    parent = np.array([0, 0, 1, 1])
    active = sp.csr_matrix(np.column_stack([np.ones(60), np.zeros(60)]).astype(np.float32))  # parent 1: no row
    W, b = train_tree_layer(X, Y, parent, active, threshold=0.0)
    assert W[:2].nnz > 0 and W[2:].nnz == 0
    np.testing.assert_array_equal(b[2:], [-1.0, -1.0])
    # the same problem trained on rows 0..29 only differs
    half = sp.csr_matrix(np.column_stack([np.arange(60) < 30, np.zeros(60)]).astype(np.float32))
    W_half, _ = train_tree_layer(X, Y, parent, half, threshold=0.0)
    assert abs(W_half[:2] - W[:2]).sum() > 0


def test_seeded_fit_is_the_same_for_any_n_jobs(features):
    X, labels = features
    a = XRLinearClassifier(max_leaf_size=20, random_state=3, n_jobs=1).fit(X[:600], labels[:600])
    b = XRLinearClassifier(max_leaf_size=20, random_state=3, n_jobs=2).fit(X[:600], labels[:600])
    for Wa, Wb in zip(a.coef_, b.coef_, strict=True):
        assert (Wa != Wb).nnz == 0


@pytest.mark.parametrize("negatives", ["man", "tfn+man"])
def test_matcher_aware_negatives(features, negatives, xr):
    X, labels = features
    model = XRLinearClassifier(max_leaf_size=20, branching_factor=4, negative_sampling=negatives,
                               random_state=0).fit(X[:1200], labels[:1200])
    labels_pred, _ = model.predict_topk(X[1200:1300], 1)
    p1 = np.mean([lab[0] in set(y) for lab, y in zip(labels_pred, labels[1200:1300], strict=True)])
    assert p1 > 0.3
    if negatives == "tfn+man":  # more training rows per node than TFN alone: different classifiers
        assert any((W1 != W2).nnz for W1, W2 in zip(model.coef_, xr.coef_, strict=True))


def test_prediction_time_knobs(xr, features):
    X, _ = features
    Xq = X[1200:1300]
    wide, _ = xr.predict_topk(Xq, 10)
    narrow, _ = xr.predict_topk(Xq, 10, beam_size=1)
    assert not np.array_equal(wide, narrow)
    model = pickle.loads(pickle.dumps(xr)).set_params(beam_size=1)
    np.testing.assert_array_equal(model.predict_topk(Xq, 10)[0], narrow)
    _, sig = xr.predict_topk(Xq, 10, post_processor="sigmoid")
    _, logs = xr.predict_topk(Xq, 10, post_processor="log-l3-hinge")
    assert np.all((sig[sig > -np.inf] > 0) & (sig[sig > -np.inf] <= 1)) and np.all(logs[logs > -np.inf] <= 0)
    with pytest.raises(ValueError, match="post_processor must be one of"):
        xr.predict_topk(Xq, 10, post_processor="cubic")


def test_given_hierarchy(features):
    X, labels = features
    texts_y = labels[:400]
    L = XRLinearClassifier(max_leaf_size=1000).fit(X[:400], texts_y).classes_.size
    chain = grouped_chain(np.arange(L) % 8, 8, 4)
    model = XRLinearClassifier(hierarchy=chain).fit(X[:400], texts_y)
    assert [W.shape[0] for W in model.coef_] == [2, 8, L]
    tree = LabelTree(n_labels=L, n_clusters=4, branching=2, levels=[np.arange(L) % 2, np.arange(L) % 4])
    assert [W.shape[0] for W in XRLinearClassifier(hierarchy=tree).fit(X[:400], texts_y).coef_] == [2, 4, L]
    with pytest.raises(ValueError, match="one per label"):
        XRLinearClassifier(hierarchy=chain[:2]).fit(X[:400], texts_y)
    with pytest.raises(ValueError, match="exactly one non-zero per row"):
        XRLinearClassifier(hierarchy=[sp.csr_matrix(np.ones((L, 1))) * 0]).fit(X[:400], texts_y)


def test_raw_texts_and_round_trips(cooking, tmp_path):
    texts, labels = cooking
    model = XRLinearClassifier(max_leaf_size=30, random_state=0).fit(texts[:1000], labels[:1000])
    ref = model.predict_topk(texts[1000:1050], 5)
    again = pickle.loads(pickle.dumps(model)).predict_topk(texts[1000:1050], 5)
    loaded = load(save(model, tmp_path / "xr")).predict_topk(texts[1000:1050], 5)
    for other in (again, loaded):
        np.testing.assert_array_equal(other[0], ref[0])
        np.testing.assert_allclose(other[1], ref[1], rtol=1e-6)
    with pytest.raises(TypeError, match="fitted on raw texts"):
        model.predict_topk(sp.csr_matrix((2, 5)), 3)


def test_composes_with_reranker_calibrator_and_ensemble(cooking):
    texts, labels = cooking
    base = XRLinearClassifier(max_leaf_size=30, random_state=0).fit(texts[:900], labels[:900])
    ranker = SparseReranker(FrozenEstimator(base), n_candidates=20, random_state=0).fit(texts[:900], labels[:900])
    cal = ScoreCalibrator(FrozenEstimator(ranker), random_state=0).fit(texts[900:1200], labels[900:1200])
    ens = TopKEnsemble([XRLinearClassifier(max_leaf_size=30, random_state=0), KNNLabelClassifier(n_neighbors=10)],
                       n_candidates=20).fit(texts[:900], labels[:900])
    for model in (ranker, cal, ens):
        names, _ = model.predict_topk(texts[1200:1300], 5)
        p1 = np.mean([n[0] in set(y) for n, y in zip(names, labels[1200:1300], strict=True)])
        assert p1 > 0.3, type(model).__name__


def test_sklearn_estimator_checks(estimator_checks):
    estimator_checks(XRLinearClassifier(max_leaf_size=2, branching_factor=2, random_state=0))
