"""The documentation's benchmark tables, generated from the committed results files.

Usage::

    python -m examples.benchmarks.tables docs/results          # rewrite every table next to its JSON
    python -m examples.benchmarks.tables docs/results --check  # exit 1 if a committed table differs

Every ``*.json`` under the folder becomes a Markdown table ``*.md`` beside it, which the docs include
(``docs/benchmarks.md``), so that the numbers in the text and in the results cannot drift apart. A
results file is either a list of rows written by the benchmark scripts (``model``, the metrics as
fractions, ``fit_s``, ``predict_s``, ``latency_ms``, ``model_mb``, ``peak_rss_gib``; ``encoding_cached``
marks fit times without the frozen pretrained encoding) or ``{"columns": [[key, header, format], ...],
"rows": [...]}`` for tables of other quantities.
"""

import argparse
import glob
import json
import os
import sys

METRICS = ["P@1", "P@3", "P@5", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5", "R@10", "R@100"]
COSTS = [("fit_s", "fit s", "{:.0f}"), ("predict_s", "predict s", "{:.1f}"), ("latency_ms", "latency ms", "{:.2f}"),
         ("model_mb", "model MiB", "{:.1f}"), ("peak_rss_gib", "peak RSS GiB", "{:.2f}")]


def _cell(row, key, fmt):
    value = row.get(key)
    if value is None:
        return "–"
    text = fmt.format(value)
    if key == "fit_s" and row.get("encoding_cached"):
        text += " cached"
    return text


def render(results):
    """Markdown table (str) of a results file's content (a list of rows, or a dict with ``columns`` and ``rows``)."""
    if isinstance(results, dict):
        columns, rows = [tuple(c) for c in results["columns"]], results["rows"]
        cells = [[_cell(r, k, fmt) for k, _, fmt in columns] for r in rows]
        headers = [h for _, h, _ in columns]
    else:
        rows = results
        costs = [c for c in COSTS if any(r.get(c[0]) is not None for r in rows)]
        headers = ["model", *METRICS, *(h for _, h, _ in costs)]
        cells = [[r["model"], *(f"{100 * r[m]:.2f}" for m in METRICS), *(_cell(r, k, fmt) for k, _, fmt in costs)]
                 for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_table(json_path):
    """Write the table of ``json_path`` to the same path with ``.md``; return the Markdown."""
    with open(json_path) as fh:
        text = render(json.load(fh))
    with open(os.path.splitext(json_path)[0] + ".md", "w") as fh:
        fh.write(text)
    return text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--check", action="store_true", help="compare with the committed tables instead of writing")
    args = p.parse_args(argv)
    stale = []
    for path in sorted(glob.glob(os.path.join(args.folder, "**", "*.json"), recursive=True)):
        md = os.path.splitext(path)[0] + ".md"
        if args.check:
            with open(path) as fh:
                want = render(json.load(fh))
            if not os.path.exists(md):
                stale.append(md)
                continue
            with open(md) as fh:
                if fh.read() != want:
                    stale.append(md)
        else:
            write_table(path)
            print(md)
    if stale:
        print("out of date (run python -m examples.benchmarks.tables " + args.folder + "):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
