"""The papers' Table 3–5 layout over seeds: consistency, completeness, accuracy, efficiency.

Per seed: one split and request, Θ_a trained once (:func:`recbole_unlearn.quick_start.prepare`),
then Retrain, Retrain* (:func:`~recbole_unlearn.quick_start.comparison_plan`) and every
unlearner (:func:`~recbole_unlearn.quick_start.run_unlearner`) on that same Experiment, each
row evaluated on the same loaders with :func:`recbole_unlearn.report.evaluate_row` (RBO
against Retrain's top-k).  Each finished row is one JSON file; a resumed run skips them and
loads Θ_a and Retrain from the cache.  Speed-ups are computed per seed (Retrain's time in that
seed / the row's) and then averaged.
"""
from __future__ import annotations

import dataclasses

from benchmarks.common import (
    Bench, Variant, aggregate, cached_retrain, errors_text, finished, flatten, fmt, machine, markdown_table, now,
    prepare_cached,
    progress, read_json, run_records, write_error,
)
from recbole_unlearn.checkpoint import write_json
from recbole_unlearn.config import config_with
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import comparison_plan, run_unlearner
from recbole_unlearn.report import RBO_KS, evaluate_row, forget_user_topk, make_eval_setup, speedups
from recbole_unlearn.unlearner.retrain import Retrain

FIXED_ROWS = ("Original", "Retrain", "Retrain*")


def extra_rows(variants: list[Variant]) -> list[Variant]:
    """The rows after Original, Retrain and Retrain* (plain Retrain is one of those)."""
    return [v for v in variants if v.name != Retrain.__name__]


#: the name under which a Retrain* of the old definition (another seed for everything) is shown
OLD_RETRAIN_STAR = "Retrain (new init)"


def _stale_record(record: dict) -> bool:
    return record.get("row") == "Retrain*" and (record.get("params") or {}).get("retrain_train_seed") is None


def stale(path) -> bool:
    """A Retrain* run recorded before Retrain* kept Retrain's initialisation (its params have
    no ``retrain_train_seed``): it is run again (and shown as ``Retrain (new init)``)."""
    return _stale_record(read_json(path) or {})


def row_names(variants: list[Variant]) -> list[str]:
    """Original, Retrain, Retrain*, then the unlearners in the order given (Retrain once)."""
    return list(FIXED_ROWS) + [v.name for v in extra_rows(variants)]


def run_tables(bench: Bench, variants: list[Variant], seeds: list[int], command: str | None = None) -> None:
    """Run every missing (seed, row) of ``bench`` and write one JSON per row."""
    names = row_names(variants)
    bench.write_experiment(command, unlearners=[v.name for v in variants])
    bar = progress(len(seeds) * len(names), f"tables {bench.key}")
    try:
        for seed in seeds:
            todo = [n for n in names if not finished(bench.result_path(seed, n)) or stale(bench.result_path(seed, n))]
            bar.update(len(names) - len(todo))
            if todo:
                _run_seed(bench, seed, variants, todo, bar)
    finally:
        bar.close()


def _run_seed(bench: Bench, seed: int, variants: list[Variant], todo: list[str], bar) -> None:
    base = bench.config("Retrain", seed)
    bar.set_postfix_str(f"seed {seed}: Original")
    exp, train_time = prepare_cached(bench, base, seed)
    setup = make_eval_setup(base, exp.remaining, exp.valid, exp.test_r, exp.request)
    exp.loaders.valid  # noqa: B018  (shared by every row, built before any of them)
    plan = comparison_plan(config_with(base, compare="retrain"), Retrain)  # Retrain, Retrain*
    plan += [(v.name, v.cls, v.config(bench, seed)) for v in extra_rows(variants)]

    # Retrain first: its top-k lists are every row's RBO reference.
    bar.set_postfix_str(f"seed {seed}: Retrain")
    retrain, meta = cached_retrain(bench, base, exp, seed, run_config=plan[0][2])
    reference = forget_user_topk(retrain, setup) if len(setup.forget_users) else None

    for name in [n for n in ["Original"] + [p[0] for p in plan] if n in todo]:
        bar.set_postfix_str(f"seed {seed}: {name}")
        params = None
        if name == "Original":
            model, row = exp.original, {"train_time_s": train_time}
        elif name == "Retrain":
            model, row = retrain, {"time_s": meta["time_s"], **meta["info"]}
        else:
            _, cls, cfg = next(p for p in plan if p[0] == name)
            try:
                outcome = run_unlearner(exp, cls, cfg)
            except UnlearnInputError as e:  # e.g. a model the method does not support
                write_error(bench.result_path(seed, name), bench, seed, name, e)
                bar.update(1)
                continue
            model, row = outcome.model, {"time_s": outcome.time_s, **outcome.info}
            params = dataclasses.asdict(cls.params_class.from_config(cfg))
        row.update(evaluate_row(model, setup, reference))
        record = {
            "dataset": bench.dataset, "model": bench.model, "scenario": bench.scenario, "seed": seed,
            "row": name, "params": params, "forget": exp.request.summary(), "date": now(),
            "machine": machine(), "overrides": bench.overrides, "result": row,
        }
        write_json(bench.result_path(seed, name), record)
        bar.update(1)


# ---- aggregation and tables --------------------------------------------------------------------
def load_results(result_dir) -> dict[int, dict[str, dict]]:
    """``{seed: {row: result}}`` of the finished runs in ``result_dir``; each result gains
    ``speedup`` (Retrain's time in that seed / its own)."""
    per_seed: dict[int, dict[str, dict]] = {}
    for rec in run_records(result_dir)[0]:
        # a Retrain* recorded before it kept Retrain's initialisation is what it was: a retrain
        # with another seed for everything
        row = OLD_RETRAIN_STAR if _stale_record(rec) else rec["row"]
        per_seed.setdefault(rec["seed"], {})[row] = dict(rec["result"])
    for rows in per_seed.values():
        retrain_time = rows.get("Retrain", {}).get("time_s")
        for row in rows.values():
            if any(row.get(k) is not None for k in PREPARE_KEYS):
                row["prepare_time_s"] = _prepare_time(row)
            if retrain_time and row.get("time_s"):
                row.update(speedups(retrain_time, row["time_s"], _prepare_time(row)))
    return per_seed


#: where a row's preparation cost is recorded, newest first (older runs lack ``prepare_time_s``)
PREPARE_KEYS = ("prepare_time_s", "pretrain_time_s", "encoder_pretrain_time_s", "shards_build_time_s")


def _prepare_time(row: dict) -> float:
    """What the row's preparation cost, wherever it was paid (runs recorded before
    ``prepare_time_s`` existed: the pretraining, or the reused encoder's or shards' build)."""
    for key in PREPARE_KEYS:
        if row.get(key) is not None and (key != "pretrain_time_s" or not row.get("shards_reused")):
            return float(row[key])
    return 0.0


def summarize(result_dir) -> dict:
    """``{"seeds": [...], "rows": {row: {metric: {mean, std, n}}}}`` over the seeds on disk.

    Row order: Original, Retrain, Retrain*, the unlearners of ``experiment.json``, then any other.
    """
    per_seed = load_results(result_dir)
    listed = (read_json(result_dir / "experiment.json") or {}).get("unlearners", [])
    rank = {n: i for i, n in enumerate(dict.fromkeys(list(FIXED_ROWS) + [OLD_RETRAIN_STAR] + listed))}
    found = {name for rows in per_seed.values() for name in rows}
    order = sorted(found, key=lambda n: (rank.get(n, len(rank)), n))
    rows = {name: aggregate([r[name] for r in per_seed.values() if name in r]) for name in order}
    return {"seeds": sorted(per_seed), "rows": rows, "paired": paired_differences(per_seed, order),
            "errors": run_records(result_dir)[1]}


#: the metrics whose paired difference to Retrain is tabulated (RBO is measured against Retrain)
PAIRED = (("re-predict", "repredict_score"), ("MIA AUC", "mia_auc"),
          ("F-Recall@20", "test_forget_users.recall@20"), ("F-NDCG@20", "test_forget_users.ndcg@20"),
          ("Recall@20", "test.recall@20"), ("NDCG@20", "test.ndcg@20"))


def paired_differences(per_seed: dict[int, dict[str, dict]], order: list[str]) -> dict[str, dict]:
    """``{row: {metric: mean_std}}`` of row − Retrain within each seed, over the seeds that have
    both (a gap larger than its std over seeds is more than seed noise)."""
    out = {}
    for name in order:
        diffs = []
        for rows in per_seed.values():
            if name in rows and "Retrain" in rows and name != "Retrain":
                mine, base = flatten(rows[name]), flatten(rows["Retrain"])
                diffs.append({k: mine[k] - base[k] for _, k in PAIRED if k in mine and k in base})
        if diffs:
            out[name] = aggregate(diffs)
    return out


def markdown_tables(summary: dict, k_main: int = 20) -> str:
    """Consistency and completeness, accuracy (forgetting users / all users), efficiency."""
    rows = summary["rows"]
    out = ["**Consistency and completeness** (re-predict: mean predicted probability of the forgotten "
           "pairs; RBO of the forgetting users' top-k vs Retrain; MIA: membership-inference AUC, "
           "0.5 = as forgotten as never-seen pairs)", ""]
    header = ["row", "re-predict", *[f"RBO@{k}" for k in RBO_KS], "MIA AUC"]
    out.append(markdown_table(header, [
        [n, fmt(r.get("repredict_score")), *[fmt(r.get(f"rbo.rbo@{k}")) for k in RBO_KS], fmt(r.get("mia_auc"))]
        for n, r in rows.items()
    ]))
    metrics = [f"{m}@{k}" for m in ("recall", "ndcg") for k in RBO_KS]
    for title, prefix in (("forgetting users", "test_forget_users"), ("all users", "test")):
        out += ["", f"**Accuracy, {title}** (test split)", ""]
        head = ["row"] + [m.replace("recall", "Recall").replace("ndcg", "NDCG") for m in metrics]
        out.append(markdown_table(head, [[n] + [fmt(r.get(f"{prefix}.{m}")) for m in metrics] for n, r in rows.items()]))
    out += ["", "**Efficiency** (seconds; Original: training time of Θ_a; speed-up = Retrain's time / the row's, "
            "per seed; preparation: the method's request-independent work wherever it was paid, reused caches "
            "included; first request = Retrain's time / (time + preparation))", ""]
    out.append(markdown_table(["row", "time (s)", "speed-up", "preparation (s)", "first-request speed-up"], [
        [n, fmt(r.get("time_s") or r.get("train_time_s"), 2), fmt(r.get("speedup"), 1, "×"),
         fmt(r.get("prepare_time_s"), 2), fmt(r.get("first_request_speedup"), 1, "×")]
        for n, r in rows.items()
    ]))
    if any(r.get(f"fairness_gap.ndcg@{k_main}") for r in rows.values()):
        out += ["", f"**Fairness** (CURE4Rec's aspect: NDCG@{k_main} of the active users, the most active "
                "`fairness_active_share` of the test users by training interactions, and of the inactive rest; "
                "gap = active − inactive)", ""]
        out.append(markdown_table(["row", "active", "inactive", "gap"], [
            [n, fmt(r.get(f"test_active.ndcg@{k_main}")), fmt(r.get(f"test_inactive.ndcg@{k_main}")),
             fmt(r.get(f"fairness_gap.ndcg@{k_main}"))] for n, r in rows.items()
        ]))
    paired = {n: d for n, d in (summary.get("paired") or {}).items() if any((v or {}).get("n", 0) > 1 for v in d.values())}
    if paired:
        out += ["", "**Paired differences to Retrain** (row − Retrain within each seed, mean ± std over the "
                "seeds; F- = forgetting users, test split)", ""]
        out.append(markdown_table(["row"] + [label for label, _ in PAIRED], [
            [n] + [fmt(d.get(k)) for _, k in PAIRED] for n, d in paired.items()
        ]))
    return "\n".join(out) + errors_text(summary.get("errors", {}))
