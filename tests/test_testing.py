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


def test_a_users_own_unlearner_and_its_keys_are_accepted():
    """A method registered outside the package is found by name and its keys are known keys."""
    from dataclasses import dataclass

    from recbole_unlearn.config import Config
    from recbole_unlearn.registry import _REGISTRY, register_unlearner
    from recbole_unlearn.unlearner.base import Params
    from recbole_unlearn.unlearner.warm_start import WarmStart

    @dataclass(frozen=True)
    class HalfParams(Params):
        half_epochs: int = 2

    @register_unlearner
    class HalfWarmStart(WarmStart):
        params_class = HalfParams

    try:
        exp = tiny_experiment("ENMF", forget="private")
        config = Config("ENMF", "tiny", config_dict={"data_path": exp.config["data_path"], "unlearner": "halfwarmstart",
                                                     "half_epochs": 3})
        assert config["unlearner"] == "HalfWarmStart" and config["half_epochs"] == 3
    finally:
        _REGISTRY.pop("halfwarmstart")
