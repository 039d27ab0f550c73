"""``python run_unlearn.py --key=value ...`` end to end, in subprocesses (each costs the imports,
~3-8 s, so checks share runs)."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_config_dict
from recbole_unlearn.cli import parse_options
from recbole_unlearn.errors import UnlearnInputError
from recbole_unlearn.unlearner import unlearner_names

SCRIPT = Path(__file__).resolve().parents[1] / "run_unlearn.py"


def cli(cwd: Path, *extra: str, **overrides) -> subprocess.CompletedProcess:
    """Run the CLI on the tiny dataset with every tiny config key given as ``--key=value``."""
    keys = tiny_config_dict("ENMF", epochs=4, **overrides)
    args = [f"--{k}={v}" for k, v in keys.items()]
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset=tiny", "--model=ENMF", *args, *extra],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """One successful run with Retrain, Retrain* and WarmStart; keys from the command line,
    a config file, and a value containing '='."""
    cwd = tmp_path_factory.mktemp("cli_good")
    (cwd / "mine.yaml").write_text("rbo_p: 0.8\nforget_users: 5\nwarm_epochs: 9\n")
    ckpt_dir = cwd / "ck=pt"
    proc = cli(cwd, "--config_files=mine.yaml", "--unlearner=warmstart", "--compare=retrain",
               "--results=out/r.json", "--warm_epochs=2",
               checkpoint_dir=ckpt_dir, forget_users=4, topk="[5,10]", seed=11, state="INFO")
    return cwd, ckpt_dir, proc


def test_good_run_writes_results_json(good_run):
    cwd, ckpt_dir, proc = good_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the log, warnings and the table go to stdout
    assert "WarmStart" in proc.stdout and "Retrain*" in proc.stdout
    results = json.loads((cwd / "out" / "r.json").read_text())
    assert {k: results[k] for k in ("dataset", "model", "unlearner", "seed")} == {
        "dataset": "tiny", "model": "ENMF", "unlearner": "WarmStart", "seed": 11}
    # command line beats the config file (forget_users 4, warm_epochs 2); the file beats defaults
    assert results["forget"]["mode"] == "private" and results["forget"]["users"] == 4
    assert results["forget"]["interactions"] > 0
    rows = results["rows"]
    assert list(rows) == ["Original", "Retrain", "Retrain*", "WarmStart"]
    metrics = {"recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    for name, row in rows.items():
        assert set(row["test"]) == metrics and set(row["test_forget_users"]) == metrics, name
        assert 0 <= row["repredict_score"] <= 1
        assert set(row["rbo"]) == {"rbo@10", "rbo@20", "rbo@50"} and row["rbo_p"] == 0.8
        if name == "Original":
            assert row["train_time_s"] > 0 and "time_s" not in row
        else:
            assert row["time_s"] > 0
            assert row["speedup"] == pytest.approx(rows["Retrain"]["time_s"] / row["time_s"])
    assert rows["Retrain"]["speedup"] == 1.0 and rows["Retrain"]["rbo"]["rbo@10"] == pytest.approx(1.0)
    assert rows["WarmStart"]["epochs"] <= 2


def test_good_run_files_are_atomic_and_safe(good_run):
    cwd, ckpt_dir, proc = good_run
    assert proc.returncode == 0, proc.stderr
    results = json.loads((cwd / "out" / "r.json").read_text())
    assert files_under(cwd / "out") == ["r.json", "r.png"]  # the picture beside results.json
    run = Path(cwd, results["checkpoint"]).parent
    assert files_under(ckpt_dir) == ["audit.jsonl", f"{run.name}/tiny-ENMF-WarmStart.pth",
                                     f"{run.name}/tiny-ENMF-original.pth"]
    for name, role in (("WarmStart", "unlearned"), ("original", "original")):
        payload = torch.load(run / f"tiny-ENMF-{name}.pth", weights_only=True)
        meta = json.loads(payload["meta_json"])
        assert meta["role"] == role and meta["model"] == "ENMF" and meta["seed"] == 11
        assert payload["state_dict"]["user_embedding.weight"].shape == (61, 16)


BAD_FILE = "user_id:token\titem_id:token\nu1\ti1\tsurplus\n"
UNKNOWN_USER = "user_id:token\titem_id:token\nnobody\ti1\n"


@pytest.mark.parametrize(
    "args, file_text, message",
    [
        (["--unlearner=nosuchmethod"], None, "unknown unlearner 'nosuchmethod'"),
        (["--forget=everything"], None, "forget must be one of private, noise, users, random, file, not 'everything'"),
        (["--forget=file"], BAD_FILE, "malformed line"),
        (["--forget=file"], UNKNOWN_USER, "unknown user token 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(good_run, tmp_path, args, file_text, message):
    cwd, _, _ = good_run
    checkpoint = Path(json.loads((cwd / "out" / "r.json").read_text())["rows"]["Original"]["checkpoint"])
    before = digest(checkpoint)
    if file_text is not None:
        (tmp_path / "r.forget").write_text(file_text)
        args = [*args, "--forget_file=r.forget"]
    proc = cli(tmp_path, *args, f"--checkpoint={checkpoint}", checkpoint_dir=tmp_path / "saved", state="INFO")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    if "unlearner" in message:
        assert all(name in lines[0] for name in unlearner_names())
    assert digest(checkpoint) == before
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "saved").exists()


def test_a_chained_request_runs_the_model_and_dataset_its_checkpoint_names(tmp_path):
    """``--checkpoint`` without ``--model`` or ``--dataset``: the checkpoint's (LightGCN on the
    tiny data), so LightGCN's default unlearner runs and the ledger goes on."""
    keys = tiny_config_dict("LightGCN", epochs=2, checkpoint_dir=tmp_path / "ck", forget_users=3)
    args = [f"--{k}={v}" for k, v in keys.items()]
    run = lambda *extra: subprocess.run([sys.executable, str(SCRIPT), *args, *extra], cwd=tmp_path,  # noqa: E731
                                        capture_output=True, text=True, timeout=300)
    first = run("--dataset=tiny", "--model=LightGCN", "--results=one.json")
    assert first.returncode == 0, first.stderr
    one = json.loads((tmp_path / "one.json").read_text())
    second = run(f"--checkpoint={tmp_path / one['checkpoint']}", "--results=two.json")
    assert second.returncode == 0, second.stderr
    two = json.loads((tmp_path / "two.json").read_text())
    assert (one["unlearner"], two["model"], two["dataset"], two["unlearner"]) == ("ItemNewton", "LightGCN", "tiny", "ItemNewton")
    assert (one["ledger_requests"], two["ledger_requests"]) == (1, 2)


def test_option_parsing():
    assert parse_options(["--a=1", "--path=x=y.forget", "--a=1", "--empty="]) == {
        "a": "1", "path": "x=y.forget", "empty": ""}
    for bad in (["--compare", "retrain"], ["compare=retrain"], ["--=3"], ["--a=1", "--a=2"]):
        with pytest.raises(UnlearnInputError):
            parse_options(bad)


@pytest.mark.parametrize("model, unlearner", [("ENMF", "sisa"), ("LightGCN", "ifru")])
def test_console_is_quiet_and_readable(tmp_path, model, unlearner):
    """One line per stage and the table: no config dump, no epoch lines, no warnings, no
    progress bars piling up in a file; the full log is in RecBole's log file."""
    keys = tiny_config_dict(model, epochs=3, checkpoint_dir=tmp_path / "ck", n_shards=2)
    keys.pop("show_progress")
    args = [f"--{k}={v}" for k, v in keys.items() if k != "state"]
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dataset=tiny", f"--model={model}",
                           f"--unlearner={unlearner}", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Warning" not in out + proc.stderr and "it/s" not in out and "epoch 1 training" not in out
    stages = [ln.split("INFO  ", 1)[1].split(":")[0] for ln in out.splitlines() if "INFO  " in ln]
    assert stages[:3] == ["data", "request", "original"] and "evaluation" in stages and stages[-1] == "outputs"
    assert len(out.splitlines()) < 30
    if unlearner == "sisa":
        assert "SISA: building shard 1 on" in out
    log = next(tmp_path.glob("log/*/*.log")).read_text()
    assert "epoch 1 training" in log and "learning_rate" in log  # everything is in the log file
