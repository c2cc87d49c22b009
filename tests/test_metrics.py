import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from skelias.metrics import (
    inverse_propensity,
    make_topk_scorer,
    ndcg_at_k,
    precision_at_k,
    psndcg_at_k,
    psprecision_at_k,
    recall_at_k,
    top_k,
    xmc_metrics,
)

# ------------------------------------------------------------------ hand-computed example
Y = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]))
S = np.array([[0.9, 0.8, 0.1, 0.0], [0.3, 0.2, 0.9, 0.1], [0.5, 0.4, 0.3, 0.2]])
IP = np.array([1.0, 2.0, 3.0, 4.0])
# rankings: row0 -> 0,1,2,3 (true {0,2}); row1 -> 2,0,1,3 (true {1}); row2 -> no true label


def test_hand_precision_recall():
    assert precision_at_k(Y, S, k=1) == pytest.approx(1 / 3, abs=1e-6)
    assert precision_at_k(Y, S, k=3) == pytest.approx((2 / 3 + 1 / 3 + 0) / 3, abs=1e-6)
    # recall: the empty row is excluded from the mean
    assert recall_at_k(Y, S, k=1) == pytest.approx((1 / 2 + 0) / 2, abs=1e-6)
    assert recall_at_k(Y, S, k=3) == pytest.approx(1.0, abs=1e-6)


def test_hand_ndcg():
    row0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    row1 = (1 / math.log2(4)) / 1.0
    assert ndcg_at_k(Y, S, k=3) == pytest.approx((row0 + row1 + 0) / 3, abs=1e-6)
    assert ndcg_at_k(Y, S, k=1) == pytest.approx(1 / 3, abs=1e-6)


def test_hand_propensity_scored():
    # PSP@1: hits ip = 1 (row0); best: row0 max ip of {0,2} = 3, row1 ip 2 -> 1/5
    assert psprecision_at_k(Y, S, k=1, inv_prop=IP) == pytest.approx(0.2, abs=1e-6)
    # PSP@3: hits 1 + 3 (row0) + 2 (row1) = 6; best 3 + 1 + 2 = 6
    assert psprecision_at_k(Y, S, k=3, inv_prop=IP) == pytest.approx(1.0, abs=1e-6)
    assert psprecision_at_k(Y, S, k=1, inv_prop=IP, normalize=False) == pytest.approx(1 / 3, abs=1e-6)
    num = 1 * 1 + 3 * 0.5 + 2 * 0.5
    den = 3 * 1 + 1 / math.log2(3) + 2
    assert psndcg_at_k(Y, S, k=3, inv_prop=IP) == pytest.approx(num / den, abs=1e-6)


def test_hand_inverse_propensity():
    Yt = sp.csr_matrix(np.array([[1, 0], [1, 0], [1, 1], [0, 0]]))
    N, A, B = 4, 0.55, 1.5
    C = (math.log(N) - 1) * (B + 1) ** A
    expected = [1 + C * (3 + B) ** -A, 1 + C * (1 + B) ** -A]
    np.testing.assert_allclose(inverse_propensity(Yt), expected, rtol=1e-12)
    assert inverse_propensity(Yt, A=0.6, B=2.6)[1] == pytest.approx(
        1 + (math.log(4) - 1) * 3.6**0.6 * 3.6**-0.6, rel=1e-12
    )


def test_xmc_metrics_matches_single_functions():
    m = xmc_metrics(Y, S, ks=(1, 3), recall_ks=(2,), inv_prop=IP)
    assert m["P@3"] == pytest.approx(precision_at_k(Y, S, k=3))
    assert m["nDCG@3"] == pytest.approx(ndcg_at_k(Y, S, k=3))
    assert m["PSP@1"] == pytest.approx(psprecision_at_k(Y, S, k=1, inv_prop=IP))
    assert m["PSnDCG@3"] == pytest.approx(psndcg_at_k(Y, S, k=3, inv_prop=IP))
    assert m["R@2"] == pytest.approx(recall_at_k(Y, S, k=2))
    # k larger than L is skipped for score matrices
    assert "R@100" not in xmc_metrics(Y, S)


def test_input_forms_agree():
    idx, sc = top_k(S, 4)
    Ssp = sp.csr_matrix(S)
    for k in (1, 2, 3, 4):
        ref = precision_at_k(Y, S, k=k)
        assert precision_at_k(Y, Ssp, k=k) == pytest.approx(ref)
        assert precision_at_k(Y, (idx, sc), k=k) == pytest.approx(ref)
        assert ndcg_at_k(Y.toarray(), (idx, sc), k=k) == pytest.approx(ndcg_at_k(Y, S, k=k))
    # unsorted top-k arrays are ranked by their scores
    perm = np.array([3, 1, 0, 2])
    assert ndcg_at_k(Y, (idx[:, perm], sc[:, perm]), k=3) == pytest.approx(ndcg_at_k(Y, S, k=3))


def test_top_k_sparse_padding_and_ties():
    M = sp.csr_matrix(np.array([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 2.0]]))
    idx, sc = top_k(M, 3)
    np.testing.assert_array_equal(idx, [[1, 2, -1], [-1, -1, -1], [3, 0, -1]])
    assert np.isneginf(sc[1]).all() and sc[2, 1] == -1.0
    idx, _ = top_k(np.array([[1.0, 3.0, 3.0, 2.0]]), 2)
    np.testing.assert_array_equal(idx, [[1, 2]])


def test_no_nan_or_warning_for_empty_rows():
    Ye = sp.csr_matrix((3, 4))
    with np.errstate(all="raise"):
        assert recall_at_k(Ye, S, k=2) == 0.0
        assert ndcg_at_k(Ye, S, k=2) == 0.0
        assert psprecision_at_k(Ye, S, k=2) == 0.0
        assert psndcg_at_k(Ye, S, k=2) == 0.0


# ------------------------------------------------------------------ brute force reference
def _ranking(row_scores, sparse_mask):
    cand = [j for j in range(len(row_scores)) if sparse_mask is None or sparse_mask[j]]
    return sorted(cand, key=lambda j: (-row_scores[j], j))


def _reference(Yd, Sd, k, ip, sparse_mask=None):
    n = Yd.shape[0]
    P, R, N, num_psp, den_psp, num_psn, den_psn = [], [], [], 0.0, 0.0, 0.0, 0.0
    for i in range(n):
        rank = _ranking(Sd[i], None if sparse_mask is None else sparse_mask[i])[:k]
        true = {j for j in range(Yd.shape[1]) if Yd[i, j]}
        hits = [1 if j in true else 0 for j in rank]
        P.append(sum(hits) / k)
        if true:
            R.append(sum(hits) / len(true))
        dcg = sum(h / math.log2(p + 2) for p, h in enumerate(hits))
        idcg = sum(1 / math.log2(p + 2) for p in range(min(k, len(true))))
        N.append(dcg / idcg if idcg else 0.0)
        num_psp += sum(ip[j] for j in rank if j in true)
        num_psn += sum(ip[j] / math.log2(p + 2) for p, j in enumerate(rank) if j in true)
        best = sorted((ip[j] for j in true), reverse=True)[:k]
        den_psp += sum(best)
        den_psn += sum(v / math.log2(p + 2) for p, v in enumerate(best))
    return {
        "P": sum(P) / n,
        "R": sum(R) / len(R) if R else 0.0,
        "N": sum(N) / n,
        "PSP": num_psp / den_psp if den_psp else 0.0,
        "PSN": num_psn / den_psn if den_psn else 0.0,
    }


@st.composite
def problems(draw):
    n = draw(st.integers(1, 7))
    L = draw(st.integers(1, 9))
    Yd = np.array(draw(st.lists(st.lists(st.booleans(), min_size=L, max_size=L), min_size=n, max_size=n)))
    # few distinct values so ties happen often
    Sd = np.array(
        draw(st.lists(st.lists(st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0, 2.0]), min_size=L, max_size=L), min_size=n, max_size=n))
    )
    k = draw(st.integers(1, L))
    sparse = draw(st.booleans())
    return Yd, Sd, k, sparse


@settings(max_examples=300, deadline=None)
@given(problems())
def test_metrics_match_brute_force(problem):
    Yd, Sd, k, sparse = problem
    ip = np.random.RandomState(Yd.size + k).uniform(1.0, 5.0, Yd.shape[1])
    if sparse:
        mask = Sd != 0
        pred = sp.csr_matrix(Sd)
    else:
        mask, pred = None, Sd
    ref = _reference(Yd, Sd, k, ip, mask)
    Ysp = sp.csr_matrix(Yd.astype(float))
    assert precision_at_k(Ysp, pred, k=k) == pytest.approx(ref["P"], abs=1e-9)
    assert recall_at_k(Ysp, pred, k=k) == pytest.approx(ref["R"], abs=1e-9)
    assert ndcg_at_k(Ysp, pred, k=k) == pytest.approx(ref["N"], abs=1e-9)
    assert psprecision_at_k(Ysp, pred, k=k, inv_prop=ip) == pytest.approx(ref["PSP"], abs=1e-9)
    assert psndcg_at_k(Ysp, pred, k=k, inv_prop=ip) == pytest.approx(ref["PSN"], abs=1e-9)
    # the same through top-k arrays
    idx, sc = top_k(pred, k)
    assert precision_at_k(Ysp, (idx, sc), k=k) == pytest.approx(ref["P"], abs=1e-9)
    assert ndcg_at_k(Ysp, (idx, sc), k=k) == pytest.approx(ref["N"], abs=1e-9)


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"k": 0}, ValueError, "positive integer"),
        ({"k": -2}, ValueError, "positive integer"),
        ({"k": 5}, ValueError, "larger than the number of labels"),
        ({"k": 1.5}, TypeError, "positive integer"),
        ({"k": True}, TypeError, "positive integer"),
    ],
)
def test_bad_k(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        precision_at_k(Y, S, **kwargs)


def test_bad_scores_and_shapes():
    bad = S.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        precision_at_k(Y, bad, k=1)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"\+inf"):
        ndcg_at_k(Y, sp.csr_matrix(bad), k=1)
    with pytest.raises(ValueError, match="shape"):
        precision_at_k(Y, S[:2], k=1)
    with pytest.raises(ValueError, match="label columns"):
        precision_at_k(Y, S[:, :3], k=1)
    with pytest.raises(ValueError, match="0 rows"):
        precision_at_k(sp.csr_matrix((0, 4)), np.zeros((0, 4)), k=1)
    with pytest.raises(ValueError, match="negative"):
        precision_at_k(-Y, S, k=1)
    idx, sc = top_k(S, 2)
    with pytest.raises(ValueError, match="cannot evaluate at k=3"):
        precision_at_k(Y, (idx, sc), k=3)
    with pytest.raises(ValueError, match=r"\[-1, 4\)"):
        precision_at_k(Y, (idx + 5, sc), k=1)
    with pytest.raises(ValueError, match="rows"):
        precision_at_k(Y, (idx[:2], sc[:2]), k=1)
    with pytest.raises(TypeError, match="score matrix"):
        precision_at_k(Y, [[0.1, 0.2, 0.3, 0.4]] * 3, k=1)
    with pytest.raises(ValueError, match="inv_prop must have shape"):
        psprecision_at_k(Y, S, k=1, inv_prop=np.ones(3))
    with pytest.raises(ValueError, match="metric must be one of"):
        make_topk_scorer("f1", 1)
