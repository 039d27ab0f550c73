"""``--help`` is generated from the shipped YAML files, so every key appears with its meaning."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recbole_unlearn.cli import main
from recbole_unlearn.config import resource_dir
from recbole_unlearn.options import read_specs, yaml_keys

ROOT = Path(__file__).resolve().parents[1]
#: the shipped defaults (protocol files are layered on by choice, with --config_files)
FILES = sorted(p for p in resource_dir("properties").rglob("*.yaml") if p.parent.name != "protocol")


def test_every_key_of_every_shipped_yaml_is_in_the_help(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for path in FILES:
        specs = read_specs(path)
        assert yaml_keys(path) == set(specs), f"{path.name}: keys without a (type) comment"
        for key, spec in specs.items():
            assert f"--{key}=" in text, key
            assert spec.meaning.split()[0].strip("`") in text, key
    for name in ("AltEraser", "IFRU", "UnlearnRec", "Retrain", "WarmStart", "SISA", "RecEraser", "ENMF", "LightGCN", "BPR"):
        assert f"  {name} " in text
    assert "`" not in text and "See README" not in text


@pytest.mark.parametrize("args, own, other", [
    (["--unlearner=ifru"], "ifru_damping", "alt_optimizer"),
    (["--model=LightGCN"], "n_layers", "dropout_prob"),
])
def test_help_of_one_file(capsys, args, own, other):
    assert main(["--help", *args]) == 0
    text = capsys.readouterr().out
    assert f"--{own}=" in text and f"--{other}=" not in text


def test_python_dash_m_names_itself():
    proc = subprocess.run([sys.executable, "-m", "recbole_unlearn", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m recbole_unlearn ")
