"""The unlearner registry (no method module is imported here).

One name everywhere: the class ``AltEraser`` is registered as ``AltEraser``, configured by
``properties/unlearner/AltEraser.yaml`` and chosen with ``--unlearner=alteraser`` (any case).
Importing :mod:`recbole_unlearn.unlearner` registers the shipped methods.
"""
from __future__ import annotations

import dataclasses
import re
from typing import TypeVar

import yaml

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


def parse_rows(text: str) -> list[tuple[type, tuple[tuple[str, object], ...]]]:
    """``"retrain,alteraser[alt_optimizer=adamw],ifru[ifru_pruning=false;ifru_k_hop=2]"`` as
    (class, ((key, value), ...)) rows, values read as YAML scalars.  Unknown unlearners or keys
    fail here, before any work, naming what is allowed."""
    parts, depth, current = [], 0, ""
    for ch in str(text):
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    rows = []
    for part in (p.strip() for p in parts if p.strip()):
        match = re.fullmatch(r"([A-Za-z_][\w]*)(?:\[(.*)\])?", part)
        if not match:
            raise UnlearnInputError(f"cannot read unlearner {shown(part, 80)}; write name or name[key=value;key=value]")
        cls = get_unlearner(match.group(1))
        allowed = {f.name for f in dataclasses.fields(cls.params_class)}
        keys = []
        for item in filter(None, (x.strip() for x in (match.group(2) or "").split(";"))):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in allowed:
                raise UnlearnInputError(f"{cls.__name__} has no key {shown(key.strip(), 80)}; its keys: {', '.join(sorted(allowed))}")
            keys.append((key.strip(), yaml.safe_load(value.strip())))
        rows.append((cls, tuple(keys)))
    return rows
