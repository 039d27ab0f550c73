"""Scaling: unlearning time vs request size and vs dataset size.

Per dataset and seed, Θ_a is trained once; for every size s (default 1 … 512 users) a
``private`` request of s random users (each forgetting ⌊n⁺ᵤ/2⌋ of their interactions, drawn with
:func:`recbole_unlearn.data.forget.private_request`, rng seeded by (seed, s)) is applied to Θ_a
by every unlearner (:func:`benchmarks.common.experiment_after` + ``run_unlearner``), and its
time is recorded.  The dataset-size view takes the time at :data:`REFERENCE_SIZE` users on
each dataset.  Accuracy is not evaluated here (the tables do that).
"""
from __future__ import annotations

import numpy as np

from benchmarks.common import (
    Bench, Variant, errors_text, experiment_after, finished, fmt, machine, markdown_table, mean_std, now, prepare_cached,
    progress, read_json, run_records, write_error,
)
from recbole_unlearn.checkpoint import write_json
from recbole_unlearn.data.forget import ForgetRequest, private_request, validate_request
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import run_unlearner

DEFAULT_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: the datasets of the dataset-size view (folders under ``data_path``; ml-100k ships with RecBole)
SCALING_DATASETS = ("ml-100k", "ml-1m", "gowalla-lightgcn")
REFERENCE_SIZE = 64


def sized_request(train, n_users: int, seed: int) -> ForgetRequest:
    """A ``private`` request of ``n_users`` random users of ``train`` (fewer if it has fewer)."""
    return validate_request(private_request(train, n_users, np.random.default_rng([seed, n_users])), train)


def unit_name(unlearner: str, size: int) -> str:
    return f"{unlearner}-u{size:04d}"


def run_scaling(bench: Bench, variants: list[Variant], seeds: list[int], sizes: list[int],
                command: str | None = None) -> None:
    """Time every unlearner at every request size on ``bench``'s dataset; one JSON per
    (seed, unlearner, size)."""
    bench.write_experiment(command, unlearners=[v.name for v in variants], sizes=list(sizes))
    bar = progress(len(seeds) * len(sizes) * len(variants), f"scaling {bench.key}")
    try:
        for seed in seeds:
            todo = [(v, s) for s in sizes for v in variants
                    if not finished(bench.result_path(seed, unit_name(v.name, s)))]
            bar.update(len(sizes) * len(variants) - len(todo))
            if not todo:
                continue
            base = bench.config("Retrain", seed)
            exp, _ = prepare_cached(bench, base, seed)
            for size in sizes:
                mine = [v for v, s in todo if s == size]
                if not mine:
                    continue
                step = experiment_after(exp, exp.train, sized_request(exp.train, size, seed), exp.original)
                for variant in mine:
                    bar.set_postfix_str(f"seed {seed}: {variant.name}, {size} users")
                    path = bench.result_path(seed, unit_name(variant.name, size))
                    try:
                        outcome = run_unlearner(step, variant.cls, variant.config(bench, seed))
                    except UnlearnInputError as e:
                        write_error(path, bench, seed, variant.name, e)
                        bar.update(1)
                        continue
                    write_json(path, {
                        "dataset": bench.dataset, "model": bench.model, "seed": seed, "row": variant.name,
                        "size": size, "forget": step.request.summary(),
                        "train": {"users": int(exp.train.user_num - 1), "items": int(exp.train.item_num - 1),
                                  "interactions": int(exp.train.inter_num)},
                        "time_s": outcome.time_s, "pretrain_time_s": outcome.info.get("pretrain_time_s"),
                        "info": outcome.info,
                        "date": now(), "machine": machine(), "overrides": bench.overrides,
                    })
                    bar.update(1)
    finally:
        bar.close()


def summarize(result_dir) -> dict:
    """``{"dataset", "train", "seeds", "rows": {unlearner: {size: {mean, std, n}}}, "speedup": ...}``
    (speed-up = Retrain's time / the row's at the same size and seed, when Retrain was run)."""
    records, errors = run_records(result_dir)
    exp = read_json(result_dir / "experiment.json") or {}
    rank = {n: i for i, n in enumerate(exp.get("unlearners") or [])}
    times: dict[str, dict[int, list[float]]] = {}
    retrain = {(r["seed"], r["size"]): r["time_s"] for r in records if r["row"] == "Retrain"}
    speed: dict[str, dict[int, list[float]]] = {}
    for r in records:
        times.setdefault(r["row"], {}).setdefault(r["size"], []).append(r["time_s"])
        if (r["seed"], r["size"]) in retrain and r["time_s"]:
            speed.setdefault(r["row"], {}).setdefault(r["size"], []).append(retrain[(r["seed"], r["size"])] / r["time_s"])
    order = sorted(times, key=lambda n: (rank.get(n, len(rank)), n))
    stat = lambda d: {n: {s: mean_std(v) for s, v in sorted(d[n].items())} for n in order if n in d}  # noqa: E731
    return {"dataset": exp.get("dataset"), "model": exp.get("model"), "train": records[0]["train"] if records else None,
            "seeds": sorted({r["seed"] for r in records}), "rows": stat(times), "speedup": stat(speed),
            "errors": errors}


def markdown_tables(summaries: list[dict]) -> str:
    """Time vs request size per dataset, then time at :data:`REFERENCE_SIZE` users vs dataset size."""
    out = []
    for s in summaries:
        sizes = sorted({size for row in s["rows"].values() for size in row})
        out += [f"**{s['dataset']}** ({s['model']}; {s['train']['interactions']:,} training interactions): "
                "unlearning time (s) vs request size (users); speed-up vs Retrain in brackets", ""]
        out.append(markdown_table(["unlearner"] + [str(x) for x in sizes],
                                  [[n] + [_cell(s, n, x) for x in sizes] for n in s["rows"]])
                   + errors_text(s.get("errors", {})))
        out.append("")
    names = list(dict.fromkeys(n for s in summaries for n in s["rows"]))
    ordered = sorted(summaries, key=lambda s: s["train"]["interactions"])
    ref = reference_size(summaries)
    out += [f"**Time (s) at {ref} users vs dataset size** (training interactions in brackets)", ""]
    out.append(markdown_table(
        ["unlearner"] + [f"{s['dataset']} ({s['train']['interactions']:,})" for s in ordered],
        [[n] + [_cell(s, n, ref) for s in ordered] for n in names],
    ))
    return "\n".join(out)


def _cell(summary: dict, name: str, size: int) -> str:
    """``time ± std`` with the mean speed-up vs Retrain in brackets when Retrain was run."""
    text = fmt(summary["rows"].get(name, {}).get(size), 2)
    speed = summary["speedup"].get(name, {}).get(size)
    return text if not speed or name == "Retrain" else f"{text} ({speed['mean']:.1f}×)"


def reference_size(summaries: list[dict]) -> int | None:
    """:data:`REFERENCE_SIZE` if every dataset has it, else the size run on every dataset
    closest to it (None if there is none)."""
    common = set.intersection(*[{x for row in s["rows"].values() for x in row} for s in summaries]) if summaries else set()
    return min(common, key=lambda x: (abs(x - REFERENCE_SIZE), x)) if common else None
