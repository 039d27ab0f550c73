"""Every bad input is one ``error:`` line and exit code 2, with nothing written and nothing that
existed changed (the CLI in-process; one subprocess for Ctrl-C)."""
from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config_dict
from recbole_unlearn.cli import main

SCRIPT = Path(__file__).resolve().parents[1] / "run_unlearn.py"
EVAL = "__import__('os').system('touch PWNED')"


def base_args(tmp: Path, extra: list[str] = ()) -> list[str]:
    """The tiny run's options, then ``extra`` (which replace the base keys they name)."""
    keys = {"dataset": "tiny", "model": "ENMF",
            **tiny_config_dict("ENMF", epochs=3, checkpoint_dir=str(tmp / "ck"), forget_users=3)}
    given = {a[2:].partition("=")[0] for a in extra}
    return [f"--{k}={v}" for k, v in keys.items() if k not in given] + list(extra)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (RecBole's run logs aside) with its SHA-256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file() and not str(p.relative_to(root)).startswith("log")}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder with one finished run (its checkpoints and audit log) and some bad inputs."""
    tmp = tmp_path_factory.mktemp("bad")
    assert main(base_args(tmp)) == 0
    results = json.loads(next((tmp / "ck").glob("*/results.json")).read_text())
    ck = Path(results["checkpoint"])
    payload = torch.load(ck, weights_only=True)
    meta = json.loads(payload["meta_json"])
    variants = {
        "meta_broken.pth": {**payload, "meta_json": "{not json"},
        "meta_list.pth": {**payload, "meta_json": "[1, 2]"},
        "state_list.pth": {**payload, "state_dict": [torch.ones(1)]},
        "no_fingerprint.pth": {**payload, "meta_json": json.dumps({k: v for k, v in meta.items() if k != "fingerprint"})},
        "empty_meta.pth": {**payload, "meta_json": "{}"},
        "nan.pth": {**payload, "state_dict": {k: v * float("nan") for k, v in payload["state_dict"].items()}},
    }
    for name, content in variants.items():
        torch.save(content, tmp / name)
    (tmp / "unreadable.forget").mkdir()
    (tmp / "empty.forget").write_text("")
    (tmp / "huge.forget").write_text("user_id:token\n" + "x" * 5_000_000 + "\n")
    return tmp, ck


CASES = [
    ([f"--forget_users={EVAL}"], "forget_users must be an integer"),
    (["--allow_pickle_checkpoint=off"], "allow_pickle_checkpoint must be true/false/yes/no/1/0"),
    (["--unlearnr=ifru"], "unknown key 'unlearnr'; did you mean 'unlearner'?"),
    (["--forget_file=F"], "forget_file is only read with forget=file"),
    (["--forget_users=0"], "forget_users must be >= 1"),
    (["--forget_users=-1"], "forget_users must be >= 1"),
    (["--forget_users=abc"], "forget_users must be an integer"),
    (["--forget_fraction=abc"], "forget_fraction must be a number"),
    (["--forget_fraction=1.5"], "forget_fraction must be <= 1"),
    (["--epochs=0"], "epochs must be >= 1"),
    (["--epochs=abc"], "epochs must be an integer"),
    (["--learning_rate=abc"], "learning_rate must be a number"),
    (["--dataset=nosuchds"], "dataset 'nosuchds': 'nosuchds.inter' not found"),
    (["--dataset=ml-1m", "--data_path=nowhere"], "dataset 'ml-1m': 'ml-1m.inter' not found"),
    (["--config_files=missing.yaml"], "config file not found: 'missing.yaml'"),
    (["--checkpoint_dir=/proc/nowhere"], "is not writable"),
    (["--results=/proc/r.json"], "is not writable"),
    (["--forget=file", "--forget_file=unreadable.forget"], "forget file"),
    (["--forget=file", "--forget_file=empty.forget"], "is empty"),
    (["--forget=file", "--forget_file=huge.forget"], "unknown user token"),
    (["--model=NGCF"], "unknown model 'NGCF'"),
    (["--unlearner=ifru", "--ifru_damping=-1"], "ifru_damping must be >= 0"),
    (["--unlearner=alteraser", "--alt_optimizer=newton"], "alt_optimizer must be one of"),
    (["--checkpoint=meta_broken.pth"], "metadata is not a JSON object"),
    (["--checkpoint=meta_list.pth"], "metadata is not a JSON object"),
    (["--checkpoint=state_list.pth"], "state_dict is not a mapping"),
    (["--checkpoint=no_fingerprint.pth"], "has no data fingerprint"),
    (["--checkpoint=empty_meta.pth"], "has no data fingerprint"),
    (["--checkpoint=nan.pth", "--forget=file", "--forget_file=empty.forget"], "NaN or Inf"),
    (["--checkpoint=CK", "--results=CK"], "is also an input"),
    (["--checkpoint=CK", "--seed=5"], "trained on other data"),
    (["--compare=maybe"], "compare must be one of none, retrain"),
    (["--key"], "options are written --key=value"),
]


@pytest.mark.parametrize("extra, message", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_input(world, capsys, monkeypatch, extra, message):
    tmp, ck = world
    monkeypatch.chdir(tmp)
    extra = [a.replace("CK", str(ck)) for a in extra]
    before = snapshot(tmp)
    capsys.readouterr()
    code = main(base_args(tmp, extra))
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert code == 2, out.err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], out.err
    assert len(lines[0]) < 420 and "Traceback" not in out.out + out.err
    assert snapshot(tmp) == before  # nothing written, nothing changed
    assert not (tmp / "PWNED").exists()


def test_no_means_false(world, capsys, monkeypatch):
    """``allow_pickle_checkpoint=no`` is False: a pickled checkpoint stays refused."""
    tmp, ck = world
    monkeypatch.chdir(tmp)
    pickled = tmp / "pickled.pth"
    torch.save({"state_dict": {}, "config": argparse.Namespace(model="ENMF")}, pickled)  # a pickled object
    assert main(base_args(tmp, [f"--checkpoint={pickled}", "--allow_pickle_checkpoint=no"])) == 2
    assert "not in the safe format" in capsys.readouterr().err


def test_ctrl_c_is_one_line_exit_130_and_publishes_nothing(tmp_path):
    args = base_args(tmp_path, ["--epochs=300"])
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("log/ENMF/*.log")):
        time.sleep(0.2)
    time.sleep(1.5)  # well inside the original's training
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["error: interrupted; nothing was published"]
    assert not (tmp_path / "ck").exists() or not any(p.is_file() for p in (tmp_path / "ck").rglob("*"))
