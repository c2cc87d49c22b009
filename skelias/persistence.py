"""Save and load fitted skelias models as self-contained directories, without pickle.

A model directory holds:

- ``model.json``: the estimator tree — every object by its class (from an allow-list) and its state, numbers,
  strings, label names and the TF-IDF vocabulary as JSON;
- ``arrays.safetensors`` and ``tensors.safetensors``: every numpy array and torch tensor (network weights,
  sparse matrices' parts, idf vectors, ...);
- ``pretrained/<n>/``: the pretrained transformer of a hybrid or transformer encoder (weights as
  safetensors, config, tokenizer), so that the model needs nothing outside its directory;
- ``README.md``: a model card (the directory is a valid Hugging Face model repository);
- ``manifest.json``: the format version, the library versions and the SHA-256 of every other file, verified
  by :func:`load`.

Loading instantiates only allow-listed classes and runs no code from the files: it works with ``pickle``
unavailable.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT = "skelias-model"
FORMAT_VERSION = 1
_MANIFEST, _MODEL, _ARRAYS, _TENSORS, _CARD = "manifest.json", "model.json", "arrays.safetensors", \
    "tensors.safetensors", "README.md"

#: classes that a model file may instantiate (module, qualified name)
_ALLOWED = {
    ("skelias.elias", "ELIASClassifier"), ("skelias.rerank", "SparseReranker"),
    ("skelias.calibration", "ScoreCalibrator"), ("skelias.calibration", "BoostedTrees"),
    ("skelias.ensemble", "TopKEnsemble"),
    ("skelias.neighbors", "KNNLabelClassifier"), ("skelias._labels", "LabelIndexer"),
    ("skelias.xr_linear", "XRLinearClassifier"),
    ("skelias.cluster", "LabelTree"),
    ("sklearn.feature_extraction.text", "TfidfVectorizer"), ("sklearn.feature_extraction.text", "CountVectorizer"),
    ("sklearn.feature_extraction.text", "TfidfTransformer"), ("sklearn.tree._classes", "DecisionTreeClassifier"),
    ("sklearn.frozen._frozen", "FrozenEstimator"), ("sklearn.pipeline", "Pipeline"),
}


def _versions():
    import sklearn
    import torch

    import skelias

    return {"skelias": skelias.__version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


# ----------------------------------------------------------------------------- encoding
class _Writer:
    """Turns an object graph into JSON plus named arrays, tensors and pretrained folders."""

    def __init__(self, directory, precision="float32"):
        self.directory = Path(directory)
        self.precision = precision
        self.arrays, self.tensors, self.memo, self.n_pretrained = {}, {}, {}, 0
        self._alive = []  # the encoded objects stay alive, so that their ids stay unique

    def _array(self, a):
        name = f"a{len(self.arrays)}"
        self.arrays[name] = np.ascontiguousarray(a)
        return name

    def encode(self, obj, where="model"):
        import torch

        from .pretrained import PretrainedFiles

        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and not isinstance(obj, np.integer):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if id(obj) in self.memo:
            return {"__ref__": self.memo[id(obj)]}
        if isinstance(obj, PretrainedFiles):
            rel = f"pretrained/{self.n_pretrained}"
            self.n_pretrained += 1
            for name, data in obj.items():
                target = self.directory / rel / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            return {"__pretrained__": rel}
        if isinstance(obj, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, (set, frozenset)):
            return {"__set__": [self.encode(v, where) for v in sorted(obj, key=repr)]}
        if isinstance(obj, dict):
            keys = list(obj)
            if keys and all(isinstance(k, str) for k in keys) and all(
                    isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in obj.values()):
                return {"__strintdict__": keys, "values": self._array(np.asarray(list(obj.values()), np.int64))}
            return {"__dict__": [[self.encode(k, where), self.encode(v, f"{where}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, np.generic):
            value = obj.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = repr(value)
            return {"__npscalar__": obj.dtype.str, "value": value}
        if isinstance(obj, np.dtype):
            return {"__dtype__": obj.str}
        if isinstance(obj, type) and issubclass(obj, np.generic):
            return {"__nptype__": np.dtype(obj).str}
        if isinstance(obj, torch.device):
            return {"__device__": str(obj)}
        ref = len(self.memo)
        self.memo[id(obj)] = ref
        self._alive.append(obj)
        if isinstance(obj, np.ndarray):
            if obj.dtype.kind in "biuf":
                return {"__array__": self._array(obj), "id": ref}
            if obj.dtype.names is not None:  # a structured array (a decision tree's nodes)
                dt = obj.dtype
                spec = {"names": list(dt.names), "formats": [dt.fields[n][0].str for n in dt.names],
                        "offsets": [dt.fields[n][1] for n in dt.names], "itemsize": dt.itemsize}
                return {"__struct__": spec, "shape": list(obj.shape), "id": ref,
                        "bytes": self._array(np.frombuffer(np.ascontiguousarray(obj).tobytes(), np.uint8))}
            return {"__objarray__": [self.encode(v, where) for v in obj.ravel().tolist()], "dtype": obj.dtype.str,
                    "shape": list(obj.shape), "id": ref}
        if sp.issparse(obj):
            m = obj.tocsr() if obj.format not in ("csr", "csc") else obj
            return {"__sparse__": m.format, "shape": list(m.shape), "id": ref, "data": self._array(m.data),
                    "indices": self._array(m.indices), "indptr": self._array(m.indptr)}
        if isinstance(obj, torch.Tensor):
            name = f"t{len(self.tensors)}"
            tensor = obj.detach().cpu().contiguous()
            large = tensor.dtype == torch.float32 and tensor.numel() >= 4096  # not biases
            if large and self.precision == "int8" and tensor.dim() == 2:
                # symmetric per-row quantisation: row r is q[r] * scale[r], q in [-127, 127]
                scale = tensor.abs().amax(dim=1).clamp_min(1e-30) / 127.0
                self.tensors[name] = torch.round(tensor / scale[:, None]).clamp_(-127, 127).to(torch.int8)
                self.tensors[name + ".scale"] = scale.float()
                return {"__tensor__": name, "id": ref, "int8": True}
            half = large and self.precision in ("float16", "int8")
            self.tensors[name] = tensor.half() if half else tensor
            return {"__tensor__": name, "id": ref, **({"half": True} if half else {})}
        if isinstance(obj, np.random.RandomState):
            return {"__randomstate__": self.encode(obj.get_state(), where), "id": ref}
        from sklearn.tree._tree import Tree

        if isinstance(obj, Tree):
            _, args, state = obj.__reduce__()
            return {"__tree__": self.encode(args, where), "state": self.encode(state, where), "id": ref}
        cls = type(obj)
        if (cls.__module__, cls.__qualname__) not in _ALLOWED:
            raise TypeError(f"cannot save {where}: objects of type {cls.__module__}.{cls.__qualname__} are not "
                            "supported by skelias.save (use joblib for arbitrary objects).")
        state = obj.__getstate__() if hasattr(obj, "__getstate__") else dict(vars(obj))
        if state is None:
            state = dict(vars(obj))
        return {"__object__": f"{cls.__module__}:{cls.__qualname__}", "id": ref, "state": self.encode(state, where)}


class _Reader:
    """The inverse of :class:`_Writer`; instantiates allow-listed classes only."""

    def __init__(self, directory, arrays, tensors):
        self.directory, self.arrays, self.tensors, self.memo = Path(directory), arrays, tensors, {}

    def _keep(self, node, value):
        if isinstance(node, dict) and "id" in node:
            self.memo[node["id"]] = value
        return value

    def decode(self, node):
        if node is None or isinstance(node, (bool, str, int, float)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if "__ref__" in node:
            return self.memo[node["__ref__"]]
        if "__float__" in node:
            return float(node["__float__"])
        if "__tuple__" in node:
            return tuple(self.decode(v) for v in node["__tuple__"])
        if "__set__" in node:
            return {self.decode(v) for v in node["__set__"]}
        if "__strintdict__" in node:
            return dict(zip(node["__strintdict__"], self.arrays[node["values"]].tolist()))
        if "__dict__" in node:
            return {self.decode(k): self.decode(v) for k, v in node["__dict__"]}
        if "__npscalar__" in node:
            value = node["value"]
            return np.dtype(node["__npscalar__"]).type(float(value) if value in ("nan", "inf", "-inf") else value)
        if "__dtype__" in node:
            return np.dtype(node["__dtype__"])
        if "__nptype__" in node:
            return np.dtype(node["__nptype__"]).type
        if "__device__" in node:
            import torch

            return torch.device(node["__device__"])
        if "__pretrained__" in node:
            return str((self.directory / node["__pretrained__"]).resolve())
        if "__array__" in node:
            return self._keep(node, self.arrays[node["__array__"]].copy())
        if "__struct__" in node:
            dt = np.dtype(node["__struct__"])
            flat = np.frombuffer(self.arrays[node["bytes"]].tobytes(), dtype=dt).copy()
            return self._keep(node, flat.reshape(node["shape"]))
        if "__objarray__" in node:
            values = [self.decode(v) for v in node["__objarray__"]]
            arr = np.empty(len(values), dtype=np.dtype(node["dtype"]))
            arr[:] = values
            return self._keep(node, arr.reshape(node["shape"]))
        if "__sparse__" in node:
            cls = sp.csr_matrix if node["__sparse__"] == "csr" else sp.csc_matrix
            parts = (self.arrays[node["data"]].copy(), self.arrays[node["indices"]].copy(),
                     self.arrays[node["indptr"]].copy())
            return self._keep(node, cls(parts, shape=tuple(node["shape"])))
        if "__tensor__" in node:
            tensor = self.tensors[node["__tensor__"]]
            if node.get("int8"):
                tensor = tensor.float() * self.tensors[node["__tensor__"] + ".scale"][:, None]
            return self._keep(node, tensor.float() if node.get("half") else tensor)
        if "__randomstate__" in node:
            rs = np.random.RandomState()
            rs.set_state(self.decode(node["__randomstate__"]))
            return self._keep(node, rs)
        if "__tree__" in node:
            from sklearn.tree._tree import Tree

            tree = Tree(*self.decode(node["__tree__"]))
            tree.__setstate__(self.decode(node["state"]))
            return self._keep(node, tree)
        if "__object__" in node:
            module, qualname = node["__object__"].split(":")
            if (module, qualname) not in _ALLOWED:
                raise ValueError(f"the model file names a class that skelias does not load: {module}.{qualname}.")
            cls = getattr(importlib.import_module(module), qualname)
            obj = self._keep(node, cls.__new__(cls))
            state = self.decode(node["state"])
            if hasattr(obj, "__setstate__"):
                obj.__setstate__(state)
            else:
                vars(obj).update(state)
            return obj
        raise ValueError(f"unrecognised entry in the model file: {sorted(node)[:3]}.")


# ----------------------------------------------------------------------------- files
def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _model_card(estimator, metrics, versions):
    name = type(estimator).__name__
    classes = getattr(estimator, "classes_", None)
    lines = ["---", "library_name: skelias", "tags:", "- extreme-multi-label-classification", "- skelias",
             f"- {name}", "---", "", f"# {name}", "",
             f"A fitted `{name}` saved with skelias {versions['skelias']} (format {FORMAT_VERSION}).", ""]
    if classes is not None:
        lines.append(f"- labels: {len(classes):,}")
    if getattr(estimator, "n_features_in_", None) is not None:
        lines.append(f"- input features: {estimator.n_features_in_:,}")
    freq = getattr(estimator, "label_frequency_", None)
    if freq is not None:
        lines.append(f"- label assignments in the training data: {int(np.sum(freq)):,}")
    lines += ["", "## Parameters", "", "```"]
    lines += [f"{k} = {v!r}" for k, v in sorted(estimator.get_params(deep=False).items())]
    lines += ["```", ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    lines += ["## Use", "", "```python", "import skelias", "", "model = skelias.load(\"PATH\")",
              "labels, scores = model.predict_topk([\"a text\"], k=5)", "```", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()), ""]
    return "\n".join(lines)


def save(estimator, path: str | os.PathLike, *, metrics: dict | None = None, precision: str = "float32") -> Path:
    """Save a fitted skelias model (or a nesting of them) as a self-contained directory, without pickle.

    Every tensor and array is stored in safetensors, the rest in JSON; a pretrained transformer used by the
    model is copied in. The directory is written aside and renamed into place, so an existing model at
    ``path`` is replaced only when the new one is complete.

    Parameters
    ----------
    estimator : estimator
        A skelias estimator, any nesting of them (``ScoreCalibrator(SparseReranker(ELIASClassifier()))``,
        ``TopKEnsemble``, ``FrozenEstimator``-wrapped bases), or a scikit-learn ``Pipeline`` of a
        ``TfidfVectorizer`` and one of them.
    path : str or path-like
        The directory to write. It must not exist, or hold a model written by this function.
    metrics : dict, optional
        Figures to record in the model card (e.g. ``{"P@1": 0.52}``).
    precision : {"float32", "float16", "int8"}, default="float32"
        Storage of the networks' large float32 tensors (the embedding tables, the label classifiers); they are
        float32 again once loaded. ``"float16"`` about halves the directory: scores differ from the float32
        model's in the third or fourth digit, rankings only where scores nearly tie. ``"int8"`` stores each
        matrix row as int8 with one float32 scale (symmetric, per row), about a quarter of the size: scores
        differ in the second or third digit; the measured effect on rankings is in the design notes.

    Returns
    -------
    pathlib.Path
        The directory written.

    Raises
    ------
    TypeError
        If the model holds an object that the format does not support (e.g. a custom tokenizer function).
    ValueError
        If ``path`` exists and is not a skelias model directory.

    Examples
    --------
    >>> import tempfile, skelias
    >>> from skelias import KNNLabelClassifier
    >>> model = KNNLabelClassifier(n_neighbors=3).fit(["a red apple", "a green pear", "red wine"] * 3,
    ...                                               [["fruit"], ["fruit"], ["drink"]] * 3)
    >>> directory = skelias.save(model, tempfile.mkdtemp() + "/knn")
    >>> sorted(p.name for p in directory.iterdir())
    ['README.md', 'arrays.safetensors', 'manifest.json', 'model.json', 'tensors.safetensors']
    >>> skelias.load(directory).predict_topk(["red apple"], k=1)[0].tolist()
    [['fruit']]
    """
    from safetensors.numpy import save_file as save_arrays
    from safetensors.torch import save_file as save_tensors
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    if precision not in ("float32", "float16", "int8"):
        raise ValueError(f"precision must be 'float32', 'float16' or 'int8'; got {precision!r}.")
    path = Path(path)
    if path.exists() and not (path / _MANIFEST).is_file():
        raise ValueError(f"{path} exists and is not a skelias model directory; choose a new path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        writer = _Writer(tmp, precision=precision)
        model = writer.encode(estimator)
        (tmp / _MODEL).write_text(json.dumps(model))
        save_arrays(writer.arrays, str(tmp / _ARRAYS))
        save_tensors(writer.tensors, str(tmp / _TENSORS))
        versions = _versions()
        (tmp / _CARD).write_text(_model_card(estimator, metrics, versions))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions, "precision": precision,
                    "estimator": type(estimator).__name__, "files": {f: _sha256(tmp / f) for f in files}}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        if path.exists():  # swap: the old model is removed only once the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "model")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_manifest(path):
    manifest_path = path / _MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{path} is not a skelias model directory: it has no {_MANIFEST}.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{manifest_path} is not valid JSON ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} was not written by skelias.save (format {manifest.get('format')!r}).")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} was written in model format {version!r} by skelias "
                         f"{manifest.get('versions', {}).get('skelias')}; this skelias reads format "
                         f"{FORMAT_VERSION} and older. Upgrade skelias to load it.")
    return manifest


def load(path: str | os.PathLike, device: str | None = None):
    """Load a model directory written by :func:`save`; every file's SHA-256 is checked first.

    Parameters
    ----------
    path : str or path-like
        The model directory.
    device : str, torch.device or None, default=None
        Where the networks of ELIAS models are placed: ``None`` keeps them on the CPU (a model trained on
        CUDA loads on a CPU-only machine); ``"cuda"`` moves them to the GPU.

    Returns
    -------
    estimator
        The fitted model, predicting as when it was saved.

    Raises
    ------
    ValueError
        If the directory is not a skelias model, was written by a newer format, or a file is missing,
        truncated or altered (the message names the file).
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file as load_arrays
    from safetensors.torch import load_file as load_tensors

    path = Path(path)
    manifest = _read_manifest(path)
    for name, digest in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise ValueError(f"{path}: the file {name} listed in the manifest is missing.")
        if _sha256(file) != digest:
            raise ValueError(f"{path}: the file {name} does not match its checksum (altered, truncated or "
                             "corrupted).")
    try:
        arrays = load_arrays(str(path / _ARRAYS))
        tensors = load_tensors(str(path / _TENSORS))
        model = json.loads((path / _MODEL).read_text())
    except (SafetensorError, json.JSONDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot read the model files ({exc}).") from None
    estimator = _Reader(path, arrays, tensors).decode(model)
    if device is not None:
        _move_networks(estimator, device)
    return estimator


def _move_networks(obj, device, seen=None):
    """Move the ``network_`` of every ELIAS model inside ``obj`` (estimators, lists, tuples) to ``device``."""
    import torch
    from sklearn.base import BaseEstimator

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (list, tuple)):
        for item in obj:
            _move_networks(item, device, seen)
    elif isinstance(obj, BaseEstimator):
        net = getattr(obj, "network_", None)
        if isinstance(net, torch.nn.Module):
            net.to(torch.device(device))
        for value in vars(obj).values():
            _move_networks(value, device, seen)
