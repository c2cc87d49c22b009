"""Speed against PECOS on the same features: fit, batch top-100, single-query p50/p99, model size, P@1.

Usage::

    python -m examples.benchmarks.bench_speed ../shared/datasets/tibkat-en --memory /tmp/skcache --out OUT.json
    python -m examples.benchmarks.bench_speed ../shared/datasets/cooking-stackexchange --skip-hybrid --profile

One process, one run, so that every ratio compares figures measured under the same conditions. PECOS
XR-Linear (libpecos, its defaults, loaded back with ``is_predict_only=True``) and the skelias chain — TF-IDF
ELIAS, TF-IDF ELIAS++, hybrid ELIAS++, hybrid ELIAS++ with the static student of the pretrained model
(``pretrained_backend="static"``) — are trained on the peers' TF-IDF features (sublinear tf, 1–2 grams,
≤ 200k features, min_df 2); the hybrid also embeds the raw texts with all-MiniLM-L6-v2 (cold unless
``--memory`` holds them). A held-out split of ``--validation-size`` training rows calibrates ELIAS++.

Columns: *fit s*; *batch s*: top-100 of the whole test set with 2 threads (hybrid: cached embeddings);
*p50/p99 ms*: single queries, ``predict_topk(x, 10)`` on one thread over ``--n-queries`` test rows, features
given (the TF-IDF row; the hybrid's query embedding is computed, the MiniLM forward included); *MiB*: the saved
model (skelias: ``skelias.save`` directory; PECOS: its model folder); *P@1* in the union label space. Each
skelias figure is also given as a ratio to PECOS's; for the latencies PECOS answers the same queries again,
each right after the skelias row's (*PECOS p50 ms, same queries*), and its batch runs again just before the
row's (*PECOS batch s, beside*), so that a machine whose speed drifts during the run slows both sides of a
ratio alike. ``--profile`` adds the per-component split of a single query (cProfile on one thread, cumulative
ms per query), written with ``--out OUT.json`` to ``OUT_profile.json``.
"""

import argparse
import contextlib
import copy
import cProfile
import inspect
import json
import os
import pstats
import tempfile
import time

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator

import skelias
from skelias import ELIASClassifier, LabelIndexer, ScoreCalibrator, SparseReranker, top_k
from skelias.datasets import load_text_dataset

from ._common import parse_params, peer_tfidf, union_metrics
from .bench_peers import dir_size, run_pecos


def _components():
    """Components of a single query and the functions whose cumulative time they are (outermost calls only)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.tree import DecisionTreeClassifier

    from skelias import _base, _network, _validation, encoders, index, pretrained, rerank

    return {  # tfidf_transform is skelias's path for a TfidfVectorizer, which it calls only for other vectorizers
        "vectorize (TF-IDF)": [_validation.tfidf_transform, TfidfVectorizer.transform],
        "pretrained encoder": [pretrained.PretrainedTextEmbedder.embed, pretrained.StaticTextEmbedder.embed],
        "encoder φ": [encoders.SparseBagEncoder.forward, encoders.HybridEncoder.forward,
                      encoders.DenseMLPEncoder.forward],
        "cluster scores + beam": [index.cluster_log_scores, index.shortlist_clusters],
        "shortlist (Eq. 6)": [index.expand_paths, index.max_over_paths, index.max_over_paths_dense,
                              index.dense_shortlist, index.shortlist_labels],
        "label scores": [_network.ELIASNetwork.label_logits],
        "re-ranker": [rerank.ranker_features, rerank.pair_margins, rerank.transform_margins],
        "calibrator": [DecisionTreeClassifier.predict_proba],
        "whole query": [_base.TopKOutputMixin.predict_topk],
    }


def profile_queries(model, queries):
    """Cumulative ms per query of each component (cProfile over ``queries``, one torch thread as for the
    latencies); "other" is the rest."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    prof = cProfile.Profile()
    try:
        prof.enable()
        for q in queries:
            model.predict_topk(q, 10)
        prof.disable()
    finally:
        torch.set_num_threads(threads)
    stats = pstats.Stats(prof).stats
    out = {}
    for name, funcs in _components().items():
        codes = [inspect.unwrap(f).__code__ for f in funcs]  # the function itself, not a decorator's wrapper
        keys = {(c.co_filename, c.co_firstlineno, c.co_name) for c in codes}
        out[name] = 1000 * sum(v[3] for key, v in stats.items() if key in keys) / len(queries)
    out["other (validation, conversions, top-k)"] = out["whole query"] - sum(
        v for k, v in out.items() if k != "whole query")
    return out


def latencies(model, queries, peer=None):
    """Seconds of ``predict_topk(query, 10)`` per query, one torch thread.

    With ``peer`` (a callable of the query's position, e.g. :class:`PecosQueries`), the peer answers the same
    query right after each of the model's, and the peer's seconds are returned too: both series see the same
    machine state, so their ratio does not move with the speed of a shared machine during a long run.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, q in enumerate(queries[:20]):  # warm-up
            model.predict_topk(q, 10)
            if peer is not None:
                peer(i)
        out, peer_out = [], []
        for i, q in enumerate(queries):
            t0 = time.perf_counter()
            model.predict_topk(q, 10)
            out.append(time.perf_counter() - t0)
            if peer is not None:
                t0 = time.perf_counter()
                peer(i)
                peer_out.append(time.perf_counter() - t0)
        return np.asarray(out) if peer is None else (np.asarray(out), np.asarray(peer_out))
    finally:
        torch.set_num_threads(threads)


class PecosQueries:
    """PECOS's single-query top-10 of the i-th test row, one thread (a saved model loaded for prediction)."""

    def __init__(self, path, Xte):
        from pecos.xmc.xlinear.model import XLinearModel

        self.model, self.Xte = XLinearModel.load(path, is_predict_only=True), Xte

    def __call__(self, i):
        return self.model.predict(self.Xte[i], only_topk=10, threads=1)

    def batch_seconds(self, k=100):
        """Seconds of the top-``k`` of every test row, 2 threads (the batch column's setting)."""
        t0 = time.perf_counter()
        self.model.predict(self.Xte, only_topk=k, threads=2)
        return time.perf_counter() - t0


def saved_mib(model):
    with tempfile.TemporaryDirectory() as tmp:
        return dir_size(skelias.save(model, os.path.join(tmp, "m"))) / 2**20


def pecos_row(Xtr, Ytr, Xte, n_queries, workdir=None):
    """PECOS XR-Linear with its defaults, as the peer benchmark runs it (bench_peers.run_pecos).

    The model is saved under ``workdir`` (as ``pecos``) when one is given, else in a directory removed after.
    """
    with contextlib.nullcontext(workdir) if workdir else tempfile.TemporaryDirectory() as tmp:
        P, fit_s, batch_s, lat, size = run_pecos(Xtr, Ytr, Xte, 100, tmp, n_queries)
    return P, {"fit_s": fit_s, "batch_s": batch_s, "p50_ms": 1000 * np.median(lat),
               "p99_ms": 1000 * np.percentile(lat, 99), "model_mb": size / 2**20}


def pecos_result(Xtr, Ytr, Xte, n_queries, classes, ytr, yte, metric_keys=("P@1", "R@100", "PSP@5"), workdir=None):
    """PECOS's speed figures (:func:`pecos_row`) with its metrics in the union label space."""
    P, row = pecos_row(Xtr, Ytr, Xte, n_queries, workdir)
    idx, scores = top_k(P, min(100, P.shape[1]))
    m = union_metrics(classes, idx, scores, ytr, yte)
    return {**row, **{k: m[k] for k in metric_keys}}


def speed_table(rows):
    """The run as a results file for :mod:`examples.benchmarks.tables` (columns, then rows with ratios to PECOS)."""
    columns = [["model", "model", "{}"], ["fit_s", "fit s", "{:.0f}"], ["fit_x", "× PECOS", "{:.1f}"],
               ["batch_s", "batch top-100 s", "{:.2f}"], ["pecos_batch_s", "PECOS batch s, beside", "{:.2f}"],
               ["batch_x", "× PECOS", "{:.2f}"],
               ["p50_ms", "p50 ms", "{:.2f}"], ["pecos_p50_ms", "PECOS p50 ms, same queries", "{:.2f}"],
               ["p50_x", "× PECOS", "{:.2f}"], ["p99_ms", "p99 ms", "{:.2f}"], ["p99_x", "× PECOS", "{:.2f}"],
               ["model_mb", "MiB", "{:.1f}"], ["mb_x", "× PECOS", "{:.1f}"],
               ["P@1", "P@1 %", "{:.2f}"], ["PSP@5", "PSP@5 %", "{:.2f}"], ["R@100", "R@100 %", "{:.2f}"]]
    pecos = next((r for r in rows if r["model"] == "PECOS XR-Linear"), None)
    out = []
    for r in rows:
        row = {k: r[k] for k in ("model", "fit_s", "batch_s", "p50_ms", "p99_ms", "model_mb")}
        row.update({m: 100 * r[m] for m in ("P@1", "PSP@5", "R@100")})
        if pecos:
            # latency and batch: against PECOS measured beside this row, where it was
            row["pecos_p50_ms"] = r.get("pecos_p50_ms", pecos["p50_ms"])
            row["pecos_batch_s"] = r.get("pecos_batch_s", pecos["batch_s"])
            row.update({x: r[k] / r.get(f"pecos_{k}", pecos[k]) for x, k in (
                ("fit_x", "fit_s"), ("batch_x", "batch_s"), ("p50_x", "p50_ms"), ("p99_x", "p99_ms"),
                ("mb_x", "model_mb"))})
        out.append(row)
    return {"columns": columns, "rows": out}


def profile_table(rows):
    """The per-component single-query split (the rows' ``profile_ms``, ms per query) as a results file."""
    rows = [{"model": r["model"], **r["profile_ms"]} for r in rows if "profile_ms" in r]
    keys = list(rows[0])[1:] if rows else []
    return {"columns": [["model", "model", "{}"]] + [[k, k, "{:.2f}"] for k in keys], "rows": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--memory", default=None, help="cache directory of the frozen MiniLM embeddings")
    p.add_argument("--set", nargs="*", default=[], help="extra ELIASClassifier parameters, key=value")
    p.add_argument("--validation-size", type=int, default=3000)
    p.add_argument("--n-queries", type=int, default=1000)
    p.add_argument("--shortlist-sizes", type=int, nargs="*", default=[500],
                   help="also measure the TF-IDF ELIAS model with these prediction-time shortlist sizes K")
    p.add_argument("--skip-hybrid", action="store_true")
    p.add_argument("--skip-static", action="store_true",
                   help="skip the hybrid ELIAS++ whose pretrained half is the static student (pretrained_backend='static')")
    p.add_argument("--skip-pecos", action="store_true")
    p.add_argument("--profile", action="store_true", help="per-component split of a single query")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()

    torch.set_num_threads(2)
    tr, ytr = load_text_dataset(args.data, "train")
    te, yte = load_text_dataset(args.data, "test")
    vec = peer_tfidf().fit(tr)
    Xtr, Xte = vec.transform(tr), vec.transform(te)
    li = LabelIndexer().fit(ytr)
    Ytr = li.transform(ytr)
    n_val = min(args.validation_size, len(tr) // 5)
    perm = np.random.RandomState(0).permutation(len(tr))
    val, fit = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    n_q = min(args.n_queries, len(te))
    rows = []
    pecos_dir = tempfile.TemporaryDirectory()  # PECOS's saved model, to answer queries beside each row's
    peer = None

    def record(name, model, fit_s, X_batch, queries, uncached=None):
        torch.set_num_threads(2)
        if uncached is not None:  # batch figures with cached embeddings: embed the test texts first
            uncached._embed(X_batch)
        pecos_batch_s = peer.batch_seconds() if peer is not None else None  # PECOS's batch just before
        t0 = time.perf_counter()
        names, scores = model.predict_topk(X_batch, 100)
        batch_s = time.perf_counter() - t0
        idx = model.label_indexer_.indices_of(names)
        m = union_metrics(model.classes_, idx, scores, ytr, yte)
        memory = None
        if uncached is not None:  # single queries embed their text: no embedding-cache hits
            memory, uncached.memory = uncached.memory, None
        lat = latencies(model, queries, peer)
        if peer is not None:
            lat, peer_lat = lat
        row = {"model": name, "fit_s": fit_s, "batch_s": batch_s, "p50_ms": 1000 * np.median(lat),
               "p99_ms": 1000 * np.percentile(lat, 99), "model_mb": saved_mib(model), "P@1": m["P@1"],
               "R@100": m["R@100"], "PSP@5": m["PSP@5"]}
        if peer is not None:  # PECOS on the same queries, interleaved with this row's, and its batch just before
            row.update(pecos_p50_ms=1000 * np.median(peer_lat), pecos_p99_ms=1000 * np.percentile(peer_lat, 99),
                       pecos_batch_s=pecos_batch_s)
        if args.profile:
            row["profile_ms"] = profile_queries(model, queries[:200])
        if uncached is not None:
            uncached.memory = memory
        rows.append(row)
        print(json.dumps(row), flush=True)

    if not args.skip_pecos:
        rows.append({"model": "PECOS XR-Linear", **pecos_result(Xtr, Ytr, Xte, n_q, li.classes_, ytr, yte,
                                                                workdir=pecos_dir.name)})
        print(json.dumps(rows[-1]), flush=True)
        peer = PecosQueries(os.path.join(pecos_dir.name, "pecos"), Xte)

    params = {"random_state": 0, **parse_params(args.set)}
    fit_y = [ytr[i] for i in fit]
    single = [Xte[i] for i in range(n_q)]
    t0 = time.perf_counter()
    elias = ELIASClassifier(**params).fit(Xtr[fit], fit_y)
    t_elias = time.perf_counter() - t0
    record("ELIAS, TF-IDF", elias, t_elias, Xte, single)
    for K in args.shortlist_sizes:  # the prediction-time trade-off: fewer labels scored per query
        record(f"ELIAS, TF-IDF, shortlist_size={K} at prediction", copy.deepcopy(elias).set_params(shortlist_size=K),
               t_elias, Xte, single)
    t0 = time.perf_counter()
    ranker = SparseReranker(FrozenEstimator(elias), random_state=0, n_jobs=2).fit(Xtr[fit], fit_y)
    cal = ScoreCalibrator(FrozenEstimator(ranker), random_state=0).fit(Xtr[val], [ytr[i] for i in val])
    record("ELIAS++, TF-IDF", cal, t_elias + time.perf_counter() - t0, Xte, single)

    if not args.skip_hybrid:
        fit_x, val_x = [tr[i] for i in fit], [tr[i] for i in val]
        hparams = {**params, "pretrained_model": "all-MiniLM-L6-v2", "memory": args.memory}
        t0 = time.perf_counter()
        hybrid = ELIASClassifier(**hparams).fit(fit_x, fit_y)
        hranker = SparseReranker(FrozenEstimator(hybrid), random_state=0, n_jobs=2).fit(fit_x, fit_y)
        hcal = ScoreCalibrator(FrozenEstimator(hranker), random_state=0).fit(val_x, [ytr[i] for i in val])
        fit_s = time.perf_counter() - t0
        record("ELIAS++, hybrid", hcal, fit_s, te, [[t] for t in te[:n_q]], uncached=hybrid)

    if not args.skip_static:  # the hybrid with the static student of MiniLM: no transformer forward per text
        fit_x, val_x = [tr[i] for i in fit], [tr[i] for i in val]
        sparams = {**params, "pretrained_model": "all-MiniLM-L6-v2", "pretrained_backend": "static"}
        t0 = time.perf_counter()
        static = ELIASClassifier(**sparams).fit(fit_x, fit_y)
        sranker = SparseReranker(FrozenEstimator(static), random_state=0, n_jobs=2).fit(fit_x, fit_y)
        scal = ScoreCalibrator(FrozenEstimator(sranker), random_state=0).fit(val_x, [ytr[i] for i in val])
        record("ELIAS++, hybrid, static student", scal, time.perf_counter() - t0, te, [[t] for t in te[:n_q]])

    pecos = next((r for r in rows if r["model"] == "PECOS XR-Linear"), None)
    if pecos:
        for r in rows:
            r["ratio_to_pecos"] = {k: r[k] / r.get(f"pecos_{k}", pecos[k])
                                   for k in ("fit_s", "batch_s", "p50_ms", "p99_ms", "model_mb")}
    print("| model | fit s | batch s | p50 ms | p99 ms | MiB | P@1 |" + (" ratios to PECOS (fit, batch, p50, p99, MiB) |"
                                                                    if pecos else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if pecos else ""))
    for r in rows:
        ratios = " | " + ", ".join(f"{v:.2f}×" for v in r["ratio_to_pecos"].values()) if pecos else ""
        print(f"| {r['model']} | {r['fit_s']:.0f} | {r['batch_s']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['model_mb']:.1f} | {100 * r['P@1']:.2f}{ratios} |")
    for r in rows:
        if "profile_ms" in r:
            print(f"profile of one query, {r['model']}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in r["profile_ms"].items()))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(speed_table(rows), fh, indent=1)
        if args.profile:  # OUT_profile.json beside OUT.json
            with open(os.path.splitext(args.out)[0] + "_profile.json", "w") as fh:
                json.dump(profile_table(rows), fh, indent=1)
    pecos_dir.cleanup()


if __name__ == "__main__":
    main()
