"""Column weights for a given sparse feature matrix (``feature_weighting`` of :class:`~skelias.ELIASClassifier`).

Raw texts get TF-IDF features from the model's vectorizer. A feature matrix passed in is used as given,
except that a binary bag of words (every non-zero of a row equal: 0/1 rows, or 0/1 rows scaled to unit
length) carries no term weighting at all; ``"auto"`` gives such a matrix inverse document frequencies,
the weighting its texts would have had.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

__all__ = ["fit_feature_idf", "has_binary_rows", "weight_features"]


def has_binary_rows(X) -> bool:
    """True when every row's stored non-zeros are equal (a 0/1 matrix, or one whose rows were then scaled).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from skelias._features import has_binary_rows
    >>> has_binary_rows(sp.csr_matrix([[0.5, 0.5, 0.0], [0.0, 0.0, 2.0]]))
    True
    >>> has_binary_rows(sp.csr_matrix([[0.2, 0.9, 0.0]]))
    False
    """
    X = sp.csr_matrix(X)
    if not X.has_canonical_format:  # summing duplicates in place would change the caller's matrix
        X = X.copy()
        X.sum_duplicates()
    nonempty = np.flatnonzero(np.diff(X.indptr))
    if nonempty.size == 0:
        return False
    starts = X.indptr[nonempty]
    hi = np.maximum.reduceat(X.data, starts)
    lo = np.minimum.reduceat(X.data, starts)
    return bool(np.all(lo > 0) and np.allclose(lo, hi, rtol=1e-5, atol=0.0))


def fit_feature_idf(X) -> np.ndarray:
    """Smoothed inverse document frequency of each column, ``ln((1 + n) / (1 + df)) + 1`` (as ``TfidfTransformer``).

    Parameters
    ----------
    X : sparse matrix (n_samples, n_features)
        Training rows.

    Returns
    -------
    idf : ndarray (n_features,) float32
    """
    X = sp.csc_matrix(X)
    X.eliminate_zeros()
    df = np.diff(X.indptr).astype(np.float64)
    return (np.log((1.0 + X.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)


def weight_features(X, idf) -> sp.csr_matrix:
    """``X · diag(idf)`` with each row scaled to unit L2 norm, as CSR float32.

    Parameters
    ----------
    X : sparse matrix or ndarray (n_samples, n_features)
    idf : ndarray (n_features,)

    Returns
    -------
    sparse matrix (n_samples, n_features), CSR float32
    """
    X = sp.csr_matrix(X, dtype=np.float32)
    if X.shape[1] != idf.shape[0]:
        raise ValueError(f"X has {X.shape[1]} features, but the model was fitted on {idf.shape[0]}.")
    W = sp.csr_matrix((X.data * idf[X.indices], X.indices, X.indptr), shape=X.shape)
    return normalize(W, copy=False).astype(np.float32, copy=False)
