"""ELIAS and its re-ranker with 1 and 2 processes on the synthetic power-law problem (10⁶ labels by default).

Usage::

    pip install "skelias[dask]"
    python -m examples.benchmarks.bench_distributed --n-labels 1000000 --n-docs 20000 --out docs/results/distributed.json

Rows: the TF-IDF ELIASClassifier (one epoch per stage, d = 256, K = 1000) trained by one process with 2 threads,
then by ``torchrun --nproc_per_node=2`` (gloo, one thread per rank, the same global batches); then the
SparseReranker on its candidates, its LIBLINEAR chunks in local processes and on a Dask ``LocalCluster`` of 1
and 2 single-threaded workers. Per row: seconds per stage-1 / stage-2 epoch, the re-ranker's fit, the peak RSS
of each process, the gradient bytes a rank sends per step against dense all-reduces of the same gradients,
and P@1 on 2,000 held-out documents in the JSON (one epoch per stage on random data measures costs, not
accuracy).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from ._common import synthetic_problem

PARAMS = {"n_epochs_stage1": 1, "n_epochs_stage2": 1, "embed_dim": 256, "shortlist_size": 1000, "random_state": 0,
          "dropout": 0.0}
N_TEST = 2000


def _problem(args):
    X, Y = synthetic_problem(args.n_labels, args.n_docs + N_TEST, args.n_features, labels_per_doc=20)
    return X[N_TEST:], Y[N_TEST:], X[:N_TEST], Y[:N_TEST]


def _read_json(path):
    with open(path) as fh:
        return json.load(fh)


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def elias_worker(args):
    """One process (or one rank under torchrun): fit, then write the model's figures and top-10 to the out dir."""
    import torch

    from skelias import ELIASClassifier, precision_at_k

    Xtr, Ytr, Xte, Yte = _problem(args)
    clf = ELIASClassifier(**PARAMS).fit(Xtr, Ytr)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    idx, sc = clf.predict_topk(Xte, 10)
    comm = clf.communication_ or {}
    rec = {"world_size": clf.world_size_, "rank": rank, "clustering_s": clf.fit_time_["clustering"],
           "stage1_epoch_s": clf.fit_time_["stage1"], "stage2_epoch_s": clf.fit_time_.get("stage2"),
           "bytes_per_step": comm.get("bytes_per_step"), "dense_bytes_per_step": comm.get("dense_bytes_per_step"),
           "peak_rss_gib": _rss_gib(), "P@1": precision_at_k(Yte, (idx, sc), 1)}
    with open(os.path.join(args.work, f"elias_{clf.world_size_}_{rank}.json"), "w") as fh:
        json.dump(rec, fh)
    if rank == 0:
        import joblib

        joblib.dump(clf, os.path.join(args.work, f"elias_{clf.world_size_}.joblib"))


def reranker_rows(args):
    """The re-ranker on the 1-process ELIAS model: local processes, then Dask with 1 and 2 workers."""
    import joblib
    from sklearn.frozen import FrozenEstimator

    from skelias import SparseReranker, precision_at_k

    Xtr, Ytr, Xte, Yte = _problem(args)
    base = FrozenEstimator(joblib.load(os.path.join(args.work, "elias_1.joblib")))
    rows, coefs = [], []

    def fit(name, backend=None, workers=None):
        t0 = time.perf_counter()
        ranker = SparseReranker(base, n_candidates=100, random_state=0, n_jobs=2 if workers is None else workers)
        if backend is None:
            ranker.fit(Xtr, Ytr)
        else:
            with joblib.parallel_backend(backend):
                ranker.fit(Xtr, Ytr)
        fit_s = time.perf_counter() - t0
        coefs.append(ranker.coef_)
        rows.append({"model": name, "reranker_fit_s": fit_s, "P@1": precision_at_k(Yte, ranker.predict_topk(Xte, 10),
                                                                                    1)})
        print(json.dumps(rows[-1]), flush=True)

    fit("SparseReranker, 2 local processes")
    try:
        import distributed
    except ImportError:
        return rows, True
    for n in (1, 2):
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
                distributed.Client(cl):
            fit(f"SparseReranker, Dask LocalCluster × {n} worker{'s' * (n > 1)}", "dask", n)
    same = all((c != coefs[0]).nnz == 0 for c in coefs[1:])
    return rows, same


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-labels", type=int, default=1_000_000)
    p.add_argument("--n-docs", type=int, default=20_000)
    p.add_argument("--n-features", type=int, default=100_000)
    p.add_argument("--processes", type=int, nargs="*", default=[1, 2], help="ELIAS runs with these process counts")
    p.add_argument("--skip-reranker", action="store_true")
    p.add_argument("--out", default=None, help="write the rows as a results JSON here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return elias_worker(args)
    with tempfile.TemporaryDirectory() as work:
        base = [sys.executable, "-m", __spec__.name, "--worker", "--work", work, "--n-labels", str(args.n_labels),
                "--n-docs", str(args.n_docs), "--n-features", str(args.n_features)]
        rows = []
        for nproc in args.processes:
            env = dict(os.environ, OMP_NUM_THREADS=str(2 // nproc))
            cmd = base if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           f"--nproc_per_node={nproc}", "-m", __spec__.name, *base[3:]]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            wall = time.perf_counter() - t0
            recs = [_read_json(os.path.join(work, f"elias_{nproc}_{r}.json")) for r in range(nproc)]
            row = {"model": f"ELIASClassifier, {nproc} process{'es' * (nproc > 1)}", "wall_s": wall,
                   **{k: recs[0][k] for k in ("clustering_s", "stage1_epoch_s", "stage2_epoch_s", "bytes_per_step",
                                              "dense_bytes_per_step", "P@1")},
                   "peak_rss_gib": max(r["peak_rss_gib"] for r in recs)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        if not args.skip_reranker and 1 in args.processes:
            ranker, same = reranker_rows(argparse.Namespace(**{**vars(args), "work": work}))
            rows += ranker
            print("re-ranker weights identical for every backend:", same)
    columns = [["model", "model", "{}"], ["wall_s", "wall s", "{:.0f}"], ["clustering_s", "clustering s", "{:.0f}"],
               ["stage1_epoch_s", "stage-1 epoch s", "{:.0f}"], ["stage2_epoch_s", "stage-2 epoch s", "{:.0f}"],
               ["reranker_fit_s", "re-ranker fit s", "{:.0f}"], ["peak_rss_gib", "peak RSS GiB / process", "{:.2f}"],
               ["bytes_per_step", "gradient MB / step / rank", "{:.1f}"],
               ["dense_bytes_per_step", "dense all-reduce MB / step", "{:.1f}"]]
    for r in rows:
        for k in ("bytes_per_step", "dense_bytes_per_step"):
            if r.get(k) is not None:
                r[k] = r[k] / 1e6
        r["P@1"] = 100 * r["P@1"]
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"columns": columns, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
