"""ELIASClassifier: the paper's end-to-end learned index as a scikit-learn estimator."""

from __future__ import annotations

import copy
import numbers
import os
import time
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import check_random_state

from ._auto import SMALL_DATA_ROWS, auto_dropout, auto_lr
from ._base import TopKOutputMixin, fill_new_parameters, fit_aside, require_fitted, store_params
from ._distributed import join_process_group, rank_device, resolve_device
from ._features import fit_feature_idf, has_binary_rows, weight_features
from ._hybrid import PretrainedHalfMixin
from ._inputs import HybridFeatures, HybridTexts, TextRows, pifa_blocks
from ._labels import LabelIndexer, as_targets, is_label_matrix, target_kind
from ._logging import logger, verbose_logging
from ._network import ELIASNetwork
from ._stages import TwoStageFitMixin
from ._training import TrainingConfig, predict_topk_scores, validation_ndcg
from ._typing import InputLike, TargetLike
from ._validation import (
    HasMethods,
    Interval,
    StrOptions,
    apply_vectorizer,
    check_k,
    check_n_rows,
    check_X,
    default_vectorizer,
    n_validation_rows,
    non_negative_real,
    positive_int,
    positive_real,
    validation_size_constraint,
)
from .cluster import cluster_labels, default_n_clusters
from .encoders import DenseMLPEncoder, HybridEncoder, SparseBagEncoder, TransformerEncoder
from .index import ADJACENCY_INITS, padded_adjacency, prune_edges

__all__ = ["ELIASClassifier", "auto_dropout", "auto_lr"]


def _own_torch_rng(device):
    """Fork torch's global RNG (CPU, and the CUDA device in use): what runs inside leaves the caller's state as it was."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=cuda)


def _label_bias_init(Y, K):
    """log(ȳ / (K − ȳ)): the log-odds of a shortlisted label being positive, ȳ the mean labels per row (≤ K/2).

    With b_l = 0 every shortlisted label starts at σ = 0.5, and on 10⁴+ labels the first steps'
    "push everything down" gradient can collapse the encoder.
    """
    y_bar = min(Y.nnz / max(1, Y.shape[0]), K / 2)
    return float(np.log(y_bar / (K - y_bar)))


class ELIASClassifier(TwoStageFitMixin, PretrainedHalfMixin, TopKOutputMixin, TransformerMixin, BaseEstimator):
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
        texts (CLS pooling, as in the paper; ``embed_dim`` is then its hidden size). The GPU path.
    vectorizer : TfidfVectorizer or None, default=None
        Turns raw texts into features. ``None``: chosen from the training texts' mean length
        (:func:`skelias.default_vectorizer`): character 3–5-grams for short texts (≤ 300 characters:
        titles, questions, queries), word 1–2 grams otherwise; sublinear tf, ≤ 200k features, min_df 2.
    feature_weighting : {"auto", "idf", "none"}, default="auto"
        Column weights for a feature matrix given to ``encoder="tfidf"`` (raw texts are weighted by
        ``vectorizer``). ``"idf"``: each column times its training inverse document frequency
        (``ln((1 + n) / (1 + df)) + 1``), rows then scaled to unit length; ``"none"``: the matrix as
        given; ``"auto"``: ``"idf"`` when every row's non-zeros are equal (a binary bag of words,
        possibly row-normalised, which carries no term weighting), else ``"none"``. Resolved in
        ``feature_idf_``.
    pretrained_model : str or None, default=None
        With ``encoder="transformer"``: the model to fine-tune. With ``encoder="tfidf"``: the
        hybrid encoder, ``φ(x) = f(bag(TF-IDF(x)) + W_p·e(x))`` with e(x) the mean-pooled,
        normalised embedding of this model (a local Hugging Face directory, an
        offline-resolvable name, or ``"all-MiniLM-L6-v2"`` with ``skelias[minilm]``). Needs raw texts.
    pretrained_max_length : int, default=64
        Tokens per text given to the pretrained model.
    pretrained_pooling : {"auto", "mean", "cls"}, default="auto"
        How the hybrid encoder pools the pretrained model's token states: ``"auto"`` follows a
        sentence-transformers model's own pooling configuration (``1_Pooling/config.json``; mean pooling
        when there is none).
    pretrained_download : bool, default=False
        Allow downloading ``pretrained_model`` from the Hugging Face Hub when it is neither a local
        directory nor in the local cache. Off by default: nothing is downloaded unless asked for.
    pretrained_backend : {"auto", "torch", "onnx", "onnx-int8", "static"}, default="auto"
        What computes the frozen pretrained embeddings: ``"onnx-int8"``, ONNX Runtime (``pip install
        "skelias[fast]"``) on the model exported once in memory with int8 weights and matrix products
        (:func:`skelias.pretrained.quantize_onnx`): embeddings close to float32's (cosine ≈ 0.99) at a
        fraction of the time; ``"onnx"``: the float32 export, the same embeddings as torch to float
        precision; ``"torch"``; ``"auto"``: ``"onnx-int8"`` on the CPU when ONNX Runtime is installed,
        else torch (CUDA always uses torch). The backend resolved at fit is ``pretrained_backend_`` and
        is used at prediction too (a model fitted on int8 embeddings falls back to float32, with a
        warning, where ONNX Runtime is missing).
        ``"static"``: a static student of the model, no transformer forward per text: a text's embedding
        is the normalised sum of its tokens' vectors. The vectors are distilled once at fit (each token's
        own embedding, :func:`skelias.pretrained.distill_token_table`), weighted by the token's inverse
        document frequency in the training texts, then fitted to the transformer's embeddings of
        ``pretrained_static_texts`` training texts. Cheaper to fit and far cheaper to query than the
        transformer, and less accurate (the measured cost is in the design notes). The hybrid encoder is
        then frozen.
    pretrained_static_texts : int, default=10000
        ``pretrained_backend="static"``: training texts (evenly spaced, at most this many) that the
        transformer embeds to fit the static student to; 0: the distilled token vectors only.
    pretrained_scale : float or "auto", default="auto"
        The unit-norm pretrained embedding is multiplied by this before its projection (hybrid
        encoder). ``"auto"``: p^(1/4) for a p-dimensional embedding, between the raw unit vector
        and unit-variance entries (√p). The resolved value is ``pretrained_scale_``.
    finetune_pretrained : {"auto", True, False}, default="auto"
        Hybrid encoder only. ``True``: the pretrained transformer is trained with the rest of
        the model (learning rate ``lr_pretrained``). ``False``: frozen, embedded once per call.
        ``"auto"``: fine-tune on CUDA, frozen on CPU. The stage-1 clustering always uses the
        frozen embeddings.
    lr_pretrained : float or None, default=None
        Learning rate of the fine-tuned pretrained transformer; ``None``: 1e-4.
    embed_dim : int, default=512
        d, the embedding size of φ.
    dropout : float or "auto", default="auto"
        Dropout on φ's output during training. ``"auto"``: 0.5 below 20,000 training rows, where
        the encoder otherwise memorises the few rows of each label, else 0.2 (always 0.2 for
        ``encoder="transformer"``; :func:`auto_dropout`); resolved in ``dropout_``.
    n_clusters : int or None, default=None
        C, the number of label clusters. ``None``: ``2**ceil(log2(L / max_leaf_size))``.
    max_leaf_size : int, default=100
        Labels per cluster aimed at when ``n_clusters`` is None.
    alpha : float, default=10
        Eq. 1: at most ~α clusters can reach score 1.
    beta : float, default=150
        Eq. 5: at most ~β labels per cluster can reach edge score 1.
    kappa : int or None, default=None
        Non-zeros per row of A in stage 2. ``None``: ``10 · ceil(L / C)``, capped at L.
    beam_size : int, default=20
        b, clusters shortlisted per input (capped at C).
    shortlist_size : int, default=2000
        K, labels scored by the label classifiers (capped at L).
    loss_lambda : float, default=0.05
        λ of Eq. 8's shortlist loss.
    n_epochs_stage1 : int, default=10
        Epochs with A fixed to the clustering.
    n_epochs_stage2 : int, default=10
        Epochs with A learned; ``0`` gives a stage-1-only model (a fixed-tree index).
    batch_size : int, default=256
        Training rows per step (and prediction rows per forward pass, at least 512).
    lr : float or "auto", default="auto"
        Learning rate of W_C, A and W_L. ``"auto"``: 0.003 below 20,000 training rows, where the
        higher rate overfits the label classifiers' tail, else 0.01 (:func:`auto_lr`); resolved in
        ``lr_``.
    lr_encoder : float or None, default=None
        Learning rate of φ; ``None`` uses ``lr`` (1e-4 for ``encoder="transformer"``).
    stage2_lr_factor : float, default=0.1
        Stage 2 trains φ, W_C and W_L at these times the stage-1 rates. ``1.0`` restarts the
        stage-1 rates, which with ``adjacency_init="random"`` is the paper's recipe.
    lr_adjacency : float or None, default=None
        Learning rate of A's non-zero values in stage 2; ``None`` uses ``lr``.
    adjacency_init : {"tree", "random", "approx"}, default="tree"
        Stage-2 values of A's non-zeros (:func:`skelias.index.stage2_adjacency`). ``"tree"``: A's
        support is the top-κ of A' = MᵀY plus every stage-1 edge, the stage-1 edges at edge score 1
        and the new ones low, so that stage 2 starts from the stage-1 index. ``"random"``:
        random(0, 1) on the support of A' (the paper's Eq. 10). ``"approx"``: log(A'/rowmax(A')).
    weight_decay : float or "auto", default="auto"
        AdamW's decoupled weight decay on weight matrices. ``"auto"``: 0.5 for the hybrid encoder
        (``encoder="tfidf"`` with ``pretrained_model``), 0.01 otherwise; resolved in ``weight_decay_``.
    embedding_optimizer : {"adamw", "sparse_adam"}, default="adamw"
        Optimizer of the TF-IDF embedding table: dense AdamW (exact, over row-sparse gradients),
        or lazy ``torch.optim.SparseAdam`` (only the rows of the features in a batch move; no decay).
    warmup : float, default=0.1
        Fraction of each stage's steps with linear warm-up (then linear decay).
    accumulation_steps : int, default=1
        W_C, A and W_L step once every this many batches (App. C).
    validation_size : int, float or None, default=None
        Training rows held out to select, by nDCG@5, the best epoch of each stage and the
        better of the two stages. An int is a row count, a float a fraction.
    k : int, default=5
        Labels per row returned by :meth:`predict`.
    label_scoring : {"auto", "dense", "gather"}, default="auto"
        ``"dense"`` scores all labels with one matmul then gathers the shortlist (in training, and
        for prediction batches large enough to pay for it); ``"gather"`` scores only the K
        shortlisted classifier rows (at prediction on CPU, one sampled product). ``"auto"``: dense
        up to 2¹⁷ labels.
    memory : str, joblib.Memory or None, default=None
        Directory of a per-text disk cache for the frozen pretrained embeddings (hybrid
        encoder): a text embedded once, by any fit or predict call, is not embedded again.
        Keyed by the model path, ``pretrained_max_length`` and each text's hash.
    checkpoint_dir : str, path-like or None, default=None
        Directory of per-epoch checkpoints: parameters, optimizer states, stage, epoch, the random
        generators' states. A fit started again with the same data and parameters continues from the
        last completed epoch and ends with the model an uninterrupted fit gives (with an int
        ``random_state``); a checkpoint of a different fit there is an error. Written atomically.
    device : str, default="auto"
        Where the network trains and predicts: "cpu", "cuda", "cuda:N" or "auto" (CUDA when
        available). Mixed precision (bf16) only on CUDA.
    distributed : "auto" or False, default="auto"
        Data-parallel training when the script runs under ``torchrun`` (or ``accelerate launch``):
        ``"auto"`` joins the process group the launcher describes (``WORLD_SIZE`` > 1), initialising it
        when needed (gloo on CPU, NCCL on CUDA with one GPU per local rank). Every rank must call ``fit``
        with the same data; each global batch of ``batch_size`` rows is split across the ranks and the
        gradients are summed every step, so every rank ends with the same model. The clustering, the
        stage-2 index and the validation scores are computed on rank 0 and broadcast; only rank 0 writes
        checkpoints. ``False``: train in this process only.
    distributed_timeout : float, default=1800.0
        Seconds a collective waits for the other ranks before failing (a rank that died or hangs).
    random_state : int, RandomState or None, default=None
        Seeds the clustering, the initialisation, the batch order and the validation split.
    verbose : int, default=0
        > 0: progress bars and a log line per epoch.

    Attributes
    ----------
    classes_ : ndarray (n_labels,)
        Label of each column (column indices when fitted on an indicator matrix).
    label_tree_ : LabelTree
        The stage-1 clustering.
    network_ : ELIASNetwork
        The trained torch module (on CPU after unpickling).
    vectorizer_ : TfidfVectorizer or None
        The fitted vectorizer (raw-text input).
    feature_idf_ : ndarray (n_features,) float32 or None
        The column weights applied to a given feature matrix (``feature_weighting``); None when it is
        used as given (and for raw texts).
    history_ : list of dict
        Per-epoch losses (and validation nDCG@5) of both stages.
    fit_time_ : dict
        Seconds spent in clustering, stage 1, stage-2 initialisation and stage 2.
    world_size_ : int
        Number of processes that trained the model (1 without ``torch.distributed``).
    communication_ : dict or None
        Data-parallel fits: gradient bytes this rank sent per step (``bytes_per_step``) against dense
        all-reduces of the same gradients (``dense_bytes_per_step``); None for a single process.
    label_frequency_ : ndarray (n_labels,) float32
        Training positives of each label.
    finetuned_pretrained_ : bool
        Whether the hybrid encoder's pretrained transformer was fine-tuned.
    pretrained_static_table_ : ndarray (vocab_size, p) float32 or None
        ``pretrained_backend="static"``: the token table that embeds texts (distilled vectors times the
        training texts' token idf); None otherwise.
    lr_ : float
        The learning rate used (``lr`` resolved).
    dropout_ : float
        The dropout rate used (``dropout`` resolved).
    weight_decay_ : float
        The weight decay used (``weight_decay`` resolved).
    pretrained_scale_ : float or None
        The pretrained embedding's input scale used; None without a pretrained half.
    pretrained_pooling_ : {"mean", "cls"} or None
        The pooling of the pretrained model's token states used; None without a pretrained model.
    pretrained_backend_ : {"torch", "onnx", "onnx-int8", "static"} or None
        What computed the frozen pretrained embeddings (``pretrained_backend`` resolved); None without a
        frozen pretrained half.
    selected_stage_ : int
        1 or 2: the stage whose model was kept. With ``validation_size``, the stage-1 model
        is kept when no stage-2 epoch beats its best validation nDCG@5.
    n_features_in_ : int
        Features of the (vectorised) input.

    Examples
    --------
    Train on raw texts (a TF-IDF is fitted inside) and ask for the top labels of new ones:

    >>> from skelias import ELIASClassifier
    >>> corpus = {"pasta": "boil pasta in salted water", "bread": "bake bread with yeast",
    ...           "sauce": "simmer a tomato sauce"}
    >>> texts = [corpus[t] + f" {i}" for i in range(40) for t in corpus]
    >>> tags = [[t] for i in range(40) for t in corpus]
    >>> clf = ELIASClassifier(embed_dim=16, n_epochs_stage1=2, n_epochs_stage2=1, random_state=0)
    >>> clf = clf.fit(texts, tags)
    >>> labels, scores = clf.predict_topk(["pasta with sauce"], k=2)
    >>> labels.shape, scores.shape
    ((1, 2), (1, 2))
    >>> sorted(clf.classes_)
    ['bread', 'pasta', 'sauce']
    """

    _parameter_constraints: ClassVar[dict] = {
        "encoder": [StrOptions({"tfidf", "dense", "transformer"})],
        "vectorizer": [None, HasMethods(["fit", "transform"])],
        "feature_weighting": [StrOptions({"auto", "idf", "none"})],
        "pretrained_model": [None, str, os.PathLike],
        "pretrained_max_length": [positive_int],
        "pretrained_pooling": [StrOptions({"auto", "mean", "cls"})],
        "pretrained_download": ["boolean"],
        "pretrained_scale": [StrOptions({"auto"}), positive_real],
        "finetune_pretrained": [StrOptions({"auto"}), "boolean"],
        "lr_pretrained": [None, positive_real],
        "embed_dim": [positive_int],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left"), StrOptions({"auto"})],
        "n_clusters": [None, positive_int],
        "max_leaf_size": [positive_int],
        "alpha": [positive_real],
        "beta": [positive_real],
        "kappa": [None, positive_int],
        "beam_size": [positive_int],
        "shortlist_size": [positive_int],
        "loss_lambda": [non_negative_real],
        "n_epochs_stage1": [positive_int],
        "n_epochs_stage2": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [positive_int],
        "lr": [StrOptions({"auto"}), positive_real],
        "lr_encoder": [None, positive_real],
        "stage2_lr_factor": [positive_real],
        "lr_adjacency": [None, positive_real],
        "adjacency_init": [StrOptions(set(ADJACENCY_INITS))],
        "weight_decay": [StrOptions({"auto"}), non_negative_real],
        "embedding_optimizer": [StrOptions({"adamw", "sparse_adam"})],
        "warmup": [Interval(numbers.Real, 0, 1, closed="left")],
        "accumulation_steps": [positive_int],
        "validation_size": validation_size_constraint,
        "k": [positive_int],
        "label_scoring": [StrOptions({"auto", "dense", "gather"})],
        "memory": [None, str, os.PathLike, HasMethods(["cache"])],
        "checkpoint_dir": [None, str, os.PathLike],
        "device": [str, torch.device],
        "pretrained_backend": [StrOptions({"auto", "torch", "onnx", "onnx-int8", "static"})],
        "pretrained_static_texts": [Interval(numbers.Integral, 0, None, closed="left")],
        "distributed": [StrOptions({"auto"}), "boolean"],
        "distributed_timeout": [positive_real],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, encoder="tfidf", vectorizer=None, feature_weighting="auto", pretrained_model=None,
                 pretrained_max_length=64,
                 pretrained_pooling="auto", pretrained_download=False, pretrained_backend="auto",
                 pretrained_static_texts=10000, pretrained_scale="auto",
                 finetune_pretrained="auto", lr_pretrained=None, embed_dim=512, dropout="auto", n_clusters=None, max_leaf_size=100, alpha=10.0, beta=150.0, kappa=None, beam_size=20,
                 shortlist_size=2000, loss_lambda=0.05, n_epochs_stage1=10, n_epochs_stage2=10, batch_size=256,
                 lr="auto", lr_encoder=None, stage2_lr_factor=0.1, lr_adjacency=None, adjacency_init="tree",
                 weight_decay="auto", embedding_optimizer="adamw", warmup=0.1, accumulation_steps=1,
                 validation_size=None, k=5, label_scoring="auto", memory=None, checkpoint_dir=None, device="auto",
                 distributed="auto", distributed_timeout=1800.0, random_state=None, verbose=0):
        store_params(self, locals())

    # ------------------------------------------------------------------ fit
    def fit(self, X: InputLike, y: TargetLike) -> ELIASClassifier:
        """Cluster the labels, train stage 1, initialise A (Eq. 9–10), train stage 2.

        Parameters
        ----------
        X : list of str, sparse matrix (n_samples, n_features), or ndarray (``encoder="dense"``)
            Raw texts, or features (e.g. the output of a ``TfidfVectorizer``).
        y : sparse indicator matrix (n_samples, n_labels) or sequence of label collections
            The relevant labels of each row.

        Returns
        -------
        self : ELIASClassifier
            The fitted estimator.
        """
        with verbose_logging(self.verbose):
            return fit_aside(self, type(self)._fit, X, as_targets(y))

    def _fit(self, X, y):
        self._check_params()
        device = resolve_device(self.device)
        self._parallel = join_process_group(self.distributed, device, self.distributed_timeout)
        if self._parallel is not None:
            device = rank_device(device)
            self._parallel.device = device if device.type == "cuda" else torch.device("cpu")
        try:
            with _own_torch_rng(device):
                return self._fit_with_torch_rng(X, y, device)
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "allocate" not in str(exc) and "out of memory" not in str(exc):
                raise
            raise MemoryError(f"ELIASClassifier ran out of memory during fit ({str(exc)[:200]}). Reduce embed_dim, "
                              "batch_size or shortlist_size, or the vectorizer's max_features.") from exc

    def _fit_with_torch_rng(self, X, y, device):
        t_start = time.perf_counter()
        X, Y = self._prepare_inputs(X, y, device)
        rs = check_random_state(self.random_state)
        parallel = self._parallel
        if parallel is not None and self.random_state is None:  # one draw for every rank
            rs = np.random.RandomState(parallel.broadcast(int(rs.randint(2**31 - 1))))
        seed = int(rs.randint(2**31 - 1))
        torch.manual_seed(seed)
        X_tr, Y_tr, evaluate = self._validation_split(X, Y, rs, device)

        t0 = time.perf_counter()
        tree, pretrained_dim = self._build_stage1_index(X_tr, Y_tr, rs)
        net = self._build_network(X.shape[1], pretrained_dim, tree, Y_tr, seed, device)
        self.fit_time_ = {"clustering": time.perf_counter() - t0}
        config = self._training_config(device)

        ckpt, saved = self._open_checkpoint(X, Y)
        t0 = time.perf_counter()
        self._train_stage1(net, config, X_tr, Y_tr, rs, evaluate, ckpt, saved)
        self.fit_time_["stage1"] = time.perf_counter() - t0
        self.selected_stage_ = 1
        if self.n_epochs_stage2 > 0:
            net = self._train_stage2(net, tree, X_tr, Y_tr, config, rs, seed, evaluate, device, ckpt, saved)
        self.network_ = net
        self.world_size_ = 1 if parallel is None else parallel.world_size
        self.communication_ = None if parallel is None else parallel.stats()
        if parallel is not None:
            logger.info("data-parallel fit over %d ranks: %.0f gradient bytes sent per step and rank (dense "
                        "all-reduces: %.0f)", parallel.world_size, self.communication_["bytes_per_step"],
                        self.communication_["dense_bytes_per_step"])
        self.fit_time_["total"] = time.perf_counter() - t_start
        return self

    def _check_params(self):
        """Validate every parameter (``_parameter_constraints``) and the combinations they allow."""
        self._validate_params()
        if self.encoder == "transformer" and self.pretrained_model is None:
            raise ValueError("encoder='transformer' needs pretrained_model (a local model directory).")
        if self.pretrained_model is not None and self.encoder == "dense":
            raise ValueError("pretrained_model works with encoder='tfidf' (hybrid) or 'transformer'.")
        if self.pretrained_backend == "static" and not (self.encoder == "tfidf" and self.pretrained_model is not None):
            raise ValueError("pretrained_backend='static' is the hybrid encoder's static student: it needs "
                             "encoder='tfidf' and a pretrained_model.")

    def _prepare_inputs(self, X, y, device):
        """Fit the label space and the vectorizer; return the model input and Y (CSR float32)."""
        kind, X = self._check_input(X, fitting=True)
        self.label_indexer_ = LabelIndexer().fit(y)
        Y = self.label_indexer_.transform(y)
        check_n_rows(len(X) if kind == "text" else X.shape[0], Y.shape[0])
        if Y.nnz == 0:
            raise ValueError("y has no positive label at all; there is nothing to learn.")
        ft = self.finetune_pretrained
        static = self.pretrained_backend == "static"
        if static and ft is True:
            raise ValueError("pretrained_backend='static' embeds with a frozen token table; it cannot be combined "
                             "with finetune_pretrained=True.")
        self.finetuned_pretrained_ = bool(self._is_hybrid() and kind == "text" and not static
                                          and (device.type == "cuda" if ft == "auto" else ft))
        self.pretrained_pooling_ = self._pooling() if self.pretrained_model is not None else None
        self.pretrained_backend_ = (self._resolve_pretrained_backend(device) if self._is_hybrid() and kind == "text"
                                    and not self.finetuned_pretrained_ else None)
        self.pretrained_static_table_ = None
        self._embedder = None
        if static and self._is_hybrid() and kind == "text":
            self.pretrained_static_table_ = self._static_table(X, device)
        X = self._model_input(kind, X, fitting=True)
        self._fitted_on_matrix = is_label_matrix(y)
        self._y_kind = target_kind(y)
        self.classes_ = self.label_indexer_.classes_
        self.label_frequency_ = np.asarray(Y.sum(axis=0), dtype=np.float32).ravel()
        self.n_features_in_ = self.vectorizer_.transform(["x"]).shape[1] if isinstance(X, TextRows) else X.shape[1]
        self.lr_ = float(self.lr) if self.lr != "auto" else auto_lr(Y.shape[0])
        self.dropout_ = float(self.dropout) if self.dropout != "auto" else auto_dropout(Y.shape[0], self.encoder)
        self.weight_decay_ = float(self.weight_decay) if self.weight_decay != "auto" else (
            0.5 if self._is_hybrid() else 0.01)
        return X, Y

    def _validation_split(self, X, Y, rs, device):
        """(X_train, Y_train, evaluate): ``evaluate(net)`` scores nDCG@5 on the held-out rows (None without)."""
        if not self.validation_size:
            return X, Y, None
        n_val = n_validation_rows(self.validation_size, X.shape[0])
        perm = rs.permutation(X.shape[0])
        val, tr = perm[:n_val], perm[n_val:]
        evaluate = validation_ndcg(X[val], Y[val], batch_size=self.batch_size, device=device,
                                   use_amp=device.type == "cuda")
        parallel = getattr(self, "_parallel", None)
        if parallel is not None:  # scored on rank 0, the decision broadcast
            score = evaluate
            evaluate = lambda net: parallel.broadcast(score(net) if parallel.rank == 0 else None)
        return X[tr], Y[tr], evaluate

    def _build_stage1_index(self, X, Y, rs):
        """The stage-1 index: balanced clustering of PIFA label centroids (App. D.1).

        Returns the :class:`~skelias.LabelTree` and the pretrained embedding size (None without one).
        """
        L = Y.shape[1]
        C = min(self.n_clusters if self.n_clusters is not None else default_n_clusters(L, self.max_leaf_size), L)
        sparse, dense = pifa_blocks(X, vectorizer=self.vectorizer_, embed=self._embed)
        t0 = time.perf_counter()
        tree = cluster_labels(Y, sparse, dense, n_clusters=C, random_state=rs, verbose=bool(self.verbose))
        if getattr(self, "_parallel", None) is not None:  # rank 0's clustering on every rank
            tree = self._parallel.broadcast(tree)
        if self.verbose:
            logger.info("clustered %d labels into %d clusters (PIFA + balanced k-means), %.1f s", L, tree.n_clusters,
                        time.perf_counter() - t0)
        self.label_tree_ = tree
        self._pretrained_dim = dense.shape[1] if self._is_hybrid() else None
        return tree, self._pretrained_dim

    def _network_settings(self, L, C):
        """The index and scoring settings of a network over L labels in C clusters."""
        return dict(alpha=self.alpha, beta=self.beta, beam_size=min(self.beam_size, C),
                    shortlist_size=min(self.shortlist_size, L),
                    dense_label_scoring=self.label_scoring == "dense" or (self.label_scoring == "auto" and L <= 2**17))

    def _build_network(self, n_features, pretrained_dim, tree, Y, seed, device):
        """The stage-1 network: A fixed to the clustering, b_l at the log-odds of a shortlisted positive."""
        L = Y.shape[1]
        a_ind, a_mask, _ = padded_adjacency(tree.adjacency(), L)
        enc = self._make_encoder(n_features, pretrained_dim)
        self.pretrained_scale_ = None if pretrained_dim is None else self._resolve_pretrained_scale(pretrained_dim)
        settings = self._network_settings(L, tree.n_clusters)
        return ELIASNetwork(enc, L, a_ind, a_mask, learn_adjacency=False, seed=seed,
                            label_bias_init=_label_bias_init(Y, settings["shortlist_size"]), **settings).to(device)

    def _training_config(self, device):
        """The stage-1 :class:`~skelias._training.TrainingConfig` (stage 2 scales its rates)."""
        lr_encoder = self.lr_encoder if self.lr_encoder is not None else (
            1e-4 if self.encoder == "transformer" else self.lr_)
        lr_pretrained = None
        if self.finetuned_pretrained_:
            lr_pretrained = self.lr_pretrained if self.lr_pretrained is not None else 1e-4
        return TrainingConfig(n_epochs=self.n_epochs_stage1, batch_size=self.batch_size, lr=self.lr_,
                              lr_encoder=lr_encoder, weight_decay=self.weight_decay_, warmup=self.warmup,
                              loss_lambda=self.loss_lambda, accumulation_steps=self.accumulation_steps,
                              lr_pretrained=lr_pretrained, embedding_optimizer=self.embedding_optimizer,
                              device=device, use_amp=device.type == "cuda", verbose=self.verbose, desc="stage 1")

    # ------------------------------------------------------------------ inputs
    def _check_input(self, X, fitting):
        return check_X(
            X,
            n_features=None if fitting or getattr(self, "vectorizer_", None) is not None else self.n_features_in_,
            estimator_name=type(self).__name__,
        )

    def _fit_feature_idf(self, kind, X):
        """``feature_idf_`` for the training input: idf weights for a given matrix when ``feature_weighting`` asks."""
        if kind == "text" or self.encoder != "tfidf" or self.feature_weighting == "none":
            return None
        if self.feature_weighting == "auto" and not has_binary_rows(X):
            return None
        return fit_feature_idf(X)

    def _model_input(self, kind, X, fitting, tfidf=None):
        """The encoder's input for validated X; ``tfidf``: ``vectorizer_.transform(X)`` already computed."""
        if fitting:
            if kind == "text":
                if self.encoder == "dense":
                    raise ValueError("raw texts need encoder='tfidf'; pass a dense feature array for encoder='dense'.")
                self.vectorizer_ = clone(self.vectorizer if self.vectorizer is not None else default_vectorizer(X))
                self.vectorizer_.fit(X)
            else:
                if self.pretrained_model is not None:
                    raise TypeError(f"encoder={self.encoder!r} with pretrained_model needs raw texts, not a feature matrix.")
                self.vectorizer_ = None
        texts = X
        X = tfidf if tfidf is not None and kind == "text" else apply_vectorizer(kind, X, self.vectorizer_)
        if fitting:
            self.feature_idf_ = self._fit_feature_idf(kind, X)
        if getattr(self, "feature_idf_", None) is not None:  # models saved before the attribute existed: None
            X = weight_features(X, self.feature_idf_)
        if self.encoder == "transformer":
            return TextRows(texts)
        if self.encoder == "tfidf":
            if not (sp.issparse(X) and X.format == "csr" and X.dtype == np.float32):
                X = sp.csr_matrix(X, dtype=np.float32)
            if self.pretrained_model is not None:
                if getattr(self, "finetuned_pretrained_", False):
                    return HybridTexts(X, texts)
                return HybridFeatures(X, self._embed(texts))
            return X
        X = X.toarray() if sp.issparse(X) else X
        return np.ascontiguousarray(X, dtype=np.float32)

    def _features(self, X, fitting, tfidf=None):
        kind, X = self._check_input(X, fitting)
        return self._model_input(kind, X, fitting, tfidf)

    def _make_encoder(self, n_features, pretrained_dim=None):
        # the resolved rate; a model saved before dropout="auto" existed has only its number, and an unfitted
        # one (the encoder's structure does not depend on the rate) takes the large-data rate
        dropout = getattr(self, "dropout_", None)
        if dropout is None:
            dropout = float(self.dropout) if self.dropout != "auto" else auto_dropout(SMALL_DATA_ROWS, self.encoder)
        if self.encoder == "transformer":
            return TransformerEncoder(self._pretrained_source(), max_length=self.pretrained_max_length,
                                      dropout=dropout, download=self.pretrained_download)
        if pretrained_dim is not None:
            transformer = None
            if getattr(self, "finetuned_pretrained_", False):  # pooled as the frozen embeddings
                transformer = TransformerEncoder(self._pretrained_source(), max_length=self.pretrained_max_length,
                                                 pooling=self._pooling(), dropout=0.0,
                                                 download=self.pretrained_download)
            return HybridEncoder(n_features, pretrained_dim, self.embed_dim, dropout,
                                 pretrained_scale=self._resolve_pretrained_scale(pretrained_dim), transformer=transformer)
        cls = SparseBagEncoder if self.encoder == "tfidf" else DenseMLPEncoder
        return cls(n_features, self.embed_dim, dropout)

    # ------------------------------------------------------------------ prediction
    def _raw_topk(self, X, k, embeddings=False, tfidf=None, beam_size=None, shortlist_size=None):
        """Top-k column indices and scores; ``beam_size``/``shortlist_size`` default to the current parameters."""
        require_fitted(self, "network_")
        beam_size = check_k(self.beam_size if beam_size is None else beam_size, name="beam_size")
        shortlist_size = check_k(self.shortlist_size if shortlist_size is None else shortlist_size,
                                 name="shortlist_size")
        X = self._features(X, fitting=False, tfidf=tfidf)
        net = self.network_
        device = next(net.parameters()).device
        return predict_topk_scores(net, X, make_batch=net.encoder.make_batch, k=k, batch_size=max(self.batch_size, 512),
                                   device=device, use_amp=device.type == "cuda", embeddings=embeddings,
                                   beam_size=beam_size, shortlist_size=min(shortlist_size, net.n_labels))

    def _n_scored(self):
        require_fitted(self, "network_")
        return self.network_.shortlist_size

    def transform(self, X: InputLike) -> np.ndarray:
        """Embeddings φ(X), ndarray (n_samples, embed_dim) float32 (used by the sparse re-ranker)."""
        return self._raw_topk(X, 1, embeddings=True)[2]

    # ------------------------------------------------------------------ index analysis (paper App. E)
    def adjacency_matrix(self) -> sp.csr_matrix:
        """Edge scores ŝ_{c,l} of the index as a CSR matrix (n_clusters, n_labels), float32.

        Stage 2: ``min(1, β·softmax_row(a))`` (Eq. 5) on A's support; stage 1: the 0/1 clustering.
        ``(A > t).sum(axis=0)`` gives the number of clusters each label hangs under.
        """
        require_fitted(self, "network_")
        net = self.network_
        with torch.no_grad():
            es = net.log_edge_scores().exp()[:-1].cpu().numpy()
        ind = net.a_indices[:-1].cpu().numpy()
        mask = net.a_mask[:-1].cpu().numpy() & (es > 0)
        rows = np.repeat(np.arange(ind.shape[0]), ind.shape[1]).reshape(ind.shape)
        return sp.csr_matrix((es[mask], (rows[mask], ind[mask])), shape=(net.n_clusters, net.n_labels))

    def prune_index(self, threshold: float | None = None, top_k: int | None = None) -> ELIASClassifier:
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
        require_fitted(self, "network_")
        if top_k is not None:
            check_k(top_k, name="top_k")
        P = prune_edges(self.adjacency_matrix(), threshold, top_k)
        pruned = copy.deepcopy(self)
        a_ind, a_mask, scores = padded_adjacency(P, self.network_.n_labels)
        with np.errstate(divide="ignore"):
            log_edges = np.where(a_mask, np.log(np.maximum(scores, 1e-30)), -np.inf)
        pruned.network_.fix_adjacency(a_ind, a_mask, log_edges)
        return pruned

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        """The fitted state on the CPU, with the pretrained transformer's files when the model uses one.

        The frozen embedder is not kept (it is reloaded); the network is stored as its configuration and
        state dict; a fitted model with a pretrained half carries the transformer's files, so that it
        predicts after the original checkpoint is gone.
        """
        from .pretrained import export_pretrained

        state = self.__dict__.copy()
        state.pop("_embedder", None)
        state.pop("_pretrained_dir", None)
        net = state.pop("network_", None)
        if net is not None:
            state["_network_cpu"] = {"config": net.get_config(), "n_features": self.n_features_in_,
                                     "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
            if self.pretrained_model is not None:
                state["_pretrained_files"] = export_pretrained(self._pretrained_source())
        return state

    def __setstate__(self, state):
        from .pretrained import materialize_pretrained

        saved = state.pop("_network_cpu", None)
        files = state.pop("_pretrained_files", None)
        self.__dict__.update(state)
        fill_new_parameters(self)
        if isinstance(files, str):  # a saved model directory's own copy (skelias.load)
            self._pretrained_dir = files
        elif files:  # unpickled: written once to a content-addressed folder
            self._pretrained_dir = materialize_pretrained(files)
        if saved is not None:
            with torch.random.fork_rng(devices=[]):  # module construction draws initial weights we overwrite
                enc = self._make_encoder(saved["n_features"], state.get("_pretrained_dim"))
                self.network_ = ELIASNetwork.from_state(enc, saved["config"], saved["state_dict"])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        tags.transformer_tags.preserves_dtype = ["float32"]  # embeddings are always float32
        return tags
