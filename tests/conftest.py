"""Shared fixtures: the tiny synthetic dataset of :mod:`recbole_unlearn.testing`, written once per
session, and cached experiments on it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

from recbole_unlearn import testing  # noqa: E402
from recbole_unlearn.testing import TINY, tiny_config, write_tiny_dataset  # noqa: E402,F401  (TINY, write_tiny_dataset: for tests)
from recbole_unlearn.testing import pytest_generate_tests  # noqa: E402,F401  (contract classes run per model)

_tiny_root: Path | None = None


def tiny_config_dict(model: str, **overrides) -> dict:
    """Config keys for a fast run on the session's tiny dataset (checkpoints and logs under tmp)."""
    assert _tiny_root is not None
    return tiny_config(_tiny_root, model, **overrides)


def make_config(model: str, **overrides):
    from recbole_unlearn.config import Config

    return Config(model=model, dataset=TINY, config_dict=tiny_config_dict(model, **overrides))


def tiny_experiment(model: str, **overrides):
    """A prepared Experiment on the session's tiny dataset, cached per (model, overrides);
    callers get a deep copy of Θ_a, so no test can alter another's."""
    return testing.tiny_experiment(model, root=_tiny_root, **overrides)


@pytest.fixture(scope="session", autouse=True)
def _tiny_dataset(tmp_path_factory):
    """Create the tiny dataset once and run every test from a scratch folder."""
    global _tiny_root
    _tiny_root = write_tiny_dataset(tmp_path_factory.mktemp("data"))
    old = os.getcwd()
    os.chdir(_tiny_root)
    yield _tiny_root
    os.chdir(old)

