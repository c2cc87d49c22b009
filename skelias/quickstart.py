"""Quickstart: train and evaluate on the embedded Cooking Stack Exchange dataset.

Run with ``python -m skelias.quickstart``. Until :class:`skelias.ELIASClassifier`
lands this trains the :class:`skelias.KNNLabelClassifier` baseline (k-nearest-
neighbour label voting on TF-IDF) and prints its precision, nDCG,
propensity-scored precision and recall on the 3,000 test questions.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from skelias import KNNLabelClassifier, LabelIndexer, xmc_metrics
from skelias._labels import to_common_label_space
from skelias.datasets import load_cooking_stackexchange
from skelias.metrics import inverse_propensity


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=None, help="use only the first N training questions")
    args = parser.parse_args(argv)

    texts, labels = load_cooking_stackexchange("train")
    test_texts, test_labels = load_cooking_stackexchange("test")
    if args.n_train:
        texts, labels = texts[: args.n_train], labels[: args.n_train]
    print(f"Cooking Stack Exchange (CC BY-SA 3.0): {len(texts)} train / {len(test_texts)} test questions")

    model = KNNLabelClassifier()
    t0 = time.perf_counter()
    model.fit(texts, labels)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    top, _ = model.predict_topk(test_texts, k=100)
    predict_s = time.perf_counter() - t0

    # evaluate in the union of the model's and the test set's labels, so test-only tags count as misses
    Y_test, idx, classes = to_common_label_space(test_labels, top, classes=model.classes_)
    inv_prop = inverse_propensity(LabelIndexer(classes=classes).fit(labels).transform(labels))  # train propensities
    rank_scores = np.where(idx >= 0, -np.arange(idx.shape[1], dtype=float), -np.inf)
    m = xmc_metrics(Y_test, (idx, rank_scores), inv_prop=inv_prop)
    print(f"model: {type(model).__name__} (baseline) | fit {fit_s:.1f} s | predict {predict_s:.1f} s")
    print("  ".join(f"{k} {100 * m[k]:.2f}" for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "R@10", "R@100")))
    return m


if __name__ == "__main__":
    main()
