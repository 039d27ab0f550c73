"""SISA and RecEraser: the contract, plus what makes shard-based unlearning exact."""
from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_experiment
from recbole_unlearn.checkpoint import load_checkpoint
from recbole_unlearn.config import config_with
from recbole_unlearn.data.remaining import dataset_keys, pair_keys
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner import get_unlearner
from recbole_unlearn.unlearner.base import UnlearnTask
from recbole_unlearn.unlearner.receraser import balanced_assign, balanced_partition
from unlearner_contract import UnlearnerContract

SHARDS = {"n_shards": 3}


def pretrained(exp, name: str, train=None, **keys):
    """(ensemble, info) of unlearner ``name`` pretrained on ``train`` (default D_a)."""
    config = config_with(exp.config, **keys) if keys else exp.config
    unlearner = get_unlearner(name)(config, copy.deepcopy(exp.original))
    task = UnlearnTask(config, exp.original, exp.train if train is None else train, exp.request, exp.valid_r)
    unlearner.pretrain(task)
    return unlearner.model, dict(unlearner.info)


def one_user_request(exp):
    """``exp`` with its request cut down to the first forgetting user's pairs."""
    keep = exp.request.users == exp.request.users[0]
    exp.request = replace(exp.request, users=exp.request.users[keep], items=exp.request.items[keep])
    return exp


class ShardContract(UnlearnerContract):
    config = SHARDS

    def test_empty_request_is_a_no_op(self, model_name):
        """A sharded method starts from its pretrained ensemble, not from the single Θ_a: with
        an empty request the result is that ensemble, unchanged (as saved on disk)."""
        exp = self.experiment(model_name, forget="private")
        empty = np.zeros(0, dtype=np.int64)
        exp.request = replace(exp.request, users=empty, items=empty)
        outcome = self.run(exp)
        assert "shards_retrained" not in outcome.info
        state, _ = load_checkpoint(outcome.info["shard_checkpoint"])
        for k, v in state.items():
            assert torch.equal(outcome.model.state_dict()[k], v), k

    def test_request_in_one_shard_retrains_only_that_shard(self, model_name):
        exp = one_user_request(self.experiment(model_name, forget="private"))
        before, _ = pretrained(exp, self.unlearner)
        outcome = self.run(exp)
        assert outcome.info["shards_retrained"] == 1
        (k,) = outcome.info["retrained_shards"]
        assert set(before.shard_ids(exp.request.users, exp.request.items)) == {k}
        for j in range(before.n_shards):
            old, new = before.shards[j].state_dict(), outcome.model.shards[j].state_dict()
            same = all(torch.equal(old[name], new[name]) for name in old)
            assert same == (j != k), j

    def test_no_retrained_shard_saw_a_forgotten_pair(self, model_name):
        exp = self.experiment(model_name, forget="private")
        outcome = self.run(exp)
        forgotten = pair_keys(exp.request.users, exp.request.items, exp.train.item_num)
        assert outcome.info["shards_retrained"] >= 1
        parts = outcome.model.split(outcome.remaining)
        for k in outcome.info["retrained_shards"]:
            assert not np.isin(dataset_keys(parts[k]), forgotten).any()
            assert not np.isin(outcome.model.shards[k].trained_pair_keys().numpy(), forgotten).any()

    def test_unlearning_equals_pretraining_on_the_remaining_data(self, model_name, tmp_path):
        """Exactness: same partition, and every sub-model (and aggregation) equals the one a
        from-scratch pretraining on D_r gives."""
        exp = self.experiment(model_name, forget="private")
        outcome = self.run(exp)
        fresh, info = pretrained(exp, self.unlearner, train=exp.remaining, shard_dir=str(tmp_path))
        assert not info["shards_reused"]
        remaining = dataset_keys(exp.remaining)
        assert np.array_equal(fresh.shard_ids(remaining // exp.train.item_num, remaining % exp.train.item_num),
                              outcome.model.shard_ids(remaining // exp.train.item_num, remaining % exp.train.item_num))
        ours = outcome.model.state_dict()
        for name, value in fresh.state_dict().items():
            if not name.startswith("partition_"):
                assert torch.equal(ours[name], value), name

    def test_saved_shards_are_reused(self, tmp_path):
        exp = self.experiment("ENMF", forget="private")
        first, info1 = pretrained(exp, self.unlearner, shard_dir=str(tmp_path))
        second, info2 = pretrained(exp, self.unlearner, shard_dir=str(tmp_path))
        assert (info1["shards_reused"], info2["shards_reused"]) == (False, True)
        assert info2["shards_build_time_s"] == pytest.approx(info1["shards_build_time_s"])
        for name, value in first.state_dict().items():
            assert torch.equal(second.state_dict()[name], value), name
        _, info3 = pretrained(exp, self.unlearner, shard_dir=str(tmp_path), learning_rate=0.03)
        assert not info3["shards_reused"]  # other training settings: not the same ensemble

    def test_too_many_shards_is_an_input_error(self, tmp_path):
        exp = self.experiment("ENMF", forget="private")
        with pytest.raises(UnlearnInputError):
            pretrained(exp, self.unlearner, n_shards=1000, shard_dir=str(tmp_path))


class TestSISA(ShardContract):
    unlearner = "SISA"

    def test_users_stay_whole_and_shards_are_equal(self):
        exp = self.experiment("ENMF", forget="private")
        ensemble, info = pretrained(exp, "SISA")
        inter = exp.train.inter_feat
        shard = ensemble.shard_ids(inter[exp.train.uid_field].numpy(), inter[exp.train.iid_field].numpy())
        users = inter[exp.train.uid_field].numpy()
        assert all(len(np.unique(shard[users == u])) == 1 for u in np.unique(users))
        per_shard = [len(np.unique(users[shard == k])) for k in range(3)]
        assert max(per_shard) - min(per_shard) <= 1


class TestRecEraser(ShardContract):
    unlearner = "RecEraser"
    config = {**SHARDS, "agg_epochs": 10}

    def test_interaction_partition_is_balanced(self, tmp_path):
        exp = self.experiment("ENMF", forget="private")
        ensemble, _ = pretrained(exp, "RecEraser", partition="interaction", shard_dir=str(tmp_path))
        sizes = np.bincount(ensemble.partition_shards.numpy(), minlength=3)
        assert sizes.sum() == len(exp.train.inter_feat)
        assert sizes.max() <= np.ceil(1.2 * sizes.sum() / 3)

    def test_unknown_partition_is_an_input_error(self, tmp_path):
        exp = self.experiment("ENMF", forget="private")
        with pytest.raises(UnlearnInputError):
            pretrained(exp, "RecEraser", partition="items", shard_dir=str(tmp_path))

    def test_aggregation_is_retrained_on_the_remaining_data(self):
        exp = one_user_request(self.experiment("ENMF", forget="private"))
        before, _ = pretrained(exp, "RecEraser")
        outcome = self.run(exp)
        assert not torch.equal(before.trans_w, outcome.model.trans_w)
        assert int(outcome.model.loss_history.lens.sum()) == len(outcome.remaining.inter_feat)  # D_r


def _greedy_reference(dist: np.ndarray, cap: int) -> np.ndarray:
    """The plain loop the vectorised assignment must reproduce."""
    assign, room = np.full(dist.shape[0], -1), np.full(dist.shape[1], cap)
    for flat in np.argsort(dist, axis=None, kind="stable"):
        p, s = divmod(int(flat), dist.shape[1])
        if assign[p] < 0 and room[s] > 0:
            assign[p], room[s] = s, room[s] - 1
    return assign


@pytest.mark.parametrize("n,k,cap", [(50, 4, 13), (200, 7, 30), (31, 3, 11), (10, 10, 1)])
def test_balanced_assign_matches_the_greedy_loop(n, k, cap):
    dist = np.random.default_rng(n * k).random((n, k)) ** 3
    assign = balanced_assign(dist, cap)
    assert np.array_equal(assign, _greedy_reference(dist, cap))
    assert np.bincount(assign, minlength=k).max() <= cap


def test_balanced_partition_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0]])
    points = np.concatenate([c + 0.3 * rng.standard_normal((20, 2)) for c in centers])
    assign, rounds = balanced_partition([points], 3, 1.2, 50, np.random.default_rng(1))
    groups = [set(assign[i * 20:(i + 1) * 20]) for i in range(3)]
    assert all(len(g) == 1 for g in groups) and len(set.union(*groups)) == 3
    assert rounds < 50
