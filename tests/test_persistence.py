"""skelias.save / skelias.load (skelias.persistence): self-contained, pickle-free, verified model directories."""

import json
import shutil
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline

import skelias
from skelias import ELIASClassifier, KNNLabelClassifier, ScoreCalibrator, SparseReranker, TopKEnsemble

LOAD_WITHOUT_PICKLE = textwrap.dedent("""
    import json, pickle, sys
    import numpy as np
    import scipy.sparse as sp
    import skelias

    def refuse(*args, **kwargs):
        raise RuntimeError("pickle was used")

    class Refused:
        def __init__(self, *args, **kwargs):
            refuse()

    pickle.loads = pickle.load = refuse
    pickle.Unpickler = Refused
    root = sys.argv[1]
    texts = json.load(open(f"{root}/texts.json"))
    X = sp.load_npz(f"{root}/X.npz")
    for name, kind in json.load(open(f"{root}/models.json")).items():
        model = skelias.load(f"{root}/{name}")
        labels, scores = model.predict_topk(texts if kind == "text" else X, 10)
        np.savez(f"{root}/{name}.npz", labels=np.asarray(labels).astype(str), scores=scores)
""")


@pytest.fixture(scope="module")
def models(cooking, tmp_path_factory):
    """Every estimator and nesting, fitted on raw texts (kind "text") or on TF-IDF features ("features")."""
    texts, labels = cooking
    tiny = dict(embed_dim=16, n_epochs_stage1=1, n_epochs_stage2=1, batch_size=128, shortlist_size=100,
                max_leaf_size=50, random_state=0)
    tr, y = texts[:800], labels[:800]
    vec = TfidfVectorizer(min_df=2).fit(tr)
    elias = ELIASClassifier(**tiny).fit(tr, y)
    out = {
        "knn": (KNNLabelClassifier(n_neighbors=5).fit(tr, y), "text"),
        "elias": (elias, "text"),
        "elias_features": (ELIASClassifier(**{**tiny, "n_epochs_stage2": 0}, feature_weighting="idf")  # feature_idf_
                           .fit(vec.transform(tr), y), "features"),
        "ranker_frozen": (SparseReranker(FrozenEstimator(elias), n_candidates=10, random_state=0).fit(tr, y), "text"),
        "elias_pp": (ScoreCalibrator(SparseReranker(ELIASClassifier(**tiny), n_candidates=10, random_state=0),
                                     validation_size=200, random_state=0).fit(tr, y), "text"),
        "ensemble": (TopKEnsemble(KNNLabelClassifier(n_neighbors=5), n_estimators=2, random_state=0).fit(tr, y),
                     "text"),
        "pipeline": (make_pipeline(TfidfVectorizer(min_df=2), ELIASClassifier(**tiny)).fit(tr, y), "pipeline"),
    }
    return out, vec


def _predict(model, kind, texts, X):
    if kind == "pipeline":
        return model[-1].predict_topk(model[0].transform(texts), 10)
    return model.predict_topk(texts if kind == "text" else X, 10)


@pytest.mark.slow
def test_every_estimator_round_trips_in_a_process_without_pickle(models, cooking, tmp_path):
    fitted, vec = models
    texts, _ = cooking
    queries = texts[1000:1100]
    X = vec.transform(queries)
    kinds = {}
    for name, (model, kind) in fitted.items():
        skelias.save(model, tmp_path / name)
        kinds[name] = "text" if kind == "pipeline" else kind
    # a Pipeline's predict_topk is its final step's: compare through the loaded pipeline in-process below
    (tmp_path / "texts.json").write_text(json.dumps(queries))
    sp.save_npz(tmp_path / "X.npz", X)
    (tmp_path / "models.json").write_text(json.dumps({k: v for k, v in kinds.items() if k != "pipeline"}))
    (tmp_path / "load.py").write_text(LOAD_WITHOUT_PICKLE)
    subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path)], check=True, timeout=600)
    for name, (model, kind) in fitted.items():
        labels, scores = _predict(model, kind, queries, X)
        if name == "pipeline":
            loaded = skelias.load(tmp_path / name)
            got_labels, got_scores = _predict(loaded, kind, queries, X)
        else:
            got = np.load(tmp_path / f"{name}.npz")
            got_labels, got_scores = got["labels"], got["scores"]
        np.testing.assert_array_equal(np.asarray(labels).astype(str), got_labels, err_msg=name)
        np.testing.assert_array_equal(scores, got_scores, err_msg=name)


def test_shared_objects_stay_shared(models, tmp_path):
    fitted, _ = models
    loaded = skelias.load(skelias.save(fitted["ranker_frozen"][0], tmp_path / "r"))
    # the re-ranker reuses its base's TF-IDF (one vectorisation per query): identity survives the round trip
    assert loaded.vectorizer_ is loaded.estimator_.estimator.vectorizer_
    assert loaded.label_indexer_ is loaded.estimator_.estimator.label_indexer_


def test_every_flipped_byte_missing_file_or_foreign_directory_is_reported(models, tmp_path):
    fitted, _ = models
    path = skelias.save(fitted["knn"][0], tmp_path / "knn")
    for file in sorted(p for p in path.iterdir() if p.name != "manifest.json"):
        data = bytearray(file.read_bytes())
        original = bytes(data)
        data[len(data) // 2] ^= 0x01
        file.write_bytes(bytes(data))
        with pytest.raises(ValueError, match=f"{file.name} does not match its checksum"):
            skelias.load(path)
        file.write_bytes(original)
    skelias.load(path)  # intact again
    (path / "arrays.safetensors").unlink()
    with pytest.raises(ValueError, match="arrays.safetensors listed in the manifest is missing"):
        skelias.load(path)
    with pytest.raises(ValueError, match="not a skelias model directory"):
        skelias.load(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not written by skelias.save"):
        skelias.load(other)
    (other / "manifest.json").write_text(json.dumps({"format": "skelias-model", "format_version": 99,
                                                     "versions": {"skelias": "9.0"}, "files": {}}))
    with pytest.raises(ValueError, match="format 99 by skelias 9.0.*Upgrade skelias"):
        skelias.load(other)
    (other / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        skelias.load(other)


def test_save_replaces_a_model_but_never_a_foreign_directory(models, tmp_path):
    fitted, _ = models
    path = skelias.save(fitted["knn"][0], tmp_path / "m")
    skelias.save(fitted["ensemble"][0], path)  # a model directory is replaced
    assert isinstance(skelias.load(path), TopKEnsemble)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # nothing left behind
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not a skelias model directory"):
        skelias.save(fitted["knn"][0], tmp_path / "data")
    assert (tmp_path / "data" / "keep.txt").read_text() == "x"
    with pytest.raises(TypeError, match="not supported by skelias.save"):
        skelias.save(KNNLabelClassifier(vectorizer=TfidfVectorizer(tokenizer=str.split)).fit(["a b", "c d"],
                                                                                              [["x"], ["y"]]),
                     tmp_path / "custom")
    assert not (tmp_path / "custom").exists()


def test_model_card_and_manifest(models, tmp_path):
    fitted, _ = models
    model = fitted["elias_pp"][0]
    path = skelias.save(model, tmp_path / "m", metrics={"P@1": 0.5123})
    card = (path / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: skelias") and f"labels: {len(model.classes_):,}" in card
    assert "| P@1 | 0.5123 |" in card and "ScoreCalibrator" in card
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == skelias.persistence.FORMAT_VERSION
    assert set(manifest["files"]) == {"README.md", "arrays.safetensors", "model.json", "tensors.safetensors"}
    assert {"skelias", "torch", "scikit-learn", "numpy"} <= set(manifest["versions"])


def test_hybrid_model_needs_nothing_outside_its_directory_or_pickle(tiny_bert, cooking, tmp_path):
    texts, labels = cooking
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_bert, checkpoint)
    clf = ELIASClassifier(pretrained_model=str(checkpoint), pretrained_max_length=16, embed_dim=16,
                          n_epochs_stage1=1, n_epochs_stage2=0, shortlist_size=100, max_leaf_size=50,
                          random_state=0).fit(texts[:400], labels[:400])
    expected = clf.predict_topk(texts[400:440], 5)
    path = skelias.save(clf, tmp_path / "model")
    joblib.dump(clf, tmp_path / "model.joblib")
    shutil.rmtree(checkpoint)
    assert (path / "pretrained" / "0" / "config.json").is_file()
    for loaded in (skelias.load(path, device="cpu"), joblib.load(tmp_path / "model.joblib")):
        assert loaded.pretrained_backend_ == clf.pretrained_backend_  # embeds as it was fitted (int8 or float32)
        labels_, scores = loaded.predict_topk(texts[400:440], 5)
        np.testing.assert_array_equal(labels_, expected[0])
        np.testing.assert_allclose(scores, expected[1], rtol=1e-6)


@pytest.mark.parametrize("precision, ratio, top1, atol", [("float16", 0.65, 0.97, 5e-3), ("int8", 0.5, 0.9, 3e-2)])
def test_reduced_precision_storage_shrinks_the_network_and_keeps_the_rankings(elias_base, cooking, tmp_path,
                                                                              precision, ratio, top1, atol):
    texts, _ = cooking
    full = skelias.save(elias_base, tmp_path / "f32")
    small = skelias.save(elias_base, tmp_path / precision, precision=precision)

    tensors = [(p / "tensors.safetensors").stat().st_size for p in (full, small)]
    assert tensors[1] < ratio * tensors[0]  # float weights halved or quartered; the index (int64) stays
    assert json.loads((small / "manifest.json").read_text())["precision"] == precision
    loaded = skelias.load(small)
    assert all(p.dtype == torch.float32 for p in loaded.network_.parameters())  # float32 again once loaded
    a, sa = elias_base.predict_topk(texts[1200:1400], 10)
    b, sb = loaded.predict_topk(texts[1200:1400], 10)
    assert np.mean(a[:, 0] == b[:, 0]) >= top1
    np.testing.assert_allclose(np.nan_to_num(sb, neginf=0), np.nan_to_num(sa, neginf=0), atol=atol)
    with pytest.raises(ValueError, match="precision must be"):
        skelias.save(elias_base, tmp_path / "bad", precision="int4")

@pytest.mark.parametrize("name", ["elias", "elias_pp", "knn", "ensemble"])
def test_a_model_written_before_a_parameter_existed_loads_with_its_default(models, tmp_path, name):
    import hashlib
    import pickle

    model = models[0][name][0]
    path = skelias.save(model, tmp_path / "m")
    # drop the parameter "k" from every estimator of the saved file, as a file written before it existed
    doc = json.loads((path / "model.json").read_text())
    dropped = []

    def drop(node):
        if isinstance(node, dict):
            if "__object__" in node and node["__object__"].startswith("skelias."):
                pairs = node["state"]["__dict__"]
                node["state"]["__dict__"] = [p for p in pairs if p[0] != "k"]
                dropped.append(len(pairs) - len(node["state"]["__dict__"]))
            for v in node.values():
                drop(v)
        elif isinstance(node, list):
            for v in node:
                drop(v)

    drop(doc)
    assert dropped and all(n == 1 for n in dropped[:1])
    (path / "model.json").write_text(json.dumps(doc))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["model.json"] = hashlib.sha256((path / "model.json").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    loaded = skelias.load(path)
    assert loaded.get_params()["k"] == type(model)().k
    state = dict(model.__getstate__())
    state.pop("k")
    old = type(model).__new__(type(model))
    old.__setstate__(pickle.loads(pickle.dumps(state)))
    assert old.k == type(model)().k and repr(old)
