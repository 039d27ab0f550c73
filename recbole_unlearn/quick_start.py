"""``run_unlearn``: the whole pipeline of one run (DESIGN.md section 2), callable from Python.

Config → dataset → split (built once) → request → original model Θ_a (trained, or loaded from
``checkpoint``) → D_r → the unlearner's Θ_u (timed) → with ``compare: retrain`` also Retrain and
Retrain* → every row evaluated on the same loaders → results.json, table, Θ_u checkpoint.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter

import numpy as np
import torch
from recbole.data import create_dataset
from recbole.utils import init_logger, init_seed

from recbole_unlearn.checkpoint import load_checkpoint, save_checkpoint, write_json
from recbole_unlearn.config import Config, config_with
from recbole_unlearn.data import ForgetRequest, build_loaders, build_request, inject_pairs, remaining_dataset
from recbole_unlearn.data.remaining import dataset_keys
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.report import evaluate_row, forget_user_topk, format_table, make_eval_setup
from recbole_unlearn.unlearner import get_unlearner
from recbole_unlearn.unlearner.base import BestStateTrainer, UnlearnOutcome, UnlearnTask
from recbole_unlearn.unlearner.retrain import Retrain

logger = logging.getLogger(__name__)


def data_fingerprint(train) -> str:
    """A short hash of D_a's pairs and id space: a checkpoint only fits the data it saw."""
    keys = np.sort(dataset_keys(train))
    h = hashlib.sha256(keys.tobytes())
    h.update(f"{train.user_num}/{train.item_num}".encode())
    return h.hexdigest()[:16]


def train_original(config, train, valid) -> tuple[torch.nn.Module, float]:
    """Θ_a: a fresh model trained on D_a with RecBole's loop and early stopping."""
    start = perf_counter()
    init_seed(config["seed"], config["reproducibility"])
    trainer = BestStateTrainer(config, config.model_class(config, train))
    trainer.fit_on(train, valid)
    return trainer.model.eval(), perf_counter() - start


def load_original(config, train) -> torch.nn.Module:
    """Θ_a from ``config['checkpoint']``, checked against this run's model and data."""
    state, meta = load_checkpoint(config["checkpoint"], allow_pickle=bool(config["allow_pickle_checkpoint"]))
    model = config.model_class(config, train)
    if meta.get("model") not in (None, config["model"]):
        raise UnlearnInputError(f"checkpoint holds a {meta['model']} model, not {config['model']}")
    if meta.get("fingerprint") not in (None, data_fingerprint(train)):
        raise UnlearnInputError(
            f"checkpoint {config['checkpoint']} was trained on other data than this run's training "
            f"split (dataset {meta.get('dataset')!r}, seed {meta.get('seed')}, forget "
            f"{meta.get('forget')!r}); use the same dataset, seed and scenario"
        )
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # tensor shapes of another dataset or embedding size
        raise UnlearnInputError(f"checkpoint {config['checkpoint']} does not fit the model: {e}") from None
    if missing or [k for k in unexpected if not k.startswith("restore_")]:
        raise UnlearnInputError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
    return model.eval()


def _meta(config, train, **extra) -> dict:
    return {
        "model": config["model"],
        "dataset": config["dataset"],
        "seed": config["seed"],
        "forget": config["forget"],
        "fingerprint": data_fingerprint(train),
        **extra,
    }


@dataclass
class Experiment:
    """One split, one request and the original model Θ_a: what every row starts from."""

    config: Config
    train: object  # D_a (with injected pairs in the noise scenario)
    valid: object  # validation Dataset
    test: object  # test Dataset
    request: ForgetRequest
    original: torch.nn.Module
    original_row: dict
    remaining: object  # D_r
    valid_r: object  # validation loader with history D_r (early stopping of every row)
    test_r: object  # test loader with history D_r (evaluation of every row)


def prepare(config: Config, saved: bool = True) -> Experiment:
    """Dataset, split (built once), request, Θ_a (trained or loaded) and the D_r loaders."""
    init_seed(config["seed"], config["reproducibility"])
    full = create_dataset(config)
    train_a, valid_ds, test_ds = full.build()
    request = build_request(config, train_a, dataset_keys(full))
    if request.inject:
        train_a = inject_pairs(train_a, request.users, request.items)
    logger.info("forget request: %s", request.summary())
    if config["checkpoint"]:
        original = load_original(config, train_a)
        row = {"train_time_s": None, "checkpoint": str(config["checkpoint"])}
    else:
        _, valid_a, _ = build_loaders(config, train_a, valid_ds, test_ds)
        original, train_time = train_original(config, train_a, valid_a)
        row = {"train_time_s": train_time}
        if saved and config["save_original"]:
            path = Path(config["checkpoint_dir"]) / f"{config['dataset']}-{config['model']}-original.pth"
            save_checkpoint(path, original.state_dict(), _meta(config, train_a, role="original"))
            row["checkpoint"] = str(path)
    remaining = remaining_dataset(train_a, request)
    _, valid_r, test_r = build_loaders(config, remaining, valid_ds, test_ds)
    return Experiment(config, train_a, valid_ds, test_ds, request, original, row, remaining, valid_r, test_r)


def run_unlearner(exp: Experiment, cls: type, config: Config | None = None) -> UnlearnOutcome:
    """Apply unlearner class ``cls`` to a copy of Θ_a (Θ_a itself is never modified)."""
    config = exp.config if config is None else config
    init_seed(config["seed"], config["reproducibility"])
    task = UnlearnTask(config, exp.original, exp.train, exp.request, exp.valid_r)
    return cls(config, copy.deepcopy(exp.original)).unlearn(task)


def comparison_plan(config: Config, unlearner_cls: type) -> list[tuple[str, type, Config]]:
    """(row name, class, config) of the rows to run: the unlearner, plus Retrain and Retrain*
    (another seed) with ``compare: retrain``."""
    plan = [(unlearner_cls.__name__, unlearner_cls, config)]
    compare = str(config["compare"]).lower()
    if compare == "retrain":
        star = config_with(config, seed=config["seed"] + int(config["retrain_star_seed_offset"]))
        plan = [("Retrain", Retrain, config), ("Retrain*", Retrain, star)] + [
            p for p in plan if p[1] is not Retrain
        ]
    elif compare != "none":
        raise UnlearnInputError(f"compare must be none or retrain, not {config['compare']!r}")
    return plan


def evaluate_rows(exp: Experiment, models: dict, rows: dict) -> None:
    """Evaluate every model on the same loaders; adds metrics, RBO vs Retrain and speed-ups."""
    setup = make_eval_setup(exp.config, exp.remaining, exp.valid, exp.test_r, exp.request)
    has_users = len(setup.forget_users) > 0  # an empty request (e.g. all pairs dropped) has none
    reference = forget_user_topk(models["Retrain"], setup) if "Retrain" in models and has_users else None
    retrain_time = rows.get("Retrain", {}).get("time_s")
    for name, m in models.items():
        rows[name].update(evaluate_row(m, setup, reference))
        if retrain_time and rows[name].get("time_s"):
            rows[name]["speedup"] = retrain_time / rows[name]["time_s"]


def run_unlearn(model=None, dataset=None, config_file_list=None, config_dict=None, saved: bool = True) -> dict:
    """Run one unlearning experiment; returns the results dict (also written to ``results``).

    Args:
        model: model name (``ENMF``, ``LightGCN``) or None to take it from the config.
        dataset: dataset name or None.
        config_file_list: the user's YAML files (override the plugin's properties).
        config_dict: keys overriding the files.
        saved: write results.json and the checkpoints.
    """
    config = Config(model, dataset, config_file_list, config_dict)
    init_logger(config)
    logger.info(config)
    unlearner_cls = get_unlearner(config["unlearner"])
    plan = comparison_plan(config, unlearner_cls)
    unlearner_name = unlearner_cls.__name__
    out_path = Path(config["checkpoint_dir"]) / f"{config['dataset']}-{config['model']}-{unlearner_name}.pth"
    if saved and config["checkpoint"] and out_path.resolve() == Path(config["checkpoint"]).resolve():
        raise UnlearnInputError(f"the unlearned model would overwrite the input checkpoint {out_path}")
    exp = prepare(config, saved=saved)
    rows: dict[str, dict] = {"Original": exp.original_row}
    models: dict[str, torch.nn.Module] = {"Original": exp.original}
    for name, cls, cfg in plan:
        logger.info("unlearning with %s", name)
        outcome = run_unlearner(exp, cls, cfg)
        models[name] = outcome.model
        rows[name] = {"time_s": outcome.time_s, **outcome.info}
    evaluate_rows(exp, models, rows)

    results = {
        "dataset": config["dataset"],
        "model": config["model"],
        "unlearner": unlearner_cls.__name__,
        "seed": config["seed"],
        "forget": exp.request.summary(),
        "rows": rows,
    }
    logger.info("results (k=20; F- = forgetting users):\n" + format_table(results))
    if saved:
        meta = _meta(config, exp.remaining, role="unlearned", unlearner=unlearner_name)
        save_checkpoint(out_path, models[unlearner_name].state_dict(), meta)
        results["checkpoint"] = str(out_path)
        write_json(config["results"], results)
    return results
