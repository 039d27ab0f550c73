"""Unlearning metrics and their RecBole evaluator adapter.

The pure functions live in :mod:`recbole_unlearn.evaluator.metrics` (numpy/torch only).  RBO is
Rank-Biased Overlap, extrapolated form, from Webber, Moffat, Zobel (2010), "A similarity
measure for indefinite rankings", ACM TOIS 28(4).

The RecBole adapter (:mod:`recbole_unlearn.evaluator.recbole_metrics`) is imported lazily by
:func:`register_recbole_metrics` and :func:`set_rbo_reference`, so importing this package does
not import RecBole.
"""
from __future__ import annotations

import torch

from recbole_unlearn.evaluator.metrics import (
    mean_rbo,
    membership_auc,
    rbo,
    repredict_score,
    topk_recall_ndcg,
)

__all__ = [
    "rbo",
    "mean_rbo",
    "repredict_score",
    "membership_auc",
    "topk_recall_ndcg",
    "register_recbole_metrics",
    "set_rbo_reference",
]


def register_recbole_metrics() -> list[str]:
    """Register this package's RecBole metrics (currently ``RBO`` -> ``rbo@k``); idempotent.

    Call before building a RecBole ``Config`` whose ``metrics`` lists them.  See
    :func:`recbole_unlearn.evaluator.recbole_metrics.register_recbole_metrics`.

    Returns:
        The lower-case metric names registered, e.g. ``["rbo"]``.
    """
    from recbole_unlearn.evaluator import recbole_metrics

    return recbole_metrics.register_recbole_metrics()


def set_rbo_reference(topk: torch.Tensor | None) -> None:
    """Set the ``[n_users, k]`` reference top-k item ids used by the RecBole ``RBO`` metric.

    See :func:`recbole_unlearn.evaluator.recbole_metrics.set_rbo_reference`.
    """
    from recbole_unlearn.evaluator import recbole_metrics

    recbole_metrics.set_rbo_reference(topk)
