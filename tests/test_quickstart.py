import pytest

from skelias.quickstart import main


@pytest.mark.slow
def test_quickstart_knn_baseline(capsys):
    m = main(["--model", "knn", "--n-train", "3000"])
    out = capsys.readouterr().out
    assert "CC BY-SA 3.0" in out and "P@1" in out and "KNNLabelClassifier (baseline)" in out
    assert {"P@1", "P@3", "P@5", "nDCG@5", "PSP@5", "R@10", "R@100"} <= set(m)
    assert 0.25 < m["P@1"] <= 1.0 and m["R@100"] >= m["R@10"]


@pytest.mark.slow
def test_quickstart_elias(capsys):
    m = main(["--n-train", "2000", "--epochs", "2", "--no-pretrained"])
    out = capsys.readouterr().out
    assert "ELIASClassifier, TF-IDF encoder" in out
    assert 0.0 < m["P@1"] <= 1.0 and m["R@100"] >= m["R@10"]


@pytest.mark.slow
def test_quickstart_elias_pp(capsys):
    m = main(["--model", "elias++", "--n-train", "2500", "--epochs", "2", "--no-pretrained"])
    out = capsys.readouterr().out
    assert "ELIAS++ (ScoreCalibrator(SparseReranker(ELIASClassifier, TF-IDF encoder" in out
    assert 0.0 < m["P@1"] <= 1.0 and m["R@100"] >= m["R@10"]
