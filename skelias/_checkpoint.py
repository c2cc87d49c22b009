"""Per-epoch checkpoints of an ELIAS fit, so that a killed fit continues where it stopped.

A checkpoint holds everything the rest of the fit depends on: the network's parameters, the optimizer and
scheduler states, the stage, the epoch and the step, the best epoch kept for model selection, the history,
and the states of the NumPy and torch random generators. It is written to a temporary file and renamed, so a
kill during the write leaves the previous checkpoint intact. Files are read with ``torch.load(...,
weights_only=True)``: tensors and plain containers only, no code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["Checkpointer", "fingerprint"]


def _digest_array(h, a):
    a = np.ascontiguousarray(a)
    h.update(str((a.dtype.str, a.shape)).encode())
    h.update(a.tobytes())


def _digest_input(h, X):
    """Feed the content of a model input (matrix, array, texts or a container of them) into ``h``."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        for part in (X.data, X.indices, X.indptr, np.asarray(X.shape)):
            _digest_array(h, part)
    elif isinstance(X, np.ndarray):
        _digest_array(h, X)
    elif hasattr(X, "sparse"):  # the hybrid containers
        _digest_input(h, X.sparse)
        _digest_input(h, X.dense if hasattr(X, "dense") else X.texts)
    elif hasattr(X, "texts"):
        for t in X.texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
    else:
        raise TypeError(f"cannot fingerprint a model input of type {type(X).__name__}")


def fingerprint(params, X, Y):
    """SHA-256 of the fit's defining parameters and of its training data (model input and label matrix)."""
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True, default=repr).encode())
    _digest_input(h, X)
    _digest_input(h, Y)
    return h.hexdigest()


def rng_state(rs):
    """A NumPy ``RandomState``'s state as tensors and numbers (storable with ``weights_only``)."""
    name, keys, pos, has_gauss, cached = rs.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def set_rng_state(rs, state):
    """Restore :func:`rng_state` into ``rs``."""
    rs.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                  state["cached"]))


class Checkpointer:
    """The checkpoint files of one fit in ``directory``, tied to its ``fingerprint``.

    Parameters
    ----------
    directory : str or path-like
        Created when missing.
    fingerprint : str
        :func:`fingerprint` of the fit. A checkpoint of another fit in the directory is an error.
    """

    FILE = "checkpoint.pt"

    def __init__(self, directory, fingerprint, read_only=False):
        self.directory = Path(directory)
        self.fingerprint, self.read_only = fingerprint, read_only
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _write(self, name, obj):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, name):
        path = self.directory / name
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise ValueError(f"{path} is not a readable skelias checkpoint ({exc}); remove it to start afresh.") \
                from None

    def save(self, state, name=FILE):
        """Write ``state`` (tensors and plain containers) atomically, stamped with the fingerprint.

        A read-only checkpointer (a data-parallel rank other than 0) writes nothing.
        """
        if not self.read_only:
            self._write(name, {"fingerprint": self.fingerprint, **state})

    def load(self, name=FILE):
        """The checkpoint ``name``, or None when there is none.

        Raises
        ------
        ValueError
            If the directory holds a checkpoint of another fit (other data or parameters).
        """
        state = self._read(name)
        if state is not None and state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"{self.directory} holds a checkpoint of a different fit (other training data or "
                             "parameters); remove it or choose another checkpoint_dir.")
        return state
