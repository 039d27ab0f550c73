"""The unlearner contract of this repository's own test classes: the public one
(:mod:`recbole_unlearn.testing`), run on the session's tiny dataset so that its experiments are
shared with every other test.  ``tests/test_registry.py`` fails if a registered unlearner has no
such class."""
from __future__ import annotations

from conftest import tiny_experiment
from recbole_unlearn.testing import UnlearnerContract as PublicContract
from recbole_unlearn.testing import forgotten_probs, forgotten_rank

__all__ = ["UnlearnerContract", "forgotten_probs", "forgotten_rank"]


class UnlearnerContract(PublicContract):
    def experiment(self, model_name: str, forget: str = "noise"):
        return tiny_experiment(model_name, forget=forget, **self.config)
