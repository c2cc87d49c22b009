"""Column weights for given feature matrices (skelias._features, ``ELIASClassifier(feature_weighting=...)``)."""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer, TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.preprocessing import normalize

from skelias import ELIASClassifier, SparseReranker
from skelias._features import fit_feature_idf, has_binary_rows, weight_features


@pytest.fixture(scope="module")
def binary_bow(cooking):
    texts, labels = cooking
    vec = CountVectorizer(binary=True, min_df=2).fit(texts[:1200])
    return normalize(vec.transform(texts).astype(np.float32)), labels  # L2-normalised 0/1 rows, as bibtex's


def test_binary_rows_are_recognised():
    assert has_binary_rows(sp.csr_matrix([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 3.0, 0.0]]))  # empty rows allowed
    assert not has_binary_rows(sp.csr_matrix([[1.0, 0.0, 2.0]]))
    assert not has_binary_rows(sp.csr_matrix([[-1.0, 0.0, -1.0]]))
    assert not has_binary_rows(sp.csr_matrix((2, 3)))


def test_idf_weights_match_tfidf_transformer(binary_bow):
    X, _ = binary_bow
    B = (X > 0).astype(np.float64)
    ref = TfidfTransformer(smooth_idf=True).fit(B)
    idf = fit_feature_idf(X)
    assert idf.dtype == np.float32
    np.testing.assert_allclose(idf, ref.idf_, rtol=1e-6)
    W = weight_features(X[:50], idf)
    assert W.format == "csr" and W.dtype == np.float32
    np.testing.assert_allclose(W.toarray(), ref.transform(B[:50]).toarray(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="fitted on"):
        weight_features(X[:, :10], idf)


def test_auto_weights_binary_matrices_only(binary_bow, cooking, tiny):
    X, labels = binary_bow
    texts, _ = cooking
    tfidf = TfidfVectorizer(min_df=2).fit(texts[:300]).transform(texts[:300])
    fit = lambda Xf, **kw: ELIASClassifier(**{**tiny, "n_epochs_stage2": 0, **kw}).fit(Xf, labels[:300])
    assert fit(X[:300]).feature_idf_ is not None
    assert fit(X[:300], feature_weighting="none").feature_idf_ is None
    assert fit(tfidf).feature_idf_ is None
    assert fit(tfidf, feature_weighting="idf").feature_idf_ is not None
    assert fit(texts[:300]).feature_idf_ is None


def test_weighted_chain_equals_the_chain_on_preweighted_features(binary_bow, tiny):
    X, labels = binary_bow
    auto = ELIASClassifier(**tiny).fit(X[:1200], labels[:1200])
    W = weight_features(X, auto.feature_idf_)
    plain = ELIASClassifier(**tiny, feature_weighting="none").fit(W[:1200], labels[:1200])
    a, sa = auto.predict_topk(X[1200:1260], 10)
    b, sb = plain.predict_topk(W[1200:1260], 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-5)
    one, s1 = auto.predict_topk(X[1200], 10)  # the single-row path weights too
    np.testing.assert_array_equal(one[0], a[0])
    np.testing.assert_allclose(s1[0], sa[0], rtol=1e-5)
    r_auto = SparseReranker(FrozenEstimator(auto), n_candidates=20, random_state=0).fit(X[:1200], labels[:1200])
    r_plain = SparseReranker(FrozenEstimator(plain), n_candidates=20, random_state=0).fit(W[:1200], labels[:1200])
    for u, v in zip(r_auto.candidate_scores(X[1200:1260]), r_plain.candidate_scores(W[1200:1260]), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)
