"""Shard-based exact unlearning (SISA, RecEraser) against Retrain for requests of 1, 8, 64 users.

    nice -n 5 python benchmarks/shards.py --model=ENMF --dataset=ml-100k --sizes="1 8 64" \
        --unlearners="SISA RecEraser" --out=benchmarks/results/shards-ml-100k-ENMF

One split and one original model Θ_a (trained once, then loaded for every request size); the
sharded ensembles are trained once on D_a (the one-off ``pretrain_time_s``) and reused from
their checkpoints for every request.  For each size n (``private`` scenario: each of n random
users forgets half of their training interactions) the rows are Retrain, each unlearner, and
the unlearner's ensemble *before* unlearning (the accuracy cost of exact partitioning against
the single-model Original row), all evaluated on the same loaders (quick_start.evaluate_rows).
Writes ``<out>.json`` and ``<out>.md``.  ``--star=1`` adds Retrain* (another seed) per size;
any other ``--key=value`` is a config key (e.g. ``--data_path=/work/shared/datasets``).
An unlearner may carry its own keys, as in ``benchmarks/run.py`` (several separated by ``;``):
``--unlearners="SISA RecEraser RecEraser[partition=interaction]"``.
"""
from __future__ import annotations

import copy
import shlex
import sys
from pathlib import Path
from time import perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from recbole.utils import init_logger, init_seed  # noqa: E402

from recbole_unlearn.checkpoint import write_json  # noqa: E402
from recbole_unlearn.config import Config, config_with  # noqa: E402
from recbole_unlearn.errors import UnlearnInputError  # noqa: E402
from recbole_unlearn.quick_start import evaluate_rows, prepare, run_unlearner  # noqa: E402
from benchmarks.common import Variant, parse_unlearners  # noqa: E402
from recbole_unlearn.unlearner.base import UnlearnTask  # noqa: E402
from recbole_unlearn.unlearner.retrain import Retrain  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def pretrained_ensemble(exp, cls, config) -> tuple[torch.nn.Module, dict]:
    """The unlearner's ensemble on D_a (trained, or loaded when its checkpoint exists)."""
    init_seed(config["seed"], config["reproducibility"])
    unlearner = cls(config, copy.deepcopy(exp.original))
    start = perf_counter()
    unlearner.pretrain(UnlearnTask(config, exp.original, exp.train, exp.request, exp.valid_r))
    info = dict(unlearner.info, pretrain_time_s=perf_counter() - start)
    return unlearner.model.eval(), info


def run_size(base: Config, n: int, variants: list[Variant], star: bool, pretrain_info: dict) -> dict:
    config = config_with(base, forget_users=n)
    exp = prepare(config, saved=False)
    rows, models = {"Original": dict(exp.original_row)}, {"Original": exp.original}
    plan = [("Retrain", Retrain, config)]
    if star:
        plan.append(("Retrain*", Retrain, config_with(config, seed=config["seed"] + 1)))
    for variant in variants:
        name, cls = variant.name, variant.cls
        cfg = unlearner_config(base, cls.__name__, forget_users=n, **dict(variant.keys))
        ensemble, info = pretrained_ensemble(exp, cls, cfg)
        pretrain_info.setdefault(name, info)  # shards_build_time_s: the one-off cost on D_a
        models[f"{name} (before)"] = ensemble
        rows[f"{name} (before)"] = {"shards_build_time_s": info["shards_build_time_s"]}
        plan.append((name, cls, cfg))
    for name, cls, cfg in plan:
        outcome = run_unlearner(exp, cls, cfg)
        models[name] = outcome.model
        rows[name] = {"time_s": outcome.time_s, **outcome.info}
        print(f"[n={n}] {name}: {outcome.time_s:.1f}s {outcome.info.get('shards_retrained', '')}", flush=True)
    evaluate_rows(exp, models, rows)
    return {"forget": exp.request.summary(), "rows": rows}


_configs: dict = {}


def unlearner_config(base: Config, name: str, **keys) -> Config:
    """The run's config with unlearner ``name``'s YAML layered in (built once per name)."""
    if name not in _configs:
        _configs[name] = Config(base["model"], base["dataset"], None, {**OPTS, "unlearner": name})
    return config_with(_configs[name], **{"checkpoint": base["checkpoint"], **keys})


def _f(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(results: dict) -> str:
    lines = [
        "| users | pairs | row | shards retrained | time_s | speed-up | R@20 | N@20 | F-R@20 | F-N@20 | RBO@10 | re-predict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, res in results["sizes"].items():
        for name, row in res["rows"].items():
            al, fu = row.get("test", {}), row.get("test_forget_users", {})
            t = row.get("time_s", row.get("train_time_s"))
            lines.append("| " + " | ".join([
                n, str(res["forget"]["interactions"]), name, str(row.get("shards_retrained", "-")), _f(t, 2),
                _f(row.get("speedup"), 2), _f(al.get("recall@20")), _f(al.get("ndcg@20")),
                _f(fu.get("recall@20")), _f(fu.get("ndcg@20")), _f(row.get("rbo", {}).get("rbo@10")),
                _f(row.get("repredict_score")),
            ]) + " |")
    lines += ["", "| ensemble | shards | one-off sharded training on D_a (s) | shard sizes (interactions) |", "|---|---|---|---|"]
    for name, info in results["pretrain"].items():
        lines.append(f"| {name} | {info['n_shards']} | {info['shards_build_time_s']:.1f} | {info['shard_sizes']} |")
    lines += ["", "Time split of the unlearning rows (seconds): retraining the touched shards / refreshing the aggregation.", ""]
    for n, res in results["sizes"].items():
        for name, row in res["rows"].items():
            if "shards_time_s" in row:
                lines.append(f"- {n} users, {name}: {row['shards_time_s']:.1f} / {_f(row.get('aggregator_time_s'), 1)}"
                             f" (shard epochs {row.get('shard_epochs')})")
    first = next(iter(results["sizes"].values()), None)
    if first:  # accuracy cost of exact partitioning: the ensembles on D_a against the single model
        base = first["rows"]["Original"].get("test", {})
        lines += ["", "| model (trained on D_a) | R@20 | N@20 | R@20 vs Original | N@20 vs Original |", "|---|---|---|---|---|"]
        for name, row in first["rows"].items():
            if name == "Original" or name.endswith("(before)"):
                t = row.get("test", {})
                rel = [t.get(m) / base[m] - 1 if t.get(m) and base.get(m) else None for m in ("recall@20", "ndcg@20")]
                lines.append(f"| {name} | {_f(t.get('recall@20'))} | {_f(t.get('ndcg@20'))} | "
                             + " | ".join("-" if r is None else f"{100 * r:+.1f}%" for r in rel) + " |")
    return "\n".join(lines)


OPTS: dict = {}


def main() -> None:
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    sizes = [int(s) for s in opts.pop("sizes", "1 8 64").split()]
    variants = parse_unlearners(",".join(opts.pop("unlearners", "SISA RecEraser").split()))
    star = opts.pop("star", "0") not in ("0", "false", "False")
    out = Path(opts.pop("out", str(REPO / "benchmarks" / "results" / "shards")))
    torch.set_num_threads(int(opts.pop("threads", "1")))
    model, dataset = opts.pop("model", "ENMF"), opts.pop("dataset", "ml-100k")
    opts.setdefault("checkpoint_dir", str(REPO / "benchmarks" / ".cache" / f"shards-{dataset}-{model}"))
    OPTS.update({"show_progress": False, "forget": "private", "model": model, "dataset": dataset, **opts})
    sys.argv = sys.argv[:1]
    base = Config(model, dataset, None, {**OPTS, "unlearner": "Retrain"})
    init_logger(base)
    if not base["checkpoint"]:  # train Θ_a once; every request size then loads it
        exp = prepare(config_with(base, forget_users=sizes[0]), saved=True)
        path = Path(base["checkpoint_dir"]) / f"{dataset}-{model}-original.pth"
        base = config_with(base, checkpoint=str(path))
        OPTS["checkpoint"] = str(path)
        train_time = exp.original_row["train_time_s"]
    else:
        train_time = None
    results = {"dataset": dataset, "model": model, "command": shlex.join(sys.orig_argv),
               "original_train_time_s": train_time, "pretrain": {}, "sizes": {}}
    for n in sizes:
        results["sizes"][str(n)] = run_size(base, n, variants, star, results["pretrain"])
        results["sizes"][str(n)]["rows"]["Original"]["train_time_s"] = train_time
        write_json(out.with_suffix(".json"), results)
        out.with_suffix(".md").write_text(markdown(results) + "\n", encoding="utf-8")
    print(markdown(results))


if __name__ == "__main__":
    try:
        main()
    except UnlearnInputError as e:  # one line and exit code 2, as run.py
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
