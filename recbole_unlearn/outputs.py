"""A run's outputs, staged and published together, and the audit trail.

Every output of a run (the original it trained, the unlearned checkpoint, method state,
results.json) is written into a staging folder beside the run folder and renamed into place
only at the end, so a run that fails or is killed changes nothing that existed before; a killed
run's staging folder (``.<run>.pid<N>.staging``) is removed by the next run.  Nothing that
exists is overwritten unless ``overwrite: True``, and no output may be an input.

The audit trail is a JSON-lines file with one record per request; each record holds the SHA-256
of the previous line, so :func:`verify_audit` detects an edited, removed or reordered record.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from recbole_unlearn.checkpoint import file_sha256, fsync_path, remove_stale, write_json
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.options import shown


def _writable_or_error(path: Path, what: str) -> None:
    """``path`` (to be created) has a writable existing ancestor folder and no file in its way."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UnlearnInputError(f"{what} {shown(str(path))}: {shown(str(parent))} is a file, not a folder")
    try:  # an anonymous probe: tells a read-only folder even to root, and leaves no name behind
        tempfile.TemporaryFile(dir=parent).close()
    except OSError:
        raise UnlearnInputError(f"{what} {shown(str(path))}: folder {shown(str(parent))} is not writable") from None


class RunOutputs:
    """Where one run's outputs go, checked before any work is done."""

    def __init__(self, config, unlearner: str, inputs: list):
        root = Path(config["checkpoint_dir"])
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{config['dataset']}-{config['model']}-{unlearner}-{stamp}-{secrets.token_hex(3)}"
        self.run_dir = Path(config["run_dir"] or root / name)
        self.results = Path(config["results"] or self.run_dir / "results.json")
        self.audit = Path(config["audit_log"] or root / "audit.jsonl")
        self.overwrite = bool(config["overwrite"])
        self.staging = self.run_dir.parent / f".{self.run_dir.name}.pid{os.getpid()}.staging"
        resolved_inputs = {Path(p).resolve() for p in inputs if p}
        for what, path in (("run_dir", self.run_dir), ("results", self.results), ("audit_log", self.audit)):
            if path.resolve() in resolved_inputs:
                raise UnlearnInputError(f"{what} {shown(str(path))} is also an input of this run")
            _writable_or_error(path, what)
        for what, path in (("run_dir", self.run_dir), ("results", self.results), ("picture", self.picture)):
            if path.exists() and not self.overwrite and not (path.is_dir() and not any(path.iterdir())):
                raise UnlearnInputError(f"{what} {shown(str(path))} exists; give overwrite=True to replace it")
        if self.audit.exists() and not self.audit.is_file():
            raise UnlearnInputError(f"audit_log {shown(str(self.audit))} is not a file")
        self._inside = self.results.resolve().is_relative_to(self.run_dir.resolve())

    def path(self, name: str) -> Path:
        """Staging path of output ``name`` (the folder is made on first use)."""
        if not self.staging.is_dir():
            self.staging.parent.mkdir(parents=True, exist_ok=True)
            for leftover in (".*.pid*.staging", ".*.pid*.old"):  # what killed runs left behind
                remove_stale(self.staging.parent, leftover)
            self.staging.mkdir()
        return self.staging / name

    def final(self, name: str) -> Path:
        """Where staged output ``name`` will be once published."""
        return self.run_dir / name

    @property
    def picture(self) -> Path:
        """The PNG beside results.json (same stem)."""
        return self.results.with_suffix(".png")

    def publish(self, results: dict, draw=None) -> bool:
        """Write ``results`` (and the picture, with ``draw(path) -> bool``), then move every
        staged output into place together.  Returns whether a picture was written."""
        drawn = False
        if self._inside:
            rel = self.results.resolve().relative_to(self.run_dir.resolve())
            write_json(self.path(str(rel)), results)
            drawn = bool(draw and draw(self.path(str(rel.with_suffix(".png")))))
        for path in self.staging.rglob("*"):
            fsync_path(path)
        old = None
        if self.run_dir.exists():
            old = self.run_dir.parent / f".{self.run_dir.name}.pid{os.getpid()}.old"
            os.rename(self.run_dir, old)
        os.rename(self.staging, self.run_dir)
        fsync_path(self.run_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if not self._inside:
            write_json(self.results, results)
            if draw:
                staged = self.results.parent / f".{self.picture.name}.pid{os.getpid()}.png"
                try:
                    drawn = bool(draw(staged))
                    if drawn:
                        fsync_path(staged)
                        os.replace(staged, self.picture)
                finally:
                    staged.unlink(missing_ok=True)
        return drawn

    def abort(self) -> None:
        """Remove whatever was staged (nothing was published)."""
        shutil.rmtree(self.staging, ignore_errors=True)


def _line_sha(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def append_audit(path: Path, record: dict) -> dict:
    """Append ``record`` (with ``prev_sha256`` set) as one line; locked against other writers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        lines = [ln for ln in f.read().split(b"\n") if ln.strip()]
        record = {**record, "prev_sha256": _line_sha(lines[-1]) if lines else None}
        f.seek(0, os.SEEK_END)
        f.write(json.dumps(record, sort_keys=True).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return record


def verify_audit(path: str | Path) -> tuple[bool, str]:
    """Re-check the hash chain and the SHA-256 of every checkpoint named that still exists.

    Returns (ok, message): the message names the first broken record.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UnlearnInputError(f"cannot read audit log {shown(str(path))}: {e.strerror or type(e).__name__}") from None
    lines = [ln for ln in data.split(b"\n") if ln.strip()]
    previous, checked = None, 0
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False, f"audit log {path}: record {n} is not JSON"
        if not isinstance(record, dict):
            return False, f"audit log {path}: record {n} is not a JSON object"
        rid = shown(record.get("request_id"), 40)
        if record.get("prev_sha256") != previous:
            return False, f"audit log {path}: record {n} (request {rid}) does not follow record {n - 1}: the chain is broken"
        for role in ("input_checkpoint", "output_checkpoint"):
            ref = record.get(role)
            if isinstance(ref, dict) and ref.get("path") and Path(ref["path"]).is_file():
                if file_sha256(ref["path"]) != ref.get("sha256"):
                    return False, f"audit log {path}: record {n} (request {rid}): {role} {shown(ref['path'])} has changed"
                checked += 1
        previous = _line_sha(line)
    return True, f"audit log {path}: {len(lines)} records, hash chain intact, {checked} checkpoint files match"
