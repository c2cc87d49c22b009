import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from skelias import LabelIndexer, check_label_matrix
from skelias._labels import to_common_label_space


def test_string_labels_roundtrip_duplicates_and_empty_rows():
    li = LabelIndexer().fit([["b", "a", "a"], [], ["c"]])
    np.testing.assert_array_equal(li.classes_, ["a", "b", "c"])
    Y = li.transform([["b", "a", "a"], [], ["c", "c"]])
    assert Y.dtype == np.float32 and sp.isspmatrix_csr(Y)
    np.testing.assert_array_equal(Y.toarray(), [[1, 1, 0], [0, 0, 0], [0, 0, 1]])
    assert li.inverse_transform_matrix(Y) == [["a", "b"], [], ["c"]]
    labels = li.inverse_transform(np.array([[2, 0, -1]]))
    assert labels.tolist() == [["c", "a", None]]


def test_int_labels_and_extra_classes():
    li = LabelIndexer(classes=[7, 9]).fit([[3, 1], [1]])
    np.testing.assert_array_equal(li.classes_, [1, 3, 7, 9])
    Y = li.transform([[9], [3, 1]])
    np.testing.assert_array_equal(Y.toarray(), [[0, 0, 0, 1], [1, 1, 0, 0]])
    assert li.inverse_transform(np.array([1, -1])).tolist() == [3, -1]


def test_unknown_labels_warn_or_raise():
    li = LabelIndexer().fit([["a"], ["b"]])
    with pytest.warns(UserWarning, match="1 label\\(s\\) not in the fitted label space"):
        Y = li.transform([["a", "zzz"]])
    np.testing.assert_array_equal(Y.toarray(), [[1, 0]])
    with pytest.raises(ValueError, match="not in the fitted label space"):
        LabelIndexer(handle_unknown="error").fit([["a"]]).transform([["q"]])


def test_indicator_matrix_is_canonicalised():
    Y = sp.coo_matrix(([2.0, 0.0, 1.0, 1.0], ([0, 0, 1, 1], [2, 1, 0, 0])), shape=(2, 3))
    C = check_label_matrix(Y)
    assert sp.isspmatrix_csr(C) and C.dtype == np.float32 and C.has_sorted_indices
    np.testing.assert_array_equal(C.toarray(), [[0, 0, 1], [1, 0, 0]])
    li = LabelIndexer().fit(np.array([[0, 1, 0], [0, 0, 0]]))
    np.testing.assert_array_equal(li.classes_, [0, 1, 2])  # never-seen labels stay in the label space
    assert li.transform(Y).nnz == 2


@pytest.mark.parametrize(
    "y, exc, match",
    [
        ([], ValueError, "0 rows"),
        ([[], []], ValueError, "no label at all"),
        (["a b", "c"], TypeError, "is a string"),
        ([["a", 1]], TypeError, "mixes string and non-string"),
        ([[True]], TypeError, "must be str or numbers"),
        ([[float("nan")]], ValueError, "NaN"),
        ("abc", TypeError, "sequence of label collections"),
        (sp.csr_matrix((0, 3)), ValueError, "0 rows"),
        (sp.csr_matrix((2, 0)), ValueError, "0 columns"),
        (np.array([[1.0, -1.0]]), ValueError, "negative"),
        (np.array([[1.0, np.nan]]), ValueError, "NaN"),
        (None, ValueError, "requires y to be passed"),
    ],
)
def test_bad_targets(y, exc, match):
    with pytest.raises(exc, match=match):
        LabelIndexer().fit(y)


def test_single_label_targets():
    li = LabelIndexer().fit(np.array(["b", "a", "b"]))
    np.testing.assert_array_equal(li.transform(np.array(["b", "a"])).toarray(), [[0, 1], [1, 0]])
    li = LabelIndexer().fit([3, 1, 3])
    np.testing.assert_array_equal(li.classes_, [1, 3])
    assert li.transform([1]).toarray().tolist() == [[1, 0]]


def test_bad_params_and_transform_mismatch():
    with pytest.raises(ValueError, match="handle_unknown"):
        LabelIndexer(handle_unknown="drop").fit([["a"]])
    li = LabelIndexer().fit([["a"]])
    with pytest.raises(TypeError, match="fitted on label collections"):
        li.transform(sp.csr_matrix(np.ones((1, 1))))
    with pytest.raises(TypeError, match="numeric labels"):
        li.transform([[1]])
    with pytest.raises(ValueError, match=r"\[-1, 1\)"):
        li.inverse_transform([5])
    with pytest.raises(ValueError, match="classes cannot be given"):
        LabelIndexer(classes=[0]).fit(np.eye(2))


def test_common_label_space_counts_unknown_test_labels():
    Y, idx, classes = to_common_label_space([["a", "new"], ["b"]], np.array([["a", None], ["a", "b"]], dtype=object))
    assert list(classes) == ["a", "b", "new"]
    np.testing.assert_array_equal(Y.toarray(), [[1, 0, 1], [0, 1, 0]])
    np.testing.assert_array_equal(idx, [[0, -1], [0, 1]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Y, idx, _ = to_common_label_space([[1], [2]], np.array([[1, -1], [3, 2]]))
    np.testing.assert_array_equal(idx, [[0, -1], [2, 1]])


def test_target_forms_and_what_predict_returns_for_each(cooking):
    import warnings

    from skelias import KNNLabelClassifier
    from skelias._labels import target_kind

    texts, labels = cooking
    single = np.array([row[0] if row else "none" for row in labels[:300]], dtype=object)
    Y = LabelIndexer().fit_transform(labels[:300])
    assert [target_kind(y) for y in (Y, Y.toarray(), single, labels[:300], [1, 2])] == [
        "sparse", "dense", "1d", "collections", "1d"]
    knn = KNNLabelClassifier(n_neighbors=5)
    assert knn.fit(texts[:300], single).predict(texts[300:310]).shape == (10,)  # one label per row
    assert sp.issparse(knn.fit(texts[:300], Y).predict(texts[300:310]))
    dense = knn.fit(texts[:300], Y.toarray()).predict(texts[300:310])
    assert isinstance(dense, np.ndarray) and dense.shape == (10, Y.shape[1])
    assert isinstance(knn.fit(texts[:300], labels[:300]).predict(texts[300:310])[0], list)
    with pytest.raises(ValueError, match="Unknown label type"):
        LabelIndexer().fit(np.array([0.5, 1.25, 2.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        column = knn.fit(texts[:300], single[:, None]).predict(texts[300:310])
    assert column.shape == (10,) and any("column-vector" in str(w.message) for w in caught)
