"""The vectorised LIBLINEAR trainer (skelias._liblinear): equal to one LIBLINEAR call per label."""

import numpy as np
import pytest
import scipy.sparse as sp
from liblinear.liblinearutil import train

from skelias._liblinear import train_label_classifiers


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


def test_seeded_training_is_identical_for_any_n_jobs_and_chunking(monkeypatch):
    """One C-rand seed per label (and processes when parallel): the weights depend on random_state only."""
    import skelias._liblinear as lib

    n, D, L = 600, 80, 24
    X = sp.random(n, D, density=0.1, random_state=1, format="csr", dtype=np.float32)
    Y = sp.random(n, L, density=0.08, random_state=2, format="csr", dtype=np.float32)
    Y.data[:] = 1
    cand = sp.random(n, L, density=0.3, random_state=3, format="csr", dtype=np.float32)
    kw = dict(loss="squared_hinge", tol=1e-3, random_state=0)
    W1, b1 = train_label_classifiers(X, Y, cand, n_jobs=1, **kw)
    W2, b2 = train_label_classifiers(X, Y, cand, n_jobs=2, **kw)
    one_label_chunks = lambda R, chunk_nnz, row_nnz: [np.array([j]) for j in range(R.shape[1])]
    monkeypatch.setattr(lib, "_chunks", one_label_chunks)
    W3, b3 = train_label_classifiers(X, Y, cand, n_jobs=2, **kw)
    for W, b in ((W2, b2), (W3, b3)):
        assert (W != W1).nnz == 0
        np.testing.assert_array_equal(b, b1)
