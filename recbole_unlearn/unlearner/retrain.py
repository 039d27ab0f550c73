"""Retrain: the gold standard of exact unlearning — train from scratch on D_r.

Same config, epoch cap and early stopping as the original model.  Run with another seed it
gives the ``Retrain*`` row, the natural-variation yardstick (see the README's Results section).
"""
from __future__ import annotations

from dataclasses import dataclass

from recbole.utils import init_seed

from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner.base import Params, Unlearner


@dataclass(frozen=True)
class RetrainParams(Params):
    """``retrain_seed``: seed of the fresh model and its loader (None: the run's ``seed``)."""

    retrain_seed: int | None = None


@register_unlearner
class Retrain(Unlearner):
    """Train a fresh model of the same class on D_r."""

    params_class = RetrainParams
    accepts_ensemble = True  # it trains a fresh model of the run's model class

    def erase(self, task, remaining) -> None:
        seed = self.params.retrain_seed if self.params.retrain_seed is not None else self.config["seed"]
        init_seed(seed, self.config["reproducibility"])
        self.model = self.config.model_class(self.config, remaining).to(self.device)
        self.reset_optimizer()
        self.fit_on(remaining, task.valid)
