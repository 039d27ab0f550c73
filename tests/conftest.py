"""Shared fixtures: a tiny synthetic RecBole dataset and cached experiments on it.

The dataset has two taste clusters (users u % 2 == c mostly interact with items of cluster c),
so a few epochs already learn something and forgetting is measurable.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

TINY = "tiny"
TINY_USERS, TINY_ITEMS, PER_USER = 60, 40, 14

_world_cache: dict = {}
_tiny_root: Path | None = None


def write_tiny_dataset(root: Path, name: str = TINY, seed: int = 0) -> Path:
    """Write ``root/name/name.inter``; returns ``root``."""
    rng = np.random.default_rng(seed)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    half = TINY_ITEMS // 2
    for u in range(1, TINY_USERS + 1):
        own = np.arange(1, half + 1) + (u % 2) * half
        items = set(rng.choice(own, size=PER_USER - 3, replace=False).tolist())
        while len(items) < PER_USER:
            items.add(int(rng.integers(1, TINY_ITEMS + 1)))
        for t, i in enumerate(sorted(items)):
            lines.append(f"u{u}\ti{i}\t{1 + (u + i) % 5}\t{t}")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tiny_config_dict(model: str, **overrides) -> dict:
    """Config keys for a fast run on the tiny dataset (checkpoints and logs under tmp)."""
    assert _tiny_root is not None
    cfg = {
        "data_path": str(_tiny_root),
        "checkpoint_dir": str(_tiny_root / "saved"),
        "log_wandb": False,
        "show_progress": False,
        "state": "ERROR",
        # no early stopping: fixed epochs make the models memorise the injected noise pairs
        "epochs": 60,
        "eval_step": 0,
        "embedding_size": 16,
        "forget_users": 12,
        "train_batch_size": 16 if model == "ENMF" else 128,
        "learning_rate": 0.02 if model == "ENMF" else 0.01,
        "eval_batch_size": 4096,
        "seed": 2020,
        "topk": [5, 10, 20],
    }
    cfg.update(overrides)
    return cfg


def make_config(model: str, **overrides):
    from recbole_unlearn.config import Config

    return Config(model=model, dataset=TINY, config_dict=tiny_config_dict(model, **overrides))


def tiny_experiment(model: str, **overrides):
    """A prepared Experiment (split, request, trained Θ_a), cached per (model, overrides).

    Callers get a deep copy of the original model, so no test can alter another's Θ_a.
    """
    from recbole_unlearn.quick_start import prepare

    key = (model, tuple(sorted(overrides.items())))
    if key not in _world_cache:
        _world_cache[key] = prepare(make_config(model, **overrides), saved=False)
    exp = _world_cache[key]
    exp_copy = copy.copy(exp)
    exp_copy.original = copy.deepcopy(exp.original)
    return exp_copy


@pytest.fixture(scope="session", autouse=True)
def _tiny_dataset(tmp_path_factory):
    """Create the tiny dataset once and run every test from a scratch folder."""
    global _tiny_root
    _tiny_root = write_tiny_dataset(tmp_path_factory.mktemp("data"))
    old = os.getcwd()
    os.chdir(_tiny_root)
    yield _tiny_root
    os.chdir(old)


def pytest_generate_tests(metafunc):
    """Test classes that list ``models`` run each test once per model."""
    if "model_name" in metafunc.fixturenames and metafunc.cls is not None:
        metafunc.parametrize("model_name", list(getattr(metafunc.cls, "models", ("ENMF",))))
