"""XRLinearClassifier against libpecos's XR-Linear on the same features, in one run.

Usage::

    pip install "skelias[bench]"   # libpecos
    python -m examples.benchmarks.bench_xr_linear ../shared/datasets/tibkat-en --out docs/results/tibkat-en/xr_linear.json
    python -m examples.benchmarks.bench_xr_linear DATA --topk-dir DIR --ensemble-with DIR/elias_pp_hybrid.npz

Both sides get the peers' TF-IDF features (sublinear tf, 1–2 grams, ≤ 200k features, min_df 2) and PECOS's
defaults (PIFA, balanced 16-ary tree with leaves of ≤ 100 labels, TFN negatives, squared-hinge LIBLINEAR with
Cp = Cn = 1, weight threshold 0.1, beam 10, l3-hinge). Columns: *fit s* (2 threads); *batch s*: top-100 of the
whole test set; *p50/p99 ms*: single queries, ``predict_topk(x, 10)`` over ``--n-queries`` test rows, features
given, one thread; *MiB*: the saved model (skelias: ``skelias.save``; PECOS: its model folder); metrics in the
union label space. Every skelias figure is also a ratio to libpecos's from the same run. ``--ensemble-with``
averages the XR-Linear top-100 with another model's saved top-100 (``union_metrics(topk_out=)`` files, e.g.
``bench_elias_pp --hybrid --topk-dir``) as :class:`skelias.TopKEnsemble` would.
"""

import argparse
import json
import os
import time

import numpy as np
from sklearn.frozen import FrozenEstimator

from skelias import ScoreCalibrator, SparseReranker, XRLinearClassifier

from ._common import average_topk, parse_params, union_metrics
from .bench_peers import features
from .bench_speed import latencies, pecos_result, saved_mib

METRIC_KEYS = ("P@1", "P@5", "PSP@5", "R@100")


def table(rows):
    """The run as a results file for :mod:`examples.benchmarks.tables`, ratios to libpecos included."""
    columns = [["model", "model", "{}"], ["fit_s", "fit s", "{:.1f}"], ["fit_x", "× PECOS", "{:.2f}"],
               ["batch_s", "batch top-100 s", "{:.2f}"], ["batch_x", "× PECOS", "{:.2f}"],
               ["p50_ms", "p50 ms", "{:.2f}"], ["p50_x", "× PECOS", "{:.2f}"], ["p99_ms", "p99 ms", "{:.2f}"],
               ["model_mb", "MiB", "{:.1f}"], ["mb_x", "× PECOS", "{:.2f}"],
               ["P@1", "P@1 %", "{:.2f}"], ["P@5", "P@5 %", "{:.2f}"], ["PSP@5", "PSP@5 %", "{:.2f}"],
               ["R@100", "R@100 %", "{:.2f}"]]
    pecos = next((r for r in rows if r["model"] == "PECOS XR-Linear (libpecos)"), None)
    out = []
    for r in rows:
        row = {k: r.get(k) for k in ("model", "fit_s", "batch_s", "p50_ms", "p99_ms", "model_mb")}
        row.update({m: 100 * r[m] for m in METRIC_KEYS})
        if pecos:
            for x, k in (("fit_x", "fit_s"), ("batch_x", "batch_s"), ("p50_x", "p50_ms"), ("mb_x", "model_mb")):
                row[x] = r[k] / pecos[k] if r.get(k) is not None else None
        out.append(row)
    return {"columns": columns, "rows": out}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--set", nargs="*", default=[], help="extra XRLinearClassifier parameters, key=value")
    p.add_argument("--n-queries", type=int, default=1000)
    p.add_argument("--validation-size", type=int, default=3000, help="calibration rows of the ELIAS++-style chain")
    p.add_argument("--ranker", nargs="*", default=[], help="extra SparseReranker parameters of the chain, key=value")
    p.add_argument("--skip-pecos", action="store_true")
    p.add_argument("--skip-chain", action="store_true", help="skip XR-Linear + SparseReranker + ScoreCalibrator")
    p.add_argument("--topk-dir", default=None, help="save the XR-Linear top-100 test predictions here")
    p.add_argument("--ensemble-with", nargs="*", default=[], help="saved top-100 files to average with XR-Linear's")
    p.add_argument("--out", default=None, help="write the rows as a results JSON here")
    args = p.parse_args()

    Xtr, Ytr, Xte, li, ytr, yte = features(args.data)  # the peers' TF-IDF
    n_q = min(args.n_queries, Xte.shape[0])
    single = [Xte[i] for i in range(n_q)]
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    if not args.skip_pecos:
        emit({"model": "PECOS XR-Linear (libpecos)", **pecos_result(Xtr, Ytr, Xte, n_q, li.classes_, ytr, yte,
                                                                     METRIC_KEYS)})

    def measure(name, model, fit_s, topk_name=None):
        t0 = time.perf_counter()
        names, scores = model.predict_topk(Xte, 100)
        batch_s = time.perf_counter() - t0
        out = os.path.join(args.topk_dir, f"{topk_name}.npz") if args.topk_dir and topk_name else None
        m = union_metrics(model.classes_, model.label_indexer_.indices_of(names), scores, ytr, yte, topk_out=out)
        lat = latencies(model, single)
        emit({"model": name, "fit_s": fit_s, "batch_s": batch_s, "p50_ms": 1000 * np.median(lat),
              "p99_ms": 1000 * np.percentile(lat, 99), "model_mb": saved_mib(model), **{k: m[k] for k in METRIC_KEYS}})
        return out

    if args.topk_dir:
        os.makedirs(args.topk_dir, exist_ok=True)
    params = {"random_state": 0, "n_jobs": 2, **parse_params(args.set)}
    t0 = time.perf_counter()
    xr = XRLinearClassifier(**params).fit(Xtr, ytr)
    fit_s = time.perf_counter() - t0
    print("fit split:", json.dumps({k: round(v, 2) for k, v in xr.fit_time_.items()}), flush=True)
    xr_file = measure("XRLinearClassifier (skelias)", xr, fit_s, "xr_linear")
    t0 = time.perf_counter()
    man = XRLinearClassifier(**{**params, "negative_sampling": "tfn+man"}).fit(Xtr, ytr)
    measure("XRLinearClassifier, TFN+MAN", man, time.perf_counter() - t0)

    if not args.skip_chain:  # ELIAS++'s re-ranker and calibrator on XR-Linear's candidates
        n_val = min(args.validation_size, Xtr.shape[0] // 5)
        perm = np.random.RandomState(0).permutation(Xtr.shape[0])
        val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        t0 = time.perf_counter()
        base = XRLinearClassifier(**params).fit(Xtr[fit], [ytr[i] for i in fit])
        rparams = {"random_state": 0, "n_jobs": 2, **parse_params(args.ranker)}
        ranker = SparseReranker(FrozenEstimator(base), **rparams).fit(Xtr[fit], [ytr[i] for i in fit])
        cal = ScoreCalibrator(FrozenEstimator(ranker), random_state=0).fit(Xtr[val], [ytr[i] for i in val])
        measure("XR-Linear + SparseReranker + ScoreCalibrator", cal, time.perf_counter() - t0)

    for other in args.ensemble_with:  # a 2-member ensemble of saved top-100 predictions
        if xr_file is None:
            raise SystemExit("--ensemble-with needs --topk-dir (the XR-Linear predictions are saved there)")
        classes, idx, scores = average_topk([xr_file, other])
        m = union_metrics(classes, idx, scores, ytr, yte)
        emit({"model": f"ensemble: XR-Linear + {os.path.splitext(os.path.basename(other))[0]}", "fit_s": None,
              "batch_s": None, "p50_ms": None, "p99_ms": None, "model_mb": None, **{k: m[k] for k in METRIC_KEYS}})

    print("| model | fit s | batch s | p50 ms | p99 ms | MiB | P@1 | P@5 | R@100 |")
    print("|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v, f: "—" if v is None else f.format(v)
    for r in rows:
        print(f"| {r['model']} | {fmt(r['fit_s'], '{:.1f}')} | {fmt(r['batch_s'], '{:.2f}')} | "
              f"{fmt(r['p50_ms'], '{:.2f}')} | {fmt(r['p99_ms'], '{:.2f}')} | {fmt(r['model_mb'], '{:.1f}')} | "
              f"{100 * r['P@1']:.2f} | {100 * r['P@5']:.2f} | {100 * r['R@100']:.2f} |")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(table(rows), fh, indent=1)


if __name__ == "__main__":
    main()
