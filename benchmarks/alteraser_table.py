"""The AltEraser table: Original, Retrain, Retrain*, WarmStart and AltEraser variants, one run.

    python benchmarks/alteraser_table.py --model=ENMF --dataset=ml-100k --forget=private \
        --variants="ah_newton hf_newton adamw" --out=benchmarks/results/alteraser-ml-100k-private.json

With ``--sizes="1 8 64 512"`` it only times AltEraser (default keys) for requests of that many
forgetting users on one original model (give ``--checkpoint=`` to reuse a trained one).

Every row starts from the same split, request and original model, and is evaluated on the same
loaders (quick_start.prepare / run_unlearner / evaluate_rows).  Any other ``--key=value`` is a
config key (e.g. ``--data_path=../shared/datasets``, ``--checkpoint=...``).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from recbole.utils import init_logger  # noqa: E402

from recbole_unlearn.checkpoint import write_json  # noqa: E402
from recbole_unlearn.config import Config, config_with  # noqa: E402
from recbole_unlearn.quick_start import comparison_plan, evaluate_rows, prepare, run_unlearner  # noqa: E402
from recbole_unlearn.report import format_table  # noqa: E402
from recbole_unlearn.unlearner import get_unlearner  # noqa: E402

COLUMNS = ["recall@10", "recall@20", "recall@50", "ndcg@10", "ndcg@20", "ndcg@50"]


def markdown(results: dict) -> str:
    head = "| row | time_s | speed-up | " + " | ".join(f"F-{c}" for c in COLUMNS) + " | RBO@10 | RBO@20 | RBO@50 | re-predict |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in results["rows"].items():
        t = row.get("time_s", row.get("train_time_s"))
        fu = row.get("test_forget_users", {})
        rbo = row.get("rbo", {})
        cells = [name, _f(t, 3), _f(row.get("speedup"), 1)] + [_f(fu.get(c)) for c in COLUMNS]
        cells += [_f(rbo.get(f"rbo@{k}")) for k in (10, 20, 50)] + [_f(row.get("repredict_score"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _f(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def scaling(config: Config, sizes: list[int], out: Path) -> None:
    """AltEraser's time for requests of ``sizes`` forgetting users, one original model."""
    rows = {}
    for n in sizes:
        exp = prepare(config_with(config, forget_users=n), saved=True)
        outcome = run_unlearner(exp, get_unlearner("AltEraser"))
        rows[str(n)] = {"users": n, "pairs": len(exp.request), "time_s": outcome.time_s, **outcome.info}
        print(f"{n} users / {len(exp.request)} pairs: {outcome.time_s:.3f} s {outcome.info}", flush=True)
    write_json(out, {"dataset": config["dataset"], "model": config["model"], "command": "python " + " ".join(sys.argv),
                     "original": exp.original_row, "rows": rows})


def main() -> None:
    opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
    variants = opts.pop("variants", "ah_newton hf_newton adamw").split()
    sizes = [int(n) for n in opts.pop("sizes", "").split()]
    out = Path(opts.pop("out", "alteraser-table.json"))
    torch.set_num_threads(int(opts.pop("threads", "2")))
    sys.argv = sys.argv[:1] + [f"--{k}={v}" for k, v in opts.items()]
    config = Config(opts.get("model", "ENMF"), opts.get("dataset", "ml-100k"), None,
                    {"unlearner": "AltEraser", "compare": "retrain", "show_progress": False})
    init_logger(config)
    if sizes:
        return scaling(config, sizes, out)
    exp = prepare(config, saved=True)
    rows = {"Original": exp.original_row}
    models = {"Original": exp.original}
    plan = [p for p in comparison_plan(config, get_unlearner("AltEraser")) if p[0] != "AltEraser"]
    plan.append(("WarmStart", get_unlearner("WarmStart"), config))
    plan += [(f"AltEraser[{v}]", get_unlearner("AltEraser"), config_with(config, alt_optimizer=v)) for v in variants]
    for name, cls, cfg in plan:
        outcome = run_unlearner(exp, cls, cfg)
        models[name], rows[name] = outcome.model, {"time_s": outcome.time_s, **outcome.info}
        print(f"{name}: {outcome.time_s:.3f} s {outcome.info}", flush=True)
    evaluate_rows(exp, models, rows)
    results = {"dataset": config["dataset"], "model": config["model"], "seed": config["seed"],
               "forget": exp.request.summary(), "command": "python " + " ".join(sys.argv), "rows": rows}
    write_json(out, results)
    out.with_suffix(".md").write_text(markdown(results) + "\n", encoding="utf-8")
    print(format_table(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
