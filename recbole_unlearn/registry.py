"""The unlearner registry (no method module is imported here).

One name everywhere: the class ``AltEraser`` is registered as ``AltEraser``, configured by
``properties/unlearner/AltEraser.yaml`` and chosen with ``--unlearner=alteraser`` (any case).
Importing :mod:`recbole_unlearn.unlearner` registers the shipped methods.
"""
from __future__ import annotations

import dataclasses
from typing import TypeVar

from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_unlearner(cls: T) -> T:
    """Class decorator: register ``cls`` under its class name (case-insensitive lookup)."""
    key = cls.__name__.lower()
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"an unlearner named {cls.__name__!r} is already registered")
    _REGISTRY[key] = cls
    return cls


def registered_keys() -> set[str]:
    """The parameter names of every registered unlearner (a user's own included)."""
    return {f.name for cls in _REGISTRY.values() for f in dataclasses.fields(getattr(cls, "params_class", object))
            if dataclasses.is_dataclass(getattr(cls, "params_class", None))}


def unlearner_names() -> list[str]:
    """The registered class names, sorted."""
    return sorted(c.__name__ for c in _REGISTRY.values())


def get_unlearner(name: str) -> type:
    """The unlearner class registered as ``name`` (case-insensitive).

    Raises:
        UnlearnInputError: no such unlearner; the message lists the registered names.
    """
    try:
        return _REGISTRY[str(name).lower()]
    except KeyError:
        raise UnlearnInputError(
            f"unknown unlearner {shown(name, 80)}; registered unlearners: {', '.join(unlearner_names())}"
        ) from None
