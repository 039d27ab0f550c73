"""Process groups: one request with 1 and N processes (torch.distributed, gloo), time and per-rank memory.

Per seed, Θ_a is trained once (cached, in this process); then for every unlearner and every N
of ``--nprocs`` a group of N processes is started (:func:`recbole_unlearn.distributed.spawn`,
one torch thread each).  Every process loads the cached Θ_a and the split, the group applies
the run's request (``forget_users`` users, private) ``--repeats`` times, each from Θ_a, and each
rank reports its peak RSS and the method's info (AltEraser: ``cache_bytes``, the item-block
cache this rank holds); the time is the median of rank 0's ``time_s`` (the wall time of the
whole group) over the repeats, all of which are kept.  Rank 0's unlearned parameters are
compared with the 1-process run's: the largest absolute difference, and whether they are equal
tensor for tensor.  The speed-up is against the 1-process run of the same command.
"""
from __future__ import annotations

import json
import resource
import statistics
import socket
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    Bench, Variant, errors_text, finished, machine, markdown_table, now, parse_unlearners, prepare_cached,
    experiment_folders, progress, write_error,
)
from recbole_unlearn import distributed
from recbole_unlearn.checkpoint import write_json
from recbole_unlearn.errors import UnlearnInputError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_group(bench: Bench, variants: list[Variant], seeds: list[int], nprocs: list[int], threads: int,
              command: str | None = None, repeats: int = 1) -> None:
    """Run every missing (seed, unlearner, N); one JSON each (N = 1 first: the others compare with it)."""
    nprocs = sorted(set([1] + list(nprocs)))
    bench.write_experiment(command, unlearners=[v.name for v in variants], nprocs=nprocs)
    bar = progress(len(seeds) * len(variants) * len(nprocs), f"group {bench.key}")
    try:
        for seed in seeds:
            todo = [(v, n) for v in variants for n in nprocs if not finished(bench.result_path(seed, f"{v.name}-n{n}"))]
            bar.update(len(variants) * len(nprocs) - len(todo))
            if todo:
                prepare_cached(bench, bench.config("Retrain", seed), seed)  # Θ_a, trained once if missing
            for variant, n in todo:
                bar.set_postfix_str(f"seed {seed}: {variant.name}, {n} processes")
                _run_one(bench, seed, variant, n, threads, repeats)
                bar.update(1)
    finally:
        bar.close()


def _run_one(bench: Bench, seed: int, variant: Variant, n: int, threads: int, repeats: int) -> None:
    path = bench.result_path(seed, f"{variant.name}-n{n}")
    spec = {"bench": bench.spec(), "seed": seed, "row": variant.name, "threads": threads, "repeats": repeats}
    with tempfile.TemporaryDirectory() as folder:
        try:
            distributed.spawn(_member, n, (spec, folder), port=_free_port())
        except Exception as e:  # a failed member: recorded, the other runs go on
            write_error(path, bench, seed, variant.name, RuntimeError(f"{n} processes: {e}"))
            return
        ranks = [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(n)]
        if "error" in ranks[0]:
            write_error(path, bench, seed, variant.name, UnlearnInputError(ranks[0]["error"]))
            return
        state = torch.load(Path(folder) / "model.pt", weights_only=True)
    reference = bench.cache_path(seed, f"{variant.name}-n1")
    if n == 1:
        reference.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, reference)
    single = torch.load(reference, weights_only=True) if reference.is_file() else None
    diff = None if single is None else max(float((state[k].float() - single[k].float()).abs().max()) if state[k].numel() else 0.0
                                           for k in single)
    exact = None if single is None else all(torch.equal(state[k], single[k]) for k in single)
    write_json(path, {
        "dataset": bench.dataset, "model": bench.model, "seed": seed, "row": variant.name, "nproc": n,
        "forget": ranks[0]["forget"], "time_s": statistics.median(ranks[0]["times"]), "times": ranks[0]["times"],
        "info": ranks[0]["info"],
        "ranks": [{"peak_rss_mb": r["peak_rss_mb"], "cache_bytes": r["info"].get("cache_bytes"),
                   "time_s": statistics.median(r["times"])} for r in ranks],
        "max_abs_diff_vs_1": diff, "equal_to_1": exact,
        "date": now(), "machine": machine(), "overrides": bench.overrides,
    })


def _member(spec: dict, folder: str) -> None:
    """One process of the group: join it, load Θ_a, apply the request, report."""
    from recbole_unlearn.quick_start import run_unlearner

    torch.set_num_threads(int(spec["threads"]))
    distributed.setup({"backend": "gloo"})
    bench = Bench(**spec["bench"])
    seed = spec["seed"]
    out = Path(folder) / f"rank{distributed.rank()}.json"
    exp, _ = prepare_cached(bench, bench.config("Retrain", seed), seed)
    variant = parse_unlearners(spec["row"])[0]
    times = []
    for _ in range(int(spec["repeats"])):
        distributed.barrier()
        try:
            outcome = run_unlearner(exp, variant.cls, variant.config(bench, seed))
        except UnlearnInputError as e:
            out.write_text(json.dumps({"error": str(e)}))
            return
        times.append(outcome.time_s)
    if distributed.is_main():
        torch.save({k: v.detach().cpu() for k, v in outcome.model.state_dict().items()}, Path(folder) / "model.pt")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out.write_text(json.dumps({"times": times, "info": outcome.info, "peak_rss_mb": peak,
                               "forget": exp.request.summary()}, default=str))


def group_section(result_root: Path) -> str:
    """The markdown of every process-group experiment under ``result_root`` (results/group)."""
    parts = []
    for _, records, errors, title in experiment_folders(result_root):
        parts.append(title)
        single = {(r["seed"], r["row"]): r for r in records if r["nproc"] == 1}
        table = []
        for r in sorted(records, key=lambda r: (r["seed"], r["row"], r["nproc"])):
            one = single.get((r["seed"], r["row"]))
            cache = [x["cache_bytes"] for x in r["ranks"]]
            one_cache = one["ranks"][0]["cache_bytes"] if one else None
            share = (f"{max(cache) / one_cache:.2f}" if one_cache and all(c is not None for c in cache) else "–")
            table.append([
                str(r["seed"]), r["row"], str(r["nproc"]), f"{r['time_s']:.3f}",
                "–" if r["info"].get("pretrain_time_s") is None else f"{r['info']['pretrain_time_s']:.1f}",
                f"{one['time_s'] / r['time_s']:.2f}×" if one else "–",
                " / ".join(f"{x['peak_rss_mb']:.0f}" for x in r["ranks"]),
                " / ".join("–" if c is None else f"{c / 2**20:.1f}" for c in cache), share,
                "–" if r["max_abs_diff_vs_1"] is None else ("equal" if r["equal_to_1"] else f"{r['max_abs_diff_vs_1']:.1e}"),
            ])
        parts.append(markdown_table(["seed", "row", "processes", "time_s (rank 0, median)", "preparation (s)", "speed-up vs 1 process",
                                     "peak RSS per rank (MiB)", "item cache per rank (MiB)", "largest cache share vs 1",
                                     "parameters vs 1 process"], table))
        if errors:
            parts.append(errors_text(errors))
    return "\n\n".join(parts)
