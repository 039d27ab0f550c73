"""Benchmark runner: the papers' tables over seeds, sequential requests, scaling, BENCHMARKS.md.

usage:
  python benchmarks/run.py --dataset=ml-1m --data_path=../shared/datasets --model=ENMF \\
      --unlearners=retrain,warmstart --scenario=private --seeds=3            # tables (default suite)
  python benchmarks/run.py --suite=sequential --requests=10 --request_users=8 ...
  python benchmarks/run.py --suite=scaling --datasets=ml-100k,ml-1m,gowalla-lightgcn \\
      --request_sizes=1,2,4,8,16,32,64,128,256,512 ...
  python benchmarks/run.py --suite=shards --request_sizes=1,8,64 --seeds=1   # the tables per request size
  python benchmarks/run.py --suite=latency --requests=1000 --unlearners=alteraser --seeds=1 ...
  python benchmarks/run.py --suite=memory --dataset=gowalla-lightgcn --model=ENMF --unlearners=alteraser --epochs=10 ...
  python benchmarks/run.py --suite=group --dataset=ml-1m --model=ENMF --unlearners=sisa --nprocs=1,2 --seeds=1 ...
  python benchmarks/run.py --suite=report                                    # only regenerate BENCHMARKS.md

Benchmark keys (everything else, RecBole-style ``--key=value``, goes into the Config of every run):
  suite          tables | sequential | scaling | shards | latency | memory | group | all | report  (tables)
  dataset        dataset name (ml-100k ships with RecBole)                (ml-100k)
  model          a plugin model (ENMF, LightGCN, ...)                     (ENMF)
  unlearners     comma-separated registered names, any case; a row with     (all registered;
                 some keys set: name[key=value;key=value]                  shards: sisa,receraser)
  scenario       forget scenario: private | noise | users | random        (private)
  seeds          number of seeds, starting at --seed                      (3)
  seed           first seed                                               (2020)
  requests, request_users   sequential: N requests of K users             (10, 8)
                            latency: N single-user requests in one session (1000)
                            memory: one request of K users, each row in its own process (K = 64)
  nprocs         group: the process counts of every row (gloo; 1 is always run)  (1,2)
  repeats        group, memory: requests per row, each from Θ_a (group: the time  (1)
                 is their median; memory: the median is shown beside the first)
  datasets, request_sizes   scaling: datasets and request sizes (users)   (--dataset; 1,2,...,512)
                            shards: the tables suite (private) at each size  (1,8,64)
  out, cache     results folder (committed) / checkpoint folder (not)     (benchmarks/results, benchmarks/.cache)
  report         the generated markdown file                              (BENCHMARKS.md)
  threads        torch threads of every run                               (1)
  device         cpu | cuda: where every run computes (cuda: a separate     (cpu)
                 experiment folder, its timings never mixed with the CPU's)

Finished runs found under --out are not redone; interrupt and rerun the same command to resume.
Exit codes: 0 success, 2 bad input (one line on stderr).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.common import REPO_ROOT, Bench, parse_unlearners, seed_list  # noqa: E402
from recbole_unlearn.errors import UnlearnInputError  # noqa: E402

SUITES = ("tables", "sequential", "scaling", "shards", "latency", "memory", "group", "all", "report")
#: per-suite defaults of the keys left unset
SUITE_DEFAULTS = {"sequential": {"request_users": "8"}, "memory": {"request_users": "64"},
                  "scaling": {"request_sizes": "1,2,4,8,16,32,64,128,256,512"},
                  "shards": {"request_sizes": "1,8,64", "unlearners": "sisa,receraser"},
                  "latency": {"requests": "1000", "unlearners": "alteraser"}}
DEFAULTS = {
    "suite": "tables", "dataset": "ml-100k", "model": "ENMF", "unlearners": None, "scenario": "private",
    "seeds": "3", "seed": "2020", "requests": None, "request_users": None, "datasets": None,
    "request_sizes": None, "out": str(REPO_ROOT / "benchmarks" / "results"),
    "cache": str(REPO_ROOT / "benchmarks" / ".cache"), "report": str(REPO_ROOT / "BENCHMARKS.md"), "threads": "1",
    "device": "cpu", "nprocs": "1,2", "repeats": "1",
}


def parse(argv: list[str]) -> tuple[dict, dict]:
    """(benchmark keys, Config keys) from ``--key=value`` arguments."""
    opts, overrides = dict(DEFAULTS), {}
    for arg in argv:
        if not (arg.startswith("--") and "=" in arg):
            raise UnlearnInputError(f"arguments are --key=value, got {arg!r}")
        key, value = arg[2:].split("=", 1)
        if key == "unlearner":
            raise UnlearnInputError("use --unlearners=a,b,c (the benchmark runs several)")
        if key == "forget":
            key = "scenario"
        (opts if key in DEFAULTS else overrides)[key] = value
    if opts["suite"] not in SUITES:
        raise UnlearnInputError(f"suite must be one of {', '.join(SUITES)}, not {opts['suite']!r}")
    if opts["device"] not in ("cpu", "cuda"):
        raise UnlearnInputError(f"device must be cpu or cuda, not {opts['device']!r}")
    if opts["device"] == "cuda" and not torch.cuda.is_available():
        raise UnlearnInputError("--device=cuda, but this machine has no CUDA device")
    return opts, overrides


def _ints(text: str, key: str) -> list[int]:
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise UnlearnInputError(f"--{key} takes comma-separated integers, not {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__.strip())
        return 0
    # where results, caches and the report go does not change a result: left out of the record
    shown = [a for a in argv if a.split("=", 1)[0] not in ("--out", "--cache", "--report")]
    command = "python benchmarks/run.py " + " ".join(shlex.quote(a) for a in shown)
    sys.argv = sys.argv[:1]  # every key reaches RecBole's Config through config_dict, not the command line
    try:
        opts, overrides = parse(argv)
        torch.set_num_threads(int(opts["threads"]))
        run(opts, overrides, command)
    except UnlearnInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(opts: dict, overrides: dict, command: str | None = None) -> Path:
    """Run the suite(s) ``opts`` asks for, then regenerate the report; returns its path."""
    from benchmarks import document, group, latency, memory, scaling, sequential, tables
    from recbole_unlearn.unlearner import unlearner_names

    suite = opts["suite"]

    def key(name: str, for_suite: str) -> str | None:
        return opts[name] or SUITE_DEFAULTS.get(for_suite, {}).get(name)

    unlearners = parse_unlearners(opts["unlearners"] or ",".join(unlearner_names()))
    seeds = seed_list(_ints(opts["seed"], "seed")[0], _ints(opts["seeds"], "seeds")[0])

    def bench(kind: str, dataset: str, scenario: str, tag: str = "") -> Bench:
        return Bench(kind, dataset, opts["model"], scenario, dict(overrides), Path(opts["out"]), Path(opts["cache"]), tag,
                     opts["device"])

    if suite in ("tables", "all"):
        tables.run_tables(bench("tables", opts["dataset"], opts["scenario"]), unlearners, seeds, command)
    if suite in ("sequential", "all"):
        n, k = _ints(opts["requests"] or "10", "requests")[0], _ints(key("request_users", "sequential"), "request_users")[0]
        sequential.run_sequential(bench("sequential", opts["dataset"], opts["scenario"], f"{n}x{k}"),
                                  unlearners, seeds, n, k, command)
    if suite in ("scaling", "all"):
        sizes = _ints(key("request_sizes", "scaling"), "request_sizes")
        for dataset in (opts["datasets"] or opts["dataset"]).split(","):
            scaling.run_scaling(bench("scaling", dataset.strip(), "private"), unlearners, seeds, sizes, command)
    if suite in ("shards", "all"):  # the tables of a private request of each size, shard baselines by default
        rows = parse_unlearners(key("unlearners", "shards"))
        for n in _ints(key("request_sizes", "shards"), "request_sizes"):
            sized = Bench("tables", opts["dataset"], opts["model"], "private", {**overrides, "forget_users": str(n)},
                          Path(opts["out"]), Path(opts["cache"]), device=opts["device"])
            tables.run_tables(sized, rows, seeds, command)
    if suite == "latency":  # not part of "all": it is a long single-dataset run
        n = _ints(key("requests", "latency"), "requests")[0]
        latency.run_latency(bench("latency", opts["dataset"], "private"), parse_unlearners(key("unlearners", "latency")),
                            seeds, n, command)
    if suite == "memory":  # not part of "all": one process per row on a large dataset
        k = _ints(key("request_users", "memory"), "request_users")[0]
        memory.run_memory(bench("memory", opts["dataset"], "private"), unlearners, seeds, k, int(opts["threads"]), command,
                          _ints(opts["repeats"], "repeats")[0])
    if suite == "group":  # not part of "all": it needs every core to itself
        group.run_group(bench("group", opts["dataset"], opts["scenario"]), unlearners, seeds, _ints(opts["nprocs"], "nprocs"),
                        int(opts["threads"]), command, _ints(opts["repeats"], "repeats")[0])
    return document.write_report(Path(opts["out"]), Path(opts["report"]))


if __name__ == "__main__":
    raise SystemExit(main())
