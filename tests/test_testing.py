"""The public contract runs on its own, as a user's test file would use it: its own tiny
dataset, no fixture of this repository."""
from __future__ import annotations

from recbole_unlearn.testing import UnlearnerContract as PublicContract
from recbole_unlearn.testing import tiny_experiment


class TestPublicContractOnWarmStart(PublicContract):
    unlearner = "WarmStart"
    models = ("ENMF",)
    config = {"warm_epochs": 20}

    def test_runs_on_its_own_dataset(self):
        exp = self.experiment("ENMF", forget="private")
        assert "recbole-unlearn-tiny-" in str(exp.config["data_path"])
        assert len(exp.request) > 0 and tiny_experiment("ENMF", forget="private", **self.config).original is not exp.original
