"""Input and parameter validation shared by the skelias estimators.

``X`` may be a sequence of raw texts (``str``), a scipy sparse feature matrix or
a dense numeric array; these helpers tell them apart and reject bad input with
a ``TypeError``/``ValueError`` a user can act on, before any training starts.

Estimator parameters are declared in each class's ``_parameter_constraints`` with
scikit-learn's constraint objects (re-exported here, so that the package depends on
scikit-learn's parameter-validation module in one place) and checked by one call to
``BaseEstimator._validate_params`` at the start of ``fit``.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.utils._param_validation import HasMethods, Interval, RealNotInt, StrOptions
from sklearn.utils.validation import check_array

__all__ = [
    "SHORT_TEXT_CHARS",
    "HasMethods",
    "Interval",
    "RealNotInt",
    "StrOptions",
    "apply_vectorizer",
    "check_X",
    "check_features",
    "check_k",
    "check_n_rows",
    "check_texts",
    "default_vectorizer",
    "is_text_input",
    "n_validation_rows",
    "topk_to_csr",
    "topk_to_indicator",
    "validation_size_constraint",
]

#: ``validation_size``: None, a row count ≥ 1 or a fraction in (0, 1)
validation_size_constraint = [None, Interval(numbers.Integral, 1, None, closed="left"),
                              Interval(RealNotInt, 0, 1, closed="neither")]

#: a positive integer parameter (sizes, counts)
positive_int = Interval(numbers.Integral, 1, None, closed="left")

#: a strictly positive, finite real parameter (rates, multipliers)
positive_real = Interval(numbers.Real, 0, None, closed="neither")

#: a non-negative, finite real parameter
non_negative_real = Interval(numbers.Real, 0, None, closed="left")


def check_k(k, n_labels=None, name="k"):
    """Validate a top-k size: a positive int (and at most ``n_labels`` when given); return it as ``int``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer; got {k!r} of type {type(k).__name__}.")
    if k <= 0:
        raise ValueError(f"{name} must be a positive integer; got {k}.")
    if n_labels is not None and k > n_labels:
        raise ValueError(f"{name}={k} is larger than the number of labels ({n_labels}).")
    return int(k)


def n_validation_rows(validation_size, n_samples, *, max_fraction=None, needed_by="the validation split"):
    """Number of held-out rows for ``validation_size`` (an int, or a fraction of ``n_samples``).

    With ``max_fraction``, the count is capped at ``floor(max_fraction · n_samples)`` with a warning
    that gives the numbers used. At least one row must remain on each side of the split.
    """
    n_val = int(validation_size) if isinstance(validation_size, numbers.Integral) else round(
        validation_size * n_samples)
    if max_fraction is not None and n_val > int(max_fraction * n_samples):
        capped = int(max_fraction * n_samples)
        warnings.warn(f"validation_size={validation_size!r} asks for {n_val} of {n_samples} rows; "
                      f"{needed_by} uses {capped} (at most {max_fraction:g} of the data).", UserWarning, stacklevel=3)
        n_val = capped
    if not 0 < n_val < n_samples:
        raise ValueError(f"validation_size={validation_size!r} gives {n_val} validation rows out of {n_samples} "
                         f"samples; {needed_by} needs at least one row on each side.")
    return n_val


def is_text_input(X) -> bool:
    """True when ``X`` looks like a sequence of documents rather than a feature matrix."""
    if sp.issparse(X):
        return False
    if not isinstance(X, (list, tuple, np.ndarray, str, bytes)) and hasattr(X, "__array__"):
        X = np.asarray(X)  # pandas objects, array wrappers
    if isinstance(X, np.ndarray):
        return X.dtype.kind in "OUS" and X.ndim == 1
    if isinstance(X, (str, bytes)):
        return True
    if hasattr(X, "__len__") and not hasattr(X, "shape"):
        # a list of documents, unless its first item is itself a row of numbers (a nested list matrix)
        first = next(iter(X), None)
        return first is None or isinstance(first, (str, bytes)) or not hasattr(first, "__len__")
    return False


def check_texts(X, name="X"):
    """Validate a sequence of documents and return it as a list of str.

    Raises
    ------
    TypeError
        If ``X`` is a single string or holds a non-string item.
    ValueError
        If ``X`` is empty.
    """
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of documents, not a single string; wrap it in a list.")
    texts = list(X)
    if len(texts) == 0:
        raise ValueError(f"{name} is empty: it holds 0 documents.")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] is a {type(t).__name__}, not a str; every document must be a string.")
    return texts


def check_features(X, name="X", n_features=None, estimator_name="the estimator"):
    """Validate a feature matrix: CSR float32 for sparse input, C-contiguous float32 for dense input.

    Raises
    ------
    ValueError
        On NaN/inf values, zero rows, or a feature count different from ``n_features``.
    """
    if sp.issparse(X) and X.format == "csr" and X.dtype == np.float32 and X.ndim == 2:
        X = _check_csr(X, name)  # the common case without check_array's per-call overhead
    else:
        X = check_array(
            X,
            accept_sparse="csr",
            dtype=np.float32,
            ensure_all_finite=True,
            ensure_2d=True,
            ensure_min_samples=1,
            ensure_min_features=1,
            input_name=name,
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{name} has {X.shape[1]} features, but {estimator_name} is expecting {n_features} features as input."
        )
    if sp.issparse(X):
        X.sort_indices()
    return X


def _check_csr(X, name):
    """``check_array``'s checks for a CSR float32 matrix: at least one row and column, finite values."""
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"Found array with {X.shape[0]} sample(s) and {X.shape[1]} feature(s) while a minimum of 1 "
                         f"is required ({name}).")
    if not np.isfinite(X.data).all():
        raise ValueError(f"Input {name} contains NaN or infinity.")
    return X


def check_X(X, name="X", n_features=None, estimator_name="the estimator"):
    """Return ``("text", list_of_str)`` or ``("features", matrix)`` after validation."""
    if is_text_input(X):
        return "text", check_texts(X, name)
    return "features", check_features(X, name, n_features, estimator_name)


def check_n_rows(n_x, n_y):
    if n_x != n_y:
        raise ValueError(f"X has {n_x} samples but Y has {n_y}; they must have the same number of rows.")


#: mean characters per text up to which ``vectorizer=None`` represents raw texts by character n-grams
SHORT_TEXT_CHARS = 300

def default_vectorizer(texts=None):
    """The TF-IDF vectorizer used when ``vectorizer=None``, chosen from the training texts' length.

    - **Short texts** (mean length ≤ ``SHORT_TEXT_CHARS`` characters: titles, questions, product
      names, queries): character 3–5-grams within word boundaries (``analyzer="char_wb"``). A few words
      rarely overlap between two short texts, and inflected forms, compounds and spelling variants of the
      same word are different word features; their character n-grams are shared.
    - **Longer texts** (abstracts, descriptions, full documents), or ``texts=None``: word 1–2 grams, the
      features the XMC peers are measured on. Character n-grams would multiply the non-zeros per row by
      about 3 per character of text.

    Both: sublinear tf, idf, L2-normalised rows, at most 200,000 features of ``min_df`` 2, float32.

    Parameters
    ----------
    texts : sequence of str or None, default=None
        The training texts the vectorizer will be fitted on.

    Returns
    -------
    TfidfVectorizer
        Unfitted.

    Examples
    --------
    >>> from skelias import default_vectorizer
    >>> default_vectorizer(["Sourdough starter smells of acetone", "Rye bread too dense"]).analyzer
    'char_wb'
    >>> default_vectorizer(["An abstract of a few hundred words. " * 20]).ngram_range
    (1, 2)
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    common = dict(sublinear_tf=True, max_features=200_000, min_df=2, dtype=np.float32)
    if texts is not None and len(texts) and np.mean([len(t) for t in texts]) <= SHORT_TEXT_CHARS:
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)
    return TfidfVectorizer(ngram_range=(1, 2), **common)


def apply_vectorizer(kind, X, vectorizer):
    """Vectorise raw texts with the fitted ``vectorizer``; refuse the input kind the model was not fitted on."""
    if kind == "text":
        if vectorizer is None:
            raise TypeError("This model was fitted on a feature matrix; pass features, not raw texts.")
        return tfidf_transform(vectorizer, X)
    if vectorizer is not None:
        raise TypeError("This model was fitted on raw texts; pass a list of str, not a feature matrix.")
    return X


def tfidf_transform(vectorizer, texts):
    """``vectorizer.transform(texts)``; for a fitted ``TfidfVectorizer`` the same matrix without its checks.

    scikit-learn's ``TfidfTransformer.transform`` validates the count matrix it has just built and
    ``normalize`` validates it again (a large part of a single query's vectorising); here the counts
    (``CountVectorizer.transform``) are weighted with the same operations in the same order: sublinear
    tf, idf, then scikit-learn's own in-place row normalisation. Other vectorizers are called as they are.
    """
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.utils import sparsefuncs_fast

    if type(vectorizer) is not TfidfVectorizer or vectorizer.norm not in (None, "l1", "l2"):
        return vectorizer.transform(texts)
    idf = vectorizer.idf_ if vectorizer.use_idf else None  # raises NotFittedError when unfitted
    X = CountVectorizer.transform(vectorizer, texts)
    if vectorizer.sublinear_tf:
        np.log(X.data, X.data)
        X.data += 1.0
    if idf is not None:
        X.data *= idf[X.indices]
    if vectorizer.norm == "l2":
        sparsefuncs_fast.inplace_csr_row_normalize_l2(X)
    elif vectorizer.norm == "l1":
        sparsefuncs_fast.inplace_csr_row_normalize_l1(X)
    return X


def topk_to_csr(indices, scores, n_labels):
    """(n, k) column indices (-1 = padding) and their scores → CSR float32 score matrix (n, n_labels)."""
    keep = indices >= 0
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])[keep.ravel()]
    return sp.csr_matrix((np.asarray(scores, dtype=np.float32)[keep], (rows, indices[keep])),
                         shape=(indices.shape[0], n_labels), dtype=np.float32)


def topk_to_indicator(indices, n_labels):
    """(n, k) column indices (-1 = padding) → CSR float32 indicator (n, n_labels)."""
    keep = indices >= 0
    rows = np.repeat(np.arange(indices.shape[0]), indices.shape[1])[keep.ravel()]
    return sp.csr_matrix((np.ones(rows.size, np.float32), (rows, indices[keep])), shape=(indices.shape[0], n_labels))
