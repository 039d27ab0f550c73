"""Slow checks on real data (``python -m pytest -q -m slow``): each registered unlearner on
ml-100k, fully trained (early stopping, as the default job), against Retrain in the same run,
asserting the quality it claims; one check on ../shared/datasets when that folder is present.

The retrain band of a metric is max(3% of Retrain's value, |Retrain* − Retrain|) in the same
run (docs/evaluation.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recbole_unlearn.config import Config
from recbole_unlearn.data.remaining import pair_keys
from recbole_unlearn.quick_start import comparison_plan, evaluate_rows, prepare, run_unlearner
from recbole_unlearn.unlearner import get_unlearner

pytestmark = pytest.mark.slow
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
_runs: dict = {}


def run(model: str, unlearner: str, dataset: str = "ml-100k", **keys) -> dict:
    """Rows (Original, Retrain, Retrain*, the unlearner) of one request, evaluated together;
    the original and the retrains are shared by the checks of a (model, dataset)."""
    base = {"show_progress": False, "state": "WARNING", "forget": "private", "compare": "retrain", **keys}
    if dataset != "ml-100k":
        base["data_path"] = str(SHARED)
    key = (model, dataset, tuple(sorted(keys.items())))
    if key not in _runs:
        config = Config(model, dataset, config_dict=base)
        exp = prepare(config, saved=False)
        rows, models = {"Original": dict(exp.original_row)}, {"Original": exp.original}
        for name, cls, cfg in comparison_plan(config, get_unlearner("Retrain")):
            outcome = run_unlearner(exp, cls, cfg)
            rows[name], models[name] = {"time_s": outcome.time_s, **outcome.info}, outcome.model
        _runs[key] = (exp, rows, models)
    exp, fixed_rows, fixed_models = _runs[key]
    cls = get_unlearner(unlearner)
    outcome = run_unlearner(exp, cls, Config(model, dataset, config_dict={**base, "unlearner": unlearner}))
    rows = {**{k: dict(v) for k, v in fixed_rows.items()}, unlearner: {"time_s": outcome.time_s, **outcome.info}}
    models = {**fixed_models, unlearner: outcome.model}
    evaluate_rows(exp, models, rows)
    return {"rows": rows, "model": outcome.model, "exp": exp}


def in_band(rows: dict, name: str, metric: str, x: float = 0.03) -> bool:
    group, key = metric.split(".")
    value, ref, star = (rows[r][group][key] for r in (name, "Retrain", "Retrain*"))
    return abs(value - ref) <= max(x * ref, abs(star - ref))


def forgotten_in_training(model, exp) -> bool:
    forgotten = pair_keys(exp.request.users, exp.request.items, exp.train.item_num)
    return bool(np.isin(model.trained_pair_keys().cpu().numpy(), forgotten).any())


def test_alteraser_enmf_forgets_like_retraining():
    rows = run("ENMF", "AltEraser")["rows"]
    assert in_band(rows, "AltEraser", "test.recall@20")
    assert abs(rows["AltEraser"]["mia_auc"] - rows["Retrain"]["mia_auc"]) <= 0.05
    assert abs(rows["AltEraser"]["repredict_score"] - rows["Retrain"]["repredict_score"]) <= 0.15 * rows["Retrain"]["repredict_score"]
    assert rows["AltEraser"]["speedup"] >= 20


@pytest.mark.xfail(strict=True, reason="measured on ml-100k (seed 2020): the forgetting users' Recall@20 is 0.2462 "
                   "against Retrain's 0.2042, above the band of 0.0061 that the same-initialisation Retrain* gives")
def test_alteraser_enmf_forgetting_users_recall_in_band():
    rows = run("ENMF", "AltEraser")["rows"]
    assert in_band(rows, "AltEraser", "test_forget_users.recall@20")


def test_warmstart_enmf_keeps_accuracy_and_lowers_repredict():
    rows = run("ENMF", "WarmStart")["rows"]
    assert in_band(rows, "WarmStart", "test.recall@20")
    assert rows["WarmStart"]["repredict_score"] < rows["Original"]["repredict_score"]


def test_retrain_enmf_is_the_membership_baseline():
    r = run("ENMF", "Retrain")
    rows = r["rows"]
    assert abs(rows["Retrain"]["mia_auc"] - 0.5) <= 0.05
    assert rows["Retrain"]["rbo"]["rbo@10"] == pytest.approx(1.0)
    assert not forgotten_in_training(r["model"], r["exp"])


@pytest.mark.parametrize("unlearner", ["SISA", "RecEraser"])
def test_shard_methods_enmf_are_exact(unlearner):
    r = run("ENMF", unlearner)
    rows = r["rows"]
    assert not forgotten_in_training(r["model"], r["exp"])
    assert abs(rows[unlearner]["mia_auc"] - 0.5) <= 0.06
    assert rows[unlearner]["shards_retrained"] >= 1


@pytest.mark.parametrize("unlearner", ["IFRU", "UnlearnRec"])
def test_graph_methods_lightgcn_remove_membership_and_keep_accuracy(unlearner):
    rows = run("LightGCN", unlearner)["rows"]
    assert rows[unlearner]["mia_auc"] < rows["Original"]["mia_auc"]
    assert in_band(rows, unlearner, "test.recall@20")
    assert rows[unlearner]["speedup"] >= 5


@pytest.mark.parametrize("unlearner", ["ItemNewton", "RowReset"])
def test_reset_methods_lightgcn_remove_the_membership_signal(unlearner):
    """ItemNewton (LightGCN's default) and RowReset: ≥ 90% of the Original − Retrain MIA gap
    removed, the re-predict score within 15% of Retrain's, and the forgotten pairs out of the graph."""
    r = run("LightGCN", unlearner)
    rows = r["rows"]
    original, retrain, ours = (rows[n]["mia_auc"] for n in ("Original", "Retrain", unlearner))
    assert original - ours >= 0.9 * (original - retrain)
    assert abs(rows[unlearner]["repredict_score"] / rows["Retrain"]["repredict_score"] - 1) <= 0.15
    assert not forgotten_in_training(r["model"], r["exp"])


@pytest.mark.xfail(strict=True, reason="measured on ml-100k (seed 2020): RowReset's Recall@20 is 0.3507 against "
                   "Retrain's 0.3656, 0.0039 beyond the band of 0.0110")
def test_rowreset_lightgcn_recall_in_band():
    rows = run("LightGCN", "RowReset")["rows"]
    assert in_band(rows, "RowReset", "test.recall@20")


AMAZON = pytest.mark.skipif(not (SHARED / "amazon-electronics-14core").is_dir(), reason="../shared/datasets is absent")


@AMAZON
def test_alteraser_enmf_on_amazon_electronics():
    rows = run("ENMF", "AltEraser", dataset="amazon-electronics-14core")["rows"]
    assert in_band(rows, "AltEraser", "test_forget_users.recall@20")
    assert rows["AltEraser"]["mia_auc"] < rows["Original"]["mia_auc"]
    assert rows["AltEraser"]["repredict_score"] < rows["Original"]["repredict_score"]
    assert rows["AltEraser"]["speedup"] >= 20


@AMAZON
@pytest.mark.xfail(strict=True, reason="measured on amazon-electronics-14core (seed 2020): AltEraser's MIA AUC is 0.693 "
                   "against Retrain's 0.545 (Original 0.946), and its all-users Recall@20 0.0935 against Retrain's "
                   "0.0890 is outside the band of 0.0027")
def test_alteraser_enmf_on_amazon_electronics_forgets_like_retraining():
    rows = run("ENMF", "AltEraser", dataset="amazon-electronics-14core")["rows"]
    assert abs(rows["AltEraser"]["mia_auc"] - rows["Retrain"]["mia_auc"]) <= 0.05
    assert in_band(rows, "AltEraser", "test.recall@20")
