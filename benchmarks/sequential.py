"""Sequential requests: N requests of K users each, every one applied to the previous result.

Per seed, Θ_a is trained once (:func:`~recbole_unlearn.quick_start.prepare` with a request of
N·K users, so in the ``noise`` scenario every request's false positives are in D_a), and the
request's users are split at random into R_1 … R_N.  Step t starts from the state after step
t−1: training data D_{t−1} = D_a minus R_1 ∪ … ∪ R_{t−1}, and the chain's previous model as the
"original" (:func:`benchmarks.common.experiment_after`); ``run_unlearner`` applies the method.
Retrain's chain retrains from scratch on the cumulative D_t at every step.  Each step is
evaluated on the same loaders for both, over every pair forgotten so far: accuracy drift
(row − Retrain), RBO vs Retrain, MIA AUC, and cumulative time (the method vs retraining at
every request).  A method's request-independent preparation is paid at the first step and its
state carried along the chain (AltEraser's cache, UnlearnRec's encoder, the shard ensembles),
as the command line does; the cumulative time counts every preparation (``prepare_time_s``)
and every update (inside ``time_s``).

Resume: every step's model is cached with its evaluated record; a chain's JSON is written when
all N steps are done.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from benchmarks.common import (
    Bench, Variant, aggregate, errors_text, experiment_after, finished, fmt, load_model, machine, markdown_table, now,
    prepare_cached, progress, read_json, run_records, save_model, write_error,
)
from recbole_unlearn.checkpoint import write_json
from recbole_unlearn.data import ForgetRequest
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.quick_start import run_unlearner
from recbole_unlearn.report import evaluate_row, forget_user_topk, make_eval_setup
from recbole_unlearn.unlearner.retrain import Retrain

#: metrics whose difference to Retrain is the drift
DRIFT_KEYS = ("test.recall@20", "test.ndcg@20", "test_forget_users.recall@20", "test_forget_users.ndcg@20")


def split_request(request: ForgetRequest, n_requests: int, users_per_request: int, seed: int) -> list[ForgetRequest]:
    """``n_requests`` requests of ``users_per_request`` distinct users each, drawn at random
    (``seed``) from ``request``'s users; each holds all of its users' pairs."""
    users = request.forget_users
    if n_requests < 1 or users_per_request < 1 or len(users) < n_requests * users_per_request:
        raise UnlearnInputError(
            f"{n_requests} requests of {users_per_request} users need {n_requests * users_per_request} "
            f"forgetting users; the scenario gave {len(users)}"
        )
    order = np.random.default_rng(seed).permutation(users)
    out = []
    for t in range(n_requests):
        mask = np.isin(request.users, order[t * users_per_request : (t + 1) * users_per_request])
        out.append(ForgetRequest(request.mode, request.users[mask], request.items[mask], request.inject,
                                 {**request.details, "step": t + 1}))
    return out


def union(requests: list[ForgetRequest]) -> ForgetRequest:
    """All pairs of ``requests`` as one request (what has been forgotten so far)."""
    first = requests[0]
    return ForgetRequest(first.mode, np.concatenate([r.users for r in requests]),
                         np.concatenate([r.items for r in requests]), first.inject, dict(first.details))


def run_sequential(bench: Bench, variants: list[Variant], seeds: list[int], n_requests: int,
                   users_per_request: int, command: str | None = None) -> None:
    """Run every missing (seed, chain) and write one JSON per chain (all steps)."""
    chains = [Variant(Retrain)] + [v for v in variants if v.name != Retrain.__name__]
    bench.write_experiment(command, unlearners=[v.name for v in variants], requests=n_requests,
                           users_per_request=users_per_request)
    bar = progress(len(seeds) * len(chains) * n_requests, f"sequential {bench.key}")
    try:
        for seed in seeds:
            todo = [v.name for v in chains if not finished(bench.result_path(seed, v.name))]
            bar.update((len(chains) - len(todo)) * n_requests)
            if todo:
                _run_seed(bench, seed, [v for v in chains if v.name in todo or v.name == "Retrain"], todo,
                          n_requests, users_per_request, bar)
    finally:
        bar.close()


def _run_seed(bench, seed, chains, todo, n_requests, users_per_request, bar) -> None:
    base = bench.config("Retrain", seed, forget_users=n_requests * users_per_request)
    exp, _ = prepare_cached(bench, base, seed)
    requests = split_request(exp.request, n_requests, users_per_request, seed)
    steps, train = [], exp.train
    for request in requests:
        steps.append(experiment_after(exp, train, request, None))
        train = steps[-1].remaining
    setups = [make_eval_setup(base, s.remaining, exp.valid, s.test_r, union(requests[: t + 1]))
              for t, s in enumerate(steps)]
    for s in steps:  # each step's validation loader is shared by every chain, built before them
        s.loaders.valid  # noqa: B018
    references = None
    for variant in chains:  # Retrain first: its top-k lists are the RBO references
        name, cls = variant.name, variant.cls
        cfg = base if name == Retrain.__name__ else variant.config(bench, seed)
        counted_before = bar.n
        try:
            records, topks = _chain(bench, seed, name, cls, cfg, exp, steps, setups, references, bar,
                                    counted=name in todo)
        except UnlearnInputError as e:  # e.g. a method that cannot start from its own output
            if name == Retrain.__name__:
                raise
            write_error(bench.result_path(seed, name), bench, seed, name, e)
            bar.update(counted_before + n_requests - bar.n)
            continue
        references = topks if name == Retrain.__name__ else references
        if name in todo:
            params = dataclasses.asdict(cls.params_class.from_config(cfg))
            write_json(bench.result_path(seed, name), {
                "dataset": bench.dataset, "model": bench.model, "scenario": bench.scenario, "seed": seed,
                "row": name, "requests": n_requests, "users_per_request": users_per_request, "params": params,
                "date": now(), "machine": machine(), "overrides": bench.overrides, "steps": records,
            })


def _chain(bench, seed, name, cls, cfg, exp, steps, setups, references, bar, counted: bool):
    """Run (or load from the step cache) one chain; returns its step records and the forgetting
    users' top-k lists of every step."""
    model, state, records, topks, cum_time = exp.original, None, [], [], 0.0
    for t, (step, setup) in enumerate(zip(steps, setups)):
        path = bench.cache_path(seed, f"{name}-step{t + 1:02d}")
        cached, meta = load_model(path, cfg, step.remaining)
        if cached is not None and "record" in meta:
            model, record = cached, meta["record"]
        else:
            bar.set_postfix_str(f"seed {seed}: {name} step {t + 1}")
            carried = (cls.__name__, state) if state else None  # the previous step's method state
            outcome = run_unlearner(dataclasses.replace(step, original=model, method_state=carried), cls, cfg)
            model, state = outcome.model, outcome.state
            topk = forget_user_topk(model, setup) if len(setup.forget_users) else None
            record = {"step": t + 1, **step.request.summary(), "forgotten_users": len(setup.forget_users),
                      "time_s": outcome.time_s, **outcome.info,
                      **evaluate_row(model, setup, topk if references is None else references[t])}
            save_model(path, model, cfg, step.remaining, role=f"sequential-{name}", record=record)
        cum_time += record["time_s"] + (record.get("prepare_time_s") or 0.0)  # every preparation counts
        record["cum_time_s"] = cum_time
        records.append(record)
        topks.append(forget_user_topk(model, setup) if len(setup.forget_users) else None)
        if counted:
            bar.update(1)
    return records, topks


# ---- aggregation and tables --------------------------------------------------------------------
def summarize(result_dir) -> dict:
    """``{"seeds", "requests", "users_per_request", "chains": {name: [per-step {metric: stat}]}}``;
    each non-Retrain step also holds ``drift.<metric>`` (row − Retrain, per seed) and Retrain's
    cumulative time and MIA AUC."""
    per_seed: dict[int, dict[str, list]] = {}
    records, errors = run_records(result_dir)
    for rec in records:
        per_seed.setdefault(rec["seed"], {})[rec["row"]] = rec["steps"]
    exp = read_json(result_dir / "experiment.json") or {}
    rank = {n: i for i, n in enumerate(["Retrain"] + list(exp.get("unlearners") or []))}
    names = sorted({n for chains in per_seed.values() for n in chains}, key=lambda n: (rank.get(n, len(rank)), n))
    out = {}
    for name in names:
        per_step: dict[int, list[dict]] = {}
        for chains in per_seed.values():
            if name not in chains:
                continue
            retrain = chains.get("Retrain")
            for t, step in enumerate(chains[name]):
                row = dict(step)
                if retrain is not None and name != "Retrain":
                    mine, ref = _flat(step), _flat(retrain[t])
                    row["drift"] = {k: mine[k] - ref[k] for k in DRIFT_KEYS if k in mine and k in ref}
                    row["retrain_cum_time_s"] = retrain[t]["cum_time_s"]
                    row["retrain_mia_auc"] = retrain[t].get("mia_auc")
                per_step.setdefault(t, []).append(row)
        out[name] = [aggregate(per_step[t]) for t in sorted(per_step)]
    return {"seeds": sorted(per_seed), "requests": exp.get("requests"),
            "users_per_request": exp.get("users_per_request"), "chains": out, "errors": errors}


def _flat(step: dict) -> dict:
    return {f"{a}.{b}": v for a in ("test", "test_forget_users") for b, v in (step.get(a) or {}).items()}


def markdown_tables(summary: dict) -> str:
    """One table per unlearner: cumulative time vs retraining every time, drift vs Retrain."""
    out = []
    retrain = summary["chains"].get("Retrain", [])
    for name, steps in summary["chains"].items():
        if name == "Retrain":
            continue
        out += [f"**{name}** (Δ = {name} − Retrain after the same requests; MIA over every pair forgotten so far)", ""]
        header = ["step", "users forgotten", "time, cumulative (s)", "Retrain, cumulative (s)", "ΔRecall@20 all",
                  "ΔRecall@20 forgetting", "ΔNDCG@20 forgetting", "RBO@10", "MIA AUC", "Retrain MIA AUC"]
        rows = []
        for t, s in enumerate(steps):
            rows.append([str(t + 1), fmt(s.get("forgotten_users"), 0), fmt(s.get("cum_time_s"), 2),
                         fmt(s.get("retrain_cum_time_s"), 2), fmt(s.get("drift.test.recall@20")),
                         fmt(s.get("drift.test_forget_users.recall@20")), fmt(s.get("drift.test_forget_users.ndcg@20")),
                         fmt(s.get("rbo.rbo@10")), fmt(s.get("mia_auc")),
                         fmt(s.get("retrain_mia_auc") or (retrain[t].get("mia_auc") if t < len(retrain) else None))])
        out += [markdown_table(header, rows), ""]
    return "\n".join(out).rstrip() + errors_text(summary.get("errors", {}))
