"""Safe checkpoints: a plain ``state_dict`` plus JSON metadata, written atomically.

Format: ``{"state_dict": {name: tensor}, "meta_json": str}``, loadable with
``torch.load(weights_only=True)`` (no pickled objects).  A stock RecBole checkpoint (which
pickles its Config) is read only with ``allow_pickle_checkpoint: True``.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from recbole_unlearn._compat import load_stock_recbole_checkpoint, torch_load_safe
from recbole_unlearn.errors import UnlearnInputError


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); open() would not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, payload: Any) -> None:
    """Atomically write ``payload`` as indented JSON."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")

    atomic_write(path, write)


def save_checkpoint(path: str | Path, state_dict: dict, meta: dict) -> None:
    """Atomically save ``state_dict`` (tensors only) and JSON-able ``meta``."""
    clean = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    payload = {"state_dict": clean, "meta_json": json.dumps(meta)}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> tuple[dict, dict]:
    """(state_dict, meta) of a checkpoint written by :func:`save_checkpoint`.

    With ``allow_pickle`` a stock RecBole checkpoint is accepted too (its meta is then
    ``{"format": "recbole"}`` plus the model name).

    Raises:
        UnlearnInputError: missing file, not a checkpoint, or a pickled one without opt-in.
    """
    path = Path(path)
    if not path.is_file():
        raise UnlearnInputError(f"checkpoint not found: {path}")
    try:
        payload = torch_load_safe(path)
    except Exception as safe_error:  # weights_only refuses pickled objects
        if not allow_pickle:
            raise UnlearnInputError(
                f"checkpoint {path} is not in the safe format ({type(safe_error).__name__}); "
                "if it is a RecBole checkpoint you trust, set allow_pickle_checkpoint: True"
            ) from None
        try:
            payload = load_stock_recbole_checkpoint(path)
        except Exception as e:
            raise UnlearnInputError(f"cannot read checkpoint {path}: {e}") from None
        if not isinstance(payload, dict) or "state_dict" not in payload:
            raise UnlearnInputError(f"{path} is not a RecBole checkpoint")
        model = payload["config"]["model"] if "config" in payload else None
        return payload["state_dict"], {"format": "recbole", "model": model}
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta_json" not in payload:
        raise UnlearnInputError(f"{path} is not a recbole_unlearn checkpoint")
    return payload["state_dict"], json.loads(payload["meta_json"])
