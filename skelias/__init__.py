"""skelias: extreme multi-label classification with a learned index (ELIAS, ELIAS++), scikit-learn style."""

from ._labels import LabelIndexer, check_label_matrix
from .cluster import LabelTree, balanced_kmeans, cluster_labels, default_n_clusters, pifa
from .metrics import (
    inverse_propensity,
    make_topk_scorer,
    ndcg_at_k,
    ndcg_at_k_scorer,
    precision_at_k,
    precision_at_k_scorer,
    psndcg_at_k,
    psprecision_at_k,
    psprecision_at_k_scorer,
    recall_at_k,
    recall_at_k_scorer,
    top_k,
    xmc_metrics,
)

__version__ = "0.1.0"

from .calibration import ScoreCalibrator  # noqa: E402
from .elias import ELIASClassifier  # noqa: E402
from .ensemble import TopKEnsemble  # noqa: E402
from .neighbors import KNNLabelClassifier  # noqa: E402  (a baseline)
from .rerank import SparseReranker  # noqa: E402

__all__ = [
    "ELIASClassifier", "SparseReranker", "ScoreCalibrator", "TopKEnsemble", "KNNLabelClassifier",
    "LabelIndexer", "check_label_matrix", "LabelTree", "balanced_kmeans", "cluster_labels", "default_n_clusters",
    "pifa", "inverse_propensity", "make_topk_scorer", "ndcg_at_k", "ndcg_at_k_scorer", "precision_at_k",
    "precision_at_k_scorer", "psndcg_at_k", "psprecision_at_k", "psprecision_at_k_scorer", "recall_at_k",
    "recall_at_k_scorer", "top_k", "xmc_metrics", "__version__",
]
