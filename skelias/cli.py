"""The ``skelias`` command line: train, predict and evaluate from the shell.

Examples
--------
.. code-block:: bash

    skelias train cooking-stackexchange model_dir --model elias++ --param n_epochs_stage1=5
    skelias predict model_dir questions.txt --k 5 --format jsonl
    skelias evaluate model_dir cooking-stackexchange

``DATA`` is the embedded ``cooking-stackexchange`` dataset, a text-dataset directory
(``{split}_texts.txt`` + ``{split}_labels.txt``, optionally gzipped) or XMC sparse data (a ``.svm``/``.txt``
file, or a directory holding ``{split}.svm``). Models are saved with :func:`skelias.save`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]

MODELS = ("elias", "elias++", "knn")
EMBEDDED = "cooking-stackexchange"


def _value(text):
    """A ``--param`` value: JSON when it parses (numbers, true/false/null, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(pairs, option):
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"skelias: {option} expects key=value; got {pair!r}")
        out[key] = _value(value)
    return out


def _load(data, split):
    """(X, y) of ``split``: texts and label lists, or sparse features and an indicator matrix."""
    from .datasets import load_cooking_stackexchange, load_dataset

    if data == EMBEDDED and not Path(data).exists():
        return load_cooking_stackexchange(split)
    try:
        return load_dataset(data, split)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"skelias: cannot read {data!r} ({exc})") from None


def _build(args):
    from . import ELIASClassifier, KNNLabelClassifier, ScoreCalibrator, SparseReranker

    params = _params(args.param, "--param")
    base = KNNLabelClassifier if args.model == "knn" else ELIASClassifier
    try:
        model = base(**params)
        if args.model == "elias++":
            model = ScoreCalibrator(SparseReranker(model, **_params(args.ranker, "--ranker")),
                                    validation_size=args.validation_size, random_state=params.get("random_state"))
    except TypeError as exc:
        raise SystemExit(f"skelias: {exc}") from None
    return model


def _train(args):
    from . import save

    X, y = _load(args.data, "train")
    model = _build(args)
    print(f"training {type(model).__name__} on {len(y) if isinstance(y, list) else y.shape[0]:,} rows ...",
          file=sys.stderr)
    model.fit(X, y)
    path = save(model, args.model_dir)
    print(f"saved to {path}", file=sys.stderr)
    return 0


def _takes_texts(model):
    """Whether a fitted model (or nesting) was fitted on raw texts rather than feature matrices."""
    if hasattr(model, "steps"):  # a Pipeline starts with its vectorizer
        return True
    if getattr(model, "vectorizer_", None) is not None:
        return True
    inner = [getattr(model, "estimator_", None), getattr(model, "estimator", None),
             *(getattr(model, "estimators_", None) or [])]
    return any(_takes_texts(m) for m in inner if m is not None and hasattr(m, "get_params"))


def _read_queries(model, path):
    from .datasets import load_xmc_sparse

    if not _takes_texts(model):
        if path == "-":
            raise SystemExit("skelias: a model fitted on features reads an XMC sparse file, not standard input")
        return load_xmc_sparse(path, n_features=getattr(model, "n_features_in_", None))[0]
    return sys.stdin.read().splitlines() if path == "-" else Path(path).read_text(encoding="utf-8").splitlines()


def _predict(args):
    from . import load, predict_topk

    model = load(args.model_dir)
    queries = _read_queries(model, args.inputs)
    if queries is None or (isinstance(queries, list) and not queries):
        raise SystemExit("skelias: no input rows to predict")
    labels, scores = predict_topk(model, queries, k=args.k)
    out = sys.stdout
    for i, (row, row_scores) in enumerate(zip(labels, scores)):
        kept = [(lab, float(s)) for lab, s in zip(row, row_scores) if lab is not None and s != float("-inf")]
        if args.format == "jsonl":
            out.write(json.dumps({"row": i, "labels": [_plain(lab) for lab, _ in kept],
                                  "scores": [round(s, 6) for _, s in kept]}) + "\n")
        else:
            for rank, (lab, s) in enumerate(kept, start=1):
                out.write(f"{i}\t{rank}\t{_plain(lab)}\t{s:.6f}\n")
    return 0


def _plain(label):
    return label.item() if hasattr(label, "item") else label


def _evaluate(args):
    import numpy as np

    from . import LabelIndexer, inverse_propensity, load, predict_topk, xmc_metrics

    model = load(args.model_dir)
    X, y = _load(args.data, args.split)
    labels, scores = predict_topk(model, X, k=100)
    if isinstance(y, list):  # in the union of the model's and the evaluated labels (unseen ones are misses)
        space = LabelIndexer(classes=[lab for row in y for lab in row]).fit([list(model.classes_)])
        Y = space.transform(y)
        idx = space.indices_of(np.asarray(labels, dtype=object))
    else:
        Y, idx = y, np.asarray(labels)
    width = min(idx.shape[1], Y.shape[1])  # fewer labels than 100: the cut-offs that exist
    report = xmc_metrics(Y, (idx, np.where(idx >= 0, scores, -np.inf)), inv_prop=inverse_propensity(Y),
                         ks=[k for k in (1, 3, 5) if k <= width], recall_ks=[k for k in (10, 100) if k <= width])
    if args.format == "json":
        print(json.dumps({k: round(v, 6) for k, v in report.items()}))
    else:
        for key, value in report.items():
            print(f"{key}\t{100 * value:.2f}")
    return 0


def _parser():
    p = argparse.ArgumentParser(prog="skelias", description="Extreme multi-label classification with ELIAS.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="fit a model on DATA's train split and save it to MODEL_DIR",
                       description="Fit a model on DATA's train split and save it (skelias.save) to MODEL_DIR.")
    t.add_argument("data", help=f"'{EMBEDDED}', a text-dataset directory, or XMC sparse data")
    t.add_argument("model_dir")
    t.add_argument("--model", choices=MODELS, default="elias", help="elias, elias++ (ELIAS + re-ranker + "
                   "calibration) or knn (the baseline); default: elias")
    t.add_argument("--param", nargs="*", default=[], metavar="KEY=VALUE", help="parameters of the base model")
    t.add_argument("--ranker", nargs="*", default=[], metavar="KEY=VALUE", help="SparseReranker parameters")
    t.add_argument("--validation-size", type=float, default=0.15, help="calibration split of elias++ (rows or "
                   "fraction; default 0.15)")
    t.set_defaults(run=_train)
    q = sub.add_parser("predict", help="top-k labels of every input row",
                       description="Top-k labels of every input row, as TSV (row, rank, label, score) or JSON lines.")
    q.add_argument("model_dir")
    q.add_argument("inputs", help="a text file with one document per line ('-': standard input), or an XMC "
                   "sparse file for models fitted on features")
    q.add_argument("--k", type=int, default=10)
    q.add_argument("--format", choices=("tsv", "jsonl"), default="tsv")
    q.set_defaults(run=_predict)
    e = sub.add_parser("evaluate", help="P@k, nDCG@k, PSP@k and R@k on DATA's test split",
                       description="The XMC metric report of a saved model on DATA's test split.")
    e.add_argument("model_dir")
    e.add_argument("data")
    e.add_argument("--split", default="test")
    e.add_argument("--format", choices=("table", "json"), default="table")
    e.set_defaults(run=_evaluate)
    return p


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as exc:
        print(f"skelias: {exc}", file=sys.stderr)
        return 2
