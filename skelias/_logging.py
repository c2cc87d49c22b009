"""Progress messages: every skelias message goes through the ``skelias`` logger.

With ``verbose > 0`` a fit shows them on standard error — one line per epoch, per clustering, per re-ranker —
unless the application has configured logging itself, in which case its handlers receive them.
"""

from __future__ import annotations

import contextlib
import logging

__all__ = ["logger", "verbose_logging"]

logger = logging.getLogger("skelias")


@contextlib.contextmanager
def verbose_logging(verbose):
    """While a fit with ``verbose > 0`` runs, INFO messages of the ``skelias`` logger are shown."""
    if not verbose:
        yield
        return
    handler = None
    if not logger.handlers and not logging.getLogger().handlers:  # nobody listens: print to stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[skelias] %(message)s"))
        logger.addHandler(handler)
    level = logger.level
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)
        if handler is not None:
            logger.removeHandler(handler)
