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

from ._base import predict_topk
from ._validation import default_vectorizer
from .calibration import ScoreCalibrator
from .ensemble import TopKEnsemble
from .neighbors import KNNLabelClassifier
from .persistence import load, save
from .rerank import SparseReranker
from .xr_linear import XRLinearClassifier

__all__ = [
    "ELIASClassifier",
    "KNNLabelClassifier",
    "LabelIndexer",
    "LabelTree",
    "ScoreCalibrator",
    "SparseReranker",
    "TopKEnsemble",
    "XRLinearClassifier",
    "__version__",
    "balanced_kmeans",
    "check_label_matrix",
    "cluster_labels",
    "default_n_clusters",
    "default_vectorizer",
    "inverse_propensity",
    "load",
    "make_topk_scorer",
    "ndcg_at_k",
    "ndcg_at_k_scorer",
    "pifa",
    "precision_at_k",
    "precision_at_k_scorer",
    "predict_topk",
    "psndcg_at_k",
    "psprecision_at_k",
    "psprecision_at_k_scorer",
    "recall_at_k",
    "recall_at_k_scorer",
    "save",
    "top_k",
    "xmc_metrics",
]


def __getattr__(name):
    """``ELIASClassifier`` is imported on first use, so that ``skelias.metrics`` and friends load without torch."""
    if name == "ELIASClassifier":
        from .elias import ELIASClassifier

        globals()[name] = ELIASClassifier
        return ELIASClassifier
    raise AttributeError(f"module 'skelias' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
