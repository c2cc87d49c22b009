"""TfidfVectorizer + ELIASClassifier in a Pipeline, tuned with GridSearchCV.

Run from the repository root::

    python examples/pipeline_gridsearch.py            # the whole embedded Cooking Stack Exchange set
    python examples/pipeline_gridsearch.py --small    # 1,500 questions, 1 epoch per stage (about half a minute; used in CI)

The pipeline learns on raw question titles; the grid search tunes the beam size b (Eq. 2) (and, on the full set, the
label shortlist size K) with precision@1 on 2 folds, refits the best model and evaluates it on the test split.
"""

import argparse

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from skelias import ELIASClassifier, precision_at_k_scorer, recall_at_k_scorer
from skelias.datasets import load_cooking_stackexchange


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="a small subset and 1 epoch per stage")
    args = parser.parse_args(argv)
    texts, tags = load_cooking_stackexchange("train")
    test_texts, test_tags = load_cooking_stackexchange("test")
    epochs = 1 if args.small else 10
    if args.small:
        texts, tags, test_texts, test_tags = texts[:1500], tags[:1500], test_texts[:300], test_tags[:300]

    pipe = make_pipeline(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2),
        ELIASClassifier(n_epochs_stage1=epochs, n_epochs_stage2=epochs, embed_dim=128 if args.small else 512,
                        random_state=0),
    )
    grid = {"eliasclassifier__beam_size": [5, 20]}
    if not args.small:
        grid["eliasclassifier__shortlist_size"] = [200, 2000]
    search = GridSearchCV(pipe, grid, scoring=precision_at_k_scorer(1), cv=KFold(2)).fit(texts, tags)
    print("best parameters:", search.best_params_, f"(cross-validated P@1 {100 * search.best_score_:.2f})")

    best = search.best_estimator_
    print(f"test P@1 {100 * precision_at_k_scorer(1)(best, test_texts, test_tags):.2f}, "
          f"R@10 {100 * recall_at_k_scorer(10)(best, test_texts, test_tags):.2f}")
    # a Pipeline has no predict_topk: transform with the first steps, then ask the last one
    labels, _ = best[-1].predict_topk(best[:-1].transform(["How long do I boil an egg?"]), k=5)
    print("tags for 'How long do I boil an egg?':", list(labels[0]))
    return search


if __name__ == "__main__":
    main()
