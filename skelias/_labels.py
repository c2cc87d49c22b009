"""Label handling: one internal representation for multi-label targets.

Every estimator in skelias works internally on a **label indicator matrix**:
a ``scipy.sparse.csr_matrix`` of shape ``(n_samples, n_labels)`` and dtype
``float32`` whose stored values are all ``1.0``, with sorted column indices and
no explicit zeros. This module converts what users pass as ``Y`` into that form
and maps predicted column indices back to label names.

Accepted forms of ``Y``
-----------------------
* a scipy sparse matrix (any format) or a 2-D numpy array: an indicator matrix.
  Every non-zero entry marks a relevant label (graded relevance is binarised);
  negative or non-finite entries are rejected. The label space is
  ``range(n_columns)``.
* a sequence of label collections (lists, tuples, sets, arrays) of ``str`` or
  of ``int``, one collection per sample, e.g. ``[["pasta", "sauce"], ["bread"]]``.
  The label space is the sorted union of the labels seen by :meth:`LabelIndexer.fit`
  (plus any ``classes`` given explicitly).
* a single-label (multi-class) target: a 1-D array of labels, or a list of
  ``int``, one label per sample. A list of strings is rejected (it usually
  means label strings that were not split); pass ``np.asarray(labels)`` to
  mean one label per row.

Defined behaviour
-----------------
* **Duplicate labels in a row** count once.
* **Rows with no labels** are kept as all-zero rows.
* **Labels that never occur in training** but are part of the label space
  (all-zero columns of an indicator matrix, or extra ``classes``) stay in the
  label space: they can be predicted, they simply have no positive example.
* **Unknown labels at transform time** (not in ``classes_``) are dropped with a
  ``UserWarning`` by default (``handle_unknown="ignore"``) or raise a
  ``ValueError`` (``handle_unknown="error"``). Metrics computed through the
  skelias scorers never drop them: they count as misses in recall.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

__all__ = ["LabelIndexer", "as_targets", "check_label_matrix", "is_label_matrix", "target_kind"]


def _as_array_if_arraylike(y):
    """Array-likes that are not lists (pandas objects, wrappers with __array__) become ndarrays."""
    if not isinstance(y, (list, tuple, np.ndarray)) and not sp.issparse(y) and hasattr(y, "__array__"):
        return np.asarray(y)
    return y


def as_targets(y):
    """``y`` ready to be read more than once: an iterator (e.g. a generator of label lists) becomes a list.

    Array-likes such as a pandas Series become ndarrays; sequences, arrays and sparse matrices are returned as
    they are.
    """
    y = _as_array_if_arraylike(y)
    if isinstance(y, Iterator):
        return list(y)
    if isinstance(y, np.ndarray) and y.ndim == 2 and y.shape[1] == 1:  # a column vector of labels
        from sklearn.exceptions import DataConversionWarning

        warnings.warn("A column-vector y was passed when a 1d array was expected; it is read as one label per "
                      "row. Please change the shape of y to (n_samples,).", DataConversionWarning, stacklevel=3)
        return y.ravel()
    return y


def target_kind(y):
    """How ``y`` gives the labels: ``"sparse"``/``"dense"`` (an indicator matrix), ``"1d"`` (one label per row)
    or ``"collections"``.

    ``predict`` answers in the same form (see :class:`skelias._base.TopKOutputMixin`).
    """
    y = _as_array_if_arraylike(y)
    if is_label_matrix(y):
        return "sparse" if sp.issparse(y) else "dense"
    if isinstance(y, np.ndarray) and y.ndim == 1 and not (y.dtype == object and y.size and isinstance(
            y[0], (list, tuple, set, frozenset, np.ndarray))):
        return "1d"
    if isinstance(y, (list, tuple)) and y and all(
            isinstance(r, (numbers.Integral, np.integer)) and not isinstance(r, bool) for r in y):
        return "1d"
    return "collections"


def is_label_matrix(Y) -> bool:
    """Return True when ``Y`` is an indicator matrix (sparse or 2-D ndarray)."""
    Y = _as_array_if_arraylike(Y)
    return sp.issparse(Y) or (isinstance(Y, np.ndarray) and Y.ndim == 2 and Y.dtype != object)


def check_label_matrix(Y, *, n_labels=None, allow_empty_rows=True, name="Y"):
    """Validate an indicator matrix and return it as canonical CSR float32.

    Parameters
    ----------
    Y : sparse matrix or ndarray of shape (n_samples, n_labels)
        Indicator matrix. Non-zero entries mark relevant labels.
    n_labels : int, optional
        Expected number of columns.
    allow_empty_rows : bool, default=True
        Accepted for symmetry with estimators; rows with no labels are always
        kept (all-zero rows).
    name : str, default="Y"
        Name used in error messages.

    Returns
    -------
    Y : csr_matrix of shape (n_samples, n_labels), dtype float32
        Sorted indices, no duplicates, no explicit zeros, all values 1.0.

    Raises
    ------
    ValueError
        If ``Y`` is not 2-D, has no rows or columns, holds negative, NaN or
        infinite values, or has the wrong number of columns.
    TypeError
        If ``Y`` is neither a sparse matrix nor a numeric 2-D array.
    """
    if sp.issparse(Y):
        Y = sp.csr_matrix(Y, copy=True)
    elif isinstance(Y, np.ndarray):
        if Y.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_labels); got an array of shape {Y.shape}.")
        if Y.dtype == object or not np.issubdtype(Y.dtype, np.number) and Y.dtype != bool:
            raise TypeError(f"{name} must be a numeric indicator matrix; got dtype {Y.dtype}.")
        Y = sp.csr_matrix(Y)
    else:
        raise TypeError(
            f"{name} must be a scipy sparse indicator matrix or a 2-D ndarray; got {type(Y).__name__}."
        )
    if Y.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 rows.")
    if Y.shape[1] == 0:
        raise ValueError(f"{name} has 0 columns: there is no label to learn.")
    if n_labels is not None and Y.shape[1] != n_labels:
        raise ValueError(f"{name} has {Y.shape[1]} label columns, expected {n_labels}.")
    if Y.dtype == bool:
        Y = Y.astype(np.float32)
    data = Y.data
    if data.size:
        if not np.all(np.isfinite(data)):
            raise ValueError(f"{name} contains NaN or infinite values.")
        if np.any(data < 0):
            raise ValueError(f"{name} contains negative values; an indicator matrix holds 0/1 (non-zero = relevant).")
    Y.sum_duplicates()
    Y.eliminate_zeros()
    Y = Y.astype(np.float32)
    Y.data[:] = 1.0
    Y.sort_indices()
    return Y


def _iter_rows(y, name):
    """Validate a sequence of label collections and return it as a list of rows.

    A 1-D array, or a list of int, is a single-label target: one label per row.
    """
    if y is None:
        raise ValueError(f"This estimator requires y to be passed, but the target y is None ({name}).")
    if isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype == object and y.size and all(
            isinstance(r, (list, tuple, set, frozenset, np.ndarray)) for r in y):
        return list(y)  # e.g. a pandas Series of label lists
    if isinstance(y, np.ndarray) and y.ndim == 1:
        if y.dtype.kind == "c":
            raise ValueError(f"{name}: complex labels are not supported.")
        return [[v.item() if isinstance(v, np.generic) else v] for v in y]
    if isinstance(y, (str, bytes)) or not isinstance(y, Iterable):
        raise TypeError(
            f"{name} must be an indicator matrix or a sequence of label collections "
            f"(e.g. [['a', 'b'], ['c']]); got {type(y).__name__}."
        )
    rows = list(y)
    if len(rows) == 0:
        raise ValueError(f"{name} is empty: it has 0 rows.")
    if all(isinstance(r, (numbers.Integral, np.integer)) and not isinstance(r, bool) for r in rows):
        return [[int(r)] for r in rows]
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)):
            raise TypeError(
                f"{name}[{i}] is a string ({row[:40]!r}); each row must be a collection of labels. "
                "Split label strings first, e.g. [s.split() for s in lines]."
            )
        if not isinstance(row, Iterable):
            raise TypeError(
                f"{name}[{i}] is a {type(row).__name__}; each row must be a collection of labels "
                "(list, tuple, set or 1-D array)."
            )
    return rows


def _flatten(rows, name):
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    flat = [lab for r in rows for lab in r]
    if not flat:
        return lengths, np.empty(0, dtype=object), None
    has_str = any(isinstance(v, str) for v in flat)
    if has_str:
        if not all(isinstance(v, str) for v in flat):
            raise TypeError(f"{name} mixes string and non-string labels; use one kind of label.")
        return lengths, np.asarray(flat, dtype=object), "str"
    bad = next((v for v in flat if not isinstance(v, numbers.Real) or isinstance(v, (bool, np.bool_))), None)
    if bad is not None:
        raise TypeError(f"{name} labels must be str or numbers; found {bad!r} of type {type(bad).__name__}.")
    if all(isinstance(v, (numbers.Integral, np.integer)) for v in flat):
        return lengths, np.asarray(flat, dtype=np.int64), "int"
    arr = np.asarray(flat, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite labels.")
    if not np.all(arr == np.round(arr)):
        raise ValueError(f"Unknown label type: {name} holds non-integer numbers ({arr[arr != np.round(arr)][0]!r}), "
                         "a continuous target; labels must be strings or integers.")
    return lengths, arr, "num"


class LabelIndexer(TransformerMixin, BaseEstimator):
    """Map multi-label targets to a CSR float32 indicator matrix and back.

    A small sibling of :class:`sklearn.preprocessing.MultiLabelBinarizer` that
    always produces the skelias internal representation, accepts indicator
    matrices unchanged, and maps top-k column indices back to label names.

    Parameters
    ----------
    classes : array-like of shape (n_classes,), default=None
        Labels to include in the label space even if they never occur in the
        ``y`` given to :meth:`fit`. When ``None``, the label space is the sorted
        union of the labels seen in :meth:`fit`.
    handle_unknown : {"ignore", "error"}, default="ignore"
        What :meth:`transform` does with labels outside ``classes_``:
        drop them with a ``UserWarning``, or raise a ``ValueError``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_labels,)
        The label of each column, sorted. ``np.arange(n_labels)`` when fitted on
        an indicator matrix.
    from_indicator_ : bool
        True when fitted on an indicator matrix (labels are column indices).

    Examples
    --------
    >>> from skelias import LabelIndexer
    >>> li = LabelIndexer().fit([["pasta", "sauce"], ["bread"], []])
    >>> li.classes_
    array(['bread', 'pasta', 'sauce'], dtype=object)
    >>> li.transform([["sauce", "sauce"], ["bread"]]).toarray()
    array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """

    def __init__(self, classes=None, handle_unknown="ignore"):
        self.classes = classes
        self.handle_unknown = handle_unknown

    def fit(self, y):
        """Learn the label space.

        Parameters
        ----------
        y : sparse matrix / ndarray of shape (n_samples, n_labels), or sequence of label collections
            The labels whose union (plus ``classes``) becomes the label space.

        Returns
        -------
        self : LabelIndexer
        """
        if self.handle_unknown not in ("ignore", "error"):
            raise ValueError(f"handle_unknown must be 'ignore' or 'error'; got {self.handle_unknown!r}.")
        y = _as_array_if_arraylike(y)
        if is_label_matrix(y):
            Y = check_label_matrix(y)
            if self.classes is not None:
                raise ValueError("classes cannot be given when y is an indicator matrix (its columns are the labels).")
            self.classes_ = np.arange(Y.shape[1])
            self.from_indicator_ = True
            return self
        rows = _iter_rows(y, "Y")
        _, flat, kind = _flatten(rows, "Y")
        if self.classes is not None:
            extra = list(self.classes)
            _, extra_flat, extra_kind = _flatten([extra], "classes")
            if kind is not None and extra_kind is not None and extra_kind != kind:
                raise TypeError("classes and Y must hold the same kind of labels (all str or all int).")
            kind = kind or extra_kind
            flat = np.concatenate([flat.astype(object), extra_flat.astype(object)]) if kind == "str" else (
                np.concatenate([flat, extra_flat])
            )
        if flat.size == 0:
            raise ValueError("Y holds no label at all: every row is empty, so there is no label space to learn.")
        classes = np.unique(flat)
        self.classes_ = classes.astype(object) if kind == "str" else classes
        self.from_indicator_ = False
        return self

    def transform(self, y):
        """Convert ``y`` to the CSR float32 indicator matrix of the fitted label space.

        Parameters
        ----------
        y : sparse matrix / ndarray of shape (n_samples, n_labels), or sequence of label collections
            Labels in any of the accepted forms; labels outside the fitted space follow ``handle_unknown``.

        Returns
        -------
        Y : csr_matrix of shape (n_samples, n_labels), dtype float32
            One row per sample, columns in the order of ``classes_``.
        """
        check_is_fitted(self, "classes_")
        n_labels = len(self.classes_)
        y = _as_array_if_arraylike(y)
        if is_label_matrix(y):
            if not self.from_indicator_:
                raise TypeError(
                    "This LabelIndexer was fitted on label collections; pass label collections, "
                    "not an indicator matrix."
                )
            return check_label_matrix(y, n_labels=n_labels)
        rows = _iter_rows(y, "Y")
        lengths, flat, kind = _flatten(rows, "Y")
        n = len(rows)
        if flat.size == 0:
            return sp.csr_matrix((n, n_labels), dtype=np.float32)
        if self.from_indicator_:
            if kind != "int":
                raise TypeError("This LabelIndexer was fitted on an indicator matrix; labels must be column indices.")
            cols = flat
            known = (cols >= 0) & (cols < n_labels)
        else:
            if (kind == "str") != (self.classes_.dtype == object):
                raise TypeError(
                    f"Y holds {'str' if kind == 'str' else 'numeric'} labels but the label space was fitted on "
                    f"{'str' if self.classes_.dtype == object else 'numeric'} labels."
                )
            cols = np.searchsorted(self.classes_, flat)
            cols_c = np.minimum(cols, n_labels - 1)
            known = self.classes_[cols_c] == flat
            cols = cols_c
        if not np.all(known):
            unknown = np.unique(flat[~known])
            msg = f"{unknown.size} label(s) not in the fitted label space, e.g. {list(unknown[:5])}"
            if self.handle_unknown == "error":
                raise ValueError(msg + ".")
            warnings.warn(msg + "; they are ignored.", UserWarning, stacklevel=2)
        row_ids = np.repeat(np.arange(n), lengths)
        Y = sp.csr_matrix(
            (np.ones(int(known.sum()), dtype=np.float32), (row_ids[known], np.asarray(cols[known], dtype=np.int64))),
            shape=(n, n_labels),
        )
        Y.sum_duplicates()
        Y.data[:] = 1.0
        return Y

    def inverse_transform(self, indices):
        """Map column indices to labels.

        Parameters
        ----------
        indices : array-like of int, any shape
            Column indices; ``-1`` marks padding (no prediction).

        Returns
        -------
        labels : ndarray of the same shape
            ``classes_[indices]``; padding becomes ``None`` for string labels and
            ``-1`` for integer labels.
        """
        if not hasattr(self, "classes_"):
            check_is_fitted(self, "classes_")
        indices = np.asarray(indices)
        if not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"indices must be integers; got dtype {indices.dtype}.")
        if indices.size and (indices.max() >= len(self.classes_) or indices.min() < -1):
            raise ValueError(f"indices must lie in [-1, {len(self.classes_)}); got range [{indices.min()}, {indices.max()}].")
        pad = indices < 0
        out = self.classes_[np.where(pad, 0, indices)]
        if pad.any():
            out = out.astype(object) if self.classes_.dtype == object else out.copy()
            out[pad] = None if self.classes_.dtype == object else -1
        return out

    def indices_of(self, labels):
        """Column indices of ``labels`` (any shape; ``None``/``-1`` padding and unknown labels give -1)."""
        check_is_fitted(self, "classes_")
        labels = np.asarray(labels, dtype=object if self.classes_.dtype == object else None)
        flat = labels.ravel()
        if self.from_indicator_ or self.classes_.dtype != object:
            flat = np.asarray(flat, dtype=np.int64) if not self.from_indicator_ else flat.astype(np.int64)
            if self.from_indicator_:
                return np.where((flat >= 0) & (flat < len(self.classes_)), flat, -1).reshape(labels.shape)
            pad = np.zeros(flat.shape, bool)
        else:
            pad = np.array([v is None for v in flat], dtype=bool)
            flat = np.where(pad, self.classes_[0], flat)
        pos = np.minimum(np.searchsorted(self.classes_, flat), len(self.classes_) - 1)
        ok = (self.classes_[pos] == flat) & ~pad
        return np.where(ok, pos, -1).astype(np.int64).reshape(labels.shape)

    def inverse_transform_matrix(self, Y) -> list:
        """Convert an indicator matrix back to a list of label lists (one per row)."""
        check_is_fitted(self, "classes_")
        Y = sp.csr_matrix(Y)
        if Y.shape[1] != len(self.classes_):
            raise ValueError(f"Y has {Y.shape[1]} columns, expected {len(self.classes_)}.")
        Y.eliminate_zeros()
        labels = self.classes_[Y.indices]
        return [list(labels[Y.indptr[i] : Y.indptr[i + 1]]) for i in range(Y.shape[0])]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        return tags


def to_common_label_space(y_true, pred_labels, classes=None):
    """Express label collections and predicted labels as column indices of one label space.

    Used by the scorers: ``y_true`` is a sequence of label collections and
    ``pred_labels`` an (n, k) array of predicted label values (``None``, or
    ``-1`` for integer labels, marks padding). The label space is the union of
    both, so labels unknown to the model still count as relevant (they can only
    be missed).

    Parameters
    ----------
    y_true : sequence of label collections, length n
    pred_labels : array-like of shape (n, k)
    classes : array-like, optional
        Further labels to include in the label space (e.g. the model's ``classes_``).

    Returns
    -------
    Y : csr_matrix of shape (n, n_labels), float32
    indices : ndarray of shape (n, k), int64, with -1 as padding
    classes : ndarray of shape (n_labels,)
        The label of each column of ``Y``.
    """
    rows = _iter_rows(y_true, "y")
    _, flat, kind = _flatten(rows, "y")
    pred = np.asarray(pred_labels, dtype=object)
    if pred.ndim != 2 or pred.shape[0] != len(rows):
        raise ValueError(f"predicted labels must have shape ({len(rows)}, k); got {pred.shape}.")
    is_none = np.frompyfunc(lambda v: v is None, 1, 1)(pred).astype(bool)
    pad = is_none if kind == "str" else is_none | (pred == -1)
    pvals = list(pred[~pad])
    _, pflat, pkind = _flatten([pvals], "predicted labels")
    if kind is not None and pkind is not None and (pkind == "str") != (kind == "str"):
        raise TypeError(f"y holds {kind} labels but the estimator predicted {pkind} labels.")
    extra = [] if classes is None else list(classes)
    everything = list(flat) + pvals + extra
    if not everything:
        return sp.csr_matrix((len(rows), 1), dtype=np.float32), np.full(pred.shape, -1, np.int64), np.array([None])
    indexer = LabelIndexer().fit([everything])
    Y = indexer.transform(rows)
    idx = np.full(pred.shape, -1, dtype=np.int64)
    if pvals:
        idx[~pad] = np.searchsorted(indexer.classes_, pflat)
    return Y, idx, indexer.classes_
