"""Accuracy against fit time and single-query latency of every measured configuration (one dataset).

Usage::

    python -m examples.benchmarks.plot_configurations docs/results/tibkat-en docs/figures/configurations.png

Reads the results files of ``bench_speed`` (``speed.json``) and ``bench_xr_linear`` (``xr_linear.json``) in the
directory and plots P@1 against fit seconds and against the median single-query latency (log scales); the marker
area is the saved model's size. Rows without costs (ensembles of saved predictions) are left out.
"""

import argparse
import json
import os


def configurations(results_dir):
    """(name, fit s, p50 ms, MiB, P@1 %) of every row with costs, PECOS once."""
    rows, seen = [], set()
    for name in ("speed.json", "xr_linear.json"):
        path = os.path.join(results_dir, name)
        if not os.path.exists(path):
            continue
        with open(path) as fh:
            for r in json.load(fh)["rows"]:
                if r.get("p50_ms") is None or r.get("fit_s") is None:
                    continue
                label = "PECOS XR-Linear" if r["model"].startswith("PECOS") else r["model"]
                if label in seen:
                    continue
                seen.add(label)
                rows.append((label, r["fit_s"], r["p50_ms"], r["model_mb"], r["P@1"]))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir")
    p.add_argument("out")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rows = configurations(args.results_dir)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, col, xlabel in ((axes[0], 1, "fit seconds (2 cores)"), (axes[1], 2, "single-query p50 ms (1 thread)")):
        for label, *vals in rows:
            x, mb, p1 = vals[col - 1], vals[2], vals[3]
            ax.scatter(x, p1, s=20 + 2 * mb, alpha=0.6)
            ax.annotate(label, (x, p1), fontsize=6.5, xytext=(4, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # labels within one decade too
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("P@1 %")
    fig.suptitle(f"{os.path.basename(os.path.normpath(args.results_dir))}: accuracy vs cost "
                 "(marker area ∝ model size)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)


if __name__ == "__main__":
    main()
