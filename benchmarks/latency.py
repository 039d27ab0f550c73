"""Latency: single-user ``private`` requests applied one after another in one session.

Per seed, Θ_a is trained once (cached) and every unlearner opens an
:class:`~recbole_unlearn.session.UnlearnSession` on it with ``evaluate: False`` (a platform's
request: the model, its method state and its ledger are updated; nothing is evaluated) and
applies ``--requests`` requests of one random user each (forgetting ⌊n⁺ᵤ/2⌋ of that user's
remaining interactions), each drawn on the data the previous ones left.  Each request's wall
time is everything ``session.forget`` does: building the request and D_r, the method (and the
D_r loaders, if the method trains), its state update and the ledger.  The first request also loads Θ_a and pays the
method's preparation; it is reported apart as well.  After the last request the session's
model and a Retrain on the final D_r (D_a minus every forgotten pair) are evaluated on the same
loaders: Recall@20 of all users and the MIA AUC of all forgotten pairs.
"""
from __future__ import annotations

from time import perf_counter

import numpy as np

from benchmarks.common import (
    Bench, Variant, errors_text, experiment_after, finished, fmt, machine, markdown_table, now,
    original_path, prepare_cached, progress, run_records, write_error,
)
from benchmarks.sequential import union
from recbole_unlearn.checkpoint import write_json
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.report import evaluate_row, forget_user_topk, make_eval_setup
from recbole_unlearn.session import UnlearnSession
from recbole_unlearn.unlearner.retrain import Retrain


def _stats(times: list[float]) -> dict:
    t = np.asarray(times)
    return {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95)), "max": float(t.max()),
            "mean": float(t.mean()), "first": float(t[0]), "n": len(t),
            "per_minute": float(60.0 * len(t) / t.sum()) if t.sum() > 0 else None}


def run_latency(bench: Bench, variants: list[Variant], seeds: list[int], n_requests: int,
                command: str | None = None) -> None:
    """Run every missing (seed, unlearner) and write one JSON each."""
    rows = [v for v in variants if v.name != Retrain.__name__]
    bench.write_experiment(command, unlearners=[v.name for v in rows], requests=n_requests)
    bar = progress(len(seeds) * len(rows), f"latency {bench.key}")
    try:
        for seed in seeds:
            todo = [v for v in rows if not finished(bench.result_path(seed, v.name))]
            bar.update(len(rows) - len(todo))
            if todo:
                _run_seed(bench, seed, todo, n_requests, bar)
    finally:
        bar.close()


def _run_seed(bench: Bench, seed: int, variants: list[Variant], n_requests: int, bar) -> None:
    base = bench.config("Retrain", seed, forget_users=1)
    exp, _ = prepare_cached(bench, base, seed)
    original = original_path(bench, seed)
    for variant in variants:
        bar.set_postfix_str(f"seed {seed}: {variant.name}")
        cfg = variant.config(bench, seed, checkpoint=str(original), evaluate=False, forget_users=1)
        try:
            record = _session_run(bench, seed, variant, cfg, base, exp, n_requests)
        except UnlearnInputError as e:
            write_error(bench.result_path(seed, variant.name), bench, seed, variant.name, e)
        else:
            write_json(bench.result_path(seed, variant.name), record)
        bar.update(1)


def _session_run(bench, seed, variant, cfg, base, exp, n_requests) -> dict:
    session = UnlearnSession(cfg, saved=False)
    wall, method = [], []
    for k in range(n_requests):
        start = perf_counter()
        results = session.forget(forget_seed=seed * 100_003 + k)
        wall.append(perf_counter() - start)
        method.append(results["rows"][variant.name]["time_s"])
    final = experiment_after(exp, exp.train, union(session.applied), exp.original)
    start = perf_counter()
    retrain = run_unlearner(final, Retrain, base)
    setup = make_eval_setup(base, final.remaining, exp.valid, final.test_r, final.request)
    reference = forget_user_topk(retrain.model, setup)
    quality = {"Retrain": {"time_s": perf_counter() - start, **evaluate_row(retrain.model, setup, reference)},
               variant.name: evaluate_row(session.chain.original, setup, reference)}
    return {"dataset": bench.dataset, "model": bench.model, "seed": seed, "row": variant.name, "requests": n_requests,
            "forgotten": int(len(final.request)), "date": now(), "machine": machine(), "overrides": bench.overrides,
            "wall_s": wall, "method_s": method, "latency": _stats(wall), "method_latency": _stats(method),
            "quality": quality}


def summarize(result_dir) -> dict:
    return {"records": sorted(run_records(result_dir)[0], key=lambda r: (r["row"], r["seed"])),
            "errors": run_records(result_dir)[1]}


def markdown_tables(summary: dict) -> str:
    """Latency per request and the quality after the last one, per unlearner and seed."""
    ms = lambda v: fmt({"mean": 1000 * v, "std": None}, 1)  # noqa: E731
    body = []
    for r in summary["records"]:
        lat, met, q = r["latency"], r["method_latency"], r["quality"]
        mine, ret = q[r["row"]], q["Retrain"]
        body.append([r["row"], str(r["seed"]), str(r["requests"]), ms(lat["p50"]), ms(lat["p95"]), ms(lat["max"]),
                     ms(lat["first"]), f"{lat['per_minute']:.0f}", ms(met["p50"]),
                     f"{mine['test']['recall@20']:.4f} / {ret['test']['recall@20']:.4f}",
                     f"{fmt({'mean': mine['mia_auc'], 'std': None})} / {fmt({'mean': ret['mia_auc'], 'std': None})}",
                     f"{ret['time_s']:.1f}"])
    head = ["unlearner", "seed", "requests", "p50 (ms)", "p95 (ms)", "max (ms)", "first (ms)", "requests/min",
            "method p50 (ms)", "Recall@20 (row / Retrain)", "MIA AUC (row / Retrain)", "Retrain (s)"]
    return markdown_table(head, body) + errors_text(summary.get("errors", {}))


__all__ = ["run_latency", "summarize", "markdown_tables"]
