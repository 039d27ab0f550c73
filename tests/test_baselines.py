"""Retrain and WarmStart: the contract, plus Retrain's defining property."""
from __future__ import annotations

import torch
from recbole.trainer import Trainer
from recbole.utils import init_seed

from conftest import make_config, tiny_experiment
from recbole_unlearn.data.remaining import train_loader
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner.retrain import Retrain
from unlearner_contract import UnlearnerContract, forgotten_probs


class TestRetrain(UnlearnerContract):
    unlearner = "Retrain"

    def test_equals_training_on_filtered_data(self, model_name, tmp_path):
        """Retrain == RecBole's stock Trainer fitted from scratch on D_r with the same seed."""
        exp = tiny_experiment(model_name, forget="private")
        ours = run_unlearner(exp, Retrain).model
        config = exp.config
        init_seed(config["seed"], config["reproducibility"])
        model = type(exp.original)(config, exp.remaining)
        trainer = Trainer(config, model)
        trainer.saved_model_file = str(tmp_path / "stock.pth")
        trainer.fit(train_loader(config, exp.remaining), exp.valid_r, verbose=False, saved=True)
        state = torch.load(trainer.saved_model_file, weights_only=False)["state_dict"]
        for k, v in ours.state_dict().items():
            assert torch.equal(v, state[k]), k

    def test_other_seed_gives_another_model(self):
        exp = tiny_experiment("ENMF", forget="private")
        a = run_unlearner(exp, Retrain).model
        b = run_unlearner(exp, Retrain, make_config("ENMF", forget="private", retrain_seed=7)).model
        assert not torch.equal(a.user_embedding.weight, b.user_embedding.weight)


class TestWarmStart(UnlearnerContract):
    unlearner = "WarmStart"
    config = {"warm_epochs": 20}

    def test_noise_repredict_drops_clearly(self):
        """On the noise scenario the injected pairs' re-predict score falls well below Θ_a's."""
        exp = tiny_experiment("ENMF", forget="noise", warm_epochs=20)
        before = forgotten_probs(exp.original, exp.request).mean().item()
        after = forgotten_probs(run_unlearner(exp, __import__("recbole_unlearn").get_unlearner("warmstart")).model,
                                exp.request).mean().item()
        assert after < 0.6 * before, (before, after)


def test_retrain_star_keeps_retrains_initialisation(monkeypatch):
    """Retrain* (the paper's yardstick) starts from Retrain's initial parameters and only its
    training process gets another seed; the optional new-initialisation row differs from both."""
    from recbole_unlearn.config import config_with
    from recbole_unlearn.quick_start import comparison_plan
    from recbole_unlearn.unlearner.base import BestStateTrainer

    exp = tiny_experiment("ENMF", forget="private")
    plan = comparison_plan(config_with(exp.config, compare="retrain", compare_new_init=True), Retrain)
    assert [p[0] for p in plan] == ["Retrain", "Retrain*", "Retrain (new init)"]
    trained = {name: run_unlearner(exp, cls, cfg) for name, cls, cfg in plan}
    seed = exp.config["seed"]
    assert trained["Retrain"].info["init_seed"] == trained["Retrain*"].info["init_seed"] == seed
    assert trained["Retrain*"].info["train_seed"] != seed
    assert not torch.equal(trained["Retrain"].model.user_embedding.weight, trained["Retrain*"].model.user_embedding.weight)

    monkeypatch.setattr(BestStateTrainer, "fit_on", lambda self, *a, **k: None)  # the initial parameters only
    start = {name: run_unlearner(exp, cls, cfg).model.state_dict() for name, cls, cfg in plan}
    assert all(torch.equal(start["Retrain"][k], start["Retrain*"][k]) for k in start["Retrain"])
    assert not torch.equal(start["Retrain"]["user_embedding.weight"], start["Retrain (new init)"]["user_embedding.weight"])
