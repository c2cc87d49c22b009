"""The default vectorizer's choice of features from the training texts."""

import numpy as np
import pytest

from skelias import ELIASClassifier, KNNLabelClassifier, XRLinearClassifier
from skelias._validation import SHORT_TEXT_CHARS, default_vectorizer

SHORT = ["juoksukengät ja urheilu", "juoksukenkien testi", "kenkien huolto", "urheilun historia"] * 3
LONG = [" ".join(["word"] * (SHORT_TEXT_CHARS // 4))] * 3


def test_short_texts_get_character_ngrams():
    vec = default_vectorizer(SHORT)
    assert vec.analyzer == "char_wb" and vec.ngram_range == (3, 5)
    assert vec.sublinear_tf and vec.min_df == 2 and vec.max_features == 200_000 and vec.dtype == np.float32


@pytest.mark.parametrize("texts", [LONG, None, []])
def test_long_or_unknown_texts_get_word_ngrams(texts):
    vec = default_vectorizer(texts)
    assert vec.analyzer == "word" and vec.ngram_range == (1, 2)


def test_threshold_is_on_the_mean_length():
    at = ["x" * SHORT_TEXT_CHARS, "y" * SHORT_TEXT_CHARS]
    above = ["x" * SHORT_TEXT_CHARS, "y" * (SHORT_TEXT_CHARS + 2)]
    assert default_vectorizer(at).analyzer == "char_wb"
    assert default_vectorizer(above).analyzer == "word"


def test_inflected_forms_share_character_features():
    # two inflected forms of the same Finnish compound share no word feature, but character n-grams
    X = default_vectorizer(SHORT).fit_transform(SHORT)
    a, b = X[0], X[1]  # "juoksukengät ...", "juoksukenkien ..."
    assert a.multiply(b).sum() > 0.1
    words = default_vectorizer(None).set_params(min_df=1).fit_transform(SHORT[:2])
    assert words[0].multiply(words[1]).sum() == 0


@pytest.mark.parametrize("make", [
    lambda: ELIASClassifier(embed_dim=8, n_epochs_stage1=1, n_epochs_stage2=0, random_state=0),
    lambda: XRLinearClassifier(random_state=0),
    lambda: KNNLabelClassifier(n_neighbors=2),
])
def test_estimators_fit_the_rule_and_respect_a_given_vectorizer(make):
    y = [["run"], ["run"], ["care"], ["history"]] * 3
    model = make().fit(SHORT, y)
    assert model.vectorizer_.analyzer == "char_wb"
    from sklearn.feature_extraction.text import TfidfVectorizer

    given = make().set_params(vectorizer=TfidfVectorizer()).fit(SHORT, y)
    assert given.vectorizer_.analyzer == "word"


@pytest.mark.parametrize("settings", [dict(), dict(sublinear_tf=True, dtype=np.float32), dict(norm="l1", use_idf=False),
                                      dict(norm=None, analyzer="char_wb", ngram_range=(3, 5)), dict(smooth_idf=False, sublinear_tf=True, ngram_range=(1, 2))])
def test_tfidf_transform_equals_the_vectorizers_own(cooking, settings):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    from skelias._validation import tfidf_transform

    texts, _ = cooking
    vec = TfidfVectorizer(min_df=2, **settings).fit(texts[:1000])
    for batch in (texts[1000:1001], texts[1000:1400], ["", "zzzz qqqq"]):
        ref, fast = vec.transform(batch), tfidf_transform(vec, batch)
        assert type(fast) is type(ref) and fast.dtype == ref.dtype
        np.testing.assert_array_equal(fast.indptr, ref.indptr)
        np.testing.assert_array_equal(fast.indices, ref.indices)
        np.testing.assert_array_equal(fast.data, ref.data)  # bit for bit
    counts = CountVectorizer().fit(texts[:100])  # any other vectorizer: its own transform
    assert (tfidf_transform(counts, texts[:3]) != counts.transform(texts[:3])).nnz == 0
    with pytest.raises(Exception, match="not fitted"):
        tfidf_transform(TfidfVectorizer(), texts[:3])
