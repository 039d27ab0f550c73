"""Retrain: the gold standard of exact unlearning — train from scratch on D_r.

Same config, epoch cap and early stopping as the original model.  ``retrain_seed`` seeds the
fresh model's initialisation (and, by default, its training); ``retrain_train_seed`` gives the
training process (batch order, negative samples, dropout) a seed of its own.  The ``Retrain*``
yardstick is the AltEraser paper's: "retrained using the same random initialization but a
different random seed for the training process" (Liu et al., RecSys 2022).
"""
from __future__ import annotations

from dataclasses import dataclass

from recbole.utils import init_seed

from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner.base import Params, Unlearner


@dataclass(frozen=True)
class RetrainParams(Params):
    """``retrain_seed``: seed of the fresh model's initialisation (None: the run's ``seed``);
    ``retrain_train_seed``: seed of its training process (None: the initialisation's seed, and
    the random state simply continues from the initialisation, as in RecBole's own run)."""

    retrain_seed: int | None = None
    retrain_train_seed: int | None = None


@register_unlearner
class Retrain(Unlearner):
    """Train a fresh model of the same class on D_r."""

    params_class = RetrainParams
    accepts_ensemble = True  # it trains a fresh model of the run's model class
    resets_deleted_users = False  # its fresh model's rows are its own initial values

    def erase(self, task, remaining) -> None:
        seed = self.params.retrain_seed if self.params.retrain_seed is not None else self.config["seed"]
        train_seed = self.params.retrain_train_seed
        init_seed(seed, self.config["reproducibility"])
        self.model = self.config.model_class(self.config, remaining).to(self.device)
        if train_seed is not None and train_seed != seed:
            init_seed(train_seed, self.config["reproducibility"])
        self.reset_optimizer()
        self.fit_on(remaining, task.valid, data_parallel=True)  # in a process group: RecBole's DDP loop
        self.info.update(init_seed=int(seed), train_seed=int(seed if train_seed is None else train_seed))
