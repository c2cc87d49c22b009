"""skelias against the peers on every benchmarked dataset, one row per dataset, from the ``run.py`` results.

Usage::

    python -m examples.benchmarks.summary docs/results      # writes docs/results/summary.json (+ .md)

Reads ``<folder>/<dataset>/results.json`` (written by ``python -m examples.benchmarks.run``) for every dataset
folder that has one. Per dataset: the best peer by P@1 on the standard features (its P@1 and PSP@5; R@100 is
the best of any peer), skelias's single-model ELIAS++ chain (the final calibrated row, seed 0: refit on all
rows where the calibrator refits), the differences, and PECOS XR-Linear on skelias's own default features where
the harness ran it (short-text datasets), so that the gain of the features and of the model can be told apart.
"""

import argparse
import glob
import json
import os

from ._common import final_chain
from .tables import write_table

PEER_SUFFIX = ", skelias's default features"
COLUMNS = [
    ["data", "data", "{}"], ["peer", "best peer", "{}"],
    ["peer_P@1", "peer P@1", "{:.2f}"], ["peer_PSP@5", "peer PSP@5", "{:.2f}"], ["peer_R@100", "best peer R@100", "{:.2f}"],
    ["skelias", "skelias", "{}"],
    ["P@1", "P@1", "{:.2f}"], ["PSP@5", "PSP@5", "{:.2f}"], ["R@100", "R@100", "{:.2f}"],
    ["dP@1", "Δ P@1", "{:+.2f}"], ["dR@100", "Δ R@100", "{:+.2f}"],
    ["pecos_own_P@1", "PECOS on skelias's features, P@1", "{:.2f}"],
]
PEERS = ("PECOS XR-Linear", "omikuji", "napkinXC PLT")


def summary_row(name, rows):
    """The summary of one dataset's ``results.json`` rows, or None without a peer and a calibrated chain."""
    peers = [r for r in rows if r["model"] in PEERS]
    own = final_chain(rows)
    if not peers or own is None:
        return None
    peer = max(peers, key=lambda r: r["P@1"])
    pecos_own = [r for r in rows if r["model"] == "PECOS XR-Linear" + PEER_SUFFIX]
    pct = {k: 100 * own[k] for k in ("P@1", "PSP@5", "R@100")}
    return {"data": name, "peer": peer["model"],
            **{f"peer_{k}": 100 * peer[k] for k in ("P@1", "PSP@5")},
            "peer_R@100": 100 * max(r["R@100"] for r in peers),
            "skelias": "ELIAS++, " + own["model"].split(", ", 1)[-1], **pct,
            "dP@1": pct["P@1"] - 100 * peer["P@1"], "dR@100": pct["R@100"] - 100 * max(r["R@100"] for r in peers),
            "pecos_own_P@1": 100 * pecos_own[0]["P@1"] if pecos_own else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    args = p.parse_args(argv)
    out = []
    for path in sorted(glob.glob(os.path.join(args.folder, "*", "results.json"))):
        with open(path) as fh:
            row = summary_row(os.path.basename(os.path.dirname(path)), json.load(fh))
        if row is not None:
            out.append(row)
    target = os.path.join(args.folder, "summary.json")
    with open(target, "w") as fh:
        json.dump({"columns": COLUMNS, "rows": out}, fh, indent=1)
    print(write_table(target))


if __name__ == "__main__":
    main()
