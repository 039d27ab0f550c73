"""CURE4Rec's fairness aspect: the accuracy gap between active and inactive users."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_experiment
from recbole_unlearn.config import config_with
from recbole_unlearn.report import evaluate_row, make_eval_setup


def test_groups_are_the_most_active_test_users_and_the_gap_is_their_difference():
    exp = tiny_experiment("ENMF", forget="users", forget_selection="core", forget_fraction=0.1)
    config = config_with(exp.config, fairness_active_share=0.2)
    setup = make_eval_setup(config, exp.remaining, exp.valid, exp.test_r, exp.request)
    test_users = np.unique(exp.test.inter_feat[exp.test.uid_field].numpy())
    counts = np.bincount(exp.train.inter_feat[exp.train.uid_field].numpy(), minlength=exp.train.user_num)
    groups = {g: set(np.unique(loader._dataset.inter_feat[loader._dataset.uid_field].numpy()))
              for g, loader in setup.groups.items()}
    assert groups["active"].isdisjoint(groups["inactive"]) and groups["active"] | groups["inactive"] == set(test_users)
    assert len(groups["active"]) == int(np.ceil(0.2 * len(test_users)))
    assert min(counts[list(groups["active"])]) >= max(counts[list(groups["inactive"])])  # D_a activity decides
    row = evaluate_row(exp.original, setup)
    for key, gap in row["fairness_gap"].items():
        assert gap == pytest.approx(row["test_active"][key] - row["test_inactive"][key])
