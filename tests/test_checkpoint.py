"""Checkpoint and resume (skelias._checkpoint): a fit killed at any epoch ends as an uninterrupted one."""

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from skelias import ELIASClassifier

FIT_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from skelias import ELIASClassifier, _checkpoint
    from skelias.datasets import load_cooking_stackexchange

    checkpoint_dir, out, kill_after = sys.argv[1] or None, sys.argv[2], int(sys.argv[3])
    if kill_after:  # SIGKILL right after the kill_after-th epoch checkpoint is on disk
        real, written = _checkpoint.Checkpointer.save, []

        def save(self, state, name=_checkpoint.Checkpointer.FILE):
            real(self, state, name)
            if name == _checkpoint.Checkpointer.FILE:
                written.append(name)
                if len(written) == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)

        _checkpoint.Checkpointer.save = save
    from skelias._training import StageTrainer

    epochs_run, run_epoch = [], StageTrainer.run_epoch

    def counted(self, X, Y, epoch):
        epochs_run.append(epoch)
        return run_epoch(self, X, Y, epoch)

    StageTrainer.run_epoch = counted
    texts, labels = load_cooking_stackexchange("train")
    clf = ELIASClassifier(embed_dim=32, n_epochs_stage1=3, n_epochs_stage2=2, batch_size=128, shortlist_size=200,
                          max_leaf_size=50, validation_size=100, random_state=0, checkpoint_dir=checkpoint_dir)
    clf.fit(texts[:800], labels[:800])
    names, scores = clf.predict_topk(texts[800:900], 10)
    np.savez(out, labels=names.astype(str), scores=scores, stages=[h["stage"] for h in clf.history_],
             epochs_run=len(epochs_run))
""")


def _run(script, checkpoint_dir, out, kill_after=0):
    return subprocess.run([sys.executable, str(script), str(checkpoint_dir or ""), str(out), str(kill_after)],
                          check=False, timeout=600, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [2, 4], ids=["killed in stage 1", "killed in stage 2"])
def test_a_fit_killed_after_an_epoch_resumes_to_the_uninterrupted_model(kill_after, tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(FIT_SCRIPT)
    ref = _run(script, None, tmp_path / "ref.npz")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _run(script, tmp_path / "ckpt", tmp_path / "unused.npz", kill_after)
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "unused.npz").exists()
    resumed = _run(script, tmp_path / "ckpt", tmp_path / "resumed.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "resumed.npz")
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["scores"], b["scores"])
    np.testing.assert_array_equal(a["stages"], b["stages"])  # the history survives the kill too
    assert int(a["epochs_run"]) == 5 and int(b["epochs_run"]) == 5 - kill_after  # it resumed, not restarted


def test_a_checkpoint_of_another_fit_is_refused_and_a_finished_one_is_reused(cooking, tmp_path):
    texts, labels = cooking
    kw = dict(embed_dim=16, n_epochs_stage1=1, n_epochs_stage2=1, batch_size=128, shortlist_size=100,
              max_leaf_size=50, random_state=0, checkpoint_dir=tmp_path)
    first = ELIASClassifier(**kw).fit(texts[:300], labels[:300])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "stage1.pt"]
    again = ELIASClassifier(**kw).fit(texts[:300], labels[:300])  # resumes at the end: the same model
    np.testing.assert_array_equal(again.predict_topk(texts[300:340], 5)[1], first.predict_topk(texts[300:340], 5)[1])
    with pytest.raises(ValueError, match="checkpoint of a different fit"):
        ELIASClassifier(**{**kw, "lr": 0.02}).fit(texts[:300], labels[:300])
    with pytest.raises(ValueError, match="checkpoint of a different fit"):
        ELIASClassifier(**kw).fit(texts[:301], labels[:301])
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable skelias checkpoint"):
        ELIASClassifier(**kw).fit(texts[:300], labels[:300])
