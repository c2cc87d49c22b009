"""The defaults that ``"auto"`` parameter values take from the size of the training data.

Every rule here has one threshold, :data:`SMALL_DATA_ROWS`: below it the training split is a large share of
the data, a second fit is cheap, and a model with as many parameters as ELIAS's fits the few rows of each
label too closely. The measurements behind each rule are in ``docs/design.md``.
"""

__all__ = ["SMALL_DATA_ROWS", "auto_dropout", "auto_lr", "auto_refit"]

#: training rows below which the data counts as small (``lr``, ``dropout`` and ``refit`` "auto")
SMALL_DATA_ROWS = 20_000


def auto_lr(n_samples):
    """``lr="auto"``'s learning rate for ``n_samples`` training rows: 0.003 below 20,000 rows, else 0.01.

    On small data the higher rate fits the few training rows of each tail label too closely, and
    the labels the index should still rank in the top 100 fall behind.

    Parameters
    ----------
    n_samples : int
        Training rows.

    Returns
    -------
    float

    Examples
    --------
    >>> from skelias._auto import auto_lr
    >>> auto_lr(4_880), auto_lr(36_000)
    (0.003, 0.01)
    """
    return 0.003 if int(n_samples) < SMALL_DATA_ROWS else 0.01


def auto_dropout(n_samples, encoder="tfidf"):
    """``dropout="auto"``'s rate for ``n_samples`` training rows: 0.5 below 20,000 rows, else 0.2.

    A TF-IDF embedding table of tens of thousands of features trained on a few thousand rows memorises
    them; stronger dropout on φ keeps the label classifiers general. The fine-tuned transformer
    (``encoder="transformer"``) keeps 0.2.

    Parameters
    ----------
    n_samples : int
        Training rows.
    encoder : str, default="tfidf"
        The ``encoder`` parameter.

    Returns
    -------
    float

    Examples
    --------
    >>> from skelias._auto import auto_dropout
    >>> auto_dropout(4_880), auto_dropout(36_000)
    (0.5, 0.2)
    """
    return 0.5 if int(n_samples) < SMALL_DATA_ROWS and encoder != "transformer" else 0.2


def auto_refit(n_samples):
    """``refit="auto"``'s choice for ``n_samples`` training rows: refit when there are fewer than 20,000.

    On small data the held-out split is a large share of what the base model could learn from
    (bibtex: a fifth of 4,880 rows), and a second fit costs little; on large data the split is a
    small share and a second fit of a large model is expensive.

    Parameters
    ----------
    n_samples : int
        Rows given to :meth:`ScoreCalibrator.fit`.

    Returns
    -------
    bool

    Examples
    --------
    >>> from skelias._auto import auto_refit
    >>> auto_refit(4_880), auto_refit(36_000)
    (True, False)
    """
    return int(n_samples) < SMALL_DATA_ROWS
