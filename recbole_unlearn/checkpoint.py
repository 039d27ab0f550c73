"""Safe checkpoints: a plain ``state_dict`` plus JSON metadata, written atomically.

Format: ``{"state_dict": {name: tensor}, "meta_json": str}``, loadable with
``torch.load(weights_only=True)`` (no pickled objects).  A stock RecBole checkpoint (which
pickles its Config) is read only with ``allow_pickle_checkpoint: True``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbole_unlearn._compat import load_stock_recbole_checkpoint, torch_load_safe
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(folder: Path, pattern: str) -> None:
    """Delete leftovers named ``pattern`` (a glob whose second dot-field is a pid) in ``folder``
    whose process is gone: what a killed run left behind."""
    for leftover in folder.glob(pattern):
        pids = [int(part[3:]) for part in leftover.name.split(".") if part.startswith("pid") and part[3:].isdigit()]
        pid = pids[0] if pids else None
        if pid is not None and pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)


def fsync_path(path: str | Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path``: readers never see half a
    file, and a killed writer's temp file (``.name.pid<N>.*.tmp``) is removed by the next."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, f".{path.name}.pid*.tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); open() would not
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
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


def finite_or_error(state_dict: dict, what: str) -> None:
    """Raise if a floating tensor of ``state_dict`` holds NaN or Inf (such a model is never
    written nor unlearned from)."""
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UnlearnInputError(f"{what} holds NaN or Inf (in {name}); nothing was written")


def save_checkpoint(path: str | Path, state_dict: dict, meta: dict, id_codes: dict | None = None) -> None:
    """Atomically save ``state_dict`` (tensors only), JSON-able ``meta`` and, optionally, the
    salted token codes of the internal ids (``{"user": [n_users], "item": [n_items]}`` int64)."""
    clean = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    finite_or_error(clean, "the model to save")
    payload = {"state_dict": clean, "meta_json": json.dumps(meta)}
    if id_codes is not None:
        payload["id_codes"] = {k: torch.as_tensor(v, dtype=torch.long) for k, v in id_codes.items()}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


@dataclass
class Checkpoint:
    """What a checkpoint file holds: tensors, metadata, and the id codes (None if absent)."""

    state_dict: dict
    meta: dict
    id_codes: dict | None = None
    sha256: str = ""


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_checkpoint(path: str | Path, allow_pickle: bool = False) -> Checkpoint:
    """A checkpoint written by :func:`save_checkpoint` (or, with ``allow_pickle``, a stock
    RecBole one), its structure checked.

    Raises:
        UnlearnInputError: missing or unreadable file, not a checkpoint, malformed metadata, a
            pickled one without opt-in, or tensors holding NaN/Inf.
    """
    state, meta = load_checkpoint(path, allow_pickle)
    codes = meta.pop("_id_codes", None)
    finite_or_error(state, f"checkpoint {path}")
    return Checkpoint(state, meta, codes, file_sha256(path))


def load_checkpoint(path: str | Path, allow_pickle: bool = False) -> tuple[dict, dict]:
    """(state_dict, meta) of a checkpoint written by :func:`save_checkpoint`.

    With ``allow_pickle`` a stock RecBole checkpoint is accepted too (its meta is then
    ``{"format": "recbole"}`` plus the model name).

    Raises:
        UnlearnInputError: missing file, not a checkpoint, or a pickled one without opt-in.
    """
    path = Path(path)
    if not path.is_file():
        raise UnlearnInputError(f"checkpoint not found: {shown(str(path))}")
    try:
        payload = torch_load_safe(path)
    except OSError as e:
        raise UnlearnInputError(f"cannot read checkpoint {shown(str(path))}: {e.strerror or type(e).__name__}") from None
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
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise UnlearnInputError(f"checkpoint {path}: its state_dict is not a mapping of names to tensors")
    try:
        meta = json.loads(payload["meta_json"]) if isinstance(payload["meta_json"], str) else None
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict):
        raise UnlearnInputError(f"checkpoint {path}: its metadata is not a JSON object")
    codes = payload.get("id_codes")
    if codes is not None:
        if not isinstance(codes, dict) or not all(torch.is_tensor(codes.get(k)) for k in ("user", "item")):
            raise UnlearnInputError(f"checkpoint {path}: its id codes are malformed")
        meta["_id_codes"] = {k: codes[k].numpy() for k in ("user", "item")}
    return state, meta


def checkpoint_names(path: str | Path) -> tuple[str | None, str | None]:
    """(model, dataset) named by the safe checkpoint at ``path``, each None where it names none
    or cannot be read (the run that reads it then says why)."""
    try:
        _, meta = load_checkpoint(path)
    except UnlearnInputError:
        return None, None
    names = (meta.get("model"), meta.get("dataset"))
    return tuple(n if isinstance(n, str) else None for n in names)


def remap_rows(state: dict, old_codes: dict, new_codes: dict, fresh: dict) -> dict:
    """``state`` with its user- and item-indexed rows moved to a dataset whose internal ids
    were renumbered (matched by salted token code; ``{"user": [n], "item": [n]}`` int64).

    A tensor whose name holds ``user`` (``item``) and whose first dimension is the old number
    of users (items) is remapped; ids the checkpoint never knew keep ``fresh``'s rows (a fresh
    model's initialisation); pair-key buffers (``partition_keys``, with ``partition_shards``)
    are re-encoded and drop pairs whose user or item is gone.
    """
    old_codes = {k: np.asarray(v) for k, v in old_codes.items()}
    new_codes = {k: np.asarray(v) for k, v in new_codes.items()}
    if all(np.array_equal(old_codes[k], new_codes[k]) for k in ("user", "item")):
        return state
    new_of_old, old_of_new = {}, {}
    for kind in ("user", "item"):
        position = {int(c): r for r, c in enumerate(old_codes[kind])}
        old_of_new[kind] = np.array([position.get(int(c), -1) for c in new_codes[kind]], dtype=np.int64)
        inverse = np.full(len(old_codes[kind]), -1, dtype=np.int64)
        hit = old_of_new[kind] >= 0
        inverse[old_of_new[kind][hit]] = np.flatnonzero(hit)
        new_of_old[kind] = inverse
    out = dict(state)
    for name, tensor in state.items():
        if name.endswith("partition_keys"):
            n_old, n_new = len(old_codes["item"]), len(new_codes["item"])
            keys = tensor.numpy()
            u, i = new_of_old["user"][keys // n_old], new_of_old["item"][keys % n_old]
            keep = (u >= 0) & (i >= 0)
            new_keys = u[keep] * n_new + i[keep]
            order = np.argsort(new_keys, kind="stable")
            out[name] = torch.as_tensor(new_keys[order])
            shards = name[: -len("partition_keys")] + "partition_shards"
            out[shards] = torch.as_tensor(state[shards].numpy()[keep][order])
            continue
        for kind in ("user", "item"):
            if kind in name and tensor.dim() >= 1 and tensor.shape[0] == len(old_codes[kind]):
                rows = old_of_new[kind]
                base = fresh.get(name)
                if base is None or base.shape[0] != len(rows):
                    base = torch.zeros((len(rows),) + tuple(tensor.shape[1:]), dtype=tensor.dtype)
                new = base.detach().clone()
                hit = torch.as_tensor(rows >= 0)
                new[hit] = tensor[torch.as_tensor(rows[rows >= 0])]
                out[name] = new
                break
    return out
