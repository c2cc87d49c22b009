"""Plots from a benchmark run directory (``run.py``): recall@k curves and label-decile recall (paper Fig. 5).

Usage::

    python -m examples.benchmarks.plots ../shared/datasets/tibkat-en docs/results/tibkat-en

Reads ``topk/*.npz`` (top-100 test predictions as union-space label columns, written by ``bench_peers.py``
and ``bench_elias_pp.py`` with ``--topk-dir``) and writes ``recall_at_k.png`` and ``decile_recall.png`` to
the run directory. Deciles: labels sorted by training frequency (decile 1 = the most frequent tenth of the
labels), as in the paper. Left: decile d's contribution to R@100 (the bars of a method sum to its R@100, log
scale); right: the share of decile d's true test labels that are in the top 100.
"""

import argparse
import glob
import json
import os

import numpy as np

from skelias import LabelIndexer

from ._common import load_split, slug


def display_names(run_dir):
    """File stem -> model name as in the run's ``results.json`` (files are ``peer_<slug>`` / ``skelias_<slug>``)."""


    path = os.path.join(run_dir, "results.json")
    names = {}
    if os.path.exists(path):
        with open(path) as fh:
            for rec in json.load(fh):
                for prefix in ("peer_", "skelias_"):
                    names[prefix + slug(rec["model"])] = rec["model"]
    return names


def recall_curve(Y, idx, ks):
    """Mean over rows with labels of |top-k ∩ y| / |y| for every k in ks."""
    n_true = np.diff(Y.indptr)
    rows = np.repeat(np.arange(Y.shape[0]), idx.shape[1])
    hit = np.asarray(Y[rows, np.maximum(idx.ravel(), 0)]).ravel().reshape(idx.shape) * (idx >= 0)
    cum = np.cumsum(hit, axis=1)
    ok = n_true > 0
    return np.array([(cum[ok, k - 1] / n_true[ok]).mean() for k in ks]), hit, ok, n_true


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("run_dir")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    files = sorted(glob.glob(os.path.join(args.run_dir, "topk", "*.npz")), key=os.path.getmtime)  # run order
    names = display_names(args.run_dir)
    if not files:
        raise SystemExit(f"no top-k predictions under {args.run_dir}/topk")
    _, ytr = load_split(args.data, "train")
    _, yte = load_split(args.data, "test")
    classes = np.load(files[0])["classes"]
    space = LabelIndexer(classes=list(classes)).fit(ytr)  # the same union space as _common.union_metrics
    Ytr, Yte = space.transform(ytr), space.transform(yte)
    freq = np.asarray(Ytr.sum(axis=0)).ravel()
    decile = np.empty(len(freq), dtype=np.int64)
    decile[np.argsort(-freq, kind="stable")] = np.arange(len(freq)) * 10 // len(freq)

    ks = np.arange(1, 101)
    name = os.path.basename(os.path.normpath(args.data))
    fig1, ax1 = plt.subplots(figsize=(6.4, 4))
    contrib, within = {}, {}
    true_per_decile = np.bincount(decile[Yte.indices], minlength=10)  # test label occurrences per decile
    for f in files:
        d = np.load(f)
        if not np.array_equal(d["classes"], classes):
            raise SystemExit(f"{f}: a different label space than {files[0]}")
        idx = d["idx"].astype(np.int64)
        curve, hit, ok, n_true = recall_curve(Yte, idx, ks)
        stem = os.path.splitext(os.path.basename(f))[0]
        stem = names.get(stem, stem)
        ax1.plot(ks, 100 * curve, label=f"{stem} (R@100 {100 * curve[-1]:.1f})")
        dec = np.where(idx >= 0, decile[np.maximum(idx, 0)], -1)
        w = (hit / np.maximum(n_true, 1)[:, None])[ok]
        contrib[stem] = np.array([(w * (dec[ok] == j)).sum() / ok.sum() for j in range(10)])
        hits_d = np.bincount(dec[hit > 0], minlength=10)[:10]
        within[stem] = hits_d / np.maximum(true_per_decile, 1)
    ax1.set_xscale("log")
    ax1.set_xlabel("prediction set size k")
    ax1.set_ylabel("recall@k (%)")
    ax1.set_title(f"Recall at k — {name} test set")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig1.tight_layout()
    fig1.savefig(os.path.join(args.run_dir, "recall_at_k.png"), dpi=120)

    fig2, (ax2, ax3) = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(contrib)
    for i, stem in enumerate(contrib):
        x = np.arange(1, 11) + (i - (len(contrib) - 1) / 2) * width
        ax2.bar(x, 100 * contrib[stem], width, label=stem)
        ax3.bar(x, 100 * within[stem], width, label=stem)
    for ax in (ax2, ax3):
        ax.set_xticks(np.arange(1, 11))
        ax.set_xlabel("label decile by training frequency (1 = most frequent)")
    ax2.set_ylabel("contribution to recall@100 (%)")
    ax2.set_yscale("log")
    ax2.set_title(f"Contribution to R@100 by label decile — {name}", fontsize=10)
    ax3.set_ylabel("recall@100 within the decile (%)")
    ax3.set_title("Share of each decile's true labels in the top 100", fontsize=10)
    ax3.legend(fontsize=7)
    fig2.tight_layout()
    fig2.savefig(os.path.join(args.run_dir, "decile_recall.png"), dpi=120)
    print("wrote", os.path.join(args.run_dir, "recall_at_k.png"), "and decile_recall.png")


if __name__ == "__main__":
    main()
