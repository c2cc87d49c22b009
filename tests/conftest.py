"""Fixtures shared by the test modules: small data, tiny model settings, the justified estimator-check failures."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end fit of several seconds (CI runs them all)")


@pytest.fixture
def shared_datasets():
    """Path to ../shared/datasets; skips the test cleanly when it is absent."""
    path = SHARED / "datasets"
    if not path.is_dir():
        pytest.skip("../shared/datasets is not available")
    return path


@pytest.fixture(scope="session")
def cooking():
    """The first 1,500 training questions of the embedded Cooking Stack Exchange data: (texts, tag lists)."""
    from skelias.datasets import load_cooking_stackexchange

    texts, labels = load_cooking_stackexchange("train")
    return texts[:1500], labels[:1500]


@pytest.fixture
def tiny():
    """ELIASClassifier settings that train in about a second on the cooking slice (a fresh dict per test).

    ``lr=0.01``: a rate that learns something in three epochs (``"auto"`` gives these small slices 0.003);
    ``dropout=0.2`` likewise (``"auto"``: 0.5).
    """
    return dict(embed_dim=32, n_epochs_stage1=2, n_epochs_stage2=1, batch_size=128, shortlist_size=200,
                max_leaf_size=50, lr=0.01, dropout=0.2, random_state=0)


@pytest.fixture(scope="session")
def elias_base(cooking):
    """A tiny two-stage ELIASClassifier fitted on the first 1,200 cooking questions (do not modify it)."""
    from skelias import ELIASClassifier

    texts, labels = cooking
    return ELIASClassifier(embed_dim=32, n_epochs_stage1=2, n_epochs_stage2=1, batch_size=128, shortlist_size=200,
                           max_leaf_size=50, lr=0.01, dropout=0.2, random_state=0).fit(texts[:1200], labels[:1200])


@pytest.fixture(scope="session")
def expected_failed_checks():
    """Justified exceptions to scikit-learn's estimator checks, shared by every skelias estimator."""
    return {
        "check_classifier_multioutput": "predict returns each row's top-k labels (the XMC convention), not every "
                                        "label with a positive decision_function",
        "check_classifiers_multilabel_representation_invariance": "a list of equal-length 0/1 rows is read as label "
                                                                  "collections (skelias's target format), not as an "
                                                                  "indicator matrix",
        "check_classifiers_multilabel_output_format_predict_proba": "labels outside a row's scored candidates get "
                                                                    "exactly 0 (the scores are sparse by design)",
    }


def run_estimator_checks(estimator, expected_failed_checks, min_passed, extra=None):
    """Run scikit-learn's ``check_estimator`` (classifier checks included); fail with the failed checks' messages."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(estimator, expected_failed_checks={**expected_failed_checks, **(extra or {})},
                              on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:600] for r in results if r["status"] == "failed"}
    assert not failed, failed
    assert sum(r["status"] == "passed" for r in results) >= min_passed


@pytest.fixture(scope="session")
def estimator_checks(expected_failed_checks):
    """``estimator_checks(estimator, min_passed, extra)``: every applicable scikit-learn API check passes."""
    return lambda estimator, min_passed=35, extra=None: run_estimator_checks(estimator, expected_failed_checks,
                                                                             min_passed, extra)


@pytest.fixture(scope="session")
def tree_index():
    """``tree_index(seed, L=24, C=6) -> (rng, tree, a_indices, a_mask)``: a balanced clustering of L random labels
    and its padded stage-1 adjacency."""
    import numpy as np

    from skelias.cluster import balanced_kmeans
    from skelias.index import padded_adjacency

    def make(seed, L=24, C=6):
        rs = np.random.RandomState(seed)
        tree = balanced_kmeans(rs.randn(L, 4), n_clusters=C, random_state=0)
        ind, mask, _ = padded_adjacency(tree.adjacency(), L)
        return rs, tree, ind, mask

    return make


@pytest.fixture(scope="session")
def ranker(elias_base, cooking):
    """A SparseReranker over the frozen ``elias_base`` (20 candidates), fitted on the same 1,200 questions."""
    from sklearn.frozen import FrozenEstimator

    from skelias import SparseReranker

    texts, labels = cooking
    return SparseReranker(FrozenEstimator(elias_base), n_candidates=20, random_state=0).fit(texts[:1200],
                                                                                             labels[:1200])


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, cooking):
    """A tiny randomly initialised BERT and its tokenizer, saved to a local directory (no download)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    texts, _ = cooking
    words = sorted({w.lower().strip("?.,!") for t in texts for w in t.split()} - {""})[:3000]
    d = tmp_path_factory.mktemp("tinybert")
    (d / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tok = BertTokenizerFast(str(d / "vocab.txt"))  # positional: the keyword is vocab_file before transformers 5, vocab after
    cfg = BertConfig(vocab_size=len(words) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return str(d)
