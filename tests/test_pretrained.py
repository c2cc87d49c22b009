import pickle

import numpy as np
import pytest
import torch

from skelias import ELIASClassifier
from skelias.datasets import load_cooking_stackexchange
from skelias.pretrained import PretrainedTextEmbedder, resolve_pretrained_path


def test_embedder_is_normalised_and_order_independent(tiny_bert):
    emb = PretrainedTextEmbedder(tiny_bert, max_length=16, batch_size=3)
    texts = ["how to boil an egg", "a", "bread without yeast at home please", "egg"]
    E = emb.embed(texts)
    assert E.shape == (4, 32) and E.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=1e-5)
    E2 = emb.embed(texts[::-1])[::-1]  # batches are sorted by length; results keep the input order
    np.testing.assert_allclose(E, E2, atol=1e-5)


def test_unresolvable_models_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="could not load the pretrained model"):
        PretrainedTextEmbedder(str(tmp_path / "missing-model-dir"))
    assert resolve_pretrained_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(TypeError):
        resolve_pretrained_path(3)


def test_hybrid_elias_fits_predicts_and_roundtrips(tiny_bert, tmp_path):
    import joblib

    texts, labels = load_cooking_stackexchange("train")
    clf = ELIASClassifier(pretrained_model=tiny_bert, pretrained_max_length=16, embed_dim=32, n_epochs_stage1=1,
                          n_epochs_stage2=1, shortlist_size=100, max_leaf_size=50, random_state=0)
    clf.fit(texts[:600], labels[:600])
    assert clf.weight_decay_ == 0.5  # "auto" with the hybrid encoder
    p = clf.network_.encoder.project.in_features
    assert clf.pretrained_scale_ == pytest.approx(p**0.25)  # "auto": p^(1/4)
    assert float(clf.network_.encoder.pretrained_scale) == pytest.approx(p**0.25)
    names, scores = clf.predict_topk(texts[600:640], 5)
    assert names.shape == (40, 5)
    joblib.dump(clf, tmp_path / "h.joblib")
    loaded = joblib.load(tmp_path / "h.joblib")
    assert "_embedder" not in loaded.__dict__  # the frozen model is not pickled, it is reloaded
    n2, s2 = loaded.predict_topk(texts[600:640], 5)
    np.testing.assert_array_equal(names, n2)
    np.testing.assert_allclose(scores, s2, rtol=1e-5)
    with pytest.raises(TypeError, match="needs raw texts"):
        ELIASClassifier(pretrained_model=tiny_bert).fit(np.ones((3, 2)), [[1], [2], [1]])


def test_finetuned_transformer_encoder(tiny_bert, tmp_path):
    import joblib
    import torch

    texts, labels = load_cooking_stackexchange("train")
    clf = ELIASClassifier(encoder="transformer", pretrained_model=tiny_bert, pretrained_max_length=16,
                          n_epochs_stage1=1, n_epochs_stage2=1, batch_size=64, shortlist_size=100,
                          max_leaf_size=50, random_state=0)
    before = {k: v.clone() for k, v in ELIASClassifier(**clf.get_params())._make_encoder(0).state_dict().items()}
    clf.fit(texts[:300], labels[:300])
    enc = clf.network_.encoder
    assert enc.dim == 32 and clf.transform(texts[:4]).shape == (4, 32)
    after = enc.state_dict()
    # the transformer weights were fine-tuned (the tiny model is loaded from the same directory)
    key = "transformer.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(before[key], after[key])
    names, scores = clf.predict_topk(texts[300:320], 5)
    joblib.dump(clf, tmp_path / "t.joblib")
    n2, s2 = joblib.load(tmp_path / "t.joblib").predict_topk(texts[300:320], 5)
    np.testing.assert_array_equal(names, n2)
    np.testing.assert_allclose(scores, s2, rtol=1e-5)
    with pytest.raises(ValueError, match="needs pretrained_model"):
        ELIASClassifier(encoder="transformer").fit(texts[:10], labels[:10])


def test_embedding_cache_hits_any_subset_of_cached_texts(tmp_path):
    from skelias.pretrained import EmbeddingCache

    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], np.float32)

    cache = EmbeddingCache(tmp_path, "model|16|mean")
    first = cache.embed(["aa", "b", "aa"], embed)
    again = EmbeddingCache(tmp_path, "model|16|mean").embed(["b", "ccc", "aa"], embed)  # a new process, same dir
    np.testing.assert_array_equal(first, [[2, 1], [1, 1], [2, 1]])
    np.testing.assert_array_equal(again, [[1, 1], [3, 1], [2, 1]])
    assert calls == [["aa", "b"], ["ccc"]]  # duplicates embedded once, cached texts never again
    other = EmbeddingCache(tmp_path, "model|32|mean").embed(["aa"], embed)  # other settings, other file
    assert calls[-1] == ["aa"] and other.shape == (1, 2)


def test_hybrid_memory_reuses_embeddings_across_fits(tiny_bert, tmp_path, monkeypatch):
    from skelias.pretrained import PretrainedTextEmbedder

    texts, labels = load_cooking_stackexchange("train")
    seen = []
    orig = PretrainedTextEmbedder.embed
    monkeypatch.setattr(PretrainedTextEmbedder, "embed", lambda self, t: seen.append(len(t)) or orig(self, t))
    params = dict(pretrained_model=tiny_bert, pretrained_max_length=16, embed_dim=16, n_epochs_stage1=1,
                  n_epochs_stage2=0, max_leaf_size=50, memory=str(tmp_path), random_state=0)
    a = ELIASClassifier(**params).fit(texts[:300], labels[:300])
    n_first = sum(seen)
    b = ELIASClassifier(**params).fit(texts[100:300], labels[100:300])  # a subset: nothing to embed
    assert sum(seen) == n_first
    np.testing.assert_array_equal(a.predict_topk(texts[:20], 3)[0], ELIASClassifier(**{**params, "memory": None}).fit(
        texts[:300], labels[:300]).predict_topk(texts[:20], 3)[0])
    assert b.predict_topk(texts[:5], 2)[0].shape == (5, 2)


def test_hybrid_finetuning_trains_the_transformer_and_roundtrips(tiny_bert, tmp_path):
    import joblib
    import torch
    from transformers import AutoModel

    texts, labels = load_cooking_stackexchange("train")
    params = dict(pretrained_model=tiny_bert, pretrained_max_length=16, embed_dim=32, n_epochs_stage1=1,
                  n_epochs_stage2=1, shortlist_size=100, max_leaf_size=50, batch_size=64, random_state=0)
    frozen = ELIASClassifier(**params).fit(texts[:400], labels[:400])  # "auto" on a CPU-only run: frozen
    assert frozen.finetuned_pretrained_ is False and frozen.network_.encoder.transformer is None

    clf = ELIASClassifier(finetune_pretrained=True, lr_pretrained=1e-3, **params).fit(texts[:400], labels[:400])
    assert clf.finetuned_pretrained_ is True
    original = AutoModel.from_pretrained(tiny_bert, local_files_only=True).state_dict()
    tuned = clf.network_.encoder.transformer.transformer.state_dict()
    name = "embeddings.word_embeddings.weight"
    assert not torch.allclose(original[name], tuned[name])  # the transformer itself was trained
    names, scores = clf.predict_topk(texts[400:430], 5)
    assert names.shape == (30, 5) and np.isfinite(scores[:, 0]).all()
    emb = clf.transform(texts[400:410])
    assert emb.shape == (10, 32) and emb.dtype == np.float32

    joblib.dump(clf, tmp_path / "ft.joblib")
    loaded = joblib.load(tmp_path / "ft.joblib")  # the fine-tuned weights travel in the pickle
    n2, s2 = loaded.predict_topk(texts[400:430], 5)
    np.testing.assert_array_equal(names, n2)
    np.testing.assert_allclose(scores, s2, rtol=1e-5)
    with pytest.raises(ValueError, match="finetune_pretrained"):
        ELIASClassifier(pretrained_model=tiny_bert, finetune_pretrained="yes").fit(texts[:10], labels[:10])


CACHE_WRITER = """
import sys
import numpy as np
from skelias.pretrained import EmbeddingCache

directory, start = sys.argv[1], int(sys.argv[2])
cache = EmbeddingCache(directory, "model|16|mean", max_shards=2)
fake = lambda texts: np.array([[len(t), sum(map(ord, t)) % 97] for t in texts], dtype=np.float32)
for i in range(start, start + 200, 10):  # many small calls: many shards, merges racing the other writer
    cache.embed([f"text number {j}" for j in range(i, i + 10)], fake)
"""


def test_embedding_cache_keeps_every_entry_under_concurrent_writers(tmp_path):
    import subprocess
    import sys

    from skelias.pretrained import EmbeddingCache

    script = tmp_path / "writer.py"
    script.write_text(CACHE_WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(start)])
             for start in (0, 200)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    calls = []
    cache = EmbeddingCache(tmp_path / "cache", "model|16|mean")
    texts = [f"text number {j}" for j in range(400)]
    got = cache.embed(texts, lambda t: calls.append(t) or np.zeros((len(t), 2), np.float32))
    assert calls == []  # all 400 written by the two processes are there
    np.testing.assert_array_equal(got[:, 0], [len(t) for t in texts])
    again = cache.embed(texts[:5] + ["a new text"], lambda t: np.ones((len(t), 2), np.float32))
    np.testing.assert_array_equal(again[-1], [1, 1])
    np.testing.assert_array_equal(again[:5], got[:5])


def test_pooling_follows_the_sentence_transformers_config(tiny_bert, tmp_path, cooking):
    import json
    import shutil

    from skelias.pretrained import model_pooling

    assert model_pooling(tiny_bert) == "mean"  # no pooling config: mean
    cls_model = tmp_path / "cls-model"
    shutil.copytree(tiny_bert, cls_model)
    (cls_model / "1_Pooling").mkdir()
    (cls_model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                     "pooling_mode_mean_tokens": False}))
    assert model_pooling(cls_model) == "cls"
    texts, labels = cooking
    kw = dict(pretrained_max_length=16, embed_dim=16, n_epochs_stage1=1, n_epochs_stage2=0, shortlist_size=100,
              max_leaf_size=50, random_state=0)
    auto = ELIASClassifier(pretrained_model=str(cls_model), **kw).fit(texts[:200], labels[:200])
    assert auto.pretrained_pooling_ == "cls"
    forced = ELIASClassifier(pretrained_model=str(cls_model), pretrained_pooling="mean", **kw).fit(texts[:200],
                                                                                                   labels[:200])
    assert forced.pretrained_pooling_ == "mean"
    with pytest.raises(ValueError, match="pretrained_download=True allows a download"):
        PretrainedTextEmbedder("no-such-org/no-such-model")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_onnx_runtime_backend_gives_torch_embeddings(tiny_bert, cooking, pooling):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    texts, _ = cooking
    fast = PretrainedTextEmbedder(tiny_bert, pooling=pooling, backend="onnx", batch_size=16)
    ref = PretrainedTextEmbedder(tiny_bert, pooling=pooling, backend="torch", batch_size=16)
    assert fast.backend == "onnx" and ref.backend == "torch"
    np.testing.assert_allclose(fast.embed(texts[:50]), ref.embed(texts[:50]), atol=2e-5)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a session per thread count, the same embeddings
    try:
        np.testing.assert_allclose(fast.embed(texts[:5]), ref.embed(texts[:5]), atol=2e-5)
    finally:
        torch.set_num_threads(threads)
    again = pickle.loads(pickle.dumps(fast))
    np.testing.assert_allclose(again.embed(texts[:5]), ref.embed(texts[:5]), atol=2e-5)
    # idle ONNX Runtime workers sleep rather than spin beside torch's threads
    options = fast._session().get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match="backend must be one of"):
        PretrainedTextEmbedder(tiny_bert, backend="tensorrt")


def test_onnx_int8_backend_is_quantised_and_close_to_float32(tiny_bert, cooking):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    texts, _ = cooking
    fp32 = PretrainedTextEmbedder(tiny_bert, backend="onnx", batch_size=16)
    int8 = PretrainedTextEmbedder(tiny_bert, backend="onnx-int8", batch_size=16)
    assert int8.backend == "onnx-int8" and len(int8._onnx) < 0.5 * len(fp32._onnx)  # int8 weights stored
    a, b = fp32.embed(texts[:100]), int8.embed(texts[:100])
    cos = (a * b).sum(1)
    assert cos.min() > 0.97, cos.min()
    assert np.abs(a - b).max() > 1e-4  # quantised, not the float32 model again
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    again = pickle.loads(pickle.dumps(int8))
    np.testing.assert_allclose(again.embed(texts[:16]), int8.embed(texts[:16]), atol=1e-6)  # the same batches
    # activations are quantised per batch: a text's embedding moves slightly with its batch-mates
    np.testing.assert_allclose(again.embed(texts[:5]), b[:5], atol=2e-3)


def test_hybrid_int8_embeddings_are_cached_apart_from_float32(tiny_bert, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from skelias.pretrained import PretrainedTextEmbedder

    texts, labels = load_cooking_stackexchange("train")
    seen = []
    orig = PretrainedTextEmbedder.embed
    monkeypatch.setattr(PretrainedTextEmbedder, "embed", lambda self, t: seen.append(self.backend) or orig(self, t))
    params = dict(pretrained_model=tiny_bert, pretrained_max_length=16, embed_dim=16, n_epochs_stage1=1,
                  n_epochs_stage2=0, max_leaf_size=50, memory=str(tmp_path), random_state=0)
    ELIASClassifier(**params).fit(texts[:200], labels[:200])
    q = ELIASClassifier(pretrained_backend="onnx-int8", **params).fit(texts[:200], labels[:200])
    assert "onnx-int8" in seen  # the float32 entries were not reused
    uncached = ELIASClassifier(pretrained_backend="onnx-int8", **{**params, "memory": None}).fit(texts[:200],
                                                                                                 labels[:200])
    np.testing.assert_array_equal(q.predict_topk(texts[:20], 3)[0], uncached.predict_topk(texts[:20], 3)[0])


def test_auto_backend_is_int8_where_onnx_runtime_is_and_predictions_follow_the_fit(tiny_bert, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from skelias import pretrained

    texts, labels = load_cooking_stackexchange("train")
    params = dict(pretrained_model=tiny_bert, pretrained_max_length=16, embed_dim=16, n_epochs_stage1=1,
                  n_epochs_stage2=0, max_leaf_size=50, random_state=0)
    auto = ELIASClassifier(**params).fit(texts[:200], labels[:200])
    named = ELIASClassifier(pretrained_backend="onnx-int8", **params).fit(texts[:200], labels[:200])
    assert auto.pretrained_backend_ == named.pretrained_backend_ == "onnx-int8"
    ref_idx, ref_scores = auto.predict_topk(texts[:20], 3)
    np.testing.assert_array_equal(ref_idx, named.predict_topk(texts[:20], 3)[0])
    assert ELIASClassifier(pretrained_backend="onnx", **params).fit(texts[:50], labels[:50]).pretrained_backend_ == "onnx"

    # loaded where ONNX Runtime is missing: float32 embeddings, with a warning, nearly the same scores
    monkeypatch.setattr(pretrained, "onnx_runtime_available", lambda: False)
    moved = pickle.loads(pickle.dumps(auto))
    with pytest.warns(UserWarning, match="fitted on int8 embeddings"):
        _, scores = moved.predict_topk(texts[:20], 3)
    assert moved._embedder.backend in ("onnx", "torch")  # float32
    np.testing.assert_allclose(scores, ref_scores, atol=0.05)
    fitted_there = ELIASClassifier(**params).fit(texts[:50], labels[:50])
    assert fitted_there.pretrained_backend_ == "torch"


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_distilled_token_vectors_are_the_transformers_one_token_embeddings(tiny_bert, pooling):
    from skelias.pretrained import distill_token_table, load_tokenizer

    table = distill_token_table(tiny_bert, pooling=pooling, batch_size=100)
    tok = load_tokenizer(tiny_bert)
    assert table.shape == (len(tok), 32) and table.dtype == np.float32
    words = [w for w in ("egg", "bread", "pasta", "sauce") if len(tok(w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= 2
    ref = PretrainedTextEmbedder(tiny_bert, pooling=pooling, backend="torch").embed(words)  # "[CLS] w [SEP]"
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in words]
    np.testing.assert_allclose(table[ids], ref, atol=1e-5)


def test_static_embeddings_are_the_normalised_idf_weighted_token_sums(tiny_bert, cooking):
    from skelias.pretrained import StaticTextEmbedder, load_tokenizer, token_idf

    texts = cooking[0][:50]
    tok = load_tokenizer(tiny_bert)
    ids = [tok(t, add_special_tokens=False, truncation=True, max_length=8)["input_ids"] for t in texts]
    idf = token_idf(tok, texts, max_length=8)
    n = len(texts)
    for t in {i for row in ids for i in row}:  # brute force: documents containing each token
        df = sum(t in row for row in ids)
        assert idf[t] == pytest.approx(np.log((1 + n) / (1 + df)) + 1, rel=1e-6)
    assert idf[0] == pytest.approx(np.log(1 + n) + 1)  # [PAD] never occurs: the largest weight
    table = np.random.RandomState(0).randn(len(tok), 6).astype(np.float32)
    E = StaticTextEmbedder(table, tok, max_length=8).embed(texts + [""])
    for row, e in zip(ids, E, strict=False):
        s = table[row].sum(axis=0)
        np.testing.assert_allclose(e, s / np.linalg.norm(s), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(E[-1], 0.0)  # no token: a zero embedding, not NaN
    with pytest.raises(ValueError, match="one row for each"):
        StaticTextEmbedder(table[:10], tok)


def test_fitted_token_table_approaches_its_targets(tiny_bert, cooking):
    from skelias.pretrained import StaticTextEmbedder, fit_token_table, load_tokenizer

    texts = cooking[0][:200]
    tok = load_tokenizer(tiny_bert)
    rs = np.random.RandomState(0)
    truth = rs.randn(len(tok), 8).astype(np.float32)
    targets = StaticTextEmbedder(truth, tok, max_length=16).embed(texts)
    start = (truth + 2.0 * rs.randn(*truth.shape)).astype(np.float32)
    cos = lambda table: float((StaticTextEmbedder(table, tok, max_length=16).embed(texts) * targets).sum(1).mean())
    fitted = fit_token_table(start, tok, texts, targets, max_length=16, n_steps=200, lr=0.05, validation_fraction=0)
    assert cos(start) < 0.8 and cos(fitted) > 0.98
    token_sets = [set(tok(t, add_special_tokens=False, truncation=True, max_length=16)["input_ids"]) for t in texts]
    used = np.zeros(len(tok), bool)
    used[list(set().union(*token_sets))] = True
    np.testing.assert_array_equal(fitted[~used], start[~used])  # tokens the texts do not contain keep their rows
    assert not np.allclose(fitted[used], start[used])
    # every 5th text held out: its tokens that no other text has keep their rows; it scores at least as well
    held = np.arange(len(texts)) % 5 == 0
    early = fit_token_table(start, tok, texts, targets, max_length=16, n_steps=200, lr=0.05, validation_fraction=0.2)
    only_held = set().union(*(token_sets[i] for i in np.flatnonzero(held))) - set().union(
        *(token_sets[i] for i in np.flatnonzero(~held)))
    assert only_held
    np.testing.assert_array_equal(early[list(only_held)], start[list(only_held)])
    held_cos = lambda table: float((StaticTextEmbedder(table, tok, max_length=16).embed(
        [texts[i] for i in np.flatnonzero(held)]) * targets[held]).sum(1).mean())
    assert held_cos(early) > held_cos(start)


def test_hybrid_elias_with_the_static_student(tiny_bert, tmp_path, cooking, monkeypatch):
    import skelias
    from skelias.pretrained import StaticTextEmbedder, load_tokenizer

    texts, labels = cooking
    params = dict(pretrained_model=tiny_bert, pretrained_backend="static", pretrained_max_length=16, embed_dim=32,
                  n_epochs_stage1=1, n_epochs_stage2=1, shortlist_size=100, max_leaf_size=50, random_state=0)
    clf = ELIASClassifier(**params, pretrained_static_texts=300, memory=str(tmp_path / "cache")).fit(texts[:600],
                                                                                                     labels[:600])
    distilled_only = ELIASClassifier(**params, pretrained_static_texts=0).fit(texts[:600], labels[:600])
    table = clf.pretrained_static_table_
    assert table.shape[1] == 32 and not clf.finetuned_pretrained_
    assert not np.allclose(table, distilled_only.pretrained_static_table_)  # fitted to the transformer's embeddings
    # the embeddings the network sees are the static student's; predicting runs no transformer
    calls = []
    monkeypatch.setattr(PretrainedTextEmbedder, "embed", lambda self, t: calls.append(len(t)))
    ref = StaticTextEmbedder(table, load_tokenizer(tiny_bert), max_length=16).embed(texts[600:610])
    np.testing.assert_allclose(clf._embed(texts[600:610]), ref, rtol=1e-6)
    names, scores = clf.predict_topk(texts[600:640], 5)
    loaded = skelias.load(skelias.save(clf, tmp_path / "model"))
    n2, s2 = loaded.predict_topk(texts[600:640], 5)
    assert calls == []
    np.testing.assert_array_equal(names, n2)
    np.testing.assert_allclose(scores, s2, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot be combined"):
        ELIASClassifier(pretrained_model=tiny_bert, pretrained_backend="static",
                        finetune_pretrained=True).fit(texts[:50], labels[:50])
    for params in ({"encoder": "transformer", "pretrained_model": tiny_bert}, {}):
        with pytest.raises(ValueError, match="static student: it needs"):
            ELIASClassifier(pretrained_backend="static", **params).fit(texts[:50], labels[:50])


def test_tokenize_equals_the_plain_call_on_whole_texts(tiny_bert, cooking):
    from skelias.pretrained import load_tokenizer, tokenize

    texts, _ = cooking
    tok = load_tokenizer(tiny_bert)
    long = " ".join(texts[:40])  # hundreds of words: tokenised from its leading words
    few_tokens = "x" * 300 + " " + "y" * 300 + " bread dough"  # long, but its leading words hold one [UNK] each
    no_space = "z" * 1000
    batch = [texts[0], long, few_tokens, no_space, long[:130], long[:129] + " flour"]
    for max_length in (8, 16, 64):
        plain = tok(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        fast = tokenize(tok, batch, max_length)
        assert set(fast) == set(plain)
        for key in plain:
            np.testing.assert_array_equal(fast[key], plain[key])
    tok.truncation_side = "left"  # keeps the last tokens: the whole texts are read
    plain = tok(batch, padding=True, truncation=True, max_length=16, return_tensors="np")
    np.testing.assert_array_equal(tokenize(tok, batch, 16)["input_ids"], plain["input_ids"])
