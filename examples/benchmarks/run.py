"""One command for the published benchmark: skelias (ELIAS → ELIAS++) and the peers, tables, JSON and plots.

Usage::

    python examples/benchmarks/run.py ../shared/datasets/cooking-stackexchange --out-dir docs/results/cooking
    python examples/benchmarks/run.py ../shared/datasets/tibkat-en --hybrid --memory /tmp/skcache \\
        --set validation_size=2000 n_epochs_stage2=5 --validation-size 3000 --out-dir docs/results/tibkat-en

Runs, each in its own subprocess with its own timeout (``--timeout``) and peak-RSS measurement and with
2 threads: ``bench_peers.py`` (PECOS XR-Linear, omikuji, napkinXC — those installed; ``pip install
'skelias[bench]'``) and ``bench_elias_pp.py`` (ELIAS → + sparse ranker → + score calibration, options
after ``--set``/``--ranker``/``--validation-size``/``--hybrid``/``--memory`` are passed on). All methods
use the same TF-IDF features (sublinear tf, 1–2 grams, ≤ 200k features, min_df 2, fitted on train).
Writes ``results.json``, ``table.md`` and ``topk/*.npz`` (top-100 test predictions) to ``--out-dir`` and
then the plots (``plots.py``).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import print_table, run_child


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--hybrid", action="store_true")
    p.add_argument("--memory", default=None)
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--ranker", nargs="*", default=[])
    p.add_argument("--validation-size", type=int, default=5000)
    p.add_argument("--n-queries", type=int, default=1000, help="single-query latency sample per method")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per subprocess")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument("--skip-skelias", action="store_true")
    args = p.parse_args()

    topk = os.path.join(args.out_dir, "topk")
    os.makedirs(topk, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    rows = []
    if not args.skip_peers:
        from bench_peers import METHODS

        for method in METHODS:
            try:
                __import__(METHODS[method][2])
            except ImportError:
                print(f"{method}: not installed (pip install 'skelias[bench]'); skipped", file=sys.stderr)
                continue
            cmd = [sys.executable, os.path.join(HERE, "bench_peers.py"), args.data, "--method", method,
                   "--n-queries", str(args.n_queries), "--topk-dir", topk]
            rows += run_child(cmd, method, timeout=args.timeout, env=env, all_records=True)
    if not args.skip_skelias:
        cmd = [sys.executable, os.path.join(HERE, "bench_elias_pp.py"), args.data, "--n-queries", str(args.n_queries),
               "--validation-size", str(args.validation_size), "--topk-dir", topk]
        cmd += ["--hybrid"] if args.hybrid else []
        cmd += ["--memory", args.memory] if args.memory else []
        cmd += ["--set", *args.set] if args.set else []
        cmd += ["--ranker", *args.ranker] if args.ranker else []
        rows += run_child(cmd, "skelias", timeout=args.timeout, env=env, all_records=True)

    with open(os.path.join(args.out_dir, "results.json"), "w") as fh:
        json.dump(rows, fh, indent=1)
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_table(rows, extra=[("latency_ms", "latency ms", "{:.2f}"), ("model_mb", "model MiB", "{:.1f}")])
    with open(os.path.join(args.out_dir, "table.md"), "w") as fh:
        fh.write(buf.getvalue())
    print(buf.getvalue())
    subprocess.run([sys.executable, os.path.join(HERE, "plots.py"), args.data, args.out_dir], check=False)


if __name__ == "__main__":
    main()
