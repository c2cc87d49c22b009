"""TopKEnsemble (skelias.ensemble): the members' scores averaged over their top candidates."""

import numpy as np
import pytest

from skelias import KNNLabelClassifier, TopKEnsemble


def test_ensemble_averages_members_scores(cooking):
    texts, labels = cooking
    ens = TopKEnsemble(KNNLabelClassifier(), n_estimators=2, n_candidates=10, random_state=0)
    ens.fit(texts[:600], labels[:600])
    assert len(ens.estimators_) == 2
    q = texts[600:620]
    dense = np.zeros((20, len(ens.classes_)))
    for m, remap in zip(ens.estimators_, ens._maps):
        names, s = m.predict_topk(q, 10)
        i = m.label_indexer_.indices_of(names)
        for r in range(20):
            ok = i[r] >= 0
            dense[r, remap[i[r][ok]]] += s[r][ok] / 2
    _idx, scores = ens._raw_topk(q, 5)
    np.testing.assert_allclose(scores, -np.sort(-dense, axis=1)[:, :5], rtol=1e-5)


def test_sklearn_estimator_checks(estimator_checks):
    estimator_checks(TopKEnsemble(KNNLabelClassifier(n_neighbors=3), n_estimators=2, n_candidates=5))


def test_heterogeneous_members_and_frozen_members(cooking):
    from sklearn.frozen import FrozenEstimator

    from skelias import KNNLabelClassifier, TopKEnsemble, XRLinearClassifier

    texts, labels = cooking
    knn = KNNLabelClassifier(n_neighbors=10).fit(texts[:900], labels[:900])
    ens = TopKEnsemble([XRLinearClassifier(max_leaf_size=30), FrozenEstimator(knn)], n_candidates=20,
                       random_state=0).fit(texts[:900], labels[:900])
    assert len(ens.estimators_) == 2 and ens.estimators_[1].estimator is knn  # the frozen member is used as is
    names, _ = ens.predict_topk(texts[900:1000], 5)
    assert np.mean([n[0] in set(y) for n, y in zip(names, labels[900:1000], strict=True)]) > 0.3
    with pytest.raises(ValueError, match="at least one estimator"):
        TopKEnsemble([]).fit(texts[:100], labels[:100])
