"""Configuration layering, the installed package's data files, and the Python API."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import recbole
import torch
import yaml

from conftest import tiny_config_dict
from recbole_unlearn import config as config_module
from recbole_unlearn.config import Config, config_with, resource_dir
from recbole_unlearn.errors import UnlearnInputError

ROOT = Path(__file__).resolve().parents[1]
RECBOLE_PROPS = Path(recbole.__file__).parent / "properties"


def recbole_default(key: str, model: str = "ENMF"):
    """The value RecBole's own property files give ``key``."""
    value = None
    for path in (RECBOLE_PROPS / "overall.yaml", RECBOLE_PROPS / "model" / f"{model}.yaml"):
        loaded = yaml.safe_load(path.read_text()) or {}
        value = loaded.get(key, value)
    return value


def plugin_value(key: str, *parts: str):
    return yaml.safe_load((resource_dir("properties").joinpath(*parts)).read_text())[key]


def tiny(model: str = "ENMF", files=None, **overrides) -> Config:
    return Config(model, "tiny", files, {"data_path": tiny_config_dict(model)["data_path"], **overrides})


@pytest.fixture(autouse=True)
def _clean_argv(monkeypatch):
    """RecBole's Config reads ``sys.argv``: keep pytest's own arguments out of it."""
    monkeypatch.setattr(sys, "argv", sys.argv[:1])


def test_plugin_properties_override_recbole_defaults():
    config = tiny()
    assert recbole_default("train_batch_size") == 2048 and recbole_default("topk") == [10]
    assert config["train_batch_size"] == plugin_value("train_batch_size", "model", "ENMF.yaml") == 256
    assert config["topk"] == plugin_value("topk", "overall.yaml") == [10, 20, 50]
    assert recbole_default("learning_rate") != config["learning_rate"] == 0.005


def test_files_then_config_dict_then_command_line(tmp_path, monkeypatch):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("learning_rate: 0.123\nepochs: 7\nstopping_step: 3\n")
    second.write_text("epochs: 8\n")
    config = tiny(files=[str(first), str(second)])
    assert (config["learning_rate"], config["epochs"], config["stopping_step"]) == (0.123, 8, 3)
    config = tiny(files=[str(first)], learning_rate=0.2)
    assert (config["learning_rate"], config["epochs"]) == (0.2, 7)
    monkeypatch.setattr(sys, "argv", ["prog", "--learning_rate=0.3", "--topk=[1,2]"])
    config = tiny(files=[str(first)], learning_rate=0.2, topk=[5])
    assert (config["learning_rate"], config["topk"], config["epochs"]) == (0.3, [1, 2], 7)


@pytest.mark.parametrize(
    "given, name, other", [("warmSTART", "WarmStart", "Retrain"), ("RETRAIN", "Retrain", "WarmStart")]
)
def test_unlearner_yaml_is_picked_by_name_in_any_case(tmp_path, given, name, other):
    own = set(yaml.safe_load(plugin_path("unlearner", f"{name}.yaml").read_text()))
    not_ours = set(yaml.safe_load(plugin_path("unlearner", f"{other}.yaml").read_text())) - own
    from_file = tiny(files=[write(tmp_path / "u.yaml", f"unlearner: {given}\n")])
    for config in (tiny(unlearner=given), from_file):
        assert config["unlearner"] == name
        assert own <= set(config.final_config_dict)
        assert not not_ours & set(config.final_config_dict)


def test_a_models_file_names_its_default_unlearner(tmp_path):
    """LightGCN's file names ItemNewton, which runs when no unlearner is given; ENMF's names none
    (overall.yaml's AltEraser); a given unlearner, on the command line or in a file, wins."""
    assert tiny("LightGCN")["unlearner"] == "ItemNewton"
    assert tiny("ENMF")["unlearner"] == "AltEraser"
    assert tiny("LightGCN", unlearner="ifru")["unlearner"] == "IFRU"
    assert tiny("LightGCN", files=[write(tmp_path / "u.yaml", "unlearner: warmstart\n")])["unlearner"] == "WarmStart"
    assert "newton_scale" in tiny("LightGCN").final_config_dict and "newton_scale" not in tiny("ENMF").final_config_dict


def test_unknown_unlearner_or_model_is_an_input_error():
    with pytest.raises(UnlearnInputError, match="unknown unlearner 'nope'.*WarmStart"):
        tiny(unlearner="nope")
    with pytest.raises(UnlearnInputError, match="unknown model 'NoSuchModel'"):
        Config("NoSuchModel", "tiny", None, {})


def test_dataset_config_is_applied():
    # ml-1m has no file in RecBole (its sample default loads two columns); ours loads four
    ours = yaml.safe_load((resource_dir("dataset_configs") / "ml-1m.yaml").read_text())["load_col"]
    assert tiny()["load_col"] != ours
    assert Config("ENMF", "ml-1m", None, {})["load_col"] == ours
    assert Config("ENMF", "ml-1m", None, {"load_col": {"inter": ["user_id", "item_id"]}})["load_col"] == {
        "inter": ["user_id", "item_id"]
    }


def test_layer_order_overall_model_unlearner_dataset(tmp_path, monkeypatch):
    """overall.yaml < model/<Model>.yaml < unlearner/<Unlearner>.yaml < dataset_configs/<dataset>.yaml."""
    for name in ("properties", "dataset_configs"):
        shutil.copytree(resource_dir(name), tmp_path / name)
    layers = [("overall.yaml",), ("model", "ENMF.yaml"), ("unlearner", "WarmStart.yaml")]
    probes = "abcd"
    for depth, parts in enumerate(layers):
        with open(tmp_path.joinpath("properties", *parts), "a") as f:
            f.write("".join(f"\nprobe_{p}: {parts[-1]}" for p in probes[depth:]) + "\n")
    write(tmp_path / "dataset_configs" / "tiny.yaml", "probe_d: tiny.yaml\n")
    monkeypatch.setattr(config_module, "resource_dir", lambda name: tmp_path / name)
    config = tiny(unlearner="warmstart")
    got = [config[f"probe_{p}"] for p in probes]
    assert got == ["overall.yaml", "ENMF.yaml", "WarmStart.yaml", "tiny.yaml"]
    assert tiny(unlearner="warmstart", probe_d="mine")["probe_d"] == "mine"


def test_config_with_copies():
    config = tiny()
    other = config_with(config, seed=99, forget="noise")
    assert (other["seed"], other["forget"]) == (99, "noise")
    assert (config["seed"], config["forget"]) == (2020, "private")


def plugin_path(*parts: str) -> Path:
    return resource_dir("properties").joinpath(*parts)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ---- the installed copy ----------------------------------------------------------------------
def test_installed_copy_ships_its_yaml_files(tmp_path):
    """``pip install`` (no editable mode) puts properties/ and dataset_configs/ inside the package."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "tests", "build", "dist", "*.egg-info", "__pycache__", "saved", "log", "log_tensorboard",
        "benchmarks", "results*.json", ".pytest_cache",
    ))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(src)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    probe = textwrap.dedent(
        """
        import json, recbole_unlearn
        from recbole_unlearn.config import Config, resource_dir, plugin_property_files
        from recbole_unlearn.unlearner import unlearner_names
        props, datasets = resource_dir("properties"), resource_dir("dataset_configs")
        files = ["overall.yaml", "model/ENMF.yaml", "model/LightGCN.yaml", "unlearner/WarmStart.yaml"]
        files += [f"unlearner/{n}.yaml" for n in unlearner_names()]
        config = Config("ENMF", "ml-100k", None, {"unlearner": "warmstart"})
        print(json.dumps({
            "package": recbole_unlearn.__file__, "props": str(props), "datasets": str(datasets),
            "missing": [f for f in files if not (props / f).is_file()]
                       + [f for f in ["ml-100k.yaml"] if not (datasets / f).is_file()],
            "layered": [str(p) for p in plugin_property_files("ENMF", "WarmStart", "ml-100k")],
            "train_batch_size": config["train_batch_size"], "warm_epochs": config["warm_epochs"],
        }))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True,
                         cwd=elsewhere, env=env)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    package = target / "recbole_unlearn"
    assert Path(info["package"]).parent == package
    assert Path(info["props"]) == package / "properties"
    assert Path(info["datasets"]) == package / "dataset_configs"
    assert info["missing"] == []
    assert len(info["layered"]) == 4 and all(p.startswith(str(package)) for p in info["layered"])
    assert (info["train_batch_size"], info["warm_epochs"]) == (256, 50)


# ---- the Python API --------------------------------------------------------------------------
def test_python_api_writes_results_where_asked(tmp_path):
    from recbole_unlearn import run_unlearn

    results_path = tmp_path / "out" / "nested" / "r.json"
    cfg = tiny_config_dict("ENMF", epochs=4, warm_epochs=2, forget_users=4, unlearner="warmstart",
                           checkpoint_dir=str(tmp_path / "ck"), results=str(results_path))
    returned = run_unlearn(model="ENMF", dataset="tiny", config_dict=cfg, saved=True)
    written = json.loads(results_path.read_text())
    assert written == json.loads(json.dumps(returned))
    assert written["unlearner"] == "WarmStart" and written["forget"]["users"] == 4
    assert set(written["rows"]) == {"Original", "WarmStart"}
    run_dir = Path(written["checkpoint"]).parent  # every run has its own folder
    assert run_dir.parent == tmp_path / "ck" and run_dir.name.startswith("tiny-ENMF-WarmStart-")
    assert sorted(os.listdir(tmp_path / "ck")) == ["audit.jsonl", run_dir.name]
    assert sorted(os.listdir(run_dir)) == ["tiny-ENMF-WarmStart.pth", "tiny-ENMF-original.pth"]
    assert Path(written["rows"]["Original"]["checkpoint"]) == run_dir / "tiny-ENMF-original.pth"
    assert sorted(os.listdir(results_path.parent)) == ["r.json", "r.png"]
    saved = torch.load(written["checkpoint"], weights_only=True)
    assert "user_embedding.weight" in saved["state_dict"]
    assert json.loads(saved["meta_json"])["unlearner"] == "WarmStart"


def test_empty_request_gives_no_op_rows(tmp_path):
    """Every pair of the file is outside the training split and dropped: each row is Θ_a."""
    from recbole_unlearn import run_unlearn
    from test_data import valid_pair

    vu, vi = valid_pair()
    request = write(tmp_path / "r.forget", f"user_id:token\titem_id:token\n{vu}\t{vi}\n")
    cfg = tiny_config_dict("ENMF", epochs=4, forget="file", forget_file=request, forget_missing="drop",
                           compare="retrain", unlearner="WarmStart")
    results = run_unlearn(model="ENMF", dataset="tiny", config_dict=cfg, saved=False)
    assert results["forget"] == {"mode": "file", "users": 0, "interactions": 0}
    rows = results["rows"]
    assert set(rows) == {"Original", "Retrain", "Retrain*", "WarmStart"}
    for name in ("Retrain", "Retrain*", "WarmStart"):
        assert rows[name]["test"] == rows["Original"]["test"], name
        assert rows[name]["repredict_score"] is None and "rbo" not in rows[name]


def test_the_recsys22_protocol_file_layers_the_papers_set_up():
    """``properties/protocol/recsys22.yaml`` holds only known keys and gives the AltEraser
    paper's split (80/20 per user, validation carved from training), AdamW and 64 noise users."""
    from recbole_unlearn.config import Config, resource_dir

    path = resource_dir("properties") / "protocol" / "recsys22.yaml"
    config = Config("ENMF", "ml-100k", [str(path)], {"show_progress": False})
    split = config["eval_args"]["split"]["RS"]
    assert split[2] == pytest.approx(0.2) and sum(split[:2]) == pytest.approx(0.8)
    assert (config["learner"], config["forget"], config["forget_users"], config["stopping_step"]) == ("adamw", "noise", 64, 10)


def test_the_device_follows_use_gpu():
    """RecBole 1.2.1 picks CUDA whenever it exists; the plugin's Config honours use_gpu."""
    from conftest import make_config

    assert make_config("ENMF", use_gpu=False)["device"] == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert make_config("ENMF", use_gpu=True)["device"].type == expected


SIZES = {"forget_users": 5, "forget_fraction": 0.5}


@pytest.mark.parametrize("forget, key, instead", [
    ("users", "forget_users", "forget_fraction"),
    ("random", "forget_users", "forget_fraction"),
    ("private", "forget_fraction", "forget_users"),
    ("noise", "forget_fraction", "forget_users"),
])
def test_a_size_key_the_scenario_does_not_read_is_named_as_ignored(caplog, forget, key, instead):
    """``--forget=users --forget_users=5`` would otherwise delete forget_fraction's share of the
    users without a word."""
    with caplog.at_level(logging.WARNING):
        Config("LightGCN", "ml-100k", config_dict={"forget": forget, key: SIZES[key]})
    assert f"{key} is not read with forget={forget}, which takes {instead}: ignored" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Config("LightGCN", "ml-100k", config_dict={"forget": forget, instead: SIZES[instead]})
    assert "is not read with forget=" not in caplog.text
