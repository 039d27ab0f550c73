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
