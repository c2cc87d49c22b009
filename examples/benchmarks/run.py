"""One command for the published benchmark: skelias (ELIAS → ELIAS++) and the peers, tables, JSON and plots.

Usage::

    python -m examples.benchmarks.run ../shared/datasets/cooking-stackexchange --out-dir docs/results/cooking
    python -m examples.benchmarks.run ../shared/datasets/tibkat-en --hybrid --memory /tmp/skcache \\
        --set validation_size=2000 n_epochs_stage1=12 n_epochs_stage2=3 --validation-size 3000 --out-dir docs/results/tibkat-en

Runs, each in its own subprocess with its own timeout (``--timeout``) and peak-RSS measurement and with
2 threads: ``bench_peers.py`` (PECOS XR-Linear, omikuji, napkinXC — those installed; ``pip install
'skelias[bench]'``) and ``bench_elias_pp.py`` (ELIAS → + sparse ranker → + score calibration → + refit on
all rows when the calibrator refits; options after ``--set``/``--ranker``/``--calibrator``/``--validation-size``/
``--hybrid``/``--memory`` are passed on). The peers get the
standard TF-IDF features (sublinear tf, 1–2 grams, ≤ 200k features, min_df 2, fitted on train); skelias
gets the raw texts and builds its default features (``skelias.default_vectorizer``: the same word features
for long texts, character 3–5-grams for short ones) — where they differ, PECOS XR-Linear also runs on
skelias's default features, so that the gain of the features and of the model can be told apart.
Writes ``results.json``, its table ``results.md`` and ``topk/*.npz`` (top-100 test predictions) to ``--out-dir`` and
then the plots (``plots.py``). ``--ensemble 3`` also trains the chain with seeds 1 and 2 (every seed: initial
clustering, initialisation, data order, held-out split) and adds the row of the 3-chain ensemble — the mean of
the calibrated chains' top-100 scores, as :class:`skelias.TopKEnsemble` averages — with the members' summed
fit/predict seconds and model sizes (``members.json`` holds the members' own rows).
"""

import argparse
import json
import os
import subprocess
import sys

from skelias import default_vectorizer

from ._common import average_topk, final_chain, is_text, load_split, run_child, slug, union_metrics
from .bench_peers import METHODS
from .tables import write_table


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--hybrid", action="store_true")
    p.add_argument("--memory", default=None)
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--ranker", nargs="*", default=[])
    p.add_argument("--calibrator", nargs="*", default=[])
    p.add_argument("--validation-size", type=int, default=5000)
    p.add_argument("--n-queries", type=int, default=1000, help="single-query latency sample per method")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per subprocess")
    p.add_argument("--ensemble", type=int, default=1,
                   help="also train the chain with seeds 1..n-1 and report the n-model ensemble (mean of top-100 scores)")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument("--skip-skelias", action="store_true")
    args = p.parse_args()

    topk = os.path.join(args.out_dir, "topk")
    os.makedirs(topk, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    rows = []
    if not args.skip_peers:
        for method in METHODS:
            try:
                __import__(METHODS[method][2])
            except ImportError:
                print(f"{method}: not installed (pip install 'skelias[bench]'); skipped", file=sys.stderr)
                continue
            cmd = [sys.executable, "-m", "examples.benchmarks.bench_peers", args.data, "--method", method,
                   "--n-queries", str(args.n_queries), "--topk-dir", topk]
            rows += run_child(cmd, method, timeout=args.timeout, env=env, all_records=True)
            if method == "pecos" and uses_own_features(args.data):
                # skelias's default features differ from the peers' here: PECOS on them too
                rows += run_child(cmd + ["--features", "default"], f"{method} (default features)",
                                  timeout=args.timeout, env=env, all_records=True)
    if not args.skip_skelias:
        cmd = chain_command(args, topk_dir=topk, n_queries=args.n_queries)
        rows += run_child(cmd, "skelias", timeout=args.timeout, env=env, all_records=True)
        if args.ensemble > 1:
            rows += ensemble_rows(args, rows, topk, env)

    results = os.path.join(args.out_dir, "results.json")
    with open(results, "w") as fh:
        json.dump(rows, fh, indent=1)
    print(write_table(results))
    subprocess.run([sys.executable, "-m", "examples.benchmarks.plots", args.data, args.out_dir], check=False)


def uses_own_features(data):
    """skelias's default vectorizer differs from the peers' word features on this dataset's texts."""
    texts, _ = load_split(data, "train")
    return is_text(texts) and default_vectorizer(texts).analyzer != "word"


def chain_command(args, *, topk_dir, n_queries, seed=None):
    """The ``bench_elias_pp`` command line of one skelias chain."""
    cmd = [sys.executable, "-m", "examples.benchmarks.bench_elias_pp", args.data, "--n-queries", str(n_queries),
           "--validation-size", str(args.validation_size), "--topk-dir", topk_dir]
    cmd += ["--hybrid"] if args.hybrid else []
    cmd += ["--memory", args.memory] if args.memory else []
    cmd += ["--set", *args.set] if args.set else []
    cmd += ["--ranker", *args.ranker] if args.ranker else []
    cmd += ["--calibrator", *args.calibrator] if args.calibrator else []
    cmd += ["--seed", str(seed)] if seed is not None else []
    return cmd


def ensemble_rows(args, rows, topk, env):
    """Chains with seeds 1..n-1 (top-100 test predictions under ``topk/members/``), then the n-chain ensemble.

    The ensemble averages the calibrated chains' top-100 scores as :class:`skelias.TopKEnsemble` does (its
    members differ in every seed: clustering, initialisation, data order and held-out split). Fit and
    predict seconds and model size are the members' sums; single-query latency is not measured.
    """
    last = final_chain(rows)
    if last is None:
        print("ensemble: the seed-0 chain failed; skipped", file=sys.stderr)
        return []
    members = [last]
    files = [os.path.join(topk, f"skelias_{slug(last['model'])}.npz")]
    for seed in range(1, args.ensemble):
        sub = os.path.join(topk, "members", f"seed{seed}")
        os.makedirs(sub, exist_ok=True)
        recs = run_child(chain_command(args, topk_dir=sub, n_queries=0, seed=seed), f"skelias seed {seed}",
                         timeout=args.timeout, env=env, all_records=True)
        cal = final_chain(recs)
        if cal is None:
            print(f"ensemble: the seed-{seed} chain failed; skipped", file=sys.stderr)
            return []
        members.append(dict(cal, seed=seed))
        files.append(os.path.join(sub, f"skelias_{slug(cal['model'])}.npz"))
    with open(os.path.join(args.out_dir, "members.json"), "w") as fh:
        json.dump(members, fh, indent=1)
    _, ytr = load_split(args.data, "train")
    _, yte = load_split(args.data, "test")
    classes, idx, scores = average_topk(files)
    name = f"+ {args.ensemble}x ensemble, " + last["model"].split(", ", 1)[-1]
    metrics = union_metrics(classes, idx, scores, ytr, yte, os.path.join(topk, f"skelias_{slug(name)}.npz"))
    return [{"model": name, "data": args.data, **metrics,
             "fit_s": sum(m["fit_s"] for m in members), "predict_s": sum(m["predict_s"] for m in members),
             "latency_ms": None, "model_mb": sum(m["model_mb"] for m in members),
             "peak_rss_gib": max(m["peak_rss_gib"] for m in members),
             "member_P@1": [m["P@1"] for m in members]}]


if __name__ == "__main__":
    main()
