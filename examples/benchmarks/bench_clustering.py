"""Label-clustering speed and memory: tibkat-en (real) and a synthetic power-law problem.

Usage::

    python -m examples.benchmarks.bench_clustering tibkat [--data ../shared/datasets/tibkat-en]
    python -m examples.benchmarks.bench_clustering synthetic --n-labels 1000000

Prints the time of each step (TF-IDF, PIFA, balanced k-means), the peak RSS of
the process, the number of clusters and the range of cluster sizes.
"""

import argparse
import logging
import resource
import time

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from skelias import LabelIndexer, balanced_kmeans, pifa
from skelias.datasets import load_text_dataset

from ._common import synthetic_problem


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report(name, t0, tree=None):
    msg = f"{name:<28s} {time.perf_counter() - t0:8.2f} s   peak RSS {peak_rss_gib():6.2f} GiB"
    if tree is not None:
        sizes = tree.cluster_sizes()
        msg += f"   C={tree.n_clusters} depth={tree.depth} sizes in [{sizes.min()}, {sizes.max()}]"
    print(msg, flush=True)


def tibkat(args):

    texts, labels = load_text_dataset(args.data, "train")
    _test_texts, test_labels = load_text_dataset(args.data, "test")
    # the label space of the whole dataset (22,897 labels; test-only labels have no positives)
    indexer = LabelIndexer(classes=sorted({l for row in test_labels for l in row})).fit(labels)
    Y = indexer.transform(labels)
    print(f"tibkat-en train: {Y.shape[0]} docs, {Y.shape[1]} labels")
    t0 = time.perf_counter()
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), max_features=200_000, min_df=2, dtype=np.float32)
    X = vec.fit_transform(texts)
    report(f"TF-IDF ({X.shape[1]} feats, nnz {X.nnz})", t0)
    t_all = time.perf_counter()
    Z = pifa(Y, X)
    report(f"PIFA (nnz {Z.nnz})", t_all)
    t0 = time.perf_counter()
    tree = balanced_kmeans(Z, n_clusters=args.n_clusters, random_state=0, verbose=True)
    report("balanced k-means", t0, tree)
    report("PIFA + k-means (total)", t_all, tree)


def synthetic(args):
    """Power-law labels over topic-structured sparse documents."""
    L, N, D = args.n_labels, args.n_docs, args.n_features
    t0 = time.perf_counter()
    X, Y = synthetic_problem(L, N, D)
    report(f"generate N={N} D={D} L={L}", t0)
    t_all = time.perf_counter()
    Z = pifa(Y, X)
    del X, Y
    report(f"PIFA (nnz {Z.nnz})", t_all)
    t0 = time.perf_counter()
    tree = balanced_kmeans(Z, max_leaf_size=100, random_state=0, verbose=True)
    report("balanced k-means", t0, tree)
    report("PIFA + k-means (total)", t_all, tree)


if __name__ == "__main__":

    logging.basicConfig(level=logging.INFO, format="  %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="which", required=True)
    a = sub.add_parser("tibkat")
    a.add_argument("--data", default="../shared/datasets/tibkat-en")
    a.add_argument("--n-clusters", type=int, default=256)
    b = sub.add_parser("synthetic")
    b.add_argument("--n-labels", type=int, default=1_000_000)
    b.add_argument("--n-docs", type=int, default=1_000_000)
    b.add_argument("--n-features", type=int, default=100_000)
    args = p.parse_args()
    {"tibkat": tibkat, "synthetic": synthetic}[args.which](args)
