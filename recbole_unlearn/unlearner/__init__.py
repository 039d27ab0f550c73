"""The unlearner registry.

One name everywhere: the class ``AltEraser`` is registered as ``AltEraser``, configured by
``properties/unlearner/AltEraser.yaml`` and chosen with ``--unlearner=alteraser`` (any case).
"""
from __future__ import annotations

from typing import TypeVar

from recbole_unlearn.errors import UnlearnInputError

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_unlearner(cls: T) -> T:
    """Class decorator: register ``cls`` under its class name (case-insensitive lookup)."""
    key = cls.__name__.lower()
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"an unlearner named {cls.__name__!r} is already registered")
    _REGISTRY[key] = cls
    return cls


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
            f"unknown unlearner {name!r}; registered unlearners: {', '.join(unlearner_names())}"
        ) from None


# The modules below register themselves on import; importing them here makes the registry
# complete as soon as the package is imported (no scanning, no plugins found by accident).
from recbole_unlearn.unlearner import alteraser as _alteraser  # noqa: E402,F401
from recbole_unlearn.unlearner import ifru as _ifru  # noqa: E402,F401
from recbole_unlearn.unlearner import receraser as _receraser, sisa as _sisa  # noqa: E402,F401
from recbole_unlearn.unlearner import retrain as _retrain  # noqa: E402,F401
from recbole_unlearn.unlearner import unlearnrec as _unlearnrec  # noqa: E402,F401
from recbole_unlearn.unlearner import warm_start as _warm_start  # noqa: E402,F401

__all__ = ["register_unlearner", "get_unlearner", "unlearner_names"]
