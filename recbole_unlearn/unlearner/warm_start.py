"""WarmStart: fine-tune Θ_a on D_r with the model's own optimizer and early stopping.

The simplest approximate baseline of the unlearning papers (e.g. the "fine-tune" rows of
Liu et al., RecSys 2022): the model keeps what it learned and only continues on D_r.
"""
from __future__ import annotations

from dataclasses import dataclass

from recbole_unlearn.registry import register_unlearner
from recbole_unlearn.unlearner.base import Params, Unlearner


@dataclass(frozen=True)
class WarmStartParams(Params):
    """``warm_epochs``: epoch cap of the fine-tune (never above the run's ``epochs``);
    ``warm_learning_rate``: None keeps the model's ``learning_rate``."""

    warm_epochs: int = 50
    warm_learning_rate: float | None = None


@register_unlearner
class WarmStart(Unlearner):
    """Continue training Θ_a on D_r until validation stops improving."""

    params_class = WarmStartParams

    def erase(self, task, remaining) -> None:
        if self.params.warm_learning_rate is not None:
            self.learning_rate = float(self.params.warm_learning_rate)
        self.reset_optimizer()
        self.fit_on(remaining, task.valid, epochs=min(self.params.warm_epochs, int(self.config["epochs"])))
