"""Shared pieces of the benchmark scripts: metrics in the union label space, subprocess runs, tables."""

import json
import subprocess
import sys

import numpy as np

COLS = ["P@1", "P@3", "P@5", "nDCG@3", "nDCG@5", "PSP@1", "PSP@3", "PSP@5", "R@10", "R@100"]


def parse_params(pairs):
    """``["k=v", ...]`` → dict; values that look like JSON (numbers, lists, true/false/null) are decoded."""
    out = {}
    for kv in pairs:
        k, v = kv.split("=", 1)
        out[k] = json.loads(v) if v[:1] in "0123456789-[{tfn" else v
    return out


def peer_tfidf():
    """The features every method is measured on: sublinear tf, 1-2 grams, <= 200k features, min_df 2."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), max_features=200_000, min_df=2, dtype=np.float32)


def union_metrics(classes, idx, scores, ytr, yte):
    """The report of bench tables for top-k column indices ``idx`` into ``classes`` (-1 = padding).

    Metrics are computed in the union of the training and test label spaces (test labels never seen
    in training count as misses), with propensities (A = 0.55, B = 1.5) of the training labels.
    """
    from skelias import LabelIndexer, inverse_propensity, xmc_metrics

    space = LabelIndexer(classes=[label for row in yte for label in row]).fit(ytr)
    remap = space.indices_of(np.asarray(classes))
    idx_u = np.where(idx >= 0, remap[np.maximum(idx, 0)], -1)
    m = xmc_metrics(space.transform(yte), (idx_u, np.where(idx_u >= 0, scores, -np.inf)), ks=(1, 3, 5),
                    recall_ks=(10, 100), inv_prop=inverse_propensity(space.transform(ytr)))
    return {c: m[c] for c in COLS}


def run_child(cmd, name, out=None, timeout=None, env=None):
    """Run one benchmark child process; return its ``RESULT {json}`` record (None on failure)."""
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        print(f"{name}: timed out after {timeout:.0f} s", file=sys.stderr)
        return None
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"{name}: failed (exit {proc.returncode})", file=sys.stderr)
        return None
    rec = json.loads(lines[-1][7:])
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
    return rec


def print_table(rows, extra=()):
    """Markdown table: model, metrics (percent), fit s, predict s, then ``extra`` (key, header, format)."""
    extra = [("fit_s", "fit s", "{:.0f}"), ("predict_s", "predict s", "{:.1f}"), *extra,
             ("peak_rss_gib", "peak RSS GiB", "{:.2f}")]
    print("| model | " + " | ".join(COLS) + " | " + " | ".join(h for _, h, _ in extra) + " |")
    print("|---" * (len(COLS) + len(extra) + 1) + "|")
    for r in rows:
        cells = [f"{100 * r[c]:.2f}" for c in COLS]
        cells += [fmt.format(r[k]) if r.get(k) is not None else "–" for k, _, fmt in extra]
        print(f"| {r['model']} | " + " | ".join(cells) + " |")
