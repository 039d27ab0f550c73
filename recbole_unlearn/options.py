"""The plugin's keys, read from the ``# (type) meaning`` comments of its shipped YAML files, and
strict conversion of option values (input is data: nothing is evaluated).

A documented line looks like::

    forget_users: 64     # (int, >= 1) Forgetting users for private / noise.

The type is ``int``, ``float``, ``bool``, ``str`` (``str: a|b|c`` lists the choices, any
case), ``list`` or ``dict``; bounds (``>= 1``, ``> 0``, ``<= 1``, ``< 1``)
may follow it.  A default of ``~`` makes the key nullable.
"""
from __future__ import annotations

import difflib
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path

from recbole_unlearn.errors import UnlearnInputError

TRUE_WORDS = frozenset({"true", "yes", "1"})
FALSE_WORDS = frozenset({"false", "no", "0"})
TYPES = ("int", "float", "bool", "str", "list", "dict")
MAX_SHOWN = 200
MAX_MESSAGE = 250  # characters of an error message of convert (its name, the rule and the echo)
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_LINE = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*):\s*(.*?)\s*#\s*\((\w+)(?::\s*([\w|]+))?((?:\s*,\s*[<>]=?\s*-?[0-9.e+-]+)*)\)\s*(.*)$"
)
_BOUND = re.compile(r"([<>]=?)\s*(-?[0-9.e+-]+)")


def shown(value, limit: int = MAX_SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters (an error never echoes a huge input).

    Always one line (``repr`` escapes line breaks) and never raises: an int too long for
    ``repr`` (``sys.get_int_max_str_digits``) is described by its size instead.
    """
    try:
        text = repr(value)
    except ValueError:
        if not isinstance(value, int):
            text = f"<{type(value).__name__}>"
        else:
            digits = int(abs(value).bit_length() * math.log10(2)) + 1
            text = f"<{'-' if value < 0 else ''}integer of about {digits} digits>"
    except Exception:  # an object whose repr fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def _message(prefix: str, value) -> str:
    """``prefix`` + ``shown(value)``, the echo cut so the message stays within MAX_MESSAGE."""
    return prefix + shown(value, max(40, min(MAX_SHOWN, MAX_MESSAGE - len(prefix))))


@dataclass(frozen=True)
class KeySpec:
    """One documented key: its type, default (as written), bounds and one-line meaning."""

    name: str
    type: str
    default: str
    meaning: str
    source: str
    bounds: tuple[tuple[str, float], ...] = ()
    choices: tuple[str, ...] = ()

    @property
    def nullable(self) -> bool:
        return self.default in ("~", "null", "")


def read_specs(path: Path) -> dict[str, KeySpec]:
    """The documented keys of one YAML file (lines without a ``(type)`` comment are skipped)."""
    specs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _LINE.match(line)
        if m and m.group(3) in TYPES:
            bounds = tuple((op, float(num)) for op, num in _BOUND.findall(m.group(5)))
            choices = tuple(m.group(4).split("|")) if m.group(4) else ()
            specs[m.group(1)] = KeySpec(m.group(1), m.group(3), m.group(2), m.group(6).strip(), path.name,
                                        bounds, choices)
    return specs


def yaml_keys(path: Path) -> set[str]:
    """Every top-level key of a YAML file (documented or not)."""
    return {m.group(1) for line in path.read_text(encoding="utf-8").splitlines()
            if (m := re.match(r"^([A-Za-z_][A-Za-z0-9_]*):", line))}


def convert(spec: KeySpec, value, raw: str | None = None):
    """``value`` checked and converted to ``spec``'s type.

    ``raw`` is the string the user typed (command line, ``config_dict``), or None for a value
    read from a YAML file.  Booleans are strict: true/false/yes/no/1/0 (any case).

    Raises:
        UnlearnInputError: wrong type, out of bounds, or empty where the key is not nullable.
    """
    name = spec.name
    typed = raw if raw is not None else value  # what errors echo: the input as the user wrote it
    if value is None or (raw is not None and raw.strip() in ("~", "null", "None")):
        if spec.nullable:
            return None
        raise UnlearnInputError(f"{name} needs a value ({spec.type}), it cannot be empty")
    if spec.type == "str":
        text = raw if raw is not None else value if isinstance(value, str) else _type_error(spec, value)
        if spec.choices:
            if text.strip().lower() not in spec.choices:
                raise UnlearnInputError(_message(f"{name} must be one of {', '.join(spec.choices)}, not ", text))
            return text.strip().lower()
        return text
    if spec.type in ("list", "dict"):
        if not isinstance(value, list if spec.type == "list" else dict):
            form = "[a, b] list" if spec.type == "list" else "{key: value} mapping"
            raise UnlearnInputError(_message(f"{name} must be a {form}, not ", typed))
        return value
    if spec.type == "bool":
        if raw is not None:
            word = raw.strip().lower()
        elif isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            word = str(int(value))  # never str() of any other int: a huge one cannot be written
        else:
            word = ""
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        return _type_error(spec, typed, "true/false/yes/no/1/0")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _type_error(spec, typed)
    if spec.type == "int":
        if isinstance(value, float) and not value.is_integer():
            return _type_error(spec, typed)
        value = int(value)
    else:
        try:
            value = float(value)
        except OverflowError:  # an int beyond the float range
            value = math.inf
        if not math.isfinite(value):
            raise UnlearnInputError(_message(f"{name} must be a finite number, not ", typed))
    for op, bound in spec.bounds:
        if not _OPS[op](value, bound):
            raise UnlearnInputError(_message(f"{name} must be {op} {bound:g}, not ", value))
    return value


def _type_error(spec: KeySpec, value, expected: str | None = None):
    expected = expected or {"int": "an integer", "float": "a number", "str": "a string"}[spec.type]
    raise UnlearnInputError(_message(f"{spec.name} must be {expected}, not ", value))


def unknown_key_error(key: str, known) -> UnlearnInputError:
    """The error for an unknown key, suggesting the closest known one."""
    # a key far longer than every known one cannot be close (and difflib is slow on huge ones)
    longest = max((len(k) for k in known), default=0)
    close = (difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
             if isinstance(key, str) and len(key) <= 3 * longest else [])
    hint = f"; did you mean {close[0]!r}?" if close else "; see python run_unlearn.py --help"
    return UnlearnInputError(f"unknown key {shown(key, 80)}{hint}")
