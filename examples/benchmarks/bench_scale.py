"""ELIASClassifier at 10⁴–10⁶ labels on generated power-law data: fit time per epoch, peak RSS, model size,
single-query latency and batch throughput vs L, with a log-log plot.

Usage::

    python -m examples.benchmarks.bench_scale --n-labels 10000 100000 1000000 --plot docs/figures/scale.png

Each L runs in its own subprocess (its own peak RSS). Data: ``_common.synthetic_problem`` (topic-structured
sparse documents, 20 Zipf-ranked labels per document within its topic, every label has a document), the same
N documents and D features for every L; 2,000 extra documents are held out for prediction. The model is the TF-IDF ELIAS with
``--set`` overrides (defaults below: one epoch per stage, d = 256, K = 1000) — enough to measure costs, not
to reach a useful accuracy on random data.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import joblib
import numpy as np
import torch

from skelias import ELIASClassifier, precision_at_k

from ._common import parse_params, run_child, synthetic_problem

DEFAULTS = {"n_epochs_stage1": 1, "n_epochs_stage2": 1, "embed_dim": 256, "shortlist_size": 1000, "random_state": 0}


def run_one(args):


    n_test, n_labels = 2000, args.n_labels[0]
    t0 = time.perf_counter()
    X, Y = synthetic_problem(n_labels, args.n_docs + n_test, args.n_features, labels_per_doc=20)
    Xtr, Ytr, Xte, Yte = X[n_test:], Y[n_test:], X[:n_test], Y[:n_test]
    gen_s = time.perf_counter() - t0
    params = {**DEFAULTS, **parse_params(args.set)}
    clf = ELIASClassifier(**params).fit(Xtr, Ytr)
    ft = clf.fit_time_
    t0 = time.perf_counter()
    idx, sc = clf.predict_topk(Xte, 10)
    batch_ms = 1000 * (time.perf_counter() - t0) / n_test
    torch.set_num_threads(1)
    lat = []
    for i in range(args.n_queries):
        t0 = time.perf_counter()
        clf.predict_topk(Xte[i : i + 1], 10)
        lat.append(time.perf_counter() - t0)
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        joblib.dump(clf, os.path.join(tmp, "m.joblib"))
        size = os.path.getsize(os.path.join(tmp, "m.joblib")) / 2**20
    net = clf.network_
    rec = {"n_labels": n_labels, "n_docs": args.n_docs, "n_features": args.n_features, "params": params,
           "n_clusters": net.n_clusters, "kappa": int(net.a_indices.shape[1]), "generate_s": gen_s,
           "clustering_s": ft["clustering"], "stage1_epoch_s": ft["stage1"] / params["n_epochs_stage1"],
           "stage2_epoch_s": ft.get("stage2", float("nan")) / max(1, params["n_epochs_stage2"]),
           "fit_s": ft["total"], "batch_ms_per_query": batch_ms, "latency_ms": 1000 * float(np.median(lat)),
           "model_mib": size, "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
           "P@1": precision_at_k(Yte, (idx, sc), 1)}
    print("RESULT " + json.dumps(rec), flush=True)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = np.array([r["n_labels"] for r in rows], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, keys, ylabel in [
        (axes[0], [("stage1_epoch_s", "stage 1 epoch"), ("stage2_epoch_s", "stage 2 epoch")], "seconds"),
        (axes[1], [("latency_ms", "single query (1 thread)"), ("batch_ms_per_query", "batch, per query")], "ms"),
        (axes[2], [("peak_rss_gib", "peak RSS (GiB)"), ("model_mib", "model on disk (GiB)")], "GiB"),
    ]:
        for key, label in keys:
            y = np.array([r[key] for r in rows], dtype=float) / (1024 if key == "model_mib" else 1)
            ax.plot(L, y, "o-", label=label)
        ref = np.sqrt(L / L[0]) * np.array([r[keys[0][0]] for r in rows], dtype=float)[0]
        ax.plot(L, ref, ":", color="gray", label="∝ √L")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("labels L")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("ELIASClassifier vs number of labels (synthetic, 2 CPU cores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-labels", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--n-docs", type=int, default=50_000)
    p.add_argument("--n-features", type=int, default=100_000)
    p.add_argument("--n-queries", type=int, default=200)
    p.add_argument("--set", nargs="*", default=[], help="ELIASClassifier parameters, key=value")
    p.add_argument("--timeout", type=float, default=3 * 3600)
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument("--plot", default=None, help="write the log-log plot here (PNG)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        return run_one(args)
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    for L in args.n_labels:
        cmd = [sys.executable, "-m", __spec__.name, "--one", "--n-labels", str(L), "--n-docs", str(args.n_docs),
               "--n-features", str(args.n_features), "--n-queries", str(args.n_queries), "--set", *args.set]
        rec = run_child(cmd, f"L={L}", out=args.out, timeout=args.timeout, env=env)
        if rec is not None:
            rows.append(rec)
            print(f"L={L}: {json.dumps({k: v for k, v in rec.items() if k != 'params'})}", flush=True)
    print("| L | C | κ | clustering s | stage-1 epoch s | stage-2 epoch s | latency ms | batch ms/query | model MiB "
          "| peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n_labels']:,} | {r['n_clusters']:,} | {r['kappa']} | {r['clustering_s']:.0f} | "
              f"{r['stage1_epoch_s']:.0f} | {r['stage2_epoch_s']:.0f} | {r['latency_ms']:.2f} | "
              f"{r['batch_ms_per_query']:.3f} | {r['model_mib']:.0f} | {r['peak_rss_gib']:.2f} |")
    if args.plot and rows:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
