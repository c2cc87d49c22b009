"""Dataset loaders: XMC-repository sparse files, text directories, and the embedded quickstart set.

Formats
-------
**XMC repository sparse format** (Extreme Classification Repository, 0-based)::

    N D L                      <- optional header: rows, features, labels
    3,17 0:0.5 12:1.25         <- labels "l1,l2,..." then "feature:value" pairs
     4:1.0                     <- a row with no labels starts with a space
    5,6                        <- a row with no features

**Text directory**: ``{split}_texts.txt`` (one document per line) and
``{split}_labels.txt`` (the matching line holds the document's labels separated
by spaces), each optionally gzip-compressed as ``.txt.gz``; ``split`` is
``train`` or ``test``. This is the layout of ``../shared/datasets/*``.

Malformed files raise ``ValueError`` naming the file and the 1-based line.
"""

from __future__ import annotations

import gzip
import io
import zlib
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = [
    "dump_xmc_sparse",
    "load_cooking_stackexchange",
    "load_dataset",
    "load_text_dataset",
    "load_xmc_sparse",
]


def _open_text(path):
    path = Path(path)
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


#: largest feature or label count inferred from the indices of a headerless file (pass n_features/n_labels beyond)
MAX_INFERRED_DIM = 10**8


def load_xmc_sparse(path, *, n_features=None, n_labels=None):
    """Read a file in the XMC-repository sparse format.

    Parameters
    ----------
    path : str or Path
        File path (``.gz`` is decompressed transparently).
    n_features, n_labels : int, optional
        Dimensions to use when the file has no header (default: largest index
        + 1, at most ``MAX_INFERRED_DIM``). With a header, they must agree with it.

    Returns
    -------
    X : csr_matrix of shape (n_samples, n_features), dtype float32
    Y : csr_matrix of shape (n_samples, n_labels), dtype float32
        Indicator matrix (duplicate labels in a line count once).

    Raises
    ------
    ValueError
        On a malformed line (naming the file and line number), an index outside
        the header's dimensions, a row count that disagrees with the header, a
        ``.gz`` file that is not gzip, or (headerless) an index above ``MAX_INFERRED_DIM``
        without an explicit dimension.
    FileNotFoundError
        If ``path`` does not exist.

    Notes
    -----
    Empty lines inside the file are rows without features and labels; blank lines at the end of a
    headerless file (or beyond the header's row count) are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such file: {path}")
    header = None
    indptr_x, feat_idx, feat_val = [0], [], []
    indptr_y, lab_idx = [0], []
    last_content = 0  # rows up to and including the last non-blank line
    with _open_text(path) as fh:
        try:
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if lineno == 1:
                    parts = line.split()
                    if len(parts) == 3 and all(p.isdigit() for p in parts) and ":" not in line and "," not in line:
                        header = tuple(int(p) for p in parts)
                        continue
                if line.strip() == "":
                    indptr_x.append(len(feat_idx))
                    indptr_y.append(len(lab_idx))
                    continue
                if line[0] in " \t":
                    lab_part, feats = "", line.split()
                else:
                    tokens = line.split()
                    if ":" in tokens[0]:
                        lab_part, feats = "", tokens
                    else:
                        lab_part, feats = tokens[0], tokens[1:]
                if lab_part:
                    labs = [int(t) for t in lab_part.split(",") if t != ""]
                    if any(v < 0 for v in labs):
                        raise ValueError("negative label index")
                    lab_idx.extend(labs)
                for tok in feats:
                    f, sep, v = tok.partition(":")
                    if not sep:
                        raise ValueError(f"feature token {tok!r} is not 'index:value'")
                    fi = int(f)
                    if fi < 0:
                        raise ValueError("negative feature index")
                    feat_idx.append(fi)
                    feat_val.append(float(v))
                indptr_x.append(len(feat_idx))
                indptr_y.append(len(lab_idx))
                last_content = len(indptr_x) - 1
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a text file in the XMC sparse format ({exc}).") from None
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: not a valid gzip file ({exc}).") from None
        except ValueError as exc:
            raise ValueError(f"{path}, line {lineno}: malformed XMC sparse line ({exc}): {line[:80]!r}") from None
    keep = max(last_content, min(header[0], len(indptr_x) - 1)) if header is not None else last_content
    del indptr_x[keep + 1 :], indptr_y[keep + 1 :]  # trailing blank lines
    n = len(indptr_x) - 1
    feat_idx = np.asarray(feat_idx, dtype=np.int64)
    lab_idx = np.asarray(lab_idx, dtype=np.int64)
    D = int(feat_idx.max()) + 1 if feat_idx.size else 0
    L = int(lab_idx.max()) + 1 if lab_idx.size else 0
    if header is not None:
        hn, hd, hl = header
        if hn != n:
            raise ValueError(f"{path}: header announces {hn} rows but the file has {n}.")
        if D > hd or L > hl:
            raise ValueError(
                f"{path}: an index exceeds the header's dimensions (features {D} > {hd} or labels {L} > {hl})."
            )
        D, L = hd, hl
    for name, given, found in (("n_features", n_features, D), ("n_labels", n_labels, L)):
        if given is None and header is None and found > MAX_INFERRED_DIM:
            raise ValueError(f"{path}: the largest {name[2:-1]} index is {found - 1:,}; pass {name}= explicitly "
                             f"if the data really has that many (limit without it: {MAX_INFERRED_DIM:,}).")
        if given is not None:
            if header is not None and given != found:
                raise ValueError(f"{name}={given} disagrees with the header of {path} ({found}).")
            if given < found:
                raise ValueError(f"{name}={given} but {path} uses indices up to {found - 1}.")
    D = n_features if n_features is not None else D
    L = n_labels if n_labels is not None else L
    X = sp.csr_matrix(
        (np.asarray(feat_val, dtype=np.float32), feat_idx, np.asarray(indptr_x, dtype=np.int64)), shape=(n, D)
    )
    X.sum_duplicates()
    Y = sp.csr_matrix(
        (np.ones(lab_idx.size, dtype=np.float32), lab_idx, np.asarray(indptr_y, dtype=np.int64)), shape=(n, L)
    )
    Y.sum_duplicates()
    Y.data[:] = 1.0
    return X, Y


def dump_xmc_sparse(path, X, Y, *, header=True):
    """Write ``X`` and ``Y`` in the XMC-repository sparse format (inverse of :func:`load_xmc_sparse`).

    Parameters
    ----------
    path : str or Path
    X : sparse matrix of shape (n_samples, n_features)
    Y : sparse matrix of shape (n_samples, n_labels)
    header : bool, default=True
        Write the ``N D L`` header line. Without it, trailing empty rows cannot be written: they would
        read back as the blank lines that :func:`load_xmc_sparse` ignores at the end of a file.

    Raises
    ------
    ValueError
        If X and Y have different row counts, or ``header=False`` and the last row is empty.
    """
    X = sp.csr_matrix(X)
    Y = sp.csr_matrix(Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}.")
    if not header and X.shape[0] and X[-1].nnz == 0 and Y[-1].nnz == 0:
        raise ValueError("the last row is empty, which a file without header cannot hold (it reads as a trailing "
                         "blank line); write it with header=True.")
    X.sort_indices()
    Y.sort_indices()
    with open(path, "w", encoding="utf-8") as fh:
        if header:
            fh.write(f"{X.shape[0]} {X.shape[1]} {Y.shape[1]}\n")
        for i in range(X.shape[0]):
            labs = ",".join(map(str, Y.indices[Y.indptr[i] : Y.indptr[i + 1]]))
            sl = slice(X.indptr[i], X.indptr[i + 1])
            feats = " ".join(f"{j}:{v:.7g}" for j, v in zip(X.indices[sl], X.data[sl]))
            fh.write(f"{labs} {feats}".rstrip() + "\n" if labs else f" {feats}".rstrip() + "\n")


def _find(directory, stem):
    for suffix in (".txt", ".txt.gz"):
        p = Path(directory) / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _read_lines(path):
    with _open_text(path) as fh:
        try:
            return [line.rstrip("\r\n") for line in fh]
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not UTF-8 text ({exc}).") from None


def load_text_dataset(directory, split="train"):
    """Load raw texts and label lists from a text-directory dataset.

    Parameters
    ----------
    directory : str or Path
        Folder holding ``{split}_texts.txt[.gz]`` and ``{split}_labels.txt[.gz]``.
    split : str, default="train"
        Usually ``"train"`` or ``"test"``.

    Returns
    -------
    texts : list of str, length n_samples
    labels : list of list of str, length n_samples
        Labels of each document (a blank labels line gives an empty list).

    Raises
    ------
    FileNotFoundError
        If either file is missing.
    ValueError
        If the two files have different numbers of lines.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"No such dataset directory: {directory}")
    tp, lp = _find(directory, f"{split}_texts"), _find(directory, f"{split}_labels")
    if tp is None or lp is None:
        missing = [s for s, p in ((f"{split}_texts.txt[.gz]", tp), (f"{split}_labels.txt[.gz]", lp)) if p is None]
        raise FileNotFoundError(f"{directory}: missing {', '.join(missing)} (expected the text-directory layout).")
    texts = _read_lines(tp)
    label_lines = _read_lines(lp)
    if len(texts) != len(label_lines):
        raise ValueError(
            f"{tp} has {len(texts)} lines but {lp} has {len(label_lines)}; each document needs one labels line."
        )
    return texts, [line.split() for line in label_lines]


def load_cooking_stackexchange(split="train"):
    """The embedded quickstart dataset: Cooking Stack Exchange question titles → tags.

    12,404 training and 3,000 test questions, 736 tags (the fastText tutorial
    split). Source: the Cooking Stack Exchange data dump, as prepared for the
    fastText supervised tutorial. License: CC BY-SA 3.0 (user-contributed Stack
    Exchange content); see ``skelias/data/cooking_stackexchange/SOURCE.md``.

    Parameters
    ----------
    split : {"train", "test"}

    Returns
    -------
    texts : list of str
    labels : list of list of str
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    directory = resources.files("skelias") / "data" / "cooking_stackexchange"
    with resources.as_file(directory) as d:
        return load_text_dataset(d, split)


def load_dataset(path, split="train"):
    """Load a dataset from a text directory or an XMC sparse file, whichever ``path`` is.

    Parameters
    ----------
    path : str or Path
        A text-directory dataset (see :func:`load_text_dataset`), a directory
        holding ``{split}.svm``/``{split}.txt`` in the XMC sparse format, or such a file.
    split : str, default="train"

    Returns
    -------
    (texts, labels) for a text directory, or (X, Y) for sparse data.

    Raises
    ------
    ValueError
        If ``path`` matches none of the known layouts.
    """
    path = Path(path)
    if path.is_file():
        return load_xmc_sparse(path)
    if path.is_dir():
        if _find(path, f"{split}_texts") is not None:
            return load_text_dataset(path, split)
        for name in (f"{split}.svm", f"{split}.svm.gz", f"{split}.txt", f"{split}.txt.gz"):
            if (path / name).is_file():
                return load_xmc_sparse(path / name)
        raise ValueError(
            f"{path}: unknown dataset layout; expected {split}_texts.txt[.gz] + {split}_labels.txt[.gz] "
            f"or an XMC sparse file {split}.svm / {split}.txt."
        )
    raise FileNotFoundError(f"No such file or directory: {path}")

