"""Peer XMC libraries on the same TF-IDF features as the skelias benchmarks.

Usage::

    pip install "skelias[bench]"          # libpecos, omikuji, napkinxc
    python -m examples.benchmarks.bench_peers ../shared/datasets/tibkat-en --methods pecos omikuji napkinxc

Each method runs in its own subprocess (own peak RSS, own ``--timeout``), with 2 threads.
Features: TF-IDF with sublinear tf, 1-2 grams, <= 200k features, min_df 2, fitted on the training
texts; ``--features default``: skelias's default vectorizer instead (character 3-5-grams for short texts,
see ``skelias.default_vectorizer``), the features a skelias model fitted on the raw texts uses. A
feature-only dataset (XMC sparse format) is used as given, rows L2-normalised. Reports train s, batch
predict s (top-100 for the test set), single-query latency (median over ``--n-queries`` test rows,
top-10, one row at a time), model size on disk, peak RSS and the metrics of bench_elias.py. Missing peers are skipped with a note.
PECOS XR-Linear is loaded back with ``is_predict_only=True`` before predicting (its fast path).
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import scipy.sparse as sp

from skelias import LabelIndexer, default_vectorizer, top_k
from skelias.datasets import dump_xmc_sparse

from ._common import is_text, load_split, peer_tfidf, run_child, slug, union_metrics
from .tables import render


def dir_size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def features(data, kind="peers"):
    """Features of a dataset: TF-IDF of its texts (``"peers"``: the standard features; ``"default"``: skelias's
    default vectorizer), or a feature-only dataset's own rows."""
    tr, ytr = load_split(data, "train")
    te, yte = load_split(data, "test")
    if is_text(tr):
        vec = peer_tfidf() if kind == "peers" else default_vectorizer(tr)
        Xtr, Xte = vec.fit_transform(tr), vec.transform(te)
    else:  # a feature-only dataset: its (row-normalised) features for everyone
        Xtr, Xte = tr, te
    li = LabelIndexer().fit(ytr)
    return Xtr, li.transform(ytr), Xte, li, ytr, yte


def run_pecos(Xtr, Ytr, Xte, k, workdir, n_queries):
    from pecos.xmc import Indexer, LabelEmbeddingFactory
    from pecos.xmc.xlinear.model import XLinearModel

    t0 = time.perf_counter()
    feat = LabelEmbeddingFactory.create(Ytr, Xtr, method="pifa")
    chain = Indexer.gen(feat, indexer_type="hierarchicalkmeans", threads=2)
    model = XLinearModel.train(Xtr, Ytr, C=chain, threads=2)
    train_s = time.perf_counter() - t0
    path = os.path.join(workdir, "pecos")
    model.save(path)
    model = XLinearModel.load(path, is_predict_only=True)
    t0 = time.perf_counter()
    P = model.predict(Xte, only_topk=k, threads=2)
    pred_s = time.perf_counter() - t0
    lat = []
    for i in range(min(n_queries, Xte.shape[0])):
        t = time.perf_counter()
        model.predict(Xte[i], only_topk=10, threads=1)
        lat.append(time.perf_counter() - t)
    return P, train_s, pred_s, lat, dir_size(path)


def run_omikuji(Xtr, Ytr, Xte, k, workdir, n_queries):
    import omikuji


    path = os.path.join(workdir, "train.txt")
    dump_xmc_sparse(path, Xtr, Ytr)
    t0 = time.perf_counter()
    hp = omikuji.Model.default_hyper_param()
    model = omikuji.Model.train_on_data(path, hp, n_threads=2)
    train_s = time.perf_counter() - t0
    mpath = os.path.join(workdir, "omikuji")
    model.save(mpath)
    model = omikuji.Model.load(mpath)
    rows = [list(zip(Xte[i].indices.tolist(), Xte[i].data.tolist())) for i in range(Xte.shape[0])]
    t0 = time.perf_counter()
    preds = [model.predict(r, top_k=k) for r in rows]
    pred_s = time.perf_counter() - t0
    lat = []
    for r in rows[:n_queries]:
        t = time.perf_counter()
        model.predict(r, top_k=10)
        lat.append(time.perf_counter() - t)
    return _to_csr(preds, Xte.shape[0], Ytr.shape[1]), train_s, pred_s, lat, dir_size(mpath)


def run_napkinxc(Xtr, Ytr, Xte, k, workdir, n_queries):
    from napkinxc.models import PLT

    mpath = os.path.join(workdir, "napkinxc")
    ylist = [Ytr.indices[Ytr.indptr[i]:Ytr.indptr[i + 1]].tolist() for i in range(Ytr.shape[0])]
    t0 = time.perf_counter()
    model = PLT(mpath, threads=2)
    model.fit(Xtr, ylist)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    preds = model.predict_proba(Xte, top_k=k)
    pred_s = time.perf_counter() - t0
    lat = []
    for i in range(min(n_queries, Xte.shape[0])):
        t = time.perf_counter()
        model.predict_proba(Xte[i], top_k=10)
        lat.append(time.perf_counter() - t)
    return _to_csr(preds, Xte.shape[0], Ytr.shape[1]), train_s, pred_s, lat, dir_size(mpath)


def _to_csr(preds, n, L):

    rows = np.repeat(np.arange(n), [len(p) for p in preds])
    cols = np.array([c for p in preds for c, _ in p], dtype=np.int64)
    vals = np.array([s for p in preds for _, s in p], dtype=np.float32)
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, L))


METHODS = {"pecos": ("PECOS XR-Linear", run_pecos, "pecos"), "omikuji": ("omikuji", run_omikuji, "omikuji"),
           "napkinxc": ("napkinXC PLT", run_napkinxc, "napkinxc")}


def run_one(args):
    name, fn, _ = METHODS[args.method]
    if args.features == "default":
        name += ", skelias's default features"
    Xtr, Ytr, Xte, li, ytr, yte = features(args.data, args.features)
    with tempfile.TemporaryDirectory() as wd:
        P, train_s, pred_s, lat, size = fn(Xtr, Ytr, Xte, 100, wd, args.n_queries)
    idx, scores = top_k(P, min(100, P.shape[1]))
    out = os.path.join(args.topk_dir, f"peer_{slug(name)}.npz") if args.topk_dir else None
    m = union_metrics(li.classes_, idx, scores, ytr, yte, out)
    rec = {"model": name, "data": args.data, "fit_s": train_s, "predict_s": pred_s,
           "latency_ms": 1000 * float(np.median(lat)) if lat else None, "model_mb": size / 2**20,
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, **m}
    print("RESULT " + json.dumps(rec), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--method", help=argparse.SUPPRESS)
    p.add_argument("--n-queries", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default=None)
    p.add_argument("--topk-dir", default=None, help="save each method's top-100 test predictions here (for plots)")
    p.add_argument("--features", choices=["peers", "default"], default="peers",
                   help="peers: the standard TF-IDF; default: skelias.default_vectorizer of the training texts")
    args = p.parse_args()
    if args.method:
        return run_one(args)
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    for method in args.methods:
        module = METHODS[method][2]
        try:
            __import__(module)
        except ImportError:
            print(f"{method}: not installed (pip install 'skelias[bench]'); skipped", file=sys.stderr)
            continue
        cmd = [sys.executable, "-m", __spec__.name, args.data, "--method", method, "--n-queries", str(args.n_queries),
               "--features", args.features]
        if args.topk_dir:
            cmd += ["--topk-dir", args.topk_dir]
        rec = run_child(cmd, method, out=args.out, timeout=args.timeout, env=env)
        if rec is not None:
            rows.append(rec)
    print(render(rows))


if __name__ == "__main__":
    main()
