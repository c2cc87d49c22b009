"""Beyond one process: ELIASClassifier under torchrun (gloo), the re-ranker on a Dask cluster."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "ddp_fit.py"


def _torchrun(out_dir, *args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(out_dir), *args]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, cwd=out_dir)


@pytest.mark.slow
def test_two_gloo_ranks_train_the_single_process_model(tmp_path):
    (tmp_path / "ddp").mkdir()
    (tmp_path / "single").mkdir()
    run = _torchrun(tmp_path / "ddp")
    assert run.returncode == 0, run.stderr[-3000:]
    single = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "single")], check=False, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    r0, r1 = (np.load(tmp_path / "ddp" / f"rank{r}.npz") for r in (0, 1))
    one = np.load(tmp_path / "single" / "rank0.npz")
    assert int(r0["world_size"]) == 2 and int(one["world_size"]) == 1
    for key in r0.files:  # every rank ends with the same model, bit for bit
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=key)
    # the same global batches: the single-process model up to float summation order
    for key in (k for k in r0.files if k.startswith("param:")):
        np.testing.assert_allclose(r0[key], one[key], atol=1e-5, err_msg=key)
    same = np.mean([set(a) == set(b) for a, b in zip(r0["idx"], one["idx"], strict=True)])
    assert same >= 0.99
    # row-sparse gradients travel as touched rows: less than dense all-reduces of the same tensors
    assert 0 < float(r0["bytes_per_step"]) < float(r0["dense_bytes_per_step"])


@pytest.mark.slow
def test_a_failing_rank_ends_the_job_with_its_error(tmp_path):
    run = _torchrun(tmp_path, "fail", timeout=240)
    assert run.returncode != 0
    assert "rank 1 failed on purpose" in run.stdout + run.stderr
    assert not (tmp_path / "rank0.npz").exists()


@pytest.mark.slow
def test_reranker_on_a_dask_cluster_equals_the_local_fit(elias_base, cooking):
    distributed = pytest.importorskip("distributed")
    import joblib
    from sklearn.frozen import FrozenEstimator

    from skelias import SparseReranker

    texts, labels = cooking
    base = FrozenEstimator(elias_base)
    local = SparseReranker(base, n_candidates=20, random_state=0, n_jobs=2).fit(texts[:1000], labels[:1000])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl, \
            distributed.Client(cl) as client:
        with distributed.get_task_stream(client) as stream, joblib.parallel_backend("dask"):
            remote = SparseReranker(base, n_candidates=20, random_state=0, n_jobs=2).fit(texts[:1000], labels[:1000])
        workers = {task["worker"] for task in stream.data}
    assert len(workers) == 2  # the label chunks ran on both workers
    assert (local.coef_ != remote.coef_).nnz == 0
    np.testing.assert_array_equal(local.intercept_, remote.intercept_)
