"""Shared pieces of the benchmark scripts: metrics in the union label space, subprocess runs, tables."""

import json
import os
import subprocess
import sys

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from skelias import LabelIndexer, inverse_propensity, xmc_metrics
from skelias.datasets import load_dataset
from skelias.ensemble import average_topk as ensemble_average_topk

from .tables import METRICS


def parse_params(pairs):
    """``["k=v", ...]`` → dict; values that look like JSON (numbers, lists, true/false/null) are decoded."""
    out = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:  # a plain string such as adjacency_init=tree
            out[k] = v
    return out


#: Row names of the calibrated ELIAS++ chain in bench_elias_pp.py's output: the split chain, then its refit.
FINAL_CHAIN_ROWS = ("+ score calibration", "+ refit on all rows")


def final_chain(rows):
    """The last calibrated-chain row (the refit one when there is one), or None."""
    rows = [r for r in rows if r["model"].startswith(FINAL_CHAIN_ROWS)]
    return rows[-1] if rows else None


def peer_tfidf():
    """The features every method is measured on: sublinear tf, 1-2 grams, <= 200k features, min_df 2."""
    return TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), max_features=200_000, min_df=2, dtype=np.float32)


def load_split(data, split):
    """``(X, y)`` of a dataset folder: raw texts and label lists (text layout), or an XMC sparse feature matrix
    (CSR float32, rows L2-normalised, as every method is given it) and label lists (names from
    ``label_names.txt`` when the folder has one, else column indices)."""
    X, Y = load_dataset(data, split)
    if isinstance(X, list):
        return X, Y
    names = os.path.join(data, "label_names.txt")
    if os.path.isfile(names):
        with open(names, encoding="utf-8") as fh:
            names = np.array([line.rstrip("\n") for line in fh], dtype=object)
    else:
        names = np.arange(Y.shape[1])
    Y = sp.csr_matrix(Y)
    labels = [names[Y.indices[Y.indptr[i]:Y.indptr[i + 1]]].tolist() for i in range(Y.shape[0])]
    return normalize(sp.csr_matrix(X, dtype=np.float32)), labels


def is_text(X):
    """Raw texts (a list) rather than a feature matrix."""
    return isinstance(X, list)


def take(X, rows):
    """Rows ``rows`` of texts or of a feature matrix."""
    return [X[i] for i in rows] if is_text(X) else X[np.asarray(rows)]


def slug(name):
    """A file-name-safe version of a model name."""
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def union_metrics(classes, idx, scores, ytr, yte, topk_out=None):
    """The report of bench tables for top-k column indices ``idx`` into ``classes`` (-1 = padding).

    Metrics are computed in the union of the training and test label spaces (test labels never seen
    in training count as misses), with propensities (A = 0.55, B = 1.5) of the training labels.
    ``topk_out``: also save the top-100 predictions as union-space column indices (``idx``, int32), their
    scores (``scores``, float32) and the union label names (``classes``) to this ``.npz`` file, for the
    plots and for ensembles (:func:`average_topk`).
    """
    space = LabelIndexer(classes=[label for row in yte for label in row]).fit(ytr)
    remap = space.indices_of(np.asarray(classes))
    idx_u = np.where(idx >= 0, remap[np.maximum(idx, 0)], -1)
    m = xmc_metrics(space.transform(yte), (idx_u, np.where(idx_u >= 0, scores, -np.inf)), ks=(1, 3, 5),
                    recall_ks=(10, 100), inv_prop=inverse_propensity(space.transform(ytr)))
    if topk_out:
        order = np.argsort(-np.where(idx_u >= 0, scores, -np.inf), axis=1, kind="stable")[:, :100]
        np.savez_compressed(topk_out, idx=np.take_along_axis(idx_u, order, axis=1).astype(np.int32),
                            scores=np.take_along_axis(scores, order, axis=1).astype(np.float32),
                            classes=np.asarray(space.classes_, dtype=str))
    return {c: m[c] for c in METRICS}


def average_topk(files, k=100):
    """Ensemble of saved top-k predictions (``union_metrics(topk_out=)`` files of the same test set).

    The averaging is :func:`skelias.ensemble.average_topk`, the one :class:`skelias.TopKEnsemble` uses.
    Returns ``(classes, idx, scores)`` with the ensemble's top ``k`` per row.
    """
    members = [np.load(f) for f in files]
    classes = members[0]["classes"]
    if any(len(m["classes"]) != len(classes) or np.any(m["classes"] != classes) for m in members):
        raise ValueError("the files hold predictions in different label spaces")
    idx, top = ensemble_average_topk([(m["idx"], m["scores"]) for m in members], len(classes), k)
    return classes, idx, top


def run_child(cmd, name, out=None, timeout=None, env=None, all_records=False):
    """Run one benchmark child process; return its last ``RESULT {json}`` record (None on failure).

    ``all_records=True``: return the list of all its records (those printed before a failure too).
    """
    try:
        proc = subprocess.run(cmd, check=False, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout:.0f} s", file=sys.stderr)
        return [] if all_records else None
    recs = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not recs:
        print(f"{name}: failed (exit {proc.returncode})", file=sys.stderr)
        if not all_records:
            return None
    if out:
        with open(out, "a") as fh:
            fh.writelines(json.dumps(rec) + "\n" for rec in (recs if all_records else recs[-1:]))
    return recs if all_records else recs[-1]


def synthetic_problem(n_labels, n_docs, n_features, seed=0, labels_per_doc=3, words_per_doc=20, n_topics=2000):
    """A power-law XMC problem over topic-structured sparse documents: ``(X, Y)`` CSR float32.

    Each label belongs to one of ``n_topics`` topics; each document picks a topic, ``labels_per_doc``
    labels of it (Zipf(1.3) ranks within the topic: power-law label frequencies) and ``words_per_doc``
    words (70 % from the topic's 50 words, the rest uniform). Every label has at least one document.
    """
    rng = np.random.default_rng(seed)
    L, N, D = n_labels, n_docs, n_features
    label_topic = rng.integers(0, n_topics, L)
    order = np.argsort(label_topic, kind="stable")
    topic_start = np.searchsorted(label_topic[order], np.arange(n_topics + 1))
    doc_topic = rng.integers(0, n_topics, N)
    sizes = topic_start[doc_topic + 1] - topic_start[doc_topic]
    ok = sizes > 0  # a topic without labels: the document takes the first topic that has some
    doc_topic[~ok] = label_topic[order[0]]
    sizes = topic_start[doc_topic + 1] - topic_start[doc_topic]
    ranks = np.minimum(rng.zipf(1.3, (N, labels_per_doc)) - 1, sizes[:, None] - 1)
    lab = order[topic_start[doc_topic][:, None] + ranks]
    # cover every label at least once
    lab[: L // labels_per_doc + 1].flat[:L] = rng.permutation(L)[: min(L, (L // labels_per_doc + 1) * labels_per_doc)]
    Y = sp.csr_matrix((np.ones(lab.size, np.float32), lab.ravel(), np.arange(0, lab.size + 1, labels_per_doc)),
                      shape=(N, L))
    Y.sum_duplicates()
    Y.data[:] = 1
    topic_words = rng.integers(0, D, (n_topics, 50))
    words = np.where(
        rng.random((N, words_per_doc)) < 0.7,
        topic_words[doc_topic[:, None], rng.integers(0, 50, (N, words_per_doc))],
        rng.integers(0, D, (N, words_per_doc)),
    )
    X = sp.csr_matrix(
        (rng.random(words.size).astype(np.float32) + 0.1, words.ravel(), np.arange(0, words.size + 1, words_per_doc)),
        shape=(N, D),
    )
    X.sum_duplicates()
    return X, Y
