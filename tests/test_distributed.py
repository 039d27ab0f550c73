"""Two gloo processes give one process's result: every method that splits its work across a
process group, every rank's model, the gathered method state, and the command line."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recbole_unlearn import distributed, testing
from conftest import tiny_config_dict

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def group_and_single(tmp_path_factory, _tiny_dataset):
    folder = tmp_path_factory.mktemp("group")
    distributed.spawn(testing.group_member, 2, (str(_tiny_dataset), str(folder)), port=free_port())
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]
    return ranks, testing.unlearned_states(_tiny_dataset)


def close(a: torch.Tensor, b: torch.Tensor, exact: bool) -> bool:
    if exact or not a.is_floating_point():
        return torch.equal(a, b)
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max().clamp(min=1.0)))


@pytest.mark.parametrize("row", range(len(testing.GROUP_ROWS)), ids=[f"{u}{k or ''}" for _, u, k in testing.GROUP_ROWS])
def test_two_processes_give_the_single_process_model(group_and_single, row):
    ranks, single = group_and_single
    model, unlearner, _ = testing.GROUP_ROWS[row]
    exact = unlearner in ("SISA", "RecEraser")  # shard methods: tensor for tensor
    expected = single[row]["model"]
    for r, result in enumerate(ranks):
        if unlearner == "Retrain":  # DDP: each rank trained on its share of every batch
            assert result[row]["info"]["processes"] == 2 and "processes" not in single[row]["info"]
            continue
        got = result[row]["model"]
        assert got.keys() == expected.keys()
        bad = [k for k in expected if not close(got[k], expected[k], exact)]
        assert not bad, f"rank {r}: {bad} differ from one process's"
    for k, v in ranks[0][row]["model"].items():  # every rank holds the same bits
        assert torch.equal(v, ranks[1][row]["model"][k]), k


def test_the_item_cache_is_split_by_item_and_gathered_whole_for_saving(group_and_single):
    ranks, single = group_and_single
    alone = single[0]["info"]["cache_bytes"]
    per_rank = [result[0]["info"]["cache_bytes"] for result in ranks]
    assert max(per_rank) <= 0.55 * alone and sum(per_rank) == alone
    whole = ranks[0][0]["state"]
    assert ranks[1][0]["state"] is None  # rank 0 holds the whole state it writes
    for k, v in single[0]["state"].items():
        assert v.shape == whole[k].shape and close(whole[k], v, exact=False), k


def test_nproc_2_publishes_one_run_with_the_single_process_checkpoint(tmp_path, _tiny_dataset):
    keys = tiny_config_dict("ENMF", unlearner="AltEraser", epochs=5, checkpoint_dir=str(tmp_path / "saved"))
    args = [f"--{k}={v}" for k, v in keys.items()] + ["--model=ENMF", "--dataset=tiny"]
    runs = {}
    for n, start in ((1, []), (1, ["--checkpoint={original}"]), (2, ["--checkpoint={original}"])):
        run_dir = tmp_path / f"n{n}-{len(runs)}"
        extra = [a.format(original=next(runs[0].glob("*-original.pth"))) for a in start] if runs else []
        cmd = [sys.executable, str(REPO / "run_unlearn.py"), *args, *extra, f"--run_dir={run_dir}", f"--nproc={n}",
               f"--port={free_port()}"]
        done = subprocess.run(cmd, cwd=_tiny_dataset, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs[len(runs)] = run_dir
    runs = {1: runs[1], 2: runs[2]}  # both from the same original checkpoint
    audit = (tmp_path / "saved" / "audit.jsonl").read_text().splitlines()
    assert len(audit) == 3  # one record per run, not one per process
    states = {n: torch.load(next(d.glob("*-AltEraser.pth")), weights_only=False)["state_dict"] for n, d in runs.items()}
    for k in states[1]:
        assert close(states[2][k], states[1][k], exact=False), k
    results = json.loads((runs[2] / "results.json").read_text())
    assert set(results["rows"]) == {"Original", "AltEraser"}
    assert sorted(p.name for p in runs[2].iterdir()) == sorted(p.name for p in runs[1].iterdir())


def test_a_session_of_chained_requests_in_a_group_equals_one_process(tmp_path, _tiny_dataset):
    from recbole_unlearn.checkpoint import read_checkpoint

    group, alone = tmp_path / "group", tmp_path / "alone"
    group.mkdir()
    original = testing.original_checkpoint(_tiny_dataset, tmp_path / "original.pth")
    distributed.spawn(testing.session_member, 2, (str(_tiny_dataset), str(group), original), port=free_port())
    single = testing.session_chain(str(_tiny_dataset), str(alone), original)
    ranks = [torch.load(group / f"session-rank{r}.pt", weights_only=False) for r in range(2)]
    for k, v in single["model"].items():
        for r in ranks:
            assert close(r["model"][k], v, exact=False), k
    for r in ranks:  # the second request started from each rank's share of the cache the first left
        assert r["results"][1]["rows"]["AltEraser"]["cache_carried"] is True
    # rank 0 published both requests: the second checkpoint's method state is the whole cache
    assert [Path(p).parent.parent for p in ranks[0]["checkpoints"]] == [group / "saved"] * 2
    assert len((group / "saved" / "audit.jsonl").read_text().splitlines()) == 2
    last = [read_checkpoint(p) for p in (ranks[0]["checkpoints"][-1], single["checkpoints"][-1])]
    states = [read_checkpoint(Path(p).parent / c.meta["state_file"]).state_dict
              for p, c in zip((ranks[0]["checkpoints"][-1], single["checkpoints"][-1]), last)]
    for k, v in states[1].items():
        assert states[0][k].shape == v.shape and close(states[0][k], v, exact=False), k
    assert last[0].meta["ledger"]["entries"] and len(last[0].meta["ledger"]["entries"]) == 2


@pytest.mark.parametrize("bad, message", [(["--nproc=zero"], "nproc must be an integer >= 1"),
                                          (["--nproc=2", "--unlearner=nope"], "unknown unlearner 'nope'")])
def test_bad_input_in_a_group_is_one_error_line_and_exit_2(tmp_path, bad, message):
    done = subprocess.run([sys.executable, str(REPO / "run_unlearn.py"), *bad, f"--checkpoint_dir={tmp_path}",
                           f"--port={free_port()}"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert not [p.name for p in tmp_path.iterdir()]  # nothing written
