"""Every scenario × every unlearner × every model on the tiny dataset.

Each cell checks the two promises of a deletion: no forgotten pair is left in D_r (nor in what
the result was trained on), and the forgotten pairs rank lower than under the original.
A method that cannot serve a cell must refuse it with one line naming one that can.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import tiny_experiment
from recbole_unlearn.config import config_with
from recbole_unlearn.data.remaining import dataset_keys, pair_keys
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.model import MODELS
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.unlearner import get_unlearner, unlearner_names
from unlearner_contract import forgotten_rank

#: keys that keep each method quick on the tiny data (the same spirit as its own tests)
FAST = {
    "Retrain": {"epochs": 30},
    "WarmStart": {"warm_epochs": 10},
    "IFRU": {"ifru_damping": 0.3},
    "UnlearnRec": {"pretrain_epochs": 2, "finetune_epochs": 2, "aux_batch_size": 256},
    "SISA": {"n_shards": 2, "epochs": 30},
    "RecEraser": {"n_shards": 2, "epochs": 30, "agg_epochs": 5},
}
SCENARIOS = ["private", "noise", "users-random", "users-core", "users-edge", "random", "file-pairs", "file-users"]


def request_file(tmp_path_factory, model: str, kind: str) -> str:
    """A request file of real training pairs (``pairs``) or of whole users (``users``)."""
    train = tiny_experiment(model, forget="private").train
    users = train.inter_feat[train.uid_field].numpy()
    items = train.inter_feat[train.iid_field].numpy()
    rows = np.flatnonzero(np.isin(users, np.unique(users)[:5]))[::3]
    lines = ["user_id:token" + ("\titem_id:token" if kind == "pairs" else "")]
    for u in (np.unique(users[rows]) if kind == "users" else []):
        lines.append(train.id2token(train.uid_field, u))
    for r in (rows if kind == "pairs" else []):
        lines.append(f"{train.id2token(train.uid_field, users[r])}\t{train.id2token(train.iid_field, items[r])}")
    path = tmp_path_factory.getbasetemp() / f"matrix-{model}-{kind}.forget"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def experiment(tmp_path_factory, model: str, scenario: str):
    mode, _, variant = scenario.partition("-")
    keys = {"forget": mode}
    if mode == "users":
        keys.update(forget_selection=variant, forget_fraction=0.1)
    elif mode == "random":
        keys["forget_fraction"] = 0.05
    elif mode == "file":
        keys["forget_file"] = request_file(tmp_path_factory, model, variant)
    return tiny_experiment(model, **keys)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("unlearner", unlearner_names())
@pytest.mark.parametrize("model", [cls.__name__ for cls in MODELS.values()])
def test_every_cell_forgets(tmp_path_factory, model, unlearner, scenario):
    exp = experiment(tmp_path_factory, model, scenario)
    assert len(exp.request) > 0
    if scenario == "file-users":
        assert len(exp.request.whole_users) > 0
    cls = get_unlearner(unlearner)
    declared = cls.refusal(MODELS[model.lower()])  # a method declares the models it cannot serve
    try:
        outcome = run_unlearner(exp, cls, config_with(exp.config, **FAST.get(unlearner, {})))
    except UnlearnInputError as e:  # a refusal must be one line naming a method that can
        message = str(e)
        assert "\n" not in message and any(n in message for n in unlearner_names() if n != unlearner), message
        if declared:
            assert message == declared
            return
        pytest.fail(f"{unlearner} refused {model}/{scenario}: {message}")
    assert not declared, f"{unlearner} declares it refuses {model} but served it"
    forgotten = pair_keys(exp.request.users, exp.request.items, exp.train.item_num)
    assert not np.isin(dataset_keys(outcome.remaining), forgotten).any()
    assert not np.isin(outcome.model.trained_pair_keys().cpu().numpy(), forgotten).any()
    before, after = forgotten_rank(exp.original, exp.request), forgotten_rank(outcome.model, exp.request)
    assert after < before, (before, after)
