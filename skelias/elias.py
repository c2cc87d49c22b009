"""ELIASClassifier: the paper's end-to-end learned index as a scikit-learn estimator."""

from __future__ import annotations

import copy
import logging
import numbers
import os
import time

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from ._base import TopKOutputMixin
from ._labels import LabelIndexer, is_label_matrix
from ._network import ELIASNetwork
from ._training import cluster_matching_matrix, predict_topk_scores, train_stage
from ._validation import apply_vectorizer, check_n_rows, check_X, default_vectorizer
from .cluster import cluster_labels, default_n_clusters
from .encoders import (
    DenseMLPEncoder,
    HybridEncoder,
    HybridFeatures,
    HybridTexts,
    SparseBagEncoder,
    TextRows,
    TransformerEncoder,
)
from .index import approximate_adjacency, padded_adjacency, tree_preserving_values
from .metrics import _check_k, _ndcg

logger = logging.getLogger("skelias")

__all__ = ["ELIASClassifier"]


def _resolve_device(device):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}.") from exc


class ELIASClassifier(TopKOutputMixin, TransformerMixin, BaseEstimator):
    """ELIAS: end-to-end learning to index and search in large output spaces (Gupta et al., NeurIPS 2022).

    A text encoder φ, cluster classifiers W_C, a learned row-sparse cluster→label
    adjacency A and label classifiers W_L are trained together (paper §3). Stage 1
    trains with A fixed to a balanced clustering of the labels; stage 2 initialises
    A's support from the stage-1 model (Eq. 9–10) and learns everything jointly.

    Parameters
    ----------
    encoder : {"tfidf", "dense", "transformer"}, default="tfidf"
        ``"tfidf"``: a sparse embedding bag over TF-IDF features (raw texts are
        vectorised with ``vectorizer``; sparse matrices are used as they are).
        ``"dense"``: an MLP over a dense feature array.
        ``"transformer"``: fine-tune the Hugging Face model ``pretrained_model`` on raw
        texts (CLS pooling, as in the paper; ``embed_dim`` is then its hidden size).
        About 100× slower than ``"tfidf"`` on CPU: this is the GPU path.
    pretrained_model : str or None
        With ``encoder="transformer"``: the model to fine-tune. With ``encoder="tfidf"``, the hybrid encoder: a local Hugging Face model directory (or an offline-resolvable
        name, or ``"all-MiniLM-L6-v2"`` with ``skelias[minilm]`` installed) whose frozen,
        mean-pooled, normalised embedding is added to the TF-IDF bag:
        ``φ(x) = f(bag(TF-IDF(x)) + W_p·e(x))``. Needs raw texts. Embeddings are computed
        once per fit/predict call (batches sorted by length) while the pretrained model is
        frozen; see ``finetune_pretrained``.
    pretrained_max_length : int, default=64
        Tokens per text given to the pretrained model.
    pretrained_scale : float or "auto", default="auto"
        The unit-norm pretrained embedding is multiplied by this before its projection
        (hybrid encoder). ``"auto"``: p^(1/4) for a p-dimensional embedding (≈ 4.43 for MiniLM's 384),
        the geometric mean of 1 (the raw unit-norm vector, ~10× below the TF-IDF bag's activations at
        initialisation) and √p (unit-variance entries). Measured with ``weight_decay="auto"`` (stage 1,
        ``docs/benchmarks.md``): tibkat-en (abstracts) P@1 47.94 with "auto" vs 44.93 with 1 (R@100
        74.20 vs 72.38); cooking-stackexchange (titles, mean of 3 seeds) 70.5 with "auto", 70.6 with √p,
        67.2 with 1. The resolved value is ``pretrained_scale_``.
    finetune_pretrained : {"auto", True, False}, default="auto"
        Hybrid encoder only. ``True``: the pretrained transformer is trained with the rest of
        the model (learning rate ``lr_pretrained``), its texts tokenised per batch; the
        GPU path (MiniLM fine-tuning runs at ~15–70 examples/s on 2 CPU cores). ``False``:
        frozen, embedded once. ``"auto"``: fine-tune on CUDA, frozen on CPU.
        The stage-1 clustering always uses the frozen embeddings (PIFA, App. D.1).
    lr_pretrained : float or None
        Learning rate of the fine-tuned pretrained transformer; ``None``: 1e-4.
    vectorizer : TfidfVectorizer or None
        Used for raw-text input. ``None``: sublinear tf, 1–2 grams, ≤ 200k features, min_df 2.
    embed_dim : int, default=512
        d, the embedding size of φ.
    dropout : float, default=0.2
    n_clusters : int or None
        C. ``None``: ``2**ceil(log2(L / max_leaf_size))`` (about 100 labels per cluster).
    max_leaf_size : int, default=100
    alpha : float, default=10
        Eq. 1: at most ~α clusters can reach score 1.
    beta : float, default=150
        Eq. 5: at most ~β labels per cluster can reach edge score 1.
    kappa : int or None
        Non-zeros per row of A in stage 2. ``None``: ``10 · ceil(L / C)``, capped at L.
    beam_size : int, default=20
        b, clusters shortlisted per input (capped at C).
    shortlist_size : int, default=2000
        K, labels scored by the label classifiers (capped by the path set).
    loss_lambda : float, default=0.05
        λ of Eq. 8's shortlist loss.
    n_epochs_stage1, n_epochs_stage2 : int, default=10, 10
        ``n_epochs_stage2=0`` gives a stage-1-only model (a fixed-tree index).
    batch_size : int, default=256
    lr : float, default=0.01
        Learning rate of W_C, A and W_L.
    lr_encoder : float or None
        Learning rate of φ; ``None`` uses ``lr`` (1e-4 for ``encoder="transformer"``).
    stage2_lr_factor : float, default=0.1
        Stage 2 trains φ, W_C and W_L with ``lr`` and ``lr_encoder`` times this factor (the
        public code's stage-2 configurations fine-tune with 3–50× lower rates; the paper does not
        say). ``1.0`` restarts the stage-1 rates, which with ``adjacency_init="random"`` is the
        paper's recipe.
    lr_adjacency : float or None
        Learning rate of A's non-zero values in stage 2; ``None`` uses ``lr``.
    adjacency_init : {"tree", "random", "approx"}, default="tree"
        Stage-2 values of A's non-zeros. ``"tree"``: A's support is the top-κ of A' = MᵀY plus
        every stage-1 edge; the stage-1 edges start at edge score 1 and the new edges low
        (together a quarter of their row's softmax mass, evenly), so that stage 2 starts from
        the stage-1 index and Eq. 3's parents (see :func:`skelias.index.tree_preserving_values`).
        ``"random"``: random(0, 1) on the support of A' as in the paper (Eq. 10).
        ``"approx"``: log(A'/rowmax(A')). The default deviates from the paper because, measured,
        random values start stage 2 well below the stage-1 model and a few epochs do not
        recover it (``docs/design.md``).
    weight_decay : float or "auto", default="auto"
        AdamW's decoupled weight decay, on weight matrices only (not on the sparse embedding table
        with ``embedding_optimizer="sparse_adam"``). ``"auto"``: 0.5 for the hybrid encoder
        (``encoder="tfidf"`` with ``pretrained_model``), 0.01 otherwise. Measured (stage 1, seed 0):
        with the hybrid encoder 0.5 beats 0.01 on cooking-stackexchange (P@1 69.70 vs 69.00, R@100
        94.82 vs 93.83) and on tibkat-en (PSP@5 25.45 vs 24.79, R@100 72.71 vs 71.19, P@1 flat); with
        the TF-IDF encoder alone it costs P@1 on both (−1.8 and −1.4), hence the split
        (``docs/benchmarks.md``).
    embedding_optimizer : {"adamw", "sparse_adam"}, default="adamw"
        Optimizer of the TF-IDF embedding table (the bag): dense fused AdamW, or lazy
        ``torch.optim.SparseAdam`` on sparse gradients (only the rows of the features present in
        a batch move; no weight decay).
    warmup : float, default=0.1
        Fraction of each stage's steps with linear warm-up (then linear decay).
    accumulation_steps : int, default=1
        W_C, A and W_L step once every this many batches (App. C).
    validation_size : int, float or None
        Training points held out for model selection by nDCG@5 after every epoch.
    k : int, default=5
        Labels per row returned by :meth:`predict`.
    label_scoring : {"auto", "dense", "gather"}
        ``"dense"`` scores all labels with one matmul then gathers the shortlist
        (faster on CPU up to ~10⁵ labels); ``"gather"`` gathers K classifier rows.
    memory : str, joblib.Memory or None, default=None
        Directory of a per-text disk cache for the frozen pretrained embeddings (hybrid
        encoder): any text embedded once, by any fit or predict call, is not embedded again
        (``GridSearchCV`` folds, refits, re-rankers, benchmarks). Keyed by the model path,
        ``pretrained_max_length`` and each text's hash.
    device : str, default="auto"
        "auto" picks CUDA when available. Mixed precision (bf16) only on CUDA.
    random_state : int, RandomState or None
    verbose : int, default=0
        > 0: a progress bar per epoch and a log line per epoch.

    Attributes
    ----------
    classes_ : ndarray (n_labels,)
    label_tree_ : LabelTree
        The stage-1 clustering.
    network_ : ELIASNetwork (on CPU after unpickling)
    vectorizer_ : TfidfVectorizer or None
    history_ : list of dict
        Per-epoch losses (and validation nDCG@5) of both stages.
    fit_time_ : dict
        Seconds spent in clustering, stage 1, stage-2 initialisation and stage 2.
    label_frequency_ : ndarray (n_labels,) float32
        Training positives of each label.
    finetuned_pretrained_ : bool
        Whether the hybrid encoder's pretrained transformer was fine-tuned.
    weight_decay_ : float
        The weight decay used (``weight_decay`` resolved).
    pretrained_scale_ : float or None
        The pretrained embedding's input scale used (``pretrained_scale`` resolved); None without
        a pretrained half.
    selected_stage_ : int
        1 or 2: the stage whose model was kept. With ``validation_size``, the stage-1 model
        is kept when no stage-2 epoch beats its best validation nDCG@5.
    n_features_in_ : int
    """

    def __init__(self, encoder="tfidf", vectorizer=None, pretrained_model=None, pretrained_max_length=64, pretrained_scale="auto",
                 finetune_pretrained="auto", lr_pretrained=None, embed_dim=512, dropout=0.2, n_clusters=None,
                 max_leaf_size=100, alpha=10.0, beta=150.0, kappa=None, beam_size=20, shortlist_size=2000,
                 loss_lambda=0.05, n_epochs_stage1=10, n_epochs_stage2=10, batch_size=256, lr=0.01,
                 lr_encoder=None, stage2_lr_factor=0.1, lr_adjacency=None, adjacency_init="tree", weight_decay="auto",
                 embedding_optimizer="adamw", warmup=0.1, accumulation_steps=1, validation_size=None,
                 k=5, label_scoring="auto", memory=None, device="auto", random_state=None, verbose=0):
        self.encoder = encoder
        self.vectorizer = vectorizer
        self.pretrained_model = pretrained_model
        self.pretrained_max_length = pretrained_max_length
        self.pretrained_scale = pretrained_scale
        self.finetune_pretrained = finetune_pretrained
        self.lr_pretrained = lr_pretrained
        self.embed_dim = embed_dim
        self.dropout = dropout
        self.n_clusters = n_clusters
        self.max_leaf_size = max_leaf_size
        self.alpha = alpha
        self.beta = beta
        self.kappa = kappa
        self.beam_size = beam_size
        self.shortlist_size = shortlist_size
        self.loss_lambda = loss_lambda
        self.n_epochs_stage1 = n_epochs_stage1
        self.n_epochs_stage2 = n_epochs_stage2
        self.batch_size = batch_size
        self.lr = lr
        self.lr_encoder = lr_encoder
        self.stage2_lr_factor = stage2_lr_factor
        self.lr_adjacency = lr_adjacency
        self.adjacency_init = adjacency_init
        self.weight_decay = weight_decay
        self.embedding_optimizer = embedding_optimizer
        self.warmup = warmup
        self.accumulation_steps = accumulation_steps
        self.validation_size = validation_size
        self.k = k
        self.label_scoring = label_scoring
        self.memory = memory
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ validation helpers
    def _check_params(self):
        def pos_int(name, minimum=1, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}; got {v!r}.")

        def pos_real(name, minimum=0.0, strict=True, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v) or (
                v <= minimum if strict else v < minimum
            ):
                raise ValueError(f"{name} must be a number {'>' if strict else '>='} {minimum}; got {v!r}.")

        if self.encoder not in ("tfidf", "dense", "transformer"):
            raise ValueError(f"encoder must be 'tfidf', 'dense' or 'transformer'; got {self.encoder!r}.")
        if self.encoder == "transformer" and self.pretrained_model is None:
            raise ValueError("encoder='transformer' needs pretrained_model (a local model directory).")
        if self.adjacency_init not in ("tree", "random", "approx"):
            raise ValueError(f"adjacency_init must be 'tree', 'random' or 'approx'; got {self.adjacency_init!r}.")
        if self.label_scoring not in ("auto", "dense", "gather"):
            raise ValueError(f"label_scoring must be 'auto', 'dense' or 'gather'; got {self.label_scoring!r}.")
        if self.pretrained_model is not None and self.encoder == "dense":
            raise ValueError("pretrained_model works with encoder='tfidf' (hybrid) or 'transformer'.")
        for name in ("embed_dim", "pretrained_max_length", "max_leaf_size", "beam_size", "shortlist_size", "batch_size", "accumulation_steps"):
            pos_int(name)
        pos_int("n_clusters", allow_none=True)
        pos_int("kappa", allow_none=True)
        pos_int("n_epochs_stage1", minimum=1)
        pos_int("n_epochs_stage2", minimum=0)
        for name in ("alpha", "beta", "lr", "stage2_lr_factor"):
            pos_real(name)
        if not (isinstance(self.pretrained_scale, str) and self.pretrained_scale == "auto"):
            pos_real("pretrained_scale")
        pos_real("lr_encoder", allow_none=True)
        pos_real("lr_adjacency", allow_none=True)
        pos_real("lr_pretrained", allow_none=True)
        if self.embedding_optimizer not in ("adamw", "sparse_adam"):
            raise ValueError(f"embedding_optimizer must be 'adamw' or 'sparse_adam'; got {self.embedding_optimizer!r}.")
        if self.finetune_pretrained not in ("auto", True, False):
            raise ValueError(f"finetune_pretrained must be 'auto', True or False; got {self.finetune_pretrained!r}.")
        pos_real("loss_lambda", strict=False)
        wd = self.weight_decay
        if not (isinstance(wd, str) and wd == "auto") and (
            isinstance(wd, (bool, str)) or not isinstance(wd, numbers.Real) or not np.isfinite(wd) or wd < 0
        ):
            raise ValueError(f"weight_decay must be 'auto' or a number >= 0; got {wd!r}.")
        if not (isinstance(self.dropout, numbers.Real) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}.")
        v = self.validation_size
        if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real) or v <= 0
                              or (not isinstance(v, numbers.Integral) and v >= 1)):
            raise ValueError(f"validation_size must be None, an int >= 1 or a float in (0, 1); got {v!r}.")
        if not (isinstance(self.warmup, numbers.Real) and 0 <= self.warmup < 1):
            raise ValueError(f"warmup must be in [0, 1); got {self.warmup!r}.")
        _check_k(self.k)

    def _check_input(self, X, fitting):
        return check_X(
            X,
            n_features=None if fitting or getattr(self, "vectorizer_", None) is not None else self.n_features_in_,
            estimator_name=type(self).__name__,
        )

    def _vectorize(self, kind, X, fitting, tfidf=None):
        """Model input for X; ``tfidf``: ``vectorizer_.transform(X)`` already computed by the caller."""
        if fitting:
            if kind == "text":
                if self.encoder == "dense":
                    raise ValueError("raw texts need encoder='tfidf'; pass a dense feature array for encoder='dense'.")
                self.vectorizer_ = clone(self.vectorizer if self.vectorizer is not None else default_vectorizer())
                self.vectorizer_.fit(X)
            else:
                if self.pretrained_model is not None:
                    raise TypeError(f"encoder={self.encoder!r} with pretrained_model needs raw texts, not a feature matrix.")
                self.vectorizer_ = None
        texts = X
        X = tfidf if tfidf is not None and kind == "text" else apply_vectorizer(kind, X, self.vectorizer_)
        if self.encoder == "transformer":
            return TextRows(texts)
        if self.encoder == "tfidf":
            X = sp.csr_matrix(X, dtype=np.float32)
            if self.pretrained_model is not None:
                if getattr(self, "finetuned_pretrained_", False):
                    return HybridTexts(X, texts)
                return HybridFeatures(X, self._embed(texts))
            return X
        X = X.toarray() if sp.issparse(X) else X
        return np.ascontiguousarray(X, dtype=np.float32)

    def _pretrained_embedder(self):
        from .pretrained import PretrainedTextEmbedder

        emb = getattr(self, "_embedder", None)
        if emb is None:
            device = _resolve_device(self.device)
            emb = PretrainedTextEmbedder(self.pretrained_model, max_length=self.pretrained_max_length,
                                         device=device, verbose=bool(self.verbose))
            self._embedder = emb
        return emb

    def _embed(self, texts):
        """Frozen pretrained embeddings of ``texts``, cached on disk by ``memory`` when set."""
        if self.memory is None:
            return self._pretrained_embedder().embed(texts)
        from .pretrained import EmbeddingCache, resolve_pretrained_path

        location = getattr(self.memory, "location", self.memory)  # a joblib.Memory or a directory
        if location is None:
            return self._pretrained_embedder().embed(texts)
        key = f"{os.path.abspath(resolve_pretrained_path(self.pretrained_model))}|{self.pretrained_max_length}|mean"
        return EmbeddingCache(location, key).embed(list(texts), lambda t: self._pretrained_embedder().embed(t))

    def _features(self, X, fitting, tfidf=None):
        kind, X = self._check_input(X, fitting)
        return self._vectorize(kind, X, fitting, tfidf)

    def _make_encoder(self, n_features, pretrained_dim=None):
        if self.encoder == "transformer":
            return TransformerEncoder(self.pretrained_model, max_length=self.pretrained_max_length, dropout=self.dropout)
        if pretrained_dim is not None:
            transformer = None
            if getattr(self, "finetuned_pretrained_", False):  # mean pooling, as the frozen embeddings
                transformer = TransformerEncoder(self.pretrained_model, max_length=self.pretrained_max_length,
                                                 pooling="mean", dropout=0.0)
            return HybridEncoder(n_features, pretrained_dim, self.embed_dim, self.dropout,
                                 pretrained_scale=self._resolve_pretrained_scale(pretrained_dim), transformer=transformer)
        cls = SparseBagEncoder if self.encoder == "tfidf" else DenseMLPEncoder
        return cls(n_features, self.embed_dim, self.dropout)

    def _resolve_pretrained_scale(self, pretrained_dim):
        scale = getattr(self, "pretrained_scale", 1.0)  # models pickled before the parameter existed used none
        if isinstance(scale, str) and scale == "auto":
            return float(pretrained_dim) ** 0.25
        return float(scale)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Cluster the labels, train stage 1, initialise A (Eq. 9–10), train stage 2.

        Parameters
        ----------
        X : list of str, sparse matrix (n_samples, n_features), or ndarray (encoder="dense")
        y : sparse indicator matrix (n_samples, n_labels) or sequence of label collections

        Returns
        -------
        self
        """
        self._check_params()
        t_start = time.perf_counter()
        kind, X = self._check_input(X, fitting=True)
        self.label_indexer_ = LabelIndexer().fit(y)
        Y = self.label_indexer_.transform(y)
        check_n_rows(len(X) if kind == "text" else X.shape[0], Y.shape[0])
        if Y.nnz == 0:
            raise ValueError("y has no positive label at all; there is nothing to learn.")
        device = _resolve_device(self.device)
        ft = self.finetune_pretrained
        self.finetuned_pretrained_ = bool(self.pretrained_model is not None and self.encoder == "tfidf" and kind == "text"
                                          and (device.type == "cuda" if ft == "auto" else ft))
        X = self._vectorize(kind, X, fitting=True)
        self._fitted_on_matrix = is_label_matrix(y)
        self.classes_ = self.label_indexer_.classes_
        self.label_frequency_ = np.asarray(Y.sum(axis=0), dtype=np.float32).ravel()
        self.n_features_in_ = self.vectorizer_.transform(["x"]).shape[1] if isinstance(X, TextRows) else X.shape[1]
        rs = check_random_state(self.random_state)
        seed = int(rs.randint(2**31 - 1))
        torch.manual_seed(seed)
        use_amp = device.type == "cuda"
        L = Y.shape[1]

        # optional validation split for model selection
        evaluate, X_tr, Y_tr = None, X, Y
        if self.validation_size:
            n_val = self.validation_size if isinstance(self.validation_size, numbers.Integral) else round(
                self.validation_size * X.shape[0]
            )
            if not 0 < n_val < X.shape[0]:
                raise ValueError(f"validation_size gives {n_val} validation rows out of {X.shape[0]}.")
            perm = rs.permutation(X.shape[0])
            val, tr = perm[:n_val], perm[n_val:]
            X_tr, Y_tr, X_val, Y_val = X[tr], Y[tr], X[val], Y[val]

            def evaluate(net):
                lab, _ = predict_topk_scores(net, X_val, make_batch=make_batch, k=5,
                                              batch_size=self.batch_size, device=device, use_amp=use_amp)
                return _ndcg(Y_val, np.where(lab >= 0, lab, -1), 5)

        # 1. stage-1 index: balanced clustering of PIFA label centroids (App. D.1)
        t0 = time.perf_counter()
        C = self.n_clusters if self.n_clusters is not None else default_n_clusters(L, self.max_leaf_size)
        C = min(C, L)
        if isinstance(X_tr, TextRows):  # fine-tuned transformer: cluster on PIFA of the TF-IDF (bow) features
            tree = cluster_labels(Y_tr, self.vectorizer_.transform(X_tr.texts), n_clusters=C, random_state=rs)
        elif isinstance(X_tr, HybridFeatures):  # PIFA over [TF-IDF, pretrained embedding] (Eq. 14-15)
            tree = cluster_labels(Y_tr, X_tr.sparse, X_tr.dense, n_clusters=C, random_state=rs)
        elif isinstance(X_tr, HybridTexts):  # fine-tuned hybrid: PIFA over [TF-IDF, frozen pretrained embedding]
            dense = self._embed(X_tr.texts.texts)
            self._pretrained_dim = dense.shape[1]
            tree = cluster_labels(Y_tr, X_tr.sparse, dense, n_clusters=C, random_state=rs)
        elif sp.issparse(X_tr):
            tree = cluster_labels(Y_tr, X_tr, n_clusters=C, random_state=rs)
        else:
            tree = cluster_labels(Y_tr, None, X_tr, n_clusters=C, random_state=rs)
        self.label_tree_ = tree
        a_ind, a_mask, _ = padded_adjacency(tree.adjacency(), L)
        if not isinstance(X, HybridTexts):
            self._pretrained_dim = X.dense.shape[1] if isinstance(X, HybridFeatures) else None
        enc = self._make_encoder(X.shape[1], self._pretrained_dim)
        self.pretrained_scale_ = (None if self._pretrained_dim is None
                                  else self._resolve_pretrained_scale(self._pretrained_dim))
        dense_scoring = self.label_scoring == "dense" or (self.label_scoring == "auto" and L <= 2**17)
        # b_l starts at the log-odds of a scored label being positive: with b_l = 0 every one of the K
        # scored labels starts at σ = 0.5, and on 10⁴+ labels the first steps' "push everything down"
        # gradient collapses the encoder (measured: a one-vs-all model on tibkat-en stuck at validation
        # nDCG@5 0.02 after 3 epochs; 0.38 with this initialisation)
        K = min(self.shortlist_size, L)
        y_bar = min(Y_tr.nnz / max(1, Y_tr.shape[0]), K / 2)
        net = ELIASNetwork(enc, L, a_ind, a_mask, alpha=self.alpha, beta=self.beta,
                           beam_size=min(self.beam_size, C), shortlist_size=K,
                           learn_adjacency=False, dense_label_scoring=dense_scoring, seed=seed,
                           label_bias_init=float(np.log(y_bar / (K - y_bar)))).to(device)
        make_batch = enc.make_batch
        self.fit_time_ = {"clustering": time.perf_counter() - t0}
        self.weight_decay_ = float(self.weight_decay) if self.weight_decay != "auto" else (
            0.5 if self.encoder == "tfidf" and self.pretrained_model is not None else 0.01)
        common = dict(make_batch=make_batch, batch_size=self.batch_size, lr=self.lr,
                      lr_encoder=self.lr_encoder if self.lr_encoder is not None else (
                          1e-4 if self.encoder == "transformer" else self.lr),
                      weight_decay=self.weight_decay_, warmup=self.warmup, loss_lambda=self.loss_lambda,
                      accumulation_steps=self.accumulation_steps, rng=rs, device=device, use_amp=use_amp,
                      verbose=self.verbose, evaluate=evaluate, embedding_optimizer=self.embedding_optimizer,
                      lr_pretrained=(self.lr_pretrained if self.lr_pretrained is not None else 1e-4)
                      if self.finetuned_pretrained_ else None)

        # 2. stage 1: A fixed
        t0 = time.perf_counter()
        self.history_ = [dict(stage=1, **h) for h in train_stage(net, X_tr, Y_tr, n_epochs=self.n_epochs_stage1,
                                                                 desc="stage 1", **common)]
        self.fit_time_["stage1"] = time.perf_counter() - t0

        # 3. stage 2: A's support from M^T Y (Eq. 9-10), every label kept reachable
        self.selected_stage_ = 1
        stage1_best, stage1_net = -np.inf, None
        if self.n_epochs_stage2 > 0 and evaluate is not None:  # model selection may keep the stage-1 model
            stage1_best = max(h["val_ndcg@5"] for h in self.history_)
            stage1_net = copy.deepcopy(net).cpu()
        if self.n_epochs_stage2 > 0:
            t0 = time.perf_counter()
            kappa = self.kappa if self.kappa is not None else 10 * -(-L // C)
            kappa = min(kappa, L)
            M = cluster_matching_matrix(net, X_tr, make_batch=make_batch, batch_size=1024, device=device)
            support = approximate_adjacency(M, Y_tr, kappa, fallback_parent=tree.labels_)
            if self.adjacency_init == "tree":  # the stage-1 edges stay in A's support
                support = (support + 1e-6 * tree.adjacency()).tocsr()
            a_ind, a_mask, a_val = padded_adjacency(support, L)
            init = None
            if self.adjacency_init == "tree":  # stage 2 starts from exactly the stage-1 index
                init = tree_preserving_values(a_ind, a_mask, a_val, tree.labels_, self.beta)
            elif self.adjacency_init == "approx":  # log of A' normalised by its row maximum (floored at 1e-3)
                rowmax = np.maximum(np.where(a_mask, a_val, 0).max(axis=1, keepdims=True), 1e-30)
                init = np.log(np.clip(np.where(a_mask, a_val, 0) / rowmax, 1e-3, 1.0)).astype(np.float32)
            net.set_adjacency(a_ind, a_mask, seed=seed + 1, a_values=init)
            self.fit_time_["stage2_init"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            f = self.stage2_lr_factor
            stage2 = dict(common, lr=common["lr"] * f, lr_encoder=common["lr_encoder"] * f,
                          lr_pretrained=common["lr_pretrained"] and common["lr_pretrained"] * f,
                          lr_adjacency=self.lr_adjacency if self.lr_adjacency is not None else self.lr)
            self.history_ += [dict(stage=2, **h) for h in train_stage(net, X_tr, Y_tr, n_epochs=self.n_epochs_stage2,
                                                                      desc="stage 2", **stage2)]
            self.fit_time_["stage2"] = time.perf_counter() - t0
            self.selected_stage_ = 2
            if stage1_net is not None and max(h["val_ndcg@5"] for h in self.history_ if h["stage"] == 2) < stage1_best:
                logger.info("stage 2 did not beat stage 1 on the validation split (nDCG@5 %.4f); keeping stage 1",
                            stage1_best)
                net, self.selected_stage_ = stage1_net.to(device), 1
        self.network_ = net
        self.fit_time_["total"] = time.perf_counter() - t_start
        return self

    # ------------------------------------------------------------------ prediction
    def _raw_topk(self, X, k, embeddings=False, tfidf=None):
        check_is_fitted(self, "network_")
        X = self._features(X, fitting=False, tfidf=tfidf)
        net = self.network_
        device = next(net.parameters()).device
        return predict_topk_scores(net, X, make_batch=net.encoder.make_batch, k=k, batch_size=max(self.batch_size, 512),
                                   device=device, use_amp=device.type == "cuda", embeddings=embeddings)

    def _n_scored(self):
        check_is_fitted(self, "network_")
        return self.network_.shortlist_size

    def transform(self, X):
        """Embeddings φ(X), ndarray (n_samples, embed_dim) float32 (used by the sparse re-ranker)."""
        return self._raw_topk(X, 1, embeddings=True)[2]

    # ------------------------------------------------------------------ index analysis (paper App. E)
    def adjacency_matrix(self):
        """Edge scores ŝ_{c,l} of the index as a CSR matrix (n_clusters, n_labels), float32.

        Stage 2: ``min(1, β·softmax_row(a))`` (Eq. 5) on A's support; stage 1: the 0/1 clustering.
        ``(A > t).sum(axis=0)`` gives the number of clusters each label hangs under.
        """
        check_is_fitted(self, "network_")
        net = self.network_
        with torch.no_grad():
            es = net.log_edge_scores().exp()[:-1].cpu().numpy()
        ind = net.a_indices[:-1].cpu().numpy()
        mask = net.a_mask[:-1].cpu().numpy() & (es > 0)
        rows = np.repeat(np.arange(ind.shape[0]), ind.shape[1]).reshape(ind.shape)
        return sp.csr_matrix((es[mask], (rows[mask], ind[mask])), shape=(net.n_clusters, net.n_labels))

    def prune_index(self, threshold=None, top_k=None):
        """A copy of this model whose index keeps only strong edges (paper App. E).

        Parameters
        ----------
        threshold : float, optional
            Drop edges with score ŝ_{c,l} < threshold.
        top_k : int, optional
            Keep at most ``top_k`` edges per cluster (the strongest).

        Returns
        -------
        ELIASClassifier
            Every label keeps its strongest edge, so none becomes unreachable.
        """

        check_is_fitted(self, "network_")
        A = self.adjacency_matrix().tocoo()
        c, l, v = A.row, A.col, A.data
        keep = np.ones(v.size, dtype=bool)
        if threshold is not None:
            keep &= v >= threshold
        if top_k is not None:
            _check_k(top_k, name="top_k")
            order = np.lexsort((-v, c))
            first = np.searchsorted(c[order], c[order], side="left")
            rank = np.empty(v.size, dtype=np.int64)
            rank[order] = np.arange(v.size) - first
            keep &= rank < top_k
        order = np.lexsort((-v, l))  # every label keeps its strongest edge
        is_first = np.ones(v.size, dtype=bool)
        is_first[1:] = l[order][1:] != l[order][:-1]
        keep[order[is_first]] = True
        P = sp.csr_matrix((v[keep], (c[keep], l[keep])), shape=A.shape)
        pruned = copy.deepcopy(self)
        a_ind, a_mask, scores = padded_adjacency(P, self.network_.n_labels)
        with np.errstate(divide="ignore"):
            log_edges = np.where(a_mask, np.log(np.maximum(scores, 1e-30)), -np.inf)
        pruned.network_.fix_adjacency(a_ind, a_mask, log_edges)
        return pruned

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_embedder", None)  # the frozen pretrained model is reloaded from pretrained_model
        net = state.pop("network_", None)
        if net is not None:
            state["_network_cpu"] = {
                "config": dict(n_features=self.n_features_in_, learn_adjacency=net.learn_adjacency,
                               fixed_edges=net.fixed_log_edges is not None,
                               dense_label_scoring=net.dense_label_scoring, beam_size=net.beam_size,
                               shortlist_size=net.shortlist_size, alpha=net.alpha, beta=net.beta),
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            }
        return state

    def __setstate__(self, state):
        saved = state.pop("_network_cpu", None)
        self.__dict__.update(state)
        if saved is not None:
            cfg, sd = saved["config"], saved["state_dict"]
            enc = self._make_encoder(cfg["n_features"], state.get("_pretrained_dim"))
            net = ELIASNetwork(enc, sd["label_bias"].shape[0], sd["a_indices"].numpy(), sd["a_mask"].numpy(),
                               alpha=cfg["alpha"], beta=cfg["beta"], beam_size=cfg["beam_size"],
                               shortlist_size=cfg["shortlist_size"], learn_adjacency=cfg["learn_adjacency"],
                               dense_label_scoring=cfg["dense_label_scoring"])
            if isinstance(enc, HybridEncoder):  # models saved before the input scale existed used none
                sd.setdefault("encoder.pretrained_scale", torch.tensor(1.0))
            if cfg.get("fixed_edges"):
                net.fixed_log_edges = torch.empty_like(sd["fixed_log_edges"])
            net.load_state_dict(sd)
            net.eval()
            self.network_ = net

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # embeddings are always float32
        return tags

