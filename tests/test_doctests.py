"""The ``Examples`` sections of the public docstrings run as doctests."""

import doctest
import importlib

import pytest

MODULES = ["skelias.calibration", "skelias.cluster", "skelias.datasets", "skelias.elias", "skelias.ensemble",
           "skelias.metrics", "skelias.neighbors", "skelias.persistence", "skelias.pretrained", "skelias.rerank",
           "skelias.xr_linear", "skelias._auto", "skelias._labels"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name}"


def test_every_public_estimator_has_a_running_example():
    import skelias

    for name in ("ELIASClassifier", "SparseReranker", "ScoreCalibrator", "TopKEnsemble", "KNNLabelClassifier",
                 "LabelIndexer"):
        doc = getattr(skelias, name).__doc__
        assert "Examples\n    --------" in doc and ">>> " in doc, name
