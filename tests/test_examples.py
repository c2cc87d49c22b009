"""The scripts under examples/ run as written (on small data) and report what they claim."""

import importlib.util
import os

import numpy as np

from skelias import ScoreCalibrator

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pipeline_gridsearch_example(capsys):
    search = load("pipeline_gridsearch").main(["--small"])
    assert set(search.best_params_) == {"eliasclassifier__beam_size"}
    out = capsys.readouterr().out
    assert "best parameters" in out and "tags for" in out


def test_elias_plus_plus_example(capsys):
    model = load("elias_plus_plus").main(["--small"])
    out = capsys.readouterr().out
    assert "reloaded predictions identical: True" in out
    for row in ("ELIAS ", "+ sparse re-ranker", "+ score calibration"):
        assert row in out
    assert isinstance(model, ScoreCalibrator) and hasattr(model, "tree_")


def test_index_analysis_example(tmp_path, capsys):
    png = tmp_path / "edges.png"
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    per_decile = load("index_analysis").main(["--small", *(["--plot", str(png)] if has_mpl else [])])
    assert per_decile.shape == (10,) and np.all(np.isfinite(per_decile)) and np.all(per_decile >= 0)
    assert not has_mpl or png.stat().st_size > 1000
    assert "pruned" in capsys.readouterr().out
