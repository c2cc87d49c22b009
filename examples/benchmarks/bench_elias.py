"""ELIAS stage 1 / stage 2 / one-vs-all with the same encoder, on a text-directory dataset.

Usage::

    python -m examples.benchmarks.bench_elias ../shared/datasets/cooking-stackexchange --models stage1 stage2 ova
    python -m examples.benchmarks.bench_elias ../shared/datasets/tibkat-en --models stage2 --set n_epochs_stage1=8

Each model runs in its own subprocess (so peak RSS is its own). Features are built like the peers':
TF-IDF with sublinear tf, 1-2 grams, <= 200k features, min_df 2, fitted on the training texts.
Metrics are computed in the union of the training and test label spaces (test labels never seen in
training count as misses), with propensities (A=0.55, B=1.5) of the training labels.
Prints a markdown table and writes JSON lines to --out.
"""

import argparse
import json
import resource
import sys
import time

from skelias import ELIASClassifier, LabelIndexer
from skelias.datasets import load_text_dataset

from ._common import parse_params, peer_tfidf, run_child, union_metrics
from .tables import render


def model_params(name, n_labels):
    if name == "stage1":
        return {"n_epochs_stage2": 0}
    if name == "stage2":
        return {}
    if name == "ova":  # one cluster holding every label, all labels scored: brute-force one-vs-all
        return {"n_clusters": 1, "shortlist_size": n_labels, "n_epochs_stage2": 0}
    raise ValueError(name)


def elias_params(name, n_labels, set_args, **base):
    """ELIASClassifier parameters: ``base``, then ``--set key=value``, then the model's defining settings.

    The model's own settings win, so ``--models stage1 stage2 --set n_epochs_stage2=3`` still trains
    stage 1 only for the "stage1" row (and the one-vs-all keeps C = 1, K = L).
    """
    return {**base, **parse_params(set_args), **model_params(name, n_labels)}


def run_one(args):

    tr, ytr = load_text_dataset(args.data, "train")
    te, yte = load_text_dataset(args.data, "test")
    vec = peer_tfidf()
    Xtr, Xte = vec.fit_transform(tr), vec.transform(te)
    li = LabelIndexer().fit(ytr)
    Ytr = li.transform(ytr)
    params = elias_params(args.model, Ytr.shape[1], args.set, random_state=args.seed, verbose=args.verbose)
    clf = ELIASClassifier(**params)
    if args.raw_texts:  # the estimator builds the same TF-IDF itself (and the hybrid needs the texts)
        Xtr, Xte = tr, te
    t0 = time.perf_counter()
    clf.fit(Xtr, Ytr)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx, scores = clf.predict_topk(Xte, 100)
    pred_s = time.perf_counter() - t0
    m = union_metrics(li.classes_, idx, scores, ytr, yte)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rec = {"model": args.model, "data": args.data, "fit_s": fit_s, "predict_s": pred_s, "peak_rss_gib": rss,
           "params": params, "fit_time": clf.fit_time_, "history": clf.history_, **m}
    print("RESULT " + json.dumps(rec), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--models", nargs="+", default=["stage1", "stage2", "ova"])
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--set", nargs="*", default=[], help="extra ELIASClassifier parameters, key=value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--raw-texts", action="store_true", help="pass raw texts (needed for pretrained_model=...)")
    p.add_argument("--label", default="", help="suffix for the model name in the table")
    args = p.parse_args()
    if args.model:
        return run_one(args)
    rows = []
    for model in args.models:
        cmd = [sys.executable, "-m", __spec__.name, args.data, "--model", model, "--seed", str(args.seed),
               "--verbose", str(args.verbose), *(["--raw-texts"] if args.raw_texts else []), "--set", *args.set]
        rec = run_child(cmd, model)  # stderr (progress) streams through
        if rec is None:
            continue
        rec["model"] += args.label
        rows.append(rec)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(rec) + "\n")
    print(render(rows))


if __name__ == "__main__":
    main()
