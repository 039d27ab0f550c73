"""RecBole 1.2.1 evaluator adapter: the ``RBO`` ranking metric (``rbo@k``).

RBO is Rank-Biased Overlap in its extrapolated form ``RBO_ext`` (Webber, Moffat, Zobel 2010,
"A similarity measure for indefinite rankings", ACM TOIS 28(4), eq. 30); see
:func:`recbole_unlearn.evaluator.metrics.rbo`.

How RecBole 1.2.1 finds metrics
-------------------------------
``recbole.evaluator.register`` scans the module ``recbole.evaluator.metrics`` ONCE, at import
time, and stores the result in four module-level objects: ``metrics_dict`` (name -> class),
``metric_information`` (name -> ``metric_need``), ``metric_types`` (name -> ``EvaluatorType``)
and the list ``smaller_metrics``.  ``Config`` (metric validation, ``eval_type``,
``valid_metric_bigger``), ``Register``/``Collector`` (what to collect) and ``Evaluator`` (which
class to instantiate) all read those same objects, having imported them by name.  So
:func:`register_recbole_metrics` adds entries to them IN PLACE (never rebinding a name), which
makes ``metrics: [Recall, RBO]`` work in a RecBole config.  It must run before ``Config`` is
built, because ``Config`` rejects unknown metric names.

Usage::

    from recbole_unlearn.evaluator import register_recbole_metrics, set_rbo_reference
    register_recbole_metrics()                    # idempotent
    config = Config(model=..., dataset=..., config_dict={"metrics": ["Recall", "RBO"],
                                                         "topk": [10], "rbo_p": 0.9})
    set_rbo_reference(reference_topk)             # [n_eval_users, >= max(topk)] item ids
    ...  # RecBole evaluation now also reports "rbo@10"

The reference hook
------------------
RecBole hands a metric only the collected ``DataStruct``; the metric has no access to a second
model.  ``RBO`` therefore compares ``rec.items`` -- the ``[n_users, max(topk)]`` item ids the
``Collector`` gathers with ``torch.topk`` (note: ``rec.topk`` holds 0/1 hit flags, not ids) --
row by row with a module-level reference set by :func:`set_rbo_reference`.  Row ``i`` of the
reference must belong to the ``i``-th user row the collector sees, i.e. the order of users in
the evaluation data loader (batches concatenated).  Obtain it as
``torch.topk(reference_full_scores, max(topk)).indices`` over the same user order (with the
same history masking), or as the ``rec.items`` entry of a ``DataStruct`` collected for the
reference model with the same loader.  RecBole evaluates the validation and the test loader
with the same metric objects, so set the matching reference before each evaluation.  The persistence ``p`` is read from the config key ``rbo_p``
(default 0.9).
"""
from __future__ import annotations

import torch
from recbole.evaluator import register as _recbole_register
from recbole.evaluator.base_metric import AbstractMetric
from recbole.utils import EvaluatorType

from recbole_unlearn.evaluator.metrics import mean_rbo

__all__ = ["RBO", "set_rbo_reference", "get_rbo_reference", "register_recbole_metrics"]

DEFAULT_RBO_P = 0.9

_rbo_reference: torch.Tensor | None = None


def set_rbo_reference(topk: torch.Tensor | None) -> None:
    """Set (or clear with ``None``) the reference top-k lists the ``RBO`` metric compares with.

    Args:
        topk: ``[n_users, k_ref]`` long tensor of item ids, best first, distinct per row, with
            ``k_ref >= max(config["topk"])``; row ``i`` corresponds to the ``i``-th user row
            collected by RecBole's ``Collector`` (evaluation loader order).
    """
    global _rbo_reference
    if topk is None:
        _rbo_reference = None
        return
    ref = torch.as_tensor(topk).detach().cpu().long()
    if ref.dim() != 2:
        raise ValueError(f"set_rbo_reference expects a [n_users, k] tensor, got shape {tuple(ref.shape)}")
    _rbo_reference = ref.clone()


def get_rbo_reference() -> torch.Tensor | None:
    """The current reference (``[n_users, k_ref]`` long tensor) or ``None`` if unset."""
    return _rbo_reference


class RBO(AbstractMetric):
    """``rbo@k``: mean RBO_ext between the model's top-k and the reference top-k per user.

    Higher means the evaluated model ranks like the reference (e.g. like the model retrained
    without the forgotten data).  Needs ``rec.items`` (``[n_users, max(topk)]`` item ids).
    """

    metric_type = EvaluatorType.RANKING
    metric_need = ["rec.items"]
    smaller = False

    def __init__(self, config) -> None:
        super().__init__(config)
        self.topk: list[int] = list(config["topk"])
        p = config["rbo_p"]
        self.p: float = DEFAULT_RBO_P if p is None else float(p)

    def calculate_metric(self, dataobject) -> dict[str, float]:
        """Return ``{"rbo@k": value}`` for every ``k`` in ``config["topk"]``.

        Raises:
            RuntimeError: if no reference was set with :func:`set_rbo_reference`.
            ValueError: if the reference's row count differs from ``rec.items`` or it is
                shallower than ``max(topk)``.
        """
        items = dataobject.get("rec.items").cpu().long()  # [n_users, max(topk)]
        ref = _rbo_reference
        if ref is None:
            raise RuntimeError(
                "metric 'RBO' needs a reference: call "
                "recbole_unlearn.evaluator.set_rbo_reference(topk) before evaluating"
            )
        if ref.shape[0] != items.shape[0]:
            raise ValueError(
                f"RBO reference has {ref.shape[0]} rows but RecBole collected {items.shape[0]} users"
            )
        if ref.shape[1] < max(self.topk):
            raise ValueError(
                f"RBO reference depth {ref.shape[1]} is below max(topk) = {max(self.topk)}"
            )
        return {
            f"rbo@{k}": round(mean_rbo(items[:, :k], ref[:, :k], p=self.p), self.decimal_place)
            for k in self.topk
        }


_OUR_METRICS: tuple[type[AbstractMetric], ...] = (RBO,)


def register_recbole_metrics() -> list[str]:
    """Make this package's metrics known to RecBole 1.2.1 (idempotent).

    Adds entries, in place, to ``recbole.evaluator.register.metrics_dict``,
    ``metric_information``, ``metric_types`` and (for smaller-is-better metrics)
    ``smaller_metrics``.  Call it before building a RecBole ``Config`` that lists them.

    Returns:
        The lower-case names registered (``["rbo"]``).

    Raises:
        RuntimeError: if a different class is already registered under one of the names.
    """
    names = []
    for cls in _OUR_METRICS:
        name = cls.__name__.lower()
        existing = _recbole_register.metrics_dict.get(name)
        if existing is not None and existing is not cls:
            raise RuntimeError(
                f"RecBole already has a metric named '{name}' ({existing.__module__}.{existing.__qualname__})"
            )
        _recbole_register.metrics_dict[name] = cls
        _recbole_register.metric_information[name] = cls.metric_need
        _recbole_register.metric_types[name] = cls.metric_type
        if cls.smaller and name not in _recbole_register.smaller_metrics:
            _recbole_register.smaller_metrics.append(name)
        names.append(name)
    return names
