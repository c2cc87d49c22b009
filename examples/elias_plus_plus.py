"""ELIAS++ step by step: ELIAS, + sparse re-ranker, + score calibration; saved and reloaded with joblib.

Run from the repository root::

    python examples/elias_plus_plus.py                # the whole embedded Cooking Stack Exchange set
    python examples/elias_plus_plus.py --small        # 2,000 questions, 2 epochs (used in CI)

The ELIAS model is trained once; the re-ranker and the calibrator wrap it as a prefit model
(``sklearn.frozen.FrozenEstimator``), so neither retrains it.
"""

import argparse
import os
import tempfile

import joblib
from sklearn.frozen import FrozenEstimator

from skelias import (
    ELIASClassifier,
    ScoreCalibrator,
    SparseReranker,
    precision_at_k_scorer,
    psprecision_at_k_scorer,
    recall_at_k_scorer,
)
from skelias.datasets import load_cooking_stackexchange


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a small subset and 2 epochs")
    args = parser.parse_args(argv)
    texts, tags = load_cooking_stackexchange("train")
    test_texts, test_tags = load_cooking_stackexchange("test")
    epochs = 2 if args.small else 10
    if args.small:
        texts, tags, test_texts, test_tags = texts[:2000], tags[:2000], test_texts[:400], test_tags[:400]
    n_cal = len(texts) // 6  # held out for the calibrator
    fit_texts, fit_tags, cal_texts, cal_tags = texts[n_cal:], tags[n_cal:], texts[:n_cal], tags[:n_cal]

    elias = ELIASClassifier(n_epochs_stage1=epochs, n_epochs_stage2=epochs, random_state=0).fit(fit_texts, fit_tags)
    ranker = SparseReranker(FrozenEstimator(elias), random_state=0).fit(fit_texts, fit_tags)
    calibrated = ScoreCalibrator(FrozenEstimator(ranker)).fit(cal_texts, cal_tags)  # all rows given calibrate

    # scorers evaluate in the union of the model's and the test labels: test-only tags count as misses
    scorers = {"P@1": precision_at_k_scorer(1), "P@5": precision_at_k_scorer(5),
               "PSP@5": psprecision_at_k_scorer(5), "R@100": recall_at_k_scorer(100)}
    print(f"{'model':<24}" + "".join(f"{name:>8}" for name in scorers))
    for name, model in [("ELIAS", elias), ("+ sparse re-ranker", ranker), ("+ score calibration", calibrated)]:
        print(f"{name:<24}" + "".join(f"{100 * s(model, test_texts, test_tags):8.2f}" for s in scorers.values()))

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "elias_pp.joblib")
        joblib.dump(calibrated, path)
        reloaded = joblib.load(path)
        same = (reloaded.predict_topk(test_texts[:50], k=5)[0] == calibrated.predict_topk(test_texts[:50], k=5)[0]).all()
        print(f"saved {os.path.getsize(path) / 2**20:.1f} MiB; reloaded predictions identical: {same}")
    return calibrated


if __name__ == "__main__":
    main()
