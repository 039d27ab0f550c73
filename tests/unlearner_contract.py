"""The contract every registered unlearner's test class reuses (implicit / lenskit style).

Subclass :class:`UnlearnerContract`, set ``unlearner`` (the registered name), ``models`` and
``config`` (extra keys that keep the method fast on the tiny dataset), and add tests of your
own.  ``tests/test_registry.py`` fails if a registered unlearner has no such class.
"""
from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import torch
import yaml
from recbole.data.interaction import Interaction

from conftest import tiny_experiment
from recbole_unlearn.config import resource_dir
from recbole_unlearn.data.remaining import dataset_keys, pair_keys
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner import get_unlearner


def forgotten_rank(model, request) -> float:
    """Mean fraction of items a forgotten pair's item outranks in its user's full ranking.

    Scale-free (BPR scores carry no calibrated probability), so it works for every model.
    """
    with torch.no_grad():
        model.eval()
        users = torch.as_tensor(request.users)
        scores = model.full_sort_predict(Interaction({model.USER_ID: users})).view(len(users), -1)
        own = scores[torch.arange(len(users)), torch.as_tensor(request.items)]
        return (scores[:, 1:] < own[:, None]).float().mean().item()


def forgotten_probs(model, request) -> torch.Tensor:
    with torch.no_grad():
        model.eval()
        return model.predict_proba(torch.as_tensor(request.users), torch.as_tensor(request.items))


class UnlearnerContract:
    unlearner: str = ""
    models: tuple[str, ...] = ("ENMF", "LightGCN")
    config: dict = {}
    #: how far the forgotten (noise) pairs' mean rank percentile must fall below Θ_a's
    #: (on the tiny data Θ_a ranks them at about 0.65, Retrain at about 0.35)
    min_rank_drop: float = 0.1

    def experiment(self, model_name: str, forget: str = "noise"):
        return tiny_experiment(model_name, forget=forget, **self.config)

    def run(self, exp):
        return run_unlearner(exp, get_unlearner(self.unlearner))

    def test_forgotten_pairs_score_drops(self, model_name):
        exp = self.experiment(model_name)
        before = forgotten_rank(exp.original, exp.request)
        after = forgotten_rank(self.run(exp).model, exp.request)
        assert after < before - self.min_rank_drop, (before, after)

    def test_result_no_longer_trained_on_request(self, model_name):
        exp = self.experiment(model_name, forget="private")
        outcome = self.run(exp)
        forgotten = pair_keys(exp.request.users, exp.request.items, exp.train.item_num)
        assert not np.isin(dataset_keys(outcome.remaining), forgotten).any()
        assert not np.isin(outcome.model.trained_pair_keys().cpu().numpy(), forgotten).any()
        assert outcome.time_s > 0

    def test_original_is_not_modified(self, model_name):
        exp = self.experiment(model_name, forget="private")
        before = {k: v.clone() for k, v in exp.original.state_dict().items()}
        self.run(exp)
        for k, v in exp.original.state_dict().items():
            assert torch.equal(v, before[k]), k

    def test_empty_request_is_a_no_op(self, model_name):
        exp = self.experiment(model_name, forget="private")
        empty = np.zeros(0, dtype=np.int64)
        exp.request = replace(exp.request, users=empty, items=empty)
        outcome = self.run(exp)
        for k, v in exp.original.state_dict().items():
            assert torch.equal(outcome.model.state_dict()[k], v), k

    def test_yaml_keys_match_params(self):
        cls = get_unlearner(self.unlearner)
        path = resource_dir("properties") / "unlearner" / f"{cls.__name__}.yaml"
        keys = set((yaml.safe_load(path.read_text()) or {}).keys())
        assert keys == {f.name for f in fields(cls.params_class)}

    def test_lookup_is_case_insensitive(self):
        cls = get_unlearner(self.unlearner)
        assert get_unlearner(cls.__name__.upper()) is cls
        assert get_unlearner(cls.__name__.lower()) is cls
