"""Memory: peak resident memory and time of one request on a large dataset, each row in its own process.

Per seed, one child process trains Θ_a under the run's epoch cap (or loads it from the cache)
and reports its peak RSS; then every unlearner runs in a fresh child process that loads the
cached Θ_a and the split, applies one ``private`` request of ``--request_users`` random users
(as the scaling suite draws it) and reports its peak RSS, the RSS it had before the method
started (data, Θ_a and the process itself), the request's ``time_s`` and the size of every
persistent state it keeps (the method state carried to the next request).  With ``--repeats``
R > 1 a method's process applies the same request R times, each from Θ_a (its preparation
redone, untimed), and the median is reported beside the first: the first pays a fresh
process's one-off costs (first touches of memory, library start-up), the others are what a
long-lived process pays.  Retrain runs once, as a row, so every speed-up is against a Retrain
of the same run.  The RSS is the kernel's high-water mark
(``getrusage``), so a row's figure is the largest the process ever was.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from time import perf_counter

import numpy as np
import torch

from benchmarks.common import (
    REPO_ROOT, Bench, Variant, errors_text, experiment_after, finished, machine, markdown_table, now,
    experiment_folders, original_path, parse_unlearners, prepare_cached, progress, write_error,
)
from benchmarks.scaling import sized_request
from recbole_unlearn.checkpoint import write_json
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.unlearner.retrain import Retrain

ORIGINAL = "Original"


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_memory(bench: Bench, variants: list[Variant], seeds: list[int], size: int, threads: int,
               command: str | None = None, repeats: int = 1) -> None:
    """Run every missing (seed, row) in a child process; Retrain is always one of the rows."""
    names = [v.name for v in variants]
    rows = ([] if Retrain.__name__ in names else [Retrain.__name__]) + names
    bench.write_experiment(command, unlearners=rows, request_users=size)
    bar = progress(len(seeds) * (len(rows) + 1), f"memory {bench.key}")
    try:
        for seed in seeds:
            for row in [ORIGINAL] + rows:
                path = bench.result_path(seed, row)
                if not finished(path):
                    bar.set_postfix_str(f"seed {seed}: {row}")
                    _spawn(bench, seed, row, size, threads, path, repeats)
                bar.update(1)
    finally:
        bar.close()


def _spawn(bench: Bench, seed: int, row: str, size: int, threads: int, path: Path, repeats: int) -> None:
    spec = {"bench": bench.spec(), "seed": seed, "row": row, "size": size, "threads": threads, "path": str(path),
            "repeats": repeats}
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", json.dumps(spec)], cwd=REPO_ROOT)
    if done.returncode != 0 and not path.is_file():
        write_error(path, bench, seed, row, RuntimeError(f"the child process exited with {done.returncode}"))


def _child(spec: dict) -> None:
    torch.set_num_threads(int(spec["threads"]))
    bench = Bench(**spec["bench"])
    seed, row, path = spec["seed"], spec["row"], Path(spec["path"])
    start = perf_counter()
    cached = original_path(bench, seed).is_file()
    exp, train_time = prepare_cached(bench, bench.config("Retrain", seed), seed)
    record = {"dataset": bench.dataset, "model": bench.model, "seed": seed, "row": row,
              "train": {"users": int(exp.train.user_num - 1), "items": int(exp.train.item_num - 1),
                        "interactions": int(exp.train.inter_num)},
              "date": now(), "machine": machine(), "overrides": bench.overrides}
    if row == ORIGINAL:
        write_json(path, {**record, "peak_rss_mb": peak_rss_mb(), "train_time_s": train_time, "trained_here": not cached,
                          "stage_time_s": perf_counter() - start, "epochs": exp.original_row.get("epochs")})
        return
    from recbole_unlearn.quick_start import run_unlearner
    variant = parse_unlearners(row)[0]
    step = experiment_after(exp, exp.train, sized_request(exp.train, spec["size"], seed), exp.original)
    before = peak_rss_mb()
    times = []
    for _ in range(1 if variant.cls is Retrain else int(spec.get("repeats", 1))):
        try:
            outcome = run_unlearner(step, variant.cls, variant.config(bench, seed))
        except UnlearnInputError as e:
            write_error(path, bench, seed, row, e)
            return
        times.append(outcome.time_s)
    state = {k: int(v.numel() * v.element_size()) for k, v in (outcome.state or {}).items()}
    write_json(path, {**record, "size": spec["size"], "forget": step.request.summary(),
                      "peak_rss_mb": peak_rss_mb(), "loaded_rss_mb": before, "time_s": times[0], "times": times,
                      "pretrain_time_s": outcome.info.get("pretrain_time_s"),
                      "prepare_time_s": outcome.info.get("prepare_time_s"), "state_bytes": state,
                      "info": outcome.info})


def memory_section(result_root: Path) -> str:
    """The markdown of every memory experiment under ``result_root`` (results/memory)."""
    parts = []
    for _, records, errors, title in experiment_folders(result_root):
        by_seed: dict[int, dict[str, dict]] = {}
        for r in records:
            by_seed.setdefault(r["seed"], {})[r["row"]] = r
        parts.append(title)
        table = []
        for seed, rows in sorted(by_seed.items()):
            retrain = rows.get(Retrain.__name__, {}).get("time_s")
            order = sorted(rows, key=lambda n: (n != ORIGINAL, n != Retrain.__name__, n))
            for name in order:
                r = rows[name]
                if name == ORIGINAL:
                    trained = r.get("trained_here", True)
                    label = f"{name} ({r.get('epochs')} epochs)" if trained else f"{name} (loaded from the cache)"
                    table.append([str(seed), label, f"{r['peak_rss_mb']:.0f}" if trained else "–", "–",
                                  f"{r['train_time_s']:.1f} (training)" if r.get("train_time_s") else "–", "–",
                                  "–", "–", "–", "–"])
                    continue
                state = sum(r.get("state_bytes", {}).values())
                times = r.get("times") or [r["time_s"]]
                median = float(np.median(times)) if len(times) > 1 else None
                prep = r.get("prepare_time_s")
                table.append([str(seed), name, f"{r['peak_rss_mb']:.0f}", f"{r['loaded_rss_mb']:.0f}",
                              f"{r['time_s']:.3f}", _ratio(retrain, r["time_s"]),
                              "–" if median is None else f"{median:.3f} ({len(times)})", _ratio(retrain, median),
                              "–" if prep is None else f"{prep:.1f}", f"{state / 2**20:.1f}" if state else "0"])
        parts.append(markdown_table(["seed", "row", "peak RSS (MiB)", "RSS before the method (MiB)", "time_s",
                                     "speed-up vs Retrain", "time_s, median of repeats (n)", "its speed-up",
                                     "preparation (s)", "persistent state (MiB)"], table))
        if errors:
            parts.append(errors_text(errors))
    return "\n\n".join(parts)


def _ratio(retrain: float | None, time_s: float | None) -> str:
    return f"{retrain / time_s:.0f}×" if retrain and time_s else "–"


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))

