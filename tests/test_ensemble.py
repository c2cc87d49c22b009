"""TopKEnsemble (skelias.ensemble): the members' scores averaged over their top candidates."""

import numpy as np

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
