"""Shared pieces of the benchmark suite.

Layout on disk (``out`` is committed, ``cache`` is not)::

    <out>/<kind>/<key>/experiment.json       what was run: dataset, model, scenario, keys, commands
    <out>/<kind>/<key>/s<seed>-<Row>.json     one finished run (written atomically; skipped when present)
    <cache>/originals/<key>/s<seed>-Original.pth    Θ_a of a seed (shared by the kinds)
    <cache>/<kind>/<key>/s<seed>-*.pth        other checkpoints (Retrain, sequential steps) for resuming

``kind`` is ``tables``, ``sequential`` or ``scaling``; ``key`` is ``<dataset>-<model>-<scenario>``
plus a tag and a short hash of any other config keys, so a different setting never reuses
another's results.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from recbole_unlearn.checkpoint import load_checkpoint, save_checkpoint, write_json
from recbole_unlearn.config import Config, config_with
from recbole_unlearn.data import remaining_dataset
from recbole_unlearn.data.remaining import RemainingLoaders
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import Experiment, checkpoint_meta, prepare, run_unlearner
from recbole_unlearn.registry import parse_rows
from recbole_unlearn.report import evaluate_row
from recbole_unlearn.unlearner.retrain import Retrain

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the per-run result files of an experiment folder (not experiment.json / summary.json)
RUN_GLOB = "s[0-9]*-*.json"
#: config keys that do not change a result (left out of the experiment key)
NON_RESULT_KEYS = frozenset({"data_path", "show_progress", "state", "checkpoint_dir", "log_wandb"})


@dataclass
class Bench:
    """One benchmark experiment: ``kind`` × dataset × model × scenario, with the user's other
    config keys (``overrides``, passed into every Config)."""

    kind: str
    dataset: str
    model: str
    scenario: str
    overrides: dict = field(default_factory=dict)
    out: Path = REPO_ROOT / "benchmarks" / "results"
    cache: Path = REPO_ROOT / "benchmarks" / ".cache"
    tag: str = ""
    device: str = "cpu"  # cpu | cuda: runs on another device are another experiment
    _configs: dict = field(default_factory=dict, repr=False)

    @cached_property
    def key(self) -> str:
        parts = [self.dataset, self.model, self.scenario] + ([self.tag] if self.tag else [])
        parts += [self.device] if self.device != "cpu" else []
        relevant = {k: v for k, v in sorted(self.overrides.items()) if k not in NON_RESULT_KEYS}
        if "config_files" in relevant:  # the files' contents decide the results, not their names
            relevant["config_files"] = [hashlib.sha256(Path(f).read_bytes()).hexdigest()
                                        for f in config_paths(relevant["config_files"])]
        if relevant:
            parts.append(hashlib.sha256(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:8])
        return "-".join(parts)

    @property
    def result_dir(self) -> Path:
        return Path(self.out) / self.kind / self.key

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache) / self.kind / self.key

    def result_path(self, seed: int, name: str) -> Path:
        return self.result_dir / f"s{seed}-{file_name(name)}.json"

    def cache_path(self, seed: int, name: str) -> Path:
        return self.cache_dir / f"s{seed}-{file_name(name)}.pth"

    def spec(self) -> dict:
        """This experiment as JSON-able keys, for a child process (``Bench(**spec)`` rebuilds it)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "_configs"}
        return {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}

    def config(self, unlearner: str, seed: int, **keys) -> Config:
        """The Config of ``unlearner`` (its YAML layered in) for ``seed``, with ``keys`` set."""
        if unlearner not in self._configs:
            given = dict(self.overrides)
            files = config_paths(given.pop("config_files", None))
            cd = {"show_progress": False, "use_gpu": self.device == "cuda", **given, "unlearner": unlearner,
                  "forget": self.scenario}
            self._configs[unlearner] = Config(self.model, self.dataset, config_file_list=files, config_dict=cd)
        return config_with(self._configs[unlearner], seed=seed, **keys)

    def write_experiment(self, command: str | None, **details) -> None:
        """Create or update ``experiment.json`` (the commands that produced this folder); the
        ``unlearners`` of a later command are added to those of the earlier ones."""
        path = self.result_dir / "experiment.json"
        info = read_json(path) or {"kind": self.kind, "dataset": self.dataset, "model": self.model,
                                   "scenario": self.scenario, "tag": self.tag, "overrides": self.overrides,
                                   "commands": []}
        if "unlearners" in details:
            earlier = info.get("unlearners", [])
            details["unlearners"] = earlier + [name for name in details["unlearners"] if name not in earlier]
        info.update(details)
        if command and command not in [c["command"] for c in info["commands"]]:
            info["commands"].append({"command": command, "date": now()})
        write_json(path, info)


@dataclass(frozen=True)
class Variant:
    """One benchmark row: a registered unlearner, optionally with some of its keys set.

    Written ``alteraser`` or ``alteraser[alt_optimizer=hf_newton]`` (several keys separated by
    ``;``); the row is named ``AltEraser`` or ``AltEraser[alt_optimizer=hf_newton]``.
    """

    cls: type
    keys: tuple = ()

    @property
    def name(self) -> str:
        inner = ";".join(f"{k}={_text(v)}" for k, v in self.keys)
        return self.cls.__name__ + (f"[{inner}]" if inner else "")

    def config(self, bench: "Bench", seed: int, **keys):
        """The Config of this row for ``seed`` (the unlearner's YAML, then the variant's keys)."""
        return bench.config(self.cls.__name__, seed, **dict(self.keys), **keys)


def config_paths(text: str | None) -> list[str] | None:
    """The space-separated ``--config_files`` as paths (relative ones from the working folder,
    else from the repository root); a missing file is an input error."""
    if not text:
        return None
    paths = []
    for name in str(text).split():
        path = Path(name) if Path(name).is_absolute() or Path(name).exists() else REPO_ROOT / name
        if not path.is_file():
            raise UnlearnInputError(f"config file not found: {name}")
        paths.append(str(path.resolve()))
    return paths


def _text(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_unlearners(text: str) -> list[Variant]:
    """The rows of ``--unlearners`` as Variants (grammar: :func:`recbole_unlearn.registry.parse_rows`)."""
    return [Variant(cls, keys) for cls, keys in parse_rows(text)]


def file_name(row: str) -> str:
    """A row name as a file name part (``Retrain*`` -> ``Retrain-star``)."""
    return row.replace("*", "-star")


def now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def read_json(path: Path) -> dict | None:
    """The JSON at ``path``, or None when it does not exist (files are written atomically)."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def finished(path: Path) -> bool:
    """A run is finished when its JSON exists and is not an error record (those are retried)."""
    record = read_json(path)
    return record is not None and "error" not in record


def experiment_folders(result_root: Path):
    """(folder, its finished records, its refusals, the markdown line naming its commands) of
    every experiment folder under ``result_root`` that holds a finished run."""
    for folder in sorted(p for p in Path(result_root).glob("*") if p.is_dir()):
        records, errors = run_records(folder)
        if records:
            exp = read_json(folder / "experiment.json") or {}
            commands = "; ".join(f"`{c['command']}`" for c in exp.get("commands", []))
            yield folder, records, errors, f"**{folder.name}** — {commands}"


def run_records(result_dir: Path) -> tuple[list[dict], dict[str, str]]:
    """The finished runs of an experiment folder, and ``{row: error}`` of the runs an
    unlearner refused (an UnlearnInputError, e.g. a model it does not support)."""
    records, errors = [], {}
    for path in sorted(Path(result_dir).glob(RUN_GLOB)):
        record = read_json(path)
        if "error" in record:
            errors[record["row"]] = record["error"]
        else:
            records.append(record)
    return records, errors


def write_error(path: Path, bench: "Bench", seed: int, row: str, error: Exception) -> None:
    """Record that ``row`` refused this run (retried on the next invocation)."""
    write_json(path, {"dataset": bench.dataset, "model": bench.model, "seed": seed, "row": row,
                      "error": str(error), "date": now()})


def errors_text(errors: dict[str, str]) -> str:
    return "".join(f"\n\nNot run: **{row}** ({message})." for row, message in errors.items())


def seed_list(first: int, count: int) -> list[int]:
    return [int(first) + i for i in range(int(count))]


def machine() -> dict:
    """Cores, CPU model, load average and library versions of this machine (for BENCHMARKS.md):
    timings taken on a shared machine (1-minute load above the core count) say so."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.lower().startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    import recbole

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "torch_threads": torch.get_num_threads(),
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(), "torch": torch.__version__, "recbole": recbole.__version__}


def progress(total: int, desc: str) -> tqdm:
    """The progress bar over runs (finished runs found on disk are counted at once)."""
    return tqdm(total=total, desc=desc, unit="run", file=sys.stderr, dynamic_ncols=True)


def original_path(bench: Bench, seed: int, name: str = "Original") -> Path:
    """Where Θ_a of ``seed`` is cached (shared by every kind of benchmark of the setting)."""
    return Path(bench.cache) / "originals" / bench.key / f"s{seed}-{file_name(name)}.pth"


def prepare_cached(bench: Bench, config: Config, seed: int, name: str = "Original") -> tuple[Experiment, float]:
    """``prepare(config)``, with Θ_a loaded from the cache when an earlier run trained it.

    Θ_a depends on the experiment key, not on the kind of benchmark: the tables and the scaling
    runs of one setting share it.  Returns the Experiment and Θ_a's training time (kept in the
    checkpoint's metadata).
    """
    path = original_path(bench, seed, name)
    if path.is_file():
        exp = prepare(config_with(config, checkpoint=str(path)), saved=False)
        return exp, load_checkpoint(path)[1].get("train_time_s")
    exp = prepare(config, saved=False)
    train_time = exp.original_row["train_time_s"]
    save_checkpoint(path, exp.original.state_dict(),
                    checkpoint_meta(config, exp.train, role="original", train_time_s=train_time))
    return exp, train_time


def experiment_after(exp: Experiment, train, request, original: torch.nn.Module | None) -> Experiment:
    """The Experiment of applying ``request`` to a model ``original`` trained on ``train``.

    Same config, split and validation/test data as ``exp``; D_r = ``train`` minus the request,
    with the loaders rebuilt on it as :func:`~recbole_unlearn.quick_start.prepare` builds them.
    Used for sequential requests (``train`` = the previous D_r, ``original`` = the previous
    Θ_u) and for requests of another size on the same Θ_a.
    """
    remaining = remaining_dataset(train, request)
    return dataclasses.replace(exp, train=train, request=request, original=original, original_row={},
                               remaining=remaining, loaders=RemainingLoaders(exp.config, remaining, exp.valid, exp.test))


def save_model(path: Path, model: torch.nn.Module, config, dataset, **meta) -> None:
    """Cache a model (plain state_dict) with JSON-able ``meta``."""
    save_checkpoint(path, model.state_dict(), checkpoint_meta(config, dataset, **meta))


def load_model(path: Path, config, dataset) -> tuple[torch.nn.Module | None, dict]:
    """A cached model of ``config``'s model class trained on ``dataset``, and its metadata;
    (None, {}) when the file is missing or holds another kind of model."""
    if not Path(path).is_file():
        return None, {}
    state, meta = load_checkpoint(path)
    model = config.model_class(config, dataset)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        return None, {}
    return model.eval(), meta


def cached_retrain(bench: Bench, config: Config, exp: Experiment, seed: int,
                   run_config: Config | None = None, name: str = "Retrain") -> tuple[torch.nn.Module, dict]:
    """Retrain of ``exp``'s request and its metadata (``time_s``, ``info``): from the cache the
    tables suite writes, else run now (with ``run_config``, default ``config``) and cached there
    (under ``name``: another retrain, e.g. ``Retrain*``, has a file of its own)."""
    path = bench.cache_path(seed, name)
    retrain, meta = load_model(path, config, exp.remaining)
    if retrain is None:
        outcome = run_unlearner(exp, Retrain, run_config or config)
        retrain, meta = outcome.model, {"time_s": outcome.time_s, "info": outcome.info}
        save_model(path, retrain, config, exp.remaining, role="retrain", **meta)
    return retrain, meta


def headline(model, setup, reference) -> dict:
    """The forgetting and accuracy figures a row is judged by (``evaluate_row`` on ``setup``,
    RBO against ``reference``): re-predict, MIA AUC, RBO@10, Recall@20 of all and of the
    forgetting users."""
    r = evaluate_row(model, setup, reference)
    return {"re-predict": r["repredict_score"], "MIA AUC": r["mia_auc"], "RBO@10": r["rbo"]["rbo@10"],
            "Recall@20": r["test"]["recall@20"], "F-Recall@20": r["test_forget_users"]["recall@20"]}


def script_keys(argv: list[str], defaults: dict) -> tuple[dict, dict]:
    """A script's ``--key=value`` arguments: its own keys (``defaults``, updated) and every
    other key, for the Config of its runs."""
    keys, overrides = dict(defaults), {}
    for arg in argv:
        if not (arg.startswith("--") and "=" in arg):
            raise UnlearnInputError(f"arguments are --key=value, got {arg!r}")
        k, v = arg[2:].split("=", 1)
        (keys if k in defaults else overrides)[k] = v
    return keys, overrides


# ---- aggregation over seeds ------------------------------------------------------------------
def flatten(row: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a results row as dotted keys (``test.recall@20``, ``rbo.rbo@10``, ...)."""
    out = {}
    for k, v in row.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v):
            out[f"{prefix}{k}"] = float(v)
    return out


def mean_std(values: list[float]) -> dict:
    """``{"mean", "std", "n"}``: std is the sample standard deviation (ddof=1), None for n < 2."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None, "n": len(arr)}


def aggregate(per_seed: list[dict]) -> dict[str, dict]:
    """``{metric: mean_std}`` over the per-seed rows (each flattened); a metric absent in some
    seeds is aggregated over the seeds that have it."""
    values: dict[str, list[float]] = {}
    for row in per_seed:
        for k, v in flatten(row).items():
            values.setdefault(k, []).append(v)
    return {k: mean_std(v) for k, v in values.items()}


def fmt(stat: dict | None, digits: int = 4, suffix: str = "") -> str:
    """``mean ± std`` (``mean`` alone for one seed, ``–`` when missing)."""
    if not stat:
        return "–"
    text = f"{stat['mean']:.{digits}f}{suffix}"
    return text if stat.get("std") is None else f"{text} ± {stat['std']:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
