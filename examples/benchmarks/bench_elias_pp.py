"""ELIAS++ build-up ablation (paper Table 3 form): ELIAS → + sparse ranker → + score calibration (→ + refit, ensemble).

Usage::

    python -m examples.benchmarks.bench_elias_pp ../shared/datasets/cooking-stackexchange
    python -m examples.benchmarks.bench_elias_pp ../shared/datasets/tibkat-en --hybrid --memory /tmp/skcache
    python -m examples.benchmarks.bench_elias_pp ../shared/datasets/cooking-stackexchange --ensemble 3

One process, one chain: a seeded ``--validation-size`` split of the training texts is held out
for the calibrator; ELIASClassifier is fitted on the rest, the SparseReranker on top of the
frozen ELIAS model (same rows), the ScoreCalibrator on the held-out rows. Each row of the table
is the chain so far; fit seconds are cumulative, predict seconds are the whole chain's on the
test set. When the calibrator refits (``refit="auto"``: below 20,000 training rows; ``--calibrator
refit=…``), the row "+ refit on all rows" is the library's own chain,
``ScoreCalibrator(SparseReranker(ELIASClassifier()), validation_size=…, refit=True)`` fitted on all
training rows (the same split, its tree, then ELIAS and the ranker again on every row); its fit
seconds are that whole fit's. With ``--ensemble n`` the full chain is also trained n times with different seeds
and averaged (TopKEnsemble). ELIASClassifier gets the raw texts and builds its default TF-IDF
(``skelias.default_vectorizer``: word 1-2 grams for long texts, character 3-5-grams for short ones;
sublinear, <= 200k, min_df 2, fitted on the training texts); metrics as in bench_elias.py.
"""

import argparse
import json
import os
import resource
import tempfile
import time

import joblib
import numpy as np
import torch
from sklearn.frozen import FrozenEstimator

from skelias import ELIASClassifier, ScoreCalibrator, SparseReranker, TopKEnsemble
from skelias.calibration import auto_refit

from ._common import is_text, load_split, parse_params, slug, take, union_metrics
from .tables import render


def latency_ms(model, texts, n_queries):
    """Median seconds of ``predict_topk([text], 10)`` over single test texts (or feature rows), in ms."""

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = []
        for i in range(min(n_queries, len(texts) if is_text(texts) else texts.shape[0])):
            x = [texts[i]] if is_text(texts) else texts[i]
            t0 = time.perf_counter()
            model.predict_topk(x, 10)
            out.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return 1000 * float(np.median(out))


def evaluate(model, te, yte, ytr, topk_out=None):
    t0 = time.perf_counter()
    names, scores = model.predict_topk(te, 100)
    pred_s = time.perf_counter() - t0
    idx = model.label_indexer_.indices_of(names)
    return union_metrics(model.classes_, idx, scores, ytr, yte, topk_out), pred_s


def model_mib(model):
    """Size of the joblib-dumped model, MiB."""


    with tempfile.TemporaryDirectory() as tmp:
        joblib.dump(model, os.path.join(tmp, "m.joblib"))
        return os.path.getsize(os.path.join(tmp, "m.joblib")) / 2**20


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--hybrid", action="store_true", help="pretrained_model='all-MiniLM-L6-v2' (skelias[minilm])")
    p.add_argument("--memory", default=None, help="cache directory for the frozen MiniLM embeddings")
    p.add_argument("--set", nargs="*", default=[], help="extra ELIASClassifier parameters, key=value")
    p.add_argument("--ranker", nargs="*", default=[], help="extra SparseReranker parameters, key=value")
    p.add_argument("--calibrator", nargs="*", default=[], help="extra ScoreCalibrator parameters, key=value")
    p.add_argument("--validation-size", type=int, default=5000)
    p.add_argument("--ensemble", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-queries", type=int, default=200, help="single-query latency sample (0: skip)")
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--save", default=None, help="joblib-dump the fitted ELIAS model here")
    p.add_argument("--load", default=None, help="use this joblib-dumped ELIAS model instead of fitting one")
    p.add_argument("--topk-dir", default=None, help="save each model's top-100 test predictions here (for plots)")
    args = p.parse_args()



    tr, ytr = load_split(args.data, "train")
    te, yte = load_split(args.data, "test")
    params = {"random_state": args.seed, "verbose": args.verbose, "memory": args.memory, **parse_params(args.set)}
    if args.hybrid:
        params.setdefault("pretrained_model", "all-MiniLM-L6-v2")
    rparams = {"random_state": args.seed, "n_jobs": 2, **parse_params(args.ranker)}
    cparams = {"random_state": args.seed, **parse_params(args.calibrator)}
    refit = cparams.pop("refit", "auto")
    refit = auto_refit(len(ytr)) if refit == "auto" else bool(refit)
    n_val = min(args.validation_size, len(ytr) // 5)
    perm = np.random.RandomState(args.seed).permutation(len(ytr))
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    X_fit, y_fit = take(tr, fit), [ytr[i] for i in fit]
    X_val, y_val = take(tr, val), [ytr[i] for i in val]
    enc = "hybrid" if args.hybrid else ("TF-IDF" if is_text(tr) else "features")
    rows = []

    def record(name, model, fit_s):
        full = f"{name}, {enc}"
        out = os.path.join(args.topk_dir, f"skelias_{slug(full)}.npz") if args.topk_dir else None
        metrics, pred_s = evaluate(model, te, yte, ytr, out)
        memory, elias.memory = elias.memory, None  # latency includes embedding the query (no cache hit)
        lat = latency_ms(model, te, args.n_queries) if args.n_queries else None
        elias.memory = memory
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        rec = {"model": full, "data": args.data, "fit_s": fit_s, "predict_s": pred_s, "latency_ms": lat,
               "model_mb": model_mib(model), "peak_rss_gib": rss,
               "params": params, "ranker_params": rparams, "calibrator_params": {**cparams, "refit": refit},
               **metrics}
        rows.append(rec)
        print("RESULT " + json.dumps(rec), flush=True)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")

    t0 = time.perf_counter()
    if args.load:

        elias = joblib.load(args.load)
        t_elias = sum(v for k, v in elias.fit_time_.items() if k != "total")
    else:
        elias = ELIASClassifier(**params).fit(X_fit, y_fit)
        t_elias = time.perf_counter() - t0
    if args.save:

        joblib.dump(elias, args.save)
    record(f"ELIAS (stage {getattr(elias, 'selected_stage_', 2)})", elias, t_elias)
    t0 = time.perf_counter()
    ranker = SparseReranker(FrozenEstimator(elias), **rparams).fit(X_fit, y_fit)
    t_ranker = time.perf_counter() - t0
    record("+ sparse ranker", ranker, t_elias + t_ranker)
    t0 = time.perf_counter()
    cal = ScoreCalibrator(FrozenEstimator(ranker), **cparams).fit(X_val, y_val)
    record("+ score calibration", cal, t_elias + t_ranker + time.perf_counter() - t0)
    print(f"ranker fit: {t_ranker:.1f} s ({ranker.fit_time_}); ranker nnz {ranker.coef_.nnz}", flush=True)
    if refit:  # the library's chain: the same split (same seed), its tree, then ELIAS and the ranker on every row
        t0 = time.perf_counter()
        elias = ELIASClassifier(**params)
        full = ScoreCalibrator(SparseReranker(elias, **rparams), validation_size=n_val, refit=True, **cparams)
        full.fit(tr, ytr)
        elias = full.estimator_.estimator_  # record() reads its memory
        record("+ refit on all rows", full, time.perf_counter() - t0)
    if args.ensemble > 1:
        t0 = time.perf_counter()
        chain = ScoreCalibrator(SparseReranker(ELIASClassifier(**params), **rparams), validation_size=n_val,
                                refit=refit, **cparams)
        ens = TopKEnsemble(chain, n_estimators=args.ensemble, random_state=args.seed).fit(tr, ytr)
        record(f"+ {args.ensemble}x ensemble", ens, time.perf_counter() - t0)

    print(render(rows))


if __name__ == "__main__":
    main()
