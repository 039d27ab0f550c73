"""How far stored tables rows miss the six LightGCN targets, on the test requests they report.

usage:
  python benchmarks/targets.py --rows="ItemNewton,ItemNewton[newton_curvature=drift]" \\
      --folders=ml-100k-LightGCN-private-d7e83740,ml-100k-LightGCN-noise-d7e83740

It reads the tables suite's JSON (``benchmarks/results/tables/<folder>/s<seed>-<row>.json``,
every seed a folder holds) beside the same request's Original, Retrain and Retrain* and scores
each row as ``validate_keys.py`` scores a validation request, on the test split instead:
≥ 90% of the Original − Retrain MIA gap removed, re-predict within 15% of Retrain's, Recall@20
of all and of the forgetting users within the retrain band (max(3%, Retrain*'s distance from
Retrain), relative), RBO@10 ≥ Retrain*'s and a speed-up of ≥ 100× against the Retrain of the
same run.  The band has no one-hit floor here (the JSON does not hold the split's counts), so a
row's shortfall can be larger than the validation script would give it.  Printed as markdown:
one line per row and request, then each row's sum.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import markdown_table, script_keys  # noqa: E402
from benchmarks.validate_keys import bands, judged  # noqa: E402
from recbole_unlearn.errors import UnlearnInputError  # noqa: E402

KEYS = {"rows": "ItemNewton", "folders": "", "results": str(Path(__file__).resolve().parent / "results" / "tables")}


def figures(result: dict) -> dict:
    """The figures a row is judged by, from a tables JSON's ``result``."""
    return {"MIA AUC": result["mia_auc"], "re-predict": result["repredict_score"],
            "Recall@20": result["test"]["recall@20"], "F-Recall@20": result["test_forget_users"]["recall@20"],
            "RBO@10": result.get("rbo", {}).get("rbo@10"), "time_s": result.get("time_s")}


def score(folder: Path, seed: str, row: str) -> dict | None:
    """A row's misses on one request (None when the folder lacks the row or a yardstick)."""
    paths = {n: folder / f"s{seed}-{n}.json" for n in ("Original", "Retrain", "Retrain-star", row)}
    if not all(p.is_file() for p in paths.values()):
        return None
    o, gold, star, m = (figures(json.loads(p.read_text())["result"]) for p in paths.values())
    return {**judged(o, gold, m, gold["time_s"] / m["time_s"], *bands(gold, star), star), **m, "star": star}


def main(argv: list[str]) -> int:
    sys.argv = sys.argv[:1]
    try:
        keys, extra = script_keys(argv, KEYS)
        if extra:
            raise UnlearnInputError(f"unknown keys: {', '.join(sorted(extra))} (known: {', '.join(KEYS)})")
        root, rows = Path(keys["results"]), [r for r in keys["rows"].split(",") if r]
        folders = [root / f for f in keys["folders"].split(",") if f]
        if not folders or not rows:
            raise UnlearnInputError("give --rows and --folders (folders of benchmarks/results/tables)")
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise UnlearnInputError(f"no such tables folder: {', '.join(missing)}")
    except UnlearnInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = ("MIA", "re-predict", "Recall@20", "speed-up", "F-Recall@20", "RBO@10")
    lines, totals = [], {r: [0.0, 0, 0] for r in rows}
    for folder in folders:
        seeds = sorted({p.name.split("-", 1)[0][1:] for p in folder.glob("s*-Retrain.json")})
        for seed in seeds:
            for row in rows:
                s = score(folder, seed, row)
                if s is None:
                    continue
                totals[row][0] += sum(s["short"])
                totals[row][1] += sum(x == 0 for x in s["short"])
                totals[row][2] += len(s["short"])
                missed = ", ".join(f"{n} {x:.2f}" for n, x in zip(names, s["short"]) if x > 0) or "all met"
                lines.append([folder.name, seed, row, f"{s['removed']:.0%}", f"{s['rep']:+.1%}",
                              f"{s['RBO@10']:.3f} / {s['star']['RBO@10']:.3f}", f"{s['rec']:+.1%}",
                              f"{s['f_rec']:+.1%}", f"{s['speedup']:.0f}×", f"{sum(s['short']):.2f}", missed])
    print(markdown_table(["folder", "seed", "row", "MIA gap removed", "re-predict vs Retrain", "RBO@10 / Retrain*'s",
                          "Recall@20 vs Retrain", "F-Recall@20 vs Retrain", "speed-up", "shortfall", "missed"], lines))
    print("\n" + markdown_table(["row", "shortfall (sum)", "targets met"],
                                [[r, f"{t:.2f}", f"{n} of {k}"] for r, (t, n, k) in totals.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
