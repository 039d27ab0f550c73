"""Where a graph model's memory of the forgotten pairs sits: how much of the gap between Θ_a and
Retrain each partial repair closes.

usage:
  python benchmarks/diagnose.py --dataset=ml-100k --scenario=private --seed=2020 [--steps=100]
  python benchmarks/diagnose.py --dataset=amazon-electronics-14core --data_path=../shared/datasets ...

Rows, each starting from Θ_a (cached as the tables suite caches it, with Retrain):
  (d) the D_r graph only, the ego rows unchanged;
  (a) the forgetting users' ego rows re-initialised (to the values Retrain starts from: the same
      seed) and re-solved on D_r with every other row fixed;
  (b) the same for the forgotten items' rows;  (a+b) both;  (a+b, no re-init) re-solved from Θ_a;
  (c) both and their one-hop D_r neighbours;
  (e) WarmStart run to convergence (``warm_epochs`` 300, ``stopping_step`` 30);
  (f) the forgetting users re-initialised and refit alone (RowReset's refit: 25 steps against
      Θ_a's item outputs), every item keeping Θ_a's row;
  (g) RowReset with its defaults;
  (i) DeltaReplay with its defaults (its preparation, the replay on D_a, not in its time);
  (j) ItemNewton with its defaults;
  (k) an oracle, not a method: Retrain's own rows, the forgetting users re-initialised and refit
      (100 steps at 0.01) against Retrain's item outputs: how close the users' refit comes
      when the item rows are a retrain's;
  (h) the forgetting users as in (f), every item row moved by c times the difference that the
      forgotten pairs make to RowReset's re-solve: Θ_a + c·(R(D_r) − R(D_a)), R the ten-step
      re-solve from Retrain's initial rows (the same negatives for the pairs both hold), c = 1, 2, 4.
RBO@10 is the forgetting users' top-10 against Retrain's.
A re-solve is ``--steps`` full-batch Adam steps (learning rate 0.01) on the D_r BPR loss with 4
fresh uniform negatives per pair and the model's regulariser, seeded.  "Closed" is the share
of the Original − Retrain gap of re-predict and of the MIA AUC that a row removes.  Printed as a markdown table.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from recbole.utils import init_seed  # noqa: E402

from benchmarks.common import Bench, cached_retrain, headline, markdown_table, prepare_cached, script_keys  # noqa: E402
from recbole_unlearn.config import config_with  # noqa: E402
from recbole_unlearn.data.remaining import pairs  # noqa: E402
from recbole_unlearn.errors import UnlearnInputError  # noqa: E402
from recbole_unlearn.quick_start import run_unlearner  # noqa: E402
from recbole_unlearn.report import forget_user_topk, make_eval_setup  # noqa: E402
from recbole_unlearn.numerics import normalized_adjacency  # noqa: E402
from recbole_unlearn.unlearner.deltareplay import DeltaReplay  # noqa: E402
from recbole_unlearn.unlearner.itemnewton import ItemNewton  # noqa: E402
from recbole_unlearn.unlearner.rowreset import RowReset, refit_users, resolve_rows  # noqa: E402
from recbole_unlearn.unlearner.warm_start import WarmStart  # noqa: E402

#: the metrics whose Original − Retrain gap a row's share closed is shown for (the forgetting signal)
GAPS = ("re-predict", "MIA AUC")
KEYS = {"dataset": "ml-100k", "model": "LightGCN", "scenario": "private", "seed": "2020", "steps": "100",
        "cache": str(Path(__file__).resolve().parent / ".cache")}


def resolve(model, ego: torch.Tensor, rows: torch.Tensor, users, items, steps: int, seed: int) -> float:
    """Adam on the D_r loss over the ego rows ``rows`` only (RowReset's re-solve: learning rate
    0.01, 4 fresh negatives per pair and step), written into ``model``; its time."""
    start = perf_counter()
    solved = resolve_rows(model, ego, rows, users, items, steps, lr=0.01, negatives=4, seed=seed)
    elapsed = perf_counter() - start
    model.write_ego(solved)
    return elapsed


def contrast(model, exp, fresh: torch.Tensor, f_users: torch.Tensor, users, items, seed: int) -> torch.Tensor:
    """R(D_r) − R(D_a) [n_users + n_items, d]: R re-initialises the forgetting users' and every
    item's rows and re-solves them (RowReset's ten joint steps at 0.03) on a pair set and its
    graph; the pairs of D_r come first in D_a's set and keep their negatives."""
    n_users, n_items = model.n_users, model.n_items
    rows = torch.cat([f_users, torch.arange(1, n_items) + n_users])
    start = model.ego_embeddings().detach().clone()
    start[rows] = fresh[rows]
    forgotten = torch.as_tensor(exp.request.users, dtype=torch.long), torch.as_tensor(exp.request.items, dtype=torch.long)
    all_users, all_items = torch.cat([users, forgotten[0]]), torch.cat([items, forgotten[1]])
    graph = normalized_adjacency(all_users.numpy(), all_items.numpy(), n_users, n_items)
    among = [(len(all_users), torch.arange(len(users))), None]  # D_r's pairs lead D_a's: the same negatives
    solved = [resolve_rows(model, start, rows, u, i, 10, 0.03, 4, seed, graph=g, among=a)
              for u, i, g, a in ((users, items, model.graph(), among[0]), (all_users, all_items, graph, among[1]))]
    return solved[0] - solved[1]


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    sys.argv = sys.argv[:1]
    try:
        keys, overrides = script_keys(argv, KEYS)
        seed, steps = int(keys["seed"]), int(keys["steps"])
        bench = Bench("tables", keys["dataset"], keys["model"], keys["scenario"], overrides, cache=Path(keys["cache"]))
        base = bench.config("Retrain", seed)
        exp, _ = prepare_cached(bench, base, seed)
    except (UnlearnInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    retrain, retrain_meta = cached_retrain(bench, base, exp, seed)
    retrain_time = retrain_meta.get("time_s")
    setup = make_eval_setup(base, exp.remaining, exp.valid, exp.test_r, exp.request)
    reference = forget_user_topk(retrain, setup)

    def measure(model) -> dict:
        return headline(model, setup, reference)

    rows = {"Original": (measure(exp.original), None), "Retrain": (measure(retrain), None)}
    init_seed(seed, base["reproducibility"])
    fresh = base.model_class(base, exp.remaining).ego_embeddings().detach()  # what Retrain starts from
    n_users = exp.original.n_users
    users, items = pairs(exp.remaining)
    f_users = torch.unique(torch.as_tensor(exp.request.forget_users, dtype=torch.long))
    f_items = torch.unique(torch.as_tensor(exp.request.items, dtype=torch.long))
    hop_users, hop_items = torch.unique(users[torch.isin(items, f_items)]), torch.unique(items[torch.isin(users, f_users)])
    variants = {
        "(d) D_r graph only": (torch.zeros(0, dtype=torch.long), False),
        "(a) forgetting users re-initialised and re-solved": (f_users, True),
        "(b) forgotten items re-initialised and re-solved": (f_items + n_users, True),
        "(a+b) both": (torch.cat([f_users, f_items + n_users]), True),
        "(a+b) both re-solved from Θ_a (no re-init)": (torch.cat([f_users, f_items + n_users]), False),
        "(c) both and their one-hop neighbours": (
            torch.unique(torch.cat([f_users, hop_users, f_items + n_users, hop_items + n_users])), True),
    }
    for name, (index, reinit) in variants.items():
        model = copy.deepcopy(exp.original)
        model.set_train_data(exp.remaining)
        ego = model.ego_embeddings().detach().clone()
        if reinit:
            ego[index] = fresh[index]
        elapsed = resolve(model, ego, index, users, items, steps if len(index) else 0, seed)
        model.clear_cache()
        rows[name] = (measure(model), elapsed)
        print(f"{name}: done", file=sys.stderr, flush=True)
    item_rows = torch.arange(1, exp.original.n_items) + n_users
    start = perf_counter()  # (h)'s difference is the same for every c: computed once, in each (h) row's time
    on_remaining = copy.deepcopy(exp.original)
    on_remaining.set_train_data(exp.remaining)  # contrast reads D_r's graph from the model
    difference = contrast(on_remaining, exp, fresh, f_users, users, items, seed)[item_rows]
    difference_s = perf_counter() - start
    for c in (0, 1, 2, 4):  # (f) at c = 0, then (h)
        model = copy.deepcopy(exp.original)
        model.set_train_data(exp.remaining)
        start = perf_counter()
        ego = model.ego_embeddings().detach().clone()
        ego[item_rows] += c * difference
        ego[f_users] = fresh[f_users]
        model.write_ego(refit_users(model, ego, f_users, users, items, 25, 0.01, 4, seed + 2)[0])
        name = f"(h) items moved by {c}·(R(D_r) − R(D_a)), users as (f)" if c else \
            "(f) forgetting users re-initialised and refit, items Θ_a's"
        rows[name] = (measure(model), perf_counter() - start + (difference_s if c else 0.0))
    outcome = run_unlearner(exp, RowReset, bench.config("RowReset", seed))
    rows["(g) RowReset"] = (measure(outcome.model), outcome.time_s)
    outcome = run_unlearner(exp, DeltaReplay, bench.config("DeltaReplay", seed))
    rows["(i) DeltaReplay"] = (measure(outcome.model), outcome.time_s)
    outcome = run_unlearner(exp, ItemNewton, bench.config("ItemNewton", seed))
    rows["(j) ItemNewton"] = (measure(outcome.model), outcome.time_s)
    oracle = copy.deepcopy(retrain)
    ego = oracle.ego_embeddings().detach().clone()
    ego[f_users] = fresh[f_users]
    oracle.write_ego(refit_users(oracle, ego, f_users, users, items, 100, 0.01, 4, seed + 2)[0])
    rows["(k) oracle: Retrain's items, the forgetting users re-initialised and refit"] = (measure(oracle), None)
    warm = run_unlearner(exp, WarmStart, config_with(base, warm_epochs=300, stopping_step=30))
    rows[f"(e) WarmStart to convergence ({warm.info.get('epochs')} epochs)"] = (measure(warm.model), warm.time_s)

    original, gold = rows["Original"][0], rows["Retrain"][0]
    metrics = list(original)

    def cell(name: str, metric: str, value: float) -> str:
        gap = original[metric] - gold[metric]
        closed = "" if name in ("Original", "Retrain") or metric not in GAPS or abs(gap) < 1e-12 else \
            f" ({(original[metric] - value) / gap:.0%})"
        return f"{value:.4f}{closed}"

    print(f"{keys['dataset']} · {keys['model']} · {keys['scenario']} · seed {seed} · {len(exp.request)} forgotten "
          f"pairs of {len(f_users)} users · re-solves: {steps} Adam steps · Retrain took "
          + (f"{retrain_time:.1f} s (when it was cached)" if retrain_time else "an unrecorded time") + "\n")
    print(markdown_table(["row"] + [f"{m} (closed)" if m in GAPS else m for m in metrics] + ["time (s)"], [
        [name] + [cell(name, m, row[m]) for m in metrics] + ["" if t is None else f"{t:.1f}"]
        for name, (row, t) in rows.items()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
