"""Datasets derived from the shared ones, for label structures the shared data does not have.

Usage::

    python -m examples.benchmarks.derive first-tag ../shared/datasets/cooking-stackexchange /tmp/cooking-first-tag
    python -m examples.benchmarks.derive dense-words ../shared/datasets/tibkat-en /tmp/tibkat-dense-words

``first-tag``: near-multi-class data. The texts of a text-layout dataset with only the first label of each
document (documents without labels keep none), in the same layout.

``dense-words``: dense-label, feature-only data in the XMC sparse format (as ``bibtex``), shaped like the
Delicious benchmark (a few hundred labels, about 19 per document, a small binary vocabulary). Of the documents with
at least 60 word tokens (``[a-z]{3,}`` after lowercasing), 16,000 are drawn (seed 0; the train and test files
pooled). The features of a document are the words of its first 25 tokens among the 1,000 most frequent of those
words (binary); its labels are the other words of the document, stop words left out, among the words of ranks
100–599 by document frequency (the 100 commonest are left out, so that no label is in nearly every document; ties in alphabetical order).
Documents without a feature or a label are dropped; the first 12,800 are the training set. The vocabularies are
counted on all drawn documents. ``feature_names.txt`` and ``label_names.txt`` hold the words.
"""

import argparse
import collections
import os
import re

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from skelias.datasets import load_text_dataset

WORD = re.compile(r"[a-z]{3,}")


def _most_frequent(counts):
    """Words by decreasing count, ties in alphabetical order (independent of string hashing)."""
    return sorted(counts, key=lambda w: (-counts[w], w))


def first_tag(src, out):
    """Write ``src`` (text layout) to ``out`` with the first label of every document only."""
    os.makedirs(out, exist_ok=True)
    for split in ("train", "test"):
        texts, labels = load_text_dataset(src, split)
        with open(os.path.join(out, f"{split}_texts.txt"), "w", encoding="utf-8") as fh:
            fh.writelines(t + "\n" for t in texts)
        with open(os.path.join(out, f"{split}_labels.txt"), "w", encoding="utf-8") as fh:
            fh.writelines((row[0] if row else "") + "\n" for row in labels)


def dense_words(src, out, n_docs=16000, n_train=12800, head_tokens=25, n_features=1000, label_ranks=(100, 600),
                min_tokens=60, seed=0):
    """Write the dense-label, feature-only dataset described in the module docstring; returns its shape."""
    texts = load_text_dataset(src, "train")[0] + load_text_dataset(src, "test")[0]
    tokens = [WORD.findall(t.lower()) for t in texts]
    keep = [i for i, t in enumerate(tokens) if len(t) >= min_tokens]
    np.random.RandomState(seed).shuffle(keep)
    keep = keep[:n_docs]
    heads = [set(tokens[i][:head_tokens]) for i in keep]
    rests = [set(tokens[i][head_tokens:]) - ENGLISH_STOP_WORDS for i in keep]
    feature_df = collections.Counter(w for s in heads for w in s)
    label_df = collections.Counter(w for s in rests for w in s)
    features = _most_frequent(feature_df)[:n_features]
    labels = _most_frequent(label_df)[label_ranks[0]:label_ranks[1]]
    f_index, l_index = {w: j for j, w in enumerate(features)}, {w: j for j, w in enumerate(labels)}
    rows = []
    for head, rest in zip(heads, rests):
        f = sorted(f_index[w] for w in head if w in f_index)
        y = sorted(l_index[w] for w in rest if w in l_index)
        if f and y:
            rows.append((f, y))
    os.makedirs(out, exist_ok=True)
    for split, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
        with open(os.path.join(out, f"{split}.svm"), "w") as fh:
            fh.write(f"{len(part)} {len(features)} {len(labels)}\n")
            fh.writelines(",".join(map(str, y)) + " " + " ".join(f"{j}:1" for j in f) + "\n" for f, y in part)
    for name, words in (("feature_names.txt", features), ("label_names.txt", labels)):
        with open(os.path.join(out, name), "w", encoding="utf-8") as fh:
            fh.writelines(w + "\n" for w in words)
    return {"documents": len(rows), "labels per document": float(np.mean([len(y) for _, y in rows])),
            "features per document": float(np.mean([len(f) for f, _ in rows]))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["first-tag", "dense-words"])
    p.add_argument("src", help="a text-layout dataset folder")
    p.add_argument("out", help="the folder to write")
    args = p.parse_args()
    if args.kind == "first-tag":
        first_tag(args.src, args.out)
    else:
        print(dense_words(args.src, args.out))


if __name__ == "__main__":
    main()
