"""The pretrained half of ELIASClassifier's hybrid encoder: which embedder runs, from where, how texts are cached.

The frozen transformer (torch, or ONNX Runtime in float32 or int8), or its static student (``pretrained_backend="static"``), embeds
the raw texts; a fine-tuned transformer is part of the network instead (:class:`~skelias.encoders.HybridEncoder`).
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from ._distributed import resolve_device
from ._logging import logger


class PretrainedHalfMixin:
    """Embedding of raw texts by the hybrid encoder's pretrained half.

    Mixed into :class:`~skelias.ELIASClassifier`, whose ``encoder``, ``pretrained_*``, ``memory``, ``device`` and
    ``verbose`` parameters it reads.
    """

    def _is_hybrid(self):
        return self.encoder == "tfidf" and self.pretrained_model is not None

    def _static_table(self, texts, device):
        """The static student's token table (``pretrained_backend="static"``).

        Distilled token vectors times the training texts' token idf, then fitted to the transformer's
        embeddings of up to ``pretrained_static_texts`` evenly spaced training texts.
        """
        from .pretrained import distill_token_table, fit_token_table, load_tokenizer, token_idf

        t0 = time.perf_counter()
        table = distill_token_table(self._pretrained_source(), pooling=self._pooling(), device=device,
                                    download=self.pretrained_download, verbose=bool(self.verbose))
        tokenizer = load_tokenizer(self._pretrained_source(), download=self.pretrained_download)
        table *= token_idf(tokenizer, texts, max_length=self.pretrained_max_length)[: table.shape[0], None]
        n = min(self.pretrained_static_texts, len(texts))
        if n > 0:
            rows = np.unique(np.linspace(0, len(texts) - 1, n).round().astype(np.int64))
            sample = [texts[i] for i in rows]
            table = fit_token_table(table, tokenizer, sample, self._embed(sample),
                                    max_length=self.pretrained_max_length, verbose=bool(self.verbose))
            self._embedder = None  # the transformer is no longer needed: texts are embedded by the table
        if self.verbose:
            logger.info("static pretrained encoder: %d token vectors, fitted to %d texts, %.1f s", table.shape[0], n,
                        time.perf_counter() - t0)
        return table

    def _pretrained_embedder(self):
        from .pretrained import PretrainedTextEmbedder, StaticTextEmbedder, load_tokenizer

        emb = getattr(self, "_embedder", None)
        if emb is None and getattr(self, "pretrained_static_table_", None) is not None:
            emb = StaticTextEmbedder(self.pretrained_static_table_,
                                     load_tokenizer(self._pretrained_source(), download=self.pretrained_download),
                                     max_length=self.pretrained_max_length)
            self._embedder = emb
        if emb is None:
            net = getattr(self, "network_", None)  # a fitted model embeds where its network is
            device = next(net.parameters()).device if net is not None else resolve_device(self.device)
            emb = PretrainedTextEmbedder(self._pretrained_source(), max_length=self.pretrained_max_length,
                                         pooling=self._pooling(), device=device, verbose=bool(self.verbose),
                                         download=self.pretrained_download, backend=self._embedder_backend())
            self._embedder = emb
        return emb

    def _resolve_pretrained_backend(self, device):
        """``pretrained_backend`` resolved for a fit on ``device`` (what ``pretrained_backend_`` records)."""
        from .pretrained import onnx_runtime_available

        if self.pretrained_backend == "static":
            return "static"
        if device.type != "cpu":
            return "torch"  # the transformer runs on the accelerator
        if self.pretrained_backend == "auto":
            return "onnx-int8" if onnx_runtime_available() else "torch"
        return self.pretrained_backend

    def _embedder_backend(self):
        """The ``PretrainedTextEmbedder`` backend that embeds texts as the model was fitted to.

        int8 embeddings for a model fitted on them (float32 when ONNX Runtime is missing here, with a
        warning); float32 otherwise, on ONNX Runtime when available (``"auto"``) unless a backend was
        named. A static student's teacher, a model on an accelerator and a model saved without
        ``pretrained_backend_`` use float32 (torch on the accelerator).
        """
        from .pretrained import onnx_runtime_available

        net = getattr(self, "network_", None)
        if net is not None and next(net.parameters()).device.type != "cpu":
            return "auto"  # an accelerator embeds with torch
        fitted = getattr(self, "pretrained_backend_", None)
        if fitted == "onnx-int8":
            if onnx_runtime_available():
                return "onnx-int8"
            warnings.warn("This model was fitted on int8 embeddings of ONNX Runtime, which is not installed here "
                          "(pip install \"skelias[fast]\"); texts are embedded in float32 instead, and the "
                          "scores move slightly.", UserWarning, stacklevel=3)
            return "auto"
        if fitted is None or self.pretrained_backend in ("auto", "static"):
            return "auto"
        return self.pretrained_backend

    def _pooling(self):
        """The hybrid encoder's pooling: the one fitted with, else ``pretrained_pooling`` ("auto": the model's own)."""
        from .pretrained import model_pooling

        fitted = getattr(self, "pretrained_pooling_", None)
        if fitted is not None:
            return fitted
        return model_pooling(self._pretrained_source()) if self.pretrained_pooling == "auto" else self.pretrained_pooling

    def _pretrained_source(self):
        """Where the pretrained transformer is read from: the copy a loaded model carries, else ``pretrained_model``."""
        return getattr(self, "_pretrained_dir", None) or self.pretrained_model

    def _embed(self, texts):
        """Frozen pretrained embeddings of ``texts``, cached on disk by ``memory`` when set."""
        location = getattr(self.memory, "location", self.memory)  # a joblib.Memory or a directory
        if location is None or getattr(self, "pretrained_static_table_", None) is not None:
            return self._pretrained_embedder().embed(texts)
        from .pretrained import EmbeddingCache, resolve_pretrained_path

        try:
            identity = os.path.abspath(resolve_pretrained_path(self.pretrained_model))
        except ValueError:  # an alias whose package is not installed: a loaded model's own copy
            identity = str(self.pretrained_model)
        key = f"{identity}|{self.pretrained_max_length}|{self._pooling()}"
        if self._embedder_backend() == "onnx-int8":  # quantised embeddings never mix with float32 ones
            key += "|int8"
        return EmbeddingCache(location, key).embed(list(texts), lambda t: self._pretrained_embedder().embed(t))

    def _resolve_pretrained_scale(self, pretrained_dim):
        if self.pretrained_scale == "auto":
            return float(pretrained_dim) ** 0.25
        return float(self.pretrained_scale)
