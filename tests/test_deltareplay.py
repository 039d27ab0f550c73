"""DeltaReplay: the contract, what moves and by how much, the shared negatives, its preparation,
and the score gap it closes against a retrain."""
from __future__ import annotations

import copy

import pytest
import torch
from recbole.utils import init_seed

from conftest import make_config, tiny_experiment
from recbole_unlearn.data.remaining import pairs
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner.deltareplay import DeltaReplay
from recbole_unlearn.unlearner.rowreset import _negatives, resolve_rows
from recbole_unlearn.testing import score_gap_closed
from unlearner_contract import UnlearnerContract


class TestDeltaReplay(UnlearnerContract):
    unlearner = "DeltaReplay"


def _config(exp, **keys):
    return make_config(exp.config["model"], forget=exp.config["forget"], **keys)


def _run(exp, **keys):
    return run_unlearner(exp, DeltaReplay, _config(exp, **keys))


def test_a_subset_of_the_base_set_draws_its_negatives():
    """Common random numbers: the pairs at ``positions`` get, at every step, the negatives the
    whole base set draws for them, all in [1, n_items)."""
    whole = _negatives(50, 8, 3, seed=5)
    positions = torch.tensor([1, 4, 6])
    part = _negatives(50, 3, 3, seed=5, among=(8, positions))
    for _ in range(3):
        drawn, ours = whole().view(8, 3), part().view(3, 3)
        assert torch.equal(drawn[positions], ours)
        assert int(drawn.min()) >= 1 and int(drawn.max()) < 50


@pytest.mark.parametrize("start, users", [("items", "refit"), ("model", "move")])
def test_the_rows_move_by_the_scaled_difference_of_two_replays(start, users):
    """Each item row (with ``replay_users`` move, each forgetting user's row too) is Θ_a's plus
    c·(R(D_r) − R(D_a)), R the replay from Θ_a's rows (``replay_from`` items: every user's row
    at the value a retrain starts from), on D_a with its own graph and on D_r with D_r's, with
    the same negatives for the pairs D_r keeps; users outside the request keep Θ_a's rows;
    c = 0 moves none."""
    exp = tiny_experiment("LightGCN", forget="private")
    config = _config(exp, replay_from=start, replay_users=users)
    p = DeltaReplay.params_class.from_config(config)
    theta = exp.original.ego_embeddings().detach()
    origin = theta.clone()
    if start == "items":
        init_seed(config["seed"], config["reproducibility"])
        origin[:exp.original.n_users] = config.model_class(config, exp.train).ego_embeddings().detach()[:exp.original.n_users]
    every = torch.arange(len(origin))
    on_a, on_r = copy.deepcopy(exp.original), copy.deepcopy(exp.original)
    on_r.set_train_data(exp.remaining)
    users_a, items_a = pairs(exp.train)
    users_r, items_r = pairs(exp.remaining)
    keys_a, keys_r = users_a * exp.original.n_items + items_a, users_r * exp.original.n_items + items_r
    positions = torch.nonzero(torch.isin(keys_a, keys_r)).view(-1)
    assert torch.equal(keys_a[positions], keys_r)  # D_r keeps D_a's order
    replay = lambda model, u, i, among: resolve_rows(model, origin, every, u, i, p.replay_steps, p.replay_lr,  # noqa: E731
                                                     p.replay_negatives, int(config["seed"]), among=among)
    difference = replay(on_r, users_r, items_r, (len(keys_a), positions)) - replay(on_a, users_a, items_a, None)

    n_users = exp.original.n_users
    moved = {c: run_unlearner(exp, DeltaReplay, _config(exp, replay_from=start, replay_users=users, replay_scale=c))
             .model.ego_embeddings().detach() for c in (0.0, 2.0)}
    forgetting = torch.zeros(n_users + exp.original.n_items, dtype=torch.bool)
    forgetting[torch.as_tensor(exp.request.forget_users)] = True
    rows = forgetting.clone() if users == "move" else torch.zeros_like(forgetting)
    rows[n_users + 1:] = True
    torch.testing.assert_close(moved[0.0][rows], theta[rows])
    torch.testing.assert_close(moved[2.0][rows], theta[rows] + 2.0 * difference[rows], rtol=1e-4, atol=1e-6)
    assert float(difference[rows].abs().max()) > 1e-4
    others = ~forgetting
    others[n_users:] = False
    assert torch.equal(moved[2.0][others], theta[others])


def test_the_preparation_is_reported_beside_the_request():
    """R(D_a) is prepared before the timed part and reported as ``pretrain_time_s`` (and
    ``prepare_time_s``), apart from the request's ``time_s``."""
    out = _run(tiny_experiment("LightGCN", forget="private"))
    assert out.info["pretrain_time_s"] > 0 and out.info["prepare_time_s"] == out.info["pretrain_time_s"]
    assert out.time_s > 0 and out.info["refit_steps"] == 25


@pytest.mark.parametrize("scenario, least", [("private", 0.8), ("noise", 0.6)])
def test_closes_most_of_the_forgotten_pairs_score_gap_to_a_retrain(scenario, least):
    """On a small graph, DeltaReplay removes at least 80% of the gap between Θ_a's and an exact
    retrain's mean predicted probability of the forgotten pairs of a ``private`` request; of an
    injected (``noise``) request's, whose pairs Θ_a memorised and a replay from Θ_a moves
    little, at least 60% (about 70% measured; RowReset removes 80%)."""
    exp = tiny_experiment("LightGCN", forget=scenario)
    assert score_gap_closed(exp, _run(exp).model) >= least
