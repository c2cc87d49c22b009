"""The scripts under examples/ run as written (on small data) and report what they claim."""

import importlib
import importlib.util
import os

import numpy as np
import pytest

from skelias import ScoreCalibrator

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_pipeline_gridsearch_example(capsys):
    search = load("pipeline_gridsearch").main(["--small"])
    assert set(search.best_params_) == {"eliasclassifier__beam_size"}
    out = capsys.readouterr().out
    assert "best parameters" in out and "tags for" in out


@pytest.mark.slow
def test_elias_plus_plus_example(capsys):
    model = load("elias_plus_plus").main(["--small"])
    out = capsys.readouterr().out
    assert "reloaded predictions identical: True" in out
    for row in ("ELIAS ", "+ sparse re-ranker", "+ score calibration"):
        assert row in out
    assert isinstance(model, ScoreCalibrator) and hasattr(model, "tree_")


@pytest.mark.slow
def test_index_analysis_example(tmp_path, capsys):
    png = tmp_path / "edges.png"
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    per_decile = load("index_analysis").main(["--small", *(["--plot", str(png)] if has_mpl else [])])
    assert per_decile.shape == (10,) and np.all(np.isfinite(per_decile)) and per_decile.max() > 0
    assert not has_mpl or png.stat().st_size > 1000
    assert "pruned" in capsys.readouterr().out


def test_benchmark_ensemble_averages_saved_topk_like_topk_ensemble(tmp_path):
    common = importlib.import_module("examples.benchmarks._common")
    classes = np.array(["a", "b", "c", "d"])
    # member 1 ranks a, b; member 2 ranks b, d (-1 / -inf = padding); label c is ranked by nobody
    np.savez(tmp_path / "m1.npz", idx=np.array([[0, 1, -1]]), scores=np.array([[0.9, 0.4, -np.inf]]), classes=classes)
    np.savez(tmp_path / "m2.npz", idx=np.array([[1, 3, -1]]), scores=np.array([[0.8, 0.2, -np.inf]]), classes=classes)
    out_classes, idx, scores = common.average_topk([tmp_path / "m1.npz", tmp_path / "m2.npz"], k=4)
    assert list(out_classes) == list(classes)
    np.testing.assert_array_equal(idx, [[1, 0, 3, -1]])  # b: (0.4 + 0.8) / 2, a: 0.9 / 2, d: 0.2 / 2
    np.testing.assert_allclose(scores[0, :3], [0.6, 0.45, 0.1], rtol=1e-6)
    np.savez(tmp_path / "m3.npz", idx=np.array([[0]]), scores=np.array([[1.0]]), classes=classes[::-1])
    try:
        common.average_topk([tmp_path / "m1.npz", tmp_path / "m3.npz"])
    except ValueError as exc:
        assert "different label spaces" in str(exc)
    else:
        raise AssertionError("mixed label spaces were accepted")


def test_benchmark_set_parameters_decode_json_and_keep_plain_strings():
    common = importlib.import_module("examples.benchmarks._common")
    got = common.parse_params(["adjacency_init=tree", "lr=0.1", "n_clusters=null", "finetune_pretrained=true",
                               "kappa=[1, 2]", "pretrained_model=all-MiniLM-L6-v2", "memory=/tmp/x=y"])
    assert got == {"adjacency_init": "tree", "lr": 0.1, "n_clusters": None, "finetune_pretrained": True,
                   "kappa": [1, 2], "pretrained_model": "all-MiniLM-L6-v2", "memory": "/tmp/x=y"}


def test_benchmark_model_settings_win_over_set_parameters():
    bench = importlib.import_module("examples.benchmarks.bench_elias")
    args = ["n_epochs_stage2=3", "lr=0.02", "n_clusters=4"]
    assert bench.elias_params("stage1", 50, args, random_state=0) == {
        "random_state": 0, "n_epochs_stage2": 0, "lr": 0.02, "n_clusters": 4}
    assert bench.elias_params("stage2", 50, args)["n_epochs_stage2"] == 3
    ova = bench.elias_params("ova", 50, args)
    assert (ova["n_clusters"], ova["shortlist_size"], ova["n_epochs_stage2"]) == (1, 50, 0)


def test_benchmark_datasets_load_texts_or_normalised_features_with_label_names(tmp_path):
    common = importlib.import_module("examples.benchmarks._common")
    sparse = tmp_path / "sparse"
    sparse.mkdir()
    (sparse / "train.svm").write_text("2 3 2\n0,1 0:3 2:4\n1 1:2\n")
    (sparse / "label_names.txt").write_text("alpha\nbeta\n")
    X, y = common.load_split(str(sparse), "train")
    assert y == [["alpha", "beta"], ["beta"]]
    np.testing.assert_allclose(X.toarray(), [[0.6, 0, 0.8], [0, 1, 0]], rtol=1e-6)
    assert not common.is_text(X) and common.take(X, [1]).shape == (1, 3)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "train_texts.txt").write_text("a b\nc d\n")
    (texts / "train_labels.txt").write_text("x y\nz\n")
    X, y = common.load_split(str(texts), "train")
    assert X == ["a b", "c d"] and y == [["x", "y"], ["z"]] and common.take(X, [1]) == ["c d"]


def test_derived_datasets_keep_the_first_tag_and_turn_later_words_into_labels(tmp_path):
    derive = importlib.import_module("examples.benchmarks.derive")
    common = importlib.import_module("examples.benchmarks._common")
    src = tmp_path / "src"
    src.mkdir()
    words = [f"word{chr(97 + i)}" for i in range(8)]
    rng = np.random.RandomState(0)
    for split, n in (("train", 30), ("test", 10)):
        docs = [" ".join(rng.choice(words, 12)) for _ in range(n)]
        (src / f"{split}_texts.txt").write_text("".join(d + "\n" for d in docs))
        (src / f"{split}_labels.txt").write_text("".join(("b a\n" if i % 3 else "\n") for i in range(n)))
    derive.first_tag(str(src), str(tmp_path / "ft"))
    X, y = common.load_split(str(tmp_path / "ft"), "test")
    assert X == common.load_split(str(src), "test")[0]
    assert y == [(["b"] if i % 3 else []) for i in range(10)]

    shapes = [derive.dense_words(str(src), str(tmp_path / f"dw{i}"), n_docs=40, n_train=25, head_tokens=4,
                                 n_features=5, label_ranks=(1, 6), min_tokens=12) for i in range(2)]
    assert shapes[0] == shapes[1]
    for name in ("train.svm", "test.svm", "feature_names.txt", "label_names.txt"):
        assert (tmp_path / "dw0" / name).read_bytes() == (tmp_path / "dw1" / name).read_bytes()  # deterministic
    X, y = common.load_split(str(tmp_path / "dw0"), "train")
    features = (tmp_path / "dw0" / "feature_names.txt").read_text().split()
    labels = (tmp_path / "dw0" / "label_names.txt").read_text().split()
    assert X.shape == (25, 5) and len(features) == 5 and len(labels) == 5 and set(labels) <= set(words)
    docs = [d.split() for part in ("train", "test") for d in (src / f"{part}_texts.txt").read_text().splitlines()]
    for i in range(X.shape[0]):  # each row: a document's first 4 words in the vocabulary, its later words as labels
        row_features = {features[j] for j in X[i].indices}
        assert row_features and y[i]
        assert any(set(d[:4]) & set(features) == row_features and set(d[4:]) & set(labels) == set(y[i])
                   for d in docs)
    assert shapes[0]["documents"] == 40 and shapes[0]["features per document"] > 0


def test_benchmark_summary_compares_the_calibrated_chain_with_the_best_peer():
    summary = importlib.import_module("examples.benchmarks.summary")
    metrics = lambda p1, r100: {"P@1": p1, "PSP@5": p1 / 2, "R@100": r100}
    rows = [{"model": "PECOS XR-Linear", **metrics(0.40, 0.60)}, {"model": "omikuji", **metrics(0.42, 0.70)},
            {"model": "PECOS XR-Linear, skelias's default features", **metrics(0.50, 0.75)},
            {"model": "ELIAS (stage 2), TF-IDF", **metrics(0.45, 0.80)},
            {"model": "+ score calibration, TF-IDF", **metrics(0.52, 0.80)}]
    row = summary.summary_row("d", rows)
    assert row["peer"] == "omikuji" and row["skelias"] == "ELIAS++, TF-IDF"
    assert abs(row["dP@1"] - 10.0) < 1e-9 and abs(row["dR@100"] - 10.0) < 1e-9  # R@100: the best of any peer
    assert abs(row["pecos_own_P@1"] - 50.0) < 1e-9
    assert summary.summary_row("d", rows[:2]) is None  # no chain
    refit = summary.summary_row("d", [*rows, {"model": "+ refit on all rows, TF-IDF", **metrics(0.54, 0.81)}])
    assert abs(refit["P@1"] - 54.0) < 1e-9 and refit["skelias"] == "ELIAS++, TF-IDF"  # the refit chain is the final


def test_speed_tables_give_ratios_to_pecos_and_the_profile_apart():
    bench = importlib.import_module("examples.benchmarks.bench_speed")
    figures = {"fit_s": 10.0, "batch_s": 2.0, "p50_ms": 1.0, "p99_ms": 3.0, "model_mb": 40.0, "P@1": 0.5,
               "PSP@5": 0.3, "R@100": 0.7}
    rows = [{"model": "PECOS XR-Linear", **figures},
            {"model": "ELIAS, TF-IDF", **figures, "fit_s": 50.0, "p50_ms": 1.5,
             "profile_ms": {"label scores": 0.5, "whole query": 1.5}}]
    table = bench.speed_table(rows)
    skelias_row = table["rows"][1]
    assert skelias_row["fit_x"] == 5.0 and skelias_row["p50_x"] == 1.5 and skelias_row["P@1"] == 50.0
    assert skelias_row["pecos_p50_ms"] == 1.0  # no interleaved measurement: PECOS's own row
    assert "profile_ms" not in skelias_row
    paired = bench.speed_table([rows[0], {**rows[1], "pecos_p50_ms": 0.75, "pecos_p99_ms": 2.0,
                                          "pecos_batch_s": 4.0}])["rows"][1]
    assert paired["p50_x"] == 2.0 and paired["p99_x"] == 1.5 and paired["pecos_p50_ms"] == 0.75
    assert paired["batch_x"] == 0.5 and paired["pecos_batch_s"] == 4.0
    assert paired["fit_x"] == 5.0  # the fit is not measured twice
    profile = bench.profile_table(rows)
    assert profile["rows"] == [{"model": "ELIAS, TF-IDF", "label scores": 0.5, "whole query": 1.5}]
    assert [c[0] for c in profile["columns"]] == ["model", "label scores", "whole query"]


def test_speed_latencies_interleave_the_peer_on_the_same_queries():
    bench = importlib.import_module("examples.benchmarks.bench_speed")
    calls = []

    class Model:
        def predict_topk(self, q, k):
            calls.append(("model", q))

    lat, peer_lat = bench.latencies(Model(), ["a", "b", "c"], peer=lambda i: calls.append(("peer", i)))
    assert calls[-6:] == [("model", "a"), ("peer", 0), ("model", "b"), ("peer", 1), ("model", "c"), ("peer", 2)]
    assert lat.shape == peer_lat.shape == (3,)
    assert bench.latencies(Model(), ["a"]).shape == (1,)  # no peer: the model's seconds only


def test_speed_profile_finds_every_component_of_a_raw_text_query(elias_base, cooking):
    bench = importlib.import_module("examples.benchmarks.bench_speed")
    texts, _ = cooking
    profile = bench.profile_queries(elias_base, [[t] for t in texts[1200:1210]])
    for part in ("vectorize (TF-IDF)", "encoder φ", "shortlist (Eq. 6)", "label scores", "whole query"):
        assert profile[part] > 0, part  # each named step is found where the library now spends it
    parts = [v for k, v in profile.items() if k != "whole query" and not k.startswith("other")]
    assert profile["whole query"] >= sum(parts)  # the components are outermost calls: none counted twice
