"""Type aliases of the public API's inputs and outputs (annotations only; nothing here is checked at run time)."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

import numpy as np
import scipy.sparse as sp

#: A feature matrix: dense (n_samples, n_features) or any SciPy sparse matrix/array.
MatrixLike = np.ndarray | sp.spmatrix | sp.sparray
#: ``X``: raw documents (a sequence of str) or a feature matrix.
InputLike = Sequence[str] | MatrixLike
#: ``y``: label collections per row, one label per row (1-D), or an indicator matrix (n_samples, n_labels).
TargetLike = Sequence[Collection[Hashable]] | Sequence[Hashable] | np.ndarray | sp.spmatrix | sp.sparray
#: What ``predict`` returns: the form of the fitted ``y``.
PredictOutput = list | np.ndarray | sp.csr_matrix
#: What ``predict_topk`` returns: (labels, scores), or a CSR score matrix with ``as_csr=True``.
TopKOutput = tuple[np.ndarray, np.ndarray] | sp.csr_matrix
#: Scores of every label: dense or CSR (n_samples, n_labels).
ScoreMatrix = np.ndarray | sp.csr_matrix
