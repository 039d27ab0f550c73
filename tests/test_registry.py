"""The registry: explicit names, clear errors, and a test class for every unlearner."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.unlearner import get_unlearner, unlearner_names
from unlearner_contract import UnlearnerContract


def test_unknown_name_lists_registered_ones():
    with pytest.raises(UnlearnInputError) as err:
        get_unlearner("no-such-method")
    for name in unlearner_names():
        assert name in str(err.value)


def test_every_registered_unlearner_has_a_test_class():
    for path in Path(__file__).parent.glob("test_*.py"):
        importlib.import_module(path.stem)
    tested = set()
    todo = list(UnlearnerContract.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.unlearner:
            tested.add(get_unlearner(cls.unlearner).__name__)
    missing = set(unlearner_names()) - tested
    assert not missing, f"registered unlearners without a UnlearnerContract test class: {missing}"


@pytest.mark.parametrize("name, key, value, message", [
    ("AltEraser", "alt_optimizer", "newton", "alt_optimizer must be one of auto, ah_newton, hf_newton, adamw"),
    ("IFRU", "ifru_prune_quantile", 1.5, "ifru_prune_quantile must be < 1"),
    ("RecEraser", "partition", "items", "partition must be one of user, interaction"),
    ("SISA", "n_shards", 0, "n_shards must be >= 1"),
])
def test_parameters_are_checked_once_when_the_unlearner_is_built(name, key, value, message):
    """Keys set from Python (config_with skips the Config's own checks) are still checked,
    against the same YAML spec, before the method does anything."""
    from conftest import tiny_experiment
    from recbole_unlearn.config import config_with
    from recbole_unlearn.errors import UnlearnInputError

    exp = tiny_experiment("ENMF", forget="private")
    with pytest.raises(UnlearnInputError, match=message):
        get_unlearner(name)(config_with(exp.config, **{key: value}), exp.original)
