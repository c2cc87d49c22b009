"""The command line (skelias.cli): train, predict and evaluate on text and sparse data."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from skelias.cli import main
from skelias.datasets import dump_xmc_sparse


def test_train_predict_evaluate_on_the_embedded_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "cooking-stackexchange", "model", "--model", "elias", "--param", "embed_dim=16",
                 "n_epochs_stage1=1", "n_epochs_stage2=0", "lr=0.01", "random_state=0"]) == 0
    (tmp_path / "q.txt").write_text("How long to boil an egg?\nBest flour for bread\n")
    capsys.readouterr()
    assert main(["predict", "model", "q.txt", "--k", "3"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[:2] for r in rows] == [["0", "1"], ["0", "2"], ["0", "3"], ["1", "1"], ["1", "2"], ["1", "3"]]
    assert all(float(r[3]) >= float(s[3]) for r, s in itertools.pairwise(rows) if r[0] == s[0])
    assert main(["predict", "model", "q.txt", "--k", "2", "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["row"] for d in lines] == [0, 1] and all(len(d["labels"]) == 2 for d in lines)
    assert lines[0]["labels"] == [r[2] for r in rows[:2]]
    assert main(["evaluate", "model", "cooking-stackexchange", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"P@1", "nDCG@5", "PSP@5", "R@100"} <= set(report) and 0.05 < report["P@1"] < 1  # random: < 0.01


def test_sparse_data_and_clear_errors(tmp_path, capsys):
    rs = np.random.RandomState(0)
    X = sp.random(200, 30, density=0.2, format="csr", random_state=rs, dtype=np.float32)
    Y = sp.csr_matrix((np.ones(200, np.float32), (np.arange(200), rs.randint(0, 6, 200))), shape=(200, 6))
    (tmp_path / "data").mkdir()
    dump_xmc_sparse(tmp_path / "data" / "train.svm", X, Y)
    dump_xmc_sparse(tmp_path / "data" / "test.svm", X[:50], Y[:50])
    assert main(["train", str(tmp_path / "data"), str(tmp_path / "m"), "--model", "knn"]) == 0
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "data" / "test.svm"), "--k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert 50 <= len(out) <= 100 and all(line.split("\t")[2].isdigit() for line in out)  # column indices
    assert main(["evaluate", str(tmp_path / "m"), str(tmp_path / "data")]) == 0
    with pytest.raises(SystemExit, match="cannot read"):
        main(["train", str(tmp_path / "missing"), str(tmp_path / "m2")])
    with pytest.raises(SystemExit, match="key=value"):
        main(["train", "cooking-stackexchange", str(tmp_path / "m3"), "--param", "no_equals_sign"])
    assert main(["train", "cooking-stackexchange", str(tmp_path / "m4"), "--model", "knn", "--param",
                 "n_neighbors=0"]) == 2
    assert "'n_neighbors' parameter" in capsys.readouterr().err


def test_module_entry_point_and_help():
    out = subprocess.run([sys.executable, "-m", "skelias", "--help"], check=True, capture_output=True, text=True)
    assert "train" in out.stdout and "predict" in out.stdout and "evaluate" in out.stdout
    out = subprocess.run([sys.executable, "-m", "skelias", "predict", "--help"], check=True, capture_output=True,
                         text=True)
    assert "--format" in out.stdout


def test_metrics_import_without_torch():
    code = "import sys, skelias.metrics, skelias.datasets; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
