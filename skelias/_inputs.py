"""Model inputs of :class:`~skelias.ELIASClassifier`: row-selectable containers for each kind of encoder input.

A model input supports ``X.shape`` (rows first) and ``X[rows]`` like a matrix, and provides the
feature blocks that the stage-1 clustering runs PIFA on (:func:`pifa_blocks`, paper Eq. 14–15):

========================  ======================================  ===============================
input                     encoder                                 PIFA blocks
========================  ======================================  ===============================
CSR matrix                TF-IDF bag                              the matrix
ndarray                   dense MLP                               the array
:class:`HybridFeatures`   hybrid (frozen pretrained half)         TF-IDF and the embeddings
:class:`HybridTexts`      hybrid (fine-tuned pretrained half)     TF-IDF and frozen embeddings
:class:`TextRows`         fine-tuned transformer                  TF-IDF of the texts
========================  ======================================  ===============================
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["HybridFeatures", "HybridTexts", "TextRows", "pifa_blocks"]


class TextRows:
    """A list of documents that supports numpy-style row selection (``rows[idx]``) like a matrix."""

    def __init__(self, texts):
        self.texts = list(texts)

    @property
    def shape(self):
        return (len(self.texts), 0)

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, rows):
        if isinstance(rows, slice):
            return TextRows(self.texts[rows])
        return TextRows([self.texts[i] for i in np.asarray(rows).ravel()])

    def pifa_blocks(self, vectorizer, embed):
        """The texts' TF-IDF (``vectorizer.transform``): the transformer's own features do not exist yet."""
        return vectorizer.transform(self.texts), None


class _PairedRows:
    """TF-IDF rows (CSR, n × D) and a second, row-aligned view of the same documents (``other``)."""

    _other = "other"

    def __init__(self, sparse, other):
        n_other = len(other) if not hasattr(other, "shape") else other.shape[0]
        if sparse.shape[0] != n_other:
            raise ValueError(f"{sparse.shape[0]} TF-IDF rows but {n_other} {self._other}.")
        self.sparse = sp.csr_matrix(sparse, dtype=np.float32)

    @property
    def shape(self):
        return (self.sparse.shape[0], self.sparse.shape[1])

    def __getitem__(self, rows):
        return type(self)(self.sparse[rows], getattr(self, self._attribute)[rows])


class HybridFeatures(_PairedRows):
    """TF-IDF rows (CSR, n × D) and frozen pretrained embeddings (n × p) of the same documents."""

    _other, _attribute = "embeddings", "dense"

    def __init__(self, sparse, dense):
        super().__init__(sparse, dense)
        self.dense = np.ascontiguousarray(dense, dtype=np.float32)

    def pifa_blocks(self, vectorizer, embed):
        """PIFA over [TF-IDF, pretrained embedding] (Eq. 14–15)."""
        return self.sparse, self.dense


class HybridTexts(_PairedRows):
    """TF-IDF rows (CSR, n × D) and the raw texts of the same documents (hybrid encoder, fine-tuned)."""

    _other, _attribute = "texts", "texts"

    def __init__(self, sparse, texts):
        super().__init__(sparse, texts)
        self.texts = texts if isinstance(texts, TextRows) else TextRows(texts)

    def pifa_blocks(self, vectorizer, embed):
        """PIFA over [TF-IDF, frozen pretrained embedding] (``embed(texts)``), as for the frozen hybrid."""
        return self.sparse, embed(self.texts.texts)


def pifa_blocks(X, vectorizer=None, embed=None):
    """(sparse block or None, dense block or None) of a model input for :func:`skelias.cluster.cluster_labels`.

    Parameters
    ----------
    X : csr_matrix, ndarray, or a container of this module
    vectorizer : fitted vectorizer, optional
        Turns raw texts into TF-IDF (:class:`TextRows`).
    embed : callable, optional
        ``embed(list_of_str) -> ndarray (n, p)``: frozen pretrained embeddings (:class:`HybridTexts`).
    """
    if hasattr(X, "pifa_blocks"):
        return X.pifa_blocks(vectorizer, embed)
    return (X, None) if sp.issparse(X) else (None, X)
