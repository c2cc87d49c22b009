import gzip

import numpy as np
import pytest
import scipy.sparse as sp

from skelias.datasets import (
    dump_xmc_sparse,
    load_cooking_stackexchange,
    load_dataset,
    load_text_dataset,
    load_xmc_sparse,
)


def test_sparse_roundtrip_with_empty_rows(tmp_path):
    X = sp.csr_matrix(np.array([[0.5, 0, 1.25], [0, 0, 0], [0, 2.0, 0], [0, 0, 0]], dtype=np.float32))
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    for header in (True, False):
        p = tmp_path / f"data{header}.txt"
        if not header:  # a trailing empty row needs the header; interior ones survive without it
            with pytest.raises(ValueError, match="header=True"):
                dump_xmc_sparse(p, X, Y, header=False)
            X, Y = X[[0, 1, 3, 2]], Y[[0, 1, 3, 2]]
        dump_xmc_sparse(p, X, Y, header=header)
        kw = {} if header else {"n_features": 3, "n_labels": 4}
        X2, Y2 = load_xmc_sparse(p, **kw)
        assert X2.dtype == np.float32 and Y2.dtype == np.float32
        np.testing.assert_allclose(X2.toarray(), X.toarray())
        np.testing.assert_array_equal(Y2.toarray(), Y.toarray())


def test_sparse_format_details(tmp_path):
    p = tmp_path / "x.txt.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("3 5 4\n2,0,2 1:0.5 4:1\n 3:2.0\n1\n")
    X, Y = load_xmc_sparse(p)
    assert X.shape == (3, 5) and Y.shape == (3, 4)
    np.testing.assert_array_equal(Y.toarray(), [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]])  # duplicate label once
    assert X[1, 3] == 2.0 and X[2].nnz == 0


@pytest.mark.parametrize(
    "content, match",
    [
        ("2 3 2\n0 1:0.5\n", "header announces 2 rows"),
        ("1 3 2\n0 7:0.5\n", "exceeds the header"),
        ("0 1-0.5\n", "line 1"),
        ("0 1:0.5\n1,x 2:1\n", "line 2"),
        ("0 1:abc\n", "line 1"),
        ("-1 1:1\n", "line 1"),
    ],
)
def test_malformed_sparse_files_name_file_and_line(tmp_path, content, match):
    p = tmp_path / "bad.txt"
    p.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        load_xmc_sparse(p)
    assert "bad.txt" in str(err.value)


def test_binary_file_and_missing_file(tmp_path):
    p = tmp_path / "model.bin"
    p.write_bytes(b"\x80\x81\xfe\xff" * 10)
    with pytest.raises(ValueError, match="model.bin"):
        load_xmc_sparse(p)
    with pytest.raises(FileNotFoundError):
        load_xmc_sparse(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="n_labels=1 but"):
        q = tmp_path / "ok.txt"
        q.write_text("3 0:1\n")
        load_xmc_sparse(q, n_labels=1)


def test_text_directories(tmp_path):
    (tmp_path / "train_texts.txt").write_text("first doc\nsecond doc\n")
    with gzip.open(tmp_path / "train_labels.txt.gz", "wt") as fh:
        fh.write("a b\n\n")
    texts, labels = load_text_dataset(tmp_path)
    assert texts == ["first doc", "second doc"] and labels == [["a", "b"], []]
    assert load_dataset(tmp_path)[0] == texts
    (tmp_path / "test_texts.txt").write_text("x\ny\n")
    (tmp_path / "test_labels.txt").write_text("a\n")
    with pytest.raises(ValueError, match="has 2 lines but .* has 1"):
        load_text_dataset(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="missing dev_texts"):
        load_text_dataset(tmp_path, "dev")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="unknown dataset layout"):
        load_dataset(empty)


def test_embedded_cooking_dataset():
    texts, labels = load_cooking_stackexchange("train")
    test_texts, _test_labels = load_cooking_stackexchange("test")
    assert len(texts) == len(labels) == 12404 and len(test_texts) == 3000
    assert labels[0] == ["sauce", "cheese"]
    assert len({l for row in labels for l in row}) == 735
    with pytest.raises(ValueError, match="split"):
        load_cooking_stackexchange("dev")


def test_shared_datasets(shared_datasets):
    X, Y = load_dataset(shared_datasets / "bibtex")
    assert X.shape == (4880, 1836) and Y.shape == (4880, 159)
    assert Y.nnz == pytest.approx(2.380 * 4880, rel=1e-3)
    texts, labels = load_dataset(shared_datasets / "cooking-stackexchange", "test")
    assert (texts, labels) == load_cooking_stackexchange("test")


def test_sparse_loader_rejects_what_it_cannot_read_sensibly(tmp_path):
    p = tmp_path / "trailing.txt"
    p.write_text("1 0:1.0\n\n0 2:0.5\n\n\n")  # an interior empty row, then two trailing blank lines
    X, Y = load_xmc_sparse(p)
    assert X.shape == (3, 3) and Y.shape == (3, 2) and X[1].nnz == 0
    bad = tmp_path / "data.txt.gz"
    bad.write_bytes(b"plain text, not gzip")
    with pytest.raises(ValueError, match="data.txt.gz: not a valid gzip file"):
        load_xmc_sparse(bad)
    huge = tmp_path / "huge.txt"
    huge.write_text("0 1000000000000:1.0\n")
    with pytest.raises(ValueError, match="pass n_features= explicitly"):
        load_xmc_sparse(huge)
    assert load_xmc_sparse(huge, n_features=10**12 + 1)[0].shape == (1, 10**12 + 1)
